"""Interactive figures of a run: HoloViews objects drawn with Bokeh (one concept, the
figures, kept in one module although it is long: the figures share their helpers).

Every function takes labelled data (an ``xr.DataArray``, or an ``xr.Dataset``
plus the name of a variable) and returns a HoloViews object; it draws and
never computes statistics, touches NEST or opens a store (docs/figures.md).
Hover tools show the area, the population and the value with its units; axis
labels come from the data's ``long_name`` and ``units`` attrs, and every time
axis shows the times of the data's ``time`` coordinate (this fixes upstream's
mislabelled instantaneous-rate axis; docs/upstream-differences.md).

The figures are those of the upstream tutorial (docs/figures.md lists which):

* :func:`rate_heatmap` -- time-averaged population rates, area x population
  (D.4), with a slider over any extra (sweep) dimension;
* :func:`instantaneous_rate` -- area x time heat map of the rate (D.3);
* :func:`rate_time_series` -- rate over time of all areas and chosen areas,
  with its time average (D.2, D.3);
* :func:`area_rate_time_series` -- one rate curve per chosen area (D.5 G);
* :func:`raster` -- spike rasters of chosen areas (D.5 A-C);
* :func:`box_plots` -- rates, correlation coefficients and LvR across areas,
  one box per population (D.5 D-F);
* :func:`connectivity_matrix` -- relative area-level indegrees (D.1);
* :func:`theory_vs_simulation` -- mean-field vs simulated rates;
* :func:`functional_connectivity` -- simulated vs experimental FC (D.6).

Against the swept parameter of a sweep (χ, ...; docs/sweeps.md):

* :func:`sweep_statistic`, :func:`sweep_statistics` -- rate, LvR, CC, synchrony, FC
  similarity against the swept value, per population type, layer, population or area;
* :func:`sweep_heatmap` -- area x swept value heat map;
* :func:`sweep_theory_vs_simulation` -- theory and simulation against the swept value,
  with the branches of a theory atlas (drawn with :mod:`mam_xr.viz_atlas`).

:func:`save_static` writes any of them as PNG, SVG or PDF through HoloViews'
matplotlib backend (no browser needed).  Options are set for both backends,
so ``hv.render(obj, backend="matplotlib")`` also works.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

import holoviews as hv

from .errors import ParameterError, invalid
from .flat import ABSENT, AREAS, POPS
from .viz_atlas import atlas_curve_data

__all__ = [
    "POP_LABELS", "DISPLAY_POPS", "FC_FIGURE_ORDER",
    "rate_heatmap", "instantaneous_rate", "rate_time_series", "area_rate_time_series",
    "raster", "box_plots", "connectivity_matrix", "theory_vs_simulation",
    "functional_connectivity", "save_static", "spike_table",
    "SWEEP_STATISTICS", "SWEEP_GROUPS", "sweep_statistic", "sweep_statistics", "sweep_heatmap",
    "sweep_theory_vs_simulation", "sweep_label",
]

#: Display labels of the populations (upstream's figures write 2/3 for 23).
POP_LABELS: dict[str, str] = {p: p.replace("23", "2/3") for p in POPS}

#: Population order of the figures from bottom to top (as upstream's figures).
DISPLAY_POPS: tuple[str, ...] = ("6I", "6E", "5I", "5E", "4I", "4E", "23I", "23E")

#: Area order of upstream's FC figure with its ``MSTI`` typo corrected to MSTl,
#: so all 32 areas are shown (docs/upstream-differences.md).
FC_FIGURE_ORDER: tuple[str, ...] = (
    "V1", "V2", "VP", "V4t", "V4", "VOT", "MSTd", "PITv", "PITd", "CITv", "CITd", "AITv",
    "AITd", "MDP", "V3", "V3A", "MT", "PIP", "PO", "DP", "MIP", "VIP", "LIP", "MSTl", "FEF",
    "TF", "FST", "7a", "STPp", "STPa", "46", "TH",
)

#: Colours of excitatory and inhibitory populations (upstream: E blue, I red).
COLOURS: dict[str, str] = {"E": "#1f5ea8", "I": "#c0272d"}

# Defaults for variables whose attrs lack units / long_name (docs/analysis.md).
_DEFAULT_META: dict[str, tuple[str, str]] = {
    "rate": ("spikes/s", "Rate"),
    "rate_time_series": ("spikes/s", "Rate"),
    "lvr": ("1", "LvR (irregularity)"),
    "cv_isi": ("1", "CV ISI"),
    "synchrony": ("1", "Synchrony"),
    "corrcoeff": ("1", "Correlation coefficient"),
    "corrcoef": ("1", "Correlation coefficient"),
    "area_rate": ("spikes/s", "Area rate"),
    "fc": ("1", "Pearson r"),
    "relative_indegree": ("1", "Relative indegree"),
}

# Variables drawn by default, in order of preference (names of mam_xr.analysis).
_TS_DEFAULTS = ("area_rate", "rate_time_series", "rate")
_BOX_DEFAULTS = (("rate",), ("corrcoef", "corrcoeff"), ("lvr",))

_HEIGHT = 320
_WIDTH = 900


# --- helpers -------------------------------------------------------------------

def _backends() -> None:
    """Register the Bokeh and matplotlib plotting backends (once; cheap after)."""
    import holoviews.plotting.bokeh  # noqa: F401
    import holoviews.plotting.mpl  # noqa: F401


def _opts(obj, *, bokeh: dict | None = None, mpl: dict | None = None, **common):
    """Apply options to both backends (common ones to each)."""
    obj = obj.opts(backend="bokeh", **common, **(bokeh or {}))
    return obj.opts(backend="matplotlib", **common, **(mpl or {}))


def _hover(tooltips: list[tuple[str, str]]):
    from bokeh.models import HoverTool
    return HoverTool(tooltips=tooltips)


def _dataarray(data, var: str | None, *, defaults: Sequence[str], argname: str = "data"
               ) -> xr.DataArray:
    """The DataArray to draw: ``data`` itself or ``data[var]`` (a default name if None)."""
    if isinstance(data, xr.DataArray):
        return data
    if not isinstance(data, xr.Dataset):
        raise TypeError(f"{argname} must be an xarray DataArray or Dataset, not {type(data).__name__}")
    names = list(data.data_vars)
    if var is not None:
        if var not in data.data_vars:
            raise ParameterError(invalid("var", var, f"a variable of the Dataset: {names[:10]}"))
        return data[var]
    for name in defaults:
        if name in data.data_vars:
            return data[name]
    if len(names) == 1:
        return data[names[0]]
    raise ParameterError(invalid("var", var, f"one of {names[:10]} (no default "
                                             f"{list(defaults)} in the Dataset)"))


def _require_dims(da: xr.DataArray, dims: Sequence[str], argname: str) -> None:
    missing = [d for d in dims if d not in da.dims]
    if missing:
        raise ParameterError(invalid(f"{argname}.dims", tuple(da.dims),
                                     f"dims including {tuple(dims)} (missing {tuple(missing)})"))


def _check_areas(areas, available: Sequence[str], argname: str = "areas") -> list[str]:
    areas = [areas] if isinstance(areas, str) else list(areas)
    for a in areas:
        if a not in available:
            close = ([b for b in available if b.lower() == str(a).lower()]
                     or difflib.get_close_matches(str(a), list(available), n=1))
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ParameterError(invalid(argname, a, f"areas of the data {list(available)}{hint}"))
    if not areas:
        raise ParameterError(invalid(argname, areas, "at least one area"))
    return areas


def _meta(da: xr.DataArray, default_name: str) -> tuple[str, str, str]:
    """(column name, label, units) of a variable, from its attrs or the defaults."""
    name = str(da.name) if da.name is not None else default_name
    col = "".join(c if c.isalnum() or c == "_" else "_" for c in name) or default_name
    units, label = _DEFAULT_META.get(name, _DEFAULT_META.get(default_name, ("", name)))
    units = str(da.attrs.get("units", units))
    label = str(da.attrs.get("long_name", label))
    return col, label, units


def _capital(text: str) -> str:
    return text[:1].upper() + text[1:]


def _unit_text(units: str) -> str:
    return "" if units in ("", "1", "dimensionless") else f" {units}"


def _vdim(col: str, label: str, units: str) -> hv.Dimension:
    return hv.Dimension(col, label=label, unit=None if units in ("", "1") else units)


def _time_dim(da: xr.DataArray) -> hv.Dimension:
    units = str(da["time"].attrs.get("units", "ms")) if "time" in da.coords else "ms"
    return hv.Dimension("time", label="Time", unit=units)


def _area_series(da: xr.DataArray, neurons, argname: str) -> xr.DataArray:
    """Area-level series of a (area[, pop], ...) array: N-weighted mean over pops."""
    if "pop" not in da.dims:
        return da
    if neurons is None:
        raise ParameterError(invalid("neurons", None, f"an (area, pop) DataArray of neuron numbers "
                                     f"(or a structure Dataset) to average {argname} over "
                                     "populations, or pass an area-level series"))
    w = neurons["neurons"] if isinstance(neurons, xr.Dataset) else neurons
    w = w.fillna(0.0).sel(area=da["area"], pop=da["pop"])
    out = ((da.fillna(0.0) * w).sum("pop") / w.sum("pop")).where(da.notnull().any("pop"))
    out.attrs = dict(da.attrs)
    out.name = da.name
    return out


def _time_window(da: xr.DataArray, time) -> xr.DataArray:
    _require_dims(da, ["time"], "data")
    if time is None:
        return da
    if not (isinstance(time, Sequence) and len(time) == 2):
        raise ParameterError(invalid("time", time, "a (start, stop) pair in ms"))
    out = da.sel(time=slice(*time))
    if out.sizes["time"] == 0:
        t = da["time"].values
        raise ParameterError(invalid("time", tuple(time), f"a window overlapping the data's "
                                     f"{t.min():g}-{t.max():g} ms"))
    return out


def _frames(da: xr.DataArray, core: Sequence[str], draw, *, kdims_name: str = ""):
    """Draw one frame per point of the extra (sweep) dims: an element or a HoloMap."""
    extra = [d for d in da.dims if d not in core]
    if not extra:
        return draw(da)
    frames = {}
    stacked = da.stack(_frame=extra)
    for i in range(stacked.sizes["_frame"]):
        key = stacked["_frame"].values[i]
        key = key if isinstance(key, tuple) else (key,)
        sel = dict(zip(extra, key))
        frames[tuple(_py(k) for k in key)] = draw(da.sel(sel))
    kdims = [hv.Dimension(d, unit=str(da[d].attrs.get("units", "")) or None)
             if d in da.coords else d for d in extra]
    return hv.HoloMap(frames, kdims=kdims)


def _py(x):
    return x.item() if isinstance(x, np.generic) else x


def _drop_empty_areas(da: xr.DataArray) -> xr.DataArray:
    """Areas with at least one finite value (a run of a subset of areas leaves NaN elsewhere)."""
    other = [d for d in da.dims if d != "area"]
    keep = np.isfinite(da).any(other) if other else np.isfinite(da)
    if not bool(keep.any()):
        raise ParameterError(invalid("data", da.name, "at least one finite value"))
    return da.sel(area=keep.values)


def _ordered_pops(da: xr.DataArray) -> list[str]:
    present = [str(p) for p in da["pop"].values]
    return [p for p in DISPLAY_POPS if p in present] + [p for p in present if p not in DISPLAY_POPS]


# --- D.4 time-averaged rates ----------------------------------------------------

def rate_heatmap(data, var: str | None = None, *, title: str | None = None,
                 cmap: str = "YlOrBr", logz: bool = False, clim: tuple | None = None,
                 drop_empty: bool = True):
    """Area x population heat map of time-averaged rates (upstream figure D.4, docs/figures.md).

    Parameters
    ----------
    data : xr.DataArray or xr.Dataset
        Values with dims (area, pop) and optionally further dims (a sweep dim
        such as ``chi``, ``run``); default variable ``rate`` (spikes/s).
    var : str, optional
        Variable of a Dataset to draw (any (area, pop) statistic works).
    title, cmap, logz, clim
        Title (default from ``long_name``), colour map, log colour scale and
        colour limits (default: 0 to the maximum over all frames).
    drop_empty : bool
        Leave out areas without any value (areas that were not simulated).

    Returns
    -------
    hv.Overlay or hv.HoloMap
        ``HeatMap`` (kdims area, pop; vdims the value and ``status``: "absent"
        for TH 4E/4I, "no data" for other missing values) overlaid
        with ``Labels`` marking absent populations (TH 4E/4I) by "×".  With
        extra dims, a ``HoloMap`` over them (a slider/selector per dim).
        Populations are shown bottom to top 6I ... 2/3E, areas in the data's order.
    """
    _backends()
    da = _dataarray(data, var, defaults=("rate",))
    _require_dims(da, ["area", "pop"], "data")
    col, label, units = _meta(da, "rate")
    pops = _ordered_pops(da)
    da = da.sel(pop=pops)
    if drop_empty:
        da = _drop_empty_areas(da)
    if clim is None:
        finite = np.asarray(da.values, dtype=float)
        finite = finite[np.isfinite(finite)]
        hi = float(finite.max()) if finite.size else 1.0
        lo = float(finite[finite > 0].min()) if (logz and finite.size and (finite > 0).any()) else 0.0
        clim = (lo if logz else 0.0, hi if hi > lo else lo + 1.0)
    title = title or ("Time-averaged firing rate over populations" if col == "rate"
                      else f"{label} per population")
    fmt = "{0.000}" if units == "spikes/s" else "{0.0000}"

    def draw(frame: xr.DataArray):
        frame = frame.transpose("area", "pop")
        areas = [str(a) for a in frame["area"].values]
        vals = np.asarray(frame.values, dtype=float)
        a_idx, p_idx = np.meshgrid(np.arange(len(areas)), np.arange(len(pops)), indexing="ij")
        df = pd.DataFrame({
            "area": np.asarray(areas)[a_idx.ravel()],
            "pop": np.asarray([POP_LABELS.get(p, p) for p in pops])[p_idx.ravel()],
            col: vals.ravel(),
        })
        absent = np.array([(areas[i], pops[j]) in ABSENT for i, j in zip(a_idx.ravel(), p_idx.ravel())])
        df["status"] = np.where(absent, "absent (TH has no layer 4)",
                                np.where(np.isfinite(df[col]), "", "no data"))
        heat = hv.HeatMap(df, kdims=[hv.Dimension("area", label="Area"),
                                     hv.Dimension("pop", label="Population")],
                          vdims=[_vdim(col, label, units), "status"])
        heat = _opts(heat, cmap=cmap, colorbar=True, clim=clim, logz=logz, xrotation=90,
                     title=title,
                     bokeh=dict(clipping_colors={"NaN": "white"}, width=_WIDTH, height=_HEIGHT,
                                toolbar="above", tools=[_hover([
                         ("area", "@area"), ("population", "@pop"),
                         (label, f"@{col}{fmt}{_unit_text(units)}"), ("", "@status")])]),
                     mpl=dict(fig_inches=(12, 3.5), show_values=False, clipping_colors={"NaN": "#d9d9d9"}))
        marks = df[absent]
        labels = hv.Labels(marks.assign(mark="×"), kdims=["area", "pop"], vdims=["mark"])
        labels = _opts(labels, bokeh=dict(text_color="black", text_font_size="14pt"),
                       mpl=dict(color="black", size=14))
        return heat * labels

    return _frames(da, ["area", "pop"], draw)


# --- D.3 instantaneous rate over areas, rates over time --------------------------

def instantaneous_rate(data, var: str | None = None, *, areas: Sequence[str] | None = None,
                       time: tuple[float, float] | None = None, neurons=None,
                       cmap: str = "YlOrBr", title: str | None = None):
    """Area x time heat map of the population-rate time series (upstream figure D.3, docs/figures.md).

    Parameters
    ----------
    data : xr.DataArray or xr.Dataset
        Rate series (area[, pop], time) in spikes/s, ``time`` in ms; default
        variable ``rate_time_series``.  With a ``pop`` dim the area series is
        the N-weighted mean over populations (needs ``neurons``).
    areas : sequence of str, optional
        Areas to show, first at the bottom (default: all areas with data).
    time : (float, float), optional
        Window in ms (default: the whole series).  The axis shows these times.
    neurons : xr.DataArray or xr.Dataset, optional
        (area, pop) neuron numbers, or a structure Dataset.

    Returns
    -------
    hv.HeatMap
        kdims time (ms), area; vdim the rate (spikes/s).
    """
    _backends()
    da = _dataarray(data, var, defaults=_TS_DEFAULTS)
    _require_dims(da, ["area", "time"], "data")
    da = _time_window(_area_series(da, neurons, "the rate time series"), time)
    if areas is None:
        da = _drop_empty_areas(da)
    areas = _check_areas(areas if areas is not None else
                         [str(a) for a in da["area"].values], [str(a) for a in da["area"].values])
    da = da.sel(area=areas).transpose("area", "time")
    col, label, units = _meta(da, "rate")
    t = np.asarray(da["time"].values, dtype=float)
    df = pd.DataFrame({"time": np.tile(t, len(areas)), "area": np.repeat(areas, t.size),
                       col: np.asarray(da.values, dtype=float).ravel()})
    title = title or f"Instantaneous firing rate over areas, {t.min():g}–{t.max():g} ms"
    heat = hv.HeatMap(df, kdims=[_time_dim(da), hv.Dimension("area", label="Area")],
                      vdims=[_vdim(col, label, units)])
    return _opts(heat, cmap=cmap, colorbar=True, clim=(0, None), title=title,
                 bokeh=dict(width=_WIDTH, height=max(_HEIGHT, 14 * len(areas)),
                            tools=[_hover([("area", "@area"), ("time", "@time{0.0} ms"),
                                           (label, f"@{col}{{0.00}}{_unit_text(units)}")])]),
                 mpl=dict(fig_inches=(12, 5), show_values=False, xticks=10))


def rate_time_series(data, var: str | None = None, *, areas: Sequence[str] = (),
                     time: tuple[float, float] | None = None, neurons=None,
                     title: str | None = None):
    """Rate over time of the whole network and of chosen areas (upstream figures D.2-D.3, docs/figures.md).

    Parameters
    ----------
    data : xr.DataArray or xr.Dataset
        Rate series (area[, pop], time) in spikes/s; default variable ``rate_time_series``.
    areas : sequence of str
        Areas drawn in addition to the network mean.
    time : (float, float), optional
        Window in ms.
    neurons : xr.DataArray or xr.Dataset, optional
        (area, pop) neuron numbers (or a structure Dataset).  Needed for a
        ``pop`` dim; with it the network mean is N-weighted, else it is the
        plain mean over areas (stated in the legend).  Either covers only the
        areas with data (the simulated ones).

    Returns
    -------
    hv.Overlay
        ``Curve`` "all areas" (kdim time in ms, vdim rate in spikes/s), one
        ``Curve`` per chosen area, and an ``HLine`` at the time-averaged rate
        of the network (its value is in the title).
    """
    _backends()
    da = _dataarray(data, var, defaults=_TS_DEFAULTS)
    _require_dims(da, ["area", "time"], "data")
    area_da = _time_window(_area_series(da, neurons, "the rate time series"), time)
    col, label, units = _meta(area_da, "rate")
    areas = _check_areas(areas, [str(a) for a in area_da["area"].values]) if areas else []
    # the network mean covers the areas with data only (a run of a subset of areas)
    with_data = _drop_empty_areas(area_da)
    if neurons is not None:
        w = (neurons["neurons"] if isinstance(neurons, xr.Dataset) else neurons).fillna(0.0)
        w = w.sum("pop") if "pop" in w.dims else w
        w = w.sel(area=with_data["area"])
        total = (with_data.fillna(0.0) * w).sum("area") / w.sum()
        total_label = "all areas (N-weighted)"
    else:
        total = with_data.mean("area")
        total_label = "all areas (mean over areas)"
    tdim = _time_dim(area_da)
    vdim = _vdim(col, label, units)
    t = np.asarray(area_da["time"].values, dtype=float)
    mean = float(np.nanmean(total.values))
    tip = [("area", "@area"), ("time", "@time{0.0} ms"),
           (label, f"@{col}{{0.00}}{_unit_text(units)}")]

    def curve(values, name, colour, width):
        df = pd.DataFrame({"time": t, col: np.asarray(values, dtype=float), "area": name})
        c = hv.Curve(df, kdims=[tdim], vdims=[vdim, "area"], label=name)
        return _opts(c, color=colour,
                     bokeh=dict(line_width=width, tools=[_hover(tip)], width=_WIDTH, height=_HEIGHT),
                     mpl=dict(linewidth=width))

    palette = hv.Cycle.default_cycles.get("default_colors", ["#30a2da", "#fc4f30", "#e5ae38"])
    layers = [curve(total.values, total_label, "black", 1.5)]
    for i, a in enumerate(areas):
        layers.append(curve(area_da.sel(area=a).values, a, palette[i % len(palette)], 1))
    hline = _opts(hv.HLine(mean, kdims=[tdim, vdim]), color="grey",
                  bokeh=dict(line_dash="dashed"), mpl=dict(linestyle="dashed"))
    title = title or (f"Rate over time, {t.min():g}–{t.max():g} ms; time-averaged "
                      f"{total_label.split(' (')[0]}: {mean:.3f}{_unit_text(units)}")
    ov = hv.Overlay(layers + [hline])
    return _opts(ov, title=title, bokeh=dict(legend_position="right"),
                 mpl=dict(fig_inches=(12, 4)))


def area_rate_time_series(data, var: str | None = None, *, areas: Sequence[str] = ("V1", "V2", "FEF"),
                          time: tuple[float, float] | None = None, neurons=None):
    """One rate curve per chosen area, stacked (upstream figure D.5 G, docs/figures.md).

    Parameters
    ----------
    data : xr.DataArray or xr.Dataset
        Rate series (area[, pop], time), default variable ``rate_time_series``.
    areas : sequence of str
        Areas, top to bottom (default V1, V2, FEF as upstream).
    time : (float, float), optional
        Window in ms.
    neurons : optional
        (area, pop) neuron numbers, needed when ``data`` has a ``pop`` dim.

    Returns
    -------
    hv.Layout
        One ``Curve`` per area (kdim time in ms, vdim rate in spikes/s), one column.
    """
    _backends()
    da = _dataarray(data, var, defaults=_TS_DEFAULTS)
    _require_dims(da, ["area", "time"], "data")
    da = _time_window(_area_series(da, neurons, "the rate time series"), time)
    areas = _check_areas(areas, [str(a) for a in da["area"].values])
    col, label, units = _meta(da, "rate")
    tdim, vdim = _time_dim(da), _vdim(col, label, units)
    t = np.asarray(da["time"].values, dtype=float)
    curves = []
    for a in areas:
        df = pd.DataFrame({"time": t, col: np.asarray(da.sel(area=a).values, dtype=float), "area": a})
        c = hv.Curve(df, kdims=[tdim], vdims=[vdim, "area"])
        curves.append(_opts(c, title=f"{a}", color="#555555",
                            bokeh=dict(width=_WIDTH, height=160, tools=[_hover([
                                ("area", "@area"), ("time", "@time{0.0} ms"),
                                (label, f"@{col}{{0.00}}{_unit_text(units)}")])]),
                            mpl=dict(fig_inches=(12, 1.8))))
    return hv.Layout(curves).cols(1)


# --- D.5 raster -------------------------------------------------------------------

def spike_table(spikes) -> pd.DataFrame:
    """Spikes as one table with columns area, pop, neuron, time (ms).

    Accepts a :class:`mam_xr.store.Spikes` selection (``run.spikes(...)``),
    a pandas DataFrame or an ``xr.Dataset`` with those columns /
    variables along one dim (``sender`` is accepted for ``neuron``), or a
    mapping ``{"V1-23E": array (n, 2) [neuron, time]}`` or
    ``{("V1", "23E"): ...}``.  ``neuron`` is the index of the neuron in its
    population (0 ... N-1).
    """
    if all(hasattr(spikes, a) for a in ("populations", "offsets", "senders", "times")):
        counts = np.diff(np.asarray(spikes.offsets))   # a mam_xr.store.Spikes selection
        labels = np.repeat(np.asarray(spikes.populations, dtype=object), counts)
        split = np.array([lab.split("-", 1) for lab in spikes.populations] or np.empty((0, 2)),
                         dtype=object).reshape(-1, 2)
        idx = np.repeat(np.arange(len(spikes.populations)), counts)
        return pd.DataFrame({"area": split[idx, 0] if len(labels) else [],
                             "pop": split[idx, 1] if len(labels) else [],
                             "neuron": np.asarray(spikes.senders, dtype=np.int64),
                             "time": np.asarray(spikes.times, dtype=float)})
    if isinstance(spikes, xr.Dataset):
        spikes = spikes.to_dataframe().reset_index()
    if isinstance(spikes, pd.DataFrame):
        df = spikes.rename(columns={"sender": "neuron", "senders": "neuron", "times": "time"})
        missing = {"area", "pop", "neuron", "time"} - set(df.columns)
        if missing:
            raise ParameterError(invalid("spikes.columns", tuple(spikes.columns),
                                         f"columns area, pop, neuron, time (missing {sorted(missing)})"))
        return df[["area", "pop", "neuron", "time"]]
    if isinstance(spikes, Mapping):
        parts = []
        for key, arr in spikes.items():
            area, pop = key.split("-", 1) if isinstance(key, str) else key
            arr = np.asarray(arr, dtype=float).reshape(-1, 2)
            parts.append(pd.DataFrame({"area": area, "pop": pop,
                                       "neuron": arr[:, 0].astype(np.int64), "time": arr[:, 1]}))
        if not parts:
            raise ParameterError(invalid("spikes", {}, "at least one population"))
        return pd.concat(parts, ignore_index=True)
    raise TypeError(f"spikes must be a DataFrame, Dataset or mapping, not {type(spikes).__name__}")


def raster(spikes, *, areas: Sequence[str] = ("V1", "V2", "FEF"), fraction: float = 1.0,
           time: tuple[float, float] | None = None, neurons=None, size: float = 1.0):
    """Spike rasters of chosen areas, E blue and I red (upstream figure D.5 A-C, docs/figures.md).

    Parameters
    ----------
    spikes
        Spikes in any form :func:`spike_table` accepts (neuron = index in its population).
    areas : sequence of str
        Areas, one raster each (default V1, V2, FEF as upstream).
    fraction : float
        Fraction (0, 1] of each population's neurons shown: the neurons with
        the lowest indices, ceil(fraction x N) of them.
    time : (float, float), optional
        Window in ms (default: the last 500 ms of the spikes, as upstream).
    neurons : xr.DataArray or xr.Dataset, optional
        (area, pop) neuron numbers (or a structure Dataset; floor(N) neurons
        exist).  Default: those of a ``Spikes`` selection, else the largest
        neuron index seen + 1 per population.

    Returns
    -------
    hv.Layout
        One ``Points`` per area: kdims time (ms), ``y`` (row; populations
        stacked 2/3E at the top, 6I at the bottom); vdims pop, kind (E/I),
        neuron.  Y ticks mark the layers.
    """
    _backends()
    if not (isinstance(fraction, (int, float)) and 0 < fraction <= 1):
        raise ParameterError(invalid("fraction", fraction, "a number in (0, 1]"))
    df = spike_table(spikes)
    if neurons is None and hasattr(spikes, "n_neurons") and hasattr(spikes, "populations"):
        neurons = {tuple(lab.split("-", 1)): int(n) for lab, n in zip(spikes.populations, spikes.n_neurons)}
    areas = _check_areas(areas, list(dict.fromkeys(map(str, df["area"].unique()))))
    if time is None:
        t1 = float(df["time"].max())
        time = (t1 - 500.0, t1)
    if not (isinstance(time, Sequence) and len(time) == 2 and time[1] > time[0]):
        raise ParameterError(invalid("time", time, "a (start, stop) pair in ms with start < stop"))
    if isinstance(neurons, xr.Dataset):
        neurons = neurons["neurons"]
    if isinstance(neurons, xr.DataArray):
        neurons = {(str(a), str(p)): float(neurons.sel(area=a, pop=p))
                   for a in neurons["area"].values for p in neurons["pop"].values}
    plots = []
    for area in areas:
        sub = df[df["area"] == area]
        present = [p for p in DISPLAY_POPS if (area, p) not in ABSENT
                   and (neurons.get((area, p), 0) > 0 if neurons is not None
                        else p in set(sub["pop"]))]
        offset, rows, ticks = 0, [], {}
        layer_rows: dict[str, list[float]] = {}
        for pop in present:  # bottom (6I) to top (23E)
            if neurons is not None:
                n = int(np.floor(neurons.get((area, pop), 0.0)))
            else:
                n = int(sub.loc[sub["pop"] == pop, "neuron"].max()) + 1
            shown = int(math.ceil(fraction * n))
            s = sub[(sub["pop"] == pop) & (sub["neuron"] < shown)
                    & (sub["time"] >= time[0]) & (sub["time"] <= time[1])]
            rows.append(pd.DataFrame({
                "time": s["time"].to_numpy(float), "y": offset + s["neuron"].to_numpy(float),
                "pop": POP_LABELS.get(pop, pop), "kind": pop[-1], "neuron": s["neuron"].to_numpy()}))
            layer = "L" + POP_LABELS.get(pop, pop)[:-1]
            layer_rows.setdefault(layer, []).extend([offset, offset + shown])
            offset += shown
        for layer, ys in layer_rows.items():  # one tick per layer, in its middle
            ticks[(min(ys) + max(ys)) / 2.0] = layer
        pts_df = (pd.concat(rows, ignore_index=True) if rows else
                  pd.DataFrame({"time": [], "y": [], "pop": [], "kind": [], "neuron": []}))
        pts = hv.Points(pts_df, kdims=[hv.Dimension("time", label="Time", unit="ms"),
                                       hv.Dimension("y", label="Neuron")],
                        vdims=[hv.Dimension("pop", label="Population"), "kind", "neuron"])
        pts = _opts(pts, color="kind", cmap=COLOURS, yticks=sorted(ticks.items()),
                    xlim=tuple(time), ylim=(0, max(offset, 1)),
                    title=f"{area} ({fraction:.0%} of neurons, {time[0]:g}–{time[1]:g} ms)",
                    show_legend=False,
                    bokeh=dict(size=max(size, 1.0) + 1, width=_WIDTH // max(1, min(3, len(areas))),
                               height=_HEIGHT, tools=[_hover([
                                   ("area", area), ("population", "@pop"),
                                   ("neuron", "@neuron"), ("time", "@time{0.0} ms")])]),
                    mpl=dict(s=size, fig_inches=(4, 4)))
        plots.append(pts)
    return hv.Layout(plots).cols(min(3, len(plots)))


# --- D.5 box plots ----------------------------------------------------------------

def box_plots(stats, variables: Sequence[str] | None = None):
    """Box plots across areas, one box per population (upstream figure D.5 D-F, docs/figures.md).

    Parameters
    ----------
    stats : xr.Dataset or xr.DataArray
        Statistics with dims (area, pop).  Absent populations (NaN) are left out.
    variables : sequence of str, optional
        Variables to draw, one panel each (default: those of ``rate``,
        ``corrcoef`` (or ``corrcoeff``), ``lvr`` present in ``stats``; merge
        the analysis Datasets ``rates``, ``correlation`` and ``irregularity``).

    Returns
    -------
    hv.Layout
        Per variable an overlay of a horizontal ``BoxWhisker`` (kdim pop, bottom
        to top 6I ... 2/3E; E boxes blue, I boxes red) and a ``Scatter`` of the
        means ("x").
    """
    _backends()
    if isinstance(stats, xr.DataArray):
        arrays = [stats]
    elif isinstance(stats, xr.Dataset):
        if variables is None:
            variables = [next(v for v in names if v in stats.data_vars)
                         for names in _BOX_DEFAULTS if any(v in stats.data_vars for v in names)]
            if not variables:
                raise ParameterError(invalid("variables", None, "names of (area, pop) variables; "
                                             f"the Dataset has {list(stats.data_vars)[:10]}"))
        arrays = [_dataarray(stats, v, defaults=()) for v in
                  ([variables] if isinstance(variables, str) else variables)]
    else:
        raise TypeError(f"stats must be an xarray Dataset or DataArray, not {type(stats).__name__}")
    panels = []
    for da in arrays:
        _require_dims(da, ["area", "pop"], "stats")
        if set(da.dims) - {"area", "pop"}:
            raise ParameterError(invalid(f"{da.name}.dims", tuple(da.dims), "exactly (area, pop); "
                                         "select one point of the other dims first"))
        col, label, units = _meta(da, "value")
        pops = _ordered_pops(da)
        df = da.sel(pop=pops).to_dataframe(name=col).reset_index()[["area", "pop", col]]
        df = df[np.isfinite(df[col].to_numpy(float))]
        order = {p: i for i, p in enumerate(pops)}
        df = df.sort_values("pop", key=lambda s: s.map(order), kind="stable")
        df["pop"] = df["pop"].map(lambda p: POP_LABELS.get(p, p))
        colours = {POP_LABELS.get(p, p): COLOURS.get(p[-1], "grey") for p in pops}
        pdim = hv.Dimension("pop", label="Population")
        vdim = _vdim(col, label, units)
        box = hv.BoxWhisker(df, kdims=[pdim], vdims=[vdim])
        finite = df[col].to_numpy(float)
        span = float(finite.max() - finite.min()) if finite.size else 1.0
        short = _DEFAULT_META.get(str(da.name), (None, label))[1]
        box = _opts(box, invert_axes=True, title=_capital(short),
                    bokeh=dict(box_fill_color=hv.dim("pop").categorize(colours), box_alpha=0.6,
                               outlier_radius=0.006 * (span or 1.0),
                               width=_WIDTH // 3, height=_HEIGHT,
                               tools=[_hover([("population", "@pop"),
                                              (label, f"@{col}{{0.0000}}{_unit_text(units)}")])]),
                    mpl=dict(fig_inches=(4, 4)))
        means = df.groupby("pop", sort=False)[col].mean()
        mdf = pd.DataFrame({"pop": means.index, col: means.to_numpy(),
                            "n_areas": df.groupby("pop", sort=False)[col].size().to_numpy()})
        mean = hv.Scatter(mdf, kdims=[pdim], vdims=[vdim, "n_areas"], label="mean")
        mean = _opts(mean, invert_axes=True, color="black",
                     bokeh=dict(marker="x", size=10, tools=[_hover([
                         ("population", "@pop"),
                         (f"mean {label}", f"@{col}{{0.0000}}{_unit_text(units)}"),
                         ("areas", "@n_areas")])]),
                     mpl=dict(marker="X", s=50))  # filled: mpl warns on edge colours of "x"
        panels.append(_opts(box * mean, title=_capital(short), show_legend=False))
    return hv.Layout(panels).cols(len(panels))


# --- D.1 connectivity ---------------------------------------------------------------

def connectivity_matrix(structure, *, relative: bool = True, title: str | None = None,
                        floor: float = 1e-6):
    """Area-level connectivity as relative indegrees (upstream figure D.1, docs/figures.md).

    Parameters
    ----------
    structure : xr.Dataset or xr.DataArray
        A structure Dataset (``area_indegree`` (area, source_area) and
        ``external_area_indegree`` (area)) or an (area, source_area) DataArray.
    relative : bool
        Divide each target row by its total indegree including the external
        input, as upstream (needs the Dataset).  False draws the values as given.
    floor : float
        Lower end of the logarithmic colour scale (zeros are shown white).

    Returns
    -------
    hv.HeatMap
        kdims source_area (x, V1 left), area (y, target, V1 at the top); vdim
        ``relative_indegree`` (or the DataArray's name).
    """
    _backends()
    if isinstance(structure, xr.Dataset):
        K = _dataarray(structure, "area_indegree", defaults=())
        if relative:
            if "external_area_indegree" not in structure.data_vars:
                raise ParameterError(invalid("structure", "Dataset without external_area_indegree",
                                             "a structure Dataset (see mam_xr.flat) or relative=False"))
            total = K.sum("source_area") + structure["external_area_indegree"]
            K = (K / total).rename("relative_indegree")
            K.attrs = {"units": "1", "long_name": "Relative indegree"}
    elif isinstance(structure, xr.DataArray):
        K = structure
        if relative and K.name != "relative_indegree":
            raise ParameterError(invalid("relative", relative, "False when passing a DataArray "
                                         "(the external indegree is needed to normalise)"))
    else:
        raise TypeError(f"structure must be an xarray Dataset or DataArray, not {type(structure).__name__}")
    _require_dims(K, ["area", "source_area"], "structure")
    col, label, units = _meta(K, "relative_indegree")
    K = K.transpose("area", "source_area")
    targets = [str(a) for a in K["area"].values]
    sources = [str(a) for a in K["source_area"].values]
    vals = np.asarray(K.values, dtype=float)
    vals = np.where(vals > 0, vals, np.nan)  # zeros masked (white), as upstream
    rows = list(reversed(range(len(targets))))  # first target at the top
    df = pd.DataFrame({
        "source_area": np.tile(sources, len(targets)),
        "area": np.repeat(np.asarray(targets)[rows], len(sources)),
        col: vals[rows].ravel()})
    heat = hv.HeatMap(df, kdims=[hv.Dimension("source_area", label="Source area"),
                                 hv.Dimension("area", label="Target area")],
                      vdims=[_vdim(col, label, units)])
    title = title or "Area-level connectivity: relative indegree of each target area"
    return _opts(heat, cmap="YlOrBr", logz=True, clim=(floor, 1.0), colorbar=True, xrotation=90,
                 clipping_colors={"NaN": "white"}, title=title,
                 bokeh=dict(width=620, height=560, tools=[_hover([
                     ("target area", "@area"), ("source area", "@source_area"),
                     (label, f"@{col}{{0.000000}}{_unit_text(units)}")])]),
                 mpl=dict(fig_inches=(7, 6), show_values=False))


# --- theory vs simulation ----------------------------------------------------------

def theory_vs_simulation(theory, simulation, *, theory_var: str | None = None,
                         simulation_var: str | None = None, draw: int = 0, logxy: bool = False):
    """Mean-field vs simulated population rates, one colour per population.

    Parameters
    ----------
    theory, simulation : xr.DataArray or xr.Dataset
        (area, pop) rates in spikes/s (default variable ``rate``; for the theory
        also ``final_rate``).
    draw : int
        Initial condition of the theory shown when it has a ``draw`` dim.
    logxy : bool
        Logarithmic axes.

    Returns
    -------
    hv.Overlay
        One ``Scatter`` per population (kdim ``theory``, vdims ``simulation``,
        area, pop; both in spikes/s) and the identity line (``Curve``).  The
        title gives the Pearson r and the mean of each.
    """
    _backends()
    th = _dataarray(theory, theory_var, defaults=("rate", "final_rate", "rates"), argname="theory")
    sim = _dataarray(simulation, simulation_var, defaults=("rate",), argname="simulation")
    if "draw" in th.dims:
        th = th.isel(draw=draw)
    for name, da in (("theory", th), ("simulation", sim)):
        _require_dims(da, ["area", "pop"], name)
        if set(da.dims) - {"area", "pop"}:
            raise ParameterError(invalid(f"{name}.dims", tuple(da.dims), "exactly (area, pop)"))
    th, sim = xr.align(th, sim, join="inner")
    units = str(sim.attrs.get("units", "spikes/s"))
    df = pd.DataFrame({
        "area": np.repeat([str(a) for a in th["area"].values], th.sizes["pop"]),
        "pop": np.tile([str(p) for p in th["pop"].values], th.sizes["area"]),
        "theory": np.asarray(th.transpose("area", "pop").values, dtype=float).ravel(),
        "simulation": np.asarray(sim.transpose("area", "pop").values, dtype=float).ravel()})
    df = df[np.isfinite(df["theory"]) & np.isfinite(df["simulation"])]
    xdim = hv.Dimension("theory", label="Theory rate", unit=units)
    ydim = hv.Dimension("simulation", label="Simulated rate", unit=units)
    u = _unit_text(units)
    palette = ["#1f5ea8", "#c0272d", "#4a90d9", "#e8706f", "#0b3d74", "#8c1016", "#7fb3e8", "#f2a5a1"]
    layers = []
    for i, pop in enumerate(p for p in POPS if p in set(df["pop"])):
        sub = df[df["pop"] == pop].assign(pop=POP_LABELS.get(pop, pop))
        sc = hv.Scatter(sub, kdims=[xdim], vdims=[ydim, "area", "pop"], label=POP_LABELS.get(pop, pop))
        layers.append(_opts(sc, color=palette[i % len(palette)],
                            bokeh=dict(size=7, marker="circle" if pop.endswith("E") else "triangle", tools=[_hover([
                                ("area", "@area"), ("population", "@pop"),
                                ("theory", f"@theory{{0.000}}{u}"),
                                ("simulation", f"@simulation{{0.000}}{u}")])]),
                            mpl=dict(s=25, marker="o" if pop.endswith("E") else "^")))
    vals = df[["theory", "simulation"]].to_numpy()
    lo = float(vals[vals > 0].min()) if logxy and (vals > 0).any() else 0.0
    hi = float(vals.max()) * 1.05 if vals.size else 1.0
    line = hv.Curve(pd.DataFrame({"theory": [lo, hi], "simulation": [lo, hi]}),
                    kdims=[xdim], vdims=[ydim], label="identity")
    line = _opts(line, color="grey", bokeh=dict(line_dash="dashed"), mpl=dict(linestyle="dashed"))
    r = float(np.corrcoef(vals.T)[0, 1]) if len(df) > 1 else float("nan")
    title = (f"Theory vs simulation: r = {r:.3f}, mean {df['theory'].mean():.2f} vs "
             f"{df['simulation'].mean():.2f}{u} ({len(df)} populations)")
    return _opts(hv.Overlay(layers + [line]), title=title, logx=logxy, logy=logxy,
                 bokeh=dict(width=620, height=520, legend_position="right"),
                 mpl=dict(fig_inches=(6, 5)))


# --- D.6 functional connectivity ---------------------------------------------------

def _fc_matrix(da: xr.DataArray, argname: str) -> xr.DataArray:
    if da.ndim != 2:
        raise ParameterError(invalid(f"{argname}.dims", tuple(da.dims), "two area dims"))
    d0, d1 = da.dims
    return da.rename({d0: "row", d1: "col"}).assign_coords(
        row=[str(a) for a in da[d0].values], col=[str(a) for a in da[d1].values])


def functional_connectivity(simulated, experimental=None, *, var: str | None = None,
                            order: str | Sequence[str] = "fc_figure"):
    """Simulated (and experimental) functional connectivity (upstream figure D.6, docs/figures.md).

    Parameters
    ----------
    simulated, experimental : xr.DataArray or xr.Dataset
        Area x area Pearson correlations (any two dims whose coords are area
        names, e.g. (area, source_area)); default variable ``fc``.  A
        Dataset holding ``fc_experimental`` (mam_xr.analysis's
        ``functional_connectivity``) supplies ``experimental`` itself.
    order : "fc_figure", "model" or sequence of str
        Area order, top to bottom and left to right: upstream's FC-figure order
        with MSTl included (:data:`FC_FIGURE_ORDER`), the model order, or explicit.

    Returns
    -------
    hv.Layout
        ``HeatMap`` of the simulated FC (kdims ``area_x``, ``area_y``; vdim
        ``fc``; diagonal omitted), and with ``experimental`` its ``HeatMap``
        and a ``Scatter`` of the off-diagonal pairs (kdim ``experimental``,
        vdim ``simulated``) whose title gives their Pearson r.
    """
    _backends()
    if (experimental is None and isinstance(simulated, xr.Dataset)
            and "fc_experimental" in simulated.data_vars):
        experimental = simulated["fc_experimental"]
    mats = {"simulated": _fc_matrix(_dataarray(simulated, var, defaults=("fc", "functional_connectivity"),
                                               argname="simulated"), "simulated")}
    if experimental is not None:
        mats["experimental"] = _fc_matrix(_dataarray(experimental, None, defaults=(
            "fc_experimental", "fc"), argname="experimental"), "experimental")
    if isinstance(order, str):
        if order not in ("fc_figure", "model"):
            raise ParameterError(invalid("order", order, "'fc_figure', 'model' or a sequence of areas"))
        order = FC_FIGURE_ORDER if order == "fc_figure" else AREAS
    common = set.intersection(*(set(m["row"].values) & set(m["col"].values) for m in mats.values()))
    areas = [a for a in order if a in common]
    if len(areas) < 2:
        raise ParameterError(invalid("order", tuple(order)[:5], "at least two areas present in the FC data"))
    n = len(areas)
    plots = []
    values = {}
    for kind, m in mats.items():
        v = np.asarray(m.sel(row=areas, col=areas).values, dtype=float).copy()
        values[kind] = v.copy()
        v[np.eye(n, dtype=bool)] = np.nan
        rows = list(reversed(range(n)))  # first area at the top
        df = pd.DataFrame({"area_x": np.tile(areas, n), "area_y": np.repeat(np.asarray(areas)[rows], n),
                           "fc": v[rows].ravel()})
        if kind == "experimental":
            src = "first" if "first hemisphere" in str(mats[kind].attrs.get("source", "")) else "second"
            title = f"Experimental FC (rs-fMRI, {src} hemisphere)"
        else:
            title = "Simulated FC"
        heat = hv.HeatMap(df, kdims=[hv.Dimension("area_x", label="Cortical area (column)"),
                                     hv.Dimension("area_y", label="Cortical area (row)")],
                          vdims=[hv.Dimension("fc", label="Pearson r")], group=kind.capitalize())
        plots.append(_opts(heat, cmap="RdBu_r", clim=(-1, 1), colorbar=True, xrotation=90,
                           clipping_colors={"NaN": "white"}, title=title,
                           bokeh=dict(width=450, height=420, tools=[_hover([
                               ("areas", "@area_y – @area_x"), ("Pearson r", "@fc{0.000}")])]),
                           mpl=dict(fig_inches=(5, 4.5), show_values=False)))
    if experimental is not None:
        iu = np.triu_indices(n, k=1)
        df = pd.DataFrame({"experimental": values["experimental"][iu], "simulated": values["simulated"][iu],
                           "pair": [f"{areas[i]} – {areas[j]}" for i, j in zip(*iu)]})
        df = df[np.isfinite(df["experimental"]) & np.isfinite(df["simulated"])]
        r = float(np.corrcoef(df["experimental"], df["simulated"])[0, 1]) if len(df) > 1 else float("nan")
        sc = hv.Scatter(df, kdims=[hv.Dimension("experimental", label="Experimental FC")],
                        vdims=[hv.Dimension("simulated", label="Simulated FC"), "pair"])
        plots.append(_opts(sc, title=f"Simulated vs experimental: r = {r:.3f}",
                           color="#444444",
                           bokeh=dict(size=4, width=360, height=380, tools=[_hover([
                               ("areas", "@pair"), ("experimental r", "@experimental{0.000}"),
                               ("simulated r", "@simulated{0.000}")])]),
                           mpl=dict(s=6, fig_inches=(4.5, 4.5))))
    return hv.Layout(plots).cols(len(plots))


# --- sweeps: statistics against the swept parameter ----------------------------------

#: What :func:`sweep_statistic` can draw: stat -> (variable names looked up in the data,
#: first found: a sweep's combined Dataset names them ``<statistic>_<variable>``; label; units).
SWEEP_STATISTICS: dict[str, tuple[tuple[str, ...], str, str]] = {
    "rate": (("rates_rate", "rate"), "Rate", "spikes/s"),
    "lvr": (("irregularity_lvr", "lvr"), "LvR", "1"),
    "cc": (("correlation_corrcoef", "corrcoef", "corrcoeff"), "Correlation coefficient", "1"),
    "synchrony": (("synchrony",), "Synchrony", "1"),
    "fc_similarity": (("functional_connectivity_fc_similarity", "fc_similarity"),
                      "FC similarity to fMRI", "1"),
    "theory_rate": (("theory_rate",), "Theory rate", "spikes/s"),
}

#: Population groups of :func:`sweep_statistic` (``by=``).
SWEEP_GROUPS: tuple[str, ...] = ("all", "type", "layer", "pop", "area")

_LAYERS = (("L2/3", "23"), ("L4", "4"), ("L5", "5"), ("L6", "6"))
_GROUP_COLOURS = ("#1f5ea8", "#c0272d", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#17becf", "#7f7f7f")
_SWEEP_DEFAULT_STATS = ("rate", "lvr", "cc", "synchrony", "fc_similarity")


def _sweep_array(data, stat: str, dim: str, argname: str = "data") -> tuple[xr.DataArray, str, str]:
    """The variable of ``stat`` in ``data`` (or ``data`` itself), its label and units; refuses an
    unknown ``stat`` and data without the sweep dimension ``dim`` by name."""
    if stat not in SWEEP_STATISTICS:
        raise ParameterError(invalid("stat", stat, f"one of {', '.join(SWEEP_STATISTICS)}"))
    names, label, units = SWEEP_STATISTICS[stat]
    if isinstance(data, xr.Dataset):
        name = next((n for n in names if n in data.data_vars), None)
        if name is None:
            raise ParameterError(invalid(argname, f"Dataset of {list(data.data_vars)[:8]}",
                                         f"a variable {' or '.join(map(repr, names))} for stat={stat!r}"))
        da = data[name]
    elif isinstance(data, xr.DataArray):
        da = data
    else:
        raise TypeError(f"{argname} must be an xarray DataArray or Dataset, not {type(data).__name__}")
    if dim not in da.dims:
        raise ParameterError(invalid("dim", dim, f"a dimension of the data, the swept parameter "
                                                 f"(the data have dims {tuple(da.dims)})"))
    return da, label, str(da.attrs.get("units", units))


def _sweep_dim(da: xr.DataArray, dim: str) -> hv.Dimension:
    units = str(da[dim].attrs.get("units", "")) if dim in da.coords else ""
    return hv.Dimension(dim, label=dim, unit=None if units in ("", "1") else units)


def sweep_label(value) -> str:
    """The label of a swept value on a categorical axis (:func:`sweep_heatmap` of unevenly
    spaced values): ``1.75``, ``2``."""
    return f"{value:g}" if isinstance(value, (int, float, np.integer, np.floating)) else str(value)


def _sweep_values(da: xr.DataArray, dim: str) -> np.ndarray:
    return np.asarray(da[dim].values if dim in da.coords else np.arange(da.sizes[dim]))


def _population_groups(da: xr.DataArray, by: str, areas, stat: str) -> list[tuple[str, dict]]:
    """(label, selection) of each group of populations of ``by``."""
    if by not in SWEEP_GROUPS:
        raise ParameterError(invalid("by", by, f"one of {', '.join(SWEEP_GROUPS)}"))
    has_pop, has_area = "pop" in da.dims, "area" in da.dims
    if by != "all" and not (has_pop if by in ("type", "layer", "pop") else has_area):
        raise ParameterError(invalid("by", by, f"'all' for stat={stat!r} (its data have dims {tuple(da.dims)})"))
    pops = [str(p) for p in da["pop"].values] if has_pop else []
    if by == "all":
        return [("all populations", {})]
    if by == "type":
        return [(name, {"pop": [p for p in pops if p.endswith(t)]})
                for name, t in (("excitatory (E)", "E"), ("inhibitory (I)", "I"))]
    if by == "layer":
        return [(name, {"pop": [p for p in pops if p[:-1] == layer]}) for name, layer in _LAYERS
                if any(p[:-1] == layer for p in pops)]
    if by == "pop":
        return [(POP_LABELS.get(p, p), {"pop": [p]}) for p in DISPLAY_POPS if p in pops]
    other = [d for d in da.dims if d != "area"]
    with_data = [str(a) for a, ok in zip(da["area"].values, np.isfinite(da).any(other).values) if ok]
    chosen = with_data if areas is None else _check_areas(areas, with_data)
    return [(a, {"area": [a]}) for a in chosen]


def _group_mean(da: xr.DataArray, sel: dict, neurons) -> xr.DataArray:
    """Mean over the selected populations (neuron-weighted with ``neurons``), NaN ignored."""
    sub = da.sel(sel) if sel else da
    dims = [d for d in ("area", "pop") if d in sub.dims]
    if not dims:
        return sub
    if neurons is None:
        return sub.mean(dims, skipna=True)
    w = neurons["neurons"] if isinstance(neurons, xr.Dataset) else neurons
    w = w.fillna(0.0).sel(area=sub["area"], pop=sub["pop"]).where(sub.notnull())
    return (sub * w).sum(dims) / w.sum(dims)


def _frame_key(frame: xr.DataArray, extra: Sequence[str]) -> dict:
    """The point of the extra dims a frame of :func:`_frames` was selected at."""
    return {d: frame[d].item() for d in extra if d in frame.coords}


def sweep_statistic(data, stat: str = "rate", *, dim: str = "chi", by: str = "type",
                    areas: Sequence[str] | None = None, neurons=None, title: str | None = None):
    """A statistic against the swept parameter: one curve per group of populations.

    Parameters
    ----------
    data : xr.Dataset or xr.DataArray
        Sweep results with the dim ``dim``: a sweep's combined Dataset
        (:func:`mam_xr.sweep.open_sweep`; ``rates_rate``, ``irregularity_lvr``,
        ``correlation_corrcoef``, ``synchrony``,
        ``functional_connectivity_fc_similarity``, ``theory_rate``) or analysis
        results concatenated along ``dim`` (``rate``, ``lvr``, ...), or the
        DataArray to draw.
    stat : str
        One of :data:`SWEEP_STATISTICS`: ``rate`` (spikes/s), ``lvr``, ``cc``
        (correlation coefficient), ``synchrony``, ``fc_similarity`` (Pearson r
        of simulated and experimental FC, one value per point), ``theory_rate``.
    dim : str
        The swept parameter, a dimension of the data.
    by : str
        Groups (:data:`SWEEP_GROUPS`): ``all`` populations, population ``type``
        (E, I), ``layer`` (2/3, 4, 5, 6), each ``pop`` (mean over areas), each
        ``area`` (mean over its populations; ``areas`` chooses, default every
        area with data).
    neurons : xr.DataArray or xr.Dataset, optional
        (area, pop) neuron numbers (or a structure Dataset): neuron-weighted
        means instead of plain means over populations.

    Returns
    -------
    hv.Overlay or hv.HoloMap
        Per group a ``Curve`` and ``Scatter`` (kdim ``dim``, vdims the
        statistic's name and ``group``); the value at each point is the mean
        of the statistic over the group's populations with data (NaN where a
        point has none, e.g. a failed point).  Further dims of the data
        (another swept parameter) give a ``HoloMap`` over them.

    Raises
    ------
    ParameterError
        An unknown ``stat`` or ``by``, data without ``dim`` or without the
        statistic, areas without data.
    """
    _backends()
    da, label, units = _sweep_array(data, stat, dim)
    groups = _population_groups(da, by, areas, stat)
    col = stat
    xdim, ydim = _sweep_dim(da, dim), _vdim(col, label, units)
    core = [d for d in (dim, "area", "pop") if d in da.dims]
    extra = [d for d in da.dims if d not in core]
    what = {"all": "mean over populations", "type": "mean over populations by type",
            "layer": "mean over populations by layer", "pop": "mean over areas per population",
            "area": "mean over populations per area"}[by]
    title = title or f"{label} ({what}{', neuron-weighted' if neurons is not None else ''})"
    u = _unit_text(units)

    def draw(frame: xr.DataArray):
        x = _sweep_values(frame, dim)
        layers = []
        for i, (name, sel) in enumerate(groups):
            y = np.asarray(_group_mean(frame, sel, neurons).transpose(dim).values, dtype=float)
            df = pd.DataFrame({dim: x, col: y, "group": name})
            colour = {"excitatory (E)": COLOURS["E"], "inhibitory (I)": COLOURS["I"],
                      "all populations": "#222222"}.get(name, _GROUP_COLOURS[i % len(_GROUP_COLOURS)])
            tips = [("group", "@group"), (dim, f"@{{{dim}}}{{0.000}}"), (label, f"@{col}{{0.0000}}{u}")]
            curve = _opts(hv.Curve(df, kdims=[xdim], vdims=[ydim, "group"], label=name), color=colour,
                          bokeh=dict(line_width=2, tools=[_hover(tips)]), mpl=dict(linewidth=2))
            dots = _opts(hv.Scatter(df, kdims=[xdim], vdims=[ydim, "group"], label=name), color=colour,
                         bokeh=dict(size=7, tools=[_hover(tips)]), mpl=dict(s=25))
            layers += [curve, dots]
        legend = dict(legend_position="right") if len(groups) > 1 else dict(show_legend=False)
        return _opts(hv.Overlay(layers), title=title, padding=0.05,
                     bokeh=dict(width=440 if len(groups) <= 4 else 620, height=300, **legend),
                     mpl=dict(fig_inches=(6, 3.5), **legend))

    if not extra:
        return draw(da)
    return _frames(da, core, draw)


def sweep_statistics(data, stats: Sequence[str] | None = None, *, dim: str = "chi", by: str = "type",
                     neurons=None):
    """Several statistics against the swept parameter, one panel each (:func:`sweep_statistic`).

    ``stats`` defaults to those of rate, lvr, cc, synchrony and fc_similarity that
    the Dataset holds with at least one finite value; ``fc_similarity`` (one value
    per point) is drawn with ``by="all"``.  Returns an ``hv.Layout`` (two columns).
    """
    if isinstance(stats, str):
        stats = [stats]
    if stats is None:
        if not isinstance(data, xr.Dataset):
            raise ParameterError(invalid("stats", None, "a list of statistics when data is a DataArray"))
        stats = []
        for s in _SWEEP_DEFAULT_STATS:
            name = next((n for n in SWEEP_STATISTICS[s][0] if n in data.data_vars), None)
            if name is not None and bool(np.isfinite(data[name]).any()):
                stats.append(s)
        if not stats:
            raise ParameterError(invalid("data", f"Dataset of {list(data.data_vars)[:8]}",
                                         f"finite values of at least one of {', '.join(_SWEEP_DEFAULT_STATS)}"))
    panels = [sweep_statistic(data, s, dim=dim, by="all" if s == "fc_similarity" else by, neurons=neurons)
              for s in stats]
    return hv.Layout(panels).cols(2).opts(backend="matplotlib", sublabel_format="")


def sweep_heatmap(data, stat: str = "rate", *, dim: str = "chi", pop: str | None = None,
                  areas: Sequence[str] | None = None, neurons=None, cmap: str = "YlOrBr",
                  title: str | None = None):
    """Area x swept-parameter heat map of a statistic (default the rate).

    Parameters
    ----------
    data, stat, dim, neurons
        As :func:`sweep_statistic` (``stat`` must have an ``area`` dim).
    pop : str, optional
        Show this population (e.g. ``"23E"``); default the mean over each
        area's populations (plain, or neuron-weighted with ``neurons``).
    areas : sequence of str, optional
        Rows; default every area with data, V1 at the top.

    Returns
    -------
    hv.HeatMap or hv.HoloMap
        kdims (``dim``, ``area``), vdims the statistic's name (NaN: no data,
        white) and ``status``.  Evenly spaced swept values are numbers on the
        axis; unevenly spaced ones (1.0, 1.4, 1.5, ...) are equal columns labelled
        by :func:`sweep_label`.
    """
    _backends()
    da, label, units = _sweep_array(data, stat, dim)
    _require_dims(da, [dim, "area"], "data")
    if pop is not None:
        if "pop" not in da.dims or pop not in [str(p) for p in da["pop"].values]:
            raise ParameterError(invalid("pop", pop, f"one of {', '.join(POPS)} present in the data"))
        da = da.sel(pop=pop)
        what = f"population {POP_LABELS.get(pop, pop)}"
    else:
        da = _group_mean(da, {}, neurons) if neurons is not None and "pop" in da.dims else (
            da.mean("pop", skipna=True) if "pop" in da.dims else da)
        what = "mean over populations" + (", neuron-weighted" if neurons is not None else "")
    other = [d for d in da.dims if d != "area"]
    with_data = [str(a) for a, ok in zip(da["area"].values, np.isfinite(da).any(other).values) if ok]
    if not with_data:
        raise ParameterError(invalid("data", da.name, "at least one finite value"))
    rows = with_data if areas is None else _check_areas(areas, with_data)
    da = da.sel(area=rows)
    col = stat
    finite = np.asarray(da.values, dtype=float)
    finite = finite[np.isfinite(finite)]
    hi = float(finite.max()) if finite.size else 1.0
    lo = min(0.0, float(finite.min())) if finite.size else 0.0
    title = title or f"{label} per area against {dim} ({what})"
    fmt = "{0.000}" if units == "spikes/s" else "{0.0000}"
    u = _unit_text(units)

    def draw(frame: xr.DataArray):
        frame = frame.transpose(dim, "area")
        x = _sweep_values(frame, dim)
        vals = np.asarray(frame.values, dtype=float)
        order = list(reversed(range(len(rows))))          # first area at the top
        # unevenly spaced values as equal columns (a numeric axis would centre unequal cells on them)
        even = x.dtype.kind not in "iuf" or x.size < 3 or bool(np.allclose(np.diff(x), x[1] - x[0]))
        xs = x if even else np.array([sweep_label(v) for v in x])
        df = pd.DataFrame({dim: np.repeat(xs, len(rows)), "area": np.tile(np.asarray(rows)[order], len(x)),
                           col: vals[:, order].ravel()})
        df["status"] = np.where(np.isfinite(df[col]), "", "no data")
        heat = hv.HeatMap(df, kdims=[_sweep_dim(frame, dim), hv.Dimension("area", label="Area")],
                          vdims=[_vdim(col, label, units), "status"])
        return _opts(heat, cmap=cmap, colorbar=True, clim=(lo, hi if hi > lo else lo + 1.0), title=title,
                     bokeh=dict(clipping_colors={"NaN": "white"}, width=620, height=max(220, 18 * len(rows) + 90),
                                toolbar="above", tools=[_hover([
                                    ("area", "@area"), (dim, f"@{{{dim}}}" + ("{0.000}" if even else "")),
                                    (label, f"@{col}{fmt}{u}"), ("", "@status")])]),
                     mpl=dict(fig_inches=(7, max(2.5, 0.25 * len(rows) + 1)), show_values=False,
                              clipping_colors={"NaN": "#d9d9d9"}))

    return _frames(da, [dim, "area"], draw)


def sweep_theory_vs_simulation(data, *, dim: str = "chi", atlas=None, area: str | None = None,
                               pop: str | None = None, title: str | None = None):
    """Mean-field theory and simulation against the swept parameter, with the atlas' branches.

    Parameters
    ----------
    data : xr.Dataset
        Sweep results with the dim ``dim``: simulated rates (``rates_rate`` or
        ``rate``) and/or the theory's rates at the sweep points (``theory_rate``),
        (dim, area, pop), spikes/s.
    atlas : xr.Dataset, optional
        Every fixed-point branch over the same parameter (:func:`mam_xr.atlas.atlas`),
        drawn as lines: stable solid, unstable dashed.
    area, pop : str, optional
        Mean rate of this area and/or population; default over all populations.

    Returns
    -------
    hv.Overlay
        ``Curve`` s of the atlas' branches (kdim ``dim``, vdim ``rate``),
        ``Scatter`` "theory at the sweep points" and "simulation" (kdim ``dim``, vdim
        ``rate``).  With simulated rates, all means are taken over the populations
        simulated (with a finite rate at some point), so that theory and simulation
        average the same populations.

    Raises
    ------
    ParameterError
        Data without ``dim`` or without rates, an atlas over another parameter,
        an unknown area or population.
    """
    _backends()
    if not isinstance(data, xr.Dataset):
        raise TypeError(f"data must be an xarray Dataset, not {type(data).__name__}")
    for name, value, valid in (("area", area, AREAS), ("pop", pop, POPS)):
        if value is not None and value not in valid:
            raise ParameterError(invalid(name, value, f"one of {', '.join(valid)}"))
    sim = th = None
    if any(n in data.data_vars for n in SWEEP_STATISTICS["rate"][0]):
        sim = _sweep_array(data, "rate", dim)[0]
    if "theory_rate" in data.data_vars:
        th = _sweep_array(data, "theory_rate", dim)[0]
        th = th.isel(draw=0) if "draw" in th.dims else th
    if sim is None and th is None:
        raise ParameterError(invalid("data", f"Dataset of {list(data.data_vars)[:8]}",
                                     "simulated rates ('rates_rate' or 'rate') or 'theory_rate'"))
    if atlas is not None and (not isinstance(atlas, xr.Dataset) or atlas.attrs.get("sweep_param") != dim
                              or "rate" not in atlas):
        got = atlas.attrs.get("sweep_param") if isinstance(atlas, xr.Dataset) else type(atlas).__name__
        raise ParameterError(invalid("atlas", got, f"an atlas over {dim!r} from mam_xr.atlas.atlas"))
    for name, da in (("data", sim), ("data", th)):
        if da is not None and set(da.dims) - {dim, "area", "pop"}:
            raise ParameterError(invalid(f"{name}.dims", tuple(da.dims), f"({dim}, area, pop)"))
    sel = {k: v for k, v in (("area", area), ("pop", pop)) if v is not None}
    mask = sim.notnull().any(dim) if sim is not None else None

    def reduce(da):
        da = da.where(mask) if mask is not None else da
        da = da.sel(sel) if sel else da
        return da.mean([d for d in ("area", "pop") if d in da.dims], skipna=True)

    which = " ".join(str(v) for v in (area, pop) if v is not None) or (
        "simulated populations" if sim is not None else "all populations")
    xdim = _sweep_dim(sim if sim is not None else th, dim)
    ydim = hv.Dimension("rate", label=f"Mean rate, {which}", unit="spikes/s")
    elements = []
    if atlas is not None:
        # branch pieces from mam_xr.viz_atlas, over the same populations as the sweep
        masked = atlas if mask is None else atlas.assign(rate=atlas["rate"].where(mask.reset_coords(drop=True)))
        seen = set()
        for piece in atlas_curve_data(masked, area=area, pop=pop):
            label = "atlas: stable" if piece["stable"] else "atlas: unstable"
            curve = hv.Curve((piece["x"], piece["y"]), [xdim], [ydim], label=label)
            if label in seen:                      # one legend entry per line style
                curve = curve.opts(show_legend=False)
            seen.add(label)
            dash = {} if piece["stable"] else {"bokeh": {"line_dash": "dashed"}, "mpl": {"linestyle": "--"}}
            elements.append(_opts(curve, color="#222222", **dash))
    u = " spikes/s"
    for da, label, colour, marker in ((th, "theory at the sweep points", "#1f77b4", ("circle", "o")),
                                      (sim, "simulation", "#ff7f0e", ("diamond", "D"))):
        if da is None:
            continue
        y = np.asarray(reduce(da).transpose(dim).values, dtype=float)
        df = pd.DataFrame({dim: _sweep_values(da, dim), "rate": y})
        sc = hv.Scatter(df, kdims=[xdim], vdims=[ydim], label=label)
        elements.append(_opts(sc, color=colour, bokeh=dict(size=9, marker=marker[0], tools=[_hover([
            ("", label), (dim, f"@{{{dim}}}{{0.000}}"), ("mean rate", f"@rate{{0.000}}{u}")])]),
            mpl=dict(s=40, marker=marker[1])))
    title = title or (f"Theory {'(atlas branches and sweep points) ' if atlas is not None else ''}"
                      f"and simulation against {dim}")
    return _opts(hv.Overlay(elements), title=title, padding=0.05,
                 bokeh=dict(width=760, height=420, legend_position="top_left"),
                 mpl=dict(aspect=1.8, fig_inches=8, legend_position="right"))


# --- static export -------------------------------------------------------------------

_STATIC_FORMATS = ("png", "svg", "pdf")


def _factors(values) -> list:
    return list(dict.fromkeys(values.tolist()))


def _mpl_options(el) -> dict:
    opts = {}
    for group in ("plot", "style"):
        opts.update(hv.Store.lookup_options("matplotlib", el, group).kwargs)
    return opts


def _heatmap_as_image(hm: hv.HeatMap):
    """A categorical HeatMap as an ``Image`` with tick labels, plus its axis factors.

    HoloViews' matplotlib HeatMap mislabels categorical rows that are not in
    sorted order, so static figures draw heat maps as images on integer grids.
    """
    xd, yd = hm.kdims[:2]
    xv, yv = hm.dimension_values(0), hm.dimension_values(1)
    xs, ys = _factors(xv), _factors(yv)
    xnum = xv.dtype.kind in "iuf"
    ix = {x: i for i, x in enumerate(xs)}
    iy = {y: i for i, y in enumerate(ys)}
    grid = np.full((len(ys), len(xs)), np.nan)
    grid[[iy[y] for y in yv.tolist()], [ix[x] for x in xv.tolist()]] = hm.dimension_values(2).astype(float)
    keep = ("cmap", "clim", "logz", "colorbar", "title", "xrotation", "fig_inches",
            "clipping_colors", "fontsize")
    opts = {k: v for k, v in _mpl_options(hm).items() if k in keep}
    if xnum and len(xs) > 1 and np.allclose(np.diff(np.asarray(xs, float)), float(xs[1]) - float(xs[0])):
        step = float(xs[1]) - float(xs[0])
        bounds = (float(xs[0]) - step / 2, 0, float(xs[-1]) + step / 2, len(ys))
    else:
        bounds = (0, 0, len(xs), len(ys))
        opts["xticks"] = [(i + 0.5, f"{x:g}" if xnum else str(x)) for i, x in enumerate(xs)]
        xnum = False                 # unevenly spaced numbers are drawn as categories
    opts["yticks"] = [(i + 0.5, str(y)) for i, y in enumerate(ys)]
    img = hv.Image(grid[::-1], bounds=bounds, kdims=[xd, yd], vdims=[hm.vdims[0]])
    w, h = opts.get("fig_inches", (6, 5))
    return img.opts(backend="matplotlib", aspect=w / h * 0.85, **opts), (xs, ys, xnum)


def _boxes_for_matplotlib(ov):
    """Box plots with their mean markers at the boxes' positions.

    matplotlib places the boxes of a categorical ``BoxWhisker`` at 1 ... n but a
    categorical ``Scatter`` at 0 ... n-1, so the means move to numeric positions.
    """
    box = next(e for e in ov if isinstance(e, hv.BoxWhisker))
    factors = _factors(box.dimension_values(0))
    layers = []
    for e in ov:
        if isinstance(e, hv.Scatter) and e.dimension_values(0).dtype.kind in "OUT":
            df = e.dframe()
            k = e.kdims[0].name
            df[k] = [factors.index(v) + 1.0 for v in df[k]]
            sc = hv.Scatter(df, kdims=[hv.Dimension(k, label=e.kdims[0].label,
                                                    range=(0.5, len(factors) + 0.5))], vdims=e.vdims)
            layers.append(sc.opts(backend="matplotlib", **{
                o: v for o, v in _mpl_options(e).items()
                if o in ("invert_axes", "color", "marker", "s")}))
        else:
            layers.append(e)
    return hv.Overlay(layers)


def _for_matplotlib(obj):
    """Prepare a figure for the matplotlib backend (static export).

    Categorical heat maps become images with tick labels (see
    :func:`_heatmap_as_image`), and the absent-population ``Labels`` of
    :func:`rate_heatmap` move to the matching integer positions.
    """
    def convert(el):
        if isinstance(el, hv.HeatMap):
            return _heatmap_as_image(el)[0]
        if isinstance(el, hv.Overlay) and any(isinstance(e, hv.BoxWhisker) for e in el):
            return _boxes_for_matplotlib(el)
        if isinstance(el, hv.Overlay):
            heat = [e for e in el if isinstance(e, hv.HeatMap)]
            if not heat:
                return el
            img, (xs, ys, xnum) = _heatmap_as_image(heat[0])
            layers = []
            for e in el:
                if isinstance(e, hv.HeatMap):
                    layers.append(img if e is heat[0] else _heatmap_as_image(e)[0])
                elif isinstance(e, hv.Labels) and not xnum:
                    df = e.dframe()
                    x, y = e.kdims[0].name, e.kdims[1].name
                    df[x] = [xs.index(v) + 0.5 for v in df[x]]
                    df[y] = [ys.index(v) + 0.5 for v in df[y]]
                    lab = hv.Labels(df, kdims=[img.kdims[0].name, img.kdims[1].name],
                                    vdims=e.vdims)
                    layers.append(lab.opts(backend="matplotlib", color="black", size=14))
                else:
                    layers.append(e)
            return hv.Overlay(layers)
        return el
    if isinstance(obj, (hv.HeatMap, hv.Overlay)):
        return convert(obj)
    if isinstance(obj, (hv.Layout, hv.NdLayout)):
        return obj.clone([(k, convert(v)) for k, v in obj.data.items()])
    return obj


def save_static(obj, path, *, fmt: str | None = None, dpi: int = 150) -> Path:
    """Write a figure as PNG, SVG or PDF with HoloViews' matplotlib backend.

    Parameters
    ----------
    obj : HoloViews object
        Any figure of this module.  A ``HoloMap`` (sweep) is written as a grid
        of all its frames.
    path : str or Path
        Output file; its suffix gives the format unless ``fmt`` is set.
    fmt : {"png", "svg", "pdf"}, optional
    dpi : int
        Resolution of PNG output.

    Returns
    -------
    Path
        The file written.
    """
    _backends()
    path = Path(path)
    fmt = (fmt or path.suffix.lstrip(".")).lower()
    if fmt not in _STATIC_FORMATS:
        raise ParameterError(invalid("fmt", fmt, f"one of {_STATIC_FORMATS} (or a path ending so)"))
    if path.suffix.lstrip(".").lower() != fmt:
        path = path.with_name(f"{path.name}.{fmt}")
    if isinstance(obj, hv.HoloMap) and not isinstance(obj, hv.DynamicMap):
        obj = obj.layout()
    obj = _for_matplotlib(obj)
    import matplotlib
    matplotlib.use("Agg", force=False)
    renderer = hv.renderer("matplotlib").instance(dpi=dpi, fig=fmt)
    path.parent.mkdir(parents=True, exist_ok=True)
    renderer.save(obj, str(path.with_suffix("")), fmt=fmt)
    import matplotlib.pyplot as plt
    plt.close("all")
    return path
