"""Neo objects of a run store's spikes, for Elephant and every Neo IO.

:func:`to_neo` gives the ``neo.SpikeTrain`` of every simulated neuron of a
selection (:meth:`mam_xr.store.RunStore.to_neo`, which works on an open
store); :func:`to_neo_block` wraps a selection in a ``neo.Block`` with one
``Segment`` (the committed time span) and one ``Group`` per population, the
shape Neo's writers (NixIO, NWBIO, ...) expect.  Times are in ms; annotations
``area``, ``pop``, ``neuron``, ``label``.  How Elephant's statistics of these
trains compare with :mod:`mam_xr.analysis`: docs/exchange.md.

Public functions: :func:`to_neo`, :func:`to_neo_block`.
"""

from __future__ import annotations

from ..store_read import as_run
from .base import needs

__all__ = ["to_neo", "to_neo_block"]


def to_neo(run, area=None, pop=None, *, allow_incomplete: bool = False) -> list:
    """SpikeTrains (ms) of every simulated neuron of the selected populations of a
    run store (path or :class:`~mam_xr.store.RunStore`); see
    :meth:`mam_xr.store.RunStore.to_neo`."""
    needs("neo", "neo")
    return as_run(run, allow_incomplete=allow_incomplete).to_neo(area=area, pop=pop)


def to_neo_block(run, area=None, pop=None, *, allow_incomplete: bool = False):
    """A ``neo.Block``: one Segment holding the SpikeTrains of :func:`to_neo` and one
    Group per population (named by its label) referring to its trains."""
    neo = needs("neo", "neo")
    run = as_run(run, allow_incomplete=allow_incomplete)
    trains = run.to_neo(area=area, pop=pop)
    a = run.attrs
    block = neo.Block(name=str(a.get("label") or run.path), description="mam_xr run store",
                      status=str(a.get("status")), dt_ms=run.dt)
    seg = neo.Segment(name="run")
    seg.spiketrains.extend(trains)
    block.segments.append(seg)
    groups: dict[str, object] = {}
    for st in trains:
        lab = st.annotations["label"]
        if lab not in groups:
            groups[lab] = neo.Group(name=lab, area=st.annotations["area"], pop=st.annotations["pop"])
            block.groups.append(groups[lab])
        groups[lab].add(st)
    block.check_relationships()
    return block
