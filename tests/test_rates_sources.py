"""Full-scale rates of the down-scaling from a run store or an atlas store (network.fullscale_rates)."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

from mam_xr import atlas, store, structure, theory
from mam_xr.errors import ParameterError
from mam_xr.flat import AREAS, FLAT_AREA, FLAT_POP, N_POPULATIONS, population_labels, to_flat_vector
from mam_xr.params import Params

LABELS = population_labels()


def _quiet(function, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return function(*args, **kwargs)


@pytest.fixture(scope="module")
def fullscale_atlas(tmp_path_factory):
    """The full-scale atlas of the tutorial parameters over chi = 1.0, 1.1, 1.2 (chi_I = 1),
    written as ``mam-xr theory --atlas chi=1.0:1.2:0.1 --out`` writes it."""
    ds = _quiet(atlas.atlas, Params.tutorial(scale=1.0), chi="1.0:1.2:0.1")
    path = tmp_path_factory.mktemp("atlas") / "atlas.zarr"
    _quiet(ds.to_zarr, path, group="atlas", mode="w")
    return ds, path


def _write_run(path, rates_window, *, n=20, n_neurons=None, complete=True):
    """A complete run store of 1000 ms whose populations fire ``rates_window`` (spikes/s) in
    [500, 1000) ms, through the store's writer; 50 extra spikes per population before 500 ms."""
    n_neurons = [n] * N_POPULATIONS if n_neurons is None else n_neurons
    params = Params.tutorial(scale=1.0, t_sim=1000.0)
    root = store.create_run(path, structure=structure.build(Params.tutorial()), dt=0.1, t_sim=1000.0,
                            n_segments_planned=1, params=params.to_json(), label="rates-source", seed=1,
                            n_neurons=n_neurons)
    steps, senders, pops = [], [], []
    for p in range(N_POPULATIONS):
        if n_neurons[p] == 0:
            continue
        k = int(round(rates_window[p] * n_neurons[p] * 0.5))      # spikes in the 0.5-s window
        t = np.concatenate([np.linspace(5010, 9990, k), np.linspace(100, 4900, 50)]).round().astype(np.int64)
        steps.append(t)
        senders.append(np.arange(t.size) % n_neurons[p])
        pops.append(np.full(t.size, p))
    w = store.SpikeWriter(root)
    w.append_segment(np.concatenate(steps), np.concatenate(senders), np.concatenate(pops), 0.0, 1000.0)
    if complete:
        store.set_status(root, "complete")
    return path


# --- atlas store ------------------------------------------------------------------------------

def test_atlas_source_is_the_fullscale_fixed_point(fullscale_atlas):
    ds, path = fullscale_atlas
    p = Params.tutorial(fullscale_rates=str(path))                # scale 0.005, chi = chi_I = 1
    s = structure.build(p)
    full = s["fullscale_rates"]
    a = full.attrs
    assert (a["kind"], a["source"], a["branch"], a["sweep_param"], a["sweep_value"]) == \
        ("atlas", str(path), 0, "chi", 1.0)
    assert a["branch_choice"] == "reached by the integration from zero rates" and a["stable"] is True
    assert float(full.mean()) == pytest.approx(3.72916, abs=1e-5)
    # the same state and DC drive as fullscale_rates="theory" (both: reached from zero rates)
    s_theory = structure.build(Params.tutorial(fullscale_rates="theory"))
    np.testing.assert_allclose(to_flat_vector(full), to_flat_vector(s_theory["fullscale_rates"]),
                               rtol=0, atol=1e-7)
    dc, dc_theory = to_flat_vector(s["dc_drive"]), to_flat_vector(s_theory["dc_drive"])
    assert float(np.max(np.abs(dc - dc_theory))) <= 1e-6 * float(np.max(np.abs(dc_theory)))
    # a fixed point of the down-scaled theory: root finding from the full-scale rates stays there
    fp = _quiet(theory.fixed_point, s, p, initial=full, with_gain=False)
    assert bool(fp["converged"]) and float(np.nanmax(np.abs(fp["rate"] - full))) <= 1e-6


def test_atlas_source_other_branch_and_value(fullscale_atlas):
    ds, path = fullscale_atlas
    # the second branch at chi = 1 (mean 5.596 spikes/s), chosen by index
    s = structure.build(Params.tutorial(fullscale_rates=str(path), fullscale_rates_branch=1))
    full = s["fullscale_rates"]
    assert full.attrs["branch"] == 1 and full.attrs["branch_choice"] == "fullscale_rates_branch=1"
    np.testing.assert_array_equal(to_flat_vector(full), to_flat_vector(ds["rate"].isel(chi=0, branch=1)))
    assert float(full.mean()) == pytest.approx(5.5958, abs=1e-4)
    # chi = 1.1 on branch 0 (the integration from zero does not converge there: a branch is needed)
    p11 = dict(chi=1.1, chi_I=1.0, fullscale_rates=str(path))
    with pytest.raises(ParameterError, match=r"fullscale_rates='.*atlas.zarr' is invalid: expected an atlas "
                       r"whose integration from zero rates reaches a branch at chi=1.1 .*\(found: \[0, 1\]\)"):
        structure.build(Params.tutorial(**p11))
    s11 = structure.build(Params.tutorial(**p11, fullscale_rates_branch=0))
    np.testing.assert_array_equal(to_flat_vector(s11["fullscale_rates"]),
                                  to_flat_vector(ds["rate"].isel(chi=1, branch=0)))
    assert float(s11["fullscale_rates"].mean()) == pytest.approx(3.9409, abs=1e-4)
    # the group itself may be named too
    s_group = structure.build(Params.tutorial(fullscale_rates=str(path / "atlas")))
    np.testing.assert_array_equal(s_group["dc_drive"].values,
                                  structure.build(Params.tutorial(fullscale_rates=str(path)))["dc_drive"].values)


def test_atlas_source_refusals(fullscale_atlas, tmp_path):
    ds, path = fullscale_atlas
    src = str(path)
    cases = [
        (dict(chi=1.05, chi_I=1.0), r"expected an atlas holding chi=1.05 \(it holds 3 values from 1 to 1.2\)"),
        (dict(chi=1.2, chi_I=1.0), r"expected an atlas with a fixed point at chi=1.2 \(it found none there\)"),
        (dict(chi=1.1), r"expected an atlas of the same network parameters except chi "
                        r"\(network.connection.chi_I is 1.0 in the atlas, 2.0 here\)"),
        (dict(g=-12.0), r"expected an atlas of the same network parameters except chi "
                        r"\(network.connection.g is -11.0 in the atlas, -12.0 here\)"),
    ]
    for values, pattern in cases:
        with pytest.raises(ParameterError, match=rf"fullscale_rates='{src}' is invalid: {pattern}"):
            structure.build(Params.tutorial(fullscale_rates=src, **values))
    with pytest.raises(ParameterError, match=r"fullscale_rates_branch=2 is invalid: expected a branch of the "
                       r"atlas .* at chi=1 \(found there: \[0, 1\]\)"):
        structure.build(Params.tutorial(fullscale_rates=src, fullscale_rates_branch=2))
    # an atlas of a down-scaled network is no source of full-scale rates
    small = _quiet(atlas.atlas, Params.tutorial(), chi=[1.0])
    _quiet(small.to_zarr, tmp_path / "small.zarr", group="atlas")
    with pytest.raises(ParameterError, match=r"expected an atlas of the full-scale network \(this one has "
                       r"N_scaling=0.005, K_scaling=0.005\)"):
        structure.build(Params.tutorial(fullscale_rates=str(tmp_path / "small.zarr")))
    # an atlas's rates change with chi: rescale refuses it, as it refuses "theory"
    s = structure.build(Params.tutorial(fullscale_rates=src))
    with pytest.raises(ParameterError, match=rf"fullscale_rates='{src}' is invalid: expected 'upstream', a "
                       "rates JSON path or a run store here"):
        structure.rescale(s, chi=1.1)
    # the branch option needs an atlas
    for source in ("upstream", "theory"):
        with pytest.raises(ParameterError, match=rf"fullscale_rates_branch=1 is invalid: expected None unless "
                           rf"fullscale_rates is an atlas store \(it is '{source}'\)"):
            Params.tutorial(fullscale_rates=source, fullscale_rates_branch=1)
    with pytest.raises(ParameterError, match=r"fullscale_rates_branch=-1 is invalid"):
        Params.tutorial(fullscale_rates=src, fullscale_rates_branch=-1)


# --- run store --------------------------------------------------------------------------------

def test_run_store_source_gives_the_simulated_rates(tmp_path):
    rates = 0.1 * (np.arange(N_POPULATIONS) % 50 + 1)             # 0.1 .. 5 spikes/s
    run = _write_run(tmp_path / "run.zarr", rates)
    p = Params.tutorial(fullscale_rates=str(run))
    s = structure.build(p)
    full = s["fullscale_rates"]
    np.testing.assert_allclose(to_flat_vector(full), rates, rtol=1e-12)   # the window [500, 1000) only
    a = full.attrs
    assert (a["kind"], a["source"], a["window_ms"], a["run_scale"], a["run_label"]) == \
        ("run", str(run), [500.0, 1000.0], 1.0, "rates-source")
    # the DC drive is that of a rates JSON file holding the same rates
    table = {a_: {} for a_ in AREAS}
    for area, pop, r in zip(FLAT_AREA, FLAT_POP, rates):
        table[area][pop] = float(r)
    json_path = tmp_path / "rates.json"
    json_path.write_text(json.dumps(table))
    s_json = structure.build(Params.tutorial(fullscale_rates=str(json_path)))
    np.testing.assert_allclose(s["dc_drive"].values, s_json["dc_drive"].values, rtol=1e-12, atol=1e-12)
    assert "fullscale_rates" not in s_json                          # a JSON source is named by the params
    # the rates do not depend on chi: rescale reads them again and equals a rebuild
    r15 = structure.rescale(s, chi=1.5)
    b15 = structure.build(Params.tutorial(fullscale_rates=str(run), chi=1.5, chi_I=1.0))
    np.testing.assert_allclose(r15["dc_drive"].values, b15["dc_drive"].values, rtol=1e-12, atol=1e-9)
    assert float(np.nanmax(np.abs(r15["dc_drive"].values - s["dc_drive"].values))) > 1.0
    np.testing.assert_allclose(structure.read_fullscale_rates(str(run))[~np.isnan(full.values)],
                               full.values[~np.isnan(full.values)], rtol=1e-12)


def test_run_store_source_refusals(tmp_path):
    rates = np.full(N_POPULATIONS, 2.0)
    n = [20] * N_POPULATIONS
    n[7] = 0                                 # one population without neurons
    partial = _write_run(tmp_path / "partial.zarr", rates, n_neurons=n)
    with pytest.raises(ParameterError, match=rf"fullscale_rates='{partial}' is invalid: expected a run store "
                       rf"with a rate for every population \(missing {LABELS[7]}: 1 populations have no "
                       r"neurons in the run\)"):
        structure.build(Params.tutorial(fullscale_rates=str(partial)))
    running = _write_run(tmp_path / "running.zarr", rates, complete=False)
    with pytest.raises(ParameterError, match=rf"fullscale_rates='{running}' is invalid: expected a complete "
                       r"mam_xr run store \(run store .* is incomplete"):
        _quiet(structure.build, Params.tutorial(fullscale_rates=str(running)))
    # a Zarr store that is neither a run nor an atlas, and a missing path
    _quiet(structure.build(Params.tutorial()).to_zarr, tmp_path / "other.zarr")
    for bad in (tmp_path / "other.zarr", tmp_path / "missing.zarr"):
        with pytest.raises(ParameterError, match=rf"fullscale_rates='{bad}' is invalid: expected \"upstream\", "
                           r"None or the path of a rates JSON file, a mam_xr run store or an atlas store"):
            structure.build(Params.tutorial(fullscale_rates=str(bad)))
    with pytest.raises(ParameterError, match=r"fullscale_rates_branch=0 is invalid: expected None unless "
                       r"fullscale_rates is an atlas store \(fullscale_rates='.*partial.zarr' is run\)"):
        structure.build(Params.tutorial(fullscale_rates=str(partial), fullscale_rates_branch=0))
