"""The fast path of theory-only sweeps: one structure for all points, one result file.

A serial theory-only sweep whose swept and coupled parameters are among chi,
chi_I, g and rate_ext (all other parameters shared) builds one structure and
derives every point's from it with :func:`mam_xr.structure.rescale`; its points
are computed in this process and written to one batch file.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import xarray as xr

from ..params import parameter_path
from ..structure import build, rescale
from .point import atomic_write_json, prepare_point, theory_dataset, without_attrs
from .results import write_zarr
from .spec import SWEEP_FORMAT, SweepSpec, leaves

__all__ = ["FAST_THEORY", "fast_theory_reason", "FastStructures", "run_theory_fast"]


#: Parameters whose change a theory-only sweep applies to one built structure (the
#: parameters of mam_xr.theory's fast path).
FAST_THEORY = {("network", "connection", "chi"): "chi", ("network", "connection", "chi_I"): "chi_I",
                ("network", "connection", "g"): "g", ("network", "input", "rate_ext"): "rate_ext"}


def fast_theory_reason(spec: SweepSpec, points) -> str | None:
    """Why the points of ``spec`` cannot share one structure (None: they can).

    They can when the sweep runs theory only, every swept and coupled parameter
    is one of chi, chi_I, g, rate_ext, and the points' Params agree in every
    other parameter (including those a preset sets from the swept ones).
    """
    if tuple(spec.run) != ("theory",):
        return f"the sweep runs {'+'.join(spec.run)}"
    for name in (*spec.parameters, *(c.parameter for c in spec.coupled)):
        if parameter_path(name) not in FAST_THEORY:
            return f"{name} is not one of chi, chi_I, g, rate_ext"
    ref = None
    for p in points:
        values = {k: v for k, v in leaves(p.params.model_dump(mode="json")).items() if k not in FAST_THEORY}
        if ref is None:
            ref = values
        elif values != ref:
            diff = sorted(".".join(k) for k in set(ref) | set(values) if ref.get(k) != values.get(k))
            return f"the points differ in {', '.join(diff[:3])}"
    return None


class FastStructures:
    """The structure of each point of a theory-only sweep, from one build.

    The first point's structure is built (:func:`mam_xr.structure.build`); a
    point at other χ / χ_I gets it via :func:`mam_xr.structure.rescale`
    (CC couplings and, down-scaled, the DC drive, as a rebuild would: equal
    within ~1e-15 relative).  Other g or rate_ext: at full scale (no DC drive)
    the inhibitory couplings are rescaled (g) or nothing changes (rate_ext only
    enters the theory through the Params); a down-scaled structure's DC drive
    depends on both, so it is built once per (g, rate_ext) (rescaling it would
    do too, but a build keeps those points equal to a rebuild bit for bit).
    Always rescaled from the built structure, never chained.
    """

    def __init__(self):
        self.base = None
        self.params0 = None
        self.by_input: dict[tuple, xr.Dataset] = {}
        self.builds = 0

    def __call__(self, q) -> xr.Dataset:
        if self.base is None:
            self.base, self.params0 = build(q), q
            self.builds += 1
        p0 = self.params0
        c0, c = p0.network.connection, q.network.connection
        key = (c.g, q.network.input.rate_ext)
        s = self.by_input.get(key)
        if s is None:
            if key == (c0.g, p0.network.input.rate_ext):
                s = self.base
            elif bool((self.base["dc_drive"].fillna(0.0) != 0).any()):
                s = build(p0.update({"g": c.g, "rate_ext": q.network.input.rate_ext}))
                self.builds += 1
            else:
                s = rescale(self.base, g=c.g, params=p0)
            self.by_input[key] = s
        if (c.chi, c.chi_I) != (c0.chi, c0.chi_I):
            s = rescale(s, chi=c.chi, chi_I=c.chi_I, params=q.update(chi=c0.chi, chi_I=c0.chi_I))
        return s


def run_theory_fast(spec: SweepSpec, directory: Path, todo: dict, states: dict, bar, write_manifest) -> int:
    """Run the points of a theory-only sweep in this process on one structure; one result file.

    Each point is :func:`theory_dataset` (the same ``integrate`` or
    ``fixed_point`` call as a point run alone) on its structure from
    :class:`FastStructures`.  The results of all points are written at once
    to ``batches/theory-<stamp>.zarr`` (dim ``point``, coordinate ``label``),
    then each point's ``point.json`` (complete, ``result`` = that file) and
    the manifest: a sweep killed before that has no complete point of this
    run and re-runs them all.
    """
    structures = FastStructures()
    prepared = {}
    for label, p in todo.items():
        attempts = int(states[label].get("attempts", 0)) + 1
        prepared[label] = (prepare_point(spec, directory, p, attempts), attempts)
        states[label] = {"status": "running", "started": time.time(), "attempts": attempts}
    bar.update(running=len(todo))
    write_manifest()
    results, infos = {}, {}
    host = os.uname().nodename
    for label, p in todo.items():
        info = {"status": "running", "label": label, "coords": p.coords, "started": time.time(),
                "pid": os.getpid(), "host": host, "attempts": prepared[label][1]}
        timings: dict[str, float] = {}
        try:
            t0 = time.perf_counter()
            net = structures(p.params)
            timings["structure"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            results[label] = theory_dataset(p.params, spec.theory_options, structure=net)
            timings["theory"] = time.perf_counter() - t0
            info.update(status="complete", finished=time.time(), timings=timings)
        except Exception as exc:  # noqa: BLE001 - a failing point fails alone
            info.update(status="failed", error=f"{type(exc).__name__}: {exc}", finished=time.time(),
                        timings=timings)
        infos[label] = info
    if results:
        labels = list(results)
        t0 = time.perf_counter()
        try:
            batch = xr.concat([without_attrs(results[lab]) for lab in labels], dim="point", coords="minimal",
                              compat="override", join="outer", combine_attrs="drop")
            batch = batch.assign_coords(label=("point", labels))
            batch.attrs = {"format": SWEEP_FORMAT, "run": "theory",
                           "content": "theory results of a sweep's points, one structure for all "
                                      "(mam_xr.sweep fast path); a point per label",
                           "points": json.dumps({lab: {"coords": todo[lab].coords,
                                                       "theory": results[lab].attrs.get("theory")}
                                                 for lab in labels})}
            # Zarr, as sweep.zarr (xarray's NetCDF writer imports distributed, ~0.3 s).
            path = directory / "batches" / f"theory-{time.time_ns()}-{os.getpid()}.zarr"
            path.parent.mkdir(exist_ok=True)
            write_zarr(batch, path, sweep_dims=("point",))
            write = (time.perf_counter() - t0) / len(labels)
            for lab in labels:
                infos[lab]["result"] = path.relative_to(directory).as_posix()
                infos[lab]["timings"]["write"] = write
        except Exception as exc:  # noqa: BLE001 - no file: none of them is complete
            for lab in labels:
                infos[lab].update(status="failed", error=f"writing the results: {type(exc).__name__}: {exc}")
    bar.update(running=0)
    for label, info in infos.items():
        atomic_write_json(prepared[label][0] / "point.json", info)
        states[label] = info
        ok = info["status"] == "complete"
        if not ok:
            bar.write(f"point {todo[label].coords} failed: {info.get('error')}")
        bar.update(done=int(ok), failed=int(not ok))
    write_manifest()
    return structures.builds
