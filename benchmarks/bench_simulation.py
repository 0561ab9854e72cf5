"""Benchmark: the tutorial network in NEST, side by side with upstream.

Runs the tutorial configuration (scale 0.005, all 32 areas, 2000 ms) once per
(seed, threads) in a fresh process each (so peak RSS is per run), then prints

* wall time per phase against upstream (../shared/reference/README.md §4:
  1.06 + 1.09 s network creation, 40.16 s simulation at 1 thread, 30.38 s at
  2 threads, peak RSS 1.20 GiB) and the ratio upstream / mam_xr;
* neurons and connections created against the reference counts;
* store size (bytes per spike; goal <= 4) and the time to load all spikes
  (upstream's Analysis load: 27.93 s; goal <= 0.5 s);
* the statistical acceptance figures of ../shared/reference/seed_variability.json
  (mean population rate, median relative rate difference and Pearson
  correlation with each upstream realisation, mean LvR), rates in upstream's
  convention (500 < t < t_sim, divided by the fractional N).

Usage::

    MAM_XR_DATA_DIR=../shared/upstream-data python benchmarks/bench_simulation.py \
        [--runs 1:1,1:2,2:1,3:1] [--t-sim 2000] [--out /tmp/mam_xr_bench]

``--runs`` lists seed:threads pairs.  Run on an otherwise idle machine:
2-thread timings on a 2-core machine are meaningless under foreign load.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REFERENCE = Path(__file__).resolve().parents[1].parent / "shared" / "reference"
UPSTREAM = {  # reference/README.md §4 (threads=1, threads=2)
    "build": {1: 1.06 + 1.09, 2: 0.92 + 1.26},
    "simulate": {1: 40.16, 2: 30.38},
    "peak_rss_GiB": {1: 1.20, 2: 1.24},
    "load_spikes": 27.93,
    "process": {1: 49.9, 2: 40.3},
}


def run_one(seed: int, threads: int, t_sim: float, out: Path, generator: str) -> dict:
    """Child process: simulate one configuration and report timings as JSON."""
    t0 = time.perf_counter()
    from mam_xr.engines import nest as nest_engine
    from mam_xr.params import Params
    from mam_xr.simulation import simulate

    nest_engine.EXTERNAL_GENERATOR = generator

    t_import = time.perf_counter() - t0
    p = Params.tutorial(seed=seed, threads=threads, t_sim=t_sim)
    run = simulate(p, store=out, progress=False, overwrite=True)
    a = run.attrs
    return {"seed": seed, "threads": threads, "generator": generator, "timings": a["timings"], "import": t_import,
            "nest": a["nest"], "n_spikes": a["n_spikes"], "n_neurons": a["n_neurons_created"],
            "peak_rss_kB": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
            "process": time.perf_counter() - t0}


def lvr(times: np.ndarray, senders: np.ndarray, n_int: int, R: float = 2.0) -> float:
    """Population LvR (dynamics.md §C.9): mean over int(N) neurons, < 2 ISIs count 0."""
    if times.size < 3:
        return 0.0
    o = np.lexsort((times, senders))
    t, s = times[o], senders[o]
    isi = np.diff(t)
    same = s[1:] == s[:-1]
    pair = same[:-1] & same[1:]
    i1, i2 = isi[:-1][pair], isi[1:][pair]
    tot = i1 + i2
    term = (1.0 - 4.0 * i1 * i2 / tot**2) * (1.0 + 4.0 * R / tot)
    owner = s[1:-1][pair]
    sums = np.bincount(owner, weights=term, minlength=int(s.max()) + 1)
    n_isi = np.bincount(s[1:][same], minlength=int(s.max()) + 1)
    ok = n_isi >= 2
    vals = np.zeros_like(sums)
    vals[ok] = 3.0 / (n_isi[ok] - 1) * sums[ok]
    return float(vals.sum() / n_int)


def statistics(run) -> dict:
    from mam_xr.flat import to_flat_vector

    st = run.structure()
    t_sim = float(run.attrs["t_sim"])
    N = to_flat_vector(st["neurons"])
    n_int = np.floor(N).astype(int)
    sp = run.spikes(t_start=500.0)
    rates, lvrs = np.zeros(len(N)), np.zeros(len(N))
    for k in range(len(N)):
        t, s = sp.population(sp.populations[k])
        keep = (t > 500.0) & (t < t_sim)
        rates[k] = keep.sum() / N[k] / ((t_sim - 500.0) * 1e-3)
        lvrs[k] = lvr(t[(t >= 500.0) & (t < t_sim)], s[(t >= 500.0) & (t < t_sim)], n_int[k])
    var = json.loads((REFERENCE / "seed_variability.json").read_text())
    cmp = {}
    for name, other in var["pop_rates"].items():
        other = np.asarray(other)
        cmp[name] = {"rel_diff_median": float(np.median(np.abs(rates - other) / other)),
                     "pearson": float(np.corrcoef(rates, other)[0, 1])}
    return {"mean_pop_rate": float(rates.mean()), "mean_pop_LvR": float(lvrs.mean()),
            "vs_upstream": cmp, "acceptance": var["acceptance"]}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", default="1:1,1:2,2:1,3:1", help="seed:threads pairs")
    ap.add_argument("--t-sim", type=float, default=2000.0)
    ap.add_argument("--out", default="/tmp/mam_xr_bench")
    ap.add_argument("--keep", action="store_true", help="keep the run stores")
    ap.add_argument("--generator", default="poisson_generator_ps",
                    help="external input model (poisson_generator_ps | poisson_generator)")
    ap.add_argument("--one", nargs=3, metavar=("SEED", "THREADS", "STORE"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.one:
        seed, threads, store_path = int(args.one[0]), int(args.one[1]), Path(args.one[2])
        print("RESULT " + json.dumps(run_one(seed, threads, args.t_sim, store_path, args.generator)),
              flush=True)
        return

    from mam_xr.store import open_run

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    ref = np.load(REFERENCE / "structure_downscaled_tutorial.npz")
    results = []
    for pair in args.runs.split(","):
        seed, threads = (int(x) for x in pair.split(":"))
        path = out / f"tutorial_seed{seed}_t{threads}.zarr"
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, __file__, "--t-sim", str(args.t_sim),
                               "--generator", args.generator, "--one",
                               str(seed), str(threads), str(path)], capture_output=True, text=True)
        wall = time.perf_counter() - t0
        line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
        if proc.returncode or not line:
            print(proc.stderr[-3000:])
            raise SystemExit(f"run seed={seed} threads={threads} failed")
        res = json.loads(line[0][7:])
        res["process_wall"] = wall
        size = sum(f.stat().st_size for f in (path / "spikes").rglob("*") if f.is_file())
        t0 = time.perf_counter()
        run = open_run(path)
        sp = run.spikes()
        _ = sp.times
        res["load_all"] = time.perf_counter() - t0
        res["store_bytes"] = size
        res["bytes_per_spike"] = size / max(len(sp), 1)
        res["stats"] = statistics(run)
        results.append(res)
        report(res, ref, args.t_sim)
        if not args.keep:
            shutil.rmtree(path)


def report(res: dict, ref, t_sim: float) -> None:
    th = res["threads"]
    tm = res["timings"]
    build = tm["create"] + tm["connect"] + tm.get("replacement", 0.0) + tm["prepare"]
    up_sim = UPSTREAM["simulate"][th] * t_sim / 2000.0
    rss_gib = res["peak_rss_kB"] / 2**20
    n_syn = res["nest"]["num_connections"] - 2 * res["n_neurons"]
    st = res["stats"]
    acc = st["acceptance"]
    print(f"\n=== tutorial, seed {res['seed']}, threads {th}, t_sim {t_sim:g} ms, "
          f"{res['generator']} ===")
    print(f"neurons created      {res['n_neurons']:>10,d}   reference {int(ref['N_created_int'].sum()):,d}")
    print(f"synapses created     {n_syn:>10,d}   reference {int(ref['synapses_created_int'].sum()):,d}")
    print(f"structure build      {tm.get('structure', float('nan')):10.2f} s  (upstream model construction 6.00 s)")
    print(f"network build        {build:10.2f} s  upstream {UPSTREAM['build'][th]:.2f} s  "
          f"(x{UPSTREAM['build'][th] / build:.2f})  [create {tm['create']:.2f}, connect {tm['connect']:.2f}]")
    print(f"simulate             {tm['simulate']:10.2f} s  upstream {up_sim:.2f} s  "
          f"(x{up_sim / tm['simulate']:.2f})   CPU {tm.get('simulate_cpu', float('nan')):.2f} s; "
          f"spike writes {tm['write']:.2f} s extra")
    print(f"whole process        {res['process_wall']:10.2f} s  upstream {UPSTREAM['process'][th]:.1f} s")
    print(f"peak RSS             {rss_gib:10.2f} GiB upstream {UPSTREAM['peak_rss_GiB'][th]:.2f} GiB")
    print(f"spikes               {res['n_spikes']:>10,d}   store {res['store_bytes'] / 2**20:.2f} MiB = "
          f"{res['bytes_per_spike']:.2f} bytes/spike (goal <= 4)")
    print(f"load all spikes      {res['load_all']:10.3f} s  upstream {UPSTREAM['load_spikes']:.2f} s "
          f"(x{UPSTREAM['load_spikes'] / res['load_all']:.0f}; goal <= 0.5 s)")
    lo, hi = acc["mean_pop_rate_range"]
    print(f"mean pop rate        {st['mean_pop_rate']:10.3f} spikes/s  band [{lo}, {hi}]  "
          f"{'ok' if lo <= st['mean_pop_rate'] <= hi else 'OUT'}")
    lo, hi = acc["mean_pop_LvR_range"]
    print(f"mean pop LvR         {st['mean_pop_LvR']:10.3f}           band [{lo}, {hi}]  "
          f"{'ok' if lo <= st['mean_pop_LvR'] <= hi else 'OUT'}")
    for name, c in st["vs_upstream"].items():
        ok = (c["rel_diff_median"] <= acc["rate_rel_diff_median_vs_each_upstream_run_max"]
              and c["pearson"] >= acc["rate_pearson_vs_each_upstream_run_min"])
        print(f"  vs upstream {name:15s} median rel diff {c['rel_diff_median']:.3f} (<= "
              f"{acc['rate_rel_diff_median_vs_each_upstream_run_max']}), Pearson {c['pearson']:.3f} "
              f"(>= {acc['rate_pearson_vs_each_upstream_run_min']})  {'ok' if ok else 'OUT'}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
