import numpy as np

from mam_xr import flat
from conftest import load_reference, reference_structure


def test_population_labels_match_reference():
    labels = load_reference("population_labels.json")
    assert flat.population_labels() == labels["populations"]
    assert list(flat.AREAS) == labels["areas"]
    assert flat.N_POPULATIONS == 254


def test_flat_round_trip_is_exact():
    ref = load_reference("structure_downscaled_tutorial.npz")
    ds = reference_structure("downscaled_tutorial")
    back = flat.structure_to_flat(ds)
    for key in ("N", "K", "synapses", "W", "J", "add_DC_drive", "distances", "K_areas"):
        np.testing.assert_array_equal(back[key], ref[key], err_msg=key)
    np.testing.assert_array_equal(back["W_sd"][:, :-1], ref["W_sd"][:, :-1])
    assert bool(ds["neurons"].sel(area="TH", pop="4E").isnull())
    assert not bool(ds["exists"].sel(area="TH", pop="4I"))


def test_area_indegree_recomputed_equals_reference():
    ref = load_reference("structure_fullscale_tutorial.npz")
    ds = flat.structure_from_flat(**{k: ref[k] for k in (
        "N", "K", "synapses", "W", "W_sd", "J", "add_DC_drive", "distances")})
    np.testing.assert_allclose(flat.structure_to_flat(ds)["K_areas"], ref["K_areas"], rtol=1e-12)


def test_delays_follow_distance_and_source_type():
    ds = reference_structure("fullscale_tutorial")
    d = ds["delay_mean"]
    assert float(d.sel(area="V1", pop="23E", source_area="V1", source_pop="4E")) == 1.5
    assert float(d.sel(area="V1", pop="23E", source_area="V1", source_pop="4I")) == 0.75
    dist = float(ds["distance"].sel(area="V2", source_area="V1"))
    assert float(d.sel(area="V2", pop="5E", source_area="V1", source_pop="23E")) == dist / 3.5
    np.testing.assert_allclose(ds["delay_sd"], 0.5 * ds["delay_mean"])
