"""The Brian2 engine (issue 8): network counts, store layout, replacement modes,
connectivity exchange with NEST, and the tutorial acceptance figures (slow).
(Drawing and saving the connectivity: tests/test_network.py.)"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from conftest import load_reference, reference_structure
from mam_xr import network
from mam_xr.engines import brian2 as eb
from mam_xr.engines.nest import nest_run_with_connectivity
from mam_xr.simulation import simulate
from mam_xr.errors import ParameterError
from mam_xr.flat import N_POPULATIONS, population_labels, to_flat_matrix, to_flat_vector
from mam_xr.params import Params

def run_b2(params, structure, store, *, connectivity=None, save_connectivity=True,
           poisson_seed=None):
    """simulate() with the Brian2 engine and its options."""
    return simulate(params.update(engine="brian2"), store=store, structure=structure, progress=False,
                    connectivity=connectivity,
                    engine_options={"save_connectivity": save_connectivity, "poisson_seed": poisson_seed})


needs_brian2 = pytest.mark.skipif(importlib.util.find_spec("brian2") is None,
                                  reason="Brian2 not installed (pip install 'mam_xr[brian2]')")

TINY_AREAS = ("V1", "V2", "FEF")
LABELS = population_labels()


# --- helpers: statistics as upstream defines them (dynamics.md §C.3, §C.9) ----------------

def pop_rates(run, n_float, t_min=500.0, t_max=None):
    """Spikes with t_min < t < t_max per population / (N_float (t_max - t_min) s)."""
    t_max = float(run.attrs["t_sim"]) if t_max is None else t_max
    sp = run.spikes()
    t = sp.times
    keep = (t > t_min) & (t < t_max)
    counts = np.bincount(sp.pop[keep], minlength=N_POPULATIONS)
    return counts / (n_float * (t_max - t_min) * 1e-3)


def pop_lvr(run, n_int, t_min=500.0, R=2.0):
    """Mean LvR per population, neurons with < 3 spikes counting 0 (§C.9)."""
    sp = run.spikes(t_start=t_min)
    out = np.zeros(N_POPULATIONS)
    for k in range(N_POPULATIONS):
        t, s = sp.population(LABELS[k])
        if n_int[k] == 0:
            continue
        o = np.lexsort((t, s))
        t, s = t[o], s[o]
        isi = np.diff(t)
        same = s[1:] == s[:-1]
        # consecutive ISI pairs of the same neuron
        a, b = isi[:-1], isi[1:]
        pair = same[:-1] & same[1:]
        a, b, owner = a[pair], b[pair], s[2:][pair]
        tot = a + b
        term = (1 - 4 * a * b / tot**2) * (1 + 4 * R / tot)
        sums = np.bincount(owner, weights=term, minlength=n_int[k])
        npairs = np.bincount(owner, minlength=n_int[k])
        lvr = np.where(npairs > 0, 3 * sums / np.maximum(npairs, 1), 0.0)
        out[k] = lvr.sum() / n_int[k]
    return out


@pytest.fixture(scope="module")
def tiny():
    from mam_xr.structure import build

    p = Params.tutorial(scale=0.002, t_sim=200.0, segment=50.0, areas_simulated=TINY_AREAS,
                        engine="brian2")
    return p, build(p)


@pytest.fixture(scope="module")
def tiny_run(tiny, tmp_path_factory):
    """One tiny run (3 areas, het_poisson_stat replacement) shared by the tests."""
    if importlib.util.find_spec("brian2") is None:
        pytest.skip("Brian2 not installed")
    p, s = tiny
    path = tmp_path_factory.mktemp("brian2") / "a.zarr"
    return run_b2(p, s, path), path


# --- the engine ------------------------------------------------------------------------

@needs_brian2
def test_brian2_imports_with_this_numpy():
    b2 = eb.import_brian2()
    q = np.array([1.0, 3.0, 2.0]) * b2.mV
    assert float(np.ptp(q) / b2.mV) == 2.0


@needs_brian2
def test_tiny_run_counts_store_rates(tiny, tiny_run):
    from mam_xr.network import connection_counts
    from mam_xr.store import open_run

    p, s = tiny
    run, path = tiny_run
    counts = connection_counts(s, TINY_AREAS)
    assert run.attrs["n_neurons_created"] == counts["neurons"]
    assert run.attrs["n_synapses_created"] == counts["synapses"]
    assert int(run.n_neurons.sum()) == counts["neurons"]
    again = open_run(path)
    assert again.status == "complete" and again.attrs["engine"] == "brian2"
    assert len(again.segments()) == 4 and again.attrs["last_segment"] == 3
    sp = again.spikes()
    assert len(sp) == again.attrs["n_spikes"] > 0
    assert sp.steps.min() >= 1 and sp.steps.max() <= 2000
    # every population of the simulated areas fires at a plausible rate after the onset
    n = np.asarray(again.root["spikes"].attrs["n_neurons"])
    rates = np.bincount(again.spikes(t_start=50.0).pop, minlength=N_POPULATIONS)[n > 0] / n[n > 0] / 0.15
    assert 2.0 < rates.mean() < 40.0, rates.mean()
    assert rates.max() < 150.0
    conn = network.load_connectivity(path)
    assert conn.n_synapses == counts["synapses"]


@needs_brian2
def test_saved_connectivity_reproduces_the_run_and_poisson_seed_changes_it(tiny, tiny_run, tmp_path):
    p, s = tiny
    a, path = tiny_run
    b = run_b2(p.update(seed=7), s, tmp_path / "b.zarr", connectivity=path,
               poisson_seed=p.simulation.seed)
    c = run_b2(p, s, tmp_path / "c.zarr", connectivity=path, poisson_seed=99)
    sa, sb, sc = a.spikes(), b.spikes(), c.spikes()
    # same network, same Poisson stream: the same spikes, step by step
    assert np.array_equal(sa.steps, sb.steps) and np.array_equal(sa.senders, sb.senders)
    # another Poisson stream: other spikes, similar rates
    assert not (len(sa) == len(sc) and np.array_equal(sa.steps, sc.steps))
    assert abs(len(sc) / len(sa) - 1) < 0.15


@needs_brian2
@pytest.mark.parametrize("mode", ["hom_poisson_stat", "het_current_nonstat"])
def test_replacement_modes(tiny, tiny_run, tmp_path, mode):
    p, s = tiny
    base = tiny_run[0]                                   # tutorial: het_poisson_stat
    run = run_b2(p.update(replace_non_simulated_areas=mode), s, tmp_path / f"{mode}.zarr")
    assert run.status == "complete"
    n_base, n_mode = base.n_spikes(), run.n_spikes()
    assert n_mode > 0 and n_mode != n_base
    # same network, stationary-equivalent drives: rates within a factor 2
    assert 0.5 < n_mode / n_base < 2.0


@needs_brian2
def test_wrong_connectivity_and_segment_are_refused(tiny, tiny_run, tmp_path):
    p, s = tiny
    other = p.update(areas_simulated=("V1", "V2"))
    with pytest.raises(ParameterError, match="connectivity"):
        run_b2(other, s, tmp_path / "b.zarr", connectivity=tiny_run[1])
    with pytest.raises(ParameterError, match="segment"):
        run_b2(p.update(segment=0.25), s, tmp_path / "c.zarr")


# --- the tutorial (slow) -----------------------------------------------------------------

@needs_brian2
@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_tutorial_meets_the_acceptance_figures(tmp_path, seed):
    ref = load_reference("seed_variability.json")
    acc = ref["acceptance"]
    s = reference_structure("downscaled_tutorial")
    p = Params.tutorial(engine="brian2", seed=seed)
    run = run_b2(p, s, tmp_path / "tut.zarr", save_connectivity=False)
    n_float = to_flat_vector(s["neurons"])
    rates = pop_rates(run, n_float)
    lo, hi = acc["mean_pop_rate_range"]
    assert lo <= rates.mean() <= hi, rates.mean()
    for name, upstream in ref["pop_rates"].items():
        upstream = np.asarray(upstream)
        rel = np.abs(rates - upstream) / upstream
        assert np.median(rel) <= acc["rate_rel_diff_median_vs_each_upstream_run_max"], (name, np.median(rel))
        assert np.corrcoef(rates, upstream)[0, 1] >= acc["rate_pearson_vs_each_upstream_run_min"], name
    lvr = pop_lvr(run, np.floor(n_float).astype(np.int64))
    lo, hi = acc["mean_pop_LvR_range"]
    assert lo <= lvr.mean() <= hi, lvr.mean()


# --- NEST and Brian2 on the same network ----------------------------------------------------

@needs_brian2
@pytest.mark.parametrize("mode", ["hom_poisson_stat", "het_current_nonstat"])
def test_nest_and_brian2_spike_identically_without_noise(tiny, tmp_path, mode):
    """Same connectivity and V0, no Poisson input (rate_ext = 0, so hom_poisson_stat
    replaces with nothing), a DC drive and, for het_current_nonstat, the replacement
    step currents: the two engines must produce the same spikes, step by step
    (exact propagators, refractoriness, delays on the grid, spike stamps at the step
    end, onset and delay of the replacement current)."""
    p, s = tiny
    s = s.copy()
    s["dc_drive"] = s["dc_drive"] + 500.0                        # V_inf = E_L + 20 mV > V_th
    p0 = p.update(rate_ext=0.0, replace_non_simulated_areas=mode)
    run = run_b2(p0, s, tmp_path / "det.zarr")
    sp = run.spikes()
    res = nest_run_with_connectivity(p0.update(engine="nest"), s, tmp_path / "det.zarr")
    a = np.lexsort((sp.senders, sp.pop, sp.steps))
    b = np.lexsort((res["senders"], res["pop"], res["steps"]))
    assert len(sp) > 5000
    assert len(sp) == res["steps"].size
    assert np.array_equal(sp.steps[a], res["steps"][b])
    assert np.array_equal(sp.pop[a], res["pop"][b])
    assert np.array_equal(sp.senders[a], res["senders"][b])


@needs_brian2
def test_poisson_sampler_of_the_external_drive(tmp_path):
    """The standalone Poisson sampler (CDF inversion with exp(-lam) precomputed, Brian2's
    PTRS above lam = 10): mean, variance and P(0) of 10^6 draws per mean."""
    b2 = eb.import_brian2()
    lams = np.array([0.002, 0.015, 0.3, 2.0, 15.0])
    n_per, steps = 1000, 1000
    try:
        b2.set_device("cpp_standalone", build_on_run=False, directory=str(tmp_path / "p"))
        G = b2.NeuronGroup(lams.size * n_per, "lam : 1 (constant)\np0 : 1 (constant)\n"
                           "k : 1\nx : 1\nx2 : 1\nk0 : 1", namespace={"poisson_inv": eb.poisson_inverse(b2)})
        G.lam = np.repeat(lams, n_per)
        G.p0 = np.exp(-np.repeat(lams, n_per))
        G.run_regularly("k = poisson_inv(lam, p0)\nx += k\nx2 += k*k\nk0 += int(k == 0)")
        net = b2.Network(G)
        net.run(steps * b2.defaultclock.dt)
        b2.device.build(directory=str(tmp_path / "p"), compile=True, run=True, with_output=False)
        x, x2, k0 = (np.asarray(getattr(G, v)[:]).reshape(lams.size, -1).sum(1) for v in ("x", "x2", "k0"))
    finally:
        eb.reset_device(b2)
        b2.set_device("runtime")
    n = n_per * steps
    mean, var, p0 = x / n, x2 / n - (x / n) ** 2, k0 / n
    np.testing.assert_array_less(np.abs(mean - lams), 5 * np.sqrt(lams / n))
    # SD of a sample variance of Poisson draws: sqrt((mu4 - var^2) / n) = sqrt((lam + 2 lam^2) / n)
    np.testing.assert_array_less(np.abs(var - lams), 5 * np.sqrt((lams + 2 * lams**2) / n))
    q = np.exp(-lams)
    np.testing.assert_array_less(np.abs(p0 - q), 5 * np.sqrt(q * (1 - q) / n) + 1e-12)


@needs_brian2
def test_nest_engine_simulates_a_saved_connectivity(tiny, tmp_path):
    """simulate(engine='nest', connectivity=<Brian2 run store>): the NEST engine uses the
    saved synapses and V0 (checked without noise: the same spikes as Brian2)."""
    p, s = tiny
    s = s.copy()
    s["dc_drive"] = s["dc_drive"] + 500.0
    p0 = p.update(rate_ext=0.0, replace_non_simulated_areas="hom_poisson_stat")
    b2 = run_b2(p0, s, tmp_path / "b2.zarr")
    nest = simulate(p0.update(engine="nest"), store=tmp_path / "nest.zarr", structure=s,
                    progress=False, connectivity=tmp_path / "b2.zarr")
    assert nest.attrs["engine"] == "nest"
    assert nest.attrs["nest"]["num_connections"] == b2.attrs["n_synapses_created"] + 2 * b2.attrs["n_neurons_created"]
    a, b = b2.spikes(), nest.spikes()
    assert len(a) == len(b) > 5000
    assert np.array_equal(a.steps, b.steps) and np.array_equal(a.senders, b.senders)
    assert np.array_equal(a.offsets, b.offsets)


@needs_brian2
def test_a_network_too_large_for_memory_is_refused_before_anything_is_written(tmp_path):
    from mam_xr.errors import SimulationError

    s = reference_structure("fullscale_tutorial")         # 2.4e10 synapses
    params = Params.tutorial(engine="brian2", scale=1.0)
    # the planner refuses first (before the theory of the plan is even drawn) ...
    with pytest.raises(ParameterError, match="predicted peak"):
        run_b2(params, s, tmp_path / "full.zarr")
    # ... and the engine's own check still holds when the planner is overridden
    with pytest.raises(SimulationError, match="fits into memory"):
        simulate(params, store=tmp_path / "full.zarr", structure=s, progress=False, check_memory=False)
    assert not (tmp_path / "full.zarr").exists()


def test_synapse_file_holds_the_drawn_network_in_the_binarys_layout(tiny, tmp_path):
    """The file the standalone binary reads: n, then pre and post (int32, global neuron
    index), w (float32, A) and delay (float32, s), written in bounded chunks."""
    p, s = tiny
    plan = network.NetworkPlan(p, s)
    conn = plan.draw_connectivity(seed=3, V0_mean=-58.0, V0_sd=5.0)
    path = tmp_path / eb.SYNAPSE_FILE
    eb.write_synapse_file(path, conn, p.simulation.dt, chunk=1000)   # many chunks
    raw = path.read_bytes()
    n = int(np.frombuffer(raw[:8], dtype=np.int64)[0])
    assert n == conn.n_synapses > 5000
    assert len(raw) == 8 + 16 * n
    body = raw[8:]
    pre = np.frombuffer(body, np.int32, n, 0)
    post = np.frombuffer(body, np.int32, n, 4 * n)
    w = np.frombuffer(body, np.float32, n, 8 * n)
    d = np.frombuffer(body, np.float32, n, 12 * n)
    want_pre, want_post = conn.global_indices()
    assert np.array_equal(pre, want_pre) and np.array_equal(post, want_post)
    np.testing.assert_allclose(w, conn.weights.astype(np.float64) * 1e-12, rtol=1e-7)
    # delays on the grid: the binary's rounding (delay / dt + 0.5) recovers every step
    steps = (d.astype(np.float64) / (p.simulation.dt * 1e-3) + 0.5).astype(np.int64)
    assert np.array_equal(steps, conn.delays)
