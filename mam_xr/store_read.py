"""Bulk readers of a run store's spike layout, for analyses that read many populations.

:meth:`mam_xr.store.RunStore.spikes` reads a selection into one
:class:`~mam_xr.store.Spikes`; the readers here serve passes over the whole
run: spike counts per population from the small ``offsets`` tables alone, and
the raw (population, sender, step) arrays of consecutive populations with
every Zarr chunk decoded at most once.  The layout is described in
:mod:`mam_xr.store` and docs/run-store.md.

Public functions: :func:`as_run`, :func:`population_spike_counts`,
:func:`read_populations`, :func:`read_slices`.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np

from .errors import ParameterError, StoreError, invalid
from .flat import N_POPULATIONS
from .store import RunStore, open_run

__all__ = ["as_run", "population_spike_counts", "read_populations", "read_slices"]


def as_run(run, *, allow_incomplete: bool = False) -> RunStore:
    """``run`` itself if it is an open :class:`RunStore`, else the store opened from its path."""
    if isinstance(run, RunStore):
        return run
    if not isinstance(run, (str, Path)):
        raise ParameterError(invalid("run", run, "a run store path or a mam_xr.store.RunStore"))
    return open_run(run, allow_incomplete=allow_incomplete)


def population_spike_counts(run: RunStore) -> np.ndarray:
    """Spikes per flat population (254,) in the segments every rank committed,
    from the offsets tables (no spike is read)."""
    counts = np.zeros(N_POPULATIONS, dtype=np.int64)
    n = run.n_segments_committed()
    for r in run.ranks:
        g = run.root["spikes"][r]
        if n:
            counts += np.diff(g["offsets"][:n], axis=1).sum(axis=0)
    return counts


def read_slices(arr, slices: list[tuple[int, int]], max_chunks: int = 4, read=None) -> np.ndarray:
    """Concatenated ``arr[a:b]`` for sorted, disjoint slices, decoding every Zarr chunk
    at most once (reads of at most ``max_chunks`` consecutive chunks).

    ``read(start, stop)`` returns ``arr[start:stop]``; default a plain read.  A run
    store's spikes are read with a verified reader
    (:meth:`mam_xr.store.RunStore.read_spike_range`, as :func:`read_populations`
    does), so that a missing or damaged chunk raises :class:`StoreError` naming it.
    """
    total = sum(b - a for a, b in slices)
    out = np.empty(total, dtype=arr.dtype)
    if not total:
        return out
    C = int(arr.chunks[0])
    need = sorted({c for a, b in slices for c in range(a // C, (b - 1) // C + 1)})
    runs, start = [], need[0]
    for prev, c in zip(need, need[1:] + [None]):
        if c is None or c != prev + 1 or prev + 1 - start >= max_chunks:
            runs.append((start * C, min((prev + 1) * C, arr.shape[0])))
            start = c
    k = 0
    starts = np.cumsum([0] + [b - a for a, b in slices])
    for r0, r1 in runs:
        block = arr[r0:r1] if read is None else read(r0, r1)
        while k < len(slices) and slices[k][0] < r1:
            a, b = slices[k]
            x0, x1 = max(a, r0), min(b, r1)
            if x1 > x0:
                o = starts[k] + (x0 - a)
                out[o:o + (x1 - x0)] = block[x0 - r0:x1 - r0]
            if b <= r1:
                k += 1
            else:
                break
    return out


def read_populations(run: RunStore, idx: np.ndarray, n_segments: int | None = None):
    """(population index within ``idx``, sender, step) of every spike of the consecutive
    flat populations ``idx``, all ``n_segments`` committed segments (default: those
    every rank committed) of every rank, in storage order (not sorted by time).

    Every chunk is read through :meth:`mam_xr.store.RunStore.read_spike_range`:
    a missing chunk or one failing its CRC32C raises :class:`StoreError` naming
    the array, the segment(s) and the chunk."""
    idx = np.asarray(idx)
    p0, p1 = int(idx[0]), int(idx[-1]) + 1
    if not np.array_equal(idx, np.arange(p0, p1)):
        raise StoreError(invalid("idx", idx.tolist(), "consecutive flat population indices"))
    n = run.n_segments_committed() if n_segments is None else n_segments
    pops, senders, steps = [], [], []
    for r in run.ranks:
        g = run.root["spikes"][r]
        if n == 0:
            continue
        off = g["offsets"][:n]
        cnt = np.diff(off[:, p0:p1 + 1], axis=1)                  # (segments, P)
        slices = [(int(off[s, p0]), int(off[s, p1])) for s in range(n) if off[s, p1] > off[s, p0]]
        steps.append(read_slices(g["times"], slices, read=partial(run.read_spike_range, r, "times")))
        senders.append(read_slices(g["senders"], slices, read=partial(run.read_spike_range, r, "senders")))
        pops.append(np.repeat(np.tile(np.arange(p1 - p0, dtype=np.int32), n), cnt.ravel()))

    def cat(xs, dtype):
        return np.concatenate(xs) if xs else np.zeros(0, dtype)

    return cat(pops, np.int32), cat(senders, np.int32), cat(steps, np.int32)
