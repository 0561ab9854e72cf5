"""What the dashboard shows: the run stores and sweeps under a directory, read incrementally.

:func:`discover` finds every mam_xr run store and sweep directory under a
directory (by their format markers, :func:`mam_xr.store.store_kind`).
:class:`RunData` reads a run store segment by segment: each :meth:`RunData.refresh`
reads only the rows of the ``offsets`` tables of the segments committed since
the last one (spike counts per population and segment, no spike), and the
spikes of the areas being looked at only in those new segments; so a store that
is still being written can be watched at little cost.  :class:`SweepData` holds
the combined Dataset of a sweep (:func:`mam_xr.sweep.open_sweep`) and finds the
run store of a sweep point.  No Panel or Bokeh here: the views are in
:mod:`mam_xr.dashboard.app`.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr
import zarr

from ..errors import ParameterError, StoreError, invalid
from ..flat import AREAS, FLAT_AREA, FLAT_POP, N_POPULATIONS, from_flat_vector
from ..store import RunStore, describe_holder, lock_holder, open_run, store_kind
from ..store_read import read_slices
from ..sweep import open_sweep, sweep_status

__all__ = ["Entry", "discover", "find_entries", "RunData", "SweepData", "read_theory",
           "read_segments", "DISPLAY_ORDER"]

#: Populations from the bottom of a raster to its top (as the report's rasters).
DISPLAY_ORDER: tuple[str, ...] = ("6I", "6E", "5I", "5E", "4I", "4E", "23I", "23E")
#: Rate time-series bins per simulated time (the bin is at least 5 ms).
N_BINS = 100


@dataclass(frozen=True)
class Entry:
    """One thing to show: ``kind`` ``"run"`` or ``"sweep"``, its ``path`` and its
    ``name`` (the path relative to the served directory)."""

    kind: str
    path: Path
    name: str


def discover(directory) -> list[Entry]:
    """Every run store and sweep directory under ``directory`` (itself included), sorted by name.

    Hidden directories (e.g. a store being swapped in) are skipped, and so is the
    inside of every store and sweep directory (a sweep's point runs are reached
    from the sweep).
    """
    root = Path(directory)
    if not root.is_dir():
        raise ParameterError(invalid("DIR", str(directory), "an existing directory holding mam_xr "
                                     "run stores (*.zarr) or sweep directories"))
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        marked = "zarr.json" in filenames or "sweep.json" in filenames
        kind = store_kind(here) if marked else None
        if kind in ("run", "sweep"):
            rel = here.relative_to(root).as_posix()
            found.append(Entry(kind, here, rel if rel != "." else here.resolve().name))
        if marked:
            dirnames[:] = []
    return sorted(found, key=lambda e: e.name)


def find_entries(directory) -> list[Entry]:
    """:func:`discover`, refusing a directory that holds no run store or sweep."""
    entries = discover(directory)
    if not entries:
        raise ParameterError(invalid("DIR", str(directory), "a directory holding at least one mam_xr "
                                     "run store (*.zarr, made by `mam-xr run`) or sweep directory "
                                     "(made by `mam-xr sweep`); none was found under it"))
    return entries


def read_theory(path) -> xr.DataArray | None:
    """The mean-field rates (area, pop; spikes/s) in group ``theory`` of a run store
    (written by ``mam-xr run`` after the simulation), or None."""
    path = Path(path)
    if not (path / "theory" / "zarr.json").is_file():
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = xr.open_zarr(str(path), group="theory", consolidated=False)
            if "rate" not in ds:
                return None
            return ds["rate"].load()
    except (OSError, ValueError, KeyError):
        return None  # being written right now: looked at again on the next refresh


def read_segments(run: RunStore, idx: np.ndarray, s0: int, s1: int):
    """(index within ``idx``, sender, step) of every spike of the flat populations
    ``idx`` in the committed segments ``s0 .. s1-1`` of every rank, in storage order.

    Reads the ``offsets`` rows of those segments, then only the spike slices of
    ``idx`` in them, every Zarr chunk decoded at most once
    (:func:`mam_xr.store_read.read_slices`).
    """
    idx = np.asarray(idx, dtype=np.int64)
    pops, senders, steps = [], [], []
    for r in run.ranks:
        if s1 <= s0:
            break
        g = run.root["spikes"][r]
        off = g["offsets"][s0:s1]
        cnt = off[:, idx + 1] - off[:, idx]                     # (segments, len(idx))
        slices = [(int(off[s, p]), int(off[s, p + 1])) for s in range(s1 - s0) for p in idx
                  if off[s, p + 1] > off[s, p]]
        order = np.argsort([a for a, _ in slices], kind="stable")
        slices_sorted = [slices[k] for k in order]
        k_of = np.tile(np.arange(len(idx), dtype=np.int32), s1 - s0)[cnt.ravel() > 0][order]
        n_of = cnt.ravel()[cnt.ravel() > 0][order]
        steps.append(read_slices(g["times"], slices_sorted))
        senders.append(read_slices(g["senders"], slices_sorted))
        pops.append(np.repeat(k_of, n_of))

    def cat(xs):
        return np.concatenate(xs).astype(np.int32) if xs else np.zeros(0, np.int32)

    return cat(pops), cat(senders), cat(steps)


class AreaSpikes:
    """The spikes of one area read so far (``pop`` index into ``labels``, ``sender``, ``step``)."""

    def __init__(self, area: str, run: RunStore):
        self.area = area
        self.idx = run.population_indices(area=area)
        self.pops = [str(p) for p in FLAT_POP[self.idx]]
        self.n_segments = 0
        self.pop = self.sender = self.step = np.zeros(0, np.int32)

    def extend(self, run: RunStore, n_segments: int) -> None:
        if n_segments <= self.n_segments:
            return
        p, s, t = read_segments(run, self.idx, self.n_segments, n_segments)
        self.pop = np.concatenate([self.pop, p])
        self.sender = np.concatenate([self.sender, s])
        self.step = np.concatenate([self.step, t])
        self.n_segments = n_segments


class RunData:
    """A run store (any status) read segment by segment; see the module docstring.

    Attributes after :meth:`refresh`: ``status``, ``planned`` (segments),
    ``n_segments`` (committed by every rank), ``bounds`` ((n_segments, 2) ms),
    ``segment_counts`` ((n_segments, 254) spikes per segment and population),
    ``n_neurons`` (254), ``dt``, ``t_sim`` (ms), ``theory`` (area, pop rates or None),
    ``writer_gone`` (for a ``running`` store whose writer ended without finishing, the
    writer, e.g. ``pid 12 on host h since ...``; else None).
    """

    def __init__(self, path):
        self.path = Path(path)
        self.n_segments = 0
        self.bounds = np.zeros((0, 2))
        self.segment_counts = np.zeros((0, N_POPULATIONS), np.int64)
        self.theory: xr.DataArray | None = None
        self._areas: dict[str, AreaSpikes] = {}
        self.refresh()
        per_area = pd.Series(self.n_neurons).groupby(FLAT_AREA).sum()
        #: Areas with simulated neurons, in the model's order.
        self.areas = [a for a in AREAS if per_area.get(a, 0) > 0]

    def _open(self) -> RunStore:
        if getattr(self, "run", None) is None:  # the first time with every check of open_run
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "incomplete" notices: a running store is the point
                return open_run(self.path, allow_incomplete=True)
        # then the root group again (its attrs, e.g. the status, are read when it is opened):
        # two thirds of a refresh's time went into repeating open_run's checks
        return RunStore(zarr.open_group(str(self.path), mode="r", zarr_format=3), str(self.path))

    def refresh(self) -> int:
        """Read what was committed since the last refresh; returns the number of new segments."""
        run = self._open()
        self.run = run
        attrs = run.attrs
        self.status = str(attrs.get("status"))
        self.error = attrs.get("error")
        self.planned = int(attrs.get("n_segments_planned") or 0)
        self.t_sim = float(attrs.get("t_sim") or 0.0)
        self.label = str(attrs.get("label") or self.path.name)
        self.dt = run.dt
        self.n_neurons = np.asarray(run.root["spikes"].attrs["n_neurons"], dtype=np.int64)
        n = run.n_segments_committed()
        new = n - self.n_segments
        if new > 0:
            counts = np.zeros((new, N_POPULATIONS), np.int64)
            for r in run.ranks:  # row s of offsets: where each population starts in segment s, then its end
                counts += np.diff(run.root["spikes"][r]["offsets"][self.n_segments:n], axis=1)
            bounds = run.root["spikes"][run.ranks[0]]["segment_bounds"][self.n_segments:n]
            self.segment_counts = np.concatenate([self.segment_counts, counts])
            self.bounds = np.concatenate([self.bounds, bounds])
            self.n_segments = n
            for spikes in self._areas.values():
                spikes.extend(run, n)
        if self.theory is None:
            self.theory = read_theory(self.path)
        self.writer_gone = None
        if self.status == "running" and new <= 0:  # nothing new: is anyone still writing?
            holder = lock_holder(self.path)
            if holder is not None and holder.get("alive") is False:
                self.writer_gone = describe_holder(holder)
        return max(new, 0)

    # -- derived --------------------------------------------------------------------
    @property
    def t_committed(self) -> tuple[float, float]:
        """Start and end (ms) of the committed segments."""
        if not self.n_segments:
            return (0.0, 0.0)
        return float(self.bounds[0, 0]), float(self.bounds[-1, 1])

    @property
    def n_spikes(self) -> int:
        return int(self.segment_counts.sum())

    def counts(self) -> xr.DataArray:
        """Spikes per population (area, pop) in the committed segments."""
        return from_flat_vector(self.segment_counts.sum(axis=0), name="spikes", fill=0,
                                attrs={"units": "1", "long_name": "spikes"})

    def rates(self) -> xr.DataArray:
        """Mean rate per population over every neuron and the committed time (spikes/s);
        NaN where no neuron was simulated."""
        t0, t1 = self.t_committed
        n = self.n_neurons.astype(float)
        with np.errstate(invalid="ignore", divide="ignore"):
            r = self.segment_counts.sum(axis=0) / n / max((t1 - t0) * 1e-3, 1e-12)
        r[n == 0] = np.nan
        if not self.n_segments:
            r[:] = np.nan
        return from_flat_vector(r, name="rate", attrs={
            "units": "spikes/s", "long_name": "Rate", "window": f"all spikes, {t0:g}–{t1:g} ms"})

    def theory_rates(self) -> xr.DataArray | None:
        """The mean-field rates of the simulated populations (NaN elsewhere), or None."""
        if self.theory is None:
            return None
        simulated = from_flat_vector(self.n_neurons > 0, fill=False)
        th = self.theory.where(simulated.sel(area=self.theory["area"], pop=self.theory["pop"]))
        th.attrs.update(units="spikes/s", long_name="Mean-field theory rate")
        return th.rename("rate")

    def area_spikes(self, area: str) -> AreaSpikes:
        """The spikes of ``area`` in the committed segments (read once, then extended)."""
        if area not in AREAS:
            raise ParameterError(invalid("area", area, f"one of {AREAS}"))
        if area not in self._areas:
            if len(self._areas) >= 4:  # keep a few areas: clicking back and forth is instant
                self._areas.pop(next(iter(self._areas)))
            self._areas[area] = AreaSpikes(area, self.run)
        spikes = self._areas[area]
        spikes.extend(self.run, self.n_segments)
        return spikes

    def raster_table(self, area: str, pop: str) -> tuple[pd.DataFrame, dict]:
        """The raster of ``area``: one row per spike with time (ms), ``y`` (row:
        populations stacked 6I at the bottom to 2/3E at the top), pop, neuron and
        ``group`` ("selected" for ``pop``, else "E" or "I"); and the y ticks {row: layer}."""
        sp = self.area_spikes(area)
        n_of = dict(zip(sp.pops, self.n_neurons[sp.idx]))
        base, ticks, rows = {}, {}, 0
        for p in DISPLAY_ORDER:
            if p in n_of and n_of[p] > 0:
                base[p] = rows
                ticks[rows + n_of[p] / 2.0] = p.replace("23", "2/3")
                rows += int(n_of[p])
        offset = np.array([base.get(p, 0) for p in sp.pops], dtype=np.int64)
        # per population: 0 the selected one, 1 another E, 2 another I (categorical codes)
        group = np.array([0 if p == pop else 1 if p.endswith("E") else 2 for p in sp.pops], dtype=np.int8)
        df = pd.DataFrame({
            "time": sp.step * self.dt,
            "y": (offset[sp.pop] + sp.sender).astype(float),
            "pop": pd.Categorical.from_codes(sp.pop, categories=sp.pops),
            "neuron": sp.sender,
            "group": pd.Categorical.from_codes(group[sp.pop], categories=["selected", "E", "I"]),
        })
        return df, {"ticks": ticks, "rows": rows}

    def rate_series(self, area: str, bin_ms: float | None = None) -> xr.DataArray:
        """Rate over time of every population of ``area`` (pop, time; spikes/s) in
        bins of ``bin_ms`` (default t_sim / 100, at least 5 ms) over the committed time;
        ``time`` is the bin centre (ms)."""
        sp = self.area_spikes(area)
        if bin_ms is None:
            bin_ms = max(5.0, self.t_sim / N_BINS)
        bin_steps = max(1, int(round(bin_ms / self.dt)))
        t0, t1 = self.t_committed
        lo, hi = int(round(t0 / self.dt)), int(round(t1 / self.dt))
        n_bins = max(1, int(np.ceil((hi - lo) / bin_steps)))
        # NEST stamps a spike at the end of its step: spikes lie in (t0, t1]
        b = np.clip((sp.step - lo - 1) // bin_steps, 0, n_bins - 1)
        hist = np.zeros((len(sp.pops), n_bins))
        np.add.at(hist, (sp.pop, b), 1.0)
        width_s = bin_steps * self.dt * 1e-3
        n = self.n_neurons[sp.idx].astype(float)
        with np.errstate(invalid="ignore", divide="ignore"):
            rate = hist / n[:, None] / width_s
        centres = (lo + (np.arange(n_bins) + 0.5) * bin_steps) * self.dt
        return xr.DataArray(rate, dims=("pop", "time"),
                            coords={"pop": sp.pops, "time": centres},
                            name="rate", attrs={"units": "spikes/s", "bin_ms": bin_steps * self.dt,
                                                "long_name": "Population rate"})


class SweepData:
    """A sweep directory: its status and its combined Dataset (reloaded when it changes)."""

    def __init__(self, path):
        self.path = Path(path)
        self._stamp = None
        self.ds: xr.Dataset | None = None
        self.refresh()

    def refresh(self) -> bool:
        """Re-read the manifest; reload ``sweep.zarr`` if it changed. True if it did."""
        self.status = sweep_status(self.path)
        marker = self.path / "sweep.zarr" / "zarr.json"
        stamp = marker.stat().st_mtime_ns if marker.is_file() else None
        if stamp == self._stamp:
            return False
        self._stamp = stamp
        if stamp is None:
            self.ds = None
            return True
        ds = open_sweep(self.path)
        keep = [v for v in ("rates_rate", "theory_rate") if v in ds.data_vars]
        self.ds = ds[keep].load() if keep else None
        return True

    @property
    def variables(self) -> dict[str, str]:
        """{"simulation": var, "theory": var} of what the sweep holds."""
        if self.ds is None:
            return {}
        return {k: v for k, v in (("simulation", "rates_rate"), ("theory", "theory_rate"))
                if v in self.ds.data_vars}

    @property
    def dims(self) -> list[str]:
        """The sweep dimensions (every dim of the rates other than area and pop)."""
        if self.ds is None or not self.variables:
            return []
        da = self.ds[next(iter(self.variables.values()))]
        return [d for d in da.dims if d not in ("area", "pop")]

    def values(self, dim: str) -> list:
        return [v.item() if hasattr(v, "item") else v for v in self.ds[dim].values]

    def frame(self, which: str, point: dict) -> xr.DataArray:
        """The (area, pop) rates of ``which`` ("simulation" or "theory") at ``point`` {dim: value}."""
        var = self.variables.get(which)
        if var is None:
            raise ParameterError(invalid("which", which, f"one of {list(self.variables)}"))
        da = self.ds[var].sel(point)
        da.attrs.setdefault("units", "spikes/s")
        da.attrs["long_name"] = "Mean-field theory rate" if which == "theory" else "Simulated rate"
        return da.rename("rate")

    def point_run(self, point: dict) -> Path | None:
        """The run store of the sweep point at ``point`` (a simulating sweep), or None."""
        for e in self.status["points"]:
            if e.get("name") and all(_same(e["coords"].get(d), v) for d, v in point.items()):
                path = self.path / "points" / e["name"] / "run.zarr"
                return path if store_kind(path) == "run" else None
        return None


def _same(a, b) -> bool:
    try:
        return bool(np.isclose(float(a), float(b)))
    except (TypeError, ValueError):
        return str(a) == str(b)


def describe_error(exc: Exception) -> str:
    """One line for a store that cannot be shown."""
    if isinstance(exc, (StoreError, ParameterError)):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"
