"""Typed, validated parameters of the multi-area model: one concept (the parameter
model, its rules and the helpers that read, merge and name parameter sets), long
because every field carries its units and allowed range.

Three sections, each a frozen pydantic model:

* ``network``   -- everything that determines the structure (docs/structure.md),
* ``simulation`` -- how the spiking network is run (docs/simulation.md),
* ``theory``    -- the mean-field integration (docs/theory.md).

Every parameter, its units and its allowed range: docs/parameters.md.

``Params()`` holds upstream's defaults at the pinned commit (chi = 1.9,
chi_I = 2, full scale); ``Params.tutorial()`` the configuration of the
EBRAINS tutorial notebook (docs/parameters.md, "Presets").  Updates take partial,
nested dicts or flat shorthand keyword arguments and are validated as a whole::

    p = Params.tutorial(chi=1.9, t_sim=500.0)
    p = p.update({"network": {"connection": {"g": -12.0}}})
    p.label()          # content hash, equal on every machine

Every invalid value raises :class:`mam_xr.errors.ParameterError` with a
message ``name=value is invalid: expected ...``.  The public helpers
(:func:`preset`, :func:`expand_shorthand`, :func:`shorthand_index`,
:func:`parameter_path`, :func:`deep_merge`, :func:`format_validation_error`,
:func:`read_json_file`) serve the command line and the sweeps.
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

#: Modes that replace the input from non-simulated areas (docs/simulation.md).
REPLACEMENT_MODES = ("hom_poisson_stat", "het_poisson_stat", "het_current_nonstat")

#: Mean of the two literature values of synapses per neuron (Cragg 1967: 5600;
#: O'Kusky & Colonnier 1982: 2300), upstream's default ``av_indegree_V1``.
AV_INDEGREE_V1 = (5600.0 + 2300.0) / 2.0


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True,
                              validate_default=True)


def _number(default, description: str, **bounds):
    """A float field: a real number (no bool, no string), finite, within ``bounds``."""
    return Field(default, strict=True, allow_inf_nan=False, description=description, **bounds)


def _integer(default, description: str, **bounds):
    """An int field: an integer (no bool, float or string), within ``bounds``."""
    return Field(default, strict=True, description=description, **bounds)


def _flag(default, description: str):
    """A bool field: ``True`` or ``False`` only (no 1, "yes", "true")."""
    return Field(default, strict=True, description=description)


#: Neurons per mm² of the sparsest population (VIP 6I) at full scale: a network of
#: ``surface`` mm² keeps one neuron in every population only if
#: N_scaling * surface * MIN_NEURONS_PER_MM2 >= 1 (checked against the data by the tests).
MIN_NEURONS_PER_MM2 = 1610.6078639687048

#: Surface of the largest area (V1, mm²): the upper bound of the modelled surface per area.
MAX_SURFACE_MM2 = 1484.629

#: NEST's time grid: the resolution is a multiple of one tic (ms) at NEST's default
#: 1000 tics per ms; both engines use the same grid.
TIC_MS = 0.001

#: Longest simulated time (ms), about 11.6 days of model time.
MAX_T_SIM_MS = 1e9

#: Most integration steps (theory.T / theory.dt) of one mean-field integration.
MAX_THEORY_STEPS = 10_000_000


def _multiple(name: str, value: float, step: float, step_name: str) -> str | None:
    """Message if ``value`` is not a whole multiple of ``step`` (relative tolerance 1e-9)."""
    n = value / step
    if abs(n - round(n)) > 1e-9 * max(1.0, n):
        return invalid(name, value, f"a multiple of {step_name}={step} ms")
    return None


class NeuronParams(_Section):
    """Single-neuron parameters of ``iaf_psc_exp`` (docs/parameters.md)."""

    C_m: float = _number(250.0, "membrane capacitance (pF), in (0, 1e5]", gt=0, le=1e5)
    tau_m: float = _number(10.0, f"membrane time constant (ms), in [{TIC_MS}, 1e4]",
                           ge=TIC_MS, le=1e4)
    tau_syn_ex: float = _number(0.5, f"excitatory synaptic time constant (ms), in [{TIC_MS}, 1e3]",
                                ge=TIC_MS, le=1e3)
    tau_syn_in: float = _number(0.5, f"inhibitory synaptic time constant (ms), in [{TIC_MS}, 1e3]",
                                ge=TIC_MS, le=1e3)
    E_L: float = _number(-65.0, "resting potential (mV), in [-1000, 1000]", ge=-1e3, le=1e3)
    V_th: float = _number(-50.0, "spike threshold (mV), in [-1000, 1000]", ge=-1e3, le=1e3)
    V_reset: float = _number(-65.0, "reset potential (mV), in [-1000, 1000]", ge=-1e3, le=1e3)
    t_ref: float = _number(2.0, "absolute refractory period (ms), in [0, 1e3]", ge=0, le=1e3)
    V0_mean: float = _number(-150.0, "mean of the initial membrane potential (mV), "
                                     "in [-1000, 1000]", ge=-1e3, le=1e3)
    V0_sd: float = _number(50.0, "SD of the initial membrane potential (mV), in [0, 1000]",
                           ge=0, le=1e3)

    @model_validator(mode="after")
    def _threshold_above_reset(self):
        if self.V_th <= self.V_reset:
            raise ValueError(invalid("V_th", self.V_th, f"a threshold above V_reset={self.V_reset} mV"))
        for name in ("tau_syn_ex", "tau_syn_in"):
            tau = getattr(self, name)
            if abs(tau - self.tau_m) <= 1e-6 * self.tau_m:
                raise ValueError(invalid(name, tau, f"a value different from tau_m={self.tau_m} ms "
                                                    "(the PSP-to-PSC conversion is singular there)"))
        return self


class ConnectionParams(_Section):
    """Connectivity and weights (docs/structure.md)."""

    K_stable: Optional[Literal["K_prime_original"]] = Field(
        "K_prime_original",
        description="stabilised internal indegrees: 'K_prime_original' (Schuecker et al. 2017, "
                    "the pinned K_prime_original.npy) or None for the data-derived indegrees")
    av_indegree_V1: float = _number(AV_INDEGREE_V1, "average total indegree in V1 (synapses per "
                                                    "neuron), in (0, 1e6]", gt=0, le=1e6)
    g: float = _number(-11.0, "relative inhibitory weight (w_I = g w_E), in [-1000, -1]",
                       ge=-1e3, le=-1.0)
    PSP_e: float = _number(0.15, "excitatory PSP amplitude (mV), in (0, 100]", gt=0, le=100)
    PSP_e_23_4: float = _number(0.3, "PSP amplitude of 23E <- 4E (mV), in (0, 100]", gt=0, le=100)
    PSP_ext: float = _number(0.15, "PSP amplitude of the external input (mV), in (0, 100]",
                             gt=0, le=100)
    PSC_rel_sd_normal: float = _number(0.1, "relative SD of normal weights, in [0, 100]",
                                       ge=0, le=100)
    PSC_rel_sd_lognormal: float = _number(3.0, "relative SD of 'lognormal' weights, in [0, 100]",
                                          ge=0, le=100)
    lognormal_weights: bool = _flag(False, "use the lognormal relative SD")
    lognormal_EE_only: bool = _flag(False, "lognormal SD only for E->E")
    chi: float = Field(1.9, strict=True, allow_inf_nan=False, ge=1.0, le=100.0,
                       validation_alias=AliasChoices("chi", "cc_weights_factor"),
                       description="cortico-cortical weight factor chi (cc_weights_factor), "
                                   "in [1, 100]; 1.0 = ground state, 1.9 = metastable state")
    chi_I: float = Field(2.0, strict=True, allow_inf_nan=False, ge=1.0, le=100.0,
                         validation_alias=AliasChoices("chi_I", "cc_weights_I_factor"),
                         description="extra factor of CC weights onto inhibitory targets "
                                     "(cc_weights_I_factor), in [1, 100]")
    fac_nu_ext_5E: float = _number(1.125, "factor on K_ext of 5E populations, in (0, 100]",
                                   gt=0, le=100)
    fac_nu_ext_6E: float = _number(1.41666667, "factor on K_ext of 6E populations, in (0, 100]",
                                   gt=0, le=100)
    fac_nu_ext_TH: float = _number(1.2, "factor on K_ext of TH 23E and 5E, in (0, 100]",
                                   gt=0, le=100)


class DelayParams(_Section):
    """Transmission delays (docs/structure.md)."""

    delay_e: float = _number(1.5, "mean local delay of excitatory sources (ms), in (0, 1000]",
                             gt=0, le=1e3)
    delay_i: float = _number(0.75, "mean local delay of inhibitory sources (ms), in (0, 1000]",
                             gt=0, le=1e3)
    delay_rel: float = _number(0.5, "delay SD relative to its mean, in [0, 100]", ge=0, le=100)
    interarea_speed: float = _number(3.5, "conduction speed between areas (mm/ms), in (0, 1e6]",
                                     gt=0, le=1e6)


class InputParams(_Section):
    """External drive (docs/parameters.md)."""

    rate_ext: float = _number(10.0, "rate of each external Poisson source (spikes/s), "
                                    "in [0, 1e4]", ge=0, le=1e4)
    poisson_input: Literal[True] = Field(
        True, description="external input as Poisson spikes (upstream's DC alternative is broken "
                          "and not offered)")


def _scale_field(name: str, alias: str, what: str):
    return Field(None, strict=True, allow_inf_nan=False, gt=0, le=1.0,
                 validation_alias=AliasChoices(name, alias),
                 description=f"down-scaling of {what} ({alias}), in (0, 1]; None = scale")


class NetworkParams(_Section):
    """Everything that determines the structure of the network.

    ``scale`` scales neuron numbers and indegrees alike; ``neuron_scaling``
    (``N_scaling``) and ``indegree_scaling`` (``K_scaling``) override one of
    them.  The effective factors are the properties :attr:`N_scaling` and
    :attr:`K_scaling`.  Stored canonically: a factor equal to ``scale`` is
    kept as None, and when both are given ``scale`` holds N_scaling.
    """

    scale: float = _number(1.0, "down-scaling of neuron numbers and indegrees "
                                "(N_scaling and K_scaling unless given), in (0, 1]", gt=0, le=1.0)
    neuron_scaling: Optional[float] = _scale_field("neuron_scaling", "N_scaling", "neuron numbers")
    indegree_scaling: Optional[float] = _scale_field("indegree_scaling", "K_scaling", "indegrees")
    surface: float = _number(1.0, f"modelled surface per area (mm²), in (0, {MAX_SURFACE_MM2}] "
                                  "(the largest area, V1)", gt=0, le=MAX_SURFACE_MM2)
    fullscale_rates: Optional[str] = Field(
        None, strict=True,
        description="population rates (spikes/s) used to compensate down-scaling: "
                    "'upstream' (the pinned tests/fullscale_rates.json), 'theory' (the full-scale "
                    "mean-field fixed point of the same parameters, reached from zero rates), the "
                    "path of a rates JSON file, of a run store (its simulated population rates) or "
                    "of an atlas store (the rates on one branch at this chi), or None (allowed only "
                    "at full scale)")
    fullscale_rates_branch: Optional[int] = Field(
        None, strict=True, ge=0,
        description="branch of the atlas store given as fullscale_rates, >= 0; None = the branch "
                    "that the mean-field integration from zero rates reaches (only with an atlas)")
    neuron: NeuronParams = NeuronParams()
    connection: ConnectionParams = ConnectionParams()
    delay: DelayParams = DelayParams()
    input: InputParams = InputParams()

    @property
    def N_scaling(self) -> float:
        """Effective down-scaling of neuron numbers (upstream's ``N_scaling``)."""
        return self.scale if self.neuron_scaling is None else self.neuron_scaling

    @property
    def K_scaling(self) -> float:
        """Effective down-scaling of indegrees (upstream's ``K_scaling``)."""
        return self.scale if self.indegree_scaling is None else self.indegree_scaling

    @model_validator(mode="before")
    @classmethod
    def _canonical_scaling(cls, data):
        if not isinstance(data, dict):
            return data
        data = dict(data)
        keys = {"neuron_scaling": ("neuron_scaling", "N_scaling"),
                "indegree_scaling": ("indegree_scaling", "K_scaling")}
        for name, names in keys.items():
            given = [n for n in names if n in data]
            if len(given) > 1:
                raise ValueError(invalid(given[1], data[given[1]], f"one of {' or '.join(names)}, "
                                                                   "not both"))
            if given:
                data[name] = data.pop(given[0])
        return data

    @model_validator(mode="after")
    def _rates_for_downscaling(self):
        eta, kappa = self.N_scaling, self.K_scaling
        if (eta != 1.0 or kappa != 1.0) and self.fullscale_rates is None:
            raise ValueError(invalid(
                "fullscale_rates", None,
                f"'upstream' or the path of a rates JSON when N_scaling={eta}, K_scaling={kappa} "
                "(down-scaling compensates the lost input with a DC drive computed from them)"))
        if self.fullscale_rates_branch is not None and self.fullscale_rates in (None, "upstream", "theory"):
            raise ValueError(invalid(
                "fullscale_rates_branch", self.fullscale_rates_branch,
                f"None unless fullscale_rates is an atlas store (it is {self.fullscale_rates!r})"))
        if eta * self.surface * MIN_NEURONS_PER_MM2 < 1.0:
            name = "scale" if self.neuron_scaling is None else "neuron_scaling"
            least = 1.0 / (self.surface * MIN_NEURONS_PER_MM2)
            raise ValueError(invalid(
                name, eta, f"at least {least:.4g} with surface={self.surface} mm² (every population "
                "keeps one neuron; the sparsest, VIP 6I, has "
                f"{MIN_NEURONS_PER_MM2:.1f} neurons per mm² at full scale)"))
        # Canonical form (one JSON and label per network): both given -> scale holds
        # N_scaling; a factor equal to scale -> None.
        if self.neuron_scaling is not None and self.indegree_scaling is not None:
            object.__setattr__(self, "scale", self.neuron_scaling)
        for name in ("neuron_scaling", "indegree_scaling"):
            if getattr(self, name) == self.scale:
                object.__setattr__(self, name, None)
        return self


class SimulationParams(_Section):
    """How the spiking network is simulated (docs/simulation.md)."""

    t_sim: float = _number(2000.0, f"simulated time (ms), in (0, {MAX_T_SIM_MS:g}], a multiple of dt",
                           gt=0, le=MAX_T_SIM_MS)
    dt: float = _number(0.1, f"simulation resolution (ms), in [{TIC_MS}, 1], a multiple of "
                             f"{TIC_MS} ms (NEST's tic)", ge=TIC_MS, le=1.0)
    threads: int = _integer(1, "threads per process, in [1, 1024]", ge=1, le=1024)
    seed: int = _integer(1, "master seed of the random streams, in [1, 2**31)", ge=1, lt=2**31)
    areas_simulated: tuple[str, ...] = Field(AREAS, description="areas instantiated in the simulator")
    replace_non_simulated_areas: Optional[Literal[REPLACEMENT_MODES]] = Field(
        None, description="how the input from non-simulated areas is replaced")
    replace_cc_input_source: Optional[str] = Field(
        None, strict=True,
        description="rates of the replaced areas: JSON {area: {pop: rate}} or a mam_xr run "
                    "store; None = the pinned tests/fullscale_rates.json")
    segment: float = _number(100.0, "simulated time between two spike writes to the store (ms), "
                                    f"in [dt, {MAX_T_SIM_MS:g}], a multiple of dt",
                             gt=0, le=MAX_T_SIM_MS)
    engine: Literal["nest", "brian2"] = Field("nest", description="simulator")
    initial_state: Optional[str] = Field(
        None, strict=True,
        description="start near a rate state: initial potentials drawn per population from the "
                    "stationary membrane distribution at these rates (docs/simulation.md, 'Initial "
                    "state'): 'fullscale' (the full-scale rates the DC drive compensates), the path "
                    "of a rates JSON file or of a run store; None = V0 ~ N(V0_mean, V0_sd)")
    record_vm: Literal[False] = Field(False, description="membrane potentials are not recorded")

    @field_validator("areas_simulated", mode="before")
    @classmethod
    def _known_areas(cls, value):
        if isinstance(value, str):
            value = (value,)
        if not isinstance(value, (list, tuple)):
            raise ValueError(invalid("areas_simulated", value,
                                     "a list of area names among the 32 areas"))
        value = tuple(value)
        unknown = [a for a in value if not (isinstance(a, str) and a in AREAS)]
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
        message = (_multiple("dt", self.dt, TIC_MS, "NEST's tic")
                   or _multiple("t_sim", self.t_sim, self.dt, "dt")
                   or _multiple("segment", self.segment, self.dt, "dt"))
        if message:
            raise ValueError(message)
        if self.segment < self.dt:
            raise ValueError(invalid("segment", self.segment, f"at least dt={self.dt} ms"))
        return self


class TheoryParams(_Section):
    """Mean-field integration (docs/theory.md)."""

    dt: float = _number(0.1, "integration step (ms; in units of tau = 1 ms), in (0, 1]", gt=0, le=1.0)
    T: float = _number(50.0, "integration time (ms), in (0, 1e5]", gt=0, le=1e5)
    initial_rates: Literal["zero", "random"] = Field(
        "zero", description="initial condition: zero, or uniform random in [0, rate_max]")
    n_draws: int = _integer(1, "number of random initial conditions, in [1, 1000]", ge=1, le=1000)
    rate_max: float = _number(1000.0, "maximum random initial rate (spikes/s), in (0, 1e5]",
                              gt=0, le=1e5)
    seed: int = _integer(123, "seed of the random initial rates (upstream: 123), in [0, 2**32)",
                         ge=0, lt=2**32)

    @model_validator(mode="after")
    def _bounded_steps(self):
        if self.T / self.dt > MAX_THEORY_STEPS:
            raise ValueError(invalid("T", self.T, f"at most {MAX_THEORY_STEPS:g} steps of "
                                                  f"dt={self.dt} ms (T <= {MAX_THEORY_STEPS * self.dt:g} ms)"))
        return self


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
        """The EBRAINS tutorial configuration (docs/parameters.md, "Presets"), updated.

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
        net = user.get("network")
        conn = net.get("connection") if isinstance(net, dict) else None
        if isinstance(conn, dict):
            chi = conn.get("chi", conn.get("cc_weights_factor"))
            if chi is not None and "chi_I" not in conn and "cc_weights_I_factor" not in conn:
                conn["chi_I"] = 1.0 if chi == 1.0 else 2.0
        return cls.from_dict(deep_merge(base, user))

    def update(self, values: dict | None = None, **shorthand) -> "Params":
        """A new validated Params with ``values`` (nested) and shorthand keys applied.

        Setting ``scale`` sets N_scaling and K_scaling both, unless the same
        update gives ``N_scaling`` or ``K_scaling`` too.
        """
        user = deep_merge(expand_shorthand(values or {}), expand_shorthand(shorthand))
        current = self.model_dump()
        net = user.get("network")
        if isinstance(net, dict) and "scale" in net:
            for name, alias in (("neuron_scaling", "N_scaling"), ("indegree_scaling", "K_scaling")):
                if name not in net and alias not in net:
                    current["network"][name] = None
        return _validate(type(self), deep_merge(current, user))

    @classmethod
    def _defaults_dict(cls) -> dict:
        return cls().model_dump()

    # --- identity -------------------------------------------------------------
    def to_json(self) -> str:
        """Canonical JSON: sorted keys, no whitespace, floats as repr.

        ``neuron_scaling`` and ``indegree_scaling`` (they follow ``scale``) and
        ``fullscale_rates_branch`` are left out when None, so that parameter
        sets without them keep their JSON and labels.
        """
        return json.dumps(self._json_dict(), sort_keys=True, separators=(",", ":"))

    def _json_dict(self) -> dict:
        out = self.model_dump(mode="json")
        _drop_unset_scaling(out["network"])
        if out["simulation"].get("initial_state") is None:   # labels of runs without it unchanged
            out["simulation"].pop("initial_state", None)
        return out

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
        """Validated Params from a JSON file of (partial, nested or shorthand) parameters.

        Errors name the file: a syntax error by line and column, a bad value
        by its parameter.
        """
        values = read_json_file(path, "params")
        if not isinstance(values, dict):
            raise ParameterError(invalid("params", str(path), "a JSON object of parameters "
                                                              f"(the file holds a {type(values).__name__})"))
        try:
            return cls.from_dict(values)
        except ParameterError as exc:
            raise ParameterError(f"{exc} (in the parameters file {path})") from None

    def network_label(self) -> str:
        """Hash of the network parameters and the data hashes: names a structure."""
        return _hash({"network": self._json_dict()["network"], "data": _data_hashes()})

    def label(self) -> str:
        """Hash of all parameters and the data hashes: names a run.

        Independent of paths, machines and processes; 32 hex digits.
        """
        return _hash({"params": json.loads(self.to_json()), "data": _data_hashes()})


# --- helpers -----------------------------------------------------------------

def _drop_unset_scaling(network: dict) -> dict:
    for name in ("neuron_scaling", "indegree_scaling", "fullscale_rates_branch"):
        if network.get(name) is None:
            network.pop(name, None)
    return network


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
    raise :class:`ParameterError` with close matches.  A dotted path naming a
    section (``network.connection``) is accepted only with ``sections=True``.
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
        about = _description(exc.title, err["loc"])
        about = f" ({about})" if about else ""
        lines.append(f"{loc}={_show(err['input'])} is invalid: expected {msg[0].lower() + msg[1:]}{about}")
    return "; ".join(lines)


def _show(value) -> str:
    return repr(value)


def _description(title: str, loc) -> str | None:
    """The description (units, allowed range) of the field at ``loc`` of a parameter model."""
    models = {"Params": Params, **{m.__name__: m for m in (*_SECTIONS.values(), NeuronParams,
                                                           ConnectionParams, DelayParams, InputParams)}}
    model: Any = models.get(title)
    info = None
    for part in loc:
        if not _is_section(model) or part not in model.model_fields:
            return None
        info = model.model_fields[part]
        model = info.annotation
    return None if info is None or _is_section(model) else info.description


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
