"""detsim.kv.statemachine: command semantics, batches as transactions with their applied index,
the size bound, snapshots (image -> restore -> same digest) and digests across replicas."""

from __future__ import annotations

import asyncio
import sqlite3

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from detsim.kv.commands import (
    Append,
    Cas,
    CommandKind,
    DbSize,
    Del,
    Exists,
    Get,
    IncrBy,
    MGet,
    MSet,
    Set,
    SetCondition,
    WriteCommand,
    encode_write,
    encode_writes,
    parse_command,
)
from detsim.kv.limits import MAX_VALUE_BYTES
from detsim.kv.resp import OK, ErrorReply, Reply
from detsim.kv.statemachine import (
    PAGE_SIZE_BYTES,
    ROW_OVERHEAD_BYTES,
    BatchReplies,
    KVStateMachine,
    SnapshotError,
    StateMachineError,
)
from detsim.raft.core.messages import ConfChange, ConfChangeOp, Entry, EntryKind

NOT_INTEGER = ErrorReply("ERR value is not an integer or out of range")
OVERFLOW = ErrorReply("ERR increment or decrement would overflow")


def entries_of(commands: list[WriteCommand], first_index: int = 1, term: int = 1) -> list[Entry]:
    return [Entry(term, first_index + i, data=encode_write(c)) for i, c in enumerate(commands)]


class Runner:
    """A machine fed one write at a time, as a client would see it."""

    def __init__(self, sm: KVStateMachine | None = None) -> None:
        self.sm = sm or KVStateMachine()

    def write(self, line: str | list[bytes]) -> Reply:
        args = [w.encode() for w in line.split()] if isinstance(line, str) else line
        command = parse_command(args)
        entry = Entry(1, self.sm.applied_index() + 1, data=encode_write(command))  # type: ignore[arg-type]
        (reply,) = self.sm.apply_batch([entry])
        assert not isinstance(reply, BatchReplies)  # one write: a plain entry
        return reply

    def read(self, line: str) -> Reply:
        return self.sm.read(parse_command([w.encode() for w in line.split()]))  # type: ignore[arg-type]


# (a session of requests, each with its expected reply), Redis's semantics
SESSIONS = {
    "set and get": [
        ("GET k", None),
        ("SET k v1", OK),
        ("GET k", b"v1"),
        ("SET k v2 GET", b"v1"),
        ("GET k", b"v2"),
    ],
    "nx and xx": [
        ("SET k a XX", None),
        ("EXISTS k", 0),
        ("SET k a NX", OK),
        ("SET k b NX", None),
        ("GET k", b"a"),
        ("SET k c XX", OK),
        ("GET k", b"c"),
    ],
    "conditions with get": [
        ("SET k a NX GET", None),  # set; no old value
        ("SET k b NX GET", b"a"),  # not set; the old value anyway
        ("GET k", b"a"),
        ("SET missing x XX GET", None),
        ("EXISTS missing", 0),
    ],
    "incr": [
        ("INCR n", 1),
        ("INCRBY n 41", 42),
        ("INCRBY n -50", -8),
        ("GET n", b"-8"),
        ("SET s abc", OK),
        ("INCR s", NOT_INTEGER),
        ("SET s 007", OK),
        ("INCR s", NOT_INTEGER),  # not canonical, as Redis reads it
        ("SET s 9223372036854775807", OK),
        ("INCR s", OVERFLOW),
        ("GET s", b"9223372036854775807"),
        ("SET m -9223372036854775808", OK),
        ("INCRBY m -1", OVERFLOW),
        ("INCRBY m 9223372036854775807", -1),
    ],
    "append": [
        ("APPEND k ab", 2),
        ("APPEND k cd", 4),
        ("GET k", b"abcd"),
        ("INCR k", NOT_INTEGER),
    ],
    "mset, mget, del, exists, dbsize": [
        ("MSET a 1 b 2 a 3", OK),  # the last value of a key wins
        ("MGET a b c", [b"3", b"2", None]),
        ("DBSIZE", 2),
        ("EXISTS a a b c", 3),  # each argument counts, as in Redis
        ("DEL a a c", 1),
        ("DBSIZE", 1),
    ],
    "cas": [
        ("CAS k x y", 0),  # a missing key holds nothing to compare
        ("EXISTS k", 0),
        ("SET k x", OK),
        ("CAS k z y", 0),
        ("GET k", b"x"),
        ("CAS k x y", 1),
        ("GET k", b"y"),
    ],
}


@pytest.mark.parametrize("name", list(SESSIONS))
def test_command_semantics_are_redis(name: str) -> None:
    runner = Runner()
    for line, expected in SESSIONS[name]:
        is_read = parse_command([w.encode() for w in line.split()]).kind is CommandKind.READ
        got = runner.read(line) if is_read else runner.write(line)
        assert got == expected, line


def test_values_and_keys_are_binary_safe() -> None:
    runner = Runner()
    key, value = bytes(range(256)), b"\x00\r\n" * 100
    assert runner.write([b"SET", key, value]) == OK
    assert runner.sm.read(Get(key)) == value
    assert runner.write([b"APPEND", key, b"\x00"]) == len(value) + 1


def test_append_past_the_value_bound_is_refused_and_changes_nothing() -> None:
    runner = Runner()
    big = b"x" * MAX_VALUE_BYTES
    half = MAX_VALUE_BYTES // 2  # (one write carries less than a whole maximal value)
    assert runner.write([b"APPEND", b"k", big[:half]]) == half
    assert runner.write([b"APPEND", b"k", big[half:]]) == MAX_VALUE_BYTES
    assert runner.write([b"APPEND", b"k", b"y"]) == ErrorReply(
        "ERR string exceeds maximum allowed size (proto-max-bulk-len)"
    )
    assert runner.sm.read(Get(b"k")) == big


# --- batches, the applied index -------------------------------------------------------------------


def test_a_batch_returns_one_result_per_entry_and_advances_the_index() -> None:
    sm = KVStateMachine()
    conf = ConfChange(ConfChangeOp.ADD_LEARNER, "n4").encode()
    entries = [
        Entry(1, 1),  # a new leader's empty entry
        Entry(1, 2, data=encode_write(Set(b"k", b"v"))),
        Entry(2, 3, EntryKind.CONF_CHANGE, conf),
        Entry(2, 4, data=b"\xc1garbage"),
        Entry(2, 5, data=encode_write(IncrBy(b"k"))),
    ]
    results = sm.apply_batch(entries)
    assert results[:3] == [None, OK, None]
    assert isinstance(results[3], ErrorReply) and results[3].message.startswith(
        "ERR corrupt log entry 4:"
    )
    assert results[4] == NOT_INTEGER
    assert (sm.applied_index(), sm.applied_term()) == (5, 2)


def test_entries_must_follow_the_applied_index() -> None:
    sm = KVStateMachine()
    sm.apply_batch(entries_of([Set(b"a", b"1")]))
    with pytest.raises(AssertionError):
        sm.apply_batch(entries_of([Set(b"b", b"2")], first_index=3))
    with pytest.raises(AssertionError):
        sm.apply_batch([Entry(1, 2), Entry(1, 4)])
    assert sm.applied_index() == 1
    assert sm.read(Exists((b"b",))) == 0


def test_a_failing_batch_is_rolled_back_whole_with_its_index() -> None:
    # SQLite runs out of pages (the image bound) in the middle of the batch: nothing of it
    # stays, not the writes before the failure, not the applied index, not the counters.
    sm = KVStateMachine(max_image_bytes=16 * PAGE_SIZE_BYTES)
    sm.apply_batch(entries_of([Set(b"before", b"1")]))
    digest, used = sm.digest(), sm.used_bytes()
    batch = entries_of([Set(b"k%d" % i, b"x" * 4000) for i in range(40)], first_index=2)
    with pytest.raises(StateMachineError, match=r"entries 2\.\.41 failed .* stays 1"):
        sm.apply_batch(batch)
    assert sm.applied_index() == 1
    assert (sm.digest(), sm.used_bytes(), sm.key_count()) == (digest, used, 1)
    assert sm.read(Get(b"k0")) is None
    # The machine is usable afterwards, from the same index.
    assert sm.apply_batch(entries_of([Set(b"after", b"2")], first_index=2)) == [OK]
    assert sm.applied_index() == 2


def test_the_applied_index_travels_inside_the_image() -> None:
    sm = KVStateMachine()
    sm.apply_batch(entries_of([Set(b"a", b"1"), Set(b"b", b"2")], term=3))
    image = sm.snapshot_image()
    raw = sqlite3.connect(":memory:")
    raw.deserialize(image)
    meta = dict(raw.execute("SELECT name, value FROM meta").fetchall())
    assert (meta["applied_index"], meta["applied_term"], meta["key_count"]) == (2, 3, 2)
    other = KVStateMachine()
    other.restore_image(image, expected_index=2)
    assert (other.applied_index(), other.applied_term()) == (2, 3)
    # Restored at 2, the next entry is 3: nothing applied twice, nothing skipped.
    with pytest.raises(AssertionError):
        other.apply_batch(entries_of([Set(b"a", b"again")], first_index=2))


# --- the size bound ---------------------------------------------------------------------------


def test_writes_past_the_data_bound_are_refused_deterministically() -> None:
    bound = 2 * (1 + 100 + ROW_OVERHEAD_BYTES)
    runner = Runner(KVStateMachine(max_data_bytes=bound))
    assert runner.write([b"SET", b"a", b"x" * 100]) == OK
    assert runner.write([b"SET", b"b", b"x" * 100]) == OK
    assert runner.sm.used_bytes() == bound
    refused = runner.write([b"SET", b"c", b""])
    assert isinstance(refused, ErrorReply) and refused.message.startswith("OOM command not allowed")
    # All or nothing: an MSET that would pass the bound writes none of its keys.
    assert runner.write([b"MSET", b"a", b"", b"z", b"x" * 200]) == refused
    assert runner.sm.read(Get(b"a")) == b"x" * 100
    assert runner.write([b"APPEND", b"a", b"y"]) == refused
    # Shrinking and deleting are always allowed, and make room.
    assert runner.write([b"SET", b"a", b"short"]) == OK
    assert runner.write([b"DEL", b"b"]) == 1
    assert runner.write([b"SET", b"c", b"x" * 100]) == OK
    assert runner.sm.key_count() == 2


# --- snapshots ----------------------------------------------------------------------------------


def filled(count: int, value_bytes: int = 100) -> KVStateMachine:
    sm = KVStateMachine()
    commands: list[WriteCommand] = [
        Set(b"key%05d" % i, bytes([i % 256]) * value_bytes) for i in range(count)
    ]
    sm.apply_batch(entries_of(commands))
    return sm


def test_snapshot_restore_gives_the_same_digest_and_reads() -> None:
    sm = filled(400, value_bytes=4000)  # an image of several chunks
    snap = asyncio.run(sm.snapshot())
    chunks = list(snap.chunks)
    assert len(chunks) > 1 and sum(map(len, chunks)) == snap.size_bytes
    other = KVStateMachine()
    other.apply_batch(entries_of([Set(b"stale", b"!")]))  # replaced wholesale
    asyncio.run(other.restore(snap.index, chunks))
    assert other.applied_index() == sm.applied_index() == snap.index == 400
    assert other.digest() == sm.digest()
    assert other.read(DbSize()) == 400 and other.read(Get(b"stale")) is None
    assert other.read(Get(b"key00007")) == bytes([7]) * 4000
    # It goes on applying as the original does.
    more = entries_of([IncrBy(b"n", 5), Del((b"key00001",))], first_index=401)
    assert other.apply_batch(more) == sm.apply_batch(more) == [5, 1]
    assert other.digest() == sm.digest()


def image_with(statements: list[str]) -> bytes:
    sm = filled(3)
    image = sm.snapshot_image()
    raw = sqlite3.connect(":memory:", isolation_level=None)
    raw.deserialize(image)
    for statement in statements:
        raw.execute(statement)
    return raw.serialize()


BAD_IMAGES = {
    "garbage": b"not a database at all" * 100,
    "empty": b"",
    "truncated": filled(50).snapshot_image()[:8192],
    "another schema": image_with(["DROP TABLE kv", "CREATE TABLE kv (key BLOB, value BLOB)"]),
    "counters disagree": image_with(["UPDATE meta SET value = 99 WHERE name = 'key_count'"]),
    "a text value": image_with(["INSERT INTO kv VALUES (x'01', 'text')"]),
    "meta row missing": image_with(["DELETE FROM meta WHERE name = 'applied_term'"]),
    "newer schema": image_with(["UPDATE meta SET value = 2 WHERE name = 'schema_version'"]),
}


@pytest.mark.parametrize("name", list(BAD_IMAGES))
def test_a_bad_image_is_refused_and_the_state_kept(name: str) -> None:
    sm = filled(5)
    digest = sm.digest()
    with pytest.raises(SnapshotError):
        sm.restore_image(BAD_IMAGES[name])
    assert (sm.digest(), sm.applied_index(), sm.read(DbSize())) == (digest, 5, 5)
    assert sm.apply_batch(entries_of([Set(b"x", b"y")], first_index=6)) == [OK]


def test_an_image_of_another_index_is_refused() -> None:
    image = filled(3).snapshot_image()
    with pytest.raises(SnapshotError, match="applied index 3, not 4"):
        KVStateMachine().restore_image(image, expected_index=4)


# --- digests across replicas (model-based) ----------------------------------------------------

keys = st.sampled_from([b"a", b"b", b"c", b"\x00"])
values = st.one_of(
    st.sampled_from([b"", b"1", b"-2", b"x", b"9223372036854775807"]), st.binary(max_size=4)
)
commands = st.one_of(
    st.builds(Set, keys, values, st.sampled_from(SetCondition), st.booleans()),
    st.builds(Del, st.lists(keys, min_size=1, max_size=3).map(tuple)),
    st.builds(IncrBy, keys, st.sampled_from([1, -1, 7, 2**62, -(2**63)])),
    st.builds(Append, keys, values),
    st.builds(MSet, st.lists(st.tuples(keys, values), min_size=1, max_size=3).map(tuple)),
    st.builds(Cas, keys, values, values),
)


def model_apply(data: dict[bytes, bytes], command: WriteCommand) -> Reply:
    """Redis's semantics, straight from its documentation, on a dict."""
    match command:
        case Set(key, value, condition, get):
            old = data.get(key)
            skip = (condition is SetCondition.NX and old is not None) or (
                condition is SetCondition.XX and old is None
            )
            if not skip:
                data[key] = value
            return old if get else (None if skip else OK)
        case Del(keys):
            return sum(1 for key in keys if data.pop(key, None) is not None)
        case IncrBy(key, delta):
            text = data.get(key, b"0")
            if not text.lstrip(b"-").isdigit() or text != str(int(text)).encode():
                return NOT_INTEGER
            if not -(2**63) <= int(text) < 2**63:
                return NOT_INTEGER  # a stored value outside int64 is not an integer (Redis)
            if not -(2**63) <= int(text) + delta < 2**63:
                return OVERFLOW
            data[key] = str(int(text) + delta).encode()
            return int(text) + delta
        case Append(key, value):
            data[key] = data.get(key, b"") + value
            return len(data[key])
        case MSet(pairs):
            data.update(pairs)
            return OK
        case Cas(key, expected, new):
            if data.get(key) != expected:
                return 0
            data[key] = new
            return 1
    raise AssertionError(command)


@settings(max_examples=150, deadline=None)
@given(st.lists(commands, max_size=40), st.lists(st.integers(1, 8), max_size=40))
def test_replicas_agree_with_each_other_and_with_a_model(
    writes: list[WriteCommand], batch_sizes: list[int]
) -> None:
    entries = entries_of(writes)
    one_batch, batched = KVStateMachine(), KVStateMachine()
    replies_one = one_batch.apply_batch(entries)
    replies_batched: list[Reply | BatchReplies] = []
    position = 0
    for size in [*batch_sizes, len(entries)]:  # the same log, cut into other batches
        replies_batched += batched.apply_batch(entries[position : position + size])
        position += size
    model: dict[bytes, bytes] = {}
    expected = [model_apply(model, command) for command in writes]
    assert replies_one == replies_batched == expected
    assert one_batch.digest() == batched.digest()
    assert one_batch.read(MGet(tuple(sorted(model)))) == [model[k] for k in sorted(model)]
    assert one_batch.read(DbSize()) == len(model)
    assert one_batch.used_bytes() == sum(
        len(k) + len(v) + ROW_OVERHEAD_BYTES for k, v in model.items()
    )
    # A replica restored from a snapshot at any point agrees too.
    restored = KVStateMachine()
    restored.restore_image(one_batch.snapshot_image(), expected_index=len(entries))
    assert restored.digest() == one_batch.digest()


# Plain SETs (no condition, no GET) often, in runs: a batch applies a run of them at once.
plain_sets = st.builds(Set, keys, values)
batch_commands = st.one_of(commands, plain_sets, plain_sets)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(batch_commands, max_size=40),
    st.lists(st.integers(1, 8), max_size=40),
    st.sampled_from([1024 * 1024, 200, 150]),  # the data bound: some SETs refused (OOM)
)
def test_batch_entries_apply_as_their_writes_one_by_one(
    writes: list[WriteCommand], batch_sizes: list[int], max_data_bytes: int
) -> None:
    # The same writes as batch entries (a connection's runs) and one write per entry: the
    # same replies, each write its own, in order; the same contents.
    runs: list[list[WriteCommand]] = []
    position = 0
    for size in [*batch_sizes, len(writes)]:
        if position < len(writes):
            runs.append(writes[position : position + size])
        position += size
    batched = KVStateMachine(max_data_bytes=max_data_bytes)
    single = KVStateMachine(max_data_bytes=max_data_bytes)
    entries = [Entry(1, i + 1, data=encode_writes(run)) for i, run in enumerate(runs)]
    results = batched.apply_batch(entries)
    replies: list[Reply] = []
    for run, result in zip(runs, results, strict=True):
        if len(run) == 1:
            replies.append(result)  # type: ignore[arg-type]  # a lone write: a plain entry
        else:
            assert isinstance(result, BatchReplies) and len(result.replies) == len(run)
            replies += result.replies
    assert replies == single.apply_batch(entries_of(writes))
    if max_data_bytes > 1000:  # the model has no data bound
        model: dict[bytes, bytes] = {}
        assert replies == [model_apply(model, command) for command in writes]
    assert batched.digest() == single.digest()
    assert (batched.used_bytes(), batched.key_count()) == (single.used_bytes(), single.key_count())
    assert batched.applied_index() == len(runs)
    restored = KVStateMachine()  # the counters are in the image too, and check out
    restored.restore_image(batched.snapshot_image(), expected_index=len(runs))


def test_a_write_refused_inside_a_batch_refuses_only_itself() -> None:
    sm = KVStateMachine(max_data_bytes=200)
    sm.apply_batch(entries_of([Set(b"s", b"text")]))
    run: list[WriteCommand] = [
        IncrBy(b"n"),
        IncrBy(b"s"),  # not an integer: this write's error
        Set(b"big", b"x" * 300),  # over the data bound: this write's OOM
        IncrBy(b"n"),
        Append(b"s", b"!"),
    ]
    (result,) = sm.apply_batch([Entry(2, 2, data=encode_writes(run))])
    assert isinstance(result, BatchReplies)
    first, not_integer, oom, second, appended = result.replies
    assert (first, not_integer, second, appended) == (1, NOT_INTEGER, 2, 5)
    assert isinstance(oom, ErrorReply) and oom.message.startswith("OOM ")
    assert sm.read(MGet((b"n", b"s", b"big"))) == [b"2", b"text!", None]
    assert (sm.applied_index(), sm.applied_term()) == (2, 2)


def test_a_run_of_sets_refuses_each_set_that_does_not_fit() -> None:
    # 1000 bytes of room; each new key costs 1 + len(value) + ROW_OVERHEAD_BYTES.
    sm = KVStateMachine(max_data_bytes=1000)
    run: list[WriteCommand] = [
        Set(b"a", b"x" * 500),  # 533: fits
        Set(b"b", b"x" * 500),  # 533 more: over, refused
        Set(b"a", b"x" * 100),  # shrinks a by 400: fits
        Set(b"b", b"x" * 500),  # now fits (133 + 533)
        Set(b"c", b""),  # 33 more: 699 + 33 fits
        Set(b"a", b"y" * 402),  # grows a by 302: over (1001), refused
        Set(b"a", b"z"),
    ]
    (result,) = sm.apply_batch([Entry(1, 1, data=encode_writes(run))])
    assert isinstance(result, BatchReplies)
    replies = list(result.replies)
    assert [r == OK for r in replies] == [True, False, True, True, True, False, True]
    assert all(isinstance(replies[i], ErrorReply) for i in (1, 5))
    assert sm.read(MGet((b"a", b"b", b"c"))) == [b"z", b"x" * 500, b""]
    assert (sm.key_count(), sm.used_bytes()) == (3, 1 + 1 + 500 + 1 + 3 * ROW_OVERHEAD_BYTES + 1)


def test_a_corrupt_batch_entry_is_one_deterministic_error() -> None:
    sm = KVStateMachine()
    payload = bytearray(encode_writes([Set(b"a", b"1"), Set(b"b", b"2")]))
    payload[-1] = 0xC1  # never valid msgpack
    (result,) = sm.apply_batch([Entry(1, 1, data=bytes(payload))])
    assert isinstance(result, ErrorReply) and result.message.startswith("ERR corrupt log entry 1")
    assert sm.key_count() == 0 and sm.applied_index() == 1


def test_a_failing_batch_entry_is_rolled_back_whole() -> None:
    # SQLite fails inside one batch entry: none of its writes stays (not even the first ones),
    # nor the applied index.
    sm = KVStateMachine(max_image_bytes=16 * PAGE_SIZE_BYTES)
    sm.apply_batch(entries_of([Set(b"before", b"1")]))
    digest = sm.digest()
    run: list[WriteCommand] = [Set(b"k%d" % i, b"x" * 4000) for i in range(40)]
    with pytest.raises(StateMachineError, match=r"entries 2\.\.2 failed .* stays 1"):
        sm.apply_batch([Entry(1, 2, data=encode_writes(run))])
    assert (sm.applied_index(), sm.digest(), sm.key_count()) == (1, digest, 1)


def test_the_digest_is_of_contents_only() -> None:
    a, b = KVStateMachine(), KVStateMachine()
    a.apply_batch(entries_of([Set(b"k", b"v"), Set(b"tmp", b"x"), Del((b"tmp",))]))
    b.apply_batch(entries_of([Set(b"k", b"v")]))
    assert a.digest() == b.digest()  # another history, another index, the same contents
    assert a.digest() != KVStateMachine().digest()
    # Length prefixes: moving a byte between key and value changes the digest.
    c, d = KVStateMachine(), KVStateMachine()
    c.apply_batch(entries_of([Set(b"ab", b"c")]))
    d.apply_batch(entries_of([Set(b"a", b"bc")]))
    assert c.digest() != d.digest()
    assert a.digest_json() == b'{"applied_index": 3, "digest": "%s"}' % a.digest().encode()
