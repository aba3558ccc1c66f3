"""The simulated disk, driven directly: its fault model (detsim.sim.disk's header) as tests."""

from __future__ import annotations

import errno
import io
import random
from collections import Counter
from typing import Any

import pytest

from detsim.fs import parse_mode
from detsim.sim import disk as disk_mod
from detsim.sim.config import DiskConfig
from detsim.sim.disk import SimDisk
from detsim.sim.errors import SimulationError

SEEDS = range(300)

Events = list[tuple[str, dict[str, Any]]]


def make_disk(seed: int = 0, **config: Any) -> tuple[SimDisk, Events]:
    events: Events = []

    def record(kind: str, **fields: Any) -> None:
        events.append((kind, fields))

    return SimDisk("n1", DiskConfig(**config), random.Random(seed), record), events


def read(disk: SimDisk, path: str) -> bytes:
    with disk.open(path, "rb") as f:
        return f.read()


def write_file(disk: SimDisk, path: str, data: bytes, *, sync: bool) -> None:
    with disk.open(path, "wb") as f:
        f.write(data)
        if sync:
            f.fsync()


def kinds(events: Events, kind: str) -> list[dict[str, Any]]:
    return [fields for k, fields in events if k == kind]


# -- data durability at power loss -----------------------------------------------------------


def test_fsynced_data_survives_and_unsynced_is_kept_lost_or_torn_to_a_prefix() -> None:
    synced, unsynced = b"S" * 50, bytes(range(1, 101))
    outcomes: Counter[str] = Counter()
    for seed in SEEDS:
        disk, events = make_disk(seed)
        with disk.open("/log", "wb") as f:
            f.write(synced)
            f.fsync()
            f.write(unsynced[:40])
            f.write(unsynced[40:])  # two sequential writes tear like one
        disk.fsync_dir("/")
        disk.on_crash()
        after = read(disk, "/log")
        assert after.startswith(synced), seed
        tail = after[len(synced) :]
        assert unsynced.startswith(tail), seed
        outcome = "kept" if tail == unsynced else "lost" if not tail else "torn"
        outcomes[outcome] += 1
        (crash,) = kinds(events, "disk.crash_file")
        assert crash["outcome"] == outcome
        assert crash["size_bytes"] == len(after)
        assert crash["kept_bytes"] == len(tail) and crash["unsynced_bytes"] == len(unsynced)
        disk.check_invariants()
    assert min(outcomes["kept"], outcomes["lost"], outcomes["torn"]) > 30, outcomes


def test_fully_synced_file_has_no_crash_choice() -> None:
    for seed in range(50):
        disk, events = make_disk(seed)
        write_file(disk, "/a", b"x" * 10, sync=True)
        disk.fsync_dir("/")
        disk.on_crash()
        assert read(disk, "/a") == b"x" * 10
        assert kinds(events, "disk.crash_file") == []


def test_torn_overwrite_applies_a_prefix_of_the_writes_in_issue_order() -> None:
    seen = set()
    for seed in SEEDS:
        disk, _ = make_disk(seed)
        write_file(disk, "/f", b"0000000000", sync=True)
        disk.fsync_dir("/")
        with disk.open("/f", "r+b") as f:
            f.seek(6)
            f.write(b"BB")
            f.seek(1)
            f.write(b"AA")
            f.truncate(4)
        disk.on_crash()
        after = read(disk, "/f")
        steps = [b"0000000000", b"000000B000", b"000000BB00", b"0A0000BB00", b"0AA000BB00"]
        allowed = {*steps, b"0AA0"}
        assert after in allowed, (seed, after)
        seen.add(after)
    assert {b"0000000000", b"0AA0", b"0AA000BB00"} <= seen


def test_truncate_then_crash_never_mixes_old_and_new_beyond_a_prefix() -> None:
    for seed in range(100):
        disk, _ = make_disk(seed)
        write_file(disk, "/f", b"old-data", sync=True)
        disk.fsync_dir("/")
        write_file(disk, "/f", b"new", sync=False)  # wb: truncate(0) then write
        disk.on_crash()
        assert read(disk, "/f") in {b"old-data", b"", b"n", b"ne", b"new"}


# -- namespace durability --------------------------------------------------------------------


def test_rename_without_fsync_dir_is_sometimes_undone_with_it_never() -> None:
    outcomes: Counter[str] = Counter()
    for seed in SEEDS:
        for fsync_dir in (False, True):
            disk, events = make_disk(seed)
            disk.makedirs("/d")
            disk.fsync_dir("/")
            write_file(disk, "/d/tmp", b"snapshot", sync=True)
            disk.fsync_dir("/d")
            disk.rename("/d/tmp", "/d/final")
            if fsync_dir:
                disk.fsync_dir("/d")
            disk.on_crash()
            names = disk.listdir("/d")
            assert names in (["final"], ["tmp"]), names  # atomic: never both, never neither
            assert read(disk, "/d/" + names[0]) == b"snapshot"
            if fsync_dir:
                assert names == ["final"]
                assert kinds(events, "disk.crash_name") == []
            else:
                outcomes[names[0]] += 1
                (change,) = kinds(events, "disk.crash_name")
                assert change["op"] == "rename" and change["src"] == "/d/tmp"
                assert change["outcome"] == ("kept" if names == ["final"] else "undone")
    assert outcomes["final"] > 50 and outcomes["tmp"] > 50, outcomes


def test_replace_by_rename_leaves_old_or_new_file_never_none() -> None:
    seen = set()
    for seed in range(100):
        disk, _ = make_disk(seed)
        write_file(disk, "/cfg", b"old", sync=True)
        disk.fsync_dir("/")
        write_file(disk, "/cfg.tmp", b"new", sync=True)
        disk.rename("/cfg.tmp", "/cfg")
        disk.on_crash()
        content = read(disk, "/cfg")
        assert content in (b"old", b"new")
        seen.add(content)
        assert disk.listdir("/") in (["cfg"], ["cfg", "cfg.tmp"])
    assert seen == {b"old", b"new"}


def test_created_and_removed_names_are_durable_only_after_fsync_dir() -> None:
    created: Counter[bool] = Counter()
    removed: Counter[bool] = Counter()
    for seed in SEEDS:
        disk, _ = make_disk(seed)
        write_file(disk, "/keep", b"k", sync=True)
        disk.fsync_dir("/")
        write_file(disk, "/new", b"n", sync=True)
        disk.remove("/keep")
        disk.on_crash()
        created[disk.exists("/new")] += 1
        removed[not disk.exists("/keep")] += 1
        if disk.exists("/keep"):
            assert read(disk, "/keep") == b"k"  # an undone remove brings back the durable data
    assert created[True] > 30 and created[False] > 30
    assert removed[True] > 30 and removed[False] > 30
    for seed in range(50):
        disk, _ = make_disk(seed)
        write_file(disk, "/new", b"n", sync=True)
        disk.fsync_dir("/")
        disk.on_crash()
        assert read(disk, "/new") == b"n"


def test_name_changes_tear_to_a_prefix_in_issue_order() -> None:
    seen = set()
    for seed in SEEDS:
        disk, _ = make_disk(seed)
        for name in "abcd":
            write_file(disk, "/" + name, b"", sync=True)
        disk.on_crash()
        names = "".join(disk.listdir("/"))
        assert "abcd".startswith(names)
        seen.add(names)
    assert seen == {"", "a", "ab", "abc", "abcd"}


def test_directory_creation_needs_fsync_of_each_parent() -> None:
    lost = 0
    for seed in range(100):
        disk, _ = make_disk(seed)
        disk.makedirs("/a/b")
        write_file(disk, "/a/b/f", b"data", sync=True)
        disk.fsync_dir("/a/b")
        disk.on_crash()
        if not disk.exists("/a/b/f"):
            lost += 1
        disk.check_invariants()
        disk2, _ = make_disk(seed)
        disk2.makedirs("/a/b")
        for d in ("/", "/a", "/a/b"):
            disk2.fsync_dir(d)
        write_file(disk2, "/a/b/f", b"data", sync=True)
        disk2.fsync_dir("/a/b")
        disk2.on_crash()
        assert read(disk2, "/a/b/f") == b"data"
    assert lost > 10


def test_cross_directory_rename_is_durable_after_fsync_of_both() -> None:
    for seed in range(100):
        disk, _ = make_disk(seed)
        disk.makedirs("/x")
        disk.makedirs("/y")
        disk.fsync_dir("/")
        write_file(disk, "/x/f", b"data", sync=True)
        disk.fsync_dir("/x")
        disk.rename("/x/f", "/y/g")
        disk.fsync_dir("/x")
        disk.fsync_dir("/y")
        disk.on_crash()
        assert disk.listdir("/x") == [] and read(disk, "/y/g") == b"data"


# -- process crash ---------------------------------------------------------------------------


def test_kill_keeps_everything_written_and_kills_handles() -> None:
    for seed in range(50):
        disk, _ = make_disk(seed)
        f = disk.open("/log", "wb")
        f.write(b"unsynced")
        disk.makedirs("/d")
        disk.rename("/log", "/d/log")
        disk.on_kill()
        assert disk.listdir("/") == ["d"]
        assert read(disk, "/d/log") == b"unsynced"
        with pytest.raises(SimulationError, match="killed"):
            f.write(b"more")
        f.close()  # a dead handle's close is a no-op
        disk.check_invariants()


def test_kill_then_crash_can_still_lose_unsynced_data() -> None:
    lost = 0
    for seed in range(100):
        disk, _ = make_disk(seed)
        write_file(disk, "/log", b"data", sync=False)
        disk.fsync_dir("/")
        disk.on_kill()
        disk.on_crash()
        lost += read(disk, "/log") != b"data"
    assert lost > 20


def test_crash_kills_handles_too() -> None:
    disk, _ = make_disk()
    f = disk.open("/x", "wb")
    disk.on_crash()
    with pytest.raises(SimulationError, match="crashed"):
        f.read()


# -- inodes ------------------------------------------------------------------------------------


def test_open_handle_survives_rename_and_remove_of_its_name() -> None:
    disk, _ = make_disk()
    f = disk.open("/a", "w+b")
    f.write(b"hello")
    disk.rename("/a", "/b")
    f.write(b" world")
    assert read(disk, "/b") == b"hello world"
    disk.remove("/b")
    assert disk.listdir("/") == []
    f.seek(0)
    assert f.read() == b"hello world"
    assert disk.used_bytes == 11  # an unlinked open file still holds its space
    f.close()
    assert disk.used_bytes == 0
    disk.check_invariants()


def test_kill_frees_files_held_only_by_a_handle() -> None:
    disk, _ = make_disk()
    f = disk.open("/a", "wb")
    f.write(b"x" * 100)
    disk.remove("/a")
    disk.fsync_dir("/")
    assert disk.used_bytes == 100
    disk.on_kill()
    assert disk.used_bytes == 0
    disk.check_invariants()


# -- injected faults ---------------------------------------------------------------------------


def test_write_error_raises_eio_and_writes_nothing() -> None:
    disk, events = make_disk(write_error=1.0)
    with disk.open("/f", "wb") as f:
        with pytest.raises(OSError) as err:
            f.write(b"abc")
        assert err.value.errno == errno.EIO and err.value.filename == "/f"
        assert f.tell() == 0
    assert read(disk, "/f") == b""
    assert kinds(events, "disk.eio") == [{"path": "/f", "offset": 0, "size_bytes": 3}]


def test_write_error_probability_is_per_write_and_seeded() -> None:
    def run(seed: int) -> tuple[bytes, int]:
        disk, _ = make_disk(seed, write_error=0.5)
        failures = 0
        with disk.open("/f", "ab") as f:
            for i in range(100):
                try:
                    f.write(bytes([i]))
                except OSError as e:
                    assert e.errno == errno.EIO
                    failures += 1
        return read(disk, "/f"), failures

    data, failures = run(7)
    assert 20 < failures < 80 and len(data) == 100 - failures
    assert list(data) == sorted(data)  # the successful writes, in order, nothing else
    assert run(7) == (data, failures)


def test_capacity_raises_enospc_and_writes_nothing() -> None:
    disk, events = make_disk(capacity=10)
    with disk.open("/a", "wb") as f:
        f.write(b"12345678")
        with pytest.raises(OSError) as err:
            f.write(b"abc")
        assert err.value.errno == errno.ENOSPC
        with pytest.raises(OSError, match="No space"):
            f.truncate(11)
        f.seek(0)
        f.write(b"ABCDEFGHIJ"[:8])  # overwriting in place needs no space
    assert read(disk, "/a") == b"ABCDEFGH"
    assert kinds(events, "disk.enospc")[0] == {"path": "/a", "offset": 8, "size_bytes": 3}
    with disk.open("/b", "wb") as g:
        with pytest.raises(OSError, match="No space"):
            g.write(b"xyz")
        disk.remove("/a")  # freeing space makes room
        assert g.write(b"xyz") == 3
    disk.check_invariants()


def test_read_corruption_flips_one_bit_and_the_stored_data_is_intact() -> None:
    data = bytes(range(256)) * 4
    for seed in range(30):
        disk, events = make_disk(seed)
        write_file(disk, "/f", data, sync=True)
        disk.set_config(DiskConfig(read_corruption=1.0))
        with disk.open("/f", "rb") as f:
            f.seek(100)
            got = f.read(500)
        diff = [i for i in range(500) if got[i] != data[100 + i]]
        assert len(diff) == 1
        flipped = got[diff[0]] ^ data[100 + diff[0]]
        assert bin(flipped).count("1") == 1
        (corrupt,) = kinds(events, "disk.corrupt")
        assert corrupt["offset"] == 100 + diff[0] and flipped == 1 << corrupt["bit"]
        disk.set_config(DiskConfig())
        assert read(disk, "/f") == data


def test_fsync_async_waits_fsync_latency(monkeypatch: pytest.MonkeyPatch) -> None:
    import asyncio

    waits: list[float] = []
    disk, events = make_disk(fsync_latency=0.25)

    async def fake_sleep(delay: float) -> None:
        waits.append(delay)
        assert kinds(events, "disk.fsync") == []  # not durable while waiting

    async def main() -> None:
        with disk.open("/f", "wb") as f:
            f.write(b"x")
            monkeypatch.setattr(disk_mod.asyncio, "sleep", fake_sleep)
            await f.fsync_async()

    asyncio.run(main())
    assert waits == [0.25]
    assert kinds(events, "disk.fsync") == [{"path": "/f", "size_bytes": 1, "synced_bytes": 1}]


# -- files, modes, paths and errors ----------------------------------------------------------


def test_modes() -> None:
    disk, _ = make_disk()
    for bad in ("r", "w", "rt", "rbt", "rwb", "rbb", "b", "qb"):
        with pytest.raises(ValueError):
            disk.open("/f", bad)
    assert parse_mode("br+").canonical == "r+b"
    with pytest.raises(FileNotFoundError):
        disk.open("/f", "rb")
    with pytest.raises(FileNotFoundError):
        disk.open("/f", "r+b")
    with disk.open("/f", "xb") as f:
        f.write(b"abc")
        with pytest.raises(io.UnsupportedOperation):
            f.read()
    with pytest.raises(FileExistsError):
        disk.open("/f", "xb")
    with disk.open("/f", "rb") as f:
        with pytest.raises(io.UnsupportedOperation):
            f.write(b"x")
        assert f.read(2) == b"ab" and f.read() == b"c" and f.read() == b""
    with disk.open("/f", "ab") as f:
        assert f.tell() == 3
        f.seek(0)
        f.write(b"d")  # append mode writes at the end wherever the position is
    with disk.open("/f", "a+b") as f:
        f.seek(0)
        assert f.read() == b"abcd"
    with disk.open("/f", "w+b") as f:
        assert f.read() == b""
        f.seek(3)
        f.write(b"z")
        f.seek(0)
        assert f.read() == b"\0\0\0z"
        assert f.truncate(2) == 2 and f.tell() == 4
    f2 = disk.open("/f", "rb")
    f2.close()
    f2.close()
    with pytest.raises(ValueError, match="closed"):
        f2.read()


def test_paths_are_private_and_rooted() -> None:
    disk, _ = make_disk()
    disk.makedirs("/tmp/pytest-3/n1")
    write_file(disk, "/tmp/pytest-3/n1/log", b"x", sync=False)
    assert read(disk, "tmp/pytest-3/n1/../n1/./log") == b"x"  # relative to "/"
    with pytest.raises(SimulationError, match="above the root"):
        disk.open("/tmp/../../etc/passwd", "rb")
    with pytest.raises(SimulationError):
        disk.exists("..")
    assert disk.listdir("/") == ["tmp"]


def test_errors_mirror_os() -> None:
    disk, _ = make_disk()
    disk.makedirs("/d")
    write_file(disk, "/d/f", b"", sync=False)
    cases = [
        (lambda: disk.open("/nope/f", "wb"), FileNotFoundError, errno.ENOENT),
        (lambda: disk.open("/d", "rb"), IsADirectoryError, errno.EISDIR),
        (lambda: disk.open("/d/f/x", "wb"), NotADirectoryError, errno.ENOTDIR),
        (lambda: disk.listdir("/d/f"), NotADirectoryError, errno.ENOTDIR),
        (lambda: disk.remove("/d"), IsADirectoryError, errno.EISDIR),
        (lambda: disk.remove("/d/g"), FileNotFoundError, errno.ENOENT),
        (lambda: disk.rename("/d/g", "/d/h"), FileNotFoundError, errno.ENOENT),
        (lambda: disk.rename("/d/f", "/d"), IsADirectoryError, errno.EISDIR),
        (lambda: disk.makedirs("/d"), FileExistsError, errno.EEXIST),
        (lambda: disk.makedirs("/d/f", exist_ok=True), FileExistsError, errno.EEXIST),
        (lambda: disk.getsize("/zz"), FileNotFoundError, errno.ENOENT),
        (lambda: disk.fsync_dir("/d/f"), NotADirectoryError, errno.ENOTDIR),
        (lambda: disk.open("/" + "n" * 256, "wb"), OSError, errno.ENAMETOOLONG),
    ]
    for call, exc, code in cases:
        with pytest.raises(exc) as err:
            call()
        assert err.value.errno == code and err.value.filename is not None
    disk.makedirs("/d", exist_ok=True)
    assert disk.getsize("/d/f") == 0 and disk.exists("/d/f") and not disk.exists("/d/f/x")


def test_open_file_limit() -> None:
    disk, _ = make_disk()
    handles = [disk.open(f"/f{i}", "wb") for i in range(disk_mod.MAX_OPEN_FILES)]
    with pytest.raises(OSError) as err:
        disk.open("/one-more", "wb")
    assert err.value.errno == errno.EMFILE
    handles[0].close()
    disk.open("/one-more", "wb").close()


def test_writeback_bounds_the_unsynced_log_and_keeps_prefix_semantics() -> None:
    n = disk_mod.MAX_PENDING_WRITES + 10
    for seed in range(20):
        disk, events = make_disk(seed)
        with disk.open("/f", "wb") as f:
            for i in range(n):
                f.seek(2 * i)  # a gap after each write: nothing merges
                f.write(b"x")
        disk.fsync_dir("/")
        assert kinds(events, "disk.writeback")
        disk.check_invariants()
        disk.on_crash()
        after = read(disk, "/f")
        assert len(after) >= disk_mod.MAX_PENDING_WRITES  # the written-back half is durable
        assert after == (b"x\0" * n)[: len(after)] or after == (b"x\0" * n)[: len(after) - 1]


def test_random_operations_keep_the_invariants_and_synced_data() -> None:
    """A random walk of operations, crashes and kills; after every step the model's
    bookkeeping holds, and a file synced with a durable name always survives."""
    for seed in range(40):
        rng = random.Random(seed)
        disk, _ = make_disk(seed, capacity=4000)
        durable: dict[str, bytes] = {}  # path -> content that must survive any crash
        for _ in range(150):
            name = f"/f{rng.randrange(5)}"
            op = rng.choice(["write", "sync", "rename", "remove", "crash", "kill", "fsync_dir"])
            try:
                if op in ("write", "sync"):
                    with disk.open(name, "ab") as f:
                        f.write(bytes([rng.randrange(256)]) * rng.randrange(1, 50))
                        if op == "sync":
                            f.fsync()
                            disk.fsync_dir("/")
                            durable[name] = read(disk, name)
                elif op == "rename":
                    other = f"/f{rng.randrange(5)}"
                    disk.rename(name, other)
                    disk.fsync_dir("/")
                    if name != other:
                        durable.pop(other, None)
                        if name in durable:
                            durable[other] = durable.pop(name)
                elif op == "remove":
                    disk.remove(name)
                    disk.fsync_dir("/")
                    durable.pop(name, None)
                elif op == "fsync_dir":
                    disk.fsync_dir("/")
                elif op == "crash":
                    disk.on_crash()
                    for path, content in durable.items():
                        assert read(disk, path).startswith(content), (seed, path)
                else:
                    disk.on_kill()
            except OSError as e:
                assert e.errno in (errno.ENOENT, errno.ENOSPC), e
            disk.check_invariants()


def test_same_seed_same_run() -> None:
    def run(seed: int) -> tuple[Events, dict[str, bytes]]:
        disk, events = make_disk(seed, read_corruption=0.3, write_error=0.2)
        for i in range(30):
            try:
                with disk.open(f"/f{i % 4}", "ab") as f:
                    f.write(bytes([i]) * 10)
                    if i % 3 == 0:
                        f.fsync()
            except OSError:
                pass
            if i % 7 == 0:
                disk.on_crash()
        return events, {p: read(disk, "/" + p) for p in disk.listdir("/")}

    assert run(3) == run(3)
    assert run(3) != run(4)


def test_crash_weights_config_is_validated() -> None:
    with pytest.raises(ValueError):
        DiskConfig(crash_weights=(0.0, 0.0, 0.0))
    with pytest.raises(ValueError):
        DiskConfig(crash_weights=(1.0, -1.0, 0.0))
    assert DiskConfig(crash_weights=[1, 0, 0]).crash_weights == (1, 0, 0)  # type: ignore[arg-type]
    for seed in range(30):
        disk, _ = make_disk(seed, crash_weights=(1.0, 0.0, 0.0))
        write_file(disk, "/f", b"data", sync=False)
        disk.on_crash()
        assert read(disk, "/f") == b"data"
