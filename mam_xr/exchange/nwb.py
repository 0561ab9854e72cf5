"""NWB (Neurodata Without Borders) files of a run store's spikes, written with pynwb.

One NWB file per run: the ``units`` table holds one row per simulated neuron
(silent ones included, with no spike times) in the store's population order,
with the ragged column ``spike_times`` (seconds, time-sorted per unit) and the
columns ``area`` ("V1"), ``population`` ("23E"), ``neuron`` (index within the
population, the store's sender) and ``label`` ("V1-23E").  Unit ids are the
global neuron index 0 … N−1 (populations in mam_xr's flat order).  The run's
parameters are JSON in ``notes``, its provenance (mam_xr and library versions,
engine, seed, timings, status, dt) JSON in ``data_collection`` — standard
NWBFile fields, which nwbinspector accepts.
Spike times are written population by population through an HDF5 data-chunk
iterator, so a run is never held in memory at once.  Layout: docs/exchange.md.

Public functions: :func:`write_nwb`, :func:`read_nwb`, :func:`is_mam_xr_nwb`.
"""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from .. import __version__
from ..errors import DataError, invalid
from ..store import RunStore
from .base import Exchanged, needs, population_spikes, steps_of, times_ms

__all__ = ["write_nwb", "read_nwb", "is_mam_xr_nwb", "SOURCE_SCRIPT"]

#: ``source_script_file_name`` of the files written here (recognised by :func:`is_mam_xr_nwb`).
SOURCE_SCRIPT = "mam_xr.exchange.nwb"


def _session_start(run: RunStore) -> datetime:
    """When the store was last written: a simulation has no recording session, but
    NWB requires ``session_start_time``."""
    try:
        ts = os.stat(Path(run.path) / "zarr.json").st_mtime
    except OSError:
        ts = datetime.now(timezone.utc).timestamp()
    return datetime.fromtimestamp(int(ts), tz=timezone.utc)


def _provenance(run: RunStore) -> dict:
    a = run.attrs
    keys = ("label", "engine", "seed", "status", "dt", "t_sim", "n_segments_planned", "n_vp", "threads",
            "n_ranks", "versions", "timings", "error", "imported_from", "areas_simulated")
    out = {k: a[k] for k in keys if k in a}
    segs = run.segments()
    out["segments_committed"] = int(len(segs))
    out["time_span_ms"] = [float(segs[0, 0]), float(segs[-1, 1])] if len(segs) else None
    out["exported_by"] = f"mam_xr {__version__}"
    return out


class _SpikeTimes:
    """The concatenated ``spike_times`` (s) of every unit, population by population."""

    def __init__(self, run: RunStore, n_spikes: int):
        from hdmf.data_utils import AbstractDataChunkIterator, DataChunk

        self._chunk = DataChunk
        self._n = n_spikes
        self._it = population_spikes(run, by="neuron")
        self._pos = 0
        self._dt = run.dt
        # hdmf checks the iterator type: register as a virtual subclass
        AbstractDataChunkIterator.register(type(self))

    def __iter__(self):
        return self

    def __next__(self):
        while True:
            _, _, _, steps, _ = next(self._it)
            if steps.size:
                break
        t = times_ms(steps, self._dt) / 1000.0
        sel = np.s_[self._pos:self._pos + t.size]
        self._pos += t.size
        return self._chunk(data=t, selection=sel)

    def recommended_chunk_shape(self):
        return (min(max(self._n, 1), 2**20),)

    def recommended_data_shape(self):
        return (self._n,)

    @property
    def dtype(self):
        return np.dtype(np.float64)

    @property
    def maxshape(self):
        return (self._n,)


def write_nwb(run: RunStore, path: Path, *, compression: bool = True) -> None:
    """Write the run's spikes to an NWB (HDF5) file at ``path``."""
    pynwb = needs("pynwb", "nwb")
    from hdmf.backends.hdf5 import H5DataIO
    from hdmf.common import ElementIdentifiers, VectorData, VectorIndex

    # pass 1: spikes per unit, one group of populations at a time; pass 2 (the
    # iterator, while pynwb writes) reads them again: never all spikes at once
    counts, area, pop, neuron, label = [], [], [], [], []
    n_spikes = 0
    for _, lab, n, steps, senders in population_spikes(run, by="neuron"):
        c = np.bincount(senders, minlength=n)
        counts.append(c)
        n_spikes += int(steps.size)
        a, p = lab.split("-", 1)
        area += [a] * n
        pop += [p] * n
        label += [lab] * n
        neuron.append(np.arange(n, dtype=np.int64))
    counts = np.concatenate(counts) if counts else np.zeros(0, np.int64)
    n_units = int(counts.size)        # every simulated neuron is one unit
    a = run.attrs
    spike_times = VectorData(
        name="spike_times", description="spike times of each neuron (s from the start of the simulation)",
        data=H5DataIO(_SpikeTimes(run, n_spikes), compression="gzip" if compression else None)
        if n_spikes else np.zeros(0))
    index = VectorIndex(name="spike_times_index", data=np.cumsum(counts).astype(np.int64), target=spike_times)
    cols = [index, spike_times,   # index first: hdmf matches it to its target before skipping iterators
            VectorData(name="area", description="cortical area of the neuron", data=area),
            VectorData(name="population", description="population (layer and E/I) within the area", data=pop),
            VectorData(name="neuron", description="index of the neuron within its population (mam_xr sender)",
                       data=np.concatenate(neuron) if neuron else np.zeros(0, np.int64)),
            VectorData(name="label", description="mam_xr population label, area-population", data=label)]
    units = pynwb.misc.Units(
        name="units", id=ElementIdentifiers(name="id", data=np.arange(n_units, dtype=np.int64)),
        resolution=run.dt / 1000.0,    # s: spike times lie on the dt grid
        columns=cols, colnames=["spike_times", "area", "population", "neuron", "label"], description="simulated neurons of the multi-area model; id = global neuron index "
        "(populations in mam_xr's flat order)")
    status = a.get("status")
    nwb = pynwb.NWBFile(
        session_description=(f"Simulated spikes of the multi-area model of macaque visual cortex "
                             f"(mam_xr run {a.get('label') or Path(run.path).name!r}, status {status})"),
        identifier=f"mam_xr-{Path(run.path).name}-{_session_start(run).strftime('%Y%m%dT%H%M%SZ')}",
        session_start_time=_session_start(run),
        experiment_description="Spiking network simulation (Schmidt et al. 2018 multi-area model) written by "
                               "mam_xr; no animal was recorded.",
        keywords=["simulation", "multi-area model", "macaque", "visual cortex", "spiking network"],
        related_publications=["doi:10.1371/journal.pcbi.1006359"],
        notes=json.dumps({"params": run.params}, sort_keys=True),
        data_collection=json.dumps(_provenance(run), sort_keys=True, default=str),
        source_script=f"mam_xr {__version__} (mam_xr.exchange.export)",
        source_script_file_name=SOURCE_SCRIPT,
        was_generated_by=[("mam_xr", __version__)],
        units=units,
        # NWB (and DANDI) need a subject; here it is the model, not an animal
        subject=pynwb.file.Subject(subject_id="model", species="Macaca mulatta", sex="U",
                                   age="P0D/",   # "0 days or older": a model has no age
                                   description="No animal: a spiking network model of macaque visual cortex "
                                               "(Schmidt et al. 2018) simulated with mam_xr."),
    )
    with pynwb.NWBHDF5IO(str(path), "w") as io:
        io.write(nwb)


def is_mam_xr_nwb(path) -> bool:
    """True if ``path`` is an NWB file this module wrote (its ``source_script_file_name``)."""
    h5py = needs("h5py", "nwb")
    try:
        with h5py.File(path, "r") as f:
            v = f["general/source_script"].attrs.get("file_name") if "general/source_script" in f else None
    except OSError:
        return False
    if isinstance(v, bytes):
        v = v.decode()
    return v == SOURCE_SCRIPT


def read_nwb(source, *, dt_ms: float | None = None) -> Exchanged:
    """The spikes of an NWB file's ``units`` table, grouped by population.

    Units need the columns ``area``, ``population`` and ``neuron`` (as written by
    :func:`write_nwb`).  Times are converted from s to ms and, when the file
    records the run's dt (files of :func:`write_nwb`), put back on its grid, so
    they equal the store's times exactly (docs/exchange.md)."""
    pynwb = needs("pynwb", "nwb")
    path = Path(source)
    if not path.is_file():
        raise DataError(invalid("source", str(path), "an existing NWB file"))
    try:
        io = pynwb.NWBHDF5IO(str(path), "r")
        nwb = io.read()
    except Exception as exc:  # noqa: BLE001 - any failure to parse is one message
        raise DataError(invalid("source", str(path), f"a readable NWB file ({type(exc).__name__}: {exc})")) from exc
    with io:
        units = nwb.units
        if units is None:
            raise DataError(invalid("source", str(path), "an NWB file with a units table"))
        missing = [c for c in ("area", "population", "neuron") if c not in units.colnames]
        if missing:
            raise DataError(invalid("source", str(path), f"an NWB units table with columns area, population, "
                                    f"neuron (missing {missing})"))
        areas = np.asarray(units["area"].data[:]).astype(str)
        pops = np.asarray(units["population"].data[:]).astype(str)
        nrn = np.asarray(units["neuron"].data[:], dtype=np.int64)
        ends = np.asarray(units["spike_times_index"].data[:], dtype=np.int64)
        seconds = np.asarray(units["spike_times_index"].target.data[:], dtype=np.float64)
        try:
            prov = json.loads(nwb.data_collection or "{}")
            params = json.loads(nwb.notes or "{}").get("params", {})
        except ValueError:
            prov, params = {}, {}
    dt = dt_ms if dt_ms is not None else prov.get("dt")
    # s -> ms: back onto the dt grid when the file records dt (exact), else × 1000
    st = times_ms(steps_of(seconds * 1000.0, dt), dt) if dt else seconds * 1000.0
    counts = np.diff(np.concatenate([[0], ends]))
    owner = np.repeat(np.arange(nrn.size), counts)
    labels = np.char.add(np.char.add(areas, "-"), pops)
    names, first, lab_of_unit = np.unique(labels, return_index=True, return_inverse=True)
    lab_of_spike = lab_of_unit[owner]
    o = np.lexsort((nrn[owner], st, lab_of_spike))      # one sort: by population, time, neuron
    bounds = np.searchsorted(lab_of_spike[o], np.arange(len(names) + 1))
    t_all, n_all = st[o], nrn[owner[o]]
    spikes, n_neurons = {}, {}
    for j in np.argsort(first):                          # populations in the file's order
        lab = str(names[j])
        n_neurons[lab] = int(nrn[lab_of_unit == j].max()) + 1
        spikes[lab] = (t_all[bounds[j]:bounds[j + 1]], n_all[bounds[j]:bounds[j + 1]])
    span = prov.get("time_span_ms") or [None, None]
    return Exchanged(spikes=spikes, n_neurons=n_neurons, dt_ms=dt, t_start_ms=span[0],
                     t_stop_ms=span[1], attrs={"params": params, "provenance": prov})
