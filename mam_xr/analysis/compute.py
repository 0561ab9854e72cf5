"""Running the registered statistics: plan, one pass over the spikes, build, cache.

:func:`analyze` resolves the definition of each requested statistic, reuses
cached results, splits the populations into groups that fit a per-task spike
budget (:func:`plan_groups`), runs one Dask task per group that reads its
spikes and computes the kernel parts the statistics read, merges the groups
into flat 254-population arrays and calls each statistic's ``build`` with an
:class:`Inputs`.  Nothing here names a particular statistic: the registry
(:mod:`mam_xr.analysis.registry`) says what to compute.
"""

from __future__ import annotations

import os
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import xarray as xr

from .. import store_cache, store_read
from ..errors import ParameterError, StoreError, invalid
from ..flat import AREAS, N_POPULATIONS, exists, population_labels
from . import kernels
from .registry import (ANALYSIS_VERSION, REGISTRY, closure, definition_of, resolve_definition,
                       statistic)

__all__ = ["analyze", "lazy_spikes", "plan_groups", "read_analysis", "Inputs",
           "DEFAULT_CHUNK_SPIKES"]

#: Per-task spike budget; the kernel peaks at ≈ 55 bytes per spike including its input,
#: 80 are assumed when the budget is derived from a memory limit.
DEFAULT_CHUNK_SPIKES = 4_000_000
_BYTES_PER_SPIKE = 80


class Inputs:
    """What a statistic's ``build`` gets.

    Attributes
    ----------
    run : RunStore
    d : dict
        The resolved definition parameters.
    m : dict of np.ndarray
        The kernel parts merged over the 254 flat populations (``neuron_*``: a
        list of 254 per-neuron arrays).
    n_neurons : np.ndarray (254,) int
        Neurons simulated per population, floor(N); ``nf`` the same as float.
    """

    def __init__(self, run, d: dict, m: dict, n_neurons: np.ndarray):
        self.run, self.d, self.m = run, d, m
        self.n_neurons = n_neurons
        self.nf = n_neurons.astype(float)
        self._datasets: dict[str, xr.Dataset] = {}
        self._memo: dict[str, Any] = {}

    def dataset(self, name: str) -> xr.Dataset:
        """The Dataset of another statistic of this run (built once)."""
        if name not in self._datasets:
            self._datasets[name] = REGISTRY[name].build(self)
        return self._datasets[name]

    def memo(self, key: str, make: Callable[[], Any]) -> Any:
        """An intermediate value shared by several builders (computed once)."""
        if key not in self._memo:
            self._memo[key] = make()
        return self._memo[key]

    def structure(self) -> xr.Dataset:
        """``weight_mean`` and ``indegree`` of the run's structure group."""
        return self.memo("structure", lambda: structure_weights(self.run))


# ======================================================================================
# Planning the work: groups of populations
# ======================================================================================

def plan_groups(counts: np.ndarray, budget: int, *, min_groups: int = 1) -> list[tuple[list[str], list[str] | None]]:
    """Split the 254 populations into groups read and analysed by one task each.

    A group is whole consecutive areas (``(areas, None)``) or, for an area
    with more than ``budget`` spikes, consecutive populations of that area
    (``([area], pops)``).  Each group holds at most ``budget`` spikes unless a
    single population is larger (the unit of work is one population).  With
    ``min_groups`` > 1 the budget shrinks so that the cores are kept busy.
    """
    counts = np.asarray(counts, dtype=np.int64)
    total = int(counts.sum())
    budget = max(1, min(int(budget), -(-total // max(1, min_groups)) if total else 1))
    labels = population_labels()
    per_area = {a: [(lab.split("-")[1], int(c)) for lab, c in zip(labels, counts) if lab.startswith(a + "-")]
                for a in AREAS}
    groups: list[tuple[list[str], list[str] | None]] = []
    cur: list[str] = []
    cur_n = 0
    for a in AREAS:
        n_a = sum(c for _, c in per_area[a])
        if n_a > budget:
            if cur:
                groups.append((cur, None))
                cur, cur_n = [], 0
            pops: list[str] = []
            pn = 0
            for p, c in per_area[a]:
                if pops and pn + c > budget:
                    groups.append(([a], pops))
                    pops, pn = [], 0
                pops.append(p)
                pn += c
            groups.append(([a], pops) if len(pops) < len(per_area[a]) else ([a], None))
            continue
        if cur and cur_n + n_a > budget:
            groups.append((cur, None))
            cur, cur_n = [], 0
        cur.append(a)
        cur_n += n_a
    if cur:
        groups.append((cur, None))
    return groups


def group_flat_indices(areas: list[str], pops: list[str] | None) -> np.ndarray:
    """Flat indices of a group of :func:`plan_groups`."""
    labels = population_labels()
    return np.array([i for i, lab in enumerate(labels)
                     if lab.split("-")[0] in areas and (pops is None or lab.split("-")[1] in pops)])


def run_group(run, idx: np.ndarray, n_common: int, n_neurons: np.ndarray, d: dict,
              parts: frozenset | None = None):
    """One Dask task: read a group's spikes and compute its kernel parts.

    ``run`` is the opened RunStore (it pickles to a few hundred bytes for
    distributed workers); ``n_common`` the segments every rank committed.
    """
    pop, senders, steps = store_read.read_populations(run, idx, n_common)
    w = kernels.make_windows(dt=run.dt, t_min=d["t_min_ms"], t_max=d["t_max_ms"],
                             bin_ms=d["bin_ms"], cc_bin_ms=d["cc_bin_ms"])
    out = kernels.group_statistics(pop, senders, steps, n_neurons, w, d, parts=parts, dt=run.dt)
    out["flat_index"] = idx
    return out


def merge_groups(parts: list[dict], n_neurons: np.ndarray) -> dict[str, Any]:
    """Per-group outputs -> flat 254-population arrays (``neuron_*``: lists in flat order)."""
    merged: dict[str, Any] = {}
    order = np.concatenate([p["flat_index"] for p in parts])
    if sorted(order.tolist()) != list(range(N_POPULATIONS)):
        raise StoreError("internal error: the analysis groups do not cover the 254 populations once")
    for key in parts[0]:
        if key == "flat_index" or key.startswith("neuron_"):
            continue
        vals = np.concatenate([p[key] for p in parts], axis=0)
        arr = np.empty_like(vals)
        arr[order] = vals
        merged[key] = arr
    for key in [k for k in parts[0] if k.startswith("neuron_")]:
        blocks = {}
        for p in parts:
            nc = p[key]
            pos = 0
            for fi in p["flat_index"]:
                blocks[int(fi)] = nc[pos:pos + n_neurons[fi]]
                pos += n_neurons[fi]
        merged[key] = [blocks[i] for i in range(N_POPULATIONS)]
    return merged


# ======================================================================================
# Helpers of the run
# ======================================================================================

def _parse_memory(limit) -> int | None:
    if limit is None:
        return None
    if isinstance(limit, (int, float)):
        return int(limit)
    from dask.utils import parse_bytes

    return int(parse_bytes(limit))


def _fingerprint(run) -> dict:
    """What identifies the spikes a cached statistic was computed from."""
    a = run.attrs
    return {"n_spikes": run.n_spikes(), "last_segment": a.get("last_segment"),
            "status": a.get("status"), "label": a.get("label", "")}


def _n_workers() -> int:
    try:
        from distributed import get_client

        client = get_client()
        return max(1, sum(client.nthreads().values()))
    except Exception:  # noqa: BLE001 - no distributed client: the local threads
        return max(1, os.cpu_count() or 1)


def require_structure(run) -> None:
    """StoreError unless the run store holds a structure with weights and indegrees."""
    if "structure" not in run.root or "weight_mean" not in run.root["structure"]:
        raise StoreError(f"run store {run.path!r} has no structure: the functional connectivity needs "
                         "weight_mean and indegree (import_upstream(..., structure=...))")


def structure_weights(run) -> xr.Dataset:
    """``weight_mean`` and ``indegree`` of the run's structure group (read directly:
    the full checked load of :func:`mam_xr.store.load_structure` is not needed here)."""
    require_structure(run)
    ds = xr.open_zarr(run.path, group="structure", consolidated=False, zarr_format=3)
    return ds[["weight_mean", "indegree"]].load()


def _build(run, parts: list[dict], d: dict, todo: list[str]) -> dict[str, xr.Dataset]:
    n_neurons = np.asarray(run.root["spikes"].attrs["n_neurons"], dtype=np.int64)
    inputs = Inputs(run, d, merge_groups(parts, n_neurons), n_neurons)
    out = {n: inputs.dataset(n) for n in todo}
    stamp = (f"{time.strftime('%Y-%m-%dT%H:%M:%S')} mam_xr.analysis.analyze "
             f"({ANALYSIS_VERSION}) on {run.attrs.get('label') or run.path}")
    for ds in out.values():
        ds.attrs.setdefault("run", run.path)
        ds.attrs["history"] = stamp
        ds["exists"] = exists()
    return out


# ======================================================================================
# analyze
# ======================================================================================

def read_analysis(run, name: str) -> xr.Dataset | None:
    """A cached statistic of a run store, or None if it was never computed."""
    statistic(name)
    return store_cache.read_cached(run, name)


def _names(statistics) -> list[str]:
    if statistics is None:
        return list(REGISTRY)
    names = [statistics] if isinstance(statistics, str) else list(statistics)
    for n in names:
        statistic(n)
    return names


def analyze(runs, statistics: Iterable[str] | str | None = None, *, recompute: bool = False,
            store: bool = True, chunk_spikes: int | None = None, memory_limit: int | str | None = None,
            scheduler: str | None = None, allow_incomplete: bool = False,
            dim: str = "run", coords: Iterable | None = None,
            **definition) -> dict[str, xr.Dataset]:
    """All spike statistics of one run (or several) in one call, cached in the run store.

    Parameters
    ----------
    runs : path, RunStore, or a list of them
        Run stores made by :func:`mam_xr.simulation.simulate` or
        :func:`mam_xr.importer.import_upstream`.
    statistics : str or iterable of str, optional
        Subset of :data:`STATISTICS` (default: all registered statistics).
    recompute : bool, default False
        Ignore cached results.
    store : bool, default True
        Write new results to ``analysis/<name>/`` of each run store.
    chunk_spikes : int, optional
        Most spikes one Dask task holds (default 4e6, ≈ 0.3 GB of working memory).
    memory_limit : int or str, optional
        Memory per Dask worker thread ("200MB"); sets ``chunk_spikes`` so that a task
        stays within about a third of it.
    scheduler : str, optional
        Passed to ``dask.compute`` (default: the active distributed client, else threads).
    allow_incomplete : bool, default False
        Analyse the committed segments of a run that is not complete.
    dim, coords : optional
        For a list of runs: the name of the new dimension (default ``"run"``; a sweep
        uses its parameter, e.g. ``dim="chi", coords=[1.0, 1.9]``) and its coordinate
        values (default: each run's label, or its path if labels repeat).
    **definition
        Definition parameters, see :data:`DEFAULTS` and docs/analysis.md
        (``t_min_ms``, ``t_max_ms``, ``bin_ms``, ``R_ms``, ...).

    Returns
    -------
    dict of str -> xr.Dataset
        One Dataset per statistic (see docs/analysis.md); for a list of runs each has a
        leading ``run`` dimension (coordinate: the run's label or path).

    Raises
    ------
    ParameterError
        Unknown statistic or definition parameter, a window outside the simulated time.
    StoreError
        A missing, foreign, damaged or incomplete run store.
    """
    import dask

    single = isinstance(runs, (str, Path)) or not isinstance(runs, (list, tuple))
    run_list = [runs] if single else list(runs)
    if not run_list:
        raise ParameterError(invalid("runs", runs, "a run store or a non-empty list of run stores"))
    names = _names(statistics)
    opened = [store_read.as_run(r, allow_incomplete=allow_incomplete) for r in run_list]
    mem = _parse_memory(memory_limit)
    if chunk_spikes is None:
        chunk_spikes = DEFAULT_CHUNK_SPIKES if mem is None else max(10_000, mem // (3 * _BYTES_PER_SPIKE))
    if int(chunk_spikes) < 1:
        raise ParameterError(invalid("chunk_spikes", chunk_spikes, "a positive number of spikes"))

    results: list[dict[str, xr.Dataset]] = []
    pending = []          # (run index, run, definition, per-statistic definitions, names to compute)
    for i, run in enumerate(opened):
        d = resolve_definition(run, definition)
        fp = _fingerprint(run)
        defs = {n: definition_of(REGISTRY[n], d, run, fp) for n in names}
        res = {}
        if not recompute:
            for n in names:
                ds = store_cache.cached_if_current(run, n, defs[n])
                if ds is not None:
                    res[n] = ds
        todo = [n for n in names if n not in res]
        if any(REGISTRY[n].structure for n in closure(todo)):
            require_structure(run)      # fail before the pass over the spikes
        results.append(res)
        if todo:
            pending.append((i, run, d, defs, todo))

    if pending:
        from dask import delayed

        n_workers = 1 if scheduler in ("sync", "synchronous", "single-threaded") else _n_workers()
        tasks = []
        for (_, run, d, _, todo) in pending:
            counts = store_read.population_spike_counts(run)
            groups = plan_groups(counts, int(chunk_spikes), min_groups=n_workers)
            parts = frozenset(x for n in closure(todo) for x in REGISTRY[n].parts)
            n_common = run.n_segments_committed()
            n_all = np.asarray(run.root["spikes"].attrs["n_neurons"], dtype=np.int64)
            group_idx = [group_flat_indices(a, p) for a, p in groups]
            tasks.append([delayed(run_group, pure=False)(run, idx, n_common, n_all[idx], d, parts)
                          for idx in group_idx])
        computed = dask.compute(*tasks, scheduler=scheduler) if scheduler else dask.compute(*tasks)
        for (i, run, d, defs, todo), parts in zip(pending, computed):
            new = _build(run, list(parts), d, todo)
            for n, ds in new.items():
                ds.attrs["definition"] = store_cache.definition_json(defs[n])
                if store:
                    try:
                        store_cache.write_cached(run, n, ds, defs[n])
                    except OSError as exc:   # e.g. a read-only shared store: results stay valid
                        warnings.warn(f"run store {run.path!r}: analysis/{n} could not be cached ({exc})",
                                      stacklevel=2)
                results[i][n] = ds

    if single:
        return {n: results[0][n] for n in names}
    if coords is not None:
        run_coord = list(coords)
        if len(run_coord) != len(opened):
            raise ParameterError(invalid("coords", coords, f"{len(opened)} values, one per run"))
    else:
        run_coord = [r.attrs.get("label") or r.path for r in opened]
        if len(set(run_coord)) < len(run_coord):
            run_coord = [r.path for r in opened]
    out = {}
    for n in names:
        dss = [res[n] for res in results]
        out[n] = xr.concat(dss, dim=xr.DataArray(run_coord, dims=dim, name=dim),
                           join="outer", combine_attrs="drop_conflicts", fill_value=REGISTRY[n].fill_value)
    return out


# ======================================================================================
# Lazy reading
# ======================================================================================

def lazy_spikes(run, *, area=None, pop=None, t_start_ms: float | None = None,
                t_stop_ms: float | None = None, chunk_spikes: int = DEFAULT_CHUNK_SPIKES):
    """Spikes of a selection as Dask arrays, one chunk per group of populations.

    Nothing is read until computed; each chunk reads only the Zarr chunks that hold
    its populations.  Within a chunk, spikes are in storage order (by segment, then
    population, then time).

    Returns
    -------
    dict with Dask arrays ``times`` (ms, float64), ``senders`` (neuron index in
    its population, int32) and ``population`` (flat index 0..253, int16),
    chunked alike (chunk sizes unknown until computed).
    """
    import dask.array as da
    from dask import delayed

    run = store_read.as_run(run)
    sel = run.population_indices(area, pop)
    if len(sel) == 0:
        raise ParameterError(invalid("area/pop", (area, pop), "a selection with at least one population"))
    counts = np.zeros(N_POPULATIONS, dtype=np.int64)
    counts[sel] = store_read.population_spike_counts(run)[sel]
    chunks = []
    selected = set(sel.tolist())
    for areas, pops in plan_groups(counts, chunk_spikes):
        idx = [i for i in group_flat_indices(areas, pops) if i in selected]
        if not idx:
            continue
        chunks.append(delayed(_read_part, pure=True)(run.path, idx, t_start_ms, t_stop_ms))
    arrays = {}
    for k, (key, dtype) in enumerate((("times", np.float64), ("senders", np.int32), ("population", np.int16))):
        arrays[key] = da.concatenate([da.from_delayed(c[k], shape=(np.nan,), dtype=dtype) for c in chunks])
    return arrays


def _read_part(path, idx, t0, t1):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        run = store_read.as_run(path, allow_incomplete=True)
    idx = np.asarray(idx)
    times, senders, pops = [], [], []
    for run_idx in np.split(idx, np.flatnonzero(np.diff(idx) != 1) + 1):   # consecutive runs
        pop, snd, st = store_read.read_populations(run, run_idx)
        keep = np.ones(len(st), dtype=bool)
        if t0 is not None:
            keep &= st >= kernels.steps_at_least(float(t0), run.dt)
        if t1 is not None:
            keep &= st < kernels.steps_at_least(float(t1), run.dt)
        times.append(kernels.steps_to_ms(st[keep], run.dt))
        senders.append(snd[keep])
        pops.append((run_idx[0] + pop[keep]).astype(np.int16))
    return np.concatenate(times), np.concatenate(senders), np.concatenate(pops)
