"""The simulated network: addresses, links, and the faults on them.

Owned here: which IP is which node, which links are cut (partitions, one-way clogs, clogged
nodes), the latency and loss of every link, and the segments held by a cut link.

The fault model, as seen by a packet from node A to node B at the moment it would arrive:
- A and B are the same node (its IP or loopback): delivered, after `LOOPBACK_LATENCY_S`;
  partitions and clogs never touch it.
- the link A->B is cut (a partition between their groups, `clog(A, B)`, or A or B clogged):
  TCP segments are held (retransmitted) until the link heals, and a stream held longer than
  `NetConfig.stream_timeout` is reset at both ends; UDP datagrams are dropped.
- B is powered off (`crash`): like a cut link — silence.
- B's host is up but the process that owned the socket is gone (`kill`, or a restart since):
  the segment is answered with a reset.
- otherwise delivered after a latency drawn for the link, per segment, never reordering a
  TCP stream (a segment never overtakes the one before it); UDP datagrams may be lost,
  duplicated and, by jitter, reordered.

Every draw comes from the network's own seeded stream; every fault change is a trace event.

The network is the loop's I/O (`kernel.interfaces.IO`): the loop's create_connection,
create_server, create_datagram_endpoint, sock_connect, getaddrinfo and getnameinfo, and the
socket patches, all come here; TCP goes on to `tcp.TcpStack`, UDP to `udp.UdpStack`.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Protocol

from detsim.sim.config import NetConfig, Range
from detsim.sim.kernel.errors import SimulationError

if TYPE_CHECKING:
    from detsim.sim.kernel.loop import SimLoop
    from detsim.sim.net.sockets import SimSocket
    from detsim.sim.node import Node
    from detsim.sim.world import Simulation

LOOPBACK_LATENCY_S = 0.000_01
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1", "ip6-localhost"})
ANY_ADDRESSES = frozenset({"", "0.0.0.0", "::"})
MAX_HELD_STREAMS = 100_000  # pipes waiting for a link to heal, across the whole network

NodeRef = Any  # a Node or its name


class Waiter(Protocol):
    """Something held by a cut link, woken when the network's faults change."""

    def kick(self) -> None: ...


class Network:
    """`sim.net`: the public fault controls, plus routing for the TCP and UDP stacks."""

    def __init__(self, sim: Simulation, loop: SimLoop, config: NetConfig) -> None:
        from detsim.sim.net.tcp import TcpStack
        from detsim.sim.net.udp import UdpStack

        self._sim = sim
        self._loop = loop
        self.config = config
        self.rng = loop.derived_random("net")
        self._random = self.rng.random
        self._by_ip: dict[str, Node] = {}
        self._cut: set[tuple[int, int]] = set()  # directed (src, dst) node indexes: partitions
        self._clogged_links: set[tuple[int, int]] = set()
        self._clogged_nodes: set[int] = set()
        self._latency: dict[tuple[int | None, int | None], Range] = {}
        self._loss: dict[tuple[int | None, int | None], float] = {}
        self._held: dict[int, Waiter] = {}  # by serial: insertion order is deterministic
        self.tcp = TcpStack(self, loop)
        self.udp = UdpStack(self, loop)

    # --- public fault controls -------------------------------------------------------------

    def partition(self, *groups: Iterable[NodeRef]) -> None:
        """Cut every link between nodes of different groups (added to any cut already made)."""
        if len(groups) < 2:
            raise SimulationError("partition() needs at least two groups of nodes")
        resolved = [[self._sim.node(n).index for n in group] for group in groups]
        seen: set[int] = set()
        for group in resolved:
            if seen & set(group):
                raise SimulationError("a node may stand in only one group of a partition")
            seen |= set(group)
        for i, left in enumerate(resolved):
            for right in resolved[i + 1 :]:
                for a in left:
                    for b in right:
                        self._cut.add((a, b))
                        self._cut.add((b, a))
        names = [[self._sim.nodes_by_index[i].name for i in g] for g in resolved]
        self._loop.record("partition", groups=names)

    def heal(self) -> None:
        """Remove every partition and every clog; held segments flow again."""
        self._cut.clear()
        self._clogged_links.clear()
        self._clogged_nodes.clear()
        self._loop.record("heal")
        self.wake_held()

    def clog(self, src: NodeRef, dst: NodeRef) -> None:
        """Cut one direction of one link."""
        a, b = self._sim.node(src), self._sim.node(dst)
        self._clogged_links.add((a.index, b.index))
        self._loop.record("clog", src=a.name, dst=b.name)

    def unclog(self, src: NodeRef, dst: NodeRef) -> None:
        a, b = self._sim.node(src), self._sim.node(dst)
        self._clogged_links.discard((a.index, b.index))
        self._loop.record("unclog", src=a.name, dst=b.name)
        self.wake_held()

    def clog_node(self, node: NodeRef) -> None:
        """Cut all traffic to and from a node (loopback excepted)."""
        n = self._sim.node(node)
        self._clogged_nodes.add(n.index)
        self._loop.record("clog_node", target=n.name)

    def unclog_node(self, node: NodeRef) -> None:
        n = self._sim.node(node)
        self._clogged_nodes.discard(n.index)
        self._loop.record("unclog_node", target=n.name)
        self.wake_held()

    def set_latency(
        self, lo: float, hi: float, src: NodeRef | None = None, dst: NodeRef | None = None
    ) -> None:
        """One-way latency in seconds, drawn uniformly from [lo, hi], globally or per link."""
        if not 0.0 <= lo <= hi:
            raise SimulationError(f"latency needs 0 <= lo <= hi seconds, got ({lo}, {hi})")
        key = self._link_key(src, dst)
        if key == (None, None):
            self.config = _replace(self.config, latency=(lo, hi))
        else:
            self._latency[key] = (lo, hi)
        self._loop.record("set_latency", lo=lo, hi=hi, src=_name(src), dst=_name(dst))

    def set_loss(self, p: float, src: NodeRef | None = None, dst: NodeRef | None = None) -> None:
        """Probability that a UDP datagram is lost, globally or per link (TCP never loses)."""
        if not 0.0 <= p <= 1.0:
            raise SimulationError(f"loss must be a probability in [0, 1], got {p!r}")
        key = self._link_key(src, dst)
        if key == (None, None):
            self.config = _replace(self.config, loss=p)
        else:
            self._loss[key] = p
        self._loop.record("set_loss", p=p, src=_name(src), dst=_name(dst))

    def _link_key(self, src: NodeRef | None, dst: NodeRef | None) -> tuple[int | None, int | None]:
        a = None if src is None else self._sim.node(src).index
        b = None if dst is None else self._sim.node(dst).index
        return (a, b)

    # --- addresses -------------------------------------------------------------------------

    def register(self, node: Node) -> None:
        if node.ip in self._by_ip:
            raise SimulationError(
                f"IP {node.ip} is already {self._by_ip[node.ip].name}'s: give each node its own"
            )
        if node.ip in LOOPBACK_NAMES or node.ip in ANY_ADDRESSES:
            raise SimulationError(f"IP {node.ip!r} is reserved: give the node a unicast address")
        self._by_ip[node.ip] = node

    def resolve(self, host: str | None) -> str:
        """A host name or address as an IP string; node names resolve to their IPs."""
        if host is None or host in ANY_ADDRESSES:
            return "0.0.0.0"
        if host in LOOPBACK_NAMES:
            return "127.0.0.1"
        if host in self._by_ip:
            return host
        node = self._sim.nodes.get(host)
        if node is not None:
            return node.ip
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise socket.gaierror(
                socket.EAI_NONAME, f"Name or service not known: {host!r}"
            ) from None
        return host  # an address with no host behind it: packets to it go nowhere

    def node_at_ip(self, ip: str) -> Node | None:
        return self._by_ip.get(ip)

    def node_at(self, src: Node, ip: str) -> Node | None:
        """The node that owns `ip`, as seen from `src` (loopback is `src` itself)."""
        if ip.startswith("127.") or ip == "::1":
            return src
        return self._by_ip.get(ip)

    def getaddrinfo(
        self, host: Any, port: Any, *, family: int = 0, type: int = 0, proto: int = 0
    ) -> list[tuple[Any, ...]]:
        if isinstance(host, bytes):
            host = host.decode("idna")
        ip = self.resolve(host)
        port_num = _port_number(port)
        socktypes = [type] if type else [socket.SOCK_STREAM, socket.SOCK_DGRAM]
        out = []
        for st in socktypes:
            pr = proto or (socket.IPPROTO_TCP if st == socket.SOCK_STREAM else socket.IPPROTO_UDP)
            out.append((socket.AF_INET, st, pr, "", (ip, port_num)))
        return out

    def getnameinfo(self, sockaddr: Any) -> tuple[str, str]:
        ip, port = sockaddr[0], sockaddr[1]
        node = self._by_ip.get(ip)
        return (node.name if node else ip, str(port))

    # --- the loop's I/O (kernel.interfaces.IO) ---------------------------------------------

    async def create_connection(
        self, protocol_factory: Any, host: Any, port: Any, **kwargs: Any
    ) -> Any:
        return await self.tcp.create_connection(protocol_factory, host, port, **kwargs)

    async def create_server(
        self, protocol_factory: Any, host: Any, port: Any, **kwargs: Any
    ) -> Any:
        return await self.tcp.create_server(protocol_factory, host, port, **kwargs)

    async def create_datagram_endpoint(
        self, protocol_factory: Any, local_addr: Any, remote_addr: Any, **kwargs: Any
    ) -> Any:
        return await self.udp.create_endpoint(protocol_factory, local_addr, remote_addr, **kwargs)

    async def sock_connect(self, sock: Any, address: Any) -> None:
        await self.tcp.sock_connect(sock, address)

    def new_socket(self, *args: Any, **kwargs: Any) -> SimSocket:
        from detsim.sim.net.sockets import SimSocket

        return SimSocket(*args, **kwargs)

    # --- routing ---------------------------------------------------------------------------

    def link_up(self, src: Node, dst: Node) -> bool:
        """Can a packet from `src` reach `dst`'s host now (ignoring whether a process listens)?"""
        if src is dst:
            return True
        if dst.crashed:
            return False
        if not (self._cut or self._clogged_links or self._clogged_nodes):
            return True
        a, b = src.index, dst.index
        return not (
            (a, b) in self._cut
            or (a, b) in self._clogged_links
            or a in self._clogged_nodes
            or b in self._clogged_nodes
        )

    def latency(self, src: Node, dst: Node) -> float:
        if src is dst:
            return LOOPBACK_LATENCY_S
        lo, hi = self._latency_range(src.index, dst.index)
        return lo if lo == hi else lo + (hi - lo) * self._random()

    def _latency_range(self, a: int, b: int) -> Range:
        if self._latency:
            for key in ((a, b), (a, None), (None, b)):
                r = self._latency.get(key)
                if r is not None:
                    return r
        return self.config.latency

    def loss(self, src: Node, dst: Node) -> float:
        if src is dst:
            return 0.0
        if self._loss:
            for key in ((src.index, dst.index), (src.index, None), (None, dst.index)):
                p = self._loss.get(key)
                if p is not None:
                    return p
        return self.config.loss

    def hold(self, serial: int, waiter: Waiter) -> None:
        if serial not in self._held and len(self._held) >= MAX_HELD_STREAMS:
            raise SimulationError(f"more than {MAX_HELD_STREAMS} streams held by cut links")
        self._held[serial] = waiter

    def release(self, serial: int) -> None:
        self._held.pop(serial, None)

    def wake_held(self) -> None:
        """Faults changed: let every held stream try again (in the order they were held)."""
        held = list(self._held.values())
        self._held.clear()
        for waiter in held:
            waiter.kick()

    # --- node lifecycle --------------------------------------------------------------------

    def on_node_down(self, node: Node, power_loss: bool) -> None:
        boot = node.boot
        if boot is not None:
            self.tcp.boot_down(boot, send_resets=not power_loss)
            self.udp.boot_down(boot)

    def on_node_up(self, node: Node) -> None:
        self.wake_held()


def _port_number(port: Any) -> int:
    if port is None:
        return 0
    if isinstance(port, bytes):
        port = port.decode()
    if isinstance(port, str):
        if port.isdigit():
            return int(port)
        try:
            return socket.getservbyname(port)
        except OSError:
            raise socket.gaierror(socket.EAI_SERVICE, f"unknown service {port!r}") from None
    return int(port)


def _name(ref: NodeRef | None) -> str | None:
    if ref is None:
        return None
    return ref if isinstance(ref, str) else str(ref.name)


def _replace(config: NetConfig, **changes: Any) -> NetConfig:
    import dataclasses

    return dataclasses.replace(config, **changes)
