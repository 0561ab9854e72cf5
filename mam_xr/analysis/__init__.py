"""Statistics of the spikes in a run store, computed with Dask and cached in the store.

Every statistic is computed from a mam_xr run store (:mod:`mam_xr.store`) in
**one pass over the spikes**: the populations are split into groups of whole
areas (or, for a very large area, of its populations) whose spikes fit a
per-task budget; one Dask task per group reads its spikes and computes every
per-population quantity the requested statistics need at once
(:mod:`mam_xr.analysis.kernels`); a small final step aggregates areas, smooths
time series and builds the functional connectivity.  Each statistic is an
:class:`xarray.Dataset` over ``(area, pop)`` and/or ``(area)`` (plus ``time``
where it applies) whose attrs give units and the exact definition.

The statistics are a registry (:mod:`mam_xr.analysis.registry`): one
:class:`Statistic` record each, in :mod:`mam_xr.analysis.statistics`.  Adding
one is one :func:`register` call plus, if it needs spikes the existing kernel
parts do not give, one kernel part (``@kernels.part("name")``); ``analyze``,
the cache, the report and the docs table follow.  Definitions:
docs/analysis.md and docs/model.md ("Analysis statistics").

Results are written to ``analysis/<name>/`` of the run store
(:mod:`mam_xr.store_cache`) together with their definition and are reused
until the definition or the spikes change.  A list of runs gives Datasets with
a ``run`` dimension.

Public names: :func:`analyze`, :data:`STATISTICS`, :data:`DEFAULTS`,
:func:`read_analysis`, :func:`lazy_spikes`, :func:`experimental_fc`,
:func:`plan_groups`, :class:`Statistic`, :class:`Parameter`, :class:`Figure`,
:func:`register`, :data:`REGISTRY`; :func:`import_upstream` is
:func:`mam_xr.importer.import_upstream`.
"""

from __future__ import annotations

from ..importer import import_upstream
from . import kernels, statistics  # noqa: F401  (statistics registers the built-in entries)
from .compute import DEFAULT_CHUNK_SPIKES, Inputs, analyze, lazy_spikes, plan_groups, read_analysis
from .fc import experimental_fc
from .registry import (ANALYSIS_VERSION, PARAMETERS, REGISTRY, Figure, Parameter, Statistic, defaults,
                       register)

__all__ = ["STATISTICS", "DEFAULTS", "analyze", "import_upstream", "lazy_spikes", "experimental_fc",
           "read_analysis", "plan_groups", "Statistic", "Parameter", "Figure", "register", "REGISTRY",
           "PARAMETERS", "Inputs", "figures"]

#: Names of the built-in statistics (groups ``analysis/<name>`` of the run store).
STATISTICS: tuple[str, ...] = tuple(REGISTRY)

#: Definition parameters and their defaults.
DEFAULTS: dict = defaults()


def figures(kind: str | None = None) -> list[tuple[str, Figure]]:
    """(statistic name, Figure) of every registered default figure (of one ``kind``)."""
    out = [(s.name, f) for s in REGISTRY.values() for f in s.figures if kind is None or f.kind == kind]
    return sorted(out, key=lambda sf: sf[1].order)
