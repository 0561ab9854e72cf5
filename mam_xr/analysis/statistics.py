"""The built-in statistics: definition parameters, registry entries and their builders.

Each entry of :func:`mam_xr.analysis.registry.register` below is one statistic
of the run's spikes; its ``build`` turns the merged kernel output
(:class:`mam_xr.analysis.compute.Inputs`) into an :class:`xarray.Dataset`
over ``(area, pop)`` and/or ``(area)`` (plus ``time`` where it applies) whose
attrs give units and the exact definition (windows and their open/closed ends,
bins, kernel, R, neuron choice).  The maths, numbered (A1)-(A13), is in
docs/model.md, section "Analysis statistics".

Deviations from upstream (docs/upstream-differences.md): rates and all other
population means divide by the neurons actually simulated, floor(N), not by
the fractional N; LvR and CV ISI sort each neuron's spikes by time; the
single-neuron rate distribution counts every spike; the experimental FC
includes MSTl.
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from ..errors import ParameterError, invalid
from ..flat import AREAS, N_POPULATIONS, from_flat_vector, to_flat_vector
from . import fc
from .registry import Figure, Parameter, Statistic, add_parameter, register
from .shapes import area_da, area_index, area_neurons, area_sum, pop_da
from .smoothing import gauss_smooth, ss_cost_sigma

MODEL = "docs/model.md"     # where users find the numbered definitions


# ======================================================================================
# Small helpers
# ======================================================================================

def window_attrs(d: dict) -> dict:
    return {"t_min_ms": d["t_min_ms"], "t_max_ms": d["t_max_ms"]}


def time_coord(d) -> np.ndarray:
    """Bin centres (ms) of the rate time series."""
    n = int((d["t_max_ms"] - d["t_min_ms"]) / d["bin_ms"])
    return d["t_min_ms"] + d["bin_ms"] * (1.0 + np.arange(n))


def ts_attrs(d) -> dict:
    b = d["bin_ms"]
    return {"bin_ms": b, **window_attrs(d),
            "bins": (f"[t_min + {b / 2:g} + k*{b:g}, t_min + {3 * b / 2:g} + k*{b:g}) ms, k = 0.."
                     f"{int((d['t_max_ms'] - d['t_min_ms']) / b) - 1}, shifted by half a bin and the last "
                     "bin closed, as upstream's np.histogram(range=(t_min + bin/2, t_max + bin/2)) "
                     f"({MODEL} eq. A2); time = bin centre")}


# ======================================================================================
# Definition parameters
# ======================================================================================

def _sigma(s):
    if not (s == "auto" or (isinstance(s, (int, float)) and not isinstance(s, bool) and s > 0)):
        raise ParameterError(invalid("smooth_sigma_ms", s, "'auto' or a kernel SD > 0 ms"))
    return s


def _rate_bins(rb):
    if rb is None:
        return None
    if isinstance(rb, (int, np.integer)) and not isinstance(rb, bool):
        if rb < 1:
            raise ParameterError(invalid("rate_bins", rb, "None, a number of bins >= 1 or increasing edges"))
        return int(rb)
    edges = np.asarray(rb, dtype=float)
    if edges.ndim != 1 or len(edges) < 2 or np.any(np.diff(edges) <= 0):
        raise ParameterError(invalid("rate_bins", rb, "None, a number of bins >= 1 or increasing edges"))
    return edges.tolist()


for _p in (
    Parameter("t_min_ms", 500.0, "window", "start of the analysis window, ms (the transient before it is "
              "discarded)"),
    Parameter("t_max_ms", None, "window", "end of the analysis window, ms (None: the simulated time t_sim)"),
    Parameter("bin_ms", 1.0, "bin_ms", "bin width of the rate time series, ms"),
    Parameter("smooth_sigma_ms", "auto", "custom", "Gaussian kernel SD, ms, or \"auto\" "
              "(Shimazaki & Shinomoto 2010)", check=_sigma),
    Parameter("R_ms", 2.0, "ms>=0", "LvR refractoriness constant R, ms"),
    Parameter("cc_bin_ms", 1.0, "bin_ms", "bin width of the correlation coefficient, ms"),
    Parameter("cc_max_neurons", 2000, "int>0", "most neurons per population in the correlation coefficient"),
    Parameter("cc_id_span", 3000, "int>0", "neuron ids considered for the correlation coefficient, from the "
              "first spiking one"),
    Parameter("rate_bins", None, "custom", "single-neuron rate bins: None (one per spike count), a number of "
              "bins, or edges in spikes/s", check=_rate_bins),
    Parameter("fc_kernel_samples", 20, "int>0", "length of the exponential synaptic filter of the FC, bins"),
    Parameter("fc_exp_block", "second", "choice", "hemisphere block of the experimental FC file",
              choices=("first", "second")),
):
    add_parameter(_p)


# ======================================================================================
# Builders
# ======================================================================================

def build_rates(x) -> xr.Dataset:
    m, n_neurons, d = x.m, x.nf, x.d
    T = (d["t_max_ms"] - d["t_min_ms"]) / 1000.0
    with np.errstate(invalid="ignore", divide="ignore"):
        rate = m["n_rate_window"] / (n_neurons * T)
        area_rate = np.bincount(area_index(), weights=m["n_rate_window"], minlength=len(AREAS)) \
            / (area_neurons(n_neurons) * T)
    window = f"(t_min, t_max), both ends open: spikes at exactly t_min or t_max do not count ({MODEL} eq. A1)"
    ds = xr.Dataset({
        "rate": pop_da(rate, "rate", "spikes/s", "time-averaged population rate", window=window,
                       normalisation="neurons simulated, floor(N) (docs/upstream-differences.md)"),
        "area_rate": area_da(area_rate, "area_rate", "spikes/s",
                             "time-averaged area rate (pooled spikes / pooled neurons)"),
        "n_spikes": pop_da(m["n_spikes"], "n_spikes", "1", "recorded spikes over the whole run"),
        "n_spikes_window": pop_da(m["n_rate_window"], "n_spikes_window", "1",
                                  "spikes in the rate window (t_min, t_max)"),
        "n_neurons": pop_da(n_neurons, "n_neurons", "1", "neurons simulated, floor(N)"),
    })
    ds.attrs.update(window_attrs(d), window=window)
    return ds


def binned_counts(x) -> tuple[np.ndarray, np.ndarray]:
    """(population counts (254, bins), area counts (32, bins)) of the rate time series."""
    def make():
        counts = x.m["ts_counts"].astype(float)
        return counts, area_sum(counts)
    return x.memo("binned_counts", make)


def build_rate_time_series(x) -> xr.Dataset:
    n_neurons, d = x.nf, x.d
    counts, area_counts = binned_counts(x)
    scale = d["bin_ms"] / 1000.0
    with np.errstate(invalid="ignore", divide="ignore"):
        rate = counts / (n_neurons[:, None] * scale)
        arate = area_counts / (area_neurons(n_neurons)[:, None] * scale)
    t = time_coord(d)
    da = from_flat_vector(rate, name="rate").rename(dim_0="time").assign_coords(time=t)
    da.attrs.update(units="spikes/s", long_name="population rate (binned)")
    ds = xr.Dataset({"rate": da,
                     "area_rate": area_da(arate, "area_rate", "spikes/s", "area rate (binned)",
                                          dims=("area", "time"), coords={"time": t})})
    ds["time"].attrs.update(units="ms", long_name="time (bin centre)")
    ds.attrs.update(ts_attrs(d), normalisation="neurons simulated, floor(N)")
    return ds


def build_smoothed_rate(x) -> xr.Dataset:
    n_neurons, d = x.nf, x.d
    counts, area_counts = binned_counts(x)
    b = d["bin_ms"]
    n_area = area_neurons(n_neurons)
    if d["smooth_sigma_ms"] == "auto":
        sig, _ = ss_cost_sigma(counts, b)
        asig, _ = ss_cost_sigma(area_counts, b)
        rule = ("per series, the fixed bandwidth minimising the Shimazaki-Shinomoto (2010) cost, "
                "log grid of 64 widths from one bin to a quarter of the window, spikes at bin centres")
    else:
        sig = np.full(len(counts), float(d["smooth_sigma_ms"]))
        asig = np.full(len(area_counts), float(d["smooth_sigma_ms"]))
        rule = "fixed"
    with np.errstate(invalid="ignore", divide="ignore"):
        rate = gauss_smooth(counts, sig / b) / (n_neurons[:, None] * b / 1000.0)
        arate = gauss_smooth(area_counts, asig / b) / (n_area[:, None] * b / 1000.0)
    rate[counts.sum(1) == 0] = 0.0
    arate[area_counts.sum(1) == 0] = 0.0
    t = time_coord(d)
    da = from_flat_vector(rate, name="rate").rename(dim_0="time").assign_coords(time=t)
    da.attrs.update(units="spikes/s", long_name="population rate (Gaussian kernel)")
    ds = xr.Dataset({
        "rate": da,
        "area_rate": area_da(arate, "area_rate", "spikes/s", "area rate (Gaussian kernel)",
                             dims=("area", "time"), coords={"time": t}),
        "sigma": pop_da(sig, "sigma", "ms", "Gaussian kernel SD"),
        "area_sigma": area_da(asig, "area_sigma", "ms", "Gaussian kernel SD of the area series"),
    })
    ds["time"].attrs.update(units="ms", long_name="time (bin centre)")
    ds.attrs.update(ts_attrs(d), kernel="gaussian", sigma_rule=rule,
                    smoothing=("binned counts convolved with a unit-sum Gaussian sampled at the bins "
                               "(±5 SD), divided by the kernel mass inside the window (no droop at the "
                               f"edges); silent series are 0 ({MODEL} eqs. A3, A4)"))
    return ds


def build_synchrony(x) -> xr.Dataset:
    counts, area_counts = binned_counts(x)
    with np.errstate(invalid="ignore", divide="ignore"):
        s = counts.std(axis=1) / counts.mean(axis=1)
        a = area_counts.std(axis=1) / area_counts.mean(axis=1)
    ds = xr.Dataset({
        "synchrony": pop_da(s, "synchrony", "1", "CV of the binned population count (SD/mean over bins)"),
        "area_synchrony": area_da(a, "area_synchrony", "1", "CV of the binned area count"),
    })
    ds.attrs.update(ts_attrs(x.d), definition=("SD / mean (ddof 0) over the bins of the rate time series; "
                                               f"NaN for a population without spikes ({MODEL} eq. A5)"))
    return ds


def build_irregularity(x) -> xr.Dataset:
    m, d = x.m, x.d
    with np.errstate(invalid="ignore", divide="ignore"):
        lvr = m["lvr_sum"] / x.nf
    ds = xr.Dataset({
        "lvr": pop_da(lvr, "lvr", "1", "revised local variation LvR, mean over all simulated neurons",
                      window=f"[t_min, t_max): spikes at exactly t_min count, at t_max not ({MODEL} eq. A6)"),
        "n_lvr_neurons": pop_da(m["n_lvr_neurons"], "n_lvr_neurons", "1", "neurons with >= 2 ISIs (LvR)"),
        "cv_isi": pop_da(m["cv_isi"], "cv_isi", "1",
                         "CV of inter-spike intervals, mean over neurons with >= 1 ISI",
                         window=f"(t_min, t_max), both ends open ({MODEL} eq. A7)"),
        "n_cv_neurons": pop_da(m["n_cv_neurons"], "n_cv_neurons", "1", "neurons with >= 1 ISI (CV ISI)"),
    })
    ds.attrs.update(window_attrs(d), R_ms=d["R_ms"], definition=(
        "LvR = 3/(n-1) Σ_k (1 - 4 I_k I_k+1/(I_k + I_k+1)^2)(1 + 4R/(I_k + I_k+1)) per neuron with n >= 2 "
        "ISIs (Shinomoto et al. 2009), 0 for the others, averaged over the floor(N) simulated neurons "
        "(upstream's Analysis class; its M2E script divides by round(N)). Each neuron's spikes are sorted "
        "by time first, so the result does not depend on the recording order "
        "(docs/upstream-differences.md). CV ISI = SD/mean (ddof 0) of a neuron's ISIs; 0 for a population "
        "without ISIs"))
    return ds


def build_rate_distribution(x) -> xr.Dataset:
    m, d = x.m, x.d
    T = (d["t_max_ms"] - d["t_min_ms"]) / 1000.0
    nc = m["neuron_counts"]
    kmax = max((int(c.max()) for c in nc if len(c)), default=0)
    rb = d["rate_bins"]
    if rb is None:
        edges = (np.arange(kmax + 2) - 0.5) / T       # one bin per spike count k, centred on k/T
        centre = np.arange(kmax + 1) / T
        binning = "one bin per spike count k; coordinate rate = k / (t_max - t_min)"
    else:
        if isinstance(rb, int):
            edges = np.linspace(0.0, max(kmax / T, 1e-12), rb + 1)
        else:
            edges = np.asarray(rb, dtype=float)
        centre = edges[:-1]
        binning = "np.histogram bins (last closed); coordinate rate = left bin edge"
    hist = np.zeros((N_POPULATIONS, len(centre)))
    mean = np.full(N_POPULATIONS, np.nan)
    sd = np.full(N_POPULATIONS, np.nan)
    silent = np.full(N_POPULATIONS, np.nan)
    for i, c in enumerate(nc):
        if len(c) == 0:
            continue
        r = c / T
        if rb is None:
            h = np.bincount(c, minlength=kmax + 1).astype(float)
        else:
            h = np.histogram(r, bins=edges)[0].astype(float)
        hist[i] = h / len(c)
        mean[i], sd[i] = r.mean(), r.std()
        silent[i] = np.mean(c == 0)
    da = from_flat_vector(hist, name="fraction").rename(dim_0="rate").assign_coords(rate=centre)
    da.attrs.update(units="1", long_name="fraction of neurons per single-neuron rate bin")
    ds = xr.Dataset({
        "fraction": da,
        "mean": pop_da(mean, "mean", "spikes/s", "mean single-neuron rate (equals rates.rate)"),
        "sd": pop_da(sd, "sd", "spikes/s", "SD (ddof 0) of single-neuron rates"),
        "fraction_silent": pop_da(silent, "fraction_silent", "1", "fraction of neurons without spikes"),
    })
    ds["rate"].attrs.update(units="spikes/s", long_name="single-neuron rate")
    ds.attrs.update(window_attrs(d), binning=binning, rate_bin_edges=np.asarray(edges).tolist(),
                    definition=("spikes of each simulated neuron in (t_min, t_max) / (t_max - t_min), every "
                                "spike counted (upstream's create_pop_rate_dists drops one spike of every "
                                f"spiking neuron but the first; docs/upstream-differences.md; {MODEL} eq. A8)"))
    return ds


def build_correlation(x) -> xr.Dataset:
    m, d = x.m, x.d
    ds = xr.Dataset({
        "corrcoef": pop_da(m["corrcoef"], "corrcoef", "1",
                           "mean pairwise Pearson correlation coefficient of binned spike counts"),
        "n_corr_neurons": pop_da(m["n_corr_neurons"], "n_corr_neurons", "1",
                                 "neurons entering the correlation coefficient"),
    })
    ds.attrs.update(window_attrs(d), bin_ms=d["cc_bin_ms"], n_neurons_max=d["cc_max_neurons"],
                    id_span=d["cc_id_span"], definition=(
                        f"bins of {d['cc_bin_ms']:g} ms from t_min to t_max, the last bin closed (a spike at "
                        f"exactly t_max counts; np.histogram edges). Neurons: ids from the first neuron of the "
                        f"population that spiked at any time to +{d['cc_id_span']}, minus those with a constant "
                        f"binned train, the first {d['cc_max_neurons']} of the rest (upstream's M2E choice). "
                        "Mean of the off-diagonal coefficients (NaN -> 0 cannot occur after the constant "
                        f"trains are dropped); NaN where fewer than 2 neurons are active ({MODEL} eq. A9)"))
    return ds


def build_functional_connectivity(x) -> xr.Dataset:
    rate_flat = to_flat_vector(x.dataset("rate_time_series")["rate"])
    return fc.fc_dataset(rate_flat, x.nf, x.structure(), fc.tau_syn_ex(x.run), x.d,
                                 time_coord(x.d), ts_attrs(x.d))


# ======================================================================================
# The registry entries
# ======================================================================================

_W = ("t_min_ms", "t_max_ms")

register(Statistic(
    name="rates", summary="time-averaged rate of each population and area",
    variables="`rate` (area, pop), `area_rate` (area) spikes/s; `n_spikes`, `n_spikes_window`, `n_neurons`",
    definition="spikes with t_min < t < t_max (both ends **open**) / (floor(N) · (t_max − t_min)); area: "
               "pooled spikes / pooled neurons (A1)",
    depends=_W, parts=("counts",), build=build_rates,
    figures=(Figure("population_heatmap", "rate", "Rate"), Figure("box", "rate", "Rate"))))

register(Statistic(
    name="rate_time_series", summary="population and area rates in time bins",
    variables="`rate` (area, pop, time), `area_rate` (area, time) spikes/s",
    definition="`bin_ms` bins **[t_min + bin/2 + k·bin, t_min + 3bin/2 + k·bin)**, k = 0 … "
               "int((t_max − t_min)/bin) − 1, the last bin closed — upstream's "
               "`np.histogram(range=(500.5, 2000.5))`; `time` = bin centre (501, 502, …, 2000 ms) (A2)",
    depends=_W + ("bin_ms",), parts=("time_series",), build=build_rate_time_series,
    figures=(Figure("time_heatmap", "area_rate", "Rate"), Figure("time_series", "area_rate", "Rate"),
             Figure("area_series", "area_rate", "Rate"))))

register(Statistic(
    name="smoothed_rate", summary="rate time series smoothed with a Gaussian kernel",
    variables="`rate`, `area_rate` as above; `sigma` (area, pop), `area_sigma` (area) ms",
    definition="the binned counts convolved with a unit-sum Gaussian (±5 SD) and divided by the kernel mass "
               "inside the window (no droop at the edges). `smooth_sigma_ms=\"auto\"` (default): per series, "
               "the width minimising the Shimazaki–Shinomoto (2010) cost, spikes at bin centres, 64 widths "
               "log-spaced from one bin to a quarter of the window; or a fixed SD in ms (A3, A4)",
    depends=_W + ("bin_ms", "smooth_sigma_ms"), parts=("time_series",), build=build_smoothed_rate))

register(Statistic(
    name="synchrony", summary="coefficient of variation of the binned population count",
    variables="`synchrony` (area, pop), `area_synchrony` (area)",
    definition="SD/mean (ddof 0) of the binned counts of the rate time series; NaN without spikes (A5)",
    depends=_W + ("bin_ms",), parts=("time_series",), build=build_synchrony))

register(Statistic(
    name="irregularity", summary="LvR and CV of inter-spike intervals",
    variables="`lvr`, `cv_isi`, `n_lvr_neurons`, `n_cv_neurons` (area, pop)",
    definition="LvR (Shinomoto et al. 2009, `R_ms` = 2) of each neuron's spikes in **[t_min, t_max)**, 0 with "
               "< 2 ISIs, mean over floor(N) neurons; CV ISI = SD/mean of ISIs in (t_min, t_max), mean over "
               "neurons with ≥ 1 ISI. Each neuron's spikes are sorted by time, so the recording order never "
               "matters (A6, A7)",
    depends=_W + ("R_ms",), parts=("cv_isi", "lvr"), build=build_irregularity,
    figures=(Figure("box", "lvr", "LvR", order=2),)))

register(Statistic(
    name="rate_distribution", summary="distribution of single-neuron rates",
    variables="`fraction` (area, pop, rate), `mean`, `sd`, `fraction_silent` (area, pop)",
    definition="single-neuron rates = spikes in (t_min, t_max) / duration, **every spike counted**; "
               "`rate_bins=None`: one bin per spike count k (coordinate k / duration, exact); an int: equal "
               "bins from 0 to the run's highest rate; or explicit edges (A8)",
    depends=_W + ("rate_bins",), parts=("counts",), build=build_rate_distribution, fill_value=0.0))

register(Statistic(
    name="correlation", summary="mean pairwise correlation coefficient of binned spike trains",
    variables="`corrcoef`, `n_corr_neurons` (area, pop)",
    definition="`cc_bin_ms` = 1 ms bins from t_min to t_max, **the last bin closed** (a spike at exactly t_max "
               "counts); neurons: from the first neuron of the population that spiked at any time, ids up to "
               "+`cc_id_span` (3000), minus constant trains, the first `cc_max_neurons` (2000) — upstream's M2E "
               "choice; mean off-diagonal Pearson r; **NaN with fewer than 2 active neurons** (A9)",
    depends=_W + ("cc_bin_ms", "cc_max_neurons", "cc_id_span"), parts=("corrcoef",), build=build_correlation,
    figures=(Figure("box", "corrcoef", "Correlation", order=1),)))

register(Statistic(
    name="functional_connectivity", summary="simulated vs experimental functional connectivity of the areas",
    variables="`synaptic_input` (area, pop, time), `area_synaptic_input` (area, time), `fc`, `fc_experimental` "
              "(area, source_area), `fc_similarity`",
    definition="drive_t = Σ_s \\|W_ts\\| K_ts r_s(t) over all 254 sources with the binned rates, filtered with "
               "exp(−u/τ_syn_ex) at u = 0 … 19 bins (\"same\" mode); area series = floor(N)-weighted mean; FC = "
               "Pearson matrix of the 32 area series; experimental FC from `Fig8_exp_func_conn.csv` (second "
               "hemisphere block, MSTl included); similarity = Pearson r of the two matrices with zeroed "
               "diagonals (A10–A12)",
    depends=_W + ("bin_ms", "fc_kernel_samples", "fc_exp_block"), needs=("rate_time_series",),
    structure=True, run_definition=lambda run: {"tau_syn_ex_ms": fc.tau_syn_ex(run)},
    build=build_functional_connectivity,
    figures=(Figure("fc", "fc", "FC", reference="fc_experimental"),)))


# -- Fano factor of spike counts: two parameters, one builder, one entry (kernel part "fano") --

add_parameter(Parameter("ff_bin_ms", 100.0, "bin_ms", "bin width of the spike counts of the Fano factor, ms"))
add_parameter(Parameter("ff_max_neurons", 1000, "int>0", "neurons per population in the Fano factor "
                        "(the first ones by index)"))


def build_fano_factor(x) -> xr.Dataset:
    m, d = x.m, x.d
    n_bins = int((d["t_max_ms"] - d["t_min_ms"]) / d["ff_bin_ms"])
    ds = xr.Dataset({
        "fano_factor": pop_da(m["fano_factor"], "fano_factor", "1",
                              "Fano factor of single-neuron spike counts (variance/mean over bins), "
                              "mean over sampled neurons that spiked"),
        "n_fano_neurons": pop_da(m["n_fano_neurons"], "n_fano_neurons", "1",
                                 "sampled neurons with at least one spike in the window (Fano factor)"),
    })
    ds.attrs.update(window_attrs(d), bin_ms=d["ff_bin_ms"], n_bins=n_bins, n_neurons_max=d["ff_max_neurons"],
                    definition=(
                        f"counts of each neuron in {n_bins} bins of {d['ff_bin_ms']:g} ms from t_min (the last "
                        "bin closed, np.histogram edges; spikes after the last full bin are not counted); "
                        f"neurons: the first {d['ff_max_neurons']} of each population by index; per neuron "
                        "variance / mean (ddof 0) of its counts, averaged over the sampled neurons with at "
                        f"least one spike in the bins; NaN where none spiked ({MODEL} eq. A13)"))
    return ds


register(Statistic(
    name="fano_factor", summary="Fano factor of single-neuron spike counts",
    variables="`fano_factor`, `n_fano_neurons` (area, pop)",
    definition="counts of each of the first `ff_max_neurons` (1000) neurons of a population in `ff_bin_ms` = "
               "100 ms bins from t_min, k = 0 … int((t_max − t_min)/bin) − 1, the last bin closed; per neuron "
               "variance/mean (ddof 0) over the bins; mean over the sampled neurons with ≥ 1 spike in the bins; "
               "**NaN if none spiked** (A13)",
    depends=_W + ("ff_bin_ms", "ff_max_neurons"), parts=("fano",), build=build_fano_factor,
    figures=(Figure("box", "fano_factor", "Fano factor", order=3),)))
