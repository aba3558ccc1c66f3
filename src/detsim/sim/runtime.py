"""Which simulation and which node the calling code runs in.

The simulator runs every node on one event loop; a node's identity travels with asyncio's own
`contextvars` (each task and callback runs in a context), so everything a node's code creates —
tasks, callbacks, transports, files — belongs to that node without any bookkeeping by the caller.

Other layers of the simulator (`detsim.buggify`, the disks) ask here, and only here, whether they
are inside a simulation. `detsim.fs` must not import the simulator, so `enter` installs its seam
(`detsim.fs._seam`) and `leave` removes it. Nothing in this module imports the loop, so it is
cheap to import from anywhere.
"""

from __future__ import annotations

import contextvars
import threading
from typing import TYPE_CHECKING, Any

from detsim.fs import _seam as fs_seam
from detsim.sim.errors import SimulationError

if TYPE_CHECKING:
    from detsim.fs import Backend
    from detsim.sim.node import Boot, Node
    from detsim.sim.world import Simulation

# The incarnation ("boot") of the node whose code is running. Unset: the loop's default boot.
BOOT: contextvars.ContextVar[Boot] = contextvars.ContextVar("detsim_boot")


class _ThreadState(threading.local):
    """Per thread: the simulation running in it. Other threads of the process (a Dask worker's
    event loop, a logging thread) are not in it and see the real world."""

    sim: Simulation | None = None
    fs: _FsSeam | None = None


_thread = _ThreadState()


class _FsSeam:
    """What detsim.fs reaches through its seam while `sim` runs in this thread."""

    __slots__ = ("_sim",)

    def __init__(self, sim: Simulation) -> None:
        self._sim = sim

    def node_disk(self, what: str) -> Backend:
        return require_node(what).disk

    def error(self, message: str) -> Exception:
        return SimulationError(message)

    def event(self, kind: str, fields: dict[str, Any]) -> None:
        self._sim.record(kind, **fields)


def active() -> Simulation | None:
    """The simulation running in the calling thread, or None outside one."""
    return _thread.sim


def enter(sim: Simulation) -> None:
    if _thread.sim is not None:
        raise SimulationError("a simulation is already running in this thread")
    _thread.sim = sim
    _thread.fs = _FsSeam(sim)
    fs_seam.install(_thread.fs)


def leave(sim: Simulation) -> None:
    assert _thread.sim is sim, "leaving a simulation this thread is not in"
    assert _thread.fs is not None
    fs_seam.remove(_thread.fs)
    _thread.sim = None
    _thread.fs = None


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
