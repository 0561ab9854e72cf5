"""Time the whole structure construction (stages A-C) at full scale and down-scaled.

Run:  MAM_XR_DATA_DIR=../shared/upstream-data /work/venv/bin/python benchmarks/bench_structure.py

Upstream (../shared/reference/README.md §4): full-scale structure (data scripts +
MultiAreaModel) 2.8 s, down-scaled structure (incl. scale_network) 6.0 s, both without
the Python start-up.  Each mam_xr figure below includes stage A (anatomy.process) and
the sha256 checks of every data file read: the cache of stage A is cleared before each
run.  "warm" reuses a stage-A Dataset (what a parameter sweep does).
"""

import statistics
import time

UPSTREAM_S = {"full-scale tutorial": 2.8, "down-scaled tutorial": 6.0}
RUNS = 5

t0 = time.perf_counter()
from mam_xr import anatomy, structure  # noqa: E402
from mam_xr.params import Params  # noqa: E402

print(f"import mam_xr.structure, mam_xr.params: {time.perf_counter() - t0:.3f} s")

cases = {"full-scale tutorial": Params.tutorial(scale=1.0),
         "down-scaled tutorial": Params.tutorial()}
anat = anatomy.process()
for name, params in cases.items():
    cold, warm = [], []
    for _ in range(RUNS):
        structure._anatomy_cached.cache_clear()
        t = time.perf_counter()
        structure.build(params)
        cold.append(time.perf_counter() - t)
        t = time.perf_counter()
        structure.build(params, anatomy=anat)
        warm.append(time.perf_counter() - t)
    med = statistics.median(cold)
    print(f"{name}: build incl. stage A median {med:.3f} s (first {cold[0]:.3f} s), "
          f"warm median {statistics.median(warm):.3f} s  [{RUNS} runs]; upstream "
          f"{UPSTREAM_S[name]} s; ratio {med / UPSTREAM_S[name]:.3f} "
          f"(speed-up x{UPSTREAM_S[name] / med:.0f})")
