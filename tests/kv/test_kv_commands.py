"""detsim.kv.commands: the command table, Redis's error wording, and entry payloads.

The expected messages are Redis 7's, taken from its source (server.c commandCheckExistence and
commandCheckArity, object.c, t_string.c, db.c, networking.c, acl.c): clients and people match
them, so a change of wording is a bug here.
"""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from detsim.kv.commands import (
    COMMANDS,
    Append,
    Auth,
    Cas,
    Client,
    ClientOp,
    CommandError,
    CommandKind,
    DbSize,
    Del,
    Echo,
    EntryDecodeError,
    Exists,
    Get,
    Hello,
    IncrBy,
    Info,
    MGet,
    MSet,
    Ping,
    Quit,
    RaftAdmin,
    RaftOp,
    Select,
    Set,
    SetCondition,
    batch_chunks,
    decode_entry,
    decode_write,
    encode_write,
    encode_writes,
    parse_command,
    parse_int64,
    write_size_bound,
)
from detsim.kv.limits import MAX_BATCH_WRITES, MAX_VALUE_BYTES, MAX_WRITE_PAYLOAD_BYTES


def argv(line: str) -> list[bytes]:
    return [word.encode() for word in line.split()]


# (request, the command it parses to)
VALID = [
    ("PING", Ping()),
    ("ping hello", Ping(b"hello")),
    ("ECHO hi", Echo(b"hi")),
    ("HELLO", Hello()),
    ("HELLO 3", Hello(3)),
    ("hello 2 AUTH default secret SETNAME app", Hello(2, (b"default", b"secret"), b"app")),
    ("AUTH pw", Auth(b"pw")),
    ("AUTH user pw", Auth(b"pw", b"user")),
    ("SELECT 0", Select(0)),
    ("QUIT", Quit()),
    ("CLIENT ID", Client(ClientOp.ID)),
    ("client setname worker-1", Client(ClientOp.SETNAME, b"worker-1")),
    ("CLIENT GETNAME", Client(ClientOp.GETNAME)),
    ("CLIENT SETINFO LIB-NAME redis-py", Client(ClientOp.SETINFO, b"redis-py", "lib-name")),
    ("CLIENT SETINFO lib-ver 5.0.1", Client(ClientOp.SETINFO, b"5.0.1", "lib-ver")),
    ("CLIENT INFO", Client(ClientOp.INFO)),
    ("CLIENT LIST", Client(ClientOp.LIST)),
    ("GET k", Get(b"k")),
    ("EXISTS a b a", Exists((b"a", b"b", b"a"))),
    ("MGET a b", MGet((b"a", b"b"))),
    ("DBSIZE", DbSize()),
    ("SET k v", Set(b"k", b"v")),
    ("set k v nx", Set(b"k", b"v", SetCondition.NX)),
    ("SET k v XX GET", Set(b"k", b"v", SetCondition.XX, True)),
    ("SET k v GET NX", Set(b"k", b"v", SetCondition.NX, True)),  # allowed since Redis 7.0
    ("SET k v NX NX", Set(b"k", b"v", SetCondition.NX)),  # a repeated flag is accepted
    ("DEL a b", Del((b"a", b"b"))),
    ("INCR n", IncrBy(b"n", 1)),
    ("INCRBY n -5", IncrBy(b"n", -5)),
    ("INCRBY n 9223372036854775807", IncrBy(b"n", 2**63 - 1)),
    ("INCRBY n -9223372036854775808", IncrBy(b"n", -(2**63))),
    ("APPEND k tail", Append(b"k", b"tail")),
    ("MSET a 1 b 2", MSet(((b"a", b"1"), (b"b", b"2")))),
    ("CAS k old new", Cas(b"k", b"old", b"new")),
    ("INFO", Info()),
    ("INFO Raft server", Info(("raft", "server"))),
    ("RAFT.STATUS", RaftAdmin(RaftOp.STATUS)),
    ("raft.digest", RaftAdmin(RaftOp.DIGEST)),
    ("RAFT.SNAPSHOT", RaftAdmin(RaftOp.SNAPSHOT)),
    ("RAFT.ADDLEARNER n4 127.0.0.1:7004", RaftAdmin(RaftOp.ADDLEARNER, "n4", ("127.0.0.1", 7004))),
    ("RAFT.ADDLEARNER n4 [::1]:7004", RaftAdmin(RaftOp.ADDLEARNER, "n4", ("::1", 7004))),
    (
        "RAFT.ADDLEARNER n4 127.0.0.1:7004 127.0.0.1:6004",
        RaftAdmin(RaftOp.ADDLEARNER, "n4", ("127.0.0.1", 7004), ("127.0.0.1", 6004)),
    ),
    ("RAFT.PROMOTE n4", RaftAdmin(RaftOp.PROMOTE, "n4")),
    ("RAFT.REMOVE n2", RaftAdmin(RaftOp.REMOVE, "n2")),
    ("RAFT.TRANSFER n3", RaftAdmin(RaftOp.TRANSFER, "n3")),
]


@pytest.mark.parametrize(("line", "expected"), VALID, ids=[line for line, _ in VALID])
def test_valid_commands_parse_to_their_values(line: str, expected: object) -> None:
    command = parse_command(argv(line))
    assert command == expected
    assert command.kind is COMMANDS[argv(line)[0].lower()].kind


# (request, Redis's reply)
INVALID = [
    ("FOO", "ERR unknown command 'FOO', with args beginning with: "),
    ("foo a b", "ERR unknown command 'foo', with args beginning with: 'a' 'b' "),
    ("GET", "ERR wrong number of arguments for 'get' command"),
    ("get a b", "ERR wrong number of arguments for 'get' command"),
    ("SET k", "ERR wrong number of arguments for 'set' command"),
    ("MSET a", "ERR wrong number of arguments for 'mset' command"),
    ("MSET a 1 b", "ERR wrong number of arguments for 'mset' command"),
    ("PING a b", "ERR wrong number of arguments for 'ping' command"),
    ("ECHO", "ERR wrong number of arguments for 'echo' command"),
    ("DBSIZE x", "ERR wrong number of arguments for 'dbsize' command"),
    ("CAS k v", "ERR wrong number of arguments for 'cas' command"),
    ("DEL", "ERR wrong number of arguments for 'del' command"),
    ("RAFT.PROMOTE", "ERR wrong number of arguments for 'raft.promote' command"),
    ("RAFT.ADDLEARNER n4", "ERR wrong number of arguments for 'raft.addlearner' command"),
    (
        "RAFT.ADDLEARNER n4 h:1 h:2 h:3",
        "ERR wrong number of arguments for 'raft.addlearner' command",
    ),
    ("RAFT.ADDLEARNER n4 h:1 nowhere", "ERR invalid address 'nowhere': expected host:port"),
    ("CLIENT", "ERR wrong number of arguments for 'client' command"),
    ("CLIENT SETNAME", "ERR wrong number of arguments for 'client|setname' command"),
    ("CLIENT ID x", "ERR wrong number of arguments for 'client|id' command"),
    ("client kill x", "ERR unknown subcommand 'kill'. Try CLIENT HELP."),
    ("CLIENT SETNAME a\tb", "ERR wrong number of arguments for 'client|setname' command"),
    ("CLIENT SETINFO color red", "ERR Unrecognized option 'color'"),
    ("SET k v NX XX", "ERR syntax error"),
    ("SET k v XX NX", "ERR syntax error"),
    ("SET k v BOGUS", "ERR syntax error"),
    ("AUTH a b c", "ERR syntax error"),
    ("INCRBY n abc", "ERR value is not an integer or out of range"),
    ("INCRBY n 9223372036854775808", "ERR value is not an integer or out of range"),
    ("INCRBY n 1.5", "ERR value is not an integer or out of range"),
    ("INCRBY n +1", "ERR value is not an integer or out of range"),
    ("INCRBY n 01", "ERR value is not an integer or out of range"),
    ("SELECT x", "ERR value is not an integer or out of range"),
    ("SELECT 1", "ERR DB index is out of range"),
    ("HELLO x", "ERR Protocol version is not an integer or out of range"),
    ("HELLO 4", "NOPROTO unsupported protocol version"),
    ("HELLO 1", "NOPROTO unsupported protocol version"),
    ("HELLO 3 AUTH onlyuser", "ERR Syntax error in HELLO option 'AUTH'"),
    ("HELLO 3 BOGUS", "ERR Syntax error in HELLO option 'BOGUS'"),
    ("RAFT.ADDLEARNER n4 nowhere", "ERR invalid address 'nowhere': expected host:port"),
    ("RAFT.ADDLEARNER n4 host:99999", "ERR invalid address 'host:99999': expected host:port"),
]


@pytest.mark.parametrize(("line", "message"), INVALID, ids=[line for line, _ in INVALID])
def test_invalid_commands_get_redis_wording(line: str, message: str) -> None:
    args = [b"CLIENT", b"SETNAME", b"a", b"b"] if "\t" in line else argv(line)
    with pytest.raises(CommandError) as caught:
        parse_command(args)
    assert caught.value.reply.message == message


def test_unknown_command_lists_args_up_to_128_bytes_like_redis() -> None:
    # sdscatprintf("'%.*s' ", 128 - len) while len < 128: the last argument is cut to fit.
    args = [b"nope", b"a" * 100, b"b" * 100, b"c"]
    with pytest.raises(CommandError) as caught:
        parse_command(args)
    listed = "'" + "a" * 100 + "' '" + "b" * 25 + "' "
    assert caught.value.reply.message == (
        f"ERR unknown command 'nope', with args beginning with: {listed}"
    )


def test_unknown_command_echoes_the_exact_bytes() -> None:
    from detsim.kv.resp import encode_reply

    args = [b"\xff\xfe", b"a\r\nb"]
    with pytest.raises(CommandError) as caught:
        parse_command(args)
    # CR/LF become spaces on the wire (Redis does the same); other bytes go back as sent.
    assert encode_reply(caught.value.reply) == (
        b"-ERR unknown command '\xff\xfe', with args beginning with: 'a  b' \r\n"
    )


def test_command_names_are_case_insensitive_and_kinds_are_as_designed() -> None:
    assert parse_command([b"gEt", b"k"]) == Get(b"k")
    kinds = {name.decode(): spec.kind for name, spec in COMMANDS.items()}
    assert {n for n, k in kinds.items() if k is CommandKind.WRITE} == {
        "set",
        "del",
        "incr",
        "incrby",
        "append",
        "mset",
        "cas",
    }
    assert {n for n, k in kinds.items() if k is CommandKind.READ} == {
        "get",
        "exists",
        "mget",
        "dbsize",
    }
    assert all(kinds[n] is CommandKind.ADMIN for n in kinds if n.startswith("raft."))


def test_set_expiry_options_are_refused_plainly() -> None:
    with pytest.raises(CommandError, match="not supported: no expiry"):
        parse_command(argv("SET k v EX 10"))


def test_values_over_the_bound_are_refused() -> None:
    big = b"x" * (MAX_VALUE_BYTES + 1)
    for args in ([b"SET", b"k", big], [b"APPEND", b"k", big], [b"MSET", b"k", big]):
        with pytest.raises(CommandError) as caught:
            parse_command(args)
        assert caught.value.reply.message.startswith("ERR string exceeds maximum allowed size")
    assert parse_command([b"ECHO", big[:-1]]) == Echo(big[:-1])  # not a write: no entry bound


def test_writes_that_could_not_fit_one_raft_entry_are_refused() -> None:
    # A bigger entry could not be stored in one log record nor sent in one frame: the leader
    # would stop. The bound follows the Raft bounds (limits.MAX_WRITE_PAYLOAD_BYTES).
    fits = b"v" * (MAX_WRITE_PAYLOAD_BYTES - 64)
    command = parse_command([b"SET", b"k", fits])
    assert len(encode_write(command)) <= MAX_WRITE_PAYLOAD_BYTES  # type: ignore[arg-type]
    half = b"v" * (MAX_WRITE_PAYLOAD_BYTES // 2)
    for args in (
        [b"SET", b"k", fits + b"v" * 64],
        [b"MSET", b"a", half, b"b", half],
        [b"CAS", b"k", half, half],
        [b"APPEND", b"k", fits + b"v" * 64],
    ):
        with pytest.raises(CommandError, match="limit of one replicated entry"):
            parse_command(args)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        (b"0", 0),
        (b"-1", -1),
        (b"42", 42),
        (b"9223372036854775807", 2**63 - 1),
        (b"-9223372036854775808", -(2**63)),
        (b"9223372036854775808", None),
        (b"-0", None),
        (b"007", None),
        (b"+7", None),
        (b" 7", None),
        (b"7 ", None),
        (b"", None),
        (b"-", None),
        (b"1e3", None),
        ("٣".encode(), None),  # a non-ASCII digit
        (b"1" * 21, None),
    ],
)
def test_parse_int64_is_redis_string2ll(text: bytes, value: int | None) -> None:
    assert parse_int64(text) == value


# --- entry payloads -----------------------------------------------------------------------------

blobs = st.binary(max_size=64)
int64s = st.integers(min_value=-(2**63), max_value=2**63 - 1)
write_commands = st.one_of(
    st.builds(Set, blobs, blobs, st.sampled_from(SetCondition), st.booleans()),
    st.builds(Del, st.lists(blobs, min_size=1, max_size=5).map(tuple)),
    st.builds(IncrBy, blobs, int64s),
    st.builds(Append, blobs, blobs),
    st.builds(MSet, st.lists(st.tuples(blobs, blobs), min_size=1, max_size=5).map(tuple)),
    st.builds(Cas, blobs, blobs, blobs),
)


@given(write_commands)
def test_write_payloads_round_trip_and_are_deterministic(command: object) -> None:
    payload = encode_write(command)  # type: ignore[arg-type]
    assert decode_write(payload) == command
    assert encode_write(decode_write(payload)) == payload


msgpack_trees = st.recursive(
    st.none() | st.booleans() | int64s | st.binary(max_size=8) | st.text(max_size=4),
    lambda children: st.lists(children, max_size=5),
    max_leaves=12,
)


def _mutated(case: tuple[object, int, int]) -> bytes:
    command, position, byte = case
    payload = bytearray(encode_write(command))  # type: ignore[arg-type]
    payload[position % len(payload)] = byte
    return bytes(payload)


@settings(max_examples=500)
@given(
    st.one_of(
        st.binary(max_size=64),
        msgpack_trees.map(lambda tree: msgpack.packb(tree, use_bin_type=True)),
        st.tuples(write_commands, st.integers(0, 1000), st.integers(0, 255)).map(_mutated),
    )
)
def test_any_payload_decodes_to_a_valid_command_or_entry_decode_error(payload: bytes) -> None:
    try:
        command = decode_write(payload)
    except EntryDecodeError:
        return
    # What decodes is a whole, valid command: it encodes, and decodes back to itself.
    assert decode_write(encode_write(command)) == command


@pytest.mark.parametrize(
    "fields",
    [
        [],
        [99, b"k"],
        ["set", b"k", b"v", 0, False],
        [1, b"k", b"v", 0],  # SET with a field missing
        [1, b"k", b"v", 3, False],  # unknown condition
        [1, b"k", b"v", 0, 1],  # get as an int, not a bool
        [1, "k", b"v", 0, False],  # a key as str, not bytes
        [3, b"k", 2**63],  # delta out of int64
        [3, b"k", True],  # bool is not an int here
        [2, []],  # DEL of no keys
        [5, [b"a", b"1", b"b"]],  # MSET with an odd item count
        [6, b"k", b"a"],
        {"a": 1},
    ],
)
def test_malformed_payloads_are_refused(fields: object) -> None:
    with pytest.raises(EntryDecodeError):
        decode_write(msgpack.packb(fields, use_bin_type=True))


def test_trailing_bytes_and_oversized_values_are_refused() -> None:
    payload = encode_write(Set(b"k", b"v"))
    with pytest.raises(EntryDecodeError):
        decode_write(payload + b"\x00")
    big = msgpack.packb([4, b"k", b"x" * (MAX_VALUE_BYTES + 1)], use_bin_type=True)
    with pytest.raises(EntryDecodeError, match="over"):
        decode_write(big)


# --- batch entries (a connection's run of writes as one Raft entry) ------------------------------


@given(st.lists(write_commands, min_size=1, max_size=20))
def test_batch_payloads_round_trip_in_order(commands: list[object]) -> None:
    payload = encode_writes(commands)  # type: ignore[arg-type]
    decoded = decode_entry(payload)
    if len(commands) == 1:
        # One write is the plain payload: the log format of a lone write did not change.
        assert payload == encode_write(commands[0])  # type: ignore[arg-type]
        assert decoded == commands[0]
    else:
        assert decoded == tuple(commands)
        with pytest.raises(EntryDecodeError, match="unknown write tag 7"):
            decode_write(payload)  # a batch is not one write


@given(st.lists(write_commands, min_size=2, max_size=8))
def test_a_batch_payload_is_no_bigger_than_its_bound(commands: list[object]) -> None:
    # The server cuts batches with write_size_bound of each request's arguments: the bound
    # (plus the batch's overhead) must cover the real encoding, or an entry could pass the
    # Raft bound.
    requests = [_args_of(c) for c in commands]
    assert [parse_command(args) for args in requests] == commands
    payload = encode_writes(commands)  # type: ignore[arg-type]
    assert len(payload) <= sum(write_size_bound(args) for args in requests) + 16


def _args_of(command: object) -> list[bytes]:
    """The request that parses to `command` (hypothesis's commands)."""
    match command:
        case Set(key, value, condition, get):
            extra = {SetCondition.ALWAYS: [], SetCondition.NX: [b"NX"], SetCondition.XX: [b"XX"]}
            return [b"SET", key, value, *extra[condition], *([b"GET"] if get else [])]
        case Del(keys):
            return [b"DEL", *keys]
        case IncrBy(key, delta):
            return [b"INCRBY", key, b"%d" % delta]
        case Append(key, value):
            return [b"APPEND", key, value]
        case MSet(pairs):
            return [b"MSET", *(item for pair in pairs for item in pair)]
        case Cas(key, expected, new):
            return [b"CAS", key, expected, new]
    raise AssertionError(command)


@pytest.mark.parametrize(
    "fields",
    [
        [7],  # no writes field
        [7, [[1, b"k", b"v", 0, False]]],  # a batch of one: encode_writes never makes it
        [7, [[1, b"k", b"v", 0, False], [7, [[3, b"k", 1], [3, b"k", 1]]]]],  # nested
        [7, [[1, b"k", b"v", 0, False], [3, b"k"]]],  # the second write is malformed
        [7, [[1, b"k", b"v", 0, False], b"x"]],  # an item that is not a write
        [7, [[3, b"k", 1]] * (MAX_BATCH_WRITES + 1)],  # over the bound
        [7, [[3, b"k", 1], [3, b"k", 1]], b"extra"],
        [7, {"a": 1}],
    ],
)
def test_malformed_batches_are_refused_whole(fields: object) -> None:
    with pytest.raises(EntryDecodeError):
        decode_entry(msgpack.packb(fields, use_bin_type=True))


@settings(max_examples=300)
@given(
    st.one_of(
        msgpack_trees.map(lambda tree: msgpack.packb([7, tree], use_bin_type=True)),
        st.tuples(st.lists(write_commands, min_size=2, max_size=4), st.integers(0, 1000)).map(
            lambda case: _corrupted_batch(*case)
        ),
    )
)
def test_any_batch_payload_decodes_whole_or_not_at_all(payload: bytes) -> None:
    try:
        decoded = decode_entry(payload)
    except EntryDecodeError:
        return
    writes = decoded if isinstance(decoded, tuple) else (decoded,)
    assert decode_entry(encode_writes(writes)) == decoded


def _corrupted_batch(commands: list[object], position: int) -> bytes:
    payload = bytearray(encode_writes(commands))  # type: ignore[arg-type]
    payload[position % len(payload)] ^= 0x5A
    return bytes(payload)


def test_batch_chunks_keep_order_and_both_bounds() -> None:
    small, big = 50, MAX_WRITE_PAYLOAD_BYTES // 3
    assert batch_chunks([small] * 5) == [range(0, 5)]
    # By count: every write in exactly one chunk, in order, none over MAX_BATCH_WRITES.
    chunks = batch_chunks([small] * (2 * MAX_BATCH_WRITES + 3))
    assert chunks == [
        range(0, MAX_BATCH_WRITES),
        range(MAX_BATCH_WRITES, 2 * MAX_BATCH_WRITES),
        range(2 * MAX_BATCH_WRITES, 2 * MAX_BATCH_WRITES + 3),
    ]
    # By size: two thirds of the bound and a bit fit one entry, three thirds do not.
    sizes = [big, big, small, big, MAX_WRITE_PAYLOAD_BYTES, small]
    chunks = batch_chunks(sizes)
    assert chunks == [range(0, 3), range(3, 4), range(4, 5), range(5, 6)]
    for chunk in chunks:
        if len(chunk) > 1:
            assert sum(sizes[i] for i in chunk) + 16 <= MAX_WRITE_PAYLOAD_BYTES
