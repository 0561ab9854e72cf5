"""Benchmark of the theory atlas at full scale: 151 χ values from 1.0 to 2.5 (goal <= 10 s).

usage: MAM_XR_DATA_DIR=../shared/upstream-data python benchmarks/bench_atlas.py [--repeat N]
       [--tutorial] [--chi 1.0:2.5:0.01]

Prints the wall and CPU time of ``mam_xr.atlas.atlas(Params(), chi=...)`` for each
of ``--repeat`` runs, the best of them (report that one: the machine may be shared;
the CPU time is the wall time of a quiet machine, the atlas being single-threaded)
against the 10 s goal, the time of each step of the best run, and what the atlas
found (branches, folds, where the integration from zero settles).  BLAS is
limited to one thread (set before numpy is imported): the 254 x 254 problems
are too small to gain from threads.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

from mam_xr import atlas  # noqa: E402
from mam_xr.params import Params  # noqa: E402

GOAL_S = 10.0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--chi", default="1.0:2.5:0.01")
    ap.add_argument("--tutorial", action="store_true", help="Params.tutorial() instead of Params()")
    args = ap.parse_args()
    params = Params.tutorial() if args.tutorial else Params()
    atlas.atlas(params, chi="1.0:1.02:0.01", n_random=0)      # warm caches (data files, tables)
    times, cpu, best = [], [], None
    for _ in range(args.repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        ds = atlas.atlas(params, chi=args.chi)
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
        if best is None or times[-1] <= min(times):
            best = ds
    reached = best["integration_branch"].values
    chi = best["chi"].values
    settles = chi[reached >= 0]
    print(json.dumps({
        "case": "tutorial" if args.tutorial else "full scale (Params())",
        "chi": args.chi, "values": int(chi.size),
        "times_s": [round(t, 3) for t in times], "best_s": round(min(times), 3), "goal_s": GOAL_S,
        "within_goal": min(times) <= GOAL_S,
        "cpu_times_s": [round(t, 3) for t in cpu], "best_cpu_s": round(min(cpu), 3),
        "steps_of_best_s": {k: round(v, 3) for k, v in best.attrs["timings"].items()},
        "branches": int(best.sizes["branch"]), "points": int(best["found"].sum()),
        "folds_chi": [round(float(v), 5) for v in best["fold_chi"].values],
        "integration_from_zero_converges_for_chi": [float(settles.min()), float(settles.max())]
        if settles.size else None,
        "load_average_1min": os.getloadavg()[0],
    }, indent=1))
    return 0 if np.isfinite(min(times)) else 1


if __name__ == "__main__":
    raise SystemExit(main())
