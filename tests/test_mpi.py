"""One NEST simulation over MPI ranks writing one run store; job scripts; Dask on clusters.

Tests marked ``mpi`` need ``mpirun`` and a NEST built with MPI
(runners/build_nest_mpi.sh; runners/ci_mpi.sh builds it and runs them).  They
start every simulation in a subprocess (``mpirun ... python runners/run_mpi.py``)
so that this process never initialises MPI itself.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import zarr

from mam_xr import parallel, store
from mam_xr.errors import StoreError
from mam_xr.flat import population_labels

ROOT = Path(__file__).resolve().parents[1]
RUNNERS = ROOT / "runners"
RUN_MPI = RUNNERS / "run_mpi.py"
LABELS = population_labels()
PYTHON = os.environ.get("MAM_XR_MPI_PYTHON", sys.executable)

#: The tutorial network (all 32 areas, chi = 1) at a small scale: ~8,200 neurons.
SMALL = {"network": {"scale": 0.002}, "simulation": {"t_sim": 500.0, "segment": 100.0, "seed": 1}}
#: Two areas only, for the failure tests (fast to build).
TWO_AREAS = {"network": {"scale": 0.002},
             "simulation": {"t_sim": 400.0, "segment": 100.0, "areas_simulated": ["V1", "V2"]}}


def _clean_env(**extra) -> dict:
    """The environment for a launched job, without any MPI launcher variables
    inherited from this process (a nested mpirun would think it runs inside a job)."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("OMPI_", "PMIX_", "PMI_", "MPI_LOCALNRANKS", "MPI_LOCALRANKID",
                                "OPAL_", "PRTE_", "SLURM_"))}
    env.update({k: str(v) for k, v in extra.items()})
    env["PYTHONUNBUFFERED"] = "1"
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def _nest_mpi_status() -> tuple[bool, str]:
    """(have_mpi, reason) for the NEST of PYTHON, probed in a subprocess."""
    code = "import nest, json; print(json.dumps(nest.build_info.get('have_mpi', False)))"
    try:
        out = subprocess.run([PYTHON, "-c", code], capture_output=True, text=True, timeout=120,
                             env=_clean_env(PYNEST_QUIET=1))
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, f"cannot start {PYTHON}: {exc}"
    if out.returncode != 0:
        return False, f"NEST is not importable by {PYTHON}: {out.stderr.strip()[-200:]}"
    have = json.loads(out.stdout.strip().splitlines()[-1])
    return bool(have), ("" if have else
                        f"the NEST of {PYTHON} has no MPI (nest.build_info['have_mpi'] is False): build one "
                        "with runners/build_nest_mpi.sh and run these tests with that venv's python "
                        "(runners/ci_mpi.sh does both)")


def _require_mpi():
    if shutil.which("mpirun") is None:
        pytest.skip("mpirun not found (Debian: apt-get install openmpi-bin libopenmpi-dev)")
    have, reason = _NEST_MPI
    if not have:
        pytest.skip(reason)


_NEST_MPI: tuple[bool, str] = (False, "not probed")


@pytest.fixture(scope="module", autouse=True)
def _probe(request):
    global _NEST_MPI
    if any(item.get_closest_marker("mpi") for item in request.session.items
           if item.module is request.module):
        _NEST_MPI = _nest_mpi_status()


def _write_config(tmp: Path, values: dict, name="config.json") -> Path:
    path = tmp / name
    path.write_text(json.dumps(values))
    return path


def _run(cmd, timeout=600, **env):
    """Run a launcher command in its own process group; kill the group on timeout."""
    proc = subprocess.Popen(cmd, cwd=ROOT, env=_clean_env(**env), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f"{' '.join(map(str, cmd))} did not finish in {timeout} s:\n{out[-3000:]}")
    return proc.returncode, out


def _simulate(tmp: Path, values: dict, out: str, n_ranks: int | None, threads: int = 1, **env):
    config = _write_config(tmp, values, name=f"{out}.json")
    store_path = tmp / out
    cmd = [PYTHON, str(RUN_MPI), str(config), "--out", str(store_path), "--threads", str(threads),
           "--no-progress"]
    if n_ranks is not None:
        cmd = parallel.mpirun_command(n_ranks) + cmd
    code, text = _run(cmd, **env)
    return code, text, store_path


# --------------------------------------------------------------------------------------
# 2 ranks x 1 thread against single-process runs
# --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The small tutorial network: 2 ranks x 1 thread, 1 process x 2 threads (the
    same 2 virtual processes), and 1 process x 1 thread with seeds 1 and 2."""
    _require_mpi()
    tmp = tmp_path_factory.mktemp("mpi")
    out = {}
    for key, n_ranks, threads, seed in (("mpi2x1", 2, 1, 1), ("proc1x2", None, 2, 1),
                                        ("proc1x1", None, 1, 1), ("proc1x1_seed2", None, 1, 2)):
        values = json.loads(json.dumps(SMALL))
        values["simulation"]["seed"] = seed
        code, text, path = _simulate(tmp, values, f"{key}.zarr", n_ranks, threads)
        assert code == 0, text[-3000:]
        out[key] = store.open_run(path)
    return out


def _rates(run) -> np.ndarray:
    """Per-population rates (spikes/s) over the whole run, flat order."""
    sp = run.spikes()
    n = np.asarray(run.root["spikes"].attrs["n_neurons"], dtype=float)
    counts = np.bincount(sp.pop, minlength=len(LABELS)).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, counts / n / (float(run.attrs["t_sim"]) * 1e-3), np.nan)


@pytest.mark.mpi
def test_mpi_store_is_complete_with_ranks_and_threads_recorded(runs):
    run = runs["mpi2x1"]
    a = run.attrs
    assert a["status"] == "complete"
    assert (a["n_ranks"], a["threads"], a["n_vp"]) == (2, 1, 2)
    assert run.ranks == ["rank0", "rank1"]
    report = run.rank_report()
    assert [i["status"] for i in report] == ["complete", "complete"]
    assert [i["segments"] for i in report] == [5, 5]
    assert len(run.segments()) == a["n_segments_planned"] == 5
    # the store's spike total is the sum of what each rank wrote, and what a read returns
    per_rank = [int(run.root["ranks"][f"rank{r}"].attrs["n_spikes"]) for r in (0, 1)]
    assert all(n > 0 for n in per_rank)
    assert a["n_spikes"] == sum(per_rank) == run.n_spikes() == len(run.spikes())


@pytest.mark.mpi
def test_mpi_counts_equal_the_single_process_run(runs):
    mpi, single = runs["mpi2x1"].attrs, runs["proc1x1"].attrs
    assert mpi["n_neurons_created"] == single["n_neurons_created"] > 8000
    assert mpi["nest"]["network_size"] == single["nest"]["network_size"]
    assert mpi["nest"]["num_connections"] == single["nest"]["num_connections"]
    assert mpi["n_synapses_planned"] == single["n_synapses_planned"]
    # NEST counts connections per rank: both ranks hold a share, the shares add up
    local = [runs["mpi2x1"].root["ranks"][f"rank{r}"].attrs["num_connections_local"] for r in (0, 1)]
    assert mpi["nest"]["num_connections_per_rank"] == local
    assert min(local) > 0.3 * sum(local) and sum(local) == single["nest"]["num_connections"]
    np.testing.assert_array_equal(runs["mpi2x1"].root["spikes"].attrs["n_neurons"],
                                  runs["proc1x1"].root["spikes"].attrs["n_neurons"])


@pytest.mark.mpi
def test_every_neuron_s_spikes_are_present_exactly_once(runs):
    run = runs["mpi2x1"]
    n = np.asarray(run.root["spikes"].attrs["n_neurons"])
    sp = run.spikes()
    pop, senders, steps = sp.pop, sp.senders.astype(np.int64), sp.steps.astype(np.int64)
    assert np.all(senders >= 0) and np.all(senders < n[pop])
    # no (population, sender, time) twice across ranks
    key = (pop.astype(np.int64) * 2**20 + senders) * 2**24 + steps
    assert np.unique(key).size == key.size
    # each neuron lives on exactly one rank: the ranks' sender sets are disjoint
    neurons = []
    for r in run.ranks:  # (pop, sender) of each rank's spikes, from its offsets table
        g = run.root["spikes"][r]
        off, se = g["offsets"][:], g["senders"][:].astype(np.int64)
        assert off[-1, -1] == se.size
        ids = [np.repeat(np.arange(len(LABELS)), np.diff(off[s])) * 2**20 + se[off[s, 0]:off[s, -1]]
               for s in range(off.shape[0])]
        neurons.append(np.unique(np.concatenate(ids)))
    assert np.intersect1d(neurons[0], neurons[1]).size == 0
    # 2 ranks x 1 thread and 1 process x 2 threads are the same 2 virtual processes:
    # NEST gives the identical network and spikes
    other = runs["proc1x2"].spikes()
    np.testing.assert_array_equal(sp.offsets, other.offsets)
    np.testing.assert_array_equal(sp.steps, other.steps)
    np.testing.assert_array_equal(sp.senders, other.senders)


@pytest.mark.mpi
def test_mpi_statistics_are_within_the_seed_to_seed_band(runs):
    """The 2-rank run is another realisation (2 virtual processes draw other random
    numbers than 1): compare it to the single-process run as seed 2 compares to seed 1."""
    r_mpi, r1, r2 = (_rates(runs[k]) for k in ("mpi2x1", "proc1x1", "proc1x1_seed2"))
    ok = np.isfinite(r1) & np.isfinite(r_mpi) & np.isfinite(r2)
    mean = {k: float(np.nanmean(v[ok])) for k, v in (("mpi", r_mpi), ("1", r1), ("2", r2))}
    band = abs(mean["1"] - mean["2"])
    assert abs(mean["mpi"] - mean["1"]) <= 3 * band + 0.05 * mean["1"], mean

    def med_rel(a, b):
        active = (a + b) > 0
        return float(np.median(np.abs(a - b)[active] / (0.5 * (a + b)[active])))

    def corr(a, b):
        return float(np.corrcoef(a, b)[0, 1])

    seed_diff, seed_corr = med_rel(r1[ok], r2[ok]), corr(r1[ok], r2[ok])
    assert med_rel(r_mpi[ok], r1[ok]) <= 1.5 * seed_diff + 0.02, (med_rel(r_mpi[ok], r1[ok]), seed_diff)
    assert corr(r_mpi[ok], r1[ok]) >= seed_corr - 0.05, (corr(r_mpi[ok], r1[ok]), seed_corr)
    # a lost or doubled rank would halve or double the rate: the band is far narrower
    assert 0.8 < mean["mpi"] / mean["1"] < 1.25


# --------------------------------------------------------------------------------------
# Failures: a killed rank, the job script's finalize step
# --------------------------------------------------------------------------------------

@pytest.mark.mpi
@pytest.mark.parametrize("mode", ["exit", "raise"])
def test_killed_rank_leaves_the_store_not_complete(tmp_path, mode):
    _require_mpi()
    code, text, path = _simulate(tmp_path, TWO_AREAS, "killed.zarr", 2, 1,
                                 **{parallel.TEST_HOOK: f"1:1:{mode}"})
    assert code != 0, text[-3000:]
    root = zarr.open_group(str(path), mode="r")
    assert root.attrs["status"] in ("running", "failed")  # never complete
    assert root.attrs["status"] != "complete"
    rank1 = dict(root["ranks"]["rank1"].attrs)
    assert rank1["status"] == ("failed" if mode == "raise" else "running")
    with pytest.raises(StoreError, match=r"incomplete.*missing segments 2-3 \(200-400 ms\).*rank 1: "):
        store.open_run(path)
    with pytest.warns(UserWarning, match="rank 1"):
        run = store.open_run(path, allow_incomplete=True)
    # only the segments both ranks committed are read
    assert len(run.segments()) == 2
    sp = run.spikes()
    assert len(sp) > 0 and sp.steps.max() <= 2000
    # the job script's last step settles the status and keeps the reason
    assert parallel.finalize(path, exit_code=code) == "failed"
    root = zarr.open_group(str(path), mode="r")
    assert root.attrs["status"] == "failed"
    assert f"exit code {code}" in root.attrs["error"] and "rank 1" in root.attrs["error"]
    if mode == "raise":
        assert "rank 1 stops after segment 1" in root.attrs["error"]
    # finalize of a complete store changes nothing (tested on the one above: stays failed)
    assert parallel.finalize(path) == "failed"


@pytest.mark.mpi
def test_slurm_template_runs_and_settles_the_store(tmp_path):
    """runners/slurm_mpi.sbatch end to end, with `srun` provided by mpirun (no SLURM
    here): a complete run stays complete, a run whose rank dies ends up failed."""
    _require_mpi()
    shim = tmp_path / "bin"
    shim.mkdir()
    mpirun = " ".join(parallel.mpirun_command(2))
    (shim / "srun").write_text("#!/usr/bin/env bash\n# srun stand-in for a machine without SLURM\n"
                               "args=(); for a in \"$@\"; do [[ $a == --cpu-bind=* ]] || args+=(\"$a\"); done\n"
                               f"exec {mpirun} \"${{args[@]}}\"\n")
    (shim / "srun").chmod(0o755)
    venv = Path(PYTHON).parent.parent  # the template activates $MAM_XR_VENV
    if not (venv / "bin" / "activate").is_file():
        pytest.skip(f"{PYTHON} is not in a virtualenv (the template sources $MAM_XR_VENV/bin/activate)")
    config = _write_config(tmp_path, TWO_AREAS)
    base = dict(PATH=f"{shim}:{os.environ['PATH']}", MAM_XR_VENV=str(venv),
                MAM_XR_HOME=str(ROOT), MAM_XR_PRESET="tutorial", SLURM_CPUS_PER_TASK=1)
    for name, hook, expect in (("ok.zarr", "", "complete"), ("dies.zarr", "1:2:exit", "failed")):
        env = dict(base, **({parallel.TEST_HOOK: hook} if hook else {}))
        code, text = _run(["bash", str(RUNNERS / "slurm_mpi.sbatch"), str(config), str(tmp_path / name)],
                          **env)
        root = zarr.open_group(str(tmp_path / name), mode="r")
        assert root.attrs["status"] == expect, text[-3000:]
        assert (code == 0) == (expect == "complete")
        assert f"status={expect}" in text


def test_mpirun_with_a_nest_without_mpi_is_refused(tmp_path):
    """Upstream issue #18: ranks that cannot talk to each other must not all write one
    store.  A launcher that says 2 processes while NEST sees 1 is refused before the
    network is built (simulated here by the launcher's variable, no mpirun needed)."""
    code, text, path = _simulate(tmp_path, TWO_AREAS, "refused.zarr", None, 1,
                                 OMPI_COMM_WORLD_SIZE=2)
    assert code == 1, text[-2000:]
    assert "the launcher started 2 processes but NEST reports 1" in text
    assert not path.exists()


def test_store_reports_a_rank_that_never_wrote(tmp_path):
    """A 2-rank store where rank 1 died before its first segment: nothing can be read,
    the error names the rank, finalize marks it failed."""
    from conftest import reference_structure

    s = reference_structure("downscaled_tutorial")
    path = tmp_path / "run.zarr"
    root = store.create_run(path, structure=s, dt=0.1, t_sim=200.0, n_segments_planned=2,
                            n_ranks=2, threads=1, n_vp=2)
    store.set_rank_status(root, 0, "running", host="a")
    w = store.SpikeWriter(root, rank=0)
    w.append_segment(np.array([5, 7]), np.array([0, 1]), np.array([0, 0]), 0.0, 100.0)
    with pytest.raises(StoreError, match=r"status='running'.*no segments; missing segments 0-1 "
                                         r"\(0-200 ms\); rank 0: running, 1/2 segments on a; "
                                         r"rank 1: missing, 0/2 segments"):
        store.open_run(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert len(store.open_run(path, allow_incomplete=True).spikes()) == 0
    assert parallel.finalize(path, exit_code=137) == "failed"
    err = zarr.open_group(str(path), mode="r").attrs["error"]
    assert err.startswith("the MPI job ended (exit code 137) before every rank finished")
    assert "rank 1: missing" in err


# --------------------------------------------------------------------------------------
# Dask on clusters
# --------------------------------------------------------------------------------------

def test_dask_jobqueue_slurm_job_script(tmp_path, monkeypatch):
    """Dry run of the analysis cluster: the worker job script SLURMCluster would submit."""
    pytest.importorskip("dask_jobqueue", reason="dask-jobqueue is not installed (pip install dask-jobqueue)")
    sys.path.insert(0, str(RUNNERS))
    try:
        import dask_cluster
    finally:
        sys.path.remove(str(RUNNERS))
    monkeypatch.chdir(tmp_path)  # the log directory is made relative to the cwd
    import copy

    import dask.config

    saved = copy.deepcopy(dask.config.config)
    try:
        script = dask_cluster.job_script(queue="batch", account="my-project", walltime="00:45:00")
    finally:  # keep the merged configuration out of other tests
        dask.config.config.clear()
        dask.config.config.update(saved)
    lines = script.splitlines()
    directives = [ln for ln in lines if ln.startswith("#SBATCH")]
    assert "#SBATCH -J mam_xr-dask" in directives
    assert "#SBATCH -p batch" in directives and "#SBATCH -A my-project" in directives
    assert "#SBATCH --cpus-per-task=8" in directives and "#SBATCH -n 1" in directives
    assert "#SBATCH -t 00:45:00" in directives
    assert any(d.startswith("#SBATCH --mem=") for d in directives)
    assert any(ln.startswith('source "${MAM_XR_VENV:-$HOME/venv-mam_xr}/bin/activate"') for ln in lines)
    worker = [ln for ln in lines if "distributed.cli.dask_worker" in ln]
    assert len(worker) == 1
    cmd = worker[0].split()
    assert cmd[0] == "python"  # the activated venv's python, not this interpreter's path
    assert cmd[cmd.index("--nworkers") + 1] == "4" and cmd[cmd.index("--nthreads") + 1] == "2"
    assert cmd[cmd.index("--memory-limit") + 1].endswith("GiB")
    assert (tmp_path / "dask-logs").is_dir()


def test_slurm_template_is_valid_bash_with_its_directives():
    text = (RUNNERS / "slurm_mpi.sbatch").read_text()
    assert subprocess.run(["bash", "-n", str(RUNNERS / "slurm_mpi.sbatch")]).returncode == 0
    directives = dict(ln[len("#SBATCH "):].split("=", 1) for ln in text.splitlines()
                      if ln.startswith("#SBATCH --") and "=" in ln)
    assert int(directives["--nodes"]) * 128 >= 1400  # >= 1.4 TB at 128 GB per node (docs/cluster.md)
    assert directives["--mem"] == "0" and directives["--signal"].startswith("TERM@")
    assert "python -m mam_xr.parallel finalize" in text
    assert os.stat(RUNNERS / "slurm_mpi.sbatch").st_mode & stat.S_IXUSR


@pytest.mark.mpi
def test_dask_mpi_analysis_after_the_job(runs, tmp_path):
    """runners/analyze_cluster.py --cluster mpi: rank 0 the scheduler, rank 1 the
    client, rank 2 a worker; the rates equal an in-process analysis of the same store."""
    probe = subprocess.run([PYTHON, "-c", "import dask_mpi, mpi4py"], capture_output=True,
                           env=_clean_env())
    if probe.returncode != 0:
        pytest.skip("dask-mpi / mpi4py are not importable (pip install dask-mpi mpi4py)")
    src = Path(runs["mpi2x1"].path)
    copy = tmp_path / "run.zarr"
    shutil.copytree(src, copy)
    code, text = _run(parallel.mpirun_command(3) + [PYTHON, str(RUNNERS / "analyze_cluster.py"),
                                                   str(copy), "--cluster", "mpi",
                                                   "--statistics", "rates", "--t-min-ms", "100"],
                      timeout=600)
    assert code == 0, text[-3000:]
    assert "mean population rate" in text
    import mam_xr

    import xarray as xr

    cached = xr.open_zarr(str(copy), group="analysis/rates", consolidated=False)  # written by the job
    assert cached.attrs["t_min_ms"] == 100.0
    fresh = mam_xr.analyze(str(src), "rates", store=False, recompute=True, t_min_ms=100.0)["rates"]
    np.testing.assert_allclose(cached["rate"].values, fresh["rate"].values, equal_nan=True)
