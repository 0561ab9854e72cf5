"""Fault injection on real (tiny) NEST runs: the four ways a run store used to
lose or hide data, each reproduced and shown fixed, plus stores that contradict
themselves.

1. ``overwrite`` deleted any path  -> only mam_xr stores are replaced;
2. two writers on one store        -> a lock; the second writer is refused;
3. spikes were not verified         -> CRC32C per chunk, SHA-256 per segment;
4. disk full left ``running``       -> ``failed`` with the error, segments readable.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import zarr
from typer.testing import CliRunner

from mam_xr import store
from mam_xr.cli import app
from mam_xr.errors import SimulationError, StoreError
from mam_xr.params import Params
from mam_xr.simulation import simulate

# V1 and V2 at scale 0.002: 1.4k neurons, 6 segments of 50 ms, ~800 spikes, ~2 s.
TINY = dict(scale=0.002, t_sim=300.0, segment=50.0, areas_simulated=["V1", "V2"])
CLI_TINY = ["--scale", "0.002", "--t-sim", "300", "--segment", "50", "--areas", "V1,V2",
            "--no-progress", "--no-analysis", "--no-report"]
# The same network run for 3 s (60 segments): long enough to be caught mid-run.
CLI_LONG = [*CLI_TINY, "--t-sim", "3000"]


@pytest.fixture(scope="module")
def params():
    return Params.tutorial(**TINY)


@pytest.fixture(scope="module")
def structure(params):
    from mam_xr.structure import build

    return build(params)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, params, structure):
    """A clean run: what every surviving store must equal."""
    path = tmp_path_factory.mktemp("ref") / "ref.zarr"
    run = simulate(params, store=path, structure=structure, progress=False)
    assert run.status == "complete" and run.n_spikes() > 300
    return run


def _same_spikes(run, ref, t_stop=None):
    a, b = run.spikes(t_stop=t_stop), ref.spikes(t_stop=t_stop)
    np.testing.assert_array_equal(a.offsets, b.offsets)
    np.testing.assert_array_equal(a.steps, b.steps)
    np.testing.assert_array_equal(a.senders, b.senders)


def cli(*args, cwd, check=False, timeout=600):
    return subprocess.run([sys.executable, "-m", "mam_xr.cli", *args], cwd=cwd, capture_output=True,
                          text=True, env=dict(os.environ), timeout=timeout)


# --------------------------------------------------------------------------------------
# 1. Overwrite only what is ours
# --------------------------------------------------------------------------------------

def test_overwrite_leaves_a_foreign_directory_intact(tmp_path, params, structure):
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "thesis.tex").write_text("\\chapter{Results}")
    with pytest.raises(StoreError, match=r"store='.*victim' is invalid: expected a new path or a mam_xr "
                                         r"store to replace with overwrite=True; it is not a mam_xr store"):
        simulate(params, store=victim, structure=structure, progress=False, overwrite=True)
    assert (victim / "thesis.tex").read_text() == "\\chapter{Results}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["victim"]  # no lock or temp left


def test_overwrite_refuses_cwd_parent_home_and_files(tmp_path, params, structure, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "keep.txt").write_text("x")
    (tmp_path / "plain").write_text("not a store")
    cases = {".": "it is the working directory", "..": "it is a parent of the working directory",
             str(Path.home()): "it is the home directory" if Path.home().resolve() not in
             tmp_path.resolve().parents else "it is a parent of the working directory",
             "plain": "it is a file, not a mam_xr store"}
    for target, why in cases.items():
        with pytest.raises(StoreError, match=why):
            simulate(params, store=target, structure=structure, progress=False, overwrite=True)
    with pytest.raises(StoreError, match=r"store='plain' is invalid: expected a directory path for a "
                                         r"Zarr store; it is a file"):
        simulate(params, store="plain", structure=structure, progress=False)
    assert (tmp_path / "keep.txt").read_text() == "x" and (tmp_path / "plain").read_text() == "not a store"


def test_overwrite_replaces_a_run_store_atomically(tmp_path, params, structure, reference):
    path = tmp_path / "r.zarr"
    first = simulate(params.update(seed=5), store=path, structure=structure, progress=False)
    assert first.n_spikes() != reference.n_spikes()
    run = simulate(params, store=path, structure=structure, progress=False, overwrite=True)
    _same_spikes(run, reference)
    # nothing left beside it: no old copy, no new temp, no lock
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.zarr"]


def test_cli_overwrite_refuses_a_foreign_directory_and_the_cwd(tmp_path):
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "thesis.tex").write_text("mine")
    proc = cli("run", *CLI_TINY, "--out", "victim", "--overwrite", cwd=tmp_path)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr
    assert lines[0].startswith("error: --out='victim' is invalid: expected a new path or a mam_xr store "
                               "to replace with --overwrite; it is not a mam_xr store")
    assert "mean-field" not in proc.stdout  # refused before any computation
    proc = cli("run", *CLI_TINY, "--out", ".", "--overwrite", cwd=victim)
    assert proc.returncode == 2 and "it is the working directory" in proc.stderr
    assert (victim / "thesis.tex").read_text() == "mine"
    proc = cli("run", *CLI_TINY, "--out", "thesis.tex", cwd=victim)
    assert proc.returncode == 2 and "it is a file" in proc.stderr
    assert sorted(p.name for p in victim.iterdir()) == ["thesis.tex"]


def test_structure_save_replaces_only_structure_stores(tmp_path, structure):
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "notes.md").write_text("keep")
    with pytest.raises(StoreError, match="it is not a mam_xr store"):
        store.save_structure(structure, victim)
    assert (victim / "notes.md").read_text() == "keep"
    store.save_structure(structure, tmp_path / "s.zarr")
    store.save_structure(structure, tmp_path / "s.zarr")  # its own store: replaced
    assert store.store_kind(tmp_path / "s.zarr") == "structure"


# --------------------------------------------------------------------------------------
# 2. One writer per store
# --------------------------------------------------------------------------------------

def _wait_for(predicate, timeout=120.0):
    t0 = time.time()
    while not predicate():
        if time.time() - t0 > timeout:
            raise AssertionError("timed out")
        time.sleep(0.05)


def _started(tmp_path, out, first):
    # the lock taken, the store created and its first spikes being written
    return ((tmp_path / "s.zarr.lock").exists() and (out / "spikes" / "rank0" / "offsets" / "c").exists()
            or first.poll() is not None)


def test_second_writer_is_refused_and_the_first_store_is_whole(tmp_path, params, structure):
    out = tmp_path / "s.zarr"
    first = subprocess.Popen([sys.executable, "-m", "mam_xr.cli", "run", *CLI_LONG, "--out", "s.zarr"],
                             cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env=dict(os.environ))
    try:
        # Wait until the first writer has its lock and a store, then freeze it mid-run.
        _wait_for(lambda: _started(tmp_path, out, first))
        assert first.poll() is None, first.communicate()
        os.kill(first.pid, signal.SIGSTOP)
        holder = store.lock_holder(out)
        assert holder["alive"] and holder["pid"] == first.pid
        # the second writer: the CLI ...
        proc = cli("run", *CLI_TINY, "--out", "s.zarr", "--overwrite", cwd=tmp_path)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr
        assert f"it is being written by pid {first.pid} on host " in proc.stderr
        # ... and the Python API (also how a sweep point writes its store)
        with pytest.raises(StoreError, match=f"being written by pid {first.pid}"):
            simulate(params, store=out, structure=structure, progress=False, overwrite=True)
        with pytest.raises(StoreError, match=r"status='running' .*still being written by pid"):
            store.open_run(out)
    finally:
        os.kill(first.pid, signal.SIGCONT)
    stdout, stderr = first.communicate(timeout=600)
    assert first.returncode == 0, stderr
    run = store.open_run(out)
    assert run.status == "complete" and len(run.segments()) == 60
    np.testing.assert_allclose(run.segments()[:, 0], np.arange(60) * 50.0)
    reference = simulate(params.update(t_sim=3000.0), store=tmp_path / "clean.zarr", structure=structure,
                         progress=False)
    _same_spikes(run, reference)
    assert run.spikes(t_stop=300.0).steps.size == reference.spikes(t_stop=300.0).steps.size > 0
    assert run.mean_rate() == pytest.approx(reference.mean_rate(), rel=0, abs=0)
    assert not (tmp_path / "s.zarr.lock").exists()


def test_stale_lock_of_a_killed_writer_is_reported_and_taken_over(tmp_path, params, structure, reference):
    out = tmp_path / "s.zarr"
    first = subprocess.Popen([sys.executable, "-m", "mam_xr.cli", "run", *CLI_LONG, "--out", "s.zarr"],
                             cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             env=dict(os.environ))
    _wait_for(lambda: _started(tmp_path, out, first))
    assert first.poll() is None
    os.kill(first.pid, signal.SIGKILL)
    first.communicate()
    holder = store.lock_holder(out)
    assert holder["alive"] is False and holder["pid"] == first.pid
    with pytest.raises(StoreError, match=f"its writer, pid {first.pid} on host .*, ended without finishing"):
        store.open_run(out)
    with pytest.warns(UserWarning, match=f"stale lock .*s.zarr.lock of pid {first.pid} .* taking it over"):
        run = simulate(params, store=out, structure=structure, progress=False, overwrite=True)
    _same_spikes(run, reference)
    assert store.lock_holder(out) is None


def test_sweep_point_being_written_is_neither_cleared_nor_rewritten(tmp_path, params, structure):
    from mam_xr.sweep.plan import Point
    from mam_xr.sweep.point import prepare_point

    point = Point(index=(0,), coords={"chi": 1.0}, values={"chi": 1.0}, label="abcdef123456")
    pdir = tmp_path / "points" / point.name
    pdir.mkdir(parents=True)
    code = ("import sys, time; from mam_xr.store import StoreLock; StoreLock(sys.argv[1]).acquire(); "
            "print('locked', flush=True); time.sleep(120)")
    holder = subprocess.Popen([sys.executable, "-c", code, str(pdir / "run.zarr")], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(StoreError, match=rf"point store='.*run.zarr' is invalid: expected a store no other "
                                             rf"writer is using: it is being written by pid {holder.pid} on host"):
            prepare_point(None, tmp_path, point, attempts=2)
        assert (pdir / "run.zarr.lock").exists()  # the point directory was not cleared
        # and the point's own run (simulate with overwrite=True) is refused too
        with pytest.raises(StoreError, match=f"being written by pid {holder.pid}"):
            simulate(params, store=pdir / "run.zarr", structure=structure, progress=False, overwrite=True)
    finally:
        holder.kill()
        holder.wait()


# --------------------------------------------------------------------------------------
# 3. Verified spikes
# --------------------------------------------------------------------------------------

@pytest.fixture()
def copy_of_reference(tmp_path, reference):
    path = tmp_path / "r.zarr"
    shutil.copytree(reference.path, path)
    return path


def test_intact_store_verifies(copy_of_reference, reference):
    result = store.open_run(copy_of_reference).verify()
    assert result["ok"] and result["problems"] == []
    assert result["checked"]["segments"] == 6 and result["checked"]["spikes"] == reference.n_spikes()
    proc = cli("verify", str(copy_of_reference), cwd=copy_of_reference.parent)
    assert proc.returncode == 0 and proc.stdout.startswith("OK: ")
    assert f"6 segments ({reference.n_spikes()} spikes)" in proc.stdout


@pytest.mark.parametrize("array", ["times", "senders"])
def test_deleted_spike_chunk_raises_naming_array_segment_and_chunk(copy_of_reference, array):
    (copy_of_reference / "spikes" / "rank0" / array / "c" / "0").unlink()
    msg = rf"spikes/rank0/{array}, segments 0-5, chunk c/0 is missing \(it would read as zeros\)"
    with pytest.raises(StoreError, match=msg):
        store.open_run(copy_of_reference)
    result = store.verify_store(copy_of_reference)
    assert not result["ok"] and f"spikes/rank0/{array}, segments 0-5, chunk c/0 is missing" in result["verdict"]
    proc = cli("verify", str(copy_of_reference), cwd=copy_of_reference.parent)
    assert proc.returncode == 1 and proc.stderr.startswith("DAMAGED: ")
    assert f"spikes/rank0/{array}, segments 0-5, chunk c/0 is missing" in proc.stderr


@pytest.mark.parametrize("array", ["times", "senders"])
def test_flipped_spike_chunk_raises_naming_array_segment_and_chunk(copy_of_reference, array):
    chunk = copy_of_reference / "spikes" / "rank0" / array / "c" / "0"
    data = bytearray(chunk.read_bytes())
    for i in (40, 41, 42):  # XOR three bytes, as in the fault trial
        data[i] ^= 0x5A
    chunk.write_bytes(bytes(data))
    run = store.open_run(copy_of_reference)  # the layout is fine; the bytes are not
    with pytest.raises(StoreError, match=rf"spikes/rank0/{array}, segments 0-5, chunk c/0 cannot be "
                                         r"decoded \(.*checksum"):
        run.spikes()
    with pytest.raises(StoreError, match=rf"spikes/rank0/{array}, segment 2, chunk c/0 cannot be decoded"):
        run.spikes(area="V1", pop="23E", t_start=110, t_stop=150)
    proc = cli("verify", str(copy_of_reference), cwd=copy_of_reference.parent)
    assert proc.returncode == 1 and proc.stderr.startswith("DAMAGED: ")
    assert f"spikes/rank0/{array}, segment 0, chunk c/0 cannot be decoded" in proc.stderr


@pytest.mark.parametrize("array", ["times", "senders"])
def test_flipped_spike_chunk_stops_the_analysis_naming_it(copy_of_reference, array):
    """The bulk reads of the analysis go through the verified reader too."""
    from mam_xr import analysis

    chunk = copy_of_reference / "spikes" / "rank0" / array / "c" / "0"
    data = bytearray(chunk.read_bytes())
    for i in (40, 41, 42):
        data[i] ^= 0x5A
    chunk.write_bytes(bytes(data))
    where = rf"spikes/rank0/{array}, segments 0-5, chunk c/0 cannot be decoded \(.*checksum"
    for statistic in ("rates", "irregularity", "correlation"):
        with pytest.raises(StoreError, match=where):
            analysis.analyze(str(copy_of_reference), [statistic], t_min_ms=0.0)
    proc = cli("analyze", str(copy_of_reference), "--t-min", "0", cwd=copy_of_reference.parent)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    assert f"spikes/rank0/{array}, segments 0-5, chunk c/0 cannot be decoded" in proc.stderr
    assert not (copy_of_reference / "analysis").exists()  # nothing computed from damaged spikes


def test_changed_spikes_with_a_valid_chunk_checksum_fail_the_segment_sha256(copy_of_reference):
    """Bytes rewritten through Zarr (new CRC) are still caught by the segment SHA-256."""
    arr = zarr.open_array(str(copy_of_reference / "spikes" / "rank0" / "times"), mode="r+")
    with zarr.config.set({"array.write_empty_chunks": True}):
        arr[:5] = arr[:5] + 1
    result = store.open_run(copy_of_reference).verify()
    assert not result["ok"]
    assert result["problems"] == ["spikes/rank0: segment 0 (spikes 0-%d) differs from its SHA-256 "
                                  "(times or senders changed)" % int(
                                      store.open_run(copy_of_reference).root["spikes/rank0/offsets"][0, -1])]


def test_store_without_checksums_opens_with_a_warning(copy_of_reference, reference):
    g = zarr.open_group(str(copy_of_reference / "spikes"), mode="r+")
    del g.attrs["checksums"]  # what a store written before checksums looks like
    with pytest.warns(UserWarning, match="written before spike checksums"):
        run = store.open_run(copy_of_reference)
    _same_spikes(run, reference)


# --------------------------------------------------------------------------------------
# 4. Honest status on any failure
# --------------------------------------------------------------------------------------

def _fill_after(monkeypatch, n_segments, action):
    """Run ``action()`` after the writer committed ``n_segments`` segments."""
    original = store.SpikeWriter.append_segment

    def append(self, *args, **kwargs):
        if self.n_segments == n_segments:
            action()
        return original(self, *args, **kwargs)

    monkeypatch.setattr(store.SpikeWriter, "append_segment", append)


def _spike_writes_fail_after(monkeypatch, n_segments, error):
    """Zarr's low-level write raises ``error(path)`` for every spike chunk written
    after ``n_segments`` segments are committed (fault injection without a device)."""
    import zarr.storage._local as local

    original = local._put
    state = {"failing": False}

    def put(path, value, exclusive=False):
        if state["failing"] and "spikes" in str(path):
            raise error(str(path))
        return original(path, value, exclusive=exclusive)

    monkeypatch.setattr(local, "_put", put)
    _fill_after(monkeypatch, n_segments, lambda: state.update(failing=True))


def _check_failed(path, reference, n_ok, error):
    with pytest.raises(StoreError, match=rf"status='failed': .*{error}"):
        store.open_run(path)
    with pytest.warns(UserWarning, match="incomplete"):
        run = store.open_run(path, allow_incomplete=True)
    assert run.status == "failed" and len(run.segments()) == n_ok
    _same_spikes(run, reference, t_stop=50.0 * n_ok)
    assert store.lock_holder(path) is None  # released
    return run


@pytest.fixture()
def tmpfs(tmp_path):
    """A real 24 MiB file system (tmpfs) to fill up; needs root."""
    mnt = tmp_path / "tmpfs"
    mnt.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(mnt)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({proc.stderr.strip()}); "
                    "test_disk_full_by_size_limited_writer covers the same path")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def _fill_disk(where: Path):
    with open(where / "filler", "wb") as f:
        try:
            while True:
                f.write(b"\0" * 2**16)
                f.flush()
        except OSError as exc:
            assert exc.errno == 28


def test_disk_full_on_a_real_file_system_leaves_a_failed_store(tmpfs, params, structure, reference,
                                                                monkeypatch):
    path = tmpfs / "r.zarr"
    _fill_after(monkeypatch, 2, lambda: _fill_disk(tmpfs))
    with pytest.raises(SimulationError, match=r"OSError: \[Errno 28\] No space left on device"):
        simulate(params, store=path, structure=structure, progress=False)
    run = _check_failed(path, reference, 2, "No space left on device")
    assert "Errno 28" in run.attrs["error"]


def test_disk_full_by_size_limited_writer(tmp_path, params, structure, reference, monkeypatch):
    """Zarr's low-level write raising ENOSPC once the spike chunks pass a byte budget
    (fault injection where no tmpfs can be mounted)."""
    import zarr.storage._local as local

    written = {"bytes": 0, "limit": None}
    original = local._put

    def put(path, value, exclusive=False):
        if written["limit"] is not None and "spikes" in str(path):
            written["bytes"] += len(value.as_buffer_like())
            if written["bytes"] > written["limit"]:
                raise OSError(28, "No space left on device", str(path))
        return original(path, value, exclusive=exclusive)

    monkeypatch.setattr(local, "_put", put)
    _fill_after(monkeypatch, 3, lambda: written.update(limit=0))
    path = tmp_path / "r.zarr"
    with pytest.raises(SimulationError, match=r"No space left on device"):
        simulate(params, store=path, structure=structure, progress=False)
    _check_failed(path, reference, 3, "No space left on device")
    assert store.verify_store(path)["ok"]  # what was committed is intact


def test_cli_disk_full_prints_one_line_and_exits_nonzero(tmp_path, reference, monkeypatch):
    _spike_writes_fail_after(monkeypatch, 2, lambda path: OSError(28, "No space left on device", path))
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["run", *CLI_TINY, "--out", "r.zarr"])
    assert result.exit_code == 2
    lines = [ln for ln in result.output.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in result.output
    assert "simulation of run store 'r.zarr' failed: OSError: [Errno 28] No space left on device" in lines[0]
    _check_failed(tmp_path / "r.zarr", reference, 2, "No space left on device")


def test_ctrl_c_marks_the_store_failed_and_the_cli_says_so(tmp_path, reference, monkeypatch):
    def interrupt():
        raise KeyboardInterrupt

    _fill_after(monkeypatch, 4, interrupt)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["run", *CLI_TINY, "--out", "r.zarr"])
    assert result.exit_code == 130
    assert ("interrupted (Ctrl-C): run store r.zarr is marked failed; its committed segments stay "
            "readable (--allow-incomplete)") in result.output
    _check_failed(tmp_path / "r.zarr", reference, 4, "KeyboardInterrupt")


def test_permission_lost_mid_run_marks_the_store_failed(tmp_path, params, structure, reference, monkeypatch):
    if os.geteuid() == 0:  # root ignores file modes: lose permission through the writer instead
        _spike_writes_fail_after(monkeypatch, 1, lambda path: PermissionError(13, "Permission denied", path))
    else:
        _fill_after(monkeypatch, 1, lambda: os.chmod(tmp_path / "r.zarr" / "spikes" / "rank0" / "times",
                                                     0o500))
    with pytest.raises(SimulationError, match="Permission denied"):
        simulate(params, store=tmp_path / "r.zarr", structure=structure, progress=False)
    _check_failed(tmp_path / "r.zarr", reference, 1, "Permission denied")


def test_cli_read_only_cwd_gets_one_line(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(ro)],
                             capture_output=True).returncode == 0  # read-only even for root
    if not mounted:
        os.chmod(ro, 0o500)
    try:
        if os.access(ro, os.W_OK) and not mounted:
            pytest.skip("cannot make a read-only directory here (root without mount)")
        proc = cli("run", *CLI_TINY, cwd=ro)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr
        assert proc.stderr.strip().splitlines() == [
            "error: --out is not given and the default runs/run-4fd1e62d7549.zarr cannot be created in the "
            "working directory (Read-only file system): pass --out PATH in a writable directory"
            if mounted else "error: --out is not given and the default runs/run-4fd1e62d7549.zarr cannot "
            "be created in the working directory (Permission denied): pass --out PATH in a writable directory"]
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(ro)], check=False)
        else:
            os.chmod(ro, 0o700)


# --------------------------------------------------------------------------------------
# Stores that contradict themselves
# --------------------------------------------------------------------------------------

def _edit_attrs(path, **attrs):
    g = zarr.open_group(str(path), mode="r+")
    g.attrs.update(attrs)


def _edit_spikes_attrs(path, **attrs):
    g = zarr.open_group(str(path / "spikes"), mode="r+")
    g.attrs.update(attrs)


def _rows(path, name, fn):
    arr = zarr.open_array(str(path / "spikes" / "rank0" / name), mode="r+")
    with zarr.config.set({"array.write_empty_chunks": True}):
        fn(arr)


BAD_STORES = {
    "n_segments_planned edited": (lambda p: _edit_attrs(p, n_segments_planned=7),
                                  r"attrs.n_segments_planned=7 is invalid: expected ceil\(t_sim / segment\) "
                                  r"= ceil\(300 / 50\) = 6"),
    "n_segments_planned zero": (lambda p: _edit_attrs(p, n_segments_planned=0),
                                r"attrs.n_segments_planned=0 is invalid: expected an integer >= 1"),
    "n_segments_planned text": (lambda p: _edit_attrs(p, n_segments_planned="6"),
                                r"attrs.n_segments_planned='6' is invalid: expected an integer >= 1"),
    "dt zero": (lambda p: _edit_attrs(p, dt=0.0), r"attrs.dt=0.0 is invalid: expected a finite time step > 0 ms"),
    "dt negative": (lambda p: _edit_attrs(p, dt=-0.1), r"attrs.dt=-0.1 is invalid: expected a finite time step"),
    "spikes dt zero": (lambda p: _edit_spikes_attrs(p, dt=0.0),
                       r"spikes.attrs.dt=0.0 is invalid: expected a finite time step > 0 ms"),
    "spikes dt differs": (lambda p: _edit_spikes_attrs(p, dt=0.2),
                          r"spikes.attrs.dt=0.2 is invalid: expected the run's dt=0.1 ms"),
    "t_sim zero": (lambda p: _edit_attrs(p, t_sim=0.0), r"attrs.t_sim=0.0 is invalid: expected a finite simulated"),
    "params broken JSON": (lambda p: _edit_attrs(p, params='{"network": '),
                           r"attrs.params='\{\"network\": ' is invalid: expected the parameters as JSON"),
    "params not an object": (lambda p: _edit_attrs(p, params="[1]"),
                             r"attrs.params='\[1\]' is invalid: expected a JSON object of parameters"),
    "status unknown": (lambda p: _edit_attrs(p, status="done"),
                       r"attrs.status='done' is invalid: expected one of \('running', 'complete', 'failed'\)"),
    "n_spikes edited": (lambda p: _edit_attrs(p, n_spikes=1),
                        r"attrs.n_spikes=1 is invalid: expected the \d+ spikes the offsets tables hold"),
    "bounds reversed": (lambda p: _rows(p, "segment_bounds", lambda a: a.__setitem__(2, [150.0, 100.0])),
                        r"spikes/rank0/segment_bounds\[2\]=\[150.0, 100.0\] is invalid: expected finite "
                        r"\[t_start, t_stop\) with t_start < t_stop"),
    "bounds not monotone": (lambda p: _rows(p, "segment_bounds", lambda a: a.__setitem__(3, [20.0, 40.0])),
                            r"spikes/rank0/segment_bounds\[3\]=\[20.0, 40.0\] is invalid: expected a segment "
                            r"starting at or after the end of segment 2 \(150 ms\)"),
    "bounds beyond t_sim": (lambda p: _rows(p, "segment_bounds", lambda a: a.__setitem__(5, [250.0, 900.0])),
                            r"spikes/rank0/segment_bounds\[5\]=\[250.0, 900.0\] is invalid: expected segments within t_sim=300"),
    "offsets row missing": (lambda p: _rows(p, "offsets", lambda a: a.resize((4, a.shape[1]))),
                            r"spikes/rank0/offsets='<4 rows>' is invalid: expected one row per segment of "
                            r"spikes/rank0/segment_bounds \(6 rows\)"),
    "offsets not contiguous": (lambda p: _rows(p, "offsets", lambda a: a.__setitem__((3, 0), 1)),
                               r"spikes/rank0/offsets\[3, 0\]=1 is invalid: expected \d+ \(the end of the "
                               r"previous segment\)"),
    "offsets decreasing": (lambda p: _rows(p, "offsets", lambda a: a.__setitem__((1, 100), 0)),
                           r"spikes/rank0/offsets\[1\]='<decreasing>' is invalid: expected non-decreasing"),
    "times truncated": (lambda p: _rows(p, "times", lambda a: a.resize((10,))),
                        r"spikes/rank0/times='<10 spikes>' is invalid: expected at least the \d+ spikes"),
    "sha rows missing": (lambda p: _rows(p, "segment_sha256", lambda a: a.resize((2, 32))),
                         r"spikes/rank0/segment_sha256='<2 rows>' is invalid: expected one row per committed "
                         r"segment \(6\)"),
}


@pytest.mark.parametrize("case", list(BAD_STORES))
def test_store_contradicting_itself_is_refused(copy_of_reference, case):
    edit, message = BAD_STORES[case]
    edit(copy_of_reference)
    with pytest.raises(StoreError, match=r"run store '.*r.zarr' contradicts itself: " + message):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            store.open_run(copy_of_reference, allow_incomplete=True)
    proc_result = store.verify_store(copy_of_reference)
    assert not proc_result["ok"] and "contradicts itself" in proc_result["verdict"]


def test_bad_store_count():
    """The closing note of issue 13 counts these."""
    assert len(BAD_STORES) == 20
