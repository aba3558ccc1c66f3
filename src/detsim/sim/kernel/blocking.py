"""Blocking waits inside a simulation: an error that says what to use, never a hang.

Owned here: the patches (installed and removed by `entropy.acquire` / `release`, with the
others) of every blocking wait of `threading`, `queue` and `concurrent.futures` that code run
inline by `run_in_executor` / `asyncio.to_thread` may make. Each patch dispatches per call:
in any thread that is not running a simulation (`runtime.active()` is None) it is the real
method, so a real thread using the same primitive beside a run is untouched.

Why these waits raise. A simulation runs all its code in one thread: the loop's, and executors
run inline in it (threads cannot be started: `Thread.start` raises). A blocking wait there can
only be ended by another thread; no thread of the simulation can run while this one blocks, so
the wait never ends (a thread outside the run could end it, at a moment no seed reproduces).
A hang is never an answer in a simulation: the wait raises `SimulationError` naming what
blocked and what to use instead. A wait that can be answered at once (an item in the queue, a
permit left, a set event, a done future, a true predicate, the last party of a barrier, a free
lock) is answered, and so is a non-blocking one or one with a zero timeout.

Timeouts are real time, so a positive timeout raises too. Python's timeouts count wall-clock
seconds, but virtual time cannot pass while the simulation's thread is blocked (that thread is
the one that would advance it), and nothing can end the wait early: the answer is foregone
(it times out) and only real time would be spent, making a run's speed depend on the machine.
Answering "timed out" at once is no better: code that polls (`while not ev.wait(0.1)`) would
then spin for ever on a frozen clock. So `Event.wait(5.0)`, `Condition.wait(5.0)`,
`run_coroutine_threadsafe(coro, loop).result(timeout=5.0)` and the like raise as without one.

The waits, one by one:
- `concurrent.futures.Future.result/exception` of a future not done (so
  `asyncio.run_coroutine_threadsafe(...).result()`, with or without a timeout);
  `concurrent.futures.wait` and `as_completed` block on a `threading.Event`, see below.
- `queue.Queue.get` of an empty queue, `put` into a full one, `join` with unfinished tasks.
- `queue.SimpleQueue.get` of an empty queue. The C type cannot be patched, so while patched
  `queue.SimpleQueue` is a class whose instances made in a simulation's thread have a checked
  `get`; made in any other thread, they are the real C type (and isinstance answers for it).
- `threading.Event.wait` of an event not set.
- `threading.Condition.wait` (only another thread's `notify` ends it) and `wait_for` whose
  predicate is false.
- `threading.Semaphore.acquire` (and `with sem:`, and `BoundedSemaphore`) with no permit left.
- `threading.Barrier.wait` that is not the last party's.
- `threading.Lock().acquire()` of a lock held by the simulation's thread itself. In plain
  Python this deadlocks too, but in a simulation it is mostly a deadlock of the inline
  executor's making: a task that holds the lock across an `await` while executor code takes it
  would, with a real executor, make the executor's thread wait until the loop releases it.
  Either way only this thread could release it, so it raises. The C lock type cannot be
  patched, so while patched `threading.Lock` makes, in a simulation's thread, a `SimLock` (the
  real lock plus the thread that holds it); in any other thread, a real lock. A lock held by a
  thread outside the run is a real wait that that thread ends: it is waited for, as in Python.
- not patched, because they cannot hang in the simulation's thread: `threading.RLock` (held by
  this thread it is re-entered at once; held by another thread, that thread releases it).
  Note what inline executors change there: executor code enters an RLock held by a task
  suspended at an `await`, where a real executor's thread would wait — mutual exclusion
  between a task and executor code is not simulated. `threading.Thread.join`: no thread can
  be started in a run, and one started outside it ends on its own.

Known limits: locks made before a run (a library's module-level `threading.Lock()` made at
import) are the real C type, and a simulation's thread blocking on one it holds still hangs, as
does `SimpleQueue.get` on a queue made before the run, and the private `_thread` primitives.
The test suite's timeout (pytest-timeout) ends such a hang; the inline executor lets its
exception through.
"""

from __future__ import annotations

import concurrent.futures
import queue
import threading
from typing import Any, SupportsIndex

from detsim.sim.kernel import runtime
from detsim.sim.kernel.errors import SimulationError

_REAL_FUTURE_RESULT = concurrent.futures.Future.result
_REAL_FUTURE_EXCEPTION = concurrent.futures.Future.exception
_REAL_QUEUE_GET = queue.Queue.get
_REAL_QUEUE_PUT = queue.Queue.put
_REAL_QUEUE_JOIN = queue.Queue.join
_REAL_SIMPLE_QUEUE: type[queue.SimpleQueue[Any]] = queue.SimpleQueue
_REAL_EVENT_WAIT = threading.Event.wait
_REAL_CONDITION_WAIT = threading.Condition.wait
_REAL_CONDITION_WAIT_FOR = threading.Condition.wait_for
_REAL_SEMAPHORE_ACQUIRE = threading.Semaphore.acquire
_REAL_BARRIER_WAIT = threading.Barrier.wait
_REAL_LOCK: Any = threading.Lock  # a function on 3.11-3.12, the lock type on 3.13
_REAL_LOCK_TYPE: type[Any] = type(_REAL_LOCK())
_get_ident = threading.get_ident


def _in_simulation() -> bool:
    return runtime.active() is not None


def _would_hang(timeout: float | None) -> bool:
    """A wait in the caller's thread blocks, and it is a simulation's: nothing can wake it."""
    return (timeout is None or timeout > 0) and _in_simulation()


def _hang(what: str, instead: str, timeout_s: float | None = None) -> SimulationError:
    how_long = (
        "forever"
        if timeout_s is None or timeout_s < 0
        else f"{timeout_s}s of real time, while virtual time stands still, then time out"
    )
    return SimulationError(
        f"{what} inside a simulation would wait {how_long}: the loop that could end the wait "
        f"runs in this same thread (executors run inline). {instead}"
    )


# --- concurrent.futures -------------------------------------------------------------------

_FUTURE_INSTEAD = (
    "Await it instead: `await asyncio.wrap_future(fut)`, or `await coro` rather than "
    "`asyncio.run_coroutine_threadsafe(coro, loop).result()`"
)


def sim_future_result(self: concurrent.futures.Future[Any], timeout: float | None = None) -> Any:
    if not self.done() and _would_hang(timeout):
        raise _hang(
            "concurrent.futures.Future.result() of a pending future", _FUTURE_INSTEAD, timeout
        )
    return _REAL_FUTURE_RESULT(self, timeout)


def sim_future_exception(
    self: concurrent.futures.Future[Any], timeout: float | None = None
) -> BaseException | None:
    if not self.done() and _would_hang(timeout):
        raise _hang(
            "concurrent.futures.Future.exception() of a pending future", _FUTURE_INSTEAD, timeout
        )
    return _REAL_FUTURE_EXCEPTION(self, timeout)


# --- queue --------------------------------------------------------------------------------


def sim_queue_get(self: queue.Queue[Any], block: bool = True, timeout: float | None = None) -> Any:
    if not (block and _would_hang(timeout)):
        return _REAL_QUEUE_GET(self, block, timeout)
    try:
        return _REAL_QUEUE_GET(self, False)
    except queue.Empty:
        raise _hang(
            "a blocking queue.Queue.get() on an empty queue",
            "Use an asyncio.Queue and `await queue.get()`, or `get_nowait()`",
            timeout,
        ) from None


def sim_queue_put(
    self: queue.Queue[Any], item: Any, block: bool = True, timeout: float | None = None
) -> None:
    if not (block and _would_hang(timeout)):
        _REAL_QUEUE_PUT(self, item, block, timeout)
        return
    try:
        _REAL_QUEUE_PUT(self, item, False)
    except queue.Full:
        raise _hang(
            "a blocking queue.Queue.put() into a full queue",
            "Use an asyncio.Queue and `await queue.put(item)`, or `put_nowait()`",
            timeout,
        ) from None


def sim_queue_join(self: queue.Queue[Any]) -> None:
    if self.unfinished_tasks and _would_hang(None):
        raise _hang(
            f"queue.Queue.join() with {self.unfinished_tasks} unfinished task(s)",
            "Use an asyncio.Queue and `await queue.join()`",
        )
    _REAL_QUEUE_JOIN(self)


class _DefersToRealSimpleQueue(type):
    """Metaclass: `queue.SimpleQueue`, while patched, answers isinstance and issubclass for the
    real C type, whose instances other threads (and code from before the run) still make."""

    def __instancecheck__(cls, obj: object) -> bool:
        return isinstance(obj, _REAL_SIMPLE_QUEUE)

    def __subclasscheck__(cls, sub: type) -> bool:
        return issubclass(sub, _REAL_SIMPLE_QUEUE)


class SimSimpleQueue(queue.SimpleQueue[Any], metaclass=_DefersToRealSimpleQueue):
    """`queue.SimpleQueue` while patched: in a simulation's thread, a SimpleQueue whose
    blocking `get` of an empty queue raises; in any other thread, the real C type."""

    __slots__ = ()

    def __new__(cls) -> Any:
        # Outside a simulation's thread the queue is the real C type: nothing of ours in it.
        if cls is SimSimpleQueue and not _in_simulation():
            return _REAL_SIMPLE_QUEUE()
        return super().__new__(cls)

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        if not (block and _would_hang(timeout)):
            return super().get(block, timeout)
        try:
            return super().get(False)
        except queue.Empty:
            raise _hang(
                "a blocking queue.SimpleQueue.get() on an empty queue",
                "Use an asyncio.Queue and `await queue.get()`, or `get_nowait()`",
                timeout,
            ) from None


# --- threading ----------------------------------------------------------------------------


def sim_event_wait(self: threading.Event, timeout: float | None = None) -> bool:
    if not self.is_set() and _would_hang(timeout):
        raise _hang(
            "threading.Event.wait() on an event that is not set",
            "Use an asyncio.Event and `await event.wait()` (for concurrent.futures.wait or "
            "as_completed, which wait on one: `await asyncio.wait(...)` of "
            "`asyncio.wrap_future(f)`)",
            timeout,
        )
    return _REAL_EVENT_WAIT(self, timeout)


_CONDITION_INSTEAD = "Use an asyncio.Condition and `await cond.wait()` / `await cond.wait_for(p)`"


def _owns(condition: threading.Condition) -> bool:
    """Whether the calling thread holds the condition's lock (else the real wait raises
    RuntimeError at once: that error is Python's to give, not a hang)."""
    return bool(condition._is_owned())  # type: ignore[attr-defined]


def sim_condition_wait(self: threading.Condition, timeout: float | None = None) -> bool:
    if _would_hang(timeout) and _owns(self):
        raise _hang(
            "threading.Condition.wait() (only another thread's notify() could end it)",
            _CONDITION_INSTEAD,
            timeout,
        )
    return _REAL_CONDITION_WAIT(self, timeout)


def sim_condition_wait_for(
    self: threading.Condition, predicate: Any, timeout: float | None = None
) -> Any:
    if not (_would_hang(timeout) and _owns(self)):
        return _REAL_CONDITION_WAIT_FOR(self, predicate, timeout)
    result = predicate()
    if not result:
        raise _hang(
            "threading.Condition.wait_for() of a false predicate", _CONDITION_INSTEAD, timeout
        )
    return result


def sim_semaphore_acquire(
    self: threading.Semaphore, blocking: bool = True, timeout: float | None = None
) -> bool:
    if not (blocking and _would_hang(timeout)):
        return _REAL_SEMAPHORE_ACQUIRE(self, blocking, timeout)
    if _REAL_SEMAPHORE_ACQUIRE(self, False):
        return True
    raise _hang(
        f"threading.{type(self).__name__}.acquire() with no permit left",
        "Use an asyncio.Semaphore and `async with sem:`",
        timeout,
    )


def sim_barrier_wait(self: threading.Barrier, timeout: float | None = None) -> int:
    default_timeout_s: float | None = self._timeout  # type: ignore[attr-defined]
    effective_timeout_s = timeout if timeout is not None else default_timeout_s
    last_party = self.n_waiting + 1 >= self.parties
    if not self.broken and not last_party and _would_hang(effective_timeout_s):
        raise _hang(
            f"threading.Barrier.wait() with {self.n_waiting + 1} of {self.parties} parties",
            "Use an asyncio.Barrier (Python 3.11+) and `await barrier.wait()`",
            effective_timeout_s,
        )
    return _REAL_BARRIER_WAIT(self, timeout)


class SimLock:
    """`threading.Lock()` made in a simulation's thread: the real lock, plus the thread that
    holds it, so that a blocking acquire of a lock the simulation's own thread holds raises."""

    __slots__ = ("_holder", "_lock")

    def __init__(self) -> None:
        self._lock: Any = _REAL_LOCK()
        self._holder: int | None = None  # thread ident of the holder; None when free

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        if blocking and timeout != 0 and self._holder == _get_ident() and _in_simulation():
            raise _hang(
                "threading.Lock.acquire() of a lock this simulation's thread holds",
                "Use an asyncio.Lock and `async with lock:` (a task that holds a threading.Lock "
                "across an await blocks executor code that takes it)",
                timeout,
            )
        if not self._lock.acquire(blocking, timeout):
            return False
        # Every release goes through `release` (Condition's too), which clears the holder.
        assert self._holder is None, f"SimLock acquired while held by thread {self._holder}"
        self._holder = _get_ident()
        return True

    def release(self) -> None:
        holder, self._holder = self._holder, None  # cleared first: the lock is then free
        try:
            self._lock.release()
        except RuntimeError:  # "release unlocked lock": Python's error, and nothing changed
            self._holder = holder
            raise

    def locked(self) -> bool:
        return bool(self._lock.locked())

    __enter__ = acquire

    def __exit__(self, *exc_info: object) -> None:
        self.release()

    def _at_fork_reinit(self) -> None:  # threading and logging call it after os.fork()
        self._lock._at_fork_reinit()
        self._holder = None

    def __reduce_ex__(self, protocol: SupportsIndex) -> str | tuple[Any, ...]:
        # As a real lock: not copied nor pickled (a copy would share the real lock inside).
        raise TypeError("cannot pickle 'SimLock' object")

    def __repr__(self) -> str:
        return f"<detsim SimLock {'locked' if self.locked() else 'unlocked'}>"


class _LockFactory(type):
    """Metaclass of `threading.Lock` while patched: calling it makes a SimLock in a
    simulation's thread and a real lock in any other; isinstance answers for both."""

    def __call__(cls) -> Any:
        return SimLock() if _in_simulation() else _REAL_LOCK()

    def __instancecheck__(cls, obj: object) -> bool:
        return isinstance(obj, (_REAL_LOCK_TYPE, SimLock))

    def __subclasscheck__(cls, sub: type) -> bool:
        return issubclass(sub, (_REAL_LOCK_TYPE, SimLock))


class DispatchLock(metaclass=_LockFactory):
    """`threading.Lock` while patched (see `_LockFactory`)."""


def patches() -> list[tuple[Any, str, Any]]:
    """(owner, attribute, replacement) of every blocking wait, for `entropy` to install."""
    return [
        (concurrent.futures.Future, "result", sim_future_result),
        (concurrent.futures.Future, "exception", sim_future_exception),
        (queue.Queue, "get", sim_queue_get),
        (queue.Queue, "put", sim_queue_put),
        (queue.Queue, "join", sim_queue_join),
        (queue, "SimpleQueue", SimSimpleQueue),
        (threading.Event, "wait", sim_event_wait),
        (threading.Condition, "wait", sim_condition_wait),
        (threading.Condition, "wait_for", sim_condition_wait_for),
        (threading.Semaphore, "acquire", sim_semaphore_acquire),
        # `Semaphore.__enter__ = acquire` was bound when the class was made: patch it too.
        (threading.Semaphore, "__enter__", sim_semaphore_acquire),
        (threading.Barrier, "wait", sim_barrier_wait),
        (threading, "Lock", DispatchLock),
    ]
