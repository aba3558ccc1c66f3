"""The kernel's clocks and timers under skew and drift (`kernel.clock`, `SimLoop.call_at`).

What would break: a timer converted from a host's local deadline to a global instant one ulp
early fires before its deadline without the global clock moving, and code that sleeps until a
local deadline (asyncio.timeout, wait_for loops, the Raft transport's dial wait) re-arms at the
same virtual instant forever. Properties checked over many (offset, drift, deadline) triples:
a host's clock never runs backwards, `to_global(d)` is the first global instant whose local
time is >= d, a timer never fires before its local deadline (loop.time() at firing >= it), a
sleep-until-deadline loop ends after one wake-up, and a drift change moves pending timers.
"""

from __future__ import annotations

import asyncio
import contextvars
import math

from hypothesis import given, settings
from hypothesis import strategies as st

from detsim.sim.kernel.clock import MAX_ABS_DRIFT, NodeClock
from detsim.sim.kernel.loop import SimLoop
from detsim.sim.kernel.trace import Trace

MAX_WAKEUPS = 100  # a sleep-until-deadline loop woken this often is spinning at one instant

global_times = st.floats(min_value=0.0, max_value=1e6, allow_nan=False)
offsets = st.floats(min_value=-1e4, max_value=1e4, allow_nan=False)
drifts = st.floats(min_value=-MAX_ABS_DRIFT, max_value=MAX_ABS_DRIFT, allow_nan=False)
delays = st.floats(min_value=0.0, max_value=1e4, allow_nan=False)


def skewed_clock(set_at_s: float, offset_s: float, drift: float) -> NodeClock:
    clock = NodeClock()
    clock.set(set_at_s, offset_s, drift)
    return clock


@settings(max_examples=2_000, deadline=None)
@given(global_times, offsets, drifts, delays)
def test_to_global_is_the_first_instant_at_or_past_the_local_deadline(
    set_at_s: float, offset_s: float, drift: float, delay_s: float
) -> None:
    clock = skewed_clock(set_at_s, offset_s, drift)
    deadline_s = clock.monotonic(set_at_s) + delay_s
    fire_at_s = clock.to_global(deadline_s)
    assert clock.monotonic(fire_at_s) >= deadline_s  # not early
    assert clock.monotonic(math.nextafter(fire_at_s, -math.inf)) < deadline_s  # not late


def test_to_global_was_an_ulp_early_for_the_chaos_values() -> None:
    # The values of the pinned scenario failure (tests/scenarios/test_known_issues.py): the
    # plain inverse map gave an instant whose local time was one ulp short of the deadline.
    clock = NodeClock()
    clock.set(0.14520393787433972, -17.004036172163197, -0.06230673953382615)
    now_s = 0.14520393787433972 + 0.1
    deadline_s = clock.monotonic(now_s) + 0.2995224996457315
    assert clock.monotonic(clock.to_global(deadline_s)) >= deadline_s


@settings(max_examples=500, deadline=None)
@given(st.lists(st.tuples(delays, offsets, drifts), min_size=1, max_size=8))
def test_a_clock_never_runs_backwards_across_changes(
    changes: list[tuple[float, float, float]],
) -> None:
    clock = NodeClock()
    now_s = 0.0
    last_local_s = clock.monotonic(now_s)
    for step_s, offset_s, drift in changes:
        for _ in range(3):
            now_s += step_s / 3
            assert clock.monotonic(now_s) >= last_local_s
            last_local_s = clock.monotonic(now_s)
        clock.set(now_s, offset_s, drift)
        assert clock.monotonic(now_s) == last_local_s  # a rate change is no jump


def new_host_loop() -> tuple[SimLoop, NodeClock, contextvars.Context]:
    """A kernel loop with one host: its clock (not skewed yet) and its boot's context."""
    loop = SimLoop(0, 1e9, Trace())
    clock = NodeClock()
    boot = loop.new_boot("a", None, clock)
    return loop, clock, boot.context


async def sleep_until_deadline(delay_s: float) -> tuple[int, float, float]:
    """Wait `delay_s` on this host's clock the way the Raft transport does: timeout rounds
    until loop.time() reaches the deadline. (wake-ups, deadline, loop.time() at the end)."""
    loop = asyncio.get_running_loop()
    deadline_s = loop.time() + delay_s
    wakeups = 0
    while loop.time() < deadline_s and wakeups < MAX_WAKEUPS:
        wakeups += 1
        try:
            async with asyncio.timeout(deadline_s - loop.time()):
                await asyncio.Event().wait()
        except TimeoutError:
            pass
    return wakeups, deadline_s, loop.time()


@settings(max_examples=300, deadline=None)
@given(global_times, offsets, drifts, st.floats(min_value=1e-9, max_value=1e4))
def test_a_sleep_until_a_local_deadline_wakes_once_past_it(
    set_at_s: float, offset_s: float, drift: float, delay_s: float
) -> None:
    loop, clock, context = new_host_loop()

    async def main() -> tuple[int, float, float]:
        await asyncio.sleep(set_at_s)  # the kernel boot's clock is global time
        loop.set_node_clock(clock, offset_s, drift)
        task = loop.create_task(sleep_until_deadline(delay_s), context=context.copy())
        return await task

    try:
        wakeups, deadline_s, woke_at_s = loop.run_until_complete(main())
    finally:
        loop.teardown()
        loop.close()
    assert woke_at_s >= deadline_s
    assert wakeups == 1


@settings(max_examples=300, deadline=None)
@given(offsets, drifts, drifts, st.floats(min_value=1e-6, max_value=1e4))
def test_a_drift_change_moves_pending_timers_to_their_local_deadline(
    offset_s: float, drift_before: float, drift_after: float, delay_s: float
) -> None:
    loop, clock, context = new_host_loop()
    loop.set_node_clock(clock, offset_s, drift_before)
    fired_at_local_s: list[float] = []

    async def sleeper() -> float:
        deadline_s = loop.time() + delay_s
        loop.call_at(deadline_s, lambda: fired_at_local_s.append(loop.time()))
        return deadline_s

    async def main() -> float:
        deadline_s = await loop.create_task(sleeper(), context=context.copy())
        await asyncio.sleep(delay_s / 4)  # the timer is pending when the rate changes
        loop.set_node_clock(clock, offset_s, drift_after)
        while not fired_at_local_s:
            await asyncio.sleep(delay_s / 4)
        return deadline_s

    try:
        deadline_s = loop.run_until_complete(main())
    finally:
        loop.teardown()
        loop.close()
    assert fired_at_local_s[0] >= deadline_s
