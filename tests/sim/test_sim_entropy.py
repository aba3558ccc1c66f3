"""Time and entropy inside a simulation come from the seed and the virtual clock."""

from __future__ import annotations

import asyncio
import datetime
import os
import random
import secrets
import threading
import time
import uuid

import pytest

import detsim
from detsim import Simulation
from detsim.sim.clock import EPOCH_S


async def sample():
    await asyncio.sleep(1.5)
    return {
        "time": time.time(),
        "monotonic": time.monotonic(),
        "perf": time.perf_counter(),
        "ns": time.time_ns(),
        "now": datetime.datetime.now(datetime.UTC).isoformat(),
        "random": random.random(),
        "randint": random.randint(0, 10**9),
        "instance": random.Random().random(),
        "urandom": os.urandom(8).hex(),
        "secrets": secrets.token_hex(8),
        "uuid": str(uuid.uuid4()),
    }


def test_same_seed_same_values_other_seed_other_values():
    a = Simulation(seed=11).run(sample())
    b = Simulation(seed=11).run(sample())
    c = Simulation(seed=12).run(sample())
    assert a == b
    for key in ("random", "randint", "instance", "urandom", "secrets", "uuid"):
        assert a[key] != c[key], key
    assert a["time"] == c["time"] == EPOCH_S + 1.5
    assert a["monotonic"] == 1.5
    assert a["now"] == "2024-01-01T00:00:01.500000+00:00"


def test_everything_is_restored_after_the_run():
    state = random.getstate()
    real_time = time.time
    Simulation(seed=1).run(sample())
    assert random.getstate() == state
    assert time.time is real_time
    assert datetime.datetime.now().year >= 2025  # the real clock again
    assert os.urandom(8) != os.urandom(8)


def test_blocking_sleep_and_threads_are_refused():
    async def sleeper():
        time.sleep(0.1)

    with pytest.raises(detsim.SimulationError, match=r"asyncio\.sleep"):
        Simulation().run(sleeper())

    async def threader():
        threading.Thread(target=print).start()

    with pytest.raises(detsim.SimulationError, match="threads are not simulated"):
        Simulation().run(threader())


def test_each_draw_of_the_random_module_is_in_the_trace_hash():
    async def draws(n):
        return [random.random() for _ in range(n)]

    one, two = Simulation(seed=3), Simulation(seed=3)
    one.run(draws(1))
    two.run(draws(2))
    assert one.trace_hash != two.trace_hash


def test_user_trace_events_are_recorded():
    sim = Simulation(seed=1)

    async def main():
        await asyncio.sleep(2)
        detsim.trace.event("checkpoint", value=42)

    sim.run(main())
    assert {"t": 2.0, "node": "supervisor", "kind": "checkpoint", "value": 42} in sim.events
    detsim.trace.event("outside")  # outside a simulation: nothing, no error


def test_other_threads_stay_in_the_real_world_while_a_simulation_runs():
    import socket

    seen_times: list[float] = []
    errors: list[BaseException] = []
    stop = threading.Event()
    started = threading.Event()

    def background() -> None:
        try:
            started.set()
            while not stop.is_set():
                seen_times.append(time.time())
                random.random()
                with socket.socket() as s:  # a real socket: fileno is a real descriptor
                    assert s.fileno() >= 0
                time.sleep(0.0005)  # a real sleep, not refused
        except BaseException as exc:
            errors.append(exc)

    async def busy():
        for _ in range(20_000):
            await asyncio.sleep(0.001)
        return time.time(), random.random()

    def run() -> tuple[object, str]:
        sim = Simulation(seed=4)
        return sim.run(busy()), sim.trace_hash

    alone = run()
    thread = threading.Thread(target=background)
    thread.start()
    started.wait()
    try:
        beside = run()
    finally:
        stop.set()
        thread.join()
    assert errors == []
    assert beside == alone  # the simulation is not disturbed by the thread...
    assert len(seen_times) > 5
    assert min(seen_times) > EPOCH_S + 3600 * 24 * 365  # ...nor it by the sim


_REAL_SLEEP = time.sleep  # captured before any simulation patches it


def test_isinstance_of_the_real_classes_holds_in_other_threads_during_a_run():
    import socket

    entered = threading.Event()
    answers: list[object] = []

    def other_thread() -> None:  # started before the run: a real thread beside it
        entered.wait(30)
        try:
            with socket.socket() as sock:
                real_dt = datetime.datetime.fromtimestamp(0.0)
                answers.extend(
                    [
                        isinstance(real_dt, datetime.datetime),
                        isinstance(sock, socket.socket),
                        issubclass(type(sock), socket.socket),
                        isinstance(datetime.datetime.now(), datetime.datetime),
                    ]
                )
        except BaseException as exc:
            answers.append(exc)

    thread = threading.Thread(target=other_thread)
    thread.start()

    async def main():
        entered.set()
        _REAL_SLEEP(0.5)  # hold the run (and its patches) while the other thread checks
        with socket.socket() as simulated:
            return isinstance(simulated, socket.socket), isinstance(
                datetime.datetime.now(), datetime.datetime
            )

    assert Simulation(seed=1).run(main()) == (True, True)
    thread.join(30)
    assert answers == [True, True, True, True]


def test_a_patch_replaced_during_a_run_is_reported_and_the_original_restored():
    real_time = time.time

    async def main():
        time.time = lambda: 0.0  # someone else's patch, over the simulator's

    with pytest.raises(AssertionError, match=r"time\.time replaced"):
        Simulation(seed=1).run(main())
    assert time.time is real_time
    assert not detsim.in_simulation()
