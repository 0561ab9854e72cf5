"""Zarr stores: structure round trip and layout checks; run-store spike layout."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import zarr

from conftest import reference_structure
from mam_xr import store
from mam_xr.errors import StoreError
from mam_xr.flat import N_POPULATIONS, population_labels, structure_to_flat

LABELS = population_labels()


@pytest.fixture(scope="module")
def structure():
    return reference_structure("downscaled_tutorial")


# --- structure ----------------------------------------------------------------------

def test_structure_round_trip_is_exact(tmp_path, structure):
    path = tmp_path / "s.zarr"
    store.save_structure(structure, path)
    back = store.load_structure(path)
    assert back.identical(structure)
    for name in structure.variables:
        assert back[name].dtype == structure[name].dtype, name
    # the flat view (what tests against ../reference use) is bit-identical too
    a, b = structure_to_flat(structure), structure_to_flat(back)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    assert back.attrs["delay_params"] == {"delay_e": 1.5, "delay_i": 0.75, "delay_rel": 0.5,
                                          "interarea_speed": 3.5}


def test_structure_round_trip_in_a_group(tmp_path, structure):
    root = zarr.open_group(str(tmp_path / "g.zarr"), mode="w", zarr_format=3)
    store.save_structure(structure, root)
    assert store.load_structure(root).identical(structure)


def test_structure_from_another_format_version(tmp_path, structure):
    path = tmp_path / "s.zarr"
    store.save_structure(structure, path)
    meta = path / "zarr.json"
    doc = json.loads(meta.read_text())
    doc["attributes"]["format"] = "mam_xr.structure/0"
    meta.write_text(json.dumps(doc))
    with pytest.raises(StoreError, match=r"format='mam_xr.structure/0' is invalid: expected "
                                         r"'mam_xr.structure/1'.*another version"):
        store.load_structure(path)


def test_structure_damaged_chunk_is_detected(tmp_path, structure):
    path = tmp_path / "s.zarr"
    store.save_structure(structure, path)
    chunks = [p for p in (path / "synapses").rglob("*") if p.is_file() and p.name != "zarr.json"]
    assert chunks
    chunks[0].unlink()  # a missing chunk reads back as the fill value: only a checksum sees it
    with pytest.raises(StoreError, match=r"damaged: checksum mismatch in \['synapses'\]"):
        store.load_structure(path)


def test_structure_damaged_metadata_and_missing_variable(tmp_path, structure):
    path = tmp_path / "s.zarr"
    store.save_structure(structure, path)
    shutil.rmtree(path / "weight_sd")
    with pytest.raises(StoreError, match=r"damaged: variables \['weight_sd'\] are missing"):
        store.load_structure(path)
    (path / "zarr.json").write_text("{not json")
    with pytest.raises(StoreError, match="cannot be read as Zarr v3"):
        store.load_structure(path)
    with pytest.raises(StoreError, match="path not found"):
        store.load_structure(tmp_path / "nowhere.zarr")


# --- run store: spikes ----------------------------------------------------------------

def _random_segments(n_neurons, n_segments=4, seg_ms=50.0, dt=0.1, per_seg=20000, seed=0):
    rng = np.random.default_rng(seed)
    segs = []
    for s in range(n_segments):
        pops = rng.integers(0, N_POPULATIONS, per_seg)
        pops = pops[n_neurons[pops] > 0]
        senders = rng.integers(0, n_neurons[pops])
        lo = round(s * seg_ms / dt)
        times = rng.integers(lo + 1, lo + round(seg_ms / dt) + 1, pops.size)  # (t_start, t_stop]
        segs.append((times, senders, pops, s * seg_ms, (s + 1) * seg_ms))
    return segs


def _write_run(path, structure, segs, complete=True, rank=0, root=None, planned=None):
    if root is None:
        root = store.create_run(path, structure=structure, dt=0.1, t_sim=segs[-1][4],
                                n_segments_planned=planned or len(segs), params={"x": 1}, label="test",
                                seed=1, n_vp=1, threads=1)
    w = store.SpikeWriter(root, rank=rank)
    for seg in segs:
        w.append_segment(*seg)
    if complete:
        store.set_status(root, "complete")
    return root


def _expected(segs, pop, t_start, t_stop, dt=0.1):
    times = np.concatenate([s[0] for s in segs])
    senders = np.concatenate([s[1] for s in segs])
    pops = np.concatenate([s[2] for s in segs])
    lo, hi = round(t_start / dt), round(t_stop / dt)
    m = (pops == pop) & (times >= lo) & (times < hi)
    o = np.lexsort((senders[m], times[m]))
    return times[m][o], senders[m][o]


def test_spike_selection_by_population_and_window_is_exact(tmp_path, structure):
    run_path = tmp_path / "run.zarr"
    probe = store.create_run(tmp_path / "probe.zarr", structure=structure, dt=0.1, t_sim=1,
                             n_segments_planned=1)
    n = np.asarray(probe["spikes"].attrs["n_neurons"])
    assert n.sum() == 20525  # floor(N) of the tutorial structure (reference N_created_int)
    segs = _random_segments(n)
    _write_run(run_path, structure, segs)
    run = store.open_run(run_path)
    assert run.status == "complete"
    assert run.n_spikes() == sum(s[0].size for s in segs)
    for label, t0, t1 in (("V1-23E", 0.0, 200.0), ("TH-23I", 37.3, 121.0), ("46-6I", 100.0, 100.05)):
        sp = run.spikes(area=label.split("-")[0], pop=label.split("-")[1], t_start=t0, t_stop=t1)
        assert sp.populations == [label]
        steps, senders = _expected(segs, LABELS.index(label), t0, t1)
        np.testing.assert_array_equal(sp.steps, steps)
        np.testing.assert_array_equal(sp.senders, senders)
        np.testing.assert_array_equal(sp.times, steps * 0.1)
        assert np.all((sp.times >= t0 - 1e-9) & (sp.times < t1))
    # everything: grouped by population in model order, time-sorted within each
    sp = run.spikes()
    assert sp.populations == LABELS and len(sp) == run.n_spikes()
    for k in (0, 100, 253):
        t, s = sp.population(LABELS[k])
        steps, senders = _expected(segs, k, 0.0, 1e9)
        np.testing.assert_array_equal(np.rint(t / 0.1), steps)
        np.testing.assert_array_equal(s, senders)
    # a window touching one segment only reads that segment
    assert run.spikes(pop="5E", t_start=60.0, t_stop=90.0).segments == [1]
    # area lists keep the caller's order
    assert run.spikes(area=["V2", "V1"], pop="23E").populations == ["V2-23E", "V1-23E"]
    assert run.structure().identical(structure)
    assert int(run.n_neurons.sel(area="TH", pop="4E")) == 0
    assert run.n_neurons.sum() == 20525


def test_spikes_compress_below_four_bytes_each(tmp_path, structure):
    run_path = tmp_path / "run.zarr"
    probe = store.create_run(tmp_path / "probe.zarr", structure=structure, dt=0.1, t_sim=1,
                             n_segments_planned=1)
    n = np.asarray(probe["spikes"].attrs["n_neurons"])
    segs = _random_segments(n, n_segments=2, seg_ms=100.0, per_seg=400000)
    _write_run(run_path, structure, segs)
    size = sum(p.stat().st_size for p in (run_path / "spikes").rglob("*") if p.is_file())
    n_spikes = sum(s[0].size for s in segs)
    assert size / n_spikes < 4.0, size / n_spikes


def test_ranks_are_merged(tmp_path, structure):
    run_path = tmp_path / "run.zarr"
    probe = store.create_run(tmp_path / "probe.zarr", structure=structure, dt=0.1, t_sim=1,
                             n_segments_planned=1)
    n = np.asarray(probe["spikes"].attrs["n_neurons"])
    a, b = _random_segments(n, seed=1), _random_segments(n, seed=2)
    root = _write_run(run_path, structure, a, complete=False, rank=0)
    _write_run(run_path, structure, b, complete=True, rank=1, root=root)
    run = store.open_run(run_path)
    assert run.ranks == ["rank0", "rank1"]
    both = [(np.concatenate([x[i] for x in (sa, sb)]) if i < 3 else sa[i]) for sa, sb in zip(a, b)
            for i in range(5)]
    segs = [tuple(both[5 * k:5 * k + 5]) for k in range(len(a))]
    sp = run.spikes(area="V1", pop="4E", t_start=20.0, t_stop=170.0)
    steps, senders = _expected(segs, LABELS.index("V1-4E"), 20.0, 170.0)
    np.testing.assert_array_equal(sp.steps, steps)
    np.testing.assert_array_equal(sp.senders, senders)


def test_incomplete_and_failed_runs_need_a_flag(tmp_path, structure):
    run_path = tmp_path / "run.zarr"
    probe = store.create_run(tmp_path / "probe.zarr", structure=structure, dt=0.1, t_sim=1,
                             n_segments_planned=1)
    n = np.asarray(probe["spikes"].attrs["n_neurons"])
    segs = _random_segments(n, n_segments=3)
    root = _write_run(run_path, structure, segs[:2], complete=False, planned=3)
    with pytest.raises(StoreError, match=r"incomplete: status='running' \(still running, or killed\); "
                                         r"it holds 2 of 3 segments \(0-100 ms\)"):
        store.open_run(run_path)
    with pytest.warns(UserWarning, match="incomplete"):
        run = store.open_run(run_path, allow_incomplete=True)
    assert len(run.spikes()) == sum(s[0].size for s in segs[:2])
    store.set_status(root, "failed", error="boom")
    with pytest.raises(StoreError, match="status='failed': boom"):
        store.open_run(run_path)


def test_partial_append_is_ignored_and_overwritten(tmp_path, structure):
    """A crash between the data append and the offsets row leaves a readable store."""
    run_path = tmp_path / "run.zarr"
    probe = store.create_run(tmp_path / "probe.zarr", structure=structure, dt=0.1, t_sim=1,
                             n_segments_planned=1)
    n = np.asarray(probe["spikes"].attrs["n_neurons"])
    segs = _random_segments(n, n_segments=3)
    root = _write_run(run_path, structure, segs[:2], complete=False)
    g = root["spikes"]["rank0"]
    g["times"].append(np.ones(1000, np.int32))  # the crash: data without its offsets row
    with pytest.warns(UserWarning, match="incomplete"):
        run = store.open_run(run_path, allow_incomplete=True)
    assert run.n_spikes() == sum(s[0].size for s in segs[:2])
    assert len(run.spikes()) == run.n_spikes()
    w = store.SpikeWriter(zarr.open_group(str(run_path), mode="r+"))
    w.append_segment(*segs[2])
    store.set_status(w.root, "complete")
    run = store.open_run(run_path)
    steps, senders = _expected(segs, 7, 0.0, 1e9)
    np.testing.assert_array_equal(run.spikes(area="V1", pop="6I").steps, steps)
    np.testing.assert_array_equal(run.spikes(area="V1", pop="6I").senders, senders)


def test_writer_and_reader_reject_bad_input(tmp_path, structure):
    root = store.create_run(tmp_path / "run.zarr", structure=structure, dt=0.1, t_sim=100,
                            n_segments_planned=1)
    w = store.SpikeWriter(root)
    with pytest.raises(StoreError, match=r"pop_index=.* is invalid: expected flat population indices"):
        w.append_segment([1], [0], [254], 0.0, 100.0)
    with pytest.raises(StoreError, match=r"senders=.* is invalid: expected neuron indices"):
        w.append_segment([1], [10**6], [0], 0.0, 100.0)
    with pytest.raises(StoreError, match=r"times_steps=.* is invalid: expected steps within the segment"):
        w.append_segment([2000], [0], [0], 0.0, 100.0)
    with pytest.raises(StoreError, match="three 1-D arrays of equal length"):
        w.append_segment([1, 2], [0], [0], 0.0, 100.0)
    w.append_segment([5], [0], [0], 0.0, 100.0)
    with pytest.raises(StoreError, match=r"t_start=50.0 is invalid: expected >= end of the previous"):
        w.append_segment([], [], [], 50.0, 150.0)
    store.set_status(root, "complete")
    run = store.open_run(tmp_path / "run.zarr")
    with pytest.raises(StoreError, match="area='V0' is invalid"):
        run.spikes(area="V0")
    with pytest.raises(StoreError, match="pop='7E' is invalid"):
        run.spikes(pop="7E")
    with pytest.raises(StoreError, match=r"store=.* is invalid: expected a path that does not exist yet"):
        store.create_run(tmp_path / "run.zarr", structure=structure, dt=0.1, t_sim=1,
                         n_segments_planned=1)
    with pytest.raises(StoreError, match="a path whose parent directory exists"):
        store.create_run(tmp_path / "no" / "run.zarr", structure=structure, dt=0.1, t_sim=1,
                         n_segments_planned=1)


def test_foreign_and_damaged_run_stores(tmp_path, structure):
    foreign = zarr.open_group(str(tmp_path / "foreign.zarr"), mode="w", zarr_format=3)
    foreign.attrs["format"] = "something/else"
    with pytest.raises(StoreError, match=r"format='something/else' is invalid: expected 'mam_xr.run/1'"):
        store.open_run(tmp_path / "foreign.zarr")
    root = store.create_run(tmp_path / "run.zarr", structure=structure, dt=0.1, t_sim=100,
                            n_segments_planned=1)
    store.SpikeWriter(root).append_segment([5], [0], [0], 0.0, 100.0)
    store.set_status(root, "complete")
    shutil.rmtree(tmp_path / "run.zarr" / "spikes" / "rank0" / "offsets")
    with pytest.raises(StoreError, match="damaged: spikes/rank0/offsets is missing"):
        store.open_run(tmp_path / "run.zarr")
    with pytest.raises(StoreError, match="path not found"):
        store.open_run(tmp_path / "missing.zarr")


def test_dask_view_of_raw_arrays(tmp_path, structure):
    probe = store.create_run(tmp_path / "probe.zarr", structure=structure, dt=0.1, t_sim=1,
                             n_segments_planned=1)
    n = np.asarray(probe["spikes"].attrs["n_neurons"])
    segs = _random_segments(n, n_segments=2)
    _write_run(tmp_path / "run.zarr", structure, segs)
    arrays = store.open_run(tmp_path / "run.zarr").spike_arrays()
    assert arrays["offsets"].shape == (2, N_POPULATIONS + 1)
    assert int(arrays["times"].shape[0]) == sum(s[0].size for s in segs)
    assert int(arrays["times"].max().compute()) <= 1000


def test_layouts_match_the_json_schemas(tmp_path, structure):
    jsonschema = pytest.importorskip("jsonschema")
    schemas = Path(__file__).resolve().parents[1] / "schemas"
    run_schema = json.loads((schemas / "run_store.json").read_text())
    struct_schema = json.loads((schemas / "structure.json").read_text())
    root = store.create_run(tmp_path / "run.zarr", structure=structure, dt=0.1, t_sim=100,
                            n_segments_planned=1, params={"a": 1}, label="x", seed=1)
    store.SpikeWriter(root).append_segment([5], [0], [0], 0.0, 100.0)
    store.set_status(root, "complete", timings={"simulate": 1.0})
    jsonschema.validate(dict(zarr.open_group(str(tmp_path / "run.zarr")).attrs), run_schema)
    jsonschema.validate(dict(zarr.open_group(str(tmp_path / "run.zarr/structure")).attrs), struct_schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**dict(root.attrs), "status": "done"}, run_schema)
    from mam_xr.flat import STRUCTURE_VARIABLES

    assert set(struct_schema["x-layout"]["variables"]) == set(STRUCTURE_VARIABLES) | {"exists"}
    rank = run_schema["x-layout"]["spikes/"]["rank<r>/"]
    g = root["spikes"]["rank0"]
    for name in ("times", "senders", "offsets", "segment_bounds"):
        assert str(g[name].dtype) == rank[name]["dtype"], name
        assert list(g[name].chunks) == rank[name]["chunks"], name


# --------------------------------------------------------------------------------------
# Issue 13: one writer, overwriting only our stores, checksums
# --------------------------------------------------------------------------------------

def test_create_run_holds_the_lock_until_the_status_is_final(tmp_path, structure):
    path = tmp_path / "run.zarr"
    root = store.create_run(path, structure=structure, dt=0.1, t_sim=100, n_segments_planned=1)
    lock = tmp_path / "run.zarr.lock"
    info = json.loads(lock.read_text())
    assert set(info) == {"host", "pid", "started", "store"}
    assert lock.stat().st_size >= store.LOCK_RESERVE  # the reserve for a failure on a full disk
    holder = store.lock_holder(path)
    assert holder["alive"] is True and holder["pid"] == info["pid"]
    with pytest.raises(StoreError, match=r"this process is already writing it"):
        store.StoreLock(path).acquire()
    store.SpikeWriter(root).append_segment([5], [0], [0], 0.0, 100.0)
    store.set_status(root, "complete", n_spikes=1)
    assert not lock.exists() and store.lock_holder(path) is None
    assert store.open_run(path).n_spikes() == 1


def test_create_run_replaces_only_mam_xr_stores(tmp_path, structure):
    kw = dict(structure=structure, dt=0.1, t_sim=100, n_segments_planned=1)
    foreign = tmp_path / "data"
    foreign.mkdir()
    (foreign / "zarr.json").write_text(json.dumps({"zarr_format": 3, "node_type": "group",
                                                   "attributes": {"format": "someone-else"}}))
    with pytest.raises(StoreError, match=r"store='.*data' is invalid: expected a new path or a mam_xr store "
                                         r"to replace with overwrite=True; it is not a mam_xr store"):
        store.create_run(foreign, overwrite=True, **kw)
    assert (foreign / "zarr.json").exists() and not (tmp_path / "data.lock").exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    root = store.create_run(empty, overwrite=True, **kw)  # an empty directory holds nothing to lose
    store.set_status(root, "failed", error="test")
    root = store.create_run(empty, overwrite=True, **kw)  # our own store: replaced
    assert root.attrs["status"] == "running"
    store.set_status(root, "complete")
    link = tmp_path / "link"
    link.symlink_to(empty)
    with pytest.raises(StoreError, match="it is a symbolic link"):
        store.check_replaceable(link)
    assert store.store_kind(empty) == "run" and store.store_kind(foreign) is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "empty", "link"]


def test_public_helper_names():
    assert store.json_safe({"a": np.int64(3), "b": np.arange(2)}) == {"a": 3, "b": [0, 1]}
    assert store._json_safe is store.json_safe and store._compressors is store.compressors
    assert [type(c).__name__ for c in store.checked_compressors()] == ["BloscCodec", "Crc32cCodec"]


def test_segment_sha256_is_of_the_stored_spikes(tmp_path, structure):
    path = tmp_path / "run.zarr"
    root = store.create_run(path, structure=structure, dt=0.1, t_sim=100, n_segments_planned=1)
    store.SpikeWriter(root).append_segment([7, 5, 6], [2, 0, 1], [0, 0, 1], 0.0, 100.0)
    store.set_status(root, "complete")
    g = root["spikes"]["rank0"]
    assert bytes(g["segment_sha256"][0]) == store.segment_digest(g["times"][:], g["senders"][:])
    assert g["times"][:].tolist() == [5, 7, 6]  # sorted by (population, time, sender)
    assert store.open_run(path).verify()["ok"]
