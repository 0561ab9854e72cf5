"""The engine-independent network plan: populations, projections, replacement
inputs, connectivity drawn in chunks, saved and loaded, connection counts."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from conftest import reference_structure
from mam_xr import network
from mam_xr.errors import ParameterError
from mam_xr.flat import AREAS, population_labels, to_flat_matrix, to_flat_vector
from mam_xr.network import NetworkPlan
from mam_xr.params import Params
from mam_xr.network import read_rates
from mam_xr.rates import read_rates_json
from mam_xr.structure import read_fullscale_rates

LABELS = population_labels()
TINY = dict(scale=0.001, t_sim=200.0, segment=50.0)


@pytest.fixture(scope="module")
def tiny_structure():
    from mam_xr.structure import build

    return build(Params.tutorial(**TINY))


def test_connectivity_follows_the_model_rules():
    s = reference_structure("downscaled_tutorial")
    areas = ("V1", "V2", "V4")
    c = network.draw_connectivity(s, areas, dt=0.1, seed=3, V0_mean=-150.0, V0_sd=50.0)
    sim = np.isin(np.array([lab.split("-")[0] for lab in LABELS]), areas)
    n_float = to_flat_vector(s["neurons"])
    assert np.array_equal(c.n_neurons, np.where(sim, np.floor(n_float), 0))
    S = np.floor(np.nan_to_num(to_flat_matrix(s["synapses"])))
    assert c.n_synapses == int(S[np.ix_(sim, sim)].sum())
    counts = np.diff(c.offsets)
    assert np.array_equal(counts, S[c.target_pop, c.source_pop].astype(np.int64))
    # sources / targets inside their populations, uniform: mean index ~ (n - 1) / 2
    proj = np.repeat(np.arange(counts.size), counts)
    assert np.all(c.sources < c.n_neurons[c.source_pop][proj])
    assert np.all(c.targets < c.n_neurons[c.target_pop][proj])
    rel = c.sources / (c.n_neurons[c.source_pop][proj] - 1)
    assert abs(rel.mean() - 0.5) < 0.01
    # sign-preserving weights, delays >= 1 step on the grid
    exc = np.array([lab.endswith("E") for lab in LABELS])[c.source_pop][proj]
    assert np.all(c.weights[exc] >= 0) and np.all(c.weights[~exc] <= 0)
    assert c.delays.min() >= 1
    W = np.nan_to_num(to_flat_matrix(s["weight_mean"]))[c.target_pop, c.source_pop]
    w_mean = np.bincount(proj, weights=c.weights) / counts
    big = counts > 2000
    np.testing.assert_allclose(w_mean[big], W[big], rtol=0.02)
    # delays: N(d, d/2) redrawn below dt, then rounded: the 1.5 ms E delays have the
    # truncated-normal mean 1.554 ms (1.5 ms would mean no truncation)
    from scipy.stats import truncnorm

    D = np.nan_to_num(to_flat_matrix(s["delay_mean"]))[c.target_pop, c.source_pop][proj]
    e_local = np.isclose(D, 1.5)
    expected = truncnorm.mean((0.1 - 1.5) / 0.75, np.inf, loc=1.5, scale=0.75)
    assert abs(c.delays[e_local].mean() * 0.1 - expected) < 0.012
    # initial potentials N(-150, 50)
    assert c.v0.size == c.n_neurons.sum()
    assert abs(c.v0.mean() + 150) < 2 and abs(c.v0.std() - 50) < 2
    # reproducible, seed-dependent
    c2 = network.draw_connectivity(s, areas, dt=0.1, seed=3, V0_mean=-150.0, V0_sd=50.0)
    c3 = network.draw_connectivity(s, areas, dt=0.1, seed=4, V0_mean=-150.0, V0_sd=50.0)
    assert np.array_equal(c.sources, c2.sources) and np.array_equal(c.weights, c2.weights)
    assert not np.array_equal(c.sources, c3.sources)


def test_connectivity_round_trip(tmp_path):
    import zarr

    s = reference_structure("downscaled_tutorial")
    c = network.draw_connectivity(s, ("V1", "V2"), dt=0.1, seed=1, V0_mean=-150.0, V0_sd=50.0)
    root = zarr.open_group(str(tmp_path / "c.zarr"), mode="w", zarr_format=3)
    network.save_connectivity(c, root)
    back = network.load_connectivity(tmp_path / "c.zarr")
    for name in ("target_pop", "source_pop", "offsets", "sources", "targets", "weights", "delays",
                 "v0", "n_neurons"):
        assert np.array_equal(getattr(back, name), getattr(c, name)), name
    with pytest.raises(ParameterError, match="connectivity"):
        network.check_connectivity(back, back.n_neurons + 1, 0.1)


def test_current_replacement_includes_tau_s(tiny_structure):
    """het_current_nonstat injects the mean synaptic current W·τ_s·k·ν of the Poisson
    input it replaces (decisions.md: upstream omits τ_s, 2× too strong)."""
    p = Params.tutorial(**TINY).update(areas_simulated=["V1"],
                                       replace_non_simulated_areas="het_current_nonstat")
    plan = NetworkPlan(p, tiny_structure)
    rep = plan.replacement
    assert rep["kind"] == "current" and rep["amplitudes"].shape[1] == 200
    nu = to_flat_vector(tiny_structure["neurons"].copy(data=read_fullscale_rates("upstream")))
    W = np.nan_to_num(to_flat_matrix(tiny_structure["weight_mean"]))
    K = np.nan_to_num(to_flat_matrix(tiny_structure["indegree"]))
    t, v2 = LABELS.index("V1-23E"), [i for i, lab in enumerate(LABELS) if lab.startswith("V2-")]
    expected = np.sum(W[t, v2] * 0.5 * K[t, v2] * nu[v2]) * 1e-3  # pA; τ_s = 0.5 ms
    k = np.flatnonzero((rep["target"] == t) & (rep["source_area"] == AREAS.index("V2")))
    assert k.size == 1
    np.testing.assert_allclose(rep["amplitudes"][k[0]], expected, rtol=1e-9)
    np.testing.assert_allclose(rep["delay"][k[0]],
                               float(tiny_structure["distance"].sel(area="V1", source_area="V2")) / 3.5)


def test_chunked_draw_keeps_the_model_rules_with_compact_types():
    """Chunks smaller than a projection: every projection still gets its floor(synapses),
    indices stay inside their populations, the dtypes are compact (issue 12)."""
    s = reference_structure("downscaled_tutorial")
    areas = ("V1", "V2")
    c = network.draw_connectivity(s, areas, dt=0.1, seed=5, V0_mean=-150.0, V0_sd=50.0, chunk=997)
    n = network.created_neurons(s, areas)
    S = np.floor(np.nan_to_num(to_flat_matrix(s["synapses"])))
    counts = np.diff(c.offsets)
    assert np.array_equal(counts, S[c.target_pop, c.source_pop].astype(np.int64))
    assert c.n_synapses > 20 * 997 and np.diff(c.offsets).max() > 997
    assert (c.sources.dtype, c.targets.dtype, c.weights.dtype, c.delays.dtype) == \
        (np.int32, np.int32, np.float32, np.uint16)
    proj = np.repeat(np.arange(counts.size), counts)
    assert np.all(c.sources < n[c.source_pop][proj]) and np.all(c.targets < n[c.target_pop][proj])
    exc = np.array([lab.endswith("E") for lab in LABELS])[c.source_pop][proj]
    assert np.all(c.weights[exc] >= 0) and np.all(c.weights[~exc] <= 0)
    assert c.delays.min() >= 1
    # the chunks of a Connectivity give back its synapses in order
    parts = list(c.chunks(1000))
    assert sum(len(x) for x in parts) == c.n_synapses
    pre = np.concatenate([x.global_indices(np.zeros(n.size, dtype=np.int64))[0] for x in parts])
    assert np.array_equal(pre, c.sources)
    tp = np.concatenate([x.target_pop for x in parts])
    assert np.array_equal(tp, c.target_pop[proj])
    # the plan draws the same network as draw_connectivity
    p = Params.tutorial(areas_simulated=list(areas))
    plan = NetworkPlan(p, s)
    c2 = plan.draw_connectivity(seed=5, V0_mean=-150.0, V0_sd=50.0, chunk=997)
    assert np.array_equal(c2.targets, c.targets) and np.array_equal(c2.delays, c.delays)
    assert plan.n_synapses == c.n_synapses
    with pytest.raises(ParameterError, match="chunk=0 is invalid"):
        next(plan.connectivity_chunks(seed=1, chunk=0))


def test_connection_counts_are_floors(tiny_structure):
    N = np.floor(to_flat_vector(tiny_structure["neurons"])).astype(int)
    S = np.floor(np.nan_to_num(to_flat_matrix(tiny_structure["synapses"]))).astype(int)
    assert network.connection_counts(tiny_structure) == {"neurons": int(N.sum()), "synapses": int(S.sum())}
    plan = NetworkPlan(Params.tutorial(**TINY), tiny_structure)
    assert plan.n_neurons == N.sum() == 4002 and plan.n_synapses == S.sum()
    assert plan.replacement is None


def test_one_rates_reader(tmp_path):
    """JSON files: list values count by their first element, absent populations are NaN;
    the structure's full-scale rates come from the same reader."""
    import json

    path = tmp_path / "r.json"
    path.write_text(json.dumps({"V1": {"23E": [3.0, 1.0], "4I": 5.0}, "V2": "oops"}))
    nu = read_rates_json(path, "rates")
    assert nu[LABELS.index("V1-23E")] == 3.0 and nu[LABELS.index("V1-4I")] == 5.0
    assert np.isnan(nu).sum() == len(LABELS) - 2
    np.testing.assert_array_equal(read_rates(path, "rates", t_sim=3.0, series=True)[:, 2], nu)
    path.write_text("{not json")
    with pytest.raises(ParameterError, match="rates=.* is invalid: expected a readable JSON file"):
        read_rates_json(path, "rates")
    up = read_fullscale_rates("upstream")
    assert up.shape == (len(AREAS), 8)
    assert np.isfinite(to_flat_vector(xr.DataArray(up, dims=("area", "pop")))).all()
