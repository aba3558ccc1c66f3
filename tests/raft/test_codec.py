"""The Raft codec: every message round-trips; every malformation is one CodecError, never a
half-built message or an AssertionError from a core constructor."""

from __future__ import annotations

import dataclasses
import typing
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from detsim.raft import codec
from detsim.raft.codec import CodecError, UnknownMessageTypeError
from detsim.raft.core.messages import (
    MAX_NODE_ID_BYTES,
    MESSAGE_TYPES,
    AppendRequest,
    ConfState,
    Entry,
    EntryKind,
    HardState,
    Heartbeat,
    Message,
    SnapshotMeta,
    VoteRequest,
)

ints = st.integers(0, codec.MAX_INT)
ids = st.text(min_size=1, max_size=8).filter(
    lambda s: len(s.encode("utf-8", "surrogatepass")) <= MAX_NODE_ID_BYTES
)
entries = st.builds(
    Entry,
    st.integers(1, codec.MAX_INT),
    st.integers(1, codec.MAX_INT),
    st.sampled_from(EntryKind),
    st.binary(max_size=64),
)
confs = st.tuples(st.sets(ids, max_size=5), st.sets(ids, max_size=3)).map(
    lambda vl: ConfState.of(list(vl[0]), tuple(sorted(vl[1] - vl[0])))
)
metas = st.builds(SnapshotMeta, ints, ints, confs, ints)
FIELD_STRATEGIES: dict[object, st.SearchStrategy[Any]] = {
    int: ints,
    bool: st.booleans(),
    bytes: st.binary(max_size=64),
    str: ids,
    tuple[Entry, ...]: st.lists(entries, max_size=4).map(tuple),
    SnapshotMeta: metas,
}


def message_strategy(cls: type) -> st.SearchStrategy[Any]:
    hints = typing.get_type_hints(cls)
    fields = {f.name: FIELD_STRATEGIES[hints[f.name]] for f in dataclasses.fields(cls)}
    return st.builds(cls, **fields)


messages = st.one_of([message_strategy(cls) for cls in MESSAGE_TYPES])


@settings(max_examples=400)
@given(messages)
def test_every_message_round_trips_through_bytes(msg: Message) -> None:
    data = codec.pack_message(msg)
    assert codec.unpack_message(data) == msg
    assert type(codec.unpack_message(data)) is type(msg)


@given(entries)
def test_entries_round_trip(entry: Entry) -> None:
    assert codec.unpack_entry(codec.pack_entry(entry)) == entry


@given(ints, st.none() | ids, ints)
def test_hard_state_round_trips(term: int, vote: str | None, commit: int) -> None:
    state = HardState(term, vote, commit)
    assert codec.decode_hard_state(codec.unpackb(codec.packb(codec.encode_hard_state(state)))) == (
        state
    )


@given(metas)
def test_snapshot_meta_round_trips(meta: SnapshotMeta) -> None:
    value = codec.unpackb(codec.packb(codec.encode_snapshot_meta(meta)))
    assert codec.decode_snapshot_meta(value) == meta


def test_tags_are_positions_in_message_types() -> None:
    # Append-only MESSAGE_TYPES keeps old tags stable: a rolling upgrade depends on it.
    for tag, cls in enumerate(MESSAGE_TYPES):
        msg = st_example(cls)
        assert codec.encode_message(msg)[0] == tag


def st_example(cls: type) -> Any:
    defaults: dict[object, Any] = {
        int: 1,
        bool: False,
        bytes: b"",
        str: "n1",
        tuple[Entry, ...]: (),
        SnapshotMeta: SnapshotMeta(1, 1, ConfState.of(["n1"]), 0),
    }
    hints = typing.get_type_hints(cls)
    return cls(**{f.name: defaults[hints[f.name]] for f in dataclasses.fields(cls)})


GOOD = codec.encode_message(VoteRequest("n1", "n2", 3, 10, 2, False, False))
APPEND = codec.encode_message(AppendRequest("n1", "n2", 3, 4, 2, (Entry(2, 5),), 4))


@pytest.mark.parametrize(
    ("value", "match"),
    [
        ("not a list", "expected an array"),
        ([], "empty array"),
        (["1", *GOOD[1:]], "tag: expected an int"),
        ([True, *GOOD[1:]], "tag: expected an int"),  # a bool is not an int tag
        (GOOD[:-1], "expected 7 fields, got 6"),
        ([*GOOD, 0], "expected 7 fields, got 8"),
        ([GOOD[0], "", *GOOD[2:]], r"VoteRequest.frm: id of 0 bytes"),
        ([GOOD[0], "x" * 256, *GOOD[2:]], r"VoteRequest.frm: id of 256 bytes"),
        ([GOOD[0], b"n1", *GOOD[2:]], "VoteRequest.frm: expected a str"),
        ([*GOOD[:3], -1, *GOOD[4:]], r"VoteRequest.term: -1 is outside"),
        ([*GOOD[:3], 1 << 63, *GOOD[4:]], "VoteRequest.term: .* is outside"),
        ([*GOOD[:3], 1.0, *GOOD[4:]], "VoteRequest.term: expected an int, got float"),
        ([*GOOD[:3], True, *GOOD[4:]], "VoteRequest.term: expected an int, got bool"),
        ([*GOOD[:6], 1, GOOD[7]], "VoteRequest.pre: expected a bool, got int"),
        ([*APPEND[:6], [[2, 5, 0]], APPEND[7]], r"entries\[0\]: expected 4 items"),
        ([*APPEND[:6], [[0, 5, 0, b""]], APPEND[7]], r"entries\[0\].term: 0 is outside"),
        ([*APPEND[:6], [[2, 5, 7, b""]], APPEND[7]], "unknown entry kind 7"),
        ([*APPEND[:6], [[2, 5, 0, "text"]], APPEND[7]], "data: expected bytes"),
        ([*APPEND[:6], {"a": 1}, APPEND[7]], "entries: expected an array"),
    ],
)
def test_malformed_values_raise_codec_error(value: Any, match: str) -> None:
    with pytest.raises(CodecError, match=match):
        codec.decode_message(value)


def test_unknown_tag_is_its_own_error_class() -> None:
    with pytest.raises(UnknownMessageTypeError, match="unknown message type tag 99"):
        codec.decode_message([99, "n1", "n2", 1])
    with pytest.raises(UnknownMessageTypeError):
        codec.decode_message([-1])


def snapshot_value(voters: list[Any], learners: list[Any]) -> list[Any]:
    return [6, "n1", "n2", 1, [5, 1, voters, learners, 10], 0, b"", True]


@pytest.mark.parametrize(
    ("voters", "learners", "match"),
    [
        (["b", "a"], [], "sorted and unique"),
        (["a", "a"], [], "sorted and unique"),
        (["a"], ["a"], "both voter and learner"),
        (["a", 1], [], r"voters\[1\]: expected a str"),
    ],
)
def test_conf_state_invariants_are_codec_errors_not_assertions(
    voters: list[Any], learners: list[Any], match: str
) -> None:
    with pytest.raises(CodecError, match=match):
        codec.decode_message(snapshot_value(voters, learners))


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"", "malformed msgpack"),
        (b"\x93\x01", "malformed msgpack"),  # truncated array
        (codec.pack_message(Heartbeat("a", "b", 1)) + b"\x00", "malformed msgpack"),  # extra
        (b"\xd9\x02\xff\xfe", "malformed msgpack"),  # str that is not UTF-8
        (msgpack.packb(msgpack.ExtType(5, b"x")), "extension type 5"),
        (msgpack.packb({1: 2}), "malformed msgpack"),  # int map keys refused (strict_map_key)
        (b"\x91" * 5000 + b"\x00", "malformed msgpack"),  # nesting past msgpack's stack
    ],
)
def test_malformed_bytes_raise_codec_error(data: bytes, match: str) -> None:
    with pytest.raises(CodecError, match=match):
        codec.unpack_message(data)


def test_oversized_payload_is_refused_before_parsing() -> None:
    with pytest.raises(CodecError, match="over the bound"):
        codec.unpackb(b"\xc0" * 11, max_bytes=10)


@settings(max_examples=300)
@given(st.binary(max_size=200))
def test_random_bytes_decode_or_raise_codec_error(data: bytes) -> None:
    try:
        msg = codec.unpack_message(data)
    except CodecError:
        return
    assert type(msg) in MESSAGE_TYPES  # a whole, valid message or nothing
    assert codec.unpack_message(codec.pack_message(msg)) == msg


@settings(max_examples=300)
@given(messages, st.data())
def test_mutated_messages_decode_whole_or_raise_codec_error(msg: Message, data: Any) -> None:
    value = codec.encode_message(msg)
    i = data.draw(st.integers(0, len(value) - 1))
    value[i] = data.draw(
        st.none() | st.integers(-5, 5) | st.text(max_size=3) | st.binary(max_size=3)
    )
    try:
        decoded = codec.decode_message(value)
    except CodecError:
        return
    assert codec.encode_message(decoded) == value


def test_non_messages_are_refused_on_encode() -> None:
    with pytest.raises(TypeError, match="not a Raft message"):
        codec.encode_message(Entry(1, 1))  # type: ignore[arg-type]
