"""Bokeh models of the report's figures (used by :mod:`mam_xr.report`).

:func:`render_section` turns one report section's HoloViews figure into a Bokeh model.
For the figures that dominate a report's writing time and size it draws the same data
straight in Bokeh (images for matrices, numeric columns, few glyphs), because writing
the page costs about the same per Bokeh model; everything else, and any figure that
does not have the expected shape, goes through HoloViews' own renderer.

Public functions: :func:`render_section`, :func:`render_holoviews` and the fast paths
:func:`heatmap_image`, :func:`box_panels`, :func:`theory_scatter`, :func:`raster_panels`,
:func:`fc_panels`, :func:`curve_figure`.

A sweep's report draws each figure once, from its first point, and keeps the values
that differ at the other points (:func:`link_frames`, :func:`frame_models`); the
sliders of :func:`sweep_controls` switch them in the browser, with the headlines.
"""

from __future__ import annotations

import numpy as np

import holoviews as hv

from .viz import COLOURS, sweep_label

__all__ = ["render_section", "render_holoviews", "heatmap_image", "box_panels", "theory_scatter",
           "raster_panels", "fc_panels", "curve_figure", "link_frames", "frame_models", "add_markers",
           "sweep_controls"]

WIDTH, HEIGHT = 900, 320     # the default figure size of mam_xr.viz


def _fmt(x) -> str:
    if isinstance(x, (float, np.floating)):
        return f"{x:.6g}"
    return str(x)


def render_holoviews(obj):
    """A Bokeh model of a HoloViews object; a HoloMap gets the controls of :func:`sweep_controls`
    (a slider per numeric key dim) that show one frame at a time."""
    from bokeh.layouts import column

    if isinstance(obj, hv.HoloMap) and not isinstance(obj, hv.DynamicMap) and len(obj) > 1:
        names = [d.name for d in obj.kdims]
        raw = [key if isinstance(key, tuple) else (key,) for key in obj.keys()]
        values = [list(dict.fromkeys(k[i] for k in raw)) for i in range(len(names))]
        keys = [tuple(values[i].index(k[i]) for i in range(len(names))) for k in raw]
        labels = [", ".join(f"{n} = {_fmt(v)}" for n, v in zip(names, k)) for k in raw]
        models = [hv.render(frame, backend="bokeh") for frame in obj.values()]
        for i, model in enumerate(models):
            model.visible = i == 0
        controls = sweep_controls(names, [np.asarray(v) for v in values], keys, labels, toggles=[models])
        return column(controls, *models, name="sweep")
    if isinstance(obj, hv.HoloMap) and len(obj) == 1:
        obj = obj.last
    return hv.render(obj, backend="bokeh")


# Fast paths: the two figures that dominate a report's writing time and size are drawn
# straight in Bokeh from the HoloViews objects' data (same data, colours and hover
# fields): the area x time heat map as one image (a 32 x 1500 HeatMap costs seconds
# in HoloViews and ~1 MB of JSON), the box plots as a few glyphs per panel.

def heatmap_image(heat: hv.HeatMap):
    """An area x time HeatMap as one Bokeh image (areas as rows, time bins as columns)."""
    from bokeh.models import ColorBar, CustomJSHover, FixedTicker, HoverTool, LinearColorMapper
    from bokeh.plotting import figure
    from holoviews.plotting.util import process_cmap

    xdim, ydim = heat.kdims[:2]
    vdim = heat.vdims[0]
    df = heat.dframe()
    times = np.unique(df[xdim.name].to_numpy(float))
    areas = list(dict.fromkeys(map(str, df[ydim.name])))
    z = (df.pivot_table(index=ydim.name, columns=xdim.name, values=vdim.name, aggfunc="first", dropna=False)
         .reindex(index=areas, columns=times).to_numpy(np.float32))
    dx = float(np.median(np.diff(times))) if times.size > 1 else 1.0
    kw = heat.opts.get("plot", backend="bokeh").kwargs
    style = heat.opts.get("style", backend="bokeh").kwargs
    finite = z[np.isfinite(z)]
    hi = float(finite.max()) if finite.size else 1.0
    mapper = LinearColorMapper(palette=process_cmap(style.get("cmap", "YlOrBr"), 256), low=0.0,
                               high=hi if hi > 0 else 1.0, nan_color="white")
    unit = f" ({vdim.unit})" if vdim.unit else ""
    fig = figure(width=kw.get("width", 900), height=kw.get("height", 320), title=kw.get("title", ""),
                 x_range=(times[0] - dx / 2, times[-1] + dx / 2), y_range=(-0.5, len(areas) - 0.5),
                 x_axis_label=f"{xdim.label}" + (f" ({xdim.unit})" if xdim.unit else ""),
                 y_axis_label=ydim.label, tools="pan,wheel_zoom,box_zoom,reset,save", toolbar_location="above")
    img = fig.image(image=[z], x=times[0] - dx / 2, y=-0.5, dw=dx * times.size, dh=len(areas),
                    color_mapper=mapper)
    fig.yaxis.ticker = FixedTicker(ticks=list(range(len(areas))))
    fig.yaxis.major_label_overrides = {i: a for i, a in enumerate(areas)}
    fig.grid.visible = False
    area_of = CustomJSHover(args={"names": areas}, code="""
        const i = Math.round(value); return (i >= 0 && i < names.length) ? names[i] : "";""")
    fig.add_tools(HoverTool(renderers=[img], formatters={"$y": area_of}, tooltips=[
        ("area", "$y{custom}"), (xdim.label.lower(), f"$x{{0.0}}{' ' + xdim.unit if xdim.unit else ''}"),
        (vdim.label, f"@image{{0.00}}{' ' + vdim.unit if vdim.unit else ''}")]))
    fig.add_layout(ColorBar(color_mapper=mapper, title=f"{vdim.label}{unit}"), "right")
    return fig


def box_panels(layout: hv.Layout):
    """Box plots (viz.box_plots) as Bokeh figures: quartile boxes, 1.5-IQR whiskers, outliers, means."""
    from bokeh.layouts import row
    from bokeh.models import ColumnDataSource, HoverTool
    from bokeh.plotting import figure

    panels = list(layout)
    width = max(240, min(WIDTH // 3, 1200 // max(1, len(panels))))
    figs = []
    for panel in panels:
        box = panel.get(0)
        vdim = box.vdims[0]
        df = box.dframe()
        pops = list(dict.fromkeys(map(str, df["pop"])))
        rows = {k: [] for k in ("pop", "q1", "q2", "q3", "lo", "hi", "mean", "n", "colour")}
        out_pop, out_val = [], []
        for p in pops:
            v = df.loc[df["pop"] == p, vdim.name].to_numpy(float)
            q1, q2, q3 = np.percentile(v, [25, 50, 75])
            iqr = q3 - q1
            lo, hi = max(v.min(), q1 - 1.5 * iqr), min(v.max(), q3 + 1.5 * iqr)
            out = v[(v < lo) | (v > hi)]
            out_pop += [p] * len(out)
            out_val += out.tolist()
            for k, x in zip(rows, (p, q1, q2, q3, lo, hi, v.mean(), len(v),
                                   COLOURS.get(p[-1], "grey"))):
                rows[k].append(x)
        src = ColumnDataSource(rows)
        unit = f" ({vdim.unit})" if vdim.unit else ""
        fig = figure(width=width, height=HEIGHT, y_range=pops, title=vdim.label,
                     x_axis_label=f"{vdim.label}{unit}", y_axis_label="Population",
                     tools="pan,wheel_zoom,reset,save", toolbar_location="above")
        # few renderers: writing the page costs about the same per Bokeh model
        fig.segment("lo", "pop", "hi", "pop", source=src, color="black")      # whiskers, under the box
        bars = fig.hbar(y="pop", left="q1", right="q3", height=0.6, source=src, fill_color="colour",
                        fill_alpha=0.6, line_color="black")
        fig.hbar(y="pop", left="q2", right="q2", height=0.6, source=src, line_color="black", line_width=2)
        n_out = len(out_val)
        fig.scatter(x=out_val + rows["mean"], y=out_pop + rows["pop"],
                    marker=["circle"] * n_out + ["x"] * len(pops), size=[4] * n_out + [10] * len(pops),
                    color="black", line_width=2)                                 # outliers and means (×)
        fmt = f"{{0.0000}}{' ' + vdim.unit if vdim.unit else ''}"
        fig.add_tools(HoverTool(renderers=[bars], tooltips=[
            ("population", "@pop"), ("median", f"@q2{fmt}"), ("quartiles", f"@q1{fmt} – @q3{fmt}"),
            ("mean (×)", f"@mean{fmt}"), ("areas", "@n")]))
        figs.append(fig)
    return row(*figs)


def theory_scatter(ov: hv.Overlay):
    """viz.theory_vs_simulation as one Bokeh scatter (colour and marker per population) and its
    identity line, instead of one renderer per population."""
    from bokeh.models import ColumnDataSource, HoverTool
    from bokeh.plotting import figure

    scatters = [el for el in ov if isinstance(el, hv.Scatter)]
    line = next(el for el in ov if isinstance(el, hv.Curve))
    xdim, ydim = scatters[0].kdims[0], scatters[0].vdims[0]
    cols: dict[str, list] = {k: [] for k in ("x", "y", "area", "pop", "colour", "marker")}
    for el in scatters:
        style = el.opts.get("style", backend="bokeh").kwargs
        df = el.dframe()
        cols["x"] += df[xdim.name].tolist()
        cols["y"] += df[ydim.name].tolist()
        cols["area"] += df["area"].astype(str).tolist()
        cols["pop"] += df["pop"].astype(str).tolist()
        cols["colour"] += [style.get("color", "black")] * len(df)
        cols["marker"] += [style.get("marker", "circle")] * len(df)
    kw = ov.opts.get("plot", backend="bokeh").kwargs
    unit = f" ({xdim.unit})" if xdim.unit else ""
    fig = figure(width=kw.get("width", 620), height=kw.get("height", 520), title=kw.get("title", ""),
                 x_axis_label=f"{xdim.label}{unit}", y_axis_label=f"{ydim.label}{unit}",
                 tools="pan,wheel_zoom,box_zoom,reset,save", toolbar_location="above")
    fig.line(line.dimension_values(0), line.dimension_values(1), color="grey", line_dash="dashed")
    pts = fig.scatter("x", "y", source=ColumnDataSource(cols), color="colour", marker="marker", size=7,
                      legend_group="pop")
    u = f" {xdim.unit}" if xdim.unit else ""
    fig.add_tools(HoverTool(renderers=[pts], tooltips=[
        ("area", "@area"), ("population", "@pop"), ("theory", f"@x{{0.000}}{u}"),
        ("simulation", f"@y{{0.000}}{u}")]))
    fig.add_layout(fig.legend[0], "right")
    return fig


def raster_panels(layout: hv.Layout):
    """viz.raster as Bokeh scatter plots (one renderer per area; E blue, I red)."""
    from bokeh.layouts import row
    from bokeh.models import ColumnDataSource, CustomJSHover, FixedTicker, HoverTool, LinearColorMapper
    from bokeh.plotting import figure

    figs = []
    for pts in layout:
        kw = pts.opts.get("plot", backend="bokeh").kwargs
        style = pts.opts.get("style", backend="bokeh").kwargs
        df = pts.dframe()
        pops = list(dict.fromkeys(map(str, df["pop"])))
        # numeric columns only: they travel as compact binary arrays, strings as JSON per point
        src = ColumnDataSource({"time": df["time"].to_numpy(np.float32), "y": df["y"].to_numpy(np.float32),
                                "pop": df["pop"].map({p: i for i, p in enumerate(pops)}).to_numpy(np.int8),
                                "neuron": df["neuron"].to_numpy(np.int32),
                                "inh": (df["kind"] == "I").to_numpy(np.int8)})
        colours = LinearColorMapper(palette=[COLOURS["E"], COLOURS["I"]], low=0, high=1)
        ticks = dict(kw.get("yticks", []))
        fig = figure(width=kw.get("width", 300), height=kw.get("height", 320), title=kw.get("title", ""),
                     x_range=kw.get("xlim"), y_range=kw.get("ylim"), x_axis_label="Time (ms)",
                     y_axis_label="Neuron", tools="pan,wheel_zoom,box_zoom,reset,save",
                     toolbar_location="above")
        dots = fig.scatter("time", "y", source=src, color={"field": "inh", "transform": colours},
                           size=style.get("size", 2), line_width=0)
        fig.yaxis.ticker = FixedTicker(ticks=list(ticks))
        fig.yaxis.major_label_overrides = {float(k): str(v) for k, v in ticks.items()}
        area = str(kw.get("title", "")).split(" (")[0]
        name = CustomJSHover(args={"names": pops}, code="return names[value] ?? '';")
        fig.add_tools(HoverTool(renderers=[dots], formatters={"@pop": name}, tooltips=[
            ("area", area), ("population", "@pop{custom}"), ("neuron", "@neuron"), ("time", "@time{0.0} ms")]))
        figs.append(fig)
    return row(*figs)


def fc_panels(layout: hv.Layout):
    """viz.functional_connectivity as Bokeh: each matrix one image, the pair scatter one renderer."""
    from bokeh.layouts import row
    from bokeh.models import ColorBar, CustomJSHover, FixedTicker, HoverTool, LinearColorMapper
    from bokeh.plotting import figure
    from holoviews.plotting.util import process_cmap

    figs = []
    for el in layout:
        kw = el.opts.get("plot", backend="bokeh").kwargs
        if isinstance(el, hv.HeatMap):
            df = el.dframe()
            xs = list(dict.fromkeys(map(str, df["area_x"])))
            ys = list(dict.fromkeys(map(str, df["area_y"])))         # bottom row first
            z = (df.pivot_table(index="area_y", columns="area_x", values="fc", aggfunc="first", dropna=False)
                 .reindex(index=ys, columns=xs).to_numpy(np.float32))
            mapper = LinearColorMapper(palette=process_cmap("RdBu_r", 256), low=-1.0, high=1.0,
                                       nan_color="white")
            fig = figure(width=kw.get("width", 450), height=kw.get("height", 420), title=kw.get("title", ""),
                         x_range=(-0.5, len(xs) - 0.5), y_range=(-0.5, len(ys) - 0.5),
                         x_axis_label=el.kdims[0].label, y_axis_label=el.kdims[1].label,
                         tools="pan,wheel_zoom,reset,save", toolbar_location="above")
            img = fig.image(image=[z], x=-0.5, y=-0.5, dw=len(xs), dh=len(ys), color_mapper=mapper)
            for axis, names in ((fig.xaxis, xs), (fig.yaxis, ys)):
                axis.ticker = FixedTicker(ticks=list(range(len(names))))
                axis.major_label_overrides = dict(enumerate(names))
            fig.xaxis.major_label_orientation = np.pi / 2
            fig.grid.visible = False
            name_x = CustomJSHover(args={"names": xs}, code="return names[Math.round(value)] ?? '';")
            name_y = CustomJSHover(args={"names": ys}, code="return names[Math.round(value)] ?? '';")
            fig.add_tools(HoverTool(renderers=[img], formatters={"$x": name_x, "$y": name_y}, tooltips=[
                ("areas", "$y{custom} – $x{custom}"), ("Pearson r", "@image{0.000}")]))
            fig.add_layout(ColorBar(color_mapper=mapper, title="Pearson r"), "right")
        else:                                                        # the pair scatter
            df = el.dframe()
            xd, yd = el.kdims[0], el.vdims[0]
            fig = figure(width=kw.get("width", 360), height=kw.get("height", 380), title=kw.get("title", ""),
                         x_axis_label=xd.label, y_axis_label=yd.label,
                         tools="pan,wheel_zoom,box_zoom,reset,save", toolbar_location="above")
            dots = fig.scatter(xd.name, yd.name, source=df[[xd.name, yd.name, "pair"]], size=4,
                               color="#444444")
            fig.add_tools(HoverTool(renderers=[dots], tooltips=[
                ("areas", "@pair"), ("experimental r", f"@{xd.name}{{0.000}}"),
                ("simulated r", f"@{yd.name}{{0.000}}")]))
        figs.append(fig)
    return row(*figs)


def curve_figure(curves: list, *, title: str, width: int, height: int, legend: bool,
                  hline: float | None = None):
    """Curves (hv.Curve with a time kdim) in one Bokeh figure; numeric columns only."""
    from bokeh.models import HoverTool
    from bokeh.plotting import figure

    tdim, vdim = curves[0].kdims[0], curves[0].vdims[0]
    unit = f" ({vdim.unit})" if vdim.unit else ""
    fig = figure(width=width, height=height, title=title, toolbar_location="above",
                 x_axis_label=f"{tdim.label}" + (f" ({tdim.unit})" if tdim.unit else ""),
                 y_axis_label=f"{vdim.label}{unit}", tools="pan,wheel_zoom,box_zoom,reset,save")
    lines = []
    for c in curves:
        style = c.opts.get("style", backend="bokeh").kwargs
        name = str(c.label or c.dimension_values("area")[0])
        extra = {"legend_label": name} if legend else {}
        lines.append(fig.line(c.dimension_values(0).astype(np.float32), c.dimension_values(1).astype(np.float32),
                              color=style.get("color", "#555555"), line_width=style.get("line_width", 1),
                              name=name, **extra))
    if hline is not None:
        t0 = float(min(c.dimension_values(0).min() for c in curves))
        t1 = float(max(c.dimension_values(0).max() for c in curves))
        fig.line([t0, t1], [hline, hline], color="grey", line_dash="dashed")
    u = f" {vdim.unit}" if vdim.unit else ""
    fig.add_tools(HoverTool(renderers=lines, tooltips=[("", "$name"), ("time", "@x{0.0} ms"),
                                                       (vdim.label, f"@y{{0.00}}{u}")]))
    if legend:
        fig.add_layout(fig.legend[0], "right")
    return fig


def render_section(sec: dict):
    """A section's Bokeh model: the fast paths above where they apply, else HoloViews."""
    fig = sec["figure"]
    if sec["id"] == "instantaneous" and isinstance(fig, hv.HeatMap):
        return heatmap_image(fig)
    if sec["id"] == "boxes" and isinstance(fig, hv.Layout) and all(
            isinstance(p, hv.Overlay) and isinstance(p.get(0), hv.BoxWhisker) for p in fig):
        return box_panels(fig)
    if sec["id"] == "theory" and isinstance(fig, hv.Overlay) and any(isinstance(e, hv.Scatter) for e in fig):
        return theory_scatter(fig)
    if sec["id"] == "rate_over_time" and isinstance(fig, hv.Overlay) and all(
            isinstance(e, (hv.Curve, hv.HLine)) for e in fig):
        kw = fig.opts.get("plot", backend="bokeh").kwargs
        hl = next((e for e in fig if isinstance(e, hv.HLine)), None)
        return curve_figure([e for e in fig if isinstance(e, hv.Curve)], title=kw.get("title", ""),
                             width=WIDTH + 150, height=HEIGHT, legend=True,
                             hline=None if hl is None else float(hl.data))
    if sec["id"] == "area_rates" and isinstance(fig, hv.Layout) and all(isinstance(e, hv.Curve) for e in fig):
        from bokeh.layouts import column

        figs = []
        for c in fig:
            kw = c.opts.get("plot", backend="bokeh").kwargs
            figs.append(curve_figure([c], title=kw.get("title", ""), width=kw.get("width", WIDTH),
                                      height=kw.get("height", 160), legend=False))
        for f in figs[1:]:
            f.x_range = figs[0].x_range                    # zoom all areas together
        return column(*figs)
    if sec["id"] == "raster" and isinstance(fig, hv.Layout) and all(isinstance(p, hv.Points) for p in fig):
        return raster_panels(fig)
    if sec["id"] == "fc" and isinstance(fig, hv.Layout) and all(
            isinstance(p, (hv.HeatMap, hv.Scatter)) for p in fig):
        return fc_panels(fig)
    return render_holoviews(fig)


# --- sweeps: one model per figure, its data switched by the sweep's sliders ---------------------

def _canon(value, index: dict):
    """A property value with the models in it replaced by their position in the frame."""
    from bokeh.model import Model

    if isinstance(value, Model):
        return ("model", index.get(value.id, -1))
    if isinstance(value, dict):
        return {k: _canon(v, index) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_canon(v, index) for v in value]
    return value


def _has_model(value) -> bool:
    if isinstance(value, tuple) and len(value) == 2 and value[0] == "model":
        return True
    if isinstance(value, dict):
        return any(_has_model(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_model(v) for v in value)
    return False


def _same(a, b) -> bool:
    if isinstance(a, dict) or isinstance(b, dict):
        return (isinstance(a, dict) and isinstance(b, dict) and a.keys() == b.keys()
                and all(_same(a[k], b[k]) for k in a))
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray) or hasattr(a, "to_numpy"):
        x, y = np.asarray(a), np.asarray(b)
        if x.shape != y.shape:
            return False
        numeric = x.dtype.kind in "fc" and y.dtype.kind in "fc"
        return bool(np.array_equal(x, y, equal_nan=numeric))
    if isinstance(a, list) or isinstance(b, list):
        return (isinstance(a, list) and isinstance(b, list) and len(a) == len(b)
                and all(_same(x, y) for x, y in zip(a, b)))
    if isinstance(a, float) and isinstance(b, float) and np.isnan(a) and np.isnan(b):
        return True
    try:
        return bool(a == b)
    except (TypeError, ValueError):
        return False


_UNSET = object()


def _value(model, attr: str):
    try:
        return getattr(model, attr)
    except ValueError:                     # bokeh's UnsetValueError: a property without a value
        return _UNSET


def link_frames(models: list):
    """The property values that turn the first frame's Bokeh model into each other frame's.

    ``models`` are the Bokeh models of one figure at each sweep point.  Returns
    ``[(model of the first frame, property, [value at each point]), ...]`` for every
    property that differs (the data of the column data sources, titles, ranges,
    colour limits, ...), or None when the frames differ in structure (other models
    or other references between them).
    """
    from bokeh.model.util import collect_models

    if all(m is models[0] for m in models):
        return []
    frames = [collect_models(m) for m in models]
    first = frames[0]
    if any(len(f) != len(first) or any(type(a) is not type(b) for a, b in zip(first, f)) for f in frames[1:]):
        return None
    index = [{m.id: i for i, m in enumerate(f)} for f in frames]
    links = []
    for j, m0 in enumerate(first):
        # properties left at their defaults in every frame are equal (and slow to read)
        names = set().union(*(f[j].properties_with_values(include_defaults=False) for f in frames))
        for attr in sorted(names):
            if attr in ("id", "name", "js_event_callbacks", "js_property_callbacks", "subscribed_events") \
                    or m0.lookup(attr).property.readonly:
                continue
            values = [_value(f[j], attr) for f in frames]
            canon = [_canon(v, index[k]) for k, v in enumerate(values)]
            if all(_same(canon[0], c) for c in canon[1:]):
                continue
            if any(_has_model(c) or c is _UNSET for c in canon):
                return None
            links.append((m0, attr, values))
    return links


def frame_models(models: list):
    """One figure over the sweep points: (root model, links, toggles).

    The first point's model with the links of :func:`link_frames` when the frames
    share their structure; else a column of all frames (a None frame: its note)
    of which one at a time is visible, ``toggles = [[model at each point]]``.
    """
    from bokeh.layouts import column
    from bokeh.models import Div

    if all(m is not None for m in models):
        links = link_frames(models)
        if links is not None:
            return models[0], links, []
    frames = [m if m is not None else Div(text="No figure at this point.") for m in models]
    for k, m in enumerate(frames):
        m.visible = k == 0
    return column(*frames), [], [frames]


def add_markers(model, values, first: int) -> list:
    """A dotted vertical line at the chosen swept value in every plot of ``model``.

    ``values`` are the swept values, ``first`` the index of the one shown first.
    Returns ``[(Span, [its location at each value])]``: the value itself on a numeric
    axis, the middle of its category (``viz.sweep_label``) on a categorical one.
    """
    from bokeh.models import FactorRange, Plot, Span

    out = []
    for plot in model.select({"type": Plot}):
        if isinstance(plot.x_range, FactorRange):
            factors = [str(f) for f in plot.x_range.factors]
            labels = [sweep_label(v) for v in values]
            if not all(label in factors for label in labels):
                continue
            locations = [factors.index(label) + 0.5 for label in labels]
        else:
            locations = [float(v) for v in values]
        span = Span(location=locations[first], dimension="height", line_color="#555555", line_dash="dotted",
                    line_width=2)
        plot.add_layout(span)
        out.append((span, locations))
    return out


_SWEEP_JS = """
const pos = [];
for (let d = 0; d < widgets.length; d++) {
  const w = widgets[d], vals = values[d];
  if (w === null) { pos.push(0); continue; }
  if (kinds[d] === "select") { pos.push(w.options.indexOf(w.value)); continue; }
  let best = 0;
  for (let j = 1; j < vals.length; j++)
    if (Math.abs(vals[j] - w.value) < Math.abs(vals[best] - w.value)) best = j;
  const prev = w.tags[0];
  if (best === prev && w.value !== vals[prev]) {  // a small step (arrow key): on to the next point
    const up = w.value > vals[prev];
    for (let j = 0; j < vals.length; j++)
      if ((up ? vals[j] > vals[prev] : vals[j] < vals[prev])
          && (best === prev || Math.abs(vals[j] - vals[prev]) < Math.abs(vals[best] - vals[prev]))) best = j;
  }
  w.tags = [best];
  if (w.value !== vals[best]) { w.value = vals[best]; return; }   // snap to a sweep value: runs again
  pos.push(best);
}
const k = keys.findIndex(key => key.every((j, d) => j === pos[d]));
for (const [span, d, locations] of markers) span.location = locations[pos[d]];
if (k < 0) { status.text = "No results at this point."; return; }
for (const [model, attr, frames] of links) model.setv({[attr]: frames[k]});
for (const models of toggles) models.forEach((m, j) => { m.visible = (j === k); });
for (const [id, text] of texts) {
  const el = document.getElementById(id);
  if (el !== null) el.textContent = text[k];
}
status.text = labels[k];
"""


def _slider_step(vals: np.ndarray) -> float:
    """A step on whose grid from the first value every value lies (snapping does the rest)."""
    diffs = np.diff(np.sort(vals))
    base = float(diffs[diffs > 0].min())
    for m in (1, 2, 4, 5, 10, 20, 25, 50, 100):
        step = base / m
        k = (vals - vals.min()) / step
        if np.allclose(k, np.round(k), atol=1e-6):
            return step
    return base


def sweep_controls(dims, values, keys, labels, *, links=(), toggles=(), texts=(), markers=()):
    """The report's sweep controls: a numeric slider per numeric sweep dim (a select otherwise).

    Moving a slider snaps it to the nearest swept value, sets every linked property
    to its value at that point (:func:`frame_models`), shows the matching frames,
    replaces the text of the page elements ``texts = [(element id, [text at each
    point])]`` and moves the ``markers = [(Span, dim index, [location at each value])]``.  ``keys`` are the
    points with results as tuples of value indices, ``labels`` their descriptions.
    """
    from bokeh.layouts import row
    from bokeh.models import CustomJS, Div, Select, Slider

    widgets, kinds = [], []
    for d, vals in zip(dims, values):
        vals = np.asarray(vals)
        if vals.size < 2:
            widgets.append(None)
            kinds.append("fixed")
        elif vals.dtype.kind in "iuf":
            v = vals.astype(float)
            decimals = next((n for n in range(7) if np.allclose(v, np.round(v, n), atol=1e-9)), 6)
            first = keys[0][len(widgets)]
            widgets.append(Slider(title=d, start=float(v.min()), end=float(v.max()), value=float(v[first]),
                                  step=_slider_step(v), format="0[.]" + "0" * max(decimals, 1), width=420,
                                  name=f"sweep_slider_{d}", tags=[int(first)]))   # tags: the point shown
            kinds.append("slider")
        else:
            options = [str(x) for x in vals]
            widgets.append(Select(title=d, options=options, value=options[keys[0][len(widgets)]], width=220,
                                  name=f"sweep_select_{d}"))
            kinds.append("select")
    status = Div(text=labels[0], name="sweep_point", styles={"font-weight": "bold", "padding-top": "1.2em"})
    value_lists = [[x.item() if hasattr(x, "item") else x for x in np.asarray(v)] for v in values]
    callback = CustomJS(args=dict(widgets=widgets, kinds=kinds, values=value_lists,
                                  keys=[list(map(int, k)) for k in keys], labels=list(labels),
                                  links=[list(x) for x in links], toggles=[list(t) for t in toggles],
                                  texts=[[i, list(t)] for i, t in texts], markers=[list(m) for m in markers],
                                  status=status), code=_SWEEP_JS)
    for w in widgets:
        if w is not None:
            w.js_on_change("value", callback)
    return row(*[w for w in widgets if w is not None], status)
