"""Parameter sweeps: many points of the model on a Dask cluster, resumable, in one Dataset.

A sweep is described by a :class:`SweepSpec` (validated like all parameters):
the swept parameters with their values (a grid, or zipped lists), coupled
parameters (e.g. ``chi_I = 1 if chi == 1 else 2``), the base configuration (a
preset plus overrides) and what to run per point (``theory``, ``simulate``,
``analyse``).  :func:`run_sweep` runs it into a directory::

    <directory>/
      sweep.json        the spec and the execution settings (threads per point)
      manifest.json     every point: coordinates, label, status, error, timings
      points/<name>/    one directory per point (named by its coordinates and label):
        task.json         the point's parameters and steps
        point.json        status running | complete | failed, error, timings
        run.zarr          the point's run store (simulate)
        result.nc         the point's results (theory rates, statistics), NetCDF
        log.txt           output of the point's process
      batches/          theory-only sweeps on one structure: the results of a run's points
                        in one Zarr store (the points' point.json name it; no result.nc)
      sweep.zarr        all points combined along the sweep dimension(s)

Points are identified by their parameter label (:meth:`Params.label`), so a
re-run of the same directory skips the points whose results are complete and
re-runs the failed or incomplete ones; extending a value list re-uses the points
already done.  Each simulating point runs in a fresh Python process (NEST's
kernel is process-global), started by a single-threaded Dask worker; the
process uses ``simulation.threads`` NEST threads, chosen so that workers times
threads does not exceed the cores.  A serial theory-only sweep of chi, chi_I, g
and rate_ext builds one structure and derives every point's from it (see
:func:`run_sweep`, ``fast_theory``).  See docs/sweeps.md.

Modules: :mod:`~mam_xr.sweep.spec` (the specification),
:mod:`~mam_xr.sweep.plan` (its points), :mod:`~mam_xr.sweep.point` (one
point), :mod:`~mam_xr.sweep.fast` (theory-only sweeps on one structure),
:mod:`~mam_xr.sweep.backends` (where points run: a registry),
:mod:`~mam_xr.sweep.driver` (:func:`run_sweep`),
:mod:`~mam_xr.sweep.results` (status, combination, summary table) and
:mod:`~mam_xr.sweep.command` (``python -m mam_xr.sweep``).
"""

from __future__ import annotations

from .backends import (BACKENDS, Backend, Batch, Cluster, on_dask, point_memory, register_backend,
                       slurm_options)
from .command import main, run_and_summarise
from .driver import run_sweep
from .plan import Point, plan
from .point import run_point
from .results import combine, open_sweep, summary_table, sweep_status
from .spec import BaseConfig, Case, Coupling, SweepSpec, load_spec

__all__ = ["Case", "Coupling", "BaseConfig", "SweepSpec", "Point", "plan", "run_sweep",
           "open_sweep", "sweep_status", "combine", "load_spec", "run_point", "point_memory",
           "slurm_options", "main", "run_and_summarise", "summary_table", "Backend", "Batch",
           "Cluster", "BACKENDS", "register_backend", "on_dask"]
