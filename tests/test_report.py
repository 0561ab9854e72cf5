"""mam_xr.report: one self-contained HTML file; checked as text and in headless Chromium."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

pytest.importorskip("holoviews")

import viz_data as vd  # noqa: E402
from conftest import chromium_driver  # noqa: E402
from mam_xr import report, report_bokeh  # noqa: E402
from mam_xr.errors import ParameterError  # noqa: E402

PARAMS = {"network": {"scale": 0.005, "connection": {"chi": 1.0, "g": -11.0}},
          "simulation": {"t_sim": 2000.0, "areas_simulated": ["V1", "V2"]}}
PROVENANCE = {"source": "upstream reference run threads1", "versions": {"nest": "3.10.0"}}


@pytest.fixture(scope="module")
def full_report(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("report") / "run.html"
    return report.write_report(
        path, structure=vd.structure(), theory=vd.theory(), stats=vd.analysis_dict(),
        spikes=vd.spikes(), params=PARAMS, provenance=PROVENANCE, title="Tutorial run",
        raster_fraction=0.5)


def _docs_json(page: str) -> dict:
    """The Bokeh document JSON embedded in the page."""
    m = re.search(r'<script type="application/json" id="[^"]+">\s*(.*?)\s*</script>', page, re.S)
    assert m, "no Bokeh document in the page"
    return json.loads(m.group(1))


def test_report_is_self_contained_with_all_sections(full_report):
    page = full_report.read_text()
    assert not re.search(r"<script[^>]*\bsrc=", page), "external script reference"
    assert not re.search(r"<link[^>]*href=[\"'](https?:)?//", page), "external stylesheet"
    assert "cdn.bokeh.org" not in page and "cdn.holoviz.org" not in page
    assert "Bokeh" in page and len(page) > 1_000_000  # BokehJS is inlined
    for sec in ("rates", "instantaneous", "rate_over_time", "raster", "boxes", "area_rates",
                "theory", "fc", "connectivity", "parameters", "provenance"):
        assert f"id='{sec}'" in page, sec
    assert "<title>Tutorial run</title>" in page
    # summary numbers from the reference rates (reference/README.md §3.4: 23.547 / 18.094)
    assert "Mean over populations: 23.547 spikes/s; neuron-weighted: 18.094 spikes/s" in page
    roots = [r["attributes"].get("name") for doc in _docs_json(page).values() for r in doc["roots"]]
    assert roots == ["fig_rates", "fig_instantaneous", "fig_rate_over_time", "fig_raster", "fig_boxes",
                     "fig_area_rates", "fig_theory", "fig_fc", "fig_connectivity"]


def test_report_embeds_the_data_it_shows(full_report):
    page = full_report.read_text()
    docs = json.dumps(_docs_json(page))
    # a few exact values that must travel into the page: reference rates of V1 2/3E and STPp 5I
    a = vd.analysis_ref()
    for value in (a["Analysis_pop_rates"][0], a["Analysis_pop_rates"].max()):
        assert repr(float(value))[:12] in docs or f"{value:.12g}"[:10] in docs


def test_report_parameters_and_provenance_tables(full_report):
    page = full_report.read_text()
    params = page[page.index("id='parameters'"):page.index("id='provenance'")]
    assert "network.scale</td><td class='num'>0.005" in params
    assert "network.connection.g</td><td class='num'>-11" in params
    assert "simulation.areas_simulated</td><td class=''>V1, V2" in params
    prov = page[page.index("id='provenance'"):]
    assert "versions.nest" in prov and "3.10.0" in prov


def test_report_notes_figures_that_do_not_fit(tmp_path):
    path = report.write_report(tmp_path / "r.html", spikes=vd.spikes(), raster_areas=("V1", "MSTI"))
    page = path.read_text()
    assert "Not drawn: areas=&#x27;MSTI&#x27; is invalid" in page and "did you mean" in page


def test_report_errors(tmp_path):
    with pytest.raises(ParameterError, match=r"path='.*r.txt' is invalid: expected a file name ending in .html"):
        report.write_report(tmp_path / "r.txt", params=PARAMS)
    with pytest.raises(ParameterError, match="data=None is invalid"):
        report.write_report(tmp_path / "r.html")


def test_parameters_only_report_needs_no_bokeh(tmp_path):
    page = report.write_report(tmp_path / "p.html", params=PARAMS).read_text()
    assert "network.scale" in page and "<script" not in page


# --- in a browser ---------------------------------------------------------------------------

def _browser(tmp_path):
    return chromium_driver(tmp_path, window="1400,1000")


_COUNT_CANVAS = """
function count(root) { let n = root.querySelectorAll('canvas').length;
  for (const el of root.querySelectorAll('*')) if (el.shadowRoot) n += count(el.shadowRoot);
  return n; }
return count(document);"""


@pytest.mark.browser
@pytest.mark.parametrize("which", ["full_report"])   # a sweep's report: tests/test_sweep_report.py
def test_report_renders_in_headless_chromium(which, request, tmp_path):
    from PIL import Image
    from selenium.webdriver.common.by import By

    path = request.getfixturevalue(which)
    driver = _browser(tmp_path)
    try:
        driver.get(path.resolve().as_uri())
        deadline = time.time() + 90
        n_figures = len(driver.find_elements(By.CSS_SELECTOR, "div.figure"))
        assert n_figures >= (9 if which == "full_report" else 2)
        logs: list[dict] = []
        while time.time() < deadline:  # Bokeh draws asynchronously after load, then logs "idle"
            logs += driver.get_log("browser")
            idle = any("document idle" in e["message"] for e in logs)
            if idle and driver.execute_script(_COUNT_CANVAS) >= n_figures:
                break
            time.sleep(0.5)
        n_canvas = driver.execute_script(_COUNT_CANVAS)
        logs += driver.get_log("browser")
        severe = [e for e in logs if e["level"] == "SEVERE"]
        assert not severe, severe
        assert n_canvas >= n_figures, (n_canvas, n_figures)
        for k, fig in enumerate(driver.find_elements(By.CSS_SELECTOR, "div.figure")):
            driver.execute_script("arguments[0].scrollIntoView();", fig)
            for attempt in range(20):  # a loaded machine may need a moment to paint
                png = tmp_path / f"figure{k}.png"
                png.write_bytes(fig.screenshot_as_png)
                img = np.asarray(Image.open(png).convert("L"), dtype=float)
                non_white = float((img < 240).mean())
                if img.std() > 8 and non_white > 0.02:
                    break
                time.sleep(0.5)
            assert img.shape[0] > 100 and img.shape[1] > 200, (k, img.shape)
            assert img.std() > 8 and non_white > 0.02, (k, img.std(), non_white)
    finally:
        driver.quit()


def test_report_for_an_analysed_run_store(tmp_path):
    """End to end on mam_xr's own data path: reference spikes -> run store -> report_for."""
    from conftest import REFERENCE
    from mam_xr import analysis

    store = tmp_path / "run.zarr"
    run = analysis.import_upstream(REFERENCE / "spikes_sim_threads1.npz", store,
                                   t_sim_ms=2000.0, gids=REFERENCE / "network_gids.json",
                                   structure=vd.structure())
    stats = analysis.analyze(run, ["rates", "rate_time_series", "correlation", "irregularity"])
    vd.theory().to_zarr(store, group="theory", mode="w")  # as `mam-xr run` stores it
    path = report.report_for(store)
    assert path == tmp_path / "run.html"
    page = path.read_text()
    roots = [r["attributes"].get("name") for doc in _docs_json(page).values() for r in doc["roots"]]
    assert roots == ["fig_rates", "fig_instantaneous", "fig_rate_over_time", "fig_raster", "fig_boxes",
                     "fig_area_rates", "fig_theory", "fig_fc", "fig_connectivity"]
    # analysis divides by floor(N) (decisions.md), so the mean is a little above the reference 23.547
    mean = float(stats["rates"]["rate"].mean())
    assert 23.547 < mean < 23.547 * 1.03
    assert f"Mean over populations: {mean:.3f} spikes/s" in page
    assert "Tutorial" not in page and "<h2 id='parameters'>" in page and "<h2 id='provenance'>" in page


def test_report_for_a_sweep_directory(tmp_path):
    """A sweep's combined Dataset (mam_xr.sweep layout: <statistic>_<variable>, prefixed dims)."""
    rate = vd.stats_dataset()["rate"]
    chi = xr.DataArray([1.0, 1.9], dims="chi", name="chi")
    ts = vd.rate_time_series()["area_rate"].rename(time="rate_time_series_time")
    ds = xr.Dataset({
        "rates_rate": xr.concat([rate, 2 * rate], dim=chi),
        "theory_rate": xr.concat([vd.theory()["rate"], 2 * vd.theory()["rate"]], dim=chi),
        "rate_time_series_area_rate": xr.concat([ts, 2 * ts], dim=chi),
        "point_complete": xr.DataArray([True, True], dims="chi"),
    }).assign_coords(chi=[1.0, 1.9])
    ds.attrs.update(format="mam_xr.sweep/1", name="chi")
    (tmp_path / "sw").mkdir()
    ds.to_zarr(tmp_path / "sw" / "sweep.zarr", zarr_format=3, consolidated=False)
    (tmp_path / "sw" / "sweep.json").write_text(json.dumps({"spec": {"parameters": {"chi": [1.0, 1.9]}}}))
    page = report.report_for(tmp_path / "sw").read_text()
    docs = json.dumps(_docs_json(page))
    assert '"chi = 1"' in docs and '"chi = 1.9"' in docs
    assert "Mean over populations: 23.547 spikes/s (chi = 1)." in page
    assert "Shown for the first point of the sweep (chi = 1)." in page
    assert "parameters.chi</td><td class=''>1, 1.9" in page
    roots = [r["attributes"].get("name") for doc in _docs_json(page).values() for r in doc["roots"]]
    # the slider, the figures against chi, then the per-point figures (tests/test_sweep_report.py)
    assert roots == ["sweep_controls", "fig_sweep_statistics", "fig_sweep_areas", "fig_sweep_theory",
                     "fig_rates", "fig_instantaneous", "fig_rate_over_time", "fig_boxes", "fig_area_rates",
                     "fig_theory"]


def test_long_series_heat_map_is_windowed():
    secs = {s["id"]: s for s in report.report_sections(stats=vd.analysis_dict(), max_heatmap_bins=100)}
    heat = secs["instantaneous"]["figure"]
    np.testing.assert_array_equal(np.unique(heat.dimension_values("time")), 501.0 + np.arange(100))
    assert secs["instantaneous"]["note"].startswith("The first 100 bins (501–600 ms) of 501–2000 ms")
    # the other time series keep every bin
    curve = [e for e in secs["rate_over_time"]["figure"] if hasattr(e, "label") and e.label == "V1"][0]
    assert len(curve) == 1500


def test_registered_box_statistics_join_the_box_plots(tmp_path):
    """Every box figure of the analysis registry (here the Fano factor) is drawn, with short labels."""
    from conftest import REFERENCE
    from mam_xr import analysis

    run = analysis.import_upstream(REFERENCE / "spikes_sim_threads1.npz", tmp_path / "run.zarr",
                                   t_sim_ms=2000.0, gids=REFERENCE / "network_gids.json",
                                   structure=vd.structure())
    stats = analysis.analyze(run, ["rates", "correlation", "irregularity", "fano_factor"], store=False)
    secs = {s["id"]: s for s in report.report_sections(stats=stats)}
    boxes = secs["boxes"]
    assert boxes["title"] == "Rate, Correlation, LvR, Fano factor across areas"
    panels = list(boxes["figure"])
    assert [p.get(0).vdims[0].label for p in panels] == ["Rate", "Correlation", "LvR", "Fano factor"]
    means = panels[3].get(1).dimension_values("fano_factor")
    ff = stats["fano_factor"]["fano_factor"]
    assert np.isclose(means.max(), float(ff.mean("area").max()))
    assert "Fano factor: Fano factor of single-neuron spike counts" in boxes["note"]


def test_fast_renderings_carry_the_figures_data():
    """The heat map image and the box glyphs hold exactly the data of the HoloViews figures."""
    from bokeh.models import GlyphRenderer, HBar, Image

    secs = {s["id"]: s for s in report.report_sections(stats=vd.analysis_dict(), max_heatmap_bins=100)}
    heat = secs["instantaneous"]["figure"]
    fig = report_bokeh.render_section(secs["instantaneous"])
    img = [r for r in fig.select({"type": GlyphRenderer}) if isinstance(r.glyph, Image)][0]
    z = np.asarray(img.data_source.data["image"][0])
    df = heat.dframe()
    areas = list(dict.fromkeys(df["area"]))
    assert z.shape == (len(areas), 100)
    v1 = df[df["area"] == "V1"].sort_values("time").iloc[:, -1].to_numpy()
    np.testing.assert_allclose(z[areas.index("V1")], v1.astype(np.float32))
    assert fig.yaxis.major_label_overrides[areas.index("FEF")] == "FEF"
    row = report_bokeh.render_section(secs["boxes"])
    st = vd.stats_dataset()
    for panel, var in zip(row.children, ("rate", "corrcoef", "lvr")):
        bars = [r for r in panel.select({"type": GlyphRenderer}) if isinstance(r.glyph, HBar)][0]
        data = bars.data_source.data
        i = list(data["pop"]).index("2/3E")
        vals = st[var].sel(pop="23E").values
        vals = vals[np.isfinite(vals)]
        np.testing.assert_allclose([data["q1"][i], data["q2"][i], data["q3"][i]],
                                   np.percentile(vals, [25, 50, 75]), rtol=1e-12)
        np.testing.assert_allclose(data["mean"][i], vals.mean(), rtol=1e-12)


def test_report_defines_its_rates_and_gives_parameter_units(full_report):
    page = full_report.read_text()
    assert "Mean over populations: the plain average of the population rates" in page
    assert "Neuron-weighted: the same rates weighted by the populations&#x27; neuron numbers" in page
    assert "the rate in the title and the dashed line are its average over the bins shown" in page
    assert re.search(r"Empty bands are neurons that did not spike in the window shown \(their share of the "
                     r"rows: V1 \d+ %, V2 \d+ %, FEF \d+ %\)", page)
    params = page[page.index("id='parameters'"):page.index("id='provenance'")]
    assert "<th>units</th>" in params
    assert "simulation.t_sim</td><td class='num'>2000</td><td>ms</td>" in params
    assert "network.connection.g</td><td class='num'>-11</td><td>1</td>" in params
