"""Which simulation and which node the calling code runs in.

The simulator runs every node on one event loop; a node's identity travels with asyncio's own
`contextvars` (each task and callback runs in a context), so everything a node's code creates —
tasks, callbacks, transports, files — belongs to that node without any bookkeeping by the caller.

Other layers (`detsim.fs`, `detsim.buggify`) ask here, and only here, whether they are inside a
simulation. Nothing in this module imports the loop, so it is cheap to import from anywhere.
"""

from __future__ import annotations

import contextvars
from typing import TYPE_CHECKING

from detsim.sim.errors import SimulationError

if TYPE_CHECKING:
    from detsim.sim.node import Boot, Node
    from detsim.sim.world import Simulation

# The incarnation ("boot") of the node whose code is running. Unset: the loop's default boot.
BOOT: contextvars.ContextVar[Boot] = contextvars.ContextVar("detsim_boot")

# The simulation whose loop is running in this thread (one at a time; see world.Simulation.run).
_active: list[Simulation] = []


def active() -> Simulation | None:
    """The running simulation, or None outside one."""
    return _active[-1] if _active else None


def current_boot() -> Boot | None:
    """The boot the caller runs on (the supervisor's, for `main`), or None outside a simulation."""
    sim = active()
    if sim is None:
        return None
    return BOOT.get(sim.loop.default_boot)


def current_node() -> Node | None:
    """The node the caller runs on; None outside a simulation or on the supervisor."""
    boot = current_boot()
    return None if boot is None else boot.node


def require_node(what: str) -> Node:
    """The caller's node, for an operation that only a node can do (network, disk).

    Raises SimulationError on the supervisor, which is outside the simulated hosts.
    """
    node = current_node()
    if node is None:
        raise SimulationError(
            f"{what} from the supervisor: main() runs outside every simulated host; "
            "run it on a node with `await node.spawn(coro)`"
        )
    return node
