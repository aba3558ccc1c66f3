"""`Ready`: the core's output, a value whose fields are the driver's contract.

The driver loop (etcd `node.go`, `type Ready`) is:

    rd = raft.ready()
    0. send rd.messages[:rd.send_before_persist] (may overlap step 1; sending them after it,
       with the rest, is also correct, only slower);
    1. write rd.snapshot_chunks to the staging file; if rd.snapshot: make it the durable
       snapshot, drop the stored log and restore the state machine from it; then persist
       rd.entries (they all follow the snapshot) and rd.hard_state; fsync all of that
       (a hard state whose commit passes the durable log after a crash is tolerated; a Ready
       whose only durable change is hard_state.commit may skip the fsync: the commit index is
       volatile in Raft, Figure 2, and a restart relearns it, as etcd's MustSync);
    2. send rd.messages[rd.send_before_persist:];
    3. apply rd.committed_entries in order; answer rd.read_states once applied >= index;
    4. raft.advance(rd)  (tells the core that rd.entries are durable)

Steps 2 and 3 may overlap, but neither may start before step 1 is durable: a vote, a term,
an acknowledgement that was sent and then forgotten in a crash breaks Raft's safety.

The one exception, step 0 (Raft thesis §10.2.1: "the leader can write to its disk in parallel
with replicating to followers"; etcd does it): a leader whose term and vote are already durable
may send its appends, heartbeats and snapshot chunks before its own new entries are durable,
taking its fsync off the commit path. That promises nothing about the leader's disk, because
the leader counts ITSELF in the commit quorum only for entries that `advance` reported durable
(its own match moves in `advance`, as etcd's MsgStorageAppendResp; asserted in
`Raft._maybe_commit`). So a commit needs a quorum of durable copies, the leader's or not, and a
leader that crashes before its fsync loses only entries no quorum counted it for. The core puts
those messages first in `messages`; `send_before_persist` counts them (0 for a follower, a
candidate, or a leader whose Ready changes its term or vote).

Between `ready()` and `advance(rd)` the core may still be stepped and ticked; it will not
hand out another Ready until `advance`.
"""

from __future__ import annotations

from dataclasses import dataclass

from detsim.raft.core.messages import Entry, HardState, Message, SnapshotChunk, SnapshotMeta


@dataclass(frozen=True, slots=True)
class SoftState:
    """Volatile state worth reporting: who leads (None if unknown) and our role."""

    leader: str | None
    role: str


@dataclass(frozen=True, slots=True)
class ReadState:
    """A linearizable read may be served once the state machine has applied `index`."""

    request_id: bytes
    index: int


@dataclass(frozen=True, slots=True)
class Ready:
    """One batch of work for the driver. Empty fields mean nothing to do."""

    hard_state: HardState | None = None
    """Persist before sending any message of this Ready (None: unchanged). If only `commit`
    changed, writing it without an fsync is enough (see the header, step 1)."""

    snapshot_chunks: tuple[SnapshotChunk, ...] = ()
    """Incoming InstallSnapshot chunks, in order: write chunk.data at chunk.offset of the
    staging file for chunk.meta (offset 0 starts a new staging file). Durable before sending."""

    snapshot: SnapshotMeta | None = None
    """An incoming snapshot is complete (all its chunks are in the staging file): make it the
    durable snapshot, discard the whole stored log (the log now starts after snapshot.index),
    and restore the state machine from it. Do this before appending `entries` (which all
    follow it), before applying anything, and before sending the messages of this Ready."""

    entries: tuple[Entry, ...] = ()
    """Append to the durable log (after installing `snapshot`, if any). If entries[0].index <=
    the stored last index, the stored suffix from that index is replaced. Durable before any
    message of this Ready is sent."""

    messages: tuple[Message, ...] = ()
    """Send after everything above is durable (the first `send_before_persist` of them may go
    before). Loss is tolerated; order need not be kept."""

    send_before_persist: int = 0
    """How many of `messages`, from the first, may be sent before (or while) this Ready is
    persisted: a leader's appends, heartbeats and snapshot chunks only (see the header)."""

    committed_entries: tuple[Entry, ...] = ()
    """Apply in order (CONF_CHANGE entries too: their data is a ConfChange the core already
    acts on; the store may record its context). They are committed, and durable once step 1
    is done (some may be in `entries` of this very Ready)."""

    read_states: tuple[ReadState, ...] = ()
    """Answer each read once the state machine has applied >= its index."""

    dropped_reads: tuple[bytes, ...] = ()
    """Read requests the leader refused (it lost leadership): fail them (safe to retry)."""

    soft_state: SoftState | None = None
    """The leader or our role changed (None: unchanged)."""

    def __post_init__(self) -> None:
        assert 0 <= self.send_before_persist <= len(self.messages), self.send_before_persist

    def is_empty(self) -> bool:
        return not (
            self.hard_state
            or self.entries
            or self.snapshot_chunks
            or self.snapshot
            or self.messages
            or self.committed_entries
            or self.read_states
            or self.dropped_reads
            or self.soft_state
        )
