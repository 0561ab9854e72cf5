#!/usr/bin/env python
"""Analyse run stores with Dask on a cluster, after the simulation job.

    python runners/analyze_cluster.py STORE [STORE ...] --cluster slurm --jobs 4
    mpirun -n 6 python runners/analyze_cluster.py STORE --cluster mpi
    python runners/analyze_cluster.py STORE --cluster local --workers 2
    python runners/analyze_cluster.py STORE --cluster slurm --dry-run   # print the worker job script

``slurm``: dask-jobqueue SLURMCluster configured by runners/dask/jobqueue.yaml
(``--config`` for another file), ``--jobs`` worker jobs.  ``mpi``: dask-mpi inside
an MPI job (rank 0 the scheduler, rank 1 this script, ranks >= 2 one worker
each; ``pip install dask-mpi mpi4py``).  ``local``: a LocalCluster.

A store whose job is still running or failed is refused (naming the missing
segments and ranks) unless ``--allow-incomplete`` is given; then the segments
every rank committed are analysed.  Results are cached in each store's
``analysis/`` group (mam_xr.analyze).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("stores", nargs="*", help="run stores to analyse")
    ap.add_argument("--cluster", choices=("slurm", "mpi", "local"), default="local")
    ap.add_argument("--jobs", type=int, default=2, help="SLURM worker jobs (slurm)")
    ap.add_argument("--workers", type=int, default=2, help="worker processes (local)")
    ap.add_argument("--config", default=None, help="dask-jobqueue YAML (slurm; default runners/dask/jobqueue.yaml)")
    ap.add_argument("--statistics", nargs="*", default=None, help="subset of mam_xr.analysis.STATISTICS")
    ap.add_argument("--t-min-ms", type=float, default=None,
                    help="start of the analysis window (default: mam_xr's 500 ms)")
    ap.add_argument("--allow-incomplete", action="store_true",
                    help="analyse the committed segments of a store that is not complete")
    ap.add_argument("--dry-run", action="store_true", help="slurm: print the worker job script and exit")
    args = ap.parse_args(argv)

    if args.cluster == "mpi":
        # Must come first: ranks other than 1 never return from initialize().
        from dask_mpi import initialize

        initialize(nthreads=1, dashboard=False)
    import warnings

    from distributed import Client

    import dask_cluster
    import mam_xr
    from mam_xr.errors import MamXrError

    cluster = None
    if args.cluster == "slurm":
        cluster = dask_cluster.slurm_cluster(args.config)
        if args.dry_run:
            print(cluster.job_script())
            cluster.close()
            return 0
        cluster.scale(jobs=args.jobs)
        client = Client(cluster)
    elif args.cluster == "local":
        from distributed import LocalCluster

        cluster = LocalCluster(n_workers=args.workers, threads_per_worker=1, dashboard_address=None)
        client = Client(cluster)
    else:
        client = Client()
    if not args.stores:
        ap.error("give at least one run store")
    code = 0
    try:
        client.wait_for_workers(1, timeout=600)
        for path in args.stores:
            t0 = time.perf_counter()
            try:
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    definition = {} if args.t_min_ms is None else {"t_min_ms": args.t_min_ms}
                    res = mam_xr.analyze(path, args.statistics, allow_incomplete=args.allow_incomplete,
                                         **definition)
                for w in caught:
                    if "incomplete" in str(w.message):
                        print(f"warning: {w.message}", file=sys.stderr)
            except MamXrError as exc:
                print(f"error: {exc}", file=sys.stderr)
                code = 2
                continue
            rates = res.get("rates")
            mean = float(rates["rate"].mean()) if rates is not None and "rate" in rates else float("nan")
            print(f"{path}: {', '.join(res)} in {time.perf_counter() - t0:.1f} s; "
                  f"mean population rate {mean:.2f} spikes/s")
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
    return code


if __name__ == "__main__":
    sys.exit(main())
