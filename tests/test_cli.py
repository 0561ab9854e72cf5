"""The mam-xr command line, run as a user runs it (a real subprocess, real NEST)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mam_xr import open_run
from mam_xr.store import load_structure
from conftest import load_reference


def mam_xr_cli(*args, cwd, check=True):
    proc = subprocess.run([sys.executable, "-m", "mam_xr.cli", *args], cwd=cwd,
                          capture_output=True, text=True, env=dict(os.environ), timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"mam-xr {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
    return proc


def test_help_lists_every_command(tmp_path):
    out = mam_xr_cli("--help", cwd=tmp_path).stdout
    for command in ("run", "theory", "analyze", "sweep", "report", "data", "structure", "params"):
        assert command in out


def test_invalid_parameter_exits_2_with_the_message(tmp_path):
    proc = mam_xr_cli("params", "--chi", "0.5", cwd=tmp_path, check=False)
    assert proc.returncode == 2
    assert "network.connection.chi=0.5 is invalid: expected a value greater than or equal to 1" in proc.stderr
    proc = mam_xr_cli("run", "--areas", "V1,XX", "--no-progress", cwd=tmp_path, check=False)
    assert proc.returncode == 2 and "'XX' is invalid" in proc.stderr
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_structure_command_writes_the_reference_structure(tmp_path):
    out = mam_xr_cli("structure", "--out", "s.zarr", cwd=tmp_path).stdout
    assert "20,650 neurons" in out
    ds = load_structure(tmp_path / "s.zarr")
    ref = load_reference("structure_downscaled_tutorial.npz")
    from mam_xr.flat import structure_to_flat

    np.testing.assert_allclose(structure_to_flat(ds)["K"], ref["K"], rtol=1e-9)


def test_theory_command_prints_the_tutorial_prediction(tmp_path):
    out = mam_xr_cli("theory", "--out", "t.zarr", cwd=tmp_path).stdout
    assert "mean rate 29.5884 spikes/s, converged" in out
    assert (tmp_path / "t.zarr" / "theory").is_dir()


def test_run_writes_store_analysis_and_report(tmp_path):
    out = mam_xr_cli("run", "--scale", "0.002", "--t-sim", "300", "--areas", "V1,V2",
                     "--out", "r.zarr", "--no-progress", cwd=tmp_path).stdout
    assert "status complete" in out and "report: r.html" in out
    run = open_run(tmp_path / "r.zarr")
    assert run.status == "complete"
    assert (tmp_path / "r.zarr" / "theory").is_dir() and (tmp_path / "r.zarr" / "analysis").is_dir()
    html = (tmp_path / "r.html").read_text()
    assert "<html" in html.lower() and "bokeh" in html.lower()
    # The printed mean rate is the store's.
    assert f"mean rate {run.mean_rate():.4f}" in out
    # Analysing again reads the cache and prints the same statistics.
    again = mam_xr_cli("analyze", "r.zarr", cwd=tmp_path).stdout
    assert again.startswith("rates:")
