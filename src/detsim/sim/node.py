"""Nodes (simulated hosts) and boots (one run of a node's process, from start to kill/crash).

Rules:
- Every task and callback belongs to a boot; the boot travels in `runtime.BOOT` through
  asyncio's contexts, so what a task creates belongs to the same boot.
- A boot that is killed or crashed is dead forever: the loop discards its callbacks and timers
  whenever they come due, and its tasks are kept (never garbage collected, so no `finally`
  block of theirs runs) until the end of the run. A restart makes a new boot.
- A paused boot's callbacks are set aside in FIFO order and run on resume.
- Two boots that are not nodes: the supervisor (`main`, outside the network) and the kernel
  (the simulator's own network and fault machinery, never paused or killed).
"""

from __future__ import annotations

import collections
import contextvars
import weakref
from asyncio import Future, Handle, Task
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

from detsim.sim import runtime
from detsim.sim.clock import NodeClock
from detsim.sim.errors import SimulationError

if TYPE_CHECKING:
    from detsim.sim.disk import SimDisk
    from detsim.sim.world import Simulation

T = TypeVar("T")
InitFn = Callable[[], Awaitable[Any]]

MAX_NODES = 100
MAX_DEFERRED_CALLBACKS = 1_000_000  # callbacks a paused node may accumulate before we give up


class Boot:
    """One incarnation of a node's process (or the supervisor's, or the kernel's)."""

    __slots__ = (
        "__weakref__",
        "alive",
        "context",
        "deferred",
        "endpoints",
        "index",
        "label",
        "main_task",
        "node",
        "node_clock",
        "paused",
        "spawned",
        "task_seq",
        "tasks",
    )

    def __init__(self, index: int, label: str, node: Node | None, clock: NodeClock) -> None:
        self.index = index  # stable small int: names this boot in the decision hash
        self.label = label
        self.node = node
        self.node_clock = clock
        self.alive = True
        self.paused = False
        self.deferred: collections.deque[Handle] = collections.deque()
        self.tasks: weakref.WeakValueDictionary[int, Task[Any]] = weakref.WeakValueDictionary()
        self.task_seq = 0
        self.main_task: Task[Any] | None = None  # init: held strongly, like a process's main
        # Supervisor-side futures of spawned tasks still running (by task number), to fail with
        # NodeDown if the boot dies; at most MAX_SPAWNS_PENDING (loop).
        self.spawned: dict[int, Future[Any]] = {}
        self.endpoints: dict[int, Any] = {}  # open sockets of this boot, by id (net owns them)
        self.context = contextvars.Context()
        self.context.run(runtime.BOOT.set, self)

    def __repr__(self) -> str:
        state = "alive" if self.alive else "dead"
        return f"<Boot {self.label} {state}{' paused' if self.paused else ''}>"

    def defer(self, handle: Handle) -> None:
        if len(self.deferred) >= MAX_DEFERRED_CALLBACKS:
            raise SimulationError(
                f"{self.label} is paused with {MAX_DEFERRED_CALLBACKS} callbacks waiting: "
                "resume it sooner"
            )
        self.deferred.append(handle)


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
