"""Dask clusters for analysing mam_xr run stores (and sweeps) on HPC systems.

Importable helpers used by runners/analyze_cluster.py and the tests:

* :func:`load_config` merges runners/dask/jobqueue.yaml (or another file) into
  ``dask.config``, so that ``dask_jobqueue.SLURMCluster()`` -- also the one
  ``mam_xr.sweep.run_sweep(cluster="slurm")`` makes -- takes its queue,
  account, prologue and memory settings from it;
* :func:`slurm_cluster` makes a ``SLURMCluster`` from that configuration;
* :func:`job_script` is the dry run: the batch script one worker job would
  be submitted with, without submitting anything.
"""

from __future__ import annotations

from pathlib import Path

#: The configuration shipped next to this file.
CONFIG = Path(__file__).resolve().parent / "dask" / "jobqueue.yaml"


def load_config(path: str | Path | None = None) -> dict:
    """Merge a dask YAML configuration into ``dask.config``; returns it."""
    import dask.config
    import yaml

    path = Path(path) if path is not None else CONFIG
    with open(path) as fh:
        cfg = yaml.safe_load(fh) or {}
    dask.config.update(dask.config.config, cfg, priority="new")
    return cfg


def slurm_cluster(config: str | Path | None = None, **overrides):
    """A ``dask_jobqueue.SLURMCluster`` from ``config`` (default: the shipped file).

    ``overrides`` are SLURMCluster keyword arguments (``queue``, ``account``,
    ``cores``, ``memory``, ``walltime``, ``job_extra_directives``, ...).  No job
    is submitted until ``cluster.scale(jobs=n)``.
    """
    from dask_jobqueue import SLURMCluster

    load_config(config)
    overrides.setdefault("scheduler_options", {"dashboard_address": ":0"})
    return SLURMCluster(**overrides)


def job_script(config: str | Path | None = None, **overrides) -> str:
    """The SLURM job script of one Dask worker job (dry run: nothing is submitted)."""
    cluster = slurm_cluster(config, **overrides)
    try:
        return cluster.job_script()
    finally:
        cluster.close()
