"""The specification of a sweep: what it varies and what it runs per point.

A :class:`SweepSpec` (validated like all parameters) holds the swept
parameters with their values (a grid, or zipped lists), coupled parameters
(e.g. ``chi_I = 1 if chi == 1 else 2``, :class:`Coupling` of :class:`Case`),
the base configuration (:class:`BaseConfig`: a preset plus overrides) and what
to run per point (``theory``, ``simulate``, ``analyse``).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Literal, Union

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ..errors import ParameterError, invalid
from ..params import (PRESETS, deep_merge, expand_shorthand, format_validation_error, parameter_path,
                      preset)

__all__ = ["SWEEP_FORMAT", "STEPS", "Case", "Coupling", "BaseConfig", "SweepSpec", "validate_spec",
           "load_spec", "dim_names", "leaves"]

#: Format tag of a sweep's files (manifest, combined store, batch files).
SWEEP_FORMAT = "mam_xr.sweep/1"
#: What a point can compute, in this order.
STEPS = ("theory", "simulate", "analyse")

Scalar = Union[bool, int, float, str]


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


_OPS = {"eq": lambda a, b: _equal(a, b), "ne": lambda a, b: not _equal(a, b),
        "lt": lambda a, b: a < b, "le": lambda a, b: a < b or _equal(a, b),
        "gt": lambda a, b: a > b, "ge": lambda a, b: a > b or _equal(a, b),
        "in": lambda a, b: any(_equal(a, x) for x in b)}


def _equal(a, b) -> bool:
    # Sweep values are written by hand (1.0 vs 1): compare numbers numerically.
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) \
            and not isinstance(a, bool) and not isinstance(b, bool):
        return math.isclose(a, b, rel_tol=1e-12, abs_tol=1e-15)
    return a == b


class Case(_Model):
    """One rule of a coupling: ``value`` applies when every condition in ``when`` holds.

    ``when`` maps a swept (or earlier coupled) parameter to a value (equality)
    or to ``{op: value}`` with op in eq, ne, lt, le, gt, ge, in.  An empty
    ``when`` always holds (the "otherwise" case).
    """

    when: dict[str, Union[Scalar, dict[str, Union[Scalar, list[Scalar]]]]] = Field(default_factory=dict)
    value: Scalar

    @field_validator("when")
    @classmethod
    def _ops(cls, when):
        for name, cond in when.items():
            if isinstance(cond, dict):
                for op in cond:
                    if op not in _OPS:
                        raise ValueError(invalid(f"when.{name}", cond, f"an operator among {sorted(_OPS)}"))
        return when

    def holds(self, values: dict[str, Any]) -> bool:
        for name, cond in self.when.items():
            v = values[name]
            if isinstance(cond, dict):
                if not all(_OPS[op](v, ref) for op, ref in cond.items()):
                    return False
            elif not _equal(v, cond):
                return False
        return True


class Coupling(_Model):
    """A parameter set from the swept ones: the first case that holds gives its value.

    Example: chi_I = 1 at chi = 1, else 2::

        Coupling(parameter="chi_I", cases=[Case(when={"chi": 1.0}, value=1.0), Case(value=2.0)])
    """

    parameter: str
    cases: tuple[Case, ...] = Field(min_length=1)


class BaseConfig(_Model):
    """The configuration every point starts from: a preset and overrides.

    ``preset`` is ``"tutorial"`` (:meth:`Params.tutorial`), ``"default"``
    (upstream's defaults, :class:`Params`) or the path of a parameters JSON
    file; ``overrides`` is a (nested or shorthand) dict applied on it.
    """

    preset: str = "tutorial"
    overrides: dict[str, Any] = Field(default_factory=dict)

    @field_validator("overrides")
    @classmethod
    def _json(cls, value):
        try:
            json.dumps(value)
        except TypeError as exc:
            raise ValueError(invalid("overrides", value, f"JSON-serialisable values ({exc})")) from None
        return value

    def params(self, values: dict | None = None):
        """Validated :class:`Params` of the preset, the overrides and ``values``."""
        merged = deep_merge(expand_shorthand(self.overrides), expand_shorthand(values or {}))
        if self.preset not in PRESETS and not Path(self.preset).is_file():
            raise ParameterError(invalid("base.preset", self.preset,
                                         "'tutorial', 'default' or the path of a parameters JSON file"))
        return preset(self.preset, merged)


class SweepSpec(_Model):
    """What a sweep varies and what it runs per point.

    Parameters
    ----------
    parameters : dict of str to list
        Swept parameters (shorthand such as ``chi`` or a dotted path such as
        ``theory.seed``) and their values.  Each becomes a dimension of the
        result (named after the parameter's field: ``chi``), or, with
        ``mode="zip"``, all share one dimension named after the first.
    mode : {"grid", "zip"}, default: "grid"
        Cartesian product of the value lists, or the lists taken together
        (equal lengths).
    coupled : tuple of Coupling
        Parameters set from the swept ones (in order; a coupling may refer to
        an earlier one).
    base : BaseConfig
        Preset and overrides shared by all points.
    run : tuple of {"theory", "simulate", "analyse"}, default: ("theory",)
        What each point computes; also accepts ``"simulate+analyse"``.
    theory_options : dict
        Keyword arguments of :func:`mam_xr.theory.integrate`, plus ``method``
        (``"integrate"`` or ``"fixed_point"``) and ``trajectory`` (keep it).
    analysis_options : dict
        Keyword arguments of :func:`mam_xr.analysis.analyze` (statistics,
        definition parameters such as ``t_min_ms``).
    name : str
        A name for messages and the result's attrs.
    """

    parameters: dict[str, tuple[Scalar, ...]]
    mode: Literal["grid", "zip"] = "grid"
    coupled: tuple[Coupling, ...] = ()
    base: BaseConfig = BaseConfig()
    run: tuple[Literal["theory", "simulate", "analyse"], ...] = ("theory",)
    theory_options: dict[str, Any] = Field(default_factory=dict)
    analysis_options: dict[str, Any] = Field(default_factory=dict)
    name: str = "sweep"

    @field_validator("parameters", mode="before")
    @classmethod
    def _values(cls, value):
        if not isinstance(value, dict) or not value:
            raise ValueError(invalid("parameters", value, "a non-empty dict {parameter: [values]}"))
        out = {}
        for name, values in value.items():
            if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
                values = [values]
            values = [v.item() if isinstance(v, np.generic) else v for v in values]
            if not values:
                raise ValueError(invalid(f"parameters.{name}", values, "at least one value"))
            if len({json.dumps(v) for v in values}) != len(values):
                raise ValueError(invalid(f"parameters.{name}", values, "distinct values"))
            out[name] = tuple(values)
        return out

    @field_validator("run", mode="before")
    @classmethod
    def _steps(cls, value):
        if isinstance(value, str):
            value = value.replace(",", "+").split("+")
        value = [{"analyze": "analyse", "analysis": "analyse", "simulation": "simulate"}.get(v.strip(), v.strip())
                 for v in value]
        if not value:
            raise ValueError(invalid("run", value, f"one or more of {STEPS}"))
        unknown = [v for v in value if v not in STEPS]
        if unknown:
            raise ValueError(invalid("run", unknown[0], f"one or more of {STEPS}, e.g. 'simulate+analyse'"))
        if "analyse" in value and "simulate" not in value:
            raise ValueError(invalid("run", "+".join(value), "'simulate' together with 'analyse'"))
        return tuple(s for s in STEPS if s in value)

    @field_validator("theory_options")
    @classmethod
    def _theory_method(cls, value):
        method = value.get("method", "integrate")
        if method not in ("integrate", "fixed_point"):
            raise ValueError(invalid("theory_options.method", method, "'integrate' or 'fixed_point'"))
        return value

    @field_validator("theory_options", "analysis_options")
    @classmethod
    def _json_options(cls, value):
        try:
            json.dumps(value)
        except TypeError as exc:
            raise ValueError(f"options={value!r} is invalid: expected JSON-serialisable values ({exc})") from None
        return value

    @model_validator(mode="after")
    def _consistent(self):
        if self.mode == "zip":
            lengths = {k: len(v) for k, v in self.parameters.items()}
            if len(set(lengths.values())) > 1:
                raise ValueError(invalid("parameters", lengths, "lists of equal length with mode='zip'"))
        paths = {}
        for name in self.parameters:
            paths[name] = parameter_path(name)
        known = set(self.parameters) | {p[-1] for p in paths.values()}
        for c in self.coupled:
            path = parameter_path(c.parameter)
            if path in paths.values():
                raise ValueError(invalid("coupled.parameter", c.parameter, "a parameter that is not swept"))
            for case in c.cases:
                for name in case.when:
                    if name not in known:
                        raise ValueError(invalid(f"coupled[{c.parameter}].when", name,
                                                 f"a swept or earlier coupled parameter among {sorted(known)}"))
            paths[c.parameter] = path
            known |= {c.parameter, path[-1]}
        if len(set(paths.values())) != len(paths):
            raise ValueError(invalid("parameters", list(paths), "each parameter once"))
        return self

    # -- derived -----------------------------------------------------------------------
    @property
    def dims(self) -> tuple[str, ...]:
        """Names of the result's sweep dimensions."""
        names = dim_names(self.parameters)
        return (names[0],) if self.mode == "zip" else tuple(names)

    @property
    def shape(self) -> tuple[int, ...]:
        lengths = [len(v) for v in self.parameters.values()]
        return (lengths[0],) if self.mode == "zip" else tuple(lengths)

    def to_json(self) -> str:
        return json.dumps(self.model_dump(mode="json"), sort_keys=True, indent=1)

    @classmethod
    def from_dict(cls, values: dict) -> "SweepSpec":
        """A validated spec from a dict; errors raise :class:`ParameterError` naming the field."""
        return validate_spec(values)

    @classmethod
    def from_json(cls, text: str) -> "SweepSpec":
        return validate_spec(json.loads(text))

    @classmethod
    def chi(cls, values=(1.0, 1.4, 1.5, 1.6, 1.7, 1.75, 1.8, 1.9, 2.0, 2.1, 2.5), *,
            chi_I: float | None = None, preset: str = "tutorial", overrides: dict | None = None,
            run="theory", **kwargs) -> "SweepSpec":
        """The χ study of Schmidt et al. (2018): χ_I = 1 at χ = 1, else 2 (or ``chi_I``).

        ``values`` defaults to the paper's eleven χ; ``run`` is ``"theory"`` or
        ``"simulate+analyse"`` (or both).
        """
        coupled = ((Coupling(parameter="chi_I", cases=(Case(when={"chi": 1.0}, value=1.0),
                                                       Case(value=2.0))),)
                   if chi_I is None else ())
        over = dict(overrides or {})
        if chi_I is not None:
            over["chi_I"] = chi_I
        return validate_spec(dict(parameters={"chi": list(values)}, coupled=coupled,
                                   base={"preset": preset, "overrides": over}, run=run, **kwargs))


def validate_spec(values) -> SweepSpec:
    """A :class:`SweepSpec` from a spec or a dict; errors raise ParameterError naming the field."""
    if isinstance(values, SweepSpec):
        return values
    try:
        return SweepSpec.model_validate(values)
    except ValidationError as exc:
        raise ParameterError(format_validation_error(exc)) from None


def load_spec(path) -> SweepSpec:
    """A :class:`SweepSpec` from a JSON or TOML file."""
    path = Path(path)
    if not path.is_file():
        raise ParameterError(invalid("spec", str(path), "an existing JSON or TOML file"))
    text = path.read_text()
    if path.suffix == ".toml":
        import tomllib

        return validate_spec(tomllib.loads(text))
    try:
        return validate_spec(json.loads(text))
    except json.JSONDecodeError as exc:
        raise ParameterError(invalid("spec", str(path), f"valid JSON ({exc})")) from None


def dim_names(parameters) -> list[str]:
    """Names of the result's dims for the swept parameters (the field name, e.g. ``chi``)."""
    paths = [parameter_path(n) for n in parameters]
    names = [p[-1] for p in paths]
    # Two swept fields of the same name (simulation.seed, theory.seed): keep their section.
    return [("_".join(p[-2:]) if names.count(p[-1]) > 1 else p[-1]) for p in paths]


def leaves(d: dict, prefix=()) -> dict[tuple, Any]:
    """{path tuple: value} of the leaves of a nested dict (e.g. a Params dump)."""
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(leaves(v, prefix + (k,)))
        else:
            out[prefix + (k,)] = v
    return out
