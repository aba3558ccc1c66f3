"""Blocking waits in code run inline by executors raise SimulationError instead of hanging
(kernel/blocking.py), waits that can be answered at once are answered, and the same primitives
used by real threads beside a run are untouched."""

from __future__ import annotations

import _thread
import asyncio
import concurrent.futures
import copy
import queue
import threading
import time

import pytest

import detsim
from detsim import Simulation
from detsim.sim.kernel import blocking

HANG_GUARD_S = 60  # before the fix each wait here hung: pytest-timeout fails it instead
REAL_WAIT_S = 30.0  # the longest a real thread here waits for its partner (a bound, not a timing)
SHORT_TIMEOUT_S = 0.05  # a real timeout that must simply expire in a thread outside the run
HOLD_S = 0.2  # how long a real thread holds a lock the simulation then asks for

_REAL_SLEEP = time.sleep  # captured before any simulation patches it
_REAL_LOCK_TYPE = type(_thread.allocate_lock())
_REAL_SIMPLE_QUEUE = queue.SimpleQueue
# Every patched attribute as it is outside a run (no run is live while this module loads).
_ORIGINALS = {(owner, name): getattr(owner, name) for owner, name, _ in blocking.patches()}


def run(main):
    return Simulation(seed=0).run(main)


# --- each wait that hung before: it raises, naming what blocked and what to use ---------------


def _condition_wait() -> None:
    cond = threading.Condition()
    with cond:
        cond.wait()


def _condition_wait_with_timeout() -> None:
    cond = threading.Condition()
    with cond:
        cond.wait(timeout=5.0)


def _condition_wait_for_false() -> None:
    cond = threading.Condition()
    with cond:
        cond.wait_for(lambda: False)


def _semaphore_acquire() -> None:
    threading.Semaphore(0).acquire()


def _semaphore_with() -> None:
    with threading.Semaphore(0):
        pass


def _bounded_semaphore_acquire() -> None:
    sem = threading.BoundedSemaphore(1)
    sem.acquire()
    sem.acquire(timeout=5.0)


def _barrier_wait() -> None:
    threading.Barrier(2).wait()


def _barrier_wait_default_timeout() -> None:
    threading.Barrier(2, timeout=5.0).wait()


def _simple_queue_get() -> None:
    queue.SimpleQueue().get()


def _simple_queue_get_with_timeout() -> None:
    queue.SimpleQueue().get(timeout=5.0)


def _lock_acquired_twice() -> None:
    lock = threading.Lock()
    lock.acquire()
    lock.acquire()


def _lock_acquired_with_timeout() -> None:
    lock = threading.Lock()
    with lock:
        lock.acquire(timeout=5.0)


def _queue_join() -> None:
    q: queue.Queue[int] = queue.Queue()
    q.put(1)
    q.join()


def _futures_wait() -> None:
    concurrent.futures.wait([concurrent.futures.Future()])


def _futures_as_completed() -> None:
    next(concurrent.futures.as_completed([concurrent.futures.Future()]))


def _run_coroutine_threadsafe_result_with_timeout() -> None:
    async def answer() -> int:
        return 42

    asyncio.run_coroutine_threadsafe(answer(), asyncio.get_running_loop()).result(timeout=5.0)


def _future_exception_with_timeout() -> None:
    concurrent.futures.Future().exception(timeout=5.0)


HUNG_BEFORE = [
    (_condition_wait, "threading.Condition.wait()", "asyncio.Condition"),
    (_condition_wait_for_false, "Condition.wait_for() of a false predicate", "asyncio.Condition"),
    (_semaphore_acquire, "threading.Semaphore.acquire()", "asyncio.Semaphore"),
    (_semaphore_with, "threading.Semaphore.acquire()", "asyncio.Semaphore"),
    (_barrier_wait, "threading.Barrier.wait() with 1 of 2 parties", "asyncio.Barrier"),
    (_simple_queue_get, "queue.SimpleQueue.get()", "asyncio.Queue"),
    (_lock_acquired_twice, "threading.Lock.acquire()", "asyncio.Lock"),
    (_queue_join, "queue.Queue.join() with 1 unfinished", "asyncio.Queue"),
    (_futures_wait, "threading.Event.wait()", "asyncio.wait"),
    (_futures_as_completed, "threading.Event.wait()", "asyncio.wait"),
]

# A timeout is real time, and nothing in the run could end the wait before it: these raise too
# (before the fix the first five blocked the run for 5 s of real time, then timed out).
WITH_A_TIMEOUT = [
    (_condition_wait_with_timeout, "threading.Condition.wait()", "asyncio.Condition"),
    (_bounded_semaphore_acquire, "threading.BoundedSemaphore.acquire()", "asyncio.Semaphore"),
    (_barrier_wait_default_timeout, "threading.Barrier.wait()", "asyncio.Barrier"),
    (_simple_queue_get_with_timeout, "queue.SimpleQueue.get()", "asyncio.Queue"),
    (_lock_acquired_with_timeout, "threading.Lock.acquire()", "asyncio.Lock"),
    (_run_coroutine_threadsafe_result_with_timeout, "Future.result()", "await coro"),
    (_future_exception_with_timeout, "Future.exception()", "wrap_future"),
]


def _error_in_executor_code(blocking_call) -> str:
    async def main():
        with pytest.raises(detsim.SimulationError) as info:
            await asyncio.to_thread(blocking_call)
        return str(info.value)

    return run(main())


@pytest.mark.timeout(HANG_GUARD_S)
@pytest.mark.parametrize(("blocking_call", "named", "instead"), HUNG_BEFORE)
def test_a_wait_only_another_thread_could_end_raises_instead_of_hanging(
    blocking_call, named, instead
):
    message = _error_in_executor_code(blocking_call)
    assert named in message and instead in message
    assert "would wait forever" in message


@pytest.mark.timeout(HANG_GUARD_S)
@pytest.mark.parametrize(("blocking_call", "named", "instead"), WITH_A_TIMEOUT)
def test_a_wait_with_a_real_timeout_raises_too(blocking_call, named, instead):
    message = _error_in_executor_code(blocking_call)
    assert named in message and instead in message
    assert "5.0s of real time, while virtual time stands still" in message


@pytest.mark.timeout(HANG_GUARD_S)
def test_a_lock_a_task_holds_across_an_await_raises_in_executor_code_that_takes_it():
    async def main():
        lock = threading.Lock()

        def take() -> None:
            with lock:
                pass

        # A real executor's thread would wait for this block to end; inline: never.
        with lock, pytest.raises(detsim.SimulationError) as info:
            await asyncio.to_thread(take)
        await asyncio.to_thread(take)  # released: taken at once
        return str(info.value)

    message = run(main())
    assert "threading.Lock.acquire() of a lock this simulation's thread holds" in message
    assert "asyncio.Lock" in message


# --- waits that can be answered at once are answered ------------------------------------------


def _answered_at_once() -> list[object]:
    answers: list[object] = []
    cond = threading.Condition(threading.Lock())
    with cond:
        answers += [cond.wait(0), cond.wait_for(lambda: "ready"), cond.wait_for(lambda: 0, 0)]
    sem = threading.BoundedSemaphore(1)
    answers += [sem.acquire(), sem.acquire(blocking=False), sem.acquire(timeout=0)]
    sem.release()
    with sem:
        answers.append("with sem")
    answers.append(threading.Barrier(1).wait())
    try:
        threading.Barrier(2).wait(timeout=0)
    except threading.BrokenBarrierError:
        answers.append("broken")
    simple: queue.SimpleQueue[str] = queue.SimpleQueue()
    simple.put("item")
    answers += [simple.get(), simple.get(block=False) if not simple.empty() else "empty"]
    lock = threading.Lock()
    answers += [lock.acquire(), lock.acquire(blocking=False), lock.acquire(timeout=0)]
    lock.release()
    rlock = threading.RLock()  # re-entered by its holder: it cannot hang, and is not patched
    with rlock, rlock:
        answers.append("rlock re-entered")
    q: queue.Queue[int] = queue.Queue()
    q.put(1)
    q.get()
    q.task_done()
    q.join()
    answers.append("joined")
    return answers


def test_waits_that_can_be_answered_at_once_are_answered_in_a_simulation():
    async def main():
        return await asyncio.to_thread(_answered_at_once)

    assert run(main()) == [
        *(False, "ready", 0),
        *(True, False, False),
        "with sem",
        0,
        "broken",
        *("item", "empty"),
        *(True, False, False),
        "rlock re-entered",
        "joined",
    ]


def test_a_lock_held_by_a_thread_outside_the_run_is_waited_for_not_refused():
    handed: queue.Queue[object] = queue.Queue()
    held = _thread.allocate_lock()  # real: the simulation's thread waits on it for real
    held.acquire()

    def outside() -> None:
        lock = handed.get(timeout=REAL_WAIT_S)
        with lock:
            held.release()  # the simulation may now ask for `lock`: this thread holds it
            _REAL_SLEEP(HOLD_S)  # the outcome does not depend on it: only which path is taken

    thread = threading.Thread(target=outside)
    thread.start()

    async def main():
        lock = threading.Lock()
        handed.put(lock)
        assert held.acquire(timeout=REAL_WAIT_S)
        return lock.acquire()  # held by `outside`, which will release it: a real wait

    try:
        assert run(main()) is True
    finally:
        thread.join(REAL_WAIT_S)


# --- other threads and other times are untouched ----------------------------------------------


def _probe_real_waits() -> dict[str, object]:
    """What the blocking waits answer in a thread that runs no simulation (short timeouts)."""
    seen: dict[str, object] = {}
    cond = threading.Condition()
    with cond:
        seen["Condition.wait"] = cond.wait(SHORT_TIMEOUT_S)
        seen["Condition.wait_for"] = cond.wait_for(lambda: False, SHORT_TIMEOUT_S)
    seen["Semaphore.acquire"] = threading.Semaphore(0).acquire(timeout=SHORT_TIMEOUT_S)
    try:
        threading.Barrier(2).wait(timeout=SHORT_TIMEOUT_S)
    except threading.BrokenBarrierError:
        seen["Barrier.wait"] = "broken"
    simple = queue.SimpleQueue()
    seen["SimpleQueue is the real type"] = type(simple) is _REAL_SIMPLE_QUEUE
    seen["isinstance SimpleQueue"] = isinstance(simple, queue.SimpleQueue)
    try:
        simple.get(timeout=SHORT_TIMEOUT_S)
    except queue.Empty:
        seen["SimpleQueue.get"] = "empty"
    lock = threading.Lock()
    seen["Lock is the real type"] = type(lock) is _REAL_LOCK_TYPE
    with lock:
        seen["Lock.acquire"] = lock.acquire(timeout=SHORT_TIMEOUT_S)
    return seen


def _meet_a_partner() -> dict[str, object]:
    """Blocking waits (no short timeout) between two real threads complete as in Python."""
    barrier = threading.Barrier(2)
    sem = threading.Semaphore(0)
    simple = queue.SimpleQueue()
    cond = threading.Condition()
    ready: list[bool] = []

    def partner() -> None:
        barrier.wait(REAL_WAIT_S)
        simple.put("from partner")
        sem.release()
        with cond:
            ready.append(True)
            cond.notify()

    thread = threading.Thread(target=partner)
    thread.start()
    met = barrier.wait(REAL_WAIT_S) in (0, 1)
    answers = {
        "met": met,
        "item": simple.get(timeout=REAL_WAIT_S),
        "permit": sem.acquire(timeout=REAL_WAIT_S),
    }
    with cond:
        answers["notified"] = cond.wait_for(lambda: ready, REAL_WAIT_S) == [True]
    thread.join(REAL_WAIT_S)
    return answers


@pytest.mark.timeout(HANG_GUARD_S)
def test_the_same_primitives_in_a_real_thread_during_a_run_are_untouched():
    entered = threading.Event()
    finished = _thread.allocate_lock()  # real: the simulation's thread waits on it for real
    finished.acquire()
    outcome: dict[str, object] = {}

    def beside_the_run() -> None:
        try:
            entered.wait(REAL_WAIT_S)
            outcome["patched meanwhile"] = queue.SimpleQueue is not _REAL_SIMPLE_QUEUE
            outcome.update(_probe_real_waits())
            outcome.update(_meet_a_partner())
        except BaseException as exc:
            outcome["error"] = exc
        finally:
            finished.release()

    thread = threading.Thread(target=beside_the_run)
    thread.start()

    async def main():
        entered.set()
        assert finished.acquire(timeout=REAL_WAIT_S)  # hold the run (and its patches) meanwhile

    run(main())
    thread.join(REAL_WAIT_S)
    assert outcome == {
        "patched meanwhile": True,
        "Condition.wait": False,
        "Condition.wait_for": False,
        "Semaphore.acquire": False,
        "Barrier.wait": "broken",
        "SimpleQueue is the real type": True,
        "isinstance SimpleQueue": True,
        "SimpleQueue.get": "empty",
        "Lock is the real type": True,
        "Lock.acquire": False,
        "met": True,
        "item": "from partner",
        "permit": True,
        "notified": True,
    }


def test_the_patches_are_in_place_only_during_a_run():
    async def main():
        return [getattr(owner, name) is ours for owner, name, ours in blocking.patches()]

    assert all(run(main()))
    assert all(getattr(owner, name) is real for (owner, name), real in _ORIGINALS.items())


def test_a_lock_and_a_simple_queue_made_in_a_run_behave_as_real_ones_after_it():
    async def main():
        return threading.Lock(), queue.SimpleQueue()

    lock, simple = run(main())
    assert isinstance(lock, blocking.SimLock) and isinstance(simple, blocking.SimSimpleQueue)
    assert lock.acquire() and not lock.acquire(timeout=SHORT_TIMEOUT_S)  # no run: a real wait
    lock.release()
    assert not lock.locked()
    with pytest.raises(RuntimeError):
        lock.release()
    with pytest.raises(queue.Empty):
        simple.get(timeout=SHORT_TIMEOUT_S)


@pytest.mark.timeout(HANG_GUARD_S)
def test_a_real_thread_blocked_on_objects_it_shares_with_a_run_is_woken_by_the_run():
    cond = threading.Condition()  # made before the run
    permits = threading.Semaphore(0)
    handed: queue.Queue[queue.SimpleQueue[str]] = queue.Queue()
    finished = _thread.allocate_lock()  # real: the simulation's thread waits on it for real
    finished.acquire()
    flag: list[str] = []
    got: dict[str, object] = {}

    def beside_the_run() -> None:
        try:
            simple = handed.get(timeout=REAL_WAIT_S)  # made in the run: a SimSimpleQueue
            got["item"] = simple.get(timeout=REAL_WAIT_S)
            with cond:
                got["notified"] = cond.wait_for(lambda: flag, REAL_WAIT_S)
            got["permit"] = permits.acquire(timeout=REAL_WAIT_S)
        except BaseException as exc:
            got["error"] = exc
        finally:
            finished.release()

    thread = threading.Thread(target=beside_the_run)
    thread.start()

    def wake() -> None:  # inline executor code: none of these calls waits
        simple: queue.SimpleQueue[str] = queue.SimpleQueue()
        handed.put(simple)
        simple.put("from the run")
        with cond:
            flag.append("set")
            cond.notify_all()
        permits.release()

    async def main():
        await asyncio.to_thread(wake)
        assert finished.acquire(timeout=REAL_WAIT_S)

    run(main())
    thread.join(REAL_WAIT_S)
    assert got == {"item": "from the run", "notified": ["set"], "permit": True}


def test_python_own_errors_are_kept_not_turned_into_simulation_errors():
    def misuse() -> list[str]:
        errors = []
        for call in (threading.Condition().wait, threading.Lock().release):
            try:
                call()
            except detsim.SimulationError as exc:  # also a RuntimeError: caught first
                errors.append(f"SimulationError: {exc}")
            except RuntimeError as exc:
                errors.append(str(exc))
        try:
            copy.copy(threading.Lock())
        except TypeError as exc:
            errors.append(str(exc))
        return errors

    async def main():
        return await asyncio.to_thread(misuse)

    assert run(main()) == [
        "cannot wait on un-acquired lock",
        "release unlocked lock",
        "cannot pickle 'SimLock' object",
    ]
