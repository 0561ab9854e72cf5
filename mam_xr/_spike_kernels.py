"""NumPy kernels of the spike statistics, one pass over a group of populations.

Private to :mod:`mam_xr.analysis`.  A *group* is a run of consecutive
populations (in flat order) whose spikes fit in memory together; the kernel
gets their spikes as three flat integer arrays and returns small per-population
arrays.  Every window is expressed in integer simulation steps, so that edge
conventions (which spike at exactly 500.0 ms counts) are exact.  Definitions:
spec/dynamics.md §C and docs/analysis.md.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


#: The parts of the kernel; ``parts=`` selects a subset.
PARTS = frozenset({"counts", "time_series", "cv_isi", "lvr", "corrcoef"})


@dataclass(frozen=True)
class StepWindows:
    """The analysis windows of one run in integer steps (half-open ``[lo, hi)``).

    ``rate_*``: (t_min, t_max) open at both ends (rates, CV ISI, rate
    distribution; dynamics.md §C.3, §C.8).  ``lvr_*``: [t_min, t_max)
    (§C.9).  ``ts_edges``: bin edges of the rate time series,
    t_min + bin/2 + k·bin, the last bin closed (§C.5).  ``cc_edges``: 1 ms
    bins from t_min to t_max, the last bin closed (§C.7).
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


def _to_ms(steps: np.ndarray, w: StepWindows) -> np.ndarray:
    # Division by an integral steps-per-ms gives the correctly rounded decimal
    # time, i.e. the same float as upstream's parsed "%.3f" ASCII output.
    return steps / w.steps_per_ms if w.integral_ms else steps * (1.0 / w.steps_per_ms)


def _wsum(idx, weights, minlength):
    """Weighted bincount that stays float64 for empty input."""
    return np.bincount(idx, weights=weights, minlength=minlength).astype(np.float64, copy=False)


def _bin_index(steps: np.ndarray, edges: np.ndarray) -> np.ndarray:
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


def group_statistics(pop: np.ndarray, sender: np.ndarray, steps: np.ndarray,
                     n_neurons: np.ndarray, w: StepWindows, *, R_ms: float,
                     cc_max_neurons: int, cc_id_span: int,
                     parts: frozenset[str] = PARTS) -> dict[str, np.ndarray]:
    """All per-population statistics of one group of populations.

    Parameters
    ----------
    pop, sender, steps : int arrays (n_spikes,)
        Population index within the group, neuron index within its population
        and spike time in steps of dt, in any order.
    n_neurons : int array (n_pops,)
        Neurons simulated per population (floor(N)).
    w : StepWindows
        The windows of this run.
    parts : frozenset
        Which of :data:`PARTS` to compute.

    Returns
    -------
    dict of arrays over the group's populations (``neuron_counts`` over its
    neurons, concatenated in population order).

    Notes
    -----
    Working memory is about 40 bytes per spike plus the inputs: every part
    runs in its own function, so its temporaries are freed before the next.
    """
    P = len(n_neurons)
    n_neurons = np.asarray(n_neurons, dtype=np.int64)
    base = np.concatenate([[0], np.cumsum(n_neurons)])
    n_tot = int(base[-1])
    out: dict[str, np.ndarray] = {"n_spikes": np.bincount(pop, minlength=P)}
    g, s = _sort_by_neuron(pop, sender, steps, base)
    nrn_pop = np.repeat(np.arange(P, dtype=np.int32), n_neurons)
    if "counts" in parts:
        out.update(_counts(g, s, nrn_pop, w, P, n_tot))
    if "time_series" in parts:
        out["ts_counts"] = _time_series(g, s, nrn_pop, w, P)
    if "cv_isi" in parts:
        out.update(_cv_isi(g, s, nrn_pop, w, P, n_tot))
    if "lvr" in parts:
        out.update(_lvr(g, s, nrn_pop, w, P, n_tot, R_ms))
    if "corrcoef" in parts:
        out.update(_corrcoef(g, s, nrn_pop, base, n_neurons, w.cc_edges,
                             max_neurons=cc_max_neurons, id_span=cc_id_span))
    return out


def _sort_by_neuron(pop, sender, steps, base):
    """Neuron index g (within the group) and step s of every spike, sorted by (g, s).

    Per-neuron statistics must never depend on the order the spikes were
    recorded in (decisions.md: LvR/CV ISI fix).  A single-rank store keeps each
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


def _counts(g, s, nrn_pop, w, P, n_tot):
    """Spikes per neuron and per population in the rate window (t_min, t_max)."""
    m = (s >= w.rate_lo) & (s < w.rate_hi)
    nc = np.bincount(g[m], minlength=n_tot)
    return {"neuron_counts": nc, "n_rate_window": np.bincount(nrn_pop, weights=nc, minlength=P).astype(np.int64)}


def _time_series(g, s, nrn_pop, w, P):
    """Spike counts per population in the bins of the rate time series."""
    n_ts = len(w.ts_edges) - 1
    b = _bin_index(s, w.ts_edges)
    ok = b >= 0
    return np.bincount(nrn_pop[g[ok]].astype(np.int64) * n_ts + b[ok], minlength=P * n_ts).reshape(P, n_ts)


def _cv_isi(g, s, nrn_pop, w, P, n_tot):
    """CV of ISIs in (t_min, t_max): mean over neurons with >= 1 ISI, 0 if none."""
    m = (s >= w.rate_lo) & (s < w.rate_hi)
    gi, ti = g[m], _to_ms(s[m], w)
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


def _lvr(g, s, nrn_pop, w, P, n_tot, R_ms):
    """LvR in [t_min, t_max) (Shinomoto et al. 2009); neurons with < 2 ISIs give 0."""
    m = (s >= w.lvr_lo) & (s < w.lvr_hi)
    gl, tl = g[m], _to_ms(s[m], w)
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


def _corrcoef(g, s, nrn_pop, base, n_neurons, edges, *, max_neurons, id_span):
    """Mean off-diagonal Pearson coefficient of binned spike counts, per population.

    Neuron choice as upstream's M2E script: from the first neuron that ever
    spiked, the ids up to +``id_span``; drop neurons whose binned train is
    constant; keep the first ``max_neurons``.  Computed without the n × n
    matrix: with z_i the standardised binned train of neuron i (unit norm),
    Σ_{i≠j} z_i·z_j = |Σ_i z_i|² − n, so the mean is (|Σz|² − n)/(n(n−1)).
    Needs only per-(neuron, bin) counts, O(spikes + bins) per population.
    """
    P = len(n_neurons)
    n_tot = int(base[-1])
    B = len(edges) - 1
    nrn_local = np.arange(n_tot) - base[:-1][nrn_pop]
    # first spiking neuron of each population (over the whole run)
    first = np.full(P, np.iinfo(np.int64).max)
    spiked = np.bincount(g, minlength=n_tot) > 0
    np.minimum.at(first, nrn_pop[spiked], nrn_local[spiked])
    b = _bin_index(s, edges)
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
