"""Theory atlas: branches against theory.integrate, stability against the gain matrix,
folds against dense sampling, Zarr round trip, bad input, the figure's data."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import xarray as xr

from mam_xr import atlas, structure, theory, viz_atlas
from mam_xr.errors import ParameterError
from mam_xr.flat import to_flat_matrix, to_flat_vector
from mam_xr.params import Params


def _quiet(function, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", theory.ConvergenceWarning)
        return function(*args, **kwargs)


@pytest.fixture(scope="module")
def full():
    # coarse grid at full scale (default params: chi_I = 2)
    return atlas.atlas(Params(), chi="1.0:2.5:0.05", n_random=2, integrate_every=2)


@pytest.fixture(scope="module")
def tutorial():
    return atlas.atlas(Params.tutorial(), chi="1.0:2.0:0.25", n_random=1, integrate_every=1)


def _at(params, value):
    q = params.update(chi=float(value))
    return structure.build(q), q


# --- full scale ------------------------------------------------------------------

def test_full_scale_has_the_s_shaped_curve_with_four_folds(full):
    assert full.sizes["chi"] == 31 and full.sizes["branch"] == 5
    assert full.attrs["curves_traced"] == 1
    folds = np.sort(full["fold_chi"].values)
    # an S with an inner S: low branch ends at ~2.076, the high branch starts at ~1.669
    np.testing.assert_allclose(folds, [1.6685, 1.8837, 1.9015, 2.0763], atol=2e-3)
    assert sorted(full["fold_kind"].values.tolist()) == [-1, -1, 1, 1]
    width = full["fold_chi_high"] - full["fold_chi_low"]
    assert bool((width > 0).all()) and bool((width <= 1e-4).all())
    assert bool(((full["fold_chi_low"] <= full["fold_chi"]) & (full["fold_chi"] <= full["fold_chi_high"])).all())
    assert bool(full["fold_verified"].all())
    # branches meet at their folds: every fold ends exactly two branches
    ends = np.concatenate([full["branch_fold_low"].values, full["branch_fold_high"].values])
    assert sorted(e for e in ends if e >= 0) == [0, 0, 1, 1, 2, 2, 3, 3]
    # every point is a fixed point, and the rates are labelled
    assert float(full["residual"].max()) <= 1e-9
    assert full["rate"].dims == ("chi", "branch", "area", "pop")
    low = full["mean_rate"].sel(chi=1.0).dropna("branch")
    assert low.size == 1 and 3.3 < float(low[0]) < 3.4


def test_integration_label_equals_theory_integrate(full):
    params = Params()
    checked = 0
    for value in (1.0, 1.5, 1.75, 1.9):
        s, q = _at(params, value)
        run = _quiet(theory.integrate, s, q)
        branch = int(full["integration_branch"].sel(chi=value))
        assert bool(full["integration_sampled"].sel(chi=value))
        assert bool(full["integration_converged"].sel(chi=value)) == bool(run["converged"])
        if bool(run["converged"]):
            on_branch = full["rate"].sel(chi=value, branch=branch)
            diff = float(np.nanmax(np.abs(on_branch - run["rate"])))
            assert diff <= 1e-6
            checked += 1
        else:
            assert branch == -1
    assert checked == 3          # χ = 1.9 does not converge within T = 50 ms (the default state)
    # below χ = 1.8 the integration settles on the low branch (branch 0) everywhere
    low = full["integration_branch"].sel(chi=slice(1.0, 1.75))
    assert bool((low == 0).all())


def _max_real(s, q, rates):
    G = to_flat_matrix(theory.gain_matrix(s, rates, q))
    return float(np.linalg.eigvals(G).real.max())


def test_stability_against_direct_eigenvalues(full):
    params = Params()
    for b in full["branch"].values:
        values = full["chi"].values[full["found"].sel(branch=b).values]
        for value in {values[0], values[-1]}:
            s, q = _at(params, value)
            point = full.sel(chi=value, branch=b)
            lam = _max_real(s, q, point["rate"])
            assert lam == pytest.approx(float(point["eigenvalue_max_real"]), abs=1e-8)
            assert bool(point["stable"]) == (lam < 1.0)
    # the low branch is stable, the branch back from its fold unstable
    assert bool(full["stable"].sel(chi=1.5, branch=0))
    assert not bool(full["stable"].sel(chi=1.9, branch=1))
    area = full["eigenvector_area"].sel(chi=1.5, branch=0)
    assert float(area.sum()) == pytest.approx(1.0) and float(area.min()) >= 0.0


def test_fold_against_dense_sampling(full):
    """Continue the low branch by theory.fixed_point in steps of 1e-4: it exists up to
    the fold's bracket and is gone 1e-4 beyond it."""
    params = Params()
    k = int(np.argmax(full["fold_chi"].values))            # the fold ending the low branch
    fold, high = float(full["fold_chi"][k]), float(full["fold_chi_high"][k])
    start = float(np.floor((fold - 3e-4) * 1e4) / 1e4)
    rates = full["fold_rate"][k]           # either branch near the fold will do
    last_on_branch, first_gone = None, None
    for value in np.round(np.arange(start, fold + 3e-4, 1e-4), 6):
        s, q = _at(params, value)
        fp = _quiet(theory.fixed_point, s, q, initial=rates, with_gain=False, warn=False)
        # near the fold a step of 1e-4 moves the rates by < 0.3 spikes/s; where the branch
        # is gone Newton fails or lands on the high-activity branch (tens of spikes/s away)
        jump = float(np.nanmax(np.abs(fp["rate"] - rates)))
        if bool(fp["converged"]) and jump < 2.0:
            last_on_branch, rates = value, fp["rate"]
        else:
            first_gone = value
            break
    assert last_on_branch is not None and first_gone is not None
    assert last_on_branch <= fold < first_gone
    assert first_gone - fold <= 1e-4 + 1e-9 and fold - last_on_branch <= 1e-4 + 1e-9
    assert high - fold <= 1e-4


# --- tutorial scale ------------------------------------------------------------------

def test_tutorial_scale_one_stable_branch(tutorial):
    params = Params.tutorial()
    assert tutorial.sizes["branch"] == 1 and tutorial.sizes["fold"] == 0
    assert bool(tutorial["found"].all()) and bool(tutorial["stable"].all())
    assert bool(tutorial["integration_converged"].all())
    assert (tutorial["integration_branch"].values == 0).all()
    for value in (1.0, 1.75):
        s, q = _at(params, value)
        run = _quiet(theory.integrate, s, q)
        assert bool(run["converged"])
        diff = float(np.nanmax(np.abs(tutorial["rate"].sel(chi=value, branch=0) - run["rate"])))
        assert diff <= 1e-6
        lam = _max_real(s, q, tutorial["rate"].sel(chi=value, branch=0))
        assert lam == pytest.approx(float(tutorial["eigenvalue_max_real"].sel(chi=value, branch=0)),
                                    abs=1e-8)
    # the down-scaled theory sits at ~29.6 spikes/s at χ = 1 (docs/atlas.md)
    assert float(tutorial["mean_rate"].sel(chi=1.0, branch=0)) == pytest.approx(29.59, abs=0.01)


@pytest.mark.parametrize("name, values", [("g", [-12.0, -11.0]), ("rate_ext", [10.0, 10.5]),
                                          ("chi_I", [1.0, 1.5])])
def test_other_parameters_are_fixed_points_of_the_rebuilt_structure(name, values):
    params = Params.tutorial()
    ds = atlas.atlas(params, n_random=0, integrate_every=1, **{name: values})
    assert ds.attrs["sweep_param"] == name and name in ds.dims
    for value in values:
        q = params.update({name: value})
        s = structure.build(q)
        for b in ds["branch"].values:
            rates = ds["rate"].sel({name: value, "branch": b})
            if not bool(ds["found"].sel({name: value, "branch": b})):
                continue
            stats = theory.input_statistics(s, rates, q)
            nrn = q.network.neuron
            phi = theory.transfer(to_flat_vector(stats["mu"]), to_flat_vector(stats["sigma"]),
                                  tau_m=nrn.tau_m, tau_s=nrn.tau_syn_ex, t_ref=nrn.t_ref,
                                  theta=nrn.V_th - nrn.E_L, V_r=nrn.V_reset - nrn.E_L)
            assert float(np.max(np.abs(phi - to_flat_vector(rates)))) <= 1e-8


# --- storage, input, figure -------------------------------------------------------------

def test_zarr_round_trip(tutorial, tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")       # zarr's notes on fixed-width strings
        tutorial.to_zarr(tmp_path / "atlas.zarr")
        back = xr.open_zarr(tmp_path / "atlas.zarr").load()
    xr.testing.assert_identical(back, tutorial)
    assert isinstance(back.attrs["timings"], dict)


def test_parse_range():
    values = atlas.parse_range("1.0:2.5:0.01")
    assert values.size == 151 and values[0] == 1.0 and values[-1] == 2.5
    assert atlas.parse_range("1.9").tolist() == [1.9]


@pytest.mark.parametrize("kwargs, match", [
    ({"chi": "0.5:2.0:0.1"}, r"chi=0\.5 is invalid"),
    ({"chi": "1.0:2.0:0"}, r"chi step=0\.0 is invalid: expected a step > 0"),
    ({"chi": "1.0:2.0:-0.1"}, r"chi step=-0\.1 is invalid"),
    ({"chi": "2.0:1.0:0.1"}, r"chi stop=1\.0 is invalid"),
    ({"chi": "1.0:x:0.1"}, r"chi='1\.0:x:0\.1' is invalid"),
    ({"chee": [1.0]}, r"parameter='chee' is invalid: expected one of chi, chi_I, g, rate_ext"),
    ({}, r"parameter=\[\] is invalid"),
    ({"chi": [1.0], "g": [-11.0]}, r"parameter=\['chi', 'g'\] is invalid"),
    ({"g": [-0.5]}, r"g=-0\.5 is invalid"),
    ({"chi": [1.0], "n_random": -1}, r"n_random=-1 is invalid"),
    ({"chi": [1.0], "integrate_every": 0}, r"integrate_every=0 is invalid"),
])
def test_bad_input_is_refused_by_name(kwargs, match):
    with pytest.raises(ParameterError, match=match):
        atlas.atlas(Params(), **kwargs)


def test_figure_draws_stable_solid_unstable_dashed(full):
    pieces = viz_atlas.atlas_curve_data(full)
    assert {p["stable"] for p in pieces} == {True, False}
    for p in pieces:
        b = p["branch"]
        stable = full["stable"].sel(branch=b, chi=p["x"][0])
        assert bool(stable) == p["stable"]
        np.testing.assert_allclose(p["y"], full["mean_rate"].sel(branch=b, chi=p["x"]).values)
    fig = viz_atlas.atlas_figure(full, simulated={1.0: 3.1, 1.9: 20.0})
    labels = [el.label for el in fig]
    assert labels.count("fold") == 1 and labels.count("simulation") == 1
    fold = [el for el in fig if el.label == "fold"][0]
    np.testing.assert_allclose(fold.dimension_values(0), full["fold_chi"].values)
    sim = [el for el in fig if el.label == "simulation"][0]
    assert sim.dimension_values(1).tolist() == [3.1, 20.0]
    v1 = viz_atlas.atlas_figure(full, area="V1")
    assert "V1" in v1.get(0).vdims[0].label
    with pytest.raises(ParameterError, match="area='V9' is invalid"):
        viz_atlas.atlas_figure(full, area="V9")


def test_cli_theory_atlas(tmp_path):
    from typer.testing import CliRunner

    from mam_xr.cli import app

    out = tmp_path / "atlas.zarr"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = CliRunner().invoke(app, ["theory", "--atlas", "chi=1.0:1.1:0.05", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "atlas over chi = 1 .. 1.1 (3 values): 1 branches, 0 folds" in result.output
    ds = xr.open_zarr(out, group="atlas").load()
    assert ds["chi"].values.tolist() == [1.0, 1.05, 1.1]
    # the tutorial preset: the down-scaled theory's single branch at ~29.6 spikes/s at χ = 1
    assert float(ds["mean_rate"].sel(chi=1.0, branch=0)) == pytest.approx(29.59, abs=0.01)
    bad = CliRunner().invoke(app, ["theory", "--atlas", "chi=1.0:2.0:0"])
    assert bad.exit_code == 2 and "chi step=0.0 is invalid" in bad.output
    bad = CliRunner().invoke(app, ["theory", "--atlas", "chi"])
    assert bad.exit_code == 2 and "atlas='chi' is invalid" in bad.output


# --- fullscale_rates="theory" ---------------------------------------------------------------

def test_fullscale_rates_theory_is_a_fixed_point_of_the_downscaled_theory():
    p = Params.tutorial(fullscale_rates="theory")           # scale 0.005, χ = χ_I = 1
    s = structure.build(p)
    full = s["fullscale_rates"]
    assert full.attrs["source"] == "theory" and "zero rates" in full.attrs["branch"]
    assert full.attrs["residual_max"] <= 1e-9 and full.attrs["stable"] is True
    # the full-scale theory of the tutorial parameters (not the pinned file's 29.6-spikes/s state)
    assert float(full.mean()) == pytest.approx(3.7292, abs=1e-4)
    # a fixed point of the down-scaled theory by construction: Φ(ν_full) = ν_full, and root
    # finding from it stays there
    stats = theory.input_statistics(s, full, p)
    nrn = p.network.neuron
    phi = theory.transfer(to_flat_vector(stats["mu"]), to_flat_vector(stats["sigma"]),
                          tau_m=nrn.tau_m, tau_s=nrn.tau_syn_ex, t_ref=nrn.t_ref,
                          theta=nrn.V_th - nrn.E_L, V_r=nrn.V_reset - nrn.E_L)
    assert float(np.max(np.abs(phi - to_flat_vector(full)))) <= 1e-6
    fp = _quiet(theory.fixed_point, s, p, initial=full, with_gain=False)
    assert bool(fp["converged"]) and float(np.nanmax(np.abs(fp["rate"] - full))) <= 1e-6
    # ... but an unstable one at scale 0.005 (max Re λ = 1.69): the integration leaves it
    assert float(fp["eigenvalue_max_real"]) == pytest.approx(1.687, abs=1e-3)
    # the pinned file compensates for other rates: there the full-scale state is no fixed point
    s_file = structure.build(Params.tutorial())
    moved = _quiet(theory.integrate, s_file, Params.tutorial(), initial_rates=full)
    assert float(np.nanmax(np.abs(moved["rate"] - full))) > 1.0
    with pytest.raises(ParameterError, match="fullscale_rates='theory' is invalid"):
        structure.rescale(s, chi=1.5, params=p)
    with pytest.raises(ParameterError, match="fullscale_rates='theory' is invalid"):
        atlas.atlas(p, chi=[1.0, 1.1])           # its DC drive is not linear in χ
