"""The seam through which production code reaches a running simulation, without importing it.

DESIGN ("Layers"): detsim.raft, detsim.kv, detsim.fs and detsim.check never import detsim.sim,
directly or transitively, so production never loads the simulator. Yet their code is what a
simulation runs, and it has things to say to it: trace events (a role or term change, a
snapshot installed, a client operation) and fault sites (`buggify`). `detsim.trace.event` and
`detsim.buggify` would load the simulator on first use; these two functions never do.

The dependency points the other way: when a thread enters a simulation, the simulator installs
a `Simulator` here (`detsim.sim.runtime.enter`), and removes it when the thread leaves the run.

Rules:
- The slot is per thread, like the simulation itself: other threads of the process (a logging
  thread, a Dask worker's loop) see an empty slot.
- Empty slot (production, or a thread outside any run): `event` does nothing and `buggify` is
  always False. Both cost one thread-local read, so they may sit on hot paths.
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
from typing import Any, Protocol


class Simulator(Protocol):
    """What a running simulation offers production code (the simulator implements it)."""

    def event(self, kind: str, fields: dict[str, Any]) -> None:
        """Record a trace event of the run."""
        ...

    def buggify(self, p: float, filename: str, line: int) -> bool:
        """The seeded fault-site draw for the site `filename:line` (see `detsim.buggify`)."""
        ...


class _Slot(threading.local):
    simulator: Simulator | None = None


_slot = _Slot()


def current() -> Simulator | None:
    """The simulation running in the calling thread; None outside one."""
    return _slot.simulator


def install(simulator: Simulator) -> None:
    """Called by the simulator when the calling thread enters a run."""
    assert _slot.simulator is None, "detsim.seam: a simulation is already installed here"
    _slot.simulator = simulator


def remove(simulator: Simulator) -> None:
    """Called by the simulator when the calling thread leaves the run it installed."""
    assert _slot.simulator is simulator, "detsim.seam: removing a simulation not installed"
    _slot.simulator = None


def event(kind: str, **fields: Any) -> None:
    """A trace event of the running simulation; outside a simulation, nothing."""
    simulator = _slot.simulator
    if simulator is not None:
        simulator.event(kind, fields)


def buggify(p: float = 0.25) -> bool:
    """True when this fault site should misbehave now: only ever inside a simulation."""
    simulator = _slot.simulator
    if simulator is None:
        return False
    frame = sys._getframe(1)
    return simulator.buggify(p, frame.f_code.co_filename, frame.f_lineno)
