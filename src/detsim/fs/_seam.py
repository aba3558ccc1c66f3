"""The seam through which `detsim.fs` reaches the simulator during a run, without importing it.

DESIGN ("Layers"): detsim.fs never imports detsim.sim, directly or through another module, so
production code that keeps its log on detsim.fs never loads the simulator. The dependency points
the other way: when a thread enters a simulation, the simulator installs a `Simulator` here, and
removes it when the thread leaves the run.

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

import threading
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from detsim.fs._api import Backend


class Simulator(Protocol):
    """What a running simulation offers detsim.fs (the simulator implements it)."""

    def node_disk(self, what: str) -> Backend:
        """The calling node's disk; raises the simulator's error when no node calls (`what`
        names the operation, for that message)."""
        ...

    def error(self, message: str) -> Exception:
        """The simulator's exception for misuse, to raise at the detsim.fs call site."""
        ...

    def event(self, kind: str, fields: dict[str, Any]) -> None:
        """Record a trace event of the run."""
        ...


class _Slot(threading.local):
    simulator: Simulator | None = None


_slot = _Slot()


def current() -> Simulator | None:
    """The simulation running in the calling thread, as detsim.fs sees it; None outside one."""
    return _slot.simulator


def install(simulator: Simulator) -> None:
    """Called by the simulator when the calling thread enters a run."""
    assert _slot.simulator is None, "detsim.fs seam: a simulation is already installed here"
    _slot.simulator = simulator


def remove(simulator: Simulator) -> None:
    """Called by the simulator when the calling thread leaves the run it installed."""
    assert _slot.simulator is simulator, "detsim.fs seam: removing a simulation not installed"
    _slot.simulator = None


def event(kind: str, **fields: Any) -> None:
    """A trace event of the running simulation; outside a simulation, nothing."""
    simulator = _slot.simulator
    if simulator is not None:
        simulator.event(kind, fields)
