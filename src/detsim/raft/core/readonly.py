"""ReadIndex rounds at the leader (thesis §6.4; etcd `read_only.go`, safe mode only: no leases,
because leases break under the clock skew the simulator injects).

A read request becomes a *round*: the leader records its commit index, sends a heartbeat whose
context is the round's id, and once a quorum of voters (itself included) echoes that context,
the round and every older round are confirmed: the leader was still leader when they arrived,
so their recorded index covers every write acknowledged before the read.

Owns: the rounds in arrival order, each with its requesters and acknowledgements. Rules: round
ids are the leader's own counter (never a requester's id, which could collide across
followers); at most `capacity` requests are pending; everything is dropped when leadership is.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class ReadRound:
    """One heartbeat round confirming the leadership for reads that arrived at `index`."""

    context: bytes
    index: int
    requests: list[tuple[str, bytes]]  # (requester node id, request id)
    acks: set[str] = field(default_factory=set)


class ReadOnly:
    """Pending ReadIndex rounds, oldest first."""

    __slots__ = ("_next_round", "capacity", "rounds")

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.rounds: list[ReadRound] = []
        self._next_round = 1

    def pending_requests(self) -> int:
        return sum(len(r.requests) for r in self.rounds)

    def add(self, index: int, requester: str, request_id: bytes) -> ReadRound:
        """Start a round for one request; the caller checked the bound."""
        context = self._next_round.to_bytes(8, "big")
        self._next_round += 1
        read_round = ReadRound(context, index, [(requester, request_id)])
        self.rounds.append(read_round)
        return read_round

    def ack(self, context: bytes, voter: str) -> ReadRound | None:
        """Record `voter` echoing `context`; the round, or None if unknown (stale)."""
        for read_round in self.rounds:
            if read_round.context == context:
                read_round.acks.add(voter)
                return read_round
        return None

    def confirm(self, read_round: ReadRound) -> list[ReadRound]:
        """`read_round` has a quorum: pop it and every older round (confirmed with it)."""
        position = self.rounds.index(read_round)
        done = self.rounds[: position + 1]
        del self.rounds[: position + 1]
        return done

    def clear(self) -> list[ReadRound]:
        dropped, self.rounds = self.rounds, []
        return dropped
