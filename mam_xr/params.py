"""Typed, validated parameters of the multi-area model.

Three sections, each a frozen pydantic model:

* ``network``   -- everything that determines the structure (spec/construction.md §14),
* ``simulation`` -- how the spiking network is run (spec/dynamics.md §A, §E.2),
* ``theory``    -- the mean-field integration (spec/dynamics.md §B.4).

``Params()`` holds upstream's defaults at the pinned commit (chi = 1.9,
chi_I = 2, full scale); ``Params.tutorial()`` the configuration of the
EBRAINS tutorial notebook (reference/README.md §1.2).  Updates take partial,
nested dicts or flat shorthand keyword arguments and are validated as a whole::

    p = Params.tutorial(chi=1.9, t_sim=500.0)
    p = p.update({"network": {"connection": {"g": -12.0}}})
    p.label()          # content hash, equal on every machine

Every invalid value raises :class:`mam_xr.errors.ParameterError` with a
message ``name=value is invalid: expected ...``.
"""

from __future__ import annotations

import difflib
import hashlib
import json
from pathlib import Path
from typing import Any, Literal, Optional

from pydantic import (AliasChoices, BaseModel, ConfigDict, Field, ValidationError,
                      field_validator, model_validator)

from .errors import ParameterError, invalid
from .flat import AREAS

#: Modes that replace the input from non-simulated areas (spec/dynamics.md §A.11).
REPLACEMENT_MODES = ("hom_poisson_stat", "het_poisson_stat", "het_current_nonstat")

#: Mean of the two literature values of synapses per neuron (Cragg 1967: 5600;
#: O'Kusky & Colonnier 1982: 2300), upstream's default ``av_indegree_V1``.
AV_INDEGREE_V1 = (5600.0 + 2300.0) / 2.0


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True,
                              validate_default=True)


class NeuronParams(_Section):
    """Single-neuron parameters of ``iaf_psc_exp`` (spec/dynamics.md §A.5)."""

    C_m: float = Field(250.0, gt=0, description="membrane capacitance (pF)")
    tau_m: float = Field(10.0, gt=0, description="membrane time constant (ms)")
    tau_syn_ex: float = Field(0.5, gt=0, description="excitatory synaptic time constant (ms)")
    tau_syn_in: float = Field(0.5, gt=0, description="inhibitory synaptic time constant (ms)")
    E_L: float = Field(-65.0, description="resting potential (mV)")
    V_th: float = Field(-50.0, description="spike threshold (mV)")
    V_reset: float = Field(-65.0, description="reset potential (mV)")
    t_ref: float = Field(2.0, ge=0, description="absolute refractory period (ms)")
    V0_mean: float = Field(-150.0, description="mean of the initial membrane potential (mV)")
    V0_sd: float = Field(50.0, ge=0, description="SD of the initial membrane potential (mV)")

    @model_validator(mode="after")
    def _threshold_above_reset(self):
        if self.V_th <= self.V_reset:
            raise ValueError(invalid("V_th", self.V_th, f"a threshold above V_reset={self.V_reset} mV"))
        return self


class ConnectionParams(_Section):
    """Connectivity and weights (spec/construction.md §4.5, §5, §14)."""

    K_stable: Optional[Literal["K_prime_original"]] = Field(
        "K_prime_original",
        description="stabilised internal indegrees: 'K_prime_original' (Schuecker et al. 2017, "
                    "the pinned K_prime_original.npy) or None for the data-derived indegrees")
    av_indegree_V1: float = Field(AV_INDEGREE_V1, gt=0,
                                  description="average total indegree in V1 (synapses per neuron)")
    g: float = Field(-11.0, le=-1.0, description="relative inhibitory weight (w_I = g w_E)")
    PSP_e: float = Field(0.15, gt=0, description="excitatory PSP amplitude (mV)")
    PSP_e_23_4: float = Field(0.3, gt=0, description="PSP amplitude of 23E <- 4E (mV)")
    PSP_ext: float = Field(0.15, gt=0, description="PSP amplitude of the external input (mV)")
    PSC_rel_sd_normal: float = Field(0.1, ge=0, description="relative SD of normal weights")
    PSC_rel_sd_lognormal: float = Field(3.0, ge=0, description="relative SD of 'lognormal' weights")
    lognormal_weights: bool = Field(False, description="use the lognormal relative SD")
    lognormal_EE_only: bool = Field(False, description="lognormal SD only for E->E")
    chi: float = Field(1.9, ge=1.0, validation_alias=AliasChoices("chi", "cc_weights_factor"),
                       description="cortico-cortical weight factor chi (cc_weights_factor); "
                                   "1.0 = ground state, 1.9 = metastable state")
    chi_I: float = Field(2.0, ge=1.0, validation_alias=AliasChoices("chi_I", "cc_weights_I_factor"),
                         description="extra factor of CC weights onto inhibitory targets "
                                     "(cc_weights_I_factor)")
    fac_nu_ext_5E: float = Field(1.125, gt=0, description="factor on K_ext of 5E populations")
    fac_nu_ext_6E: float = Field(1.41666667, gt=0, description="factor on K_ext of 6E populations")
    fac_nu_ext_TH: float = Field(1.2, gt=0, description="factor on K_ext of TH 23E and 5E")


class DelayParams(_Section):
    """Transmission delays (spec/construction.md §6)."""

    delay_e: float = Field(1.5, gt=0, description="mean local delay of excitatory sources (ms)")
    delay_i: float = Field(0.75, gt=0, description="mean local delay of inhibitory sources (ms)")
    delay_rel: float = Field(0.5, ge=0, description="delay SD relative to its mean")
    interarea_speed: float = Field(3.5, gt=0, description="conduction speed between areas (mm/ms)")


class InputParams(_Section):
    """External drive (spec/dynamics.md §A.8)."""

    rate_ext: float = Field(10.0, ge=0, description="rate of each external Poisson source (spikes/s)")
    poisson_input: Literal[True] = Field(
        True, description="external input as Poisson spikes (upstream's DC alternative is broken "
                          "and not offered)")


class NetworkParams(_Section):
    """Everything that determines the structure of the network."""

    scale: float = Field(1.0, gt=0, le=1.0,
                         description="down-scaling of neuron and indegree numbers "
                                     "(N_scaling = K_scaling), in (0, 1]")
    surface: float = Field(1.0, gt=0, description="modelled surface per area (mm^2)")
    fullscale_rates: Optional[str] = Field(
        None, description="population rates (spikes/s) used to compensate down-scaling: "
                          "'upstream' (the pinned tests/fullscale_rates.json), a JSON path, or None "
                          "(allowed only at full scale)")
    neuron: NeuronParams = NeuronParams()
    connection: ConnectionParams = ConnectionParams()
    delay: DelayParams = DelayParams()
    input: InputParams = InputParams()

    @model_validator(mode="after")
    def _rates_for_downscaling(self):
        if self.scale != 1.0 and self.fullscale_rates is None:
            raise ValueError(invalid(
                "fullscale_rates", None,
                f"'upstream' or the path of a rates JSON when scale={self.scale} != 1 "
                "(down-scaling compensates the lost input with a DC drive computed from them)"))
        return self


class SimulationParams(_Section):
    """How the spiking network is simulated (spec/dynamics.md §A, §E)."""

    t_sim: float = Field(2000.0, gt=0, description="simulated time (ms)")
    dt: float = Field(0.1, gt=0, le=1.0, description="simulation resolution (ms)")
    threads: int = Field(1, ge=1, le=1024, description="threads per process")
    seed: int = Field(1, ge=1, lt=2**31, description="master seed of the random streams")
    areas_simulated: tuple[str, ...] = Field(AREAS, description="areas instantiated in the simulator")
    replace_non_simulated_areas: Optional[Literal[REPLACEMENT_MODES]] = Field(
        None, description="how the input from non-simulated areas is replaced")
    replace_cc_input_source: Optional[str] = Field(
        None, description="rates of the replaced areas: JSON {area: {pop: rate}} or a mam_xr run "
                          "store; None = the pinned tests/fullscale_rates.json")
    segment: float = Field(100.0, gt=0,
                           description="simulated time between two spike writes to the store (ms)")
    engine: Literal["nest", "brian2"] = Field("nest", description="simulator")
    record_vm: Literal[False] = Field(False, description="membrane potentials are not recorded")

    @field_validator("areas_simulated", mode="before")
    @classmethod
    def _known_areas(cls, value):
        if isinstance(value, str):
            value = (value,)
        value = tuple(value)
        unknown = [a for a in value if a not in AREAS]
        if unknown:
            raise ValueError(invalid("areas_simulated", unknown[0] if len(unknown) == 1 else unknown,
                                     f"area names among the 32 areas {', '.join(AREAS)}"))
        if not value:
            raise ValueError(invalid("areas_simulated", value, "at least one area"))
        if len(set(value)) != len(value):
            raise ValueError(invalid("areas_simulated", value, "each area at most once"))
        # Keep the model order: results do not depend on how the user listed them.
        return tuple(a for a in AREAS if a in value)

    @model_validator(mode="after")
    def _replacement_for_subsets(self):
        if len(self.areas_simulated) < len(AREAS) and self.replace_non_simulated_areas is None:
            raise ValueError(invalid(
                "replace_non_simulated_areas", None,
                f"one of {', '.join(REPLACEMENT_MODES)} when only {len(self.areas_simulated)} of "
                "the 32 areas are simulated"))
        steps = self.t_sim / self.dt
        if abs(steps - round(steps)) > 1e-9 * max(1.0, steps):
            raise ValueError(invalid("t_sim", self.t_sim, f"a multiple of dt={self.dt} ms"))
        return self


class TheoryParams(_Section):
    """Mean-field integration (spec/dynamics.md §B.4)."""

    dt: float = Field(0.1, gt=0, description="integration step (ms; in units of tau = 1 ms)")
    T: float = Field(50.0, gt=0, description="integration time (ms)")
    initial_rates: Literal["zero", "random"] = Field(
        "zero", description="initial condition: zero, or uniform random in [0, rate_max]")
    n_draws: int = Field(1, ge=1, description="number of random initial conditions")
    rate_max: float = Field(1000.0, gt=0, description="maximum random initial rate (spikes/s)")
    seed: int = Field(123, ge=0, description="seed of the random initial rates (upstream: 123)")


_SECTIONS = {"network": NetworkParams, "simulation": SimulationParams, "theory": TheoryParams}


class Params(_Section):
    """All parameters of a mam_xr run.  ``Params()`` = upstream defaults."""

    network: NetworkParams = NetworkParams()
    simulation: SimulationParams = SimulationParams()
    theory: TheoryParams = TheoryParams()

    # --- construction -------------------------------------------------------
    @classmethod
    def from_dict(cls, values: dict | None = None, **shorthand) -> "Params":
        """Validated Params from a (partial, nested) dict and flat shorthand keys."""
        merged = deep_merge(Params._defaults_dict(), expand_shorthand(values or {}))
        merged = deep_merge(merged, expand_shorthand(shorthand))
        return _validate(cls, merged)

    @classmethod
    def tutorial(cls, values: dict | None = None, **shorthand) -> "Params":
        """The EBRAINS tutorial configuration (reference/README.md §1.2), updated.

        scale 0.005, K_stable, g = -11, rate_ext = 10, fac_nu_ext_TH = 1.2,
        fac_nu_ext_5E = 1.125, fac_nu_ext_6E = 1.41666667, av_indegree_V1 = 3950,
        V0 = N(-150, 50) mV, chi = chi_I = 1, all 32 areas with
        ``het_poisson_stat`` replacement, t_sim = 2000 ms, seed 1.  As in the
        notebook, giving ``chi`` without ``chi_I`` sets chi_I = 1 if chi == 1
        else 2.
        """
        base = {
            "network": {"scale": 0.005, "fullscale_rates": "upstream",
                        "connection": {"chi": 1.0, "chi_I": 1.0}},
            "simulation": {"t_sim": 2000.0, "seed": 1,
                           "replace_non_simulated_areas": "het_poisson_stat"},
        }
        user = deep_merge(expand_shorthand(values or {}), expand_shorthand(shorthand))
        conn = user.get("network", {}).get("connection", {})
        chi = conn.get("chi", conn.get("cc_weights_factor"))
        if chi is not None and "chi_I" not in conn and "cc_weights_I_factor" not in conn:
            conn["chi_I"] = 1.0 if chi == 1.0 else 2.0
        return cls.from_dict(deep_merge(base, user))

    def update(self, values: dict | None = None, **shorthand) -> "Params":
        """A new validated Params with ``values`` (nested) and shorthand keys applied."""
        merged = deep_merge(self.model_dump(), expand_shorthand(values or {}))
        merged = deep_merge(merged, expand_shorthand(shorthand))
        return _validate(type(self), merged)

    @classmethod
    def _defaults_dict(cls) -> dict:
        return cls().model_dump()

    # --- identity -------------------------------------------------------------
    def to_json(self) -> str:
        """Canonical JSON: sorted keys, no whitespace, floats as repr."""
        return json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> "Params":
        """Validated Params from JSON text (as written by :meth:`to_json`, or partial)."""
        try:
            values = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ParameterError(invalid("params", _excerpt(text), f"valid JSON; {exc.msg} at line "
                                                                   f"{exc.lineno}, column {exc.colno}")) from None
        return _validate(cls, values)

    @classmethod
    def from_file(cls, path: str | Path) -> "Params":
        """Validated Params from a JSON file of (partial, nested or shorthand) parameters."""
        return cls.from_dict(read_json_file(path, "params"))

    def network_label(self) -> str:
        """Hash of the network parameters and the data hashes: names a structure."""
        return _hash({"network": self.network.model_dump(mode="json"), "data": _data_hashes()})

    def label(self) -> str:
        """Hash of all parameters and the data hashes: names a run.

        Independent of paths, machines and processes; 32 hex digits.
        """
        return _hash({"params": json.loads(self.to_json()), "data": _data_hashes()})


# --- helpers -----------------------------------------------------------------

def _excerpt(text, n: int = 60):
    text = str(text)
    return text if len(text) <= n else text[:n] + "..."


def _data_hashes() -> dict:
    from .data import REGISTRY

    return {name: sha for name, (sha, _) in sorted(REGISTRY.items())}


def _hash(obj) -> str:
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:32]


# --- public helpers: presets, shorthand, dotted paths, merging, messages ------------------

#: Names of the built-in base configurations accepted by :func:`preset`.
PRESETS = ("tutorial", "default")


def preset(name: str = "tutorial", values: dict | None = None, **shorthand) -> "Params":
    """Validated :class:`Params` of a base configuration, updated.

    Parameters
    ----------
    name : str
        ``"tutorial"`` (:meth:`Params.tutorial`), ``"default"`` (upstream's
        defaults, :class:`Params`) or the path of a parameters JSON file.
    values : dict, optional
        Nested, shorthand or dotted-path parameters applied on the preset.
    **shorthand
        Flat parameters (``chi=1.9``); applied after ``values``.
    """
    if name == "tutorial":
        return Params.tutorial(values, **shorthand)
    if name == "default":
        return Params.from_dict(values, **shorthand)
    if not isinstance(name, (str, Path)) or not Path(name).is_file():
        raise ParameterError(invalid("preset", name, f"one of {', '.join(map(repr, PRESETS))} "
                                                     "or the path of a parameters JSON file"))
    return Params.from_file(name).update(values, **shorthand)


def deep_merge(base: dict, update: dict) -> dict:
    """A new dict: ``base`` with ``update`` applied recursively (dicts merge, other values replace)."""
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def _fields(model) -> dict[str, list[str]]:
    """Field name -> accepted names (incl. aliases) of a pydantic model class."""
    out = {}
    for name, info in model.model_fields.items():
        names = [name]
        if isinstance(info.validation_alias, AliasChoices):
            names += [c for c in info.validation_alias.choices
                      if isinstance(c, str) and c not in names]
        out[name] = names
    return out


def _is_section(annotation) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def shorthand_index() -> dict[str, tuple[str, ...]]:
    """Flat key -> nested path of every leaf name (and alias).

    ``dt`` and ``seed`` exist in both ``simulation`` and ``theory``; as
    shorthand they mean the simulation's (use a nested dict or a dotted path
    such as ``theory.seed`` for the theory's).
    """
    index: dict[str, list[tuple[str, ...]]] = {}

    def walk(model, prefix):
        for name, names in _fields(model).items():
            if _is_section(model.model_fields[name].annotation):
                walk(model.model_fields[name].annotation, prefix + (name,))
            else:
                for n in names:
                    index.setdefault(n, []).append(prefix + (name,))

    walk(Params, ())
    return {k: v[0] for k, v in index.items()}


def parameter_path(name: str, *, sections: bool = False) -> tuple[str, ...]:
    """The nested path of a parameter given by shorthand (``chi``) or dotted path.

    ``parameter_path("chi") == ("network", "connection", "chi")``;
    ``parameter_path("theory.seed") == ("theory", "seed")``.  Unknown names
    raise :class:`ParameterError` with close matches.
    """
    if not isinstance(name, str):
        raise ParameterError(invalid("parameter", name, "a parameter name or dotted path (a str)"))
    if "." in name:
        parts = tuple(name.split("."))
        canonical = []
        model: Any = Params
        for i, part in enumerate(parts):
            fields = _fields(model) if _is_section(model) else {}
            field = next((f for f, names in fields.items() if part in names), None)
            if field is None:
                known = ", ".join(sorted(fields)) if fields else "none (not a section)"
                raise ParameterError(invalid("parameter", name, f"a known parameter; "
                                             f"'{'.'.join(parts[:i]) or 'Params'}' has {known}"))
            canonical.append(field)
            model = model.model_fields[field].annotation
        if _is_section(model) and not sections:
            raise ParameterError(invalid("parameter", name, f"a parameter, not the section "
                                         f"'{name}' (it has {', '.join(sorted(model.model_fields))})"))
        return tuple(canonical)
    index = shorthand_index()
    if name not in index:
        close = difflib.get_close_matches(name, sorted(index), n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise ParameterError(invalid("parameter", name, f"a known parameter name or dotted path{hint}"))
    return index[name]


def _nest(path: tuple[str, ...], value) -> dict:
    nested: Any = value
    for part in reversed(path):
        nested = {part: nested}
    return nested


def expand_shorthand(values: dict) -> dict:
    """Nested dict from flat shorthand keys (``chi=1.9``) and dotted paths (``theory.seed``).

    Section keys (``network``, ...) are kept as they are; unknown keys raise
    :class:`ParameterError` with close matches.
    """
    if not isinstance(values, dict):
        raise ParameterError(invalid("params", values, "a dict of parameters (JSON object)"))
    index = shorthand_index()
    out: dict = {}
    for key, value in values.items():
        if key in _SECTIONS:
            out = deep_merge(out, {key: value})
        elif key in index:
            out = deep_merge(out, _nest(index[key], value))
        elif isinstance(key, str) and "." in key:
            out = deep_merge(out, _nest(parameter_path(key, sections=True), value))
        else:
            known = sorted(set(index) | set(_SECTIONS))
            close = difflib.get_close_matches(str(key), known, n=3)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise ParameterError(
                f"{key}={value!r} is invalid: expected a known parameter{hint}; "
                f"sections: {', '.join(_SECTIONS)}")
    return out


def _validate(cls, values):
    if not isinstance(values, dict):
        raise ParameterError(invalid("params", values, "a dict of parameters (JSON object) with "
                                                       f"sections {', '.join(_SECTIONS)}"))
    try:
        return cls.model_validate(values)
    except ValidationError as exc:
        raise ParameterError(format_validation_error(exc)) from None


def format_validation_error(exc: ValidationError, prefix: str = "") -> str:
    """One ``name=value is invalid: expected ...`` line per error of a pydantic ValidationError.

    ``prefix`` (e.g. ``"sweep."``) is put before every parameter path.  A
    message of a custom validator that already names its parameter (or a
    longer dotted path ending in it) is not prefixed a second time.
    """
    lines = []
    for err in exc.errors():
        path = [str(p) for p in err["loc"]]
        loc = prefix + ".".join(path)
        if err["type"] == "extra_forbidden":
            lines.append(f"{loc}={_show(err['input'])} is invalid: expected no such parameter "
                         f"(unknown name '{path[-1]}')")
            continue
        msg = err["msg"]
        if msg.startswith("Value error, "):
            # Our own validators already name the parameter: prefix only the part not in it.
            text = msg[len("Value error, "):]
            for i in range(len(path)):
                head = ".".join(path[i:])
                if text.startswith((head + "=", head + ".")):
                    path = path[:i]
                    break
            lines.append(prefix + ".".join(path + [text]) if path else prefix + text)
            continue
        if msg.startswith("Input should be "):
            rest = msg[len("Input should be "):]
            msg = rest if rest.startswith(("a ", "an ")) else "a value " + rest
        lines.append(f"{loc}={_show(err['input'])} is invalid: expected {msg[0].lower() + msg[1:]}")
    return "; ".join(lines)


def _show(value) -> str:
    return repr(value)


def read_json_file(path: str | Path, what: str = "params") -> Any:
    """The parsed content of a JSON file; a missing or malformed file raises ParameterError.

    The message names ``what`` (the parameter or option the file was given
    for), the file, and the line and column of a syntax error.
    """
    path = Path(path)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ParameterError(invalid(what, str(path), f"a readable JSON file ({exc})")) from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ParameterError(invalid(what, str(path), f"a valid JSON file; {exc.msg} at line "
                                                      f"{exc.lineno}, column {exc.colno}")) from None


# Old private names, kept while other modules move to the public ones.
_deep_merge = deep_merge
_expand = expand_shorthand
_shorthand_index = shorthand_index
_format = format_validation_error


def write_schemas(directory: str | Path) -> list[Path]:
    """Write the JSON schemas of the parameter models into ``directory``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, model in {"params": Params, **_SECTIONS}.items():
        path = directory / f"{name}.schema.json"
        path.write_text(json.dumps(model.model_json_schema(), indent=2, sort_keys=True) + "\n")
        paths.append(path)
    return paths
