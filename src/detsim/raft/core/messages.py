"""The data of the Raft core: log entries, durable state, configuration, and the wire messages.

This module owns every type that crosses a boundary: what storage persists (`Entry`,
`HardState`, `SnapshotMeta`, `ConfState`), and what the transport carries (the messages,
`Message`, `MESSAGE_TYPES`). The codec maps each class of `MESSAGE_TYPES` to a tag.

Rules:
- Every type is a frozen, slotted dataclass (h11 `_events.py` style): values, never mutated,
  cheap to build. Node ids are `str`. Tuples, never lists (hashable, deterministic).
- Constructors do not validate: a peer's message is checked by `Raft.step` (which raises
  `RemoteProtocolError` before touching any state), so decoding stays cheap and total.
- Names are stable: other layers code against them. Add fields with defaults at the end only.
- Every message has `frm`, `to`, `term`. A message with `term == 0` is "local" to no term;
  the core never sends one.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

#: The transport's frame bound. Every message the core builds stays under it (the core sizes
#: snapshot chunks and append batches well below it); the transport rejects larger frames.
MAX_MESSAGE_BYTES = 10 * 1024 * 1024

#: Node ids longer than this are refused in a ConfChange (they travel in every message).
MAX_NODE_ID_BYTES = 255

#: A ReadIndex request id (a heartbeat context, a forwarded read) is at most this long.
MAX_REQUEST_ID_BYTES = 256


class EntryKind(enum.IntEnum):
    """What an entry's `data` holds. The leader's empty entry at election is NORMAL, data b""."""

    NORMAL = 0
    CONF_CHANGE = 1


@dataclass(frozen=True, slots=True)
class Entry:
    """One log entry. `index` >= 1; `term` >= 1; `data` is opaque unless kind is CONF_CHANGE."""

    term: int
    index: int
    kind: EntryKind = EntryKind.NORMAL
    data: bytes = b""

    def size_bytes(self) -> int:
        """An estimate of the entry's encoded size (batching bounds count this)."""
        return len(self.data) + 24


class ConfChangeOp(enum.IntEnum):
    """One-server-at-a-time membership operations (see raft.py's header for the argument)."""

    ADD_LEARNER = 0
    PROMOTE = 1
    REMOVE = 2


_CONF_CHANGE_HEADER = struct.Struct(">BB")  # op, length of node id in bytes


@dataclass(frozen=True, slots=True)
class ConfChange:
    """A membership change, carried as the data of a CONF_CHANGE entry.

    `context` is opaque to the core (the store puts the node's address there).
    """

    op: ConfChangeOp
    node_id: str
    context: bytes = b""

    def encode(self) -> bytes:
        """Bytes for `Entry.data`: op (1 byte), id length (1 byte), id (utf-8), context."""
        node = self.node_id.encode()
        if not node or len(node) > MAX_NODE_ID_BYTES:
            raise ValueError(f"node id must be 1..{MAX_NODE_ID_BYTES} bytes: {self.node_id!r}")
        return _CONF_CHANGE_HEADER.pack(int(self.op), len(node)) + node + self.context

    @classmethod
    def decode(cls, data: bytes) -> ConfChange:
        """Inverse of `encode`; raises ValueError on bytes that `encode` cannot produce."""
        if len(data) < _CONF_CHANGE_HEADER.size:
            raise ValueError("conf change data too short")
        op, length = _CONF_CHANGE_HEADER.unpack_from(data)
        start = _CONF_CHANGE_HEADER.size
        node = data[start : start + length]
        if op not in ConfChangeOp._value2member_map_ or length == 0 or len(node) != length:
            raise ValueError(f"malformed conf change data: {data[:16]!r}")
        return cls(ConfChangeOp(op), node.decode(), bytes(data[start + length :]))


@dataclass(frozen=True, slots=True)
class ConfState:
    """The membership in force: sorted tuples of ids (deterministic order everywhere)."""

    voters: tuple[str, ...]
    learners: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        # ValueError, not assert: a peer's snapshot meta carries a ConfState (the codec and
        # `step` turn this into a RemoteProtocolError).
        if list(self.voters) != sorted(set(self.voters)):
            raise ValueError(f"voters must be sorted and unique: {self.voters}")
        if list(self.learners) != sorted(set(self.learners)):
            raise ValueError(f"learners must be sorted and unique: {self.learners}")
        if set(self.voters) & set(self.learners):
            raise ValueError(f"a node is both voter and learner: {self.voters} {self.learners}")

    @classmethod
    def of(cls, voters: list[str] | tuple[str, ...], learners: tuple[str, ...] = ()) -> ConfState:
        """Build from ids in any order."""
        return cls(tuple(sorted(set(voters))), tuple(sorted(set(learners))))

    def members(self) -> tuple[str, ...]:
        """Voters and learners, sorted."""
        return tuple(sorted(self.voters + self.learners))

    def apply(self, change: ConfChange) -> ConfState:
        """The configuration after `change` (validity is checked by the caller)."""
        voters, learners = set(self.voters), set(self.learners)
        if change.op is ConfChangeOp.ADD_LEARNER:
            if change.node_id not in voters:
                learners.add(change.node_id)
        elif change.op is ConfChangeOp.PROMOTE:
            learners.discard(change.node_id)
            voters.add(change.node_id)
        else:
            voters.discard(change.node_id)
            learners.discard(change.node_id)
        return ConfState(tuple(sorted(voters)), tuple(sorted(learners)))


@dataclass(frozen=True, slots=True)
class HardState:
    """What must be durable before any message that depends on it is sent."""

    term: int = 0
    vote: str | None = None
    commit: int = 0


@dataclass(frozen=True, slots=True)
class SnapshotMeta:
    """A snapshot covers the log up to `index` (whose term is `term`) under membership `conf`."""

    index: int
    term: int
    conf: ConfState
    size_bytes: int


# ---------------------------------------------------------------------------------------------
# Messages. Each has frm, to, term (the sender's current term).


@dataclass(frozen=True, slots=True)
class VoteRequest:
    """RequestVote (or a PreVote when `pre`: `term` is then the term the sender would take).

    `transfer` marks a campaign forced by TimeoutNow: voters grant it even if they heard from a
    live leader recently (CheckQuorum's lease would otherwise refuse it).
    """

    frm: str
    to: str
    term: int
    last_log_index: int
    last_log_term: int
    pre: bool = False
    transfer: bool = False


@dataclass(frozen=True, slots=True)
class VoteResponse:
    """Answer to a VoteRequest; `pre` echoes the request's."""

    frm: str
    to: str
    term: int
    granted: bool
    pre: bool = False


@dataclass(frozen=True, slots=True)
class AppendRequest:
    """AppendEntries: entries follow (prev_index, prev_term); `commit` is the leader's commit."""

    frm: str
    to: str
    term: int
    prev_index: int
    prev_term: int
    entries: tuple[Entry, ...] = ()
    commit: int = 0


@dataclass(frozen=True, slots=True)
class AppendResponse:
    """Answer to an AppendRequest (or to an installed snapshot).

    Accepted (`reject` False): `index` is the last index now known to match the leader's log.
    Rejected: `index` is the request's prev_index, and the hint is etcd's fast backtracking:
    `hint_index` is the largest index <= prev_index whose term `hint_term` is <= the request's
    prev_term (or the follower's last index if its log is shorter), so the leader can skip a
    whole conflicting term in one round trip.
    """

    frm: str
    to: str
    term: int
    index: int
    reject: bool = False
    hint_index: int = 0
    hint_term: int = 0


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """Leader's heartbeat. `commit` is min(leader commit, follower's match) so a follower never
    commits past what it holds; `context` carries a ReadIndex round (b"" if none)."""

    frm: str
    to: str
    term: int
    commit: int = 0
    context: bytes = b""


@dataclass(frozen=True, slots=True)
class HeartbeatResponse:
    """Answer to a Heartbeat; echoes its `context` (confirms leadership for ReadIndex)."""

    frm: str
    to: str
    term: int
    context: bytes = b""


@dataclass(frozen=True, slots=True)
class SnapshotChunk:
    """One chunk of InstallSnapshot: `data` is the snapshot file's bytes at `offset`."""

    frm: str
    to: str
    term: int
    meta: SnapshotMeta
    offset: int
    data: bytes
    last: bool


@dataclass(frozen=True, slots=True)
class SnapshotChunkResponse:
    """Flow control for InstallSnapshot: the follower expects `next_offset` of the snapshot at
    `snapshot_index` next. `gap` marks the answer to a chunk past that offset (one was lost,
    or the follower restarted and expects 0): the leader resends from `next_offset`. Plain
    answers only acknowledge. Completion is an AppendResponse."""

    frm: str
    to: str
    term: int
    snapshot_index: int
    next_offset: int
    gap: bool = False


@dataclass(frozen=True, slots=True)
class TimeoutNow:
    """Leadership transfer: the receiver campaigns at once (a `transfer` vote request)."""

    frm: str
    to: str
    term: int


@dataclass(frozen=True, slots=True)
class ReadIndexRequest:
    """A follower forwards a ReadIndex request (`context` = request id) to the leader."""

    frm: str
    to: str
    term: int
    context: bytes


@dataclass(frozen=True, slots=True)
class ReadIndexResponse:
    """The leader's answer to a forwarded ReadIndex: the read may be served once applied >=
    `index`. `reject` means the leader could not serve it (the requester should retry)."""

    frm: str
    to: str
    term: int
    context: bytes
    index: int = 0
    reject: bool = False


Message = (
    VoteRequest
    | VoteResponse
    | AppendRequest
    | AppendResponse
    | Heartbeat
    | HeartbeatResponse
    | SnapshotChunk
    | SnapshotChunkResponse
    | TimeoutNow
    | ReadIndexRequest
    | ReadIndexResponse
)

#: Every message class, in a fixed order (the codec may use positions as tags; append only).
MESSAGE_TYPES: tuple[type, ...] = (
    VoteRequest,
    VoteResponse,
    AppendRequest,
    AppendResponse,
    Heartbeat,
    HeartbeatResponse,
    SnapshotChunk,
    SnapshotChunkResponse,
    TimeoutNow,
    ReadIndexRequest,
    ReadIndexResponse,
)
