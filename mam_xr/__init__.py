"""mam_xr: the multi-area model of macaque visual cortex as labelled data.

Data flow (one way): data -> anatomy -> structure -> theory / simulation ->
store -> analysis -> viz.  See docs/architecture.md.

    params = mam_xr.Params.tutorial(chi=1.9)     # validated, hashable, JSON round-trip
    net    = mam_xr.build(params)                # structure Dataset
    th     = mam_xr.theory.integrate(net)        # Dataset with convergence flag
    run    = mam_xr.simulate(params, store=path) # writes and returns a run store handle
    stats  = mam_xr.analyze(run)                 # Datasets, cached in the store
    need   = mam_xr.plan(params)                 # memory and time, before anything is drawn
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

from .errors import DataError, MamXrError, ParameterError, SimulationError, StoreError
from .flat import AREAS, POPS
from .params import Params

# Submodules and top-level functions are imported on first use, so that
# ``import mam_xr`` stays light (NEST, Dask and HoloViews load only when needed).
_LAZY_FUNCTIONS = {
    "build": ("structure", "build"),
    "simulate": ("simulation", "simulate"),
    "analyze": ("analysis", "analyze"),
    "open_run": ("store", "open_run"),
    "plan": ("planner", "plan"),
}
_SUBMODULES = {"data", "anatomy", "structure", "theory", "simulation", "store", "analysis",
               "sweep", "viz", "report", "flat", "params", "cli", "planner"}


def __getattr__(name):
    if name in _LAZY_FUNCTIONS:
        module, attr = _LAZY_FUNCTIONS[name]
        return getattr(importlib.import_module(f".{module}", __name__), attr)
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'mam_xr' has no attribute {name!r}")


__all__ = ["AREAS", "POPS", "Params", "build", "simulate", "analyze", "open_run", "plan",
           "MamXrError", "ParameterError", "DataError", "StoreError", "SimulationError"]
