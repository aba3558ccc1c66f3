"""Which kernel loop the calling thread runs, if any.

The loop of a run is "active" in the thread that drives it, from the moment it enters the
world (patches on) until it leaves. Everything the kernel patches (time, entropy, threads,
sockets) asks here, per call, so other threads of the process see the real world.
Nothing in this module imports the loop, so it is cheap to import from anywhere.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from detsim.sim.kernel.boot import BOOT, Boot
from detsim.sim.kernel.errors import SimulationError

if TYPE_CHECKING:
    from detsim.sim.kernel.loop import SimLoop


class _ThreadState(threading.local):
    """Per thread: the loop running in it. Other threads of the process (a Dask worker's
    event loop, a logging thread) are not in it and see the real world."""

    loop: SimLoop | None = None


_thread = _ThreadState()


def active() -> SimLoop | None:
    """The simulation loop running in the calling thread, or None outside one."""
    return _thread.loop


def enter(loop: SimLoop) -> None:
    if _thread.loop is not None:
        raise SimulationError("a simulation is already running in this thread")
    _thread.loop = loop


def leave(loop: SimLoop) -> None:
    assert _thread.loop is loop, "leaving a simulation this thread is not in"
    _thread.loop = None


def current_boot() -> Boot | None:
    """The boot the caller runs on (the supervisor's, for `main`), or None outside a run."""
    loop = _thread.loop
    return None if loop is None else BOOT.get(loop.default_boot)
