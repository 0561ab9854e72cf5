"""NEST vs Brian2 on the tutorial network: timings and same-connectivity agreement (issue 8).

Usage (from the repository root; run one at a time on a quiet machine)::

    MAM_XR_DATA_DIR=../shared/upstream-data /work/venv/bin/python benchmarks/bench_engines.py timing
    MAM_XR_DATA_DIR=../shared/upstream-data /work/venv/bin/python benchmarks/bench_engines.py sameconn

``timing``: the tutorial configuration (scale 0.005, 32 areas, 2000 ms), each
engine in its own process, 1 and 2 threads; Brian2 cold (empty build cache)
and warm (second run of the same network shape).  Prints build / compile /
simulate / whole-process seconds and the ratios to NEST and to upstream's
40.16 s / 30.38 s (reference/README.md §4).

``sameconn``: one connectivity (and V0) drawn by mam_xr, simulated by NEST with
two Poisson seeds and by Brian2; prints the median per-population relative
rate difference NEST-vs-Brian2 and NEST-vs-NEST (issue 8 acceptance: the first
within 1.5x of the second).  ``--t-sim`` (default 1000 ms) and ``--scale``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

UPSTREAM_SIMULATE = {1: 40.16, 2: 30.38}   # reference/README.md §4, "Simulated network"
UPSTREAM_PROCESS = {1: 49.9, 2: 40.3}


def _structure(scale: float):
    if scale == 0.005:
        from conftest import reference_structure

        return reference_structure("downscaled_tutorial")
    from mam_xr.structure import build
    from mam_xr.params import Params

    return build(Params.tutorial(scale=scale))


def _params(engine: str, threads: int, seed: int = 1, t_sim: float = 2000.0, scale: float = 0.005):
    from mam_xr.params import Params

    return Params.tutorial(engine=engine, threads=threads, seed=seed, t_sim=t_sim, scale=scale,
                           segment=min(100.0, t_sim))


# --- one measured run per process ------------------------------------------------------------

def one(engine: str, threads: int, store: str, build_dir: str | None) -> dict:
    t0 = time.perf_counter()
    import mam_xr.simulation as simulation

    t_import = time.perf_counter() - t0
    s = _structure(0.005)
    p = _params(engine, threads)
    cpu0 = time.process_time()
    if engine == "nest":
        run = simulation.simulate(p, store=store, structure=s, progress=False, overwrite=True)
        cpu = time.process_time() - cpu0       # build + simulate + write, all threads
        tm = run.attrs["timings"]
        build = tm.get("prepare", 0) + tm.get("create", 0) + tm.get("connect", 0) + tm.get("replacement", 0)
        compile_s = 0.0
    else:
        run = simulation.simulate(p, store=store, structure=s, progress=False, overwrite=True,
                                  engine_options={"build_dir": build_dir})
        tm = run.attrs["timings"]
        cpu = time.process_time() - cpu0 + tm["run_process_cpu"]   # without the compiler
        # build = numpy draws + Brian2 objects + the binary's set-up/teardown outside Network::run
        build = tm["draw"] + tm["setup"] + (tm["run_process"] - tm["simulate"])
        compile_s = tm["compile"]
    return {"engine": engine, "threads": threads, "import": t_import, "build": build,
            "compile": compile_s, "simulate": tm["simulate"], "write": tm.get("write", 0.0),
            "n_spikes": run.n_spikes(), "process": time.perf_counter() - t0, "cpu": cpu,
            "peak_rss_MB": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "child_rss_MB": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}


def _spawn(*args) -> dict:
    t0 = time.perf_counter()
    load = os.getloadavg()[0]
    out = subprocess.run([sys.executable, __file__, "_one", *map(str, args)], check=True,
                         capture_output=True, text=True)
    res = json.loads(out.stdout.strip().splitlines()[-1])
    res["process_wall"] = time.perf_counter() - t0
    res["load_before"] = load
    return res


def timing(args) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="bench_engines_"))
    rows = []
    for threads in args.threads:
        rows.append(_spawn("nest", threads, tmp / f"nest{threads}.zarr", "-"))
        build_dir = tmp / f"b2build{threads}"
        for kind in ("cold", "warm"):
            r = _spawn("brian2", threads, tmp / f"b2_{threads}_{kind}.zarr", build_dir)
            r["engine"] = f"brian2 ({kind})"
            rows.append(r)
    print(f"\nTutorial network, 2000 ms, this machine ({os.cpu_count()} CPUs); seconds of wall-clock time")
    print(f"{'engine':16s} {'thr':>3s} {'build':>7s} {'compile':>8s} {'simulate':>9s} {'process':>8s} "
          f"{'spikes':>8s} {'load':>5s} {'cpu':>6s}  vs upstream simulate")
    for r in rows:
        print(f"{r['engine']:16s} {r['threads']:3d} {r['build']:7.2f} {r['compile']:8.2f} "
              f"{r['simulate']:9.2f} {r['process_wall']:8.2f} {r['n_spikes']:8d} {r['load_before']:5.1f}"
              f" {r['cpu']:6.1f}"
              f"  {UPSTREAM_SIMULATE[r['threads']] / r['simulate']:5.1f}x")
    for threads in args.threads:
        nest = next(r for r in rows if r["engine"] == "nest" and r["threads"] == threads)
        for kind in ("cold", "warm"):
            b2 = next(r for r in rows if r["engine"] == f"brian2 ({kind})" and r["threads"] == threads)
            print(f"threads={threads} brian2 {kind}: simulate {nest['simulate'] / b2['simulate']:.1f}x "
                  f"faster than NEST, whole process {nest['process_wall'] / b2['process_wall']:.1f}x "
                  f"(upstream whole process {UPSTREAM_PROCESS[threads]} s: "
                  f"{UPSTREAM_PROCESS[threads] / b2['process_wall']:.1f}x)")
    print("cpu = CPU seconds of build + simulate + write (all threads, compiler excluded): "
          "robust to other load; load = 1-min load average before the run")
    print(json.dumps(rows))


# --- same connectivity ----------------------------------------------------------------------

def _rates(pop, times, n, t0, t1):
    keep = (times > t0) & (times < t1)
    counts = np.bincount(pop[keep], minlength=n.size)
    return np.divide(counts, n * (t1 - t0) * 1e-3, out=np.zeros(n.size), where=n > 0)


def sameconn(args) -> None:
    from mam_xr.engines.nest import nest_run_with_connectivity
    from mam_xr.network import load_connectivity
    from mam_xr.simulation import simulate

    def b2run(store, **options):
        return simulate(p, store=store, structure=s, progress=False, connectivity=options.pop("connectivity", None),
                        engine_options=options)

    tmp = Path(tempfile.mkdtemp(prefix="bench_sameconn_"))
    s = _structure(args.scale)
    p = _params("brian2", 1, seed=1, t_sim=args.t_sim, scale=args.scale)
    t_min = min(500.0, args.t_sim / 2)
    b2a = b2run(tmp / "b2_a.zarr")                       # draws and saves the connectivity
    conn = load_connectivity(tmp / "b2_a.zarr")
    b2b = b2run(tmp / "b2_b.zarr", connectivity=conn, poisson_seed=2)
    n = conn.n_neurons
    rates = {}
    for name, run in (("brian2_p1", b2a), ("brian2_p2", b2b)):
        sp = run.spikes()
        rates[name] = _rates(sp.pop, sp.times, n, t_min, args.t_sim)
    times = {"brian2_p1": b2a.attrs["timings"]["simulate"], "brian2_p2": b2b.attrs["timings"]["simulate"]}
    for seed in (1, 2):
        res = nest_run_with_connectivity(p.update(engine="nest"), s, conn, seed=seed)
        rates[f"nest_p{seed}"] = _rates(res["pop"], res["steps"] * p.simulation.dt, n, t_min, args.t_sim)
        times[f"nest_p{seed}"] = res["simulate"]
        n_conn = res["num_connections"]
    ok = n > 0

    def med(a, b):
        ra, rb = rates[a][ok], rates[b][ok]
        sel = ra > 0
        return float(np.median(np.abs(rb[sel] - ra[sel]) / ra[sel]))

    pairs = {"nest_p1 vs nest_p2": med("nest_p1", "nest_p2"),
             "nest_p1 vs brian2_p1": med("nest_p1", "brian2_p1"),
             "nest_p2 vs brian2_p2": med("nest_p2", "brian2_p2"),
             "brian2_p1 vs brian2_p2": med("brian2_p1", "brian2_p2")}
    print(f"\nSame connectivity ({conn.n_synapses} synapses, {int(n.sum())} neurons; NEST made "
          f"{n_conn} connections incl. devices), t_sim {args.t_sim} ms, rates over ({t_min}, {args.t_sim}) ms")
    for k, v in rates.items():
        print(f"  {k:10s} mean pop rate {v[ok].mean():7.3f} spikes/s  (simulate {times[k]:.2f} s)")
    for k, v in pairs.items():
        print(f"  median per-population relative rate difference {k:24s} {v:.4f}")
    ratio = max(pairs["nest_p1 vs brian2_p1"], pairs["nest_p2 vs brian2_p2"]) / pairs["nest_p1 vs nest_p2"]
    print(f"  NEST-vs-Brian2 / NEST-vs-NEST = {ratio:.2f} (acceptance: <= 1.5) -> "
          f"{'PASS' if ratio <= 1.5 else 'FAIL'}")


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "_one":
        engine, threads, store, build_dir = sys.argv[2:6]
        res = one(engine, int(threads), store, None if build_dir == "-" else build_dir)
        print(json.dumps(res))
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["timing", "sameconn"])
    ap.add_argument("--t-sim", type=float, default=1000.0, help="sameconn: simulated ms")
    ap.add_argument("--scale", type=float, default=0.005, help="sameconn: network scale")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="timing: thread counts")
    args = ap.parse_args()
    {"timing": timing, "sameconn": sameconn}[args.what](args)


if __name__ == "__main__":
    main()
