"""The NEST network at tiny scale, run-store status handling and the tutorial run (slow)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import zarr

from conftest import load_reference
from mam_xr import store
from mam_xr.errors import ParameterError, SimulationError, StoreError
from mam_xr.flat import AREAS, population_labels, to_flat_matrix, to_flat_vector
from mam_xr.params import Params
from mam_xr.simulation import connection_counts, simulate

LABELS = population_labels()
TINY = dict(scale=0.001, t_sim=200.0, segment=50.0)


@pytest.fixture(scope="module")
def tiny_structure():
    from mam_xr.structure import build

    return build(Params.tutorial(**TINY))


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, tiny_structure):
    """All 32 areas at scale 0.001 (4,002 neurons), 200 ms; NEST keeps the network."""
    path = tmp_path_factory.mktemp("sim") / "tiny.zarr"
    run = simulate(Params.tutorial(**TINY), store=path, structure=tiny_structure, progress=False)
    import nest

    conns = nest.GetConnections(synapse_model="static_synapse_hpc")
    table = conns.get(["source", "target", "weight", "delay"], output="pandas")
    return run, table


def test_counts_equal_floor_of_structure(tiny_run, tiny_structure):
    run, table = tiny_run
    N = np.floor(to_flat_vector(tiny_structure["neurons"])).astype(int)
    S = np.floor(np.nan_to_num(to_flat_matrix(tiny_structure["synapses"]))).astype(int)
    assert run.status == "complete"
    np.testing.assert_array_equal(run.root["spikes"].attrs["n_neurons"], N)
    a = run.attrs
    assert a["n_neurons_created"] == N.sum() == 4002
    # num_connections = recurrent + one external and one recorder connection per neuron
    assert a["nest"]["num_connections"] == S.sum() + 2 * N.sum()
    assert connection_counts(tiny_structure) == {"neurons": int(N.sum()), "synapses": int(S.sum())}
    # per projection: neuron -> neuron connections by (target pop, source pop)
    first = 2 + np.concatenate([[0], np.cumsum(N)])   # node 1 is the spike recorder
    rec = table[(table.source < first[-1]) & (table.target < first[-1])]
    src = np.searchsorted(first, rec.source.to_numpy(), side="right") - 1
    tgt = np.searchsorted(first, rec.target.to_numpy(), side="right") - 1
    counts = np.zeros_like(S)
    np.add.at(counts, (tgt, src), 1)
    np.testing.assert_array_equal(counts, S)
    # weights keep the sign of their source (CC >= 0), delays >= dt
    inhibitory = np.char.endswith(np.array(LABELS)[src], "I")
    w = rec.weight.to_numpy()
    assert np.all(w[~inhibitory] >= 0) and np.all(w[inhibitory] <= 0)
    assert rec.delay.min() >= 0.1 - 1e-12
    # delay mean within an area for E sources ~ 1.5 ms (redraw at dt shifts it a little)
    same = (np.array([lab.split("-")[0] for lab in LABELS])[src]
            == np.array([lab.split("-")[0] for lab in LABELS])[tgt])
    assert abs(rec.delay.to_numpy()[same & ~inhibitory].mean() - 1.5) < 0.1


def test_tiny_run_store_contents(tiny_run, tiny_structure):
    run, _ = tiny_run
    a = run.attrs
    assert a["format"] == "mam_xr.run/1" and a["engine"] == "nest"
    assert a["last_segment"] == 3 and a["n_segments_planned"] == 4
    assert a["seed"] == 1 and a["threads"] == 1 and a["n_vp"] == 1
    assert a["versions"]["nest"].startswith("3.")
    assert set(a["timings"]) >= {"create", "connect", "simulate", "write", "total"}
    assert Params.from_json(a["params"]) == Params.tutorial(**TINY)
    assert a["label"] == Params.tutorial(**TINY).label()
    assert run.structure().identical(tiny_structure)
    np.testing.assert_array_equal(run.segments(), [[0, 50], [50, 100], [100, 150], [150, 200]])
    sp = run.spikes()
    assert len(sp) == a["n_spikes"] > 0
    assert sp.times.min() > 0 and sp.times.max() <= 200.0
    n = np.asarray(run.root["spikes"].attrs["n_neurons"])
    assert np.all(sp.senders < n[sp.pop])
    # plausible activity: mean rate over all neurons and no silent area
    rate = len(sp) / n.sum() / 0.2
    assert 5.0 < rate < 60.0, rate
    per_area = np.bincount([AREAS.index(LABELS[p].split("-")[0]) for p in np.unique(sp.pop)],
                           minlength=32)
    assert np.all(per_area > 0)


def test_same_seed_gives_identical_spikes(tmp_path, tiny_structure):
    p = Params.tutorial(scale=0.001, t_sim=100.0, segment=50.0, seed=7)
    r1 = simulate(p, store=tmp_path / "a.zarr", structure=tiny_structure, progress=False)
    r2 = simulate(p, store=tmp_path / "b.zarr", structure=tiny_structure, progress=False)
    r3 = simulate(p.update(seed=8), store=tmp_path / "c.zarr", structure=tiny_structure,
                  progress=False)
    s1, s2, s3 = r1.spikes(), r2.spikes(), r3.spikes()
    np.testing.assert_array_equal(s1.steps, s2.steps)
    np.testing.assert_array_equal(s1.senders, s2.senders)
    np.testing.assert_array_equal(s1.offsets, s2.offsets)
    assert not (len(s1) == len(s3) and np.array_equal(s1.steps, s3.steps))


def test_memory_check_uses_a_given_theory(tmp_path, tiny_structure, monkeypatch):
    """simulate(theory=...) plans with the caller's integration instead of integrating again."""
    from mam_xr import theory

    p = Params.tutorial(scale=0.001, t_sim=50.0, segment=50.0, areas_simulated=["V1"])
    th = theory.integrate(tiny_structure, p, warn=False)
    calls = []
    real = theory.integrate

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(theory, "integrate", counting)
    a = simulate(p, store=tmp_path / "a.zarr", structure=tiny_structure, progress=False, theory=th)
    assert calls == []
    b = simulate(p, store=tmp_path / "b.zarr", structure=tiny_structure, progress=False)
    assert calls == [1]  # the planner's own integration
    np.testing.assert_array_equal(a.spikes().steps, b.spikes().steps)
    with pytest.raises(ParameterError, match=r"^theory='dict' is invalid"):
        simulate(p, store=tmp_path / "c.zarr", structure=tiny_structure, progress=False, theory={})
    assert not (tmp_path / "c.zarr").exists()


@pytest.mark.parametrize("mode", ["hom_poisson_stat", "het_poisson_stat", "het_current_nonstat"])
def test_replacement_modes(tmp_path, mode):
    p = Params.tutorial(scale=0.002, t_sim=200.0, segment=100.0, areas_simulated=["V1", "V2"],
                        replace_non_simulated_areas=mode)
    run = simulate(p, store=tmp_path / "r.zarr", progress=False)
    a = run.attrs
    st = run.structure()
    counts = connection_counts(st, ["V1", "V2"])
    assert a["n_neurons_created"] == counts["neurons"]
    n = np.asarray(run.root["spikes"].attrs["n_neurons"])
    assert n.sum() == counts["neurons"] and n[:16].sum() == counts["neurons"]  # V1, V2 only
    assert a["areas_simulated"] == ["V1", "V2"]
    rate = a["n_spikes"] / counts["neurons"] / 0.2
    assert 0.5 < rate < 60.0, rate
    if mode != "het_current_nonstat":  # Poisson: one connection per target neuron and source pop
        assert a["nest"]["num_connections"] > counts["synapses"] + 2 * counts["neurons"]


def test_replacement_rates_from_a_run_store(tmp_path, tiny_run):
    run, _ = tiny_run
    p = Params.tutorial(scale=0.001, t_sim=100.0, segment=100.0, areas_simulated=["V1"],
                        replace_non_simulated_areas="het_current_nonstat",
                        replace_cc_input_source=run.path)
    out = simulate(p, store=tmp_path / "r.zarr", progress=False)
    assert out.status == "complete" and out.attrs["n_spikes"] > 0
    # a run store shorter than t_sim cannot give a time series
    with pytest.raises(ParameterError, match=r"replace_cc_input_source=.* is invalid: expected a run "
                                             r"of at least t_sim=300.0 ms"):
        simulate(p.update(t_sim=300.0), store=tmp_path / "s.zarr", progress=False)
    assert not (tmp_path / "s.zarr").exists()


def test_invalid_requests_fail_before_nest(tmp_path):
    p = Params.tutorial(**TINY)
    with pytest.raises(ParameterError, match=r"simulation.segment=300.0 is invalid: expected at most "
                                             r"t_sim=200.0 ms"):
        simulate(p.update(segment=300.0), store=tmp_path / "a.zarr")
    with pytest.raises(ParameterError, match=r"simulation.segment=0.25 is invalid: expected a multiple"):
        simulate(p.update(segment=0.25), store=tmp_path / "a.zarr")
    with pytest.raises(ParameterError, match=r"replace_cc_input_source='/nonexistent/rates.json' is "
                                             r"invalid: expected an existing rates JSON"):
        simulate(p.update(areas_simulated=["V1"], replace_non_simulated_areas="het_poisson_stat",
                          replace_cc_input_source="/nonexistent/rates.json"), store=tmp_path / "a.zarr")
    bad = tmp_path / "rates.json"
    bad.write_text(json.dumps({"V2": {"23E": 1.0}}))
    with pytest.raises(ParameterError, match=r"expected a rate for every source population .*missing"):
        simulate(p.update(areas_simulated=["V1"], replace_non_simulated_areas="het_poisson_stat",
                          replace_cc_input_source=str(bad)), store=tmp_path / "a.zarr")
    with pytest.raises(StoreError, match="a path whose parent directory exists"):
        simulate(p, store=tmp_path / "missing" / "a.zarr")
    with pytest.raises(ParameterError, match="store=None is invalid"):
        simulate(p, store=None)
    (tmp_path / "exists.zarr").mkdir()
    with pytest.raises(StoreError, match="a path that does not exist yet"):
        simulate(p, store=tmp_path / "exists.zarr")
    # a run whose spikes cannot fit on the file system (here: 10^9 ms) fails before NEST
    with pytest.raises(StoreError, match=r"expected a file system with at least \d+ MiB free for this run"):
        simulate(p.update(t_sim=1e9), store=tmp_path / "a.zarr")
    assert not (tmp_path / "a.zarr").exists()
    with pytest.raises(ParameterError, match="areas_simulated"):
        Params.tutorial(areas_simulated=["V0"])
    with pytest.raises(ParameterError, match="replace_non_simulated_areas"):
        Params.tutorial(areas_simulated=["V1"], replace_non_simulated_areas=None)
    with pytest.raises(ParameterError, match="threads"):
        Params.tutorial(threads=0)


def test_error_during_the_run_marks_the_store_failed(tmp_path, tiny_structure):
    st = tiny_structure.copy(deep=True)
    st["external_indegree"].loc[dict(area="V1", pop="23E")] = -1.0  # NEST rejects rate < 0
    with pytest.raises(SimulationError, match="failed: .*rate"):
        simulate(Params.tutorial(**TINY), store=tmp_path / "f.zarr", structure=st, progress=False)
    with pytest.raises(StoreError, match=r"status='failed': .*rate"):
        store.open_run(tmp_path / "f.zarr")
    with pytest.warns(UserWarning, match="incomplete"):
        run = store.open_run(tmp_path / "f.zarr", allow_incomplete=True)
    assert run.status == "failed" and len(run.segments()) == 0


_CHILD = textwrap.dedent("""
    import sys
    from mam_xr.params import Params
    from mam_xr.simulation import simulate
    simulate(Params.tutorial(scale=0.001, t_sim=5000.0, segment=20.0), store=sys.argv[1],
             progress=False)
""")


def _start_and_kill(path: Path, sig) -> int:
    env = dict(os.environ)
    proc = subprocess.Popen([sys.executable, "-c", _CHILD, str(path)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    try:
        while time.time() < deadline:
            time.sleep(0.2)
            if proc.poll() is not None:
                raise AssertionError(f"child ended early: {proc.stderr.read().decode()[-2000:]}")
            try:
                if zarr.open_group(str(path), mode="r").attrs.get("last_segment", -1) >= 2:
                    break
            except Exception:  # noqa: BLE001 - store not created yet
                continue
        proc.send_signal(sig)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode


def _check_committed_segments(run):
    segs = run.segments()
    assert 3 <= len(segs) < 250
    np.testing.assert_allclose(segs[:, 1] - segs[:, 0], 20.0)
    sp = run.spikes()
    assert len(sp) == run.n_spikes() > 0
    assert sp.times.max() <= segs[-1, 1]


def test_killed_run_keeps_its_segments(tmp_path):
    path = tmp_path / "killed.zarr"
    _start_and_kill(path, signal.SIGKILL)
    with pytest.raises(StoreError, match=r"incomplete: status='running' .* it holds \d+ of 250 segments"):
        store.open_run(path)
    with pytest.warns(UserWarning, match="incomplete"):
        run = store.open_run(path, allow_incomplete=True)
    _check_committed_segments(run)


def test_sigterm_marks_the_run_failed(tmp_path):
    path = tmp_path / "term.zarr"
    code = _start_and_kill(path, signal.SIGTERM)
    assert code != 0
    with pytest.raises(StoreError, match=r"status='failed': SimulationError: terminated by signal SIGTERM"):
        store.open_run(path)
    with pytest.warns(UserWarning, match="incomplete"):
        run = store.open_run(path, allow_incomplete=True)
    _check_committed_segments(run)


# --- tutorial (slow) --------------------------------------------------------------------

def upstream_rates(run) -> np.ndarray:
    """Population rates in upstream's convention: spikes with 500 < t < t_sim over N_float."""
    st = run.structure()
    t_sim = float(run.attrs["t_sim"])
    sp = run.spikes()
    keep = (sp.times > 500.0) & (sp.times < t_sim)
    counts = np.bincount(sp.pop[keep], minlength=len(LABELS))
    return counts / to_flat_vector(st["neurons"]) / ((t_sim - 500.0) * 1e-3)


@pytest.mark.slow
def test_tutorial_matches_upstream_statistics(tmp_path):
    ref = load_reference("structure_downscaled_tutorial.npz")
    var = load_reference("seed_variability.json")
    acc = var["acceptance"]
    run = simulate(Params.tutorial(), store=tmp_path / "tutorial.zarr", progress=False)
    a = run.attrs
    assert a["n_neurons_created"] == ref["N_created_int"].sum() == 20525
    np.testing.assert_array_equal(run.root["spikes"].attrs["n_neurons"], ref["N_created_int"])
    assert a["nest"]["num_connections"] - 2 * 20525 == ref["synapses_created_int"].sum() == 600003
    rates = upstream_rates(run)
    lo, hi = acc["mean_pop_rate_range"]
    assert lo <= rates.mean() <= hi, rates.mean()
    for name, other in var["pop_rates"].items():
        other = np.asarray(other)
        rel = np.median(np.abs(rates - other) / other)
        assert rel <= acc["rate_rel_diff_median_vs_each_upstream_run_max"], (name, rel)
        r = np.corrcoef(rates, other)[0, 1]
        assert r >= acc["rate_pearson_vs_each_upstream_run_min"], (name, r)
