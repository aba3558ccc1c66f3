"""RESP, the Redis protocol: reply values, their RESP2/RESP3 encoding, and the request parser.

This module owns the bytes of the client port and nothing of what commands mean.

Replies are plain values (`Reply`): `SimpleString`, `ErrorReply` (its message starts with the
error code, e.g. "ERR syntax error"), `int` (64-bit), `bytes` (bulk string), `None` (null:
`$-1` in RESP2, `_` in RESP3), `list` (array) and `dict` (map in RESP3, flat array in RESP2, as
Redis does for HELLO). `encode_reply(reply, protocol)` writes them.

Requests: `RequestParser` takes bytes as they arrive (`feed`) and hands out one request at a time
(`get`): a list of arguments (bytes), `None` when it needs more input, or a `ProtocolFailure`
whose reply the server sends before closing the connection (Redis does the same). Multibulk
requests (`*<n>\\r\\n$<len>\\r\\n...`) are parsed by hiredis.Reader (C); inline requests (a text
line, as telnet or `redis-cli` pipes send) by `split_inline_args`, Redis's `sdssplitargs`.

Rules and bounds (`detsim.kv.limits`):
- A declared argument count over MAX_REQUEST_ARGS, a bulk length over MAX_VALUE_BYTES, or a
  request that would pass MAX_REQUEST_BYTES is refused as soon as its header is seen, before its
  bytes are read: hiredis would wait for (and buffer) whatever length it is told, so while a
  request is incomplete the parser checks its headers itself (incrementally: each header once).
- Protocol errors use Redis's wording (`ERR Protocol error: invalid bulk length`, ...).
- The parser keeps its own copy of the unconsumed input, starting at a request boundary, in step
  with hiredis's buffer: it advances by each parsed request's exact size on the wire (hiredis
  accepts only canonical lengths, so the size follows from the arguments; the type byte of each
  argument is checked in the copy, which refuses `+simple` arguments as Redis does).
- After a failure the parser is dead: `get` returns the same failure.
- The caller drains `get` until None after each `feed` (so at most one partial request and one
  read's worth of input are buffered).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final, TypeAlias

import hiredis

from detsim.kv.limits import (
    MAX_HEADER_LINE_BYTES,
    MAX_INLINE_BYTES,
    MAX_REQUEST_ARGS,
    MAX_REQUEST_BYTES,
    MAX_VALUE_BYTES,
)

INT64_MIN: Final = -(1 << 63)
INT64_MAX: Final = (1 << 63) - 1

#: Replies are built by our code, never nested deeper than a map of arrays; a deeper one is a bug.
MAX_REPLY_DEPTH: Final = 8


@dataclass(frozen=True, slots=True)
class SimpleString:
    """`+text`: a status reply (OK, PONG). Never contains CR or LF."""

    text: str


@dataclass(frozen=True, slots=True)
class ErrorReply:
    """`-CODE message`: `message` starts with its code (ERR, NOLEADER, TIMEOUT, NOAUTH, ...)."""

    message: str


Reply: TypeAlias = (
    SimpleString | ErrorReply | int | bytes | list["Reply"] | dict[bytes, "Reply"] | None
)

OK: Final = SimpleString("OK")
PONG: Final = SimpleString("PONG")

_CRLF: Final = b"\r\n"
_NULL_RESP2: Final = b"$-1\r\n"
_NULL_RESP3: Final = b"_\r\n"


def encode_reply(reply: Reply, protocol: int = 2) -> bytes:
    """The RESP bytes of `reply` for a connection speaking `protocol` (2 or 3)."""
    assert protocol in (2, 3), protocol
    out: list[bytes] = []
    _encode(reply, protocol == 3, out, 0)
    return b"".join(out)


def _encode(reply: Reply, resp3: bool, out: list[bytes], depth: int) -> None:
    assert depth <= MAX_REPLY_DEPTH, "reply nested too deep"
    kind = type(reply)
    if kind is bytes:
        assert isinstance(reply, bytes)
        out.append(b"$%d\r\n" % len(reply))
        out.append(reply)
        out.append(_CRLF)
    elif kind is SimpleString:
        assert isinstance(reply, SimpleString)
        text = reply.text.encode("utf-8", "surrogateescape")
        assert b"\r" not in text and b"\n" not in text, reply
        out.append(b"+" + text + _CRLF)
    elif kind is ErrorReply:
        assert isinstance(reply, ErrorReply)
        out.append(b"-" + _one_line(reply.message) + _CRLF)
    elif kind is int:
        assert isinstance(reply, int)
        assert INT64_MIN <= reply <= INT64_MAX, reply
        out.append(b":%d\r\n" % reply)
    elif reply is None:
        out.append(_NULL_RESP3 if resp3 else _NULL_RESP2)
    elif kind is list:
        assert isinstance(reply, list)
        out.append(b"*%d\r\n" % len(reply))
        for item in reply:
            _encode(item, resp3, out, depth + 1)
    elif kind is dict:
        assert isinstance(reply, dict)
        out.append((b"%%%d\r\n" % len(reply)) if resp3 else (b"*%d\r\n" % (2 * len(reply))))
        for key, value in reply.items():
            _encode(key, resp3, out, depth + 1)
            _encode(value, resp3, out, depth + 1)
    else:
        raise TypeError(f"not a reply value: {type(reply).__name__}")


def _one_line(message: str) -> bytes:
    """An error message on one line: CR and LF become spaces (client data may hold them; Redis
    maps them the same way rather than emit invalid protocol)."""
    data = message.encode("utf-8", "surrogateescape")
    return data.replace(b"\r", b" ").replace(b"\n", b" ")


# ---------------------------------------------------------------------------------------------
# Requests


@dataclass(frozen=True, slots=True)
class ProtocolFailure:
    """Input no client may send: answer `reply`, then close the connection."""

    reply: ErrorReply


_STAR: Final = 0x2A  # '*'
_DOLLAR: Final = 0x24  # '$'
# Redis's string2ll: no sign but '-', no leading zero, at most 20 characters (hiredis agrees).
_CANONICAL_INT: Final = re.compile(rb"-?[1-9][0-9]{0,19}|0")


def _header_int(text: bytes | bytearray) -> int | None:
    """A canonical decimal integer in int64, or None."""
    if _CANONICAL_INT.fullmatch(text) is None:
        return None
    value = int(text)
    return value if INT64_MIN <= value <= INT64_MAX else None


def _failure(detail: str) -> ProtocolFailure:
    return ProtocolFailure(ErrorReply(f"ERR Protocol error: {detail}"))


@dataclass(slots=True)
class _HeaderScan:
    """Progress of the header check of the incomplete request at the start of the buffer."""

    next_offset: int = 0  # where the next unchecked header starts
    args_left: int = -1  # -1: the `*<count>` line is not read yet


class RequestParser:
    """One connection's request stream (see the module header)."""

    def __init__(self) -> None:
        self._reader = hiredis.Reader()
        self._buf = bytearray()  # unconsumed input; starts at a request boundary
        self._scan = _HeaderScan()
        self._failed: ProtocolFailure | None = None

    def feed(self, data: bytes) -> None:
        """Add input. Then call `get` until it returns None."""
        if self._failed is not None or not data:
            return
        self._buf += data
        self._reader.feed(data)

    def buffered_bytes(self) -> int:
        """Input received and not yet handed out as requests."""
        return len(self._buf)

    def get(self) -> list[bytes] | ProtocolFailure | None:
        """The next complete request, None if more input is needed, or the failure."""
        while self._failed is None:
            if not self._buf:
                return None
            request = self._inline() if self._buf[0] != _STAR else self._multibulk()
            if request is None or isinstance(request, ProtocolFailure):
                return request
            if request:  # empty requests (`*0`, `*-1`, blank lines) are skipped, as Redis does
                return request
        return self._failed

    def _fail(self, failure: ProtocolFailure) -> ProtocolFailure:
        self._failed = failure
        self._buf.clear()
        return failure

    def _consume(self, size_bytes: int) -> None:
        assert 0 < size_bytes <= len(self._buf), (size_bytes, len(self._buf))
        del self._buf[:size_bytes]
        self._scan = _HeaderScan()

    # --- multibulk: hiredis -------------------------------------------------------------------

    def _multibulk(self) -> list[bytes] | ProtocolFailure | None:
        try:
            value = self._reader.gets()
        except hiredis.ProtocolError as exc:
            self._scan = _HeaderScan()
            found = self._check_headers()
            return self._fail(found if found is not None else _failure(str(exc)))
        if value is False:
            failure = self._check_headers()
            return None if failure is None else self._fail(failure)
        return self._take(value)

    def _take(self, value: object) -> list[bytes] | ProtocolFailure:
        """Check a request hiredis parsed, and consume its bytes from our copy."""
        buf = self._buf
        if value is None:  # `*-1`
            size = buf.index(b"\r\n") + 2
            self._consume(size)
            return []
        assert type(value) is list, type(value)  # the buffer starts with '*'
        if len(value) > MAX_REQUEST_ARGS:
            return self._fail(_too_many_args(len(value)))
        size = len(b"*%d\r\n" % len(value))
        for arg in value:
            type_byte = buf[size]
            if type_byte != _DOLLAR:
                return self._fail(_failure(f"expected '$', got '{chr(type_byte)}'"))
            if type(arg) is not bytes or len(arg) > MAX_VALUE_BYTES:
                return self._fail(_failure("invalid bulk length"))
            size += len(b"$%d\r\n" % len(arg)) + len(arg) + 2
        if size > MAX_REQUEST_BYTES:
            return self._fail(_too_big(size))
        self._consume(size)
        return value

    def _check_headers(self) -> ProtocolFailure | None:
        """Check the headers of the (incomplete) request at the start of the buffer, from where
        the last check stopped; the failure if a declared size passes a bound."""
        buf, scan = self._buf, self._scan
        if scan.args_left < 0:
            line = self._header_line(0)
            if line is None:
                return None
            if isinstance(line, ProtocolFailure):
                return _failure("too big mbulk count string")
            count, scan.next_offset = line
            if count is None:
                return _failure("invalid multibulk length")
            if count > MAX_REQUEST_ARGS:
                return _too_many_args(count)
            scan.args_left = max(count, 0)
        while scan.args_left > 0 and scan.next_offset < len(buf):
            start = scan.next_offset
            if buf[start] != _DOLLAR:
                return _failure(f"expected '$', got '{chr(buf[start])}'")
            line = self._header_line(start)
            if line is None:
                return None
            if isinstance(line, ProtocolFailure):
                return _failure("too big bulk count string")
            length, body = line
            if length is None or not 0 <= length <= MAX_VALUE_BYTES:
                return _failure("invalid bulk length")
            end = body + length + 2
            if end > MAX_REQUEST_BYTES:
                return _too_big(end)
            scan.next_offset = end
            scan.args_left -= 1
        return None

    def _header_line(self, start: int) -> tuple[int | None, int] | ProtocolFailure | None:
        """The integer of the `*`/`$` line at `start` and the offset after its CRLF; None if
        the line is not complete yet; a failure if it is too long to be a header."""
        buf = self._buf
        end = buf.find(b"\r\n", start, start + MAX_HEADER_LINE_BYTES)
        if end < 0:
            if len(buf) - start >= MAX_HEADER_LINE_BYTES:
                return _failure("header line too long")
            return None
        return _header_int(buf[start + 1 : end]), end + 2

    # --- inline ------------------------------------------------------------------------------

    def _inline(self) -> list[bytes] | ProtocolFailure | None:
        buf = self._buf
        newline = buf.find(b"\n", 0, MAX_INLINE_BYTES + 1)
        if newline < 0:
            if len(buf) > MAX_INLINE_BYTES:
                return self._fail(_failure("too big inline request"))
            return None
        args = split_inline_args(bytes(buf[:newline]))
        if args is None:
            return self._fail(_failure("unbalanced quotes in request"))
        self._consume(newline + 1)
        # hiredis saw the inline bytes too (it cannot parse them): restart it on what is left.
        self._reader = hiredis.Reader()
        if buf:
            self._reader.feed(bytes(buf))
        if len(args) > MAX_REQUEST_ARGS:  # unreachable under MAX_INLINE_BYTES; kept as a rule
            return self._fail(_too_many_args(len(args)))
        return args


def _too_many_args(count: int) -> ProtocolFailure:
    return _failure(f"invalid multibulk length {count} (at most {MAX_REQUEST_ARGS} arguments)")


def _too_big(size_bytes: int) -> ProtocolFailure:
    return _failure(f"request of {size_bytes}+ bytes is over the {MAX_REQUEST_BYTES} byte limit")


# C's isspace() and the characters that end an unquoted token in sdssplitargs.
_SPACE: Final = frozenset(b" \t\n\v\f\r")
_TOKEN_END: Final = frozenset(b" \n\r\t")
_HEX: Final = frozenset(b"0123456789abcdefABCDEF")
_ESCAPES: Final = {ord("n"): 10, ord("r"): 13, ord("t"): 9, ord("b"): 8, ord("a"): 7}


def split_inline_args(line: bytes) -> list[bytes] | None:
    """Redis's sdssplitargs: split an inline request into arguments ("double quotes" with
    \\n \\r \\t \\b \\a \\xHH escapes, 'single quotes' with \\'); None on unbalanced quotes.
    A NUL ends the line, as in C."""
    line = line.split(b"\0", 1)[0]
    args: list[bytes] = []
    i, n = 0, len(line)
    while True:
        while i < n and line[i] in _SPACE:
            i += 1
        if i >= n:
            return args
        token = bytearray()
        quote = 0  # 0, or the quote character we are inside
        while True:
            c = line[i] if i < n else -1
            if quote == 0x22:  # "
                if c == 0x5C and i + 3 < n and line[i + 1] == 0x78 and _is_hex_pair(line, i + 2):
                    token.append(int(line[i + 2 : i + 4], 16))
                    i += 3
                elif c == 0x5C and i + 1 < n:
                    i += 1
                    token.append(_ESCAPES.get(line[i], line[i]))
                elif c == 0x22:
                    if i + 1 < n and line[i + 1] not in _SPACE:
                        return None
                    i += 1
                    break
                elif c < 0:
                    return None
                else:
                    token.append(c)
            elif quote == 0x27:  # '
                if c == 0x5C and i + 1 < n and line[i + 1] == 0x27:
                    i += 1
                    token.append(0x27)
                elif c == 0x27:
                    if i + 1 < n and line[i + 1] not in _SPACE:
                        return None
                    i += 1
                    break
                elif c < 0:
                    return None
                else:
                    token.append(c)
            elif c < 0 or c in _TOKEN_END:
                i += 1
                break
            elif c in (0x22, 0x27):
                quote = c
            else:
                token.append(c)
            i += 1
        args.append(bytes(token))


def _is_hex_pair(line: bytes, i: int) -> bool:
    return line[i] in _HEX and line[i + 1] in _HEX
