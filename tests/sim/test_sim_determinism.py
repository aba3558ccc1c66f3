"""Determinism is a tested property: same seed, same run — across processes and hash seeds."""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
import sys
import time

import echo_app
import pytest

import detsim
from detsim import NetConfig, Simulation
from detsim.sim.determinism import CHILD_ENV

_REAL_PERF_COUNTER = time.perf_counter  # captured before any simulation patches it
_REAL_URANDOM = os.urandom


def cluster(sim: Simulation):
    """Three servers, three clients, faults and entropy: a busy world."""
    for i in range(3):
        sim.add_node(f"s{i}", ip=f"10.0.0.{i + 1}", init=lambda: echo_app.serve("0.0.0.0", 7000))
    clients = [sim.add_node(f"c{i}", ip=f"10.0.1.{i + 1}") for i in range(3)]

    async def client(i):
        out = []
        for j in range(5):
            target = f"s{random.randrange(3)}"
            try:
                out += await echo_app.call(target, 7000, [f"c{i}-{j}"])
            except (ConnectionError, TimeoutError) as exc:
                out.append(type(exc).__name__)
            await asyncio.sleep(random.random())
        return out

    async def main():
        tasks = [c.spawn(client(i)) for i, c in enumerate(clients)]
        await asyncio.sleep(0.5)
        sim.net.partition(["s0"], ["c0", "c1"])
        sim.kill("s1")
        await asyncio.sleep(2)
        sim.net.heal()
        sim.restart("s1")
        return [await t for t in tasks]

    return main()


def hash_seed_dependent(sim: Simulation):
    """Iterates a set of strings: its order depends on PYTHONHASHSEED."""
    n1 = sim.add_node("n1", ip="10.0.0.1")

    async def work():
        for name in {"alpha", "beta", "gamma", "delta", "epsilon", "zeta"}:
            await asyncio.sleep(len(name) / 10 + 0.01 * ord(name[1]))
            detsim.trace.event("visited", name=name)

    async def main():
        await n1.spawn(work())

    return main()


def reads_real_time(sim: Simulation):
    async def main():
        await asyncio.sleep((_REAL_PERF_COUNTER() * 1e6) % 1.0)

    return main()


def test_same_seed_same_trace_hash_different_seed_different_hash():
    hashes = []
    for seed in (1, 1, 2):
        sim = Simulation(seed=seed)
        sim.run(cluster(sim))
        hashes.append(sim.trace_hash)
    assert hashes[0] == hashes[1] != hashes[2]


def test_check_determinism_in_process_returns_the_hash():
    sim = Simulation(seed=4)
    sim.run(cluster(sim))
    assert detsim.check_determinism(cluster, 4) == sim.trace_hash


def test_check_determinism_across_processes_and_hash_seeds():
    in_process = detsim.check_determinism(cluster, 5)
    assert detsim.check_determinism(cluster, 5, processes=True) == in_process


def test_hash_order_dependence_is_flagged_with_the_divergent_event():
    with pytest.raises(detsim.NondeterminismError) as info:
        detsim.check_determinism(hash_seed_dependent, 1, processes=True)
    message = str(info.value)
    assert "PYTHONHASHSEED" in message and "first divergent event" in message
    assert "visited" in message


def test_reading_real_time_behind_the_simulators_back_is_flagged():
    with pytest.raises(detsim.NondeterminismError, match=r"decisions|divergent"):
        detsim.check_determinism(reads_real_time, 1)


def test_network_configuration_changes_the_run():
    a = Simulation(seed=1, net=NetConfig(latency=(0.001, 0.002)))
    b = Simulation(seed=1, net=NetConfig(latency=(0.010, 0.020)))
    a.run(cluster(a))
    b.run(cluster(b))
    assert a.trace_hash != b.trace_hash


def test_reading_the_trace_hash_does_not_change_it():
    def run(reads_midway: bool) -> str:
        sim = Simulation(seed=6)
        main = cluster(sim)

        async def wrapped():
            await asyncio.sleep(0.7)
            if reads_midway:
                _ = sim.trace_hash
            return await main

        sim.run(wrapped())
        first = sim.trace_hash
        assert sim.trace_hash == first
        return first

    assert run(reads_midway=True) == run(reads_midway=False)


def test_delivered_bytes_are_in_the_hash_not_only_their_sizes():
    def run(payload: bytes) -> str:
        sim = Simulation(seed=1)
        sim.add_node("n1", ip="10.0.0.1", init=lambda: echo_app.serve("0.0.0.0", 7000))
        c1 = sim.add_node("c1", ip="10.0.0.2")

        async def main():
            await c1.spawn(echo_app.call("n1", 7000, [payload.decode()]))

        sim.run(main())
        return sim.trace_hash

    assert run(b"abc") == run(b"abc")
    assert run(b"abc") != run(b"abd")  # same size, other bytes


def reads_real_entropy(sim: Simulation):
    async def main():
        await asyncio.sleep(int.from_bytes(_REAL_URANDOM(8), "little") / 2**64)

    return main()


def test_reading_real_entropy_behind_the_simulators_back_is_flagged():
    with pytest.raises(detsim.NondeterminismError):
        detsim.check_determinism(reads_real_entropy, 1)


# A user's first script: `build` and the check in the same file, run as __main__. The guard at
# the top of the main block is the test's own fork-bomb bound: were a child to run the block
# again (it must not), it exits at once instead of spawning two more children.
FIRST_SCRIPT = """
import asyncio, os, sys
import detsim

def build(sim):
    node = sim.add_node("n1")

    async def main():
        return await node.spawn(asyncio.sleep(1.5, result="slept"))

    return main()

if __name__ == "__main__":
    if os.environ.get("FIRST_SCRIPT_RAN"):
        print("main block ran again in a child", file=sys.stderr)
        sys.exit(3)
    os.environ["FIRST_SCRIPT_RAN"] = "1"
    print("hash", detsim.check_determinism(build, 1, processes=True))
"""


def test_a_script_checking_itself_across_processes_runs_its_main_block_once(tmp_path):
    script = tmp_path / "first_script.py"
    script.write_text(FIRST_SCRIPT)
    env = {k: v for k, v in os.environ.items() if k not in ("FIRST_SCRIPT_RAN", CHILD_ENV)}
    proc = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.startswith("hash ")
    assert "ran again" not in proc.stderr


def test_a_determinism_child_never_spawns_children(monkeypatch):
    monkeypatch.setenv(CHILD_ENV, "1")
    with pytest.raises(detsim.SimulationError, match="child never spawns children"):
        detsim.check_determinism(cluster, 5, processes=True)
    assert detsim.check_determinism(cluster, 5)  # in-process checks are fine in a child


def failing_callbacks(sim: Simulation):
    """A node whose callbacks raise: the loop's exception handler traces asyncio's message,
    which names the callback by its memory address."""

    async def init():
        def boom() -> None:
            raise ValueError("boom")

        for _ in range(3):
            asyncio.get_running_loop().call_soon(boom)
            await asyncio.sleep(1)

    sim.add_node("n1", ip="10.0.0.1", init=init)

    async def main():
        await asyncio.sleep(5)

    return main()


def test_an_error_message_with_a_memory_address_hashes_the_same_every_run():
    # Addresses differ between two runs in one process (and between processes); the traced
    # message must not carry them (the trace hash diverged at the first such error).
    detsim.check_determinism(failing_callbacks, seed=3)


def test_task_names_count_per_run_not_per_process():
    """Two runs of one seed in one process (a campaign worker's) name their tasks alike: a
    deadlock's message names its tasks, and it is part of the run's outcome."""

    def names() -> list[str]:
        sim = Simulation(seed=1)
        node = sim.add_node("n1", ip="10.0.0.1")

        async def on_node() -> str:
            return asyncio.current_task().get_name()

        async def main():
            return [await node.spawn(on_node()) for _ in range(3)]

        return sim.run(main())

    first = names()
    asyncio.run(asyncio.sleep(0))  # tasks of the real world in between take process numbers
    assert names() == first
