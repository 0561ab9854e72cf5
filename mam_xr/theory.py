"""Mean-field theory: Siegert rates, fixed points, stability and parameter sweeps.

Every population is a rate unit whose stationary rate is the LIF transfer
function with exponentially filtered synaptic input (Siegert formula with the
colored-noise shift of Fourcaud & Brunel 2002), spec/dynamics.md §B.3.  The
input mean μ and standard deviation σ of each population follow from the
indegrees K, couplings J, the rates of all populations, the external Poisson
drive and the DC drive (§B.2).  Public functions:

* :func:`transfer`, :func:`transfer_derivatives` -- Φ(μ, σ) and its partial
  derivatives, vectorised, numerically stable for any argument;
* :func:`input_statistics` -- μ and σ of every population for given rates;
* :func:`integrate` -- the pseudo-dynamics τ dν/dt = −ν + Φ(ν) with
  upstream's settings (§B.4), with a convergence diagnostic;
* :func:`fixed_point` -- SciPy root finding started from an integration,
  with the residual, the gain matrix and its leading eigenvalue (§B.6);
* :func:`sweep` -- fixed points along a parameter (χ first) by continuation;
* :func:`rescale_cc` -- the fast path of a χ / χ_I sweep: rescales the
  cortico-cortical couplings of a built structure without rebuilding it.

Every result is an :class:`xarray.Dataset` on the dims ``area``, ``pop``
(plus ``time``, ``draw``, ``source_area``, ``source_pop`` or the sweep dim)
whose attrs are JSON-able, so ``ds.to_zarr(store, group="theory")`` works.
Internally the theory works on the flat 254-population view
(:mod:`mam_xr.flat`); the populations of non-simulated areas are removed from
the dynamic system and enter as fixed sources (see :func:`integrate`).

Units: rates in spikes/s, μ, σ, J, θ in mV, times in ms, currents in pA.
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import json
import math
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Literal, Sequence

import numpy as np
import xarray as xr
from scipy import optimize
from scipy.special import dawsn, erfcx

try:  # optional: keeps BLAS single-threaded inside the theory (see _single_threaded)
    from threadpoolctl import ThreadpoolController as _ThreadpoolController
except ImportError:  # pragma: no cover
    _ThreadpoolController = None

from . import __version__
from .errors import ParameterError, invalid
from .flat import (AREAS, N_POPULATIONS, POPS, exists, from_flat_matrix, from_flat_vector,
                   is_excitatory, population_labels, to_flat_matrix, to_flat_vector)

__all__ = [
    "ConvergenceWarning", "transfer", "transfer_derivatives", "input_statistics", "integrate",
    "fixed_point", "gain_matrix", "sweep", "rescale_cc", "replacement_rates",
]

#: α = √2 |ζ(1/2)|, the colored-noise constant of Fourcaud & Brunel (2002),
#: spec/dynamics.md §B.3.
ALPHA = math.sqrt(2.0) * 1.4603545088095868

#: NEST 3's siegert_neuron returns 0 when θ − μ > 6 σ (unshifted θ), §B.3 step 1.
CUTOFF_SIGMAS = 6.0

#: Time constant of the rate pseudo-dynamics (ms), upstream's siegert_neuron ``tau``.
TAU_RATE_MS = 1.0

#: Replacement modes the theory handles (stationary Poisson sources).
_STATIONARY_MODES = ("hom_poisson_stat", "het_poisson_stat")


_CONTROLLER = []     # one ThreadpoolController, made at the first call (inspecting the
                     # loaded libraries takes ~2 ms, too much to repeat on every call)


def _single_threaded(function):
    """Run ``function`` with BLAS/LAPACK limited to one thread (if threadpoolctl is there).

    The theory's linear algebra is on 254 x 254 matrices, too small to gain from
    threads; on a busy machine threaded OpenBLAS spin-waits and made a χ sweep
    5-15x slower (measured: 3.7-10.9 s instead of 0.7 s at load average 10).
    """
    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        if _ThreadpoolController is None:
            limit = contextlib.nullcontext()
        else:
            if not _CONTROLLER:
                _CONTROLLER.append(_ThreadpoolController())
            limit = _CONTROLLER[0].limit(limits=1, user_api="blas")
        with limit:
            return function(*args, **kwargs)
    return wrapper


class ConvergenceWarning(UserWarning):
    """The mean-field integration or root finding did not reach a fixed point."""


# --- the transfer function ----------------------------------------------------

# ∫_a^b erfcx(s) ds for a, b >= 0 as F(b) − F(a) with the antiderivative
# F(x) = ∫_0^x erfcx(s) ds.  Below _TAB_MAX, F is a table on the grid x_k = k/128:
# F(x_k) are cumulated 10-node Gauss-Legendre integrals over the grid cells (exact
# to rounding), and inside a cell F is the quintic Hermite interpolant of F, F' =
# erfcx and F'' = 2x erfcx(x) − 2/√π (error < 1e-16 here).  F is returned as the
# table value F(x_k) plus the (small) rest, so that F(b) − F(a) loses nothing on
# short intervals: the absolute error of the integral is <= ~5e-16 for short
# intervals and ~4e-15 for long ones.  Above _TAB_MAX the integrated asymptotic
# series erfcx(s) ~ 1/(s√π) Σ (-1)^n (2n-1)!!/(2s²)^n is added (terms < 1e-30).
# This replaces adaptive quadrature and costs ~25 array operations per call.
_TAB_SCALE = 128.0
_TAB_MAX = 64.0
_TAB_N = int(_TAB_MAX * _TAB_SCALE)


def _asymptotic_coefficients(n_terms: int = 25) -> np.ndarray:
    coeffs, double_factorial = [], 1.0
    for n in range(1, n_terms + 1):
        double_factorial *= 2 * n - 1
        # ∫ s^(-2n-1) ds = -s^(-2n) / (2n)
        coeffs.append((-1) ** n * double_factorial / 2.0 ** n / (-2.0 * n))
    return np.array(coeffs)


_ASYMPTOTIC = _asymptotic_coefficients()


def _asymptotic_tail(x: np.ndarray) -> np.ndarray:
    """Σ_n c_n x^(-2n) of the integrated asymptotic series (without the log term)."""
    z = 1.0 / (x * x)
    acc = np.zeros_like(x)
    for c in _ASYMPTOTIC[::-1]:
        acc = (acc + c) * z
    return acc


def _antiderivative_table():
    """F(x_k) (k = 0.._TAB_N - 1) and the coefficients of t, ..., t⁵ (x = x_k + t/128)."""
    h = 1.0 / _TAB_SCALE
    x = np.arange(_TAB_N + 1) * h
    nodes, weights = np.polynomial.legendre.leggauss(10)
    cells = 0.5 * h * (erfcx((x[:-1] + 0.5 * h)[:, None] + 0.5 * h * nodes) @ weights)
    F = np.concatenate([[0.0], np.cumsum(cells.astype(np.longdouble))]).astype(float)
    d1 = erfcx(x)
    d2 = 2.0 * x * d1 - 2.0 / math.sqrt(math.pi)
    # quintic Hermite: p(t) = F_k + h F'_k t + h² F''_k t²/2 + a3 t³ + a4 t⁴ + a5 t⁵
    r0 = cells - h * d1[:-1] - 0.5 * h * h * d2[:-1]
    r1 = h * (d1[1:] - d1[:-1]) - h * h * d2[:-1]
    r2 = h * h * (d2[1:] - d2[:-1])
    coeffs = np.stack([h * d1[:-1], 0.5 * h * h * d2[:-1], 10 * r0 - 4 * r1 + 0.5 * r2,
                       -15 * r0 + 7 * r1 - r2, 6 * r0 - 3 * r1 + 0.5 * r2], axis=1)
    return F[:-1].copy(), tuple(np.ascontiguousarray(coeffs[:, j]) for j in range(5))


_TAB_F, _TAB_COEF = _antiderivative_table()     # F(x_k); coefficients of t, t², ..., t⁵
_TAIL_AT_MAX = float(_asymptotic_tail(np.array([_TAB_MAX]))[0])


def _antiderivative(x: np.ndarray):
    """F(x) = ∫_0^x erfcx(s) ds for x >= 0 as (table value, rest); NaN -> NaN rest."""
    s = np.fmin(x, _TAB_MAX)
    s *= _TAB_SCALE
    k = s.astype(np.intp)
    np.minimum(k, _TAB_N - 1, out=k)
    t = s - k
    c1, c2, c3, c4, c5 = _TAB_COEF
    rest = c5.take(k)       # 1-D takes of contiguous columns: ~4x faster than a 2-D gather
    rest *= t
    rest += c4.take(k)
    rest *= t
    rest += c3.take(k)
    rest *= t
    rest += c2.take(k)
    rest *= t
    rest += c1.take(k)
    rest *= t
    far = x > _TAB_MAX          # (a mask, not x.max(): NaN entries must not hide others)
    if far.any():
        h = x[far]
        rest[far] += (np.log(h / _TAB_MAX) + _asymptotic_tail(h) - _TAIL_AT_MAX) / math.sqrt(math.pi)
    return _TAB_F.take(k), rest


def _integral_erfcx(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """∫_a^b erfcx(s) ds for arrays with a, b >= 0 (signed if b < a)."""
    a, b = np.broadcast_arrays(np.asarray(a, float), np.asarray(b, float))
    n = a.size
    F, rest = _antiderivative(np.concatenate([a.ravel(), b.ravel()]))
    return ((F[n:] - F[:n]) + (rest[n:] - rest[:n])).reshape(a.shape)


@dataclass(frozen=True)
class _Neuron:
    """Neuron constants of the theory, relative to rest (spec/dynamics.md §B.1)."""

    tau_m: float = 10.0    # ms
    tau_s: float = 0.5     # ms
    t_ref: float = 2.0     # ms
    theta: float = 15.0    # mV, V_th - E_L
    V_r: float = 0.0       # mV, V_reset - E_L
    C_m: float = 250.0     # pF (DC drive only)
    cutoff: bool = True    # NEST 3's θ - μ > 6σ -> 0

    @property
    def shift(self) -> float:
        """Colored-noise shift of both boundaries in units of σ: (α/2)√(τ_s/τ_m)."""
        return 0.5 * ALPHA * math.sqrt(self.tau_s / self.tau_m)


def _siegert(mu, sigma, nrn: _Neuron, derivatives: bool = False,
             held_shift: bool = False):
    """Φ (spikes/s) and optionally ∂Φ/∂μ (1/(s mV)) and ∂Φ/∂σ (1/(s mV)).

    Works on broadcastable float arrays.  The integral of e^{u²}(1 + erf u)
    over [y_r, y_θ] is evaluated in one of three forms chosen by the signs of
    the boundaries (§B.3 steps 2-4) with erfcx and Dawson's function, scaled
    by E = exp(-y_θ²) when y_θ > 0 so that nothing overflows.
    """
    if not (type(mu) is np.ndarray and type(sigma) is np.ndarray and mu.ndim == 1
            and mu.shape == sigma.shape and mu.dtype == sigma.dtype == np.float64):
        mu, sigma = np.broadcast_arrays(np.asarray(mu, float), np.asarray(sigma, float))
    shape = mu.shape
    mu, sigma = mu.ravel(), sigma.ravel()
    sqrt_pi = math.sqrt(math.pi)

    # The common case, σ > 0 and above the cutoff everywhere (no NaN), takes 5 operations
    # to establish and needs no masking or scattering.
    if nrn.cutoff:
        everywhere = bool(sigma.size and sigma.min() > 0.0
                          and (CUTOFF_SIGMAS * sigma - (nrn.theta - mu)).min() >= 0.0)
    else:
        everywhere = bool(sigma.size and sigma.min() > 0.0 and np.isfinite(mu.sum()))
    zero = active = None
    if not everywhere:
        zero = sigma <= 0.0
        active = ~zero
        if nrn.cutoff:
            active &= ~(nrn.theta - mu > CUTOFF_SIGMAS * sigma)
        else:
            active &= np.isfinite(mu)
    phi = None if everywhere else np.zeros(mu.shape)
    dmu = dsig = None
    if derivatives:
        dmu, dsig = np.zeros(mu.shape), np.zeros(mu.shape)
    # σ = 0: deterministic LIF (the σ -> 0 limit of the Siegert formula).
    det = None if everywhere else zero & (mu > nrn.theta)
    if det is not None and det.any():
        m = mu[det]
        period = nrn.t_ref + nrn.tau_m * np.log((m - nrn.V_r) / (m - nrn.theta))
        phi[det] = 1e3 / period
        if derivatives:
            dperiod = nrn.tau_m * (1.0 / (m - nrn.V_r) - 1.0 / (m - nrn.theta))
            dmu[det] = -1e3 * dperiod / period ** 2

    idx = None if everywhere else np.flatnonzero(active)
    if everywhere or idx.size:
        m, s = (mu, sigma) if everywhere else (mu[idx], sigma[idx])
        n = m.size
        c = nrn.shift
        y = np.empty(2 * n)                 # [y_θ, y_r]
        y_th, y_r = y[:n], y[n:]
        np.divide(nrn.theta - m, s, out=y_th)
        y_th += c
        np.divide(nrn.V_r - m, s, out=y_r)
        y_r += c
        # The integral of e^{u²}(1 + erf u) over [y_r, y_θ] in the three forms of §B.3
        # (steps 2-4), scaled by E = exp(-y_θ²) where y_θ > 0, written with
        # D = ∫_{|y_θ|}^{|y_r|} erfcx(s) ds:
        #   y_θ < 0 (both boundaries negative):   D
        #   y_r <= 0 <= y_θ:                      2 dawsn(y_θ) + E D
        #   y_r > 0 (both positive):              2 dawsn(y_θ) − 2 e^{y_r²−y_θ²} dawsn(y_r) + E D
        F, rest = _antiderivative(np.abs(y))
        D = F[n:] - F[:n]
        D += rest[n:] - rest[:n]
        yp = np.maximum(y_th, 0.0)
        E = np.exp(-yp * yp)                # 1 where y_θ < 0
        integral = E * D
        integral += 2.0 * dawsn(yp)         # dawsn(0) = 0
        b = y_r > 0
        if b.any():
            integral[b] -= 2.0 * np.exp(np.minimum(y_r[b] ** 2 - y_th[b] ** 2, 0.0)) * dawsn(y_r[b])
        psi = E * nrn.t_ref
        psi += nrn.tau_m * sqrt_pi * integral
        np.divide(1e3, psi, out=psi)        # Φ/E in spikes/s
        if everywhere:
            phi = E * psi
        else:
            phi[idx] = E * psi

        if derivatives:
            neg = y_th < 0
            # E·f(y) with f(y) = e^{y²}(1 + erf y) = erfcx(-y), without overflow.
            Ef_th = np.where(neg, erfcx(np.abs(y_th)), 2.0 - E * erfcx(np.abs(y_th)))
            Ef_r = np.where(
                y_r <= 0, E * erfcx(np.abs(y_r)),
                2.0 * np.exp(np.minimum(y_r ** 2 - y_th ** 2, 0.0)) - E * erfcx(np.abs(y_r)))
            pref = 1e-3 * (E * psi) * psi * nrn.tau_m * sqrt_pi
            sel = slice(None) if everywhere else idx
            dmu[sel] = pref * (Ef_th - Ef_r) / s
            # dy/dσ = -(boundary - μ)/σ²; upstream's finite difference keeps the
            # shift σ·c fixed in mV, i.e. dy/dσ = -(boundary - μ + σc)/σ² (§B.6, G.16).
            extra = c * s if held_shift else 0.0
            dsig[sel] = pref * (Ef_th * (nrn.theta - m + extra)
                                - Ef_r * (nrn.V_r - m + extra)) / s ** 2
    if derivatives:
        return phi.reshape(shape), dmu.reshape(shape), dsig.reshape(shape)
    return phi.reshape(shape)


def _neuron(params=None, **overrides) -> _Neuron:
    """Neuron constants from ``params.network.neuron`` (or upstream defaults)."""
    n = _params(params).network.neuron
    values = dict(tau_m=n.tau_m, tau_s=n.tau_syn_ex, t_ref=n.t_ref, theta=n.V_th - n.E_L,
                  V_r=n.V_reset - n.E_L, C_m=n.C_m)
    for key, value in overrides.items():
        if value is not None:
            values[key] = float(value)
    return _Neuron(**values)


def transfer(mu, sigma, *, tau_m: float = 10.0, tau_s: float = 0.5, t_ref: float = 2.0,
             theta: float = 15.0, V_r: float = 0.0, cutoff: bool = True):
    """Stationary firing rate Φ(μ, σ) of a LIF neuron with exponential synapses.

    Siegert formula with the colored-noise shift (spec/dynamics.md §B.3),
    evaluated as NEST 3's ``siegert_neuron`` does (erfcx/Dawson forms), but
    with a fixed-order quadrature plus an asymptotic series instead of
    adaptive quadrature; stable for large |μ|, large or tiny σ (σ = 0 gives
    the deterministic LIF rate).

    Parameters
    ----------
    mu, sigma : array_like
        Mean and standard deviation of the input (mV, relative to rest);
        broadcast against each other.  A DataArray keeps its dims.
    tau_m, tau_s, t_ref : float
        Membrane and synaptic time constants and refractory period (ms).
    theta, V_r : float
        Threshold and reset relative to rest (mV).
    cutoff : bool, default: True
        Return 0 where θ − μ > 6σ, as NEST 3 does.

    Returns
    -------
    ndarray or DataArray
        Φ in spikes/s, the broadcast shape of ``mu`` and ``sigma``.

    Examples
    --------
    >>> float(transfer(10.0, 5.0))  # doctest: +ELLIPSIS
    11.657...
    """
    _check_flag("cutoff", cutoff)
    nrn = _Neuron(tau_m=tau_m, tau_s=tau_s, t_ref=t_ref, theta=theta, V_r=V_r, cutoff=cutoff)
    _check_neuron(nrn)
    if isinstance(mu, xr.DataArray) or isinstance(sigma, xr.DataArray):
        out = xr.apply_ufunc(lambda m, s: _siegert(m, s, nrn), mu, sigma)
        out.attrs = {"units": "spikes/s", "long_name": "stationary rate Φ(μ, σ)"}
        return out
    return _siegert(mu, sigma, nrn)


def transfer_derivatives(mu, sigma, *, tau_m: float = 10.0, tau_s: float = 0.5,
                         t_ref: float = 2.0, theta: float = 15.0, V_r: float = 0.0,
                         cutoff: bool = True, held_shift: bool = False):
    """Φ and its exact partial derivatives ∂Φ/∂μ and ∂Φ/∂(σ²).

    Parameters are those of :func:`transfer`.  ``held_shift=True`` keeps
    the colored-noise shift σ·(α/2)√(τ_s/τ_m) fixed in mV when σ varies,
    which is what upstream's finite difference computes (spec §B.6, G.16).

    Returns
    -------
    tuple of ndarray
        Φ (spikes/s), ∂Φ/∂μ (spikes/s per mV), ∂Φ/∂σ² (spikes/s per mV²).
    """
    _check_flag("cutoff", cutoff)
    nrn = _Neuron(tau_m=tau_m, tau_s=tau_s, t_ref=t_ref, theta=theta, V_r=V_r, cutoff=cutoff)
    _check_neuron(nrn)
    _check_flag("held_shift", held_shift)
    phi, dmu, dsig = _siegert(mu, sigma, nrn, derivatives=True, held_shift=held_shift)
    sigma = np.asarray(sigma, float)
    with np.errstate(divide="ignore", invalid="ignore"):
        dvar = np.where(sigma > 0, dsig / (2.0 * sigma), 0.0)
    return phi, dmu, dvar


def _check_neuron(nrn: _Neuron) -> None:
    for name in ("tau_m", "tau_s"):
        value = getattr(nrn, name)
        if not value > 0:
            raise ParameterError(invalid(name, value, "a time constant > 0 ms"))
    if not nrn.t_ref >= 0:
        raise ParameterError(invalid("t_ref", nrn.t_ref, "a refractory period >= 0 ms"))
    if not nrn.theta > nrn.V_r:
        raise ParameterError(invalid("theta", nrn.theta, f"a threshold above V_r={nrn.V_r} mV"))


# --- the model as flat arrays ---------------------------------------------------

@dataclass(frozen=True)
class _System:
    """The dynamic mean-field system on the flat population view.

    ``dyn`` indexes the populations (of the 254) whose rates are computed;
    ``A = 1e-3 τ_m K J`` and ``B = 1e-3 τ_m K J²`` (dyn x dyn) give μ and σ²
    from their rates; ``mu0`` and ``var0`` hold the external drive, the DC
    drive and the fixed sources (replaced areas).  ``fixed_rates`` (254) are
    the rates of the replaced populations (NaN where dynamic).
    """

    A: np.ndarray
    B: np.ndarray
    mu0: np.ndarray
    var0: np.ndarray
    dyn: np.ndarray
    fixed_rates: np.ndarray
    nrn: _Neuron

    def mu_sigma(self, rates: np.ndarray):
        # Two products with A.T and B.T (row dot products), not one with [A; B]: the
        # latter's BLAS kernel sums in an order that differed between processes, and
        # sweeps compare points run in workers with points run alone, bit for bit.
        mu = rates @ self.A.T
        mu += self.mu0
        var = rates @ self.B.T
        var += self.var0
        np.maximum(var, 0.0, out=var)
        return mu, np.sqrt(var)

    def phi(self, rates: np.ndarray) -> np.ndarray:
        mu, sigma = self.mu_sigma(rates)
        return _siegert(mu, sigma, self.nrn)

    def gain(self, rates: np.ndarray, held_shift: bool = False):
        """Φ(ν) and G_ij = ∂Φ_i/∂ν_j = S_i A_ij + T_i B_ij (§B.6)."""
        mu, sigma = self.mu_sigma(rates)
        phi, dmu, dsig = _siegert(mu, sigma, self.nrn, derivatives=True, held_shift=held_shift)
        with np.errstate(divide="ignore", invalid="ignore"):
            dvar = np.where(sigma > 0, dsig / (2.0 * sigma), 0.0)
        return phi, dmu[:, None] * self.A + dvar[:, None] * self.B


def _params(params, structure: xr.Dataset | None = None):
    """The Params to use: given, else those stored with the structure (attrs["params"],
    written by mam_xr.structure.build), else ``Params()`` (upstream's defaults)."""
    from .params import Params

    if params is None:
        text = structure.attrs.get("params") if isinstance(structure, xr.Dataset) else None
        if isinstance(text, str):
            try:
                return Params.from_json(text)
            except (ParameterError, ValueError):
                pass
        return Params()
    if not isinstance(params, Params):
        raise ParameterError(invalid("params", type(params).__name__, "a mam_xr.params.Params or None"))
    return params


def _rates_vector(rates, name: str) -> np.ndarray:
    """254-vector of rates from a DataArray (area, pop), a 254 array, a rates-JSON
    mapping {area: {pop: rate}} (list values: first element) or a JSON path."""
    if isinstance(rates, (str, Path)):
        path = Path(rates).expanduser()
        if path.suffix == ".zarr" or path.is_dir():
            raise ParameterError(invalid(
                name, str(rates), "a rates JSON file {area: {pop: rate}}, a (area, pop) DataArray "
                "or a 254-vector; read the rates of a run store with mam_xr.store and pass them"))
        try:
            rates = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise ParameterError(invalid(name, str(rates), f"a readable rates JSON file ({exc})")) from None
    if isinstance(rates, dict):
        out = []
        for label in population_labels():
            area, pop = label.split("-")
            try:
                value = rates[area][pop]
            except (KeyError, TypeError):
                raise ParameterError(invalid(name, f"<mapping without {area}/{pop}>",
                                             "a rate for every population {area: {pop: rate}}")) from None
            out.append(float(value[0] if isinstance(value, (list, tuple)) else value))
        return np.array(out)
    if isinstance(rates, xr.DataArray):
        from .flat import to_flat_vector

        if set(("area", "pop")) - set(rates.dims) or rates.ndim != 2:
            raise ParameterError(invalid(name, f"DataArray with dims {rates.dims}",
                                         "dims ('area', 'pop')"))
        rates = to_flat_vector(rates.reindex(area=list(AREAS), pop=list(POPS)))
    arr = np.asarray(rates, dtype=float)
    if arr.shape != (N_POPULATIONS,):
        raise ParameterError(invalid(name, f"<array of shape {arr.shape}>",
                                     f"{N_POPULATIONS} rates in spikes/s in mam_xr.flat order"))
    bad = ~(arr >= 0) | ~np.isfinite(arr)
    if bad.any():
        k = int(np.flatnonzero(bad)[0])
        more = f" ({int(bad.sum())} of {N_POPULATIONS} rates are not)" if bad.sum() > 1 else ""
        raise ParameterError(invalid(f"{name}[{population_labels()[k]}]", float(arr[k]),
                                     f"a finite rate >= 0 spikes/s{more}"))
    return arr


def replacement_rates(params=None, source=None) -> np.ndarray:
    """Rates (254, spikes/s) that replace non-simulated areas (spec §A.11, §B.5).

    ``hom_poisson_stat``: every source fires at ``rate_ext``;
    ``het_poisson_stat``: ``source`` (a rates JSON path, mapping, DataArray
    or 254-vector), default ``params.simulation.replace_cc_input_source``,
    and if that is None the pinned upstream ``fullscale_rates.json``.
    """
    p = _params(params)
    mode = p.simulation.replace_non_simulated_areas
    if mode == "hom_poisson_stat":
        return np.full(N_POPULATIONS, p.network.input.rate_ext)
    if source is None:
        source = p.simulation.replace_cc_input_source
    if source is None:
        from .data import fetch

        source = fetch("fullscale_rates.json")
    return _rates_vector(source, "replace_cc_input_source")


def _flat_model(structure: xr.Dataset) -> dict:
    """K, J (254 x 255, external last) and the DC drive (254, pA) of the existing
    populations; a NaN or infinite entry (or a negative indegree) is an error."""
    _check_structure(structure)
    K = to_flat_matrix(structure["indegree"], structure["external_indegree"])
    J = to_flat_matrix(structure["J"], structure["external_J"])
    dc = to_flat_vector(structure["dc_drive"])
    labels = population_labels()
    for name, external, arr, low in (("indegree", "external_indegree", K, 0.0),
                                     ("J", "external_J", J, -np.inf)):
        bad = ~np.isfinite(arr) | (arr < low)
        if bad.any():
            i, j = (int(v) for v in np.argwhere(bad)[0])
            where = (f"structure.{external}[{labels[i]}]" if j == N_POPULATIONS
                     else f"structure.{name}[{labels[i]} <- {labels[j]}]")
            more = f" ({int(bad.sum())} entries are not)" if bad.sum() > 1 else ""
            raise ParameterError(invalid(where, float(arr[i, j]), (
                "a finite indegree >= 0" if name == "indegree" else "a finite coupling in mV")
                + f" for every existing population pair{more}"))
    bad = ~np.isfinite(dc)
    if bad.any():
        k = int(np.flatnonzero(bad)[0])
        raise ParameterError(invalid(f"structure.dc_drive[{labels[k]}]", float(dc[k]),
                                     "a finite DC drive in pA for every existing population"))
    return {"K": K, "J": J, "dc": dc}


def _system(structure: xr.Dataset, params=None, *, neuron: _Neuron | None = None,
            rate_ext: float | None = None, areas_simulated: Sequence[str] | None = None,
            replace: str | None = None, replacement=None) -> _System:
    """Flat mean-field system of a structure Dataset (spec/dynamics.md §B.2)."""
    return _assemble(_flat_model(structure), params, neuron=neuron, rate_ext=rate_ext,
                     areas_simulated=areas_simulated, replace=replace, replacement=replacement)


def _assemble(model: dict, params=None, *, neuron: _Neuron | None = None,
              rate_ext: float | None = None, areas_simulated: Sequence[str] | None = None,
              replace: str | None = None, replacement=None) -> _System:
    p = _params(params)
    nrn = neuron if neuron is not None else _neuron(p)
    rate_ext = p.network.input.rate_ext if rate_ext is None else _check_rate_ext(rate_ext)
    K, J, dc = model["K"], model["J"], model["dc"]
    tau_m_s = 1e-3 * nrn.tau_m            # τ_m in s multiplies rates in spikes/s
    KJ = K[:, :-1] * J[:, :-1]
    KJ2 = KJ * J[:, :-1]
    mu0 = tau_m_s * K[:, -1] * J[:, -1] * rate_ext + nrn.tau_m / nrn.C_m * dc
    var0 = tau_m_s * K[:, -1] * J[:, -1] ** 2 * rate_ext

    areas = AREAS if areas_simulated is None else tuple(areas_simulated)
    unknown = [a for a in areas if a not in AREAS]
    if unknown:
        raise ParameterError(invalid("areas_simulated", unknown, "names among mam_xr.flat.AREAS"))
    sim = np.isin(_POP_AREA, areas)
    fixed = np.full(N_POPULATIONS, np.nan)
    if sim.all():
        return _System(A=tau_m_s * KJ, B=tau_m_s * KJ2, mu0=mu0, var0=var0,
                       dyn=np.arange(N_POPULATIONS), fixed_rates=fixed, nrn=nrn)
    if replace not in _STATIONARY_MODES:
        raise ParameterError(invalid(
            "replace_non_simulated_areas", replace,
            f"one of {', '.join(_STATIONARY_MODES)} for the theory of a subset of areas "
            "(het_current_nonstat has no stationary mean-field counterpart)"))
    nu = replacement
    if nu is None:
        nu = np.full(N_POPULATIONS, rate_ext) if replace == "hom_poisson_stat" \
            else replacement_rates(p.update({"simulation": {"replace_non_simulated_areas": replace}}))
    nu = np.asarray(nu, float)
    # Replaced sources: Poisson input of fixed rate, same K and mean J (§A.11, §B.5).
    mu0 = mu0 + tau_m_s * KJ[:, ~sim] @ nu[~sim]
    var0 = var0 + tau_m_s * KJ2[:, ~sim] @ nu[~sim]
    fixed[~sim] = nu[~sim]
    dyn = np.flatnonzero(sim)
    return _System(A=tau_m_s * KJ[np.ix_(dyn, dyn)], B=tau_m_s * KJ2[np.ix_(dyn, dyn)],
                   mu0=mu0[dyn], var0=var0[dyn], dyn=dyn, fixed_rates=fixed, nrn=nrn)


_POP_AREA = np.array([label.split("-")[0] for label in population_labels()])
_EXISTS_FLAT = exists().values.ravel()
_EXISTS_ATTRS = dict(exists().attrs)
_SIMULATED_ATTRS = {"long_name": "population belongs to a simulated area "
                                 "(else its rate is the fixed replacement rate)", "units": "1"}


def _check_structure(structure) -> None:
    if not isinstance(structure, xr.Dataset):
        raise ParameterError(invalid("structure", type(structure).__name__,
                                     "a structure xarray.Dataset (mam_xr.flat layout)"))
    missing = [v for v in ("indegree", "J", "external_indegree", "external_J", "dc_drive")
               if v not in structure]
    if missing:
        raise ParameterError(invalid("structure", f"<Dataset without {', '.join(missing)}>",
                                     "a structure Dataset with indegree, J, external_indegree, "
                                     "external_J and dc_drive"))


#: Values of simulation.replace_non_simulated_areas (params.REPLACEMENT_MODES).
_REPLACE_MODES = ("hom_poisson_stat", "het_poisson_stat", "het_current_nonstat")


def _check_flag(name: str, value) -> None:
    if not isinstance(value, (bool, np.bool_)):
        raise ParameterError(invalid(name, value, "True or False"))


def _check_rate_ext(rate_ext) -> float:
    try:
        value = float(rate_ext)
    except (TypeError, ValueError):
        raise ParameterError(invalid("rate_ext", rate_ext, "a rate >= 0 spikes/s")) from None
    if not (math.isfinite(value) and value >= 0):
        raise ParameterError(invalid("rate_ext", rate_ext, "a finite rate >= 0 spikes/s"))
    return value


def _settings(params, areas_simulated, replace, replacement, structure=None):
    p = _params(params, structure)
    if areas_simulated is None:
        areas_simulated = p.simulation.areas_simulated
    if isinstance(areas_simulated, str):
        areas_simulated = (areas_simulated,)
    if replace is not None and replace not in _REPLACE_MODES:
        raise ParameterError(invalid("replace", replace, f"one of {', '.join(_REPLACE_MODES)}"))
    if replace is None:
        replace = p.simulation.replace_non_simulated_areas
    if replacement is not None:
        replacement = _rates_vector(replacement, "replacement_rates")
    elif len(tuple(areas_simulated)) < len(AREAS) and replace == "het_poisson_stat":
        replacement = replacement_rates(p.update(
            {"simulation": {"replace_non_simulated_areas": replace}}))
    return p, tuple(areas_simulated), replace, replacement


def input_statistics(structure: xr.Dataset, rates, params=None, *, rate_ext: float | None = None,
                     areas_simulated: Sequence[str] | None = None, replace: str | None = None,
                     replacement_rates=None) -> xr.Dataset:
    """Mean μ and SD σ of the input of every population (spec/dynamics.md §B.2).

    μ_i = τ_m [Σ_j K_ij J_ij ν_j + K_i,ext J_i,ext ν_ext] + (τ_m/C_m) I_DC,i,
    σ_i² = τ_m [Σ_j K_ij J_ij² ν_j + K_i,ext J_i,ext² ν_ext], with τ_m in s
    inside the brackets.  Sources in non-simulated areas fire at the
    replacement rates.

    Parameters
    ----------
    structure : xr.Dataset
        Structure Dataset (mam_xr.flat layout).
    rates : DataArray (area, pop), 254-vector or rates mapping
        Rates of the populations (spikes/s).
    params : mam_xr.params.Params, optional
        Neuron, input and replacement parameters; default: the structure's
        ``attrs['params']`` (set by mam_xr.structure.build), else ``Params()``.

    Returns
    -------
    xr.Dataset
        ``mu`` and ``sigma`` (area, pop) in mV, NaN for populations of
        non-simulated areas and for TH 4E/4I.
    """
    p, areas, replace, repl = _settings(params, areas_simulated, replace, replacement_rates, structure)
    system = _system(structure, p, rate_ext=rate_ext, areas_simulated=areas, replace=replace,
                     replacement=repl)
    nu = _rates_vector(rates, "rates")[system.dyn]
    mu, sigma = system.mu_sigma(nu)
    ds = xr.Dataset({"mu": _labelled(system, mu, "mean input μ", "mV"),
                     "sigma": _labelled(system, sigma, "input SD σ", "mV")})
    return ds.assign_coords(exists=exists())


# --- labelled output helpers -----------------------------------------------------

def _labelled(system: _System, values: np.ndarray, long_name: str, units: str,
              fill_fixed: bool = False) -> xr.DataArray:
    """(..., n_dyn) -> (area, pop, ...) DataArray; replaced pops NaN or fixed rate."""
    values = np.asarray(values, float)
    lead = values.shape[:-1]
    flat = np.full(lead + (N_POPULATIONS,), np.nan)
    if fill_fixed:
        flat[...] = system.fixed_rates
    flat[..., system.dyn] = values
    da = from_flat_vector(np.moveaxis(flat, -1, 0))
    return da.assign_attrs(long_name=long_name, units=units)


def _simulated_coord(system: _System) -> xr.DataArray:
    sim = np.zeros(N_POPULATIONS, bool)
    sim[system.dyn] = True
    da = from_flat_vector(sim, fill=False).astype(bool)
    return da.assign_attrs(**_SIMULATED_ATTRS)


def _history(function: str, p, label: str | None = None) -> str:
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    label = p.label() if label is None else label
    return f"[{now}] mam_xr.theory.{function} (params label {label}) - mam_xr version {__version__}"


def _jsonable(d: dict) -> dict:
    """Attrs that survive ``to_zarr``: plain str/int/float/bool/list/None."""
    return json.loads(json.dumps(d, default=lambda o: o.item() if hasattr(o, "item") else str(o)))


def _common_attrs(p, nrn: _Neuron, system: _System, rate_ext: float, replace) -> dict:
    return {
        "tau_m_ms": nrn.tau_m, "tau_s_ms": nrn.tau_s, "t_ref_ms": nrn.t_ref,
        "theta_mV": nrn.theta, "V_r_mV": nrn.V_r, "C_m_pF": nrn.C_m,
        "tau_rate_ms": TAU_RATE_MS, "rate_ext": rate_ext, "cutoff_sigmas": CUTOFF_SIGMAS if nrn.cutoff else None,
        "transfer_function": "Siegert with colored-noise shift (Fourcaud & Brunel 2002), "
                             "spec/dynamics.md B.3",
        "areas_simulated": [a for a in AREAS if a in set(_POP_AREA[system.dyn])],
        "replace_non_simulated_areas": replace if len(system.dyn) < N_POPULATIONS else None,
        "params_label": p.label(),
        "mam_xr_version": __version__,
    }


# --- integration ----------------------------------------------------------------

def _initial(system: _System, p, initial_rates, n_draws, seed, rate_max) -> tuple[np.ndarray, str]:
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
            # (upstream: RandomState(123), 'random_uniform', §B.4 step 6).
            rng = np.random.RandomState(seed)
            draws = rate_max * rng.uniform(size=(n_draws, N_POPULATIONS))
            return draws[:, system.dyn], f"random uniform in [0, {rate_max}] spikes/s, seed {seed}"
        raise ParameterError(invalid("initial_rates", initial_rates,
                                     "'zero', 'random', a (area, pop) DataArray or a 254-vector"))
    if isinstance(initial_rates, xr.DataArray) and "draw" in initial_rates.dims:
        arr = np.stack([_rates_vector(initial_rates.isel(draw=k), "initial_rates")
                        for k in range(initial_rates.sizes["draw"])])
    else:
        arr = np.asarray(initial_rates, float) if not isinstance(initial_rates, (xr.DataArray, dict)) \
            else _rates_vector(initial_rates, "initial_rates")[None]
        if arr.ndim == 1:
            arr = _rates_vector(arr, "initial_rates")[None]
        elif arr.ndim != 2 or arr.shape[1] != N_POPULATIONS:
            raise ParameterError(invalid("initial_rates", f"<array of shape {arr.shape}>",
                                         f"({N_POPULATIONS},) or (draw, {N_POPULATIONS}) rates"))
        else:
            arr = np.stack([_rates_vector(row, "initial_rates") for row in arr])
    return arr[:, system.dyn], "given"


def _run(system: _System, nu0: np.ndarray, dt: float, n_steps: int, first_step_decay: bool,
         record: bool = True, stride: int = 1):
    """Exponential-Euler integration of τ dν/dt = −ν + Φ(μ(ν), σ(ν)) (§B.4 step 4).

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


def _relax(system: _System, nu0: np.ndarray, dt: float, n_steps: int, every: int = 20,
           good: float = 1e-2) -> np.ndarray:
    """Integrate (as :func:`_run`) but stop once max |Φ(ν) − ν| < ``good`` (spikes/s):
    a start close enough for Newton's method."""
    decay = math.exp(-dt / TAU_RATE_MS)
    nu = decay * nu0          # NEST's first step
    for k in range(2, n_steps + 1):
        phi = system.phi(nu)
        if k % every == 0 and np.max(np.abs(phi - nu)) < good:
            break
        nu = decay * nu + (1.0 - decay) * phi
    return nu


@_single_threaded
def integrate(structure: xr.Dataset, params=None, *, initial_rates=None, n_draws: int | None = None,
              seed: int | None = None, rate_max: float | None = None, dt: float | None = None,
              T: float | None = None, rate_ext: float | None = None,
              areas_simulated: Sequence[str] | None = None, replace: str | None = None,
              replacement_rates=None, tol: float = 1e-6, first_step: Literal["nest", "euler"] = "nest",
              rec_interval: float | None = None, cutoff: bool = True,
              warn: bool = True) -> xr.Dataset:
    """Integrate the mean-field pseudo-dynamics as upstream does (spec/dynamics.md §B.4).

    τ dν/dt = −ν + Φ(μ(ν), σ(ν)), τ = 1 ms, exponential Euler with step
    ``dt``: ν(t+dt) = e^{−dt/τ} ν(t) + (1 − e^{−dt/τ}) Φ(ν(t)), sampled at
    every step for ``T`` ms.  As in NEST, the first step of each draw is a
    pure decay (``first_step="euler"`` makes it a regular step).  Several
    initial conditions ("draws") are integrated side by side, each
    independently (upstream chains them in one NEST run; G.17).

    Populations of areas not in ``areas_simulated`` are not integrated: they
    fire at the replacement rates and act as fixed Poisson sources (spec
    §A.11 and §B.5; upstream's theory ignores the subset, G.18).

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
    p, areas, replace, repl = _settings(params, areas_simulated, replace, replacement_rates, structure)
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
    _check_flag("cutoff", cutoff)
    _check_flag("warn", warn)
    nrn = _replace_neuron(_neuron(p), cutoff=cutoff)
    rate_ext = p.network.input.rate_ext if rate_ext is None else _check_rate_ext(rate_ext)
    system = _system(structure, p, neuron=nrn, rate_ext=rate_ext, areas_simulated=areas,
                     replace=replace, replacement=repl)
    nu0, how = _initial(system, p, initial_rates, n_draws, seed, rate_max)
    traj, nu, prev = _run(system, nu0, dt, n_steps, first_step == "nest", stride=stride)
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
    simulated = np.zeros(_EXISTS_FLAT.size, bool)
    simulated[np.flatnonzero(_EXISTS_FLAT)[system.dyn]] = True
    simulated = simulated.reshape(len(AREAS), len(POPS))

    def grid(values, fill_fixed=False):      # (draw, n_dyn[, time]) -> ([draw,] area, pop[, time])
        values = np.moveaxis(np.asarray(values, float), 1, -1)       # (draw[, time], n_dyn)
        flat = np.full(values.shape[:-1] + (N_POPULATIONS,), np.nan)
        if fill_fixed:
            flat[...] = system.fixed_rates
        flat[..., system.dyn] = values
        full = np.full(values.shape[:-1] + (_EXISTS_FLAT.size,), np.nan)
        full[..., _EXISTS_FLAT] = flat
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
        "exists": (("area", "pop"), _EXISTS_FLAT.reshape(len(AREAS), len(POPS)).copy(),
                   dict(_EXISTS_ATTRS)),
        "simulated": (("area", "pop"), simulated, dict(_SIMULATED_ATTRS)),
    })
    common = _common_attrs(p, nrn, system, rate_ext, replace)
    ds.attrs = _jsonable({
        **common,
        "dt_ms": dt, "T_ms": T, "rec_interval_ms": stride * dt, "initial_rates": how,
        "first_step": first_step,
        "integration": "exponential Euler of tau dnu/dt = -nu + Phi(nu), spec/dynamics.md B.4",
        "tol": tol, "converged": bool(converged.all()),
        "history": _history("integrate", p, common["params_label"]),
    })
    return ds


def _replace_neuron(nrn: _Neuron, **changes) -> _Neuron:
    return replace(nrn, **changes)


def _with_draw(da: xr.DataArray) -> xr.DataArray:
    return da if "draw" in da.dims else da.expand_dims("draw")


def _dims(da: xr.DataArray) -> xr.DataArray:
    """(area, pop[, dim_0]) with a lead draw axis -> dims (area, pop, draw)."""
    if "dim_0" in da.dims:
        return da.rename(dim_0="draw")
    return da.expand_dims("draw", axis=-1)


# --- fixed points and stability ----------------------------------------------------

def _newton(system: _System, nu0: np.ndarray, tol: float, maxiter: int = 40):
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


def _solve(system: _System, nu0: np.ndarray, tol: float, held_shift: bool = False):
    """Root of F(ν) = Φ(max(ν, 0)) − ν from ``nu0``: damped Newton, then SciPy's
    hybr and lm (MINPACK) with the exact Jacobian G − I if needed.
    Returns (ν*, max |F|, n_evaluations, message)."""
    nu, res, nfev = _newton(system, nu0, tol)
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


def _homotopy(system: _System, tol: float, dt: float = 0.1, n_steps: int = 500):
    """Fixed point reached by continuation in the cortico-cortical coupling strength.

    With the CC parts of A and B scaled by s and s² (J -> sJ), s = 0 is a set of
    isolated areas whose pseudo-dynamics settle; the fixed point is then
    followed to s = 1 with Newton steps (step in s halved on failure).  This
    does not depend on where an unsettled trajectory happens to end.
    Returns (ν, max |F|, n_evaluations) or None.
    """
    cc = _FLAT_CC[np.ix_(system.dyn, system.dyn)]
    local_A, cc_A = np.where(cc, 0.0, system.A), np.where(cc, system.A, 0.0)
    local_B, cc_B = np.where(cc, 0.0, system.B), np.where(cc, system.B, 0.0)

    def at(s):
        return replace(system, A=local_A + s * cc_A, B=local_B + s * s * cc_B)

    nu = _relax(at(0.0), np.zeros(system.dyn.size), dt, n_steps)
    nu, res, nfev = _newton(at(0.0), nu, tol)
    if res > tol:
        return None
    s, h = 0.0, 0.1
    while s < 1.0:
        t = min(1.0, s + h)
        trial, res, n = _newton(system if t == 1.0 else at(t), nu, tol)
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


def _fixed_point_ds(system, nu: np.ndarray, res_max: np.ndarray, nfev, how, tol,
                    with_gain: bool, held_shift: bool) -> xr.Dataset:
    """Dataset of one or several (draw, n) fixed points; ``system`` is one _System
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
        "rate": _dims(_labelled(system, nu, "fixed-point rate", "spikes/s", True)),
        "residual": _dims(_labelled(system, phis - nu, "Φ(ν*) − ν*", "spikes/s")),
        "mu": _dims(_labelled(system, mu, "mean input μ at the fixed point", "mV")),
        "sigma": _dims(_labelled(system, sigma, "input SD σ at the fixed point", "mV")),
        "converged": xr.DataArray(converged, dims=("draw",)).assign_attrs(
            long_name=f"max |Φ(ν*) − ν*| <= {tol} spikes/s", units="1"),
        "eigenvalue_max_real": xr.DataArray(lead.real, dims=("draw",)).assign_attrs(
            long_name="largest real part of the eigenvalues of the gain matrix G", units="1"),
        "eigenvalue_max_imag": xr.DataArray(lead.imag, dims=("draw",)).assign_attrs(
            long_name="imaginary part of that eigenvalue", units="1"),
        "lambda_max": xr.DataArray(np.sqrt(np.where(lead.real >= 0, lead.real, np.nan)),
                                   dims=("draw",)).assign_attrs(
            long_name="sqrt(max Re λ(G)), upstream's lambda_max (spec B.6, G.16); NaN if negative",
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
    ds = xr.Dataset(data).assign_coords(exists=exists(), simulated=_simulated_coord(system))
    if ds.sizes["draw"] == 1:
        ds = ds.isel(draw=0, drop=True)
    return ds


@_single_threaded
def fixed_point(structure: xr.Dataset, params=None, *, initial=None, tol: float = 1e-9,
                rate_ext: float | None = None, areas_simulated: Sequence[str] | None = None,
                replace: str | None = None, replacement_rates=None, cutoff: bool = True,
                held_shift: bool = False, with_gain: bool = True, warn: bool = True,
                **integrate_kwargs) -> xr.Dataset:
    """Fixed point ν* = Φ(ν*) by root finding, with its stability (spec §B.4, §B.6).

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
        _check_flag(name, flag)
    p, areas, replace, repl = _settings(params, areas_simulated, replace, replacement_rates, structure)
    nrn = _replace_neuron(_neuron(p), cutoff=cutoff)
    rate_ext = p.network.input.rate_ext if rate_ext is None else _check_rate_ext(rate_ext)
    system = _system(structure, p, neuron=nrn, rate_ext=rate_ext, areas_simulated=areas,
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
        ends, _ = _initial(system, p, _with_draw(run["rate"]), None, None, None)
        t_end = float(run["time"][-1])
        late = run["trajectory"].sel(time=slice(0.5 * t_end, None)).mean("time")
        means, _ = _initial(system, p, _with_draw(late), None, None, None)
        ok = np.atleast_1d(run["converged"].values)
        # A trajectory that has not settled (oscillating or chaotic) is a poor start, and
        # which fixed point Newton reaches from it is a matter of chance: such draws use
        # the fixed point continued from isolated areas (_homotopy), then the trajectory.
        candidates = [[e] if good else ["homotopy", m, e] for e, m, good in zip(ends, means, ok)]
    else:
        if isinstance(initial, xr.Dataset):
            initial = initial["rate"]
        nu0, _ = _initial(system, p, initial, None, None, None)
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
                r = _solve(system, x0, tol, held_shift)
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
    ds = _fixed_point_ds(system, nu, res, [r[2] for r in results], how, tol, with_gain, held_shift)
    ds.attrs = _jsonable({
        **_common_attrs(p, nrn, system, rate_ext, replace),
        "solver": "damped Newton, then scipy.optimize.root (hybr, then lm), on Phi(nu) - nu with the exact Jacobian",
        "started_from": how, "tol": tol, "held_shift": held_shift,
        "converged": bool((res <= tol).all()),
        "history": _history("fixed_point", p),
    })
    return ds


@_single_threaded
def gain_matrix(structure: xr.Dataset, rates, params=None, *, held_shift: bool = False,
                rate_ext: float | None = None, areas_simulated: Sequence[str] | None = None,
                replace: str | None = None, replacement_rates=None) -> xr.DataArray:
    """Gain matrix G_ij = ∂Φ_i/∂ν_j at given rates (spec/dynamics.md §B.6).

    Returns
    -------
    xr.DataArray
        (area, pop, source_area, source_pop), dimensionless; NaN outside the
        simulated populations.
    """
    p, areas, replace, repl = _settings(params, areas_simulated, replace, replacement_rates, structure)
    system = _system(structure, p, rate_ext=rate_ext, areas_simulated=areas, replace=replace,
                     replacement=repl)
    nu = _rates_vector(rates, "rates")[system.dyn]
    _, G = system.gain(nu, held_shift=held_shift)
    full = np.full((N_POPULATIONS, N_POPULATIONS), np.nan)
    full[np.ix_(system.dyn, system.dyn)] = G
    return from_flat_matrix(full, name="gain").assign_attrs(
        long_name="gain matrix dPhi_i/dnu_j", units="1")


# --- fast structural changes ---------------------------------------------------------

def _fullscale_rates_vector(p, fullscale_rates):
    source = fullscale_rates if fullscale_rates is not None else p.network.fullscale_rates
    if source is None:
        return None
    if isinstance(source, str) and source == "upstream":
        from .data import fetch

        source = fetch("fullscale_rates.json")
    return _rates_vector(source, "fullscale_rates")


def _with_internal_change(structure: xr.Dataset, factor: xr.DataArray | None, p, *,
                          K_scaling: float | None, fullscale_rates, rate_ext_old: float | None = None,
                          rate_ext_new: float | None = None) -> xr.Dataset:
    """Structure with weight_mean, weight_sd and J multiplied by ``factor`` (dims
    area, pop, source_area, source_pop) and the down-scaling DC drive updated.

    The DC drive of a down-scaled structure (construction.md §9) is linear in the
    full-scale input x = 1e-3 τ_m Σ_j J_full K_full ν_full (+ external), and
    J_full K_full = J K / √κ in terms of the scaled matrices, so a change ΔJ
    (or Δrate_ext) changes it by (C_m/τ_m)(1 − √κ)/√κ · 1e-3 τ_m Σ_j ΔJ_ij K_ij ν_j.
    """
    out = structure.copy()
    dJ = None
    if factor is not None:
        for name in ("weight_mean", "weight_sd", "J"):
            if name in out:
                out[name] = (structure[name] * factor).assign_attrs(structure[name].attrs)
        dJ = (out["J"] - structure["J"]).fillna(0.0)
    dc = structure["dc_drive"].fillna(0.0)
    if bool((dc != 0).any()):
        scale, nu_full = _dc_scale(p, K_scaling, fullscale_rates)
        delta = xr.zeros_like(dc)
        if dJ is not None:
            nu = from_flat_vector(nu_full).rename(area="source_area", pop="source_pop").fillna(0.0)
            delta = delta + (dJ * structure["indegree"].fillna(0.0) * nu).sum(("source_area", "source_pop"))
        if rate_ext_new is not None and rate_ext_new != rate_ext_old:
            delta = delta + (structure["external_J"] * structure["external_indegree"]).fillna(0.0) \
                * (rate_ext_new - rate_ext_old)
        out["dc_drive"] = (structure["dc_drive"] + scale * delta).assign_attrs(structure["dc_drive"].attrs)
    return out


def rescale_cc(structure: xr.Dataset, *, chi: float, chi_I: float, chi_old: float, chi_I_old: float,
               params=None, K_scaling: float | None = None, fullscale_rates=None) -> xr.Dataset:
    """The structure at other cortico-cortical weight factors, without rebuilding it.

    Fast path of χ / χ_I sweeps: CC couplings (source area ≠ target area) are
    proportional to χ, and to χ·χ_I onto inhibitory targets (construction.md
    §4.5, §14), so ``weight_mean``, ``weight_sd`` and ``J`` of CC pairs are
    multiplied by χ/χ_old, and by (χ χ_I)/(χ_old χ_I_old) for inhibitory
    targets; intra-area and external entries are unchanged.  Indegrees do not
    depend on χ.  For a down-scaled structure (non-zero ``dc_drive``) the DC
    drive is updated as a rebuild would (construction.md §9); this needs the
    scaling factor and the full-scale rates (default: from ``params``).

    Parameters
    ----------
    structure : xr.Dataset
        Structure built with ``chi_old`` and ``chi_I_old``.
    chi, chi_I : float
        New factors (> 0).
    chi_old, chi_I_old : float
        Factors the structure was built with.
    params : Params, optional
        Neuron parameters and, for down-scaled structures, ``network.scale``
        and ``network.fullscale_rates``.

    Returns
    -------
    xr.Dataset
        A new structure Dataset; attrs gain ``chi`` and ``chi_I``.

    Raises
    ------
    ParameterError
        A factor <= 0, or a down-scaled structure without ``K_scaling`` < 1
        and full-scale rates.
    """
    for name, value in (("chi", chi), ("chi_I", chi_I), ("chi_old", chi_old), ("chi_I_old", chi_I_old)):
        if not (isinstance(value, (int, float)) and value > 0):
            raise ParameterError(invalid(name, value, "a factor > 0"))
    p = _params(params, structure)
    cc = xr.DataArray(~np.eye(len(AREAS), dtype=bool), dims=("area", "source_area"),
                      coords={"area": list(AREAS), "source_area": list(AREAS)})
    inh = xr.DataArray(~is_excitatory(POPS), dims=("pop",), coords={"pop": list(POPS)})
    factor = xr.where(cc, xr.where(inh, (chi * chi_I) / (chi_old * chi_I_old), chi / chi_old), 1.0)
    out = _with_internal_change(structure, factor, p, K_scaling=K_scaling, fullscale_rates=fullscale_rates)
    out.attrs = {**structure.attrs, "chi": float(chi), "chi_I": float(chi_I)}
    return out


# --- sweeps --------------------------------------------------------------------------

_FAST = ("chi", "chi_I", "rate_ext", "g")

#: Largest step (ms) of the relaxation that restarts a sweep where its branch ended.
_RESTART_DT = 0.02


_FLAT_CC = _POP_AREA[:, None] != _POP_AREA[None, :]
_FLAT_INH = ~is_excitatory([label.split("-")[1] for label in population_labels()])


def _dc_scale(p, K_scaling, fullscale_rates):
    """(C_m/τ_m)(1 − √κ)/√κ · 1e-3 τ_m and ν_full: DC drive per unit of scaled input."""
    kappa = p.network.K_scaling if K_scaling is None else float(K_scaling)
    nu_full = _fullscale_rates_vector(p, fullscale_rates)
    if kappa == 1.0 or nu_full is None:
        raise ParameterError(invalid(
            "K_scaling", kappa, "the structure's down-scaling factor (< 1) and its fullscale_rates "
            "(the structure has a DC drive, which changes with the couplings)"))
    nrn = _neuron(p)
    return nrn.C_m / nrn.tau_m * (1.0 - math.sqrt(kappa)) / math.sqrt(kappa) * 1e-3 * nrn.tau_m, nu_full


def _model_at(model: dict, param: str, value: float, p, current: dict, K_scaling, fullscale_rates):
    """Fast path on flat arrays: (model, params) at one sweep point.

    Same maths as :func:`rescale_cc` / :func:`_with_internal_change`.
    """
    conn = p.network.connection
    factor = None
    rate_ext_new = None
    if param in ("chi", "chi_I"):
        chi = value if param == "chi" else current.get("chi", conn.chi)
        chi_I = value if param == "chi_I" else current.get("chi_I", conn.chi_I)
        q = p.update({"chi": chi, "chi_I": chi_I})
    else:
        q = p.update({param: value})
    if param in ("chi", "chi_I"):
        factor = np.where(_FLAT_CC, np.where(_FLAT_INH[:, None], (chi * chi_I) / (conn.chi * conn.chi_I),
                                             chi / conn.chi), 1.0)
    elif param == "g":
        factor = np.where(_FLAT_INH[None, :], value / conn.g, np.ones((N_POPULATIONS, 1)))
    else:  # rate_ext
        rate_ext_new = float(value)
    K, J, dc = model["K"], model["J"].copy(), model["dc"]
    if factor is not None:
        J[:, :-1] *= factor
    if np.any(dc != 0):
        scale, nu_full = _dc_scale(p, K_scaling, fullscale_rates)
        delta = ((J[:, :-1] - model["J"][:, :-1]) * K[:, :-1]) @ nu_full
        if rate_ext_new is not None:
            delta = delta + J[:, -1] * K[:, -1] * (rate_ext_new - p.network.input.rate_ext)
        dc = dc + scale * delta
    return {"K": K, "J": J, "dc": dc}, q


@_single_threaded
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
    ``params``): ``chi`` / ``chi_I`` rescale the CC couplings
    (:func:`rescale_cc`), ``g`` rescales the couplings of inhibitory sources,
    ``rate_ext`` only changes the drive; down-scaled structures get their DC
    drive updated as a rebuild would (construction.md §9).

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
        _check_flag(name, flag)
    if build is not None and not callable(build):
        raise ParameterError(invalid("build", build, "a callable value -> structure Dataset"))
    if build is None and fast and param not in _FAST:
        raise ParameterError(invalid(
            "param", param, f"one of {', '.join(_FAST)} for the fast path, or fast=False / build="))
    p = _params(params, structure)
    areas = p.simulation.areas_simulated
    replace = p.simulation.replace_non_simulated_areas
    repl = replacement_rates(p) if len(areas) < len(AREAS) and replace == "het_poisson_stat" else None
    current = {k: v for k, v in (("chi", chi), ("chi_I", chi_I)) if v is not None}
    base = _flat_model(structure) if build is None and fast else None
    builder = None
    if build is None and not fast:
        try:
            from . import structure as structure_module
            builder = structure_module.build
        except (ImportError, AttributeError):
            raise ParameterError(invalid(
                "fast", False, "True (mam_xr.structure.build is not available yet) or a build "
                "callable")) from None
    systems, found, residuals, evaluations, prev, restarted = [], [], [], [], None, []
    for value in values:
        if base is not None:
            model, q = _model_at(base, param, value, p, current, K_scaling, fullscale_rates)
        else:
            q = p.update({param: value, **{k: v for k, v in current.items() if k != param}})
            s = build(value) if build is not None else builder(q)
            if not isinstance(s, xr.Dataset):
                raise ParameterError(invalid("build", build, "a callable value -> structure Dataset"))
            model = _flat_model(s)
        system = _assemble(model, q, areas_simulated=areas, replace=replace, replacement=repl)
        again = False
        if prev is None:
            start = _relax(system, _initial(system, q, None, 1, None, None)[0][0], q.theory.dt,
                           int(round(q.theory.T / q.theory.dt)))
            nu, res, nfev, _ = _solve(system, start, tol)
        else:
            # continuation: Newton from the previous fixed point (no MINPACK here: where
            # Newton fails the branch has usually ended, and MINPACK would take ~0.5 s)
            nu, res, nfev = _newton(system, prev, tol)
        if res > tol and prev is not None:
            # The branch ended: relax from the previous fixed point and solve from there.
            # Step <= _RESTART_DT: with dt = 0.1 ms exponential Euler oscillates around
            # high-activity states whose gain matrix has large negative eigenvalues
            # (|e^{-dt} + (1 - e^{-dt}) λ| > 1), although they are stable (max Re λ < 1).
            again = True
            dt_fine = min(q.theory.dt, _RESTART_DT)
            end = _relax(system, prev, dt_fine, int(round(q.theory.T / dt_fine)))
            nu2, res2, nfev2, _ = _solve(system, end, tol)
            nfev += nfev2
            if res2 < res:
                nu, res = nu2, res2
        prev = nu
        restarted.append(again)
        systems.append(system)
        found.append(nu)
        residuals.append(res)
        evaluations.append(nfev)
    ds = _fixed_point_ds(systems, np.array(found), np.array(residuals), evaluations, "", tol,
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
    nrn = _neuron(p)
    ds.attrs = _jsonable({
        **_common_attrs(p, nrn, system, p.network.input.rate_ext, replace),
        "sweep_param": param, "structures": "build callable" if build is not None else
        ("mam_xr.structure.build" if not fast else "fast path on the given structure"),
        "chi": current.get("chi"), "chi_I": current.get("chi_I"),
        "solver": "continuation by damped Newton with the exact Jacobian; where it fails, relaxation "
                  "(step <= 0.02 ms) from the previous point, then Newton, scipy.optimize.root (hybr, lm)",
        "tol": tol, "history": _history("sweep", p),
    })
    return ds
