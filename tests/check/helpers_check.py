"""Helpers shared by the check tests: a tiny history builder and an independent brute force.

The brute-force checker re-implements the kv semantics of detsim.check.models on purpose (no
import of it), and tries every real-time-respecting order of every allowed subset of ops, on
the whole history at once (no split by key): it is the reference the fast checker must match.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from detsim.check.history import Event, Operation, pair_events

MISSING = object()


class H:
    """Build a history: h.inv(p, f, key, value) / h.ok(p, value) / h.fail(p, err) / h.info(p)."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.open: dict[int, tuple[str, str | None]] = {}

    def _add(self, p: int, etype: str, f: str, key: str | None, value: Any, error: Any) -> H:
        index = len(self.events)
        self.events.append(Event(index, index * 1000, p, etype, f, key, value, error))
        return self

    def inv(self, p: int, f: str, key: str | None, value: Any = None) -> H:
        self.open[p] = (f, key)
        return self._add(p, "invoke", f, key, value, None)

    def ok(self, p: int, value: Any = None) -> H:
        f, key = self.open.pop(p)
        return self._add(p, "ok", f, key, value, None)

    def fail(self, p: int, error: str = "NOLEADER") -> H:
        f, key = self.open.pop(p)
        return self._add(p, "fail", f, key, None, error)

    def info(self, p: int) -> H:
        f, key = self.open.pop(p)
        return self._add(p, "info", f, key, None, "timeout")

    def call(self, p: int, f: str, key: str | None, value: Any = None, out: Any = None) -> H:
        return self.inv(p, f, key, value).ok(p, out)


def concurrent_info_writes(
    n: int,
    f: str = "append",
    keys: tuple[str, ...] = ("x",),
    *,
    observed: bool = False,
    reverse: bool = False,
    never: bool = True,
    mixed: bool = True,
    pad: int = 0,
    h: H | None = None,
) -> H:
    """Per key: n concurrent writes (`f` of distinct values) that all time out (info), then
    (observed) a read of each value as the writes leave it in invoke order (reverse: in the
    reverse order, which a search tries last), then (never) a read of a
    value never written. With it not linearizable, and a search without shortcuts tries every
    subset (for appends every ordered subset) of the writes before it can say so. `mixed`:
    first a completed put of "", so that a key of appends is not append-only (the search
    decides those at once: search.py "Growing keys"). `pad`: characters added to every value.
    Added to `h` when given (process ids continue from its highest)."""
    h = H() if h is None else h
    p = 1 + max((e.process for e in h.events), default=-1)
    for key in keys:
        if mixed:
            h.call(p, "put", key, "")
            p += 1
        first = p
        for i in range(n):
            h.inv(p, f, key, f"{i}{'.' * pad};")
            p += 1
        for q in range(first, p):
            h.info(q)
        seen = ""
        order = reversed(range(n)) if reverse else range(n)
        for i in order if observed else ():
            value = f"{i}{'.' * pad};"
            seen = seen + value if f == "append" else value
            h.call(p, "get", key, out=seen)
            p += 1
        if never:
            h.call(p, "get", key, out="never")
            p += 1
    return h


def _text(v: Any) -> Any:
    return str(v) if isinstance(v, int) and not isinstance(v, bool) else v


def apply(state: dict[Any, Any], op: Operation) -> bool:
    """Apply op to the store (in place); False if its outcome is impossible in this state."""
    cur = state.get(op.key)
    certain = op.status == "ok"
    if op.f == "get":
        return _text(op.output) == cur
    if op.f == "put":
        state[op.key] = _text(op.value)
        return True
    if op.f == "append":
        new = _text(op.value) if cur is None else cur + _text(op.value)
        if certain and isinstance(op.output, int) and op.output != len(new.encode()):
            return False
        state[op.key] = new
        return True
    if op.f == "delete":
        if certain and isinstance(op.output, int) and op.output != (1 if cur is not None else 0):
            return False
        state.pop(op.key, None)
        return True
    if op.f == "incr":
        try:
            n = 0 if cur is None else int(cur)
        except ValueError:
            return not certain
        if cur is not None and str(n) != cur:
            return not certain
        if certain and op.output is not None and _text(op.output) != str(n + 1):
            return False
        state[op.key] = str(n + 1)
        return True
    if op.f == "cas":
        expected, new = (_text(v) for v in op.value)
        if op.status == "fail":  # cas-mismatch observation
            return cur != expected
        if cur == expected:
            state[op.key] = new
            return True
        return not certain
    raise AssertionError(op.f)


def brute_force(ops: list[Operation]) -> bool:
    """Every subset of optional ops, every order consistent with real time."""
    must = [o for o in ops if o.status == "ok" or o.error == "cas-mismatch"]
    optional = [o for o in ops if o.status == "info" and o.f != "get"]
    for r in range(len(optional) + 1):
        for extra in itertools.combinations(optional, r):
            chosen = must + list(extra)
            for order in itertools.permutations(chosen):
                if _respects_real_time(order) and _legal(order):
                    return True
    return False


def _respects_real_time(order: tuple[Operation, ...]) -> bool:
    for i, a in enumerate(order):
        for b in order[i + 1 :]:
            if b.complete_index is not None and b.complete_index < a.invoke_index:
                return False
    return True


def _legal(order: tuple[Operation, ...]) -> bool:
    state: dict[Any, Any] = {}
    return all(apply(state, op) for op in order)


def brute_events(events: list[Event]) -> bool:
    return brute_force(pair_events(events))


def run_script_json(script: str) -> Any:
    """Run `script` in a fresh interpreter (argv[1]: this folder, for the helpers' import) and
    parse the JSON it prints; its stderr is the message if it fails."""
    done = subprocess.run(
        [sys.executable, "-c", script, str(Path(__file__).resolve().parent)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)
