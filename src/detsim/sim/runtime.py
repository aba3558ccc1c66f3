"""Which simulation and which node the calling code runs in (the world's view of the kernel).

The simulator runs every node on one event loop; a node's identity travels with asyncio's own
`contextvars` (each task and callback runs in a context, `kernel.boot.BOOT`), so everything a
node's code creates — tasks, callbacks, transports, files — belongs to that node without any
bookkeeping by the caller. The kernel knows which loop runs in this thread
(`kernel.runtime`); this module maps it to the world plugged into it.

Other layers of the simulator (`detsim.buggify`, the disks, the network) ask here, and only
here, whether they are inside a simulation. `detsim.fs` must not import the simulator, so
`enter` (called by the Simulation when a thread enters its run) installs its seam
(`detsim.fs._seam`), and production code's (`detsim.seam`: trace events, buggify), and `leave`
removes them. Nothing in this module imports the loop, so it is
cheap to import from anywhere.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any, cast

from detsim import seam as production_seam
from detsim.fs import _seam as fs_seam
from detsim.sim.kernel import runtime as kernel_runtime
from detsim.sim.kernel.boot import BOOT, Boot
from detsim.sim.kernel.errors import SimulationError

if TYPE_CHECKING:
    from detsim.fs import Backend
    from detsim.sim.node import Node
    from detsim.sim.world import Simulation

__all__ = ["BOOT", "Boot", "active", "current_boot", "current_node", "enter", "leave"]


class _ThreadState(threading.local):
    """Per thread: detsim.fs's seam of the simulation running in it."""

    fs: _FsSeam | None = None


_thread = _ThreadState()


class _FsSeam:
    """What detsim.fs (and production code, through detsim.seam) reach while `sim` runs in
    this thread."""

    __slots__ = ("_sim",)

    def __init__(self, sim: Simulation) -> None:
        self._sim = sim

    def node_disk(self, what: str) -> Backend:
        return require_node(what).disk

    def error(self, message: str) -> Exception:
        return SimulationError(message)

    def event(self, kind: str, fields: dict[str, Any]) -> None:
        self._sim.record(kind, **fields)

    def buggify(self, p: float, filename: str, line: int) -> bool:
        # imported here: detsim.sim.faults imports this module
        from detsim.sim import faults

        return faults.site_fires(self._sim, p, filename, line)


def active() -> Simulation | None:
    """The simulation running in the calling thread, or None outside one."""
    loop = kernel_runtime.active()
    if loop is None or loop.world is None:
        return None
    return cast("Simulation", loop.world)


def enter(sim: Simulation) -> None:
    """The calling thread entered `sim`'s run (the kernel has made its loop active)."""
    assert _thread.fs is None, "entering a simulation twice"
    _thread.fs = _FsSeam(sim)
    fs_seam.install(_thread.fs)
    production_seam.install(_thread.fs)


def leave(sim: Simulation) -> None:
    """The calling thread leaves `sim`'s run."""
    assert _thread.fs is not None, "leaving a simulation this thread is not in"
    production_seam.remove(_thread.fs)
    fs_seam.remove(_thread.fs)
    _thread.fs = None


def current_boot() -> Boot | None:
    """The boot the caller runs on (the supervisor's, for `main`), or None outside a simulation."""
    return kernel_runtime.current_boot()


def current_node() -> Node | None:
    """The node the caller runs on; None outside a simulation or on the supervisor."""
    boot = kernel_runtime.current_boot()
    return None if boot is None else cast("Node | None", boot.node)


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
