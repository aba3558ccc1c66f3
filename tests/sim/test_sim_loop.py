"""The loop on virtual time: asyncio's primitives behave as on the standard loop."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import queue
import threading
import time

import pytest

import detsim
from detsim import Simulation

_REAL_SLEEP = time.sleep  # captured before any simulation patches it


def run(main, seed=0, **kw):
    return Simulation(seed=seed, **kw).run(main)


def test_sleep_jumps_the_clock_exactly():
    sim = Simulation(seed=1)

    async def main():
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        await asyncio.sleep(3600)
        return loop.time() - t0

    assert sim.run(main()) == 3600.0
    assert sim.now == 3600.0


def test_call_soon_is_fifo_and_call_later_orders_by_deadline():
    order = []

    async def main():
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        for i in range(5):
            loop.call_soon(order.append, i)
        loop.call_later(0.2, order.append, "b")
        loop.call_later(0.1, order.append, "a")
        loop.call_at(loop.time() + 0.3, done.set_result, None)
        await done

    run(main())
    assert order == [0, 1, 2, 3, 4, "a", "b"]


def test_timeout_and_wait_for_fire_on_virtual_time():
    async def main():
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(2.5):
                await asyncio.sleep(10)
        t1 = loop.time()
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(asyncio.Event().wait(), 1.5)
        return t1 - t0, loop.time() - t1

    assert run(main()) == (2.5, 1.5)


def test_queue_event_lock_semaphore_taskgroup():
    async def main():
        q: asyncio.Queue[int] = asyncio.Queue(maxsize=2)
        lock, sem, ev = asyncio.Lock(), asyncio.Semaphore(2), asyncio.Event()
        inside = []
        peak = 0

        async def producer():
            for i in range(6):
                await q.put(i)
            await q.put(-1)

        async def consumer(out):
            while (item := await q.get()) != -1:
                out.append(item)

        async def worker(i):
            nonlocal peak
            async with sem:
                inside.append(i)
                peak = max(peak, len(inside))
                await asyncio.sleep(1)
                inside.remove(i)
            async with lock:
                await ev.wait()

        out: list[int] = []
        async with asyncio.TaskGroup() as tg:
            tg.create_task(producer())
            tg.create_task(consumer(out))
            for i in range(4):
                tg.create_task(worker(i))
            tg.create_task(asyncio.sleep(5)).add_done_callback(lambda _: ev.set())
        return out, peak, asyncio.get_running_loop().time()

    out, peak, t = run(main())
    assert out == [0, 1, 2, 3, 4, 5]
    assert peak == 2  # the semaphore admitted two at a time
    assert t == 5.0


def test_taskgroup_propagates_errors_and_cancels_siblings():
    cancelled = []

    async def main():
        async def sibling():
            try:
                await asyncio.sleep(100)
            except asyncio.CancelledError:
                cancelled.append(asyncio.get_running_loop().time())
                raise

        async def boom():
            await asyncio.sleep(1)
            raise ValueError("boom")

        async with asyncio.TaskGroup() as tg:
            tg.create_task(sibling())
            tg.create_task(boom())

    with pytest.raises(ExceptionGroup) as info:
        run(main())
    assert info.group_contains(ValueError)
    assert cancelled == [1.0]


def test_executor_and_to_thread_run_inline():
    import threading

    async def main():
        loop = asyncio.get_running_loop()
        a = await loop.run_in_executor(None, lambda x: x * 2, 21)
        b = await asyncio.to_thread(threading.current_thread)
        with pytest.raises(KeyError):
            await asyncio.to_thread(dict().__getitem__, "missing")
        return a, b

    a, b = run(main())
    assert a == 42
    assert b is threading.main_thread()  # no thread was started


def _run_coroutine_threadsafe_and_wait() -> None:
    async def answer() -> int:
        return 42

    asyncio.run_coroutine_threadsafe(answer(), asyncio.get_running_loop()).result()


def _get_from_empty_queue() -> None:
    queue.Queue().get()


def _put_into_full_queue() -> None:
    q: queue.Queue[int] = queue.Queue(maxsize=1)
    q.put(1)
    q.put(2)


def _wait_for_an_event() -> None:
    threading.Event().wait(timeout=5.0)


def _wait_for_a_pending_future() -> None:
    concurrent.futures.Future().result()


@pytest.mark.timeout(60)  # before the fix, each of these hung for ever
@pytest.mark.parametrize(
    ("blocking", "named", "instead"),
    [
        (_run_coroutine_threadsafe_and_wait, "Future.result()", "await coro"),
        (_get_from_empty_queue, "queue.Queue.get()", "asyncio.Queue"),
        (_put_into_full_queue, "queue.Queue.put()", "asyncio.Queue"),
        (_wait_for_an_event, "threading.Event.wait()", "asyncio.Event"),
        (_wait_for_a_pending_future, "Future.result()", "wrap_future"),
    ],
)
def test_a_blocking_wait_in_inline_executor_code_raises_instead_of_hanging(
    blocking, named, instead
):
    async def main():
        with pytest.raises(detsim.SimulationError) as info:
            await asyncio.to_thread(blocking)
        return str(info.value)

    message = run(main())
    assert named in message and instead in message


def test_waits_that_can_be_answered_at_once_are_answered_in_a_simulation():
    def ready_waits():
        q: queue.Queue[int] = queue.Queue(maxsize=1)
        q.put(1)
        event = threading.Event()
        event.set()
        fut: concurrent.futures.Future[str] = concurrent.futures.Future()
        fut.set_result("done")
        return q.get(), event.wait(), fut.result(), threading.Event().wait(0)

    async def main():
        return await asyncio.to_thread(ready_waits)

    assert run(main()) == (1, True, "done", False)


def test_blocking_waits_in_other_threads_are_untouched_during_a_run():
    entered = threading.Event()
    outcome: queue.Queue[object] = queue.Queue()

    def other_thread() -> None:  # started before the run: a real thread beside it
        entered.wait(30)
        try:
            outcome.put(threading.Event().wait(0.05))  # while the patches are in place
        except BaseException as exc:
            outcome.put(exc)

    thread = threading.Thread(target=other_thread)
    thread.start()

    async def main():
        entered.set()
        _REAL_SLEEP(0.5)  # hold the run (and its patches) while the other thread waits

    run(main())
    thread.join(30)
    assert outcome.get(timeout=30) is False


class _Interrupt(BaseException):
    """Stands for KeyboardInterrupt or pytest-timeout's exception: not an `Exception`."""


def test_a_base_exception_in_executor_code_leaves_the_run_instead_of_the_future():
    def interrupted():
        raise _Interrupt("stop the test")

    async def main():
        try:
            await asyncio.to_thread(interrupted)
        except BaseException:
            return "swallowed into the future"
        return "no error"

    with pytest.raises(_Interrupt, match="stop the test"):
        run(main())


def test_contextvars_flow_into_tasks():
    var: contextvars.ContextVar[str] = contextvars.ContextVar("v", default="unset")

    async def child():
        await asyncio.sleep(0)
        return var.get()

    async def main():
        var.set("parent")
        return await asyncio.create_task(child())

    assert run(main()) == "parent"


def test_async_generators_are_finalised():
    closed = []

    async def gen():
        try:
            for i in range(10):
                yield i
                await asyncio.sleep(1)
        finally:
            closed.append(True)

    async def main():
        async for i in gen():
            if i == 2:
                break
        await asyncio.sleep(0)

    run(main())
    assert closed == [True]


def test_exception_handler_sees_callback_errors_and_they_are_traced():
    seen = []

    async def main():
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(lambda _loop, ctx: seen.append(repr(ctx.get("exception"))))
        loop.call_soon(lambda: 1 / 0)
        await asyncio.sleep(0.1)

    run(main())
    assert seen == ["ZeroDivisionError('division by zero')"]


def test_an_idle_hour_with_timers_costs_little_work():
    # 3600 one-second ticks: the clock jumps timer to timer; no work between them.
    sim = Simulation(seed=0)

    async def main():
        for _ in range(3600):
            await asyncio.sleep(1)

    sim.run(main())
    assert sim.now == 3600.0
    assert sim.loop.rounds <= 2 * 3600 + 2


def test_deadlock_names_the_blocked_task():
    async def stuck_forever():
        await asyncio.Event().wait()

    async def main():
        await asyncio.create_task(stuck_forever(), name="stuck")

    with pytest.raises(detsim.Deadlock) as info:
        run(main(), seed=5)
    assert "stuck" in str(info.value) and "stuck_forever" in str(info.value)
    assert "seed 5" in str(info.value)


def test_time_limit():
    async def main():
        while True:
            await asyncio.sleep(60)

    sim = Simulation(seed=9, time_limit=600)
    with pytest.raises(detsim.SimulationTimeLimit) as info:
        sim.run(main())
    assert "seed 9" in str(info.value)
    assert 540 <= sim.now <= 600


def test_main_exceptions_carry_the_seed():
    async def main():
        await asyncio.sleep(1)
        raise KeyError("x")

    with pytest.raises(KeyError) as info:
        run(main(), seed=77)
    assert any("seed 77" in note for note in info.value.__notes__)


def test_a_simulation_runs_once():
    sim = Simulation()
    sim.run(asyncio.sleep(0))
    with pytest.raises(detsim.SimulationError, match="runs once"):
        sim.run(asyncio.sleep(0))


def test_running_inside_another_loop_is_refused():
    async def outer():
        Simulation().run(asyncio.sleep(0))

    with pytest.raises(detsim.SimulationError, match="inside another running event loop"):
        asyncio.run(outer())


def test_buggify_is_false_outside_and_seeded_inside():
    assert detsim.buggify(1.0) is False

    def draws(seed):
        async def main():
            return [detsim.buggify(0.5) for _ in range(50)]

        return run(main(), seed=seed)

    a, b = draws(1), draws(1)
    assert a == b
    fired = [any(draws(s)) for s in range(12)]
    assert any(fired) and not all(fired)  # a site is switched on in some runs, off in others

    async def off():
        return [detsim.buggify(1.0) for _ in range(10)]

    assert not any(Simulation(seed=1, buggify=False).run(off()))


def test_interleaving_between_nodes_is_seeded_and_fifo_within_each_node():
    def order(seed: int) -> list[str]:
        sim = Simulation(seed=seed)
        nodes = [sim.add_node(f"n{i}", ip=f"10.0.0.{i + 1}") for i in range(3)]
        seen: list[str] = []

        async def burst(name: str) -> None:
            loop = asyncio.get_running_loop()
            for i in range(5):
                loop.call_soon(seen.append, f"{name}.{i}")  # all ready in the same round
            await asyncio.sleep(1)

        async def main():
            await asyncio.gather(*(n.spawn(burst(n.name)) for n in nodes))

        sim.run(main())
        return seen

    runs = {seed: order(seed) for seed in range(8)}
    assert order(3) == runs[3]
    assert len({tuple(r) for r in runs.values()}) > 1  # seeds give different interleavings
    for seen in runs.values():
        for name in ("n0", "n1", "n2"):
            mine = [s for s in seen if s.startswith(name)]
            assert mine == [f"{name}.{i}" for i in range(5)]  # FIFO within the node
    # ... and they interleave at callback granularity, not node by node:
    assert any(r[:5] != [f"{r[0][:2]}.{i}" for i in range(5)] for r in runs.values())


@pytest.mark.skipif(
    not hasattr(asyncio, "eager_task_factory"), reason="eager tasks are new in Python 3.12"
)
def test_eager_task_factory_on_a_node():
    sim = Simulation(seed=1)
    n1 = sim.add_node("n1", ip="10.0.0.1")

    async def child(i):
        await asyncio.sleep(i)
        return i

    async def work():
        asyncio.get_running_loop().set_task_factory(asyncio.eager_task_factory)
        first = asyncio.create_task(asyncio.sleep(0, result="eager"))
        rest = [asyncio.create_task(child(i)) for i in range(3)]
        return await first, await asyncio.gather(*rest), asyncio.get_running_loop().time()

    async def main():
        result = await n1.spawn(work())
        sim.kill("n1")
        return result

    assert sim.run(main()) == ("eager", [0, 1, 2], 2.0)


def test_a_loop_stopped_by_mains_own_code_says_so():
    async def main():
        asyncio.get_running_loop().stop()
        await asyncio.sleep(1)

    with pytest.raises(RuntimeError, match="stopped before Future completed"):
        run(main())
