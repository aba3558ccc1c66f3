"""detsim.fs: durable files, real outside a simulation and simulated (per node) inside one.

The public API is the module functions (`open`, `rename`, `remove`, `exists`, `listdir`,
`makedirs`, `getsize`, `fsync_dir`), the `DurableFile` objects `open` returns, and the record
file (`detsim.fs.records.RecordFile`) that logs and snapshots stand on. The simulated disk and
its written fault model are in `detsim.sim.disk`.

Rule: nothing in detsim.fs imports detsim.sim (DESIGN "Layers"); during a run the simulator
plugs its disks in through `detsim.fs._seam`.
"""

from __future__ import annotations

from detsim.fs._api import (
    Backend,
    DurableFile,
    PathArg,
    backend,
    exists,
    fsync_dir,
    getsize,
    listdir,
    makedirs,
    open,
    remove,
    rename,
    use_backend,
)
from detsim.fs._modes import OpenMode, parse_mode
from detsim.fs._real import REAL, RealBackend, RealFile

__all__ = [
    "REAL",
    "Backend",
    "DurableFile",
    "OpenMode",
    "PathArg",
    "RealBackend",
    "RealFile",
    "backend",
    "exists",
    "fsync_dir",
    "getsize",
    "listdir",
    "makedirs",
    "open",
    "parse_mode",
    "remove",
    "rename",
    "use_backend",
]
