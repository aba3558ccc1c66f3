"""`RaftConfig`: every knob and bound of the core, named, with the reason for its default.

Rules: all sizes are in bytes, all durations in ticks (the core has no clock: the driver calls
`tick()` at a fixed period, e.g. 100 ms); `validate()` rejects a config that could break a
bound (e.g. a snapshot chunk that would not fit in one transport frame).
"""

from __future__ import annotations

from dataclasses import dataclass

from detsim.raft.core.messages import MAX_MESSAGE_BYTES

#: Room left in a frame for a message's fields around its payload (ids, terms, meta).
MESSAGE_OVERHEAD_BYTES = 64 * 1024
#: Room for one entry's fields around its data (term, index, kind) in an append.
ENTRY_OVERHEAD_BYTES = 64


@dataclass(frozen=True, slots=True)
class RaftConfig:
    """Configuration of one node's core."""

    node_id: str
    #: A follower campaigns after a random timeout in [election_ticks, 2 * election_ticks).
    election_ticks: int = 10
    #: A leader sends heartbeats every heartbeat_ticks (must be < election_ticks).
    heartbeat_ticks: int = 1
    #: Appends sent to one follower and not yet acknowledged (REPLICATE state pipeline bound).
    max_inflight_appends: int = 64
    #: One append carries at most this many bytes of entries (at least one entry)...
    max_append_bytes: int = 1024 * 1024
    #: ... and at most this many entries.
    max_entries_per_append: int = 1024
    #: A proposal's data is at most this many bytes: one entry must fit in one append (and
    #: so in one transport frame), else it could never be replicated.
    max_entry_bytes: int = 1024 * 1024 - 1024
    #: Snapshot bytes per SnapshotChunk; each chunk must fit in one transport frame.
    snapshot_chunk_bytes: int = 1024 * 1024
    #: Snapshot chunks sent to one follower and not yet acknowledged.
    max_snapshot_chunks_in_flight: int = 4
    #: PreVote (thesis §9.6): a node that cannot win does not disrupt the cluster.
    pre_vote: bool = True
    #: CheckQuorum (thesis §6.2): a leader that hears from no quorum for an election timeout
    #: steps down; a follower that heard from a leader within it ignores vote requests.
    check_quorum: bool = True
    #: A leader refuses proposals past this many bytes / entries appended but not committed.
    max_uncommitted_bytes: int = 64 * 1024 * 1024
    max_uncommitted_entries: int = 10_000
    #: A learner is promoted only if its log is at most this many entries behind the
    #: commit index (thesis §4.2.1: catch up first, so a promotion never stalls commits).
    promote_max_lag_entries: int = 1000
    #: ReadIndex requests waiting at the leader (for a heartbeat round or a commit in its term).
    max_pending_reads: int = 4096
    #: Committed entries handed out in one Ready (bytes; at least one entry).
    max_apply_bytes_per_ready: int = 16 * 1024 * 1024
    #: Messages held for the next Ready; past it the core drops messages (Raft tolerates loss)
    #: and counts them in status()["dropped_messages"].
    max_outbox_messages: int = 100_000

    def validate(self) -> None:
        """Raise ValueError naming the first broken rule."""
        if not self.node_id:
            raise ValueError("node_id must not be empty")
        if self.heartbeat_ticks < 1 or self.election_ticks <= self.heartbeat_ticks:
            raise ValueError("need 1 <= heartbeat_ticks < election_ticks")
        if self.snapshot_chunk_bytes < 1:
            raise ValueError("snapshot_chunk_bytes must be >= 1")
        frame_room = MAX_MESSAGE_BYTES - MESSAGE_OVERHEAD_BYTES
        if self.snapshot_chunk_bytes > frame_room:
            raise ValueError(f"snapshot_chunk_bytes must be <= {frame_room} (the frame bound)")
        if self.max_append_bytes > frame_room:
            raise ValueError(f"max_append_bytes must be <= {frame_room} (the frame bound)")
        if self.max_entry_bytes + ENTRY_OVERHEAD_BYTES > self.max_append_bytes:
            raise ValueError("max_entry_bytes (plus its overhead) must fit in max_append_bytes")
        for name in (
            "max_inflight_appends",
            "max_entry_bytes",
            "max_entries_per_append",
            "max_append_bytes",
            "max_snapshot_chunks_in_flight",
            "max_uncommitted_bytes",
            "max_uncommitted_entries",
            "max_pending_reads",
            "max_apply_bytes_per_ready",
            "max_outbox_messages",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
