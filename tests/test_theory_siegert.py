"""The transfer function of mam_xr.theory.siegert against independent quadratures and NEST's values."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import xarray as xr
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.integrate import quad

from mam_xr import theory
from mam_xr.errors import ParameterError

#: √2 |ζ(1/2)| (Fourcaud & Brunel 2002), typed in independently of the module.
ALPHA = 2.0652531522312172


# --- an independent, slow transfer function ---------------------------------------

def slow_phi(mu, sigma, tau_m=10.0, tau_s=0.5, t_ref=2.0, theta=15.0, V_r=0.0):
    """Φ = 1/(τ_ref + τ_m ∫₀^∞ e^{−u²}(e^{2y_θu} − e^{2y_ru})/u du) by adaptive quadrature
    (the other representation of the Siegert integral, with e^{y_θ²} factored out if y_θ > 0)."""
    c = 0.5 * ALPHA * math.sqrt(tau_s / tau_m)
    y_th, y_r = (theta - mu) / sigma + c, (V_r - mu) / sigma + c
    if y_th > 26.0:
        return 0.0   # Φ < e^{-676}: below what the slow formula represents
    if y_th > 0:
        def f(u):
            return 2 * (y_th - y_r) * math.exp(-y_th ** 2) if u == 0 else \
                math.exp(-(u - y_th) ** 2) * -math.expm1(2 * (y_r - y_th) * u) / u
        lead = math.exp(y_th ** 2)
    else:
        def f(u):
            return 2 * (y_th - y_r) if u == 0 else \
                math.exp(-u * u + 2 * y_th * u) * -math.expm1(2 * (y_r - y_th) * u) / u
        lead = 1.0
    top = max(y_th, 0.0) + 40.0
    integral = quad(f, 0, top, epsabs=0, epsrel=1e-13, limit=500,
                    points=[max(y_th, 0.0)] if 0 < y_th < top else None)[0]
    return 1e3 / (t_ref + tau_m * lead * integral)


# --- transfer function ------------------------------------------------------------

def test_transfer_matches_spec_test_vectors():
    mu = np.array([5.0, 10, 14, 16, 20, 30, -5, 12])
    sigma = np.array([3.0, 5, 2, 2, 4, 5, 10, 1])
    # Reference values of the model's specification, given to 5 significant digits.
    expected = [5.847e-4, 11.657, 18.824, 35.443, 62.777, 109.721, 0.77167, 5.0458e-3]
    np.testing.assert_allclose(theory.transfer(mu, sigma), expected, rtol=1e-4)


@pytest.mark.parametrize("mu", [-40.0, -5.0, 0.0, 5.0, 10.0, 14.0, 15.0, 16.0, 20.0, 30.0, 80.0])
def test_transfer_matches_slow_quadrature(mu):
    sigmas = np.array([0.3, 1.0, 2.0, 5.0, 10.0, 30.0, 100.0])
    fast = theory.transfer(np.full(sigmas.shape, mu), sigmas, cutoff=False)
    slow = np.array([slow_phi(mu, s) for s in sigmas])
    finite = slow > 1e-280   # below that the slow formula underflows
    np.testing.assert_allclose(fast[finite], slow[finite], rtol=1e-9)


def test_transfer_is_stable_at_extreme_arguments():
    mu = np.array([-1e4, -50.0, 15.0, 15.0 + 1e-9, 40.0, 40.0, 1e4, 20.0, 20.0])
    sigma = np.array([1.0, 1e-6, 1e-8, 1e-12, 1e-10, 0.0, 1e3, 1e5, 0.0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")          # no overflow / invalid-value warnings
        with np.errstate(over="raise", invalid="raise", divide="raise", under="ignore"):
            phi = theory.transfer(mu, sigma, cutoff=False)
    assert np.all(np.isfinite(phi)) and np.all(phi >= 0)
    # σ -> 0 above threshold: the deterministic LIF rate 1/(t_ref + τ_m ln((μ−V_r)/(μ−θ))).
    lif = 1e3 / (2.0 + 10.0 * math.log(40.0 / 25.0))
    np.testing.assert_allclose(phi[[4, 5]], lif, rtol=1e-9)
    np.testing.assert_allclose(phi[8], 1e3 / (2.0 + 10.0 * math.log(20.0 / 5.0)), rtol=1e-12)
    assert phi[0] == 0.0 and phi[1] == 0.0
    assert phi[6] < 500.0   # bounded by 1/t_ref


@pytest.mark.parametrize("cutoff", [True, False])
def test_transfer_nan_entries_do_not_affect_the_others(cutoff):
    # One NaN among entries in every branch (both boundaries positive, mixed, negative,
    # beyond the antiderivative table, σ = 0): NaN there, the same values elsewhere.
    mu = np.array([np.nan, -14.0, 10.0, 30.0, 40.0, 20.0, 14.0])
    sigma = np.array([3.0, 42.0, 5.0, 5.0, 0.5, 0.0, 0.1])
    with np.errstate(invalid="ignore"):
        together = theory.transfer(mu, sigma, cutoff=cutoff)
    alone = np.array([theory.transfer(m, s, cutoff=cutoff) for m, s in zip(mu[1:], sigma[1:])])
    assert np.isnan(together[0]) or together[0] == 0.0   # (no cutoff: non-finite μ gives 0)
    np.testing.assert_array_equal(together[1:], alone)


def test_transfer_cutoff_as_nest():
    # θ − μ > 6σ gives exactly 0 with the cutoff, a tiny positive rate without.
    assert theory.transfer(2.0, 2.0) == 0.0
    assert 0.0 < theory.transfer(2.0, 2.0, cutoff=False) < 1e-6


def test_transfer_keeps_dataarray_dims():
    mu = xr.DataArray([10.0, 20.0], dims="x")
    out = theory.transfer(mu, 5.0)
    assert out.dims == ("x",) and out.attrs["units"] == "spikes/s"


@pytest.mark.parametrize("held_shift", [False, True])
def test_transfer_derivatives_match_finite_differences(held_shift):
    mu = np.array([-3.0, 8.0, 14.0, 16.0, 25.0, 40.0])
    sigma = np.array([12.0, 4.0, 2.0, 3.0, 7.0, 1.5])
    phi, dmu, dvar = theory.transfer_derivatives(mu, sigma, held_shift=held_shift)
    h = 1e-5
    num_mu = (theory.transfer(mu + h, sigma) - theory.transfer(mu - h, sigma)) / (2 * h)
    np.testing.assert_allclose(dmu, num_mu, rtol=1e-6)
    if held_shift:
        # Upstream's derivative: the shift σ c stays fixed in mV: move θ and
        # V_r by −(σ' − σ) c while σ varies.
        c = 0.5 * ALPHA * math.sqrt(0.05)

        def phi_held(ds):
            return np.array([theory.transfer(m, s + ds, theta=15.0 - ds * c, V_r=-ds * c)
                             for m, s in zip(mu, sigma)])
        num_sigma = (phi_held(h) - phi_held(-h)) / (2 * h)
    else:
        num_sigma = (theory.transfer(mu, sigma + h) - theory.transfer(mu, sigma - h)) / (2 * h)
    np.testing.assert_allclose(dvar, num_sigma / (2 * sigma), rtol=1e-6)


# --- property-based checks of the transfer function (hypothesis) -------------------------

#: Small, reproducible budgets: the CI suite must stay quick.
quick = settings(max_examples=60, deadline=None, derandomize=True)


def quad_phi(mu, sigma, tau_m=10.0, tau_s=0.5, t_ref=2.0, theta=15.0, V_r=0.0):
    """Φ by direct adaptive quadrature of the Siegert integral with the colored-noise shift,
    1/(t_ref + τ_m √π ∫_{y_r}^{y_θ} e^{u²}(1 + erf u) du), with 1 + erf u = erfc(−u) so
    that the integrand keeps its relative precision for u < 0 (valid for |y| < 26)."""
    c = 0.5 * ALPHA * math.sqrt(tau_s / tau_m)
    y_th, y_r = (theta - mu) / sigma + c, (V_r - mu) / sigma + c
    integral = quad(lambda u: math.exp(u * u) * math.erfc(-u), y_r, y_th, epsabs=0,
                    epsrel=1e-13, limit=400)[0]
    return 1e3 / (t_ref + tau_m * math.sqrt(math.pi) * integral)


@quick
@given(mu=st.floats(-20.0, 45.0), sigma=st.floats(2.0, 60.0), tau_s=st.floats(0.05, 2.0),
       t_ref=st.floats(0.5, 4.0))
def test_transfer_equals_direct_quadrature(mu, sigma, tau_s, t_ref):
    fast = float(theory.transfer(mu, sigma, tau_s=tau_s, t_ref=t_ref, cutoff=False))
    assert fast == pytest.approx(quad_phi(mu, sigma, tau_s=tau_s, t_ref=t_ref), rel=1e-9, abs=0)


extreme_mu = st.floats(-1e4, 1e4)
extreme_sigma = st.one_of(st.just(0.0), st.floats(1e-12, 1e4))


@quick
@given(mu=st.lists(extreme_mu, min_size=1, max_size=20), sigma=extreme_sigma,
       t_ref=st.floats(0.1, 5.0), cutoff=st.booleans())
def test_transfer_is_finite_nonnegative_and_bounded(mu, sigma, t_ref, cutoff):
    phi = theory.transfer(np.array(mu), sigma, t_ref=t_ref, cutoff=cutoff)
    assert phi.shape == (len(mu),)
    assert np.all(np.isfinite(phi)) and np.all(phi >= 0)
    assert np.all(phi <= 1e3 / t_ref * (1 + 1e-12))          # at most one spike per t_ref


@quick
@given(mu=st.floats(-100.0, 200.0), step=st.floats(1e-6, 50.0),
       sigma=st.one_of(st.just(0.0), st.floats(1e-3, 200.0)), cutoff=st.booleans())
def test_transfer_is_monotone_in_mu(mu, step, sigma, cutoff):
    lo, hi = theory.transfer(np.array([mu, mu + step]), sigma, cutoff=cutoff)
    assert hi >= lo * (1 - 1e-13)


def test_transfer_rejects_bad_neuron_parameters():
    with pytest.raises(ParameterError, match=r"tau_m=-1\.0 is invalid: expected"):
        theory.transfer(1.0, 1.0, tau_m=-1.0)
    with pytest.raises(ParameterError, match=r"theta=0\.0 is invalid: expected a threshold above"):
        theory.transfer(1.0, 1.0, theta=0.0)
