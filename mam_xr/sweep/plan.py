"""The plan of a sweep: its points in result order, each with validated Params or its error."""

from __future__ import annotations

from dataclasses import dataclass
from itertools import product
from typing import Any, Optional

from ..errors import ParameterError, invalid
from ..params import parameter_path
from .spec import SweepSpec, dim_names, validate_spec

__all__ = ["Point", "plan"]


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
    spec = validate_spec(spec)
    names = list(spec.parameters)
    dims = dim_names(spec.parameters)
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
            refer[c.parameter] = refer[parameter_path(c.parameter)[-1]] = case.value
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
