"""The Raft driver's observer hooks, fed to the Raft invariant checker: one adapter for every
cluster that runs `detsim.raft.RaftNode`s under `RaftInvariants` (the scenarios' store
cluster, the store's and the driver's test clusters).

Owned here: `InvariantsObserver` (a `RaftObserver` for one incarnation of one node),
`node_view` / `core_view` (what the checker reads of a running `RaftNode` / of a bare core, as
the core's own test harness has one) and `entry_digest` (an entry's payload digest, the same
for every feed so that digests of one entry agree across nodes).

Rules:
- The feed (the contract in detsim.check.raft): `observe` after every persisted Ready, with the
  durable hard state (`NodeView.durable`); `applied`, `snapshot_applied` and `acknowledged` as
  the driver reports them. The hooks run synchronously on the node's loop, so a violation
  raised here propagates through the driver and stops the node it was found on.
- `on_violation(node_id, error)`, when given, sees every `AssertionError` a check raises (a
  `RaftInvariantViolation`) before it propagates: a cluster keeps it to report. Other errors
  (`RaftCheckerError`: a misused checker) are not violations and only propagate.
- This module imports the driver (detsim.raft) and never detsim.sim: the driver runs inside a
  simulation and outside one alike. detsim.check.raft itself stays free of detsim.raft; importing
  the `detsim.check` package does not load this module.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from detsim.check.raft import NodeView, RaftInvariants, payload_digest
from detsim.raft.core.messages import Entry, SnapshotMeta
from detsim.raft.core.raft import Raft
from detsim.raft.core.ready import Ready
from detsim.raft.driver import RaftNode, RaftObserver

#: What a cluster does with a violation (node id, error) before it propagates: keeps it to report.
ViolationHandler = Callable[[str, AssertionError], None]


def entry_digest(entry: Entry) -> bytes:
    """The checker's digest of an entry's payload: its kind and its data."""
    return payload_digest(int(entry.kind), entry.data)


def node_view(node: RaftNode, boot: int) -> NodeView:
    """What the invariant checker reads of `node` in its incarnation `boot` (its log lazily,
    during the observe that reads the view), with its durable term and vote."""
    hard_state = node.persisted_hard_state
    return core_view(node.core, node.id, boot, durable=(hard_state.term, hard_state.vote))


def core_view(
    core: Raft, node_id: str, boot: int, *, durable: tuple[int, str | None] | None = None
) -> NodeView:
    """What the invariant checker reads of a Raft core (`durable`: its durable term and vote,
    when the caller knows them)."""
    snapshot = core.snapshot_meta

    def entry_at(index: int) -> tuple[int, bytes]:
        entry = core.log.entry(index)
        return entry.term, entry_digest(entry)

    return NodeView(
        node_id=node_id,
        boot=boot,
        term=core.term,
        vote=core.vote,
        role=core.role_name,
        commit_index=core.commit,
        applied_index=core.applied,
        snapshot_index=snapshot.index,
        snapshot_term=snapshot.term,
        last_index=core.last_index,
        entry_at=entry_at,
        durable=durable,
    )


class InvariantsObserver(RaftObserver):
    """Forwards one node incarnation's driver hooks to `invariants` (see the module header)."""

    def __init__(
        self,
        invariants: RaftInvariants,
        node_id: str,
        boot: int,
        *,
        on_violation: ViolationHandler | None = None,
    ) -> None:
        assert boot >= 0, f"boot counts incarnations from 0, got {boot}"
        self.invariants = invariants
        self.node_id = node_id
        self.boot = boot
        self.on_violation = on_violation

    def _check(self, check: Callable[[], None]) -> None:
        try:
            check()
        except AssertionError as exc:
            if self.on_violation is not None:
                self.on_violation(self.node_id, exc)
            raise

    def persisted(self, node: RaftNode, ready: Ready) -> None:
        self._check(lambda: self.invariants.observe(node_view(node, self.boot)))

    def applied(self, node: RaftNode, entry: Entry, result: Any) -> None:
        digest = entry_digest(entry)
        self._check(
            lambda: self.invariants.applied(
                self.node_id, self.boot, entry.index, entry.term, digest
            )
        )

    def snapshot_restored(self, node: RaftNode, meta: SnapshotMeta) -> None:
        self._check(
            lambda: self.invariants.snapshot_applied(self.node_id, self.boot, meta.index, meta.term)
        )

    def acknowledged(self, node: RaftNode, entry: Entry, result: Any) -> None:
        digest = entry_digest(entry)
        self._check(
            lambda: self.invariants.acknowledged(self.node_id, entry.index, entry.term, digest)
        )
