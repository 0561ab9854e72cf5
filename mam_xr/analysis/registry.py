"""The registry of statistics and of their definition parameters.

A statistic is one :class:`Statistic` record: its name, the definition
parameters it depends on, the kernel parts it reads from the one pass over the
spikes (:mod:`mam_xr.analysis.kernels`), the other statistics it builds on,
the function that turns the merged per-population arrays into its Dataset, the
value that fills missing entries when runs are concatenated, and the figures a
report draws of it by default.  :func:`register` adds one; everything else
(``analyze``, the cache, the report, the docs table) reads the registry.

A definition parameter is one :class:`Parameter` record (name, default, kind,
text); :func:`resolve_definition` validates a set of overrides against a run.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from ..errors import ParameterError, invalid

__all__ = ["Parameter", "Figure", "Statistic", "PARAMETERS", "REGISTRY", "register",
           "add_parameter", "resolve_definition", "definition_of", "statistic", "markdown_table"]

#: Version of the statistic definitions; a change invalidates cached results.
ANALYSIS_VERSION = "mam_xr.analysis/1"


@dataclass(frozen=True)
class Parameter:
    """A definition parameter of the statistics.

    ``kind`` selects the check: ``"window"`` (t_min_ms/t_max_ms, checked together),
    ``"bin_ms"`` (a bin width in (0, window], a multiple of dt), ``"ms>=0"``,
    ``"int>0"``, ``"choice"`` (one of ``choices``) or ``"custom"`` (``check``).
    """

    name: str
    default: Any
    kind: str
    doc: str
    choices: tuple = ()
    check: Callable[[Any], Any] | None = None     # kind "custom": value -> normalised value (raises)


@dataclass(frozen=True)
class Figure:
    """A figure a report draws of one variable of a statistic by default.

    ``kind`` names a figure family of the report (:mod:`mam_xr.report`):
    ``"population_heatmap"`` (area × pop), ``"time_heatmap"`` (area × time),
    ``"time_series"``, ``"area_series"``, ``"box"`` (one box per population over
    areas; all box figures share one panel row), ``"fc"`` (area × area matrix;
    ``reference`` names the experimental matrix variable).
    """

    kind: str
    variable: str
    label: str = ""          # short name for titles and axes, e.g. "Fano factor"
    reference: str = ""
    order: int = 0           # position among the figures of its kind (then registry order)


@dataclass(frozen=True)
class Statistic:
    """One statistic of a run's spikes.

    Parameters
    ----------
    name : str
        Name of the result (``analysis/<name>`` in the run store, key of ``analyze``).
    summary : str
        One line: what it measures.
    variables : str
        Its variables with dims and units (docs table).
    definition : str
        The exact definition (windows, bins, neuron choice) with a docs/model.md
        equation number (docs table).
    depends : tuple of str
        Definition parameters (:data:`PARAMETERS`) it depends on: a change
        recomputes it and nothing else.
    build : callable(Inputs) -> xr.Dataset
        Turns the merged kernel output into its Dataset (see
        :class:`mam_xr.analysis.compute.Inputs`).
    parts : tuple of str
        Kernel parts it reads (:data:`mam_xr.analysis.kernels.PART_FUNCTIONS`).
    needs : tuple of str
        Other statistics whose Datasets it builds on (computed alongside, not returned).
    structure : bool
        It reads the run's structure (``weight_mean``, ``indegree``); runs without
        one are refused before the pass over the spikes.
    run_definition : callable(RunStore) -> dict, optional
        Further definition entries read from the run (e.g. a time constant).
    fill_value : float
        Value of entries a run lacks when several runs are concatenated.
    figures : tuple of Figure
        Default figures of a report.
    """

    name: str
    summary: str
    variables: str
    definition: str
    depends: tuple[str, ...]
    build: Callable[[Any], Any]
    parts: tuple[str, ...] = ()
    needs: tuple[str, ...] = ()
    structure: bool = False
    run_definition: Callable[[Any], dict] | None = None
    fill_value: float = math.nan
    figures: tuple[Figure, ...] = field(default_factory=tuple)


#: Definition parameters by name, in documentation order.
PARAMETERS: dict[str, Parameter] = {}
#: Statistics by name, in the order ``analyze`` returns them.
REGISTRY: dict[str, Statistic] = {}


def add_parameter(p: Parameter) -> Parameter:
    """Register a definition parameter (its name must be new)."""
    if p.name in PARAMETERS:
        raise ValueError(f"definition parameter {p.name!r} is already registered")
    PARAMETERS[p.name] = p
    return p


def register(stat: Statistic) -> Statistic:
    """Register a statistic; its parameters, parts and needs must exist already."""
    from .kernels import PART_FUNCTIONS

    if stat.name in REGISTRY:
        raise ValueError(f"statistic {stat.name!r} is already registered")
    for p in stat.depends:
        if p not in PARAMETERS:
            raise ValueError(f"statistic {stat.name!r}: unknown definition parameter {p!r}")
    for p in stat.parts:
        if p not in PART_FUNCTIONS:
            raise ValueError(f"statistic {stat.name!r}: unknown kernel part {p!r}")
    for n in stat.needs:
        if n not in REGISTRY:
            raise ValueError(f"statistic {stat.name!r}: needs {n!r}, which is not registered (yet)")
    REGISTRY[stat.name] = stat
    return stat


def statistic(name: str) -> Statistic:
    """The registered statistic ``name`` (ParameterError naming the choices otherwise)."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise ParameterError(invalid("statistics", name, f"names from {tuple(REGISTRY)}")) from None


def defaults() -> dict[str, Any]:
    """Definition parameters and their defaults."""
    return {n: p.default for n, p in PARAMETERS.items()}


# --------------------------------------------------------------------------------------
# Resolving a definition against a run
# --------------------------------------------------------------------------------------

def _number(name, v):
    if not isinstance(v, (int, float)) or isinstance(v, bool) or not np.isfinite(v):
        raise ParameterError(invalid(name, v, "a finite number of ms"))
    return float(v)


def _check(p: Parameter, v, d: dict, run):
    if p.kind == "window":
        return v
    if p.kind == "bin_ms":
        v = _number(p.name, v)
        if not 0.0 < v <= d["t_max_ms"] - d["t_min_ms"]:
            raise ParameterError(invalid(p.name, v, "a bin width in (0, t_max_ms - t_min_ms]"))
        if abs(v / run.dt - round(v / run.dt)) > 1e-6:
            raise ParameterError(invalid(p.name, v, f"a multiple of the simulation step dt={run.dt} ms"))
        return v
    if p.kind == "ms>=0":
        v = _number(p.name, v)
        if v < 0:
            raise ParameterError(invalid(p.name, v, f"{p.doc} (>= 0 ms)"))
        return v
    if p.kind == "int>0":
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
            raise ParameterError(invalid(p.name, v, "a positive integer"))
        return int(v)
    if p.kind == "choice":
        if v not in p.choices:
            raise ParameterError(invalid(p.name, v, " or ".join(repr(c) for c in p.choices)))
        return v
    if p.kind == "custom":
        return p.check(v)
    raise ValueError(f"definition parameter {p.name!r}: unknown kind {p.kind!r}")


def resolve_definition(run, overrides: dict) -> dict:
    """Full, validated definition parameters for one run (t_max resolved to t_sim)."""
    unknown = sorted(set(overrides) - set(PARAMETERS))
    if unknown:
        raise ParameterError(invalid(unknown[0], overrides[unknown[0]],
                                     f"a definition parameter, one of {sorted(PARAMETERS)}"))
    d = {**defaults(), **overrides}
    t_sim = float(run.attrs.get("t_sim", np.nan))
    segs = run.segments()
    t_end = float(segs[-1, 1]) if len(segs) else 0.0
    if not np.isfinite(t_sim) or t_end < t_sim - 1e-9:  # incomplete run: committed time only
        t_sim = t_end
    if d["t_max_ms"] is None:
        d["t_max_ms"] = t_sim
    t_min_default = PARAMETERS["t_min_ms"].default
    if "t_min_ms" not in overrides and isinstance(d["t_max_ms"], (int, float)) \
            and d["t_max_ms"] <= t_min_default:
        # A run shorter than the default transient has nothing after it:
        # analyse it whole instead of refusing (an explicit t_min_ms is still checked).
        warnings.warn(f"run {run.path!r} ends at {d['t_max_ms']:g} ms, within the default "
                      f"{t_min_default:g} ms transient: analysing from 0 ms", stacklevel=3)
        d["t_min_ms"] = 0.0
    for name in ("t_min_ms", "t_max_ms"):
        d[name] = _number(name, d[name])
    if not 0.0 <= d["t_min_ms"] < d["t_max_ms"]:
        raise ParameterError(invalid("t_min_ms", d["t_min_ms"], f"0 <= t_min_ms < t_max_ms={d['t_max_ms']}"))
    if d["t_max_ms"] > t_sim + 1e-9:
        raise ParameterError(invalid("t_max_ms", d["t_max_ms"],
                                     f"a time within the simulated 0-{t_sim:g} ms of run {run.path!r}"))
    for name, p in PARAMETERS.items():
        d[name] = _check(p, d[name], d, run)
    return d


def definition_of(stat: Statistic, d: dict, run, fingerprint: dict) -> dict:
    """What identifies one statistic's result: its parameters, the version, the spikes."""
    out = {k: d[k] for k in stat.depends}
    out["version"] = ANALYSIS_VERSION
    out["spikes"] = fingerprint
    if stat.run_definition is not None:
        out.update(stat.run_definition(run))
    return out


def closure(names) -> list[str]:
    """``names`` and every statistic they need, needs first, in registry order."""
    want: set[str] = set()

    def add(n):
        if n not in want:
            want.add(n)
            for m in REGISTRY[n].needs:
                add(m)

    for n in names:
        add(n)
    return [n for n in REGISTRY if n in want]


# --------------------------------------------------------------------------------------
# Documentation
# --------------------------------------------------------------------------------------

def markdown_table() -> str:
    """The table of statistics of docs/analysis.md, generated from the registry."""
    rows = ["| name | what | variables (dims) | definition |", "| --- | --- | --- | --- |"]
    for s in REGISTRY.values():
        rows.append(f"| `{s.name}` | {s.summary} | {s.variables} | {s.definition} |")
    return "\n".join(rows)


def markdown_parameters() -> str:
    """The table of definition parameters of docs/analysis.md, generated from the registry."""
    rows = ["| parameter | default | used by | meaning |", "| --- | --- | --- | --- |"]
    for p in PARAMETERS.values():
        users = ", ".join(f"`{s.name}`" for s in REGISTRY.values() if p.name in s.depends)
        rows.append(f"| `{p.name}` | `{p.default!r}` | {users} | {p.doc} |")
    return "\n".join(rows)
