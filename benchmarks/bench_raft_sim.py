"""Raft in the simulator: a 5-node cluster under steady proposals, and where the time goes.

    .venv/bin/python benchmarks/bench_raft_sim.py [--runs 5] [--virtual-seconds 20]
        [--concurrency 1,16] [--fsync-ms 2] [--top 25]

Each run is one `detsim.Simulation` (seed = run number) with five hosts, each a
`detsim.raft.RaftNode` with a `MemoryKV` over the real transport (with a secret) and the real
storage on the host's simulated disk (`fsync_latency` = --fsync-ms). Once a leader is elected,
`concurrency` tasks on the leader's host propose 64-byte `set`s one after the other for
--virtual-seconds of virtual time (the driver batches whatever arrives during a Ready into the
next one). Measured over the load window: entries committed (acknowledged) per wall second
and per CPU second of this process (steadier on a shared machine), per virtual second, and
virtual seconds per wall and per CPU second, and Raft messages sent per committed entry.
Medians over the runs.

Then one more run under cProfile, summarised by layer (simulator kernel and network, Raft
core, driver, transport, codec, storage and disk, asyncio) by own time, and its top functions.
No invariant checker is attached: this measures the system, not the test harness.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import logging
import platform
import pstats
import statistics
from dataclasses import dataclass
from time import perf_counter as real_perf_counter  # bound before a simulation patches `time`
from time import process_time as real_process_time

from detsim import DiskConfig, Simulation
from detsim.raft import MemoryKV, RaftError, RaftNode, RaftNodeConfig, encode_command

NODES = 5
PORT = 7000
VALUE = b"x" * 64
KEYS = 1_000

#: Module path fragments -> the layer they are counted in (first match wins).
LAYERS = [
    ("detsim/raft/core/", "raft core"),
    ("detsim/raft/driver", "raft driver"),
    ("detsim/raft/statemachine", "raft driver"),
    ("detsim/raft/transport", "raft transport"),
    ("detsim/raft/codec", "raft codec"),
    ("msgpack", "raft codec"),
    ("detsim/raft/storage", "raft storage"),
    ("detsim/fs/", "raft storage"),
    ("detsim/sim/disk", "simulated disk"),
    ("detsim/sim/net/", "simulated network"),
    ("detsim/sim/", "simulator kernel"),
    ("asyncio/", "asyncio"),
]


@dataclass
class Result:
    committed: int
    wall_s: float
    virtual_s: float
    cpu_s: float  # this process's CPU time: steadier than wall time on a shared machine
    messages: int  # Raft messages sent by all nodes in the window

    @property
    def per_wall_s(self) -> float:
        return self.committed / self.wall_s

    @property
    def virtual_per_wall(self) -> float:
        return self.virtual_s / self.wall_s


def build(sim: Simulation) -> dict[str, RaftNode]:
    ids = [f"n{k + 1}" for k in range(NODES)]
    addrs = {nid: (f"10.0.2.{k + 1}", PORT) for k, nid in enumerate(ids)}
    rafts: dict[str, RaftNode] = {}
    for nid in ids:

        async def init(nid: str = nid) -> None:
            config = RaftNodeConfig(
                node_id=nid,
                raft_addr=("0.0.0.0", PORT),
                peers={p: a for p, a in addrs.items() if p != nid},
                data_dir="/data",
                secret=b"bench",
            )
            rafts[nid] = RaftNode(config, MemoryKV())
            await rafts[nid].run()

        sim.add_node(nid, ip=addrs[nid][0], init=init)
    return rafts


async def load(node: RaftNode, concurrency: int, seconds: float) -> int:
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    done = 0

    async def client(c: int) -> None:
        nonlocal done
        k = c
        while loop.time() < end:
            key = b"k%d" % (k % KEYS)
            try:
                await node.propose(encode_command("set", key, VALUE))
                done += 1
            except RaftError:
                await asyncio.sleep(0.01)
            k += concurrency

    await asyncio.gather(*(client(c) for c in range(concurrency)))
    return done


def run_once(seed: int, concurrency: int, seconds: float, fsync_s: float) -> Result:
    sim = Simulation(seed=seed, disk=DiskConfig(fsync_latency=fsync_s))
    rafts = build(sim)

    async def main() -> Result:
        while True:
            leaders = [r for r in rafts.values() if r.running and r.core.role_name == "leader"]
            if leaders:
                break
            await asyncio.sleep(0.1)
        leader = leaders[0]
        host = sim.node(leader.id)
        start_v, start_w, start_c = sim.now, real_perf_counter(), real_process_time()
        sent = sum(r.transport.stats.messages_sent for r in rafts.values())
        committed = await host.spawn(load(leader, concurrency, seconds))
        wall_s, cpu_s = real_perf_counter() - start_w, real_process_time() - start_c
        sent = sum(r.transport.stats.messages_sent for r in rafts.values()) - sent
        return Result(committed, wall_s, sim.now - start_v, cpu_s, sent)

    return sim.run(main())


def layer_of(filename: str) -> str:
    for fragment, layer in LAYERS:
        if fragment in filename:
            return layer
    return "other"


def profile_summary(stats: pstats.Stats, top: int) -> str:
    by_layer: dict[str, float] = {}
    total = 0.0
    raw = stats.stats  # type: ignore[attr-defined]
    for (filename, _, _), (_, _, tottime, _, _) in raw.items():
        layer = layer_of(filename)
        by_layer[layer] = by_layer.get(layer, 0.0) + tottime
        total += tottime
    lines = ["| layer | own time s | share |", "|---|---|---|"]
    for layer, seconds in sorted(by_layer.items(), key=lambda kv: -kv[1]):
        lines.append(f"| {layer} | {seconds:.2f} | {100 * seconds / total:.0f}% |")
    out = io.StringIO()
    stats.stream = out  # type: ignore[attr-defined]
    stats.sort_stats("tottime").print_stats(top)
    return "\n".join(lines) + "\n\n" + out.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--virtual-seconds", type=float, default=20.0)
    parser.add_argument("--concurrency", default="1,16")
    parser.add_argument("--fsync-ms", type=float, default=2.0)
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    logging.disable(logging.WARNING)  # the transport's connection notices
    fsync_s = args.fsync_ms / 1000
    print(f"Python {platform.python_version()}, {NODES} nodes, ", end="")
    print(f"{args.virtual_seconds} virtual s of load, fsync {args.fsync_ms} ms, {args.runs} runs")
    print(
        "| concurrency | committed / wall s | committed / CPU s | committed / virtual s "
        "| virtual s / wall s | virtual s / CPU s | messages / entry |"
    )
    print("|---|---|---|---|---|---|---|")
    for concurrency in [int(c) for c in args.concurrency.split(",")]:
        results = [
            run_once(seed, concurrency, args.virtual_seconds, fsync_s) for seed in range(args.runs)
        ]
        per_wall = statistics.median(r.per_wall_s for r in results)
        per_virtual = statistics.median(r.committed / r.virtual_s for r in results)
        per_cpu = statistics.median(r.committed / r.cpu_s for r in results)
        speed = statistics.median(r.virtual_per_wall for r in results)
        speed_cpu = statistics.median(r.virtual_s / r.cpu_s for r in results)
        per_entry = statistics.median(r.messages / max(1, r.committed) for r in results)
        print(
            f"| {concurrency} | {per_wall:,.0f} | {per_cpu:,.0f} | {per_virtual:,.0f} "
            f"| {speed:.2f} | {speed_cpu:.2f} | {per_entry:.1f} |"
        )
    concurrency = max(int(c) for c in args.concurrency.split(","))
    profiler = cProfile.Profile()
    profiler.enable()
    run_once(args.runs, concurrency, args.virtual_seconds, fsync_s)
    profiler.disable()
    print(f"\nProfile of one run at concurrency {concurrency} (own time by layer, then top):\n")
    print(profile_summary(pstats.Stats(profiler), args.top))


if __name__ == "__main__":
    main()
