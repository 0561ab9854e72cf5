#!/usr/bin/env bash
# MPI tests: build (or reuse the cached) NEST 3.10 wheel with MPI, make a virtualenv
# with mam_xr[test,cluster] and that NEST, and run `pytest -m mpi`.
#
#   bash runners/ci_mpi.sh              build if needed, then test
#   bash runners/ci_mpi.sh --if-cached  test only when the MPI wheel is already cached
#                                       (cheap enough for .ci/run; see docs/cluster.md)
#
# Environment:
#   MAM_XR_MPI_VENV      virtualenv to (re)use        (default: <repo>/.venv-mpi)
#   MAM_XR_WHEEL_CACHE   cache of the built wheel     (default: ~/.cache/mam_xr/wheels)
#   MAM_XR_DATA_DIR      upstream data                (default: ../shared/upstream-data)
#   MAM_XR_BUILD_NICE    nice level of the build      (default: 10)
# A cold build takes ~20-40 min on 2 shared cores (docs/cluster.md); a cached one seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
VENV=${MAM_XR_MPI_VENV:-$ROOT/.venv-mpi}
export MAM_XR_DATA_DIR=${MAM_XR_DATA_DIR:-$ROOT/../shared/upstream-data}

CACHE=${MAM_XR_WHEEL_CACHE:-$HOME/.cache/mam_xr/wheels}
if [[ "${1:-}" == "--if-cached" ]]; then
    pytag=$(python3 -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')
    if ! ls "$CACHE"/nest_simulator-3.10.0-"$pytag"-*.whl >/dev/null 2>&1; then
        echo "[ci_mpi] skipped: no cached MPI NEST wheel in $CACHE (build it with runners/build_nest_mpi.sh)"
        exit 0
    fi
fi

t0=$(date +%s)
if [[ ! -x "$VENV/bin/python" ]]; then
    python3 -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --upgrade pip
# mam_xr first (it pulls the PyPI nest-simulator), then the MPI wheel over it.
"$VENV/bin/python" -m pip install -q -e ".[test]" dask-jobqueue dask-mpi
nice -n "${MAM_XR_BUILD_NICE:-10}" bash runners/build_nest_mpi.sh "$VENV"
echo "[ci_mpi] environment ready in $(( $(date +%s) - t0 )) s"

"$VENV/bin/python" -m pytest -m mpi -q -p no:cacheprovider tests/test_mpi.py
