"""Parameters: defaults, presets, updates, labels, schemas and every rejection message."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
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


# --- property: every value is either a buildable Params or a named ParameterError -------

import math  # noqa: E402
import warnings  # noqa: E402

from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402

from mam_xr import structure  # noqa: E402
from mam_xr.params import shorthand_index  # noqa: E402

_INDEX = shorthand_index()
#: every leaf once, by a name that reaches it (theory's dt and seed by their dotted path)
_LEAVES = sorted({".".join(path) if path[0] == "theory" else name: path
                  for name, path in _INDEX.items()}.items())
_LEAVES += [("theory.dt", ("theory", "dt")), ("theory.seed", ("theory", "seed"))]

_ANY = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, -1.0, 1.0, 0.5, 1e-9, 1e308, -1e308, math.nan, math.inf, -math.inf,
                     0.001, 0.01, 0.1, 0.3, 2.0, 10.0, 100.0, 1e4]),
    st.integers(min_value=-10, max_value=2**40),
    st.booleans(), st.none(), st.text(max_size=6),
    st.lists(st.sampled_from(list(AREAS) + ["XX", ""]), max_size=4),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)


def _field(path):
    model = Params
    for part in path[:-1]:
        model = model.model_fields[part].annotation
    return model.model_fields[path[-1]]


def _in_range(path):
    """Values the field's own type and bounds allow (cross-field rules may still refuse them)."""
    import typing

    if path[-1] == "areas_simulated":
        return st.lists(st.sampled_from(AREAS), min_size=1, max_size=4, unique=True)
    if path[-1] in ("fullscale_rates", "replace_cc_input_source"):
        return st.sampled_from(["upstream", None, "missing.json"])
    if path == ("simulation", "dt"):
        return st.integers(1, 1000).map(lambda k: k / 1000)
    if path[-1] in ("t_sim", "segment"):
        return st.integers(1, 100_000).map(lambda k: k / 10)
    if path[-1] in ("scale", "neuron_scaling", "indegree_scaling"):
        return st.floats(-7, 0).map(lambda e: 10.0 ** e)
    info = _field(path)
    kind = info.annotation
    if typing.get_origin(kind) is typing.Literal:
        return st.sampled_from(typing.get_args(kind))
    args = [a for a in typing.get_args(kind) if a is not type(None)]
    if args and typing.get_origin(args[0]) is typing.Literal:
        return st.sampled_from(typing.get_args(args[0]) + (None,))
    kind = args[0] if args else kind
    if kind is bool:
        return st.booleans()
    lo, hi = -1e6, 1e6
    for m in info.metadata:
        lo = max(lo, getattr(m, "ge", None) if getattr(m, "ge", None) is not None else
                 (getattr(m, "gt", None) if getattr(m, "gt", None) is not None else lo))
        hi = min(hi, getattr(m, "le", None) if getattr(m, "le", None) is not None else
                 (getattr(m, "lt", None) - 1 if getattr(m, "lt", None) is not None else hi))
    if kind is int:
        return st.integers(int(math.ceil(lo)), int(hi))
    return st.floats(lo, hi, allow_nan=False, allow_infinity=False,
                     exclude_min=any(getattr(m, "gt", None) is not None for m in info.metadata))


@st.composite
def _updates(draw):
    chosen = draw(st.lists(st.sampled_from(_LEAVES), min_size=1, max_size=3, unique_by=lambda x: x[0]))
    return {key: draw(st.one_of(_in_range(path), _in_range(path), _ANY))
            for key, path in chosen}, chosen


def _names(chosen) -> set[str]:
    out = set()
    for key, path in chosen:
        out |= {key, key.split(".")[-1], path[-1], ".".join(path)}
    return out


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_updates())
def test_every_value_builds_or_names_its_parameter(update):
    """Any value for any 1-3 parameters: a Params that ``structure.build`` accepts (every
    population keeps a neuron), or a ParameterError naming one of the parameters given."""
    values, chosen = update
    names = _names(chosen)
    try:
        p = Params.tutorial(values)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)   # large surfaces warn (docs/structure.md)
            ds = structure.build(p)
    except ParameterError as exc:
        message = str(exc)
        assert any(f"{n}=" in message for n in names), (values, message)
        return
    n = ds["neurons"].values
    assert np.all(np.floor(n[~np.isnan(n)]) >= 1), values
