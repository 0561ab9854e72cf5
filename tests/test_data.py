"""The pinned data registry: lookup order, hash checks, offline import, error messages."""

import shutil

import pytest

from mam_xr import DataError, data


def test_registry_covers_the_manifest(data_dir):
    rows = [l.split("\t") for l in (data_dir / "MANIFEST.tsv").read_text().splitlines()[1:]]
    assert {r[0]: r[2] for r in rows} == {k: v[0] for k, v in data.REGISTRY.items()}
    assert data.COMMIT == "355d94042f4fe613e5602918082f5e667695932e"


def test_fetch_from_data_dir_by_path_and_bare_name(data_dir):
    p = data.fetch("multiarea_model/data_multiarea/raw_data/Numbers_V1.csv", data_dir)
    assert p == data_dir / "multiarea_model/data_multiarea/raw_data/Numbers_V1.csv"
    assert data.fetch("K_prime_original.npy", data_dir).name == "K_prime_original.npy"


def test_unknown_file_is_rejected():
    with pytest.raises(DataError, match=r"file='nope.csv' is invalid: expected one of the registered"):
        data.fetch("nope.csv")


def _copy_tree(src, dst, names):
    for name in names:
        (dst / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src / name, dst / name)


def test_corrupt_file_names_file_hash_and_remedies(tmp_path, data_dir):
    name = "multiarea_model/data_multiarea/raw_data/Numbers_V1.csv"
    _copy_tree(data_dir, tmp_path, [name])
    (tmp_path / name).write_text("tampered")
    with pytest.raises(DataError) as info:
        data.fetch(name, tmp_path)
    msg = str(info.value)
    assert name in msg and data.REGISTRY[name][0] in msg
    assert "MAM_XR_DATA_DIR" in msg and "mam-xr data import" in msg


def test_missing_file_offline_names_hash_and_remedies(tmp_path, monkeypatch):
    monkeypatch.setenv("MAM_XR_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("MAM_XR_DATA_DIR", raising=False)
    with pytest.raises(DataError) as info:
        data.fetch("Numbers_V1.csv", tmp_path / "empty", download=False)
    msg = str(info.value)
    assert "was not found" in msg and data.REGISTRY[data.RAW + "Numbers_V1.csv"][0] in msg
    assert "mam-xr data import" in msg


def test_import_directory_fills_the_cache(tmp_path, monkeypatch, data_dir):
    monkeypatch.setenv("MAM_XR_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("MAM_XR_DATA_DIR", raising=False)
    copied = data.import_directory(data_dir)
    assert len(copied) == len(data.REGISTRY)
    # Now found in the cache without any data_dir and without network.
    p = data.fetch("Numbers_V1.csv", download=False)
    assert p.is_relative_to(tmp_path / "cache")


def test_import_directory_rejects_incomplete_copy(tmp_path, monkeypatch):
    monkeypatch.setenv("MAM_XR_CACHE_DIR", str(tmp_path / "cache"))
    (tmp_path / "src").mkdir()
    with pytest.raises(DataError, match="is missing under"):
        data.import_directory(tmp_path / "src")


def test_provenance_lists_every_hash():
    prov = data.provenance()
    assert prov["commit"] == data.COMMIT and prov["licence"] == "CC BY-NC-SA 4.0"
    assert len(prov["sha256"]) == len(data.REGISTRY)
