"""`detsim.trace`: user events in the running simulation's trace.

The trace itself (events, the decision hash, bounds) is the kernel's: `detsim.sim.kernel.trace`.
"""

from __future__ import annotations

from typing import Any

from detsim.sim.kernel import runtime
from detsim.sim.kernel.trace import DEFAULT_MAX_EVENTS, Event, Trace, event_dict

__all__ = ["DEFAULT_MAX_EVENTS", "Event", "Trace", "event", "event_dict"]


def event(kind: str, **fields: Any) -> None:
    """Add a user event to the running simulation's trace; outside a simulation, nothing.

    Field values should be JSON-serialisable (they go to artifacts) and deterministic.
    """
    loop = runtime.active()
    if loop is not None:
        loop.record(kind, **fields)
