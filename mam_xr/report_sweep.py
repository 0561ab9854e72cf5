"""The report of a sweep (used by :func:`mam_xr.report.write_report`).

A sweep's statistics have extra dims (``chi``, ...).  Its report shows:

* figures against the swept parameter (all points at once, :mod:`mam_xr.viz`'s
  ``sweep_*`` functions): statistics by population type, an area x parameter heat
  map, theory and simulation with the branches of a theory atlas;
* every figure and headline of a single run's report, drawn at each point exactly
  as the report of that point alone would draw it; the page embeds the first
  point's Bokeh model with the values that differ at the others, and a slider per
  numeric sweep dim (a select for other dims) switches them
  (:func:`mam_xr.report_bokeh.sweep_controls`), together with the headline and
  note texts; the figures against the parameter mark the chosen point.

Points without rates (failed or not yet run) are left out of the sliders' points.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np
import xarray as xr

from . import report_bokeh, viz
from .errors import MamXrError

__all__ = ["sweep_points", "at", "against_sections", "sweep_report"]


def _fmt(x) -> str:
    return f"{x:.6g}" if isinstance(x, (float, np.floating)) else str(x)


def sweep_points(ref: xr.DataArray | None) -> dict | None:
    """The points of a sweep with results, from its rates ``ref`` (sweep dims, area, pop).

    Returns ``{"dims", "values" (per dim), "keys" (value indices of each point with a
    finite rate), "labels" ("chi = 1.9")}``, or None without sweep dims or with fewer
    than two such points (the report of one point).
    """
    if ref is None:
        return None
    dims = [d for d in ref.dims if d not in ("area", "pop", "draw")]
    if not dims:
        return None
    values = [ref[d].values if d in ref.coords else np.arange(ref.sizes[d]) for d in dims]
    has = np.isfinite(ref).any([d for d in ref.dims if d not in dims]).transpose(*dims).values
    keys = [k for k in np.ndindex(*has.shape) if has[k]]
    if len(keys) < 2:
        return None
    labels = [", ".join(f"{d} = {_fmt(values[i][j].item())}" for i, (d, j) in enumerate(zip(dims, k)))
              for k in keys]
    return {"dims": dims, "values": values, "keys": keys, "labels": labels}


def at(obj, sel: Mapping[str, int]):
    """``obj`` (a DataArray, a Dataset or a dict of them) at value indices ``sel`` of sweep dims."""
    if isinstance(obj, (xr.DataArray, xr.Dataset)):
        return obj.isel({d: i for d, i in sel.items() if d in obj.dims})
    if isinstance(obj, Mapping):
        return {k: at(v, sel) for k, v in obj.items()}
    return obj


def against_sections(arrays: Mapping[str, xr.DataArray], atlas, dim: str) -> list[dict]:
    """Report sections of the figures against the swept parameter ``dim``.

    ``arrays``: the sweep's variables by their names in :data:`mam_xr.viz.SWEEP_STATISTICS`
    (``rate``, ``lvr``, ``corrcoef``, ``synchrony``, ``fc_similarity``, ``theory_rate``).
    """
    ds = xr.Dataset({name: da.reset_coords(drop=True) for name, da in arrays.items()})
    sections: list[dict] = []

    def add(id_, title, make, note):
        try:
            sections.append({"id": id_, "title": title, "figure": make(), "note": note})
        except MamXrError as err:         # data that do not fit: say why
            sections.append({"id": id_, "title": title, "figure": None, "note": f"Not drawn: {err}"})

    if "rate" in ds:
        fc = "fc_similarity" in ds and bool(np.isfinite(ds["fc_similarity"]).any())
        add("sweep_statistics", f"Statistics against {dim}", lambda: viz.sweep_statistics(ds, dim=dim),
            "Each statistic at every point of the sweep: the mean over the excitatory and over the "
            "inhibitory populations with data. " + (
                "FC similarity: Pearson r of the simulated and the experimental FC matrices, one value "
                "per point. " if fc else "FC similarity to fMRI: not drawn, the sweep has no finite value "
                "of it (it needs the functional-connectivity statistic with all 32 areas simulated). ")
            + "Hover for values.")
        add("sweep_areas", f"Rate per area against {dim}", lambda: viz.sweep_heatmap(ds, dim=dim),
            "Mean rate over each area's populations at every point; white: no data.")
    if "theory_rate" in ds and ("rate" in ds or atlas is not None):
        add("sweep_theory", f"Theory and simulation against {dim}",
            lambda: viz.sweep_theory_vs_simulation(ds, dim=dim, atlas=atlas),
            "Mean rate over the simulated populations: the mean-field theory at each sweep point "
            "(docs/theory.md) and the simulation" + (
                "; lines: every fixed-point branch of the theory atlas, stable solid, unstable dashed "
                "(docs/atlas.md)." if atlas is not None else "."))
    return sections


def sweep_report(sweep: dict, *, theory, stats, spikes, atlas, make_sections: Callable[..., list[dict]],
                 against: Callable[..., Mapping[str, xr.DataArray]]):
    """Sections, their Bokeh models and the sliders of a sweep's report.

    ``make_sections(theory=, stats=, spikes=, leave_out=)`` returns the sections of a
    single point (:func:`mam_xr.report.report_sections`); ``against(stats, theory)`` the
    arrays of :func:`against_sections`.  Returns ``(sections, {section id: Bokeh
    model}, controls)``; per-point sections carry ``summary_id`` / ``note_id``, the ids
    of the page elements whose text the sliders replace.
    """
    dims, keys, labels = sweep["dims"], sweep["keys"], sweep["labels"]
    n = len(keys)
    sections: list[dict] = []
    rendered: dict = {}
    links: list = []
    toggles: list = []
    texts: list = []
    markers: list = []

    def draw(frames: list[dict]):
        """One Bokeh model for a section's frames (the same figure object is rendered once)."""
        nonlocal links, toggles
        models = {}
        for f in frames:
            if f["figure"] is not None and id(f["figure"]) not in models:
                models[id(f["figure"])] = report_bokeh.render_section(f)
        root, lk, tg = report_bokeh.frame_models(
            [models[id(f["figure"])] if f["figure"] is not None else None for f in frames])
        links, toggles = links + lk, toggles + tg
        return root

    numeric = [i for i, v in enumerate(sweep["values"]) if np.asarray(v).dtype.kind in "iuf" and len(v) > 1]
    if numeric:                      # against the first numeric sweep dim, at each point of the others
        x = numeric[0]
        cache: dict[tuple, list[dict]] = {}
        frames_by_point = []
        for key in keys:
            other = {d: j for i, (d, j) in enumerate(zip(dims, key)) if i != x}
            ident = tuple(other.values())
            if ident not in cache:
                cache[ident] = against_sections(against(at(stats, other), at(theory, other)), atlas, dims[x])
            frames_by_point.append(cache[ident])
        for s, sec in enumerate(frames_by_point[0]):
            sections.append(sec)
            if sec["figure"] is not None:
                rendered[sec["id"]] = root = draw([f[s] for f in frames_by_point])
                markers += [(span, x, locations) for span, locations
                            in report_bokeh.add_markers(root, sweep["values"][x], keys[0][x])]

    per_point = []
    for k, key in enumerate(keys):
        sel = dict(zip(dims, key))
        secs = make_sections(theory=at(theory, sel), stats=at(stats, sel), spikes=spikes if k == 0 else None,
                             leave_out=() if k == 0 else ("connectivity",))
        per_point.append({s["id"]: s for s in secs})

    def where(k: int) -> str:
        first = "the first point" if k == 0 else f"point {k + 1} of {n}"
        return f"Shown for {first} of the sweep ({labels[k]})."

    for sec in per_point[0].values():
        frames = [p.get(sec["id"]) for p in per_point]
        if any(f is None for f in frames[1:]):          # drawn once: rasters, connectivity
            sections.append(sec)
            if sec["figure"] is not None:
                rendered[sec["id"]] = report_bokeh.render_section(sec)
            continue
        sec = dict(sec)
        if sec.get("summary"):
            sec["summary_id"] = f"headline-{sec['id']}"
            t = [f"{f.get('summary', '').rstrip('.')} ({labels[k]})." for k, f in enumerate(frames)]
            texts.append((sec["summary_id"], t))
            sec["summary"] = t[0]
        sec["note_id"] = f"note-{sec['id']}"
        t = [f"{f['note']} {where(k)}".strip() for k, f in enumerate(frames)]
        texts.append((sec["note_id"], t))
        sec["note"] = t[0]
        drawn = [f for f in frames if f["figure"] is not None]
        if drawn:
            sec["figure"] = drawn[0]["figure"]
            rendered[sec["id"]] = draw(frames)
        sections.append(sec)
    controls = report_bokeh.sweep_controls(dims, sweep["values"], keys, labels, links=links, toggles=toggles,
                                           texts=texts, markers=markers)
    return sections, rendered, controls
