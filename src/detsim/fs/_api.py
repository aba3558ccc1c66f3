"""The durable-file API: one set of calls, the real disk outside a simulation, the node's
simulated disk inside one.

Rules:
- Every call resolves its backend at call time with `backend()`: `REAL` (the `os` calls) when no
  simulation runs in the calling thread, else the calling node's `SimDisk`, found through the
  seam the simulator fills during a run (`detsim.fs._seam`; a call from the supervisor raises
  `SimulationError`). A file object keeps the backend it was opened on.
- Nothing here imports detsim.sim (DESIGN "Layers"): production never loads the simulator.
  `use_backend(disk)` overrides the choice in a block (the seam for unit tests).
- Both backends give the same semantics (see `detsim.sim.disk` for the simulated one and its
  fault model): binary unbuffered files, `write` in the page cache when it returns, durable
  after `fsync()`; a name durable after `fsync_dir` of its directory; `listdir` sorted.
- Paths are `str` or `os.PathLike[str]`; bytes paths are not supported.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
from collections.abc import Iterator
from types import TracebackType
from typing import Protocol, Self

from detsim.fs import _seam
from detsim.fs._real import REAL

PathArg = str | os.PathLike[str]


class DurableFile(Protocol):
    """An open binary file: what `detsim.fs.open` returns in either backend."""

    @property
    def name(self) -> str: ...
    @property
    def mode(self) -> str: ...
    @property
    def closed(self) -> bool: ...
    def readable(self) -> bool: ...
    def writable(self) -> bool: ...
    def seekable(self) -> bool: ...
    def read(self, size: int = -1, /) -> bytes: ...
    def write(self, data: bytes | bytearray | memoryview, /) -> int: ...
    def seek(self, offset: int, whence: int = 0, /) -> int: ...
    def tell(self) -> int: ...
    def truncate(self, size: int | None = None, /) -> int: ...
    def flush(self) -> None: ...
    def fsync(self) -> None: ...
    async def fsync_async(self) -> None: ...
    def close(self) -> None: ...
    def __enter__(self) -> Self: ...
    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


class Backend(Protocol):
    """A disk: `RealBackend` or a node's `detsim.sim.disk.SimDisk`."""

    def open(self, path: str, mode: str) -> DurableFile: ...
    def rename(self, src: str, dst: str) -> None: ...
    def remove(self, path: str) -> None: ...
    def exists(self, path: str) -> bool: ...
    def listdir(self, path: str) -> list[str]: ...
    def makedirs(self, path: str, exist_ok: bool = False) -> None: ...
    def getsize(self, path: str) -> int: ...
    def fsync_dir(self, path: str) -> None: ...


# The seam for tests: a backend that wins over the default one in this context (task-local).
_override: contextvars.ContextVar[Backend | None] = contextvars.ContextVar(
    "detsim_fs_backend", default=None
)


@contextlib.contextmanager
def use_backend(disk: Backend) -> Iterator[Backend]:
    """Run the block with every detsim.fs call going to `disk` (e.g. a `SimDisk` built by a
    unit test, without a whole simulation)."""
    token = _override.set(disk)
    try:
        yield disk
    finally:
        _override.reset(token)


def backend(what: str = "detsim.fs") -> Backend:
    """The disk of the caller: `use_backend`'s, else the real one, else its node's simulated one."""
    override = _override.get()
    if override is not None:
        return override
    simulator = _seam.current()
    if simulator is None:
        return REAL
    return simulator.node_disk(what)


def _path(path: PathArg) -> str:
    p = os.fspath(path)
    if not isinstance(p, str):
        raise TypeError(f"detsim.fs paths are str or os.PathLike[str], got {type(p).__name__}")
    return p


def open(path: PathArg, mode: str) -> DurableFile:
    """Open a file in a binary mode (rb, wb, ab, xb, r+b, w+b, a+b, x+b); text raises ValueError."""
    return backend("detsim.fs.open").open(_path(path), mode)


def rename(src: PathArg, dst: PathArg) -> None:
    """Atomically replace `dst` with `src` (os.replace); durable after fsync_dir of both dirs."""
    backend("detsim.fs.rename").rename(_path(src), _path(dst))


def remove(path: PathArg) -> None:
    """Remove a file's name; durable after fsync_dir of its directory."""
    backend("detsim.fs.remove").remove(_path(path))


def exists(path: PathArg) -> bool:
    return backend("detsim.fs.exists").exists(_path(path))


def listdir(path: PathArg) -> list[str]:
    """The names in a directory, sorted."""
    return backend("detsim.fs.listdir").listdir(_path(path))


def makedirs(path: PathArg, exist_ok: bool = False) -> None:
    """Create a directory and its missing parents; each is durable after fsync_dir of its parent."""
    backend("detsim.fs.makedirs").makedirs(_path(path), exist_ok=exist_ok)


def getsize(path: PathArg) -> int:
    return backend("detsim.fs.getsize").getsize(_path(path))


def fsync_dir(path: PathArg) -> None:
    """Make the creates, renames and removes in directory `path` durable."""
    backend("detsim.fs.fsync_dir").fsync_dir(_path(path))
