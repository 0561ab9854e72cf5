"""The Brian2 engine: the multi-area network in Brian2's C++ standalone mode.

The network is the one NEST builds (spec/dynamics.md §A, construction.md §6):

* neurons: ``iaf_psc_exp`` integrated exactly (Brian2's ``method="exact"``
  generates the same propagator as NEST), refractory for ``t_ref``, initial
  V ~ N(V0_mean, V0_sd) without clipping, I_e = the population's DC drive;
* recurrent synapses, per projection: floor(synapses) connections with
  sources and targets uniform with replacement (NEST's ``fixed_total_number``
  with autapses and multapses), weights N(W, W_sd) redrawn until sign-correct
  (E sources >= 0, I sources <= 0), delays N(d, d_sd) redrawn until >= dt and
  rounded to the dt grid as NEST does; drawn in NumPy, all projections at once;
* external input: per neuron and step a Poisson count of mean
  rate_ext K_ext dt times W_ext (what NEST's ``poisson_generator`` sends each
  target), starting after NEST's default delay of 1 ms;
* inputs from areas not simulated (§A.11): ``hom_poisson_stat`` /
  ``het_poisson_stat`` as further per-neuron Poisson channels (one per distinct
  weight of a target population, starting after their delay),
  ``het_current_nonstat`` as a step current W k nu(t) tau_s (decisions.md:
  with the tau_s factor), delayed by D / v.

The drawn connectivity can be saved (group ``connectivity/`` of the run store)
and reused by either engine (:func:`load_connectivity`, :func:`nest_connect`),
so that engine differences can be told apart from network realisations.

Timing conventions (so that spike trains match NEST's step by step): a
spike found in step n is stored at step n + 1 (NEST stamps the end of the
step), and the refractory period lasts ``t_ref`` after that stamp.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.abc
import importlib.machinery
import json
import os
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import ParameterError, SimulationError, StoreError, invalid
from .flat import N_POPULATIONS, population_labels, to_flat_matrix, to_flat_vector

#: Format identifier of a saved connectivity group.
CONNECTIVITY_FORMAT = "mam_xr.connectivity/1"

#: NEST's default delay of the static synapse, used by the external Poisson input (ms).
EXTERNAL_DELAY = 1.0

_LABELS = population_labels()
_AREA_OF_POP = np.array([lab.split("-")[0] for lab in _LABELS])
_EXC_POP = np.array([lab.split("-")[1].endswith("E") for lab in _LABELS])


# --------------------------------------------------------------------------------------
# Brian2 import (numpy >= 2.4 compatibility)
# --------------------------------------------------------------------------------------

class _PtpLoader(importlib.machinery.SourceFileLoader):
    """Loads brian2.units.fundamentalunits with ``np.ndarray.ptp`` -> ``np.ptp``.

    Brian2 2.9.0 (the newest release for Python 3.11) reads the method
    ``ndarray.ptp`` that numpy 2.4 removed, at class-definition time; the
    function ``np.ptp`` does the same.  Nothing else in Brian2 needs a change.
    """

    def get_code(self, fullname):
        source = self.get_data(self.path).decode()
        return compile(source.replace("np.ndarray.ptp", "np.ptp"), self.path, "exec",
                       dont_inherit=True)


class _PtpFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != "brian2.units.fundamentalunits":
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is not None and spec.origin:
            spec.loader = _PtpLoader(name, spec.origin)
        return spec


def import_brian2():
    """Import Brian2, patching its one numpy-2.4 incompatibility if needed."""
    if "brian2" in sys.modules:
        return sys.modules["brian2"]
    if not hasattr(np.ndarray, "ptp") and not any(isinstance(f, _PtpFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _PtpFinder())
    # Brian2 2.9 calls pyparsing's camelCase names, deprecated in pyparsing 3.3: one
    # warning per parsed statement otherwise.
    warnings.filterwarnings("ignore", message=r".*(deprecated - use|argument is deprecated, use)",
                            category=DeprecationWarning)
    try:
        import brian2
    except ImportError as exc:
        raise SimulationError(
            "engine='brian2' needs Brian2: pip install 'mam_xr[brian2]' (brian2==2.9.0) "
            f"({exc})") from exc
    # Brian2 routes every Python warning of the process through its logger; give the
    # warnings module back its own display (Brian2's messages keep their logger).
    import logging

    logging.captureWarnings(False)
    handler = getattr(brian2.utils.logger.BrianLogger, "console_handler", None)
    if handler is not None:
        logging.getLogger("py.warnings").removeHandler(handler)
    return brian2


# --------------------------------------------------------------------------------------
# Connectivity: draw, save, load
# --------------------------------------------------------------------------------------

@dataclass
class Connectivity:
    """Recurrent synapses of one network realisation, grouped by projection.

    Projection p (target population ``target_pop[p]``, source population
    ``source_pop[p]``, flat indices 0..253) owns the synapses
    ``offsets[p]:offsets[p+1]``; ``sources`` / ``targets`` are neuron indices
    within their populations, ``weights`` in pA, ``delays`` in steps of ``dt``
    (ms).  ``n_neurons`` (254) are the neurons created per population (0 where
    the area is not simulated) and ``v0`` (mV) their initial potentials in
    flat population order.
    """

    target_pop: np.ndarray
    source_pop: np.ndarray
    offsets: np.ndarray
    sources: np.ndarray
    targets: np.ndarray
    weights: np.ndarray
    delays: np.ndarray
    dt: float
    n_neurons: np.ndarray
    v0: np.ndarray

    @property
    def n_synapses(self) -> int:
        return int(self.offsets[-1])

    def global_indices(self) -> tuple[np.ndarray, np.ndarray]:
        """(pre, post) neuron indices in the engine's layout (populations in flat order)."""
        first = np.concatenate([[0], np.cumsum(self.n_neurons)])[:-1]
        counts = np.diff(self.offsets)
        pre = np.repeat(first[self.source_pop], counts) + self.sources
        post = np.repeat(first[self.target_pop], counts) + self.targets
        return pre, post


def created_neurons(structure, areas_simulated) -> np.ndarray:
    """floor(neurons) per flat population, 0 for areas that are not simulated."""
    n = np.floor(np.nan_to_num(to_flat_vector(structure["neurons"]))).astype(np.int64)
    return np.where(np.isin(_AREA_OF_POP, list(areas_simulated)), n, 0)


def _redraw(rng, mean, sd, bad):
    """Normal(mean, sd) redrawn where ``bad(values, index)`` holds (NEST's ``redraw``)."""
    values = rng.normal(mean, sd)
    todo = np.flatnonzero(bad(values, slice(None)))
    for _ in range(1000):
        if todo.size == 0:
            return values
        values[todo] = rng.normal(mean[todo], sd[todo])
        todo = todo[bad(values[todo], todo)]
    raise SimulationError("weight/delay redraw did not converge: a mean lies far outside its bound")


def draw_connectivity(structure, areas_simulated, *, dt: float, seed: int,
                      V0_mean: float, V0_sd: float) -> Connectivity:
    """Draw every recurrent synapse among the simulated areas (dynamics.md §A.9, §A.10).

    Vectorised over all projections at once: per synapse the projection index
    is repeated, then sources, targets, weights and delays are single array
    draws (with sign / lower-bound redraws of the few offenders).
    """
    n = created_neurons(structure, areas_simulated)
    syn = np.nan_to_num(to_flat_matrix(structure["synapses"]))
    W = np.nan_to_num(to_flat_matrix(structure["weight_mean"]))
    W_sd = np.nan_to_num(to_flat_matrix(structure["weight_sd"]))
    d = np.nan_to_num(to_flat_matrix(structure["delay_mean"]))
    d_sd = np.nan_to_num(to_flat_matrix(structure["delay_sd"]))
    M = np.floor(syn).astype(np.int64)
    M[(n[:, None] == 0) | (n[None, :] == 0)] = 0
    tgt, src = np.nonzero(M)
    counts = M[tgt, src]
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    # Independent streams for connectivity and initial potentials.
    rng_c, rng_v = (np.random.default_rng(s) for s in np.random.SeedSequence([seed, 0xB2]).spawn(2))
    proj = np.repeat(np.arange(tgt.size), counts)
    sources = rng_c.integers(0, n[src][proj]).astype(np.int32)
    targets = rng_c.integers(0, n[tgt][proj]).astype(np.int32)
    exc = np.repeat(_EXC_POP[src], counts)
    w = _redraw(rng_c, W[tgt, src][proj], W_sd[tgt, src][proj],
                lambda v, idx: np.where(exc[idx], v < 0, v > 0))
    delay_ms = _redraw(rng_c, d[tgt, src][proj], d_sd[tgt, src][proj], lambda v, idx: v < dt)
    delays = np.rint(delay_ms / dt).astype(np.int32)   # NEST rounds to the nearest step
    v0 = rng_v.normal(V0_mean, V0_sd, size=int(n.sum()))
    return Connectivity(target_pop=tgt.astype(np.int16), source_pop=src.astype(np.int16),
                        offsets=offsets, sources=sources, targets=targets,
                        weights=w.astype(np.float32), delays=delays, dt=float(dt),
                        n_neurons=n, v0=v0.astype(np.float32))


def save_connectivity(conn: Connectivity, group) -> None:
    """Write ``conn`` into ``group['connectivity']`` (a zarr group, e.g. a run store root)."""
    from .store import _compressors

    if "connectivity" in group:
        del group["connectivity"]
    g = group.create_group("connectivity")
    g.attrs.update({"format": CONNECTIVITY_FORMAT, "dt": conn.dt,
                    "n_neurons": [int(x) for x in conn.n_neurons], "n_synapses": conn.n_synapses,
                    "weights_units": "pA", "delays_units": "steps of dt", "v0_units": "mV",
                    "population_labels": _LABELS})
    for name in ("target_pop", "source_pop", "offsets", "sources", "targets", "weights",
                 "delays", "v0"):
        arr = np.ascontiguousarray(getattr(conn, name))
        g.create_array(name, shape=arr.shape, dtype=arr.dtype,
                       chunks=(max(1, min(arr.size, 2**20)),), compressors=_compressors())
        if arr.size:
            g[name][:] = arr


def load_connectivity(source) -> Connectivity:
    """A saved connectivity: a run store path, a zarr group holding ``connectivity/``,
    or a :class:`Connectivity` (returned as is)."""
    import zarr

    if isinstance(source, Connectivity):
        return source
    if isinstance(source, zarr.Group):
        root = source
    else:
        if not Path(source).exists():
            raise StoreError(invalid("connectivity", str(source), "an existing run store with a "
                                     "saved connectivity (path not found)"))
        root = zarr.open_group(str(source), mode="r", zarr_format=3)
    g = root["connectivity"] if "connectivity" in root else root
    if g.attrs.get("format") != CONNECTIVITY_FORMAT:
        raise StoreError(invalid("connectivity", str(source),
                                 f"a store with a {CONNECTIVITY_FORMAT!r} group 'connectivity'"))
    arrays = {k: g[k][:] for k in ("target_pop", "source_pop", "offsets", "sources", "targets",
                                   "weights", "delays", "v0")}
    return Connectivity(**arrays, dt=float(g.attrs["dt"]),
                        n_neurons=np.asarray(g.attrs["n_neurons"], dtype=np.int64))


def check_connectivity(conn: Connectivity, n: np.ndarray, dt: float) -> None:
    """Raise ParameterError unless ``conn`` has ``n`` neurons per population and step ``dt``."""
    if not np.array_equal(conn.n_neurons, n):
        bad = int(np.flatnonzero(conn.n_neurons != n)[0])
        raise ParameterError(invalid(
            "connectivity", f"<{int(conn.n_neurons.sum())} neurons>",
            f"a connectivity of this network ({_LABELS[bad]}: {int(conn.n_neurons[bad])} saved "
            f"vs {int(n[bad])} neurons)"))
    if abs(conn.dt - dt) > 1e-12:
        raise ParameterError(invalid("connectivity", f"<dt={conn.dt}>", f"a connectivity drawn with dt={dt}"))


def nest_connect(conn: Connectivity, populations: dict) -> int:
    """Create the saved synapses in NEST (for the NEST engine's ``connectivity=`` option).

    ``populations`` maps flat population index (0..253) or label (``"V1-23E"``)
    to the population's NodeCollection (contiguous ids, created in order).
    Uses ``one_to_one`` arrays; weights in pA, delays in ms on NEST's grid.
    Returns the number of synapses created.
    """
    import nest

    first = np.zeros(N_POPULATIONS, dtype=np.int64)
    for key, nodes in populations.items():
        k = _LABELS.index(key) if isinstance(key, str) else int(key)
        if len(nodes) != conn.n_neurons[k]:
            raise ParameterError(invalid("populations", f"<{_LABELS[k]}: {len(nodes)} nodes>",
                                         f"{int(conn.n_neurons[k])} nodes as in the saved connectivity"))
        first[k] = nodes[0].global_id
    counts = np.diff(conn.offsets)
    if conn.n_synapses == 0:
        return 0
    pre = np.repeat(first[conn.source_pop], counts) + conn.sources
    post = np.repeat(first[conn.target_pop], counts) + conn.targets
    nest.Connect(pre, post, {"rule": "one_to_one"},
                 {"synapse_model": "static_synapse", "weight": conn.weights.astype(np.float64),
                  "delay": conn.delays.astype(np.float64) * conn.dt})
    return conn.n_synapses


def nest_set_v0(conn: Connectivity, populations: dict) -> None:
    """Set the saved initial potentials on NEST populations (same mapping as :func:`nest_connect`)."""
    start = np.concatenate([[0], np.cumsum(conn.n_neurons)])
    for key, nodes in populations.items():
        k = _LABELS.index(key) if isinstance(key, str) else int(key)
        nodes.set(V_m=conn.v0[start[k]:start[k + 1]].astype(np.float64))


def nest_run_with_connectivity(params, structure, connectivity, *, seed: int | None = None,
                               threads: int | None = None) -> dict:
    """Simulate a saved connectivity (and its V0) in NEST, for engine comparisons.

    Neurons, external and replacement inputs are built by the NEST engine
    (:mod:`mam_xr.simulation`) without its own recurrent projections; the saved
    synapses are then created with :func:`nest_connect`.  Only NEST's Poisson
    streams follow ``seed`` (default ``params.simulation.seed``).  Returns a
    dict with ``pop`` (flat population index), ``senders`` (index within the
    population) and ``steps`` (spike time in steps of dt) of every spike,
    ``simulate`` (s) and ``num_connections``.  Spikes stay in memory: for
    comparisons at small scale, not for production runs.
    """
    from . import simulation as sm

    conn = load_connectivity(connectivity)
    sim = params.simulation
    plan = sm._Plan(params, structure)
    check_connectivity(conn, plan.n, sim.dt)
    for name in ("proj_target", "proj_source", "proj_n", "proj_w", "proj_w_sd", "proj_d",
                 "proj_d_sd", "proj_positive"):
        setattr(plan, name, getattr(plan, name)[:0])
    nest = sm._import_nest()
    net = sm._build(nest, plan, params, seed=sim.seed if seed is None else seed,
                    threads=sim.threads if threads is None else threads)
    neurons = net["neurons"]
    pops = {int(k): neurons[int(plan.first[k]):int(plan.first[k + 1])] for k in np.flatnonzero(plan.n)}
    nest_connect(conn, pops)
    nest_set_v0(conn, pops)
    t0 = time.perf_counter()
    nest.Simulate(sim.t_sim)
    elapsed = time.perf_counter() - t0
    ev = net["recorder"].get("events")
    idx = np.asarray(ev["senders"], dtype=np.int64) - net["first_id"]
    pop = np.searchsorted(plan.first, idx, side="right") - 1
    return {"pop": pop, "senders": idx - plan.first[pop],
            "steps": np.rint(np.asarray(ev["times"]) / sim.dt).astype(np.int64),
            "simulate": elapsed, "num_connections": int(nest.GetKernelStatus("num_connections"))}


# --------------------------------------------------------------------------------------
# Inputs from areas that are not simulated (dynamics.md §A.11)
# --------------------------------------------------------------------------------------

def replacement_inputs(structure, params, n_steps: int, dt: float):
    """The input replacing the areas that are not simulated, as the NEST engine plans it.

    The rates, indegrees, weights and delays come from the NEST engine's plan
    (:mod:`mam_xr.simulation`), so both engines replace the same input.
    Returns ``(channels, current)``: ``channels`` maps a flat target population
    to its Poisson inputs grouped by weight, [(weight pA, [(rate spikes/s per
    neuron, delay steps), ...]), ...] (a sum of Poisson trains is Poisson:
    one draw per weight, whose rate steps up as each source's delay passes);
    ``current`` is a (254, n_steps) array (pA) for
    ``het_current_nonstat`` (else None): amplitude m of a source (1 ms bins
    starting at dt + m ms, as NEST's step_current_generator) reaches the
    target after its delay.
    """
    from .simulation import _Plan

    rep = _Plan(params, structure).replacement
    if rep is None or rep["target"].size == 0:
        return {}, None
    delay_steps = np.maximum(np.rint(rep["delay"] / dt), 1).astype(np.int64)
    if rep["kind"] == "current":
        amps = rep["amplitudes"]                               # (n_inputs, n_ms) pA
        n_ms = amps.shape[1]
        current = np.zeros((N_POPULATIONS, n_steps))
        k = np.arange(n_steps)
        for d in np.unique(delay_steps):
            sel = delay_steps == d
            summed = np.zeros((N_POPULATIONS, n_ms))
            np.add.at(summed, rep["target"][sel], amps[sel])
            # bin m is on from step 1 + 10 m (t = dt + m ms) at the source, d steps later here
            m = np.floor((k - d - 1) * dt / 1.0 + 1e-9).astype(np.int64)
            on = (m >= 0) & (m < n_ms)
            current[:, on] += summed[:, m[on]]
        return {}, current
    channels: dict[int, dict[float, list]] = {}
    for t, w, r, d in zip(rep["target"].tolist(), rep["weight"].tolist(), rep["rate"].tolist(),
                          delay_steps.tolist()):
        # inputs of (numerically) equal weight share one Poisson draw per step
        chans = channels.setdefault(t, {})
        key = next((w0 for w0 in chans if abs(w0 - w) <= 1e-9 * abs(w0)), w)
        chans.setdefault(key, []).append((r, d))
    return {t: list(ch.items()) for t, ch in channels.items()}, None


# --------------------------------------------------------------------------------------
# Build directory cache
# --------------------------------------------------------------------------------------

def _cache_root() -> Path:
    base = os.environ.get("MAM_XR_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "mam_xr")
    return Path(base) / "brian2"


@contextlib.contextmanager
def _locked(directory: Path):
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory.parent / (directory.name + ".lock"), "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


# --------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------

def _neuron_equations(two_currents: bool, n_channels: int, current: bool) -> str:
    syn = "I_ex + I_in" if two_currents else "I"
    gen = " + I_gen" if current else ""
    eqs = [f"dv/dt = (E_L - v)/tau_m + ({syn} + I_e{gen})/C_m : volt (unless refractory)"]
    if two_currents:
        eqs += ["dI_ex/dt = -I_ex/tau_syn_ex : amp", "dI_in/dt = -I_in/tau_syn_in : amp"]
    else:
        eqs += ["dI/dt = -I/tau_syn_ex : amp"]
    eqs += ["I_e : amp (constant)", "w_ext : amp (constant)", "lam_ext : 1 (constant)",
            "p0_ext : 1 (constant)"]
    for c in range(n_channels):
        eqs += [f"w_rep{c} : amp (constant)"]
    if current:
        eqs += ["I_gen = I_gen_table(t, prow) : amp (constant over dt)"]
    if current or n_channels:
        eqs += ["prow : integer (constant)"]
    return "\n".join(eqs)


def run(params, structure=None, store=None, *, connectivity=None, save_connectivity: bool = True,
        poisson_seed: int | None = None, overwrite: bool = False, build_dir=None,
        label: str | None = None):
    """Simulate with Brian2 (C++ standalone, OpenMP) and write a run store.

    Parameters
    ----------
    params
        :class:`mam_xr.params.Params` (``simulation.engine`` may be either;
        ``simulation.threads`` sets the OpenMP threads, 1 = serial code).
    structure
        The structure Dataset; default ``mam_xr.structure.build(params)``.
    store
        Path of the run store to create (Zarr v3, layout of :mod:`mam_xr.store`).
    connectivity
        A saved connectivity (run store path, zarr group or :class:`Connectivity`)
        to use instead of drawing one; it must match the network's neuron numbers.
    save_connectivity
        Write the connectivity into ``connectivity/`` of the store.
    poisson_seed
        Seed of the external input and replacement streams; default
        ``params.simulation.seed`` (connectivity and V0 always follow the seed).
    build_dir
        Brian2 project directory; default a per-network-shape directory under
        ``$MAM_XR_CACHE_DIR/brian2`` so that a second run of the same shape
        only recompiles what changed.

    Returns the :class:`mam_xr.store.RunStore`.
    """
    from . import store as st

    from .params import Params

    if isinstance(params, dict):
        params = Params.from_dict(params)
    if store is None:
        raise ParameterError(invalid("store", None, "the path of the run store to write"))
    sim, neuron = params.simulation, params.network.neuron
    if sim.segment > sim.t_sim:
        raise ParameterError(invalid("simulation.segment", sim.segment, f"at most t_sim={sim.t_sim} ms"))
    seg = sim.segment / sim.dt
    if abs(seg - round(seg)) > 1e-9 * max(1.0, seg):
        raise ParameterError(invalid("simulation.segment", sim.segment, f"a multiple of dt={sim.dt} ms"))
    st.check_writable(store)
    if Path(store).exists() and not overwrite:
        raise StoreError(invalid("store", str(store), "a path that does not exist yet (or overwrite=True)"))
    b2 = import_brian2()
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    if structure is None:
        from .structure import build

        structure = build(params)
    timings["structure"] = time.perf_counter() - t0

    # --- draw ----------------------------------------------------------------------
    t1 = time.perf_counter()
    n = created_neurons(structure, sim.areas_simulated)
    _check_memory(structure, n)
    if connectivity is None:
        conn = draw_connectivity(structure, sim.areas_simulated, dt=sim.dt, seed=sim.seed,
                                 V0_mean=neuron.V0_mean, V0_sd=neuron.V0_sd)
    else:
        conn = load_connectivity(connectivity)
        check_connectivity(conn, n, sim.dt)
    n_steps = int(round(sim.t_sim / sim.dt))
    per_pop, current = replacement_inputs(structure, params, n_steps, sim.dt)
    N = int(n.sum())
    pop_of_neuron = np.repeat(np.arange(N_POPULATIONS), n)
    first = np.concatenate([[0], np.cumsum(n)])
    k_ext = np.nan_to_num(to_flat_vector(structure["external_indegree"]))
    w_ext = np.nan_to_num(to_flat_vector(structure["external_weight"]))
    dc = np.nan_to_num(to_flat_vector(structure["dc_drive"]))
    # per-neuron replacement channels: channel c of a population = its c-th distinct input
    n_channels = max((len(v) for v in per_pop.values()), default=0)
    two_currents = neuron.tau_syn_ex != neuron.tau_syn_in
    p_seed = sim.seed if poisson_seed is None else int(poisson_seed)
    timings["draw"] = time.perf_counter() - t1

    # --- the project directory -----------------------------------------------------
    shape = {"brian2": b2.__version__, "threads": sim.threads, "N": n.tolist(),
             "S": conn.n_synapses, "channels": n_channels, "two": two_currents,
             "current": None if current is None else list(current.shape), "dt": sim.dt}
    key = hashlib.sha256(json.dumps(shape, sort_keys=True).encode()).hexdigest()[:16]
    project = Path(build_dir) if build_dir is not None else _cache_root() / key

    root = st.create_run(store, structure=structure, dt=sim.dt, t_sim=sim.t_sim,
                         n_segments_planned=int(np.ceil(sim.t_sim / sim.segment - 1e-9)),
                         params=params.to_json(), label=label or params.label(), seed=sim.seed,
                         n_vp=sim.threads, threads=sim.threads, engine="brian2",
                         overwrite=overwrite, n_neurons=n,
                         extra_attrs={"brian2_version": b2.__version__, "build_dir": str(project),
                                      "poisson_seed": p_seed,
                                      "areas_simulated": list(sim.areas_simulated),
                                      "replace_non_simulated_areas": sim.replace_non_simulated_areas,
                                      "segment": float(sim.segment),
                                      "connectivity_source": describe_connectivity(connectivity),
                                      "n_neurons_created": N, "n_synapses_planned": conn.n_synapses,
                                      "n_synapses_created": conn.n_synapses})
    try:
        if save_connectivity:
            save_connectivity_fn(conn, root)
        with _locked(project):
            try:
                spikes_i, spikes_step, t_info = _simulate(
                    b2, project, sim, neuron, params.network.input.rate_ext, conn, n,
                    pop_of_neuron, k_ext, w_ext, dc, per_pop, n_channels, two_currents, current,
                    p_seed)
            finally:
                _reset_device(b2)
                b2.set_device("runtime")
        timings.update(t_info)
        t2 = time.perf_counter()
        writer = st.SpikeWriter(root)
        pop = pop_of_neuron[spikes_i]
        sender = (spikes_i - first[pop]).astype(np.int32)
        seg_steps = int(round(sim.segment / sim.dt))
        for s0 in range(0, n_steps, seg_steps):
            s1 = min(s0 + seg_steps, n_steps)
            sel = (spikes_step > s0) & (spikes_step <= s1) if s0 else (spikes_step <= s1)
            writer.append_segment(spikes_step[sel], sender[sel], pop[sel], s0 * sim.dt, s1 * sim.dt)
        timings["write"] = time.perf_counter() - t2
        timings["total"] = time.perf_counter() - t0
        st.set_status(root, "complete", timings=timings, n_spikes=int(spikes_i.size))
    except BaseException as exc:
        st.set_status(root, "failed", error=f"{type(exc).__name__}: {exc}", timings=timings)
        raise
    return st.open_run(store)


save_connectivity_fn = save_connectivity


#: Peak bytes per recurrent synapse: NumPy draws (~40) + Brian2's arrays and spike queue (~40).
BYTES_PER_SYNAPSE = 80


def _check_memory(structure, n) -> None:
    """Refuse, before drawing, a network that cannot fit into this machine's memory."""
    sim_pops = n > 0
    S = np.floor(np.nan_to_num(to_flat_matrix(structure["synapses"])))[np.ix_(sim_pops, sim_pops)]
    need = float(S.sum()) * BYTES_PER_SYNAPSE
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return
    if need > 0.8 * total:
        raise SimulationError(invalid(
            "engine", "brian2", f"a network that fits into memory: {S.sum():.3g} synapses need "
            f"about {need / 2**30:.1f} GiB, the machine has {total / 2**30:.1f} GiB; use a smaller "
            "scale or fewer areas, or the NEST engine with MPI (docs/cluster.md)"))


def describe_connectivity(connectivity) -> str | None:
    """A short text naming where a connectivity came from (for the store attrs)."""
    if connectivity is None:
        return None
    if isinstance(connectivity, Connectivity):
        return "<Connectivity given in memory>"
    import zarr

    if isinstance(connectivity, zarr.Group):
        return f"<zarr group {connectivity.store}/{connectivity.path}>"
    return str(connectivity)


def _simulate(b2, project, sim, neuron, rate_ext, conn, n, pop_of_neuron, k_ext, w_ext, dc,
              per_pop, n_channels, two_currents, current, poisson_seed):
    """Build the Brian2 network, generate and compile the project, run it.

    Returns (neuron index, spike step) of every spike and the timings.
    """
    from brian2 import mV, ms, pA, pF, second

    timings = {}
    t0 = time.perf_counter()
    _reset_device(b2)
    b2.set_device("cpp_standalone", build_on_run=False, directory=str(project))
    b2.prefs.devices.cpp_standalone.openmp_threads = 0 if sim.threads == 1 else int(sim.threads)
    b2.defaultclock.dt = sim.dt * ms
    b2.seed(int(poisson_seed))
    N = int(n.sum())
    ns = {"E_L": neuron.E_L * mV, "tau_m": neuron.tau_m * ms, "C_m": neuron.C_m * pF,
          "tau_syn_ex": neuron.tau_syn_ex * ms, "tau_syn_in": neuron.tau_syn_in * ms,
          "V_th": neuron.V_th * mV, "V_reset": neuron.V_reset * mV,
          "d_ext": int(round(EXTERNAL_DELAY / sim.dt))}
    if current is not None:
        table = current[np.flatnonzero(n > 0)].T.copy()      # (n_steps, simulated pops)
        ns["I_gen_table"] = b2.TimedArray(table * pA, dt=sim.dt * ms)
    G = b2.NeuronGroup(N, _neuron_equations(two_currents, n_channels, current is not None),
                       threshold="v >= V_th", reset="v = V_reset",
                       # + dt: Brian2 counts from the spike's step, NEST from its end (module doc)
                       refractory=(neuron.t_ref + sim.dt) * ms, method="exact", namespace=ns,
                       name="neurons")
    G.v = conn.v0.astype(np.float64) * mV
    G.I_e = dc[pop_of_neuron] * pA
    G.w_ext = w_ext[pop_of_neuron] * pA
    lam_ext = (rate_ext * k_ext * sim.dt * 1e-3)[pop_of_neuron]
    G.lam_ext = lam_ext
    G.p0_ext = np.exp(-lam_ext)
    ns["poisson_inv"] = _poisson_inverse(b2)
    drive = ["w_ext * poisson_inv(lam_ext, p0_ext) * int(t_in_timesteps >= d_ext)"]
    rows = np.flatnonzero(n > 0)            # simulated populations = table columns
    for c in range(n_channels):
        w_c = np.zeros(N_POPULATIONS)
        inputs = {t: chans[c][1] for t, chans in per_pop.items() if c < len(chans)}
        max_d = max(d for ins in inputs.values() for _, d in ins)
        lam = np.zeros((max_d + 1, N_POPULATIONS))   # Poisson mean per step; last row holds on
        for t, chans in per_pop.items():
            if c < len(chans):
                w_c[t] = chans[c][0]
                for r, d in chans[c][1]:
                    lam[d:, t] += r * sim.dt * 1e-3
        ns[f"lam_rep{c}"] = b2.TimedArray(lam[:, rows], dt=sim.dt * ms)
        setattr(G, f"w_rep{c}", w_c[pop_of_neuron] * pA)
        drive.append(f"w_rep{c} * poisson(lam_rep{c}(t, prow))")
    if current is not None or n_channels:
        G.prow = np.searchsorted(rows, pop_of_neuron)
    target = "I_ex" if two_currents else "I"   # external and replacement inputs are excitatory
    G.run_regularly(f"{target} += " + " + ".join(drive), when="synapses", name="poisson_input")
    objects = [G]
    if conn.n_synapses:
        pre, post = conn.global_indices()
        on_pre = ("I_ex_post += w * int(w > 0*pA)\nI_in_post += w * int(w < 0*pA)"
                  if two_currents else "I_post += w")
        S = b2.Synapses(G, G, "w : amp (constant)", on_pre=on_pre, name="recurrent")
        S.connect(i=pre, j=post)
        S.w = conn.weights.astype(np.float64) * pA
        S.delay = conn.delays.astype(np.float64) * sim.dt * ms
        objects.append(S)
        del S
    mon = b2.SpikeMonitor(G, record=True, name="spikes")
    objects.append(mon)
    net = b2.Network(*objects)
    net.run(sim.t_sim * ms, namespace=ns)
    timings["setup"] = time.perf_counter() - t0
    t1 = time.perf_counter()
    cpu0 = _children_cpu()
    try:
        b2.device.build(directory=str(project), compile=True, run=False, clean=False,
                        with_output=False)
    except Exception as exc:
        raise SimulationError(f"Brian2 code generation/compilation failed in {project}: {exc}") from exc
    timings["compile"] = time.perf_counter() - t1
    timings["compile_cpu"] = _children_cpu() - cpu0
    t2 = time.perf_counter()
    cpu0 = _children_cpu()
    # OpenMP threads that spin at barriers (the default, ACTIVE) stall when the cores are
    # shared: 36-47 s instead of 5 s for the tutorial on 2 busy cores (docs/engines.md).
    # PASSIVE unless the user chose a policy; NEST's runtime in this process is unaffected.
    policy = os.environ.get("OMP_WAIT_POLICY")
    os.environ["OMP_WAIT_POLICY"] = policy or "PASSIVE"
    try:
        b2.device.run(directory=str(project), with_output=False)
    except Exception as exc:
        raise SimulationError(f"the Brian2 standalone binary failed in {project}: {exc}") from exc
    finally:
        if policy is None:
            del os.environ["OMP_WAIT_POLICY"]
    timings["run_process"] = time.perf_counter() - t2
    # CPU seconds of the binary (all threads): robust to other load on the machine
    timings["run_process_cpu"] = _children_cpu() - cpu0
    timings["simulate"] = float(b2.device._last_run_time)
    i = np.asarray(mon.i[:], dtype=np.int64)
    step = (np.rint(np.asarray(mon.t[:] / second) * 1e3 / sim.dt).astype(np.int64) + 1).astype(np.int32)
    del G, mon, objects, net
    return i, step, timings


_POISSON_INV_CPP = """
int32_t _mam_poisson_inv(double lam, double p0, int _vectorisation_idx) {
    // Poisson(lam) by inversion of the CDF with one uniform draw; p0 = exp(-lam)
    // is precomputed per neuron (Brian2's poisson() computes exp(-lam) and draws
    // lam + 1 uniforms per call).  Large means use Brian2's PTRS sampler.
    if (lam >= 10.0)
        return _poisson(lam, _vectorisation_idx);
    const double u = _rand(_vectorisation_idx);
    int32_t k = 0;
    double p = p0, F = p0;
    while (u > F && p > 0.0) {
        k += 1;
        p *= lam / k;
        F += p;
    }
    return k;
}
"""


def _poisson_inverse(b2):
    """``poisson_inv(lam, exp(-lam))``: a Poisson count, cheaper than ``poisson(lam)``
    when the mean is a per-neuron constant (the external drive)."""
    from brian2.core.functions import DEFAULT_FUNCTIONS

    def _python(lam, p0):  # the runtime fallback (not used by the standalone device)
        return np.random.poisson(lam)

    f = b2.Function(_python, arg_units=[1, 1], return_unit=1, arg_types=["float", "float"],
                    return_type="integer", stateless=False, auto_vectorise=True)
    f.implementations.add_implementation(
        "cpp", code=_POISSON_INV_CPP, name="_mam_poisson_inv",
        dependencies={"_rand": DEFAULT_FUNCTIONS["rand"], "_poisson": DEFAULT_FUNCTIONS["poisson"]})
    return f


def _children_cpu() -> float:
    import resource

    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _reset_device(b2) -> None:
    """Forget the previous network: its objects must be gone so that the new
    one gets the same code-object names (else every file is new and the
    cached build recompiles from scratch)."""
    import gc

    b2.device.reinit()
    b2.device.activate()
    gc.collect()

