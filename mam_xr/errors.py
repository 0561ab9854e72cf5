"""One small error hierarchy for mam_xr.

Every error raised on purpose by mam_xr derives from :class:`MamXrError`, and
from the matching built-in where one fits, so ``except ValueError`` keeps
working for callers who do not know mam_xr.  Messages follow the form
``name=value is invalid: expected ...``.
"""

from __future__ import annotations


class MamXrError(Exception):
    """Base class of every mam_xr error."""


class ParameterError(MamXrError, ValueError):
    """A parameter has the wrong type, an unknown name or a value out of range."""


class DataError(MamXrError, OSError):
    """An upstream data file is missing, corrupt or cannot be obtained."""


class StoreError(MamXrError, OSError):
    """A Zarr store is missing, damaged, incomplete or from another format version."""


class SimulationError(MamXrError, RuntimeError):
    """A simulation could not be set up or failed while running."""


def invalid(name: str, value, expected: str) -> str:
    """Format the standard message ``name=value is invalid: expected ...``."""
    return f"{name}={value!r} is invalid: expected {expected}"
