"""`Ready`: the core's output, a value whose fields are the driver's contract.

The driver loop (etcd `node.go`, `type Ready`) is:

    rd = raft.ready()
    1. write rd.snapshot_chunks to the staging file; if rd.snapshot: make it the durable
       snapshot, drop the stored log and restore the state machine from it; then persist
       rd.entries (they all follow the snapshot) and rd.hard_state; fsync all of that
       (a hard state whose commit passes the durable log after a crash is tolerated);
    2. send rd.messages;
    3. apply rd.committed_entries in order; answer rd.read_states once applied >= index;
    4. raft.advance(rd)

Steps 2 and 3 may overlap, but neither may start before step 1 is durable: a vote, an
acknowledgement or a commit that was sent and then forgotten in a crash breaks Raft's safety.
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
    """Persist before sending any message of this Ready (None: unchanged)."""

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
    """Send after everything above is durable. Loss is tolerated; order need not be kept."""

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
