"""The planted-bug catalogue (`MUTANTS`): realistic Raft and store mistakes, one a mutant.

Each mutant is the smallest change that makes the mistake, written against the production
code it patches (detsim.raft.core, detsim.raft.driver, detsim.raft.storage, detsim.kv): a
wrapper that skips or bends one step, or a copy of one short function with the mistake in it.
The campaign must find every one (`detsim mutants`); a mutant it misses is a gap in the
scenarios, never a reason to make the mutant louder.

Rules: a replacement keeps the original's signature; it reads the original (the `make`
argument) rather than importing it, so stacking or reverting is exact; nothing here is
imported by production code.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final

from detsim.kv.server import KVServer
from detsim.kv.statemachine import KVStateMachine
from detsim.mutants._patch import Mutant, Patch
from detsim.raft.core.errors import ConfChangeRejected
from detsim.raft.core.log import RaftLog
from detsim.raft.core.membership import check_conf_change
from detsim.raft.core.messages import (
    AppendRequest,
    ConfChange,
    ConfChangeOp,
    Entry,
    EntryKind,
    Message,
)
from detsim.raft.core.raft import Raft, Role
from detsim.raft.core.ready import Ready
from detsim.raft.driver import RaftNode
from detsim.raft.storage import Storage
from detsim.raft.storage._log import SegmentedLog

Persist = Callable[[RaftNode, Ready], Awaitable[None]]


# --- persistence -------------------------------------------------------------------------------


def _hard_state_not_synced(original: Persist) -> Persist:
    """A Ready that only changes the hard state (a vote, a new term) is buffered, not synced:
    the vote reply leaves before the vote is durable (the sync waits for the next entries)."""

    async def persist(self: RaftNode, rd: Ready) -> None:
        only_hard_state = (
            rd.hard_state is not None
            and not rd.entries
            and not rd.snapshot_chunks
            and rd.snapshot is None
        )
        if not only_hard_state:
            await original(self, rd)
            return
        assert self._storage is not None and rd.hard_state is not None
        self._storage.hard_state = rd.hard_state  # written and fsynced with the next batch
        self._persisted = rd.hard_state

    return persist


def _append_fsync_skipped(original: Callable[[SegmentedLog], Awaitable[None]]) -> Any:
    """The log's sync fsyncs only when the batch carries a hard state: appended entries alone
    are written but never fsynced (a power loss takes them after they were acknowledged)."""

    async def sync(self: SegmentedLog) -> None:
        if self._pending is None:
            self._dirty = []  # the fsync of the appended entries is skipped
            return
        await original(self)

    return sync


def _snapshot_keeps_log(original: Any) -> Any:
    """An installed snapshot is made current but the old log is left on disk behind it."""

    async def install_snapshot(self: Storage, meta: Any) -> None:
        await self._snapshots.install_staged(meta)  # the log's `discard_all` is forgotten

    return install_snapshot


# --- elections and terms -----------------------------------------------------------------------


def _vote_for_stale_log(original: Any) -> Any:
    """§5.4.1 by length only: a candidate whose log is as long as ours gets the vote even if
    its last term is older."""

    def is_up_to_date(self: RaftLog, last_index: int, last_term: int) -> bool:
        return last_index >= self.last_index()

    return is_up_to_date


def _leader_keeps_role(original: Callable[[Raft, int, str | None], None]) -> Any:
    """A leader that learns a higher term adopts it but stays leader."""

    def become_follower(self: Raft, term: int, leader: str | None) -> None:
        if self.role is Role.LEADER and term > self.term:
            self.term, self.vote = term, None
            return
        original(self, term, leader)

    return become_follower


def _stale_term_append(original: Callable[[Raft, Message], bool]) -> Any:
    """A follower handles an AppendRequest of an older term as if it came from its leader."""

    def step_term(self: Raft, m: Message) -> bool:
        if isinstance(m, AppendRequest) and m.term < self.term and self.role is Role.FOLLOWER:
            return True
        return original(self, m)

    return step_term


def _election_timer_not_reset(original: Callable[[Raft, str], None]) -> Any:
    """The leader's appends (and heartbeats, its empty appends) no longer reset the election
    timer: followers time out under a live leader."""

    def heard_from_leader(self: Raft, leader: str) -> None:
        self.leader = leader

    return heard_from_leader


# --- log replication and commit ----------------------------------------------------------------


def _commit_previous_term(original: Any) -> Any:
    """The leader commits whatever a quorum holds, even an entry of an earlier term (the
    Figure 8 rule, §5.4.2, forgotten)."""

    def maybe_commit(self: Raft) -> bool:
        voters = self.conf.voters
        matches = sorted((self._progress[v].match for v in voters), reverse=True)
        quorum_index = matches[self._quorum() - 1]
        if quorum_index <= self.log.committed:
            return False
        old = self.log.committed
        self.log.commit_to(quorum_index)
        self._on_leader_commit(old)
        return True

    return maybe_commit


def _conflict_not_truncated(original: Any) -> Any:
    """A follower assumes the entries it already holds match the leader's and appends only
    past its end: a conflicting suffix is never truncated."""

    def find_conflict(self: RaftLog, entries: Sequence[Entry]) -> int:
        for entry in entries:
            if entry.index > self.last_index():
                return entry.index
        return 0

    return find_conflict


def _prev_index_off_by_one(original: Any) -> Any:
    """The follower's consistency check looks at the entry before prev_index."""

    def maybe_append(
        self: RaftLog, prev_index: int, prev_term: int, commit: int, entries: Sequence[Entry]
    ) -> tuple[int, int] | None:
        if not self.match_term(prev_index - 1, prev_term):
            return None
        last_new = prev_index + len(entries)
        conflict = self.find_conflict(entries)
        if conflict:
            self.append(entries[conflict - entries[0].index :])
        self.commit_to(min(commit, last_new))
        return last_new, conflict

    return maybe_append


def _apply_before_commit(original: Any) -> Any:
    """Entries are handed to the state machine once appended, not once committed."""

    def committed_to_apply(self: RaftLog, max_bytes: int) -> list[Entry]:
        hi = self.last_index()
        if hi <= self.applied:
            return []
        return self.slice(self.applied + 1, hi + 1, max_bytes)

    return committed_to_apply


# --- membership --------------------------------------------------------------------------------


def _conf_change_before_noop(original: Any) -> Any:
    """Ongaro's single-server membership bug (raft-dev, July 2015; the thesis' errata): the
    leader keeps "one change at a time" by looking at its own log (no change in it may be
    uncommitted) but forgets the other rule, that it must first commit an entry of its own
    term. A new leader whose log lacks a change the old leader appended then adds a second
    one at once; from an even-sized configuration the two need not share a majority."""

    def propose_conf_change(self: Raft, change: ConfChange) -> int:
        data = change.encode()
        self._check_can_propose(len(data))
        if self._confs.last_change_index() > self.log.committed:
            raise ConfChangeRejected("a configuration change is still uncommitted")
        check_conf_change(self.conf, change)
        if change.op is ConfChangeOp.PROMOTE:
            self._check_caught_up(change.node_id)
        index = self._append_proposal(EntryKind.CONF_CHANGE, data)
        self._pending_conf_index = index
        return index

    return propose_conf_change


# --- equivalent mutants (not in MUTANTS) -------------------------------------------------------


def _no_track_at_append(original: Any) -> Any:
    def track_conf(self: Raft, entries: Sequence[Entry]) -> None:
        return None  # configuration changes wait for their commit (see _track_at_apply)

    return track_conf


def _track_at_apply(original: Callable[[Raft, Ready], None]) -> Any:
    def advance(self: Raft, rd: Ready) -> None:
        original(self, rd)
        last_change = self._confs.last_change_index()
        fresh = [
            e
            for e in rd.committed_entries
            if e.kind is EntryKind.CONF_CHANGE and e.index > last_change
        ]
        for conf in self._confs.track(fresh):
            if self.role is Role.LEADER:
                self._update_progress_set(conf)

    return advance


#: A configuration change taking effect at apply instead of at append. Not among MUTANTS: no
#: run of our store can tell it from the correct code (0 of 171 hunts found it), and we argue
#: none can. It is etcd-io/raft's own design (the application calls ApplyConfChange after the
#: entry commits). With one change at a time (the leader proposes change k+1 only once change k
#: is committed) and single-server changes, every append that carries change k+1 also carries a
#: commit index >= change k's, so a node that holds k+1 applies k in the same Ready; a node two
#: configurations behind holds neither k nor k+1 and loses every vote to the majority of k that
#: holds k. The one gap is etcd's other guard, which this core does not need and the mutant
#: lacks (raft.go hup: no campaign while a committed change is unapplied, etcd commit 7f0733c):
#: a node that learned of change k's commit but has not applied it yet campaigns in the older
#: configuration. Our driver counts votes only in a later Ready than the one that applies k,
#: so that node counts them in k, unless the committed entries before k exceed one Ready's
#: apply budget (max_apply_bytes_per_ready, 16 MiB) and a vote round completes meanwhile; no
#: scenario combines 16 MiB of unapplied values with membership changes and a partition timed
#: to that window. Kept to document the decision and tested for its behaviour (tests/mutants).
CONF_CHANGE_AT_COMMIT: Final = Mutant(
    "conf_change_at_commit",
    "a configuration change taking effect at commit (apply) instead of at append",
    (
        Patch(Raft, "_track_conf", _no_track_at_append),
        Patch(Raft, "advance", _track_at_apply),
    ),
)


# --- the store ---------------------------------------------------------------------------------


def _read_without_read_index(original: Any) -> Any:
    """A read is served from the local state machine without ReadIndex: a deposed leader or
    a lagging follower answers from stale state."""

    async def read_barrier(self: KVServer) -> Any:
        if not self.raft.running:
            return await original(self)  # (the refusal of a node not started yet)
        return None

    return read_barrier


def _applied_index_not_stored(original: Any) -> Any:
    """The applied index is kept in memory but not written with the batch: a snapshot image
    says an older index than its data, so a restart from it would apply entries twice."""

    def store_meta(self: KVStateMachine) -> None:
        self._conn.executemany(
            "UPDATE meta SET value = ? WHERE name = ?",
            [(self._used_bytes, "used_bytes"), (self._key_count, "key_count")],
        )

    return store_meta


MUTANTS: Final[tuple[Mutant, ...]] = (
    Mutant(
        "hard_state_not_synced",
        "vote or term not persisted before replying (a hard-state-only Ready is not synced)",
        (Patch(RaftNode, "_persist", _hard_state_not_synced),),
    ),
    Mutant(
        "vote_for_stale_log",
        "a vote granted to a candidate with a stale log (up-to-date by length only)",
        (Patch(RaftLog, "is_up_to_date", _vote_for_stale_log),),
    ),
    Mutant(
        "commit_previous_term",
        "a previous-term entry committed by counting replicas (Figure 8)",
        (Patch(Raft, "_maybe_commit", _commit_previous_term),),
    ),
    Mutant(
        "conflict_not_truncated",
        "a conflicting suffix not truncated (held entries assumed to match)",
        (Patch(RaftLog, "find_conflict", _conflict_not_truncated),),
    ),
    Mutant(
        "apply_before_commit",
        "entries applied once appended, before they commit",
        (Patch(RaftLog, "committed_to_apply", _apply_before_commit),),
    ),
    Mutant(
        "leader_keeps_role",
        "a leader not stepping down on a higher term (it adopts the term, stays leader)",
        (Patch(Raft, "_become_follower", _leader_keeps_role),),
    ),
    Mutant(
        "stale_term_append",
        "a stale-term AppendRequest accepted by a follower",
        (Patch(Raft, "_step_term", _stale_term_append),),
    ),
    Mutant(
        "prev_index_off_by_one",
        "an off-by-one in the previous-index check (the entry before prev_index is compared)",
        (Patch(RaftLog, "maybe_append", _prev_index_off_by_one),),
    ),
    Mutant(
        "snapshot_keeps_log",
        "a snapshot installed without discarding the log on disk",
        (Patch(Storage, "install_snapshot", _snapshot_keeps_log),),
    ),
    Mutant(
        "read_without_read_index",
        "a read served from local state without ReadIndex",
        (Patch(KVServer, "_read_barrier", _read_without_read_index),),
    ),
    Mutant(
        "append_fsync_skipped",
        "the fsync of a log append skipped (only batches with a hard state are fsynced)",
        (Patch(SegmentedLog, "sync", _append_fsync_skipped),),
    ),
    Mutant(
        "election_timer_not_reset",
        "the election timer not reset by a valid append (or heartbeat) from the leader",
        (Patch(Raft, "_heard_from_leader", _election_timer_not_reset),),
    ),
    Mutant(
        "conf_change_before_noop",
        "a new leader changes the configuration before its term's first entry commits "
        "(Ongaro's single-server bug)",
        (Patch(Raft, "propose_conf_change", _conf_change_before_noop),),
    ),
    Mutant(
        "apply_twice_after_restart",
        "an entry applied twice after restart (the applied index not stored with the batch)",
        (Patch(KVStateMachine, "_store_meta", _applied_index_not_stored),),
    ),
)

BY_NAME: Final[dict[str, Mutant]] = {m.name: m for m in MUTANTS}
assert len(BY_NAME) == len(MUTANTS), "mutant names are unique"


def get(name: str) -> Mutant:
    """The mutant called `name`; KeyError naming the known ones otherwise."""
    try:
        return BY_NAME[name]
    except KeyError:
        raise KeyError(f"unknown mutant {name!r}; known: {', '.join(BY_NAME)}") from None
