"""The tests have teeth: a deliberately broken core is caught.

Each mutation removes one rule of the protocol (monkeypatched for the test only); the
randomized cluster test (with `detsim.check.raft`), a scripted scenario or the golden files
must fail. A test suite that passes on a broken core proves nothing.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import test_raft_random
from raft_harness import Cluster, make_config
from test_raft_interaction import Interpreter, parse_blocks

from detsim.raft.core import ConfState
from detsim.raft.core.log import RaftLog
from detsim.raft.core.messages import VoteRequest
from detsim.raft.core.raft import Raft

#: Seeds tried per mutation before declaring it undetected.
MAX_SEEDS = 80


def first_failing_seed() -> int | None:
    for seed in range(MAX_SEEDS):
        try:
            test_raft_random.run_seed(seed)
        except AssertionError:
            return seed
    return None


def test_votes_for_a_stale_log_break_leader_completeness(monkeypatch: pytest.MonkeyPatch) -> None:
    """Mutation: grant votes whatever the candidate's log (§5.4.1 removed)."""
    monkeypatch.setattr(RaftLog, "is_up_to_date", lambda self, index, term: True)
    assert first_failing_seed() is not None


def test_forgetting_the_vote_breaks_one_vote_per_term(monkeypatch: pytest.MonkeyPatch) -> None:
    """Mutation: a node forgets whom it voted for before each vote request (§5.2 removed)."""
    original = Raft._step_vote_request

    def forgetful(self: Raft, m: VoteRequest) -> None:
        self.vote = None
        original(self, m)

    monkeypatch.setattr(Raft, "_step_vote_request", forgetful)
    assert first_failing_seed() is not None


def stale_read_scenario() -> tuple[list[tuple[bytes, int]], int]:
    """Leader 1 is cut off; 2 and 3 elect 2, which commits a write. A read is then asked of
    node 1, which still believes it leads. Returns node 1's answered reads and the index of
    the write acknowledged before the read."""
    c = Cluster(seed=0)
    conf = ConfState.of(["1", "2", "3"])
    for node_id in ("1", "2", "3"):
        c.add_node(node_id, make_config(node_id, check_quorum=False), conf)
    c.stabilize()
    c.nodes["1"].core.campaign()
    c.stabilize()
    c.partition([["1"], ["2", "3"]])
    c.nodes["2"].core.campaign()
    c.stabilize(["2", "3"])
    written = c.nodes["2"].core.propose(b"x")
    c.stabilize(["2", "3"])
    assert c.nodes["2"].storage.applied >= written
    c.nodes["1"].core.read_index(b"r")
    c.stabilize(["1"])
    return c.read_results.get("1", []), written


def test_a_deposed_leader_answers_no_read() -> None:
    """Thesis §6.4: the leader confirms it is still leader (a heartbeat round) before it
    answers a read; cut off, it cannot, so it never serves the stale value."""
    reads, written = stale_read_scenario()
    assert all(index >= written for _, index in reads)
    assert reads == []


def test_reads_without_a_heartbeat_round_are_stale(monkeypatch: pytest.MonkeyPatch) -> None:
    """Mutation: the leader answers ReadIndex at once, without confirming its leadership
    (thesis §6.4 step 3 removed): the deposed leader serves a stale read."""

    def unconfirmed(self: Raft, requester: str, request_id: bytes) -> None:
        self._answer_read(requester, request_id, self.log.committed)

    monkeypatch.setattr(Raft, "_leader_read", unconfirmed)
    reads, written = stale_read_scenario()
    assert reads and reads[0][1] < written


def test_counting_replicas_of_old_terms_fails_figure8(monkeypatch: pytest.MonkeyPatch) -> None:
    """Mutation: commit the quorum index whatever its term (§5.4.2 removed). The random runs
    rarely build Figure 8's interleaving; the scripted figure8.txt does, and must fail."""

    def count_any_term(self: Raft) -> bool:
        voters = self.conf.voters
        matches = sorted((self._progress[v].match for v in voters), reverse=True)
        quorum_index = matches[self._quorum() - 1]
        if quorum_index <= self.log.committed:
            return False
        old = self.log.committed
        self.log.commit_to(quorum_index)
        self._on_leader_commit(old)
        return True

    monkeypatch.setattr(Raft, "_maybe_commit", count_any_term)
    path = Path(__file__).parent / "testdata" / "figure8.txt"
    interp = Interpreter()
    outputs = [
        interp.run(command) == expected for _, command, expected in parse_blocks(path.read_text())
    ]
    assert not all(outputs)


def test_keeping_a_conflicting_suffix_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    """Mutation: a follower assumes the entries it holds match the leader's (no conflicting
    suffix is ever truncated, §5.3 removed): the Log Matching assertion after an append, or the
    invariant checker, fails."""
    monkeypatch.setattr(RaftLog, "find_conflict", lambda self, entries: 0)
    assert first_failing_seed() is not None
