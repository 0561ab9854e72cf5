"""Tests of mam_xr.sweep.spec and mam_xr.sweep.plan: spec validation and planning (nothing runs)."""

from __future__ import annotations

import pytest

from mam_xr.errors import ParameterError
from mam_xr.params import Params
from mam_xr.sweep import Case, Coupling, SweepSpec, load_spec, plan

CHIS = [1.0, 1.5, 2.0]


# --------------------------------------------------------------------------------------
# Specification and plan (no simulation)
# --------------------------------------------------------------------------------------

def test_chi_spec_plans_paper_coupling():
    spec = SweepSpec.chi(CHIS)
    points = plan(spec)
    assert spec.dims == ("chi",)
    assert [p.coords for p in points] == [{"chi": c} for c in CHIS]
    assert [p.params.network.connection.chi_I for p in points] == [1.0, 2.0, 2.0]
    # each point's parameters are the preset with the values applied
    expected = Params.tutorial(chi=1.5, chi_I=2.0)
    assert points[1].label == expected.label()


def test_grid_and_zip_shapes():
    grid = SweepSpec.from_dict({"parameters": {"chi": [1.0, 2.0], "g": [-11.0, -12.0, -13.0]}})
    assert grid.dims == ("chi", "g") and grid.shape == (2, 3)
    assert [p.index for p in plan(grid)][:4] == [(0, 0), (0, 1), (0, 2), (1, 0)]
    zipped = SweepSpec.from_dict({"parameters": {"chi": [1.0, 2.0], "chi_I": [1.0, 2.0]},
                                       "mode": "zip"})
    assert zipped.dims == ("chi",) and zipped.shape == (2,)
    assert [p.values for p in plan(zipped)] == [{"chi": 1.0, "chi_I": 1.0}, {"chi": 2.0, "chi_I": 2.0}]


def test_dotted_names_and_operator_cases():
    spec = SweepSpec.from_dict({
        "parameters": {"network.connection.chi": [1.0, 1.8, 2.5]},
        "coupled": [{"parameter": "chi_I", "cases": [{"when": {"chi": {"gt": 2.0}}, "value": 3.0},
                                                     {"when": {"chi": {"ge": 1.5}}, "value": 2.0},
                                                     {"value": 1.0}]}],
        "base": {"preset": "default"}})
    assert spec.dims == ("chi",)
    assert [p.params.network.connection.chi_I for p in plan(spec)] == [1.0, 2.0, 3.0]


@pytest.mark.parametrize("values, match", [
    ({"parameters": {"chii": [1.0]}}, r"parameter='chii' is invalid: expected a known parameter.*did you mean chi"),
    ({"parameters": {"network.connection.chii": [1.0]}}, r"parameter='network.connection.chii' is invalid"),
    ({"parameters": {"chi": []}}, r"parameters.chi=\[\] is invalid: expected at least one value"),
    ({"parameters": {"chi": [1.0, 1.0]}}, r"expected distinct values"),
    ({"parameters": {"chi": [1.0, 2.0], "g": [-11.0]}, "mode": "zip"}, r"lists of equal length"),
    ({"parameters": {"chi": [1.0]}, "run": "analyse"}, r"run='analyse' is invalid: expected 'simulate'"),
    ({"parameters": {"chi": [1.0]}, "run": "simulate+plot"}, r"run='plot' is invalid"),
    ({"parameters": {"chi": [1.0]}, "coupled": [{"parameter": "chi_I", "cases": [
        {"when": {"g": -11.0}, "value": 1.0}]}]}, r"when='g' is invalid: expected a swept"),
    ({"parameters": {"chi": [1.0]}, "coupled": [{"parameter": "chi", "cases": [{"value": 1.0}]}]},
     r"coupled.parameter='chi' is invalid: expected a parameter that is not swept"),
    ({"parameters": {"chi": [1.0]}, "engine": "nest"}, r"engine='nest' is invalid: expected no such parameter"),
])
def test_invalid_spec_raises_with_the_name(values, match):
    with pytest.raises(ParameterError, match=match):
        SweepSpec.from_dict(values)


def test_invalid_point_is_reported_not_raised():
    spec = SweepSpec.from_dict({"parameters": {"g": [-11.0, 5.0]}})
    ok, bad = plan(spec)
    assert ok.valid and ok.params.network.connection.g == -11.0
    assert not bad.valid and bad.params is None
    assert "network.connection.g=5.0 is invalid: expected a value less than or equal to -1" in bad.error
    coupling = Coupling(parameter="chi_I", cases=(Case(when={"chi": 1.0}, value=1.0),))
    unmatched = plan(SweepSpec(parameters={"chi": (1.0, 2.0)}, coupled=(coupling,)))[1]
    assert "chi_I=None is invalid: expected a case of the coupling that holds" in unmatched.error


def test_spec_round_trips_through_json_and_toml(tmp_path):
    spec = SweepSpec.chi([1.0, 2.0], overrides={"scale": 0.001}, run="simulate+analyse",
                         analysis_options={"t_min_ms": 50.0})
    (tmp_path / "s.json").write_text(spec.to_json())
    assert load_spec(tmp_path / "s.json") == spec
    (tmp_path / "s.toml").write_text(
        'name = "t"\nrun = "theory"\n[parameters]\nchi = [1.0, 2.0]\n'
        '[[coupled]]\nparameter = "chi_I"\n[[coupled.cases]]\nwhen = {chi = 1.0}\nvalue = 1.0\n'
        '[[coupled.cases]]\nvalue = 2.0\n[base]\npreset = "tutorial"\n')
    toml = load_spec(tmp_path / "s.toml")
    assert [p.params.network.connection.chi_I for p in plan(toml)] == [1.0, 2.0]
    with pytest.raises(ParameterError, match=r"spec='.*missing.json' is invalid: expected an existing"):
        load_spec(tmp_path / "missing.json")
