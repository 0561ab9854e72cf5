"""Time stage A (mam_xr.anatomy.process) on the local upstream data copy.

Run:  MAM_XR_DATA_DIR=../shared/upstream-data /work/venv/bin/python benchmarks/bench_anatomy.py

Upstream has no separate timing of its stage A (VisualCortex_Data.py); the nearest figure in
../shared/reference/README.md §4 is the full-scale structure construction (data scripts +
MultiAreaModel, stages A-C) at 2.8 s, so the printed ratio overstates stage A's share.
"""

import statistics
import time

UPSTREAM_STRUCTURE_S = 2.8  # reference/README.md §4, "full-scale structure", stages A-C

t0 = time.perf_counter()
from mam_xr import anatomy  # noqa: E402

t_import = time.perf_counter() - t0
times = []
for _ in range(7):
    t = time.perf_counter()
    anatomy.process()
    times.append(time.perf_counter() - t)
best, median = min(times), statistics.median(times)
print(f"import mam_xr.anatomy: {t_import:.3f} s")
print(f"anatomy.process(): first {times[0]:.3f} s, median {median:.3f} s, best {best:.3f} s "
      f"(7 runs, incl. sha256 checks of the raw files)")
print(f"ratio to upstream's whole structure construction ({UPSTREAM_STRUCTURE_S} s): "
      f"{median / UPSTREAM_STRUCTURE_S:.3f}")
