"""mam_xr: the multi-area model of macaque visual cortex as labelled data.

Data flow (one way): data -> anatomy -> structure -> theory / simulation ->
store -> analysis -> viz.  See docs/architecture.md.
"""

from __future__ import annotations

__version__ = "0.1.0"

from .errors import DataError, MamXrError, ParameterError, SimulationError, StoreError
from .flat import AREAS, POPS
