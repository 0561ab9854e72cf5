"""The results of a sweep: its status, the combined Dataset and a summary table.

Each complete point's results (its ``result.nc``, or its part of a batch file
of the theory fast path) are placed at its coordinates in one Dataset with the
sweep dimension(s), written to ``sweep.zarr`` (:func:`combine`) and opened
lazily (:func:`open_sweep`).
"""

from __future__ import annotations

import json
import os
import shutil
import warnings
from pathlib import Path

import numpy as np
import xarray as xr

from ..errors import ParameterError, StoreError, invalid
from ..params import parameter_path
from .point import RESULT, open_point_result, read_json, store_ready, without_attrs
from .spec import SWEEP_FORMAT, SweepSpec, dim_names, leaves

__all__ = ["sweep_status", "combine", "open_sweep", "summary_table", "result_path", "write_zarr"]


def result_path(directory: Path, name: str, info: dict | None) -> Path:
    """Where a point's results are: ``points/<name>/result.nc``, or (points of a fast
    theory-only sweep) the batch file named by ``result`` in its point.json."""
    rel = (info or {}).get("result")
    return Path(directory) / rel if rel else Path(directory) / "points" / name / RESULT


def _open_result(path: Path, label: str, batches: dict) -> xr.Dataset:
    """One point's results from its own file or from a batch file (opened once, cached)."""
    if path.name == RESULT:
        return open_point_result(path)
    if path not in batches:
        # Without Dask (chunks=None): loading a dask array would import distributed (~0.3 s).
        batch = xr.open_dataset(str(path), engine="zarr", chunks=None, consolidated=False,
                                zarr_format=3).load()
        batches[path] = (batch, {str(lab): k for k, lab in enumerate(batch["label"].values)})
    batch, where = batches[path]
    if label not in where:
        raise StoreError(invalid("result", str(path), f"a batch file with the point {label}"))
    return batch.isel(point=where[label], drop=True).drop_vars("label", errors="ignore")


def write_zarr(ds: xr.Dataset, path: Path, sweep_dims=()) -> None:
    """Write ``ds`` to a Zarr v3 store at ``path`` (via a temporary name).

    In-memory variables are chunked along the sweep dims so that a chunk holds
    at most ~32 MB (whole along the other dims): a theory sweep is one chunk
    per variable, a sweep of long time series one or a few points per chunk.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    out = store_ready(ds)
    for name, var in out.variables.items():
        if var.chunks is not None or not var.ndim:
            continue
        per_point = var.dtype.itemsize * int(np.prod([n for d, n in var.sizes.items() if d not in sweep_dims]))
        n_points = max(1, (32 * 2**20) // max(1, per_point))
        chunks, left = [], n_points
        for d, n in zip(var.dims, var.shape):
            if d in sweep_dims:
                c = max(1, min(n, left))
                left = max(1, left // max(1, c))
                chunks.append(c)
            else:
                chunks.append(n)
        var.encoding["chunks"] = tuple(chunks)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*does not have a Zarr V3 specification.*")
        out.to_zarr(str(tmp), mode="w", consolidated=False, zarr_format=3)
    if path.exists():
        shutil.rmtree(path)
    os.replace(tmp, path)


def sweep_status(directory) -> dict:
    """The manifest of a sweep directory (points, status, errors, timings), refreshed from the points."""
    directory = Path(directory)
    manifest = read_json(directory / "manifest.json")
    if manifest is None:
        raise StoreError(invalid("directory", str(directory), "a sweep directory with a manifest.json"))
    for e in manifest["points"]:
        if e.get("name"):
            info = read_json(directory / "points" / e["name"] / "point.json") or {}
            if info.get("label") == e["label"]:
                for k in ("status", "error", "started", "finished", "timings", "result", "attempts"):
                    if k in info:
                        e[k] = info[k]
                if info.get("status") == "complete" and not result_path(directory, e["name"], info).exists():
                    e["status"] = "failed"
                    e["error"] = f"{result_path(directory, e['name'], info).name} is missing"
    manifest["counts"] = {s: sum(e["status"] == s for e in manifest["points"])
                          for s in ("complete", "failed", "running", "pending")}
    return manifest


def _nan_like(template: xr.Dataset) -> xr.Dataset:
    out = template.copy()
    for name, var in template.data_vars.items():
        if var.dtype.kind == "f":
            out[name] = xr.full_like(var, np.nan)
        elif var.dtype.kind == "b":
            out[name] = xr.full_like(var, False)
        elif var.dtype.kind in "iu":
            out[name] = xr.full_like(var, np.nan, dtype=float)
        else:
            out[name] = xr.full_like(var, "", dtype=object) if var.dtype.kind == "O" else var
    return out


def combine(directory, *, write: bool = True) -> xr.Dataset:
    """Combine the points of a sweep directory into one Dataset with the sweep dimension(s).

    Each complete point's ``result.nc`` is opened and placed at its
    coordinates; failed or pending points hold NaN (False for flags).  The
    swept parameters are dimension coordinates; other parameters that vary
    between points (coupled ones such as ``chi_I``) are coordinates on the sweep
    dims.  ``point_complete`` (bool, sweep dims) marks the points with results.
    With ``write`` (default) the result is saved to ``sweep.zarr`` next to the
    points and returned lazily opened from there.
    """
    directory = Path(directory)
    manifest = sweep_status(directory)
    spec = SweepSpec.model_validate((read_json(directory / "sweep.json") or {})["spec"])
    dims, shape = list(manifest["dims"]), tuple(manifest["shape"])
    entries = manifest["points"]
    datasets: dict[tuple, xr.Dataset] = {}
    batches: dict = {}
    for e in entries:
        if e["status"] == "complete":
            datasets[tuple(e["index"])] = _open_result(result_path(directory, e["name"], e), e["label"],
                                                       batches)
    # Up to ~1 GB of results are combined in memory (fast); beyond, lazily with Dask.
    in_memory = sum(ds.nbytes for ds in datasets.values()) < 2**30
    datasets = {k: (ds.load() if in_memory else ds.chunk()) for k, ds in datasets.items()}
    template = next(iter(datasets.values()), xr.Dataset())
    empty = _nan_like(template)
    varying = _varying_params(entries, spec)
    flat = []
    for e in entries:
        ds = datasets.get(tuple(e["index"]), empty)
        ds = without_attrs(ds)
        flat.append(ds)
    nested = np.empty(shape, dtype=object)
    for e, ds in zip(entries, flat):
        nested[tuple(e["index"])] = ds
    combined = xr.combine_nested(nested.tolist(), concat_dim=dims, combine_attrs="drop",
                                 data_vars="all", coords="minimal", compat="override", join="outer")
    names = list(spec.parameters)
    for k, dim in enumerate(dims):
        if spec.mode == "zip":
            combined = combined.assign_coords({dim: list(spec.parameters[names[0]])})
            for other, dname in zip(names[1:], dim_names(spec.parameters)[1:]):
                combined = combined.assign_coords({dname: (dim, list(spec.parameters[other]))})
        else:
            combined = combined.assign_coords({dim: list(spec.parameters[names[k]])})
    for cname, values in varying.items():
        arr = np.empty(shape, dtype=object)
        for e in entries:
            arr[tuple(e["index"])] = values[tuple(e["index"])]
        arr = _homogeneous(arr)
        combined = combined.assign_coords({cname: (dims, arr)})
    complete = np.zeros(shape, dtype=bool)
    for e in entries:
        complete[tuple(e["index"])] = e["status"] == "complete"
    combined = combined.transpose(*dims, ...)
    if not in_memory:
        # One chunk per point along the sweep dims, whole along the others (Zarr needs
        # uniform chunks; statistics such as rate_distribution differ in length per point).
        combined = combined.chunk({d: (1 if d in dims else -1) for d in combined.dims})
    combined["point_complete"] = (dims, complete, {"long_name": "the point has results", "units": "1"})
    for dim in dims:
        combined[dim].attrs.update(long_name=f"swept parameter {dim}")
    combined.attrs = {
        "format": SWEEP_FORMAT, "name": spec.name, "run": "+".join(spec.run),
        "spec": spec.to_json(),
        "errors": json.dumps({json.dumps(e["coords"]): e["error"] for e in entries if e["status"] == "failed"}),
        "labels": json.dumps({json.dumps(e["coords"]): e["label"] for e in entries}),
    }
    if not write:
        return combined
    write_zarr(combined, directory / "sweep.zarr", sweep_dims=dims)
    return open_sweep(directory)


def _homogeneous(arr: np.ndarray) -> np.ndarray:
    vals = [v for v in arr.ravel() if v is not None]
    if vals and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in vals):
        return np.array([np.nan if v is None else v for v in arr.ravel()], dtype=float).reshape(arr.shape)
    if vals and all(isinstance(v, bool) for v in vals):
        return arr.astype(bool)
    return np.array(["" if v is None else str(v) for v in arr.ravel()], dtype=object).reshape(arr.shape)


def _varying_params(entries, spec) -> dict[str, dict]:
    """Leaf parameters (other than the swept ones) that differ between points -> {index: value}."""
    flat_by_point = {}
    for e in entries:
        if e.get("label"):
            try:
                p = spec.base.params(e["values"])
            except ParameterError:
                continue
            flat_by_point[tuple(e["index"])] = leaves(p.model_dump(mode="json"))
    if not flat_by_point:
        return {}
    swept = {parameter_path(n) for n in spec.parameters}
    keys = set().union(*(f.keys() for f in flat_by_point.values()))
    out = {}
    for key in sorted(keys):
        if key in swept or key[-1] == "threads":
            continue
        vals = [f.get(key) for f in flat_by_point.values()]
        if any(json.dumps(v) != json.dumps(vals[0]) for v in vals):
            name = key[-1] if key[-1] not in out else "_".join(key[-2:])
            out[name] = {idx: f.get(key) for idx, f in flat_by_point.items()}
            for e in entries:
                out[name].setdefault(tuple(e["index"]), None)
    return out


def open_sweep(directory) -> xr.Dataset:
    """The combined Dataset of a sweep directory, lazily opened from ``sweep.zarr``."""
    path = Path(directory) / "sweep.zarr"
    if not path.exists():
        raise StoreError(invalid("directory", str(directory), "a sweep directory with sweep.zarr "
                                 "(run the sweep, or call mam_xr.sweep.combine)"))
    ds = xr.open_zarr(str(path), consolidated=False, zarr_format=3)
    # Small things eagerly: string coords as plain numpy str (as in every mam_xr
    # Dataset), the non-index coords (coupled parameters) and the completion flags.
    # They are read without Dask (computing a dask array imports distributed, ~0.3 s).
    plain = xr.open_dataset(str(path), engine="zarr", chunks=None, consolidated=False, zarr_format=3)
    fixes = {}
    for name, var in ds.coords.items():
        if var.dtype.kind in "OT":
            fixes[name] = (var.dims, np.array(plain[name].values.tolist(), dtype=str), var.attrs)
        elif name not in ds.indexes:
            fixes[name] = plain[name].load()
    ds = ds.assign_coords(fixes)
    if "point_complete" in ds:
        ds["point_complete"] = plain["point_complete"].load()
    return ds


#: Rows of :func:`summary_table` before the rest is summarised in one line (one screen).
SUMMARY_ROWS = 20


def summary_table(directory, ds: xr.Dataset | None = None, *, max_rows: int = SUMMARY_ROWS) -> str:
    """A one-screen text table of a sweep: point, status, time, mean rate, where it is stored.

    One row per point (its coordinates), its status, its wall time (s), the
    mean rate over populations (spikes/s; simulated if the sweep simulates,
    else the theory's) and its result file relative to ``directory``; at most
    ``max_rows`` rows in point order (failed points always among them), then a
    line with the counts and the combined store.  ``ds`` is the combined
    Dataset (default: opened from ``directory`` if it has ``sweep.zarr``).
    """
    directory = Path(directory)
    st = sweep_status(directory)
    if ds is None and (directory / "sweep.zarr").exists():
        ds = open_sweep(directory)
    rate_var = next((v for v in ("rates_rate", "theory_rate") if ds is not None and v in ds), None)
    means = None
    if rate_var is not None:
        means = ds[rate_var].mean([d for d in ("area", "pop") if d in ds[rate_var].dims]).compute()
    rate_head = {"rates_rate": "mean rate (sim)", "theory_rate": "mean rate (theory)"}.get(
        rate_var, "mean rate")
    rows = []
    for e in st["points"]:
        point = ", ".join(f"{k}={v}" for k, v in e["coords"].items())
        seconds = e.get("seconds")
        if seconds is None and e.get("finished") and e.get("started"):
            seconds = e["finished"] - e["started"]
        rate = ""
        if means is not None and e["status"] == "complete":
            try:
                rate = f"{float(means.sel(e['coords'])):.4g}"
            except (KeyError, ValueError, TypeError):
                rate = ""
        where = ""
        if e["status"] == "complete" and e.get("name"):
            where = os.path.relpath(result_path(directory, e["name"], e), directory)
            if "simulate" in st.get("run", []):
                where += ", " + os.path.join("points", e["name"], "run.zarr")
        elif e.get("error"):
            where = str(e["error"]).splitlines()[0][:60]
        rows.append((point, e["status"], "" if seconds is None else f"{seconds:.2f}", rate, where))
    order = sorted(range(len(rows)), key=lambda k: rows[k][1] == "complete")   # failed first
    shown = [rows[k] for k in sorted(order[:max_rows])]
    head = ("point", "status", "time (s)", rate_head, "stored in (under the sweep directory) / error")
    widths = [max(len(str(r[i])) for r in [head, *shown]) for i in range(len(head))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in [head, *shown]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    if len(rows) > len(shown):
        lines.append(f"... and {len(rows) - len(shown)} more complete points (mam_xr.sweep.sweep_status)")
    c = st["counts"]
    lines.append(f"sweep {st['name']}: {c['complete']} complete, {c['failed']} failed"
                 + (f", {c['pending'] + c['running']} not run" if c["pending"] + c["running"] else "")
                 + f"; results in {directory / 'sweep.zarr'}")
    return "\n".join(lines)
