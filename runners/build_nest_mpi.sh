#!/usr/bin/env bash
# Build (once) and cache a NEST 3.10 wheel with MPI and OpenMP, then optionally install it.
#
# The PyPI nest-simulator wheel has no MPI; this builds the same release from the PyPI sdist.
#
# Usage:  runners/build_nest_mpi.sh [VENV]
#   VENV  virtualenv whose pip/python builds the wheel (default: /work/venv-mpi; created with
#         `python3 -m venv` if missing). The wheel is installed into VENV unless
#         MAM_XR_NO_INSTALL=1.
# Environment:
#   MAM_XR_WHEEL_CACHE   wheel cache directory (default ~/.cache/mam_xr/wheels)
#   MAM_XR_BUILD_JOBS    parallel compile jobs (default: number of cores)
#   MAM_XR_NO_APT=1      skip the apt-get step (packages already present / not root)
#   NEST_VERSION         default 3.10.0
# The build takes ~15-25 min on 2 cores; when a matching wheel is cached it is skipped.
set -euo pipefail

VENV=${1:-/work/venv-mpi}
NEST_VERSION=${NEST_VERSION:-3.10.0}
CACHE=${MAM_XR_WHEEL_CACHE:-$HOME/.cache/mam_xr/wheels}
JOBS=${MAM_XR_BUILD_JOBS:-$(nproc)}
mkdir -p "$CACHE"

log() { echo "[build_nest_mpi $(date -u +%H:%M:%S)] $*"; }

# 1. system packages (MPI, GSL, Boost, libltdl)
if [[ "${MAM_XR_NO_APT:-0}" != 1 ]]; then
    need=()
    for p in libopenmpi-dev openmpi-bin libgsl-dev libboost-dev libltdl-dev; do
        dpkg -s "$p" >/dev/null 2>&1 || need+=("$p")
    done
    if ((${#need[@]})); then
        log "apt-get install ${need[*]}"
        SUDO=""; [[ $(id -u) -ne 0 ]] && SUDO=sudo
        $SUDO apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}"
    fi
fi

# 2. the virtualenv and the Python build requirements
if [[ ! -x "$VENV/bin/python" ]]; then
    log "creating venv $VENV"
    python3 -m venv "$VENV"
fi
PY="$VENV/bin/python"
"$PY" -m pip install -q --upgrade pip
"$PY" -m pip install -q scikit-build-core cython mpi4py numpy

# 3. the wheel, built once per (NEST version, Python tag, platform) and cached
pytag=$("$PY" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')
wheel=$(ls "$CACHE"/nest_simulator-"$NEST_VERSION"-"$pytag"-*.whl 2>/dev/null | head -n1 || true)
if [[ -n "$wheel" ]]; then
    log "cached wheel: $wheel"
else
    log "building nest-simulator==$NEST_VERSION with MPI+OpenMP ($JOBS jobs) into $CACHE"
    t0=$(date +%s)
    tmp=$(mktemp -d)
    CMAKE_ARGS="-Dwith-mpi=ON -Dwith-openmp=ON" \
    CMAKE_BUILD_PARALLEL_LEVEL="$JOBS" \
        "$PY" -m pip wheel --no-deps --no-build-isolation --no-binary nest-simulator \
        -w "$tmp" "nest-simulator==$NEST_VERSION"
    built=$(ls "$tmp"/nest_simulator-*.whl)
    # tag the cached file by what it contains so a PyPI wheel never shadows it
    mv "$built" "$CACHE/"
    wheel="$CACHE/$(basename "$built")"
    rmdir "$tmp" || true
    log "built $wheel in $(( $(date +%s) - t0 )) s"
    echo "$(( $(date +%s) - t0 ))" > "$CACHE/.build_seconds_nest_$NEST_VERSION"
fi

# 4. install into the venv (over any PyPI nest-simulator)
if [[ "${MAM_XR_NO_INSTALL:-0}" != 1 ]]; then
    "$PY" -m pip install -q --force-reinstall --no-deps "$wheel"
    "$PY" - <<'PYEOF'
import nest
print("NEST", nest.__version__, "have_mpi =", nest.build_info["have_mpi"])
assert nest.build_info["have_mpi"], "the installed NEST has no MPI"
PYEOF
fi
echo "$wheel"
