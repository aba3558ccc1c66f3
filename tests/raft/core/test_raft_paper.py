"""Unit tests of the Raft core tied to sentences of the Raft paper (Ongaro & Ousterhout,
"In Search of an Understandable Consensus Algorithm", extended version), after etcd-io/raft's
raft_paper_test.go: each docstring quotes the sentence the test holds the core to.
"""

from __future__ import annotations

import random

from raft_harness import Cluster, make_config

from detsim.raft.core import (
    AppendRequest,
    AppendResponse,
    ConfState,
    Entry,
    HardState,
    Heartbeat,
    VoteRequest,
    VoteResponse,
)
from detsim.raft.core.raft import Raft, Role


def cluster(n: int = 3, **cfg: object) -> Cluster:
    """n bootstrapped voters, node 1 elected leader, everything delivered."""
    c = Cluster(seed=0)
    conf = ConfState.of([str(i) for i in range(1, n + 1)])
    for i in range(1, n + 1):
        c.add_node(str(i), make_config(str(i), **cfg), conf)
    c.stabilize()
    c.nodes["1"].core.campaign()
    c.stabilize()
    assert c.nodes["1"].core.role is Role.LEADER
    return c


def follower(node_id: str = "2", term: int = 1, entries: list[Entry] | None = None) -> Raft:
    """A follower restored with the bootstrap log of voters 1, 2, 3 plus `entries`."""
    c = Cluster(seed=0)
    node = c.add_node(node_id, make_config(node_id), ConfState.of(["1", "2", "3"]))
    r = node.core
    r.advance(r.ready())
    base = r.entries(1, r.last_index + 1)
    return Raft(
        make_config(node_id),
        random.Random(1),
        hard_state=HardState(term, None, 3),
        entries=base + (entries or []),
        applied=3,
    )


def messages_of(r: Raft) -> list[object]:
    rd = r.ready()
    r.advance(rd)
    return list(rd.messages)


def test_stale_term_request_is_rejected() -> None:
    """§5.1: "If a server receives a request with a stale term number, it rejects the
    request." The stale leader is told our term (so that it steps down)."""
    r = follower(term=5)
    r.step(AppendRequest("1", "2", 4, 3, 1, (Entry(4, 4),), 4))
    assert r.last_index == 3 and r.term == 5
    (reply,) = messages_of(r)
    assert isinstance(reply, AppendResponse) and reply.term == 5 and reply.reject


def test_higher_term_is_adopted() -> None:
    """§5.1: "if one server's current term is smaller than the other's, then it updates its
    current term to the larger value." """
    r = follower(term=1)
    r.step(Heartbeat("1", "2", 7, commit=3))
    assert r.term == 7 and r.leader == "1" and r.vote is None


def test_leader_reverts_to_follower_on_higher_term() -> None:
    """§5.1: "If a candidate or leader discovers that its term is out of date, it immediately
    reverts to follower state." """
    c = cluster()
    leader = c.nodes["1"].core
    leader.step(AppendResponse("2", "1", leader.term + 1, index=0, reject=True))
    assert leader.role is Role.FOLLOWER and leader.term == 3


def test_one_vote_per_term_first_come_first_served() -> None:
    """§5.2: "Each server will vote for at most one candidate in a given term, on a
    first-come-first-served basis." """
    r = follower(term=1)
    r.step(VoteRequest("1", "2", 2, 3, 1))
    r.step(VoteRequest("3", "2", 2, 3, 1))
    votes = [m for m in messages_of(r) if isinstance(m, VoteResponse)]
    assert [(m.to, m.granted) for m in votes] == [("1", True), ("3", False)]
    assert r.vote == "1"


def test_vote_denied_to_less_up_to_date_log() -> None:
    """§5.4.1: "the voter denies its vote if its own log is more up-to-date than that of the
    candidate." (later last term wins; same last term: the longer log)."""
    r = follower(term=2, entries=[Entry(2, 4)])
    r.step(VoteRequest("1", "2", 3, 10, 1))  # longer log, older last term: denied
    r.step(VoteRequest("3", "2", 4, 3, 1))  # shorter log, older term: denied
    votes = [m for m in messages_of(r) if isinstance(m, VoteResponse)]
    assert [m.granted for m in votes] == [False, False]
    r.step(VoteRequest("3", "2", 5, 4, 2))  # same last term, same length: granted
    assert [m.granted for m in messages_of(r) if isinstance(m, VoteResponse)] == [True]


def test_candidate_wins_with_majority() -> None:
    """§5.2: "A candidate wins an election if it receives votes from a majority of the
    servers in the full cluster for the same term." One vote of two peers suffices in a
    cluster of three; the leader then appends an empty entry of its term."""
    c = cluster(3, pre_vote=False)
    c.nodes["1"].core.step(AppendResponse("2", "1", 99, 0, reject=True))  # depose
    r = c.nodes["1"].core
    r.campaign()
    assert r.role is Role.CANDIDATE
    r.step(VoteResponse("3", "1", r.term, granted=True))
    assert r.role is Role.LEADER
    last = r.entries(r.last_index, r.last_index + 1)[0]
    assert last.term == r.term and last.data == b""


def test_candidate_loses_with_majority_of_rejections() -> None:
    """§5.2: a candidate that cannot win returns to follower ("another server establishes
    itself as leader" or the election is lost: a majority rejected it)."""
    c = cluster(3, pre_vote=False)
    r = c.nodes["1"].core
    r.step(AppendResponse("2", "1", 99, 0, reject=True))
    r.campaign()
    r.step(VoteResponse("2", "1", r.term, granted=False))
    r.step(VoteResponse("3", "1", r.term, granted=False))
    assert r.role is Role.FOLLOWER


def test_election_timeouts_are_randomized() -> None:
    """§5.2: "election timeouts are chosen randomly from a fixed interval (e.g., 150-300ms)";
    here from [election_ticks, 2 * election_ticks) ticks."""
    seen = set()
    for seed in range(200):
        r = Raft(
            make_config("1", pre_vote=False),
            random.Random(seed),
            initial_conf=ConfState.of(["1", "2", "3"]),
        )
        for ticks in range(1, 30):
            r.tick()
            if r.role is Role.CANDIDATE:
                seen.add(ticks)
                break
    assert seen == set(range(10, 20))


def test_leader_sends_heartbeats() -> None:
    """§5.2: "Leaders send periodic heartbeats (AppendEntries RPCs that carry no log entries)
    to all followers in order to maintain their authority." """
    c = cluster(3, heartbeat_ticks=2)
    r = c.nodes["1"].core
    r.tick()
    assert not [m for m in messages_of(r) if isinstance(m, Heartbeat)]
    r.tick()
    beats = [m for m in messages_of(r) if isinstance(m, Heartbeat)]
    assert sorted(m.to for m in beats) == ["2", "3"]


def test_leader_appends_then_replicates_in_parallel() -> None:
    """§5.3: "The leader appends the command to its log as a new entry, then issues
    AppendEntries RPCs in parallel to each of the other servers to replicate the entry." """
    c = cluster()
    r = c.nodes["1"].core
    index = r.propose(b"x")
    rd = r.ready()
    assert [e.index for e in rd.entries] == [index]
    apps = [m for m in rd.messages if isinstance(m, AppendRequest)]
    assert sorted(m.to for m in apps) == ["2", "3"]
    assert all(m.entries[-1].index == index for m in apps)


def test_commit_after_majority_replication() -> None:
    """§5.3: "A log entry is committed once the leader that created the entry has replicated
    it on a majority of the servers." """
    c = cluster(5)
    r = c.nodes["1"].core
    index = r.propose(b"x")
    r.advance(r.ready())
    r.step(AppendResponse("2", "1", r.term, index=index))
    assert r.commit < index  # leader + 1 of 5
    r.step(AppendResponse("3", "1", r.term, index=index))
    assert r.commit == index  # leader + 2 of 5


def test_figure8_entries_of_older_terms_not_committed_by_counting() -> None:
    """§5.4.2: "Raft never commits log entries from previous terms by counting replicas.
    Only log entries from the leader's current term are committed by counting replicas." """
    # Node 1 leads term 4 holding an entry of term 2 at index 4 that a majority (1 and 2)
    # holds; its own entry of term 4 at index 5 is on no other node yet.
    log = [Entry(2, 4, data=b"old")]
    r = follower("1", term=3, entries=log)
    r.campaign()  # PreVote
    r.step(VoteResponse("2", "1", r.term + 1, granted=True, pre=True))
    r.step(VoteResponse("2", "1", r.term, granted=True))
    assert r.role is Role.LEADER and r.term == 4 and r.last_index == 5
    r.advance(r.ready())  # its entries are durable: it counts itself up to index 5
    r.step(AppendResponse("2", "1", 4, index=4))
    assert r.commit == 3  # index 4 (term 2) is on a majority but is not committed
    r.step(AppendResponse("2", "1", 4, index=5))
    assert r.commit == 5  # committing index 5 (term 4) commits index 4 indirectly


def test_consistency_check_fails_on_missing_entry() -> None:
    """§5.3: "If the follower does not find an entry in its log with the same index and term,
    then it refuses the new entries." The refusal carries etcd's hint: our last index and its
    term, so the leader skips what we lack in one round trip."""
    r = follower(term=2)
    r.step(AppendRequest("1", "2", 2, 9, 2, (Entry(2, 10),), 9))
    (reply,) = messages_of(r)
    assert isinstance(reply, AppendResponse) and reply.reject
    assert (reply.index, reply.hint_index, reply.hint_term) == (9, 3, 1)
    assert r.last_index == 3


def test_conflicting_entries_are_replaced() -> None:
    """§5.3, AppendEntries rule 3: "If an existing entry conflicts with a new one (same index
    but different terms), delete the existing entry and all that follow it." """
    r = follower(term=3, entries=[Entry(2, 4, data=b"a"), Entry(2, 5, data=b"b")])
    r.step(AppendRequest("1", "2", 3, 3, 1, (Entry(3, 4, data=b"c"),), 3))
    assert [(e.term, e.data) for e in r.entries(4, r.last_index + 1)] == [(3, b"c")]


def test_followers_apply_what_the_leader_committed() -> None:
    """§5.3: "Once a follower learns that a log entry is committed, it applies the entry to
    its local state machine (in log order)." """
    c = cluster()
    c.nodes["1"].core.propose(b"x")
    c.stabilize()
    assert c.nodes["1"].storage.sm == [b"x"]
    c.spread_commit("1")
    for node_id in ("1", "2", "3"):
        assert c.nodes[node_id].storage.sm == [b"x"]


def test_the_commit_index_rides_future_appends_and_heartbeats() -> None:
    """§5.3: "The leader keeps track of the highest index it knows to be committed, and it
    includes that index in future AppendEntries RPCs (including heartbeats) so that the other
    servers eventually find out." No message is sent only to announce a commit."""
    c = cluster()
    c.nodes["1"].core.propose(b"x")
    c.stabilize()
    leader_commit = c.nodes["1"].core.commit
    assert [c.nodes[n].core.commit for n in ("2", "3")] == [leader_commit - 1] * 2
    c.nodes["1"].core.propose(b"y")  # the next append carries the commit of x
    c.process_ready("1")
    appends = [m for m in c.queue if isinstance(m, AppendRequest)]
    assert {m.to for m in appends} == {"2", "3"}
    assert all(m.commit == leader_commit for m in appends)
    c.stabilize()
    for node_id in ("2", "3"):
        assert c.nodes[node_id].storage.sm == [b"x"]  # y: committed at the leader only
    c.tick("1")  # a heartbeat carries the commit of y
    c.process_ready("1")
    assert {m.commit for m in c.queue if isinstance(m, Heartbeat)} == {leader_commit + 1}
    c.stabilize()
    for node_id in ("1", "2", "3"):
        assert c.nodes[node_id].storage.sm == [b"x", b"y"]


def test_append_is_idempotent() -> None:
    """§5.3: "the leader ... retries AppendEntries RPCs indefinitely": a duplicated or stale
    append must not truncate entries the follower already holds."""
    r = follower(term=2)
    first = AppendRequest("1", "2", 2, 3, 1, (Entry(2, 4), Entry(2, 5)), 3)
    r.step(first)
    r.step(AppendRequest("1", "2", 2, 3, 1, (Entry(2, 4),), 3))  # an older, shorter one
    assert r.last_index == 5
