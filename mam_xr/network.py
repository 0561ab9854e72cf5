"""The network to simulate, independent of any simulator.

:class:`NetworkPlan` turns a structure Dataset and the simulation parameters
into flat NumPy arrays (254 populations in :func:`mam_xr.flat.population_labels`
order): neurons created per population, DC drive, external Poisson drive,
projections (target pop, source pop, number of synapses, weight and delay
distributions) and the inputs that replace areas not simulated.  Engines
(:mod:`mam_xr.engines`) build their network from a plan.

Recurrent synapses are drawn here, in NumPy, the same way for every engine
(docs/simulation.md, "Network construction"): per projection floor(synapses)
connections, sources and targets uniform with replacement (autapses and
multapses allowed), weights N(W, W_sd) redrawn until their sign is that of the
source (excitatory and cortico-cortical >= 0, inhibitory <= 0), delays
N(d, d_sd) redrawn until >= dt and rounded to the nearest step.  They are drawn
in chunks of :data:`CHUNK_SYNAPSES` synapses with compact types (int32
indices, float32 weights, uint16 delays in steps), so that drawing needs a
bounded amount of memory beyond the ~14 bytes per synapse of the result; the
stream of random numbers, and hence the network, depends on the seed and on
the chunk size.

A drawn network can be saved into a run store (group ``connectivity/``) and
given to either engine again (:func:`save_connectivity`, :func:`load_connectivity`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import xarray as xr
import zarr

from . import data as _data
from . import store as _store
from . import structure as _structure
from .errors import ParameterError, SimulationError, StoreError, invalid
from .flat import (AREAS, FLAT_AREA_INDEX, FLAT_POP, N_POPULATIONS, is_excitatory, population_labels,
                   to_flat_matrix, to_flat_vector)
from .rates import is_run_store, rates_from_run, read_rates_json

__all__ = ["NetworkPlan", "Connectivity", "ConnectivityChunk", "CHUNK_SYNAPSES", "CONNECTIVITY_FORMAT",
           "EXTERNAL_DELAY", "created_neurons", "projections", "iter_connectivity", "draw_connectivity",
           "save_connectivity", "load_connectivity", "check_connectivity", "describe_connectivity",
           "replacement_inputs", "connection_counts", "read_rates", "initial_state_rates", "input_moments",
           "stationary_potential", "initial_potentials", "V0_MARGIN"]

#: Format identifier of a saved connectivity group.
CONNECTIVITY_FORMAT = "mam_xr.connectivity/1"
#: Delay of the external Poisson input (ms): NEST's default static-synapse delay, as upstream.
EXTERNAL_DELAY = 1.0
#: Synapses drawn per chunk (the network drawn for a seed depends on it).
CHUNK_SYNAPSES = 10_000_000

_LABELS = population_labels()
_EXC = is_excitatory(FLAT_POP)


def created_neurons(structure: xr.Dataset, areas_simulated) -> np.ndarray:
    """floor(neurons) per flat population, 0 for areas that are not simulated."""
    n = np.floor(np.nan_to_num(to_flat_vector(structure["neurons"]))).astype(np.int64)
    return np.where(np.isin(FLAT_AREA_INDEX, [AREAS.index(a) for a in areas_simulated]), n, 0)


def projections(structure: xr.Dataset, n: np.ndarray) -> dict[str, np.ndarray]:
    """The recurrent projections among populations with ``n > 0`` neurons.

    Target-major order (``np.nonzero`` of the 254 x 254 synapse matrix).  Keys:
    ``target``, ``source`` (flat pops), ``count`` (floor(synapses), upstream's
    int() truncation), ``weight``, ``weight_sd`` (pA), ``delay``, ``delay_sd``
    (ms) and ``positive`` (weights >= 0: excitatory or cortico-cortical sources).
    """
    S = np.nan_to_num(to_flat_matrix(structure["synapses"]))
    M = np.floor(S).astype(np.int64)
    M[(n[:, None] == 0) | (n[None, :] == 0)] = 0
    tgt, src = np.nonzero(M > 0)
    pick = (lambda var: np.nan_to_num(to_flat_matrix(structure[var]))[tgt, src])
    same_area = FLAT_AREA_INDEX[tgt] == FLAT_AREA_INDEX[src]
    return {"target": tgt, "source": src, "count": M[tgt, src],
            "weight": pick("weight_mean"), "weight_sd": pick("weight_sd"),
            "delay": pick("delay_mean"), "delay_sd": pick("delay_sd"),
            "positive": _EXC[src] | ~same_area}


class NetworkPlan:
    """Flat NumPy description of the network to build (no simulator objects).

    Attributes (per flat population unless said otherwise): ``n`` neurons
    created (floor(N), 0 outside ``areas``), ``first`` start of each
    population in the neuron list (255 entries), ``dc`` DC drive (pA),
    ``k_ext`` external indegree, ``w_ext`` external weight (pA), ``rate_ext``
    (spikes/s per external synapse); projections ``proj_target``,
    ``proj_source``, ``proj_n``, ``proj_w``, ``proj_w_sd`` (pA), ``proj_d``,
    ``proj_d_sd`` (ms), ``proj_positive``; ``n_synapses``; ``replacement``
    (see :func:`replacement_inputs`, None if every area is simulated);
    ``dt``, ``t_sim``, ``segment`` (ms).  With ``simulation.initial_state``:
    ``initial_rates`` (spikes/s), ``v0_mean``, ``v0_sd`` (mV, per population:
    the moments of the stationary membrane distribution at those rates,
    :func:`initial_potentials`) and ``v0_max`` (mV, initial potentials are
    redrawn above it); all None without it (V0 ~ N(V0_mean, V0_sd)).
    """

    def __init__(self, params, structure: xr.Dataset):
        sim = params.simulation
        self.dt = float(sim.dt)
        self.t_sim = float(sim.t_sim)
        self.segment = float(sim.segment)
        self.areas = tuple(sim.areas_simulated)
        self.simulated = np.isin(FLAT_AREA_INDEX, [AREAS.index(a) for a in self.areas])
        self.n = created_neurons(structure, self.areas)
        self.first = np.concatenate([[0], np.cumsum(self.n)])
        self.dc = np.nan_to_num(to_flat_vector(structure["dc_drive"]))
        self.k_ext = np.nan_to_num(to_flat_vector(structure["external_indegree"]))
        self.w_ext = np.nan_to_num(to_flat_vector(structure["external_weight"]))
        self.rate_ext = float(params.network.input.rate_ext)
        proj = projections(structure, self.n)
        self.proj_target, self.proj_source, self.proj_n = proj["target"], proj["source"], proj["count"]
        self.proj_w, self.proj_w_sd = proj["weight"], proj["weight_sd"]
        self.proj_d, self.proj_d_sd = proj["delay"], proj["delay_sd"]
        self.proj_positive = proj["positive"]
        self.n_synapses = int(self.proj_n.sum())
        self.replacement = None
        if len(self.areas) < len(AREAS):
            self.replacement = replacement_inputs(params, structure, self)
        self.initial_rates = self.v0_mean = self.v0_sd = self.v0_max = None
        if sim.initial_state is not None:
            self.initial_rates = initial_state_rates(params, structure, self.n)
            nrn = params.network.neuron
            self.v0_mean, self.v0_sd = initial_potentials(params, structure, self.initial_rates)
            self.v0_max = float(nrn.V_th) - V0_MARGIN

    @property
    def n_neurons(self) -> int:
        return int(self.n.sum())

    def without_projections(self) -> "NetworkPlan":
        """This plan with no recurrent projections (for a saved connectivity)."""
        for name in ("proj_target", "proj_source", "proj_n", "proj_w", "proj_w_sd", "proj_d",
                     "proj_d_sd", "proj_positive"):
            setattr(self, name, getattr(self, name)[:0])
        self.n_synapses = 0
        return self

    def connectivity_chunks(self, seed: int, chunk: int = CHUNK_SYNAPSES) -> Iterator["ConnectivityChunk"]:
        """The recurrent synapses in chunks (see :func:`iter_connectivity`)."""
        return iter_connectivity(self._projection_table(), self.n, dt=self.dt, seed=seed, chunk=chunk)

    def draw_connectivity(self, seed: int, V0_mean: float, V0_sd: float,
                          chunk: int = CHUNK_SYNAPSES) -> "Connectivity":
        """All recurrent synapses and initial potentials (see :func:`draw_connectivity`);
        with an initial state the plan's per-population ``v0_mean``, ``v0_sd`` replace
        ``V0_mean``, ``V0_sd``."""
        if self.v0_mean is not None:
            V0_mean, V0_sd = self.v0_mean, self.v0_sd
        return _assemble(self._projection_table(), self.n, dt=self.dt, seed=seed, V0_mean=V0_mean,
                         V0_sd=V0_sd, chunk=chunk, v0_max=self.v0_max)

    def _projection_table(self) -> dict:
        return {"target": self.proj_target, "source": self.proj_source, "count": self.proj_n,
                "weight": self.proj_w, "weight_sd": self.proj_w_sd, "delay": self.proj_d,
                "delay_sd": self.proj_d_sd, "positive": self.proj_positive}


# --------------------------------------------------------------------------------------
# Initial state: potentials near a given rate state
# --------------------------------------------------------------------------------------

#: Initial potentials are redrawn until at least this far below V_th (mV), so that no
#: neuron fires at t = 0.
V0_MARGIN = 0.01


def initial_state_rates(params, structure: xr.Dataset, n: np.ndarray | None = None) -> np.ndarray:
    """The rates (254, spikes/s) of ``simulation.initial_state``.

    ``"fullscale"``: the full-scale rates the structure's DC drive compensates
    (its ``fullscale_rates`` variable, else ``network.fullscale_rates``); a
    path: a rates JSON file or a run store (its population rates, as
    :func:`read_rates`).  Every population with neurons (``n``) needs a rate.
    """
    name = "simulation.initial_state"
    source = params.simulation.initial_state
    if source == "fullscale":
        if "fullscale_rates" in structure:
            nu = to_flat_vector(structure["fullscale_rates"])
        elif params.network.fullscale_rates is None:
            raise ParameterError(invalid(name, source, "a rates JSON file or run store path: this network "
                                         "is not down-scaled (network.fullscale_rates=None)"))
        else:
            nu = to_flat_vector(xr.DataArray(_structure.read_fullscale_rates(params.network.fullscale_rates),
                                             dims=("area", "pop")))
    else:
        if not Path(str(source)).exists():
            raise ParameterError(invalid(name, source, "'fullscale' or an existing rates JSON file or mam_xr "
                                         "run store"))
        nu = read_rates(source, name)
    need = np.ones(N_POPULATIONS, dtype=bool) if n is None else n > 0
    bad = need & ~(np.isfinite(nu) & (nu >= 0))
    if bad.any():
        k = int(np.flatnonzero(bad)[0])
        raise ParameterError(invalid(name, source, f"a finite rate >= 0 spikes/s for every simulated "
                                     f"population (found {float(nu[k])!r} for {_LABELS[k]})"))
    return np.where(need, nu, 0.0)


def input_moments(params, structure: xr.Dataset, rates: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean μ and SD σ (mV, relative to E_L) of every population's input at ``rates``.

    μ_i = 1e-3 τ_m (Σ_j K_ij J_ij ν_j + K_i,ext J_i,ext ν_ext) + (τ_m/C_m) I_DC,i and
    σ_i² = 1e-3 τ_m (Σ_j K_ij J_ij² ν_j + K_i,ext J_i,ext² ν_ext) (docs/structure.md,
    "Down-scaling"), every source population at ``rates`` (also those of areas that are
    not simulated).
    """
    nrn = params.network.neuron
    K = np.nan_to_num(to_flat_matrix(structure["indegree"], structure["external_indegree"]))
    J = np.nan_to_num(to_flat_matrix(structure["J"], structure["external_J"]))
    nu = np.append(np.nan_to_num(rates), float(params.network.input.rate_ext))
    dc = np.nan_to_num(to_flat_vector(structure["dc_drive"]))
    mu = 1e-3 * nrn.tau_m * (K * J) @ nu + nrn.tau_m / nrn.C_m * dc
    sigma = np.sqrt(1e-3 * nrn.tau_m * (K * J ** 2) @ nu)
    return mu, sigma


def stationary_potential(mu, sigma, theta: float, V_r: float, n_grid: int = 4000):
    """Mean and SD of the stationary membrane potential of a LIF neuron (mV, relative to E_L).

    The density of a leaky integrate-and-fire neuron driven by white noise with mean
    ``mu`` and SD ``sigma`` (mV), threshold ``theta`` and reset ``V_r`` (Brunel 2000):
    P(V) ∝ exp(−y²) ∫_{max(y, y_r)}^{y_θ} exp(u²) du with y = (V − μ)/σ,
    y_θ = (θ − μ)/σ, y_r = (V_r − μ)/σ, evaluated on ``n_grid`` points in log
    space (no overflow far below threshold).  Far below threshold it is
    N(μ, σ²/2).  Arrays broadcast; σ = 0 gives (min(μ, θ), 0).
    """
    mu, sigma = np.broadcast_arrays(np.asarray(mu, dtype=float), np.asarray(sigma, dtype=float))
    flat_mu, flat_sigma = mu.ravel(), sigma.ravel()
    mean = np.minimum(flat_mu, theta).astype(float)
    sd = np.zeros_like(mean)
    ok = flat_sigma > 1e-9
    if ok.any():
        m, s = flat_mu[ok], flat_sigma[ok]
        y_t, y_r = (theta - m) / s, (V_r - m) / s
        y_min = np.minimum(y_r, -6.0) - 0.5
        frac = np.linspace(0.0, 1.0, n_grid)
        y = y_min[:, None] + (y_t - y_min)[:, None] * frac[None, :]
        step = (y_t - y_min) / (n_grid - 1)
        # log ∫_{y_k}^{y_θ} exp(u²) du by trapezoids, summed from the threshold down
        seg = np.log(step / 2.0)[:, None] + np.logaddexp(y[:, :-1] ** 2, y[:, 1:] ** 2)
        log_int = np.concatenate([np.logaddexp.accumulate(seg[:, ::-1], axis=1)[:, ::-1],
                                  np.full((m.size, 1), -np.inf)], axis=1)
        # below the reset the inner integral starts at y_r: its value at the first point >= y_r
        k_r = np.clip(np.argmax(y >= y_r[:, None], axis=1), 0, n_grid - 1)
        at_r = log_int[np.arange(m.size), k_r]
        log_p = -y ** 2 + np.where(y < y_r[:, None], at_r[:, None], log_int)
        w = np.exp(log_p - log_p.max(axis=1, keepdims=True))
        w /= w.sum(axis=1, keepdims=True)
        ym = (w * y).sum(axis=1)
        ysd = np.sqrt(np.maximum((w * (y - ym[:, None]) ** 2).sum(axis=1), 0.0))
        mean[ok], sd[ok] = m + s * ym, s * ysd
    return mean.reshape(mu.shape), sd.reshape(mu.shape)


def initial_potentials(params, structure: xr.Dataset, rates: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-population mean and SD (mV, absolute) of the initial potentials near ``rates``.

    The moments of :func:`stationary_potential` at the input of :func:`input_moments`
    (white-noise approximation: the synaptic filtering, τ_s = 0.5 ms ≪ τ_m, is left out).
    The engines draw every neuron's V0 from a normal distribution with these moments,
    redrawn above V_th − :data:`V0_MARGIN`.
    """
    nrn = params.network.neuron
    mu, sigma = input_moments(params, structure, rates)
    mean, sd = stationary_potential(mu, sigma, theta=nrn.V_th - nrn.E_L, V_r=nrn.V_reset - nrn.E_L)
    return mean + nrn.E_L, np.maximum(sd, 1e-3)


# --------------------------------------------------------------------------------------
# Replacement of non-simulated areas
# --------------------------------------------------------------------------------------

def read_rates(source, name: str, *, t_sim: float | None = None, series: bool = False) -> np.ndarray:
    """Flat rates (254,) from a rates JSON file or a mam_xr run store path
    (:mod:`mam_xr.rates`).  With ``series`` the result is (254, int(t_sim)) 1-ms
    rates: a run store's binned rates, or a JSON file's constant rates repeated.
    """
    if is_run_store(source):
        try:
            run = _store.open_run(source)
        except StoreError as exc:
            raise ParameterError(invalid(name, str(source), f"a complete mam_xr run store ({exc})")) from exc
        return rates_from_run(run, name, t_sim=t_sim, series=series)
    nu = read_rates_json(source, name)
    if series:
        nu = np.repeat(nu[:, None], int(t_sim), axis=1)
    return nu


def replacement_inputs(params, structure: xr.Dataset, plan: NetworkPlan) -> dict:
    """Generators replacing the input from non-simulated areas (docs/simulation.md).

    For a simulated target t and a non-simulated source population s with
    indegree k = S_ts / N_t: ``hom_poisson_stat`` / ``het_poisson_stat`` give a
    Poisson generator of rate k·ν_s onto every neuron of t with the fixed weight
    W_ts and delay d_TS = distance / speed; ``het_current_nonstat`` gives a
    step current W_ts·τ_s·k·ν_s(m)·1e-3 pA in 1-ms steps (the mean current of
    the Poisson input it replaces).  Current inputs with the same target and
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
            path = _data.fetch("tests/fullscale_rates.json")
        else:
            path = Path(str(source))
            if not path.exists():
                raise ParameterError(invalid(name, source, "an existing rates JSON file or mam_xr run store "
                                             f"(needed by replace_non_simulated_areas={mode!r})"))
        nu = read_rates(path, name, t_sim=plan.t_sim, series=series)
    N = to_flat_vector(structure["neurons"])
    S = np.nan_to_num(to_flat_matrix(structure["synapses"]))
    W = np.nan_to_num(to_flat_matrix(structure["weight_mean"]))
    D = np.nan_to_num(to_flat_matrix(structure["delay_mean"]))
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
    key = tgt * len(AREAS) + FLAT_AREA_INDEX[src]
    uniq, inv = np.unique(key, return_inverse=True)
    summed = np.zeros((uniq.size, amp.shape[1]))
    np.add.at(summed, inv, amp)
    delay = np.zeros(uniq.size)
    delay[inv] = d
    return {"mode": mode, "kind": "current", "target": uniq // len(AREAS), "amplitudes": summed,
            "delay": delay, "source_area": uniq % len(AREAS)}


# --------------------------------------------------------------------------------------
# Connectivity: draw (in chunks), save, load, check
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
        """(pre, post) neuron indices in the engine's layout (populations in flat order);
        int32 when the network has fewer than 2**31 neurons."""
        first = np.concatenate([[0], np.cumsum(self.n_neurons)])[:-1]
        dtype = np.int32 if self.n_neurons.sum() < 2**31 else np.int64
        counts = np.diff(self.offsets)
        pre = np.repeat(first[self.source_pop].astype(dtype), counts)
        pre += self.sources
        post = np.repeat(first[self.target_pop].astype(dtype), counts)
        post += self.targets
        return pre, post

    def chunks(self, chunk: int = CHUNK_SYNAPSES) -> Iterator["ConnectivityChunk"]:
        """The synapses in chunks of at most ``chunk`` (views, no copies)."""
        counts = np.diff(self.offsets)
        for a in range(0, self.n_synapses, chunk):
            b = min(a + chunk, self.n_synapses)
            proj = _projection_of(self.offsets, counts, a, b)
            yield ConnectivityChunk(self.target_pop[proj], self.source_pop[proj], self.sources[a:b],
                                    self.targets[a:b], self.weights[a:b], self.delays[a:b])


@dataclass
class ConnectivityChunk:
    """Consecutive synapses: per synapse its target and source population, the
    neuron indices within them, the weight (pA) and the delay (steps)."""

    target_pop: np.ndarray
    source_pop: np.ndarray
    sources: np.ndarray
    targets: np.ndarray
    weights: np.ndarray
    delays: np.ndarray

    def __len__(self) -> int:
        return int(self.sources.size)

    def global_indices(self, first: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(pre, post) as ``first[pop] + index`` (int64, e.g. NEST node ids)."""
        first = np.asarray(first, dtype=np.int64)
        return first[self.source_pop] + self.sources, first[self.target_pop] + self.targets


def _projection_of(offsets: np.ndarray, counts: np.ndarray, a: int, b: int) -> np.ndarray:
    """Projection index (int32) of each synapse a..b-1."""
    p0 = int(np.searchsorted(offsets, a, side="right")) - 1
    p1 = int(np.searchsorted(offsets, b, side="left"))
    lo = np.maximum(offsets[p0:p1], a)
    hi = np.minimum(offsets[p0 + 1:p1 + 1], b)
    return np.repeat(np.arange(p0, p1, dtype=np.int32), hi - lo)


def _redraw(rng, mean, sd, bad) -> np.ndarray:
    """Normal(mean, sd) redrawn where ``bad(values, index)`` holds (NEST's ``redraw``)."""
    values = rng.normal(mean, sd)
    todo = np.flatnonzero(bad(values, slice(None)))
    for _ in range(1000):
        if todo.size == 0:
            return values
        values[todo] = rng.normal(mean[todo], sd[todo])
        todo = todo[bad(values[todo], todo)]
    raise SimulationError("weight/delay redraw did not converge: a mean lies far outside its bound")


def _streams(seed: int):
    """Independent generators for the connectivity and the initial potentials."""
    return [np.random.default_rng(s) for s in np.random.SeedSequence([int(seed), 0xB2]).spawn(2)]


def iter_connectivity(table: dict, n: np.ndarray, *, dt: float, seed: int,
                      chunk: int = CHUNK_SYNAPSES, rng=None) -> Iterator[ConnectivityChunk]:
    """Draw the synapses of the projections ``table`` (see :func:`projections`) chunk by chunk.

    Each chunk holds at most ``chunk`` synapses (a projection may span
    chunks); per chunk, sources, targets, weights and delays are single array
    draws, with sign / lower-bound redraws of the few offenders.
    """
    if chunk < 1:
        raise ParameterError(invalid("chunk", chunk, "an integer >= 1"))
    rng = _streams(seed)[0] if rng is None else rng
    counts = np.asarray(table["count"], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    n_src, n_tgt = n[table["source"]], n[table["target"]]
    for a in range(0, int(offsets[-1]), chunk):
        b = min(a + chunk, int(offsets[-1]))
        proj = _projection_of(offsets, counts, a, b)
        sources = rng.integers(0, n_src[proj]).astype(np.int32)
        targets = rng.integers(0, n_tgt[proj]).astype(np.int32)
        positive = table["positive"][proj]
        w = _redraw(rng, table["weight"][proj], table["weight_sd"][proj],
                    lambda v, idx: np.where(positive[idx], v < 0, v > 0)).astype(np.float32)
        d_mean, d_sd = table["delay"][proj], table["delay_sd"][proj]
        fixed = d_sd <= 0     # no spread: NEST takes max(d, dt)
        d_sd = np.where(fixed, 1.0, d_sd)
        d_mean_draw = np.where(fixed, dt, d_mean)
        delay_ms = _redraw(rng, d_mean_draw, d_sd, lambda v, idx: v < dt)
        delay_ms = np.where(fixed, np.maximum(d_mean, dt), delay_ms)
        steps = np.rint(delay_ms / dt)   # NEST rounds to the nearest step
        del delay_ms, d_mean, d_sd, d_mean_draw
        delays = steps.astype(np.uint16 if steps.max(initial=0) < 2**16 else np.int32)
        del steps
        yield ConnectivityChunk(table["target"][proj].astype(np.int16), table["source"][proj].astype(np.int16),
                                sources, targets, w, delays)


def _assemble(table: dict, n: np.ndarray, *, dt: float, seed: int, V0_mean, V0_sd,
              chunk: int, v0_max: float | None = None) -> Connectivity:
    counts = np.asarray(table["count"], dtype=np.int64)
    total = int(counts.sum())
    rng_c, rng_v = _streams(seed)
    sources = np.empty(total, dtype=np.int32)
    targets = np.empty(total, dtype=np.int32)
    weights = np.empty(total, dtype=np.float32)
    delays = np.empty(total, dtype=np.uint16)
    a = 0
    for c in iter_connectivity(table, n, dt=dt, seed=seed, chunk=chunk, rng=rng_c):
        b = a + len(c)
        if c.delays.dtype != delays.dtype:
            delays = delays.astype(c.delays.dtype)
        sources[a:b], targets[a:b], weights[a:b], delays[a:b] = c.sources, c.targets, c.weights, c.delays
        a = b
    if np.ndim(V0_mean) == 0:
        v0 = rng_v.normal(V0_mean, V0_sd, size=int(n.sum())).astype(np.float32)
    else:                       # per population (an initial state): redrawn above v0_max
        mean, sd = np.repeat(V0_mean, n), np.repeat(V0_sd, n)
        v0 = rng_v.normal(mean, sd)
        high = np.flatnonzero(v0 > v0_max) if v0_max is not None else np.zeros(0, dtype=np.int64)
        while high.size:
            v0[high] = rng_v.normal(mean[high], sd[high])
            high = high[v0[high] > v0_max]
        v0 = v0.astype(np.float32)
    return Connectivity(target_pop=np.asarray(table["target"]).astype(np.int16),
                        source_pop=np.asarray(table["source"]).astype(np.int16),
                        offsets=np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
                        sources=sources, targets=targets, weights=weights, delays=delays,
                        dt=float(dt), n_neurons=n, v0=v0)


def draw_connectivity(structure: xr.Dataset, areas_simulated, *, dt: float, seed: int,
                      V0_mean: float, V0_sd: float, chunk: int = CHUNK_SYNAPSES) -> Connectivity:
    """Draw every recurrent synapse among the simulated areas and the initial
    potentials V0 ~ N(V0_mean, V0_sd) (mV) of every neuron.

    Peak memory: the result (~14 bytes per synapse) plus ~100 bytes per synapse of one chunk.
    """
    n = created_neurons(structure, areas_simulated)
    return _assemble(projections(structure, n), n, dt=dt, seed=seed, V0_mean=V0_mean, V0_sd=V0_sd,
                     chunk=chunk)


_ARRAYS = ("target_pop", "source_pop", "offsets", "sources", "targets", "weights", "delays", "v0")


def save_connectivity(conn: Connectivity, group) -> None:
    """Write ``conn`` into ``group['connectivity']`` (a zarr group, e.g. a run store root)."""
    if "connectivity" in group:
        del group["connectivity"]
    g = group.create_group("connectivity")
    g.attrs.update({"format": CONNECTIVITY_FORMAT, "dt": conn.dt,
                    "n_neurons": [int(x) for x in conn.n_neurons], "n_synapses": conn.n_synapses,
                    "weights_units": "pA", "delays_units": "steps of dt", "v0_units": "mV",
                    "population_labels": _LABELS})
    compressors = [zarr.codecs.BloscCodec(cname="zstd", clevel=5, shuffle="bitshuffle")]
    for name in _ARRAYS:
        arr = np.ascontiguousarray(getattr(conn, name))
        chunk = max(1, min(arr.size, 2**20))
        g.create_array(name, shape=arr.shape, dtype=arr.dtype, chunks=(chunk,), compressors=compressors)
        for a in range(0, arr.size, 16 * chunk):   # bounded encoder buffers
            g[name][a:a + 16 * chunk] = arr[a:a + 16 * chunk]


def load_connectivity(source) -> Connectivity:
    """A saved connectivity: a run store path, a zarr group holding ``connectivity/``,
    or a :class:`Connectivity` (returned as is)."""
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
    arrays = {k: g[k][:] for k in _ARRAYS}
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


def describe_connectivity(connectivity) -> str | None:
    """A short text naming where a connectivity came from (for the store attrs)."""
    if connectivity is None:
        return None
    if isinstance(connectivity, Connectivity):
        return "<Connectivity given in memory>"
    if isinstance(connectivity, zarr.Group):
        return f"<zarr group {connectivity.store}/{connectivity.path}>"
    return str(connectivity)


def connection_counts(structure: xr.Dataset, areas=None) -> dict[str, int]:
    """Neurons and recurrent synapses an engine creates for ``structure``: Σ floor(N)
    and Σ floor(synapses) over the simulated areas."""
    areas = AREAS if areas is None else tuple(areas)
    sim = np.isin(FLAT_AREA_INDEX, [AREAS.index(a) for a in areas])
    N = np.floor(to_flat_vector(structure["neurons"]))
    S = np.floor(np.nan_to_num(to_flat_matrix(structure["synapses"])))
    return {"neurons": int(N[sim].sum()), "synapses": int(S[np.ix_(sim, sim)].sum())}
