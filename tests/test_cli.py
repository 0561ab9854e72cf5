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


# --- polish: version, defaults in --help, theory --T/--dt/--out, no Zarr warnings, N/K scaling ---

def test_version_prints_mam_xr_nest_and_brian2(tmp_path):
    from importlib.metadata import version

    import mam_xr

    out = mam_xr_cli("--version", cwd=tmp_path).stdout.splitlines()
    assert out == [f"mam_xr {mam_xr.__version__}", f"NEST {version('nest-simulator')}",
                   f"Brian2 {version('brian2')}"]


def test_every_option_shows_its_default_in_help():
    import typer

    from mam_xr.cli import app

    shown, missing = {}, []

    def walk(command, parent, path):
        ctx = command.context_class(command, info_name=command.name, parent=parent)
        for param in command.params:
            if param.param_type_name == "option" and param.name != "help":
                text = param.get_help_record(ctx)[1]
                where = f"{' '.join(path)} {param.opts[0]}"
                if "[default: " in text:
                    shown[where] = text.split("[default: ")[1].rstrip("]")
                else:
                    missing.append(where)
        for name, sub in getattr(command, "commands", {}).items():
            walk(sub, ctx, [*path, name])

    walk(typer.main.get_command(app), None, ["mam-xr"])
    assert missing == []
    assert len(shown) > 60
    # the preset-dependent ones say what each preset gives
    assert shown["mam-xr run --scale"] == "(tutorial 0.005, default 1)"
    assert shown["mam-xr run --chi"] == "(tutorial 1, default 1.9)"
    assert shown["mam-xr run --replace"] == "(tutorial het_poisson_stat, default none)"
    assert shown["mam-xr run --t-sim"] == "(2000)" and shown["mam-xr run --overwrite"] == "(off)"
    assert shown["mam-xr plan --n-scaling"] == "(--scale)" and shown["mam-xr run --analysis"] == "analysis"
    assert shown["mam-xr theory --T"] == "(50)" and shown["mam-xr theory --dt"] == "(0.1)"
    assert shown["mam-xr --version"] == "(off)"


def test_theory_takes_T_and_dt_and_writes_a_store_it_replaces_only_with_overwrite(tmp_path):
    import xarray as xr

    from mam_xr.store import store_kind

    out = mam_xr_cli("theory", "--T", "20", "--dt", "0.2", "--out", "t.zarr", cwd=tmp_path).stdout
    assert "integration (T = 20 ms, dt = 0.2 ms): mean rate 29.5884 spikes/s, NOT converged" in out
    assert "fixed point: mean rate 29.5884 spikes/s, converged True, stable True" in out
    assert store_kind(tmp_path / "t.zarr") == "theory"
    th = xr.open_zarr(tmp_path / "t.zarr", group="theory", consolidated=False).load()
    assert th.sizes["time"] == 101 and float(th["time"][-1]) == pytest.approx(20.0)
    assert float(th["time"][1]) == pytest.approx(0.2) and th.attrs["T_ms"] == 20.0
    fp = xr.open_zarr(tmp_path / "t.zarr", group="fixed_point", consolidated=False).load()
    assert float(fp["rate"].mean()) == pytest.approx(29.5884, abs=1e-4)
    assert list(th["area"].values[:2]) == ["V1", "V2"]
    # an existing --out: refused before any computation, replaced with --overwrite
    proc = mam_xr_cli("theory", "--out", "t.zarr", cwd=tmp_path, check=False)
    assert proc.returncode == 2 and "integration" not in proc.stdout
    assert proc.stderr.strip() == ("error: --out='t.zarr' is invalid: expected a path that does not "
                                   "exist yet (or --overwrite)")
    out = mam_xr_cli("theory", "--no-fixed-point", "--out", "t.zarr", "--overwrite", cwd=tmp_path).stdout
    assert "written to t.zarr (groups theory)" in out
    assert sorted(p.name for p in (tmp_path / "t.zarr").iterdir()) == ["theory", "zarr.json"]
    # what mam_xr did not write is never replaced
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("x")
    proc = mam_xr_cli("theory", "--out", "mine", "--overwrite", cwd=tmp_path, check=False)
    assert proc.returncode == 2 and "it is not a mam_xr store" in proc.stderr
    assert (tmp_path / "mine" / "thesis.tex").read_text() == "x"
    proc = mam_xr_cli("theory", "--T", "-1", cwd=tmp_path, check=False)
    assert proc.returncode == 2 and "theory.T=-1.0 is invalid" in proc.stderr


def test_run_prints_no_zarr_warning_and_takes_n_and_k_scaling(tmp_path):
    proc = subprocess.run([sys.executable, "-W", "always", "-m", "mam_xr.cli", "run", "--scale", "0.001",
                           "--n-scaling", "0.002", "--t-sim", "100", "--areas", "V1", "--no-report",
                           "--no-progress", "--out", "r.zarr"],
                          cwd=tmp_path, capture_output=True, text=True, env=dict(os.environ), timeout=600)
    assert proc.returncode == 0, proc.stderr
    warned = [line for line in proc.stderr.splitlines() if "Warning" in line]
    assert len(warned) == 1 and "within the default 500 ms transient" in warned[0], proc.stderr
    assert "site-packages/zarr" not in proc.stderr
    run = open_run(tmp_path / "r.zarr")
    from mam_xr.params import Params

    net = Params.from_dict(run.params).network
    assert (net.N_scaling, net.K_scaling) == (0.002, 0.001)
    v1 = run.structure()["neurons"].sel(area="V1")
    assert int(run.n_neurons.sum()) == int(np.floor(v1).sum())
    # neurons follow N_scaling = 0.002 (197.94 in V1 at 0.001), indegrees K_scaling = 0.001
    assert float(v1.sum()) == pytest.approx(395.8719, abs=1e-3)
    v1_v1 = run.structure()["indegree"].sel(area="V1", source_area="V1")
    assert float(v1_v1.sum()) == pytest.approx(15.3209, abs=1e-3)


@pytest.mark.parametrize("flag, value", [("--n-scaling", "0"), ("--k-scaling", "1.5"),
                                         ("--k-scaling", "nan"), ("--n-scaling", "-0.1")])
def test_n_and_k_scaling_outside_0_1_are_refused_by_flag(tmp_path, flag, value):
    for command in ("run", "plan"):
        proc = mam_xr_cli(command, flag, value, cwd=tmp_path, check=False)
        assert proc.returncode == 2
        shown = "nan" if value == "nan" else repr(float(value))
        assert proc.stderr.strip() == f"error: {flag}={shown} is invalid: expected a down-scaling factor in (0, 1]"
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_plan_takes_n_and_k_scaling(tmp_path):
    plan = json.loads(mam_xr_cli("plan", "--scale", "0.001", "--n-scaling", "0.002", "--engine", "nest",
                                 "--json", cwd=tmp_path).stdout)
    assert (plan["N_scaling"], plan["K_scaling"]) == (0.002, 0.001)
    assert plan["neurons"] == 8139


def test_run_computes_the_theory_once(tmp_path, monkeypatch):
    """The planner's memory check uses the run's own mean-field integration."""
    from typer.testing import CliRunner

    from mam_xr import theory
    from mam_xr.cli import app

    calls = []
    real = theory.integrate

    def counting(*args, **kwargs):
        calls.append(kwargs.get("replace"))
        return real(*args, **kwargs)

    monkeypatch.setattr(theory, "integrate", counting)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["run", "--scale", "0.001", "--t-sim", "100", "--areas", "V1",
                                      "--no-progress", "--no-analysis", "--no-report", "--out", "r.zarr"])
    assert result.exit_code == 0, result.output
    assert calls == [None]
    import xarray as xr

    stored = xr.open_zarr(tmp_path / "r.zarr", group="theory", consolidated=False).load()
    assert f"mean-field prediction: {float(stored['rate'].mean()):.4f} spikes/s" in result.output
