"""Simulate the network with a registered engine, streaming spikes into a run store.

:func:`simulate` builds the :class:`mam_xr.network.NetworkPlan` of the
structure Dataset, hands it to the engine named by ``params.simulation.engine``
(:mod:`mam_xr.engines`: ``"nest"``, ``"brian2"``), runs it in segments of
``params.simulation.segment`` ms and appends every segment's spikes to a Zarr
run store (:mod:`mam_xr.store`), so memory does not grow with t_sim and a run
killed mid-way keeps its completed segments.  The store, the segment loop,
progress, MPI bookkeeping (:mod:`mam_xr.parallel`) and failure handling live
here; everything simulator-specific lives in the engine (docs/simulation.md).
"""

from __future__ import annotations

import json
import resource
import signal
import sys
import time

import numpy as np
import xarray as xr

from . import engines as _engines
from . import parallel as _parallel
from . import planner as _planner
from . import store as _store
from .errors import ParameterError, SimulationError, StoreError, invalid
from .network import NetworkPlan, connection_counts

__all__ = ["simulate", "connection_counts"]


def _json_safe(value):
    """Attrs must be JSON: numpy scalars and arrays become Python numbers and lists."""
    def default(obj):
        if isinstance(obj, np.generic):
            return obj.item()
        if isinstance(obj, np.ndarray):
            return obj.tolist()
        return str(obj)

    return json.loads(json.dumps(value, default=default))


def _validate(params, store_path) -> None:
    sim = params.simulation
    _engines.get(sim.engine)  # a registered engine
    if sim.segment > sim.t_sim:
        raise ParameterError(invalid("simulation.segment", sim.segment,
                                     f"at most t_sim={sim.t_sim} ms"))
    steps = sim.segment / sim.dt
    if abs(steps - round(steps)) > 1e-9 * max(1.0, steps):
        raise ParameterError(invalid("simulation.segment", sim.segment, f"a multiple of dt={sim.dt} ms"))
    if store_path is None:
        raise ParameterError(invalid("store", None, "the path of the run store to write"))


class _Terminate:
    """Turn SIGTERM into an orderly stop after the current segment."""

    def __init__(self):
        self.signum = None
        self._old = None

    def __enter__(self):
        if sys.platform != "win32":
            try:
                self._old = signal.signal(signal.SIGTERM, self._handle)
            except ValueError:  # not in the main thread
                self._old = None
        return self

    def _handle(self, signum, frame):
        self.signum = signum

    def __exit__(self, *exc):
        if self._old is not None:
            signal.signal(signal.SIGTERM, self._old)
        return False


def simulate(params, store=None, structure: xr.Dataset | None = None, progress: bool = True,
             overwrite: bool = False, connectivity=None, *, engine_options: dict | None = None,
             label: str | None = None, check_memory: bool = True, theory=None) -> "_store.RunStore":
    """Build the network with the engine ``params.simulation.engine``, simulate it and write a run store.

    Parameters
    ----------
    params
        :class:`mam_xr.params.Params` (simulation part: t_sim, dt, threads,
        seed, areas_simulated, replacement mode and rates source, segment).
    store
        Path of the run store to create (``<run>.zarr``).
    structure
        The structure Dataset; default ``mam_xr.structure.build(params)``.
    progress
        Show a tqdm bar: simulated time, wall time, real-time factor, rate.
    overwrite
        Replace an existing store at ``store``.
    connectivity
        A saved connectivity (run store path with a ``connectivity/`` group,
        a zarr group or a :class:`mam_xr.network.Connectivity`, see
        docs/engines.md) whose synapses and initial potentials replace the
        engine's own draws; only the Poisson input then follows the seed.
        Single process only.
    engine_options
        Keyword options of the engine (e.g. Brian2's ``save_connectivity``,
        ``poisson_seed``, ``build_dir``; see :mod:`mam_xr.engines`).
    label
        The store's label; default ``params.label()``.
    check_memory
        Refuse (``ParameterError``, nothing written) a run whose peak memory
        :func:`mam_xr.planner.check_memory` predicts above the memory
        available; False runs it anyway.
    theory
        The mean-field integration of ``params`` on ``structure``
        (:func:`mam_xr.theory.integrate`) if the caller has it: the memory
        check uses its rates instead of integrating again.

    Returns the :class:`mam_xr.store.RunStore` of the finished run.  Invalid
    requests raise :class:`ParameterError` / :class:`StoreError` before the
    simulator is touched; an error during the run marks the store ``failed`` (with the
    error) and re-raises; SIGTERM stops after the current segment and marks
    the store ``failed`` with every completed segment kept.
    """
    from .params import Params

    if isinstance(params, dict):
        params = Params.from_dict(params)
    if not isinstance(params, Params):
        raise ParameterError(invalid("params", type(params).__name__, "a mam_xr.Params"))
    _validate(params, store)
    store_path = _store.check_writable(store)  # path problems first, before the structure is built
    # Under MPI only rank 0 checks: it creates the store, possibly before another rank gets here.
    # (an existing path only with overwrite, and then only a mam_xr store no live writer holds)
    if _parallel.launcher_rank() == 0:
        _store.check_target(store_path, overwrite)
    t_wall0 = time.perf_counter()
    timings: dict[str, float] = {}
    if structure is None:
        from .structure import build

        t0 = time.perf_counter()
        structure = build(params)
        timings["structure"] = time.perf_counter() - t0
    sim = params.simulation
    plan = NetworkPlan(params, structure)  # validates rates sources etc.
    if check_memory:  # predicted peak vs memory available, before anything is drawn or written
        _planner.check_memory(params, structure, theory=theory)
    engine = _engines.get(sim.engine)(params, plan, connectivity=connectivity, **(engine_options or {}))
    engine.check()  # e.g. memory, a saved connectivity, MPI: before anything is written
    timings.update(engine.timings)
    _store.check_writable(store_path, _store.estimate_run_bytes(plan.n_neurons, sim.t_sim))
    rank, n_ranks = engine.ranks()
    seg_steps = int(round(sim.segment / sim.dt))
    total_steps = int(round(sim.t_sim / sim.dt))
    bounds = [(s * sim.dt, min(s + seg_steps, total_steps) * sim.dt)
              for s in range(0, total_steps, seg_steps)]
    n_vp = engine.n_vp
    extra = {"areas_simulated": list(plan.areas),
             "replace_non_simulated_areas": sim.replace_non_simulated_areas,
             "segment": float(sim.segment),
             "n_neurons_created": plan.n_neurons, "n_synapses_planned": plan.n_synapses,
             **engine.store_attrs()}
    n_sim = np.where(plan.simulated, plan.n, 0)
    if rank == 0:
        root = _store.create_run(
            store_path, structure=structure, dt=sim.dt, t_sim=sim.t_sim,
            n_segments_planned=len(bounds), params=params.to_json(), label=label or params.label(),
            seed=sim.seed, n_vp=n_vp, threads=sim.threads, n_ranks=n_ranks, engine=engine.name,
            overwrite=overwrite, extra_attrs=extra, n_neurons=n_sim)
    _parallel.barrier(engine, n_ranks)
    if rank != 0:
        import zarr

        root = zarr.open_group(str(store_path), mode="r+", zarr_format=3)
    root_attrs_writer = root if rank == 0 else None
    _parallel.register(root, rank, sim.threads)

    pbar = None
    try:
        with _Terminate() as term:
            built = engine.build(root)
            timings.update(engine.timings)
            if root_attrs_writer is not None and built:
                root_attrs_writer.attrs.update(_json_safe(built))
            writer = _store.SpikeWriter(root, rank=rank)
            if progress and rank == 0:
                from tqdm.auto import tqdm

                pbar = tqdm(total=sim.t_sim, unit="ms", desc="simulating", file=sys.stderr,
                            bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} ms [{elapsed}<{remaining}{postfix}]")
            t_sim_wall = t_write = t_sim_cpu = 0.0
            n_spikes_total = 0
            for s, (a, b) in enumerate(bounds):
                t0, c0 = time.perf_counter(), time.process_time()
                seg = engine.run_segment(a, b)
                t_sim_wall += time.perf_counter() - t0
                t_sim_cpu += time.process_time() - c0  # all threads; robust to foreign load
                t0 = time.perf_counter()
                writer.append_segment(seg.steps, seg.senders, seg.pop, a, b)
                t_write += time.perf_counter() - t0
                n_spikes_total += len(seg)
                _parallel.test_hook(rank, s)
                if pbar is not None:
                    wall = time.perf_counter() - t_wall0
                    rate = n_spikes_total / max(plan.n_neurons, 1) / (b * 1e-3)
                    pbar.update(b - a)
                    pbar.set_postfix_str(f"RTF {t_sim_wall / (b * 1e-3):.1f}, "
                                         f"{rate:.1f} spikes/s, wall {wall:.0f} s", refresh=False)
                if term.signum is not None:
                    raise SimulationError(f"terminated by signal {signal.Signals(term.signum).name} "
                                          f"after segment {s} ({b:g} ms)")
            timings["simulate"] = t_sim_wall
            timings["simulate_cpu"] = t_sim_cpu
            timings.update(engine.timings)  # e.g. Brian2's own simulate time
            timings["write"] = t_write
            timings["total"] = time.perf_counter() - t_wall0
            usage = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kB on Linux
            # complete only when every rank finished (barriers; rank 0 decides)
            _parallel.finish(engine, root, rank=rank, n_ranks=n_ranks, n_spikes=n_spikes_total,
                             timings=timings, peak_rss_kB=int(usage), **engine.finish_attrs())
    except BaseException as exc:
        try:
            timings["total"] = time.perf_counter() - t_wall0
            _parallel.fail(root, rank, f"{type(exc).__name__}: {exc}", timings)
        finally:
            if pbar is not None:
                pbar.close()
            engine.close()
        if isinstance(exc, Exception) and not isinstance(exc, (SimulationError, StoreError)):
            # NEST's own errors (and anything unexpected) surface as SimulationError.
            raise SimulationError(f"simulation of run store {str(store_path)!r} failed: "
                                  f"{type(exc).__name__}: {exc}") from exc
        raise
    if pbar is not None:
        pbar.close()
    engine.close()
    return _store.open_run(store_path)

