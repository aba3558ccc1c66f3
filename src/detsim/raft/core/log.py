"""The Raft log: the entries after the latest snapshot, and the commit/applied/stable marks.

Owns: the in-memory copy of the log (the core keeps every entry after the snapshot; compaction
bounds it), the snapshot it starts after, `committed`, `applied`, and `unstable_from` (the
first index not yet reported durable by `advance`).

Index layout (etcd `log.go`, simplified: one list, no separate unstable buffer):

    snapshot.index | offset = snapshot.index + 1 ... last_index
    [ compacted   ] [ entries: durable ... | unstable_from ... ]

Rules, asserted:
- entries are contiguous, with non-decreasing terms; `entries[k].index == offset + k`;
- snapshot.index <= applied <= committed <= last_index; committed and applied never decrease;
- nothing at or below `committed` is ever truncated (the Log Matching and Leader Completeness
  properties guarantee a correct peer never asks for it);
- the term of index 0 is 0; the term of a compacted index (below the snapshot) is unknown.
"""

from __future__ import annotations

from collections.abc import Sequence

from detsim.raft.core.messages import ConfState, Entry, SnapshotMeta

#: The empty snapshot a bootstrapped log starts after: index 0, term 0, no members.
EMPTY_SNAPSHOT = SnapshotMeta(index=0, term=0, conf=ConfState((), ()), size_bytes=0)


class RaftLog:
    """The log after `snapshot`; see the module header for its invariants."""

    __slots__ = ("_entries", "applied", "committed", "snapshot", "unstable_from")

    def __init__(
        self, snapshot: SnapshotMeta | None, entries: Sequence[Entry], committed: int, applied: int
    ) -> None:
        self.snapshot = snapshot or EMPTY_SNAPSHOT
        self._entries: list[Entry] = []
        expected = self.snapshot.index + 1
        term = self.snapshot.term
        for entry in entries:
            # Restored entries come from our own storage: a gap is a storage bug.
            assert entry.index == expected, f"restored log not contiguous at {entry.index}"
            assert entry.term >= term, f"restored log term goes back at {entry.index}"
            self._entries.append(entry)
            expected += 1
            term = entry.term
        # The hard state's commit may lag the snapshot (the snapshot covers applied entries),
        # or pass the durable log if a crash hit between writing the hard state and the
        # entries of one Ready. The commit index is volatile state (Figure 2): forgetting part
        # of it is safe, the leader repeats it.
        self.committed = min(max(committed, self.snapshot.index), self.last_index())
        self.applied = max(applied, self.snapshot.index)
        self.unstable_from = self.last_index() + 1  # everything restored is durable
        assert self.applied <= self.committed <= self.last_index(), (
            f"restored marks out of order: applied={self.applied} commit={self.committed} "
            f"last={self.last_index()}"
        )

    # --- queries -------------------------------------------------------------------------

    def offset(self) -> int:
        """Index of the first entry held (snapshot.index + 1)."""
        return self.snapshot.index + 1

    def first_index(self) -> int:
        return self.snapshot.index + 1

    def last_index(self) -> int:
        return self.snapshot.index + len(self._entries)

    def last_term(self) -> int:
        return self._entries[-1].term if self._entries else self.snapshot.term

    def term(self, index: int) -> int | None:
        """Term of the entry at `index`; None if compacted away or past the end."""
        if index == self.snapshot.index:
            return self.snapshot.term
        k = index - self.snapshot.index - 1
        if k < 0 or k >= len(self._entries):
            return None
        return self._entries[k].term

    def match_term(self, index: int, term: int) -> bool:
        return self.term(index) == term

    def entry(self, index: int) -> Entry:
        k = index - self.snapshot.index - 1
        assert 0 <= k < len(self._entries), f"entry {index} not held"
        return self._entries[k]

    def slice(self, lo: int, hi: int, max_bytes: int | None = None) -> list[Entry]:
        """Entries [lo, hi); with `max_bytes`, stop before exceeding it (at least one entry)."""
        assert self.snapshot.index < lo <= hi <= self.last_index() + 1, (lo, hi)
        start, stop = lo - self.offset(), hi - self.offset()
        if max_bytes is None:
            return self._entries[start:stop]
        out: list[Entry] = []
        size_bytes = 0
        for k in range(start, stop):
            size_bytes += self._entries[k].size_bytes()
            if out and size_bytes > max_bytes:
                break
            out.append(self._entries[k])
        return out

    def is_up_to_date(self, last_index: int, last_term: int) -> bool:
        """§5.4.1: a candidate's log is at least as up-to-date as ours."""
        return last_term > self.last_term() or (
            last_term == self.last_term() and last_index >= self.last_index()
        )

    def find_conflict_by_term(self, index: int, term: int) -> tuple[int, int]:
        """The largest index <= `index` whose term is <= `term`, and that term (etcd's
        `findConflictByTerm`). Stops at the snapshot, whose term is the last one known."""
        index = min(index, self.last_index())
        while index > self.snapshot.index:
            entry_term = self.term(index)
            assert entry_term is not None
            if entry_term <= term:
                return index, entry_term
            index -= 1
        return index, self.snapshot.term

    def unstable_entries(self) -> list[Entry]:
        return self._entries[self.unstable_from - self.offset() :]

    def committed_to_apply(self, max_bytes: int) -> list[Entry]:
        """Committed entries after `applied`, at most `max_bytes` (at least one if any)."""
        hi = min(self.committed, self.last_index())
        if hi <= self.applied:
            return []
        return self.slice(self.applied + 1, hi + 1, max_bytes)

    # --- mutations -----------------------------------------------------------------------

    def append(self, entries: Sequence[Entry]) -> None:
        """Append `entries`, truncating any held suffix they overwrite (never committed ones)."""
        if not entries:
            return
        first = entries[0].index
        assert first > self.committed, f"truncating committed entries at {first}"
        assert self.snapshot.index < first <= self.last_index() + 1, (first, self.last_index())
        if first <= self.last_index():
            del self._entries[first - self.offset() :]
            self.unstable_from = min(self.unstable_from, first)
        prev_term = self.last_term()
        for entry in entries:
            assert entry.index == self.last_index() + 1 and entry.term >= prev_term, entry
            self._entries.append(entry)
            prev_term = entry.term

    def find_conflict(self, entries: Sequence[Entry]) -> int:
        """Index of the first entry that is not already held with the same term, else 0."""
        for entry in entries:
            if not self.match_term(entry.index, entry.term):
                return entry.index
        return 0

    def maybe_append(
        self, prev_index: int, prev_term: int, commit: int, entries: Sequence[Entry]
    ) -> tuple[int, int] | None:
        """A follower receiving AppendEntries (§5.3). None if (prev_index, prev_term) is not
        held; else (last_new, conflict): the last index now known to match the leader
        (prev_index + len(entries)), and the first index written (0 if nothing changed)."""
        if not self.match_term(prev_index, prev_term):
            return None
        last_new = prev_index + len(entries)
        conflict = self.find_conflict(entries)
        if conflict:
            # Only the conflicting suffix is replaced: entries we already hold are kept, so a
            # stale or duplicated AppendRequest never truncates a longer matching log.
            assert conflict > self.committed, f"conflict at committed index {conflict}"
            self.append(entries[conflict - entries[0].index :])
        self.commit_to(min(commit, last_new))
        return last_new, conflict

    def commit_to(self, index: int) -> bool:
        """Raise `committed` to `index` (never lower). True if it moved."""
        if index <= self.committed:
            return False
        assert index <= self.last_index(), f"commit {index} past last index {self.last_index()}"
        self.committed = index
        return True

    def applied_to(self, index: int) -> None:
        assert self.applied <= index <= self.committed, (self.applied, index, self.committed)
        self.applied = index

    def stable_to(self, written: Sequence[Entry]) -> None:
        """The driver made `written` durable. Entries of it that the log no longer holds
        (truncated meanwhile by a newer leader) do not count; by Log Matching, the last one
        still held with the same term marks a durable prefix."""
        for entry in reversed(written):
            if entry.index < self.unstable_from:
                return
            if self.match_term(entry.index, entry.term):
                self.unstable_from = entry.index + 1
                return

    def restore(self, meta: SnapshotMeta) -> None:
        """Replace the whole log by a snapshot (a follower installing one)."""
        assert meta.index > self.committed, (meta.index, self.committed)
        self.snapshot = meta
        self._entries = []
        self.committed = meta.index
        # The Ready carrying the snapshot restores the state machine before it applies anything
        # after it, so from the log's point of view the snapshot is applied at once.
        self.applied = meta.index
        self.unstable_from = meta.index + 1

    def compact(self, meta: SnapshotMeta) -> None:
        """The application snapshotted at meta.index (<= applied): drop the prefix it covers."""
        assert self.snapshot.index < meta.index <= self.applied, (meta.index, self.applied)
        assert meta.index < self.unstable_from
        assert self.term(meta.index) == meta.term, (meta.index, meta.term)
        del self._entries[: meta.index - self.offset() + 1]
        self.snapshot = meta
