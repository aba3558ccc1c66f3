"""The record file: round trips, every torn tail recovered, every mid-file corruption reported."""

from __future__ import annotations

import errno
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import detsim
from detsim import fs
from detsim.fs import records
from detsim.fs.records import (
    HEADER_BYTES,
    MAX_PAYLOAD_BYTES,
    CorruptRecordError,
    RecordFile,
    RecordTooLargeError,
)
from detsim.sim.config import DiskConfig
from detsim.sim.disk import SimDisk

PAYLOADS = [b"first", b"", b"third record" * 3, bytes(range(256)), b"last"]


def make_file(path: Path, payloads: list[bytes] = PAYLOADS) -> tuple[bytes, list[int]]:
    with RecordFile.open(path) as rf:
        offsets = rf.append_many(payloads)
        rf.sync()
    return path.read_bytes(), offsets


@pytest.fixture
def sim_disk() -> Iterator[tuple[SimDisk, list[tuple[str, dict[str, Any]]]]]:
    events: list[tuple[str, dict[str, Any]]] = []
    disk = SimDisk("n1", DiskConfig(), random.Random(0), lambda k, **f: events.append((k, f)))
    with fs.use_backend(disk):
        yield disk, events


def test_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "log"
    with RecordFile.open(path) as rf:
        assert rf.recovery.created and len(rf) == 0 and rf.end_offset == HEADER_BYTES
        first = rf.append(b"a")
        rest = rf.append_many([b"b", b"c"])
        rf.sync()
        assert rf.read(rest[0]) == b"b"
        assert [r.payload for r in rf.iter_records()] == [b"a", b"b", b"c"]
        assert [r.payload for r in rf.iter_records(rest[0])] == [b"b", b"c"]
    with RecordFile.open(path) as rf:
        assert [(r.offset, r.payload) for r in rf.recovered] == list(
            zip([first, *rest], [b"a", b"b", b"c"], strict=True)
        )
        assert rf.recovery.torn_offset is None and not rf.recovery.created
        assert list(rf.offsets) == [first, *rest]
        with pytest.raises(ValueError, match="no record starts"):
            rf.read(first + 1)


def test_missing_file_without_create(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        RecordFile.open(tmp_path / "nope", create=False)


def put(path: str, data: bytes) -> None:
    with fs.open(path, "wb") as f:
        f.write(data)


def get(path: str) -> bytes:
    with fs.open(path, "rb") as f:
        return f.read()


def make_sim_file(payloads: list[bytes] = PAYLOADS) -> tuple[bytes, list[int]]:
    with RecordFile.open("/full") as rf:
        offsets = rf.append_many(payloads)
        rf.sync()
    return get("/full"), offsets


# The bulk tests below run on a SimDisk (`sim_disk` fixture): the same code as on real files
# (test_round_trip and others use tmp_path), without thousands of real fsyncs.


def test_every_truncation_point_recovers(sim_disk: Any) -> None:
    data, offsets = make_sim_file()
    ends = [*offsets[1:], len(data)]
    path = "/cut"
    for cut in range(len(data)):
        put(path, data[:cut])
        with RecordFile.open(path) as rf:
            if cut < HEADER_BYTES:
                assert rf.recovery.created and len(rf.recovered) == 0
                assert rf.recovery.torn_bytes == cut
            else:
                whole = [i for i, end in enumerate(ends) if end <= cut]
                assert [r.payload for r in rf.recovered] == [PAYLOADS[i] for i in whole]
                valid_end = ends[whole[-1]] if whole else HEADER_BYTES
                torn = cut - valid_end
                assert rf.recovery.torn_bytes == torn
                assert rf.recovery.torn_offset == (valid_end if torn else None)
            assert fs.getsize(path) == rf.end_offset  # truncated on disk
            rf.append(b"after")
            rf.sync()
        with RecordFile.open(path) as rf:
            assert rf.recovered[-1].payload == b"after" and rf.recovery.torn_bytes == 0


def test_random_garbage_tails_are_truncated(sim_disk: Any) -> None:
    data, _ = make_sim_file()
    rng = random.Random(1)
    path = "/log"
    for _ in range(300):
        garbage = rng.randbytes(rng.randrange(1, 64))
        if rng.random() < 0.2:
            garbage = bytes(len(garbage))  # zero-filled, as after some crashes
        put(path, data + garbage)
        with RecordFile.open(path) as rf:
            assert [r.payload for r in rf.recovered] == PAYLOADS
            assert rf.recovery.torn_bytes == len(garbage)
        assert get(path) == data


def test_every_byte_of_a_middle_record_corrupted_is_reported(sim_disk: Any) -> None:
    data, offsets = make_sim_file()
    middle = 2
    start, end = offsets[middle], offsets[middle + 1]
    path = "/log"
    for pos in range(start, end):
        for flip in (0x01, 0x80, 0xFF):
            damaged = bytearray(data)
            damaged[pos] ^= flip
            put(path, bytes(damaged))
            with pytest.raises(CorruptRecordError) as err:
                RecordFile.open(path)
            assert err.value.offset == start and err.value.path == path
            assert get(path) == bytes(damaged)  # nothing dropped


def test_a_record_followed_by_garbage_and_a_valid_record_is_corruption(tmp_path: Path) -> None:
    data, offsets = make_file(tmp_path / "full", [b"a", b"b"])
    # a valid record after a run of garbage: not a torn tail however it got there
    path = tmp_path / "log"
    path.write_bytes(data[: offsets[1]] + b"\xff" * 7 + data[offsets[1] :])
    with pytest.raises(CorruptRecordError, match="valid record follows"):
        RecordFile.open(path)


def test_last_record_corruption_is_truncated_and_reported_or_raised(tmp_path: Path) -> None:
    data, offsets = make_file(tmp_path / "full")
    path = tmp_path / "log"
    damaged = bytearray(data)
    damaged[-1] ^= 1
    path.write_bytes(bytes(damaged))
    with pytest.raises(CorruptRecordError, match="torn tail"):
        RecordFile.open(path, repair=False)
    with RecordFile.open(path) as rf:
        assert rf.recovery.torn_offset == offsets[-1]
        assert [r.payload for r in rf.recovered] == PAYLOADS[:-1]


def test_bad_header(tmp_path: Path) -> None:
    data, _ = make_file(tmp_path / "full")
    path = tmp_path / "log"
    for pos in range(HEADER_BYTES):
        damaged = bytearray(data)
        damaged[pos] ^= 0x10
        path.write_bytes(bytes(damaged))
        with pytest.raises(CorruptRecordError) as err:
            RecordFile.open(path)
        assert err.value.offset == 0
    path.write_bytes(b"not a record file at all")
    with pytest.raises(CorruptRecordError, match="magic"):
        RecordFile.open(path)
    path.write_bytes(b"garbage")
    with pytest.raises(CorruptRecordError):
        RecordFile.open(path)


def test_record_size_limit(tmp_path: Path) -> None:
    with RecordFile.open(tmp_path / "log") as rf:
        with pytest.raises(RecordTooLargeError, match="MAX_PAYLOAD_BYTES"):
            rf.append_many([b"ok", b"x" * (MAX_PAYLOAD_BYTES + 1)])
        assert len(rf) == 0 and rf.end_offset == HEADER_BYTES  # nothing of the batch
        rf.append(b"x" * MAX_PAYLOAD_BYTES)
        rf.sync()
    with RecordFile.open(tmp_path / "log") as rf:
        assert len(rf.recovered[0].payload) == MAX_PAYLOAD_BYTES


def test_truncate_at_for_log_conflicts(tmp_path: Path) -> None:
    path = tmp_path / "log"
    with RecordFile.open(path) as rf:
        offsets = rf.append_many([b"e1", b"e2", b"e3", b"e4"])
        with pytest.raises(ValueError):
            rf.truncate_at(offsets[2] + 1)
        rf.truncate_at(offsets[2])
        assert len(rf) == 2 and rf.end_offset == offsets[2]
        rf.append(b"e3'")
        rf.truncate_at(rf.end_offset)  # a no-op at the end
        rf.sync()
    with RecordFile.open(path) as rf:
        assert [r.payload for r in rf.recovered] == [b"e1", b"e2", b"e3'"]


# -- on the simulated disk ---------------------------------------------------------------------


def test_crash_keeps_synced_records_and_recovers_a_prefix_of_the_rest() -> None:
    outcomes = set()
    for seed in range(150):
        disk = SimDisk("n1", DiskConfig(), random.Random(seed), lambda k, **f: None)
        with fs.use_backend(disk):
            fs.makedirs("/raft")
            fs.fsync_dir("/")
            rf = RecordFile.open("/raft/log")
            rf.append_many([b"synced-1", b"synced-2"])
            rf.sync()
            rf.append_many([b"unsynced-3" * 10, b"unsynced-4"])
            disk.on_crash()
            with RecordFile.open("/raft/log") as rf2:
                got = [r.payload for r in rf2.recovered]
                assert got[:2] == [b"synced-1", b"synced-2"]
                assert got in ([*got[:2]], [*got[:2], b"unsynced-3" * 10], [*got[:2], *got[2:]])
                assert got[2:] == [b"unsynced-3" * 10, b"unsynced-4"][: len(got) - 2]
                outcomes.add((len(got), rf2.recovery.torn_bytes > 0))
    assert {(2, False), (4, False)} <= outcomes
    assert any(torn for _, torn in outcomes)


def test_write_errors_leave_the_file_consistent(sim_disk: Any) -> None:
    disk, _ = sim_disk
    rf = RecordFile.open("/log")
    rf.append(b"one")
    disk.set_config(DiskConfig(write_error=1.0))
    with pytest.raises(OSError) as err:
        rf.append_many([b"two", b"three"])
    assert err.value.errno == errno.EIO and len(rf) == 1
    disk.set_config(DiskConfig(capacity=disk.used_bytes + 5))
    with pytest.raises(OSError) as err:
        rf.append(b"too long for the disk")
    assert err.value.errno == errno.ENOSPC
    disk.set_config(DiskConfig())
    rf.append(b"four")
    rf.sync()
    rf.close()
    with RecordFile.open("/log") as rf2:
        assert [r.payload for r in rf2.recovered] == [b"one", b"four"]


def test_transient_read_corruption_never_truncates_or_loses_records() -> None:
    raised = clean = 0
    for seed in range(100):
        disk = SimDisk("n1", DiskConfig(), random.Random(seed), lambda k, **f: None)
        with fs.use_backend(disk):
            with RecordFile.open("/log") as rf:
                rf.append_many(PAYLOADS)
                rf.sync()
            image = disk.open("/log", "rb").read()
            disk.set_config(DiskConfig(read_corruption=0.5))
            try:
                with RecordFile.open("/log") as rf:
                    assert [r.payload for r in rf.recovered] == PAYLOADS
                    assert rf.recovery.torn_bytes == 0
                    assert [r.payload for r in rf.iter_records()] == PAYLOADS
                    clean += 1
            except CorruptRecordError:
                raised += 1  # loud, never silent
            disk.set_config(DiskConfig())
            with disk.open("/log", "rb") as f:
                assert f.read() == image  # nothing truncated
    assert clean > 20 and raised > 0


def test_always_corrupt_reads_raise(sim_disk: Any) -> None:
    disk, _ = sim_disk
    with RecordFile.open("/log") as rf:
        offset = rf.append(b"payload" * 100)
        disk.set_config(DiskConfig(read_corruption=1.0))
        with pytest.raises(CorruptRecordError, match="3 reads"):
            rf.read(offset)
        with pytest.raises(CorruptRecordError, match="disagree"):
            RecordFile.open("/log")


def test_torn_tail_is_traced_in_a_simulation() -> None:
    sim = detsim.Simulation(seed=3)
    node = sim.add_node("n1", ip="10.0.0.1")

    async def torn() -> int:
        with fs.open("/log", "wb") as f:
            f.write(records._header() + records.encode(b"whole") + b"\x05\x00")
        with RecordFile.open("/log") as rf:
            return rf.recovery.torn_bytes

    async def main() -> int:
        return await node.spawn(torn())

    assert sim.run(main()) == 2
    (event,) = [ev for ev in sim.events if ev["kind"] == "records.torn_tail"]
    assert event["node"] == "n1" and event["dropped_bytes"] == 2


def synced_records_after_crash(seed: int) -> list[bytes]:
    sim = detsim.Simulation(seed=seed, disk=DiskConfig(fsync_latency=0.01))
    node = sim.add_node("n1", ip="10.0.0.1")

    async def writer() -> None:
        rf = RecordFile.open("/log")
        for i in range(5):
            rf.append_many([b"%d" % i] * 3)
            await rf.sync_async()

    async def reader() -> list[bytes]:
        with RecordFile.open("/log") as rf:
            return [r.payload for r in rf.recovered]

    async def main() -> list[bytes]:
        await node.spawn(writer())
        sim.crash(node)
        sim.restart(node)
        return await node.spawn(reader())

    return sim.run(main())


def test_sync_async_in_a_simulation_survives_crash() -> None:
    for seed in range(20):
        assert synced_records_after_crash(seed) == [b"%d" % i for i in range(5) for _ in range(3)]
