"""The Raft wire and disk encodings: core dataclasses <-> msgpack-able values <-> bytes.

This module owns how every type of `detsim.raft.core.messages` is written: messages on the
transport, entries, hard state and snapshot metadata in storage. Nothing else packs them.

Format:
- A message is a msgpack array `[tag, field, field, ...]`: `tag` is the class's position in
  `MESSAGE_TYPES` (append-only, so tags are stable), the fields follow the dataclass field order.
- An entry is `[term, index, kind, data]`; a snapshot meta `[index, term, voters, learners,
  size_bytes]`; a hard state `[term, vote, commit]` (vote is nil or an id).

Rules:
- Decoding is strict and total: every value is checked (type, range, field count, id length,
  the ConfState invariants) before any core object is built, and every failure is one error
  class, `CodecError` (`UnknownMessageTypeError` for an unknown tag). A peer's garbage never
  reaches the core as a half-valid object, and never as an `AssertionError` from a constructor.
- `bool` is not an `int` here (msgpack keeps them apart; so do we), and bytes are msgpack `bin`,
  ids msgpack `str`.
- Bounds: integers in [0, MAX_INT] (signed 64-bit, what other msgpack implementations read),
  ids 1..MAX_NODE_ID_BYTES of UTF-8, a frame payload at most MAX_MESSAGE_BYTES (the core's bound;
  `unpack_message` refuses more before parsing).
- Field tables are built from the dataclasses at import and asserted complete: a field the core
  adds with a type this module does not know fails at import, not on the wire.
"""

from __future__ import annotations

import dataclasses
import operator
import types
import typing
from collections.abc import Callable
from typing import Any, Final

import msgpack

from detsim.raft.core.messages import (
    MAX_MESSAGE_BYTES,
    MAX_NODE_ID_BYTES,
    MESSAGE_TYPES,
    ConfState,
    Entry,
    EntryKind,
    HardState,
    Message,
    SnapshotMeta,
)

MAX_INT: Final = (1 << 63) - 1  # every term, index, offset and size fits a signed 64-bit int
MAX_ENTRIES_PER_MESSAGE: Final = 1 << 20  # far above what fits a frame; a cheap sanity bound
MAX_CONF_MEMBERS: Final = 1024  # voters + learners of one configuration


class CodecError(ValueError):
    """Bytes or values that no correct peer (or no correct writer of our files) produces."""


class UnknownMessageTypeError(CodecError):
    """A message tag that is not in MESSAGE_TYPES (a newer peer, or garbage)."""


# ---------------------------------------------------------------------------------------------
# Scalar checks: each returns the value, typed, or raises CodecError naming the field.


def _int(value: object, field: str, low: int = 0) -> int:
    if type(value) is not int:
        raise CodecError(f"{field}: expected an int, got {type(value).__name__}")
    if not low <= value <= MAX_INT:
        raise CodecError(f"{field}: {value} is outside [{low}, {MAX_INT}]")
    return value


def _bool(value: object, field: str) -> bool:
    if type(value) is not bool:
        raise CodecError(f"{field}: expected a bool, got {type(value).__name__}")
    return value


def _bytes(value: object, field: str) -> bytes:
    if type(value) is not bytes:
        raise CodecError(f"{field}: expected bytes, got {type(value).__name__}")
    return value


def node_id(value: object, field: str = "node id") -> str:
    """A valid node id (a non-empty str of at most MAX_NODE_ID_BYTES UTF-8 bytes)."""
    if type(value) is not str:
        raise CodecError(f"{field}: expected a str, got {type(value).__name__}")
    if 0 < len(value) <= MAX_NODE_ID_BYTES // 4:  # fast path: at most 4 UTF-8 bytes a char
        return value
    size = len(value.encode("utf-8", "surrogatepass"))
    if not 1 <= size <= MAX_NODE_ID_BYTES:
        raise CodecError(f"{field}: id of {size} bytes is outside [1, {MAX_NODE_ID_BYTES}]")
    return value


def _list(value: object, field: str, length: int | None = None) -> list[Any]:
    if type(value) is not list:
        raise CodecError(f"{field}: expected an array, got {type(value).__name__}")
    if length is not None and len(value) != length:
        raise CodecError(f"{field}: expected {length} items, got {len(value)}")
    return value


# ---------------------------------------------------------------------------------------------
# Nested types


def encode_entry(entry: Entry) -> list[Any]:
    return [entry.term, entry.index, int(entry.kind), entry.data]


def decode_entry(value: object, field: str = "entry") -> Entry:
    term, index, kind, data = _list(value, field, 4)
    kind = _int(kind, f"{field}.kind")
    if kind not in EntryKind._value2member_map_:
        raise CodecError(f"{field}.kind: unknown entry kind {kind}")
    return Entry(
        _int(term, f"{field}.term", 1),
        _int(index, f"{field}.index", 1),
        EntryKind(kind),
        _bytes(data, f"{field}.data"),
    )


def _encode_entries(entries: tuple[Entry, ...]) -> list[Any]:
    return [encode_entry(e) for e in entries]


def _decode_entries(value: object, field: str) -> tuple[Entry, ...]:
    items = _list(value, field)
    if len(items) > MAX_ENTRIES_PER_MESSAGE:
        raise CodecError(f"{field}: {len(items)} entries over {MAX_ENTRIES_PER_MESSAGE}")
    return tuple(decode_entry(item, f"{field}[{i}]") for i, item in enumerate(items))


def _decode_ids(value: object, field: str) -> tuple[str, ...]:
    items = _list(value, field)
    if len(items) > MAX_CONF_MEMBERS:
        raise CodecError(f"{field}: {len(items)} ids over MAX_CONF_MEMBERS={MAX_CONF_MEMBERS}")
    ids = tuple(node_id(item, f"{field}[{i}]") for i, item in enumerate(items))
    if list(ids) != sorted(set(ids)):
        raise CodecError(f"{field}: ids must be sorted and unique")
    return ids


def encode_snapshot_meta(meta: SnapshotMeta) -> list[Any]:
    return [
        meta.index,
        meta.term,
        list(meta.conf.voters),
        list(meta.conf.learners),
        meta.size_bytes,
    ]


def decode_snapshot_meta(value: object, field: str = "snapshot meta") -> SnapshotMeta:
    index, term, voters, learners, size_bytes = _list(value, field, 5)
    voter_ids = _decode_ids(voters, f"{field}.voters")
    learner_ids = _decode_ids(learners, f"{field}.learners")
    if set(voter_ids) & set(learner_ids):
        raise CodecError(f"{field}: a node is both voter and learner")
    return SnapshotMeta(
        _int(index, f"{field}.index"),
        _int(term, f"{field}.term"),
        ConfState(voter_ids, learner_ids),
        _int(size_bytes, f"{field}.size_bytes"),
    )


def encode_hard_state(state: HardState) -> list[Any]:
    return [state.term, state.vote, state.commit]


def decode_hard_state(value: object, field: str = "hard state") -> HardState:
    term, vote, commit = _list(value, field, 3)
    return HardState(
        _int(term, f"{field}.term"),
        None if vote is None else node_id(vote, f"{field}.vote"),
        _int(commit, f"{field}.commit"),
    )


# ---------------------------------------------------------------------------------------------
# Messages: a field table per class, built from its dataclass fields and type hints.

_Decoder = Callable[[object, str], Any]
_Encoder = Callable[[Any], Any]


def _identity(value: Any) -> Any:
    return value


# One (encoder, decoder) per field type that messages use. A new type must be added here.
_FIELD_CODECS: dict[object, tuple[_Encoder, _Decoder]] = {
    int: (_identity, _int),
    bool: (_identity, _bool),
    bytes: (_identity, _bytes),
    str: (_identity, node_id),  # every str field of a message is a node id (frm, to)
    tuple[Entry, ...]: (_encode_entries, _decode_entries),
    SnapshotMeta: (encode_snapshot_meta, decode_snapshot_meta),
}


@dataclasses.dataclass(frozen=True, slots=True)
class _Schema:
    cls: type
    tag: int
    names: tuple[str, ...]
    getter: Callable[[Any], tuple[Any, ...]]  # all fields at once, in order
    encoders: tuple[tuple[int, _Encoder], ...]  # (position, encoder) of non-scalar fields only
    decoders: tuple[_Decoder, ...]
    labels: tuple[str, ...]  # "Class.field", for error messages


def _schema(cls: type, tag: int) -> _Schema:
    hints = typing.get_type_hints(cls)
    names: list[str] = []
    encoders: list[tuple[int, _Encoder]] = []
    decoders: list[_Decoder] = []
    for position, f in enumerate(dataclasses.fields(cls)):
        hint = hints[f.name]
        assert not isinstance(hint, types.UnionType), f"{cls.__name__}.{f.name}: union {hint}"
        assert hint in _FIELD_CODECS, f"codec: no encoding for {cls.__name__}.{f.name}: {hint}"
        encoder, decoder = _FIELD_CODECS[hint]
        names.append(f.name)
        if encoder is not _identity:
            encoders.append((position, encoder))
        decoders.append(decoder)
    assert names[:3] == ["frm", "to", "term"], f"{cls.__name__}: fields start {names[:3]}"
    assert len(names) > 1  # attrgetter of several names returns a tuple
    return _Schema(
        cls,
        tag,
        tuple(names),
        operator.attrgetter(*names),
        tuple(encoders),
        tuple(decoders),
        tuple(f"{cls.__name__}.{name}" for name in names),
    )


_SCHEMAS: Final = tuple(_schema(cls, tag) for tag, cls in enumerate(MESSAGE_TYPES))
_BY_CLASS: Final = {schema.cls: schema for schema in _SCHEMAS}


def encode_message(msg: Message) -> list[Any]:
    """The msgpack-able value of a message: `[tag, *fields]`."""
    schema = _BY_CLASS.get(type(msg))
    if schema is None:
        raise TypeError(f"not a Raft message: {type(msg).__name__}")
    out: list[Any] = [schema.tag, *schema.getter(msg)]
    for position, encode in schema.encoders:
        out[position + 1] = encode(out[position + 1])
    return out


def decode_message(value: object) -> Message:
    """The message a value encodes; raises CodecError (UnknownMessageTypeError for a bad tag)."""
    items = _list(value, "message")
    if not items:
        raise CodecError("message: empty array")
    tag = items[0]
    if type(tag) is not int:
        raise CodecError(f"message tag: expected an int, got {type(tag).__name__}")
    if not 0 <= tag < len(_SCHEMAS):
        raise UnknownMessageTypeError(f"unknown message type tag {tag}")
    schema = _SCHEMAS[tag]
    if len(items) != 1 + len(schema.names):
        raise CodecError(
            f"{schema.cls.__name__}: expected {len(schema.names)} fields, got {len(items) - 1}"
        )
    fields = [
        decode(item, label)
        for decode, item, label in zip(schema.decoders, items[1:], schema.labels, strict=True)
    ]
    msg: Message = schema.cls(*fields)
    return msg


# ---------------------------------------------------------------------------------------------
# Bytes


def packb(value: object) -> bytes:
    """msgpack bytes of a value (bin for bytes, str for str)."""
    data: bytes = msgpack.packb(value, use_bin_type=True)
    return data


def unpackb(data: bytes, max_bytes: int = MAX_MESSAGE_BYTES) -> object:
    """One msgpack value that is the whole of `data`; any malformation is a CodecError.
    Extension types are refused (no Raft value uses them)."""
    if len(data) > max_bytes:
        raise CodecError(f"{len(data)} bytes is over the bound of {max_bytes}")
    try:
        return msgpack.unpackb(
            data, raw=False, use_list=True, strict_map_key=True, ext_hook=_refuse_ext
        )
    except CodecError:
        raise
    except Exception as exc:  # msgpack raises ValueError, UnicodeDecodeError, StackError, ...
        raise CodecError(f"malformed msgpack: {type(exc).__name__}: {exc}") from None


def _refuse_ext(code: int, data: bytes) -> object:
    raise CodecError(f"msgpack extension type {code} is not allowed")


def pack_message(msg: Message) -> bytes:
    """A message's frame payload."""
    return packb(encode_message(msg))


def unpack_message(data: bytes) -> Message:
    """The message in a frame payload; raises CodecError."""
    return decode_message(unpackb(data))


def pack_entry(entry: Entry) -> bytes:
    return packb(encode_entry(entry))


def unpack_entry(data: bytes) -> Entry:
    return decode_entry(unpackb(data))
