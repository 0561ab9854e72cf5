"""Smoothing of binned spike counts: Gaussian kernels and the Shimazaki-Shinomoto bandwidth.

Used by the ``smoothed_rate`` statistic (docs/model.md, "Analysis statistics").
"""

from __future__ import annotations

import numpy as np

__all__ = ["ss_cost_sigma", "gauss_smooth"]


def ss_cost_sigma(counts: np.ndarray, bin_ms: float) -> tuple[np.ndarray, np.ndarray]:
    """Shimazaki-Shinomoto (2010) optimal fixed Gaussian bandwidth per row of binned counts.

    Cost C(w) = Σ_{i,j} k_{√2 w}(t_i - t_j) - 2 Σ_{i≠j} k_w(t_i - t_j) with the
    spikes placed at their bin centres, evaluated through the autocorrelation of
    the counts on a log grid of w from one bin to a quarter of the window.
    Returns (sigma_ms per row, the grid).
    """
    from scipy import fft

    R, B = counts.shape
    nfft = fft.next_fast_len(2 * B, real=True)
    f = fft.rfft(counts, nfft, axis=1, workers=-1)
    f *= np.conj(f)
    A = np.rint(fft.irfft(f, nfft, axis=1, workers=-1)[:, :B])   # A[d] = Σ_b c_b c_{b+d}, integers
    A[:, 1:] *= 2.0                                                 # lags d and -d
    n = counts.sum(axis=1)
    grid = bin_ms * np.logspace(0, np.log10(max(B / 4.0, 1.0)), 64)
    lag = bin_ms * np.arange(B)

    def gauss(s):
        e = lag[None, :] ** 2 / (2 * s[:, None] ** 2)
        # exact zeros instead of denormals (which slow the matrix product down)
        return np.where(e < 700.0, np.exp(-np.minimum(e, 700.0)), 0.0) / (np.sqrt(2 * np.pi) * s[:, None])

    k1, k2 = gauss(grid), gauss(np.sqrt(2) * grid)                  # (W, B)
    # Σ_ij k2 - 2 Σ_i≠j k1 = A·k2 - 2 (A·k1 - n k1(0))
    cost = A @ (k2 - 2.0 * k1).T + 2.0 * n[:, None] * k1[:, 0][None, :]   # (R, W)
    best = grid[np.argmin(cost, axis=1)]
    return np.where(n > 1, best, np.nan), grid


def gauss_smooth(counts: np.ndarray, sigma_bins: np.ndarray) -> np.ndarray:
    """Gaussian smoothing per row (SD ``sigma_bins`` in bins), edge-corrected.

    Each row is convolved with a unit-sum Gaussian sampled at the bins and
    truncated at ±5 SD (at most the window), zero outside the window, and
    divided by the kernel mass that falls inside the window.  All rows at once
    through one real FFT.
    """
    from scipy import fft

    R, B = counts.shape
    out = np.full(counts.shape, np.nan)
    ok = np.isfinite(sigma_bins) & (sigma_bins > 0)
    if not ok.any():
        return out
    s = sigma_bins[ok]
    half = np.minimum(np.ceil(5 * s), B - 1).astype(int)
    H = int(half.max())
    u = np.arange(-H, H + 1)
    ker = np.exp(-u[None, :] ** 2 / (2 * s[:, None] ** 2)) * (np.abs(u)[None, :] <= half[:, None])
    ker /= ker.sum(axis=1, keepdims=True)
    n = fft.next_fast_len(B + 2 * H, real=True)
    num = fft.irfft(fft.rfft(counts[ok], n, axis=1, workers=-1) * fft.rfft(ker, n, axis=1, workers=-1),
                    n, axis=1, workers=-1)[:, H:H + B]
    # kernel mass inside the window at bin i: Σ ker[u] over -i <= u <= B-1-i
    cum = np.concatenate([np.zeros((len(s), 1)), np.cumsum(ker, axis=1)], axis=1)
    i = np.arange(B)
    hi = np.clip(B - 1 - i + H, -1, 2 * H) + 1
    lo = np.clip(-i + H, 0, 2 * H + 1)
    out[ok] = num / (cum[:, hi] - cum[:, lo])
    return out
