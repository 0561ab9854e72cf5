"""mam_xr.importer: upstream recordings (NEST ASCII files, an npz of them) -> run stores.

Every test imports the reference threads=1 spikes of ../shared/reference (or a part of them)
and compares with the spikes or upstream's own statistics of the same run.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import REFERENCE, load_reference, reference_structure
from mam_xr import analysis as A
from mam_xr import flat
from mam_xr.errors import DataError, StoreError
from mam_xr.importer import import_upstream

SUBSET = ("V1", "V2", "FEF")
RTOL = 1e-12


@pytest.fixture(scope="module")
def run1(tmp_path_factory):
    path = tmp_path_factory.mktemp("imp") / "threads1.zarr"
    return import_upstream(REFERENCE / "spikes_sim_threads1.npz", path, t_sim_ms=2000.0,
                           structure=reference_structure(), label="threads1")


def test_import_of_nest_ascii_files(tmp_path, run1):
    raw = np.load(REFERENCE / "spikes_sim_threads1.npz")
    rows = np.concatenate([raw[k] for k in raw.files])
    rows = rows[np.argsort(rows[:, 1], kind="stable")]
    half = len(rows) // 2
    rec = tmp_path / "recordings"
    rec.mkdir()
    for vp, part in enumerate((rows[:half], rows[half:])):   # two virtual processes
        with open(rec / f"label-spikes-{vp}.dat", "w") as fh:
            fh.write("# NEST version: 3.10\n# RecordingBackendASCII version: 2\nsender\ttime_ms\n")
            np.savetxt(fh, part, fmt=["%d", "%.3f"], delimiter="\t")
    gids = load_reference("network_gids.json")
    with open(rec / "network_gids.txt", "w") as fh:
        for lab, (a, b) in gids.items():
            area, pop = lab.split("-")
            fh.write(f"{area},{pop},{a},{b}\n")
    run = import_upstream(rec, tmp_path / "ascii.zarr", t_sim_ms=2000.0)
    for k in (0, 100, 253):
        lab = flat.population_labels()[k]
        a, b = run.spikes(area=lab.split("-")[0], pop=lab.split("-")[1]), \
            run1.spikes(area=lab.split("-")[0], pop=lab.split("-")[1])
        np.testing.assert_array_equal(a.steps, b.steps)
        np.testing.assert_array_equal(a.senders, b.senders)


def test_import_errors(tmp_path):
    with pytest.raises(DataError, match="source="):
        import_upstream(tmp_path / "nothing.npz", tmp_path / "x.zarr", t_sim_ms=2000.0)
    with pytest.raises(DataError, match="t_sim_ms=1000.0 is invalid"):
        import_upstream(REFERENCE / "spikes_sim_threads1.npz", tmp_path / "x.zarr", t_sim_ms=1000.0)
    with pytest.raises(DataError, match="dt_ms=0.3 is invalid"):
        import_upstream(REFERENCE / "spikes_sim_threads1.npz", tmp_path / "y.zarr", t_sim_ms=2000.0,
                          dt_ms=0.3)



# --------------------------------------------------------------------------------------
# Runs of a subset of the areas (upstream's areas_simulated)
# --------------------------------------------------------------------------------------

def _subset_files(directory, *, ascii: bool):
    """The reference run cut down to V1, V2 and FEF, as an upstream run of those areas writes it:
    network_gids lists only their populations, the spike files hold only their spikes."""
    raw = np.load(REFERENCE / "spikes_sim_threads1.npz")
    gids = {k: v for k, v in load_reference("network_gids.json").items() if k.split("-")[0] in SUBSET}
    directory.mkdir()
    if ascii:
        rows = np.concatenate([raw[k] for k in gids])
        rows = rows[np.argsort(rows[:, 1], kind="stable")]
        with open(directory / "subset-spikes-0.dat", "w") as fh:
            fh.write("# NEST version: 3.10\n# RecordingBackendASCII version: 2\nsender\ttime_ms\n")
            np.savetxt(fh, rows, fmt=["%d", "%.3f"], delimiter="\t")
        with open(directory / "network_gids.txt", "w") as fh:
            for lab, (a, b) in gids.items():
                fh.write("{},{},{},{}\n".format(*lab.split("-"), a, b))
        return directory
    np.savez(directory / "spikes.npz", **{k: raw[k] for k in gids})
    (directory / "network_gids.json").write_text(json.dumps(gids))
    return directory / "spikes.npz"


@pytest.mark.parametrize("ascii", [False, True])
def test_subset_run_statistics_equal_upstreams_own(tmp_path, ascii):
    """Per-population statistics depend on that population's spikes only, so upstream's own
    values for V1, V2 and FEF are those of the reference run (rescaled N_int/N as in
    tests/test_analysis.py); every other population has no neurons and NaN statistics."""
    src = _subset_files(tmp_path / "rec", ascii=ascii)
    run = import_upstream(src, tmp_path / "subset.zarr", t_sim_ms=2000.0, structure=reference_structure())
    assert run.attrs["areas_simulated"] == list(SUBSET)
    st = A.analyze(run, ["rates", "irregularity", "synchrony", "correlation", "rate_time_series",
                         "functional_connectivity", "fano_factor"], store=False)
    ref = load_reference("analysis_sim_threads1.npz")
    s = load_reference("structure_downscaled_tutorial.npz")
    nf, ni = s["N"], s["N_created_int"].astype(float)
    labels = flat.population_labels()
    keep = np.array([lab.split("-")[0] in SUBSET for lab in labels])
    n = np.asarray(run.root["spikes"].attrs["n_neurons"])
    np.testing.assert_array_equal(n[keep], ni[keep])
    assert not n[~keep].any()

    def flat_of(da):
        return flat.to_flat_vector(da)

    np.testing.assert_allclose((flat_of(st["rates"]["rate"]) * ni / nf)[keep], ref["Analysis_pop_rates"][keep],
                               rtol=RTOL)
    np.testing.assert_allclose(flat_of(st["irregularity"]["lvr"])[keep], ref["Analysis_pop_LvR"][keep], rtol=RTOL)
    np.testing.assert_allclose(flat_of(st["irregularity"]["cv_isi"])[keep], ref["Analysis_pop_cv_isi"][keep],
                               rtol=RTOL)
    np.testing.assert_allclose(flat_of(st["synchrony"]["synchrony"])[keep], ref["Analysis_pop_synchrony"][keep],
                               rtol=RTOL)
    np.testing.assert_allclose(flat_of(st["correlation"]["corrcoef"])[keep], ref["M2E_pop_corrcoeff"][keep],
                               rtol=1e-10)
    np.testing.assert_allclose((flat_of(st["rate_time_series"]["rate"]) * (ni / nf)[:, None])[keep],
                               ref["Analysis_rate_time_series_pop"][keep], rtol=RTOL, atol=1e-12)
    area = [flat.AREAS.index(a) for a in SUBSET]
    a_idx = np.array([flat.AREAS.index(lab.split("-")[0]) for lab in labels])
    scale = np.bincount(a_idx, ni) / np.bincount(a_idx, nf)
    np.testing.assert_allclose((st["rates"]["area_rate"].values * scale)[area],
                               ref["Analysis_area_rates_total"][area], rtol=RTOL)
    for name, var in (("rates", "rate"), ("irregularity", "lvr"), ("correlation", "corrcoef"),
                      ("fano_factor", "fano_factor")):
        assert bool(st[name][var].drop_sel(area=list(SUBSET)).isnull().all()), name
    assert bool(st["rates"]["area_rate"].drop_sel(area=list(SUBSET)).isnull().all())
    fc = st["functional_connectivity"]["fc"].sel(area=list(SUBSET), source_area=list(SUBSET)).values
    np.testing.assert_allclose(np.diag(fc), 1.0, rtol=1e-12)


def test_subset_gids_must_list_whole_areas(tmp_path):
    src = _subset_files(tmp_path / "rec", ascii=False)
    gids = json.loads((tmp_path / "rec" / "network_gids.json").read_text())
    del gids["V2-4I"]
    (tmp_path / "rec" / "network_gids.json").write_text(json.dumps(gids))
    with pytest.raises(DataError, match=r"area V2 is listed but has no id range for populations \['V2-4I'\]"):
        import_upstream(src, tmp_path / "a.zarr", t_sim_ms=2000.0)
    gids["MSTI-23E"] = [1, 2]
    (tmp_path / "rec" / "network_gids.json").write_text(json.dumps(gids))
    with pytest.raises(DataError, match=r"gids=.* is invalid: expected id ranges of the model's populations .*"
                                        r"unknown labels \['MSTI-23E'\]"):
        import_upstream(src, tmp_path / "b.zarr", t_sim_ms=2000.0)


def test_existing_target_is_checked_before_reading(tmp_path):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("not a store")
    with pytest.raises(StoreError, match="store_path=.* is invalid: expected a path that does not exist yet"):
        import_upstream(REFERENCE / "spikes_sim_threads1.npz", foreign, t_sim_ms=2000.0)
    with pytest.raises(StoreError, match="store_path=.* is invalid: .*mam_xr only replaces what it wrote"):
        import_upstream(REFERENCE / "spikes_sim_threads1.npz", foreign, t_sim_ms=2000.0, overwrite=True)
    assert (foreign / "notes.txt").read_text() == "not a store"
