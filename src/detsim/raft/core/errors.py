"""Errors of the Raft core, h11 style: whose fault is it?

- `RaftError` is the root. Its subclasses other than `RemoteProtocolError` report a caller's
  misuse or a request the core cannot serve now (`NotLeader`, `ProposalDropped`, ...): the
  caller may retry elsewhere or later. They never change the core's state.
- `RemoteProtocolError` reports a peer's bad message (non-contiguous entries, a negative index,
  an unknown sender...). `step` raises it *before* touching any state, so the driver drops the
  message, counts it, and carries on. A peer can never corrupt a node or crash it via assert.
- `AssertionError` (from `assert`) is a bug in the core itself, never a peer's fault.
"""

from __future__ import annotations


class RaftError(Exception):
    """Root of every error the Raft core raises on purpose."""


class RemoteProtocolError(RaftError):
    """A peer sent a message that no correct Raft node sends; it was ignored, state untouched."""


class ProposalDropped(RaftError):
    """The proposal was not appended (bounds, transfer in progress, conf change pending...)."""


class NotLeader(ProposalDropped):
    """Only the leader accepts this request; `leader_hint` is the leader we know of, or None."""

    def __init__(self, leader_hint: str | None, message: str = "") -> None:
        self.leader_hint = leader_hint
        text = message or f"not the leader (leader hint: {leader_hint})"
        super().__init__(text)


class ReadIndexDropped(RaftError):
    """The read-index request was not registered (no leader known, or too many pending)."""


class TransferRejected(RaftError):
    """Leadership transfer was not started (not leader, unknown or non-voter target...)."""


class ConfChangeRejected(ProposalDropped):
    """The configuration change is invalid now (one at a time; unknown node; last voter...)."""


class CompactionRejected(RaftError):
    """`compact` was called with a snapshot the log cannot be compacted to."""
