"""The Raft log on disk: entries in segment record files, `log/seg-<first index>.rec`.

Owns the log's files and the index -> (segment, record) mapping; nothing else writes them.

Rules:
- One record per entry (`codec.pack_entry`), in index order; a segment's name is the index of its
  first record, so the files alone say where every entry is.
- Appends go to the last segment; past `SEGMENT_MAX_BYTES` a new one is started, and the full one
  is fsynced first, so that only the *last* segment can ever have a torn tail (a torn tail in an
  earlier segment is corruption). Starting a segment (and removing one) fsyncs the directory.
- Entries are durable after `sync()` (one fsync per segment written since the last sync).
- Appending at an index <= the last one replaces the suffix from there (a Raft conflict): the
  segment holding it is truncated, later segments are removed and the removal made durable at
  once, so a removed segment can never come back after a crash to extend the log with stale
  entries.
- Compaction removes whole segments whose entries are all at or below the snapshot index; the
  log's logical start (`base`, the snapshot index) may fall inside the first segment.
- Load: a torn tail of the last segment above the commit index is truncated (the record file
  logs it); at or below the commit index, or in any earlier segment, it is corruption. Mid-file
  corruption is always an error (the entry may have been acknowledged to a leader even if it is
  not committed here). A gap in the indexes below the commit index is corruption; above it, the
  entries after the gap are dropped (they were never acknowledged: see the rotation rule).
  Indexes must run contiguously inside a segment and terms must never decrease.
- Bounds: `SEGMENT_MAX_BYTES` a segment (rotation), `MAX_SEGMENTS` segments (past it, appends
  fail with ENOSPC: compaction is not keeping up).
"""

from __future__ import annotations

import bisect
import dataclasses
import errno
import logging
import os
import re
from collections.abc import Sequence
from typing import Final

from detsim import fs
from detsim.fs import records
from detsim.fs.records import CorruptRecordError, RecordFile
from detsim.raft import codec
from detsim.raft.core.messages import Entry
from detsim.raft.storage._common import CorruptStorageError, count_records

SEGMENT_MAX_BYTES: Final = 64 * 1024 * 1024
MAX_SEGMENTS: Final = 10_000
_NAME = re.compile(r"^seg-(\d{20})\.rec$")

_log = logging.getLogger(__name__)


def segment_name(first_index: int) -> str:
    return f"seg-{first_index:020d}.rec"


@dataclasses.dataclass(slots=True)
class _Segment:
    first_index: int
    path: str
    file: RecordFile

    @property
    def count(self) -> int:
        return len(self.file)

    @property
    def last_index(self) -> int:
        return self.first_index + len(self.file) - 1


class SegmentedLog:
    """The log's segments in one directory. Call `load` once before anything else."""

    def __init__(self, directory: str, segment_max_bytes: int = SEGMENT_MAX_BYTES) -> None:
        assert segment_max_bytes > 0
        self.directory = directory
        self.segment_max_bytes = segment_max_bytes
        self._segments: list[_Segment] = []
        self._base = 0  # the index just before the first logical entry (the snapshot index)
        self._dirty: list[_Segment] = []  # written since the last sync, in order

    # -- state ----------------------------------------------------------------------------------

    @property
    def base_index(self) -> int:
        return self._base

    @property
    def last_index(self) -> int:
        """The last index in the log, or `base_index` when it holds no entry after it."""
        for seg in reversed(self._segments):
            if seg.count:
                return max(self._base, seg.last_index)
        return self._base

    @property
    def segment_count(self) -> int:
        return len(self._segments)

    def _locate(self, index: int) -> tuple[_Segment, int]:
        """The segment holding `index`, and the record's position in it."""
        assert self._base < index <= self.last_index, (index, self._base, self.last_index)
        firsts = [s.first_index for s in self._segments]
        seg = self._segments[bisect.bisect_right(firsts, index) - 1]
        return seg, index - seg.first_index

    # -- load -----------------------------------------------------------------------------------

    def load(self, *, commit: int, snapshot_index: int, snapshot_term: int) -> list[Entry]:
        """Open every segment, check it, and return the entries after the snapshot."""
        found = self._segment_files()
        entries: list[Entry] = []
        for k, (first, path) in enumerate(found):
            expected = entries[-1].index + 1 if entries else None
            if expected is not None and first != expected:
                self._gap(path, expected, first, commit, snapshot_index)
                self._remove_files([p for _, p in found[k:]])
                break
            is_last = k == len(found) - 1
            seg, seg_entries = self._open_segment(first, path, is_last, commit, snapshot_index)
            _check_terms(path, entries[-1] if entries else None, seg_entries)
            entries.extend(seg_entries)
            self._segments.append(seg)
        self._base = 0
        kept = self._reconcile_snapshot(entries, snapshot_index, snapshot_term, commit)
        self._base = snapshot_index
        self._drop_covered_segments()
        if commit > max(self.last_index, snapshot_index):
            raise CorruptStorageError(
                self.directory,
                0,
                f"commit index {commit} but the log ends at {self.last_index} "
                f"(snapshot at {snapshot_index}): committed entries are missing",
            )
        return kept

    def _segment_files(self) -> list[tuple[int, str]]:
        found: list[tuple[int, str]] = []
        for name in fs.listdir(self.directory):
            match = _NAME.match(name)
            if match is None:
                _log.warning("%s: ignoring unknown file %r", self.directory, name)
                continue
            found.append((int(match.group(1)), os.path.join(self.directory, name)))
        found.sort()
        if len(found) > MAX_SEGMENTS:
            raise CorruptStorageError(
                self.directory, 0, f"{len(found)} segments, over MAX_SEGMENTS={MAX_SEGMENTS}"
            )
        return found

    def _gap(self, path: str, expected: int, first: int, commit: int, snapshot_index: int) -> None:
        """Entries [expected, first) are missing; raise if any of them was committed."""
        if first < expected:
            raise CorruptStorageError(path, 0, f"segment starts at {first}, overlapping {expected}")
        if expected <= commit and first - 1 > snapshot_index:
            raise CorruptStorageError(
                path,
                0,
                f"entries {expected}..{first - 1} are missing below the commit index {commit}",
            )
        _log.warning(
            "%s: entries %d..%d are missing (never synced); dropping the log from %d on",
            self.directory,
            expected,
            first - 1,
            first,
        )

    def _open_segment(
        self, first: int, path: str, is_last: bool, commit: int, snapshot_index: int
    ) -> tuple[_Segment, list[Entry]]:
        try:
            rf = RecordFile.open(path, create=False, repair=False)
        except CorruptRecordError as exc:
            if not exc.reason.startswith("torn tail"):
                raise  # mid-file corruption: names the file and offset
            lost = first + count_records(path, exc.offset)
            if not is_last:
                raise CorruptStorageError(
                    path, exc.offset, f"torn tail in a segment that is not the last: {exc.reason}"
                ) from None
            if snapshot_index < lost <= commit:
                raise CorruptStorageError(
                    path,
                    exc.offset,
                    f"entry {lost} is damaged and committed (commit index {commit}): {exc.reason}",
                ) from None
            rf = RecordFile.open(path, create=False, repair=True)  # truncates, logs
        entries: list[Entry] = []
        for position, record in enumerate(rf.recovered):
            entry = _decode(path, record.offset, record.payload)
            if entry.index != first + position:
                rf.close()
                raise CorruptStorageError(
                    path, record.offset, f"entry index {entry.index}, expected {first + position}"
                )
            entries.append(entry)
        rf.recovered.clear()
        return _Segment(first, path, rf), entries

    def _reconcile_snapshot(
        self, entries: list[Entry], snapshot_index: int, snapshot_term: int, commit: int
    ) -> list[Entry]:
        """The entries after the snapshot, if the log agrees with it; else discard the log (an
        installed snapshot replaces it: a crash may have come between the two)."""
        if snapshot_index == 0:
            return entries
        first = entries[0].index if entries else snapshot_index + 1
        if entries and first <= snapshot_index <= entries[-1].index:
            if entries[snapshot_index - first].term == snapshot_term:
                return entries[snapshot_index - first + 1 :]
        elif first == snapshot_index + 1:
            return entries
        if entries and entries[-1].index > snapshot_index:
            if commit > snapshot_index and first > snapshot_index + 1:
                raise CorruptStorageError(
                    self._segments[0].path,
                    0,
                    f"log starts at {first}, after the snapshot at {snapshot_index}, below "
                    f"the commit index {commit}",
                )
            _log.warning(
                "%s: log disagrees with the snapshot at %d (term %d): discarded",
                self.directory,
                snapshot_index,
                snapshot_term,
            )
        self.discard_all(snapshot_index)
        return []

    def _drop_covered_segments(self) -> None:
        """Remove segments whose entries are all at or below the base (compacted), and empty
        ones (a crash right after a rotation leaves one; the next append starts afresh)."""
        covered = [s for s in self._segments if s.count == 0 or s.last_index <= self._base]
        if covered:
            self._segments = [s for s in self._segments if s not in covered]
            self._close_and_remove(covered)

    # -- writing --------------------------------------------------------------------------------

    def append(self, entries: Sequence[Entry]) -> None:
        """Append entries (contiguous); from an index <= last_index, replace the suffix there.
        Durable after `sync`."""
        if not entries:
            return
        first = entries[0].index
        for k, entry in enumerate(entries):
            if entry.index != first + k:
                raise ValueError(f"entries are not contiguous at {entry.index}")
        if not self._base < first <= self.last_index + 1:
            raise ValueError(
                f"append at {first}: outside ({self._base}, {self.last_index + 1}] of the log"
            )
        if first <= self.last_index:
            self._truncate_from(first)
        seg = self._segments[-1] if self._segments else self._start_segment(first)
        assert seg.first_index + seg.count == first, (seg.path, seg.count, first)
        pending: list[bytes] = []
        pending_bytes = 0
        for entry in entries:
            payload = codec.pack_entry(entry)
            size = records.RECORD_HEADER.size + len(payload)
            full = seg.file.end_offset + pending_bytes + size > self.segment_max_bytes
            if full and (seg.count or pending):
                self._write(seg, pending)
                pending, pending_bytes = [], 0
                seg = self._rotate(entry.index)
            pending.append(payload)
            pending_bytes += size
        self._write(seg, pending)

    def _write(self, seg: _Segment, payloads: list[bytes]) -> None:
        if not payloads:
            return
        seg.file.append_many(payloads)
        if seg not in self._dirty:
            self._dirty.append(seg)

    def _rotate(self, first_index: int) -> _Segment:
        """Start a new segment; the full one is made durable first (see the header)."""
        full = self._segments[-1]
        full.file.sync()
        if full in self._dirty:
            self._dirty.remove(full)
        return self._start_segment(first_index)

    def _start_segment(self, first_index: int) -> _Segment:
        if len(self._segments) >= MAX_SEGMENTS:
            raise OSError(
                errno.ENOSPC,
                f"{self.directory}: over MAX_SEGMENTS={MAX_SEGMENTS} log segments "
                "(is the log being compacted?)",
            )
        path = os.path.join(self.directory, segment_name(first_index))
        seg = _Segment(first_index, path, RecordFile.open(path))  # header and name fsynced
        assert len(seg.file) == 0, path
        self._segments.append(seg)
        return seg

    def _truncate_from(self, index: int) -> None:
        seg, position = self._locate(index)
        k = self._segments.index(seg)
        doomed = self._segments[k + 1 :]
        if position == 0:
            doomed.insert(0, seg)
        else:
            seg.file.truncate_at(seg.file.offsets[position])
            if seg not in self._dirty:
                self._dirty.append(seg)
        self._segments = [s for s in self._segments if s not in doomed]
        self._close_and_remove(doomed)

    def compact(self, index: int) -> None:
        """The snapshot covers the log up to `index`: forget it, remove whole segments."""
        if index <= self._base:
            return
        if index > self.last_index:
            self.discard_all(index)
            return
        self._base = index
        self._drop_covered_segments()

    def discard_all(self, base_index: int) -> None:
        """Remove the whole log; the next append starts at base_index + 1."""
        doomed, self._segments = self._segments, []
        self._close_and_remove(doomed)
        self._base = base_index

    def _close_and_remove(self, doomed: Sequence[_Segment]) -> None:
        """Close and remove segments; the removal is durable when this returns."""
        for seg in doomed:
            seg.file.close()
            if seg in self._dirty:
                self._dirty.remove(seg)
        self._remove_files([seg.path for seg in doomed])

    def _remove_files(self, paths: list[str]) -> None:
        for path in paths:
            fs.remove(path)
        if paths:
            fs.fsync_dir(self.directory)

    async def sync(self) -> None:
        """Make every append and truncation so far durable (one fsync per written segment)."""
        dirty, self._dirty = self._dirty, []
        for seg in dirty:
            await seg.file.sync_async()

    # -- reading --------------------------------------------------------------------------------

    def entries(self, lo: int, hi: int) -> list[Entry]:
        """Entries [lo, hi), read back from disk and checked."""
        if not self._base < lo <= hi <= self.last_index + 1:
            raise ValueError(f"entries [{lo}, {hi}) outside ({self._base}, {self.last_index}]")
        out: list[Entry] = []
        index = lo
        while index < hi:
            seg, position = self._locate(index)
            for offset in seg.file.offsets[position : position + hi - index]:
                out.append(_decode(seg.path, offset, seg.file.read(offset)))
            index = seg.last_index + 1
        return out

    def term_at(self, index: int) -> int | None:
        """The term of the entry at `index`, or None if the log does not hold it."""
        if not self._base < index <= self.last_index:
            return None
        return self.entries(index, index + 1)[0].term

    def close(self) -> None:
        for seg in self._segments:
            seg.file.close()


def _decode(path: str, offset: int, payload: bytes) -> Entry:
    try:
        return codec.unpack_entry(payload)
    except codec.CodecError as exc:
        raise CorruptStorageError(path, offset, f"undecodable entry: {exc}") from None


def _check_terms(path: str, previous: Entry | None, entries: list[Entry]) -> None:
    """Terms never decrease along a Raft log."""
    for entry in entries:
        if previous is not None and entry.term < previous.term:
            raise CorruptStorageError(
                path, 0, f"entry {entry.index} has term {entry.term} < {previous.term} before it"
            )
        previous = entry
