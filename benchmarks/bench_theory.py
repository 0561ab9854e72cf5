"""Benchmark of mam_xr.theory against upstream's published timings.

usage: MAM_XR_DATA_DIR=../shared/upstream-data python benchmarks/bench_theory.py [--repeat N]

Prints, per reference case, the wall time of ``integrate`` (upstream: NEST
``integrate_siegert`` 0.60 / 0.68 / 0.63 s) and of ``fixed_point``, the
agreement with upstream's rates (goal for ``integrate``: <= 30 ms, i.e.
>= 20x faster than upstream), and the wall times of theory-only chi sweeps at
full scale (chi_I = 2): 11 points from 1.0 to 2.0 (target <= 1 s) and 50 points
from 1.0 to 2.5 (target <= 2 s; the low-activity branch ends near chi = 2.1,
where the sweep restarts and continues on the high-activity branch).  Best of
``--repeat`` runs.  BLAS is limited to one thread (set before numpy is imported): the
254 x 254 problems are too small to gain from threads, and on a shared
2-core machine threaded OpenBLAS is several times slower.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from mam_xr import theory  # noqa: E402
from mam_xr.flat import structure_from_flat, to_flat_vector  # noqa: E402
from mam_xr.params import Params  # noqa: E402

REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference"
UPSTREAM_INTEGRATE_S = {"downscaled_tutorial": 0.60, "fullscale_tutorial": 0.68,
                        "fullscale_default": 0.63}
GOAL_INTEGRATE_S = 0.030
GOAL_SWEEP_50_S = 2.0


def structure(variant):
    with np.load(REFERENCE / f"structure_{variant}.npz") as f:
        r = {k: f[k] for k in f.files}
    return structure_from_flat(N=r["N"], K=r["K"], synapses=r["synapses"], W=r["W"], W_sd=r["W_sd"],
                               J=r["J"], add_DC_drive=r["add_DC_drive"], distances=r["distances"],
                               K_areas=r["K_areas"])


def best(f, repeat):
    times, out = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = f()
        times.append(time.perf_counter() - t0)
    return min(times), times, out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    params = {"downscaled_tutorial": Params.tutorial(),
              "fullscale_tutorial": Params.tutorial(scale=1.0, fullscale_rates=None),
              "fullscale_default": Params()}
    report = {}
    warnings.simplefilter("ignore", theory.ConvergenceWarning)
    for variant, p in params.items():
        s = structure(variant)
        with np.load(REFERENCE / f"theory_{variant}.npz") as f:
            up, up_traj = f["final_rates"], f["rates_trajectory"]
        t_int, ts, ds = best(lambda: theory.integrate(s, p), args.repeat)
        t_fp, _, fp = best(lambda: theory.fixed_point(s, p), args.repeat)
        rate, traj = to_flat_vector(ds["rate"]), to_flat_vector(ds["trajectory"])
        report[variant] = {
            "integrate_best_s": t_int, "integrate_all_s": ts,
            "upstream_integrate_s": UPSTREAM_INTEGRATE_S[variant],
            "speedup_vs_upstream": UPSTREAM_INTEGRATE_S[variant] / t_int,
            "converged_after_T": bool(ds["converged"]),
            "max_abs_change_last_step": float(ds["max_abs_change_last_step"]),
            "mean_rate": float(rate.mean()), "upstream_mean_rate": float(up.mean()),
            "final_rates_max_rel_err": float(np.max(np.abs(rate - up) / up)),
            "trajectory_max_rel_err": float(np.max(np.abs(traj - up_traj)
                                                   / np.where(up_traj > 0, up_traj, 1.0))),
            # the default case is chaotic after ~5 ms: compare the first 5 ms (51 samples)
            "trajectory_first_5ms_max_rel_err": float(np.max(
                np.abs(traj[:, :51] - up_traj[:, :51]) / np.where(up_traj[:, :51] > 0, up_traj[:, :51], 1.0))),
            "fixed_point_best_s": t_fp, "fixed_point_converged": bool(fp["converged"]),
            "fixed_point_mean_rate": float(fp["rate"].mean()),
            "fixed_point_max_residual": float(np.abs(fp["residual"]).max()),
            "fixed_point_eigenvalue_max_real": float(fp["eigenvalue_max_real"]),
            "fixed_point_stable": bool(fp["stable"]),
        }
    s = structure("fullscale_tutorial")
    values = np.round(np.linspace(1.0, 2.0, 11), 10)
    t_sw, ts, sw = best(lambda: theory.sweep(s, "chi", values, params["fullscale_tutorial"],
                                             chi_I=2.0), args.repeat)
    report["chi_sweep_fullscale_11_points"] = {
        "best_s": t_sw, "all_s": ts, "target_s": 1.0, "chi": values.tolist(), "chi_I": 2.0,
        "converged": sw["converged"].values.tolist(), "stable": sw["stable"].values.tolist(),
        "eigenvalue_max_real": np.round(sw["eigenvalue_max_real"].values, 6).tolist(),
        "mean_rate": np.round(sw["rate"].mean(("area", "pop")).values, 6).tolist(),
    }
    values50 = np.linspace(1.0, 2.5, 50)
    t_50, ts50, sw50 = best(lambda: theory.sweep(s, "chi", values50, params["fullscale_tutorial"],
                                                 chi_I=2.0), args.repeat)
    report["chi_sweep_fullscale_50_points"] = {
        "best_s": t_50, "all_s": ts50, "target_s": GOAL_SWEEP_50_S, "chi": [1.0, 2.5, 50],
        "chi_I": 2.0, "n_converged": int(sw50["converged"].sum()),
        "n_stable": int(sw50["stable"].sum()),
        "restarted_at_chi": np.round(sw50["chi"].values[sw50["restarted"].values], 4).tolist(),
        "mean_rate_first_last": np.round(sw50["rate"].mean(("area", "pop")).values[[0, -1]], 4).tolist(),
    }
    print(json.dumps(report, indent=1))
    print("\nintegrate: " + ", ".join(
        f"{k} {1e3 * v['integrate_best_s']:.1f} ms ({v['speedup_vs_upstream']:.1f}x upstream)"
        for k, v in report.items() if k in params) + f" (goal <= {1e3 * GOAL_INTEGRATE_S:.0f} ms)")
    print(f"11-point chi sweep at full scale: {t_sw:.3f} s (target <= 1 s)")
    r50 = report["chi_sweep_fullscale_50_points"]
    print(f"50-point chi sweep 1.0-2.5 at full scale: {t_50:.3f} s (target <= {GOAL_SWEEP_50_S:.0f} s; "
          f"{r50['n_converged']}/50 converged, restarted at chi = {r50['restarted_at_chi']})")


if __name__ == "__main__":
    main()
