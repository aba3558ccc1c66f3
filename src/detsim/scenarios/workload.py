"""Workloads: redis-py clients through `detsim.check.Recorder`, and the shapes they take.

Owned here: `WorkloadShape` (a named table row: how many client slots, how many keys, the
pipeline depth, the value sizes), `Slot` (one client slot: a redis-py client of one node at a
time, each call recorded), and `final_reads` (the recorded reads of every key at every member
after the liveness phase, which the durability and linearizability checks read).

Keys. `r<i>` are registers that get every operation (get, put, append, cas, incr, delete);
`a<i>` are append-only logs: each append carries a token unique to the run (`<slot>.<seq>;`),
so the final value of an `a` key says exactly which appends took effect, and how many times
(the durability check, checks.py). Values of puts are `<slot>.<seq>` padded to the drawn size.

Slots. A slot runs one operation at a time (pipeline depth 1) or a batch of `pipeline` ops in
one redis-py pipeline (one round trip; each op of the batch is its own history process, so
the batch's ops are concurrent in the history, as they are on the wire). After an error
without outcome, or a refusal, the slot moves to another node (a client's failover) and backs
off a little; an `info` retires the process id (the Recorder's rule, applied to batches too).

Bounds: MAX_OPS_PER_SLOT operations a slot per phase, MAX_PIPELINE ops a batch, MAX_SLOTS.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
from typing import Any, Final

import redis.asyncio
import redis.exceptions

from detsim.check.history import CAS_MISMATCH, Event, Value
from detsim.check.recorder import UNKNOWN_OUTCOME, HistoryLog, Recorder
from detsim.kv.limits import MAX_WRITE_PAYLOAD_BYTES
from detsim.raft.core.config import RaftConfig
from detsim.scenarios.cluster import StoreCluster

MAX_SLOTS: Final = 64
MAX_PIPELINE: Final = 16
MAX_OPS_PER_SLOT: Final = 5_000
#: A client's socket timeout: above the server's request timeout (5 s), so a request without
#: outcome is usually answered `-TIMEOUT` by the node itself.
CLIENT_TIMEOUT_S: Final = 8.0
CONNECT_TIMEOUT_S: Final = 2.0
BACKOFF_S: Final = (0.05, 0.5)  # after an error, before the next op (a client's failover)
#: A big value: close below the largest write the store says it accepts
#: (MAX_WRITE_PAYLOAD_BYTES, about 10 MiB)...
BIG_VALUE_BYTES: Final = MAX_WRITE_PAYLOAD_BYTES - 1024
#: ... or close below the Raft core's entry bound (about 1 MiB today): the store refuses a
#: write between the two with -NOLEADER (found by calm_big seed 0, reported), so half of the
#: big values are drawn under this one, to get big values through Raft and SQLite at all.
RAFT_ENTRY_BYTES: Final = min(
    BIG_VALUE_BYTES, getattr(RaftConfig(node_id="n"), "max_entry_bytes", BIG_VALUE_BYTES) - 1024
)
BIG_VALUE_P: Final = 0.4  # the share of puts that are big, in a big-values shape


@dataclasses.dataclass(frozen=True, slots=True)
class WorkloadShape:
    """A row of the workload table (catalogue.py): ranges the seed draws from."""

    name: str
    description: str
    slots: tuple[int, int]  # client slots, drawn in this range
    registers: int  # keys r0.. (every op)
    logs: int  # keys a0.. (appends only)
    pipeline: int = 1  # ops per batch; 1: one op at a time
    value_bytes: tuple[int, int] = (1, 32)  # a put's value size, drawn per op
    big_values: bool = False  # now and then a put near the size limit
    think_s: tuple[float, float] = (0.0, 0.2)  # a slot's pause between ops
    #: APPEND on the registers too. Off for shapes with many ops in flight: every append with
    #: an unknown outcome doubles the register states the linearizability search must carry
    #: (power_loss_all_pipelined seeds 4 and 6 ran out of its time with them); appends still
    #: go to the append-only keys, which have an exact check.
    register_appends: bool = True

    def __post_init__(self) -> None:
        assert 1 <= self.slots[0] <= self.slots[1] <= MAX_SLOTS, self.slots
        assert 1 <= self.pipeline <= MAX_PIPELINE, self.pipeline
        assert self.registers + self.logs >= 1
        assert 1 <= self.value_bytes[0] <= self.value_bytes[1] <= BIG_VALUE_BYTES

    def key_names(self) -> list[str]:
        return [f"r{i}" for i in range(self.registers)] + [f"a{i}" for i in range(self.logs)]


@dataclasses.dataclass(slots=True)
class Appends:
    """Tokens of appends to the `a` keys: attempted (invoked) and acknowledged (ok)."""

    attempted: dict[str, str] = dataclasses.field(default_factory=dict)  # token -> key
    acked: dict[str, str] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True, slots=True)
class _Op:
    f: str
    key: str
    value: Value  # put/append: the value; cas: [expected, new]; else None


class Slot:
    """One client slot (see the module header). `host`: the client host it runs on."""

    def __init__(
        self,
        cluster: StoreCluster,
        shape: WorkloadShape,
        log: HistoryLog,
        appends: Appends,
        index: int,
        rng: random.Random,
    ) -> None:
        self.cluster, self.shape, self.log, self.appends = cluster, shape, log, appends
        self.index, self.rng = index, rng
        self.host = index % len(cluster.clients)
        self.keys = shape.key_names()
        self.seq = 0
        self.seen: dict[str, str] = {}  # last value read per register: cas's expected value
        self.nid = rng.choice(cluster.initial_voters)
        self.client: redis.asyncio.Redis | None = None
        self.recorders: list[Recorder] = []
        self.operations = 0

    # --- connection ----------------------------------------------------------------------------

    def _connect(self) -> redis.asyncio.Redis:
        if self.client is None:
            self.client = self.cluster.redis(
                self.nid, socket_timeout=CLIENT_TIMEOUT_S, socket_connect_timeout=CONNECT_TIMEOUT_S
            )
            processes = [r.process for r in self.recorders]
            self.recorders = [Recorder(self.client, self.log) for _ in range(self.shape.pipeline)]
            for recorder, process in zip(self.recorders, processes, strict=False):
                recorder.process = process  # a process id carries on across a move
        return self.client

    async def _move(self) -> None:
        """Fail over to another node (the members the cluster knows of)."""
        await self.close()
        voters, learners = self.cluster.members()
        self.nid = self.rng.choice(voters + learners)
        await asyncio.sleep(self.rng.uniform(*BACKOFF_S))

    async def close(self) -> None:
        if self.client is not None:
            client, self.client = self.client, None
            await client.aclose()

    # --- operations ----------------------------------------------------------------------------

    def _draw(self) -> _Op:
        rng = self.rng
        key = rng.choice(self.keys)
        self.seq += 1
        token = f"{self.index}.{self.seq}"
        if key.startswith("a"):
            return _Op("append", key, f"{token};")
        roll = rng.random()
        if roll < 0.35:
            return _Op("get", key, None)
        if roll < 0.6:
            return _Op("put", key, self._value(token))
        if roll < 0.7 and self.shape.register_appends:
            return _Op("append", key, f"{token};")
        if roll < 0.85:
            return _Op("cas", key, [self.seen.get(key, token), self._value(token)])
        if roll < 0.95:
            return _Op("incr", key, None)
        return _Op("delete", key, None)

    def _value(self, token: str) -> str:
        if self.shape.big_values and self.rng.random() < BIG_VALUE_P:
            top = self.rng.choice((RAFT_ENTRY_BYTES, BIG_VALUE_BYTES))
            size = self.rng.randint(top // 2, top)
        else:
            size = self.rng.randint(*self.shape.value_bytes)
        return token if size <= len(token) else token + "." * (size - len(token))

    async def one_batch(self) -> list[Event]:
        """Draw and run one op (or one pipeline batch); move on after an error."""
        client = self._connect()
        ops = [self._draw() for _ in range(self.shape.pipeline)]
        for op in ops:
            if op.f == "append" and op.key.startswith("a"):
                self.appends.attempted[str(op.value)] = op.key
        if len(ops) == 1:
            events = [await self._one(self.recorders[0], ops[0])]
        else:
            events = await self._pipelined(client, ops)
        self.operations += len(events)
        for op, event in zip(ops, events, strict=True):
            self._learn(op, event)
        if any(e.type == "info" or (e.type == "fail" and e.error != CAS_MISMATCH) for e in events):
            await self._move()
        return events

    def _learn(self, op: _Op, event: Event) -> None:
        if event.type != "ok":
            return
        if op.f == "get" and isinstance(event.value, str):
            self.seen[op.key] = event.value
        if op.f == "append" and op.key.startswith("a"):
            self.appends.acked[str(op.value)] = op.key

    @staticmethod
    async def _one(recorder: Recorder, op: _Op) -> Event:
        if op.f == "get":
            return await recorder.get(op.key)
        if op.f == "put":
            return await recorder.put(op.key, op.value)
        if op.f == "append":
            return await recorder.append(op.key, op.value)
        if op.f == "cas":
            expected, new = op.value
            return await recorder.cas(op.key, expected, new)
        if op.f == "incr":
            return await recorder.incr(op.key)
        return await recorder.delete(op.key)

    async def _pipelined(self, client: redis.asyncio.Redis, ops: list[_Op]) -> list[Event]:
        """One batch on one connection; each op is recorded under its own process id."""
        processes = [r.process for r in self.recorders]
        for op, process in zip(ops, processes, strict=True):
            self.log.record("invoke", process, op.f, op.key, op.value, None)
        pipe = client.pipeline(transaction=False)
        for op in ops:
            pipe.execute_command(*_command(op))
        try:
            replies = await pipe.execute(raise_on_error=False)
        except UNKNOWN_OUTCOME as exc:  # the recorder's list: the same outcomes are unknown
            return [self._retire(k, op, f"{type(exc).__name__}: {exc}") for k, op in enumerate(ops)]
        except BaseException as exc:  # cancelled or a bug: the ops may have been sent
            for k, op in enumerate(ops):
                self._retire(k, op, f"{type(exc).__name__}: {exc}")
            raise
        finally:
            await pipe.reset()  # type: ignore[no-untyped-call]
        return [
            self._complete(k, op, reply)
            for k, (op, reply) in enumerate(zip(ops, replies, strict=True))
        ]

    def _complete(self, k: int, op: _Op, reply: object) -> Event:
        process = self.recorders[k].process
        if isinstance(reply, redis.exceptions.ResponseError):
            message = str(reply)
            if message.startswith("TIMEOUT"):
                return self._retire(k, op, message)
            return self.log.record("fail", process, op.f, op.key, None, message)
        if isinstance(reply, Exception):
            return self._retire(k, op, f"{type(reply).__name__}: {reply}")
        if op.f == "cas" and reply in (0, b"0", "0"):
            return self.log.record("fail", process, op.f, op.key, None, CAS_MISMATCH)
        return self.log.record("ok", process, op.f, op.key, _output(op.f, reply), None)

    def _retire(self, k: int, op: _Op, message: str) -> Event:
        recorder = self.recorders[k]
        event = self.log.record("info", recorder.process, op.f, op.key, None, message)
        recorder.process = self.log.new_process()
        return event

    # --- phases ----------------------------------------------------------------------------------

    async def run_until(self, stop: asyncio.Event) -> None:
        """The safety phase: batches until `stop` (or the bound)."""
        while self.operations < MAX_OPS_PER_SLOT and not stop.is_set():
            await self.one_batch()
            await asyncio.sleep(self.rng.uniform(*self.shape.think_s))

    async def until_ok(self, timeout_s: float) -> bool:
        """The liveness phase: an ok (or a cas observation) within `timeout_s`."""
        deadline = self.cluster.sim.now + timeout_s
        while self.cluster.sim.now < deadline:
            events = await self.one_batch()
            if any(e.type == "ok" or e.error == CAS_MISMATCH for e in events):
                return True
        return False


def _command(op: _Op) -> tuple[Any, ...]:
    if op.f == "get":
        return ("GET", op.key)
    if op.f == "put":
        return ("SET", op.key, op.value)
    if op.f == "append":
        return ("APPEND", op.key, op.value)
    if op.f == "cas":
        expected, new = op.value
        return ("CAS", op.key, expected, new)
    if op.f == "incr":
        return ("INCR", op.key)
    return ("DEL", op.key)


def _output(f: str, reply: object) -> Value:
    """As the Recorder classifies a normal reply (detsim.check.recorder)."""
    if f in ("put", "cas"):
        return None
    if isinstance(reply, bytes):
        return reply.decode("utf-8", errors="backslashreplace")
    return reply


async def final_reads(
    cluster: StoreCluster, log: HistoryLog, keys: list[str], timeout_s: float
) -> dict[str, dict[str, Value]]:
    """GET every key at every member, recorded (faults are off: each must answer within
    `timeout_s`). Returns node -> key -> value for the reads that returned ok."""
    voters, learners = cluster.members()
    out: dict[str, dict[str, Value]] = {}
    for nid in voters + learners:
        out[nid] = await cluster.on_client(_read_all(cluster, log, nid, keys, timeout_s))
    return out


async def _read_all(
    cluster: StoreCluster, log: HistoryLog, nid: str, keys: list[str], timeout_s: float
) -> dict[str, Value]:
    client = cluster.redis(nid, socket_timeout=CLIENT_TIMEOUT_S)
    recorder = Recorder(client, log)
    values: dict[str, Value] = {}
    deadline = cluster.sim.now + timeout_s
    try:
        for key in keys:
            while cluster.sim.now < deadline:
                event = await recorder.get(key)
                if event.type == "ok":
                    values[key] = event.value
                    break
                await asyncio.sleep(BACKOFF_S[0])
    finally:
        await client.aclose()
    return values
