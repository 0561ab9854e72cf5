"""The mam-xr command line, run as a user runs it (a real subprocess, real NEST)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import zarr
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


def test_messages_use_cli_flags_and_out_is_checked_first(tmp_path):
    tiny = ["--scale", "0.002", "--t-sim", "100", "--segment", "50", "--areas", "V1",
            "--no-progress", "--no-analysis", "--no-report"]
    mam_xr_cli("run", *tiny, "--out", "r.zarr", cwd=tmp_path)
    proc = mam_xr_cli("run", *tiny, "--out", "r.zarr", cwd=tmp_path, check=False)
    assert proc.returncode == 2 and "mean-field" not in proc.stdout  # refused before the theory
    assert proc.stderr.strip() == "error: --out='r.zarr' is invalid: expected a path that does not exist yet (or --overwrite)"
    proc = mam_xr_cli("run", *tiny, "--out", "r.zarr", "--overwrite", cwd=tmp_path)
    assert "status complete" in proc.stdout
    # an interrupted run: analyze and report name --allow-incomplete, and accept it
    g = zarr.open_group(str(tmp_path / "r.zarr"), mode="r+")
    g.attrs.update(status="failed", error="KeyboardInterrupt: ")
    proc = mam_xr_cli("analyze", "r.zarr", cwd=tmp_path, check=False)
    assert proc.returncode == 2 and "Pass --allow-incomplete to read the committed segments" in proc.stderr
    assert "allow_incomplete=True" not in proc.stderr
    proc = mam_xr_cli("report", "r.zarr", "--allow-incomplete", cwd=tmp_path)
    assert proc.stdout.strip() == "r.html" and (tmp_path / "r.html").stat().st_size > 10_000
    # verify: a verdict and its exit code
    proc = mam_xr_cli("verify", "r.zarr", cwd=tmp_path)
    assert proc.stdout.startswith("OK: r.zarr - structure, 2 segments (")


def test_debug_shows_the_traceback_and_plain_errors_are_one_line(tmp_path):
    (tmp_path / "plain").write_text("x")
    proc = mam_xr_cli("verify", "plain", cwd=tmp_path, check=False)
    assert proc.returncode == 1 and len(proc.stderr.strip().splitlines()) == 1
    assert proc.stderr.startswith("DAMAGED: plain - store='plain' is invalid") or "plain" in proc.stderr
    proc = mam_xr_cli("structure", "--out", "plain", cwd=tmp_path, check=False)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        "error: --out='plain' is invalid: expected a new path or a mam_xr store to replace with --overwrite; "
        "it is a file, not a mam_xr store, and mam_xr only replaces what it wrote"]
    proc = mam_xr_cli("--debug", "structure", "--out", "plain", cwd=tmp_path, check=False)
    assert proc.returncode == 2 and "Traceback (most recent call last)" in proc.stderr
    assert (tmp_path / "plain").read_text() == "x"
