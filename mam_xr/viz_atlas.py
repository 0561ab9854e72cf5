"""Figure of a theory atlas (:func:`mam_xr.atlas.atlas`): rate against the swept parameter.

:func:`atlas_figure` draws every fixed-point branch of the atlas Dataset, stable
parts solid and unstable parts dashed, the folds as crosses, the values where
the integration from zero rates (upstream's procedure) converged as dots, and
simulated points when given.  Like :mod:`mam_xr.viz` it only draws; write it
to PNG/SVG/PDF with :func:`mam_xr.viz.save_static`.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import xarray as xr

import holoviews as hv

from .errors import ParameterError, invalid
from .flat import AREAS, POPS

__all__ = ["atlas_figure", "atlas_curve_data"]

_THEORY = "#222222"
_FOLD = "#d62728"
_INTEGRATION = "#1f77b4"
_SIMULATED = "#ff7f0e"


def _backends() -> None:
    import holoviews.plotting.bokeh  # noqa: F401
    import holoviews.plotting.mpl  # noqa: F401


def _opts(obj, *, bokeh: dict | None = None, mpl: dict | None = None, **common):
    obj = obj.opts(backend="bokeh", **common, **(bokeh or {}))
    return obj.opts(backend="matplotlib", **common, **(mpl or {}))


def _param(ds: xr.Dataset) -> str:
    name = ds.attrs.get("sweep_param")
    if not isinstance(ds, xr.Dataset) or name not in ds.dims or "rate" not in ds:
        raise ParameterError(invalid("atlas", type(ds).__name__,
                                     "an atlas Dataset from mam_xr.atlas.atlas"))
    return name


def _reduce(rate: xr.DataArray, area, pop) -> tuple[xr.DataArray, str]:
    """Mean over populations (of ``area`` / ``pop`` if given) and a label."""
    for dim, value, valid in (("area", area, AREAS), ("pop", pop, POPS)):
        if value is not None and value not in valid:
            raise ParameterError(invalid(dim, value, f"one of {', '.join(valid)}"))
    sel = {k: v for k, v in (("area", area), ("pop", pop)) if v is not None}
    rate = rate.sel(sel) if sel else rate
    dims = [d for d in ("area", "pop") if d in rate.dims]
    label = " ".join(str(v) for v in (area, pop) if v is not None) or "all populations"
    return (rate.mean(dims) if dims else rate), f"mean rate, {label}"


def atlas_curve_data(ds: xr.Dataset, *, area: str | None = None, pop: str | None = None) -> list[dict]:
    """The pieces the figure draws: per branch, runs of equal stability.

    Returns a list of dicts ``{"branch", "stable", "x", "y"}`` (numpy arrays);
    consecutive runs share their boundary point so that the lines join.
    """
    name = _param(ds)
    y_all, _ = _reduce(ds["rate"], area, pop)
    x = ds[name].values
    pieces = []
    for b in ds["branch"].values:
        found = ds["found"].sel(branch=b).values
        stable = ds["stable"].sel(branch=b).values
        y = y_all.sel(branch=b).values
        k = 0
        while k < x.size:
            if not found[k]:
                k += 1
                continue
            j = k
            while j + 1 < x.size and found[j + 1] and stable[j + 1] == stable[k]:
                j += 1
            end = j + 1 if j + 1 < x.size and found[j + 1] else j   # join the next run
            pieces.append({"branch": int(b), "stable": bool(stable[k]),
                           "x": x[k:end + 1], "y": y[k:end + 1]})
            k = j + 1
    return pieces


def atlas_figure(ds: xr.Dataset, *, area: str | None = None, pop: str | None = None,
                 simulated=None, show_integration: bool = True, title: str | None = None):
    """Rate against the swept parameter on every branch of an atlas.

    Parameters
    ----------
    ds : xr.Dataset
        From :func:`mam_xr.atlas.atlas`.
    area, pop : str, optional
        Plot the mean rate of this area (and/or population); default the mean
        over all populations.
    simulated : DataArray or mapping, optional
        Simulated points: a DataArray with the swept dim (and optionally
        ``area``/``pop``, reduced as the theory), or ``{value: rate}``
        (spikes/s).
    show_integration : bool, default True
        Dots where ``theory.integrate`` from zero rates converged.

    Returns
    -------
    hv.Overlay
        Stable branches solid, unstable dashed, folds as red crosses.
    """
    _backends()
    name = _param(ds)
    y_all, ylabel = _reduce(ds["rate"], area, pop)
    kdims, vdims = [hv.Dimension(name, label=name)], [hv.Dimension("rate", label=ylabel,
                                                                   unit="spikes/s")]
    elements = []
    labelled = set()
    for piece in atlas_curve_data(ds, area=area, pop=pop):
        label = "stable" if piece["stable"] else "unstable"
        curve = hv.Curve((piece["x"], piece["y"]), kdims, vdims, label=label)
        if label in labelled:                   # one legend entry per line style
            curve = curve.opts(show_legend=False)
        labelled.add(label)
        style = {} if piece["stable"] else {"bokeh": {"line_dash": "dashed"},
                                            "mpl": {"linestyle": "--"}}
        elements.append(_opts(curve, color=_THEORY, **style))
    if ds.sizes.get("fold", 0):
        fy, _ = _reduce(ds["fold_rate"], area, pop)
        folds = hv.Points((ds[f"fold_{name}"].values, fy.values), kdims + vdims, label="fold")
        elements.append(_opts(folds, color=_FOLD, marker="x", bokeh={"size": 12}, mpl={"s": 80}))
    if show_integration:
        reached = ds["integration_branch"].values
        ks = np.flatnonzero(reached >= 0)
        if ks.size:
            yy = y_all.values[ks, reached[ks]]
            dots = hv.Points((ds[name].values[ks], yy), kdims + vdims,
                             label="theory.integrate from zero converged")
            elements.append(_opts(dots, color=_INTEGRATION, bokeh={"size": 4}, mpl={"s": 8}))
    if simulated is not None:
        if isinstance(simulated, Mapping):
            sx = np.array([float(k) for k in simulated], float)
            sy = np.array([float(v) for v in simulated.values()], float)
        elif isinstance(simulated, xr.DataArray) and name in simulated.dims:
            red, _ = _reduce(simulated, area if "area" in simulated.dims else None,
                             pop if "pop" in simulated.dims else None)
            sx, sy = red[name].values.astype(float), red.values.astype(float)
        else:
            raise ParameterError(invalid("simulated", type(simulated).__name__,
                                         f"a DataArray with dim {name!r} or a mapping {{{name}: rate}}"))
        sim = hv.Points((sx, sy), kdims + vdims, label="simulation")
        elements.append(_opts(sim, color=_SIMULATED, marker="D", bokeh={"size": 8}, mpl={"s": 40}))
    overlay = hv.Overlay(elements) if elements else hv.Overlay([hv.Curve([], kdims, vdims)])
    return _opts(overlay, title=title or f"Mean-field fixed points over {name}",
                 bokeh={"width": 800, "height": 450, "legend_position": "top_left"},
                 mpl={"aspect": 1.9, "fig_inches": 9, "legend_position": "right"})
