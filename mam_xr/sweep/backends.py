"""Where a sweep's points run: back-ends in a registry.

A :class:`Backend` runs the prepared points of a sweep (:class:`Batch`) and
records each point's outcome.  Built in:

* ``serial`` -- one point after another from this process (simulating points
  in a fresh Python process each; theory points in this process, which lets
  theory-only sweeps share one structure);
* ``local`` -- a ``distributed.LocalCluster`` of single-threaded workers;
* ``slurm`` -- ``dask_jobqueue.SLURMCluster``, one job per worker;
* ``mpi`` -- ``dask_mpi.initialize()`` (launched with mpirun);
* ``scheduler`` -- an existing Dask scheduler (``cluster="tcp://..."``) or
  ``distributed.Client``.

Adding a back-end is one :func:`register_backend` call: for a Dask cluster,
``Backend(name, description, run=on_dask(start))`` with ``start(batch)``
returning a :class:`Cluster`; see docs/sweeps.md, "Adding a back-end".
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..errors import ParameterError, invalid
from ..planner import plan
from .point import execute_point, read_json

__all__ = ["Backend", "Batch", "Cluster", "BACKENDS", "register_backend", "get_backend", "on_dask",
           "cores", "point_memory", "slurm_options"]


def cores() -> int:
    """CPU cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def _available_memory() -> float:
    try:
        import psutil

        return float(psutil.virtual_memory().available)
    except Exception:  # noqa: BLE001
        return float("inf")


def point_memory(params) -> float:
    """Peak memory (bytes) of one simulating point, for sizing workers: the
    resource planner's prediction for the point's engine and threads
    (:func:`mam_xr.planner.plan`, docs/scaling.md)."""
    sim = params.simulation
    rep = plan(params, engines=sim.engine, threads=sim.threads)
    return float(rep.engines[sim.engine].peak_memory)


def slurm_options(*, threads: int = 1, memory: float | None = None, **options) -> dict:
    """Keyword arguments of ``dask_jobqueue.SLURMCluster`` for a sweep.

    One job = one Dask worker with one Dask thread (one point at a time) but
    ``threads`` CPUs (``--cpus-per-task``) for the point's NEST threads, and
    ``memory`` bytes (default 4 GB); ``options`` (queue, account, walltime,
    job_extra_directives, job_script_prologue, python, ...) are passed on.
    """
    import dask

    mem_gb = max(1, math.ceil((memory or 4e9) / 1e9))
    kw = dict(cores=1, processes=1, job_cpu=int(threads), memory=f"{mem_gb}GB",
              scheduler_options={"dashboard": False})
    # A site configuration (DASK_CONFIG, e.g. runners/dask/jobqueue.yaml) sets the
    # walltime, queue, account and prologue; without one, allow points 4 hours.
    if dask.config.get("jobqueue.slurm.walltime", None) in (None, "00:30:00"):
        kw["walltime"] = "04:00:00"
    kw.update({k: v for k, v in options.items() if v is not None})
    return kw


# --------------------------------------------------------------------------------------
# The registry
# --------------------------------------------------------------------------------------

@dataclass
class Batch:
    """The points a back-end runs, and how it reports on them.

    ``points`` maps each point's label to its prepared directory (with
    ``task.json``); the back-end runs each (:func:`execute_point`, in a fresh
    process when ``simulate``), calls ``started(label)`` when one starts if it
    knows, ``running(n)`` with the number running, and ``record(label, info)``
    with the point.json dict of every finished point (complete or failed).
    """

    points: dict[str, Path]
    threads: int
    n_workers: int
    simulate: bool
    params: list
    options: dict
    target: Any = None                       # scheduler address or Client (``scheduler``)
    started: Callable[[str], None] = lambda label: None
    running: Callable[[int], None] = lambda n: None
    record: Callable[[str, dict], None] = lambda label, info: None
    write: Callable[[str], None] = print


@dataclass(frozen=True)
class Backend:
    """A way to run a sweep's points.

    ``run(batch)`` runs every point of the batch and returns the number of
    points it ran at a time.  ``threads(n_workers, n_points)`` and
    ``workers(threads, n_todo)`` give the defaults of ``threads=`` (NEST threads
    per point) and ``n_workers=``; ``in_process`` back-ends run points one at a
    time in this process (theory-only sweeps may then share one structure);
    ``initialize(options)`` runs before anything else in :func:`run_sweep` (MPI).
    """

    name: str
    description: str
    run: Callable[[Batch], int]
    threads: Callable[[int | None, int], int] = lambda n_workers, n_points: 1
    workers: Callable[[int, int], int] = lambda threads, n_todo: max(1, n_todo)
    in_process: bool = False
    initialize: Callable[[dict], None] | None = None
    addresses: tuple[str, ...] = field(default=())   # cluster= prefixes it serves (tcp://, ...)


#: Back-ends by name (:func:`register_backend` adds one).
BACKENDS: dict[str, Backend] = {}


def register_backend(backend: Backend, *, replace: bool = False) -> Backend:
    """Add ``backend`` to :data:`BACKENDS` (``replace=True`` to redefine a name)."""
    if not isinstance(backend, Backend):
        raise ParameterError(invalid("backend", backend, "a mam_xr.sweep.Backend"))
    if backend.name in BACKENDS and not replace:
        raise ParameterError(invalid("backend", backend.name, f"a new name (registered: {', '.join(BACKENDS)})"))
    BACKENDS[backend.name] = backend
    return backend


def get_backend(cluster) -> tuple[Backend, Any]:
    """The back-end for ``cluster=`` (a name, a scheduler address or a Client) and its target."""
    if not isinstance(cluster, str):
        return BACKENDS["scheduler"], cluster
    for backend in BACKENDS.values():
        if backend.addresses and cluster.startswith(backend.addresses):
            return backend, cluster
    if cluster in BACKENDS and not BACKENDS[cluster].addresses:
        return BACKENDS[cluster], None
    names = ", ".join(n for n, b in BACKENDS.items() if not b.addresses)
    raise ParameterError(invalid("cluster", cluster, f"one of auto, {names}, a scheduler address or a Client"))


# --------------------------------------------------------------------------------------
# serial
# --------------------------------------------------------------------------------------

def _run_serial(batch: Batch) -> int:
    for label, pdir in batch.points.items():
        batch.started(label)
        batch.running(1)
        info = execute_point(str(pdir), batch.threads, subprocess_=batch.simulate)
        batch.running(0)
        batch.record(label, info)
    return 1


# --------------------------------------------------------------------------------------
# Dask clusters
# --------------------------------------------------------------------------------------

@dataclass
class Cluster:
    """A started Dask cluster: its client, how many points it runs at a time, how to close it."""

    client: Any
    n_slots: int
    close: Callable[[], None]


def on_dask(start: Callable[[Batch], Cluster]) -> Callable[[Batch], int]:
    """The ``run`` of a back-end that submits each point to the Dask cluster ``start(batch)`` gives."""
    def run(batch: Batch) -> int:
        from distributed import wait

        c = start(batch)
        try:
            futures = {}
            for label, pdir in batch.points.items():
                fut = c.client.submit(execute_point, str(pdir), batch.threads, batch.simulate, pure=False,
                                      key=f"mam_xr-point-{label}-{time.time_ns()}")
                futures[fut] = label
            pending = set(futures)
            while pending:
                try:
                    finished, pending = wait(pending, timeout=2.0, return_when="FIRST_COMPLETED")
                except TimeoutError:  # nothing finished in 2 s: refresh the progress bar
                    finished = set()
                running = 0
                for label in (futures[f] for f in pending):
                    # The point's own process says when it starts (queued tasks do not count).
                    st = read_json(batch.points[label] / "point.json") or {}
                    if st.get("status") == "running":
                        running += 1
                        batch.started(label)
                for fut in finished:
                    label = futures[fut]
                    try:
                        info = fut.result()
                    except Exception as exc:  # noqa: BLE001 - a lost worker fails the point only
                        info = {"status": "failed", "error": f"{type(exc).__name__}: {exc}", "label": label,
                                "finished": time.time()}
                    batch.record(label, info)
                batch.running(running)
        finally:
            c.close()
        return c.n_slots
    return run


def _client_slots(client) -> int:
    return max(1, sum(w.get("nthreads", 1) for w in client.scheduler_info()["workers"].values()))


def _start_scheduler(batch: Batch) -> Cluster:
    from distributed import Client

    if not isinstance(batch.target, str):  # an existing Client: not ours to close
        return Cluster(batch.target, _client_slots(batch.target), lambda: None)
    client = Client(batch.target)
    return Cluster(client, _client_slots(client), client.close)


def _start_local(batch: Batch) -> Cluster:
    from distributed import Client, LocalCluster

    n_workers = batch.n_workers
    if batch.simulate:
        memory = max(point_memory(p) for p in batch.params)
        fit = max(1, int(_available_memory() // memory))
        if fit < n_workers:
            batch.write(f"memory: {fit} of {n_workers} workers fit ({memory / 1e9:.1f} GB per point); "
                        f"using {fit}")
            n_workers = fit
    # Simulating points run in a fresh process each (NEST's kernel is process-global),
    # so their workers only wait for it: threads of this process do, and start in
    # milliseconds instead of seconds.  Theory points compute inside the worker:
    # worker processes then (no GIL contention).
    kw = dict(n_workers=n_workers, threads_per_worker=1, processes=not batch.simulate,
              scheduler_kwargs={"dashboard": False}, silence_logs=40)
    # A worker's memory monitor sees its own process, not the point's: the sizing
    # against the machine's memory is done above.
    kw["memory_limit"] = 0 if batch.simulate else "auto"
    kw.update(batch.options)
    cluster = LocalCluster(**kw)
    client = Client(cluster)

    def close():
        client.close()
        cluster.close()

    return Cluster(client, n_workers, close)


def _start_slurm(batch: Batch) -> Cluster:
    from distributed import Client

    try:
        from dask_jobqueue import SLURMCluster
    except ImportError as exc:
        raise ParameterError(invalid("cluster", "slurm", "dask-jobqueue to be installed "
                                     "(pip install dask-jobqueue)")) from exc
    memory = max(point_memory(p) for p in batch.params) if batch.simulate else None
    cluster = SLURMCluster(**slurm_options(threads=batch.threads, memory=memory, **batch.options))
    cluster.scale(jobs=batch.n_workers)
    client = Client(cluster)

    def close():
        client.close()
        cluster.close()

    return Cluster(client, batch.n_workers, close)


def _start_mpi(batch: Batch) -> Cluster:
    from distributed import Client

    # dask_mpi.initialize() ran at the start of run_sweep (Backend.initialize)
    client = Client()
    client.wait_for_workers(1, timeout=300)
    return Cluster(client, len(client.scheduler_info()["workers"]), client.close)


def _mpi_initialize(options: dict) -> None:
    """Turn this MPI job into a Dask cluster; only rank 1 returns (it drives the sweep).

    Rank 0 runs the scheduler, ranks >= 2 one single-threaded worker each; they
    exit when rank 1 is done.
    """
    try:
        import dask_mpi
    except ImportError as exc:
        raise ParameterError(invalid("cluster", "mpi", "dask-mpi and mpi4py to be installed "
                                     "(pip install dask-mpi mpi4py; needs an MPI library)")) from exc
    kw = dict(nthreads=1, dashboard=False)
    kw.update(options)
    dask_mpi.initialize(**kw)


def _local_threads(n_workers, n_points) -> int:
    slots = n_workers or min(max(1, n_points), cores())
    return max(1, cores() // slots)


register_backend(Backend(
    "serial", "one point after another from this process", _run_serial,
    threads=lambda n_workers, n_points: cores(), workers=lambda threads, n_todo: 1, in_process=True))
register_backend(Backend(
    "local", "a distributed.LocalCluster of single-threaded workers on this machine",
    on_dask(_start_local), threads=_local_threads,
    workers=lambda threads, n_todo: max(1, min(n_todo, cores() // threads))))
register_backend(Backend(
    "slurm", "dask_jobqueue.SLURMCluster, one job per worker (dask-jobqueue)", on_dask(_start_slurm)))
register_backend(Backend(
    "mpi", "dask_mpi.initialize(): rank 0 scheduler, rank 1 the driver, the others workers",
    on_dask(_start_mpi), initialize=_mpi_initialize))
register_backend(Backend(
    "scheduler", "an existing Dask scheduler (cluster='tcp://...') or distributed.Client",
    on_dask(_start_scheduler), addresses=("tcp://", "tls://", "ucx://", "inproc://")))
