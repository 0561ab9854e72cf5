"""Stage A: upstream's raw anatomical data -> processed anatomy.

Reproduces upstream's ``VisualCortex_Data.py`` (INM-6/multi-area-model, commit
355d940) as described in docs/anatomy.md: architectural types,
neuron densities (NeuN -> Nissl calibration), total and laminar thicknesses,
full-surface ("realistic") neuron numbers, FLN from Markov et al. 2014 mapped
onto the FV91 parcellation, CoCoMac existence and laminar patterns, the
exponential distance rule (EDR) completing FLN, and SLN completed by the
sigmoidal density-ratio fit.  Upstream's quirks are reproduced (§15, see
docs/anatomy.md).

Raw files are read only through :func:`mam_xr.data.fetch`.  The computation
works on long-form pandas tables (one row per target, source pair) and ends in
one labelled :class:`xarray.Dataset` (:func:`process`); the same numbers are
available in upstream's nested-dict form (:func:`process_as_upstream_dict`) for
comparison with upstream's ``viscortex_processed_data*.json``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import datetime, timezone

import numpy as np
import pandas as pd
import xarray as xr
from scipy.special import ndtr

from .data import fetch
from .errors import DataError
from .flat import AREAS, POPS

__all__ = [
    "LAYERS",
    "SLN_FIT",
    "process",
    "process_as_upstream_dict",
    "read_csv_skip_header",
    "read_json",
    "read_median_distances",
    "sln_fit",
]

PathLike = str | os.PathLike | None

#: Cortical layers (layer 1 holds no model neurons), construction.md §3.4.
LAYERS: tuple[str, ...] = ("1", "23", "4", "5", "6")
#: Layers that hold model populations (E and I each), in POPS order.
CELL_LAYERS: tuple[str, ...] = ("23", "4", "5", "6")

#: Probit fit of SLN against ln(density ratio), (intercept a0, slope a1): the
#: hard-coded fallback of VisualCortex_Data.py (commit 355d940), used instead of
#: running R, as construction.md §3.9 and §15.2 recommend.
SLN_FIT: tuple[float, float] = (-0.1516142, -1.5343200)

#: Nissl-table names renamed before matching NeuN names (construction.md §3.2).
NISSL_RENAME = {"V5/MT": "MT", "A46v": "area 46v", "A7a": "7a", "LIPv": "LIP", "TEr": "Te1"}

#: Markov (M132) source names renamed to find them in overlap.json (§3.6 step 4).
M132_RENAME = {
    "ENTO": "Entorhinal", "POLE": "Temporal-pole", "Parainsula": "Insula", "INSULA": "Insula",
    "SUB": "Subiculum", "PIRI": "Piriform", "PERI": "Perirhinal", "Pro.St.": "Prostriate",
    "CORE": "Aud-core", "29/30": "29_30", "TEa/mp": "TEam-p", "TEa/ma": "TEam-a",
    "TH/TF": "TH_TF", "9/46v": "9_46v", "9/46d": "9_46d", "SII": "S2",
}

_AREA_SET = frozenset(AREAS)


# --- raw-file readers ---------------------------------------------------------------------

def read_csv_skip_header(name: str, data_dir: PathLike = None, *, sep: str = "\t",
                         skiprows: int = 2, header: int | None = None, **kwargs) -> pd.DataFrame:
    """Read an upstream raw table that starts with a provenance comment and an empty line.

    Parameters
    ----------
    name : str
        Upstream file name or path (see :data:`mam_xr.data.REGISTRY`).
    data_dir : path, optional
        Passed to :func:`mam_xr.data.fetch`.
    sep : str, default: tab
        Column separator (most raw files are tab-separated).
    skiprows : int, default: 2
        Leading lines to skip (comment and empty line in most raw files).
    header : int or None, default: None
        Row (after ``skiprows``) holding the column names; None for none.
    **kwargs
        Passed to :func:`pandas.read_csv` (``names``, ``usecols``, ``index_col``, ...).
    """
    return pd.read_csv(fetch(name, data_dir), sep=sep, skiprows=skiprows, header=header, **kwargs)


def read_json(name: str, data_dir: PathLike = None):
    """Parsed content of an upstream JSON file."""
    with open(fetch(name, data_dir), encoding="utf-8") as f:
        return json.load(f)


def read_median_distances(data_dir: PathLike = None) -> pd.DataFrame:
    """The 81 x 81 table of median inter-voxel distances in mm (CoCoMac/F99), labelled by area."""
    table = read_csv_skip_header("Median_Distances_81areas.csv", data_dir, header=0, index_col=0)
    table.columns = table.columns.astype(str)
    table.index = table.index.astype(str)
    return table.loc[:, table.index]  # drops a trailing empty column if any


def _column(df: pd.DataFrame, name: str) -> pd.Series:
    return pd.to_numeric(df[name], errors="coerce")


def _unique_index(df, what: str):
    dup = df.index[df.index.duplicated()].unique().tolist()
    if dup:
        raise DataError(f"{what}: areas {dup} are given twice; the upstream data define each once")
    return df


def _polyfit(x, y) -> tuple[float, float]:
    """Least-squares line y = c + g x; returns (g, c)."""
    g, c = np.polyfit(np.asarray(x, float), np.asarray(y, float), 1)
    return float(g), float(c)


# --- §3.1 architecture, §3.2 densities --------------------------------------------------

def _architecture(data_dir) -> pd.Series:
    df = read_csv_skip_header("ArchitecturalTypes.csv", data_dir, names=["area", "type"], dtype=str)
    types = df.dropna().set_index("area")["type"].str.strip()
    types = types.replace("?", "5").astype(int)  # MIP, MDP: '?' -> type 5 (§3.1)
    return types.reindex(list(AREAS))


def _translation(data_dir) -> pd.DataFrame:
    """Barbas name -> FV91 name rows (one row per FV91 target of a Barbas name)."""
    # skiprows=3 also skips the column-header row, which upstream reads as a (harmless) data row
    df = read_csv_skip_header("SchemeTranslation.csv", data_dir, skiprows=3,
                              names=["barbas", "fv91"], dtype=str)
    return df.dropna()


def _to_fv91(table: pd.DataFrame, translation: pd.DataFrame) -> pd.DataFrame:
    """Re-index a table by FV91 area: model names kept, others copied to each translation."""
    direct = table[table.index.isin(AREAS)]
    rows = translation[translation.barbas.isin(table.index) & ~translation.barbas.isin(AREAS)]
    mapped = table.loc[rows.barbas].set_axis(pd.Index(rows.fv91.values), axis=0)
    out = pd.concat([direct, mapped])
    return _unique_index(out[out.index.isin(AREAS)], "neuron densities mapped to FV91")


@dataclass
class _Densities:
    table: pd.DataFrame        # area x [overall, 23, 4, 5, 6], 1/mm^3, all 32 areas
    neun_covered: pd.Index     # FV91 areas with NeuN data
    category: pd.DataFrame     # type x [overall, 23, 4, 5, 6]
    calibration: tuple[float, float]  # Nissl = a NeuN + b


def _densities(arch: pd.Series, data_dir) -> _Densities:
    quantities = ["overall", "23", "4", "5", "6"]
    neun = read_csv_skip_header(
        "NeuronalDensities_NeuN.csv", data_dir, index_col=0,
        names=["name", "overall", "overall_err", "23", "23_err", "4", "4_err", "56", "56_err"])
    nissl = read_csv_skip_header("NeuronalDensities_Nissl.csv", data_dir, sep=",", index_col=0,
                                 names=["name", "type", "density", "thickness"])
    nissl = nissl.rename(index=NISSL_RENAME)
    nissl_density = _column(nissl, "density").dropna()  # '—' = missing

    # §3.2.1: OLS Nissl = a NeuN + b over the areas in both tables (12 pairs)
    both = neun.index.intersection(nissl_density.index)
    a, b = _polyfit(neun.loc[both, "overall"], nissl_density.loc[both])

    # §3.2.3: four-layer densities from calibrated NeuN (layers 5 and 6 share L5/6)
    calibrated = a * neun[["overall", "23", "4", "56"]] + b
    layers = pd.DataFrame({
        "overall": calibrated["overall"],
        "23": calibrated["23"].where(neun["23"] > 0, 0.0),
        "4": calibrated["4"].where(neun["4"] > 0, 0.0),  # TH L4 = 0
        "5": calibrated["56"],
        "6": calibrated["56"],
    })
    translation = _translation(data_dir)
    covered = _to_fv91(layers, translation)
    nissl_fv91 = _to_fv91(nissl_density.to_frame(), translation)["density"]
    # overall: Nissl where the area has it, else calibrated NeuN (DP, FEF)
    covered["overall"] = nissl_fv91.reindex(covered.index).fillna(covered["overall"])

    # §3.2.4-5: type means over NeuN-covered areas fill every other area
    category = covered.groupby(arch.reindex(covered.index)).mean()
    table = covered.reindex(list(AREAS))
    fill = category.reindex(arch.values).set_axis(table.index, axis=0)
    table = table.fillna(fill)[quantities]
    return _Densities(table, covered.index, category[quantities], (a, b))


# --- §3.3 total thickness, §3.4 laminar thicknesses ---------------------------------------

def _total_thickness(overall: pd.Series, data_dir) -> tuple[pd.Series, tuple[float, float]]:
    """Total thickness per area in µm: data where given, else c + g log10(ρ_overall)."""
    df = read_csv_skip_header("CorticalThickness.csv", data_dir, skiprows=3, index_col=0,
                              names=["area", "comments", "type", "density", "thickness"])
    data_um = (_column(df, "thickness") * 1000.0).dropna()  # mm -> µm
    data_um = data_um[data_um.index.isin(AREAS)]
    g, c = _polyfit(np.log10(overall.loc[data_um.index]), data_um)
    fit = c + g * np.log10(overall)
    return data_um.reindex(overall.index).fillna(fit), (g, c)


def _read_laminar_studies(data_dir) -> pd.DataFrame:
    """Per-study laminar thicknesses (µm); columns named '1', '23', '4', '5', '6', 'total', ..."""
    df = read_csv_skip_header("laminar_thicknesses_macaque.csv", data_dir, header=0, dtype=str)
    df = df.rename(columns=lambda s: s.replace("L", "").replace("/", "") if s != "area" else s)
    df = df.dropna(subset=["area"]).set_index("area")
    numeric = [c for c in df.columns if c not in ("source", "note")]
    return df[numeric].apply(pd.to_numeric, errors="coerce")


@dataclass
class _Thickness:
    laminar: pd.DataFrame   # area x LAYERS, mm
    relative: pd.DataFrame  # area x LAYERS, completed relative thicknesses (not renormalised)
    layer_means: pd.Series  # means used for missing L1, L23, L5, L6
    l4_fit: tuple[float, float]


def _laminar_thickness(overall: pd.Series, total_um: pd.Series, data_dir) -> _Thickness:
    studies = _read_laminar_studies(data_dir)
    values = studies[list(LAYERS)]
    # per-study fraction of total; an exact 0 stays 0 even without a total (§3.4.2)
    fraction = values.div(studies["total"], axis=0).mask(values == 0, 0.0)
    relative = fraction.groupby(level=0).mean().reindex(list(AREAS))  # mean of finite values
    means = relative[["1", "23", "5", "6"]].mean()
    has_l4 = relative["4"].notna()
    g4, c4 = _polyfit(np.log10(overall[has_l4]), relative.loc[has_l4, "4"])
    completed = relative.fillna(means)
    completed["4"] = completed["4"].fillna(c4 + g4 * np.log10(overall))
    # renormalise to sum 1, times the total thickness (µm -> mm)
    laminar = completed.div(completed.sum(axis=1), axis=0).mul(total_um * 1e-3, axis=0)
    return _Thickness(laminar, completed, means, (g4, c4))


# --- §3.5 neuron numbers ------------------------------------------------------------------

def _excitatory_fraction(data_dir) -> pd.Series:
    """PD14 fraction of excitatory neurons per layer, e(v) = n_vE / (n_vE + n_vI)."""
    num = read_csv_skip_header("Numbers_V1.csv", data_dir, usecols=[0, 1], names=["pop", "n"],
                               index_col=0)["n"].astype(float)
    e = [num[f"{v}E"] / (num[f"{v}E"] + num[f"{v}I"]) for v in CELL_LAYERS]
    return pd.Series(e, index=list(CELL_LAYERS))


def _surface(data_dir) -> pd.Series:
    df = read_csv_skip_header("cortical_surface.csv", data_dir, names=["area", "surface"], index_col=0)
    return _unique_index(df, "cortical_surface.csv")["surface"].astype(float).reindex(list(AREAS))


def _neuron_numbers(surface, laminar, density, e) -> pd.DataFrame:
    """Full-surface neuron numbers, area x POPS: N_E = S d ρ e, N_I = N_E (1 - e) / e."""
    cols = list(CELL_LAYERS)
    n_e = laminar[cols].mul(surface, axis=0) * density[cols] * e
    n_i = n_e * (1.0 - e) / e
    out = pd.concat({"E": n_e, "I": n_i}, axis=1)
    out.columns = [f"{v}{k}" for k, v in out.columns]
    return out[list(POPS)]


# --- §3.6 FLN ----------------------------------------------------------------------------

def _injection_targets(data_dir) -> pd.Series:
    """Monkey id -> FV91 area of its injection site (later rows overwrite earlier ones)."""
    df = read_csv_skip_header("Markov2014_InjectionSites.csv", data_dir, skiprows=3,
                              usecols=[2, 8], names=["monkey", "fv91"], dtype=str)
    df = df.dropna(subset=["monkey"]).drop_duplicates("monkey", keep="last")
    return df.set_index("monkey")["fv91"].str.strip()


def _per_target_mean(rows: pd.DataFrame, value: str, targets: pd.Series) -> pd.DataFrame:
    """Mean of ``value`` per (target, source) over the target's monkeys, absent reports = 0.

    ``rows`` has columns monkey, source, ``value``; a later row of the same monkey
    and source overwrites an earlier one.  The divisor m_T is the largest number of
    reports of any one source of the target (§3.6 step 3, §3.9 step 2).
    """
    rows = rows.drop_duplicates(["monkey", "source"], keep="last")
    rows = rows.assign(target=rows.monkey.map(targets))
    rows = rows[rows.target.isin(AREAS)]
    grouped = rows.groupby(["target", "source"], sort=False)[value]
    out = grouped.agg(["sum", "count"]).reset_index()
    m_t = out.groupby("target")["count"].transform("max")
    return out.assign(**{value: out["sum"] / m_t})[["target", "source", value]]


def _overlap(data_dir) -> pd.DataFrame:
    """overlap.json['all'] as rows: key '<M132 name>_M132', fv91, weight = percent / 100."""
    overlap = read_json("overlap.json", data_dir)["all"]
    rows = [(key, name.rpartition(".")[2], pct / 100.0)
            for key, entries in overlap.items() for name, pct in entries.items()]
    return pd.DataFrame(rows, columns=["key", "fv91", "weight"])


def _with_overlap(rows: pd.DataFrame, overlap: pd.DataFrame) -> pd.DataFrame:
    """Join M132-named source rows with their FV91 overlap weights (model areas only)."""
    key = rows.source.map(lambda s: M132_RENAME.get(s, s) + "_M132")
    missing = sorted(set(rows.source[~key.isin(overlap.key)]))
    if missing:
        raise DataError(f"overlap.json['all'] has no entry for the M132 sources {missing}")
    joined = rows.assign(key=key).merge(overlap, on="key", how="inner")
    return joined[joined.fv91.isin(AREAS)]


@dataclass
class _FLN:
    raw: pd.DataFrame      # target, source (M132 name), FLN: per-target means
    mapped: pd.DataFrame   # target, source (FV91 model area), FLN: FLN_Data_FV91
    targets: pd.Series     # monkey -> FV91 injection area


def _fln(overlap: pd.DataFrame, data_dir) -> _FLN:
    df = read_csv_skip_header("Markov2014_FLN_rawdata.csv", data_dir, usecols=range(7),
                              names=["case", "monkey", "source", "target", "FLN", "NLN", "status"],
                              dtype={"monkey": str, "source": str})
    df = df.dropna(subset=["monkey", "source"])
    targets = _injection_targets(data_dir)
    raw = _per_target_mean(df[["monkey", "source", "FLN"]], "FLN", targets)
    joined = _with_overlap(raw, overlap)
    joined = joined.assign(FLN=joined.weight * joined.FLN)
    mapped = joined.groupby(["target", "fv91"], sort=False)["FLN"].sum().reset_index()
    mapped = mapped.rename(columns={"fv91": "source"})
    mapped = mapped[mapped.target != mapped.source]  # §3.6 step 5: drop self entries
    return _FLN(raw, mapped.reset_index(drop=True), targets)


# --- §3.7 CoCoMac ------------------------------------------------------------------------

def _cocomac(fln_mapped: pd.DataFrame, data_dir) -> pd.DataFrame:
    """cocomac_completed as rows: target, source, source_pattern, target_pattern.

    Patterns are upstream's lists of 6 one-character strings (layers 1-6) or None.
    """
    cocomac = read_json("CoCoMac_complete_81.json", data_dir)
    studies = read_json("cocomac_confirmative_studies.json", data_dir)
    rows = []
    for src_key, targets in cocomac.items():
        for tgt_key, (sp, tp) in targets.items():
            target = tgt_key.split("-")[-1]
            if target not in _AREA_SET:
                continue
            if sp is None and tp is None and not studies.get(src_key, {}).get(tgt_key, 0) > 0:
                continue  # no pattern and no confirming study: not a connection
            rows.append((target, src_key.split("-")[-1], sp, tp))
    table = pd.DataFrame(rows, columns=["target", "source", "source_pattern", "target_pattern"])
    table = table.drop_duplicates(["target", "source"], keep="last")

    # §3.7.3: Markov additions for measured model sources with FLN > 0
    known = pd.MultiIndex.from_frame(table[["target", "source"]])
    measured = fln_mapped[fln_mapped.FLN > 0]
    new = measured[~pd.MultiIndex.from_frame(measured[["target", "source"]]).isin(known)]
    # §3.7.4: a self entry with null patterns for every area (replaces any CoCoMac self entry)
    table = table[table.target != table.source]
    selfs = pd.DataFrame({"target": list(AREAS), "source": list(AREAS)})
    table = pd.concat([table, new[["target", "source"]], selfs], ignore_index=True)
    return table.astype({"source_pattern": object, "target_pattern": object}).where(
        table.notna(), None)


# --- §3.8 EDR and FLN completion ---------------------------------------------------------

def _thom_areas(data_dir) -> set[str]:
    header = read_csv_skip_header("Thom_Distances.csv", data_dir, header=0, index_col=0, nrows=0)
    return set(map(str, header.columns))


def _fln_completed(fln: _FLN, cocomac: pd.DataFrame, distances: pd.DataFrame, data_dir):
    """FLN_completed as rows (target, source incl. non-model areas, FLN, measured) and the EDR fit."""
    thom = _thom_areas(data_dir)
    pts = fln.mapped[fln.mapped.target.isin(thom) & fln.mapped.source.isin(thom)
                     & (fln.mapped.FLN != 0)]
    d = distances.to_numpy()[distances.index.get_indexer(pts.target),
                             distances.columns.get_indexer(pts.source)]
    lam1, lam0 = _polyfit(d, np.log(pts.FLN))

    measured = fln.mapped.assign(measured=True)
    have = pd.MultiIndex.from_frame(measured[["target", "source"]])
    cand = cocomac[(cocomac.target != cocomac.source) & cocomac.source.isin(distances.index)]
    cand = cand[~pd.MultiIndex.from_frame(cand[["target", "source"]]).isin(have)]
    d = distances.to_numpy()[distances.index.get_indexer(cand.target),
                             distances.columns.get_indexer(cand.source)]
    edr = cand[["target", "source"]].assign(FLN=np.exp(lam0 + lam1 * d), measured=False)
    completed = pd.concat([measured, edr], ignore_index=True)
    return completed, (lam0, lam1), len(pts)


# --- §3.9 SLN ----------------------------------------------------------------------------

def _sln_data(fln: _FLN, overlap: pd.DataFrame, data_dir) -> pd.DataFrame:
    """SLN_Data_FV91 as rows target, source (model area), SLN."""
    df = read_csv_skip_header("SLN_Data.csv", data_dir, sep=r"\s+", header=0,
                              dtype={"Monkey": str, "FROM": str})
    rows = df.rename(columns={"Monkey": "monkey", "FROM": "source"})[["monkey", "source", "SLN"]]
    # grouping by monkey merges the stray 'V1, M121RH' rows into the V4 injection (§15.7)
    sln = _per_target_mean(rows, "SLN", fln.targets)
    sln = sln.merge(fln.raw, on=["target", "source"], how="left")
    if sln.FLN.isna().any():
        bad = sln.loc[sln.FLN.isna(), ["target", "source"]].values.tolist()
        raise DataError(f"SLN_Data.csv: (target, source) pairs without FLN data: {bad}")
    joined = _with_overlap(sln, overlap)
    joined = joined.assign(S=joined.weight * joined.SLN * joined.FLN,
                           I=joined.weight * (1.0 - joined.SLN) * joined.FLN)
    sums = joined.groupby(["target", "fv91"], sort=False)[["S", "I"]].sum().reset_index()
    if ((sums.S + sums.I) == 0).any():  # upstream would divide by zero here
        bad = sums.loc[(sums.S + sums.I) == 0, ["target", "fv91"]].values.tolist()
        raise DataError(f"SLN_Data.csv: SLN undefined (no labelled neurons) for {bad}")
    return pd.DataFrame({"target": sums.target, "source": sums.fv91,
                         "SLN": sums.S / (sums.S + sums.I)})


def sln_fit(density_ratio, fit: tuple[float, float] = SLN_FIT):
    """SLN predicted from the target/source ratio of overall neuron densities.

    SLN = Φ(a0 + a1 ln(ρ_T / ρ_B)) with Φ the standard normal CDF (construction.md §3.9).
    """
    a0, a1 = fit
    return ndtr(a0 + a1 * np.log(density_ratio))


# --- all of stage A ----------------------------------------------------------------------

@dataclass
class _StageA:
    architecture: pd.Series
    densities: _Densities
    total_um: pd.Series
    thickness_fit: tuple[float, float]
    thickness: _Thickness
    surface: pd.Series
    e_fraction: pd.Series
    neurons: pd.DataFrame
    distances: pd.DataFrame            # 81 x 81
    fln: _FLN
    cocomac: pd.DataFrame
    fln_completed: pd.DataFrame        # rows incl. non-model sources
    edr_fit: tuple[float, float]
    edr_points: int
    sln_data: pd.DataFrame
    sln_completed: pd.DataFrame        # rows target, source, SLN, measured


def _compute(data_dir: PathLike) -> _StageA:
    arch = _architecture(data_dir)
    dens = _densities(arch, data_dir)
    overall = dens.table["overall"]
    total_um, thickness_fit = _total_thickness(overall, data_dir)
    thick = _laminar_thickness(overall, total_um, data_dir)
    surface = _surface(data_dir)
    e = _excitatory_fraction(data_dir)
    neurons = _neuron_numbers(surface, thick.laminar, dens.table, e)

    overlap = _overlap(data_dir)
    fln = _fln(overlap, data_dir)
    cocomac = _cocomac(fln.mapped, data_dir)
    distances = read_median_distances(data_dir)
    completed, edr_fit, n_points = _fln_completed(fln, cocomac, distances, data_dir)

    sln_data = _sln_data(fln, overlap, data_dir)
    pairs = cocomac[(cocomac.target != cocomac.source) & cocomac.source.isin(AREAS)]
    pairs = pairs[["target", "source"]].merge(sln_data, on=["target", "source"], how="left")
    fitted = sln_fit(overall.loc[pairs.target].to_numpy() / overall.loc[pairs.source].to_numpy())
    sln_completed = pairs.assign(measured=pairs.SLN.notna(),
                                 SLN=pairs.SLN.fillna(pd.Series(fitted, index=pairs.index)))
    return _StageA(arch, dens, total_um, thickness_fit, thick, surface, e, neurons, distances,
                   fln, cocomac, completed, edr_fit, n_points, sln_data, sln_completed)


def _matrix(rows: pd.DataFrame, value: str, fill) -> np.ndarray:
    """(area, source_area) array from target/source rows of model areas."""
    sub = rows[rows.target.isin(AREAS) & rows.source.isin(AREAS)]
    out = np.full((len(AREAS), len(AREAS)), fill, dtype=object if isinstance(fill, str) else type(fill))
    idx = pd.Index(AREAS)
    out[idx.get_indexer(sub.target), idx.get_indexer(sub.source)] = sub[value].to_numpy()
    return out


#: Variables of the anatomy Dataset: name -> (units, long_name).
ANATOMY_VARIABLES: dict[str, tuple[str, str]] = {
    "architecture": ("1", "architectural type (Hilgetag et al. 2016; MIP, MDP set to 5)"),
    "surface": ("mm2", "full surface area of the area (Caret)"),
    "density_overall": ("1/mm3", "overall neuron density (Nissl, or calibrated NeuN, or type mean)"),
    "density": ("1/mm3", "neuron density per layer (calibrated NeuN or type mean; NaN in layer 1)"),
    "total_thickness": ("um", "total cortical thickness (data or log-density fit)"),
    "relative_thickness": ("1", "relative laminar thickness before renormalisation (data, mean or fit)"),
    "laminar_thickness": ("mm", "absolute laminar thickness"),
    "neurons_full": ("1", "full-surface (realistic) neuron number per population"),
    "distance": ("mm", "median inter-voxel distance between the areas"),
    "has_injection": ("1", "area received a Markov et al. 2014 tracer injection (measured FLN)"),
    "FLN_data": ("1", "measured FLN mapped to FV91 (FLN_Data_FV91); NaN where not measured"),
    "FLN": ("1", "completed FLN of the source area (measured, else EDR); 0 where no connection"),
    "FLN_external": ("1", "summed completed FLN from non-model areas"),
    "FLN_is_measured": ("1", "FLN of the pair comes from the Markov data (else from the EDR)"),
    "SLN_data": ("1", "measured SLN mapped to FV91 (SLN_Data_FV91); NaN where not measured"),
    "SLN": ("1", "completed SLN (measured, else probit density-ratio fit); NaN where no connection"),
    "cocomac_connected": ("1", "source area is in cocomac_completed of the target (CoCoMac or Markov)"),
    "source_pattern": ("1", "CoCoMac laminar pattern of origin, layers 1-6 as 6 characters; '' = none"),
    "target_pattern": ("1", "CoCoMac laminar pattern of termination, layers 1-6 as 6 characters; '' = none"),
}


def process(data_dir: PathLike = None) -> xr.Dataset:
    """Processed anatomy of the 32 areas from upstream's raw data (construction.md §3).

    Parameters
    ----------
    data_dir : path, optional
        Directory laid out like the upstream repository; see :func:`mam_xr.data.fetch`.

    Returns
    -------
    xr.Dataset
        Coords ``area`` and ``source_area`` (32, model order :data:`mam_xr.flat.AREAS`),
        ``pop`` (8, :data:`mam_xr.flat.POPS`), ``layer`` (:data:`LAYERS`).  Matrices are
        target-first, ``(area, source_area)``.  Variables (units in attrs):

        - ``architecture`` (area), int type 2..8, MIP and MDP = 5 (§3.1).
        - ``surface`` (area), mm²: full surface S_A.
        - ``density_overall`` (area), ``density`` (area, layer), neurons/mm³ (§3.2);
          ``density`` is NaN in layer 1 and 0 in TH layer 4.
        - ``total_thickness`` (area), µm (§3.3).
        - ``relative_thickness`` (area, layer), and ``laminar_thickness`` (area, layer), mm
          (§3.4); the latter sums over layers to ``total_thickness``/1000.
        - ``neurons_full`` (area, pop): full-surface neuron numbers (§3.5), 0 for TH 4E/4I.
        - ``distance`` (area, source_area), mm: median distances, symmetric, zero diagonal.
        - ``has_injection`` (area), bool; ``FLN_data`` (area, source_area): FLN_Data_FV91
          (NaN where absent).
        - ``FLN`` (area, source_area): FLN_completed[T][B], 0 where absent and on the diagonal;
          ``FLN_is_measured`` (area, source_area) bool; ``FLN_external`` (area):
          FLN_completed[T]['external'] (§3.8).
        - ``SLN_data`` (area, source_area): SLN_Data_FV91 (NaN where absent); ``SLN``
          (area, source_area): SLN_completed[T][B], NaN where absent (§3.9).
        - ``cocomac_connected`` (area, source_area) bool: B in cocomac_completed[T], B ≠ T.
          571 pairs.  (The diagonal is False; upstream's bookkeeping self entries are not
          connections.)
        - ``source_pattern``, ``target_pattern`` (area, source_area), fixed-width str:
          cocomac_completed[T][B] patterns exactly as upstream stores them, its list of 6
          characters joined: character k (0-based) is cortical layer k+1 (layers 1, 2, 3,
          4, 5, 6), each one of '0', '1', '2', '3' (log10 strength: absent .. dense),
          'X' (present, strength unknown) or '?' (unknown).  '' where upstream has None
          (CoCoMac gives no pattern, a Markov addition, or B not in cocomac_completed[T]).
          Stage B converts them (construction.md §3.7 step 2, §4.3.2, §15.10).

        Dataset attrs hold the fitted constants: ``neun_to_nissl_slope``/``_intercept``
        (a, b), ``thickness_fit_slope``/``_intercept`` (g, c; µm), ``l4_fit_slope``/
        ``_intercept`` (g4, c4), ``edr_intercept``/``edr_slope`` (λ0, λ1 in 1/mm),
        ``edr_points``, ``sln_fit_intercept``/``_slope`` (a0, a1); ``history`` and
        ``source`` name the function and the pinned upstream data.

    Raises
    ------
    DataError
        A raw file is missing or corrupt (from :func:`mam_xr.data.fetch`), or the data
        are inconsistent (an M132 source without overlap entry, an SLN pair without FLN).

    Notes
    -----
    Stage A takes about 0.1-0.2 s (benchmarks/bench_anatomy.py); it is recomputed on
    every call.  Upstream's quirks are reproduced (construction.md §15 items 2, 6, 7, 8,
    23; docs/anatomy.md).

    Examples
    --------
    >>> ds = process()  # doctest: +SKIP
    >>> float(ds["FLN"].sel(area="V1", source_area="V2"))  # doctest: +SKIP
    0.5977...
    """
    st = _compute(data_dir)
    areas = list(AREAS)
    dens = st.densities.table
    density = dens[list(CELL_LAYERS)].reindex(columns=list(LAYERS))
    fln_model = st.fln_completed[st.fln_completed.source.isin(AREAS)]
    external = (st.fln_completed[~st.fln_completed.source.isin(AREAS)]
                .groupby("target")["FLN"].sum().reindex(areas, fill_value=0.0))
    coco = st.cocomac[(st.cocomac.target != st.cocomac.source) & st.cocomac.source.isin(AREAS)]
    coco = coco.assign(connected=True, source_pattern=coco.source_pattern.map(_pattern_str),
                       target_pattern=coco.target_pattern.map(_pattern_str))
    AS = ("area", "source_area")
    ds = xr.Dataset(
        {
            "architecture": ("area", st.architecture.to_numpy()),
            "surface": ("area", st.surface.to_numpy()),
            "density_overall": ("area", dens["overall"].to_numpy()),
            "density": (("area", "layer"), density.to_numpy()),
            "total_thickness": ("area", st.total_um.to_numpy()),
            "relative_thickness": (("area", "layer"), st.thickness.relative[list(LAYERS)].to_numpy()),
            "laminar_thickness": (("area", "layer"), st.thickness.laminar[list(LAYERS)].to_numpy()),
            "neurons_full": (("area", "pop"), st.neurons.to_numpy()),
            "distance": (AS, st.distances.loc[areas, areas].to_numpy(dtype=float)),
            "has_injection": ("area", np.isin(areas, st.fln.raw.target.unique())),
            "FLN_data": (AS, _matrix(st.fln.mapped, "FLN", np.nan)),
            "FLN": (AS, _matrix(fln_model, "FLN", 0.0)),
            "FLN_is_measured": (AS, _matrix(fln_model, "measured", False)),
            "FLN_external": ("area", external.to_numpy()),
            "SLN_data": (AS, _matrix(st.sln_data, "SLN", np.nan)),
            "SLN": (AS, _matrix(st.sln_completed, "SLN", np.nan)),
            "cocomac_connected": (AS, _matrix(coco, "connected", False)),
            "source_pattern": (AS, _matrix(coco, "source_pattern", "").astype("<U6")),
            "target_pattern": (AS, _matrix(coco, "target_pattern", "").astype("<U6")),
        },
        coords={"area": areas, "source_area": areas, "pop": list(POPS), "layer": list(LAYERS)},
    )
    for name, (units, long_name) in ANATOMY_VARIABLES.items():
        ds[name].attrs.update(units=units, long_name=long_name)
    a, b = st.densities.calibration
    g, c = st.thickness_fit
    g4, c4 = st.thickness.l4_fit
    lam0, lam1 = st.edr_fit
    from . import __version__
    from .data import COMMIT, LICENCE, REPOSITORY

    ds.attrs.update(
        title="mam_xr processed anatomy (stage A, construction.md §3)",
        source=f"{REPOSITORY}@{COMMIT[:7]} raw data ({LICENCE})",
        history=(f"{datetime.now(timezone.utc).isoformat(timespec='seconds')} "
                 f"mam_xr.anatomy.process - mam_xr version {__version__}"),
        neun_to_nissl_slope=a, neun_to_nissl_intercept=b,
        thickness_fit_slope=g, thickness_fit_intercept=c,
        l4_fit_slope=g4, l4_fit_intercept=c4,
        edr_intercept=lam0, edr_slope=lam1, edr_points=st.edr_points,
        sln_fit_intercept=SLN_FIT[0], sln_fit_slope=SLN_FIT[1],
    )
    return ds


def _pattern_str(pattern) -> str:
    return "" if pattern is None else "".join(pattern)


def _nested(rows: pd.DataFrame, value: str) -> dict:
    out: dict = {}
    for t, s, v in zip(rows.target, rows.source, rows[value]):
        out.setdefault(t, {})[s] = v
    return out


def process_as_upstream_dict(data_dir: PathLike = None) -> dict:
    """Stage A in upstream's nested-dict form (keys of ``viscortex_processed_data.json``).

    Returns a dict with ``SLN_completed[T][B]``, ``realistic_neuronal_numbers[A][pop]``
    (incl. ``'total'``), ``total_thicknesses[A]`` (µm), ``laminar_thicknesses[A][layer]``
    (mm), ``FLN_completed[T][B]`` (model sources and ``'external'``), ``FLN_Data_FV91``,
    ``SLN_Data_FV91``, ``cocomac_completed[T][B] = {'source_pattern': list of 6 str or
    None, 'target_pattern': ...}`` (all CoCoMac source names, incl. non-model areas, and
    the self entry), ``architecture_completed[A]``, ``neuronal_densities[A]`` (keys
    'overall', '23', '4', '5', '6'; the key layout of this entry is mam_xr's, not
    verified against upstream) and ``category_density[type]`` (same keys).  Areas
    follow :data:`mam_xr.flat.AREAS`; values are Python floats.
    """
    st = _compute(data_dir)
    areas = list(AREAS)
    neurons = st.neurons.assign(total=st.neurons.sum(axis=1))
    fln_model = st.fln_completed[st.fln_completed.source.isin(AREAS)]
    fln_completed = {t: {} for t in areas}
    for t, s, v in zip(fln_model.target, fln_model.source, fln_model.FLN):
        fln_completed[t][s] = float(v)
    external = st.fln_completed[~st.fln_completed.source.isin(AREAS)].groupby("target")["FLN"].sum()
    for t in areas:
        fln_completed[t]["external"] = float(external.get(t, 0.0))
    cocomac = {t: {} for t in areas}
    for t, s, sp, tp in st.cocomac[["target", "source", "source_pattern", "target_pattern"]].itertuples(
            index=False):
        cocomac[t][s] = {"source_pattern": None if sp is None else list(sp),
                         "target_pattern": None if tp is None else list(tp)}
    sln = {t: {} for t in areas}
    sln.update(_nested(st.sln_completed, "SLN"))
    fln_data = {t: {} for t in areas}
    fln_data.update(_nested(st.fln.mapped, "FLN"))
    return {
        "SLN_completed": _floats(sln),
        "realistic_neuronal_numbers": _floats(neurons.to_dict(orient="index")),
        "total_thicknesses": _floats(st.total_um.to_dict()),
        "laminar_thicknesses": _floats(st.thickness.laminar[list(LAYERS)].to_dict(orient="index")),
        "FLN_completed": fln_completed,
        "FLN_Data_FV91": _floats(fln_data),
        "SLN_Data_FV91": _floats(_nested(st.sln_data, "SLN")),
        "cocomac_completed": cocomac,
        "architecture_completed": {a: int(v) for a, v in st.architecture.items()},
        "neuronal_densities": _floats(st.densities.table.to_dict(orient="index")),
        "category_density": _floats(st.densities.category.to_dict(orient="index")),
    }


def _floats(obj):
    """Nested dict with every leaf a Python float (as upstream's JSON)."""
    if isinstance(obj, dict):
        return {k: _floats(v) for k, v in obj.items()}
    return float(obj)
