"""The store under faults, checked (tigerbeetle VOPR style): a 3-node cluster whose nodes run
`serve(config)`, client slots on client hosts issuing random operations through redis-py, each
call recorded by `detsim.check.Recorder`, while a nemesis partitions the network, kills nodes
(process crash) and cuts their power (`sim.crash`: unsynced data lost or torn).

Per seed: options are drawn from the seed (and printed: the reproduce line names the seed);
a safety phase with faults; then a liveness phase with faults off (heal, restart every node):
every slot must get an `ok` again, the cluster converges, Raft's invariants hold (fed after
every Ready through the driver's observer hook, plus the full log check), every node answers
the same RAFT.DIGEST, and the recorded history is linearizable (`check_history`).

The default run takes a few seeds (well under a minute); `slow` runs many more.
"""

from __future__ import annotations

import asyncio
import os
import random
from dataclasses import dataclass

import pytest
import redis.exceptions
from kv_cluster import KVCluster

import detsim
from detsim import DiskConfig
from detsim.check import check_history
from detsim.check.history import Event, write_history
from detsim.check.recorder import HistoryLog, Recorder

FSYNC = DiskConfig(fsync_latency=0.002)
KEYS = ("x", "y", "z")
#: A client's socket timeout: longer than the server's request timeout (5 s), so a request
#: without outcome is usually answered `-TIMEOUT` by the node itself.
CLIENT_TIMEOUT_S = 8.0
#: Real seconds the checker may take; past it the verdict is None and the test fails (it cannot
#: claim linearizable). DETSIM_KV_HISTORY_DIR=dir writes each seed's history there.
CHECK_TIMEOUT_S = 120.0
#: PINGs a client slot tries (on random nodes) after an error before it records again.
PROBE_TRIES = 20


@dataclass(frozen=True)
class Options:
    clients: int
    safety_s: float
    fault_every_s: tuple[float, float]
    ops_per_client_max: int

    @classmethod
    def draw(cls, rng: random.Random) -> Options:
        return cls(
            clients=rng.randint(3, 5),
            safety_s=rng.uniform(20.0, 40.0),
            fault_every_s=(1.0, rng.uniform(3.0, 8.0)),
            ops_per_client_max=400,
        )


class Slot:
    """One client slot: a redis-py client of one node at a time (it moves on after an error)."""

    def __init__(self, c: KVCluster, log: HistoryLog, k: int, rng: random.Random) -> None:
        self.c, self.log, self.k, self.rng = c, log, k, rng
        self.nid = rng.choice(c.voters)
        self.client = c.redis(self.nid, socket_timeout=CLIENT_TIMEOUT_S)
        self.rec = Recorder(self.client, log)
        self.seen: dict[str, str] = {}
        self.counter = 0

    async def move(self) -> None:
        await self.client.aclose()
        self.nid = self.rng.choice(self.c.voters)
        self.client = self.c.redis(self.nid, socket_timeout=CLIENT_TIMEOUT_S)
        rec = Recorder(self.client, self.log)
        rec.process = self.rec.process  # the slot's process id carries on
        self.rec = rec

    async def one(self) -> Event:
        rng, key = self.rng, self.rng.choice(KEYS)
        self.counter += 1
        value = f"{self.k}.{self.counter}"
        roll = rng.random()
        if roll < 0.35:
            event = await self.rec.get(key)
            if event.type == "ok" and isinstance(event.value, str):
                self.seen[key] = event.value
        elif roll < 0.6:
            event = await self.rec.put(key, value)
        elif roll < 0.75:
            event = await self.rec.append(key, value)
        elif roll < 0.9:
            expected = self.seen.get(key, value)
            event = await self.rec.cas(key, expected, value)
        elif roll < 0.95:
            event = await self.rec.incr(key)
        else:
            event = await self.rec.delete(key)
        if event.type in ("info", "fail") and event.error != "cas-mismatch":
            await self.move()
            await self.probe()
        return event

    async def probe(self) -> None:
        """Find a node that answers PING (not recorded) before the next recorded op: an op
        sent to a dead node is an `info` (redis-py cannot tell a refused connect from a lost
        request), and every `info` write multiplies the checker's work. Bounded tries."""
        for _ in range(PROBE_TRIES):
            await asyncio.sleep(self.rng.uniform(0.1, 0.5))
            try:
                await self.client.ping()
                return
            except (redis.exceptions.RedisError, OSError):
                await self.move()

    async def run_until(self, stop: asyncio.Event, max_ops: int) -> None:
        for _ in range(max_ops):
            if stop.is_set():
                return
            await self.one()
            await asyncio.sleep(self.rng.uniform(0.0, 0.2))

    async def until_ok(self, timeout_s: float) -> None:
        """Liveness: an ok (or an observation) within `timeout_s`."""
        deadline = self.c.sim.now + timeout_s
        while True:
            event = await self.one()
            if event.type == "ok" or event.error == "cas-mismatch":
                return
            assert self.c.sim.now < deadline, f"slot {self.k}: no ok in {timeout_s} s: {event}"

    async def close(self) -> None:
        await self.client.aclose()


async def nemesis(c: KVCluster, rng: random.Random, opts: Options, stop: asyncio.Event) -> int:
    """Faults until `stop`; how many were injected: partitions (come and go), process kills,
    power losses (usually one node down at a time, sometimes two: no majority), and pauses
    (a stopped-the-world node, e.g. a GC pause, that resumes with stale beliefs)."""
    faults = 0
    down: list[str] = []
    paused: str | None = None
    while not stop.is_set():
        await asyncio.sleep(rng.uniform(*opts.fault_every_s))
        faults += 1
        roll = rng.random()
        up = [n for n in c.voters if n not in down]
        if paused is not None:
            c.sim.resume(paused)
            paused = None
        elif down and roll < 0.4:
            c.sim.restart(down.pop(0))
        elif roll < 0.3:
            nodes = list(c.voters)
            rng.shuffle(nodes)
            cut = rng.randint(1, len(nodes) - 1)
            c.sim.net.heal()
            c.sim.net.partition(nodes[:cut], nodes[cut:])
        elif roll < 0.45:
            c.sim.net.heal()
        elif roll < 0.55:
            paused = rng.choice(up)
            c.sim.pause(paused)
        elif len(down) < (2 if roll < 0.6 else 1):
            victim = rng.choice(up)
            down.append(victim)
            if roll < 0.8:
                c.sim.kill(victim)
            else:
                c.sim.crash(victim)  # power loss
    if paused is not None:
        c.sim.resume(paused)
    return faults


async def run_workload(sim: detsim.Simulation) -> tuple[list[Event], int]:
    rng = random.Random(f"kv-sim-{sim.seed}")
    opts = Options.draw(rng)
    print(f"seed {sim.seed}: {opts}")
    c = KVCluster(sim, clients=opts.clients)
    log = HistoryLog()
    await c.wait_leader()
    slots = [Slot(c, log, k, random.Random(rng.random())) for k in range(opts.clients)]
    stop = asyncio.Event()
    clients = [
        c.clients[k].spawn(slot.run_until(stop, opts.ops_per_client_max))
        for k, slot in enumerate(slots)
    ]
    faults = asyncio.ensure_future(nemesis(c, random.Random(rng.random()), opts, stop))
    await asyncio.sleep(opts.safety_s)
    stop.set()
    await asyncio.gather(*clients)
    injected = await faults
    c.raise_errors()

    # Liveness: faults off, every node up; each slot gets an ok again.
    sim.net.heal()
    for nid in c.voters:
        if not sim.nodes[nid].alive:
            sim.restart(nid)
    await c.wait_leader(timeout_s=30.0)
    await asyncio.gather(*(c.clients[k].spawn(slot.until_ok(60.0)) for k, slot in enumerate(slots)))
    for k, slot in enumerate(slots):
        await c.clients[k].spawn(slot.close())
    await c.finish()
    return list(log.events), injected


async def check_run(sim: detsim.Simulation) -> None:
    events, faults = await run_workload(sim)
    dump = os.environ.get("DETSIM_KV_HISTORY_DIR")
    if dump:  # for `detsim check` by hand
        write_history(events, os.path.join(dump, f"kv-sim-seed{sim.seed}.jsonl"))
    result = check_history(events, model="kv", timeout=CHECK_TIMEOUT_S)
    counts = {t: sum(1 for e in events if e.type == t) for t in ("ok", "fail", "info")}
    oks = counts["ok"]
    print(f"seed {sim.seed}: {len(events)} events {counts}, {faults} faults: {result}")
    assert oks > 0
    assert result.linearizable is True, result


@pytest.mark.detsim(seeds=3, disk=FSYNC)
async def test_linearizable_under_faults(sim: detsim.Simulation) -> None:
    await check_run(sim)


@pytest.mark.slow
@pytest.mark.timeout(3600)  # ~5 s a seed on a busy machine; the default 300 s is for one test
@pytest.mark.detsim(seeds=100, disk=FSYNC)
async def test_linearizable_under_faults_many_seeds(sim: detsim.Simulation) -> None:
    await check_run(sim)
