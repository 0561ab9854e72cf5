"""Names of areas and populations, and upstream's flat 254-population view.

The labelled form (dims ``area``, ``pop``, ``source_area``, ``source_pop``) is
used everywhere in mam_xr.  Upstream works with vectors of the 254 existing
populations (area-major, population-minor, TH 4E/4I skipped) and with
254 x 255 target x source matrices whose last column is the external
(Poisson) input (spec/construction.md §1.3).  The functions here convert
between the two; use the flat form only for linear algebra and for
comparisons with upstream's outputs.
"""

from __future__ import annotations

import numpy as np
import xarray as xr

#: The 32 areas in upstream's ``complete_area_list`` order (construction.md §1.1).
AREAS: tuple[str, ...] = (
    "V1", "V2", "VP", "V3", "V3A", "MT", "V4t", "V4", "VOT", "MSTd", "PIP", "PO",
    "DP", "MIP", "MDP", "VIP", "LIP", "PITv", "PITd", "MSTl", "CITv", "CITd",
    "FEF", "TF", "AITv", "FST", "7a", "STPp", "STPa", "46", "AITd", "TH",
)

#: The 8 populations of an area, in upstream's order (construction.md §1.2).
POPS: tuple[str, ...] = ("23E", "23I", "4E", "4I", "5E", "5I", "6E", "6I")

#: Populations that do not exist: TH is agranular (construction.md §1.2).
ABSENT: frozenset[tuple[str, str]] = frozenset({("TH", "4E"), ("TH", "4I")})

N_POPULATIONS = len(AREAS) * len(POPS) - len(ABSENT)  # 254


def exists() -> xr.DataArray:
    """Boolean (area, pop) mask of the 254 populations that exist."""
    mask = np.ones((len(AREAS), len(POPS)), dtype=bool)
    for area, pop in ABSENT:
        mask[AREAS.index(area), POPS.index(pop)] = False
    return xr.DataArray(
        mask,
        dims=("area", "pop"),
        coords={"area": list(AREAS), "pop": list(POPS)},
        name="exists",
        attrs={"long_name": "population exists in the model", "units": "1"},
    )


_EXISTS_FLAT = exists().values.ravel()


def population_labels() -> list[str]:
    """Upstream's 254 population labels, e.g. ``"V1-23E"``, in flat order."""
    return [f"{a}-{p}" for a in AREAS for p in POPS if (a, p) not in ABSENT]


def is_excitatory(pop) -> np.ndarray:
    """True for excitatory populations (names ending in 'E')."""
    return np.char.endswith(np.asarray(pop, dtype=str), "E")


def to_flat_vector(da: xr.DataArray) -> np.ndarray:
    """(area, pop[, ...]) -> (254[, ...]) array in upstream's population order."""
    da = da.transpose("area", "pop", ...)
    values = da.values.reshape((len(AREAS) * len(POPS),) + da.shape[2:])
    return values[_EXISTS_FLAT]


def to_flat_matrix(da: xr.DataArray, external: xr.DataArray | None = None) -> np.ndarray:
    """(area, pop, source_area, source_pop) -> 254 x 254 (or 254 x 255) matrix.

    Rows are targets, columns sources.  If ``external`` (dims area, pop) is
    given it becomes the 255th column, as in upstream's ``K_matrix``.
    """
    da = da.transpose("area", "pop", "source_area", "source_pop")
    n = len(AREAS) * len(POPS)
    m = da.values.reshape(n, n)[np.ix_(_EXISTS_FLAT, _EXISTS_FLAT)]
    if external is not None:
        m = np.concatenate([m, to_flat_vector(external)[:, None]], axis=1)
    return m


def from_flat_vector(values, name: str | None = None, attrs: dict | None = None,
                     fill=np.nan) -> xr.DataArray:
    """(254[, ...]) -> (area, pop[, ...]) DataArray; absent populations get ``fill``."""
    values = np.asarray(values)
    full = np.full((len(AREAS) * len(POPS),) + values.shape[1:], fill,
                   dtype=np.result_type(values.dtype, np.asarray(fill).dtype))
    full[_EXISTS_FLAT] = values
    extra = tuple(f"dim_{i}" for i in range(values.ndim - 1))
    return xr.DataArray(
        full.reshape((len(AREAS), len(POPS)) + values.shape[1:]),
        dims=("area", "pop") + extra,
        coords={"area": list(AREAS), "pop": list(POPS)},
        name=name, attrs=attrs or {},
    )


def from_flat_matrix(values, name: str | None = None, attrs: dict | None = None,
                     fill=np.nan) -> xr.DataArray:
    """254 x 254 -> (area, pop, source_area, source_pop); absent pops get ``fill``."""
    values = np.asarray(values)[:, : N_POPULATIONS]
    n = len(AREAS) * len(POPS)
    full = np.full((n, n), fill, dtype=np.result_type(values.dtype, np.asarray(fill).dtype))
    full[np.ix_(_EXISTS_FLAT, _EXISTS_FLAT)] = values
    shape = (len(AREAS), len(POPS), len(AREAS), len(POPS))
    return xr.DataArray(
        full.reshape(shape),
        dims=("area", "pop", "source_area", "source_pop"),
        coords={"area": list(AREAS), "pop": list(POPS),
                "source_area": list(AREAS), "source_pop": list(POPS)},
        name=name, attrs=attrs or {},
    )
