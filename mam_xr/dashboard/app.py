"""The views of ``mam-xr serve``: a Panel page over the run stores and sweeps of a directory.

One page per browser session (:func:`make_page`): a selector of what was found
(:func:`mam_xr.dashboard.catalog.discover`), and the view of the chosen entry:

* a run (:class:`RunView`): the area x population heat map of the rates
  (:func:`mam_xr.viz.rate_heatmap`; simulation or the store's mean-field theory);
  a click on a cell (HoloViews ``Tap`` stream) selects that area and population:
  the area's raster with the population highlighted (Datashader when it holds
  more than ``datashade_above`` spikes: the image is re-aggregated on every zoom,
  down to single spikes) and the rates over time of the area's populations with
  the theory's rate of the selected one as a dashed line;
* a sweep (:class:`SweepView`): the same heat map at the point chosen with one
  slider per sweep dimension; a click shows the point's run (if it simulated).

A periodic callback (every ``interval`` s) refreshes the entry shown: a run store
that is still being written is re-read segment by segment (only the new
segments, :meth:`~mam_xr.dashboard.catalog.RunData.refresh`) and its views and
progress (segments committed / planned, status) are updated.
"""

from __future__ import annotations

import html

import holoviews as hv
import numpy as np
import panel as pn

from .. import viz
from ..flat import ABSENT, POPS
from .catalog import RunData, SweepData, describe_error, discover

__all__ = ["RunView", "SweepView", "make_page", "HEAT_NAME", "RASTER_NAME"]

#: Bokeh model names of the figures (found by the browser test and by users' scripts).
HEAT_NAME = "mamxr_heatmap"
RASTER_NAME = "mamxr_raster"
SERIES_NAME = "mamxr_series"
#: Raster colours: the selected population, and the other E and I populations.
RASTER_COLOURS = {"selected": "#000000", "E": "#9bbbe0", "I": "#eba4a7"}
_POP_FROM_LABEL = {v: k for k, v in viz.POP_LABELS.items()}
_WIDTH = 560


def _named(name: str):
    def hook(plot, element):
        plot.state.name = name
    return hook


def _widget(cls, label: str, **kwargs):
    """A widget with its label (``label`` in newer Panel, ``name`` before)."""
    key = "label" if "label" in cls.param else "name"
    return cls(**{key: label}, **kwargs)


def _text(cls: str, body: str) -> str:
    return f'<div class="{cls}">{body}</div>'


def _find_stream(dmap, kind):
    """The first stream of type ``kind`` of ``dmap`` or of the DynamicMaps it is made from."""
    for s in getattr(dmap, "streams", []):
        if isinstance(s, kind):
            return s
    for inp in getattr(getattr(dmap, "callback", None), "inputs", []):
        found = _find_stream(inp, kind)
        if found is not None:
            return found
    return None


class RunView:
    """Heat map, raster and rate time series of one run store (see the module docstring)."""

    def __init__(self, data: RunData, *, datashade_above: int = 1_000_000, title: str | None = None):
        self.data = data
        self.datashade_above = int(datashade_above)
        self.title = title or data.path.name
        self.area = data.areas[0] if data.areas else "V1"
        self.pop = self._first_pop(self.area)
        options = ["simulation"] + (["theory"] if data.theory is not None else [])
        self.which = pn.widgets.RadioButtonGroup(options=options, value="simulation")
        self.which.param.watch(lambda e: self.redraw_heat(), "value")
        self._heat_tick = hv.streams.Counter()
        self._data_tick = hv.streams.Counter()  # new segments: raster and rates redrawn
        # The Tap source must be a DynamicMap of the HeatMap alone (HoloViews links no
        # Tap stream to a DynamicMap of overlays): the "absent" marks are overlaid after.
        self.heat = hv.DynamicMap(self._heat, streams=[self._heat_tick])
        self.tap = hv.streams.Tap(source=self.heat, x=None, y=None)
        self._marks = viz.rate_heatmap(self._heat_frame()).get(1)
        self.tap.add_subscriber(self._on_tap)
        # raster and rates: one figure per selection (its rows, ticks and ranges), updated
        # in place as segments commit
        self._raster_key = None
        self._raster_obj = None
        self._range_stream = None     # the Datashader raster's RangeXY stream
        self._last_range = None       # the time range the raster was last set to
        self.progress = pn.pane.HTML(self._progress_html(), sizing_mode="stretch_width")
        self.bar = pn.indicators.Progress(max=max(1, data.planned), value=min(data.n_segments, max(1, data.planned)),
                                          width=300, bar_color="info")
        self.heat_caption = pn.pane.HTML("", sizing_mode="stretch_width")
        self.selection = pn.pane.HTML("", sizing_mode="stretch_width")
        self.raster_pane = pn.pane.HoloViews(self._raster_object(), sizing_mode="fixed")
        self.series_pane = pn.pane.HoloViews(self._series_object(), sizing_mode="fixed")
        self._captions()
        self.panel = pn.Column(
            pn.Row(self.bar, self.progress),
            self.which, pn.pane.HoloViews(self.heat * self._marks), self.heat_caption, self.selection,
            pn.Row(self.raster_pane, self.series_pane),
        )

    # -- state ------------------------------------------------------------------------
    def _first_pop(self, area: str) -> str:
        idx = [p for p in POPS if (area, p) not in ABSENT]
        n = self.data.rates().sel(area=area)
        present = [p for p in idx if np.isfinite(float(n.sel(pop=p)))]
        return (present or idx)[0]

    def select(self, area: str, pop: str) -> None:
        """Show the raster and the rates of ``area`` with ``pop`` highlighted."""
        if area not in self.data.areas or (area, pop) in ABSENT:
            return
        self.area, self.pop = area, pop
        self.raster_pane.object = self._raster_object()
        self.series_pane.object = self._series_object()
        self._captions()

    def _on_tap(self, x=None, y=None, **_):
        if x is None or y is None:
            return
        self.select(str(x), _POP_FROM_LABEL.get(str(y), str(y)))

    def refresh(self) -> bool:
        """Read new segments (and status); redraw if anything changed. True if it did."""
        before = (self.data.status, self.data.n_segments)
        shown = self._range_stream.x_range if self._range_stream is not None else None
        at_end = shown is not None and shown[1] >= self.data.t_committed[1] - 0.05 * (shown[1] - shown[0])
        new = self.data.refresh()
        if self.data.theory is not None and "theory" not in self.which.options:
            self.which.options = ["simulation", "theory"]
        changed = bool(new) or before != (self.data.status, self.data.n_segments) or (
            self.data.writer_gone is not None and self.data.writer_gone not in self.progress.object)
        if changed:
            self.bar.max = max(1, self.data.planned)
            self.bar.value = min(self.data.n_segments, self.bar.max)
            self.progress.object = self._progress_html()
            self._heat_tick.event()
            if new:
                obj = self._raster_object()  # a new one when it passes --datashade-above
                if obj is not self.raster_pane.object:
                    self.raster_pane.object = obj
                self._data_tick.event()
                if at_end:
                    # Datashader aggregates the range its stream holds (the view's): the new
                    # time too, unless the view was moved away from the end
                    self._range_stream.event(x_range=self.data.t_committed)
            self._captions()
        return changed

    def redraw_heat(self) -> None:
        self._heat_tick.event()
        self._captions()

    # -- texts (also what the browser test reads) ----------------------------------------
    def _progress_html(self) -> str:
        d = self.data
        t0, t1 = d.t_committed
        err = f" — {html.escape(str(d.error))}" if d.status == "failed" and d.error else ""
        if d.writer_gone:
            err = f" — its writer, {html.escape(d.writer_gone)}, ended without finishing (killed?)"
        return _text("mamxr-progress",
                     f"<b>{html.escape(self.title)}</b>: status <b>{d.status}</b>{err} · "
                     f"<b>{d.n_segments}</b>/{d.planned} segments committed "
                     f"({t0:g}–{t1:g} ms of {d.t_sim:g} ms) · {d.n_spikes} spikes")

    def _captions(self) -> None:
        d = self.data
        da = self._heat_values()
        vals = np.asarray(da.values, dtype=float)
        finite = vals[np.isfinite(vals)]
        what = ("mean-field theory rate" if self.which.value == "theory"
                else f"simulated rate (all spikes, {d.t_committed[0]:g}–{d.t_committed[1]:g} ms)")
        mean = f"{finite.mean():.4f}" if finite.size else "n/a"
        self.heat_caption.object = _text(
            "mamxr-heat", f"Heat map: {what}; mean over {finite.size} populations "
            f"<b>{mean}</b> spikes/s. Click a cell to see its area.")
        counts = d.counts().sel(area=self.area)
        shown = int(counts.sum())
        engine = "Datashader" if self.datashaded else "points"
        theory = ""
        th = d.theory_rates()
        if th is not None:
            theory = f"; theory {float(th.sel(area=self.area, pop=self.pop)):.4f} spikes/s"
        rate = float(d.rates().sel(area=self.area, pop=self.pop))
        self.selection.object = _text(
            "mamxr-selection",
            f"Selected <b>{self.area} {viz.POP_LABELS[self.pop]}</b>: "
            f"<span class='mamxr-pop-spikes'>{int(counts.sel(pop=self.pop))}</span> spikes, "
            f"rate {rate:.4f} spikes/s{theory}. Raster of {self.area}: "
            f"<span class='mamxr-area-spikes'>{shown}</span> spikes ({engine}).")

    # -- figures ------------------------------------------------------------------------
    def _heat_values(self):
        if self.which.value == "theory" and self.data.theory is not None:
            return self.data.theory_rates()
        return self.data.rates()

    def _heat_frame(self):
        da = self._heat_values()
        finite = np.asarray(da.values, dtype=float)
        finite = finite[np.isfinite(finite)]
        if not finite.size:  # nothing committed yet: a blank frame of the simulated areas
            da = da.fillna(0.0).sel(area=self.data.areas or ["V1"])
        return da

    def _heat(self, counter=0):
        da = self._heat_frame()
        window = f" ({da.attrs['window']})" if "window" in da.attrs else ""
        heat = viz.rate_heatmap(da, title=f"{self.title}: {da.attrs.get('long_name', 'rate')}{window}").get(0)
        return heat.opts(hooks=[_named(HEAT_NAME)], tools=["hover", "tap"],
                         framewise=True, width=min(1300, max(360, 90 + 40 * da.sizes["area"])),
                         height=300)

    @property
    def datashaded(self) -> bool:
        """True if the raster of the selected area is drawn with Datashader."""
        return int(self.data.counts().sel(area=self.area).sum()) > self.datashade_above

    def _raster_object(self):
        key = (self.area, self.pop, self.datashaded)
        if key == self._raster_key:
            return self._raster_obj
        self._raster_key = key
        self._last_range, self._range_stream = None, None
        points = hv.DynamicMap(self._raster, streams=[self._data_tick])
        if not key[2]:
            self._raster_obj = points
        else:
            import datashader as ds
            from holoviews.operation.datashader import datashade, dynspread

            shaded = dynspread(datashade(points, aggregator=ds.count_cat("group"),
                                         color_key=RASTER_COLOURS, min_alpha=80), threshold=0.5, max_px=2)
            self._raster_obj = shaded.opts(hooks=[_named(RASTER_NAME), self._shaded_title,
                                                  self._follow_time],
                                           width=_WIDTH, height=320)
            self._range_stream = _find_stream(self._raster_obj, hv.streams.RangeXY)
        return self._raster_obj

    def _series_object(self):
        return hv.DynamicMap(self._series, streams=[self._data_tick])

    def _shows_the_end(self, start, end) -> bool:
        """True if a time axis from ``start`` to ``end`` shows the end of what was drawn
        last (within 5 % of its width): it then follows new segments, as a log viewer
        follows its file; a view zoomed into earlier times stays where it is."""
        if self._last_range is None or start is None or end is None:
            return True
        return end >= self._last_range[1] - 0.05 * max(end - start, self.data.dt)

    def _follow_time(self, plot, element):
        """Keep the raster's time axis on the committed time while it shows the end."""
        t0, t1 = self.data.t_committed
        r = plot.state.x_range
        if t1 <= t0 or not self._shows_the_end(r.start, r.end):
            return
        if (r.start, r.end) != (t0, t1):
            r.start, r.end = t0, t1
        self._last_range = (t0, t1)

    def _raster(self, counter=0):
        df, meta = self.data.raster_table(self.area, self.pop)
        t0, t1 = self.data.t_committed
        pts = hv.Points(df, kdims=[hv.Dimension("time", label="Time", unit="ms"),
                                   hv.Dimension("y", label="Neuron")],
                        vdims=[hv.Dimension("pop", label="Population"), "neuron", "group"])
        return pts.opts(color="group", cmap=RASTER_COLOURS, size=3, width=_WIDTH, height=320,
                        yticks=sorted(meta["ticks"].items()), show_legend=False,
                        xlim=(t0, max(t1, t0 + self.data.dt)), ylim=(0, max(1, meta["rows"])),
                        tools=["hover"], hooks=[_named(RASTER_NAME), self._follow_time],
                        title=self._raster_title(len(df)))

    def _raster_title(self, n: int, how: str = "") -> str:
        return f"{self.area} raster, {viz.POP_LABELS[self.pop]} in black ({n} spikes{how})"

    def _shaded_title(self, plot, element):
        # the image carries no title of its own: set on every update (hooks run on each)
        n = int(self.data.counts().sel(area=self.area).sum())
        plot.state.title.text = self._raster_title(n, ", Datashader")

    def _series(self, counter=0):
        da = self.data.rate_series(self.area)
        curves = []
        for p in da["pop"].values:
            sel = p == self.pop
            c = hv.Curve((da["time"].values, da.sel(pop=p).values),
                         hv.Dimension("time", label="Time", unit="ms"),
                         hv.Dimension("rate", label="Rate", unit="spikes/s"), label=viz.POP_LABELS[p])
            curves.append(c.opts(color="black" if sel else RASTER_COLOURS[p[-1]],
                                 line_width=2.5 if sel else 1.0, framewise=True))
        th = self.data.theory_rates()
        if th is not None:
            val = float(th.sel(area=self.area, pop=self.pop))
            if np.isfinite(val):
                curves.append(hv.HLine(val).opts(color="black", line_dash="dashed", line_width=1.5))
        title = (f"{self.area} rates ({da.attrs['bin_ms']:g} ms bins); "
                 f"{viz.POP_LABELS[self.pop]} black" + ("; theory dashed" if th is not None else ""))
        return hv.Overlay(curves).opts(width=_WIDTH, height=320, title=title, show_legend=False,
                                       framewise=True, hooks=[_named(SERIES_NAME)])


class SweepView:
    """The rates of a sweep at the point chosen with its sliders; a click shows the point's run."""

    def __init__(self, data: SweepData, *, datashade_above: int = 1_000_000, title: str | None = None):
        self.data = data
        self.title = title or data.path.name
        self.datashade_above = datashade_above
        self.status = pn.pane.HTML(self._status_html(), sizing_mode="stretch_width")
        self.heat_caption = pn.pane.HTML("", sizing_mode="stretch_width")
        self.detail = pn.Column()
        self._tick = hv.streams.Counter()
        self.panel = pn.Column(self.status)
        self.widgets: dict = {}
        self.stale = False
        self._points_shown = self._points_now()
        if data.ds is None or not data.variables:
            self.panel.append(pn.pane.HTML(_text("mamxr-heat", "This sweep has no combined results yet "
                                                 "(sweep.zarr); they appear when it finishes.")))
            return
        for dim in data.dims:
            values = data.values(dim)
            if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
                w = _widget(pn.widgets.DiscreteSlider, dim, options=values, value=values[0], width=360)
            else:
                w = _widget(pn.widgets.Select, dim, options=[str(v) for v in values], value=str(values[0]))
            w.param.watch(lambda e: self.redraw(), "value")
            self.widgets[dim] = w
        kinds = list(data.variables)
        self.which = pn.widgets.RadioButtonGroup(options=kinds, value=kinds[0])
        self.which.param.watch(lambda e: self.redraw(), "value")
        self.heat = hv.DynamicMap(self._heat, streams=[self._tick])  # the HeatMap alone: see RunView
        self.tap = hv.streams.Tap(source=self.heat, x=None, y=None)
        self.tap.add_subscriber(self._on_tap)
        marks = viz.rate_heatmap(self.data.frame(self.which.value, self.point())).get(1)
        self._caption()
        self.panel.extend([pn.Row(*self.widgets.values(), self.which), pn.pane.HoloViews(self.heat * marks),
                           self.heat_caption, self.detail])

    def _points_now(self) -> dict:
        if self.data.ds is None:
            return {}
        return {d: [str(v) for v in self.data.values(d)] for d in self.data.dims}

    def point(self) -> dict:
        out = {}
        for dim, w in self.widgets.items():
            values = self.data.values(dim)
            out[dim] = w.value if w.value in values else values[[str(v) for v in values].index(w.value)]
        return out

    def _clim(self):
        var = self.data.variables[self.which.value]
        vals = np.asarray(self.data.ds[var].values, dtype=float)
        vals = vals[np.isfinite(vals)]
        hi = float(vals.max()) if vals.size else 1.0
        return (0.0, hi if hi > 0 else 1.0)

    def _heat(self, counter=0):
        da = self.data.frame(self.which.value, self.point())
        where = ", ".join(f"{k} = {v:g}" if isinstance(v, float) else f"{k} = {v}"
                          for k, v in self.point().items())
        heat = viz.rate_heatmap(da, title=f"{self.title} at {where}: {da.attrs['long_name']}",
                                clim=self._clim()).get(0)  # one colour scale for every point
        n_areas = int(np.isfinite(da).any("pop").sum())
        return heat.opts(hooks=[_named(HEAT_NAME)], tools=["hover", "tap"],
                         width=min(1300, max(360, 90 + 40 * n_areas)), height=300)

    def _caption(self) -> None:
        da = self.data.frame(self.which.value, self.point())
        vals = np.asarray(da.values, dtype=float)
        finite = vals[np.isfinite(vals)]
        where = ", ".join(f"{k} = {v}" for k, v in self.point().items())
        mean = f"{finite.mean():.4f}" if finite.size else "n/a"
        self.heat_caption.object = _text(
            "mamxr-heat", f"Heat map: {self.which.value} rates at <b>{where}</b>; mean over "
            f"{finite.size} populations <b>{mean}</b> spikes/s. Click a cell to see the point's run.")

    def _status_html(self) -> str:
        st = self.data.status
        c = st["counts"]
        return _text("mamxr-progress", f"<b>{html.escape(self.title)}</b>: sweep over "
                     f"{', '.join(st.get('dims', []))}: {c['complete']} complete, {c['failed']} failed, "
                     f"{c['running']} running, {c['pending']} pending")

    def redraw(self) -> None:
        self._tick.event()
        self._caption()

    def _on_tap(self, x=None, y=None, **_):
        if x is None or y is None:
            return
        area, pop = str(x), _POP_FROM_LABEL.get(str(y), str(y))
        path = self.data.point_run(self.point())
        if path is None:
            self.detail.objects = [pn.pane.HTML(_text("mamxr-selection", f"Selected <b>{area} "
                                                      f"{viz.POP_LABELS.get(pop, pop)}</b>: this point "
                                                      "has no run store (a theory-only sweep)."))]
            return
        view = RunView(RunData(path), datashade_above=self.datashade_above,
                       title=f"{self.title} / {path.parent.name}")
        view.select(area, pop)
        self.detail.objects = [view.panel]

    def refresh(self) -> bool:
        changed = self.data.refresh()
        self.status.object = self._status_html()
        if changed:
            # results with other points (or the first ones): the page builds the view anew
            self.stale = self._points_now() != self._points_shown
            if self.widgets and not self.stale:
                self.redraw()
        return changed


class Page:
    """One browser session: the entry selector and the view of the chosen entry."""

    def __init__(self, directory, *, interval: float = 1.0, datashade_above: int = 1_000_000):
        self.directory = directory
        self.datashade_above = datashade_above
        self.entries = {self._label(e): e for e in discover(directory)}
        self.choose = _widget(pn.widgets.Select, "Run store or sweep", options=list(self.entries),
                              width=420)
        self.choose.param.watch(lambda e: self.show(e.new), "value")
        self.message = pn.pane.HTML("", sizing_mode="stretch_width")
        self.body = pn.Column()
        self.view = None
        self.panel = pn.Column(
            pn.pane.HTML(f"<h2>mam_xr runs and sweeps under {html.escape(str(directory))}</h2>"),
            self.choose, self.message, self.body, sizing_mode="stretch_width")
        wanted = self._wanted()
        if wanted is not None and wanted != self.choose.value:
            self.choose.value = wanted  # shows it
        elif self.entries:
            self.show(self.choose.value)
        self._ticks = 0
        self._period = max(1, int(round(interval * 1000)))

    def _wanted(self) -> str | None:
        """The entry named by the page's ``?entry=NAME`` (a bookmarkable view), if any."""
        args = getattr(pn.state, "session_args", None) or {}
        names = [v.decode() if isinstance(v, bytes) else str(v) for v in args.get("entry", [])]
        for label, e in self.entries.items():
            if names and names[0] in (e.name, label):
                return label
        return None

    @staticmethod
    def _label(e) -> str:
        return f"{e.kind}: {e.name}"

    def show(self, label: str) -> None:
        e = self.entries.get(label)
        if e is None:
            return
        try:
            if e.kind == "run":
                self.view = RunView(RunData(e.path), datashade_above=self.datashade_above, title=e.name)
            else:
                self.view = SweepView(SweepData(e.path), datashade_above=self.datashade_above, title=e.name)
            self.message.object = ""
            self.body.objects = [self.view.panel]
        except Exception as exc:  # noqa: BLE001 - one damaged store must not stop the page
            self.view = None
            self.body.objects = []
            self.message.object = _text("mamxr-error", f"{html.escape(e.name)} cannot be shown: "
                                        f"{html.escape(describe_error(exc))}")

    def poll(self) -> None:
        """The periodic callback: refresh the entry shown; every 10th call, look for new entries."""
        self._ticks += 1
        if self.view is not None:
            try:
                self.view.refresh()
                if getattr(self.view, "stale", False):
                    self.show(self.choose.value)
            except Exception as exc:  # noqa: BLE001 - e.g. a store replaced while being read
                self.message.object = _text("mamxr-error", html.escape(describe_error(exc)))
        if self._ticks % 10 == 0:
            found = {self._label(e): e for e in discover(self.directory)}
            if list(found) != list(self.entries):
                self.entries = found
                self.choose.options = list(found)

    def start(self) -> None:
        pn.state.add_periodic_callback(self.poll, period=self._period)


def make_page(directory, *, interval: float = 1.0, datashade_above: int = 1_000_000):
    """The Panel page of one session (its periodic refresh is started when served)."""
    page = Page(directory, interval=interval, datashade_above=datashade_above)
    if pn.state.curdoc is not None and pn.state.curdoc.session_context is not None:
        page.start()
    return page.panel
