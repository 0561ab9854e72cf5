#!/usr/bin/env python
"""Run (or resume) a mam_xr sweep on an MPI-launched Dask cluster (dask-mpi).

Usage::

    mpirun -n 6 python runners/mpi_sweep.py SPEC.json SWEEP_DIR [--threads T]

Rank 0 runs the Dask scheduler, rank 1 this driver, ranks 2.. one
single-threaded worker each (so ``-n N`` runs N - 2 points at a time).  Every
simulating point runs in a fresh Python process with ``--threads`` NEST
threads: give each rank that many cores (e.g. ``srun --cpus-per-task=T`` or
``mpirun --map-by slot:PE=T``).  Needs ``pip install dask-mpi mpi4py`` and an
MPI library (e.g. ``pip install mpich``, or the system's).  Re-running resumes.
See docs/sweeps.md.
"""

import argparse
import sys

from mam_xr.sweep import run_and_summarise

if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("spec")
    ap.add_argument("directory")
    ap.add_argument("--threads", type=int, default=1, help="NEST threads per point (default 1)")
    ap.add_argument("--interface", default=None, help="network interface for Dask (e.g. ib0)")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args()
    options = {"interface": args.interface} if args.interface else {}
    # On ranks 0 and >= 2, run_sweep does not return: dask_mpi.initialize() runs the
    # scheduler or a worker there and exits when the driver (rank 1) is done.
    sys.exit(run_and_summarise(args.spec, args.directory, cluster="mpi", threads=args.threads,
                               cluster_options=options, progress=not args.no_progress))
