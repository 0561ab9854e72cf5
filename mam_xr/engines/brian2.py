"""The Brian2 engine: the multi-area network in Brian2's C++ standalone mode.

The network is the one the NEST engine builds (docs/simulation.md):

* neurons: ``iaf_psc_exp`` integrated exactly (Brian2's ``method="exact"``
  generates the same propagator as NEST), refractory for ``t_ref``, initial
  V ~ N(V0_mean, V0_sd) without clipping, I_e = the population's DC drive;
* recurrent synapses: drawn by :mod:`mam_xr.network` (the same network as the
  NEST engine for the same seed), or a saved connectivity;
* external input: per neuron and step a Poisson count of mean
  rate_ext K_ext dt times W_ext (what NEST's ``poisson_generator`` sends each
  target), starting after NEST's default delay of 1 ms;
* inputs from areas not simulated: ``hom_poisson_stat`` /
  ``het_poisson_stat`` as further per-neuron Poisson channels (one per distinct
  weight of a target population, starting after their delay),
  ``het_current_nonstat`` as a step current W k nu(t) tau_s, delayed by D / v.

The standalone binary runs the whole simulation in :meth:`Brian2Engine.build`;
``run_segment`` then hands out the spikes segment by segment, so the run
store has the same layout as a NEST run.

Timing conventions (so that spike trains match NEST's step by step): a
spike found in step n is stored at step n + 1 (NEST stamps the end of the
step), and the refractory period lasts ``t_ref`` after that stamp.
"""

from __future__ import annotations

import contextlib
import fcntl
import gc
import hashlib
import importlib.abc
import importlib.machinery
import json
import logging
import os
import resource
import sys
import time
import warnings
from pathlib import Path

import numpy as np

from ..errors import SimulationError, invalid
from ..flat import N_POPULATIONS
from ..network import (EXTERNAL_DELAY, NetworkPlan, check_connectivity, describe_connectivity,
                       load_connectivity, save_connectivity)
from .base import Engine, Segment, register

__all__ = ["Brian2Engine", "BYTES_PER_SYNAPSE", "SYNAPSE_FILE", "write_synapse_file", "import_brian2", "replacement_channels",
           "poisson_inverse", "reset_device"]

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
    logging.captureWarnings(False)
    handler = getattr(brian2.utils.logger.BrianLogger, "console_handler", None)
    if handler is not None:
        logging.getLogger("py.warnings").removeHandler(handler)
    return brian2


# --------------------------------------------------------------------------------------
# Inputs from areas that are not simulated
# --------------------------------------------------------------------------------------

def replacement_channels(plan: NetworkPlan, n_steps: int, dt: float):
    """The input replacing the areas that are not simulated (``plan.replacement``) in Brian2's form.

    Returns ``(channels, current)``: ``channels`` maps a flat target population
    to its Poisson inputs grouped by weight, [(weight pA, [(rate spikes/s per
    neuron, delay steps), ...]), ...] (a sum of Poisson trains is Poisson:
    one draw per weight, whose rate steps up as each source's delay passes);
    ``current`` is a (254, n_steps) array (pA) for
    ``het_current_nonstat`` (else None): amplitude m of a source (1 ms bins
    starting at dt + m ms, as NEST's step_current_generator) reaches the
    target after its delay.
    """
    rep = plan.replacement
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


#: Peak bytes per recurrent synapse: the binary's arrays (16) and spike queue (~10), or
#: while drawing, the drawn network (14) and a bounded chunk (docs/scaling.md).
BYTES_PER_SYNAPSE = 30


def _check_memory(n_synapses: int) -> None:
    """Refuse, before drawing, a network that cannot fit into this machine's memory."""
    need = float(n_synapses) * BYTES_PER_SYNAPSE
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return
    if need > 0.8 * total:
        raise SimulationError(invalid(
            "engine", "brian2", f"a network that fits into memory: {n_synapses:.3g} synapses need "
            f"about {need / 2**30:.1f} GiB, the machine has {total / 2**30:.1f} GiB; use a smaller "
            "scale or fewer areas, or the NEST engine with MPI (docs/cluster.md)"))


def _build_and_run(b2, project, sim, neuron, rate_ext, conn, n, pop_of_neuron, k_ext, w_ext, dc,
                   per_pop, n_channels, two_currents, current, poisson_seed, release=None):
    """Build the Brian2 network, generate and compile the project, run it.

    ``release()`` is called once the synapses are on disk, before the binary
    starts, so that the caller can drop its reference to ``conn``.
    Returns (neuron index, spike step) of every spike and the timings.
    """
    from brian2 import mV, ms, pA, pF, second

    timings = {}
    t0 = time.perf_counter()
    reset_device(b2)
    b2.set_device("cpp_standalone", build_on_run=False, directory=str(project))
    b2.prefs.devices.cpp_standalone.openmp_threads = 0 if sim.threads == 1 else int(sim.threads)
    # Brian2's default `make -j` starts one compiler per file at once (~100 MB each): no
    # faster than one per core, and the memory peak of a whole run at small scales
    b2.prefs.devices.cpp_standalone.extra_make_args_unix = ["-j", str(len(os.sched_getaffinity(0)))]
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
    ns["poisson_inv"] = poisson_inverse(b2)
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
    synapse_arrays = None
    if conn.n_synapses:
        on_pre = ("I_ex_post += w * int(w > 0*pA)\nI_in_post += w * int(w < 0*pA)"
                  if two_currents else "I_post += w")
        # float32 weights and delays: the drawn values are float32 / whole steps, so nothing
        # is rounded, and every synapse costs 16 bytes in the binary instead of 24
        S = b2.Synapses(G, G, "w : amp (constant)", on_pre=on_pre, name="recurrent",
                        dtype={"w": np.float32})
        S.pre.variables["delay"].dtype = np.float32
        synapse_arrays = {k: b2.device.get_array_name(v, access_data=False) for k, v in (
            ("pre", S.variables["_synaptic_pre"]), ("post", S.variables["_synaptic_post"]),
            ("w", S.variables["w"]), ("delay", S.pre.variables["delay"]), ("N", S.variables["N"]))}
        # The synapses are read by the binary straight from one file (_write_synapses) instead
        # of through Synapses.connect and static arrays, which hold ~3 copies in each process.
        b2.device.insert_code("main", _LOAD_SYNAPSES_CPP.format(file=SYNAPSE_FILE, **synapse_arrays))
        b2.device.insert_code("before_end", _FREE_SYNAPSES_CPP.format(**synapse_arrays))
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
    t_write = time.perf_counter()
    if synapse_arrays is not None:
        write_synapse_file(project / "static_arrays" / SYNAPSE_FILE, conn, sim.dt)
    # the binary holds the synapses from now on: free this process's copy (~14 B/synapse).
    # Brian2 read this frame's locals (namespace lookup): refresh that snapshot, else it
    # keeps the deleted name alive.
    del conn
    sys._getframe().f_locals
    if release is not None:
        release()
    gc.collect()
    timings["write_synapses"] = time.perf_counter() - t_write
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


#: Name of the file (in the project's ``static_arrays/``) the binary reads the synapses from.
SYNAPSE_FILE = "mam_xr_recurrent_synapses"

# Reads n (int64), then n pre (int32), post (int32), w (float32, A) and delay (float32, s)
# straight into the Synapses' arrays.
_LOAD_SYNAPSES_CPP = """
{{  // mam_xr: the recurrent synapses drawn by mam_xr.network
    std::ifstream _mam_f("static_arrays/{file}", std::ios::in | std::ios::binary);
    int64_t _mam_n = -1;
    _mam_f.read(reinterpret_cast<char*>(&_mam_n), sizeof(_mam_n));
    if (!_mam_f || _mam_n < 0 || _mam_n > 2147483647) {{
        std::cerr << "mam_xr: cannot read static_arrays/{file}" << std::endl;
        return 3;
    }}
    {pre}.resize(_mam_n);
    {post}.resize(_mam_n);
    {w}.resize(_mam_n);
    {delay}.resize(_mam_n);
    _mam_f.read(reinterpret_cast<char*>({pre}.data()), _mam_n * sizeof({pre}[0]));
    _mam_f.read(reinterpret_cast<char*>({post}.data()), _mam_n * sizeof({post}[0]));
    _mam_f.read(reinterpret_cast<char*>({w}.data()), _mam_n * sizeof({w}[0]));
    _mam_f.read(reinterpret_cast<char*>({delay}.data()), _mam_n * sizeof({delay}[0]));
    if (!_mam_f) {{
        std::cerr << "mam_xr: static_arrays/{file} is truncated" << std::endl;
        return 3;
    }}
    {N}[0] = (int32_t)_mam_n;
}}
"""

# Brian2 writes every array into results/ at the end; the synapses are not needed there.
_FREE_SYNAPSES_CPP = """
std::vector<int32_t>().swap(brian::{pre});
std::vector<int32_t>().swap(brian::{post});
std::vector<float>().swap(brian::{w});
std::vector<float>().swap(brian::{delay});
"""


def write_synapse_file(path: Path, conn, dt: float, chunk: int = 1 << 22) -> None:
    """Write ``conn`` in the layout of ``_LOAD_SYNAPSES_CPP``: one pass over bounded
    chunks, each part written at its own offset."""
    n = conn.n_synapses
    first = np.concatenate([[0], np.cumsum(conn.n_neurons)])[:-1]
    with open(path, "wb") as fh:
        np.array([n], dtype=np.int64).tofile(fh)
        a = 0
        for c in conn.chunks(chunk):
            pre, post = c.global_indices(first)
            parts = (pre.astype(np.int32), post.astype(np.int32),
                     (c.weights.astype(np.float64) * 1e-12).astype(np.float32),       # pA -> A
                     (c.delays.astype(np.float64) * (dt * 1e-3)).astype(np.float32))  # steps -> s
            for k, values in enumerate(parts):    # 4 bytes each: part k starts at 8 + 4 k n
                fh.seek(8 + 4 * (k * n + a))
                values.tofile(fh)
            a += len(c)


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


def poisson_inverse(b2):
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
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def reset_device(b2) -> None:
    """Forget the previous network: its objects must be gone so that the new
    one gets the same code-object names (else every file is new and the
    cached build recompiles from scratch)."""
    b2.device.reinit()
    b2.device.activate()
    gc.collect()



@register
class Brian2Engine(Engine):
    """Brian2 C++ standalone (OpenMP threads, one process).

    Options: ``save_connectivity`` (default True: write the drawn synapses into
    ``connectivity/`` of the store), ``poisson_seed`` (seed of the external
    and replacement inputs; default ``params.simulation.seed``; connectivity
    and V0 always follow the seed), ``build_dir`` (Brian2 project directory;
    default a per-network-shape directory under ``$MAM_XR_CACHE_DIR/brian2``,
    so that a second run of the same shape only recompiles what changed).
    """

    name = "brian2"

    def __init__(self, params, plan, *, connectivity=None, save_connectivity: bool = True,
                 poisson_seed: int | None = None, build_dir=None):
        super().__init__(params, plan, connectivity=connectivity)
        self.save = bool(save_connectivity)
        self.poisson_seed = params.simulation.seed if poisson_seed is None else int(poisson_seed)
        self.build_dir = build_dir

    def check(self) -> None:
        sim, neuron = self.params.simulation, self.params.network.neuron
        plan = self.plan
        self._b2 = import_brian2()
        t0 = time.perf_counter()
        _check_memory(plan.n_synapses)
        if self.connectivity is None:
            self.conn = plan.draw_connectivity(seed=sim.seed, V0_mean=neuron.V0_mean, V0_sd=neuron.V0_sd)
        else:
            self.conn = load_connectivity(self.connectivity)
            check_connectivity(self.conn, plan.n, sim.dt)
        self.n_synapses = self.conn.n_synapses
        if self.n_synapses > 2**31 - 1:
            raise SimulationError(invalid(
                "engine", "brian2", f"at most 2**31 - 1 synapses per process (Brian2 indexes them "
                f"with int32), not {self.n_synapses:.3g}; use the NEST engine with MPI ranks "
                "(docs/cluster.md)"))
        self.n_steps = int(round(sim.t_sim / sim.dt))
        self.per_pop, self.current = replacement_channels(plan, self.n_steps, sim.dt)
        self.n_channels = max((len(v) for v in self.per_pop.values()), default=0)
        self.two_currents = neuron.tau_syn_ex != neuron.tau_syn_in
        shape = {"brian2": self._b2.__version__, "threads": sim.threads, "N": plan.n.tolist(),
                 "S": self.conn.n_synapses, "channels": self.n_channels, "two": self.two_currents,
                 "current": None if self.current is None else list(self.current.shape), "dt": sim.dt}
        key = hashlib.sha256(json.dumps(shape, sort_keys=True).encode()).hexdigest()[:16]
        self.project = Path(self.build_dir) if self.build_dir is not None else _cache_root() / key
        self.timings["draw"] = time.perf_counter() - t0

    def _release(self) -> None:
        self.conn = None   # the binary has the synapses: free ~14 bytes per synapse here

    def store_attrs(self) -> dict:
        return {"brian2_version": self._b2.__version__, "build_dir": str(self.project),
                "poisson_seed": self.poisson_seed,
                "connectivity_source": describe_connectivity(self.connectivity),
                "n_synapses_planned": self.n_synapses, "n_synapses_created": self.n_synapses}

    def build(self, root) -> dict:
        """Generate, compile and run the standalone project (the whole t_sim)."""
        sim, plan, b2 = self.params.simulation, self.plan, self._b2
        if self.save:
            save_connectivity(self.conn, root)
        pop_of_neuron = np.repeat(np.arange(N_POPULATIONS), plan.n)
        with _locked(self.project):
            try:
                spikes_i, spikes_step, t_info = _build_and_run(
                    b2, self.project, sim, self.params.network.neuron, plan.rate_ext, self.conn, plan.n,
                    pop_of_neuron, plan.k_ext, plan.w_ext, plan.dc, self.per_pop, self.n_channels,
                    self.two_currents, self.current, self.poisson_seed, release=self._release)
            finally:
                reset_device(b2)
                b2.set_device("runtime")
        self.timings.update(t_info)
        order = np.argsort(spikes_step, kind="stable")
        self._steps = spikes_step[order]
        i = spikes_i[order]
        pop = pop_of_neuron[i]
        self._pop = pop
        self._senders = (i - plan.first[pop]).astype(np.int32)
        return {}

    def run_segment(self, t0: float, t1: float) -> Segment:
        dt = self.plan.dt
        a, b = np.searchsorted(self._steps, [int(round(t0 / dt)), int(round(t1 / dt))], side="right")
        return Segment(self._steps[a:b], self._senders[a:b], self._pop[a:b])

