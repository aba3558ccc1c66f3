"""The real backend of `detsim.fs`: the operating system's files, used outside a simulation.

Rules:
- Files are unbuffered (`io.FileIO`), as in the simulated backend: a `write` is in the OS page
  cache when it returns (it survives a process crash), `flush()` has nothing to do, and only
  `fsync()` makes data durable. So the same code loses the same things in both backends.
- `write` writes everything or raises (short writes of the OS are retried).
- A real file used inside a running simulation raises `SimulationError` (the simulator's error,
  through the seam): nothing reaches the real world from a simulated host.
- `fsync_async` runs `os.fsync` off the event loop, in a worker thread, unless at most
  `INLINE_FSYNC_MAX_BYTES` were written since the file's last fsync: then on the loop's thread.
  Handing a call to a thread and back costs more than such an fsync: on this project's 2-core
  VM, 0.155 ms of CPU and 0.19 ms of wall time per call against 0.17 ms for the fsync of a
  small append (BENCHMARKS.md, "The store, one client"); a Raft log's group commits are that
  size. A snapshot's large writes still sync in a thread. The price: a disk that stalls on a
  small fsync stalls the loop for as long (the Raft loop waits for that fsync either way).
"""

from __future__ import annotations

import asyncio
import io
import os
from types import TracebackType
from typing import Self

from detsim.fs import _seam
from detsim.fs._modes import parse_mode

MAX_SHORT_WRITE_RETRIES = 1_000  # a write that makes no progress this often is an error
#: fsync_async syncs on the loop's own thread when at most this many bytes were written since
#: the last fsync (the rules above): about 64 us more of disk time than an empty sync at 1 GB/s.
INLINE_FSYNC_MAX_BYTES = 64 * 1024


def _no_leak(what: str) -> None:
    simulator = _seam.current()
    if simulator is not None:
        raise simulator.error(
            f"{what} on a real file inside a simulation: open files with detsim.fs on a node"
        )


class RealFile:
    """An open OS file with `fsync()` / `await fsync_async()` (the file object of detsim.fs)."""

    def __init__(self, path: str, mode: str) -> None:
        self._mode = parse_mode(mode).canonical
        self._raw = io.FileIO(path, self._mode.replace("b", ""))
        self._path = path
        self._unsynced_bytes = 0  # written since the last fsync (fsync_async's choice)

    def __repr__(self) -> str:
        return f"<RealFile {self._path!r} mode={self._mode!r}>"

    @property
    def name(self) -> str:
        return self._path

    @property
    def mode(self) -> str:
        return self._mode

    @property
    def closed(self) -> bool:
        return self._raw.closed

    def readable(self) -> bool:
        return self._raw.readable()

    def writable(self) -> bool:
        return self._raw.writable()

    def seekable(self) -> bool:
        return self._raw.seekable()

    def read(self, size: int = -1, /) -> bytes:
        _no_leak("read")
        data = self._raw.read(size)
        return b"" if data is None else data

    def write(self, data: bytes | bytearray | memoryview, /) -> int:
        _no_leak("write")
        view = memoryview(data).cast("B")
        done = 0
        for _ in range(MAX_SHORT_WRITE_RETRIES):
            if done == len(view):
                return done
            n = self._raw.write(view[done:])
            done += n or 0
            self._unsynced_bytes += n or 0
        raise OSError(f"{self._path}: write made no progress after {MAX_SHORT_WRITE_RETRIES} tries")

    def seek(self, offset: int, whence: int = os.SEEK_SET, /) -> int:
        return self._raw.seek(offset, whence)

    def tell(self) -> int:
        return self._raw.tell()

    def truncate(self, size: int | None = None, /) -> int:
        _no_leak("truncate")
        return self._raw.truncate(size)

    def flush(self) -> None:
        self._raw.flush()

    def fsync(self) -> None:
        _no_leak("fsync")
        self._unsynced_bytes = 0
        os.fsync(self._raw.fileno())

    async def fsync_async(self) -> None:
        """`os.fsync` in a worker thread, so the event loop keeps running meanwhile; on the
        loop's thread if at most INLINE_FSYNC_MAX_BYTES were written since the last one (the
        module's rules: the hand-off would cost more than the sync)."""
        _no_leak("fsync_async")
        small = self._unsynced_bytes <= INLINE_FSYNC_MAX_BYTES
        self._unsynced_bytes = 0
        if small:
            os.fsync(self._raw.fileno())
        else:
            await asyncio.to_thread(os.fsync, self._raw.fileno())

    def close(self) -> None:
        self._raw.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class RealBackend:
    """The `os` calls behind the module functions of detsim.fs."""

    def open(self, path: str, mode: str) -> RealFile:
        _no_leak("open")
        return RealFile(path, mode)

    def rename(self, src: str, dst: str) -> None:
        _no_leak("rename")
        os.replace(src, dst)

    def remove(self, path: str) -> None:
        _no_leak("remove")
        os.remove(path)

    def exists(self, path: str) -> bool:
        return os.path.exists(path)

    def listdir(self, path: str) -> list[str]:
        return sorted(os.listdir(path))

    def makedirs(self, path: str, exist_ok: bool = False) -> None:
        _no_leak("makedirs")
        os.makedirs(path, exist_ok=exist_ok)

    def getsize(self, path: str) -> int:
        return os.path.getsize(path)

    def fsync_dir(self, path: str) -> None:
        """Make the directory's entries durable: fsync of the directory opened read-only."""
        _no_leak("fsync_dir")
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


REAL = RealBackend()
