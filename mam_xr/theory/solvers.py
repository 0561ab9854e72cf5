"""Solvers of the mean-field system: integration, fixed points, stability.

* :func:`integrate` -- the pseudo-dynamics τ dν/dt = −ν + Φ(ν) with upstream's
  settings (exponential Euler), with a convergence diagnostic;
* :func:`fixed_point` -- root finding (damped Newton, then SciPy's MINPACK)
  started from an integration, with the residual, the gain matrix and its
  leading eigenvalue;
* :func:`gain_matrix` -- G_ij = ∂Φ_i/∂ν_j at given rates.

The building blocks (:func:`run_euler`, :func:`relax`, :func:`newton`,
:func:`solve`, :func:`fixed_point_dataset`) serve the continuation in
:mod:`mam_xr.theory.continuation` too.  See docs/theory.md.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import replace
from typing import Literal, Sequence

import numpy as np
import xarray as xr
from scipy import optimize

from ..errors import ParameterError, invalid
from ..flat import AREAS, N_POPULATIONS, POPS, exists, from_flat_matrix
from .siegert import Neuron, check_flag
from .system import (EXISTS_ATTRS, EXISTS_FLAT, FLAT_CC, SIMULATED_ATTRS, TAU_RATE_MS, System,
                     check_rate_ext, common_attrs, history, jsonable, labelled, neuron_of,
                     rates_vector, settings, simulated_coord, single_threaded, system_of)

__all__ = ["ConvergenceWarning", "integrate", "fixed_point", "gain_matrix", "initial_state",
           "run_euler", "relax", "newton", "solve", "fixed_point_dataset"]


class ConvergenceWarning(UserWarning):
    """The mean-field integration or root finding did not reach a fixed point."""


# --- integration ----------------------------------------------------------------

def initial_state(system: System, p, initial_rates, n_draws, seed, rate_max) -> tuple[np.ndarray, str]:
    """Initial dynamic rates (draw, n_dyn) and a description."""
    t = p.theory
    if initial_rates is None:
        initial_rates = t.initial_rates
    n_draws = t.n_draws if n_draws is None else int(n_draws)
    if isinstance(initial_rates, str):
        if initial_rates == "zero":
            return np.zeros((1, system.dyn.size)), "zero"
        if initial_rates == "random":
            seed = t.seed if seed is None else int(seed)
            rate_max = t.rate_max if rate_max is None else float(rate_max)
            if n_draws < 1:
                raise ParameterError(invalid("n_draws", n_draws, "an integer >= 1"))
            # One RandomState(seed), rate_max·U(0,1) for all 254 populations per draw
            # (upstream: RandomState(123), 'random_uniform').
            rng = np.random.RandomState(seed)
            draws = rate_max * rng.uniform(size=(n_draws, N_POPULATIONS))
            return draws[:, system.dyn], f"random uniform in [0, {rate_max}] spikes/s, seed {seed}"
        raise ParameterError(invalid("initial_rates", initial_rates,
                                     "'zero', 'random', a (area, pop) DataArray or a 254-vector"))
    if isinstance(initial_rates, xr.DataArray) and "draw" in initial_rates.dims:
        arr = np.stack([rates_vector(initial_rates.isel(draw=k), "initial_rates")
                        for k in range(initial_rates.sizes["draw"])])
    else:
        arr = np.asarray(initial_rates, float) if not isinstance(initial_rates, (xr.DataArray, dict)) \
            else rates_vector(initial_rates, "initial_rates")[None]
        if arr.ndim == 1:
            arr = rates_vector(arr, "initial_rates")[None]
        elif arr.ndim != 2 or arr.shape[1] != N_POPULATIONS:
            raise ParameterError(invalid("initial_rates", f"<array of shape {arr.shape}>",
                                         f"({N_POPULATIONS},) or (draw, {N_POPULATIONS}) rates"))
        else:
            arr = np.stack([rates_vector(row, "initial_rates") for row in arr])
    return arr[:, system.dyn], "given"


def run_euler(system: System, nu0: np.ndarray, dt: float, n_steps: int, first_step_decay: bool,
         record: bool = True, stride: int = 1):
    """Exponential-Euler integration of τ dν/dt = −ν + Φ(μ(ν), σ(ν)).

    nu0: (draw, n).  Returns the trajectory (draw, n, n_steps // stride + 1),
    sampled every ``stride`` steps (None if ``record`` is False), the last
    state and the state one step before.
    """
    decay = math.exp(-dt / TAU_RATE_MS)
    gain = 1.0 - decay
    nu = nu0.copy()
    # time-major while integrating (each sample is one contiguous row)
    traj = np.empty((n_steps // stride + 1,) + nu.shape) if record else None
    if record:
        traj[0] = nu
    prev = nu
    phi = system.phi
    for k in range(1, n_steps + 1):
        prev = nu
        if k == 1 and first_step_decay:
            # NEST delivers no rate input in the first step of a run: pure decay.
            nu = decay * nu
        else:
            nu = phi(nu)
            nu *= gain
            nu += decay * prev
        if record and k % stride == 0:
            traj[k // stride] = nu
    return (np.moveaxis(traj, 0, -1) if record else None), nu, prev


def relax(system: System, nu0: np.ndarray, dt: float, n_steps: int, every: int = 20,
           good: float = 1e-2) -> np.ndarray:
    """Integrate (as :func:`run_euler`) but stop once max |Φ(ν) − ν| < ``good`` (spikes/s):
    a start close enough for Newton's method."""
    decay = math.exp(-dt / TAU_RATE_MS)
    nu = decay * nu0          # NEST's first step
    for k in range(2, n_steps + 1):
        phi = system.phi(nu)
        if k % every == 0 and np.max(np.abs(phi - nu)) < good:
            break
        nu = decay * nu + (1.0 - decay) * phi
    return nu


@single_threaded
def integrate(structure: xr.Dataset, params=None, *, initial_rates=None, n_draws: int | None = None,
              seed: int | None = None, rate_max: float | None = None, dt: float | None = None,
              T: float | None = None, rate_ext: float | None = None,
              areas_simulated: Sequence[str] | None = None, replace: str | None = None,
              replacement_rates=None, tol: float = 1e-6, first_step: Literal["nest", "euler"] = "nest",
              rec_interval: float | None = None, cutoff: bool = True,
              warn: bool = True) -> xr.Dataset:
    """Integrate the mean-field pseudo-dynamics as upstream does (docs/theory.md, "Integration").

    τ dν/dt = −ν + Φ(μ(ν), σ(ν)), τ = 1 ms, exponential Euler with step
    ``dt``: ν(t+dt) = e^{−dt/τ} ν(t) + (1 − e^{−dt/τ}) Φ(ν(t)), sampled at
    every step for ``T`` ms.  As in NEST, the first step of each draw is a
    pure decay (``first_step="euler"`` makes it a regular step).  Several
    initial conditions ("draws") are integrated side by side, each
    independently (upstream chains them in one NEST run).

    Populations of areas not in ``areas_simulated`` are not integrated: they
    fire at the replacement rates and act as fixed Poisson sources
    (upstream's theory ignores the subset).

    Parameters
    ----------
    structure : xr.Dataset
        Structure Dataset (mam_xr.flat layout).
    params : mam_xr.params.Params, optional
        ``theory`` (dt, T, initial_rates, n_draws, rate_max, seed),
        ``network.neuron``, ``network.input.rate_ext`` and
        ``simulation.areas_simulated`` / ``replace_non_simulated_areas`` /
        ``replace_cc_input_source``; default: the structure's
        ``attrs['params']``, else ``Params()``.  Keyword
        arguments override it.
    initial_rates : {"zero", "random"}, DataArray or array, optional
        Initial rates (spikes/s): zero, ``n_draws`` uniform draws in
        [0, rate_max] from ``RandomState(seed)``, or given rates (area, pop)
        / 254-vector / (draw, 254).
    tol : float, default: 1e-6
        Converged if max |Φ(ν(T)) − ν(T)| <= tol (spikes/s), i.e. τ|dν/dt| at T.
    first_step : {"nest", "euler"}
    rec_interval : float, optional
        Sampling interval of ``trajectory`` (ms, a multiple of ``dt``; default
        ``dt``, as upstream).  ``T`` must be a multiple of it.
    cutoff : bool, default: True
        NEST 3's Φ = 0 for θ − μ > 6σ.
    warn : bool, default: True
        Warn (:class:`ConvergenceWarning`) when a draw has not converged.

    Returns
    -------
    xr.Dataset
        ``trajectory`` (area, pop, time[, draw]) and ``rate`` (area, pop[, draw])
        in spikes/s, ``residual`` (area, pop[, draw]) = Φ(ν(T)) − ν(T) in
        spikes/s, ``mu`` and ``sigma`` at ν(T) in mV, ``max_abs_change_last_step``
        ([draw]) in spikes/s, ``converged`` ([draw]) bool; coords ``time`` (ms),
        ``exists``, ``simulated``.  The ``draw`` dim is present when there is
        more than one initial condition.

    Raises
    ------
    ParameterError
        Invalid dt, T, rec_interval, tol, first_step or initial rates; a
        subset of areas without a stationary replacement mode.

    Warns
    -----
    ConvergenceWarning
        If a draw has not converged after ``T`` (also flagged in ``converged``).
    """
    p, areas, replace, repl = settings(params, areas_simulated, replace, replacement_rates, structure)
    dt = p.theory.dt if dt is None else float(dt)
    T = p.theory.T if T is None else float(T)
    if not dt > 0:
        raise ParameterError(invalid("dt", dt, "a step > 0 ms"))
    if not T > 0:
        raise ParameterError(invalid("T", T, "a duration > 0 ms"))
    if not dt < T:
        raise ParameterError(invalid("dt", dt, f"a step smaller than T={T} ms"))
    n_steps = int(round(T / dt))
    if abs(n_steps * dt - T) > 1e-9 * T:
        raise ParameterError(invalid("T", T, f"a multiple of dt={dt} ms"))
    rec = dt if rec_interval is None else float(rec_interval)
    stride = int(round(rec / dt))
    if not (stride >= 1 and abs(stride * dt - rec) <= 1e-9 * rec and n_steps % stride == 0):
        raise ParameterError(invalid("rec_interval", rec_interval,
                                     f"a multiple of dt={dt} ms that divides T={T} ms"))
    if first_step not in ("nest", "euler"):
        raise ParameterError(invalid("first_step", first_step, "'nest' or 'euler'"))
    if not tol > 0:
        raise ParameterError(invalid("tol", tol, "a tolerance > 0 spikes/s"))
    check_flag("cutoff", cutoff)
    check_flag("warn", warn)
    nrn = _replace_neuron(neuron_of(p), cutoff=cutoff)
    rate_ext = p.network.input.rate_ext if rate_ext is None else check_rate_ext(rate_ext)
    system = system_of(structure, p, neuron=nrn, rate_ext=rate_ext, areas_simulated=areas,
                     replace=replace, replacement=repl)
    nu0, how = initial_state(system, p, initial_rates, n_draws, seed, rate_max)
    traj, nu, prev = run_euler(system, nu0, dt, n_steps, first_step == "nest", stride=stride)
    residual = system.phi(nu) - nu
    max_res = np.max(np.abs(residual), axis=-1)
    converged = max_res <= tol
    change = np.max(np.abs(nu - prev), axis=-1)
    if warn and not converged.all():
        bad = np.flatnonzero(~converged)
        warnings.warn(
            f"mean-field integration did not converge after T={T} ms in {bad.size} of "
            f"{converged.size} draw(s): max |Φ(ν)−ν| = {max_res.max():.3g} spikes/s > tol={tol}; "
            "integrate longer (T=...) or call mam_xr.theory.fixed_point()",
            ConvergenceWarning, stacklevel=2)
    mu, sigma = system.mu_sigma(nu)

    times = stride * dt * np.arange(n_steps // stride + 1)
    # One Dataset constructor call with plain arrays (building a labelled DataArray per
    # variable and aligning them took ~5 ms, a tenth of the whole call).
    single = nu.shape[0] == 1
    lead = () if single else ("draw",)
    simulated = np.zeros(EXISTS_FLAT.size, bool)
    simulated[np.flatnonzero(EXISTS_FLAT)[system.dyn]] = True
    simulated = simulated.reshape(len(AREAS), len(POPS))

    def grid(values, fill_fixed=False):      # (draw, n_dyn[, time]) -> ([draw,] area, pop[, time])
        values = np.moveaxis(np.asarray(values, float), 1, -1)       # (draw[, time], n_dyn)
        flat = np.full(values.shape[:-1] + (N_POPULATIONS,), np.nan)
        if fill_fixed:
            flat[...] = system.fixed_rates
        flat[..., system.dyn] = values
        full = np.full(values.shape[:-1] + (EXISTS_FLAT.size,), np.nan)
        full[..., EXISTS_FLAT] = flat
        full = full.reshape(values.shape[:-1] + (len(AREAS), len(POPS)))
        if full.ndim == 4:                                            # (draw, time, area, pop)
            full = np.moveaxis(full, 1, -1)
        return full[0] if single else full

    def scalar(values):
        return values[0] if single else values

    ds = xr.Dataset({
        "trajectory": (lead + ("area", "pop", "time"), grid(traj, True), {
            "long_name": "rate trajectory of the mean-field pseudo-dynamics", "units": "spikes/s"}),
        "rate": (lead + ("area", "pop"), grid(nu, True), {
            "long_name": "rate at the end of the integration", "units": "spikes/s"}),
        "residual": (lead + ("area", "pop"), grid(residual), {
            "long_name": "Φ(ν(T)) − ν(T) = τ dν/dt at T", "units": "spikes/s"}),
        "mu": (lead + ("area", "pop"), grid(mu), {"long_name": "mean input μ at ν(T)", "units": "mV"}),
        "sigma": (lead + ("area", "pop"), grid(sigma), {"long_name": "input SD σ at ν(T)", "units": "mV"}),
        "max_abs_change_last_step": (lead, scalar(change), {
            "long_name": "max |ν(T) − ν(T − dt)|", "units": "spikes/s"}),
        "converged": (lead, scalar(converged), {
            "long_name": f"max |Φ(ν(T)) − ν(T)| <= {tol} spikes/s", "units": "1"}),
    }, coords={
        "area": list(AREAS), "pop": list(POPS),
        "time": ("time", times, {"units": "ms", "long_name": "pseudo-time"}),
        "exists": (("area", "pop"), EXISTS_FLAT.reshape(len(AREAS), len(POPS)).copy(),
                   dict(EXISTS_ATTRS)),
        "simulated": (("area", "pop"), simulated, dict(SIMULATED_ATTRS)),
    })
    common = common_attrs(p, nrn, system, rate_ext, replace)
    ds.attrs = jsonable({
        **common,
        "dt_ms": dt, "T_ms": T, "rec_interval_ms": stride * dt, "initial_rates": how,
        "first_step": first_step,
        "integration": "exponential Euler of tau dnu/dt = -nu + Phi(nu), docs/theory.md",
        "tol": tol, "converged": bool(converged.all()),
        "history": history("integrate", p, common["params_label"]),
    })
    return ds


def _replace_neuron(nrn: Neuron, **changes) -> Neuron:
    return replace(nrn, **changes)


def _with_draw(da: xr.DataArray) -> xr.DataArray:
    return da if "draw" in da.dims else da.expand_dims("draw")


def _dims(da: xr.DataArray) -> xr.DataArray:
    """(area, pop[, dim_0]) with a lead draw axis -> dims (area, pop, draw)."""
    if "dim_0" in da.dims:
        return da.rename(dim_0="draw")
    return da.expand_dims("draw", axis=-1)


# --- fixed points and stability ----------------------------------------------------

def newton(system: System, nu0: np.ndarray, tol: float, maxiter: int = 40):
    """Damped Newton on F(ν) = Φ(max(ν, 0)) − ν with the exact Jacobian G − I.

    Fast when started near a fixed point (continuation).  Returns (ν, max|F|,
    number of evaluations)."""
    eye = np.eye(nu0.size)
    nu = np.maximum(nu0, 0.0)
    phi, G = system.gain(nu)
    F = phi - nu
    err, nfev = float(np.max(np.abs(F))), 1
    for _ in range(maxiter):
        if err <= 0.1 * tol:
            break
        try:
            step = np.linalg.solve(G - eye, -F)
        except np.linalg.LinAlgError:
            break
        alpha = 1.0
        while True:
            trial = np.maximum(nu + alpha * step, 0.0)
            phi_t = system.phi(trial)
            nfev += 1
            err_t = float(np.max(np.abs(phi_t - trial)))
            if err_t < err or alpha < 1e-3:
                break
            alpha *= 0.5
        if err_t >= err:
            break
        nu = trial
        phi, G = system.gain(nu)
        nfev += 1
        F = phi - nu
        err = float(np.max(np.abs(F)))
    return nu, err, nfev


def solve(system: System, nu0: np.ndarray, tol: float, held_shift: bool = False):
    """Root of F(ν) = Φ(max(ν, 0)) − ν from ``nu0``: damped Newton, then SciPy's
    hybr and lm (MINPACK) with the exact Jacobian G − I if needed.
    Returns (ν*, max |F|, n_evaluations, message)."""
    nu, res, nfev = newton(system, nu0, tol)
    best = (nu, res, nfev, "newton")
    if res <= tol:
        return best
    eye = np.eye(nu0.size)

    def fun(nu):
        pos = np.maximum(nu, 0.0)
        phi, G = system.gain(pos)
        G[:, nu < 0] = 0.0
        return phi - nu, G - eye

    # Bounded effort: MINPACK's default budgets (100 (n+1) evaluations) take minutes here.
    for method, options in (("hybr", {"xtol": 1e-13, "maxfev": 100}),
                            ("lm", {"xtol": 1e-13, "ftol": 1e-15, "maxiter": 50})):
        sol = optimize.root(fun, nu0, jac=True, method=method, options=options)
        nu = np.maximum(sol.x, 0.0)
        res = float(np.max(np.abs(system.phi(nu) - nu)))
        nfev += int(sol.nfev)
        if res < best[1]:
            best = (nu, res, nfev, f"{method}: {sol.message}")
        if res <= tol:
            break
    return best[0], best[1], nfev, best[3]


def _homotopy(system: System, tol: float, dt: float = 0.1, n_steps: int = 500):
    """Fixed point reached by continuation in the cortico-cortical coupling strength.

    With the CC parts of A and B scaled by s and s² (J -> sJ), s = 0 is a set of
    isolated areas whose pseudo-dynamics settle; the fixed point is then
    followed to s = 1 with Newton steps (step in s halved on failure).  This
    does not depend on where an unsettled trajectory happens to end.
    Returns (ν, max |F|, n_evaluations) or None.
    """
    cc = FLAT_CC[np.ix_(system.dyn, system.dyn)]
    local_A, cc_A = np.where(cc, 0.0, system.A), np.where(cc, system.A, 0.0)
    local_B, cc_B = np.where(cc, 0.0, system.B), np.where(cc, system.B, 0.0)

    def at(s):
        return replace(system, A=local_A + s * cc_A, B=local_B + s * s * cc_B)

    nu = relax(at(0.0), np.zeros(system.dyn.size), dt, n_steps)
    nu, res, nfev = newton(at(0.0), nu, tol)
    if res > tol:
        return None
    s, h = 0.0, 0.1
    while s < 1.0:
        t = min(1.0, s + h)
        trial, res, n = newton(system if t == 1.0 else at(t), nu, tol)
        nfev += n
        if res <= tol:
            s, nu = t, trial
            h = min(0.25, 1.5 * h)
        else:
            h *= 0.5
            if h < 1e-3:
                return None
    return nu, res, nfev


def _eigen(G: np.ndarray):
    lam = np.linalg.eigvals(G)
    k = int(np.argmax(lam.real))
    return lam[k]


def fixed_point_dataset(system, nu: np.ndarray, res_max: np.ndarray, nfev, how, tol,
                    with_gain: bool, held_shift: bool) -> xr.Dataset:
    """Dataset of one or several (draw, n) fixed points; ``system`` is one System
    or a list with one per row (a sweep)."""
    systems = system if isinstance(system, list) else [system] * nu.shape[0]
    system = systems[0]
    phis, gains, lead, mu, sigma = [], [], [], [], []
    for k in range(nu.shape[0]):
        phi, G = systems[k].gain(nu[k], held_shift=held_shift)
        m, s = systems[k].mu_sigma(nu[k])
        phis.append(phi)
        gains.append(G)
        lead.append(_eigen(G))
        mu.append(m)
        sigma.append(s)
    phis, lead, mu, sigma = np.array(phis), np.array(lead), np.array(mu), np.array(sigma)
    converged = res_max <= tol
    data = {
        "rate": _dims(labelled(system, nu, "fixed-point rate", "spikes/s", True)),
        "residual": _dims(labelled(system, phis - nu, "Φ(ν*) − ν*", "spikes/s")),
        "mu": _dims(labelled(system, mu, "mean input μ at the fixed point", "mV")),
        "sigma": _dims(labelled(system, sigma, "input SD σ at the fixed point", "mV")),
        "converged": xr.DataArray(converged, dims=("draw",)).assign_attrs(
            long_name=f"max |Φ(ν*) − ν*| <= {tol} spikes/s", units="1"),
        "eigenvalue_max_real": xr.DataArray(lead.real, dims=("draw",)).assign_attrs(
            long_name="largest real part of the eigenvalues of the gain matrix G", units="1"),
        "eigenvalue_max_imag": xr.DataArray(lead.imag, dims=("draw",)).assign_attrs(
            long_name="imaginary part of that eigenvalue", units="1"),
        "lambda_max": xr.DataArray(np.sqrt(np.where(lead.real >= 0, lead.real, np.nan)),
                                   dims=("draw",)).assign_attrs(
            long_name="sqrt(max Re λ(G)), upstream's lambda_max; NaN if negative",
            units="1"),
        "stable": xr.DataArray(lead.real < 1.0, dims=("draw",)).assign_attrs(
            long_name="fixed point is linearly stable under tau dnu/dt = -nu + Phi(nu) "
                      "(max Re λ(G) < 1)", units="1"),
        "n_evaluations": xr.DataArray(np.asarray(nfev, dtype=np.int64), dims=("draw",)).assign_attrs(
            long_name="evaluations of Φ and its Jacobian by the root finder", units="1"),
    }
    if with_gain:
        full = np.full((nu.shape[0], N_POPULATIONS, N_POPULATIONS), np.nan)
        for k, G in enumerate(gains):
            full[k][np.ix_(system.dyn, system.dyn)] = G
        gain = xr.concat([from_flat_matrix(g) for g in full], dim="draw")
        data["gain"] = gain.transpose("area", "pop", "source_area", "source_pop", "draw").assign_attrs(
            long_name="gain matrix G_ij = dPhi_i/dnu_j = tau_m (S_i K_ij J_ij + T_i K_ij J_ij^2)",
            units="1")
    ds = xr.Dataset(data).assign_coords(exists=exists(), simulated=simulated_coord(system))
    if ds.sizes["draw"] == 1:
        ds = ds.isel(draw=0, drop=True)
    return ds


@single_threaded
def fixed_point(structure: xr.Dataset, params=None, *, initial=None, tol: float = 1e-9,
                rate_ext: float | None = None, areas_simulated: Sequence[str] | None = None,
                replace: str | None = None, replacement_rates=None, cutoff: bool = True,
                held_shift: bool = False, with_gain: bool = True, warn: bool = True,
                **integrate_kwargs) -> xr.Dataset:
    """Fixed point ν* = Φ(ν*) by root finding, with its stability (docs/theory.md, "Fixed points").

    SciPy's ``root`` (MINPACK hybrid method, Levenberg-Marquardt as fallback)
    with the exact Jacobian G − I, started from ``initial``: by default the
    end of :func:`integrate` with the same settings (every draw gives its own
    fixed point).  The residual max |Φ(ν*) − ν*| is checked against ``tol``.

    Parameters
    ----------
    structure : xr.Dataset
        Structure Dataset.
    params : mam_xr.params.Params, optional
        As in :func:`integrate`.
    initial : Dataset, DataArray or array, optional
        A Dataset from :func:`integrate` (its end state; if it has not
        converged, first the mean over the second half of its trajectory),
        rates (area, pop[, draw]) or a 254-vector (spikes/s).  Default:
        integrate first.
    tol : float, default: 1e-9
        Converged if max |Φ(ν*) − ν*| <= tol (spikes/s).
    held_shift : bool, default: False
        Derivative in σ with the colored-noise shift held fixed, as upstream
        (see :func:`transfer_derivatives`).
    with_gain : bool, default: True
        Include the full gain matrix.
    **integrate_kwargs
        Passed to :func:`integrate` when ``initial`` is None (dt, T,
        initial_rates, n_draws, seed, rate_max, first_step).

    Returns
    -------
    xr.Dataset
        ``rate``, ``residual`` (spikes/s), ``mu``, ``sigma`` (mV) on (area,
        pop[, draw]); ``gain`` (area, pop, source_area, source_pop[, draw]),
        G_ij = ∂Φ_i/∂ν_j; ``eigenvalue_max_real``, ``eigenvalue_max_imag``
        (the eigenvalue of G with the largest real part), ``lambda_max``
        (upstream's √max Re λ), ``stable`` (max Re λ < 1), ``converged``,
        ``n_evaluations``.

    Raises
    ------
    ParameterError
        Invalid tol or initial rates, or integration options together with
        ``initial``.

    Warns
    -----
    ConvergenceWarning
        If no start led to max |Φ(ν) − ν| <= tol (also flagged in ``converged``).

    Notes
    -----
    G_ij = τ_m (S_i K_ij J_ij + T_i K_ij J_ij²) with S = ∂Φ/∂μ and
    T = ∂Φ/∂σ², computed analytically (upstream: forward differences with
    ε = 0.01 mV).  The Jacobian of the pseudo-dynamics is (G − I)/τ, so the
    fixed point is stable iff every eigenvalue of G has real part < 1.
    """
    if not tol > 0:
        raise ParameterError(invalid("tol", tol, "a tolerance > 0 spikes/s"))
    for name, flag in (("cutoff", cutoff), ("held_shift", held_shift), ("with_gain", with_gain),
                       ("warn", warn)):
        check_flag(name, flag)
    p, areas, replace, repl = settings(params, areas_simulated, replace, replacement_rates, structure)
    nrn = _replace_neuron(neuron_of(p), cutoff=cutoff)
    rate_ext = p.network.input.rate_ext if rate_ext is None else check_rate_ext(rate_ext)
    system = system_of(structure, p, neuron=nrn, rate_ext=rate_ext, areas_simulated=areas,
                     replace=replace, replacement=repl)
    how = "given rates"
    candidates = None
    if initial is None:
        initial = integrate(structure, p, rate_ext=rate_ext, areas_simulated=areas, replace=replace,
                            replacement_rates=repl, cutoff=cutoff, warn=False, **integrate_kwargs)
    elif integrate_kwargs:
        raise ParameterError(invalid("integrate_kwargs", sorted(integrate_kwargs),
                                     "no integration options when initial rates are given"))
    if isinstance(initial, xr.Dataset) and {"trajectory", "converged"} <= set(initial.variables):
        run = initial
        how = (f"integrate (T={run.attrs.get('T_ms')} ms, initial rates {run.attrs.get('initial_rates')}); "
               "if not converged: continuation in the CC coupling from isolated areas, "
               "else the mean rates over the trajectory's second half, else its end")
        ends, _ = initial_state(system, p, _with_draw(run["rate"]), None, None, None)
        t_end = float(run["time"][-1])
        late = run["trajectory"].sel(time=slice(0.5 * t_end, None)).mean("time")
        means, _ = initial_state(system, p, _with_draw(late), None, None, None)
        ok = np.atleast_1d(run["converged"].values)
        # A trajectory that has not settled (oscillating or chaotic) is a poor start, and
        # which fixed point Newton reaches from it is a matter of chance: such draws use
        # the fixed point continued from isolated areas (_homotopy), then the trajectory.
        candidates = [[e] if good else ["homotopy", m, e] for e, m, good in zip(ends, means, ok)]
    else:
        if isinstance(initial, xr.Dataset):
            initial = initial["rate"]
        nu0, _ = initial_state(system, p, initial, None, None, None)
        candidates = [[x0] for x0 in nu0]
    results = []
    homotopy = None
    for starts in candidates:
        nfev, best = 0, None
        for x0 in starts:
            if isinstance(x0, str):
                if homotopy is None:
                    homotopy = _homotopy(system, tol, p.theory.dt, int(round(p.theory.T / p.theory.dt)))
                if homotopy is None:
                    continue
                r = (*homotopy, "continuation in the CC coupling")
            else:
                r = solve(system, x0, tol, held_shift)
            nfev += r[2]
            if best is None or r[1] < best[1]:
                best = r
            if r[1] <= tol:
                break
        results.append((best[0], best[1], nfev, best[3]))
    nu = np.array([r[0] for r in results])
    res = np.array([r[1] for r in results])
    if warn and not (res <= tol).all():
        warnings.warn(f"fixed-point search did not converge: max |Φ(ν)−ν| = {res.max():.3g} spikes/s "
                      f"> tol={tol} ({results[int(np.argmax(res))][3]})", ConvergenceWarning,
                      stacklevel=2)
    ds = fixed_point_dataset(system, nu, res, [r[2] for r in results], how, tol, with_gain, held_shift)
    ds.attrs = jsonable({
        **common_attrs(p, nrn, system, rate_ext, replace),
        "solver": "damped Newton, then scipy.optimize.root (hybr, then lm), on Phi(nu) - nu with the exact Jacobian",
        "started_from": how, "tol": tol, "held_shift": held_shift,
        "converged": bool((res <= tol).all()),
        "history": history("fixed_point", p),
    })
    return ds


@single_threaded
def gain_matrix(structure: xr.Dataset, rates, params=None, *, held_shift: bool = False,
                rate_ext: float | None = None, areas_simulated: Sequence[str] | None = None,
                replace: str | None = None, replacement_rates=None) -> xr.DataArray:
    """Gain matrix G_ij = ∂Φ_i/∂ν_j at given rates (docs/theory.md, "Maths").

    Returns
    -------
    xr.DataArray
        (area, pop, source_area, source_pop), dimensionless; NaN outside the
        simulated populations.
    """
    p, areas, replace, repl = settings(params, areas_simulated, replace, replacement_rates, structure)
    system = system_of(structure, p, rate_ext=rate_ext, areas_simulated=areas, replace=replace,
                     replacement=repl)
    nu = rates_vector(rates, "rates")[system.dyn]
    _, G = system.gain(nu, held_shift=held_shift)
    full = np.full((N_POPULATIONS, N_POPULATIONS), np.nan)
    full[np.ix_(system.dyn, system.dyn)] = G
    return from_flat_matrix(full, name="gain").assign_attrs(
        long_name="gain matrix dPhi_i/dnu_j", units="1")
