"""The NEST 3 engine (single process or MPI ranks x threads).

NEST constructs (chosen for speed and memory without changing the model,
see docs/simulation.md):

* all neurons in one ``Create`` call (V_m ~ N(V0_mean, V0_sd) drawn by NEST),
  I_e set per population (a scalar each: arrays do not work under MPI);
* external drive: one ``poisson_generator_ps`` per population (rate
  rate_ext·K_ext), connected to each neuron with one array-based ``Connect``.
  Every target receives an independent Poisson train; an ``iaf_psc_exp``
  neuron sees the spikes on its 0.1 ms grid, so the per-step input count is
  Poisson(rate·dt) exactly as with ``poisson_generator``, but NEST only draws
  at spike times;
* recurrent synapses: drawn by :mod:`mam_xr.network` in chunks of
  :data:`mam_xr.network.CHUNK_SYNAPSES` and created with one array-based
  ``one_to_one`` ``Connect`` per chunk (bounded memory at any scale; the
  same network as the Brian2 engine for the same seed);
* synapse model :func:`synapse_model`: ``static_synapse_hpc`` (compact target
  indices: less memory, faster) while every virtual process holds at most
  65,534 nodes, else ``static_synapse`` (same dynamics); the connections to the
  spike recorder (created first, so that it has index 0 on every thread) use
  the weightless ``static_synapse_hom_w_hpc`` at every size (NEST reserves
  ~1024 synapses' worth of memory per neuron for them: 8 kB instead of 23-31);
* replacement inputs of non-simulated areas: all generators in one ``Create``
  and one array-based ``Connect``;
* spikes to memory, pulled and cleared after each segment.
"""

from __future__ import annotations

import math
import os
import time

import numpy as np

from .. import parallel as _parallel
from ..errors import ParameterError, SimulationError, invalid
from ..flat import N_POPULATIONS, population_labels
from ..network import (CHUNK_SYNAPSES, EXTERNAL_DELAY, Connectivity, NetworkPlan, check_connectivity,
                       describe_connectivity, load_connectivity)
from .base import Engine, Segment, register

__all__ = ["NestEngine", "EXTERNAL_GENERATOR", "HPC_MAX_NODES_PER_VP", "synapse_model", "import_nest",
           "nest_connect", "nest_set_v0", "nest_run_with_connectivity"]

#: External input generator model.  ``poisson_generator`` gives the same input
#: statistics (per-step Poisson counts) at a higher cost.
EXTERNAL_GENERATOR = "poisson_generator_ps"
#: Most nodes one virtual process may hold for ``static_synapse_hpc`` (NEST's limit).
HPC_MAX_NODES_PER_VP = 65_534
#: Synapse model of the neurons' connections to the spike recorder.
RECORDER_SYNAPSE_MODEL = "static_synapse_hom_w_hpc"
#: Force a synapse model (None: :func:`synapse_model` chooses); for benchmarks.
SYNAPSE_MODEL: str | None = None

_LABELS = population_labels()


def synapse_model(n_neurons: int, n_devices: int, n_vp: int) -> str:
    """``static_synapse_hpc`` if every virtual process holds at most
    :data:`HPC_MAX_NODES_PER_VP` nodes, else ``static_synapse``.

    Neurons are spread evenly over the ``n_vp`` virtual processes; devices
    (generators, recorder) exist on every one of them.
    """
    if n_vp < 1:
        raise SimulationError(invalid("n_vp", n_vp, "an integer >= 1"))
    per_vp = math.ceil(n_neurons / n_vp) + n_devices
    return "static_synapse_hpc" if per_vp <= HPC_MAX_NODES_PER_VP else "static_synapse"


def import_nest():
    """Import NEST quietly."""
    os.environ.setdefault("PYNEST_QUIET", "1")
    try:
        import nest
    except ImportError as exc:  # pragma: no cover - nest-simulator is a dependency
        raise SimulationError("NEST is not importable: install nest-simulator>=3.8") from exc
    nest.verbosity = nest.VerbosityLevel.ERROR
    return nest


def _memory_kb(nest) -> int | None:
    try:
        return int(nest.GetKernelStatus("memory_size"))
    except Exception:  # noqa: BLE001 - not on every platform
        return None


def _connect_chunks(nest, chunks, first_id: np.ndarray, dt: float, model: str) -> int:
    """Create the synapses of ``chunks`` (:class:`mam_xr.network.ConnectivityChunk`);
    ``first_id[p]`` is the node id of population p's first neuron."""
    n = 0
    for c in chunks:
        if not len(c):
            continue
        pre, post = c.global_indices(first_id)
        nest.Connect(pre, post, {"rule": "one_to_one"},
                     {"synapse_model": model, "weight": c.weights.astype(np.float64),
                      "delay": c.delays.astype(np.float64) * dt})
        n += len(c)
        del pre, post
    return n


def build_network(nest, plan: NetworkPlan, params, *, seed: int, threads: int,
                  connectivity: Connectivity | None = None) -> dict:
    """Create and connect the network in the current NEST kernel.

    Recurrent synapses: ``connectivity`` if given (with its V0), else drawn
    from ``plan`` with ``seed``.  Returns NEST handles, the synapse model and
    phase timings (s).
    """
    t0 = time.perf_counter()
    neuron = params.network.neuron
    nest.ResetKernel()
    nest.set(resolution=plan.dt, local_num_threads=int(threads), rng_seed=int(seed),
             print_time=False, overwrite_files=True)
    timings = {"prepare": time.perf_counter() - t0}

    t0 = time.perf_counter()
    n_vp = int(nest.GetKernelStatus("total_num_virtual_procs"))
    pops = np.flatnonzero(plan.n > 0)
    rep = plan.replacement
    n_rep = 0 if rep is None else int(rep["target"].size)
    model = SYNAPSE_MODEL or synapse_model(plan.n_neurons, pops.size + n_rep + 1, n_vp)
    model_params = {"C_m": neuron.C_m, "tau_m": neuron.tau_m, "tau_syn_ex": neuron.tau_syn_ex,
                    "tau_syn_in": neuron.tau_syn_in, "E_L": neuron.E_L, "V_th": neuron.V_th,
                    "V_reset": neuron.V_reset, "t_ref": neuron.t_ref}
    nest.SetDefaults("iaf_psc_exp", model_params)
    n_total = plan.n_neurons
    pop_of_neuron = np.repeat(np.arange(N_POPULATIONS), plan.n)
    create_params = {"V_m": nest.random.normal(mean=neuron.V0_mean, std=neuron.V0_sd)}
    # The recorder first: its index on every thread is then 0, so the neurons' connections
    # to it may use the compact hpc model at any network size (below).
    recorder = nest.Create("spike_recorder", params={"record_to": "memory"})
    neurons = nest.Create("iaf_psc_exp", n_total, params=create_params)
    # I_e: one scalar per population; PyNEST expands arrays of node parameters
    # only when every node is local, i.e. not under MPI (docs/cluster.md).
    for p in np.flatnonzero((plan.dc != 0) & (plan.n > 0)).tolist():
        neurons[int(plan.first[p]):int(plan.first[p + 1])].set(I_e=float(plan.dc[p]))
    if plan.v0_mean is not None:   # an initial state: V0 per population (docs/simulation.md)
        for p in np.flatnonzero(plan.n > 0).tolist():
            v0 = nest.random.normal(mean=float(plan.v0_mean[p]), std=float(plan.v0_sd[p]))
            neurons[int(plan.first[p]):int(plan.first[p + 1])].set(
                V_m=nest.math.redraw(v0, min=-np.inf, max=plan.v0_max))
    first_id = int(neurons[0].global_id) if n_total else 0
    ids = np.arange(first_id, first_id + n_total, dtype=np.int64)  # one Create: contiguous ids
    # NEST keeps one connection block per neuron for connections to a device (~1024 x the
    # synapse's size): the weightless hpc model is 8 kB per neuron instead of 23 (static_synapse_hom_w)
    # or 31 (static_synapse); its 65,534-node limit applies to the target, the recorder.
    nest.Connect(neurons, recorder, syn_spec={"synapse_model": RECORDER_SYNAPSE_MODEL})
    # External drive: one generator per simulated population.
    gens = nest.Create(EXTERNAL_GENERATOR, pops.size,
                       params={"rate": (plan.rate_ext * plan.k_ext[pops]).tolist()})
    gen_ids = np.asarray(gens.tolist(), dtype=np.int64)
    gen_of_pop = np.zeros(N_POPULATIONS, dtype=np.int64)
    gen_of_pop[pops] = gen_ids
    nest.Connect(gen_of_pop[pop_of_neuron], ids, "one_to_one",
                 syn_spec={"synapse_model": model, "weight": plan.w_ext[pop_of_neuron],
                           "delay": np.full(n_total, EXTERNAL_DELAY)})
    del pop_of_neuron
    timings["create"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    first = first_id + plan.first[:-1]
    chunks = connectivity.chunks() if connectivity is not None else plan.connectivity_chunks(seed=seed)
    _connect_chunks(nest, chunks, first, plan.dt, model)
    if connectivity is not None:
        populations = {int(k): neurons[int(plan.first[k]):int(plan.first[k + 1])] for k in pops}
        nest_set_v0(connectivity, populations)
    timings["connect"] = time.perf_counter() - t0

    t0 = time.perf_counter()
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
                     syn_spec={"synapse_model": model, "weight": np.repeat(weights, n_t),
                               "delay": np.maximum(np.repeat(rep["delay"], n_t), plan.dt)})
    timings["replacement"] = time.perf_counter() - t0
    return {"neurons": neurons, "first_id": first_id, "recorder": recorder, "synapse_model": model,
            "timings": timings}


@register
class NestEngine(Engine):
    """NEST 3: neurons, drive and synapses in one kernel; MPI via ``mpirun``/``srun``."""

    name = "nest"

    def __init__(self, params, plan, *, connectivity=None, **options):
        super().__init__(params, plan, connectivity=connectivity, **options)
        self._nest = None
        self._saved = None
        self._rank, self._n_ranks = 0, 1

    def check(self) -> None:
        if self.connectivity is not None:
            # A saved network (engine comparisons, docs/engines.md): no projections of our own.
            self._saved = load_connectivity(self.connectivity)
            check_connectivity(self._saved, self.plan.n, self.plan.dt)
            self.plan.without_projections()
            self.plan.n_synapses = self._saved.n_synapses
        self._nest = import_nest()
        self._rank, self._n_ranks = _parallel.ranks(self._nest)  # refuses mpirun with a NEST without MPI
        if self._saved is not None and self._n_ranks > 1:
            raise SimulationError(invalid("connectivity", str(self.connectivity),
                                          "None under MPI (a saved connectivity is single-process)"))

    def ranks(self) -> tuple[int, int]:
        return self._rank, self._n_ranks

    @property
    def n_vp(self) -> int:
        return int(self.params.simulation.threads) * self._n_ranks

    def barrier(self) -> None:
        if self._n_ranks > 1:
            self._nest.SyncProcesses()

    def local_connections(self) -> int | None:
        try:
            return int(self._nest.GetKernelStatus("num_connections"))
        except Exception:  # noqa: BLE001 - bookkeeping only
            return None

    def store_attrs(self) -> dict:
        attrs = {"external_generator": EXTERNAL_GENERATOR}
        if self._saved is not None:
            attrs["connectivity_source"] = describe_connectivity(self.connectivity)
        return attrs

    def build(self, root) -> dict:
        sim = self.params.simulation
        nest = self._nest
        net = build_network(nest, self.plan, self.params, seed=sim.seed, threads=sim.threads,
                            connectivity=self._saved)
        self.timings.update(net["timings"])
        self._recorder = net["recorder"]
        self._gid_edges = net["first_id"] + self.plan.first  # ids of pop p: [edges[p], edges[p+1])
        kernel = nest.GetKernelStatus()
        info = {"num_connections": int(kernel["num_connections"]),
                "network_size": int(kernel["network_size"]),
                "n_vp": int(kernel["total_num_virtual_procs"]),
                "min_delay": float(kernel["min_delay"]), "max_delay": float(kernel["max_delay"]),
                "synapse_model": net["synapse_model"],
                "nest_memory_after_build_kB": _memory_kb(nest)}
        return {"nest": info, "n_vp": info["n_vp"]}

    def run_segment(self, t0: float, t1: float) -> Segment:
        self._nest.Simulate(t1 - t0)
        ev = self._recorder.get("events")
        self._recorder.n_events = 0
        gids = np.asarray(ev["senders"], dtype=np.int64)
        steps = np.rint(np.asarray(ev["times"]) / self.plan.dt).astype(np.int64)
        pop = np.searchsorted(self._gid_edges, gids, side="right") - 1
        return Segment(steps, gids - self._gid_edges[pop], pop)

    def finish_attrs(self) -> dict:
        return {"nest_memory_after_simulate_kB": _memory_kb(self._nest)}


# --------------------------------------------------------------------------------------
# A saved connectivity in NEST (engine comparisons)
# --------------------------------------------------------------------------------------

def _first_ids(conn: Connectivity, populations: dict) -> np.ndarray:
    first = np.zeros(N_POPULATIONS, dtype=np.int64)
    for key, nodes in populations.items():
        k = _LABELS.index(key) if isinstance(key, str) else int(key)
        if len(nodes) != conn.n_neurons[k]:
            raise ParameterError(invalid("populations", f"<{_LABELS[k]}: {len(nodes)} nodes>",
                                         f"{int(conn.n_neurons[k])} nodes as in the saved connectivity"))
        first[k] = nodes[0].global_id
    return first


def nest_connect(conn: Connectivity, populations: dict, chunk: int = CHUNK_SYNAPSES) -> int:
    """Create the saved synapses in NEST.

    ``populations`` maps flat population index (0..253) or label (``"V1-23E"``)
    to the population's NodeCollection (contiguous ids, created in order).
    ``one_to_one`` arrays in chunks; weights in pA, delays in ms on NEST's grid.
    Returns the number of synapses created.
    """
    nest = import_nest()
    first = _first_ids(conn, populations)
    if conn.n_synapses == 0:
        return 0
    return _connect_chunks(nest, conn.chunks(chunk), first, conn.dt, "static_synapse")


def nest_set_v0(conn: Connectivity, populations: dict) -> None:
    """Set the saved initial potentials on NEST populations (same mapping as :func:`nest_connect`)."""
    start = np.concatenate([[0], np.cumsum(conn.n_neurons)])
    for key, nodes in populations.items():
        k = _LABELS.index(key) if isinstance(key, str) else int(key)
        nodes.set(V_m=conn.v0[start[k]:start[k + 1]].astype(np.float64))


def nest_run_with_connectivity(params, structure, connectivity, *, seed: int | None = None,
                               threads: int | None = None) -> dict:
    """Simulate a saved connectivity (and its V0) in NEST, for engine comparisons.

    Neurons, external and replacement inputs are built as by the NEST engine;
    the saved synapses replace its own.  Only NEST's Poisson streams follow
    ``seed`` (default ``params.simulation.seed``).  Returns a dict with
    ``pop`` (flat population index), ``senders`` (index within the population)
    and ``steps`` (spike time in steps of dt) of every spike, ``simulate`` (s)
    and ``num_connections``.  Spikes stay in memory: for comparisons at small
    scale, not for production runs.
    """
    conn = load_connectivity(connectivity)
    sim = params.simulation
    plan = NetworkPlan(params, structure)
    check_connectivity(conn, plan.n, sim.dt)
    plan.without_projections()
    nest = import_nest()
    net = build_network(nest, plan, params, seed=sim.seed if seed is None else seed,
                        threads=sim.threads if threads is None else threads, connectivity=conn)
    t0 = time.perf_counter()
    nest.Simulate(sim.t_sim)
    elapsed = time.perf_counter() - t0
    ev = net["recorder"].get("events")
    idx = np.asarray(ev["senders"], dtype=np.int64) - net["first_id"]
    pop = np.searchsorted(plan.first, idx, side="right") - 1
    return {"pop": pop, "senders": idx - plan.first[pop],
            "steps": np.rint(np.asarray(ev["times"]) / sim.dt).astype(np.int64),
            "simulate": elapsed, "num_connections": int(nest.GetKernelStatus("num_connections"))}
