#!/usr/bin/env python
"""Run (or resume) a mam_xr sweep on this machine with a Dask LocalCluster.

Usage::

    python runners/local_sweep.py SPEC.json SWEEP_DIR [--workers N] [--threads T]

Workers default to as many points as fit the cores, each point with
cores // workers NEST threads (fixed at the sweep's first run).  Re-running the
same command resumes: complete points are skipped, failed or interrupted ones
re-run.  ``--cluster serial`` runs one point after another without Dask.
See docs/sweeps.md.
"""

import sys

from mam_xr.sweep import main

if __name__ == "__main__":  # required: Dask starts worker processes that import this file
    argv = sys.argv[1:]
    if not any(a == "--cluster" or a.startswith("--cluster=") for a in argv):
        argv += ["--cluster", "local"]
    sys.exit(main(argv))
