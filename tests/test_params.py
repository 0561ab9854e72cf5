"""Parameters: defaults, presets, updates, labels, schemas and every rejection message."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from mam_xr import ParameterError
from mam_xr.flat import AREAS
from mam_xr.params import Params, write_schemas
from conftest import load_reference


def test_defaults_are_upstream_head():
    p = Params()
    c = p.network.connection
    assert (c.chi, c.chi_I, c.g, c.av_indegree_V1) == (1.9, 2.0, -11.0, 3950.0)
    assert (c.fac_nu_ext_5E, c.fac_nu_ext_6E, c.fac_nu_ext_TH) == (1.125, 1.41666667, 1.2)
    assert c.K_stable == "K_prime_original"
    assert p.network.scale == 1.0 and p.network.neuron.V0_mean == -150.0
    assert p.theory.dt == 0.1 and p.theory.T == 50.0
    assert p.simulation.areas_simulated == AREAS


def test_tutorial_preset_matches_reference_params():
    p = Params.tutorial()
    meta = load_reference("structure_downscaled_tutorial_meta.json")
    up = meta["full_params"]
    assert p.network.scale == up["N_scaling"] == up["K_scaling"] == 0.005
    conn = up["connection_params"]
    for ours, theirs in [("g", "g"), ("chi", "cc_weights_factor"), ("chi_I", "cc_weights_I_factor"),
                         ("fac_nu_ext_5E", "fac_nu_ext_5E"), ("fac_nu_ext_6E", "fac_nu_ext_6E"),
                         ("fac_nu_ext_TH", "fac_nu_ext_TH"), ("av_indegree_V1", "av_indegree_V1"),
                         ("PSP_e", "PSP_e"), ("PSP_e_23_4", "PSP_e_23_4"), ("PSP_ext", "PSP_ext")]:
        assert getattr(p.network.connection, ours) == conn[theirs], ours
    assert p.network.input.rate_ext == up["input_params"]["rate_ext"]
    assert p.network.neuron.V0_sd == up["neuron_params"]["V0_sd"]
    for key, value in up["neuron_params"]["single_neuron_dict"].items():
        assert getattr(p.network.neuron, key) == value, key
    for key, value in up["delay_params"].items():
        assert getattr(p.network.delay, key) == value, key
    assert p.simulation.t_sim == 2000.0 and p.simulation.seed == 1


def test_tutorial_chi_rule_and_aliases():
    assert Params.tutorial(chi=1.9).network.connection.chi_I == 2.0
    assert Params.tutorial(chi=1.0).network.connection.chi_I == 1.0
    assert Params.tutorial(chi=1.9, chi_I=1.5).network.connection.chi_I == 1.5
    assert Params.tutorial(cc_weights_factor=1.5).network.connection.chi == 1.5


def test_nested_update_keeps_the_rest():
    p = Params.tutorial().update({"network": {"connection": {"g": -12.0}}}, t_sim=500.0)
    assert p.network.connection.g == -12.0 and p.simulation.t_sim == 500.0
    assert p.network.scale == 0.005 and p.network.connection.chi == 1.0


def test_json_round_trip_and_label_changes_with_values():
    p = Params.tutorial(chi=1.5)
    q = Params.from_json(p.to_json())
    assert q == p and q.label() == p.label()
    assert Params.tutorial(chi=1.6).label() != p.label()
    assert Params.tutorial(t_sim=100.0).network_label() == Params.tutorial().network_label()
    assert len(p.label()) == 32


def test_label_is_stable_across_processes():
    code = "from mam_xr.params import Params; print(Params.tutorial(chi=1.9).label())"
    out = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True).stdout.strip() for _ in range(2)}
    assert out == {Params.tutorial(chi=1.9).label()}


@pytest.mark.parametrize("kwargs, message", [
    (dict(chi=0.5), "network.connection.chi=0.5 is invalid: expected a value greater than or equal to 1"),
    (dict(scale=0.0), "network.scale=0.0 is invalid: expected a value greater than 0"),
    (dict(scale=1.5), "network.scale=1.5 is invalid: expected a value less than or equal to 1"),
    (dict(areas_simulated=["V1", "XX"]), "simulation.areas_simulated='XX' is invalid: expected area names among the 32 areas"),
    (dict(areas_simulated=["V1", "V1"]), "expected each area at most once"),
    (dict(areas_simulated=["V1"], replace_non_simulated_areas=None),
     "simulation.replace_non_simulated_areas=None is invalid: expected one of hom_poisson_stat, het_poisson_stat, het_current_nonstat"),
    (dict(replace_non_simulated_areas="zero"), "simulation.replace_non_simulated_areas='zero' is invalid"),
    (dict(g=-0.5), "network.connection.g=-0.5 is invalid: expected a value less than or equal to -1"),
    (dict(rate_ext=-1.0), "network.input.rate_ext=-1.0 is invalid"),
    (dict(threads="two"), "simulation.threads='two' is invalid: expected a valid integer"),
    (dict(t_sim=100.05), "simulation.t_sim=100.05 is invalid: expected a multiple of dt=0.1 ms"),
    (dict(V_th=-70.0), "network.neuron.V_th=-70.0 is invalid: expected a threshold above V_reset"),
    (dict(K_stable="mine.npy"), "network.connection.K_stable='mine.npy' is invalid"),
    (dict(gg=1), "gg=1 is invalid: expected a known parameter (did you mean g"),
])
def test_rejections_name_parameter_value_and_allowed(kwargs, message):
    with pytest.raises(ParameterError) as info:
        Params.tutorial(**kwargs)
    assert message in str(info.value)
    assert isinstance(info.value, ValueError)


def test_unknown_nested_key_and_missing_fullscale_rates():
    with pytest.raises(ParameterError, match=r"network.connection.E_specificity=True is invalid: expected no such parameter"):
        Params.from_dict({"network": {"connection": {"E_specificity": True}}})
    with pytest.raises(ParameterError, match=r"fullscale_rates=None is invalid"):
        Params.from_dict(scale=0.5)


def test_committed_schemas_are_current(tmp_path):
    written = write_schemas(tmp_path)
    repo = Path(__file__).resolve().parents[1] / "schemas"
    for path in written:
        assert json.loads(path.read_text()) == json.loads((repo / path.name).read_text()), path.name
