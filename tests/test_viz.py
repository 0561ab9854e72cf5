"""mam_xr.viz: every figure drawn from reference-derived data, checked by the data it holds."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

hv = pytest.importorskip("holoviews")

import viz_data as vd  # noqa: E402
from conftest import load_reference  # noqa: E402
from mam_xr import viz  # noqa: E402
from mam_xr.errors import ParameterError  # noqa: E402
from mam_xr.flat import AREAS, POPS, from_flat_vector  # noqa: E402
from viz_data import T_BINS  # noqa: E402

@pytest.fixture(scope="module")
def ref():
    return vd.analysis_ref()


@pytest.fixture(scope="module")
def structure():
    return vd.structure()


@pytest.fixture(scope="module")
def stats():
    return vd.stats_dataset()


@pytest.fixture(scope="module")
def series():
    return vd.rate_time_series()


@pytest.fixture(scope="module")
def spikes():
    return vd.spikes()


def _hover_tooltips(obj) -> list[tuple[str, str]]:
    from bokeh.models import HoverTool
    fig = hv.render(obj, backend="bokeh")
    tips = []
    for model in fig.select({"type": HoverTool}):
        tips.extend(model.tooltips)
    return tips


# --- rate heat map --------------------------------------------------------------------

def test_rate_heatmap_holds_rates_and_marks_th_layer4(stats):
    ov = viz.rate_heatmap(stats)
    heat = ov.HeatMap.I
    df = heat.dframe().set_index(["area", "pop"])
    for area, pop in [("V1", "23E"), ("STPp", "5I"), ("TH", "6I"), ("FEF", "4E")]:
        assert df.loc[(area, viz.POP_LABELS[pop]), "rate"] == pytest.approx(
            float(stats["rate"].sel(area=area, pop=pop)), rel=1e-12)
    expected = stats["rate"].sel(pop=list(viz.DISPLAY_POPS)).values
    actual = heat.dframe()["rate"].to_numpy().reshape(32, 8)
    np.testing.assert_allclose(actual, expected, rtol=1e-12)
    assert np.isnan(df.loc[("TH", "4E"), "rate"]) and np.isnan(df.loc[("TH", "4I"), "rate"])
    assert df.loc[("TH", "4E"), "status"].startswith("absent")
    marks = ov.Labels.I.dframe()
    assert sorted(zip(marks["area"], marks["pop"])) == [("TH", "4E"), ("TH", "4I")]
    assert list(marks["mark"]) == ["×", "×"]
    # rows bottom to top 6I ... 2/3E, areas in model order
    fig = hv.render(ov, backend="bokeh")
    assert list(fig.y_range.factors) == ["6I", "6E", "5I", "5E", "4I", "4E", "2/3I", "2/3E"]
    assert list(fig.x_range.factors) == list(AREAS)
    tips = dict(_hover_tooltips(ov))
    assert tips["area"] == "@area" and tips["population"] == "@pop"
    assert tips["time-averaged population rate"].endswith("spikes/s")


def test_rate_heatmap_sweep_dimension_gives_a_holomap(stats):
    chi = xr.DataArray([1.0, 1.9], dims="chi", name="chi")
    swept = xr.concat([stats["rate"], 2 * stats["rate"]], dim=chi)
    hmap = viz.rate_heatmap(swept)
    assert isinstance(hmap, hv.HoloMap)
    assert hmap.kdims[0].name == "chi" and list(hmap.keys()) == [1.0, 1.9]
    v1 = {k: hmap[k].HeatMap.I.dframe().set_index(["area", "pop"]).loc[("V1", "2/3E"), "rate"]
          for k in hmap.keys()}
    assert v1[1.9] == pytest.approx(2 * v1[1.0]) and v1[1.0] == pytest.approx(0.6752951560180178)
    # one colour scale over the sweep so frames compare
    assert hmap[1.0].HeatMap.I.opts.get().kwargs["clim"] == (0.0, pytest.approx(2 * 61.88, rel=1e-3))


def test_rate_heatmap_any_statistic_and_errors(stats):
    heat = viz.rate_heatmap(stats, "lvr").HeatMap.I
    assert heat.vdims[0].name == "lvr"
    assert heat.dframe().set_index(["area", "pop"]).loc[("V1", "4E"), "lvr"] == pytest.approx(
        float(stats["lvr"].sel(area="V1", pop="4E")))
    with pytest.raises(ParameterError, match=r"var='lvR' is invalid: expected a variable"):
        viz.rate_heatmap(stats, "lvR")
    with pytest.raises(ParameterError, match=r"data.dims=\('area',\) is invalid"):
        viz.rate_heatmap(stats["rate"].isel(pop=0, drop=True))


# --- rates over time --------------------------------------------------------------------

def test_instantaneous_rate_labels_time_with_the_times_shown(series, ref):
    heat = viz.instantaneous_rate(series, time=(1000.0, 1099.0))
    df = heat.dframe()
    t = np.unique(df["time"])
    np.testing.assert_array_equal(t, np.arange(1000.0, 1100.0))  # bins 1000 ... 1099 ms, not 500 ...
    assert heat.kdims[0].label == "Time" and heat.kdims[0].unit == "ms"
    assert "1000–1099 ms" in heat.opts.get().kwargs["title"]
    v = df.set_index(["area", "time"])["area_rate"]
    k = int(np.flatnonzero(T_BINS == 1050.0)[0])
    assert v.loc[("FEF", 1050.0)] == pytest.approx(ref["Analysis_rate_time_series_area"][AREAS.index("FEF"), k])
    tips = dict(_hover_tooltips(heat))
    assert tips["time"] == "@time{0.0} ms" and tips["area"] == "@area"
    assert tips["population rate (binned)"].endswith("spikes/s")


def test_area_series_from_populations_are_neuron_weighted(series, structure, ref):
    heat = viz.instantaneous_rate(series["rate"], neurons=structure, areas=["V1", "TH"])
    df = heat.dframe().set_index(["area", "time"])
    for area in ("V1", "TH"):
        got = df.xs(area, level="area").iloc[:, 0].to_numpy()
        np.testing.assert_allclose(got, ref["Analysis_rate_time_series_area"][AREAS.index(area)],
                                   rtol=1e-10, atol=1e-12)
    with pytest.raises(ParameterError, match="neurons=None is invalid"):
        viz.instantaneous_rate(series["rate"])


def test_rate_time_series_network_mean_and_chosen_areas(series, structure, ref):
    ov = viz.rate_time_series(series, areas=["V1", "FEF"], neurons=structure)
    curves = [c for c in ov if isinstance(c, hv.Curve)]
    assert [c.label for c in curves] == ["all areas (N-weighted)", "V1", "FEF"]
    net = curves[0]
    n_area = structure["neurons_area"].values
    expected = (ref["Analysis_rate_time_series_area"] * n_area[:, None]).sum(0) / n_area.sum()
    np.testing.assert_allclose(net.dimension_values("area_rate"), expected, rtol=1e-10)
    np.testing.assert_array_equal(net.dimension_values("time"), T_BINS)
    hline = [e for e in ov if isinstance(e, hv.HLine)][0]
    # the network's time-averaged rate, = N-weighted mean population rate (reference 18.094)
    assert hline.data == pytest.approx(18.094, abs=0.01)
    assert "18.09" in ov.opts.get().kwargs["title"] and "501–2000 ms" in ov.opts.get().kwargs["title"]
    fef = curves[2]
    np.testing.assert_allclose(fef.dimension_values("area_rate"),
                               ref["Analysis_rate_time_series_area"][AREAS.index("FEF")])


def test_area_rate_time_series_one_curve_per_area(series, ref):
    lay = viz.area_rate_time_series(series, areas=("V1", "V2", "FEF"), time=(600, 700))
    curves = list(lay)
    assert [c.dimension_values("area")[0] for c in curves] == ["V1", "V2", "FEF"]
    k = (T_BINS >= 600) & (T_BINS <= 700)
    for c, area in zip(curves, ("V1", "V2", "FEF")):
        np.testing.assert_allclose(c.dimension_values(1),
                                   ref["Analysis_rate_time_series_area"][AREAS.index(area)][k])
        assert c.kdims[0].unit == "ms"
    with pytest.raises(ParameterError, match=r"areas='MSTI' is invalid: .*did you mean 'MSTl'\?"):
        viz.area_rate_time_series(series, areas=["MSTI"])


# --- raster -------------------------------------------------------------------------------

def test_raster_shows_a_fraction_of_neurons_e_and_i(spikes, structure):
    lay = viz.raster(spikes, areas=("V1", "FEF"), fraction=0.5, time=(1500.0, 2000.0), neurons=structure)
    v1 = list(lay)[0]
    df = v1.dframe()
    n = {p: int(np.floor(float(structure["neurons"].sel(area="V1", pop=p)))) for p in POPS}
    shown = {p: int(np.ceil(0.5 * n[p])) for p in POPS}
    expected = 0
    for p in POPS:
        s = spikes[f"V1-{p}"]
        sel = (s[:, 0] < shown[p]) & (s[:, 1] >= 1500.0) & (s[:, 1] <= 2000.0)
        expected += int(sel.sum())
        assert (df["pop"] == viz.POP_LABELS[p]).sum() == sel.sum()
    assert len(df) == expected > 500
    assert set(df.loc[df["pop"].str.endswith("E"), "kind"]) == {"E"}
    assert set(df.loc[df["pop"].str.endswith("I"), "kind"]) == {"I"}
    # stacked 6I at the bottom ... 2/3E at the top, one row per shown neuron
    top = df[df["pop"] == "2/3E"]["y"]
    assert top.min() >= sum(shown.values()) - shown["23E"] and top.max() < sum(shown.values())
    assert v1.opts.get().kwargs["cmap"] == viz.COLOURS
    assert [lab for _, lab in v1.opts.get().kwargs["yticks"]] == ["L6", "L5", "L4", "L2/3"]
    th = list(viz.raster(spikes, areas=["TH"], neurons=structure, fraction=0.1))[0]
    assert [lab for _, lab in th.opts.get().kwargs["yticks"]] == ["L6", "L5", "L2/3"]
    tips = dict(_hover_tooltips(v1))
    assert tips["population"] == "@pop" and tips["time"].endswith("ms") and tips["area"] == "V1"
    with pytest.raises(ParameterError, match=r"fraction=0 is invalid"):
        viz.raster(spikes, fraction=0)


# --- box plots -----------------------------------------------------------------------------

def test_box_plots_groups_per_population(stats):
    lay = viz.box_plots(stats)
    panels = list(lay)
    assert [p.BoxWhisker.I.vdims[0].name for p in panels] == ["rate", "corrcoef", "lvr"]
    for panel, var in zip(panels, ["rate", "corrcoef", "lvr"]):
        box = panel.BoxWhisker.I.dframe()
        assert list(dict.fromkeys(box["pop"])) == [viz.POP_LABELS[p] for p in viz.DISPLAY_POPS]
        counts = box.groupby("pop").size()
        assert counts["4E"] == counts["4I"] == 31 and counts["2/3E"] == 32
        means = [e for e in panel if isinstance(e, hv.Scatter)][0].dframe().set_index("pop")[var]
        assert means["5I"] == pytest.approx(float(stats[var].sel(pop="5I").mean()), rel=1e-12)
        assert means["4E"] == pytest.approx(float(stats[var].sel(pop="4E").mean(skipna=True)), rel=1e-12)
    tips = dict(_hover_tooltips(panels[0]))
    assert tips["population"] == "@pop" and tips["time-averaged population rate"].endswith("spikes/s")


# --- connectivity --------------------------------------------------------------------------

def test_connectivity_matrix_relative_indegree(structure):
    heat = viz.connectivity_matrix(structure)
    df = heat.dframe().set_index(["area", "source_area"])["relative_indegree"]
    K = structure["area_indegree"]
    total = K.sum("source_area") + structure["external_area_indegree"]
    for tgt, src in [("V1", "V2"), ("FEF", "46"), ("TH", "TH")]:
        assert df.loc[(tgt, src)] == pytest.approx(float(K.sel(area=tgt, source_area=src) / total.sel(area=tgt)))
    zeros = (K == 0).sum().item()
    assert np.isnan(df.to_numpy()).sum() == zeros  # zero indegrees masked (white)
    # a row sums to 1 - external share
    v1 = df.xs("V1", level="area").fillna(0).sum()
    assert v1 == pytest.approx(1 - float(structure["external_area_indegree"].sel(area="V1") / total.sel(area="V1")))
    fig = hv.render(heat, backend="bokeh")
    assert list(fig.y_range.factors) == list(AREAS)[::-1]  # V1 at the top
    assert heat.opts.get().kwargs["logz"] is True
    tips = dict(_hover_tooltips(heat))
    assert tips["target area"] == "@area" and tips["source area"] == "@source_area"


# --- theory vs simulation ------------------------------------------------------------------

def test_theory_vs_simulation_scatter(stats):
    th = load_reference("theory_downscaled_tutorial.npz")
    theory = xr.Dataset({"rate": from_flat_vector(th["final_rates"], attrs={"units": "spikes/s"})})
    ov = viz.theory_vs_simulation(theory, stats)
    scatters = [e for e in ov if isinstance(e, hv.Scatter)]
    assert [s.label for s in scatters] == [viz.POP_LABELS[p] for p in POPS]
    assert sum(len(s) for s in scatters) == 254
    v1 = scatters[0].dframe().set_index("area").loc["V1"]
    assert v1["theory"] == pytest.approx(20.899998052508913) and v1["simulation"] == pytest.approx(0.6752951560180178)
    r = np.corrcoef(th["final_rates"], load_reference("analysis_sim_threads1.npz")["Analysis_pop_rates"])[0, 1]
    title = ov.opts.get().kwargs["title"]
    assert f"r = {r:.3f}" in title and "mean 29.59 vs 23.55 spikes/s" in title
    line = [e for e in ov if isinstance(e, hv.Curve)][0]
    np.testing.assert_array_equal(line.dimension_values(0), line.dimension_values(1))
    tips = dict(_hover_tooltips(ov))
    assert tips["theory"].endswith("spikes/s") and tips["population"] == "@pop"


# --- functional connectivity ---------------------------------------------------------------

@pytest.fixture(scope="module")
def fc_ds():
    return vd.fc_dataset()


def test_functional_connectivity_matrices_and_scatter(fc_ds):
    lay = viz.functional_connectivity(fc_ds)
    sim_heat, exp_heat, scatter = list(lay)
    assert "second hemisphere" in exp_heat.opts.get().kwargs["title"]
    for heat, var in ((sim_heat, "fc"), (exp_heat, "fc_experimental")):
        df = heat.dframe().set_index(["area_y", "area_x"])["fc"]
        assert df.loc[("V1", "V2")] == pytest.approx(float(fc_ds[var].sel(area="V1", source_area="V2")))
        assert df.loc[("MSTl", "FEF")] == pytest.approx(float(fc_ds[var].sel(area="MSTl", source_area="FEF")))
        assert np.isnan(df.loc[("V4", "V4")])
        assert len(df) == 32 * 32
        fig = hv.render(heat, backend="bokeh")
        assert list(fig.y_range.factors) == list(viz.FC_FIGURE_ORDER)[::-1]  # first area at the top
        assert list(fig.x_range.factors) == list(viz.FC_FIGURE_ORDER)
    pairs = scatter.dframe()
    assert len(pairs) == 32 * 31 // 2
    iu = np.triu_indices(32, 1)
    order = list(viz.FC_FIGURE_ORDER)
    s = fc_ds["fc"].sel(area=order, source_area=order).values[iu]
    e = fc_ds["fc_experimental"].sel(area=order, source_area=order).values[iu]
    np.testing.assert_allclose(pairs["simulated"], s)
    np.testing.assert_allclose(pairs["experimental"], e)
    assert f"r = {np.corrcoef(s, e)[0, 1]:.3f}" in scatter.opts.get().kwargs["title"]
    with pytest.raises(ParameterError, match="order='bogus' is invalid"):
        viz.functional_connectivity(fc_ds, order="bogus")


# --- static export ---------------------------------------------------------------------------

def _figures(stats, series, structure, spikes, fc_ds):
    th = from_flat_vector(load_reference("theory_downscaled_tutorial.npz")["final_rates"])
    return {
        "rate_heatmap": lambda: viz.rate_heatmap(stats),
        "rate_heatmap_sweep": lambda: viz.rate_heatmap(xr.concat(
            [stats["rate"], stats["rate"] * 2], dim=xr.DataArray([1.0, 1.9], dims="chi", name="chi"))),
        "instantaneous_rate": lambda: viz.instantaneous_rate(series, time=(1000, 1100)),
        "rate_time_series": lambda: viz.rate_time_series(series, areas=["V1"]),
        "area_rate_time_series": lambda: viz.area_rate_time_series(series),
        "raster": lambda: viz.raster(spikes, neurons=structure, fraction=0.3),
        "box_plots": lambda: viz.box_plots(stats),
        "connectivity_matrix": lambda: viz.connectivity_matrix(structure),
        "theory_vs_simulation": lambda: viz.theory_vs_simulation(th, stats),
        "functional_connectivity": lambda: viz.functional_connectivity(fc_ds),
        "sweep_statistics": lambda: viz.sweep_statistics(vd.sweep_dataset()),
        "sweep_heatmap": lambda: viz.sweep_heatmap(vd.sweep_dataset()),
        "sweep_theory_vs_simulation": lambda: viz.sweep_theory_vs_simulation(vd.sweep_dataset()),
    }


FIGURES = ["rate_heatmap", "rate_heatmap_sweep", "instantaneous_rate", "rate_time_series",
           "area_rate_time_series", "raster", "box_plots", "connectivity_matrix",
           "theory_vs_simulation", "functional_connectivity", "sweep_statistics", "sweep_heatmap",
           "sweep_theory_vs_simulation"]


@pytest.mark.parametrize("name", FIGURES)
def test_save_static_png(name, stats, series, structure, spikes, fc_ds, tmp_path):
    from PIL import Image
    obj = _figures(stats, series, structure, spikes, fc_ds)[name]()
    path = viz.save_static(obj, tmp_path / f"{name}.png", dpi=60)
    img = np.asarray(Image.open(path).convert("L"), dtype=float)
    assert img.shape[0] > 100 and img.shape[1] > 100
    assert img.std() > 10  # not blank


def test_save_static_svg_and_errors(stats, tmp_path):
    path = viz.save_static(viz.rate_heatmap(stats), tmp_path / "heat.svg")
    text = path.read_text()
    assert text.lstrip().startswith("<?xml") and "<svg" in text and "V1" in text
    with pytest.raises(ParameterError, match=r"fmt='gif' is invalid"):
        viz.save_static(viz.rate_heatmap(stats), tmp_path / "heat.gif")


def test_viz_imports_no_later_or_running_stage():
    """Data flows one way: viz draws, it never simulates or writes stores (style A1, A14)."""
    text = open(viz.__file__).read()
    for stage in ("simulation", "store", "nest", "sweep", "cli", "analysis", "theory"):
        assert f"from .{stage}" not in text and f"import {stage}" not in text


def test_static_box_plot_means_sit_on_their_boxes(stats):
    """matplotlib puts categorical boxes at 1..n and scatter points at 0..n-1; save_static aligns them."""
    panel = list(viz.box_plots(stats, ["rate"]))[0]
    plot = hv.renderer("matplotlib").get_plot(viz._for_matplotlib(panel))
    ax = plot.handles["axis"]
    ticks = {round(t, 6): lab.get_text() for t, lab in zip(ax.get_yticks(), ax.get_yticklabels())}
    points = [c for c in ax.collections if len(c.get_offsets()) == 8][0].get_offsets()
    means = stats["rate"].mean("area", skipna=True)
    for x, y in points:
        pop = {v: k for k, v in viz.POP_LABELS.items()}[ticks[round(float(y), 6)]]
        assert x == pytest.approx(float(means.sel(pop=pop)), rel=1e-12)


def test_network_mean_covers_only_the_areas_with_data(series, structure, ref):
    """A run of a subset of areas leaves NaN elsewhere; the N-weighted mean must not count them."""
    sub = series["rate"].where(series["area"].isin(["V1", "FEF"]))
    ov = viz.rate_time_series(sub, areas=["V1"], neurons=structure)
    net = [c for c in ov if isinstance(c, hv.Curve)][0]
    n = structure["neurons_area"].sel(area=["V1", "FEF"]).values
    ts = ref["Analysis_rate_time_series_area"][[AREAS.index("V1"), AREAS.index("FEF")]]
    np.testing.assert_allclose(net.dimension_values(1), (ts * n[:, None]).sum(0) / n.sum(), rtol=1e-10)
    heat = viz.instantaneous_rate(sub, neurons=structure)
    assert list(dict.fromkeys(heat.dimension_values("area"))) == ["V1", "FEF"]
    assert list(dict.fromkeys(viz.rate_heatmap(sub.isel(time=0)).HeatMap.I.dimension_values("area"))) == \
        ["V1", "FEF"]


# --- against the swept parameter (a sweep's Dataset) -------------------------------------------

E_POPS, I_POPS = ["23E", "4E", "5E", "6E"], ["23I", "4I", "5I", "6I"]


@pytest.fixture(scope="module")
def swept():
    return vd.sweep_dataset()


def _curves(ov) -> dict:
    return {c.label: c for c in ov if isinstance(c, hv.Curve)}


def test_sweep_statistic_by_type_layer_pop_area(swept, structure):
    rate = swept["rates_rate"]
    curves = _curves(viz.sweep_statistic(swept, "rate"))
    assert list(curves) == ["excitatory (E)", "inhibitory (I)"]
    for label, pops in (("excitatory (E)", E_POPS), ("inhibitory (I)", I_POPS)):
        np.testing.assert_array_equal(curves[label].dimension_values("chi"), vd.SWEEP_CHI)
        # mean over the populations with data (TH 4E, 4I are NaN)
        np.testing.assert_allclose(curves[label].dimension_values("rate"),
                                   rate.sel(pop=pops).mean(["area", "pop"]).values, rtol=1e-12)
    assert curves["excitatory (E)"].dimension_values("rate")[1] != curves["excitatory (E)"].dimension_values(
        "rate")[0]
    layers = _curves(viz.sweep_statistic(swept, "lvr", by="layer"))
    assert list(layers) == ["L2/3", "L4", "L5", "L6"]
    np.testing.assert_allclose(layers["L4"].dimension_values("lvr"),
                               swept["irregularity_lvr"].sel(pop=["4E", "4I"]).mean(["area", "pop"]).values)
    pops = _curves(viz.sweep_statistic(swept, "cc", by="pop"))
    assert list(pops) == [viz.POP_LABELS[p] for p in viz.DISPLAY_POPS]
    np.testing.assert_allclose(pops["2/3E"].dimension_values("cc"),
                               swept["correlation_corrcoef"].sel(pop="23E").mean("area").values)
    areas = _curves(viz.sweep_statistic(swept, "rate", by="area", areas=["V1", "TH"]))
    np.testing.assert_allclose(areas["TH"].dimension_values("rate"), rate.sel(area="TH").mean("pop").values)
    # neuron-weighted: the rate of an average neuron
    weighted = _curves(viz.sweep_statistic(swept, "rate", by="all", neurons=structure))["all populations"]
    n = structure["neurons"].where(rate.notnull())
    np.testing.assert_allclose(weighted.dimension_values("rate"),
                               ((rate * n).sum(["area", "pop"]) / n.sum(["area", "pop"])).values, rtol=1e-12)
    fc = _curves(viz.sweep_statistic(swept, "fc_similarity", by="all"))["all populations"]
    np.testing.assert_array_equal(fc.dimension_values("fc_similarity"),
                                  swept["functional_connectivity_fc_similarity"].values)
    tips = dict(_hover_tooltips(viz.sweep_statistic(swept, "rate")))
    assert tips["group"] == "@group" and tips["Rate"].endswith("spikes/s")


def test_sweep_statistics_panels(swept):
    lay = viz.sweep_statistics(swept)
    names = [p.get(0).vdims[0].name for p in lay]
    assert names == ["rate", "lvr", "cc", "synchrony", "fc_similarity"]
    assert [c.label for c in list(lay)[-1] if isinstance(c, hv.Curve)] == ["all populations"]
    only = viz.sweep_statistics(swept.drop_vars(["synchrony", "functional_connectivity_fc_similarity"]))
    assert [p.get(0).vdims[0].name for p in only] == ["rate", "lvr", "cc"]


def test_sweep_heatmap_area_by_chi(swept):
    heat = viz.sweep_heatmap(swept)
    df = heat.dframe().set_index(["chi", "area"])["rate"]
    rate = swept["rates_rate"]
    for chi, area in [(1.0, "V1"), (1.5, "TH"), (1.9, "FEF")]:       # uneven: equal columns, labelled
        assert df.loc[(f"{chi:g}", area)] == pytest.approx(float(rate.sel(chi=chi, area=area).mean()), rel=1e-12)
    assert len(df) == 3 * 32
    fig = hv.render(heat, backend="bokeh")
    assert list(fig.y_range.factors) == list(AREAS)[::-1]          # V1 at the top
    assert list(fig.x_range.factors) == ["1", "1.5", "1.9"]
    even = viz.sweep_heatmap(swept.assign_coords(chi=[1.0, 1.5, 2.0])).dframe()
    np.testing.assert_array_equal(np.unique(even["chi"]), [1.0, 1.5, 2.0])   # even: numbers
    one = viz.sweep_heatmap(swept, "lvr", pop="5I").dframe().set_index(["chi", "area"])["lvr"]
    assert one.loc[("1.9", "V2")] == pytest.approx(float(swept["irregularity_lvr"].sel(chi=1.9, area="V2",
                                                                                     pop="5I")))
    with pytest.raises(ParameterError, match=r"pop='5X' is invalid"):
        viz.sweep_heatmap(swept, pop="5X")


@pytest.fixture(scope="module")
def tutorial_atlas():
    from mam_xr import atlas
    from mam_xr.params import Params

    return atlas.atlas(Params.tutorial(chi=1.9), chi=vd.SWEEP_CHI, n_random=0, integrate_every=1)


def test_sweep_theory_vs_simulation_with_atlas_branches(swept, tutorial_atlas):
    sub = swept.assign(rates_rate=swept["rates_rate"].where(swept["area"].isin(["V1", "V2"])))
    ov = viz.sweep_theory_vs_simulation(sub, atlas=tutorial_atlas)
    scatters = {e.label: e for e in ov if isinstance(e, hv.Scatter)}
    simulated = sub["rates_rate"].notnull().any("chi")              # V1 and V2
    np.testing.assert_allclose(scatters["simulation"].dimension_values("rate"),
                               sub["rates_rate"].mean(["area", "pop"]).values, rtol=1e-12)
    np.testing.assert_allclose(scatters["theory at the sweep points"].dimension_values("rate"),
                               sub["theory_rate"].where(simulated).mean(["area", "pop"]).values, rtol=1e-12)
    lines = [e for e in ov if isinstance(e, hv.Curve)]
    assert {c.label for c in lines} == {"atlas: stable"}             # tutorial scale: one stable branch
    np.testing.assert_array_equal(lines[0].dimension_values("chi"), vd.SWEEP_CHI)
    np.testing.assert_allclose(lines[0].dimension_values("rate"), tutorial_atlas["rate"].isel(branch=0).where(
        simulated).mean(["area", "pop"]).values, rtol=1e-12)
    v1 = viz.sweep_theory_vs_simulation(sub, area="V1")
    sim = [e for e in v1 if e.label == "simulation"][0]
    np.testing.assert_allclose(sim.dimension_values("rate"), sub["rates_rate"].sel(area="V1").mean("pop").values)
    with pytest.raises(ParameterError, match=r"atlas='chi' is invalid: expected an atlas over 'g'"):
        viz.sweep_theory_vs_simulation(sub.rename(chi="g"), dim="g", atlas=tutorial_atlas)
    with pytest.raises(ParameterError, match=r"area='MSTI' is invalid"):
        viz.sweep_theory_vs_simulation(sub, area="MSTI")


def test_sweep_figures_refuse_bad_input_by_name(swept):
    point = swept.isel(chi=0)
    with pytest.raises(ParameterError, match=r"dim='chi' is invalid: expected a dimension of the data, the swept "
                                             r"parameter \(the data have dims \('area', 'pop'\)\)"):
        viz.sweep_statistic(point)
    for fn in (viz.sweep_heatmap, viz.sweep_theory_vs_simulation):
        with pytest.raises(ParameterError, match=r"dim='chi' is invalid"):
            fn(point)
    with pytest.raises(ParameterError, match=r"stat='x' is invalid: expected one of rate, lvr, cc, synchrony, "
                                             r"fc_similarity, theory_rate"):
        viz.sweep_statistic(swept, stat="x")
    with pytest.raises(ParameterError, match=r"stat='x' is invalid"):
        viz.sweep_statistics(swept, ["rate", "x"])
    with pytest.raises(ParameterError, match=r"by='areas' is invalid: expected one of all, type, layer, pop, area"):
        viz.sweep_statistic(swept, by="areas")
    with pytest.raises(ParameterError, match=r"by='type' is invalid: expected 'all' for stat='fc_similarity'"):
        viz.sweep_statistic(swept, "fc_similarity")
    with pytest.raises(ParameterError, match=r"data=.* is invalid: expected a variable 'rates_rate' or 'rate' "
                                             r"for stat='rate'"):
        viz.sweep_statistic(swept.drop_vars("rates_rate"))
    with pytest.raises(ParameterError, match=r"areas='MSTI' is invalid: .*did you mean 'MSTl'\?"):
        viz.sweep_statistic(swept, by="area", areas=["MSTI"])
