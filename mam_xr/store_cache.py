"""The analysis cache of a run store: ``analysis/<name>/`` groups.

Each cached statistic is an xarray Dataset written with ``to_zarr`` into the
group ``analysis/<name>`` of the run store, with the JSON of the definition it
was computed from in its ``definition`` attr and the SHA-256 of every written
variable in its ``checksums`` attr (JSON; checked on read and by
:meth:`mam_xr.store.RunStore.verify`).  The fixed vocabulary (area and
population names, the ``exists`` mask of :mod:`mam_xr.flat`) is not written
(fewer Zarr arrays) and is restored on read.  A reader compares the stored
definition JSON with the one it wants; :mod:`mam_xr.analysis` decides what a
definition holds.  Layout: docs/run-store.md.

Public functions: :func:`read_cached`, :func:`write_cached`,
:func:`cached_if_current`, :func:`definition_json`, :func:`cache_group`.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import xarray as xr

from .errors import StoreError
from .flat import AREAS, POPS, exists
from .store import RunStore, checksum
from .store_read import as_run

__all__ = ["read_cached", "write_cached", "cached_if_current", "definition_json", "cache_group"]

#: Coordinates of the fixed vocabulary: not written, restored on read.
_VOCABULARY = {"area": list(AREAS), "pop": list(POPS), "source_area": list(AREAS)}


def cache_group(name: str) -> str:
    """Zarr group path of a cached statistic."""
    return f"analysis/{name}"


def definition_json(definition: dict) -> str:
    """Canonical JSON of a definition (sorted keys; arrays as lists)."""
    return json.dumps(definition, sort_keys=True,
                      default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o))


def read_cached(run, name: str) -> xr.Dataset | None:
    """The cached statistic ``name`` of a run store (path or RunStore), or None if absent.

    Raises StoreError when the group exists but cannot be read or fails its checksums."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        run = as_run(run, allow_incomplete=True)
    local = Path(run.path)
    if local.is_dir():     # one stat instead of two Zarr group listings
        if not (local / "analysis" / name / "zarr.json").is_file():
            return None
    elif "analysis" not in run.root or name not in run.root["analysis"]:
        return None
    try:
        ds = xr.open_zarr(run.path, group=cache_group(name), consolidated=False, zarr_format=3).load()
    except Exception as exc:  # noqa: BLE001 - a damaged cache is recomputed
        raise StoreError(f"run store {run.path!r}: analysis/{name} cannot be read: {exc}") from exc
    sums = ds.attrs.pop("checksums", None)    # storage detail: checked here, not returned
    sums = json.loads(sums) if isinstance(sums, str) else (sums or {})
    bad = [v for v, digest in sums.items() if v not in ds.variables or checksum(ds[v].values) != digest]
    if bad:
        raise StoreError(f"run store {run.path!r}: analysis/{name} is damaged (checksum mismatch in {bad})")
    ds = ds.assign_coords({c: np.array(v, dtype=str) for c, v in _VOCABULARY.items() if c in ds.dims})
    if "area" in ds.dims and "pop" in ds.dims:
        ds["exists"] = exists()
    for v in ds.variables:
        ds[v].encoding = {}
    return ds


def write_cached(run: RunStore, name: str, ds: xr.Dataset, definition: dict) -> None:
    """Write one statistic to ``analysis/<name>/`` (replacing it) with its definition JSON."""
    out = ds.drop_vars(["exists", *_VOCABULARY], errors="ignore")
    for v in out.variables:
        out[v].encoding = {}
    sums = {str(v): checksum(out[v].values) for v in out.variables}
    out.attrs = dict(out.attrs, definition=definition_json(definition), checksums=json.dumps(sums))
    out.to_zarr(run.path, group=cache_group(name), mode="w", consolidated=False, zarr_format=3)


def cached_if_current(run: RunStore, name: str, definition: dict) -> xr.Dataset | None:
    """The cached statistic if it was computed from exactly ``definition``, else None
    (also for a damaged cache, which the caller then recomputes)."""
    try:
        ds = read_cached(run, name)
    except StoreError:
        return None
    if ds is None or ds.attrs.get("definition") != definition_json(definition):
        return None
    return ds
