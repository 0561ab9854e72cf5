"""Parameter sweeps: many points of the model on a Dask cluster, resumable, in one Dataset.

A sweep is described by a :class:`SweepSpec` (validated like all parameters):
the swept parameters with their values (a grid, or zipped lists), coupled
parameters (e.g. ``chi_I = 1 if chi == 1 else 2``), the base configuration (a
preset plus overrides) and what to run per point (``theory``, ``simulate``,
``analyse``).  :func:`run_sweep` runs it into a directory::

    <directory>/
      sweep.json        the spec and the execution settings (threads per point)
      manifest.json     every point: coordinates, label, status, error, timings
      points/<name>/    one directory per point (named by its coordinates and label):
        task.json         the point's parameters and steps
        point.json        status running | complete | failed, error, timings
        run.zarr          the point's run store (simulate)
        result.nc         the point's results (theory rates, statistics), NetCDF
        log.txt           output of the point's process
      batches/          theory-only sweeps on one structure: the results of a run's points
                        in one Zarr store (the points' point.json name it; no result.nc)
      sweep.zarr        all points combined along the sweep dimension(s)

Points are identified by their parameter label (:meth:`Params.label`), so a
re-run of the same directory skips the points whose results are complete and
re-runs the failed or incomplete ones; extending a value list re-uses the points
already done.  Each simulating point runs in a fresh Python process (NEST's
kernel is process-global), started by a single-threaded Dask worker; the
process uses ``simulation.threads`` NEST threads, chosen so that workers times
threads does not exceed the cores.  A serial theory-only sweep of chi, chi_I, g
and rate_ext builds one structure and derives every point's from it (see
:func:`run_sweep`, ``fast_theory``).  See docs/sweeps.md.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import subprocess
import sys
import threading
import time
import warnings
from dataclasses import dataclass, field
from itertools import product
from pathlib import Path
from typing import Any, Literal, Optional, Union

import numpy as np
import xarray as xr
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .errors import MamXrError, ParameterError, SimulationError, StoreError, invalid

__all__ = ["Case", "Coupling", "BaseConfig", "SweepSpec", "Point", "plan", "run_sweep",
           "open_sweep", "sweep_status", "combine", "load_spec", "run_point", "point_memory",
           "slurm_options", "main"]

SWEEP_FORMAT = "mam_xr.sweep/1"
STEPS = ("theory", "simulate", "analyse")
CLUSTERS = ("auto", "local", "serial", "slurm", "mpi")

Scalar = Union[bool, int, float, str]


# --------------------------------------------------------------------------------------
# Specification
# --------------------------------------------------------------------------------------

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
        from .params import Params, _deep_merge, _expand

        merged = _deep_merge(_expand(_nested(self.overrides)), _expand(_nested(values or {})))
        if self.preset == "tutorial":
            return Params.tutorial(merged)
        if self.preset == "default":
            return Params.from_dict(merged)
        path = Path(self.preset)
        if not path.is_file():
            raise ParameterError(invalid("base.preset", self.preset,
                                         "'tutorial', 'default' or the path of a parameters JSON file"))
        return Params.from_json(path.read_text()).update(merged)


def _nested(values: dict) -> dict:
    """Expand dotted keys (``network.connection.chi``) into nested dicts; keep the others."""
    from .params import _deep_merge

    out: dict = {}
    for key, value in values.items():
        if isinstance(key, str) and "." in key:
            parts = key.split(".")
            nested: Any = value
            for part in reversed(parts):
                nested = {part: nested}
            out = _deep_merge(out, nested)
        else:
            out = _deep_merge(out, {key: value})
    return out


def _parameter_path(name: str) -> tuple[str, ...]:
    """The nested path of a parameter given by shorthand (``chi``) or dotted path."""
    from .params import Params, _shorthand_index

    if "." in name:
        parts = tuple(name.split("."))
        model = Params
        for i, part in enumerate(parts):
            fields = getattr(model, "model_fields", {})
            if part not in fields:
                known = ", ".join(sorted(fields)) if fields else "none (not a section)"
                raise ParameterError(invalid("parameter", name, f"a known parameter; "
                                             f"'{'.'.join(parts[:i]) or 'Params'}' has {known}"))
            model = fields[part].annotation
        return parts
    index = _shorthand_index()
    if name not in index:
        import difflib

        close = difflib.get_close_matches(name, sorted(index), n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise ParameterError(invalid("parameter", name, f"a known parameter name or dotted path{hint}"))
    return index[name]


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
            paths[name] = _parameter_path(name)
        known = set(self.parameters) | {p[-1] for p in paths.values()}
        for c in self.coupled:
            path = _parameter_path(c.parameter)
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
        names = _dim_names(self.parameters)
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
        return _validate_spec(values)

    @classmethod
    def from_json(cls, text: str) -> "SweepSpec":
        return _validate_spec(json.loads(text))

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
        return _validate_spec(dict(parameters={"chi": list(values)}, coupled=coupled,
                                   base={"preset": preset, "overrides": over}, run=run, **kwargs))


def _validate_spec(values) -> SweepSpec:
    if isinstance(values, SweepSpec):
        return values
    try:
        return SweepSpec.model_validate(values)
    except ValidationError as exc:
        from .params import _format

        raise ParameterError(_format(exc)) from None


def load_spec(path) -> SweepSpec:
    """A :class:`SweepSpec` from a JSON or TOML file."""
    path = Path(path)
    if not path.is_file():
        raise ParameterError(invalid("spec", str(path), "an existing JSON or TOML file"))
    text = path.read_text()
    if path.suffix == ".toml":
        import tomllib

        return _validate_spec(tomllib.loads(text))
    try:
        return _validate_spec(json.loads(text))
    except json.JSONDecodeError as exc:
        raise ParameterError(invalid("spec", str(path), f"valid JSON ({exc})")) from None


def _dim_names(parameters) -> list[str]:
    paths = [_parameter_path(n) for n in parameters]
    names = [p[-1] for p in paths]
    # Two swept fields of the same name (simulation.seed, theory.seed): keep their section.
    return [("_".join(p[-2:]) if names.count(p[-1]) > 1 else p[-1]) for p in paths]


# --------------------------------------------------------------------------------------
# Plan: the points of a sweep
# --------------------------------------------------------------------------------------

@dataclass
class Point:
    """One point of a sweep: its position, coordinates, parameters or the reason it is invalid."""

    index: tuple[int, ...]
    coords: dict[str, Any]
    values: dict[str, Any]
    params: Any = None
    error: Optional[str] = None
    label: str = ""

    @property
    def name(self) -> str:
        """Directory name: the coordinates, then the start of the label."""
        text = "_".join(f"{k}={_fmt(v)}" for k, v in self.coords.items())
        safe = "".join(c if c.isalnum() or c in "=._-" else "-" for c in text)[:80]
        return f"{safe}_{self.label[:12]}" if self.label else safe

    @property
    def valid(self) -> bool:
        return self.error is None


def _fmt(v) -> str:
    return repr(v) if isinstance(v, float) else str(v)


def plan(spec: SweepSpec, *, threads: int | None = None) -> list[Point]:
    """The points of ``spec`` in result order, each with validated Params or its error.

    A point whose parameters are invalid is returned with ``error`` (the
    ParameterError message) instead of raising: it fails alone.  ``threads``
    sets ``simulation.threads`` unless the spec sets it.
    """
    spec = _validate_spec(spec)
    names = list(spec.parameters)
    dims = _dim_names(spec.parameters)
    lists = [spec.parameters[n] for n in names]
    if spec.mode == "zip":
        combos = [(tuple([i]), tuple(vals)) for i, vals in enumerate(zip(*lists))]
    else:
        combos = [(idx, tuple(lists[k][i] for k, i in enumerate(idx)))
                  for idx in product(*(range(len(v)) for v in lists))]
    sets_threads = ("threads" in _flat_keys(spec.base.overrides) or "threads" in dims
                    or any(c.parameter.endswith("threads") for c in spec.coupled))
    points = []
    for idx, vals in combos:
        values = dict(zip(names, vals))
        refer = {**values, **dict(zip(dims, vals))}
        coords = dict(zip(dims, vals))
        error = None
        for c in spec.coupled:
            case = next((k for k in c.cases if k.holds(refer)), None)
            if case is None:
                error = invalid(c.parameter, None, f"a case of the coupling that holds at {refer}")
                break
            values[c.parameter] = case.value
            refer[c.parameter] = refer[_parameter_path(c.parameter)[-1]] = case.value
        if threads is not None and "simulate" in spec.run and not sets_threads:
            values.setdefault("simulation.threads", int(threads))
        params, label = None, ""
        if error is None:
            try:
                params = spec.base.params(values)
                label = params.label()
            except ParameterError as exc:
                error = str(exc)
        if spec.mode == "zip":
            coords = {dims[0]: vals[0]}
        points.append(Point(index=idx, coords=coords, values=values, params=params,
                            error=error, label=label))
    return points


def _flat_keys(d: dict) -> set[str]:
    out = set()
    for k, v in d.items():
        out.add(str(k).split(".")[-1])
        if isinstance(v, dict):
            out |= _flat_keys(v)
    return out


# --------------------------------------------------------------------------------------
# One point
# --------------------------------------------------------------------------------------

def _atomic_write_json(path: Path, obj) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.write_text(json.dumps(obj, indent=1, sort_keys=True, default=str))
    os.replace(tmp, path)


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError):
        return None


#: Dims shared by all results; any other dim of a statistic is prefixed with its name.
_SHARED_DIMS = ("area", "pop", "source_area", "source_pop", "draw")


def _prefixed(ds: xr.Dataset, prefix: str) -> xr.Dataset:
    """``<prefix>_<var>`` names (unless the name already starts with it) and prefixed private dims.

    Statistics reuse names (``rate`` is a variable of ``rates`` and a dim of
    ``rate_distribution``; several have a ``time`` dim of their own), so in the
    one flat result Dataset every non-shared dim becomes ``<prefix>_<dim>``.
    """
    if "exists" in ds.data_vars:
        ds = ds.set_coords("exists")
    names = {}
    for v in ds.data_vars:
        names[v] = v if str(v).startswith(prefix) else f"{prefix}_{v}"
    dims = {d: f"{prefix}_{d}" for d in ds.dims if d not in _SHARED_DIMS}
    out = ds.rename_vars(names)
    for d, n in dims.items():
        out = out.rename({d: n}) if d in out.coords else out.rename_dims({d: n})
    return out


#: The last structure built in this process for a theory point, keyed by its network
#: parameters other than chi and chi_I: (structure, chi, chi_I).
_LAST_STRUCTURE: dict[str, tuple] = {}


def _structure_for_theory(params) -> xr.Dataset:
    """The point's structure; along a χ / χ_I sweep rescaled from the previous point.

    :func:`mam_xr.theory.rescale_cc` changes only the cortico-cortical
    couplings (and the DC drive of down-scaled networks) as a rebuild would,
    ~6x faster than :func:`mam_xr.structure.build` (equal to it within a few
    1e-15 relative).
    """
    from .structure import build, rescale

    net = params.network.model_dump(mode="json")
    chi, chi_I = net["connection"].pop("chi"), net["connection"].pop("chi_I")
    key = json.dumps(net, sort_keys=True)
    hit = _LAST_STRUCTURE.get(key)
    if hit is not None:
        structure, chi_old, chi_I_old = hit
        if (chi, chi_I) == (chi_old, chi_I_old):
            return structure
        return rescale(structure, chi=chi, chi_I=chi_I,
                       params=params.update(chi=chi_old, chi_I=chi_I_old))
    structure = build(params)
    _LAST_STRUCTURE.clear()
    _LAST_STRUCTURE[key] = (structure, chi, chi_I)
    return structure


def _without_attrs(ds: xr.Dataset) -> xr.Dataset:
    """A shallow copy without Dataset attrs (variable attrs kept)."""
    out = ds.copy(deep=False)
    out.attrs = {}
    return out


def _theory_dataset(params, options: dict, structure: xr.Dataset | None = None,
                    reuse: bool = True) -> xr.Dataset:
    """Theory rates of one point: :func:`mam_xr.theory.integrate` without the trajectory.

    ``options`` are keyword arguments of ``integrate`` plus ``method``
    (``"integrate"``, upstream's procedure, or ``"fixed_point"``:
    :func:`mam_xr.theory.fixed_point`, with its stability, without the gain
    matrix unless ``with_gain=True``) and ``trajectory`` (True keeps the
    integration's rate trajectory (area, pop, time)).  ``structure``: the point's
    structure if already at hand (the fast path of theory-only sweeps), else
    built (or, with ``reuse``, rescaled from this process's previous point).
    """
    from . import theory

    options = dict(options)
    keep_trajectory = bool(options.pop("trajectory", False))
    method = options.pop("method", "integrate")
    if structure is None:
        if reuse:
            structure = _structure_for_theory(params)
        else:
            from .structure import build

            structure = build(params)
    net = structure
    if method == "fixed_point":
        options.setdefault("with_gain", False)
        th = theory.fixed_point(net, params, warn=False, **options)
    else:
        th = theory.integrate(net, params, warn=False, **options)
    if not keep_trajectory:
        th = th.drop_vars("trajectory", errors="ignore").drop_dims("time", errors="ignore")
    out = _prefixed(th, "theory")
    out.attrs = {"theory": json.dumps(th.attrs, default=str)}
    return out


def _analysis_dataset(run, options: dict) -> xr.Dataset:
    """All statistics of one run (:func:`mam_xr.analysis.analyze`) as one flat Dataset.

    Variables are named ``<statistic>_<variable>`` (``rates_rate``,
    ``irregularity_lvr``, ``correlation_corrcoef``; a variable already named
    after its statistic, such as ``synchrony``, keeps its name).  Each
    statistic's definition attrs are kept in ``attrs["statistics"]`` (JSON).
    """
    from .analysis import analyze

    out = analyze(run, **options)
    if isinstance(out, xr.Dataset):
        out = {"analysis": out}
    parts, definitions = [], {}
    for stat, ds in out.items():
        if isinstance(ds, xr.DataArray):
            ds = ds.to_dataset(name=ds.name or stat)
        definitions[stat] = ds.attrs
        parts.append(_without_attrs(_prefixed(ds, stat)))
    merged = xr.merge(parts, compat="override", join="outer", combine_attrs="drop")
    merged.attrs = {"statistics": json.dumps(definitions, default=str)}
    return merged


def _run_steps(params, steps, task: dict, point_dir: Path, timings: dict) -> list[xr.Dataset]:
    parts = []
    if "theory" in steps:
        t0 = time.perf_counter()
        parts.append(_theory_dataset(params, task.get("theory_options", {}),
                                     reuse=task.get("reuse_structure", True)))
        timings["theory"] = time.perf_counter() - t0
    if "simulate" in steps:
        from .simulation import simulate

        t0 = time.perf_counter()
        run = simulate(params, store=point_dir / "run.zarr", overwrite=True, progress=False)
        timings["simulate"] = time.perf_counter() - t0
        if "analyse" in steps:
            t0 = time.perf_counter()
            parts.append(_analysis_dataset(run, task.get("analysis_options", {})))
            timings["analyse"] = time.perf_counter() - t0
    return parts


def run_point(point_dir) -> dict:
    """Run one point from its ``task.json`` (normally in its own process) and write ``result.nc``.

    Writes ``point.json`` with status ``running``, then ``complete`` or
    ``failed`` (with the error).  The result store is written under a
    temporary name and renamed, so ``result.nc`` exists only when complete.
    """
    from .params import Params

    point_dir = Path(point_dir)
    task = json.loads((point_dir / "task.json").read_text())
    info = {"status": "running", "label": task["label"], "coords": task["coords"],
            "started": time.time(), "pid": os.getpid(), "host": os.uname().nodename}
    _atomic_write_json(point_dir / "point.json", info)
    timings: dict[str, float] = {}
    try:
        params = Params.from_json(task["params"])
        steps = task["run"]
        import dask

        # Dask inside a point (analysis) uses the point's share of the cores only.
        with dask.config.set(num_workers=params.simulation.threads):
            parts = _run_steps(params, steps, task, point_dir, timings)
        attrs = {}
        for part in parts:
            attrs.update(part.attrs)
        result = xr.merge([_without_attrs(q) for q in parts], compat="override", join="outer",
                          combine_attrs="drop") if parts else xr.Dataset()
        result.attrs.update(attrs)
        result.attrs.update({"label": task["label"], "params": task["params"],
                             "coords": json.dumps(task["coords"]), "run": "+".join(steps)})
        t0 = time.perf_counter()
        _write_point_result(result, point_dir / RESULT)
        timings["write"] = time.perf_counter() - t0
    except BaseException as exc:  # noqa: BLE001 - any failure of the point is its result
        info.update(status="failed", error=f"{type(exc).__name__}: {exc}", finished=time.time(),
                    timings=timings)
        _atomic_write_json(point_dir / "point.json", info)
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise
        return info
    info.update(status="complete", finished=time.time(), timings=timings)
    _atomic_write_json(point_dir / "point.json", info)
    return info


def _attr_value(v):
    """An attribute value both NetCDF3 and Zarr keep: str, int, float or a list of numbers, else JSON."""
    if isinstance(v, (str, float)) or (isinstance(v, int) and not isinstance(v, bool)):
        return v
    if isinstance(v, (list, tuple, np.ndarray)) and len(v) and all(
            isinstance(x, (int, float, np.number)) and not isinstance(x, (bool, np.bool_)) for x in v):
        return [float(x) for x in v]
    if isinstance(v, np.generic) and not isinstance(v, np.bool_):
        return v.item()
    return json.dumps(v, default=str)


def _store_ready(ds: xr.Dataset) -> xr.Dataset:
    """Strings as object (Zarr v3 has no stable fixed-width unicode), attrs storable, no encodings."""
    out = ds.copy()
    for name, var in list(out.variables.items()):
        if var.dtype.kind in "UT":
            out[name] = var.astype(object)
    for name in out.variables:
        out[name].encoding = {}
        out[name].attrs = {k: _attr_value(v) for k, v in out[name].attrs.items()}
    out.attrs = {k: _attr_value(v) for k, v in out.attrs.items()}
    return out


RESULT = "result.nc"


def _write_point_result(ds: xr.Dataset, path: Path) -> None:
    """One point's results as a NetCDF3 file (SciPy writer; small and fast), renamed into place.

    A point's results are small (kB to a few MB), and a NetCDF file is written
    ~10x faster than a Zarr group of as many arrays; the combined sweep store is Zarr.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    _store_ready(ds).to_netcdf(str(tmp), engine="scipy", format="NETCDF3_64BIT")
    os.replace(tmp, path)


def _open_point_result(path: Path) -> xr.Dataset:
    return xr.open_dataset(str(path), engine="scipy")


def _result_path(directory: Path, name: str, info: dict | None) -> Path:
    """Where a point's results are: ``points/<name>/result.nc``, or (points of a fast
    theory-only sweep) the batch file named by ``result`` in its point.json."""
    rel = (info or {}).get("result")
    return Path(directory) / rel if rel else Path(directory) / "points" / name / RESULT


def _open_result(path: Path, label: str, batches: dict) -> xr.Dataset:
    """One point's results from its own file or from a batch file (opened once, cached)."""
    if path.name == RESULT:
        return _open_point_result(path)
    if path not in batches:
        # Without Dask (chunks=None): loading a dask array would import distributed (~0.3 s).
        batch = xr.open_dataset(str(path), engine="zarr", chunks=None, consolidated=False,
                                zarr_format=3).load()
        batches[path] = (batch, {str(lab): k for k, lab in enumerate(batch["label"].values)})
    batch, where = batches[path]
    if label not in where:
        raise StoreError(invalid("result", str(path), f"a batch file with the point {label}"))
    return batch.isel(point=where[label], drop=True).drop_vars("label", errors="ignore")


# --------------------------------------------------------------------------------------
# Theory-only sweeps: one structure for all points
# --------------------------------------------------------------------------------------

#: Parameters whose change a theory-only sweep applies to one built structure (the
#: parameters of mam_xr.theory's fast path).
_FAST_THEORY = {("network", "connection", "chi"): "chi", ("network", "connection", "chi_I"): "chi_I",
                ("network", "connection", "g"): "g", ("network", "input", "rate_ext"): "rate_ext"}


def _fast_theory_reason(spec: SweepSpec, points) -> str | None:
    """Why the points of ``spec`` cannot share one structure (None: they can).

    They can when the sweep runs theory only, every swept and coupled parameter
    is one of chi, chi_I, g, rate_ext, and the points' Params agree in every
    other parameter (including those a preset sets from the swept ones).
    """
    if tuple(spec.run) != ("theory",):
        return f"the sweep runs {'+'.join(spec.run)}"
    for name in (*spec.parameters, *(c.parameter for c in spec.coupled)):
        if _parameter_path(name) not in _FAST_THEORY:
            return f"{name} is not one of chi, chi_I, g, rate_ext"
    ref = None
    for p in points:
        leaves = {k: v for k, v in _leaves(p.params.model_dump(mode="json")).items() if k not in _FAST_THEORY}
        if ref is None:
            ref = leaves
        elif leaves != ref:
            diff = sorted(".".join(k) for k in set(ref) | set(leaves) if ref.get(k) != leaves.get(k))
            return f"the points differ in {', '.join(diff[:3])}"
    return None


def _rescale_g(structure: xr.Dataset, factor: float) -> xr.Dataset:
    """The structure with the couplings of inhibitory sources multiplied by ``factor``
    (= g_new / g_old): ``weight_mean``, ``weight_sd`` and ``J`` are proportional to g
    there and nothing else of a structure without DC drive depends on g
    (construction.md §4.5)."""
    from .flat import is_excitatory

    pops = [str(x) for x in structure["source_pop"].values]
    inh = xr.DataArray(~np.asarray(is_excitatory(pops)), dims=("source_pop",),
                       coords={"source_pop": structure["source_pop"].values})
    scale = xr.where(inh, float(factor), 1.0)
    out = structure.copy()
    for name in ("weight_mean", "weight_sd", "J"):
        if name in out:
            out[name] = (structure[name] * scale).transpose(*structure[name].dims).assign_attrs(
                structure[name].attrs)
    return out


class _FastStructures:
    """The structure of each point of a theory-only sweep, from one build.

    The first point's structure is built (:func:`mam_xr.structure.build`); a
    point at other χ / χ_I gets it via :func:`mam_xr.theory.rescale_cc`
    (CC couplings and, down-scaled, the DC drive, as a rebuild would: equal
    within ~1e-15 relative).  Other g or rate_ext: at full scale (no DC drive)
    the inhibitory couplings are rescaled (g) or nothing changes (rate_ext only
    enters the theory through the Params); a down-scaled structure's DC drive
    depends on both, so it is built once per (g, rate_ext).  Always rescaled
    from the built structure, never chained.
    """

    def __init__(self):
        self.base = None
        self.params0 = None
        self.by_input: dict[tuple, xr.Dataset] = {}
        self.builds = 0

    def __call__(self, q) -> xr.Dataset:
        from .structure import build, rescale

        if self.base is None:
            self.base, self.params0 = build(q), q
            self.builds += 1
        p0 = self.params0
        c0, c = p0.network.connection, q.network.connection
        key = (c.g, q.network.input.rate_ext)
        s = self.by_input.get(key)
        if s is None:
            if key == (c0.g, p0.network.input.rate_ext):
                s = self.base
            elif bool((self.base["dc_drive"].fillna(0.0) != 0).any()):
                s = build(p0.update({"g": c.g, "rate_ext": q.network.input.rate_ext}))
                self.builds += 1
            else:
                s = _rescale_g(self.base, c.g / c0.g)
            self.by_input[key] = s
        if (c.chi, c.chi_I) != (c0.chi, c0.chi_I):
            s = rescale(s, chi=c.chi, chi_I=c.chi_I, params=q.update(chi=c0.chi, chi_I=c0.chi_I))
        return s


def _run_theory_fast(spec: SweepSpec, directory: Path, todo: dict, states: dict, bar, write_manifest) -> int:
    """Run the points of a theory-only sweep in this process on one structure; one result file.

    Each point is :func:`_theory_dataset` (the same ``integrate`` or
    ``fixed_point`` call as a point run alone) on its structure from
    :class:`_FastStructures`.  The results of all points are written at once
    to ``batches/theory-<stamp>.zarr`` (dim ``point``, coordinate ``label``),
    then each point's ``point.json`` (complete, ``result`` = that file) and
    the manifest: a sweep killed before that has no complete point of this
    run and re-runs them all.
    """
    structures = _FastStructures()
    prepared = {}
    for label, p in todo.items():
        attempts = int(states[label].get("attempts", 0)) + 1
        prepared[label] = (_prepare_point(spec, directory, p, attempts), attempts)
        states[label] = {"status": "running", "started": time.time(), "attempts": attempts}
    bar.update(running=len(todo))
    write_manifest()
    results, infos = {}, {}
    host = os.uname().nodename
    for label, p in todo.items():
        info = {"status": "running", "label": label, "coords": p.coords, "started": time.time(),
                "pid": os.getpid(), "host": host, "attempts": prepared[label][1]}
        timings: dict[str, float] = {}
        try:
            t0 = time.perf_counter()
            net = structures(p.params)
            timings["structure"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            results[label] = _theory_dataset(p.params, spec.theory_options, structure=net)
            timings["theory"] = time.perf_counter() - t0
            info.update(status="complete", finished=time.time(), timings=timings)
        except Exception as exc:  # noqa: BLE001 - a failing point fails alone
            info.update(status="failed", error=f"{type(exc).__name__}: {exc}", finished=time.time(),
                        timings=timings)
        infos[label] = info
    if results:
        labels = list(results)
        t0 = time.perf_counter()
        try:
            batch = xr.concat([_without_attrs(results[lab]) for lab in labels], dim="point", coords="minimal",
                              compat="override", join="outer", combine_attrs="drop")
            batch = batch.assign_coords(label=("point", labels))
            batch.attrs = {"format": SWEEP_FORMAT, "run": "theory",
                           "content": "theory results of a sweep's points, one structure for all "
                                      "(mam_xr.sweep fast path); a point per label",
                           "points": json.dumps({lab: {"coords": todo[lab].coords,
                                                       "theory": results[lab].attrs.get("theory")}
                                                 for lab in labels})}
            # Zarr, as sweep.zarr (xarray's NetCDF writer imports distributed, ~0.3 s).
            path = directory / "batches" / f"theory-{time.time_ns()}-{os.getpid()}.zarr"
            path.parent.mkdir(exist_ok=True)
            _write_zarr(batch, path, sweep_dims=("point",))
            write = (time.perf_counter() - t0) / len(labels)
            for lab in labels:
                infos[lab]["result"] = path.relative_to(directory).as_posix()
                infos[lab]["timings"]["write"] = write
        except Exception as exc:  # noqa: BLE001 - no file: none of them is complete
            for lab in labels:
                infos[lab].update(status="failed", error=f"writing the results: {type(exc).__name__}: {exc}")
    bar.update(running=0)
    for label, info in infos.items():
        _atomic_write_json(prepared[label][0] / "point.json", info)
        states[label] = info
        ok = info["status"] == "complete"
        if not ok:
            bar.write(f"point {todo[label].coords} failed: {info.get('error')}")
        bar.update(done=int(ok), failed=int(not ok))
    write_manifest()
    return structures.builds


def _write_zarr(ds: xr.Dataset, path: Path, sweep_dims=()) -> None:
    """Write ``ds`` to a Zarr v3 store at ``path`` (via a temporary name).

    In-memory variables are chunked along the sweep dims so that a chunk holds
    at most ~32 MB (whole along the other dims): a theory sweep is one chunk
    per variable, a sweep of long time series one or a few points per chunk.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    out = _store_ready(ds)
    for name, var in out.variables.items():
        if var.chunks is not None or not var.ndim:
            continue
        per_point = var.dtype.itemsize * int(np.prod([n for d, n in var.sizes.items() if d not in sweep_dims]))
        n_points = max(1, (32 * 2**20) // max(1, per_point))
        chunks, left = [], n_points
        for d, n in zip(var.dims, var.shape):
            if d in sweep_dims:
                c = max(1, min(n, left))
                left = max(1, left // max(1, c))
                chunks.append(c)
            else:
                chunks.append(n)
        var.encoding["chunks"] = tuple(chunks)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*does not have a Zarr V3 specification.*")
        out.to_zarr(str(tmp), mode="w", consolidated=False, zarr_format=3)
    if path.exists():
        shutil.rmtree(path)
    os.replace(tmp, path)


def _watch_parent() -> None:
    """Die with the process that started us (a killed sweep leaves no orphans).

    On Linux the kernel sends SIGKILL when the parent dies (PR_SET_PDEATHSIG);
    this works even while NEST holds the GIL.  Elsewhere a thread polls the
    parent pid.
    """
    expected = int(os.environ.get("MAM_XR_SWEEP_PARENT", os.getppid()))
    try:
        import ctypes
        import signal

        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(1, int(signal.SIGKILL), 0, 0, 0) != 0:  # 1 = PR_SET_PDEATHSIG
            raise OSError(ctypes.get_errno(), "prctl")
        linux = True
    except (OSError, AttributeError):
        linux = False
    if os.getppid() != expected:  # the parent died before prctl took effect
        os._exit(3)
    if linux:
        return

    def watch():
        while True:
            time.sleep(1.0)
            if os.getppid() != expected:
                os._exit(3)

    threading.Thread(target=watch, daemon=True).start()


def _point_main(point_dir: str) -> int:
    _watch_parent()
    info = run_point(point_dir)
    return 0 if info["status"] == "complete" else 1


def _execute(point_dir: str, threads: int, subprocess_: bool = True) -> dict:
    """Run a point in a fresh Python process (or in this one) and return its point.json."""
    point_dir_p = Path(point_dir)
    t0 = time.time()
    if not subprocess_:
        return run_point(point_dir_p)
    env = dict(os.environ)
    # NEST uses its own threads; keep BLAS/OpenMP of numpy from adding more.
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = str(threads)
    env["MAM_XR_SWEEP_PARENT"] = str(os.getpid())
    for var in ("MAM_XR_DATA_DIR", "MAM_XR_CACHE_DIR"):  # relative paths mean the caller's cwd
        if env.get(var):
            env[var] = os.path.abspath(env[var])
    code = "import sys; from mam_xr.sweep import _point_main; sys.exit(_point_main(sys.argv[1]))"
    with open(point_dir_p / "log.txt", "ab") as log:
        proc = subprocess.run([sys.executable, "-c", code, str(point_dir_p)], stdout=log,
                              stderr=subprocess.STDOUT, env=env)
    info = _read_json(point_dir_p / "point.json") or {}
    if proc.returncode != 0 and info.get("status") != "failed":
        tail = (point_dir_p / "log.txt").read_text(errors="replace").strip().splitlines()[-5:]
        info.update(status="failed", finished=time.time(), started=info.get("started", t0),
                    error=f"point process exited with code {proc.returncode}: " + " | ".join(tail))
        _atomic_write_json(point_dir_p / "point.json", info)
    return info


# --------------------------------------------------------------------------------------
# Cluster
# --------------------------------------------------------------------------------------

def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def _available_memory() -> float:
    try:
        import psutil

        return float(psutil.virtual_memory().available)
    except Exception:  # noqa: BLE001
        return float("inf")


def point_memory(params) -> float:
    """Rough peak memory (bytes) of one simulating point, for sizing workers.

    NEST needs about 60 bytes per synapse plus ~0.5 GB for the interpreter, the
    kernel and the structure (reference/README.md §4: 1.26 GB at the tutorial's
    scale 0.005 with all 32 areas).
    """
    from .structure import build

    net = build(params)
    areas = list(params.simulation.areas_simulated)
    synapses = float(net["synapses"].sel(area=areas, source_area=areas).sum())
    return 0.5e9 + 60.0 * synapses


def slurm_options(*, threads: int = 1, memory: float | None = None, **options) -> dict:
    """Keyword arguments of ``dask_jobqueue.SLURMCluster`` for a sweep.

    One job = one Dask worker with one Dask thread (one point at a time) but
    ``threads`` CPUs (``--cpus-per-task``) for the point's NEST threads, and
    ``memory`` bytes (default 4 GB); ``options`` (queue, account, walltime,
    job_extra_directives, job_script_prologue, python, ...) are passed on.
    """
    import dask

    mem_gb = max(1, math.ceil((memory or 4e9) / 1e9))
    kw = dict(cores=1, processes=1, job_cpu=int(threads), memory=f"{mem_gb}GB",
              scheduler_options={"dashboard": False})
    # A site configuration (DASK_CONFIG, e.g. runners/dask/jobqueue.yaml) sets the
    # walltime, queue, account and prologue; without one, allow points 4 hours.
    if dask.config.get("jobqueue.slurm.walltime", None) in (None, "00:30:00"):
        kw["walltime"] = "04:00:00"
    kw.update({k: v for k, v in options.items() if v is not None})
    return kw


@dataclass
class _Cluster:
    client: Any
    n_slots: int
    close: Any


def _start_cluster(kind, *, n_workers: int, threads: int, memory: float | None,
                   options: dict, subprocesses: bool = False) -> _Cluster:
    from distributed import Client

    if not isinstance(kind, str):  # an existing Client
        return _Cluster(kind, max(1, sum(w.get("nthreads", 1) for w in
                                           kind.scheduler_info()["workers"].values())), lambda: None)
    if kind.startswith(("tcp://", "tls://", "ucx://", "inproc://")):
        client = Client(kind)
        n = sum(w.get("nthreads", 1) for w in client.scheduler_info()["workers"].values())
        return _Cluster(client, max(1, n), client.close)
    if kind == "local":
        from distributed import LocalCluster

        # Simulating points run in a fresh process each (NEST's kernel is process-global),
        # so their workers only wait for it: threads of this process do, and start in
        # milliseconds instead of seconds.  Theory points compute inside the worker:
        # worker processes then (no GIL contention).
        kw = dict(n_workers=n_workers, threads_per_worker=1, processes=not subprocesses,
                  scheduler_kwargs={"dashboard": False}, silence_logs=40)
        # A worker's memory monitor sees its own process, not the point's: the sizing
        # against the machine's memory is done before (see _run_points).
        kw["memory_limit"] = 0 if subprocesses else "auto"
        kw.update(options)
        cluster = LocalCluster(**kw)
        client = Client(cluster)

        def close():
            client.close()
            cluster.close()

        return _Cluster(client, n_workers, close)
    if kind == "slurm":
        try:
            from dask_jobqueue import SLURMCluster
        except ImportError as exc:
            raise ParameterError(invalid("cluster", kind, "dask-jobqueue to be installed "
                                         "(pip install dask-jobqueue)")) from exc
        cluster = SLURMCluster(**slurm_options(threads=threads, memory=memory, **options))
        cluster.scale(jobs=n_workers)
        client = Client(cluster)

        def close():
            client.close()
            cluster.close()

        return _Cluster(client, n_workers, close)
    if kind == "mpi":  # dask_mpi.initialize() ran at the start of run_sweep
        client = Client()
        client.wait_for_workers(1, timeout=300)
        n = len(client.scheduler_info()["workers"])
        return _Cluster(client, n, client.close)
    raise ParameterError(invalid("cluster", kind, f"one of {CLUSTERS}, a scheduler address or a Client"))


# --------------------------------------------------------------------------------------
# Running a sweep
# --------------------------------------------------------------------------------------

@contextlib.contextmanager
def _lock(directory: Path):
    import fcntl

    path = directory / ".lock"
    f = open(path, "a+")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        owner = f.read().strip()
        f.close()
        raise StoreError(invalid("directory", str(directory), "a sweep directory no other process is "
                                 f"running (locked by {owner or 'another process'})")) from None
    f.seek(0)
    f.truncate()
    f.write(f"pid {os.getpid()} on {os.uname().nodename}")
    f.flush()
    try:
        yield
    finally:
        fcntl.flock(f, fcntl.LOCK_UN)
        f.close()


def _mpi_initialize(options: dict) -> None:
    """Turn this MPI job into a Dask cluster; only rank 1 returns (it drives the sweep).

    Rank 0 runs the scheduler, ranks >= 2 one single-threaded worker each; they
    exit when rank 1 is done.
    """
    try:
        import dask_mpi
    except ImportError as exc:
        raise ParameterError(invalid("cluster", "mpi", "dask-mpi and mpi4py to be installed "
                                     "(pip install dask-mpi mpi4py; needs an MPI library)")) from exc
    kw = dict(nthreads=1, dashboard=False)
    kw.update(options)
    dask_mpi.initialize(**kw)


def _resolve_threads(directory: Path, cluster, n_workers, threads, n_points) -> int:
    """NEST threads per point: given, else as at the sweep's first run, else sized to the cores."""
    if threads is not None:
        return int(threads)
    stored = (_read_json(directory / "sweep.json") or {}).get("execution", {}).get("threads")
    if stored is not None:
        return int(stored)
    if cluster == "serial":
        return _cores()
    if cluster == "local":
        slots = n_workers or min(max(1, n_points), _cores())
        return max(1, _cores() // slots)
    return 1  # remote clusters: set threads= to the cores of one job/rank


def _resolve_workers(cluster, n_workers, threads, n_todo) -> int:
    if n_workers is not None:
        return int(n_workers)
    if cluster == "local":
        return max(1, min(n_todo, _cores() // threads))
    return max(1, n_todo)


class _Progress:
    """tqdm bar of points with done / running / failed and an ETA."""

    def __init__(self, total: int, done: int, enabled: bool, name: str):
        self.total, self.done, self.failed, self.running = total, done, 0, 0
        self.bar = None
        if enabled:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, initial=done, desc=name, unit="point", dynamic_ncols=True)
            self._post()

    def _post(self):
        if self.bar is not None:
            self.bar.set_postfix(done=self.done, running=self.running, failed=self.failed, refresh=True)

    def update(self, *, done=0, failed=0, running=None):
        self.done += done
        self.failed += failed
        if running is not None:
            self.running = running
        if self.bar is not None:
            if done or failed:
                self.bar.update(done + failed)
            self._post()

    def write(self, msg: str):
        if self.bar is not None:
            self.bar.write(msg)
        else:
            print(msg, file=sys.stderr)

    def close(self):
        if self.bar is not None:
            self.bar.close()


def _manifest(spec, points, states, execution) -> dict:
    entries = []
    for p in points:
        st = states.get(p.label, {}) if p.valid else {}
        entries.append({
            "index": list(p.index), "coords": p.coords, "values": p.values, "label": p.label,
            "name": p.name if p.valid else None,
            "status": "failed" if not p.valid else st.get("status", "pending"),
            "error": p.error if not p.valid else st.get("error"),
            "attempts": st.get("attempts", 0), "started": st.get("started"),
            "finished": st.get("finished"),
            "seconds": (st["finished"] - st["started"]) if st.get("finished") and st.get("started") else None,
            "timings": st.get("timings", {}),
            **({"result": st["result"]} if st.get("result") else {}),
        })
    counts = {s: sum(e["status"] == s for e in entries) for s in ("complete", "failed", "running", "pending")}
    return {"format": SWEEP_FORMAT, "name": spec.name, "dims": list(spec.dims), "shape": list(spec.shape),
            "run": list(spec.run), "execution": execution, "counts": counts, "points": entries,
            "updated": time.time()}


def run_sweep(spec, directory, *, cluster="auto", n_workers: int | None = None,
              threads: int | None = None, cluster_options: dict | None = None,
              rerun_failed: bool = True, progress: bool = True, combine_results: bool = True,
              strict: bool = False, fast_theory: bool = True) -> xr.Dataset:
    """Run (or resume) a sweep in ``directory`` and return the combined Dataset.

    Parameters
    ----------
    spec : SweepSpec or dict or path
        The sweep; a dict is validated, a path (JSON/TOML) is read.
    directory : path
        Sweep directory (created).  Running again skips complete points.
    cluster : {"auto", "local", "serial", "slurm", "mpi"} or str or distributed.Client, default: "auto"
        ``local``: a ``distributed.LocalCluster`` of single-threaded workers
        (threads waiting for the points' own processes when simulating, worker
        processes for theory points; scripts need the ``if __name__ ==
        "__main__":`` guard); ``slurm``: ``dask_jobqueue.SLURMCluster``, one job per
        worker; ``mpi``: ``dask_mpi.initialize()`` (launch with mpirun; rank 0
        scheduler, rank 1 this code, the others workers); ``serial``: one point
        after another from this process; a scheduler address or a Client uses
        that cluster.  ``auto``: ``serial`` for theory-only sweeps (each point
        takes well under a second), else ``local``.
    n_workers : int, optional
        Workers (points at a time).  Default: as many as fit the cores with
        ``threads`` each (local), or one per pending point (slurm).
    threads : int, optional
        NEST threads per point (``simulation.threads``) unless the spec sets
        it.  Default: cores // n_workers, fixed at the sweep's first run so a
        resumed sweep keeps the same parameters.
    cluster_options : dict, optional
        Keyword arguments for the cluster class (e.g. ``queue``, ``account``,
        ``walltime`` for SLURM).
    rerun_failed : bool, default: True
        Re-run points that failed before (False: keep them failed).
    progress : bool, default: True
        Show a tqdm bar with points done / running / failed and an ETA.
    combine_results : bool, default: True
        Write ``sweep.zarr`` and return it; else return ``None``.
    strict : bool, default: False
        Raise :class:`ParameterError` before running anything if any point's
        parameters are invalid (default: those points fail alone).
    fast_theory : bool, default: True
        Theory-only sweeps run serially (``cluster="serial"`` or ``"auto"``) whose
        swept and coupled parameters are among chi, chi_I, g and rate_ext, all
        other parameters being shared, build one structure and derive each
        point's from it (:func:`mam_xr.theory.rescale_cc`; see docs/sweeps.md),
        compute the points in this process and write their results in one file.
        Each point's result is the same ``integrate`` / ``fixed_point`` call as
        with a rebuilt structure.  False: every point builds its structure
        (:func:`mam_xr.structure.build`) and writes its own ``result.nc``.  The manifest's ``execution`` says
        which path ran (``theory_path``) and why.

    Returns
    -------
    xr.Dataset
        Lazily opened ``sweep.zarr``: every point's result variables with the
        sweep dimension(s) added (NaN at failed points), the swept and coupled
        parameters as coordinates, ``point_complete`` (sweep dims) and the
        manifest in attrs.  See :func:`combine`.

    Raises
    ------
    ParameterError
        The spec is invalid (or, with ``strict``, a point is).
    StoreError
        Another process is running a sweep in ``directory``.
    """
    if cluster == "mpi":
        # Before anything else: every rank runs this, only rank 1 comes back.
        _mpi_initialize(dict(cluster_options or {}))
        cluster_options = {}
    if isinstance(spec, (str, Path)):
        spec = load_spec(spec)
    spec = _validate_spec(spec)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "points").mkdir(exist_ok=True)
    if cluster == "auto":
        cluster = "local" if "simulate" in spec.run else "serial"
    if isinstance(cluster, str) and cluster not in CLUSTERS and "://" not in cluster:
        raise ParameterError(invalid("cluster", cluster, f"one of {CLUSTERS}, a scheduler address or a Client"))
    with _lock(directory):
        n_points = sum(p.valid for p in plan(spec))
        threads = _resolve_threads(directory, cluster, n_workers, threads, n_points)
        points = plan(spec, threads=threads)
        if "simulate" in spec.run and any(p.valid for p in points):
            # The spec may set the threads itself: size the workers by what points use.
            threads = max(p.params.simulation.threads for p in points if p.valid)
        bad = [p for p in points if not p.valid]
        if strict and bad:
            raise ParameterError("; ".join(f"point {p.coords}: {p.error}" for p in bad))
        execution = {"cluster": cluster if isinstance(cluster, str) else "client", "n_workers": n_workers,
                     "threads": threads, "cores": _cores()}
        _atomic_write_json(directory / "sweep.json", {"format": SWEEP_FORMAT,
                                                      "spec": json.loads(spec.to_json()),
                                                      "execution": execution})
        states: dict[str, dict] = {}
        todo: dict[str, Point] = {}
        for p in (p for p in points if p.valid):
            pdir = directory / "points" / p.name
            info = _read_json(pdir / "point.json") or {}
            attempts = int(info.get("attempts", 0))
            done = info.get("status") == "complete" and _result_path(directory, p.name, info).exists() \
                and info.get("label") == p.label
            if done or (info.get("status") == "failed" and not rerun_failed):
                states[p.label] = info
                continue
            states[p.label] = {"status": "pending", "attempts": attempts}
            todo.setdefault(p.label, p)
        for p in bad:
            warnings.warn(f"sweep {spec.name}: point {p.coords} is invalid and is skipped: {p.error}",
                          stacklevel=2)

        def write_manifest():
            _atomic_write_json(directory / "manifest.json", _manifest(spec, points, states, execution))

        use_fast = False
        if "simulate" not in spec.run and todo:
            if not fast_theory:
                reason = "fast_theory=False"
            elif cluster != "serial":
                reason = (f"cluster {cluster if isinstance(cluster, str) else 'client'} "
                          "(only serial sweeps share a structure)")
            else:
                reason = _fast_theory_reason(spec, todo.values())
            use_fast = reason is None
            execution["theory_path"] = "one structure, rescaled per point" if use_fast else "per point"
            if not use_fast:
                execution["theory_path_reason"] = reason
        write_manifest()
        n_workers = 1 if use_fast else _resolve_workers(cluster, n_workers, threads, len(todo))
        execution["n_workers"] = n_workers
        n_complete = sum(1 for s in states.values() if s.get("status") == "complete")
        bar = _Progress(total=n_complete + len(todo), done=n_complete, enabled=progress, name=spec.name)
        try:
            if use_fast:
                execution["structure_builds"] = _run_theory_fast(spec, directory, todo, states, bar,
                                                                 write_manifest)
            elif todo:
                execution["n_workers"] = _run_points(spec, directory, todo, states, cluster, n_workers,
                                                     threads, cluster_options or {}, bar, write_manifest,
                                                     reuse=fast_theory)
        finally:
            bar.close()
            write_manifest()
        failed = {lab: s.get("error") for lab, s in states.items() if s.get("status") == "failed"}
        for lab, err in failed.items():
            p = next(q for q in points if q.label == lab)
            warnings.warn(f"sweep {spec.name}: point {p.coords} failed: {err} "
                          f"(log: {directory / 'points' / p.name / 'log.txt'})", stacklevel=2)
        if not combine_results:
            return None
        return combine(directory)


def _prepare_point(spec: SweepSpec, directory: Path, p: Point, attempts: int, reuse: bool = True) -> Path:
    pdir = directory / "points" / p.name
    if pdir.exists():  # incomplete or failed before: start clean, keep the old log
        old_log = (pdir / "log.txt").read_bytes() if (pdir / "log.txt").exists() else b""
        shutil.rmtree(pdir)
        pdir.mkdir(parents=True)
        if old_log:
            (pdir / "log.txt").write_bytes(old_log[-100_000:])
    else:
        pdir.mkdir(parents=True)
    task = {"label": p.label, "coords": p.coords, "values": p.values, "params": p.params.to_json(),
            "run": list(spec.run), "theory_options": spec.theory_options,
            "analysis_options": spec.analysis_options, "attempt": attempts, "reuse_structure": reuse}
    _atomic_write_json(pdir / "task.json", task)
    return pdir


def _run_points(spec, directory, todo, states, cluster, n_workers, threads, options, bar, write_manifest,
                reuse: bool = True):
    simulate_ = "simulate" in spec.run
    prepared = {}
    for label, p in todo.items():
        attempts = int(states[label].get("attempts", 0)) + 1
        prepared[label] = (_prepare_point(spec, directory, p, attempts, reuse), attempts)

    def record(label, info):
        pdir, attempts = prepared[label]
        info = dict(info)
        info["attempts"] = attempts
        _atomic_write_json(pdir / "point.json", info)
        states[label] = info
        ok = info.get("status") == "complete"
        if not ok:
            bar.write(f"point {todo[label].coords} failed: {info.get('error')}")
        bar.update(done=int(ok), failed=int(not ok))
        write_manifest()

    if cluster == "serial":
        for label, (pdir, attempts) in prepared.items():
            states[label] = {"status": "running", "started": time.time(), "attempts": attempts}
            bar.update(running=1)
            write_manifest()
            info = _execute(str(pdir), threads, subprocess_=simulate_)
            bar.update(running=0)
            record(label, info)
        return 1

    from distributed import wait

    memory = None
    if cluster in ("local", "slurm") and simulate_:
        memory = max(point_memory(p.params) for p in todo.values())
    if cluster == "local" and memory:
        fit = max(1, int(_available_memory() // memory))
        if fit < n_workers:
            bar.write(f"memory: {fit} of {n_workers} workers fit ({memory / 1e9:.1f} GB per point); "
                      f"using {fit}")
            n_workers = fit
    c = _start_cluster(cluster, n_workers=n_workers, threads=threads, memory=memory, options=options,
                       subprocesses=simulate_)
    try:
        write_manifest()
        futures = {}
        for label, (pdir, attempts) in prepared.items():
            fut = c.client.submit(_execute, str(pdir), threads, simulate_, pure=False,
                                  key=f"mam_xr-point-{label}-{attempts}")
            futures[fut] = label
            states[label] = {"status": "pending", "attempts": attempts}
        pending = set(futures)
        while pending:
            try:
                finished, pending = wait(pending, timeout=2.0, return_when="FIRST_COMPLETED")
            except TimeoutError:  # nothing finished in 2 s: refresh the progress bar
                finished = set()
            running = 0
            for label in (futures[f] for f in pending):
                # The point's own process says when it starts (queued tasks do not count).
                st = _read_json(prepared[label][0] / "point.json") or {}
                if st.get("status") == "running":
                    running += 1
                    if states[label].get("status") != "running":
                        states[label] = {**states[label], "status": "running", "started": st.get("started")}
            for fut in finished:
                label = futures[fut]
                try:
                    info = fut.result()
                except Exception as exc:  # noqa: BLE001 - a lost worker fails the point only
                    info = {"status": "failed", "error": f"{type(exc).__name__}: {exc}", "label": label,
                            "finished": time.time()}
                record(label, info)
            bar.update(running=running)
            if not finished:
                write_manifest()
    finally:
        c.close()
    return c.n_slots


# --------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------

def sweep_status(directory) -> dict:
    """The manifest of a sweep directory (points, status, errors, timings), refreshed from the points."""
    directory = Path(directory)
    manifest = _read_json(directory / "manifest.json")
    if manifest is None:
        raise StoreError(invalid("directory", str(directory), "a sweep directory with a manifest.json"))
    for e in manifest["points"]:
        if e.get("name"):
            info = _read_json(directory / "points" / e["name"] / "point.json") or {}
            if info.get("label") == e["label"]:
                for k in ("status", "error", "started", "finished", "timings", "result"):
                    if k in info:
                        e[k] = info[k]
                if info.get("status") == "complete" and not _result_path(directory, e["name"], info).exists():
                    e["status"] = "failed"
                    e["error"] = f"{_result_path(directory, e['name'], info).name} is missing"
    manifest["counts"] = {s: sum(e["status"] == s for e in manifest["points"])
                          for s in ("complete", "failed", "running", "pending")}
    return manifest


def _nan_like(template: xr.Dataset) -> xr.Dataset:
    out = template.copy()
    for name, var in template.data_vars.items():
        if var.dtype.kind == "f":
            out[name] = xr.full_like(var, np.nan)
        elif var.dtype.kind == "b":
            out[name] = xr.full_like(var, False)
        elif var.dtype.kind in "iu":
            out[name] = xr.full_like(var, np.nan, dtype=float)
        else:
            out[name] = xr.full_like(var, "", dtype=object) if var.dtype.kind == "O" else var
    return out


def combine(directory, *, write: bool = True) -> xr.Dataset:
    """Combine the points of a sweep directory into one Dataset with the sweep dimension(s).

    Each complete point's ``result.nc`` is opened and placed at its
    coordinates; failed or pending points hold NaN (False for flags).  The
    swept parameters are dimension coordinates; other parameters that vary
    between points (coupled ones such as ``chi_I``) are coordinates on the sweep
    dims.  ``point_complete`` (bool, sweep dims) marks the points with results.
    With ``write`` (default) the result is saved to ``sweep.zarr`` next to the
    points and returned lazily opened from there.
    """
    directory = Path(directory)
    manifest = sweep_status(directory)
    spec = SweepSpec.model_validate((_read_json(directory / "sweep.json") or {})["spec"])
    dims, shape = list(manifest["dims"]), tuple(manifest["shape"])
    entries = manifest["points"]
    datasets: dict[tuple, xr.Dataset] = {}
    batches: dict = {}
    for e in entries:
        if e["status"] == "complete":
            datasets[tuple(e["index"])] = _open_result(_result_path(directory, e["name"], e), e["label"],
                                                       batches)
    # Up to ~1 GB of results are combined in memory (fast); beyond, lazily with Dask.
    in_memory = sum(ds.nbytes for ds in datasets.values()) < 2**30
    datasets = {k: (ds.load() if in_memory else ds.chunk()) for k, ds in datasets.items()}
    template = next(iter(datasets.values()), xr.Dataset())
    empty = _nan_like(template)
    varying = _varying_params(entries, spec)
    flat = []
    for e in entries:
        ds = datasets.get(tuple(e["index"]), empty)
        ds = _without_attrs(ds)
        flat.append(ds)
    nested = np.empty(shape, dtype=object)
    for e, ds in zip(entries, flat):
        nested[tuple(e["index"])] = ds
    combined = xr.combine_nested(nested.tolist(), concat_dim=dims, combine_attrs="drop",
                                 data_vars="all", coords="minimal", compat="override", join="outer")
    names = list(spec.parameters)
    for k, dim in enumerate(dims):
        if spec.mode == "zip":
            combined = combined.assign_coords({dim: list(spec.parameters[names[0]])})
            for other, dname in zip(names[1:], _dim_names(spec.parameters)[1:]):
                combined = combined.assign_coords({dname: (dim, list(spec.parameters[other]))})
        else:
            combined = combined.assign_coords({dim: list(spec.parameters[names[k]])})
    for cname, values in varying.items():
        arr = np.empty(shape, dtype=object)
        for e in entries:
            arr[tuple(e["index"])] = values[tuple(e["index"])]
        arr = _homogeneous(arr)
        combined = combined.assign_coords({cname: (dims, arr)})
    complete = np.zeros(shape, dtype=bool)
    for e in entries:
        complete[tuple(e["index"])] = e["status"] == "complete"
    combined = combined.transpose(*dims, ...)
    if not in_memory:
        # One chunk per point along the sweep dims, whole along the others (Zarr needs
        # uniform chunks; statistics such as rate_distribution differ in length per point).
        combined = combined.chunk({d: (1 if d in dims else -1) for d in combined.dims})
    combined["point_complete"] = (dims, complete, {"long_name": "the point has results", "units": "1"})
    for dim in dims:
        combined[dim].attrs.update(long_name=f"swept parameter {dim}")
    combined.attrs = {
        "format": SWEEP_FORMAT, "name": spec.name, "run": "+".join(spec.run),
        "spec": spec.to_json(),
        "errors": json.dumps({json.dumps(e["coords"]): e["error"] for e in entries if e["status"] == "failed"}),
        "labels": json.dumps({json.dumps(e["coords"]): e["label"] for e in entries}),
    }
    if not write:
        return combined
    _write_zarr(combined, directory / "sweep.zarr", sweep_dims=dims)
    return open_sweep(directory)


def _homogeneous(arr: np.ndarray) -> np.ndarray:
    vals = [v for v in arr.ravel() if v is not None]
    if vals and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in vals):
        return np.array([np.nan if v is None else v for v in arr.ravel()], dtype=float).reshape(arr.shape)
    if vals and all(isinstance(v, bool) for v in vals):
        return arr.astype(bool)
    return np.array(["" if v is None else str(v) for v in arr.ravel()], dtype=object).reshape(arr.shape)


def _varying_params(entries, spec) -> dict[str, dict]:
    """Leaf parameters (other than the swept ones) that differ between points -> {index: value}."""
    flat_by_point = {}
    for e in entries:
        if e.get("label"):
            try:
                p = spec.base.params(e["values"])
            except ParameterError:
                continue
            flat_by_point[tuple(e["index"])] = _leaves(p.model_dump(mode="json"))
    if not flat_by_point:
        return {}
    swept = {_parameter_path(n) for n in spec.parameters}
    keys = set().union(*(f.keys() for f in flat_by_point.values()))
    out = {}
    for key in sorted(keys):
        if key in swept or key[-1] == "threads":
            continue
        vals = [f.get(key) for f in flat_by_point.values()]
        if any(json.dumps(v) != json.dumps(vals[0]) for v in vals):
            name = key[-1] if key[-1] not in out else "_".join(key[-2:])
            out[name] = {idx: f.get(key) for idx, f in flat_by_point.items()}
            for e in entries:
                out[name].setdefault(tuple(e["index"]), None)
    return out


def _leaves(d: dict, prefix=()) -> dict[tuple, Any]:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_leaves(v, prefix + (k,)))
        else:
            out[prefix + (k,)] = v
    return out


def open_sweep(directory) -> xr.Dataset:
    """The combined Dataset of a sweep directory, lazily opened from ``sweep.zarr``."""
    path = Path(directory) / "sweep.zarr"
    if not path.exists():
        raise StoreError(invalid("directory", str(directory), "a sweep directory with sweep.zarr "
                                 "(run the sweep, or call mam_xr.sweep.combine)"))
    ds = xr.open_zarr(str(path), consolidated=False, zarr_format=3)
    # Small things eagerly: string coords as plain numpy str (as in every mam_xr
    # Dataset), the non-index coords (coupled parameters) and the completion flags.
    # They are read without Dask (computing a dask array imports distributed, ~0.3 s).
    plain = xr.open_dataset(str(path), engine="zarr", chunks=None, consolidated=False, zarr_format=3)
    fixes = {}
    for name, var in ds.coords.items():
        if var.dtype.kind in "OT":
            fixes[name] = (var.dims, np.array(plain[name].values.tolist(), dtype=str), var.attrs)
        elif name not in ds.indexes:
            fixes[name] = plain[name].load()
    ds = ds.assign_coords(fixes)
    if "point_complete" in ds:
        ds["point_complete"] = plain["point_complete"].load()
    return ds


# --------------------------------------------------------------------------------------
# Command line (used by runners/)
# --------------------------------------------------------------------------------------

def main(argv=None) -> int:
    """``python -m mam_xr.sweep SPEC DIRECTORY [options]``: run or resume a sweep."""
    import argparse

    ap = argparse.ArgumentParser(prog="mam_xr.sweep", description=main.__doc__)
    ap.add_argument("spec", help="sweep spec (JSON or TOML)")
    ap.add_argument("directory", help="sweep directory (created; re-run to resume)")
    ap.add_argument("--cluster", default="auto", help=f"one of {CLUSTERS} or a scheduler address")
    ap.add_argument("--workers", type=int, default=None, help="points at a time")
    ap.add_argument("--threads", type=int, default=None, help="NEST threads per point")
    ap.add_argument("--option", action="append", default=[], metavar="KEY=JSON",
                    help="cluster option, e.g. queue='\"normal\"' (repeatable)")
    ap.add_argument("--no-rerun-failed", action="store_true", help="keep failed points failed")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    options = {}
    for item in args.option:
        key, _, value = item.partition("=")
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
    return run_and_summarise(args.spec, args.directory, cluster=args.cluster,
                             n_workers=args.workers, threads=args.threads,
                             cluster_options=options, rerun_failed=not args.no_rerun_failed,
                             progress=not args.no_progress)


def run_and_summarise(spec, directory, **run_kwargs) -> int:
    """Run a sweep for a command-line entry point and return its exit code.

    Prints the counts of complete and failed points; 0 when none failed, 1 when
    some did, 2 when the sweep could not run (the error goes to stderr).
    ``run_kwargs`` are passed to :func:`run_sweep`.
    """
    try:
        run_sweep(spec, directory, **run_kwargs)
    except MamXrError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    st = sweep_status(directory)
    print(f"sweep {st['name']}: {st['counts']['complete']} complete, {st['counts']['failed']} failed; "
          f"results in {Path(directory) / 'sweep.zarr'}")
    return 0 if st["counts"]["failed"] == 0 else 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
