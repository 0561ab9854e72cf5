"""Theory atlas: every mean-field fixed-point branch over a network parameter (one concept:
continuation, folds, stability and the labels of one bifurcation diagram share their state,
hence one module longer than most).

``atlas(params, chi=values)`` maps the fixed points ν* = Φ(ν*) of the
mean-field theory (:mod:`mam_xr.theory`) over a range of the cortico-cortical
weight factor χ (or of ``chi_I``, ``g``, ``rate_ext``): all branches that
continuation finds from the zero-rate start and from random starts, with
branch switching at folds (pseudo-arclength continuation goes round a fold
onto the branch that meets it), the linear stability of every point (largest
real part of the eigenvalues of the gain matrix G, stable below 1) and the
area profile of the leading eigenvector, the folds located to better than
1e-4 in the parameter, and which branch the integration of upstream's
procedure (:func:`mam_xr.theory.integrate` from zero rates) reaches.
The result is a labelled :class:`xarray.Dataset` with dims (``chi``,
``branch``, ``area``, ``pop``) that round-trips through Zarr.  The maths and
the algorithm are described in docs/atlas.md.

Units: rates in spikes/s, χ, χ_I and g dimensionless, rate_ext in spikes/s.
"""

from __future__ import annotations

import datetime
import json
import math
import time
import warnings
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import xarray as xr
from scipy import linalg

try:  # optional: BLAS single-threaded, as in mam_xr.theory (254 x 254 problems gain nothing
    from threadpoolctl import threadpool_limits  # from threads and spin-wait on a busy machine)
except ImportError:  # pragma: no cover
    threadpool_limits = None

from . import __version__
from . import structure as structure_module
from . import theory
from .errors import ParameterError, invalid
from .flat import (AREAS, FLAT_AREA, FLAT_AREA_INDEX, N_POPULATIONS, POPS, exists,
                   to_flat_matrix, to_flat_vector)

__all__ = ["atlas", "parse_range", "parse_spec", "summary", "PARAMETERS"]

#: Network parameters the atlas can sweep: each scales couplings or the drive linearly.
PARAMETERS = ("chi", "chi_I", "g", "rate_ext")

_EXISTS = exists()


# --- the system as a function of the swept parameter ---------------------------------

@dataclass
class _Family:
    """F(ν, p) = Φ(μ(ν, p), σ(ν, p)) − ν on the dynamic populations.

    μ = (A_a + f A_b) ν + m0 + (p − p0) m1 + f mf,
    σ² = (B_a + f² B_b) ν + v0 + (p − p0) v1 + f² vf,  f = p/p0 for parameters that
    scale couplings (χ, χ_I, g; f ≡ 1 for rate_ext).  The parts come from the
    structure built at p0 and one built at another value (see :func:`_family`).
    """

    A_a: np.ndarray
    A_b: np.ndarray
    B_a: np.ndarray
    B_b: np.ndarray
    m0: np.ndarray
    m1: np.ndarray
    mf: np.ndarray
    v0: np.ndarray
    v1: np.ndarray
    vf: np.ndarray
    p0: float
    scales: bool
    neuron: dict
    dyn: np.ndarray
    fixed_rates: np.ndarray

    @property
    def n(self) -> int:
        return self.dyn.size

    def f(self, p):
        return p / self.p0 if self.scales else 1.0

    def df(self):
        return 1.0 / self.p0 if self.scales else 0.0

    def matrices(self, p):
        """A(p) = A_a + f A_b and B(p) = B_a + f² B_b (cached for the last p)."""
        cache = self.__dict__.get("_cache")
        if cache is None or cache[0] != p:
            f = self.f(p)
            cache = (p, self.A_a + f * self.A_b, self.B_a + (f * f) * self.B_b)
            self.__dict__["_cache"] = cache
        return cache[1], cache[2]

    def stats(self, nu, p):
        f = self.f(p)
        A, B = self.matrices(p)
        mu = A @ nu
        mu += self.m0 + (p - self.p0) * self.m1 + f * self.mf
        var = B @ nu
        var += self.v0 + (p - self.p0) * self.v1 + f * f * self.vf
        np.maximum(var, 0.0, out=var)
        return mu, np.sqrt(var)

    def phi(self, nu, p):
        mu, sigma = self.stats(nu, p)
        return theory.transfer(mu, sigma, **self.neuron)

    def gain(self, nu, p, dp: bool = False):
        """Φ, G = ∂Φ/∂ν (n x n) and, if ``dp``, ∂Φ/∂p (n) at ν >= 0."""
        mu, sigma = self.stats(nu, p)
        phi, dmu, dvar = theory.transfer_derivatives(mu, sigma, **self.neuron)
        A, B = self.matrices(p)
        G = np.multiply(A, dmu[:, None])
        G += B * dvar[:, None]
        if not dp:
            return phi, G, None
        f, d = self.f(p), self.df()
        dmu_dp = d * (self.A_b @ nu + self.mf) + self.m1
        dvar_dp = 2.0 * f * d * (self.B_b @ nu + self.vf) + self.v1
        return phi, G, dmu * dmu_dp + dvar * dvar_dp


def _second_value(name: str, p0: float) -> float:
    """Another valid value of ``name`` at which a second structure is built."""
    return {"chi": p0 + 0.5, "chi_I": p0 + 0.5, "g": p0 - 1.0, "rate_ext": p0 + 1.0}[name]


def _value(params, name: str) -> float:
    net = params.network
    return float({"chi": net.connection.chi, "chi_I": net.connection.chi_I, "g": net.connection.g,
                  "rate_ext": net.input.rate_ext}[name])


def _family(params, name: str, s0: xr.Dataset, build) -> _Family:
    """The family F(ν, p) of ``params`` along parameter ``name``: the structure ``s0``
    built with ``params`` and one built at another value give its linear parts."""
    p0 = _value(params, name)
    p1 = _second_value(name, p0)
    s1 = build(params.update({name: p1}))
    nrn = params.network.neuron
    tau = 1e-3 * nrn.tau_m                  # τ_m in s multiplies rates in spikes/s
    K0, J0 = to_flat_matrix(s0["indegree"]), to_flat_matrix(s0["J"])
    J1 = to_flat_matrix(s1["J"])
    scales = name != "rate_ext"
    changed = ~np.isclose(J1, J0, rtol=1e-12, atol=0.0)
    if scales and not np.allclose(J1[changed], J0[changed] * (p1 / p0), rtol=1e-9, atol=0.0):
        raise ParameterError(invalid(name, p0, "a parameter that scales couplings proportionally"))
    A = tau * K0 * J0
    B = A * J0
    A_b = np.where(changed, A, 0.0) if scales else np.zeros_like(A)
    B_b = np.where(changed, B, 0.0) if scales else np.zeros_like(B)

    def drive(s, q):
        rate_ext = _value(q, "rate_ext")
        kj = to_flat_vector(s["external_indegree"]) * to_flat_vector(s["external_J"])
        mu = tau * kj * rate_ext + nrn.tau_m / nrn.C_m * to_flat_vector(s["dc_drive"])
        var = tau * kj * to_flat_vector(s["external_J"]) * rate_ext
        return mu, var

    m_0, v_0 = drive(s0, params)
    m_1, v_1 = drive(s1, params.update({name: p1}))
    slope_m, slope_v = (m_1 - m_0) / (p1 - p0), (v_1 - v_0) / (p1 - p0)

    areas = params.simulation.areas_simulated
    sim = np.isin(FLAT_AREA, areas)
    fixed = np.full(N_POPULATIONS, np.nan)
    dyn = np.flatnonzero(sim)
    mf = np.zeros(dyn.size)
    vf = np.zeros(dyn.size)
    if not sim.all():
        mode = params.simulation.replace_non_simulated_areas
        if mode not in ("hom_poisson_stat", "het_poisson_stat"):
            raise ParameterError(invalid(
                "replace_non_simulated_areas", mode, "hom_poisson_stat or het_poisson_stat for the "
                "atlas of a subset of areas (replaced areas must be stationary sources)"))
        nu = np.asarray(theory.replacement_rates(params), float)
        fix = ~sim
        fixed[fix] = nu[fix]
        m_0 = m_0 + (A - A_b)[:, fix] @ nu[fix]
        v_0 = v_0 + (B - B_b)[:, fix] @ nu[fix]
        mf = (A_b[:, fix] @ nu[fix])[dyn]
        vf = (B_b[:, fix] @ nu[fix])[dyn]
    ix = np.ix_(dyn, dyn)
    neuron = dict(tau_m=nrn.tau_m, tau_s=nrn.tau_syn_ex, t_ref=nrn.t_ref, theta=nrn.V_th - nrn.E_L,
                  V_r=nrn.V_reset - nrn.E_L)
    return _Family(A_a=np.ascontiguousarray((A - A_b)[ix]), A_b=np.ascontiguousarray(A_b[ix]),
                   B_a=np.ascontiguousarray((B - B_b)[ix]), B_b=np.ascontiguousarray(B_b[ix]),
                   m0=m_0[dyn], m1=slope_m[dyn], mf=mf, v0=v_0[dyn], v1=slope_v[dyn], vf=vf,
                   p0=p0, scales=scales, neuron=neuron, dyn=dyn, fixed_rates=fixed)


# --- solving ----------------------------------------------------------------------------

def _newton(fam: _Family, nu0: np.ndarray, p: float, tol: float, maxiter: int = 30):
    """Damped Newton on F(ν) = Φ(max(ν, 0)) − ν at fixed p; returns (ν, max|F|).

    After each Newton step, chord steps with the same LU factors follow while they
    at least halve the residual (they cost one Φ instead of a gain matrix and a
    factorisation)."""
    nu = np.maximum(nu0, 0.0)
    F = fam.phi(nu, p) - nu
    err = float(np.max(np.abs(F)))
    n = fam.n
    for _ in range(maxiter):
        if err <= 0.1 * tol:
            break
        _, G, _ = fam.gain(nu, p)
        G[np.diag_indices(n)] -= 1.0
        try:
            lu = linalg.lu_factor(G, check_finite=False)
        except (linalg.LinAlgError, ValueError):
            break
        step = linalg.lu_solve(lu, -F, check_finite=False)
        if not np.all(np.isfinite(step)):
            break
        alpha = 1.0
        while True:
            trial = np.maximum(nu + alpha * step, 0.0)
            F_t = fam.phi(trial, p) - trial
            err_t = float(np.max(np.abs(F_t)))
            if err_t < err or alpha < 1e-3:
                break
            alpha *= 0.5
        if err_t >= err:
            break
        nu, F, err = trial, F_t, err_t
        for _ in range(8):                  # chord steps
            if err <= 0.1 * tol:
                break
            trial = np.maximum(nu + linalg.lu_solve(lu, -F, check_finite=False), 0.0)
            F_t = fam.phi(trial, p) - trial
            err_t = float(np.max(np.abs(F_t)))
            if not err_t < 0.5 * err:
                break
            nu, F, err = trial, F_t, err_t
    return nu, err


@dataclass
class _Curve:
    """Points of one solution curve in (ν, p), ordered along its arclength."""

    nu: list
    p: list
    t: list               # unit tangents (weighted norm), t[-1] is dp/ds
    ended: list           # why each end stopped: 'range', 'failed', 'closed', 'steps'


class _Tracer:
    """Pseudo-arclength continuation of F(ν, p) = 0 with the bordered Newton corrector.

    The arclength is measured with the weights 1/n on ν (spikes/s, n populations)
    and 1/pscale² on p, so that a unit step moves p by at most ``pscale``.
    """

    def __init__(self, fam: _Family, pscale: float, p_lo: float, p_hi: float, tol: float):
        self.fam, self.pscale, self.tol = fam, pscale, tol
        self.p_lo, self.p_hi = p_lo, p_hi
        self.w = np.full(fam.n + 1, 1.0 / fam.n)
        self.w[-1] = 1.0 / pscale ** 2
        self.evaluations = 0

    def norm(self, v):
        return math.sqrt(float(np.dot(self.w * v, v)))

    def jac(self, x):
        nu, p = np.maximum(x[:-1], 0.0), x[-1]
        phi, G, dp = self.fam.gain(nu, p, dp=True)
        self.evaluations += 1
        G[np.diag_indices_from(G)] -= 1.0
        return phi - x[:-1], np.concatenate([G, dp[:, None]], axis=1)

    def tangent(self, Jx, t_prev):
        M = np.vstack([Jx, self.w * t_prev])
        rhs = np.zeros(self.fam.n + 1)
        rhs[-1] = 1.0
        t = np.linalg.solve(M, rhs)
        return t / self.norm(t)

    def correct(self, x_pred, t, maxiter: int = 8):
        """Newton on [F(x); <t, x − x_pred>] = 0; returns (x, Jx, iterations) or None."""
        x = x_pred.copy()
        row = self.w * t
        for k in range(maxiter):
            F, Jx = self.jac(x)
            err = float(np.max(np.abs(F)))
            if err <= self.tol and k > 0:
                return x, Jx, k
            g = float(np.dot(row, x - x_pred))
            try:
                dx = np.linalg.solve(np.vstack([Jx, row]), -np.concatenate([F, [g]]))
            except np.linalg.LinAlgError:
                return None
            x = x + dx
            x[:-1] = np.maximum(x[:-1], 0.0)
            if not np.all(np.isfinite(x)):
                return None
        F, Jx = self.jac(x)
        if float(np.max(np.abs(F))) <= self.tol:
            return x, Jx, maxiter
        return None

    def trace(self, nu0, p0, direction: float, max_steps: int = 2000, h0: float = 0.5,
              h_max: float = 3.0, h_min: float = 1e-7):
        """Follow the curve through (ν0, p0), first with dp/ds of sign ``direction``."""
        x = np.concatenate([nu0, [p0]])
        F, Jx = self.jac(x)
        e = np.zeros(self.fam.n + 1)
        e[-1] = direction
        t = self.tangent(Jx, e)
        if t[-1] * direction < 0:
            t = -t
        xs, ts = [x], [t]
        h, ended = h0, "steps"
        for _ in range(max_steps):
            step = self.correct(x + h * t, t)
            ok = step is not None
            if ok:
                x_new, J_new, iters = step
                t_new = self.tangent(J_new, t)
                # reject steps that turn sharply (they may have jumped to another branch)
                ok = float(np.dot(self.w * t_new, t)) > 0.8
            if not ok:
                h *= 0.5
                if h < h_min:
                    ended = "failed"
                    break
                continue
            x, t = x_new, t_new
            xs.append(x)
            ts.append(t)
            if iters <= 3:
                h = min(h_max, 1.5 * h)
            p = x[-1]
            if p < self.p_lo or p > self.p_hi:
                ended = "range"
                break
            if len(xs) > 10 and self.norm(x - xs[0]) < 0.5 * h and \
                    float(np.dot(self.w * t, ts[0])) > 0.9:
                ended = "closed"
                break
        return xs, ts, ended

    def fold(self, xa, ta, xb):
        """Refine a fold between curve points a and b (dp/ds changes sign).

        Returns (x_fold, t_fold, curvature p'' = d²p/ds², bracket (σ_lo, σ_hi)) where σ is
        the arclength from a along ``ta`` (regula falsi, Illinois variant, on dp/ds).
        """
        def at(sigma):
            r = self.correct(xa + sigma * ta, ta, maxiter=12)
            if r is None:
                return None
            x, Jx, _ = r
            return x, self.tangent(Jx, ta)

        s_lo, s_hi = 0.0, float(np.dot(self.w * ta, xb - xa))
        g_lo = ta[-1]
        end = at(s_hi)
        if end is None:
            return None
        g_hi = end[1][-1]
        curvature = (g_hi - g_lo) / s_hi
        best = (abs(g_lo), xa, ta) if abs(g_lo) < abs(g_hi) else (abs(g_hi),) + end
        side = 0
        for _ in range(60):
            if s_hi - s_lo <= 1e-10 * max(1.0, s_hi) or best[0] < 1e-13:
                break
            s = (s_lo * g_hi - s_hi * g_lo) / (g_hi - g_lo)
            if not s_lo < s < s_hi:
                s = 0.5 * (s_lo + s_hi)
            r = at(s)
            if r is None:
                return None
            g = r[1][-1]
            if abs(g) < best[0]:
                best = (abs(g),) + r
            if (g > 0) == (g_lo > 0):
                s_lo, g_lo = s, g
                if side == -1:
                    g_hi *= 0.5
                side = -1
            else:
                s_hi, g_hi = s, g
                if side == 1:
                    g_lo *= 0.5
                side = 1
        return best[1], best[2], curvature, (s_lo, s_hi)


# --- stability ---------------------------------------------------------------------

def _refine(G: np.ndarray, lam0: complex, v0: np.ndarray, tol: float = 1e-10):
    """Rayleigh-quotient iteration from (λ0, v0): the eigenpair of G nearest to λ0.

    Returns (λ, v) once ||G v − λ v|| <= tol max(1, |λ|) (|v| = 1), else None.
    """
    n = G.shape[0]
    is_complex = abs(lam0.imag) > 1e-12
    x = np.asarray(v0) if is_complex else np.real(v0)
    x = x.astype(complex if is_complex else float)
    x = x / np.linalg.norm(x)
    lam = lam0 if is_complex else lam0.real
    for _ in range(5):
        M = G.astype(x.dtype)
        M[np.diag_indices(n)] -= lam * (1.0 + 1e-13)          # keep M non-singular
        try:
            y = linalg.lu_solve(linalg.lu_factor(M, check_finite=False), x, check_finite=False)
        except (linalg.LinAlgError, ValueError):
            return None
        norm = np.linalg.norm(y)
        if not (np.isfinite(norm) and norm > 0):
            return None
        x = y / norm
        Gx = G @ x
        lam = np.vdot(x, Gx)
        if not is_complex:
            lam = lam.real
        if np.linalg.norm(Gx - lam * x) <= tol * max(1.0, abs(lam)):
            return complex(lam), x
    return None


def _leading(G: np.ndarray):
    """Eigenvalue of G with the largest real part and its eigenvector (all eigenvalues,
    then the eigenvector by Rayleigh-quotient iteration, cheaper than ``eig``)."""
    lam = np.linalg.eigvals(G)
    lead = complex(lam[int(np.argmax(lam.real))])
    r = _refine(G, lead, np.ones(G.shape[0]))
    return (lead, np.full(G.shape[0], np.nan)) if r is None else (lead, r[1])


def _same(a: complex, b: complex) -> bool:
    """The same eigenvalue (pair): equal real parts and |imaginary parts|."""
    return abs(a.real - b.real) <= 1e-8 * max(1.0, abs(a)) and \
        abs(abs(a.imag) - abs(b.imag)) <= 1e-8 * max(1.0, abs(a))


def _stability(gains: list, every: int = 4):
    """Leading eigenpair of each gain matrix along a branch (ordered by the parameter).

    All eigenvalues at every ``every``-th point and at the last; in between, the
    leading eigenpair of the previous point refined by Rayleigh-quotient iteration
    (a few LU factorisations instead of a full eigenvalue problem).  Where the
    refined pair at the next full point is not its leading one (another eigenvalue
    overtook), the points in between get all eigenvalues too.
    """
    out = [None] * len(gains)
    last_full = None
    for i, G in enumerate(gains):
        tracked = None if i == 0 else _refine(G, *out[i - 1])
        if i % every == 0 or i == len(gains) - 1 or tracked is None:
            out[i] = _leading(G)
            if tracked is None or not _same(tracked[0], out[i][0]):
                start = 0 if last_full is None else last_full + 1
                for j in range(start, i):
                    if j != last_full:
                        out[j] = _leading(gains[j])
            last_full = i
        else:
            out[i] = tracked
    return out


# --- the atlas ---------------------------------------------------------------------

def parse_range(text: str, name: str = "chi") -> np.ndarray:
    """Values of ``start:stop:step`` (stop included), e.g. ``"1.0:2.5:0.01"`` -> 151 values.

    A single number gives one value.  Raises ParameterError naming ``name`` for a
    malformed range, a step <= 0 or stop < start.
    """
    parts = str(text).split(":")
    try:
        numbers = [float(x) for x in parts]
    except ValueError:
        raise ParameterError(invalid(name, text, "start:stop:step (numbers), e.g. 1.0:2.5:0.01")) from None
    if len(numbers) == 1:
        return np.array(numbers)
    if len(numbers) != 3 or not all(math.isfinite(x) for x in numbers):
        raise ParameterError(invalid(name, text, "start:stop:step (three finite numbers), e.g. 1.0:2.5:0.01"))
    start, stop, step = numbers
    if not step > 0:
        raise ParameterError(invalid(f"{name} step", step, "a step > 0"))
    if stop < start:
        raise ParameterError(invalid(f"{name} stop", stop, f"a value >= start={start}"))
    count = int(math.floor((stop - start) / step + 1e-9)) + 1
    return np.round(start + step * np.arange(count), 12)


def parse_spec(spec: str) -> tuple[str, np.ndarray]:
    """``"chi=1.0:2.5:0.01"`` -> ("chi", values), as ``mam-xr theory --atlas`` takes it."""
    name, sep, text = str(spec).partition("=")
    name = name.strip()
    if not sep or not name or not text.strip():
        raise ParameterError(invalid("atlas", spec, "NAME=start:stop:step, e.g. chi=1.0:2.5:0.01"))
    if name not in PARAMETERS:
        raise ParameterError(invalid("parameter", name, f"one of {', '.join(PARAMETERS)}"))
    return name, parse_range(text.strip(), name)


def summary(ds: xr.Dataset) -> str:
    """A few lines on an atlas: branches, folds, stability at the ends, integration."""
    name = ds.attrs["sweep_param"]
    values = ds[name].values
    lines = [f"atlas over {name} = {values[0]:g} .. {values[-1]:g} ({values.size} values): "
             f"{ds.sizes['branch']} branches, {ds.sizes['fold']} folds, "
             f"{int(ds['found'].sum())} fixed points"]
    for b in ds["branch"].values:
        found = ds["found"].sel(branch=b).values
        x = values[found]
        stable = ds["stable"].sel(branch=b).values[found]
        mean = ds["mean_rate"].sel(branch=b).values[found]
        lines.append(f"  branch {b}: {name} {x[0]:g} .. {x[-1]:g}, mean rate {mean[0]:.3f} .. "
                     f"{mean[-1]:.3f} spikes/s, stable at {int(stable.sum())} of {x.size} values")
    for f in ds["fold"].values:
        lines.append(f"  fold {f}: {name} = {float(ds[f'fold_{name}'][f]):.5f} "
                     f"(bracket {float(ds[f'fold_{name}_low'][f]):.5f} .. "
                     f"{float(ds[f'fold_{name}_high'][f]):.5f}), mean rate "
                     f"{float(ds['fold_mean_rate'][f]):.3f} spikes/s")
    reached = values[ds["integration_branch"].values >= 0]
    lines.append("  theory.integrate from zero converges onto a branch for "
                 + (f"{name} in {reached.min():g} .. {reached.max():g} "
                    f"({reached.size} of {values.size} values)" if reached.size else "no value"))
    return "\n".join(lines)


def _check_values(params, name: str, values) -> np.ndarray:
    if isinstance(values, str):
        values = parse_range(values, name)
    try:
        arr = np.unique(np.asarray(values, dtype=float).ravel())
    except (TypeError, ValueError):
        raise ParameterError(invalid(name, values, "a sequence of numbers or 'start:stop:step'")) from None
    if arr.size == 0:
        raise ParameterError(invalid(name, list(values), "at least one value"))
    if not np.all(np.isfinite(arr)):
        raise ParameterError(invalid(name, list(arr), "finite values"))
    for v in (arr[0], arr[-1]):
        try:
            params.update({name: float(v)})
        except ParameterError as exc:
            raise ParameterError(invalid(name, float(v), f"a valid value ({exc})")) from None
    if name in ("chi", "chi_I", "g") and np.any(arr == 0):
        raise ParameterError(invalid(name, 0.0, "a non-zero factor"))
    return arr


@dataclass
class _Branch:
    """A part of a curve on which the parameter changes monotonically."""

    curve: int
    xs: list            # points (ν, p) by increasing p; a fold end is a point of its own
    ts: list            # unit tangents along the curve
    fold_low: int       # fold index at the low-p end, -1 if the curve leaves the range there
    fold_high: int
    solved: dict        # grid index -> ν on this branch


@dataclass
class _Fold:
    x: np.ndarray
    t: np.ndarray
    curvature: float    # d²p/ds²
    kind: int           # +1: p has a maximum (branches exist below), -1: a minimum
    low: float = math.nan
    high: float = math.nan
    verified: bool = False


class _Atlas:
    """The computation behind :func:`atlas` (state shared between its steps)."""

    def __init__(self, params, name, grid, fam, tol, structure_at):
        self.params, self.name, self.grid, self.fam, self.tol = params, name, grid, fam, tol
        self.structure_at = structure_at
        spacing = float(np.median(np.diff(grid))) if grid.size > 1 else max(0.01 * abs(grid[0]), 0.01)
        self.spacing = spacing
        self.tracer = _Tracer(fam, spacing, grid[0] - 2 * spacing, grid[-1] + 2 * spacing, tol)
        self.branches: list[_Branch] = []
        self.folds: list[_Fold] = []
        self.curves_ended: list[list[str]] = []

    # -- curves ---------------------------------------------------------------------
    def known(self, k: int, nu: np.ndarray, rtol: float = 1e-5) -> bool:
        for b in self.branches:
            other = b.solved.get(k)
            if other is not None and np.max(np.abs(other - nu)) <= rtol * (1.0 + np.max(np.abs(nu))):
                return True
        return False

    def add_curve(self, nu: np.ndarray, p: float) -> None:
        tr = self.tracer
        up, t_up, end_up = tr.trace(nu, p, +1.0)
        down, t_down, end_down = tr.trace(nu, p, -1.0)
        xs = down[::-1] + up[1:]
        ts = [-t for t in t_down[::-1]] + t_up[1:]
        curve = len(self.curves_ended)
        self.curves_ended.append([end_down, end_up])
        # folds: the p-component of the tangent changes sign between two points
        cuts = []
        for i in range(len(xs) - 1):
            if ts[i][-1] * ts[i + 1][-1] < 0:
                r = tr.fold(xs[i], ts[i], xs[i + 1])
                if r is None:
                    continue
                x_f, t_f, curvature, _ = r
                self.folds.append(_Fold(x=x_f, t=t_f, curvature=curvature,
                                        kind=1 if ts[i][-1] > 0 else -1))
                cuts.append((i, len(self.folds) - 1))
        pieces, start, previous = [], 0, -1
        for i, fid in cuts:
            f = self.folds[fid]
            head = [] if previous < 0 else [self.folds[previous].x]
            head_t = [] if previous < 0 else [self.folds[previous].t]
            pieces.append((head + xs[start:i + 1] + [f.x], head_t + ts[start:i + 1] + [f.t],
                           previous, fid))
            start, previous = i + 1, fid
        head = [] if previous < 0 else [self.folds[previous].x]
        head_t = [] if previous < 0 else [self.folds[previous].t]
        pieces.append((head + xs[start:], head_t + ts[start:], previous, -1))
        for pxs, pts, f_first, f_last in pieces:
            if len(pxs) < 2:
                continue
            increasing = pxs[-1][-1] >= pxs[0][-1]
            if not increasing:
                pxs, pts, f_first, f_last = pxs[::-1], [-t for t in pts[::-1]], f_last, f_first
            b = _Branch(curve=curve, xs=pxs, ts=pts, fold_low=f_first, fold_high=f_last, solved={})
            self.land(b)
            if b.solved:
                self.branches.append(b)

    def land(self, b: _Branch) -> None:
        """Solve the branch at every grid value in its parameter range (Newton at fixed p
        from a cubic Hermite predictor, or the quadratic fold approximation next to a fold)."""
        ps = np.array([x[-1] for x in b.xs])
        lo = int(np.searchsorted(self.grid, ps[0], side="left"))
        hi = int(np.searchsorted(self.grid, ps[-1], side="right"))
        last = len(b.xs) - 1
        w = self.tracer.w
        for g in range(lo, hi):
            v = float(self.grid[g])
            k = int(np.clip(np.searchsorted(ps, v, side="right") - 1, 0, last - 1))
            xa, xb, ta, tb = b.xs[k], b.xs[k + 1], b.ts[k], b.ts[k + 1]
            fold = None
            if k == 0 and b.fold_low >= 0:
                fold, other = self.folds[b.fold_low], xb
            elif k + 1 == last and b.fold_high >= 0:
                fold, other = self.folds[b.fold_high], xa
            if fold is not None:
                side = 1.0 if float(np.dot(w * fold.t, other - fold.x)) >= 0 else -1.0
                s = side * math.sqrt(2.0 * abs(v - fold.x[-1]) / max(abs(fold.curvature), 1e-300))
                pred = np.maximum(fold.x[:-1] + s * fold.t[:-1], 0.0)
            else:
                h = xb[-1] - xa[-1]
                u = (v - xa[-1]) / h if h > 0 else 0.0
                da, db = ta[:-1] / ta[-1] * h, tb[:-1] / tb[-1] * h
                h00, h10 = 2 * u ** 3 - 3 * u ** 2 + 1, u ** 3 - 2 * u ** 2 + u
                h01, h11 = -2 * u ** 3 + 3 * u ** 2, u ** 3 - u ** 2
                pred = np.maximum(h00 * xa[:-1] + h10 * da + h01 * xb[:-1] + h11 * db, 0.0)
            nu, err = _newton(self.fam, pred, v, self.tol)
            gap = float(np.max(np.abs(xb[:-1] - xa[:-1])))
            ok = err <= self.tol and float(np.max(np.abs(nu - pred))) <= max(gap, 1e-6)
            if ok and fold is not None:
                y = np.concatenate([nu, [v]])
                ok = (float(np.dot(w * fold.t, y - fold.x)) >= 0) == (side > 0)
            if ok:
                b.solved[g] = nu

    # -- folds: a bracket of width <= 1e-4 -------------------------------------------------
    def bracket(self, f: _Fold, half: float = 4e-5) -> None:
        """Points on both sides of the fold at p_f ∓ ~half (two solutions exist there) and a
        check that Newton from the fold state finds no nearby solution at p_f ± half."""
        tr, p_f = self.tracer, f.x[-1]
        c = abs(f.curvature)
        inner = []
        if c > 0:
            ds = math.sqrt(2.0 * half / c)
            for side in (-1.0, 1.0):
                r = tr.correct(f.x + side * ds * f.t, f.t, maxiter=12)
                if r is not None:
                    inner.append(r[0][-1])
        outer = p_f + f.kind * half
        nu, err = _newton(self.fam, f.x[:-1], outer, self.tol, maxiter=15)
        absent = not (err <= self.tol and np.max(np.abs(nu - f.x[:-1])) < 1e-2 * (1 + np.max(f.x[:-1])))
        if len(inner) == 2 and all(abs(q - p_f) < 1e-4 for q in inner):
            edge = min(inner, key=lambda q: abs(q - p_f))      # both sides reach this value
            f.low, f.high = (edge, outer) if f.kind > 0 else (outer, edge)
            f.verified = absent and f.high - f.low <= 1e-4
        else:
            f.low, f.high = p_f - half, p_f + half


# --- the public function -------------------------------------------------------------

def atlas(params=None, *, n_random: int = 3, random_at: Sequence[float] | None = None,
          rate_max: float | None = None, seed: int | None = None, integrate_every: int = 10,
          tol: float = 1e-9, data_dir=None, **sweep) -> xr.Dataset:
    """Every fixed-point branch of the mean-field theory over one network parameter.

    Usage: ``atlas(Params(), chi=np.arange(1.0, 2.505, 0.01))`` or
    ``atlas(Params(), chi="1.0:2.5:0.01")``.

    Branches are found by pseudo-arclength continuation (which goes round folds
    onto the branch that meets it) from the fixed points reached by integration
    from zero rates (upstream's procedure, :func:`mam_xr.theory.integrate`) and
    from ``n_random`` random initial rates at the values ``random_at``; each
    branch is then solved by Newton's method at every parameter value in its
    range.  See docs/atlas.md.

    Parameters
    ----------
    params : Params, optional
        Network, neuron, simulation (areas simulated, replacement) and theory
        (dt, T) parameters; default ``Params()`` (full scale, χ = 1.9, χ_I = 2).
    **sweep
        Exactly one of ``chi``, ``chi_I``, ``g`` (dimensionless) or ``rate_ext``
        (spikes/s): a sequence of values or a ``"start:stop:step"`` string
        (stop included).  Every value must be valid for Params.
    n_random : int, default 3
        Random initial conditions (uniform in [0, rate_max] spikes/s, as
        ``theory.initial_rates="random"``) integrated at each of ``random_at``.
    random_at : sequence of float, optional
        Parameter values of the random starts (snapped to the grid); default
        the first, middle and last value.
    rate_max, seed : optional
        Of the random starts; default ``params.theory``.
    integrate_every : int, default 10
        :func:`theory.integrate` from zero rates runs at every n-th value (and
        the last), and at every value between two runs that reach different
        branches (bisection); values in between take the label of their
        neighbours (``integration_sampled`` is False there).  1 integrates at
        every value.
    tol : float, default 1e-9
        Residual max |Φ(ν) − ν| (spikes/s) of every fixed point.
    data_dir : path, optional
        Upstream's data files (see :func:`mam_xr.structure.build`).

    Returns
    -------
    xr.Dataset
        Dims (``<param>``, ``branch``, ``area``, ``pop``) and ``fold``:
        ``rate`` (spikes/s, NaN where the branch does not exist),
        ``mean_rate``, ``residual``, ``eigenvalue_max_real``,
        ``eigenvalue_max_imag``, ``stable`` (max Re λ(G) < 1), ``found``,
        ``eigenvector_area`` (share of the leading eigenvector's |v|² per
        area), ``integration_branch`` (branch reached by theory.integrate
        from zero rates, -1 none), ``integration_converged``,
        ``integration_sampled``, ``integration_distance``; per branch
        ``branch_curve``, ``branch_fold_low``, ``branch_fold_high``; per fold
        ``fold_<param>`` with the bracket ``fold_<param>_low`` /
        ``fold_<param>_high`` (width <= 1e-4), ``fold_kind`` (+1: the
        branches exist below the fold value, -1: above), ``fold_rate``,
        ``fold_mean_rate``, ``fold_verified``.  Attrs are JSON-able.

    Raises
    ------
    ParameterError
        No or several swept parameters, an unknown one, a value outside its
        valid range, a range with step <= 0, or invalid options.
    """
    if threadpool_limits is None:
        return _atlas(params, n_random, random_at, rate_max, seed, integrate_every, tol, data_dir, sweep)
    with threadpool_limits(limits=1, user_api="blas"):
        return _atlas(params, n_random, random_at, rate_max, seed, integrate_every, tol, data_dir, sweep)


def _atlas(params, n_random, random_at, rate_max, seed, integrate_every, tol, data_dir, sweep):
    from .params import Params

    t_start = time.perf_counter()
    if params is None:
        params = Params()
    if not isinstance(params, Params):
        raise ParameterError(invalid("params", type(params).__name__, "a mam_xr.params.Params or None"))
    unknown = [k for k in sweep if k not in PARAMETERS]
    if unknown:
        raise ParameterError(invalid("parameter", unknown[0], f"one of {', '.join(PARAMETERS)}"))
    if len(sweep) != 1:
        raise ParameterError(invalid("parameter", sorted(sweep),
                                     f"exactly one of {', '.join(PARAMETERS)}, e.g. chi=[1.0, 1.5]"))
    (name, values), = sweep.items()
    grid = _check_values(params, name, values)
    for opt, value, low in (("n_random", n_random, 0), ("integrate_every", integrate_every, 1)):
        if not (isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value >= low):
            raise ParameterError(invalid(opt, value, f"an integer >= {low}"))
    if not (isinstance(tol, (int, float)) and tol > 0):
        raise ParameterError(invalid("tol", tol, "a tolerance > 0 spikes/s"))

    s0 = structure_module.build(params, data_dir=data_dir)
    fam = _family(params, name, s0, lambda q: structure_module.rescale(s0, **{name: _value(q, name)},
                                                                      params=params))

    def params_at(v):
        return params.update({name: float(v)})

    def structure_at(v):
        return structure_module.rescale(s0, **{name: float(v)}, params=params)

    at = _Atlas(params, name, grid, fam, tol, structure_at)
    timings = {"setup_s": time.perf_counter() - t_start}

    # 1. integration from zero rates (upstream's procedure), at every n-th value
    t0 = time.perf_counter()
    integ: dict[int, tuple] = {}

    def integrate_at(k):
        if k not in integ:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", theory.ConvergenceWarning)
                ds = theory.integrate(structure_at(grid[k]), params_at(grid[k]), initial_rates="zero",
                                      rec_interval=params.theory.T, warn=False)
            integ[k] = (to_flat_vector(ds["rate"])[fam.dyn], bool(ds["converged"]),
                        float(np.nanmax(np.abs(ds["residual"].values))))
        return integ[k]

    labelled = sorted(set(range(0, grid.size, integrate_every)) | {grid.size - 1})
    for k in labelled:
        integrate_at(k)
    timings["integrate_s"] = time.perf_counter() - t0

    # 2. seeds: fixed points near the integration ends, then random starts
    t0 = time.perf_counter()
    seeds_tried = 0

    def add_seed(k, nu_start):
        nonlocal seeds_tried
        if at.known(k, nu_start, rtol=1e-4):
            return True
        nu, err = _newton(fam, nu_start, float(grid[k]), tol)
        if err > tol:
            return False
        if not at.known(k, nu):
            seeds_tried += 1
            at.add_curve(nu, float(grid[k]))
        return True

    first = integrate_at(0)
    if not add_seed(0, first[0]):
        # no fixed point near the end of the integration: theory.fixed_point (which
        # continues from isolated areas when the integration has not settled)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", theory.ConvergenceWarning)
            fp = theory.fixed_point(structure_at(grid[0]), params_at(grid[0]), with_gain=False, warn=False)
        add_seed(0, to_flat_vector(fp["rate"])[fam.dyn])
    for k in labelled:
        if integrate_at(k)[1]:
            add_seed(k, integrate_at(k)[0])
    timings["trace_zero_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    if n_random > 0:
        where = [grid[0], grid[grid.size // 2], grid[-1]] if random_at is None else list(random_at)
        for v in where:
            k = int(np.argmin(np.abs(grid - float(v))))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", theory.ConvergenceWarning)
                ds = theory.integrate(structure_at(grid[k]), params_at(grid[k]), initial_rates="random",
                                      n_draws=n_random, seed=_seed_value(params, seed),
                                      rate_max=rate_max, rec_interval=params.theory.T, warn=False)
            ends = to_flat_vector(ds["rate"])
            ends = ends[:, None] if ends.ndim == 1 else ends
            for d in range(ends.shape[1]):
                add_seed(k, ends[fam.dyn, d])
    timings["random_starts_s"] = time.perf_counter() - t0

    # 3. which branch the integration reaches; bisect where it changes
    t0 = time.perf_counter()

    def label(k):
        nu_T, _, _ = integrate_at(k)
        best, dist = -1, math.inf
        for i, b in enumerate(at.branches):
            other = b.solved.get(k)
            if other is not None:
                d = float(np.max(np.abs(other - nu_T)))
                if d < dist:
                    best, dist = i, d
        return best, dist

    def refine(k1, k2):
        if k2 - k1 <= 1:
            return
        def reached(k):                 # the branch a converged integration reached, else -1
            return label(k)[0] if integ[k][1] else -1

        if reached(k1) == reached(k2):
            return
        mid = (k1 + k2) // 2
        if integrate_at(mid)[1]:
            add_seed(mid, integrate_at(mid)[0])
        refine(k1, mid)
        refine(mid, k2)

    for k1, k2 in zip(labelled[:-1], labelled[1:]):
        refine(k1, k2)
    timings["labels_s"] = time.perf_counter() - t0

    # 4. fold brackets and stability
    t0 = time.perf_counter()
    for f in at.folds:
        at.bracket(f)
    timings["folds_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    ds = _dataset(at, integ, label)
    timings["stability_and_dataset_s"] = time.perf_counter() - t0
    timings["total_s"] = time.perf_counter() - t_start
    ds.attrs.update(_jsonable({
        "n_random": n_random, "random_at": None if random_at is None else [float(v) for v in random_at],
        "rate_max": params.theory.rate_max if rate_max is None else float(rate_max),
        "seed": _seed_value(params, seed), "integrate_every": int(integrate_every),
        "curves_traced": len(at.curves_ended), "curve_ends": at.curves_ended,
        "evaluations": at.tracer.evaluations, "timings": timings,
    }))
    return ds


def _seed_value(params, seed):
    return params.theory.seed if seed is None else int(seed)


def _jsonable(d: dict) -> dict:
    return json.loads(json.dumps(d, default=lambda o: o.item() if hasattr(o, "item") else str(o)))


def _grid_of(fam: _Family, values: np.ndarray) -> np.ndarray:
    """(..., n_dyn) -> (..., area, pop); replaced populations at their fixed rate."""
    lead = values.shape[:-1]
    flat = np.empty(lead + (N_POPULATIONS,))
    flat[...] = fam.fixed_rates
    flat[..., fam.dyn] = values
    ex = _EXISTS.values.ravel()
    full = np.full(lead + (ex.size,), np.nan)
    full[..., ex] = flat
    return full.reshape(lead + (len(AREAS), len(POPS)))


def _dataset(at: _Atlas, integ: dict, label) -> xr.Dataset:
    fam, grid, name = at.fam, at.grid, at.name
    nk, nb, n = grid.size, len(at.branches), fam.n
    rates = np.full((nk, nb, n), np.nan)
    residual = np.full((nk, nb), np.nan)
    lam = np.full((nk, nb), np.nan, dtype=complex)
    profile = np.full((nk, nb, len(AREAS)), np.nan)
    for j, b in enumerate(at.branches):
        ks = sorted(b.solved)
        gains = []
        for k in ks:
            nu = b.solved[k]
            phi, G, _ = fam.gain(nu, float(grid[k]))
            rates[k, j] = nu
            residual[k, j] = float(np.max(np.abs(phi - nu)))
            gains.append(G)
        for k, (lead, v) in zip(ks, _stability(gains)):
            lam[k, j] = complex(lead.real, abs(lead.imag))
            share = np.bincount(FLAT_AREA_INDEX[fam.dyn], weights=np.abs(v) ** 2, minlength=len(AREAS))
            profile[k, j] = share / share.sum()
    found = ~np.isnan(residual)
    lam_real = np.where(found, lam.real, np.nan)
    lam_imag = np.where(found, lam.imag, np.nan)
    full = _grid_of(fam, rates)
    full[~found] = np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)      # all-NaN where a branch is absent
        mean = np.nanmean(full.reshape(nk, nb, -1), axis=-1)

    nearest = np.full(nk, -1)
    converged = np.zeros(nk, bool)
    sampled = np.zeros(nk, bool)
    distance = np.full(nk, np.nan)
    done = sorted(integ)
    for k in done:
        nearest[k], distance[k] = label(k)
        converged[k] = integ[k][1]
        sampled[k] = True
    for k1, k2 in zip(done[:-1], done[1:]):   # between equal neighbours: the same branch
        if nearest[k1] == nearest[k2] and converged[k1] == converged[k2]:
            nearest[k1 + 1:k2] = nearest[k1]
            converged[k1 + 1:k2] = converged[k1]
    reached = np.where(converged, nearest, -1)

    # folds outside the range of values are not part of the atlas
    inside = [i for i, f in enumerate(at.folds) if grid[0] <= f.x[-1] <= grid[-1]]
    renumber = {old: new for new, old in enumerate(inside)}
    folds = [at.folds[i] for i in inside]
    fold_low = np.array([renumber.get(b.fold_low, -1) for b in at.branches], dtype=np.int64)
    fold_high = np.array([renumber.get(b.fold_high, -1) for b in at.branches], dtype=np.int64)
    fold_rates = _grid_of(fam, np.array([f.x[:-1] for f in folds]).reshape(len(folds), n))
    unit = "spikes/s" if name == "rate_ext" else "1"
    dims = (name, "branch")
    ds = xr.Dataset(
        {
            "rate": (dims + ("area", "pop"), full, {
                "long_name": "fixed-point rate on the branch (NaN where the branch does not exist)",
                "units": "spikes/s"}),
            "mean_rate": (dims, mean, {"long_name": "mean rate over the populations",
                                       "units": "spikes/s"}),
            "residual": (dims, residual, {"long_name": "max |Φ(ν*) − ν*|", "units": "spikes/s"}),
            "found": (dims, found, {"long_name": "the branch has a fixed point at this value",
                                    "units": "1"}),
            "eigenvalue_max_real": (dims, lam_real, {
                "long_name": "largest real part of the eigenvalues of the gain matrix G", "units": "1"}),
            "eigenvalue_max_imag": (dims, lam_imag, {
                "long_name": "|imaginary part| of that eigenvalue (pair)", "units": "1"}),
            "stable": (dims, found & (lam_real < 1.0), {
                "long_name": "linearly stable under tau dnu/dt = -nu + Phi(nu) (max Re λ(G) < 1)",
                "units": "1"}),
            "eigenvector_area": (dims + ("area",), profile, {
                "long_name": "share of the leading eigenvector's |v|^2 in each area", "units": "1"}),
            "integration_branch": ((name,), reached, {
                "long_name": "branch reached by mam_xr.theory.integrate from zero rates "
                             "(-1: the integration did not converge)", "units": "1"}),
            "integration_nearest_branch": ((name,), nearest, {
                "long_name": "branch nearest to the end state of that integration (converged or "
                             "not; -1: none)", "units": "1"}),
            "integration_converged": ((name,), converged, {
                "long_name": "that integration converged (max |Φ(ν(T)) − ν(T)| <= 1e-6 spikes/s)",
                "units": "1"}),
            "integration_sampled": ((name,), sampled, {
                "long_name": "integrated at this value (else the label of equal neighbours)",
                "units": "1"}),
            "integration_distance": ((name,), distance, {
                "long_name": "max |ν(T) − ν*| between the integration's end and the branch",
                "units": "spikes/s"}),
            "branch_curve": (("branch",), np.array([b.curve for b in at.branches], dtype=np.int64), {
                "long_name": "continuation curve the branch belongs to (branches of one curve "
                             "meet at folds)", "units": "1"}),
            "branch_fold_low": (("branch",), fold_low, {
                "long_name": f"fold at the branch's low-{name} end (-1: it leaves the range)",
                "units": "1"}),
            "branch_fold_high": (("branch",), fold_high, {
                "long_name": f"fold at the branch's high-{name} end (-1: it leaves the range)",
                "units": "1"}),
            f"fold_{name}": (("fold",), np.array([f.x[-1] for f in folds]), {
                "long_name": f"{name} at the fold (saddle-node)", "units": unit}),
            f"fold_{name}_low": (("fold",), np.array([f.low for f in folds]), {
                "long_name": "lower end of the fold's bracket", "units": unit}),
            f"fold_{name}_high": (("fold",), np.array([f.high for f in folds]), {
                "long_name": "upper end of the fold's bracket", "units": unit}),
            "fold_kind": (("fold",), np.array([f.kind for f in folds], dtype=np.int64), {
                "long_name": f"+1: the two branches exist below the fold's {name}, -1: above",
                "units": "1"}),
            "fold_verified": (("fold",), np.array([f.verified for f in folds], dtype=bool), {
                "long_name": "two solutions found on the inner end of the bracket and none near the "
                             "fold state on its outer end", "units": "1"}),
            "fold_rate": (("fold", "area", "pop"), fold_rates, {
                "long_name": "rates at the fold", "units": "spikes/s"}),
            "fold_mean_rate": (("fold",), np.nanmean(fold_rates.reshape(len(folds), -1), axis=-1)
                               if folds else np.zeros(0),
                               {"long_name": "mean rate at the fold", "units": "spikes/s"}),
        },
        coords={
            name: ((name,), grid, {"long_name": f"swept parameter {name}", "units": unit}),
            "branch": np.arange(nb), "fold": np.arange(len(folds)),
            "area": list(AREAS), "pop": list(POPS),
            "exists": (("area", "pop"), _EXISTS.values.copy(), dict(_EXISTS.attrs)),
        })
    p = at.params
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    ds.attrs = _jsonable({
        "title": f"mean-field fixed-point atlas over {name}",
        "sweep_param": name, "params": p.to_json(), "params_label": p.label(),
        "tol": at.tol,
        "method": "pseudo-arclength continuation of Phi(nu) - nu = 0 in (nu, parameter) with a "
                  "bordered Newton corrector from the fixed points reached by theory.integrate "
                  "from zero and random rates; branches = monotone pieces between folds; every "
                  "value solved by Newton; stability from the eigenvalues of the gain matrix; "
                  "see docs/atlas.md",
        "mam_xr_version": __version__,
        "history": f"[{now}] mam_xr.atlas.atlas ({name} {grid[0]}..{grid[-1]}, {grid.size} values; "
                   f"params label {p.label()}) - mam_xr version {__version__}",
    })
    return ds


# --- the model's own full-scale rates -------------------------------------------------------

def fullscale_fixed_point(params, data_dir=None) -> xr.Dataset:
    """The full-scale mean-field fixed point of the same network parameters.

    Used for ``network.fullscale_rates="theory"``: the DC drive of a down-scaled
    network compensates the input of the full-scale network at these rates, so
    they are a fixed point of the down-scaled theory by construction.  The branch
    is the one reached from zero rates: :func:`mam_xr.theory.fixed_point` started
    from :func:`mam_xr.theory.integrate` (upstream's procedure: T = 50 ms,
    dt = 0.1 ms, zero initial rates), or, where that integration does not settle,
    from the fixed point continued in the cortico-cortical coupling from isolated
    areas (at the default χ = 1.9 this is the low-activity branch, 3.64 spikes/s).

    Parameters
    ----------
    params : Params or NetworkParams
        Only the network part is used, at scale 1 (all 32 areas, theory defaults).

    Returns
    -------
    xr.Dataset
        The :func:`theory.fixed_point` Dataset (``rate`` (area, pop) in spikes/s,
        ``stable``, ``eigenvalue_max_real``, ``converged``, ...); attrs ``branch``
        says how the branch was chosen.

    Raises
    ------
    ParameterError
        If no fixed point is found to 1e-9 spikes/s.
    """
    from .params import NetworkParams, Params

    net = params.network if isinstance(params, Params) else params
    if not isinstance(net, NetworkParams):
        raise ParameterError(invalid("params", type(params).__name__, "a Params or NetworkParams"))
    values = net.model_dump()
    values.update(scale=1.0, neuron_scaling=None, indegree_scaling=None, fullscale_rates=None)
    full = Params.from_dict({"network": values})
    s = structure_module.build(full, data_dir=data_dir)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", theory.ConvergenceWarning)
        fp = theory.fixed_point(s, full, initial_rates="zero", with_gain=False, warn=False)
    if not bool(fp["converged"]):
        raise ParameterError(invalid("fullscale_rates", "theory", "parameters whose full-scale theory "
                                     "has a fixed point reached from zero rates (none found to 1e-9 "
                                     "spikes/s); give a rates JSON instead"))
    fp.attrs["branch"] = ("reached from zero rates: theory.fixed_point from theory.integrate "
                          "(T = 50 ms, dt = 0.1 ms); where that does not settle, continuation in "
                          "the cortico-cortical coupling from isolated areas")
    fp.attrs["fullscale_params_label"] = full.label()
    return fp
