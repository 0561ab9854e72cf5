"""One NEST simulation over MPI ranks, writing one run store (docs/cluster.md).

:func:`mam_xr.simulation.simulate` calls the functions here; they are no-ops
beyond bookkeeping for a single process.  Started as
``mpirun -n R python runners/run_mpi.py CONFIG.json --out STORE`` (or any
script that calls ``simulate()`` under ``mpirun``/``srun``), every rank runs the
same code and NEST distributes the neurons over R ranks × T threads.

Design
------
* **Structure on every rank.**  Every rank builds the structure Dataset itself
  (``mam_xr.structure.build``): it is deterministic (same parameters and data
  files give bit-identical arrays) and takes well under a second, whereas
  broadcasting it would need mpi4py next to NEST's own MPI and a serialisation
  step for the same result.  NEST then creates only each rank's local neurons
  and synapses from identical Create/Connect calls.
* **One store, no shared writes.**  Rank 0 creates the store (attrs, structure,
  ``spikes/``, ``ranks/``) before a barrier; then each rank ``r`` writes only
  ``spikes/rank<r>/`` (its local neurons' spikes, appended per segment) and the
  attrs-only group ``ranks/rank<r>`` (status, host, pid, error, spike count).
  The root attrs are written by rank 0 alone, so no two processes ever
  rewrite the same Zarr metadata file.
* **Complete only when every rank finished.**  Each rank marks ``ranks/rank<r>``
  complete after its last segment; a barrier; rank 0 re-reads every rank's
  state and sets the root status ``complete`` only if all R ranks report
  ``complete`` with every planned segment committed; a second barrier so that
  no rank returns before the store says so.  A rank that raises marks itself
  ``failed`` (rank 0 marks the root); a rank killed outright writes nothing,
  and its peers are stopped by the launcher, so the store stays ``running``
  -- never ``complete``.  :func:`finalize` (run by the job script after
  ``mpirun``/``srun`` returns) turns such a store into ``failed`` with the
  state of every rank.
* **Reading is independent of R**: :class:`mam_xr.store.RunStore` merges the
  ranks and reads only segments every rank committed.

A test hook, the environment variable ``MAM_XR_TEST_FAIL_RANK=R:S[:MODE]``,
makes rank R stop after committing segment S (MODE ``exit``: ``os._exit(17)``
as a crash, the default; ``kill``: SIGKILL itself; ``raise``: a Python
error).  It exists for tests/test_mpi.py.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import sys
import time
from pathlib import Path

from . import store as _store
from .errors import ParameterError, SimulationError, StoreError, invalid

#: Environment variables that launchers set to the rank / world size.
RANK_VARS = ("OMPI_COMM_WORLD_RANK", "PMIX_RANK", "PMI_RANK", "MV2_COMM_WORLD_RANK", "SLURM_PROCID")
SIZE_VARS = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "MV2_COMM_WORLD_SIZE", "SLURM_NTASKS")
#: Test hook (see module docstring).
TEST_HOOK = "MAM_XR_TEST_FAIL_RANK"


# --------------------------------------------------------------------------------------
# Who am I (before NEST is imported)
# --------------------------------------------------------------------------------------

def _env_int(names) -> int | None:
    for name in names:
        value = os.environ.get(name)
        if value is not None and value.strip().isdigit():
            return int(value)
    return None


def launcher_rank() -> int:
    """This process's rank as set by mpirun/srun (0 when not launched so).

    Known before NEST (and MPI) is initialised, so that checks that only rank 0
    may make (does the store exist yet?) happen before any work."""
    return _env_int(RANK_VARS) or 0


def launcher_size() -> int:
    """The number of processes mpirun/srun started (1 when not launched so)."""
    return _env_int(SIZE_VARS) or 1


def nest_has_mpi() -> bool:
    """Whether the importable NEST was built with MPI (``build_info['have_mpi']``)."""
    try:
        import nest
    except ImportError:
        return False
    return bool(getattr(nest, "build_info", {}).get("have_mpi", False))


def mpirun_command(n_ranks: int, *, mpirun: str = "mpirun") -> list[str]:
    """``mpirun -n R`` plus the flags this machine needs: as root OpenMPI
    refuses to start without ``--allow-run-as-root``, and ``--oversubscribe``
    allows more ranks than cores (tests)."""
    exe = shutil.which(mpirun) or mpirun
    cmd = [exe, "-n", str(int(n_ranks))]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-run-as-root")
    cmd.append("--oversubscribe")
    return cmd


# --------------------------------------------------------------------------------------
# The protocol used by simulation.simulate
# --------------------------------------------------------------------------------------

def ranks(nest) -> tuple[int, int]:
    """(rank, number of ranks) from NEST, checked against the launcher.

    A NEST without MPI started by ``mpirun -n R`` runs R independent copies
    that would all write one store (upstream issue #18); that is refused
    before anything is built."""
    rank, n_ranks = int(nest.Rank()), int(nest.NumProcesses())
    started = launcher_size()
    if started > 1 and n_ranks != started:
        have = getattr(nest, "build_info", {}).get("have_mpi")
        raise SimulationError(
            f"the launcher started {started} processes but NEST reports {n_ranks} "
            f"(nest.build_info['have_mpi'] = {have}): this NEST cannot run one network over MPI "
            "ranks. Build one with runners/build_nest_mpi.sh, or start a single process.")
    return rank, n_ranks


def barrier(engine, n_ranks: int) -> None:
    """Wait for every rank (the engine's barrier, e.g. NEST's own MPI barrier); no-op
    for one process.  ``engine``: a :class:`mam_xr.engines.Engine` (or the ``nest`` module)."""
    if n_ranks > 1:
        sync = getattr(engine, "barrier", None) or engine.SyncProcesses
        sync()


def register(root, rank: int, threads: int) -> None:
    """Mark this rank ``running`` in ``ranks/rank<r>`` (host, pid, threads)."""
    _store.set_rank_status(root, rank, "running", host=socket.gethostname(), pid=os.getpid(),
                           threads=int(threads), started=time.time())


def test_hook(rank: int, segment: int) -> None:
    """Stop this rank after ``segment`` if ``MAM_XR_TEST_FAIL_RANK`` asks so."""
    spec = os.environ.get(TEST_HOOK)
    if not spec:
        return
    parts = spec.split(":")
    try:
        r, s = int(parts[0]), int(parts[1])
    except (IndexError, ValueError) as exc:
        raise ParameterError(invalid(TEST_HOOK, spec, "RANK:SEGMENT[:exit|kill|raise]")) from exc
    mode = parts[2] if len(parts) > 2 else "exit"
    if r != rank or s != segment:
        return
    if mode == "raise":
        raise SimulationError(f"{TEST_HOOK}: rank {rank} stops after segment {segment}")
    sys.stderr.write(f"{TEST_HOOK}: rank {rank} dies after segment {segment} ({mode})\n")
    sys.stderr.flush()
    if mode == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    os._exit(17)


def finish(engine, root, *, rank: int, n_ranks: int, n_spikes: int, timings: dict,
           **complete_attrs) -> None:
    """End of a run on every rank: mark this rank complete, wait for all, then
    rank 0 marks the store complete if (and only if) every rank finished.

    Raises :class:`SimulationError` on rank 0 when a rank did not finish (the
    caller then marks the store failed)."""
    # The kernel counters (e.g. NEST's num_connections) are per rank.
    local_connections = engine.local_connections()
    _store.set_rank_status(root, rank, "complete", n_spikes=int(n_spikes), timings=timings,
                           host=socket.gethostname(), num_connections_local=local_connections,
                           **complete_attrs)
    barrier(engine, n_ranks)
    error = None
    if rank == 0:
        run = _store.RunStore(root, str(root.store))
        report = run.rank_report()
        planned = int(root.attrs.get("n_segments_planned"))
        bad = [i for i in report if i["status"] != "complete" or i["segments"] < planned]
        if bad or len(report) != n_ranks:
            error = ("not every rank finished: " + run.describe_missing())
        else:
            per_rank = [dict(root["ranks"][f"rank{r}"].attrs) for r in range(n_ranks)]
            total = sum(int(a.get("n_spikes", 0)) for a in per_rank)
            extra = dict(complete_attrs)
            if n_ranks > 1:
                # totals over ranks; rank 0's own figures stay in ranks/rank0
                info = dict(root.attrs.get(engine.name) or {})
                conns = [a.get("num_connections_local") for a in per_rank]
                if None not in conns:
                    info["num_connections"] = int(sum(conns))
                    info["num_connections_per_rank"] = [int(c) for c in conns]
                extra[engine.name] = info
                rss = [a.get("peak_rss_kB") for a in per_rank]
                if None not in rss:
                    extra["peak_rss_kB"] = int(max(rss))
                    extra["peak_rss_kB_per_rank"] = [int(x) for x in rss]
            _store.set_status(root, "complete", timings=timings, n_spikes=total, **extra)
    barrier(engine, n_ranks)  # nobody returns (and reads the store) before rank 0 has decided
    if error:
        raise SimulationError(error)


def _leave_on_uncaught() -> None:
    """Make an uncaught exception end this process without ``MPI_Finalize``.

    ``MPI_Finalize`` waits for the peers, which wait in NEST's next spike
    exchange for this rank: the job would hang until its time limit.  Leaving
    with ``os._exit`` lets the launcher see the failure and stop the job."""
    previous = sys.excepthook
    if getattr(previous, "_mam_xr_leave", False):
        return

    def hook(kind, value, tb):
        try:
            previous(kind, value, tb)
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(1)

    hook._mam_xr_leave = True
    sys.excepthook = hook


def fail(root, rank: int, error: str, timings: dict | None = None) -> None:
    """Record a failure: rank 0 marks the store, other ranks their own group.

    Under a launcher with several processes, an exception that is then left
    uncaught ends the process at once (see :func:`_leave_on_uncaught`)."""
    if launcher_size() > 1:
        _leave_on_uncaught()
    if rank == 0:
        _store.set_status(root, "failed", error=error, timings=timings)
    try:
        _store.set_rank_status(root, rank, "failed", error=error, timings=timings or {})
    except StoreError:
        pass  # a store without ranks/ (older layout): the root status is what counts


# --------------------------------------------------------------------------------------
# After the job
# --------------------------------------------------------------------------------------

def finalize(path, exit_code: int | None = None) -> str:
    """Settle the status of a run store after its MPI job ended.

    Run by the job script after ``mpirun``/``srun`` returns (runners/).  A
    store not marked ``complete`` -- a rank was killed, ran out of memory or
    time, and its peers were stopped by the launcher before anyone could
    write -- is marked ``failed`` with every rank's state and the job's exit
    code.  Returns the final status.
    """
    import zarr

    p = Path(path)
    if not p.exists():
        raise StoreError(invalid("store", str(p), "an existing run store (the job may have failed "
                                 "before rank 0 created it)"))
    root = zarr.open_group(str(p), mode="r+", zarr_format=3)
    if root.attrs.get("format") != _store.RUN_FORMAT:
        raise StoreError(invalid("format", root.attrs.get("format"), f"{_store.RUN_FORMAT!r}"))
    status = root.attrs.get("status")
    if status == "complete":
        return status
    run = _store.RunStore(root, str(p))
    detail = run.describe_missing()
    prior = root.attrs.get("error")
    code = "" if exit_code is None else f" (exit code {exit_code})"
    error = (f"the MPI job ended{code} before every rank finished"
             + (f": {prior}" if prior else "") + (f"; {detail}" if detail else ""))
    _store.set_status(root, "failed", error=error, finalized=time.time())
    return "failed"


def _main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m mam_xr.parallel",
                                 description="Settle or show the status of an MPI run store.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("finalize", help="mark a store that is not complete as failed (after the job)")
    f.add_argument("store")
    f.add_argument("--exit-code", type=int, default=None, help="exit code of mpirun/srun")
    s = sub.add_parser("status", help="print the store's status and every rank's state")
    s.add_argument("store")
    args = ap.parse_args(argv)
    try:
        if args.cmd == "finalize":
            status = finalize(args.store, args.exit_code)
            print(f"{args.store}: {status}")
            return 0 if status == "complete" else 1
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            run = _store.open_run(args.store, allow_incomplete=True)
        print(f"{args.store}: status={run.status} ranks={run.n_ranks} "
              f"threads={run.attrs.get('threads')} segments={len(run.segments())}/"
              f"{run.attrs.get('n_segments_planned')}")
        now = time.time()
        for i in run.rank_report():
            age = f", last update {now - i['updated']:.0f} s ago" if i["updated"] else ""
            print(f"  rank {i['rank']}: {i['status']}, {i['segments']} segments"
                  + (f", host {i['host']}" if i["host"] else "") + age
                  + (f", {i['error']}" if i["error"] else ""))
        if run.attrs.get("error"):
            print(f"  error: {run.attrs['error']}")
        return 0 if run.status == "complete" else 1
    except StoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(_main())
