"""Reading history files in the three formats `detsim check` accepts, detected per file.

Owns format detection and the translation of foreign histories into our events.

- `json`: our JSON lines (history.py). Default model `kv`.
- `edn`: Jepsen/Knossos maps, one per line: `{:process 0, :type :invoke, :f :read, :value nil}`.
  Jepsen's read/write are get/put; other f names must be ours. A map whose :process is not an
  integer (the nemesis) is skipped. `:fail` is Knossos's "did not happen" (dropped) unless its
  :error is :cas-mismatch. Default model: `kv-empty` when ops carry a :key (the
  porcupine/Knossos kv histories, where a missing key reads as ""), else `register`.
- `etcd`: Jepsen etcd log lines as in porcupine's test data,
  `INFO  jepsen.util - 3	:invoke	:cas	[1 4]`; other lines are skipped, as porcupine does.
  As in porcupine's etcdModel: a `:fail` cas is an observation that the value differed
  (cas-mismatch), `:info` (and `:fail :read :timed-out`) is unknown: the op stays open to the
  end of the history. Default model `register`.

Detection looks at the first non-blank line: `{"` is json, `{:` is edn, a `jepsen.util` line
is etcd. Events from edn/etcd get `index` = line number, so errors point at the file's lines.
Bounds: MAX_LINE_CHARS a line and MAX_EVENTS events, as for JSON lines.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from detsim.check import edn
from detsim.check.history import (
    CAS_MISMATCH,
    FUNCTIONS,
    MAX_EVENTS,
    MAX_LINE_CHARS,
    Event,
    HistoryError,
    Operation,
    event_from_json,
    pair_events,
)

_JEPSEN_F: Final = {"read": "get", "write": "put"}
_ETCD_LINE = re.compile(
    r"^INFO\s+jepsen\.util\s+-\s+(\d+)\s+:(invoke|ok|fail|info)\s+:(read|write|cas)\s+(.*?)\s*$"
)
_ETCD_VALUE = re.compile(r"^(?:(nil)|(-?\d+)|\[(-?\d+)\s+(-?\d+)\]|(:[\w-]+))$")


@dataclass(frozen=True, slots=True)
class LoadedHistory:
    """A file read into ops, with the format found and the model that suits it."""

    path: str
    format: str
    model: str
    events: list[Event]
    ops: list[Operation]


def detect(first_line: str) -> str | None:
    text = first_line.lstrip()
    if text.startswith('{"'):
        return "json"
    if text.startswith("{:"):
        return "edn"
    if "jepsen.util" in text:
        return "etcd"
    return None


def load(path: str | Path) -> LoadedHistory:
    """Read, translate and pair one file (HistoryError on anything unreadable)."""
    source = str(path)
    try:
        with open(path, encoding="utf-8") as fh:
            lines = fh.readlines(MAX_EVENTS * 64)
    except (OSError, UnicodeDecodeError) as exc:
        raise HistoryError(f"cannot read: {exc}", 0, source) from exc
    return parse_lines(lines, source)


def parse_lines(lines: list[str], source: str = "") -> LoadedHistory:
    first = next((line for line in lines if line.strip()), None)
    if first is None:
        raise HistoryError("no operations (empty file)", 0, source)
    fmt = detect(first)
    if fmt is None:
        number = next(i for i, line in enumerate(lines, 1) if line.strip())
        raise HistoryError(
            "unknown format: expected JSON lines, EDN maps or Jepsen etcd log lines",
            number,
            source,
        )
    reader = {"json": _json_events, "edn": _edn_events, "etcd": _etcd_events}[fmt]
    events, numbers = reader(lines, source)
    if not events:
        raise HistoryError(f"no operations found ({fmt} format)", 0, source)
    ops = pair_events(events, source, numbers)
    keyed = any(ev.key is not None for ev in events)
    model = {"json": "kv", "edn": "kv-empty" if keyed else "register", "etcd": "register"}[fmt]
    return LoadedHistory(source, fmt, model, events, ops)


def _numbered(lines: Iterable[str], source: str) -> Iterable[tuple[int, str]]:
    count = 0
    for number, raw in enumerate(lines, start=1):
        if len(raw) > MAX_LINE_CHARS:
            raise HistoryError(f"line longer than {MAX_LINE_CHARS} characters", number, source)
        text = raw.strip()
        if text:
            count += 1
            if count > MAX_EVENTS:
                raise HistoryError(f"more than {MAX_EVENTS} events", number, source)
            yield number, text


def _json_events(lines: list[str], source: str) -> tuple[list[Event], list[int]]:
    import json

    events, numbers = [], []
    for number, text in _numbered(lines, source):
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as exc:
            msg = f"invalid JSON: {exc.msg} (column {exc.colno})"
            raise HistoryError(msg, number, source) from None
        events.append(event_from_json(obj, number, source))
        numbers.append(number)
    return events, numbers


# ---------------------------------------------------------------------------------------------
# EDN


def _edn_events(lines: list[str], source: str) -> tuple[list[Event], list[int]]:
    events, numbers = [], []
    for number, text in _numbered(lines, source):
        try:
            obj = edn.loads(text)
        except edn.EdnError as exc:
            raise HistoryError(f"invalid EDN: {exc}", number, source) from exc
        event = _edn_event(obj, number, source)
        if event is not None:
            events.append(event)
            numbers.append(number)
    return events, numbers


def _kw(value: object) -> str | None:
    return value.name if isinstance(value, edn.Keyword) else None


def _edn_event(obj: object, number: int, source: str) -> Event | None:
    if not isinstance(obj, dict):
        raise HistoryError("expected one EDN map per line", number, source)
    fields = {_kw(k): v for k, v in obj.items()}
    process = fields.get("process")
    if not isinstance(process, int) or isinstance(process, bool):
        return None  # the nemesis and other non-client entries
    etype, f = _kw(fields.get("type")), _kw(fields.get("f"))
    if etype not in ("invoke", "ok", "fail", "info"):
        raise HistoryError(f":type must be :invoke/:ok/:fail/:info, got {etype!r}", number, source)
    f = _JEPSEN_F.get(f or "", f)
    if f not in FUNCTIONS:
        raise HistoryError(f"unsupported :f {fields.get('f')}", number, source)
    key = fields.get("key")
    error = fields.get("error")
    error_text = _kw(error) or (error if isinstance(error, str) else None)
    if etype == "fail" and f == "cas" and error_text != CAS_MISMATCH:
        error_text = error_text or "fail"
    return Event(
        index=number,
        time=_int_or_zero(fields.get("time")),
        process=process,
        type=etype,
        f=f,
        key=None if key is None else str(key),
        value=_plain(fields.get("value")),
        error=error_text,
    )


def _int_or_zero(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _plain(value: object) -> object:
    if isinstance(value, edn.Keyword):
        return str(value)
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


# ---------------------------------------------------------------------------------------------
# Jepsen etcd logs


def _etcd_events(lines: list[str], source: str) -> tuple[list[Event], list[int]]:
    events, numbers = [], []
    for number, text in _numbered(lines, source):
        match = _ETCD_LINE.match(text)
        if match is None:
            continue
        process, etype, jf, raw = match.groups()
        value = _etcd_value(raw, number, source)
        f = _JEPSEN_F.get(jf, jf)
        error = None
        if etype == "fail" and f == "cas":
            error = CAS_MISMATCH
        elif etype == "fail" and value == ":timed-out":
            etype = "info"  # porcupine: a timed-out read is unknown
        if etype != "invoke" and f == "get" and etype != "ok":
            value = None
        events.append(Event(number, 0, int(process), etype, f, None, value, error))
        numbers.append(number)
    return events, numbers


def _etcd_value(raw: str, number: int, source: str) -> object:
    match = _ETCD_VALUE.match(raw)
    if match is None:
        raise HistoryError(f"unreadable value {raw!r}", number, source)
    nil, single, a, b, keyword = match.groups()
    if nil:
        return None
    if single is not None:
        return int(single)
    if a is not None:
        return [int(a), int(b)]
    return keyword
