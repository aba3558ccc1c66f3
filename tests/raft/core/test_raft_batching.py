"""Proposals are sent once per Ready, merged: the leader appends each proposal to its log at
once, but builds the appends when `ready()` is called, one per follower carrying every entry
proposed since the last Ready (within max_entries_per_append, max_append_bytes and the
in-flight bound). Before, each `propose()` broadcast its own append: 16 proposals between two
Readies cost 16 appends per follower (BENCHMARKS.md, "Raft in the simulator").
"""

from __future__ import annotations

from typing import Any

from raft_harness import Cluster, make_config

from detsim.raft.core import AppendRequest, ConfState, Heartbeat, Message
from detsim.raft.core.ready import Ready

PROPOSALS = 16


def cluster(n: int = 3, **cfg: Any) -> Cluster:
    c = Cluster(seed=0)
    conf = ConfState.of([str(i) for i in range(1, n + 1)])
    for i in range(1, n + 1):
        c.add_node(str(i), make_config(str(i), **cfg), conf)
    c.stabilize()
    c.nodes["1"].core.campaign()
    c.stabilize()
    assert c.nodes["1"].core.role_name == "leader"
    return c


def appends_to(rd: Ready, to: str) -> list[AppendRequest]:
    return [m for m in rd.messages if isinstance(m, AppendRequest) and m.to == to]


def sm_of(c: Cluster, node_id: str) -> list[bytes]:
    return c.nodes[node_id].storage.sm


def test_proposals_between_readies_leave_in_one_append_per_follower() -> None:
    c = cluster(3)
    leader = c.nodes["1"].core
    first = leader.last_index + 1
    for k in range(PROPOSALS):
        leader.propose(b"p%d" % k)
    rd = leader.ready()
    for follower in ("2", "3"):
        (append,) = appends_to(rd, follower)
        assert [e.index for e in append.entries] == list(range(first, first + PROPOSALS))
    # The Ready contract: every entry a message carries is in this Ready's entries.
    assert {e.index for e in rd.entries} >= set(range(first, first + PROPOSALS))
    c.nodes["1"].held = rd
    c.finish_ready("1")
    c.stabilize()
    c.spread_commit("1")
    for node_id in ("1", "2", "3"):
        assert sm_of(c, node_id)[-PROPOSALS:] == [b"p%d" % k for k in range(PROPOSALS)]


def test_merged_appends_keep_the_entry_and_in_flight_bounds() -> None:
    """16 entries, 4 per append, 2 appends in flight: two appends of 4 now, the rest as the
    follower acknowledges; everything commits."""
    c = cluster(3, max_entries_per_append=4, max_inflight_appends=2)
    leader = c.nodes["1"].core
    first = leader.last_index + 1
    for k in range(PROPOSALS):
        leader.propose(b"p%d" % k)
    rd = leader.ready()
    for follower in ("2", "3"):
        sent = appends_to(rd, follower)
        assert [[e.index for e in m.entries] for m in sent] == [
            list(range(first, first + 4)),
            list(range(first + 4, first + 8)),
        ]
    c.nodes["1"].held = rd
    c.finish_ready("1")
    c.stabilize()
    assert leader.commit == first + PROPOSALS - 1
    c.spread_commit("1")
    for node_id in ("2", "3"):
        assert sm_of(c, node_id)[-PROPOSALS:] == [b"p%d" % k for k in range(PROPOSALS)]


def test_no_duplicate_append_when_a_commit_already_carried_the_proposals() -> None:
    """A proposal, then (before the next Ready) an ack that moves the commit index: the
    commit's broadcast carries the new entry, and the Ready adds no second append (a
    per-proposal broadcast sent each follower the entry, then an empty append for the
    commit: two appends each)."""
    c = cluster(3)
    leader = c.nodes["1"].core
    leader.propose(b"a")
    c.process_ready("1")
    c.deliver("2")
    c.process_ready("2")  # 2's ack of "a" is queued for 1
    index_b = leader.propose(b"b")
    c.deliver("1", lambda m: m.frm == "2")  # commits "a": 1 broadcasts the commit
    rd = leader.ready()
    assert leader.commit == index_b - 1
    for follower in ("2", "3"):
        (append,) = appends_to(rd, follower)
        assert [e.index for e in append.entries] == [index_b]
        assert append.commit == index_b - 1
    assert index_b in {e.index for e in rd.entries}


def test_a_leader_that_steps_down_before_its_ready_sends_no_proposals() -> None:
    c = cluster(3)
    leader = c.nodes["1"].core
    leader.propose(b"lost")
    higher: Message = Heartbeat("2", "1", leader.term + 1, 0, b"")
    leader.step(higher)
    assert leader.role_name == "follower"
    rd = leader.ready()
    assert not [m for m in rd.messages if isinstance(m, AppendRequest)]
