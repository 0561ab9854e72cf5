"""``mam-xr serve``: a live dashboard (Panel, on a Bokeh server) over every run store and
sweep under a directory.

:func:`serve` checks its arguments, finds the run stores and sweeps
(:func:`~mam_xr.dashboard.catalog.find_entries`) and serves one page per browser
session (:func:`~mam_xr.dashboard.app.make_page`): linked heat map, raster and
rate time series, sweep sliders, theory overlays, and stores still being written
followed segment by segment.  See docs/dashboard.md.

Panel and Datashader are an optional extra (``pip install mam_xr[explore]``); this
module imports them only when :func:`serve` or :func:`page` is called.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import ParameterError, invalid
from .catalog import Entry, RunData, SweepData, discover, find_entries

__all__ = ["serve", "page", "check_options", "discover", "find_entries", "Entry", "RunData",
           "SweepData", "DEFAULT_PORT"]

#: Port of ``mam-xr serve`` unless --port is given (Bokeh's usual one).
DEFAULT_PORT = 5006


def _need_panel():
    try:
        import datashader  # noqa: F401
        import panel
    except ImportError as exc:
        raise ParameterError(f"mam-xr serve needs Panel and Datashader ({exc.name} is not installed): "
                             "pip install 'mam_xr[explore]'") from None
    return panel


def check_options(directory, *, port: int = DEFAULT_PORT, host: str = "localhost",
                  interval: float = 1.0, datashade_above: int = 1_000_000) -> list[Entry]:
    """Refuse bad arguments by name before anything is served; returns the entries found."""
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise ParameterError(invalid("port", port, "an integer in [1, 65535]"))
    if not isinstance(host, str) or not host.strip():
        raise ParameterError(invalid("host", host, "a host name or address, e.g. localhost"))
    if not isinstance(interval, (int, float)) or not 0.05 <= interval <= 3600:
        raise ParameterError(invalid("interval", interval, "seconds in [0.05, 3600]"))
    if isinstance(datashade_above, bool) or not isinstance(datashade_above, int) or datashade_above < 0:
        raise ParameterError(invalid("datashade_above", datashade_above, "a number of spikes >= 0"))
    return find_entries(directory)


def page(directory, *, interval: float = 1.0, datashade_above: int = 1_000_000):
    """The dashboard of ``directory`` as a Panel object (e.g. in a notebook: ``page(d)``)."""
    _need_panel()
    from .app import make_page

    check_options(directory, interval=interval, datashade_above=datashade_above)
    return make_page(directory, interval=interval, datashade_above=datashade_above)


def serve(directory=".", *, port: int = DEFAULT_PORT, host: str = "localhost", show: bool = True,
          interval: float = 1.0, datashade_above: int = 1_000_000) -> None:
    """Serve the dashboard of ``directory`` at http://host:port/ until interrupted (Ctrl-C).

    Parameters
    ----------
    directory : path
        Searched (recursively) for run stores and sweep directories; refused if
        it holds none.
    port, host
        Where the Bokeh server listens; ``localhost`` by default, so only this
        machine can connect (on a cluster, reach it through an SSH tunnel:
        docs/dashboard.md).
    show : bool
        Open a browser tab.
    interval : float
        Seconds between two looks at the store shown (new segments, status).
    datashade_above : int
        Rasters of more spikes than this are drawn with Datashader.
    """
    pn = _need_panel()
    from .app import make_page

    check_options(directory, port=port, host=host, interval=interval, datashade_above=datashade_above)
    directory = Path(directory)
    origins = [f"{h}:{port}" for h in {host, "localhost", "127.0.0.1"}]
    pn.extension(notifications=False)
    pn.serve({"/": lambda: make_page(directory, interval=interval, datashade_above=datashade_above)},
             port=port, address=host, show=show, websocket_origin=origins, title="mam_xr",
             threaded=False, print_url=True)
