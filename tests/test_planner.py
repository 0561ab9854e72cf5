"""The resource planner: counts from the structure, model arithmetic, cluster
layout, the refusal of runs that do not fit, and ``mam-xr plan``."""

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

import mam_xr
from mam_xr import Params, ParameterError, planner
from mam_xr.flat import to_flat_matrix, to_flat_vector
from mam_xr.network import CHUNK_SYNAPSES

GiB = 2.0 ** 30


@pytest.fixture(scope="module")
def tutorial():
    p = Params.tutorial(t_sim=1000.0, threads=1)
    net = mam_xr.build(p)
    return p, net, planner.plan(p, net, memory_available=16 * GiB)


def test_tutorial_counts_equal_the_structure(tutorial):
    p, net, rep = tutorial
    assert mam_xr.plan is planner.plan
    assert rep.neurons == int(np.floor(to_flat_vector(net["neurons"])).sum()) == 20525
    assert rep.synapses == int(np.floor(np.nan_to_num(to_flat_matrix(net["synapses"]))).sum()) == 600003
    assert (rep.N_scaling, rep.K_scaling, rep.t_sim_ms, rep.areas) == (0.005, 0.005, 1000.0, 32)
    # spikes from the mean-field rates: sum of rate x neurons x t_sim
    th = mam_xr.theory.integrate(net, p, warn=False)
    n = np.floor(to_flat_vector(net["neurons"]))
    nu = np.nan_to_num(to_flat_vector(th["rate"]))
    assert rep.theory_converged
    assert rep.spikes == pytest.approx((nu * n).sum() * 1.0, rel=1e-12)
    assert rep.mean_rate == pytest.approx((nu * n).sum() / n.sum(), rel=1e-12)
    assert 15.0 < rep.mean_rate < 35.0


def test_tutorial_memory_and_time_follow_the_coefficient_table(tutorial):
    p, net, rep = tutorial
    assert set(rep.engines) == {"nest", "brian2"}
    b2 = rep.engines["brian2"]
    c = planner.coefficient
    expected = (c("memory_fixed", "brian2") + c("memory_per_neuron", "brian2") * 20525
                + c("memory_per_synapse", "brian2") * 600003 + c("memory_per_drawn_synapse", "brian2") * 600003
                + c("memory_per_spike", "brian2") * rep.spikes)
    assert b2.peak_memory == pytest.approx(expected, rel=1e-12)
    store = (c("store_fixed", "brian2") + c("store_per_spike", "brian2") * rep.spikes
             + c("store_per_synapse", "brian2") * 600003)
    assert b2.store_bytes == pytest.approx(store, rel=1e-12)
    nest = rep.engines["nest"]
    assert nest.synapse_model == "static_synapse_hpc"  # 20,525 neurons on one thread
    for est in rep.engines.values():
        assert 1 in est.threads
        t = est.threads[-1]
        assert est.run_s[1] == pytest.approx(est.construction_s[1] + 1.0 * est.per_simulated_second_s[1]
                                             + c("process_fixed", est.engine), rel=1e-12)
        assert est.per_simulated_second_s[t] <= est.per_simulated_second_s[1]
    assert rep.fits("nest") and rep.fits("brian2")
    d = rep.to_dict()
    json.dumps(d)
    assert d["neurons"] == 20525 and d["engines"]["nest"]["synapse_model"] == "static_synapse_hpc"


def test_memory_and_time_grow_with_scale():
    small = planner.plan(Params.tutorial(scale=0.01), memory_available=16 * GiB)
    big = planner.plan(Params.tutorial(scale=0.02), memory_available=16 * GiB)
    assert big.neurons == pytest.approx(2 * small.neurons, rel=0.01)
    assert big.synapses == pytest.approx(4 * small.synapses, rel=0.01)
    for e in ("nest", "brian2"):
        assert big.engines[e].peak_memory > small.engines[e].peak_memory
        assert big.engines[e].construction_s[1] > small.engines[e].construction_s[1]
        assert big.engines[e].per_simulated_second_s[1] > small.engines[e].per_simulated_second_s[1]


def test_nest_synapse_model_follows_nodes_per_virtual_process():
    assert planner._synapse_model(60000, 1) == "static_synapse_hpc"
    assert planner._synapse_model(82469, 1) == "static_synapse"
    assert planner._synapse_model(82469, 2) == "static_synapse_hpc"


def test_cluster_layout_arithmetic():
    counts = {"neurons": 4_000_000, "synapses": 2.4e10, "spikes": 0.0, "recurrent_events": 0.0,
              "external_events": 0.0, "other_connections": 8_000_000}
    node = 128 * GiB
    cl = planner.cluster_layout(counts, memory_per_node=node, cores_per_node=128, ranks_per_node=2)
    assert (cl.ranks_per_node, cl.threads_per_rank) == (2, 64)
    assert cl.ranks == 2 * cl.nodes and cl.virtual_processes == 128 * cl.nodes
    # 4e6 neurons on >= 128 VPs: hpc synapses; the rank's memory by the table
    assert cl.synapse_model == "static_synapse_hpc"
    c = planner.coefficient
    chunk = c("memory_per_drawn_synapse", "nest") * CHUNK_SYNAPSES  # every rank draws every chunk
    per_rank = (c("memory_fixed", "nest") + chunk + (c("memory_per_neuron", "nest") * 4e6
                + c("memory_per_synapse_hpc", "nest") * (2.4e10 + 8e6)) / cl.ranks)
    assert cl.memory_per_rank == pytest.approx(per_rank, rel=1e-12)
    usable = c("memory_usable_fraction", "nest") * node
    assert 2 * cl.memory_per_rank <= usable
    # one node fewer does not fit
    fewer = (c("memory_fixed", "nest") + chunk + (c("memory_per_neuron", "nest") * 4e6
             + c("memory_per_synapse_hpc", "nest") * (2.4e10 + 8e6)) / (cl.ranks - 2))
    assert 2 * fewer > usable
    # twice the memory per node: about half the nodes
    cl2 = planner.cluster_layout(counts, memory_per_node=2 * node, cores_per_node=128, ranks_per_node=2)
    assert math.ceil(cl.nodes / 2) <= cl2.nodes <= math.ceil(cl.nodes / 2) + 1


def test_full_scale_matches_the_published_minimum_of_11_nodes():
    # van Albada et al. 2020: the full model needs at least 11 nodes of 128 GB (NEST).
    rep = planner.plan(Params(), memory_per_node=128e9, cores_per_node=128, ranks_per_node=2,
                       memory_available=24 * GiB)
    assert rep.neurons == 4129924
    assert rep.synapses == pytest.approx(2.41e10, rel=0.01)
    assert 8 <= rep.cluster.nodes <= 14
    assert rep.fits("nest") is False and rep.fits("brian2") is False


def test_refusal_names_prediction_memory_and_what_to_change():
    p = Params.tutorial(scale=0.05, threads=2)
    with pytest.raises(ParameterError) as err:
        planner.check_memory(p, memory_available=2 * GiB, ranks=1)
    msg = str(err.value)
    assert msg.startswith("scale=0.05 is invalid: expected a run that fits into the 2.0 GiB of memory")
    need = planner.plan(p, engines="nest", threads=2, memory_available=2 * GiB).engines["nest"].peak_memory
    assert f"predicted peak {need / GiB:.1f} GiB (nest, 206,383 neurons, 60,312,339 synapses)" in msg
    assert "a smaller scale (at most about 0.0" in msg
    assert "NEST with MPI ranks on several machines" in msg
    assert "--ignore-memory-check" in msg and "check_memory=False" in msg
    # enough memory: the plan is returned
    rep = planner.check_memory(p, memory_available=1000 * GiB, ranks=1)
    assert rep.neurons == 206383


def test_largest_scale_that_fits_is_consistent():
    p = Params.tutorial(scale=0.05)
    rep = planner.plan(p, memory_available=1.5 * GiB)
    s = 0.05 * planner._largest_factor(p, rep, "brian2", 1.5 * GiB)
    assert 0.005 < s < 0.05
    fits = planner.plan(Params.tutorial(scale=round(s * 0.95, 4)), engines="brian2")
    assert fits.engines["brian2"].peak_memory < 1.5 * GiB
    too_big = planner.plan(Params.tutorial(scale=round(s * 1.1, 4)), engines="brian2")
    assert too_big.engines["brian2"].peak_memory > 1.5 * GiB
    # N != K: both scalings shrink by the same factor
    p = Params.tutorial(N_scaling=0.02, K_scaling=0.04)
    with pytest.raises(ParameterError, match=r"N_scaling=0\.02 is invalid: .* smaller scalings \(N_scaling "):
        planner.check_memory(p, memory_available=3 * GiB, ranks=1)
    # not even the smallest network fits
    with pytest.raises(ParameterError, match="no scale fits with nest"):
        planner.check_memory(p, memory_available=0.1 * GiB, ranks=1)


@pytest.mark.parametrize("kwargs, message", [
    ({"threads": 0}, "threads=0 is invalid: expected integers >= 1"),
    ({"ranks": 0}, "ranks=0 is invalid: expected an integer >= 1"),
    ({"engines": "neuron"}, "engine='neuron' is invalid: expected 'nest' or 'brian2'"),
    ({"memory_available": -1.0}, "memory_available=-1.0 is invalid"),
    ({"memory_per_node": 0.0}, "memory_per_node=0.0 is invalid"),
    ({"ranks_per_node": 256}, "ranks_per_node=256 is invalid"),
    ({"rates": np.zeros(10)}, "rates='array' is invalid: expected 254 or (32, 8) rates"),
])
def test_bad_input_is_refused(kwargs, message):
    with pytest.raises(ParameterError, match=None) as err:
        planner.plan(Params.tutorial(), **kwargs)
    assert message in str(err.value)


def test_given_rates_replace_the_mean_field(tutorial):
    p, net, _ = tutorial
    rep = planner.plan(p, net, rates=np.full((32, 8), 2.0), memory_available=16 * GiB)
    assert rep.mean_rate == pytest.approx(2.0)
    assert rep.spikes == pytest.approx(2.0 * 20525 * 1.0)


def _cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "mam_xr.cli", *args], cwd=cwd, capture_output=True,
                          text=True, env=dict(os.environ), timeout=300)


def test_cli_plan_prints_one_screen(tmp_path):
    proc = _cli("plan", "--t-sim", "1000", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "resource plan: scale 0.005, 32 areas, t_sim 1000 ms" in out
    assert "20,525 neurons, 600,003 synapses (29 per neuron)" in out
    for word in ("nest", "brian2", "peak memory", "construction", "per sim. s", "cluster (NEST"):
        assert word in out
    assert len(out.splitlines()) <= 24 and max(len(line) for line in out.splitlines()) <= 100
    proc = _cli("plan", "--scale", "0.01", "--engine", "brian2", "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    d = json.loads(proc.stdout)
    assert d["neurons"] == planner.plan(Params.tutorial(scale=0.01), engines="brian2").neurons
    assert list(d["engines"]) == ["brian2"]
    assert not any(tmp_path.iterdir())  # plan writes nothing


def test_cli_run_refuses_a_run_that_does_not_fit(tmp_path):
    # the full-scale default network needs more than a terabyte
    proc = _cli("run", "--preset", "default", "--t-sim", "10", "--no-progress", cwd=tmp_path)
    assert proc.returncode == 2
    assert "scale=1.0 is invalid: expected a run that fits into the" in proc.stderr
    assert "predicted peak" in proc.stderr and "--ignore-memory-check" in proc.stderr
    runs = tmp_path / "runs"  # nothing written (at most the empty default folder)
    assert not runs.exists() or not any(runs.iterdir())


def test_simulate_refuses_a_run_that_does_not_fit(tmp_path):
    store = tmp_path / "full.zarr"
    with pytest.raises(ParameterError, match=r"scale=1\.0 is invalid: expected a run that fits") as err:
        mam_xr.simulate(Params.from_dict(t_sim=10.0, segment=10.0), store=store, progress=False)
    assert "predicted peak" in str(err.value) and "GiB of memory available" in str(err.value)
    assert not store.exists() and not any(tmp_path.iterdir())


def test_cluster_layout_on_given_nodes():
    counts = {"neurons": 4_000_000, "synapses": 2.4e10, "spikes": 0.0, "recurrent_events": 1e11,
              "external_events": 0.0, "other_connections": 8_000_000}
    least = planner.cluster_layout(counts, memory_per_node=128 * GiB)
    more = planner.cluster_layout(counts, memory_per_node=128 * GiB, nodes=4 * least.nodes)
    assert more.nodes == 4 * least.nodes and more.memory_per_rank < least.memory_per_rank
    assert more.per_simulated_second_s < least.per_simulated_second_s
    with pytest.raises(ParameterError, match=f"nodes={least.nodes - 1} is invalid: expected enough nodes"):
        planner.cluster_layout(counts, memory_per_node=128 * GiB, nodes=least.nodes - 1)


def test_subsets_with_replacement_currents_are_planned():
    # het_current_nonstat has no stationary theory: the Poisson replacement stands in for it
    p = Params.tutorial(areas_simulated=["V1", "V2"], replace_non_simulated_areas="het_current_nonstat",
                        t_sim=100.0, segment=100.0)
    rep = planner.plan(p, memory_available=16 * GiB)
    assert rep.areas == 2 and rep.theory_converged and rep.spikes > 0
    assert rep.neurons == int(np.floor(to_flat_vector(mam_xr.build(p)["neurons"]))[:16].sum())


def test_a_theory_the_caller_has_is_used_not_recomputed(tutorial, monkeypatch):
    from mam_xr import theory

    p, net, rep = tutorial
    th = theory.integrate(net, p, warn=False)
    calls = []
    real = theory.integrate

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(theory, "integrate", counting)
    given = planner.plan(p, net, memory_available=16 * GiB, theory=th)
    assert calls == []
    assert given.to_dict() == {**rep.to_dict(), "memory_available": given.memory_available}
    assert given.mean_rate == pytest.approx(rep.mean_rate, rel=0) and given.theory_converged
    checked = planner.check_memory(p, net, memory_available=1000 * GiB, ranks=1, theory=th)
    assert calls == [] and checked.spikes == rep.spikes
    with pytest.raises(ParameterError, match=r"^theory='ndarray' is invalid: expected a Dataset of "
                                             r"mam_xr.theory.integrate"):
        planner.plan(p, net, theory=np.ones(254))
    planner.plan(p, net, memory_available=16 * GiB)
    assert calls == [1]  # without it, the planner integrates itself
