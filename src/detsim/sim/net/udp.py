"""Simulated UDP: datagram endpoints and their transports.

Rules: a datagram is dropped with the link's `loss`, duplicated with `NetConfig.duplicate`,
and each copy gets its own latency, so datagrams reorder. At arrival it is dropped if the link
is cut, the host is down, or no live endpoint of the destination's current boot is bound to
the port. Datagrams larger than `max_datagram_bytes` raise OSError(EMSGSIZE) at the sender.
"""

from __future__ import annotations

import asyncio
import contextvars
import errno
import zlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from detsim.sim import runtime
from detsim.sim.errors import SimulationError
from detsim.sim.net.network import ANY_ADDRESSES
from detsim.sim.net.sockets import SocketInfo

if TYPE_CHECKING:
    from detsim.sim.kernel.loop import SimLoop
    from detsim.sim.net.network import Network
    from detsim.sim.node import Boot, Node

MAX_UDP_ENDPOINTS_PER_NODE = 1_024


class UdpStack:
    def __init__(self, net: Network, loop: SimLoop) -> None:
        self.net = net
        self.loop = loop
        self._bound: dict[tuple[int, int], DatagramTransport] = {}  # (node index, port)

    async def create_endpoint(
        self,
        protocol_factory: Callable[[], asyncio.DatagramProtocol],
        local_addr: Any = None,
        remote_addr: Any = None,
        *,
        sock: Any = None,
        **_ignored: Any,
    ) -> tuple[Any, Any]:
        if sock is not None:
            raise SimulationError("create_datagram_endpoint(sock=...) is not simulated")
        node = runtime.require_node("create_datagram_endpoint")
        boot = self.loop.current_boot()
        if sum(1 for k in self._bound if k[0] == node.index) >= MAX_UDP_ENDPOINTS_PER_NODE:
            raise OSError(errno.EMFILE, f"more than {MAX_UDP_ENDPOINTS_PER_NODE} UDP endpoints")
        port = int(local_addr[1]) if local_addr else 0
        if port == 0:
            port = self.net.tcp.ephemeral_port(node, lambda p: (node.index, p) in self._bound)
        elif (node.index, port) in self._bound:
            raise OSError(errno.EADDRINUSE, f"address already in use: UDP port {port}")
        remote = None
        if remote_addr is not None:
            remote = (self.net.resolve(remote_addr[0]), int(remote_addr[1]))
        protocol = protocol_factory()
        transport = DatagramTransport(
            self, boot, node, port, remote, protocol, contextvars.copy_context()
        )
        self._bound[(node.index, port)] = transport
        protocol.connection_made(transport)
        return transport, protocol

    def unbind(self, transport: DatagramTransport) -> None:
        if self._bound.get((transport.node.index, transport.port)) is transport:
            del self._bound[(transport.node.index, transport.port)]

    def send(self, src: DatagramTransport, data: bytes, addr: tuple[str, int]) -> None:
        ip = self.net.resolve(addr[0])
        dst = self.net.node_at(src.node, ip)
        size = len(data)
        if size > self.net.config.max_datagram_bytes:
            raise OSError(errno.EMSGSIZE, f"datagram of {size} bytes is too long")
        if dst is None:
            self.loop.record_for(src.node.name, "udp_drop", dst=f"{ip}:{addr[1]}", why="no host")
            return
        rng = self.net.rng
        if rng.random() < self.net.loss(src.node, dst):
            self.loop.record_for(src.node.name, "udp_drop", dst=dst.name, size=size, why="loss")
            return
        copies = 2 if rng.random() < self.net.config.duplicate else 1
        src_ip = "127.0.0.1" if ip.startswith("127.") else src.node.ip
        for _ in range(copies):
            at = self.loop.now + self.net.latency(src.node, dst)
            self.loop.kernel_at(
                at, self._arrive, src.node, dst, int(addr[1]), data, (src_ip, src.port)
            )
        self.loop.record_for(src.node.name, "udp_send", dst=dst.name, size=size, copies=copies)

    def _arrive(
        self, src: Node, dst: Node, port: int, data: bytes, from_addr: tuple[str, int]
    ) -> None:
        if not self.net.link_up(src, dst):
            self.loop.record_for(dst.name, "udp_drop", src=src.name, why="cut")
            return
        transport = self._bound.get((dst.index, port))
        if transport is None or transport.is_closing() or not transport.boot.alive:
            self.loop.record_for(dst.name, "udp_drop", src=src.name, why="no socket")
            return
        self.loop.record_for(
            dst.name, "udp_recv", src=src.name, size=len(data), crc=zlib.crc32(data)
        )
        self.loop.soon_in(transport.ctx, transport.deliver, data, from_addr)

    def boot_down(self, boot: Boot) -> None:
        for key, transport in list(self._bound.items()):
            if transport.boot is boot:
                transport.closing = True
                del self._bound[key]


class DatagramTransport(asyncio.DatagramTransport):
    def __init__(
        self,
        stack: UdpStack,
        boot: Boot,
        node: Node,
        port: int,
        remote: tuple[str, int] | None,
        protocol: asyncio.DatagramProtocol,
        ctx: contextvars.Context,
    ) -> None:
        super().__init__()
        self._stack = stack
        self.boot = boot
        self.node = node
        self.port = port
        self._remote = remote
        self._protocol = protocol
        self.ctx = ctx
        self.closing = False
        self._extra = {
            "sockname": (node.ip, port),
            "peername": remote,
            "socket": SocketInfo((node.ip, port), remote),
        }

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._extra.get(name, default)

    def sendto(self, data: Any, addr: Any = None) -> None:
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(
                f"data argument must be a bytes-like object, not {type(data).__name__!r}"
            )
        if self._remote is not None:
            if addr not in (None, self._remote):
                raise ValueError(f"Invalid address: must be None or {self._remote}")
            addr = self._remote
        if addr is None:
            raise OSError(errno.EDESTADDRREQ, "sendto() needs an address on an unconnected socket")
        if self.closing:
            return
        if addr[0] in ANY_ADDRESSES:
            raise OSError(errno.EINVAL, "cannot send to a wildcard address")
        self._stack.send(self, bytes(data), (str(addr[0]), int(addr[1])))

    def deliver(self, data: bytes, addr: tuple[str, int]) -> None:
        if not self.closing:
            self._protocol.datagram_received(data, addr)

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        if self.closing:
            return
        self.closing = True
        self._stack.unbind(self)
        self._stack.loop.soon_in(self.ctx, self._protocol.connection_lost, None)

    def abort(self) -> None:
        self.close()

    def get_write_buffer_size(self) -> int:
        return 0

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._protocol

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._protocol = protocol  # type: ignore[assignment]
