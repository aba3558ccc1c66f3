"""The simulation's hold on time and entropy: what is patched while a simulation runs.

Owned here: the process-wide patches that make unmodified code deterministic inside a
simulation, installed when a simulation's loop starts running and restored when it stops.

- time: `time.time`, `time_ns`, `monotonic`, `monotonic_ns`, `perf_counter`, `perf_counter_ns`,
  `process_time` read the calling node's virtual clock; `time.sleep` raises SimulationError.
- datetime: `datetime.datetime` is replaced by a subclass whose `now`, `utcnow` and `today`
  read the virtual clock (code that imported the class before the patch keeps the real one:
  import the module, not the name).
- entropy: the `random` module's functions draw from one seeded generator whose draws are folded
  into the trace; `random.Random()` without a seed, `os.urandom`, `secrets` and `uuid.uuid4`
  are seeded from the simulation. The `random` module's state is restored afterwards.
- threads: `threading.Thread.start` raises SimulationError (the loop runs executors inline).
- sockets: `socket.socket` builds simulated sockets (for libraries that connect a socket
  themselves, such as aiohttp through aiohappyeyeballs), `socket.getaddrinfo` resolves
  simulated names, so nothing reaches the real network.

Rules: the originals are captured at import (the simulator itself reads real time only through
`real_monotonic`, for wall-clock reports); installing twice is an error (one simulation runs at
a time in a thread); every patch is undone in reverse order even if a later one failed.
"""

from __future__ import annotations

import datetime as _datetime
import os
import random
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from detsim.sim import runtime
from detsim.sim.clock import NodeClock
from detsim.sim.errors import SimulationError

if TYPE_CHECKING:
    from detsim.sim.loop import SimLoop

real_monotonic: Callable[[], float] = time.monotonic
real_perf_counter: Callable[[], float] = time.perf_counter
_REAL_DATETIME = _datetime.datetime
_REAL_RANDOM_SEED = random.Random.seed


def _clock_of_caller() -> tuple[NodeClock, float]:
    sim = runtime.active()
    assert sim is not None, "patched clock called outside a simulation"
    boot = runtime.BOOT.get(sim.loop.default_boot)
    return boot.node_clock, sim.loop.now


def sim_time() -> float:
    clock, now = _clock_of_caller()
    return clock.wall(now)


def sim_monotonic() -> float:
    clock, now = _clock_of_caller()
    return clock.monotonic(now)


def _blocking_sleep(seconds: float) -> None:
    raise SimulationError(
        f"time.sleep({seconds!r}) inside a simulation would block every node: "
        "use `await asyncio.sleep(...)`"
    )


def _thread_start(self: threading.Thread) -> None:
    raise SimulationError(
        f"starting thread {self.name!r} inside a simulation: threads are not simulated; use "
        "`await loop.run_in_executor(None, fn)` or `asyncio.to_thread(fn)`, which run inline"
    )


class SimDatetime(_REAL_DATETIME):
    """`datetime.datetime` whose clock is the simulation's."""

    @classmethod
    def now(cls, tz: _datetime.tzinfo | None = None) -> SimDatetime:
        return cls.fromtimestamp(sim_time(), tz)

    @classmethod
    def utcnow(cls) -> SimDatetime:
        t = _REAL_DATETIME.fromtimestamp(sim_time(), _datetime.UTC)
        return cls(*t.timetuple()[:6], t.microsecond)

    @classmethod
    def today(cls) -> SimDatetime:
        return cls.fromtimestamp(sim_time())


class SimRandom(random.Random):
    """The `random` module's generator in a simulation: seeded, and every draw is traced."""

    def __init__(self, seed: int, loop: SimLoop) -> None:
        self._loop = loop
        super().__init__(seed)

    def random(self) -> float:
        x = super().random()
        self._loop.trace.mix(x)
        return x

    def getrandbits(self, k: int) -> int:
        x = super().getrandbits(k)
        self._loop.trace.mix(x)
        return x


# Module-level names of `random` that are bound methods of its hidden instance.
_RANDOM_FUNCTIONS = tuple(
    name
    for name in dir(random)
    if not name.startswith("_") and getattr(getattr(random, name), "__self__", None) is random._inst
)


class Patches:
    """Install and undo the patches for one simulation's loop."""

    def __init__(self, loop: SimLoop) -> None:
        self._loop = loop
        self._undo: list[Callable[[], None]] = []

    def _set(self, owner: Any, name: str, value: Any) -> None:
        old = getattr(owner, name)
        setattr(owner, name, value)
        self._undo.append(lambda: setattr(owner, name, old))

    def install(self) -> None:
        if self._undo:
            raise SimulationError("simulation patches installed twice")
        try:
            self._install_time()
            self._install_entropy()
            self._install_threads_and_sockets()
        except BaseException:
            self.uninstall()
            raise

    def uninstall(self) -> None:
        while self._undo:
            self._undo.pop()()

    def _install_time(self) -> None:
        def sim_ns() -> int:
            return int(sim_time() * 1e9)

        def sim_mono_ns() -> int:
            return int(sim_monotonic() * 1e9)

        for name, fn in (
            ("time", sim_time),
            ("time_ns", sim_ns),
            ("monotonic", sim_monotonic),
            ("monotonic_ns", sim_mono_ns),
            ("perf_counter", sim_monotonic),
            ("perf_counter_ns", sim_mono_ns),
            ("process_time", sim_monotonic),
            ("sleep", _blocking_sleep),
        ):
            self._set(time, name, fn)
        self._set(_datetime, "datetime", SimDatetime)

    def _install_entropy(self) -> None:
        loop = self._loop
        rng = SimRandom(loop.derive_seed("random"), loop)
        state = random.getstate()
        self._undo.append(lambda: random.setstate(state))
        for name in _RANDOM_FUNCTIONS:
            self._set(random, name, getattr(rng, name))

        def urandom(n: int) -> bytes:
            if n < 0:
                raise ValueError("negative argument not allowed")
            data = loop.entropy.randbytes(n)
            loop.trace.mix(n, int.from_bytes(data[:8], "little"))
            return data

        def seed(self: random.Random, a: Any = None, version: int = 2) -> None:
            if a is None:  # Random() with no seed: the simulation picks it
                a = loop.entropy.getrandbits(64)
                loop.trace.mix(a)
            _REAL_RANDOM_SEED(self, a, version)

        self._set(os, "urandom", urandom)
        self._set(random, "_urandom", urandom)
        self._set(random.Random, "seed", seed)

    def _install_threads_and_sockets(self) -> None:
        from detsim.sim.net import sockets

        self._set(threading.Thread, "start", _thread_start)
        self._set(socket, "socket", sockets.SimSocket)
        self._set(socket, "getaddrinfo", sockets.getaddrinfo_blocking)
        self._set(socket, "gethostbyname", sockets.gethostbyname)


@contextmanager
def installed(loop: SimLoop) -> Iterator[None]:
    patches = Patches(loop)
    patches.install()
    try:
        yield
    finally:
        patches.uninstall()
