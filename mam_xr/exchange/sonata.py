"""SONATA spike files (BMTK, libsonata, NEST's SONATA support) of a run store's spikes.

Layout (HDF5)::

    /spikes                          attrs: mam_xr_source, dt_ms, t_start_ms, t_stop_ms, status
    /spikes/<population>/            attrs: sorting (enum none=0, by_id=1, by_time=2), n_nodes
    /spikes/<population>/timestamps  float64 (n,), attr units = "ms"
    /spikes/<population>/node_ids    uint64 (n,)

One SONATA node population per mam_xr population, named by its label
("V1-23E"), with node_ids = the neuron index within the population (the
store's sender), so no id mapping is needed to go back; every population with
neurons gets a group (a silent one has empty datasets) and its ``n_nodes``.
Times are the correctly rounded decimal ms of the dt grid.  ``sorting``:
``by_time`` (default; ties by node id, the store's order) or ``by_id`` (by node
id, then time).  The root carries SONATA's ``magic`` and ``version`` attrs.
Written population by population (bounded memory).  docs/exchange.md.

Public functions: :func:`write_sonata`, :func:`read_sonata`, :func:`is_mam_xr_sonata`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .. import __version__
from ..errors import DataError, ParameterError, invalid
from ..store import RunStore
from .base import Exchanged, needs, population_spikes, steps_of, times_ms

__all__ = ["write_sonata", "read_sonata", "is_mam_xr_sonata", "SORTINGS", "MAGIC"]

#: Values of the ``sorting`` attribute (an HDF5 enum, as libsonata reads it).
SORTINGS = {"none": 0, "by_id": 1, "by_time": 2}
#: SONATA's file magic number (root attr ``magic``), version 0.1.
MAGIC = 0x0A7A
SOURCE = "mam_xr.exchange.sonata"


def _sorting_dtype(h5py):
    return h5py.enum_dtype(SORTINGS, basetype="u1")


def write_sonata(run: RunStore, path: Path, *, sorting: str = "by_time", compression: bool = False) -> None:
    """Write the run's spikes to a SONATA spike file at ``path``.

    ``compression=True`` gzips the datasets (about 3x smaller), but libsonata's
    wheels read no compressed dataset (their HDF5 has no deflate filter), so
    the default writes plain datasets, as BMTK does."""
    if sorting not in ("by_time", "by_id"):
        raise ParameterError(invalid("sorting", sorting, "one of by_time, by_id"))
    h5py = needs("h5py", "sonata")
    segs = run.segments()
    with h5py.File(path, "w") as f:
        f.attrs["magic"] = np.uint32(MAGIC)
        f.attrs["version"] = np.array([0, 1], dtype=np.uint32)
        g = f.create_group("spikes")
        g.attrs.update({"mam_xr_source": SOURCE, "mam_xr_version": __version__, "dt_ms": run.dt,
                        "t_start_ms": float(segs[0, 0]) if len(segs) else 0.0,
                        "t_stop_ms": float(segs[-1, 1]) if len(segs) else 0.0,
                        "status": str(run.status), "label": str(run.attrs.get("label") or "")})
        by = "time" if sorting == "by_time" else "neuron"
        for _, label, n, steps, senders in population_spikes(run, by=by):
            p = g.create_group(label)
            p.attrs.create("sorting", SORTINGS[sorting], dtype=_sorting_dtype(h5py))
            p.attrs["n_nodes"] = np.uint64(n)
            kw = {"compression": "gzip", "chunks": True} if compression and steps.size else {}
            ts = p.create_dataset("timestamps", data=times_ms(steps, run.dt), dtype=np.float64, **kw)
            ts.attrs["units"] = "ms"
            p.create_dataset("node_ids", data=senders.astype(np.uint64), dtype=np.uint64, **kw)


def is_mam_xr_sonata(path) -> bool:
    """True if ``path`` is a SONATA spike file this module wrote."""
    h5py = needs("h5py", "sonata")
    try:
        with h5py.File(path, "r") as f:
            return "spikes" in f and f["spikes"].attrs.get("mam_xr_source") == SOURCE
    except OSError:
        return False


def _sorting_name(value) -> str:
    if isinstance(value, bytes):
        value = value.decode()
    if isinstance(value, str):
        return value if value in SORTINGS else ("by_" + value if "by_" + value in SORTINGS else "none")
    names = {v: k for k, v in SORTINGS.items()}
    return names.get(int(value), "none")


def read_sonata(source, *, dt_ms: float | None = None) -> Exchanged:
    """The spikes of a SONATA spike file, one entry per node population.

    Reads any SONATA spike file (any ``sorting``, also BMTK's string values);
    the result is sorted by (time, node id).  Times are put back on the dt grid
    of the file's ``dt_ms`` attr (or ``dt_ms``) when known, so a file written by
    :func:`write_sonata` returns the store's times exactly.  ``n_neurons`` is the
    file's ``n_nodes`` or one more than the highest node id."""
    h5py = needs("h5py", "sonata")
    path = Path(source)
    if not path.is_file():
        raise DataError(invalid("source", str(path), "an existing SONATA spike file"))
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise DataError(invalid("source", str(path), f"a readable SONATA spike file (HDF5: {exc})")) from exc
    with f:
        if "spikes" not in f or not isinstance(f["spikes"], h5py.Group):
            raise DataError(invalid("source", str(path), "a SONATA spike file (no /spikes group)"))
        root = f["spikes"]
        if "timestamps" in root and isinstance(root["timestamps"], h5py.Dataset):
            raise DataError(invalid("source", str(path), "a SONATA spike file with node populations "
                                    "(/spikes/<population>/...; the older /spikes/gids layout is not read)"))
        dt = dt_ms if dt_ms is not None else root.attrs.get("dt_ms")
        dt = float(dt) if dt is not None else None
        spikes, n_neurons, sortings = {}, {}, {}
        for name, p in root.items():
            if not (isinstance(p, h5py.Group) and "timestamps" in p and "node_ids" in p):
                raise DataError(invalid("source", str(path), f"a SONATA spike file (/spikes/{name} lacks "
                                        "timestamps or node_ids)"))
            t = np.asarray(p["timestamps"][:], dtype=np.float64)
            ids = np.asarray(p["node_ids"][:], dtype=np.int64)
            if t.shape != ids.shape:
                raise DataError(invalid("source", str(path), f"a SONATA spike file (/spikes/{name}: "
                                        f"{t.size} timestamps but {ids.size} node_ids)"))
            units = p["timestamps"].attrs.get("units", "ms")
            units = units.decode() if isinstance(units, bytes) else str(units)
            if units == "s":
                t = t * 1000.0
            elif units != "ms":
                raise DataError(invalid("source", str(path), f"timestamps in ms or s (/spikes/{name} has "
                                        f"units={units!r})"))
            if dt is not None:
                t = times_ms(steps_of(t, dt), dt)
            o = np.lexsort((ids, t))
            spikes[name] = (t[o], ids[o])
            n = p.attrs.get("n_nodes")
            n_neurons[name] = int(n) if n is not None else (int(ids.max()) + 1 if ids.size else 0)
            sortings[name] = _sorting_name(p.attrs.get("sorting", "none"))
        a = dict(root.attrs)
    return Exchanged(spikes=spikes, n_neurons=n_neurons, dt_ms=dt,
                     t_start_ms=float(a["t_start_ms"]) if "t_start_ms" in a else None,
                     t_stop_ms=float(a["t_stop_ms"]) if "t_stop_ms" in a else None,
                     attrs={"sorting": sortings, "label": str(a.get("label", ""))})
