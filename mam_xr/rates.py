"""Population rates read from a rates JSON file or a previous run store.

:func:`rates_vector` is the one checked parser of every rates input (mapping,
JSON file, DataArray, 254-vector) the theory takes; :func:`read_rates_json`
shares its JSON reading and mapping walk.

One reader for every module that needs rates as input: the structure's
down-scaling (full-scale rates), the replacement of non-simulated areas
(:mod:`mam_xr.network`, which opens run stores and calls
:func:`rates_from_run`) and the mean-field theory.  This module imports
neither the store nor any simulator, so the lowest layers can use it.  Rates are returned as
flat vectors (254 populations in :func:`mam_xr.flat.population_labels`
order, spikes/s), NaN where the source has no value.

A rates JSON file is ``{area: {pop: rate}}``; a list value counts by its
first element (upstream stores ``[rate, ...]`` lists).  :func:`read_source`
reads any path source of full-scale rates (docs/structure.md, "Where the
full-scale rates come from"): a rates JSON file, a run store (its simulated
population rates) or an atlas store (the rates on one branch).
"""

from __future__ import annotations

import importlib
import json
import os
from pathlib import Path

import numpy as np
import xarray as xr

from .errors import ParameterError, StoreError, invalid
from .flat import AREAS, FLAT_AREA, FLAT_POP, N_POPULATIONS, POPS, population_labels, to_flat_vector
from .params import Params

_LABELS = population_labels()
_AREA_POP = list(zip(FLAT_AREA, FLAT_POP))

__all__ = ["rates_vector", "rates_from_mapping", "read_rates_json", "is_run_store", "rates_from_run",
           "COMPUTED_SOURCES", "computed_source", "STORE_READERS", "source_kind", "read_source",
           "rates_from_run_store", "rates_from_atlas", "SOURCES_EXPECTED"]

#: Rate sources that a higher layer computes, by name: ``"module:function"``.
#: The structure asks for them by name and the module is loaded on first use,
#: like a plug-in, so the structure layer never imports the theory (the
#: function takes the network parameters and the data directory and returns
#: a Dataset with a ``rate`` variable on (area, pop), spikes/s).
COMPUTED_SOURCES = {"theory": "mam_xr.atlas:fullscale_fixed_point"}


#: Readers of stores written by a higher layer, by name (loaded on first use, as
#: COMPUTED_SOURCES): the run store's checked opener.
STORE_READERS = {"run": "mam_xr.store:open_run"}

#: What a full-scale rates source may be (the end of error messages).
SOURCES_EXPECTED = ('"upstream", None or the path of a rates JSON file, a mam_xr run store or an '
                    "atlas store (mam-xr theory --atlas ... --out); or \"theory\"")

#: Network parameters that may differ between an atlas and the network it compensates.
_SCALING_KEYS = ("scale", "neuron_scaling", "indegree_scaling", "fullscale_rates", "fullscale_rates_branch")
#: Where the atlas's swept parameter lives in the network parameters.
_SWEPT = {"chi": ("connection", "chi"), "chi_I": ("connection", "chi_I"), "g": ("connection", "g"),
          "rate_ext": ("input", "rate_ext")}


def _plugin(spec: str):
    module, function = spec.split(":")
    return getattr(importlib.import_module(module), function)


def computed_source(name: str):
    """The function that computes the rates source ``name`` (see COMPUTED_SOURCES)."""
    if name not in COMPUTED_SOURCES:
        raise ParameterError(invalid("fullscale_rates", name,
                                     f"one of {sorted(COMPUTED_SOURCES)}, 'upstream' or a rates file"))
    return _plugin(COMPUTED_SOURCES[name])


_ABSENT = object()


def _entry(raw: dict, area: str, pop: str):
    """The rate of ``area``/``pop`` in a mapping ``{area: {pop: rate}}`` (a list counts
    by its first element), or ``_ABSENT``; JSON null comes back as None."""
    entry = raw.get(area)
    v = entry.get(pop, _ABSENT) if isinstance(entry, dict) else _ABSENT
    if isinstance(v, (list, tuple)):
        v = v[0] if v else _ABSENT
    return v


def rates_from_mapping(raw, name: str, source=None) -> np.ndarray:
    """Flat rates (254,) from ``{area: {pop: rate}}`` (NaN where absent or null)."""
    if not isinstance(raw, dict):
        raise ParameterError(invalid(name, str(source if source is not None else raw),
                                     "a rates mapping {area: {pop: rate}}"))
    out = np.full(N_POPULATIONS, np.nan)
    for i, (area, pop) in enumerate(_AREA_POP):
        v = _entry(raw, area, pop)
        if v is not _ABSENT and v is not None:
            out[i] = float(v)
    return out


def _load_json(path: Path, name: str):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ParameterError(invalid(name, str(path), f"a readable JSON file of population rates ({exc})")) from exc


def read_rates_json(path, name: str) -> np.ndarray:
    """Flat rates (254,) of a rates JSON file ``{area: {pop: rate}}`` (NaN where absent).

    ``name`` is the parameter that named the file (for the error message).
    """
    path = Path(os.fspath(path)).expanduser()
    return rates_from_mapping(_load_json(path, name), name, path)


def rates_vector(rates, name: str) -> np.ndarray:
    """A rate for every population (254, spikes/s, :func:`mam_xr.flat.population_labels`
    order), checked, from any rates input the theory takes.

    ``rates``: a DataArray on (area, pop), a 254-vector, a mapping
    ``{area: {pop: rate}}`` (a list counts by its first element) or the path
    of a rates JSON file of that mapping.  Every population needs a finite
    number >= 0: a missing entry, JSON null, a non-number, NaN, ±inf or a
    negative rate raises :class:`ParameterError` naming ``name`` and the
    population (``name[V1-23E]=...``).
    """
    if isinstance(rates, (str, Path)):
        path = Path(rates).expanduser()
        if path.suffix == ".zarr" or path.is_dir():
            raise ParameterError(invalid(
                name, str(rates), "a rates JSON file {area: {pop: rate}}, a (area, pop) DataArray "
                "or a 254-vector; read the rates of a run store with mam_xr.store and pass them"))
        rates = _load_json(path, name)
    if isinstance(rates, dict):
        values = []
        for label, (area, pop) in zip(_LABELS, _AREA_POP):
            v = _entry(rates, area, pop)
            if v is _ABSENT:
                raise ParameterError(invalid(name, f"<mapping without {area}/{pop}>",
                                             "a rate for every population {area: {pop: rate}}"))
            if isinstance(v, bool) or not isinstance(v, (int, float, np.number)):
                raise ParameterError(invalid(f"{name}[{label}]", v, "a finite rate >= 0 spikes/s"
                                             + (" (JSON null is no rate)" if v is None else "")))
            values.append(float(v))
        rates = values
    if isinstance(rates, xr.DataArray):
        if set(("area", "pop")) - set(rates.dims) or rates.ndim != 2:
            raise ParameterError(invalid(name, f"DataArray with dims {rates.dims}", "dims ('area', 'pop')"))
        rates = to_flat_vector(rates.reindex(area=list(AREAS), pop=list(POPS)))
    try:
        arr = np.asarray(rates, dtype=float)
    except (TypeError, ValueError) as exc:
        raise ParameterError(invalid(name, f"<{type(rates).__name__}>", f"{N_POPULATIONS} numeric rates in "
                                     f"spikes/s ({exc})")) from None
    if arr.shape != (N_POPULATIONS,):
        raise ParameterError(invalid(name, f"<array of shape {arr.shape}>",
                                     f"{N_POPULATIONS} rates in spikes/s in mam_xr.flat order"))
    bad = ~(arr >= 0) | ~np.isfinite(arr)
    if bad.any():
        k = int(np.flatnonzero(bad)[0])
        more = f" ({int(bad.sum())} of {N_POPULATIONS} rates are not)" if bad.sum() > 1 else ""
        raise ParameterError(invalid(f"{name}[{_LABELS[k]}]", float(arr[k]),
                                     f"a finite rate >= 0 spikes/s{more}"))
    return arr


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



# --- path sources of full-scale rates: JSON, run store, atlas ---------------------------------

def _zarr_attrs(path: Path) -> dict | None:
    """The attributes of the Zarr v3 group at ``path``, or None if it is none."""
    try:
        meta = json.loads((path / "zarr.json").read_text())
    except (OSError, ValueError):
        return None
    attrs = meta.get("attributes") if isinstance(meta, dict) else None
    return attrs if isinstance(attrs, dict) else {}


def source_kind(source) -> str | None:
    """What a path source of rates is: ``"run"``, ``"atlas"``, ``"json"`` or None.

    ``"run"``: a mam_xr run store (format marker ``mam_xr.run/1``), even if it
    also holds an atlas group (name ``<store>/atlas`` for that one);
    ``"atlas"``: the group written by ``mam-xr theory --atlas ... --out`` (its
    ``sweep_param`` attribute), or a Zarr store holding it as group ``atlas``;
    ``"json"``: any other existing file; None: anything else.
    """
    path = Path(os.fspath(source)).expanduser()
    if path.is_file():
        return "json"
    attrs = _zarr_attrs(path) if path.is_dir() else None
    if attrs is None:
        return None
    if attrs.get("format") == "mam_xr.run/1":
        return "run"
    if "sweep_param" in attrs or _zarr_attrs(path / "atlas") is not None:
        return "atlas"
    return None


def read_source(source, name: str = "fullscale_rates", *, network=None, branch: int | None = None):
    """Flat rates (254, spikes/s) of a path source and its provenance (a dict).

    A rates JSON file as :func:`read_rates_json`; a run store as
    :func:`rates_from_run_store`; an atlas store as :func:`rates_from_atlas`
    (``network`` and ``branch`` choose the rates).  The provenance has
    ``source`` (the path), ``kind`` and, for an atlas, ``branch``.
    """
    kind = source_kind(source)
    if branch is not None and kind != "atlas":
        raise ParameterError(invalid(f"{name}_branch", branch, f"None unless {name} is an atlas store "
                                     f"({name}={str(source)!r} is {kind or 'not found'})"))
    if kind is None:
        raise ParameterError(invalid(name, str(source), SOURCES_EXPECTED))
    if kind == "json":
        return read_rates_json(source, name), {"source": str(source), "kind": "json"}
    if kind == "run":
        return rates_from_run_store(source, name)
    return rates_from_atlas(source, name, network=network, branch=branch)


def rates_from_run_store(path, name: str = "fullscale_rates"):
    """The simulated population rates of a run store and their provenance.

    The rates are those of :func:`rates_from_run`: spikes of each population
    in [500 ms, t_sim) (the whole run if it is not longer than 500 ms) divided
    by its neurons and the window, spikes/s.  Every population must have
    neurons (all 32 areas simulated); the run must be complete.
    """
    try:
        run = _plugin(STORE_READERS["run"])(path)
    except StoreError as exc:
        raise ParameterError(invalid(name, str(path), f"a complete mam_xr run store ({exc})")) from None
    rates = rates_from_run(run, name)
    missing = np.isnan(rates)
    if missing.any():
        raise ParameterError(invalid(name, str(path), "a run store with a rate for every population "
                                     f"(missing {_LABELS[int(np.flatnonzero(missing)[0])]}: "
                                     f"{int(missing.sum())} populations have no neurons in the run)"))
    t_sim = float(run.attrs["t_sim"])
    t0 = 500.0 if t_sim > 500.0 else 0.0
    params = run.params if isinstance(run.params, dict) else {}
    net = params.get("network", {}) if isinstance(params.get("network"), dict) else {}
    return rates, {"source": str(path), "kind": "run",
                   "rates": "simulated population rates (spikes in the window / neurons / window)",
                   "window_ms": [t0, t_sim], "run_label": str(run.attrs.get("label", "")),
                   "run_scale": net.get("scale")}


def _open_atlas(path: Path, name: str) -> xr.Dataset:
    group = None if "sweep_param" in (_zarr_attrs(path) or {}) else "atlas"
    try:
        ds = xr.open_zarr(path, group=group, consolidated=False)
    except (OSError, ValueError, KeyError) as exc:
        raise ParameterError(invalid(name, str(path), f"a readable atlas store ({exc})")) from None
    needed = ("rate", "found", "integration_branch", "stable", "eigenvalue_max_real")
    if "sweep_param" not in ds.attrs or "params" not in ds.attrs or any(v not in ds for v in needed):
        raise ParameterError(invalid(name, str(path), "an atlas store written by mam-xr theory --atlas "
                                     "... --out (variables rate, found, integration_branch)"))
    return ds


def _differences(a: dict, b: dict, prefix: str = "") -> list[tuple[str, object, object]]:
    out = []
    for k in sorted(set(a) | set(b)):
        x, y = a.get(k), b.get(k)
        if isinstance(x, dict) and isinstance(y, dict):
            out += _differences(x, y, f"{prefix}{k}.")
        elif x != y:
            out.append((prefix + k, x, y))
    return out


def rates_from_atlas(path, name: str = "fullscale_rates", *, network=None, branch: int | None = None):
    """The rates of an atlas store at the network's parameter value on one branch.

    The atlas (``mam-xr theory --atlas chi=... --out PATH`` or
    :func:`mam_xr.atlas.atlas` written with ``to_zarr(PATH, group="atlas")``)
    must be of the full-scale network with the same parameters as ``network``
    (a :class:`mam_xr.params.NetworkParams`) except the swept one, whose value
    in ``network`` must be on the atlas's grid (to 1e-9).  ``branch`` None
    takes the branch that the integration from zero rates reaches there
    (``integration_branch``); an integer takes that branch, which must exist
    at that value.  Returns the flat rates (spikes/s) and the provenance.
    """
    path = Path(os.fspath(path)).expanduser()
    ds = _open_atlas(path, name)
    swept = str(ds.attrs["sweep_param"])
    try:
        made = Params.from_json(ds.attrs["params"])
    except ParameterError as exc:
        raise ParameterError(invalid(name, str(path), f"an atlas with readable parameters ({exc})")) from None
    if made.network.N_scaling != 1.0 or made.network.K_scaling != 1.0:
        raise ParameterError(invalid(name, str(path), "an atlas of the full-scale network (this one has "
                                     f"N_scaling={made.network.N_scaling}, K_scaling={made.network.K_scaling})"))
    if tuple(made.simulation.areas_simulated) != tuple(AREAS):
        raise ParameterError(invalid(name, str(path), "an atlas of the whole model (this one has "
                                     f"{len(made.simulation.areas_simulated)} areas simulated)"))
    if network is None:
        network = made.network
    section, key = _SWEPT[swept]
    value = float(getattr(getattr(network, section), key))
    mine, theirs = network.model_dump(mode="json"), made.network.model_dump(mode="json")
    for d in (mine, theirs):
        for k in _SCALING_KEYS:
            d.pop(k, None)
        d[section].pop(key, None)
    diff = _differences(theirs, mine)
    if diff:
        where, x, y = diff[0]
        raise ParameterError(invalid(name, str(path), f"an atlas of the same network parameters except "
                                     f"{swept} (network.{where} is {x!r} in the atlas, {y!r} here"
                                     + (f"; {len(diff) - 1} more differ" if len(diff) > 1 else "") + ")"))
    grid = np.asarray(ds[swept].values, dtype=float)
    hit = np.flatnonzero(np.abs(grid - value) <= 1e-9 * max(1.0, abs(value)))
    if hit.size == 0:
        raise ParameterError(invalid(name, str(path), f"an atlas holding {swept}={value:g} (it holds "
                                     f"{grid.size} values from {grid.min():g} to {grid.max():g})"))
    k = int(hit[0])
    found = np.asarray(ds["found"].isel({swept: k}).values, dtype=bool)
    branches = [int(b) for b in np.flatnonzero(found)]
    if not branches:
        raise ParameterError(invalid(name, str(path), f"an atlas with a fixed point at {swept}={value:g} "
                                     "(it found none there)"))
    if branch is None:
        b = int(ds["integration_branch"].values[k])
        if b < 0 or not found[b]:
            raise ParameterError(invalid(name, str(path), f"an atlas whose integration from zero rates "
                                         f"reaches a branch at {swept}={value:g} (it does not converge "
                                         f"there); choose one with {name}_branch= (found: {branches})"))
        choice = "reached by the integration from zero rates"
    else:
        b = int(branch)
        if b not in branches:
            raise ParameterError(invalid(f"{name}_branch", branch, f"a branch of the atlas {str(path)!r} "
                                         f"at {swept}={value:g} (found there: {branches})"))
        choice = f"{name}_branch={b}"
    at = ds.isel({swept: k, "branch": b})
    rates = to_flat_vector(at["rate"].load())
    return rates, {"source": str(path), "kind": "atlas", "branch": b, "branch_choice": choice,
                   "sweep_param": swept, "sweep_value": value, "stable": bool(at["stable"]),
                   "eigenvalue_max_real": float(at["eigenvalue_max_real"])}
