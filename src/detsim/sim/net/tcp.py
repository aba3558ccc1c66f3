"""Simulated TCP: connections, listeners, and the asyncio transports over them.

Owned here: the connection state machine, the two pipes of every connection (one per
direction), flow control, and `create_connection` / `create_server` / `sock_connect`.

The connection model (h11's `_state.py` style: one table, one function that moves)
-------------------------------------------------------------------------------------
Each end of a connection (an `Endpoint`) has its own `TcpState`, as each host has its own in
real TCP. `TRANSITIONS` lists every legal (state, event) pair and the state it leads to;
`transition()` is the only code that changes a state, and it asserts the pair is in the table,
so an impossible move (a second FIN, a close before the handshake) fails the run at once.

    CONNECTING --SYN_ACK--> ESTABLISHED           the SYN-ACK came back (client side)
    (server side: an endpoint is born ESTABLISHED when the SYN finds a listener)
    CONNECTING | ESTABLISHED --CONNECT_FAILED--> FAILED
        refused, timed out, or the connecting task gave up (even after the SYN-ACK, before
        it saw it; a paired endpoint then resets its peer)
    ESTABLISHED --WRITE_EOF--> HALF_CLOSED_LOCAL    our FIN is queued; we still read
    ESTABLISHED --FIN_ARRIVED--> HALF_CLOSED_REMOTE the peer's FIN was delivered; we still write
    HALF_CLOSED_LOCAL --FIN_ARRIVED--> HALF_CLOSED_BOTH
    HALF_CLOSED_REMOTE --WRITE_EOF--> HALF_CLOSED_BOTH
    open --CLOSE--> CLOSED      owner closed: data then FIN still travel; connection_lost(None)
    open --ABORT--> ABORTED     owner aborted: RST to the peer; connection_lost(None)
    any unclosed --RST_ARRIVED | STREAM_TIMEOUT--> RESET
        the peer's RST (abort, kill, data at a closed socket, a process gone), or segments
        held across a cut longer than `stream_timeout`: connection_lost(ConnectionResetError);
        a CONNECTING end's connect() fails at once (refused; timed out for a stream timeout)
    any unclosed --PROCESS_GONE--> GONE
        its boot died: no callbacks; a kill sends an RST to the peer, a crash sends nothing

"open" is ESTABLISHED or a HALF_CLOSED state (an attached transport); "unclosed" adds
CONNECTING. CLOSED, ABORTED, RESET, GONE and FAILED are terminal (`TERMINAL_STATES`): the
endpoint leaves its boot's fd table and its server's client table as it enters one, and an
event that reaches a terminal endpoint (an RST after a close) is dropped by the caller before
`transition()`: there is no one left to tell. A pipe's `armed`, `ack_armed` and `held_since`
are timer bookkeeping of one direction, not connection state.

Rules:
- A pipe is kernel machinery: its segments travel on kernel timers (never paused or killed)
  and reach the receiving boot through `loop`'s per-boot scheduling, so a paused receiver gets
  them on resume and a dead one never does.
- A segment's arrival time is `max(now + latency, previous arrival)`: no reordering.
- The network's verdict at arrival time decides: deliver, hold (cut link / powered-off host;
  reset both ends after `stream_timeout`), or reset (the owning process is gone).
- Flow control: a writer's unacknowledged bytes above `high_water_bytes` pause its protocol
  (so `drain()` blocks); the acknowledgement of delivered bytes takes one latency back.
- Bounds: `MAX_SEGMENTS_IN_FLIGHT` counts a pipe's queued segments plus its acknowledgements
  still on their way back (each covers at least one delivered segment): a delivery turns
  segments into at most one acknowledgement, so only `send` can grow the sum, and `send`
  refuses data past the bound (the one FIN of a pipe may go one past: a close never fails).
  A server's client table holds open endpoints only, so its boot's fd table bounds it
  (`MAX_CONNECTIONS_PER_NODE`).
- Every protocol callback of an endpoint runs in the context it was created in, on its boot;
  `connection_lost` is called exactly once.
- Handshake: a SYN that finds the host unreachable is retried every `SYN_RETRY_S` until
  `connect_timeout` (TimeoutError); one that finds no listener is refused after one round trip.
"""

from __future__ import annotations

import asyncio
import collections
import contextvars
import enum
import errno
import itertools
import socket
import zlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from detsim.sim import runtime
from detsim.sim.errors import SimulationError
from detsim.sim.net.network import ANY_ADDRESSES, LOOPBACK_NAMES
from detsim.sim.net.sockets import SimSocket, SocketInfo

if TYPE_CHECKING:
    from detsim.sim.loop import SimLoop
    from detsim.sim.net.network import Network
    from detsim.sim.node import Boot, Node

MAX_CONNECTIONS_PER_NODE = 1_024
MAX_LISTENERS_PER_NODE = 256
# Segments on one pipe not yet acknowledged: queued, plus acknowledgements on their way back.
# Twice the default high-water mark in bytes: a writer that respects drain() under the default
# marks stays below it even writing one byte at a time.
MAX_SEGMENTS_IN_FLIGHT = 131_072
MAX_COALESCED_BYTES = 256 * 1024  # bytes handed to one data_received call
SYN_RETRY_S = 1.0
EPHEMERAL_PORTS = range(32_768, 61_000)
FIN = b""  # the end-of-stream marker in a pipe (data segments are never empty)


class TcpState(enum.Enum):
    """The state of one end of a connection (see the model in the module docstring)."""

    CONNECTING = "connecting"
    ESTABLISHED = "established"
    HALF_CLOSED_LOCAL = "half-closed-local"  # we sent FIN
    HALF_CLOSED_REMOTE = "half-closed-remote"  # the peer's FIN arrived
    HALF_CLOSED_BOTH = "half-closed-both"  # both FINs; the owner has not closed yet
    CLOSED = "closed"
    ABORTED = "aborted"
    RESET = "reset"
    GONE = "gone"
    FAILED = "failed"


class TcpEvent(enum.Enum):
    """What happens to one end of a connection (see the model in the module docstring)."""

    SYN_ACK = "syn-ack"
    CONNECT_FAILED = "connect-failed"
    WRITE_EOF = "write-eof"
    FIN_ARRIVED = "fin-arrived"
    CLOSE = "close"
    ABORT = "abort"
    RST_ARRIVED = "rst-arrived"
    STREAM_TIMEOUT = "stream-timeout"
    PROCESS_GONE = "process-gone"


OPEN_STATES = frozenset(
    {
        TcpState.ESTABLISHED,
        TcpState.HALF_CLOSED_LOCAL,
        TcpState.HALF_CLOSED_REMOTE,
        TcpState.HALF_CLOSED_BOTH,
    }
)
FIN_SENT_STATES = frozenset({TcpState.HALF_CLOSED_LOCAL, TcpState.HALF_CLOSED_BOTH})
TERMINAL_STATES = frozenset(
    {TcpState.CLOSED, TcpState.ABORTED, TcpState.RESET, TcpState.GONE, TcpState.FAILED}
)


def _build_transitions() -> dict[tuple[TcpState, TcpEvent], TcpState]:
    S, E = TcpState, TcpEvent
    table = {
        (S.CONNECTING, E.SYN_ACK): S.ESTABLISHED,
        (S.CONNECTING, E.CONNECT_FAILED): S.FAILED,
        (S.ESTABLISHED, E.CONNECT_FAILED): S.FAILED,
        (S.ESTABLISHED, E.WRITE_EOF): S.HALF_CLOSED_LOCAL,
        (S.ESTABLISHED, E.FIN_ARRIVED): S.HALF_CLOSED_REMOTE,
        (S.HALF_CLOSED_LOCAL, E.FIN_ARRIVED): S.HALF_CLOSED_BOTH,
        (S.HALF_CLOSED_REMOTE, E.WRITE_EOF): S.HALF_CLOSED_BOTH,
    }
    for state in OPEN_STATES:
        table[(state, E.CLOSE)] = S.CLOSED
        table[(state, E.ABORT)] = S.ABORTED
    for state in OPEN_STATES | {S.CONNECTING}:
        table[(state, E.RST_ARRIVED)] = S.RESET
        table[(state, E.STREAM_TIMEOUT)] = S.RESET
        table[(state, E.PROCESS_GONE)] = S.GONE
    return table


TRANSITIONS: dict[tuple[TcpState, TcpEvent], TcpState] = _build_transitions()
assert not any(state in TERMINAL_STATES for state, _ in TRANSITIONS), "terminal means terminal"
assert set(TRANSITIONS.values()) | {TcpState.CONNECTING} == set(TcpState), "a state unreachable"


def transition(ep: Endpoint, event: TcpEvent) -> TcpState:
    """Move `ep` on `event`: the only place a state changes. An impossible pair is a bug."""
    new = TRANSITIONS.get((ep.state, event))
    assert new is not None, f"impossible TCP transition: {ep.state.name} on {event.name} ({ep!r})"
    ep.state = new
    if new in TERMINAL_STATES:
        ep.boot.endpoints.pop(ep.serial, None)
        if ep.server is not None:
            ep.server.forget(ep)
    return new


class Endpoint:
    """One end of a connection, owned by a boot."""

    __slots__ = (
        "boot",
        "connect_waiter",
        "ctx",
        "node",
        "out",
        "peer",
        "peer_addr",
        "protocol",
        "reading_paused",
        "serial",
        "server",
        "sock_addr",
        "state",
        "transport",
    )

    def __init__(
        self,
        serial: int,
        boot: Boot,
        node: Node,
        sock_addr: tuple[str, int],
        peer_addr: tuple[str, int],
        ctx: contextvars.Context,
        state: TcpState,
        server: SimServer | None = None,
    ) -> None:
        assert state in (TcpState.CONNECTING, TcpState.ESTABLISHED), "born connecting or accepted"
        self.serial = serial
        self.boot = boot
        self.node = node
        self.sock_addr = sock_addr
        self.peer_addr = peer_addr
        self.ctx = ctx
        self.state: TcpState = state
        self.server = server  # the server that accepted it: its client table lists it while open
        self.protocol: asyncio.BaseProtocol | None = None
        self.transport: SimTransport | None = None
        self.peer: Endpoint | None = None
        self.out: Pipe | None = None  # the pipe from this end to the peer
        self.reading_paused = False  # receive-side flow control, not connection state
        # While CONNECTING: the future `connect()` awaits, so a reset can fail it at once.
        self.connect_waiter: asyncio.Future[Endpoint] | None = None

    def __repr__(self) -> str:
        addrs = f"{_fmt(self.sock_addr)}->{_fmt(self.peer_addr)}"
        return f"<Endpoint {self.serial} {addrs} {self.state.name}>"

    @property
    def closed(self) -> bool:
        """No more callbacks: closed, aborted, reset, failed, or its boot died."""
        return self.state in TERMINAL_STATES


class Pipe:
    """One direction of a connection: segments in flight from `src` to `dst`."""

    __slots__ = (
        "ack_armed",
        "acks",
        "armed",
        "dst",
        "held_since",
        "last_at",
        "queue",
        "serial",
        "src",
        "stack",
        "unacked_bytes",
    )

    def __init__(self, stack: TcpStack, serial: int, src: Endpoint, dst: Endpoint) -> None:
        self.stack = stack
        self.serial = serial
        self.src = src
        self.dst = dst
        self.queue: collections.deque[tuple[float, bytes]] = collections.deque()
        self.last_at = 0.0
        self.armed = False
        self.held_since: float | None = None
        self.unacked_bytes = 0  # sent, not yet acknowledged (as of the last `settle_acks`)
        # Acknowledgements in flight back to the sender: (arrival time, bytes), arrival times
        # strictly increasing (see `add_ack`). Settled lazily when the sender looks at its
        # buffer; a timer runs only while the sender is paused.
        self.acks: collections.deque[tuple[float, int]] = collections.deque()
        self.ack_armed = False

    def settle_acks(self, now: float) -> int:
        acks = self.acks
        while acks and acks[0][0] <= now:
            self.unacked_bytes -= acks.popleft()[1]
        assert self.unacked_bytes >= 0, "acknowledged more than was sent"
        return self.unacked_bytes

    def add_ack(self, arrive_at: float, size_bytes: int) -> None:
        """An acknowledgement of `size_bytes` heads back, due at `arrive_at`.

        One due no later than the last is merged into it: acknowledgements settle in order, so
        it would settle with the last anyway (TCP's acknowledgements are cumulative).
        """
        acks = self.acks
        if acks and arrive_at <= acks[-1][0]:
            last_at, last_size = acks[-1]
            acks[-1] = (last_at, last_size + size_bytes)
        else:
            acks.append((arrive_at, size_bytes))

    def in_flight(self) -> int:
        """Segments not yet acknowledged, as `MAX_SEGMENTS_IN_FLIGHT` counts them."""
        return len(self.queue) + len(self.acks)

    def kick(self) -> None:
        """The network changed (heal, restart) or the receiver is ready: try again."""
        self.stack.kick(self)


class TcpStack:
    """The TCP of the whole network: ports, listeners, handshakes, and every pipe's segments."""

    def __init__(self, net: Network, loop: SimLoop) -> None:
        self.net = net
        self.loop = loop
        self._serials = itertools.count(1)
        self._listeners: dict[tuple[int, int], list[Listener]] = {}  # (node index, port)
        self._next_port: dict[int, int] = {}

    # --- ports and listeners ---------------------------------------------------------------

    def ephemeral_port(self, node: Node, in_use: Callable[[int], bool]) -> int:
        start = self._next_port.get(node.index, EPHEMERAL_PORTS.start)
        span = len(EPHEMERAL_PORTS)
        for i in range(span):
            port = EPHEMERAL_PORTS.start + (start - EPHEMERAL_PORTS.start + i) % span
            if not in_use(port):
                self._next_port[node.index] = port + 1
                return port
        raise OSError(errno.EADDRINUSE, "no free ephemeral port")

    def _find_listener(self, node: Node, port: int, via_loopback: bool) -> Listener | None:
        for lst in self._listeners.get((node.index, port), ()):
            if lst.boot.alive and lst.accepts(via_loopback):
                return lst
        return None

    def add_listener(self, lst: Listener) -> None:
        node = lst.boot.node
        assert node is not None
        key = (node.index, lst.port)
        same_port = self._listeners.setdefault(key, [])
        for other in same_port:
            if (
                other.bind_ip in ANY_ADDRESSES
                or lst.bind_ip in ANY_ADDRESSES
                or other.bind_ip == lst.bind_ip
            ):
                raise OSError(errno.EADDRINUSE, f"address already in use: port {lst.port}")
        if (
            sum(len(v) for k, v in self._listeners.items() if k[0] == node.index)
            >= MAX_LISTENERS_PER_NODE
        ):
            raise OSError(errno.EMFILE, f"more than {MAX_LISTENERS_PER_NODE} listeners")
        same_port.append(lst)

    def remove_listener(self, lst: Listener) -> None:
        node = lst.boot.node
        assert node is not None
        same_port = self._listeners.get((node.index, lst.port), [])
        if lst in same_port:
            same_port.remove(lst)

    def port_in_use(self, node: Node, port: int) -> bool:
        if self._listeners.get((node.index, port)):
            return True
        boot = node.boot
        return boot is not None and any(
            isinstance(ep, Endpoint) and ep.sock_addr[1] == port for ep in boot.endpoints.values()
        )

    # --- client side -----------------------------------------------------------------------

    async def create_connection(
        self,
        protocol_factory: Callable[[], asyncio.BaseProtocol],
        host: Any = None,
        port: Any = None,
        *,
        ssl: Any = None,
        sock: Any = None,
        local_addr: Any = None,
        **_ignored: Any,
    ) -> tuple[SimTransport, asyncio.BaseProtocol]:
        if ssl:
            raise SimulationError("TLS is not simulated: connect without ssl inside a simulation")
        if sock is not None:
            ep = self._adopt(sock)
        else:
            if host is None or port is None:
                raise ValueError("host and port are required when sock is not given")
            ep = await self.connect(self.net.resolve(host), int(port))
        if ep.state is not TcpState.ESTABLISHED:
            # Reset after the SYN-ACK but before the connecting task ran (its host paused, or
            # the RST in the same instant): a real client's connect succeeds and its first read
            # sees the reset; no byte can have flowed, so the connect fails with it here.
            raise ConnectionResetError(
                errno.ECONNRESET, f"connection to {ep.peer_addr[0]}:{ep.peer_addr[1]} reset"
            )
        return self.attach(ep, protocol_factory())

    async def sock_connect(self, sock: Any, address: Any) -> None:
        if not isinstance(sock, SimSocket):
            raise SimulationError("sock_connect on a real socket inside a simulation")
        if sock.type != socket.SOCK_STREAM:
            raise SimulationError("only stream sockets can sock_connect in a simulation")
        sock.connected = await self.connect(self.net.resolve(address[0]), int(address[1]))
        sock.peer_addr = sock.connected.peer_addr
        sock.sock_addr = sock.connected.sock_addr

    def _adopt(self, sock: Any) -> Endpoint:
        if not isinstance(sock, SimSocket) or not isinstance(sock.connected, Endpoint):
            raise SimulationError(
                "create_connection(sock=...) in a simulation needs a socket connected with "
                "`await loop.sock_connect(sock, addr)` on a socket made inside the simulation"
            )
        ep = sock.connected
        sock.connected = None
        sock.detached = True
        return ep

    async def connect(self, ip: str, port: int) -> Endpoint:
        node = runtime.require_node("connect")
        boot = self.loop.current_boot()
        self._check_fd_limit(boot)
        if not 0 < port < 65_536:
            raise OSError(errno.EINVAL, f"invalid port {port}")
        src_ip = "127.0.0.1" if ip.startswith("127.") else node.ip
        local_port = self.ephemeral_port(node, lambda p: self.port_in_use(node, p))
        ep = Endpoint(
            next(self._serials),
            boot,
            node,
            (src_ip, local_port),
            (ip, port),
            contextvars.copy_context(),
            TcpState.CONNECTING,
        )
        boot.endpoints[ep.serial] = ep  # reserve the fd and port while connecting
        self.loop.record("connect", dst=f"{ip}:{port}", src_port=local_port)
        waiter: asyncio.Future[Endpoint] = self.loop.create_future()
        ep.connect_waiter = waiter
        deadline = self.loop.now + self.net.config.connect_timeout
        self.loop.kernel_soon(self._syn, ep, waiter, deadline)
        self.loop.kernel_at(deadline, self._connect_timeout, ep, waiter)
        try:
            return await waiter
        except BaseException:
            # Refused, timed out, or the connecting task gave up, maybe after the SYN-ACK came.
            if not ep.closed:
                self._connect_failed(ep)
            raise
        finally:
            ep.connect_waiter = None

    def _connect_failed(self, ep: Endpoint) -> None:
        assert ep.protocol is None, "a failed connect never had a protocol"
        transition(ep, TcpEvent.CONNECT_FAILED)
        if ep.peer is not None:  # the SYN found a listener: the server end exists, reset it
            self._send_reset(ep)

    def _check_fd_limit(self, boot: Boot) -> None:
        if len(boot.endpoints) >= MAX_CONNECTIONS_PER_NODE:
            raise OSError(
                errno.EMFILE,
                f"Too many open files ({MAX_CONNECTIONS_PER_NODE} connections on this node)",
            )

    def _syn(self, ep: Endpoint, waiter: asyncio.Future[Endpoint], deadline: float) -> None:
        if waiter.done():
            return
        dst = self.net.node_at(ep.node, ep.peer_addr[0])
        if dst is None or not self.net.link_up(ep.node, dst):
            retry_at = self.loop.now + SYN_RETRY_S
            if retry_at < deadline:
                self.loop.kernel_at(retry_at, self._syn, ep, waiter, deadline)
            return
        arrive = self.loop.now + self.net.latency(ep.node, dst)
        self.loop.kernel_at(arrive, self._syn_arrives, ep, dst, waiter, deadline)

    def _syn_arrives(
        self, ep: Endpoint, dst: Node, waiter: asyncio.Future[Endpoint], deadline: float
    ) -> None:
        if waiter.done():
            return
        if not self.net.link_up(ep.node, dst):  # cut while in flight: the SYN is lost
            self._syn_retry(ep, waiter, deadline)
            return
        back = self.loop.now + self.net.latency(dst, ep.node)
        lst = self._find_listener(dst, ep.peer_addr[1], ep.peer_addr[0].startswith("127."))
        if lst is None or len(lst.boot.endpoints) >= MAX_CONNECTIONS_PER_NODE:
            self.loop.record_for(dst.name, "refuse", port=ep.peer_addr[1])
            self.loop.kernel_at(back, self._refused, ep, waiter)
            return
        server_ep = lst.accept_endpoint(ep)
        # Paired now: what the server writes at once waits in its pipe until the client attaches.
        self.pair(ep, server_ep)
        self.loop.kernel_at(back, self._established, ep, waiter)

    def _syn_retry(self, ep: Endpoint, waiter: asyncio.Future[Endpoint], deadline: float) -> None:
        retry_at = self.loop.now + SYN_RETRY_S
        if retry_at < deadline:
            self.loop.kernel_at(retry_at, self._syn, ep, waiter, deadline)

    def _refused(self, ep: Endpoint, waiter: asyncio.Future[Endpoint]) -> None:
        if not waiter.done() and ep.boot.alive:  # a dead boot's connect has no one to tell
            ip, port = ep.peer_addr
            _fail_connect(
                waiter,
                ConnectionRefusedError(errno.ECONNREFUSED, f"Connect call failed ({ip!r}, {port})"),
            )

    def _established(self, ep: Endpoint, waiter: asyncio.Future[Endpoint]) -> None:
        if waiter.done() or ep.closed:
            # The connecting task gave up (timeout, cancel) or its process died: the SYN-ACK
            # finds no socket, and the client's host answers it with a reset.
            if not ep.closed:
                transition(ep, TcpEvent.CONNECT_FAILED)
            self._send_reset(ep)
            return
        transition(ep, TcpEvent.SYN_ACK)
        self.loop.record_for(
            ep.node.name, "established", dst=_fmt(ep.peer_addr), src_port=ep.sock_addr[1]
        )
        waiter.set_result(ep)

    def _connect_timeout(self, ep: Endpoint, waiter: asyncio.Future[Endpoint]) -> None:
        if not waiter.done() and ep.boot.alive:
            ip, port = ep.peer_addr
            self.loop.record_for(ep.node.name, "connect_timeout", dst=f"{ip}:{port}")
            _fail_connect(
                waiter, TimeoutError(errno.ETIMEDOUT, f"Connect call timed out ({ip!r}, {port})")
            )

    def pair(self, a: Endpoint, b: Endpoint) -> None:
        assert a.peer is None and b.peer is None, "an endpoint is paired once"
        a.peer, b.peer = b, a
        a.out = Pipe(self, next(self._serials), a, b)
        b.out = Pipe(self, next(self._serials), b, a)

    def attach(self, ep: Endpoint, protocol: asyncio.BaseProtocol) -> tuple[SimTransport, Any]:
        """Give an established endpoint its protocol and transport; data may flow to it now."""
        assert ep.state is TcpState.ESTABLISHED and ep.protocol is None, f"attach {ep!r}"
        transport = SimTransport(self, ep)
        ep.protocol = protocol
        ep.transport = transport
        protocol.connection_made(transport)
        if ep.peer is not None and ep.peer.out is not None:
            self.kick(ep.peer.out)
        return transport, protocol

    # --- segments --------------------------------------------------------------------------

    def send(self, ep: Endpoint, data: bytes) -> None:
        pipe = ep.out
        if pipe is None or ep.peer is None:
            return
        pipe.settle_acks(self.loop.now)  # settling is invisible: readers settle first
        # A close never fails: the one FIN a pipe carries may go one past the bound.
        if data and pipe.in_flight() >= MAX_SEGMENTS_IN_FLIGHT:
            raise SimulationError(
                f"more than {MAX_SEGMENTS_IN_FLIGHT} segments unacknowledged on one connection "
                f"({len(pipe.queue)} queued, {len(pipe.acks)} acknowledgements on their way "
                "back): is the writer ignoring drain()?"
            )
        at = self.loop.now + self.net.latency(ep.node, ep.peer.node)
        if at < pipe.last_at:
            at = pipe.last_at
        pipe.last_at = at
        pipe.queue.append((at, data))
        if data:
            pipe.unacked_bytes += len(data)
        if not pipe.armed and pipe.held_since is None:
            pipe.armed = True
            self.loop.kernel_at(at, self._pump, pipe)

    def kick(self, pipe: Pipe) -> None:
        self.net.release(pipe.serial)
        if pipe.held_since is not None:
            pipe.held_since = None
            # Retransmission after the cut: one fresh latency from now.
            resend = self.loop.now + self.net.latency(pipe.src.node, pipe.dst.node)
            pipe.queue = collections.deque((max(at, resend), d) for at, d in pipe.queue)
            pipe.last_at = max(pipe.last_at, resend)
        if not pipe.armed and pipe.queue:
            pipe.armed = True
            self.loop.kernel_at(max(pipe.queue[0][0], self.loop.now), self._pump, pipe)

    def _pump(self, pipe: Pipe) -> None:
        pipe.armed = False
        if not pipe.queue:
            return
        at = pipe.queue[0][0]
        if at > self.loop.now:
            pipe.armed = True
            self.loop.kernel_at(at, self._pump, pipe)
            return
        dst, src = pipe.dst, pipe.src
        if not self.net.link_up(src.node, dst.node):
            self._hold(pipe)
            return
        if dst.boot is not dst.node.boot or not dst.boot.alive:
            self._reset_pipe(pipe, "the receiving process is gone")
            return
        if dst.closed:
            self._arrive_at_closed(pipe)
            return
        if dst.protocol is None or dst.reading_paused:
            return  # `attach` / `resume_reading` kicks the pipe
        self._deliver_due(pipe)

    def _deliver_due(self, pipe: Pipe) -> None:
        now = self.loop.now
        chunks: list[bytes] = []
        size = 0
        fin = False
        queue = pipe.queue
        while queue and queue[0][0] <= now and size < MAX_COALESCED_BYTES:
            _, data = queue.popleft()
            if data is FIN or not data:
                fin = True
                break
            chunks.append(data)
            size += len(data)
        dst = pipe.dst
        if chunks:
            data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
            # The bytes' CRC, not just their size: a run that sends other bytes is another run.
            crc = zlib.crc32(data)
            self.loop.record_for(
                dst.node.name, "recv", conn=pipe.serial, src=pipe.src.node.name, size=size, crc=crc
            )
            self.loop.soon_in(dst.ctx, self._data_received, dst, data)
            pipe.add_ack(now + self.net.latency(dst.node, pipe.src.node), size)
            assert pipe.in_flight() <= MAX_SEGMENTS_IN_FLIGHT + 1, "a delivery never adds"
            transport = pipe.src.transport
            if transport is not None and transport.protocol_paused:
                self.arm_ack(pipe)
        if fin:
            queue.clear()
            transition(dst, TcpEvent.FIN_ARRIVED)
            self.loop.soon_in(dst.ctx, self._eof_received, dst)
            return
        if queue:
            pipe.armed = True
            self.loop.kernel_at(max(queue[0][0], now), self._pump, pipe)

    def _hold(self, pipe: Pipe) -> None:
        if pipe.held_since is None:
            pipe.held_since = self.loop.now
            self.loop.record_for(
                pipe.src.node.name,
                "hold",
                conn=pipe.serial,
                dst=pipe.dst.node.name,
                segments=len(pipe.queue),
            )
            deadline = self.loop.now + self.net.config.stream_timeout
            self.loop.kernel_at(deadline, self._stream_timeout, pipe, pipe.held_since)
        self.net.hold(pipe.serial, pipe)

    def _stream_timeout(self, pipe: Pipe, held_since: float) -> None:
        if pipe.held_since != held_since or not pipe.queue:
            return
        self.net.release(pipe.serial)
        self.loop.record_for(pipe.src.node.name, "stream_timeout", conn=pipe.serial)
        pipe.queue.clear()
        for ep in (pipe.src, pipe.dst):
            self._lose(
                ep,
                TcpEvent.STREAM_TIMEOUT,
                ConnectionResetError(
                    errno.ECONNRESET, "Connection reset: segments held longer than stream_timeout"
                ),
            )

    def arm_ack(self, pipe: Pipe) -> None:
        """The sender is paused: wake it when the next acknowledgement arrives."""
        if not pipe.ack_armed and pipe.acks:
            pipe.ack_armed = True
            self.loop.kernel_at(pipe.acks[0][0], self._ack, pipe)

    def _ack(self, pipe: Pipe) -> None:
        pipe.ack_armed = False
        src = pipe.src
        transport = src.transport
        if transport is None or src.closed:
            return
        transport.maybe_resume_protocol()
        if transport.protocol_paused:
            self.arm_ack(pipe)

    def _arrive_at_closed(self, pipe: Pipe) -> None:
        has_data = any(d for _, d in pipe.queue)
        pipe.queue.clear()
        if has_data:  # data at a closed socket: the kernel answers with a reset
            self._reset_pipe(pipe, "data arrived at a closed socket")

    def _reset_pipe(self, pipe: Pipe, why: str) -> None:
        pipe.queue.clear()
        self.loop.record_for(pipe.dst.node.name, "rst", conn=pipe.serial, why=why)
        back = self.loop.now + self.net.latency(pipe.dst.node, pipe.src.node)
        self.loop.kernel_at(back, self._rst_arrives, pipe.src)

    def _send_reset(self, ep: Endpoint) -> None:
        """`ep` vanished abruptly (abort, kill, a late handshake): tell the peer, if it can hear."""
        peer = ep.peer
        if peer is None or peer.closed or ep.node.crashed:  # a powered-off host sends nothing
            return
        if ep.out is not None:
            ep.out.queue.clear()
        if not self.net.link_up(ep.node, peer.node):
            return  # lost; the peer learns of it when it next sends
        back = self.loop.now + self.net.latency(ep.node, peer.node)
        self.loop.kernel_at(back, self._rst_arrives, peer)

    def _rst_arrives(self, ep: Endpoint) -> None:
        self._lose(
            ep,
            TcpEvent.RST_ARRIVED,
            ConnectionResetError(errno.ECONNRESET, "Connection reset by peer"),
        )

    def _lose(self, ep: Endpoint, event: TcpEvent, exc: Exception | None) -> None:
        """End `ep` on `event` with `connection_lost(exc)` (once; a terminal `ep` ignores it).

        A graceful close keeps what `ep` already sent (data, then FIN, still travel); an abrupt
        end drops it.
        """
        if ep.closed:
            return
        graceful = event is TcpEvent.CLOSE
        was_connecting = ep.state is TcpState.CONNECTING
        transition(ep, event)
        if was_connecting:
            self._reset_while_connecting(ep, event)
        if ep.out is not None and not graceful:
            ep.out.queue.clear()
            self.net.release(ep.out.serial)
        self.loop.record_for(ep.node.name, "reset" if exc else "closed", conn=ep.serial)
        if ep.protocol is not None:
            self.loop.soon_in(ep.ctx, ep.protocol.connection_lost, exc)

    def _reset_while_connecting(self, ep: Endpoint, event: TcpEvent) -> None:
        """A reset reached an end still in the handshake: its `connect()` fails now.

        The server end exists once the SYN arrives, so its RST (a kill, a server closed before
        accepting) can overtake the SYN-ACK: a client in SYN-SENT that gets an RST is refused.
        """
        waiter = ep.connect_waiter
        if waiter is None or waiter.done() or not ep.boot.alive:
            return
        ip, port = ep.peer_addr
        if event is TcpEvent.STREAM_TIMEOUT:
            exc: OSError = TimeoutError(
                errno.ETIMEDOUT, f"Connect call timed out ({ip!r}, {port}): held by a cut"
            )
        else:
            exc = ConnectionRefusedError(
                errno.ECONNREFUSED, f"Connect call failed ({ip!r}, {port}): reset in the handshake"
            )
        _fail_connect(waiter, exc)

    # --- callbacks on the receiving boot ---------------------------------------------------

    def _data_received(self, ep: Endpoint, data: bytes) -> None:
        if ep.closed or ep.protocol is None:
            return
        ep.protocol.data_received(data)  # type: ignore[attr-defined]

    def _eof_received(self, ep: Endpoint) -> None:
        if ep.closed or ep.protocol is None:
            return
        keep_open = ep.protocol.eof_received()  # type: ignore[attr-defined]
        if not keep_open and ep.transport is not None:
            ep.transport.close()

    # --- lifecycle -------------------------------------------------------------------------

    def boot_down(self, boot: Boot, send_resets: bool) -> None:
        for ep in list(boot.endpoints.values()):
            if isinstance(ep, Endpoint) and not ep.closed:
                transition(ep, TcpEvent.PROCESS_GONE)
                if send_resets:
                    self._send_reset(ep)
        boot.endpoints.clear()
        for key, lst_list in list(self._listeners.items()):
            self._listeners[key] = [lst for lst in lst_list if lst.boot is not boot]

    def close_endpoint(self, ep: Endpoint) -> None:
        """The owner closed its transport: FIN after the data, then `connection_lost(None)`."""
        if ep.closed:
            return
        if ep.state not in FIN_SENT_STATES:
            self.send(ep, FIN)
        self._lose(ep, TcpEvent.CLOSE, None)

    def abort_endpoint(self, ep: Endpoint) -> None:
        if ep.closed:
            return
        self._send_reset(ep)
        self._lose(ep, TcpEvent.ABORT, None)

    def write_eof(self, ep: Endpoint) -> None:
        """The owner shut its sending side: FIN after the data; it still reads."""
        transition(ep, TcpEvent.WRITE_EOF)
        self.send(ep, FIN)

    # --- servers ---------------------------------------------------------------------------

    async def create_server(
        self,
        protocol_factory: Callable[[], asyncio.BaseProtocol],
        host: Any = None,
        port: Any = None,
        *,
        ssl: Any = None,
        sock: Any = None,
        start_serving: bool = True,
        **_ignored: Any,
    ) -> SimServer:
        if ssl:
            raise SimulationError("TLS is not simulated: serve without ssl inside a simulation")
        if sock is not None:
            raise SimulationError("create_server(sock=...) is not simulated: pass host and port")
        node = runtime.require_node("create_server")
        boot = self.loop.current_boot()
        hosts = host if isinstance(host, (list, tuple)) else [host]
        port_num = int(port or 0)
        if port_num == 0:
            port_num = self.ephemeral_port(node, lambda p: self.port_in_use(node, p))
        server = SimServer(self, boot, protocol_factory, contextvars.copy_context())
        for h in hosts:
            bind_ip = self._bind_ip(node, h)
            server.listeners.append(Listener(self, server, boot, bind_ip, port_num))
        if start_serving:
            server.start_listening()
        return server

    def _bind_ip(self, node: Node, host: Any) -> str:
        if host is None or host in ANY_ADDRESSES:
            return "0.0.0.0"
        if host in LOOPBACK_NAMES or str(host).startswith("127."):
            return "127.0.0.1"
        ip = self.net.resolve(str(host))
        if ip != node.ip:
            raise OSError(
                errno.EADDRNOTAVAIL,
                f"cannot assign requested address {host!r} on {node.name} ({node.ip})",
            )
        return ip


class Listener:
    """A listening socket of one server, on one address."""

    def __init__(
        self, stack: TcpStack, server: SimServer, boot: Boot, bind_ip: str, port: int
    ) -> None:
        self.stack = stack
        self.server = server
        self.boot = boot
        self.bind_ip = bind_ip
        self.port = port

    def accepts(self, via_loopback: bool) -> bool:
        if self.bind_ip == "0.0.0.0":
            return True
        return via_loopback == (self.bind_ip == "127.0.0.1")

    def accept_endpoint(self, client: Endpoint) -> Endpoint:
        """The kernel half of accept: the endpoint exists now, the protocol on the server boot."""
        node = self.boot.node
        assert node is not None
        stack = self.stack
        local_ip = "127.0.0.1" if client.peer_addr[0].startswith("127.") else node.ip
        ep = Endpoint(
            next(stack._serials),
            self.boot,
            node,
            (local_ip, self.port),
            client.sock_addr,
            self.server.ctx,
            TcpState.ESTABLISHED,
            self.server,
        )
        self.boot.endpoints[ep.serial] = ep
        stack.loop.record_for(node.name, "accept", src=_fmt(client.sock_addr), port=self.port)
        stack.loop.soon_in(self.server.ctx, self.server.accepted, ep)
        return ep


class SimServer(asyncio.AbstractServer):
    """What `loop.create_server` returns in a simulation."""

    def __init__(
        self,
        stack: TcpStack,
        boot: Boot,
        protocol_factory: Callable[[], asyncio.BaseProtocol],
        ctx: contextvars.Context,
    ) -> None:
        self._stack = stack
        self._boot = boot
        self._factory = protocol_factory
        self.ctx = ctx
        self.listeners: list[Listener] = []
        self._serving = False
        self._closed = False
        self._serving_forever: asyncio.Future[None] | None = None
        self._clients: dict[int, Endpoint] = {}

    def accepted(self, ep: Endpoint) -> None:
        if ep.closed:
            return
        if self._closed:
            self._stack.abort_endpoint(ep)
            return
        # Open endpoints only (`forget` drops each as it closes): within its boot's fd table.
        assert len(self._clients) < MAX_CONNECTIONS_PER_NODE, "more clients than fds"
        self._clients[ep.serial] = ep
        self._stack.attach(ep, self._factory())

    def forget(self, ep: Endpoint) -> None:
        """`ep` reached a terminal state: it is no longer a client of this server."""
        self._clients.pop(ep.serial, None)

    def open_clients(self) -> int:
        return len(self._clients)

    def start_listening(self) -> None:
        if self._serving or self._closed:
            return
        for lst in self.listeners:
            self._stack.add_listener(lst)
        self._serving = True
        self._stack.loop.record("listen", port=self.listeners[0].port if self.listeners else 0)

    @property
    def sockets(self) -> tuple[SocketInfo, ...]:
        node = self._boot.node
        assert node is not None
        return tuple(
            SocketInfo((node.ip if lst.bind_ip == "0.0.0.0" else lst.bind_ip, lst.port))
            for lst in self.listeners
        )

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._serving = False
        for lst in self.listeners:
            self._stack.remove_listener(lst)
        if self._serving_forever is not None and not self._serving_forever.done():
            self._serving_forever.cancel()

    def close_clients(self) -> None:
        for ep in list(self._clients.values()):
            if ep.transport is not None:
                ep.transport.close()

    def abort_clients(self) -> None:
        for ep in list(self._clients.values()):
            if ep.transport is not None:
                ep.transport.abort()

    def get_loop(self) -> asyncio.AbstractEventLoop:
        return self._stack.loop

    def is_serving(self) -> bool:
        return self._serving

    async def start_serving(self) -> None:
        self.start_listening()

    async def serve_forever(self) -> None:
        if self._serving_forever is not None:
            raise RuntimeError(f"server {self!r} is already being awaited on serve_forever()")
        if self._closed:
            raise RuntimeError(f"server {self!r} is closed")
        self.start_listening()
        self._serving_forever = self._stack.loop.create_future()
        try:
            await self._serving_forever
        except asyncio.CancelledError:
            try:
                self.close()
                await self.wait_closed()
            finally:
                raise
        finally:
            self._serving_forever = None

    async def wait_closed(self) -> None:
        return None

    async def __aenter__(self) -> SimServer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()
        await self.wait_closed()


class SimTransport(asyncio.Transport):
    """The asyncio transport of one simulated TCP endpoint."""

    def __init__(self, stack: TcpStack, ep: Endpoint) -> None:
        super().__init__()
        self._stack = stack
        self._ep = ep
        self._closing = False
        self.protocol_paused = False
        cfg = stack.net.config
        self._high_water = cfg.high_water_bytes
        self._low_water = cfg.low_water_bytes
        self._extra = {
            "peername": ep.peer_addr,
            "sockname": ep.sock_addr,
            "socket": SocketInfo(ep.sock_addr, ep.peer_addr),
        }

    def __repr__(self) -> str:
        return f"<SimTransport {_fmt(self._ep.sock_addr)}->{_fmt(self._ep.peer_addr)}>"

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._extra.get(name, default)

    def is_closing(self) -> bool:
        return self._closing or self._ep.closed

    def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        self._stack.close_endpoint(self._ep)

    def abort(self) -> None:
        self._closing = True
        self._stack.abort_endpoint(self._ep)

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._ep.protocol = protocol

    def get_protocol(self) -> asyncio.BaseProtocol:
        assert self._ep.protocol is not None
        return self._ep.protocol

    def is_reading(self) -> bool:
        return not self._ep.reading_paused and not self.is_closing()

    def pause_reading(self) -> None:
        self._ep.reading_paused = True

    def resume_reading(self) -> None:
        if self._ep.reading_paused:
            self._ep.reading_paused = False
            peer = self._ep.peer
            if peer is not None and peer.out is not None:
                self._stack.kick(peer.out)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(
                f"data argument must be a bytes-like object, not {type(data).__name__!r}"
            )
        if self._ep.state in FIN_SENT_STATES:
            raise RuntimeError("Cannot call write() after write_eof()")
        if not data or self.is_closing():
            return
        self._stack.send(self._ep, bytes(data))
        self._maybe_pause_protocol()

    def writelines(self, list_of_data: Any) -> None:
        self.write(b"".join(list_of_data))

    def write_eof(self) -> None:
        if self._ep.state in FIN_SENT_STATES or self.is_closing():
            return
        self._stack.write_eof(self._ep)

    def can_write_eof(self) -> bool:
        return True

    def get_write_buffer_size(self) -> int:
        out = self._ep.out
        return 0 if out is None else out.settle_acks(self._stack.loop.now)

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return (self._low_water, self._high_water)

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        if high is None:
            high = 64 * 1024 if low is None else 4 * low
        if low is None:
            low = high // 4
        if not high >= low >= 0:
            raise ValueError(f"high ({high!r}) must be >= low ({low!r}) must be >= 0")
        self._high_water, self._low_water = high, low
        self._maybe_pause_protocol()

    def _maybe_pause_protocol(self) -> None:
        if self.protocol_paused or self.get_write_buffer_size() <= self._high_water:
            return
        self.protocol_paused = True
        protocol = self._ep.protocol
        if protocol is not None:
            protocol.pause_writing()
        if self._ep.out is not None:
            self._stack.arm_ack(self._ep.out)

    def maybe_resume_protocol(self) -> None:
        if self.protocol_paused and self.get_write_buffer_size() <= self._low_water:
            self.protocol_paused = False
            protocol = self._ep.protocol
            if protocol is not None:
                ep = self._ep
                self._stack.loop.soon_in(ep.ctx, protocol.resume_writing)


def _fmt(addr: tuple[str, int]) -> str:
    return f"{addr[0]}:{addr[1]}"


def _fail_connect(waiter: asyncio.Future[Endpoint], exc: OSError) -> None:
    """Fail a connect. The waiter is the simulator's own: only the connecting task awaits it,
    and it always does unless its host dies first (paused, then killed), so an unretrieved
    exception here is nobody's mistake: asyncio must not log it as one."""
    waiter.set_exception(exc)
    waiter._log_traceback = False  # (result() still raises)
