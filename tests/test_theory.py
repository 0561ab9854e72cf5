"""Mean-field theory against upstream's reference rates and independent formulas."""

from __future__ import annotations

import ast
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from mam_xr import structure, theory
from mam_xr.errors import ParameterError
from mam_xr.flat import population_labels, to_flat_matrix, to_flat_vector
from mam_xr.params import Params
from mam_xr.theory.system import rates_vector, system_of

from conftest import load_reference, reference_structure
from test_theory_siegert import slow_phi



# --- fixtures ------------------------------------------------------------------

@pytest.fixture(scope="module")
def downscaled():
    return reference_structure("downscaled_tutorial")


@pytest.fixture(scope="module")
def fullscale():
    return reference_structure("fullscale_tutorial")


@pytest.fixture(scope="module")
def default():
    return reference_structure("fullscale_default")


@pytest.fixture(scope="module")
def p_down():
    return Params.tutorial()


@pytest.fixture(scope="module")
def p_full():
    # The full-scale tutorial structure: chi = chi_I = 1, scale 1.
    return Params.tutorial(scale=1.0, fullscale_rates=None)


@pytest.fixture(scope="module")
def default_fixed_point(default):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", theory.ConvergenceWarning)
        return theory.fixed_point(default, Params())


# --- integration against upstream ---------------------------------------------------

@pytest.mark.parametrize("variant, fixture, mean", [
    ("downscaled_tutorial", "downscaled", 29.5884),
    ("fullscale_tutorial", "fullscale", 3.7292),
])
def test_integrate_reproduces_upstream(variant, fixture, mean, request):
    structure = request.getfixturevalue(fixture)
    params = request.getfixturevalue("p_down" if fixture == "downscaled" else "p_full")
    ref = load_reference(f"theory_{variant}.npz")
    ds = theory.integrate(structure, params)
    np.testing.assert_allclose(to_flat_vector(ds["rate"]), ref["final_rates"], rtol=1e-6, atol=0)
    np.testing.assert_allclose(to_flat_vector(ds["trajectory"]), ref["rates_trajectory"],
                               rtol=1e-5, atol=0)
    np.testing.assert_allclose(ds["time"].values, ref["times_ms"], rtol=1e-12)
    assert round(float(ds["rate"].mean()), 4) == mean
    assert bool(ds["converged"]) and ds.attrs["converged"] is True
    assert float(np.abs(ds["residual"]).max()) < 1e-6


def test_integrate_flags_nonconvergence_of_fullscale_default(default):
    ref = load_reference("theory_fullscale_default.npz")
    with pytest.warns(theory.ConvergenceWarning, match=r"did not converge after T=50\.0 ms"):
        ds = theory.integrate(default, Params())
    assert not bool(ds["converged"]) and ds.attrs["converged"] is False
    assert float(ds["max_abs_change_last_step"]) > 1.0      # upstream: 11.4 spikes/s
    # The trajectory follows upstream's until the unstable dynamics amplify rounding
    # (≈1e-13 at 5 ms, order 1 by 10 ms).
    np.testing.assert_allclose(to_flat_vector(ds["trajectory"].isel(time=slice(0, 51))),
                               ref["rates_trajectory"][:, :51], rtol=1e-9, atol=1e-12)


def test_integrate_random_draws_are_seeded(fullscale, p_full):
    ds = theory.integrate(fullscale, p_full.update({"theory": {"initial_rates": "random", "n_draws": 3}}),
                          T=1.0)
    assert ds["trajectory"].dims == ("draw", "area", "pop", "time")
    expected = 1000.0 * np.random.RandomState(123).uniform(size=(3, 254))
    np.testing.assert_array_equal(to_flat_vector(ds["trajectory"].isel(time=0).transpose("area", "pop", "draw")),
                                  expected.T)
    assert ds["converged"].dims == ("draw",) and not ds["converged"].any()


def test_integrate_given_rates_and_euler_first_step(downscaled, p_down):
    ref = load_reference("theory_downscaled_tutorial.npz")
    ds = theory.integrate(downscaled, p_down, initial_rates=ref["final_rates"], T=1.0,
                          first_step="euler")
    # Started at the fixed point, the rates stay there.
    np.testing.assert_allclose(to_flat_vector(ds["trajectory"]), ref["final_rates"][:, None]
                               * np.ones(11), rtol=1e-12)


@pytest.mark.parametrize("kwargs, message", [
    ({"T": 0.25}, r"T=0\.25 is invalid: expected a multiple of dt=0\.1 ms"),
    ({"dt": -1.0}, r"dt=-1\.0 is invalid"),
    ({"initial_rates": "ones"}, r"initial_rates='ones' is invalid: expected 'zero', 'random'"),
    ({"initial_rates": np.ones(10)}, r"initial_rates='<array of shape \(10,\)>' is invalid: expected 254 rates"),
    ({"first_step": "rk4"}, r"first_step='rk4' is invalid: expected 'nest' or 'euler'"),
    ({"tol": 0.0}, r"tol=0\.0 is invalid"),
])
def test_integrate_rejects_bad_arguments(fullscale, kwargs, message):
    with pytest.raises(ParameterError, match=message):
        theory.integrate(fullscale, **kwargs)


def test_negative_or_nan_rates_are_rejected_with_the_population(fullscale, p_full):
    rates = np.full(254, 2.0)
    rates[5] = -1.0
    with pytest.raises(ParameterError, match=r"initial_rates\[V1-5I\]=-1\.0 is invalid: "
                                             r"expected a finite rate >= 0 spikes/s"):
        theory.integrate(fullscale, p_full, initial_rates=rates)
    rates[7] = np.nan
    with pytest.raises(ParameterError, match=r"initial_rates\[V1-5I\]=-1\.0 .*\(2 of 254 rates"):
        theory.integrate(fullscale, p_full, initial_rates=np.stack([np.ones(254), rates]))
    with pytest.raises(ParameterError, match=r"rates\[V1-6I\]=nan is invalid"):
        theory.input_statistics(fullscale, np.where(np.arange(254) == 7, np.nan, 1.0), p_full)
    with pytest.raises(ParameterError, match=r"replacement_rates\[V1-5I\]=-1\.0 is invalid"):
        theory.integrate(fullscale, p_full, areas_simulated=("V1",), replace="het_poisson_stat",
                         replacement_rates=np.where(np.arange(254) == 5, -1.0, 1.0))


def _upstream_mapping() -> dict:
    import json

    from mam_xr.data import fetch

    return json.loads(Path(fetch("fullscale_rates.json")).read_text())


@pytest.mark.parametrize("value, shown", [
    (None, r"None is invalid: expected a finite rate >= 0 spikes/s \(JSON null is no rate\)"),
    (float("nan"), r"nan is invalid: expected a finite rate >= 0 spikes/s"),
    (-2.0, r"-2\.0 is invalid: expected a finite rate >= 0 spikes/s"),
    (float("inf"), r"inf is invalid"),
    ("3.0", r"'3\.0' is invalid: expected a finite rate >= 0 spikes/s"),
    (True, r"True is invalid"),
    ([None, 1.0], r"None is invalid"),
])
def test_rates_mappings_are_parsed_once_and_checked_by_name(tmp_path, fullscale, p_full, value, shown):
    import json

    from mam_xr import rates

    mapping = _upstream_mapping()
    assert theory.system.rates_vector is rates.rates_vector  # one implementation
    mapping["V2"]["4E"] = value
    with pytest.raises(ParameterError, match=r"^initial_rates\[V2-4E\]=" + shown):
        theory.integrate(fullscale, p_full, initial_rates=mapping, T=1.0)
    with pytest.raises(ParameterError, match=r"^replace_cc_input_source\[V2-4E\]=" + shown):
        theory.replacement_rates(p_full.update(areas_simulated=["V1"],
                                               replace_non_simulated_areas="het_poisson_stat"),
                                 source=mapping)
    if value is True or isinstance(value, float) and not math.isfinite(value):
        return  # not JSON
    path = tmp_path / "rates.json"
    path.write_text(json.dumps(mapping))  # JSON null for None
    with pytest.raises(ParameterError, match=r"^rates\[V2-4E\]=" + shown):
        theory.input_statistics(fullscale, str(path), p_full)


def test_rates_vector_equals_the_structure_reader_on_upstream_rates(tmp_path):
    import json

    from mam_xr.data import fetch
    from mam_xr.rates import rates_vector as vector, read_rates_json

    path = fetch("fullscale_rates.json")
    nu = vector(path, "rates")
    np.testing.assert_array_equal(nu, read_rates_json(path, "rates"))
    np.testing.assert_array_equal(vector(_upstream_mapping(), "rates"), nu)
    assert nu.shape == (254,) and float(nu[population_labels().index("V1-23E")]) > 0
    del_one = _upstream_mapping()
    del del_one["TH"]["6I"]
    with pytest.raises(ParameterError, match=r"^rates='<mapping without TH/6I>' is invalid: expected a rate "
                                             r"for every population"):
        vector(del_one, "rates")
    (tmp_path / "bad.json").write_text("{1: 2")
    with pytest.raises(ParameterError, match=r"^rates='.*bad\.json' is invalid: expected a readable JSON "
                                             r"file of population rates"):
        vector(tmp_path / "bad.json", "rates")
    with pytest.raises(ParameterError, match=r"^rates='<list>' is invalid: expected 254 numeric rates"):
        vector([1.0, "x"] * 127, "rates")


@pytest.mark.parametrize("variable, index, value, message", [
    ("J", dict(area="V2", pop="4E", source_area="V1", source_pop="23E"), np.nan,
     r"structure\.J\[V2-4E <- V1-23E\]=nan is invalid: expected a finite coupling"),
    ("indegree", dict(area="V1", pop="23I", source_area="V1", source_pop="23E"), np.inf,
     r"structure\.indegree\[V1-23I <- V1-23E\]=inf is invalid: expected a finite indegree >= 0"),
    ("indegree", dict(area="V1", pop="23I", source_area="V4", source_pop="5E"), -3.0,
     r"structure\.indegree\[V1-23I <- V4-5E\]=-3\.0 is invalid"),
    ("external_J", dict(area="MT", pop="6E"), np.nan,
     r"structure\.external_J\[MT-6E\]=nan is invalid"),
    ("external_indegree", dict(area="FEF", pop="5I"), np.nan,
     r"structure\.external_indegree\[FEF-5I\]=nan is invalid"),
    ("dc_drive", dict(area="V1", pop="4E"), np.nan,
     r"structure\.dc_drive\[V1-4E\]=nan is invalid: expected a finite DC drive"),
])
def test_non_finite_structure_entries_are_rejected(fullscale, p_full, variable, index, value, message):
    bad = fullscale.copy()
    bad[variable] = fullscale[variable].copy(deep=True)
    bad[variable].loc[index] = value
    for call in (lambda: theory.integrate(bad, p_full, T=1.0),
                 lambda: theory.fixed_point(bad, p_full, initial=np.ones(254)),
                 lambda: theory.input_statistics(bad, np.ones(254), p_full),
                 lambda: theory.sweep(bad, "chi", [1.0], p_full)):
        with pytest.raises(ParameterError, match=message):
            call()


def test_nan_of_absent_populations_is_fine(fullscale, p_full):
    # TH 4E/4I do not exist: whatever their entries hold is never read.
    s = fullscale.copy()
    s["J"] = fullscale["J"].copy(deep=True)
    s["J"].loc[dict(area="TH", pop="4E")] = np.nan
    ds = theory.integrate(s, p_full, T=1.0, warn=False)
    assert np.isfinite(ds["rate"].sel(area="V1")).all()


@pytest.mark.parametrize("function, kwargs, message", [
    ("integrate", {"T": 0.1}, r"dt=0\.1 is invalid: expected a step smaller than T=0\.1 ms"),
    ("integrate", {"dt": 1.0, "T": 0.5}, r"dt=1\.0 is invalid: expected a step smaller than T=0\.5"),
    ("integrate", {"T": float("nan")}, r"T=nan is invalid: expected a duration > 0 ms"),
    ("integrate", {"replace": "poisson"}, r"replace='poisson' is invalid: expected one of "
                                          r"hom_poisson_stat, het_poisson_stat, het_current_nonstat"),
    ("integrate", {"cutoff": "yes"}, r"cutoff='yes' is invalid: expected True or False"),
    ("integrate", {"rate_ext": -1.0}, r"rate_ext=-1\.0 is invalid: expected a finite rate >= 0"),
    ("integrate", {"initial_rates": "uniform"}, r"initial_rates='uniform' is invalid"),
    ("integrate", {"areas_simulated": ("V1", "V9")}, r"areas_simulated=\['V9'\] is invalid"),
    ("fixed_point", {"tol": -1.0}, r"tol=-1\.0 is invalid: expected a tolerance > 0"),
    ("fixed_point", {"held_shift": "upstream"}, r"held_shift='upstream' is invalid: expected True"),
    ("fixed_point", {"initial": np.ones(254), "T": 10.0}, r"integrate_kwargs=\['T'\] is invalid"),
    ("fixed_point", {"rate_ext": float("inf")}, r"rate_ext=inf is invalid"),
    ("gain_matrix", {"rates": -np.ones(254)}, r"rates\[V1-23E\]=-1\.0 is invalid"),
    ("sweep", {"param": "chi", "values": [1.0], "fast": "no"}, r"fast='no' is invalid"),
    ("sweep", {"param": "chi", "values": [1.0], "tol": 0.0}, r"tol=0\.0 is invalid"),
    ("sweep", {"param": "chi", "values": [1.0], "build": "rebuild"}, r"build='rebuild' is invalid"),
    ("transfer_derivatives", {"held_shift": None}, r"held_shift=None is invalid"),
])
def test_bad_options_are_rejected_by_name(fullscale, p_full, function, kwargs, message):
    kwargs = dict(kwargs)
    if function.startswith("transfer"):
        args = (10.0, 5.0)
    elif function == "gain_matrix":
        args = (fullscale, kwargs.pop("rates"), p_full)
    elif function == "sweep":
        args = (fullscale, kwargs.pop("param"), kwargs.pop("values"), p_full)
    else:
        args = (fullscale, p_full)
    with pytest.raises(ParameterError, match=message):
        getattr(theory, function)(*args, **kwargs)


def test_integrate_rejects_non_structures():
    with pytest.raises(ParameterError, match=r"structure=.* is invalid: expected a structure"):
        theory.integrate(xr.Dataset({"J": 1.0}))


# --- fixed points, gain, stability -------------------------------------------------

def test_fixed_point_of_tutorial_cases(downscaled, fullscale, p_down, p_full):
    for net, params, name in ((downscaled, p_down, "downscaled_tutorial"),
                              (fullscale, p_full, "fullscale_tutorial")):
        fp = theory.fixed_point(net, params)
        # upstream's T = 50 ms state is within 2e-9 of the fixed point (fullscale: last change 3e-10)
        np.testing.assert_allclose(to_flat_vector(fp["rate"]),
                                   load_reference(f"theory_{name}.npz")["final_rates"], rtol=1e-8)
        assert bool(fp["converged"]) and bool(fp["stable"])
        assert float(np.abs(fp["residual"]).max()) <= 1e-9


def test_fixed_point_of_fullscale_default(default_fixed_point, default, p_full):
    fp = default_fixed_point
    nu = to_flat_vector(fp["rate"])
    assert bool(fp["converged"]) and float(np.abs(fp["residual"]).max()) <= 1e-9
    # Independent check: the slow transfer function at the fixed point's μ, σ returns ν*.
    mu, sigma = to_flat_vector(fp["mu"]), to_flat_vector(fp["sigma"])
    idx = np.arange(0, 254, 17)
    np.testing.assert_allclose([slow_phi(m, s) for m, s in zip(mu[idx], sigma[idx])], nu[idx],
                               rtol=1e-8, atol=1e-12)
    # It is the stable low-activity state; integrating from a perturbed copy returns to it.
    assert bool(fp["stable"]) and 0.5 < float(fp["eigenvalue_max_real"]) < 1.0
    start = nu * (1 + 0.01 * np.random.default_rng(0).uniform(-1, 1, nu.size))
    back = theory.integrate(default, Params(), initial_rates=start, T=50.0)
    assert bool(back["converged"])
    np.testing.assert_allclose(to_flat_vector(back["rate"]), nu, rtol=1e-6)
    # And it is the chi = 1.9 point of the ground-state branch continued from chi = 1.
    sw = theory.sweep(reference_structure("fullscale_tutorial"), "chi", [1.0, 1.45, 1.9], p_full,
                      chi_I=2.0)
    np.testing.assert_allclose(to_flat_vector(sw["rate"].sel(chi=1.9)), nu, rtol=1e-9)


def test_gain_matrix_is_the_jacobian_of_phi(downscaled, p_down):
    nu = load_reference("theory_downscaled_tutorial.npz")["final_rates"]
    G = to_flat_matrix(theory.gain_matrix(downscaled, nu, p_down))
    system = system_of(downscaled, p_down)
    # h = 1e-3: with h = 1e-4 the rounding noise of the difference quotient, ~1e-15 Φ / h
    # (Φ up to 50 spikes/s), is as large as the absolute tolerance below.
    h = 1e-3
    for j in (0, 2, 100, 253):
        e = np.zeros(254)
        e[j] = h
        column = (system.phi(nu + e) - system.phi(nu - e)) / (2 * h)
        np.testing.assert_allclose(G[:, j], column, rtol=1e-6, atol=1e-10 * np.abs(G).max())


def test_fixed_point_dataset_layout(default_fixed_point):
    fp = default_fixed_point
    assert fp["gain"].dims == ("area", "pop", "source_area", "source_pop")
    assert fp["rate"].attrs["units"] == "spikes/s" and fp["mu"].attrs["units"] == "mV"
    assert np.isnan(fp["rate"].sel(area="TH", pop="4E"))
    lam = np.linalg.eigvals(to_flat_matrix(fp["gain"]))
    assert float(fp["eigenvalue_max_real"]) == pytest.approx(lam.real.max(), rel=1e-10)
    assert float(fp["lambda_max"]) == pytest.approx(math.sqrt(lam.real.max()), rel=1e-10)


# --- replaced areas ----------------------------------------------------------------

def test_replaced_areas_with_own_rates_keep_the_fixed_point(downscaled, p_down):
    ref = load_reference("theory_downscaled_tutorial.npz")["final_rates"]
    p = p_down.update({"simulation": {"areas_simulated": ("V1", "V2"),
                                      "replace_non_simulated_areas": "het_poisson_stat"}})
    ds = theory.integrate(downscaled, p, replacement_rates=ref)
    np.testing.assert_allclose(to_flat_vector(ds["rate"]), ref, rtol=1e-9)
    assert ds["simulated"].sel(area=["V1", "V2"]).all()
    assert not ds["simulated"].sel(area="V4").any()
    assert ds.attrs["areas_simulated"] == ["V1", "V2"]
    assert np.isnan(ds["mu"].sel(area="V4")).all()


def test_hom_poisson_replacement_mean_input(fullscale, p_full):
    p = p_full.update({"simulation": {"areas_simulated": ("V1",),
                                      "replace_non_simulated_areas": "hom_poisson_stat"}})
    rates = np.zeros(254)
    got = theory.input_statistics(fullscale, rates, p)["mu"].sel(area="V1").values
    K = to_flat_matrix(fullscale["indegree"], fullscale["external_indegree"])
    J = to_flat_matrix(fullscale["J"], fullscale["external_J"])
    v1 = np.array([lab.startswith("V1-") for lab in population_labels()])
    # μ_CC for V1 = Σ τ_m J K rate_ext over the other areas (upstream test_replace_cc), + external.
    expected = 0.01 * ((K * J)[v1][:, :-1][:, ~v1].sum(1) * 10.0 + K[v1, -1] * J[v1, -1] * 10.0)
    np.testing.assert_allclose(got, expected, rtol=1e-12)


def test_subset_without_stationary_replacement_is_rejected(fullscale, p_full):
    with pytest.raises(ParameterError, match=r"replace_non_simulated_areas='het_current_nonstat' "
                                             r"is invalid: expected one of hom_poisson_stat"):
        theory.integrate(fullscale, p_full, areas_simulated=("V1",), replace="het_current_nonstat")


# --- chi: fast path and sweep -------------------------------------------------------

def test_rescale_reproduces_the_default_structure(fullscale, default, p_full):
    out = structure.rescale(fullscale, chi=1.9, chi_I=2.0, params=p_full)
    for name in ("J", "weight_mean", "weight_sd"):
        xr.testing.assert_allclose(out[name], default[name], rtol=1e-12, atol=0)
    xr.testing.assert_identical(out["indegree"], default["indegree"])


def test_rescale_of_downscaled_structure_preserves_input_statistics(downscaled, fullscale,
                                                                     p_down, p_full):
    # Down-scaling keeps μ and σ at the full-scale rates (docs/theory.md); the
    # rescaled DC drive must keep that property at chi = 1.9.
    from mam_xr.data import fetch

    nu_full = rates_vector(fetch("fullscale_rates.json"), "rates")
    down = structure.rescale(downscaled, chi=1.9, chi_I=2.0, params=p_down)
    full = structure.rescale(fullscale, chi=1.9, chi_I=2.0, params=p_full)
    a = theory.input_statistics(down, nu_full, p_down)
    b = theory.input_statistics(full, nu_full, p_full)
    xr.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
    assert not np.allclose(down["dc_drive"].fillna(0), downscaled["dc_drive"].fillna(0))
    with pytest.raises(ParameterError, match=r"K_scaling=1\.0 is invalid"):
        structure.rescale(downscaled, chi=1.9, chi_I=2.0, params=p_full)


def test_rescale_equals_a_rebuild_for_g_rate_ext_and_chi():
    # Down-scaled: the DC drive depends on all three; parameters from the structure's attrs.
    p = Params.tutorial()
    s = structure.build(p)
    for change in ({"g": -12.0}, {"rate_ext": 11.0}, {"chi": 1.9, "chi_I": 2.0, "g": -12.5, "rate_ext": 9.0}):
        fast = structure.rescale(s, **change)
        slow = structure.build(p.update(change))
        for name in ("J", "weight_mean", "weight_sd", "dc_drive", "indegree"):
            xr.testing.assert_allclose(fast[name], slow[name], rtol=1e-12, atol=1e-12)
        assert fast.attrs["network_label"] == slow.attrs["network_label"]
        assert Params.from_json(fast.attrs["params"]) == p.update(change)
    assert structure.rescale(s) is not s and structure.rescale(s).attrs["params"] == s.attrs["params"]


def test_rescale_rejects_bad_input(fullscale, p_full):
    with pytest.raises(ParameterError, match=r"params=None is invalid: expected the Params the structure "
                                             r"was built with"):
        structure.rescale(fullscale, chi=1.9)
    with pytest.raises(ParameterError, match=r"chi=-1\.0 is invalid"):
        structure.rescale(fullscale, chi=-1.0, params=p_full)
    with pytest.raises(ParameterError, match=r"structure='Dataset' is invalid"):
        structure.rescale(xr.Dataset(), chi=1.9, params=p_full)


def test_sweep_chi_fast_path(fullscale, p_full):
    values = [1.0, 1.5, 1.9]
    sw = theory.sweep(fullscale, "chi", values, p_full, chi_I=2.0)
    assert sw["rate"].dims == ("chi", "area", "pop")
    np.testing.assert_array_equal(sw["chi"], values)
    assert sw["converged"].all() and sw["stable"].all() and not sw["restarted"].any()
    # Every point is a fixed point of the structure at that chi (rescaled and solved on its own).
    for chi in values:
        s = structure.rescale(fullscale, chi=chi, chi_I=2.0, params=p_full)
        fp = theory.fixed_point(s, p_full.update(chi=chi, chi_I=2.0), with_gain=False)
        np.testing.assert_allclose(to_flat_vector(fp["rate"]), to_flat_vector(sw["rate"].sel(chi=chi)),
                                   rtol=1e-9)
        assert float(fp["eigenvalue_max_real"]) == pytest.approx(
            float(sw["eigenvalue_max_real"].sel(chi=chi)), rel=1e-9)


def test_sweep_restarts_where_a_branch_ends(fullscale, p_full):
    # With chi_I = 1 the low-activity branch of the tutorial network (mean 3.7 spikes/s)
    # ends below chi = 1.2: continuation fails, the sweep relaxes from the previous fixed
    # point (step 0.02 ms) and lands on the stable high-activity state.
    sw = theory.sweep(fullscale, "chi", [1.0, 1.2], p_full)
    assert sw["restarted"].values.tolist() == [False, True]
    assert sw["converged"].all() and sw["stable"].all()
    assert float(np.abs(sw["residual"].sel(chi=1.2)).max()) <= 1e-9
    assert float(sw["rate"].sel(chi=1.0).mean()) < 5.0 < 50.0 < float(sw["rate"].sel(chi=1.2).mean())
    # It is a fixed point of that structure, also for fixed_point started there.
    s = structure.rescale(fullscale, chi=1.2, chi_I=1.0, params=p_full)
    fp = theory.fixed_point(s, p_full.update(chi=1.2), initial=sw["rate"].sel(chi=1.2), with_gain=False)
    xr.testing.assert_allclose(fp["rate"], sw["rate"].sel(chi=1.2, drop=True), rtol=1e-9)


def test_sweep_flags_points_without_a_fixed_point(fullscale, p_full):
    # A restart budget of T = 1 ms is too short to reach the high-activity state:
    # the point is flagged and warned about, not hidden.
    with pytest.warns(theory.ConvergenceWarning, match=r"no fixed point .* at chi = \[1\.2\]"):
        sw = theory.sweep(fullscale, "chi", [1.0, 1.2], p_full.update({"theory": {"T": 1.0}}))
    assert sw["converged"].values.tolist() == [True, False]
    assert bool(sw["restarted"].sel(chi=1.2))
    assert float(np.abs(sw["residual"].sel(chi=1.2)).max()) > 1e-9


def test_sweep_with_build_callable_and_rate_ext(fullscale, p_full):
    calls = []

    def build(value):
        calls.append(value)
        return structure.rescale(fullscale, chi=value, chi_I=2.0, params=p_full)

    a = theory.sweep(fullscale, "chi", [1.0, 1.2], p_full, build=build)
    b = theory.sweep(fullscale, "chi", [1.0, 1.2], p_full, chi_I=2.0)
    assert calls == [1.0, 1.2]
    xr.testing.assert_allclose(a["rate"], b["rate"], rtol=1e-10)
    r = theory.sweep(fullscale, "rate_ext", [10.0, 11.0], p_full)
    assert r["converged"].all()
    # continuation from the rate_ext = 10 fixed point (from zero rates, rate_ext = 11 leads
    # elsewhere: the network has several fixed points)
    fp = theory.fixed_point(fullscale, p_full, rate_ext=11.0, with_gain=False,
                            initial=r["rate"].sel(rate_ext=10.0))
    np.testing.assert_allclose(to_flat_vector(r["rate"].sel(rate_ext=11.0)), to_flat_vector(fp["rate"]),
                               rtol=1e-9)
    assert float(r["rate"].sel(rate_ext=11.0).mean()) > float(r["rate"].sel(rate_ext=10.0).mean())


def test_sweep_rejects_unknown_fast_parameter(fullscale):
    with pytest.raises(ParameterError, match=r"param='surface' is invalid: expected one of chi"):
        theory.sweep(fullscale, "surface", [1.0])


# --- storage -------------------------------------------------------------------

def test_results_round_trip_through_zarr(tmp_path, fullscale, p_full, default_fixed_point):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", theory.ConvergenceWarning)
        results = {
            "integrate": theory.integrate(fullscale, p_full.update(
                {"theory": {"initial_rates": "random", "n_draws": 2}}), T=2.0),
            "fixed_point": default_fixed_point,
            "sweep": theory.sweep(fullscale, "chi", [1.0, 1.1], p_full, chi_I=2.0),
        }
    for name, ds in results.items():
        store = tmp_path / f"{name}.zarr"
        ds.to_zarr(store, group="theory", mode="w")
        back = xr.open_zarr(store, group="theory").load()
        xr.testing.assert_identical(back, ds)


# --- architecture ----------------------------------------------------------------

def test_theory_imports_no_later_stage():
    names = set()
    for path in Path(theory.__file__).parent.glob("*.py"):   # the modules of mam_xr.theory
        up = 1 if path.name == "__init__.py" else 2             # level of ``from mam_xr.<x>``
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == up:
                names.add((node.module or "").split(".")[0])
                names.update(a.name for a in node.names if node.module is None)
    assert not names & {"simulation", "store", "analysis", "viz", "sweep", "cli"}


# --- with mam_xr.structure.build -------------------------------------------------------

def test_sweep_rebuilding_structures_equals_fast_path():
    from mam_xr import structure

    p = Params.tutorial(scale=1.0, fullscale_rates=None, chi_I=2.0)
    s = structure.build(p)
    fast = theory.sweep(s, "chi", [1.0, 1.3], p)
    slow = theory.sweep(s, "chi", [1.0, 1.3], p, fast=False)
    assert fast.attrs["structures"] == "fast path on the given structure"
    assert slow.attrs["structures"] == "mam_xr.structure.build"
    xr.testing.assert_allclose(fast["rate"], slow["rate"], rtol=1e-11)
    # The params stored with a built structure are used when none are given.
    xr.testing.assert_allclose(theory.fixed_point(s, with_gain=False)["rate"],
                               theory.fixed_point(s, p, with_gain=False)["rate"], rtol=1e-12)


def test_fixed_point_from_a_given_unconverged_integration(default, default_fixed_point):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", theory.ConvergenceWarning)
        run = theory.integrate(default, Params())
    fp = theory.fixed_point(default, Params(), initial=run, with_gain=False)
    assert bool(fp["converged"])
    xr.testing.assert_allclose(fp["rate"], default_fixed_point["rate"], rtol=1e-9)


def test_default_fixed_point_does_not_depend_on_the_chaotic_trajectory(default_fixed_point):
    # structure.build(Params()) differs from the reference structure by rounding only, which
    # changes the unsettled T = 50 ms trajectory completely, but not the fixed point found.
    from mam_xr import structure

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", theory.ConvergenceWarning)
        fp = theory.fixed_point(structure.build(Params()), with_gain=False)
    assert "continuation in the CC coupling" in fp.attrs["started_from"]
    xr.testing.assert_allclose(fp["rate"], default_fixed_point["rate"], rtol=1e-8)


def test_integrate_rec_interval_thins_the_trajectory(downscaled, p_down):
    ref = load_reference("theory_downscaled_tutorial.npz")
    ds = theory.integrate(downscaled, p_down, rec_interval=1.0)
    assert ds.sizes["time"] == 51 and ds.attrs["rec_interval_ms"] == 1.0
    np.testing.assert_allclose(to_flat_vector(ds["trajectory"]), ref["rates_trajectory"][:, ::10],
                               rtol=1e-9)
    with pytest.raises(ParameterError, match=r"rec_interval=0\.15 is invalid: expected a multiple"):
        theory.integrate(downscaled, p_down, rec_interval=0.15)
