"""The engine registry and the NEST engine's choice of synapse model."""

from __future__ import annotations

import numpy as np
import pytest

from mam_xr import engines
from mam_xr.engines.base import Engine, Segment
from mam_xr.engines.nest import HPC_MAX_NODES_PER_VP, synapse_model
from mam_xr.errors import ParameterError
from mam_xr.params import Params
from mam_xr.simulation import simulate
from mam_xr.store import open_run


def test_built_in_engines_are_registered():
    assert engines.available() == ["brian2", "nest"]
    assert engines.get("nest").name == "nest" and engines.get("brian2").name == "brian2"
    with pytest.raises(ParameterError, match="simulation.engine='neuron' is invalid: expected one of"):
        engines.get("neuron")


class _Silent(Engine):
    """A test engine: no simulator, one spike of neuron 0 of population 0 per segment end."""

    name = "silent-test"
    built = 0

    def build(self, root) -> dict:
        type(self).built += 1
        return {"silent": {"neurons": self.plan.n_neurons}}

    def run_segment(self, t0, t1) -> Segment:
        step = int(round(t1 / self.plan.dt))
        return Segment(np.array([step]), np.array([0], dtype=np.int32), np.array([0]))


def test_simulate_dispatches_through_the_registry(tmp_path):
    engines.register(_Silent)
    try:
        p = Params.tutorial(scale=0.001, t_sim=100.0, segment=25.0, areas_simulated=["V1"])
        # params validate the engine name; the registry decides who runs
        p.simulation.__dict__["engine"] = "silent-test"
        run = simulate(p, store=tmp_path / "s.zarr", progress=False, check_memory=False)
        assert _Silent.built == 1
        again = open_run(tmp_path / "s.zarr")
        assert again.attrs["engine"] == "silent-test" and again.status == "complete"
        assert again.attrs["silent"]["neurons"] == run.attrs["n_neurons_created"] > 0
        np.testing.assert_array_equal(again.spikes().steps, [250, 500, 750, 1000])
        with pytest.raises(ParameterError, match="engine_options=.* is invalid"):
            simulate(p, store=tmp_path / "t.zarr", progress=False, engine_options={"speed": 2},
                     check_memory=False)
    finally:
        engines.unregister("silent-test")
    assert "silent-test" not in engines.available()


def test_synapse_model_follows_nodes_per_virtual_process():
    # tutorial scale on one thread: hpc; scale 0.02 (82,000 neurons) on one thread: not
    assert synapse_model(20_000, 300, 1) == "static_synapse_hpc"
    assert synapse_model(82_000, 300, 1) == "static_synapse"
    assert synapse_model(82_000, 300, 2) == "static_synapse_hpc"
    # the limit counts the devices that every virtual process holds
    assert synapse_model(HPC_MAX_NODES_PER_VP - 10, 10, 1) == "static_synapse_hpc"
    assert synapse_model(HPC_MAX_NODES_PER_VP - 10, 11, 1) == "static_synapse"
    assert synapse_model(4 * HPC_MAX_NODES_PER_VP + 1, 0, 4) == "static_synapse"
