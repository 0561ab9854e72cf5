"""Shared fixtures: the upstream data directory and the reference outputs."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

# ../shared next to the checkout (CI and sessions), or MAM_XR_SHARED.
SHARED = Path(os.environ.get("MAM_XR_SHARED") or Path(__file__).resolve().parents[1].parent / "shared")
REFERENCE = SHARED / "reference"
# Absolute: subprocesses and kernels run elsewhere.
DATA_DIR = Path(os.environ.get("MAM_XR_DATA_DIR") or SHARED / "upstream-data").resolve()


def pytest_configure(config):
    """Stop at once, with one message, when the upstream data are not where they were asked for."""
    if not (DATA_DIR / "MANIFEST.tsv").is_file():
        given = ("MAM_XR_DATA_DIR" if os.environ.get("MAM_XR_DATA_DIR")
                 else "MAM_XR_SHARED/upstream-data" if os.environ.get("MAM_XR_SHARED")
                 else "../shared/upstream-data (next to the checkout)")
        raise pytest.UsageError(
            f"no upstream data at {DATA_DIR} (from {given}): expected a directory with MANIFEST.tsv. "
            "Set MAM_XR_DATA_DIR to a local copy of the upstream data (see docs/data.md), "
            "e.g. MAM_XR_DATA_DIR=../shared/upstream-data python -m pytest")


@pytest.fixture(scope="session", autouse=True)
def _data_dir(tmp_path_factory):
    """Point mam_xr at the local upstream copy and an empty private cache."""
    os.environ["MAM_XR_DATA_DIR"] = str(DATA_DIR)
    os.environ.setdefault("MAM_XR_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
    return DATA_DIR


@pytest.fixture(scope="session")
def data_dir():
    return DATA_DIR


def load_reference(name: str):
    """A reference npz (as dict of arrays) or json from ../shared/reference."""
    path = REFERENCE / name
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as f:
            return {k: f[k] for k in f.files}
    return json.loads(path.read_text())


@pytest.fixture(scope="session")
def reference():
    return load_reference


def reference_structure(variant: str = "downscaled_tutorial"):
    """The reference structure npz as a mam_xr structure Dataset."""
    from mam_xr.flat import structure_from_flat

    ref = load_reference(f"structure_{variant}.npz")
    meta = load_reference(f"structure_{variant}_meta.json")
    return structure_from_flat(
        N=ref["N"], K=ref["K"], synapses=ref["synapses"], W=ref["W"], W_sd=ref["W_sd"],
        J=ref["J"], add_DC_drive=ref["add_DC_drive"], distances=ref["distances"],
        K_areas=ref["K_areas"], attrs={"source": f"reference structure_{variant}",
                                       "label": meta.get("label", "")},
    )


# --- shared by the browser tests -------------------------------------------------------------

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


def chromium_driver(tmp_path, window: str = "1400,1000"):
    """A headless Chromium (selenium) with its browser log kept; skips the test when
    Chromium, chromedriver or selenium is absent."""
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is absent (Debian package chromium)")
    if not Path(CHROMEDRIVER).exists():
        pytest.skip("chromedriver is absent (Debian package chromium-driver)")
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 f"--user-data-dir={tmp_path / 'chromium-profile'}", f"--window-size={window}",
                 "--force-device-scale-factor=1"):
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)

