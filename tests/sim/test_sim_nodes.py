"""Nodes: spawn, kill, crash, restart, pause, resume, clock skew, and misuse."""

from __future__ import annotations

import asyncio
import inspect
import time

import pytest

import detsim
from detsim import Simulation
from detsim.sim.errors import InitFailed, RunFailures, RunOutcome
from detsim.sim.kernel import loop as kernel_loop


def test_spawn_returns_the_result_and_nodedown_when_the_node_dies():
    sim = Simulation(seed=1)
    n1 = sim.add_node("n1", ip="10.0.0.1")

    async def main():
        assert await n1.spawn(asyncio.sleep(1, result="done")) == "done"
        pending = n1.spawn(asyncio.sleep(100))
        await asyncio.sleep(1)
        sim.kill("n1")
        with pytest.raises(detsim.NodeDown, match="n1 was killed"):
            await pending
        with pytest.raises(detsim.NodeDown, match="restart"):
            n1.spawn(asyncio.sleep(0))
        sim.restart("n1")
        return await n1.spawn(asyncio.sleep(0, result="again"))

    assert sim.run(main()) == "again"


def test_a_killed_nodes_code_never_runs_again_not_even_finally():
    ran = []

    async def worker():
        try:
            while True:
                await asyncio.sleep(1)
                ran.append(asyncio.get_running_loop().time())
        finally:
            ran.append("finally")

    sim = Simulation(seed=2)
    n1 = sim.add_node("n1", ip="10.0.0.1", init=worker)

    async def main():
        await asyncio.sleep(3.5)
        sim.kill(n1)
        seen_at_kill = list(ran)
        import gc

        gc.collect()  # leftover coroutines are kept, not collected: no finally runs
        await asyncio.sleep(10)
        return seen_at_kill

    seen_at_kill = sim.run(main())
    assert seen_at_kill == [1.0, 2.0, 3.0]  # no finally at kill time, nor 10 s later
    # Only when the world is torn down, after main returned, are leftover coroutines closed
    # (rather than at some garbage collection outside the simulation), with the trace frozen:
    assert ran == [1.0, 2.0, 3.0, "finally"]


def test_restart_runs_init_again_and_crash_then_restart():
    boots = []

    async def init():
        boots.append(asyncio.get_running_loop().time())
        await asyncio.Event().wait()

    sim = Simulation(seed=3)
    n1 = sim.add_node("n1", ip="10.0.0.1", init=init)

    async def main():
        await asyncio.sleep(1)
        sim.restart("n1")  # live: killed, then booted
        await asyncio.sleep(1)
        sim.crash("n1")
        assert not n1.alive
        await asyncio.sleep(1)
        sim.restart(n1)
        await asyncio.sleep(1)
        return n1.alive, n1.boots

    assert sim.run(main()) == (True, 3)
    assert boots == [0.0, 1.0, 3.0]
    kinds = [e["kind"] for e in sim.events if e["node"] == "n1"]
    assert kinds == ["start", "kill", "restart", "crash", "restart"]


def test_pause_stops_the_world_and_timers_fire_late_on_resume():
    ticks = []

    async def ticker():
        while True:
            await asyncio.sleep(1)
            ticks.append(asyncio.get_running_loop().time())

    sim = Simulation(seed=4)
    sim.add_node("n1", ip="10.0.0.1", init=ticker)

    async def main():
        await asyncio.sleep(2.5)
        sim.pause("n1")
        await asyncio.sleep(10)
        during = list(ticks)
        sim.resume("n1")
        await asyncio.sleep(1.6)
        return during

    during = sim.run(main())
    assert during == [1.0, 2.0]
    assert ticks == [1.0, 2.0, 12.5, 13.5]  # the timer due at 3.0 fired late, at resume


def test_set_clock_skews_wall_time_and_timer_rate():
    observed = {}

    async def probe(name):
        loop = asyncio.get_running_loop()
        w0, m0 = time.time(), loop.time()
        await asyncio.sleep(10)  # 10 s on this node's clock
        observed[name] = (time.time() - w0, loop.time() - m0, w0)

    sim = Simulation(seed=5)
    fast = sim.add_node("fast", ip="10.0.0.1")
    ahead = sim.add_node("ahead", ip="10.0.0.2")
    sim.set_clock(fast, drift=0.25)
    sim.set_clock(ahead, offset=3600.0)

    async def main():
        start = sim.now
        await fast.spawn(probe("fast"))
        fast_global = sim.now - start
        await ahead.spawn(probe("ahead"))
        return fast_global

    fast_global = sim.run(main())
    assert fast_global == pytest.approx(10 / 1.25)  # a fast clock's timers fire early
    assert observed["fast"][1] == pytest.approx(10.0)
    wall_fast, wall_ahead = observed["fast"][2], observed["ahead"][2]
    assert wall_ahead - wall_fast == pytest.approx(3600.0 + 8.0 - 0.0, abs=1e-6)
    with pytest.raises(detsim.SimulationError, match="drift"):
        sim.set_clock("fast", drift=2.0)


def test_misuse_says_what_to_do():
    sim = Simulation()
    sim.add_node("n1", ip="10.0.0.1")
    with pytest.raises(detsim.SimulationError, match=r"unknown node 'nope'.*add_node"):
        sim.kill("nope")
    with pytest.raises(detsim.SimulationError, match="already n1's"):
        sim.add_node("n2", ip="10.0.0.1")
    with pytest.raises(detsim.SimulationError, match="already exists"):
        sim.add_node("n1", ip="10.0.0.3")
    with pytest.raises(detsim.SimulationError, match="non-empty str"):
        sim.add_node(42, ip="10.0.0.4")  # type: ignore[arg-type]
    with pytest.raises(detsim.SimulationError, match="IPv4"):
        sim.add_node("n5", ip="not-an-ip")
    with pytest.raises(detsim.SimulationError, match="seed must be an int"):
        Simulation(seed="7")  # type: ignore[arg-type]
    other = Simulation().add_node("x", ip="10.0.0.1")
    with pytest.raises(detsim.SimulationError, match="another simulation"):
        sim.kill(other)


def test_an_init_that_raises_fails_the_run_with_the_node_named():
    async def broken():
        await asyncio.sleep(2)
        raise RuntimeError("cannot bind")

    sim = Simulation(seed=8)
    sim.add_node("n1", ip="10.0.0.1", init=broken)

    async def main():
        await asyncio.sleep(100)

    with pytest.raises(detsim.SimulationError, match=r"init of node n1 raised.*cannot bind"):
        sim.run(main())
    assert sim.now == 2.0


def test_an_init_failure_in_mains_last_round_still_fails_the_run():
    async def broken():
        await asyncio.sleep(1)
        raise RuntimeError("late")

    sim = Simulation(seed=8)
    sim.add_node("n1", ip="10.0.0.1", init=broken)

    async def main():
        await asyncio.sleep(1)  # main ends in the round where n1's init raises

    with pytest.raises(detsim.SimulationError, match="init of node n1 raised"):
        sim.run(main())


def test_spawned_tasks_are_tracked_only_while_they_run():
    sim = Simulation(seed=1)
    n1 = sim.add_node("n1")
    sizes = []

    async def main():
        for i in range(3_000):
            await n1.spawn(asyncio.sleep(0, result=i))
            sizes.append(len(n1.boot.spawned))

    sim.run(main())
    assert max(sizes) == 0  # nothing kept for tasks that finished


def test_pending_spawns_past_the_bound_are_refused_with_a_clear_error(monkeypatch):
    monkeypatch.setattr(kernel_loop, "MAX_SPAWNS_PENDING", 8)
    sim = Simulation(seed=1)
    n1 = sim.add_node("n1")

    async def main():
        pending = [n1.spawn(asyncio.sleep(1)) for _ in range(8)]
        with pytest.raises(detsim.SimulationError, match="8 tasks spawned on n1 are still running"):
            n1.spawn(asyncio.sleep(1))
        await asyncio.gather(*pending)
        return await n1.spawn(asyncio.sleep(0, result="room again"))

    assert sim.run(main()) == "room again"


def test_restarts_do_not_grow_the_loops_boots():
    sim = Simulation(seed=1)
    sim.add_node("n1", init=lambda: asyncio.sleep(10))
    live_boots = []

    async def main():
        for _ in range(500):
            sim.restart("n1")
            await asyncio.sleep(0.01)
            live_boots.append(len(sim.loop._boots))

    sim.run(main())
    assert max(live_boots) == 3  # the kernel's, the supervisor's and n1's current boot


@pytest.mark.parametrize(
    "main_error",
    [ValueError("main's own bug"), detsim.SimulationError("main misused the simulator")],
)
def test_an_init_failure_and_a_main_failure_in_one_run_are_both_reported(main_error):
    async def broken():
        await asyncio.sleep(1)
        raise OSError("cannot bind")

    sim = Simulation(seed=8)
    sim.add_node("n1", ip="10.0.0.1", init=broken)

    async def main():
        await asyncio.sleep(1)  # fails in the round where n1's init raises
        raise main_error

    with pytest.raises(RunFailures) as info:
        sim.run(main())
    group = info.value
    assert isinstance(group, detsim.SimulationError)  # callers catching it still do
    assert group.exceptions[0] is main_error
    assert isinstance(group.exceptions[1], InitFailed)
    assert "init of node n1 raised OSError('cannot bind')" in str(group.exceptions[1])


def test_outcomes_and_misuse_are_different_classes():
    assert issubclass(InitFailed, RunOutcome) and issubclass(detsim.Deadlock, RunOutcome)
    assert issubclass(detsim.SimulationTimeLimit, RunOutcome)
    assert not issubclass(detsim.NodeDown, RunOutcome)
    sim = Simulation(seed=1)
    with pytest.raises(detsim.SimulationError) as info:
        sim.node("nope")
    assert not isinstance(info.value, RunOutcome)  # misuse: a plain SimulationError


def test_a_restart_from_a_finally_at_teardown_leaves_no_coroutine_never_awaited():
    # At the end of a run the simulator closes every pending coroutine; a `finally` there that
    # restarts a node (a nemesis healing in `finally`) creates an init no one will run: it is
    # closed too, not left for Python to report "never awaited" at some later collection.

    async def init():
        await asyncio.sleep(100)

    sim = Simulation(seed=1)
    sim.add_node("n1", ip="10.0.0.1", init=init)
    c1 = sim.add_node("c1", ip="10.0.9.1")

    async def nemesis():
        try:
            sim.kill("n1")
            await asyncio.sleep(1000)
        finally:
            sim.restart("n1")

    async def main():
        c1.spawn(nemesis())
        await asyncio.sleep(1)

    sim.run(main())
    boot = sim.node("n1").boot
    assert boot is not None and boot.main_task is not None  # the restart's boot
    coro = boot.main_task.get_coro()
    assert inspect.getcoroutinestate(coro) == inspect.CORO_CLOSED  # never started, closed
