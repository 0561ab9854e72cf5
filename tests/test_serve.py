"""Tests of ``mam-xr serve`` (mam_xr.dashboard): discovery, incremental reading of a run
store being written, bad input, and the live dashboard in headless Chromium.

The browser test serves a directory holding a finished NEST run (scale 0.002, V1 and
V2, 300 ms), a theory-only chi sweep and a run store written segment by segment by
another process while the page is open; it clicks a heat-map cell, moves the sweep
slider and watches the live run gain segments, and checks the numbers shown against
the stores.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
import warnings
from pathlib import Path

import numpy as np
import pytest

from conftest import chromium_driver
from mam_xr.errors import ParameterError
from mam_xr.store import SpikeWriter, create_run, open_run, set_status
from mam_xr.store_read import population_spike_counts

CHIS = [1.0, 1.5, 2.0]
SEGMENT_MS = 10.0
SPIKES_PER_SEGMENT = 40

#: Writes a run store segment by segment (SPIKES_PER_SEGMENT random spikes each) through
#: the store's public writer, pausing between segments: a run "being written".
WRITER = """
import sys, time
import numpy as np
from mam_xr.store import SpikeWriter, create_run, open_run, set_status
src, out, n_seg, pause, per_seg, seg_ms = (sys.argv[1], sys.argv[2], int(sys.argv[3]),
                                           float(sys.argv[4]), int(sys.argv[5]), float(sys.argv[6]))
ref = open_run(src)
n_neurons = np.asarray(ref.root["spikes"].attrs["n_neurons"], dtype=np.int64)
root = create_run(out, structure=ref.structure(), dt=ref.dt, t_sim=seg_ms * n_seg,
                  n_segments_planned=n_seg, n_neurons=n_neurons, label="live")
writer = SpikeWriter(root)
rng = np.random.default_rng(1)
pops = np.flatnonzero(n_neurons)
for s in range(n_seg):
    pop = rng.choice(pops, per_seg)
    lo, hi = round(s * seg_ms / ref.dt), round((s + 1) * seg_ms / ref.dt)
    writer.append_segment(rng.integers(lo + 1, hi + 1, per_seg), rng.integers(0, n_neurons[pop]),
                          pop, s * seg_ms, (s + 1) * seg_ms)
    print(s, flush=True)
    time.sleep(pause)
set_status(root, "complete")
"""


def _cli(*args, cwd, check=True, timeout=300):
    proc = subprocess.run([sys.executable, "-m", "mam_xr.cli", *args], cwd=cwd, capture_output=True,
                          text=True, env=dict(os.environ), timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"mam-xr {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
    return proc


def _write_segments(path, structure, n_neurons, segments, *, start=0, writer=None, root=None, seed=0):
    """Append ``segments`` random segments to a run store (created if ``root`` is None)."""
    if root is None:
        root = create_run(path, structure=structure, dt=0.1, t_sim=SEGMENT_MS * 10, n_segments_planned=10,
                          n_neurons=n_neurons, label="by-hand")
        writer = SpikeWriter(root)
    rng = np.random.default_rng(seed + start)
    pops = np.flatnonzero(n_neurons)
    for s in range(start, start + segments):
        pop = rng.choice(pops, SPIKES_PER_SEGMENT)
        lo, hi = round(s * SEGMENT_MS / 0.1), round((s + 1) * SEGMENT_MS / 0.1)
        writer.append_segment(rng.integers(lo + 1, hi + 1, SPIKES_PER_SEGMENT),
                              rng.integers(0, n_neurons[pop]), pop, s * SEGMENT_MS, (s + 1) * SEGMENT_MS)
    return root, writer


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A directory with a finished tiny NEST run (with its theory) and a theory-only chi sweep."""
    from mam_xr.sweep import SweepSpec, run_sweep

    d = tmp_path_factory.mktemp("served")
    _cli("run", "--scale", "0.002", "--t-sim", "300", "--areas", "V1,V2", "--threads", "1",
         "--no-analysis", "--no-report", "--no-progress", "--out", "finished.zarr", cwd=d)
    spec = SweepSpec.chi(CHIS, overrides={"scale": 0.001, "areas_simulated": ["V1", "V2"],
                                          "theory": {"T": 20.0}}, name="chi-theory", run="theory")
    run_sweep(spec, d / "sweeps" / "chi", progress=False)
    return d


def _open(path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return open_run(path, allow_incomplete=True)


# --------------------------------------------------------------------------------------
# Discovery and incremental reading (no browser)
# --------------------------------------------------------------------------------------

def test_discover_finds_runs_and_sweeps_only(served, tmp_path):
    from mam_xr.dashboard import discover, find_entries

    entries = discover(served)
    assert [(e.kind, e.name) for e in entries] == [("run", "finished.zarr"), ("sweep", "sweeps/chi")]
    # a hidden store (one being swapped in) and a Zarr store that is not a run are not entries
    shutil.copytree(served / "finished.zarr", tmp_path / ".hidden.zarr")
    (tmp_path / "other.zarr").mkdir()
    (tmp_path / "other.zarr" / "zarr.json").write_text(json.dumps({"attributes": {"format": "x"}}))
    with pytest.raises(ParameterError, match=r"DIR='.*' is invalid: expected a directory holding at "
                                             r"least one mam_xr run store"):
        find_entries(tmp_path)
    with pytest.raises(ParameterError, match=r"DIR='.*missing' is invalid: expected an existing directory"):
        find_entries(tmp_path / "missing")
    # a run store given itself is its own entry
    assert [e.kind for e in discover(served / "finished.zarr")] == ["run"]


def test_run_data_reads_only_new_segments(served, tmp_path):
    from mam_xr.dashboard import RunData

    ref = open_run(served / "finished.zarr")
    n_neurons = np.asarray(ref.root["spikes"].attrs["n_neurons"], dtype=np.int64)
    path = tmp_path / "growing.zarr"
    root, writer = _write_segments(path, ref.structure(), n_neurons, 3)
    data = RunData(path)
    assert (data.status, data.n_segments, data.planned, data.theory) == ("running", 3, 10, None)
    v2 = data.area_spikes("V2")
    assert v2.n_segments == 3
    _write_segments(path, None, n_neurons, 2, start=3, writer=writer, root=root)
    assert data.refresh() == 2
    assert data.refresh() == 0
    run = _open(path)
    np.testing.assert_array_equal(data.segment_counts.sum(axis=0), population_spike_counts(run))
    assert data.n_spikes == 5 * SPIKES_PER_SEGMENT == run.n_spikes()
    assert data.t_committed == (0.0, 50.0)
    # the cached area was extended by the two new segments only; it equals a full read
    full = run.spikes(area="V2")
    assert data.area_spikes("V2") is v2 and v2.n_segments == 5
    for k, label in enumerate(full.populations):
        t, s = full.population(label)
        mine = v2.pop == v2.pops.index(label.split("-")[1])
        order = np.lexsort((v2.sender[mine], v2.step[mine]))
        np.testing.assert_array_equal(v2.step[mine][order] * 0.1, t)
        np.testing.assert_array_equal(v2.sender[mine][order], s)
    # rates: spikes / neurons / committed time; NaN where nothing was simulated
    rates = data.rates()
    counts = data.counts()
    np.testing.assert_allclose(rates.sel(area="V2", pop="4E"),
                               int(counts.sel(area="V2", pop="4E")) / n_neurons[run.population_indices("V2", "4E")[0]]
                               / 0.05)
    assert np.isnan(float(rates.sel(area="FEF", pop="4E")))
    series = data.rate_series("V2", bin_ms=10.0)
    assert series.sizes["time"] == 5 and float(series["time"][0]) == 5.0
    n_v2 = n_neurons[run.population_indices("V2")]
    np.testing.assert_allclose((series.values * n_v2[:, None] * 0.01).sum(axis=1),
                               counts.sel(area="V2").values[: len(n_v2)])
    df, meta = data.raster_table("V2", "4E")
    assert len(df) == int(counts.sel(area="V2").sum())
    assert (df["group"] == "selected").sum() == int(counts.sel(area="V2", pop="4E"))
    assert meta["rows"] == int(n_v2.sum()) and df["y"].max() < meta["rows"]
    set_status(root, "failed", error="stopped by the test")
    assert data.refresh() == 0
    assert (data.status, data.error, data.n_segments) == ("failed", "stopped by the test", 5)


def test_datashaded_raster_above_the_threshold(served):
    pytest.importorskip("panel")
    pytest.importorskip("datashader")
    import holoviews as hv

    from mam_xr.dashboard import RunData
    from mam_xr.dashboard.app import RunView

    hv.extension("bokeh")
    data = RunData(served / "finished.zarr")
    plain = RunView(data, datashade_above=10**9)
    shaded = RunView(data, datashade_above=0)
    assert not plain.datashaded and shaded.datashaded
    assert "Datashader" in shaded.selection.object and "(points)" in plain.selection.object
    fig = hv.render(shaded.raster_pane.object)
    assert any(type(r.glyph).__name__ == "ImageRGBA" for r in fig.renderers)
    # a tap selects the area and population; the captions give the store's numbers
    plain.tap.event(x="V2", y="4E")
    run = open_run(served / "finished.zarr")
    n_area = len(run.spikes(area="V2"))
    n_pop = len(run.spikes(area="V2", pop="4E"))
    assert (plain.area, plain.pop) == ("V2", "4E")
    assert f"<span class='mamxr-area-spikes'>{n_area}</span>" in plain.selection.object
    assert f"<span class='mamxr-pop-spikes'>{n_pop}</span>" in plain.selection.object


def test_serve_refuses_bad_input(tmp_path, served):
    proc = _cli("serve", str(tmp_path / "nowhere"), "--no-show", cwd=tmp_path, check=False)
    assert proc.returncode == 2
    assert "DIR='" in proc.stderr and "nowhere' is invalid: expected an existing directory" in proc.stderr
    (tmp_path / "empty").mkdir()
    proc = _cli("serve", "empty", "--no-show", cwd=tmp_path, check=False)
    assert proc.returncode == 2 and "DIR='empty' is invalid: expected a directory holding" in proc.stderr
    proc = _cli("serve", str(served), "--port", "70000", "--no-show", cwd=tmp_path, check=False)
    assert proc.returncode == 2 and "--port=70000 is invalid: expected an integer in [1, 65535]" in proc.stderr
    proc = _cli("serve", str(served), "--interval", "0", "--no-show", cwd=tmp_path, check=False)
    assert proc.returncode == 2 and "--interval=0.0 is invalid: expected seconds" in proc.stderr
    help_text = _cli("serve", "--help", cwd=tmp_path).stdout
    for default in ("5006", "localhost", "1.0", "1000000"):
        assert default in help_text


# --------------------------------------------------------------------------------------
# In a browser
# --------------------------------------------------------------------------------------


#: All text of the page, through Panel's shadow roots (styles and scripts left out).
_TEXT = """
function text(n) { let t = '';
  if (n.shadowRoot) t += text(n.shadowRoot);
  for (const c of n.childNodes) {
    if (c.nodeType === 3) t += c.textContent + ' ';
    else if (!['STYLE', 'SCRIPT'].includes(c.nodeName)) t += text(c); }
  return t; }
return text(document.body).replace(/\\s+/g, ' ');"""

#: Viewport position of a heat-map cell (area, population label).
_CELL = """
const v = Bokeh.index.query_one(v => v.model.name === 'mamxr_heatmap');
if (!v) return null;
const r = v.el.getBoundingClientRect();
return [r.left + v.frame.x_scale.compute(arguments[0]), r.top + v.frame.y_scale.compute(arguments[1])];"""

#: {"area pop": value} of the heat map's data source.
_HEAT = """
const v = Bokeh.index.query_one(v => v.model.name === 'mamxr_heatmap');
if (!v) return null;
const r = v.model.renderers.find(r => r.data_source && r.data_source.data.area !== undefined);
const d = r.data_source.data, out = {};
for (let i = 0; i < d.area.length; i++) out[d.area[i] + ' ' + d.pop[i]] = d.zvalues[i];
return out;"""

#: The raster's title and number of points.
_RASTER = """
const v = Bokeh.index.query_one(v => v.model.name === 'mamxr_raster');
if (!v) return null;
const r = v.model.renderers.find(r => r.data_source && r.data_source.data.time !== undefined);
const img = v.model.renderers.find(r => r.glyph && r.glyph.type === 'ImageRGBA');
const d = img ? img.data_source.data : null;
return [v.model.title.text, r ? r.data_source.data.time.length : null,
        d && d.dw.length ? [d.x[0], d.dw[0], v.model.x_range.start, v.model.x_range.end] : null,
        [v.model.x_range.start, v.model.x_range.end]];"""

#: Viewport box of the first element matching a selector, through shadow roots.
_BOX = """
function find(root, sel) { const r = root.querySelector(sel); if (r) return r;
  for (const el of root.querySelectorAll('*'))
    if (el.shadowRoot) { const f = find(el.shadowRoot, sel); if (f) return f; }
  return null; }
const el = find(document, arguments[0]); if (!el) return null;
const b = el.getBoundingClientRect(); return [b.left, b.top, b.width, b.height];"""


def _browser(tmp_path):
    return chromium_driver(tmp_path, window="1400,1400")


#: Viewport box of the Bokeh figure named arguments[0].
_VIEW_BOX = """
const v = Bokeh.index.query_one(v => v.model.name === arguments[0]);
if (!v) return null;
const b = v.el.getBoundingClientRect(); return [b.left, b.top, b.width, b.height];"""


def _check_raster(driver, area, pop_label, n_spikes, engine):
    """Wait for the raster of ``area`` and check what it draws; returns its title."""
    raster = _wait(f"the {area} raster", lambda: (r := driver.execute_script(_RASTER))
                   and r[0].startswith(f"{area} raster") and r, 30)
    title, n_points, image, _ = raster
    assert f"{pop_label} in black ({n_spikes} spikes" in title
    if engine == "points":
        assert n_points == n_spikes and image is None
    else:
        assert title.endswith(", Datashader)") and image is not None
    return raster


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _wait(what, probe, timeout=30.0, every=0.25):
    """probe() until it returns something truthy; fail naming ``what`` after ``timeout`` s."""
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")


def _click(driver, x, y):
    from selenium.webdriver.common.actions.action_builder import ActionBuilder

    action = ActionBuilder(driver)
    action.pointer_action.move_to_location(int(x), int(y))
    action.pointer_action.click()
    action.perform()


@pytest.mark.browser
@pytest.mark.timeout(240)
def test_live_dashboard_in_headless_chromium(served, tmp_path):
    pytest.importorskip("panel")
    pytest.importorskip("datashader")
    from mam_xr.sweep import open_sweep

    driver = _browser(tmp_path)
    procs = []
    try:
        # a run being written by another process: 80 segments, one every 0.4 s
        live = served / "live.zarr"
        writer = subprocess.Popen([sys.executable, "-c", WRITER, str(served / "finished.zarr"), str(live),
                                   "80", "0.4", str(SPIKES_PER_SEGMENT), str(SEGMENT_MS)],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        procs.append(writer)
        _wait("the live run's first segment", lambda: writer.stdout.readline().strip() == "0", 60)
        port = _free_port()
        # one of V1 and V2 is drawn with points, the one with more spikes with Datashader
        finished = open_run(served / "finished.zarr")
        n_area = {a: len(finished.spikes(area=a)) for a in ("V1", "V2")}
        assert n_area["V1"] != n_area["V2"], n_area
        threshold = min(n_area.values())
        engine = {a: "points" if n <= threshold else "Datashader" for a, n in n_area.items()}
        server = subprocess.Popen([sys.executable, "-m", "mam_xr.cli", "serve", str(served), "--port", str(port),
                                   "--no-show", "--interval", "0.5", "--datashade-above", str(threshold)],
                                  stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)
        procs.append(server)
        url = f"http://localhost:{port}/"

        def up():
            try:
                return urllib.request.urlopen(url, timeout=5).status == 200
            except OSError:
                assert server.poll() is None, server.stderr.read()
                return False
        _wait("the server", up, 60)

        def text():
            return driver.execute_script(_TEXT)

        # --- the live run gains segments, and shows the spikes it committed ------------
        driver.get(url + "?entry=live.zarr")
        progress = re.compile(r"live\.zarr : status (\w+) · (\d+) /80 segments committed .*? · (\d+) spikes")
        first = _wait("the live run's progress", lambda: progress.search(text()), 60)
        n1 = int(first.group(2))
        assert first.group(1) == "running"
        later = _wait("a new segment", lambda: (m := progress.search(text())) and int(m.group(2)) > n1 and m, 30)
        n2 = int(later.group(2))
        assert n2 > n1 >= 1
        assert int(later.group(3)) == n2 * SPIKES_PER_SEGMENT      # each segment holds 40 spikes
        run = _open(live)
        assert run.n_segments_committed() >= n2 and run.status == "running"
        # the raster follows: its time axis (and a Datashader image) ends at the committed
        # time, and its title counts V1's spikes in the store up to there
        def raster_follows():
            m, r = progress.search(text()), driver.execute_script(_RASTER)
            if not (m and r and r[0].startswith("V1 raster")):
                return None
            end = int(m.group(2)) * SEGMENT_MS
            image_end = r[2][0] + r[2][1] if r[2] is not None else end
            return (int(m.group(2)) > n2 and r[3] == [0, end] and abs(image_end - end) < 1e-9
                    and (int(m.group(2)), r[0]))
        n3, title = _wait("the raster to follow the new segments", raster_follows, 30)
        n_v1 = len(_open(live).spikes(area="V1", t_stop=n3 * SEGMENT_MS + 0.05))
        assert f"({n_v1} spikes" in title

        # --- the finished run: click the V2 4E cell, the raster and its numbers follow ------
        driver.get(url + "?entry=finished.zarr")
        selection = re.compile(r"Selected (\S+) (\S+) : (\d+) spikes, rate ([\d.]+) spikes/s; theory ([\d.]+) "
                               r"spikes/s\. Raster of (\S+): (\d+) spikes \((points|Datashader)\)")
        m = _wait("the first selection", lambda: selection.search(text()), 60)
        assert m.groups()[:2] == ("V1", "2/3E") and m.group(6) == "V1" and m.group(8) == engine["V1"]
        assert int(m.group(7)) == n_area["V1"]
        assert int(m.group(3)) == len(finished.spikes(area="V1", pop="23E"))
        rasters = {"V1": _check_raster(driver, "V1", "2/3E", n_area["V1"], engine["V1"])}
        heat = _wait("the heat map", lambda: driver.execute_script(_HEAT), 30)
        counts = population_spike_counts(finished)
        n_neurons = np.asarray(finished.root["spikes"].attrs["n_neurons"], dtype=float)
        k = int(finished.population_indices("V2", "4E")[0])
        assert heat["V2 4E"] == pytest.approx(counts[k] / n_neurons[k] / 0.3, rel=1e-9)

        xy = _wait("the V2 4E cell", lambda: driver.execute_script(_CELL, "V2", "4E"), 30)
        _click(driver, *xy)
        m = _wait("the V2 4E selection", lambda: (s := selection.search(text())) and s.group(1) == "V2" and s, 30)
        assert m.group(2) == "4E" and m.group(6) == "V2" and m.group(8) == engine["V2"]
        assert int(m.group(7)) == n_area["V2"]
        assert int(m.group(3)) == counts[k]
        assert float(m.group(4)) == pytest.approx(counts[k] / n_neurons[k] / 0.3, abs=1e-4)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import xarray as xr
            theory = xr.open_zarr(str(served / "finished.zarr"), group="theory")["rate"].load()
        assert float(m.group(5)) == pytest.approx(float(theory.sel(area="V2", pop="4E")), abs=1e-4)
        rasters["V2"] = _check_raster(driver, "V2", "4E", n_area["V2"], engine["V2"])
        assert rasters["V1"][0] != rasters["V2"][0]

        # the Datashader raster is aggregated again for the window zoomed into
        area = "V1" if engine["V1"] == "Datashader" else "V2"
        if area == "V1":  # back to V1
            _click(driver, *driver.execute_script(_CELL, "V1", "2/3E"))
            _wait("the V1 raster again", lambda: (r := driver.execute_script(_RASTER)) and r[0].startswith("V1 ")
                  and r[2] is not None, 30)
        box = driver.execute_script(_VIEW_BOX, "mamxr_raster")
        x0, dw0, start0, end0 = driver.execute_script(_RASTER)[2]
        from selenium.webdriver.common.action_chains import ActionChains
        from selenium.webdriver.common.actions.wheel_input import ScrollOrigin

        for _ in range(3):
            ActionChains(driver).scroll_from_origin(
                ScrollOrigin.from_viewport(int(box[0] + box[2] / 2), int(box[1] + box[3] / 2)), 0, -400).perform()
            time.sleep(0.3)
        # once the zoom has settled, the image is aggregated for (and fills) the new window
        zoomed = _wait("a zoomed-in aggregate", lambda: (r := driver.execute_script(_RASTER)[2])
                       and r[1] < 0.8 * dw0 and abs(r[1] - (r[3] - r[2])) < 0.05 * (r[3] - r[2]) and r, 30)
        assert zoomed[3] - zoomed[2] < 0.8 * (end0 - start0)           # the view was zoomed

        # --- the sweep: the slider moves the heat map from chi = 1 to chi = 2 ----------------
        sweep = open_sweep(served / "sweeps" / "chi")["theory_rate"].load()
        driver.get(url + "?entry=sweeps/chi")
        caption = re.compile(r"Heat map: theory rates at chi = ([\d.]+) ; mean over (\d+) populations ([\d.]+)")
        m = _wait("the sweep's heat map", lambda: caption.search(text()), 60)
        assert float(m.group(1)) == 1.0
        assert float(m.group(3)) == pytest.approx(float(sweep.sel(chi=1.0).mean()), abs=1e-4)
        before = _wait("the heat-map data", lambda: driver.execute_script(_HEAT), 30)
        assert before["V1 4E"] == pytest.approx(float(sweep.sel(chi=1.0, area="V1", pop="4E")), rel=1e-12)
        box = _wait("the chi slider", lambda: driver.execute_script(_BOX, ".noUi-base"), 30)
        _click(driver, box[0] + box[2] - 1, box[1] + box[3] / 2)          # its right end: chi = 2
        m = _wait("chi = 2", lambda: (c := caption.search(text())) and float(c.group(1)) == 2.0 and c, 30)
        assert float(m.group(3)) == pytest.approx(float(sweep.sel(chi=2.0).mean()), abs=1e-4)
        after = _wait("the new heat-map data", lambda: (h := driver.execute_script(_HEAT))
                      and h["V1 4E"] != before["V1 4E"] and h, 30)
        for cell in ("V1 4E", "V2 2/3I", "FEF 5E"):
            area, pop = cell.split()
            assert after[cell] == pytest.approx(float(sweep.sel(chi=2.0, area=area, pop=pop.replace("2/3", "23"))),
                                                rel=1e-12)
        assert after["V1 4E"] > before["V1 4E"]            # a stronger chi raises V1's theory rates

        severe = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        assert not severe, severe
    finally:
        driver.quit()
        for p in procs:
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()


def test_sweep_view_follows_the_sweep(served, tmp_path):
    pytest.importorskip("panel")
    import holoviews as hv

    from mam_xr.dashboard import SweepData
    from mam_xr.dashboard.app import SweepView
    from mam_xr.sweep import SweepSpec, open_sweep, run_sweep

    hv.extension("bokeh")
    directory = tmp_path / "chi"
    shutil.copytree(served / "sweeps" / "chi", directory)
    data = SweepData(directory)
    assert (data.dims, list(data.variables)) == (["chi"], ["theory"])
    assert data.values("chi") == CHIS
    assert data.point_run({"chi": 1.5}) is None                      # theory only: no run store
    view = SweepView(data)
    view.widgets["chi"].value = 1.5
    sweep = open_sweep(directory)["theory_rate"].load()
    np.testing.assert_array_equal(data.frame("theory", view.point()).values, sweep.sel(chi=1.5).values)
    assert f"<b>{float(sweep.sel(chi=1.5).mean()):.4f}</b>" in view.heat_caption.object
    view.tap.event(x="V1", y="4E")
    assert "has no run store (a theory-only sweep)" in view.detail.objects[0].object
    assert view.refresh() is False and not view.stale
    # a point with a run store (as a simulating sweep leaves): a click opens its run there
    name = next(e["name"] for e in data.status["points"] if e["coords"] == {"chi": 1.5})
    shutil.copytree(served / "finished.zarr", directory / "points" / name / "run.zarr")
    assert data.point_run({"chi": 1.5}) == directory / "points" / name / "run.zarr"
    assert data.point_run({"chi": 2.0}) is None
    view.tap.event(x="V2", y="4E")
    (point,) = view.detail.objects
    selected = point.objects[4].object
    assert "Selected <b>V2 4E</b>" in selected
    n_v2 = len(open_run(directory / "points" / name / "run.zarr").spikes(area="V2"))
    assert f"<span class='mamxr-area-spikes'>{n_v2}</span>" in selected
    # the sweep is extended: the view sees new points and asks to be built anew
    spec = SweepSpec.chi(CHIS + [2.5], overrides={"scale": 0.001, "areas_simulated": ["V1", "V2"],
                                                  "theory": {"T": 20.0}}, name="chi-theory", run="theory")
    run_sweep(spec, directory, progress=False)
    assert view.refresh() is True and view.stale
    assert SweepView(SweepData(directory)).widgets["chi"].options == CHIS + [2.5]


def test_run_data_says_when_the_writer_is_gone(served, tmp_path):
    from mam_xr.dashboard import RunData

    live = tmp_path / "killed.zarr"
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(served / "finished.zarr"), str(live),
                               "50", "0.2", str(SPIKES_PER_SEGMENT), str(SEGMENT_MS)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline().strip() == "0"
        data = RunData(live)
        assert data.status == "running" and data.writer_gone is None
    finally:
        writer.kill()  # as a job killed by its scheduler: the store still says running
        writer.wait(10)
    data.refresh()
    data.refresh()
    assert data.status == "running" and data.n_segments >= 1
    assert data.writer_gone is not None and f"pid {writer.pid} " in data.writer_gone
