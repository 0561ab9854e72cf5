"""The sweep's command line: ``python -m mam_xr.sweep SPEC DIRECTORY [options]`` (used by runners/)."""

from __future__ import annotations

import json
import sys

from ..errors import MamXrError
from .backends import BACKENDS
from .driver import run_sweep
from .results import summary_table, sweep_status

__all__ = ["main", "run_and_summarise"]


def main(argv=None) -> int:
    """``python -m mam_xr.sweep SPEC DIRECTORY [options]``: run or resume a sweep."""
    import argparse

    ap = argparse.ArgumentParser(prog="mam_xr.sweep", description=main.__doc__)
    ap.add_argument("spec", help="sweep spec (JSON or TOML)")
    ap.add_argument("directory", help="sweep directory (created; re-run to resume)")
    ap.add_argument("--cluster", default="auto",
                    help=f"auto, one of {', '.join(BACKENDS)} (mam_xr.sweep.BACKENDS) or a scheduler address")
    ap.add_argument("--workers", type=int, default=None, help="points at a time")
    ap.add_argument("--threads", type=int, default=None, help="NEST threads per point")
    ap.add_argument("--option", action="append", default=[], metavar="KEY=JSON",
                    help="cluster option, e.g. queue='\"normal\"' (repeatable)")
    ap.add_argument("--no-rerun-failed", action="store_true", help="keep failed points failed")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    options = {}
    for item in args.option:
        key, _, value = item.partition("=")
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
    return run_and_summarise(args.spec, args.directory, cluster=args.cluster,
                             n_workers=args.workers, threads=args.threads,
                             cluster_options=options, rerun_failed=not args.no_rerun_failed,
                             progress=not args.no_progress)


def run_and_summarise(spec, directory, **run_kwargs) -> int:
    """Run a sweep for a command-line entry point and return its exit code.

    Prints :func:`summary_table` (a row per point, then the counts of complete
    and failed points and where the results are); 0 when none failed, 1 when
    some did, 2 when the sweep could not run (the error goes to stderr).
    ``run_kwargs`` are passed to :func:`run_sweep`.
    """
    try:
        ds = run_sweep(spec, directory, **run_kwargs)
        print(summary_table(directory, ds))
    except MamXrError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0 if sweep_status(directory)["counts"]["failed"] == 0 else 1
