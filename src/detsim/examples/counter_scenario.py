"""The replicated counter under faults: workload, nemesis and checker, VOPR style.

Owned here: the `counter` and `counter_unsafe` scenarios (registered in detsim.campaign).

One run, all of it drawn from the seed:
1. Options (clients, phase length, which faults, fault rate, latency, think time) are drawn
   from `random.Random("counter:<seed>:options")` and recorded (trace event `options`, and
   the verdict, which the campaign prints and stores in artifacts).
2. Safety phase: 3 replicas (n1..n3, port 7000) and 1-3 clients (c1..c3). Each client
   increments with fresh ids (retrying an id on another replica when the outcome is unknown)
   and now and then reads the value. The nemesis injects faults from its own stream.
3. Liveness phase, faults off: heal, resume, restart, reset latency; every replica must recover
   and each client must get `LIVENESS_INCREMENTS` increments acknowledged within deadlines.
4. Check: a quorum read (MEMBERS) at every replica must hold every acknowledged id (no lost
   acknowledged increment) and only attempted ids (nothing invented); every read during the
   run must lie between the number acknowledged before it began and the number attempted.

The nemesis's fault model: partitions (one replica cut from the others; clients reach
everyone), one-way clogs between replicas, pauses, latency changes, and process kills or
crashes of one replica at a time, only when every replica is up and recovered. The last rule is
the app's stated assumption (f = 1 of 3 for in-memory state; see detsim.examples.counter):
the safe counter must pass every seed under it, and the unsafe one fails on some.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
from collections.abc import Callable, Coroutine
from typing import Any

from detsim.campaign.scenario import Params, Scenario, Verdict
from detsim.examples.counter import CLIENT_TIMEOUT_S, Replica, call
from detsim.sim import trace
from detsim.sim.config import NetConfig
from detsim.sim.world import Simulation

PORT = 7000
REPLICAS = ("n1", "n2", "n3")
CLIENTS = ("c1", "c2", "c3")
FAULTS = ("partition", "clog", "pause", "latency", "kill", "crash")
LATENCY_PROFILES_S = ((0.001, 0.010), (0.005, 0.050), (0.020, 0.300))

MAX_OPS_PER_CLIENT = 5_000
MAX_ATTEMPTS_PER_OP = 3
READ_EVERY_OPS = 8  # a client reads the value after this many increments
LIVENESS_INCREMENTS = 5
LIVENESS_RECOVERY_S = 60.0
LIVENESS_OP_DEADLINE_S = 40.0
POLL_S = 0.1
MAX_FAILURE_LINES = 10
EXTRA_TIME_LIMIT_S = 300.0  # the liveness phase's worst case on top of the safety phase
# What a verdict says it checked (the campaign prints it under its table): step 4 and step 3.
CHECKS = (
    "no acknowledged increment lost",
    "no id invented",
    "reads between acknowledged and attempted",
    "liveness with faults off",
)


# --- options ------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class Options:
    clients: int
    safety_s: float
    fault_interval_s: tuple[float, float]  # between two nemesis actions
    faults: tuple[str, ...]
    latency_s: tuple[float, float]
    think_s: float  # a client's pause between operations
    down_s: tuple[float, float]  # how long a killed replica stays down, a paused one paused

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def draw_options(seed: int, params: Params) -> Options:
    """The run's options, from the seed; `params` may pin any of them (tests shorten runs)."""
    rng = random.Random(f"counter:{seed}:options")
    faults = tuple(f for f in FAULTS if rng.random() < 0.7) or (rng.choice(FAULTS),)
    lo = round(rng.uniform(0.05, 0.5), 3)
    drawn = Options(
        clients=rng.randint(1, len(CLIENTS)),
        safety_s=float(rng.choice((10, 20, 30))),
        fault_interval_s=(lo, round(lo * rng.uniform(2, 6), 3)),
        faults=faults,
        latency_s=rng.choice(LATENCY_PROFILES_S),
        think_s=round(rng.uniform(0.0, 0.05), 4),
        down_s=(0.2, round(rng.uniform(0.5, 5.0), 3)),
    )
    overrides = {k: _as_field(k, v) for k, v in params.items() if k != "safe"}
    unknown = set(overrides) - set(drawn.as_dict())
    if unknown:
        raise ValueError(f"unknown counter params {sorted(unknown)}; known: {drawn.as_dict()}")
    return dataclasses.replace(drawn, **overrides)


def _as_field(key: str, value: Any) -> Any:
    """JSON gives lists where Options keeps tuples (params come back from artifacts)."""
    return tuple(value) if isinstance(value, list) else value


def simulation_kwargs(seed: int, params: Params) -> dict[str, Any]:
    options = draw_options(seed, params)
    return {
        "net": NetConfig(latency=options.latency_s),
        "time_limit": options.safety_s + EXTRA_TIME_LIMIT_S,
    }


# --- the cluster and what the clients saw --------------------------------------------------


class Cluster:
    """The replicas' current incarnations, as the nemesis and the checker see them."""

    def __init__(self, sim: Simulation, safe: bool) -> None:
        self.sim = sim
        self.safe = safe
        self.replicas: dict[str, Replica] = {}
        self.boots = dict.fromkeys(REPLICAS, 0)
        self.ips = {name: f"10.0.0.{i + 1}" for i, name in enumerate(REPLICAS)}

    def init_for(self, name: str) -> Callable[[], Coroutine[Any, Any, None]]:
        peers = [(self.ips[p], PORT) for p in REPLICAS if p != name]

        async def init() -> None:
            self.boots[name] += 1
            # The first boot is the initial (empty) cluster; later boots must recover.
            replica = Replica(name, peers, safe=self.safe, bootstrap=self.boots[name] == 1)
            self.replicas[name] = replica
            await replica.start("0.0.0.0", PORT)
            await replica.serve_forever()

        return init

    def name_of(self, ip: str) -> str:
        return next((name for name, addr in self.ips.items() if addr == ip), ip)

    def healthy(self) -> bool:
        """Every replica up and recovered: the only time the nemesis may kill one."""
        return all(
            self.sim.node(name).alive and name in self.replicas and self.replicas[name].recovered
            for name in REPLICAS
        )


@dataclasses.dataclass(slots=True)
class History:
    attempted: dict[str, float] = dataclasses.field(default_factory=dict)  # id -> invoke time
    acked: dict[str, tuple[float, str]] = dataclasses.field(default_factory=dict)  # -> (t, by)
    reads: int = 0
    violations: list[str] = dataclasses.field(default_factory=list)

    def check_read(self, value: int, acked_before: int, replica: str, now: float) -> None:
        self.reads += 1
        if not acked_before <= value <= len(self.attempted):
            self.violations.append(
                f"GET at {replica} returned {value} at t={now:.3f}s: {acked_before} increments "
                f"were acknowledged before it began, {len(self.attempted)} attempted in all"
            )
            trace.event("violation", what="read", value=value, acked_before=acked_before)


# --- workload -----------------------------------------------------------------------------


class Client:
    """One client host's loop: increments with retries, and reads now and then."""

    def __init__(self, name: str, cluster: Cluster, history: History, options: Options) -> None:
        self.name = name
        self.cluster = cluster
        self.history = history
        self.options = options
        self.rng = random.Random(f"counter:{cluster.sim.seed}:{name}")
        self.stopping = False
        self.seq = 0

    def _target(self) -> str:
        return self.cluster.ips[self.rng.choice(REPLICAS)]

    async def run(self) -> None:
        for _ in range(MAX_OPS_PER_CLIENT):
            if self.stopping:
                return
            await self.increment(MAX_ATTEMPTS_PER_OP)
            if self.seq % READ_EVERY_OPS == 0:
                await self.read()
            await asyncio.sleep(self.options.think_s)

    async def increment(self, attempts: int) -> bool:
        self.seq += 1
        op = f"{self.name}-{self.seq}"
        self.history.attempted[op] = self.cluster.sim.now
        for _ in range(attempts):
            target = self._target()
            if await self._request(target, f"INCR {op}") == "OK":
                self.history.acked[op] = (self.cluster.sim.now, target)
                return True
        return False

    async def read(self) -> None:
        target = self._target()
        acked_before = len(self.history.acked)
        reply = await self._request(target, "GET")
        if reply is not None and reply.startswith("VALUE "):
            value = int(reply.removeprefix("VALUE "))
            replica = self.cluster.name_of(target)
            self.history.check_read(value, acked_before, replica, self.cluster.sim.now)

    @staticmethod
    async def _request(ip: str, line: str) -> str | None:
        try:
            return await call((ip, PORT), line, CLIENT_TIMEOUT_S)
        except (OSError, TimeoutError):
            return None


# --- nemesis ------------------------------------------------------------------------------


class Nemesis:
    """Faults from its own seeded stream; undoes each after a drawn delay; `quiesce` ends all."""

    def __init__(self, sim: Simulation, cluster: Cluster, options: Options) -> None:
        self.sim = sim
        self.cluster = cluster
        self.options = options
        self.rng = random.Random(f"counter:{sim.seed}:nemesis")
        self.down_until: dict[str, float] = {}
        self.paused_until: dict[str, float] = {}
        self.actions = 0

    async def run(self, until_s: float) -> None:
        while self.sim.now < until_s:
            await asyncio.sleep(self.rng.uniform(*self.options.fault_interval_s))
            self._undo_due()
            if self.sim.now < until_s:
                self._act(self.rng.choice((*self.options.faults, "heal")))

    def _undo_due(self) -> None:
        for name, t in list(self.down_until.items()):
            if t <= self.sim.now:
                del self.down_until[name]
                self._restart(name)
        for name, t in list(self.paused_until.items()):
            if t <= self.sim.now:
                del self.paused_until[name]
                self.sim.resume(name)

    def _act(self, fault: str) -> None:
        rng, net = self.rng, self.sim.net
        victim = rng.choice(REPLICAS)
        self.actions += 1
        if fault == "heal":
            net.heal()
        elif fault == "partition":
            net.partition([victim], [r for r in REPLICAS if r != victim])
        elif fault == "clog":
            net.clog(victim, rng.choice([r for r in REPLICAS if r != victim]))
        elif fault == "latency":
            net.set_latency(*rng.choice(LATENCY_PROFILES_S))
        elif fault == "pause" and victim not in self.paused_until and victim not in self.down_until:
            self.sim.pause(victim)
            self.paused_until[victim] = self.sim.now + rng.uniform(*self.options.down_s)
        elif fault in ("kill", "crash") and self.cluster.healthy():
            (self.sim.kill if fault == "kill" else self.sim.crash)(victim)
            self.cluster.replicas.pop(victim, None)
            self.down_until[victim] = self.sim.now + rng.uniform(*self.options.down_s)

    def _restart(self, name: str) -> None:
        self.cluster.replicas.pop(name, None)  # until its init runs, it is not recovered
        self.sim.restart(name)

    def quiesce(self) -> None:
        """Faults off: the liveness phase begins."""
        self.sim.net.heal()
        self.sim.net.set_latency(*self.options.latency_s)
        for name in sorted(self.paused_until):
            self.sim.resume(name)
        for name in sorted(self.down_until):
            self._restart(name)
        self.paused_until.clear()
        self.down_until.clear()


# --- the run ------------------------------------------------------------------------------


def build(sim: Simulation, params: Params, safe: bool) -> Coroutine[Any, Any, Verdict]:
    """Add the nodes and return the main coroutine (see the module header)."""
    options = draw_options(sim.seed, params)
    cluster = Cluster(sim, safe)
    for name in REPLICAS:
        sim.add_node(name, ip=cluster.ips[name], init=cluster.init_for(name))
    client_nodes = [sim.add_node(c, ip=f"10.0.1.{i + 1}") for i, c in enumerate(CLIENTS)]
    history = History()
    clients = [Client(c, cluster, history, options) for c in CLIENTS[: options.clients]]
    return _main(sim, cluster, history, clients, client_nodes, options)


def build_safe(sim: Simulation, params: Params) -> Coroutine[Any, Any, Verdict]:
    return build(sim, params, safe=True)


def build_unsafe(sim: Simulation, params: Params) -> Coroutine[Any, Any, Verdict]:
    return build(sim, params, safe=False)


async def _main(
    sim: Simulation,
    cluster: Cluster,
    history: History,
    clients: list[Client],
    client_nodes: list[Any],
    options: Options,
) -> Verdict:
    trace.event("options", **options.as_dict())
    nemesis = Nemesis(sim, cluster, options)
    tasks = [node.spawn(c.run()) for node, c in zip(client_nodes, clients, strict=False)]
    trace.event("phase", name="safety")
    await nemesis.run(until_s=sim.now + options.safety_s)
    trace.event("phase", name="liveness")
    nemesis.quiesce()
    for client in clients:
        client.stopping = True
    await asyncio.gather(*tasks)
    stuck = await _liveness(sim, cluster, clients, client_nodes)
    lost = [] if stuck else await _final_check(cluster, history, client_nodes[0])
    failures = lost + stuck + history.violations  # lost acknowledged increments first
    operations = len(history.attempted) + history.reads
    verdict_options = {
        **options.as_dict(),
        "safe": cluster.safe,
        "nemesis_actions": nemesis.actions,
    }
    if failures:
        summary = f"{len(failures)} violation(s); first: {failures[0]}"
        detail = "\n".join(failures[:MAX_FAILURE_LINES])
        return Verdict(False, operations, f"{summary}\n{detail}", verdict_options, CHECKS)
    return Verdict(True, operations, None, verdict_options, CHECKS)


async def _liveness(
    sim: Simulation, cluster: Cluster, clients: list[Client], client_nodes: list[Any]
) -> list[str]:
    deadline = sim.now + LIVENESS_RECOVERY_S
    while not cluster.healthy():
        if sim.now >= deadline:
            stuck = [
                n for n in REPLICAS if not (n in cluster.replicas and cluster.replicas[n].recovered)
            ]
            return [f"liveness: {stuck} not recovered {LIVENESS_RECOVERY_S}s after faults stopped"]
        await asyncio.sleep(POLL_S)
    for node, client in zip(client_nodes, clients, strict=False):
        for _ in range(LIVENESS_INCREMENTS):
            attempts = int(LIVENESS_OP_DEADLINE_S / CLIENT_TIMEOUT_S)
            if not await node.spawn(client.increment(attempts)):
                return [f"liveness: {client.name} got no OK for an increment with faults off"]
    return []


async def _final_check(cluster: Cluster, history: History, reader: Any) -> list[str]:
    """A quorum read at every replica: every acknowledged id in it, every id in it attempted."""
    failures: list[str] = []
    for name in REPLICAS:
        reply = await reader.spawn(_read_members(cluster.ips[name]))
        if reply is None or not reply.startswith("MEMBERS"):
            failures.append(f"final MEMBERS at {name}: no answer with faults off ({reply!r})")
            continue
        members = set(reply.split()[1:])
        history.reads += 1
        lost = [op for op in history.acked if op not in members]
        invented = sorted(members - history.attempted.keys())
        if lost:
            failures.append(
                f"{len(lost)} acknowledged increment(s) lost: final value at {name} is "
                f"{len(members)} with {len(history.acked)} acknowledged; lost "
                + ", ".join(_describe_ack(cluster, history, op) for op in lost[:MAX_FAILURE_LINES])
            )
        if invented:
            failures.append(f"{name} holds ids never attempted: {invented[:MAX_FAILURE_LINES]}")
    if failures:
        trace.event("violation", what="final", count=len(failures))
    return failures


async def _read_members(ip: str) -> str | None:
    """MEMBERS with retries: faults are off, so an answer must come within the deadline."""
    reply = None
    for _ in range(int(LIVENESS_OP_DEADLINE_S / CLIENT_TIMEOUT_S)):
        reply = await Client._request(ip, "MEMBERS")
        if reply is not None and reply.startswith("MEMBERS"):
            return reply
        await asyncio.sleep(POLL_S)
    return reply


def _describe_ack(cluster: Cluster, history: History, op: str) -> str:
    t, ip = history.acked[op]
    return f"{op} (OK from {cluster.name_of(ip)} at t={t:.3f}s)"


SCENARIOS = (
    Scenario(
        name="counter",
        description="replicated counter (3 replicas, quorum writes) under partitions, clogs, "
        "pauses, kills: no acknowledged increment lost",
        build=build_safe,
        simulation=simulation_kwargs,
    ),
    Scenario(
        name="counter_unsafe",
        description="the counter with a planted bug (INCR acknowledged before it is replicated): "
        "expected to fail",
        build=build_unsafe,
        expect_pass=False,
        simulation=simulation_kwargs,
    ),
)
