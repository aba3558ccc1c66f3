"""detsim.kv.resp: reply encoding (read back by hiredis and by redis-py's own parsers) and the
request parser (pipelining, partial input, inline commands, bounds, garbage)."""

from __future__ import annotations

import socket
from types import SimpleNamespace
from typing import Any

import hiredis
import pytest
import redis
from hypothesis import given, settings
from hypothesis import strategies as st
from redis._parsers import _HiredisParser, _RESP2Parser, _RESP3Parser
from redis._parsers.encoders import Encoder
from redis.connection import PythonRespSerializer

from detsim.kv.limits import (
    MAX_INLINE_BYTES,
    MAX_REQUEST_ARGS,
    MAX_REQUEST_BYTES,
    MAX_VALUE_BYTES,
)
from detsim.kv.resp import (
    OK,
    ErrorReply,
    ProtocolFailure,
    Reply,
    RequestParser,
    SimpleString,
    encode_reply,
    split_inline_args,
)

# --- encoding -----------------------------------------------------------------------------------

ENCODED = [
    (OK, b"+OK\r\n", b"+OK\r\n"),
    (ErrorReply("ERR syntax error"), b"-ERR syntax error\r\n", b"-ERR syntax error\r\n"),
    (ErrorReply("ERR a\r\nb"), b"-ERR a  b\r\n", b"-ERR a  b\r\n"),
    (42, b":42\r\n", b":42\r\n"),
    (-(2**63), b":-9223372036854775808\r\n", b":-9223372036854775808\r\n"),
    (b"", b"$0\r\n\r\n", b"$0\r\n\r\n"),
    (b"a\r\nb", b"$4\r\na\r\nb\r\n", b"$4\r\na\r\nb\r\n"),
    (None, b"$-1\r\n", b"_\r\n"),
    ([b"a", None, 1], b"*3\r\n$1\r\na\r\n$-1\r\n:1\r\n", b"*3\r\n$1\r\na\r\n_\r\n:1\r\n"),
    ([], b"*0\r\n", b"*0\r\n"),
    ({b"proto": 3}, b"*2\r\n$5\r\nproto\r\n:3\r\n", b"%1\r\n$5\r\nproto\r\n:3\r\n"),
]


@pytest.mark.parametrize(("reply", "resp2", "resp3"), ENCODED)
def test_replies_encode_as_redis_does(reply: Reply, resp2: bytes, resp3: bytes) -> None:
    assert encode_reply(reply, 2) == resp2
    assert encode_reply(reply, 3) == resp3


def test_non_replies_are_refused() -> None:
    with pytest.raises(TypeError):
        encode_reply("text")  # type: ignore[arg-type]  # str is ambiguous: bulk or simple?
    with pytest.raises(AssertionError):
        encode_reply(2**63)


leaf_replies = st.one_of(
    st.builds(SimpleString, st.text(max_size=8).filter(lambda t: "\r" not in t and "\n" not in t)),
    st.builds(ErrorReply, st.from_regex(r"[A-Z]{2,8} [ -~]{0,12}", fullmatch=True)),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.binary(max_size=16),
    st.none(),
)
replies = st.recursive(
    leaf_replies,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.binary(max_size=4), children, max_size=3),
    ),
    max_leaves=10,
)


def expected_value(reply: Reply, resp3: bool) -> Any:
    """What a RESP client library returns for `reply` (errors as their message)."""
    if isinstance(reply, SimpleString):
        return reply.text.encode()
    if isinstance(reply, ErrorReply):
        return ("error", reply.message)
    if isinstance(reply, list):
        return [expected_value(item, resp3) for item in reply]
    if isinstance(reply, dict):
        if resp3:
            return {k: expected_value(v, resp3) for k, v in reply.items()}
        return [x for k, v in reply.items() for x in (k, expected_value(v, resp3))]
    return reply


def normalized(value: Any) -> Any:
    if isinstance(value, Exception):
        return ("error", str(value))
    if isinstance(value, list):
        return [normalized(item) for item in value]
    if isinstance(value, dict):
        return {k: normalized(v) for k, v in value.items()}
    return value


@settings(max_examples=200)
@given(replies, st.sampled_from([2, 3]))
def test_hiredis_reads_our_replies(reply: Reply, protocol: int) -> None:
    reader = hiredis.Reader()
    reader.feed(encode_reply(reply, protocol))
    assert normalized(reader.gets()) == expected_value(reply, protocol == 3)
    assert reader.gets() is False  # nothing left over: the framing is exact


def redis_py_read(parser_class: type, data: bytes) -> list[Any]:
    """Feed `data` through a socket to one of redis-py's own parsers; every reply it reads."""
    ours, theirs = socket.socketpair()
    try:
        connection = SimpleNamespace(
            _sock=theirs, socket_timeout=5.0, encoder=Encoder("utf-8", "strict", False)
        )
        parser = parser_class(socket_read_size=65536)
        parser.on_connect(connection)
        ours.sendall(data)
        ours.shutdown(socket.SHUT_WR)
        out = []
        while True:
            try:
                out.append(parser.read_response())
            except redis.AuthenticationError as exc:
                # A ConnectionError: redis-py raises it (and would drop the connection).
                out.append(exc)
                return out
            except redis.ConnectionError:
                return out  # the end of our bytes
    finally:
        ours.close()
        theirs.close()


HELLO_REPLY: Reply = {
    b"server": b"detsim",
    b"version": b"0.1.0",
    b"proto": 3,
    b"id": 7,
    b"mode": b"standalone",
    b"role": b"master",
    b"modules": [],
}
SESSION: list[tuple[Reply, Any]] = [
    (OK, b"OK"),
    (SimpleString("PONG"), b"PONG"),
    (b"bar", b"bar"),
    (None, None),
    (12, 12),
    ([b"v1", None, b"v3"], [b"v1", None, b"v3"]),
    (ErrorReply("ERR wrong number of arguments for 'get' command"), redis.ResponseError),
    (
        ErrorReply("OOM command not allowed: the data set would pass 1 bytes"),
        redis.OutOfMemoryError,
    ),
    (ErrorReply("NOAUTH Authentication required."), redis.AuthenticationError),  # last: see above
]


@pytest.mark.parametrize("parser_class", [_RESP2Parser, _RESP3Parser, _HiredisParser])
@pytest.mark.parametrize("protocol", [2, 3])
def test_redis_py_parsers_read_a_session_of_our_replies(parser_class: type, protocol: int) -> None:
    if (parser_class is _RESP2Parser) != (protocol == 2) and parser_class is not _HiredisParser:
        pytest.skip("redis-py pairs protocol 2 with _RESP2Parser, 3 with _RESP3Parser")
    data = b"".join(encode_reply(reply, protocol) for reply, _ in [(HELLO_REPLY, None), *SESSION])
    got = redis_py_read(parser_class, data)
    hello = got[0]
    if protocol == 3:
        assert hello == HELLO_REPLY
    else:
        assert dict(zip(hello[::2], hello[1::2], strict=True)) == HELLO_REPLY
    assert len(got) == 1 + len(SESSION)
    for value, (_, expected) in zip(got[1:], SESSION, strict=True):
        if isinstance(expected, type):
            assert type(value) is expected, value  # redis-py's own error class for the code
        else:
            assert value == expected


# --- requests -----------------------------------------------------------------------------------


def drain(parser: RequestParser) -> list[list[bytes] | ProtocolFailure]:
    out: list[list[bytes] | ProtocolFailure] = []
    while (item := parser.get()) is not None:
        out.append(item)
        if isinstance(item, ProtocolFailure):
            break
    return out


def pack(*args: bytes) -> bytes:
    return b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args)


def failure_of(data: bytes) -> str:
    parser = RequestParser()
    parser.feed(data)
    out = drain(parser)
    assert out and isinstance(out[-1], ProtocolFailure), out
    return out[-1].reply.message


def test_pipelined_requests_come_out_one_by_one() -> None:
    parser = RequestParser()
    parser.feed(pack(b"SET", b"k", b"v") + pack(b"GET", b"k") + b"PING\r\n" + pack(b"DBSIZE"))
    assert parser.get() == [b"SET", b"k", b"v"]
    assert parser.get() == [b"GET", b"k"]
    assert parser.get() == [b"PING"]
    assert parser.get() == [b"DBSIZE"]
    assert parser.get() is None
    assert parser.buffered_bytes() == 0


def test_a_truncated_request_waits_for_the_rest() -> None:
    data = pack(b"SET", b"key", b"value")
    parser = RequestParser()
    for cut in range(len(data)):  # every prefix is incomplete, never an error
        parser = RequestParser()
        parser.feed(data[:cut])
        assert parser.get() is None, cut
        parser.feed(data[cut:])
        assert parser.get() == [b"SET", b"key", b"value"]


request_args = st.lists(st.binary(max_size=20), min_size=1, max_size=5)
inline_args = st.lists(st.from_regex(rb"[a-zA-Z0-9_.:-]{1,8}", fullmatch=True), min_size=1)


@settings(max_examples=200)
@given(
    st.lists(
        st.one_of(request_args.map(lambda a: ("bulk", a)), inline_args.map(lambda a: ("in", a)))
    ),
    st.lists(st.integers(min_value=1, max_value=40), max_size=30),
)
def test_any_split_of_a_stream_gives_the_same_requests(
    requests: list[tuple[str, list[bytes]]], cuts: list[int]
) -> None:
    stream = b"".join(
        pack(*args) if kind == "bulk" else b" ".join(args) + b"\r\n" for kind, args in requests
    )
    parser = RequestParser()
    got: list[list[bytes] | ProtocolFailure] = []
    position = 0
    for size in [*cuts, len(stream)]:
        parser.feed(stream[position : position + size])
        position += size
        got.extend(drain(parser))
    assert got == [args for _, args in requests]


@given(st.from_regex(rb"[A-Za-z.]{1,10}", fullmatch=True), st.lists(st.binary(max_size=20)))
def test_redis_py_encoded_commands_parse_back(name: bytes, rest: list[bytes]) -> None:
    args = [name, *rest]  # (redis-py splits a command name on spaces)
    parser = RequestParser()
    serializer = PythonRespSerializer(6000, Encoder("utf-8", "strict", False).encode)
    parser.feed(b"".join(serializer.pack(*args)))
    assert parser.get() == args
    parser.feed(hiredis.pack_command(tuple(args)))
    assert parser.get() == args


def test_empty_requests_are_skipped_like_redis() -> None:
    parser = RequestParser()
    parser.feed(b"*0\r\n*-1\r\n\r\n   \r\n" + pack(b"PING"))
    assert drain(parser) == [[b"PING"]]


# (input, Redis's reply: its wording, checked against redis-server in test_kv_redis_wording)
GARBAGE = [
    (b"*1\r\n+PING\r\n", "ERR Protocol error: expected '$', got '+'"),
    (b"*2\r\n$3\r\nGET\r\n:5\r\n", "ERR Protocol error: expected '$', got ':'"),
    (b"*1\r\n*1\r\n$1\r\na\r\n", "ERR Protocol error: expected '$', got '*'"),
    (b"*1\r\n$-1\r\n", "ERR Protocol error: invalid bulk length"),
    (b"*1\r\n$x\r\n", "ERR Protocol error: invalid bulk length"),
    (b"*1\r\n$04\r\nPING\r\n", "ERR Protocol error: invalid bulk length"),
    (b"*x\r\n", "ERR Protocol error: invalid multibulk length"),
    (b"*" + b"1" * 100, "ERR Protocol error: too big mbulk count string"),
    (b"*1\r\n$" + b"1" * 100, "ERR Protocol error: too big bulk count string"),
    (b'SET "a b\r\n', "ERR Protocol error: unbalanced quotes in request"),
    (b"SET 'a'b\r\n", "ERR Protocol error: unbalanced quotes in request"),
    (b"x" * (MAX_INLINE_BYTES + 1), "ERR Protocol error: too big inline request"),
]


@pytest.mark.parametrize(("data", "message"), GARBAGE)
def test_garbage_gets_redis_protocol_errors(data: bytes, message: str) -> None:
    assert failure_of(data) == message


def test_huge_declared_lengths_are_refused_before_their_bytes() -> None:
    # Only the headers arrived: the parser refuses without waiting for (or buffering) the body.
    assert failure_of(b"*1\r\n$%d\r\n" % (MAX_VALUE_BYTES + 1)).startswith(
        "ERR Protocol error: invalid bulk length"
    )
    assert failure_of(b"*%d\r\n" % (MAX_REQUEST_ARGS + 1)).startswith(
        "ERR Protocol error: invalid multibulk length"
    )
    assert failure_of(b"*3000000000\r\n$3\r\nGET\r\n").startswith(
        "ERR Protocol error: invalid multibulk length"
    )
    # Two values each under the bound, together over the request bound.
    half = MAX_VALUE_BYTES
    message = failure_of(b"*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n" % (half, b"k" * half, half))
    assert (
        message.startswith("ERR Protocol error: request of") and str(MAX_REQUEST_BYTES) in message
    )


def test_nested_arrays_are_refused_at_their_header() -> None:
    # hiredis.Reader would reserve a list of 3e9 slots here (24 GB) before any element came,
    # and freeing it stalls the process for seconds: the reason this parser is our own.
    assert failure_of(b"*1\r\n*3000000000\r\n$1\r\na\r\n") == (
        "ERR Protocol error: expected '$', got '*'"
    )


def test_negative_counts_are_empty_requests_as_in_redis() -> None:
    parser = RequestParser()
    parser.feed(b"*-5\r\n" + pack(b"PING"))
    assert drain(parser) == [[b"PING"]]
    assert failure_of(b"*-0\r\n") == "ERR Protocol error: invalid multibulk length"


def test_a_maximal_value_is_accepted_and_a_larger_complete_one_refused() -> None:
    value = b"v" * MAX_VALUE_BYTES
    parser = RequestParser()
    parser.feed(pack(b"SET", b"k", value))
    assert parser.get() == [b"SET", b"k", value]
    # The same, one byte over, arriving whole in one feed (no partial check happens).
    assert failure_of(pack(b"SET", b"k", value + b"v")) == "ERR Protocol error: invalid bulk length"


def test_a_declared_length_within_bounds_waits_while_data_trickles() -> None:
    parser = RequestParser()
    parser.feed(b"*2\r\n$4\r\nECHO\r\n$100000\r\n")
    for _ in range(99):
        parser.feed(b"x" * 1000)
        assert parser.get() is None
    parser.feed(b"x" * 1000 + b"\r\n")
    assert parser.get() == [b"ECHO", b"x" * 100000]


def test_after_a_failure_the_parser_stays_failed() -> None:
    parser = RequestParser()
    parser.feed(pack(b"PING") + b"*1\r\n+X\r\n" + pack(b"PING"))
    assert parser.get() == [b"PING"]
    failure = parser.get()
    assert isinstance(failure, ProtocolFailure)
    parser.feed(pack(b"PING"))
    assert parser.get() is failure
    assert parser.buffered_bytes() == 0


@settings(max_examples=300)
@given(st.lists(st.binary(min_size=1, max_size=30), max_size=6))
def test_random_bytes_never_raise(chunks: list[bytes]) -> None:
    parser = RequestParser()
    for chunk in chunks:
        parser.feed(chunk)
        for item in drain(parser):
            assert isinstance(item, ProtocolFailure) or all(type(a) is bytes for a in item)


@pytest.mark.parametrize(
    ("line", "args"),
    [
        (b"set a b", [b"set", b"a", b"b"]),
        (b"  set   a\tb  ", [b"set", b"a", b"b"]),
        (b'set "a b" c', [b"set", b"a b", b"c"]),
        (b'set "\\x41\\n\\t\\"" x', [b"set", b'A\n\t"', b"x"]),
        (b"set 'it\\'s' x", [b"set", b"it's", b"x"]),
        (b"set 'a\\nb' x", [b"set", b"a\\nb", b"x"]),  # no escapes in single quotes
        (b'set a"b c" d', [b"set", b"ab c", b"d"]),  # a quote opens mid-token, as in Redis
        (b'set ""', [b"set", b""]),
        (b"", []),
        (b'set "a', None),
        (b'set "a"b', None),
        (b"set 'a", None),
    ],
)
def test_inline_splitting_is_sdssplitargs(line: bytes, args: list[bytes] | None) -> None:
    assert split_inline_args(line) == args
