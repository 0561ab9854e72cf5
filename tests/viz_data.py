"""Reference-derived inputs of the figure and report tests (tests/test_viz.py, tests/test_report.py).

The Datasets are built from ../shared/reference with the variable names and
attrs of mam_xr.analysis, so the figures see what a real run gives them.
"""

from __future__ import annotations

import functools

import numpy as np
import xarray as xr

from conftest import load_reference, reference_structure
from mam_xr.flat import AREAS, from_flat_vector

#: Bin centres (ms) of the reference 1-ms rate series (500.5 + k ... 501.5 + k), as mam_xr.analysis.
T_BINS = 501.0 + np.arange(1500)


@functools.lru_cache(maxsize=1)
def analysis_ref() -> dict:
    return load_reference("analysis_sim_threads1.npz")


@functools.lru_cache(maxsize=1)
def structure() -> xr.Dataset:
    return reference_structure("downscaled_tutorial")


def stats_dataset() -> xr.Dataset:
    """rate, corrcoef, lvr (area, pop) in one Dataset."""
    a = analysis_ref()
    return xr.Dataset({
        "rate": from_flat_vector(a["Analysis_pop_rates"], attrs={
            "units": "spikes/s", "long_name": "time-averaged population rate"}),
        "corrcoef": from_flat_vector(a["M2E_pop_corrcoeff"], attrs={
            "units": "1", "long_name": "correlation coefficient"}),
        "lvr": from_flat_vector(a["Analysis_pop_LvR"], attrs={"units": "1", "long_name": "LvR"}),
    })


def rate_time_series() -> xr.Dataset:
    """rate (area, pop, time) and area_rate (area, time), spikes/s, time in ms."""
    a = analysis_ref()
    pop = from_flat_vector(a["Analysis_rate_time_series_pop"]).rename(dim_0="time")
    area = xr.DataArray(a["Analysis_rate_time_series_area"], dims=("area", "time"),
                        coords={"area": list(AREAS)})
    ds = xr.Dataset({"rate": pop, "area_rate": area}).assign_coords(time=T_BINS)
    for v in ds.data_vars:
        ds[v].attrs.update(units="spikes/s", long_name="population rate (binned)")
    ds["time"].attrs.update(units="ms")
    return ds


def spikes() -> dict:
    """Reference spikes as {label: [neuron index in its population, time ms]}."""
    sp = load_reference("spikes_sim_threads1.npz")
    gids = load_reference("network_gids.json")
    return {k: np.c_[v[:, 0] - gids[k][0], v[:, 1]] for k, v in sp.items()}


def theory() -> xr.Dataset:
    th = load_reference("theory_downscaled_tutorial.npz")
    return xr.Dataset({"rate": from_flat_vector(th["final_rates"], attrs={
        "units": "spikes/s", "long_name": "rate at the end of the integration"})})


def fc_dataset() -> xr.Dataset:
    """fc: a stand-in simulated FC (correlation of the area rate series); fc_experimental: the data."""
    from mam_xr.analysis import experimental_fc
    a = analysis_ref()
    sim = xr.DataArray(np.corrcoef(a["Analysis_rate_time_series_area"]), dims=("area", "source_area"),
                       coords={"area": list(AREAS), "source_area": list(AREAS)},
                       attrs={"units": "1", "long_name": "simulated FC"})
    return xr.Dataset({"fc": sim, "fc_experimental": experimental_fc()})


def analysis_dict() -> dict[str, xr.Dataset]:
    """The statistics as mam_xr.analysis.analyze returns them (one Dataset per statistic)."""
    st = stats_dataset()
    ts = rate_time_series()
    return {"rates": st[["rate"]], "correlation": st[["corrcoef"]], "irregularity": st[["lvr"]],
            "rate_time_series": ts, "functional_connectivity": fc_dataset()}


#: The swept values of :func:`sweep_dataset`.
SWEEP_CHI = [1.0, 1.5, 1.9]


def sweep_dataset() -> xr.Dataset:
    """A χ sweep's combined Dataset (mam_xr.sweep names) from the reference statistics.

    Point k holds the reference values raised to the power 1 + k/4 (rates, LvR) or
    scaled (CC, synchrony), so every point and every population differs; the theory
    is the reference theory of the tutorial network scaled by 1 + k/10.
    """
    st = stats_dataset()
    th = from_flat_vector(load_reference("theory_downscaled_tutorial.npz")["final_rates"])
    chi = xr.DataArray(SWEEP_CHI, dims="chi", name="chi")
    k = xr.DataArray(np.arange(len(SWEEP_CHI)), dims="chi", coords={"chi": chi})
    ds = xr.Dataset({
        "rates_rate": st["rate"] ** (1 + k / 4),
        "irregularity_lvr": st["lvr"] ** (1 + k / 4),
        "correlation_corrcoef": st["corrcoef"] * (1 + k),
        "synchrony": (st["rate"] + 1.0) ** 0.5 * (1 + k / 2),
        "functional_connectivity_fc_similarity": xr.DataArray([0.21, 0.35, 0.18], dims="chi", coords={"chi": chi}),
        "theory_rate": th * (1 + k / 10),
    }).transpose("chi", "area", "pop")
    for name, units in (("rates_rate", "spikes/s"), ("theory_rate", "spikes/s")):
        ds[name].attrs["units"] = units
    return ds
