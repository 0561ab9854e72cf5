"""Simulation engines as plug-ins: one module per engine, registered by name.

``mam_xr.engines.get("nest")`` returns the engine class that
:func:`mam_xr.simulation.simulate` drives (protocol: :mod:`mam_xr.engines.base`).
Importing this package does not import NEST or Brian2; each engine imports
its simulator when it builds.
"""

from __future__ import annotations

from . import brian2, nest  # noqa: F401  (register the built-in engines)
from .base import Engine, Segment, available, get, register, unregister

__all__ = ["Engine", "Segment", "available", "get", "register", "unregister"]
