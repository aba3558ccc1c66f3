"""The simulation's hold on time and entropy: what is patched while a simulation runs.

Owned here: the process-wide patches that make unmodified code deterministic inside a
simulation. Each patched function dispatches per call: in a thread that is running a
simulation (`runtime.active()`), it answers from that simulation's loop (and, for names and
sockets, from the world plugged into it: `loop.io`); in any other thread it is the real
function. So a Dask worker's event loop, a logging thread or a second simulation in another
thread are untouched by a simulation running beside them.

- time: `time.time`, `time_ns`, `monotonic`, `monotonic_ns`, `perf_counter`, `perf_counter_ns`,
  `process_time` read the calling node's virtual clock; `time.sleep` raises SimulationError.
- datetime: `datetime.datetime` is replaced by a subclass whose `now`, `utcnow` and `today`
  read the virtual clock (code that imported the class before the patch keeps the real one:
  import the module, not the name).
- entropy: the `random` module's functions draw from the simulation's own generator
  (`SimRandom`, seeded from the simulation, every draw folded into the trace), so the real
  module state is never touched; `random.Random()` without a seed, `os.urandom`, `secrets` and
  `uuid.uuid4` are seeded from the simulation.
- threads: `threading.Thread.start` raises SimulationError (the loop runs executors inline).
- blocking waits that only the loop (the simulation's own thread) could complete raise
  SimulationError instead of hanging (futures, queues, events, conditions, semaphores,
  barriers, locks): `blocking.py` has them, and why each one is or is not patched.
- sockets: `socket.socket` builds simulated sockets (for libraries that create and connect a
  socket themselves, such as aiohttp through aiohappyeyeballs) — except around an existing
  descriptor (`socketpair`, an event loop's self-pipe), `socket.getaddrinfo` and
  `gethostbyname` resolve simulated names, so nothing reaches the real network.

Rules: the originals are captured at import (the simulator reads real time only through
`real_monotonic`, for wall-clock reports); the patches are installed when the first thread
enters a simulation and removed when the last one leaves (`acquire` / `release`, counted under
a lock), every one undone in reverse order even if a later one failed.
"""

from __future__ import annotations

import datetime as _datetime
import os
import random
import socket
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from detsim.sim.kernel import blocking, runtime
from detsim.sim.kernel.boot import BOOT
from detsim.sim.kernel.errors import SimulationError
from detsim.sim.kernel.interfaces import SimulatedSocket

if TYPE_CHECKING:
    from detsim.sim.kernel.loop import SimLoop

real_monotonic: Callable[[], float] = time.monotonic
_REAL_DATETIME = _datetime.datetime
_REAL_RANDOM_SEED = random.Random.seed
_REAL_SOCKET = socket.socket
_REAL = {
    name: getattr(time, name)
    for name in (
        "time",
        "time_ns",
        "monotonic",
        "monotonic_ns",
        "perf_counter",
        "perf_counter_ns",
        "process_time",
        "sleep",
    )
}
_REAL_URANDOM = os.urandom
_REAL_THREAD_START = threading.Thread.start
_REAL_GETADDRINFO = socket.getaddrinfo
_REAL_GETHOSTBYNAME = socket.gethostbyname


_loop = runtime.active  # the loop running in the calling thread, or None


def _wall(loop: SimLoop) -> float:
    return BOOT.get(loop.default_boot).node_clock.wall(loop.now)


def _mono(loop: SimLoop) -> float:
    return BOOT.get(loop.default_boot).node_clock.monotonic(loop.now)


# --- time ---------------------------------------------------------------------------------


def sim_time() -> float:
    loop = _loop()
    return _REAL["time"]() if loop is None else _wall(loop)


def sim_time_ns() -> int:
    loop = _loop()
    return _REAL["time_ns"]() if loop is None else int(_wall(loop) * 1e9)


def sim_monotonic() -> float:
    loop = _loop()
    return _REAL["monotonic"]() if loop is None else _mono(loop)


def sim_monotonic_ns() -> int:
    loop = _loop()
    return _REAL["monotonic_ns"]() if loop is None else int(_mono(loop) * 1e9)


def sim_perf_counter() -> float:
    loop = _loop()
    return _REAL["perf_counter"]() if loop is None else _mono(loop)


def sim_perf_counter_ns() -> int:
    loop = _loop()
    return _REAL["perf_counter_ns"]() if loop is None else int(_mono(loop) * 1e9)


def sim_process_time() -> float:
    loop = _loop()
    return _REAL["process_time"]() if loop is None else _mono(loop)


def sim_sleep(seconds: float) -> None:
    if _loop() is None:
        _REAL["sleep"](seconds)
        return
    raise SimulationError(
        f"time.sleep({seconds!r}) inside a simulation would block every node: "
        "use `await asyncio.sleep(...)`"
    )


class _DefersToRealDatetime(type):
    """Metaclass: `datetime.datetime`, while patched, still answers isinstance and issubclass
    for the real class, so objects of the real class (made in any thread, before or during a
    run) are datetimes, as the promise that other threads are untouched requires."""

    def __instancecheck__(cls, obj: object) -> bool:
        return isinstance(obj, _REAL_DATETIME)

    def __subclasscheck__(cls, sub: type) -> bool:
        return issubclass(sub, _REAL_DATETIME)


class SimDatetime(_REAL_DATETIME, metaclass=_DefersToRealDatetime):
    """`datetime.datetime` whose clock is the simulation's (in a simulation's thread)."""

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


# --- entropy ------------------------------------------------------------------------------


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
_RANDOM_INSTANCE: random.Random = random._inst
_RANDOM_FUNCTIONS = tuple(
    name
    for name in dir(random)
    if not name.startswith("_")
    and getattr(getattr(random, name), "__self__", None) is _RANDOM_INSTANCE
)


def _random_dispatch(name: str) -> Callable[..., Any]:
    real = getattr(random, name)

    def dispatch(*args: Any, **kwargs: Any) -> Any:
        loop = _loop()
        if loop is None:
            return real(*args, **kwargs)
        return getattr(loop.user_random, name)(*args, **kwargs)

    dispatch.__name__ = dispatch.__qualname__ = name
    dispatch.__doc__ = real.__doc__
    return dispatch


def sim_urandom(n: int) -> bytes:
    loop = _loop()
    if loop is None:
        return _REAL_URANDOM(n)
    if n < 0:
        raise ValueError("negative argument not allowed")
    data = loop.entropy.randbytes(n)
    loop.trace.mix(n, int.from_bytes(data[:8], "little"))
    return data


def sim_random_seed(self: random.Random, a: Any = None, version: int = 2) -> None:
    loop = _loop()
    if a is None and loop is not None:  # Random() with no seed: the simulation picks it
        a = loop.entropy.getrandbits(64)
        loop.trace.mix(a)
    _REAL_RANDOM_SEED(self, a, version)


# --- threads and sockets ------------------------------------------------------------------


def sim_thread_start(self: threading.Thread) -> None:
    if _loop() is None:
        _REAL_THREAD_START(self)
        return
    raise SimulationError(
        f"starting thread {self.name!r} inside a simulation: threads are not simulated; use "
        "`await loop.run_in_executor(None, fn)` or `asyncio.to_thread(fn)`, which run inline"
    )


class _DefersToRealSocket(type):
    """Metaclass: `socket.socket`, while patched, answers isinstance and issubclass for the
    real class, and for the simulated sockets it builds in a simulation's thread."""

    def __instancecheck__(cls, obj: object) -> bool:
        return isinstance(obj, _REAL_SOCKET) or _is_sim_socket(type(obj))

    def __subclasscheck__(cls, sub: type) -> bool:
        return issubclass(sub, _REAL_SOCKET) or _is_sim_socket(sub)


def _is_sim_socket(cls: type) -> bool:
    return issubclass(cls, SimulatedSocket)


class DispatchSocket(_REAL_SOCKET, metaclass=_DefersToRealSocket):
    """`socket.socket` while patched: a real socket, or in a simulation's thread the world's."""

    __slots__ = ()

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        # Around an existing descriptor (`socket.socketpair`, the self-pipe of an event loop
        # that a library creates and closes) the socket is the real one: it connects nowhere.
        loop = _loop()
        if loop is not None and _fileno_of(args, kwargs) is None:
            return loop.io.new_socket(*args, **kwargs)
        return super().__new__(cls, *args, **kwargs)


def _fileno_of(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """The `fileno` argument of `socket.socket(family, type, proto, fileno)`, or None."""
    return args[3] if len(args) > 3 else kwargs.get("fileno")


def sim_getaddrinfo(
    host: Any, port: Any, family: int = 0, type: int = 0, proto: int = 0, flags: int = 0
) -> list[tuple[Any, ...]]:
    loop = _loop()
    if loop is None:
        return _REAL_GETADDRINFO(host, port, family, type, proto, flags)
    return list(loop.io.getaddrinfo(host, port, family=family, type=type, proto=proto))


def sim_gethostbyname(host: str) -> str:
    loop = _loop()
    if loop is None:
        return _REAL_GETHOSTBYNAME(host)
    return loop.io.resolve(host)


# --- installing ---------------------------------------------------------------------------

_lock = threading.Lock()
_holders = 0  # threads inside a simulation


def _patches() -> list[tuple[Any, str, Any]]:
    out: list[tuple[Any, str, Any]] = [
        (time, "time", sim_time),
        (time, "time_ns", sim_time_ns),
        (time, "monotonic", sim_monotonic),
        (time, "monotonic_ns", sim_monotonic_ns),
        (time, "perf_counter", sim_perf_counter),
        (time, "perf_counter_ns", sim_perf_counter_ns),
        (time, "process_time", sim_process_time),
        (time, "sleep", sim_sleep),
        (_datetime, "datetime", SimDatetime),
        (os, "urandom", sim_urandom),
        (random, "_urandom", sim_urandom),
        (random.Random, "seed", sim_random_seed),
        (threading.Thread, "start", sim_thread_start),
        (socket, "socket", DispatchSocket),
        (socket, "getaddrinfo", sim_getaddrinfo),
        (socket, "gethostbyname", sim_gethostbyname),
    ]
    out += [(random, name, _random_dispatch(name)) for name in _RANDOM_FUNCTIONS]
    out += blocking.patches()
    return out


_undo: list[tuple[Any, str, Any, Any]] = []  # (owner, name, original, our patch)


def _install() -> None:
    try:
        for owner, name, value in _patches():
            _undo.append((owner, name, getattr(owner, name), value))
            setattr(owner, name, value)
    except BaseException:
        _uninstall()
        raise


def _uninstall() -> None:
    """Restore every original, in reverse order; then fail if any patch was not ours any more
    (someone replaced it during the run, and their replacement is now lost)."""
    replaced = []
    while _undo:
        owner, name, original, ours = _undo.pop()
        if getattr(owner, name) is not ours:
            replaced.append(f"{getattr(owner, '__name__', owner)}.{name}")
        setattr(owner, name, original)
    assert not replaced, (
        f"{', '.join(replaced)} replaced by someone else while a simulation ran: the originals "
        "are restored; patch them outside the simulation (or not at all)"
    )


def acquire() -> None:
    """A thread enters a simulation: install the patches if it is the first."""
    global _holders
    with _lock:
        if _holders == 0:
            _install()
        _holders += 1


def release() -> None:
    """A thread leaves a simulation: remove the patches if it was the last."""
    global _holders
    with _lock:
        assert _holders > 0, "release() without acquire()"
        _holders -= 1
        if _holders == 0:
            _uninstall()
