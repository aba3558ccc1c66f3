"""The store's state machine: the key-value data in SQLite, applied from committed Raft entries.

It implements the Raft driver's `StateMachine` protocol (`detsim.raft.statemachine`):
`applied_index()`, `apply(entries)`, `snapshot()`, `restore(index, chunks)`; and serves reads
(`read`, after the server's ReadIndex) and `RAFT.DIGEST` (`digest`, `digest_json`).

Design: an in-memory SQLite database, in production and in a simulation alike, whose durable
form is the Raft snapshot plus the Raft log.
- SQLite cannot write through `detsim.fs` (it does its own file I/O), so an on-disk database
  would escape the simulated disk: its crashes, torn writes and fsync faults would never be
  tested. In memory, all durable bytes go through the Raft storage, which does use `detsim.fs`,
  and the simulator tests exactly the code production runs (one path, no "sim mode").
- The snapshot is the database image (`Connection.serialize()`); restoring deserializes it into
  a scratch connection, checks it (integrity, schema, meta rows, counters), then copies it with
  the backup API into a fresh `:memory:` database (a deserialized database is capped at SQLite's
  1 GiB MEMDB limit; a plain `:memory:` one is not).
- On a restart the machine starts empty (applied index 0); the driver restores the latest
  snapshot, then replays the log after it. The cost is memory (the data set lives in RAM) and
  replay time, bounded by the driver's snapshot threshold.

Rules:
- The applied index (and term) is a row of the database, written in the same transaction as
  the batch it covers: a batch (`apply_batch`) is one transaction, fully applied with its index
  or not at all; the snapshot image carries its exact applied index, so nothing is applied twice.
- A batch entry (a connection's run of writes, `detsim.kv.commands.encode_writes`) applies its
  writes in order inside the batch's transaction; its result is `BatchReplies`, one reply per
  write: a write refused for its data (INCR of a non-integer, OOM) is that write's error
  reply, the others still apply, exactly as if each write had been its own entry.
- Every command is deterministic: no clock, no randomness, no iteration over unordered sets;
  errors of client data (a non-integer INCR, a too long APPEND, a full store, a corrupt payload)
  are *results* (`ErrorReply`), identical on every replica. An exception from `apply` means the
  machine itself failed (the batch is rolled back and the node must stop).
- Bounds: `used_bytes` = sum over keys of len(key) + len(value) + ROW_OVERHEAD_BYTES is part of
  the replicated state; a write that would take it past `max_data_bytes` is refused with an
  `OOM ...` error (deterministically, so replicas agree). SQLite's page count is capped at
  `max_image_bytes` as a backstop (hitting it raises: the node stops rather than diverge).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Final

from detsim.kv.commands import (
    ERR_NOT_INTEGER,
    ERR_OVERFLOW,
    ERR_TOO_LONG,
    Append,
    Cas,
    DbSize,
    Del,
    EntryDecodeError,
    Exists,
    Get,
    IncrBy,
    MGet,
    MSet,
    ReadCommand,
    Set,
    SetCondition,
    WriteCommand,
    decode_entry,
    parse_int64,
)
from detsim.kv.limits import MAX_DATA_BYTES, MAX_DATABASE_IMAGE_BYTES, MAX_VALUE_BYTES
from detsim.kv.resp import INT64_MAX, INT64_MIN, OK, ErrorReply, Reply
from detsim.raft.core.messages import Entry, EntryKind
from detsim.raft.statemachine import SnapshotData, StateMachine

SCHEMA_VERSION: Final = 1

#: Counted per key in `used_bytes`: SQLite's cost of a row beyond its key and value (record
#: header, cell pointer, B-tree slack), so that many empty values cannot fill memory unseen.
ROW_OVERHEAD_BYTES: Final = 32

#: Snapshot images are handed to the Raft storage in chunks of this size.
SNAPSHOT_CHUNK_BYTES: Final = 1024 * 1024

#: Keys in one lookup query of a run of SETs (`_set_many`); under SQLite's 999-parameter limit
#: of old versions, and a power of two (the query's sizes are).
SET_MANY_LOOKUP_KEYS: Final = 512

#: SQLite's page size, fixed so the image layout does not depend on the library's default.
PAGE_SIZE_BYTES: Final = 4096

_SCHEMA: Final = (
    "CREATE TABLE kv (key BLOB PRIMARY KEY NOT NULL, value BLOB NOT NULL) WITHOUT ROWID",
    "CREATE TABLE meta (name TEXT PRIMARY KEY NOT NULL, value INTEGER NOT NULL) WITHOUT ROWID",
)
_META_NAMES: Final = ("schema_version", "applied_index", "applied_term", "used_bytes", "key_count")

_SQLITE_HEADER_BYTES: Final = 100  # the database file header: no valid image is shorter

_DIGEST_PERSON: Final = b"detsim-kv-v1"  # BLAKE2b personalization: digests of this format only


@dataclasses.dataclass(frozen=True, slots=True)
class BatchReplies:
    """The result of a batch entry: its writes' replies, in order (the plain result of an
    entry is one `Reply`)."""

    replies: tuple[Reply, ...]


class StateMachineError(RuntimeError):
    """The state machine itself failed (not the client's data): the node must stop."""


class SnapshotError(ValueError):
    """A snapshot image that is not a valid state of this machine (nothing was changed)."""


def _oom(max_data_bytes: int) -> ErrorReply:
    # "OOM command not allowed" is Redis's prefix (redis-py raises OutOfMemoryError on it).
    return ErrorReply(
        f"OOM command not allowed: the data set would pass {max_data_bytes} bytes "
        "(keys + values + per-key overhead)"
    )


def _row_bytes(key: bytes, value: bytes) -> int:
    return len(key) + len(value) + ROW_OVERHEAD_BYTES


class KVStateMachine:
    """The SQLite state machine of one node (see the module header)."""

    def __init__(
        self,
        *,
        max_data_bytes: int = MAX_DATA_BYTES,
        max_image_bytes: int = MAX_DATABASE_IMAGE_BYTES,
    ) -> None:
        assert max_data_bytes > 0 and max_image_bytes >= PAGE_SIZE_BYTES * 16
        self.max_data_bytes = max_data_bytes
        self.max_image_bytes = max_image_bytes
        self._conn = self._connect()
        self._conn.execute(f"PRAGMA page_size = {PAGE_SIZE_BYTES}")
        with self._transaction():
            for statement in _SCHEMA:
                self._conn.execute(statement)
            self._conn.executemany(
                "INSERT INTO meta (name, value) VALUES (?, ?)",
                [(name, SCHEMA_VERSION if name == "schema_version" else 0) for name in _META_NAMES],
            )
        self._load_meta()

    # --- connection and meta -----------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        # isolation_level=None: we issue BEGIN/COMMIT ourselves (one transaction a batch).
        conn = sqlite3.connect(":memory:", isolation_level=None)
        conn.execute(f"PRAGMA max_page_count = {self.max_image_bytes // PAGE_SIZE_BYTES}")
        return conn

    def _transaction(self) -> _Transaction:
        return _Transaction(self._conn)

    def _load_meta(self) -> None:
        meta = dict(self._conn.execute("SELECT name, value FROM meta").fetchall())
        self._applied_index: int = meta["applied_index"]
        self._applied_term: int = meta["applied_term"]
        self._used_bytes: int = meta["used_bytes"]
        self._key_count: int = meta["key_count"]

    def _store_meta(self) -> None:
        self._conn.executemany(
            "UPDATE meta SET value = ? WHERE name = ?",
            [
                (self._applied_index, "applied_index"),
                (self._applied_term, "applied_term"),
                (self._used_bytes, "used_bytes"),
                (self._key_count, "key_count"),
            ],
        )

    def close(self) -> None:
        self._conn.close()

    # --- the StateMachine protocol -----------------------------------------------------------

    def applied_index(self) -> int:
        return self._applied_index

    def applied_term(self) -> int:
        return self._applied_term

    async def apply(self, entries: Sequence[Entry]) -> list[Reply | BatchReplies]:
        return self.apply_batch(entries)

    async def snapshot(self) -> SnapshotData:
        image = self.snapshot_image()
        return SnapshotData(self._applied_index, len(image), _chunks(image))

    async def restore(self, index: int, chunks: Iterable[bytes]) -> None:
        parts: list[bytes] = []
        size_bytes = 0
        for chunk in chunks:
            size_bytes += len(chunk)
            if size_bytes > self.max_image_bytes:
                raise SnapshotError(f"snapshot image over {self.max_image_bytes} bytes")
            parts.append(chunk)
        self.restore_image(b"".join(parts), index)

    # --- applying ----------------------------------------------------------------------------

    def apply_batch(self, entries: Sequence[Entry]) -> list[Reply | BatchReplies]:
        """Apply consecutive committed entries in one transaction; one result per entry
        (None for entries that carry no command: the empty entry of a new leader, membership
        changes; BatchReplies for a batch entry). Raises StateMachineError (after rolling the
        whole batch back) if SQLite fails.
        """
        if not entries:
            return []
        assert entries[0].index == self._applied_index + 1, (entries[0], self._applied_index)
        results: list[Reply | BatchReplies] = []
        try:
            with self._transaction():
                previous = self._applied_index
                for entry in entries:
                    assert entry.index == previous + 1, (entry.index, previous)
                    previous = entry.index
                    results.append(self._apply_entry(entry))
                self._applied_index = entries[-1].index
                self._applied_term = entries[-1].term
                # Every key costs at least its overhead: a counter gone wrong shows here.
                assert 0 <= self._key_count * ROW_OVERHEAD_BYTES <= self._used_bytes, (
                    self._key_count,
                    self._used_bytes,
                )
                self._store_meta()
        except sqlite3.Error as exc:
            self._load_meta()  # the counters of the rolled-back batch are void
            raise StateMachineError(
                f"applying entries {entries[0].index}..{entries[-1].index} failed "
                f"(rolled back, applied index stays {self._applied_index}): {exc}"
            ) from exc
        except BaseException:
            self._load_meta()
            raise
        return results

    def _apply_entry(self, entry: Entry) -> Reply | BatchReplies:
        if entry.kind is not EntryKind.NORMAL or not entry.data:
            return None
        try:
            decoded = decode_entry(entry.data)
        except EntryDecodeError as exc:
            # Committed, so identical on every replica: a deterministic error, not a crash (the
            # one error stands for every write of a batch: the server replies it to each).
            return ErrorReply(f"ERR corrupt log entry {entry.index}: {exc}")
        if isinstance(decoded, tuple):
            return BatchReplies(self._execute_run(decoded))
        return self.execute_write(decoded)

    def _execute_run(self, commands: Sequence[WriteCommand]) -> tuple[Reply, ...]:
        """A batch's writes in order, one reply each. Consecutive plain SETs (the bulk of a
        write load) go through `_set_many`; everything else through `execute_write`."""
        replies: list[Reply] = []
        i = 0
        while i < len(commands):
            end = i
            while end < len(commands) and _is_plain_set(commands[end]):
                end += 1
            if end - i >= 2:
                replies += self._set_many(commands[i:end])  # type: ignore[arg-type]
                i = end
            else:
                replies.append(self.execute_write(commands[i]))
                i += 1
        return tuple(replies)

    def _set_many(self, sets: Sequence[Set]) -> list[Reply]:
        """Plain SETs (no condition, no GET), in order: the same replies and effect as
        `_set` one by one (OK, or OOM for a write that would pass the bound), with one lookup
        query per SET_MANY_LOOKUP_KEYS keys and one executemany for the rows."""
        lengths = self._value_lengths([command.key for command in sets])
        rows: list[tuple[bytes, bytes]] = []
        replies: list[Reply] = []
        for command in sets:
            key, value = command.key, command.value
            old_length = lengths.get(key)
            if old_length is None:
                growth = len(key) + len(value) + ROW_OVERHEAD_BYTES
            else:
                growth = len(value) - old_length
            if growth > 0 and self._used_bytes + growth > self.max_data_bytes:
                replies.append(_oom(self.max_data_bytes))
                continue
            lengths[key] = len(value)
            self._used_bytes += growth
            self._key_count += old_length is None
            rows.append((key, value))
            replies.append(OK)
        # In request order: a key set twice ends with its last value, as one by one.
        self._conn.executemany("INSERT OR REPLACE INTO kv (key, value) VALUES (?, ?)", rows)
        return replies

    def _value_lengths(self, keys: Sequence[bytes]) -> dict[bytes, int]:
        """len(value) of each of `keys` that exists."""
        unique = list(dict.fromkeys(keys))
        lengths: dict[bytes, int] = {}
        for start in range(0, len(unique), SET_MANY_LOOKUP_KEYS):
            part: list[bytes | None] = list(unique[start : start + SET_MANY_LOOKUP_KEYS])
            # Padded with NULLs (never equal to a key) to a power of two: few distinct SQL
            # texts, so the statement cache keeps them all prepared.
            slots = 1 << (len(part) - 1).bit_length()
            part += [None] * (slots - len(part))
            sql = _LOOKUP_LENGTHS_SQL.get(slots)
            if sql is None:
                sql = _LOOKUP_LENGTHS_SQL[slots] = (
                    f"SELECT key, length(value) FROM kv WHERE key IN ({', '.join('?' * slots)})"
                )
            lengths.update(self._conn.execute(sql, part).fetchall())
        return lengths

    def execute_write(self, command: WriteCommand) -> Reply:
        """One write's effect and reply. Every command checks before it writes, so a refused
        command changes nothing (no partial MSET)."""
        match command:
            case Set():
                return self._set(command)
            case Del(keys):
                return self._del(keys)
            case IncrBy(key, delta):
                return self._incrby(key, delta)
            case Append(key, value):
                return self._append(key, value)
            case MSet(pairs):
                return self._mset(pairs)
            case Cas(key, expected, new):
                return self._cas(key, expected, new)
            case _:
                raise TypeError(f"not a write command: {command!r}")

    def _lookup(self, key: bytes) -> bytes | None:
        row = self._conn.execute("SELECT value FROM kv WHERE key = ?", (key,)).fetchone()
        if row is None:
            return None
        value: bytes = row[0]  # a BLOB: we only store bytes, and restore checks every row
        return value

    def _has_room(self, growth_bytes: int) -> bool:
        return growth_bytes <= 0 or self._used_bytes + growth_bytes <= self.max_data_bytes

    @staticmethod
    def _growth(key: bytes, old: bytes | None, new: bytes) -> int:
        """How much `used_bytes` grows when `key` goes from `old` to `new`."""
        if old is None:
            return len(key) + len(new) + ROW_OVERHEAD_BYTES
        return len(new) - len(old)

    def _write(self, key: bytes, new: bytes, new_key: bool, growth_bytes: int) -> None:
        """Store `new` under `key`; the caller computed the growth and checked the room."""
        self._conn.execute("INSERT OR REPLACE INTO kv (key, value) VALUES (?, ?)", (key, new))
        self._used_bytes += growth_bytes
        self._key_count += new_key

    def _put(self, key: bytes, old: bytes | None, new: bytes) -> ErrorReply | None:
        """`_write` if it fits; the OOM error otherwise."""
        growth = self._growth(key, old, new)
        if growth > 0 and self._used_bytes + growth > self.max_data_bytes:
            return _oom(self.max_data_bytes)
        self._write(key, new, old is None, growth)
        return None

    def _set(self, command: Set) -> Reply:
        old = self._lookup(command.key)
        reply: Reply = old if command.get else OK
        if command.condition is SetCondition.NX and old is not None:
            return old if command.get else None
        if command.condition is SetCondition.XX and old is None:
            return None
        return self._put(command.key, old, command.value) or reply

    def _del(self, keys: Sequence[bytes]) -> Reply:
        deleted = 0
        for key in keys:
            old = self._lookup(key)
            if old is None:
                continue
            self._conn.execute("DELETE FROM kv WHERE key = ?", (key,))
            self._used_bytes -= _row_bytes(key, old)
            self._key_count -= 1
            deleted += 1
        return deleted

    def _incrby(self, key: bytes, delta: int) -> Reply:
        old = self._lookup(key)
        current = 0 if old is None else parse_int64(old)
        if current is None:
            return ErrorReply(ERR_NOT_INTEGER)
        result = current + delta
        if not INT64_MIN <= result <= INT64_MAX:
            return ErrorReply(ERR_OVERFLOW)
        return self._put(key, old, b"%d" % result) or result

    def _append(self, key: bytes, value: bytes) -> Reply:
        old = self._lookup(key)
        new = value if old is None else old + value
        if len(new) > MAX_VALUE_BYTES:
            return ErrorReply(ERR_TOO_LONG)
        return self._put(key, old, new) or len(new)

    def _mset(self, pairs: Sequence[tuple[bytes, bytes]]) -> Reply:
        # All or nothing: compute the final value of each key (last one wins) and the total
        # growth first, then write.
        final: dict[bytes, bytes] = {}
        for key, value in pairs:
            final[key] = value
        olds = {key: self._lookup(key) for key in final}
        growths = {key: self._growth(key, olds[key], value) for key, value in final.items()}
        if not self._has_room(sum(growths.values())):
            return _oom(self.max_data_bytes)
        for key, value in final.items():  # insertion order: deterministic
            self._write(key, value, olds[key] is None, growths[key])
        return OK

    def _cas(self, key: bytes, expected: bytes, new: bytes) -> Reply:
        old = self._lookup(key)
        if old is None or old != expected:
            return 0
        return self._put(key, old, new) or 1

    # --- reads -------------------------------------------------------------------------------

    def read(self, command: ReadCommand) -> Reply:
        """A read's reply from the applied state (the caller ensures linearizability)."""
        match command:
            case Get(key):
                return self._lookup(key)
            case Exists(keys):
                return sum(1 for key in keys if self._lookup(key) is not None)
            case MGet(keys):
                return [self._lookup(key) for key in keys]
            case DbSize():
                return self._key_count
            case _:
                raise TypeError(f"not a read command: {command!r}")

    def key_count(self) -> int:
        return self._key_count

    def used_bytes(self) -> int:
        return self._used_bytes

    # --- digest ------------------------------------------------------------------------------

    def digest(self) -> str:
        """BLAKE2b-256 of the contents: every (key, value) in key order, each length-prefixed.
        Equal contents give equal digests whatever their history (pages, snapshots). The
        applied index is not hashed: `digest_json` reports it beside the digest, and replicas
        are compared at equal applied index."""
        h = hashlib.blake2b(digest_size=32, person=_DIGEST_PERSON)
        rows = self._conn.execute("SELECT key, value FROM kv ORDER BY key")
        for key, value in rows:
            h.update(b"%d:%d:" % (len(key), len(value)))
            h.update(key)
            h.update(value)
        return h.hexdigest()

    def digest_json(self) -> bytes:
        """RAFT.DIGEST's reply: JSON `{"applied_index": n, "digest": "..."}` (DESIGN)."""
        body = {"applied_index": self._applied_index, "digest": self.digest()}
        return json.dumps(body, sort_keys=True).encode()

    # --- snapshots ---------------------------------------------------------------------------

    def snapshot_image(self) -> bytes:
        """The database image at the applied index (outside any transaction)."""
        assert not self._conn.in_transaction
        return self._conn.serialize()

    def restore_image(self, image: bytes, expected_index: int | None = None) -> None:
        """Replace the whole state by `image` (a `snapshot_image`), after checking it; on a
        bad image raise SnapshotError and keep the current state."""
        if not _SQLITE_HEADER_BYTES <= len(image) <= self.max_image_bytes:
            # (SQLite's deserialize of an empty buffer even raises MemoryError.)
            raise SnapshotError(
                f"snapshot image of {len(image)} bytes: not in "
                f"[{_SQLITE_HEADER_BYTES}, {self.max_image_bytes}]"
            )
        scratch = sqlite3.connect(":memory:", isolation_level=None)
        fresh = self._connect()
        try:
            scratch.deserialize(image)
            _check_image(scratch, expected_index)
            scratch.backup(fresh)
        except sqlite3.Error as exc:
            fresh.close()
            raise SnapshotError(f"not a valid state image: {exc}") from exc
        except BaseException:
            fresh.close()
            raise
        finally:
            scratch.close()
        self._conn.close()
        self._conn = fresh
        self._load_meta()


def _is_plain_set(command: WriteCommand) -> bool:
    return type(command) is Set and command.condition is SetCondition.ALWAYS and not command.get


#: `_set_many`'s lookup query of each power-of-two size, made once (see `_value_lengths`).
_LOOKUP_LENGTHS_SQL: Final[dict[int, str]] = {}


def _check_image(conn: sqlite3.Connection, expected_index: int | None) -> None:
    """Raise SnapshotError unless `conn` holds a sound database of this schema."""
    if conn.execute("PRAGMA quick_check").fetchall() != [("ok",)]:
        raise SnapshotError("the image fails SQLite's quick_check")
    schema = conn.execute("SELECT sql FROM sqlite_schema WHERE type = 'table' ORDER BY name")
    if [row[0] for row in schema] != sorted(_SCHEMA):
        raise SnapshotError("the image has another schema")
    meta = dict(conn.execute("SELECT name, value FROM meta").fetchall())
    if sorted(meta) != sorted(_META_NAMES) or any(type(v) is not int for v in meta.values()):
        raise SnapshotError(f"the image has bad meta rows: {sorted(meta)}")
    if meta["schema_version"] != SCHEMA_VERSION:
        raise SnapshotError(f"schema version {meta['schema_version']}, not {SCHEMA_VERSION}")
    if expected_index is not None and meta["applied_index"] != expected_index:
        raise SnapshotError(
            f"the image is at applied index {meta['applied_index']}, not {expected_index}"
        )
    count, used, longest, non_blobs = conn.execute(
        "SELECT count(*), coalesce(sum(length(key) + length(value)), 0),"
        " coalesce(max(max(length(key), length(value))), 0),"
        " coalesce(sum(typeof(key) != 'blob' OR typeof(value) != 'blob'), 0) FROM kv"
    ).fetchone()
    if non_blobs or longest > MAX_VALUE_BYTES:
        raise SnapshotError("the image has rows that are not bytes or are too long")
    if (count, used + count * ROW_OVERHEAD_BYTES) != (meta["key_count"], meta["used_bytes"]):
        raise SnapshotError("the image's counters disagree with its rows")


def _chunks(image: bytes) -> Iterator[bytes]:
    view = memoryview(image)
    for start in range(0, len(image), SNAPSHOT_CHUNK_BYTES):
        yield bytes(view[start : start + SNAPSHOT_CHUNK_BYTES])


class _Transaction:
    """BEGIN ... COMMIT, or ROLLBACK if the block raises."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def __enter__(self) -> None:
        self._conn.execute("BEGIN")

    def __exit__(self, kind: object, value: object, traceback: object) -> None:
        if kind is None:
            self._conn.execute("COMMIT")
        elif self._conn.in_transaction:
            self._conn.execute("ROLLBACK")


if TYPE_CHECKING:  # mypy proves the driver's protocol is met (no runtime cost)
    _CONFORMS: StateMachine = KVStateMachine()
