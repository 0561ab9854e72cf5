"""The mean-field system of a structure: inputs μ, σ as functions of the rates.

Every population is a rate unit whose input mean μ and standard deviation σ
follow from the indegrees K, couplings J, the rates of all populations, the
external Poisson drive and the DC drive (docs/theory.md, "Maths"):

    μ_i = τ_m [Σ_j K_ij J_ij ν_j + K_i,ext J_i,ext ν_ext] + (τ_m/C_m) I_DC,i,
    σ_i² = τ_m [Σ_j K_ij J_ij² ν_j + K_i,ext J_i,ext² ν_ext]   (τ_m in s inside the brackets).

:class:`System` holds this map on the flat 254-population view
(:mod:`mam_xr.flat`); populations of non-simulated areas are removed from the
dynamic system and enter as fixed sources.  Also here: the choice of
parameters, rates input, labelled output and the result attrs shared by the
solvers.  Public: :func:`input_statistics`, :func:`replacement_rates`.
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import json
import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import xarray as xr

try:  # optional: keeps BLAS single-threaded inside the theory (see single_threaded)
    from threadpoolctl import ThreadpoolController as _ThreadpoolController
except ImportError:  # pragma: no cover
    _ThreadpoolController = None

from .. import __version__
from .. import data
from ..errors import ParameterError, invalid
from ..flat import (AREAS, FLAT_AREA, N_POPULATIONS, exists, from_flat_vector, population_labels,
                    to_flat_matrix, to_flat_vector)
from ..params import Params
from ..rates import rates_vector  # one reader of rates for the theory and the structure
from .siegert import CUTOFF_SIGMAS, Neuron, siegert

__all__ = ["input_statistics", "replacement_rates", "System", "TAU_RATE_MS", "single_threaded",
           "params_of", "neuron_of", "rates_vector", "flat_model", "system_of", "assemble",
           "settings", "check_structure", "check_rate_ext", "labelled", "simulated_coord",
           "history", "jsonable", "common_attrs", "POP_AREA", "FLAT_CC", "EXISTS_FLAT",
           "EXISTS_ATTRS", "SIMULATED_ATTRS", "STATIONARY_MODES", "REPLACE_MODES"]

#: Time constant of the rate pseudo-dynamics (ms), upstream's siegert_neuron ``tau``.
TAU_RATE_MS = 1.0

#: Replacement modes the theory handles (stationary Poisson sources).
STATIONARY_MODES = ("hom_poisson_stat", "het_poisson_stat")


_CONTROLLER = []     # one ThreadpoolController, made at the first call (inspecting the
                     # loaded libraries takes ~2 ms, too much to repeat on every call)


def single_threaded(function):
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


@dataclass(frozen=True)
class System:
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
    nrn: Neuron

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
        return siegert(mu, sigma, self.nrn)

    def gain(self, rates: np.ndarray, held_shift: bool = False):
        """Φ(ν) and G_ij = ∂Φ_i/∂ν_j = S_i A_ij + T_i B_ij (docs/theory.md)."""
        mu, sigma = self.mu_sigma(rates)
        phi, dmu, dsig = siegert(mu, sigma, self.nrn, derivatives=True, held_shift=held_shift)
        with np.errstate(divide="ignore", invalid="ignore"):
            dvar = np.where(sigma > 0, dsig / (2.0 * sigma), 0.0)
        return phi, dmu[:, None] * self.A + dvar[:, None] * self.B


def params_of(params, structure: xr.Dataset | None = None):
    """The Params to use: given, else those stored with the structure (attrs["params"],
    written by mam_xr.structure.build), else ``Params()`` (upstream's defaults)."""
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


def replacement_rates(params=None, source=None) -> np.ndarray:
    """Rates (254, spikes/s) that replace non-simulated areas (docs/theory.md, "Integration").

    ``hom_poisson_stat``: every source fires at ``rate_ext``;
    ``het_poisson_stat``: ``source`` (a rates JSON path, mapping, DataArray
    or 254-vector), default ``params.simulation.replace_cc_input_source``,
    and if that is None the pinned upstream ``fullscale_rates.json``.
    """
    p = params_of(params)
    mode = p.simulation.replace_non_simulated_areas
    if mode == "hom_poisson_stat":
        return np.full(N_POPULATIONS, p.network.input.rate_ext)
    if source is None:
        source = p.simulation.replace_cc_input_source
    if source is None:
        source = data.fetch("fullscale_rates.json")
    return rates_vector(source, "replace_cc_input_source")


def flat_model(structure: xr.Dataset) -> dict:
    """K, J (254 x 255, external last) and the DC drive (254, pA) of the existing
    populations; a NaN or infinite entry (or a negative indegree) is an error."""
    check_structure(structure)
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


def system_of(structure: xr.Dataset, params=None, *, neuron: Neuron | None = None,
            rate_ext: float | None = None, areas_simulated: Sequence[str] | None = None,
            replace: str | None = None, replacement=None) -> System:
    """Flat mean-field system of a structure Dataset (docs/theory.md, "Maths")."""
    return assemble(flat_model(structure), params, neuron=neuron, rate_ext=rate_ext,
                     areas_simulated=areas_simulated, replace=replace, replacement=replacement)


def assemble(model: dict, params=None, *, neuron: Neuron | None = None,
              rate_ext: float | None = None, areas_simulated: Sequence[str] | None = None,
              replace: str | None = None, replacement=None) -> System:
    p = params_of(params)
    nrn = neuron if neuron is not None else neuron_of(p)
    rate_ext = p.network.input.rate_ext if rate_ext is None else check_rate_ext(rate_ext)
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
    sim = np.isin(POP_AREA, areas)
    fixed = np.full(N_POPULATIONS, np.nan)
    if sim.all():
        return System(A=tau_m_s * KJ, B=tau_m_s * KJ2, mu0=mu0, var0=var0,
                       dyn=np.arange(N_POPULATIONS), fixed_rates=fixed, nrn=nrn)
    if replace not in STATIONARY_MODES:
        raise ParameterError(invalid(
            "replace_non_simulated_areas", replace,
            f"one of {', '.join(STATIONARY_MODES)} for the theory of a subset of areas "
            "(het_current_nonstat has no stationary mean-field counterpart)"))
    nu = replacement
    if nu is None:
        nu = np.full(N_POPULATIONS, rate_ext) if replace == "hom_poisson_stat" \
            else replacement_rates(p.update({"simulation": {"replace_non_simulated_areas": replace}}))
    nu = np.asarray(nu, float)
    # Replaced sources: Poisson input of fixed rate, same K and mean J.
    mu0 = mu0 + tau_m_s * KJ[:, ~sim] @ nu[~sim]
    var0 = var0 + tau_m_s * KJ2[:, ~sim] @ nu[~sim]
    fixed[~sim] = nu[~sim]
    dyn = np.flatnonzero(sim)
    return System(A=tau_m_s * KJ[np.ix_(dyn, dyn)], B=tau_m_s * KJ2[np.ix_(dyn, dyn)],
                   mu0=mu0[dyn], var0=var0[dyn], dyn=dyn, fixed_rates=fixed, nrn=nrn)


#: Area of each of the 254 flat populations, and where a pair (target, source) is cortico-cortical.
POP_AREA = FLAT_AREA
FLAT_CC = POP_AREA[:, None] != POP_AREA[None, :]
EXISTS_FLAT = exists().values.ravel()
EXISTS_ATTRS = dict(exists().attrs)
SIMULATED_ATTRS = {"long_name": "population belongs to a simulated area "
                                 "(else its rate is the fixed replacement rate)", "units": "1"}


def check_structure(structure) -> None:
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
REPLACE_MODES = ("hom_poisson_stat", "het_poisson_stat", "het_current_nonstat")


def check_rate_ext(rate_ext) -> float:
    try:
        value = float(rate_ext)
    except (TypeError, ValueError):
        raise ParameterError(invalid("rate_ext", rate_ext, "a rate >= 0 spikes/s")) from None
    if not (math.isfinite(value) and value >= 0):
        raise ParameterError(invalid("rate_ext", rate_ext, "a finite rate >= 0 spikes/s"))
    return value


def settings(params, areas_simulated, replace, replacement, structure=None):
    p = params_of(params, structure)
    if areas_simulated is None:
        areas_simulated = p.simulation.areas_simulated
    if isinstance(areas_simulated, str):
        areas_simulated = (areas_simulated,)
    if replace is not None and replace not in REPLACE_MODES:
        raise ParameterError(invalid("replace", replace, f"one of {', '.join(REPLACE_MODES)}"))
    if replace is None:
        replace = p.simulation.replace_non_simulated_areas
    if replacement is not None:
        replacement = rates_vector(replacement, "replacement_rates")
    elif len(tuple(areas_simulated)) < len(AREAS) and replace == "het_poisson_stat":
        replacement = replacement_rates(p.update(
            {"simulation": {"replace_non_simulated_areas": replace}}))
    return p, tuple(areas_simulated), replace, replacement


def input_statistics(structure: xr.Dataset, rates, params=None, *, rate_ext: float | None = None,
                     areas_simulated: Sequence[str] | None = None, replace: str | None = None,
                     replacement_rates=None) -> xr.Dataset:
    """Mean μ and SD σ of the input of every population (docs/theory.md, "Maths").

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
    p, areas, replace, repl = settings(params, areas_simulated, replace, replacement_rates, structure)
    system = system_of(structure, p, rate_ext=rate_ext, areas_simulated=areas, replace=replace,
                     replacement=repl)
    nu = rates_vector(rates, "rates")[system.dyn]
    mu, sigma = system.mu_sigma(nu)
    ds = xr.Dataset({"mu": labelled(system, mu, "mean input μ", "mV"),
                     "sigma": labelled(system, sigma, "input SD σ", "mV")})
    return ds.assign_coords(exists=exists())


# --- labelled output helpers -----------------------------------------------------

def labelled(system: System, values: np.ndarray, long_name: str, units: str,
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


def simulated_coord(system: System) -> xr.DataArray:
    sim = np.zeros(N_POPULATIONS, bool)
    sim[system.dyn] = True
    da = from_flat_vector(sim, fill=False).astype(bool)
    return da.assign_attrs(**SIMULATED_ATTRS)


def history(function: str, p, label: str | None = None) -> str:
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    label = p.label() if label is None else label
    return f"[{now}] mam_xr.theory.{function} (params label {label}) - mam_xr version {__version__}"


def jsonable(d: dict) -> dict:
    """Attrs that survive ``to_zarr``: plain str/int/float/bool/list/None."""
    return json.loads(json.dumps(d, default=lambda o: o.item() if hasattr(o, "item") else str(o)))


def common_attrs(p, nrn: Neuron, system: System, rate_ext: float, replace) -> dict:
    return {
        "tau_m_ms": nrn.tau_m, "tau_s_ms": nrn.tau_s, "t_ref_ms": nrn.t_ref,
        "theta_mV": nrn.theta, "V_r_mV": nrn.V_r, "C_m_pF": nrn.C_m,
        "tau_rate_ms": TAU_RATE_MS, "rate_ext": rate_ext, "cutoff_sigmas": CUTOFF_SIGMAS if nrn.cutoff else None,
        "transfer_function": "Siegert with colored-noise shift (Fourcaud & Brunel 2002), "
                             "docs/theory.md",
        "areas_simulated": [a for a in AREAS if a in set(POP_AREA[system.dyn])],
        "replace_non_simulated_areas": replace if len(system.dyn) < N_POPULATIONS else None,
        "params_label": p.label(),
        "mam_xr_version": __version__,
    }


def neuron_of(params=None, **overrides) -> Neuron:
    """Neuron constants from ``params.network.neuron`` (or upstream defaults)."""
    n = params_of(params).network.neuron
    values = dict(tau_m=n.tau_m, tau_s=n.tau_syn_ex, t_ref=n.t_ref, theta=n.V_th - n.E_L,
                  V_r=n.V_reset - n.E_L, C_m=n.C_m)
    for key, value in overrides.items():
        if value is not None:
            values[key] = float(value)
    return Neuron(**values)
