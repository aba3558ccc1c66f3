"""Histories: the event format, its JSON-lines reader and writer, and pairing into operations.

This module owns the public history format of DESIGN.md ("Histories and checkers"):

    {"index": 17, "time": 123456789, "process": 3, "type": "invoke|ok|fail|info",
     "f": "get|put|append|cas|delete|incr", "key": "x", "value": ..., "error": null}

Rules (checked by `pair_events`, reported as `HistoryError` with the line number):

- `index` is dense and strictly increasing; it alone decides real-time order. `time` (virtual
  nanoseconds) is informational and never used by the checker.
- A process has at most one operation outstanding: `invoke`, then one of ok / fail / info with the
  same `f` and `key`. A completion without an outstanding invoke is an error.
- An `info` op stays open forever: it may take effect at any point after its invoke, or never.
  The process should not issue again (the recorder hands out a new id); if it does anyway, the
  new op is simply another op (the open one keeps its unbounded window), as porcupine does.
- An invoke never completed by the end of the history is treated as `info`.
- `key` may be null for every event: the history is then one register.
- Values are JSON: strings, ints, null, or a two-element list for cas (`[expected, new]`).

Bounds: at most MAX_EVENTS events and MAX_LINE_CHARS characters a line, so a corrupt or hostile
file fails fast with a clear message instead of exhausting memory.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, TextIO

EVENT_TYPES: Final = ("invoke", "ok", "fail", "info")
FUNCTIONS: Final = ("get", "put", "append", "cas", "delete", "incr")
CAS_MISMATCH: Final = "cas-mismatch"

MAX_EVENTS: Final = 10_000_000
MAX_LINE_CHARS: Final = 1 << 20

Value = Any  # str | int | None | list[...] as written in the history (JSON)


class HistoryError(ValueError):
    """A history that cannot be read: `line` is 1-based (0 when not tied to one line)."""

    def __init__(self, message: str, line: int = 0, source: str = "") -> None:
        self.message = message
        self.line = line
        self.source = source
        where = f"{source}:" if source else ""
        where += f"line {line}: " if line else (" " if source else "")
        super().__init__(f"{where}{message}")


@dataclass(frozen=True, slots=True)
class Event:
    """One line of a history."""

    index: int
    time: int
    process: int
    type: str
    f: str
    key: str | None
    value: Value = None
    error: str | None = None

    def to_json(self) -> dict[str, Value]:
        return {
            "index": self.index,
            "time": self.time,
            "process": self.process,
            "type": self.type,
            "f": self.f,
            "key": self.key,
            "value": self.value,
            "error": self.error,
        }


@dataclass(frozen=True, slots=True)
class Operation:
    """An invoke paired with its completion. `complete_index` is None for info/open ops."""

    process: int
    f: str
    key: str | None
    value: Value  # the invoke's argument (put/append: v, cas: [expected, new], get: None)
    output: Value  # the completion's value (get: the value read; incr: the new int; ...)
    status: str  # "ok" | "fail" | "info"
    error: str | None
    invoke_index: int
    complete_index: int | None
    invoke_time: int = 0
    complete_time: int | None = None

    def describe(self) -> str:
        """A short human label, e.g. `get(x) -> 3`, `cas(x, 1, 2) -> mismatch`."""
        key = "" if self.key is None else f"{self.key}"
        if self.f == "cas" and isinstance(self.value, list) and len(self.value) == 2:
            args = f"{key}, {_show(self.value[0])}, {_show(self.value[1])}".lstrip(", ")
        elif self.f in ("put", "append"):
            args = f"{key}, {_show(self.value)}".lstrip(", ")
        else:
            args = key
        label = f"{self.f}({args})"
        if self.status == "info":
            return f"{label} -> ?"
        if self.status == "fail":
            return f"{label} -> {'mismatch' if self.error == CAS_MISMATCH else 'fail'}"
        if self.f in ("get", "incr"):
            return f"{label} -> {_show(self.output)}"
        return label


def _show(value: Value) -> str:
    return "nil" if value is None else json.dumps(value) if isinstance(value, str) else str(value)


# ---------------------------------------------------------------------------------------------
# Parsing one event


def event_from_json(obj: object, line: int = 0, source: str = "") -> Event:
    """Validate one decoded JSON object as an Event (HistoryError on anything malformed)."""
    if not isinstance(obj, dict):
        raise HistoryError("an event must be a JSON object", line, source)
    missing = [k for k in ("index", "process", "type", "f") if k not in obj]
    if missing:
        raise HistoryError(f"missing field(s) {', '.join(missing)}", line, source)
    index, process, time_ns = obj["index"], obj["process"], obj.get("time", 0)
    for name, val in (("index", index), ("process", process), ("time", time_ns)):
        if not isinstance(val, int) or isinstance(val, bool):
            raise HistoryError(f"{name!r} must be an integer, got {val!r}", line, source)
    etype, f = obj["type"], obj["f"]
    if etype not in EVENT_TYPES:
        raise HistoryError(
            f"'type' must be one of {', '.join(EVENT_TYPES)}: {etype!r}", line, source
        )
    if f not in FUNCTIONS:
        raise HistoryError(f"'f' must be one of {', '.join(FUNCTIONS)}: {f!r}", line, source)
    key, error = obj.get("key"), obj.get("error")
    if key is not None and not isinstance(key, str):
        raise HistoryError(f"'key' must be a string or null, got {key!r}", line, source)
    if error is not None and not isinstance(error, str):
        raise HistoryError(f"'error' must be a string or null, got {error!r}", line, source)
    value = obj.get("value")
    if etype == "invoke" and f == "cas" and not (isinstance(value, list) and len(value) == 2):
        raise HistoryError(f"cas invoke value must be [expected, new], got {value!r}", line, source)
    return Event(index, time_ns, process, etype, f, key, value, error)


# ---------------------------------------------------------------------------------------------
# JSON lines reader and writer


def iter_json_lines(lines: Iterable[str], source: str = "") -> Iterator[Event]:
    """Events from JSON lines; blank lines are skipped."""
    count = 0
    for number, raw in enumerate(lines, start=1):
        if len(raw) > MAX_LINE_CHARS:
            raise HistoryError(f"line longer than {MAX_LINE_CHARS} characters", number, source)
        text = raw.strip()
        if not text:
            continue
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as exc:
            msg = f"invalid JSON: {exc.msg} (column {exc.colno})"
            raise HistoryError(msg, number, source) from None
        count += 1
        if count > MAX_EVENTS:
            raise HistoryError(f"more than {MAX_EVENTS} events", number, source)
        yield event_from_json(obj, number, source)


def read_history(source: str | Path | TextIO | Iterable[str]) -> list[Event]:
    """Read a JSON-lines history from a path, an open text file, or an iterable of lines."""
    if isinstance(source, str | Path):
        with open(source, encoding="utf-8", errors="strict") as fh:
            return list(iter_json_lines(fh, str(source)))
    return list(iter_json_lines(source))


def dumps_event(event: Event) -> str:
    return json.dumps(event.to_json(), separators=(", ", ": "), ensure_ascii=False)


def write_history(events: Iterable[Event], dest: str | Path | TextIO) -> int:
    """Write events as JSON lines; returns the number written."""
    if isinstance(dest, str | Path):
        with open(dest, "w", encoding="utf-8") as fh:
            return write_history(events, fh)
    count = 0
    for event in events:
        dest.write(dumps_event(event))
        dest.write("\n")
        count += 1
    return count


# ---------------------------------------------------------------------------------------------
# Pairing


def pair_events(
    events: Iterable[Event], source: str = "", lines: Sequence[int] | None = None
) -> list[Operation]:
    """Pair invokes with completions; ops come out in invoke order.

    The line number in errors is `lines[i]` for the i-th event when given, else the event's
    position in the sequence (1-based).
    """
    pending: dict[int, tuple[int, Event]] = {}  # process -> (slot in ops, invoke)
    ops: list[Operation | None] = []
    last_index: int | None = None
    for number, ev in enumerate(events, start=1):
        position = lines[number - 1] if lines is not None else number
        if last_index is not None and ev.index <= last_index:
            raise HistoryError(
                f"index {ev.index} is not above the previous {last_index}", position, source
            )
        last_index = ev.index
        if ev.type == "invoke":
            _open(pending, ops, ev, position, source)
        else:
            _close(pending, ops, ev, position, source)
    for slot, inv in pending.values():
        ops[slot] = _operation(inv, None)
    return [op for op in ops if op is not None]


def _open(
    pending: dict[int, tuple[int, Event]],
    ops: list[Operation | None],
    ev: Event,
    position: int,
    source: str,
) -> None:
    if ev.process in pending:
        inv = pending[ev.process][1]
        raise HistoryError(
            f"process {ev.process} invokes again while its op at index {inv.index} is outstanding",
            position,
            source,
        )
    pending[ev.process] = (len(ops), ev)
    ops.append(None)


def _close(
    pending: dict[int, tuple[int, Event]],
    ops: list[Operation | None],
    ev: Event,
    position: int,
    source: str,
) -> None:
    entry = pending.pop(ev.process, None)
    if entry is None:
        raise HistoryError(
            f"{ev.type} of process {ev.process} without an outstanding invoke", position, source
        )
    slot, inv = entry
    if (inv.f, inv.key) != (ev.f, ev.key):
        raise HistoryError(
            f"{ev.type} {ev.f}({ev.key}) does not match the invoke {inv.f}({inv.key}) "
            f"at index {inv.index}",
            position,
            source,
        )
    ops[slot] = _operation(inv, ev)


def _operation(inv: Event, done: Event | None) -> Operation:
    if done is None or done.type == "info":
        return Operation(
            inv.process,
            inv.f,
            inv.key,
            inv.value,
            None,
            "info",
            None if done is None else done.error,
            inv.index,
            None,
            inv.time,
            None,
        )
    return Operation(
        inv.process,
        inv.f,
        inv.key,
        inv.value,
        done.value,
        done.type,
        done.error,
        inv.index,
        done.index,
        inv.time,
        done.time,
    )
