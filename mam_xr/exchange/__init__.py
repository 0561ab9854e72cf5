"""Spikes of a run store in the formats other tools read: NWB, SONATA and Neo.

* :func:`export` writes a run store's spikes as an NWB file (pynwb; DANDI,
  NWB Widgets, SpikeInterface) or a SONATA spike file (BMTK, libsonata, NEST);
* :func:`read_spikes` reads such a file back, grouped by population;
* :func:`import_spikes` turns one into a mam_xr run store, so that
  :func:`mam_xr.analysis.analyze` and the report work on it;
* :func:`to_neo` / :func:`to_neo_block` give Neo SpikeTrains for Elephant.

Formats are a registry (:data:`FORMATS`): one :class:`~mam_xr.exchange.base.Format`
record each, registered below; ``export``, ``read_spikes``, ``import_spikes``
and the ``mam-xr export`` / ``mam-xr import-spikes`` commands read it, so a new
format is one module and one :func:`register_format` call here.  The libraries
are the optional extra ``interchange`` (``pip install "mam_xr[interchange]"``).
Layouts and the comparison with Elephant: docs/exchange.md.

Public names: :func:`export`, :func:`read_spikes`, :func:`import_spikes`,
:func:`to_neo`, :func:`to_neo_block`, :func:`register_format`, :func:`format_of`,
:data:`FORMATS`, :class:`Format`, :class:`Exchanged`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import DataError, ParameterError, invalid
from ..flat import population_labels
from ..store import RunStore, SpikeWriter, check_target, create_run, open_run, set_status
from ..store_read import as_run
from . import nwb, sonata
from .base import Exchanged, Format, steps_of, write_file
from .neo import to_neo, to_neo_block

__all__ = ["export", "read_spikes", "import_spikes", "to_neo", "to_neo_block", "register_format",
           "FORMATS", "Format", "Exchanged", "format_of"]

#: The exchange formats by name.
FORMATS: dict[str, Format] = {}


def register_format(fmt: Format) -> Format:
    """Add (or replace) an exchange format."""
    FORMATS[fmt.name] = fmt
    return fmt


register_format(Format("nwb", ".nwb", "NWB 2 file (HDF5): units table with spike_times (s), area, population, "
                       "neuron", nwb.write_nwb, nwb.read_nwb, nwb.is_mam_xr_nwb, ("compression",)))
register_format(Format("sonata", ".h5", "SONATA spike file (HDF5): /spikes/<population>/timestamps (ms), "
                       "node_ids", sonata.write_sonata, sonata.read_sonata, sonata.is_mam_xr_sonata,
                       ("sorting", "compression")))


def _format(format: str, name: str = "format") -> Format:
    if format not in FORMATS:
        raise ParameterError(invalid(name, format, f"one of {', '.join(FORMATS)}"))
    return FORMATS[format]


def format_of(path, format: str | None = None) -> str:
    """``format`` if given (checked), else the format whose suffix ``path`` has."""
    if format is not None:
        return _format(format).name
    suffix = Path(path).suffix.lower()
    found = [f.name for f in FORMATS.values() if f.suffix == suffix]
    if not found:
        raise ParameterError(invalid("format", None, f"one of {', '.join(FORMATS)} (cannot tell from the "
                                     f"suffix of {str(path)!r}; known: "
                                     f"{', '.join(f'{f.suffix} ({f.name})' for f in FORMATS.values())})"))
    return found[0]


def export(store, out, format: str = "nwb", *, allow_incomplete: bool = False, overwrite: bool = False,
           **options) -> Path:
    """Write the spikes of a run store (path or RunStore) to the file ``out`` in ``format``.

    Parameters
    ----------
    store : path or RunStore
        A complete run store; an incomplete one (running, killed, failed) is
        refused unless ``allow_incomplete=True``, which exports the segments
        every rank committed (the file records the status).
    out : path
        The file to write.  It is written under a temporary name beside it and
        renamed in when complete.  An existing file is replaced only with
        ``overwrite=True`` and only if this exporter wrote it.
    format : str, default "nwb"
        One of :data:`FORMATS` (``nwb``, ``sonata``).
    **options
        Format options: ``compression`` (gzip; nwb: default True; sonata: default
        False, as libsonata's wheels cannot read compressed datasets), ``sorting``
        (sonata: ``by_time`` (default) or ``by_id``).

    Returns
    -------
    Path of the written file.
    """
    fmt = _format(format)
    bad = sorted(set(options) - set(fmt.options))
    if bad:
        raise ParameterError(invalid(bad[0], options[bad[0]], f"an option of format {fmt.name!r}: "
                                     f"{', '.join(fmt.options) or 'none'}"))
    if "sorting" in options and options["sorting"] not in ("by_time", "by_id"):
        raise ParameterError(invalid("sorting", options["sorting"], "one of by_time, by_id"))
    run = as_run(store, allow_incomplete=allow_incomplete)
    return write_file(out, lambda tmp: fmt.write(run, tmp, **options), overwrite=overwrite,
                      is_ours=fmt.is_ours, what=f"a {fmt.name} file")


def read_spikes(source, format: str | None = None, **options) -> Exchanged:
    """The spikes of an exchange file, by population (``format`` from the suffix
    when None: ``.nwb``, ``.h5``); ``dt_ms=`` puts the times on that grid when
    the file does not record its dt."""
    return FORMATS[format_of(source, format)].read(source, **options)


def import_spikes(source, store_path, *, format: str | None = None, dt_ms: float | None = None,
                  t_sim_ms: float | None = None, structure=None, label: str = "",
                  overwrite: bool = False) -> RunStore:
    """Make a run store of an exchange file's spikes (e.g. a SONATA file from BMTK).

    Node populations must be mam_xr population labels ("V1-23E"); node ids are
    the neuron indices within them.  ``dt_ms`` and ``t_sim_ms`` default to the
    file's own (files written by :func:`export` record them); a foreign file needs
    them.  Neurons per population: the file's count, or the highest id + 1.  The
    store holds one segment [0, t_sim_ms].  ``store_path`` is checked before any
    spike is read and replaced only with ``overwrite=True`` if it is a mam_xr store.
    """
    fmt = format_of(source, format)
    check_target(store_path, overwrite, name="store_path")
    ex = FORMATS[fmt].read(source, dt_ms=dt_ms)
    dt = dt_ms if dt_ms is not None else ex.dt_ms
    if dt is None or not dt > 0:
        raise ParameterError(invalid("dt_ms", dt, f"the simulation step in ms (> 0); {str(source)!r} does not "
                                     "record it"))
    t_sim = t_sim_ms if t_sim_ms is not None else ex.t_stop_ms
    if t_sim is None or not t_sim > 0:
        raise ParameterError(invalid("t_sim_ms", t_sim, f"the simulated time in ms (> 0); {str(source)!r} does "
                                     "not record it"))
    labels = population_labels()
    unknown = sorted(set(ex.spikes) - set(labels))
    if unknown:
        raise DataError(invalid("source", str(source), f"node populations named by mam_xr population labels "
                                f"(e.g. 'V1-23E'); unknown: {unknown[:5]}"))
    n_neurons = [int(ex.n_neurons.get(lab, 0)) for lab in labels]
    steps, senders, pops = [], [], []
    for k, lab in enumerate(labels):
        if lab not in ex.spikes:
            continue
        t, ids = ex.spikes[lab]
        if ids.size and (ids.min() < 0 or ids.max() >= n_neurons[k]):
            raise DataError(invalid("source", str(source), f"node ids of {lab} within its {n_neurons[k]} nodes"))
        if t.size and (t.min() < 0 or t.max() > t_sim + 1e-9):
            raise DataError(invalid("t_sim_ms", t_sim, f"a simulated time covering every spike "
                                    f"(latest {t.max()} ms in {lab})"))
        steps.append(steps_of(t, dt))
        senders.append(ids)
        pops.append(np.full(t.size, k))
    cat = (lambda xs: np.concatenate(xs) if xs else np.zeros(0, np.int64))  # noqa: E731
    root = create_run(store_path, structure=structure, dt=float(dt), t_sim=float(t_sim), n_segments_planned=1,
                      params=ex.attrs.get("params"), label=label or str(ex.attrs.get("label", "")),
                      overwrite=overwrite, n_neurons=n_neurons, engine=f"import:{fmt}",
                      extra_attrs={"imported_from": [str(source)]})
    if structure is None:
        root.create_group("structure").attrs["missing"] = True
    try:
        SpikeWriter(root).append_segment(cat(steps), cat(senders), cat(pops), 0.0, float(t_sim))
    except BaseException as exc:
        set_status(root, "failed", error=f"import of {source} failed: {exc!r}")
        raise
    set_status(root, "complete")
    return open_run(store_path)
