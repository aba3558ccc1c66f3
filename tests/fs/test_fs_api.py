"""detsim.fs: the same calls on real files (tmp_path) and, inside a Simulation, on node disks."""

from __future__ import annotations

import asyncio
import errno
import io
import os
import random
import threading
from pathlib import Path
from typing import Any

import pytest

import detsim
from detsim import fs
from detsim.fs import _seam
from detsim.sim.config import DiskConfig
from detsim.sim.disk import SimDisk, SimFile

# -- outside a simulation: real files ----------------------------------------------------------


def test_real_files_round_trip(tmp_path: Path) -> None:
    assert fs.backend() is fs.REAL
    d = tmp_path / "data" / "n1"
    fs.makedirs(d)
    fs.makedirs(d, exist_ok=True)
    with pytest.raises(FileExistsError):
        fs.makedirs(d)
    with fs.open(d / "log.tmp", "wb") as f:
        assert isinstance(f, fs.RealFile)
        assert f.write(b"hello ") == 6 and f.write(memoryview(b"world")) == 5
        f.flush()
        f.fsync()
    fs.rename(d / "log.tmp", d / "log")
    fs.fsync_dir(d)
    assert (d / "log").read_bytes() == b"hello world"  # really on the real disk
    assert fs.listdir(d) == ["log"] and fs.exists(d / "log") and not fs.exists(d / "log.tmp")
    assert fs.getsize(d / "log") == 11
    with fs.open(str(d / "log"), "r+b") as f:
        f.seek(6)
        assert f.read(3) == b"wor" and f.tell() == 9
        f.truncate(5)
        f.seek(0, os.SEEK_END)
        f.write(b"!")
    assert (d / "log").read_bytes() == b"hello!"
    with fs.open(d / "log", "ab") as f:
        f.write(b"?")
    assert (d / "log").read_bytes() == b"hello!?"
    fs.remove(d / "log")
    assert fs.listdir(d) == []


def test_real_rename_replaces_atomically(tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(b"new")
    (tmp_path / "b").write_bytes(b"old")
    fs.rename(tmp_path / "a", tmp_path / "b")
    assert fs.listdir(tmp_path) == ["b"] and (tmp_path / "b").read_bytes() == b"new"


def test_real_fsync_async(tmp_path: Path) -> None:
    async def main() -> bytes:
        with fs.open(tmp_path / "f", "w+b") as f:
            f.write(b"durable")
            await f.fsync_async()
            f.seek(0)
            return f.read()

    assert asyncio.run(main()) == b"durable"


def test_real_fsync_async_of_a_small_write_stays_on_the_loop_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A thread hand-off costs more than the fsync of a small append (the module's rules):
    small ones sync on the loop's thread, a large write's in a worker thread."""
    from detsim.fs import _real

    synced_on: list[int] = []
    real_fsync = os.fsync

    def recording_fsync(fd: int) -> None:
        synced_on.append(threading.get_ident())
        real_fsync(fd)

    monkeypatch.setattr(_real.os, "fsync", recording_fsync)

    async def main() -> None:
        with fs.open(tmp_path / "f", "wb") as f:
            f.write(b"x" * _real.INLINE_FSYNC_MAX_BYTES)
            await f.fsync_async()  # small: on this thread
            f.write(b"y" * (_real.INLINE_FSYNC_MAX_BYTES + 1))
            await f.fsync_async()  # large: a worker thread
            f.write(b"z")
            await f.fsync_async()  # counted from the last sync: small again

    asyncio.run(main())
    here = threading.get_ident()
    assert [t == here for t in synced_on] == [True, False, True]
    assert (tmp_path / "f").stat().st_size == 2 * _real.INLINE_FSYNC_MAX_BYTES + 2


def test_real_errors_and_modes(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="binary"):
        fs.open(tmp_path / "f", "w")
    with pytest.raises(ValueError):
        fs.open(tmp_path / "f", "wt")
    with pytest.raises(FileNotFoundError) as err:
        fs.open(tmp_path / "missing", "rb")
    assert err.value.errno == errno.ENOENT
    with fs.open(tmp_path / "f", "xb") as f, pytest.raises(io.UnsupportedOperation):
        f.read()
    with pytest.raises(FileExistsError):
        fs.open(tmp_path / "f", "xb")
    with pytest.raises(NotADirectoryError):
        fs.fsync_dir(tmp_path / "f")
    with pytest.raises(TypeError):
        fs.exists(b"/tmp")  # type: ignore[arg-type]


# -- the seam: use_backend ---------------------------------------------------------------------


def test_use_backend_routes_every_call_to_a_sim_disk(tmp_path: Path) -> None:
    disk = SimDisk("n1", DiskConfig(), random.Random(0), lambda kind, **fields: None)
    path = tmp_path / "log"  # an absolute real path names a file on the node's disk
    with fs.use_backend(disk):
        fs.makedirs(tmp_path)
        with fs.open(path, "wb") as f:
            assert isinstance(f, SimFile)
            f.write(b"simulated")
        assert fs.listdir(tmp_path) == ["log"]
    assert not path.exists()  # nothing reached the real disk
    assert fs.backend() is fs.REAL


# -- the seam the simulator fills during a run (detsim.fs._seam) ---------------------------------


class FakeSimulator:
    """A stand-in for the simulator's side of the seam: one disk, its own error, an event list."""

    def __init__(self) -> None:
        self.disk = SimDisk("n1", DiskConfig(), random.Random(0), lambda kind, **fields: None)
        self.events: list[tuple[str, dict[str, Any]]] = []

    def node_disk(self, what: str) -> SimDisk:
        return self.disk

    def error(self, message: str) -> Exception:
        return LookupError(message)

    def event(self, kind: str, fields: dict[str, Any]) -> None:
        self.events.append((kind, fields))


def test_the_seam_is_per_thread_and_empty_outside_a_run(tmp_path: Path) -> None:
    fake = FakeSimulator()
    seen_by_other_thread: list[object] = []
    _seam.install(fake)
    try:
        assert fs.backend() is fake.disk
        with pytest.raises(LookupError, match="real file inside a simulation"):
            fs.REAL.open(str(tmp_path / "x"), "wb")  # the simulator's error, raised by fs
        _seam.event("records.torn_tail", path="/log")
        worker = threading.Thread(target=lambda: seen_by_other_thread.append(fs.backend()))
        worker.start()
        worker.join()
    finally:
        _seam.remove(fake)
    assert seen_by_other_thread == [fs.REAL]  # another thread stays in the real world
    assert fake.events == [("records.torn_tail", {"path": "/log"})]
    assert fs.backend() is fs.REAL
    _seam.event("records.torn_tail", path="/log")  # outside a run: nothing, no error
    assert len(fake.events) == 1


def test_a_run_fills_the_seam_and_empties_it_even_when_it_fails() -> None:
    sim = detsim.Simulation(seed=1)
    node = sim.add_node("n1", ip="10.0.0.1")

    async def on_node() -> bool:
        return fs.backend() is node.disk

    async def main() -> bool:
        assert _seam.current() is not None
        return await node.spawn(on_node())

    assert sim.run(main()) is True
    assert _seam.current() is None

    async def failing() -> None:
        raise KeyError("boom")

    with pytest.raises(KeyError):
        detsim.Simulation(seed=1).run(failing())
    assert _seam.current() is None and fs.backend() is fs.REAL


# -- inside a simulation -----------------------------------------------------------------------


def run_on_node(seed: int, body: Any, disk: DiskConfig | None = None) -> Any:
    sim = detsim.Simulation(seed=seed, disk=disk)
    node = sim.add_node("n1", ip="10.0.0.1")

    async def main() -> Any:
        return await body(sim, node)

    return sim.run(main())


async def write(path: str, data: bytes, *, sync: bool) -> None:
    with fs.open(path, "ab") as f:
        f.write(data)
        if sync:
            f.fsync()


async def read(path: str) -> bytes | None:
    if not fs.exists(path):
        return None
    with fs.open(path, "rb") as f:
        return f.read()


def test_sim_crash_keeps_synced_data_and_tears_the_rest() -> None:
    d = "/tmp/pytest-3/n1"

    async def body(sim: detsim.Simulation, node: detsim.Node) -> bytes | None:
        async def setup() -> None:
            fs.makedirs(d)
            for parent in ("/", "/tmp", "/tmp/pytest-3", d):
                fs.fsync_dir(parent)
            await write(f"{d}/log", b"S" * 20, sync=True)
            fs.fsync_dir(d)
            await write(f"{d}/log", b"u" * 20, sync=False)

        await node.spawn(setup())
        sim.crash(node)
        sim.restart(node)
        return await node.spawn(read(f"{d}/log"))

    results = [run_on_node(seed, body) for seed in range(40)]
    for got in results:
        assert got is not None and got.startswith(b"S" * 20)
        assert (b"u" * 20).startswith(got[20:])
    assert {len(g or b"") for g in results} >= {20, 40}
    assert any(20 < len(g or b"") < 40 for g in results)  # torn


def test_sim_kill_keeps_page_cache() -> None:
    async def setup() -> None:
        fs.makedirs("data")
        await write("data/log", b"written", sync=False)

    async def body(sim: detsim.Simulation, node: detsim.Node) -> bytes | None:
        await node.spawn(setup())
        sim.kill(node)
        sim.restart(node)
        return await node.spawn(read("/data/log"))

    for seed in range(10):
        assert run_on_node(seed, body) == b"written"


def test_sim_fsync_async_takes_fsync_latency_of_virtual_time() -> None:
    async def body(sim: detsim.Simulation, node: detsim.Node) -> float:
        async def sync_once() -> float:
            with fs.open("/f", "wb") as f:
                f.write(b"x")
                start = asyncio.get_running_loop().time()
                await f.fsync_async()
                return asyncio.get_running_loop().time() - start

        return await node.spawn(sync_once())

    elapsed = run_on_node(1, body, disk=DiskConfig(fsync_latency=0.5))
    assert elapsed == pytest.approx(0.5)


def test_sim_crash_during_fsync_async_loses_nothing_that_was_synced() -> None:
    async def body(sim: detsim.Simulation, node: detsim.Node) -> bytes | None:
        async def slow_sync() -> None:
            fs.fsync_dir("/")
            with fs.open("/f", "wb") as f:
                f.write(b"A")
                f.fsync()
                fs.fsync_dir("/")
                f.write(b"B")
                await f.fsync_async()

        node.spawn(slow_sync())
        await asyncio.sleep(0.1)  # the crash lands while the fsync waits
        sim.crash(node)
        sim.restart(node)
        return await node.spawn(read("/f"))

    results = {run_on_node(seed, body, disk=DiskConfig(fsync_latency=1.0)) for seed in range(30)}
    assert results == {b"A", b"AB"}


def test_sim_disks_are_private_per_node_and_supervisor_has_none() -> None:
    sim = detsim.Simulation(seed=1)
    n1 = sim.add_node("n1", ip="10.0.0.1")
    n2 = sim.add_node("n2", ip="10.0.0.2")

    async def exists() -> bool:
        return fs.exists("/shared-name")

    async def main() -> tuple[bytes | None, bool]:
        await n1.spawn(write("/shared-name", b"1", sync=False))
        with pytest.raises(detsim.SimulationError, match="supervisor"):
            fs.exists("/shared-name")  # the supervisor is not a host
        with pytest.raises(detsim.SimulationError, match="above the root"):
            await n1.spawn(read("/../etc/passwd"))
        return await n1.spawn(read("/shared-name")), await n2.spawn(exists())

    assert sim.run(main()) == (b"1", False)


def test_sim_real_file_inside_a_simulation_raises(tmp_path: Path) -> None:
    f = fs.open(tmp_path / "real", "wb")
    sim = detsim.Simulation(seed=1)
    node = sim.add_node("n1", ip="10.0.0.1")

    async def leak() -> None:
        f.write(b"x")

    async def main() -> None:
        with pytest.raises(detsim.SimulationError, match="real file"):
            await node.spawn(leak())

    sim.run(main())
    f.close()
    assert (tmp_path / "real").read_bytes() == b""


def test_sim_set_disk_injects_faults_and_events_are_traced() -> None:
    sim = detsim.Simulation(seed=5)
    node = sim.add_node("n1", ip="10.0.0.1")

    async def eio() -> int:
        with fs.open("/f", "wb") as f:
            try:
                f.write(b"x")
            except OSError as e:
                return e.errno or 0
        return 0

    async def main() -> int:
        sim.set_disk(node, DiskConfig(write_error=1.0))
        return await node.spawn(eio())

    assert sim.run(main()) == errno.EIO
    injected = [ev for ev in sim.events if ev["kind"] == "disk.eio"]
    assert injected == [
        {"t": 0.0, "node": "n1", "kind": "disk.eio", "path": "/f", "offset": 0, "size_bytes": 1}
    ]
    assert any(ev["kind"] == "set_disk" for ev in sim.events)


def test_sim_same_seed_same_trace() -> None:
    def once(seed: int) -> str:
        sim = detsim.Simulation(seed=seed)
        node = sim.add_node("n1", ip="10.0.0.1")

        async def main() -> None:
            for i in range(5):
                await node.spawn(write(f"/f{i % 2}", b"x" * (i + 1), sync=i % 2 == 0))
                sim.crash(node)
                sim.restart(node)

        sim.run(main())
        return sim.trace_hash

    assert once(11) == once(11)
