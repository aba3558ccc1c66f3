"""The leader's disk write in parallel with replication (Raft thesis §10.2.1; etcd does it), as
the Ready contract states it (ready.py, `send_before_persist`).

The thesis (Ongaro 2014, §10.2.1, "Writing to the leader's disk in parallel") lets the leader
send its new entries to the followers before they are on its own disk, as long as it counts
itself in the commit quorum only for entries on its disk; an entry a majority of followers hold
durably is committed even before the leader's own write. Each test states what breaks if the
rule does: a leader that counted its new entries at append could tell a follower (here, a
learner) that an entry is committed while the only durable copy is still in flight.
"""

from __future__ import annotations

from raft_harness import Cluster, make_config

from detsim.raft.core import (
    AppendRequest,
    AppendResponse,
    ConfState,
    Heartbeat,
    Message,
    VoteRequest,
    VoteResponse,
)
from detsim.raft.core.raft import Raft, Role
from detsim.raft.core.ready import Ready


def cluster(n: int, learners: tuple[str, ...] = ()) -> Cluster:
    """n nodes "1".."n" (those in `learners` as learners), node 1 elected, all delivered."""
    c = Cluster(seed=0)
    ids = [str(i) for i in range(1, n + 1)]
    conf = ConfState.of([i for i in ids if i not in learners], learners)
    for node_id in ids:
        c.add_node(node_id, make_config(node_id, pre_vote=False), conf)
    c.stabilize()
    c.nodes["1"].core.campaign()
    c.stabilize()
    assert c.nodes["1"].core.role is Role.LEADER
    return c


def early(rd: Ready) -> tuple[Message, ...]:
    return rd.messages[: rd.send_before_persist]


def test_leader_sends_its_appends_before_its_own_entries_are_durable() -> None:
    """§10.2.1: the leader "can write to its disk in parallel with replicating to the
    followers": the appends carrying a new entry may leave before the Ready is persisted."""
    c = cluster(3)
    r = c.nodes["1"].core
    index = r.propose(b"x")
    rd = r.ready()
    assert [e.index for e in rd.entries] == [index]
    appends = [m for m in early(rd) if isinstance(m, AppendRequest)]
    assert sorted(m.to for m in appends) == ["2", "3"]
    assert all(m.entries[-1].index == index for m in appends)
    assert all(isinstance(m, AppendRequest | Heartbeat) for m in early(rd))


def test_leader_counts_itself_only_for_entries_on_its_disk() -> None:
    """The leader's own match moves when `advance` reports its entries durable (etcd's
    MsgStorageAppendResp), not at append: with 3 voters, one follower's ack and the leader's
    unwritten copy are not a quorum of durable copies."""
    c = cluster(3)
    r = c.nodes["1"].core
    index = r.propose(b"x")
    rd = r.ready()  # held: the leader's fsync is running
    r.step(AppendResponse("2", "1", r.term, index=index))
    assert r.commit < index
    assert r.progress()["1"].match == index - 1
    r.advance(rd)  # the leader's copy is durable now: leader + follower 2 are a quorum
    assert r.progress()["1"].match == index
    assert r.commit == index
    after = r.ready()  # the followers hear of the commit with the next append or heartbeat
    assert [e.index for e in after.committed_entries] == [index]
    assert not [m for m in after.messages if isinstance(m, AppendRequest)]


def test_a_majority_of_followers_commits_before_the_leaders_own_write() -> None:
    """§10.2.1: an entry on the disks of a majority of followers is committed even if the
    leader's own write has not finished (3 of 5 durable copies, none of them the leader's)."""
    c = cluster(5)
    r = c.nodes["1"].core
    index = r.propose(b"x")
    rd = r.ready()  # held
    for follower in ("2", "3"):
        r.step(AppendResponse(follower, "1", r.term, index=index))
    assert r.commit < index  # 2 followers: not a majority of 5 without the leader
    r.step(AppendResponse("4", "1", r.term, index=index))
    assert r.commit == index
    assert r.progress()["1"].match == index - 1  # the leader still does not count itself
    r.advance(rd)


def test_the_only_voter_commits_only_what_is_on_its_disk() -> None:
    """The case the rule is for: the single voter's early append to a learner must not say
    its new entry is committed (a crash before its fsync would lose the only durable copy
    while the learner applies it). The commit comes with `advance`, in the next Ready."""
    c = cluster(2, learners=("2",))
    r = c.nodes["1"].core
    index = r.propose(b"x")
    rd = r.ready()
    (append,) = early(rd)
    assert isinstance(append, AppendRequest) and append.entries[-1].index == index
    assert append.commit < index and r.commit < index
    assert not [e for e in rd.committed_entries if e.index == index]
    r.advance(rd)
    assert r.commit == index
    assert [e.index for e in r.ready().committed_entries] == [index]


def test_nothing_leaves_early_when_the_term_or_vote_moves() -> None:
    """Votes and terms are never sent before they are durable: a Ready in which a node
    becomes leader of a new term (here the only voter, elected at once) sends its appends
    only after the persist, with the new term."""
    c = Cluster(seed=0)
    conf = ConfState.of(["1"], ("2",))
    for node_id in ("1", "2"):
        c.add_node(node_id, make_config(node_id, pre_vote=False), conf)
    c.stabilize()
    r = c.nodes["1"].core
    r.campaign()
    assert r.role is Role.LEADER
    rd = r.ready()
    assert rd.hard_state is not None and rd.hard_state.term == r.term
    assert [m for m in rd.messages if isinstance(m, AppendRequest)]
    assert rd.send_before_persist == 0


def test_followers_and_candidates_send_nothing_early() -> None:
    """An acknowledgement or a vote request is never sent before the persist (nor anything by
    a node that is not leader)."""
    c = cluster(3)
    follower = c.nodes["2"].core
    leader = c.nodes["1"].core
    leader.propose(b"x")
    c.process_ready("1")
    c.deliver("2")
    rd = follower.ready()
    assert [m for m in rd.messages if isinstance(m, AppendResponse)]
    assert rd.send_before_persist == 0
    follower.advance(rd)
    candidate = c.nodes["3"].core
    candidate.campaign()
    rd = candidate.ready()
    assert [m for m in rd.messages if isinstance(m, VoteRequest)]
    assert rd.send_before_persist == 0
    candidate.step(VoteResponse("1", "3", candidate.term, granted=False))
    candidate.step(VoteResponse("2", "3", candidate.term, granted=False))
    assert candidate.role is Role.FOLLOWER
    candidate.advance(rd)
    rd = candidate.ready()
    assert not rd.send_before_persist


def test_a_leaders_vote_refusal_waits_but_its_appends_go_first() -> None:
    """The early messages come first in `messages`; anything else a leader sends in the same
    Ready (here a refused vote of its own term) stays after the persist."""
    c = cluster(3)
    r: Raft = c.nodes["1"].core
    r.propose(b"x")
    r.step(VoteRequest("3", "1", r.term, 0, 0))  # same term: refused, term unchanged
    rd = r.ready()
    refusals = [m for m in rd.messages if isinstance(m, VoteResponse)]
    assert refusals and not refusals[0].granted
    assert rd.send_before_persist == len(rd.messages) - len(refusals)
    assert all(isinstance(m, AppendRequest | Heartbeat) for m in early(rd))
