"""Import upstream recordings (NEST ASCII spike files, or an npz of them) into a run store.

Upstream's simulations write one spike file per virtual process and a
``network_gids.txt`` with the NEST id range of every population; this module
turns them into a mam_xr run store (:mod:`mam_xr.store`) so that
:func:`mam_xr.analysis.analyze`, the report and everything else work on old
upstream runs.  docs/analysis.md describes the accepted layouts.

Public functions: :func:`import_upstream`, :func:`read_gids`, :func:`read_nest_ascii`.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import xarray as xr

from .errors import DataError, ParameterError, invalid
from .flat import AREAS, population_labels
from .store import SpikeWriter, check_target, create_run, open_run, set_status

__all__ = ["import_upstream", "read_gids", "read_nest_ascii", "simulated_areas"]


def read_gids(path) -> dict[str, tuple[int, int]]:
    """network_gids.json ({label: [first, last]}) or upstream's network_gids.txt
    (rows ``area, population, first, last``)."""
    path = Path(path)
    if not path.exists():
        raise DataError(invalid("gids", str(path), "an existing network_gids.json/.txt file"))
    text = path.read_text()
    if path.suffix == ".json":
        raw = json.loads(text)
        return {k: (int(v[0]), int(v[1])) for k, v in raw.items()}
    out = {}
    for line in text.splitlines():
        tok = [t for t in re.split(r"[,\s]+", line.strip()) if t]
        if len(tok) >= 4 and tok[-1].lstrip("-").isdigit() and tok[-2].lstrip("-").isdigit():
            out[f"{tok[0]}-{tok[1]}"] = (int(tok[-2]), int(tok[-1]))
    return out


def simulated_areas(ranges: dict, source="gids") -> list[str]:
    """The areas (in the model's order) whose populations ``ranges`` lists; every
    population of such an area must be listed, and nothing else."""
    labels = population_labels()
    unknown = sorted(set(ranges) - set(labels))
    if unknown:
        raise DataError(invalid("gids", str(source), f"id ranges of the model's populations (area-pop labels "
                                f"such as 'V1-23E'); unknown labels {unknown[:5]}"))
    areas = [a for a in AREAS if any(lab.startswith(a + "-") and lab in ranges for lab in labels)]
    if not areas:
        raise DataError(invalid("gids", str(source), "id ranges of at least one area's populations"))
    for a in areas:
        miss = [lab for lab in labels if lab.startswith(a + "-") and lab not in ranges]
        if miss:
            raise DataError(f"{source}: area {a} is listed but has no id range for populations {miss} "
                            "(a simulated area lists all its populations)")
    return areas


def read_nest_ascii(path) -> np.ndarray:
    """(n, 2) float array [sender, time ms] of one NEST ASCII file (.dat NEST 3, .gdf NEST 2)."""
    import pandas as pd

    skip = 0
    with open(path) as fh:
        for line in fh:
            s = line.strip()
            if not s or s.startswith("#") or not (s[0].isdigit() or s[0] in "+-."):
                skip += 1
                continue
            break
    df = pd.read_csv(path, sep=r"\s+", skiprows=skip, header=None, usecols=[0, 1],
                     names=["sender", "time"], dtype={"sender": np.int64, "time": np.float64},
                     engine="c")
    return df.to_numpy(dtype=np.float64)


def import_upstream(source, store_path, *, t_sim_ms: float, gids=None, dt_ms: float = 0.1,
                    structure: xr.Dataset | None = None, params: dict | str | None = None,
                    label: str = "", overwrite: bool = False):
    """Turn upstream recordings into a mam_xr run store.

    Parameters
    ----------
    source : path or list of paths
        Upstream's recordings: a directory holding ``*-spikes-*.dat`` (NEST 3) or
        ``*.gdf`` (NEST 2) files, a list of such files, or an ``.npz`` with one
        (n, 2) array [NEST id, time ms] per population label.
    store_path : path
        The run store to create.  An existing path is replaced only with
        ``overwrite=True`` and only if it is a mam_xr store (checked before any
        spike is read).
    t_sim_ms : float
        Simulated time (ms); the store holds one segment [0, t_sim_ms].
    gids : path, optional
        ``network_gids.txt`` or ``network_gids.json`` ({label: [first, last]});
        default: looked up next to ``source``.  It gives the neurons simulated per
        population, last - first + 1 = floor(N).  A run of a subset of the areas
        (upstream's ``areas_simulated``, with or without
        ``replace_non_simulated_areas``) lists only their populations: the other
        areas get no neurons (their statistics are NaN) and the store's
        ``areas_simulated`` attr names the simulated ones.
    dt_ms : float, default 0.1
        Simulation resolution; every spike time must lie on this grid.
    structure : xr.Dataset, optional
        The structure Dataset of the run (needed for the functional connectivity).
    params, label : optional
        Stored in the run's attrs.

    Returns
    -------
    mam_xr.store.RunStore

    Notes
    -----
    sender = NEST id - first id of the population.  Works in any recording order
    (several virtual processes): the writer sorts each population by time.
    """
    if not (isinstance(t_sim_ms, (int, float)) and t_sim_ms > 0):
        raise ParameterError(invalid("t_sim_ms", t_sim_ms, "the simulated time in ms (> 0)"))
    if not (isinstance(dt_ms, (int, float)) and dt_ms > 0):
        raise ParameterError(invalid("dt_ms", dt_ms, "the simulation step in ms (> 0)"))
    check_target(store_path, overwrite, name="store_path")     # before reading any spike
    paths = [Path(p) for p in source] if isinstance(source, (list, tuple)) else [Path(source)]
    for p in paths:
        if not p.exists():
            raise DataError(invalid("source", str(p), "an existing upstream recording (file or directory)"))
    if gids is None:
        here = paths[0] if paths[0].is_dir() else paths[0].parent
        cands = [here / "network_gids.txt", here / "network_gids.json"]
        found = [c for c in cands if c.exists()]
        if not found:
            raise DataError(invalid("gids", None, f"a network_gids.txt/.json; none found in {here}"))
        gids = found[0]
    ranges = read_gids(gids)
    labels = population_labels()
    areas = simulated_areas(ranges, gids)
    # populations of areas that were not simulated: no neurons (an id range that matches nothing)
    first = np.array([ranges.get(lab, (-1, -2))[0] for lab in labels], dtype=np.int64)
    last = np.array([ranges.get(lab, (-1, -2))[1] for lab in labels], dtype=np.int64)
    n_neurons = last - first + 1

    if len(paths) == 1 and paths[0].suffix == ".npz":
        with np.load(paths[0], allow_pickle=False) as f:
            arrays = [np.asarray(f[lab], dtype=np.float64).reshape(-1, 2) if lab in f.files
                      else np.zeros((0, 2)) for lab in labels]
        data = np.concatenate(arrays)
    else:
        files = []
        for p in paths:
            files += sorted(p.glob("*-spikes-*.dat")) + sorted(p.glob("*-spikes-*.gdf")) if p.is_dir() else [p]
        if not files:
            raise DataError(invalid("source", [str(p) for p in paths], "NEST spike files (*-spikes-*.dat/.gdf)"))
        data = np.concatenate([read_nest_ascii(f) for f in files])
    ids = data[:, 0].astype(np.int64)
    tms = data[:, 1]
    steps = np.rint(tms / dt_ms).astype(np.int64)
    if len(tms) and np.max(np.abs(steps * dt_ms - tms)) > 1e-6 * max(1.0, float(np.max(np.abs(tms)))):
        raise DataError(invalid("dt_ms", dt_ms, "the resolution of the recorded spike times (a time is off-grid)"))
    if len(tms) and (steps.min() < 0 or tms.max() > t_sim_ms + 1e-9):
        raise DataError(invalid("t_sim_ms", t_sim_ms, f"a simulated time covering every spike (latest {tms.max()} ms)"))
    order = np.argsort(first)
    pos = np.searchsorted(first[order], ids, side="right") - 1
    pop = order[np.clip(pos, 0, None)]
    bad = (pos < 0) | (ids > last[pop])
    if bad.any():
        raise DataError(f"{int(bad.sum())} spikes have NEST ids outside every population's range in {gids} "
                        f"(e.g. id {int(ids[bad][0])})")
    senders = ids - first[pop]
    root = create_run(store_path, structure=structure, dt=float(dt_ms), t_sim=float(t_sim_ms),
                      n_segments_planned=1, params=params, label=label, overwrite=overwrite,
                      n_neurons=n_neurons, engine="upstream",
                      extra_attrs={"imported_from": [str(p) for p in paths], "gids_file": str(gids),
                                   "areas_simulated": areas})
    if structure is None:
        # a run store needs a structure group; without one, FC is unavailable
        root.create_group("structure").attrs["missing"] = True
    w = SpikeWriter(root)
    w.append_segment(steps, senders, pop, 0.0, float(t_sim_ms))
    set_status(root, "complete")
    return open_run(store_path)
