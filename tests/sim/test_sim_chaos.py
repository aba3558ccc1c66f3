"""The simulator under chaos: every fault at random, over many seeds (a VOPR for the simulator).

A safety phase draws faults from the seed (partitions, clogs, kills, crashes, pauses, latency
and clock changes) while clients call echo servers with timeouts and retries; then a liveness
phase with every fault off: every node is up, every client must get through. The properties
are the simulator's own: no failure of its machinery, no task left waiting on a healed world,
and the same seed giving the same trace.
"""

from __future__ import annotations

import asyncio
import random

import echo_app
import pytest

import detsim
from detsim import NetConfig, Simulation

SERVERS = ["s0", "s1", "s2"]
CLIENTS = ["c0", "c1", "c2"]
SAFETY_S = 20.0
CALL_TIMEOUT_S = 3.0


async def caller(name: str, rng: random.Random, stop: asyncio.Event) -> tuple[int, int]:
    ok = failed = 0
    while not stop.is_set():
        server = rng.choice(SERVERS)
        try:
            async with asyncio.timeout(CALL_TIMEOUT_S):
                reply = await echo_app.call(server, 7000, [f"{name}-{ok}"])
            assert reply == [f"{name}-{ok}".upper()], reply
            ok += 1
        except (ConnectionError, TimeoutError):
            failed += 1
        await asyncio.sleep(rng.uniform(0.0, 0.2))
    return ok, failed


async def nemesis(sim: Simulation, rng: random.Random) -> None:
    nodes = SERVERS + CLIENTS
    while sim.now < SAFETY_S:
        await asyncio.sleep(rng.uniform(0.1, 2.0))
        action = rng.randrange(8)
        target = rng.choice(SERVERS)
        if action == 0:
            shuffled = rng.sample(nodes, len(nodes))
            cut = rng.randrange(1, len(nodes))
            sim.net.partition(shuffled[:cut], shuffled[cut:])
        elif action == 1:
            sim.net.heal()
        elif action == 2:
            sim.net.clog(rng.choice(nodes), rng.choice(nodes))
        elif action == 3:
            sim.kill(target) if sim.node(target).alive else sim.restart(target)
        elif action == 4:
            sim.crash(target) if sim.node(target).alive else sim.restart(target)
        elif action == 5 and sim.node(target).alive:
            sim.pause(target)
            await asyncio.sleep(rng.uniform(0.1, 3.0))
            sim.resume(target)
        elif action == 6:
            lo = rng.uniform(0.0001, 0.05)
            sim.net.set_latency(lo, lo * rng.uniform(1, 10), src=rng.choice(nodes))
        else:
            sim.set_clock(target, offset=rng.uniform(-5, 5), drift=rng.uniform(-0.1, 0.1))


def chaos(sim: Simulation):
    rng = random.Random(sim.seed)
    for i, name in enumerate(SERVERS):
        sim.add_node(name, ip=f"10.0.0.{i + 1}", init=lambda: echo_app.serve("0.0.0.0", 7000))
    clients = [sim.add_node(n, ip=f"10.0.1.{i + 1}") for i, n in enumerate(CLIENTS)]

    async def main():
        stop = asyncio.Event()
        calls = [c.spawn(caller(c.name, random.Random(rng.random()), stop)) for c in clients]
        await nemesis(sim, rng)
        # Liveness: every fault off, every server up and running.
        sim.net.heal()
        sim.net.set_latency(0.001, 0.010)
        for name in SERVERS:
            if not sim.node(name).alive or sim.node(name).crashed:
                sim.restart(name)
            else:
                sim.resume(name)
        await asyncio.sleep(10.0)
        stop.set()
        results = [await t for t in calls]
        final = [await c.spawn(echo_app.call(s, 7000, ["final"])) for c in clients for s in SERVERS]
        return results, final

    return main()


def run_seed(seed: int) -> Simulation:
    sim = Simulation(seed=seed, net=NetConfig(connect_timeout=2.0, stream_timeout=8.0))
    results, final = sim.run(chaos(sim))
    assert all(reply == ["FINAL"] for reply in final)
    assert sum(ok for ok, _ in results) > 0
    return sim


@pytest.mark.parametrize("seed", range(40))
def test_chaos_seed(seed):
    sim = run_seed(seed)
    kinds = {e["kind"] for e in sim.events}
    assert {"accept", "recv"} <= kinds


def test_chaos_faults_do_happen_across_seeds():
    kinds: set[str] = set()
    for seed in range(10):
        kinds |= {e["kind"] for e in run_seed(seed).events}
    faults = {"partition", "kill", "crash", "pause", "resume", "clog", "set_clock", "set_latency"}
    consequences = {"hold", "rst", "refuse", "connect_timeout"}
    assert faults | consequences <= kinds


@pytest.mark.parametrize("seed", [0, 17])
def test_chaos_is_deterministic(seed):
    detsim.check_determinism(chaos, seed, net=NetConfig(connect_timeout=2.0, stream_timeout=8.0))


@pytest.mark.slow
def test_chaos_many_seeds():
    for seed in range(40, 2040):
        run_seed(seed)
