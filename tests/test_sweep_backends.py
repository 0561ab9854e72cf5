"""Tests of mam_xr.sweep's back-end registry, its summary table and its spec messages (theory only)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mam_xr.errors import ParameterError
from mam_xr.sweep import BACKENDS, Backend, SweepSpec, register_backend, run_sweep, summary_table, sweep_status
from mam_xr.sweep.point import execute_point

BASE = {"preset": "tutorial", "overrides": {"scale": 0.001, "areas_simulated": ["V1", "V2"],
                                            "theory": {"T": 20.0}}}


@pytest.fixture
def recording_backend():
    """A back-end registered for the test: runs every point in this process, records the labels."""
    calls = []

    def run(batch):
        for label, pdir in batch.points.items():
            batch.started(label)
            calls.append((label, Path(pdir).name, batch.threads, batch.simulate))
            batch.record(label, execute_point(str(pdir), batch.threads, subprocess_=False))
        return 7                         # "points at a time", reported in the manifest

    backend = register_backend(Backend("recording", "test back-end", run,
                                       threads=lambda n_workers, n_points: 3))
    try:
        yield backend, calls
    finally:
        BACKENDS.pop("recording", None)


def test_registered_backend_is_used_by_the_driver(tmp_path, recording_backend):
    backend, calls = recording_backend
    spec = SweepSpec.from_dict({"name": "g", "parameters": {"g": [-11.0, -12.0]}, "base": BASE})
    ds = run_sweep(spec, tmp_path / "s", cluster="recording", progress=False)
    status = sweep_status(tmp_path / "s")
    # every point went through the registered back-end, with its default threads
    assert sorted(c[0] for c in calls) == sorted(e["label"] for e in status["points"])
    assert sorted(c[1] for c in calls) == sorted(e["name"] for e in status["points"])
    assert {c[2] for c in calls} == {3} and {c[3] for c in calls} == {False}
    ex = status["execution"]
    assert ex["cluster"] == "recording" and ex["n_workers"] == 7 and ex["threads"] == 3
    assert ex["theory_path"] == "per point"
    assert [e["status"] for e in status["points"]] == ["complete", "complete"]
    assert [e["attempts"] for e in status["points"]] == [1, 1]
    assert bool(ds["point_complete"].all()) and ds["theory_rate"].notnull().any()
    # a name is registered once; an unknown name is refused with the registered ones
    with pytest.raises(ParameterError, match=r"backend='recording' is invalid: expected a new name"):
        register_backend(backend)
    with pytest.raises(ParameterError, match=r"cluster='nowhere' is invalid: expected one of auto, serial, "
                                             r"local, slurm, mpi, recording"):
        run_sweep(spec, tmp_path / "t", cluster="nowhere")


def test_summary_table_of_a_theory_sweep(tmp_path):
    spec = SweepSpec.chi([1.0, 1.5], overrides=BASE["overrides"], name="chi-table")
    ds = run_sweep(spec, tmp_path / "s", progress=False)
    text = summary_table(tmp_path / "s", ds)
    lines = text.splitlines()
    assert lines[0].split()[:3] == ["point", "status", "time"] and "mean rate (theory)" in lines[0]
    status = sweep_status(tmp_path / "s")
    for line, e, chi in zip(lines[2:4], status["points"], [1.0, 1.5]):
        assert line.startswith(f"chi={chi}") and " complete " in line
        mean = float(ds["theory_rate"].sel(chi=chi).mean())
        assert f"{mean:.4g}" in line.split()
        assert e["result"] in line and (tmp_path / "s" / e["result"]).exists()
    assert lines[-1] == f"sweep chi-table: 2 complete, 0 failed; results in {tmp_path / 's' / 'sweep.zarr'}"
    assert len(lines) == 5
    # a table opened from the directory alone is the same
    assert summary_table(tmp_path / "s") == text


def test_summary_table_shows_failed_points_first_and_caps_rows(tmp_path):
    spec = SweepSpec.from_dict({"parameters": {"theory.T": [20.0, 20.05, 10.0]}, "base": BASE})
    with pytest.warns(UserWarning, match="T=20.05 is invalid"):
        run_sweep(spec, tmp_path / "s", progress=False)
    lines = summary_table(tmp_path / "s", max_rows=2).splitlines()
    # failed points are always shown; rows in point order
    assert lines[2].startswith("T=20.0 ") and " complete " in lines[2]
    assert lines[3].startswith("T=20.05") and " failed " in lines[3] and "ParameterError: T=20.05" in lines[3]
    assert lines[4] == "... and 1 more complete points (mam_xr.sweep.sweep_status)"
    assert lines[-1].startswith("sweep sweep: 2 complete, 1 failed; results in ")


def test_spec_errors_name_the_field_once():
    with pytest.raises(ParameterError) as info:
        SweepSpec.from_dict({"parameters": {"chi": []}})
    assert str(info.value) == "parameters.chi=[] is invalid: expected at least one value"
    with pytest.raises(ParameterError) as info:
        SweepSpec.from_dict({"parameters": {"chi": [1.0, 1.0]}})
    assert str(info.value).startswith("parameters.chi=[1.0, 1.0] is invalid: expected distinct values")
    with pytest.raises(ParameterError) as info:
        SweepSpec.from_dict({"parameters": {"chi": [1.0]}, "base": {"preset": "tutorial", "overrides": {"x": {1}}}})
    assert str(info.value).startswith("base.overrides={'x': {1}} is invalid: expected JSON-serialisable")
    assert "parameters.parameters" not in str(info.value) and "base.base" not in str(info.value)
