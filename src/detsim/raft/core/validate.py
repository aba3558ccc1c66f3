"""Checks of a peer's message before `Raft.step` touches any state (h11's
`RemoteProtocolError`): a message that no correct peer sends is refused whole.

Owns `validate_message`. Rules: checks are local to the message and the receiver's id (the
state-dependent checks, e.g. an acknowledgement past the leader's log, sit in raft.py, still
before any mutation); cheap (one pass over the entries); a message from a node outside our
configuration is not refused here (a joining node hears from a leader it does not know yet;
answers from removed nodes are ignored by the leader).
"""

from __future__ import annotations

from detsim.raft.core.errors import RemoteProtocolError
from detsim.raft.core.messages import (
    MAX_REQUEST_ID_BYTES,
    AppendRequest,
    AppendResponse,
    ConfChange,
    EntryKind,
    Heartbeat,
    HeartbeatResponse,
    Message,
    ReadIndexRequest,
    ReadIndexResponse,
    SnapshotChunk,
    SnapshotChunkResponse,
    TimeoutNow,
    VoteRequest,
)

#: Messages that only a candidate or a leader sends (hence at term >= 1).
_REQUESTS = (AppendRequest, Heartbeat, SnapshotChunk, VoteRequest, TimeoutNow, ReadIndexRequest)
#: Messages carrying a ReadIndex context (bounded by MAX_REQUEST_ID_BYTES).
_WITH_CONTEXT = (Heartbeat, HeartbeatResponse, ReadIndexRequest, ReadIndexResponse)


def validate_message(m: Message, node_id: str) -> None:
    """Raise RemoteProtocolError if no correct peer sends `m` to `node_id`."""
    if m.to != node_id or not m.frm or m.frm == node_id or m.term < 0:
        raise RemoteProtocolError(f"bad addressing or term: {type(m).__name__} {m.frm}->{m.to}")
    if m.term == 0 and isinstance(m, _REQUESTS):
        # Only answers may carry term 0 (a fresh node's); every request comes from a node
        # that has campaigned or leads, so at term >= 1.
        raise RemoteProtocolError(f"{type(m).__name__} at term 0 from {m.frm}")
    if isinstance(m, _WITH_CONTEXT) and len(m.context) > MAX_REQUEST_ID_BYTES:
        raise RemoteProtocolError(f"context of {len(m.context)} bytes from {m.frm}")
    if isinstance(m, AppendRequest):
        _validate_append(m)
    elif isinstance(m, VoteRequest):
        if m.last_log_index < 0 or not 0 <= m.last_log_term <= m.term:
            raise RemoteProtocolError(f"bad vote request {m}")
    elif isinstance(m, AppendResponse):
        if min(m.index, m.hint_index, m.hint_term) < 0:
            raise RemoteProtocolError(f"negative index in {m}")
    elif isinstance(m, Heartbeat):
        if m.commit < 0:
            raise RemoteProtocolError(f"negative commit in {m}")
    elif isinstance(m, SnapshotChunk):
        _validate_chunk(m)
    elif isinstance(m, SnapshotChunkResponse) and min(m.snapshot_index, m.next_offset) < 0:
        raise RemoteProtocolError(f"negative offset in {m}")


def _validate_append(m: AppendRequest) -> None:
    if min(m.prev_index, m.prev_term, m.commit) < 0 or m.prev_term > m.term:
        raise RemoteProtocolError(f"bad append header from {m.frm}")
    expected, term = m.prev_index + 1, max(m.prev_term, 1)
    for entry in m.entries:
        if entry.index != expected or not term <= entry.term <= m.term:
            raise RemoteProtocolError(f"non-contiguous entries from {m.frm} at {expected}")
        if entry.kind is EntryKind.CONF_CHANGE:
            try:
                ConfChange.decode(entry.data)
            except ValueError as e:
                raise RemoteProtocolError(f"bad conf change from {m.frm}: {e}") from e
        expected, term = expected + 1, entry.term


def _validate_chunk(m: SnapshotChunk) -> None:
    meta = m.meta
    end = m.offset + len(m.data)
    if meta.index < 1 or not 1 <= meta.term <= m.term or m.offset < 0:
        raise RemoteProtocolError(f"bad snapshot chunk header from {m.frm}")
    if end > meta.size_bytes or m.last != (end == meta.size_bytes):
        raise RemoteProtocolError(f"snapshot chunk past its size from {m.frm}")
