"""The Raft log and hard state on disk, write-ahead-log style: `log/seg-<generation>-<first>.rec`.

Owns the log's files, the index -> (segment, record) mapping and the hard state (term, vote,
commit); nothing else writes them.

Records (each a record of `detsim.fs.records`): `E` + an entry (`codec.pack_entry`), or `H` +
msgpack `[seq, term, vote, commit]`, a hard state. Keeping the hard state in the same file as
the entries makes a sync one fsync (group commit), and since a file survives a crash as a prefix
of its writes, a durable `H` never covers entries that are not durable before it.

Rules:
- Entries run contiguously from a segment's `first` index; the latest hard state is the `H` with
  the highest `seq`. Every segment starts with an `H` (the state at its creation), so removing
  older segments never loses the hard state. `sync()` appends an `H` if the state changed, after
  the entries of the batch, then fsyncs each written segment once. `write_hard_state()` appends
  the `H` without fsync (a state that only moves the commit index); the next sync makes it
  durable, and as a file survives as a prefix, it still never covers entries not durable.
- Appends go to the last segment; past `SEGMENT_MAX_BYTES` a new one is started and the full
  one is fsynced first, so only the last segment can have a torn tail.
- A conflict (an append at an index <= the last) truncates the segment holding that index and
  removes later ones, durably at once (a removed segment must never come back after a crash to
  extend the log with stale entries); the current hard state is then written again, in case its
  last `H` was cut.
- A generation groups the segments of one log. Replacing the whole log (an installed snapshot)
  starts a new generation: its first segment (holding the hard state) is made durable before the
  old generation's files are removed, so a crash leaves the old log or the new one, and load
  ignores (and removes) every generation but the newest.
- Compaction removes segments whose entries are all at or below the snapshot index, never the
  last one (it holds the hard state): if it would be, a new segment is started first.
- Load: a torn tail of the last segment whose first lost entry is above the commit index is
  truncated (the record file logs it); at or below it, or in an earlier segment, it is
  corruption. Mid-file corruption is always an error (an entry may have been acknowledged to a
  leader even if it is not committed here). A gap below the commit index is corruption; above
  it, the entries after the gap are dropped. Terms must never decrease. Load ends by writing the
  hard state to the last segment and fsyncing it.
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
from detsim.raft.core.messages import Entry, HardState
from detsim.raft.storage._common import CorruptStorageError, prefix_payloads

SEGMENT_MAX_BYTES: Final = 64 * 1024 * 1024
MAX_SEGMENTS: Final = 10_000
ENTRY_TAG: Final = b"E"
STATE_TAG: Final = b"H"
_NAME = re.compile(r"^seg-(\d{10})-(\d{20})\.rec$")

_log = logging.getLogger(__name__)


def segment_name(generation: int, first_index: int) -> str:
    return f"seg-{generation:010d}-{first_index:020d}.rec"


@dataclasses.dataclass(slots=True)
class _Segment:
    generation: int
    first_index: int
    path: str
    file: RecordFile
    entry_offsets: list[int]  # the offset of each entry record, in index order

    @property
    def count(self) -> int:
        return len(self.entry_offsets)

    @property
    def last_index(self) -> int:
        return self.first_index + len(self.entry_offsets) - 1


@dataclasses.dataclass(slots=True)
class _Loaded:
    """What the records of the segments read so far say."""

    entries: list[Entry] = dataclasses.field(default_factory=list)
    state: HardState = dataclasses.field(default_factory=HardState)
    seq: int = -1


class SegmentedLog:
    """The log's segments in one directory. Call `load` once before anything else."""

    def __init__(self, directory: str, segment_max_bytes: int = SEGMENT_MAX_BYTES) -> None:
        assert segment_max_bytes > 0
        self.directory = directory
        self.segment_max_bytes = segment_max_bytes
        self._segments: list[_Segment] = []
        self._generation = 0
        self._base = 0  # the index just before the first logical entry (the snapshot index)
        self._dirty: list[_Segment] = []  # written since the last sync, in order
        self._state = HardState()  # the latest state written to a segment
        self._seq = -1  # its H record's seq
        self._pending: HardState | None = None  # given, written at the next sync

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

    @property
    def hard_state(self) -> HardState:
        """The latest hard state given (durable after `sync`)."""
        return self._pending if self._pending is not None else self._state

    def set_hard_state(self, state: HardState) -> None:
        self._pending = state

    def _locate(self, index: int) -> tuple[_Segment, int]:
        """The segment holding `index`, and the entry's position in it."""
        assert self._base < index <= self.last_index, (index, self._base, self.last_index)
        firsts = [s.first_index for s in self._segments]
        k = bisect.bisect_right(firsts, index) - 1
        while self._segments[k].count == 0:  # an entry-less segment shares its first index
            k -= 1
        return self._segments[k], index - self._segments[k].first_index

    # -- load -----------------------------------------------------------------------------------

    def load(self, *, snapshot_index: int, snapshot_term: int) -> tuple[HardState, list[Entry]]:
        """Open and check the newest generation's segments; return the hard state and the
        entries after the snapshot."""
        found = self._segment_files()
        newest = max((gen for gen, _, _ in found), default=0)
        stale = [path for gen, _, path in found if gen < newest]
        current = [(first, path) for gen, first, path in found if gen == newest]
        self._generation = newest
        # First every segment (the latest hard state may be in any of them), then contiguity.
        loaded = _Loaded()
        opened: list[tuple[_Segment, list[Entry]]] = []
        for k, (first, path) in enumerate(current):
            before = len(loaded.entries)
            seg = self._open_segment(first, path, k == len(current) - 1, loaded, snapshot_index)
            opened.append((seg, loaded.entries[before:]))
        self._state, self._seq = loaded.state, loaded.seq
        entries: list[Entry] = []
        dropped: list[_Segment] = []
        for k, (seg, seg_entries) in enumerate(opened):
            expected = entries[-1].index + 1 if entries else None
            if expected is not None and seg.first_index != expected:
                self._gap(seg.path, expected, seg.first_index, self._state.commit, snapshot_index)
                dropped = [s for s, _ in opened[k:]]
                break
            self._segments.append(seg)
            entries.extend(seg_entries)
        kept = self._reconcile_snapshot(entries, snapshot_index, snapshot_term)
        self._base = snapshot_index
        if not self._segments:
            self._start_segment(snapshot_index + 1)
        commit = self._state.commit
        if commit > max(self.last_index, snapshot_index):
            raise CorruptStorageError(
                self._segments[-1].path,
                0,
                f"commit index {commit} but the log ends at {self.last_index} "
                f"(snapshot at {snapshot_index}): committed entries are missing",
            )
        # The hard state into the last segment we keep, durably, before anything is removed.
        self._write_state(self._segments[-1], self._state)
        self._segments[-1].file.sync()
        self._dirty.clear()
        for seg in dropped:
            seg.file.close()
        self._remove_files(stale + [seg.path for seg in dropped])
        self._drop_covered_segments()
        return self._state, kept

    def _segment_files(self) -> list[tuple[int, int, str]]:
        found: list[tuple[int, int, str]] = []
        for name in fs.listdir(self.directory):
            match = _NAME.match(name)
            if name.endswith(".rec.tmp"):  # a new generation cut before its rename
                fs.remove(os.path.join(self.directory, name))
                continue
            if match is None:
                _log.warning("%s: ignoring unknown file %r", self.directory, name)
                continue
            path = os.path.join(self.directory, name)
            found.append((int(match.group(1)), int(match.group(2)), path))
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
        self, first: int, path: str, is_last: bool, loaded: _Loaded, snapshot_index: int
    ) -> _Segment:
        try:
            rf = RecordFile.open(path, create=False, repair=False)
        except CorruptRecordError as exc:
            if not exc.reason.startswith("torn tail"):
                raise  # mid-file corruption: names the file and offset
            if not is_last:
                raise CorruptStorageError(
                    path, exc.offset, f"torn tail in a segment that is not the last: {exc.reason}"
                ) from None
            # What would the truncation drop? Read the valid prefix (without changing anything).
            probe = dataclasses.replace(loaded, entries=list(loaded.entries))
            _parse(path, first, prefix_payloads(path, exc.offset), probe)
            lost = probe.entries[-1].index + 1 if probe.entries else first
            if snapshot_index < lost <= probe.state.commit:
                raise CorruptStorageError(
                    path,
                    exc.offset,
                    f"entry {lost} is damaged and committed (commit index "
                    f"{probe.state.commit}): {exc.reason}",
                ) from None
            rf = RecordFile.open(path, create=False, repair=True)  # truncates, logs
        try:
            records_ = [(r.offset, r.payload) for r in rf.recovered]
            rf.recovered.clear()
            offsets = _parse(path, first, records_, loaded)
        except BaseException:
            rf.close()
            raise
        return _Segment(self._generation, first, path, rf, offsets)

    def _reconcile_snapshot(
        self, entries: list[Entry], snapshot_index: int, snapshot_term: int
    ) -> list[Entry]:
        """The entries after the snapshot, if the log agrees with it; else a new generation
        without them (an installed snapshot replaces the log: a crash may have come between)."""
        if snapshot_index == 0:
            return entries
        first = entries[0].index if entries else snapshot_index + 1
        if entries and first <= snapshot_index <= entries[-1].index:
            if entries[snapshot_index - first].term == snapshot_term:
                return entries[snapshot_index - first + 1 :]
        elif first == snapshot_index + 1:
            return entries
        commit = self._state.commit
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
        """Remove segments whose entries are all at or below the base (compacted). The last
        segment holds the hard state: when it is covered too, a new one is started first."""
        last = self._segments[-1]
        if last.first_index <= self._base and (last.count == 0 or last.last_index <= self._base):
            fresh = self._start_segment(self._base + 1)
            fresh.file.sync()  # its state record must stick before the old ones go
            self._dirty = [s for s in self._dirty if s is not fresh]
        covered = [
            s
            for s in self._segments[:-1]
            if s.first_index <= self._base and (s.count == 0 or s.last_index <= self._base)
        ]
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
        seg = self._segments[-1]
        assert seg.first_index + seg.count == first, (seg.path, seg.count, first)
        pending: list[bytes] = []
        pending_bytes = 0
        for entry in entries:
            payload = ENTRY_TAG + codec.pack_entry(entry)
            size = records.RECORD_HEADER.size + len(payload)
            full = seg.file.end_offset + pending_bytes + size > self.segment_max_bytes
            if full and (seg.count or pending):
                self._write_entries(seg, pending)
                pending, pending_bytes = [], 0
                seg = self._rotate(entry.index)
            pending.append(payload)
            pending_bytes += size
        self._write_entries(seg, pending)

    def _write_entries(self, seg: _Segment, payloads: list[bytes]) -> None:
        if payloads:
            seg.entry_offsets.extend(seg.file.append_many(payloads))
            self._mark_dirty(seg)

    def _write_state(self, seg: _Segment, state: HardState) -> None:
        self._seq += 1
        seg.file.append(STATE_TAG + codec.packb([self._seq, *codec.encode_hard_state(state)]))
        self._state = state
        self._mark_dirty(seg)

    def _mark_dirty(self, seg: _Segment) -> None:
        if seg not in self._dirty:
            self._dirty.append(seg)

    def _rotate(self, first_index: int) -> _Segment:
        """Start a new segment; the full one is made durable first (see the header)."""
        full = self._segments[-1]
        full.file.sync()
        self._dirty = [s for s in self._dirty if s is not full]
        return self._start_segment(first_index)

    def _start_segment(self, first_index: int, *, atomic: bool = False) -> _Segment:
        """A new last segment of this generation, starting with the current hard state. With
        `atomic`, it is written under a temporary name, fsynced and renamed into place: the
        first segment of a generation never exists without its state record."""
        if len(self._segments) >= MAX_SEGMENTS:
            raise OSError(
                errno.ENOSPC,
                f"{self.directory}: over MAX_SEGMENTS={MAX_SEGMENTS} log segments "
                "(is the log being compacted?)",
            )
        path = os.path.join(self.directory, segment_name(self._generation, first_index))
        assert all(s.path != path for s in self._segments), path
        if fs.exists(path):  # an empty leftover of a crashed rotation that load dropped
            fs.remove(path)
        if atomic:
            tmp = path + ".tmp"
            if fs.exists(tmp):
                fs.remove(tmp)
            with RecordFile.open(tmp) as rf:
                rf.append(
                    STATE_TAG + codec.packb([self._seq + 1, *codec.encode_hard_state(self._state)])
                )
                rf.sync()
            self._seq += 1
            fs.rename(tmp, path)
            fs.fsync_dir(self.directory)
            seg = _Segment(self._generation, first_index, path, RecordFile.open(path), [])
            seg.file.recovered.clear()
            self._segments.append(seg)
            return seg
        seg = _Segment(self._generation, first_index, path, RecordFile.open(path), [])
        assert len(seg.file) == 0, path
        self._segments.append(seg)
        self._write_state(seg, self._state)
        return seg

    def _truncate_from(self, index: int) -> None:
        seg, position = self._locate(index)
        k = self._segments.index(seg)
        doomed = self._segments[k + 1 :]
        seg.file.truncate_at(seg.entry_offsets[position])
        del seg.entry_offsets[position:]
        self._segments = self._segments[: k + 1]
        self._close_and_remove(doomed)
        self._write_state(seg, self._state)  # its last H record may have been cut

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
        """Replace the whole log by an empty one after `base_index`: a new generation whose
        first segment is durable before the old one is removed (see the header)."""
        doomed, self._segments = self._segments, []
        self._generation += 1
        self._base = base_index
        self._start_segment(base_index + 1, atomic=True)
        self._dirty = []
        self._close_and_remove(doomed)

    def _close_and_remove(self, doomed: Sequence[_Segment]) -> None:
        """Close and remove segments; the removal is durable when this returns."""
        for seg in doomed:
            seg.file.close()
        self._dirty = [s for s in self._dirty if s not in doomed]
        self._remove_files([seg.path for seg in doomed])

    def _remove_files(self, paths: list[str]) -> None:
        for path in paths:
            fs.remove(path)
        if paths:
            fs.fsync_dir(self.directory)

    def write_hard_state(self) -> None:
        """Write the given hard state now, not durable: the next `sync` fsyncs it (a crash may
        keep it or not, as any write). For a state that only moves the commit index (etcd's
        MustSync is false): the commit index is volatile in Raft, a restart relearns it."""
        pending, self._pending = self._pending, None
        if pending is not None and pending != self._state:
            self._write_state(self._segments[-1], pending)

    async def sync(self) -> None:
        """Write the hard state if it changed (after this batch's entries), then make every
        write since the last sync durable: one fsync per segment written (usually one)."""
        pending, self._pending = self._pending, None
        if pending is not None and pending != self._state:
            self._write_state(self._segments[-1], pending)
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
            for offset in seg.entry_offsets[position : position + hi - index]:
                payload = seg.file.read(offset)
                out.append(_decode_entry(seg.path, offset, payload[len(ENTRY_TAG) :]))
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


def _parse(path: str, first: int, payloads: list[tuple[int, bytes]], loaded: _Loaded) -> list[int]:
    """Add a segment's records to `loaded`; return its entry offsets. Checks contiguity and
    that terms never decrease."""
    offsets: list[int] = []
    for offset, payload in payloads:
        tag, body = payload[:1], payload[1:]
        if tag == ENTRY_TAG:
            entry = _decode_entry(path, offset, body)
            expected = first + len(offsets)
            if entry.index != expected:
                raise CorruptStorageError(path, offset, f"entry {entry.index}, expected {expected}")
            previous = loaded.entries[-1] if loaded.entries else None
            if previous is not None and entry.term < previous.term:
                raise CorruptStorageError(
                    path, offset, f"entry {entry.index} has term {entry.term} < {previous.term}"
                )
            loaded.entries.append(entry)
            offsets.append(offset)
        elif tag == STATE_TAG:
            seq, state = _decode_state(path, offset, body)
            if seq > loaded.seq:
                loaded.seq, loaded.state = seq, state
        else:
            raise CorruptStorageError(path, offset, f"unknown record tag {tag!r}")
    return offsets


def _decode_entry(path: str, offset: int, body: bytes) -> Entry:
    try:
        return codec.unpack_entry(body)
    except codec.CodecError as exc:
        raise CorruptStorageError(path, offset, f"undecodable entry: {exc}") from None


def _decode_state(path: str, offset: int, body: bytes) -> tuple[int, HardState]:
    try:
        value = codec.unpackb(body)
        if type(value) is not list or len(value) != 4:
            raise codec.CodecError("expected [seq, term, vote, commit]")
        seq = value[0]
        if type(seq) is not int or seq < 0:
            raise codec.CodecError(f"bad seq {seq!r}")
        return seq, codec.decode_hard_state(value[1:])
    except codec.CodecError as exc:
        raise CorruptStorageError(path, offset, f"undecodable hard state: {exc}") from None
