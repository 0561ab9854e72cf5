"""Benchmark: what a `mam-xr serve` page costs on the tutorial run, finished and being written.

usage: MAM_XR_DATA_DIR=../shared/upstream-data python benchmarks/bench_dashboard.py [--segment 100]

Imports ../shared/reference/spikes_sim_threads1.npz (the tutorial simulation, 2 s, all 32
areas) into a run store, then writes the same spikes again into a second store segment by
segment (``--segment`` ms each) through the store's writer, as a running simulation does.
Times (wall and CPU):

* opening the finished store (``RunData``: counts of every population from the offsets
  tables) and the first read of V1's spikes, its raster table and rate time series;
* building the run's page (``RunView``) and rendering its three figures with Bokeh, once
  with points and once with the raster drawn by Datashader;
* on the store being written, one refresh after each new segment (only the new offsets
  rows and the new spikes of the area shown), and the same numbers as a full re-read.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REF = HERE.parents[1] / "shared" / "reference"
sys.path.insert(0, str(HERE.parent / "tests"))


def timed(fn, *args, **kwargs):
    w, c = time.perf_counter(), time.process_time()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - w, time.process_time() - c


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--segment", type=float, default=100.0, help="ms per segment of the written store")
    args = ap.parse_args()

    import holoviews as hv

    from conftest import reference_structure
    from mam_xr import analysis
    from mam_xr.dashboard import RunData
    from mam_xr.dashboard.app import RunView
    from mam_xr.store import SpikeWriter, create_run, open_run, set_status

    hv.extension("bokeh")
    warnings.simplefilter("ignore")
    tmp = Path(tempfile.mkdtemp(prefix="bench_dashboard_"))
    try:
        src = tmp / "tutorial.zarr"
        structure = reference_structure()
        analysis.import_upstream(REF / "spikes_sim_threads1.npz", src, t_sim_ms=2000.0,
                                 gids=REF / "network_gids.json", structure=structure, label="tutorial")
        run = open_run(src)
        print(f"tutorial run: {run.n_spikes():,} spikes, {len(run.spikes(area='V1')):,} in V1")

        data, w, c = timed(RunData, src)
        print(f"RunData(finished store): wall {w:.3f} s, CPU {c:.3f} s")
        _, w, c = timed(data.area_spikes, "V1")
        print(f"first read of V1's spikes: wall {w:.3f} s, CPU {c:.3f} s")
        _, w, c = timed(data.raster_table, "V1", "4E")
        print(f"V1 raster table: wall {w:.3f} s, CPU {c:.3f} s")
        _, w, c = timed(data.rate_series, "V1")
        print(f"V1 rate time series: wall {w:.3f} s, CPU {c:.3f} s")
        for above in (10**9, 0):
            def page():
                view = RunView(data, datashade_above=above)
                for obj in (view.heat, view.raster_pane.object, view.series_pane.object):
                    hv.render(obj)
                return view
            page()  # warm-up (imports, Numba compilation of Datashader)
            _, w, c = timed(page)
            how = "points" if above else "Datashader"
            print(f"page of the run (heat map, V1 raster with {how}, rates): wall {w:.3f} s, CPU {c:.3f} s")

        # the same spikes written segment by segment, refreshed after every segment
        live = tmp / "live.zarr"
        n_neurons = np.asarray(run.root["spikes"].attrs["n_neurons"], dtype=np.int64)
        n_seg = int(round(2000.0 / args.segment))
        root = create_run(live, structure=structure, dt=run.dt, t_sim=2000.0, n_segments_planned=n_seg,
                          n_neurons=n_neurons, label="live")
        writer = SpikeWriter(root)
        everything = run.spikes()
        pop = everything.pop
        steps, senders = everything.steps, everything.senders
        idx = run.population_indices()
        watch = None
        refresh_w, refresh_c = [], []
        for s in range(n_seg):
            t0, t1 = s * args.segment, (s + 1) * args.segment
            lo, hi = round(t0 / run.dt), round(t1 / run.dt)
            sel = (steps > lo) & (steps <= hi) if s else (steps >= lo) & (steps <= hi)
            writer.append_segment(steps[sel], senders[sel], idx[pop[sel]], t0, t1)
            if watch is None:
                watch = RunData(live)
                watch.area_spikes("V1")
                continue
            def refresh():
                watch.refresh()
                watch.rate_series("V1")
                return watch.raster_table("V1", "4E")
            _, w, c = timed(refresh)
            refresh_w.append(w)
            refresh_c.append(c)
        set_status(root, "complete")
        print(f"store being written ({n_seg} segments of {args.segment:g} ms): refresh after a new segment "
              f"(counts, V1 spikes, rates, raster table): median wall {np.median(refresh_w):.3f} s, "
              f"CPU {np.median(refresh_c):.3f} s, max wall {max(refresh_w):.3f} s")
        full, w, c = timed(RunData, live)
        np.testing.assert_array_equal(full.segment_counts.sum(0), watch.segment_counts.sum(0))
        assert watch.area_spikes("V1").step.size == len(run.spikes(area="V1"))
        print(f"re-reading it whole instead: wall {w:.3f} s, CPU {c:.3f} s (counts only); "
              "incremental and whole reads agree")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
