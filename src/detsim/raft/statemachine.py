"""The application side of the Raft driver: the `StateMachine` protocol, and `MemoryKV`.

A state machine receives every committed entry exactly once per incarnation of its state, in
index order, and owns its applied index:

- `applied_index()` is the index of the last entry whose effect the state machine holds. A
  durable state machine (the SQLite store) keeps it in the same transaction as the effects, so
  after a restart the driver replays the log only from there and never applies twice. An
  in-memory one starts at 0 and the driver restores it from the latest snapshot, then replays.
- `apply(entries)` gets a batch of consecutive committed entries (one Ready's worth) and returns
  one result per entry, in order; the driver hands each result to the proposal's future. Every
  entry is given, including CONF_CHANGE entries (their data is a `ConfChange`) and the empty
  NORMAL entry each new leader appends, so that the applied index covers every index. A batch
  is the natural unit of one transaction. `apply` must not raise for bad client data: a
  deterministic error *result* keeps every replica identical; raising stops the node.
- `snapshot()` captures the state at its applied index as bytes (streamed as chunks, with the
  total size known up front); `restore(index, chunks)` replaces the whole state by a snapshot
  taken at `index` (after it, applied_index() == index).

Rules: no randomness, clock or I/O that could differ between replicas inside `apply`; the
driver calls these from one task at a time, never concurrently.

`MemoryKV` is the small in-memory implementation the tests use: a dict of bytes to bytes,
commands as msgpack arrays (`encode_command`), its snapshot a msgpack map.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol

from detsim.raft import codec
from detsim.raft.codec import CodecError
from detsim.raft.core.messages import Entry, EntryKind

#: MemoryKV refuses keys and values past this size (a result, not an exception).
MAX_KV_ITEM_BYTES: Final = 1024 * 1024


@dataclass(frozen=True, slots=True)
class SnapshotData:
    """A state machine's snapshot: taken at `index`, `size_bytes` long, streamed as `chunks`
    (iterated once, by the driver, while nothing else touches the state machine)."""

    index: int
    size_bytes: int
    chunks: Iterable[bytes]


class StateMachine(Protocol):
    """What the driver needs of the application (see the module header for the contract)."""

    def applied_index(self) -> int:
        """The last index whose effect the state holds (durably, for a durable machine)."""
        ...

    async def apply(self, entries: Sequence[Entry]) -> list[Any]:
        """Apply consecutive committed entries (applied_index() + 1 onwards); one result each."""
        ...

    async def snapshot(self) -> SnapshotData:
        """The state at applied_index()."""
        ...

    async def restore(self, index: int, chunks: Iterable[bytes]) -> None:
        """Replace the whole state by the snapshot taken at `index`."""
        ...


def encode_command(op: str, key: bytes, value: bytes | None = None) -> bytes:
    """A MemoryKV command: op is "set", "get", "del" or "append"."""
    return codec.packb([op, key] if value is None else [op, key, value])


class MemoryKV:
    """A dict of bytes to bytes as a state machine (tests, benchmarks, examples).

    Results: set -> the previous value (or None); get -> the value (or None); del -> True if
    the key existed; append -> the new length; a malformed command -> an error string. Non
    NORMAL entries and empty entries -> None.
    """

    def __init__(self) -> None:
        self.data: dict[bytes, bytes] = {}
        self._applied = 0

    def applied_index(self) -> int:
        return self._applied

    async def apply(self, entries: Sequence[Entry]) -> list[Any]:
        results: list[Any] = []
        for entry in entries:
            assert entry.index == self._applied + 1, (entry.index, self._applied)
            results.append(self._apply_one(entry))
            self._applied = entry.index
        return results

    def _apply_one(self, entry: Entry) -> Any:
        if entry.kind is not EntryKind.NORMAL or not entry.data:
            return None
        try:
            command = codec.unpackb(entry.data)
        except CodecError as exc:
            return f"error: {exc}"
        if (
            type(command) is not list
            or len(command) not in (2, 3)
            or not all(type(x) is bytes for x in command[1:])
            or any(len(x) > MAX_KV_ITEM_BYTES for x in command[1:])
        ):
            return "error: malformed command"
        op, key, *rest = command
        if op == "get" and not rest:
            return self.data.get(key)
        if op == "del" and not rest:
            return self.data.pop(key, None) is not None
        if op == "set" and rest:
            old = self.data.get(key)
            self.data[key] = rest[0]
            return old
        if op == "append" and rest:
            value = self.data[key] = self.data.get(key, b"") + rest[0]
            return len(value)
        return f"error: unknown command {op!r}"

    async def snapshot(self) -> SnapshotData:
        blob = codec.packb([self._applied, sorted(self.data.items())])
        return SnapshotData(self._applied, len(blob), [blob])

    async def restore(self, index: int, chunks: Iterable[bytes]) -> None:
        blob = b"".join(chunks)
        value = codec.unpackb(blob, max_bytes=len(blob))
        assert type(value) is list and value[0] == index, "snapshot of another index"
        self.data = {bytes(k): bytes(v) for k, v in value[1]}
        self._applied = index

    def digest(self) -> str:
        """A digest of the contents (replicas that applied the same prefix agree)."""
        h = hashlib.blake2b(digest_size=8)
        for key, value in sorted(self.data.items()):
            h.update(len(key).to_bytes(4, "big") + key + len(value).to_bytes(4, "big") + value)
        return h.hexdigest()
