"""Shared pieces of the Raft storage: its corruption error and directory helpers.

Rules: every path goes through `detsim.fs` (real files in production, the node's simulated disk
in a simulation); a created directory is made durable by fsyncing each parent we created it in.
"""

from __future__ import annotations

import os
from typing import Final

from detsim import fs
from detsim.fs import records
from detsim.fs.records import CorruptRecordError

MAX_DIR_DEPTH: Final = 64  # ancestors created by ensure_dir (a path deeper than this is a bug)


class CorruptStorageError(CorruptRecordError):
    """Durable Raft state is damaged where it must not be: a committed entry, a snapshot, a gap
    below the commit index. Names the file and the offset; the node must stop (nothing is
    dropped to carry on). A subclass of the record file's error, so one `except` catches both."""


def ensure_dir(path: str) -> None:
    """Create `path` (and missing parents) durably: each new name fsynced in its parent.
    Relative paths stay relative (a simulated node's disk has its own root)."""
    missing: list[str] = []
    current = os.path.normpath(path)
    while current and current not in (".", os.sep) and not fs.exists(current):
        assert len(missing) < MAX_DIR_DEPTH, f"directory deeper than {MAX_DIR_DEPTH}: {path}"
        missing.append(current)
        current = os.path.dirname(current)
    if not missing:
        return
    fs.makedirs(path, exist_ok=True)
    for created in reversed(missing):
        fs.fsync_dir(os.path.dirname(created) or ".")


def prefix_payloads(path: str, end_offset: int) -> list[tuple[int, bytes]]:
    """(offset, payload) of each record a record file holds before `end_offset`, the end of its
    valid prefix (as a `CorruptRecordError` for a torn tail reports it). Walks the record
    headers, which the record file checked before it reported that offset; changes nothing."""
    out: list[tuple[int, bytes]] = []
    with fs.open(path, "rb") as f:
        data = f.read(end_offset)
    pos = records.HEADER_BYTES
    while pos < end_offset:
        (length, _, _) = records.RECORD_HEADER.unpack_from(data, pos)
        start = pos + records.RECORD_HEADER.size
        out.append((pos, data[start : start + length]))
        pos = start + length
    assert pos == end_offset, (path, pos, end_offset)
    return out
