"""detsim.raft.core: a pure, sans-I/O Raft modelled on etcd-io/raft.

Driven only by `tick()` and `step(message)` plus the local requests (`propose`,
`propose_conf_change`, `read_index`, `transfer_leadership`, `compact`, `campaign`); its output
is a `Ready` whose fields state what must be durable before what is sent. Rule: nothing here
imports asyncio, time, random, socket, os or detsim.sim (tests/test_layers.py enforces it).

Use (what the driver does; tests/raft/core/raft_harness.py is a complete in-memory one):

    raft = Raft(RaftConfig("n1"), random.Random(seed), hard_state=..., snapshot=...,
                entries=..., applied=..., initial_conf=ConfState.of(["n1", "n2", "n3"]),
                snapshot_reader=reader)
    raft.tick()                  # every tick period
    raft.step(message)           # each message from a peer (RemoteProtocolError: drop it)
    index = raft.propose(data)   # NotLeader / ProposalDropped: not appended
    if raft.has_ready():
        rd = raft.ready()        # persist, send, apply: see ready.py for the order
        raft.advance(rd)

Module map: messages (wire + durable types), errors, config, log (the raft log over the
snapshot), membership (the configuration in force along the log), progress (the leader's view
of each follower), readonly (ReadIndex rounds), validate (a peer's message, before any state
changes), ready (the output contract), raft (the protocol's state machine, driving them all).
"""

from __future__ import annotations

from detsim.raft.core.errors import (
    ConfChangeRejected,
    NotLeader,
    ProposalDropped,
    RaftError,
    ReadIndexDropped,
    RemoteProtocolError,
    TransferRejected,
)
from detsim.raft.core.messages import (
    MAX_MESSAGE_BYTES,
    MAX_REQUEST_ID_BYTES,
    MESSAGE_TYPES,
    AppendRequest,
    AppendResponse,
    ConfChange,
    ConfChangeOp,
    ConfState,
    Entry,
    EntryKind,
    HardState,
    Heartbeat,
    HeartbeatResponse,
    Message,
    ReadIndexRequest,
    ReadIndexResponse,
    SnapshotChunk,
    SnapshotChunkResponse,
    SnapshotMeta,
    TimeoutNow,
    VoteRequest,
    VoteResponse,
)

__all__ = [
    "MAX_MESSAGE_BYTES",
    "MAX_REQUEST_ID_BYTES",
    "MESSAGE_TYPES",
    "AppendRequest",
    "AppendResponse",
    "ConfChange",
    "ConfChangeOp",
    "ConfChangeRejected",
    "ConfState",
    "Entry",
    "EntryKind",
    "HardState",
    "Heartbeat",
    "HeartbeatResponse",
    "Message",
    "NotLeader",
    "ProposalDropped",
    "RaftError",
    "ReadIndexDropped",
    "ReadIndexRequest",
    "ReadIndexResponse",
    "RemoteProtocolError",
    "SnapshotChunk",
    "SnapshotChunkResponse",
    "SnapshotMeta",
    "TimeoutNow",
    "TransferRejected",
    "VoteRequest",
    "VoteResponse",
]
