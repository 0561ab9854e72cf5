"""Continuation: fixed points along a structural or input parameter (:func:`sweep`).

Newton's method from the previous fixed point, with a restart where a branch
ends; the structures along the sweep come from :func:`mam_xr.structure.rescale`
(the fast path), a rebuild or a callable.  See docs/theory.md, "Sweeps".
"""

from __future__ import annotations

import os
import warnings
from typing import Callable, Sequence

import numpy as np
import xarray as xr

from .. import structure as structure_module
from ..errors import ParameterError, invalid
from ..flat import AREAS
from .siegert import check_flag
from .solvers import ConvergenceWarning, fixed_point_dataset, initial_state, newton, relax, solve
from .system import (EXISTS_FLAT, assemble, common_attrs, flat_model, history, jsonable, neuron_of,
                     params_of, rates_vector, replacement_rates, single_threaded)

__all__ = ["sweep", "FAST_PARAMETERS", "RESTART_DT"]

#: Parameters of the fast path: the structure is rescaled (mam_xr.structure.rescale).
FAST_PARAMETERS = ("chi", "chi_I", "rate_ext", "g")

#: Largest step (ms) of the relaxation that restarts a sweep where its branch ended.
RESTART_DT = 0.02

#: (area, pop) cells of the labelled layout, and the flat populations among them.
N_LABELLED = EXISTS_FLAT.size
_FLAT = np.flatnonzero(EXISTS_FLAT)


@single_threaded
def sweep(structure: xr.Dataset, param: str, values: Sequence[float], params=None, *,
          build: Callable[[float], xr.Dataset] | None = None, fast: bool = True,
          chi: float | None = None, chi_I: float | None = None, tol: float = 1e-9,
          K_scaling: float | None = None, fullscale_rates=None, with_gain: bool = False,
          warn: bool = True) -> xr.Dataset:
    """Fixed points along a structural or input parameter, by continuation.

    The first point starts from :func:`integrate` (params' initial rates);
    every further point starts Newton's method from the previous fixed point.
    Where that fails (the branch ended), the point is relaxed from the
    previous fixed point for up to ``params.theory.T`` ms with a step of
    min(dt, 0.02 ms) (dt = 0.1 ms makes exponential Euler oscillate around
    stable high-activity states) and solved from there, with SciPy's root
    finders as a last resort (``restarted`` is True).

    Structures along the sweep come from, in this order: ``build(value)`` if
    given; ``mam_xr.structure.build(params.update({param: value}))`` if
    ``fast=False``; otherwise the fast path on ``structure`` (built with
    ``params``): :func:`mam_xr.structure.rescale` takes it to each value
    (``chi`` / ``chi_I`` rescale the CC couplings, ``g`` the couplings of
    inhibitory sources, ``rate_ext`` only changes the drive; down-scaled
    structures get their DC drive updated as a rebuild would).

    Parameters
    ----------
    structure : xr.Dataset
        Structure built with ``params``.
    param : str
        Parameter name (a Params shorthand, e.g. ``"chi"``, ``"rate_ext"``);
        becomes the sweep dim.
    values : sequence of float
        Parameter values, in sweep order.
    params : Params, optional
        Parameters of ``structure`` (default: its ``attrs['params']``, else
        ``Params()``, i.e. χ = 1.9, χ_I = 2).
    chi, chi_I : float, optional
        Hold the other CC factor at this value during a ``chi`` (``chi_I``)
        sweep; default: the value in ``params``.
    tol : float, default: 1e-9
        Residual tolerance of each fixed point (spikes/s).
    with_gain : bool, default: False
        Also return the gain matrix at every point.

    Returns
    -------
    xr.Dataset
        Dim ``param`` (coordinate = values): ``rate``, ``residual``, ``mu``,
        ``sigma`` (param, area, pop), ``converged``, ``stable``,
        ``eigenvalue_max_real``, ``eigenvalue_max_imag``, ``lambda_max``,
        ``n_evaluations``, ``restarted`` (param).

    Raises
    ------
    ParameterError
        An unknown parameter for the fast path, no ``mam_xr.structure.build``
        with ``fast=False``, a down-scaled structure without scale and
        full-scale rates, or an invalid value for Params.

    Warns
    -----
    ConvergenceWarning
        For points without a fixed point within ``tol`` (flagged in ``converged``).
    """
    if not isinstance(param, str) or not param:
        raise ParameterError(invalid("param", param, "a parameter name, e.g. 'chi'"))
    values = [float(v) for v in np.atleast_1d(values)]
    if not values:
        raise ParameterError(invalid("values", values, "at least one parameter value"))
    if not tol > 0:
        raise ParameterError(invalid("tol", tol, "a tolerance > 0 spikes/s"))
    for name, flag in (("fast", fast), ("with_gain", with_gain), ("warn", warn)):
        check_flag(name, flag)
    if build is not None and not callable(build):
        raise ParameterError(invalid("build", build, "a callable value -> structure Dataset"))
    if build is None and fast and param not in FAST_PARAMETERS:
        raise ParameterError(invalid(
            "param", param, f"one of {', '.join(FAST_PARAMETERS)} for the fast path, or fast=False / build="))
    p = params_of(params, structure)
    areas = p.simulation.areas_simulated
    replace = p.simulation.replace_non_simulated_areas
    repl = replacement_rates(p) if len(areas) < len(AREAS) and replace == "het_poisson_stat" else None
    current = {k: v for k, v in (("chi", chi), ("chi_I", chi_I)) if v is not None}
    base = rates_full = slim = None
    if build is None and fast:
        base = flat_model(structure)       # checks the structure once; K does not change
        rates_full = _fullscale_rates(structure, p, fullscale_rates)
        # only what the theory reads: rescale then copies and multiplies J alone
        slim = structure[["J", "external_J", "indegree", "external_indegree", "dc_drive"]]
    systems, found, residuals, evaluations, prev, restarted = [], [], [], [], None, []
    for value in values:
        at = {**{k: v for k, v in current.items() if k != param}, param: value}
        if base is not None:
            s = structure_module.rescale(slim, params=p, K_scaling=K_scaling,
                                         fullscale_rates=rates_full, **at)   # validates the values
            J = base["J"].copy()
            J[:, :-1] = s["J"].values.reshape(N_LABELLED, N_LABELLED)[_FLAT][:, _FLAT]
            model = {"K": base["K"], "J": J, "dc": s["dc_drive"].values.reshape(-1)[_FLAT]}
            # Along the fast path only the structure and rate_ext change: the other
            # parameters are p's (no Params.update per point).
            q, rate_ext = p, at.get("rate_ext")
        else:
            q, rate_ext = p.update(at), None
            s = build(value) if build is not None else structure_module.build(q)
            if not isinstance(s, xr.Dataset):
                raise ParameterError(invalid("build", build, "a callable value -> structure Dataset"))
            model = flat_model(s)
        system = assemble(model, q, rate_ext=rate_ext, areas_simulated=areas, replace=replace,
                          replacement=repl)
        again = False
        if prev is None:
            start = relax(system, initial_state(system, q, None, 1, None, None)[0][0], q.theory.dt,
                           int(round(q.theory.T / q.theory.dt)))
            nu, res, nfev, _ = solve(system, start, tol)
        else:
            # continuation: Newton from the previous fixed point (no MINPACK here: where
            # Newton fails the branch has usually ended, and MINPACK would take ~0.5 s)
            nu, res, nfev = newton(system, prev, tol)
        if res > tol and prev is not None:
            # The branch ended: relax from the previous fixed point and solve from there.
            # Step <= RESTART_DT: with dt = 0.1 ms exponential Euler oscillates around
            # high-activity states whose gain matrix has large negative eigenvalues
            # (|e^{-dt} + (1 - e^{-dt}) λ| > 1), although they are stable (max Re λ < 1).
            again = True
            dt_fine = min(q.theory.dt, RESTART_DT)
            end = relax(system, prev, dt_fine, int(round(q.theory.T / dt_fine)))
            nu2, res2, nfev2, _ = solve(system, end, tol)
            nfev += nfev2
            if res2 < res:
                nu, res = nu2, res2
        prev = nu
        restarted.append(again)
        systems.append(system)
        found.append(nu)
        residuals.append(res)
        evaluations.append(nfev)
    ds = fixed_point_dataset(systems, np.array(found), np.array(residuals), evaluations, "", tol,
                         with_gain, False)
    if len(values) == 1:
        ds = ds.expand_dims("draw")
    ds = ds.rename(draw=param).transpose(param, "area", "pop", ...)
    ds = ds.assign_coords({param: (param, values, {"long_name": f"swept parameter {param}"})})
    ds["restarted"] = xr.DataArray(np.array(restarted), dims=(param,)).assign_attrs(
        long_name="continuation failed; integrated from the previous fixed point and restarted",
        units="1")
    if warn and not bool(ds.converged.all()):
        bad = [v for v, ok in zip(values, ds.converged.values) if not ok]
        warnings.warn(f"no fixed point within tol={tol} spikes/s at {param} = {bad}",
                      ConvergenceWarning, stacklevel=2)
    nrn = neuron_of(p)
    ds.attrs = jsonable({
        **common_attrs(p, nrn, system, p.network.input.rate_ext, replace),
        "sweep_param": param, "structures": "build callable" if build is not None else
        ("mam_xr.structure.build" if not fast else "fast path on the given structure"),
        "chi": current.get("chi"), "chi_I": current.get("chi_I"),
        "solver": "continuation by damped Newton with the exact Jacobian; where it fails, relaxation "
                  "(step <= 0.02 ms) from the previous point, then Newton, scipy.optimize.root (hybr, lm)",
        "tol": tol, "history": history("sweep", p),
    })
    return ds


def _fullscale_rates(structure: xr.Dataset, p, fullscale_rates):
    """The full-scale rates of a down-scaled structure's DC drive, read once for the
    whole sweep (a file name is read by structure.rescale otherwise, at every point)."""
    if not bool(np.any(np.nan_to_num(structure["dc_drive"].values) != 0)):
        return fullscale_rates
    source = p.network.fullscale_rates if fullscale_rates is None else fullscale_rates
    if source is None:
        return None                        # structure.rescale says what is missing
    if isinstance(source, str) and (source == "upstream" or os.path.isdir(source)):
        return structure_module.read_fullscale_rates(source)   # upstream's file, a run store
    return rates_vector(source, "fullscale_rates")
