"""Bad inputs, table-driven: every one is refused with a ParameterError (or a CLI error)
whose message names the parameter or file, the value and what is allowed.

Tables: PARAMS (Params values), FILES (parameter and rates files), CLI (``mam-xr``
options through typer's CliRunner), SWEEP (sweep specs).  ``test_count`` keeps the
total at 100 or more.
"""

from __future__ import annotations

import json
import math
import re

import pytest
from typer.testing import CliRunner

from mam_xr import structure
from mam_xr.cli import app
from mam_xr.errors import ParameterError
from mam_xr.params import Params, preset
from mam_xr.sweep import SweepSpec, load_spec

NAN, INF = math.nan, math.inf

# (values given to Params.tutorial, parameter named, value as shown, what is allowed)
PARAMS = [
    ({'scale': 0.0}, 'network.scale', '0.0', 'a value greater than 0'),
    ({'scale': -1.0}, 'network.scale', '-1.0', 'a value greater than 0'),
    ({'scale': 1.5}, 'network.scale', '1.5', 'a value less than or equal to 1'),
    ({'scale': NAN}, 'network.scale', 'nan', 'a finite number'),
    ({'scale': INF}, 'network.scale', 'inf', 'a finite number'),
    ({'scale': True}, 'network.scale', 'True', 'a valid number'),
    ({'scale': '0.01'}, 'network.scale', "'0.01'", 'a valid number'),
    ({'scale': None}, 'network.scale', 'None', 'a valid number'),
    ({'scale': 0.0005}, 'network.scale', '0.0005', 'at least 0.0006209 with surface=1.0 mm²'),
    ({'N_scaling': 0.0}, 'network.neuron_scaling', '0.0', 'a value greater than 0'),
    ({'N_scaling': 1.5}, 'network.neuron_scaling', '1.5', 'a value less than or equal to 1'),
    ({'N_scaling': NAN}, 'network.neuron_scaling', 'nan', 'a finite number'),
    ({'N_scaling': '0.1'}, 'network.neuron_scaling', "'0.1'", 'a valid number'),
    ({'N_scaling': 0.0001}, 'network.neuron_scaling', '0.0001', 'at least 0.0006209 with surface=1.0 mm²'),
    ({'K_scaling': 0.0}, 'network.indegree_scaling', '0.0', 'a value greater than 0'),
    ({'K_scaling': 2.0}, 'network.indegree_scaling', '2.0', 'a value less than or equal to 1'),
    ({'K_scaling': -INF}, 'network.indegree_scaling', '-inf', 'a finite number'),
    ({'K_scaling': True}, 'network.indegree_scaling', 'True', 'a valid number'),
    ({'surface': 0.0}, 'network.surface', '0.0', 'a value greater than 0'),
    ({'surface': -1.0}, 'network.surface', '-1.0', 'a value greater than 0'),
    ({'surface': INF}, 'network.surface', 'inf', 'a finite number'),
    ({'surface': NAN}, 'network.surface', 'nan', 'a finite number'),
    ({'surface': 10000.0}, 'network.surface', '10000.0', 'a value less than or equal to 1484.629'),
    ({'surface': '1'}, 'network.surface', "'1'", 'a valid number'),
    ({'fullscale_rates': 5}, 'network.fullscale_rates', '5', 'a valid string'),
    ({'C_m': 0.0}, 'network.neuron.C_m', '0.0', 'a value greater than 0'),
    ({'C_m': 1e+308}, 'network.neuron.C_m', '1e+308', 'a value less than or equal to 100000'),
    ({'C_m': NAN}, 'network.neuron.C_m', 'nan', 'a finite number'),
    ({'tau_m': INF}, 'network.neuron.tau_m', 'inf', 'a finite number'),
    ({'tau_m': 0.5}, 'network.neuron.tau_syn_ex', '0.5', 'a value different from tau_m=0.5 ms'),
    ({'tau_syn_ex': -1.0}, 'network.neuron.tau_syn_ex', '-1.0', 'a value greater than or equal to 0.001'),
    ({'tau_syn_in': 1e-308}, 'network.neuron.tau_syn_in', '1e-308', 'a value greater than or equal to 0.001'),
    ({'E_L': NAN}, 'network.neuron.E_L', 'nan', 'a finite number'),
    ({'E_L': INF}, 'network.neuron.E_L', 'inf', 'a finite number'),
    ({'V_th': -INF}, 'network.neuron.V_th', '-inf', 'a finite number'),
    ({'V_th': -70.0}, 'network.neuron.V_th', '-70.0', 'a threshold above V_reset=-65.0 mV'),
    ({'V_reset': NAN}, 'network.neuron.V_reset', 'nan', 'a finite number'),
    ({'t_ref': -1.0}, 'network.neuron.t_ref', '-1.0', 'a value greater than or equal to 0'),
    ({'V0_mean': NAN}, 'network.neuron.V0_mean', 'nan', 'a finite number'),
    ({'V0_mean': -INF}, 'network.neuron.V0_mean', '-inf', 'a finite number'),
    ({'V0_sd': -1.0}, 'network.neuron.V0_sd', '-1.0', 'a value greater than or equal to 0'),
    ({'V0_sd': INF}, 'network.neuron.V0_sd', 'inf', 'a finite number'),
    ({'chi': 0.5}, 'network.connection.chi', '0.5', 'a value greater than or equal to 1'),
    ({'chi': INF}, 'network.connection.chi', 'inf', 'a finite number'),
    ({'chi': NAN}, 'network.connection.chi', 'nan', 'a finite number'),
    ({'chi': '1.9'}, 'network.connection.chi', "'1.9'", 'a valid number'),
    ({'chi': True}, 'network.connection.chi', 'True', 'a valid number'),
    ({'chi_I': 0.9}, 'network.connection.chi_I', '0.9', 'a value greater than or equal to 1'),
    ({'chi_I': INF}, 'network.connection.chi_I', 'inf', 'a finite number'),
    ({'g': -0.5}, 'network.connection.g', '-0.5', 'a value less than or equal to -1'),
    ({'g': -INF}, 'network.connection.g', '-inf', 'a finite number'),
    ({'g': NAN}, 'network.connection.g', 'nan', 'a finite number'),
    ({'PSP_e': 0.0}, 'network.connection.PSP_e', '0.0', 'a value greater than 0'),
    ({'PSP_e': INF}, 'network.connection.PSP_e', 'inf', 'a finite number'),
    ({'av_indegree_V1': 0.0}, 'network.connection.av_indegree_V1', '0.0', 'a value greater than 0'),
    ({'av_indegree_V1': 1e+308}, 'network.connection.av_indegree_V1', '1e+308', 'a value less than or equal to 1000000'),
    ({'lognormal_weights': 'yes'}, 'network.connection.lognormal_weights', "'yes'", 'a valid boolean'),
    ({'lognormal_weights': 1}, 'network.connection.lognormal_weights', '1', 'a valid boolean'),
    ({'lognormal_EE_only': 'true'}, 'network.connection.lognormal_EE_only', "'true'", 'a valid boolean'),
    ({'K_stable': 'mine.npy'}, 'network.connection.K_stable', "'mine.npy'", "a value 'K_prime_original'"),
    ({'fac_nu_ext_TH': 0.0}, 'network.connection.fac_nu_ext_TH', '0.0', 'a value greater than 0'),
    ({'fac_nu_ext_5E': NAN}, 'network.connection.fac_nu_ext_5E', 'nan', 'a finite number'),
    ({'PSC_rel_sd_normal': -1.0}, 'network.connection.PSC_rel_sd_normal', '-1.0', 'a value greater than or equal to 0'),
    ({'delay_e': 0.0}, 'network.delay.delay_e', '0.0', 'a value greater than 0'),
    ({'delay_i': INF}, 'network.delay.delay_i', 'inf', 'a finite number'),
    ({'delay_rel': -1.0}, 'network.delay.delay_rel', '-1.0', 'a value greater than or equal to 0'),
    ({'interarea_speed': 0.0}, 'network.delay.interarea_speed', '0.0', 'a value greater than 0'),
    ({'rate_ext': -1.0}, 'network.input.rate_ext', '-1.0', 'a value greater than or equal to 0'),
    ({'rate_ext': INF}, 'network.input.rate_ext', 'inf', 'a finite number'),
    ({'rate_ext': NAN}, 'network.input.rate_ext', 'nan', 'a finite number'),
    ({'poisson_input': False}, 'network.input.poisson_input', 'False', 'a value True'),
    ({'gg': 1}, 'gg', '1', 'a known parameter'),
    ({'network': 5}, 'network', '5', 'a valid dictionary or instance of NetworkParams'),
    ({'network': {'neuron': 3}}, 'network.neuron', '3', 'a valid dictionary or instance of NeuronParams'),
    ({'network': {'connection': {'E_specificity': True}}}, 'network.connection.E_specificity', 'True', 'no such parameter'),
    ({'t_sim': INF}, 'simulation.t_sim', 'inf', 'a finite number'),
    ({'t_sim': 1e+300}, 'simulation.t_sim', '1e+300', 'a value less than or equal to 1000000000'),
    ({'t_sim': 0.0}, 'simulation.t_sim', '0.0', 'a value greater than 0'),
    ({'t_sim': -5.0}, 'simulation.t_sim', '-5.0', 'a value greater than 0'),
    ({'t_sim': NAN}, 'simulation.t_sim', 'nan', 'a finite number'),
    ({'t_sim': 100.05}, 'simulation.t_sim', '100.05', 'a multiple of dt=0.1 ms'),
    ({'t_sim': '100'}, 'simulation.t_sim', "'100'", 'a valid number'),
    ({'dt': 1e-09}, 'simulation.dt', '1e-09', 'a value greater than or equal to 0.001'),
    ({'dt': 0.0}, 'simulation.dt', '0.0', 'a value greater than or equal to 0.001'),
    ({'dt': 0.0005}, 'simulation.dt', '0.0005', 'a value greater than or equal to 0.001'),
    ({'dt': 0.0015}, 'simulation.dt', '0.0015', "a multiple of NEST's tic=0.001 ms"),
    ({'dt': 2.0}, 'simulation.dt', '2.0', 'a value less than or equal to 1'),
    ({'dt': NAN}, 'simulation.dt', 'nan', 'a finite number'),
    ({'segment': INF}, 'simulation.segment', 'inf', 'a finite number'),
    ({'segment': 0.05}, 'simulation.segment', '0.05', 'a multiple of dt=0.1 ms'),
    ({'segment': 100.05}, 'simulation.segment', '100.05', 'a multiple of dt=0.1 ms'),
    ({'segment': 0.0}, 'simulation.segment', '0.0', 'a value greater than 0'),
    ({'segment': NAN}, 'simulation.segment', 'nan', 'a finite number'),
    ({'threads': '2'}, 'simulation.threads', "'2'", 'a valid integer'),
    ({'threads': 2.0}, 'simulation.threads', '2.0', 'a valid integer'),
    ({'threads': True}, 'simulation.threads', 'True', 'a valid integer'),
    ({'threads': 0}, 'simulation.threads', '0', 'a value greater than or equal to 1'),
    ({'threads': 2000}, 'simulation.threads', '2000', 'a value less than or equal to 1024'),
    ({'seed': 0}, 'simulation.seed', '0', 'a value greater than or equal to 1'),
    ({'seed': 2147483648}, 'simulation.seed', '2147483648', 'a value less than 2147483648'),
    ({'seed': '1'}, 'simulation.seed', "'1'", 'a valid integer'),
    ({'seed': 1.5}, 'simulation.seed', '1.5', 'a valid integer'),
    ({'areas_simulated': None}, 'simulation.areas_simulated', 'None', 'a list of area names among the 32 areas'),
    ({'areas_simulated': 5}, 'simulation.areas_simulated', '5', 'a list of area names among the 32 areas'),
    ({'areas_simulated': ['XX']}, 'simulation.areas_simulated', "'XX'", 'area names among the 32 areas V1, V2, VP, V3, V3A, MT, V4t, '),
    ({'areas_simulated': []}, 'simulation.areas_simulated', '()', 'at least one area'),
    ({'areas_simulated': ['V1', 'V1']}, 'simulation.areas_simulated', "('V1', 'V1')", 'each area at most once'),
    ({'areas_simulated': [1]}, 'simulation.areas_simulated', '1', 'area names among the 32 areas V1, V2, VP, V3, V3A, MT, V4t, '),
    ({'replace_non_simulated_areas': 'zero'}, 'simulation.replace_non_simulated_areas', "'zero'", "a value 'hom_poisson_stat', 'het_poisson_stat' or 'het_curre"),
    ({'areas_simulated': ['V1'], 'replace_non_simulated_areas': None}, 'simulation.replace_non_simulated_areas', 'None', 'one of hom_poisson_stat, het_poisson_stat, het_current_nonst'),
    ({'engine': 'neuron'}, 'simulation.engine', "'neuron'", "a value 'nest' or 'brian2'"),
    ({'record_vm': True}, 'simulation.record_vm', 'True', 'a value False'),
    ({'replace_cc_input_source': 5}, 'simulation.replace_cc_input_source', '5', 'a valid string'),
    ({'theory.n_draws': 1000000000}, 'theory.n_draws', '1000000000', 'a value less than or equal to 1000'),
    ({'theory.n_draws': 0}, 'theory.n_draws', '0', 'a value greater than or equal to 1'),
    ({'theory.n_draws': '3'}, 'theory.n_draws', "'3'", 'a valid integer'),
    ({'theory.dt': 0.0}, 'theory.dt', '0.0', 'a value greater than 0'),
    ({'theory.dt': INF}, 'theory.dt', 'inf', 'a finite number'),
    ({'theory.dt': 2.0}, 'theory.dt', '2.0', 'a value less than or equal to 1'),
    ({'theory.T': INF}, 'theory.T', 'inf', 'a finite number'),
    ({'theory.T': 0.0}, 'theory.T', '0.0', 'a value greater than 0'),
    ({'theory.T': 100000.0, 'theory.dt': 0.001}, 'theory.T', '100000.0', 'at most 1e+07 steps of dt=0.001 ms'),
    ({'theory.rate_max': NAN}, 'theory.rate_max', 'nan', 'a finite number'),
    ({'theory.rate_max': 0.0}, 'theory.rate_max', '0.0', 'a value greater than 0'),
    ({'theory.seed': -1}, 'theory.seed', '-1', 'a value greater than or equal to 0'),
    ({'theory.seed': 4294967296}, 'theory.seed', '4294967296', 'a value less than 4294967296'),
    ({'theory.initial_rates': 'ones'}, 'theory.initial_rates', "'ones'", "a value 'zero' or 'random'"),
]


@pytest.mark.parametrize("values, name, shown, allowed", PARAMS,
                         ids=[f"{i}-{row[1]}={row[2]}" for i, row in enumerate(PARAMS)])
def test_params(values, name, shown, allowed):
    with pytest.raises(ParameterError) as info:
        Params.tutorial(values)
    message = str(info.value)
    assert f"{name}={shown} is invalid: expected {allowed}" in message


def test_from_json_names_what_is_wrong():
    with pytest.raises(ParameterError, match=r"^params=\[1\] is invalid: expected a dict of parameters "
                                             r"\(JSON object\) with sections network, simulation, theory"):
        Params.from_json("[1]")
    with pytest.raises(ParameterError, match=r"^params='\{oops' is invalid: expected valid JSON; .* at "
                                             r"line 1, column 2"):
        Params.from_json("{oops")


# --- files ----------------------------------------------------------------------------

RATES_OK = None   # filled lazily: a complete rates file


def _write(tmp_path, name, text):
    path = tmp_path / name
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return path


# (file name, content, how it is read, regex of the message; {path} is the file's path)
FILES = [
    ("p.json", '{"network":\n  {"scale": 0.01,}}', "params", r"params='{path}' is invalid: expected a valid JSON "
     r"file; Expecting property name enclosed in double quotes at line 2, column 18"),
    ("p.json", "", "params", r"params='{path}' is invalid: expected a valid JSON file; Expecting value at line 1"),
    ("p.json", "[1, 2]", "params", r"params='{path}' is invalid: expected a JSON object of parameters "
     r"\(the file holds a list\)"),
    ("p.json", b"\xff\xfe\x00", "params", r"params='{path}' is invalid: expected a readable JSON file"),
    ("p.json", '{"network": {"scale": 2.0}}', "params", r"network.scale=2.0 is invalid: expected a value less "
     r"than or equal to 1 .* \(in the parameters file {path}\)"),
    ("p.json", '{"simulation": {"threads": "2"}}', "params", r"simulation.threads='2' is invalid: expected a "
     r"valid integer .*\(in the parameters file {path}\)"),
    ("p.json", '{"chii": 2.0}', "params", r"chii=2.0 is invalid: expected a known parameter \(did you mean chi"),
    (None, None, "params", r"params='{path}' is invalid: expected a readable JSON file"),
    ("p.json", '{"oops"', "preset", r"params='{path}' is invalid: expected a valid JSON file; .* line 1"),
    ("r.json", '{"V1": {"23E": 1.0,}}', "fullscale_rates", r"fullscale_rates='{path}' is invalid: expected a "
     r"readable JSON file of population rates \(.*line 1 column 20"),
    ("r.json", '{"V1": {"23E": "abc"}}', "fullscale_rates", r"fullscale_rates='{path}' is invalid: expected a "
     r"JSON file of numeric rates"),
    ("r.json", '{"V1": {"23E": -1.0}}', "fullscale_rates", r"fullscale_rates='{path}' is invalid: expected finite "
     r"rates >= 0 spikes/s \(found -1.0 for V1 23E\)"),
    ("r.json", '{"V1": {"23E": 1.0}}', "fullscale_rates", r"fullscale_rates='{path}' is invalid: expected a rate "
     r"for every population \(missing V1 23I\)"),
    ("r.json", "[1.0]", "fullscale_rates", r"fullscale_rates='{path}' is invalid: expected a rates mapping"),
    (None, None, "fullscale_rates", r"fullscale_rates='{path}' is invalid: expected \"upstream\", None or the "
     r"path of a rates JSON file"),
    ("s.json", '{"parameters": {"chi": [1.0,]}}', "spec", r"spec='{path}' is invalid: expected valid JSON "
     r"\(.*line 1 column 29"),
    (None, None, "spec", r"spec='{path}' is invalid: expected an existing JSON or TOML file"),
    ("base.json", '{"network": {"scale": 0.01}', "sweep_preset", r"params='{path}' is invalid: expected a valid "
     r"JSON file; Expecting ',' delimiter at line 1, column 28"),
    ("base.json", '{"network": {"scale": 0.01, "gg": 1}}', "sweep_preset", r"network.gg=1 is invalid: expected no "
     r"such parameter .*\(in the parameters file {path}\)"),
]


@pytest.mark.parametrize("name, text, kind, pattern", FILES,
                         ids=[f"{i}-{row[2]}" for i, row in enumerate(FILES)])
def test_files(name, text, kind, pattern, tmp_path):
    path = _write(tmp_path, name, text) if name else tmp_path / "missing.json"
    with pytest.raises(ParameterError) as info:
        if kind == "params":
            Params.from_file(path)
        elif kind == "preset":
            preset(str(path))
        elif kind == "sweep_preset":
            SweepSpec.from_dict(dict(parameters={"chi": [1.0]}, base={"preset": str(path)})).base.params()
        elif kind == "fullscale_rates":
            structure.build(Params.tutorial(fullscale_rates=str(path)))
        else:
            load_spec(path)
    assert re.search(pattern.replace("{path}", re.escape(str(path))), str(info.value)), str(info.value)


# --- command line ---------------------------------------------------------------------

# (arguments, regex of the message)
CLI = [
    (["params", "--scale", "nan"], r"scale=nan is invalid: expected a finite number"),
    (["params", "--scale", "inf"], r"scale=inf is invalid: expected a finite number"),
    (["params", "--scale", "0"], r"scale=0.0 is invalid: expected a value greater than 0 .*in \(0, 1\]"),
    (["params", "--scale", "2"], r"scale=2.0 is invalid: expected a value less than or equal to 1"),
    (["params", "--scale", "0.0001"], r"scale=0.0001 is invalid: expected at least 0.0006209"),
    (["params", "--chi", "0.5"], r"chi=0.5 is invalid: expected a value greater than or equal to 1"),
    (["params", "--chi", "inf"], r"chi=inf is invalid: expected a finite number"),
    (["params", "--chi", "nan"], r"chi=nan is invalid: expected a finite number"),
    (["params", "--chi-I", "0.5"], r"chi_I=0.5 is invalid: expected a value greater than or equal to 1"),
    (["params", "--chi", "1000"], r"chi=1000.0 is invalid: expected a value less than or equal to 100"),
    (["params", "--preset", "nope"], r"--preset='nope' is invalid: expected 'tutorial' or 'default'"),
    (["params", "--params", "{file:[1]}"], r"params=\[1\] is invalid: expected a dict of parameters"),
    (["params", "--params", '{file:{"network": {"scale": 2.0}}}'], r"scale=2.0 is invalid: expected a value "
     r"less than or equal to 1"),
    (["params", "--params", '{file:{"network": {"neuron": {"C_m": 1e308}}}}'], r"C_m=1e\+308 is invalid: "
     r"expected a value less than or equal to 100000"),
    (["params", "--params", '{file:{"lognormal_weights": "yes"}}'], r"lognormal_weights='yes' is invalid: "
     r"expected a valid boolean"),
    (["params", "--params", '{file:{"theory": {"n_draws": 1000000000}}}'], r"n_draws=1000000000 is invalid: "
     r"expected a value less than or equal to 1000"),
    (["plan", "--t-sim", "inf"], r"t_sim=inf is invalid: expected a finite number"),
    (["plan", "--t-sim", "1e300"], r"t_sim=1e\+300 is invalid: expected a value less than or equal to 1000000000"),
    (["plan", "--t-sim", "100.05"], r"t_sim=100.05 is invalid: expected a multiple of dt=0.1 ms"),
    (["plan", "--t-sim", "-1"], r"t_sim=-1.0 is invalid: expected a value greater than 0"),
    (["plan", "--threads", "0"], r"threads=0 is invalid: expected a value greater than or equal to 1"),
    (["plan", "--threads", "5000"], r"threads=5000 is invalid: expected a value less than or equal to 1024"),
    (["plan", "--seed", "0"], r"seed=0 is invalid: expected a value greater than or equal to 1"),
    (["plan", "--areas", "V1,XX"], r"areas_simulated='XX' is invalid: expected area names among the 32 areas"),
    (["plan", "--areas", "V1,V1"], r"areas_simulated=\('V1', 'V1'\) is invalid: expected each area at most once"),
    (["plan", "--replace", "zero"], r"replace_non_simulated_areas='zero' is invalid: expected a value "
     r"'hom_poisson_stat', 'het_poisson_stat' or 'het_current_nonstat'"),
    (["plan", "--segment", "0.05"], r"segment=0.05 is invalid: expected a multiple of dt=0.1 ms"),
    (["plan", "--segment", "inf"], r"segment=inf is invalid: expected a finite number"),
    (["run", "--seed", "0"], r"seed=0 is invalid: expected a value greater than or equal to 1"),
    (["run", "--engine", "neuron"], r"engine='neuron' is invalid: expected a value 'nest' or 'brian2'"),
]


def _flat_output(result) -> str:
    """CLI output with the rich error box and line wrapping removed."""
    return re.sub(r"[│╭╮╰╯─\s]+", " ", result.output)


@pytest.mark.parametrize("args, pattern", CLI, ids=[" ".join(a) for a, _ in CLI])
def test_cli(args, pattern, tmp_path):
    args = list(args)
    for i, a in enumerate(args):
        if a.startswith("{file:"):
            path = tmp_path / "params.json"
            path.write_text(a[len("{file:"):-1])
            args[i] = str(path)
    result = CliRunner().invoke(app, args, env={"COLUMNS": "200"})
    assert result.exit_code != 0, result.output
    assert re.search(pattern, _flat_output(result)), result.output
    assert "Traceback" not in result.output


# --- sweep specs ------------------------------------------------------------------------

SWEEP = [
    (dict(parameters={}), r"^parameters=\{\} is invalid: expected a non-empty dict \{parameter: \[values\]\}"),
    (dict(parameters=5), r"^parameters=5 is invalid: expected a non-empty dict"),
    (dict(parameters={"chi": []}), r"^parameters.chi=\[\] is invalid: expected at least one value"),
    (dict(parameters={"chi": [1.0, 1.0]}), r"^parameters.chi=\[1.0, 1.0\] is invalid: expected distinct values"),
    (dict(parameters={"chii": [1.0]}), r"chii' is invalid: expected a known parameter name or dotted path "
     r"\(did you mean chi"),
    (dict(parameters={"network.connection.chii": [1.0]}), r"network.connection.chii' is invalid: expected a "
     r"known parameter; 'network.connection' has"),
    (dict(parameters={"chi": [1.0]}, run="nope"), r"^run='nope' is invalid: expected one or more of"),
    (dict(parameters={"chi": [1.0]}, mode="x"), r"^mode='x' is invalid: expected a value 'grid' or 'zip'"),
    (dict(parameters={"chi": [1.0]}, nme="x"), r"^nme='x' is invalid: expected no such parameter"),
    (dict(parameters={"chi": [1.0]}, theory_options=5), r"^theory_options=5 is invalid: expected a valid "
     r"dictionary"),
    (dict(parameters={"chi": [1.0]}, base={"overrides": {"x": {1, 2}}}), r"^base.overrides=\{'x': \{1, 2\}\} is "
     r"invalid: expected JSON-serialisable values"),
]


@pytest.mark.parametrize("spec, pattern", SWEEP, ids=[str(i) for i in range(len(SWEEP))])
def test_sweep_specs(spec, pattern):
    with pytest.raises(ParameterError) as info:
        SweepSpec.from_dict(spec)
    message = str(info.value)
    assert re.search(pattern, message), message
    assert "parameters.parameters" not in message


def test_sweep_point_values_are_checked_by_params():
    spec = SweepSpec.from_dict(dict(parameters={"chi": [1.0]}))
    with pytest.raises(ParameterError, match=r"network.connection.chi=0.5 is invalid: expected a value "
                                             r"greater than or equal to 1"):
        spec.base.params({"chi": 0.5})
    with pytest.raises(ParameterError, match=r"network.connection.chi=inf is invalid: expected a finite number"):
        spec.base.params({"network.connection.chi": INF})


def test_count():
    """Issue: at least 100 bad inputs across Params, files, CLI options and sweep specs."""
    total = len(PARAMS) + 2 + len(FILES) + len(CLI) + len(SWEEP) + 2
    assert total >= 100
    print(f"{total} bad inputs: {len(PARAMS) + 2} Params, {len(FILES)} files, {len(CLI)} CLI, "
          f"{len(SWEEP) + 2} sweep")
