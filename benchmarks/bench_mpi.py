"""NEST over MPI on one machine: R ranks x T threads against one process.

    /path/to/venv-mpi/bin/python benchmarks/bench_mpi.py [--scale 0.005] [--t-sim 2000]

Runs the tutorial network (all 32 areas) with ``runners/run_mpi.py`` as
1 process x 1 thread, 1 process x 2 threads and ``mpirun -n 2`` x 1 thread,
and prints per run: wall time of the whole command, NEST's construction and
simulation time (rank 0), created neurons and connections, spikes, mean
population rate, peak RSS (per rank), and whether 2 ranks x 1 thread and
1 process x 2 threads gave identical spikes (same number of virtual processes).
Needs mpirun and a NEST with MPI (runners/build_nest_mpi.sh).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--scale", type=float, default=0.005)
    ap.add_argument("--t-sim", type=float, default=2000.0)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()

    import mam_xr
    from mam_xr import parallel

    tmp = Path(tempfile.mkdtemp(prefix="bench_mpi_"))
    config = tmp / "config.json"
    config.write_text(json.dumps({"network": {"scale": args.scale},
                                  "simulation": {"t_sim": args.t_sim, "seed": args.seed}}))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OMPI_", "PMIX_", "PMI_"))}
    rows = {}
    for name, ranks, threads in (("1 process x 1 thread", None, 1), ("1 process x 2 threads", None, 2),
                                 ("2 ranks x 1 thread", 2, 1)):
        out = tmp / (name.replace(" ", "_") + ".zarr")
        cmd = [sys.executable, str(ROOT / "runners" / "run_mpi.py"), str(config), "--out", str(out),
               "--threads", str(threads), "--no-progress"]
        if ranks:
            cmd = parallel.mpirun_command(ranks) + cmd
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if proc.returncode:
            print(proc.stdout[-2000:], proc.stderr[-2000:])
            return 1
        run = mam_xr.open_run(out)
        a = run.attrs
        sp = run.spikes()
        n = np.asarray(run.root["spikes"].attrs["n_neurons"], dtype=float)
        with np.errstate(invalid="ignore", divide="ignore"):
            rates = np.where(n > 0, np.bincount(sp.pop, minlength=n.size) / n / (args.t_sim * 1e-3), np.nan)
        t = a["timings"]
        rows[name] = sp
        print(f"{name:24s} wall {wall:6.1f} s | build {t.get('create', 0) + t.get('connect', 0):5.2f} s "
              f"| simulate {t.get('simulate', 0):6.1f} s | neurons {a['n_neurons_created']} "
              f"| connections {a['nest']['num_connections']} {a['nest'].get('num_connections_per_rank', '')}"
              f"| spikes {a['n_spikes']} | mean rate {np.nanmean(rates):.3f} spikes/s "
              f"| peak RSS {a.get('peak_rss_kB_per_rank', a.get('peak_rss_kB'))} kB")
    a, b = rows["1 process x 2 threads"], rows["2 ranks x 1 thread"]
    same = (np.array_equal(a.offsets, b.offsets) and np.array_equal(a.steps, b.steps)
            and np.array_equal(a.senders, b.senders))
    print(f"2 ranks x 1 thread == 1 process x 2 threads (spikes): {same}")
    print(f"stores in {tmp}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
