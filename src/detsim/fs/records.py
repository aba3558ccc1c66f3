"""A durable append-only record file on `detsim.fs`: what Raft logs and snapshots stand on.

Format (little-endian):
    file header   magic b"DSIMREC\\n" (8) | version u32 | crc32c(magic + version) u32
    record        length u32 | crc32c(payload) u32 | crc32c(the 8 bytes before) u32 | payload
The record header has its own checksum, so a header is told from garbage in 12 bytes, before its
length is trusted (the search for valid records after a bad one stays cheap).

Rules:
- A record is durable after `sync()` / `await sync_async()`; append many, sync once.
- A new file is created crash-safely: header written and fsynced, then its directory fsynced,
  so a synced record never vanishes with an undone name. Open fsyncs the file and its directory
  too: after a process crash, what the dead process wrote (and we just read back) may still be
  only in the page cache, and must not be relied on until it is durable.
- Open scans every record. A bad record (incomplete header, length over `MAX_PAYLOAD_BYTES`,
  length past the end of the file, or checksum mismatch) with no valid record anywhere after it
  is a *torn tail* (a write cut by a crash): it is truncated and fsynced, reported in
  `RecordFile.recovery`, a trace event `records.torn_tail` and a log warning. A bad record with
  a valid record after it (searched at every byte offset, so a corrupted length is caught too)
  is *corruption*: `CorruptRecordError` with path and offset; nothing is dropped silently.
  A corrupted *last* record is indistinguishable from a torn write: it is truncated and
  reported; pass `repair=False` to raise instead (e.g. for snapshots, written whole then
  renamed, where any damage is corruption).
- Reads are checked against the checksum written with the data (paired assertion). A failed
  check is re-read (`MAX_READ_ATTEMPTS`) before it counts, so a transient read error never
  becomes a truncation or a false alarm; open re-reads the file and only acts on two agreeing
  reads.
- After a write or fsync error the file refuses further work (`OSError(EIO)`): its state on
  disk is unknown; reopen it to recover.
- Bounds: `MAX_PAYLOAD_BYTES` a record, `MAX_FILE_BYTES` a file (open reads it whole: segment
  longer logs), `MAX_WRITE_BYTES` one write call. The search after a bad record is linear in
  the tail: ~0.03 s a MiB of random or zero bytes, ~0.5 s a MiB at worst (a zero every other
  byte), measured on the dev container.
"""

from __future__ import annotations

import array
import bisect
import dataclasses
import errno
import logging
import os
import re
import struct
from collections.abc import Iterable, Iterator, Sequence
from types import TracebackType
from typing import Self

import crc32c

from detsim.fs import _api, _seam
from detsim.fs._api import DurableFile, PathArg

MAGIC = b"DSIMREC\n"
VERSION = 1
FILE_HEADER = struct.Struct("<8sII")  # magic, version, crc32c(magic + version)
RECORD_HEADER = struct.Struct("<III")  # payload length, crc32c(payload), crc32c(first 8 bytes)
HEADER_BYTES = FILE_HEADER.size  # the offset of the first record
MAX_PAYLOAD_BYTES = 10 * 1024 * 1024
MAX_RECORD_BYTES = RECORD_HEADER.size + MAX_PAYLOAD_BYTES
MAX_FILE_BYTES = 1 << 30
MAX_WRITE_BYTES = 16 << 20  # appends are written in calls of at most this many bytes
MAX_READ_ATTEMPTS = 3  # reads of a region whose checksum fails, before it counts

# The search for a valid record after a bad one only stops where a length's high byte is zero.
assert MAX_PAYLOAD_BYTES < 1 << 24
_ZERO_RECORD_HEADER = bytes(RECORD_HEADER.size)  # never valid: its header checksum is not 0
_NONZERO = re.compile(rb"[^\x00]")

_log = logging.getLogger(__name__)


class CorruptRecordError(Exception):
    """The file holds damaged data that is not a torn tail: a bad record with valid ones after
    it, a bad header, or a record that fails its checksum on every read."""

    def __init__(self, path: str, offset: int, reason: str) -> None:
        super().__init__(f"{path}: corrupt record file at offset {offset}: {reason}")
        self.path = path
        self.offset = offset
        self.reason = reason


class RecordTooLargeError(ValueError):
    """A payload over MAX_PAYLOAD_BYTES."""


@dataclasses.dataclass(frozen=True, slots=True)
class Record:
    offset: int  # where the record starts: give it to `read` or `truncate_at`
    payload: bytes


@dataclasses.dataclass(frozen=True, slots=True)
class Recovery:
    """What open found."""

    records: int  # valid records kept
    end_offset: int  # where the next record goes
    torn_offset: int | None  # where a torn tail started (and the file now ends), or None
    torn_bytes: int  # bytes truncated
    created: bool  # the file did not exist (or held only a torn header) and was initialised


def _header() -> bytes:
    version = struct.pack("<I", VERSION)
    return FILE_HEADER.pack(MAGIC, VERSION, crc32c.crc32c(MAGIC + version))


def _record_header(length: int, payload_crc: int) -> bytes:
    head = struct.pack("<II", length, payload_crc)
    return head + struct.pack("<I", crc32c.crc32c(head))


def encode(payload: bytes) -> bytes:
    """One record: header and payload."""
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise RecordTooLargeError(
            f"record payload of {len(payload)} bytes is over MAX_PAYLOAD_BYTES={MAX_PAYLOAD_BYTES}"
        )
    return _record_header(len(payload), crc32c.crc32c(payload)) + payload


# ----------------------------------------------------------------------------------------------
# Scanning (pure functions of the file's bytes)


def _check_file_header(data: bytes, path: str) -> bool:
    """True if `data` starts with a valid header; False if it is a torn header (a prefix of one,
    possibly empty: nothing was ever synced after it). Anything else raises."""
    expected = _header()
    if len(data) < HEADER_BYTES:
        if expected.startswith(data):
            return False
        raise CorruptRecordError(path, 0, "short file that is not a record file header")
    magic, version, crc = FILE_HEADER.unpack_from(data)
    if magic != MAGIC:
        raise CorruptRecordError(path, 0, f"bad magic {magic!r}: not a detsim record file")
    if crc != crc32c.crc32c(data[:12]):
        raise CorruptRecordError(path, 0, "file header checksum mismatch")
    if version != VERSION:
        raise CorruptRecordError(path, 0, f"unsupported version {version} (this is {VERSION})")
    return True


def _record_end(data: bytes | memoryview, pos: int) -> int | str:
    """The end offset of the valid record at `pos`, or why it is not one."""
    if pos + RECORD_HEADER.size > len(data):
        return "incomplete record header"
    length: int
    payload_crc: int
    header_crc: int
    length, payload_crc, header_crc = RECORD_HEADER.unpack_from(data, pos)
    if crc32c.crc32c(memoryview(data)[pos : pos + 8]) != header_crc:
        return "record header checksum mismatch"
    if length > MAX_PAYLOAD_BYTES:
        return f"length {length} over MAX_PAYLOAD_BYTES"
    end = pos + RECORD_HEADER.size + length
    if end > len(data):
        return f"length {length} points past the end of the file"
    if crc32c.crc32c(memoryview(data)[pos + RECORD_HEADER.size : end]) != payload_crc:
        return "payload checksum mismatch"
    return end


def _valid_record_after(data: bytes, start: int) -> int | None:
    """The first offset >= start holding a valid record, or None. Candidates are found in C:
    only offsets whose length has a zero high byte (`find`), skipping runs of zeros (`re`), and
    each is rejected by its 12-byte header checksum before any payload is read."""
    last = len(data) - RECORD_HEADER.size  # the last offset where a record header fits
    pos = start
    while pos <= last:  # pos strictly increases: at most len(data) rounds
        high = data.find(b"\x00", pos + 3, last + 4)
        if high < 0:
            return None
        pos = high - 3
        if data[pos : pos + RECORD_HEADER.size] == _ZERO_RECORD_HEADER:
            nonzero = _NONZERO.search(data, pos)
            if nonzero is None:
                return None
            pos = max(pos + 1, nonzero.start() - RECORD_HEADER.size + 1)
            continue
        if isinstance(_record_end(data, pos), int):
            return pos
        pos += 1
    return None


@dataclasses.dataclass(frozen=True, slots=True)
class _Scan:
    offsets: list[int]
    payloads: list[bytes]
    end: int  # the end of the last valid record
    bad_reason: str | None  # why the record at `end` is bad, if the file goes on past it


def _scan(data: bytes) -> _Scan:
    offsets: list[int] = []
    payloads: list[bytes] = []
    pos = HEADER_BYTES
    while pos < len(data):
        end = _record_end(data, pos)
        if isinstance(end, str):
            return _Scan(offsets, payloads, pos, end)
        offsets.append(pos)
        payloads.append(data[pos + RECORD_HEADER.size : end])
        pos = end
    return _Scan(offsets, payloads, pos, None)


# ----------------------------------------------------------------------------------------------
# The file


class RecordFile:
    """An open record file. Create or recover with `RecordFile.open(path)`."""

    def __init__(self, path: str, f: DurableFile, scan: _Scan, recovery: Recovery) -> None:
        self.path = path
        self.recovery = recovery
        # The records found at open, for the caller to take (this object never reads it again:
        # clear it to free the memory).
        self.recovered = [Record(o, p) for o, p in zip(scan.offsets, scan.payloads, strict=True)]
        self._file = f
        self._offsets = array.array("Q", scan.offsets)
        self._end = scan.end
        self._failed = False

    def __repr__(self) -> str:
        return f"<RecordFile {self.path!r} records={len(self._offsets)} end={self._end}>"

    # -- open and recover -----------------------------------------------------------------------

    @classmethod
    def open(cls, path: PathArg, *, create: bool = True, repair: bool = True) -> RecordFile:
        """Open (or, with create, make) a record file; recover a torn tail (or, with
        repair=False, raise CorruptRecordError for it). Raises CorruptRecordError on corruption."""
        p = os.fspath(path)
        if not _api.exists(p):
            if not create:
                raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), p)
            _create(p)
            return cls(p, _api.open(p, "r+b"), _Scan([], [], HEADER_BYTES, None), _fresh(0))
        f = _api.open(p, "r+b")
        try:
            rf = cls._recover(p, f, repair)
            # What a killed process wrote may still be only in the page cache, and its name only
            # in the volatile directory: make what we just read durable before anyone relies on it.
            f.fsync()
            _api.fsync_dir(_parent_dir(p))
        except BaseException:
            f.close()
            raise
        return rf

    @classmethod
    def _recover(cls, path: str, f: DurableFile, repair: bool) -> RecordFile:
        data = _read_stable(f, path)
        if not _check_file_header(data, path):
            _initialise(f, path)  # torn at creation: no record was ever synced
            return cls(path, f, _Scan([], [], HEADER_BYTES, None), _fresh(len(data)))
        scan = _scan(data)
        if scan.bad_reason is None:
            return cls(path, f, scan, Recovery(len(scan.offsets), scan.end, None, 0, False))
        follower = _valid_record_after(data, scan.end + 1)
        if follower is not None:
            raise CorruptRecordError(
                path, scan.end, f"{scan.bad_reason}, and a valid record follows at {follower}"
            )
        if not repair:
            raise CorruptRecordError(path, scan.end, f"torn tail: {scan.bad_reason}")
        torn_bytes = len(data) - scan.end
        f.truncate(scan.end)
        f.fsync()
        _seam.event("records.torn_tail", path=path, offset=scan.end, dropped_bytes=torn_bytes)
        _log.warning(
            "%s: truncated a torn tail of %d bytes at offset %d (%s)",
            path,
            torn_bytes,
            scan.end,
            scan.bad_reason,
        )
        recovery = Recovery(len(scan.offsets), scan.end, scan.end, torn_bytes, False)
        return cls(path, f, scan, recovery)

    # -- state ----------------------------------------------------------------------------------

    @property
    def end_offset(self) -> int:
        """Where the next record goes (the file's size)."""
        return self._end

    @property
    def offsets(self) -> Sequence[int]:
        """The offset of every record, in order."""
        return self._offsets

    def __len__(self) -> int:
        return len(self._offsets)

    def _usable(self) -> DurableFile:
        if self._file.closed:
            raise ValueError(f"{self.path}: record file is closed")
        if self._failed:
            raise OSError(
                errno.EIO, "an earlier write or fsync failed; reopen to recover", self.path
            )
        return self._file

    # -- writing --------------------------------------------------------------------------------

    def append(self, payload: bytes) -> int:
        """Write one record (not yet durable: `sync`); returns its offset."""
        return self.append_many([payload])[0]

    def append_many(self, payloads: Iterable[bytes]) -> list[int]:
        """Write records in as few write calls as MAX_WRITE_BYTES allows; returns their offsets.
        On an error nothing of this call is kept and the error is raised."""
        f = self._usable()
        encoded = [encode(p) for p in payloads]  # RecordTooLargeError before any write
        offsets: list[int] = []
        pos = self._end
        for record in encoded:
            offsets.append(pos)
            pos += len(record)
        if pos > MAX_FILE_BYTES:
            raise OSError(
                errno.EFBIG, f"record file over MAX_FILE_BYTES={MAX_FILE_BYTES}", self.path
            )
        try:
            f.seek(self._end)
            for chunk in _chunks(encoded):
                f.write(chunk)
        except BaseException:
            self._undo_partial_write(f)
            raise
        self._offsets.extend(offsets)
        self._end = pos
        return offsets

    def _undo_partial_write(self, f: DurableFile) -> None:
        try:
            f.truncate(self._end)
        except OSError:
            self._failed = True

    def truncate_at(self, offset: int) -> None:
        """Drop the record at `offset` and every record after it (Raft log conflict). Durable
        after `sync`; `offset` must be a record's offset or `end_offset`."""
        f = self._usable()
        if offset != self._end:
            self._index_of(offset)
        try:
            f.truncate(offset)
        except OSError:
            self._failed = True
            raise
        del self._offsets[bisect.bisect_left(self._offsets, offset) :]
        self._end = offset

    def sync(self) -> None:
        """Make every appended record (and truncation) durable."""
        f = self._usable()
        try:
            f.fsync()
        except OSError:
            self._failed = True  # after a failed fsync the kernel may have dropped the pages
            raise

    async def sync_async(self) -> None:
        """`sync` that waits off the event loop (real) or `fsync_latency` (simulated)."""
        f = self._usable()
        try:
            await f.fsync_async()
        except OSError:
            self._failed = True
            raise

    # -- reading --------------------------------------------------------------------------------

    def _index_of(self, offset: int) -> int:
        i = bisect.bisect_left(self._offsets, offset)
        if i == len(self._offsets) or self._offsets[i] != offset:
            raise ValueError(f"{self.path}: no record starts at offset {offset}")
        return i

    def read(self, offset: int) -> bytes:
        """The payload of the record at `offset`, checked against its checksum."""
        i = self._index_of(offset)
        end = self._offsets[i + 1] if i + 1 < len(self._offsets) else self._end
        return self._read_record(offset, end)

    def iter_records(self, start: int = HEADER_BYTES) -> Iterator[Record]:
        """Every record from `start` (a record's offset) on, read back and checked."""
        i = self._index_of(start) if start != self._end else len(self._offsets)
        for j in range(i, len(self._offsets)):
            offset = self._offsets[j]
            end = self._offsets[j + 1] if j + 1 < len(self._offsets) else self._end
            yield Record(offset, self._read_record(offset, end))

    def _read_record(self, offset: int, end: int) -> bytes:
        f = self._usable()
        reason = ""
        for _ in range(MAX_READ_ATTEMPTS):
            f.seek(offset)
            data = f.read(end - offset)
            result = _record_end(data, 0)
            if result == len(data):
                return data[RECORD_HEADER.size :]
            reason = result if isinstance(result, str) else "length disagrees with the index"
        raise CorruptRecordError(self.path, offset, f"{reason} on {MAX_READ_ATTEMPTS} reads")

    # -- closing --------------------------------------------------------------------------------

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _fresh(torn_bytes: int) -> Recovery:
    torn_offset = 0 if torn_bytes else None
    return Recovery(0, HEADER_BYTES, torn_offset, torn_bytes, True)


def _chunks(records: list[bytes]) -> Iterator[bytes]:
    """Join records into writes of at most MAX_WRITE_BYTES (one record may be alone in one)."""
    batch: list[bytes] = []
    size = 0
    for record in records:
        if batch and size + len(record) > MAX_WRITE_BYTES:
            yield b"".join(batch)
            batch, size = [], 0
        batch.append(record)
        size += len(record)
    if batch:
        yield b"".join(batch)


def _create(path: str) -> None:
    """A new file with a durable header and a durable name."""
    with _api.open(path, "xb") as f:
        f.write(_header())
        f.fsync()
    _api.fsync_dir(_parent_dir(path))


def _parent_dir(path: str) -> str:
    return os.path.dirname(path) or "."


def _initialise(f: DurableFile, path: str) -> None:
    f.truncate(0)
    f.seek(0)
    f.write(_header())
    f.fsync()
    _seam.event("records.torn_header", path=path)
    _log.warning("%s: rewrote a torn file header (no record had been written)", path)


def _read_all(f: DurableFile, path: str) -> bytes:
    f.seek(0, os.SEEK_END)
    size = f.tell()
    if size > MAX_FILE_BYTES:
        raise CorruptRecordError(path, 0, f"{size} bytes is over MAX_FILE_BYTES={MAX_FILE_BYTES}")
    f.seek(0)
    return f.read(size)


def _read_stable(f: DurableFile, path: str) -> bytes:
    """The file's bytes; when they do not scan clean, read until two reads agree, so a transient
    read error never becomes a truncation."""
    data = _read_all(f, path)
    for _ in range(MAX_READ_ATTEMPTS):
        if _clean(data, path):
            return data
        again = _read_all(f, path)
        if again == data:
            return data
        data = again
    raise CorruptRecordError(path, 0, f"{MAX_READ_ATTEMPTS} reads of the file disagree")


def _clean(data: bytes, path: str) -> bool:
    try:
        return _check_file_header(data, path) and _scan(data).bad_reason is None
    except CorruptRecordError:
        return False
