"""Names of areas and populations, and upstream's flat 254-population view.

The labelled form (dims ``area``, ``pop``, ``source_area``, ``source_pop``) is
used everywhere in mam_xr.  Upstream works with vectors of the 254 existing
populations (area-major, population-minor, TH 4E/4I skipped) and with
254 x 255 target x source matrices whose last column is the external
(Poisson) input (docs/structure.md).  The functions here convert
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

# Where each of the 254 flat populations sits, computed once here so that no
# other module re-derives it from the labels.
#: Index into the (area, pop) grid of ``len(AREAS) * len(POPS)`` cells.
FLAT_GRID_INDEX: np.ndarray = np.flatnonzero(_EXISTS_FLAT)
#: Index into AREAS and into POPS.
FLAT_AREA_INDEX: np.ndarray = FLAT_GRID_INDEX // len(POPS)
FLAT_POP_INDEX: np.ndarray = FLAT_GRID_INDEX % len(POPS)
#: Area name and pop name (e.g. ``"V1"``, ``"23E"``).
FLAT_AREA: np.ndarray = np.array(AREAS)[FLAT_AREA_INDEX]
FLAT_POP: np.ndarray = np.array(POPS)[FLAT_POP_INDEX]


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


# --- the structure Dataset, assembled from upstream's flat arrays -------------

#: Variables of the structure Dataset: name -> (dims kind, units, long_name).
STRUCTURE_VARIABLES: dict[str, tuple[str, str, str]] = {
    "neurons": ("pop", "1", "neurons per population (float; the simulation creates floor(neurons))"),
    "indegree": ("pair", "1", "indegree K: synapses per target neuron from the source population"),
    "synapses": ("pair", "1", "total synapse number (indegree x target neurons, float)"),
    "weight_mean": ("pair", "pA", "mean PSC amplitude (negative for inhibitory sources)"),
    "weight_sd": ("pair", "pA", "SD of the PSC amplitude (not rescaled by down-scaling, as upstream)"),
    "J": ("pair", "mV", "mean weight as PSP-like coupling J = W tau_syn_ex / C_m (theory)"),
    "delay_mean": ("pair", "ms", "mean transmission delay"),
    "delay_sd": ("pair", "ms", "SD of the transmission delay"),
    "external_indegree": ("pop", "1", "external (Poisson) indegree K_ext"),
    "external_synapses": ("pop", "1", "external synapse number K_ext x neurons"),
    "external_weight": ("pop", "pA", "weight of the external Poisson input"),
    "external_J": ("pop", "mV", "external coupling J_ext = W_ext tau_syn_ex / C_m"),
    "dc_drive": ("pop", "pA", "DC current compensating down-scaling (0 at full scale)"),
    "distance": ("areapair", "mm", "inter-area distance (median inter-voxel)"),
    "area_indegree": ("areapair", "1", "area-level indegree: N-weighted mean over target pops of the summed indegree from the source area"),
    "external_area_indegree": ("area", "1", "area-level external indegree"),
    "neurons_area": ("area", "1", "neurons per area"),
}


def structure_from_flat(
    *, N, K, synapses, W, W_sd, J, add_DC_drive, distances, K_areas=None,
    delay_e=1.5, delay_i=0.75, delay_rel=0.5, interarea_speed=3.5, attrs=None,
) -> xr.Dataset:
    """Assemble the labelled structure Dataset from upstream's flat arrays.

    Parameters follow upstream's names and layout (reference/README.md §3.1):
    ``N`` (254,), ``K``, ``synapses``, ``W``, ``W_sd``, ``J`` (254, 255) with
    the external input in the last column (``W_sd``'s may be NaN),
    ``add_DC_drive`` (254,) in pA, ``distances`` (32, 32) in mm and optional
    ``K_areas`` (32, 33).  Delays (construction.md §6): mean ``delay_e`` /
    ``delay_i`` ms within an area for E / I sources, distance /
    ``interarea_speed`` between areas; SD = ``delay_rel`` x mean.
    """
    K, synapses, W, W_sd, J = (np.asarray(x, dtype=float) for x in (K, synapses, W, W_sd, J))
    N = np.asarray(N, dtype=float)
    distances = np.asarray(distances, dtype=float)
    ex = exists()
    data = {
        "neurons": from_flat_vector(N),
        "indegree": from_flat_matrix(K),
        "synapses": from_flat_matrix(synapses),
        "weight_mean": from_flat_matrix(W),
        "weight_sd": from_flat_matrix(W_sd),
        "J": from_flat_matrix(J),
        "external_indegree": from_flat_vector(K[:, -1]),
        "external_synapses": from_flat_vector(synapses[:, -1]),
        "external_weight": from_flat_vector(W[:, -1]),
        "external_J": from_flat_vector(J[:, -1]),
        "dc_drive": from_flat_vector(np.asarray(add_DC_drive, dtype=float)),
    }
    coords = {"area": list(AREAS), "pop": list(POPS),
              "source_area": list(AREAS), "source_pop": list(POPS)}
    data["distance"] = xr.DataArray(distances, dims=("area", "source_area"))
    n_area = data["neurons"].fillna(0.0).sum("pop")
    data["neurons_area"] = n_area
    if K_areas is None:
        k = data["indegree"].fillna(0.0).sum("source_pop")
        w = data["neurons"].fillna(0.0)
        K_areas = np.concatenate([
            ((k * w).sum("pop") / n_area).transpose("area", "source_area").values,
            ((data["external_indegree"].fillna(0.0) * w).sum("pop") / n_area).values[:, None],
        ], axis=1)
    K_areas = np.asarray(K_areas, dtype=float)
    data["area_indegree"] = xr.DataArray(K_areas[:, :-1], dims=("area", "source_area"))
    data["external_area_indegree"] = xr.DataArray(K_areas[:, -1], dims=("area",))

    # Delays: within an area by source type, between areas by distance.
    same_area = xr.DataArray(np.eye(len(AREAS), dtype=bool), dims=("area", "source_area"))
    source_exc = xr.DataArray(is_excitatory(POPS), dims=("source_pop",))
    local = xr.where(source_exc, delay_e, delay_i)
    interarea = data["distance"] / interarea_speed
    mean = xr.where(same_area, local, interarea).broadcast_like(data["indegree"])
    valid = ex & ex.rename(area="source_area", pop="source_pop")
    data["delay_mean"] = mean.where(valid)
    data["delay_sd"] = delay_rel * data["delay_mean"]

    ds = xr.Dataset(data, coords=coords)
    ds["exists"] = ex
    for name, (_, units, long_name) in STRUCTURE_VARIABLES.items():
        ds[name].attrs.update(units=units, long_name=long_name)
    ds.attrs.update(attrs or {})
    ds.attrs.setdefault("delay_params", {"delay_e": delay_e, "delay_i": delay_i,
                                         "delay_rel": delay_rel,
                                         "interarea_speed": interarea_speed})
    return ds


def structure_to_flat(ds: xr.Dataset) -> dict[str, np.ndarray]:
    """Upstream's flat arrays (``N``, ``K``, ``synapses``, ``W``, ``W_sd``, ``J``,
    ``add_DC_drive``, ``distances``, ``K_areas``) of a structure Dataset."""
    out = {
        "N": to_flat_vector(ds["neurons"]),
        "K": to_flat_matrix(ds["indegree"], ds["external_indegree"]),
        "synapses": to_flat_matrix(ds["synapses"], ds["external_synapses"]),
        "W": to_flat_matrix(ds["weight_mean"], ds["external_weight"]),
        "W_sd": to_flat_matrix(ds["weight_sd"], xr.full_like(ds["external_weight"], np.nan)),
        "J": to_flat_matrix(ds["J"], ds["external_J"]),
        "add_DC_drive": to_flat_vector(ds["dc_drive"]),
        "distances": ds["distance"].transpose("area", "source_area").values,
        "K_areas": np.concatenate([
            ds["area_indegree"].transpose("area", "source_area").values,
            ds["external_area_indegree"].values[:, None]], axis=1),
        "N_areas_total": ds["neurons_area"].values,
    }
    return out
