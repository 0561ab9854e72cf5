"""The spiking network in NEST 3, streaming its spikes into a run store.

:func:`simulate` builds the network of spec/dynamics.md §A from the structure
Dataset (spec/construction.md §6 for the instantiation rules), simulates it in
segments of ``params.simulation.segment`` ms and appends every segment's spikes
to a Zarr run store (:mod:`mam_xr.store`), so memory does not grow with t_sim
and a run killed mid-way keeps its completed segments.

NEST constructs (chosen for speed without changing the model, see
docs/simulation.md):

* all neurons in one ``Create`` call (V_m ~ N(V0_mean, V0_sd) drawn by NEST),
  I_e set per population (a scalar each: arrays do not work under MPI);
* external drive: one ``poisson_generator_ps`` per population (rate
  rate_ext·K_ext), connected to each neuron with one array-based ``Connect``.
  Every target receives an independent Poisson train; an ``iaf_psc_exp``
  neuron sees the spikes on its 0.1 ms grid, so the per-step input count is
  Poisson(rate·dt) exactly as with ``poisson_generator``, but NEST only draws
  at spike times (engine_probe.md §5: ~12 s of 40 s are per-step draws);
* recurrent projections: one ``Connect`` per projection with at least one
  synapse (NEST needs one call per ``fixed_total_number`` projection), weights
  ``redraw(normal(W, W_sd))`` with the sign of the source (CC: ≥ 0), delays
  ``redraw(normal(d, delay_rel·d), min=dt)``;
* replacement inputs of non-simulated areas: all generators in one ``Create``
  and one array-based ``Connect``;
* spikes to memory, pulled and cleared after each segment.
"""

from __future__ import annotations

import json
import math
import os
import resource
import signal
import sys
import time
from pathlib import Path

import numpy as np
import xarray as xr

from . import parallel as _parallel
from . import store as _store
from .errors import ParameterError, SimulationError, StoreError, invalid
from .flat import AREAS, N_POPULATIONS, POPS, is_excitatory, population_labels, to_flat_matrix, to_flat_vector

#: External input generator model.  ``poisson_generator`` gives the same input
#: statistics (per-step Poisson counts) at a higher cost.
EXTERNAL_GENERATOR = "poisson_generator_ps"
#: Synapse model of every connection: NEST's static synapse with compact target
#: indices (the same dynamics as ``static_synapse``; less memory, faster to connect).
SYNAPSE_MODEL = "static_synapse_hpc"
#: Delay of the external Poisson input (ms): NEST's default static-synapse delay,
#: as upstream (dynamics.md §A.8).
EXTERNAL_DELAY = 1.0

_LABELS = population_labels()
_AREA_OF = np.array([AREAS.index(lab.split("-")[0]) for lab in _LABELS])
_POP_OF = np.array([POPS.index(lab.split("-")[1]) for lab in _LABELS])


# --------------------------------------------------------------------------------------
# Plan: everything computed and validated before NEST is touched
# --------------------------------------------------------------------------------------

class _Plan:
    """Flat numpy description of the network to build (no NEST objects)."""

    def __init__(self, params, structure: xr.Dataset):
        sim = params.simulation
        net = params.network
        self.dt = float(sim.dt)
        self.t_sim = float(sim.t_sim)
        self.segment = float(sim.segment)
        self.areas = tuple(sim.areas_simulated)
        self.simulated = np.isin(_AREA_OF, [AREAS.index(a) for a in self.areas])
        N = to_flat_vector(structure["neurons"])
        self.n = np.where(self.simulated, np.floor(N), 0).astype(np.int64)
        self.first = np.concatenate([[0], np.cumsum(self.n)])  # per-pop start in the neuron list
        self.dc = np.nan_to_num(to_flat_vector(structure["dc_drive"]))
        self.k_ext = to_flat_vector(structure["external_indegree"])
        self.w_ext = to_flat_vector(structure["external_weight"])
        self.rate_ext = float(net.input.rate_ext)

        S = np.nan_to_num(to_flat_matrix(structure["synapses"]))
        W = np.nan_to_num(to_flat_matrix(structure["weight_mean"]))
        W_sd = np.nan_to_num(to_flat_matrix(structure["weight_sd"]))
        D = np.nan_to_num(to_flat_matrix(structure["delay_mean"]))
        D_sd = np.nan_to_num(to_flat_matrix(structure["delay_sd"]))
        self.S, self.W, self.D = S, W, D
        same_area = _AREA_OF[:, None] == _AREA_OF[None, :]
        exc_source = np.broadcast_to(is_excitatory(np.array(POPS)[_POP_OF])[None, :], S.shape)
        M = np.floor(S).astype(np.int64)  # upstream's int() truncation
        both = self.simulated[:, None] & self.simulated[None, :]
        tgt, src = np.nonzero(both & (M > 0))
        # Connect order fixes which random numbers each projection draws: intra-area
        # projections first, then cortico-cortical ones (as upstream), target-major.
        order = np.lexsort((src, tgt, ~same_area[tgt, src]))
        tgt, src = tgt[order], src[order]
        self.proj_target, self.proj_source = tgt, src
        self.proj_n = M[tgt, src]
        self.proj_w, self.proj_w_sd = W[tgt, src], W_sd[tgt, src]
        self.proj_d, self.proj_d_sd = D[tgt, src], D_sd[tgt, src]
        # Sign-preserving redraw bounds (construction.md §6): E sources and all
        # CC weights >= 0, I sources within an area <= 0.
        positive = exc_source[tgt, src] | ~same_area[tgt, src]
        self.proj_positive = positive
        self.n_synapses = int(self.proj_n.sum())

        self.replacement = None
        if len(self.areas) < len(AREAS):
            self.replacement = _replacement_inputs(params, structure, self, S, W, D)

    @property
    def n_neurons(self) -> int:
        return int(self.n.sum())


def _rates_from_json(path: Path, name: str) -> np.ndarray:
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ParameterError(invalid(name, str(path), f"a readable JSON file of population rates ({exc})")) from exc
    out = np.full(N_POPULATIONS, np.nan)
    for i, lab in enumerate(_LABELS):
        area, pop = lab.split("-")
        v = raw.get(area, {}).get(pop) if isinstance(raw.get(area), dict) else None
        if isinstance(v, list):  # upstream stores (rate, ...) lists: first element
            v = v[0] if v else None
        if v is not None:
            out[i] = float(v)
    return out


def _is_run_store(path: Path) -> bool:
    return path.is_dir() and (path / "zarr.json").is_file()


def _rates_from_run(path: Path, t_sim: float, series: bool, name: str) -> np.ndarray:
    """Population rates (spikes/s) of a previous run: time-averaged over
    [500 ms, t_sim) (the analysis window of decisions.md; the whole run if
    shorter), or a 1-ms series of length int(t_sim) when ``series``."""
    try:
        run = _store.open_run(path)
    except StoreError as exc:
        raise ParameterError(invalid(name, str(path), f"a complete mam_xr run store ({exc})")) from exc
    n = np.asarray(run.root["spikes"].attrs["n_neurons"], dtype=float)
    prev_t = float(run.attrs["t_sim"])
    sp = run.spikes()
    with np.errstate(invalid="ignore", divide="ignore"):
        if series:
            n_ms = int(t_sim)
            if prev_t < n_ms:
                raise ParameterError(invalid(name, str(path), f"a run of at least t_sim={t_sim} ms "
                                             f"for het_current_nonstat (it has {prev_t} ms)"))
            bins = np.floor(sp.times).astype(np.int64)
            keep = bins < n_ms
            counts = np.zeros((N_POPULATIONS, n_ms))
            np.add.at(counts, (sp.pop[keep], bins[keep]), 1.0)
            return counts / n[:, None] / 1e-3
        t0 = 500.0 if prev_t > 500.0 else 0.0
        sel = (sp.times >= t0) & (sp.times < prev_t)
        counts = np.bincount(sp.pop[sel], minlength=N_POPULATIONS).astype(float)
        rates = counts / n / ((prev_t - t0) * 1e-3)
    return np.where(n > 0, rates, np.nan)


def _replacement_inputs(params, structure, plan: "_Plan", S, W, D) -> dict:
    """Generators replacing the input from non-simulated areas (dynamics.md §A.11).

    For a simulated target t and a non-simulated source population s with
    indegree k = S_ts / N_t: ``hom_poisson_stat`` / ``het_poisson_stat`` give a
    Poisson generator of rate k·ν_s onto every neuron of t with the fixed weight
    W_ts and delay d_TS = distance / speed; ``het_current_nonstat`` gives a
    step current W_ts·τ_s·k·ν_s(m)·1e-3 pA in 1-ms steps (with the τ_s factor
    upstream omits, decisions.md).  Current inputs with the same target and
    source area share one generator (their sum; same delay).
    """
    sim = params.simulation
    mode = sim.replace_non_simulated_areas
    name = "replace_cc_input_source"
    series = mode == "het_current_nonstat"
    if mode == "hom_poisson_stat":
        nu = np.full(N_POPULATIONS, float(params.network.input.rate_ext))
    else:
        source = sim.replace_cc_input_source
        if source is None:
            from .data import fetch

            path = fetch("tests/fullscale_rates.json")
        else:
            path = Path(os.fspath(source))
            if not path.exists():
                raise ParameterError(invalid(name, source, "an existing rates JSON file or mam_xr run store "
                                             f"(needed by replace_non_simulated_areas={mode!r})"))
        if _is_run_store(path):
            nu = _rates_from_run(path, plan.t_sim, series, name)
        else:
            nu = _rates_from_json(path, name)
            if series:
                nu = np.repeat(nu[:, None], int(plan.t_sim), axis=1)
    N = to_flat_vector(structure["neurons"])
    tgt_ok = plan.simulated & (plan.n > 0)
    src_ok = ~plan.simulated
    with np.errstate(invalid="ignore", divide="ignore"):
        K = np.where(N[:, None] > 0, S / N[:, None], 0.0)
    tgt, src = np.nonzero(tgt_ok[:, None] & src_ok[None, :] & (K > 0))
    nu_src = nu[src] if not series else nu[src].mean(axis=1)
    missing = np.isnan(nu_src)
    if missing.any():
        raise ParameterError(invalid(name, str(sim.replace_cc_input_source),
                                     f"a rate for every source population of the non-simulated areas "
                                     f"(missing {_LABELS[src[missing][0]]})"))
    k, w, d = K[tgt, src], W[tgt, src], D[tgt, src]
    if not series:
        rate = k * nu[src]
        keep = rate > 0  # a zero-rate generator sends nothing
        return {"mode": mode, "kind": "poisson", "target": tgt[keep], "rate": rate[keep],
                "weight": w[keep], "delay": d[keep], "source": src[keep]}
    tau_s = float(params.network.neuron.tau_syn_ex)  # CC sources are excitatory
    amp = (w * tau_s * k)[:, None] * nu[src] * 1e-3  # pA per 1-ms step
    key = tgt * len(AREAS) + _AREA_OF[src]
    uniq, inv = np.unique(key, return_inverse=True)
    summed = np.zeros((uniq.size, amp.shape[1]))
    np.add.at(summed, inv, amp)
    delay = np.zeros(uniq.size)
    delay[inv] = d
    return {"mode": mode, "kind": "current", "target": uniq // len(AREAS), "amplitudes": summed,
            "delay": delay, "source_area": uniq % len(AREAS)}


def _validate(params, store_path) -> None:
    sim = params.simulation
    if sim.engine != "nest":
        raise ParameterError(invalid("simulation.engine", sim.engine, "'nest' (simulate() runs NEST)"))
    if sim.segment > sim.t_sim:
        raise ParameterError(invalid("simulation.segment", sim.segment,
                                     f"at most t_sim={sim.t_sim} ms"))
    steps = sim.segment / sim.dt
    if abs(steps - round(steps)) > 1e-9 * max(1.0, steps):
        raise ParameterError(invalid("simulation.segment", sim.segment, f"a multiple of dt={sim.dt} ms"))
    if store_path is None:
        raise ParameterError(invalid("store", None, "the path of the run store to write"))


# --------------------------------------------------------------------------------------
# NEST
# --------------------------------------------------------------------------------------

def _import_nest():
    os.environ.setdefault("PYNEST_QUIET", "1")
    try:
        import nest
    except ImportError as exc:  # pragma: no cover - nest-simulator is a dependency
        raise SimulationError("NEST is not importable: install nest-simulator>=3.8") from exc
    nest.verbosity = nest.VerbosityLevel.ERROR
    return nest


def _build(nest, plan: _Plan, params, seed: int, threads: int) -> dict:
    """Create and connect the network; returns NEST handles and phase timings."""
    t0 = time.perf_counter()
    neuron = params.network.neuron
    nest.ResetKernel()
    nest.set(resolution=plan.dt, local_num_threads=int(threads), rng_seed=int(seed),
             print_time=False, overwrite_files=True)
    timings = {"prepare": time.perf_counter() - t0}

    t0 = time.perf_counter()
    model_params = {"C_m": neuron.C_m, "tau_m": neuron.tau_m, "tau_syn_ex": neuron.tau_syn_ex,
                    "tau_syn_in": neuron.tau_syn_in, "E_L": neuron.E_L, "V_th": neuron.V_th,
                    "V_reset": neuron.V_reset, "t_ref": neuron.t_ref}
    nest.SetDefaults("iaf_psc_exp", model_params)
    n_total = plan.n_neurons
    pop_of_neuron = np.repeat(np.arange(N_POPULATIONS), plan.n)
    create_params = {"V_m": nest.random.normal(mean=neuron.V0_mean, std=neuron.V0_sd)}
    neurons = nest.Create("iaf_psc_exp", n_total, params=create_params)
    # I_e: one scalar per population; PyNEST expands arrays of node parameters
    # only when every node is local, i.e. not under MPI (docs/cluster.md).
    for p in np.flatnonzero((plan.dc != 0) & (plan.n > 0)).tolist():
        neurons[int(plan.first[p]):int(plan.first[p + 1])].set(I_e=float(plan.dc[p]))
    first_id = int(neurons[0].global_id) if n_total else 0
    ids = np.arange(first_id, first_id + n_total, dtype=np.int64)  # one Create: contiguous ids
    recorder = nest.Create("spike_recorder", params={"record_to": "memory"})
    nest.Connect(neurons, recorder, syn_spec={"synapse_model": SYNAPSE_MODEL})
    # External drive: one generator per simulated population.
    pops = np.flatnonzero(plan.n > 0)
    gens = nest.Create(EXTERNAL_GENERATOR, pops.size,
                       params={"rate": (plan.rate_ext * plan.k_ext[pops]).tolist()})
    gen_ids = np.asarray(gens.tolist(), dtype=np.int64)
    gen_of_pop = np.zeros(N_POPULATIONS, dtype=np.int64)
    gen_of_pop[pops] = gen_ids
    nest.Connect(gen_of_pop[pop_of_neuron], ids, "one_to_one",
                 syn_spec={"synapse_model": SYNAPSE_MODEL, "weight": plan.w_ext[pop_of_neuron],
                           "delay": np.full(n_total, EXTERNAL_DELAY)})
    timings["create"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    slices = [neurons[int(plan.first[p]):int(plan.first[p + 1])] if plan.n[p] else None
              for p in range(N_POPULATIONS)]
    redraw, normal = nest.math.redraw, nest.random.normal
    inf = math.inf
    for t, s, m, w, w_sd, d, d_sd, pos in zip(
            plan.proj_target.tolist(), plan.proj_source.tolist(), plan.proj_n.tolist(),
            plan.proj_w.tolist(), plan.proj_w_sd.tolist(), plan.proj_d.tolist(),
            plan.proj_d_sd.tolist(), plan.proj_positive.tolist()):
        if w_sd > 0:
            weight = redraw(normal(mean=w, std=w_sd), min=0.0, max=inf) if pos \
                else redraw(normal(mean=w, std=w_sd), min=-inf, max=0.0)
        else:
            weight = w
        delay = redraw(normal(mean=d, std=d_sd), min=plan.dt, max=inf) if d_sd > 0 else max(d, plan.dt)
        nest.Connect(slices[s], slices[t],
                     {"rule": "fixed_total_number", "N": m,
                      "allow_autapses": True, "allow_multapses": True},
                     {"synapse_model": SYNAPSE_MODEL, "weight": weight, "delay": delay})
    timings["connect"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    rep = plan.replacement
    if rep is not None and rep["target"].size:
        tg = rep["target"]
        if rep["kind"] == "poisson":
            reps = nest.Create("poisson_generator_ps", tg.size, params={"rate": rep["rate"].tolist()})
            weights = rep["weight"]
        else:
            n_ms = rep["amplitudes"].shape[1]
            times = (plan.dt + np.arange(n_ms)).tolist()  # upstream: t_m = dt + m ms
            reps = nest.Create("step_current_generator", tg.size)
            reps.set([{"amplitude_times": times, "amplitude_values": a.tolist()}
                      for a in rep["amplitudes"]])
            weights = np.ones(tg.size)
        rep_ids = np.asarray(reps.tolist(), dtype=np.int64)
        n_t = plan.n[tg]
        pre = np.repeat(rep_ids, n_t)
        post = np.concatenate([ids[plan.first[t]:plan.first[t + 1]] for t in tg])
        nest.Connect(pre, post, "one_to_one",
                     syn_spec={"synapse_model": SYNAPSE_MODEL, "weight": np.repeat(weights, n_t),
                               "delay": np.maximum(np.repeat(rep["delay"], n_t), plan.dt)})
    timings["replacement"] = time.perf_counter() - t0
    return {"neurons": neurons, "first_id": first_id, "recorder": recorder,
            "timings": timings}


def _nest_memory_kb(nest) -> int | None:
    try:
        return int(nest.GetKernelStatus("memory_size"))
    except Exception:  # noqa: BLE001 - not on every platform
        return None


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
             overwrite: bool = False, connectivity=None) -> "_store.RunStore":
    """Build the NEST network, simulate it and write a run store.

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
        see docs/engines.md) whose synapses and initial potentials replace
        NEST's own draws; only the Poisson input then follows the seed.
        Single process only.

    Returns the :class:`mam_xr.store.RunStore` of the finished run.  Invalid
    requests raise :class:`ParameterError` / :class:`StoreError` before NEST
    is touched; an error during the run marks the store ``failed`` (with the
    error) and re-raises; SIGTERM stops after the current segment and marks
    the store ``failed`` with every completed segment kept.
    """
    from .params import Params

    if isinstance(params, dict):
        params = Params.from_dict(params)
    if not isinstance(params, Params):
        raise ParameterError(invalid("params", type(params).__name__, "a mam_xr.Params"))
    if params.simulation.engine == "brian2":
        # The Brian2 C++ standalone engine: same network, same run-store layout.
        from .engine_brian2 import run as run_brian2

        return run_brian2(params, structure=structure, store=store, overwrite=overwrite,
                          connectivity=connectivity)
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
    plan = _Plan(params, structure)  # validates rates sources etc.
    saved = None
    if connectivity is not None:
        # A saved network (engine comparisons, docs/engines.md): no projections of our own.
        from . import engine_brian2

        saved = engine_brian2.load_connectivity(connectivity)
        engine_brian2.check_connectivity(saved, plan.n, plan.dt)
        for name in ("proj_target", "proj_source", "proj_n", "proj_w", "proj_w_sd", "proj_d",
                     "proj_d_sd", "proj_positive"):
            setattr(plan, name, getattr(plan, name)[:0])
        plan.n_synapses = saved.n_synapses
    _store.check_writable(store_path, _store.estimate_run_bytes(plan.n_neurons, sim.t_sim))

    nest = _import_nest()
    rank, n_ranks = _parallel.ranks(nest)  # refuses mpirun with a NEST without MPI
    seg_steps = int(round(sim.segment / sim.dt))
    total_steps = int(round(sim.t_sim / sim.dt))
    bounds = [(s * sim.dt, min(s + seg_steps, total_steps) * sim.dt)
              for s in range(0, total_steps, seg_steps)]
    n_vp = int(sim.threads) * n_ranks
    extra = {"areas_simulated": list(plan.areas),
             "replace_non_simulated_areas": sim.replace_non_simulated_areas,
             "external_generator": EXTERNAL_GENERATOR, "segment": float(sim.segment),
             "n_neurons_created": plan.n_neurons, "n_synapses_planned": plan.n_synapses}
    if saved is not None:
        from .engine_brian2 import describe_connectivity

        extra["connectivity_source"] = describe_connectivity(connectivity)
    n_sim = np.where(plan.simulated, plan.n, 0)
    if rank == 0:
        root = _store.create_run(
            store_path, structure=structure, dt=sim.dt, t_sim=sim.t_sim,
            n_segments_planned=len(bounds), params=params.to_json(), label=params.label(),
            seed=sim.seed, n_vp=n_vp, threads=sim.threads, n_ranks=n_ranks, engine="nest",
            overwrite=overwrite, extra_attrs=extra, n_neurons=n_sim)
    _parallel.barrier(nest, n_ranks)
    if rank != 0:
        import zarr

        root = zarr.open_group(str(store_path), mode="r+", zarr_format=3)
    root_attrs_writer = root if rank == 0 else None
    _parallel.register(root, rank, sim.threads)

    pbar = None
    try:
        with _Terminate() as term:
            net = _build(nest, plan, params, seed=sim.seed, threads=sim.threads)
            timings.update(net["timings"])
            if saved is not None:
                if n_ranks > 1:
                    raise SimulationError(invalid("connectivity", str(connectivity),
                                                  "None under MPI (a saved connectivity is single-process)"))
                from .engine_brian2 import nest_connect, nest_set_v0

                t0 = time.perf_counter()
                neurons = net["neurons"]
                pops = {int(k): neurons[int(plan.first[k]):int(plan.first[k + 1])]
                        for k in np.flatnonzero(plan.n)}
                nest_connect(saved, pops)
                nest_set_v0(saved, pops)
                timings["connect"] = time.perf_counter() - t0
            kernel = nest.GetKernelStatus()
            info = {"num_connections": int(kernel["num_connections"]),
                    "network_size": int(kernel["network_size"]),
                    "n_vp": int(kernel["total_num_virtual_procs"]),
                    "min_delay": float(kernel["min_delay"]), "max_delay": float(kernel["max_delay"]),
                    "nest_memory_after_build_kB": _nest_memory_kb(nest)}
            if root_attrs_writer is not None:
                root_attrs_writer.attrs.update(_store._json_safe({"nest": info, "n_vp": info["n_vp"]}))
            writer = _store.SpikeWriter(root, rank=rank)
            recorder = net["recorder"]
            first_id = net["first_id"]
            gid_edges = first_id + plan.first  # neuron ids of population p: [edges[p], edges[p+1])
            if progress and rank == 0:
                from tqdm.auto import tqdm

                pbar = tqdm(total=sim.t_sim, unit="ms", desc="simulating", file=sys.stderr,
                            bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} ms [{elapsed}<{remaining}{postfix}]")
            t_sim_wall = t_write = t_sim_cpu = 0.0
            n_spikes_total = 0
            for s, (a, b) in enumerate(bounds):
                t0, c0 = time.perf_counter(), time.process_time()
                nest.Simulate(b - a)
                t_sim_wall += time.perf_counter() - t0
                t_sim_cpu += time.process_time() - c0  # all threads; robust to foreign load
                t0 = time.perf_counter()
                ev = recorder.get("events")
                recorder.n_events = 0
                gids = np.asarray(ev["senders"], dtype=np.int64)
                steps = np.rint(np.asarray(ev["times"]) / sim.dt).astype(np.int64)
                pop = np.searchsorted(gid_edges, gids, side="right") - 1
                writer.append_segment(steps, gids - gid_edges[pop], pop, a, b)
                t_write += time.perf_counter() - t0
                n_spikes_total += gids.size
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
            timings["write"] = t_write
            timings["total"] = time.perf_counter() - t_wall0
            usage = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kB on Linux
            # complete only when every rank finished (barriers; rank 0 decides)
            _parallel.finish(nest, root, rank=rank, n_ranks=n_ranks, n_spikes=n_spikes_total,
                             timings=timings, peak_rss_kB=int(usage),
                             nest_memory_after_simulate_kB=_nest_memory_kb(nest))
    except BaseException as exc:
        try:
            timings["total"] = time.perf_counter() - t_wall0
            _parallel.fail(root, rank, f"{type(exc).__name__}: {exc}", timings)
        finally:
            if pbar is not None:
                pbar.close()
        if isinstance(exc, Exception) and not isinstance(exc, (SimulationError, StoreError)):
            # NEST's own errors (and anything unexpected) surface as SimulationError.
            raise SimulationError(f"simulation of run store {str(store_path)!r} failed: "
                                  f"{type(exc).__name__}: {exc}") from exc
        raise
    if pbar is not None:
        pbar.close()
    return _store.open_run(store_path)


def connection_counts(structure: xr.Dataset, areas=None) -> dict[str, int]:
    """Neurons and recurrent synapses NEST creates for ``structure``: Σ floor(N)
    and Σ floor(synapses) over the simulated areas (construction.md §6)."""
    areas = AREAS if areas is None else tuple(areas)
    sim = np.isin(_AREA_OF, [AREAS.index(a) for a in areas])
    N = np.floor(to_flat_vector(structure["neurons"]))
    S = np.floor(np.nan_to_num(to_flat_matrix(structure["synapses"])))
    return {"neurons": int(N[sim].sum()), "synapses": int(S[np.ix_(sim, sim)].sum())}
