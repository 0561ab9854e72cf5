"""Mean-field theory: Siegert rates, fixed points, stability and parameter sweeps.

Every population is a rate unit whose stationary rate is the LIF transfer
function with exponentially filtered synaptic input (Siegert formula with the
colored-noise shift of Fourcaud & Brunel 2002); its input mean μ and standard
deviation σ follow from the structure and the rates of all populations.  The
maths is in docs/theory.md.  Public functions:

* :func:`transfer`, :func:`transfer_derivatives` -- Φ(μ, σ) and its partial
  derivatives, vectorised, numerically stable for any argument
  (:mod:`~mam_xr.theory.siegert`);
* :func:`input_statistics`, :func:`replacement_rates` -- μ and σ of every
  population for given rates; the rates of replaced areas
  (:mod:`~mam_xr.theory.system`);
* :func:`integrate` -- the pseudo-dynamics τ dν/dt = −ν + Φ(ν) with
  upstream's settings, with a convergence diagnostic; :func:`fixed_point` --
  root finding started from an integration, with the residual, the gain
  matrix and its leading eigenvalue; :func:`gain_matrix`
  (:mod:`~mam_xr.theory.solvers`);
* :func:`sweep` -- fixed points along a parameter (χ first) by continuation,
  on structures from :func:`mam_xr.structure.rescale`
  (:mod:`~mam_xr.theory.continuation`).

Every result is an :class:`xarray.Dataset` on the dims ``area``, ``pop``
(plus ``time``, ``draw``, ``source_area``, ``source_pop`` or the sweep dim)
whose attrs are JSON-able, so ``ds.to_zarr(store, group="theory")`` works.
Internally the theory works on the flat 254-population view
(:mod:`mam_xr.flat`); the populations of non-simulated areas are removed from
the dynamic system and enter as fixed sources (see :func:`integrate`).

Units: rates in spikes/s, μ, σ, J, θ in mV, times in ms, currents in pA.
"""

from __future__ import annotations

from .continuation import sweep
from .siegert import transfer, transfer_derivatives
from .solvers import ConvergenceWarning, fixed_point, gain_matrix, integrate
from .system import input_statistics, replacement_rates

__all__ = [
    "ConvergenceWarning", "transfer", "transfer_derivatives", "input_statistics", "integrate",
    "fixed_point", "gain_matrix", "sweep", "replacement_rates",
]
