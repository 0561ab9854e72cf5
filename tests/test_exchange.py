"""NWB, SONATA and Neo/Elephant exchange of run stores (mam_xr.exchange, docs/exchange.md).

The reference threads=1 spikes (740,783 spikes of 20,525 neurons) are imported into a
run store once; each format is written, read back with its own library (pynwb, h5py)
and compared spike for spike with the store; Elephant's LvR, CV ISI and correlation
coefficient of the Neo trains are compared with mam_xr.analysis.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from collections import defaultdict

import numpy as np
import pytest

pynwb = pytest.importorskip("pynwb")
h5py = pytest.importorskip("h5py")
neo = pytest.importorskip("neo")
pq = pytest.importorskip("quantities")
es = pytest.importorskip("elephant.statistics")

from conftest import REFERENCE, reference_structure  # noqa: E402
from mam_xr import analysis as A  # noqa: E402
from mam_xr import exchange as X  # noqa: E402
from mam_xr import flat  # noqa: E402
from mam_xr.errors import DataError, ParameterError, StoreError  # noqa: E402
from mam_xr.exchange.base import Format, times_ms  # noqa: E402
from mam_xr.store import SpikeWriter, create_run, open_run, set_status  # noqa: E402


@pytest.fixture(scope="module")
def run1(tmp_path_factory):
    path = tmp_path_factory.mktemp("exchange") / "threads1.zarr"
    return A.import_upstream(REFERENCE / "spikes_sim_threads1.npz", path, t_sim_ms=2000.0,
                             structure=reference_structure(), label="threads1", params={"chi": 1.0})


@pytest.fixture(scope="module")
def nwb_file(run1, tmp_path_factory):
    return X.export(run1, tmp_path_factory.mktemp("nwb") / "threads1.nwb", "nwb")


@pytest.fixture(scope="module")
def sonata_file(run1, tmp_path_factory):
    return X.export(run1, tmp_path_factory.mktemp("sonata") / "threads1.h5", "sonata")


def store_spikes(run):
    """{label: (times ms, neuron)} of every population with neurons, in the store's order."""
    n = np.asarray(run.root["spikes"].attrs["n_neurons"])
    sp = run.spikes()
    out = {}
    for k, lab in enumerate(sp.populations):
        if n[k]:
            sl = slice(sp.offsets[k], sp.offsets[k + 1])
            out[lab] = (times_ms(sp.steps[sl], run.dt), sp.senders[sl].astype(np.int64))
    return out


def assert_same_spikes(ex, run):
    want = store_spikes(run)
    assert set(ex.spikes) == set(want)
    for lab, (t, n) in want.items():
        np.testing.assert_array_equal(ex.spikes[lab][0], t, err_msg=lab)
        np.testing.assert_array_equal(ex.spikes[lab][1], n, err_msg=lab)
    n_all = np.asarray(run.root["spikes"].attrs["n_neurons"])
    assert ex.n_neurons == {lab: int(n_all[k]) for k, lab in enumerate(run.population_labels) if n_all[k]}


# -- NWB -----------------------------------------------------------------------------------

def test_nwb_units_equal_the_store_spike_for_spike(run1, nwb_file):
    """Read with pynwb alone: one unit per simulated neuron, spike times (s) exactly the store's."""
    n_all = np.asarray(run1.root["spikes"].attrs["n_neurons"])
    with pynwb.NWBHDF5IO(str(nwb_file), "r") as io:
        f = io.read()
        units = f.units
        assert len(units) == int(n_all.sum()) == 20525
        np.testing.assert_array_equal(units.id[:], np.arange(20525))
        area, pop = np.asarray(units["area"][:]), np.asarray(units["population"][:])
        neuron = np.asarray(units["neuron"][:])
        trains = [np.asarray(units.get_unit_spike_times(i)) for i in range(len(units))]
        params = json.loads(f.notes)["params"]
        prov = json.loads(f.data_collection)
        assert f.units.resolution == pytest.approx(1e-4)
        assert f.subject.species == "Macaca mulatta"
    sp = run1.spikes()
    row = 0
    n_checked = 0
    for k, lab in enumerate(sp.populations):
        a, p = lab.split("-")
        steps = sp.steps[sp.offsets[k]:sp.offsets[k + 1]]
        senders = sp.senders[sp.offsets[k]:sp.offsets[k + 1]]
        for i in range(int(n_all[k])):
            assert (area[row], pop[row], neuron[row]) == (a, p, i)
            want = times_ms(np.sort(steps[senders == i]), 0.1) / 1000.0
            np.testing.assert_array_equal(trains[row], want)      # exact, per unit
            n_checked += want.size
            row += 1
    assert n_checked == run1.n_spikes() == 740783
    assert params == {"chi": 1.0}
    assert prov["label"] == "threads1" and prov["dt"] == 0.1 and prov["time_span_ms"] == [0.0, 2000.0]
    assert prov["versions"] == run1.attrs["versions"]


def test_nwb_read_back_and_import_equal_the_store(run1, nwb_file, tmp_path):
    ex = X.read_spikes(nwb_file)
    assert ex.n_spikes() == 740783 and ex.dt_ms == 0.1 and ex.t_stop_ms == 2000.0
    assert_same_spikes(ex, run1)
    back = X.import_spikes(nwb_file, tmp_path / "back.zarr")
    a, b = run1.spikes(), back.spikes()
    np.testing.assert_array_equal(a.steps, b.steps)
    np.testing.assert_array_equal(a.senders, b.senders)
    np.testing.assert_array_equal(a.offsets, b.offsets)
    assert back.params == {"chi": 1.0}


def test_nwbinspector_finds_no_critical_issue(nwb_file):
    from nwbinspector import Importance, inspect_nwbfile

    messages = list(inspect_nwbfile(nwbfile_path=str(nwb_file)))
    critical = [m for m in messages if m.importance in (Importance.CRITICAL, Importance.PYNWB_VALIDATION,
                                                        Importance.ERROR)]
    assert critical == [], [m.message for m in critical]
    # what is left are suggestions about people (experimenter, institution): a model has none
    assert {m.check_function_name for m in messages} <= {"check_experimenter_exists", "check_institution"}


# -- SONATA --------------------------------------------------------------------------------

def test_sonata_layout(run1, sonata_file):
    with h5py.File(sonata_file, "r") as f:
        assert f.attrs["magic"] == 0x0A7A and list(f.attrs["version"]) == [0, 1]
        g = f["spikes/V1-23E"]
        assert h5py.check_enum_dtype(g.attrs.get_id("sorting").dtype) == {"none": 0, "by_id": 1, "by_time": 2}
        assert g.attrs["sorting"] == 2                      # by_time
        assert g["timestamps"].attrs["units"] == "ms"
        assert g["timestamps"].dtype == np.float64 and g["node_ids"].dtype == np.uint64
        assert int(g.attrs["n_nodes"]) == 236
        t, ids = g["timestamps"][:], g["node_ids"][:]
        assert np.all(np.diff(t) >= 0)
        sp = run1.spikes(area="V1", pop="23E")
        np.testing.assert_array_equal(t, sp.steps / 10.0)   # decimal ms: 0.3, not 3 * 0.1
        np.testing.assert_array_equal(ids, sp.senders)
        # one node population per simulated population, silent ones included
        n_all = np.asarray(run1.root["spikes"].attrs["n_neurons"])
        assert len(f["spikes"]) == int((n_all > 0).sum())
        assert f["spikes"].attrs["dt_ms"] == 0.1 and f["spikes"].attrs["t_stop_ms"] == 2000.0


def test_sonata_round_trip_is_exact(run1, sonata_file, tmp_path):
    ex = X.read_spikes(sonata_file)
    assert ex.n_spikes() == 740783
    assert_same_spikes(ex, run1)
    back = X.import_spikes(sonata_file, tmp_path / "back.zarr", label="from sonata")
    a, b = run1.spikes(), back.spikes()
    np.testing.assert_array_equal(a.steps, b.steps)
    np.testing.assert_array_equal(a.senders, b.senders)
    np.testing.assert_array_equal(a.offsets, b.offsets)
    assert back.attrs["label"] == "from sonata" and back.attrs["engine"] == "import:sonata"
    # the imported store analyses to the same statistics
    s1 = A.analyze(run1, "rates", store=False)["rates"]
    s2 = A.analyze(back, "rates", store=False)["rates"]
    np.testing.assert_array_equal(s1["n_spikes"].values, s2["n_spikes"].values)


def test_sonata_sorted_by_id(run1, tmp_path):
    path = X.export(run1, tmp_path / "by_id.h5", "sonata", sorting="by_id")
    with h5py.File(path, "r") as f:
        g = f["spikes/V2-4E"]
        assert g.attrs["sorting"] == 1
        ids, t = g["node_ids"][:], g["timestamps"][:]
    assert np.all(np.diff(ids.astype(np.int64)) >= 0)
    assert np.all(np.diff(t)[np.diff(ids.astype(np.int64)) == 0] > 0)    # time-sorted within a node
    assert_same_spikes(X.read_spikes(path), run1)                       # reader re-sorts by time


def test_a_foreign_sonata_file_in_seconds_with_string_sorting(tmp_path):
    """A BMTK-style file (sorting as a string, times in s, no mam_xr attrs) imports with --dt/--t-sim."""
    path = tmp_path / "bmtk.h5"
    with h5py.File(path, "w") as f:
        g = f.create_group("spikes/V1-4E")
        g.attrs["sorting"] = "none"
        g.create_dataset("timestamps", data=[0.0123, 0.0051, 0.5]).attrs["units"] = "s"
        g.create_dataset("node_ids", data=np.array([3, 7, 3], dtype=np.uint64))
    ex = X.read_spikes(path, dt_ms=0.1)
    np.testing.assert_array_equal(ex.spikes["V1-4E"][0], [5.1, 12.3, 500.0])
    np.testing.assert_array_equal(ex.spikes["V1-4E"][1], [7, 3, 3])
    with pytest.raises(ParameterError, match=r"dt_ms=None is invalid: expected the simulation step"):
        X.import_spikes(path, tmp_path / "a.zarr")
    run = X.import_spikes(path, tmp_path / "a.zarr", dt_ms=0.1, t_sim_ms=1000.0)
    assert run.n_spikes() == 3 and int(run.n_neurons.sel(area="V1", pop="4E")) == 8
    with pytest.raises(DataError, match=r"dt_ms=0.2 is invalid: expected the resolution of the spike times"):
        X.read_spikes(path, dt_ms=0.2)


# -- Neo / Elephant ------------------------------------------------------------------------

def test_to_neo_spike_trains(run1):
    trains = run1.to_neo(area="V1", pop=["23E", "4I"])
    n = run1.n_neurons
    assert len(trains) == int(n.sel(area="V1", pop="23E")) + int(n.sel(area="V1", pop="4I"))
    st = trains[5]
    assert st.units == pq.ms and st.t_start == 0.0 * pq.ms and st.t_stop == 2000.0 * pq.ms
    assert st.annotations == {"area": "V1", "pop": "23E", "neuron": 5, "label": "V1-23E"}
    sp = run1.spikes(area="V1", pop="23E")
    np.testing.assert_array_equal(st.magnitude, sp.steps[sp.senders == 5] / 10.0)
    assert sum(s.size for s in trains) == int(run1.spikes(area="V1", pop=["23E", "4I"]).steps.size)
    # the same through the exchange package, from a path, and as a Block with one Group per population
    block = X.to_neo_block(run1.path, area="V1", pop=["23E", "4I"])
    assert [g.name for g in block.groups] == ["V1-23E", "V1-4I"]
    assert len(block.segments[0].spiketrains) == len(trains)
    assert len(X.to_neo(run1.path, area="V1")) == int(n.sel(area="V1").sum())


def elephant_statistics(trains, t_min, t_max, R_ms, dt):
    """Elephant's LvR, CV ISI and mean pairwise correlation coefficient of one population,
    with mam_xr's definitions (docs/exchange.md, "Elephant"):

    * LvR: spikes in [t_min, t_max); Elephant's ``lvr`` per neuron with >= 2 ISIs
      (it refuses fewer); the population value sums them over all N neurons (0 for
      the others) and divides by N;
    * CV ISI: spikes in (t_min, t_max); ``cv`` of the ISIs of each neuron with >= 1 ISI,
      mean over those neurons;
    * correlation: 1 ms bins from t_min; Elephant drops a spike at exactly t_max, mam_xr
      counts it in the last bin (upstream's np.histogram), so such spikes are moved half
      a step earlier; neurons with a constant binned train are left out (Elephant
      gives them NaN rows); mean of the off-diagonal coefficients.
    """
    from elephant.conversion import BinnedSpikeTrain
    from elephant.spike_train_correlation import correlation_coefficient

    lv, cv = [], []
    binned_input = []
    for st in trains:
        t = st.magnitude
        w = t[(t >= t_min) & (t < t_max)]
        if w.size >= 3:
            lv.append(es.lvr(np.diff(w) * pq.ms, R=R_ms * pq.ms, with_nan=False))
        o = t[(t > t_min) & (t < t_max)]
        if o.size >= 2:
            cv.append(es.cv(np.diff(o)))
        c = t[(t >= t_min) & (t <= t_max)].copy()
        c[c == t_max] -= dt / 2
        binned_input.append(neo.SpikeTrain(c, units="ms", t_start=t_min, t_stop=t_max))
    b = BinnedSpikeTrain(binned_input, bin_size=1.0 * pq.ms, t_start=t_min * pq.ms, t_stop=t_max * pq.ms)
    counts = b.to_array()
    keep = np.flatnonzero(counts.min(axis=1) != counts.max(axis=1))
    if keep.size >= 2:
        cc = correlation_coefficient(b[keep])
        mean_cc = (cc.sum() - np.trace(cc)) / (keep.size * (keep.size - 1))
    else:
        mean_cc = np.nan
    return sum(lv) / len(trains), (np.mean(cv) if cv else 0.0), mean_cc, keep.size


def test_elephant_statistics_equal_mam_xr(run1):
    """Window 500-1500 ms, so that spikes at exactly t_max exist (the closed last bin matters)."""
    t_min, t_max = 500.0, 1500.0
    stats = A.analyze(run1, ["irregularity", "correlation"], t_max_ms=t_max, store=False)
    irr, corr = stats["irregularity"], stats["correlation"]
    by = defaultdict(list)
    for st in run1.to_neo(area=["V1", "V2", "FEF"]):
        by[st.annotations["label"]].append(st)
    at_t_max = sum(int((st.magnitude == t_max).sum()) for ts in by.values() for st in ts)
    assert at_t_max > 0
    checked = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")     # Elephant warns about neurons with few spikes
        for lab, ts in by.items():
            a, p = lab.split("-")
            lvr, cv, cc, n_cc = elephant_statistics(ts, t_min, t_max, 2.0, run1.dt)
            ref = dict(area=a, pop=p)
            assert lvr == pytest.approx(float(irr["lvr"].sel(**ref)), rel=1e-10, abs=1e-12), lab
            assert cv == pytest.approx(float(irr["cv_isi"].sel(**ref)), rel=1e-10, abs=1e-12), lab
            assert n_cc == int(corr["n_corr_neurons"].sel(**ref)), lab
            assert cc == pytest.approx(float(corr["corrcoef"].sel(**ref)), rel=1e-10, abs=1e-12), lab
            checked += 1
    assert checked == 24


def test_elephant_without_the_closed_last_bin_differs(run1):
    """The one difference of definition, shown: binning the raw trains with Elephant
    (a spike at exactly t_max dropped) changes the coefficient of a population that has one."""
    from elephant.conversion import BinnedSpikeTrain
    from elephant.spike_train_correlation import correlation_coefficient

    t_min, t_max = 500.0, 1500.0
    ref = A.analyze(run1, "correlation", t_max_ms=t_max, store=False)["correlation"]
    for lab in flat.population_labels():
        a, p = lab.split("-")
        if a not in ("V1", "V2", "FEF"):
            continue
        ts = run1.to_neo(area=a, pop=p)
        if not any((st.magnitude == t_max).any() for st in ts):
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            b = BinnedSpikeTrain([st.time_slice(t_min * pq.ms, t_max * pq.ms) for st in ts], bin_size=1 * pq.ms,
                                 t_start=t_min * pq.ms, t_stop=t_max * pq.ms)
            counts = b.to_array()
            keep = np.flatnonzero(counts.min(axis=1) != counts.max(axis=1))
            cc = correlation_coefficient(b[keep])
        raw = (cc.sum() - np.trace(cc)) / (keep.size * (keep.size - 1))
        assert abs(raw - float(ref["corrcoef"].sel(area=a, pop=p))) > 1e-10
        return
    pytest.fail("no population of V1, V2, FEF has a spike at exactly t_max")


def test_elephant_with_mam_xr_neuron_choice_for_a_large_population(tmp_path):
    """A population of 2500 neurons: mam_xr's correlation coefficient takes, from the first
    neuron that ever spiked (here 50, which spikes only before t_min), the ids up to +3000,
    minus constant trains, the first 2000.  Elephant on that same subset gives the same
    number; on every non-constant neuron it gives another."""
    from elephant.conversion import BinnedSpikeTrain
    from elephant.spike_train_correlation import correlation_coefficient

    rng = np.random.default_rng(3)
    n, t_sim = 2500, 1000.0
    ids = rng.integers(100, n, 40000)                           # neurons 0-99 never spike ...
    steps = rng.integers(0, 10001, ids.size)                    # ... except 50, before t_min
    ids, steps = np.append(ids, 50), np.append(steps, 1000)
    root = create_run(tmp_path / "big.zarr", structure=None, dt=0.1, t_sim=t_sim, n_segments_planned=1,
                      n_neurons=[n] + [0] * (flat.N_POPULATIONS - 1))
    root.create_group("structure").attrs["missing"] = True
    SpikeWriter(root).append_segment(steps, ids, np.zeros(ids.size, int), 0.0, t_sim)
    set_status(root, "complete")
    run = open_run(tmp_path / "big.zarr")
    ref = A.analyze(run, "correlation", store=False)["correlation"].sel(area="V1", pop="23E")
    trains = run.to_neo(area="V1", pop="23E")
    t_min, t_max = 500.0, t_sim
    binned = []
    for st in trains:
        c = st.magnitude[(st.magnitude >= t_min) & (st.magnitude <= t_max)].copy()
        c[c == t_max] -= 0.05                                 # mam_xr's closed last bin
        binned.append(neo.SpikeTrain(c, units="ms", t_start=t_min, t_stop=t_max))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        b = BinnedSpikeTrain(binned, bin_size=1.0 * pq.ms, t_start=t_min * pq.ms, t_stop=t_max * pq.ms)
        counts = b.to_array()
        first = min(i for i, st in enumerate(trains) if st.size)
        assert first == 50
        active = counts.min(axis=1) != counts.max(axis=1)
        chosen = [i for i in range(first, min(n, first + 3001)) if active[i]][:2000]
        assert len(chosen) == 2000 == int(ref["n_corr_neurons"]) and active.sum() > 2000

        def mean_cc(rows):
            cc = correlation_coefficient(b[np.asarray(rows)])
            return (cc.sum() - np.trace(cc)) / (len(rows) * (len(rows) - 1))

        assert mean_cc(chosen) == pytest.approx(float(ref["corrcoef"]), rel=1e-10, abs=1e-13)
        assert abs(mean_cc(np.flatnonzero(active)) - float(ref["corrcoef"])) > 1e-6


# -- a segmented NEST run ------------------------------------------------------------------

def test_a_segmented_nest_run_exports_exactly(tmp_path):
    pytest.importorskip("nest")
    from mam_xr.params import Params
    from mam_xr.simulation import simulate
    from mam_xr.structure import build

    p = Params.tutorial(scale=0.001, t_sim=100.0, segment=25.0, areas_simulated=["V1", "V2"])
    run = simulate(p, store=tmp_path / "tiny.zarr", structure=build(p), progress=False)
    assert len(run.segments()) == 4 and run.n_spikes() > 0
    for fmt, name in (("nwb", "tiny.nwb"), ("sonata", "tiny.h5")):
        path = X.export(run, tmp_path / name, fmt)
        assert_same_spikes(X.read_spikes(path), run)
    with pynwb.NWBHDF5IO(str(tmp_path / "tiny.nwb"), "r") as io:
        assert json.loads(io.read().notes)["params"] == run.params


# -- bad input -----------------------------------------------------------------------------

def _tiny_run(path, status="complete"):
    root = create_run(path, structure=None, dt=0.1, t_sim=100.0, n_segments_planned=2,
                      n_neurons=[4] * flat.N_POPULATIONS, label=path.stem)
    root.create_group("structure").attrs["missing"] = True
    w = SpikeWriter(root)
    w.append_segment(np.array([10, 20, 30]), np.array([0, 3, 1]), np.array([0, 0, 5]), 0.0, 50.0)
    if status == "complete":
        w.append_segment(np.array([600]), np.array([2]), np.array([7]), 50.0, 100.0)
    set_status(root, status)
    return path


def test_unknown_format_and_option_are_refused(run1, tmp_path):
    with pytest.raises(ParameterError, match=r"format='xyz' is invalid: expected one of nwb, sonata"):
        X.export(run1, tmp_path / "x.xyz", "xyz")
    with pytest.raises(ParameterError, match=r"sorting='by_id' is invalid: expected an option of format 'nwb'"):
        X.export(run1, tmp_path / "x.nwb", "nwb", sorting="by_id")
    with pytest.raises(ParameterError, match=r"sorting='random' is invalid: expected one of by_time, by_id"):
        X.export(run1, tmp_path / "x.h5", "sonata", sorting="random")
    with pytest.raises(ParameterError, match=r"format=None is invalid: expected one of nwb, sonata \(cannot tell"):
        X.read_spikes(tmp_path / "spikes.txt")
    assert list(tmp_path.iterdir()) == []


def test_an_incomplete_store_is_refused_unless_allowed(tmp_path):
    path = _tiny_run(tmp_path / "running.zarr", status="running")
    for fmt in X.FORMATS:
        with pytest.raises(StoreError, match=r"is incomplete: status='running'.*allow_incomplete=True"):
            X.export(path, tmp_path / f"out.{fmt}", fmt)
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix != ".lock") == ["running.zarr"]
    with pytest.warns(UserWarning, match="incomplete"):
        out = X.export(path, tmp_path / "part.h5", "sonata", allow_incomplete=True)
    with h5py.File(out, "r") as f:
        assert f["spikes"].attrs["status"] == "running" and f["spikes"].attrs["t_stop_ms"] == 50.0
    ex = X.read_spikes(out)
    np.testing.assert_array_equal(ex.spikes["V1-23E"][0], [1.0, 2.0])
    with pytest.warns(UserWarning, match="incomplete"):
        out = X.export(path, tmp_path / "part.nwb", "nwb", allow_incomplete=True)
    with pynwb.NWBHDF5IO(str(out), "r") as io:
        f = io.read()
        assert "status running" in f.session_description
        assert json.loads(f.data_collection)["segments_committed"] == 1


def test_unreadable_files_are_refused_by_name(tmp_path):
    junk = tmp_path / "junk.nwb"
    junk.write_bytes(b"not an HDF5 file at all")
    with pytest.raises(DataError, match=r"source='.*junk.nwb' is invalid: expected a readable NWB file"):
        X.read_spikes(junk)
    with pytest.raises(DataError, match=r"expected a readable NWB file"):
        X.import_spikes(junk, tmp_path / "j.zarr")
    assert not (tmp_path / "j.zarr").exists()
    junk_h5 = tmp_path / "junk.h5"
    junk_h5.write_bytes(b"\x00" * 64)
    with pytest.raises(DataError, match=r"source='.*junk.h5' is invalid: expected a readable SONATA spike file"):
        X.read_spikes(junk_h5)
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f.create_dataset("x", data=[1])
    with pytest.raises(DataError, match=r"expected a SONATA spike file \(no /spikes group\)"):
        X.read_spikes(tmp_path / "other.h5")
    with pytest.raises(DataError, match=r"source='.*missing.nwb' is invalid: expected an existing NWB file"):
        X.read_spikes(tmp_path / "missing.nwb")
    with h5py.File(tmp_path / "foreign.h5", "w") as f:
        g = f.create_group("spikes/cortex")
        g.create_dataset("timestamps", data=[1.0])
        g.create_dataset("node_ids", data=[0])
    with pytest.raises(DataError, match=r"node populations named by mam_xr population labels.*'cortex'"):
        X.import_spikes(tmp_path / "foreign.h5", tmp_path / "f.zarr", dt_ms=0.1, t_sim_ms=10.0)


def test_existing_files_are_replaced_only_if_mam_xr_wrote_them(tmp_path):
    run = _tiny_run(tmp_path / "r.zarr")
    mine = X.export(run, tmp_path / "s.h5", "sonata")
    with pytest.raises(StoreError, match=r"out='.*s.h5' is invalid: expected a path that does not exist yet "
                                         r"\(or overwrite=True\)"):
        X.export(run, mine, "sonata")
    X.export(run, mine, "sonata", overwrite=True, sorting="by_id")
    with h5py.File(mine, "r") as f:
        assert f["spikes/V1-23E"].attrs["sorting"] == 1
    other = tmp_path / "notes.nwb"
    other.write_text("my notes")
    with pytest.raises(StoreError, match=r"expected a path that does not exist yet or a nwb file mam_xr exported"):
        X.export(run, other, "nwb", overwrite=True)
    assert other.read_text() == "my notes"
    a_dir = tmp_path / "dir.h5"
    a_dir.mkdir()
    with pytest.raises(StoreError, match=r"out='.*dir.h5' is invalid"):
        X.export(run, a_dir, "sonata", overwrite=True)
    assert a_dir.is_dir()
    nwb_mine = X.export(run, tmp_path / "r.nwb", "nwb")
    X.export(run, nwb_mine, "nwb", overwrite=True)        # an NWB file mam_xr wrote is replaced
    with pytest.raises(StoreError, match=r"a file in an existing directory"):
        X.export(run, tmp_path / "nowhere" / "r.nwb", "nwb")


def test_a_failed_write_leaves_nothing_behind_and_a_new_format_is_one_record(tmp_path):
    """The registry takes a new format in one call; a writer that fails half-way leaves
    neither the file nor its temporary behind, and an older file stays as it was."""
    run = _tiny_run(tmp_path / "r.zarr")
    (tmp_path / "x.csv").write_text("old")

    def write(run, path):
        with open(path, "w") as f:
            f.write("area,pop,neuron,t_ms\n")
            raise OSError(28, "No space left on device")

    X.register_format(Format("csv", ".csv", "test", write, lambda p, dt_ms=None: None,
                             lambda p: p.read_text() == "old"))
    try:
        with pytest.raises(OSError, match="No space left"):
            X.export(run, tmp_path / "y.csv", "csv")
        with pytest.raises(OSError, match="No space left"):
            X.export(run, tmp_path / "x.csv", "csv", overwrite=True)
    finally:
        del X.FORMATS["csv"]
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix != ".lock") == ["r.zarr", "x.csv"]
    assert (tmp_path / "x.csv").read_text() == "old"


# -- command line --------------------------------------------------------------------------

def cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "mam_xr.cli", *args], cwd=cwd, capture_output=True, text=True,
                          env=dict(os.environ), timeout=600)


def test_cli_export_and_import(tmp_path):
    _tiny_run(tmp_path / "r.zarr")
    _tiny_run(tmp_path / "p.zarr", status="running")
    proc = cli("export", "r.zarr", "r.h5", "--format", "xyz", cwd=tmp_path)
    assert proc.returncode == 2 and "format='xyz' is invalid: expected one of nwb, sonata" in proc.stderr
    proc = cli("export", "p.zarr", "p.nwb", cwd=tmp_path)
    assert proc.returncode == 2 and "Pass --allow-incomplete" in proc.stderr and not (tmp_path / "p.nwb").exists()
    assert cli("export", "p.zarr", "p.nwb", "--allow-incomplete", cwd=tmp_path).returncode == 0
    proc = cli("export", "r.zarr", "r.h5", "--format", "sonata", cwd=tmp_path)
    assert proc.returncode == 0 and "wrote r.h5" in proc.stdout
    proc = cli("export", "r.zarr", "r.h5", "--format", "sonata", cwd=tmp_path)
    assert proc.returncode == 2 and "(or --overwrite)" in proc.stderr
    proc = cli("import-spikes", "r.h5", "back.zarr", cwd=tmp_path)
    assert proc.returncode == 0 and "4 spikes" in proc.stdout
    assert open_run(tmp_path / "back.zarr").n_spikes() == 4
    (tmp_path / "bad.nwb").write_text("x")
    proc = cli("import-spikes", "bad.nwb", "bad.zarr", cwd=tmp_path)
    assert proc.returncode == 2 and "source='bad.nwb' is invalid: expected a readable NWB file" in proc.stderr
    helptext = cli("export", "--help", cwd=tmp_path).stdout
    assert "[default: nwb]" in helptext and "by_time" in helptext


def test_exports_read_the_store_in_bounded_groups(run1, tmp_path, monkeypatch):
    """With a budget of 5,000 spikes per read (the reference run has 740,783, its largest
    population 11,721) the store is read in groups of populations, a larger population
    alone; the files are the same spike for spike."""
    from mam_xr.exchange import base

    reads = []

    def counting(run, idx, *args, **kw):
        out = base.read_populations.__wrapped__(run, idx, *args, **kw)
        reads.append(out[0].size)
        return out

    counting.__wrapped__ = base.read_populations
    monkeypatch.setattr(base, "SPIKE_BUDGET", 5_000)
    monkeypatch.setattr(base, "read_populations", counting)
    assert [k for k, *_ in base.population_spikes(run1)] == list(range(254))
    assert len(reads) > 150 and sum(reads) == 740783
    assert max(reads) == int(base.population_spike_counts(run1).max()) == 11721
    for fmt, name in (("nwb", "b.nwb"), ("sonata", "b.h5")):
        assert_same_spikes(X.read_spikes(X.export(run1, tmp_path / name, fmt)), run1)


def test_libsonata_reads_the_sonata_file(run1, sonata_file, tmp_path):
    """libsonata (BlueBrain's reader) opens the file, sees every population, the sorting
    enum and the store's spikes; a gzipped file (compression=True) is smaller and h5py reads it."""
    libsonata = pytest.importorskip("libsonata")
    reader = libsonata.SpikeReader(str(sonata_file))
    assert sorted(reader.get_population_names()) == sorted(run1.population_labels)
    pop = reader["V2-4E"]
    assert str(pop.sorting) == "by_time"
    d = pop.get_dict()
    sp = run1.spikes(area="V2", pop="4E")
    np.testing.assert_array_equal(d["timestamps"], sp.steps / 10.0)
    np.testing.assert_array_equal(d["node_ids"], sp.senders)
    small = X.export(run1, tmp_path / "gz.h5", "sonata", compression=True)
    assert small.stat().st_size < sonata_file.stat().st_size / 2
    assert_same_spikes(X.read_spikes(small), run1)
