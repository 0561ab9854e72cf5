"""NumPy kernels of the spike statistics, one pass over a group of populations.

A *group* is a run of consecutive populations (in flat order) whose spikes fit
in memory together; :func:`group_statistics` gets their spikes as three flat
integer arrays, sorts them once by (neuron, time) and runs the requested
*parts*, each a function registered with :func:`part` that returns small
per-population arrays (or per-neuron arrays, whose names start with
``neuron_``).  A statistic of :mod:`mam_xr.analysis` names the parts it reads
(``Statistic.parts``).  Every window is expressed in integer simulation steps,
so that edge conventions (which spike at exactly 500.0 ms counts) are exact.
Definitions: docs/model.md, section "Analysis statistics".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

#: Registered kernel parts: name -> function(GroupSpikes, definition) -> dict of arrays.
PART_FUNCTIONS: dict[str, Callable[["GroupSpikes", dict], dict[str, np.ndarray]]] = {}


def part(name: str):
    """Register a kernel part under ``name`` (a decorator).

    The function gets a :class:`GroupSpikes` and the definition parameters (dict)
    and returns arrays over the group's populations (``neuron_*``: over its neurons).
    """
    def register(fn):
        PART_FUNCTIONS[name] = fn
        return fn
    return register


@dataclass(frozen=True)
class StepWindows:
    """The analysis windows of one run in integer steps (half-open ``[lo, hi)``).

    ``rate_*``: (t_min, t_max) open at both ends (rates, CV ISI, rate
    distribution).  ``lvr_*``: [t_min, t_max).  ``ts_edges``: bin edges of
    the rate time series, t_min + bin/2 + k·bin, the last bin closed.
    ``cc_edges``: ``cc_bin_ms`` bins from t_min to t_max, the last bin closed
    (docs/model.md, "Analysis statistics").
    """

    rate_lo: int
    rate_hi: int
    lvr_lo: int
    lvr_hi: int
    ts_edges: np.ndarray
    cc_edges: np.ndarray
    steps_per_ms: float       # 1/dt
    integral_ms: bool          # 1/dt is an integer: t_ms = steps / steps_per_ms is exact


def _snap(x: float) -> float:
    r = round(x)
    return float(r) if abs(x - r) < 1e-6 else x


def steps_above(t_ms: float, dt: float) -> int:
    """Smallest step s with s·dt > t_ms."""
    return int(np.floor(_snap(t_ms / dt))) + 1


def steps_at_least(t_ms: float, dt: float) -> int:
    """Smallest step s with s·dt ≥ t_ms."""
    return int(np.ceil(_snap(t_ms / dt)))


def bin_edges_steps(t0_ms: float, width_ms: float, n: int, dt: float) -> np.ndarray:
    """Edges t0 + k·width (k = 0..n) in (possibly fractional) steps."""
    return np.array([_snap((t0_ms + k * width_ms) / dt) for k in range(n + 1)])


def make_windows(*, dt: float, t_min: float, t_max: float, bin_ms: float, cc_bin_ms: float) -> StepWindows:
    n_ts = int((t_max - t_min) / bin_ms)
    n_cc = int((t_max - t_min) / cc_bin_ms)
    spm = _snap(1.0 / dt)
    return StepWindows(
        rate_lo=steps_above(t_min, dt), rate_hi=steps_at_least(t_max, dt),
        lvr_lo=steps_at_least(t_min, dt), lvr_hi=steps_at_least(t_max, dt),
        ts_edges=bin_edges_steps(t_min + bin_ms / 2.0, bin_ms, n_ts, dt),
        cc_edges=bin_edges_steps(t_min, cc_bin_ms, n_cc, dt),
        steps_per_ms=spm, integral_ms=float(spm).is_integer())


def to_ms(steps: np.ndarray, w: StepWindows) -> np.ndarray:
    """Spike times in ms of integer steps."""
    # Division by an integral steps-per-ms gives the correctly rounded decimal
    # time, i.e. the same float as upstream's parsed "%.3f" ASCII output.
    return steps / w.steps_per_ms if w.integral_ms else steps * (1.0 / w.steps_per_ms)


def steps_to_ms(steps: np.ndarray, dt: float) -> np.ndarray:
    """Spike times in ms of integer steps of ``dt`` ms (as :func:`to_ms`)."""
    spm = _snap(1.0 / dt)
    return steps / spm if float(spm).is_integer() else steps * (1.0 / spm)


def _wsum(idx, weights, minlength):
    """Weighted bincount that stays float64 for empty input."""
    return np.bincount(idx, weights=weights, minlength=minlength).astype(np.float64, copy=False)


def bin_index(steps: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Bin of each step for ascending edges, last bin closed; -1 outside
    (like ``np.histogram``)."""
    n = len(edges) - 1
    if np.all(edges == np.round(edges)) and n > 0 and np.all(np.diff(edges) == edges[1] - edges[0]):
        e0, w = int(edges[0]), int(edges[1] - edges[0])
        b = steps - np.asarray(e0, dtype=steps.dtype)
        b //= w
    else:
        b = np.searchsorted(edges, steps, side="right") - 1
    b[steps == edges[-1]] = n - 1
    b[(b < 0) | (b >= n)] = -1
    return b


@dataclass
class GroupSpikes:
    """The spikes of one group sorted by (neuron, time), as the kernel parts see them.

    ``g``: neuron index within the group (population blocks in order), ``s``: step
    of each spike; ``nrn_pop``: population (0..P-1) of each of the group's
    ``n_tot`` neurons; ``base``: first neuron of each population (length P + 1);
    ``n_neurons``: neurons per population; ``w``: the run's windows; ``dt`` in ms.
    """

    g: np.ndarray
    s: np.ndarray
    nrn_pop: np.ndarray
    base: np.ndarray
    n_neurons: np.ndarray
    w: StepWindows
    dt: float

    @property
    def P(self) -> int:
        return len(self.n_neurons)

    @property
    def n_tot(self) -> int:
        return int(self.base[-1])


def group_statistics(pop: np.ndarray, sender: np.ndarray, steps: np.ndarray,
                     n_neurons: np.ndarray, w: StepWindows, definition: dict, *,
                     parts=None, dt: float | None = None) -> dict[str, np.ndarray]:
    """The requested per-population quantities of one group of populations.

    Parameters
    ----------
    pop, sender, steps : int arrays (n_spikes,)
        Population index within the group, neuron index within its population
        and spike time in steps of dt, in any order.
    n_neurons : int array (n_pops,)
        Neurons simulated per population (floor(N)).
    w : StepWindows
        The windows of this run.
    definition : dict
        Definition parameters (``R_ms``, ``cc_max_neurons``, ...; see
        :data:`mam_xr.analysis.DEFAULTS`) the parts read.
    parts : iterable of str, optional
        Which registered parts (:data:`PART_FUNCTIONS`) to compute (default all).
    dt : float, optional
        Simulation step in ms (default: from ``w``).

    Returns
    -------
    dict of arrays over the group's populations (``neuron_*`` over its neurons,
    concatenated in population order); ``n_spikes`` always.

    Notes
    -----
    Working memory is about 40 bytes per spike plus the inputs: every part
    runs in its own function, so its temporaries are freed before the next.
    """
    names = list(PART_FUNCTIONS) if parts is None else [p for p in PART_FUNCTIONS if p in set(parts)]
    unknown = set(parts or ()) - set(PART_FUNCTIONS)
    if unknown:
        raise KeyError(f"unknown kernel parts {sorted(unknown)}; registered: {sorted(PART_FUNCTIONS)}")
    P = len(n_neurons)
    n_neurons = np.asarray(n_neurons, dtype=np.int64)
    base = np.concatenate([[0], np.cumsum(n_neurons)])
    out: dict[str, np.ndarray] = {"n_spikes": np.bincount(pop, minlength=P)}
    g, s = _sort_by_neuron(pop, sender, steps, base)
    gs = GroupSpikes(g=g, s=s, nrn_pop=np.repeat(np.arange(P, dtype=np.int32), n_neurons), base=base,
                     n_neurons=n_neurons, w=w, dt=float(dt) if dt is not None else 1.0 / w.steps_per_ms)
    for name in names:
        out.update(PART_FUNCTIONS[name](gs, definition))
    return out


def _sort_by_neuron(pop, sender, steps, base):
    """Neuron index g (within the group) and step s of every spike, sorted by (g, s).

    Per-neuron statistics must never depend on the order the spikes were
    recorded in (docs/upstream-differences.md: LvR and CV ISI).  A single-rank store keeps each
    population's spikes in time order, so a stable O(n) radix sort by neuron
    (uint16 digits) already gives (g, s) order; that is checked, and any other
    input (several ranks, foreign order) falls back to one sort of the key
    g·span + s.
    """
    n_tot = int(base[-1])
    g = base[:-1][pop]
    g += sender
    if len(g) and n_tot < 2**32:
        if n_tot <= 2**16:
            o = np.argsort(g.astype(np.uint16), kind="stable")
        else:
            o = np.argsort((g & 0xFFFF).astype(np.uint16), kind="stable")
            o = o[np.argsort((g[o] >> 16).astype(np.uint16), kind="stable")]
        gs, ss = g[o], steps[o]
        del o
        if not np.any((gs[1:] == gs[:-1]) & (ss[1:] < ss[:-1])):
            return gs.astype(np.int32) if n_tot < 2**31 else gs, ss.astype(np.int32, copy=False)
        del gs, ss
    span = int(steps.max()) + 1 if len(steps) else 1
    key = g
    key *= span
    key += steps
    key.sort()
    small = n_tot * span < 2**31
    g = (key // span).astype(np.int32 if small else np.int64)
    key -= g.astype(np.int64) * span
    return g, key.astype(np.int32)


@part("counts")
def counts(gs: GroupSpikes, d: dict) -> dict[str, np.ndarray]:
    """Spikes per neuron and per population in the rate window (t_min, t_max)."""
    g, s, nrn_pop, w, P, n_tot = gs.g, gs.s, gs.nrn_pop, gs.w, gs.P, gs.n_tot
    m = (s >= w.rate_lo) & (s < w.rate_hi)
    nc = np.bincount(g[m], minlength=n_tot)
    return {"neuron_counts": nc, "n_rate_window": np.bincount(nrn_pop, weights=nc, minlength=P).astype(np.int64)}


@part("time_series")
def time_series(gs: GroupSpikes, d: dict) -> dict[str, np.ndarray]:
    """Spike counts per population in the bins of the rate time series."""
    g, s, nrn_pop, w, P = gs.g, gs.s, gs.nrn_pop, gs.w, gs.P
    n_ts = len(w.ts_edges) - 1
    b = bin_index(s, w.ts_edges)
    ok = b >= 0
    return {"ts_counts": np.bincount(nrn_pop[g[ok]].astype(np.int64) * n_ts + b[ok],
                                     minlength=P * n_ts).reshape(P, n_ts)}


@part("cv_isi")
def cv_isi(gs: GroupSpikes, d: dict) -> dict[str, np.ndarray]:
    """CV of ISIs in (t_min, t_max): mean over neurons with >= 1 ISI, 0 if none."""
    g, s, nrn_pop, w, P, n_tot = gs.g, gs.s, gs.nrn_pop, gs.w, gs.P, gs.n_tot
    m = (s >= w.rate_lo) & (s < w.rate_hi)
    gi, ti = g[m], to_ms(s[m], w)
    del m
    same = gi[1:] == gi[:-1]
    isi = np.diff(ti)[same]
    owner = gi[1:][same]
    del gi, ti, same
    n_isi = np.bincount(owner, minlength=n_tot)
    has = n_isi > 0
    mean = _wsum(owner, isi, minlength=n_tot)
    mean[has] /= n_isi[has]
    isi -= mean[owner]
    isi *= isi
    var = _wsum(owner, isi, minlength=n_tot)
    var[has] /= n_isi[has]
    cv = np.zeros(n_tot)
    cv[has] = np.sqrt(var[has]) / mean[has]
    n_cv = np.bincount(nrn_pop[has], minlength=P)
    cv_sum = _wsum(nrn_pop[has], cv[has], minlength=P)
    with np.errstate(invalid="ignore", divide="ignore"):
        return {"cv_isi": np.where(n_cv > 0, cv_sum / np.maximum(n_cv, 1), 0.0), "n_cv_neurons": n_cv}


@part("lvr")
def lvr(gs: GroupSpikes, d: dict) -> dict[str, np.ndarray]:
    """LvR in [t_min, t_max) (Shinomoto et al. 2009); neurons with < 2 ISIs give 0."""
    g, s, nrn_pop, w, P, n_tot, R_ms = gs.g, gs.s, gs.nrn_pop, gs.w, gs.P, gs.n_tot, d["R_ms"]
    m = (s >= w.lvr_lo) & (s < w.lvr_hi)
    gl, tl = g[m], to_ms(s[m], w)
    del m
    same = gl[1:] == gl[:-1]
    iv = np.diff(tl)
    del tl
    pair = same[:-1] & same[1:]          # ISIs k, k+1 of one neuron
    i1, i2 = iv[:-1][pair], iv[1:][pair]
    del iv
    tot = i1 + i2
    i1 *= i2
    i1 *= 4.0
    with np.errstate(invalid="ignore", divide="ignore"):   # two spikes in one step: NaN, as upstream
        i1 /= tot * tot
        term = 1.0 - i1                       # 1 - 4 I_k I_k+1 / (I_k + I_k+1)^2
        del i1, i2
        term *= 1.0 + 4.0 * R_ms / tot
    del tot
    owner = gl[2:][pair]
    n_iv = np.bincount(gl[1:][same], minlength=n_tot)
    lsum = _wsum(owner, term, minlength=n_tot)
    lv = np.where(n_iv >= 2, 3.0 * lsum / np.maximum(n_iv - 1, 1), 0.0)
    return {"lvr_sum": _wsum(nrn_pop, lv, minlength=P),
            "n_lvr_neurons": np.bincount(nrn_pop[n_iv >= 2], minlength=P)}


@part("corrcoef")
def corrcoef(gs: GroupSpikes, d: dict) -> dict[str, np.ndarray]:
    """Mean off-diagonal Pearson coefficient of binned spike counts, per population.

    Neuron choice as upstream's M2E script: from the first neuron that ever
    spiked, the ids up to +``id_span``; drop neurons whose binned train is
    constant; keep the first ``max_neurons``.  Computed without the n × n
    matrix: with z_i the standardised binned train of neuron i (unit norm),
    Σ_{i≠j} z_i·z_j = |Σ_i z_i|² − n, so the mean is (|Σz|² − n)/(n(n−1)).
    Needs only per-(neuron, bin) counts, O(spikes + bins) per population.
    """
    g, s, nrn_pop, base, n_neurons, edges = gs.g, gs.s, gs.nrn_pop, gs.base, gs.n_neurons, gs.w.cc_edges
    max_neurons, id_span = d["cc_max_neurons"], d["cc_id_span"]
    P = len(n_neurons)
    n_tot = int(base[-1])
    B = len(edges) - 1
    nrn_local = np.arange(n_tot) - base[:-1][nrn_pop]
    # first spiking neuron of each population (over the whole run)
    first = np.full(P, np.iinfo(np.int64).max)
    spiked = np.bincount(g, minlength=n_tot) > 0
    np.minimum.at(first, nrn_pop[spiked], nrn_local[spiked])
    b = bin_index(s, edges)
    ok = b >= 0
    key = g[ok].astype(np.int64)
    key *= B
    key += b[ok]                      # sorted: (neuron, time) order
    del b, ok
    n = len(key)
    new_pair = np.empty(n, dtype=bool)
    new_pair[:1] = True
    np.not_equal(key[1:], key[:-1], out=new_pair[1:])
    starts = np.flatnonzero(new_pair)
    del new_pair
    uniq = key[starts]
    del key
    c = np.diff(starts, append=n).astype(np.int32)      # count per (neuron, bin)
    del starts
    kn = (uniq // B).astype(np.int32)
    uniq -= kn * np.int64(B)
    kb = uniq.astype(np.int32)
    del uniq
    S1 = _wsum(kn, c, minlength=n_tot)
    S2 = _wsum(kn, c.astype(np.float64) ** 2, minlength=n_tot)
    # integer test for a non-constant train: B·Σc² − (Σc)² > 0
    S1i, S2i = np.rint(S1).astype(np.int64), np.rint(S2).astype(np.int64)
    active = B * S2i - S1i * S1i > 0
    cand = active & (nrn_local >= first[nrn_pop]) & (nrn_local <= first[nrn_pop] + id_span)
    rank = np.cumsum(cand) - 1
    rank -= np.concatenate([[0], np.cumsum(np.bincount(nrn_pop[cand], minlength=P))])[nrn_pop]
    use = cand & (rank < max_neurons)
    n_use = np.bincount(nrn_pop[use], minlength=P)
    ss = S2 - S1 * S1 / B                  # centred sum of squares per neuron
    inv = np.zeros(n_tot)
    inv[use] = 1.0 / np.sqrt(ss[use])
    sel = use[kn]
    kn, kb, c = kn[sel], kb[sel], c[sel]
    idx = nrn_pop[kn].astype(np.int64)
    idx *= B
    idx += kb
    del kb
    zsum = _wsum(idx, c * inv[kn], minlength=P * B).reshape(P, B)
    zsum -= (_wsum(nrn_pop, S1 / B * inv, minlength=P))[:, None]
    sq = np.einsum("pb,pb->p", zsum, zsum)
    with np.errstate(invalid="ignore", divide="ignore"):
        cc = np.where(n_use >= 2, (sq - n_use) / (n_use * (n_use - 1.0)), np.nan)
    return {"corrcoef": cc, "n_corr_neurons": n_use}


@part("fano")
def fano(gs: GroupSpikes, d: dict) -> dict[str, np.ndarray]:
    """Fano factor of spike counts: per sampled neuron, var/mean (ddof 0) of its counts in
    ``ff_bin_ms`` bins from t_min (the last bin closed), averaged over the sampled neurons
    that spiked in the window; the sample is the first ``ff_max_neurons`` of each population
    (docs/model.md eq. A13)."""
    g, s, nrn_pop, base, P, n_tot = gs.g, gs.s, gs.nrn_pop, gs.base, gs.P, gs.n_tot
    B = int((d["t_max_ms"] - d["t_min_ms"]) / d["ff_bin_ms"])
    edges = bin_edges_steps(d["t_min_ms"], d["ff_bin_ms"], B, gs.dt)
    sampled = (np.arange(n_tot) - base[:-1][nrn_pop]) < d["ff_max_neurons"]
    b = bin_index(s, edges)
    ok = (b >= 0) & sampled[g]
    key = g[ok].astype(np.int64)
    key *= B
    key += b[ok]                      # sorted: spikes are in (neuron, time) order
    del b, ok
    starts = np.flatnonzero(np.concatenate([[True], key[1:] != key[:-1]])) if len(key) else np.zeros(0, int)
    c = np.diff(starts, append=len(key)).astype(np.float64)     # count per (neuron, bin) with spikes
    owner = key[starts] // B
    S1 = _wsum(owner, c, minlength=n_tot)
    S2 = _wsum(owner, c * c, minlength=n_tot)
    active = sampled & (S1 > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = S1 / B
        ff = np.where(active, (S2 / B - mean * mean) / mean, 0.0)
    n_ff = np.bincount(nrn_pop[active], minlength=P)
    ff_sum = _wsum(nrn_pop[active], ff[active], minlength=P)
    with np.errstate(invalid="ignore", divide="ignore"):
        return {"fano_factor": np.where(n_ff > 0, ff_sum / np.maximum(n_ff, 1), np.nan),
                "n_fano_neurons": n_ff}
