#!/usr/bin/env python
"""Run (or resume) a mam_xr sweep on a SLURM cluster through dask-jobqueue.

Run this driver on a login node (or in a small, long SLURM job); it submits one
SLURM job per Dask worker, each job running one point at a time in a fresh
Python process with ``--threads`` NEST threads on as many CPUs.

Usage::

    python runners/slurm_sweep.py SPEC.json SWEEP_DIR --jobs 8 --threads 16 \\
        --memory 32GB --walltime 04:00:00 [--queue Q] [--account A] \\
        [--job-extra "--constraint=mc"] [--prologue "module load ..."]

SWEEP_DIR must be on a file system the compute nodes share.  Needs
``pip install dask-jobqueue``.  Re-running resumes.  See docs/sweeps.md.
"""

import argparse
import sys

from mam_xr.sweep import run_and_summarise


def parse(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("spec")
    ap.add_argument("directory")
    ap.add_argument("--jobs", type=int, default=None, help="SLURM jobs (= points at a time); default: one per point")
    ap.add_argument("--threads", type=int, default=1, help="NEST threads = CPUs per job (default 1)")
    ap.add_argument("--memory", default=None, help="memory per job, e.g. 32GB (default: estimated per point)")
    ap.add_argument("--walltime", default=None, help="per job (default: the dask-jobqueue config, else 04:00:00)")
    ap.add_argument("--queue", default=None, help="partition")
    ap.add_argument("--account", default=None)
    ap.add_argument("--job-extra", action="append", default=[], help="extra #SBATCH directive (repeatable)")
    ap.add_argument("--prologue", action="append", default=[], help="shell line run before the worker (repeatable)")
    ap.add_argument("--python", default=None, help="python on the compute nodes (default: this one)")
    ap.add_argument("--no-progress", action="store_true")
    return ap.parse_args(argv)


if __name__ == "__main__":
    args = parse()
    options = {}
    if args.job_extra:
        options["job_extra_directives"] = args.job_extra
    if args.prologue:
        options["job_script_prologue"] = args.prologue
    for key in ("walltime", "queue", "account", "memory", "python"):
        if getattr(args, key):
            options[key] = getattr(args, key)
    sys.exit(run_and_summarise(args.spec, args.directory, cluster="slurm", n_workers=args.jobs, threads=args.threads,
                               cluster_options=options, progress=not args.no_progress))
