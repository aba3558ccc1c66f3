"""The seam through which `detsim.fs` reaches the simulator during a run, without importing it.

DESIGN ("Layers"): detsim.fs never imports detsim.sim, directly or through another module, so
production code that keeps its log on detsim.fs never loads the simulator. The dependency points
the other way: when a thread enters a simulation, the simulator installs a `Simulator` here, and
removes it when the thread leaves the run. The slot is detsim.seam's `ThreadSlot` (a module
that loads no simulator either): one implementation of the per-thread rules for both seams.

Rules:
- The slot is per thread, like the simulation itself: other threads of the process (a logging
  thread, a Dask worker's loop) see an empty slot and the real disk.
- Empty slot: the thread runs no simulation; detsim.fs uses the os calls and `event` does nothing.
- Filled slot: detsim.fs asks it for the calling node's disk, raises its error for a real file
  (nothing reaches the real world from a simulated host), and sends trace events to it.
- One simulation per thread: installing over a filled slot, or removing an object that is not
  the installed one, is a bug of the simulator (asserted).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from detsim.seam import EventSink, ThreadSlot

if TYPE_CHECKING:
    from detsim.fs._api import Backend


class Simulator(EventSink, Protocol):
    """What a running simulation offers detsim.fs (the simulator implements it)."""

    def node_disk(self, what: str) -> Backend:
        """The calling node's disk; raises the simulator's error when no node calls (`what`
        names the operation, for that message)."""
        ...

    def error(self, message: str) -> Exception:
        """The simulator's exception for misuse, to raise at the detsim.fs call site."""
        ...


_slot: ThreadSlot[Simulator] = ThreadSlot("detsim.fs seam")

#: The simulation running in the calling thread, as detsim.fs sees it; None outside one.
current = _slot.current
#: Called by the simulator when the calling thread enters a run.
install = _slot.install
#: Called by the simulator when the calling thread leaves the run it installed.
remove = _slot.remove
#: A trace event of the running simulation; outside a simulation, nothing.
event = _slot.event
