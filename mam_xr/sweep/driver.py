"""The driver of a sweep: :func:`run_sweep` runs (or resumes) a sweep in a directory.

It plans the points, skips those already complete, writes the manifest,
chooses the theory fast path or hands the points to a back-end
(:mod:`mam_xr.sweep.backends`), and combines the results
(:mod:`mam_xr.sweep.results`).
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
import warnings
from pathlib import Path

import xarray as xr

from ..errors import ParameterError, StoreError, invalid
from .backends import Batch, cores, get_backend
from .fast import fast_theory_reason, run_theory_fast
from .plan import Point, plan
from .point import atomic_write_json, prepare_point, read_json
from .results import combine, result_path
from .spec import SWEEP_FORMAT, load_spec, validate_spec

__all__ = ["run_sweep", "lock", "Progress"]


@contextlib.contextmanager
def lock(directory: Path):
    """Hold an exclusive lock on a sweep directory (one driver at a time; released on exit or death)."""
    import fcntl

    path = directory / ".lock"
    f = open(path, "a+")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        owner = f.read().strip()
        f.close()
        raise StoreError(invalid("directory", str(directory), "a sweep directory no other process is "
                                 f"running (locked by {owner or 'another process'})")) from None
    f.seek(0)
    f.truncate()
    f.write(f"pid {os.getpid()} on {os.uname().nodename}")
    f.flush()
    try:
        yield
    finally:
        fcntl.flock(f, fcntl.LOCK_UN)
        f.close()


def _resolve_threads(directory: Path, backend, n_workers, threads, n_points) -> int:
    """NEST threads per point: given, else as at the sweep's first run, else the back-end's default."""
    if threads is not None:
        return int(threads)
    stored = (read_json(directory / "sweep.json") or {}).get("execution", {}).get("threads")
    if stored is not None:
        return int(stored)
    return int(backend.threads(n_workers, n_points))


class Progress:
    """tqdm bar of points with done / running / failed and an ETA."""

    def __init__(self, total: int, done: int, enabled: bool, name: str):
        self.total, self.done, self.failed, self.running = total, done, 0, 0
        self.bar = None
        if enabled:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, initial=done, desc=name, unit="point", dynamic_ncols=True)
            self._post()

    def _post(self):
        if self.bar is not None:
            self.bar.set_postfix(done=self.done, running=self.running, failed=self.failed, refresh=True)

    def update(self, *, done=0, failed=0, running=None):
        self.done += done
        self.failed += failed
        if running is not None:
            self.running = running
        if self.bar is not None:
            if done or failed:
                self.bar.update(done + failed)
            self._post()

    def write(self, msg: str):
        if self.bar is not None:
            self.bar.write(msg)
        else:
            print(msg, file=sys.stderr)

    def close(self):
        if self.bar is not None:
            self.bar.close()


def _manifest(spec, points, states, execution) -> dict:
    entries = []
    for p in points:
        st = states.get(p.label, {}) if p.valid else {}
        entries.append({
            "index": list(p.index), "coords": p.coords, "values": p.values, "label": p.label,
            "name": p.name if p.valid else None,
            "status": "failed" if not p.valid else st.get("status", "pending"),
            "error": p.error if not p.valid else st.get("error"),
            "attempts": st.get("attempts", 0), "started": st.get("started"),
            "finished": st.get("finished"),
            "seconds": (st["finished"] - st["started"]) if st.get("finished") and st.get("started") else None,
            "timings": st.get("timings", {}),
            **({"result": st["result"]} if st.get("result") else {}),
        })
    counts = {s: sum(e["status"] == s for e in entries) for s in ("complete", "failed", "running", "pending")}
    return {"format": SWEEP_FORMAT, "name": spec.name, "dims": list(spec.dims), "shape": list(spec.shape),
            "run": list(spec.run), "execution": execution, "counts": counts, "points": entries,
            "updated": time.time()}


def run_sweep(spec, directory, *, cluster="auto", n_workers: int | None = None,
              threads: int | None = None, cluster_options: dict | None = None,
              rerun_failed: bool = True, progress: bool = True, combine_results: bool = True,
              strict: bool = False, fast_theory: bool = True) -> xr.Dataset:
    """Run (or resume) a sweep in ``directory`` and return the combined Dataset.

    Parameters
    ----------
    spec : SweepSpec or dict or path
        The sweep; a dict is validated, a path (JSON/TOML) is read.
    directory : path
        Sweep directory (created).  Running again skips complete points.
    cluster : str or distributed.Client, default: "auto"
        A back-end of :data:`mam_xr.sweep.BACKENDS` by name (built in:
        ``local``: a ``distributed.LocalCluster`` of single-threaded workers
        (threads waiting for the points' own processes when simulating, worker
        processes for theory points; scripts need the ``if __name__ ==
        "__main__":`` guard); ``slurm``: ``dask_jobqueue.SLURMCluster``, one job per
        worker; ``mpi``: ``dask_mpi.initialize()`` (launch with mpirun; rank 0
        scheduler, rank 1 this code, the others workers); ``serial``: one point
        after another from this process); a scheduler address or a Client uses
        that cluster (back-end ``scheduler``).  ``auto``: ``serial`` for
        theory-only sweeps (each point takes well under a second), else
        ``local``.
    n_workers : int, optional
        Workers (points at a time).  Default: as many as fit the cores with
        ``threads`` each (local), or one per pending point (slurm).
    threads : int, optional
        NEST threads per point (``simulation.threads``) unless the spec sets
        it.  Default: cores // n_workers, fixed at the sweep's first run so a
        resumed sweep keeps the same parameters.
    cluster_options : dict, optional
        Keyword arguments for the cluster class (e.g. ``queue``, ``account``,
        ``walltime`` for SLURM).
    rerun_failed : bool, default: True
        Re-run points that failed before (False: keep them failed).
    progress : bool, default: True
        Show a tqdm bar with points done / running / failed and an ETA.
    combine_results : bool, default: True
        Write ``sweep.zarr`` and return it; else return ``None``.
    strict : bool, default: False
        Raise :class:`ParameterError` before running anything if any point's
        parameters are invalid (default: those points fail alone).
    fast_theory : bool, default: True
        Theory-only sweeps on an in-process back-end (``cluster="serial"`` or
        ``"auto"``) whose swept and coupled parameters are among chi, chi_I, g
        and rate_ext, all other parameters being shared, build one structure
        and derive each point's from it (:func:`mam_xr.structure.rescale`; see
        docs/sweeps.md), compute the points in this process and write their
        results in one file.  Each point's result is the same ``integrate`` /
        ``fixed_point`` call as with a rebuilt structure.  False: every point
        builds its structure (:func:`mam_xr.structure.build`) and writes its
        own ``result.nc``.  The manifest's ``execution`` says which path ran
        (``theory_path``) and why.

    Returns
    -------
    xr.Dataset
        Lazily opened ``sweep.zarr``: every point's result variables with the
        sweep dimension(s) added (NaN at failed points), the swept and coupled
        parameters as coordinates, ``point_complete`` (sweep dims) and the
        manifest in attrs.  See :func:`combine`.

    Raises
    ------
    ParameterError
        The spec is invalid (or, with ``strict``, a point is).
    StoreError
        Another process is running a sweep in ``directory``.
    """
    if not (isinstance(cluster, str) and cluster == "auto"):
        backend, target = get_backend(cluster)
        if backend.initialize is not None:
            # Before anything else (MPI: every rank runs this, only rank 1 comes back).
            backend.initialize(dict(cluster_options or {}))
            cluster_options = {}
    if isinstance(spec, (str, Path)):
        spec = load_spec(spec)
    spec = validate_spec(spec)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "points").mkdir(exist_ok=True)
    if isinstance(cluster, str) and cluster == "auto":
        cluster = "local" if "simulate" in spec.run else "serial"
        backend, target = get_backend(cluster)
    with lock(directory):
        n_points = sum(p.valid for p in plan(spec))
        threads = _resolve_threads(directory, backend, n_workers, threads, n_points)
        points = plan(spec, threads=threads)
        if "simulate" in spec.run and any(p.valid for p in points):
            # The spec may set the threads itself: size the workers by what points use.
            threads = max(p.params.simulation.threads for p in points if p.valid)
        bad = [p for p in points if not p.valid]
        if strict and bad:
            raise ParameterError("; ".join(f"point {p.coords}: {p.error}" for p in bad))
        execution = {"cluster": cluster if isinstance(cluster, str) else "client", "n_workers": n_workers,
                     "threads": threads, "cores": cores()}
        atomic_write_json(directory / "sweep.json", {"format": SWEEP_FORMAT,
                                                      "spec": json.loads(spec.to_json()),
                                                      "execution": execution})
        states: dict[str, dict] = {}
        todo: dict[str, Point] = {}
        for p in (p for p in points if p.valid):
            pdir = directory / "points" / p.name
            info = read_json(pdir / "point.json") or {}
            attempts = int(info.get("attempts", 0))
            done = info.get("status") == "complete" and result_path(directory, p.name, info).exists() \
                and info.get("label") == p.label
            if done or (info.get("status") == "failed" and not rerun_failed):
                states[p.label] = info
                continue
            states[p.label] = {"status": "pending", "attempts": attempts}
            todo.setdefault(p.label, p)
        for p in bad:
            warnings.warn(f"sweep {spec.name}: point {p.coords} is invalid and is skipped: {p.error}",
                          stacklevel=2)

        def write_manifest():
            atomic_write_json(directory / "manifest.json", _manifest(spec, points, states, execution))

        use_fast = False
        if "simulate" not in spec.run and todo:
            if not fast_theory:
                reason = "fast_theory=False"
            elif not backend.in_process:
                reason = (f"cluster {cluster if isinstance(cluster, str) else 'client'} "
                          "(only in-process back-ends such as serial share a structure)")
            else:
                reason = fast_theory_reason(spec, todo.values())
            use_fast = reason is None
            execution["theory_path"] = "one structure, rescaled per point" if use_fast else "per point"
            if not use_fast:
                execution["theory_path_reason"] = reason
        write_manifest()
        n_workers = 1 if use_fast else (int(n_workers) if n_workers is not None
                                        else int(backend.workers(threads, len(todo))))
        execution["n_workers"] = n_workers
        n_complete = sum(1 for s in states.values() if s.get("status") == "complete")
        bar = Progress(total=n_complete + len(todo), done=n_complete, enabled=progress, name=spec.name)
        try:
            if use_fast:
                execution["structure_builds"] = run_theory_fast(spec, directory, todo, states, bar,
                                                                 write_manifest)
            elif todo:
                execution["n_workers"] = _run_points(spec, directory, todo, states, backend, target,
                                                     n_workers, threads, cluster_options or {}, bar,
                                                     write_manifest, reuse=fast_theory)
        finally:
            bar.close()
            write_manifest()
        failed = {lab: s.get("error") for lab, s in states.items() if s.get("status") == "failed"}
        for lab, err in failed.items():
            p = next(q for q in points if q.label == lab)
            warnings.warn(f"sweep {spec.name}: point {p.coords} failed: {err} "
                          f"(log: {directory / 'points' / p.name / 'log.txt'})", stacklevel=2)
        if not combine_results:
            return None
        return combine(directory)


def _run_points(spec, directory, todo, states, backend, target, n_workers, threads, options, bar,
                write_manifest, reuse: bool = True) -> int:
    """Prepare the points' directories and let ``backend`` run them; returns its points at a time."""
    points = {}
    for label, p in todo.items():
        attempts = int(states[label].get("attempts", 0)) + 1
        points[label] = prepare_point(spec, directory, p, attempts, reuse)
        states[label] = {"status": "pending", "attempts": attempts}

    def started(label):
        if states[label].get("status") != "running":
            st = read_json(points[label] / "point.json") or {}
            when = st.get("started") if st.get("status") == "running" else time.time()
            states[label] = {**states[label], "status": "running", "started": when}
            write_manifest()

    def record(label, info):
        info = dict(info)
        info["attempts"] = states[label]["attempts"]
        atomic_write_json(points[label] / "point.json", info)
        states[label] = info
        ok = info.get("status") == "complete"
        if not ok:
            bar.write(f"point {todo[label].coords} failed: {info.get('error')}")
        bar.update(done=int(ok), failed=int(not ok))
        write_manifest()

    write_manifest()
    batch = Batch(points=points, threads=threads, n_workers=n_workers, simulate="simulate" in spec.run,
                  params=[p.params for p in todo.values()], options=dict(options), target=target,
                  started=started, running=lambda n: bar.update(running=n), record=record,
                  write=bar.write)
    return int(backend.run(batch))
