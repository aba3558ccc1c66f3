"""A small EDN reader for the subset Jepsen/Knossos histories use, one map per line.

Owns: parsing `{:process 0, :type :invoke, :f :read, :value nil}`. Supported: maps, vectors,
lists (read as vectors), keywords (`Keyword`), integers, floats, strings with the usual
escapes, nil, true, false; commas are whitespace; `;` starts a comment. Anything else (sets,
tags, symbols other than nil/true/false, chars) is an `EdnError` naming the column.
Bounds: MAX_DEPTH of nesting, so a hostile line cannot exhaust the stack.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

MAX_DEPTH: Final = 32

EdnValue = object  # None | bool | int | float | str | Keyword | list[EdnValue] | dict[...]


class EdnError(ValueError):
    """Malformed EDN; `column` is 1-based."""

    def __init__(self, message: str, column: int) -> None:
        self.message = message
        self.column = column
        super().__init__(f"{message} (column {column})")


@dataclass(frozen=True, slots=True)
class Keyword:
    name: str

    def __str__(self) -> str:
        return f":{self.name}"


_WS = re.compile(r"(?:[\s,]+|;[^\n]*)*")
_NUMBER = re.compile(r"[+-]?\d+(\.\d+)?([eE][+-]?\d+)?N?M?")
_SYMBOL = re.compile(r"[^\s,()\[\]{}\"';]+")
_ESCAPES: Final = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\"}


def loads(text: str) -> EdnValue:
    """Parse exactly one EDN value from `text`."""
    value, pos = _value(text, _skip(text, 0), 0)
    pos = _skip(text, pos)
    if pos != len(text):
        raise EdnError("unexpected text after the value", pos + 1)
    return value


def _skip(text: str, pos: int) -> int:
    match = _WS.match(text, pos)
    return match.end() if match else pos


def _value(text: str, pos: int, depth: int) -> tuple[EdnValue, int]:
    if depth > MAX_DEPTH:
        raise EdnError(f"nested deeper than {MAX_DEPTH}", pos + 1)
    if pos >= len(text):
        raise EdnError("unexpected end of input", pos + 1)
    ch = text[pos]
    if ch == "{":
        return _map(text, pos + 1, depth)
    if ch in "[(":
        return _seq(text, pos + 1, depth, "]" if ch == "[" else ")")
    if ch == '"':
        return _string(text, pos + 1)
    if ch == ":":
        match = _SYMBOL.match(text, pos + 1)
        if not match:
            raise EdnError("empty keyword", pos + 1)
        return Keyword(match.group()), match.end()
    match = _NUMBER.match(text, pos)
    if match and (match.end() == len(text) or not _SYMBOL.match(text, match.end())):
        return _number(match.group()), match.end()
    match = _SYMBOL.match(text, pos)
    if match and match.group() in ("nil", "true", "false"):
        return {"nil": None, "true": True, "false": False}[match.group()], match.end()
    raise EdnError(f"unsupported EDN at {text[pos : pos + 12]!r}", pos + 1)


def _number(token: str) -> int | float:
    token = token.rstrip("NM")
    return float(token) if any(c in token for c in ".eE") else int(token)


def _map(text: str, pos: int, depth: int) -> tuple[dict[EdnValue, EdnValue], int]:
    out: dict[EdnValue, EdnValue] = {}
    while True:
        pos = _skip(text, pos)
        if pos < len(text) and text[pos] == "}":
            return out, pos + 1
        key, pos = _value(text, pos, depth + 1)
        pos = _skip(text, pos)
        if pos < len(text) and text[pos] == "}":
            raise EdnError("map has a key without a value", pos + 1)
        value, pos = _value(text, pos, depth + 1)
        if isinstance(key, list | dict):
            raise EdnError("map keys must be scalars here", pos + 1)
        out[key] = value


def _seq(text: str, pos: int, depth: int, close: str) -> tuple[list[EdnValue], int]:
    out: list[EdnValue] = []
    while True:
        pos = _skip(text, pos)
        if pos < len(text) and text[pos] == close:
            return out, pos + 1
        value, pos = _value(text, pos, depth + 1)
        out.append(value)


def _string(text: str, pos: int) -> tuple[str, int]:
    parts: list[str] = []
    start = pos
    while pos < len(text):
        ch = text[pos]
        if ch == '"':
            return "".join(parts), pos + 1
        if ch == "\\":
            pos += 1
            if pos >= len(text) or text[pos] not in _ESCAPES:
                raise EdnError("bad escape in string", pos + 1)
            parts.append(_ESCAPES[text[pos]])
        else:
            parts.append(ch)
        pos += 1
    raise EdnError("unterminated string", start)
