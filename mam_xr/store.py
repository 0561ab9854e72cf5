"""Zarr stores: the structure Dataset and the run store of a simulation.
One concept: the on-disk layout of a store, its writer and its checked
reader, kept in one module so that the layout is defined in one place (who may
write or replace a path lives in :mod:`mam_xr.store_paths`; bulk reads and
the analysis cache in :mod:`mam_xr.store_read` and :mod:`mam_xr.store_cache`).

Two layouts live here, both described in ``schemas/`` and docs/run-store.md:

* a **structure store** (format ``mam_xr.structure/1``): the structure Dataset
  written with xarray, plus a SHA-256 checksum of every variable so that a
  damaged store is detected on load (a missing chunk would otherwise read back
  silently as the fill value);
* a **run store** (format ``mam_xr.run/1``): one Zarr v3 group per simulation
  run with the parameters, versions, timings, status, the structure and every
  spike, appended segment by segment.

Spike layout (per writing rank ``r``, under ``spikes/rank<r>/``)::

    times          int32 (n_spikes,)        spike time in steps of dt (t_ms = times * dt)
    senders        int32 (n_spikes,)        neuron index within its population
    offsets        int64 (n_segments, 255)  row s: start of each population's spikes
                                            in segment s; last column = end of segment s
    segment_bounds float64 (n_segments, 2)  [t_start, t_stop) of each segment, ms

Within a segment spikes are sorted by (population, time, sender), so one
population's spikes are time-sorted within a segment and, segments being
consecutive, over the whole run.  A reader selects a population or a time
window by reading the small ``offsets`` table first and then only the slices it
needs.  A segment is *committed* once its ``offsets`` row exists: the spike
arrays are appended first, the row last, so a run killed mid-write leaves every
committed segment readable.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import xarray as xr
import zarr

from .errors import StoreError, invalid
from .flat import AREAS, N_POPULATIONS, POPS, STRUCTURE_VARIABLES, population_labels

# re-exported: mam_xr.store is the public face of the run-store layout
from .store_paths import (LOCK_RESERVE, RUN_FORMAT, STRUCTURE_FORMAT, THEORY_FORMAT,  # noqa: F401
                          StoreLock, check_replaceable, check_target, check_unlocked, describe_holder,
                          held_lock, lock_holder, lock_path, release_lock, remove_store, store_kind, swap_in)

#: Chunk length of the 1-D spike arrays (2**20 spikes = 4 MiB of int32).
SPIKE_CHUNK = 2**20
#: Chunk length (rows) of the per-segment tables.
SEGMENT_CHUNK = 256

_STATUSES = ("running", "complete", "failed")
#: How spike chunks are protected (``spikes`` attr ``checksums``): a CRC32C of
#: every chunk in the codec pipeline, and a SHA-256 of every segment's
#: (times, senders) in ``segment_sha256``.  Stores without it predate checksums.
SPIKE_CHECKSUMS = "crc32c+segment_sha256"
_COORDS = ("area", "pop", "source_area", "source_pop")


def compressors():
    """The Zarr codecs of mam_xr's integer arrays: bit-shuffled zstd."""
    # Bit-shuffled zstd: times within a (segment, population) are sorted and small,
    # senders are bounded by the population size, so most high bits are zero.
    return [zarr.codecs.BloscCodec(cname="zstd", clevel=5, shuffle="bitshuffle")]


def checked_compressors():
    """:func:`compressors` plus a CRC32C checksum of every chunk (verified by Zarr on read)."""
    return [*compressors(), zarr.codecs.Crc32cCodec()]


_compressors = compressors  # older name, still imported by engine modules


def _now() -> float:
    import time

    return time.time()


def json_safe(value):
    """``value`` as plain JSON types (attrs must be JSON); numpy scalars/arrays are converted."""
    return json.loads(json.dumps(value, default=_json_default))


_json_safe = json_safe  # older name


def _json_default(obj):
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot store {type(obj).__name__} in Zarr attrs")


# --------------------------------------------------------------------------------------
# Opening groups
# --------------------------------------------------------------------------------------

def _open_group(path_or_group, mode: str) -> zarr.Group:
    if isinstance(path_or_group, zarr.Group):
        return path_or_group
    path = Path(path_or_group)
    if mode == "r" and not path.exists():
        raise StoreError(invalid("store", str(path), "an existing Zarr store (path not found)"))
    try:
        # not the consolidated metadata: `Dataset.to_zarr` may leave a stale copy in the root
        return zarr.open_group(str(path), mode=mode, zarr_format=3, use_consolidated=False)
    except StoreError:
        raise
    except Exception as exc:  # zarr raises several types for unreadable metadata
        raise StoreError(f"store={str(path)!r} is not a readable Zarr v3 group: {exc}") from exc


def _store_and_path(group: zarr.Group) -> tuple[Any, str]:
    return group.store, group.path


# --------------------------------------------------------------------------------------
# Structure persistence (issue 2, part 5)
# --------------------------------------------------------------------------------------

def _checksum(values: np.ndarray) -> str:
    arr = np.ascontiguousarray(values)
    if arr.dtype.kind in "OUT":
        data = "\x1f".join(map(str, arr.ravel().tolist())).encode()
    else:
        data = arr.tobytes()
    h = hashlib.sha256(data)
    h.update(f"{arr.dtype.str if arr.dtype.kind not in 'OUT' else 'str'}{arr.shape}".encode())
    return h.hexdigest()


#: SHA-256 of an array's values, dtype and shape (structure variables; any cached
#: Dataset may store ``{variable: checksum(values)}`` in its ``checksums`` attr, which
#: :meth:`RunStore.verify` then checks).
checksum = _checksum


def save_structure(ds: xr.Dataset, path_or_group, *, overwrite: bool = True) -> None:
    """Write a structure Dataset to Zarr losslessly (format ``mam_xr.structure/1``).

    ``path_or_group`` is a directory path (the store root becomes the
    structure group) or an open ``zarr.Group`` whose child ``structure`` is
    written (that is how run stores embed it).  Dataset attrs are kept as JSON
    (nested dicts allowed); every variable's SHA-256 is stored so that
    :func:`load_structure` detects damage.
    """
    missing = [v for v in STRUCTURE_VARIABLES if v not in ds.variables]
    if missing:
        raise StoreError(invalid("ds", f"<Dataset without {missing}>",
                                 "a structure Dataset with the variables of mam_xr.flat.STRUCTURE_VARIABLES"))
    out = ds.copy()
    # Object strings are written as Zarr's variable-length UTF-8 (fixed-width
    # numpy unicode has no stable Zarr v3 encoding).
    out = out.assign_coords({c: out[c].astype(object) for c in _COORDS if c in out.coords})
    for name in out.variables:
        out[name].encoding = {}
    attrs_json = json.dumps(ds.attrs, default=_json_default, sort_keys=True)
    out.attrs = {
        "format": STRUCTURE_FORMAT,
        "dataset_attrs": attrs_json,
        "checksums": {name: _checksum(ds[name].values) for name in ds.variables},
        "dtypes": {name: ds[name].dtype.str for name in ds.variables},
    }
    mode = "w" if overwrite else "w-"
    if isinstance(path_or_group, zarr.Group):
        store, base = _store_and_path(path_or_group)
        group = f"{base}/structure" if base else "structure"
        out.to_zarr(store, group=group, mode=mode, consolidated=False, zarr_format=3)
    else:
        if overwrite:
            check_replaceable(path_or_group)  # never replace what mam_xr did not write
        out.to_zarr(str(path_or_group), mode=mode, consolidated=False, zarr_format=3)


def load_structure(path_or_group) -> xr.Dataset:
    """Read a structure Dataset written by :func:`save_structure`, checking its layout.

    Raises :class:`StoreError` if the store is missing, from another format
    version, lacks variables, or any variable's checksum differs (damage).
    """
    if isinstance(path_or_group, zarr.Group):
        if "structure" not in path_or_group:
            raise StoreError(f"store group {path_or_group.path!r} has no 'structure' group")
        store, base = _store_and_path(path_or_group)
        target, group, where = store, (f"{base}/structure" if base else "structure"), str(store)
    else:
        where = str(path_or_group)
        if not Path(where).exists():
            raise StoreError(invalid("store", where, "an existing structure store (path not found)"))
        target, group = where, None
    try:
        raw = xr.open_zarr(target, group=group, consolidated=False, zarr_format=3)
        attrs = dict(raw.attrs)
    except Exception as exc:
        raise StoreError(f"structure store {where!r} cannot be read as Zarr v3: {exc}") from exc
    fmt = attrs.get("format")
    if fmt != STRUCTURE_FORMAT:
        raise StoreError(invalid("format", fmt, f"{STRUCTURE_FORMAT!r} (structure store {where!r} "
                                 "was written by another version or is not a mam_xr structure)"))
    missing = [v for v in STRUCTURE_VARIABLES if v not in raw.variables]
    if missing:
        raise StoreError(f"structure store {where!r} is damaged: variables {missing} are missing")
    try:
        ds = raw.load()
    except Exception as exc:
        raise StoreError(f"structure store {where!r} is damaged: {exc}") from exc
    ds = ds.assign_coords({c: np.array(ds[c].values.tolist(), dtype=str) for c in _COORDS if c in ds.coords})
    dtypes = attrs.get("dtypes", {})
    for name, dt in dtypes.items():
        if name in ds.variables and ds[name].dtype.str != dt and ds[name].dtype.kind not in "OUT":
            ds[name] = ds[name].astype(dt)
    bad = [name for name, digest in attrs.get("checksums", {}).items()
           if name not in ds.variables or _checksum(ds[name].values) != digest]
    if bad or not attrs.get("checksums"):
        raise StoreError(f"structure store {where!r} is damaged: checksum mismatch in {bad or 'all (none stored)'}")
    for name in ds.variables:
        ds[name].encoding = {}
    ds.attrs = json.loads(attrs["dataset_attrs"])
    return ds


def write_dataset(ds: xr.Dataset, path, group: str, *, mode: str = "w") -> None:
    """Write a result Dataset (theory, fixed point, atlas) as group ``group`` of a Zarr v3 store.

    Fixed-width unicode coordinates and variables (``area``, ``pop``) are
    written as Zarr's variable-length UTF-8, which has a stable Zarr v3
    encoding, and no consolidated metadata is written (not part of Zarr v3):
    nothing for Zarr to warn about.  Read back with
    ``xr.open_zarr(path, group=group, consolidated=False)``.
    """
    out = ds.copy()
    for name in list(out.variables):
        if out[name].dtype.kind == "U":
            if name in out.coords:
                out = out.assign_coords({name: out[name].astype(object)})
            else:
                out[name] = out[name].astype(object)
    for name in out.variables:
        out[name].encoding = {}
    out.to_zarr(str(path), group=group, mode=mode, consolidated=False, zarr_format=3)


def save_theory(groups: dict[str, xr.Dataset], path, *, overwrite: bool = False,
                attrs: dict | None = None) -> Path:
    """Write theory results (e.g. ``{"theory": ..., "fixed_point": ...}``) as a new
    store of format ``mam_xr.theory/1`` at ``path``, one group each; ``attrs``
    (e.g. ``label``, ``params`` JSON) go into the root attrs.

    An existing ``path`` is refused unless ``overwrite``, and then replaced
    only if it is a mam_xr store no one is writing (:func:`check_target`); the
    new store is written beside it and swapped in (:func:`swap_in`).
    """
    path = check_writable(path)
    check_target(path, overwrite)
    target = path.with_name(f".{path.name}.new-{os.getpid()}")
    try:
        if target.exists():
            shutil.rmtree(target)  # our own leftover from a crashed swap
        root = zarr.open_group(str(target), mode="w", zarr_format=3)
        root.attrs.update(json_safe({**(attrs or {}), "format": THEORY_FORMAT, "versions": versions(),
                                     "created": _now()}))
        for group, ds in groups.items():
            write_dataset(ds, target, group, mode="w")
        swap_in(target, path)
    finally:
        if target.exists():
            shutil.rmtree(target, ignore_errors=True)
    return path


# --------------------------------------------------------------------------------------
# Run store: creation, spike writing, status
# --------------------------------------------------------------------------------------

def versions() -> dict[str, str]:
    """Versions of mam_xr, NEST (if importable without side effects) and numpy."""
    from . import __version__

    out = {"mam_xr": __version__, "numpy": np.__version__, "zarr": zarr.__version__,
           "xarray": xr.__version__}
    try:
        from importlib.metadata import version

        out["nest"] = version("nest-simulator")
    except Exception:  # noqa: BLE001 - NEST is optional for reading stores
        out["nest"] = "not installed"
    return out


def check_writable(path, needed_bytes: int = 0) -> Path:
    """Fail early (before NEST builds anything) if ``path`` cannot hold a run store.

    ``needed_bytes``: expected size of the store (e.g. from
    :func:`estimate_run_bytes`); 16 MiB more are always required.
    """
    path = Path(path)
    parent = path.parent if path.parent != Path("") else Path(".")
    if not parent.exists():
        raise StoreError(invalid("store", str(path), "a path whose parent directory exists"))
    if not os.access(parent, os.W_OK):
        raise StoreError(invalid("store", str(path), "a path in a writable directory"))
    try:
        free = shutil.disk_usage(parent).free
    except OSError:
        free = None
    need = int(needed_bytes) + 16 * 2**20
    if free is not None and free < need:
        raise StoreError(invalid("store", str(path), f"a file system with at least {need / 2**20:.0f} MiB "
                                 f"free for this run (only {free / 2**20:.0f} MiB free)"))
    return path


def estimate_run_bytes(n_neurons: int, t_sim_ms: float, rate: float = 50.0,
                       bytes_per_spike: float = 4.0) -> int:
    """Generous upper estimate of a run store's spike bytes: ``n_neurons``
    firing at ``rate`` spikes/s for t_sim at ``bytes_per_spike`` (measured:
    about 1.9 on the tutorial run)."""
    return int(n_neurons * rate * t_sim_ms * 1e-3 * bytes_per_spike)


# --------------------------------------------------------------------------------------
# One writer per store, and overwriting only what is ours
# --------------------------------------------------------------------------------------

def create_run(path, *, structure: xr.Dataset | None, dt: float, t_sim: float,
               n_segments_planned: int, params: dict | str | None = None, label: str = "",
               seed: int | None = None, n_vp: int = 1, threads: int = 1, n_ranks: int = 1,
               engine: str = "nest", overwrite: bool = False, extra_attrs: dict | None = None,
               n_neurons: Iterable[int] | None = None) -> zarr.Group:
    """Create a run store with status ``running`` and an empty ``spikes`` group.

    ``n_neurons`` (254 ints) defaults to floor(structure.neurons).  Used by
    :func:`mam_xr.simulation.simulate` and by importers of upstream spikes.

    The caller becomes the store's only writer: its :class:`StoreLock` is
    taken here and released when :func:`set_status` records ``complete`` or
    ``failed`` (or when the process ends).  ``overwrite`` replaces only a
    mam_xr store (:func:`check_replaceable`); the new store is written beside
    the old one and swapped in (:func:`swap_in`).
    """
    path = check_writable(path)
    check_target(path, overwrite)
    lock = held_lock(path) or StoreLock(path).acquire()
    target = path
    try:
        check_target(path, overwrite)  # again, now that no one else can write it
        # Written beside and renamed in: the path is never a half-made store.
        target = path.with_name(f".{path.name}.new-{os.getpid()}")
        if target.exists():
            shutil.rmtree(target)  # our own leftover from a crashed swap
        _create_run_at(target, structure=structure, dt=dt, t_sim=t_sim,
                       n_segments_planned=n_segments_planned, params=params, label=label, seed=seed,
                       n_vp=n_vp, threads=threads, n_ranks=n_ranks, engine=engine,
                       extra_attrs=extra_attrs, n_neurons=n_neurons)
        swap_in(target, path)
    except BaseException:
        if target != path and target.exists():
            shutil.rmtree(target, ignore_errors=True)
        lock.release()
        raise
    return zarr.open_group(str(path), mode="r+", zarr_format=3)


def _create_run_at(path: Path, *, structure, dt, t_sim, n_segments_planned, params, label, seed,
                   n_vp, threads, n_ranks, engine, extra_attrs, n_neurons) -> None:
    if n_neurons is None:
        if structure is None:
            raise StoreError("create_run needs structure= or n_neurons=")
        from .flat import to_flat_vector

        n_neurons = np.floor(to_flat_vector(structure["neurons"])).astype(np.int64)
    n_neurons = [int(n) for n in n_neurons]
    if len(n_neurons) != N_POPULATIONS:
        raise StoreError(invalid("n_neurons", f"<{len(n_neurons)} values>", f"{N_POPULATIONS} values"))
    if isinstance(params, str):
        params_json = params
    else:
        params_json = json.dumps(params or {}, default=_json_default, sort_keys=True)
    root = zarr.open_group(str(path), mode="w", zarr_format=3)
    root.attrs.update(_json_safe({
        "format": RUN_FORMAT, "status": "running", "last_segment": -1,
        "n_segments_planned": int(n_segments_planned), "label": label, "params": params_json,
        "versions": versions(), "timings": {}, "seed": seed, "n_vp": int(n_vp),
        "threads": int(threads), "n_ranks": int(n_ranks), "engine": engine, "dt": float(dt),
        "t_sim": float(t_sim), **(extra_attrs or {}),
    }))
    if structure is not None:
        save_structure(structure, root)
    spikes = root.create_group("spikes")
    spikes.attrs.update({"dt": float(dt), "time_unit": "steps",
                         "population_labels": population_labels(), "n_neurons": n_neurons,
                         "n_ranks": int(n_ranks), "checksums": SPIKE_CHECKSUMS})
    # ranks/rank<r>: attrs-only groups, each written by its own MPI rank only
    # (status, host, error, ...); see set_rank_status and docs/cluster.md.
    root.create_group("ranks").attrs.update({"n_ranks": int(n_ranks)})


def set_status(root: zarr.Group, status: str, *, error: str | None = None,
               timings: dict | None = None, **attrs) -> None:
    """Set the run's status (``running``, ``complete`` or ``failed``) and extra attrs."""
    if status not in _STATUSES:
        raise StoreError(invalid("status", status, f"one of {_STATUSES}"))
    update: dict[str, Any] = {"status": status, **attrs}
    if error is not None:
        update["error"] = str(error)
    if status == "failed":
        _record_failure(root, update, timings)
    else:
        if timings is not None:
            update["timings"] = {**dict(root.attrs.get("timings", {})), **timings}
        root.attrs.update(_json_safe(update))
    if status != "running":
        path = _local_path(root)
        if path is not None:
            release_lock(path)


def _local_path(root: zarr.Group) -> Path | None:
    base = getattr(root.store, "root", None)
    if base is None:
        return None
    return Path(base) / root.path if root.path else Path(base)


def _record_failure(root: zarr.Group, update: dict, timings: dict | None) -> None:
    """Write a ``failed`` status even on a full disk or after losing write
    permission: free the lock's reserve and retry; never raise (the caller is
    already handling the original error), but warn if it cannot be written."""
    path = _local_path(root)
    last = None
    for attempt in range(2):
        try:
            if timings is not None:
                update["timings"] = {**dict(root.attrs.get("timings", {})), **timings}
            root.attrs.update(_json_safe(update))
            return
        except Exception as exc:  # noqa: BLE001 - reported below, the original error matters more
            last = exc
            lock = held_lock(path) if path is not None else None
            if lock is None:
                break
            lock.free_reserve()
    warnings.warn(f"could not mark run store {str(path or root.store)!r} failed "
                  f"({type(last).__name__}: {last}); it still says status=running", stacklevel=3)


def set_rank_status(root: zarr.Group, rank: int, status: str, **attrs) -> None:
    """Record one MPI rank's own state in ``ranks/rank<rank>`` (attrs only).

    Only rank ``rank`` writes this group, so ranks never rewrite each other's
    metadata (the root attrs belong to rank 0).  ``status``: ``running``,
    ``complete`` or ``failed``; extra attrs (host, pid, error, n_spikes,
    timings) are merged.
    """
    import time

    if status not in _STATUSES:
        raise StoreError(invalid("status", status, f"one of {_STATUSES}"))
    if "ranks" not in root:  # stores written before the ranks/ group existed
        raise StoreError(f"run store {root.store!s} has no 'ranks' group (made by create_run)")
    try:
        ranks = root["ranks"]
        name = f"rank{int(rank)}"
        g = ranks[name] if name in ranks else ranks.create_group(name)
        g.attrs.update(_json_safe({"rank": int(rank), "status": status, "updated": time.time(), **attrs}))
    except OSError:
        if status != "failed":
            raise
        # recording a failure must not fail in turn (full disk): the root status is what counts


def segment_digest(times_steps: np.ndarray, senders: np.ndarray) -> bytes:
    """SHA-256 of one segment's spikes as stored (int32 little-endian times, then senders)."""
    h = hashlib.sha256(np.ascontiguousarray(times_steps, dtype="<i4").tobytes())
    h.update(np.ascontiguousarray(senders, dtype="<i4").tobytes())
    return h.digest()


def _write_all_chunks():
    # A chunk equal to the fill value is otherwise not written, and a missing
    # chunk must mean damage.
    return zarr.config.set({"array.write_empty_chunks": True})


class SpikeWriter:
    """Append spikes to a run store, one segment of simulated time at a time.

    ``group`` is the run's root group (or its ``spikes`` group); each MPI rank
    writes its own ``spikes/rank<rank>/`` so ranks never write the same array.
    """

    def __init__(self, group: zarr.Group, rank: int = 0):
        if "spikes" in group and group.attrs.get("format") == RUN_FORMAT:
            self.root: zarr.Group | None = group
            spikes = group["spikes"]
        else:
            self.root = None
            spikes = group
        if spikes.attrs.get("time_unit") != "steps":
            raise StoreError("SpikeWriter needs a run store's 'spikes' group (made by create_run)")
        self.dt = float(spikes.attrs["dt"])
        self.n_neurons = np.asarray(spikes.attrs["n_neurons"], dtype=np.int64)
        self.rank = int(rank)
        self.checked = spikes.attrs.get("checksums") == SPIKE_CHECKSUMS
        name = f"rank{self.rank}"
        with _write_all_chunks():
            if name in spikes:
                g = spikes[name]
            else:
                g = spikes.create_group(name)
                g.attrs.update({"rank": self.rank, "last_segment": -1})
                codecs = checked_compressors() if self.checked else compressors()
                table_codecs = [zarr.codecs.Crc32cCodec()] if self.checked else "auto"
                g.create_array("times", shape=(0,), dtype="int32", chunks=(SPIKE_CHUNK,),
                               compressors=codecs, fill_value=0)
                g.create_array("senders", shape=(0,), dtype="int32", chunks=(SPIKE_CHUNK,),
                               compressors=codecs, fill_value=0)
                g.create_array("offsets", shape=(0, N_POPULATIONS + 1), dtype="int64",
                               chunks=(SEGMENT_CHUNK, N_POPULATIONS + 1), fill_value=0,
                               compressors=table_codecs)
                g.create_array("segment_bounds", shape=(0, 2), dtype="float64",
                               chunks=(SEGMENT_CHUNK, 2), fill_value=0.0, compressors=table_codecs)
                if self.checked:
                    g.create_array("segment_sha256", shape=(0, 32), dtype="uint8",
                                   chunks=(SEGMENT_CHUNK, 32), fill_value=0, compressors=table_codecs)
            self.group = g
            self._times, self._senders = g["times"], g["senders"]
            self._offsets, self._bounds = g["offsets"], g["segment_bounds"]
            self._sha = g["segment_sha256"] if self.checked and "segment_sha256" in g else None
        # Committed state: arrays may be longer after a crash mid-append.
        n_seg = min(self._offsets.shape[0], self._bounds.shape[0])
        self.n_segments = n_seg
        self.length = int(self._offsets[n_seg - 1, -1]) if n_seg else 0

    def append_segment(self, times_steps, senders, pop_index, t_start: float, t_stop: float) -> int:
        """Append one segment's spikes; returns the number written.

        ``times_steps``: spike times in steps of dt (int); ``senders``: neuron
        index within its population; ``pop_index``: flat population index
        0..253 (order of :func:`mam_xr.flat.population_labels`);
        ``t_start``, ``t_stop``: the simulated interval of the segment (ms).
        NEST stamps a spike at the end of its step, so times lie in
        (t_start, t_stop]; the writer accepts [t_start, t_stop].
        """
        times = np.asarray(times_steps)
        senders = np.asarray(senders)
        pops = np.asarray(pop_index)
        if not (times.shape == senders.shape == pops.shape) or times.ndim != 1:
            raise StoreError(invalid("times_steps/senders/pop_index",
                                     f"shapes {times.shape}/{senders.shape}/{pops.shape}",
                                     "three 1-D arrays of equal length"))
        if not t_stop > t_start:
            raise StoreError(invalid("t_stop", t_stop, f"> t_start={t_start}"))
        if self.n_segments:
            prev_stop = float(self._bounds[self.n_segments - 1, 1])
            if t_start < prev_stop - 1e-9:
                raise StoreError(invalid("t_start", t_start, f">= end of the previous segment ({prev_stop} ms)"))
        if times.size:
            if pops.min() < 0 or pops.max() >= N_POPULATIONS:
                raise StoreError(invalid("pop_index", f"range [{pops.min()}, {pops.max()}]",
                                         f"flat population indices in [0, {N_POPULATIONS})"))
            if senders.min() < 0 or np.any(senders >= self.n_neurons[pops]):
                raise StoreError(invalid("senders", "<out of range>",
                                         "neuron indices in [0, n_neurons[pop])"))
            lo, hi = round(t_start / self.dt), round(t_stop / self.dt)
            if times.min() < lo or times.max() > hi:
                raise StoreError(invalid("times_steps", f"range [{times.min()}, {times.max()}]",
                                         f"steps within the segment [{lo}, {hi}]"))
        order = np.lexsort((senders, times, pops))
        pops_sorted = pops[order]
        starts = np.searchsorted(pops_sorted, np.arange(N_POPULATIONS + 1), side="left")
        base = self.length
        n = int(times.size)
        t_data = times[order].astype(np.int32, copy=False)
        s_data = senders[order].astype(np.int32, copy=False)
        # Data first, the offsets row last: the row commits the segment.
        s = self.n_segments
        rows = [(self._bounds, np.array([[t_start, t_stop]], dtype=np.float64)),
                (self._offsets, (starts + base).astype(np.int64)[None, :])]
        if self._sha is not None:
            rows.insert(0, (self._sha, np.frombuffer(segment_digest(t_data, s_data), dtype=np.uint8)[None, :]))
        with _write_all_chunks():
            for arr, data in ((self._times, t_data), (self._senders, s_data)):
                if arr.shape[0] != base:
                    arr.resize((base,))  # drop a partial append left by a crash
                if n:
                    arr.append(data)
            for arr, row in rows:
                if arr.shape[0] != s:
                    arr.resize((s,) + arr.shape[1:])
                arr.append(row)
        self.n_segments += 1
        self.length += n
        self.group.attrs.update({"last_segment": s, "updated": _now()})  # heartbeat per rank
        if self.root is not None and self.rank == 0:  # root attrs belong to rank 0 (MPI)
            self.root.attrs["last_segment"] = s
        return n


# --------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------

@dataclass
class Spikes:
    """Spikes of a selection of populations, grouped by population.

    ``times`` (ms, float64), ``steps`` (int, times in dt steps) and ``senders``
    (neuron index within the population) are concatenated population by
    population in ``populations`` order; population k's spikes are
    ``slice(offsets[k], offsets[k+1])`` and are time-sorted (ties by sender).
    """

    populations: list[str]
    offsets: np.ndarray
    steps: np.ndarray
    senders: np.ndarray
    dt: float
    n_neurons: np.ndarray
    t_start: float | None = None
    t_stop: float | None = None
    segments: list[int] = field(default_factory=list)

    @property
    def times(self) -> np.ndarray:
        """Spike times in ms (= steps x dt)."""
        return self.steps.astype(np.float64) * self.dt

    @property
    def pop(self) -> np.ndarray:
        """Index into ``populations`` of every spike."""
        return np.repeat(np.arange(len(self.populations)), np.diff(self.offsets))

    def __len__(self) -> int:
        return int(self.steps.size)

    def population(self, label: str) -> tuple[np.ndarray, np.ndarray]:
        """(times ms, senders) of one population, e.g. ``"V1-23E"``."""
        k = self.populations.index(label)
        sl = slice(int(self.offsets[k]), int(self.offsets[k + 1]))
        return self.steps[sl].astype(np.float64) * self.dt, self.senders[sl]

    def counts(self) -> np.ndarray:
        """Number of spikes per selected population."""
        return np.diff(self.offsets)


class RunStore:
    """Read access to a run store; made by :func:`open_run`."""

    def __init__(self, root: zarr.Group, path: str):
        self.root = root
        self.path = path

    # -- metadata ------------------------------------------------------------------
    @property
    def attrs(self) -> dict:
        return dict(self.root.attrs)

    @property
    def status(self) -> str:
        return self.root.attrs.get("status")

    @property
    def params(self) -> dict:
        return json.loads(self.root.attrs.get("params") or "{}")

    @property
    def dt(self) -> float:
        return float(self.root["spikes"].attrs["dt"])

    @property
    def population_labels(self) -> list[str]:
        return list(self.root["spikes"].attrs["population_labels"])

    @property
    def n_neurons(self) -> xr.DataArray:
        """Neurons simulated per population (area, pop); 0 where absent."""
        from .flat import from_flat_vector

        da = from_flat_vector(np.asarray(self.root["spikes"].attrs["n_neurons"], dtype=np.int64),
                              name="n_neurons", fill=0)
        da.attrs.update(units="1", long_name="neurons simulated (floor of the structure's neurons)")
        return da

    @property
    def ranks(self) -> list[str]:
        return sorted((k for k in self.root["spikes"].group_keys() if k.startswith("rank")),
                      key=lambda k: int(k[4:]))

    @property
    def n_ranks(self) -> int:
        """MPI ranks that wrote (or were to write) the run: the larger of the
        recorded ``n_ranks`` and the rank groups present."""
        return max(int(self.root.attrs.get("n_ranks", 1) or 1), len(self.ranks))

    def _committed(self, rank_key: str) -> int:
        g = self.root["spikes"][rank_key]
        return min(g["offsets"].shape[0], g["segment_bounds"].shape[0])

    def _n_common(self) -> int:
        """Segments committed by every rank (0 if a rank wrote none or is missing).

        A segment is only whole when every rank has committed it (each rank
        holds the spikes of its own neurons), so reads stop there."""
        present = self.ranks
        if not present or len(present) < self.n_ranks:
            return 0
        return min(self._committed(r) for r in present)

    def n_segments_committed(self) -> int:
        """Segments committed by every rank: reads of the spikes stop there."""
        return self._n_common()

    def rank_report(self) -> list[dict]:
        """One dict per expected MPI rank: ``rank``, ``status`` (from ``ranks/``;
        ``unknown`` for stores without it, ``missing`` for a rank that left no
        trace), ``segments`` committed, ``host``, ``error``, ``updated`` (Unix time
        of its last status or segment)."""
        status_groups = self.root["ranks"] if "ranks" in self.root else None
        present = set(self.ranks)
        out = []
        for r in range(self.n_ranks):
            key = f"rank{r}"
            info: dict[str, Any] = {"rank": r, "status": "unknown", "segments": 0,
                                    "host": None, "error": None, "updated": None}
            if status_groups is not None and key in status_groups:
                a = dict(status_groups[key].attrs)
                info.update({k: a.get(k, info[k]) for k in ("status", "host", "error", "updated")})
            elif status_groups is not None and key not in present:
                info["status"] = "missing"
            if key in present:
                info["segments"] = self._committed(key)
                up = self.root["spikes"][key].attrs.get("updated")
                if up is not None and (info["updated"] is None or up > info["updated"]):
                    info["updated"] = up
            out.append(info)
        return out

    def describe_missing(self) -> str:
        """What an incomplete run lacks: missing segments and, with several
        ranks, each rank's state (used in the errors of :func:`open_run`)."""
        planned = self.root.attrs.get("n_segments_planned")
        n = self._n_common()
        parts = []
        if planned is not None and n < int(planned):
            segs = self.segments()
            t0 = float(segs[-1, 1]) if len(segs) else 0.0
            t_sim = self.root.attrs.get("t_sim")
            span = f" ({t0:g}-{float(t_sim):g} ms)" if t_sim is not None else ""
            which = f"segment {n}" if n == int(planned) - 1 else f"segments {n}-{int(planned) - 1}"
            parts.append(f"missing {which}{span}")
        if self.n_ranks > 1 or any(i["status"] in ("failed", "missing") for i in self.rank_report()):
            per = []
            for i in self.rank_report():
                txt = f"rank {i['rank']}: {i['status']}, {i['segments']}/{planned} segments"
                if i["host"]:
                    txt += f" on {i['host']}"
                if i["error"]:
                    txt += f" ({i['error']})"
                per.append(txt)
            parts.append("; ".join(per))
        return "; ".join(parts)

    def segments(self) -> np.ndarray:
        """(n_segments, 2) [t_start, t_stop) ms of the segments committed by every rank."""
        n = self._n_common()
        if n == 0:
            return np.zeros((0, 2))
        return self.root["spikes"][self.ranks[0]]["segment_bounds"][:n]

    def structure(self) -> xr.Dataset:
        return load_structure(self.root)

    def __repr__(self) -> str:
        a = self.attrs
        return (f"<RunStore {self.path} status={a.get('status')} label={a.get('label')!r} "
                f"segments={len(self.segments())}/{a.get('n_segments_planned')}>")

    # -- spikes --------------------------------------------------------------------
    def _pop_indices(self, area, pop) -> np.ndarray:
        labels = self.population_labels
        areas = [area] if isinstance(area, str) else (list(area) if area is not None else None)
        pops = [pop] if isinstance(pop, str) else (list(pop) if pop is not None else None)
        for a in areas or []:
            if a not in AREAS:
                raise StoreError(invalid("area", a, f"one of {AREAS}"))
        for p in pops or []:
            if p not in POPS:
                raise StoreError(invalid("pop", p, f"one of {POPS}"))
        idx = [i for i, lab in enumerate(labels)
               if (areas is None or lab.split("-")[0] in areas)
               and (pops is None or lab.split("-")[1] in pops)]
        if areas is not None:  # keep the caller's area order
            idx.sort(key=lambda i: (areas.index(labels[i].split("-")[0]), i))
        return np.asarray(idx, dtype=np.int64)

    def population_indices(self, area=None, pop=None) -> np.ndarray:
        """Flat indices (0..253) of the populations selected as in :meth:`spikes`."""
        return self._pop_indices(area, pop)

    def spikes(self, area=None, pop=None, t_start: float | None = None,
               t_stop: float | None = None) -> Spikes:
        """Spikes of the selected populations with t_start <= t < t_stop (ms).

        ``area`` / ``pop``: a name, a list of names or None (all).  Reads the
        offsets tables, then only the slices of the selected populations in the
        segments that overlap the window.  Ranks are merged: the result does
        not depend on how many ranks wrote the store.
        """
        dt = self.dt
        sel = self._pop_indices(area, pop)
        lo = -np.inf if t_start is None else int(np.ceil(float(t_start) / dt - 1e-6))
        hi = np.inf if t_stop is None else int(np.ceil(float(t_stop) / dt - 1e-6))  # steps < hi
        per_pop_steps: list[list[np.ndarray]] = [[] for _ in sel]
        per_pop_senders: list[list[np.ndarray]] = [[] for _ in sel]
        used_segments: set[int] = set()
        n_common = self._n_common()
        for r in self.ranks:
            g = self.root["spikes"][r]
            n_seg = n_common  # only segments every rank has committed are whole
            if n_seg == 0:
                continue
            offsets = g["offsets"][:n_seg]
            bounds = g["segment_bounds"][:n_seg]
            # spikes of segment s lie in (t_start_s, t_stop_s] (NEST stamps step ends)
            seg_ok = np.ones(n_seg, dtype=bool)
            if t_start is not None:
                seg_ok &= bounds[:, 1] >= float(t_start) - 1e-9
            if t_stop is not None:
                seg_ok &= bounds[:, 0] < float(t_stop)
            segs = np.flatnonzero(seg_ok)
            if segs.size == 0:
                continue
            used_segments.update(segs.tolist())
            a, b = offsets[segs][:, sel], offsets[segs][:, sel + 1]
            s_lo, s_hi = int(a.min()), int(b.max())
            if s_hi <= s_lo:
                continue
            # one contiguous read when the selection is dense, else per slice
            n_wanted = int((b - a).sum())
            if n_wanted > 0.25 * (s_hi - s_lo):
                times_blk = self.read_spike_range(r, "times", s_lo, s_hi)
                senders_blk = self.read_spike_range(r, "senders", s_lo, s_hi)
                get = lambda x, y: (times_blk[x - s_lo:y - s_lo], senders_blk[x - s_lo:y - s_lo])  # noqa: E731
            else:
                get = lambda x, y: (self.read_spike_range(r, "times", x, y),  # noqa: E731
                                    self.read_spike_range(r, "senders", x, y))
            for k in range(len(sel)):
                for j in range(len(segs)):
                    x, y = int(a[j, k]), int(b[j, k])
                    if y > x:
                        st, se = get(x, y)
                        per_pop_steps[k].append(st)
                        per_pop_senders[k].append(se)
        steps_out, senders_out, counts = [], [], []
        multi_rank = len(self.ranks) > 1
        for k in range(len(sel)):
            st = np.concatenate(per_pop_steps[k]) if per_pop_steps[k] else np.zeros(0, np.int32)
            se = np.concatenate(per_pop_senders[k]) if per_pop_senders[k] else np.zeros(0, np.int32)
            if multi_rank and st.size:
                o = np.lexsort((se, st))
                st, se = st[o], se[o]
            if st.size and (t_start is not None or t_stop is not None):
                i0 = 0 if t_start is None else np.searchsorted(st, lo, side="left")
                i1 = st.size if t_stop is None else np.searchsorted(st, hi, side="left")
                st, se = st[i0:i1], se[i0:i1]
            steps_out.append(st)
            senders_out.append(se)
            counts.append(st.size)
        labels = self.population_labels
        all_n = np.asarray(self.root["spikes"].attrs["n_neurons"], dtype=np.int64)
        return Spikes(
            populations=[labels[i] for i in sel],
            offsets=np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
            steps=np.concatenate(steps_out) if steps_out else np.zeros(0, np.int32),
            senders=np.concatenate(senders_out) if senders_out else np.zeros(0, np.int32),
            dt=dt, n_neurons=all_n[sel], t_start=t_start, t_stop=t_stop,
            segments=sorted(used_segments),
        )

    # -- verified reads ------------------------------------------------------------
    @property
    def checked(self) -> bool:
        """True if the spikes carry checksums (CRC32C per chunk, SHA-256 per segment)."""
        return self.root["spikes"].attrs.get("checksums") == SPIKE_CHECKSUMS

    def _segment_ends(self, rank_key: str) -> np.ndarray:
        cache = self.__dict__.setdefault("_ends", {})
        if rank_key not in cache:
            g = self.root["spikes"][rank_key]
            n = self._committed(rank_key)
            cache[rank_key] = g["offsets"][:n, -1] if n else np.zeros(0, np.int64)
        return cache[rank_key]

    def _where(self, rank_key: str, name: str, start: int, stop: int) -> str:
        ends = self._segment_ends(rank_key)
        s0 = int(np.searchsorted(ends, start, side="right"))
        s1 = int(np.searchsorted(ends, max(start, stop - 1), side="right"))
        seg = f"segment {s0}" if s0 == s1 else f"segments {s0}-{s1}"
        c0, c1 = start // SPIKE_CHUNK, max(start, stop - 1) // SPIKE_CHUNK
        chunk = f"chunk c/{c0}" if c0 == c1 else f"chunks c/{c0}-c/{c1}"
        return f"spikes/{rank_key}/{name}, {seg}, {chunk}"

    def missing_chunks(self, rank_key: str, name: str, start: int, stop: int) -> list[int]:
        """Indices of the chunks of ``spikes/<rank_key>/<name>`` covering
        [start, stop) that are absent from the store (Zarr would read them as 0)."""
        from zarr.core.sync import sync

        arr = self.root["spikes"][rank_key][name]
        seen = self.__dict__.setdefault("_chunks_ok", set())
        out = []
        for c in range(start // SPIKE_CHUNK, (stop - 1) // SPIKE_CHUNK + 1 if stop > start else 0):
            if (rank_key, name, c) in seen:
                continue
            key = f"{arr.path}/{arr.metadata.chunk_key_encoding.encode_chunk_key((c,))}"
            if sync(arr.store.exists(key)):
                seen.add((rank_key, name, c))
            else:
                out.append(c)
        return out

    def read_spike_range(self, rank_key: str, name: str, start: int, stop: int) -> np.ndarray:
        """``spikes/<rank_key>/<name>[start:stop]``, verified: a missing chunk
        or one whose CRC32C does not match raises :class:`StoreError` naming
        the array, the segment(s) and the chunk(s)."""
        arr = self.root["spikes"][rank_key][name]
        if stop <= start:
            return np.zeros(0, dtype=arr.dtype)
        if self.checked:
            gone = self.missing_chunks(rank_key, name, start, stop)
            if gone:
                where = self._where(rank_key, name, gone[0] * SPIKE_CHUNK,
                                    min(stop, (gone[0] + 1) * SPIKE_CHUNK))
                raise StoreError(f"run store {self.path!r} is damaged: {where} is missing "
                                 "(it would read as zeros); run `mam-xr verify` on the store")
        try:
            return arr[start:stop]
        except Exception as exc:  # noqa: BLE001 - Zarr/numcodecs raise ValueError, RuntimeError, ...
            raise StoreError(f"run store {self.path!r} is damaged: {self._where(rank_key, name, start, stop)} "
                             f"cannot be decoded ({type(exc).__name__}: {exc})") from exc

    def verify(self) -> dict:
        """Check the whole store: structure checksums, every committed spike
        segment (chunks present, CRC32C, SHA-256 per segment), the segment
        tables' consistency and every cached analysis group.

        Returns ``{"ok": bool, "problems": [str, ...], "checked": {...},
        "verdict": str}``; never raises for damage (it is listed instead).
        """
        problems: list[str] = []
        checked: dict[str, Any] = {"segments": 0, "spikes": 0, "analysis_groups": 0,
                                   "spike_checksums": self.checked}
        try:
            self.structure()
            checked["structure"] = "ok"
        except Exception as exc:  # noqa: BLE001
            problems.append(f"structure: {exc}")
        try:
            check_consistency(self.root, self.path)
        except StoreError as exc:
            problems.append(str(exc))
        for r in self.ranks:
            g = self.root["spikes"][r]
            n = self._committed(r)
            offsets = g["offsets"][:n] if n else np.zeros((0, N_POPULATIONS + 1), np.int64)
            sha = g["segment_sha256"][:n] if self.checked and "segment_sha256" in g else None
            for k in range(n):
                a, b = (int(offsets[k - 1, -1]) if k else 0), int(offsets[k, -1])
                try:
                    t = self.read_spike_range(r, "times", a, b)
                    se = self.read_spike_range(r, "senders", a, b)
                except StoreError as exc:
                    problems.append(str(exc).replace(f"run store {self.path!r} is damaged: ", ""))
                    continue
                if sha is not None and segment_digest(t, se) != bytes(sha[k]):
                    problems.append(f"spikes/{r}: segment {k} (spikes {a}-{b}) differs from its SHA-256 "
                                    "(times or senders changed)")
                checked["segments"] += 1
                checked["spikes"] += b - a
        if "analysis" in self.root:
            for name in self.root["analysis"].group_keys():
                try:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        ds = xr.open_zarr(self.root.store, group=f"{self.root['analysis'][name].path}",
                                          consolidated=False, zarr_format=3).load()
                    sums = ds.attrs.get("checksums")
                    if isinstance(sums, str):
                        sums = json.loads(sums)
                    bad = [v for v, digest in (sums or {}).items()
                           if v not in ds.variables or checksum(ds[v].values) != digest]
                    if bad:
                        problems.append(f"analysis/{name}: checksum mismatch in {bad}")
                        continue
                    checked["analysis_groups"] += 1
                except Exception as exc:  # noqa: BLE001
                    problems.append(f"analysis/{name}: cannot be read ({type(exc).__name__}: {exc})")
        if not self.checked:
            problems_note = " (spikes written before checksums: only chunk decoding was checked)"
        else:
            problems_note = ""
        ok = not problems
        verdict = (f"OK: {self.path} - structure, {checked['segments']} segments "
                   f"({checked['spikes']} spikes) and {checked['analysis_groups']} cached analyses verified"
                   f"{problems_note}; status {self.status}") if ok else (
            f"DAMAGED: {self.path} - {len(problems)} problem(s): " + "; ".join(problems))
        return {"ok": ok, "problems": problems, "checked": checked, "verdict": verdict}

    def spike_arrays(self, rank: int = 0) -> dict[str, Any]:
        """The raw arrays of one rank as Dask arrays (committed segments only)."""
        import dask.array as da

        g = self.root["spikes"][f"rank{rank}"]
        n_seg = min(g["offsets"].shape[0], g["segment_bounds"].shape[0])
        end = int(g["offsets"][n_seg - 1, -1]) if n_seg else 0
        return {
            "times": da.from_zarr(g["times"])[:end],
            "senders": da.from_zarr(g["senders"])[:end],
            "offsets": da.from_zarr(g["offsets"])[:n_seg],
            "segment_bounds": da.from_zarr(g["segment_bounds"])[:n_seg],
        }

    def mean_rate(self) -> float:
        """Mean rate over all simulated neurons and the committed time (spikes/s)."""
        segs = self.segments()
        if not len(segs):
            return float("nan")
        n = float(np.sum(self.root["spikes"].attrs["n_neurons"]))
        return self.n_spikes() / n / ((segs[-1, 1] - segs[0, 0]) * 1e-3)

    def n_spikes(self) -> int:
        """Total spikes over all ranks in the segments every rank committed."""
        total = 0
        n = self._n_common()
        for r in self.ranks:
            g = self.root["spikes"][r]
            total += int(g["offsets"][n - 1, -1]) if n else 0
        return total

    def to_neo(self, area=None, pop=None) -> list:
        """The selected populations' spikes as ``neo.SpikeTrain`` s, one per simulated
        neuron (silent ones empty), in population order, for Elephant and other Neo tools.

        ``area`` / ``pop`` select as in :meth:`spikes`.  Times in ms (quantities),
        the correctly rounded decimal of the dt grid; ``t_start`` / ``t_stop``: the
        committed time span of the run; annotations ``area``, ``pop``, ``neuron``
        (index within the population) and ``label``.  Needs the ``interchange``
        extra (neo).  docs/exchange.md.
        """
        try:
            import neo
        except ImportError as exc:
            raise StoreError('RunStore.to_neo needs neo: pip install "mam_xr[interchange]"') from exc
        segs = self.segments()
        t0, t1 = (float(segs[0, 0]), float(segs[-1, 1])) if len(segs) else (0.0, 0.0)
        sp = self.spikes(area, pop)
        spm = 1.0 / self.dt
        exact = abs(spm - round(spm)) < 1e-6   # steps / 10 gives 0.3 where steps * 0.1 gives 0.30000000000000004
        n_all = np.asarray(self.root["spikes"].attrs["n_neurons"], dtype=np.int64)
        labels = self.population_labels
        trains = []
        for k, label in enumerate(sp.populations):
            st = sp.steps[sp.offsets[k]:sp.offsets[k + 1]].astype(np.float64)
            se = sp.senders[sp.offsets[k]:sp.offsets[k + 1]]
            o = np.lexsort((st, se))
            t = st[o] / round(spm) if exact else st[o] * self.dt
            n = int(n_all[labels.index(label)])
            ends = np.searchsorted(se[o], np.arange(n + 1))
            a, p = label.split("-", 1)
            trains += [neo.SpikeTrain(t[ends[i]:ends[i + 1]], units="ms", t_start=t0, t_stop=t1,
                                      name=f"{label} {i}", area=a, pop=p, neuron=i, label=label)
                       for i in range(n)]
        return trains


def _finite_positive(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and np.isfinite(x) and x > 0


def check_consistency(root: zarr.Group, path: str = "") -> None:
    """Refuse a run store that contradicts itself (raises :class:`StoreError`).

    Checked: ``status`` is one of running/complete/failed; ``dt`` and
    ``t_sim`` are finite and > 0 (and the ``spikes`` group's ``dt`` equals the
    root's); ``params`` is JSON; ``n_segments_planned`` is an integer >= 1,
    equal to ceil(t_sim / segment) when ``segment`` is recorded; per rank, ``segment_bounds`` rows have
    t_start < t_stop and are non-decreasing, there is one ``offsets`` row per
    segment (at most one more bounds row, left by a write cut short), offsets
    are non-decreasing and contiguous from 0 and within the spike arrays; a
    ``complete`` store has every planned segment and its ``n_spikes`` equals
    the spikes in the offsets.
    """
    where = f"run store {str(path)!r} contradicts itself"
    a = dict(root.attrs)

    def bad(name, value, expected):
        raise StoreError(f"{where}: {invalid(name, value, expected)}")

    status = a.get("status")
    if status not in _STATUSES:
        bad("attrs.status", status, f"one of {_STATUSES}")
    dt, t_sim = a.get("dt"), a.get("t_sim")
    if dt is not None and not _finite_positive(dt):
        bad("attrs.dt", dt, "a finite time step > 0 ms")
    if t_sim is not None and not _finite_positive(t_sim):
        bad("attrs.t_sim", t_sim, "a finite simulated time > 0 ms")
    sdt = root["spikes"].attrs.get("dt")
    if not _finite_positive(sdt):
        bad("spikes.attrs.dt", sdt, "a finite time step > 0 ms")
    if dt is not None and abs(float(sdt) - float(dt)) > 1e-12 * float(dt):
        bad("spikes.attrs.dt", sdt, f"the run's dt={dt} ms")
    params = a.get("params")
    if params is not None:
        try:
            value = json.loads(params) if isinstance(params, str) else None
        except ValueError as exc:
            bad("attrs.params", (params[:60] + "...") if len(params) > 60 else params,
                f"the parameters as JSON ({exc})")
        if not isinstance(value, dict):
            bad("attrs.params", params if not isinstance(params, str) or len(params) <= 60
                else params[:60] + "...", "a JSON object of parameters")
    planned = a.get("n_segments_planned")
    if planned is not None:
        if not isinstance(planned, int) or isinstance(planned, bool) or planned < 1:
            bad("attrs.n_segments_planned", planned, "an integer >= 1")
        seg = a.get("segment")
        if seg is not None and t_sim is not None and _finite_positive(seg):
            want = int(np.ceil(float(t_sim) / float(seg) - 1e-9))
            if planned != want:
                bad("attrs.n_segments_planned", planned,
                    f"ceil(t_sim / segment) = ceil({t_sim:g} / {seg:g}) = {want}")
    spikes = root["spikes"]
    total = 0
    committed = []
    for r in sorted(k for k in spikes.group_keys() if k.startswith("rank")):
        g = spikes[r]
        n_off, n_b = g["offsets"].shape[0], g["segment_bounds"].shape[0]
        if not (n_off <= n_b <= n_off + 1):
            bad(f"spikes/{r}/offsets", f"<{n_off} rows>",
                f"one row per segment of spikes/{r}/segment_bounds ({n_b} rows)")
        if g["offsets"].shape[1:] != (N_POPULATIONS + 1,):
            bad(f"spikes/{r}/offsets", f"<shape {g['offsets'].shape}>", f"(n_segments, {N_POPULATIONS + 1})")
        n = n_off
        committed.append(n)
        if n == 0:
            continue
        try:
            off = g["offsets"][:n]
            bounds = g["segment_bounds"][:n]
        except Exception as exc:  # noqa: BLE001 - a damaged table
            raise StoreError(f"{where}: spikes/{r} segment tables cannot be read "
                             f"({type(exc).__name__}: {exc})") from exc
        if not np.all(np.isfinite(bounds)) or np.any(bounds[:, 1] <= bounds[:, 0]):
            k = int(np.flatnonzero(~np.isfinite(bounds).all(1) | (bounds[:, 1] <= bounds[:, 0]))[0])
            bad(f"spikes/{r}/segment_bounds[{k}]", bounds[k].tolist(), "finite [t_start, t_stop) with t_start < t_stop")
        if n > 1 and np.any(bounds[1:, 0] < bounds[:-1, 1] - 1e-9):
            k = int(np.flatnonzero(bounds[1:, 0] < bounds[:-1, 1] - 1e-9)[0]) + 1
            bad(f"spikes/{r}/segment_bounds[{k}]", bounds[k].tolist(),
                f"a segment starting at or after the end of segment {k - 1} ({bounds[k - 1, 1]:g} ms)")
        if t_sim is not None and a.get("segment") is not None and bounds[-1, 1] > float(t_sim) + 1e-6:
            bad(f"spikes/{r}/segment_bounds[{n - 1}]", bounds[-1].tolist(), f"segments within t_sim={t_sim:g} ms")
        if np.any(np.diff(off, axis=1) < 0):
            k = int(np.flatnonzero((np.diff(off, axis=1) < 0).any(1))[0])
            bad(f"spikes/{r}/offsets[{k}]", "<decreasing>", "non-decreasing population starts")
        starts = np.concatenate([[0], off[:-1, -1]])
        if np.any(off[:, 0] != starts):
            k = int(np.flatnonzero(off[:, 0] != starts)[0])
            bad(f"spikes/{r}/offsets[{k}, 0]", int(off[k, 0]),
                f"{int(starts[k])} (the end of the previous segment)")
        end = int(off[-1, -1])
        for arr in ("times", "senders"):
            if g[arr].shape[0] < end:
                bad(f"spikes/{r}/{arr}", f"<{g[arr].shape[0]} spikes>",
                    f"at least the {end} spikes its offsets table commits")
        if "segment_sha256" in g and g["segment_sha256"].shape[0] < n:
            bad(f"spikes/{r}/segment_sha256", f"<{g['segment_sha256'].shape[0]} rows>",
                f"one row per committed segment ({n})")
        total += end
    if status == "complete":
        n_spikes = a.get("n_spikes")
        if n_spikes is not None and min(committed or [0]) == planned and int(n_spikes) != total:
            bad("attrs.n_spikes", n_spikes, f"the {total} spikes the offsets tables hold")


def open_run(path, allow_incomplete: bool = False) -> RunStore:
    """Open a run store for reading and check its format and status.

    A store whose status is not ``complete`` (a run still going, killed or
    failed) raises :class:`StoreError` naming the committed segments, unless
    ``allow_incomplete=True``.
    """
    root = _open_group(path, "r")
    fmt = root.attrs.get("format")
    if fmt != RUN_FORMAT:
        raise StoreError(invalid("format", fmt, f"{RUN_FORMAT!r} (store {str(path)!r} was written by "
                                 "another mam_xr version or is not a mam_xr run store)"))
    for needed in ("spikes", "structure"):
        if needed not in root:
            raise StoreError(f"run store {str(path)!r} is damaged: group {needed!r} is missing")
    spikes = root["spikes"]
    for key in ("dt", "n_neurons", "population_labels"):
        if key not in spikes.attrs:
            raise StoreError(f"run store {str(path)!r} is damaged: spikes attr {key!r} is missing")
    for r in (k for k in spikes.group_keys() if k.startswith("rank")):
        for arr in ("times", "senders", "offsets", "segment_bounds"):
            if arr not in spikes[r]:
                raise StoreError(f"run store {str(path)!r} is damaged: spikes/{r}/{arr} is missing")
    check_consistency(root, str(path))
    run = RunStore(root, str(path))
    if run.checked:
        # A deleted chunk would read back as zeros: every committed one must exist.
        for r in run.ranks:
            end = int(run._segment_ends(r)[-1]) if run._committed(r) else 0
            for name in ("times", "senders"):
                gone = run.missing_chunks(r, name, 0, end)
                if gone:
                    where = run._where(r, name, gone[0] * SPIKE_CHUNK, min(end, (gone[0] + 1) * SPIKE_CHUNK))
                    raise StoreError(f"run store {str(path)!r} is damaged: {where} is missing (it would "
                                     "read as zeros); run `mam-xr verify` on the store")
    else:
        warnings.warn(f"run store {str(path)!r} was written before spike checksums: a damaged or "
                      "deleted spike chunk cannot be detected in it", stacklevel=2)
    status = run.status
    planned = root.attrs.get("n_segments_planned")
    if status == "complete" and planned is not None and run._n_common() < int(planned):
        raise StoreError(f"run store {str(path)!r} is damaged: marked complete but {run.describe_missing()}")
    if status != "complete":
        segs = run.segments()
        have = (f"{len(segs)} of {planned} segments "
                f"({segs[0, 0]:g}-{segs[-1, 1]:g} ms)" if len(segs) else "no segments")
        why = f": {root.attrs.get('error')}" if status == "failed" else (
            " (still running, or killed)" if status == "running" else "")
        missing = run.describe_missing()
        writer = _running_why(path) if status == "running" else ""
        msg = (f"run store {str(path)!r} is incomplete: status={status!r}{why}; it holds {have}"
               + (f"; {missing}" if missing else "") + (f"; {writer}" if writer else "") + ".")
        if not allow_incomplete:
            raise StoreError(msg + " Pass allow_incomplete=True to read the committed segments.")
        warnings.warn(msg + " Reading the segments every rank committed.", stacklevel=2)
    return run


def _running_why(path) -> str:
    """Why a store still says ``running``: its writer (from the lock) is alive or gone."""
    if isinstance(path, zarr.Group):
        return ""
    try:
        holder = lock_holder(path)
    except Exception:  # noqa: BLE001 - only a hint in a message
        holder = None
    if holder is None:
        return ""
    if holder.get("alive"):
        return f"still being written by {describe_holder(holder)}"
    if holder.get("alive") is False:
        return f"its writer, {describe_holder(holder)}, ended without finishing (killed or crashed)"
    return ""


def verify_store(path) -> dict:
    """:meth:`RunStore.verify` for the store at ``path``, also when it cannot be
    opened (the reason is then the one problem); any status is accepted."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            run = open_run(path, allow_incomplete=True)
    except StoreError as exc:
        return {"ok": False, "problems": [str(exc)], "checked": {},
                "verdict": f"DAMAGED: {path} - {exc}"}
    return run.verify()
