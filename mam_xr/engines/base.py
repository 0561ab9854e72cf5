"""The engine protocol and the registry of engines by name.

:func:`mam_xr.simulation.simulate` owns the run store, the segment loop,
progress, MPI bookkeeping and failure handling; an engine only builds and
runs the network of a :class:`mam_xr.network.NetworkPlan`.  The calls, in
order (docs/simulation.md, "How to add an engine"):

1. ``engine = cls(params, plan, connectivity=..., **options)`` -- light, no simulator work;
2. ``engine.check()`` -- before the store exists: refuse what cannot run
   (e.g. a network too large for memory), load a saved connectivity;
3. ``engine.ranks()`` / ``engine.n_vp`` / ``engine.store_attrs()`` -- for the store's attrs;
4. ``engine.build(root)`` -- create the network (``root``: the store's zarr
   group, e.g. to save the drawn connectivity); returns attrs for the store
   root (kernel information), written by rank 0;
5. ``engine.run_segment(t0, t1)`` for consecutive segments -- returns the
   :class:`Segment` of spikes with t0 < t <= t1 (ms) of this rank's neurons;
6. ``engine.finish_attrs()`` -- attrs for the completed store; ``engine.close()``.

``engine.timings`` (seconds by phase) is merged into the store's timings.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from ..errors import ParameterError, invalid

__all__ = ["Engine", "Segment", "register", "unregister", "get", "available"]


@dataclass
class Segment:
    """Spikes of one segment: ``steps`` (spike time in steps of dt), ``senders``
    (neuron index within its population) and ``pop`` (flat population index)."""

    steps: np.ndarray
    senders: np.ndarray
    pop: np.ndarray

    def __len__(self) -> int:
        return int(self.steps.size)


class Engine:
    """Base class of the engines (single process; override for MPI)."""

    #: Registry name (``params.simulation.engine``).
    name: ClassVar[str] = ""

    def __init__(self, params, plan, *, connectivity=None, **options):
        if options:
            raise ParameterError(invalid("engine_options", sorted(options),
                                         f"options the {self.name!r} engine knows (none)"))
        self.params = params
        self.plan = plan
        self.connectivity = connectivity
        self.timings: dict[str, float] = {}

    @property
    def n_vp(self) -> int:
        """Virtual processes (threads x ranks)."""
        return int(self.params.simulation.threads)

    def check(self) -> None:
        """Refuse, before the store exists, what this engine cannot run."""

    def ranks(self) -> tuple[int, int]:
        """(this rank, number of ranks)."""
        return 0, 1

    def barrier(self) -> None:
        """Wait for every rank (nothing to wait for in one process)."""

    def local_connections(self) -> int | None:
        """Synapses created on this rank, if the engine knows."""
        return None

    def store_attrs(self) -> dict:
        """Extra root attrs of the store, known before the build."""
        return {}

    def build(self, root) -> dict:
        """Create the network; return root attrs to add (kernel information)."""
        raise NotImplementedError

    def run_segment(self, t0: float, t1: float) -> Segment:
        """Advance from t0 to t1 (ms) and return the spikes of (t0, t1]."""
        raise NotImplementedError

    def finish_attrs(self) -> dict:
        """Extra attrs for the completed store (e.g. memory after the run)."""
        return {}

    def close(self) -> None:
        """Release the simulator's resources."""


_REGISTRY: dict[str, type[Engine]] = {}


def register(cls: type[Engine]) -> type[Engine]:
    """Register an :class:`Engine` subclass under ``cls.name`` (usable as a decorator)."""
    if not (isinstance(cls, type) and issubclass(cls, Engine) and cls.name):
        raise ParameterError(invalid("engine", getattr(cls, "__name__", cls),
                                     "an Engine subclass with a non-empty name"))
    _REGISTRY[cls.name] = cls
    return cls


def unregister(name: str) -> None:
    """Remove the engine registered as ``name`` (if any)."""
    _REGISTRY.pop(name, None)


def available() -> list[str]:
    """Names of the registered engines."""
    return sorted(_REGISTRY)


def get(name: str) -> type[Engine]:
    """The engine class registered as ``name``."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ParameterError(invalid("simulation.engine", name, f"one of {available()}")) from None
