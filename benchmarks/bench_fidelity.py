"""Fidelity benchmark: how well down-scaled spiking networks reproduce the full-scale state.

Usage (from the repository root)::

    MAM_XR_DATA_DIR=../shared/upstream-data .venv/bin/python benchmarks/bench_fidelity.py \\
        --scales 0.005,0.01,0.02,0.05 --chis 1.0,1.9 --sources upstream,theory \\
        --lock "$MAM_XR_BIGRUN_LOCK"

For every (scale, χ, rates source) one simulation (tutorial parameters, χ_I = 1 at
χ = 1 and 2 otherwise, Brian2, ``--threads`` 2, ``--t-sim`` 1000 ms) runs in its own
process; runs at scale >= ``--lock-scale`` (0.02) are wrapped in ``flock LOCK`` so
that one big run uses the machine at a time.  The rates source is the
``network.fullscale_rates`` of the DC compensation: ``upstream`` (the pinned rates
file) or ``theory`` (the model's own full-scale fixed point); ``theory+init`` is
``theory`` started near the full-scale state (``simulation.initial_state="fullscale"``:
initial potentials drawn from the stationary membrane distribution at those rates).

Measured per run, in the window [``--t-discard``, t_sim) (default 300 ms):

* the simulated population rates against the full-scale mean-field theory of the
  same parameters (:func:`mam_xr.atlas.fullscale_fixed_point`): Pearson r over the
  254 populations, median relative difference |ν_sim − ν_full| / ν_full, and the
  ratio of the means (mean over populations);
* the mean LvR and the mean pairwise correlation coefficient (CC) over populations
  (:func:`mam_xr.analysis.analyze`, statistics ``irregularity`` and ``correlation``);
* the down-scaled network's own theory (:func:`mam_xr.theory.fixed_point` from the
  integration from zero rates, upstream's procedure) with the same comparisons;
* the mean rate in 100-ms bins from 0 ms (the transient).

Each run's results are cached as JSON in ``--out``/fidelity/ (the run store itself
is deleted), so an interrupted benchmark resumes where it stopped and a partial
table is always written: ``--out``/fidelity.md and fidelity.csv.
``--table-only`` rewrites the table from the cache.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("upstream", "theory", "theory+init")


def key_of(scale: float, chi: float, source: str) -> str:
    return f"s{scale:g}-chi{chi:g}-{source.replace('+', '_')}"


def params_for(scale: float, chi: float, source: str, t_sim: float, threads: int):
    from mam_xr.params import Params

    values = dict(scale=scale, chi=chi, fullscale_rates=source.split("+")[0], t_sim=t_sim,
                  engine="brian2", threads=threads)
    p = Params.tutorial(**values)
    if source.endswith("+init"):
        p = p.update(initial_state="fullscale")
    return p


def compare(x: np.ndarray, ref: np.ndarray) -> dict:
    """Pearson r, median relative difference and ratio of means of x against ref (254 rates)."""
    ok = np.isfinite(x) & np.isfinite(ref)
    x, ref = x[ok], ref[ok]
    pos = ref > 0
    return {"mean": float(x.mean()), "r": float(np.corrcoef(x, ref)[0, 1]) if x.std() > 0 else float("nan"),
            "median_rel_diff": float(np.median(np.abs(x[pos] - ref[pos]) / ref[pos])),
            "mean_ratio": float(x.mean() / ref.mean())}


def run_one(scale: float, chi: float, source: str, t_sim: float, t_discard: float, threads: int,
            work: Path, out: Path) -> None:
    """One simulation and its comparisons; writes ``out`` (JSON)."""
    from mam_xr import analysis, atlas, structure, theory
    from mam_xr.flat import to_flat_vector
    from mam_xr.simulation import simulate

    p = params_for(scale, chi, source, t_sim, threads)
    t0 = time.perf_counter()
    full = to_flat_vector(atlas.fullscale_fixed_point(p)["rate"])
    s = structure.build(p)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fp = theory.fixed_point(s, p, warn=False)
    small = to_flat_vector(fp["rate"])
    row = {"scale": scale, "chi": chi, "chi_I": p.network.connection.chi_I, "source": source,
           "t_sim_ms": t_sim, "t_discard_ms": t_discard, "threads": threads, "engine": "brian2",
           "params_label": p.label(), "theory_s": time.perf_counter() - t0,
           "fullscale_theory_mean": float(full.mean()),
           "downscaled_theory": {**compare(small, full), "converged": bool(fp["converged"]),
                                 "eigenvalue_max_real": float(fp["eigenvalue_max_real"])},
           "fullscale_theory_rates": full.tolist(), "downscaled_theory_rates": small.tolist()}
    store = work / f"{key_of(scale, chi, source)}.zarr"
    if store.exists():
        shutil.rmtree(store)                       # left by an interrupted run of this benchmark
    t1 = time.perf_counter()
    run = simulate(p, store=store, progress=False, engine_options={"save_connectivity": False})
    row["simulate_wall_s"] = time.perf_counter() - t1
    res = analysis.analyze(store, ["rates", "irregularity", "correlation"], store=False,
                           t_min_ms=t_discard)
    sim = to_flat_vector(res["rates"]["rate"])
    lvr = to_flat_vector(res["irregularity"]["lvr"])
    cc = to_flat_vector(res["correlation"]["corrcoef"])
    sp = run.spikes()
    n_total = float(np.sum(run.root["spikes"].attrs["n_neurons"]))
    edges = np.arange(0.0, t_sim + 1e-9, 100.0)
    counts, _ = np.histogram(sp.times, bins=edges)
    row.update({
        "simulated": {**compare(sim, full), "lvr_mean": float(np.nanmean(lvr)),
                      "cc_mean": float(np.nanmean(cc))},
        "simulated_vs_downscaled_theory": compare(sim, small),
        "simulated_rates": sim.tolist(), "lvr": lvr.tolist(), "cc": cc.tolist(),
        "transient_bins_ms": edges.tolist(),
        "transient_mean_rate": (counts / n_total / 0.1).tolist(),
        "neurons": n_total, "spikes": int(len(sp)),
        "whole_s": time.perf_counter() - t0,
    })
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(row, indent=1))
    shutil.rmtree(store)                           # created above by this benchmark


def load_rows(cache: Path) -> list[dict]:
    rows = [json.loads(f.read_text()) for f in sorted(cache.glob("*.json"))]
    return sorted(rows, key=lambda r: (r["chi"], r["scale"], SOURCES.index(r["source"])))


def breakdown(rows: list[dict]) -> str:
    """Where the simulation is close to the full-scale theory: per population type and area."""
    from mam_xr.flat import AREAS, FLAT_AREA, FLAT_POP, POPS

    pops, areas = np.array(FLAT_POP), np.array(FLAT_AREA)
    lines = ["", "Simulated / full-scale theory: median ratio per population type, share of the 254 "
             "populations within a factor 2, and the areas with the lowest and highest ratio of "
             "mean rates:", "",
             "| χ | scale | rates source | " + " | ".join(POPS) + " | within ×2 | lowest areas | highest areas |",
             "|" + "---|" * (len(POPS) + 6)]
    for r in rows:
        sim, full = np.array(r["simulated_rates"]), np.array(r["fullscale_theory_rates"])
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = sim / full
        by_pop = [f"{np.nanmedian(ratio[pops == q]):.2f}" for q in POPS]
        within = float(np.mean((ratio > 0.5) & (ratio < 2.0)))
        ar = sorted(((float(sim[areas == a].mean() / full[areas == a].mean()), a) for a in AREAS))
        fmt = lambda xs: ", ".join(f"{a} {v:.2f}" for v, a in xs)  # noqa: E731
        lines.append(f"| {r['chi']:g} | {r['scale']:g} | {r['source']} | " + " | ".join(by_pop)
                     + f" | {within:.2f} | {fmt(ar[:3])} | {fmt(ar[-3:])} |")
    return "\n".join(lines) + "\n"


def write_table(rows: list[dict], out: Path) -> str:
    head = ("| χ | scale | rates source | full-scale theory mean | down-scaled theory mean | its r | "
            "simulated mean | r | median rel. diff. | mean ratio | LvR | CC | sim. time (s) |")
    lines = [head, "|" + "---|" * 13]
    flat = []
    for r in rows:
        d, s = r["downscaled_theory"], r["simulated"]
        lines.append(f"| {r['chi']:g} | {r['scale']:g} | {r['source']} | {r['fullscale_theory_mean']:.3f} | "
                     f"{d['mean']:.3f} | {d['r']:.3f} | {s['mean']:.3f} | {s['r']:.3f} | "
                     f"{s['median_rel_diff']:.3f} | {s['mean_ratio']:.3f} | {s['lvr_mean']:.3f} | "
                     f"{s['cc_mean']:.4f} | {r['simulate_wall_s']:.0f} |")
        flat.append({"chi": r["chi"], "scale": r["scale"], "source": r["source"],
                     "fullscale_theory_mean": r["fullscale_theory_mean"],
                     **{f"downscaled_theory_{k}": v for k, v in d.items()},
                     **{f"simulated_{k}": v for k, v in s.items()},
                     "simulate_wall_s": r["simulate_wall_s"]})
    text = "\n".join(lines) + "\n"
    tr = ["", "Mean rate (spikes/s, all neurons) in 100-ms bins from 0 ms:", "",
          "| χ | scale | rates source | " + " | ".join(f"{int(t)}" for t in np.arange(0, 1000, 100)) + " |",
          "|" + "---|" * 13]
    for r in rows:
        vals = r["transient_mean_rate"][:10]
        tr.append(f"| {r['chi']:g} | {r['scale']:g} | {r['source']} | " + " | ".join(f"{v:.2f}" for v in vals)
                  + " |")
    text += "\n".join(tr) + "\n"
    text += breakdown(rows)
    out.mkdir(parents=True, exist_ok=True)
    (out / "fidelity.md").write_text(text)
    if flat:
        with open(out / "fidelity.csv", "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=list(flat[0]))
            w.writeheader()
            w.writerows(flat)
    return text


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scales", default="0.005,0.01,0.02,0.05")
    ap.add_argument("--chis", default="1.0,1.9")
    ap.add_argument("--sources", default="upstream,theory")
    ap.add_argument("--t-sim", type=float, default=1000.0)
    ap.add_argument("--t-discard", type=float, default=300.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--lock", default=os.environ.get("MAM_XR_BIGRUN_LOCK"),
                    help="flock file for runs at scale >= --lock-scale")
    ap.add_argument("--lock-scale", type=float, default=0.02)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    ap.add_argument("--work", type=Path, default=None, help="directory of the temporary run stores")
    ap.add_argument("--table-only", action="store_true")
    ap.add_argument("--one", nargs=3, metavar=("SCALE", "CHI", "SOURCE"), help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    cache = a.out / "fidelity"
    work = a.work or Path(tempfile.gettempdir()) / "mam_xr_bench_fidelity"
    if a.one:
        s, c, src = float(a.one[0]), float(a.one[1]), a.one[2]
        run_one(s, c, src, a.t_sim, a.t_discard, a.threads, work, cache / f"{key_of(s, c, src)}.json")
        return 0
    if not a.table_only:
        for src in a.sources.split(","):
            if src not in SOURCES:
                ap.error(f"--sources={src!r} is invalid: expected some of {', '.join(SOURCES)}")
        work.mkdir(parents=True, exist_ok=True)
        for scale in (float(x) for x in a.scales.split(",")):
            for chi in (float(x) for x in a.chis.split(",")):
                for src in a.sources.split(","):
                    key = key_of(scale, chi, src)
                    if (cache / f"{key}.json").is_file():
                        continue
                    cmd = [sys.executable, str(Path(__file__).resolve()), "--one", f"{scale:g}", f"{chi:g}", src,
                           "--t-sim", f"{a.t_sim:g}", "--t-discard", f"{a.t_discard:g}",
                           "--threads", str(a.threads), "--out", str(a.out),
                           "--work", str(work)]
                    if a.lock and scale >= a.lock_scale:
                        cmd = ["flock", a.lock, *cmd]
                    print(f"{time.strftime('%H:%M:%S')} {key}", flush=True)
                    t0 = time.perf_counter()
                    with open(work / f"{key}.log", "w") as log:
                        rc = subprocess.call(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
                    print(f"  exit {rc} after {time.perf_counter() - t0:.0f} s"
                          + ("" if rc == 0 else f" (log: {work / (key + '.log')})"), flush=True)
                    write_table(load_rows(cache), a.out)
    print(write_table(load_rows(cache), a.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
