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
                  MAM_XR_NB_T_SIM="200", MAM_XR_NB_AREAS="V1,V2", MAM_XR_NB_CHIS="1.0,1.9")
    table = _outputs(nb, 'th[["converged"')
    assert "2.5" in table and "True" in table
    assert "chi" in _outputs(nb, 'result[["rates_rate"')
