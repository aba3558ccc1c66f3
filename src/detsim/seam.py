"""The seam through which production code reaches a running simulation, without importing it.

DESIGN ("Layers"): detsim.raft, detsim.kv, detsim.fs and detsim.check never import detsim.sim,
directly or transitively, so production never loads the simulator. Yet their code is what a
simulation runs, and it has things to say to it: trace events (a role or term change, a
snapshot installed, a client operation) and fault sites (`buggify`). `detsim.trace.event` and
`detsim.buggify` would load the simulator on first use; these two functions never do.

The dependency points the other way: when a thread enters a simulation, the simulator installs
a `Simulator` here (`detsim.sim.runtime.enter`), and removes it when the thread leaves the run.
The slot is a `ThreadSlot`, owned here and shared with detsim.fs's own seam (`detsim.fs._seam`,
whose simulator side also lends the node's disk): one implementation of the rules below.

Rules:
- The slot is per thread, like the simulation itself: other threads of the process (a logging
  thread, a Dask worker's loop) see an empty slot.
- Empty slot (production, or a thread outside any run): `event` does nothing and `buggify` is
  always False. Both cost a method call and a thread-local read (~0.15 µs), so they may sit on
  hot paths.
- Filled slot: `event` records a trace event of the run (with the calling node and virtual
  time); `buggify(p)` is the simulator's seeded draw for the call site (file and line of the
  caller), exactly as `detsim.buggify(p)` would be at that line.
- One simulation per thread: installing over a filled slot, or removing an object that is not
  the installed one, is a bug of the simulator (asserted).
- Events are part of the trace hash and kept in memory (the simulator keeps at most
  `detsim.sim.kernel.trace.DEFAULT_MAX_EVENTS`): emit on state changes, never per heartbeat;
  field values JSON-serialisable, small and deterministic.
"""

from __future__ import annotations

import sys
import threading
from typing import Any, Generic, Protocol, TypeVar


class EventSink(Protocol):
    """What every seam's simulator side offers: trace events."""

    def event(self, kind: str, fields: dict[str, Any]) -> None:
        """Record a trace event of the run."""
        ...


class Simulator(EventSink, Protocol):
    """What a running simulation offers production code (the simulator implements it)."""

    def buggify(self, p: float, filename: str, line: int) -> bool:
        """The seeded fault-site draw for the site `filename:line` (see `detsim.buggify`)."""
        ...


SimulatorT = TypeVar("SimulatorT", bound=EventSink)


class _Local(threading.local):
    simulator: Any = None


class ThreadSlot(Generic[SimulatorT]):
    """The per-thread slot of one seam (the rules above): this module's, and detsim.fs's own
    (`detsim.fs._seam`, whose simulator side also lends disks). `name` starts its assert
    messages."""

    __slots__ = ("_local", "_name")

    def __init__(self, name: str) -> None:
        self._name = name
        self._local = _Local()

    def current(self) -> SimulatorT | None:
        """The simulation running in the calling thread; None outside one."""
        simulator: SimulatorT | None = self._local.simulator
        return simulator

    def install(self, simulator: SimulatorT) -> None:
        """Called by the simulator when the calling thread enters a run."""
        assert self._local.simulator is None, (
            f"{self._name}: a simulation is already installed here"
        )
        self._local.simulator = simulator

    def remove(self, simulator: SimulatorT) -> None:
        """Called by the simulator when the calling thread leaves the run it installed."""
        assert self._local.simulator is simulator, (
            f"{self._name}: removing a simulation not installed"
        )
        self._local.simulator = None

    def event(self, kind: str, **fields: Any) -> None:
        """A trace event of the running simulation; outside a simulation, nothing."""
        simulator: SimulatorT | None = self._local.simulator
        if simulator is not None:
            simulator.event(kind, fields)


_slot: ThreadSlot[Simulator] = ThreadSlot("detsim.seam")

# The module's functions are its slot's methods (documented on ThreadSlot).
current = _slot.current
install = _slot.install
remove = _slot.remove
event = _slot.event


def buggify(p: float = 0.25) -> bool:
    """True when this fault site should misbehave now: only ever inside a simulation."""
    simulator = _slot.current()
    if simulator is None:
        return False
    frame = sys._getframe(1)
    return simulator.buggify(p, frame.f_code.co_filename, frame.f_lineno)
