"""The ``mam-xr`` command line: a thin shell over the library.

Every command takes the tutorial configuration by default and accepts the
common overrides (``--scale``, ``--chi``, ...) or a JSON file of parameters
(``--params``).  Run ``mam-xr COMMAND --help`` for details.
"""

from __future__ import annotations

import functools
import json
import sys
import traceback
from pathlib import Path
from typing import List, Optional

import typer

from . import __version__
from .errors import MamXrError, ParameterError, StoreError, invalid
from .params import Params

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="The multi-area model of macaque visual cortex (Schmidt et al. 2018) "
                       "as labelled data.")
data_app = typer.Typer(no_args_is_help=True, help="Obtain, import and inspect the upstream data.")
app.add_typer(data_app, name="data")

_STATE: dict = {"debug": False}
#: Python argument names in library messages -> the CLI flags users type.
_CLI_TERMS = {"overwrite=True": "--overwrite", "allow_incomplete=True": "--allow-incomplete"}


def _versions() -> str:
    """mam_xr's version and the simulators' (from package metadata: nothing is imported)."""
    from importlib.metadata import PackageNotFoundError, version

    lines = [f"mam_xr {__version__}"]
    for name, dist in (("NEST", "nest-simulator"), ("Brian2", "brian2")):
        try:
            lines.append(f"{name} {version(dist)}")
        except PackageNotFoundError:
            lines.append(f"{name} not installed")
    return "\n".join(lines)


def _print_version(value: bool):
    if value:
        typer.echo(_versions())
        raise typer.Exit()


@app.callback()
def _main(debug: bool = typer.Option(False, "--debug", help="Print the full traceback of an error.",
                                     show_default="off"),
          version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                       help="Print the versions of mam_xr, NEST and Brian2 and exit.",
                                       show_default="off")):
    """The multi-area model of macaque visual cortex (Schmidt et al. 2018) as labelled data."""
    _STATE["debug"] = debug


def _cli_terms(text: str) -> str:
    for py, flag in _CLI_TERMS.items():
        text = text.replace(py, flag)
    return text


def _debug_traceback():
    if _STATE["debug"]:
        traceback.print_exc()


def _handled(command):
    """One line (no traceback unless --debug) for every error a command meets:
    exit 2 for invalid input and mam_xr errors, 1 for the rest, 130 for Ctrl-C."""
    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except (typer.Exit, typer.Abort, SystemExit):
            raise
        except KeyboardInterrupt:
            _debug_traceback()
            where = _STATE.pop("writing", None)
            if where and (Path(where) / "zarr.json").is_file():
                detail = (f": run store {where} is marked failed; its committed segments stay readable "
                          "(--allow-incomplete)")
            else:
                detail = f" before run store {where} was created" if where else ""
            typer.secho(f"interrupted (Ctrl-C){detail}", fg=typer.colors.RED, err=True)
            raise typer.Exit(code=130)
        except MamXrError as exc:
            _fail(exc)
        except OSError as exc:
            _debug_traceback()
            at = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
            typer.secho(f"error: {exc.strerror or exc}{at}", fg=typer.colors.RED, err=True)
            raise typer.Exit(code=1)
        except Exception as exc:  # noqa: BLE001 - one line; --debug shows the traceback
            _debug_traceback()
            typer.secho(f"error: {type(exc).__name__}: {_cli_terms(str(exc))} (rerun with --debug "
                        "for the traceback)", fg=typer.colors.RED, err=True)
            raise typer.Exit(code=1)
    return wrapper


# --- shared options ---------------------------------------------------------------

def _params(params_file: Optional[Path], preset: str, **overrides):
    """Params from a preset, an optional JSON file and the CLI overrides."""
    values = json.loads(params_file.read_text()) if params_file else {}
    shorthand = {k: v for k, v in overrides.items() if v is not None}
    if preset == "tutorial":
        return Params.tutorial(values, **shorthand)
    if preset == "default":
        return Params.from_dict(values, **shorthand)
    raise typer.BadParameter(f"--preset={preset!r} is invalid: expected 'tutorial' or 'default'")


def _fail(exc: Exception):
    _debug_traceback()
    typer.secho(f"error: {_cli_terms(str(exc))}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=2)


def _preset_default(path: str, unset: str = "none") -> str:
    """What an option left out means, for its --help: the value of parameter
    ``path`` (dotted) in the presets, e.g. ``tutorial 0.005, default 1``."""
    values = []
    for name in ("tutorial", "default"):
        value = _PRESETS[name]
        for part in path.split("."):
            value = getattr(value, part)
        if value is None:
            values.append(unset)
        elif isinstance(value, tuple):
            values.append(f"all {len(value)}" if len(value) == 32 else ",".join(value))
        else:
            values.append(f"{value:g}" if isinstance(value, float) else str(value))
    if values[0] == values[1]:
        return values[0]
    return f"tutorial {values[0]}, default {values[1]}"


def _fraction(flag: str, value: Optional[float]) -> Optional[float]:
    """A down-scaling factor given by flag (--n-scaling, --k-scaling): in (0, 1], named if not."""
    if value is not None and not 0 < value <= 1:  # NaN fails too
        raise ParameterError(invalid(flag, value, "a down-scaling factor in (0, 1]"))
    return value


def _scaling_overrides(n_scaling: Optional[float], k_scaling: Optional[float]) -> dict:
    return {"neuron_scaling": _fraction("--n-scaling", n_scaling),
            "indegree_scaling": _fraction("--k-scaling", k_scaling)}


_PRESETS = {"tutorial": Params.tutorial(), "default": Params()}

PRESET = typer.Option("tutorial", "--preset", help="Base configuration: 'tutorial' (EBRAINS "
                      "tutorial, scale 0.005, chi 1) or 'default' (upstream defaults, full scale, chi 1.9).")
PARAMS = typer.Option(None, "--params", exists=True, dir_okay=False, show_default="none",
                      help="JSON file of (partial, nested) parameters, applied on the preset.")
SCALE = typer.Option(None, "--scale", help="Down-scaling of neurons and indegrees, in (0, 1].",
                     show_default=_preset_default("network.scale"))
N_SCALING = typer.Option(None, "--n-scaling", help="Down-scaling of neuron numbers alone (N_scaling), "
                         "in (0, 1].", show_default="--scale")
K_SCALING = typer.Option(None, "--k-scaling", help="Down-scaling of indegrees alone (K_scaling), "
                         "in (0, 1].", show_default="--scale")
CHI = typer.Option(None, "--chi", help="Cortico-cortical weight factor chi (>= 1).",
                   show_default=_preset_default("network.connection.chi"))
CHI_I = typer.Option(None, "--chi-I", help="Extra CC factor onto inhibitory targets (default: "
                     "1 if chi == 1 else 2, as in the tutorial).",
                     show_default=_preset_default("network.connection.chi_I"))
DATA_DIR = typer.Option(None, "--data-dir", help="Local copy of the upstream data "
                        "(default: MAM_XR_DATA_DIR, then the cache, then download).",
                        show_default="MAM_XR_DATA_DIR, cache, download")


# --- data -----------------------------------------------------------------------------

@data_app.command("fetch")
@_handled
def data_fetch(data_dir: Optional[Path] = DATA_DIR):
    """Download (or find) and hash-check every upstream data file."""
    from . import data

    try:
        paths = data.fetch_all(data_dir)
    except MamXrError as exc:
        _fail(exc)
    typer.echo(f"{len(paths)} files verified (commit {data.COMMIT[:7]}).")


@data_app.command("import")
@_handled
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
@_handled
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
@_handled
def params_cmd(preset: str = PRESET, params_file: Optional[Path] = PARAMS,
               scale: Optional[float] = SCALE, chi: Optional[float] = CHI,
               chi_I: Optional[float] = CHI_I):
    """Print the resolved, validated parameters as JSON, with their label."""
    try:
        p = _params(params_file, preset, scale=scale, chi=chi, chi_I=chi_I)
    except MamXrError as exc:
        _fail(exc)
    typer.echo(json.dumps({"label": p.label(), "params": json.loads(p.to_json())}, indent=2))


T_SIM = typer.Option(None, "--t-sim", help="Simulated time (ms).",
                     show_default=_preset_default("simulation.t_sim"))
AREAS_OPT = typer.Option(None, "--areas", help="Comma-separated areas to simulate (default: all 32).",
                         show_default=_preset_default("simulation.areas_simulated"))
REPLACE = typer.Option(None, "--replace", help="Replacement of non-simulated areas: "
                       "hom_poisson_stat, het_poisson_stat or het_current_nonstat.",
                       show_default=_preset_default("simulation.replace_non_simulated_areas"))
THREADS = typer.Option(None, "--threads", help="Threads per process.",
                       show_default=_preset_default("simulation.threads"))
SEED = typer.Option(None, "--seed", help="Master RNG seed (>= 1).",
                    show_default=_preset_default("simulation.seed"))
SEGMENT = typer.Option(None, "--segment", help="Simulated ms between two writes of spikes to the store.",
                       show_default=_preset_default("simulation.segment"))


def _sim_overrides(t_sim, areas, replace, threads, seed, **more):
    out = {"t_sim": t_sim, "threads": threads, "seed": seed,
           "replace_non_simulated_areas": replace, **more}
    if areas:
        out["areas_simulated"] = [a.strip() for a in areas.split(",") if a.strip()]
    return out


def _default_out(kind: str, label: str) -> Path:
    out = Path("runs") / f"{kind}-{label[:12]}.zarr"
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"--out is not given and the default {out} cannot be created in the working "
                         f"directory ({exc.strerror or exc}): pass --out PATH in a writable "
                         "directory") from None
    return out


def _check_out(out: Path, overwrite: bool) -> Path:
    """--out problems before any computation: a writable place, and an existing
    path only with --overwrite and only if it is a mam_xr store no one is writing."""
    from . import store

    store.check_writable(out)
    return store.check_target(out, overwrite, name="--out", flag="--overwrite")


@app.command("structure")
@_handled
def structure_cmd(preset: str = PRESET, params_file: Optional[Path] = PARAMS,
                  scale: Optional[float] = SCALE, chi: Optional[float] = CHI,
                  chi_I: Optional[float] = CHI_I, data_dir: Optional[Path] = DATA_DIR,
                  out: Optional[Path] = typer.Option(None, "--out", help="Zarr store to write.",
                                                     show_default="runs/structure-<label>.zarr")):
    """Build the model structure (neurons, indegrees, weights, delays) and save it to Zarr."""
    from . import store, structure

    try:
        p = _params(params_file, preset, scale=scale, chi=chi, chi_I=chi_I)
        out = out or _default_out("structure", p.network_label())
        _check_out(out, overwrite=True)  # replaces only a mam_xr store
        ds = structure.build(p, data_dir=data_dir)
        store.save_structure(ds, out)
    except MamXrError as exc:
        _fail(exc)
    n = float(ds["neurons"].sum())
    syn = float(ds["synapses"].sum())
    typer.echo(f"{out}\n{n:,.0f} neurons, {syn:,.0f} internal synapses, label {p.network_label()}")


@app.command("theory")
@_handled
def theory_cmd(preset: str = PRESET, params_file: Optional[Path] = PARAMS,
               scale: Optional[float] = SCALE, chi: Optional[float] = CHI,
               chi_I: Optional[float] = CHI_I, data_dir: Optional[Path] = DATA_DIR,
               T: Optional[float] = typer.Option(None, "--T", help="Integration time (ms) of the "
                                                 "mean-field pseudo-dynamics.",
                                                 show_default=_preset_default("theory.T")),
               dt: Optional[float] = typer.Option(None, "--dt", help="Integration step (ms).",
                                                  show_default=_preset_default("theory.dt")),
               fixed_point: bool = typer.Option(True, "--fixed-point/--no-fixed-point",
                                                help="Also solve for the fixed point and its stability."),
               out: Optional[Path] = typer.Option(None, "--out", show_default="none",
                                                  help="Zarr store to create (groups 'theory' and "
                                                  "'fixed_point'; 'atlas' with --atlas)."),
               overwrite: bool = typer.Option(False, "--overwrite", show_default="off",
                                              help="Replace an existing mam_xr store at --out."),
               atlas_spec: Optional[str] = typer.Option(
                   None, "--atlas", show_default="none",
                   help="Instead: every fixed-point branch over a range, e.g. "
                   "chi=1.0:2.5:0.01 (chi, chi_I, g or rate_ext; stop included; docs/atlas.md).")):
    """Mean-field (Siegert) rates: upstream's integration, then the fixed point."""
    from . import store, structure, theory

    try:
        p = _params(params_file, preset, scale=scale, chi=chi, chi_I=chi_I,
                    **{"theory.T": T, "theory.dt": dt})
        if out:
            _check_out(out, overwrite)  # before any computation
        attrs = {"label": p.label(), "params": p.to_json()}
        if atlas_spec is not None:
            from . import atlas

            name, values = atlas.parse_spec(atlas_spec)
            ds = atlas.atlas(p, data_dir=data_dir, **{name: values})
            typer.echo(atlas.summary(ds))
            if out:
                store.save_theory({"atlas": ds}, out, overwrite=overwrite, attrs=attrs)
                typer.echo(f"written to {out} (group atlas)")
            return
        net = structure.build(p, data_dir=data_dir)
        th = theory.integrate(net, p)
        converged = bool(th["converged"].all())
        typer.echo(f"integration (T = {p.theory.T:g} ms, dt = {p.theory.dt:g} ms): mean rate "
                   f"{float(th['rate'].mean()):.4f} spikes/s, "
                   f"{'converged' if converged else 'NOT converged'}")
        groups = {"theory": th}
        if fixed_point:
            fp = groups["fixed_point"] = theory.fixed_point(net, p, initial=th)
            typer.echo(f"fixed point: mean rate {float(fp['rate'].mean()):.4f} spikes/s, "
                       f"converged {bool(fp['converged'].all())}, "
                       f"stable {bool(fp['stable'].all()) if 'stable' in fp else 'n/a'}")
        if out:
            store.save_theory(groups, out, overwrite=overwrite, attrs=attrs)
            typer.echo(f"written to {out} (groups {', '.join(groups)})")
    except MamXrError as exc:
        _fail(exc)


@app.command("run")
@_handled
def run_cmd(preset: str = PRESET, params_file: Optional[Path] = PARAMS,
            scale: Optional[float] = SCALE, n_scaling: Optional[float] = N_SCALING,
            k_scaling: Optional[float] = K_SCALING, chi: Optional[float] = CHI,
            chi_I: Optional[float] = CHI_I, t_sim: Optional[float] = T_SIM,
            areas: Optional[str] = AREAS_OPT, replace: Optional[str] = REPLACE,
            threads: Optional[int] = THREADS, seed: Optional[int] = SEED,
            engine: Optional[str] = typer.Option(None, "--engine", help="nest or brian2.",
                                                 show_default=_preset_default("simulation.engine")),
            segment: Optional[float] = SEGMENT,
            data_dir: Optional[Path] = DATA_DIR,
            out: Optional[Path] = typer.Option(None, "--out", help="Run store to create.",
                                               show_default="runs/run-<label>.zarr"),
            overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing store.",
                                           show_default="off"),
            analysis: bool = typer.Option(True, "--analysis/--no-analysis",
                                          help="Compute every statistic into the store."),
            report: bool = typer.Option(True, "--report/--no-report",
                                        help="Write <store>.html next to the store."),
            progress: bool = typer.Option(True, "--progress/--no-progress",
                                          help="Show a progress bar."),
            ignore_memory_check: bool = typer.Option(False, "--ignore-memory-check", show_default="off",
                                                     help="Run even if the planner predicts more "
                                                          "memory than is available.")):
    """Simulate the model (tutorial configuration by default) into a Zarr run store.

    Writes the structure, the mean-field prediction, the spikes and (by default)
    every statistic and an HTML report; prints the store's path and the mean rate.
    """
    from . import simulation, store, structure, theory

    try:
        p = _params(params_file, preset, scale=scale, chi=chi, chi_I=chi_I,
                    **_scaling_overrides(n_scaling, k_scaling),
                    **_sim_overrides(t_sim, areas, replace, threads, seed,
                                     engine=engine, segment=segment))
        out = out or _default_out("run", p.label())
        _check_out(out, overwrite)  # before the structure and the theory are computed
        net = structure.build(p, data_dir=data_dir)
        th = theory.integrate(net, p, warn=False)  # once: the planner below uses it too
        if not ignore_memory_check:  # before anything is written
            from . import planner

            planner.check_memory(p, net, theory=th)
        typer.echo(f"mean-field prediction: {float(th['rate'].mean()):.4f} spikes/s "
                   f"({'converged' if bool(th['converged'].all()) else 'not converged'})")
        _STATE["writing"] = str(out)
        run = simulation.simulate(p, store=out, structure=net, progress=progress,
                                  overwrite=overwrite, check_memory=False)  # checked above
        _STATE.pop("writing", None)
        store.write_dataset(th, out, "theory")
        typer.echo(f"{out}\nstatus {run.status}; mean rate {run.mean_rate():.4f} spikes/s "
                   f"(all neurons, 0-{p.simulation.t_sim:g} ms)")
        if analysis:
            _analyze_and_report(out, report)
    except MamXrError as exc:
        _fail(exc)


@app.command("plan")
@_handled
def plan_cmd(preset: str = PRESET, params_file: Optional[Path] = PARAMS,
             scale: Optional[float] = SCALE, n_scaling: Optional[float] = N_SCALING,
             k_scaling: Optional[float] = K_SCALING, chi: Optional[float] = CHI,
             chi_I: Optional[float] = CHI_I, t_sim: Optional[float] = T_SIM,
             areas: Optional[str] = AREAS_OPT, replace: Optional[str] = REPLACE,
             threads: Optional[int] = THREADS, seed: Optional[int] = SEED,
             engine: Optional[str] = typer.Option(None, "--engine", help="Only this engine.",
                                                  show_default="nest and brian2"),
             segment: Optional[float] = SEGMENT,
             data_dir: Optional[Path] = DATA_DIR,
             ranks: int = typer.Option(1, "--ranks", help="MPI ranks of the run (NEST; memory is "
                                       "then per rank)."),
             memory_per_node: float = typer.Option(128.0, "--memory-per-node",
                                                   help="Cluster node memory (GiB) for the "
                                                        "cluster layout."),
             cores_per_node: int = typer.Option(128, "--cores-per-node", help="Cluster node cores."),
             ranks_per_node: int = typer.Option(2, "--ranks-per-node", help="MPI ranks per "
                                                "cluster node."),
             as_json: bool = typer.Option(False, "--json", help="Print the plan as JSON.",
                                          show_default="off")):
    """Predict what a run needs before anything is drawn: neurons, synapses, spikes,
    peak memory, store size and times per engine and threads, and a cluster layout.

    Takes the same options as ``run``; nothing is written.
    """
    from . import planner

    try:
        p = _params(params_file, preset, scale=scale, chi=chi, chi_I=chi_I,
                    **_scaling_overrides(n_scaling, k_scaling),
                    **_sim_overrides(t_sim, areas, replace, threads, seed, segment=segment))
        from . import structure

        net = structure.build(p, data_dir=data_dir)
        rep = planner.plan(p, net, engines=engine, ranks=ranks,
                           memory_per_node=memory_per_node * planner.GiB,
                           cores_per_node=cores_per_node, ranks_per_node=ranks_per_node)
    except MamXrError as exc:
        _fail(exc)
    typer.echo(json.dumps(rep.to_dict(), indent=2) if as_json else str(rep))


def _analyze_and_report(path: Path, report: bool, **definition):
    from . import analysis

    stats = analysis.analyze(str(path), **definition)
    if "rates" in stats:
        rates = stats["rates"]
        typer.echo(f"population rates ({rates.attrs['t_min_ms']:g}-{rates.attrs['t_max_ms']:g} ms): "
                   f"mean {float(rates['rate'].mean()):.4f} spikes/s")
    if report:
        html = _write_report(path)
        typer.echo(f"report: {html}")


def _write_report(path: Path, out: Optional[Path] = None, allow_incomplete: bool = False) -> Path:
    from . import report

    out = out or Path(str(path).rstrip("/")).with_suffix(".html")
    return report.report_for(path, out, allow_incomplete=allow_incomplete)


@app.command("analyze")
@_handled
def analyze_cmd(runs: List[Path] = typer.Argument(..., help="Run store(s)."),
                statistics: Optional[str] = typer.Option(None, "--statistics", show_default="all",
                                                         help="Comma-separated subset."),
                recompute: bool = typer.Option(False, "--recompute", help="Ignore cached results.",
                                               show_default="off"),
                allow_incomplete: bool = typer.Option(False, "--allow-incomplete", show_default="off",
                                                      help="Analyse the completed segments of a "
                                                           "run that is still running or failed."),
                t_min: Optional[float] = typer.Option(None, "--t-min", help="Start of the analysis "
                                                      "window (ms).", show_default="500"),
                t_max: Optional[float] = typer.Option(None, "--t-max", help="End of the window (ms).",
                                                      show_default="t_sim")):
    """Compute spike statistics (rates, LvR, synchrony, correlations, FC, ...) into the store(s)."""
    from . import analysis

    definition = {k: v for k, v in {"t_min_ms": t_min, "t_max_ms": t_max}.items() if v is not None}
    which = [s.strip() for s in statistics.split(",")] if statistics else None
    try:
        stats = analysis.analyze([str(r) for r in runs] if len(runs) > 1 else str(runs[0]),
                                 which, recompute=recompute, allow_incomplete=allow_incomplete,
                                 **definition)
    except MamXrError as exc:
        _fail(exc)
    for name, ds in stats.items():
        summary = ", ".join(f"{v} {float(ds[v].mean()):.4g}" for v in list(ds.data_vars)[:3]
                            if ds[v].dtype.kind == "f")
        typer.echo(f"{name}: {summary}")


@app.command("sweep")
@_handled
def sweep_cmd(spec: Path = typer.Argument(..., exists=True, dir_okay=False,
                                          help="Sweep specification (JSON or TOML)."),
              directory: Path = typer.Argument(..., help="Sweep directory (created; re-running "
                                               "resumes)."),
              cluster: str = typer.Option("auto", "--cluster", help="auto, local, serial, slurm, "
                                          "mpi, or a scheduler address."),
              workers: Optional[int] = typer.Option(None, "--workers", help="Points at a time.",
                                                    show_default="as many as fit the cores"),
              threads: Optional[int] = typer.Option(None, "--threads", help="NEST threads per point "
                                                    "(unless the spec sets them).",
                                                    show_default="cores // workers"),
              progress: bool = typer.Option(True, "--progress/--no-progress",
                                            help="Show a progress bar.")):
    """Run (or resume) a parameter sweep, e.g. over chi, on a Dask cluster."""
    from . import sweep

    try:
        ds = sweep.run_sweep(sweep.load_spec(spec), directory, cluster=cluster,
                             n_workers=workers, threads=threads, progress=progress)
        table = sweep.summary_table(directory, ds)   # point, status, time, mean rate, stored in
    except MamXrError as exc:
        _fail(exc)
    typer.echo(table)


@app.command("report")
@_handled
def report_cmd(run_or_sweep: Path = typer.Argument(..., exists=True,
                                                   help="A run store or a sweep directory."),
               out: Optional[Path] = typer.Option(None, "--out", help="HTML file.",
                                                  show_default="<input>.html next to the input"),
               allow_incomplete: bool = typer.Option(False, "--allow-incomplete", show_default="off",
                                                     help="Report the committed segments of a run "
                                                          "that was interrupted or failed.")):
    """Write one self-contained HTML report (figures, parameters, provenance)."""
    try:
        html = _write_report(run_or_sweep, out, allow_incomplete=allow_incomplete)
    except MamXrError as exc:
        _fail(exc)
    typer.echo(str(html))


@app.command("serve")
@_handled
def serve_cmd(directory: Path = typer.Argument(Path("."), metavar="DIR", help="Directory searched "
                                               "(recursively) for run stores and sweep directories."),
              port: int = typer.Option(5006, "--port", help="Port of the Bokeh server.",
                                       show_default=True),
              host: str = typer.Option("localhost", "--host", help="Address to listen on "
                                       "(localhost: this machine only; use an SSH tunnel on a "
                                       "cluster, docs/dashboard.md).", show_default=True),
              show: bool = typer.Option(True, "--show/--no-show", help="Open a browser tab.",
                                        show_default=True),
              interval: float = typer.Option(1.0, "--interval", help="Seconds between two looks "
                                             "at the store shown (new segments, status).",
                                             show_default=True),
              datashade_above: int = typer.Option(1_000_000, "--datashade-above",
                                                  help="Rasters of more spikes than this are "
                                                       "drawn with Datashader.", show_default=True)):
    """Serve a live dashboard (Panel) of every run store and sweep under DIR:
    rate heat map, raster and rates of the clicked area, sweep sliders, theory overlays;
    stores still being written update as segments commit (needs the extra 'explore')."""
    from . import dashboard

    try:
        dashboard.check_options(directory, port=port, host=host, interval=interval,
                                datashade_above=datashade_above)
        typer.echo(f"serving {directory} at http://{host}:{port}/ (Ctrl-C stops)")
        dashboard.serve(directory, port=port, host=host, show=show, interval=interval,
                        datashade_above=datashade_above)
    except MamXrError as exc:
        _fail(_serve_terms(exc))


def _serve_terms(exc: Exception) -> Exception:
    """The library's parameter names in serve's messages -> the CLI's."""
    text = str(exc)
    for py, flag in (("port=", "--port="), ("host=", "--host="), ("interval=", "--interval="),
                     ("datashade_above=", "--datashade-above=")):
        if text.startswith(py):
            text = flag + text[len(py):]
    return type(exc)(text)


@app.command("verify")
@_handled
def verify_cmd(run: Path = typer.Argument(..., help="A run store.")):
    """Check a whole run store (structure, every spike segment, the analysis cache)
    and print a verdict; exit 0 if it is intact, 1 if anything is damaged."""
    from . import store

    result = store.verify_store(run)
    if result["ok"]:
        typer.echo(result["verdict"])
        return
    typer.secho(result["verdict"], fg=typer.colors.RED, err=True)
    raise typer.Exit(code=1)


@app.command("export")
@_handled
def export_cmd(store: Path = typer.Argument(..., help="A run store."),
               out: Path = typer.Argument(..., help="File to write (e.g. run.nwb, spikes.h5)."),
               format: str = typer.Option("nwb", "--format", help="nwb (NWB 2 units table, HDF5) or sonata "
                                          "(SONATA spike file, HDF5)."),
               sorting: Optional[str] = typer.Option(None, "--sorting", help="SONATA only: by_time or by_id.",
                                                     show_default="by_time"),
               compression: Optional[bool] = typer.Option(None, "--compression/--no-compression",
                                                          help="gzip the spike datasets.",
                                                          show_default="nwb: on, sonata: off"),
               allow_incomplete: bool = typer.Option(False, "--allow-incomplete", show_default="off",
                                                     help="Export the committed "
                                                     "segments of a run that did not complete."),
               overwrite: bool = typer.Option(False, "--overwrite", help="Replace OUT if mam-xr exported it.",
                                              show_default="off")):
    """Write a run's spikes as an NWB or SONATA file (docs/exchange.md)."""
    from .exchange import export

    options = {} if sorting is None else {"sorting": sorting}
    if compression is not None:
        options["compression"] = compression
    path = export(store, out, format, allow_incomplete=allow_incomplete, overwrite=overwrite, **options)
    typer.echo(f"wrote {path}")


@app.command("import-spikes")
@_handled
def import_spikes_cmd(source: Path = typer.Argument(..., help="An NWB or SONATA spike file."),
                      out: Path = typer.Argument(..., help="Run store to create."),
                      format: Optional[str] = typer.Option(None, "--format", help="nwb or sonata.",
                                                           show_default="from the suffix: .nwb, .h5"),
                      dt: Optional[float] = typer.Option(None, "--dt", help="Simulation step (ms).",
                                                         show_default="the file's"),
                      t_sim: Optional[float] = typer.Option(None, "--t-sim", help="Simulated time (ms).",
                                                            show_default="the file's"),
                      overwrite: bool = typer.Option(False, "--overwrite", help="Replace OUT if it is a "
                                                     "mam-xr store.", show_default="off")):
    """Make a run store of an NWB or SONATA spike file whose populations are
    mam_xr labels (e.g. V1-23E), to analyse it with mam-xr analyze/report."""
    from .exchange import import_spikes

    run = import_spikes(source, out, format=format, dt_ms=dt, t_sim_ms=t_sim, overwrite=overwrite)
    typer.echo(f"wrote {run.path}: {run.n_spikes()} spikes")


def main():  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
