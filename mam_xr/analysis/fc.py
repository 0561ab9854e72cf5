"""Functional connectivity: the synaptic-input proxy of the areas and the experimental FC.

Public functions: :func:`experimental_fc`, :func:`fc_dataset`, :func:`tau_syn_ex`.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Literal

import numpy as np
import xarray as xr

from ..errors import DataError, ParameterError, invalid
from ..data import fetch
from ..flat import AREAS, from_flat_vector, to_flat_matrix
from .shapes import area_da, area_neurons, area_sum

__all__ = ["experimental_fc", "fc_dataset", "tau_syn_ex"]

def tau_syn_ex(run) -> float:
    """Excitatory synaptic time constant (ms) of a run's parameters (0.5 ms if absent)."""
    p = run.params
    try:
        return float(p["network"]["neuron"]["tau_syn_ex"])
    except (KeyError, TypeError):
        return 0.5  # the model's default


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


def fc_dataset(rate_flat: np.ndarray, n_neurons, structure: xr.Dataset, tau_s: float, d: dict,
               t: np.ndarray, attrs: dict) -> xr.Dataset:
    """Synaptic-input proxy and functional connectivity (docs/model.md eqs. A10-A12).

    ``rate_flat`` (254, time) binned rates, ``t`` their bin centres, ``attrs`` the
    time-series attrs of the result."""
    W = np.abs(np.nan_to_num(to_flat_matrix(structure["weight_mean"])))
    K = np.nan_to_num(to_flat_matrix(structure["indegree"]))
    r = np.nan_to_num(rate_flat)
    drive = (W * K) @ r                                   # (254, time), pA·spikes/s
    u = d["bin_ms"] * np.arange(d["fc_kernel_samples"])
    ker = np.exp(-u / tau_s)
    from scipy.signal import convolve

    syn = convolve(drive, ker[None, :], mode="same")      # np.convolve 'same' alignment, as upstream
    n_area = area_neurons(n_neurons)
    asyn = area_sum(syn * n_neurons[:, None])
    with np.errstate(invalid="ignore", divide="ignore"):
        asyn /= n_area[:, None]
        fc = np.corrcoef(asyn)
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
        "area_synaptic_input": area_da(asyn, "area_synaptic_input", "pA/s",
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
    ds.attrs.update(attrs, tau_syn_ex_ms=tau_s, kernel_samples=d["fc_kernel_samples"], definition=(
        "drive_t = Σ over all 254 source populations |W_ts| K_ts r_s(t) with r_s the binned rate series "
        "(no external input), filtered with exp(-u/tau_syn_ex) at u = 0, bin, ..., "
        f"{d['fc_kernel_samples'] - 1} bins ('same' mode, as np.convolve); area series = neuron-weighted "
        "mean over its populations; FC = Pearson correlation matrix of the 32 area series; "
        "source_area is the second area of the (symmetric) matrix (docs/model.md eqs. A10-A12)"))
    return ds
