"""An in-test deterministic cluster of Raft cores: memory storage, a message queue, a driver.

Used by the scripted interaction tests (golden files) and the randomized cluster test.

- `MemStorage` is what survives a crash: hard state, log, snapshot, the state machine and its
  applied index. Only `process_ready` writes it, in the order Ready's contract states, so a
  crash (`Cluster.crash`) loses exactly what a real node would: everything not yet handed out
  in a Ready and processed.
- The state machine is the list of the NORMAL entries' data applied so far (its snapshot is
  that list, length-prefixed), so a snapshot's content is checked too, not only its index.
- Messages wait in one queue in send order; `deliver` hands a node its messages; a partition
  drops messages between groups at send time. Nothing here reads a clock or global random:
  the only randomness is each node's seeded `random.Random`.
- `checker`: a `detsim.check.raft.RaftInvariants`, fed after each processed Ready (the point
  where the node's term, vote and log are durable, as its contract asks).
"""

from __future__ import annotations

import random
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from detsim.check.raft import NodeView, RaftInvariants
from detsim.check.raft_observer import core_view, entry_digest
from detsim.raft.core import (
    AppendRequest,
    AppendResponse,
    ConfChange,
    ConfState,
    Entry,
    EntryKind,
    HardState,
    Heartbeat,
    HeartbeatResponse,
    Message,
    RaftError,
    ReadIndexRequest,
    ReadIndexResponse,
    RemoteProtocolError,
    SnapshotChunk,
    SnapshotChunkResponse,
    SnapshotMeta,
    TimeoutNow,
    VoteRequest,
    VoteResponse,
)
from detsim.raft.core.config import RaftConfig
from detsim.raft.core.raft import Raft
from detsim.raft.core.ready import Ready

#: `stabilize` gives up after this many rounds (a livelock in the core is a test failure).
MAX_STABILIZE_ROUNDS = 10_000


def encode_sm(items: list[bytes]) -> bytes:
    return b"".join(struct.pack(">I", len(x)) + x for x in items)


def decode_sm(data: bytes) -> list[bytes]:
    out, k = [], 0
    while k < len(data):
        (n,) = struct.unpack_from(">I", data, k)
        out.append(data[k + 4 : k + 4 + n])
        k += 4 + n
    return out


@dataclass
class MemStorage:
    """A node's durable state."""

    hard: HardState = field(default_factory=HardState)
    snapshot: SnapshotMeta | None = None
    snapshot_data: bytes = b""
    entries: list[Entry] = field(default_factory=list)
    applied: int = 0
    sm: list[bytes] = field(default_factory=list)
    staging_meta: SnapshotMeta | None = None
    staging: bytearray = field(default_factory=bytearray)

    def append(self, entries: Iterable[Entry]) -> None:
        for entry in entries:
            base = self.snapshot.index if self.snapshot else 0
            k = entry.index - base - 1
            assert 0 <= k <= len(self.entries), (entry.index, base, len(self.entries))
            del self.entries[k:]
            self.entries.append(entry)


class SimNode:
    """One node: its storage, its core (None while crashed), its boot count."""

    def __init__(
        self, node_id: str, config: RaftConfig, initial_conf: ConfState | None, seed: int
    ) -> None:
        self.id = node_id
        self.config = config
        self.initial_conf = initial_conf
        self.seed = seed
        self.storage = MemStorage()
        self.boot = 0
        self.raft: Raft | None = None
        self.held: Ready | None = None  # a Ready taken and not yet processed (async driver)
        self.held_sent = 0  # how many of the held Ready's messages left before its persist
        self.start()

    def start(self) -> None:
        s = self.storage
        rng = random.Random(f"{self.seed}/{self.id}/{self.boot}")
        self.raft = Raft(
            self.config,
            rng,
            hard_state=s.hard,
            snapshot=s.snapshot,
            entries=list(s.entries),
            applied=s.applied,
            initial_conf=self.initial_conf,
            snapshot_reader=self,
        )

    def read_chunk(self, meta: SnapshotMeta, offset: int, size_bytes: int) -> bytes:
        assert meta == self.storage.snapshot, (meta, self.storage.snapshot)
        data = self.storage.snapshot_data[offset : offset + size_bytes]
        assert len(data) == size_bytes
        return data

    @property
    def core(self) -> Raft:
        assert self.raft is not None, f"node {self.id} is down"
        return self.raft


def view_of(node: SimNode) -> NodeView:
    return core_view(node.core, node.id, node.boot)


class Cluster:
    """Nodes, a message queue and partitions; `out` collects human-readable lines."""

    def __init__(
        self,
        seed: int = 0,
        checker: RaftInvariants | None = None,
        verbose: bool = False,
    ) -> None:
        self.seed = seed
        self.nodes: dict[str, SimNode] = {}
        self.queue: list[Message] = []
        self.groups: list[set[str]] = []  # partition groups; empty: fully connected
        self.checker = checker
        self.verbose = verbose
        self.out: list[str] = []
        self.protocol_errors = 0
        self.acked: dict[int, tuple[int, bytes]] = {}  # index -> (term, data) seen applied
        self.read_results: dict[str, list[tuple[bytes, int]]] = {}
        self.dropped_reads: dict[str, list[bytes]] = {}
        self._soft: dict[str, tuple[str, int, str | None]] = {}
        self.on_apply: Callable[[str, Entry], None] | None = None
        self.on_read: Callable[[str, bytes, int], None] | None = None

    # --- membership of the test world ------------------------------------------------------

    def add_node(self, node_id: str, config: RaftConfig, initial_conf: ConfState | None) -> SimNode:
        node = SimNode(node_id, config, initial_conf, self.seed)
        self.nodes[node_id] = node
        self._soft[node_id] = self._soft_of(node)
        return node

    def ids(self) -> list[str]:
        return sorted(self.nodes, key=_id_key)

    def alive(self) -> list[str]:
        return [i for i in self.ids() if self.nodes[i].raft is not None]

    def log(self, line: str) -> None:
        if self.verbose:
            self.out.append(line)

    # --- state-change reporting ------------------------------------------------------------

    def _soft_of(self, node: SimNode) -> tuple[str, int, str | None]:
        r = node.core
        return (r.role_name, r.term, r.leader)

    def report(self, node_id: str) -> None:
        node = self.nodes[node_id]
        if node.raft is None:
            return
        now = self._soft_of(node)
        before = self._soft.get(node_id)
        if now != before:
            self._soft[node_id] = now
            if before is None or before[:2] != now[:2]:
                self.log(f"{node_id} is {now[0]} at term {now[1]}")

    # --- local operations ------------------------------------------------------------------

    def call(self, node_id: str, fn: Callable[[Raft], Any]) -> Any:
        """Run a local request on a node's core; report a RaftError as text."""
        try:
            result = fn(self.nodes[node_id].core)
        except RaftError as e:
            self.log(f"{type(e).__name__}: {e}")
            result = e
        self.report(node_id)
        return result

    def tick(self, node_id: str, n: int = 1) -> None:
        for _ in range(n):
            self.nodes[node_id].core.tick()
            self.report(node_id)

    # --- the driver ------------------------------------------------------------------------

    def process_ready(self, node_id: str) -> bool:
        """Take a Ready and process it at once (a synchronous driver)."""
        if not self.take_ready(node_id):
            return False
        self.finish_ready(node_id)
        return True

    def take_ready(self, node_id: str) -> bool:
        """Take the node's Ready and hold it: the core may be stepped before it is processed
        (as with an asyncio driver awaiting fsync)."""
        node = self.nodes[node_id]
        if node.held is not None or not node.core.has_ready():
            return False
        rd = node.held = node.core.ready()
        # A leader's appends may leave before its persist (ready.py, step 0): send them now,
        # so a crash before `finish_ready` loses the leader's entries but not the messages.
        node.held_sent = rd.send_before_persist
        for m in rd.messages[: rd.send_before_persist]:
            self._send(m)
        return True

    def finish_ready(self, node_id: str) -> None:
        """Process the held Ready in the contract's order: persist, send, apply, advance."""
        node = self.nodes[node_id]
        r, rd = node.core, node.held
        assert rd is not None
        sent, node.held, node.held_sent = node.held_sent, None, 0
        self.log(f"> {node_id} handling Ready")
        self._persist(node, rd)
        for m in rd.messages[sent:]:
            self._send(m)
        self._apply(node, rd)
        r.advance(rd)
        if self.checker is not None and self._durable_is_current(node):
            self.checker.observe(view_of(node))
        self.report(node_id)

    @staticmethod
    def _durable_is_current(node: SimNode) -> bool:
        """Is the core's term, vote, commit and log all durable? (The checker's contract:
        observe durable state only. Steps taken while a Ready was held may be ahead.)"""
        r, s = node.core, node.storage
        snapshot_index = s.snapshot.index if s.snapshot else 0
        return (
            r.hard_state() == s.hard
            and r.log.unstable_from == r.last_index + 1
            and r.snapshot_meta.index == snapshot_index
        )

    def _persist(self, node: SimNode, rd: Ready) -> None:
        s = node.storage
        if rd.soft_state is not None:
            leader = rd.soft_state.leader
            self.log(f"  Lead:{leader} State:{rd.soft_state.role}")
        if rd.hard_state is not None:
            hs = rd.hard_state
            self.log(f"  HardState term={hs.term} vote={hs.vote} commit={hs.commit}")
            s.hard = hs
        for chunk in rd.snapshot_chunks:
            if chunk.offset == 0:
                s.staging_meta, s.staging = chunk.meta, bytearray()
            assert s.staging_meta == chunk.meta and len(s.staging) == chunk.offset
            s.staging += chunk.data
            self.log(
                f"  SnapshotChunk: snap={chunk.meta.term}/{chunk.meta.index} "
                f"offset={chunk.offset} len={len(chunk.data)}{' last' if chunk.last else ''}"
            )
        if rd.snapshot is not None:
            meta = rd.snapshot
            assert s.staging_meta == meta and len(s.staging) == meta.size_bytes
            s.snapshot, s.snapshot_data = meta, bytes(s.staging)
            s.entries = []
            s.sm = decode_sm(s.snapshot_data)
            s.applied = meta.index
            s.staging_meta, s.staging = None, bytearray()
            self.log(f"  Snapshot installed: {fmt_meta(meta)}")
            if self.checker is not None:
                self.checker.snapshot_applied(node.id, node.boot, meta.index, meta.term)
        if rd.entries:
            self.log(f"  Entries: {fmt_entries(rd.entries, long=True)}")
            s.append(rd.entries)
        if rd.hard_state is not None:
            assert s.hard.commit >= (s.snapshot.index if s.snapshot else 0)

    def _apply(self, node: SimNode, rd: Ready) -> None:
        s = node.storage
        if rd.committed_entries:
            self.log(f"  Committed: {fmt_entries(rd.committed_entries)}")
        for entry in rd.committed_entries:
            if entry.index <= s.applied:
                continue  # a snapshot installed meanwhile covers it
            assert entry.index == s.applied + 1, (entry.index, s.applied)
            if entry.kind is EntryKind.NORMAL and entry.data:
                s.sm.append(entry.data)
            s.applied = entry.index
            if self.checker is not None:
                digest = entry_digest(entry)
                self.checker.applied(node.id, node.boot, entry.index, entry.term, digest)
            if self.on_apply is not None:
                self.on_apply(node.id, entry)
        for rs in rd.read_states:
            self.log(f"  ReadState: {rs.request_id.decode(errors='replace')} index={rs.index}")
            self.read_results.setdefault(node.id, []).append((rs.request_id, rs.index))
            if self.on_read is not None:
                self.on_read(node.id, rs.request_id, rs.index)
        for rid in rd.dropped_reads:
            self.log(f"  DroppedRead: {rid.decode(errors='replace')}")
            self.dropped_reads.setdefault(node.id, []).append(rid)
        for m in rd.messages:
            self.log(f"  {fmt_msg(m)}")

    def _connected(self, a: str, b: str) -> bool:
        ga = next((g for g in self.groups if a in g), None)
        gb = next((g for g in self.groups if b in g), None)
        return ga is gb

    def _send(self, m: Message) -> None:
        if self._connected(m.frm, m.to):
            self.queue.append(m)

    def deliver(self, node_id: str, pick: Callable[[Message], bool] | None = None) -> int:
        """Step `node_id` with its queued messages (those `pick` accepts), in order."""
        mine = [m for m in self.queue if m.to == node_id and (pick is None or pick(m))]
        if not mine:
            return 0
        ids = {id(m) for m in mine}
        self.queue = [m for m in self.queue if id(m) not in ids]
        for m in mine:
            self.step(node_id, m)
        return len(mine)

    def step(self, node_id: str, m: Message) -> None:
        node = self.nodes[node_id]
        if node.raft is None:
            return  # a crashed node hears nothing
        self.log(f"{fmt_msg(m)}")
        try:
            node.raft.step(m)
        except RemoteProtocolError as e:
            self.protocol_errors += 1
            self.log(f"  RemoteProtocolError: {e}")
        self.report(node_id)

    def drop(self, pick: Callable[[Message], bool]) -> int:
        before = len(self.queue)
        self.queue = [m for m in self.queue if not pick(m)]
        return before - len(self.queue)

    def stabilize(self, ids: list[str] | None = None) -> None:
        """Process Readies and deliver messages among `ids` until nothing moves."""
        chosen = ids or self.ids()
        for _ in range(MAX_STABILIZE_ROUNDS):
            moved = False
            for node_id in chosen:
                if self.nodes[node_id].raft is not None and self.process_ready(node_id):
                    moved = True
            for node_id in chosen:
                if self.deliver(node_id, lambda m: m.frm in chosen):
                    moved = True
            if not moved:
                return
        raise AssertionError(f"stabilize did not converge in {MAX_STABILIZE_ROUNDS} rounds")

    def spread_commit(self, leader: str) -> None:
        """One heartbeat interval of `leader`, then stabilize: the followers learn its commit
        index (a new commit is not broadcast, it rides the next append or heartbeat)."""
        self.tick(leader, self.nodes[leader].core.config.heartbeat_ticks)
        self.stabilize()

    # --- faults ----------------------------------------------------------------------------

    def partition(self, groups: list[list[str]]) -> None:
        named = {n for g in groups for n in g}
        rest = [n for n in self.ids() if n not in named]
        self.groups = [set(g) for g in groups] + ([set(rest)] if rest else [])
        self.queue = [m for m in self.queue if self._connected(m.frm, m.to)]

    def heal(self) -> None:
        self.groups = []

    def crash(self, node_id: str) -> None:
        """Lose the core's memory (and any Ready not processed); storage survives."""
        self.nodes[node_id].raft = None
        self.nodes[node_id].held = None
        self.nodes[node_id].held_sent = 0
        self.queue = [m for m in self.queue if m.to != node_id]

    def restart(self, node_id: str) -> None:
        node = self.nodes[node_id]
        node.boot += 1
        node.start()
        self._soft[node_id] = self._soft_of(node)
        self.log(f"{node_id} restarted: {fmt_state(node.core)}")

    def compact(self, node_id: str) -> SnapshotMeta | None:
        """The application snapshots at its applied index and compacts the log."""
        node = self.nodes[node_id]
        r, s = node.core, node.storage
        index = s.applied
        if index <= r.snapshot_meta.index:
            self.log(f"{node_id}: nothing to compact")
            return None
        data = encode_sm(s.sm)
        term = r.log.term(index)
        assert term is not None
        meta = SnapshotMeta(index, term, r.conf_at(index), len(data))
        s.snapshot, s.snapshot_data = meta, data
        s.entries = [e for e in s.entries if e.index > index]
        r.compact(meta)
        self.log(f"{node_id} compacted to {fmt_meta(meta)}")
        return meta


def _id_key(node_id: str) -> tuple[int, str]:
    return (int(node_id), "") if node_id.isdigit() else (1 << 30, node_id)


# --- formatting --------------------------------------------------------------------------------


def fmt_entry(e: Entry, long: bool = False) -> str:
    text = f"{e.term}/{e.index}"
    if e.kind is EntryKind.CONF_CHANGE:
        cc = ConfChange.decode(e.data)
        return f"{text} {cc.op.name.lower()}({cc.node_id})"
    if long or e.data:
        text += f" {e.data.decode(errors='replace')!r}" if e.data else ' ""'
    return text


def fmt_entries(entries: Iterable[Entry], long: bool = False) -> str:
    items = list(entries)
    if len(items) > 4:
        return (
            f"{fmt_entry(items[0], long)} ... {fmt_entry(items[-1], long)} ({len(items)} entries)"
        )
    return ", ".join(fmt_entry(e, long) for e in items)


def fmt_meta(meta: SnapshotMeta) -> str:
    conf = meta.conf
    learners = f" learners={','.join(conf.learners)}" if conf.learners else ""
    return (
        f"index={meta.index} term={meta.term} voters={','.join(conf.voters)}{learners} "
        f"size={meta.size_bytes}"
    )


def fmt_msg(m: Message) -> str:
    head = f"{m.frm}->{m.to}"
    if isinstance(m, VoteRequest):
        kind = "PreVote" if m.pre else "Vote"
        extra = " transfer" if m.transfer else ""
        return f"{head} {kind} term={m.term} last={m.last_log_term}/{m.last_log_index}{extra}"
    if isinstance(m, VoteResponse):
        kind = "PreVoteResp" if m.pre else "VoteResp"
        return f"{head} {kind} term={m.term} {'granted' if m.granted else 'rejected'}"
    if isinstance(m, AppendRequest):
        ents = f" [{fmt_entries(m.entries)}]" if m.entries else ""
        return f"{head} App term={m.term} prev={m.prev_term}/{m.prev_index} commit={m.commit}{ents}"
    if isinstance(m, AppendResponse):
        if m.reject:
            return (
                f"{head} AppResp term={m.term} rejected index={m.index} "
                f"hint={m.hint_term}/{m.hint_index}"
            )
        return f"{head} AppResp term={m.term} index={m.index}"
    if isinstance(m, Heartbeat):
        ctx = f" ctx={m.context.hex()}" if m.context else ""
        return f"{head} Heartbeat term={m.term} commit={m.commit}{ctx}"
    if isinstance(m, HeartbeatResponse):
        ctx = f" ctx={m.context.hex()}" if m.context else ""
        return f"{head} HeartbeatResp term={m.term}{ctx}"
    if isinstance(m, SnapshotChunk):
        last = " last" if m.last else ""
        return (
            f"{head} SnapChunk term={m.term} snap={m.meta.term}/{m.meta.index} "
            f"offset={m.offset} len={len(m.data)}{last}"
        )
    if isinstance(m, SnapshotChunkResponse):
        return f"{head} SnapChunkResp term={m.term} snap={m.snapshot_index} next={m.next_offset}"
    if isinstance(m, TimeoutNow):
        return f"{head} TimeoutNow term={m.term}"
    if isinstance(m, ReadIndexRequest):
        return f"{head} ReadIndex term={m.term} req={m.context.decode(errors='replace')}"
    if isinstance(m, ReadIndexResponse):
        result = "rejected" if m.reject else f"index={m.index}"
        return (
            f"{head} ReadIndexResp term={m.term} req={m.context.decode(errors='replace')} {result}"
        )
    raise AssertionError(f"unknown message {m!r}")


def fmt_state(r: Raft) -> str:
    return (
        f"{r.role_name} term={r.term} vote={r.vote} leader={r.leader} commit={r.commit} "
        f"applied={r.applied} last={r.last_index} snap={r.snapshot_meta.index}"
    )


def make_config(node_id: str, **overrides: Any) -> RaftConfig:
    return replace(RaftConfig(node_id), **overrides)
