"""The Raft invariant checker (detsim.check.raft): each check passes a correct run and fires,
with an actionable message, on a deliberately broken one."""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

from detsim.check.raft import (
    ACKNOWLEDGED_SURVIVE,
    APPLY_ORDER,
    CANDIDATE_SELF_VOTE,
    COMMITTED_STABLE,
    ELECTION_SAFETY,
    INDEX_ORDER,
    LEADER_APPEND_ONLY,
    LEADER_COMPLETENESS,
    LOG_MATCHING,
    LOG_TERMS_ORDERED,
    ONE_VOTE_PER_TERM,
    PRUNE_BATCH,
    STATE_MACHINE_SAFETY,
    TERM_MONOTONIC,
    NodeView,
    RaftCheckerError,
    RaftInvariants,
    RaftInvariantViolation,
    log_reader,
    payload_digest,
)
from detsim.raft.core import (
    ConfState,
    Entry,
    HardState,
    Message,
    RaftError,
    RemoteProtocolError,
    SnapshotMeta,
    VoteRequest,
    VoteResponse,
)
from detsim.raft.core.config import RaftConfig
from detsim.raft.core.log import RaftLog
from detsim.raft.core.raft import Raft
from detsim.raft.core.ready import Ready


@dataclass
class FakeNode:
    """A node's state as plain fields; `log[k]` is (term, digest) at index snapshot_index+1+k."""

    node_id: str
    boot: int = 0
    term: int = 0
    vote: str | None = None
    role: str = "follower"
    commit_index: int = 0
    applied_index: int = 0
    snapshot_index: int = 0
    snapshot_term: int = 0
    log: list[tuple[int, Any]] = field(default_factory=list)
    durable: tuple[int, str | None] | None = None

    def view(self) -> NodeView:
        return NodeView(
            node_id=self.node_id,
            boot=self.boot,
            term=self.term,
            vote=self.vote,
            role=self.role,
            commit_index=self.commit_index,
            applied_index=self.applied_index,
            snapshot_index=self.snapshot_index,
            snapshot_term=self.snapshot_term,
            last_index=self.snapshot_index + len(self.log),
            entry_at=log_reader(self.log, self.snapshot_index + 1),
            durable=self.durable,
        )

    def entry(self, index: int) -> tuple[int, Any]:
        return self.log[index - self.snapshot_index - 1]


class Cluster:
    """Scripted nodes; every change is followed by an observe of the changed node."""

    def __init__(self, *ids: str, checker: RaftInvariants | None = None) -> None:
        self.check = checker or RaftInvariants()
        self.nodes = {i: FakeNode(i) for i in ids}
        for node in self.nodes.values():
            self.check.observe(node.view())

    def set(self, nid: str, **changes: Any) -> None:
        node = self.nodes[nid]
        for name, value in changes.items():
            setattr(node, name, value)
        self.check.observe(node.view())

    def append(self, nid: str, *entries: tuple[int, str], at: int | None = None) -> None:
        """Append (term, payload) entries, first truncating the log from index `at`."""
        node = self.nodes[nid]
        if at is not None:
            del node.log[at - node.snapshot_index - 1 :]
        node.log.extend((term, payload) for term, payload in entries)
        self.check.observe(node.view())

    def elect(self, nid: str, term: int, voters: tuple[str, ...]) -> None:
        self.set(nid, term=term, vote=nid, role="candidate")
        for voter in voters:
            self.set(voter, term=term, vote=nid, role="follower")
        self.set(nid, role="leader")

    def apply(self, nid: str, upto: int) -> None:
        node = self.nodes[nid]
        for index in range(node.applied_index + 1, upto + 1):
            term, digest = node.entry(index)
            self.check.applied(nid, node.boot, index, term, digest)
        self.set(nid, applied_index=upto)

    def restart(self, nid: str, *, keep_log: int | None = None) -> None:
        """A new boot: term, vote and the log (up to `keep_log` entries) survive."""
        node = self.nodes[nid]
        if keep_log is not None:
            del node.log[keep_log:]
        self.set(
            nid,
            boot=node.boot + 1,
            role="follower",
            commit_index=node.snapshot_index,
            applied_index=node.snapshot_index,
        )


def assert_message(excinfo: Any, invariant: str, *needles: str) -> None:
    err = excinfo.value
    assert err.invariant == invariant
    text = str(err)
    assert text.startswith(f"{invariant} violated: ")
    for needle in needles:
        assert needle in text, (needle, text)


def correct_run() -> Cluster:
    """Election, replication, a crash that loses an uncommitted entry, a new leader that
    overwrites it, a restart, compaction and a snapshot install: nothing may fire."""
    c = Cluster("n1", "n2", "n3")
    c.elect("n1", 1, ("n2",))
    c.set("n3", term=1)
    c.append("n1", (1, "a"), (1, "b"))
    c.append("n2", (1, "a"), (1, "b"))
    c.set("n1", commit_index=2)
    c.apply("n1", 2)
    c.check.acknowledged("n1", 2, 1, "b")
    c.set("n2", commit_index=2)
    c.apply("n2", 2)
    c.append("n1", (1, "c"))  # never replicated: lost when n1 is cut off
    # n2 wins term 2 (n3 votes); it holds everything committed.
    c.elect("n2", 2, ("n3",))
    c.append("n2", (2, "d"))
    c.append("n3", (1, "a"), (1, "b"), (2, "d"))
    c.set("n2", commit_index=3)
    c.set("n3", commit_index=3)
    c.apply("n3", 3)
    c.apply("n2", 3)
    # n1 restarts (boot 1) and is told to drop its conflicting index 3.
    c.restart("n1")
    c.set("n1", term=2, vote=None)
    c.append("n1", (2, "d"), at=3)
    c.set("n1", commit_index=3)
    c.apply("n1", 3)
    # n2 compacts; n3 falls behind and gets a snapshot that replaces its log.
    c.append("n2", (2, "e"), (2, "f"))
    c.append("n1", (2, "e"), (2, "f"))
    c.set("n2", commit_index=5)
    c.apply("n2", 5)
    c.set("n2", snapshot_index=4, snapshot_term=2, log=c.nodes["n2"].log[4:])
    n3 = c.nodes["n3"]
    c.set("n3", snapshot_index=5, snapshot_term=2, log=[], commit_index=5)
    c.check.snapshot_applied("n3", 0, 5, 2)
    c.set("n3", applied_index=5)
    c.set("n1", commit_index=5)
    c.apply("n1", 5)
    assert n3.view().last_index == 5
    return c


def test_a_correct_run_fires_nothing() -> None:
    c = correct_run()
    c.check.check_logs(n.view() for n in c.nodes.values())
    # Continue with a third leader: it holds the acknowledged and committed entries.
    c.elect("n3", 3, ("n1",))
    c.check.check_logs(n.view() for n in c.nodes.values())


# --- Election Safety ---------------------------------------------------------------------------


def test_two_leaders_in_one_term_fire() -> None:
    c = correct_run()
    c.set("n3", term=3, vote="n3", role="candidate")
    c.set("n3", role="leader")
    c.set("n1", term=3, vote="n1", role="candidate")
    with pytest.raises(RaftInvariantViolation) as excinfo:
        c.set("n1", role="leader")
    assert_message(excinfo, ELECTION_SAFETY, "term 3 has two leaders: 'n3' and 'n1'")


def test_the_same_leader_seen_again_and_after_a_restart_is_fine() -> None:
    c = Cluster("n1", "n2")
    c.elect("n1", 1, ("n2",))
    c.set("n1", commit_index=0)
    c.set("n1", boot=1, role="leader")  # unusual but not a second leader


# --- Term Monotonic, One Vote Per Term, Candidate Votes For Itself -----------------------------


def test_term_going_back_fires_within_a_boot() -> None:
    c = Cluster("n1")
    c.set("n1", term=4)
    with pytest.raises(RaftInvariantViolation) as excinfo:
        c.set("n1", term=3)
    assert_message(
        excinfo, TERM_MONOTONIC, "'n1' went from term 4 (boot 0) back to term 3 (boot 0)"
    )


def test_term_going_back_fires_across_a_restart() -> None:
    c = Cluster("n1")
    c.set("n1", term=4)
    with pytest.raises(RaftInvariantViolation) as excinfo:
        c.set("n1", term=2, boot=1)
    assert_message(excinfo, TERM_MONOTONIC, "term 4 (boot 0) back to term 2 (boot 1)")


def test_a_second_vote_in_a_term_fires() -> None:
    c = Cluster("n1", "n2", "n3")
    c.set("n1", term=1, vote="n2")
    c.set("n1", term=2, vote="n3")  # a new term: a new vote
    with pytest.raises(RaftInvariantViolation) as excinfo:
        c.set("n1", vote="n2")
    assert_message(excinfo, ONE_VOTE_PER_TERM, "'n1' in term 2 changed its vote from 'n3'")


def test_a_vote_forgotten_by_a_restart_fires() -> None:
    c = Cluster("n1")
    c.set("n1", term=2, vote="n2")
    with pytest.raises(RaftInvariantViolation) as excinfo:
        c.set("n1", boot=1, vote=None)
    assert_message(excinfo, ONE_VOTE_PER_TERM, "from 'n2' (boot 0) to None (boot 1)")


def test_a_restart_is_checked_against_the_durable_hard_state() -> None:
    c = Cluster("n1")
    c.set("n1", term=4, vote="n2")
    c.set("n1", term=5, vote="n1", role="candidate", durable=(4, "n2"))  # a Ready in flight
    c.set("n1", boot=1, term=4, vote="n2", role="follower", durable=None)  # lost: fine
    c.set("n1", term=5, vote="n3", durable=(4, "n2"))
    with pytest.raises(RaftInvariantViolation) as excinfo:
        c.set("n1", boot=2, term=3, vote=None)
    assert_message(excinfo, TERM_MONOTONIC, "from term 4 (boot 1) back to term 3 (boot 2)")


def test_a_durable_vote_lost_by_a_restart_fires() -> None:
    c = Cluster("n1")
    c.set("n1", term=4, vote="n2", durable=(4, "n2"))
    c.set("n1", term=5, vote=None, durable=(4, "n2"))
    with pytest.raises(RaftInvariantViolation) as excinfo:
        c.set("n1", boot=1, term=4, vote="n3", durable=None)
    assert_message(excinfo, ONE_VOTE_PER_TERM, "from 'n2' (boot 0) to 'n3' (boot 1)")


def test_a_candidate_that_did_not_vote_for_itself_fires() -> None:
    c = Cluster("n1")
    with pytest.raises(RaftInvariantViolation) as excinfo:
        c.set("n1", term=1, vote="n2", role="candidate")
    assert_message(excinfo, CANDIDATE_SELF_VOTE, "'n1' is candidate in term 1 but its vote is 'n2'")


def test_a_precandidate_need_not_have_voted() -> None:
    c = Cluster("n1", "n2")
    c.set("n1", term=1, vote="n2")
    c.set("n1", role="precandidate")


# --- Index Order -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "needle"),
    [
        ({"commit_index": 3}, "snapshot_index <= commit_index <= last_index"),
        ({"applied_index": 2}, "applied_index <= commit_index"),
        ({"snapshot_index": 2, "snapshot_term": 1}, "snapshot_index <= commit_index"),
    ],
)
def test_index_order_fires(changes: dict[str, int], needle: str) -> None:
    c = Cluster("n1")
    c.set("n1", term=1, log=[(1, "a"), (1, "b")], commit_index=1)
    with pytest.raises(RaftInvariantViolation) as excinfo:
        c.set("n1", **changes)
    assert_message(excinfo, INDEX_ORDER, needle, "last_index=")


def test_commit_going_back_fires_within_a_boot_but_not_across_one() -> None:
    c = Cluster("n1")
    c.set("n1", term=1, log=[(1, "a"), (1, "b")], commit_index=2)
    c.set("n1", boot=1, commit_index=1)  # the commit index need not be durable
    with pytest.raises(RaftInvariantViolation) as excinfo:
        c.set("n1", commit_index=0)
    assert_message(excinfo, INDEX_ORDER, "commit_index went back from 1 to 0 within boot 1")


# --- Log Matching, Log Terms Ordered -----------------------------------------------------------


def test_two_payloads_with_one_index_and_term_fire() -> None:
    c = correct_run()
    c.append("n2", (2, "g"))
    with pytest.raises(RaftInvariantViolation) as excinfo:
        c.append("n3", (2, "h"))  # a leader of term 2 made two entries at index 6
    assert_message(
        excinfo, LOG_MATCHING, "index 6 and term 2 differ", "node 'n2' had digest 'g'", "'h'"
    )


def test_one_index_and_term_after_different_terms_fires() -> None:
    c = Cluster("n1", "n2")
    c.set("n1", term=3, log=[(1, "a"), (3, "x")])
    with pytest.raises(RaftInvariantViolation) as excinfo:
        c.set("n2", term=3, log=[(2, "b"), (3, "x")])
    assert_message(excinfo, LOG_MATCHING, "index 2 and term 3", "after term 1", "after term 2")


def test_different_terms_at_one_index_are_fine_until_committed() -> None:
    c = Cluster("n1", "n2")
    c.set("n1", term=2, log=[(1, "a"), (1, "b")])
    c.set("n2", term=2, log=[(1, "a"), (2, "c")])
    c.set("n1", log=[(1, "a"), (2, "c")])  # overwritten by the leader's entry: fine


@pytest.mark.parametrize(
    ("log", "needle"),
    [
        ([(2, "a"), (1, "b")], "has term 1 at index 2 after term 2"),
        ([(1, "a"), (5, "b")], "'n1' (term 3) has term 5 at index 2"),
    ],
)
def test_log_terms_out_of_order_fire(log: list[tuple[int, str]], needle: str) -> None:
    c = Cluster("n1")
    with pytest.raises(RaftInvariantViolation) as excinfo:
        c.set("n1", term=3, log=log)
    assert_message(excinfo, LOG_TERMS_ORDERED, needle)


def test_check_logs_finds_a_same_term_rewrite_the_incremental_walk_misses() -> None:
    # The walk compares terms only (module header): an in-place payload change within one term
    # is left to check_logs, which compares every entry with what was seen before.
    c = Cluster("n1", "n2")
    c.set("n1", term=1, log=[(1, "a"), (1, "b")])
    c.set("n1", log=[(1, "a"), (1, "B")])
    with pytest.raises(RaftInvariantViolation) as excinfo:
        c.check.check_logs([c.nodes["n1"].view()])
    assert_message(excinfo, LOG_MATCHING, "index 2 and term 1", "'b'", "'B'")


def test_check_logs_compares_the_current_logs_with_each_other() -> None:
    a = FakeNode("a", term=1, log=[(1, "x")])
    b = FakeNode("b", term=1, log=[(1, "y")])
    with pytest.raises(RaftInvariantViolation) as excinfo:
        RaftInvariants().check_logs([a.view(), b.view()])
    assert_message(excinfo, LOG_MATCHING, "index 1 and term 1", "'x'", "'y'")


# --- Committed Entries Stable, Leader Append-Only ----------------------------------------------


def test_truncating_a_committed_entry_fires() -> None:
    c = correct_run()
    with pytest.raises(RaftInvariantViolation) as excinfo:
        c.append("n1", (3, "z"), at=5)  # n1 committed 5
    assert_message(excinfo, COMMITTED_STABLE, "'n1' rewrote or deleted index 5", "commit index 5")


def test_a_leader_deleting_its_own_entry_fires() -> None:
    c = Cluster("n1", "n2")
    c.elect("n1", 1, ("n2",))
    c.append("n1", (1, "a"), (1, "b"))
    with pytest.raises(RaftInvariantViolation) as excinfo:
        c.append("n1", at=2)
    assert_message(excinfo, LEADER_APPEND_ONLY, "leader of term 1, rewrote or deleted index 2")


def test_a_restart_may_lose_an_unsynced_tail() -> None:
    c = Cluster("n1", "n2")
    c.elect("n1", 1, ("n2",))
    c.append("n1", (1, "a"), (1, "b"))
    c.restart("n1", keep_log=1)


# --- Leader Completeness -----------------------------------------------------------------------


def figure8_prefix() -> Cluster:
    """n1 leads term 1 and commits (1, 1); n2 has it too. n3 lags, its log empty."""
    c = Cluster("n1", "n2", "n3")
    c.elect("n1", 1, ("n2",))
    c.append("n1", (1, "a"))
    c.append("n2", (1, "a"))
    c.set("n1", commit_index=1)
    return c


def test_a_leader_missing_a_committed_entry_fires() -> None:
    c = figure8_prefix()
    c.set("n3", term=2, vote="n3", role="candidate")
    c.set("n2", term=2, vote="n3")  # a broken vote: n3's log is behind n2's
    with pytest.raises(RaftInvariantViolation) as excinfo:
        c.set("n3", role="leader")
    assert_message(
        excinfo,
        LEADER_COMPLETENESS,
        "'n3' became leader of term 2 but at index 1 it holds nothing",
        "node 'n1' committed (index 1, term 1)",
    )


def test_a_leader_holding_another_entry_at_a_committed_index_fires() -> None:
    c = figure8_prefix()
    c.set("n3", term=2, vote="n3", role="candidate", log=[(2, "x")])
    with pytest.raises(RaftInvariantViolation) as excinfo:
        c.set("n3", role="leader")
    assert_message(excinfo, LEADER_COMPLETENESS, "at index 1 it holds (index 1, term 2")


def test_a_stale_candidate_elected_by_a_delayed_vote_in_an_older_term_is_fine() -> None:
    # n3 campaigns in term 1 and n2's vote for it is delayed; meanwhile n1 wins term 2 and
    # commits. n3 then counts the old vote: a leader of term 1 need not hold term-2 commits.
    c = Cluster("n1", "n2", "n3")
    c.set("n3", term=1, vote="n3", role="candidate")
    c.set("n2", term=1, vote="n3")
    c.elect("n1", 2, ("n2",))
    c.append("n1", (2, "a"))
    c.append("n2", (2, "a"))
    c.set("n1", commit_index=1)
    c.set("n3", role="leader")
    c.check.check_logs(n.view() for n in c.nodes.values())


def test_check_logs_finds_a_leader_missing_a_commit_learnt_after_its_election() -> None:
    c = Cluster("n1", "n2", "n3")
    c.elect("n3", 2, ("n2",))
    c.set("n1", term=1, log=[(1, "a")], commit_index=1)  # a commit in term 1, told late
    with pytest.raises(RaftInvariantViolation) as excinfo:
        c.check.check_logs(n.view() for n in c.nodes.values())
    assert_message(excinfo, LEADER_COMPLETENESS, "'n3' became leader of term 2")


def test_a_leader_with_the_committed_entry_in_its_snapshot_is_fine() -> None:
    c = figure8_prefix()
    c.set("n3", term=1, snapshot_index=1, snapshot_term=1, commit_index=1)
    c.set("n3", term=2, vote="n3", role="candidate")
    c.set("n3", role="leader")


# --- State Machine Safety, Apply Order ---------------------------------------------------------


def test_two_nodes_applying_different_entries_at_one_index_fire() -> None:
    c = Cluster("n1", "n2")
    c.check.applied("n1", 0, 1, 1, "a")
    with pytest.raises(RaftInvariantViolation) as excinfo:
        c.check.applied("n2", 0, 1, 1, "b")
    assert_message(
        excinfo,
        STATE_MACHINE_SAFETY,
        "nodes 'n1' and 'n2' applied different entries at index 1",
        "digest 'a'",
        "digest 'b'",
    )


def test_two_nodes_committing_different_terms_at_one_index_fire() -> None:
    c = Cluster("n1", "n2")
    c.set("n1", term=1, log=[(1, "a")], commit_index=1)
    with pytest.raises(RaftInvariantViolation) as excinfo:
        c.set("n2", term=2, log=[(2, "b")], commit_index=1)
    assert_message(
        excinfo, STATE_MACHINE_SAFETY, "'n1' and 'n2' committed different entries at index 1"
    )


def test_applying_an_entry_other_than_the_committed_one_fires() -> None:
    c = Cluster("n1", "n2")
    c.set("n1", term=1, log=[(1, "a")], commit_index=1)
    with pytest.raises(RaftInvariantViolation) as excinfo:
        c.check.applied("n2", 0, 1, 2, "b")
    assert_message(excinfo, STATE_MACHINE_SAFETY, "'n2' applied index 1 term 2 but node 'n1'")


def test_a_snapshot_that_disagrees_with_a_commit_fires() -> None:
    c = Cluster("n1", "n2")
    c.set("n1", term=1, log=[(1, "a")], commit_index=1)
    with pytest.raises(RaftInvariantViolation) as excinfo:
        c.set("n2", term=2, snapshot_index=1, snapshot_term=2, commit_index=1)
    assert_message(excinfo, STATE_MACHINE_SAFETY, "committed different entries at index 1")


@pytest.mark.parametrize(
    ("indexes", "needle"),
    [
        ([1, 2, 2], "applied index 2 again after index 2"),
        ([1, 3], "applied index 3 skipping ahead after index 1"),
    ],
)
def test_apply_order_fires(indexes: list[int], needle: str) -> None:
    c = Cluster("n1")
    c.set("n1", term=1, log=[(1, "a"), (1, "b"), (1, "c")], commit_index=3)
    with pytest.raises(RaftInvariantViolation) as excinfo:
        for index in indexes:
            c.check.applied("n1", 0, index, 1, "abc"[index - 1])
    assert_message(excinfo, APPLY_ORDER, "'n1' (boot 0) " + needle)


def test_reapplying_after_a_restart_and_snapshots_follow_apply_order() -> None:
    c = Cluster("n1")
    c.set("n1", term=1, log=[(1, "a"), (1, "b"), (1, "c")], commit_index=3)
    c.check.applied("n1", 0, 1, 1, "a")
    c.check.applied("n1", 1, 1, 1, "a")  # boot 1 replays its log into a fresh state machine
    c.check.snapshot_applied("n1", 1, 2, 1)
    c.check.applied("n1", 1, 3, 1, "c")
    with pytest.raises(RaftInvariantViolation) as excinfo:
        c.check.snapshot_applied("n1", 1, 3, 1)
    assert_message(excinfo, APPLY_ORDER, "applied a snapshot at index 3 after applying index 3")


# --- Acknowledged Entries Survive --------------------------------------------------------------


def test_a_later_leader_without_an_acknowledged_entry_fires() -> None:
    # The views never show n1's commit (say its commit index is reported late): only the
    # acknowledgement proves the entry committed.
    c = Cluster("n1", "n2", "n3")
    c.elect("n1", 1, ("n2",))
    c.append("n1", (1, "a"))
    c.append("n2", (1, "a"))
    c.check.acknowledged("n1", 1, 1, "a")
    c.set("n3", term=2, vote="n3", role="candidate")
    with pytest.raises(RaftInvariantViolation) as excinfo:
        c.set("n3", role="leader")
    assert_message(
        excinfo,
        ACKNOWLEDGED_SURVIVE,
        "'n3' became leader of term 2 but at index 1 it holds nothing",
        "node 'n1' acknowledged (index 1, term 1, digest 'a')",
    )


def test_applying_something_else_at_an_acknowledged_index_fires() -> None:
    c = Cluster("n1", "n2")
    c.check.acknowledged("n1", 1, 1, "a")
    with pytest.raises(RaftInvariantViolation) as excinfo:
        c.check.applied("n2", 0, 1, 1, "b")
    assert_message(excinfo, ACKNOWLEDGED_SURVIVE, "'n2' applied (index 1, term 1, digest 'b')")


def test_acknowledging_something_else_than_was_applied_fires() -> None:
    c = Cluster("n1", "n2")
    c.check.applied("n2", 0, 1, 1, "b")
    with pytest.raises(RaftInvariantViolation) as excinfo:
        c.check.acknowledged("n1", 1, 1, "a")
    assert_message(excinfo, ACKNOWLEDGED_SURVIVE, "but node 'n2' applied")


# --- cost and memory ---------------------------------------------------------------------------


def steady_run(c: Cluster, entries: int, lagging: str | None = None) -> None:
    """n1 leads and replicates `entries` entries one by one; every node applies as it goes."""
    c.elect("n1", 1, tuple(n for n in c.nodes if n not in ("n1", lagging)))
    for index in range(1, entries + 1):
        for nid in c.nodes:
            if nid == lagging:
                continue
            c.append(nid, (1, payload_digest("put", index)))
            c.set(nid, commit_index=index)
            c.apply(nid, index)


def test_entry_reads_per_observe_are_constant_not_proportional_to_the_log() -> None:
    c = Cluster("n1", "n2", "n3")
    steady_run(c, 600)
    # Each new entry is read once when it arrives; each observe reads about one more entry to
    # confirm the log below is unchanged. Reading the log per step would be ~600x more.
    assert c.check.entry_reads <= 2 * c.check.observes + 3 * 600


def test_records_are_forgotten_once_every_node_applied_them() -> None:
    c = Cluster("n1", "n2", "n3")
    steady_run(c, 3 * PRUNE_BATCH)
    assert c.check.tracked_entries < 2 * PRUNE_BATCH


def test_a_lagging_node_hits_the_named_bound() -> None:
    c = Cluster("n1", "n2", "n3", checker=RaftInvariants(max_tracked_entries=2 * PRUNE_BATCH))
    with pytest.raises(RaftCheckerError, match="node 'n3' has applied only up to index 0"):
        steady_run(c, 3 * PRUNE_BATCH, lagging="n3")


def test_forget_node_lets_pruning_go_on_without_it() -> None:
    c = Cluster("n1", "n2", "n3", checker=RaftInvariants(max_tracked_entries=2 * PRUNE_BATCH))
    c.check.forget_node("n3")
    steady_run(c, 3 * PRUNE_BATCH, lagging="n3")


def test_misuse_is_not_a_violation() -> None:
    c = Cluster("n1")
    c.set("n1", boot=2)
    with pytest.raises(RaftCheckerError, match="boot went back from 2 to 1"):
        c.set("n1", boot=1)
    with pytest.raises(RaftCheckerError, match="unknown role 'boss'"):
        c.set("n1", boot=2, role="boss")
    c.check.applied("n1", 2, 1, 1, "a")
    with pytest.raises(RaftCheckerError, match="apply from boot 1 after boot 2"):
        c.check.applied("n1", 1, 2, 1, "b")


def test_payload_digest_separates_its_parts() -> None:
    assert payload_digest("put", "ab") != payload_digest("pu", "tab")
    assert payload_digest("put", b"x") == payload_digest(b"put", "x")
    assert len(payload_digest(1)) == 8


# --- the real core, driven in a tiny message loop ----------------------------------------------
#
# Every node is a detsim.raft.core Raft; the loop picks, from the seed, what happens next:
# deliver a random in-flight message (so messages are reordered), drop one, tick a node, propose
# at a leader, crash or restart a node, cut a node off or heal. Each node's Ready is handled as
# its contract says (persist, send, apply, advance) and the checker observes the node after it,
# so every view is of durable state. A leader acknowledges its own proposals once applied.
# Broken cores are made by monkeypatching one method from outside.

MAX_IN_FLIGHT = 500  # messages held by the loop's network; past it the oldest are lost


def entry_digest(entry: Entry) -> bytes:
    return payload_digest(int(entry.kind), entry.data)


SNAPSHOT_BYTES = 3000  # each snapshot is this many bytes: several chunks with CHUNK_BYTES
CHUNK_BYTES = 1024


class SnapshotBytes:
    """The SnapshotReader: a snapshot's bytes are a pattern derived from its index."""

    def read_chunk(self, meta: SnapshotMeta, offset: int, size_bytes: int) -> bytes:
        return bytes((meta.index + k) % 251 for k in range(offset, offset + size_bytes))


class CoreNode:
    """One real core plus what survives its crashes: hard state, snapshot and log."""

    def __init__(self, node_id: str, ids: tuple[str, ...], seed: int, config: RaftConfig) -> None:
        self.node_id, self.ids, self.seed, self.config = node_id, ids, seed, config
        self.boot = 0
        self.alive = True
        self.hard = HardState()
        self.snapshot: SnapshotMeta | None = None
        self.durable_log: list[Entry] = []  # the entries after the snapshot
        self.raft = self._start()

    def _start(self) -> Raft:
        self.proposals: dict[int, int] = {}  # index -> term, of this boot's proposals
        return Raft(
            self.config,
            random.Random(f"{self.seed}/{self.node_id}/{self.boot}"),
            hard_state=self.hard,
            snapshot=self.snapshot,
            entries=list(self.durable_log),
            applied=self.snapshot.index if self.snapshot else 0,
            initial_conf=ConfState.of(self.ids),
            snapshot_reader=SnapshotBytes(),
        )

    def restart(self) -> None:
        self.boot += 1
        self.alive = True
        self.raft = self._start()

    def persist(self, rd: Ready) -> None:
        """Step 1 of the Ready contract (the snapshot first: it discards the log)."""
        if rd.hard_state is not None:
            self.hard = rd.hard_state
        if rd.snapshot is not None:
            self.snapshot, self.durable_log = rd.snapshot, []
        if rd.entries:
            base = self.snapshot.index if self.snapshot else 0
            del self.durable_log[rd.entries[0].index - base - 1 :]
            self.durable_log.extend(rd.entries)

    def compact(self) -> bool:
        """Snapshot the state machine at its applied index and drop the log before it."""
        r = self.raft
        index = r.applied
        meta = SnapshotMeta(index, r.log.term(index) or 0, r.conf_at(index), SNAPSHOT_BYTES)
        r.compact(meta)
        base = self.snapshot.index if self.snapshot else 0
        del self.durable_log[: index - base]
        self.snapshot = meta
        return True

    def view(self) -> NodeView:
        r = self.raft
        return NodeView(
            node_id=self.node_id,
            boot=self.boot,
            term=r.term,
            vote=r.vote,
            role=r.role_name,
            commit_index=r.commit,
            applied_index=r.applied,
            snapshot_index=r.snapshot_meta.index,
            snapshot_term=r.snapshot_meta.term,
            last_index=r.last_index,
            entry_at=self._entry_at,
        )

    def _entry_at(self, index: int) -> tuple[int, bytes]:
        entry = self.raft.log.entry(index)
        return entry.term, entry_digest(entry)


@dataclass
class RunStats:
    leaders: int = 0  # terms that had a leader
    committed: int = 0  # highest index applied anywhere
    acknowledged: int = 0
    refused: int = 0  # messages the core refused (RemoteProtocolError)
    snapshots_installed: int = 0


class CoreCluster:
    """The loop around `size` real cores; every choice is drawn from `seed`."""

    def __init__(self, seed: int, size: int = 3, **config: Any) -> None:
        self.rng = random.Random(seed)
        ids = tuple(f"n{k}" for k in range(1, size + 1))
        config.setdefault("snapshot_chunk_bytes", CHUNK_BYTES)
        self.nodes = {i: CoreNode(i, ids, seed, RaftConfig(i, **config)) for i in ids}
        self.check = RaftInvariants()
        self.network: list[Message] = []
        self.cut: set[str] = set()
        self.stats = RunStats()
        self.leader_terms: set[int] = set()
        self.proposed = 0
        for node in self.nodes.values():
            self.handle(node)

    # --- the driver's part -------------------------------------------------------------------

    def handle(self, node: CoreNode) -> None:
        """Handle every Ready of `node` (persist, send, apply, advance), then observe it."""
        r = node.raft
        while r.has_ready():
            rd = r.ready()
            node.persist(rd)
            if rd.snapshot is not None:
                self.check.snapshot_applied(
                    node.node_id, node.boot, rd.snapshot.index, rd.snapshot.term
                )
                self.stats.snapshots_installed += 1
            self.network.extend(rd.messages)
            del self.network[:-MAX_IN_FLIGHT]
            for entry in rd.committed_entries:
                self.apply(node, entry)
            r.advance(rd)
        view = node.view()
        self.check.observe(view)
        if view.role == "leader":
            self.leader_terms.add(view.term)

    def apply(self, node: CoreNode, entry: Entry) -> None:
        digest = entry_digest(entry)
        self.check.applied(node.node_id, node.boot, entry.index, entry.term, digest)
        if node.proposals.get(entry.index) == entry.term:
            self.check.acknowledged(node.node_id, entry.index, entry.term, digest)
            self.stats.acknowledged += 1
        self.stats.committed = max(self.stats.committed, entry.index)

    # --- the random schedule -----------------------------------------------------------------

    def run(self, steps: int) -> RunStats:
        actions = (
            (55, self.deliver_one),
            (5, self.drop_one),
            (25, self.tick_one),
            (10, self.propose_at_leader),
            (2, self.crash_one),
            (2, self.restart_one),
            (1, self.toggle_partition),
            (1, self.compact_one),
        )
        weights = [w for w, _ in actions]
        for _ in range(steps):
            (action,) = self.rng.choices([a for _, a in actions], weights)
            action()
        self.check.check_logs(n.view() for n in self.nodes.values() if n.alive)
        self.stats.leaders = len(self.leader_terms)
        return self.stats

    def deliver_one(self) -> None:
        if self.network:
            self.deliver(self.network.pop(self.rng.randrange(len(self.network))))

    def drop_one(self) -> None:
        if self.network:
            self.network.pop(self.rng.randrange(len(self.network)))

    def tick_one(self) -> None:
        alive = [n for n in self.nodes.values() if n.alive]
        node = self.rng.choice(alive)
        node.raft.tick()
        self.handle(node)

    def propose_at_leader(self) -> None:
        for node in self.nodes.values():
            if node.alive and node.raft.role_name == "leader":
                self.propose(node.node_id)
                return

    def crash_one(self) -> None:
        alive = [n for n in self.nodes.values() if n.alive]
        if len(alive) > 1:
            self.rng.choice(alive).alive = False

    def restart_one(self) -> None:
        dead = [n for n in self.nodes.values() if not n.alive]
        if dead:
            self.restart(self.rng.choice(dead).node_id)

    def compact_one(self) -> None:
        """A node whose log holds 5+ applied entries snapshots; a lagging peer then needs
        InstallSnapshot, and a restart starts from the snapshot."""
        alive = [n for n in self.nodes.values() if n.alive]
        node = self.rng.choice(alive)
        if node.raft.applied - node.raft.snapshot_meta.index >= 5:
            node.compact()
            self.handle(node)

    def toggle_partition(self) -> None:
        if self.cut:
            self.cut.clear()
        else:
            self.cut.add(self.rng.choice(sorted(self.nodes)))

    # --- scripted steps ----------------------------------------------------------------------

    def deliver(self, m: Message) -> None:
        node = self.nodes[m.to]
        if not node.alive or m.to in self.cut or m.frm in self.cut:
            return
        try:
            node.raft.step(m)
        except RemoteProtocolError:
            self.stats.refused += 1  # the driver drops and counts such a message
        self.handle(node)

    def deliver_all(self) -> None:
        for _ in range(10_000):  # a bound: a quiet cluster stops sending well before
            if not self.network:
                return
            self.deliver(self.network.pop(0))
        raise AssertionError("the network never went quiet")

    def propose(self, nid: str) -> None:
        node = self.nodes[nid]
        self.proposed += 1
        try:
            index = node.raft.propose(f"put {self.proposed}".encode())
        except RaftError:
            return
        node.proposals[index] = node.raft.term
        self.handle(node)

    def campaign(self, nid: str) -> None:
        self.nodes[nid].raft.campaign()
        self.handle(self.nodes[nid])

    def crash(self, nid: str) -> None:
        self.nodes[nid].alive = False
        self.network = [m for m in self.network if m.frm != nid]  # unsent: lost with it

    def restart(self, nid: str) -> None:
        node = self.nodes[nid]
        node.restart()
        if node.snapshot is not None:  # the state machine is restored from it
            self.check.snapshot_applied(nid, node.boot, node.snapshot.index, node.snapshot.term)
        self.handle(node)


def test_the_real_core_fires_nothing_over_many_seeds() -> None:
    totals = RunStats()
    for seed in range(20):
        for config in ({}, {"pre_vote": False, "check_quorum": False}):
            stats = CoreCluster(seed, **config).run(3000)
            totals.leaders += stats.leaders
            totals.committed += stats.committed
            totals.acknowledged += stats.acknowledged
            totals.snapshots_installed += stats.snapshots_installed
    # Not vacuous: the runs changed leaders, committed, acknowledged and installed snapshots.
    assert totals.leaders > 100 and totals.acknowledged > 500, totals
    assert totals.snapshots_installed > 10, totals


# The broken cores: each replaces one method of the real core from outside.


def grant_every_vote(self: Raft, m: VoteRequest) -> None:
    """Grants every (pre-)vote request: no log comparison, no record of the vote."""
    self._send(VoteResponse(self.id, m.frm, m.term, granted=True, pre=m.pre))


def always_up_to_date(self: RaftLog, last_index: int, last_term: int) -> bool:
    """Forgets §5.4.1: any candidate's log counts as up to date."""
    return True


def keep_conflicting_suffix(
    self: RaftLog, prev_index: int, prev_term: int, commit: int, entries: Sequence[Entry]
) -> tuple[int, int] | None:
    """A follower that only appends past its end: it keeps a conflicting suffix (§5.3 says
    delete it) yet answers as if its log matched the leader's."""
    if not self.match_term(prev_index, prev_term):
        return None
    last_new = prev_index + len(entries)
    fresh = [e for e in entries if e.index > self.last_index()]
    if fresh:
        self.append(fresh)
    self.commit_to(min(commit, last_new, self.last_index()))
    return last_new, 0


BROKEN_CORES = [
    pytest.param(
        Raft,
        "_step_vote_request",
        grant_every_vote,
        {ELECTION_SAFETY, LEADER_COMPLETENESS},
        id="grant-every-vote",
    ),
    pytest.param(
        RaftLog, "is_up_to_date", always_up_to_date, {LEADER_COMPLETENESS}, id="no-up-to-date"
    ),
    pytest.param(
        RaftLog,
        "maybe_append",
        keep_conflicting_suffix,
        {STATE_MACHINE_SAFETY, LOG_MATCHING, LEADER_COMPLETENESS},
        id="keep-conflicts",
    ),
]


def first_violation(seeds: int) -> tuple[int, RaftInvariantViolation]:
    """The first seed whose random run makes the checker fire. A seed where the core's own
    assertions fire first (the broken core trips over itself) proves nothing either way."""
    for seed in range(seeds):
        try:
            CoreCluster(seed).run(3000)
        except RaftInvariantViolation as violation:
            return seed, violation
        except AssertionError:
            continue
    raise AssertionError(f"the checker never fired in {seeds} seeds")


@pytest.mark.parametrize(("owner", "name", "broken", "expected"), BROKEN_CORES)
def test_a_broken_core_makes_the_checker_fire(
    monkeypatch: pytest.MonkeyPatch, owner: type, name: str, broken: Any, expected: set[str]
) -> None:
    monkeypatch.setattr(owner, name, broken)
    seed, violation = first_violation(seeds=10)
    assert violation.invariant in expected, (seed, violation)
    assert re.search(r"(index|term) \d+", violation.detail), violation
    assert re.search(r"'n\d'", violation.detail), violation


# Figure 8 of the Raft paper, scripted on the real core. A leader must not commit an entry of an
# earlier term by counting replicas (§5.4.2). The core's empty entry at the start of each term
# hides that rule from random schedules (the new leader's own entry always travels with the old
# one), so the broken core drops both the rule and the empty entry.


def commit_by_counting_any_term(self: Raft) -> bool:
    """_maybe_commit without the Figure 8 rule: commits what a quorum holds, of any term."""
    matches = sorted((self._progress[v].match for v in self.conf.voters), reverse=True)
    quorum_index = matches[self._quorum() - 1]
    if quorum_index <= self.log.committed:
        return False
    old = self.log.committed
    self.log.commit_to(quorum_index)
    self._on_leader_commit(old)
    return True


def become_leader_without_empty_entry(self: Raft) -> None:
    """_become_leader, but the new leader appends no empty entry of its term."""
    real_append = Raft._leader_append
    Raft._leader_append = lambda self, entries: None  # type: ignore[method-assign]
    try:
        RAFT_BECOME_LEADER(self)
    finally:
        Raft._leader_append = real_append  # type: ignore[method-assign]


RAFT_BECOME_LEADER = Raft._become_leader


def elect(c: CoreCluster, nid: str) -> None:
    """`nid` campaigns up to 3 times (each failed round moves its term up) or until it leads."""
    for _ in range(3):
        c.campaign(nid)
        c.deliver_all()
        if c.nodes[nid].raft.role_name == "leader":
            return


def figure8(c: CoreCluster) -> None:
    """Figure 8 (a)-(e): the old-term entry (4, term 2) reaches a majority in term 4; the node
    holding (4, term 3) is then elected in term 5 by the node that has (4, term 2)."""
    elect(c, "n1")  # term 2
    c.propose("n1")  # (4, 2) stays on n1
    c.crash("n1")
    elect(c, "n2")  # term 3, n3 votes
    c.propose("n2")  # (4, 3) stays on n2
    c.crash("n2")
    c.restart("n1")
    elect(c, "n1")  # term 4 (term 3 is n2's): n3 votes and gets (4, 2)
    c.propose("n1")  # (5, 4) on n1 only
    c.network = [m for m in c.network if m.to != "n3"]
    c.crash("n1")
    c.restart("n2")
    elect(c, "n2")  # term 5: n3's last entry is of term 2, n2's of term 3
    c.check.check_logs(n.view() for n in c.nodes.values() if n.alive)


FIGURE8_CONFIG = {"pre_vote": False, "check_quorum": False}


def test_figure8_on_a_core_without_the_rule_fires(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Raft, "_maybe_commit", commit_by_counting_any_term)
    monkeypatch.setattr(Raft, "_become_leader", become_leader_without_empty_entry)
    c = CoreCluster(0, **FIGURE8_CONFIG)
    with pytest.raises(RaftInvariantViolation) as excinfo:
        figure8(c)
    assert_message(
        excinfo,
        LEADER_COMPLETENESS,
        "node 'n2' became leader of term 5 but at index 4 it holds (index 4, term 3",
        "node 'n1' committed (index 4, term 2)",
    )


def test_figure8_on_a_core_with_the_rule_fires_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    # Without the empty entry but with the rule, (4, 2) is never committed in term 4, so n2 may
    # overwrite it in term 5.
    monkeypatch.setattr(Raft, "_become_leader", become_leader_without_empty_entry)
    c = CoreCluster(0, **FIGURE8_CONFIG)
    figure8(c)
    n2 = c.nodes["n2"].raft
    assert (n2.role_name, n2.term, n2.log.entry(4).term) == ("leader", 5, 3)


def test_figure8_schedule_on_the_real_core_fires_nothing() -> None:
    # The real core: n1's empty entry (4, 2) commits in term 2; n2 leads term 3 from it; n1,
    # behind, cannot win term 4; n2 wins term 5 holding every committed entry.
    c = CoreCluster(0, **FIGURE8_CONFIG)
    figure8(c)
    n2 = c.nodes["n2"].raft
    assert (n2.role_name, n2.term, n2.log.entry(4).term) == ("leader", 5, 2)
    assert c.nodes["n3"].raft.commit == n2.last_index


@pytest.mark.slow
@pytest.mark.parametrize("size", [3, 5])
def test_the_real_core_fires_nothing_over_hundreds_of_seeds(size: int) -> None:
    for seed in range(300):
        for config in ({}, {"pre_vote": False, "check_quorum": False}):
            CoreCluster(seed, size, **config).run(3000)
