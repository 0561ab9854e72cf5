"""What every exchange format shares: the format record, spikes read back from a
file, spike times in ms, population-by-population reading of a run store, and
writing a file under a temporary name that is renamed in when complete.

Public names: :class:`Format`, :class:`Exchanged`, :func:`times_ms`,
:func:`population_spikes`, :func:`write_file`, :func:`needs`.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from ..errors import DataError, ParameterError, StoreError, invalid
from ..store import RunStore
from ..store_read import population_spike_counts, read_populations

__all__ = ["Format", "Exchanged", "times_ms", "steps_of", "population_spikes", "write_file", "needs",
           "EXTRA"]

#: Spikes read at once when a file is written population by population (≈ 24 bytes each).
SPIKE_BUDGET = 4_000_000

#: The optional dependencies of this package: ``pip install "mam_xr[interchange]"``.
EXTRA = "interchange"


@dataclass(frozen=True)
class Format:
    """One exchange format: its name, file suffix, a one-line description, the
    writer ``write(run, path, **options)`` (``path`` is a temporary name that
    :func:`mam_xr.exchange.export` renames in), the reader ``read(path, dt_ms=None)``
    giving an :class:`Exchanged`, the names of the writer's ``options``, and ``is_ours(path)``: True if a file was written by
    this writer (only such a file is replaced with ``overwrite=True``)."""

    name: str
    suffix: str
    text: str
    write: Callable
    read: Callable
    is_ours: Callable
    options: tuple[str, ...] = ()


@dataclass
class Exchanged:
    """Spikes read from an exchange file, grouped by mam_xr population label.

    ``spikes[label] = (times_ms, neuron)``: float64 times in ms and neuron
    indices within the population, sorted by (time, neuron) as in a run store.
    ``n_neurons[label]``: neurons of the population (the file's count, or one
    more than the highest index seen).  ``dt_ms``, ``t_start_ms``,
    ``t_stop_ms``: the run's resolution and time span when the file records
    them (None otherwise).  ``attrs``: other metadata (parameters, provenance).
    """

    spikes: dict[str, tuple[np.ndarray, np.ndarray]]
    n_neurons: dict[str, int]
    dt_ms: float | None = None
    t_start_ms: float | None = None
    t_stop_ms: float | None = None
    attrs: dict = field(default_factory=dict)

    def n_spikes(self) -> int:
        return int(sum(t.size for t, _ in self.spikes.values()))


def needs(module: str, fmt: str):
    """Import an optional dependency or say which extra provides it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ParameterError(invalid("format", fmt, f"a format whose library is installed ({module} is "
                                     f"missing: pip install \"mam_xr[{EXTRA}]\")")) from exc


def _steps_per_ms(dt: float) -> float:
    spm = 1.0 / float(dt)
    r = round(spm)
    return float(r) if abs(spm - r) < 1e-6 else spm


def times_ms(steps: np.ndarray, dt: float) -> np.ndarray:
    """Spike times in ms of integer steps of ``dt`` ms: steps / (1/dt) when 1/dt is
    an integer, which gives the correctly rounded decimal (0.3, not 0.30000000000000004),
    the same float :mod:`mam_xr.analysis` computes with."""
    spm = _steps_per_ms(dt)
    steps = np.asarray(steps, dtype=np.float64)
    return steps / spm if float(spm).is_integer() else steps * (1.0 / spm)


def steps_of(times: np.ndarray, dt: float, *, name: str = "dt_ms") -> np.ndarray:
    """Integer steps of times in ms; DataError if a time is off the ``dt`` grid."""
    spm = _steps_per_ms(dt)
    x = np.asarray(times, dtype=np.float64) * spm
    steps = np.rint(x)
    if x.size and np.max(np.abs(x - steps)) > 1e-6:
        k = int(np.argmax(np.abs(x - steps)))
        raise DataError(invalid(name, float(dt), f"the resolution of the spike times (time {times[k]!r} ms "
                                "is off its grid)"))
    return steps.astype(np.int64)


def population_spikes(run: RunStore, by: str = "time", budget: int | None = None
                      ) -> Iterator[tuple[int, str, int, np.ndarray, np.ndarray]]:
    """(flat index, label, neurons, steps, neuron) of every population with neurons.

    Consecutive populations are read together, up to ``budget`` spikes per read
    (default :data:`SPIKE_BUDGET`; a population larger than that alone), with :func:`mam_xr.store_read.read_populations`,
    so memory stays bounded by the budget or the largest population.
    ``by="time"``: sorted by (time, neuron), the store's order; ``by="neuron"``:
    sorted by (neuron, time)."""
    labels = run.population_labels
    n_all = np.asarray(run.root["spikes"].attrs["n_neurons"], dtype=np.int64)
    counts = population_spike_counts(run)
    budget = SPIKE_BUDGET if budget is None else int(budget)
    groups, cur, size = [], [], 0
    for k in range(len(labels)):
        if cur and size + counts[k] > budget:
            groups.append(cur)
            cur, size = [], 0
        cur.append(k)
        size += int(counts[k])
    if cur:
        groups.append(cur)
    for g in groups:
        idx = np.asarray(g)
        if counts[idx].sum():
            pop, senders, steps = read_populations(run, idx)
        else:
            pop = senders = steps = np.zeros(0, np.int64)
        pop, senders, steps = pop.astype(np.int64), senders.astype(np.int64), steps.astype(np.int64)
        keys = (steps, senders) if by == "neuron" else (senders, steps)
        o = np.lexsort((*keys, pop))
        pop, senders, steps = pop[o], senders[o], steps[o]
        bounds = np.searchsorted(pop, np.arange(len(g) + 1))
        for j, k in enumerate(g):
            if n_all[k] == 0:
                continue
            sl = slice(bounds[j], bounds[j + 1])
            yield k, labels[k], int(n_all[k]), steps[sl], senders[sl]


def write_file(path, write: Callable[[Path], None], *, overwrite: bool, is_ours: Callable[[Path], bool],
               what: str) -> Path:
    """Write a file at ``path`` (named ``out`` in messages, as in :func:`mam_xr.exchange.export`
    and ``mam-xr export``) through ``write(tmp)`` under a temporary name beside it,
    renamed in once complete: ``path`` never holds a half-written file.

    An existing ``path`` is replaced only with ``overwrite=True`` and only if
    ``is_ours(path)`` (a file this exporter wrote); a directory, a link or any
    other file is never deleted."""
    path = Path(os.fspath(path))
    if not path.parent.is_dir():
        raise StoreError(invalid("out", str(path), "a file in an existing directory"))
    if path.exists() or path.is_symlink():
        if not overwrite:
            raise StoreError(invalid("out", str(path), "a path that does not exist yet (or overwrite=True)"))
        if path.is_symlink() or not path.is_file() or not is_ours(path):
            raise StoreError(invalid("out", str(path), f"a path that does not exist yet or {what} mam_xr "
                                     "exported (overwrite=True never replaces other files)"))
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}{path.suffix}")   # keeps the suffix readers check
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():         # our own temporary file of a failed write
            tmp.unlink()
    return path
