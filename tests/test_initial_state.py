"""simulation.initial_state: initial potentials drawn near a rate state, in both engines."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

from mam_xr import structure, theory
from mam_xr.errors import ParameterError
from mam_xr.flat import AREAS, POPS, from_flat_vector, to_flat_vector
from mam_xr.network import (V0_MARGIN, NetworkPlan, draw_connectivity, initial_potentials, input_moments,
                            stationary_potential)
from mam_xr.params import Params
from mam_xr.simulation import simulate


def test_stationary_potential_against_the_free_membrane_and_monte_carlo():
    # far below threshold the density is the free membrane's N(mu, sigma^2 / 2)
    mean, sd = stationary_potential(-5.0, 2.0, theta=15.0, V_r=0.0)
    assert float(mean) == pytest.approx(-5.0, abs=1e-3) and float(sd) == pytest.approx(2.0 / np.sqrt(2), rel=1e-3)
    # near and above threshold: Euler-Maruyama of tau dV/dt = -V + mu + sigma sqrt(tau) xi with reset
    # (20000 neurons, dt 0.01 ms, samples from 200 to 400 ms) gave these means and SDs
    mean, sd = stationary_potential(np.array([10.0, 14.0, 20.0]), np.array([3.0, 3.0, 5.0]), theta=15.0, V_r=0.0)
    np.testing.assert_allclose(mean, [9.354, 9.449, 7.918], atol=0.06)
    np.testing.assert_allclose(sd, [2.381, 3.646, 4.133], atol=0.04)
    # no noise: the potential sits at min(mu, theta)
    mean, sd = stationary_potential(np.array([5.0, 25.0]), 0.0, theta=15.0, V_r=0.0)
    np.testing.assert_array_equal(mean, [5.0, 15.0])
    np.testing.assert_array_equal(sd, [0.0, 0.0])


def _theory_rates_json(tmp_path):
    """The down-scaled tutorial network's own mean-field fixed point, as a rates JSON file."""
    p = Params.tutorial()
    s = structure.build(p)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        nu = theory.fixed_point(s, p, warn=False, with_gain=False)["rate"]
    path = tmp_path / "theory.json"
    path.write_text(json.dumps({a: {q: float(nu.sel(area=a, pop=q)) for q in POPS
                                    if np.isfinite(float(nu.sel(area=a, pop=q)))} for a in AREAS}))
    return path, s, to_flat_vector(nu)


def test_plan_holds_the_initial_potentials(tmp_path):
    path, s, nu = _theory_rates_json(tmp_path)
    p = Params.tutorial(initial_state=str(path))
    plan = NetworkPlan(p, s)
    np.testing.assert_allclose(plan.initial_rates, nu, rtol=1e-12)
    mu, sigma = input_moments(p, s, plan.initial_rates)
    mean, sd = initial_potentials(p, s, plan.initial_rates)
    np.testing.assert_array_equal(plan.v0_mean, mean)
    nrn = p.network.neuron
    assert plan.v0_max == nrn.V_th - V0_MARGIN
    assert np.all(plan.v0_mean < nrn.V_th) and np.all(plan.v0_sd > 0)
    # the input statistics are the mean-field theory's at those rates
    stats = theory.input_statistics(s, from_flat_vector(nu).transpose("area", "pop"), p)
    np.testing.assert_allclose(mu, to_flat_vector(stats["mu"]), rtol=0, atol=1e-12)
    np.testing.assert_allclose(sigma, to_flat_vector(stats["sigma"]), rtol=0, atol=1e-12)
    # V1 23E: input mean 12.47 mV below E_L, SD 27.87 mV (weights J / sqrt(0.005) at scale 0.005)
    # -> V0 ~ -82.73 +- 15.98 mV (rest -65 mV, threshold -50 mV)
    assert (float(mu[0]), float(sigma[0])) == pytest.approx((-12.465, 27.869), abs=1e-3)
    assert (float(plan.v0_mean[0]), float(plan.v0_sd[0])) == pytest.approx((-82.728, 15.984), abs=1e-3)
    conn = plan.draw_connectivity(seed=1, V0_mean=-150.0, V0_sd=50.0)
    assert float(conn.v0.max()) <= plan.v0_max
    first = np.concatenate([[0], np.cumsum(plan.n)])
    v1_23e = conn.v0[first[0]:first[1]]
    assert float(v1_23e.mean()) == pytest.approx(-82.73, abs=1.5)   # 236 neurons
    # without an initial state the plan draws V0 ~ N(V0_mean, V0_sd) as before
    base = NetworkPlan(Params.tutorial(), s)
    assert base.v0_mean is None and base.initial_rates is None
    np.testing.assert_array_equal(base.draw_connectivity(seed=1, V0_mean=-150.0, V0_sd=50.0).v0,
                                  draw_connectivity(s, p.simulation.areas_simulated, dt=0.1, seed=1,
                                                    V0_mean=-150.0, V0_sd=50.0).v0)


def test_initial_state_refusals(tmp_path):
    s = structure.build(Params.tutorial())
    with pytest.raises(ParameterError, match=r"simulation.initial_state='.*missing.json' is invalid: expected "
                       r"'fullscale' or an existing rates JSON file or mam_xr run store"):
        NetworkPlan(Params.tutorial(initial_state=str(tmp_path / "missing.json")), s)
    partial = tmp_path / "partial.json"
    partial.write_text(json.dumps({"V1": {"23E": 1.0}}))
    with pytest.raises(ParameterError, match=r"simulation.initial_state='.*partial.json' is invalid: expected "
                       r"a finite rate >= 0 spikes/s for every simulated population \(found nan for V1-23I\)"):
        NetworkPlan(Params.tutorial(initial_state=str(partial)), s)
    full = Params.tutorial(scale=1.0, fullscale_rates=None, initial_state="fullscale", areas_simulated=["V1"])
    with pytest.raises(ParameterError, match=r"simulation.initial_state='fullscale' is invalid: expected a rates "
                       r"JSON file or run store path: this network is not down-scaled"):
        NetworkPlan(full, structure.build(full))
    with pytest.raises(ParameterError, match=r"simulation.initial_state=1 is invalid"):
        Params.tutorial(initial_state=1)


def _early_rates(run, edges):
    """Mean rate over all neurons (spikes/s) in the bins ``edges`` (ms)."""
    sp = run.spikes()
    n = float(np.sum(run.root["spikes"].attrs["n_neurons"]))
    counts, _ = np.histogram(sp.times, bins=edges)
    return counts / n / (np.diff(edges) * 1e-3)


@pytest.mark.parametrize("engine", ["nest", "brian2"])
def test_initial_state_changes_the_early_rates(engine, tmp_path):
    """Tutorial network, 30 ms: started near its own mean-field state (24 spikes/s, neuron-weighted)
    instead of V0 ~ N(-150, 50) mV, it has no synchronous volley at t = 0 (2.3 % of the default V0 lie
    above threshold) and climbs to its state about twice as fast."""
    path, s, nu = _theory_rates_json(tmp_path)
    edges = [0.0, 2.0, 5.0, 10.0, 20.0, 30.0]
    options = {"engine_options": {"save_connectivity": False}} if engine == "brian2" else {}
    rates = {}
    for init in (None, str(path)):
        p = Params.tutorial(t_sim=30.0, segment=30.0, engine=engine, initial_state=init)
        run = simulate(p, store=tmp_path / f"{init is None}.zarr", structure=s, progress=False, **options)
        rates[init is not None] = _early_rates(run, edges)
    default, started = rates[False], rates[True]
    # measured (NEST / Brian2): default 11.4 / 12.1, 0.7 / 0.8, 1.5 / 1.4, 6.1 / 6.5, 14.8 / 14.3;
    # started 0.24 / 0.37, 1.3 / 1.3, 3.6 / 3.8, 12.7 / 12.6, 17.6 / 17.5 spikes/s
    assert default[0] > 8.0 and started[0] < 1.0
    assert started[2] > 1.8 * default[2] and started[3] > 1.6 * default[3]
    assert 2.0 < started[2] < 6.0 and 9.0 < started[3] < 16.0
