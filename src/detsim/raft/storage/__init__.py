"""Raft storage on `detsim.fs`: hard state, log segments and snapshots of one data directory.

Layout of `data_dir`:
    log/seg-<generation>-<first index>.rec  entries and hard states (term, vote, commit), one a
                                            record, write-ahead-log style (`_log`)
    snap/snap-<index>-<term>.data|.meta     the current snapshot (`_snapshots`)

The driver's contract (with the core's `Ready`, see `detsim.raft.core.ready`), for one Ready:

    for c in rd.snapshot_chunks:
        storage.write_snapshot_chunk(c.meta, c.offset, c.data)
    if rd.snapshot: await storage.install_snapshot(rd.snapshot)   # durable; discards the log
    storage.append(rd.entries)
    if rd.hard_state: storage.hard_state = rd.hard_state
    await storage.sync()            # group commit: one fsync per file written; then send

and for a snapshot of its own state machine, before `raft.compact(meta)`:
`await storage.save_snapshot(meta, chunks)` (durable; drops the log's whole segments below it).
`storage.read_chunk(meta, offset, size_bytes)` is the core's `SnapshotReader`.

Rules:
- Nothing is durable until `sync()` returns, except what the `async` snapshot calls make durable
  themselves. `sync()` fsyncs the staging snapshot if chunks came, then writes the hard state
  (if it changed) after the batch's entries in the log segment and fsyncs the segment: one
  fsync in the common case, and a commit index is never durable before the entries it covers.
  fsyncs go through `fsync_async`: off the event loop in production, `fsync_latency` in a
  simulation.
- `write_hard_state()` writes a hard state that only moves the commit index without an fsync
  (the commit index is volatile state in Raft; the next sync makes it durable): after a crash
  the durable commit index may lag, so `load()` treats a few more entries as uncommitted (a
  torn tail there is repaired, not reported as damage).
- `load()` never drops committed data to carry on: damage it cannot prove harmless raises
  `CorruptStorageError` (or the record file's `CorruptRecordError`), naming file and offset.
  What it repairs (a torn tail above the commit index, unfinished snapshot files) it logs.
- One `Storage` a data directory, used from one task at a time (`sync` is not re-entrant).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable, Sequence

from detsim.fs import PathArg
from detsim.raft.core.messages import Entry, HardState, SnapshotMeta
from detsim.raft.storage._common import CorruptStorageError, ensure_dir
from detsim.raft.storage._log import MAX_SEGMENTS, SEGMENT_MAX_BYTES, SegmentedLog
from detsim.raft.storage._snapshots import (
    BLOCK_BYTES,
    MAX_READ_CHUNK_BYTES,
    MAX_SNAPSHOT_BYTES,
    SnapshotStore,
)

__all__ = [
    "BLOCK_BYTES",
    "MAX_READ_CHUNK_BYTES",
    "MAX_SEGMENTS",
    "MAX_SNAPSHOT_BYTES",
    "SEGMENT_MAX_BYTES",
    "CorruptStorageError",
    "Restored",
    "Storage",
]


@dataclasses.dataclass(frozen=True, slots=True)
class Restored:
    """What `load()` found: the arguments the core's `Raft(...)` restores from."""

    hard_state: HardState
    snapshot: SnapshotMeta | None
    entries: tuple[Entry, ...]  # contiguous, from snapshot.index + 1 (or 1)

    @property
    def empty(self) -> bool:
        """Nothing durable yet: a new node (the core bootstraps or waits to be added)."""
        return self.hard_state == HardState() and self.snapshot is None and not self.entries


class Storage:
    """The durable state of one Raft node (see the module header)."""

    def __init__(self, data_dir: PathArg, *, segment_max_bytes: int = SEGMENT_MAX_BYTES) -> None:
        self.data_dir = os.fspath(data_dir)
        self._log = SegmentedLog(os.path.join(self.data_dir, "log"), segment_max_bytes)
        self._snapshots = SnapshotStore(os.path.join(self.data_dir, "snap"))
        self._loaded = False
        self._syncing = False

    def load(self) -> Restored:
        """Open (creating if needed) and check everything; once, before any other call."""
        assert not self._loaded, "load() once"
        for directory in (self.data_dir, self._log.directory, self._snapshots.directory):
            ensure_dir(directory)
        snapshot = self._snapshots.load()
        index, term = (snapshot.index, snapshot.term) if snapshot else (0, 0)
        hard, entries = self._log.load(snapshot_index=index, snapshot_term=term)
        self._loaded = True
        return Restored(hard, snapshot, tuple(entries))

    # -- the durable state ----------------------------------------------------------------------

    @property
    def hard_state(self) -> HardState:
        """The latest hard state given (durable after `sync`)."""
        return self._log.hard_state

    @hard_state.setter
    def hard_state(self, state: HardState) -> None:
        self._log.set_hard_state(state)

    @property
    def snapshot(self) -> SnapshotMeta | None:
        return self._snapshots.current

    @property
    def first_index(self) -> int:
        """The first index the log can hold (after the snapshot)."""
        return self._log.base_index + 1

    @property
    def last_index(self) -> int:
        return self._log.last_index

    def append(self, entries: Sequence[Entry]) -> None:
        """Append entries; from an index <= last_index the stored suffix is replaced."""
        self._log.append(entries)

    def entries(self, lo: int, hi: int) -> list[Entry]:
        """Entries [lo, hi) read back from disk (checked)."""
        return self._log.entries(lo, hi)

    async def sync(self) -> None:
        """Make everything given so far durable: staged snapshot chunks, entries, hard state."""
        assert not self._syncing, "sync() is not re-entrant"
        self._syncing = True
        try:
            await self._snapshots.sync_staging()
            await self._log.sync()
        finally:
            self._syncing = False

    def write_hard_state(self) -> None:
        """Write the hard state given, without making it durable (no fsync): for a hard state
        that only moves the commit index (etcd's MustSync false). The next `sync()` makes it
        durable. Nothing else may be pending (no entries, no snapshot chunks since the last
        sync): those are only ever written to be made durable."""
        self._log.write_hard_state()

    # -- snapshots ------------------------------------------------------------------------------

    def write_snapshot_chunk(self, meta: SnapshotMeta, offset: int, data: bytes) -> None:
        """An incoming InstallSnapshot chunk (offset 0 starts over); durable after `sync`."""
        self._snapshots.write_chunk(meta, offset, data)

    async def install_snapshot(self, meta: SnapshotMeta) -> None:
        """The staged snapshot is complete: make it the current one and discard the log (the
        log starts after meta.index). Durable when this returns."""
        await self._snapshots.install_staged(meta)
        self._log.discard_all(meta.index)

    async def save_snapshot(self, meta: SnapshotMeta, chunks: Iterable[bytes]) -> None:
        """Our state machine's snapshot at meta.index (an entry of the log, or the current
        snapshot's index): make it durable and current, then drop the log segments it covers."""
        term = self._log.term_at(meta.index)
        current = self._snapshots.current
        known = term if term is not None else (current.term if current else None)
        if meta.index > self._log.base_index and known != meta.term:
            raise ValueError(f"snapshot {meta} does not match the log (term {known})")
        await self._snapshots.save(meta, chunks)
        self._log.compact(meta.index)

    def read_chunk(self, meta: SnapshotMeta, offset: int, size_bytes: int) -> bytes:
        """`size_bytes` bytes of the current snapshot at `offset` (the core's SnapshotReader)."""
        return self._snapshots.read_chunk(meta, offset, size_bytes)

    def close(self) -> None:
        self._log.close()
        self._snapshots.close()
