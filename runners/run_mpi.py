#!/usr/bin/env python
"""One NEST simulation of the multi-area model over MPI ranks, into one run store.

    mpirun -n R python runners/run_mpi.py CONFIG.json --out STORE [--threads T]
    srun          python runners/run_mpi.py CONFIG.json --out STORE      (SLURM)

CONFIG.json holds (partial, nested) parameters, applied on ``--preset``
(``tutorial``: the EBRAINS tutorial, scale 0.005; ``default``: upstream
defaults, full scale), e.g. the output of ``mam-xr params`` or
``Params.to_json()``.  Every rank runs this script; NEST spreads the network
over R ranks x T threads (T = ``--threads`` or ``simulation.threads``).  Rank 0
creates the store, every rank writes its own spikes, and the store is marked
complete only when every rank finished (mam_xr.parallel).  Run
``python -m mam_xr.parallel finalize STORE --exit-code $?`` after mpirun so
that a job that died is marked failed (runners/slurm_mpi.sbatch does).

Exit codes: 0 complete, 1 simulation failed, 2 invalid request.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path


def _exit(rank: int, code: int, exc: Exception) -> int:
    """Report and leave.  Under MPI a failed rank leaves at once (no MPI_Finalize,
    which could wait for peers blocked in NEST's next spike exchange): the
    launcher then sees the exit code and stops the other ranks."""
    print(f"error (rank {rank}): {exc}", file=sys.stderr, flush=True)
    from mam_xr import parallel

    if parallel.launcher_size() > 1:
        sys.stdout.flush()
        os._exit(code)
    return code


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("config", type=Path, help="JSON file of parameters (partial, nested)")
    ap.add_argument("--out", required=True, type=Path, help="run store to write (<run>.zarr)")
    ap.add_argument("--preset", choices=("tutorial", "default"), default="tutorial",
                    help="base configuration the JSON is applied on (default: tutorial)")
    ap.add_argument("--threads", type=int, default=None, help="NEST threads per rank")
    ap.add_argument("--overwrite", action="store_true", help="replace an existing store")
    ap.add_argument("--no-progress", action="store_true", help="no progress bar (rank 0)")
    args = ap.parse_args(argv)

    from mam_xr import parallel
    from mam_xr.errors import MamXrError, ParameterError, StoreError
    from mam_xr.params import Params

    rank = parallel.launcher_rank()
    say = (lambda *a: print(*a, flush=True)) if rank == 0 else (lambda *a: None)
    try:
        values = json.loads(args.config.read_text())
    except (OSError, ValueError) as exc:
        print(f"error: config={str(args.config)!r} is invalid: expected a readable JSON file ({exc})",
              file=sys.stderr)
        return 2
    try:
        base = Params.tutorial if args.preset == "tutorial" else Params.from_dict
        params = base(values)
        if args.threads is not None:
            params = params.update({"simulation": {"threads": args.threads}})
        from mam_xr.simulation import simulate

        t0 = time.perf_counter()
        run = simulate(params, store=args.out, overwrite=args.overwrite,
                       progress=not args.no_progress)
    except (ParameterError, StoreError) as exc:
        return _exit(rank, 2, exc)
    except MamXrError as exc:
        return _exit(rank, 1, exc)
    a = run.attrs
    say(f"{run.path}: status={a['status']} ranks={a['n_ranks']} threads={a['threads']} "
        f"virtual processes={a['n_vp']} spikes={a.get('n_spikes')} "
        f"wall={time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
