"""Stages B and C: neuron numbers, indegrees, synapses, weights, scaling -- one concept
(the network's structure from the anatomy and the parameters, and its rescaling), long
because upstream's stage B has many steps, reproduced one by one.

``build(params)`` turns the processed anatomy of :mod:`mam_xr.anatomy` (stage A)
into the structure Dataset of :func:`mam_xr.flat.structure_from_flat`
(docs/structure.md, "How it is computed" and "Down-scaling").  Upstream's quirks are
reproduced on purpose (docs/structure.md, the list after the steps): the ln(1+x) series for
areas of at least 100 mm², the float cancellation in ln(1 - x) below, the
``ss4(L2/3)`` synapse layer, the TH conversion factor summed over absent L4
sources, the FLN normalisation including the non-visual share, the isclose
zeroing of ``K_prime_original.npy`` and the unscaled weight SD.

The computation runs on plain arrays in the labelled layout
``[area, pop, source_area, source_pop]`` (32 x 8 x 32 x 8, absent TH L4
populations hold 0) and switches to upstream's flat 254 x 255 form only for
stage C and the assembly.  Nothing loops over projections.
"""

from __future__ import annotations

import csv
import functools
import json
import os
import re
import warnings
from pathlib import Path

import numpy as np
import xarray as xr

from . import data as _data
from .errors import ParameterError, invalid
from .flat import AREAS, POPS, exists, from_flat_vector, structure_from_flat, to_flat_matrix, to_flat_vector
from .params import Params
from . import rates as rates_module
from .rates import read_rates_json

__all__ = ["build", "stage_b", "binzegger_table", "local_template",
           "mean_connection_probability", "psc_per_psp", "read_fullscale_rates", "fullscale_rates",
           "rescale"]

LAYERS: tuple[str, ...] = ("1", "23", "4", "5", "6")
_EXC = np.array([p.endswith("E") for p in POPS])
_NA, _NP, _NL = len(AREAS), len(POPS), len(LAYERS)

# Hard-coded constants of upstream's stage B (docs/structure.md, steps 1-4).
SIGMA_MM = 0.29653208289812366          # width of the Gaussian connection profile
C0 = 0.1429914097112598                 # peak connection probability
SUBCORTICAL = 0.013                     # subcortical share of synapses
E_SPECIFICITY = 0.93                    # share of FB synapses onto E cells
SLN_FB, SLN_FF = 0.35, 0.65             # hierarchy thresholds
SERIES_AREA_MM2 = 100.0                 # switch to the (ln(1+x)) series, step 2
SERIES_TERMS = 20

_R0 = np.sqrt(1.0 / np.pi)
#: Mean PD14 connection probability over a 1 mm² disk around its centre (docs/structure.md, step 2)
CBAR_PD14 = (2 * C0 * SIGMA_MM ** 2 / _R0 ** 2) * (1 - np.exp(-_R0 ** 2 / (2 * SIGMA_MM ** 2)))

# Termination patterns by hierarchy (step 3), as 6-layer masks (layers 1..6)
# and 5-layer masks (1, 23, 4, 5, 6).
_HIER6 = {"C": np.array([1, 1, 1, 1, 1, 1], bool), "M": np.array([1, 1, 1, 0, 1, 1], bool),
          "F": np.array([0, 0, 0, 1, 0, 0], bool)}
_HIER5 = {"C": np.array([1, 1, 1, 1, 1], bool), "M": np.array([1, 1, 0, 1, 1], bool),
          "F": np.array([0, 0, 1, 0, 0], bool)}


# --- parameters ---------------------------------------------------------------

def _network(params):
    """The network part of a :class:`mam_xr.params.Params` (or the part itself)."""
    if params is None:
        params = Params()
    return getattr(params, "network", params)


def _scaling(net) -> tuple[float, float]:
    """(N_scaling, K_scaling) of the network parameters, checked: each in (0, 1]
    and every population keeps at least one neuron."""
    eta = float(getattr(net, "N_scaling", net.scale))
    kappa = float(getattr(net, "K_scaling", net.scale))
    for name, value in (("N_scaling", eta), ("K_scaling", kappa)):
        if not (np.isfinite(value) and 0 < value <= 1):
            raise ParameterError(invalid(name, value, "a number in (0, 1]"))
    return eta, kappa


def _identity(params) -> dict:
    """Dataset attrs naming the parameters: the full JSON and the network label."""
    if hasattr(params, "to_json"):
        return {"params": params.to_json(), "network_label": params.network_label()}
    net = _network(params)
    network = {k: v for k, v in net.model_dump(mode="json").items()
               if not (k in ("neuron_scaling", "indegree_scaling") and v is None)}
    return {"params": json.dumps({"network": network}, sort_keys=True, separators=(",", ":"))}


# --- raw stage-B inputs (docs/data.md) ------------------------------------------

def _raw(name, data_dir):
    return _data.fetch(_data.RAW + name, data_dir)


def _rows(path: Path, skip: int = 2, delimiter: str = "\t") -> list[list[str]]:
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f, delimiter=delimiter))
    return rows[skip:]


@functools.lru_cache(maxsize=4)
def _pd14(data_dir) -> tuple[np.ndarray, np.ndarray]:
    """PD14 neurons per mm² (8,) and connection probabilities [target, source] (8, 8)."""
    n = {r[0]: float(r[1]) for r in _rows(_raw("Numbers_V1.csv", data_dir)) if r and r[0]}
    rows = _rows(_raw("Intrinsic_Connectivity.csv", data_dir), skip=2)
    header = [h for h in rows[0]]
    table = {r[0]: r for r in rows[1:] if r and r[0]}
    cols = [header.index(p) for p in POPS]
    P = np.array([[float(table[t][c]) for c in cols] for t in POPS])
    return np.array([n[p] for p in POPS]), P


@functools.lru_cache(maxsize=4)
def _intrinsic_fln_mean(data_dir) -> float:
    rows = _rows(_raw("Intrinsic_FLN_Data.csv", data_dir))
    return float({r[0]: r[1] for r in rows if r and r[0]}["mean"])


def _digits(s: str) -> str:
    return "".join(re.findall(r"\d", s))


@functools.lru_cache(maxsize=4)
def _binzegger_rows(data_dir) -> tuple:
    """Parsed ``BinzeggerData.csv`` rows: (type, pop index, synapse layer index,
    occurrence of the type, synapses per neuron, % corticocortical) (docs/structure.md, step 3)."""
    rows = _rows(_raw("BinzeggerData.csv", data_dir), skip=2)
    header = rows[0]
    cc_col = header.index("corticocortical")
    occurrence: dict[str, float] = {}
    out = []
    for r in rows[1:38]:  # upstream reads 37 rows: cortical types + TCs, TCn, TIs
        name = r[0]
        if name and name not in occurrence:
            occurrence[name] = float(r[2]) if r[2] else np.nan
        soma = _digits(re.sub(r"\(.*?\)", "", name))
        if soma in ("", "1"):   # thalamic, unnamed and layer-1 types carry no model pop
            continue
        # Synapse layer: the row's layer column, else the part of the name after
        # the last '(' -- so ss4(L2/3) lands in L2/3 (an upstream quirk, docs/structure.md).
        layer = _digits(r[1]) if r[1] else _digits(name.rsplit("(", 1)[-1])
        pop = soma + ("I" if "b" in name else "E")
        out.append((name, POPS.index(pop), LAYERS.index(layer), occurrence[name],
                    float(r[3]), float(r[cc_col])))
    return tuple(out)


def binzegger_table(shares_model: np.ndarray, data_dir=None) -> np.ndarray:
    """P(target pop | synapse layer) of cortico-cortical synapses, (5 layers, 8 pops).

    ``shares_model`` are the V1 population shares N_{V1,p}/N_{V1,total}; the
    Binzegger occurrences are re-weighted to them (docs/structure.md, step 3).
    Rows sum to 1.
    """
    rows = _binzegger_rows(data_dir)
    types = {}
    for name, pop, _, occ, _, _ in rows:
        types.setdefault(name, (pop, occ))
    occ_pop = np.zeros(_NP)
    for pop, occ in types.values():
        occ_pop[pop] += occ
    q_b = occ_pop / occ_pop.sum()
    pop = np.array([r[1] for r in rows])
    layer = np.array([r[2] for r in rows])
    occ, nsyn, cc = (np.array([r[i] for r in rows]) for i in (3, 4, 5))
    w = cc / 100 * nsyn * occ / 100 * shares_model[pop] / q_b[pop]
    table = np.zeros((_NL, _NP))
    np.add.at(table, (layer, pop), w)
    return table / table.sum(axis=1, keepdims=True)


# --- local connectivity (docs/structure.md, step 2) ------------------------------------

def mean_connection_probability(area_mm2: float) -> float:
    """Mean of C0 exp(-d²/2σ²) over pairs of random points of a disk of ``area_mm2``."""
    from scipy.integrate import quad

    R = np.sqrt(area_mm2 / np.pi)
    two_s2 = 2 * SIGMA_MM ** 2

    def integrand(r):
        theta = np.arctan(np.sqrt((2 * R - r) / (2 * R + r)))
        return r * np.exp(-r * r / two_s2) * (4 * theta - np.sin(4 * theta))

    # quad's default tolerances on [0, 2R], as upstream: the result is off by
    # ~6e-11 relative (the sqrt end point), but the rounding in local_template
    # needs upstream's exact value (0.04709082640747767 for 1 mm²).
    value, _ = quad(integrand, 0.0, 2 * R)
    return 2 * C0 / area_mm2 * value


def _log_one_minus(x: np.ndarray, area_mm2: float) -> np.ndarray:
    """Upstream's ln(1 - x): literal below 100 mm², else the 20-term series of
    ln(1 + x) (sic; an upstream quirk, docs/structure.md)."""
    if area_mm2 < SERIES_AREA_MM2:
        return np.log(1 - x)
    out = np.zeros_like(x)
    for k in range(1, SERIES_TERMS + 1):
        out = out + (-1) ** (k + 1) * x ** k / k
    return out


def local_template(area_mm2: float, n: np.ndarray, P: np.ndarray,
                   cbar: float | None = None) -> np.ndarray:
    """PD14-like indegrees K'_ij(a) [target, source] (8, 8) for a disk of area a (mm²)."""
    if cbar is None:
        cbar = mean_connection_probability(area_mm2)
    C = P * cbar / CBAR_PD14
    x = 1.0 / (np.outer(n, n) * area_mm2 ** 2)
    syn = np.round(_log_one_minus(C, area_mm2) / _log_one_minus(x, area_mm2))  # half-even
    return syn / (n[:, None] * area_mm2) + 0.0   # + 0.0: no -0.0 entries


# --- weights (docs/structure.md, step 5) ------------------------------------------------

def psc_per_psp(C_m: float, tau_m: float, tau_syn: float) -> float:
    """PSC amplitude (pA) that gives a 1 mV peak PSP in ``iaf_psc_exp`` (docs/structure.md, step 5)."""
    r = tau_m / tau_syn
    f = (1 / C_m) * tau_m * tau_syn / (tau_syn - tau_m) * (
        r ** (-tau_m / (tau_m - tau_syn)) - r ** (-tau_syn / (tau_m - tau_syn)))
    return 1.0 / f


def _weights(net):
    """Mean weights and SDs (pA) [area, pop, source_area, source_pop] and the
    external weight (docs/structure.md, step 5)."""
    neu, con = net.neuron, net.connection
    pe = psc_per_psp(neu.C_m, neu.tau_m, neu.tau_syn_ex)
    pi = psc_per_psp(neu.C_m, neu.tau_m, neu.tau_syn_in)
    w_src = np.where(_EXC, con.PSP_e * pe, con.g * con.PSP_e * pi)        # by source pop
    both_e = _EXC[:, None] & _EXC[None, :]
    rel = np.full((_NP, _NP), con.PSC_rel_sd_normal)
    if con.lognormal_weights:
        rel[both_e | (not con.lognormal_EE_only)] = con.PSC_rel_sd_lognormal
    # intra-area block [pop, source_pop]
    w_intra = np.broadcast_to(w_src, (_NP, _NP)).copy()
    sd_intra = rel * np.abs(w_intra)
    i23, i4 = POPS.index("23E"), POPS.index("4E")
    w_intra[i23, i4] = con.PSP_e_23_4 * pe
    sd_intra[i23, i4] = con.PSC_rel_sd_normal * w_intra[i23, i4]   # always the normal rule
    # cortico-cortical block: chi for all, chi_I more onto inhibitory targets
    fac = np.where(_EXC, con.chi, con.chi * con.chi_I)[:, None]
    w_cc = fac * w_src[None, :]
    sd_cc = fac * rel * np.abs(w_src)[None, :]
    same = np.eye(_NA, dtype=bool)[:, None, :, None]
    W = np.where(same, w_intra[None, :, None, :], w_cc[None, :, None, :])
    W_sd = np.where(same, sd_intra[None, :, None, :], sd_cc[None, :, None, :])
    return W, W_sd, con.PSP_ext * pe


# --- stage B (docs/structure.md, steps 1-4) ----------------------------------------------------

def _patterns(strings, source: bool) -> tuple[np.ndarray, np.ndarray]:
    """CoCoMac pattern strings (area, source_area) -> (values (32, 32, 6), present)."""
    s = np.ascontiguousarray(strings, dtype="<U6")
    present = np.char.str_len(s) == 6
    chars = s.view("<U1").reshape(s.shape + (6,))
    vals = np.zeros(chars.shape)
    digit = np.isin(chars, list("0123456789"))
    vals[digit] = chars[digit].astype(float)
    vals[chars == "X"] = 2
    unknown = chars == "?"
    if source:  # '?' is 0 in layers 1 and 4, unknown elsewhere (docs/anatomy.md)
        vals[unknown] = np.where(np.isin(np.arange(6), [0, 3]), 0, -1)[
            np.nonzero(unknown)[-1]]
    else:
        vals[unknown] = -1
    return vals, present


def _hierarchy(sln: np.ndarray, table: dict) -> np.ndarray:
    """Termination-layer mask from SLN (FF > 0.65 'F', FB < 0.35 'M', else 'C';
    exactly 0.35 matches nothing, as upstream)."""
    s = np.nan_to_num(sln, nan=0.5)[..., None]
    return np.where(s > SLN_FF, table["F"],
                    np.where(s < SLN_FB, table["M"], np.where(s > SLN_FB, table["C"], False)))


@functools.lru_cache(maxsize=2)
def _anatomy_cached(data_dir, env_data_dir):
    from . import anatomy

    return anatomy.process(data_dir=data_dir)


def _anatomy(data_dir) -> xr.Dataset:
    """Stage A, computed once per data location (treat the result as read-only)."""
    data_dir = None if data_dir is None else os.fspath(data_dir)
    return _anatomy_cached(data_dir, os.environ.get("MAM_XR_DATA_DIR"))


def stage_b(net, anat: xr.Dataset, data_dir=None) -> dict[str, np.ndarray]:
    """Model neuron numbers and synapse numbers from the processed anatomy.

    Returns plain arrays in the labelled layout:
    ``N``, ``N_full`` (32, 8); ``synapses`` (32, 8, 32, 8, model patch, after
    E-specificity); ``synapses_ext`` (32, 8, incl. the fac_nu_ext factors);
    ``rho_syn`` (per mm²·µm), ``F_int_patch`` and ``c`` (32,), ``E`` (32,).
    """
    con = net.connection
    s = float(net.surface)
    S = anat["surface"].values                                  # mm²
    D = anat["total_thickness"].values                          # µm
    d = anat["laminar_thickness"].transpose("area", "layer").sel(layer=list(LAYERS)).values  # mm
    N_full = anat["neurons_full"].transpose("area", "pop").sel(pop=list(POPS)).values
    N = N_full * s / S[:, None]
    has = N_full > 0
    v1 = AREAS.index("V1")

    # step 1: synapse volume density, the same for all areas
    rho_syn = con.av_indegree_V1 * N_full[v1].sum() / (S[v1] * D[v1])

    # step 2: local connectivity
    n, P = _pd14(data_dir)
    f_int = _intrinsic_fln_mean(data_dir)
    K_micro = local_template(s, n, P)
    K_full = np.stack([local_template(a, n, P) for a in S])      # (32, 8, 8)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(K_full > 0, K_micro / K_full, 0.0)
    F_patch = f_int * ratio.sum(axis=(1, 2)) / (K_full > 0).sum(axis=(1, 2))
    # TH: the sum includes its absent L4 sources (an upstream quirk, docs/structure.md)
    c = F_patch * rho_syn * s * D / (K_micro[None] * N[:, :, None]).sum(axis=(1, 2))
    K_local = c[:, None, None] * K_micro[None] * (has[:, :, None] & has[:, None, :])

    # step 3: FLN normalisation, including the non-visual share
    fln = anat["FLN"].transpose("area", "source_area").values
    fln_total = fln.sum(axis=1) + anat["FLN_external"].values
    with np.errstate(divide="ignore", invalid="ignore"):
        F = np.where(fln_total[:, None] > 0,
                     (1 - f_int - SUBCORTICAL) * fln / fln_total[:, None], 0.0)
    connected = anat["cocomac_connected"].transpose("area", "source_area").values.astype(bool)
    connected &= ~np.eye(_NA, dtype=bool)
    sln = anat["SLN"].transpose("area", "source_area").values

    # step 3: P(target pop | layer), per area (TH without L4)
    P_v = np.broadcast_to(binzegger_table(N[v1] / N[v1].sum(), data_dir),
                          (_NA, _NL, _NP)).copy()
    for a in np.nonzero(~has[:, POPS.index("4E")])[0]:
        keep = [LAYERS.index(v) for v in ("23", "5", "6")]
        share = d[a, keep] / d[a, keep].sum()
        for p4, targets in (("4E", ("23E", "5E", "6E")), ("4I", ("23I", "5I", "6I"))):
            idx = [POPS.index(t) for t in targets]
            P_v[a, :, idx] += share[:, None] * P_v[a, :, POPS.index(p4)][None, :]
            P_v[a, :, POPS.index(p4)] = 0.0

    # step 3: source side: X * Y per source population (23E, 5E, 6E only)
    sp, has_sp = _patterns(anat["source_pattern"].transpose("area", "source_area").values, True)
    sigma = np.nan_to_num(sln, nan=0.0)
    supra = (sp[..., 0:3] != 0).any(-1)
    infra = (sp[..., 4:6] != 0).any(-1)
    sig_star = np.where(~supra, 0.0, np.where(~infra, 1.0, sigma))
    XY = np.zeros((_NA, _NA, _NP))
    w56 = np.where(sp[..., 4:6] != 0, 10.0 ** sp[..., 4:6], 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        y56_sp = np.where(infra[..., None], w56 / w56.sum(-1, keepdims=True), 0.0)
    n56 = N_full[:, [POPS.index("5E"), POPS.index("6E")]]
    y56_data = (n56 / n56.sum(-1, keepdims=True))[None, :, :]    # of the source area
    i23, i5, i6 = POPS.index("23E"), POPS.index("5E"), POPS.index("6E")
    XY[..., i23] = np.where(has_sp, np.where(supra, sig_star, 0.0), sigma)
    for k, ip in enumerate((i5, i6)):
        XY[..., ip] = np.where(has_sp, (1 - sig_star) * y56_sp[..., k],
                               (1 - sigma) * y56_data[..., k])

    # step 3: target side: layer shares Z (32, 32, 5)
    tp, has_tp = _patterns(anat["target_pattern"].transpose("area", "source_area").values, False)
    tp = np.where((tp == -1) & _hierarchy(sln, _HIER6), 2.0, tp)
    w6 = np.where(tp > 0, 10.0 ** tp, 0.0)
    p6 = w6.sum(-1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        z6 = np.where(p6 > 0, w6 / p6, 0.0)
    Z_tp = np.stack([z6[..., 0], z6[..., 1] + z6[..., 2], z6[..., 3], z6[..., 4], z6[..., 5]], -1)
    hier = _hierarchy(sln, _HIER5)
    dT = np.where(hier, d[:, None, :], 0.0)
    dT[..., 0] = 0.0
    pT = dT.sum(-1, keepdims=True)
    l1 = hier[..., :1]
    with np.errstate(divide="ignore", invalid="ignore"):
        Z_hier = np.where(pT > 0, np.where(l1, 0.5, 1.0) * dT / pT, 0.0)
    Z_hier[..., 0] = np.where(hier[..., 0], 0.5, 0.0)
    Z = np.where(has_tp[..., None], Z_tp, Z_hier)

    # Full-area CC synapse numbers, then the model patch (S = N s / S_T)
    syn_full_T = rho_syn * S * D
    onto = np.einsum("tbv,tvi->tib", Z, P_v)                     # (T, i, B)
    amount = (syn_full_T[:, None] * F * connected)[:, None, :] * onto
    N_cc_full = amount[..., None] * XY[:, None, :, :]            # (T, i, B, j)
    with np.errstate(divide="ignore", invalid="ignore"):
        to_model = np.where(has, N / N_full, 0.0)
    S_cc = N_cc_full * to_model[:, :, None, None]

    # step 3: E-specificity of feedback projections
    fb = connected & (sln < SLN_FB)
    sum_e = S_cc[:, _EXC].sum(axis=(1, 3))
    sum_i = S_cc[:, ~_EXC].sum(axis=(1, 3))
    total = sum_e + sum_i
    ok = fb & (sum_e > 0) & (sum_i > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        fac_e = np.where(ok, E_SPECIFICITY / (sum_e / total), 1.0)
        fac_i = np.where(ok, (1 - E_SPECIFICITY) / (sum_i / total), 1.0)
    S_cc *= np.where(_EXC[None, :, None], fac_e[:, None, :], fac_i[:, None, :])[..., None]

    # step 4: external input: the synapses not modelled explicitly, equal indegree
    syn_patch = rho_syn * s * D
    E = syn_patch * (1 - F_patch) - S_cc.sum(axis=(1, 2, 3))
    K_ext = E / np.where(has, N, 0.0).sum(axis=1)
    if (K_ext < 0).any():  # e.g. large surfaces: more CC synapses than the non-local budget
        bad = [AREAS[a] for a in np.nonzero(K_ext < 0)[0]]
        warnings.warn(f"surface={s} gives a negative external indegree in {', '.join(bad)}: "
                      "the explicit cortico-cortical synapses exceed the non-local synapses "
                      "(docs/structure.md, 'Caveat: large surfaces'); upstream computes the same numbers",
                      RuntimeWarning, stacklevel=3)
    S_ext = K_ext[:, None] * N * has
    S_ext[:, i5] *= con.fac_nu_ext_5E
    S_ext[:, i6] *= con.fac_nu_ext_6E
    th = AREAS.index("TH")
    S_ext[th, [i23, i5]] *= con.fac_nu_ext_TH

    synapses = S_cc
    idx = np.arange(_NA)
    synapses[idx, :, idx, :] = K_local * N[:, :, None]
    return {"N": N, "N_full": N_full, "synapses": synapses, "synapses_ext": S_ext,
            "rho_syn": rho_syn, "F_int_patch": F_patch, "c": c, "E": E,
            "K_micro": K_micro, "P_v": P_v}


# --- stage C (docs/structure.md, steps 5-8) ---------------------------------------------

def read_fullscale_rates(source, data_dir=None) -> np.ndarray:
    """Full-scale rates (spikes/s) as a (32, 8) array (NaN for absent pops).

    ``source`` is "upstream" (the pinned ``tests/fullscale_rates.json``), a
    path to a JSON ``{area: {pop: rate}}`` (a list value counts by its first
    element, as upstream) or to a run store (its simulated population rates,
    :func:`mam_xr.rates.rates_from_run_store`).  The rates of "theory" and of
    an atlas store depend on the network parameters: :func:`fullscale_rates`
    reads those.
    """
    return fullscale_rates(source, data_dir)[0]


def fullscale_rates(source, data_dir=None, network=None, branch: int | None = None):
    """Full-scale rates (32, 8) of any path source and their provenance (a dict).

    As :func:`read_fullscale_rates`, plus an atlas store (the rates at
    ``network``'s value of the swept parameter on ``branch``, default the
    branch reached by the integration from zero rates; see
    :func:`mam_xr.rates.rates_from_atlas`).  Without ``network`` an atlas and
    "theory" are refused.  The provenance has ``source``, ``kind`` ("upstream",
    "json", "run" or "atlas") and, for an atlas, ``branch``.
    """
    if source == "theory" or (network is None and isinstance(source, (str, os.PathLike))
                              and source != "upstream"
                              and rates_module.source_kind(source) == "atlas"):
        raise ParameterError(invalid(
            "fullscale_rates", str(source), "'upstream', a rates JSON path or a run store here: the "
            "model's own full-scale rates (theory, an atlas) depend on the network parameters; build the "
            "structure (mam_xr.structure.build reads them and stores them as its 'fullscale_rates')"))
    if source == "upstream":
        path = _data.fetch("tests/fullscale_rates.json", data_dir)
        flat, provenance = read_rates_json(path, "fullscale_rates"), {"source": "upstream", "kind": "upstream"}
    else:
        if source is None or rates_module.source_kind(source) is None:
            raise ParameterError(invalid("fullscale_rates", str(source), rates_module.SOURCES_EXPECTED))
        try:
            flat, provenance = rates_module.read_source(source, "fullscale_rates", network=network,
                                                        branch=branch)
        except ParameterError:
            raise
        except (TypeError, ValueError) as exc:   # a rate that is not a number
            raise ParameterError(invalid("fullscale_rates", str(source),
                                         f"a JSON file of numeric rates {{area: {{pop: rate}}}} ({exc})")) from None
    out = from_flat_vector(flat).transpose("area", "pop").values
    bad = exists().values & ~np.isnan(out) & ~(np.isfinite(out) & (out >= 0))
    if bad.any():
        a, p = np.argwhere(bad)[0]
        raise ParameterError(invalid("fullscale_rates", str(source), "finite rates >= 0 spikes/s "
                                     f"(found {float(out[a, p])!r} for {AREAS[a]} {POPS[p]})"))
    missing = exists().values & np.isnan(out)
    if missing.any():
        a, p = np.argwhere(missing)[0]
        raise ParameterError(invalid("fullscale_rates", str(source),
                                     f"a rate for every population (missing {AREAS[a]} {POPS[p]})"))
    return out, provenance


def _k_stable(source, data_dir) -> np.ndarray:
    if source == "K_prime_original":
        path = _data.fetch("figures/SchueckerSchmidt2017/K_prime_original.npy", data_dir)
    elif isinstance(source, (str, os.PathLike)) and Path(source).is_file():
        path = Path(source)
    else:
        raise ParameterError(invalid("K_stable", source,
                                     '"K_prime_original", None or the path of a 254 x 254 .npy file'))
    K = np.load(path)
    if K.shape != (len(to_flat_vector(exists())),) * 2:
        raise ParameterError(invalid("K_stable", str(source), "a 254 x 254 indegree matrix"))
    return np.where(np.isclose(K, 0.0), 0.0, K)   # upstream's matrix_to_dict zeroing


def _check_one_neuron(N: np.ndarray, present: np.ndarray, eta: float, net) -> None:
    """Refuse a neuron scaling that leaves a population without a neuron."""
    least = float(N[present].min())
    if eta * least < 1.0:
        a, p = np.argwhere(present & (N == least))[0]
        name = "scale" if getattr(net, "neuron_scaling", None) is None else "N_scaling"
        raise ParameterError(invalid(name, eta, f"at least {1.0 / least:.4g} with surface="
                                                f"{net.surface} mm² (every population keeps one neuron; "
                                                f"{AREAS[a]} {POPS[p]} has {least:.1f} at full scale)"))


def build(params=None, data_dir=None, anatomy: xr.Dataset | None = None) -> xr.Dataset:
    """The model's structure Dataset (docs/structure.md).

    Parameters
    ----------
    params
        :class:`mam_xr.params.Params` or its ``.network`` part; default ``Params()``.
    data_dir
        Directory of upstream's data files (see :func:`mam_xr.data.fetch`).
    anatomy
        Stage-A Dataset of :func:`mam_xr.anatomy.process`, if already computed.

    Returns the Dataset of :func:`mam_xr.flat.structure_from_flat` plus
    ``neurons_full`` (full-area neuron numbers), ``indegree_data`` (the
    data-derived indegrees before ``K_stable`` and scaling), ``intrinsic_fln``
    and ``external_synapses_area`` (per area, model patch).
    """
    net = _network(params)
    con = net.connection
    scale = float(net.scale)
    eta, kappa = _scaling(net)
    rates = provenance = None
    if eta != 1.0 or kappa != 1.0:
        if net.fullscale_rates is None:
            raise ParameterError(invalid("fullscale_rates", None,
                                         '"upstream" or a rates file: down-scaling '
                                         f"(N_scaling={eta}, K_scaling={kappa}) needs full-scale rates"))
        if net.fullscale_rates in rates_module.COMPUTED_SOURCES:
            # the model's own full-scale fixed point, computed by the theory layer
            fixed_point = rates_module.computed_source(net.fullscale_rates)(net, data_dir)
            rates = fixed_point["rate"].transpose("area", "pop").values
        else:
            rates, provenance = fullscale_rates(net.fullscale_rates, data_dir, network=net,
                                                branch=net.fullscale_rates_branch)
    if anatomy is None:
        anatomy = _anatomy(data_dir)

    b = stage_b(net, anatomy, data_dir)
    N4, syn4 = b["N"], b["synapses"]
    _check_one_neuron(N4, b["N_full"] > 0, eta, net)
    W4, W_sd4, w_ext = _weights(net)

    # flat view: N (254,), matrices (254, 255)
    ex = exists()
    N = to_flat_vector(xr.DataArray(N4, dims=("area", "pop")))
    lab = ("area", "pop", "source_area", "source_pop")
    syn = to_flat_matrix(xr.DataArray(syn4, dims=lab),
                         xr.DataArray(b["synapses_ext"], dims=("area", "pop")))
    K_data = syn / N[:, None]
    W = to_flat_matrix(xr.DataArray(W4, dims=lab))
    W = np.concatenate([W, np.full((len(N), 1), w_ext)], axis=1)
    W_sd = np.concatenate([to_flat_matrix(xr.DataArray(W_sd4, dims=lab)),
                           np.full((len(N), 1), np.nan)], axis=1)

    # step 6: stabilised internal indegrees; the external column stays
    K = K_data.copy()
    if con.K_stable is not None:
        K[:, :-1] = _k_stable(con.K_stable, data_dir)
        syn = K * N[:, None]
    J = W * net.neuron.tau_syn_ex / net.neuron.C_m
    dc = np.zeros(len(N))

    # Down-scaling with mean and variance of the input preserved (docs/structure.md):
    # K_scaling enters the DC drive, the weights and the indegrees, N_scaling the neuron numbers.
    if rates is not None:
        tau_m, C_m = net.neuron.tau_m, net.neuron.C_m
        nu = to_flat_vector(xr.DataArray(rates, dims=("area", "pop")))
        x = 1e-3 * tau_m * (J[:, :-1] * K[:, :-1] * nu[None, :]).sum(axis=1)
        x_ext = 1e-3 * tau_m * J[:, -1] * K[:, -1] * net.input.rate_ext
        dc = C_m / tau_m * (1 - np.sqrt(kappa)) * (x + x_ext)
        N = eta * N
        J = J / np.sqrt(kappa)
        W = W / np.sqrt(kappa)                 # W_sd stays unscaled (upstream)
        K = kappa * K
        syn = kappa * eta * syn

    ds = structure_from_flat(
        N=N, K=K, synapses=syn, W=W, W_sd=W_sd, J=J, add_DC_drive=dc,
        distances=anatomy["distance"].transpose("area", "source_area").values,
        delay_e=net.delay.delay_e, delay_i=net.delay.delay_i,
        delay_rel=net.delay.delay_rel, interarea_speed=net.delay.interarea_speed,
        attrs={**_identity(params), "scale": scale,
               **({"N_scaling": eta, "K_scaling": kappa} if (eta, kappa) != (scale, scale) else {}),
               "data_provenance": _data.provenance(data_dir),
               "synapse_density": b["rho_syn"],
               "synapse_density_units": "synapses per (mm² · µm of cortical depth)",
               "surface_mm2": float(net.surface)},
    )
    ds["neurons_full"] = xr.DataArray(np.where(ex.values, b["N_full"], np.nan),
                                      dims=("area", "pop"),
                                      attrs={"units": "1", "long_name":
                                             "neurons of the whole area (realistic, full surface)"})
    ds["indegree_data"] = xr.DataArray(
        np.where(ex.values[:, :, None, None] & ex.values[None, None],
                 syn4 / np.where(N4 > 0, N4, 1.0)[:, :, None, None], np.nan), dims=lab,
        attrs={"units": "1", "long_name": "data-derived indegree before K_stable and scaling"})
    ds["intrinsic_fln"] = xr.DataArray(b["F_int_patch"], dims=("area",), attrs={
        "units": "1", "long_name": "fraction of an area's synapses that are local to the model patch"})
    ds["external_synapses_area"] = xr.DataArray(b["E"], dims=("area",), attrs={
        "units": "1", "long_name": "synapses of the patch not modelled explicitly (before fac_nu_ext)"})
    if rates is not None and net.fullscale_rates == "theory":
        provenance = {"units": "spikes/s", "long_name": "full-scale rates compensated by the DC drive",
                      "source": "theory", "kind": "theory"}
        provenance.update(
            branch=fixed_point.attrs["branch"],
            fullscale_params_label=fixed_point.attrs["fullscale_params_label"],
            residual_max=float(np.nanmax(np.abs(fixed_point["residual"].values))),
            eigenvalue_max_real=float(fixed_point["eigenvalue_max_real"]),
            stable=bool(fixed_point["stable"]))
        ds["fullscale_rates"] = xr.DataArray(np.where(ex.values, rates, np.nan), dims=("area", "pop"),
                                             attrs=provenance)
    elif rates is not None and provenance["kind"] in ("run", "atlas"):
        # which store, and which rates of it (JSON files and upstream's file are named by the params)
        provenance = {"units": "spikes/s", "long_name": "full-scale rates compensated by the DC drive",
                      **provenance}
        ds["fullscale_rates"] = xr.DataArray(np.where(ex.values, rates, np.nan), dims=("area", "pop"),
                                             attrs=provenance)
    return ds


# --- rescaling a built structure (the fast path of sweeps) ---------------------------------

#: Structure variables proportional to the couplings: rescaled by :func:`rescale`.
RESCALED_VARIABLES = ("weight_mean", "weight_sd", "J")
_LABELLED = ("area", "pop", "source_area", "source_pop")
_EXISTS_MASK = exists().values


def rescale(structure: xr.Dataset, *, chi: float | None = None, chi_I: float | None = None,
            g: float | None = None, rate_ext: float | None = None, params=None,
            K_scaling: float | None = None, fullscale_rates=None) -> xr.Dataset:
    """The structure at other χ, χ_I, g or rate_ext, without rebuilding it.

    The couplings are linear in these parameters (docs/theory.md, "Rescaling a
    built structure"): cortico-cortical ones (source area ≠ target area) are
    proportional to χ, and to χ·χ_I onto inhibitory targets; those of
    inhibitory sources to g.  So ``weight_mean``, ``weight_sd`` and ``J`` are
    multiplied by the ratios of new to old values (first g, then χ and χ_I);
    indegrees depend on none of them, and rate_ext enters the theory and the
    simulation through the parameters only.  The DC drive of a down-scaled
    structure, which keeps the full-scale mean input, is updated as a rebuild
    would: by (C_m/τ_m)(1 − √κ)/√κ · 1e-3 τ_m Σ_j ΔJ_ij K_ij ν_j in the scaled
    J and K, plus (C_m/τ_m)(1 − √κ)/√κ · 1e-3 τ_m J_i,ext K_i,ext Δrate_ext.
    The result equals :func:`build` at the new values to a few 1e-15 relative;
    it takes ~1 ms (a build ~1 s).

    Parameters
    ----------
    structure : xr.Dataset
        A structure Dataset (:func:`build`, or :func:`mam_xr.flat.structure_from_flat`).
    chi, chi_I, g, rate_ext : float, optional
        New values (``network.connection.chi``, ``chi_I``, ``g``,
        ``network.input.rate_ext``); None keeps the structure's.
    params : mam_xr.params.Params, optional
        The parameters the structure was built with; default: its
        ``attrs['params']`` (set by :func:`build`).
    K_scaling : float, optional
        Down-scaling factor κ of the indegrees; default ``params.network.K_scaling``.
    fullscale_rates : optional
        Full-scale rates of the DC drive: ``"upstream"``, a rates JSON path or
        rates (area, pop) / 254-vector (spikes/s); default
        ``params.network.fullscale_rates``.

    Returns
    -------
    xr.Dataset
        A new structure Dataset (unchanged variables shared with ``structure``);
        attrs ``params`` and ``network_label`` name the new parameters.

    Raises
    ------
    ParameterError
        No parameters known for the structure, a new value Params rejects,
        or a down-scaled structure (non-zero ``dc_drive``) without ``K_scaling``
        < 1 and full-scale rates.

    Examples
    --------
    >>> s = build(Params.tutorial(scale=1.0, fullscale_rates=None))   # doctest: +SKIP
    >>> s19 = rescale(s, chi=1.9, chi_I=2.0)                          # doctest: +SKIP
    """
    p = _built_with(structure, params)
    con = p.network.connection
    old = {"chi": con.chi, "chi_I": con.chi_I, "g": con.g, "rate_ext": p.network.input.rate_ext}
    given = {k: v for k, v in (("chi", chi), ("chi_I", chi_I), ("g", g), ("rate_ext", rate_ext))
             if v is not None}
    q = _updated(p, given) if given else p
    con_new = q.network.connection
    new = {"chi": con_new.chi, "chi_I": con_new.chi_I, "g": con_new.g,
           "rate_ext": q.network.input.rate_ext}
    factors = []
    if new["g"] != old["g"]:
        inh_source = ~_EXC[None, None, None, :]
        factors.append(np.where(inh_source, new["g"] / old["g"], 1.0))
    if (new["chi"], new["chi_I"]) != (old["chi"], old["chi_I"]):
        cc = ~np.eye(_NA, dtype=bool)[:, None, :, None]
        inh_target = ~_EXC[None, :, None, None]
        factors.append(np.where(cc, np.where(inh_target, (new["chi"] * new["chi_I"])
                                             / (old["chi"] * old["chi_I"]), new["chi"] / old["chi"]),
                                1.0))
    out = structure.copy(deep=False)
    for name in RESCALED_VARIABLES:
        if name in structure and factors:
            da = structure[name]
            if da.dims != _LABELLED:
                raise ParameterError(invalid(f"structure.{name}", f"<DataArray with dims {da.dims}>",
                                             f"dims {_LABELLED}"))
            values = da.values
            for f in factors:
                values = values * f
            out.variables[name].values = values      # a new Variable of the copy; no alignment
    dc = structure["dc_drive"]
    d_rate_ext = new["rate_ext"] - old["rate_ext"]
    if (factors or d_rate_ext) and bool(np.any(dc.values[_EXISTS_MASK] != 0)):
        scale, nu = _dc_per_input(p, K_scaling, fullscale_rates)
        delta = np.zeros(dc.shape)
        if factors:
            dJK = (out["J"].values - structure["J"].values) * structure["indegree"].values
            dJK *= np.where(np.isnan(nu), 0.0, nu)[None, None]
            np.copyto(dJK, 0.0, where=np.isnan(dJK))          # absent populations
            delta += dJK.sum(axis=(2, 3))
        if d_rate_ext:
            ext = structure["external_J"].values * structure["external_indegree"].values
            delta += np.where(np.isnan(ext), 0.0, ext) * d_rate_ext
        out.variables["dc_drive"].values = dc.values + scale * delta
    out.attrs = {**structure.attrs, **_identity(q)}
    return out


def _updated(p, given: dict):
    """``p`` with new network values, validated as Params.update does (without its shorthand
    expansion, which took a third of rescale's time in a sweep)."""
    from pydantic import ValidationError

    from .params import deep_merge, format_validation_error

    where = {"chi": "connection", "chi_I": "connection", "g": "connection", "rate_ext": "input"}
    nested: dict = {"network": {}}
    for name, value in given.items():
        nested["network"].setdefault(where[name], {})[name] = value
    try:
        return type(p).model_validate(deep_merge(p.model_dump(), nested))
    except ValidationError as exc:
        raise ParameterError(format_validation_error(exc)) from None


def _built_with(structure, params):
    """The Params a structure was built with: given, else its ``attrs['params']``."""
    if not isinstance(structure, xr.Dataset) or "J" not in structure or "dc_drive" not in structure:
        raise ParameterError(invalid("structure", type(structure).__name__,
                                     "a structure xarray.Dataset with J and dc_drive"))
    if params is None:
        text = structure.attrs.get("params")
        if not isinstance(text, str):
            raise ParameterError(invalid("params", None, "the Params the structure was built with "
                                         "(it has no attrs['params'])"))
        return Params.from_json(text)
    if not isinstance(params, Params):
        raise ParameterError(invalid("params", type(params).__name__, "a mam_xr.params.Params"))
    return params


def _dc_per_input(p, K_scaling, fullscale_rates):
    """(C_m/τ_m)(1 − √κ)/√κ · 1e-3 τ_m, the DC drive (pA) per unit of the scaled input
    Σ_j J_ij K_ij ν_j (mV spikes/s), and the full-scale rates (area, pop) in spikes/s."""
    kappa = p.network.K_scaling if K_scaling is None else float(K_scaling)
    source = p.network.fullscale_rates if fullscale_rates is None else fullscale_rates
    if kappa == 1.0 or source is None:
        raise ParameterError(invalid(
            "K_scaling", kappa, "the structure's down-scaling factor (< 1) and its fullscale_rates "
            "(the structure has a DC drive, which changes with the couplings)"))
    if isinstance(source, (str, os.PathLike)):
        nu = read_fullscale_rates(source)
    elif isinstance(source, xr.DataArray):
        nu = source.transpose("area", "pop").reindex(area=list(AREAS), pop=list(POPS)).values
    else:
        nu = np.asarray(source, dtype=float)
        if nu.shape == (int(_EXISTS_MASK.sum()),):
            full = np.full((_NA, _NP), np.nan)
            full[_EXISTS_MASK] = nu             # flat order = existing (area, pop), row-major
            nu = full
        elif nu.shape != (_NA, _NP):
            raise ParameterError(invalid("fullscale_rates", f"<array of shape {nu.shape}>",
                                         "254 rates in mam_xr.flat order or a (32, 8) array"))
    n = p.network.neuron
    return n.C_m / n.tau_m * (1.0 - np.sqrt(kappa)) / np.sqrt(kappa) * 1e-3 * n.tau_m, nu
