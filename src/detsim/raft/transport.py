"""The Raft transport: authenticated, framed msgpack over plain asyncio TCP streams.

It owns the node's Raft port and one connection per peer pair, and nothing of Raft but the
message's `frm` and `to`. It uses only `asyncio.start_server` / `open_connection`, so the same
code runs on real sockets and inside the simulator (which patches asyncio's networking); it never
imports detsim.sim (DESIGN "Layers").

Wire format: a frame is a 4-byte big-endian length and that many bytes of msgpack (one value).
The bound is the core's `MAX_MESSAGE_BYTES` (10 MiB), here `MAX_FRAME_BYTES`; a declared length
over it closes the connection before a byte of the body is read. Handshake frames have a far
smaller bound (`MAX_HANDSHAKE_FRAME_BYTES`). After the handshake a frame is a Raft message as
`detsim.raft.codec` writes it (an array that starts with an int tag) or the keepalive `["ping"]`.

Handshake (bounded by `HANDSHAKE_TIMEOUT_S`), mutual HMAC-SHA256 challenge-response:
    dialer   -> ["hello", version, dialer_id, acceptor_id, dialer_incarnation, nonce_d]
    acceptor -> ["challenge", version, acceptor_id, acceptor_incarnation, nonce_a, mac_a]
    dialer   -> ["auth", mac_d]
    acceptor -> ["welcome"]  or  ["reject", reason]  (then it closes)
Each MAC is HMAC-SHA256(secret, role || msgpack(transcript)) over every field both sides sent,
with a role label per direction (so a MAC can never be reflected back), and each side's MAC
covers the nonce the *other* side drew fresh for this connection (so a recorded handshake never
replays). MACs are compared with `hmac.compare_digest`. With `secret=None` the MACs are empty and
unchecked (a warning is logged at start): anyone who can reach the port can inject messages.
A hello naming another node than this one is refused. A hello from an id not in the peer table
is refused when `secret=None` (anyone could claim any id); with a secret, a dialer that proves it
(the mutual HMAC handshake succeeds) is a cluster member (e.g. a leader added after this node's
table was configured, dialing a joiner that waits to be added): it becomes an *inbound-only* peer.
We never dial it (we know no address for it); `send` to it uses that connection; it lives as long
as it has a connection (then it and its queue are dropped), and `set_peers` leaves it alone unless
it names it (then it becomes an ordinary peer, its connection kept). Inbound-only peers count in
`MAX_PEERS`; one is refused when the table is full, and a configured peer added to a full table
evicts the oldest inbound-only one (configured peers come first).

One connection per pair. Both directions carry messages. The node with the smaller id dials at
once; the larger id dials only after `FALLBACK_DIAL_DELAY_S` without a connection (the smaller one
may not know it yet, or cannot reach it). When a second connection to the same peer completes its
handshake, both ends keep the same one by one rule, whatever the order they see events in:
1. the peer restarted (its incarnation, drawn at each Transport's start, differs): the new one
   wins (the old one is a dead process's half-open connection);
2. same dialer: the new one wins (a dialer redials only when it thinks its old one is dead);
3. else the one dialed by the smaller id wins (simultaneous connects).
The loser is closed (an acceptor sends ["reject", ...] first). Half-open connections are found by
the keepalive: one watchdog task a transport, every `WATCHDOG_INTERVAL_S`, pings each connection
that sent nothing for `PING_INTERVAL_S`, and closes one that received nothing for
`IDLE_TIMEOUT_S` or whose writes have not drained for `SEND_TIMEOUT_S`. (No timer per frame: the
hot path is a write per batch of frames and a read per TCP chunk, parsed from a buffer.)

Sending never blocks the Raft loop: `send` encodes, appends to the peer's queue and returns;
when the peer's writer task is parked (nothing queued, nothing in the socket's buffer), `send`
hands the frame to the connection itself, so a message leaves in the call that sent it and not a
loop turn later (one turn per hop of every write, at one client: BENCHMARKS.md). A write the
socket cannot take at once stays in asyncio's buffer and the sends after it queue, so frames
leave in order. A queue over `MAX_SEND_QUEUE_MESSAGES` or `MAX_SEND_QUEUE_BYTES` drops its
*oldest* frames (Raft tolerates loss, and newer messages carry newer state), counted in
`stats.dropped_queue_full`.
One task per peer dials (exponential backoff from `BACKOFF_INITIAL_S` to `BACKOFF_MAX_S`,
jittered through `random`, which a simulation seeds) and writes the queue to the connection.

Bad input: a frame over the bound, malformed msgpack, an invalid or unknown message, a wrong HMAC,
a truncated frame, a stalled handshake: that connection is closed, counted in `stats` (one named
counter each), and logged (at the 1st, 2nd, 4th, 8th... occurrence of each counter, so an attack
cannot flood the log); the node keeps serving its other peers. A message whose `frm` is not the
authenticated peer, or whose `to` is not this node, is dropped and counted.

Bounds: `MAX_PEER_CONNECTIONS` open connections (handshaking ones included; more are closed at
accept), `MAX_PEERS` peers, the queue bounds above, `MAX_WRITE_BATCH_BYTES` a write call, and a
connection's read buffer: one partial frame plus one read (`MAX_FRAME_BYTES + READ_CHUNK_BYTES`).
An unauthenticated connection holds a slot for at most `HANDSHAKE_TIMEOUT_S`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import hmac
import logging
import os
import random
import struct
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from typing import Any, Final, TypeVar

from detsim.raft import codec
from detsim.raft.codec import CodecError, UnknownMessageTypeError
from detsim.raft.core.messages import MAX_MESSAGE_BYTES, Message

Address = tuple[str, int]
T = TypeVar("T")

MAX_FRAME_BYTES: Final = MAX_MESSAGE_BYTES  # the core's bound: every message it builds fits
MAX_HANDSHAKE_FRAME_BYTES: Final = 4096
MAX_PEER_CONNECTIONS: Final = 100
MAX_PEERS: Final = MAX_PEER_CONNECTIONS
MAX_SEND_QUEUE_MESSAGES: Final = 4096  # per peer
MAX_SEND_QUEUE_BYTES: Final = 64 * 1024 * 1024  # per peer
MAX_WRITE_BATCH_BYTES: Final = 1024 * 1024  # frames joined into one write call
HANDSHAKE_TIMEOUT_S: Final = 5.0
CONNECT_TIMEOUT_S: Final = 5.0
SEND_TIMEOUT_S: Final = 10.0  # a peer that does not drain our writes for this long is closed
PING_INTERVAL_S: Final = 1.0
IDLE_TIMEOUT_S: Final = 5.0
WATCHDOG_INTERVAL_S: Final = 0.5
READ_CHUNK_BYTES: Final = 256 * 1024  # one read call; frames are parsed out of the buffer
BACKOFF_INITIAL_S: Final = 0.05
BACKOFF_MAX_S: Final = 2.0
FALLBACK_DIAL_DELAY_S: Final = 0.5
CLOSE_TIMEOUT_S: Final = 1.0  # close() waits this long for a connection to finish closing
NONCE_BYTES: Final = 32
INCARNATION_BYTES: Final = 8
PROTOCOL_VERSION: Final = 1

FRAME_HEADER: Final = struct.Struct(">I")
PING: Final = codec.packb(["ping"])
_ROLE_ACCEPTOR: Final = b"detsim-raft acceptor\n"
_ROLE_DIALER: Final = b"detsim-raft dialer\n"

_log = logging.getLogger(__name__)


class FrameTooLargeError(ValueError):
    """A message that encodes to more than MAX_FRAME_BYTES (a bug of the sender: the core
    bounds every message it builds)."""


@dataclasses.dataclass(slots=True)
class TransportStats:
    """Named counters. Drops and bad input each have their own; nothing is counted twice."""

    messages_sent: int = 0  # frames of messages written to a connection
    messages_received: int = 0  # messages delivered
    dropped_queue_full: int = 0  # oldest queued frames dropped past a queue bound
    dropped_unknown_peer: int = 0  # send() to an id not in the peer table, or after close()
    dropped_wrong_sender: int = 0  # frm is not the authenticated peer
    dropped_wrong_recipient: int = 0  # to is not this node
    frame_too_large: int = 0
    malformed_frame: int = 0  # not msgpack, or not a valid message
    unknown_message_type: int = 0
    truncated_frame: int = 0  # the connection ended inside a frame
    auth_failed: int = 0  # a wrong HMAC (either side)
    bad_handshake: int = 0  # a handshake frame that breaks the protocol
    unknown_peer: int = 0  # a hello from (or reaching) an id we do not know
    inbound_peers_added: int = 0  # authenticated ids not in the table, accepted (see the header)
    inbound_peers_refused: int = 0  # ... refused: the peer table was full (MAX_PEERS)
    handshake_timeout: int = 0
    idle_timeout: int = 0
    send_timeout: int = 0
    connections_over_limit: int = 0
    connections_accepted: int = 0  # handshakes completed as acceptor
    connections_dialed: int = 0  # handshakes completed as dialer
    connections_lost: int = 0  # established connections closed by a reset or EOF
    dial_failures: int = 0  # a dial that did not connect, or that the peer closed mid-handshake
    duplicate_connections_closed: int = 0
    rejected_by_peer: int = 0
    deliver_errors: int = 0  # the deliver callback raised (a bug of the driver)

    def as_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)


class _ConnError(Exception):
    """Why a connection is closed: `counter` names the TransportStats field to count."""

    def __init__(self, counter: str | None, reason: str) -> None:
        super().__init__(reason)
        self.counter = counter
        self.reason = reason


# ---------------------------------------------------------------------------------------------
# Frames and handshake (module functions: tests use them to play a peer, good or bad)


async def read_frame(reader: asyncio.StreamReader, max_bytes: int) -> bytes:
    """One frame's payload. Raises _ConnError for a length over `max_bytes` or a frame cut by
    EOF, and EOFError for a clean EOF between frames."""
    try:
        header = await reader.readexactly(FRAME_HEADER.size)
    except asyncio.IncompleteReadError as exc:
        if not exc.partial:
            raise EOFError from None
        raise _ConnError("truncated_frame", "connection closed inside a frame header") from None
    (length,) = FRAME_HEADER.unpack(header)
    if length > max_bytes:
        raise _ConnError("frame_too_large", f"declared frame length {length} > {max_bytes}")
    try:
        return await reader.readexactly(length)
    except asyncio.IncompleteReadError as exc:
        raise _ConnError(
            "truncated_frame", f"connection closed after {len(exc.partial)} of {length} bytes"
        ) from None


def frame(payload: bytes) -> bytes:
    """A frame: the length header and the payload."""
    return FRAME_HEADER.pack(len(payload)) + payload


def _mac(secret: bytes | None, role: bytes, transcript: list[Any]) -> bytes:
    if secret is None:
        return b""
    return hmac.new(secret, role + codec.packb(transcript), hashlib.sha256).digest()


def _mac_ok(secret: bytes | None, expected: bytes, got: object) -> bool:
    if secret is None:
        return True
    return type(got) is bytes and hmac.compare_digest(expected, got)


async def _read_control(reader: asyncio.StreamReader, kind: str, length: int) -> list[Any]:
    """A handshake frame `[kind, ...]` of `length` items; anything else is a bad handshake."""
    try:
        payload = await read_frame(reader, MAX_HANDSHAKE_FRAME_BYTES)
    except EOFError:
        raise _ConnError(None, f"connection closed before {kind!r}") from None
    try:
        value = codec.unpackb(payload)
    except CodecError as exc:
        raise _ConnError("bad_handshake", f"{kind!r}: {exc}") from None
    if type(value) is not list or not value or value[0] != kind:
        if type(value) is list and value and value[0] == "reject" and len(value) == 2:
            raise _ConnError("rejected_by_peer", f"peer rejected us: {value[1]!r}")
        raise _ConnError("bad_handshake", f"expected {kind!r}, got {str(value)[:80]}")
    if len(value) != length:
        raise _ConnError("bad_handshake", f"{kind!r} has {len(value)} items, expected {length}")
    return value


def _check_version(version: object) -> None:
    if version != PROTOCOL_VERSION:
        raise _ConnError("bad_handshake", f"protocol version {version!r} != {PROTOCOL_VERSION}")


def _peer_id(value: object) -> str:
    try:
        return codec.node_id(value)
    except CodecError as exc:
        raise _ConnError("bad_handshake", str(exc)) from None


def _token(value: object, size: int, what: str) -> bytes:
    if type(value) is not bytes or len(value) != size:
        raise _ConnError("bad_handshake", f"{what} must be {size} bytes")
    return value


@dataclasses.dataclass(frozen=True, slots=True)
class Handshake:
    """What a completed handshake established about the other side."""

    peer_id: str
    peer_incarnation: bytes
    dialer_id: str


async def dial_handshake(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    node_id: str,
    peer_id: str,
    secret: bytes | None,
    incarnation: bytes,
) -> Handshake:
    """The dialer's half: prove we hold `secret`, check that `peer_id` does. Raises _ConnError."""
    nonce_d = os.urandom(NONCE_BYTES)
    hello = ["hello", PROTOCOL_VERSION, node_id, peer_id, incarnation, nonce_d]
    writer.write(frame(codec.packb(hello)))
    _, version, acceptor_id, acceptor_inc, nonce_a, mac_a = await _read_control(
        reader, "challenge", 6
    )
    _check_version(version)
    if acceptor_id != peer_id:
        raise _ConnError("unknown_peer", f"dialed {peer_id!r}, reached {acceptor_id!r}")
    acceptor_inc = _token(acceptor_inc, INCARNATION_BYTES, "incarnation")
    nonce_a = _token(nonce_a, NONCE_BYTES, "nonce")
    transcript = [PROTOCOL_VERSION, node_id, peer_id, incarnation, acceptor_inc, nonce_d, nonce_a]
    if not _mac_ok(secret, _mac(secret, _ROLE_ACCEPTOR, transcript), mac_a):
        raise _ConnError("auth_failed", f"{peer_id!r} failed to prove the cluster secret")
    writer.write(frame(codec.packb(["auth", _mac(secret, _ROLE_DIALER, transcript)])))
    await _read_control(reader, "welcome", 1)
    return Handshake(peer_id, acceptor_inc, node_id)


async def _accept_handshake(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    node_id: str,
    known: Callable[[str], bool],
    secret: bytes | None,
    incarnation: bytes,
) -> Handshake:
    """The acceptor's half, up to (not including) the welcome. Raises _ConnError."""
    _, version, dialer_id, wanted_id, dialer_inc, nonce_d = await _read_control(reader, "hello", 6)
    _check_version(version)
    dialer_id = _peer_id(dialer_id)
    if wanted_id != node_id:
        raise _ConnError("unknown_peer", f"hello for {str(wanted_id)[:80]!r}, this is {node_id!r}")
    if not known(dialer_id):
        raise _ConnError("unknown_peer", f"hello from {dialer_id!r}, not in the peer table")
    dialer_inc = _token(dialer_inc, INCARNATION_BYTES, "incarnation")
    nonce_d = _token(nonce_d, NONCE_BYTES, "nonce")
    nonce_a = os.urandom(NONCE_BYTES)
    transcript = [PROTOCOL_VERSION, dialer_id, node_id, dialer_inc, incarnation, nonce_d, nonce_a]
    mac_a = _mac(secret, _ROLE_ACCEPTOR, transcript)
    challenge = ["challenge", PROTOCOL_VERSION, node_id, incarnation, nonce_a, mac_a]
    writer.write(frame(codec.packb(challenge)))
    _, mac_d = await _read_control(reader, "auth", 2)
    if not _mac_ok(secret, _mac(secret, _ROLE_DIALER, transcript), mac_d):
        raise _ConnError("auth_failed", f"{dialer_id!r} failed to prove the cluster secret")
    return Handshake(dialer_id, dialer_inc, dialer_id)


# ---------------------------------------------------------------------------------------------
# Connections and peers


class _Conn:
    """One TCP connection: handshaking, then registered as its peer's connection (or closed)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.shake: Handshake | None = None
        self.closed = False
        self.reader_task: asyncio.Task[None] | None = None
        now = asyncio.get_running_loop().time()
        self.last_received_s = now  # loop time of the last byte read
        self.last_sent_s = now  # loop time of the last frame written
        self.draining_since_s: float | None = None  # loop time a drain started, if one waits

    def is_open(self) -> bool:
        return not self.closed

    def describe(self) -> str:
        peer = self.shake.peer_id if self.shake else "?"
        return f"{peer}@{self.writer.get_extra_info('peername')}"


@dataclasses.dataclass(slots=True)
class _Peer:
    node_id: str
    address: Address | None  # None: an inbound-only peer (see the header), never dialed
    queue: deque[bytes] = dataclasses.field(default_factory=deque)
    queued_bytes: int = 0
    conn: _Conn | None = None
    wakeup: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    # The pump waits for the queue (not for a drain): `send` may write to `conn` itself.
    parked: bool = False


class Transport:
    """The node's Raft port and its connections to `peers` (see the module header)."""

    def __init__(
        self,
        node_id: str,
        listen: Address,
        peers: Mapping[str, Address],
        secret: bytes | None,
        deliver: Callable[[Message], None],
    ) -> None:
        self.node_id = codec.node_id(node_id)
        self.stats = TransportStats()
        self._listen = listen
        self._secret = secret
        self._deliver = deliver
        self._incarnation = b""
        self._peers: dict[str, _Peer] = {}
        # Dicts, not sets: iteration (close, watchdog) must follow insertion order, never
        # id()-based hashes, so that a simulation replays the same from its seed.
        self._conns: dict[_Conn, None] = {}  # every open connection, handshaking ones included
        self._tasks: dict[asyncio.Task[None], None] = {}
        self._server: asyncio.Server | None = None
        self._closed = False
        self.set_peers(peers)

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        """Listen on the Raft port and start connecting to peers."""
        assert self._server is None and not self._closed, "start() once"
        if self._secret is None:
            _log.warning(
                "%s: Raft transport has no cluster secret: any host that reaches %s:%d can "
                "inject Raft messages",
                self.node_id,
                *self._listen,
            )
        self._incarnation = os.urandom(INCARNATION_BYTES)
        host, port = self._listen
        self._server = await asyncio.start_server(self._on_accept, host, port)
        for peer in self._peers.values():
            self._start_peer(peer)
        self._spawn(self._watchdog(), f"raft-watchdog-{self.node_id}")

    @property
    def listen_address(self) -> Address:
        """The bound address (the real port when `listen` asked for port 0)."""
        assert self._server is not None, "not started"
        sockname = self._server.sockets[0].getsockname()
        return (str(sockname[0]), int(sockname[1]))

    async def close(self) -> None:
        """Stop listening, close every connection, cancel and await every task."""
        if self._closed:
            return
        self._closed = True
        if self._server is not None:
            self._server.close()
        for conn in list(self._conns):
            self._close_conn(conn, None, "transport closing")
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._server is not None:
            with contextlib.suppress(TimeoutError):
                await _within(CLOSE_TIMEOUT_S, self._server.wait_closed())
        assert not self._tasks, self._tasks

    # -- membership -----------------------------------------------------------------------------

    def set_peers(self, peers: Mapping[str, Address]) -> None:
        """Make the configured peer table exactly `peers` (this node's own id is skipped).
        Inbound-only peers it does not name keep their connection (see the header)."""
        wanted = {pid: addr for pid, addr in peers.items() if pid != self.node_id}
        for pid in [
            p for p, peer in self._peers.items() if p not in wanted and peer.address is not None
        ]:
            self.remove_peer(pid)
        for pid, addr in wanted.items():
            self.add_peer(pid, addr)

    def add_peer(self, peer_id: str, address: Address) -> None:
        """Add a peer, or change its address (its current connection stays)."""
        codec.node_id(peer_id)
        if peer_id == self.node_id:
            return
        peer = self._peers.get(peer_id)
        if peer is not None:
            peer.address = address  # an inbound-only peer becomes an ordinary one
            peer.wakeup.set()  # its loop now dials when the connection is lost
            return
        if len(self._peers) >= MAX_PEERS:
            self._evict_an_inbound_only_peer()
        if len(self._peers) >= MAX_PEERS:
            raise ValueError(f"{self.node_id}: more than MAX_PEERS={MAX_PEERS} peers")
        peer = _Peer(peer_id, address)
        self._peers[peer_id] = peer
        if self._server is not None and not self._closed:
            self._start_peer(peer)

    def remove_peer(self, peer_id: str) -> None:
        """Forget a peer: drop its queue, close its connection, stop its task."""
        peer = self._peers.pop(peer_id, None)
        if peer is None:
            return
        if peer.task is not None:
            peer.task.cancel()
        if peer.conn is not None:
            self._close_conn(peer.conn, None, "peer removed")
        for conn in [c for c in self._conns if c.shake and c.shake.peer_id == peer_id]:
            self._close_conn(conn, None, "peer removed")

    def _evict_an_inbound_only_peer(self) -> None:
        """Make room for a configured peer: drop the oldest inbound-only peer, if any."""
        for pid, peer in self._peers.items():
            if peer.address is None:
                self.remove_peer(pid)
                return

    @property
    def peers(self) -> dict[str, Address]:
        """The configured peers (inbound-only ones have no address: see `inbound_peers`)."""
        return {pid: p.address for pid, p in self._peers.items() if p.address is not None}

    @property
    def inbound_peers(self) -> list[str]:
        """The inbound-only peers: authenticated ids not in the table, connected to us."""
        return [pid for pid, p in self._peers.items() if p.address is None]

    def connected(self, peer_id: str) -> bool:
        """True if a connection to the peer is established (for tests and status)."""
        peer = self._peers.get(peer_id)
        return peer is not None and peer.conn is not None

    # -- sending --------------------------------------------------------------------------------

    def send(self, msg: Message) -> None:
        """Queue a message for `msg.to`; never blocks. Dropped (and counted) when the peer is
        unknown or, oldest first, past the queue bounds."""
        peer = self._peers.get(msg.to)
        if peer is None or self._closed:
            self._count("dropped_unknown_peer", f"dropped a message for {msg.to!r}: no such peer")
            return
        payload = codec.pack_message(msg)
        if len(payload) > MAX_FRAME_BYTES:
            raise FrameTooLargeError(
                f"{type(msg).__name__} to {msg.to}: {len(payload)} bytes > {MAX_FRAME_BYTES}"
            )
        data = frame(payload)
        conn = peer.conn
        if (
            peer.parked
            and not peer.queue
            and conn is not None
            and not conn.closed
            and conn.writer.transport.get_write_buffer_size() == 0
        ):
            # The pump is parked and the socket keeps up: write now (the kernel takes it at
            # once) rather than wake the pump a loop turn later. A write it cannot take at once
            # stays in the transport's buffer, and later sends queue behind it for the pump.
            conn.writer.write(data)
            self.stats.messages_sent += 1
            conn.last_sent_s = asyncio.get_running_loop().time()
            return
        peer.queue.append(data)
        peer.queued_bytes += len(data)
        while len(peer.queue) > MAX_SEND_QUEUE_MESSAGES or peer.queued_bytes > MAX_SEND_QUEUE_BYTES:
            peer.queued_bytes -= len(peer.queue.popleft())
            self._count(
                "dropped_queue_full", f"send queue to {peer.node_id} full: dropped the oldest"
            )
        peer.wakeup.set()

    def queued(self, peer_id: str) -> int:
        """Frames waiting for a peer's connection."""
        peer = self._peers.get(peer_id)
        return len(peer.queue) if peer is not None else 0

    # -- tasks ----------------------------------------------------------------------------------

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks[task] = None
        task.add_done_callback(self._forget_task)
        return task

    def _forget_task(self, task: asyncio.Task[None]) -> None:
        self._tasks.pop(task, None)

    def _start_peer(self, peer: _Peer) -> None:
        assert peer.task is None
        peer.task = self._spawn(self._peer_loop(peer), f"raft-peer-{self.node_id}-{peer.node_id}")

    async def _peer_loop(self, peer: _Peer) -> None:
        """Dial when we should, then pump the queue into the connection; forever."""
        loop = asyncio.get_running_loop()
        backoff_s = BACKOFF_INITIAL_S
        unconnected_since = loop.time()
        while not self._closed:
            conn = peer.conn
            if conn is not None:
                await self._pump(peer, conn)
                backoff_s = BACKOFF_INITIAL_S
                unconnected_since = loop.time()
                continue
            if peer.address is None:  # inbound-only: it lives as long as its connection
                self._forget_inbound_only(peer)
                return
            wait_s = self._dial_wait_s(peer, unconnected_since, loop.time())
            if wait_s > 0:
                peer.wakeup.clear()
                with contextlib.suppress(TimeoutError):
                    await _within(wait_s, peer.wakeup.wait())
                continue
            if await self._dial(peer):
                continue
            await asyncio.sleep(backoff_s * random.uniform(0.5, 1.0))
            backoff_s = min(backoff_s * 2, BACKOFF_MAX_S)

    def _forget_inbound_only(self, peer: _Peer) -> None:
        """Its connection is gone and we cannot dial it: drop it and its queue (Raft resends)."""
        assert peer.address is None and peer.conn is None
        if self._peers.get(peer.node_id) is peer:
            del self._peers[peer.node_id]
        _log.debug("%s: inbound-only peer %s gone with its connection", self.node_id, peer.node_id)

    def _dial_wait_s(self, peer: _Peer, unconnected_since: float, now: float) -> float:
        """How long to wait (for an incoming connection) before dialing this peer."""
        if self.node_id < peer.node_id:
            return 0.0
        return unconnected_since + FALLBACK_DIAL_DELAY_S - now

    async def _dial(self, peer: _Peer) -> bool:
        """Connect and handshake; True if the connection became the peer's."""
        if len(self._conns) >= MAX_PEER_CONNECTIONS:
            self._count("connections_over_limit", f"not dialing {peer.node_id}: at the limit")
            return False
        assert peer.address is not None, "inbound-only peers are never dialed"
        host, port = peer.address
        try:
            reader, writer = await _within(CONNECT_TIMEOUT_S, asyncio.open_connection(host, port))
        except (OSError, TimeoutError) as exc:
            self.stats.dial_failures += 1
            _log.debug(
                "%s: dial %s at %s failed: %r", self.node_id, peer.node_id, peer.address, exc
            )
            return False
        conn = _Conn(reader, writer)
        self._conns[conn] = None
        try:
            conn.shake = await _within(
                HANDSHAKE_TIMEOUT_S,
                dial_handshake(
                    reader, writer, self.node_id, peer.node_id, self._secret, self._incarnation
                ),
            )
        except (_ConnError, OSError, TimeoutError) as exc:
            counter, reason = _why(exc)
            self._close_conn(conn, counter or "dial_failures", reason)
            return False
        except BaseException:
            self._close_conn(conn, None, "cancelled")
            raise
        self.stats.connections_dialed += 1
        if not self._register(peer, conn):
            return False
        conn.reader_task = self._spawn(self._read_loop(conn), f"raft-read-{self.node_id}")
        return True

    def _on_accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """A connection to our port. A plain callback that starts our own task: asyncio 3.11
        logs an error when a cancelled client_connected_cb coroutine ends (fixed in 3.12)."""
        if self._closed:
            writer.close()
            return
        conn = _Conn(reader, writer)
        if len(self._conns) >= MAX_PEER_CONNECTIONS:
            conn.closed = True
            writer.close()
            self._count("connections_over_limit", f"refused {conn.describe()}: at the limit")
            return
        self._conns[conn] = None
        conn.reader_task = self._spawn(self._serve_accepted(conn), f"raft-accept-{self.node_id}")

    async def _serve_accepted(self, conn: _Conn) -> None:
        """Handshake, register, then read the connection."""
        reader, writer = conn.reader, conn.writer
        try:
            shake = await _within(
                HANDSHAKE_TIMEOUT_S,
                _accept_handshake(
                    reader,
                    writer,
                    self.node_id,
                    # With a secret, the handshake itself proves a stranger is a member.
                    lambda pid: pid in self._peers or self._secret is not None,
                    self._secret,
                    self._incarnation,
                ),
            )
        except (_ConnError, OSError, TimeoutError) as exc:
            counter, reason = _why(exc)
            if counter in ("unknown_peer", "auth_failed", "bad_handshake"):
                # Tell the dialer why (an operator's misconfiguration shows on both ends).
                writer.write(frame(codec.packb(["reject", reason[:200]])))
            self._close_conn(conn, counter, reason)
            return
        except BaseException:
            self._close_conn(conn, None, "cancelled")
            raise
        conn.shake = shake
        peer = self._peers.get(shake.peer_id)
        if peer is None:
            if not self._register_inbound_only(conn):
                return
        elif not self._register(peer, conn):
            return
        writer.write(frame(codec.packb(["welcome"])))
        self.stats.connections_accepted += 1
        await self._read_loop(conn)

    def _register_inbound_only(self, conn: _Conn) -> bool:
        """An authenticated acceptor's connection from an id not in the table: make it an
        inbound-only peer (see the header), or refuse it (table full; or no secret: removed
        while we were handshaking)."""
        assert conn.shake is not None and conn.shake.peer_id not in self._peers
        peer_id = conn.shake.peer_id
        if self._secret is None:
            self._close_conn(conn, None, "peer removed")
            return False
        if len(self._peers) >= MAX_PEERS:
            conn.writer.write(frame(codec.packb(["reject", "peer table full"])))
            self._close_conn(conn, "inbound_peers_refused", f"{peer_id}: MAX_PEERS={MAX_PEERS}")
            return False
        peer = _Peer(peer_id, None)
        self._peers[peer_id] = peer
        if not self._register(peer, conn):
            del self._peers[peer_id]
            return False
        assert len(self._peers) <= MAX_PEERS, len(self._peers)
        self.stats.inbound_peers_added += 1
        self._start_peer(peer)
        return True

    def _register(self, peer: _Peer, conn: _Conn) -> bool:
        """Make `conn` the peer's connection, or close whichever the rule says loses."""
        assert conn.shake is not None
        if conn.closed:
            return False
        old = peer.conn
        if old is not None and old is not conn:
            assert old.shake is not None
            new_wins = (
                old.shake.peer_incarnation != conn.shake.peer_incarnation
                or old.shake.dialer_id == conn.shake.dialer_id
                or conn.shake.dialer_id == min(self.node_id, peer.node_id)
            )
            self.stats.duplicate_connections_closed += 1
            if not new_wins:
                if conn.shake.dialer_id != self.node_id:  # we are its acceptor: say why
                    conn.writer.write(frame(codec.packb(["reject", "duplicate connection"])))
                self._close_conn(conn, None, "duplicate connection (kept the older one)")
                return False
            self._close_conn(old, None, "duplicate connection (replaced by a newer one)")
        peer.conn = conn
        # The keepalive clocks start now (the handshake may have taken a while).
        conn.last_received_s = conn.last_sent_s = asyncio.get_running_loop().time()
        peer.wakeup.set()
        return True

    async def _pump(self, peer: _Peer, conn: _Conn) -> None:
        """Write the peer's queue to `conn` until the connection closes or is replaced (the
        watchdog closes it if a drain stalls)."""
        writer = conn.writer
        loop = asyncio.get_running_loop()
        try:
            while peer.conn is conn and not conn.closed:
                if not peer.queue:
                    peer.wakeup.clear()
                    peer.parked = True
                    try:
                        await peer.wakeup.wait()
                    finally:
                        peer.parked = False
                    continue
                batch = self._take_batch(peer)
                writer.write(b"".join(batch))
                self.stats.messages_sent += len(batch)
                conn.last_sent_s = conn.draining_since_s = loop.time()
                await writer.drain()
                conn.draining_since_s = None
        except OSError as exc:
            self._close_conn(conn, *_why(exc))

    async def _watchdog(self) -> None:
        """Keepalive and stall detection for every established connection (see the header)."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(WATCHDOG_INTERVAL_S)
            now = loop.time()
            for conn in list(self._conns):
                if conn.shake is None or conn.closed:
                    continue  # handshakes have their own timeout
                if now - conn.last_received_s > IDLE_TIMEOUT_S:
                    self._close_conn(
                        conn, "idle_timeout", f"nothing received for {IDLE_TIMEOUT_S} s"
                    )
                elif (
                    conn.draining_since_s is not None
                    and now - conn.draining_since_s > SEND_TIMEOUT_S
                ):
                    self._close_conn(conn, "send_timeout", "the peer did not read our writes")
                elif now - conn.last_sent_s >= PING_INTERVAL_S:
                    conn.writer.write(frame(PING))
                    conn.last_sent_s = now

    @staticmethod
    def _take_batch(peer: _Peer) -> list[bytes]:
        batch = [peer.queue.popleft()]
        size = len(batch[0])
        while peer.queue and size + len(peer.queue[0]) <= MAX_WRITE_BATCH_BYTES:
            data = peer.queue.popleft()
            batch.append(data)
            size += len(data)
        peer.queued_bytes -= size
        return batch

    async def _read_loop(self, conn: _Conn) -> None:
        """Read frames and deliver messages until the connection closes or sends bad input."""
        loop = asyncio.get_running_loop()
        buffer = bytearray()
        try:
            while not conn.closed:
                chunk = await conn.reader.read(READ_CHUNK_BYTES)
                if not chunk:
                    if buffer:
                        raise _ConnError(
                            "truncated_frame", f"connection closed inside a frame ({len(buffer)} B)"
                        )
                    raise EOFError
                conn.last_received_s = loop.time()
                buffer += chunk
                for payload in _take_frames(buffer):
                    if not conn.is_open():  # closed by a deliver (e.g. the peer removed)
                        return
                    self._receive(conn, payload)
        except EOFError:
            self._close_conn(conn, "connections_lost", "closed by the peer")
        except (_ConnError, OSError) as exc:
            self._close_conn(conn, *_why(exc))

    def _receive(self, conn: _Conn, payload: bytes) -> None:
        """Decode one frame and deliver it; raises _ConnError for bad input."""
        assert conn.shake is not None
        if payload == PING:
            return
        try:
            msg = codec.unpack_message(payload)
        except UnknownMessageTypeError as exc:
            raise _ConnError("unknown_message_type", str(exc)) from None
        except CodecError as exc:
            raise _ConnError("malformed_frame", str(exc)) from None
        if msg.frm != conn.shake.peer_id:
            self._count(
                "dropped_wrong_sender",
                f"dropped a message from {conn.describe()} claiming frm={msg.frm!r}",
            )
            return
        if msg.to != self.node_id:
            self._count("dropped_wrong_recipient", f"dropped a message for {msg.to!r}")
            return
        self.stats.messages_received += 1
        try:
            self._deliver(msg)
        except Exception as exc:
            _log.exception("%s: deliver raised on %s", self.node_id, type(msg).__name__)
            raise _ConnError("deliver_errors", f"deliver raised {exc!r}") from None

    def _close_conn(self, conn: _Conn, counter: str | None, reason: str) -> None:
        """Close a connection once; count and log why (None: an expected close)."""
        if conn.closed:
            return
        conn.closed = True
        self._conns.pop(conn, None)
        if counter is not None:
            self._count(counter, f"closed connection {conn.describe()}: {reason}")
        else:
            _log.debug("%s: closed connection %s: %s", self.node_id, conn.describe(), reason)
        conn.writer.close()
        if conn.reader_task is not None and conn.reader_task is not asyncio.current_task():
            conn.reader_task.cancel()
        if conn.shake is not None:
            peer = self._peers.get(conn.shake.peer_id)
            if peer is not None and peer.conn is conn:
                peer.conn = None
                peer.wakeup.set()

    def _count(self, counter: str, message: str) -> None:
        """Count an event; log it at the 1st, 2nd, 4th, 8th... time (bounded log volume)."""
        value = getattr(self.stats, counter) + 1
        setattr(self.stats, counter, value)
        if value & (value - 1) == 0:
            _log.warning("%s: %s [%s=%d]", self.node_id, message, counter, value)


async def _within(timeout_s: float, awaitable: Awaitable[T]) -> T:
    """`await awaitable`, TimeoutError after `timeout_s`. Not `asyncio.wait_for`: on 3.11 it
    swallows a cancellation that arrives as the awaited result is ready (the task then runs on,
    e.g. redials, after close() cancelled it); `asyncio.timeout` does not, and makes no task."""
    async with asyncio.timeout(timeout_s):
        return await awaitable


def _take_frames(buffer: bytearray) -> list[bytes]:
    """The complete frames at the start of `buffer`, removed from it. Raises _ConnError for a
    declared length over MAX_FRAME_BYTES (before its body arrives)."""
    frames: list[bytes] = []
    pos = 0
    header = FRAME_HEADER.size
    while len(buffer) - pos >= header:
        (length,) = FRAME_HEADER.unpack_from(buffer, pos)
        if length > MAX_FRAME_BYTES:
            raise _ConnError(
                "frame_too_large", f"declared frame length {length} > {MAX_FRAME_BYTES}"
            )
        end = pos + header + length
        if end > len(buffer):
            break
        frames.append(bytes(buffer[pos + header : end]))
        pos = end
    del buffer[:pos]
    return frames


def _why(exc: BaseException) -> tuple[str | None, str]:
    """The counter and reason for a connection closed by `exc`."""
    if isinstance(exc, _ConnError):
        return exc.counter, exc.reason
    if isinstance(exc, TimeoutError):
        return "handshake_timeout", f"handshake not done in {HANDSHAKE_TIMEOUT_S} s"
    return "connections_lost", f"{type(exc).__name__}: {exc}"
