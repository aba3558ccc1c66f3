"""The Raft protocol as a pure state machine: `tick()`, `step(message)`, local requests in,
`Ready` out (etcd-io/raft `raft.go`, in our own Python).

Owns: the node's term, vote, role, leader; the log (log.py); the membership in force; the
leader's progress table (progress.py) and ReadIndex rounds (readonly.py); the outbox that
becomes the next `Ready`. Nothing here does I/O: randomness comes in through `RandomSource`,
snapshot bytes through `SnapshotReader`, time as `tick()` calls.

Proposals are appended to the leader's log at once but sent at `ready()`: one append per
follower carrying every entry proposed since the last Ready (within the append and in-flight
bounds). etcd's `bcastAppend` is per MsgProp batch; our proposals arrive one call each, and a
broadcast per call cost a driver that hands over 16 proposals per Ready 16 appends per
follower instead of one (BENCHMARKS.md, "Raft in the simulator").

A new commit index is not broadcast: followers learn it from the next append or heartbeat
(every `heartbeat_ticks`), as the paper has it (§5.3: "it includes that index in future
AppendEntries RPCs (including heartbeats) so that the other servers eventually find out"), and
as hashicorp/raft does. etcd sends an empty append to every follower on each commit instead;
with one client that round doubled the messages per write and woke both followers while the
leader applied and replied (p50 1.39 -> 1.15-1.19 ms without it, 3 processes on 2 cores:
BENCHMARKS.md, "The store, one client"). What it would buy, followers applying sooner, no
reader waits for: a follower's ReadIndex round is answered by heartbeats that carry the commit
index. The exception is a leader that steps down after its own removal commits: it tells the
followers first.

Roles (`Role`) and what moves between them:

| from          | event                                         | to            |
|---------------|-----------------------------------------------|---------------|
| follower      | election timeout (pre_vote)                   | precandidate  |
| follower      | election timeout (no pre_vote), TimeoutNow    | candidate     |
| precandidate  | quorum of pre-votes                           | candidate     |
| candidate     | quorum of votes                               | leader        |
| any           | message with a higher term (see `_step_term`) | follower      |
| (pre)candidate| append/heartbeat/snapshot of its term         | follower      |
| leader        | CheckQuorum fails; its removal committed      | follower      |

Membership: one server at a time (thesis §4.1), not joint consensus. Adding or removing one
voter changes the majority so that any old majority and any new majority intersect, which is
all safety needs, with one entry per change and no intermediate joint state to get right.
A change takes effect when its entry is *appended* (not when committed): every node uses the
latest configuration in its log, so the leader counts the new majority for the change's own
entry (the thesis's rule; a truncated change reverts: membership.py). Why at append: a
node always knows its log, not always what is committed, so "the latest configuration in my
log" is a rule every node can apply on its own, and a new member starts receiving entries
(and an old one stops counting) at once, without a second round. Two rules keep it
safe: a leader accepts a change only when the previous one is committed, and only after it has
committed an entry of its own term (the fix Ongaro posted to raft-dev in 2015: without it, a
new leader could append a change that conflicts with an uncommitted change of a previous
term). Learners (non-voters) catch up first: a learner is promoted only when its log is
within `promote_max_lag_entries` of the commit index and it answered this election timeout,
so a promotion does not stall commits. A leader
that removes itself keeps leading (without counting itself) until the removal is committed,
then steps down (thesis §4.2.2), after telling the followers the commit and sending TimeoutNow
to the most up-to-date voter, so the cluster need not wait out an election timeout.

Errors: a caller's misuse raises a `RaftError` subclass and changes nothing; a peer's bad
message raises `RemoteProtocolError` before any state changes (the driver drops and counts it);
an `AssertionError` is a bug in this module. Invariants asserted: terms never go back; one
vote per term; commit never decreases nor passes the last index; applied <= commit; a leader
never truncates its log; match <= last index; one conf change at a time.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol

from detsim.raft.core.config import RaftConfig
from detsim.raft.core.errors import (
    CompactionRejected,
    ConfChangeRejected,
    NotLeader,
    ProposalDropped,
    RaftError,
    ReadIndexDropped,
    RemoteProtocolError,
    TransferRejected,
)
from detsim.raft.core.log import RaftLog
from detsim.raft.core.membership import (
    BOOTSTRAP_TERM,
    ConfHistory,
    bootstrap_entries,
    check_conf_change,
)
from detsim.raft.core.messages import (
    MAX_REQUEST_ID_BYTES,
    AppendRequest,
    AppendResponse,
    ConfChange,
    ConfChangeOp,
    ConfState,
    Entry,
    EntryKind,
    HardState,
    Heartbeat,
    HeartbeatResponse,
    Message,
    ReadIndexRequest,
    ReadIndexResponse,
    SnapshotChunk,
    SnapshotChunkResponse,
    SnapshotMeta,
    TimeoutNow,
    VoteRequest,
    VoteResponse,
)
from detsim.raft.core.progress import Progress, ProgressState
from detsim.raft.core.readonly import ReadOnly, ReadRound
from detsim.raft.core.ready import ReadState, Ready, SoftState
from detsim.raft.core.validate import validate_message

#: What a leader may send before its own persist step (ready.py `send_before_persist`): what
#: carries its log and commit index outwards, never a vote or an acknowledgement.
_EARLY_MESSAGE_TYPES: Final = (AppendRequest, Heartbeat, SnapshotChunk)


class RandomSource(Protocol):
    """What the core needs of a random generator (a seeded `random.Random` fits)."""

    def randrange(self, start: int, /) -> int: ...


class SnapshotReader(Protocol):
    """The application's read-only view of its latest snapshot (like etcd's Storage)."""

    def read_chunk(self, meta: SnapshotMeta, offset: int, size_bytes: int) -> bytes:
        """Exactly `size_bytes` bytes of the snapshot `meta` at `offset`."""
        ...


class Role(enum.Enum):
    FOLLOWER = "follower"
    PRECANDIDATE = "precandidate"
    CANDIDATE = "candidate"
    LEADER = "leader"


@dataclass(slots=True)
class _IncomingSnapshot:
    """A follower's side of a chunked InstallSnapshot: the next offset it expects."""

    meta: SnapshotMeta
    expected_offset: int = 0


class Raft:
    """One node's Raft protocol state. See the module header."""

    def __init__(
        self,
        config: RaftConfig,
        rng: RandomSource,
        *,
        hard_state: HardState | None = None,
        snapshot: SnapshotMeta | None = None,
        entries: Sequence[Entry] = (),
        applied: int = 0,
        initial_conf: ConfState | None = None,
        snapshot_reader: SnapshotReader | None = None,
    ) -> None:
        """Restore from durable state: the hard state, the latest snapshot (or None), the log
        entries after it, the state machine's applied index. A fresh node (all empty) with
        `initial_conf` bootstraps a new cluster; without it, it waits to be added (a learner
        joining). `initial_conf` is ignored when there is durable state."""
        config.validate()
        self.config = config
        self.id = config.node_id
        self._rng = rng
        self._reader = snapshot_reader
        hard_state = hard_state or HardState()
        # Fresh: nothing durable but perhaps the bootstrap's hard state (a crash between
        # writing it and the bootstrap entries): bootstrapping again writes the same log.
        fresh = (
            snapshot is None
            and not entries
            and hard_state.vote is None
            and hard_state.term <= BOOTSTRAP_TERM
        )
        bootstrapped = fresh and initial_conf is not None and bool(initial_conf.voters)
        if bootstrapped:
            assert initial_conf is not None
            entries = bootstrap_entries(initial_conf)
            hard_state = HardState(BOOTSTRAP_TERM, None, len(entries))
        self.term = hard_state.term
        self.vote = hard_state.vote
        self.log = RaftLog(snapshot, entries, hard_state.commit, applied)
        if bootstrapped:
            self.log.unstable_from = 1  # the bootstrap entries are not durable yet
        self.role = Role.FOLLOWER
        self.leader: str | None = None
        # Membership: the snapshot's conf, then one (index, conf after) per CONF_CHANGE entry.
        self._confs = ConfHistory(self.log.snapshot.index, self.log.snapshot.conf)
        self._confs.track(self.log.slice(self.log.first_index(), self.log.last_index() + 1))
        self._election_elapsed = 0
        self._heartbeat_elapsed = 0
        self._ticks = 0  # ticks since start: the leader's clock for Progress.last_heard_tick
        self._randomized_timeout = 0
        self._randomize_election_timeout()
        self._votes: dict[str, bool] = {}
        # Leader-only state.
        self._progress: dict[str, Progress] = {}
        self._transferee: str | None = None
        self._term_start_index = 0  # index of the leader's empty entry of its term
        self._pending_conf_index = 0
        self._uncommitted_bytes = 0
        self._uncommitted_entries = 0
        # Proposals appended since the last Ready that no append has carried yet: `ready()`
        # sends them, merged (see `_flush_proposals`).
        self._proposals_unsent = False
        self._readonly = ReadOnly(config.max_pending_reads)
        self._reads_waiting_commit: list[tuple[str, bytes]] = []
        # Follower-only state.
        self._incoming: _IncomingSnapshot | None = None
        # The outbox: what the next Ready hands out.
        self._messages: list[Message] = []
        self._chunks: list[SnapshotChunk] = []
        self._pending_snapshot: SnapshotMeta | None = None
        self._read_states: list[ReadState] = []
        self._dropped_reads: list[bytes] = []
        self._prev_hard = HardState() if bootstrapped else hard_state
        self._prev_soft = SoftState(None, self.role_name)
        self._ready_out: Ready | None = None
        self.dropped_messages = 0

    # =========================================================================================
    # Read-only state for observers and checkers

    @property
    def role_name(self) -> str:
        """leader | follower | candidate | precandidate | learner (DESIGN's RAFT.STATUS)."""
        if self.role is Role.FOLLOWER and self.id in self.conf.learners:
            return "learner"
        return self.role.value

    @property
    def commit(self) -> int:
        return self.log.committed

    @property
    def applied(self) -> int:
        return self.log.applied

    @property
    def last_index(self) -> int:
        return self.log.last_index()

    @property
    def snapshot_meta(self) -> SnapshotMeta:
        return self.log.snapshot

    @property
    def conf(self) -> ConfState:
        """The membership in force: the last CONF_CHANGE entry in the log, else the snapshot's."""
        return self._confs.conf

    def conf_at(self, index: int) -> ConfState:
        """The membership in force after the entry at `index` (>= the snapshot's index)."""
        return self._confs.conf_at(index)

    def hard_state(self) -> HardState:
        return HardState(self.term, self.vote, self.log.committed)

    def entries(self, lo: int, hi: int) -> list[Entry]:
        """Entries [lo, hi) still held (lo > snapshot index, hi <= last index + 1)."""
        return self.log.slice(lo, hi)

    def progress(self) -> dict[str, Progress]:
        """The leader's progress table (empty unless leader). Do not mutate."""
        return self._progress

    def status(self) -> dict[str, Any]:
        """The fields of DESIGN's RAFT.STATUS."""
        conf = self.conf
        return {
            "id": self.id,
            "role": self.role_name,
            "term": self.term,
            "leader": self.leader,
            "commit_index": self.log.committed,
            "applied_index": self.log.applied,
            "last_log_index": self.log.last_index(),
            "snapshot_index": self.log.snapshot.index,
            "voters": list(conf.voters),
            "learners": list(conf.learners),
        }

    def _promotable(self) -> bool:
        return self.id in self.conf.voters

    def _quorum(self) -> int:
        return len(self.conf.voters) // 2 + 1

    # =========================================================================================
    # Inputs: time

    def tick(self) -> None:
        """One unit of logical time (the driver calls it at a fixed period)."""
        self._ticks += 1
        if self.role is Role.LEADER:
            self._tick_leader()
        else:
            self._tick_election()

    def _tick_election(self) -> None:
        self._election_elapsed += 1
        if self._promotable() and self._election_elapsed >= self._randomized_timeout:
            self._election_elapsed = 0
            self._hup(transfer=False)

    def _tick_leader(self) -> None:
        self._heartbeat_elapsed += 1
        self._election_elapsed += 1
        if self._election_elapsed >= self.config.election_ticks:
            self._election_elapsed = 0
            if self.config.check_quorum and not self._quorum_active():
                self._become_follower(self.term, None)
                return
            self._transferee = None  # a transfer that took an election timeout is abandoned
        self._tick_snapshot_streams()
        if self._heartbeat_elapsed >= self.config.heartbeat_ticks:
            self._heartbeat_elapsed = 0
            self._broadcast_heartbeat(b"")

    def _quorum_active(self) -> bool:
        """CheckQuorum: did a quorum of voters (self included) talk to us this round?"""
        active = 0
        for node_id in self.conf.voters:
            pr = self._progress[node_id]
            if node_id == self.id or pr.recent_active:
                active += 1
        for node_id, pr in self._progress.items():
            pr.recent_active = node_id == self.id
        return active >= self._quorum()

    def _randomize_election_timeout(self) -> None:
        ticks = self.config.election_ticks
        self._randomized_timeout = ticks + self._rng.randrange(ticks)

    # =========================================================================================
    # Inputs: local requests

    def campaign(self) -> None:
        """Start an election now (PreVote first if configured). For tests and operators."""
        if self.role is Role.LEADER:
            return
        if not self._promotable():
            raise RaftError(f"{self.id} is not a voter: it cannot campaign")
        self._hup(transfer=False)

    def propose(self, data: bytes) -> int:
        """Append a NORMAL entry; its index. Raises NotLeader / ProposalDropped."""
        self._check_can_propose(len(data))
        return self._append_proposal(EntryKind.NORMAL, data)

    def propose_conf_change(self, change: ConfChange) -> int:
        """Append a CONF_CHANGE entry (takes effect at once); its index. Raises
        ConfChangeRejected when a change is pending or the change makes no sense."""
        data = change.encode()
        self._check_can_propose(len(data))
        if self.log.committed < self._term_start_index:
            raise ConfChangeRejected("the leader has not committed an entry of its term yet")
        if self._pending_conf_index > self.log.committed:
            raise ConfChangeRejected("a configuration change is still uncommitted")
        check_conf_change(self.conf, change)
        assert self._confs.last_change_index() <= self.log.committed, "two conf changes in flight"
        if change.op is ConfChangeOp.PROMOTE:
            self._check_caught_up(change.node_id)
        index = self._append_proposal(EntryKind.CONF_CHANGE, data)
        self._pending_conf_index = index
        return index

    def _check_caught_up(self, learner: str) -> None:
        """Thesis §4.2.1: a learner becomes a voter only once caught up, else the new
        majority may need a node that cannot acknowledge anything yet (or is down)."""
        pr = self._progress[learner]
        behind = self.log.committed - pr.match
        if behind > self.config.promote_max_lag_entries:
            raise ConfChangeRejected(f"{learner} is {behind} entries behind the commit index")
        # Heard within the last election timeout, a sliding window: not `recent_active`, which
        # CheckQuorum clears at each round's start, so that a healthy learner was refused for a
        # heartbeat interval after every round boundary (~5% of PROMOTEs in the kv tests).
        silent_ticks = self._ticks - pr.last_heard_tick
        if self.config.check_quorum and silent_ticks >= self.config.election_ticks:
            raise ConfChangeRejected(
                f"{learner} has not answered in an election timeout "
                f"({self.config.election_ticks} ticks)"
            )

    def _check_can_propose(self, size_bytes: int) -> None:
        if self.role is not Role.LEADER:
            raise NotLeader(self.leader)
        if size_bytes > self.config.max_entry_bytes:
            # An entry that no append can carry (the frame bound) would wedge replication.
            raise ProposalDropped(
                f"entry of {size_bytes} bytes exceeds max_entry_bytes={self.config.max_entry_bytes}"
            )
        if self._transferee is not None:
            raise ProposalDropped(f"leadership transfer to {self._transferee} in progress")
        if self._uncommitted_entries >= self.config.max_uncommitted_entries:
            raise ProposalDropped(f"{self._uncommitted_entries} entries uncommitted (bound)")
        if self._uncommitted_bytes + size_bytes > self.config.max_uncommitted_bytes:
            raise ProposalDropped(f"{self._uncommitted_bytes} bytes uncommitted (bound)")

    def _append_proposal(self, kind: EntryKind, data: bytes) -> int:
        entry = Entry(self.term, self.log.last_index() + 1, kind, data)
        self._uncommitted_entries += 1
        self._uncommitted_bytes += entry.size_bytes()
        self._leader_append([entry])
        # No append now: `ready()` sends every proposal since the last Ready in one append per
        # follower (etcd's bcastAppend is per MsgProp batch; our proposals come one per call).
        # (The role check mirrors `_become_leader`: an append that commits our own removal
        # steps us down, and a follower sends no appends.)
        self._proposals_unsent = self.role is Role.LEADER
        return entry.index

    def transfer_leadership(self, target: str) -> None:
        """Hand leadership to `target` (TimeoutNow once its log is up to date). Proposals are
        refused meanwhile; abandoned after an election timeout."""
        if self.role is not Role.LEADER:
            raise NotLeader(self.leader)
        if target == self.id:
            self._transferee = None  # a transfer back to ourselves cancels a pending one
            return
        if target == self._transferee:
            return
        if target not in self.conf.voters:
            raise TransferRejected(f"{target} is not a voter")
        self._transferee = target
        self._election_elapsed = 0  # the transfer has one election timeout to finish
        if self._progress[target].match == self.log.last_index():
            self._send(TimeoutNow(self.id, target, self.term))
        else:
            self._send_append(target, send_if_empty=True)

    def read_index(self, request_id: bytes) -> None:
        """Register a linearizable read; a `ReadState(request_id, index)` comes in a Ready.
        Raises ReadIndexDropped when no leader is known or too many reads are pending."""
        if len(request_id) > MAX_REQUEST_ID_BYTES:
            raise ReadIndexDropped(f"request id longer than {MAX_REQUEST_ID_BYTES} bytes")
        if self.role is Role.LEADER:
            self._leader_read(self.id, request_id)
        elif self.leader is not None:
            self._send(ReadIndexRequest(self.id, self.leader, self.term, request_id))
        else:
            raise ReadIndexDropped("no leader known")

    def compact(self, meta: SnapshotMeta) -> None:
        """The application made a snapshot at meta.index (<= applied): drop the log prefix."""
        if not self.log.snapshot.index < meta.index <= self.log.applied:
            raise CompactionRejected(
                f"snapshot index {meta.index} not in ({self.log.snapshot.index}, "
                f"{self.log.applied}]"
            )
        if self.log.term(meta.index) != meta.term or meta.conf != self.conf_at(meta.index):
            raise CompactionRejected(f"snapshot meta does not match the log: {meta}")
        if self._reader is None:
            raise CompactionRejected("no SnapshotReader: followers could not catch up")
        self._confs.compact(meta)
        self.log.compact(meta)
        for node_id in sorted(self._progress):
            pr = self._progress[node_id]
            if pr.stream is not None and pr.stream.meta != meta:
                # The reader serves only the latest snapshot: restart the stream on it.
                pr.become_snapshot(meta)
                self._pump_snapshot(node_id, pr)

    # =========================================================================================
    # Inputs: messages

    def step(self, m: Message) -> None:
        """Handle one message from a peer. Raises RemoteProtocolError (state untouched) if the
        message is one no correct peer sends."""
        validate_message(m, self.id)
        if not self._step_term(m):
            return
        if self.role is Role.LEADER:
            self._step_leader(m)
        elif self.role is Role.FOLLOWER:
            self._step_follower(m)
        else:
            self._step_candidate(m)

    def _step_term(self, m: Message) -> bool:
        """Terms first (§5.1). False if the message is done with (stale or ignored)."""
        if m.term > self.term:
            if isinstance(m, VoteRequest):
                in_lease = (
                    self.config.check_quorum
                    and self.leader is not None
                    and self._election_elapsed < self.config.election_ticks
                )
                if in_lease and not m.transfer:
                    # We heard from a live leader recently: this candidate is disruptive
                    # (thesis §4.2.3). Neither our term nor our vote moves.
                    return False
                if m.pre:
                    return True  # a PreVote never changes our term
                self._become_follower(m.term, None)
            elif isinstance(m, VoteResponse) and m.pre and m.granted:
                return True  # pre-votes come back at the term we would take
            elif isinstance(m, AppendRequest | Heartbeat | SnapshotChunk):
                self._become_follower(m.term, m.frm)
            else:
                self._become_follower(m.term, None)
            return True
        if m.term < self.term:
            if isinstance(m, AppendRequest | Heartbeat) and (
                self.config.check_quorum or self.config.pre_vote
            ):
                # A stale leader (e.g. back from a partition) might never hear our higher
                # term otherwise: with PreVote/CheckQuorum nobody campaigns against it.
                self._send(AppendResponse(self.id, m.frm, self.term, index=0, reject=True))
            elif isinstance(m, VoteRequest) and m.pre:
                self._send(VoteResponse(self.id, m.frm, self.term, granted=False, pre=True))
            return False
        return True

    def _step_vote_request(self, m: VoteRequest) -> None:
        can_vote = (
            self.vote == m.frm
            or (self.vote is None and self.leader is None)
            or (m.pre and m.term > self.term)
        )
        if can_vote and self.log.is_up_to_date(m.last_log_index, m.last_log_term):
            self._send(VoteResponse(self.id, m.frm, m.term, granted=True, pre=m.pre))
            if not m.pre:
                assert self.vote in (None, m.frm), "two votes in one term"
                self._election_elapsed = 0
                self.vote = m.frm
        else:
            self._send(VoteResponse(self.id, m.frm, self.term, granted=False, pre=m.pre))

    # --- followers -----------------------------------------------------------------------

    def _step_follower(self, m: Message) -> None:
        if isinstance(m, AppendRequest):
            self._heard_from_leader(m.frm)
            self._handle_append(m)
        elif isinstance(m, Heartbeat):
            self._heard_from_leader(m.frm)
            self._handle_heartbeat(m)
        elif isinstance(m, SnapshotChunk):
            self._heard_from_leader(m.frm)
            self._handle_chunk(m)
        elif isinstance(m, VoteRequest):
            self._step_vote_request(m)
        elif isinstance(m, TimeoutNow):
            if self._promotable():
                self._hup(transfer=True)
        elif isinstance(m, ReadIndexRequest):
            # Forwarded to a node that is not leader (any more): the requester retries.
            self._send(ReadIndexResponse(self.id, m.frm, self.term, m.context, reject=True))
        elif isinstance(m, ReadIndexResponse):
            if m.reject:
                self._dropped_reads.append(m.context)
            else:
                self._read_states.append(ReadState(m.context, m.index))

    def _heard_from_leader(self, leader: str) -> None:
        self._election_elapsed = 0
        self.leader = leader

    def _handle_append(self, m: AppendRequest) -> None:
        if m.prev_index < self.log.committed:
            # Stale or duplicated: everything up to commit is known to match.
            self._send(AppendResponse(self.id, m.frm, self.term, index=self.log.committed))
            return
        appended = self.log.maybe_append(m.prev_index, m.prev_term, m.commit, m.entries)
        if appended is not None:
            last_new, conflict = appended
            # Log Matching (§5.3): we now hold the leader's entries through last_new.
            leaders_term = m.entries[-1].term if m.entries else m.prev_term
            assert self.log.term(last_new) == leaders_term, (
                f"Log Matching: index {last_new} holds term {self.log.term(last_new)} after an "
                f"append of term {leaders_term} from {m.frm}"
            )
            if conflict:
                self._track_conf_from(conflict)
            self._send(AppendResponse(self.id, m.frm, self.term, index=last_new))
            return
        # Fast backtracking (etcd): point the leader at the last index of ours whose term is
        # <= its prev_term, so a whole divergent term is skipped in one round trip.
        hint_index, hint_term = self.log.find_conflict_by_term(
            min(m.prev_index, self.log.last_index()), m.prev_term
        )
        self._send(
            AppendResponse(
                self.id,
                m.frm,
                self.term,
                index=m.prev_index,
                reject=True,
                hint_index=hint_index,
                hint_term=hint_term,
            )
        )

    def _handle_heartbeat(self, m: Heartbeat) -> None:
        # The leader sends min(its commit, our match), so this never passes our log unless
        # the leader is broken: clamp rather than trust it.
        self.log.commit_to(min(m.commit, self.log.last_index()))
        self._send(HeartbeatResponse(self.id, m.frm, self.term, m.context))

    def _handle_chunk(self, m: SnapshotChunk) -> None:
        meta = m.meta
        if meta.index <= self.log.committed:
            self._incoming = None
            self._send(AppendResponse(self.id, m.frm, self.term, index=self.log.committed))
            return
        if self.log.match_term(meta.index, meta.term):
            # We hold the snapshot's last entry: just commit up to it (etcd's fast-forward).
            self._incoming = None
            self.log.commit_to(meta.index)
            self._send(AppendResponse(self.id, m.frm, self.term, index=meta.index))
            return
        incoming = self._incoming
        if incoming is None or incoming.meta != meta:
            if m.offset != 0 or self._pending_snapshot is not None:
                # Only offset 0 starts a stream; and a completed snapshot waiting for the
                # next Ready must not share the staging file with a new one.
                self._send(
                    SnapshotChunkResponse(self.id, m.frm, self.term, meta.index, 0, gap=True)
                )
                return
            incoming = self._incoming = _IncomingSnapshot(meta)
        if m.offset != incoming.expected_offset:
            # Past what we expect: a chunk was lost (gap). Before it: a resent chunk we hold.
            gap = m.offset > incoming.expected_offset
            self._send(
                SnapshotChunkResponse(
                    self.id, m.frm, self.term, meta.index, incoming.expected_offset, gap=gap
                )
            )
            return
        self._chunks.append(m)
        incoming.expected_offset += len(m.data)
        if not m.last:
            self._send(
                SnapshotChunkResponse(
                    self.id, m.frm, self.term, meta.index, incoming.expected_offset
                )
            )
            return
        self._incoming = None
        self._install_snapshot(meta)
        self._send(AppendResponse(self.id, m.frm, self.term, index=meta.index))

    def _install_snapshot(self, meta: SnapshotMeta) -> None:
        self.log.restore(meta)
        self._confs.reset(meta)
        self._pending_snapshot = meta

    # --- candidates ----------------------------------------------------------------------

    def _hup(self, transfer: bool) -> None:
        if self.config.pre_vote and not transfer:
            self._campaign(pre=True, transfer=False)
        else:
            self._campaign(pre=False, transfer=transfer)

    def _campaign(self, pre: bool, transfer: bool) -> None:
        if pre:
            self._become_precandidate()
            vote_term = self.term + 1
        else:
            self._become_candidate()
            vote_term = self.term
        if self._record_vote(self.id, True):
            return
        for voter in self.conf.voters:
            if voter != self.id:
                self._send(
                    VoteRequest(
                        self.id,
                        voter,
                        vote_term,
                        self.log.last_index(),
                        self.log.last_term(),
                        pre=pre,
                        transfer=transfer,
                    )
                )

    def _record_vote(self, voter: str, granted: bool) -> bool:
        """Tally a (pre-)vote; True if the election was decided (won or lost)."""
        if voter not in self.conf.voters:
            return False
        self._votes.setdefault(voter, granted)
        yes = sum(1 for v in self._votes.values() if v)
        no = len(self._votes) - yes
        if yes >= self._quorum():
            if self.role is Role.PRECANDIDATE:
                self._campaign(pre=False, transfer=False)
            else:
                self._become_leader()
            return True
        if no > len(self.conf.voters) - self._quorum():
            self._become_follower(self.term, None)
            return True
        return False

    def _step_candidate(self, m: Message) -> None:
        if isinstance(m, AppendRequest | Heartbeat | SnapshotChunk):
            # A leader of our term exists (§5.2): return to follower and handle it.
            self._become_follower(m.term, m.frm)
            self._step_follower(m)
        elif isinstance(m, VoteResponse):
            if m.pre == (self.role is Role.PRECANDIDATE):
                self._record_vote(m.frm, m.granted)
        elif isinstance(m, VoteRequest):
            self._step_vote_request(m)
        elif isinstance(m, ReadIndexRequest):
            self._send(ReadIndexResponse(self.id, m.frm, self.term, m.context, reject=True))

    # --- leaders -------------------------------------------------------------------------

    def _step_leader(self, m: Message) -> None:
        if isinstance(m, AppendRequest | Heartbeat | SnapshotChunk):
            raise RemoteProtocolError(f"two leaders in term {self.term}: {m.frm} and {self.id}")
        if isinstance(m, VoteRequest):
            self._step_vote_request(m)
            return
        if isinstance(m, ReadIndexRequest):
            self._leader_read(m.frm, m.context)
            return
        pr = self._progress.get(m.frm)
        if pr is None:
            return  # a node removed meanwhile: its answers no longer matter
        if isinstance(m, AppendResponse):
            if m.index > self.log.last_index() or (m.reject and m.hint_index > m.index):
                raise RemoteProtocolError(f"append response past our log from {m.frm}")
            self._heard_from(pr)
            if m.reject:
                self._handle_append_reject(m, pr)
            else:
                self._handle_append_success(m, pr)
        elif isinstance(m, HeartbeatResponse):
            self._heard_from(pr)
            self._handle_heartbeat_response(m, pr)
        elif isinstance(m, SnapshotChunkResponse):
            if pr.stream is not None and m.next_offset > pr.stream.meta.size_bytes:
                raise RemoteProtocolError(f"snapshot offset past its size from {m.frm}")
            self._heard_from(pr)
            self._handle_chunk_response(m, pr)

    def _heard_from(self, pr: Progress) -> None:
        pr.recent_active = True
        pr.last_heard_tick = self._ticks

    def _handle_append_reject(self, m: AppendResponse, pr: Progress) -> None:
        if m.index == 0 and m.hint_index == 0 and m.hint_term == 0:
            return  # the stale-leader notice carries a higher term; never ours
        next_probe = m.hint_index
        if m.hint_term > 0:
            next_probe, _ = self.log.find_conflict_by_term(m.hint_index, m.hint_term)
        if pr.maybe_decrease_to(m.index, next_probe):
            if pr.state is ProgressState.REPLICATE:
                pr.become_probe()
            self._send_append(m.frm, send_if_empty=True)

    def _handle_append_success(self, m: AppendResponse, pr: Progress) -> None:
        was_paused = pr.is_paused()
        if not pr.maybe_update(m.index):
            return
        if pr.state is ProgressState.PROBE:
            pr.become_replicate()
        elif pr.state is ProgressState.SNAPSHOT:
            assert pr.stream is not None
            if pr.match >= pr.stream.meta.index:
                pr.become_probe()
                pr.become_replicate()
        else:
            pr.inflights.free_le(m.index)
        self._maybe_commit()  # followers learn it with the next append or heartbeat (header)
        if was_paused and self.role is Role.LEADER:
            self._send_append(m.frm, send_if_empty=True)
        if self.role is not Role.LEADER:
            return  # the commit stepped us down (our own removal)
        for _ in range(self.config.max_inflight_appends):
            if not self._send_append(m.frm, send_if_empty=False):
                break
        if m.frm == self._transferee and pr.match == self.log.last_index():
            self._send(TimeoutNow(self.id, m.frm, self.term))

    def _handle_heartbeat_response(self, m: HeartbeatResponse, pr: Progress) -> None:
        pr.probe_sent = False
        if pr.state is ProgressState.REPLICATE and pr.inflights.full():
            pr.inflights.free_first()  # the oldest append may be lost: let one more go
        if pr.match < self.log.last_index():
            self._send_append(m.frm, send_if_empty=True)
        if not m.context or m.frm not in self.conf.voters:
            return
        read_round = self._readonly.ack(m.context, m.frm)
        if read_round is not None and self._round_confirmed(read_round):
            for done in self._readonly.confirm(read_round):
                for requester, request_id in done.requests:
                    self._answer_read(requester, request_id, done.index)

    def _round_confirmed(self, read_round: ReadRound) -> bool:
        voters = self.conf.voters
        return sum(1 for v in voters if v in read_round.acks) >= self._quorum()

    def _handle_chunk_response(self, m: SnapshotChunkResponse, pr: Progress) -> None:
        stream = pr.stream
        if stream is None or m.snapshot_index != stream.meta.index:
            return  # about a stream we no longer run
        if not m.gap:
            if m.next_offset <= stream.acked_offset:
                return  # duplicated or reordered: older than what we know
            stream.acked_offset = m.next_offset
            stream.sent_offset = max(stream.sent_offset, m.next_offset)
            stream.stalled_ticks = 0
        elif m.next_offset == 0 < stream.acked_offset:
            # Below what it acknowledged: the follower restarted (its stream is in memory).
            stream.acked_offset = stream.sent_offset = stream.rewound_at = 0
        elif m.next_offset >= stream.acked_offset and stream.rewound_at != m.next_offset:
            # A chunk was lost: resend from the offset the follower expects, once. Every chunk
            # behind the lost one draws this same answer; resending for each would snowball.
            stream.acked_offset = stream.sent_offset = stream.rewound_at = m.next_offset
            stream.stalled_ticks = 0
        else:
            return
        self._pump_snapshot(m.frm, pr)

    # --- leader: sending -----------------------------------------------------------------

    def _send_append(self, to: str, send_if_empty: bool) -> bool:
        """Send `to` the entries from its next index (or start a snapshot if compacted).
        False if nothing was sent (paused, or nothing to send and not send_if_empty)."""
        pr = self._progress[to]
        if pr.is_paused():
            return False
        last = self.log.last_index()
        assert pr.next <= last + 1, (to, pr.next, last)
        prev_index = pr.next - 1
        prev_term = self.log.term(prev_index)
        if prev_term is None:
            self._start_snapshot(to, pr)
            return True
        entries: list[Entry] = []
        if pr.next <= last:
            hi = min(last + 1, pr.next + self.config.max_entries_per_append)
            entries = self.log.slice(pr.next, hi, self.config.max_append_bytes)
        if not entries and not send_if_empty:
            return False
        # What leaves is our own log: contiguous after prev_index, no term above ours, and a
        # commit index we hold entries for.
        assert not entries or (
            entries[0].index == prev_index + 1
            and entries[-1].index == prev_index + len(entries)
            and prev_term <= entries[0].term <= entries[-1].term <= self.term
        ), (prev_index, prev_term, entries[0], entries[-1], self.term)
        assert self.log.committed <= last, (self.log.committed, last)
        self._send(
            AppendRequest(
                self.id, to, self.term, prev_index, prev_term, tuple(entries), self.log.committed
            )
        )
        pr.sent_entries(len(entries), entries[-1].index if entries else 0)
        return True

    def _broadcast_append(self) -> None:
        for node_id in sorted(self._progress):
            if node_id != self.id:
                self._send_append(node_id, send_if_empty=True)

    def _flush_proposals(self) -> None:
        """Send the proposals appended since the last Ready: per follower, appends from its
        next index (each bounded by max_entries_per_append and max_append_bytes) until it has
        them all or its in-flight window is full. A replicating follower that an append sent
        meanwhile (a commit broadcast, an answer to its ack) already carries them gets
        nothing more; a probed one gets a probe even if empty (a member the latest proposal
        added starts after it: probing at once is what a per-proposal broadcast did); a
        paused one gets them when it answers, as with a per-proposal broadcast."""
        if not self._proposals_unsent:
            return
        self._proposals_unsent = False
        assert self.role is Role.LEADER, "proposals pending outside leadership"
        for node_id in sorted(self._progress):
            if node_id == self.id:
                continue
            send_if_empty = self._progress[node_id].state is ProgressState.PROBE
            for _ in range(self.config.max_inflight_appends):
                if not self._send_append(node_id, send_if_empty):
                    break
                send_if_empty = False

    def _broadcast_heartbeat(self, context: bytes) -> None:
        for node_id in sorted(self._progress):
            if node_id != self.id:
                commit = min(self._progress[node_id].match, self.log.committed)
                self._send(Heartbeat(self.id, node_id, self.term, commit, context))

    def _start_snapshot(self, to: str, pr: Progress) -> None:
        assert self._reader is not None, "log compacted without a SnapshotReader"
        pr.become_snapshot(self.log.snapshot)
        self._pump_snapshot(to, pr)

    def _pump_snapshot(self, to: str, pr: Progress) -> None:
        """Send chunks from the stream's sent offset, keeping at most a window in flight."""
        stream = pr.stream
        assert stream is not None and self._reader is not None
        meta, chunk_bytes = stream.meta, self.config.snapshot_chunk_bytes
        window_bytes = chunk_bytes * self.config.max_snapshot_chunks_in_flight
        for _ in range(self.config.max_snapshot_chunks_in_flight):
            if stream.sent_offset - stream.acked_offset >= window_bytes:
                return
            if stream.sent_offset >= meta.size_bytes and (
                meta.size_bytes > 0 or stream.sent_offset > stream.acked_offset
            ):
                return  # everything sent (an empty snapshot is one empty chunk)
            offset = stream.sent_offset
            size = min(chunk_bytes, meta.size_bytes - offset)
            data = self._reader.read_chunk(meta, offset, size)
            assert len(data) == size, f"snapshot reader returned {len(data)} of {size} bytes"
            last = offset + size == meta.size_bytes
            self._send(SnapshotChunk(self.id, to, self.term, meta, offset, data, last))
            stream.sent_offset = offset + max(size, 1 if last else 0)
            if last:
                return

    def _tick_snapshot_streams(self) -> None:
        for node_id in sorted(self._progress):
            stream = self._progress[node_id].stream
            if stream is None:
                continue
            stream.stalled_ticks += 1
            if stream.stalled_ticks >= self.config.election_ticks:
                # No answer for an election timeout: the window was lost; resend it.
                stream.stalled_ticks = 0
                stream.sent_offset = stream.acked_offset
                stream.rewound_at = stream.acked_offset
                self._pump_snapshot(node_id, self._progress[node_id])

    # --- leader: log and commit ----------------------------------------------------------

    def _leader_append(self, entries: list[Entry]) -> None:
        assert entries[0].index == self.log.last_index() + 1, "a leader never truncates"
        self.log.append(entries)
        self._track_conf(entries)
        # Our own match does not move here: the new entries are not durable until the driver
        # says so (`advance`), and a leader counts itself only for what is on its disk
        # (`_own_entries_durable`). A change that shrinks the voters may still commit now.
        self._maybe_commit()

    def _durable_last_index(self) -> int:
        """The last index of our log that the driver reported durable (`advance`)."""
        return min(self.log.unstable_from - 1, self.log.last_index())

    def _own_entries_durable(self) -> None:
        """The driver made our entries durable: count ourselves for them (thesis §10.2.1; etcd's
        MsgStorageAppendResp). If that completes a quorum, commit (the followers learn it with
        the next append or heartbeat: the module header)."""
        pr = self._progress.get(self.id)
        if pr is not None and pr.maybe_update(self._durable_last_index()):
            self._maybe_commit()

    def _maybe_commit(self) -> bool:
        """Commit the highest index a quorum of voters holds, if it is of our term (§5.4.2:
        entries of earlier terms are committed only indirectly, the Figure 8 rule)."""
        voters = self.conf.voters
        own = self._progress.get(self.id)
        # The leader's appends may leave before its own entries are durable (ready.py): it must
        # never count itself for an entry a crash could still take from its disk.
        assert own is None or own.match <= self._durable_last_index(), (
            f"leader counts its own match {own.match} past its durable log "
            f"{self._durable_last_index()}"
        )
        matches = sorted((self._progress[v].match for v in voters), reverse=True)
        assert matches[0] <= self.log.last_index(), f"match {matches[0]} past our log"
        quorum_index = matches[self._quorum() - 1]
        if quorum_index <= self.log.committed or self.log.term(quorum_index) != self.term:
            return False
        old = self.log.committed
        self.log.commit_to(quorum_index)
        self._on_leader_commit(old)
        return True

    def _on_leader_commit(self, old_commit: int) -> None:
        lo = max(old_commit, self._term_start_index) + 1
        for index in range(lo, self.log.committed + 1):
            self._uncommitted_entries -= 1
            self._uncommitted_bytes -= self.log.entry(index).size_bytes()
        self._uncommitted_entries = max(self._uncommitted_entries, 0)
        self._uncommitted_bytes = max(self._uncommitted_bytes, 0)
        if old_commit < self._term_start_index <= self.log.committed:
            waiting, self._reads_waiting_commit = self._reads_waiting_commit, []
            for requester, request_id in waiting:
                self._leader_read(requester, request_id)
        if (
            self.id not in self.conf.voters
            and self.log.committed >= self._confs.last_change_index()
        ):
            self._step_down_removed()

    def _step_down_removed(self) -> None:
        """Our own removal is committed: step down (thesis §4.2.2). First tell the followers
        the commit (so they apply the removal), and hand leadership to the most up-to-date
        voter with TimeoutNow, so the cluster does not wait out an election timeout."""
        self._broadcast_append()
        best = max(self.conf.voters, key=lambda v: (self._progress[v].match, v))
        if self._progress[best].match == self.log.last_index():
            self._send(TimeoutNow(self.id, best, self.term))
        self._become_follower(self.term, None)

    # --- leader: reads -------------------------------------------------------------------

    def _leader_read(self, requester: str, request_id: bytes) -> None:
        pending = self._readonly.pending_requests() + len(self._reads_waiting_commit)
        if pending >= self.config.max_pending_reads:
            if requester == self.id:
                raise ReadIndexDropped(f"{pending} reads pending (bound)")
            self._send(ReadIndexResponse(self.id, requester, self.term, request_id, reject=True))
            return
        if self.log.committed < self._term_start_index:
            # Our commit index is not known to be current until an entry of our term commits.
            self._reads_waiting_commit.append((requester, request_id))
            return
        if self.conf.voters == (self.id,):
            self._answer_read(requester, request_id, self.log.committed)
            return
        read_round = self._readonly.add(self.log.committed, requester, request_id)
        if self.id in self.conf.voters:
            read_round.acks.add(self.id)
        self._broadcast_heartbeat(read_round.context)

    def _answer_read(self, requester: str, request_id: bytes, index: int) -> None:
        if requester == self.id:
            self._read_states.append(ReadState(request_id, index))
        else:
            self._send(ReadIndexResponse(self.id, requester, self.term, request_id, index))

    def _drop_reads(self) -> None:
        requests = list(self._reads_waiting_commit)
        for read_round in self._readonly.clear():
            requests += read_round.requests
        self._reads_waiting_commit = []
        for requester, request_id in requests:
            if requester == self.id:
                self._dropped_reads.append(request_id)
            else:
                self._send(
                    ReadIndexResponse(self.id, requester, self.term, request_id, reject=True)
                )

    # =========================================================================================
    # Membership

    def _track_conf(self, entries: Sequence[Entry]) -> None:
        """Track the CONF_CHANGE entries just appended (changes take effect at append)."""
        for conf in self._confs.track(entries):
            if self.role is Role.LEADER:
                self._update_progress_set(conf)

    def _track_conf_from(self, first: int) -> None:
        """A follower rewrote its log from `first`: forget the changes of the truncated
        suffix (the configuration reverts) and track those of the new entries."""
        self._confs.truncate_from(first)
        self._track_conf(self.log.slice(first, self.log.last_index() + 1))

    def _update_progress_set(self, conf: ConfState) -> None:
        members = set(conf.members())
        for node_id in sorted(self._progress):
            if node_id not in members and node_id != self.id:
                del self._progress[node_id]
                if node_id == self._transferee:
                    self._transferee = None
        for node_id in conf.members():
            pr = self._progress.get(node_id)
            if pr is None:
                pr = self._new_progress(node_id)
                self._heard_from(pr)  # give a new member a CheckQuorum round to answer
                self._progress[node_id] = pr
            pr.is_learner = node_id in conf.learners

    def _new_progress(self, node_id: str) -> Progress:
        pr = Progress(
            self.log.last_index() + 1,
            self.config.max_inflight_appends,
            is_learner=node_id in self.conf.learners,
        )
        if node_id == self.id:
            pr.match = self._durable_last_index()  # see `_own_entries_durable`
        return pr

    # =========================================================================================
    # Role changes

    def _reset(self, term: int) -> None:
        if term != self.term:
            assert term > self.term, f"term going back from {self.term} to {term}"
            self.term = term
            self.vote = None
        if self.role is Role.LEADER:
            self._drop_reads()
        self.leader = None
        self._election_elapsed = 0
        self._heartbeat_elapsed = 0
        self._randomize_election_timeout()
        self._votes = {}
        self._progress = {}
        self._transferee = None
        self._proposals_unsent = False  # a past leadership's appends are no longer ours to send

    def _become_follower(self, term: int, leader: str | None) -> None:
        self._reset(term)
        self.role = Role.FOLLOWER
        self.leader = leader

    def _become_precandidate(self) -> None:
        assert self.role is not Role.LEADER
        # Like etcd: no term change, no vote; but we no longer follow a leader.
        self._reset(self.term)
        self.role = Role.PRECANDIDATE

    def _become_candidate(self) -> None:
        assert self.role is not Role.LEADER
        self._reset(self.term + 1)
        self.role = Role.CANDIDATE
        self.vote = self.id

    def _become_leader(self) -> None:
        assert self.role is Role.CANDIDATE
        # Figure 2: a candidate votes for itself; only voters campaign (learners never do).
        assert self.vote == self.id, f"leader of term {self.term} without its own vote"
        assert self.id in self.conf.voters, f"{self.id} leads without being a voter"
        self._reset(self.term)
        self.role = Role.LEADER
        self.leader = self.id
        self._uncommitted_bytes = 0
        self._uncommitted_entries = 0
        for node_id in self.conf.members():
            self._progress[node_id] = self._new_progress(node_id)
        if self.id not in self._progress:  # cannot happen (only voters campaign); be explicit
            self._progress[self.id] = self._new_progress(self.id)
        # CheckQuorum counts only who answers from now on: a leader elected and cut off at
        # once steps down after one election timeout.
        self._progress[self.id].recent_active = True
        # The empty entry of our term: committing it commits everything before (§5.4.2), and
        # gates conf changes and reads.
        self._term_start_index = self.log.last_index() + 1
        self._pending_conf_index = self._term_start_index
        self._leader_append([Entry(self.term, self._term_start_index, EntryKind.NORMAL, b"")])
        if self.role is Role.LEADER:
            self._broadcast_append()

    # =========================================================================================
    # Output: Ready

    def _send(self, m: Message) -> None:
        if len(self._messages) >= self.config.max_outbox_messages:
            self.dropped_messages += 1  # Raft tolerates loss; a stalled driver must not OOM us
            return
        self._messages.append(m)

    def _soft_state(self) -> SoftState:
        return SoftState(self.leader, self.role_name)

    def has_ready(self) -> bool:
        """Is there work for the driver? (False while a Ready is out and not advanced.)"""
        if self._ready_out is not None:
            return False
        return bool(
            self._proposals_unsent
            or self._messages
            or self._chunks
            or self._pending_snapshot
            or self._read_states
            or self._dropped_reads
            or self.log.unstable_from <= self.log.last_index()
            or self.log.applied < min(self.log.committed, self.log.last_index())
            or self.hard_state() != self._prev_hard
            or self._soft_state() != self._prev_soft
        )

    def ready(self) -> Ready:
        """The work to do now (see ready.py for the contract). Call `advance(rd)` when done."""
        if self._ready_out is not None:
            raise RaftError("ready() called again before advance() of the previous Ready")
        # Before the entries are collected: every entry an append carries is in rd.entries
        # (or already durable), so the contract "durable before sent" keeps holding.
        self._flush_proposals()
        hard, soft = self.hard_state(), self._soft_state()
        prev = self._prev_hard
        assert hard.term >= prev.term, f"term goes back from {prev.term} to {hard.term}"
        # One vote per term: within a term, a vote once given (and made durable) stays.
        assert hard.term > prev.term or prev.vote is None or hard.vote == prev.vote, (
            f"vote changed within term {hard.term}: {prev.vote} -> {hard.vote}"
        )
        assert hard.commit <= self.log.last_index(), (hard.commit, self.log.last_index())
        messages, early = self._order_messages(hard)
        rd = Ready(
            hard_state=hard if hard != self._prev_hard else None,
            entries=tuple(self.log.unstable_entries()),
            snapshot_chunks=tuple(self._chunks),
            snapshot=self._pending_snapshot,
            messages=messages,
            send_before_persist=early,
            committed_entries=tuple(
                self.log.committed_to_apply(self.config.max_apply_bytes_per_ready)
            ),
            read_states=tuple(self._read_states),
            dropped_reads=tuple(self._dropped_reads),
            soft_state=soft if soft != self._prev_soft else None,
        )
        if rd.committed_entries:
            assert rd.committed_entries[0].index == self.log.applied + 1, (
                rd.committed_entries[0].index,
                self.log.applied,
            )
            assert rd.committed_entries[-1].index <= hard.commit, rd.committed_entries[-1]
        self._messages, self._chunks, self._read_states, self._dropped_reads = [], [], [], []
        self._pending_snapshot = None
        self._ready_out = rd
        return rd

    def _order_messages(self, hard: HardState) -> tuple[tuple[Message, ...], int]:
        """The outbox, the messages that may leave before the persist step first, and how
        many they are (ready.py, `send_before_persist`). Only a leader whose term and vote are
        already durable sends early, and only what carries its log outwards (appends,
        heartbeats, snapshot chunks): they promise nothing about its own disk, since it counts
        itself in a quorum only for durable entries (`_own_entries_durable`). Votes, vote
        refusals, acknowledgements, TimeoutNow and read answers always wait."""
        outbox = self._messages
        prev = self._prev_hard
        if self.role is not Role.LEADER or (hard.term, hard.vote) != (prev.term, prev.vote):
            return tuple(outbox), 0
        early = [m for m in outbox if isinstance(m, _EARLY_MESSAGE_TYPES)]
        if len(early) == len(outbox):
            return tuple(outbox), len(outbox)
        late = [m for m in outbox if not isinstance(m, _EARLY_MESSAGE_TYPES)]
        return (*early, *late), len(early)

    def advance(self, rd: Ready) -> None:
        """The driver did everything `rd` asked (durable, sent, applied)."""
        if rd is not self._ready_out:
            raise RaftError("advance() of a Ready that is not the one handed out")
        self._ready_out = None
        if rd.hard_state is not None:
            self._prev_hard = rd.hard_state
        if rd.soft_state is not None:
            self._prev_soft = rd.soft_state
        if rd.entries:
            self.log.stable_to(rd.entries)
            if self.role is Role.LEADER:
                self._own_entries_durable()
        if rd.committed_entries:
            last = rd.committed_entries[-1].index
            # A snapshot installed meanwhile may have moved `applied` past these entries.
            if last > self.log.applied:
                self.log.applied_to(last)
