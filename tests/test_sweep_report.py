"""The report of a sweep (mam_xr.report, mam_xr.report_sweep): figures against χ, and a
numeric slider that switches every per-point figure and headline.

A real 3-point χ sweep (NEST, scale 0.001, V1 and V2, 200 ms, theory + simulate +
analyse, serial) and a theory atlas of the same network are reported once.  The
page's own data (the Bokeh document embedded in it) are compared with the sweep's
Dataset at every point; in headless Chromium the slider is moved with the keyboard
and from JavaScript, and the headline and the figures' data must follow.
"""

from __future__ import annotations

import base64
import gzip
import json
import re
import time
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

pytest.importorskip("holoviews")

from mam_xr import report, viz  # noqa: E402
from mam_xr.sweep import SweepSpec, plan, run_sweep  # noqa: E402
from test_report import _COUNT_CANVAS, _browser  # noqa: E402

TINY = {"scale": 0.001, "t_sim": 200.0, "areas_simulated": ["V1", "V2"], "threads": 1}
CHIS = [1.0, 1.5, 1.9]
E_POPS, I_POPS = ["23E", "4E", "5E", "6E"], ["23I", "4I", "5I", "6I"]


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    pytest.importorskip("nest")
    from mam_xr import atlas

    spec = SweepSpec.chi(CHIS, overrides=TINY, run="theory+simulate+analyse",
                         analysis_options={"t_min_ms": 50.0}, theory_options={"T": 20.0}, name="chi-report")
    directory = tmp_path_factory.mktemp("sweep") / "chi"
    ds = run_sweep(spec, directory, cluster="serial", progress=False).load()
    # the theory atlas of the network of the chi = 1.9 point (chi_I = 2 throughout)
    at = atlas.atlas(plan(spec)[-1].params, chi="1.0:2.0:0.1", n_random=1)
    page = report.report_for(directory, atlas=at)
    return {"ds": ds, "atlas": at, "page": page, "models": _models(page.read_text())}


# --- the Bokeh document in the page, decoded ------------------------------------------------

def _models(page: str) -> dict:
    """{id: {"type", "attributes"}} of every Bokeh model in the page, plus "roots" (ids)."""
    m = re.search(r'<script type="application/json" id="[^"]+">\s*(.*?)\s*</script>', page, re.S)
    doc = next(iter(json.loads(m.group(1)).values()))
    defs: dict = {}

    def walk(x):
        if isinstance(x, dict):
            if x.get("type") == "object" and "id" in x:
                defs.setdefault(x["id"], x)
            for v in x.values():
                walk(v)
        elif isinstance(x, list):
            for v in x:
                walk(v)

    walk(doc["roots"])
    return {"defs": defs, "roots": [r["id"] for r in doc["roots"]]}


def _decode(x, models):
    """A property value with arrays as numpy, maps as dicts and model references as ids."""
    if isinstance(x, list):
        return [_decode(v, models) for v in x]
    if not isinstance(x, dict):
        return x
    kind = x.get("type")
    if kind == "ndarray":
        arr = x["array"]
        if isinstance(arr, dict) and arr.get("type") == "bytes":
            raw = base64.b64decode(arr["data"])
            raw = gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw
            return np.frombuffer(raw, dtype=x["dtype"]).reshape(x["shape"])
        return np.asarray(arr, dtype=x["dtype"]).reshape(x["shape"])
    if kind == "map":
        return {k: _decode(v, models) for k, v in x["entries"]}
    if kind == "number":
        return float(x["value"])
    if kind == "object" or set(x) == {"id"}:
        return x["id"]
    return {k: _decode(v, models) for k, v in x.items()}


def _attrs(models, ident) -> dict:
    return models["defs"][ident].get("attributes", {})


def _of_type(models, name) -> list[str]:
    return [i for i, d in models["defs"].items() if d.get("name") == name]


def _reachable(models, root) -> set[str]:
    """Ids of the models a root refers to (directly or not)."""
    seen, todo = set(), [root]
    while todo:
        i = todo.pop()
        if i in seen or i not in models["defs"]:
            continue
        seen.add(i)
        stack = [models["defs"][i].get("attributes", {})]
        while stack:
            x = stack.pop()
            if isinstance(x, dict):
                if x.get("type") == "object" or set(x) == {"id"}:
                    todo.append(x["id"])
                    if x.get("type") != "object":
                        continue
                stack.extend(x.values())
            elif isinstance(x, list):
                stack.extend(x)
    return seen


def _root(models, name) -> str:
    return next(i for i in models["roots"] if _attrs(models, i).get("name") == name)


def _callback_args(models) -> dict:
    """The arguments of the slider's callback (links, texts, labels, values, ...)."""
    for i in _of_type(models, "CustomJS"):
        args = _decode(_attrs(models, i).get("args", {}), models)
        if "links" in args:
            return args
    raise AssertionError("no slider callback in the page")


def _linked_data(models, root_name, column) -> list[dict]:
    """The data of the column data source (in the figure ``root_name``) that has ``column``,
    at every sweep point, from the slider's links."""
    inside = _reachable(models, _root(models, root_name))
    for model, attr, values in _callback_args(models)["links"]:
        if attr == "data" and model in inside and column in values[0]:
            return values
    raise AssertionError(f"no linked data source with {column!r} in {root_name}")


def _sources(models, root_name) -> list[dict]:
    inside = _reachable(models, _root(models, root_name))
    return [_decode(_attrs(models, i)["data"], models) for i in _of_type(models, "ColumnDataSource")
            if i in inside]


def _theory_title(ds, chi) -> str:
    """The numbers in the title of theory vs simulation at one point (16 simulated populations)."""
    sim = ds["rates_rate"].sel(chi=chi, area=["V1", "V2"])
    th = ds["theory_rate"].sel(chi=chi, area=["V1", "V2"]).where(sim.notnull())
    return f"mean {float(th.mean()):.2f} vs {float(sim.mean()):.2f} spikes/s (16 populations)"


def _headline(ds, k) -> str:
    return f"Mean over populations: {float(ds['rates_rate'].isel(chi=k).mean()):.3f} spikes/s (chi = {CHIS[k]:g})."


# --- the page ---------------------------------------------------------------------------------

def test_a_numeric_slider_not_a_dropdown(swept):
    models = swept["models"]
    sliders = _of_type(models, "Slider")
    assert len(sliders) == 1 and not _of_type(models, "Select")
    s = _attrs(models, sliders[0])
    assert (s["title"], s["start"], s["end"], s["value"]) == ("chi", 1.0, 1.9, 1.0)
    assert s["name"] == "sweep_slider_chi"
    assert _attrs(models, models["roots"][0])["name"] == "sweep_controls"
    names = [_attrs(models, r).get("name") for r in models["roots"]]
    assert names == ["sweep_controls", "fig_sweep_statistics", "fig_sweep_areas", "fig_sweep_theory", "fig_rates",
                     "fig_instantaneous", "fig_rate_over_time", "fig_boxes", "fig_area_rates", "fig_theory", "fig_fc"]
    args = _callback_args(models)
    assert args["labels"] == ["chi = 1", "chi = 1.5", "chi = 1.9"]
    assert args["values"] == [CHIS]


def test_headlines_and_notes_at_every_point(swept):
    ds, page = swept["ds"], swept["page"].read_text()
    texts = dict(_callback_args(swept["models"])["texts"])
    assert texts["headline-rates"] == [_headline(ds, k) for k in range(3)]
    assert f"<b id='headline-rates'>{_headline(ds, 0)}</b>" in page
    assert texts["note-theory"][1].endswith("Shown for point 2 of 3 of the sweep (chi = 1.5).")
    assert texts["note-theory"][0].endswith("Shown for the first point of the sweep (chi = 1).")


def test_per_point_figures_hold_each_points_data(swept):
    ds, models = swept["ds"], swept["models"]
    heat = _linked_data(models, "fig_rates", "zvalues")
    theory = _linked_data(models, "fig_theory", "area")
    image = _linked_data(models, "fig_instantaneous", "image")
    for k, chi in enumerate(CHIS):
        pops = [p.replace("2/3", "23") for p in heat[k]["pop"]]
        expected = [float(ds["rates_rate"].sel(chi=chi, area=a, pop=p)) for a, p in zip(heat[k]["area"], pops)]
        np.testing.assert_allclose(heat[k]["zvalues"], expected, rtol=1e-12)
        assert sorted(set(heat[k]["area"])) == ["V1", "V2"] and len(pops) == 16
        pops = [p.replace("2/3", "23") for p in theory[k]["pop"]]
        for col, var in (("x", "theory_rate"), ("y", "rates_rate")):
            expected = [float(ds[var].sel(chi=chi, area=a, pop=p)) for a, p in zip(theory[k]["area"], pops)]
            np.testing.assert_allclose(theory[k][col], expected, rtol=1e-12)
        rows = ds["rate_time_series_area_rate"].sel(chi=chi, area=["V1", "V2"]).values
        np.testing.assert_allclose(image[k]["image"][0], rows.astype(np.float32), rtol=1e-6)
    # every point differs: the slider has something to switch
    assert not np.allclose(heat[0]["zvalues"], heat[2]["zvalues"])
    # the figures' titles carry their points' numbers too
    inside = _reachable(models, _root(models, "fig_theory"))
    titles = next(v for m, attr, v in _callback_args(models)["links"] if m in inside and attr == "text")
    for k, chi in enumerate(CHIS):
        assert _theory_title(ds, chi) in titles[k]


def test_figures_against_chi_hold_the_sweep(swept):
    ds, at, models = swept["ds"], swept["atlas"], swept["models"]
    curves = {(tuple(s["group"])[0], "rate"): s for s in _sources(models, "fig_sweep_statistics")
              if "rate" in s and "group" in s}
    for group, pops in (("excitatory (E)", E_POPS), ("inhibitory (I)", I_POPS)):
        src = curves[(group, "rate")]
        np.testing.assert_array_equal(src["chi"], CHIS)
        np.testing.assert_allclose(src["rate"], ds["rates_rate"].sel(pop=pops).mean(["area", "pop"]).values,
                                   rtol=1e-12)
    lvr = [s for s in _sources(models, "fig_sweep_statistics") if "lvr" in s and s["group"][0] == "inhibitory (I)"]
    np.testing.assert_allclose(lvr[0]["lvr"], ds["irregularity_lvr"].sel(pop=I_POPS).mean(["area", "pop"]).values,
                               rtol=1e-12)
    heat = next(s for s in _sources(models, "fig_sweep_areas") if "zvalues" in s)
    for chi, area, z in zip(heat["chi"], heat["area"], heat["zvalues"]):     # columns labelled "1.5"
        assert z == pytest.approx(float(ds["rates_rate"].sel(chi=float(chi), area=area).mean()), rel=1e-12)
    simulated = ds["rates_rate"].notnull().any("chi")
    theory = [s for s in _sources(models, "fig_sweep_theory") if "rate" in s]
    means = {"sim": ds["rates_rate"].mean(["area", "pop"]).values,
             "theory": ds["theory_rate"].where(simulated).mean(["area", "pop"]).values}
    branch = at["rate"].isel(branch=0).where(simulated).mean(["area", "pop"]).values
    for expected in (means["sim"], means["theory"], branch):
        assert any(len(s["rate"]) == len(expected) and np.allclose(s["rate"], expected, rtol=1e-12)
                   for s in theory), expected
    # the chosen point is marked in every figure against chi: at chi = 1, or its column's middle
    markers = {m: locations for m, d, locations in _callback_args(models)["markers"]}
    for root, n, locations in (("fig_sweep_statistics", 4, CHIS), ("fig_sweep_areas", 1, [0.5, 1.5, 2.5]),
                               ("fig_sweep_theory", 1, CHIS)):
        spans = [i for i in _reachable(models, _root(models, root)) if models["defs"][i].get("name") == "Span"]
        assert len(spans) == n and all(_attrs(models, i)["location"] == locations[0] for i in spans)
        assert all(markers[i] == locations for i in spans)


def test_a_single_run_report_has_no_slider(tmp_path, swept):
    one = {"rates": xr.Dataset({"rate": swept["ds"]["rates_rate"].sel(chi=1.5)})}
    page = report.write_report(tmp_path / "one.html", stats=one).read_text()
    models = _models(page)
    assert not _of_type(models, "Slider") and "sweep_controls" not in page
    assert "Mean over populations: " + f"{float(swept['ds']['rates_rate'].sel(chi=1.5).mean()):.3f}" in page


def test_sweep_figures_refuse_bad_input(swept):
    from mam_xr.errors import ParameterError

    with pytest.raises(ParameterError, match=r"atlas='chi' is invalid: expected an atlas over 'g'"):
        viz.sweep_theory_vs_simulation(swept["ds"].rename(chi="g"), dim="g", atlas=swept["atlas"])


def test_two_swept_parameters_get_two_sliders(tmp_path):
    """A chi x g grid with one failed point: a slider per dim, the failed point left out, the
    figures against chi switched with g."""
    import viz_data as vd

    rate = vd.stats_dataset()["rate"]
    factor = xr.DataArray([[1.0, 1.2], [1.5, np.nan]], dims=("chi", "g"),
                          coords={"chi": [1.0, 1.9], "g": [-11.0, -12.0]})
    swept = (rate * factor).transpose("chi", "g", "area", "pop")
    page = report.write_report(tmp_path / "grid.html", stats={"rates": xr.Dataset({"rate": swept})})
    models = _models(page.read_text())
    sliders = {_attrs(models, i)["title"]: _attrs(models, i) for i in _of_type(models, "Slider")}
    assert sorted(sliders) == ["chi", "g"] and not _of_type(models, "Select")
    assert (sliders["g"]["start"], sliders["g"]["end"], sliders["g"]["value"]) == (-12.0, -11.0, -11.0)
    args = _callback_args(models)
    assert args["keys"] == [[0, 0], [0, 1], [1, 0]]
    assert args["labels"] == ["chi = 1, g = -11", "chi = 1, g = -12", "chi = 1.9, g = -11"]
    means = [float(swept.isel(chi=i, g=j).mean()) for i, j in args["keys"]]
    assert dict(args["texts"])["headline-rates"] == [
        f"Mean over populations: {m:.3f} spikes/s ({label})." for m, label in zip(means, args["labels"])]
    # the rates against chi at g = -11 and at g = -12 (where chi = 1.9 failed)
    inside = _reachable(models, _root(models, "fig_sweep_statistics"))
    frames = next(values for model, attr, values in args["links"] if model in inside and attr == "data"
                  and "rate" in values[0] and values[0]["group"][0] == "excitatory (E)")
    expected = [swept.sel(g=g, pop=E_POPS).mean(["area", "pop"]).values for g in (-11.0, -12.0, -11.0)]
    for k in range(3):
        np.testing.assert_allclose(frames[k]["rate"], expected[k], rtol=1e-12)


def test_both_headline_rates_follow_the_point(tmp_path):
    """With the structure, the neuron-weighted mean of every point is in its headline too."""
    import viz_data as vd

    rate, structure = vd.stats_dataset()["rate"], vd.structure()
    swept = xr.concat([rate, 1.5 * rate], dim=xr.DataArray([1.0, 1.9], dims="chi", name="chi"))
    page = report.write_report(tmp_path / "w.html", stats={"rates": xr.Dataset({"rate": swept})},
                               structure=structure)
    texts = dict(_callback_args(_models(page.read_text()))["texts"])["headline-rates"]
    w = structure["neurons"].where(np.isfinite(rate))
    for k, (factor, chi) in enumerate(((1.0, "1"), (1.5, "1.9"))):
        plain, weighted = factor * float(rate.mean()), factor * float((rate * w).sum() / w.sum())
        assert texts[k] == (f"Mean over populations: {plain:.3f} spikes/s; neuron-weighted: {weighted:.3f} "
                            f"spikes/s (chi = {chi}).")
    assert texts[0].startswith("Mean over populations: 23.547 spikes/s; neuron-weighted: 18.094 spikes/s")


def test_a_holomap_gets_a_slider():
    from bokeh.models import Select, Slider

    from mam_xr import report_bokeh

    import viz_data as vd

    rate = vd.stats_dataset()["rate"]
    hmap = viz.rate_heatmap(xr.concat([rate, 2 * rate, 3 * rate],
                                      dim=xr.DataArray(CHIS, dims="chi", name="chi")))
    model = report_bokeh.render_holoviews(hmap)
    sliders = list(model.select({"type": Slider}))
    assert len(sliders) == 1 and not list(model.select({"type": Select}))
    assert (sliders[0].start, sliders[0].end, sliders[0].value) == (1.0, 1.9, 1.0)
    assert [m.visible for m in model.children[1:]] == [True, False, False]


# --- in a browser ----------------------------------------------------------------------------

_HANDLE = """
function find(root) { const h = root.querySelector('.noUi-handle'); if (h) return h;
  for (const el of root.querySelectorAll('*')) if (el.shadowRoot) { const r = find(el.shadowRoot); if (r) return r; }
  return null; }
return find(document.querySelector('div.sweep-control'));"""

_FIGURE_DATA = """
const doc = Bokeh.documents[0];
const source = (name, column) => {
  for (const m of doc.get_model_by_name(name).references())
    if (m.data !== undefined && m.data[column] !== undefined) return m.data;
  return null; };
const heat = source('fig_rates', 'zvalues'), th = source('fig_theory', 'area');
const img = source('fig_instantaneous', 'image');
const spans = [...doc.get_model_by_name('fig_sweep_theory').references()].filter(m => m.location !== undefined
  && m.dimension === 'height').map(m => m.location);
return {heat_area: Array.from(heat.area), heat_pop: Array.from(heat.pop), heat: Array.from(heat.zvalues),
        th_area: Array.from(th.area), th_pop: Array.from(th.pop), x: Array.from(th.x), y: Array.from(th.y),
        image: Array.from(img.image[0]), spans: spans,
        theory_title: doc.get_model_by_name('fig_theory').title.text,
        slider: doc.get_model_by_name('sweep_slider_chi').value,
        status: doc.get_model_by_name('sweep_point').text,
        headline: document.getElementById('headline-rates').textContent,
        note: document.getElementById('note-theory').textContent};"""


def _shows_point(got: dict, ds, k: int) -> None:
    """The page's headline and figures are those of point k."""
    chi = CHIS[k]
    assert got["headline"] == _headline(ds, k)
    assert got["slider"] == chi and got["status"] == f"chi = {chi:g}"
    assert got["note"].endswith(f"({'chi = %g' % chi}).")
    pops = [p.replace("2/3", "23") for p in got["heat_pop"]]
    np.testing.assert_allclose(got["heat"], [float(ds["rates_rate"].sel(chi=chi, area=a, pop=p))
                                             for a, p in zip(got["heat_area"], pops)], rtol=1e-12)
    pops = [p.replace("2/3", "23") for p in got["th_pop"]]
    np.testing.assert_allclose(got["x"], [float(ds["theory_rate"].sel(chi=chi, area=a, pop=p))
                                          for a, p in zip(got["th_area"], pops)], rtol=1e-12)
    np.testing.assert_allclose(got["y"], [float(ds["rates_rate"].sel(chi=chi, area=a, pop=p))
                                          for a, p in zip(got["th_area"], pops)], rtol=1e-12)
    rows = ds["rate_time_series_area_rate"].sel(chi=chi, area=["V1", "V2"]).values.astype(np.float32)
    np.testing.assert_allclose(got["image"], rows.ravel(), rtol=1e-6)
    assert _theory_title(ds, chi) in got["theory_title"]
    assert got["spans"] and all(s == chi for s in got["spans"])


def _wait_for_point(driver, ds, k: int, timeout: float = 10.0) -> dict:
    deadline = time.time() + timeout
    while True:                                    # CustomJS callbacks run asynchronously
        got = driver.execute_script(_FIGURE_DATA)
        if got["headline"] == _headline(ds, k) or time.time() > deadline:
            return got
        time.sleep(0.2)


@pytest.mark.browser
def test_moving_the_slider_changes_headline_and_figures(swept, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    ds = swept["ds"]
    driver = _browser(tmp_path)
    try:
        driver.get(Path(swept["page"]).resolve().as_uri())
        n_figures = len(driver.find_elements(By.CSS_SELECTOR, "div.figure"))
        assert n_figures == 10
        logs: list[dict] = []
        deadline = time.time() + 90
        while time.time() < deadline:              # Bokeh draws after load, then logs "idle"
            logs += driver.get_log("browser")
            if any("document idle" in e["message"] for e in logs) and \
                    driver.execute_script(_COUNT_CANVAS) >= n_figures:
                break
            time.sleep(0.5)
        assert driver.execute_script(_COUNT_CANVAS) >= n_figures
        _shows_point(driver.execute_script(_FIGURE_DATA), ds, 0)
        # the keyboard: one arrow key moves to the next swept value
        handle = driver.execute_script(_HANDLE)
        handle.send_keys(Keys.ARROW_RIGHT)
        _shows_point(_wait_for_point(driver, ds, 1), ds, 1)
        # a value between the points snaps to the nearest one (1.8 -> 1.9)
        driver.execute_script("Bokeh.documents[0].get_model_by_name('sweep_slider_chi').value = 1.8;")
        _shows_point(_wait_for_point(driver, ds, 2), ds, 2)
        assert "Shown for point 3 of 3 of the sweep (chi = 1.9)." in driver.execute_script(
            "return document.getElementById('note-fc').textContent")
        handle.send_keys(Keys.ARROW_LEFT)
        handle.send_keys(Keys.ARROW_LEFT)
        _shows_point(_wait_for_point(driver, ds, 0), ds, 0)
        logs += driver.get_log("browser")
        assert not [e for e in logs if e["level"] == "SEVERE"]
    finally:
        driver.quit()
