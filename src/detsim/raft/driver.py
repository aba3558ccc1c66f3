"""The asyncio driver of a Raft node: the core, its storage, its transport, a state machine.

`RaftNode(config, state_machine)` owns one node; `await node.run()` (or `async with node:`)
runs it until cancelled. It never imports detsim.sim: the same code runs on real sockets and
disks, and inside the simulator (DESIGN "Layers").

One task, the loop, owns the core: it is the only code that calls the core's methods. Inputs
wait in bounded queues until the loop takes them, all at once, in one burst:

    inbox      messages from the transport          (MAX_INBOX_MESSAGES; past it dropped, counted)
    requests   proposals, reads, admin calls        (MAX_QUEUED_REQUESTS; past it refused)
    ticks      due ticks, from the ticker task      (MAX_TICKS_PER_BURST; older ones are dropped)

Each turn of the loop: step every queued message, tick, run every queued request, then handle
the Ready in the order of its contract (`detsim.raft.core.ready`):

    0. send the first `rd.send_before_persist` messages: a leader's appends, heartbeats and
       snapshot chunks leave while its own fsync runs (thesis §10.2.1), so one write costs
       max(leader fsync, RTT + follower fsync) instead of their sum. Safe because the core
       counts the leader in a commit quorum only for entries `advance` reported durable;
    1. persist: snapshot chunks, an incoming snapshot, entries, hard state; ONE storage.sync()
       (group commit: everything that arrived while the previous Ready was being handled is in
       this one) when there are entries or chunks or the term or vote moved; a hard state that
       only moves the commit index is written without an fsync (etcd's MustSync: the commit
       index is volatile in Raft; the next sync makes it durable); restore the state machine
       from an incoming snapshot; update the transport's peers from the membership now in force
       (it changes when a change is *appended*);
    2. send the other messages (votes, acknowledgements: never before step 1);
    3. apply the committed entries (one `state_machine.apply` batch), resolve the proposals'
       futures, answer reads whose index is now applied;
    4. advance; then take a snapshot of our own if `applied - snapshot index` passed the
       threshold (`snapshot_threshold_entries`), and `core.compact` to it.

The core is never stepped while a Ready is out, so what an observer sees after step 1 is
durable (but for the commit index of a commit-only hard state). Asserted: entries are durable
before any message but step 0's leaves (and the core asserts that a leader never counts its
own match past its durable log); the applied index moves by one per entry (or jumps to a
snapshot); one Ready at a time.

Futures and their errors (all `RaftError`s):
- `propose(data)` -> the state machine's result once the entry is applied here. `NotLeader`
  (with `leader_hint`) or `ProposalDropped`: not proposed, safe to retry. `OutcomeUnknown`: it
  was appended but this node lost leadership before it committed, or another leader's entry
  took its index (then it certainly did not apply, but the store answers both alike).
- `read_index()` -> None once this node has applied at least the leader's commit index at the
  time of the request (a linearizable read may then be served locally). `ReadIndexDropped`
  (no leader, leadership lost, or no answer within `read_timeout_ticks`): safe to retry.
- admin: `add_learner(id, addr)`, `promote(id)`, `remove(id)` resolve once the change is
  applied here; `transfer_leadership(id)` once `id` leads as far as we know (`TransferRejected`
  after `transfer_timeout_ticks`); `snapshot_now()` -> the snapshot's index.
- `NodeStopped`: the node stopped (cancelled or crashed) first; every pending future gets it.
Membership changes carry the node's Raft address in `ConfChange.context` ("host:port"); the
address book (config peers, contexts, and a header in every snapshot, so addresses survive
compaction) gives the transport its peers.

Snapshot format (what storage holds and followers receive): a 4-byte big-endian length, that
many bytes of msgpack {"addresses": {id: [host, port]}}, then the state machine's bytes.

Bounds: the queues above, MAX_PENDING_PROPOSALS futures, MAX_PENDING_READS reads,
MAX_SNAPSHOT_HEADER_BYTES; the core bounds uncommitted entries and its outbox.

Trace events (through detsim.seam: inside a simulation only, for timelines): `raft.state`
(role, term, leader, commit) on each change of role, term or leader; `raft.commit` every
TRACE_COMMIT_EVERY_ENTRIES committed entries at most; `raft.snapshot_taken`,
`raft.snapshot_installed`. Never one per message or heartbeat.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import heapq
import itertools
import logging
import os
import random
import struct
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Final, NamedTuple

from detsim import seam
from detsim.raft import codec
from detsim.raft.core.config import RaftConfig
from detsim.raft.core.errors import (
    NotLeader,
    ProposalDropped,
    RaftError,
    ReadIndexDropped,
    RemoteProtocolError,
    TransferRejected,
)
from detsim.raft.core.messages import (
    ConfChange,
    ConfChangeOp,
    ConfState,
    Entry,
    EntryKind,
    HardState,
    Message,
    SnapshotMeta,
)
from detsim.raft.core.raft import Raft, Role
from detsim.raft.core.ready import Ready
from detsim.raft.statemachine import StateMachine
from detsim.raft.storage import Storage
from detsim.raft.transport import Address, Transport

MAX_INBOX_MESSAGES: Final = 10_000
MAX_QUEUED_REQUESTS: Final = 10_000
MAX_PENDING_PROPOSALS: Final = 20_000
MAX_PENDING_READS: Final = 4096
MAX_TICKS_PER_BURST: Final = 100  # a loop stalled longer than this many ticks loses the rest
MAX_SNAPSHOT_HEADER_BYTES: Final = 1024 * 1024
TRACE_COMMIT_EVERY_ENTRIES: Final = 64  # a trace event per this many committed entries at most
RESTORE_CHUNK_BYTES: Final = 1024 * 1024  # reads of a snapshot from storage, to restore it
_HEADER_LENGTH: Final = struct.Struct(">I")

_log = logging.getLogger(__name__)


class NodeStopped(RaftError):
    """The node stopped before the request finished (for a proposal: outcome unknown)."""


class OutcomeUnknown(RaftError):
    """The proposal was appended but its fate is unknown here (leadership lost, overwritten)."""


@dataclasses.dataclass(frozen=True, slots=True)
class RaftNodeConfig:
    """One node's configuration. `peers` are the other initial members (id -> Raft address);
    a node whose data_dir is empty bootstraps a cluster of itself and its peers, all voters,
    unless `join` (then it waits, empty, to be added as a learner)."""

    node_id: str
    raft_addr: Address
    peers: Mapping[str, Address]
    data_dir: str
    secret: bytes | None = None
    join: bool = False
    #: One core tick. With the core's election_ticks=10: a 1-2 s election timeout.
    tick_interval_s: float = 0.1
    #: Take a snapshot (and compact the log) once this many entries are applied past the last.
    snapshot_threshold_entries: int = 10_000
    #: A read with no answer after this many ticks fails (ReadIndexDropped; safe to retry).
    read_timeout_ticks: int = 30
    #: transfer_leadership fails if the target does not lead after this many ticks.
    transfer_timeout_ticks: int = 30
    #: Overrides of the core's RaftConfig fields (e.g. {"election_ticks": 20}).
    raft: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def core_config(self) -> RaftConfig:
        return RaftConfig(node_id=self.node_id, **dict(self.raft))


class RaftObserver:
    """Hooks for tests and checkers; each is called synchronously by the loop. Default: no-op."""

    def persisted(self, node: RaftNode, ready: Ready) -> None:
        """`ready`'s state is durable (and an incoming snapshot restored); nothing sent yet."""

    def applied(self, node: RaftNode, entry: Entry, result: Any) -> None:
        """The state machine applied `entry` (result: what it returned)."""

    def snapshot_restored(self, node: RaftNode, meta: SnapshotMeta) -> None:
        """The state machine was replaced by the snapshot `meta` (at start or from a leader)."""

    def acknowledged(self, node: RaftNode, entry: Entry, result: Any) -> None:
        """A proposal's future was resolved with success: `entry` is acknowledged."""


@dataclasses.dataclass(slots=True)
class DriverStats:
    """Named counters of the driver (the transport has its own)."""

    readies: int = 0
    syncs: int = 0
    messages_stepped: int = 0
    inbox_dropped: int = 0  # the inbox was full
    protocol_errors: int = 0  # a step raised RemoteProtocolError (dropped)
    ticks_dropped: int = 0  # ticks past MAX_TICKS_PER_BURST in one burst
    entries_applied: int = 0
    snapshots_taken: int = 0
    snapshots_installed: int = 0
    proposals_unknown: int = 0
    messages_sent_before_persist: int = 0  # a leader's appends sent while its fsync ran
    syncs_skipped: int = 0  # Readies that only moved the commit index: written, not fsynced


@dataclasses.dataclass(slots=True)
class _Proposal:
    term: int
    future: asyncio.Future[Any]


@dataclasses.dataclass(slots=True)
class _Read:
    future: asyncio.Future[None]
    deadline_tick: int
    index: int | None = None


@dataclasses.dataclass(slots=True)
class _Transfer:
    target: str
    deadline_tick: int
    future: asyncio.Future[None]


# A queued request: run by the loop with the core; it settles its own future (kept beside it
# so that a shutdown can fail the futures of requests the loop never took).
_Request = tuple[Callable[[], None], asyncio.Future[Any]]


def encode_address(address: Address) -> bytes:
    host, port = address
    return f"{host}:{int(port)}".encode()


def decode_address(data: bytes) -> Address:
    host, _, port = data.decode().rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"not host:port: {data[:80]!r}")
    return (host, int(port))


def encode_member_context(address: Address, client_address: Address | None = None) -> bytes:
    """An ADD_LEARNER change's context: the new member's Raft address, then (optional, after
    one space) the address where it serves clients, so that every member learns both from the
    log (the store forwards writes to a leader's client address)."""
    context = encode_address(address)
    if client_address is not None:
        context += b" " + encode_address(client_address)
    return context


def decode_member_context(data: bytes) -> tuple[Address, Address | None]:
    """Inverse of `encode_member_context` (ValueError if it cannot have produced `data`)."""
    parts = data.split(b" ")
    if len(parts) > 2:
        raise ValueError(f"not host:port [host:port]: {data[:80]!r}")
    client = decode_address(parts[1]) if len(parts) == 2 else None
    return decode_address(parts[0]), client


class _SnapshotHeader(NamedTuple):
    """What a stored snapshot carries before the state machine's bytes (which start at
    `start`): the address books in force at its index."""

    addresses: dict[str, Address]
    client_addresses: dict[str, Address]
    start: int


class RaftNode:
    """A Raft node on asyncio (see the module header)."""

    def __init__(
        self,
        config: RaftNodeConfig,
        state_machine: StateMachine,
        *,
        observer: RaftObserver | None = None,
    ) -> None:
        if config.snapshot_threshold_entries < 1:
            raise ValueError("snapshot_threshold_entries must be >= 1")
        if not config.tick_interval_s > 0:
            raise ValueError("tick_interval_s must be > 0 seconds")
        if config.read_timeout_ticks < 1 or config.transfer_timeout_ticks < 1:
            raise ValueError("read_timeout_ticks and transfer_timeout_ticks must be >= 1")
        config.core_config().validate()
        self.config = config
        self.id = config.node_id
        self.state_machine = state_machine
        self.observer = observer or RaftObserver()
        self.stats = DriverStats()
        self._core: Raft | None = None
        self._storage: Storage | None = None
        self._transport: Transport | None = None
        self._persisted = HardState()
        self._addresses: dict[str, Address] = {}
        self._client_addresses: dict[str, Address] = {}  # learned from ADD_LEARNER contexts
        self._inbox: deque[Message] = deque()
        self._requests: deque[_Request] = deque()
        self._ticks_due = 0
        self._ticks = 0  # ticks given to the core since start
        self._wake = asyncio.Event()
        self._proposals: dict[int, _Proposal] = {}  # index -> proposal (leader only)
        self._reads: dict[bytes, _Read] = {}  # request id -> read, in deadline order
        self._reads_by_index: list[tuple[int, bytes]] = []  # heap of (index, request id)
        self._transfers: list[_Transfer] = []
        self._snapshot_waiters: list[asyncio.Future[int]] = []
        self._read_ids = itertools.count()
        self._read_prefix = b""
        self._receiving: SnapshotMeta | None = None  # an incoming snapshot being staged
        self._lead: tuple[Role, int] | None = None  # (role, term) when proposals were checked
        self._traced_state: tuple[Role, int, str | None] | None = None  # (role, term, leader)
        self._traced_commit = 0
        self._running = False
        self._stopped = False
        self._task: asyncio.Task[None] | None = None
        self._started = asyncio.Event()

    # =========================================================================================
    # Lifecycle

    async def run(self) -> None:
        """Run until cancelled (or until a fault such as storage corruption raises)."""
        assert not self._running and not self._stopped, "run() once"
        self._running = True
        ticker: asyncio.Task[None] | None = None
        try:
            await self._start()
            ticker = asyncio.get_running_loop().create_task(
                self._ticker(), name=f"raft-ticker-{self.id}"
            )
            self._started.set()
            await self._loop()
        finally:
            self._running = False
            self._stopped = True
            if ticker is not None:
                ticker.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await ticker
            await self._shutdown()

    async def __aenter__(self) -> RaftNode:
        self._task = asyncio.get_running_loop().create_task(self.run(), name=f"raft-{self.id}")
        started = asyncio.ensure_future(self._started.wait())
        try:
            await asyncio.wait([started, self._task], return_when=asyncio.FIRST_COMPLETED)
        except BaseException:  # cancelled while starting: leave nothing running
            started.cancel()
            await self.stop()
            raise
        if self._task.done():
            started.cancel()
            await self._task  # raises what stopped it
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def stop(self) -> None:
        """Cancel a node started by `async with` and wait for its clean shutdown."""
        task = self._task
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _start(self) -> None:
        storage = self._storage = Storage(self.config.data_dir)
        restored = storage.load()
        self._persisted = restored.hard_state
        self._addresses = {}
        self._client_addresses = {}
        sm_applied = self.state_machine.applied_index()
        if restored.snapshot is not None:
            self._learn_snapshot_addresses(restored.snapshot)
            if sm_applied < restored.snapshot.index:
                await self._restore_state_machine(restored.snapshot)
                sm_applied = restored.snapshot.index
        snapshot_index = restored.snapshot.index if restored.snapshot else 0
        durable_last = restored.entries[-1].index if restored.entries else snapshot_index
        if sm_applied > durable_last:
            raise RuntimeError(
                f"{self.id}: state machine applied index {sm_applied} is past the durable "
                f"log (last index {durable_last}): its storage and the log disagree"
            )
        hard_state = restored.hard_state
        if sm_applied > hard_state.commit:
            # A persistent state machine applied entries whose commit was written but not
            # fsynced (`_persist`): they were committed, so the commit index is at least that.
            hard_state = dataclasses.replace(hard_state, commit=sm_applied)
        self._learn_addresses(restored.entries)
        self._addresses.update(self.config.peers)
        initial = None
        if restored.empty and not self.config.join:
            initial = ConfState.of([self.id, *self.config.peers])
        self._core = Raft(
            self.config.core_config(),
            random.Random(),
            hard_state=hard_state,
            snapshot=restored.snapshot,
            entries=restored.entries,
            applied=sm_applied,
            initial_conf=initial,
            snapshot_reader=storage,
        )
        self._read_prefix = os.urandom(8)
        self._transport = Transport(
            self.id, self.config.raft_addr, self._wanted_peers(), self.config.secret, self._deliver
        )
        await self._transport.start()

    async def _shutdown(self) -> None:
        error = NodeStopped(f"raft node {self.id} stopped")
        for future in self._pending_futures():
            if not future.done():
                future.set_exception(error)
        self._proposals.clear()
        self._reads.clear()
        self._reads_by_index.clear()
        self._transfers.clear()
        self._snapshot_waiters.clear()
        self._requests.clear()
        self._inbox.clear()
        if self._transport is not None:
            await self._transport.close()
        if self._storage is not None:
            self._storage.close()

    def _pending_futures(self) -> Iterator[asyncio.Future[Any]]:
        for p in self._proposals.values():
            yield p.future
        for r in self._reads.values():
            yield r.future
        for t in self._transfers:
            yield t.future
        yield from self._snapshot_waiters
        for _, future in self._requests:
            yield future

    # =========================================================================================
    # Read-only state (tests, observers, status)

    @property
    def core(self) -> Raft:
        """The core, for reading only (started nodes)."""
        assert self._core is not None, f"{self.id} not started"
        return self._core

    @property
    def transport(self) -> Transport:
        assert self._transport is not None, f"{self.id} not started"
        return self._transport

    @property
    def persisted_hard_state(self) -> HardState:
        """The hard state last made durable."""
        return self._persisted

    @property
    def client_addresses(self) -> dict[str, Address]:
        """Where members added at run time serve clients (from their ADD_LEARNER change, when
        it carried one): id -> address."""
        return dict(self._client_addresses)

    @property
    def addresses(self) -> dict[str, Address]:
        return dict(self._addresses)

    @property
    def running(self) -> bool:
        return self._running and self._core is not None

    def status(self) -> dict[str, Any]:
        """DESIGN's RAFT.STATUS fields: id, role, term, leader, commit_index, applied_index,
        last_log_index, snapshot_index, voters, learners."""
        return self.core.status()

    # =========================================================================================
    # Requests (any task)

    async def propose(self, data: bytes) -> Any:
        """Replicate `data`; the state machine's result once applied (see the header)."""
        return await self._propose(EntryKind.NORMAL, data)

    async def add_learner(
        self, node_id: str, address: Address, client_address: Address | None = None
    ) -> None:
        """Add `node_id` (Raft `address`) as a learner; `client_address`, if given, is where it
        serves clients: every member learns it with the change (`client_addresses`)."""
        context = encode_member_context(address, client_address)
        await self._propose_change(ConfChange(ConfChangeOp.ADD_LEARNER, node_id, context))

    async def promote(self, node_id: str) -> None:
        await self._propose_change(ConfChange(ConfChangeOp.PROMOTE, node_id))

    async def remove(self, node_id: str) -> None:
        await self._propose_change(ConfChange(ConfChangeOp.REMOVE, node_id))

    async def _propose_change(self, change: ConfChange) -> None:
        await self._propose(EntryKind.CONF_CHANGE, change.encode())

    async def _propose(self, kind: EntryKind, data: bytes) -> Any:
        self._check_leader()
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

        def request() -> None:
            if future.done():
                return  # the caller gave up (cancelled) before we proposed: nothing to do
            if len(self._proposals) >= MAX_PENDING_PROPOSALS:
                future.set_exception(ProposalDropped("too many pending proposals (bound)"))
                return
            core = self.core
            try:
                if kind is EntryKind.NORMAL:
                    index = core.propose(data)
                else:
                    index = core.propose_conf_change(ConfChange.decode(data))
            except RaftError as exc:
                future.set_exception(exc)
                return
            assert index not in self._proposals, index
            self._proposals[index] = _Proposal(core.term, future)

        self._submit(request, future)
        return await future

    async def read_index(self) -> None:
        """Return once a linearizable read may be served from this node's state machine."""
        self._check_running()
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def request() -> None:
            if future.done():
                return
            if len(self._reads) >= MAX_PENDING_READS:
                future.set_exception(ReadIndexDropped("too many pending reads (bound)"))
                return
            request_id = self._read_prefix + next(self._read_ids).to_bytes(8, "big")
            try:
                self.core.read_index(request_id)
            except RaftError as exc:
                future.set_exception(exc)
                return
            deadline = self._ticks + self.config.read_timeout_ticks
            self._reads[request_id] = _Read(future, deadline)

        self._submit(request, future)
        await future

    async def transfer_leadership(self, target: str) -> None:
        """Hand leadership to `target`; returns once it leads (as far as this node knows)."""
        self._check_leader()
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def request() -> None:
            if future.done():
                return
            if target == self.id and self.core.role is Role.LEADER:
                future.set_result(None)  # already there
                return
            try:
                self.core.transfer_leadership(target)
            except RaftError as exc:
                future.set_exception(exc)
                return
            deadline = self._ticks + self.config.transfer_timeout_ticks
            self._transfers.append(_Transfer(target, deadline, future))

        self._submit(request, future)
        await future

    async def snapshot_now(self) -> int:
        """Take a snapshot at the applied index now (and compact); its index."""
        self._check_running()
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._submit(lambda: self._snapshot_waiters.append(future), future)
        return await future

    def _check_running(self) -> None:
        if not self.running:
            raise NodeStopped(f"raft node {self.id} is not running")

    def _check_leader(self) -> None:
        """Refuse at once, without queueing, on a node that knows it is not the leader."""
        self._check_running()
        if self.core.role is not Role.LEADER:
            raise NotLeader(self.core.leader)

    def _submit(self, request: Callable[[], None], future: asyncio.Future[Any]) -> None:
        if len(self._requests) >= MAX_QUEUED_REQUESTS:
            raise ProposalDropped(f"{MAX_QUEUED_REQUESTS} requests queued (bound)")
        self._requests.append((request, future))
        self._wake.set()

    # =========================================================================================
    # Inputs from the transport and the clock

    def _deliver(self, msg: Message) -> None:
        """The transport's callback: queue, never step here (the loop owns the core)."""
        if len(self._inbox) >= MAX_INBOX_MESSAGES:
            self.stats.inbox_dropped += 1  # Raft tolerates loss; a stalled loop must not OOM
            return
        self._inbox.append(msg)
        self._wake.set()

    async def _ticker(self) -> None:
        interval_s = self.config.tick_interval_s
        while True:
            await asyncio.sleep(interval_s)
            if self._ticks_due >= MAX_TICKS_PER_BURST:
                self.stats.ticks_dropped += 1
            else:
                self._ticks_due += 1
            self._wake.set()

    # =========================================================================================
    # The loop

    async def _loop(self) -> None:
        core = self.core
        while True:
            await self._wake.wait()
            self._wake.clear()
            self._burst()
            while core.has_ready():
                await self._handle_ready(core.ready())
                self._burst()  # what arrived meanwhile joins the next Ready (group commit)
            if (self._snapshot_waiters or self._snapshot_due()) and not self._receiving_snapshot():
                await self._take_snapshot()
                self._wake.set()  # compaction may restart snapshot streams: another turn

    def _burst(self) -> None:
        """Step every queued message, tick, run every queued request."""
        core = self.core
        inbox = self._inbox
        while inbox:
            msg = inbox.popleft()
            self.stats.messages_stepped += 1
            try:
                core.step(msg)
            except RemoteProtocolError as exc:
                self.stats.protocol_errors += 1
                _log.debug("%s: dropped %s from %s: %s", self.id, type(msg).__name__, msg.frm, exc)
        ticks, self._ticks_due = self._ticks_due, 0
        for _ in range(ticks):
            core.tick()
            self._ticks += 1
        if ticks:
            self._expire(self._ticks)
        requests = self._requests
        while requests:
            requests.popleft()[0]()

    async def _handle_ready(self, rd: Ready) -> None:
        core = self.core
        self.stats.readies += 1
        transport = self.transport
        early = rd.send_before_persist
        # Step 0: a leader's appends go out while its own fsync runs (ready.py); the core
        # counts the leader's entries in a quorum only after `advance`, i.e. once durable.
        for msg in rd.messages[:early]:
            transport.send(msg)
        self.stats.messages_sent_before_persist += early
        await self._persist(rd)
        self.observer.persisted(self, rd)
        for msg in rd.messages[early:]:
            transport.send(msg)
        await self._apply(rd.committed_entries)
        for rs in rd.read_states:
            self._read_index_known(rs.request_id, rs.index)
        for request_id in rd.dropped_reads:
            self._fail_read(request_id, ReadIndexDropped("the leader dropped the read"))
        self._answer_reads()
        core.advance(rd)
        # The core's applied index is the state machine's (one per entry, or a snapshot's).
        assert core.applied == self.state_machine.applied_index(), (
            core.applied,
            self.state_machine.applied_index(),
        )
        self._check_leadership(rd)
        self._trace_state()

    def _trace_state(self) -> None:
        """Trace events for timelines (detsim.seam: nothing outside a simulation), bounded so a
        run's trace stays small: one on each change of role, term or leader, and one per
        TRACE_COMMIT_EVERY_ENTRIES committed entries at most (never one per heartbeat)."""
        core = self.core
        state = (core.role, core.term, core.leader)
        if state != self._traced_state:
            self._traced_state = state
            self._traced_commit = core.commit
            seam.event(
                "raft.state",
                role=core.role.value,
                term=core.term,
                leader=core.leader,
                commit=core.commit,
            )
        elif core.commit >= self._traced_commit + TRACE_COMMIT_EVERY_ENTRIES:
            self._traced_commit = core.commit
            seam.event("raft.commit", index=core.commit, term=core.term)

    async def _persist(self, rd: Ready) -> None:
        storage = self._storage
        assert storage is not None
        for chunk in rd.snapshot_chunks:
            storage.write_snapshot_chunk(chunk.meta, chunk.offset, chunk.data)
        if rd.snapshot_chunks:
            self._receiving = rd.snapshot_chunks[-1].meta
        if rd.snapshot is not None:
            self._receiving = None
            await storage.install_snapshot(rd.snapshot)
        if rd.entries:
            storage.append(rd.entries)
        if rd.hard_state is not None:
            storage.hard_state = rd.hard_state
        if rd.entries or rd.snapshot_chunks or self._term_or_vote_moves(rd):
            await storage.sync()  # (a snapshot install made itself durable)
            self.stats.syncs += 1
        elif rd.hard_state is not None:
            # Only the commit index moved: written, fsynced with the next batch. The commit
            # index is volatile in Raft (Figure 2; etcd's MustSync): a restart relearns it.
            storage.write_hard_state()
            self.stats.syncs_skipped += 1
        if rd.hard_state is not None:
            self._persisted = rd.hard_state
        if rd.entries:
            # Entries durable before any message of this Ready leaves (the contract's step 1).
            assert storage.last_index == rd.entries[-1].index, (storage.last_index, rd.entries[-1])
        if rd.snapshot is not None:
            self._learn_snapshot_addresses(rd.snapshot)
            await self._restore_state_machine(rd.snapshot)
            self.stats.snapshots_installed += 1
            seam.event("raft.snapshot_installed", index=rd.snapshot.index, term=rd.snapshot.term)
            self._fail_proposals_upto(rd.snapshot.index)
        if rd.entries or rd.snapshot is not None:
            self._learn_addresses(rd.entries)
            self._addresses.update(self.config.peers)
            self.transport.set_peers(self._wanted_peers())

    def _term_or_vote_moves(self, rd: Ready) -> bool:
        """Does `rd` change the term or the vote? (Those must be durable before any message
        of the Ready leaves; a change of the commit index alone need not be.)"""
        hard, persisted = rd.hard_state, self._persisted
        return hard is not None and (hard.term, hard.vote) != (persisted.term, persisted.vote)

    async def _apply(self, entries: tuple[Entry, ...]) -> None:
        applied = self.state_machine.applied_index()
        todo = [e for e in entries if e.index > applied]  # a snapshot may cover some
        if not todo:
            return
        assert todo[0].index == applied + 1, (todo[0].index, applied)
        results = await self.state_machine.apply(todo)
        assert len(results) == len(todo), (len(results), len(todo))
        assert self.state_machine.applied_index() == todo[-1].index
        self.stats.entries_applied += len(todo)
        for entry, result in zip(todo, results, strict=True):
            self.observer.applied(self, entry, result)
            proposal = self._proposals.pop(entry.index, None)
            if proposal is None or proposal.future.done():
                continue
            if proposal.term == entry.term:
                proposal.future.set_result(result)
                self.observer.acknowledged(self, entry, result)
            else:
                self.stats.proposals_unknown += 1
                proposal.future.set_exception(
                    OutcomeUnknown(
                        f"index {entry.index} holds an entry of term {entry.term}, "
                        f"not ours of term {proposal.term}"
                    )
                )

    def _check_leadership(self, rd: Ready) -> None:
        """Fail what depended on our leadership when it is lost (checked on a role or term
        change only); resolve transfers whose target now leads."""
        core = self.core
        lead = (core.role, core.term)
        if lead != self._lead:
            self._lead = lead
            if self._proposals:
                stale = [
                    i
                    for i, p in self._proposals.items()
                    if i > core.commit and (core.role is not Role.LEADER or p.term != core.term)
                ]
                for index in stale:
                    self._fail_proposal(index, "leadership lost before it committed")
        if rd.soft_state is not None and self._transfers:
            for t in self._transfers:
                if core.leader == t.target and not t.future.done():
                    t.future.set_result(None)
            self._transfers = [t for t in self._transfers if not t.future.done()]

    def _fail_proposal(self, index: int, why: str) -> None:
        proposal = self._proposals.pop(index)
        if not proposal.future.done():
            self.stats.proposals_unknown += 1
            proposal.future.set_exception(OutcomeUnknown(f"index {index}: {why}"))

    def _fail_proposals_upto(self, index: int) -> None:
        for i in [i for i in self._proposals if i <= index]:
            self._fail_proposal(i, "a snapshot replaced the state machine")

    # =========================================================================================
    # Reads and timeouts

    def _read_index_known(self, request_id: bytes, index: int) -> None:
        read = self._reads.get(request_id)
        if read is None:
            return  # timed out meanwhile, or a stale answer from before a restart
        read.index = index
        heapq.heappush(self._reads_by_index, (index, request_id))

    def _answer_reads(self) -> None:
        applied = self.state_machine.applied_index()
        heap = self._reads_by_index
        while heap and heap[0][0] <= applied:
            _, request_id = heapq.heappop(heap)
            read = self._reads.pop(request_id, None)
            if read is not None and not read.future.done():
                read.future.set_result(None)

    def _fail_read(self, request_id: bytes, error: RaftError) -> None:
        read = self._reads.pop(request_id, None)
        if read is not None and not read.future.done():
            read.future.set_exception(error)

    def _expire(self, now_tick: int) -> None:
        """Time out reads and transfers (reads are in deadline order: insertion order)."""
        while self._reads:
            request_id, read = next(iter(self._reads.items()))
            if read.deadline_tick > now_tick:
                break
            self._fail_read(request_id, ReadIndexDropped("no answer in time (safe to retry)"))
        if self._transfers:
            for t in self._transfers:
                if t.deadline_tick <= now_tick and not t.future.done():
                    t.future.set_exception(TransferRejected(f"{t.target} did not take over"))
            self._transfers = [t for t in self._transfers if not t.future.done()]

    # =========================================================================================
    # Snapshots

    def _receiving_snapshot(self) -> bool:
        """Is an incoming snapshot being staged? Storage stages ours in the same place, so
        ours waits. The core takes no more chunks of a stream once it has committed past the
        stream's index (nor after the install, or when another stream starts at offset 0)."""
        receiving = self._receiving
        if receiving is not None and self.core.commit >= receiving.index:
            self._receiving = receiving = None
        return receiving is not None

    def _snapshot_due(self) -> bool:
        core = self.core
        return core.applied - core.snapshot_meta.index >= self.config.snapshot_threshold_entries

    async def _take_snapshot(self) -> None:
        core = self.core
        storage = self._storage
        assert storage is not None
        waiters, self._snapshot_waiters = self._snapshot_waiters, []
        if core.applied > core.snapshot_meta.index:
            snap = await self.state_machine.snapshot()
            assert snap.index == core.applied, (snap.index, core.applied)
            header = self._snapshot_header()
            term = core.log.term(snap.index)
            assert term is not None
            meta = SnapshotMeta(
                snap.index, term, core.conf_at(snap.index), len(header) + snap.size_bytes
            )
            await storage.save_snapshot(meta, itertools.chain([header], snap.chunks))
            core.compact(meta)
            self.stats.snapshots_taken += 1
            seam.event("raft.snapshot_taken", index=meta.index, term=meta.term)
        for future in waiters:
            if not future.done():
                future.set_result(core.snapshot_meta.index)

    def _snapshot_header(self) -> bytes:
        book = {nid: [host, port] for nid, (host, port) in sorted(self._addresses.items())}
        clients = {nid: [h, p] for nid, (h, p) in sorted(self._client_addresses.items())}
        body = codec.packb({"addresses": book, "client_addresses": clients})
        assert len(body) <= MAX_SNAPSHOT_HEADER_BYTES
        return _HEADER_LENGTH.pack(len(body)) + body

    def _read_snapshot_header(self, meta: SnapshotMeta) -> _SnapshotHeader:
        """The address books in a stored snapshot, and where the state machine's bytes start."""
        storage = self._storage
        assert storage is not None
        size = _HEADER_LENGTH.size
        (length,) = _HEADER_LENGTH.unpack(storage.read_chunk(meta, 0, size))
        if length > MAX_SNAPSHOT_HEADER_BYTES or size + length > meta.size_bytes:
            raise RuntimeError(f"{self.id}: snapshot {meta} has a bad header length {length}")
        value = codec.unpackb(storage.read_chunk(meta, size, length))
        book = value.get("addresses") if isinstance(value, dict) else None
        clients = value.get("client_addresses", {}) if isinstance(value, dict) else None
        if not isinstance(book, dict) or not isinstance(clients, dict):
            raise RuntimeError(f"{self.id}: snapshot {meta} has a bad header")
        return _SnapshotHeader(
            {str(k): (str(v[0]), int(v[1])) for k, v in book.items()},
            {str(k): (str(v[0]), int(v[1])) for k, v in clients.items()},
            size + length,
        )

    def _learn_snapshot_addresses(self, meta: SnapshotMeta) -> None:
        header = self._read_snapshot_header(meta)
        self._addresses.update(header.addresses)
        self._client_addresses.update(header.client_addresses)

    async def _restore_state_machine(self, meta: SnapshotMeta) -> None:
        start = self._read_snapshot_header(meta).start
        await self.state_machine.restore(meta.index, self._stored_chunks(meta, start))
        assert self.state_machine.applied_index() == meta.index
        self.observer.snapshot_restored(self, meta)

    def _stored_chunks(self, meta: SnapshotMeta, start: int) -> Iterable[bytes]:
        storage = self._storage
        assert storage is not None
        offset = start
        while offset < meta.size_bytes:
            size = min(RESTORE_CHUNK_BYTES, meta.size_bytes - offset)
            yield storage.read_chunk(meta, offset, size)
            offset += size

    # =========================================================================================
    # Membership and addresses

    def _learn_addresses(self, entries: Iterable[Entry]) -> None:
        for entry in entries:
            if entry.kind is not EntryKind.CONF_CHANGE:
                continue
            change = ConfChange.decode(entry.data)
            if change.op is ConfChangeOp.ADD_LEARNER and change.context:
                try:
                    address, client_address = decode_member_context(change.context)
                except ValueError as exc:
                    _log.warning("%s: no address for %s: %s", self.id, change.node_id, exc)
                    continue
                self._addresses[change.node_id] = address
                if client_address is not None:
                    self._client_addresses[change.node_id] = client_address

    def _wanted_peers(self) -> dict[str, Address]:
        """The transport's peers: the members in force with a known address; while this node
        knows no membership (joining), its configured peers."""
        assert self._core is not None
        members = self._core.conf.members()
        if not members:
            return dict(self.config.peers)
        return {m: self._addresses[m] for m in members if m != self.id and m in self._addresses}
