"""The ``mam-xr`` command line: a thin shell over the library.

Every command takes the tutorial configuration by default and accepts the
common overrides (``--scale``, ``--chi``, ...) or a JSON file of parameters
(``--params``).  Run ``mam-xr COMMAND --help`` for details.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import List, Optional

import typer

from .errors import MamXrError

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="The multi-area model of macaque visual cortex (Schmidt et al. 2018) "
                       "as labelled data.")
data_app = typer.Typer(no_args_is_help=True, help="Obtain, import and inspect the upstream data.")
app.add_typer(data_app, name="data")


# --- shared options ---------------------------------------------------------------

def _params(params_file: Optional[Path], preset: str, **overrides):
    """Params from a preset, an optional JSON file and the CLI overrides."""
    from .params import Params

    values = json.loads(params_file.read_text()) if params_file else {}
    shorthand = {k: v for k, v in overrides.items() if v is not None}
    if preset == "tutorial":
        return Params.tutorial(values, **shorthand)
    if preset == "default":
        return Params.from_dict(values, **shorthand)
    raise typer.BadParameter(f"--preset={preset!r} is invalid: expected 'tutorial' or 'default'")


def _fail(exc: Exception):
    typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=2)


PRESET = typer.Option("tutorial", "--preset", help="Base configuration: 'tutorial' (EBRAINS "
                      "tutorial, scale 0.005, chi 1) or 'default' (upstream defaults, full scale, chi 1.9).")
PARAMS = typer.Option(None, "--params", exists=True, dir_okay=False,
                      help="JSON file of (partial, nested) parameters, applied on the preset.")
SCALE = typer.Option(None, "--scale", help="Down-scaling of neurons and indegrees, in (0, 1].")
CHI = typer.Option(None, "--chi", help="Cortico-cortical weight factor chi (>= 1).")
CHI_I = typer.Option(None, "--chi-I", help="Extra CC factor onto inhibitory targets (default: "
                     "1 if chi == 1 else 2, as in the tutorial).")
DATA_DIR = typer.Option(None, "--data-dir", help="Local copy of the upstream data "
                        "(default: MAM_XR_DATA_DIR, then the cache, then download).")


# --- data -----------------------------------------------------------------------------

@data_app.command("fetch")
def data_fetch(data_dir: Optional[Path] = DATA_DIR):
    """Download (or find) and hash-check every upstream data file."""
    from . import data

    try:
        paths = data.fetch_all(data_dir)
    except MamXrError as exc:
        _fail(exc)
    typer.echo(f"{len(paths)} files verified (commit {data.COMMIT[:7]}).")


@data_app.command("import")
def data_import(source: Path = typer.Argument(..., help="Directory laid out like the upstream "
                                              "repository, e.g. a git checkout.")):
    """Copy a local upstream copy into the user cache (for offline machines)."""
    from . import data

    try:
        copied = data.import_directory(source)
    except MamXrError as exc:
        _fail(exc)
    typer.echo(f"imported {len(copied)} files into {data.cache_dir()}")


@data_app.command("info")
def data_info(data_dir: Optional[Path] = DATA_DIR):
    """Show the pinned commit, licence and where each file would be read from."""
    from . import data

    typer.echo(data.NOTICE)
    typer.echo(f"\ncache: {data.cache_dir()}")
    for name in data.REGISTRY:
        try:
            where = str(data.fetch(name, data_dir, download=False))
        except MamXrError:
            where = "not available locally (will be downloaded)"
        typer.echo(f"  {name}: {where}")


# --- parameters --------------------------------------------------------------------------

@app.command("params")
def params_cmd(preset: str = PRESET, params_file: Optional[Path] = PARAMS,
               scale: Optional[float] = SCALE, chi: Optional[float] = CHI,
               chi_I: Optional[float] = CHI_I):
    """Print the resolved, validated parameters as JSON, with their label."""
    try:
        p = _params(params_file, preset, scale=scale, chi=chi, chi_I=chi_I)
    except MamXrError as exc:
        _fail(exc)
    typer.echo(json.dumps({"label": p.label(), "params": json.loads(p.to_json())}, indent=2))


def main():  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
