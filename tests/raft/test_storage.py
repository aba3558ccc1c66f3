"""Raft storage: round trips on real files and on a simulated disk, conflict truncation,
segments, compaction, snapshots, group commit, and recovery after power loss, torn tails and
corruption (a clear error with path and offset; committed data is never dropped to carry on)."""

from __future__ import annotations

import asyncio
import logging
import os
import random
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from detsim import fs
from detsim.fs.records import CorruptRecordError, RecordFile
from detsim.raft import codec
from detsim.raft.core.messages import ConfState, Entry, EntryKind, HardState, SnapshotMeta
from detsim.raft.storage import BLOCK_BYTES, CorruptStorageError, Restored, Storage
from detsim.raft.storage._log import ENTRY_TAG, STATE_TAG, segment_name
from detsim.sim.config import DiskConfig
from detsim.sim.disk import SimDisk

Events = list[tuple[str, dict[str, Any]]]
CONF = ConfState.of(["n1", "n2", "n3"])


def entries(lo: int, hi: int, term: int = 1, size: int = 20) -> list[Entry]:
    """Entries [lo, hi) of `term`, each with distinct data."""
    return [
        Entry(term, i, EntryKind.NORMAL, f"{term}:{i}:".encode().ljust(size, b"."))
        for i in range(lo, hi)
    ]


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def reopen(data_dir: str, **kwargs: Any) -> tuple[Storage, Restored]:
    storage = Storage(data_dir, **kwargs)
    return storage, storage.load()


def write(data_dir: str, fn: Callable[[Storage], Any], **kwargs: Any) -> None:
    """Load, let `fn` write, sync, close."""

    async def body() -> None:
        storage, _ = reopen(data_dir, **kwargs)
        result = fn(storage)
        if asyncio.iscoroutine(result):
            await result
        await storage.sync()
        storage.close()

    run(body())


@pytest.fixture(params=["real", "sim"])
def data_dir(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A data directory on real files, or on a simulated disk (no crash here)."""
    if request.param == "real":
        yield str(tmp_path / "data")
        return
    disk = SimDisk("n1", DiskConfig(), random.Random(0), lambda kind, **f: None)
    with fs.use_backend(disk):
        yield "/node/data"


def sim_disk(seed: int = 0, **config: Any) -> tuple[SimDisk, Events]:
    events: Events = []
    disk = SimDisk(
        "n1", DiskConfig(**config), random.Random(seed), lambda k, **f: events.append((k, f))
    )
    return disk, events


# -- round trips ------------------------------------------------------------------------------


def test_fresh_directory_loads_empty(data_dir: str) -> None:
    storage, restored = reopen(data_dir)
    assert restored == Restored(HardState(), None, ()) and restored.empty
    assert storage.first_index == 1 and storage.last_index == 0
    storage.close()


def test_entries_and_hard_state_survive_a_restart(data_dir: str) -> None:
    def fill(s: Storage) -> None:
        s.append(entries(1, 11))
        s.append(entries(11, 21, term=2))
        s.hard_state = HardState(2, "n2", 15)

    write(data_dir, fill)
    storage, restored = reopen(data_dir)
    assert restored.hard_state == HardState(2, "n2", 15)
    assert list(restored.entries) == entries(1, 11) + entries(11, 21, term=2)
    assert storage.entries(5, 12) == entries(5, 11) + entries(11, 12, term=2)
    storage.close()


def test_a_conflicting_suffix_is_replaced(data_dir: str) -> None:
    write(data_dir, lambda s: s.append(entries(1, 41)), segment_max_bytes=300)
    write(data_dir, lambda s: s.append(entries(12, 15, term=2)), segment_max_bytes=300)
    storage, restored = reopen(data_dir, segment_max_bytes=300)
    assert list(restored.entries) == entries(1, 12) + entries(12, 15, term=2)
    # The segments after the conflict are gone, not just ignored.
    names = fs.listdir(os.path.join(data_dir, "log"))
    firsts = [first_index(n) for n in names]
    assert max(firsts) <= 14 and len(names) < 10
    storage.close()


def test_a_conflict_at_a_segment_start_removes_that_segment(data_dir: str) -> None:
    write(data_dir, lambda s: s.append(entries(1, 31)), segment_max_bytes=300)
    names = fs.listdir(os.path.join(data_dir, "log"))
    second = first_index(names[1])
    write(data_dir, lambda s: s.append(entries(second, second + 1, term=3)), segment_max_bytes=300)
    _, restored = reopen(data_dir)
    assert list(restored.entries) == entries(1, second) + entries(second, second + 1, term=3)


def test_appends_outside_the_log_are_refused(data_dir: str) -> None:
    storage, _ = reopen(data_dir)
    storage.append(entries(1, 4))
    with pytest.raises(ValueError, match="outside"):
        storage.append(entries(6, 7))  # a gap
    with pytest.raises(ValueError, match="not contiguous"):
        storage.append([Entry(1, 4), Entry(1, 6)])
    storage.close()


def test_segments_rotate_at_the_named_size(data_dir: str) -> None:
    write(data_dir, lambda s: s.append(entries(1, 201)), segment_max_bytes=1000)
    names = fs.listdir(os.path.join(data_dir, "log"))
    assert len(names) > 5
    for name in names:
        # One record may take a segment past the bound, never two.
        assert fs.getsize(os.path.join(data_dir, "log", name)) < 1000 + 60
    storage, restored = reopen(data_dir, segment_max_bytes=1000)
    assert list(restored.entries) == entries(1, 201)
    assert storage.entries(1, 201) == entries(1, 201)  # reads cross segments
    storage.close()


def test_group_commit_one_fsync_per_written_file() -> None:
    disk, events = sim_disk()

    async def body() -> None:
        storage, _ = reopen("/data")
        for lo in range(1, 101, 10):
            storage.append(entries(lo, lo + 10))
        storage.hard_state = HardState(1, "n1", 50)
        events.clear()
        await storage.sync()
        fsyncs = [f["path"] for k, f in events if k == "disk.fsync"]
        assert fsyncs == ["/data/log/" + segment_name(0, 1)]  # entries and hard state: one file
        events.clear()
        await storage.sync()  # nothing new: nothing to fsync
        assert [k for k, _ in events if k == "disk.fsync"] == []
        storage.close()

    with fs.use_backend(disk):
        run(body())


@pytest.mark.parametrize("seed", range(8))
def test_a_commit_only_hard_state_is_written_without_fsync(seed: int) -> None:
    """`write_hard_state` (a Ready that only moves the commit index, etcd's MustSync false):
    no fsync; a power loss keeps the new commit or the old one, never anything else, and the
    next sync makes it durable."""
    disk, events = sim_disk(seed)

    async def before_crash() -> None:
        storage, _ = reopen("/data")
        storage.append(entries(1, 11))
        storage.hard_state = HardState(1, "n1", 5)
        await storage.sync()
        events.clear()
        storage.hard_state = HardState(1, "n1", 10)
        storage.write_hard_state()
        assert [k for k, _ in events if k == "disk.fsync"] == []
        assert storage.hard_state == HardState(1, "n1", 10)

    with fs.use_backend(disk):
        run(before_crash())
        disk.on_crash()
        storage, restored = reopen("/data")
        assert restored.hard_state in (HardState(1, "n1", 5), HardState(1, "n1", 10))
        assert list(restored.entries) == entries(1, 11)
        storage.hard_state = HardState(1, "n1", 10)
        storage.write_hard_state()
        run(storage.sync())  # the next sync makes the written state durable
        storage.close()
        disk.on_crash()
        storage, restored = reopen("/data")
        assert restored.hard_state == HardState(1, "n1", 10)
        storage.close()


def test_the_hard_state_survives_rotation_compaction_truncation_and_install(data_dir: str) -> None:
    """The hard state lives in the log segments: whatever removes or cuts segments must keep
    the latest one."""
    kw = {"segment_max_bytes": 300}

    async def body() -> None:
        storage, _ = reopen(data_dir, **kw)
        storage.append(entries(1, 41))
        storage.hard_state = HardState(2, "n2", 5)
        await storage.sync()  # its H record is in the last of several segments
        storage.append(entries(30, 31, term=2))  # cuts the segment holding that H record
        await storage.sync()
        storage.close()

    run(body())
    storage, restored = reopen(data_dir, **kw)
    assert restored.hard_state == HardState(2, "n2", 5)
    assert list(restored.entries) == entries(1, 30) + entries(30, 31, term=2)
    meta = SnapshotMeta(30, 2, CONF, 3)
    run(storage.save_snapshot(meta, [b"abc"]))  # compacts every segment but the last
    storage.close()
    storage, restored = reopen(data_dir, **kw)
    assert restored.hard_state == HardState(2, "n2", 5) and restored.entries == ()
    installed = SnapshotMeta(90, 3, CONF, 1)
    storage.write_snapshot_chunk(installed, 0, b"z")
    run(storage.install_snapshot(installed))  # a new generation of segments
    storage.close()
    storage, restored = reopen(data_dir, **kw)
    assert restored == Restored(HardState(2, "n2", 5), installed, ())
    assert [first_index(n) for n in fs.listdir(os.path.join(data_dir, "log"))] == [91]
    storage.close()


def test_many_hard_state_updates_keep_the_latest(data_dir: str) -> None:
    async def body() -> None:
        storage, _ = reopen(data_dir, segment_max_bytes=400)
        for term in range(1, 60):
            storage.append(entries(term, term + 1, term=term))
            storage.hard_state = HardState(term, f"n{term % 3}", term - 1)
            await storage.sync()
        storage.close()

    run(body())
    _, restored = reopen(data_dir, segment_max_bytes=400)
    assert restored.hard_state == HardState(59, "n2", 58)
    assert [e.term for e in restored.entries] == list(range(1, 60))


# -- snapshots --------------------------------------------------------------------------------

SNAPSHOT_BYTES = bytes(random.Random(1).randbytes(3 * BLOCK_BYTES + 123))


def chunks_of(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)] or [b""]


def test_a_saved_snapshot_compacts_whole_segments_and_reads_back(data_dir: str) -> None:
    meta = SnapshotMeta(60, 1, CONF, len(SNAPSHOT_BYTES))

    async def body() -> None:
        storage, _ = reopen(data_dir, segment_max_bytes=500)
        storage.append(entries(1, 101))
        await storage.sync()
        before = len(fs.listdir(os.path.join(data_dir, "log")))
        await storage.save_snapshot(meta, chunks_of(SNAPSHOT_BYTES, 10_000))
        after = fs.listdir(os.path.join(data_dir, "log"))
        assert len(after) < before
        assert first_index(after[0]) <= 61  # the segment holding 61 stays
        assert storage.first_index == 61 and storage.snapshot == meta
        for offset, size in [
            (0, 10),
            (BLOCK_BYTES - 5, 10),
            (0, len(SNAPSHOT_BYTES)),
            (len(SNAPSHOT_BYTES), 0),
        ]:
            assert storage.read_chunk(meta, offset, size) == SNAPSHOT_BYTES[offset : offset + size]
        with pytest.raises(ValueError, match="outside"):
            storage.read_chunk(meta, len(SNAPSHOT_BYTES) - 5, 10)
        with pytest.raises(ValueError, match="not the current"):
            storage.read_chunk(SnapshotMeta(59, 1, CONF, 10), 0, 1)
        storage.close()

    run(body())
    storage, restored = reopen(data_dir, segment_max_bytes=500)
    assert restored.snapshot == meta
    assert list(restored.entries) == entries(61, 101)
    assert storage.read_chunk(meta, 5, 1000) == SNAPSHOT_BYTES[5:1005]
    storage.close()


def test_a_snapshot_that_does_not_match_the_log_is_refused(data_dir: str) -> None:
    async def body() -> None:
        storage, _ = reopen(data_dir)
        storage.append(entries(1, 11))
        with pytest.raises(ValueError, match="does not match"):
            await storage.save_snapshot(SnapshotMeta(5, 2, CONF, 0), [b""])
        storage.close()

    run(body())


def test_an_installed_snapshot_replaces_the_log(data_dir: str) -> None:
    meta = SnapshotMeta(500, 7, CONF, len(SNAPSHOT_BYTES))

    async def body() -> None:
        storage, _ = reopen(data_dir)
        storage.append(entries(1, 21))
        storage.hard_state = HardState(3, "n1", 10)
        await storage.sync()
        pieces = chunks_of(SNAPSHOT_BYTES, 70_000)
        offset = 0
        for piece in pieces:
            storage.write_snapshot_chunk(meta, offset, piece)
            offset += len(piece)
            await storage.sync()
        with pytest.raises(ValueError, match="does not continue"):
            storage.write_snapshot_chunk(meta, 5, b"x")
        await storage.install_snapshot(meta)
        assert storage.last_index == 500 and storage.first_index == 501
        storage.append(entries(501, 505, term=7))
        storage.hard_state = HardState(7, None, 500)
        await storage.sync()
        storage.close()

    run(body())
    storage, restored = reopen(data_dir)
    assert restored.snapshot == meta and list(restored.entries) == entries(501, 505, term=7)
    assert fs.listdir(os.path.join(data_dir, "log")) == [segment_name(1, 501)]  # generation 1
    assert storage.read_chunk(meta, 0, len(SNAPSHOT_BYTES)) == SNAPSHOT_BYTES
    storage.close()


def test_an_empty_snapshot_is_one_empty_chunk(data_dir: str) -> None:
    meta = SnapshotMeta(3, 1, CONF, 0)

    async def body() -> None:
        storage, _ = reopen(data_dir)
        storage.write_snapshot_chunk(meta, 0, b"")
        await storage.install_snapshot(meta)
        assert storage.read_chunk(meta, 0, 0) == b""
        storage.close()

    run(body())
    _, restored = reopen(data_dir)
    assert restored.snapshot == meta and restored.entries == ()


@pytest.mark.parametrize("matching", [True, False])
def test_a_crash_between_snapshot_install_and_log_discard(data_dir: str, matching: bool) -> None:
    """The snapshot is durable but the old log is still there: kept after the snapshot when it
    agrees with it (same term at its index), discarded when it does not."""
    meta = SnapshotMeta(10, 1 if matching else 4, CONF, 5)

    async def body() -> None:
        storage, _ = reopen(data_dir)
        storage.append(entries(1, 21))
        await storage.sync()
        storage.write_snapshot_chunk(meta, 0, b"hello")
        await storage._snapshots.install_staged(meta)  # and "crash" before the log discard
        storage.close()

    run(body())
    storage, restored = reopen(data_dir)
    assert restored.snapshot == meta
    assert list(restored.entries) == (entries(11, 21) if matching else [])
    storage.close()


def test_unfinished_snapshot_files_are_removed_at_load(data_dir: str) -> None:
    meta = SnapshotMeta(10, 1, CONF, 5)

    async def body() -> None:
        storage, _ = reopen(data_dir)
        storage.write_snapshot_chunk(meta, 0, b"hel")  # staging, never installed
        await storage.sync()
        storage.close()

    run(body())
    storage, restored = reopen(data_dir)
    assert restored.snapshot is None
    assert fs.listdir(os.path.join(data_dir, "snap")) == []
    storage.close()


# -- corruption and torn tails ------------------------------------------------------------------


def flip_byte(path: str, offset: int) -> None:
    with fs.open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0x40]))


def chop(path: str, size_bytes: int) -> None:
    with fs.open(path, "r+b") as f:
        f.truncate(fs.getsize(path) - size_bytes)


def cut_at(path: str, size_bytes: int) -> None:
    with fs.open(path, "r+b") as f:
        f.truncate(size_bytes)


def segment(data_dir: str, k: int = 0) -> str:
    log_dir = os.path.join(data_dir, "log")
    return os.path.join(log_dir, fs.listdir(log_dir)[k])


def entry_offsets(path: str) -> list[int]:
    """The offsets of the entry records of a segment (hard-state records are skipped)."""
    with RecordFile.open(path) as rf:
        return [r.offset for r in rf.recovered if r.payload[:1] == ENTRY_TAG]


def first_index(segment_file_name: str) -> int:
    return int(segment_file_name.split("-")[2].split(".")[0])


def test_corruption_in_the_middle_of_the_log_names_file_and_offset(data_dir: str) -> None:
    write(data_dir, lambda s: s.append(entries(1, 21)))
    path = segment(data_dir)
    offsets = entry_offsets(path)
    flip_byte(path, offsets[5] + 14)  # inside entry 6's payload
    with pytest.raises(CorruptRecordError) as info:
        reopen(data_dir)
    assert info.value.path == path and info.value.offset == offsets[5]
    assert f"{path}: corrupt record file at offset {offsets[5]}" in str(info.value)


def test_a_torn_tail_above_the_commit_index_is_truncated(
    data_dir: str, caplog: pytest.LogCaptureFixture
) -> None:
    def fill(s: Storage) -> None:
        s.append(entries(1, 21))
        s.hard_state = HardState(1, None, 15)

    write(data_dir, fill)
    path = segment(data_dir)
    cut_at(path, entry_offsets(path)[-1] + 7)  # entry 20 torn (and the H record after it)
    with caplog.at_level(logging.WARNING):
        storage, restored = reopen(data_dir)
    assert list(restored.entries) == entries(1, 20)
    assert restored.hard_state == HardState()  # the H record after entry 20 was never durable
    assert any("torn tail" in r.getMessage() for r in caplog.records)
    storage.append(entries(20, 22, term=2))  # and the log goes on from there
    storage.close()


def test_a_torn_tail_below_a_durable_commit_stops_the_node(data_dir: str) -> None:
    """A crash cannot do this (a commit record follows the entries it covers, and a file
    survives as a prefix), but damage can: an entry at or below a commit that an earlier record
    made durable is never truncated away."""
    write(data_dir, lambda s: s.append(entries(1, 21)))
    path = segment(data_dir)
    with RecordFile.open(path) as rf:
        rf.append(STATE_TAG + codec.packb([1000, 1, None, 21]))  # commit 21, then entry 21
        last = rf.append(ENTRY_TAG + codec.pack_entry(entries(21, 22)[0]))
        rf.sync()
    cut_at(path, last + 7)
    with pytest.raises(CorruptStorageError, match="entry 21 is damaged and committed") as info:
        reopen(data_dir)
    assert info.value.path == path and info.value.offset == last
    assert fs.getsize(path) == last + 7  # nothing was truncated: the evidence stays


def test_a_torn_tail_in_an_earlier_segment_is_corruption(data_dir: str) -> None:
    write(data_dir, lambda s: s.append(entries(1, 41)), segment_max_bytes=300)
    path = segment(data_dir, 0)
    chop(path, 3)
    with pytest.raises(CorruptStorageError, match="not the last") as info:
        reopen(data_dir, segment_max_bytes=300)
    assert info.value.path == path


def test_missing_committed_entries_stop_the_node(data_dir: str) -> None:
    def fill(s: Storage) -> None:
        s.append(entries(1, 41))
        s.hard_state = HardState(1, None, 40)

    write(data_dir, fill, segment_max_bytes=300)
    fs.remove(segment(data_dir, 1))
    with pytest.raises(CorruptStorageError, match="missing below the commit index 40"):
        reopen(data_dir, segment_max_bytes=300)


def test_missing_uncommitted_entries_drop_the_rest_of_the_log(data_dir: str) -> None:
    def fill(s: Storage) -> None:
        s.append(entries(1, 41))
        s.hard_state = HardState(1, None, 3)

    write(data_dir, fill, segment_max_bytes=300)
    second = first_index(fs.listdir(os.path.join(data_dir, "log"))[1])
    fs.remove(segment(data_dir, 1))
    _, restored = reopen(data_dir, segment_max_bytes=300)
    assert list(restored.entries) == entries(1, second)


def test_an_empty_segment_left_by_a_crashed_rotation_is_dropped(data_dir: str) -> None:
    write(data_dir, lambda s: s.append(entries(1, 11)))
    with RecordFile.open(os.path.join(data_dir, "log", segment_name(0, 11))):
        pass
    storage, restored = reopen(data_dir)
    assert list(restored.entries) == entries(1, 11)
    storage.append(entries(11, 13))
    storage.close()


def test_a_corrupt_snapshot_stops_the_node_at_the_damaged_block(data_dir: str) -> None:
    meta = SnapshotMeta(5, 1, CONF, len(SNAPSHOT_BYTES))

    def snap(s: Storage) -> Any:
        s.append(entries(1, 11))
        return s.save_snapshot(meta, [SNAPSHOT_BYTES])

    write(data_dir, snap)
    snap_dir = os.path.join(data_dir, "snap")
    data_path = os.path.join(snap_dir, next(n for n in fs.listdir(snap_dir) if n.endswith(".data")))
    flip_byte(data_path, 2 * BLOCK_BYTES + 17)
    with pytest.raises(CorruptStorageError, match="block checksum mismatch") as info:
        reopen(data_dir)
    assert info.value.path == data_path and info.value.offset == 2 * BLOCK_BYTES


def test_a_corrupt_snapshot_meta_stops_the_node(data_dir: str) -> None:
    meta = SnapshotMeta(5, 1, CONF, 10)

    def snap(s: Storage) -> Any:
        s.append(entries(1, 11))
        return s.save_snapshot(meta, [b"0123456789"])

    write(data_dir, snap)
    snap_dir = os.path.join(data_dir, "snap")
    meta_path = os.path.join(snap_dir, next(n for n in fs.listdir(snap_dir) if n.endswith(".meta")))
    chop(meta_path, 2)  # even a "torn" meta is corruption: it was renamed into place whole
    with pytest.raises(CorruptRecordError) as info:
        reopen(data_dir)
    assert info.value.path == meta_path


@pytest.mark.parametrize(
    ("payload", "match"),
    [
        (ENTRY_TAG + b"\x93\x01\x02\x03", "undecodable entry"),
        (STATE_TAG + b"\x92\x01\x02", "undecodable hard state"),
        (b"X", "unknown record tag"),
    ],
)
def test_an_undecodable_record_is_corruption_with_its_offset(
    data_dir: str, payload: bytes, match: str
) -> None:
    write(data_dir, lambda s: s.append(entries(1, 4)))
    path = segment(data_dir)
    with RecordFile.open(path) as rf:
        offset = rf.append(payload)  # a valid record (checksums fine) that we never write
        rf.sync()
    with pytest.raises(CorruptStorageError, match=match) as info:
        reopen(data_dir)
    assert info.value.path == path and info.value.offset == offset


# -- power loss on the simulated disk ---------------------------------------------------------


@pytest.mark.parametrize("seed", range(24))
def test_power_loss_keeps_every_synced_entry_and_a_prefix_of_the_rest(seed: int) -> None:
    disk, _events = sim_disk(seed)
    synced = entries(1, 31)
    unsynced = entries(31, 61, term=2)

    async def before_crash() -> None:
        storage, _ = reopen("/data", segment_max_bytes=600)
        storage.append(synced)
        storage.hard_state = HardState(1, "n1", 25)
        await storage.sync()
        storage.append(unsynced)  # rotations inside: earlier segments fsynced by the rule
        storage.hard_state = HardState(2, "n2", 30)
        # no sync: power fails

    with fs.use_backend(disk):
        run(before_crash())
        disk.on_crash()
        storage, restored = reopen("/data", segment_max_bytes=600)
        got = list(restored.entries)
        assert got[:30] == synced
        assert got[30:] == unsynced[: len(got) - 30]  # a prefix, never a hole
        assert restored.hard_state in (HardState(1, "n1", 25), HardState(2, "n2", 30))
        storage.append(entries(len(got) + 1, len(got) + 3, term=3))  # and it goes on
        run(storage.sync())
        storage.close()


def test_power_loss_outcomes_cover_kept_lost_and_torn() -> None:
    """The seeds above do exercise every crash outcome of the unsynced tail."""
    outcomes = set()
    for seed in range(24):
        disk, events = sim_disk(seed)

        async def before_crash() -> None:
            storage, _ = reopen("/data")
            storage.append(entries(1, 31))
            await storage.sync()
            storage.append(entries(31, 61, term=2))

        with fs.use_backend(disk):
            run(before_crash())
            disk.on_crash()
        outcomes |= {f["outcome"] for k, f in events if k == "disk.crash_file"}
    assert {"kept", "lost", "torn"} <= outcomes, outcomes


@pytest.mark.parametrize("seed", range(16))
@pytest.mark.parametrize("where", [0, 2])  # a segment's first entry; the middle of one
def test_power_loss_after_a_conflict_never_resurrects_removed_segments(
    seed: int, where: int
) -> None:
    disk, _ = sim_disk(seed)
    old = entries(1, 41)  # several segments

    async def before_crash() -> tuple[int, int]:
        storage, _ = reopen("/data", segment_max_bytes=300)
        storage.append(old)
        await storage.sync()
        second, third = (first_index(n) for n in fs.listdir("/data/log")[1:3])
        start = second + where
        # Removes later segments (durably), truncates the one holding `start`; no sync.
        storage.append(entries(start, start + 4, term=2))
        return start, third

    with fs.use_backend(disk):
        start, third = run(before_crash())
        disk.on_crash()
        storage, restored = reopen("/data", segment_max_bytes=300)
        storage.close()
    got = list(restored.entries)
    # Either the truncation was lost (a prefix of the old log, no further than the segment it
    # hit) or it took (the old prefix, then a prefix of the new entries): never a removed
    # segment's old entries after the new ones, never a hole.
    olds = [e for e in got if e.term == 1]
    news = [e for e in got if e.term == 2]
    assert got == olds + news
    assert olds == old[: len(olds)] and news == entries(start, start + 4, term=2)[: len(news)]
    assert len(olds) < third
    if news:
        assert len(olds) == start - 1


def test_storage_inside_a_simulation_survives_crash_and_charges_fsync_latency() -> None:
    import detsim

    sim = detsim.Simulation(seed=3, disk=DiskConfig(fsync_latency=0.005))
    node = sim.add_node("n1", ip="10.0.0.1")

    async def write_batches() -> float:
        storage, _ = reopen("/data")
        loop = asyncio.get_running_loop()
        start = loop.time()
        for lo in range(1, 101, 10):
            storage.append(entries(lo, lo + 10))
            storage.hard_state = HardState(1, "n1", lo + 9)
            await storage.sync()
        storage.append(entries(101, 111))  # not synced
        return loop.time() - start

    async def recover() -> Restored:
        storage, restored = reopen("/data")
        storage.close()
        return restored

    async def main() -> tuple[float, Restored]:
        elapsed = await node.spawn(write_batches())
        sim.crash(node)
        sim.restart(node)
        return elapsed, await node.spawn(recover())

    elapsed, restored = sim.run(main())
    # Ten syncs, one fsync each (entries and hard state share the segment): ten waits of
    # fsync_latency on the virtual clock.
    assert elapsed == pytest.approx(10 * 0.005)
    assert restored.hard_state == HardState(1, "n1", 100)
    assert list(restored.entries)[:100] == entries(1, 101)


@pytest.mark.parametrize("data_dir_name", ["/srv/raft/n1", "raft/n1"])
def test_a_new_data_directory_is_durable_with_the_first_sync(data_dir_name: str) -> None:
    """Power loss right after the first sync: the directories (created here, relative or
    absolute) and what was synced in them are all there."""
    for seed in range(8):
        disk, _ = sim_disk(seed)
        with fs.use_backend(disk):
            storage, _ = reopen(data_dir_name)
            storage.append(entries(1, 3))
            storage.hard_state = HardState(1, "n1", 2)
            run(storage.sync())
            disk.on_crash()
            _, restored = reopen(data_dir_name)
        assert restored == Restored(HardState(1, "n1", 2), None, tuple(entries(1, 3)))


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("crash_after_s", [0.005, 0.015, 0.025, 0.035, 0.045])
def test_power_loss_during_a_snapshot_install_leaves_the_old_state_or_the_new(
    seed: int, crash_after_s: float
) -> None:
    """Crashes land inside install_snapshot's fsync waits: after restart the node has the old
    log or the installed snapshot with an empty log, and always its hard state."""
    import detsim

    sim = detsim.Simulation(seed=seed, disk=DiskConfig(fsync_latency=0.01))
    node = sim.add_node("n1", ip="10.0.0.1")
    meta = SnapshotMeta(500, 7, CONF, len(SNAPSHOT_BYTES))
    state = HardState(6, "n2", 30)

    async def prepare() -> None:
        storage, _ = reopen("/data", segment_max_bytes=500)
        storage.append(entries(1, 41))
        storage.hard_state = state
        await storage.sync()
        storage.write_snapshot_chunk(meta, 0, SNAPSHOT_BYTES)

    async def install() -> None:
        storage, _ = reopen("/data", segment_max_bytes=500)
        storage.write_snapshot_chunk(meta, 0, SNAPSHOT_BYTES)
        await storage.install_snapshot(meta)
        await asyncio.sleep(1.0)

    async def recover() -> Restored:
        storage, restored = reopen("/data", segment_max_bytes=500)
        if restored.snapshot is not None:
            assert storage.read_chunk(meta, 0, meta.size_bytes) == SNAPSHOT_BYTES
        storage.close()
        return restored

    async def main() -> Restored:
        await node.spawn(prepare())
        task = node.spawn(install())
        await asyncio.sleep(crash_after_s)
        sim.crash(node)
        with pytest.raises(detsim.NodeDown):
            await task
        sim.restart(node)
        return await node.spawn(recover())

    restored = sim.run(main())
    assert restored.hard_state == state
    if restored.snapshot is None:
        assert list(restored.entries) == entries(1, 41)
    else:
        assert restored.snapshot == meta and restored.entries == ()
