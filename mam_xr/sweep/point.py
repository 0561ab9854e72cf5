"""One point of a sweep: its task file, its computation and its result file.

A point directory holds ``task.json`` (parameters and steps), ``point.json``
(status, error, timings), ``result.nc`` (its results) and, when it simulates,
``run.zarr`` and ``log.txt``.  :func:`run_point` runs a point from its
directory, normally in a fresh Python process started by
:func:`execute_point` (NEST's kernel is process-global).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import xarray as xr

from .. import theory
from ..params import Params
from ..store import check_unlocked
from ..structure import build, rescale
from .plan import Point
from .spec import SweepSpec

__all__ = ["RESULT", "run_point", "execute_point", "point_main", "prepare_point", "theory_dataset",
           "analysis_dataset", "prefixed", "without_attrs", "structure_for_theory", "store_ready",
           "atomic_write_json", "read_json", "open_point_result", "SHARED_DIMS"]


def atomic_write_json(path: Path, obj) -> None:
    """Write ``obj`` as JSON under a temporary name and rename it into place."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.write_text(json.dumps(obj, indent=1, sort_keys=True, default=str))
    os.replace(tmp, path)


def read_json(path: Path) -> dict | None:
    """The JSON content of ``path``, None if it is missing or unreadable."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError):
        return None


#: Dims shared by all results; any other dim of a statistic is prefixed with its name.
SHARED_DIMS = ("area", "pop", "source_area", "source_pop", "draw")


def prefixed(ds: xr.Dataset, prefix: str) -> xr.Dataset:
    """``<prefix>_<var>`` names (unless the name already starts with it) and prefixed private dims.

    Statistics reuse names (``rate`` is a variable of ``rates`` and a dim of
    ``rate_distribution``; several have a ``time`` dim of their own), so in the
    one flat result Dataset every non-shared dim becomes ``<prefix>_<dim>``.
    """
    if "exists" in ds.data_vars:
        ds = ds.set_coords("exists")
    names = {}
    for v in ds.data_vars:
        names[v] = v if str(v).startswith(prefix) else f"{prefix}_{v}"
    dims = {d: f"{prefix}_{d}" for d in ds.dims if d not in SHARED_DIMS}
    out = ds.rename_vars(names)
    for d, n in dims.items():
        out = out.rename({d: n}) if d in out.coords else out.rename_dims({d: n})
    return out


#: The last structure built in this process for a theory point, keyed by its network
#: parameters other than chi and chi_I: (structure, chi, chi_I).
LAST_STRUCTURE: dict[str, tuple] = {}


def structure_for_theory(params) -> xr.Dataset:
    """The point's structure; along a χ / χ_I sweep rescaled from the previous point.

    :func:`mam_xr.structure.rescale` changes only the cortico-cortical
    couplings (and the DC drive of down-scaled networks) as a rebuild would,
    much faster than :func:`mam_xr.structure.build` (equal to it within a few
    1e-15 relative).
    """
    net = params.network.model_dump(mode="json")
    chi, chi_I = net["connection"].pop("chi"), net["connection"].pop("chi_I")
    key = json.dumps(net, sort_keys=True)
    hit = LAST_STRUCTURE.get(key)
    if hit is not None:
        structure, chi_old, chi_I_old = hit
        if (chi, chi_I) == (chi_old, chi_I_old):
            return structure
        return rescale(structure, chi=chi, chi_I=chi_I,
                       params=params.update(chi=chi_old, chi_I=chi_I_old))
    structure = build(params)
    LAST_STRUCTURE.clear()
    LAST_STRUCTURE[key] = (structure, chi, chi_I)
    return structure


def without_attrs(ds: xr.Dataset) -> xr.Dataset:
    """A shallow copy without Dataset attrs (variable attrs kept)."""
    out = ds.copy(deep=False)
    out.attrs = {}
    return out


def theory_dataset(params, options: dict, structure: xr.Dataset | None = None,
                    reuse: bool = True) -> xr.Dataset:
    """Theory rates of one point: :func:`mam_xr.theory.integrate` without the trajectory.

    ``options`` are keyword arguments of ``integrate`` plus ``method``
    (``"integrate"``, upstream's procedure, or ``"fixed_point"``:
    :func:`mam_xr.theory.fixed_point`, with its stability, without the gain
    matrix unless ``with_gain=True``) and ``trajectory`` (True keeps the
    integration's rate trajectory (area, pop, time)).  ``structure``: the point's
    structure if already at hand (the fast path of theory-only sweeps), else
    built (or, with ``reuse``, rescaled from this process's previous point).
    """
    options = dict(options)
    keep_trajectory = bool(options.pop("trajectory", False))
    method = options.pop("method", "integrate")
    if structure is None:
        if reuse:
            structure = structure_for_theory(params)
        else:
            structure = build(params)
    net = structure
    if method == "fixed_point":
        options.setdefault("with_gain", False)
        th = theory.fixed_point(net, params, warn=False, **options)
    else:
        th = theory.integrate(net, params, warn=False, **options)
    if not keep_trajectory:
        th = th.drop_vars("trajectory", errors="ignore").drop_dims("time", errors="ignore")
    out = prefixed(th, "theory")
    out.attrs = {"theory": json.dumps(th.attrs, default=str)}
    return out


def analysis_dataset(run, options: dict) -> xr.Dataset:
    """All statistics of one run (:func:`mam_xr.analysis.analyze`) as one flat Dataset.

    Variables are named ``<statistic>_<variable>`` (``rates_rate``,
    ``irregularity_lvr``, ``correlation_corrcoef``; a variable already named
    after its statistic, such as ``synchrony``, keeps its name).  Each
    statistic's definition attrs are kept in ``attrs["statistics"]`` (JSON).
    """
    from ..analysis import analyze  # heavy (Dask): imported when a point analyses

    out = analyze(run, **options)
    if isinstance(out, xr.Dataset):
        out = {"analysis": out}
    parts, definitions = [], {}
    for stat, ds in out.items():
        if isinstance(ds, xr.DataArray):
            ds = ds.to_dataset(name=ds.name or stat)
        definitions[stat] = ds.attrs
        parts.append(without_attrs(prefixed(ds, stat)))
    merged = xr.merge(parts, compat="override", join="outer", combine_attrs="drop")
    merged.attrs = {"statistics": json.dumps(definitions, default=str)}
    return merged


def _run_steps(params, steps, task: dict, point_dir: Path, timings: dict) -> list[xr.Dataset]:
    parts = []
    if "theory" in steps:
        t0 = time.perf_counter()
        parts.append(theory_dataset(params, task.get("theory_options", {}),
                                     reuse=task.get("reuse_structure", True)))
        timings["theory"] = time.perf_counter() - t0
    if "simulate" in steps:
        from ..simulation import simulate  # heavy (NEST or Brian2)

        t0 = time.perf_counter()
        run = simulate(params, store=point_dir / "run.zarr", overwrite=True, progress=False)
        timings["simulate"] = time.perf_counter() - t0
        if "analyse" in steps:
            t0 = time.perf_counter()
            parts.append(analysis_dataset(run, task.get("analysis_options", {})))
            timings["analyse"] = time.perf_counter() - t0
    return parts


def run_point(point_dir) -> dict:
    """Run one point from its ``task.json`` (normally in its own process) and write ``result.nc``.

    Writes ``point.json`` with status ``running``, then ``complete`` or
    ``failed`` (with the error).  The result store is written under a
    temporary name and renamed, so ``result.nc`` exists only when complete.
    """
    point_dir = Path(point_dir)
    task = json.loads((point_dir / "task.json").read_text())
    # the attempt is recorded now: a point killed with its driver still counts as tried
    info = {"status": "running", "label": task["label"], "coords": task["coords"],
            "started": time.time(), "pid": os.getpid(), "host": os.uname().nodename,
            "attempts": int(task.get("attempt", 1))}
    atomic_write_json(point_dir / "point.json", info)
    timings: dict[str, float] = {}
    try:
        params = Params.from_json(task["params"])
        steps = task["run"]
        import dask

        # Dask inside a point (analysis) uses the point's share of the cores only.
        with dask.config.set(num_workers=params.simulation.threads):
            parts = _run_steps(params, steps, task, point_dir, timings)
        attrs = {}
        for part in parts:
            attrs.update(part.attrs)
        result = xr.merge([without_attrs(q) for q in parts], compat="override", join="outer",
                          combine_attrs="drop") if parts else xr.Dataset()
        result.attrs.update(attrs)
        result.attrs.update({"label": task["label"], "params": task["params"],
                             "coords": json.dumps(task["coords"]), "run": "+".join(steps)})
        t0 = time.perf_counter()
        _write_point_result(result, point_dir / RESULT)
        timings["write"] = time.perf_counter() - t0
    except BaseException as exc:  # noqa: BLE001 - any failure of the point is its result
        info.update(status="failed", error=f"{type(exc).__name__}: {exc}", finished=time.time(),
                    timings=timings)
        atomic_write_json(point_dir / "point.json", info)
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise
        return info
    info.update(status="complete", finished=time.time(), timings=timings)
    atomic_write_json(point_dir / "point.json", info)
    return info


def _attr_value(v):
    """An attribute value both NetCDF3 and Zarr keep: str, int, float or a list of numbers, else JSON."""
    if isinstance(v, (str, float)) or (isinstance(v, int) and not isinstance(v, bool)):
        return v
    if isinstance(v, (list, tuple, np.ndarray)) and len(v) and all(
            isinstance(x, (int, float, np.number)) and not isinstance(x, (bool, np.bool_)) for x in v):
        return [float(x) for x in v]
    if isinstance(v, np.generic) and not isinstance(v, np.bool_):
        return v.item()
    return json.dumps(v, default=str)


def store_ready(ds: xr.Dataset) -> xr.Dataset:
    """Strings as object (Zarr v3 has no stable fixed-width unicode), attrs storable, no encodings."""
    out = ds.copy()
    for name, var in list(out.variables.items()):
        if var.dtype.kind in "UT":
            out[name] = var.astype(object)
    for name in out.variables:
        out[name].encoding = {}
        out[name].attrs = {k: _attr_value(v) for k, v in out[name].attrs.items()}
    out.attrs = {k: _attr_value(v) for k, v in out.attrs.items()}
    return out


RESULT = "result.nc"


def _write_point_result(ds: xr.Dataset, path: Path) -> None:
    """One point's results as a NetCDF3 file (SciPy writer; small and fast), renamed into place.

    A point's results are small (kB to a few MB), and a NetCDF file is written
    ~10x faster than a Zarr group of as many arrays; the combined sweep store is Zarr.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    store_ready(ds).to_netcdf(str(tmp), engine="scipy", format="NETCDF3_64BIT")
    os.replace(tmp, path)


def open_point_result(path: Path) -> xr.Dataset:
    """One point's ``result.nc``."""
    return xr.open_dataset(str(path), engine="scipy")


def _watch_parent() -> None:
    """Die with the process that started us (a killed sweep leaves no orphans).

    On Linux the kernel sends SIGKILL when the parent dies (PR_SET_PDEATHSIG);
    this works even while NEST holds the GIL.  Elsewhere a thread polls the
    parent pid.
    """
    expected = int(os.environ.get("MAM_XR_SWEEP_PARENT", os.getppid()))
    try:
        import ctypes
        import signal

        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(1, int(signal.SIGKILL), 0, 0, 0) != 0:  # 1 = PR_SET_PDEATHSIG
            raise OSError(ctypes.get_errno(), "prctl")
        linux = True
    except (OSError, AttributeError):
        linux = False
    if os.getppid() != expected:  # the parent died before prctl took effect
        os._exit(3)
    if linux:
        return

    def watch():
        while True:
            time.sleep(1.0)
            if os.getppid() != expected:
                os._exit(3)

    threading.Thread(target=watch, daemon=True).start()


def point_main(point_dir: str) -> int:
    """Entry of a point's own process: run it, exit 0 if complete, 1 if failed."""
    _watch_parent()
    info = run_point(point_dir)
    return 0 if info["status"] == "complete" else 1


def execute_point(point_dir: str, threads: int, subprocess_: bool = True) -> dict:
    """Run a point in a fresh Python process (or in this one) and return its point.json."""
    point_dir_p = Path(point_dir)
    t0 = time.time()
    if not subprocess_:
        return run_point(point_dir_p)
    env = dict(os.environ)
    # NEST uses its own threads; keep BLAS/OpenMP of numpy from adding more.
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = str(threads)
    env["MAM_XR_SWEEP_PARENT"] = str(os.getpid())
    for var in ("MAM_XR_DATA_DIR", "MAM_XR_CACHE_DIR"):  # relative paths mean the caller's cwd
        if env.get(var):
            env[var] = os.path.abspath(env[var])
    code = "import sys; from mam_xr.sweep.point import point_main; sys.exit(point_main(sys.argv[1]))"
    with open(point_dir_p / "log.txt", "ab") as log:
        proc = subprocess.run([sys.executable, "-c", code, str(point_dir_p)], stdout=log,
                              stderr=subprocess.STDOUT, env=env)
    info = read_json(point_dir_p / "point.json") or {}
    if proc.returncode != 0 and info.get("status") != "failed":
        tail = (point_dir_p / "log.txt").read_text(errors="replace").strip().splitlines()[-5:]
        info.update(status="failed", finished=time.time(), started=info.get("started", t0),
                    error=f"point process exited with code {proc.returncode}: " + " | ".join(tail))
        atomic_write_json(point_dir_p / "point.json", info)
    return info


def prepare_point(spec: SweepSpec, directory: Path, p: Point, attempts: int, reuse: bool = True) -> Path:
    """The point's clean directory ``points/<name>`` with its ``task.json`` (the old log kept)."""
    pdir = directory / "points" / p.name
    if pdir.exists():  # incomplete or failed before: start clean, keep the old log
        check_unlocked(pdir / "run.zarr", name="point store")  # never under a live writer
        old_log = (pdir / "log.txt").read_bytes() if (pdir / "log.txt").exists() else b""
        shutil.rmtree(pdir)
        pdir.mkdir(parents=True)
        if old_log:
            (pdir / "log.txt").write_bytes(old_log[-100_000:])
    else:
        pdir.mkdir(parents=True)
    task = {"label": p.label, "coords": p.coords, "values": p.values, "params": p.params.to_json(),
            "run": list(spec.run), "theory_options": spec.theory_options,
            "analysis_options": spec.analysis_options, "attempt": attempts, "reuse_structure": reuse}
    atomic_write_json(pdir / "task.json", task)
    return pdir
