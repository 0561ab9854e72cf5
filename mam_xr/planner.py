"""Resource planner: what a run will need, computed before anything is drawn.
One concept (the resource model, its coefficient table, the cluster layout and
the report's text belong together), hence one module of about 700 lines.

:func:`plan` builds the structure (cheap: no neuron or synapse is drawn) and
the mean-field rates (:func:`mam_xr.theory.integrate`), and from them
predicts, per engine and thread count, the peak memory, the run store's size
and the wall time of construction and of one simulated second; for a cluster
it finds the nodes, ranks and threads that hold the network in a given memory
per node.  :func:`check_memory` refuses a run predicted not to fit into the
memory available; :func:`mam_xr.simulation.simulate` and ``mam-xr run`` call
it first (override: ``check_memory=False`` / ``--ignore-memory-check``).

The model (docs/scaling.md)
---------------------------
Counts, from the structure and the mean-field rates ν_p (spikes/s):

* neurons N = Σ floor(N_p) and synapses S = Σ floor(S_tp) over the simulated
  populations, as the engines create them;
* spikes expected in t_sim: Σ_p ν_p · floor(N_p) · t_sim;
* synaptic events per simulated second: recurrent Σ_ts floor(S_ts) · ν_s plus
  external Σ_p floor(N_p) · K_ext,p · rate_ext.

Memory of one process (bytes)::

    peak = memory_fixed + memory_per_neuron · N/ranks + memory_per_synapse · S/ranks
           + memory_per_drawn_synapse · min(S, CHUNK_SYNAPSES) + memory_per_spike · spikes held

The connectivity is drawn in chunks of at most ``CHUNK_SYNAPSES`` synapses
(:mod:`mam_xr.network`), whose temporaries are the chunk term.

Brian2 holds every spike of the run until it ends; NEST holds one segment's.
NEST's per-synapse bytes depend on the synapse model it can use: the compact
``static_synapse_hpc`` when a virtual process holds at most 65,534 nodes,
``static_synapse`` otherwise.

Wall time (seconds), with T threads and speed-up s(T) = 1 + (T - 1) · e::

    construction = build_fixed + build_per_neuron · N/ranks + draw_per_synapse · S
                   + build_per_synapse · S / (ranks · s_build(T))
    per simulated second = (step_per_neuron · N · steps + per_event · events) / s(T)
    whole run = construction + t_sim · per simulated second + process_fixed

Store (bytes) = store_fixed + store_per_spike · spikes (+ store_per_synapse · S
for Brian2, which saves the drawn connectivity).

Every coefficient is in :data:`COEFFICIENTS`, one table, each measured on a
2-core / 24 GiB machine by ``benchmarks/bench_scaling.py`` (docs/scaling.md
lists the measurements and the predicted / measured ratios).
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field
from typing import Iterable, Mapping, Sequence

import numpy as np
import xarray as xr

from .errors import MamXrError, ParameterError, invalid
from .network import CHUNK_SYNAPSES
from .flat import (AREAS, FLAT_AREA_INDEX, FLAT_GRID_INDEX, N_POPULATIONS,
                   to_flat_matrix, to_flat_vector)


ENGINES = ("nest", "brian2")
GiB = 2.0 ** 30

#: Rate (spikes/s) assumed where the mean-field rates cannot be computed.
FALLBACK_RATE = 10.0

#: NEST's ``static_synapse_hpc`` addresses at most this many nodes per virtual process.
HPC_NODES_PER_VP = 65534

#: Every coefficient of the model: name -> (NEST, Brian2, unit, meaning).
#: Calibrated by ``benchmarks/bench_scaling.py`` (scales 0.005-0.05, 1 and 2
#: threads, tutorial parameters); docs/scaling.md has the measurements.
COEFFICIENTS: dict[str, tuple[float, float, str, str]] = {
    # --- memory (peak resident set of one process, or of one MPI rank) -----------
    "memory_fixed": (
        350e6, 0.62e9, "B",
        "process baseline: Python, NEST / Brian2 and their libraries, the structure and theory"),
    "memory_per_neuron": (
        17.4e3, 0.0, "B/neuron",
        "neuron state; NEST: two ring buffers of max_delay/dt slots per neuron, the external "
        "and recorder connections"),
    "memory_per_synapse": (
        112.0, 25.0, "B/synapse",
        "peak bytes per recurrent synapse, construction path included (NEST: static_synapse; "
        "Brian2: the binary's int32 indices, float32 weight and delay and its spike queue)"),
    "memory_per_synapse_hpc": (
        37.0, 25.0, "B/synapse",
        "as memory_per_synapse when NEST may use static_synapse_hpc (<= 65,534 nodes per "
        "virtual process)"),
    "memory_per_drawn_synapse": (
        100.0, 4.0, "B/synapse",
        "temporaries of drawing one chunk of synapses (at most mam_xr.network.CHUNK_SYNAPSES)"),
    "memory_per_spike": (
        40.0, 40.0, "B/spike",
        "spikes held in memory: NEST one segment, Brian2 the whole run (recorded and "
        "written arrays)"),
    # --- construction (wall time until the first simulated step) ------------------
    "build_fixed": (
        0.05, 8.2, "s",
        "fixed cost; Brian2: code generation and a cold compilation of the C++ project"),
    "build_per_neuron": (
        32e-6, 0.0, "s/neuron",
        "creating neurons and their external input"),
    "draw_per_synapse": (
        175e-9, 175e-9, "s/synapse",
        "drawing one recurrent synapse with NumPy, one thread (under MPI every rank draws all)"),
    "build_per_synapse": (
        286e-9, 300e-9, "s/synapse",
        "creating one drawn synapse (NEST Connect; Brian2 set-up, saving and loading)"),
    "build_thread_efficiency": (
        0.5, 0.0, "1",
        "e in s_build(T) = 1 + (T - 1) e for the per-synapse construction work"),
    # --- simulation ----------------------------------------------------------------
    "step_per_neuron": (
        28.9e-9, 3.1e-9, "s/(neuron step)",
        "update of one neuron in one step of dt (NEST: ring buffers, Brian2: state, threshold, "
        "Poisson draw)"),
    "per_event": (
        543e-9, 46.6e-9, "s/event",
        "delivery of one synaptic event (recurrent spike x synapse, or external input spike)"),
    "thread_efficiency": (
        1.0, 0.1, "1",
        "e in s(T) = 1 + (T - 1) e for the simulation on T threads (cores not shared)"),
    "process_fixed": (
        2.0, 2.0, "s",
        "imports, structure, mean-field theory and writing in a `mam-xr run` process"),
    # --- run store -------------------------------------------------------------------
    "store_fixed": (
        1.3e6, 1.3e6, "B", "structure, theory, attributes"),
    "store_per_spike": (
        2.2, 2.2, "B/spike", "compressed spike (time step, neuron) pairs"),
    "store_per_synapse": (
        0.0, 5.7, "B/synapse", "saved connectivity (Brian2 saves the drawn network)"),
    # --- clusters (NEST with MPI; not measured here, see docs/scaling.md) ----------
    "mpi_per_step": (
        1.0e-4, math.nan, "s/step",
        "communication and synchronisation per min_delay step on a cluster (assumed, not "
        "measured here)"),
    "memory_usable_fraction": (
        0.9, 0.9, "1", "share of a node's memory a run may plan to use (the rest: system)"),
}


def coefficient(name: str, engine: str) -> float:
    """The value of coefficient ``name`` for ``engine`` ('nest' or 'brian2')."""
    if name not in COEFFICIENTS:
        raise ParameterError(invalid("name", name, f"one of {', '.join(COEFFICIENTS)}"))
    if engine not in ENGINES:
        raise ParameterError(invalid("engine", engine, "'nest' or 'brian2'"))
    return float(COEFFICIENTS[name][ENGINES.index(engine)])


# --------------------------------------------------------------------------------------
# the report
# --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class EngineEstimate:
    """Predictions for one engine.  Memory in bytes, times in seconds (wall).

    ``construction_s``, ``per_simulated_second_s`` and ``run_s`` map a thread
    count to the time; ``peak_memory`` is one process's peak resident memory
    (per MPI rank when ``ranks`` > 1).
    """

    engine: str
    threads: tuple[int, ...]
    peak_memory: float
    store_bytes: float
    construction_s: dict[int, float]
    per_simulated_second_s: dict[int, float]
    run_s: dict[int, float]
    synapse_model: str | None = None


@dataclass(frozen=True)
class ClusterLayout:
    """NEST on a cluster: the fewest nodes whose memory holds the network."""

    memory_per_node: float
    cores_per_node: int
    nodes: int
    ranks_per_node: int
    threads_per_rank: int
    memory_per_rank: float
    synapse_model: str
    construction_s: float
    per_simulated_second_s: float

    @property
    def ranks(self) -> int:
        return self.nodes * self.ranks_per_node

    @property
    def virtual_processes(self) -> int:
        return self.ranks * self.threads_per_rank


@dataclass(frozen=True)
class ResourcePlan:
    """What a run needs (returned by :func:`plan`).

    Counts are those the engines create (floor of the structure's numbers,
    simulated areas only); ``spikes`` is expected in ``t_sim_ms`` from the
    mean-field rates; ``mean_rate`` is their neuron-weighted mean (spikes/s);
    ``memory_available`` is in bytes (None: unknown).
    """

    label: str
    N_scaling: float
    K_scaling: float
    t_sim_ms: float
    areas: int
    threads: int
    ranks: int
    neurons: int
    synapses: int
    mean_rate: float
    theory_converged: bool
    spikes: float
    events_per_second: float
    memory_available: float | None
    engines: dict[str, EngineEstimate]
    cluster: ClusterLayout | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)

    def fits(self, engine: str) -> bool | None:
        """Whether ``engine``'s predicted peak (times the ranks on this
        machine) fits into the memory available (None: unknown)."""
        if self.memory_available is None:
            return None
        return self.engines[engine].peak_memory * self.ranks <= self.memory_available

    def to_dict(self) -> dict:
        """Plain data (JSON-serialisable): the report as nested dicts."""
        out = asdict(self)
        for est in out["engines"].values():
            for key in ("construction_s", "per_simulated_second_s", "run_s"):
                est[key] = {str(k): v for k, v in est[key].items()}
        return out

    def __str__(self) -> str:
        return format_plan(self)


# --------------------------------------------------------------------------------------
# counts from the structure and the mean-field rates
# --------------------------------------------------------------------------------------

def _scalings(params) -> tuple[float, float]:
    net = params.network
    scale = float(getattr(net, "scale", 1.0))
    n = getattr(net, "N_scaling", None)
    k = getattr(net, "K_scaling", None)
    return float(n if n is not None else scale), float(k if k is not None else scale)


def _counts(params, structure, rates: np.ndarray) -> dict:
    """Neurons, synapses, spikes and events the engines will see (flat numpy)."""
    areas = params.simulation.areas_simulated
    area_of = FLAT_AREA_INDEX
    simulated = np.isin(area_of, [AREAS.index(a) for a in areas])
    n = np.where(simulated, np.floor(to_flat_vector(structure["neurons"])), 0.0)
    S = np.floor(np.nan_to_num(to_flat_matrix(structure["synapses"])))
    S = np.where(simulated[:, None] & simulated[None, :], S, 0.0)
    nu = np.nan_to_num(rates)
    k_ext = np.nan_to_num(to_flat_vector(structure["external_indegree"]))
    rate_ext = float(params.network.input.rate_ext)
    t_s = float(params.simulation.t_sim) * 1e-3
    # replacement generators of non-simulated areas: one connection per target neuron
    n_replacement = 0.0
    if len(areas) < len(AREAS):
        N_all = to_flat_vector(structure["neurons"])
        S_all = np.nan_to_num(to_flat_matrix(structure["synapses"]))
        pairs = (simulated[:, None] & ~simulated[None, :]) & (S_all > 0) & (N_all[:, None] > 0)
        if params.simulation.replace_non_simulated_areas == "het_current_nonstat":
            per_target = np.array([np.unique(area_of[row]).size for row in pairs])
        else:
            per_target = pairs.sum(axis=1)
        n_replacement = float((n * per_target).sum())
    return {
        "neurons": int(n.sum()),
        "synapses": int(S.sum()),
        "spikes": float((nu * n).sum() * t_s),
        "mean_rate": float((nu * n).sum() / max(n.sum(), 1.0)),
        "recurrent_events": float((S * nu[None, :]).sum()),
        "external_events": float((n * k_ext).sum() * rate_ext),
        "other_connections": float(2 * n.sum() + n_replacement),
    }


def _speedup(threads: int, efficiency: float) -> float:
    return 1.0 + (max(int(threads), 1) - 1) * efficiency


def _synapse_model(neurons: int, vps: int) -> str:
    # + one generator per population and the recorder on every virtual process
    nodes_per_vp = math.ceil(neurons / max(vps, 1)) + 255
    return "static_synapse_hpc" if nodes_per_vp <= HPC_NODES_PER_VP else "static_synapse"


def _memory(engine: str, c: dict, *, ranks: int = 1, threads: int = 1, segment_fraction: float = 1.0):
    """Peak bytes of one process (rank) and the NEST synapse model used."""
    n, s = c["neurons"] / ranks, c["synapses"] / ranks
    model = None
    per_syn = coefficient("memory_per_synapse", engine)
    if engine == "nest":
        model = _synapse_model(c["neurons"], ranks * threads)
        if model == "static_synapse_hpc":
            per_syn = coefficient("memory_per_synapse_hpc", engine)
        # external input, recorder and replacement connections are NEST connections too
        s += c["other_connections"] / ranks
    held = c["spikes"] / ranks * (segment_fraction if engine == "nest" else 1.0)
    # every rank draws every chunk (NEST keeps the local synapses)
    drawn = min(float(c["synapses"]), float(CHUNK_SYNAPSES))
    peak = (coefficient("memory_fixed", engine) + coefficient("memory_per_neuron", engine) * n
            + per_syn * s + coefficient("memory_per_drawn_synapse", engine) * drawn
            + coefficient("memory_per_spike", engine) * held)
    return peak, model


def _times(engine: str, c: dict, threads: int, dt: float, *, vps: int | None = None) -> tuple[float, float]:
    """(construction s, s per simulated second) on ``threads`` threads (``vps``
    virtual processes in total on a cluster)."""
    vps = threads if vps is None else vps
    ranks = max(vps // threads, 1)
    build = (coefficient("build_fixed", engine)
             + coefficient("build_per_neuron", engine) * c["neurons"] / ranks
             + coefficient("draw_per_synapse", engine) * c["synapses"]
             + coefficient("build_per_synapse", engine) * c["synapses"] / ranks
             / _speedup(threads, coefficient("build_thread_efficiency", engine)))
    steps = 1000.0 / dt
    work = (coefficient("step_per_neuron", engine) * c["neurons"] * steps
            + coefficient("per_event", engine) * (c["recurrent_events"] + c["external_events"]))
    eff = coefficient("thread_efficiency", engine)
    per_s = work / _speedup(vps, eff)
    if vps > threads:  # several ranks: MPI exchange every min_delay (= dt here) step
        per_s += coefficient("mpi_per_step", engine) * steps
    return build, per_s


def cluster_layout(counts: Mapping, *, memory_per_node: float, cores_per_node: int = 128,
                   ranks_per_node: int = 2, dt: float = 0.1, max_nodes: int = 100000,
                   nodes: int | None = None) -> ClusterLayout:
    """The fewest NEST nodes (``ranks_per_node`` ranks of cores/ranks threads
    each) whose usable memory holds one rank's predicted peak per rank, or
    the layout on ``nodes`` nodes (refused if it does not fit).

    ``counts`` needs ``neurons``, ``synapses``, ``spikes``,
    ``recurrent_events``, ``external_events``, ``other_connections`` (as in
    :func:`plan`'s counts); ``memory_per_node`` in bytes.
    """
    if not memory_per_node > 0:
        raise ParameterError(invalid("memory_per_node", memory_per_node, "a memory in bytes > 0"))
    if int(cores_per_node) < 1:
        raise ParameterError(invalid("cores_per_node", cores_per_node, "an integer >= 1"))
    if int(ranks_per_node) < 1 or int(ranks_per_node) > int(cores_per_node):
        raise ParameterError(invalid("ranks_per_node", ranks_per_node,
                                     f"an integer in [1, cores_per_node={cores_per_node}]"))
    rpn = int(ranks_per_node)
    threads = max(int(cores_per_node) // rpn, 1)
    usable = coefficient("memory_usable_fraction", "nest") * memory_per_node
    c = dict(counts)
    # what no number of nodes divides: the process and one drawn chunk per rank
    fixed = (coefficient("memory_fixed", "nest") + coefficient("memory_per_drawn_synapse", "nest")
             * min(float(c["synapses"]), float(CHUNK_SYNAPSES)))
    if rpn * fixed >= usable:
        raise ParameterError(invalid("memory_per_node", memory_per_node,
                                     f"more than {rpn * fixed / usable * memory_per_node / GiB:.1f} GiB "
                                     f"(the fixed memory of {rpn} ranks)"))
    if nodes is not None:
        if isinstance(nodes, bool) or not isinstance(nodes, (int, np.integer)) or nodes < 1:
            raise ParameterError(invalid("nodes", nodes, "an integer >= 1"))
        peak, model = _memory("nest", c, ranks=int(nodes) * rpn, threads=threads)
        if peak * rpn > usable:
            raise ParameterError(invalid("nodes", nodes, f"enough nodes to hold the network: "
                                         f"{peak * rpn / GiB:.1f} GiB per node predicted, "
                                         f"{usable / GiB:.1f} GiB usable"))
        max_nodes = nodes = int(nodes)
    else:
        # a rank's memory falls with the number of nodes: double, then bisect
        def fits(k):
            return _memory("nest", c, ranks=k * rpn, threads=threads)[0] * rpn <= usable

        hi = 1
        while not fits(hi):
            if hi >= max_nodes:
                raise ParameterError(invalid("memory_per_node", memory_per_node,
                                             f"a memory that holds the network on at most {max_nodes} nodes"))
            hi = min(2 * hi, max_nodes)
        lo = hi // 2  # does not fit (or 0)
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (lo, mid) if fits(mid) else (mid, hi)
        nodes = hi
        peak, model = _memory("nest", c, ranks=nodes * rpn, threads=threads)
    vps = nodes * rpn * threads
    build, per_s = _times("nest", c, threads, dt, vps=vps)
    return ClusterLayout(memory_per_node=float(memory_per_node), cores_per_node=int(cores_per_node),
                         nodes=nodes, ranks_per_node=rpn, threads_per_rank=threads,
                         memory_per_rank=peak, synapse_model=model, construction_s=build,
                         per_simulated_second_s=per_s)


# --------------------------------------------------------------------------------------
# public entry points
# --------------------------------------------------------------------------------------

def available_memory() -> float | None:
    """Memory available to a new process on this machine (bytes): psutil's
    ``available``, else ``MemAvailable`` of /proc/meminfo, else None."""
    try:
        import psutil

        return float(psutil.virtual_memory().available)
    except Exception:  # noqa: BLE001 - psutil missing or unsupported platform
        pass
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return float(line.split()[1]) * 1024.0
    except OSError:
        pass
    return None


def _local_ranks(ranks: int) -> int:
    """MPI ranks sharing this machine (launcher variables; 1 if unknown)."""
    for name in ("OMPI_COMM_WORLD_LOCAL_SIZE", "MPI_LOCALNRANKS", "PMI_LOCAL_SIZE"):
        value = os.environ.get(name)
        if value and value.isdigit():
            return min(int(value), ranks)
    return 1


def _as_params(params):
    from .params import Params

    if isinstance(params, dict):
        return Params.from_dict(params)
    if not isinstance(params, Params):
        raise ParameterError(invalid("params", type(params).__name__, "a mam_xr.Params"))
    return params


def _threads_list(threads, params) -> tuple[int, ...]:
    if threads is None:
        cores = os.cpu_count() or 1
        return tuple(sorted({1, int(params.simulation.threads), min(cores, 128)}))
    if isinstance(threads, (int, np.integer)):
        threads = [threads]
    out = []
    for t in threads:
        if isinstance(t, bool) or not isinstance(t, (int, np.integer)) or t < 1:
            raise ParameterError(invalid("threads", t, "integers >= 1"))
        out.append(int(t))
    if not out:
        raise ParameterError(invalid("threads", threads, "at least one thread count"))
    return tuple(sorted(set(out)))


def plan(params, structure=None, *, engines: Sequence[str] | str | None = None,
         threads: int | Iterable[int] | None = None, ranks: int = 1,
         memory_available: float | None = None, memory_per_node: float = 128 * GiB,
         cores_per_node: int = 128, ranks_per_node: int = 2, rates=None, theory=None) -> ResourcePlan:
    """Predict what a run of ``params`` needs, before anything is drawn.

    Parameters
    ----------
    params : mam_xr.Params
        The run (network scale, areas, t_sim, dt, threads, segment, engine).
    structure : xr.Dataset, optional
        The structure of ``params`` (default: built here; no synapse is drawn).
    engines : 'nest' | 'brian2' | sequence, optional
        Engines to predict for (default both).
    threads : int or iterable of int, optional
        Thread counts of the time predictions (default 1, ``params``'s and
        this machine's cores).
    ranks : int
        MPI ranks of the run (NEST); memory is then per rank.
    memory_available : float, optional
        Bytes available for the run (default: this machine's, see
        :func:`available_memory`).
    memory_per_node, cores_per_node, ranks_per_node
        The cluster node of the ``cluster`` layout (default 128 GiB, 128
        cores, 2 ranks per node).
    rates : array-like (area, pop), optional
        Population rates (spikes/s) to use instead of the mean-field rates.
    theory : xr.Dataset, optional
        The mean-field integration of ``params`` on ``structure``
        (:func:`mam_xr.theory.integrate`) if the caller has computed it already
        (``mam-xr run`` does): its ``rate`` and ``converged`` are used instead
        of integrating again.

    Returns a :class:`ResourcePlan`; ``str(plan)`` is a one-screen summary.
    """
    params = _as_params(params)
    if engines is None:
        engines = ENGINES
    elif isinstance(engines, str):
        engines = (engines,)
    for e in engines:
        if e not in ENGINES:
            raise ParameterError(invalid("engine", e, "'nest' or 'brian2'"))
    if isinstance(ranks, bool) or not isinstance(ranks, (int, np.integer)) or ranks < 1:
        raise ParameterError(invalid("ranks", ranks, "an integer >= 1"))
    if memory_available is not None and not memory_available > 0:
        raise ParameterError(invalid("memory_available", memory_available, "bytes > 0 or None"))
    thread_counts = _threads_list(threads, params)
    if structure is None:
        from .structure import build

        structure = build(params)
    notes = []
    if theory is not None and not (isinstance(theory, xr.Dataset)
                                   and {"rate", "converged"} <= set(theory.variables)):
        raise ParameterError(invalid("theory", type(theory).__name__, "a Dataset of mam_xr.theory.integrate "
                                     "(variables rate, converged) or None"))
    if rates is None:
        from . import theory as _theory

        # time-varying replacement currents have no stationary theory: use the Poisson one
        replace = "het_poisson_stat" \
            if params.simulation.replace_non_simulated_areas == "het_current_nonstat" else None
        try:
            th = theory if theory is not None else _theory.integrate(structure, params, warn=False,
                                                                     replace=replace)
        except MamXrError as exc:
            # the planner never pre-empts the engines' own checks: guess the activity instead
            flat_rates = np.full(N_POPULATIONS, FALLBACK_RATE)
            converged = False
            notes.append(f"no mean-field rates ({type(exc).__name__}): spikes assume "
                         f"{FALLBACK_RATE:g} spikes/s")
        else:
            flat_rates = to_flat_vector(th["rate"])
            converged = bool(th["converged"].all())
            if not converged:
                notes.append("the mean-field integration did not converge: spikes are a rough guess")
    else:
        flat_rates = np.asarray(rates, dtype=float).reshape(-1)
        if flat_rates.size == len(AREAS) * 8:  # (32, 8) with NaN for TH 4E/4I
            flat_rates = flat_rates[np.isin(np.arange(len(AREAS) * 8), FLAT_GRID_INDEX)]
        if flat_rates.size != N_POPULATIONS or np.any(flat_rates[np.isfinite(flat_rates)] < 0):
            raise ParameterError(invalid("rates", "array", "254 or (32, 8) rates >= 0 (spikes/s)"))
        converged = True
    c = _counts(params, structure, flat_rates)
    sim = params.simulation
    segment_fraction = min(1.0, float(sim.segment) / float(sim.t_sim))
    t_s = float(sim.t_sim) * 1e-3
    estimates = {}
    for e in engines:
        if e == "brian2" and ranks > 1:
            notes.append("Brian2 runs in one process: its figures ignore ranks")
        r = ranks if e == "nest" else 1
        peak, model = _memory(e, c, ranks=r, threads=int(sim.threads), segment_fraction=segment_fraction)
        build, per_s, total = {}, {}, {}
        for t in thread_counts:
            b, p = _times(e, c, t, float(sim.dt), vps=t * r)
            build[t], per_s[t] = b, p
            total[t] = b + t_s * p + coefficient("process_fixed", e)
        store = (coefficient("store_fixed", e) + coefficient("store_per_spike", e) * c["spikes"]
                 + coefficient("store_per_synapse", e) * c["synapses"])
        estimates[e] = EngineEstimate(engine=e, threads=thread_counts, peak_memory=peak,
                                      store_bytes=store, construction_s=build,
                                      per_simulated_second_s=per_s, run_s=total, synapse_model=model)
    if memory_available is None:
        memory_available = available_memory()
    cores = os.cpu_count() or 1
    if max(thread_counts) > cores:
        notes.append(f"this machine has {cores} cores: more threads than cores run slower than "
                     "predicted")
    cluster = cluster_layout(c, memory_per_node=memory_per_node, cores_per_node=cores_per_node,
                             ranks_per_node=ranks_per_node, dt=float(sim.dt))
    n_scaling, k_scaling = _scalings(params)
    return ResourcePlan(
        label=params.label(), N_scaling=n_scaling, K_scaling=k_scaling, t_sim_ms=float(sim.t_sim),
        areas=len(sim.areas_simulated), threads=int(sim.threads), ranks=int(ranks),
        neurons=c["neurons"], synapses=c["synapses"], mean_rate=c["mean_rate"],
        theory_converged=converged, spikes=c["spikes"],
        events_per_second=c["recurrent_events"] + c["external_events"],
        memory_available=memory_available, engines=estimates, cluster=cluster, notes=tuple(notes))


def _largest_factor(params, plan_: ResourcePlan, engine: str, budget: float) -> float:
    """The largest factor f by which N_scaling and K_scaling may both be
    multiplied (up to full scale) so that the predicted peak fits ``budget``;
    0 if not even the smallest network fits.  Extrapolates the counts of
    ``plan_``: neurons ∝ N_scaling, synapses ∝ N_scaling · K_scaling, spikes ∝
    neurons."""
    n0, k0 = plan_.N_scaling, plan_.K_scaling
    sim = params.simulation

    def peak(f):
        c = {"neurons": plan_.neurons * f, "synapses": plan_.synapses * f * f,
             "spikes": plan_.spikes * f, "other_connections": 2 * plan_.neurons * f}
        return _memory(engine, c, ranks=plan_.ranks, threads=int(sim.threads),
                       segment_fraction=min(1.0, float(sim.segment) / float(sim.t_sim)))[0]

    top = 1.0 / max(n0, k0)
    if peak(top) <= budget:
        return top
    if peak(1e-6) > budget:
        return 0.0
    lo, hi = 0.0, top
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if peak(mid) <= budget else (lo, mid)
    return lo


def _scale_advice(plan_: ResourcePlan, engine: str, factor: float) -> str:
    if factor <= 0:
        return (f"no scale fits with {engine}: its fixed memory alone exceeds the memory "
                "available")
    n, k = plan_.N_scaling * factor, plan_.K_scaling * factor
    if plan_.N_scaling == plan_.K_scaling:
        return f"a smaller scale (at most about {n:.2g} with {engine})"
    return f"smaller scalings (N_scaling {n:.2g} and K_scaling {k:.2g} or less with {engine})"


def check_memory(params, structure=None, *, engine: str | None = None, threads: int | None = None,
                 ranks: int | None = None, memory_available: float | None = None,
                 theory=None) -> ResourcePlan:
    """Refuse a run whose predicted peak memory exceeds the memory available.

    ``engine``, ``threads`` default to ``params.simulation``'s; ``ranks`` to
    the MPI launcher's; ``memory_available`` (bytes) to this machine's
    :func:`available_memory`; ``theory`` as in :func:`plan`.  Raises :class:`ParameterError` naming the
    prediction, the memory available and what to change; returns the
    :class:`ResourcePlan` otherwise (also when the memory is unknown).
    """
    params = _as_params(params)
    engine = params.simulation.engine if engine is None else engine
    if ranks is None:
        from .parallel import launcher_size

        ranks = launcher_size()
    threads = int(params.simulation.threads) if threads is None else int(threads)
    rep = plan(params, structure, engines=ENGINES, threads=threads, ranks=int(ranks),
               memory_available=memory_available, theory=theory)
    budget = rep.memory_available
    if budget is None:
        return rep
    local = _local_ranks(rep.ranks) if memory_available is None else rep.ranks
    need = rep.engines[engine].peak_memory * local
    if need <= budget:
        return rep
    other = "brian2" if engine == "nest" else "nest"
    other_need = rep.engines[other].peak_memory * (local if other == "nest" else 1)
    advice = [_scale_advice(rep, engine, _largest_factor(params, rep, engine, budget / local))]
    if other_need <= budget:
        advice.append(f"engine='{other}' (predicted {other_need / GiB:.1f} GiB)")
    cl = rep.cluster
    advice.append(f"NEST with MPI ranks on several machines (e.g. {cl.nodes} node"
                  f"{'s' if cl.nodes > 1 else ''} of "
                  f"{cl.memory_per_node / GiB:.0f} GiB, {cl.ranks} ranks; `mam-xr plan`)")
    advice.append("or check_memory=False (CLI --ignore-memory-check) to run anyway")
    name, value = ("scale", rep.N_scaling) if rep.N_scaling == rep.K_scaling else \
        ("N_scaling", rep.N_scaling)
    raise ParameterError(invalid(
        name, value,
        f"a run that fits into the {budget / GiB:.1f} GiB of memory available: predicted peak "
        f"{need / GiB:.1f} GiB ({engine}, {rep.neurons:,} neurons, {rep.synapses:,} synapses"
        f"{f', {local} ranks' if local > 1 else ''}); use " + "; ".join(advice)))


# --------------------------------------------------------------------------------------
# text
# --------------------------------------------------------------------------------------

def _bytes(x: float) -> str:
    for unit, size in (("TiB", 2.0 ** 40), ("GiB", GiB), ("MiB", 2.0 ** 20), ("KiB", 1024.0)):
        if abs(x) >= size:
            return f"{x / size:.1f} {unit}"
    return f"{x:.0f} B"


def _seconds(x: float) -> str:
    if not math.isfinite(x):
        return "n/a"
    if x < 60:
        return f"{x:.1f} s" if x < 10 else f"{x:.0f} s"
    if x < 3600:
        return f"{x / 60:.1f} min"
    if x < 86400 * 2:
        return f"{x / 3600:.1f} h"
    return f"{x / 86400:.1f} d"


def format_plan(p: ResourcePlan) -> str:
    """The one-screen text of a :class:`ResourcePlan` (what ``mam-xr plan`` prints)."""
    scale = f"scale {p.N_scaling:g}" if p.N_scaling == p.K_scaling else \
        f"N_scaling {p.N_scaling:g}, K_scaling {p.K_scaling:g}"
    lines = [f"resource plan: {scale}, {p.areas} areas, t_sim {p.t_sim_ms:g} ms"
             f"{f', {p.ranks} MPI ranks' if p.ranks > 1 else ''} (label {p.label[:12]})",
             f"  network   {p.neurons:,} neurons, {p.synapses:,} synapses "
             f"({p.synapses / max(p.neurons, 1):,.0f} per neuron)",
             f"  activity  {p.mean_rate:.2f} spikes/s (mean-field"
             f"{'' if p.theory_converged else ', NOT converged'}) -> {p.spikes:.3g} spikes, "
             f"{p.events_per_second:.3g} synaptic events/s",
             f"  memory available here: "
             f"{_bytes(p.memory_available) if p.memory_available is not None else 'unknown'}",
             "",
             f"  {'engine':<7} {'threads':>7} {'peak memory':>12} {'fits':>5} {'construction':>13} "
             f"{'per sim. s':>11} {'whole run':>10} {'store':>10}"]
    for e, est in p.engines.items():
        fits = p.fits(e)
        mark = "?" if fits is None else ("yes" if fits else "NO")
        for i, t in enumerate(est.threads):
            lines.append(f"  {e if i == 0 else '':<7} {t:>7} "
                         f"{_bytes(est.peak_memory) if i == 0 else '':>12} {mark if i == 0 else '':>5} "
                         f"{_seconds(est.construction_s[t]):>13} "
                         f"{_seconds(est.per_simulated_second_s[t]):>11} {_seconds(est.run_s[t]):>10} "
                         f"{_bytes(est.store_bytes) if i == 0 else '':>10}")
    if "nest" in p.engines and p.engines["nest"].synapse_model:
        lines.append(f"  (NEST synapses: {p.engines['nest'].synapse_model}; memory per "
                     f"{'rank' if p.ranks > 1 else 'process'})")
    cl = p.cluster
    if cl is not None:
        lines += ["",
                  f"  cluster (NEST, nodes of {_bytes(cl.memory_per_node)}, {cl.cores_per_node} cores): "
                  f"{cl.nodes} node{'s' if cl.nodes > 1 else ''} x {cl.ranks_per_node} ranks x "
                  f"{cl.threads_per_rank} threads",
                  f"    {_bytes(cl.memory_per_rank)} per rank ({cl.synapse_model}); construction "
                  f"~{_seconds(cl.construction_s)}, ~{_seconds(cl.per_simulated_second_s)} per "
                  f"simulated s (rough)"]
    for note in p.notes:
        lines.append(f"  note: {note}")
    return "\n".join(lines)
