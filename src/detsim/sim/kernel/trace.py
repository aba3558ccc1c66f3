"""The trace: every event of a run, and the hash of every decision.

Two things are recorded:
- events: `(t, node, kind, fields)` for starts, kills, connects, segments, faults, fsyncs and
  user events (`detsim.trace.event`, in the world's `detsim.sim.trace`). They go to artifacts
  and name a divergence.
- decisions: scheduling orders, timer deadlines, entropy draws. They are folded into an integer
  with `hash()` of tuples of ints and floats only — deterministic across processes and hash
  seeds, unlike `hash(str)` — and each event carries the decision state at its time, so that
  two runs whose events agree but whose choices differ are still told apart, at the right event.

Bounds: at most `max_events` events are kept in memory (the rest are hashed, then dropped, and
counted in `dropped`); the hash covers all of them.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

DEFAULT_MAX_EVENTS = 200_000
_HASH_CHUNK_EVENTS = 4_096

Event = tuple[float, str, str, dict[str, Any], int]


class Trace:
    __slots__ = ("_digest", "_unhashed", "decision", "dropped", "events", "max_events")

    def __init__(self, max_events: int = DEFAULT_MAX_EVENTS) -> None:
        if max_events < 0:
            raise ValueError("max_events must be >= 0")
        self.max_events = max_events
        self.events: list[Event] = []
        self.dropped = 0
        self.decision = 0
        self._digest = hashlib.blake2b(digest_size=16)
        self._unhashed: list[Event] = []

    def mix(self, *values: int | float) -> None:
        """Fold a decision (ints and floats only) into the decision state."""
        self.decision = hash((self.decision, *values))

    def record(self, t: float, node: str, kind: str, fields: dict[str, Any]) -> None:
        ev: Event = (t, node, kind, fields, self.decision)
        self._unhashed.append(ev)
        if len(self._unhashed) >= _HASH_CHUNK_EVENTS:
            self._flush()
        if len(self.events) < self.max_events:
            self.events.append(ev)
        else:
            self.dropped += 1

    def _flush(self) -> None:
        # repr() of floats, ints, strs, and insertion-ordered dicts is stable across processes.
        self._digest.update(repr(self._unhashed).encode())
        self._unhashed.clear()

    def hexdigest(self) -> str:
        """The hash so far. Reading it changes nothing: chunking never depends on reads."""
        d = self._digest.copy()
        if self._unhashed:
            d.update(repr(self._unhashed).encode())
        d.update(repr(self.decision).encode())
        return d.hexdigest()


def event_dict(ev: Event) -> dict[str, Any]:
    """An event as the artifact's JSON object: `{"t", "node", "kind", ...fields}`."""
    t, node, kind, fields, _ = ev
    return {"t": round(t, 9), "node": node, "kind": kind, **fields}


_ADDRESS = re.compile(r"\bat 0x[0-9a-fA-F]+")


def stable_text(text: str) -> str:
    """`text` without memory addresses (`<function f at 0x7f...>`), for a traced message: an
    address differs between runs, even of one seed in one process, and the trace is hashed."""
    return _ADDRESS.sub("at 0x?", text)
