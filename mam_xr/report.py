"""One self-contained HTML report of a run: figures, parameters and provenance.

:func:`write_report` draws the figures of :mod:`mam_xr.viz` from the data it
is given (any of structure, theory, statistics, spikes), renders them with
Bokeh and writes a single HTML file with Bokeh's JavaScript and CSS inlined:
no CDN, no server, so it opens offline and can be mailed to a colleague.
A sweep (statistics with extra dims such as ``chi``) gets figures against
the swept parameter and, at the top of the page, a slider per numeric sweep
dim that switches every per-point figure and headline to the chosen point
(:mod:`mam_xr.report_sweep`).  The report takes data, not a run store: the
command line reads the store and passes its Datasets (viz is the last stage;
docs/architecture.md).  Which statistic variable each figure draws comes from the analysis registry
(the ``figures`` of each :class:`mam_xr.analysis.Statistic`); docs/figures.md.
"""

from __future__ import annotations

import datetime as _dt
import functools
import html
import json
import re
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import xarray as xr

import holoviews as hv

from . import __version__, analysis, report_bokeh, report_sweep, viz
from . import params as params_module
from .errors import MamXrError, ParameterError, invalid

__all__ = ["write_report", "report_for", "report_sections"]

# Which variable each figure draws comes from the analysis registry: every
# Statistic lists its default figures (kind, variable, short label); see
# mam_xr.analysis.registry.Figure for the kinds.


def _flat_name(stat: str, var: str) -> str:
    """Name of a statistic's variable in a sweep's combined Dataset (mam_xr.sweep)."""
    return var if var.startswith(stat) else f"{stat}_{var}"


def _figures(kind: str) -> list[tuple[str, analysis.Figure]]:
    return analysis.figures(kind)


_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 1.5em auto;
       max-width: 1250px; color: #222; padding: 0 1em; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; } h2 { font-size: 1.25em; margin-top: 1.8em;
     border-bottom: 1px solid #ddd; padding-bottom: 0.2em; }
p.note { color: #555; font-size: 0.92em; max-width: 60em; }
table.kv { border-collapse: collapse; font-size: 0.88em; }
table.kv td, table.kv th { border: 1px solid #ddd; padding: 2px 8px; text-align: left;
                           vertical-align: top; }
table.kv th { background: #f4f4f4; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
nav a { margin-right: 1em; } .figure { margin: 0.6em 0 1.2em 0; }
.warn { color: #8a4b00; }
.sweep-control { position: sticky; top: 0; z-index: 100; background: #fff; padding: 0.2em 0 0.4em 0;
                 border-bottom: 1px solid #ddd; }
"""


# Page skeleton: our HTML with the Bokeh roots embedded in place; resources inline.
_TEMPLATE = """{% from macros import embed %}<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{{ title | e }}</title>
<style>{{ page_css }}</style>
{{ bokeh_css }}
{{ bokeh_js }}
</head>
<body>
{% for part, root, cls in items %}{{ part }}
{% if root %}<div class="{{ cls }}">{{ embed(docs[0].roots[root]) }}</div>
{% endif %}{% endfor %}
{{ plot_script }}
</body>
</html>
"""


def _pick(stats, stat: str, var: str, *, time: bool = False):
    """Variable ``var`` of statistic ``stat`` in ``stats`` (a dict of Datasets as
    ``analyze`` returns, or one merged Dataset), or None.  ``time``: the variable
    must (True) or must not (False) have a ``time`` dim."""
    if stats is None:
        return None
    if isinstance(stats, Mapping):
        ds = stats.get(stat)
        candidates = [ds[var]] if isinstance(ds, xr.Dataset) and var in ds.data_vars else []
    elif isinstance(stats, xr.Dataset):
        candidates = [stats[n] for n in (var, _flat_name(stat, var)) if n in stats.data_vars]
    else:
        return None
    for da in candidates:
        if ("time" in da.dims) == time:
            return da
    return None


def _pick_kind(stats, kind: str, *, time: bool = False):
    """(Figure, DataArray) of the first registered figure of ``kind`` present in ``stats``."""
    for stat, fig in _figures(kind):
        da = _pick(stats, stat, fig.variable, time=time)
        if da is not None:
            return fig, da
    return None, None


def _first_point(da: xr.DataArray, core: Sequence[str]) -> tuple[xr.DataArray, str]:
    """Select the first point of every dim outside ``core``; describe the choice."""
    extra = [d for d in da.dims if d not in core]
    if not extra:
        return da, ""
    sel = {d: 0 for d in extra}
    out = da.isel(sel)
    desc = ", ".join(f"{d} = {_fmt(out[d].item()) if d in out.coords else 0}" for d in extra)
    return out, f"Shown for the first point of the sweep ({desc})."


def _theory_rate(theory) -> xr.DataArray | None:
    """The theory's rates (area, pop[, ...]) from a DataArray or a Dataset."""
    if not isinstance(theory, xr.Dataset):
        return theory
    name = next((v for v in ("rate", "final_rate") if v in theory.data_vars),
                next(iter(theory.data_vars)) if len(theory.data_vars) == 1 else None)
    if name is None:
        raise ParameterError(invalid("theory", list(theory.data_vars)[:10],
                                     "a Dataset with a 'rate' or 'final_rate' variable"))
    return theory[name]


def _fmt(x) -> str:
    if isinstance(x, (float, np.floating)):
        return f"{x:.6g}"
    return str(x)


# --- rendering ------------------------------------------------------------------------

def _table(rows: Sequence[tuple], header=("name", "value")) -> str:
    body = "".join(
        f"<tr><td>{html.escape(str(r[0]))}</td><td class='{'num' if isinstance(r[1], (int, float)) else ''}'>"
        f"{html.escape(_fmt(r[1]))}</td>" + "".join(f"<td>{html.escape(str(x))}</td>" for x in r[2:]) + "</tr>"
        for r in rows)
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    return f"<table class='kv'><tr>{head}</tr>{body}</table>"


#: Units as the parameter descriptions of mam_xr.params write them, "(unit)" or "(unit; ...)".
_UNITS = ("ms", "mV", "pF", "pA", "mm²", "mm/ms", "spikes/s", "synapses per neuron")


@functools.lru_cache(maxsize=1)
def _param_units() -> dict[str, str]:
    """Dotted parameter path -> units, from the field descriptions of mam_xr.params.Params."""
    from pydantic import BaseModel

    out: dict[str, str] = {}

    def walk(model, prefix):
        for name, field in model.model_fields.items():
            ann = field.annotation
            if isinstance(ann, type) and issubclass(ann, BaseModel):
                walk(ann, f"{prefix}{name}.")
                continue
            m = re.search(r"\(([^()]*)\)", field.description or "")
            unit = m.group(1).split(";")[0].strip() if m else ""
            out[f"{prefix}{name}"] = unit if unit in _UNITS else ""

    walk(params_module.Params, "")
    return out


def _unit_of(key: str, value, units: dict[str, str]) -> str:
    """Units of a parameter table row: its documented units, "1" for other plain numbers."""
    if key in units and units[key]:
        return units[key] if isinstance(value, (int, float)) and not isinstance(value, bool) else ""
    return "1" if isinstance(value, float) else ""


_RATE_DEFINITIONS = (
    "Mean over populations: the plain average of the population rates in the heat map, each being "
    "the population's spikes in the analysis window divided by its simulated neurons and the "
    "window's length (docs/model.md eq. A1). Neuron-weighted: the same rates weighted by the "
    "populations' neuron numbers, i.e. the spike rate of an average neuron of the simulated areas.")


def _silent_rows(layout) -> str:
    """A sentence on the empty raster rows: the share of neurons shown without a spike."""
    parts = []
    for pts in (layout if isinstance(layout, hv.Layout) else [layout]):
        if not isinstance(pts, hv.Points) or not len(pts):
            continue
        kw = pts.opts.get("plot", backend="bokeh").kwargs
        rows = kw.get("ylim", (0, 0))[1]
        active = np.unique(pts.dimension_values("y")).size
        if rows:
            area = str(kw.get("title", "")).split(" (")[0]
            parts.append(f"{area} {100 * (1 - active / rows):.0f} %")
    if not parts:
        return ""
    return ("Empty bands are neurons that did not spike in the window shown (their share of the rows: "
            + ", ".join(parts) + ").")


def _flatten(d, prefix: str = "") -> list[tuple[str, object]]:
    out: list[tuple[str, object]] = []
    if isinstance(d, Mapping):
        for k, v in d.items():
            out.extend(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    elif isinstance(d, (list, tuple)) and d and all(isinstance(x, Mapping) for x in d):
        for i, v in enumerate(d):
            out.extend(_flatten(v, f"{prefix}[{i}]"))
    else:
        if isinstance(d, (list, tuple)):
            d = ", ".join(map(_fmt, d)) if len(d) <= 40 else f"{len(d)} items: " + ", ".join(map(_fmt, d[:8])) + ", ..."
        out.append((prefix, d))
    return out


def _params_dict(params) -> dict:
    if params is None:
        return {}
    if hasattr(params, "model_dump"):
        d = params.model_dump(mode="json")
        if hasattr(params, "label"):
            try:
                d = {"label": params.label(), **d}
            except Exception:  # noqa: BLE001 - a label is a nicety, not required
                pass
        return d
    if isinstance(params, (str, bytes)):
        return json.loads(params)
    if isinstance(params, Mapping):
        return dict(params)
    raise TypeError(f"params must be a Params, a mapping or a JSON string, not {type(params).__name__}")


_EXTERNAL = re.compile(r"""<script\b[^>]*\bsrc=["'][^"']*["'][^>]*>\s*</script>|"""
                       r"""<link\b[^>]*\bhref=["'](?:https?:)?//[^"']*["'][^>]*>""", re.IGNORECASE)


def _strip_external(page: str) -> str:
    """Drop references to files outside the page.

    With Panel installed (HoloViews imports it), Bokeh's bundle gains a
    ``<script src="static/extensions/panel/...">`` for Panel's ES-module
    components, which this report does not use; offline (or from a mail
    attachment) such a reference only produces a load error.
    """
    return _EXTERNAL.sub("", page)


# --- the report -----------------------------------------------------------------------

# Section order follows upstream's tutorial figures (docs/figures.md): rates, instantaneous
# rate, rate over time, rasters, box plots and area series, FC, connectivity.
def report_sections(*, structure=None, theory=None, stats=None, spikes=None,
                    raster_areas: Sequence[str] = ("V1", "V2", "FEF"), raster_fraction: float = 1.0,
                    time_series_areas: Sequence[str] = ("V1", "V2", "FEF"),
                    max_heatmap_bins: int = 2000, leave_out: Sequence[str] = ()) -> list[dict]:
    """The figures of a report: a list of {id, title, note, figure} (HoloViews objects).

    ``leave_out``: ids of sections not to draw (e.g. ``"connectivity"``).

    Figures whose inputs are missing are left out; figures whose input does not
    fit (e.g. an area not simulated) get ``figure=None`` and the reason in ``note``.
    The instantaneous-rate heat map shows at most ``max_heatmap_bins`` time bins
    (the first ones; the note says which), since every cell is embedded in the page.
    """
    sections: list[dict] = []
    neurons = structure["neurons"] if isinstance(structure, xr.Dataset) and "neurons" in structure else None

    def add(id_, title, make, note=""):
        if id_ in leave_out:
            return
        try:
            fig = make()
        except (MamXrError, KeyError) as err:  # data that does not fit this figure: say why
            sections.append({"id": id_, "title": title, "figure": None,
                             "note": f"Not drawn: {err}"})
            return
        sections.append({"id": id_, "title": title, "figure": fig, "note": note})

    _, rate = _pick_kind(stats, "population_heatmap")
    if rate is not None:
        add("rates", "Time-averaged population rates",
            lambda: viz.rate_heatmap(rate),
            "Area × population; TH has no layer 4 (×). Hover for values."
            + (" Use the selector to move along the sweep." if set(rate.dims) - {"area", "pop"} else "")
            + " " + _RATE_DEFINITIONS)
        r1, n1 = _first_point(rate, ("area", "pop"))
        w = neurons.where(np.isfinite(r1)) if neurons is not None else None
        mean = float(r1.mean(skipna=True))
        text = f"Mean over populations: {mean:.3f} spikes/s"
        if w is not None:
            text += f"; neuron-weighted: {float((r1 * w).sum() / w.sum()):.3f} spikes/s"
        point = re.search(r"\((.*)\)", n1)
        sections[-1]["summary"] = text + (f" ({point.group(1)})" if point else "") + "."
    for stat, fig in _figures("population_heatmap")[1:]:     # further (area, pop) heat maps
        da = _pick(stats, stat, fig.variable)
        if da is not None:
            add(f"heatmap_{stat}_{fig.variable}", f"{fig.label} per population",
                lambda da=da, fig=fig: viz.rate_heatmap(da, title=fig.label),
                "Area × population. Hover for values.")
    _, ts = _pick_kind(stats, "time_heatmap", time=True)
    _, ts_line = _pick_kind(stats, "time_series", time=True)
    _, ts_area = _pick_kind(stats, "area_series", time=True)
    any_ts = next((x for x in (ts, ts_line, ts_area) if x is not None), None)
    if any_ts is not None:   # areas with data, and the chosen ones among them
        a1 = _first_point(any_ts, ("area", "pop", "time"))[0]
        with_data = [str(a) for a, ok in zip(a1["area"].values,
                                             np.isfinite(a1).any([d for d in a1.dims if d != "area"]).values)
                     if ok]
        areas = [a for a in time_series_areas if a in with_data]
    if ts is not None:
        ts1, n1 = _first_point(ts, ("area", "pop", "time"))
        t = ts1["time"].values
        window, n_win = None, ""
        if t.size > max_heatmap_bins:  # keep the page small: 32 x bins cells are embedded
            window = (float(t[0]), float(t[max_heatmap_bins - 1]))
            n_win = (f"The first {max_heatmap_bins} bins ({window[0]:g}–{window[1]:g} ms) of "
                     f"{t[0]:g}–{t[-1]:g} ms are shown. ")
        add("instantaneous", "Instantaneous firing rate over areas",
            lambda: viz.instantaneous_rate(ts1, neurons=neurons, time=window), n_win + n1)
    if ts_line is not None:
        tl1, n1 = _first_point(ts_line, ("area", "pop", "time"))
        add("rate_over_time", "Rate over time: all areas and chosen areas",
            lambda: viz.rate_time_series(tl1, areas=areas, neurons=neurons),
            "The black curve is the network rate in each bin (all simulated neurons pooled, i.e. "
            "the area rates weighted by their neuron numbers); the rate in the title and the dashed "
            "line are its average over the bins shown. " + n1)
    if spikes is not None:
        add("raster", "Spike rasters",
            lambda: viz.raster(spikes, areas=raster_areas, fraction=raster_fraction, neurons=structure),
            "Excitatory neurons blue, inhibitory red; populations stacked 2/3E (top) to 6I (bottom); "
            "one row per neuron shown.")
        if sections[-1]["figure"] is not None:
            sections[-1]["note"] += " " + _silent_rows(sections[-1]["figure"])
    boxes = [(fig, _pick(stats, stat, fig.variable)) for stat, fig in _figures("box")]
    boxes = [(fig, v) for fig, v in boxes if v is not None]
    if boxes:
        notes, arrays, names = [], {}, []
        for fig, v in boxes:
            v1, n1 = _first_point(v, ("area", "pop"))
            long = str(v1.attrs.get("long_name", fig.label))
            # short axis labels (long ones are cut in a third of the page width); long names in the note
            arrays[fig.variable] = v1.rename(fig.variable).assign_attrs(long_name=fig.label)
            names.append(f"{fig.label}: {long}")
            notes.append(n1)
        ds = xr.Dataset(arrays)
        title = ", ".join(f.label for f, _ in boxes)
        add("boxes", f"{title} across areas",
            lambda: viz.box_plots(ds, list(arrays)), "One box per population over the simulated areas; × = mean. "
            + "; ".join(names) + ". " + next((n for n in notes if n), ""))
    if ts_area is not None:
        ta1, n1 = _first_point(ts_area, ("area", "pop", "time"))
        add("area_rates", "Area rate time series",
            lambda: viz.area_rate_time_series(ta1, areas=areas or with_data[:3], neurons=neurons), n1)
    if theory is not None and rate is not None:
        th = _theory_rate(theory)
        th1, n_th = _first_point(th, ("area", "pop", "draw"))
        r1, n1 = _first_point(rate, ("area", "pop"))
        add("theory", "Mean-field theory vs simulation", lambda: viz.theory_vs_simulation(th1, r1),
            "Population rates; dashed: identity. Theory: the stationary rates of the model's "
            "mean-field equations (docs/theory.md), a prediction rather than a measurement. "
            + (n_th or n1))
    fc_fig, fc = _pick_kind(stats, "fc")
    if fc is not None:
        exp = next((_pick(stats, stat, f.reference) for stat, f in _figures("fc")
                    if f is fc_fig and f.reference), None)
        fc1, n1 = _first_point(fc, fc.dims[-2:])
        exp1 = _first_point(exp, exp.dims[-2:])[0] if exp is not None else None
        add("fc", "Functional connectivity: simulation vs experiment",
            lambda: viz.functional_connectivity(fc1, exp1),
            "Area order of upstream's figure with MSTl included; experimental FC from macaque "
            "resting-state fMRI (Babapoor-Farrokhran et al. 2013), second hemisphere block as upstream. "
            + n1)
    if structure is not None:
        add("connectivity", "Inter-areal connectivity", lambda: viz.connectivity_matrix(structure),
            "Area-level indegree of each target area from each source area, relative to its total "
            "indegree including the external input (as upstream); log colour scale, zeros white.")
    return sections


# --- a sweep (mam_xr.report_sweep draws it) -------------------------------------------------

#: Statistics drawn against the swept parameter: name in viz.SWEEP_STATISTICS -> (statistic, variable).
_AGAINST = {"rate": ("rates", "rate"), "lvr": ("irregularity", "lvr"), "corrcoef": ("correlation", "corrcoef"),
            "synchrony": ("synchrony", "synchrony"), "fc_similarity": ("functional_connectivity", "fc_similarity")}


def _against_arrays(stats, theory) -> dict[str, xr.DataArray]:
    """The variables of the figures against the swept parameter, by their names in viz."""
    arrays = {name: da for name, (stat, var) in _AGAINST.items() if (da := _pick(stats, stat, var)) is not None}
    th = _theory_rate(theory)
    if th is not None:
        arrays["theory_rate"] = th
    return arrays


def write_report(path, *, structure=None, theory=None, stats=None, spikes=None, params=None,
                 provenance=None, title: str = "mam_xr run report",
                 raster_areas: Sequence[str] = ("V1", "V2", "FEF"), raster_fraction: float = 1.0,
                 time_series_areas: Sequence[str] = ("V1", "V2", "FEF"), atlas=None) -> Path:
    """Write one self-contained HTML file with the figures, parameters and provenance.

    Parameters
    ----------
    path : str or Path
        Output file (``.html``).
    structure : xr.Dataset, optional
        Structure Dataset (connectivity figure; neuron numbers for weighting).
    theory : xr.Dataset or xr.DataArray, optional
        Mean-field result (``rate`` (area, pop[, draw]) in spikes/s).
    stats : dict of str -> xr.Dataset, or xr.Dataset, optional
        Statistics as :func:`mam_xr.analysis.analyze` returns them (``rates``,
        ``rate_time_series``, ``correlation``, ``irregularity``,
        ``functional_connectivity``, ...), or one Dataset holding ``rate``,
        ``corrcoef``, ``lvr``, ``rate_time_series``, ``fc``, ``fc_experimental``.
        Extra (sweep) dims, e.g. ``chi``: figures against the swept parameter and
        a slider per numeric sweep dim (a select for others) at the top of the
        page that switches every per-point figure and headline; points without
        rates are left out.
    spikes : optional
        Spikes for the rasters, any form :func:`mam_xr.viz.spike_table` accepts.
    params : Params, mapping or JSON str, optional
        Parameters, shown as a table.
    provenance : mapping, optional
        Versions, data sources, timings, labels ..., shown as a table.
    title : str
    raster_areas, raster_fraction, time_series_areas
        Areas and neuron fraction of the rasters, areas of the time-series plots.
    atlas : xr.Dataset, optional
        A theory atlas over the swept parameter (:func:`mam_xr.atlas.atlas`): its
        branches are drawn with the sweep's theory and simulation.

    Returns
    -------
    Path
        The file written.  Bokeh's JavaScript is inlined (about 3 MB plus the data).
    """
    from bokeh.embed import file_html
    from bokeh.resources import INLINE
    from jinja2 import Template

    path = Path(path)
    if path.suffix.lower() not in (".html", ".htm"):
        raise ParameterError(invalid("path", str(path), "a file name ending in .html"))
    if all(x is None for x in (structure, theory, stats, spikes, params, provenance)):
        raise ParameterError(invalid("data", None, "at least one of structure, theory, stats, spikes, "
                                     "params, provenance"))
    options = dict(raster_areas=raster_areas, raster_fraction=raster_fraction,
                   time_series_areas=time_series_areas)
    ref = _pick_kind(stats, "population_heatmap")[1]
    if ref is None and isinstance(theory, (xr.DataArray, xr.Dataset)):
        try:                                   # a theory-only report can be a sweep too
            ref = _theory_rate(theory)
        except ParameterError:                 # report_sections says why it does not fit
            ref = None
    sweep = report_sweep.sweep_points(ref)
    controls = None
    if sweep is None:
        sections = report_sections(structure=structure, theory=theory, stats=stats, spikes=spikes, **options)
        rendered = {s["id"]: report_bokeh.render_section(s) for s in sections if s["figure"] is not None}
    else:
        sections, rendered, controls = report_sweep.sweep_report(
            sweep, theory=theory, stats=stats, spikes=spikes, atlas=atlas, against=_against_arrays,
            make_sections=functools.partial(report_sections, structure=structure, **options))
    items: list[tuple[str, str | None, str]] = []   # (HTML, name of the Bokeh root after it, its class)
    models = []
    for sec in sections:
        if sec["id"] in rendered:
            model = rendered[sec["id"]]
            model.name = f"fig_{sec['id']}"
            models.append(model)
    if controls is not None:
        controls.name = "sweep_controls"
        models.insert(0, controls)

    now = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    parts = [f"<h1>{html.escape(title)}</h1>",
             f"<p class='note'>Written {now} by mam_xr {html.escape(__version__)}. "
             "Interactive figures (Bokeh): hover for values, drag to pan, scroll to zoom, "
             "toolbar to reset or save a PNG.</p>"]
    nav = [(s["id"], s["title"]) for s in sections]
    if params is not None:
        nav.append(("parameters", "Parameters"))
    if provenance is not None:
        nav.append(("provenance", "Provenance"))
    parts.append("<nav>" + "".join(f"<a href='#{i}'>{html.escape(t.split(':')[0])}</a>"
                                   for i, t in nav) + "</nav>")
    if controls is not None:
        many = len(sweep["dims"]) > 1
        parts.append(f"<p class='note'>A sweep of {len(sweep['keys'])} points. "
                     f"{'The sliders below (they stay' if many else 'The slider below (it stays'} at the top of "
                     f"the page) {'choose' if many else 'chooses'} the point that the headlines and the per-point "
                     "figures show; the figures against the swept parameter mark it with a dotted line.</p>")
        items.append(("\n".join(parts), "sweep_controls", "sweep-control"))
        parts = []
    for s in sections:
        parts.append(f"<h2 id='{s['id']}'>{html.escape(s['title'])}</h2>")
        if s.get("summary"):
            ident = f" id='{s['summary_id']}'" if s.get("summary_id") else ""
            parts.append(f"<p><b{ident}>{html.escape(s['summary'])}</b></p>")
        if s["note"]:
            cls = "note warn" if s["figure"] is None else "note"
            ident = f" id='{s['note_id']}'" if s.get("note_id") else ""
            parts.append(f"<p class='{cls}'{ident}>{html.escape(s['note'])}</p>")
        if s["id"] in rendered:
            items.append(("\n".join(parts), f"fig_{s['id']}", "figure"))
            parts = []
    if params is not None:
        parts.append("<h2 id='parameters'>Parameters</h2>")
        rows = _flatten(_params_dict(params))
        units = _param_units()
        parts.append(_table([(k, v, _unit_of(k, v, units)) for k, v in rows], ("parameter", "value", "units")))
    if provenance is not None:
        parts.append("<h2 id='provenance'>Provenance</h2>")
        prov = provenance if isinstance(provenance, Mapping) else {"provenance": provenance}
        parts.append(_table(_flatten(dict(prov)), ("item", "value")))
    items.append(("\n".join(parts), None, ""))
    if models:
        page = file_html(models, resources=INLINE, title=title, template=Template(_TEMPLATE),
                         template_variables={"items": items, "page_css": _CSS})
    else:  # parameters / provenance only: no Bokeh needed
        page = Template(_TEMPLATE).render(items=items, page_css=_CSS, title=title, docs=[],
                                          bokeh_css="", bokeh_js="", plot_script="",
                                          macros=Template("{% macro embed(x) %}{% endmacro %}"))
    page = _strip_external(page)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page, encoding="utf-8")
    return path


# --- from a run store or a sweep directory (used by ``mam-xr report``) -------------------

def _sweep_vars() -> dict[str, tuple[str, str]]:
    """Names in a sweep's combined Dataset of every variable a figure draws -> (statistic, variable)."""
    out = {}
    for stat, fig in analysis.figures():
        for var in (fig.variable, fig.reference):
            if var:
                out[_flat_name(stat, var)] = (stat, var)
    for stat, var in _AGAINST.values():          # the figures against the swept parameter
        out[_flat_name(stat, var)] = (stat, var)
    return out


def _raster_choice(areas_simulated: Sequence[str], wanted: Sequence[str]) -> list[str]:
    chosen = [a for a in wanted if a in areas_simulated]
    return chosen or list(areas_simulated[:3])


def report_for(run_or_sweep, out=None, *, title: str | None = None,
               raster_areas: Sequence[str] = ("V1", "V2", "FEF"),
               max_raster_neurons: int = 3000, allow_incomplete: bool = False, atlas=None) -> Path:
    """Write the report of a run store or of a sweep directory.

    Parameters
    ----------
    run_or_sweep : path
        A run store (``mam_xr.simulation.simulate``; its statistics are computed
        with :func:`mam_xr.analysis.analyze` unless cached, and its ``theory``
        group is used when present) or a sweep directory holding ``sweep.zarr``
        (:func:`mam_xr.sweep.open_sweep`).
    out : path, optional
        HTML file (default: the input path with suffix ``.html``).
    allow_incomplete : bool
        Report the committed segments of a run that is still running, was
        interrupted or failed (a warning says so) instead of refusing it.
    title : str, optional
    raster_areas : sequence of str
        Areas of the rasters (those that were simulated; else the first three simulated).
    max_raster_neurons : int
        The rasters show at most about this many neurons per area (a fraction of each
        population), keeping full-scale reports small.
    atlas : xr.Dataset, optional
        Of a sweep: a theory atlas over its swept parameter (:func:`mam_xr.atlas.atlas`),
        drawn with the sweep's theory and simulation.

    Returns
    -------
    Path
        The HTML file written.
    """
    path = Path(run_or_sweep)
    out = Path(out) if out is not None else Path(str(path).rstrip("/")).with_suffix(".html")
    sweep_zarr = path / "sweep.zarr" if (path / "sweep.zarr").exists() else (
        path if path.name == "sweep.zarr" else None)
    if sweep_zarr is not None:
        return _report_for_sweep(sweep_zarr.parent, out, title=title, atlas=atlas)
    from .store import open_run

    run = open_run(path, allow_incomplete=allow_incomplete)
    stats = analysis.analyze(str(path), allow_incomplete=allow_incomplete)
    structure = run.structure()
    theory = None
    if (path / "theory").is_dir():  # written by `mam-xr run` (Dataset.to_zarr(group="theory"))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # consolidated-metadata notices of Zarr 3
            theory = xr.open_zarr(str(path), group="theory").load()
    simulated = list(dict.fromkeys(lab.split("-")[0] for lab in run.population_labels))
    areas = _raster_choice(simulated, raster_areas)
    rates = stats.get("rates")
    t_max = float(rates.attrs.get("t_max_ms")) if rates is not None and "t_max_ms" in rates.attrs else None
    spikes = run.spikes(area=areas, t_start=None if t_max is None else max(0.0, t_max - 500.0))
    per_area = {}
    for lab, n in zip(spikes.populations, spikes.n_neurons):
        per_area[lab.split("-")[0]] = per_area.get(lab.split("-")[0], 0) + int(n)
    fraction = min(1.0, max_raster_neurons / max(per_area.values(), default=1))
    attrs = run.attrs
    provenance = {k: v for k, v in attrs.items() if k not in ("params",)}
    return write_report(out, structure=structure, theory=theory, stats=stats, spikes=spikes,
                        params=run.params, provenance=provenance,
                        title=title or f"mam_xr run {attrs.get('label') or path.name}",
                        raster_areas=areas, raster_fraction=fraction)


def _report_for_sweep(directory: Path, out: Path, *, title: str | None, atlas=None) -> Path:
    from .sweep import open_sweep

    ds = open_sweep(directory)
    stats: dict[str, xr.Dataset] = {}
    for name, (group, var) in _sweep_vars().items():
        if name in ds.data_vars:
            da = ds[name]
            private = [d for d in da.dims if d.endswith("_time")]
            if private:
                da = da.rename({private[0]: "time"})
            stats.setdefault(group, xr.Dataset())[var] = da.load()
    theory = ds["theory_rate"].load() if "theory_rate" in ds.data_vars else None
    spec_file = Path(directory) / "sweep.json"
    params = json.loads(spec_file.read_text()).get("spec") if spec_file.exists() else None
    provenance = {k: v for k, v in ds.attrs.items() if isinstance(v, (str, int, float, bool))}
    provenance["sweep directory"] = str(directory)
    if not stats and theory is not None:  # a theory-only sweep: its rates are the heat map
        stats = {"rates": xr.Dataset({"rate": theory})}
        theory = None
    return write_report(out, theory=theory, stats=stats or None, params=params, atlas=atlas,
                        provenance=provenance, title=title or f"mam_xr sweep {Path(directory).name}")
