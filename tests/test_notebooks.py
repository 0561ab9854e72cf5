"""Both notebooks run end to end at a tiny scale (real NEST, real stores, real Dask)."""

import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def _execute(name, tmp_path, monkeypatch, **env):
    for key, value in {"MAM_XR_NB_OUT": str(tmp_path), **env}.items():
        monkeypatch.setenv(key, value)
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    return nb


def _outputs(nb, needle):
    """Text outputs of the code cell whose source contains ``needle``."""
    for cell in nb.cells:
        if cell.cell_type == "code" and needle in cell.source:
            return "".join(o.get("text", "") + str(o.get("data", {}).get("text/plain", ""))
                           for o in cell.outputs)
    raise AssertionError(f"no cell with {needle!r}")


def test_tutorial_notebook(tmp_path, monkeypatch):
    nb = _execute("tutorial.ipynb", tmp_path, monkeypatch, MAM_XR_NB_SCALE="0.002",
                  MAM_XR_NB_T_SIM="200", MAM_XR_NB_AREAS="V1,V2,FEF")
    assert "network.connection.chi=0.5 is invalid" in _outputs(nb, "chi=0.5")
    assert "complete mean rate" in _outputs(nb, "mam_xr.simulate(")
    html = tmp_path / "tutorial.html"
    assert html.is_file() and html.stat().st_size > 100_000
    assert (tmp_path / "tutorial.zarr" / "analysis").is_dir()


def test_chi_sweep_notebook(tmp_path, monkeypatch):
    nb = _execute("chi_sweep.ipynb", tmp_path, monkeypatch, MAM_XR_NB_SCALE="0.002",
                  MAM_XR_NB_T_SIM="200", MAM_XR_NB_AREAS="V1,V2", MAM_XR_NB_CHIS="1.0,1.9",
                  MAM_XR_NB_ATLAS_STEP="0.05")
    table = _outputs(nb, 'th[["converged"')
    assert "2.5" in table and "True" in table
    # the full-scale atlas: the S-shaped curve with its folds (docs/atlas.md), and its figure
    full = _outputs(nb, "full_atlas = atlas.atlas(")
    assert "atlas over chi = 1 .. 2.5 (31 values): 5 branches, 4 folds" in full and ":Overlay" in full
    assert "sweep chi-sweep: 2 complete, 0 failed" in _outputs(nb, "sweep.run_sweep(")
    assert "chi" in _outputs(nb, 'result[["rates_rate"')
    # the atlas of the simulated network with the simulated points on it
    overlay = _outputs(nb, "viz.sweep_theory_vs_simulation(result, atlas=sim_atlas)")
    assert "atlas over chi = 1 .. 2.5" in overlay
    for element in (".Curve.Atlas_colon_stable", ".Scatter.Theory_at_the_sweep_points", ".Scatter.Simulation"):
        assert element in overlay, element
    assert ":Layout" in _outputs(nb, "viz.sweep_statistics(result)")
    page = tmp_path / "chi-sweep.html"
    assert "chi-sweep.html" in _outputs(nb, "report.report_for(") and page.is_file()
    assert "sweep_slider_chi" in page.read_text()
