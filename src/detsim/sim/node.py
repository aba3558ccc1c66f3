"""Nodes: simulated hosts, with what outlives their boots (name, IP, init, disk, clock).

A node is a kernel `Host`: each start or restart runs it as a new `Boot` (see
`detsim.sim.kernel.boot` for the rules of boots: dead forever once killed, paused in FIFO).
At most MAX_NODES nodes in a simulation.
"""

from __future__ import annotations

from asyncio import Future
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

from detsim.sim.kernel.boot import Boot
from detsim.sim.kernel.clock import NodeClock

if TYPE_CHECKING:
    from detsim.sim.disk import SimDisk
    from detsim.sim.world import Simulation

T = TypeVar("T")
InitFn = Callable[[], Awaitable[Any]]

MAX_NODES = 100

__all__ = ["MAX_NODES", "Boot", "InitFn", "Node"]


class Node:
    """A simulated host: a name, an IP, an init function, a disk and a clock that outlive boots."""

    def __init__(self, sim: Simulation, index: int, name: str, ip: str, init: InitFn | None):
        self._sim = sim
        self.index = index
        self.name = name
        self.ip = ip
        self.init = init
        self.clock = NodeClock()
        self.boot: Boot | None = None
        self.boots = 0
        self.crashed = False  # host powered off (crash) rather than process dead (kill)
        self._disk: SimDisk | None = None

    def __repr__(self) -> str:
        return f"<Node {self.name} {self.ip} {'up' if self.alive else 'down'}>"

    @property
    def alive(self) -> bool:
        return self.boot is not None and self.boot.alive

    @property
    def disk(self) -> SimDisk:
        """This host's disk (survives restarts); built on first use."""
        if self._disk is None:
            from detsim.sim.disk import SimDisk

            self._disk = SimDisk(
                self.name,
                self._sim.disk_config,
                self._sim.loop.derived_random(f"disk:{self.name}"),
                self._record,
            )
        return self._disk

    def _record(self, kind: str, /, **fields: Any) -> None:
        self._sim.loop.record_for(self.name, kind, **fields)

    def spawn(self, coro: Coroutine[Any, Any, T]) -> Future[T]:
        """Run `coro` on this node; the returned future raises NodeDown if the node dies first."""
        return self._sim.loop.spawn_on(self, coro)
