"""The simulator's loop against asyncio's, side by side, on the same code.

    .venv/bin/python benchmarks/bench_loop.py [--runs 5] [--cpu]

Workloads (each the same coroutine under `asyncio.run` and `Simulation.run`):
- call_soon chain: 200,000 callbacks, each scheduling the next.
- sleep(0) switches: 1,000 tasks x 200 `await asyncio.sleep(0)`.
- TCP ping-pong: 5,000 request/response round trips over streams (real loopback vs a
  simulated link between two nodes).
- idle hour: one task sleeping 1 s 3,600 times (simulator only: wall time for 1 h virtual).
Prints medians (wall seconds, or with --cpu this process's CPU seconds, which move less when
other processes share the machine) and the ratio asyncio/simulator (>= 1.0: simulator as
fast). The two loops' runs alternate, so both see the same load.
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import statistics
import time

from detsim import NetConfig, Simulation

CHAIN = 200_000
TASKS, SWITCHES = 1_000, 200
PINGS = 5_000
PORT = 47_123


async def call_soon_chain() -> int:
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    count = 0

    def step() -> None:
        nonlocal count
        count += 1
        if count < CHAIN:
            loop.call_soon(step)
        else:
            done.set_result(count)

    loop.call_soon(step)
    return await done


async def sleep0_switches() -> int:
    async def worker() -> None:
        for _ in range(SWITCHES):
            await asyncio.sleep(0)

    await asyncio.gather(*(worker() for _ in range(TASKS)))
    return TASKS * SWITCHES


async def _pong(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(64):
        writer.write(data)
    writer.close()


async def _ping(host: str) -> int:
    reader, writer = await asyncio.open_connection(host, PORT)
    for _ in range(PINGS):
        writer.write(b"ping")
        await reader.readexactly(4)
    writer.close()
    return PINGS


async def ping_pong_real() -> int:
    server = await asyncio.start_server(_pong, "127.0.0.1", PORT)
    async with server:
        count = await _ping("127.0.0.1")
        await asyncio.sleep(0.01)  # let the handler see EOF and finish before the loop closes
        return count


def ping_pong_sim() -> int:
    sim = Simulation(seed=1, net=NetConfig(latency=(0.0001, 0.0002)))

    async def serve() -> None:
        server = await asyncio.start_server(_pong, "0.0.0.0", PORT)
        await server.serve_forever()

    sim.add_node("server", ip="10.0.0.1", init=serve)
    client = sim.add_node("client", ip="10.0.0.2")

    async def main() -> int:
        return await client.spawn(_ping("server"))

    return sim.run(main())


async def idle_hour() -> None:
    for _ in range(3600):
        await asyncio.sleep(1)


def timed_pair(std, sim, runs: int, clock) -> tuple[float, float]:
    """Medians of `runs` runs of each, alternating (clock: read outside any simulation)."""
    samples: tuple[list[float], list[float]] = ([], [])
    for _ in range(runs):
        for fn, out in ((std, samples[0]), (sim, samples[1])):
            t0 = clock()
            fn()
            out.append(clock() - t0)
    return statistics.median(samples[0]), statistics.median(samples[1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--cpu", action="store_true", help="CPU seconds instead of wall")
    args = parser.parse_args()
    runs = args.runs
    clock = time.process_time if args.cpu else time.perf_counter
    rows = [
        (
            "call_soon chain (200k)",
            lambda: asyncio.run(call_soon_chain()),
            lambda: Simulation(seed=1).run(call_soon_chain()),
        ),
        (
            "sleep(0) 1k tasks x 200",
            lambda: asyncio.run(sleep0_switches()),
            lambda: Simulation(seed=1).run(sleep0_switches()),
        ),
        ("TCP ping-pong (5k round trips)", lambda: asyncio.run(ping_pong_real()), ping_pong_sim),
    ]
    what = "CPU" if args.cpu else "wall"
    print(
        f"Python {platform.python_version()} on {platform.machine()}, median of {runs} runs, "
        f"{what} seconds"
    )
    print(f"{'workload':34} {'asyncio s':>10} {'detsim s':>10} {'ratio':>7}")
    for name, std, sim in rows:
        a, b = timed_pair(std, sim, runs, clock)
        print(f"{name:34} {a:10.3f} {b:10.3f} {a / b:7.2f}")
    _, idle = timed_pair(lambda: None, lambda: Simulation(seed=1).run(idle_hour()), runs, clock)
    print(f"{'idle hour (3,600 x sleep(1))':34} {'-':>10} {idle:10.3f}")


if __name__ == "__main__":
    main()
