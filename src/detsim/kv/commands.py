"""The command layer: the command table of DESIGN, parsing of requests into typed commands, and
the Raft entry encoding of write commands.

This module owns what a request means before anything executes it:
- `COMMANDS`: per command name, its arity (Redis's convention: N exact, -N at least N, counting
  the name) and its kind (`CommandKind`): CONNECTION commands are answered by the client
  session, READ commands by the state machine after a ReadIndex, WRITE commands are proposed to
  Raft and applied by the state machine, ADMIN commands by the node (INFO, RAFT.*).
- `parse_command(args)` -> a frozen, slotted command value, or `CommandError` whose `reply`
  carries Redis's own wording for the fault (unknown command, arity, syntax, integers, sizes).
  Nothing here touches state: parsing is pure and runs before a proposal, so a bad command never
  reaches the log.
- `encode_write(cmd)` / `decode_write(payload)`: a write command as a Raft entry payload, a
  msgpack array `[tag, field, ...]` (tags in `_Tag` are append-only: stable in old logs).
- `encode_writes(cmds)` / `decode_entry(payload)`: a connection's run of writes as ONE entry
  (the per-entry costs of Raft, the log and apply are then paid once per run, not per write):
  one write is its plain payload (above); two to MAX_BATCH_WRITES are a batch,
  `[BATCH, [[tag, field, ...], ...]]`, applied in order in one transaction, one reply per write.
  `batch_chunks` cuts a run into batches that respect MAX_WRITE_PAYLOAD_BYTES (the bound of one
  entry) using `write_size_bound`, an upper bound of a write's encoded size.
  Decoding is strict and total: any payload that these encoders cannot produce raises
  `EntryDecodeError`, never another exception and never a half-valid command.

Names, keys and values are bytes (binary-safe); command names are matched case-insensitively.
Error messages are `str`; bytes that came from the client are decoded with `surrogateescape`,
so the reply carries back the exact bytes the client sent, as Redis does.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Final, TypeAlias

import msgpack

from detsim.kv.limits import (
    MAX_BATCH_WRITES,
    MAX_REQUEST_ARGS,
    MAX_VALUE_BYTES,
    MAX_WRITE_PAYLOAD_BYTES,
)
from detsim.kv.resp import INT64_MAX, INT64_MIN, ErrorReply
from detsim.raft.core.messages import MAX_NODE_ID_BYTES


class CommandKind(enum.Enum):
    """Who answers a command (see the module header)."""

    CONNECTION = "connection"
    READ = "read"
    WRITE = "write"
    ADMIN = "admin"


class CommandError(Exception):
    """A request that is not a valid command; `reply` is the error to send (nothing ran)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.reply = ErrorReply(message)


class EntryDecodeError(ValueError):
    """A Raft entry payload that `encode_write` cannot have produced."""


# Redis's wording (server.c, object.c, t_string.c, db.c, networking.c, acl.c).
ERR_SYNTAX: Final = "ERR syntax error"
ERR_NOT_INTEGER: Final = "ERR value is not an integer or out of range"
ERR_OVERFLOW: Final = "ERR increment or decrement would overflow"
ERR_TOO_LONG: Final = "ERR string exceeds maximum allowed size (proto-max-bulk-len)"
ERR_DB_INDEX: Final = "ERR DB index is out of range"


def arity_error(name: str) -> str:
    """`name` as Redis's fullname: lower case, `container|sub` for a subcommand."""
    return f"ERR wrong number of arguments for '{name}' command"


def _text(data: bytes) -> str:
    """Client bytes in a message: exact round trip through the RESP encoder."""
    return data.decode("utf-8", "surrogateescape")


def _c_string(data: bytes, limit: int) -> bytes:
    """What C's `%.<limit>s` prints of `data`: up to the first NUL, at most `limit` bytes."""
    return data.split(b"\0", 1)[0][:limit]


def unknown_command_error(args: Sequence[bytes]) -> str:
    """Redis's message, byte for byte: the name (<= 128 bytes) and the first arguments, each
    quoted and followed by a space, until the list passes 128 bytes."""
    listed = b""
    for arg in args[1:]:
        if len(listed) >= 128:
            break
        listed += b"'" + _c_string(arg, 128 - len(listed)) + b"' "
    name = _c_string(args[0], 128)
    return _text(b"ERR unknown command '" + name + b"', with args beginning with: " + listed)


def parse_int64(data: bytes) -> int | None:
    """Redis's string2ll: a canonical decimal (no '+', no leading zeros, no spaces, not '-0')
    in the signed 64-bit range, or None."""
    if not 0 < len(data) <= 20:
        return None
    if data == b"0":
        return 0
    digits = data[1:] if data[:1] == b"-" else data
    if not digits or not digits.isdigit() or digits[0] == 0x30:
        return None
    value = int(data)
    return value if INT64_MIN <= value <= INT64_MAX else None


def _int_arg(data: bytes, message: str = ERR_NOT_INTEGER) -> int:
    value = parse_int64(data)
    if value is None:
        raise CommandError(message)
    return value


def _value_arg(data: bytes) -> bytes:
    if len(data) > MAX_VALUE_BYTES:
        raise CommandError(ERR_TOO_LONG)
    return data


# ---------------------------------------------------------------------------------------------
# Command values. `kind` is the table's; `name` is Redis's fullname (arity errors, INFO).


@dataclass(frozen=True, slots=True)
class Ping:
    kind: ClassVar[CommandKind] = CommandKind.CONNECTION
    message: bytes | None = None


@dataclass(frozen=True, slots=True)
class Echo:
    kind: ClassVar[CommandKind] = CommandKind.CONNECTION
    message: bytes


@dataclass(frozen=True, slots=True)
class Hello:
    """HELLO [protover [AUTH username password] [SETNAME name]]."""

    kind: ClassVar[CommandKind] = CommandKind.CONNECTION
    protocol: int | None = None
    auth: tuple[bytes, bytes] | None = None  # (username, password)
    client_name: bytes | None = None


@dataclass(frozen=True, slots=True)
class Auth:
    """AUTH [username] password (no username: the default user)."""

    kind: ClassVar[CommandKind] = CommandKind.CONNECTION
    password: bytes
    username: bytes | None = None


@dataclass(frozen=True, slots=True)
class Select:
    kind: ClassVar[CommandKind] = CommandKind.CONNECTION
    db: int = 0


@dataclass(frozen=True, slots=True)
class Quit:
    kind: ClassVar[CommandKind] = CommandKind.CONNECTION


class ClientOp(enum.Enum):
    ID = "id"
    GETNAME = "getname"
    SETNAME = "setname"
    SETINFO = "setinfo"
    INFO = "info"
    LIST = "list"
    HELP = "help"


@dataclass(frozen=True, slots=True)
class Client:
    """CLIENT <op> ...: `argument` is SETNAME's name; `attribute`/`argument` SETINFO's pair."""

    kind: ClassVar[CommandKind] = CommandKind.CONNECTION
    op: ClientOp
    argument: bytes | None = None
    attribute: str | None = None  # "lib-name" or "lib-ver"


@dataclass(frozen=True, slots=True)
class Get:
    kind: ClassVar[CommandKind] = CommandKind.READ
    key: bytes


@dataclass(frozen=True, slots=True)
class Exists:
    kind: ClassVar[CommandKind] = CommandKind.READ
    keys: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class MGet:
    kind: ClassVar[CommandKind] = CommandKind.READ
    keys: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class DbSize:
    kind: ClassVar[CommandKind] = CommandKind.READ


class SetCondition(enum.IntEnum):
    """SET's condition; the values are the entry encoding's."""

    ALWAYS = 0
    NX = 1  # only if the key does not exist
    XX = 2  # only if it exists


@dataclass(frozen=True, slots=True)
class Set:
    kind: ClassVar[CommandKind] = CommandKind.WRITE
    key: bytes
    value: bytes
    condition: SetCondition = SetCondition.ALWAYS
    get: bool = False  # reply with the old value (null if none) instead of OK/null


@dataclass(frozen=True, slots=True)
class Del:
    kind: ClassVar[CommandKind] = CommandKind.WRITE
    keys: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class IncrBy:
    """INCR key (delta 1) and INCRBY key delta."""

    kind: ClassVar[CommandKind] = CommandKind.WRITE
    key: bytes
    delta: int = 1


@dataclass(frozen=True, slots=True)
class Append:
    kind: ClassVar[CommandKind] = CommandKind.WRITE
    key: bytes
    value: bytes


@dataclass(frozen=True, slots=True)
class MSet:
    kind: ClassVar[CommandKind] = CommandKind.WRITE
    pairs: tuple[tuple[bytes, bytes], ...]


@dataclass(frozen=True, slots=True)
class Cas:
    """CAS key expected new: set `new` if the key holds `expected` (1), else nothing (0)."""

    kind: ClassVar[CommandKind] = CommandKind.WRITE
    key: bytes
    expected: bytes
    new: bytes


@dataclass(frozen=True, slots=True)
class Info:
    """INFO [section ...], sections lower-cased (empty: the default set)."""

    kind: ClassVar[CommandKind] = CommandKind.ADMIN
    sections: tuple[str, ...] = ()


class RaftOp(enum.Enum):
    STATUS = "raft.status"
    DIGEST = "raft.digest"
    ADDLEARNER = "raft.addlearner"
    PROMOTE = "raft.promote"
    REMOVE = "raft.remove"
    TRANSFER = "raft.transfer"
    SNAPSHOT = "raft.snapshot"


@dataclass(frozen=True, slots=True)
class RaftAdmin:
    """RAFT.<op> [node_id [host:port [client-host:port]]]: `node_id` for all but STATUS,
    DIGEST and SNAPSHOT; `address` (Raft's) and optionally `client_address` (where the new
    node serves clients: the others forward writes there if it leads) for ADDLEARNER only."""

    kind: ClassVar[CommandKind] = CommandKind.ADMIN
    op: RaftOp
    node_id: str | None = None
    address: tuple[str, int] | None = None
    client_address: tuple[str, int] | None = None


WriteCommand: TypeAlias = Set | Del | IncrBy | Append | MSet | Cas
ReadCommand: TypeAlias = Get | Exists | MGet | DbSize
ConnectionCommand: TypeAlias = Ping | Echo | Hello | Auth | Select | Quit | Client
AdminCommand: TypeAlias = Info | RaftAdmin
Command: TypeAlias = WriteCommand | ReadCommand | ConnectionCommand | AdminCommand


# ---------------------------------------------------------------------------------------------
# Parsers: each gets the whole argument list (name first), arity already checked.

Parser: TypeAlias = Callable[[Sequence[bytes]], Command]


def _ping(args: Sequence[bytes]) -> Command:
    if len(args) > 2:
        raise CommandError(arity_error("ping"))
    return Ping(args[1] if len(args) == 2 else None)


def _hello(args: Sequence[bytes]) -> Command:
    if len(args) == 1:
        return Hello()
    protocol = _int_arg(args[1], "ERR Protocol version is not an integer or out of range")
    if protocol not in (2, 3):
        raise CommandError("NOPROTO unsupported protocol version")
    auth: tuple[bytes, bytes] | None = None
    name: bytes | None = None
    i = 2
    while i < len(args):
        option, more = args[i].lower(), len(args) - 1 - i
        if option == b"auth" and more >= 2:
            auth = (args[i + 1], args[i + 2])
            i += 3
        elif option == b"setname" and more >= 1:
            name = _client_name(args[i + 1])
            i += 2
        else:
            raise CommandError(f"ERR Syntax error in HELLO option '{_text(args[i])}'")
    return Hello(protocol, auth, name)


def _client_name(name: bytes) -> bytes:
    """Redis's validateClientName: printable ASCII without spaces."""
    if any(not 0x21 <= c <= 0x7E for c in name):
        raise CommandError(
            "ERR Client names cannot contain spaces, newlines or special characters."
        )
    return name


def _auth(args: Sequence[bytes]) -> Command:
    if len(args) > 3:
        raise CommandError(ERR_SYNTAX)
    if len(args) == 2:
        return Auth(args[1])
    return Auth(args[2], args[1])


def _select(args: Sequence[bytes]) -> Command:
    db = _int_arg(args[1])
    if db != 0:  # one database: any other index is out of range
        raise CommandError(ERR_DB_INDEX)
    return Select(db)


# CLIENT's subcommands: name -> (arity counting "CLIENT", op).
_CLIENT_OPS: Final = {
    b"id": (2, ClientOp.ID),
    b"getname": (2, ClientOp.GETNAME),
    b"setname": (3, ClientOp.SETNAME),
    b"setinfo": (4, ClientOp.SETINFO),
    b"info": (2, ClientOp.INFO),
    b"list": (-2, ClientOp.LIST),
    b"help": (2, ClientOp.HELP),
}


def _client(args: Sequence[bytes]) -> Command:
    entry = _CLIENT_OPS.get(args[1].lower())
    if entry is None:
        sub = _text(_c_string(args[1], 128))
        raise CommandError(f"ERR unknown subcommand '{sub}'. Try CLIENT HELP.")
    arity, op = entry
    if not _arity_ok(arity, len(args)):
        raise CommandError(arity_error(f"client|{op.value}"))
    if op is ClientOp.SETNAME:
        return Client(op, _client_name(args[2]))
    if op is ClientOp.SETINFO:
        attribute = args[2].lower()
        if attribute not in (b"lib-name", b"lib-ver"):
            raise CommandError(f"ERR Unrecognized option '{_text(args[2])}'")
        if any(not 0x21 <= c <= 0x7E for c in args[3]):
            raise CommandError(
                f"ERR {_text(args[2])} cannot contain spaces, newlines or special characters."
            )
        return Client(op, args[3], attribute.decode())
    if op is ClientOp.LIST and len(args) > 2:
        raise CommandError(ERR_SYNTAX)  # TYPE/ID filters: one connection list, no filters
    return Client(op)


def _set(args: Sequence[bytes]) -> Command:
    condition = SetCondition.ALWAYS
    get = False
    for option in args[3:]:
        word = option.lower()
        if word == b"nx" and condition is not SetCondition.XX:
            condition = SetCondition.NX
        elif word == b"xx" and condition is not SetCondition.NX:
            condition = SetCondition.XX
        elif word == b"get":
            get = True
        elif word in (b"ex", b"px", b"exat", b"pxat", b"keepttl", b"persist"):
            # Expiry needs a clock, and the state machine has none (determinism): refuse it
            # plainly rather than store a key that never expires.
            raise CommandError(f"ERR SET option '{_text(option)}' is not supported: no expiry")
        else:
            raise CommandError(ERR_SYNTAX)
    return Set(args[1], _value_arg(args[2]), condition, get)


def _mset(args: Sequence[bytes]) -> Command:
    if len(args) % 2 == 0:
        raise CommandError(arity_error("mset"))
    pairs = tuple((args[i], _value_arg(args[i + 1])) for i in range(1, len(args), 2))
    return MSet(pairs)


def _info(args: Sequence[bytes]) -> Command:
    return Info(tuple(_text(a).lower() for a in args[1:]))


def _node_id(data: bytes) -> str:
    try:
        node_id = data.decode("utf-8")
    except UnicodeDecodeError:
        raise CommandError("ERR invalid node id: not UTF-8") from None
    if not 0 < len(data) <= MAX_NODE_ID_BYTES or not node_id.isprintable() or " " in node_id:
        raise CommandError(
            f"ERR invalid node id: 1..{MAX_NODE_ID_BYTES} bytes of printable text, no spaces"
        )
    return node_id


def parse_address(data: bytes) -> tuple[str, int]:
    """`host:port` or `[v6-host]:port` -> (host, port); CommandError otherwise."""
    text = _text(data)
    host, sep, port_text = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    port = parse_int64(port_text.encode("utf-8", "surrogateescape"))
    if not sep or not host or port is None or not 0 < port < 65536 or not host.isprintable():
        raise CommandError(f"ERR invalid address '{text}': expected host:port")
    return host, port


def _raft(op: RaftOp) -> Parser:
    def parse(args: Sequence[bytes]) -> Command:
        if len(args) == 1:
            return RaftAdmin(op)
        if len(args) > 4:  # ADDLEARNER's table arity is "at least 3"; its most is 4
            raise CommandError(arity_error(op.value))
        address = parse_address(args[2]) if len(args) >= 3 else None
        client_address = parse_address(args[3]) if len(args) == 4 else None
        return RaftAdmin(op, _node_id(args[1]), address, client_address)

    return parse


@dataclass(frozen=True, slots=True)
class CommandSpec:
    """One row of the command table."""

    name: str  # Redis's fullname: lower case
    arity: int
    kind: CommandKind
    parse: Parser


def _spec(name: str, arity: int, kind: CommandKind, parse: Parser) -> tuple[bytes, CommandSpec]:
    return name.encode(), CommandSpec(name, arity, kind, parse)


_C, _R, _W, _A = CommandKind.CONNECTION, CommandKind.READ, CommandKind.WRITE, CommandKind.ADMIN

#: The command table (DESIGN "The replicated store"), by lower-case name.
COMMANDS: Final[dict[bytes, CommandSpec]] = dict(
    [
        _spec("ping", -1, _C, _ping),
        _spec("echo", 2, _C, lambda a: Echo(a[1])),
        _spec("hello", -1, _C, _hello),
        _spec("auth", -2, _C, _auth),
        _spec("select", 2, _C, _select),
        _spec("quit", -1, _C, lambda a: Quit()),
        _spec("client", -2, _C, _client),
        _spec("get", 2, _R, lambda a: Get(a[1])),
        _spec("exists", -2, _R, lambda a: Exists(tuple(a[1:]))),
        _spec("mget", -2, _R, lambda a: MGet(tuple(a[1:]))),
        _spec("dbsize", 1, _R, lambda a: DbSize()),
        _spec("set", -3, _W, _set),
        _spec("del", -2, _W, lambda a: Del(tuple(a[1:]))),
        _spec("incr", 2, _W, lambda a: IncrBy(a[1], 1)),
        _spec("incrby", 3, _W, lambda a: IncrBy(a[1], _int_arg(a[2]))),
        _spec("append", 3, _W, lambda a: Append(a[1], _value_arg(a[2]))),
        _spec("mset", -3, _W, _mset),
        _spec("cas", 4, _W, lambda a: Cas(a[1], _value_arg(a[2]), _value_arg(a[3]))),
        _spec("info", -1, _A, _info),
        *(_spec(op.value, 1, _A, _raft(op)) for op in (RaftOp.STATUS, RaftOp.DIGEST)),
        _spec("raft.snapshot", 1, _A, _raft(RaftOp.SNAPSHOT)),
        _spec("raft.addlearner", -3, _A, _raft(RaftOp.ADDLEARNER)),
        *(
            _spec(op.value, 2, _A, _raft(op))
            for op in (RaftOp.PROMOTE, RaftOp.REMOVE, RaftOp.TRANSFER)
        ),
    ]
)


def _arity_ok(arity: int, argc: int) -> bool:
    return argc == arity if arity > 0 else argc >= -arity


def parse_command(args: Sequence[bytes]) -> Command:
    """The command of one request (its arguments, name first); CommandError if invalid."""
    assert args, "an empty request is skipped by the protocol layer"
    assert len(args) <= MAX_REQUEST_ARGS, len(args)
    spec = COMMANDS.get(args[0].lower())
    if spec is None:
        raise CommandError(unknown_command_error(args))
    if not _arity_ok(spec.arity, len(args)):
        raise CommandError(arity_error(spec.name))
    command = spec.parse(args)
    assert command.kind is spec.kind, (command, spec)
    if spec.kind is CommandKind.WRITE:
        _check_write_size(args)
    return command


def write_size_bound(args: Sequence[bytes]) -> int:
    """An upper bound of the size of `encode_write(parse_command(args))`, in bytes, for a write
    request `args` (alone or inside a batch: its bytes are the same)."""
    # msgpack spends at most 5 bytes on a bin or array header and 9 on an int; the name's bytes
    # cover the tag.
    return sum(map(len, args)) + 9 * len(args) + 16


def _check_write_size(args: Sequence[bytes]) -> None:
    """Refuse a write whose entry payload could pass MAX_WRITE_PAYLOAD_BYTES (see limits)."""
    bound_bytes = write_size_bound(args)
    if bound_bytes > MAX_WRITE_PAYLOAD_BYTES:
        raise CommandError(
            f"ERR write of {bound_bytes} bytes is over the {MAX_WRITE_PAYLOAD_BYTES} byte "
            "limit of one replicated entry"
        )


# ---------------------------------------------------------------------------------------------
# Raft entry payloads of write commands


class _Tag(enum.IntEnum):
    """Append-only: a tag written to a log keeps its meaning forever."""

    SET = 1
    DEL = 2
    INCRBY = 3
    APPEND = 4
    MSET = 5
    CAS = 6
    BATCH = 7  # [BATCH, [write's fields, ...]]: 2..MAX_BATCH_WRITES writes, never nested


#: A batch payload's bytes beyond its writes' own: the outer array's header (1), the tag (1),
#: the inner array's header (<= 5), rounded up.
BATCH_OVERHEAD_BYTES: Final = 16


def _fields(command: WriteCommand) -> list[object]:
    """The msgpack fields of one write, `[tag, field, ...]`."""
    # A dict by exact type, not `match` on classes: this runs once per write on the leader.
    encode = _FIELD_ENCODERS.get(type(command))
    if encode is None:
        raise TypeError(f"not a write command: {command!r}")
    return encode(command)


def _set_fields(c: Set) -> list[object]:
    return [_SET_TAG, c.key, c.value, int(c.condition), c.get]


def _mset_fields(c: MSet) -> list[object]:
    return [int(_Tag.MSET), [item for pair in c.pairs for item in pair]]


_SET_TAG: Final = int(_Tag.SET)
_FIELD_ENCODERS: Final[dict[type, Callable[[Any], list[object]]]] = {
    Set: _set_fields,
    Del: lambda c: [int(_Tag.DEL), list(c.keys)],
    IncrBy: lambda c: [int(_Tag.INCRBY), c.key, c.delta],
    Append: lambda c: [int(_Tag.APPEND), c.key, c.value],
    MSet: _mset_fields,
    Cas: lambda c: [int(_Tag.CAS), c.key, c.expected, c.new],
}


def _pack(fields: list[object]) -> bytes:
    packed = msgpack.packb(fields, use_bin_type=True)
    assert isinstance(packed, bytes)
    return packed


def encode_write(command: WriteCommand) -> bytes:
    """The entry payload of a write command (deterministic: equal commands, equal bytes)."""
    return _pack(_fields(command))


def encode_writes(commands: Sequence[WriteCommand]) -> bytes:
    """The entry payload of a run of writes (applied in order, one reply each): one write is
    its `encode_write` payload, more are a batch. The caller keeps it within the entry bound
    (`batch_chunks`)."""
    assert 0 < len(commands) <= MAX_BATCH_WRITES, len(commands)
    if len(commands) == 1:
        return encode_write(commands[0])
    return _pack([_Tag.BATCH.value, [_fields(command) for command in commands]])


def batch_chunks(size_bounds: Sequence[int]) -> list[range]:
    """Cut a run of writes, given each one's `write_size_bound`, into consecutive ranges that
    each fit one entry: at most MAX_BATCH_WRITES writes and MAX_WRITE_PAYLOAD_BYTES bytes."""
    chunks: list[range] = []
    start, total_bytes = 0, BATCH_OVERHEAD_BYTES
    for i, size_bytes in enumerate(size_bounds):
        # A lone write fits by itself (the parser refused it otherwise): plain payload.
        assert size_bytes <= MAX_WRITE_PAYLOAD_BYTES, size_bytes
        full = i - start >= MAX_BATCH_WRITES or total_bytes + size_bytes > MAX_WRITE_PAYLOAD_BYTES
        if i > start and full:
            chunks.append(range(start, i))
            start, total_bytes = i, BATCH_OVERHEAD_BYTES
        total_bytes += size_bytes
    if start < len(size_bounds):
        chunks.append(range(start, len(size_bounds)))
    return chunks


def _unpack(payload: bytes) -> list[object]:
    try:
        fields = msgpack.unpackb(payload, raw=False, use_list=True, strict_map_key=True)
    except Exception as exc:  # msgpack raises several unrelated classes on garbage
        raise EntryDecodeError(f"not a msgpack value: {type(exc).__name__}: {exc}") from None
    if type(fields) is not list or not fields or type(fields[0]) is not int:
        raise EntryDecodeError("expected an array that starts with an int tag")
    return fields


def decode_write(payload: bytes) -> WriteCommand:
    """Inverse of `encode_write`; EntryDecodeError for anything it cannot have produced."""
    return _decode_fields(_unpack(payload))


def decode_entry(payload: bytes) -> WriteCommand | tuple[WriteCommand, ...]:
    """Inverse of `encode_writes`: one write, or a batch's writes (a tuple of 2 or more);
    EntryDecodeError for anything it cannot have produced."""
    fields = _unpack(payload)
    if fields[0] != _Tag.BATCH:
        return _decode_fields(fields)
    if len(fields) != 2:
        raise EntryDecodeError(f"batch: expected 1 field, got {len(fields) - 1}")
    writes = fields[1]
    if type(writes) is not list or not 2 <= len(writes) <= MAX_BATCH_WRITES:
        raise EntryDecodeError(f"batch: expected an array of 2 to {MAX_BATCH_WRITES} writes")
    for item in writes:
        if type(item) is not list or not item or type(item[0]) is not int:
            raise EntryDecodeError("batch: a write is not an array that starts with an int tag")
    return tuple(_decode_fields(item) for item in writes)


def _decode_fields(fields: list[object]) -> WriteCommand:
    """One write from its unpacked fields (the tag an int, checked by the caller)."""
    tag, rest = fields[0], fields[1:]
    assert type(tag) is int, tag
    decoder = _DECODERS.get(tag)
    if decoder is None:
        raise EntryDecodeError(f"unknown write tag {tag}")  # BATCH too: batches never nest
    name, field_count, build = decoder
    if len(rest) != field_count:
        raise EntryDecodeError(f"{name}: expected {field_count} fields, got {len(rest)}")
    return build(rest)


def _bin(value: object, field: str) -> bytes:
    if type(value) is not bytes:
        raise EntryDecodeError(f"{field}: expected bytes, got {type(value).__name__}")
    if len(value) > MAX_VALUE_BYTES:
        raise EntryDecodeError(f"{field}: {len(value)} bytes is over {MAX_VALUE_BYTES}")
    return value


def _bins(value: object, field: str) -> tuple[bytes, ...]:
    if type(value) is not list or not value:
        raise EntryDecodeError(f"{field}: expected a non-empty array")
    return tuple(_bin(item, field) for item in value)


#: SetCondition by value: a dict lookup, not the enum's call (SET is the hot path of apply).
_SET_CONDITIONS: Final[dict[int, SetCondition]] = {c.value: c for c in SetCondition}


def _decode_set(f: list[object]) -> WriteCommand:
    key, value, condition_value, get = f
    condition = _SET_CONDITIONS.get(condition_value) if type(condition_value) is int else None
    if condition is None:
        raise EntryDecodeError(f"set: bad condition {condition_value!r}")
    if type(get) is not bool:
        raise EntryDecodeError(f"set: get must be a bool, got {type(get).__name__}")
    return Set(_bin(key, "set key"), _bin(value, "set value"), condition, get)


def _decode_incrby(f: list[object]) -> WriteCommand:
    delta = f[1]
    if type(delta) is not int or not INT64_MIN <= delta <= INT64_MAX:
        raise EntryDecodeError(f"incrby: delta must be an int64, got {delta!r}")
    return IncrBy(_bin(f[0], "incrby key"), delta)


def _decode_mset(f: list[object]) -> WriteCommand:
    items = _bins(f[0], "mset items")
    if len(items) % 2:
        raise EntryDecodeError("mset: an odd number of items")
    return MSet(tuple(zip(items[::2], items[1::2], strict=True)))


_DECODERS: Final[dict[int, tuple[str, int, Callable[[list[object]], WriteCommand]]]] = {
    _Tag.SET: ("set", 4, _decode_set),
    _Tag.DEL: ("del", 1, lambda f: Del(_bins(f[0], "del keys"))),
    _Tag.INCRBY: ("incrby", 2, _decode_incrby),
    _Tag.APPEND: ("append", 2, lambda f: Append(_bin(f[0], "key"), _bin(f[1], "value"))),
    _Tag.MSET: ("mset", 1, _decode_mset),
    _Tag.CAS: ("cas", 3, lambda f: Cas(_bin(f[0], "key"), _bin(f[1], "old"), _bin(f[2], "new"))),
}
