"""SimLoop: the asyncio event loop that runs every node of a simulation on virtual time.

Owned here: scheduling (ready callbacks, timers, the virtual clock), the boot of every
callback, and the loop methods that would otherwise touch the OS (network calls are handed to
the world's `IO`, see `interfaces`; threads, subprocesses, signals and raw file descriptors are
refused). The loop knows no Simulation: a world plugs into it (`plug`).

Rules:
- One round (`_run_once`) runs the callbacks that were ready at its start, like asyncio's own
  loop. Within a boot they keep FIFO order; between boots the interleaving is a seeded
  shuffle, folded into the decision hash with the round's time and size.
- The clock jumps only when nothing is ready: to the earliest timer, never past `time_limit`.
- Timers are kept in global time: `call_at(when)` takes the caller's local (skewed) monotonic
  time and converts it at scheduling to the first global instant at which that clock reads
  `when` (`NodeClock.to_global`); a change of the clock's rate (`set_node_clock`) converts its
  pending timers again. So a timer never fires before its local deadline: asserted as each
  one comes due (one that fired an ulp early made a sleep-until-deadline loop spin forever at
  one virtual instant).
- Callbacks of dead boots are dropped when they come due; a paused boot's are set aside.
- When nothing is ready, no timer is pending and the loop was not stopped, nothing can ever
  happen again: `Deadlock`, naming the pending tasks.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import contextvars
import heapq
import itertools
import logging
import random
from asyncio import events
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

from detsim.sim.kernel import entropy, runtime
from detsim.sim.kernel.boot import BOOT, Boot
from detsim.sim.kernel.clock import NodeClock
from detsim.sim.kernel.errors import (
    BoundExceeded,
    Deadlock,
    NodeDown,
    SimulationError,
    SimulationTimeLimit,
)
from detsim.sim.kernel.seeds import derive_seed
from detsim.sim.kernel.trace import Trace, stable_text

if TYPE_CHECKING:
    from detsim.sim.kernel.interfaces import IO, Host, World

T = TypeVar("T")
logger = logging.getLogger("detsim")

MAX_SPAWNS_PENDING = 10_000  # per boot: spawned tasks not finished yet (past it, an error)
MAX_READY_CALLBACKS = 5_000_000  # callbacks ready in one round: past it, a runaway loop
MAX_TIMERS = 5_000_000  # pending timers across the world
MAX_LIVE_BOOTS = 1_024  # one a host, plus the kernel's and the supervisor's
MAX_DEAD_TASKS = 1_000_000  # tasks of killed or crashed boots, kept until the end of the run
MAX_TEARDOWN_PASSES = 100  # closing pending coroutines at the end may start more: passes at most
_MIN_SCHEDULED_TIMER_HANDLES = 100
_MIN_CANCELLED_TIMER_HANDLES_FRACTION = 0.5


class _Handle(events.Handle):
    """asyncio's Handle, built without asking the loop for its debug flag per callback (the
    loop builds these only when not in debug mode, see `call_soon`)."""

    __slots__ = ()

    def __init__(
        self,
        callback: Callable[..., object],
        args: tuple[Any, ...],
        loop: asyncio.AbstractEventLoop,
        context: contextvars.Context | None,
    ) -> None:
        self._context = contextvars.copy_context() if context is None else context
        self._loop = loop
        self._callback = callback
        self._args = args
        self._cancelled = False
        self._repr = None
        self._source_traceback = None


class _Timer(events.TimerHandle):
    """asyncio's TimerHandle (`_when` in global time) plus the local deadline it was set for on
    a host's clock (`clock` None: kernel machinery scheduled in global time)."""

    __slots__ = ("clock", "local_when")

    def __init__(
        self,
        global_when: float,
        callback: Callable[..., object],
        args: tuple[Any, ...],
        loop: asyncio.AbstractEventLoop,
        context: contextvars.Context | None,
        clock: NodeClock | None,
        local_when: float,
    ) -> None:
        if loop.get_debug():  # asyncio's own init: it records where the timer was made
            super().__init__(global_when, callback, args, loop, context)
        else:  # _Handle's way, plus the timer's fields: every sleep and timeout builds one
            self._context = contextvars.copy_context() if context is None else context
            self._loop = loop
            self._callback = callback
            self._args = args
            self._cancelled = False
            self._repr = None
            self._source_traceback = None
            self._when = global_when
            self._scheduled = False
        self.clock = clock
        self.local_when = local_when


def _unsupported(what: str) -> NoReturn:
    raise SimulationError(f"{what} is not simulated: it would reach the real OS")


class SimLoop(asyncio.BaseEventLoop):
    """An asyncio loop whose clock, scheduling and I/O are simulated.

    Built by `Simulation`, which plugs itself in as the world; without a world (in the kernel's
    own tests) it schedules and keeps time, and refuses network calls.
    """

    # The private state of asyncio.BaseEventLoop that this loop drives (absent from typeshed).
    _ready: collections.deque[events.Handle]
    _scheduled: list[_Timer]
    _timer_cancelled_count: int
    _stopping: bool
    _check_closed: Callable[[], None]
    _task_factory: Any
    _debug: bool
    _closed: bool

    def __init__(self, seed: int, time_limit_s: float, trace: Trace) -> None:
        super().__init__()
        self.world: World | None = None
        self.seed = seed
        self.time_limit_s = time_limit_s
        self.trace = trace
        self.now = 0.0
        self.rounds = 0  # rounds of _run_once that ran callbacks
        self.callbacks = 0  # callbacks handed to those rounds
        self._sched_rng = self.derived_random("schedule")
        self.entropy = self.derived_random("entropy")
        # What the `random` module's functions draw from in this simulation (entropy.py).
        self.user_random = entropy.SimRandom(self.derive_seed("random"), self)
        # Live boots by index (dead ones leave at `bury`: their tasks go to the graveyard), so
        # that restarts do not grow it: at most MAX_LIVE_BOOTS.
        self._boots: dict[int, Boot] = {}
        self._boot_seq = 0
        self.kernel_boot = self.new_boot("kernel", None, NodeClock())
        self.supervisor_boot = self.new_boot("supervisor", None, NodeClock())
        self.default_boot = self.supervisor_boot
        self._graveyard: list[asyncio.Task[Any]] = []
        self._frozen = False
        self.fatal: BaseException | None = None  # an error in kernel machinery ends the run
        self._escaping: BaseException | None = None  # leaves the loop: see run_in_executor
        self._spare_ready: collections.deque[events.Handle] = collections.deque()
        # Task names count per run (asyncio's default counts per process: a second run of one
        # seed in a process, e.g. a campaign worker's, would name its tasks differently).
        self._task_numbers = itertools.count(1)

    # --- seeds and boots -------------------------------------------------------------------

    def plug(self, world: World) -> None:
        """Connect the world: the loop asks it for I/O and tells it of threads entering."""
        assert self.world is None, "a loop has one world"
        self.world = world

    @property
    def io(self) -> IO:
        if self.world is None:
            raise SimulationError("this loop has no world plugged in: it has no network")
        return self.world.io

    def derive_seed(self, purpose: str) -> int:
        """An independent 64-bit seed for one purpose, so that streams do not perturb each other."""
        return derive_seed(self.seed, purpose)

    def derived_random(self, purpose: str) -> random.Random:
        return random.Random(self.derive_seed(purpose))

    def new_boot(self, label: str, node: Host | None, clock: NodeClock) -> Boot:
        boot = Boot(self._boot_seq, label, node, clock)
        self._boot_seq += 1
        self._boots[boot.index] = boot
        assert len(self._boots) <= MAX_LIVE_BOOTS, "more live boots than hosts"
        return boot

    def current_boot(self) -> Boot:
        return BOOT.get(self.default_boot)

    # --- trace -----------------------------------------------------------------------------

    def record_for(self, node: str, kind: str, /, **fields: Any) -> None:
        if not self._frozen:
            # Single-boot rounds decide nothing, so they are not hashed one by one; how much
            # ran between two events is folded in here instead.
            self.trace.mix(self.rounds, self.callbacks)
            self.trace.record(self.now, node, kind, fields)

    def record(self, kind: str, **fields: Any) -> None:
        self.record_for(self.current_boot().label, kind, **fields)

    # --- time and scheduling ---------------------------------------------------------------

    def time(self) -> float:
        return BOOT.get(self.default_boot).node_clock.monotonic(self.now)

    def call_at(  # type: ignore[override]
        self,
        when: float,
        callback: Callable[..., object],
        *args: Any,
        context: contextvars.Context | None = None,
    ) -> asyncio.TimerHandle:
        clock = self.current_boot().node_clock
        global_when = clock.to_global(when)
        self.trace.mix(global_when)
        return self._timer_at(global_when, callback, args, context, clock, when)

    def _timer_at(
        self,
        global_when: float,
        callback: Callable[..., object],
        args: tuple[Any, ...],
        context: contextvars.Context | None,
        clock: NodeClock | None,
        local_when: float,
    ) -> asyncio.TimerHandle:
        self._check_closed()
        timer = _Timer(global_when, callback, args, self, context, clock, local_when)
        heapq.heappush(self._scheduled, timer)
        timer._scheduled = True
        return timer

    def kernel_at(self, global_when: float, callback: Callable[..., object], *args: Any) -> None:
        """Schedule simulator machinery (never paused or killed) at a global time."""
        self._timer_at(global_when, callback, args, self.kernel_boot.context, None, global_when)

    def set_node_clock(self, clock: NodeClock, offset_s: float, drift: float) -> None:
        """Skew a host's clock now, and move its pending timers to the global instants at which
        the re-rated clock reads their deadlines (timers run on the host's monotonic clock)."""
        clock.set(self.now, offset_s, drift)
        moved = False
        for timer in self._scheduled:  # list order: deterministic
            if timer.clock is clock:
                timer._when = clock.to_global(timer.local_when)
                moved = True
        if moved:
            heapq.heapify(self._scheduled)

    def call_soon(  # type: ignore[override]
        self,
        callback: Callable[..., object],
        *args: Any,
        context: contextvars.Context | None = None,
    ) -> events.Handle:
        # BaseEventLoop.call_soon and _call_soon in one frame: every task step comes through
        # here (sleep(0) switches are nothing else). Debug mode keeps asyncio's own checks.
        if self._debug:
            return super().call_soon(callback, *args, context=context)
        if self._closed:
            raise RuntimeError("Event loop is closed")
        handle = _Handle(callback, args, self, context)
        self._ready.append(handle)
        return handle

    def _call_soon(
        self,
        callback: Callable[..., object],
        args: tuple[Any, ...],
        context: contextvars.Context | None,
    ) -> events.Handle:
        if self._debug:
            return super()._call_soon(callback, args, context)  # type: ignore[misc, no-any-return]
        handle = _Handle(callback, args, self, context)
        self._ready.append(handle)
        return handle

    def kernel_soon(self, callback: Callable[..., object], *args: Any) -> None:
        self._call_soon(callback, args, self.kernel_boot.context)

    def soon_in(
        self, ctx: contextvars.Context, callback: Callable[..., object], *args: Any
    ) -> None:
        """Run `callback` in `ctx`, on its boot: dropped if the boot dies, held while paused."""
        self._call_soon(callback, args, ctx)

    def _purge_cancelled_timers(self) -> None:
        sched = self._scheduled
        count = len(sched)
        cancelled = self._timer_cancelled_count
        if (
            count > _MIN_SCHEDULED_TIMER_HANDLES
            and cancelled / count > _MIN_CANCELLED_TIMER_HANDLES_FRACTION
        ):
            self._rebuild_timers(lambda h: not h._cancelled)
            return
        while sched and sched[0]._cancelled:
            self._timer_cancelled_count -= 1
            heapq.heappop(sched)._scheduled = False

    def _rebuild_timers(self, keep: Callable[[asyncio.TimerHandle], bool]) -> None:
        kept = []
        for handle in self._scheduled:
            if keep(handle):
                kept.append(handle)
            else:
                handle._scheduled = False
        heapq.heapify(kept)
        self._scheduled = kept
        self._timer_cancelled_count = sum(h._cancelled for h in kept)

    def _advance_clock(self) -> None:
        sched = self._scheduled
        if not sched:
            self._raise_deadlock()
        when = sched[0].when()
        if when > self.time_limit_s:
            raise SimulationTimeLimit(
                f"seed {self.seed}: virtual time limit of {self.time_limit_s:g}s reached "
                f"(next event at {when:.6f}s); pending: {self.describe_pending()}"
            )
        if when > self.now:  # an overdue timer (set in the past) leaves the clock where it is
            self.now = when

    def _run_once(self) -> None:
        sched = self._scheduled
        if sched and sched[0]._cancelled:
            self._purge_cancelled_timers()
        ready = self._ready
        if not ready:
            if self._stopping:
                return
            self._advance_clock()
            sched = self._scheduled
        now = self.now
        while sched and sched[0]._when <= now:
            handle = heapq.heappop(sched)
            handle._scheduled = False
            clock = handle.clock
            assert clock is None or clock.monotonic(now) >= handle.local_when, (
                f"a timer fired before its local deadline {handle.local_when!r}: its clock reads "
                f"{clock.monotonic(now)!r} at t={now!r}"
            )
            ready.append(handle)
        count = len(ready)
        if not count:
            return
        if count > MAX_READY_CALLBACKS or len(sched) > MAX_TIMERS:
            raise BoundExceeded(
                f"seed {self.seed}: {count} callbacks ready and {len(sched)} timers pending at "
                f"t={self.now:.6f}s, past the bounds ({MAX_READY_CALLBACKS}, {MAX_TIMERS}): "
                "something schedules without end"
            )
        self.rounds += 1
        self.callbacks += count
        # This round runs what is ready now; what it schedules waits for the next round, in
        # the spare queue swapped in (no queue is built per round). The spare is empty unless
        # an exception left the loop in the middle of a round, and then its rest is dropped.
        spare = self._spare_ready
        spare.clear()
        self._ready = spare
        self._spare_ready = ready
        default = self.default_boot
        if count == 1:  # the most common round: one callback (_run_handles, inlined for it)
            only = ready.popleft()
            boot = only._context.get(BOOT, default)  # type: ignore[attr-defined]
            if only._cancelled or not boot.alive:
                return
            if boot.paused:
                boot.defer(only)
                return
            try:
                only._context.run(only._callback, *only._args)  # type: ignore[attr-defined]
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException as exc:
                if exc is self._escaping:
                    raise
                self._report_callback_error(only, exc)
            return
        boots = [h._context.get(BOOT, default) for h in ready]  # type: ignore[attr-defined]
        if boots.count(boots[0]) == count:
            self._run_handles(ready, boots)  # one boot: FIFO, nothing to decide
        else:
            self._run_interleaved(ready, boots)

    def _run_interleaved(
        self, handles: collections.deque[events.Handle], boots: list[Boot]
    ) -> None:
        """Run one round's callbacks of several boots in a seeded order, FIFO within each boot."""
        queues: dict[Boot, list[events.Handle]] = {}
        for handle, boot in zip(handles, boots, strict=True):
            queues.setdefault(boot, []).append(handle)
        for queue in queues.values():
            queue.reverse()  # pop() from the end is FIFO
        self._sched_rng.shuffle(boots)
        self.trace.mix(self.now, len(boots), *[b.index for b in boots])
        handles.clear()
        order = collections.deque(queues[b].pop() for b in boots)
        self._run_handles(order, boots)

    def _run_handles(self, handles: collections.deque[events.Handle], boots: list[Boot]) -> None:
        # Handle._run, inlined: one Python frame less per callback. Errors are reported the
        # same way (to the exception handler, with the handle), and the round goes on.
        # Handles are popped as they run, so each is freed at once, as on asyncio's loop
        # (holding a round's handles to its end costs more in garbage collection than it saves).
        assert len(handles) == len(boots)
        pop = handles.popleft
        pending = iter(boots)
        while True:
            try:
                for boot in pending:
                    handle = pop()
                    if handle._cancelled or not boot.alive:
                        continue
                    if boot.paused:
                        boot.defer(handle)
                        continue
                    handle._context.run(handle._callback, *handle._args)  # type: ignore[attr-defined]
                return
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException as exc:
                if exc is self._escaping:
                    raise
                self._report_callback_error(handle, exc)

    def _report_callback_error(self, handle: events.Handle, exc: BaseException) -> None:
        callback = getattr(handle, "_callback", None)
        context: dict[str, Any] = {
            "message": f"Exception in callback {callback!r}",
            "exception": exc,
            "handle": handle,
        }
        source = getattr(handle, "_source_traceback", None)
        if source:
            context["source_traceback"] = source
        self.call_exception_handler(context)

    def _write_to_self(self) -> None:
        pass  # no selector to wake: every caller runs on this thread

    def _process_events(self, event_list: Any) -> None:
        pass

    # --- running ---------------------------------------------------------------------------

    def _check_running(self) -> None:
        if self.is_running():
            raise RuntimeError("This event loop is already running")
        if events._get_running_loop() is not None:
            raise SimulationError(
                "a simulation cannot run inside another running event loop (for example inside "
                "an `async def` test of pytest-asyncio): call it from synchronous code"
            )

    def run_forever(self) -> None:
        self._check_running()
        if runtime.active() is not None:
            raise SimulationError("a simulation is already running in this thread")
        with self.world_entered():
            super().run_forever()

    def world_entered(self) -> Any:
        """Patches on and this simulation active, for running the loop or tearing it down."""
        return _WorldEntered(self)

    def create_task(  # type: ignore[override]
        self,
        coro: Coroutine[Any, Any, T],
        *,
        name: str | None = None,
        context: contextvars.Context | None = None,
    ) -> asyncio.Task[T]:
        if name is None:
            name = f"Task-{next(self._task_numbers)}"
        if self._task_factory is None and not self._debug:
            # BaseEventLoop.create_task without its frame (the same Task, on 3.11-3.13): every
            # task of a run is created here, and a fan-out of short tasks feels each frame.
            self._check_closed()
            task: asyncio.Task[T] = asyncio.Task(coro, loop=self, name=name, context=context)
        else:
            task = super().create_task(coro, name=name, context=context)
        default = self.default_boot
        boot = BOOT.get(default) if context is None else context.get(BOOT, default)
        if self._boots.get(boot.index) is not boot:
            # Not a live boot of this loop: another simulation's (code of it created this
            # loop), or a dead one's (a `finally` run at teardown).
            boot = default
        boot.add_task(task)
        return task

    def spawn_on(self, node: Host, coro: Coroutine[Any, Any, T]) -> asyncio.Future[T]:
        boot = node.boot
        if boot is None or not boot.alive:
            coro.close()
            raise NodeDown(f"cannot spawn on {node.name}: it is down; `sim.restart` it first")
        spawned = boot.spawned
        if len(spawned) >= MAX_SPAWNS_PENDING:
            coro.close()
            raise SimulationError(
                f"{MAX_SPAWNS_PENDING} tasks spawned on {node.name} are still running: await "
                "some before spawning more (or run a loop inside one spawned task)"
            )
        task = self.create_task(coro, context=boot.context.copy())
        key = boot.task_seq  # the task's own number on its boot
        outer: asyncio.Future[T] = self.create_future()

        def copy_outcome(done: asyncio.Task[T]) -> None:
            spawned.pop(key, None)  # finished: nothing left to fail with NodeDown
            if outer.done():
                return
            if done.cancelled():
                outer.cancel()
            elif (exc := done.exception()) is not None:
                outer.set_exception(exc)
            else:
                outer.set_result(done.result())

        def cancel_inner(fut: asyncio.Future[T]) -> None:
            if fut.cancelled():
                task.cancel()

        task.add_done_callback(copy_outcome)
        outer.add_done_callback(cancel_inner, context=boot.context)
        spawned[key] = outer
        return outer

    def bury(self, boot: Boot, reason: str) -> None:
        """Make `boot` dead: its callbacks never run again, its tasks are kept, not collected."""
        boot.alive = False
        boot.paused = False
        boot.deferred.clear()
        for fut in boot.spawned.values():
            if not fut.done():
                fut.set_exception(NodeDown(f"{boot.label} {reason} at t={self.now:.6f}s"))
                fut._log_traceback = False
        boot.spawned.clear()
        for task in boot.tasks.values():
            if task.done():
                continue  # finished before the death: nothing of it can run again
            task._log_destroy_pending = False  # type: ignore[attr-defined]
            self._graveyard.append(task)
        boot.tasks = {}
        if len(self._graveyard) > MAX_DEAD_TASKS:
            raise BoundExceeded(
                f"more than {MAX_DEAD_TASKS} tasks of dead nodes are kept (so that none of their "
                "code runs again): kill or crash less often, or split the run"
            )
        del self._boots[boot.index]
        ctx_boot = BOOT
        self._rebuild_timers(lambda h: h._context.get(ctx_boot) is not boot)  # type: ignore[attr-defined]

    def pause_boot(self, boot: Boot) -> None:
        boot.paused = True

    def resume_boot(self, boot: Boot) -> None:
        boot.paused = False
        deferred = boot.deferred
        boot.deferred = type(deferred)()
        # Older than anything of this boot already queued: they go first.
        self._ready.extendleft(reversed(deferred))

    def describe_pending(self, limit: int = 20) -> str:
        lines = []
        for boot in self._boots.values():
            for task in boot.tasks.values():
                if task.done():
                    continue
                coro = task.get_coro()
                where = getattr(coro, "__qualname__", repr(coro))
                lines.append(f"{boot.label}: {task.get_name()} {where}")
        more = f" ... and {len(lines) - limit} more" if len(lines) > limit else ""
        return "; ".join(lines[:limit]) + more if lines else "no tasks"

    def _raise_deadlock(self) -> NoReturn:
        raise Deadlock(
            f"seed {self.seed}: deadlock at t={self.now:.6f}s: nothing is ready, no timer is "
            f"pending, so nothing can ever happen again. Blocked tasks: {self.describe_pending()}"
        )

    def teardown(self) -> None:
        """End of the world: close every pending coroutine with the trace frozen.

        Their `finally` blocks run now rather than at some later garbage collection outside
        the simulation; anything they schedule or send is dropped with the loop's queues.
        """
        self._frozen = True
        closed: set[asyncio.Task[Any]] = set()
        # A `finally` run by a close may start more (a nemesis restarting a node in `finally`):
        # close those too, pass after pass, so no coroutine is left for a later collection to
        # report "never awaited". Each pass closes at least one task or ends the loop.
        for _ in range(MAX_TEARDOWN_PASSES):
            tasks = list(self._graveyard)
            for boot in self._boots.values():
                tasks.extend(boot.tasks.values())
            self._graveyard.clear()
            pending = [task for task in tasks if not task.done() and task not in closed]
            if not pending:  # (a loop that never ran, a library's new_event_loop, has none)
                break
            with _WorldEntered(self, inside_another=True):
                for task in pending:
                    closed.add(task)
                    task._log_destroy_pending = False  # type: ignore[attr-defined]
                    with contextlib.suppress(BaseException):  # the world is gone; nothing to tell
                        task.get_coro().close()
        else:
            logger.warning("teardown: coroutines still start after %d passes", MAX_TEARDOWN_PASSES)
        self._ready.clear()
        self._spare_ready.clear()
        self._scheduled.clear()

    close_with_teardown = False  # policy loops: asyncio.run closes them, so close ends the world

    def close(self) -> None:
        if self.close_with_teardown and not self._frozen and not self.is_running():
            self.teardown()
        super().close()

    def default_exception_handler(self, context: dict[str, Any]) -> None:
        message = context.get("message", "")
        exc = context.get("exception")
        handle = context.get("handle")
        if handle is not None and handle._context.get(BOOT) is self.kernel_boot:
            # The simulator's own machinery failed: the run means nothing past this point.
            if self.fatal is None:
                self.fatal = exc or SimulationError(str(message))
            self.stop()
        self.record(
            "error",
            message=stable_text(str(message)),
            exception=stable_text(repr(exc)) if exc else None,
        )
        super().default_exception_handler(context)

    # --- executors: inline, at a deterministic point ---------------------------------------

    def run_in_executor(  # type: ignore[override]
        self, executor: Any, func: Callable[..., T], *args: Any
    ) -> asyncio.Future[T]:
        self._check_closed()
        fut: asyncio.Future[T] = self.create_future()

        def run() -> None:
            if fut.cancelled():
                return
            try:
                result = func(*args)
            except Exception as exc:
                fut.set_exception(exc)
            except BaseException as exc:
                # KeyboardInterrupt, a test runner's timeout: they stop the run, as they would
                # stop the thread of a real executor's caller; the future never completes.
                self._escaping = exc
                raise
            else:
                fut.set_result(result)

        self.call_soon(run)
        return fut

    def set_default_executor(self, executor: Any) -> None:
        pass  # executors run inline; the one given is never used

    # --- network: the world's (see interfaces.IO) -----------------------------------------

    async def getaddrinfo(
        self,
        host: Any,
        port: Any,
        *,
        family: int = 0,
        type: int = 0,
        proto: int = 0,
        flags: int = 0,
    ) -> Any:
        return self.io.getaddrinfo(host, port, family=family, type=type, proto=proto)

    async def getnameinfo(self, sockaddr: Any, flags: int = 0) -> tuple[str, str]:
        return self.io.getnameinfo(sockaddr)

    async def create_connection(
        self, protocol_factory: Any, host: Any = None, port: Any = None, **kwargs: Any
    ) -> Any:
        return await self.io.create_connection(protocol_factory, host, port, **kwargs)

    async def create_server(
        self, protocol_factory: Any, host: Any = None, port: Any = None, **kwargs: Any
    ) -> Any:
        return await self.io.create_server(protocol_factory, host, port, **kwargs)

    async def create_datagram_endpoint(
        self, protocol_factory: Any, local_addr: Any = None, remote_addr: Any = None, **kwargs: Any
    ) -> Any:
        return await self.io.create_datagram_endpoint(
            protocol_factory, local_addr, remote_addr, **kwargs
        )

    async def sock_connect(self, sock: Any, address: Any) -> None:
        await self.io.sock_connect(sock, address)

    # --- the rest of the OS: refused -------------------------------------------------------

    def add_reader(  # type: ignore[override]
        self, fd: Any, callback: Any, *args: Any
    ) -> None:
        _unsupported("add_reader (a real file descriptor)")

    def add_writer(  # type: ignore[override]
        self, fd: Any, callback: Any, *args: Any
    ) -> None:
        _unsupported("add_writer (a real file descriptor)")

    def remove_reader(self, fd: Any) -> bool:
        return False

    def remove_writer(self, fd: Any) -> bool:
        return False

    async def sock_recv(self, sock: Any, nbytes: int) -> bytes:
        _unsupported("sock_recv on a raw socket (use streams or protocols)")

    async def sock_sendall(self, sock: Any, data: Any) -> None:
        _unsupported("sock_sendall on a raw socket (use streams or protocols)")

    async def sock_accept(self, sock: Any) -> Any:
        _unsupported("sock_accept on a raw socket (use create_server)")

    async def subprocess_exec(self, *args: Any, **kwargs: Any) -> Any:
        _unsupported("a subprocess")

    async def subprocess_shell(self, *args: Any, **kwargs: Any) -> Any:
        _unsupported("a subprocess")

    def add_signal_handler(  # type: ignore[override]
        self, sig: int, callback: Any, *args: Any
    ) -> None:
        _unsupported("a signal handler")

    def remove_signal_handler(self, sig: int) -> bool:
        return False

    async def create_unix_connection(self, *args: Any, **kwargs: Any) -> Any:
        _unsupported("a unix socket")

    async def create_unix_server(self, *args: Any, **kwargs: Any) -> Any:
        _unsupported("a unix socket")

    async def connect_read_pipe(self, *args: Any, **kwargs: Any) -> Any:
        _unsupported("a pipe")

    async def connect_write_pipe(self, *args: Any, **kwargs: Any) -> Any:
        _unsupported("a pipe")

    async def connect_accepted_socket(self, *args: Any, **kwargs: Any) -> Any:
        _unsupported("an accepted real socket")


class _WorldEntered:
    """Context manager: this thread is in the simulation, and the patches are installed.

    `inside_another`: for tearing a loop down while another simulation runs in this thread (a
    policy loop that code inside a simulation created and closes): that one steps aside for
    the teardown and is back in place after it. The world is told last on the way in and
    first on the way out, so that its seams see the kernel's state in place.
    """

    def __init__(self, loop: SimLoop, inside_another: bool = False) -> None:
        self._loop = loop
        self._inside_another = inside_another
        self._outer: SimLoop | None = None

    def __enter__(self) -> None:
        if self._inside_another:
            outer = runtime.active()
            if outer is not None:
                _WorldEntered._leave(outer)
                self._outer = outer
        try:
            _WorldEntered._enter(self._loop)
        except BaseException:
            self._restore_outer()
            raise

    def __exit__(self, *exc: object) -> None:
        try:
            _WorldEntered._leave(self._loop)
        finally:
            self._restore_outer()

    @staticmethod
    def _enter(loop: SimLoop) -> None:
        runtime.enter(loop)
        try:
            entropy.acquire()
            try:
                if loop.world is not None:
                    loop.world.entered()
            except BaseException:
                entropy.release()
                raise
        except BaseException:
            runtime.leave(loop)
            raise

    @staticmethod
    def _leave(loop: SimLoop) -> None:
        try:
            if loop.world is not None:
                loop.world.left()
        finally:
            try:
                entropy.release()
            finally:
                runtime.leave(loop)

    def _restore_outer(self) -> None:
        if self._outer is not None:
            _WorldEntered._enter(self._outer)
            self._outer = None
