"""Benchmark: the HTML report of the tutorial run with its analysis cached.

usage: MAM_XR_DATA_DIR=../shared/upstream-data python benchmarks/bench_report.py [--repeat 3] [--cli]

Imports ../shared/reference/spikes_sim_threads1.npz (the tutorial simulation) into a run
store with its structure, caches every statistic (``analyze``) and the reference mean-field
rates as the ``theory`` group, as ``mam-xr run`` leaves a store, then times

* ``report.report_for(store)`` in this process (best of ``--repeat``; wall and CPU time:
  on a busy machine the CPU time is the better estimate of a quiet machine's wall time),
  and each section's drawing and Bokeh rendering;
* with ``--cli``, ``mam-xr report STORE`` as a new process (imports included);

and prints the size of the page.  Goal (issue "explore"): <= 2 s and <= 3 MB; before the
registry-driven report with Bokeh fast paths it took 8.4 s and 3.0 MB.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REF = HERE.parents[1] / "shared" / "reference"
sys.path.insert(0, str(HERE.parent / "tests"))

GOAL_S, GOAL_MB, BEFORE_S = 2.0, 3.0, 8.4


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--cli", action="store_true", help="also time `mam-xr report` as a new process")
    args = ap.parse_args()

    import viz_data as vd
    from conftest import reference_structure
    from mam_xr import analysis, report, report_bokeh

    tmp = Path(tempfile.mkdtemp(prefix="bench_report_"))
    store = tmp / "tutorial.zarr"
    analysis.import_upstream(REF / "spikes_sim_threads1.npz", store, t_sim_ms=2000.0,
                             gids=REF / "network_gids.json", structure=reference_structure(),
                             label="tutorial")
    analysis.analyze(str(store))
    vd.theory().to_zarr(store, group="theory", mode="w")
    report.report_for(store)                              # warm-up: imports, first renders

    walls, cpus = [], []
    for _ in range(args.repeat):
        c0, t0 = time.process_time(), time.perf_counter()
        out = report.report_for(store)
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    mb = out.stat().st_size / 1e6
    print(f"report_for (cached analysis), in process: wall {min(walls):.2f} s (runs "
          + ", ".join(f"{x:.2f}" for x in walls) + f"), CPU {min(cpus):.2f} s; page {mb:.2f} MB "
          f"(goal <= {GOAL_S:g} s, <= {GOAL_MB:g} MB; before {BEFORE_S} s)")

    from mam_xr.store import open_run

    r = open_run(store)
    stats = analysis.analyze(str(store))
    spikes = r.spikes(area=["V1", "V2", "FEF"], t_start=1500.0)
    c0 = time.process_time()
    secs = report.report_sections(structure=r.structure(), theory=vd.theory(), stats=stats, spikes=spikes)
    print(f"  drawing all sections (HoloViews objects): CPU {time.process_time() - c0:.2f} s")
    for s in secs:
        c0 = time.process_time()
        report_bokeh.render_section(s)
        print(f"  {s['id']:15s} Bokeh model: CPU {time.process_time() - c0:.3f} s")

    if args.cli:
        exe = shutil.which("mam-xr") or str(Path(sys.executable).with_name("mam-xr"))
        t0 = time.perf_counter()
        subprocess.run([exe, "report", str(store)], check=True, env=dict(os.environ),
                       stdout=subprocess.DEVNULL)
        print(f"mam-xr report STORE (new process, imports included): wall {time.perf_counter() - t0:.2f} s")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
