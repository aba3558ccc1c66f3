"""Raft snapshots on disk: `snap/snap-<index>-<term>.data` and its `.meta`, one current snapshot.

Owns the snapshot directory: the staging file chunks are written to, the current snapshot, and
the reads the core's `SnapshotReader` makes to stream it to followers.

Format: `.data` holds the snapshot's bytes as the application gave them. `.meta` is a record
file (written whole, then renamed: opened with repair=False, so any damage is corruption) with
one record, msgpack `[FORMAT_VERSION, snapshot meta, BLOCK_BYTES, [crc32c of each block]]`:
every `BLOCK_BYTES` block of the data is checksummed, so a read is verified wherever it starts.

Rules:
- Chunks are written in order to `staging.data` (offset 0 starts a new staging file); they are
  durable after `sync_staging()`.
- Installing a staged snapshot: the data is fsynced, the meta written to a `.tmp` name and
  fsynced, the data renamed into place, then the meta, then the directory fsynced: the snapshot
  exists exactly when its `.meta` does. Only then are older snapshots removed (and the removal
  fsynced). A crash at any point leaves the old snapshot or the new one, whole.
- Load takes the newest `.meta`, checks every block of its data, and removes everything else
  (older snapshots, orphan data, staging and `.tmp` files). A damaged newest snapshot is an
  error naming the file and offset: falling back to an older one could silently lose the log
  entries its successor let us compact.
- Reads are checked block by block (re-read `MAX_READ_ATTEMPTS` times before a mismatch counts).
- Bounds: `MAX_SNAPSHOT_BYTES` a snapshot, `MAX_READ_CHUNK_BYTES` one read.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
from collections.abc import Iterable
from typing import Any, Final

import crc32c

from detsim import fs
from detsim.fs import DurableFile
from detsim.fs.records import MAX_READ_ATTEMPTS, RecordFile
from detsim.raft import codec
from detsim.raft.core.messages import MAX_MESSAGE_BYTES, SnapshotMeta
from detsim.raft.storage._common import CorruptStorageError

FORMAT_VERSION: Final = 1
BLOCK_BYTES: Final = 64 * 1024
MAX_SNAPSHOT_BYTES: Final = 4 * 1024 * 1024 * 1024
MAX_READ_CHUNK_BYTES: Final = MAX_MESSAGE_BYTES
STAGING_FILE: Final = "staging.data"
_VERIFY_BLOCKS: Final = 16  # blocks read at a time when load verifies a whole snapshot
_NAME = re.compile(r"^snap-(\d{20})-(\d{20})\.(data|meta)$")

_log = logging.getLogger(__name__)


def snapshot_stem(index: int, term: int) -> str:
    return f"snap-{index:020d}-{term:020d}"


class _Blocks:
    """Checksums of a byte stream, block by block, as it is written."""

    def __init__(self) -> None:
        self.crcs: list[int] = []
        self._partial = bytearray()

    def feed(self, data: bytes) -> None:
        self._partial += data
        while len(self._partial) >= BLOCK_BYTES:
            self.crcs.append(crc32c.crc32c(bytes(self._partial[:BLOCK_BYTES])))
            del self._partial[:BLOCK_BYTES]

    def finish(self) -> list[int]:
        if self._partial:
            self.crcs.append(crc32c.crc32c(bytes(self._partial)))
            self._partial.clear()
        return self.crcs


@dataclasses.dataclass(slots=True)
class _Staging:
    meta: SnapshotMeta
    file: DurableFile
    size_bytes: int = 0
    dirty: bool = False
    blocks: _Blocks = dataclasses.field(default_factory=_Blocks)


@dataclasses.dataclass(slots=True)
class _Current:
    meta: SnapshotMeta
    path: str
    crcs: list[int]
    file: DurableFile


class SnapshotStore:
    """The snapshots of one data directory. Call `load` once before anything else."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self._current: _Current | None = None
        self._staging: _Staging | None = None

    @property
    def current(self) -> SnapshotMeta | None:
        return self._current.meta if self._current else None

    # -- load -----------------------------------------------------------------------------------

    def load(self) -> SnapshotMeta | None:
        names = fs.listdir(self.directory)
        metas = sorted(
            (int(m.group(1)), int(m.group(2)), name)
            for name in names
            if (m := _NAME.match(name)) and m.group(3) == "meta"
        )
        if metas:
            index, term, name = metas[-1]
            self._current = self._open_current(index, term, os.path.join(self.directory, name))
        keep = set()
        if self._current is not None:
            stem = snapshot_stem(self._current.meta.index, self._current.meta.term)
            keep = {stem + ".data", stem + ".meta"}
        self._remove([name for name in names if name not in keep])
        return self.current

    def _open_current(self, index: int, term: int, meta_path: str) -> _Current:
        with RecordFile.open(meta_path, create=False, repair=False) as rf:
            if len(rf.recovered) != 1:
                raise CorruptStorageError(meta_path, 0, f"{len(rf.recovered)} records, not 1")
            record = rf.recovered[0]
        meta, crcs = _decode_meta(meta_path, record.offset, record.payload)
        if (meta.index, meta.term) != (index, term):
            raise CorruptStorageError(meta_path, record.offset, f"names {index}/{term}: {meta}")
        data_path = meta_path[: -len(".meta")] + ".data"
        if not fs.exists(data_path):
            raise CorruptStorageError(data_path, 0, "snapshot data file is missing")
        size = fs.getsize(data_path)
        if size != meta.size_bytes:
            raise CorruptStorageError(data_path, size, f"{size} bytes, meta says {meta.size_bytes}")
        current = _Current(meta, data_path, crcs, fs.open(data_path, "rb"))
        try:
            nblocks = len(crcs)
            for lo in range(0, nblocks, _VERIFY_BLOCKS):
                _read_blocks(current, lo, min(lo + _VERIFY_BLOCKS, nblocks))
        except BaseException:
            current.file.close()
            raise
        return current

    def _remove(self, names: list[str]) -> None:
        for name in names:
            _log.info("%s: removing %s (superseded or unfinished)", self.directory, name)
            fs.remove(os.path.join(self.directory, name))
        if names:
            fs.fsync_dir(self.directory)

    # -- writing --------------------------------------------------------------------------------

    def write_chunk(self, meta: SnapshotMeta, offset: int, data: bytes) -> None:
        """Write `data` at `offset` of the staging file for `meta` (durable after
        `sync_staging`). Offset 0 starts a new staging file; other offsets continue it."""
        if meta.size_bytes > MAX_SNAPSHOT_BYTES:
            raise ValueError(f"snapshot of {meta.size_bytes} bytes > {MAX_SNAPSHOT_BYTES}")
        if offset == 0:
            self._start_staging(meta)
        self._append_staging(meta, offset, data)

    def _append_staging(self, meta: SnapshotMeta, offset: int, data: bytes) -> None:
        staging = self._staging
        if staging is None or staging.meta != meta or offset != staging.size_bytes:
            expected = (staging.meta, staging.size_bytes) if staging else None
            raise ValueError(f"chunk {meta}@{offset} does not continue the staging {expected}")
        if offset + len(data) > meta.size_bytes:
            raise ValueError(f"chunk ends at {offset + len(data)} > size {meta.size_bytes}")
        staging.file.write(data)
        staging.blocks.feed(data)
        staging.size_bytes += len(data)
        staging.dirty = True

    def _start_staging(self, meta: SnapshotMeta) -> None:
        self.abort_staging()
        path = os.path.join(self.directory, STAGING_FILE)
        self._staging = _Staging(meta, fs.open(path, "wb"))
        fs.fsync_dir(self.directory)

    def abort_staging(self) -> None:
        """Drop a partly received snapshot (its file is removed at the next start)."""
        if self._staging is not None:
            self._staging.file.close()
            self._staging = None

    async def sync_staging(self) -> None:
        staging = self._staging
        if staging is not None and staging.dirty:
            staging.dirty = False
            await staging.file.fsync_async()

    async def install_staged(self, meta: SnapshotMeta) -> None:
        """Make the fully staged snapshot `meta` the current one, durably (see the header)."""
        staging = self._staging
        if staging is None or staging.meta != meta or staging.size_bytes != meta.size_bytes:
            got = (staging.meta, staging.size_bytes) if staging else None
            raise ValueError(f"snapshot {meta} is not fully staged (staging: {got})")
        self._staging = None
        await staging.file.fsync_async()
        staging.file.close()
        crcs = staging.blocks.finish()
        stem = os.path.join(self.directory, snapshot_stem(meta.index, meta.term))
        meta_tmp = stem + ".meta.tmp"
        if fs.exists(meta_tmp):
            fs.remove(meta_tmp)
        with RecordFile.open(meta_tmp) as rf:
            rf.append(_encode_meta(meta, crcs))
            await rf.sync_async()
        if self._current is not None:
            self._current.file.close()
        fs.rename(os.path.join(self.directory, STAGING_FILE), stem + ".data")
        fs.rename(meta_tmp, stem + ".meta")
        fs.fsync_dir(self.directory)  # the snapshot now exists
        self._current = _Current(meta, stem + ".data", crcs, fs.open(stem + ".data", "rb"))
        keep = {os.path.basename(stem) + ".data", os.path.basename(stem) + ".meta"}
        self._remove([n for n in fs.listdir(self.directory) if _NAME.match(n) and n not in keep])

    async def save(self, meta: SnapshotMeta, chunks: Iterable[bytes]) -> None:
        """Write a whole snapshot (our own state machine's) and install it."""
        if meta.size_bytes > MAX_SNAPSHOT_BYTES:
            raise ValueError(f"snapshot of {meta.size_bytes} bytes > {MAX_SNAPSHOT_BYTES}")
        offset = 0
        self._start_staging(meta)
        for chunk in chunks:
            self._append_staging(meta, offset, chunk)
            offset += len(chunk)
        await self.install_staged(meta)

    # -- reading --------------------------------------------------------------------------------

    def read_chunk(self, meta: SnapshotMeta, offset: int, size_bytes: int) -> bytes:
        """Exactly `size_bytes` bytes of the current snapshot `meta` at `offset`, verified."""
        current = self._current
        if current is None or current.meta != meta:
            raise ValueError(f"snapshot {meta} is not the current one ({self.current})")
        if not 0 <= size_bytes <= MAX_READ_CHUNK_BYTES:
            raise ValueError(f"read of {size_bytes} bytes outside [0, {MAX_READ_CHUNK_BYTES}]")
        if not 0 <= offset <= offset + size_bytes <= meta.size_bytes:
            raise ValueError(f"read [{offset}, +{size_bytes}) outside {meta.size_bytes} bytes")
        if size_bytes == 0:
            return b""
        lo = offset // BLOCK_BYTES
        hi = -(-(offset + size_bytes) // BLOCK_BYTES)
        data = _read_blocks(current, lo, hi)
        start = offset - lo * BLOCK_BYTES
        return data[start : start + size_bytes]

    def close(self) -> None:
        self.abort_staging()
        if self._current is not None:
            self._current.file.close()


def _read_blocks(current: _Current, lo: int, hi: int) -> bytes:
    """Blocks [lo, hi) of the current snapshot, each checked against its checksum."""
    start = lo * BLOCK_BYTES
    end = min(hi * BLOCK_BYTES, current.meta.size_bytes)
    bad = start
    for _ in range(MAX_READ_ATTEMPTS):
        current.file.seek(start)
        data = current.file.read(end - start)
        bad_block = _first_bad_block(data, current.crcs, lo)
        if bad_block is None and len(data) == end - start:
            return data
        bad = start + len(data) if bad_block is None else bad_block * BLOCK_BYTES
    raise CorruptStorageError(
        current.path, bad, f"snapshot block checksum mismatch on {MAX_READ_ATTEMPTS} reads"
    )


def _first_bad_block(data: bytes, crcs: list[int], lo: int) -> int | None:
    view = memoryview(data)
    for k in range(0, len(data), BLOCK_BYTES):
        block = lo + k // BLOCK_BYTES
        if crc32c.crc32c(view[k : k + BLOCK_BYTES]) != crcs[block]:
            return block
    return None


def _encode_meta(meta: SnapshotMeta, crcs: list[int]) -> bytes:
    return codec.packb([FORMAT_VERSION, codec.encode_snapshot_meta(meta), BLOCK_BYTES, crcs])


def _decode_meta(path: str, offset: int, payload: bytes) -> tuple[SnapshotMeta, list[int]]:
    try:
        value: Any = codec.unpackb(payload)
        if type(value) is not list or len(value) != 4:
            raise codec.CodecError("expected [version, meta, block bytes, crcs]")
        version, meta_value, block_bytes, crcs = value
        if version != FORMAT_VERSION or block_bytes != BLOCK_BYTES:
            raise codec.CodecError(f"format {version}/{block_bytes} is not {FORMAT_VERSION}")
        meta = codec.decode_snapshot_meta(meta_value)
        blocks = -(-meta.size_bytes // BLOCK_BYTES)
        if type(crcs) is not list or len(crcs) != blocks:
            raise codec.CodecError(f"expected {blocks} block checksums")
        if not all(type(c) is int and 0 <= c < 1 << 32 for c in crcs):
            raise codec.CodecError("block checksums must be u32")
    except codec.CodecError as exc:
        raise CorruptStorageError(path, offset, f"bad snapshot meta: {exc}") from None
    return meta, crcs
