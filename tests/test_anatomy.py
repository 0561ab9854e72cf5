"""Stage A (mam_xr.anatomy) against upstream's stored outputs and construction.md §13.

Expected values come from upstream files (viscortex_processed_data_backup.json,
viscortex_raw_data.json, the reference structures) or from the numbers printed in
construction.md §3 and §13.3; tolerances follow the digits printed there.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from mam_xr import anatomy
from mam_xr.data import fetch
from mam_xr.errors import DataError
from mam_xr.flat import AREAS, POPS
from conftest import load_reference

#: Stage A is sums, products and least-squares fits of the same data: float rounding only.
RTOL_UPSTREAM = 1e-12


@pytest.fixture(scope="module")
def ds():
    return anatomy.process()


@pytest.fixture(scope="module")
def upstream_form():
    return anatomy.process_as_upstream_dict()


def _json(name):
    with open(fetch(name)) as f:
        return json.load(f)


@pytest.fixture(scope="module")
def backup():
    return _json("viscortex_processed_data_backup.json")


def _leaves(tree, prefix=()):
    """Flatten a nested dict to {key path: value}."""
    if isinstance(tree, dict):
        out = {}
        for k, v in tree.items():
            out.update(_leaves(v, prefix + (k,)))
        return out
    return {prefix: tree}


@pytest.mark.parametrize("key", ["realistic_neuronal_numbers", "total_thicknesses",
                                 "laminar_thicknesses", "SLN_completed"])
def test_matches_upstream_backup(upstream_form, backup, key):
    expected = _leaves(backup[key])
    actual = _leaves(upstream_form[key])
    assert sorted(actual) == sorted(expected)
    paths = sorted(expected)
    np.testing.assert_allclose([actual[p] for p in paths], [expected[p] for p in paths],
                               rtol=RTOL_UPSTREAM, atol=0, err_msg=key)


def test_backup_holds_571_sln_values(backup):
    assert len(_leaves(backup["SLN_completed"])) == 571


def test_dataset_equals_upstream_form(ds, upstream_form):
    """The labelled Dataset and the nested-dict form carry the same numbers."""
    neurons = pd.DataFrame(upstream_form["realistic_neuronal_numbers"]).T.loc[list(AREAS), list(POPS)]
    np.testing.assert_array_equal(ds["neurons_full"].values, neurons.values)
    sln = pd.DataFrame(upstream_form["SLN_completed"]).T.reindex(index=list(AREAS), columns=list(AREAS))
    np.testing.assert_array_equal(ds["SLN"].values, sln.values)
    fln = pd.DataFrame(upstream_form["FLN_completed"]).T.reindex(index=list(AREAS))
    np.testing.assert_array_equal(ds["FLN"].values, fln.reindex(columns=list(AREAS)).fillna(0).values)
    np.testing.assert_array_equal(ds["FLN_external"].values, fln["external"].values)


def test_layout_and_attrs(ds):
    assert dict(ds.sizes) == {"area": 32, "source_area": 32, "pop": 8, "layer": 5}
    assert list(ds["area"].values) == list(AREAS) == list(ds["source_area"].values)
    assert list(ds["pop"].values) == list(POPS)
    assert list(ds["layer"].values) == ["1", "23", "4", "5", "6"]
    missing = [v for v in ds.data_vars if not {"units", "long_name"} <= set(ds[v].attrs)]
    assert missing == []
    assert ds["neurons_full"].dims == ("area", "pop")
    assert ds["FLN"].dims == ("area", "source_area")
    assert ds["source_pattern"].dtype == np.dtype("<U6")


def test_neurons_match_reference_structure(ds):
    """Model neuron numbers N = N_full / S_A (s = 1 mm²) equal upstream's M.N_vec."""
    ref = load_reference("structure_fullscale_default.npz")
    N = (ds["neurons_full"] / ds["surface"]).values.ravel()
    np.testing.assert_allclose(N[N > 0], ref["N"], rtol=RTOL_UPSTREAM)
    assert float(ds["neurons_full"].sel(area="TH", pop="4E")) == 0.0
    assert float(ds["neurons_full"].sel(area="TH", pop="4I")) == 0.0
    assert int((ds["neurons_full"] > 0).sum()) == 254


def test_distance_matches_reference_structure(ds):
    ref = load_reference("structure_fullscale_default.npz")
    np.testing.assert_array_equal(ds["distance"].values, ref["distances"])


def test_fitted_constants(ds):
    """construction.md §3.2, §3.3, §3.4, §3.8 (printed to 16-17 digits)."""
    expected = {
        "neun_to_nissl_slope": 0.9680906805214337, "neun_to_nissl_intercept": 17279.965535761905,
        "thickness_fit_slope": -2081.8013051818407, "thickness_fit_intercept": 12094.628749113332,
        "l4_fit_slope": 0.44030834424172294, "l4_fit_intercept": -2.006204988617604,
        "edr_intercept": -3.0932607748553234, "edr_slope": -0.11435667515359622,
        "sln_fit_intercept": -0.1516142, "sln_fit_slope": -1.5343200,
    }
    actual = {k: ds.attrs[k] for k in expected}
    np.testing.assert_allclose(list(actual.values()), list(expected.values()), rtol=1e-12)
    assert ds.attrs["edr_points"] == 331


def test_overall_densities(ds):
    """§3.2 examples and §13.3 table (printed to 0.1 /mm³)."""
    expected = pd.Series({"V1": 173360.0, "V2": 111730.0, "V4": 86223.0, "MT": 81153.0,
                          "TH": 49446.0, "DP": 63763.0, "FEF": 60822.5, "V4t": 80648.8,
                          "MSTd": 65327.1, "FST": 53725.8, "CITd": 54902.0, "VOT": 78523.0})
    actual = ds["density_overall"].sel(area=list(expected.index)).to_series()
    np.testing.assert_allclose(actual.values, expected.values, atol=0.051)


def test_category_densities(ds):
    """§13.3 type means (overall / 23 / 4 / 5 = 6), read off areas filled with their type mean."""
    by_type = {"TH": (49446.0, 49012.5, 0.0, 50015.8), "FST": (53725.8, 51723.6, 88471.3, 51209.3),
               "MSTd": (65327.1, 62132.8, 115446.0, 59947.3),
               "V4t": (80648.8, 77437.5, 150877.8, 69309.8),
               "VP": (111730.0, 107228.9, 192008.8, 93575.3),
               "V1": (173360.0, 166264.3, 190654.3, 152108.5)}
    d = ds["density"].sel(layer=["23", "4", "5"])
    actual = [[float(ds["density_overall"].sel(area=a)), *d.sel(area=a).values] for a in by_type]
    np.testing.assert_allclose(actual, list(by_type.values()), atol=0.051)
    np.testing.assert_array_equal(ds["density"].sel(layer="5"), ds["density"].sel(layer="6"))
    assert bool(ds["density"].sel(layer="1").isnull().all())


def test_architecture(ds):
    assert ds["architecture"].sel(area=["V1", "V2", "MT", "MIP", "MDP", "46", "TH"]).values.tolist() \
        == [8, 7, 6, 5, 5, 4, 2]


def test_thicknesses(ds):
    """§13.3: filled total thicknesses (0.1 µm), laminar thickness table (0.1 µm), sums."""
    filled = {"VP": 1585.3, "V3": 1585.3, "V4t": 1880.1, "VOT": 1904.2, "MSTd": 2070.6,
              "MIP": 2070.6, "CITv": 2227.7, "FST": 2247.3, "V1": 1240.0, "TH": 1870.0}
    np.testing.assert_allclose(ds["total_thickness"].sel(area=list(filled)).values,
                               list(filled.values()), atol=0.051)
    d = ds["laminar_thickness"].sel(area=["V1", "TH", "MIP"]).values
    np.testing.assert_allclose(d, [[0.0897, 0.3654, 0.4615, 0.1663, 0.1571],
                                   [0.2770, 0.6464, 0.1154, 0.5695, 0.2616],
                                   [0.1953, 0.8517, 0.1719, 0.1563, 0.6954]], atol=5.1e-5)
    np.testing.assert_allclose(ds["laminar_thickness"].sum("layer"), ds["total_thickness"] / 1000,
                               rtol=1e-14)


def test_laminar_layer_means(ds):
    """§3.4 step 4: the means used for areas without L1, L23, L5, L6 data (e.g. MSTd)."""
    r = ds["relative_thickness"].sel(area="MSTd", layer=["1", "23", "5", "6"]).values
    np.testing.assert_allclose(r, [0.11954122411119386, 0.42740654973338965,
                                   0.14009735347642502, 0.16620847727051957], rtol=1e-13)
    # TH's L4 is the mean of its two studies, 0 and 150/1290
    assert float(ds["relative_thickness"].sel(area="TH", layer="4")) == pytest.approx(150 / 1290 / 2)


def test_excitatory_fraction_of_neurons(ds):
    """§3.5: N_I / N_E = (1 - e) / e with PD14's layer E fractions."""
    e = np.array([20683 / 26517, 21915 / 27394, 4850 / 5915, 14395 / 17343])
    n = ds["neurons_full"].sel(area="V1").values
    np.testing.assert_allclose(n[1::2] / n[0::2], (1 - e) / e, rtol=1e-13)


def test_full_neuron_numbers(ds):
    """§13.2 totals."""
    assert float(ds["neurons_full"].sum()) == pytest.approx(932_969_277.1, abs=0.1)
    assert float(ds["neurons_full"].sel(area="V1").sum()) == pytest.approx(293_861_465.3, abs=0.1)
    assert float(ds["neurons_full"].sel(area="V1", pop="23E")) == pytest.approx(70_351_649.3, abs=0.1)


def test_fln_sums(ds):
    """§13.3: FLN_completed sums over model sources and the external entry."""
    areas = ["V1", "V2", "V4", "MT", "TH"]
    actual = np.c_[ds["FLN"].sum("source_area").sel(area=areas), ds["FLN_external"].sel(area=areas)]
    expected = [[0.91738, 0], [0.93170, 0.002769], [0.79613, 0], [0.17253, 0.010053],
                [0.03623, 0.013083]]
    np.testing.assert_allclose(actual, expected, atol=5.1e-6)
    assert float(ds["FLN_external"].sel(area="MDP")) == pytest.approx(0.01142, abs=5.1e-6)
    assert float(np.trace(ds["FLN"].values)) == 0.0


def test_largest_v1_inputs(ds):
    top = ds["FLN"].sel(area="V1").to_series().nlargest(5)
    assert top.index.tolist() == ["V2", "V4", "TF", "VP", "TH"]
    np.testing.assert_allclose(top.values, [0.59779, 0.10955, 0.03152, 0.02574, 0.02512], atol=5.1e-6)


def test_fln_targets_with_injections(ds):
    """§3.6 step 2: injection sites mapped to FV91; MT's injection lands in MSTd."""
    injected = ds["area"].where(ds["has_injection"], drop=True).values.tolist()
    assert sorted(injected) == sorted(["V1", "V2", "V4", "FEF", "7a", "DP", "STPa", "STPp",
                                       "CITv", "46", "MSTd"])
    assert bool(ds["FLN_data"].sel(area="MT").isnull().all())
    # measured FLN only where injected; EDR elsewhere
    assert not bool(ds["FLN_is_measured"].sel(area="MT").any())


def test_connected_pairs(ds):
    """§3.7 step 5: 571 pairs; MDP has no input; CITd's only source is V4; FLN > 0 exactly there."""
    c = ds["cocomac_connected"]
    assert int(c.sum()) == 571
    assert int(c.sel(area="MDP").sum()) == 0
    assert ds["source_area"].where(c.sel(area="CITd"), drop=True).values.tolist() == ["V4"]
    xr.testing.assert_equal(c, ds["FLN"] > 0)
    xr.testing.assert_equal(c, ds["SLN"].notnull())


def test_sln_examples(ds):
    """§13.3 SLN examples (data and fit) and §3.9 counts."""
    pairs = [("V1", "V2"), ("V2", "V1"), ("V4", "V1"), ("TH", "TF"), ("CITd", "V4"),
             ("V4", "VP"), ("V4", "TF")]
    actual = [float(ds["SLN"].sel(area=t, source_area=s)) for t, s in pairs]
    expected = [0.400772, 0.735960, 0.860595, 0.576600, 0.705732, 0.39992, 0.41928]
    np.testing.assert_allclose(actual, expected, atol=5.1e-6)
    s = ds["SLN"].values
    counts = [int(np.sum(s > 0.65)), int(np.sum(s < 0.35)), int(np.sum((s >= 0.35) & (s <= 0.65)))]
    assert counts == [126, 172, 273]
    assert int((ds["SLN_data"].notnull() & ds["cocomac_connected"]).sum()) == 133


def test_sln_fit_is_probit_of_log_density_ratio(ds):
    """Pairs without SLN data carry Φ(a0 + a1 ln(ρ_T/ρ_B)) (§3.9 step 4)."""
    from scipy.stats import norm

    rho = ds["density_overall"]
    ratio = rho.values[:, None] / rho.values[None, :]
    expected = norm.cdf(-0.1516142 - 1.5343200 * np.log(ratio))
    fitted = (ds["cocomac_connected"] & ds["SLN_data"].isnull()).values
    np.testing.assert_allclose(ds["SLN"].values[fitted], expected[fitted], rtol=1e-13)


def test_patterns(ds):
    """Patterns as upstream stores them: 6 characters, layers 1..6 ('' = None)."""
    sp, tp = ds["source_pattern"], ds["target_pattern"]
    assert (sp.sel(area="V2", source_area="V1").item(), tp.sel(area="V2", source_area="V1").item()) \
        == ("XX0000", "0XX333")
    assert (sp.sel(area="V1", source_area="V2").item(), tp.sel(area="V1", source_area="V2").item()) \
        == ("0XX033", "3XX0XX")
    assert tp.sel(area="CITd", source_area="V4").item() == "000X00"
    lengths = np.char.str_len(np.concatenate([sp.values.ravel(), tp.values.ravel()]))
    assert set(lengths.tolist()) == {0, 6}
    assert not bool(((sp != "") & ~ds["cocomac_connected"]).any())


def test_cocomac_matches_upstream_raw_parse(upstream_form):
    """Stage A's CoCoMac records equal upstream's parsed ``cocomac_data`` plus the Markov
    additions and null self entries (§3.7 steps 3-4)."""
    raw = _json("viscortex_raw_data.json")["cocomac_data"]
    completed = upstream_form["cocomac_completed"]
    kept = {t: {s: v for s, v in completed[t].items() if s in raw[t]} for t in completed}
    expected = {t: {s: ({"source_pattern": None, "target_pattern": None} if s == t else v)
                    for s, v in raw[t].items()} for t in raw}
    assert kept == expected
    added = {(t, s) for t in completed for s in completed[t] if s not in raw[t]}
    assert all(s in AREAS for _, s in added)
    assert {(t, t) for t in AREAS if t not in raw[t]} <= added


def test_unknown_m132_source_is_reported():
    overlap = pd.DataFrame({"key": ["V2_M132"], "fv91": ["V2"], "weight": [1.0]})
    rows = pd.DataFrame({"target": ["V1", "V1"], "source": ["V2", "XYZ"], "FLN": [0.5, 0.1]})
    with pytest.raises(DataError, match=r"no entry for the M132 sources \['XYZ'\]"):
        anatomy._with_overlap(rows, overlap)


def test_readers():
    surface = anatomy.read_csv_skip_header("cortical_surface.csv", names=["area", "mm2"],
                                           index_col=0)["mm2"]
    assert len(surface) == 32 and surface["V1"] == 1484.629
    dist = anatomy.read_median_distances()
    assert dist.shape == (81, 81)
    np.testing.assert_array_equal(dist.loc[list(AREAS), list(AREAS)].values,
                                  dist.loc[list(AREAS), list(AREAS)].values.T)
