"""Population rates read from a rates JSON file or a previous run store.

One reader for every module that needs rates as input: the structure's
down-scaling (full-scale rates), the replacement of non-simulated areas
(:mod:`mam_xr.network`, which opens run stores and calls
:func:`rates_from_run`) and the mean-field theory.  This module imports
neither the store nor any simulator, so the lowest layers can use it.  Rates are returned as
flat vectors (254 populations in :func:`mam_xr.flat.population_labels`
order, spikes/s), NaN where the source has no value.

A rates JSON file is ``{area: {pop: rate}}``; a list value counts by its
first element (upstream stores ``[rate, ...]`` lists).
"""

from __future__ import annotations

import importlib
import json
import os
from pathlib import Path

import numpy as np

from .errors import ParameterError, invalid
from .flat import FLAT_AREA, FLAT_POP, N_POPULATIONS, population_labels

_LABELS = population_labels()
_AREA_POP = list(zip(FLAT_AREA, FLAT_POP))

__all__ = ["rates_from_mapping", "read_rates_json", "is_run_store", "rates_from_run",
           "COMPUTED_SOURCES", "computed_source"]

#: Rate sources that a higher layer computes, by name: ``"module:function"``.
#: The structure asks for them by name and the module is loaded on first use,
#: like a plug-in, so the structure layer never imports the theory (the
#: function takes the network parameters and the data directory and returns
#: a Dataset with a ``rate`` variable on (area, pop), spikes/s).
COMPUTED_SOURCES = {"theory": "mam_xr.atlas:fullscale_fixed_point"}


def computed_source(name: str):
    """The function that computes the rates source ``name`` (see COMPUTED_SOURCES)."""
    if name not in COMPUTED_SOURCES:
        raise ParameterError(invalid("fullscale_rates", name,
                                     f"one of {sorted(COMPUTED_SOURCES)}, 'upstream' or a rates file"))
    module, function = COMPUTED_SOURCES[name].split(":")
    return getattr(importlib.import_module(module), function)


def rates_from_mapping(raw, name: str, source=None) -> np.ndarray:
    """Flat rates (254,) from ``{area: {pop: rate}}`` (NaN where absent)."""
    if not isinstance(raw, dict):
        raise ParameterError(invalid(name, str(source if source is not None else raw),
                                     "a rates mapping {area: {pop: rate}}"))
    out = np.full(N_POPULATIONS, np.nan)
    for i, (area, pop) in enumerate(_AREA_POP):
        entry = raw.get(area)
        v = entry.get(pop) if isinstance(entry, dict) else None
        if isinstance(v, (list, tuple)):
            v = v[0] if v else None
        if v is not None:
            out[i] = float(v)
    return out


def read_rates_json(path, name: str) -> np.ndarray:
    """Flat rates (254,) of a rates JSON file ``{area: {pop: rate}}`` (NaN where absent).

    ``name`` is the parameter that named the file (for the error message).
    """
    path = Path(os.fspath(path)).expanduser()
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ParameterError(invalid(name, str(path), f"a readable JSON file of population rates ({exc})")) from exc
    return rates_from_mapping(raw, name, path)


def is_run_store(path) -> bool:
    """True if ``path`` is a Zarr v3 group (a mam_xr run store)."""
    path = Path(os.fspath(path))
    return path.is_dir() and (path / "zarr.json").is_file()


def rates_from_run(run, name: str, t_sim: float | None = None, series: bool = False) -> np.ndarray:
    """Population rates (spikes/s) of a previous run (an open :class:`mam_xr.store.RunStore`).

    Time-averaged over [500 ms, t_sim_run) (the whole run if it is shorter
    than 500 ms), NaN for populations without neurons; with ``series`` a
    (254, int(t_sim)) array of 1-ms bins instead (the run must last at least
    ``t_sim`` ms).
    """
    path = getattr(run, "path", run)
    n = np.asarray(run.root["spikes"].attrs["n_neurons"], dtype=float)
    prev_t = float(run.attrs["t_sim"])
    sp = run.spikes()
    with np.errstate(invalid="ignore", divide="ignore"):
        if series:
            n_ms = int(t_sim)
            if prev_t < n_ms:
                raise ParameterError(invalid(name, str(path), f"a run of at least t_sim={t_sim} ms "
                                             f"for het_current_nonstat (it has {prev_t} ms)"))
            bins = np.floor(sp.times).astype(np.int64)
            keep = bins < n_ms
            counts = np.zeros((N_POPULATIONS, n_ms))
            np.add.at(counts, (sp.pop[keep], bins[keep]), 1.0)
            return counts / n[:, None] / 1e-3
        t0 = 500.0 if prev_t > 500.0 else 0.0
        sel = (sp.times >= t0) & (sp.times < prev_t)
        counts = np.bincount(sp.pop[sel], minlength=N_POPULATIONS).astype(float)
        rates = counts / n / ((prev_t - t0) * 1e-3)
    return np.where(n > 0, rates, np.nan)

