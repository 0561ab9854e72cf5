"""Benchmark: the whole tutorial analysis of the reference threads=1 run, store -> Datasets.

usage: MAM_XR_DATA_DIR=../shared/upstream-data python benchmarks/bench_analysis.py [--repeat 5]

Imports ../shared/reference/spikes_sim_threads1.npz into a run store in a temporary
directory (timed separately), then times

* ``analyze(run, recompute=True, store=False)``: every statistic (rates, rate time series,
  smoothed rates, synchrony, LvR, CV ISI, rate distributions, correlation coefficients,
  synaptic input and FC) from the Zarr store to labelled Datasets;
* the same with writing the results into the store (the default call);
* a second call that reads the cached results;
* the correlation coefficients alone (``analyze(run, "correlation", ...)``, store to
  Dataset) and the corrcoef kernel alone on in-memory arrays;

best of ``--repeat`` runs each, on the default Dask scheduler (threads; this machine has
2 cores), and prints each figure with its ratio to upstream's timings
(../shared/reference/README.md §4: 81.1 s whole analysis process, 27.9 s loading,
33.5 s M2E corrcoef) and Elephant's 35.0 s (measured on the same spikes).
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REF = HERE.parents[1] / "shared" / "reference"
sys.path.insert(0, str(HERE.parent / "tests"))

UPSTREAM_TOTAL_S = 81.05        # whole analysis process (README §4)
UPSTREAM_LOAD_S = 27.93         # Analysis(...) spike loading
UPSTREAM_STEPS_S = 66.3         # the statistics alone, without model re-creation and loading overlap
UPSTREAM_CORRCOEF_S = 33.54     # M2E compute_corrcoeff
ELEPHANT_S = 35.0               # peers.md: rates, LvR, corrcoef, rate series incl. loading


def best(fn, repeat):
    times = []
    out = None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return min(times), times, out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()

    t0 = time.perf_counter()
    from conftest import reference_structure
    from mam_xr import analysis as A
    from mam_xr.analysis import kernels as K
    t_import_modules = time.perf_counter() - t0

    tmp = Path(tempfile.mkdtemp(prefix="bench_analysis_"))
    structure = reference_structure()
    t_imp, _, run = best(lambda: A.import_upstream(REF / "spikes_sim_threads1.npz", tmp / "t1.zarr",
                                                   t_sim_ms=2000.0, structure=structure,
                                                   label="threads1", overwrite=True), 1)
    A.analyze(run, recompute=True, store=False)      # warm-up (imports, FC file)

    t_all, all_times, res = best(lambda: A.analyze(run, recompute=True, store=False), args.repeat)
    t_store, store_times, _ = best(lambda: A.analyze(run, recompute=True), max(1, args.repeat // 2))
    t_cached, _, _ = best(lambda: A.analyze(run), args.repeat)
    t_cc, _, _ = best(lambda: A.analyze(run, "correlation", recompute=True, store=False), args.repeat)

    sp = run.spikes()
    w = K.make_windows(dt=run.dt, t_min=500.0, t_max=2000.0, bin_ms=1.0, cc_bin_ms=1.0)
    args_k = (sp.pop, sp.senders.astype(np.int64), sp.steps.astype(np.int64), sp.n_neurons, w)
    t_read, _, _ = best(lambda: run.spikes(), args.repeat)
    defn = dict(A.DEFAULTS, t_max_ms=2000.0)
    t_kernel, _, _ = best(lambda: K.group_statistics(*args_k, defn), args.repeat)
    t_cck, _, _ = best(lambda: K.group_statistics(*args_k, defn, parts={"corrcoef"}), args.repeat)

    n = len(sp)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"spikes: {n:,} in 254 populations; mam_xr + deps import {t_import_modules:.2f} s")
    print(f"import of the upstream npz into a run store:          {t_imp:7.3f} s "
          f"(upstream's ASCII load {UPSTREAM_LOAD_S} s: {UPSTREAM_LOAD_S / t_imp:5.1f}x)")
    print(f"full analysis, store -> Datasets (no cache write):    {t_all:7.3f} s "
          f"(upstream {UPSTREAM_TOTAL_S} s: {UPSTREAM_TOTAL_S / t_all:5.0f}x; "
          f"Elephant {ELEPHANT_S} s: {ELEPHANT_S / t_all:4.0f}x)  runs: "
          + ", ".join(f"{x:.3f}" for x in all_times))
    print(f"full analysis + writing the cache into the store:     {t_store:7.3f} s "
          f"({UPSTREAM_TOTAL_S / t_store:5.0f}x upstream)  runs: " + ", ".join(f"{x:.3f}" for x in store_times))
    print(f"second call, cached results read from the store:      {t_cached:7.3f} s")
    print(f"correlation coefficients alone, store -> Dataset:     {t_cc:7.3f} s "
          f"(upstream {UPSTREAM_CORRCOEF_S} s: {UPSTREAM_CORRCOEF_S / t_cc:5.0f}x)")
    print(f"  of which: read all spikes {t_read:.3f} s; whole one-pass kernel {t_kernel:.3f} s; "
          f"corrcoef kernel alone {t_cck:.3f} s ({UPSTREAM_CORRCOEF_S / t_cck:.0f}x)")
    print(f"peak RSS {rss:.0f} MB; mean rate {float(res['rates']['rate'].mean()):.3f} spikes/s "
          f"(floor(N)), mean LvR {float(res['irregularity']['lvr'].mean()):.4f}, "
          f"mean corrcoef {float(res['correlation']['corrcoef'].mean()):.6f}")


if __name__ == "__main__":
    main()
