"""Socket objects inside a simulation.

- `SocketInfo`: what `transport.get_extra_info("socket")` and `server.sockets` return: names
  and no-op options (redis-py and aiohttp set TCP_NODELAY and keepalive on it).
- `SimSocket`: what `socket.socket(...)` builds while a simulation runs, for libraries that
  create and connect a socket themselves and hand it to `create_connection(sock=...)`
  (aiohttp does, through aiohappyeyeballs). Only the non-blocking path through the loop is
  simulated; a blocking `connect`, `send` or `recv` raises SimulationError.
(Blocking name resolution is answered from the simulation's names in `entropy`.)
"""

from __future__ import annotations

import socket
from typing import Any

from detsim.sim import runtime
from detsim.sim.kernel.errors import SimulationError
from detsim.sim.kernel.interfaces import SimulatedSocket


class SocketInfo:
    """A stand-in for a transport's socket: its names, and options that are accepted."""

    family: int = socket.AF_INET
    type: int = socket.SOCK_STREAM
    proto: int = socket.IPPROTO_TCP

    def __init__(self, sock_addr: tuple[str, int], peer_addr: tuple[str, int] | None = None):
        self._sock_addr = sock_addr
        self._peer_addr = peer_addr
        self._options: dict[tuple[int, int], Any] = {}

    def getsockname(self) -> tuple[str, int]:
        return self._sock_addr

    def getpeername(self) -> tuple[str, int]:
        if self._peer_addr is None:
            raise OSError(107, "Transport endpoint is not connected")
        return self._peer_addr

    def setsockopt(self, level: int, option: int, value: Any, *rest: Any) -> None:
        self._options[(level, option)] = value

    def getsockopt(self, level: int, option: int, *rest: Any) -> Any:
        return self._options.get((level, option), 0)

    def fileno(self) -> int:
        return -1

    def setblocking(self, flag: bool) -> None:
        pass

    def gettimeout(self) -> float:
        return 0.0


class SimSocket(SocketInfo, SimulatedSocket):
    """`socket.socket` inside a simulation: connectable only through the loop."""

    def __init__(
        self,
        family: int = socket.AF_INET,
        type: int = socket.SOCK_STREAM,
        proto: int = 0,
        fileno: Any = None,
    ) -> None:
        if fileno is not None:
            raise SimulationError("wrapping a real file descriptor in a socket inside a simulation")
        super().__init__(("0.0.0.0", 0))
        self.family = family
        self.type = type
        self.proto = proto
        self.connected: Any = None  # the TCP endpoint, once sock_connect has established it
        self.detached = False
        self.peer_addr: tuple[str, int] | None = None
        self.sock_addr = ("0.0.0.0", 0)

    def __enter__(self) -> SimSocket:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def getsockname(self) -> tuple[str, int]:
        return self.sock_addr

    def getpeername(self) -> tuple[str, int]:
        if self.peer_addr is None:
            raise OSError(107, "Transport endpoint is not connected")
        return self.peer_addr

    def bind(self, address: Any) -> None:
        self.sock_addr = (str(address[0]), int(address[1]))

    def close(self) -> None:
        ep, self.connected = self.connected, None
        if ep is not None and not self.detached:
            sim = runtime.active()
            if sim is not None:
                sim.net.tcp.abort_endpoint(ep)

    def detach(self) -> int:
        self.detached = True
        return -1

    def _blocking(self, what: str, *args: Any) -> Any:
        raise SimulationError(
            f"blocking socket.{what}() inside a simulation: use asyncio "
            "(open_connection, start_server, create_datagram_endpoint)"
        )

    def connect(self, address: Any) -> None:
        self._blocking("connect")

    def connect_ex(self, address: Any) -> int:
        self._blocking("connect_ex")
        return 0

    def send(self, data: Any, *flags: Any) -> int:
        self._blocking("send")
        return 0

    def sendall(self, data: Any, *flags: Any) -> None:
        self._blocking("sendall")

    def recv(self, size: int, *flags: Any) -> bytes:
        self._blocking("recv")
        return b""

    def listen(self, backlog: int = 0) -> None:
        self._blocking("listen")

    def accept(self) -> Any:
        self._blocking("accept")
