"""RESP, the Redis protocol: reply values, their RESP2/RESP3 encoding, and the request parser.

This module owns the bytes of the client port and nothing of what commands mean.

Replies are plain values (`Reply`): `SimpleString`, `ErrorReply` (its message starts with the
error code, e.g. "ERR syntax error"), `int` (64-bit), `bytes` (bulk string), `None` (null:
`$-1` in RESP2, `_` in RESP3), `list` (array) and `dict` (map in RESP3, flat array in RESP2, as
Redis does for HELLO). `encode_reply(reply, protocol)` writes them.

Requests: `RequestParser` takes bytes as they arrive (`feed`) and hands out one request at a time
(`get`): a list of arguments (bytes), `None` when it needs more input, or a `ProtocolFailure`
whose reply the server sends before closing the connection (Redis does the same). Multibulk
requests (`*<n>\\r\\n$<len>\\r\\n...`) and inline ones (a text line, as telnet sends; split
by `split_inline_args`, Redis's `sdssplitargs`) may be mixed and pipelined.

Why not hiredis.Reader for requests: it allocates an array's list when it reads the `*<count>`
line (PyList_New(count)), before any element arrives, at any nesting level: twenty bytes,
`*1\\r\\n*1000000000\\r\\n$1\\r\\na`, make it reserve 8 GB of address space, and freeing
that list took 7.7 s of CPU (measured; 15 s for 3e9): one client could stall the node's event
loop, and Raft with it. Only checking every header before hiredis reads it prevents that, and
that check is most of a parse (find each CRLF, read each length), so the parser is ours. The
price, measured in one run on the shared 2-core dev machine (load ~9): a pipelined 3-argument
SET costs ~17 us here against ~1 us for hiredis's bare (unsafe) parse; on an idle core both are
about 4x less. If the client port becomes the bottleneck, the fix is a C/Cython scanner, not
hiredis.
Rules and bounds (`detsim.kv.limits`):
- A declared argument count over MAX_REQUEST_ARGS, a bulk length over MAX_VALUE_BYTES, or a
  request that would pass MAX_REQUEST_BYTES is refused as soon as its header is read, before its
  bytes are awaited. A header line longer than MAX_HEADER_LINE_BYTES, an inline line longer than
  MAX_INLINE_BYTES, are refused too: nothing waits for unbounded input.
- Protocol errors use Redis's wording (`ERR Protocol error: invalid bulk length`, ...), and
  Redis's reading of edge cases: canonical lengths only, `*0`/`*-1` and blank lines skipped, the
  two bytes after a bulk body skipped unread.
- Parsing is incremental: a partial request resumes where it stopped (each header is read once,
  a body's header again only while its body is incomplete), so trickled input costs linear time.
- After a failure the parser is dead: `get` returns the same failure.
- The caller drains `get` until None after each `feed` (so at most one partial request and one
  read's worth of input are buffered).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, TypeAlias

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
_MINUS: Final = 0x2D  # '-'
_ZERO: Final = 0x30  # '0'


def _length(text: bytes | bytearray) -> int | None:
    """A non-negative length as Redis's string2ll reads it (canonical: no sign, no leading
    zero; at most 19 digits, so it fits int64), or None."""
    if not text.isdigit() or len(text) > 19 or (text[0] == _ZERO and len(text) > 1):
        return None
    return int(text)


def _count(text: bytes | bytearray) -> int | None:
    """An argument count: a length, or a negative number (Redis reads `*-1`, `*-5` as an
    empty request), or None."""
    if text[:1] == b"-":
        return None if _length(text[1:]) is None or text == b"-0" else -1
    return _length(text)


def _failure(detail: str) -> ProtocolFailure:
    return ProtocolFailure(ErrorReply(f"ERR Protocol error: {detail}"))


class RequestParser:
    """One connection's request stream (see the module header)."""

    def __init__(self) -> None:
        self._buf = bytearray()  # input; everything before `_pos` is handed out already
        self._pos = 0  # where the next (or the partial) request starts
        # The partial multibulk request: its arguments so far (None: no `*` line read yet),
        # how many are still to come, and where the next `$` header starts.
        self._args: list[bytes] | None = None
        self._args_left = 0
        self._scan = 0
        self._failed: ProtocolFailure | None = None

    def feed(self, data: bytes) -> None:
        """Add input. Then call `get` until it returns None."""
        if self._failed is None:
            self._buf += data

    def buffered_bytes(self) -> int:
        """Input received and not yet handed out as requests."""
        return len(self._buf) - self._pos

    def get(self) -> list[bytes] | ProtocolFailure | None:
        """The next complete request, None if more input is needed, or the failure."""
        while self._failed is None:
            request = self._next()
            if type(request) is list:
                if request:  # empty requests (`*0`, `*-1`, blank lines) are skipped, as Redis
                    return request
            elif request is None:
                self._compact()
                return None
            else:
                assert isinstance(request, ProtocolFailure)
                self._failed = request
                self._buf.clear()
                self._pos = 0
                self._args = None
        return self._failed

    def _compact(self) -> None:
        """Drop the handed-out input (bytearray deletes a prefix in place, amortized cheaply)."""
        if self._pos:
            del self._buf[: self._pos]
            self._scan -= self._pos
            self._pos = 0

    def _next(self) -> list[bytes] | ProtocolFailure | None:
        if self._args is None:
            buf, pos = self._buf, self._pos
            if pos >= len(buf):
                return None
            if buf[pos] != _STAR:
                return self._inline()
            end = buf.find(b"\r\n", pos, pos + MAX_HEADER_LINE_BYTES)
            if end < 0:
                if len(buf) - pos >= MAX_HEADER_LINE_BYTES:
                    return _failure("too big mbulk count string")
                return None
            count = _count(buf[pos + 1 : end])
            if count is None:
                return _failure("invalid multibulk length")
            if count > MAX_REQUEST_ARGS:
                return _too_many_args(count)
            if count <= 0:
                self._pos = end + 2
                return []
            self._args, self._args_left, self._scan = [], count, end + 2
        return self._bulks(self._args)

    def _bulks(self, args: list[bytes]) -> list[bytes] | ProtocolFailure | None:
        """Read the `$<length>` arguments of the partial request, as far as the input goes.
        Each declared length is checked against the bounds before its bytes are awaited.
        (The hot loop of the client port: locals only, the length check inlined.)"""
        buf, p, size, left = self._buf, self._scan, len(self._buf), self._args_left
        limit = self._pos + MAX_REQUEST_BYTES  # where this request must end by
        while left:
            if p >= size:
                break
            if buf[p] != _DOLLAR:
                return _failure(f"expected '$', got '{chr(buf[p])}'")
            end = buf.find(b"\r\n", p, p + MAX_HEADER_LINE_BYTES)
            if end < 0:
                if size - p >= MAX_HEADER_LINE_BYTES:
                    return _failure("too big bulk count string")
                break
            text = buf[p + 1 : end]
            # Redis's string2ll for a length: digits only, no leading zero, fits int64.
            if not text.isdigit() or (text[0] == _ZERO and end - p > 2) or end - p > 20:
                return _failure("invalid bulk length")
            stop = end + 2 + int(text)
            if stop - end - 2 > MAX_VALUE_BYTES:
                return _failure("invalid bulk length")
            if stop + 2 > limit:
                return _too_big(stop + 2 - self._pos)
            if stop + 2 > size:
                break  # the body is not all here: resume at this header next time
            args.append(bytes(buf[end + 2 : stop]))
            p = stop + 2  # Redis skips the two bytes after a body without looking at them
            left -= 1
        self._scan, self._args_left = p, left
        if left:
            return None
        self._pos, self._args = p, None
        return args

    def _inline(self) -> list[bytes] | ProtocolFailure | None:
        buf, pos = self._buf, self._pos
        newline = buf.find(b"\n", pos, pos + MAX_INLINE_BYTES + 1)
        if newline < 0:
            if len(buf) - pos > MAX_INLINE_BYTES:
                return _failure("too big inline request")
            return None
        args = split_inline_args(bytes(buf[pos:newline]))
        if args is None:
            return _failure("unbalanced quotes in request")
        self._pos = newline + 1
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
