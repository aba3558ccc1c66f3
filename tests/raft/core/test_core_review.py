"""An adversarial review of `detsim.raft.core` (issue 8, deliverable 1), written as tests.

Each test names the sentence of the Raft paper / Ongaro's thesis or the etcd-io/raft behaviour
it checks (etcd's `raft_paper_test.go` and `raft_test.go` test names where one is ported), and
asserts the right behaviour through the core's public API (`step`, `tick`, `propose`,
`ready`/`advance`, ...) or the shared test harness (`raft_harness.Cluster`).

Tests that expose a bug still present are marked `xfail(strict=True, reason="BUG: ...")`: the
suite stays green and the bug is recorded; once fixed, the strict xfail fails and says to drop
the mark. Tests without a mark either guard a bug this review found and that has since been
fixed (named "regression" in their docstring), or check a rule found correct.

A hypothesis fuzz test steps nodes of valid cluster states (steady leader, a follower in the
middle of a chunked snapshot, a precandidate, a learner, a fresh joining node) with generated
messages: each must be refused with `RemoteProtocolError` and leave the state untouched, or
be handled without an AssertionError and keep the log's invariants.
"""

from __future__ import annotations

import contextlib
import copy
import os
import random
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from raft_harness import Cluster, make_config

from detsim.check.raft import RaftInvariants
from detsim.raft.core import (
    MAX_MESSAGE_BYTES,
    AppendRequest,
    AppendResponse,
    ConfChange,
    ConfChangeOp,
    ConfChangeRejected,
    ConfState,
    Entry,
    EntryKind,
    HardState,
    Heartbeat,
    HeartbeatResponse,
    Message,
    NotLeader,
    ProposalDropped,
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
from detsim.raft.core.raft import Raft
from detsim.raft.core.ready import Ready

# --- helpers -----------------------------------------------------------------------------------

VOTERS3 = ConfState.of(["1", "2", "3"])


class FixedReader:
    """A SnapshotReader over fixed bytes (the core only needs sizes to match)."""

    def read_chunk(self, meta: SnapshotMeta, offset: int, size_bytes: int) -> bytes:
        return bytes(size_bytes)


def entries_with_terms(terms: Sequence[int], first_index: int = 1) -> list[Entry]:
    return [
        Entry(t, first_index + k, EntryKind.NORMAL, b"e%d" % (first_index + k))
        for k, t in enumerate(terms)
    ]


def restored(
    node_id: str,
    terms: Sequence[int],
    *,
    term: int,
    vote: str | None = None,
    commit: int = 0,
    conf: ConfState = VOTERS3,
    **cfg: Any,
) -> Raft:
    """A node restored from durable state: a log with `terms` after an empty snapshot at 0
    carrying `conf` (etcd's tests do the same with MemoryStorage's ConfState)."""
    base = SnapshotMeta(0, 0, conf, 0)
    return Raft(
        make_config(node_id, **cfg),
        random.Random(node_id),
        hard_state=HardState(term, vote, commit),
        snapshot=base,
        entries=entries_with_terms(terms),
        applied=commit,
        snapshot_reader=FixedReader(),
    )


def drain(r: Raft) -> Ready:
    """Take the node's Ready and acknowledge it (as a driver that did everything)."""
    if not r.has_ready():
        return Ready()
    rd = r.ready()
    r.advance(rd)
    return rd


def sent(rd: Ready, kind: type, to: str | None = None) -> list[Any]:
    return [m for m in rd.messages if isinstance(m, kind) and (to is None or m.to == to)]


def make_leader(r: Raft, voters: Sequence[str] = ("2",)) -> Ready:
    """Campaign (PreVote off) and win with votes from `voters`; returns the Ready after."""
    r.campaign()
    drain(r)
    for v in voters:
        r.step(VoteResponse(v, r.id, r.term, granted=True))
    assert r.role_name == "leader"
    return drain(r)


def cluster(n: int = 3, learners: Sequence[str] = (), **cfg: Any) -> Cluster:
    """A bootstrapped cluster of n nodes ("1".."n") with node 1 elected, checked by
    RaftInvariants after every Ready."""
    c = Cluster(seed=0, checker=RaftInvariants())
    ids = [str(i) for i in range(1, n + 1)]
    conf = ConfState.of([i for i in ids if i not in learners], tuple(learners))
    for node_id in ids:
        c.add_node(node_id, make_config(node_id, **cfg), conf)
    c.stabilize()
    c.call("1", lambda r: r.campaign())
    c.stabilize()
    assert c.nodes["1"].core.role_name == "leader"
    return c


def propose_n(c: Cluster, node_id: str, count: int, prefix: str = "v") -> None:
    for k in range(count):
        data = f"{prefix}{k:03d}".encode()
        c.call(node_id, lambda r, d=data: r.propose(d))


# =============================================================================================
# Elections: votes, terms, PreVote, CheckQuorum


@pytest.mark.parametrize(
    ("voter_terms", "cand_last_term", "cand_last_index", "granted"),
    [
        # etcd TestVoter, the §5.4.1 table: same last term -> longer-or-equal log wins ...
        ([1], 1, 1, True),
        ([1], 1, 2, True),
        ([1, 1], 1, 1, False),
        # ... a higher last term wins whatever the length ...
        ([1], 2, 1, True),
        ([1], 2, 2, True),
        ([1, 1], 2, 1, True),
        # ... a lower last term loses whatever the length.
        ([2], 1, 1, False),
        ([2], 1, 2, False),
        ([2, 2], 1, 1, False),
        ([1, 1], 1, 1, False),
    ],
)
def test_vote_only_for_an_up_to_date_log(
    voter_terms: list[int], cand_last_term: int, cand_last_index: int, granted: bool
) -> None:
    """§5.4.1: "the voter denies its vote if its own log is more up-to-date than that of the
    candidate" (last term first, then length). etcd TestVoter."""
    r = restored("1", voter_terms, term=2, pre_vote=False)
    r.step(VoteRequest("2", "1", 3, cand_last_index, cand_last_term))
    (resp,) = sent(drain(r), VoteResponse)
    assert resp.granted is granted
    assert r.term == 3  # the higher term is adopted either way (§5.1)
    assert r.vote == ("2" if granted else None)


def test_one_vote_per_term_persisted_in_the_ready_that_sends_the_grant() -> None:
    """§5.2 "each server will vote for at most one candidate in a given term"; Figure 2:
    votedFor is persistent state "updated on stable storage before responding". The grant
    and the hard state carrying the vote are in the same Ready (step 1 before step 2), and a
    node restarted from that hard state still refuses a second candidate of the term."""
    r = restored("1", [1, 1], term=1, pre_vote=False)
    r.step(VoteRequest("2", "1", 2, 2, 1))
    rd = drain(r)
    assert sent(rd, VoteResponse, "2")[0].granted
    assert rd.hard_state == HardState(2, "2", 0)
    r.step(VoteRequest("3", "1", 2, 5, 1))
    assert not sent(drain(r), VoteResponse, "3")[0].granted

    again = Raft(
        make_config("1", pre_vote=False),
        random.Random(1),
        hard_state=rd.hard_state,
        snapshot=SnapshotMeta(0, 0, VOTERS3, 0),
        entries=entries_with_terms([1, 1]),
    )
    again.step(VoteRequest("3", "1", 2, 5, 1))
    assert not sent(drain(again), VoteResponse, "3")[0].granted
    again.step(VoteRequest("2", "1", 2, 2, 1))  # a retransmitted request is granted again
    assert sent(drain(again), VoteResponse, "2")[0].granted


def test_prevote_changes_neither_term_nor_vote_on_either_side() -> None:
    """Thesis §9.6: a PreVote "does not increment its term" and voters grant it without
    recording a vote; etcd: MsgPreVote never changes Term/Vote of the responder."""
    cand = restored("1", [1, 1], term=3, vote="1")
    cand.campaign()
    rd = drain(cand)
    assert cand.role_name == "precandidate"
    assert (cand.term, cand.vote) == (3, "1")
    assert rd.hard_state is None  # nothing to persist: no term, no vote change
    (pre,) = sent(rd, VoteRequest, "2")[:1]
    assert pre.pre and pre.term == 4

    voter = restored("2", [1, 1], term=3, vote="3")
    voter.step(pre)
    rd = drain(voter)
    assert sent(rd, VoteResponse)[0].granted
    assert (voter.term, voter.vote) == (3, "3")
    assert rd.hard_state is None


def test_check_quorum_lease_ignores_a_disruptive_candidate_but_not_a_transfer() -> None:
    """Thesis §4.2.3: "if a server receives a RequestVote request within the minimum election
    timeout of hearing from a current leader, it does not update its term or grant its vote";
    etcd lets a leadership transfer (campaignTransfer) through."""
    f = restored("2", [1, 1], term=2, check_quorum=True)
    f.step(Heartbeat("1", "2", 2, 0))
    drain(f)
    f.step(VoteRequest("3", "2", 3, 9, 2))
    assert (f.term, f.vote, f.leader) == (2, None, "1")
    assert not sent(drain(f), VoteResponse)
    f.step(VoteRequest("3", "2", 3, 9, 2, pre=True))
    assert f.term == 2 and not sent(drain(f), VoteResponse)
    f.step(VoteRequest("3", "2", 3, 9, 2, transfer=True))
    assert (f.term, f.vote) == (3, "3")
    assert sent(drain(f), VoteResponse)[0].granted


def test_check_quorum_lease_expires_after_an_election_timeout() -> None:
    """The lease lasts one election timeout after the leader was last heard (etcd
    `inLease`); past it, a higher-term vote request is handled normally (whether or not the
    follower has started its own pre-campaign meanwhile)."""
    f = restored("2", [1, 1], term=2, check_quorum=True, election_ticks=10)
    f.step(Heartbeat("1", "2", 2, 0))
    for _ in range(9):
        f.tick()
    f.step(VoteRequest("3", "2", 3, 9, 2))
    assert f.term == 2  # 9 ticks: still in the lease
    f.tick()
    f.step(VoteRequest("3", "2", 3, 9, 2))
    assert (f.term, f.vote) == (3, "3")


def test_leader_steps_down_when_no_quorum_answers_for_an_election_timeout() -> None:
    """Thesis §6.2 CheckQuorum: "a leader steps down if an election timeout elapses without a
    successful round of heartbeats to a majority of its cluster"."""
    c = cluster(3, check_quorum=True, election_ticks=10)
    c.partition([["1"], ["2", "3"]])
    for _ in range(25):
        c.tick("1")
        c.stabilize(["1"])
    assert c.nodes["1"].core.role_name == "follower"
    assert c.nodes["1"].core.term == 2  # stepping down does not need a new term


def test_leader_keeps_leading_while_a_quorum_answers() -> None:
    """CheckQuorum must not depose a leader that one follower of three still answers."""
    c = cluster(3, check_quorum=True, election_ticks=10)
    c.partition([["1", "2"], ["3"]])
    for _ in range(40):
        c.tick("1")
        c.stabilize(["1", "2"])
    assert c.nodes["1"].core.role_name == "leader"


@pytest.mark.parametrize(
    "message",
    [
        AppendRequest("2", "1", 5, 0, 0),
        Heartbeat("2", "1", 5, 0),
        SnapshotChunk("2", "1", 5, SnapshotMeta(9, 5, VOTERS3, 1), 0, b"x", True),
        AppendResponse("2", "1", 5, 0, reject=True),
        HeartbeatResponse("2", "1", 5),
        VoteResponse("2", "1", 5, granted=False),
        VoteRequest("2", "1", 5, 0, 0),
        TimeoutNow("2", "1", 5),
        ReadIndexResponse("2", "1", 5, b"r", reject=True),
    ],
    ids=lambda m: type(m).__name__,
)
def test_a_higher_term_makes_a_leader_a_follower_of_that_term(message: Message) -> None:
    """§5.1: "If a server receives a request or response with a higher term, it updates its
    term and reverts to follower" (etcd TestLeaderUpdateTermFromMessage), with the sender as
    leader for append/heartbeat/snapshot; check_quorum off so no lease hides the vote."""
    r = restored("1", [1], term=2, check_quorum=False, pre_vote=False)
    make_leader(r)
    r.step(message)
    if isinstance(message, TimeoutNow):
        assert r.role_name == "candidate" and r.term == 6  # a follower then obeys TimeoutNow
        return
    assert r.term == 5
    assert r.role_name == "follower"
    expect_leader = "2" if isinstance(message, AppendRequest | Heartbeat | SnapshotChunk) else None
    assert r.leader == expect_leader


def test_pre_vote_messages_at_a_higher_term_do_not_move_the_term() -> None:
    """etcd: a MsgPreVote, and a granted MsgPreVoteResp, carry a future term that the
    receiver must not adopt; a rejected pre-vote response does move the term."""
    r = restored("1", [1], term=2, check_quorum=False)
    r.step(VoteRequest("2", "1", 5, 9, 1, pre=True))
    assert r.term == 2
    r.campaign()
    r.step(VoteResponse("2", "1", 3, granted=True, pre=True))
    assert r.term == 3 and r.role_name == "candidate"  # won the pre-vote, campaigned at 3
    r2 = restored("1", [1], term=2, check_quorum=False)
    r2.campaign()
    r2.step(VoteResponse("2", "1", 7, granted=False, pre=True))
    assert r2.term == 7 and r2.role_name == "follower"


def test_stale_leader_learns_the_higher_term_from_a_follower() -> None:
    """etcd: with PreVote/CheckQuorum a follower answers a stale-term append or heartbeat with
    its term, else a leader cut off by a partition could never learn it was deposed."""
    f = restored("2", [1], term=5)
    f.step(Heartbeat("1", "2", 3, 0))
    (resp,) = sent(drain(f), AppendResponse)
    assert resp.term == 5 and resp.to == "1"
    old = restored("1", [1], term=2, check_quorum=False, pre_vote=False)
    make_leader(old)
    old.step(AppendResponse("2", "1", 5, 0, reject=True))
    assert old.role_name == "follower" and old.term == 5


def test_stale_term_messages_are_ignored() -> None:
    """§5.1: "If a server receives a request with a stale term number, it rejects the
    request" (etcd TestRejectStaleTermMessage): a stale append changes nothing."""
    f = restored("2", [1, 1], term=5, commit=1)
    f.step(AppendRequest("1", "2", 4, 2, 1, (Entry(4, 3, EntryKind.NORMAL, b"x"),), 3))
    assert f.last_index == 2 and f.commit == 1 and f.leader is None


# =============================================================================================
# Log replication: consistency check, conflicts, fast backtracking, commit


@pytest.mark.parametrize(
    ("leader_terms", "follower_terms", "hint_term", "hint_index", "next_term", "next_index"),
    [
        ([1, 2, 2, 4, 4, 4, 4], [1, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3], 3, 7, 2, 3),
        ([1, 2, 2, 3, 4, 4, 4, 5], [1, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3], 3, 8, 3, 4),
        ([1, 1, 1, 1], [1, 2, 2, 4], 1, 1, 1, 1),
        ([1, 1, 1, 1, 1, 1], [1, 2, 2, 4], 1, 1, 1, 1),
        ([1, 1, 1, 1], [1, 2, 2, 4, 4, 4], 1, 1, 1, 1),
        ([1, 1, 1, 4, 5], [1, 1, 1, 4], 4, 4, 4, 4),
        ([2, 5, 5, 5, 5, 5, 5, 5, 5], [2, 4, 4, 4, 4, 4], 4, 6, 2, 1),
        ([2, 2, 2, 2, 2], [2, 4, 4, 4, 4, 4, 4, 4], 2, 1, 2, 1),
    ],
)
def test_fast_log_rejection_etcd_table(
    leader_terms: list[int],
    follower_terms: list[int],
    hint_term: int,
    hint_index: int,
    next_term: int,
    next_index: int,
) -> None:
    """§5.3's optimization ("the follower can include the term of the conflicting entry and
    the first index it stores for that term"), as etcd implements it: the cases of etcd's
    TestFastLogRejection (all but the compacted-follower one, which etcd itself calls
    unrealistic). The follower's hint and the leader's next probe must match etcd's."""
    last = len(leader_terms)
    leader = restored("1", leader_terms, term=leader_terms[-1] - 1, commit=last, pre_vote=False)
    rd = make_leader(leader)
    assert leader.term == leader_terms[-1]
    follower = restored("2", follower_terms, term=leader.term, vote="1", commit=0)
    (probe,) = sent(rd, AppendRequest, "2")
    assert (probe.prev_index, probe.prev_term) == (last, leader_terms[-1])
    follower.step(probe)
    (reject,) = sent(drain(follower), AppendResponse)
    assert reject.reject
    assert (reject.hint_term, reject.hint_index) == (hint_term, hint_index)
    leader.step(reject)
    (retry,) = sent(drain(leader), AppendRequest, "2")
    assert (retry.prev_term, retry.prev_index) == (next_term, next_index)


@pytest.mark.parametrize(
    ("prev_index", "prev_term", "new_terms", "want_terms", "accepted"),
    [
        # etcd TestFollowerAppendEntries / TestFollowerCheckMsgApp (log: 1/1 2/2, commit 1)
        (2, 2, [3], [1, 2, 3], True),
        (1, 1, [3, 4], [1, 3, 4], True),  # conflict at 2: truncated from there
        (0, 0, [1], [1, 2], True),  # stale: prev below commit, nothing changes
        (0, 0, [1, 1], [1, 2], True),  # stale, conflicting at a committed index: kept
        (2, 1, [3], [1, 2], False),  # prev term mismatch
        (3, 2, [3], [1, 2], False),  # prev past the end
        (1, 1, [2], [1, 2], True),  # duplicate: nothing truncated
    ],
)
def test_follower_consistency_check_and_conflict_truncation(
    prev_index: int, prev_term: int, new_terms: list[int], want_terms: list[int], accepted: bool
) -> None:
    """§5.3: "If an existing entry conflicts with a new one (same index but different
    terms), delete the existing entry and all that follow it"; Figure 2: "Reply false if log
    doesn't contain an entry at prevLogIndex whose term matches prevLogTerm"; and a
    committed entry is never truncated (a stale append at or below commit is acknowledged
    with the commit index)."""
    f = restored("2", [1, 2], term=4, commit=1)
    ents = tuple(
        Entry(t, prev_index + 1 + k, EntryKind.NORMAL, b"e%d" % (prev_index + 1 + k))
        for k, t in enumerate(new_terms)
    )
    f.step(AppendRequest("1", "2", 4, prev_index, prev_term, ents, 1))
    (resp,) = sent(drain(f), AppendResponse)
    assert resp.reject is not accepted
    assert [e.term for e in f.entries(1, f.last_index + 1)] == want_terms
    assert f.commit == 1


def test_follower_commit_is_min_of_leader_commit_and_last_new_entry() -> None:
    """Figure 2: "If leaderCommit > commitIndex, set commitIndex = min(leaderCommit, index of
    last new entry)": a follower holding a longer, divergent tail must not commit it because
    the leader's commit is higher (etcd TestFollowerCommitEntry / handleAppendEntries)."""
    f = restored("2", [1, 1, 1, 1, 1, 1], term=2, commit=1)  # 6 entries of term 1
    f.step(AppendRequest("1", "2", 2, 2, 1, (), 6))  # probe at 2, leader commit 6
    assert f.commit == 2  # not 6: entries 3..6 are not known to match the leader's
    f.step(Heartbeat("1", "2", 2, 2))
    assert f.commit == 2


def test_leader_only_commits_entries_of_its_own_term_by_counting() -> None:
    """§5.4.2 / Figure 8: "Raft never commits log entries from previous terms by counting
    replicas. Only log entries from the leader's current term are committed by counting"
    (etcd TestLeaderOnlyCommitsLogFromCurrentTerm). Node 1 appends entry 5 at term 2 alone,
    restarts, wins term 3 with node 3's vote and replicates one entry per append: after node
    3 acknowledges 5 a quorum holds it, yet it commits only with the term-3 entry 6."""
    c = cluster(3, pre_vote=False, check_quorum=False, max_entries_per_append=1)
    c.partition([["1"], ["2", "3"]])
    c.call("1", lambda r: r.propose(b"old"))  # 2/5, on node 1 only
    c.stabilize(["1"])
    c.crash("1")
    c.restart("1")
    c.partition([["1", "3"], ["2"]])
    c.call("1", lambda r: r.campaign())
    commits: list[int] = []
    for _ in range(200):
        moved = False
        for node_id in ("1", "3"):
            moved |= c.process_ready(node_id)
            moved |= bool(c.deliver(node_id))
            commits.append(c.nodes["1"].core.commit)
        if not moved:
            break
    r1 = c.nodes["1"].core
    assert r1.role_name == "leader" and r1.term == 3
    assert [e.term for e in c.nodes["3"].core.entries(5, 7)] == [2, 3]
    assert r1.commit == 6
    assert 5 not in commits, "entry 5 (term 2) was committed by counting replicas"


# =============================================================================================
# Progress: probe / replicate / snapshot, in-flight bound


def _replicating_leader(**cfg: Any) -> Raft:
    leader = restored("1", [1, 1], term=1, commit=2, pre_vote=False, **cfg)
    make_leader(leader)  # empty entry 3 at term 2
    leader.step(AppendResponse("2", "1", 2, 3))
    drain(leader)
    assert leader.progress()["2"].describe().startswith("replicate match=3")
    return leader


def test_in_flight_appends_to_a_follower_are_bounded() -> None:
    """etcd Inflights: in REPLICATE state at most MaxInflightMsgs appends are outstanding;
    a silent follower gets no more until an answer (or a heartbeat answer) frees one."""
    leader = _replicating_leader(max_inflight_appends=4)
    appends = 0
    for k in range(20):
        leader.propose(b"p%d" % k)
        appends += sum(1 for m in sent(drain(leader), AppendRequest, "2") if m.entries)
    assert appends == 4
    leader.step(HeartbeatResponse("2", "1", 2))
    assert [m for m in sent(drain(leader), AppendRequest, "2") if m.entries]


def test_a_reject_in_replicate_state_probes_again_from_the_match_index() -> None:
    """etcd Progress.MaybeDecrTo in StateReplicate: a rejection above `match` sends the
    follower back to probing from match + 1, never below match (it is known to match)."""
    leader = _replicating_leader()
    for k in range(3):
        leader.propose(b"p%d" % k)  # pipelined appends 4, 5, 6
    drain(leader)
    leader.step(AppendResponse("2", "1", 2, 5, reject=True, hint_index=1, hint_term=1))
    pr = leader.progress()["2"]
    assert pr.state.value == "probe" and pr.match == 3
    (retry,) = sent(drain(leader), AppendRequest, "2")
    assert retry.prev_index == 3 and retry.entries[0].index == 4
    leader.step(AppendResponse("2", "1", 2, 2, reject=True, hint_index=1, hint_term=1))
    assert pr.match == 3 and pr.next == 4  # a stale reject below match changes nothing


def test_a_probe_answer_moves_the_follower_to_replicate() -> None:
    """etcd: an accepted probe turns StateProbe into StateReplicate (optimistic streaming)."""
    leader = restored("1", [1, 1], term=1, commit=2, pre_vote=False)
    make_leader(leader)
    assert leader.progress()["2"].state.value == "probe"
    leader.step(AppendResponse("2", "1", 2, 3))
    assert leader.progress()["2"].state.value == "replicate"


# =============================================================================================
# Snapshots: chunked streaming and installation


def _lagging_follower_cluster(**cfg: Any) -> tuple[Cluster, SnapshotMeta]:
    """Node 3 cut off while 1 and 2 commit 20 entries and compact: 3 needs a snapshot."""
    c = cluster(3, **cfg)
    c.partition([["1", "2"], ["3"]])
    propose_n(c, "1", 20)
    c.stabilize(["1", "2"])
    meta = c.compact("1")
    c.compact("2")
    assert meta is not None
    c.heal()
    c.tick("1")
    return c, meta


def _stream(c: Cluster, fault: Any, rounds: int = 400) -> int:
    """Run the cluster round by round, letting `fault(queue_messages)` tamper with the
    queue once per round; returns the snapshot chunks sent in all."""
    chunks = 0
    for _ in range(rounds):
        moved = False
        for node_id in c.ids():
            moved |= c.process_ready(node_id)
        chunks += sum(1 for m in c.queue if isinstance(m, SnapshotChunk))
        fault(c)
        for node_id in c.ids():
            moved |= bool(c.deliver(node_id))
        if not moved:
            break
    return chunks


def test_a_lost_snapshot_chunk_costs_one_resend_not_a_storm() -> None:
    """Regression (found by this review in 6d0140f, since fixed): the leader answered every
    SnapshotChunkResponse naming an already-acknowledged offset by resending its whole window,
    and each out-of-order chunk draws one such answer: one lost chunk grew the stream 4x per
    round trip (1,043,716 chunks of a 65-chunk snapshot, capped only by the outbox bound)."""
    c, meta = _lagging_follower_cluster(snapshot_chunk_bytes=4, max_snapshot_chunks_in_flight=4)
    needed = -(-meta.size_bytes // 4)
    lost: list[int] = []

    def lose_first_chunk(cl: Cluster) -> None:
        if not lost:
            dropped = cl.drop(lambda m: isinstance(m, SnapshotChunk) and m.offset == 0)
            if dropped:
                lost.append(dropped)

    chunks = _stream(c, lose_first_chunk)
    assert lost == [1]
    assert c.nodes["3"].core.snapshot_meta.index == meta.index
    assert chunks <= needed + 2 * 4, (chunks, needed)


def _run_with_duplicated_answer(adjacent: bool) -> tuple[int, int]:
    c, meta = _lagging_follower_cluster(snapshot_chunk_bytes=4, max_snapshot_chunks_in_flight=4)
    duplicated: list[SnapshotChunkResponse] = []

    def duplicate_first_answer(cl: Cluster) -> None:
        answers = [m for m in cl.queue if isinstance(m, SnapshotChunkResponse)]
        if answers and not duplicated:
            duplicated.append(answers[0])
            where = cl.queue.index(answers[0]) + 1 if adjacent else len(cl.queue)
            cl.queue.insert(where, answers[0])

    chunks = _stream(c, duplicate_first_answer)
    assert duplicated
    assert c.nodes["3"].core.snapshot_meta.index == meta.index
    return chunks, -(-meta.size_bytes // 4)


def test_a_late_duplicated_chunk_answer_is_ignored() -> None:
    """Regression (found by this review; fixed in the working tree): a duplicated answer
    arriving after newer ones (next_offset < acked) was taken for a follower restart and
    rewound the stream, after which every later chunk was sent twice."""
    chunks, needed = _run_with_duplicated_answer(adjacent=False)
    assert chunks <= needed + 2 * 4, (chunks, needed)


def test_an_adjacent_duplicated_chunk_answer_does_not_double_the_rest_of_the_stream() -> None:
    """Regression (found by this review, fixed in f5ab840 with SnapshotChunkResponse.gap): the
    network may duplicate a message (the simulator does; the copy usually arrives right
    behind the original). A duplicated answer (next_offset == acked) was taken for a lost
    chunk; the rewind's duplicate chunks drew answers that rewound again, and every later
    chunk was sent twice (129 chunks for 65). One duplicate may cost one window, no more."""
    chunks, needed = _run_with_duplicated_answer(adjacent=True)
    assert chunks <= needed + 2 * 4, (chunks, needed)


def test_snapshot_chunks_without_faults_are_each_sent_once_in_order() -> None:
    """InstallSnapshot in chunks: offsets strictly increase, each chunk exactly once, the last
    one marked `last`, and the follower's staging file receives them in order."""
    c, meta = _lagging_follower_cluster(snapshot_chunk_bytes=16, max_snapshot_chunks_in_flight=2)
    seen: list[SnapshotChunk] = []

    def record(cl: Cluster) -> None:
        seen.extend(m for m in cl.queue if isinstance(m, SnapshotChunk))

    _stream(c, record)
    offsets = [m.offset for m in seen]
    assert offsets == list(range(0, meta.size_bytes, 16))
    assert [m.last for m in seen] == [False] * (len(seen) - 1) + [True]
    assert c.nodes["3"].storage.snapshot_data == c.nodes["1"].storage.snapshot_data


def test_a_snapshot_older_than_the_commit_is_answered_with_the_commit_index() -> None:
    """etcd restore(): a snapshot at or below the follower's commit is ignored and the
    follower answers with its commit index (the leader then resumes appends from there)."""
    f = restored("2", [1, 1, 1, 1], term=2, commit=4)
    f.step(SnapshotChunk("1", "2", 2, SnapshotMeta(3, 1, VOTERS3, 2), 0, b"ab", True))
    rd = drain(f)
    assert rd.snapshot is None and not rd.snapshot_chunks
    (resp,) = sent(rd, AppendResponse)
    assert not resp.reject and resp.index == 4
    assert f.last_index == 4


def test_a_snapshot_whose_last_entry_we_hold_fast_forwards_the_commit() -> None:
    """etcd restore(): "if the log already has the snapshot's last entry, fast-forward the
    commit index and keep the log" (nothing discarded, no state machine restore)."""
    f = restored("2", [1, 1, 2, 2, 2], term=2, commit=2)
    f.step(SnapshotChunk("1", "2", 2, SnapshotMeta(4, 2, VOTERS3, 2), 0, b"ab", True))
    rd = drain(f)
    assert rd.snapshot is None and f.commit == 4 and f.last_index == 5


def test_an_installed_snapshot_replaces_the_log_and_restores_its_membership() -> None:
    """A snapshot whose last entry conflicts with the follower's log replaces the whole log
    (§7: "the follower discards its entire log"); the membership is the snapshot's (§7: the
    snapshot "includes the latest configuration as of the last included index")."""
    f = restored("2", [1, 1, 1, 1], term=3, commit=2)
    conf = ConfState.of(["1", "2"], ("4",))
    meta = SnapshotMeta(6, 3, conf, 3)
    f.step(SnapshotChunk("1", "2", 3, meta, 0, b"abc", True))
    rd = drain(f)
    assert rd.snapshot == meta and rd.snapshot_chunks[0].data == b"abc"
    assert (f.last_index, f.commit, f.applied) == (6, 6, 6)
    assert f.conf == conf
    assert rd.hard_state is not None and rd.hard_state.commit == 6


def test_entries_appended_after_a_snapshot_in_the_same_ready_survive_a_restart() -> None:
    """Regression (harness order fixed in 6d0140f): a Ready can carry a snapshot *and* entries
    after it (an append matching the snapshot arrives before the driver takes the Ready);
    installing the snapshot discards the stored log, so the entries must be written after
    it, or an acknowledged entry is lost at the next restart."""
    c, meta = _lagging_follower_cluster()
    c.call("1", lambda r: r.propose(b"after"))
    c.stabilize(["1", "2"])
    leader = c.nodes["1"].core
    data = c.nodes["1"].read_chunk(meta, 0, meta.size_bytes)
    c.queue.clear()
    c.step("3", SnapshotChunk("1", "3", leader.term, meta, 0, data, True))
    tail = tuple(leader.entries(meta.index + 1, leader.last_index + 1))
    c.step("3", AppendRequest("1", "3", leader.term, meta.index, meta.term, tail, leader.commit))
    c.process_ready("3")
    acked = max(m.index for m in c.queue if isinstance(m, AppendResponse) and not m.reject)
    assert acked == leader.last_index
    c.crash("3")
    c.restart("3")
    assert c.nodes["3"].core.last_index == acked


def test_a_new_node_joins_by_snapshot_as_a_learner_and_is_promoted() -> None:
    """Thesis §4.2.1: a new server joins as a non-voting member and catches up (here by
    snapshot, the log being compacted), then is promoted; its membership comes from the
    snapshot and the entries after it."""
    c = cluster(3)
    propose_n(c, "1", 5)
    c.stabilize()
    c.compact("1")
    c.add_node("4", make_config("4"), None)
    c.call("1", lambda r: r.propose_conf_change(ConfChange(ConfChangeOp.ADD_LEARNER, "4")))
    c.stabilize()
    r4 = c.nodes["4"].core
    assert r4.snapshot_meta.index > 0 and r4.role_name == "learner"
    assert r4.last_index == c.nodes["1"].core.last_index
    c.call("1", lambda r: r.propose_conf_change(ConfChange(ConfChangeOp.PROMOTE, "4")))
    c.stabilize()
    assert c.nodes["4"].core.conf.voters == ("1", "2", "3", "4")
    assert c.nodes["4"].storage.sm == c.nodes["1"].storage.sm


def test_a_proposal_that_cannot_fit_one_append_is_refused() -> None:
    """messages.py: "Every message the core builds stays under [MAX_MESSAGE_BYTES]"; an entry
    that no AppendRequest can carry must be refused at `propose` (ProposalDropped), leaving
    the log unchanged, rather than accepted and never replicated."""
    leader = _replicating_leader()
    last = leader.last_index
    with pytest.raises(ProposalDropped):
        leader.propose(bytes(MAX_MESSAGE_BYTES))
    assert leader.last_index == last


# =============================================================================================
# Membership: one server at a time, applied at append


def test_conf_change_waits_for_an_entry_of_the_leaders_term_and_for_the_previous_change() -> None:
    """Ongaro, raft-dev 2015 ("bug in single-server membership changes"): a leader may not
    append a configuration change until it has committed an entry of its own term; and one
    change at a time (thesis §4.1: the next starts only once the previous is committed)."""
    leader = restored("1", [1, 1], term=1, commit=2, pre_vote=False)
    make_leader(leader)
    add4 = ConfChange(ConfChangeOp.ADD_LEARNER, "4")
    with pytest.raises(ConfChangeRejected):
        leader.propose_conf_change(add4)
    assert leader.last_index == 3 and leader.conf == VOTERS3
    leader.step(AppendResponse("2", "1", 2, 3))  # the term-2 entry commits
    assert leader.commit == 3
    index = leader.propose_conf_change(add4)
    assert leader.conf.learners == ("4",)  # in force at append
    with pytest.raises(ConfChangeRejected):
        leader.propose_conf_change(ConfChange(ConfChangeOp.PROMOTE, "4"))
    drain(leader)  # the change's entry is durable on the leader: it counts itself for it
    leader.step(AppendResponse("2", "1", 2, index))
    assert leader.commit == index
    leader.propose_conf_change(ConfChange(ConfChangeOp.PROMOTE, "4"))
    assert leader.conf.voters == ("1", "2", "3", "4")


def test_a_truncated_conf_change_reverts_the_configuration() -> None:
    """Thesis §4.1: "a server always uses the latest configuration in its log, regardless of
    whether the entry is committed"; so when a new leader truncates an uncommitted change,
    the follower's configuration reverts to the previous one."""
    f = restored("2", [1, 1], term=2, commit=2)
    remove3 = Entry(2, 3, EntryKind.CONF_CHANGE, ConfChange(ConfChangeOp.REMOVE, "3").encode())
    f.step(AppendRequest("1", "2", 2, 2, 1, (remove3,), 2))
    assert f.conf.voters == ("1", "2")
    f.step(AppendRequest("3", "2", 3, 2, 1, (Entry(3, 3, EntryKind.NORMAL, b""),), 2))
    assert f.entries(3, 4)[0].term == 3
    assert f.conf == VOTERS3
    drain(f)
    restarted = Raft(
        make_config("2"),
        random.Random(2),
        hard_state=f.hard_state(),
        snapshot=SnapshotMeta(0, 0, VOTERS3, 0),
        entries=f.entries(1, f.last_index + 1),
    )
    assert restarted.conf == VOTERS3


def test_a_leader_that_removes_itself_leads_until_the_removal_commits() -> None:
    """Thesis §4.2.2: the removed leader "steps down once the Cnew entry is committed"; until
    then it manages the cluster without counting itself in majorities."""
    c = cluster(3)
    c.partition([["1", "2"], ["3"]])
    c.call("1", lambda r: r.propose_conf_change(ConfChange(ConfChangeOp.REMOVE, "1")))
    c.stabilize(["1", "2"])
    r1 = c.nodes["1"].core
    assert r1.role_name == "leader" and r1.conf.voters == ("2", "3")
    removal = r1.last_index
    assert r1.commit < removal  # 2 alone is not a majority of {2, 3}: 1 is not counted
    c.heal()
    c.tick("1")
    c.stabilize()
    assert r1.commit >= removal and r1.role_name == "follower"
    # Since 132fc8f the stepping-down leader broadcasts the commit and hands over with
    # TimeoutNow: the others apply the removal and elect a leader without waiting out an
    # election timeout (no tick happened since the heal).
    assert all(c.nodes[n].core.commit >= removal for n in ("2", "3"))
    assert sorted(c.nodes[n].core.role_name for n in ("2", "3")) == ["follower", "leader"]


def test_learners_do_not_count_towards_a_quorum() -> None:
    """etcd/thesis §4.2.1: non-voting members receive the log but are not counted in
    majorities: voters {1, 2} with learner 3 cannot commit without 2."""
    c = cluster(3, learners=("3",))
    c.partition([["1", "3"], ["2"]])
    before = c.nodes["1"].core.commit
    c.call("1", lambda r: r.propose(b"x"))
    c.stabilize(["1", "3"])
    assert c.nodes["3"].core.last_index == c.nodes["1"].core.last_index
    assert c.nodes["1"].core.commit == before
    c.heal()
    c.tick("1")
    c.stabilize()
    assert c.nodes["1"].core.commit == c.nodes["1"].core.last_index


def test_a_learner_never_campaigns() -> None:
    """A learner has no vote to give itself: however long it waits, it stays a learner."""
    c = cluster(3, learners=("3",))
    c.partition([["1", "2"], ["3"]])
    for _ in range(100):
        c.tick("3")
        c.stabilize(["3"])
    assert c.nodes["3"].core.role_name == "learner"
    assert c.nodes["3"].core.term == c.nodes["1"].core.term


def test_a_healthy_learner_is_promoted_right_after_a_checkquorum_round_starts() -> None:
    """Regression: the promotion check read `recent_active`, which CheckQuorum clears at the
    start of every round, so a learner that had answered a heartbeat a tick earlier was refused
    ("has not answered") until its next answer: ~5% of PROMOTEs in tests/kv failed so. The
    check is "heard within the last election timeout", a sliding window."""
    c = cluster(2, learners=("2",), election_ticks=10)
    c.stabilize()
    leader = c.nodes["1"].core
    while leader._election_elapsed != leader.config.election_ticks - 1:
        c.tick("1")
        c.stabilize()  # the learner answers every heartbeat
    c.tick("1")  # the round boundary: CheckQuorum clears recent_active, no answer yet
    assert leader._election_elapsed == 0 and not leader.progress()["2"].recent_active
    leader.propose_conf_change(ConfChange(ConfChangeOp.PROMOTE, "2"))
    assert leader.conf.voters == ("1", "2")


def test_promoting_a_learner_that_is_down_or_behind_is_refused() -> None:
    """Regression (found by this review, fixed in f5ab840): thesis §4.2.1, new servers stay
    non-voting until caught up; etcd's server refuses to promote a learner that is not ready.
    PROMOTE used to be accepted for any learner: with 1 voter and a down learner, promoted,
    the cluster could never commit again (the leader stepped down by CheckQuorum and could
    not be re-elected). A learner silent for a CheckQuorum round, or too far behind, is
    refused (one that dies within the current round cannot be told apart from a live one)."""
    c = cluster(2, learners=("2",), election_ticks=10)
    c.crash("2")
    leader = c.nodes["1"].core
    for _ in range(10):  # one CheckQuorum round without an answer from the learner
        c.tick("1")
        c.stabilize(["1"])
    with pytest.raises(ConfChangeRejected):
        leader.propose_conf_change(ConfChange(ConfChangeOp.PROMOTE, "2"))
    leader.propose(b"still available")
    c.stabilize(["1"])
    assert leader.commit == leader.last_index

    c = cluster(2, learners=("2",), promote_max_lag_entries=5)
    c.partition([["1"], ["2"]])
    propose_n(c, "1", 10)
    c.stabilize(["1"])
    with pytest.raises(ConfChangeRejected):
        c.nodes["1"].core.propose_conf_change(ConfChange(ConfChangeOp.PROMOTE, "2"))
    c.heal()
    c.tick("1")
    c.stabilize()
    c.nodes["1"].core.propose_conf_change(ConfChange(ConfChangeOp.PROMOTE, "2"))


# =============================================================================================
# Leadership transfer


def test_transfer_to_a_lagging_target_catches_it_up_before_timeout_now() -> None:
    """Thesis §3.10: the leader "stops accepting new client requests", brings the target's
    log up to date, then sends TimeoutNow; the target then wins at once."""
    c = cluster(3)
    c.partition([["1", "2"], ["3"]])
    propose_n(c, "1", 5)
    c.stabilize(["1", "2"])
    c.heal()
    r1 = c.nodes["1"].core
    c.call("1", lambda r: r.transfer_leadership("3"))
    with pytest.raises(ProposalDropped):
        r1.propose(b"refused")
    timeout_now_sent_at: list[tuple[int, int]] = []
    for _ in range(100):
        moved = False
        for node_id in c.ids():
            moved |= c.process_ready(node_id)
        for m in c.queue:
            if isinstance(m, TimeoutNow):
                timeout_now_sent_at.append((r1.progress()["3"].match, r1.last_index))
        for node_id in c.ids():
            moved |= bool(c.deliver(node_id))
        if not moved:
            break
    assert timeout_now_sent_at and all(a == b for a, b in timeout_now_sent_at)
    assert c.nodes["3"].core.role_name == "leader"
    assert r1.role_name == "follower"


def test_a_transfer_is_abandoned_after_an_election_timeout() -> None:
    """Thesis §3.10: "if the transfer does not complete within an election timeout, the
    leader aborts the transfer and resumes accepting client requests"."""
    c = cluster(3, election_ticks=10)
    c.partition([["1", "2"], ["3"]])
    c.call("1", lambda r: r.transfer_leadership("3"))
    r1 = c.nodes["1"].core
    for _ in range(9):
        c.tick("1")
        c.stabilize(["1", "2"])
    with pytest.raises(ProposalDropped):
        r1.propose(b"still refused")
    c.tick("1")
    c.stabilize(["1", "2"])
    assert r1.role_name == "leader"
    r1.propose(b"accepted again")


def test_transfer_to_a_learner_or_from_a_follower_is_refused() -> None:
    """Only a voter can lead; only the leader can hand leadership over."""
    c = cluster(3, learners=("3",))
    with pytest.raises(Exception, match="not a voter"):
        c.nodes["1"].core.transfer_leadership("3")
    with pytest.raises(NotLeader):
        c.nodes["2"].core.transfer_leadership("1")


def test_a_transfer_back_to_the_leader_itself_aborts_the_pending_transfer() -> None:
    """etcd stepLeader MsgTransferLeader: a new request first aborts a pending transfer to
    another node; a transfer to itself then is a no-op, leaving the leader leading and
    accepting proposals (etcd TestLeaderTransferBack)."""
    c = cluster(3)
    c.partition([["1", "2"], ["3"]])
    leader = c.nodes["1"].core
    leader.transfer_leadership("3")
    leader.transfer_leadership("1")
    leader.propose(b"accepted")


def test_a_transferee_can_be_removed_once_the_transfer_is_abandoned() -> None:
    """Thesis §3.10 / etcd (MsgProp dropped while leadTransferee != None): a conf change is a
    proposal, refused while a transfer is pending; once the transfer is abandoned after an
    election timeout, the unreachable target can be removed and the cluster goes on."""
    c = cluster(3)
    propose_n(c, "1", 1)
    c.stabilize()
    c.partition([["1", "2"], ["3"]])
    leader = c.nodes["1"].core
    leader.transfer_leadership("3")
    with pytest.raises(ProposalDropped):
        leader.propose_conf_change(ConfChange(ConfChangeOp.REMOVE, "3"))
    for _ in range(2 * leader.config.election_ticks):
        c.tick("1")
        c.stabilize(["1", "2"])
    leader.propose_conf_change(ConfChange(ConfChangeOp.REMOVE, "3"))
    c.stabilize(["1", "2"])
    assert leader.conf.voters == ("1", "2")
    leader.propose(b"after removal")


def test_a_stuck_candidate_with_a_higher_term_is_freed_by_check_quorum() -> None:
    """etcd TestFreeStuckCandidateWithCheckQuorum: without PreVote, a partitioned node's
    term runs ahead; once healed, followers in lease ignore its votes, but the leader's
    heartbeat draws an answer carrying the higher term, the leader steps down, and the
    cluster converges on one term with one leader."""
    c = cluster(3, pre_vote=False, check_quorum=True)
    c.partition([["1", "2"], ["3"]])
    for _ in range(2):
        c.call("3", lambda r: r.campaign())
        c.stabilize(["3"])
    stuck_term = c.nodes["3"].core.term
    assert stuck_term > c.nodes["1"].core.term
    c.heal()
    for _ in range(80):
        for node_id in c.ids():
            c.tick(node_id)
        c.stabilize()
        roles = [c.nodes[n].core.role_name for n in c.ids()]
        terms = {c.nodes[n].core.term for n in c.ids()}
        if roles.count("leader") == 1 and len(terms) == 1:
            break
    assert roles.count("leader") == 1 and len(terms) == 1 and min(terms) >= stuck_term


def test_removing_a_dead_voter_lets_pending_entries_commit() -> None:
    """etcd TestCommitAfterRemoveNode: with voters {1, 2} and 2 down, an entry cannot commit;
    once the removal of 2 is appended (in force at append), the leader alone is the majority
    and the pending entry commits with it."""
    c = cluster(2)
    c.crash("2")
    leader = c.nodes["1"].core
    index = leader.propose(b"pending")
    c.stabilize(["1"])
    assert leader.commit < index
    leader.propose_conf_change(ConfChange(ConfChangeOp.REMOVE, "2"))
    c.stabilize(["1"])
    assert leader.commit == leader.last_index > index


def test_a_learner_votes_when_asked() -> None:
    """etcd TestLearnerCanVote: "learners must be allowed to cast votes" (a learner may have
    been promoted without knowing it yet); only the candidate's tally ignores non-voters."""
    f = restored("3", [1], term=1, conf=ConfState.of(["1", "2"], ("3",)))
    assert f.role_name == "learner"
    f.step(VoteRequest("2", "3", 2, 1, 1))
    assert sent(drain(f), VoteResponse)[0].granted


# =============================================================================================
# ReadIndex (thesis §6.4, safe mode)


def test_read_index_waits_for_an_entry_of_the_leaders_term_then_a_heartbeat_quorum() -> None:
    """Thesis §6.4: (1) "if the leader has not yet marked an entry from its current term
    committed, it waits until it has"; (2) it records its commit index; (3) "the leader sends
    a new round of heartbeats and waits for their acknowledgments from a majority"."""
    leader = restored("1", [1, 1], term=1, commit=2, pre_vote=False)
    make_leader(leader)
    leader.read_index(b"r1")
    rd = drain(leader)
    assert not rd.read_states and not [m for m in sent(rd, Heartbeat) if m.context]
    leader.step(AppendResponse("2", "1", 2, 3))  # the empty term-2 entry commits
    beats = [m for m in sent(drain(leader), Heartbeat) if m.context]
    assert {m.to for m in beats} == {"2", "3"}
    leader.step(HeartbeatResponse("3", "1", 2, b"not-a-round"))
    assert not drain(leader).read_states
    leader.step(HeartbeatResponse("3", "1", 2, beats[0].context))
    assert drain(leader).read_states[0].request_id == b"r1"


def test_read_index_is_confirmed_by_a_majority_of_voters_only() -> None:
    """A heartbeat ack from a learner does not count; with 5 voters the leader needs two
    more voters' acks (3 of 5)."""
    conf = ConfState.of(["1", "2", "3", "4", "5"], ("6",))
    leader = restored("1", [1], term=1, commit=1, pre_vote=False, conf=conf)
    make_leader(leader, voters=("2", "3"))
    leader.step(AppendResponse("2", "1", 2, 2))
    leader.step(AppendResponse("3", "1", 2, 2))
    drain(leader)
    leader.read_index(b"r")
    (ctx,) = {m.context for m in sent(drain(leader), Heartbeat) if m.context}
    leader.step(HeartbeatResponse("6", "1", 2, ctx))
    leader.step(HeartbeatResponse("2", "1", 2, ctx))
    assert not drain(leader).read_states
    leader.step(HeartbeatResponse("4", "1", 2, ctx))
    (rs,) = drain(leader).read_states
    assert rs.index == 2


def test_a_follower_forwarded_read_gets_the_leaders_commit_index() -> None:
    """etcd MsgReadIndex from a follower: the leader confirms its leadership and answers with
    the commit index it recorded; the follower serves once applied reaches it."""
    c = cluster(3)
    propose_n(c, "1", 3)
    c.stabilize()
    c.call("2", lambda r: r.read_index(b"f1"))
    c.stabilize()
    assert c.read_results["2"] == [(b"f1", c.nodes["1"].core.commit)]


def test_pending_reads_are_dropped_when_leadership_is_lost() -> None:
    """etcd drops pending read-only requests on becoming a follower; here they are failed
    explicitly (local ones in Ready.dropped_reads, forwarded ones with a rejecting answer)."""
    leader = restored("1", [1, 1], term=1, commit=2, pre_vote=False)
    make_leader(leader)
    leader.step(AppendResponse("2", "1", 2, 3))
    drain(leader)
    leader.read_index(b"local")
    leader.step(ReadIndexRequest("2", "1", 2, b"fwd"))
    drain(leader)
    leader.step(Heartbeat("3", "1", 5, 0))  # a new leader of term 5
    rd = drain(leader)
    assert rd.dropped_reads == (b"local",)
    (answer,) = sent(rd, ReadIndexResponse, "2")
    assert answer.reject and answer.context == b"fwd"


def test_a_read_forwarded_to_a_non_leader_is_rejected() -> None:
    """A follower or candidate that receives a forwarded read cannot serve it: it answers
    `reject` so the requester retries (rather than waiting forever)."""
    f = restored("2", [1], term=2)
    f.step(ReadIndexRequest("3", "2", 2, b"q"))
    (answer,) = sent(drain(f), ReadIndexResponse)
    assert answer.reject


# =============================================================================================
# Restart and the Ready contract


def test_bootstrap_persists_its_entries_and_hard_state_in_the_first_ready() -> None:
    """etcd Bootstrap: the initial configuration entries are written to storage like any
    other; the first Ready must carry them and the hard state (term 1, commit n), else a
    crash after that Ready would leave a node whose commit passes its durable log."""
    r = Raft(make_config("1"), random.Random(1), initial_conf=VOTERS3)
    rd = r.ready()
    assert [e.index for e in rd.entries] == [1, 2, 3]
    assert all(e.kind is EntryKind.CONF_CHANGE for e in rd.entries)
    assert rd.hard_state == HardState(1, None, 3)
    assert [e.index for e in rd.committed_entries] == [1, 2, 3]


def test_restart_of_every_node_resumes_from_hard_state_snapshot_log_and_applied() -> None:
    """Figure 2's persistent state (currentTerm, votedFor, log[]) plus the snapshot and the
    applied index are all a node needs: after all nodes crash and restart, each has the same
    term, vote, log, membership and state machine, and the cluster keeps committing."""
    c = cluster(3)
    propose_n(c, "1", 6)
    c.stabilize()
    c.call("1", lambda r: r.propose_conf_change(ConfChange(ConfChangeOp.REMOVE, "3")))
    c.stabilize()
    c.compact("2")
    propose_n(c, "1", 2, "w")
    c.stabilize()
    before = {
        n: (
            c.nodes[n].core.hard_state(),
            c.nodes[n].core.last_index,
            c.nodes[n].core.conf,
            list(c.nodes[n].storage.sm),
        )
        for n in c.ids()
    }
    for n in c.ids():
        c.crash(n)
        c.restart(n)
    after = {
        n: (
            c.nodes[n].core.hard_state(),
            c.nodes[n].core.last_index,
            c.nodes[n].core.conf,
            list(c.nodes[n].storage.sm),
        )
        for n in c.ids()
    }
    assert after == before
    assert c.nodes["2"].core.snapshot_meta.index > 0
    for _ in range(60):
        for n in ("1", "2"):
            c.tick(n)
        c.stabilize()
    leader = next(n for n in ("1", "2") if c.nodes[n].core.role_name == "leader")
    c.call(leader, lambda r: r.propose(b"after restart"))
    c.stabilize()
    c.spread_commit(leader)
    assert c.nodes["1"].storage.sm[-1] == c.nodes["2"].storage.sm[-1] == b"after restart"


def test_truncation_while_a_ready_is_out_keeps_the_durable_prefix_stable() -> None:
    """Regression (found by this review in 6d0140f, since fixed): `advance` marked entries
    durable only if the Ready's *last* entry was still in the log; after a newer leader
    truncated part of that Ready's entries (the core may be stepped while a Ready is out),
    nothing was marked durable although the surviving prefix was, so `applied` passed the
    "unstable" mark and `compact()` died on an AssertionError after changing the membership
    bookkeeping. 5 voters: 3, 4, 5 can elect 3 at term 3 with a log that ends at 6."""
    conf = ConfState.of(["1", "2", "3", "4", "5"])
    r = restored("2", [1, 1, 1], term=2, commit=3, conf=conf)
    drain(r)
    ents = tuple(Entry(2, i, EntryKind.NORMAL, b"a%d" % i) for i in range(4, 9))
    r.step(AppendRequest("1", "2", 2, 3, 1, ents, 6))
    out = r.ready()
    assert [e.index for e in out.entries] == [4, 5, 6, 7, 8]
    r.step(AppendRequest("3", "2", 3, 6, 2, (Entry(3, 7, EntryKind.NORMAL, b"b7"),), 6))
    r.advance(out)
    meta = SnapshotMeta(6, 2, conf, 10)
    r.compact(meta)
    rd = drain(r)
    assert [(e.index, e.term) for e in rd.entries] == [(7, 3)]


class ContractCluster(Cluster):
    """The harness cluster, checking at each send that the sender's durable state already
    holds what the message claims (Ready's contract: step 1 before step 2)."""

    violations: list[str]

    def _send(self, m: Message) -> None:
        s = self.nodes[m.frm].storage
        snap_index = s.snapshot.index if s.snapshot else 0
        stored_last = snap_index + len(s.entries)

        def vote_durable(term: int, candidate: str) -> bool:
            # A later durable term is fine too: the node can no longer act in `term`.
            return s.hard.term > term or (s.hard.term == term and s.hard.vote == candidate)

        if isinstance(m, VoteRequest) and not m.pre and not vote_durable(m.term, m.frm):
            self.violations.append(f"vote request before own vote durable: {m}")
        granted = isinstance(m, VoteResponse) and m.granted and not m.pre
        if granted and not vote_durable(m.term, m.to):
            self.violations.append(f"vote granted before durable: {m} hard={s.hard}")
        acked = isinstance(m, AppendResponse) and not m.reject and m.index > snap_index
        if acked and stored_last < m.index:
            self.violations.append(f"ack of {m.index} with durable log at {stored_last}")
        if isinstance(m, AppendRequest | Heartbeat | SnapshotChunk) and not vote_durable(
            m.term, m.frm
        ):
            # A leader's appends may leave before its new entries are durable (ready.py, step
            # 0), never before its term and its vote for itself are.
            self.violations.append(f"a leader's message before its term is durable: {m}")
        if isinstance(m, AppendRequest | Heartbeat) and m.commit > stored_last:
            # The commit index it carries counts the leader only for its durable entries.
            self.violations.append(f"commit {m.commit} sent past the durable {stored_last}: {m}")
        super()._send(m)


@pytest.mark.parametrize("seed", range(12))
def test_no_message_leaves_before_what_it_depends_on_is_durable(seed: int) -> None:
    """Ready's contract (ready.py): a vote, a vote grant and an append acknowledgement are
    durable before the message is sent; a leader's appends, heartbeats and snapshot chunks
    only need its term and vote durable (its entries may follow, thesis §10.2.1). Random
    delivery order, loss, partitions, crashes and restarts, proposals and compaction over 12
    seeds; the invariant checker watches that no committed entry is lost."""
    rng = random.Random(seed)
    c = ContractCluster(seed=seed, checker=RaftInvariants())
    c.violations = []
    ids = ["1", "2", "3", "4", "5"]
    for node_id in ids:
        c.add_node(node_id, make_config(node_id, election_ticks=5), ConfState.of(ids))
    for step in range(3000):
        action = rng.random()
        alive = c.alive()
        if not alive:
            c.restart(rng.choice(ids))
            continue
        node_id = rng.choice(alive)
        if action < 0.30:
            c.process_ready(node_id)
        elif action < 0.75:
            for _ in range(min(len(c.queue), 3)):
                m = c.queue.pop(rng.randrange(min(len(c.queue), 8)))  # mild reordering
                if rng.random() > 0.05:  # 5% loss
                    c.step(m.to, m)
        elif action < 0.85:
            c.tick(node_id)
        elif action < 0.95:
            if c.nodes[node_id].core.role_name == "leader":
                c.call(node_id, lambda r, k=step: r.propose(b"p%d" % k))
        elif action < 0.96:
            c.crash(node_id)
        elif action < 0.97:
            c.partition([rng.sample(ids, 2)])
        elif action < 0.99:
            c.heal()
        else:
            c.compact(node_id)
        for down in [n for n in ids if c.nodes[n].raft is None]:
            if rng.random() < 0.02:
                c.restart(down)
    assert max(c.nodes[n].storage.applied for n in ids) > 5  # the run did replicate
    assert not c.violations, c.violations[:5]


# =============================================================================================
# A peer's bad message: RemoteProtocolError with the state untouched, never an AssertionError


def _status(r: Raft) -> tuple[Any, ...]:
    progress = tuple((k, p.describe(), p.recent_active) for k, p in sorted(r.progress().items()))
    return (
        r.status(),
        r.hard_state(),
        tuple(r.entries(r.snapshot_meta.index + 1, r.last_index + 1)),
        r.snapshot_meta,
        r.conf,
        progress,
        r.has_ready(),
    )


@pytest.mark.parametrize(
    "message",
    [
        AppendRequest("x", "9", 0, 0, 0, (Entry(0, 1, EntryKind.NORMAL, b"evil"),), 1),
        AppendRequest("1", "9", 3, 0, 0, (Entry(0, 1, EntryKind.NORMAL, b"evil"),), 0),
        Heartbeat("x", "9", 0, 0),
        VoteRequest("x", "9", 0, 0, 0),
        TimeoutNow("x", "9", 0),
    ],
    ids=["term0-append", "term0-entry", "term0-heartbeat", "term0-vote", "term0-timeout"],
)
def test_term_zero_requests_and_entries_are_refused(message: Message) -> None:
    """Regression (found by this review in 6d0140f, since fixed): messages.py says the core
    never sends term 0 and entries have term >= 1, but a fresh (joining) node at term 0
    accepted a term-0 append and *committed* its entry; the real leader's log then never
    replaced it (the entry was committed), wedging the node forever."""
    fresh = Raft(make_config("9"), random.Random(9), snapshot_reader=FixedReader())
    before = _status(fresh)
    with pytest.raises(RemoteProtocolError):
        fresh.step(message)
    assert _status(fresh) == before


def _leader_streaming_to_3() -> tuple[Cluster, Raft]:
    c, _meta = _lagging_follower_cluster(snapshot_chunk_bytes=8, max_snapshot_chunks_in_flight=2)
    for _ in range(50):
        c.tick("1")
        for node_id in c.ids():
            c.process_ready(node_id)
        for node_id in c.ids():
            c.deliver(node_id)
        if c.nodes["1"].core.progress()["3"].stream is not None:
            break
    leader = c.nodes["1"].core
    assert leader.progress()["3"].stream is not None
    return c, leader


def test_a_bad_snapshot_chunk_answer_leaves_the_leader_untouched() -> None:
    """Regression (found by this review, fixed in f5ab840): errors.py says "`step` raises it
    *before* touching any state", but a SnapshotChunkResponse past the snapshot's size marked
    its sender recent_active (CheckQuorum) before the RemoteProtocolError."""
    _cluster, leader = _leader_streaming_to_3()
    pr = leader.progress()["3"]
    assert pr.stream is not None
    pr.recent_active = False  # as right after a CheckQuorum round
    before = _status(leader)
    bad = SnapshotChunkResponse("3", "1", leader.term, pr.stream.meta.index, 10**9)
    with pytest.raises(RemoteProtocolError):
        leader.step(bad)
    assert _status(leader) == before


#: Examples per fuzz test; raise it for a longer hunt (DETSIM_REVIEW_FUZZ_EXAMPLES=5000).
FUZZ_EXAMPLES = int(os.environ.get("DETSIM_REVIEW_FUZZ_EXAMPLES", "300"))
IDS = ("1", "2", "3", "4", "9")
#: Request ids (ASCII: the harness prints them).
CONTEXTS = st.sampled_from([b"", b"rd", b"q", b"local"])
CONFS = (
    VOTERS3,
    ConfState.of(["1"]),
    ConfState.of([]),
    ConfState.of(["1", "2"], ("3",)),
    ConfState.of(["9"]),
)


def _fuzz_states() -> dict[str, Cluster]:
    states: dict[str, Cluster] = {}
    c = cluster(3, snapshot_chunk_bytes=8, max_snapshot_chunks_in_flight=2)
    propose_n(c, "1", 3)
    c.stabilize()
    states["steady"] = c
    streaming, _ = _leader_streaming_to_3()
    states["streaming"] = streaming
    pre = copy.deepcopy(c)
    pre.tick("2", 30)
    states["precandidate"] = pre
    joining = copy.deepcopy(c)
    joining.add_node("9", make_config("9"), None)
    states["joining"] = joining
    learner = cluster(4, learners=("4",))
    learner.call("1", lambda r: r.propose(b"z"))
    learner.stabilize()
    states["learner"] = learner
    return states


FUZZ_STATES = _fuzz_states()


@st.composite
def _entries(draw: st.DrawFn, prev_index: int, max_term: int) -> tuple[Entry, ...]:
    term = draw(st.sampled_from([max_term, max_term, max_term - 1, 0, 1]))
    first = prev_index + 1 + draw(st.sampled_from([0, 0, 0, 0, 1, -1]))
    out = []
    for k in range(draw(st.integers(0, 4))):
        term = draw(st.sampled_from([term, term, term + 1, max(term - 1, 0)]))
        if draw(st.integers(0, 3)) == 0:
            data = draw(
                st.one_of(
                    st.builds(
                        lambda op, node: ConfChange(op, node).encode(),
                        st.sampled_from(list(ConfChangeOp)),
                        st.sampled_from(IDS),
                    ),
                    st.binary(max_size=4),
                )
            )
            out.append(Entry(term, first + k, EntryKind.CONF_CHANGE, data))
        else:
            out.append(Entry(term, first + k, EntryKind.NORMAL, draw(st.binary(max_size=3))))
    return tuple(out)


@st.composite
def _message(draw: st.DrawFn, r: Raft) -> Message:
    """A message near the node's state: terms and indexes at the interesting boundaries."""
    t, last = r.term, r.last_index
    frm = draw(st.sampled_from(IDS))
    to = r.id if draw(st.integers(0, 20)) else draw(st.sampled_from(IDS))
    term = draw(st.sampled_from([t, t, t, t + 1, t + 2, 0, -1, max(t - 1, 0)]))
    marks = sorted(
        {
            -1,
            0,
            1,
            r.commit,
            r.commit + 1,
            last,
            last + 1,
            last + 2,
            r.snapshot_meta.index,
            max(r.commit - 1, 0),
        }
    )
    index = st.one_of(st.sampled_from(marks), st.integers(-1, last + 3))
    any_term = st.integers(-1, t + 2)
    kind = draw(st.integers(0, 10))
    if kind == 0:
        return VoteRequest(
            frm, to, term, draw(index), draw(any_term), draw(st.booleans()), draw(st.booleans())
        )
    if kind == 1:
        return VoteResponse(frm, to, term, draw(st.booleans()), draw(st.booleans()))
    if kind == 2:
        prev = draw(index)
        prev_term = draw(st.one_of(st.sampled_from([r.log.term(prev) or 0, 0, term]), any_term))
        return AppendRequest(
            frm, to, term, prev, prev_term, draw(_entries(prev, max(term, 0))), draw(index)
        )
    if kind == 3:
        return AppendResponse(
            frm, to, term, draw(index), draw(st.booleans()), draw(index), draw(any_term)
        )
    if kind == 4:
        return Heartbeat(
            frm, to, term, draw(index), draw(st.sampled_from([b"", (1).to_bytes(8, "big"), b"zz"]))
        )
    if kind == 5:
        return HeartbeatResponse(
            frm, to, term, draw(st.sampled_from([b"", (1).to_bytes(8, "big"), b"q"]))
        )
    if kind == 6:
        size = draw(st.integers(-1, 60))
        meta = SnapshotMeta(draw(index), draw(any_term), draw(st.sampled_from(CONFS)), size)
        return SnapshotChunk(
            frm,
            to,
            term,
            meta,
            draw(st.integers(-1, max(size, 0) + 1)),
            draw(st.binary(max_size=10)),
            draw(st.booleans()),
        )
    if kind == 7:
        return SnapshotChunkResponse(frm, to, term, draw(index), draw(st.integers(-1, 70)))
    if kind == 8:
        return TimeoutNow(frm, to, term)
    if kind == 9:
        return ReadIndexRequest(frm, to, term, draw(CONTEXTS))
    return ReadIndexResponse(frm, to, term, draw(CONTEXTS), draw(index), draw(st.booleans()))


@settings(max_examples=FUZZ_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.data())
def test_fuzz_step_never_asserts_and_refusals_change_nothing(data: st.DataObject) -> None:
    """errors.py's promise, property-tested: for any message a peer may send, `step` either
    raises RemoteProtocolError with the node's state unchanged, or handles it keeping the
    log's invariants (applied <= commit <= last index, entry terms in 1..term, terms never
    go back) and producing a Ready the driver can take; never an AssertionError."""
    name = data.draw(st.sampled_from(sorted(FUZZ_STATES)))
    c = copy.deepcopy(FUZZ_STATES[name])
    node_id = data.draw(st.sampled_from(c.ids()))
    r = c.nodes[node_id].core
    for _ in range(data.draw(st.integers(1, 4))):
        m = data.draw(_message(r))
        before, term_before = _status(r), r.term
        try:
            r.step(m)
        except RemoteProtocolError:
            assert _status(r) == before, m
            continue
        assert r.term >= term_before
        assert r.applied <= r.commit <= r.last_index
        for e in r.entries(r.snapshot_meta.index + 1, r.last_index + 1):
            assert 1 <= e.term <= r.term, (e, m)
        drain(r)


@settings(max_examples=FUZZ_EXAMPLES // 2, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.data())
def test_fuzz_interleaved_steps_ticks_readies_and_compaction_never_assert(
    data: st.DataObject,
) -> None:
    """The same property over interleavings: peer messages, ticks, proposals, reads, a Ready
    held out while the node keeps being stepped (ready.py allows it), its late `advance`, and
    compaction at the applied index. Forged messages may make the cluster's logs disagree
    (Raft does not tolerate Byzantine peers), so only the node's own invariants are checked:
    no AssertionError, applied <= commit <= last index, terms never go back."""
    name = data.draw(st.sampled_from(sorted(FUZZ_STATES)))
    c = copy.deepcopy(FUZZ_STATES[name])
    c.checker = None  # forged messages break cross-node invariants, not the node's own
    node_id = data.draw(st.sampled_from(c.ids()))
    node = c.nodes[node_id]
    r = node.core
    held: Ready | None = None
    for _ in range(data.draw(st.integers(1, 12))):
        action = data.draw(
            st.sampled_from(
                ["step", "step", "step", "tick", "propose", "read", "hold", "release", "compact"]
            )
        )
        term_before = r.term
        if action == "step":
            with contextlib.suppress(RemoteProtocolError):
                r.step(data.draw(_message(r)))
        elif action == "tick":
            r.tick()
        elif action == "propose" and r.role_name == "leader":
            with contextlib.suppress(ProposalDropped):
                r.propose(b"fz")
        elif action == "read":
            with contextlib.suppress(RaftError):
                r.read_index(b"rd")
        elif action == "hold" and held is None and r.has_ready():
            held = r.ready()
        elif action == "release" and held is not None:
            c._persist(node, held)  # the harness driver's own steps
            c._apply(node, held)
            r.advance(held)
            held = None
        elif action == "compact" and held is None:
            c.compact(node_id)
        assert r.term >= term_before
        assert r.applied <= r.commit <= r.last_index
    if held is not None:
        c._persist(node, held)
        c._apply(node, held)
        r.advance(held)
    c.process_ready(node_id)


# =============================================================================================
# More rules found correct


def test_heartbeat_commit_never_passes_what_the_follower_is_known_to_hold() -> None:
    """etcd sendHeartbeat: commit = min(pr.Match, raftLog.committed), so a follower whose
    log diverges past its match never commits a divergent entry from a heartbeat."""
    c = cluster(3)
    c.partition([["1", "2"], ["3"]])
    propose_n(c, "1", 4)
    c.stabilize(["1", "2"])
    c.heal()
    c.queue.clear()
    c.tick("1")
    c.process_ready("1")
    match3 = c.nodes["1"].core.progress()["3"].match
    beats = [m for m in c.queue if isinstance(m, Heartbeat) and m.to == "3"]
    assert beats and all(m.commit <= match3 < c.nodes["1"].core.commit for m in beats)


def test_a_snapshot_stream_restarts_on_the_new_snapshot_after_compaction() -> None:
    """The reader serves only the latest snapshot: when the leader compacts again in the
    middle of a stream, the stream restarts from offset 0 on the new snapshot, and the
    follower drops the partial old one (only offset 0 starts a stream)."""
    c, first = _lagging_follower_cluster(snapshot_chunk_bytes=8, max_snapshot_chunks_in_flight=1)
    for _ in range(6):  # part of the first snapshot's chunks go through
        for node_id in c.ids():
            c.process_ready(node_id)
        for node_id in c.ids():
            c.deliver(node_id)
    assert c.nodes["3"].core.snapshot_meta.index == 0
    propose_n(c, "1", 5, "late")
    c.stabilize(["1", "2"])
    second = c.compact("1")
    assert second is not None and second.index > first.index
    c.stabilize()
    r3 = c.nodes["3"].core
    assert r3.snapshot_meta == second
    assert c.nodes["3"].storage.sm == c.nodes["1"].storage.sm


def test_a_follower_restarted_mid_stream_gets_the_snapshot_from_offset_zero() -> None:
    """The follower's side of a stream is in memory: after a restart it asks for offset 0
    (with `gap`) and the leader starts over, so the installed snapshot is whole."""
    c, meta = _lagging_follower_cluster(snapshot_chunk_bytes=8, max_snapshot_chunks_in_flight=2)
    for _ in range(6):
        for node_id in c.ids():
            c.process_ready(node_id)
        for node_id in c.ids():
            c.deliver(node_id)
    assert c.nodes["3"].storage.staging  # part of it is staged
    c.crash("3")
    c.restart("3")
    for _ in range(30):
        c.tick("1")
        c.stabilize()
        if c.nodes["3"].core.snapshot_meta == meta:
            break
    assert c.nodes["3"].core.snapshot_meta == meta
    assert c.nodes["3"].storage.snapshot_data == c.nodes["1"].storage.snapshot_data
