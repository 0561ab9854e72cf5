"""Statistics of the spikes in a run store, computed with Dask and cached in the store.

Every statistic of upstream's analysis (spec/dynamics.md §C) is computed from a
mam_xr run store (:mod:`mam_xr.store`) in **one pass over the spikes**: the
populations are split into groups of whole areas (or, for a very large area,
of its populations) whose spikes fit a per-task budget; one Dask task per
group reads its spikes and computes every per-population quantity at once
(:mod:`mam_xr._spike_kernels`); a small final step aggregates areas, smooths
time series and builds the functional connectivity.  Each statistic is an
:class:`xarray.Dataset` over ``(area, pop)`` and/or ``(area)`` (plus
``time`` where it applies) whose attrs give units and the exact definition
(windows and their open/closed ends, bins, kernel, R, neuron choice).

Results are written to ``analysis/<name>/`` of the run store together with
their definition and are reused until the definition or the spikes change.
A list of runs gives Datasets with a ``run`` dimension.

Deviations from upstream (spec/decisions.md, docs/upstream-differences.md):
rates and all other population means divide by the neurons actually
simulated, floor(N), not by the fractional N; LvR and CV ISI sort each
neuron's spikes by time; the single-neuron rate distribution counts every
spike; the experimental FC includes MSTl.

Public functions: :func:`analyze`, :func:`import_upstream`,
:func:`lazy_spikes`, :func:`experimental_fc`, :func:`read_analysis`.
"""

from __future__ import annotations

import functools
import json
import re
import time
import warnings
from pathlib import Path
from typing import Any, Iterable, Literal

import numpy as np
import xarray as xr

from . import _spike_kernels as _k
from .errors import DataError, ParameterError, StoreError, invalid
from .flat import (AREAS, N_POPULATIONS, POPS, exists, from_flat_vector, population_labels,
                   to_flat_matrix, to_flat_vector)

__all__ = ["STATISTICS", "DEFAULTS", "analyze", "import_upstream", "lazy_spikes",
           "experimental_fc", "read_analysis", "plan_groups"]

#: Version of the statistic definitions; a change invalidates cached results.
ANALYSIS_VERSION = "mam_xr.analysis/1"

#: Names of the statistics (groups ``analysis/<name>`` of the run store).
STATISTICS: tuple[str, ...] = (
    "rates", "rate_time_series", "smoothed_rate", "synchrony", "irregularity",
    "rate_distribution", "correlation", "functional_connectivity",
)

#: Definition parameters and their defaults (upstream's conventions, dynamics.md §C).
DEFAULTS: dict[str, Any] = {
    "t_min_ms": 500.0,          # transient discarded (§C.2)
    "t_max_ms": None,           # None: the simulated time t_sim
    "bin_ms": 1.0,              # rate time series and synchrony (§C.5, §C.6)
    "smooth_sigma_ms": "auto",  # Gaussian kernel SD, or "auto" (Shimazaki & Shinomoto 2010)
    "R_ms": 2.0,                # LvR refractoriness constant (§C.9)
    "cc_bin_ms": 1.0,           # correlation coefficient (§C.7)
    "cc_max_neurons": 2000,
    "cc_id_span": 3000,
    "rate_bins": None,          # None: one bin per spike count; int: equal bins; or edges
    "fc_kernel_samples": 20,    # exponential synaptic filter length (§C.10)
    "fc_exp_block": "second",   # hemisphere block of the experimental FC CSV (decisions.md)
}

#: Which definition parameters each statistic depends on.
_DEPENDS: dict[str, tuple[str, ...]] = {
    "rates": ("t_min_ms", "t_max_ms"),
    "rate_time_series": ("t_min_ms", "t_max_ms", "bin_ms"),
    "smoothed_rate": ("t_min_ms", "t_max_ms", "bin_ms", "smooth_sigma_ms"),
    "synchrony": ("t_min_ms", "t_max_ms", "bin_ms"),
    "irregularity": ("t_min_ms", "t_max_ms", "R_ms"),
    "rate_distribution": ("t_min_ms", "t_max_ms", "rate_bins"),
    "correlation": ("t_min_ms", "t_max_ms", "cc_bin_ms", "cc_max_neurons", "cc_id_span"),
    "functional_connectivity": ("t_min_ms", "t_max_ms", "bin_ms", "fc_kernel_samples",
                                "fc_exp_block"),
}

#: Per-task spike budget; the kernel peaks at ≈ 55 bytes per spike including its input,
#: 80 are assumed when the budget is derived from a memory limit.
DEFAULT_CHUNK_SPIKES = 4_000_000
_BYTES_PER_SPIKE = 80


# ======================================================================================
# Small helpers
# ======================================================================================

def _open(run, *, allow_incomplete: bool = False):
    from .store import RunStore, open_run

    if isinstance(run, RunStore):
        return run
    if not isinstance(run, (str, Path)):
        raise ParameterError(invalid("run", run, "a run store path or a mam_xr.store.RunStore"))
    return open_run(run, allow_incomplete=allow_incomplete)


def _pop_da(values, name, units, long_name, **extra) -> xr.DataArray:
    """Flat 254 vector -> (area, pop) DataArray with NaN for absent populations."""
    da = from_flat_vector(np.asarray(values, dtype=float), name=name)
    da.attrs.update(units=units, long_name=long_name, **extra)
    return da


def _area_da(values, name, units, long_name, dims=("area",), coords=None) -> xr.DataArray:
    c = {"area": list(AREAS)}
    c.update(coords or {})
    return xr.DataArray(np.asarray(values, dtype=float), dims=dims,
                        coords={k: v for k, v in c.items() if k in dims}, name=name,
                        attrs={"units": units, "long_name": long_name})


def _area_index() -> np.ndarray:
    """Area index of each of the 254 flat populations."""
    return np.array([AREAS.index(lab.split("-")[0]) for lab in population_labels()])


def _area_sum(x: np.ndarray) -> np.ndarray:
    """Sum of flat (254, ...) rows over the populations of each area (area-major order)."""
    starts = np.flatnonzero(np.diff(np.concatenate([[-1], _area_index()])))
    return np.add.reduceat(x, starts, axis=0)


def _parse_memory(limit) -> int | None:
    if limit is None:
        return None
    if isinstance(limit, (int, float)):
        return int(limit)
    from dask.utils import parse_bytes

    return int(parse_bytes(limit))


# ======================================================================================
# Definitions and validation
# ======================================================================================

def _resolve_definition(run, overrides: dict) -> dict:
    """Full, validated definition parameters for one run (t_max resolved to t_sim)."""
    unknown = sorted(set(overrides) - set(DEFAULTS))
    if unknown:
        raise ParameterError(invalid(unknown[0], overrides[unknown[0]],
                                     f"a definition parameter, one of {sorted(DEFAULTS)}"))
    d = {**DEFAULTS, **overrides}
    t_sim = float(run.attrs.get("t_sim", np.nan))
    segs = run.segments()
    t_end = float(segs[-1, 1]) if len(segs) else 0.0
    if not np.isfinite(t_sim) or t_end < t_sim - 1e-9:  # incomplete run: committed time only
        t_sim = t_end
    if d["t_max_ms"] is None:
        d["t_max_ms"] = t_sim
    if "t_min_ms" not in overrides and isinstance(d["t_max_ms"], (int, float)) \
            and d["t_max_ms"] <= DEFAULTS["t_min_ms"]:
        # A run shorter than upstream's 500 ms transient has nothing after it:
        # analyse it whole instead of refusing (an explicit t_min_ms is still checked).
        warnings.warn(f"run {run.path!r} ends at {d['t_max_ms']:g} ms, within the default "
                      f"{DEFAULTS['t_min_ms']:g} ms transient: analysing from 0 ms", stacklevel=3)
        d["t_min_ms"] = 0.0
    for name in ("t_min_ms", "t_max_ms", "bin_ms", "R_ms", "cc_bin_ms"):
        if not isinstance(d[name], (int, float)) or isinstance(d[name], bool) or not np.isfinite(d[name]):
            raise ParameterError(invalid(name, d[name], "a finite number of ms"))
        d[name] = float(d[name])
    if not 0.0 <= d["t_min_ms"] < d["t_max_ms"]:
        raise ParameterError(invalid("t_min_ms", d["t_min_ms"], f"0 <= t_min_ms < t_max_ms={d['t_max_ms']}"))
    if d["t_max_ms"] > t_sim + 1e-9:
        raise ParameterError(invalid("t_max_ms", d["t_max_ms"],
                                     f"a time within the simulated 0-{t_sim:g} ms of run {run.path!r}"))
    for name in ("bin_ms", "cc_bin_ms"):
        if not 0.0 < d[name] <= d["t_max_ms"] - d["t_min_ms"]:
            raise ParameterError(invalid(name, d[name], "a bin width in (0, t_max_ms - t_min_ms]"))
        if abs(d[name] / run.dt - round(d[name] / run.dt)) > 1e-6:
            raise ParameterError(invalid(name, d[name], f"a multiple of the simulation step dt={run.dt} ms"))
    if d["R_ms"] < 0:
        raise ParameterError(invalid("R_ms", d["R_ms"], "a refractoriness constant >= 0 ms"))
    for name in ("cc_max_neurons", "cc_id_span", "fc_kernel_samples"):
        v = d[name]
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
            raise ParameterError(invalid(name, v, "a positive integer"))
        d[name] = int(v)
    s = d["smooth_sigma_ms"]
    if not (s == "auto" or (isinstance(s, (int, float)) and not isinstance(s, bool) and s > 0)):
        raise ParameterError(invalid("smooth_sigma_ms", s, "'auto' or a kernel SD > 0 ms"))
    rb = d["rate_bins"]
    if rb is not None:
        if isinstance(rb, (int, np.integer)) and not isinstance(rb, bool):
            if rb < 1:
                raise ParameterError(invalid("rate_bins", rb, "None, a number of bins >= 1 or increasing edges"))
            d["rate_bins"] = int(rb)
        else:
            edges = np.asarray(rb, dtype=float)
            if edges.ndim != 1 or len(edges) < 2 or np.any(np.diff(edges) <= 0):
                raise ParameterError(invalid("rate_bins", rb, "None, a number of bins >= 1 or increasing edges"))
            d["rate_bins"] = edges.tolist()
    if d["fc_exp_block"] not in ("first", "second"):
        raise ParameterError(invalid("fc_exp_block", d["fc_exp_block"], "'first' or 'second'"))
    return d


def _fingerprint(run) -> dict:
    """What identifies the spikes a cached statistic was computed from."""
    a = run.attrs
    return {"n_spikes": run.n_spikes(), "last_segment": a.get("last_segment"),
            "status": a.get("status"), "label": a.get("label", "")}


def _definition_of(name: str, d: dict, run, fingerprint: dict | None = None) -> dict:
    out = {k: d[k] for k in _DEPENDS[name]}
    out["version"] = ANALYSIS_VERSION
    out["spikes"] = fingerprint if fingerprint is not None else _fingerprint(run)
    if name == "functional_connectivity":
        out["tau_syn_ex_ms"] = _tau_syn_ex(run)
    return out


def _tau_syn_ex(run) -> float:
    p = run.params
    try:
        return float(p["network"]["neuron"]["tau_syn_ex"])
    except (KeyError, TypeError):
        return 0.5  # upstream default (dynamics.md §A.5)


# ======================================================================================
# Planning the work: groups of populations
# ======================================================================================

def _pop_counts(run) -> np.ndarray:
    """Spikes per flat population in the segments every rank committed, from the offsets tables."""
    counts = np.zeros(N_POPULATIONS, dtype=np.int64)
    n = run._n_common()
    for r in run.ranks:
        g = run.root["spikes"][r]
        if n:
            counts += np.diff(g["offsets"][:n], axis=1).sum(axis=0)
    return counts


def plan_groups(counts: np.ndarray, budget: int, *, min_groups: int = 1) -> list[tuple[list[str], list[str] | None]]:
    """Split the 254 populations into groups read and analysed by one task each.

    A group is whole consecutive areas (``(areas, None)``) or, for an area
    with more than ``budget`` spikes, consecutive populations of that area
    (``([area], pops)``).  Each group holds at most ``budget`` spikes unless a
    single population is larger (the unit of work is one population).  With
    ``min_groups`` > 1 the budget shrinks so that the cores are kept busy.
    """
    counts = np.asarray(counts, dtype=np.int64)
    total = int(counts.sum())
    budget = max(1, min(int(budget), -(-total // max(1, min_groups)) if total else 1))
    labels = population_labels()
    per_area = {a: [(lab.split("-")[1], int(c)) for lab, c in zip(labels, counts) if lab.startswith(a + "-")]
                for a in AREAS}
    groups: list[tuple[list[str], list[str] | None]] = []
    cur: list[str] = []
    cur_n = 0
    for a in AREAS:
        n_a = sum(c for _, c in per_area[a])
        if n_a > budget:
            if cur:
                groups.append((cur, None))
                cur, cur_n = [], 0
            pops: list[str] = []
            pn = 0
            for p, c in per_area[a]:
                if pops and pn + c > budget:
                    groups.append(([a], pops))
                    pops, pn = [], 0
                pops.append(p)
                pn += c
            groups.append(([a], pops) if len(pops) < len(per_area[a]) else ([a], None))
            continue
        if cur and cur_n + n_a > budget:
            groups.append((cur, None))
            cur, cur_n = [], 0
        cur.append(a)
        cur_n += n_a
    if cur:
        groups.append((cur, None))
    return groups


def _group_flat_indices(areas: list[str], pops: list[str] | None) -> np.ndarray:
    labels = population_labels()
    return np.array([i for i, lab in enumerate(labels)
                     if lab.split("-")[0] in areas and (pops is None or lab.split("-")[1] in pops)])


#: Kernel parts each statistic needs.
_PARTS: dict[str, tuple[str, ...]] = {
    "rates": ("counts",), "rate_distribution": ("counts",), "rate_time_series": ("time_series",),
    "smoothed_rate": ("time_series",), "synchrony": ("time_series",),
    "functional_connectivity": ("time_series",), "irregularity": ("cv_isi", "lvr"),
    "correlation": ("corrcoef",),
}


def _read_slices(arr, slices: list[tuple[int, int]], max_chunks: int = 4) -> np.ndarray:
    """Concatenated ``arr[a:b]`` for sorted, disjoint slices, decoding every Zarr chunk
    at most once (reads of at most ``max_chunks`` consecutive chunks)."""
    total = sum(b - a for a, b in slices)
    out = np.empty(total, dtype=arr.dtype)
    if not total:
        return out
    C = int(arr.chunks[0])
    need = sorted({c for a, b in slices for c in range(a // C, (b - 1) // C + 1)})
    runs, start = [], need[0]
    for prev, c in zip(need, need[1:] + [None]):
        if c is None or c != prev + 1 or prev + 1 - start >= max_chunks:
            runs.append((start * C, min((prev + 1) * C, arr.shape[0])))
            start = c
    pos, k = 0, 0
    starts = np.cumsum([0] + [b - a for a, b in slices])
    for r0, r1 in runs:
        block = arr[r0:r1]
        while k < len(slices) and slices[k][0] < r1:
            a, b = slices[k]
            x0, x1 = max(a, r0), min(b, r1)
            if x1 > x0:
                o = starts[k] + (x0 - a)
                out[o:o + (x1 - x0)] = block[x0 - r0:x1 - r0]
            if b <= r1:
                k += 1
            else:
                break
    return out


def _read_group(run, idx: np.ndarray, n_common: int | None = None):
    """(pop index within the group, sender, steps) of consecutive flat populations ``idx``,
    all committed segments of every rank, in storage order (the kernel sorts)."""
    p0, p1 = int(idx[0]), int(idx[-1]) + 1
    if not np.array_equal(idx, np.arange(p0, p1)):
        raise StoreError("internal error: an analysis group must be consecutive populations")
    n = run._n_common() if n_common is None else n_common
    pops, senders, steps = [], [], []
    for r in run.ranks:
        g = run.root["spikes"][r]
        if n == 0:
            continue
        off = g["offsets"][:n]
        cnt = np.diff(off[:, p0:p1 + 1], axis=1)                  # (segments, P)
        slices = [(int(off[s, p0]), int(off[s, p1])) for s in range(n) if off[s, p1] > off[s, p0]]
        steps.append(_read_slices(g["times"], slices))
        senders.append(_read_slices(g["senders"], slices))
        pops.append(np.repeat(np.tile(np.arange(p1 - p0, dtype=np.int32), n), cnt.ravel()))
    cat = (lambda xs, dt: np.concatenate(xs) if xs else np.zeros(0, dt))
    return cat(pops, np.int32), cat(senders, np.int32), cat(steps, np.int32)


def _run_group(run, idx: np.ndarray, n_common: int, n_neurons: np.ndarray, d: dict,
               parts: frozenset = _k.PARTS):
    """One Dask task: read a group's spikes and compute all its per-population statistics.

    ``run`` is the opened RunStore (it pickles to a few hundred bytes for
    distributed workers); ``n_common`` the segments every rank committed.
    """
    pop, senders, steps = _read_group(run, idx, n_common)
    w = _k.make_windows(dt=run.dt, t_min=d["t_min_ms"], t_max=d["t_max_ms"],
                        bin_ms=d["bin_ms"], cc_bin_ms=d["cc_bin_ms"])
    out = _k.group_statistics(pop, senders, steps, n_neurons, w, R_ms=d["R_ms"],
                              cc_max_neurons=d["cc_max_neurons"], cc_id_span=d["cc_id_span"],
                              parts=parts)
    out["flat_index"] = idx
    return out


def _merge_groups(parts: list[dict], n_neurons: np.ndarray) -> dict[str, np.ndarray]:
    """Per-group outputs -> flat 254-population arrays (neuron_counts in flat order)."""
    merged: dict[str, Any] = {}
    order = np.concatenate([p["flat_index"] for p in parts])
    if sorted(order.tolist()) != list(range(N_POPULATIONS)):
        raise StoreError("internal error: the analysis groups do not cover the 254 populations once")
    for key in parts[0]:
        if key in ("flat_index", "neuron_counts"):
            continue
        vals = np.concatenate([p[key] for p in parts], axis=0)
        arr = np.empty_like(vals)
        arr[order] = vals
        merged[key] = arr
    if "neuron_counts" not in parts[0]:
        return merged
    # neuron counts: reorder population blocks to flat order
    blocks = {}
    for p in parts:
        nc = p["neuron_counts"]
        pos = 0
        for fi in p["flat_index"]:
            blocks[int(fi)] = nc[pos:pos + n_neurons[fi]]
            pos += n_neurons[fi]
    merged["neuron_counts"] = [blocks[i] for i in range(N_POPULATIONS)]
    return merged


# ======================================================================================
# Building the Datasets
# ======================================================================================

def _window_attrs(d: dict) -> dict:
    return {"t_min_ms": d["t_min_ms"], "t_max_ms": d["t_max_ms"]}


def _ds_rates(m, n_neurons, d) -> xr.Dataset:
    T = (d["t_max_ms"] - d["t_min_ms"]) / 1000.0
    area = _area_index()
    with np.errstate(invalid="ignore", divide="ignore"):
        rate = m["n_rate_window"] / (n_neurons * T)
        n_area = np.bincount(area, weights=n_neurons, minlength=len(AREAS))
        area_rate = np.bincount(area, weights=m["n_rate_window"], minlength=len(AREAS)) / (n_area * T)
    window = "(t_min, t_max), both ends open: spikes at exactly t_min or t_max do not count (dynamics.md §C.3)"
    ds = xr.Dataset({
        "rate": _pop_da(rate, "rate", "spikes/s", "time-averaged population rate", window=window,
                        normalisation="neurons simulated, floor(N) (decisions.md)"),
        "area_rate": _area_da(area_rate, "area_rate", "spikes/s",
                              "time-averaged area rate (pooled spikes / pooled neurons)"),
        "n_spikes": _pop_da(m["n_spikes"], "n_spikes", "1", "recorded spikes over the whole run"),
        "n_spikes_window": _pop_da(m["n_rate_window"], "n_spikes_window", "1",
                                   "spikes in the rate window (t_min, t_max)"),
        "n_neurons": _pop_da(n_neurons, "n_neurons", "1", "neurons simulated, floor(N)"),
    })
    ds.attrs.update(_window_attrs(d), window=window)
    return ds


def _time_coord(d) -> np.ndarray:
    n = int((d["t_max_ms"] - d["t_min_ms"]) / d["bin_ms"])
    return d["t_min_ms"] + d["bin_ms"] * (1.0 + np.arange(n))


def _ts_attrs(d) -> dict:
    b = d["bin_ms"]
    return {"bin_ms": b, **_window_attrs(d),
            "bins": (f"[t_min + {b / 2:g} + k*{b:g}, t_min + {3 * b / 2:g} + k*{b:g}) ms, k = 0.."
                     f"{int((d['t_max_ms'] - d['t_min_ms']) / b) - 1}, shifted by half a bin and the last "
                     "bin closed, as upstream's np.histogram(range=(t_min + bin/2, t_max + bin/2)) "
                     "(dynamics.md §C.5); time = bin centre")}


def _ds_rate_ts(m, n_neurons, d) -> xr.Dataset:
    counts = m["ts_counts"].astype(float)
    scale = d["bin_ms"] / 1000.0
    area = _area_index()
    area_counts = _area_sum(counts)
    n_area = np.bincount(area, weights=n_neurons, minlength=len(AREAS))
    with np.errstate(invalid="ignore", divide="ignore"):
        rate = counts / (n_neurons[:, None] * scale)
        arate = area_counts / (n_area[:, None] * scale)
    t = _time_coord(d)
    da = from_flat_vector(rate, name="rate").rename(dim_0="time").assign_coords(time=t)
    da.attrs.update(units="spikes/s", long_name="population rate (binned)")
    ds = xr.Dataset({"rate": da,
                     "area_rate": _area_da(arate, "area_rate", "spikes/s", "area rate (binned)",
                                           dims=("area", "time"), coords={"time": t})})
    ds["time"].attrs.update(units="ms", long_name="time (bin centre)")
    ds.attrs.update(_ts_attrs(d), normalisation="neurons simulated, floor(N)")
    return ds, counts, area_counts


def _ss_cost_sigma(counts: np.ndarray, bin_ms: float) -> tuple[np.ndarray, np.ndarray]:
    """Shimazaki-Shinomoto (2010) optimal fixed Gaussian bandwidth per row of binned counts.

    Cost C(w) = Σ_{i,j} k_{√2 w}(t_i - t_j) - 2 Σ_{i≠j} k_w(t_i - t_j) with the
    spikes placed at their bin centres, evaluated through the autocorrelation of
    the counts on a log grid of w from one bin to a quarter of the window.
    Returns (sigma_ms per row, the grid).
    """
    from scipy import fft

    R, B = counts.shape
    nfft = fft.next_fast_len(2 * B, real=True)
    f = fft.rfft(counts, nfft, axis=1, workers=-1)
    f *= np.conj(f)
    A = np.rint(fft.irfft(f, nfft, axis=1, workers=-1)[:, :B])   # A[d] = Σ_b c_b c_{b+d}, integers
    A[:, 1:] *= 2.0                                                 # lags d and -d
    n = counts.sum(axis=1)
    grid = bin_ms * np.logspace(0, np.log10(max(B / 4.0, 1.0)), 64)
    lag = bin_ms * np.arange(B)

    def gauss(s):
        e = lag[None, :] ** 2 / (2 * s[:, None] ** 2)
        # exact zeros instead of denormals (which slow the matrix product down)
        return np.where(e < 700.0, np.exp(-np.minimum(e, 700.0)), 0.0) / (np.sqrt(2 * np.pi) * s[:, None])

    k1, k2 = gauss(grid), gauss(np.sqrt(2) * grid)                  # (W, B)
    # Σ_ij k2 - 2 Σ_i≠j k1 = A·k2 - 2 (A·k1 - n k1(0))
    cost = A @ (k2 - 2.0 * k1).T + 2.0 * n[:, None] * k1[:, 0][None, :]   # (R, W)
    best = grid[np.argmin(cost, axis=1)]
    return np.where(n > 1, best, np.nan), grid


def _gauss_smooth(counts: np.ndarray, sigma_bins: np.ndarray) -> np.ndarray:
    """Gaussian smoothing per row (SD ``sigma_bins`` in bins), edge-corrected.

    Each row is convolved with a unit-sum Gaussian sampled at the bins and
    truncated at ±5 SD (at most the window), zero outside the window, and
    divided by the kernel mass that falls inside the window.  All rows at once
    through one real FFT.
    """
    from scipy import fft

    R, B = counts.shape
    out = np.full(counts.shape, np.nan)
    ok = np.isfinite(sigma_bins) & (sigma_bins > 0)
    if not ok.any():
        return out
    s = sigma_bins[ok]
    half = np.minimum(np.ceil(5 * s), B - 1).astype(int)
    H = int(half.max())
    u = np.arange(-H, H + 1)
    ker = np.exp(-u[None, :] ** 2 / (2 * s[:, None] ** 2)) * (np.abs(u)[None, :] <= half[:, None])
    ker /= ker.sum(axis=1, keepdims=True)
    n = fft.next_fast_len(B + 2 * H, real=True)
    num = fft.irfft(fft.rfft(counts[ok], n, axis=1, workers=-1) * fft.rfft(ker, n, axis=1, workers=-1),
                    n, axis=1, workers=-1)[:, H:H + B]
    # kernel mass inside the window at bin i: Σ ker[u] over -i <= u <= B-1-i
    cum = np.concatenate([np.zeros((len(s), 1)), np.cumsum(ker, axis=1)], axis=1)
    i = np.arange(B)
    hi = np.clip(B - 1 - i + H, -1, 2 * H) + 1
    lo = np.clip(-i + H, 0, 2 * H + 1)
    out[ok] = num / (cum[:, hi] - cum[:, lo])
    return out


def _ds_smoothed(counts, area_counts, n_neurons, d) -> xr.Dataset:
    b = d["bin_ms"]
    area = _area_index()
    n_area = np.bincount(area, weights=n_neurons, minlength=len(AREAS))
    if d["smooth_sigma_ms"] == "auto":
        sig, _ = _ss_cost_sigma(counts, b)
        asig, _ = _ss_cost_sigma(area_counts, b)
        rule = ("per series, the fixed bandwidth minimising the Shimazaki-Shinomoto (2010) cost, "
                "log grid of 64 widths from one bin to a quarter of the window, spikes at bin centres")
    else:
        sig = np.full(len(counts), float(d["smooth_sigma_ms"]))
        asig = np.full(len(area_counts), float(d["smooth_sigma_ms"]))
        rule = "fixed"
    with np.errstate(invalid="ignore", divide="ignore"):
        rate = _gauss_smooth(counts, sig / b) / (n_neurons[:, None] * b / 1000.0)
        arate = _gauss_smooth(area_counts, asig / b) / (n_area[:, None] * b / 1000.0)
    rate[counts.sum(1) == 0] = 0.0
    arate[area_counts.sum(1) == 0] = 0.0
    t = _time_coord(d)
    da = from_flat_vector(rate, name="rate").rename(dim_0="time").assign_coords(time=t)
    da.attrs.update(units="spikes/s", long_name="population rate (Gaussian kernel)")
    ds = xr.Dataset({
        "rate": da,
        "area_rate": _area_da(arate, "area_rate", "spikes/s", "area rate (Gaussian kernel)",
                              dims=("area", "time"), coords={"time": t}),
        "sigma": _pop_da(sig, "sigma", "ms", "Gaussian kernel SD"),
        "area_sigma": _area_da(asig, "area_sigma", "ms", "Gaussian kernel SD of the area series"),
    })
    ds["time"].attrs.update(units="ms", long_name="time (bin centre)")
    ds.attrs.update(_ts_attrs(d), kernel="gaussian", sigma_rule=rule,
                    smoothing=("binned counts convolved with a unit-sum Gaussian sampled at the bins "
                               "(±5 SD), divided by the kernel mass inside the window (no droop at the "
                               "edges); silent series are 0"))
    return ds


def _ds_synchrony(counts, area_counts, d) -> xr.Dataset:
    with np.errstate(invalid="ignore", divide="ignore"):
        s = counts.std(axis=1) / counts.mean(axis=1)
        a = area_counts.std(axis=1) / area_counts.mean(axis=1)
    ds = xr.Dataset({
        "synchrony": _pop_da(s, "synchrony", "1", "CV of the binned population count (SD/mean over bins)"),
        "area_synchrony": _area_da(a, "area_synchrony", "1", "CV of the binned area count"),
    })
    ds.attrs.update(_ts_attrs(d), definition=("SD / mean (ddof 0) over the bins of the rate time series; "
                                              "NaN for a population without spikes (dynamics.md §C.6)"))
    return ds


def _ds_irregularity(m, n_neurons, d) -> xr.Dataset:
    with np.errstate(invalid="ignore", divide="ignore"):
        lvr = m["lvr_sum"] / n_neurons
    ds = xr.Dataset({
        "lvr": _pop_da(lvr, "lvr", "1", "revised local variation LvR, mean over all simulated neurons",
                       window="[t_min, t_max): spikes at exactly t_min count, at t_max not (dynamics.md §C.9)"),
        "n_lvr_neurons": _pop_da(m["n_lvr_neurons"], "n_lvr_neurons", "1", "neurons with >= 2 ISIs (LvR)"),
        "cv_isi": _pop_da(m["cv_isi"], "cv_isi", "1",
                          "CV of inter-spike intervals, mean over neurons with >= 1 ISI",
                          window="(t_min, t_max), both ends open (dynamics.md §C.8)"),
        "n_cv_neurons": _pop_da(m["n_cv_neurons"], "n_cv_neurons", "1", "neurons with >= 1 ISI (CV ISI)"),
    })
    ds.attrs.update(_window_attrs(d), R_ms=d["R_ms"], definition=(
        "LvR = 3/(n-1) Σ_k (1 - 4 I_k I_k+1/(I_k + I_k+1)^2)(1 + 4R/(I_k + I_k+1)) per neuron with n >= 2 "
        "ISIs (Shinomoto et al. 2009), 0 for the others, averaged over the floor(N) simulated neurons "
        "(upstream's Analysis class; its M2E script divides by round(N)). Each neuron's spikes are sorted "
        "by time first, so the result does not depend on the recording order (decisions.md). "
        "CV ISI = SD/mean (ddof 0) of a neuron's ISIs; 0 for a population without ISIs"))
    return ds


def _ds_rate_distribution(m, n_neurons, d) -> xr.Dataset:
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
        "mean": _pop_da(mean, "mean", "spikes/s", "mean single-neuron rate (equals rates.rate)"),
        "sd": _pop_da(sd, "sd", "spikes/s", "SD (ddof 0) of single-neuron rates"),
        "fraction_silent": _pop_da(silent, "fraction_silent", "1", "fraction of neurons without spikes"),
    })
    ds["rate"].attrs.update(units="spikes/s", long_name="single-neuron rate")
    ds.attrs.update(_window_attrs(d), binning=binning, rate_bin_edges=np.asarray(edges).tolist(),
                    definition=("spikes of each simulated neuron in (t_min, t_max) / (t_max - t_min), every "
                                "spike counted (upstream's create_pop_rate_dists drops one spike of every "
                                "spiking neuron but the first; docs/upstream-differences.md)"))
    return ds


def _ds_correlation(m, d) -> xr.Dataset:
    ds = xr.Dataset({
        "corrcoef": _pop_da(m["corrcoef"], "corrcoef", "1",
                            "mean pairwise Pearson correlation coefficient of binned spike counts"),
        "n_corr_neurons": _pop_da(m["n_corr_neurons"], "n_corr_neurons", "1",
                                  "neurons entering the correlation coefficient"),
    })
    ds.attrs.update(_window_attrs(d), bin_ms=d["cc_bin_ms"], n_neurons_max=d["cc_max_neurons"],
                    id_span=d["cc_id_span"], definition=(
                        f"bins of {d['cc_bin_ms']:g} ms from t_min to t_max, the last bin closed (a spike at "
                        f"exactly t_max counts; np.histogram edges). Neurons: ids from the first neuron of the "
                        f"population that spiked at any time to +{d['cc_id_span']}, minus those with a constant "
                        f"binned train, the first {d['cc_max_neurons']} of the rest (upstream's M2E choice). "
                        "Mean of the off-diagonal coefficients (NaN -> 0 cannot occur after the constant "
                        "trains are dropped); NaN where fewer than 2 neurons are active (dynamics.md §C.7)"))
    return ds


def experimental_fc(*, block: Literal["first", "second"] = "second", data_dir=None) -> xr.DataArray:
    """Experimental functional connectivity (macaque resting-state fMRI) of the 32 areas.

    Reads ``Fig8_exp_func_conn.csv`` (Babapoor-Farrokhran et al. 2013, fetched via
    :func:`mam_xr.data.fetch`): a 154 × 154 matrix over 77 area names listed
    twice (two hemispheres).  ``block="second"`` (default) is what upstream's
    parser keeps; MSTl is included (upstream's ``MSTI`` typo dropped it).

    Returns
    -------
    xr.DataArray (area, source_area), Pearson r, symmetric, diagonal 0.
    """
    return _experimental_fc(block, None if data_dir is None else str(data_dir)).copy()


@functools.lru_cache(maxsize=4)
def _experimental_fc(block: str, data_dir: str | None) -> xr.DataArray:
    from .data import fetch

    if block not in ("first", "second"):
        raise ParameterError(invalid("block", block, "'first' or 'second'"))
    path = fetch("Fig8_exp_func_conn.csv", data_dir=data_dir)
    lines = [ln for ln in Path(path).read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    names = lines[0].split("\t")
    mat = np.array([[float(x) for x in ln.split("\t")] for ln in lines[1:]])
    if mat.shape != (len(names), len(names)) or len(names) % 2:
        raise DataError(f"{path}: expected a square matrix under a header of names, got {mat.shape}")
    h = len(names) // 2
    sl = slice(h, None) if block == "second" else slice(0, h)
    blk_names, blk = names[sl], mat[sl, sl]
    missing = [a for a in AREAS if a not in blk_names]
    if missing:
        raise DataError(f"{path}: areas {missing} are missing from the experimental FC")
    idx = [blk_names.index(a) for a in AREAS]
    return xr.DataArray(blk[np.ix_(idx, idx)], dims=("area", "source_area"),
                        coords={"area": list(AREAS), "source_area": list(AREAS)}, name="fc_experimental",
                        attrs={"units": "1", "long_name": "experimental FC (resting-state fMRI, Pearson r)",
                               "source": "Fig8_exp_func_conn.csv (Babapoor-Farrokhran et al. 2013), "
                                         f"{block} hemisphere block"})


def _ds_fc(rate_flat: np.ndarray, n_neurons, structure: xr.Dataset, tau_s: float, d) -> xr.Dataset:
    """Synaptic-input proxy and functional connectivity (dynamics.md §C.10, §C.11)."""
    W = np.abs(np.nan_to_num(to_flat_matrix(structure["weight_mean"])))
    K = np.nan_to_num(to_flat_matrix(structure["indegree"]))
    r = np.nan_to_num(rate_flat)
    drive = (W * K) @ r                                   # (254, time), pA·spikes/s
    u = d["bin_ms"] * np.arange(d["fc_kernel_samples"])
    ker = np.exp(-u / tau_s)
    from scipy.signal import convolve

    syn = convolve(drive, ker[None, :], mode="same")      # np.convolve 'same' alignment, as upstream
    area = _area_index()
    n_area = np.bincount(area, weights=n_neurons, minlength=len(AREAS))
    asyn = _area_sum(syn * n_neurons[:, None])
    with np.errstate(invalid="ignore", divide="ignore"):
        asyn /= n_area[:, None]
        fc = np.corrcoef(asyn)
    t = _time_coord(d)
    exp_fc = experimental_fc(block=d["fc_exp_block"])
    a, b = fc.copy(), exp_fc.values.copy()
    np.fill_diagonal(a, 0.0)
    np.fill_diagonal(b, 0.0)
    ok = np.isfinite(a).all()
    sim = float(np.corrcoef(a.ravel(), b.ravel())[0, 1]) if ok else np.nan
    sda = from_flat_vector(syn, name="synaptic_input").rename(dim_0="time").assign_coords(time=t)
    sda.attrs.update(units="pA/s", long_name="synaptic-input proxy Σ_s |W| K r_s, filtered")
    ds = xr.Dataset({
        "synaptic_input": sda,
        "area_synaptic_input": _area_da(asyn, "area_synaptic_input", "pA/s",
                                        "area synaptic-input proxy (neuron-weighted mean)",
                                        dims=("area", "time"), coords={"time": t}),
        "fc": xr.DataArray(fc, dims=("area", "source_area"),
                           coords={"area": list(AREAS), "source_area": list(AREAS)},
                           attrs={"units": "1", "long_name": "simulated FC: zero-lag Pearson r of the area "
                                                              "synaptic-input series"}),
        "fc_experimental": exp_fc,
        "fc_similarity": xr.DataArray(sim, attrs={"units": "1", "long_name": (
            "Pearson r between simulated and experimental FC, flattened with zero diagonals")}),
    })
    ds["time"].attrs.update(units="ms", long_name="time (bin centre)")
    ds.attrs.update(_ts_attrs(d), tau_syn_ex_ms=tau_s, kernel_samples=d["fc_kernel_samples"], definition=(
        "drive_t = Σ over all 254 source populations |W_ts| K_ts r_s(t) with r_s the binned rate series "
        "(no external input), filtered with exp(-u/tau_syn_ex) at u = 0, bin, ..., "
        f"{d['fc_kernel_samples'] - 1} bins ('same' mode, as np.convolve); area series = neuron-weighted "
        "mean over its populations; FC = Pearson correlation matrix of the 32 area series; "
        "source_area is the second area of the (symmetric) matrix"))
    return ds


# ======================================================================================
# Caching in the run store
# ======================================================================================

def _analysis_group(name: str) -> str:
    return f"analysis/{name}"


def _definition_json(defn: dict) -> str:
    return json.dumps(defn, sort_keys=True, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o))


def read_analysis(run, name: str) -> xr.Dataset | None:
    """A cached statistic of a run store, or None if it was never computed.

    (Store layout helper for ``analysis/<name>/``; it belongs next to
    :mod:`mam_xr.store`'s readers and may move there.)
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        run = _open(run, allow_incomplete=True)
    if name not in STATISTICS:
        raise ParameterError(invalid("name", name, f"one of {STATISTICS}"))
    if "analysis" not in run.root or name not in run.root["analysis"]:
        return None
    try:
        ds = xr.open_zarr(run.path, group=_analysis_group(name), consolidated=False,
                          zarr_format=3).load()
    except Exception as exc:  # noqa: BLE001 - a damaged cache is recomputed
        raise StoreError(f"run store {run.path!r}: analysis/{name} cannot be read: {exc}") from exc
    # the fixed vocabulary is not stored (fewer Zarr arrays): restore it
    names = {"area": list(AREAS), "pop": list(POPS), "source_area": list(AREAS)}
    ds = ds.assign_coords({c: np.array(v, dtype=str) for c, v in names.items() if c in ds.dims})
    if "area" in ds.dims and "pop" in ds.dims:
        ds["exists"] = exists()
    for v in ds.variables:
        ds[v].encoding = {}
    return ds


def _write_analysis(run, name: str, ds: xr.Dataset, defn: dict) -> None:
    """Write one statistic to ``analysis/<name>/`` with its definition (JSON) in attrs."""
    # area/pop names and the exists mask are fixed vocabulary (mam_xr.flat): not written
    out = ds.drop_vars(["exists", "area", "pop", "source_area"], errors="ignore")
    out.attrs = dict(out.attrs, definition=_definition_json(defn))
    for v in out.variables:
        out[v].encoding = {}
    out.to_zarr(run.path, group=_analysis_group(name), mode="w", consolidated=False, zarr_format=3)


def _cached(run, name: str, defn: dict) -> xr.Dataset | None:
    try:
        ds = read_analysis(run, name)
    except StoreError:
        return None
    if ds is None or ds.attrs.get("definition") != _definition_json(defn):
        return None
    return ds


# ======================================================================================
# analyze
# ======================================================================================

def analyze(runs, statistics: Iterable[str] | str | None = None, *, recompute: bool = False,
            store: bool = True, chunk_spikes: int | None = None, memory_limit: int | str | None = None,
            scheduler: str | None = None, allow_incomplete: bool = False,
            dim: str = "run", coords: Iterable | None = None,
            **definition) -> dict[str, xr.Dataset]:
    """All spike statistics of one run (or several) in one call, cached in the run store.

    Parameters
    ----------
    runs : path, RunStore, or a list of them
        Run stores made by :func:`mam_xr.simulation.simulate` or :func:`import_upstream`.
    statistics : str or iterable of str, optional
        Subset of :data:`STATISTICS` (default: all).
    recompute : bool, default False
        Ignore cached results.
    store : bool, default True
        Write new results to ``analysis/<name>/`` of each run store.
    chunk_spikes : int, optional
        Most spikes one Dask task holds (default 4e6, ≈ 0.3 GB of working memory).
    memory_limit : int or str, optional
        Memory per Dask worker thread ("200MB"); sets ``chunk_spikes`` so that a task
        stays within about a third of it.
    scheduler : str, optional
        Passed to ``dask.compute`` (default: the active distributed client, else threads).
    allow_incomplete : bool, default False
        Analyse the committed segments of a run that is not complete.
    dim, coords : optional
        For a list of runs: the name of the new dimension (default ``"run"``; a sweep
        uses its parameter, e.g. ``dim="chi", coords=[1.0, 1.9]``) and its coordinate
        values (default: each run's label, or its path if labels repeat).
    **definition
        Definition parameters, see :data:`DEFAULTS` (``t_min_ms``, ``t_max_ms``, ``bin_ms``,
        ``smooth_sigma_ms``, ``R_ms``, ``cc_bin_ms``, ``cc_max_neurons``, ``cc_id_span``,
        ``rate_bins``, ``fc_kernel_samples``, ``fc_exp_block``).

    Returns
    -------
    dict of str -> xr.Dataset
        One Dataset per statistic (see docs/analysis.md); for a list of runs each has a
        leading ``run`` dimension (coordinate: the run's label or path).

    Raises
    ------
    ParameterError
        Unknown statistic or definition parameter, a window outside the simulated time.
    StoreError
        A missing, foreign, damaged or incomplete run store.
    """
    import dask

    single = isinstance(runs, (str, Path)) or not isinstance(runs, (list, tuple))
    run_list = [runs] if single else list(runs)
    if not run_list:
        raise ParameterError(invalid("runs", runs, "a run store or a non-empty list of run stores"))
    if statistics is None:
        names = list(STATISTICS)
    else:
        names = [statistics] if isinstance(statistics, str) else list(statistics)
        for n in names:
            if n not in STATISTICS:
                raise ParameterError(invalid("statistics", n, f"names from {STATISTICS}"))
    opened = [_open(r, allow_incomplete=allow_incomplete) for r in run_list]
    mem = _parse_memory(memory_limit)
    if chunk_spikes is None:
        chunk_spikes = DEFAULT_CHUNK_SPIKES if mem is None else max(10_000, mem // (3 * _BYTES_PER_SPIKE))
    if int(chunk_spikes) < 1:
        raise ParameterError(invalid("chunk_spikes", chunk_spikes, "a positive number of spikes"))

    results: list[dict[str, xr.Dataset]] = []
    pending = []          # (run index, run, defs, names to compute, delayed parts)
    for i, run in enumerate(opened):
        d = _resolve_definition(run, definition)
        fp = _fingerprint(run)
        defs = {n: _definition_of(n, d, run, fp) for n in names}
        res = {}
        if not recompute:
            for n in names:
                ds = _cached(run, n, defs[n])
                if ds is not None:
                    res[n] = ds
        todo = [n for n in names if n not in res]
        if "functional_connectivity" in todo:
            _require_structure(run)     # fail before the pass over the spikes
        results.append(res)
        if todo:
            pending.append((i, run, d, defs, todo))

    if pending:
        from dask import delayed

        n_workers = 1 if scheduler in ("sync", "synchronous", "single-threaded") else _n_workers()
        tasks = []
        for (_, run, d, _, todo) in pending:
            counts = _pop_counts(run)
            groups = plan_groups(counts, int(chunk_spikes), min_groups=n_workers)
            parts = frozenset(x for n in todo for x in _PARTS[n])
            n_common = run._n_common()
            n_all = np.asarray(run.root["spikes"].attrs["n_neurons"], dtype=np.int64)
            group_idx = [_group_flat_indices(a, p) for a, p in groups]
            tasks.append([delayed(_run_group, pure=False)(run, idx, n_common, n_all[idx], d, parts)
                          for idx in group_idx])
        computed = dask.compute(*tasks, scheduler=scheduler) if scheduler else dask.compute(*tasks)
        for (i, run, d, defs, todo), parts in zip(pending, computed):
            new = _build(run, list(parts), d, todo)
            for n, ds in new.items():
                ds.attrs["definition"] = _definition_json(defs[n])
                if store:
                    try:
                        _write_analysis(run, n, ds, defs[n])
                    except OSError as exc:   # e.g. a read-only shared store: results stay valid
                        warnings.warn(f"run store {run.path!r}: analysis/{n} could not be cached ({exc})",
                                      stacklevel=2)
                results[i][n] = ds

    if single:
        return {n: results[0][n] for n in names}
    if coords is not None:
        run_coord = list(coords)
        if len(run_coord) != len(opened):
            raise ParameterError(invalid("coords", coords, f"{len(opened)} values, one per run"))
    else:
        run_coord = [r.attrs.get("label") or r.path for r in opened]
        if len(set(run_coord)) < len(run_coord):
            run_coord = [r.path for r in opened]
    out = {}
    for n in names:
        dss = [res[n] for res in results]
        out[n] = xr.concat(dss, dim=xr.DataArray(run_coord, dims=dim, name=dim),
                           join="outer", combine_attrs="drop_conflicts", fill_value=_fill(n))
    return out


def _fill(name):
    return 0.0 if name == "rate_distribution" else np.nan


def _n_workers() -> int:
    try:
        from distributed import get_client

        client = get_client()
        return max(1, sum(client.nthreads().values()))
    except Exception:  # noqa: BLE001 - no distributed client: the local threads
        import os

        return max(1, os.cpu_count() or 1)


def _require_structure(run) -> None:
    if "structure" not in run.root or "weight_mean" not in run.root["structure"]:
        raise StoreError(f"run store {run.path!r} has no structure: the functional connectivity needs "
                         "weight_mean and indegree (import_upstream(..., structure=...))")


def _structure_weights(run) -> xr.Dataset:
    """``weight_mean`` and ``indegree`` of the run's structure group (read directly:
    the full checked load of :func:`mam_xr.store.load_structure` is not needed here)."""
    _require_structure(run)
    ds = xr.open_zarr(run.path, group="structure", consolidated=False, zarr_format=3)
    return ds[["weight_mean", "indegree"]].load()


def _build(run, parts, d, todo) -> dict[str, xr.Dataset]:
    n_neurons = np.asarray(run.root["spikes"].attrs["n_neurons"], dtype=np.int64)
    m = _merge_groups(parts, n_neurons)
    nf = n_neurons.astype(float)
    out: dict[str, xr.Dataset] = {}
    ts = counts = area_counts = None
    if {"rate_time_series", "smoothed_rate", "synchrony", "functional_connectivity"} & set(todo):
        ts, counts, area_counts = _ds_rate_ts(m, nf, d)
    for n in todo:
        if n == "rates":
            out[n] = _ds_rates(m, nf, d)
        elif n == "rate_time_series":
            out[n] = ts
        elif n == "smoothed_rate":
            out[n] = _ds_smoothed(counts, area_counts, nf, d)
        elif n == "synchrony":
            out[n] = _ds_synchrony(counts, area_counts, d)
        elif n == "irregularity":
            out[n] = _ds_irregularity(m, nf, d)
        elif n == "rate_distribution":
            out[n] = _ds_rate_distribution(m, n_neurons, d)
        elif n == "correlation":
            out[n] = _ds_correlation(m, d)
        elif n == "functional_connectivity":
            rate_flat = to_flat_vector(ts["rate"])
            out[n] = _ds_fc(rate_flat, nf, _structure_weights(run), _tau_syn_ex(run), d)
    for ds in out.values():
        ds.attrs.setdefault("run", run.path)
        ds.attrs["history"] = (f"{time.strftime('%Y-%m-%dT%H:%M:%S')} mam_xr.analysis.analyze "
                               f"({ANALYSIS_VERSION}) on {run.attrs.get('label') or run.path}")
        ds["exists"] = exists()
    return out


# ======================================================================================
# Lazy reading
# ======================================================================================

def lazy_spikes(run, *, area=None, pop=None, t_start_ms: float | None = None,
                t_stop_ms: float | None = None, chunk_spikes: int = DEFAULT_CHUNK_SPIKES):
    """Spikes of a selection as Dask arrays, one chunk per group of populations.

    Nothing is read until computed; each chunk reads only the Zarr chunks that hold
    its populations.  Within a chunk, spikes are in storage order (by segment, then
    population, then time).

    Returns
    -------
    dict with Dask arrays ``times`` (ms, float64), ``senders`` (neuron index in
    its population, int32) and ``population`` (flat index 0..253, int16),
    chunked alike (chunk sizes unknown until computed).
    """
    import dask.array as da
    from dask import delayed

    run = _open(run)
    sel = run._pop_indices(area, pop)
    if len(sel) == 0:
        raise ParameterError(invalid("area/pop", (area, pop), "a selection with at least one population"))
    counts = np.zeros(N_POPULATIONS, dtype=np.int64)
    counts[sel] = _pop_counts(run)[sel]
    chunks = []
    for areas, pops in plan_groups(counts, chunk_spikes):
        idx = [i for i in _group_flat_indices(areas, pops) if i in set(sel.tolist())]
        if not idx:
            continue
        part = delayed(_read_part, pure=True)(run.path, idx, t_start_ms, t_stop_ms)
        chunks.append(part)
    arrays = {}
    for k, (key, dtype) in enumerate((("times", np.float64), ("senders", np.int32), ("population", np.int16))):
        arrays[key] = da.concatenate([da.from_delayed(c[k], shape=(np.nan,), dtype=dtype) for c in chunks])
    return arrays


def _read_part(path, idx, t0, t1):
    from .store import open_run

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        run = open_run(path, allow_incomplete=True)
    idx = np.asarray(idx)
    times, senders, pops = [], [], []
    for run_idx in np.split(idx, np.flatnonzero(np.diff(idx) != 1) + 1):   # consecutive runs
        pop, snd, st = _read_group(run, run_idx)
        keep = np.ones(len(st), dtype=bool)
        if t0 is not None:
            keep &= st >= _k.steps_at_least(float(t0), run.dt)
        if t1 is not None:
            keep &= st < _k.steps_at_least(float(t1), run.dt)
        times.append(_k._to_ms(st[keep], _k.make_windows(dt=run.dt, t_min=0.0, t_max=1.0,
                                                           bin_ms=1.0, cc_bin_ms=1.0)))
        senders.append(snd[keep])
        pops.append((run_idx[0] + pop[keep]).astype(np.int16))
    return np.concatenate(times), np.concatenate(senders), np.concatenate(pops)


# ======================================================================================
# Importing upstream recordings
# ======================================================================================

def _read_gids(path) -> dict[str, tuple[int, int]]:
    """network_gids.json ({label: [first, last]}) or upstream's network_gids.txt
    (rows ``area, population, first, last``)."""
    path = Path(path)
    if not path.exists():
        raise DataError(invalid("gids", str(path), "an existing network_gids.json/.txt file"))
    text = path.read_text()
    if path.suffix == ".json":
        raw = json.loads(text)
        return {k: (int(v[0]), int(v[1])) for k, v in raw.items()}
    out = {}
    for line in text.splitlines():
        tok = [t for t in re.split(r"[,\s]+", line.strip()) if t]
        if len(tok) >= 4 and tok[-1].lstrip("-").isdigit() and tok[-2].lstrip("-").isdigit():
            out[f"{tok[0]}-{tok[1]}"] = (int(tok[-2]), int(tok[-1]))
    return out


def _read_dat(path) -> np.ndarray:
    """(n, 2) float array [sender, time ms] of one NEST ASCII file (.dat NEST 3, .gdf NEST 2)."""
    import pandas as pd

    skip = 0
    with open(path) as fh:
        for line in fh:
            s = line.strip()
            if not s or s.startswith("#") or not (s[0].isdigit() or s[0] in "+-."):
                skip += 1
                continue
            break
    df = pd.read_csv(path, sep=r"\s+", skiprows=skip, header=None, usecols=[0, 1],
                     names=["sender", "time"], dtype={"sender": np.int64, "time": np.float64},
                     engine="c")
    return df.to_numpy(dtype=np.float64)


def import_upstream(source, store_path, *, t_sim_ms: float, gids=None, dt_ms: float = 0.1,
                    structure: xr.Dataset | None = None, params: dict | str | None = None,
                    label: str = "", overwrite: bool = False):
    """Turn upstream recordings into a mam_xr run store.

    Parameters
    ----------
    source : path or list of paths
        Upstream's recordings: a directory holding ``*-spikes-*.dat`` (NEST 3) or
        ``*.gdf`` (NEST 2) files, a list of such files, or an ``.npz`` with one
        (n, 2) array [NEST id, time ms] per population label (the layout of
        ../shared/reference ``spikes_sim_threads*.npz``).
    store_path : path
        The run store to create.
    t_sim_ms : float
        Simulated time (ms); the store holds one segment [0, t_sim_ms].
    gids : path, optional
        ``network_gids.txt`` or ``network_gids.json`` ({label: [first, last]});
        default: looked up next to ``source``.  It gives the neurons simulated per
        population, last - first + 1 = floor(N).
    dt_ms : float, default 0.1
        Simulation resolution; every spike time must lie on this grid.
    structure : xr.Dataset, optional
        The structure Dataset of the run (needed for the functional connectivity).
    params, label : optional
        Stored in the run's attrs.

    Returns
    -------
    mam_xr.store.RunStore

    Notes
    -----
    sender = NEST id - first id of the population.  Works in any recording order
    (several virtual processes): the writer sorts each population by time.
    """
    from .store import SpikeWriter, create_run, open_run, set_status

    if not (isinstance(t_sim_ms, (int, float)) and t_sim_ms > 0):
        raise ParameterError(invalid("t_sim_ms", t_sim_ms, "the simulated time in ms (> 0)"))
    if not (isinstance(dt_ms, (int, float)) and dt_ms > 0):
        raise ParameterError(invalid("dt_ms", dt_ms, "the simulation step in ms (> 0)"))
    paths = [Path(p) for p in source] if isinstance(source, (list, tuple)) else [Path(source)]
    for p in paths:
        if not p.exists():
            raise DataError(invalid("source", str(p), "an existing upstream recording (file or directory)"))
    if gids is None:
        here = paths[0] if paths[0].is_dir() else paths[0].parent
        cands = [here / "network_gids.txt", here / "network_gids.json"]
        found = [c for c in cands if c.exists()]
        if not found:
            raise DataError(invalid("gids", None, f"a network_gids.txt/.json; none found in {here}"))
        gids = found[0]
    ranges = _read_gids(gids)
    labels = population_labels()
    miss = [lab for lab in labels if lab not in ranges]
    if miss:
        raise DataError(f"{gids}: no id range for populations {miss[:5]}{'...' if len(miss) > 5 else ''}")
    first = np.array([ranges[lab][0] for lab in labels], dtype=np.int64)
    last = np.array([ranges[lab][1] for lab in labels], dtype=np.int64)
    n_neurons = last - first + 1

    if len(paths) == 1 and paths[0].suffix == ".npz":
        with np.load(paths[0], allow_pickle=False) as f:
            arrays = [np.asarray(f[lab], dtype=np.float64).reshape(-1, 2) if lab in f.files
                      else np.zeros((0, 2)) for lab in labels]
        data = np.concatenate(arrays)
    else:
        files = []
        for p in paths:
            files += sorted(p.glob("*-spikes-*.dat")) + sorted(p.glob("*-spikes-*.gdf")) if p.is_dir() else [p]
        if not files:
            raise DataError(invalid("source", [str(p) for p in paths], "NEST spike files (*-spikes-*.dat/.gdf)"))
        data = np.concatenate([_read_dat(f) for f in files])
    ids = data[:, 0].astype(np.int64)
    tms = data[:, 1]
    steps = np.rint(tms / dt_ms).astype(np.int64)
    if len(tms) and np.max(np.abs(steps * dt_ms - tms)) > 1e-6 * max(1.0, float(np.max(np.abs(tms)))):
        raise DataError(invalid("dt_ms", dt_ms, "the resolution of the recorded spike times (a time is off-grid)"))
    if len(tms) and (steps.min() < 0 or tms.max() > t_sim_ms + 1e-9):
        raise DataError(invalid("t_sim_ms", t_sim_ms, f"a simulated time covering every spike (latest {tms.max()} ms)"))
    order = np.argsort(first)
    pos = np.searchsorted(first[order], ids, side="right") - 1
    pop = order[np.clip(pos, 0, None)]
    bad = (pos < 0) | (ids > last[pop])
    if bad.any():
        raise DataError(f"{int(bad.sum())} spikes have NEST ids outside every population's range in {gids} "
                        f"(e.g. id {int(ids[bad][0])})")
    senders = ids - first[pop]
    root = create_run(store_path, structure=structure, dt=float(dt_ms), t_sim=float(t_sim_ms),
                      n_segments_planned=1, params=params, label=label, overwrite=overwrite,
                      n_neurons=n_neurons, engine="upstream",
                      extra_attrs={"imported_from": [str(p) for p in paths], "gids_file": str(gids)})
    if structure is None:
        # a run store needs a structure group; without one, FC is unavailable
        root.create_group("structure").attrs["missing"] = True
    w = SpikeWriter(root)
    w.append_segment(steps, senders, pop, 0.0, float(t_sim_ms))
    set_status(root, "complete")
    return open_run(store_path)
