"""Boots: one run of a host's process, from start to kill or crash — the kernel's unit of work.

Rules:
- Every task and callback belongs to a boot; the boot travels in `BOOT` through asyncio's
  contexts, so what a task creates belongs to the same boot.
- A boot that is killed or crashed is dead forever: the loop discards its callbacks and timers
  whenever they come due, and its tasks are kept (never garbage collected, so no `finally`
  block of theirs runs) until the end of the run. A restart makes a new boot.
- A paused boot's callbacks are set aside in FIFO order (at most MAX_DEFERRED_CALLBACKS) and run
  on resume.
- Two boots belong to no host: the supervisor's (`main`, outside the network) and the kernel's
  (the simulator's own network and fault machinery, never paused or killed).
"""

from __future__ import annotations

import collections
import contextvars
from asyncio import Future, Handle, Task
from typing import TYPE_CHECKING, Any

from detsim.sim.kernel.clock import NodeClock
from detsim.sim.kernel.errors import BoundExceeded

if TYPE_CHECKING:
    from detsim.sim.kernel.interfaces import Host

# The boot whose code is running. Unset: the loop's default boot.
BOOT: contextvars.ContextVar[Boot] = contextvars.ContextVar("detsim_boot")

MAX_DEFERRED_CALLBACKS = 1_000_000  # callbacks a paused node may accumulate before we give up
MAX_LIVE_TASKS = 1_000_000  # unfinished tasks of one boot
MIN_TASKS_PRUNE_AT = 1_024  # finished tasks are dropped when the table reaches twice the live ones


class Boot:
    """One incarnation of a host's process (or the supervisor's, or the kernel's)."""

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
        "prune_at",
        "spawned",
        "task_seq",
        "tasks",
    )

    def __init__(self, index: int, label: str, node: Host | None, clock: NodeClock) -> None:
        self.index = index  # stable small int: names this boot in the decision hash
        self.label = label
        # The world's host (its Node: the world reads its own attributes, the kernel none).
        self.node: Any = node
        self.node_clock = clock
        self.alive = True
        self.paused = False
        self.deferred: collections.deque[Handle] = collections.deque()
        # Every task of the boot by number, held strongly (a pending task is never collected
        # at a time garbage collection picks: its fate is the run's), finished ones dropped in
        # bulk by `add_task` (a plain dict: a weak one cost a Python-level call per task).
        self.tasks: dict[int, Task[Any]] = {}
        self.prune_at = MIN_TASKS_PRUNE_AT
        self.task_seq = 0
        self.main_task: Task[Any] | None = None  # init: held strongly, like a process's main
        # Supervisor-side futures of spawned tasks still running (by task number), to fail with
        # NodeDown if the boot dies; at most MAX_SPAWNS_PENDING (loop).
        self.spawned: dict[int, Future[Any]] = {}
        self.endpoints: dict[int, Any] = {}  # open sockets of this boot, by id (net owns them)
        self.context = contextvars.Context()
        self.context.run(BOOT.set, self)

    def __repr__(self) -> str:
        state = "alive" if self.alive else "dead"
        return f"<Boot {self.label} {state}{' paused' if self.paused else ''}>"

    def add_task(self, task: Task[Any]) -> int:
        """Keep `task` (until it finishes and the next prune); return its number on this boot."""
        if len(self.tasks) >= self.prune_at:
            self.tasks = {n: t for n, t in self.tasks.items() if not t.done()}
            if len(self.tasks) >= MAX_LIVE_TASKS:
                raise BoundExceeded(
                    f"{self.label} has {MAX_LIVE_TASKS} unfinished tasks: something creates "
                    "tasks without end"
                )
            self.prune_at = max(MIN_TASKS_PRUNE_AT, 2 * len(self.tasks))
        self.task_seq += 1
        self.tasks[self.task_seq] = task
        return self.task_seq

    def defer(self, handle: Handle) -> None:
        if len(self.deferred) >= MAX_DEFERRED_CALLBACKS:
            raise BoundExceeded(
                f"{self.label} is paused with {MAX_DEFERRED_CALLBACKS} callbacks waiting: "
                "resume it sooner"
            )
        self.deferred.append(handle)
