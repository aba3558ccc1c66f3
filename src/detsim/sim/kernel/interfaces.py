"""What the kernel asks of the world that plugs into it: the whole protocol between them.

The kernel (loop, clock, boots, trace, seeds, patches) knows no Simulation, node, network or
disk. A world plugs in with `SimLoop.plug(world)`; the loop then asks it, and only it:
- `world.io` for the network: connections, servers, datagram endpoints, names, and the sockets
  that `socket.socket(...)` builds in a simulation's thread (`IO`);
- `world.entered()` / `world.left()` when the thread enters or leaves the run, to install
  and remove the world's own seams (detsim.fs's, for one).
A boot's host is a `Host`: a name and its current boot. Sockets the world builds subclass
`SimulatedSocket`, so that `isinstance(s, socket.socket)` holds for them while patched.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from detsim.sim.kernel.boot import Boot


class Host(Protocol):
    """A simulated host as the kernel sees it (the world's Node)."""

    @property
    def name(self) -> str: ...

    @property
    def boot(self) -> Boot | None: ...


class IO(Protocol):
    """The network, as the loop's I/O methods and the socket patches ask for it."""

    async def create_connection(
        self, protocol_factory: Callable[[], Any], host: Any, port: Any, **kwargs: Any
    ) -> Any: ...

    async def create_server(
        self, protocol_factory: Callable[[], Any], host: Any, port: Any, **kwargs: Any
    ) -> Any: ...

    async def create_datagram_endpoint(
        self, protocol_factory: Callable[[], Any], local_addr: Any, remote_addr: Any, **kwargs: Any
    ) -> Any: ...

    async def sock_connect(self, sock: Any, address: Any) -> None: ...

    def getaddrinfo(
        self, host: Any, port: Any, *, family: int = 0, type: int = 0, proto: int = 0
    ) -> list[tuple[Any, ...]]: ...

    def getnameinfo(self, sockaddr: Any) -> tuple[str, str]: ...

    def resolve(self, host: str | None) -> str: ...

    def new_socket(self, *args: Any, **kwargs: Any) -> SimulatedSocket: ...


class World(Protocol):
    """What plugs into the kernel: its I/O, and hooks for a thread entering and leaving."""

    @property
    def io(self) -> IO: ...

    def entered(self) -> None: ...

    def left(self) -> None: ...


class SimulatedSocket:
    """Base of the sockets a world builds for `socket.socket(...)` inside a simulation."""

    __slots__ = ()
