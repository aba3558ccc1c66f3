"""SimLoop on its own: the kernel's loop with no Simulation, no network, no disk.

What the kernel promises the world that plugs into it: virtual time, FIFO within a boot and a
seeded interleaving between boots, dead and paused boots, liveness errors, stated bounds, and
I/O asked of the plugged world only (`kernel.interfaces`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from detsim.sim.kernel import loop as kernel_loop
from detsim.sim.kernel import runtime
from detsim.sim.kernel.boot import MIN_TASKS_PRUNE_AT
from detsim.sim.kernel.clock import NodeClock
from detsim.sim.kernel.errors import (
    BoundExceeded,
    Deadlock,
    NodeDown,
    SimulationError,
    SimulationTimeLimit,
)
from detsim.sim.kernel.loop import SimLoop
from detsim.sim.kernel.trace import Trace


def new_loop(seed: int = 0, time_limit_s: float = 3600.0) -> SimLoop:
    return SimLoop(seed, time_limit_s, Trace())


@pytest.fixture
def loop() -> Iterator[SimLoop]:
    made = new_loop()
    yield made
    made.teardown()
    made.close()


def test_sleep_takes_virtual_time_only(loop):
    async def main():
        await asyncio.sleep(5)
        return loop.time()

    assert loop.run_until_complete(main()) == 5.0
    assert loop.now == 5.0
    assert runtime.active() is None  # the thread left the loop


def interleaving(seed: int) -> list[str]:
    loop = new_loop(seed)
    boots = [loop.new_boot(name, None, NodeClock()) for name in ("a", "b", "c")]
    order: list[str] = []
    for i in range(4):
        for boot in boots:
            loop.call_soon(order.append, f"{boot.label}{i}", context=boot.context.copy())
    loop.run_until_complete(asyncio.sleep(0))
    loop.teardown()
    loop.close()
    return order


def test_fifo_within_a_boot_and_a_seeded_interleaving_between_boots():
    orders = {seed: interleaving(seed) for seed in range(8)}
    for order in orders.values():
        for label in "abc":
            assert [x for x in order if x[0] == label] == [f"{label}{i}" for i in range(4)]
    assert orders[3] == interleaving(3)  # same seed, same order
    assert len({tuple(o) for o in orders.values()}) > 1  # seeds choose different orders


def test_a_dead_boots_callbacks_and_timers_never_run(loop):
    boot = loop.new_boot("n1", None, NodeClock())
    ran: list[str] = []
    loop.call_soon(ran.append, "soon", context=boot.context.copy())
    handle = boot.context.copy().run(loop.call_later, 1.0, ran.append, "later")
    loop.bury(boot, "was killed")

    loop.run_until_complete(asyncio.sleep(2))
    assert ran == [] and not handle.cancelled()  # dropped by the loop, not by the caller


class _Host:
    def __init__(self, name: str, loop: SimLoop) -> None:
        self.name = name
        self.boot = loop.new_boot(name, self, NodeClock())


def test_a_spawned_task_of_a_buried_boot_raises_nodedown(loop):
    host = _Host("n1", loop)

    async def main():
        pending = loop.spawn_on(host, asyncio.sleep(10))
        await asyncio.sleep(1)
        loop.bury(host.boot, "crashed")
        with pytest.raises(NodeDown, match="n1 crashed"):
            await pending
        with pytest.raises(NodeDown, match="it is down"):
            loop.spawn_on(host, asyncio.sleep(0))

    loop.run_until_complete(main())


def test_a_paused_boot_runs_nothing_until_resumed_then_in_order(loop):
    boot = loop.new_boot("n1", None, NodeClock())
    ran: list[tuple[str, float]] = []

    async def work():
        for step in ("a", "b"):
            ran.append((step, loop.now))
            await asyncio.sleep(1)

    async def main():
        loop.create_task(work(), context=boot.context.copy())
        await asyncio.sleep(0.5)
        loop.pause_boot(boot)
        await asyncio.sleep(5)
        loop.resume_boot(boot)
        await asyncio.sleep(0)

    loop.run_until_complete(main())
    assert ran == [("a", 0.0), ("b", 5.5)]  # the timer came due at 1.0, ran on resume


def test_nothing_left_to_happen_is_a_deadlock_naming_the_task(loop):
    async def waits_forever():
        await loop.create_future()

    with pytest.raises(Deadlock, match="waits_forever"):
        loop.run_until_complete(waits_forever())


def test_past_the_time_limit():
    loop = new_loop(time_limit_s=10.0)
    with pytest.raises(SimulationTimeLimit, match="10s"):
        loop.run_until_complete(asyncio.sleep(11))
    loop.teardown()
    loop.close()


def test_too_many_ready_callbacks_is_a_bound_hit(loop, monkeypatch):
    monkeypatch.setattr(kernel_loop, "MAX_READY_CALLBACKS", 10)
    for _ in range(11):
        loop.call_soon(lambda: None)
    with pytest.raises(BoundExceeded, match="callbacks ready"):
        loop.run_until_complete(asyncio.sleep(0))


def test_without_a_world_the_network_is_refused(loop):
    async def main():
        with pytest.raises(SimulationError, match="no world"):
            await loop.getaddrinfo("n1", 80)
        with pytest.raises(SimulationError, match="no world"):
            await asyncio.open_connection("n1", 80)

    loop.run_until_complete(main())


class _RecordingIO:
    """A world's I/O that answers names and records what the loop asked."""

    def __init__(self) -> None:
        self.asked: list[tuple[str, Any]] = []

    async def create_connection(self, protocol_factory, host, port, **kwargs):
        self.asked.append(("create_connection", (host, port)))
        raise ConnectionRefusedError(f"{host}:{port}")

    async def create_server(self, protocol_factory, host, port, **kwargs):
        raise AssertionError("not asked")

    async def create_datagram_endpoint(self, protocol_factory, local_addr, remote_addr, **kw):
        raise AssertionError("not asked")

    async def sock_connect(self, sock, address):
        raise AssertionError("not asked")

    def getaddrinfo(self, host, port, *, family=0, type=0, proto=0):
        self.asked.append(("getaddrinfo", (host, port)))
        return [(2, 1, 6, "", ("10.0.0.7", port))]

    def getnameinfo(self, sockaddr):
        return ("n7", str(sockaddr[1]))

    def resolve(self, host):
        self.asked.append(("resolve", host))
        return "10.0.0.7"

    def new_socket(self, *args, **kwargs):
        raise AssertionError("not asked")


class _World:
    def __init__(self) -> None:
        self.io = _RecordingIO()
        self.hooks: list[str] = []

    def entered(self) -> None:
        self.hooks.append("entered")

    def left(self) -> None:
        self.hooks.append("left")


def test_a_plugged_world_answers_the_loops_io_and_hears_the_thread_enter_and_leave(loop):
    import socket

    world = _World()
    loop.plug(world)

    async def main():
        assert world.hooks == ["entered"]
        infos = await loop.getaddrinfo("n7", 80)
        assert socket.gethostbyname("n7") == "10.0.0.7"  # the patch asks the same world
        with pytest.raises(ConnectionRefusedError):
            await loop.create_connection(asyncio.Protocol, "n7", 80)
        return infos[0][4]

    assert loop.run_until_complete(main()) == ("10.0.0.7", 80)
    assert world.hooks == ["entered", "left"]
    assert world.io.asked == [
        ("getaddrinfo", ("n7", 80)),
        ("resolve", "n7"),
        ("create_connection", ("n7", 80)),
    ]
    with pytest.raises(AssertionError, match="one world"):
        loop.plug(_World())


def test_finished_tasks_leave_the_boots_table_in_bulk(loop):
    boot = loop.supervisor_boot
    sizes = []

    async def short():
        await asyncio.sleep(0)

    async def main():
        for _ in range(5_000):
            await loop.create_task(short())
            sizes.append(len(boot.tasks))

    loop.run_until_complete(main())
    assert max(sizes) <= MIN_TASKS_PRUNE_AT  # one live task at a time: pruned at the minimum


def test_debug_mode_keeps_asyncios_own_checks_and_tracebacks(loop):
    loop.set_debug(True)

    async def main():
        handle = loop.call_soon(lambda: None)
        await asyncio.sleep(0)
        return handle._source_traceback

    assert loop.run_until_complete(main())  # asyncio's debug path recorded where it was made


def test_only_unfinished_tasks_of_a_dead_boot_are_kept(loop):
    host = _Host("n1", loop)

    async def main():
        for _ in range(100):
            await loop.spawn_on(host, asyncio.sleep(0))
        loop.spawn_on(host, asyncio.sleep(10))
        await asyncio.sleep(1)
        loop.bury(host.boot, "was killed")

    loop.run_until_complete(main())
    assert len(loop._graveyard) == 1  # the sleeping one; the 100 finished ones are not kept
