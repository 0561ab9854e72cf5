"""Flat 254-population arrays as labelled DataArrays, and sums over areas."""

from __future__ import annotations

import numpy as np
import xarray as xr

from ..flat import AREAS, FLAT_AREA_INDEX, from_flat_vector

__all__ = ["pop_da", "area_da", "area_index", "area_sum", "area_neurons"]


def pop_da(values, name, units, long_name, **extra) -> xr.DataArray:
    """Flat 254 vector -> (area, pop) DataArray with NaN for absent populations."""
    da = from_flat_vector(np.asarray(values, dtype=float), name=name)
    da.attrs.update(units=units, long_name=long_name, **extra)
    return da


def area_da(values, name, units, long_name, dims=("area",), coords=None) -> xr.DataArray:
    """Per-area values (area[, ...]) as a DataArray with units and long_name."""
    c = {"area": list(AREAS)}
    c.update(coords or {})
    return xr.DataArray(np.asarray(values, dtype=float), dims=dims,
                        coords={k: v for k, v in c.items() if k in dims}, name=name,
                        attrs={"units": units, "long_name": long_name})


_AREA_STARTS = np.flatnonzero(np.diff(np.concatenate([[-1], FLAT_AREA_INDEX])))


def area_index() -> np.ndarray:
    """Area index of each of the 254 flat populations."""
    return FLAT_AREA_INDEX.copy()


def area_sum(x: np.ndarray) -> np.ndarray:
    """Sum of flat (254, ...) rows over the populations of each area (area-major order)."""
    return np.add.reduceat(x, _AREA_STARTS, axis=0)


def area_neurons(n_neurons: np.ndarray) -> np.ndarray:
    """Neurons per area of a flat (254,) neuron count."""
    return np.bincount(FLAT_AREA_INDEX, weights=n_neurons, minlength=len(AREAS))
