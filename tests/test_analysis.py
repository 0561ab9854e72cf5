"""Analysis of run stores against upstream's statistics of the same spikes (reference/README.md §3.4).

The reference threads=1 spikes are imported into a run store once per session; every
statistic is compared with ../shared/reference/analysis_sim_threads1.npz.  mam_xr divides
by the neurons simulated, floor(N); upstream by the fractional N, so rate-like values are
rescaled by N_int / N_float before the comparison (decisions.md).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import xarray as xr
import zarr

from conftest import REFERENCE, load_reference, reference_structure
from mam_xr import analysis as A
from mam_xr import flat, store_read
from mam_xr.analysis import compute, kernels
from mam_xr.analysis.shapes import area_index
from mam_xr.errors import ParameterError, StoreError
from mam_xr.store import SpikeWriter, create_run, set_status

RTOL = 1e-12        # float sums in another order; counts compare exactly
RTOL_CC = 1e-10     # corrcoef via |Σz|² - n instead of the n × n matrix (measured 4e-12)


@pytest.fixture(scope="session")
def ref():
    return load_reference("analysis_sim_threads1.npz")


@pytest.fixture(scope="session")
def n_float_int():
    s = load_reference("structure_downscaled_tutorial.npz")
    return s["N"], s["N_created_int"].astype(float)


@pytest.fixture(scope="session")
def run1(tmp_path_factory):
    path = tmp_path_factory.mktemp("runs") / "threads1.zarr"
    return A.import_upstream(REFERENCE / "spikes_sim_threads1.npz", path, t_sim_ms=2000.0,
                             structure=reference_structure(), label="threads1")


@pytest.fixture(scope="session")
def stats1(run1):
    return A.analyze(run1)


def flat_of(da):
    return flat.to_flat_vector(da)


def area_of(da):
    return da.transpose("area", ...).values


def test_import_keeps_every_spike(run1, ref):
    counts = store_read.population_spike_counts(run1)
    np.testing.assert_array_equal(counts, ref["n_spikes_total_per_pop_0_to_tsim"])
    gids = load_reference("network_gids.json")
    n = [gids[p][1] - gids[p][0] + 1 for p in flat.population_labels()]
    assert run1.root["spikes"].attrs["n_neurons"] == n
    sp = run1.spikes(area="V1", pop="23E")
    raw = np.load(REFERENCE / "spikes_sim_threads1.npz")["V1-23E"]
    np.testing.assert_array_equal(sp.senders, raw[:, 0] - gids["V1-23E"][0])
    np.testing.assert_allclose(sp.times, raw[:, 1], rtol=1e-15)


def test_rates_equal_upstream_after_rescaling(stats1, ref, n_float_int):
    nf, ni = n_float_int
    r = stats1["rates"]
    np.testing.assert_allclose(flat_of(r["rate"]) * ni / nf, ref["Analysis_pop_rates"], rtol=RTOL)
    np.testing.assert_array_equal(flat_of(r["n_spikes"]), ref["n_spikes_total_per_pop_0_to_tsim"])
    area = area_index()
    scale = np.bincount(area, ni) / np.bincount(area, nf)
    np.testing.assert_allclose(area_of(r["area_rate"]) * scale, ref["Analysis_area_rates_total"], rtol=RTOL)
    assert r["rate"].attrs["units"] == "spikes/s" and "open" in r.attrs["window"]
    assert bool(r["rate"].sel(area="TH", pop="4E").isnull())


def test_rate_time_series_bin_for_bin(stats1, ref, n_float_int):
    nf, ni = n_float_int
    ts = stats1["rate_time_series"]
    assert ts.sizes["time"] == 1500 and ts["time"].values[0] == 501.0
    np.testing.assert_allclose(flat_of(ts["rate"]) * (ni / nf)[:, None],
                               ref["Analysis_rate_time_series_pop"], rtol=RTOL, atol=1e-12)
    area = area_index()
    scale = (np.bincount(area, ni) / np.bincount(area, nf))[:, None]
    np.testing.assert_allclose(area_of(ts["area_rate"]) * scale, ref["Analysis_rate_time_series_area"],
                               rtol=RTOL, atol=1e-12)
    np.testing.assert_allclose(area_of(ts["area_rate"]) * scale, ref["M2E_rate_time_series_full_area"],
                               rtol=1e-12, atol=1e-12)


def test_synchrony(stats1, ref):
    s = stats1["synchrony"]
    np.testing.assert_allclose(flat_of(s["synchrony"]), ref["Analysis_pop_synchrony"], rtol=RTOL)
    np.testing.assert_allclose(area_of(s["area_synchrony"]), ref["Analysis_area_synchrony_total"], rtol=RTOL)


def test_lvr_and_cv_isi(stats1, ref, n_float_int):
    nf, ni = n_float_int
    irr = stats1["irregularity"]
    lvr = flat_of(irr["lvr"])
    np.testing.assert_allclose(lvr, ref["Analysis_pop_LvR"], rtol=RTOL)
    # upstream's M2E script averages over round(N) instead of int(N)
    np.testing.assert_allclose(lvr * ni / np.round(nf), ref["M2E_pop_LvR"], rtol=RTOL)
    np.testing.assert_allclose(flat_of(irr["cv_isi"]), ref["Analysis_pop_cv_isi"], rtol=RTOL)
    assert irr.attrs["R_ms"] == 2.0


def test_correlation_coefficient(stats1, ref):
    cc = stats1["correlation"]
    np.testing.assert_allclose(flat_of(cc["corrcoef"]), ref["M2E_pop_corrcoeff"], rtol=RTOL_CC)
    assert int(cc["n_corr_neurons"].max()) == 338     # the 2000 cap does not bite at this scale


def test_rate_distribution_counts_every_spike(stats1, run1, ref):
    rd = stats1["rate_distribution"]
    np.testing.assert_allclose(flat_of(rd["mean"]), flat_of(stats1["rates"]["rate"]), rtol=RTOL)
    np.testing.assert_allclose(rd["fraction"].sum("rate").where(rd["exists"]).fillna(1.0), 1.0, rtol=1e-12)
    # upstream's create_pop_rate_dists drops the first spike of every spiking neuron but the first
    # (docs/upstream-differences.md); re-applying that bug to our counts gives its numbers exactly
    # the per-neuron counts are recomputed here
    sp = run1.spikes(t_start=500.05, t_stop=2000.0)     # (500, 2000) on the 0.1 ms grid
    n = np.asarray(run1.root["spikes"].attrs["n_neurons"])
    mu = []
    for k in range(flat.N_POPULATIONS):
        c = np.bincount(sp.senders[sp.offsets[k]:sp.offsets[k + 1]], minlength=n[k]).astype(float)
        spiking = np.flatnonzero(c)
        c[spiking[1:]] -= 1
        mu.append(c.mean() / 1.5)
    np.testing.assert_allclose(mu, ref["Analysis_pop_rate_dist_mu"], rtol=RTOL)
    assert np.all(flat_of(rd["mean"]) >= ref["Analysis_pop_rate_dist_mu"])


def test_smoothed_rate_is_a_gaussian_smoothing_of_the_binned_series(stats1):
    sm, ts = stats1["smoothed_rate"], stats1["rate_time_series"]
    assert sm.attrs["kernel"] == "gaussian"
    sig = flat_of(sm["sigma"])
    assert np.all((sig >= 1.0) & (sig <= 375.0))
    # a smoothing keeps the mean rate up to edge effects and lowers the variance
    m_s, m_b = flat_of(sm["rate"].mean("time")), flat_of(ts["rate"].mean("time"))
    np.testing.assert_allclose(m_s, m_b, rtol=0.05)
    assert np.all(flat_of(sm["rate"].std("time")) < flat_of(ts["rate"].std("time")))


def test_fixed_sigma_smoothing_matches_direct_convolution(run1):
    sm = A.analyze(run1, "smoothed_rate", smooth_sigma_ms=5.0, store=False)["smoothed_rate"]
    ts = A.analyze(run1, "rate_time_series")["rate_time_series"]
    x = ts["rate"].sel(area="V1", pop="4E").values
    u = np.arange(-25, 26)
    k = np.exp(-u ** 2 / 50.0)
    k /= k.sum()
    expected = np.convolve(x, k, "same") / np.convolve(np.ones_like(x), k, "same")
    np.testing.assert_allclose(sm["rate"].sel(area="V1", pop="4E").values, expected, rtol=1e-10)


def test_functional_connectivity(stats1):
    fc = stats1["functional_connectivity"]
    m = fc["fc"].values
    np.testing.assert_allclose(m, m.T, atol=1e-12)
    np.testing.assert_allclose(np.diag(m), 1.0, rtol=1e-12)
    exp = fc["fc_experimental"]
    # MSTl is present (upstream's MSTI typo dropped it); second hemisphere block by default
    assert exp.sel(area="MSTl", source_area="V1").item() != 0
    first = A.experimental_fc(block="first")
    assert not np.allclose(first.values, exp.values)
    assert -1 <= float(fc["fc_similarity"]) <= 1


def test_experimental_fc_reads_the_last_block():
    from mam_xr.data import fetch

    path = fetch("Fig8_exp_func_conn.csv")
    lines = [ln for ln in path.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    names = lines[0].split("\t")
    i, j = len(names) - 1 - names[::-1].index("V1"), len(names) - 1 - names[::-1].index("FEF")
    assert A.experimental_fc().sel(area="V1", source_area="FEF").item() == float(lines[1 + i].split("\t")[j])


def test_threads2_lvr_is_the_time_sorted_value(tmp_path):
    run = A.import_upstream(REFERENCE / "spikes_sim_threads2.npz", tmp_path / "t2.zarr", t_sim_ms=2000.0,
                            gids=REFERENCE / "network_gids.json", structure=reference_structure())
    st = A.analyze(run, ["irregularity", "rates"], store=False)
    ref2 = load_reference("analysis_sim_threads2.npz")
    lvr = flat_of(st["irregularity"]["lvr"])
    assert abs(lvr.mean() - 0.5502) < 5e-5          # reference/README.md §5.5
    assert abs(ref2["Analysis_pop_LvR"].mean() - 0.4455) < 5e-5   # upstream's unsorted value
    nf, ni = load_reference("structure_downscaled_tutorial.npz")["N"], \
        load_reference("structure_downscaled_tutorial.npz")["N_created_int"]
    np.testing.assert_allclose(flat_of(st["rates"]["rate"]) * ni / nf, ref2["Analysis_pop_rates"], rtol=RTOL)


def test_result_does_not_depend_on_recording_order(tmp_path, stats1):
    raw = np.load(REFERENCE / "spikes_sim_threads1.npz")
    rng = np.random.default_rng(0)
    shuffled = {k: raw[k][rng.permutation(len(raw[k]))] for k in raw.files}
    np.savez(tmp_path / "shuffled.npz", **shuffled)
    run = A.import_upstream(tmp_path / "shuffled.npz", tmp_path / "s.zarr", t_sim_ms=2000.0,
                            gids=REFERENCE / "network_gids.json", structure=reference_structure())
    st = A.analyze(run, ["irregularity", "correlation"], store=False)
    xr.testing.assert_allclose(st["irregularity"]["lvr"], stats1["irregularity"]["lvr"], rtol=1e-14)
    xr.testing.assert_allclose(st["correlation"]["corrcoef"], stats1["correlation"]["corrcoef"], rtol=1e-14)


def test_cache_is_reused_and_invalidated_by_definition(run1, stats1, monkeypatch):
    calls = []
    real = compute.run_group

    def counting(*args, **kw):
        calls.append(args[1].tolist())
        return real(*args, **kw)

    monkeypatch.setattr(compute, "run_group", counting)
    again = A.analyze(run1)
    assert calls == []
    xr.testing.assert_identical(again["irregularity"], stats1["irregularity"])
    changed = A.analyze(run1, "irregularity", R_ms=1.0)
    assert calls and json.loads(changed["irregularity"].attrs["definition"])["R_ms"] == 1.0
    stored = A.read_analysis(run1, "irregularity")
    assert json.loads(stored.attrs["definition"])["R_ms"] == 1.0
    assert not np.allclose(flat_of(changed["irregularity"]["lvr"]), flat_of(stats1["irregularity"]["lvr"]))
    A.analyze(run1, "irregularity")      # back to the default definition


def test_list_of_runs_gets_a_run_dimension(run1, tmp_path):
    other = A.import_upstream(REFERENCE / "spikes_sim_threads2.npz", tmp_path / "t2.zarr", t_sim_ms=2000.0,
                              gids=REFERENCE / "network_gids.json", structure=reference_structure(),
                              label="threads2")
    both = A.analyze([run1, other], ["rates", "rate_distribution"])
    assert list(both["rates"]["run"].values) == ["threads1", "threads2"]
    assert both["rates"]["rate"].dims == ("run", "area", "pop")
    np.testing.assert_allclose(both["rate_distribution"]["fraction"].sum("rate").sel(area="V1", pop="23E"), 1.0)
    sweep = A.analyze([run1, other], "rates", dim="threads", coords=[1, 2])
    assert sweep["rates"]["rate"].dims == ("threads", "area", "pop")
    xr.testing.assert_identical(sweep["rates"]["rate"].sel(threads=2).drop_vars("threads"),
                                both["rates"]["rate"].sel(run="threads2").drop_vars("run"))


# --------------------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------------------

def _tiny_run(path, spikes_per_pop, *, t_sim=1000.0, status="complete", n=10):
    """A synthetic run store: ``spikes_per_pop`` {flat index: (steps, senders)}."""
    root = create_run(path, structure=reference_structure(), dt=0.1, t_sim=t_sim, n_segments_planned=1,
                      n_neurons=[n] * flat.N_POPULATIONS, label=path.stem)
    steps, senders, pops = [], [], []
    for k, (st, se) in spikes_per_pop.items():
        steps.append(np.asarray(st)), senders.append(np.asarray(se)), pops.append(np.full(len(st), k))
    SpikeWriter(root).append_segment(np.concatenate(steps), np.concatenate(senders), np.concatenate(pops),
                                     0.0, t_sim)
    set_status(root, status)
    return path


def test_empty_and_single_neuron_populations_give_documented_values(tmp_path):
    rng = np.random.default_rng(1)
    pops = {0: (np.sort(rng.integers(1, 10000, 500)), rng.integers(0, 10, 500)),   # V1-23E: 10 neurons
            1: (np.arange(5100, 9000, 100), np.zeros(39, int))}                   # V1-23I: one neuron
    path = _tiny_run(tmp_path / "tiny.zarr", pops)
    st = A.analyze(path, store=False)
    assert float(st["rates"]["rate"].sel(area="V1", pop="4E")) == 0.0
    assert float(st["irregularity"]["lvr"].sel(area="V1", pop="4E")) == 0.0
    assert np.isnan(float(st["correlation"]["corrcoef"].sel(area="V1", pop="4E")))
    assert np.isnan(float(st["correlation"]["corrcoef"].sel(area="V1", pop="23I")))   # < 2 neurons
    assert np.isfinite(float(st["correlation"]["corrcoef"].sel(area="V1", pop="23E")))
    assert np.isnan(float(st["synchrony"]["synchrony"].sel(area="V2", pop="5E")))
    # a regular train: LvR with R = 0 is 0 and CV ISI 0
    irr = A.analyze(path, "irregularity", R_ms=0.0, store=False)["irregularity"]
    assert float(irr["lvr"].sel(area="V1", pop="23I")) == 0.0
    assert float(irr["cv_isi"].sel(area="V1", pop="23I")) == 0.0


def test_run_without_spikes(tmp_path):
    root = create_run(tmp_path / "silent.zarr", structure=reference_structure(), dt=0.1, t_sim=1000.0,
                      n_segments_planned=1, n_neurons=[10] * flat.N_POPULATIONS)
    SpikeWriter(root).append_segment(np.zeros(0, int), np.zeros(0, int), np.zeros(0, int), 0.0, 1000.0)
    set_status(root, "complete")
    st = A.analyze(tmp_path / "silent.zarr", store=False)
    assert float(st["rates"]["rate"].max()) == 0.0 and float(st["irregularity"]["lvr"].max()) == 0.0
    assert bool(st["correlation"]["corrcoef"].isnull().all())
    assert bool(st["functional_connectivity"]["fc"].isnull().all())
    assert float(st["rate_distribution"]["fraction_silent"].min()) == 1.0


def test_window_outside_the_simulated_time(run1):
    with pytest.raises(ParameterError, match=r"t_max_ms=3000.0 is invalid: expected a time within"):
        A.analyze(run1, t_max_ms=3000.0)
    with pytest.raises(ParameterError, match=r"t_min_ms=2500.0 is invalid"):
        A.analyze(run1, t_min_ms=2500.0)
    with pytest.raises(ParameterError, match=r"bin_ms=0.25 is invalid: expected a multiple"):
        A.analyze(run1, bin_ms=0.25)
    with pytest.raises(ParameterError, match=r"statistics='lvr' is invalid"):
        A.analyze(run1, "lvr")
    with pytest.raises(ParameterError, match=r"R='2' is invalid: expected a definition parameter"):
        A.analyze(run1, R="2")


def test_incomplete_and_foreign_stores(tmp_path):
    path = _tiny_run(tmp_path / "running.zarr", {0: ([10, 20], [0, 1])}, status="running")
    with pytest.raises(StoreError, match="incomplete"):
        A.analyze(path)
    with pytest.warns(UserWarning, match="incomplete"):
        st = A.analyze(path, "rates", allow_incomplete=True, store=False)
    assert int(st["rates"]["n_spikes"].sel(area="V1", pop="23E")) == 2
    zarr.open_group(str(tmp_path / "foreign.zarr"), mode="w", zarr_format=3)
    with pytest.raises(StoreError, match="format=None is invalid"):
        A.analyze(tmp_path / "foreign.zarr")
    with pytest.raises(StoreError, match="path not found"):
        A.analyze(tmp_path / "missing.zarr")


def test_fc_needs_the_structure(tmp_path):
    run = A.import_upstream(REFERENCE / "spikes_sim_threads1.npz", tmp_path / "nostruct.zarr", t_sim_ms=2000.0,
                            gids=REFERENCE / "network_gids.json")
    with pytest.raises(StoreError, match="has no structure: the functional connectivity needs"):
        A.analyze(run, "functional_connectivity")
    assert "rate" in A.analyze(run, "rates", store=False)["rates"]


def test_lazy_spikes_select_without_reading_the_rest(run1):
    sp = A.lazy_spikes(run1, area="V2", pop=["4E", "4I"], t_start_ms=1000.0, t_stop_ms=1100.0)
    t = sp["times"].compute()
    pops = sp["population"].compute()
    labels = flat.population_labels()
    assert set(pops.tolist()) == {labels.index("V2-4E"), labels.index("V2-4I")}
    assert t.min() >= 1000.0 and t.max() < 1100.0
    raw = np.load(REFERENCE / "spikes_sim_threads1.npz")
    expected = sum(int(((raw[p][:, 1] >= 1000.0) & (raw[p][:, 1] < 1100.0)).sum()) for p in ("V2-4E", "V2-4I"))
    assert len(t) == expected


# --------------------------------------------------------------------------------------
# Bounded memory: a store larger than the memory given to Dask
# --------------------------------------------------------------------------------------

def _peak_rss_bytes():
    """Peak RSS of this process since it started (VmHWM; ru_maxrss survives exec and
    would include the parent's memory at spawn time)."""
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


@pytest.mark.slow
def test_large_store_under_a_dask_memory_limit(tmp_path):
    distributed = pytest.importorskip("distributed")
    n_spikes, n_seg, t_sim = 50_000_000, 10, 10_000.0
    n_neurons = np.full(flat.N_POPULATIONS, 400)
    root = create_run(tmp_path / "big.zarr", structure=reference_structure(), dt=0.1, t_sim=t_sim,
                      n_segments_planned=n_seg, n_neurons=n_neurons, label="big")
    w = SpikeWriter(root)
    rng = np.random.default_rng(2)
    per = n_spikes // n_seg
    seg_steps = int(t_sim / n_seg * 10)
    for s in range(n_seg):
        # random (population, neuron, step) triples without repeats: a neuron spikes at most
        # once per step, as in NEST
        key = np.unique(rng.integers(0, flat.N_POPULATIONS * 400 * seg_steps, int(per * 1.01)))[:per]
        pops, rest = np.divmod(key, 400 * seg_steps)
        senders, steps = np.divmod(rest, seg_steps)
        w.append_segment(steps + s * seg_steps + 1, senders, pops, s * t_sim / n_seg, (s + 1) * t_sim / n_seg)
    set_status(root, "complete")
    data_bytes = n_spikes * 8                     # int32 times + int32 senders, uncompressed
    limit = 350 * 2**20
    assert limit < data_bytes
    cfg = {"distributed.worker.memory.target": False, "distributed.worker.memory.spill": False,
           "distributed.worker.memory.pause": False, "distributed.worker.memory.terminate": 0.95}
    import dask

    with dask.config.set(cfg), distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                                                        memory_limit=limit, dashboard_address=None) as cl, \
            distributed.Client(cl) as client:
        st = A.analyze(tmp_path / "big.zarr", ["rates", "irregularity", "correlation"], memory_limit=limit)
        peak = max(client.run(_peak_rss_bytes).values())
    assert int(st["rates"]["n_spikes"].sum()) == n_spikes
    print(f"\n{n_spikes:,} spikes ({data_bytes / 2**20:.0f} MiB of spike arrays): worker peak RSS "
          f"{peak / 2**20:.0f} MiB, limit {limit / 2**20:.0f} MiB")
    assert peak < limit, f"worker peak RSS {peak / 2**20:.0f} MiB above the limit"
    # Poisson-like random spikes at ~50 spikes/s: LvR above 1 (R = 2 ms), correlations near 0
    assert 1.0 < float(st["irregularity"]["lvr"].mean()) < 1.6
    assert abs(float(st["correlation"]["corrcoef"].mean())) < 1e-3


@pytest.mark.parametrize("n_per_pop, time_sorted", [(30, True), (30, False), (40_000, True), (40_000, False)])
def test_sort_by_neuron_any_order_and_size(n_per_pop, time_sorted):
    """(neuron, time) order from the radix path (1 or 2 uint16 digits) and the fallback."""
    rng = np.random.default_rng(3)
    n = 200_000
    pop = rng.integers(0, 3, n)
    sender = rng.integers(0, n_per_pop, n)
    steps = rng.integers(0, 20_000, n)
    if time_sorted:
        o = np.argsort(steps, kind="stable")
        pop, sender, steps = pop[o], sender[o], steps[o]
    base = np.array([0, n_per_pop, 2 * n_per_pop, 3 * n_per_pop])
    g, s = kernels._sort_by_neuron(pop, sender.copy(), steps, base)
    g_ref = base[pop] + sender
    o = np.lexsort((steps, g_ref))
    np.testing.assert_array_equal(g, g_ref[o])
    np.testing.assert_array_equal(s, steps[o])


def test_a_segmented_nest_run_gives_what_one_segment_gives(tmp_path):
    """A tiny NEST run written in 4 segments, analysed as it is and re-written as one segment:
    per-neuron statistics across segment boundaries must not change."""
    pytest.importorskip("nest")
    from mam_xr.params import Params
    from mam_xr.simulation import simulate
    from mam_xr.structure import build

    p = Params.tutorial(scale=0.001, t_sim=200.0, segment=50.0)
    structure = build(p)
    run = simulate(p, store=tmp_path / "tiny.zarr", structure=structure, progress=False)
    assert len(run.segments()) == 4
    sp = run.spikes()
    root = create_run(tmp_path / "one.zarr", structure=structure, dt=run.dt, t_sim=200.0, n_segments_planned=1,
                      n_neurons=run.root["spikes"].attrs["n_neurons"], label="one")
    SpikeWriter(root).append_segment(sp.steps, sp.senders, np.repeat(np.arange(254), np.diff(sp.offsets)),
                                     0.0, 200.0)
    set_status(root, "complete")
    kw = dict(t_min_ms=50.0, store=False)
    a, b = A.analyze(run, **kw), A.analyze(tmp_path / "one.zarr", **kw)
    for name in A.STATISTICS:
        xr.testing.assert_allclose(a[name].drop_attrs(), b[name].drop_attrs(), rtol=1e-12)
    # mean over all neurons and the whole run agrees with the store's own count
    tot = float((a["rates"]["n_spikes"]).sum())
    assert tot == run.n_spikes()
    assert np.isfinite(float(a["irregularity"]["lvr"].mean()))


def test_short_run_defaults_to_the_whole_run_but_explicit_window_is_checked(tmp_path):
    """A run within the 500 ms transient is analysed from 0 ms (with a warning)."""
    import warnings as _w

    import numpy as np
    import pytest as _pytest

    from mam_xr import ParameterError, analysis, store
    from conftest import reference_structure

    path = tmp_path / "short.zarr"
    root = store.create_run(path, structure=reference_structure("downscaled_tutorial"),
                            dt=0.1, t_sim=200.0, n_segments_planned=1)
    writer = store.SpikeWriter(root)
    writer.append_segment(np.array([10, 500, 1500], dtype=np.int32), np.array([0, 1, 0], dtype=np.int32),
                          np.array([0, 0, 0]), 0.0, 200.0)
    store.set_status(root, "complete")
    with _pytest.warns(UserWarning, match="analysing from 0 ms"):
        stats = analysis.analyze(str(path), "rates", store=False)
    assert stats["rates"].attrs["t_min_ms"] == 0.0
    n = int(np.floor(reference_structure("downscaled_tutorial")["neurons"].sel(area="V1", pop="23E")))
    assert float(stats["rates"]["rate"].sel(area="V1", pop="23E")) == _pytest.approx(3 / (n * 0.2))
    with _pytest.raises(ParameterError, match="t_min_ms=500"):
        analysis.analyze(str(path), "rates", store=False, t_min_ms=500.0)


# --------------------------------------------------------------------------------------
# A statistic added through the registry alone: the Fano factor
# --------------------------------------------------------------------------------------

def _fano_direct(run, *, t_min=500.0, t_max=2000.0, bin_ms=100.0, max_neurons=1000):
    """Fano factor per flat population with np.histogram, neuron by neuron."""
    sp = run.spikes()
    n = np.asarray(run.root["spikes"].attrs["n_neurons"])
    edges = t_min + bin_ms * np.arange(int((t_max - t_min) / bin_ms) + 1)
    out, n_used = np.full(flat.N_POPULATIONS, np.nan), np.zeros(flat.N_POPULATIONS, int)
    for k in range(flat.N_POPULATIONS):
        t = sp.times[sp.offsets[k]:sp.offsets[k + 1]]
        s = sp.senders[sp.offsets[k]:sp.offsets[k + 1]]
        ff = []
        for i in range(min(n[k], max_neurons)):
            c = np.histogram(t[s == i], bins=edges)[0].astype(float)
            if c.sum() > 0:
                ff.append(c.var() / c.mean())
        n_used[k] = len(ff)
        if ff:
            out[k] = np.mean(ff)
    return out, n_used


def test_fano_factor_equals_a_direct_numpy_computation(run1, stats1):
    ff = stats1["fano_factor"]
    expected, n_used = _fano_direct(run1)
    np.testing.assert_allclose(flat_of(ff["fano_factor"]), expected, rtol=1e-12)
    np.testing.assert_array_equal(flat_of(ff["n_fano_neurons"]), n_used)
    assert ff.attrs["bin_ms"] == 100.0 and ff.attrs["n_bins"] == 15 and ff.attrs["n_neurons_max"] == 1000
    assert 0.5 < float(ff["fano_factor"].mean()) < 5.0
    # a neuron subsample and another bin width: only this statistic is recomputed
    small = A.analyze(run1, "fano_factor", ff_max_neurons=20, ff_bin_ms=50.0, store=False)["fano_factor"]
    expected, n_used = _fano_direct(run1, bin_ms=50.0, max_neurons=20)
    np.testing.assert_allclose(flat_of(small["fano_factor"]), expected, rtol=1e-12)
    assert int(small["n_fano_neurons"].max()) <= 20


def test_registry_drives_statistics_and_docs(run1):
    from pathlib import Path

    from mam_xr.analysis import registry

    assert "fano_factor" in A.STATISTICS and A.DEFAULTS["ff_bin_ms"] == 100.0
    with pytest.raises(ParameterError, match="ff_max_neurons=0 is invalid: expected a positive integer"):
        A.analyze(run1, "fano_factor", ff_max_neurons=0)
    with pytest.raises(ParameterError, match="ff_bin_ms=0.05 is invalid: expected a multiple"):
        A.analyze(run1, "fano_factor", ff_bin_ms=0.05)
    docs = (Path(__file__).parents[1] / "docs" / "analysis.md").read_text()
    assert registry.markdown_table() in docs, "docs/analysis.md: regenerate with python -m mam_xr.analysis.docs"
    assert registry.markdown_parameters() in docs
    with pytest.raises(ValueError, match="already registered"):
        A.register(A.REGISTRY["rates"])


def test_damaged_cache_is_detected_and_recomputed(tmp_path):
    from mam_xr import store_cache

    run = A.import_upstream(REFERENCE / "spikes_sim_threads1.npz", tmp_path / "c.zarr", t_sim_ms=2000.0,
                            gids=REFERENCE / "network_gids.json", structure=reference_structure())
    first = A.analyze(run, "rates")["rates"]
    report = run.verify()
    assert report["ok"] and report["checked"]["analysis_groups"] == 1
    g = zarr.open_group(str(tmp_path / "c.zarr"), mode="r+")
    arr = g["analysis/rates/n_spikes"]
    arr[0, 0] = arr[0, 0] + 1.0                     # a changed value, chunks still decode
    with pytest.raises(StoreError, match=r"analysis/rates is damaged \(checksum mismatch in \['n_spikes'\]\)"):
        store_cache.read_cached(run, "rates")
    assert not run.verify()["ok"]
    again = A.analyze(run, "rates")["rates"]         # recomputed and rewritten
    xr.testing.assert_identical(again.drop_attrs(), first.drop_attrs())
    assert store_cache.read_cached(run, "rates") is not None
