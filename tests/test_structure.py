"""Stages B and C (mam_xr.structure) against upstream's reference structures
(../shared/reference) and the checks of spec/construction.md §13.4."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import load_reference
from mam_xr import structure
from mam_xr.errors import ParameterError
from mam_xr.flat import AREAS, POPS, population_labels, structure_to_flat
from mam_xr.params import Params

ARRAYS = ("N", "K", "synapses", "W", "W_sd", "J", "add_DC_drive", "distances", "K_areas")

VARIANTS = {
    "fullscale_tutorial": lambda: Params.tutorial(scale=1.0),
    "fullscale_default": lambda: Params(),
    "fullscale_default_Kstable_None": lambda: Params().update(K_stable=None),
    "downscaled_tutorial": lambda: Params.tutorial(),
}

_AREA_OF = np.array([label.split("-")[0] for label in population_labels()])
SAME_AREA = _AREA_OF[:, None] == _AREA_OF[None, :]


@pytest.fixture(scope="module")
def anatomy():
    from mam_xr import anatomy as stage_a

    return stage_a.process()


@pytest.fixture(scope="module")
def built(anatomy):
    cache = {}

    def get(params):
        key = params.to_json()
        if key not in cache:
            cache[key] = structure.build(params, anatomy=anatomy)
        return cache[key]
    return get


def flat(ds):
    return structure_to_flat(ds)


# --- against upstream's structures -------------------------------------------------

@pytest.mark.parametrize("variant", VARIANTS)
def test_matches_reference(variant, built):
    got = flat(built(VARIANTS[variant]()))
    ref = load_reference(f"structure_{variant}.npz")
    for name in ARRAYS:
        np.testing.assert_allclose(got[name], ref[name], rtol=1e-9, atol=0, equal_nan=True,
                                   err_msg=f"{variant}: {name}")


@pytest.mark.parametrize("variant", VARIANTS)
def test_parameter_mapping_matches_reference_meta(variant):
    """Our Params resolve to the parameters upstream ran with (the _meta.json files)."""
    full = load_reference(f"structure_{variant}_meta.json")["full_params"]
    net = VARIANTS[variant]().network
    con, ref_con = net.connection, full["connection_params"]
    assert net.scale == full["N_scaling"] == full["K_scaling"]
    assert net.surface == full["surface"]
    assert (con.K_stable is None) == (ref_con["K_stable"] is None)
    for ours, theirs in [("chi", "cc_weights_factor"), ("chi_I", "cc_weights_I_factor"),
                         ("g", "g"), ("av_indegree_V1", "av_indegree_V1"), ("PSP_e", "PSP_e"),
                         ("PSP_e_23_4", "PSP_e_23_4"), ("PSP_ext", "PSP_ext"),
                         ("fac_nu_ext_5E", "fac_nu_ext_5E"), ("fac_nu_ext_6E", "fac_nu_ext_6E"),
                         ("fac_nu_ext_TH", "fac_nu_ext_TH"),
                         ("PSC_rel_sd_normal", "PSC_rel_sd_normal"),
                         ("lognormal_weights", "lognormal_weights")]:
        assert getattr(con, ours) == ref_con[theirs], ours
    neuron = full["neuron_params"]["single_neuron_dict"]
    for name in ("C_m", "tau_m", "tau_syn_ex", "tau_syn_in"):
        assert getattr(net.neuron, name) == neuron[name]
    assert net.input.rate_ext == full["input_params"]["rate_ext"]
    for name, value in full["delay_params"].items():
        assert getattr(net.delay, name) == value


def test_dataset_layout_and_attrs(built):
    p = Params.tutorial()
    ds = built(p)
    assert json.loads(ds.attrs["params"]) == json.loads(p.to_json())
    assert ds.attrs["network_label"] == p.network_label()
    assert ds.attrs["scale"] == 0.005
    assert ds.attrs["data_provenance"]["commit"].startswith("355d940")
    for name in ("neurons", "indegree", "weight_mean", "neurons_full", "indegree_data",
                 "intrinsic_fln", "external_synapses_area"):
        assert ds[name].attrs["units"] and ds[name].attrs["long_name"], name
    assert np.isnan(ds["neurons"].sel(area="TH", pop="4E"))
    assert np.isnan(ds["indegree"].sel(area="V1", source_area="TH", source_pop="4I")).all()


# --- construction.md §13.2 / §13.4 ------------------------------------------------

def test_neuron_numbers(built):
    ds = built(Params())
    assert float(ds["neurons"].sum()) == pytest.approx(4_130_056.72, abs=0.01)
    assert int(ds["exists"].sum()) == 254
    assert ds["exists"].sel(area="TH").values.tolist() == [True, True, False, False] + [True] * 4
    v1 = ds["neurons"].sel(area="V1").values
    np.testing.assert_allclose(v1, [47386.687, 13366.239, 70387.258, 17597.617, 20740.874,
                                    4554.439, 19839.789, 4063.056], atol=1e-3)
    assert float(ds["neurons_full"].sel(area="V1").sum()) == pytest.approx(293_861_465.3, abs=0.1)
    assert ds.attrs["synapse_density"] == pytest.approx(630521.8057, abs=1e-4)


def test_local_connectivity_constants(data_dir):
    assert structure.CBAR_PD14 == pytest.approx(0.06607215335398368, rel=1e-15)
    # upstream's quad with default tolerances (the exact integral is 6e-11 larger)
    assert structure.mean_connection_probability(1.0) == pytest.approx(0.04709082640747767,
                                                                       rel=1e-15)
    n, P = structure._pd14(None)
    K = structure.local_template(1.0, n, P)
    np.testing.assert_allclose(K[0], [1545.1625, 748.7598, 698.2522, 329.9469, 111.8947, 0.0,
                                      82.3115, 0.0], atol=1e-4)
    np.testing.assert_allclose(K[:, 7], [0, 0, 0, 0, 0, 0, 515.2631, 319.2347], atol=1e-4)
    assert 1 / structure.psc_per_psp(250.0, 10.0, 0.5) ** -1 == pytest.approx(585.3899568613897,
                                                                               rel=1e-15)


def test_binzegger_table_and_ss4_quirk(built):
    ds = built(Params())
    N = ds["neurons"].sel(area="V1").values
    P = structure.binzegger_table(N / N.sum())
    np.testing.assert_allclose(P.sum(axis=1), 1.0, rtol=1e-14)
    # L2/3 CC synapses go to 4E through ss4(L2/3) (construction.md §15 item 3)
    np.testing.assert_allclose(P[1], [0, 0.163044, 0.836956, 0, 0, 0, 0, 0], atol=1e-6)
    np.testing.assert_allclose(P[0], [0.567083, 0, 0.173282, 0, 0.256833, 0, 0.002802, 0],
                               atol=1e-6)


def test_v1_intra_area_block_and_external_indegrees(built):
    ds = built(Params().update(K_stable=None))
    block = ds["indegree"].sel(area="V1", source_area="V1").values
    np.testing.assert_allclose(block[0], [1066.611, 516.862, 481.997, 227.759, 77.240, 0.0,
                                          56.819, 0.0], atol=1e-3)
    np.testing.assert_allclose(block[:, 0], [1066.611, 1444.374, 81.638, 719.974, 1055.650,
                                             570.927, 163.746, 371.106], atol=1e-3)
    k_ext = ds["external_indegree"]
    np.testing.assert_allclose(k_ext.sel(area="V1", pop=["23E", "5E", "6E"]),
                               [1246.102, 1401.865, 1765.311], atol=1e-3)
    np.testing.assert_allclose(k_ext.sel(area="TH", pop=["23E", "23I", "5E", "6E"]),
                               [6590.214, 5491.845, 7413.990, 7780.113], atol=1e-3)
    np.testing.assert_allclose(ds["intrinsic_fln"].sel(area=["V1", "TH"]), [0.487531, 0.514078],
                               atol=1e-6)
    # the CITd <- V4 example of §13.2 (FLN' = 0.197 for its single source)
    citd = ds["indegree"].sel(area="CITd", source_area="V4", source_pop="23E")
    np.testing.assert_allclose(citd.sel(pop=["4E", "4I", "5E", "6E"]),
                               [13125.4, 11509.7, 505.5, 1420.5], atol=0.1)


@pytest.mark.parametrize("av_indegree", [2300.0, 3950.0, 5600.0])
def test_v1_average_indegree_equals_av_indegree_V1(av_indegree, anatomy):
    """§13.4 item 3, relative to an all-ones baseline of the fac_nu_ext factors."""
    p = Params().update(K_stable=None, av_indegree_V1=av_indegree, fac_nu_ext_5E=1.0,
                        fac_nu_ext_6E=1.0, fac_nu_ext_TH=1.0)
    ds = structure.build(p, anatomy=anatomy)
    total = ds["area_indegree"].sum("source_area") + ds["external_area_indegree"]
    assert float(total.sel(area="V1")) == pytest.approx(av_indegree, rel=1e-9)
    # local share of the total input = F_int of the patch, for every area but TH (§15 item 5)
    local = np.diag(ds["area_indegree"].values) / total.values
    fint = ds["intrinsic_fln"].values
    np.testing.assert_allclose(local[:-1], fint[:-1], rtol=1e-9)
    assert abs(local[-1] - 0.443) < 0.001 and fint[-1] == pytest.approx(0.514078, abs=1e-6)


def test_default_averages_with_factors(built):
    total = lambda ds: float((ds["area_indegree"].sum("source_area")
                              + ds["external_area_indegree"]).sel(area="V1"))
    assert total(built(Params())) == pytest.approx(3848.08, abs=0.01)
    assert total(built(Params().update(K_stable=None))) == pytest.approx(4018.36, abs=0.01)


def test_k_stable_is_the_zeroed_file(built, data_dir):
    from mam_xr.data import fetch

    ds = built(Params())
    K = flat(ds)["K"][:, :-1]
    raw = np.load(fetch("K_prime_original.npy"))
    expected = np.where(np.abs(raw) <= 1e-8, 0.0, raw)
    np.testing.assert_array_equal(K, expected)
    assert np.count_nonzero(K) == 8411 and np.count_nonzero(raw) == 8411 + 705
    np.testing.assert_allclose(flat(ds)["synapses"], flat(ds)["K"] * flat(ds)["N"][:, None],
                               rtol=1e-15)


def test_cc_weights_scale_with_chi(built):
    base = flat(built(Params().update(chi=1.0, chi_I=1.0)))
    scaled = flat(built(Params().update(chi=2.0, chi_I=3.0)))
    exc = np.array([label.endswith("E") for label in population_labels()])
    ratio = scaled["W"][:, :-1] / base["W"][:, :-1]
    np.testing.assert_allclose(ratio[SAME_AREA], 1.0, rtol=1e-15)
    np.testing.assert_allclose(ratio[~SAME_AREA & exc[:, None]], 2.0, rtol=1e-15)
    np.testing.assert_allclose(ratio[~SAME_AREA & ~exc[:, None]], 6.0, rtol=1e-15)
    np.testing.assert_allclose(scaled["W_sd"][:, :-1] / base["W_sd"][:, :-1], ratio, rtol=1e-15)
    assert np.all(scaled["W"][:, -1] == base["W"][:, -1])
    np.testing.assert_array_equal(scaled["K"], base["K"])


def test_weight_constants(built):
    W = flat(built(Params()))["W"]
    v1 = lambda pop: population_labels().index(f"V1-{pop}")
    v2 = lambda pop: population_labels().index(f"V2-{pop}")
    assert W[v1("23E"), v1("23E")] == pytest.approx(87.80849352920845, rel=1e-15)
    assert W[v1("23E"), v1("23I")] == pytest.approx(-965.8934288212929, rel=1e-15)
    assert W[v1("23E"), v1("4E")] == pytest.approx(175.6169870584169, rel=1e-15)
    assert W[v1("23E"), v2("23E")] == pytest.approx(166.8361377054960, rel=1e-12)
    assert W[v1("23I"), v2("23E")] == pytest.approx(333.6722754109921, rel=1e-12)
    assert W[v1("23E"), -1] == pytest.approx(87.80849352920845, rel=1e-15)


def test_fac_nu_ext_multiplies_external_indegrees_only(anatomy):
    ones = dict(fac_nu_ext_5E=1.0, fac_nu_ext_6E=1.0, fac_nu_ext_TH=1.0)
    base = flat(structure.build(Params().update(**ones), anatomy=anatomy))["K"]
    twos = flat(structure.build(Params().update(fac_nu_ext_5E=2.0, fac_nu_ext_6E=3.0,
                                                fac_nu_ext_TH=5.0), anatomy=anatomy))["K"]
    labels = population_labels()
    expected = np.ones(len(labels))
    expected[[i for i, l in enumerate(labels) if l.endswith("-5E")]] = 2.0
    expected[[i for i, l in enumerate(labels) if l.endswith("-6E")]] = 3.0
    expected[labels.index("TH-23E")] *= 5.0
    expected[labels.index("TH-5E")] *= 5.0
    np.testing.assert_allclose(twos[:, -1] / base[:, -1], expected, rtol=1e-14)
    np.testing.assert_array_equal(twos[:, :-1], base[:, :-1])


@pytest.mark.parametrize("k_stable", ["K_prime_original", None])
def test_downscaling_preserves_mean_and_variance(k_stable, anatomy):
    """§9 / §13.4 item 6: μ and σ² of every population's input are unchanged."""
    full = structure.build(Params.tutorial(scale=1.0, K_stable=k_stable), anatomy=anatomy)
    small = structure.build(Params.tutorial(scale=0.01, K_stable=k_stable), anatomy=anatomy)
    rates = structure.read_fullscale_rates("upstream")
    from mam_xr.flat import to_flat_vector
    import xarray as xr

    nu = np.append(to_flat_vector(xr.DataArray(rates, dims=("area", "pop"))), 10.0)
    tau_m, C_m = 10.0, 250.0

    def moments(ds):
        f = flat(ds)
        mu = 1e-3 * tau_m * (f["K"] * f["J"] * nu).sum(axis=1) + tau_m / C_m * f["add_DC_drive"]
        var = 1e-3 * tau_m * (f["K"] * f["J"] ** 2 * nu).sum(axis=1)
        return mu, var

    mu_f, var_f = moments(full)
    mu_s, var_s = moments(small)
    np.testing.assert_allclose(mu_s, mu_f, rtol=1e-12, atol=1e-12 * np.abs(mu_f).max())
    np.testing.assert_allclose(var_s, var_f, rtol=1e-12)
    fs, ss = flat(full), flat(small)
    np.testing.assert_allclose(ss["N"], 0.01 * fs["N"], rtol=1e-15)
    np.testing.assert_allclose(ss["K"], 0.01 * fs["K"], rtol=1e-15)
    np.testing.assert_allclose(ss["synapses"], 1e-4 * fs["synapses"], rtol=1e-15)
    np.testing.assert_allclose(ss["W"], fs["W"] * 10.0, rtol=1e-15)
    np.testing.assert_array_equal(ss["W_sd"], fs["W_sd"])       # not rescaled, as upstream
    assert np.all(fs["add_DC_drive"] == 0)


def test_errors():
    net = Params().network
    with pytest.raises(ParameterError, match="fullscale_rates=None is invalid"):
        structure.build(net.model_copy(update={"scale": 0.1, "fullscale_rates": None}))
    with pytest.raises(ParameterError, match="fullscale_rates='/nonexistent.json' is invalid"):
        structure.read_fullscale_rates("/nonexistent.json")
    con = net.connection.model_copy(update={"K_stable": "/nonexistent.npy"})
    with pytest.raises(ParameterError, match="K_stable='/nonexistent.npy' is invalid"):
        structure.build(net.model_copy(update={"connection": con}))


def test_incomplete_rates_file(tmp_path):
    path = tmp_path / "rates.json"
    path.write_text(json.dumps({a: {p: 1.0 for p in POPS} for a in AREAS[:-1]}))
    with pytest.raises(ParameterError, match="missing TH 23E"):
        structure.read_fullscale_rates(path)
    path.write_text(json.dumps({a: {p: [2.0, 5.0] for p in POPS} for a in AREAS}))
    assert np.all(structure.read_fullscale_rates(path)[:-1] == 2.0)


def test_lognormal_weight_sd(anatomy):
    """§4.5: the lognormal relative SD (3.0) replaces 0.1, except intra-area 23E <- 4E."""
    labels = population_labels()
    exc = np.array([label.endswith("E") for label in labels])
    i23, i4 = labels.index("V1-23E"), labels.index("V1-4E")
    for ee_only in (False, True):
        f = flat(structure.build(Params().update(lognormal_weights=True,
                                                 lognormal_EE_only=ee_only), anatomy=anatomy))
        rel = f["W_sd"][:, :-1] / np.abs(f["W"][:, :-1])
        expected = np.full(rel.shape, 3.0)
        if ee_only:
            expected[~(exc[:, None] & exc[None, :])] = 0.1
        pop = np.array([label.split("-")[1] for label in labels])
        expected[SAME_AREA & (pop[:, None] == "23E") & (pop[None, :] == "4E")] = 0.1
        np.testing.assert_allclose(rel, expected, rtol=1e-14)
        assert rel[i23, i4] == pytest.approx(0.1)


def test_large_surface_warns_about_negative_external_input(anatomy):
    """surface >= 100 mm² takes upstream's series branch; V4t and MSTl end up with more
    cortico-cortical synapses than non-local ones, which upstream does not report."""
    with pytest.warns(RuntimeWarning, match="negative external indegree in V4t, MSTl"):
        ds = structure.build(Params().update(surface=100.0, K_stable=None), anatomy=anatomy)
    assert float(ds["external_indegree"].sel(area="V4t", pop="23E")) < 0


# --- separate neuron and indegree scaling --------------------------------------------

@pytest.mark.parametrize("eta, kappa", [(0.01, 0.02), (0.02, 0.01), (0.005, 1.0), (1.0, 0.05)])
def test_neuron_and_indegree_scaling_follow_the_construction_rules(eta, kappa, anatomy):
    """N ← η N; K ← κ K (external column too); W, J ← W, J / √κ; W_sd unchanged;
    synapses ← κ η S; I_DC = (C_m/τ_m)(1 − √κ)(x + x_ext) from the full-scale J, K and
    rates (docs/structure.md, "Down-scaling") — computed here from the full-scale structure."""
    import xarray as xr
    from mam_xr.flat import to_flat_vector

    p = Params.tutorial(N_scaling=eta, K_scaling=kappa)
    assert (p.network.N_scaling, p.network.K_scaling) == (eta, kappa)
    fs = flat(structure.build(Params.tutorial(scale=1.0), anatomy=anatomy))
    ds = structure.build(p, anatomy=anatomy)
    got = flat(ds)
    nu = to_flat_vector(xr.DataArray(structure.read_fullscale_rates("upstream"), dims=("area", "pop")))
    tau_m, C_m, rate_ext = 10.0, 250.0, 10.0
    x = 1e-3 * tau_m * (fs["J"][:, :-1] * fs["K"][:, :-1] * nu[None, :]).sum(axis=1)
    x_ext = 1e-3 * tau_m * fs["J"][:, -1] * fs["K"][:, -1] * rate_ext
    np.testing.assert_allclose(got["N"], eta * fs["N"], rtol=1e-15)
    np.testing.assert_allclose(got["K"], kappa * fs["K"], rtol=1e-15)
    np.testing.assert_allclose(got["synapses"], kappa * eta * fs["synapses"], rtol=1e-15)
    np.testing.assert_allclose(got["W"], fs["W"] / np.sqrt(kappa), rtol=1e-15)
    np.testing.assert_allclose(got["J"], fs["J"] / np.sqrt(kappa), rtol=1e-15)
    np.testing.assert_array_equal(got["W_sd"], fs["W_sd"])
    dc = C_m / tau_m * (1 - np.sqrt(kappa)) * (x + x_ext)
    np.testing.assert_allclose(got["add_DC_drive"], dc, rtol=1e-12, atol=1e-12 * np.abs(dc).max())
    if kappa == 1.0:
        assert np.all(got["add_DC_drive"] == 0)
    # mean and variance of the input are those of the full-scale network
    nu_all = np.append(nu, rate_ext)
    for f in (got, fs):
        f["mu"] = 1e-3 * tau_m * (f["K"] * f["J"] * nu_all).sum(axis=1) + tau_m / C_m * f["add_DC_drive"]
        f["var"] = 1e-3 * tau_m * (f["K"] * f["J"] ** 2 * nu_all).sum(axis=1)
    np.testing.assert_allclose(got["mu"], fs["mu"], rtol=1e-12, atol=1e-12 * np.abs(fs["mu"]).max())
    np.testing.assert_allclose(got["var"], fs["var"], rtol=1e-12)
    assert (ds.attrs["N_scaling"], ds.attrs["K_scaling"]) == (eta, kappa)


def test_N_01_K_02_numbers(anatomy):
    """Spot values at N_scaling 0.01, K_scaling 0.02: V1 23E has 0.01 of its full-scale
    neurons and 0.02 of its full-scale indegree from V1 4E."""
    full = structure.build(Params.tutorial(scale=1.0), anatomy=anatomy)
    ds = structure.build(Params.tutorial(N_scaling=0.01, K_scaling=0.02), anatomy=anatomy)
    n_full = float(full["neurons"].sel(area="V1", pop="23E"))
    assert float(ds["neurons"].sel(area="V1", pop="23E")) == pytest.approx(0.01 * n_full, rel=1e-15)
    k = ds["indegree"].sel(area="V1", pop="23E", source_area="V1", source_pop="4E")
    k_full = full["indegree"].sel(area="V1", pop="23E", source_area="V1", source_pop="4E")
    assert float(k) == pytest.approx(0.02 * float(k_full), rel=1e-15)
    assert int(np.floor(float(ds["neurons"].sel(area="V1", pop="23E")))) == int(np.floor(0.01 * n_full))


def test_scale_equal_to_both_is_the_same_network_and_label():
    a = Params.tutorial(scale=0.01)
    b = Params.tutorial(N_scaling=0.01, K_scaling=0.01)
    c = Params.tutorial(scale=0.01, K_scaling=0.01)
    assert a == b == c and a.label() == b.label() == c.label()
    assert "neuron_scaling" not in a.to_json() and "indegree_scaling" not in a.to_json()
    d = Params.tutorial(N_scaling=0.01, K_scaling=0.02)
    assert (d.network.scale, d.network.indegree_scaling) == (0.01, 0.02)
    assert d.network_label() != a.network_label()
    # scale sets both again; N_scaling alone keeps K_scaling
    assert d.update(scale=0.05).network.K_scaling == 0.05
    assert d.update(N_scaling=0.05).network.K_scaling == 0.02
    assert Params.from_json(d.to_json()) == d


def test_min_neurons_per_mm2_is_the_sparsest_population(anatomy):
    from mam_xr.params import MAX_SURFACE_MM2, MIN_NEURONS_PER_MM2

    full = structure.build(Params(), anatomy=anatomy)
    assert float(full["neurons"].min()) == pytest.approx(MIN_NEURONS_PER_MM2, rel=1e-12)
    assert float(anatomy["surface"].max()) == MAX_SURFACE_MM2
    least = 1.0 / MIN_NEURONS_PER_MM2
    ds = structure.build(Params.tutorial(scale=least * 1.0001), anatomy=anatomy)
    assert np.floor(float(ds["neurons"].min())) == 1.0


@pytest.mark.parametrize("kwargs, message", [
    (dict(scale=5e-4), r"network\.scale=0\.0005 is invalid: expected at least 0\.0006209 with surface=1\.0"),
    (dict(N_scaling=1e-4, K_scaling=0.5), r"network\.neuron_scaling=0\.0001 is invalid: expected at least 0\.0006209"),
    (dict(N_scaling=1e-4), r"network\.neuron_scaling=0\.0001 is invalid: expected at least"),
    (dict(N_scaling=0.0), r"network\.neuron_scaling=0\.0 is invalid: expected a value greater than 0"),
    (dict(K_scaling=1.5), r"network\.indegree_scaling=1\.5 is invalid: expected a value less than or equal to 1"),
    (dict(K_scaling=-0.1), r"network\.indegree_scaling=-0\.1 is invalid: expected a value greater than 0"),
    (dict(N_scaling=float("nan")), r"network\.neuron_scaling=nan is invalid: expected a finite number"),
    (dict(scale=0.01, surface=0.05), r"network\.scale=0\.01 is invalid: expected at least 0\.01242 with surface=0\.05"),
])
def test_scalings_outside_their_range_are_refused(kwargs, message):
    with pytest.raises(ParameterError, match=message):
        Params.tutorial(**kwargs)


def test_build_refuses_a_population_without_neurons(anatomy):
    """A NetworkParams made without validation still cannot build an empty population."""
    net = Params.tutorial().network.model_copy(update={"scale": 1e-4})
    with pytest.raises(ParameterError, match=r"scale=0\.0001 is invalid: expected at least 0\.0006209 "
                                             r"with surface=1\.0 mm² \(every population keeps one neuron; "
                                             r"VIP 6I has 1610\.6"):
        structure.build(net, anatomy=anatomy)


def test_rescale_and_theory_accept_separate_scalings(anatomy):
    """The DC drive rescaled to another chi uses K_scaling (not N_scaling), as a rebuild;
    the mean-field theory integrates such a structure to finite rates."""
    from mam_xr import theory

    p = Params.tutorial(N_scaling=0.01, K_scaling=0.02)
    s = structure.build(p, anatomy=anatomy)
    moved = structure.rescale(s, chi=1.5)
    rebuilt = structure.build(p.update(chi=1.5), anatomy=anatomy)
    np.testing.assert_allclose(moved["dc_drive"], rebuilt["dc_drive"], rtol=1e-12,
                               atol=1e-12 * float(np.abs(rebuilt["dc_drive"]).max()))
    rates = theory.integrate(s, p)["rate"]
    assert bool(np.isfinite(rates.values[~np.isnan(rates.values)]).all())
    assert float(rates.mean()) > 0
