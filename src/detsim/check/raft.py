"""Raft safety invariants, checked incrementally after every step of a cluster (issue 8).

This module owns `RaftInvariants`, a checker fed plain `NodeView`s and a few events. It imports
nothing of detsim.sim nor detsim.raft: it checks our core in unit tests, the driver inside the
simulator, or any other Raft whose state can be read as a `NodeView`. The driver's feed (its
observer hooks to this checker) is `detsim.check.raft_observer.InvariantsObserver`.

Invariants (Raft paper = Ongaro & Ousterhout 2014, "In Search of an Understandable Consensus
Algorithm"; Figure 3 lists the five safety properties, Figure 2 the persistent state):

  Election Safety        at most one leader per term, across all nodes and boots (Fig. 3, §5.2).
  Leader Append-Only     a leader never overwrites nor deletes entries of its log while it leads
                         that term; it only appends (Fig. 3, §5.3).
  Log Matching           two logs with an entry of the same index and term hold the same entry
                         there and identical logs before it (Fig. 3, §5.3). Checked per
                         (index, term): one payload digest and one previous-entry term, ever.
  Leader Completeness    an entry committed in term T is in the log of every leader of every term
                         above T (Fig. 3, §5.4). See "Commit-term bounds" below.
  State Machine Safety   no two nodes apply different entries at one index (Fig. 3, §5.4.3); the
                         committed entry at an index is the same on every node, and a snapshot's
                         (index, term) agrees with it.
  Acknowledged Entries   an entry acknowledged to a client is never lost: every later leader
    Survive              holds it, and it is what every node applies at its index (the client's
                         view of Leader Completeness + State Machine Safety).
  Term Monotonic         a node's currentTerm never decreases, across restarts too (Fig. 2:
                         persistent state).
  One Vote Per Term      votedFor changes within a term only from none to a candidate, across
                         restarts too (Fig. 2: persistent; §5.2 "at most one candidate per term").
  Candidate Votes For    a candidate or leader has voted for itself in its term (Fig. 2, Rules for
    Itself               Servers: "Vote for self").
  Index Order            snapshot_index <= commit_index <= last_index and applied <= commit
                         (Fig. 2: commitIndex, lastApplied); within a boot commit, applied and
                         the snapshot index never decrease.
  Committed Entries      within a boot a node never rewrites an entry at or below its commit
    Stable               index (Fig. 2 AppendEntries step 3 only deletes conflicting entries,
                         which are never committed; §5.4).
  Log Terms Ordered      the terms along a log never decrease and never exceed the node's
                         currentTerm (a consequence of §5.3: entries are created by the leader of
                         their term and accepted only from a leader of a term >= one's own).
  Apply Order            within a boot a node applies each index once, in order, without gaps
                         (Fig. 2: lastApplied is incremented one by one; a snapshot jumps it).

How to feed it (the contract):
- `observe(view)` after every step of a node. Within a boot the checks compare in-memory
  state. Across a restart, Term Monotonic and One Vote Per Term compare the new boot's state
  with the last *durable* (term, vote) of the previous boot: `view.durable` when the driver sets
  it (the hard state it last persisted, if a Ready may be in flight), else the view's own term
  and vote (right for a driver that observes after persisting each Ready and steps nothing
  meanwhile). A log entry that a power loss undoes is fine: a restart re-reads the log.
- `boot` counts incarnations of a node (0, 1, ...); per-boot checks restart when it increases.
- `view.entry_at(index)` returns (term, payload digest) for snapshot_index < index <= last_index.
  The digest is any hashable value that identifies the payload (`payload_digest` makes one).
  The checker calls it lazily: about one call per observe plus one per new or rewritten entry.
- `applied(node_id, boot, index, term, digest)` when a node applies an entry to its state
  machine; `snapshot_applied(node_id, boot, index, term)` when it replaces its state machine by a
  snapshot; `acknowledged(node_id, index, term, digest)` when a node tells a client that the
  entry is committed (node_id: the acknowledging node).
- `check_logs(views)`: the full, non-incremental Log Matching / Leader Completeness check, to
  run now and then and at the end of a run.

Incremental cost. Per node the checker keeps a shadow of the terms of its log. An observe walks
down from the top of the log comparing terms with the shadow until they agree (one call when
nothing changed), then reads only the changed suffix. A rewrite that keeps every term and
changes only a payload (possible only if a leader creates two different entries with one
(index, term), itself a Log Matching violation) is missed by this walk; `check_logs` finds it.

Commit-term bounds. Leader Completeness speaks of the term in which an entry was committed,
which views do not show. A node that has commit_index >= i while in term T learnt of the commit
in T or earlier, so T bounds the commit term from above; the checker keeps, per bound, the
highest committed index (a staircase) and requires it of leaders of terms above the bound only.
A leader of a lower term may lack it legally (a vote delayed in the network can elect a
candidate of an old term after a newer leader committed). Commits the checker learns of after a
leader's election are checked at the next election and by `check_logs`.

Memory bounds. Per-index records (entries seen per (index, term), committed and applied and
acknowledged entries) are forgotten once every known node has applied the index (then every
node has agreed on it, checked at apply time); entries presented at forgotten indexes are not
checked again. Pruning runs every PRUNE_BATCH new records. If a node lags (crashed, partitioned
for good) more than `max_tracked_entries` (default MAX_TRACKED_ENTRIES) records accumulate and
`RaftCheckerError` names the laggard: call `forget_node` for a node that left the cluster. The
shadow of a node's log is as long as the part of its log after its snapshot. Leaders per term
are forgotten below the lowest current term of the known nodes (no node can be elected in a
term below its own), bounded by MAX_TRACKED_TERMS.

Determinism: nodes are kept in dicts in first-observed order; nothing depends on hash order.
"""

from __future__ import annotations

import bisect
import hashlib
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Final

NodeId = Hashable
Digest = Hashable
EntryReader = Callable[[int], tuple[int, Digest]]

ROLES: Final = frozenset({"leader", "follower", "candidate", "precandidate", "learner"})

#: Per-index records kept above the pruning floor before `RaftCheckerError`.
MAX_TRACKED_ENTRIES: Final = 200_000
#: Leaders per term kept above the lowest current term before `RaftCheckerError`.
MAX_TRACKED_TERMS: Final = 100_000
#: New per-index records between two pruning passes (amortizes the O(nodes) floor computation).
PRUNE_BATCH: Final = 1024

ELECTION_SAFETY: Final = "Election Safety"
LEADER_APPEND_ONLY: Final = "Leader Append-Only"
LOG_MATCHING: Final = "Log Matching"
LEADER_COMPLETENESS: Final = "Leader Completeness"
STATE_MACHINE_SAFETY: Final = "State Machine Safety"
ACKNOWLEDGED_SURVIVE: Final = "Acknowledged Entries Survive"
TERM_MONOTONIC: Final = "Term Monotonic"
ONE_VOTE_PER_TERM: Final = "One Vote Per Term"
CANDIDATE_SELF_VOTE: Final = "Candidate Votes For Itself"
INDEX_ORDER: Final = "Index Order"
COMMITTED_STABLE: Final = "Committed Entries Stable"
LOG_TERMS_ORDERED: Final = "Log Terms Ordered"
APPLY_ORDER: Final = "Apply Order"

REFERENCES: Final[dict[str, str]] = {
    ELECTION_SAFETY: "Raft paper Figure 3, §5.2",
    LEADER_APPEND_ONLY: "Raft paper Figure 3, §5.3",
    LOG_MATCHING: "Raft paper Figure 3, §5.3",
    LEADER_COMPLETENESS: "Raft paper Figure 3, §5.4",
    STATE_MACHINE_SAFETY: "Raft paper Figure 3, §5.4.3",
    ACKNOWLEDGED_SURVIVE: "Raft paper §8 and Figure 3 (Leader Completeness, State Machine Safety)",
    TERM_MONOTONIC: "Raft paper Figure 2, persistent currentTerm",
    ONE_VOTE_PER_TERM: "Raft paper Figure 2, persistent votedFor; §5.2",
    CANDIDATE_SELF_VOTE: "Raft paper Figure 2, Rules for Servers, Candidates",
    INDEX_ORDER: "Raft paper Figure 2, commitIndex and lastApplied",
    COMMITTED_STABLE: "Raft paper Figure 2, AppendEntries step 3; §5.4",
    LOG_TERMS_ORDERED: "Raft paper §5.3",
    APPLY_ORDER: "Raft paper Figure 2, Rules for Servers, All Servers",
}


class RaftInvariantViolation(AssertionError):
    """A Raft safety invariant does not hold. `invariant` is one of the names above."""

    def __init__(self, invariant: str, detail: str) -> None:
        assert invariant in REFERENCES, invariant
        super().__init__(f"{invariant} violated: {detail} ({REFERENCES[invariant]})")
        self.invariant = invariant
        self.detail = detail


class RaftCheckerError(RuntimeError):
    """The checker was misused (a boot counter going back) or hit a memory bound."""


@dataclass(frozen=True, slots=True, eq=False)
class NodeView:
    """What the checker reads of one node after a step. See the module header for the contract.

    `entry_at(index)` -> (term, digest) for snapshot_index < index <= last_index; it is read
    during `observe` only, so it may read the node's live log.

    `term`, `vote`, `role` are the node's in-memory state. `durable` is the (term, vote) of the
    last hard state the node persisted, when it may differ (a Ready being persisted while the
    core is stepped on); None means `term` and `vote` are durable. A restart is checked
    against the last durable (term, vote) of the previous boot.
    """

    node_id: NodeId
    boot: int
    term: int
    vote: NodeId | None
    role: str
    commit_index: int
    applied_index: int
    snapshot_index: int
    snapshot_term: int
    last_index: int
    entry_at: EntryReader
    durable: tuple[int, NodeId | None] | None = None


def payload_digest(*parts: bytes | str | int) -> bytes:
    """An 8-byte BLAKE2b digest of an entry's payload parts (e.g. kind and data): stable across
    processes and Python versions, unlike hash()."""
    h = hashlib.blake2b(digest_size=8)
    for part in parts:
        raw = part if isinstance(part, bytes) else str(part).encode()
        h.update(len(raw).to_bytes(8, "little"))
        h.update(raw)
    return h.digest()


def log_reader(entries: Sequence[tuple[int, Digest]], first_index: int = 1) -> EntryReader:
    """An `entry_at` over a list of (term, digest) whose first item is at `first_index`."""

    def entry_at(index: int) -> tuple[int, Digest]:
        k = index - first_index
        if not 0 <= k < len(entries):
            raise IndexError(
                f"log index {index} outside [{first_index}, {first_index + len(entries) - 1}]"
            )
        return entries[k]

    return entry_at


@dataclass(slots=True)
class _Node:
    """What the checker remembers of one node between observes."""

    view: NodeView  # the latest view (its entry_at is not called after that observe)
    leader_term: int | None = None  # the term it was last seen leading, in this boot
    shadow_base: int = 0  # shadow[k] is the term at index shadow_base + 1 + k
    shadow: list[int] = field(default_factory=list)
    commit_recorded: int = 0  # committed entries up to here are recorded (over all boots)


@dataclass(frozen=True, slots=True)
class _Known:
    """A committed or acknowledged entry: index, term, digest (None: unknown), who told us."""

    index: int
    term: int
    digest: Digest | None
    node_id: NodeId


class _Staircase:
    """The highest known committed index per commit-term bound, kept only where it rises: both
    `bounds` and the rows' indexes strictly increase, so its length is at most the number of
    distinct terms."""

    __slots__ = ("bounds", "rows")

    def __init__(self) -> None:
        self.bounds: list[int] = []
        self.rows: list[_Known] = []

    def add(self, bound: int, known: _Known) -> None:
        k = bisect.bisect_left(self.bounds, bound)
        if k and self.rows[k - 1].index >= known.index:
            return  # a lower bound already covers as much
        if k < len(self.bounds) and self.bounds[k] == bound and self.rows[k].index >= known.index:
            return
        j = k
        while j < len(self.rows) and self.rows[j].index <= known.index:
            j += 1  # rows with a bound >= ours and an index <= ours say less than the new one
        self.bounds[k:j] = [bound]
        self.rows[k:j] = [known]
        if len(self.bounds) > MAX_TRACKED_TERMS:
            raise RaftCheckerError(f"more than MAX_TRACKED_TERMS={MAX_TRACKED_TERMS} commit terms")

    def best_below(self, term: int) -> _Known | None:
        """The highest known committed index whose commit term is certainly below `term`."""
        k = bisect.bisect_left(self.bounds, term)
        return self.rows[k - 1] if k else None


class RaftInvariants:
    """Checks the invariants of the module header, incrementally. Raises RaftInvariantViolation."""

    def __init__(self, *, max_tracked_entries: int = MAX_TRACKED_ENTRIES) -> None:
        assert max_tracked_entries > 0
        self.max_tracked_entries = max_tracked_entries
        self._nodes: dict[NodeId, _Node] = {}
        self._apply_cursors: dict[NodeId, tuple[int, int]] = {}  # node -> (boot, last applied)
        self._leaders: dict[int, NodeId] = {}  # term -> its leader
        # Log Matching records: index -> (term, digest, previous term, node) for the first term
        # seen at an index, and (index, term) -> the same for the rare other terms there.
        self._entries: dict[int, tuple[int, Digest, int, NodeId]] = {}
        self._other_terms: dict[tuple[int, int], tuple[int, Digest, int, NodeId]] = {}
        self._committed: dict[int, tuple[_Known, int]] = {}  # index -> (entry, commit-term bound)
        self._applied: dict[int, _Known] = {}
        self._acked: dict[int, tuple[_Known, int]] = {}  # index -> (entry, commit-term bound)
        self._commit_stairs = _Staircase()
        self._ack_stairs = _Staircase()
        self._pruned_upto = 0  # per-index records at or below this index are forgotten
        self._next_prune = PRUNE_BATCH
        self._tracked = 0  # records added since the last count (tracked_entries is exact)
        self.observes = 0  # counters, for reports and tests
        self.entry_reads = 0

    # --- the hooks ---------------------------------------------------------------------------

    def observe(self, view: NodeView) -> None:
        """Check one node's state after a step (see the module header for when to call it)."""
        self.observes += 1
        node = self._nodes.get(view.node_id)
        if node is None:
            node = self._nodes[view.node_id] = _Node(view)
            prev: NodeView | None = None
        else:
            prev = node.view
            if view.boot < prev.boot:
                raise RaftCheckerError(
                    f"node {view.node_id!r}: boot went back from {prev.boot} to {view.boot}"
                )
            if view.boot > prev.boot:
                node.leader_term = None
        same_boot = prev is not None and prev.boot == view.boot
        self._check_hard_state(prev, view)
        self._check_indexes(prev if same_boot else None, view)
        self._sync_log(node, view, prev if same_boot else None)
        self._record_commits(node, view)
        self._check_leader(node, view)
        node.view = view

    def applied(self, node_id: NodeId, boot: int, index: int, term: int, digest: Digest) -> None:
        """`node_id`, in incarnation `boot`, applied entry (index, term, digest) to its state
        machine."""
        self._advance_apply(node_id, boot, index, snapshot=False)
        known = _Known(index, term, digest, node_id)
        acked = self._acked[index][0] if index in self._acked else None
        if acked is not None and (acked.term, acked.digest) != (term, digest):
            raise RaftInvariantViolation(
                ACKNOWLEDGED_SURVIVE,
                f"node {node_id!r} applied {_fmt(known)} but {acked.node_id!r} acknowledged "
                f"{_fmt(acked)} to a client",
            )
        other = self._applied.get(index)
        if other is None:
            if index > self._pruned_upto:
                self._applied[index] = known
                self._count_new_record()
        elif (other.term, other.digest) != (term, digest):
            raise RaftInvariantViolation(
                STATE_MACHINE_SAFETY,
                f"nodes {other.node_id!r} and {node_id!r} applied different entries at index "
                f"{index}: {_fmt(other)} vs {_fmt(known)}",
            )
        self._check_against_committed(node_id, index, term, "applied")

    def snapshot_applied(self, node_id: NodeId, boot: int, index: int, term: int) -> None:
        """`node_id`, in incarnation `boot`, replaced its state machine by a snapshot at
        (index, term)."""
        self._advance_apply(node_id, boot, index, snapshot=True)
        self._check_against_committed(node_id, index, term, "applied a snapshot of")

    def acknowledged(self, node_id: NodeId, index: int, term: int, digest: Digest) -> None:
        """`node_id` told a client that entry (index, term, digest) is committed."""
        known = _Known(index, term, digest, node_id)
        bound = self._term_bound(node_id)
        other = self._acked[index][0] if index in self._acked else None
        if other is not None and (other.term, other.digest) != (term, digest):
            raise RaftInvariantViolation(
                ACKNOWLEDGED_SURVIVE,
                f"two different entries acknowledged at index {index}: {_fmt(other)} by "
                f"{other.node_id!r} and {_fmt(known)} by {node_id!r}",
            )
        applied = self._applied.get(index)
        if applied is not None and (applied.term, applied.digest) != (term, digest):
            raise RaftInvariantViolation(
                ACKNOWLEDGED_SURVIVE,
                f"node {node_id!r} acknowledged {_fmt(known)} but node {applied.node_id!r} "
                f"applied {_fmt(applied)} at that index",
            )
        self._check_against_committed(node_id, index, term, "acknowledged")
        if other is None and index > self._pruned_upto:
            self._acked[index] = (known, bound)
            self._count_new_record()
        self._ack_stairs.add(bound, known)

    def forget_node(self, node_id: NodeId) -> None:
        """`node_id` left the cluster for good or its storage was wiped: stop holding records
        for it (pruning waits for every known node) and check a later node of that id afresh."""
        self._nodes.pop(node_id, None)
        self._apply_cursors.pop(node_id, None)

    def check_logs(self, views: Iterable[NodeView]) -> None:
        """The full check of the current logs: Log Matching between them and against every
        entry seen so far, Log Terms Ordered, committed entries against the known commits, and
        Leader Completeness of current leaders against every known commit. O(total log size)."""
        views = list(views)
        seen: dict[tuple[int, int], tuple[Digest, int, NodeId]] = {}
        for view in views:
            self._check_one_log(view, seen)
        for view in views:
            if view.role == "leader":
                self._check_leader_holds_all_commits(view)

    @property
    def tracked_entries(self) -> int:
        """Per-index records currently held (the quantity MAX_TRACKED_ENTRIES bounds)."""
        return (
            len(self._entries)
            + len(self._other_terms)
            + len(self._committed)
            + len(self._applied)
            + len(self._acked)
        )

    # --- observe: hard state and indexes -----------------------------------------------------

    def _check_hard_state(self, prev: NodeView | None, view: NodeView) -> None:
        if view.role not in ROLES:
            raise RaftCheckerError(f"node {view.node_id!r}: unknown role {view.role!r}")
        if prev is not None:
            # Within a boot, memory against memory; across a restart, against what was durable.
            before = (prev.term, prev.vote) if prev.boot == view.boot else _durable(prev)
            self._check_term_and_vote(prev.boot, before, view)
        if view.role in ("candidate", "leader") and view.vote != view.node_id:
            raise RaftInvariantViolation(
                CANDIDATE_SELF_VOTE,
                f"node {view.node_id!r} is {view.role} in term {view.term} but its vote is "
                f"{view.vote!r}",
            )

    def _check_term_and_vote(
        self, boot: int, before: tuple[int, NodeId | None], view: NodeView
    ) -> None:
        term, vote = before
        if view.term < term:
            raise RaftInvariantViolation(
                TERM_MONOTONIC,
                f"node {view.node_id!r} went from term {term} (boot {boot}) back to "
                f"term {view.term} (boot {view.boot})",
            )
        if view.term == term and vote is not None and view.vote != vote:
            raise RaftInvariantViolation(
                ONE_VOTE_PER_TERM,
                f"node {view.node_id!r} in term {view.term} changed its vote from "
                f"{vote!r} (boot {boot}) to {view.vote!r} (boot {view.boot})",
            )

    def _check_indexes(self, prev: NodeView | None, view: NodeView) -> None:
        """Index Order; `prev` is the previous view of the same boot, if any."""
        v = view
        if not (0 <= v.snapshot_index <= v.commit_index <= v.last_index):
            _index_order(v, "snapshot_index <= commit_index <= last_index")
        if not v.applied_index <= v.commit_index:
            _index_order(v, "applied_index <= commit_index")
        if prev is None:
            return
        for name, before, now in (
            ("commit_index", prev.commit_index, v.commit_index),
            ("applied_index", prev.applied_index, v.applied_index),
            ("snapshot_index", prev.snapshot_index, v.snapshot_index),
        ):
            if now < before:
                _index_order(v, f"{name} went back from {before} to {now} within boot {v.boot}")

    # --- observe: the log --------------------------------------------------------------------

    def _sync_log(self, node: _Node, view: NodeView, prev: NodeView | None) -> None:
        """Bring the shadow of the node's log up to date, checking every new or rewritten entry.
        `prev` is the previous view of the same boot, if any."""
        reset = self._align_shadow(node, view)
        first = view.snapshot_index + 1
        old_last = node.shadow_base + len(node.shadow)
        j = min(view.last_index, old_last)
        while j >= first and self._read(view, j)[0] != node.shadow[j - first]:
            j -= 1
        changed_from = j + 1  # entries below are unchanged since the last observe
        if not reset and changed_from <= old_last:
            self._check_rewrite(node, view, prev, changed_from)
        prev_term = node.shadow[changed_from - first - 1] if changed_from > first else None
        if prev_term is None:
            prev_term = view.snapshot_term
        del node.shadow[changed_from - first :]
        for index in range(changed_from, view.last_index + 1):
            term, digest = self._read(view, index)
            self._check_new_entry(view, index, term, digest, prev_term)
            node.shadow.append(term)
            prev_term = term

    def _align_shadow(self, node: _Node, view: NodeView) -> bool:
        """Move the shadow's start to the view's snapshot; True if it had to be dropped."""
        drop = view.snapshot_index - node.shadow_base
        if drop == 0:
            return False
        if 0 < drop <= len(node.shadow) and node.shadow[drop - 1] == view.snapshot_term:
            del node.shadow[:drop]  # compaction: the rest of the log is unchanged
            node.shadow_base = view.snapshot_index
            return False
        node.shadow.clear()  # a snapshot replaced the log, or an older snapshot after restart
        node.shadow_base = view.snapshot_index
        return True

    def _check_rewrite(
        self, node: _Node, view: NodeView, prev: NodeView | None, changed_from: int
    ) -> None:
        """Entries from `changed_from` on were rewritten or deleted since the last observe."""
        if prev is None:
            return  # a restart: what was not durable may be gone
        if changed_from <= prev.commit_index:
            raise RaftInvariantViolation(
                COMMITTED_STABLE,
                f"node {view.node_id!r} rewrote or deleted index {changed_from} of its log "
                f"(term {node.shadow[changed_from - node.shadow_base - 1]}) at or below its "
                f"commit index {prev.commit_index} (boot {view.boot})",
            )
        if node.leader_term is not None and prev.role == "leader" and view.term == prev.term:
            raise RaftInvariantViolation(
                LEADER_APPEND_ONLY,
                f"node {view.node_id!r}, leader of term {view.term}, rewrote or deleted index "
                f"{changed_from} of its log (term "
                f"{node.shadow[changed_from - node.shadow_base - 1]}; last index was "
                f"{prev.last_index}, now {view.last_index})",
            )

    def _check_new_entry(
        self, view: NodeView, index: int, term: int, digest: Digest, prev_term: int
    ) -> None:
        if not prev_term <= term <= view.term:
            raise RaftInvariantViolation(
                LOG_TERMS_ORDERED,
                f"node {view.node_id!r} (term {view.term}) has term {term} at index {index} "
                f"after term {prev_term} at index {index - 1}",
            )
        if index <= self._pruned_upto:
            return  # every node has applied this index: its records are forgotten
        rec = (term, digest, prev_term, view.node_id)
        first = self._entries.get(index)
        if first is None:
            self._entries[index] = rec
            self._count_new_record()
            return
        if first[0] != term:
            first = self._other_terms.setdefault((index, term), rec)
            if first is rec:
                self._count_new_record()
                return
        if first[1:3] != (digest, prev_term):
            _log_matching(index, term, first, rec)

    # --- observe: commits and leaders --------------------------------------------------------

    def _record_commits(self, node: _Node, view: NodeView) -> None:
        """Record the entries this node newly knows committed; they must agree across nodes."""
        if view.commit_index <= node.commit_recorded:
            return
        first = view.snapshot_index + 1
        start = max(node.commit_recorded + 1, first, self._pruned_upto + 1)
        for index in range(start, view.commit_index + 1):
            self._commit_one(view, index, node.shadow[index - first])
        if view.snapshot_index > node.commit_recorded and view.snapshot_index > 0:
            self._commit_one(view, view.snapshot_index, view.snapshot_term)
        node.commit_recorded = view.commit_index
        if view.commit_index >= first:
            term = node.shadow[view.commit_index - first]
        else:
            term = view.snapshot_term
        # Term only: Log Matching (checked on every new entry) makes (index, term) the entry.
        self._commit_stairs.add(view.term, _Known(view.commit_index, term, None, view.node_id))

    def _commit_one(self, view: NodeView, index: int, term: int) -> None:
        """`view`'s node holds (index, term) committed. Log Matching makes the term enough."""
        known = self._committed.get(index)
        if known is None:
            if index > self._pruned_upto:
                self._committed[index] = (_Known(index, term, None, view.node_id), view.term)
                self._count_new_record()
        elif known[0].term != term:
            raise RaftInvariantViolation(
                STATE_MACHINE_SAFETY,
                f"nodes {known[0].node_id!r} and {view.node_id!r} committed different entries "
                f"at index {index}: term {known[0].term} vs term {term}",
            )

    def _check_against_committed(self, node_id: NodeId, index: int, term: int, did: str) -> None:
        known = self._committed.get(index)
        if known is not None and known[0].term != term:
            raise RaftInvariantViolation(
                STATE_MACHINE_SAFETY,
                f"node {node_id!r} {did} index {index} term {term} but node "
                f"{known[0].node_id!r} committed term {known[0].term} there",
            )

    def _check_leader(self, node: _Node, view: NodeView) -> None:
        if view.role != "leader":
            node.leader_term = None
            return
        holder = self._leaders.setdefault(view.term, view.node_id)
        if holder != view.node_id:
            raise RaftInvariantViolation(
                ELECTION_SAFETY,
                f"term {view.term} has two leaders: {holder!r} and {view.node_id!r}",
            )
        if len(self._leaders) > MAX_TRACKED_TERMS:
            self._prune_leaders()
        if node.leader_term == view.term:
            return
        node.leader_term = view.term  # newly elected: it must hold what was committed before
        commit = self._commit_stairs.best_below(view.term)
        if commit is not None:
            self._check_leader_holds(view, commit, LEADER_COMPLETENESS, "committed")
        acked = self._ack_stairs.best_below(view.term)
        if acked is not None:
            self._check_leader_holds(view, acked, ACKNOWLEDGED_SURVIVE, "acknowledged")

    def _check_leader_holds(self, view: NodeView, known: _Known, invariant: str, what: str) -> None:
        """The leader in `view` holds `known` (Log Matching then gives everything before it)."""
        if known.index < view.snapshot_index:
            return  # compacted into its snapshot, which covers only committed entries
        if known.index > view.last_index:
            held = f"nothing (its last index is {view.last_index})"
        elif known.index == view.snapshot_index:
            held = f"its snapshot of term {view.snapshot_term}"
            if view.snapshot_term == known.term:
                return
        else:
            term, digest = self._read(view, known.index)
            if term == known.term and (known.digest is None or digest == known.digest):
                return
            held = _fmt(_Known(known.index, term, digest, view.node_id))
        raise RaftInvariantViolation(
            invariant,
            f"node {view.node_id!r} became leader of term {view.term} but at index "
            f"{known.index} it holds {held}; node {known.node_id!r} {what} {_fmt(known)}",
        )

    # --- check_logs --------------------------------------------------------------------------

    def _check_one_log(
        self, view: NodeView, seen: dict[tuple[int, int], tuple[Digest, int, NodeId]]
    ) -> None:
        prev_term = view.snapshot_term
        for index in range(view.snapshot_index + 1, view.last_index + 1):
            term, digest = view.entry_at(index)
            self.entry_reads += 1
            if not prev_term <= term <= view.term:
                raise RaftInvariantViolation(
                    LOG_TERMS_ORDERED,
                    f"node {view.node_id!r} (term {view.term}) has term {term} at index "
                    f"{index} after term {prev_term}",
                )
            rec = (term, digest, prev_term, view.node_id)
            first = seen.setdefault((index, term), (digest, prev_term, view.node_id))
            if first[:2] != (digest, prev_term):
                _log_matching(index, term, (term, *first), rec)
            history = self._entries.get(index)
            if history is not None and history[0] != term:
                history = self._other_terms.get((index, term))
            if history is not None and history[1:3] != (digest, prev_term):
                _log_matching(index, term, history, rec)
            committed = self._committed.get(index)
            if index <= view.commit_index and committed and committed[0].term != term:
                self._commit_one(view, index, term)  # raises with both nodes named
            prev_term = term

    def _check_leader_holds_all_commits(self, view: NodeView) -> None:
        for known, bound in self._committed.values():
            if bound < view.term:
                self._check_leader_holds(view, known, LEADER_COMPLETENESS, "committed")
        for known, bound in self._acked.values():
            if bound < view.term:
                self._check_leader_holds(view, known, ACKNOWLEDGED_SURVIVE, "acknowledged")

    # --- apply order -------------------------------------------------------------------------

    def _advance_apply(self, node_id: NodeId, boot: int, index: int, *, snapshot: bool) -> None:
        last_boot, cursor = self._apply_cursors.get(node_id, (boot, None))
        if boot < last_boot:
            raise RaftCheckerError(
                f"node {node_id!r}: apply from boot {boot} after boot {last_boot}"
            )
        if boot > last_boot:
            cursor = None  # a new incarnation replays from its snapshot
        if cursor is not None:
            if snapshot and index <= cursor:
                problem = f"applied a snapshot at index {index} after applying index {cursor}"
            elif not snapshot and index != cursor + 1:
                what = "again" if index <= cursor else "skipping ahead"
                problem = f"applied index {index} {what} after index {cursor}"
            else:
                problem = ""
            if problem:
                raise RaftInvariantViolation(
                    APPLY_ORDER, f"node {node_id!r} (boot {boot}) {problem}"
                )
        self._apply_cursors[node_id] = (boot, index)

    # --- memory ------------------------------------------------------------------------------

    def _count_new_record(self) -> None:
        self._tracked += 1
        if self._tracked >= self._next_prune:
            self._prune()

    def _prune(self) -> None:
        """Forget per-index records every known node has applied (see the module header)."""
        floor = min((n.view.applied_index for n in self._nodes.values()), default=0)
        for index in range(self._pruned_upto + 1, floor + 1):
            self._entries.pop(index, None)
            self._committed.pop(index, None)
            self._applied.pop(index, None)
            self._acked.pop(index, None)
        if floor > self._pruned_upto:
            for key in [k for k in self._other_terms if k[0] <= floor]:
                del self._other_terms[key]
            self._pruned_upto = floor
        tracked = self._tracked = self.tracked_entries
        if tracked > self.max_tracked_entries:
            laggard = min(self._nodes.values(), key=lambda n: n.view.applied_index)
            raise RaftCheckerError(
                f"tracking {tracked} per-index records > max_tracked_entries="
                f"{self.max_tracked_entries}: node {laggard.view.node_id!r} has applied only up "
                f"to index {laggard.view.applied_index}; call forget_node() for a node that "
                f"left the cluster, or raise the bound"
            )
        self._next_prune = tracked + PRUNE_BATCH

    def _prune_leaders(self) -> None:
        lowest = min(n.view.term for n in self._nodes.values())
        for term in [t for t in self._leaders if t < lowest]:
            del self._leaders[term]
        if len(self._leaders) > MAX_TRACKED_TERMS:
            raise RaftCheckerError(f"more than MAX_TRACKED_TERMS={MAX_TRACKED_TERMS} leader terms")

    # --- helpers -----------------------------------------------------------------------------

    def _term_bound(self, node_id: NodeId) -> int:
        """A term at or above the one in which anything `node_id` knows committed was committed:
        its latest term, or the highest term of any node if it was never observed."""
        node = self._nodes.get(node_id)
        if node is not None:
            return node.view.term
        return max((n.view.term for n in self._nodes.values()), default=0)

    def _read(self, view: NodeView, index: int) -> tuple[int, Digest]:
        self.entry_reads += 1
        return view.entry_at(index)


def _durable(view: NodeView) -> tuple[int, NodeId | None]:
    return (view.term, view.vote) if view.durable is None else view.durable


def _fmt(known: _Known) -> str:
    digest = "" if known.digest is None else f", digest {known.digest!r}"
    return f"(index {known.index}, term {known.term}{digest})"


def _index_order(view: NodeView, what: str) -> None:
    raise RaftInvariantViolation(
        INDEX_ORDER,
        f"node {view.node_id!r} (boot {view.boot}, term {view.term}): {what} "
        f"[snapshot_index={view.snapshot_index} applied_index={view.applied_index} "
        f"commit_index={view.commit_index} last_index={view.last_index}]",
    )


def _log_matching(
    index: int,
    term: int,
    first: tuple[int, Digest, int, NodeId],
    now: tuple[int, Digest, int, NodeId],
) -> None:
    raise RaftInvariantViolation(
        LOG_MATCHING,
        f"two entries with index {index} and term {term} differ: node {first[3]!r} had digest "
        f"{first[1]!r} after term {first[2]}, node {now[3]!r} has digest {now[1]!r} after term "
        f"{now[2]}",
    )
