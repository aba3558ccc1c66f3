"""`detsim.check.raft_observer`: the one feed from the Raft driver's hooks to `RaftInvariants`.

What would break: a cluster that never hears of a violation (the scenarios' `violations`, the
kv tests' `errors`), a violation swallowed instead of stopping the node, a misused checker
reported as a Raft bug, or a view that shows the checker something else than the node holds
(its role, its durable hard state, its entries' digests).
"""

from __future__ import annotations

import asyncio
from typing import cast

import pytest

import detsim
from detsim.check.raft import (
    APPLY_ORDER,
    NodeView,
    RaftCheckerError,
    RaftInvariants,
    RaftInvariantViolation,
    payload_digest,
)
from detsim.check.raft_observer import InvariantsObserver, entry_digest, node_view
from detsim.raft import MemoryKV, RaftNode, RaftNodeConfig, encode_command
from detsim.raft.core.messages import Entry, EntryKind
from detsim.raft.core.ready import Ready

# `applied` reads nothing of the node: a stand-in is enough to drive the checker.
NO_NODE = cast(RaftNode, None)
#: Polls of 50 virtual ms for a lone node to elect itself (its election timeout is 1-2 s).
MAX_POLLS = 100


def test_a_violation_goes_to_the_handler_with_the_node_and_still_propagates() -> None:
    kept: list[tuple[str, AssertionError]] = []
    feed = InvariantsObserver(
        RaftInvariants(), "n1", 0, on_violation=lambda nid, exc: kept.append((nid, exc))
    )
    feed.applied(NO_NODE, Entry(term=1, index=1, data=b"a"), None)
    with pytest.raises(RaftInvariantViolation) as raised:
        feed.applied(NO_NODE, Entry(term=1, index=3, data=b"c"), None)  # index 2 skipped
    assert raised.value.invariant == APPLY_ORDER
    assert kept == [("n1", raised.value)]


def test_without_a_handler_a_violation_propagates() -> None:
    feed = InvariantsObserver(RaftInvariants(), "n1", 0)
    feed.applied(NO_NODE, Entry(term=1, index=1), None)
    with pytest.raises(RaftInvariantViolation):
        feed.applied(NO_NODE, Entry(term=1, index=1), None)  # applied twice


def test_a_misused_checker_is_not_reported_as_a_violation() -> None:
    kept: list[tuple[str, AssertionError]] = []
    checker = RaftInvariants()
    handler = lambda nid, exc: kept.append((nid, exc))  # noqa: E731 - one line, used twice
    InvariantsObserver(checker, "n1", 1, on_violation=handler).applied(
        NO_NODE, Entry(term=1, index=1), None
    )
    older_boot = InvariantsObserver(checker, "n1", 0, on_violation=handler)
    with pytest.raises(RaftCheckerError, match="boot 0 after boot 1"):
        older_boot.applied(NO_NODE, Entry(term=1, index=2), None)
    assert kept == []


def test_the_view_of_a_running_node_is_what_it_holds() -> None:
    sim = detsim.Simulation(seed=3)
    config = RaftNodeConfig(node_id="n1", raft_addr=("0.0.0.0", 7000), peers={}, data_dir="/r")
    views: list[NodeView] = []

    class Feed(InvariantsObserver):
        def persisted(self, node: RaftNode, ready: Ready) -> None:
            super().persisted(node, ready)
            views.append(node_view(node, self.boot))

    checker = RaftInvariants()
    raft = RaftNode(config, MemoryKV(), observer=Feed(checker, "n1", 0))

    async def on_node() -> None:
        async with raft:
            for _ in range(MAX_POLLS):
                if raft.core.role_name == "leader":
                    break
                await asyncio.sleep(0.05)
            await raft.propose(encode_command("set", b"k", b"v"))

    async def main() -> None:
        await sim.add_node("n1", ip="10.0.0.1").spawn(on_node())

    sim.run(main())
    last = views[-1]
    core = raft.core
    assert (last.node_id, last.role, last.term) == ("n1", "leader", core.term)
    assert last.durable == (core.term, "n1")  # a single voter voted for itself
    assert last.commit_index == last.last_index == core.last_index >= 2
    command = encode_command("set", b"k", b"v")
    # the digest of (kind, data), as every feed computes it: the same entry agrees across nodes
    assert last.entry_at(last.last_index) == (core.term, payload_digest(0, command))
    assert entry_digest(Entry(core.term, 9, EntryKind.NORMAL, command)) == payload_digest(
        0, command
    )
    checker.check_logs([node_view(raft, 0)])  # the feed saw a consistent history
