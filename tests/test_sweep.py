"""Tests of mam_xr.sweep runs: failures, the theory fast path, resume after a kill, combination.

Spec validation and planning: tests/test_sweep_spec.py; back-ends and the summary table:
tests/test_sweep_backends.py.

The acceptance test runs a real 3-point χ sweep (NEST at scale 0.001, areas V1
and V2 with het_poisson_stat replacement, 200 ms, then the full analysis) once,
is killed after its first point, resumed on a 2-worker LocalCluster, and its
combined Dataset is compared with each point run alone through
``simulate`` + ``analyze`` + ``theory.integrate``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from mam_xr.errors import ParameterError
from mam_xr.params import Params
from mam_xr.sweep import SweepSpec, open_sweep, plan, run_sweep, sweep_status

ROOT = Path(__file__).resolve().parents[1]

TINY = {"scale": 0.001, "t_sim": 200.0, "areas_simulated": ["V1", "V2"], "threads": 1}
TINY_ANALYSIS = {"t_min_ms": 50.0}
CHIS = [1.0, 1.5, 2.0]


# --------------------------------------------------------------------------------------
# Theory-only sweeps: in-process, fast; failing points fail alone
# --------------------------------------------------------------------------------------

THEORY_BASE = {"preset": "tutorial", "overrides": {"scale": 0.001, "areas_simulated": ["V1", "V2"],
                                                    "theory": {"T": 20.0}}}


def test_theory_sweep_failures_stay_with_their_point(tmp_path):
    from mam_xr import theory
    from mam_xr.structure import build

    # g=5 is rejected by Params (before running); theory.T=20.05 passes Params but
    # integrate() raises at run time (T not a multiple of dt): both fail alone.
    spec = SweepSpec.from_dict({"name": "g-theory", "parameters": {"g": [-11.0, 5.0]},
                                     "base": THEORY_BASE, "run": "theory"})
    with pytest.warns(UserWarning, match=r"point \{'g': 5.0\} is invalid and is skipped: "
                                         r"network.connection.g=5.0 is invalid"):
        ds = run_sweep(spec, tmp_path / "g", progress=False)
    p = plan(spec)[0].params
    alone = theory.integrate(build(p), p, warn=False)
    xr.testing.assert_allclose(ds["theory_rate"].sel(g=-11.0, drop=True).reset_coords(drop=True).compute(),
                               alone["rate"].rename("theory_rate").reset_coords(drop=True), rtol=0, atol=0)
    assert ds["theory_rate"].sel(g=5.0).isnull().all()
    np.testing.assert_array_equal(ds["point_complete"].values, [True, False])
    assert "network.connection.g=5.0 is invalid" in json.loads(ds.attrs["errors"])['{"g": 5.0}']

    spec_t = SweepSpec.from_dict({"parameters": {"theory.T": [20.0, 20.05]}, "base": THEORY_BASE})
    with pytest.warns(UserWarning, match=r"failed: ParameterError: T=20.05 is invalid: expected a multiple of dt"):
        ds_t = run_sweep(spec_t, tmp_path / "T", progress=False)
    np.testing.assert_array_equal(ds_t["point_complete"].values, [True, False])
    status = sweep_status(tmp_path / "T")
    assert [e["status"] for e in status["points"]] == ["complete", "failed"]
    assert status["points"][1]["attempts"] == 1
    # Re-running re-tries only the failed point (and it fails again, alone).
    with pytest.warns(UserWarning, match="T=20.05 is invalid"):
        run_sweep(spec_t, tmp_path / "T", progress=False)
    again = sweep_status(tmp_path / "T")
    assert [e["attempts"] for e in again["points"]] == [1, 2]
    assert again["points"][0]["finished"] == status["points"][0]["finished"]


def test_strict_and_lock(tmp_path):
    spec = SweepSpec.from_dict({"parameters": {"g": [-11.0, 5.0]}, "base": THEORY_BASE})
    with pytest.raises(ParameterError, match=r"point \{'g': 5.0\}: network.connection.g=5.0 is invalid"):
        run_sweep(spec, tmp_path / "s", strict=True, progress=False)
    from mam_xr.sweep.driver import lock

    (tmp_path / "l").mkdir()
    with lock(tmp_path / "l"):
        # A second driver on the same directory is refused (flock; released on exit or death).
        code = ("import sys; from mam_xr.sweep import run_sweep, SweepSpec;"
                "run_sweep(SweepSpec(parameters={'g': (-11.0,)}), sys.argv[1], progress=False)")
        proc = subprocess.run([sys.executable, "-c", code, str(tmp_path / "l")], capture_output=True,
                              text=True, timeout=120)
    assert proc.returncode != 0
    assert "directory=" in proc.stderr and "no other process is running (locked by pid" in proc.stderr
    with pytest.raises(ParameterError, match=r"cluster='kubernetes' is invalid"):
        run_sweep(spec, tmp_path / "c", cluster="kubernetes")


THEORY_VARS = ["theory_rate", "theory_residual", "theory_mu", "theory_sigma", "theory_converged",
               "theory_max_abs_change_last_step"]


def _theory_values(ds) -> xr.Dataset:
    return ds[THEORY_VARS].reset_coords(drop=True).compute().drop_attrs()


@pytest.mark.parametrize("base, parameters, builds", [
    # down-scaled (DC drive): χ / χ_I by structure.rescale, a build per g
    (THEORY_BASE, {"chi": [1.0, 1.5, 1.9], "g": [-11.0, -12.0]}, 2),
    # full scale: one build; g rescaled, rate_ext in the Params only
    ({"preset": "default", "overrides": {"areas_simulated": ["V1", "V2"], "theory": {"T": 20.0},
                                          "replace_non_simulated_areas": "het_poisson_stat"}},
     {"chi": [1.0, 1.9], "g": [-11.0, -12.5], "rate_ext": [10.0, 11.5]}, 1),
])
def test_theory_fast_path_equals_rebuilding_each_point(tmp_path, base, parameters, builds):
    coupled = [{"parameter": "chi_I", "cases": [{"when": {"chi": 1.0}, "value": 1.0}, {"value": 2.0}]}]
    spec = SweepSpec.from_dict({"parameters": parameters, "coupled": coupled, "base": base, "run": "theory"})
    fast = run_sweep(spec, tmp_path / "fast", progress=False)
    slow = run_sweep(spec, tmp_path / "slow", progress=False, fast_theory=False)
    ex_fast = sweep_status(tmp_path / "fast")["execution"]
    ex_slow = sweep_status(tmp_path / "slow")["execution"]
    assert ex_fast["theory_path"] == "one structure, rescaled per point"
    assert ex_fast["structure_builds"] == builds
    assert ex_slow["theory_path"] == "per point" and ex_slow["theory_path_reason"] == "fast_theory=False"
    # one result file for the whole sweep vs one per point
    assert len(list((tmp_path / "fast" / "batches").iterdir())) == 1
    assert not list((tmp_path / "fast" / "points").glob("*/result.nc"))
    assert len(list((tmp_path / "slow" / "points").glob("*/result.nc"))) == int(np.prod(spec.shape))
    assert bool(fast["point_complete"].all()) and dict(fast.sizes) == dict(slow.sizes)
    xr.testing.assert_identical(fast["chi_I"], slow["chi_I"])
    a, b = _theory_values(fast), _theory_values(slow)
    np.testing.assert_array_equal(a["theory_converged"].values, b["theory_converged"].values)
    xr.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)
    # every point equals integrate() on its own freshly built structure (as the
    # per-point path with fast_theory=False, which builds every point's structure)
    from mam_xr import theory
    from mam_xr.structure import build

    for p in plan(spec):
        alone = theory.integrate(build(p.params), p.params, T=20.0, warn=False)
        for name in ("rate", "mu", "sigma", "residual"):
            got = fast[f"theory_{name}"].sel(p.coords).values
            np.testing.assert_allclose(got, alone[name].values, rtol=1e-9, atol=1e-12)
            np.testing.assert_array_equal(slow[f"theory_{name}"].sel(p.coords).values, alone[name].values)
        assert bool(fast["theory_converged"].sel(p.coords)) == bool(alone["converged"])


def test_theory_fast_path_resumes_and_falls_back(tmp_path):
    spec = SweepSpec.chi([1.0, 1.5], overrides=THEORY_BASE["overrides"], name="fast")
    run_sweep(spec, tmp_path / "s", progress=False)
    first = sweep_status(tmp_path / "s")
    assert [e["status"] for e in first["points"]] == ["complete"] * 2
    # extending the values computes the new point only; the others keep their batch file
    ds = run_sweep(SweepSpec.chi([1.0, 1.5, 2.0], overrides=THEORY_BASE["overrides"], name="fast"),
                   tmp_path / "s", progress=False)
    again = sweep_status(tmp_path / "s")
    assert [e["finished"] for e in again["points"][:2]] == [e["finished"] for e in first["points"]]
    assert again["points"][2]["result"] != again["points"][0]["result"]
    assert bool(ds["point_complete"].all()) and bool(ds["theory_rate"].notnull().any(["area", "pop"]).all())
    np.testing.assert_array_equal(ds["chi_I"].values, [1.0, 2.0, 2.0])
    # a lost batch file: its points count as failed and are run again
    shutil.rmtree(tmp_path / "s" / again["points"][2]["result"])
    assert [e["status"] for e in sweep_status(tmp_path / "s")["points"]] == ["complete", "complete", "failed"]
    ds = run_sweep(SweepSpec.chi([1.0, 1.5, 2.0], overrides=THEORY_BASE["overrides"]), tmp_path / "s",
                   progress=False)
    assert bool(ds["point_complete"].all())
    # parameters outside chi, chi_I, g, rate_ext: each point builds its structure
    spec_t = SweepSpec.from_dict({"parameters": {"chi": [1.0, 2.0], "theory.T": [10.0, 20.0]},
                                  "base": THEORY_BASE})
    ds_t = run_sweep(spec_t, tmp_path / "t", progress=False)
    ex = sweep_status(tmp_path / "t")["execution"]
    assert ex["theory_path"] == "per point"
    assert ex["theory_path_reason"] == "theory.T is not one of chi, chi_I, g, rate_ext"
    assert len(list((tmp_path / "t" / "points").glob("*/result.nc"))) == 4
    assert bool(ds_t["point_complete"].all())


# --------------------------------------------------------------------------------------
# Acceptance: 3-point χ sweep with NEST, killed after one point, resumed, compared
# --------------------------------------------------------------------------------------

def _tiny_spec() -> SweepSpec:
    return SweepSpec.chi(CHIS, overrides=TINY, run="theory+simulate+analyse",
                         analysis_options=TINY_ANALYSIS, theory_options={"T": 20.0}, name="chi-tiny")


def _wait_for(predicate, timeout: float, what: str):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def _complete(directory: Path) -> int:
    try:
        return json.loads((directory / "manifest.json").read_text())["counts"]["complete"]
    except (OSError, json.JSONDecodeError, KeyError):
        return 0


def _running(directory: Path) -> list[str]:
    """Labels of the points whose point.json says running."""
    out = []
    for f in (directory / "points").glob("*/point.json"):
        try:
            info = json.loads(f.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if info.get("status") == "running":
            out.append(info["label"])
    return out


def _point_processes(directory: Path) -> list[int]:
    """Pids of live processes whose command line names a point of ``directory``."""
    out = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if "_point_main" in cmd and str(directory) in cmd:
            out.append(int(pid))
    return out


@pytest.fixture(scope="module")
def resumed_sweep(tmp_path_factory):
    """Run the tiny sweep serially in a subprocess, kill it after its first point, resume."""
    pytest.importorskip("nest")
    directory = tmp_path_factory.mktemp("sweep") / "chi"
    spec_path = directory.parent / "spec.json"
    spec_path.write_text(_tiny_spec().to_json())
    proc = subprocess.Popen([sys.executable, str(ROOT / "runners" / "local_sweep.py"), str(spec_path),
                             str(directory), "--cluster", "serial", "--threads", "1", "--no-progress"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        # killed while its second point runs (that point's process has written point.json)
        _wait_for(lambda: _complete(directory) >= 1 and _running(directory), 180,
                  "the first point and the start of the second")
        os.kill(proc.pid, signal.SIGKILL)  # the driver only: its point process must notice
        proc.wait(timeout=30)
        _wait_for(lambda: not _point_processes(directory), 20, "the orphaned point process to exit")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    before = sweep_status(directory)
    started = {json.loads(f.read_text())["label"] for f in (directory / "points").glob("*/point.json")}
    t_resume = time.time()
    ds = run_sweep(spec_path, directory, cluster="local", n_workers=2, progress=False)
    after = sweep_status(directory)
    return {"directory": directory, "before": before, "after": after, "ds": ds, "t_resume": t_resume,
            "started": started}


def test_killed_sweep_resumes_only_missing_points(resumed_sweep):
    before, after = resumed_sweep["before"], resumed_sweep["after"]
    done_before = [e["label"] for e in before["points"] if e["status"] == "complete"]
    assert len(done_before) == 1
    assert sorted(e["status"] for e in before["points"]) in (
        ["complete", "pending", "running"], ["complete", "pending", "pending"])
    by_label = {e["label"]: e for e in after["points"]}
    assert [e["status"] for e in after["points"]] == ["complete"] * 3
    first = by_label[done_before[0]]
    # the complete point was not run again ...
    assert first["attempts"] == 1 and first["finished"] < resumed_sweep["t_resume"]
    # ... and the others were (the interrupted one for the second time)
    for e in after["points"]:
        if e["label"] != first["label"]:
            assert e["started"] >= resumed_sweep["t_resume"]
    interrupted = resumed_sweep["started"] - {first["label"]}
    assert len(interrupted) == 1
    assert {e["label"]: e["attempts"] for e in after["points"] if e["label"] != first["label"]} == {
        lab: 2 if lab in interrupted else 1 for lab in by_label if lab != first["label"]}
    manifest = json.loads((resumed_sweep["directory"] / "manifest.json").read_text())
    assert sorted(e["attempts"] for e in manifest["points"]) == [1, 1, 2]
    for e in after["points"]:
        run = resumed_sweep["directory"] / "points" / e["name"] / "run.zarr"
        from mam_xr.store import open_run

        assert open_run(run).status == "complete"
    # a third run has nothing to do
    t0 = time.time()
    ds = run_sweep(resumed_sweep["directory"] / ".." / "spec.json", resumed_sweep["directory"],
                   cluster="local", progress=False)
    assert all(e["finished"] < t0 for e in sweep_status(resumed_sweep["directory"])["points"])
    assert bool(ds["point_complete"].all())


def test_combined_dataset_coordinates(resumed_sweep):
    ds = resumed_sweep["ds"]
    assert ds.attrs["name"] == "chi-tiny"
    assert list(ds.indexes["chi"]) == CHIS and ds["chi"].dims == ("chi",)
    np.testing.assert_array_equal(ds["chi_I"].values, [1.0, 2.0, 2.0])
    assert ds["chi_I"].dims == ("chi",)
    assert ds["rates_rate"].dims == ("chi", "area", "pop")
    assert ds["theory_rate"].dims == ("chi", "area", "pop")
    assert isinstance(ds["rates_rate"].data, __import__("dask").array.Array)  # lazily loaded
    assert (resumed_sweep["directory"] / "sweep.zarr").is_dir()
    xr.testing.assert_identical(open_sweep(resumed_sweep["directory"])["rates_rate"].compute(),
                                ds["rates_rate"].compute())


@pytest.mark.parametrize("i", range(len(CHIS)))
def test_points_equal_running_each_alone(resumed_sweep, tmp_path, i):
    import mam_xr
    from mam_xr import theory
    from mam_xr.structure import build

    chi = CHIS[i]
    params = Params.tutorial(chi=chi, **TINY)  # chi_I follows the tutorial rule, as the sweep's coupling
    sweep = resumed_sweep["ds"].sel(chi=chi, drop=True)
    entry = resumed_sweep["after"]["points"][i]
    assert entry["label"] == params.label()
    run = mam_xr.simulate(params, store=tmp_path / "alone.zarr", progress=False)
    stats = mam_xr.analyze(run, **TINY_ANALYSIS)
    th = theory.integrate(build(params), params, T=20.0, warn=False)
    names = {"rates": ["rate", "n_spikes"], "irregularity": ["lvr", "cv_isi"], "synchrony": ["synchrony"],
             "correlation": ["corrcoef"], "rate_distribution": ["mean", "sd"]}
    expected = xr.Dataset({(v if v == stat else f"{stat}_{v}"): stats[stat][v].drop_vars("exists", errors="ignore")
                           for stat, vs in names.items() for v in vs})
    expected["theory_rate"] = th["rate"].drop_vars(["exists", "simulated"])
    actual = sweep[list(expected.data_vars)].reset_coords(drop=True).compute()
    xr.testing.assert_allclose(actual.drop_attrs(), expected.reset_coords(drop=True).drop_attrs(),
                               rtol=0, atol=0)
    # time series too: the binned rate of every population over time
    ts = stats["rate_time_series"]["rate"].rename(time="rate_time_series_time")
    np.testing.assert_array_equal(sweep["rate_time_series_rate"].values, ts.values)


# --------------------------------------------------------------------------------------
# Other clusters: the SLURM job script and an MPI-launched sweep
# --------------------------------------------------------------------------------------

def test_slurm_job_runs_one_point_with_its_threads():
    jobqueue = pytest.importorskip("dask_jobqueue")
    from mam_xr.sweep import slurm_options

    cluster = jobqueue.SLURMCluster(**slurm_options(threads=4, memory=3.2e9, queue="normal", account="abc",
                                                    job_extra_directives=["--constraint=mc"]))
    try:
        script = cluster.job_script()
    finally:
        cluster.close()
    for line in ("#SBATCH -p normal", "#SBATCH -A abc", "#SBATCH --cpus-per-task=4", "#SBATCH --mem=4G",
                 "#SBATCH --constraint=mc"):
        assert line in script.splitlines()
    assert "--nthreads 1" in script  # one point at a time per job


def test_mpi_runner_theory_sweep(tmp_path):
    pytest.importorskip("dask_mpi")
    pytest.importorskip("mpi4py")
    mpiexec = shutil.which("mpiexec", path=f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}")
    if mpiexec is None:
        pytest.skip("no mpiexec")
    spec = SweepSpec.chi([1.0, 1.9], overrides={"scale": 0.001, "areas_simulated": ["V1", "V2"]},
                         theory_options={"T": 20.0}, name="chi-mpi")
    (tmp_path / "spec.json").write_text(spec.to_json())
    env = {**os.environ, "MAM_XR_DATA_DIR": os.path.abspath(os.environ["MAM_XR_DATA_DIR"])}
    proc = subprocess.run([mpiexec, "-n", "3", sys.executable, str(ROOT / "runners" / "mpi_sweep.py"),
                           str(tmp_path / "spec.json"), str(tmp_path / "mpi"), "--no-progress"],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "2 complete, 0 failed" in proc.stdout
    status = sweep_status(tmp_path / "mpi")
    assert status["execution"]["cluster"] == "mpi" and status["execution"]["n_workers"] == 1
    ds = open_sweep(tmp_path / "mpi")
    np.testing.assert_array_equal(ds["chi_I"].values, [1.0, 2.0])
    assert bool(ds["point_complete"].all()) and ds["theory_rate"].notnull().any()
