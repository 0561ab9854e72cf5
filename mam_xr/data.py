"""Upstream data files: a pinned, hash-checked registry.

mam_xr never redistributes upstream's data (CC BY-NC-SA 4.0).  Each file is
obtained, in this order, from

1. a directory given by the caller (``data_dir=``) or by the environment
   variable ``MAM_XR_DATA_DIR``, laid out like the upstream repository;
2. the user cache (``MAM_XR_CACHE_DIR`` or the platform cache directory);
3. a download of the file at the pinned upstream commit (with pooch).

Every file is checked against its sha256 wherever it comes from.  On an
offline cluster, ``mam-xr data import DIR`` (:func:`import_directory`) copies
a local copy into the cache once.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
from pathlib import Path

from .errors import DataError

#: Upstream repository and the commit every file is pinned to.
REPOSITORY = "INM-6/multi-area-model"
COMMIT = "355d94042f4fe613e5602918082f5e667695932e"
BASE_URL = f"https://raw.githubusercontent.com/{REPOSITORY}/{COMMIT}/"
LICENCE = "CC BY-NC-SA 4.0"

#: path in the upstream repository -> (sha256, size in bytes)
REGISTRY: dict[str, tuple[str, int]] = {
    "multiarea_model/data_multiarea/raw_data/ArchitecturalTypes.csv": ("0ddd0a66f2c3dec5add65734b6234b0b136e05cb77786209baba99ad94e93e45", 487),
    "multiarea_model/data_multiarea/raw_data/BinzeggerData.csv": ("7d811efdb3ac7ad49fd20bfb8bdba9c6d5c12bac3ec4e72202912762c592f3a1", 4092),
    "multiarea_model/data_multiarea/raw_data/CoCoMac_complete_81.json": ("13123c318e2c8ef2895533b1f8ca7ecb2216364b7d63087c346c3922ed96b71e", 91956),
    "multiarea_model/data_multiarea/raw_data/CorticalThickness.csv": ("471321e2fd96e220ca9d180b45b658e2be1d03d9765dfcc76030340eae8f3575", 796),
    "multiarea_model/data_multiarea/raw_data/Euclidean_Distances.csv": ("7c73d846270e42e684e7aa604bb79f5e16ea098f48d9290ea51dfd1a0d0e160c", 7148),
    "multiarea_model/data_multiarea/raw_data/Intrinsic_Connectivity.csv": ("9d0119cc25ac722e566df09c3c6df83da9bb35172f7badc8ec67bdfc50fd805c", 675),
    "multiarea_model/data_multiarea/raw_data/Intrinsic_FLN_Data.csv": ("4c2a04879841a96c0460fc857d0a0a941ec8facb30b59551a940e9f3c936870f", 231),
    "multiarea_model/data_multiarea/raw_data/Laminar_Thickness_cat.csv": ("ce6583d617f3866967649475cd28001a05c62014d60c6bd538065140bf2cbb01", 545),
    "multiarea_model/data_multiarea/raw_data/Markov2014_FLN_rawdata.csv": ("f81bec8f78bee8ca0b2b41feadaa731b10d8d5d7dfde57e7d8966867126c0351", 224199),
    "multiarea_model/data_multiarea/raw_data/Markov2014_InjectionSites.csv": ("2d369855d475ef4fa71ffa07c335d18239d977a1699f1c2a03516493463cce14", 2305),
    "multiarea_model/data_multiarea/raw_data/Median_Distances_81areas.csv": ("d160ae4b1921150e2ea5f2e5b09c46dff7f94c251daf5e87e4db5abbb88e4079", 86012),
    "multiarea_model/data_multiarea/raw_data/NeuronalDensities_NeuN.csv": ("dc82d2374217d6322aa785a19839269b0efa9df5df169ec1a525123719f7095b", 2440),
    "multiarea_model/data_multiarea/raw_data/NeuronalDensities_Nissl.csv": ("686544f2fe5441d27ae9c48fddbd660cfa20090e06016bd1f7d72e5b271a13d4", 1118),
    "multiarea_model/data_multiarea/raw_data/Numbers_V1.csv": ("6eea065e638cb564811de3eae87ceb0d59f38970cb22af41b9d6f4c254a88a5f", 469),
    "multiarea_model/data_multiarea/raw_data/RData_prepared_logdensities.txt": ("9946bdada0df1949f2aee509debd9e112012ba88ffcac6d24bc1aca1aa743ff1", 18044),
    "multiarea_model/data_multiarea/raw_data/SLN_Data.csv": ("daee5e4c64880b8c8b6891bd11c288f932d2e320e5ca7f64d4d1f3d89666c31f", 17074),
    "multiarea_model/data_multiarea/raw_data/SchemeTranslation.csv": ("68a771d2bffaab6ee24b808b063e2c2224aa05528a0120c64d1508b3dc5396ab", 382),
    "multiarea_model/data_multiarea/raw_data/SynapticDensity_Cragg.csv": ("4de57985802e50e6f321df310c246b11752f7cf53589ccd12659d9be79ea6cee", 174),
    "multiarea_model/data_multiarea/raw_data/SynapticDensity_OKusky.csv": ("6f2f6131b7b5743fb185f3d163d15a0e0f698dfcde93bdefba54be6446400746", 274),
    "multiarea_model/data_multiarea/raw_data/Thom_Distances.csv": ("b57142543b923950b79d6e8ad6fbc273592755381aa3415822a38b9b9c12aa80", 7226),
    "multiarea_model/data_multiarea/raw_data/Thom_Distances_MERetal12.csv": ("5a90eabfd744cb795f1aeeec580b686c17f18dece8a7bb1e3a61da03af737e5b", 116956),
    "multiarea_model/data_multiarea/raw_data/cocomac_confirmative_studies.json": ("3c1093a248a96ebe2849267228b937e578f65458d099cde95efafe5c1ec72d8f", 34080),
    "multiarea_model/data_multiarea/raw_data/cocomac_negative_studies.json": ("69e01ea742e927721251b1ea61125fc330e0b5d38e06e7f4c4a5001760a52d17", 33962),
    "multiarea_model/data_multiarea/raw_data/cortical_surface.csv": ("90cfad128b8629047514fd9e4b3e499b7aee950a0196e37e12ee4c9141e81b23", 409),
    "multiarea_model/data_multiarea/raw_data/hierarchy_Markov.csv": ("266416a2f695b2025dec74462f62cf6646931e2bf1f7b1fdccf53ce9d4d68360", 438),
    "multiarea_model/data_multiarea/raw_data/hierarchy_Reid.csv": ("9181bfd36e87b6ac3a6b3121bdb6b276faa0b609fed0bea743cc587ef168e774", 472),
    "multiarea_model/data_multiarea/raw_data/laminar_thicknesses_macaque.csv": ("826510dfb613d19e142cd162acc27b80428b5518b47a4de5950883243ddd234e", 31584),
    "multiarea_model/data_multiarea/raw_data/overlap.json": ("6b1085ba75bddb27ba37121a00cee4b22373b0984f795836423769daaa97d968", 19561),
    "multiarea_model/data_multiarea/viscortex_processed_data_backup.json": ("074465ee137fdd94cad9c88360c83ba309954723cf55d0e8303af3777e76a042", 28372),
    "multiarea_model/data_multiarea/viscortex_raw_data.json": ("1cb430c920ea732c3b22cd26b57cffc80fd13e0808fdc9f38f3bccc411d0d2d6", 655274),
    "figures/SchueckerSchmidt2017/K_prime_original.npy": ("cc970f6089dd1c997d7978c9fe6db44017cb478b7ad48e6963343d87fa9c3c58", 516208),
    "tests/fullscale_rates.json": ("7eabe2ffcbe6890f8b86d36dbd20eeff2f3a82aa3e294129024d0fd182b43e73", 7952),
    "figures/Schmidt2018_dyn/Fig8_exp_func_conn.csv": ("22b82150e2fbab2e09cb84df60ea69f500a0b8ed21141a78b889000436a75641", 316669),
    "M2E_pop_rates_ref.npy": ("7927f914af6d97ed97dd0cb6ef85293bedfeba348eea74b081c2acdc63dd89ff", 2176),
}

RAW = "multiarea_model/data_multiarea/raw_data/"

NOTICE = f"""\
mam_xr uses the anatomical data of the multi-area model (Schmidt et al. 2018,
github.com/{REPOSITORY}, commit {COMMIT[:7]}), licensed {LICENCE}.
They compile published data (Markov et al. 2014; Hilgetag et al. 2016;
Binzegger et al. 2004; Potjans & Diesmann 2014; CoCoMac; Cragg 1967;
O'Kusky & Colonnier 1982; Schuecker et al. 2017). mam_xr does not
redistribute them; see docs/data.md."""


def cache_dir() -> Path:
    """Directory of the user cache (``MAM_XR_CACHE_DIR`` overrides the default)."""
    env = os.environ.get("MAM_XR_CACHE_DIR")
    if env:
        return Path(env).expanduser() / COMMIT[:12]
    import pooch

    return Path(pooch.os_cache("mam_xr")) / COMMIT[:12]


def sha256(path: Path) -> str:
    """sha256 hex digest of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _check_name(name: str) -> str:
    if name not in REGISTRY:
        # Allow the bare file name of a registered file.
        matches = [p for p in REGISTRY if p.rsplit("/", 1)[-1] == name]
        if len(matches) != 1:
            raise DataError(
                f"file={name!r} is invalid: expected one of the registered upstream "
                f"files ({len(REGISTRY)}), e.g. {RAW}Numbers_V1.csv"
            )
        name = matches[0]
    return name


def _how_to_provide(name: str) -> str:
    return (
        f"Provide it by (a) passing data_dir=DIR or setting MAM_XR_DATA_DIR=DIR, where "
        f"DIR/{name} is the upstream file; (b) running `mam-xr data import DIR` once to "
        f"copy a local upstream checkout into the cache ({cache_dir()}); or (c) letting "
        f"mam_xr download it from {BASE_URL}{name}."
    )


def _verified(path: Path, name: str) -> Path:
    expected = REGISTRY[name][0]
    got = sha256(path)
    if got != expected:
        raise DataError(
            f"file {name} at {path} is corrupt: sha256 {got} differs from the expected "
            f"{expected}. " + _how_to_provide(name)
        )
    return path


def _show_notice_once() -> None:
    marker = cache_dir() / ".notice_shown"
    if marker.exists():
        return
    print(NOTICE, file=sys.stderr)
    try:
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.touch()
    except OSError:
        pass


def fetch(name: str, data_dir: str | os.PathLike | None = None, download: bool = True) -> Path:
    """Path of a verified upstream data file.

    Parameters
    ----------
    name
        Path inside the upstream repository (a key of :data:`REGISTRY`) or a
        registered file's bare name.
    data_dir
        Directory laid out like the upstream repository; defaults to
        ``MAM_XR_DATA_DIR``.  Looked at before the cache.
    download
        Download from the pinned commit when the file is nowhere else.
    """
    name = _check_name(name)
    data_dir = data_dir if data_dir is not None else os.environ.get("MAM_XR_DATA_DIR")
    if data_dir:
        local = Path(data_dir).expanduser() / name
        if local.is_file():
            return _verified(local, name)
    cached = cache_dir() / name
    if cached.is_file():
        return _verified(cached, name)
    if not download:
        raise DataError(
            f"file {name} (sha256 {REGISTRY[name][0]}) was not found"
            + (f" in data_dir={str(data_dir)!r}" if data_dir else "")
            + " nor in the cache. " + _how_to_provide(name)
        )
    _show_notice_once()
    try:
        import pooch

        path = pooch.retrieve(
            BASE_URL + name, known_hash=f"sha256:{REGISTRY[name][0]}",
            fname=name.rsplit("/", 1)[-1], path=cached.parent, progressbar=False,
        )
    except Exception as exc:  # network errors, hash mismatches, ...
        raise DataError(
            f"file {name} (sha256 {REGISTRY[name][0]}) could not be downloaded: {exc}. "
            + _how_to_provide(name)
        ) from exc
    return Path(path)


def fetch_all(data_dir=None, download: bool = True) -> dict[str, Path]:
    """Fetch and verify every registered file; returns name -> path."""
    return {name: fetch(name, data_dir, download) for name in REGISTRY}


def import_directory(source: str | os.PathLike) -> list[Path]:
    """Copy every registered file found under ``source`` into the cache.

    ``source`` is laid out like the upstream repository (e.g. a git checkout
    at the pinned commit).  Each file is hash-checked before it is copied;
    a missing or corrupt file raises :class:`DataError` and nothing after it
    is copied.
    """
    source = Path(source).expanduser()
    if not source.is_dir():
        raise DataError(f"source={str(source)!r} is invalid: expected a directory laid out "
                        "like the upstream repository")
    copied = []
    for name in REGISTRY:
        src = source / name
        if not src.is_file():
            raise DataError(f"file {name} is missing under {source}. " + _how_to_provide(name))
        _verified(src, name)
        dst = cache_dir() / name
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst)
        copied.append(dst)
    return copied


def provenance(data_dir=None) -> dict:
    """Where the data come from: repository, commit, licence and every sha256."""
    return {
        "repository": REPOSITORY,
        "commit": COMMIT,
        "licence": LICENCE,
        "sha256": {name: h for name, (h, _) in REGISTRY.items()},
    }
