"""Benchmark of mam_xr.sweep: parallel points on a LocalCluster, and a theory-only χ sweep.

usage::

    MAM_XR_DATA_DIR=../shared/upstream-data python benchmarks/bench_sweep.py [--part local|theory|all]
        [--scale 0.002] [--areas 4] [--t-sim 1000] [--analyse] [--workdir DIR]

``local``: the same 4 simulating points (χ = 1.0, 1.5, 1.9, 2.1; NEST with
one thread per point, scale ``--scale``, the first ``--areas`` areas with
``het_poisson_stat`` replacement, ``--t-sim`` ms) run as a sweep on a
LocalCluster with 1 worker and with 2 workers, each into a fresh directory;
prints both wall times (run_sweep call to return, cluster start and combine
included) and the speed-up (goal >= 1.7x on 2 cores).  Upstream has no sweep
machinery: its χ study is one job per point, run by hand.

``theory``: the paper's 11-point χ sweep (χ = 1.0, 1.4, 1.5, 1.6, 1.7, 1.75,
1.8, 1.9, 2.0, 2.1, 2.5; χ_I = 1 at χ = 1, else 2) at full scale, theory only
(``run="theory"``, serial, in-process: one structure rescaled per point, one
result file), with ``integrate`` (upstream's procedure) and with
``fixed_point``; prints the wall time of the ``run_sweep`` call (combine
included) against the 1 s goal, the time spent inside mam_xr.theory and on
structures, and the ratio to upstream's 11 x (2.8 s structure + 0.63 s
integrate_siegert) (upstream's published timings).  For comparison it times the same
sweep with a structure rebuilt per point (``fast_theory=False``, with the
largest rate difference between the two) and mam_xr.theory.sweep (fixed
points by continuation, χ_I held at 2).

BLAS is limited to one thread (as in bench_theory.py: the 254-population
problems do not gain from threads on a shared 2-core machine).
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

PAPER_CHIS = [1.0, 1.4, 1.5, 1.6, 1.7, 1.75, 1.8, 1.9, 2.0, 2.1, 2.5]
UPSTREAM_STRUCTURE_S = 2.8     # full-scale structure (data scripts + MultiAreaModel), upstream
UPSTREAM_THEORY_S = 0.63       # integrate_siegert, full-scale default, upstream


def load() -> str:
    try:
        return f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
    except OSError:
        return ""


def _spin(n: int) -> float:
    t0 = time.perf_counter()
    x = 0
    for i in range(n):
        x += i
    return time.perf_counter() - t0


def parallel_capacity(n: int = 20_000_000) -> float:
    """Speed-up of 2 processes over 1 on pure-Python CPU work right now (2.0 on 2 idle cores).

    The machine is shared: this control tells how much parallel capacity the
    sweep could have had while it was measured.
    """
    import multiprocessing as mp

    t0 = time.perf_counter()
    _spin(n)
    _spin(n)
    seq = time.perf_counter() - t0
    with mp.get_context("spawn").Pool(2) as pool:
        t0 = time.perf_counter()
        pool.map(_spin, [n, n])
        par = time.perf_counter() - t0
    return seq / par


def bench_local(args, workdir: Path) -> dict:
    from mam_xr.flat import AREAS
    from mam_xr.sweep import SweepSpec, run_sweep, sweep_status

    overrides = {"scale": args.scale, "t_sim": args.t_sim, "areas_simulated": list(AREAS[:args.areas]),
                 "threads": 1}
    spec = SweepSpec.chi([1.0, 1.5, 1.9, 2.1], overrides=overrides,
                         run="simulate+analyse" if args.analyse else "simulate",
                         analysis_options={"t_min_ms": min(500.0, args.t_sim / 2)}, name="bench-local")
    out = {"capacity_before": parallel_capacity()}
    print(f"  control: 2 processes vs 1 on pure CPU work now: {out['capacity_before']:.2f}x  [{load()}]")
    for workers in (1, 2):
        d = workdir / f"local-{workers}"
        shutil.rmtree(d, ignore_errors=True)
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            run_sweep(spec, d, cluster="local", n_workers=workers, threads=1, progress=False)
        wall = time.perf_counter() - t0
        st = sweep_status(d)
        secs = [e["seconds"] for e in st["points"]]
        out[workers] = {"wall_s": wall, "point_s": secs, "failed": st["counts"]["failed"]}
        print(f"  {workers} worker(s): {wall:6.1f} s wall; points {', '.join(f'{s:.1f}' for s in secs)} s; "
              f"failed {st['counts']['failed']}  [{load()}]", flush=True)
    speedup = out[1]["wall_s"] / out[2]["wall_s"]
    out["capacity_after"] = parallel_capacity()
    print(f"  control: 2 processes vs 1 on pure CPU work now: {out['capacity_after']:.2f}x  [{load()}]")
    print(f"4-point sweep, 2 workers vs 1 worker: {speedup:.2f}x (goal >= 1.7x; "
          f"the machine offered {min(out['capacity_before'], out['capacity_after']):.2f}-"
          f"{max(out['capacity_before'], out['capacity_after']):.2f}x)")
    out["speedup"] = speedup
    return out


def _theory_run(spec, d: Path, **kw) -> dict:
    from mam_xr.sweep import run_sweep, sweep_status

    shutil.rmtree(d, ignore_errors=True)
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = run_sweep(spec, d, progress=False, **kw)
    wall = time.perf_counter() - t0
    st = sweep_status(d)
    inside = sum(e["timings"].get("theory", 0.0) + e["timings"].get("structure", 0.0) for e in st["points"])
    return {"wall_s": wall, "theory_s": inside, "ds": ds, "execution": st["execution"],
            "converged": [bool(x) for x in ds["theory_converged"].values]}


def bench_theory(args, workdir: Path) -> dict:
    from mam_xr import theory
    from mam_xr.params import Params
    from mam_xr.structure import build
    from mam_xr.sweep import SweepSpec

    build(Params())  # warm the anatomy cache, as a second sweep in a session would be
    upstream = len(PAPER_CHIS) * (UPSTREAM_STRUCTURE_S + UPSTREAM_THEORY_S)
    out = {}
    for method in ("integrate", "fixed_point"):
        spec = SweepSpec.chi(PAPER_CHIS, preset="default", theory_options={"method": method},
                             name=f"bench-theory-{method}")
        r = _theory_run(spec, workdir / f"theory-{method}")
        ex = r.pop("execution")
        r.pop("ds")
        out[method] = r
        conv = r["converged"]
        print(f"11-point theory-only chi sweep at full scale ({method}; chi = {PAPER_CHIS}, chi_I = 1 at "
              f"chi = 1 else 2): {r['wall_s']:.2f} s (goal <= 1 s: {'met' if r['wall_s'] <= 1.0 else 'NOT met'}; "
              f"{r['theory_s']:.2f} s inside mam_xr.theory + structures, {ex.get('structure_builds')} build(s), "
              f"path: {ex.get('theory_path')}; upstream 11 x ({UPSTREAM_STRUCTURE_S} + {UPSTREAM_THEORY_S}) s = "
              f"{upstream:.1f} s, ratio {r['wall_s'] / upstream:.3f}); converged {sum(conv)}/{len(conv)}  "
              f"[{load()}]", flush=True)
    # The same sweep with a structure rebuilt per point and a result file per point
    # (the path taken before the fast one, and still for other parameters).
    spec = SweepSpec.chi(PAPER_CHIS, preset="default", name="bench-theory-rebuild")
    fast = _theory_run(spec, workdir / "theory-fast")
    slow = _theory_run(spec, workdir / "theory-rebuild", fast_theory=False)
    diff = float(abs(fast["ds"]["theory_rate"] - slow["ds"]["theory_rate"]).max())
    rel = float((abs(fast["ds"]["theory_rate"] - slow["ds"]["theory_rate"])
                 / abs(slow["ds"]["theory_rate"]).where(slow["ds"]["theory_rate"] > 0)).max())
    out["repeat"] = {"wall_s": fast["wall_s"], "theory_s": fast["theory_s"]}
    out["rebuild"] = {"wall_s": slow["wall_s"], "theory_s": slow["theory_s"], "max_abs_rate_diff": diff,
                      "max_rel_rate_diff": rel}
    print(f"  same sweep (integrate) again in this process, into a new directory (imports warm): "
          f"{fast['wall_s']:.2f} s (goal <= 1 s: {'met' if fast['wall_s'] <= 1.0 else 'NOT met'}; "
          f"{fast['theory_s']:.2f} s inside theory + structures)  [{load()}]", flush=True)
    print(f"  same sweep, structure built per point and a result file per point (fast_theory=False): "
          f"{slow['wall_s']:.2f} s ({slow['theory_s']:.2f} s inside theory + structures); largest rate "
          f"difference to the fast path {diff:.1e} spikes/s ({rel:.1e} relative)  [{load()}]", flush=True)
    p = Params().update(chi=1.0, chi_I=2.0)
    s = build(p)
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theory.sweep(s, "chi", PAPER_CHIS, p, chi_I=2.0)
    t_sw = time.perf_counter() - t0
    out["theory.sweep_s"] = t_sw
    print(f"  for comparison, mam_xr.theory.sweep (fixed points by continuation, chi_I = 2 throughout): "
          f"{t_sw:.2f} s")
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--part", choices=("local", "theory", "all"), default="all")
    ap.add_argument("--scale", type=float, default=0.002)
    ap.add_argument("--areas", type=int, default=4)
    ap.add_argument("--t-sim", type=float, default=1000.0)
    ap.add_argument("--analyse", action="store_true", help="also analyse every point")
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--json", default=None, help="write the numbers to this file")
    args = ap.parse_args()
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="bench_sweep_"))
    workdir.mkdir(parents=True, exist_ok=True)
    report = {"machine": load()}
    if args.part in ("theory", "all"):
        report["theory"] = bench_theory(args, workdir)
    if args.part in ("local", "all"):
        report["local"] = bench_local(args, workdir)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1, default=str))


if __name__ == "__main__":  # required: LocalCluster workers import this file
    main()
