"""The simulated disk of one node: its files, its directories, and the faults it injects.

This module owns the storage model behind `detsim.fs` inside a simulation. One `SimDisk` per node
(built by `Node.disk`, kept across restarts), private to that node, rooted at "/", held in memory:
nothing here touches the real file system.

FAULT MODEL — what code under test can rely on, and what it must survive.

State. Like a POSIX file system, names and data are separate: an inode holds data, a directory
maps names to inodes (so a rename moves a name, not data, and an open handle keeps its inode
after the name is renamed or removed). Each has two images:
- a file: a *volatile* image (what reads see: the page cache) and a *durable* image (what is on
  the platter), plus the log of writes and truncates since its last fsync, in issue order;
- a directory: a *volatile* listing and a *durable* listing, plus the log of name changes
  (create, rename, remove, mkdir) since its last `fsync_dir`.
Applying the log to the durable image always gives the volatile image (checked by
`check_invariants`).

Durability.
- `f.fsync()` / `await f.fsync_async()` makes that file's *data* durable (durable := volatile).
  It does not make its *name* durable.
- `fsync_dir(d)` makes d's *listing* durable: every create, rename and remove in d. A rename
  between two directories is a remove in one and a create in the other: both must be fsynced.
- Background writeback: a file with more than `MAX_PENDING_WRITES` unsynced writes (or
  `MAX_PENDING_WRITE_UNITS` bytes) has its oldest writes made durable, as a kernel flushes dirty
  pages on its own; likewise a directory with more than `MAX_PENDING_NAME_CHANGES` unsynced
  changes commits its oldest two as one (a journal transaction). Both are traced. Neither ever
  makes durable anything a crash could not have kept anyway.

Power loss: `on_crash()` (`sim.crash(node)`). Every open handle dies. Then, with the seeded
`rng` and `DiskConfig.crash_weights` (relative weights of keep / lose / tear):
- each directory's unsynced name changes are all kept, all undone, or torn: a prefix of them,
  in issue order, is kept. Each change is atomic (a rename within one directory never leaves
  both names or neither); a rename across directories may leave both names or neither unless
  both directories were fsynced. Files and directories no longer reachable from "/" are gone.
- then each surviving file's unsynced data is kept, lost, or torn: a prefix, in issue order, of
  its unsynced writes survives, the last one cut at a byte (a truncate counts as one unit,
  applied whole or not at all). Writes are never reordered, never land in the wrong place, and
  synced data is never damaged by a crash.
Process crash: `on_kill()` (`sim.kill(node)`). The page cache survives: every byte written is
still there (and still unsynced: a later crash may lose it). Open handles die; files whose only
reference was an open handle (unlinked while open) are freed.

Injected faults, each decided per operation with the node's seeded `rng`, current `DiskConfig`
(switchable at run time with `set_config`):
- `read_corruption`: a read that returns data returns it with one bit flipped, at a seeded
  offset. Transient: the stored data is intact, so a re-read is (most likely) correct.
- `write_error`: a write raises `OSError(EIO)` and writes nothing.
- `capacity`: a write or truncate that would grow the bytes in use (sum of the sizes of files
  that have a name or an open handle) past `capacity` raises `OSError(ENOSPC)` and writes
  nothing (no short writes). With `capacity=None` the bound is `UNBOUNDED_CAPACITY_BYTES`,
  the simulator's memory limit.
- `fsync_latency`: `await f.fsync_async()` sleeps that many virtual seconds, then syncs (a crash
  during the sleep loses the data). Plain `fsync()` and `fsync_dir()` take no virtual time.
Not modelled: fsync errors, reordered or misdirected writes, latent sector errors, corruption at
rest, symlinks, permissions, hard links (no API creates them; the model would support them).

Handles. A handle belongs to the boot that opened it: after kill or crash, using it raises
`SimulationError` (a process's open files die with it; a handle kept in a global across a
restart is a bug), except `close()`, which is then a no-op. Using a node's handle from another
node raises `SimulationError`.

Trace events (`record(kind, **fields)`, small JSON values; paths are the last name an inode was
opened or renamed by): `disk.fsync`, `disk.fsync_dir`, `disk.writeback`, `disk.crash_file`
(outcome kept / lost / torn, size_bytes after, unsynced_bytes, kept_bytes), `disk.crash_name`
(op, outcome kept / undone), `disk.eio`, `disk.enospc`, `disk.corrupt` (offset, bit).

Paths: "/"-separated, relative paths are relative to "/", "." and ".." resolve lexically and a
".." above the root raises `SimulationError`. Errors mirror the os ones (FileNotFoundError,
FileExistsError, IsADirectoryError, NotADirectoryError, ... with errno and filename).
"""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import io
import os
import random
from collections.abc import Iterator
from types import TracebackType
from typing import Any, Protocol, Self

from detsim.fs._modes import OpenMode, parse_mode
from detsim.sim import runtime
from detsim.sim.config import DiskConfig
from detsim.sim.errors import SimulationError

MAX_NAME_BYTES = 255  # one path component, as NAME_MAX on Linux
MAX_PATH_BYTES = 4096  # a whole path, as PATH_MAX on Linux
MAX_OPEN_FILES = 1024  # open handles per node; past it, OSError(EMFILE)
MAX_INODES = 100_000  # files and directories per disk; past it, OSError(ENOSPC)
UNBOUNDED_CAPACITY_BYTES = 1 << 30  # the capacity of a disk whose DiskConfig.capacity is None
MAX_PENDING_WRITES = 1024  # unsynced writes kept per file before background writeback
MAX_PENDING_WRITE_UNITS = 16 << 20  # unsynced bytes (+1 a truncate) per file before writeback
MAX_PENDING_NAME_CHANGES = 1024  # unsynced name changes per directory before a journal commit

ROOT_INO = 1


class Recorder(Protocol):
    def __call__(self, kind: str, /, **fields: Any) -> None: ...


# ----------------------------------------------------------------------------------------------
# Inodes and their logs


@dataclasses.dataclass(slots=True)
class _Write:
    offset: int
    data: bytearray


@dataclasses.dataclass(slots=True)
class _Truncate:
    size_bytes: int


_DataOp = _Write | _Truncate


def _apply(buf: bytearray, op: _DataOp, limit_bytes: int | None = None) -> None:
    """Apply one data op to `buf`; a write is cut to its first `limit_bytes` bytes if given."""
    if isinstance(op, _Truncate):
        if op.size_bytes < len(buf):
            del buf[op.size_bytes :]
        else:
            buf.extend(bytes(op.size_bytes - len(buf)))
        return
    data = op.data if limit_bytes is None else op.data[:limit_bytes]
    if op.offset > len(buf):
        buf.extend(bytes(op.offset - len(buf)))
    buf[op.offset : op.offset + len(data)] = data


def _units(op: _DataOp) -> int:
    """How many tear points an op has: each byte of a write, or one for a truncate."""
    return len(op.data) if isinstance(op, _Write) else 1


class _File:
    __slots__ = (
        "durable",
        "handles",
        "ino",
        "links",
        "path",
        "pending",
        "pending_units",
        "volatile",
    )

    def __init__(self, ino: int, path: str) -> None:
        self.ino = ino
        self.path = path  # the last name it was opened or renamed by: for trace and errors
        self.durable = bytearray()
        self.volatile = bytearray()
        self.pending: list[_DataOp] = []  # since the last fsync, in issue order
        self.pending_units = 0  # tear points in `pending`: bytes written, plus one per truncate
        self.links = 0  # names in volatile listings
        self.handles = 0  # open handles of the current boot

    @property
    def live(self) -> bool:
        """Counts toward the bytes in use: it has a name or an open handle."""
        return self.links > 0 or self.handles > 0


@dataclasses.dataclass(slots=True)
class _NameChange:
    op: str  # create, mkdir, remove, rename, rename_from, rename_to, batch
    changes: dict[str, int | None]  # name -> inode (None: removed); applied in order
    detail: dict[str, str]  # for the trace: name, or src and dst


class _Dir:
    __slots__ = ("durable", "ino", "path", "pending", "volatile")

    def __init__(self, ino: int, path: str) -> None:
        self.ino = ino
        self.path = path
        self.durable: dict[str, int] = {}
        self.volatile: dict[str, int] = {}
        self.pending: list[_NameChange] = []  # since the last fsync_dir, in issue order


_Inode = _File | _Dir


def _os_error(code: int, path: str, detail: str = "") -> OSError:
    # OSError(errno, ...) builds the matching subclass (FileNotFoundError for ENOENT, ...).
    message = os.strerror(code) + (f" ({detail})" if detail else "")
    return OSError(code, message, path)


def _join(parts: list[str]) -> str:
    return "/" + "/".join(parts)


# ----------------------------------------------------------------------------------------------
# The disk


class SimDisk:
    """One node's disk. Its methods are the simulated backend of `detsim.fs`."""

    def __init__(
        self, node_name: str, config: DiskConfig, rng: random.Random, record: Recorder
    ) -> None:
        self.node_name = node_name
        self._config = config
        self._rng = rng
        self._record = record
        self._inodes: dict[int, _Inode] = {ROOT_INO: _Dir(ROOT_INO, "/")}
        self._next_ino = ROOT_INO + 1
        self._used_bytes = 0  # sum of len(volatile) over live files
        self._open_files = 0
        self._epoch = 0  # bumped at kill and crash: handles of older epochs are dead
        self._last_death = ""  # "killed" or "crashed", for the error of a dead handle

    # -- configuration and lifecycle (called by the simulator) ----------------------------------

    @property
    def config(self) -> DiskConfig:
        return self._config

    def set_config(self, config: DiskConfig) -> None:
        """Switch this disk's faults from now on (`sim.set_disk(node, DiskConfig(...))`)."""
        self._config = config  # the simulator records the change (`set_disk` event)

    @property
    def used_bytes(self) -> int:
        return self._used_bytes

    def on_kill(self) -> None:
        """Process crash: the page cache survives; open handles die."""
        self._kill_handles("killed")
        self._collect()

    def on_crash(self) -> None:
        """Power loss: unsynced names and data are kept, lost or torn (see the module header)."""
        self._kill_handles("crashed")
        for ino in sorted(self._inodes):
            node = self._inodes[ino]
            if isinstance(node, _Dir) and node.pending:
                self._crash_dir(node)
        reachable = self._reachable(durable=False)
        self._inodes = {ino: self._inodes[ino] for ino in sorted(reachable)}
        for node in self._inodes.values():
            if isinstance(node, _File) and node.pending:
                self._crash_file(node)
        self._count_links()
        self._recount()
        self.check_invariants()

    def _kill_handles(self, how: str) -> None:
        self._epoch += 1
        self._last_death = how
        self._open_files = 0
        for node in self._inodes.values():
            if isinstance(node, _File):
                node.handles = 0
        self._recount()

    def _draw_outcome(self) -> str:
        keep, lose, tear = self._config.crash_weights
        return self._rng.choices(("kept", "lost", "torn"), weights=(keep, lose, tear))[0]

    def _crash_dir(self, d: _Dir) -> None:
        outcome = self._draw_outcome()
        n = len(d.pending)
        kept = {"kept": n, "lost": 0}.get(outcome)
        if kept is None:
            kept = self._rng.randint(0, n)
        listing = dict(d.durable)
        for i, change in enumerate(d.pending):
            if i < kept:
                _apply_names(listing, change.changes)
            fate = "kept" if i < kept else "undone"
            self._record("disk.crash_name", dir=d.path, op=change.op, outcome=fate, **change.detail)
        d.durable = listing
        d.volatile = dict(listing)
        d.pending.clear()

    def _crash_file(self, f: _File) -> None:
        outcome = self._draw_outcome()
        total_units = sum(_units(op) for op in f.pending)
        unsynced_bytes = sum(len(op.data) for op in f.pending if isinstance(op, _Write))
        if outcome == "kept":
            cut = total_units
        elif outcome == "lost":
            cut = 0
        elif total_units >= 2:
            cut = self._rng.randint(1, total_units - 1)
        else:
            outcome, cut = "lost", 0  # nothing to tear: one byte or one truncate
        kept_bytes = 0
        for op in f.pending:
            if cut <= 0:
                break
            take = min(_units(op), cut)
            _apply(f.durable, op, take if isinstance(op, _Write) else None)
            kept_bytes += take if isinstance(op, _Write) else 0
            cut -= take
        f.volatile = bytearray(f.durable)
        f.pending.clear()
        f.pending_units = 0
        self._record(
            "disk.crash_file",
            path=f.path,
            outcome=outcome,
            size_bytes=len(f.durable),
            unsynced_bytes=unsynced_bytes,
            kept_bytes=kept_bytes,
        )

    # -- bookkeeping ----------------------------------------------------------------------------

    def _reachable(self, durable: bool) -> set[int]:
        """Inodes reachable from "/"; with durable=True also through durable and pending names."""
        seen = {ROOT_INO}
        stack = [ROOT_INO]
        while stack:
            node = self._inodes[stack.pop()]
            if not isinstance(node, _Dir):
                continue
            for ino in self._children(node, durable):
                if ino not in seen and ino in self._inodes:
                    seen.add(ino)
                    stack.append(ino)
        return seen

    @staticmethod
    def _children(d: _Dir, durable: bool) -> Iterator[int]:
        yield from d.volatile.values()
        if durable:
            yield from d.durable.values()
            for change in d.pending:
                yield from (ino for ino in change.changes.values() if ino is not None)

    def _collect(self) -> None:
        """Free inodes that neither a name (volatile, durable or pending) nor a handle keeps."""
        keep = self._reachable(durable=True)
        keep.update(ino for ino, n in self._inodes.items() if isinstance(n, _File) and n.handles)
        for ino in [ino for ino in self._inodes if ino not in keep]:
            del self._inodes[ino]

    def _count_links(self) -> None:
        for node in self._inodes.values():
            if isinstance(node, _File):
                node.links = 0
        for node in self._inodes.values():
            if isinstance(node, _Dir):
                for ino in node.volatile.values():
                    child = self._inodes[ino]
                    if isinstance(child, _File):
                        child.links += 1

    def _recount(self) -> None:
        self._used_bytes = sum(
            len(n.volatile) for n in self._inodes.values() if isinstance(n, _File) and n.live
        )

    def check_invariants(self) -> None:
        """Assert the model's invariants (tests call it; crash calls it). O(disk size)."""
        used = 0
        handles = 0
        links: dict[int, int] = {}
        for node in self._inodes.values():
            if isinstance(node, _Dir):
                listing = dict(node.durable)
                for change in node.pending:
                    _apply_names(listing, change.changes)
                assert listing == node.volatile, f"{node.path}: durable + log != volatile"
                for ino in node.volatile.values():
                    links[ino] = links.get(ino, 0) + 1
                continue
            image = bytearray(node.durable)
            for op in node.pending:
                _apply(image, op)
            assert image == node.volatile, f"{node.path}: durable + log != volatile"
            used += len(node.volatile) if node.live else 0
            handles += node.handles
        for ino, node in self._inodes.items():
            if isinstance(node, _File):
                assert node.links == links.get(ino, 0), f"{node.path}: link count"
        assert used == self._used_bytes, "used bytes"
        assert handles == self._open_files, "open handles"

    # -- paths ----------------------------------------------------------------------------------

    def _parts(self, path: str) -> list[str]:
        if not isinstance(path, str):
            raise TypeError(f"path must be a str, got {type(path).__name__}")
        if "\0" in path:
            raise ValueError("embedded null byte in path")
        if len(path.encode()) > MAX_PATH_BYTES:
            raise _os_error(errno.ENAMETOOLONG, path)
        if not path:
            raise _os_error(errno.ENOENT, path)
        parts: list[str] = []
        for comp in path.split("/"):
            if comp in ("", "."):
                continue
            if comp == "..":
                if not parts:
                    raise SimulationError(
                        f"path {path!r} climbs above the root of node {self.node_name}'s disk"
                    )
                parts.pop()
                continue
            if len(comp.encode()) > MAX_NAME_BYTES:
                raise _os_error(errno.ENAMETOOLONG, path)
            parts.append(comp)
        return parts

    def _walk(self, parts: list[str], path: str) -> _Inode:
        node: _Inode = self._inodes[ROOT_INO]
        for comp in parts:
            if not isinstance(node, _Dir):
                raise _os_error(errno.ENOTDIR, path)
            ino = node.volatile.get(comp)
            if ino is None:
                raise _os_error(errno.ENOENT, path)
            node = self._inodes[ino]
        return node

    def _dir_at(self, parts: list[str], path: str) -> _Dir:
        node = self._walk(parts, path)
        if not isinstance(node, _Dir):
            raise _os_error(errno.ENOTDIR, path)
        return node

    def _parent(self, path: str) -> tuple[_Dir, str, str]:
        """The parent directory of `path`, its last component, and the normalized path."""
        parts = self._parts(path)
        if not parts:
            raise _os_error(errno.EISDIR, path, "the root directory")
        return self._dir_at(parts[:-1], path), parts[-1], _join(parts)

    # -- name changes ---------------------------------------------------------------------------

    def _new_ino(self, path: str) -> int:
        if len(self._inodes) >= MAX_INODES:
            self._collect()
            if len(self._inodes) >= MAX_INODES:
                raise _os_error(errno.ENOSPC, path, f"{MAX_INODES} inodes in use")
        ino = self._next_ino
        self._next_ino += 1
        return ino

    def _change(self, d: _Dir, change: _NameChange) -> None:
        """Apply a name change to d's volatile listing, keeping link counts and used bytes."""
        for name, ino in change.changes.items():
            old = d.volatile.get(name)
            if old is not None:
                self._relink(old, -1)
                del d.volatile[name]
            if ino is not None:
                d.volatile[name] = ino
                self._relink(ino, +1)
        d.pending.append(change)
        if len(d.pending) > MAX_PENDING_NAME_CHANGES:
            self._commit_oldest_changes(d)

    def _relink(self, ino: int, delta: int) -> None:
        node = self._inodes[ino]
        if isinstance(node, _File):
            was_live = node.live
            node.links += delta
            assert node.links >= 0, f"{node.path}: negative link count"
            self._account(node, was_live)

    def _account(self, f: _File, was_live: bool) -> None:
        if was_live != f.live:
            self._used_bytes += len(f.volatile) if f.live else -len(f.volatile)

    def _commit_oldest_changes(self, d: _Dir) -> None:
        # A journal commits in transactions: fold the two oldest changes into one atomic change,
        # which only removes crash outcomes (the cut between them), never adds one.
        first, second = d.pending[0], d.pending[1]
        merged = _NameChange("batch", {**first.changes, **second.changes}, {"names": "several"})
        d.pending[0:2] = [merged]
        self._record("disk.writeback", path=d.path, name_changes=2)

    # -- the backend API of detsim.fs -----------------------------------------------------------

    def open(self, path: str, mode: str) -> SimFile:
        """Open a file on this disk (`detsim.fs.open` inside a simulation)."""
        m = parse_mode(mode)
        parent, name, full = self._parent(path)
        if self._open_files >= MAX_OPEN_FILES:
            raise _os_error(errno.EMFILE, path, f"{MAX_OPEN_FILES} files open on this node")
        ino = parent.volatile.get(name)
        if ino is None:
            if not m.create:
                raise _os_error(errno.ENOENT, path)
            f = _File(self._new_ino(path), full)
            self._inodes[f.ino] = f
            self._change(parent, _NameChange("create", {name: f.ino}, {"name": name}))
        else:
            node = self._inodes[ino]
            if isinstance(node, _Dir):
                raise _os_error(errno.EISDIR, path)
            if m.exclusive:
                raise _os_error(errno.EEXIST, path)
            f = node
            f.path = full
            if m.truncate and f.volatile:
                self._truncate(f, 0, full)
        was_live = f.live
        f.handles += 1
        self._open_files += 1
        self._account(f, was_live)
        return SimFile(self, f, m, full)

    def remove(self, path: str) -> None:
        parent, name, _ = self._parent(path)
        ino = parent.volatile.get(name)
        if ino is None:
            raise _os_error(errno.ENOENT, path)
        if isinstance(self._inodes[ino], _Dir):
            raise _os_error(errno.EISDIR, path)
        self._change(parent, _NameChange("remove", {name: None}, {"name": name}))

    def rename(self, src: str, dst: str) -> None:
        """Atomically point `dst` at `src`'s inode and remove `src` (os.replace)."""
        src_dir, src_name, src_full = self._parent(src)
        dst_dir, dst_name, dst_full = self._parent(dst)
        ino = src_dir.volatile.get(src_name)
        if ino is None:
            raise _os_error(errno.ENOENT, src)
        target = dst_dir.volatile.get(dst_name)
        if target == ino:
            return  # POSIX: two names of one file: nothing to do
        self._check_rename(self._inodes[ino], target, src_full, dst_full, dst)
        detail = {"src": src_full, "dst": dst_full}
        if src_dir is dst_dir:
            self._change(src_dir, _NameChange("rename", {src_name: None, dst_name: ino}, detail))
        else:
            self._change(src_dir, _NameChange("rename_from", {src_name: None}, detail))
            self._change(dst_dir, _NameChange("rename_to", {dst_name: ino}, detail))
        self._inodes[ino].path = dst_full

    def _check_rename(
        self, node: _Inode, target: int | None, src_full: str, dst_full: str, dst: str
    ) -> None:
        if isinstance(node, _Dir) and (dst_full + "/").startswith(src_full + "/"):
            raise _os_error(errno.EINVAL, dst, "a directory cannot move into itself")
        if target is None:
            return
        existing = self._inodes[target]
        if isinstance(node, _File) and isinstance(existing, _Dir):
            raise _os_error(errno.EISDIR, dst)
        if isinstance(node, _Dir) and isinstance(existing, _File):
            raise _os_error(errno.ENOTDIR, dst)
        if isinstance(existing, _Dir) and existing.volatile:
            raise _os_error(errno.ENOTEMPTY, dst)

    def exists(self, path: str) -> bool:
        try:
            self._walk(self._parts(path), path)
        except OSError:
            return False
        return True

    def listdir(self, path: str) -> list[str]:
        """The names in a directory, sorted (deterministic, like the real backend)."""
        return sorted(self._dir_at(self._parts(path), path).volatile)

    def makedirs(self, path: str, exist_ok: bool = False) -> None:
        parts = self._parts(path)
        d = self._inodes[ROOT_INO]
        assert isinstance(d, _Dir)
        created = False
        for i, comp in enumerate(parts):
            ino = d.volatile.get(comp)
            if ino is None:
                child = _Dir(self._new_ino(path), _join(parts[: i + 1]))
                self._inodes[child.ino] = child
                self._change(d, _NameChange("mkdir", {comp: child.ino}, {"name": comp}))
                d, created = child, True
                continue
            node = self._inodes[ino]
            if not isinstance(node, _Dir):
                code = errno.EEXIST if i == len(parts) - 1 else errno.ENOTDIR
                raise _os_error(code, path)
            d = node
        if not created and not exist_ok:
            raise _os_error(errno.EEXIST, path)

    def getsize(self, path: str) -> int:
        """A file's size in bytes (what reads see); 0 for a directory."""
        node = self._walk(self._parts(path), path)
        return len(node.volatile) if isinstance(node, _File) else 0

    def fsync_dir(self, path: str) -> None:
        """Make the directory's listing durable: its creates, renames and removes."""
        d = self._dir_at(self._parts(path), path)
        changes = len(d.pending)
        d.durable = dict(d.volatile)
        d.pending.clear()
        self._record("disk.fsync_dir", path=d.path, changes=changes)
        if changes:
            self._collect()

    # -- data (called by SimFile) ---------------------------------------------------------------

    def _write(self, f: _File, offset: int, data: bytes, path: str) -> None:
        assert offset >= 0
        if not data:
            return
        cfg = self._config
        if cfg.write_error > 0 and self._rng.random() < cfg.write_error:
            self._record("disk.eio", path=path, offset=offset, size_bytes=len(data))
            raise _os_error(errno.EIO, path, "injected write error")
        self._reserve(f, offset + len(data), path, offset)
        self._log(f, _Write(offset, bytearray(data)))

    def _truncate(self, f: _File, size_bytes: int, path: str) -> None:
        assert size_bytes >= 0
        self._reserve(f, size_bytes, path, size_bytes)
        self._log(f, _Truncate(size_bytes))

    def _reserve(self, f: _File, end_bytes: int, path: str, offset: int) -> None:
        """Raise ENOSPC, changing nothing, if growing `f` to `end_bytes` would pass capacity."""
        growth = max(0, end_bytes - len(f.volatile))
        capacity = self._config.capacity
        limit = UNBOUNDED_CAPACITY_BYTES if capacity is None else capacity
        if growth and self._used_bytes + growth > limit:
            self._record("disk.enospc", path=path, offset=offset, size_bytes=growth)
            raise _os_error(errno.ENOSPC, path, f"{self._used_bytes} of {limit} bytes in use")

    def _log(self, f: _File, op: _DataOp) -> None:
        before = len(f.volatile)
        _apply(f.volatile, op)
        assert f.live, "data ops come through an open handle"
        self._used_bytes += len(f.volatile) - before
        last = f.pending[-1] if f.pending else None
        if (
            isinstance(op, _Write)
            and isinstance(last, _Write)
            and last.offset + len(last.data) == op.offset
        ):
            last.data += op.data  # a sequential write tears like the two it joins
        else:
            f.pending.append(op)
        f.pending_units += _units(op)
        if len(f.pending) > MAX_PENDING_WRITES or f.pending_units > MAX_PENDING_WRITE_UNITS:
            self._writeback(f)

    def _writeback(self, f: _File) -> None:
        # The kernel flushes the oldest dirty data on its own: durable gets a prefix of the log.
        flushed_bytes = 0
        while len(f.pending) > MAX_PENDING_WRITES // 2 or f.pending_units > (
            MAX_PENDING_WRITE_UNITS // 2
        ):
            op = f.pending.pop(0)
            _apply(f.durable, op)
            f.pending_units -= _units(op)
            flushed_bytes += _units(op)
        self._record("disk.writeback", path=f.path, size_bytes=flushed_bytes)

    def _fsync(self, f: _File, path: str) -> None:
        synced_bytes = sum(len(op.data) for op in f.pending if isinstance(op, _Write))
        for op in f.pending:
            _apply(f.durable, op)
        f.pending.clear()
        f.pending_units = 0
        assert f.durable == f.volatile, f"{path}: fsync left durable != volatile"
        self._record("disk.fsync", path=path, size_bytes=len(f.durable), synced_bytes=synced_bytes)

    def _maybe_corrupt(self, data: bytes, offset: int, path: str) -> bytes:
        p = self._config.read_corruption
        if not data or p <= 0 or self._rng.random() >= p:
            return data
        index = self._rng.randrange(len(data))
        bit = self._rng.randrange(8)
        self._record("disk.corrupt", path=path, offset=offset + index, bit=bit)
        flipped = bytearray(data)
        flipped[index] ^= 1 << bit
        return bytes(flipped)

    def _release(self, f: _File, epoch: int) -> None:
        if epoch != self._epoch:
            return  # the boot that opened it is dead: its handles were dropped then
        was_live = f.live
        f.handles -= 1
        self._open_files -= 1
        assert f.handles >= 0 and self._open_files >= 0
        self._account(f, was_live)
        if not f.live:
            self._collect()

    def _check_handle(self, epoch: int, path: str) -> None:
        if epoch != self._epoch:
            raise SimulationError(
                f"{path}: this handle was opened before node {self.node_name} was "
                f"{self._last_death}; open files die with their process: reopen after restart"
            )
        node = runtime.current_node() if runtime.active() is not None else None
        if node is not None and node.name != self.node_name:
            raise SimulationError(
                f"{path}: a file of node {self.node_name} used from node {node.name}"
            )


def _apply_names(listing: dict[str, int], changes: dict[str, int | None]) -> None:
    for name, ino in changes.items():
        if ino is None:
            listing.pop(name, None)
        else:
            listing[name] = ino


class SimFile:
    """An open file on a SimDisk: the file object of `detsim.fs.open` inside a simulation.

    Like an unbuffered `io.FileIO`: a write is in the page cache when it returns (so `flush()`
    has nothing to do), and `fsync()` makes the file's data durable.
    """

    def __init__(self, disk: SimDisk, f: _File, mode: OpenMode, path: str) -> None:
        self._disk = disk
        self._file = f
        self._mode = mode
        self._path = path
        self._epoch = disk._epoch
        self._pos = len(f.volatile) if mode.append else 0
        self._closed = False

    def __repr__(self) -> str:
        return f"<SimFile {self._disk.node_name}:{self._path} mode={self._mode.canonical!r}>"

    @property
    def name(self) -> str:
        return self._path

    @property
    def mode(self) -> str:
        return self._mode.canonical

    @property
    def closed(self) -> bool:
        return self._closed

    def readable(self) -> bool:
        self._check()
        return self._mode.readable

    def writable(self) -> bool:
        self._check()
        return self._mode.writable

    def seekable(self) -> bool:
        self._check()
        return True

    def _check(self) -> _File:
        if self._closed:
            raise ValueError("I/O operation on closed file.")
        self._disk._check_handle(self._epoch, self._path)
        return self._file

    def read(self, size: int = -1, /) -> bytes:
        f = self._check()
        if not self._mode.readable:
            raise io.UnsupportedOperation("File not open for reading")
        start = self._pos
        end = len(f.volatile) if size is None or size < 0 else start + size
        data = bytes(f.volatile[start:end])
        self._pos += len(data)
        return self._disk._maybe_corrupt(data, start, self._path)

    def write(self, data: bytes | bytearray | memoryview, /) -> int:
        f = self._check()
        if not self._mode.writable:
            raise io.UnsupportedOperation("File not open for writing")
        payload = bytes(data)
        offset = len(f.volatile) if self._mode.append else self._pos
        self._disk._write(f, offset, payload, self._path)
        self._pos = offset + len(payload)
        return len(payload)

    def seek(self, offset: int, whence: int = os.SEEK_SET, /) -> int:
        f = self._check()
        bases = {os.SEEK_SET: 0, os.SEEK_CUR: self._pos, os.SEEK_END: len(f.volatile)}
        if whence not in bases:
            raise ValueError(f"invalid whence ({whence}, should be 0, 1 or 2)")
        pos = bases[whence] + offset
        if pos < 0:
            raise _os_error(errno.EINVAL, self._path, "negative seek position")
        self._pos = pos
        return pos

    def tell(self) -> int:
        self._check()
        return self._pos

    def truncate(self, size: int | None = None, /) -> int:
        f = self._check()
        if not self._mode.writable:
            raise io.UnsupportedOperation("File not open for writing")
        size_bytes = self._pos if size is None else size
        if size_bytes < 0:
            raise _os_error(errno.EINVAL, self._path, "negative size")
        if size_bytes != len(f.volatile):
            self._disk._truncate(f, size_bytes, self._path)
        return size_bytes

    def flush(self) -> None:
        self._check()  # writes are already in the page cache

    def fsync(self) -> None:
        """Make this file's data durable now (no virtual time passes)."""
        self._disk._fsync(self._check(), self._path)

    async def fsync_async(self) -> None:
        """Wait `DiskConfig.fsync_latency` virtual seconds, then make the data durable."""
        self._check()
        await asyncio.sleep(self._disk.config.fsync_latency)
        self._disk._fsync(self._check(), self._path)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._disk._release(self._file, self._epoch)

    def __enter__(self) -> Self:
        self._check()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
