"""The leader's view of each follower: how far its log matches, and how to send it more.

Owns `Progress` (one per member, the leader's own included) and its three states, after etcd's
`tracker/progress.go`:

| state     | meaning                                        | sends                              |
|-----------|------------------------------------------------|------------------------------------|
| PROBE     | match unknown: find the last matching index    | one append, then wait for an answer|
| REPLICATE | match known: stream optimistically             | up to `max_inflight` appends ahead |
| SNAPSHOT  | the entries it needs are compacted             | snapshot chunks (a bounded window) |

Rules, asserted: `match < next`; `match` never decreases within a term; the in-flight window
never exceeds its bound; a follower in SNAPSHOT state gets no appends.
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass
from typing import Final

from detsim.raft.core.messages import SnapshotMeta


class ProgressState(enum.Enum):
    PROBE = "probe"
    REPLICATE = "replicate"
    SNAPSHOT = "snapshot"


class Inflights:
    """The last index of each append sent and not yet acknowledged, oldest first (bounded)."""

    __slots__ = ("_ends", "capacity")

    def __init__(self, capacity: int) -> None:
        assert capacity >= 1
        self.capacity = capacity
        self._ends: deque[int] = deque()

    def add(self, last_index: int) -> None:
        assert not self.full(), "in-flight window overflow"
        assert not self._ends or last_index > self._ends[-1], (last_index, self._ends)
        self._ends.append(last_index)

    def free_le(self, index: int) -> None:
        """Forget the appends acknowledged by a response covering `index`."""
        while self._ends and self._ends[0] <= index:
            self._ends.popleft()

    def free_first(self) -> None:
        """Forget the oldest append (a heartbeat answer suggests it was lost)."""
        if self._ends:
            self._ends.popleft()

    def full(self) -> bool:
        return len(self._ends) >= self.capacity

    def count(self) -> int:
        return len(self._ends)

    def reset(self) -> None:
        self._ends.clear()


@dataclass(slots=True)
class SnapshotStream:
    """The leader's side of one chunked InstallSnapshot to one follower.

    `sent_offset`: bytes sent so far; `acked_offset`: the offset the follower said it expects
    next. `stalled_ticks` counts ticks without progress (a stalled stream is resent from
    `acked_offset`). `rewound_at`: the offset of the last resend (-1: none), so that the many
    identical answers a lost chunk draws cause one resend, not one each."""

    meta: SnapshotMeta
    sent_offset: int = 0
    acked_offset: int = 0
    stalled_ticks: int = 0
    rewound_at: int = -1


#: `Progress.last_heard_tick` of a member not heard from since this leader took over.
NEVER_HEARD: Final = -(1 << 62)


class Progress:
    """One member's replication state as seen by the leader."""

    __slots__ = (
        "inflights",
        "is_learner",
        "last_heard_tick",
        "match",
        "next",
        "probe_sent",
        "recent_active",
        "state",
        "stream",
    )

    def __init__(self, next_index: int, max_inflight: int, is_learner: bool) -> None:
        self.match = 0
        self.next = next_index
        self.state = ProgressState.PROBE
        self.probe_sent = False  # PROBE: an append is out, wait for its answer or a heartbeat
        self.recent_active = False  # heard from it since the last CheckQuorum round
        self.last_heard_tick = NEVER_HEARD  # the leader's tick when it last answered
        self.inflights = Inflights(max_inflight)
        self.is_learner = is_learner
        self.stream: SnapshotStream | None = None

    def _reset_state(self, state: ProgressState) -> None:
        self.state = state
        self.probe_sent = False
        self.inflights.reset()
        self.stream = None

    def become_probe(self) -> None:
        pending = self.stream.meta.index if self.stream else 0
        self._reset_state(ProgressState.PROBE)
        self.next = max(self.match + 1, pending + 1)

    def become_replicate(self) -> None:
        self._reset_state(ProgressState.REPLICATE)
        self.next = self.match + 1

    def become_snapshot(self, meta: SnapshotMeta) -> None:
        self._reset_state(ProgressState.SNAPSHOT)
        self.stream = SnapshotStream(meta)
        self.next = meta.index + 1

    def is_paused(self) -> bool:
        if self.state is ProgressState.PROBE:
            return self.probe_sent
        if self.state is ProgressState.REPLICATE:
            return self.inflights.full()
        return True

    def sent_entries(self, count: int, last_index: int) -> None:
        """An append carrying `count` entries ending at `last_index` was sent."""
        assert self.state is not ProgressState.SNAPSHOT
        if self.state is ProgressState.REPLICATE:
            if count:
                self.next = last_index + 1
                self.inflights.add(last_index)
        elif count:
            self.probe_sent = True

    def maybe_update(self, index: int) -> bool:
        """The follower matches up to `index`. True if that is news."""
        if index <= self.match:
            return False
        self.match = index
        self.next = max(self.next, index + 1)
        self.probe_sent = False
        assert self.match < self.next
        return True

    def maybe_decrease_to(self, rejected: int, match_hint: int) -> bool:
        """An append at prev_index `rejected` was refused; `match_hint` is where the logs may
        match (from the follower's conflict hint). False if the rejection is stale."""
        if self.state is ProgressState.REPLICATE:
            if rejected <= self.match:
                # Stale (reordered): `match` came from the follower's own acknowledgement, sent
                # only once those entries were durable on its disk (ready.py), so its log can
                # not have become shorter since. A follower that did lose acknowledged entries
                # (a skipped fsync) is outside Raft's model (Figure 2: the log is persistent
                # state): it may already have counted in a commit quorum. Like etcd, never
                # lower `match` for it; such a follower stays stuck below it, a visible symptom.
                return False
            self.next = self.match + 1
            return True
        if self.next - 1 != rejected:
            return False
        self.next = max(min(rejected, match_hint + 1), self.match + 1)
        self.probe_sent = False
        return True

    def describe(self) -> str:
        """One line for golden files and debugging."""
        text = f"{self.state.value} match={self.match} next={self.next}"
        if self.is_learner:
            text += " learner"
        if self.is_paused():
            text += " paused"
        if self.stream is not None:
            text += f" snap={self.stream.meta.index}@{self.stream.acked_offset}"
        if self.inflights.count():
            text += f" inflight={self.inflights.count()}"
        return text
