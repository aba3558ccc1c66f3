"""Forwarding of leader-only requests from a follower to the leader's client port (a proxy).

This module owns the follower's side of "any node serves any command" (DESIGN "The replicated
store"): a write (or a RAFT.* membership command) that reaches a node which is not the leader is
sent, as the client's own RESP request, to the leader's client port over one pipelined
connection per leader (`LeaderForwarder`); the leader's reply is handed back unchanged, so the
client sees exactly what it would have seen at the leader: the same results and the same errors.

Why a proxy and not a forwarded proposal inside the driver:
- The reply a client needs is the state machine's result *at the leader's apply* (SET ... GET's
  old value, INCR's new value, an `OOM`). A proposal forwarded over the Raft transport would
  need a new Raft message type, a request id in every entry, and a table of waiters on the
  follower resolved when the follower applies the entry (later, and never if it is behind or
  gets a snapshot): more state in the core and the codec for the same answer.
- A proxy reuses the leader's whole request path (parsing, batching into one Ready with other
  clients' writes, its timeouts, its error mapping), so there is one definition of a write.
- Its cost is one more hop, and addresses: a node must know the leader's *client* address
  (`NodeConfig.peer_client_addrs`); a leader whose client address is unknown cannot be
  forwarded to, and the follower answers `-NOLEADER` (nothing was proposed; retry another node).

Outcomes (the server maps them to replies; nothing here guesses):
- nothing was sent (no connection, queue full): `NOLEADER ...`: safe to retry;
- sent, then the connection failed or no reply came within `timeout_s`: `TIMEOUT ...`: unknown;
- else the leader's reply itself (which may be its own `-NOLEADER` or `-TIMEOUT`).
One hop only: the proxy names its connection `FORWARDED_CLIENT_PREFIX + node id` (CLIENT
SETNAME), and a server never forwards a request that arrived on such a connection (a stale
leader answers `-NOLEADER` instead of bouncing the request around).

Bounds: MAX_FORWARD_PENDING replies awaited per leader connection (past it: not sent,
NOLEADER); MAX_FORWARD_UPSTREAMS connections (one per leader seen; the oldest is closed past it);
a reply's bulk length at most MAX_VALUE_BYTES (past it the connection is closed).
It never imports detsim.sim: plain asyncio streams, so it runs unchanged in the simulator.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Sequence
from typing import Final

from detsim.kv.limits import MAX_VALUE_BYTES
from detsim.kv.resp import ErrorReply, Reply, SimpleString

Address = tuple[str, int]

MAX_FORWARD_PENDING: Final = 4096
MAX_FORWARD_UPSTREAMS: Final = 16
#: A reply header line (`+OK`, `-ERR ...`, `:n`, `$n`); error lines are short.
MAX_REPLY_LINE_BYTES: Final = 64 * 1024
FORWARDED_CLIENT_PREFIX: Final = b"detsim-forward:"

_log = logging.getLogger(__name__)


class UpstreamProtocolError(Exception):
    """The leader's port answered with something a write's reply never is."""


def encode_request(args: Sequence[bytes]) -> bytes:
    """A RESP multibulk request."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        parts.append(b"$%d\r\n" % len(arg))
        parts.append(arg)
        parts.append(b"\r\n")
    return b"".join(parts)


def no_leader(detail: str) -> ErrorReply:
    return ErrorReply(f"NOLEADER {detail} (not applied; safe to retry)")


def timed_out(detail: str) -> ErrorReply:
    return ErrorReply(f"TIMEOUT {detail} (outcome unknown)")


async def read_reply(reader: asyncio.StreamReader) -> Reply:
    """One reply of the kinds a write or admin command returns: simple, error, integer, bulk,
    null. Raises UpstreamProtocolError on anything else, IncompleteReadError at EOF."""
    line = await reader.readuntil(b"\r\n")
    if len(line) > MAX_REPLY_LINE_BYTES:
        raise UpstreamProtocolError("reply line too long")
    kind, body = line[:1], line[1:-2]
    if kind == b"+":
        return SimpleString(body.decode("utf-8", "surrogateescape"))
    if kind == b"-":
        return ErrorReply(body.decode("utf-8", "surrogateescape"))
    if kind == b":":
        return int(body)
    if kind == b"_":
        return None
    if kind == b"$":
        length = int(body)
        if length == -1:
            return None
        if not 0 <= length <= MAX_VALUE_BYTES:
            raise UpstreamProtocolError(f"bulk length {length}")
        data = await reader.readexactly(length + 2)
        if data[-2:] != b"\r\n":
            raise UpstreamProtocolError("bulk string not followed by CRLF")
        return data[:-2]
    raise UpstreamProtocolError(f"unexpected reply type {kind!r}")


class _Upstream:
    """One pipelined connection to a leader's client port: replies come back in order, so a
    FIFO of futures matches them to requests."""

    def __init__(self, address: Address, setup: Sequence[Sequence[bytes]]) -> None:
        self.address = address
        self._setup = setup
        self.pending: deque[asyncio.Future[Reply]] = deque()
        self._writer: asyncio.StreamWriter | None = None
        self._reader_task: asyncio.Task[None] | None = None
        self.dead = False

    @property
    def connected(self) -> bool:
        return self._writer is not None and not self.dead

    async def connect(self) -> None:
        host, port = self.address
        reader, writer = await asyncio.open_connection(host, port)
        self._writer = writer
        self._reader_task = asyncio.get_running_loop().create_task(
            self._read_replies(reader), name=f"forward-{host}:{port}"
        )
        for args in self._setup:  # AUTH, CLIENT SETNAME: their replies are consumed unseen
            self.send(args)

    def send(self, args: Sequence[bytes]) -> asyncio.Future[Reply]:
        return self.send_many([args])[0]

    def send_many(self, requests: Sequence[Sequence[bytes]]) -> list[asyncio.Future[Reply]]:
        """Send `requests` in one write (one burst for the leader); their reply futures."""
        assert self._writer is not None and not self.dead
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[Reply]] = [loop.create_future() for _ in requests]
        self.pending.extend(futures)
        self._writer.write(b"".join(encode_request(args) for args in requests))
        return futures

    async def _read_replies(self, reader: asyncio.StreamReader) -> None:
        why = "closed by the leader"
        try:
            while True:
                reply = await read_reply(reader)
                if not self.pending:
                    raise UpstreamProtocolError("a reply nobody asked for")
                future = self.pending.popleft()
                if not future.done():
                    future.set_result(reply)
        except (OSError, EOFError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
            why = f"lost: {type(exc).__name__}"
        except (UpstreamProtocolError, ValueError) as exc:
            why = f"bad reply: {exc}"
            _log.warning("forwarding to %s:%d: %s", *self.address, why)
        finally:
            self._fail_all(why)

    def _fail_all(self, why: str) -> None:
        self.dead = True
        error = ConnectionError(f"connection to the leader {why}")
        while self.pending:
            future = self.pending.popleft()
            if not future.done():
                future.set_exception(error)
                # Marked retrieved now, not in a done-callback: its waiter may have left (timed
                # out, client gone), and callbacks may never run (a simulated node killed now).
                future.exception()
        if self._writer is not None:
            self._writer.close()

    async def close(self) -> None:
        self.dead = True
        task = self._reader_task
        if task is not None and not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        self._fail_all("closed")


class LeaderForwarder:
    """Forwards requests to the leader's client port (see the module header)."""

    def __init__(self, node_id: str, *, requirepass: bytes | None, timeout_s: float) -> None:
        assert timeout_s > 0
        self.node_id = node_id
        self.timeout_s = timeout_s
        setup: list[list[bytes]] = []
        if requirepass is not None:
            setup.append([b"AUTH", requirepass])
        setup.append([b"CLIENT", b"SETNAME", FORWARDED_CLIENT_PREFIX + node_id.encode()])
        self._setup = setup
        self._upstreams: dict[str, _Upstream] = {}  # leader id -> connection, insertion order
        self._connect_lock = asyncio.Lock()
        self.forwarded = 0

    async def forward(self, leader_id: str, address: Address, args: Sequence[bytes]) -> Reply:
        """The leader's reply to `args`, or NOLEADER (not sent) / TIMEOUT (sent, no reply)."""
        return (await self.forward_many(leader_id, address, [args]))[0]

    async def forward_many(
        self, leader_id: str, address: Address, requests: Sequence[Sequence[bytes]]
    ) -> list[Reply]:
        """The leader's replies to `requests` (a connection's run of writes), sent together in
        one write, so the leader reads them as one burst and proposes them as one entry; each
        reply is the leader's, or NOLEADER (nothing sent) / TIMEOUT (sent, no reply by the one
        deadline of the run)."""
        assert requests
        try:
            async with asyncio.timeout(self.timeout_s):
                upstream = await self._connected(leader_id, address)
        except (OSError, TimeoutError) as exc:
            refusal = no_leader(f"leader {leader_id} unreachable ({type(exc).__name__})")
            return [refusal] * len(requests)
        if len(upstream.pending) + len(requests) > MAX_FORWARD_PENDING:
            refusal = no_leader(f"{MAX_FORWARD_PENDING} requests already forwarded to {leader_id}")
            return [refusal] * len(requests)
        futures = upstream.send_many(requests)  # no await between the check and the send
        self.forwarded += len(requests)
        # asyncio.wait, not wait_for or shield: a timeout must leave the futures in the FIFO
        # (their replies are still coming), and no second future may hold an error (a shield's
        # outer future, left by a waiter that is gone, logged "exception never retrieved").
        await asyncio.wait(futures, timeout=self.timeout_s)
        return [self._outcome(leader_id, future) for future in futures]

    def _outcome(self, leader_id: str, future: asyncio.Future[Reply]) -> Reply:
        if not future.done():
            return timed_out(f"no reply from the leader {leader_id} in {self.timeout_s} s")
        error = future.exception()
        if error is None:
            return future.result()
        if isinstance(error, ConnectionError):
            return timed_out(str(error))
        raise error

    async def _connected(self, leader_id: str, address: Address) -> _Upstream:
        """The open connection to `leader_id`, made if needed. Connecting is serialized (one
        lock, FIFO), so requests that waited for it are sent in the order they came."""
        upstream = self._upstreams.get(leader_id)
        if upstream is not None and upstream.address == address and upstream.connected:
            return upstream
        async with self._connect_lock:
            upstream = self._upstreams.get(leader_id)
            if upstream is None or upstream.address != address or not upstream.connected:
                upstream = await self._replace(leader_id, address)
                await upstream.connect()
            return upstream

    async def _replace(self, leader_id: str, address: Address) -> _Upstream:
        old = self._upstreams.pop(leader_id, None)
        upstream = self._upstreams[leader_id] = _Upstream(address, self._setup)
        if old is not None:
            await old.close()
        while len(self._upstreams) > MAX_FORWARD_UPSTREAMS:
            oldest = next(iter(self._upstreams))
            await self._upstreams.pop(oldest).close()
        return upstream

    async def close(self) -> None:
        upstreams, self._upstreams = list(self._upstreams.values()), {}
        for upstream in upstreams:
            await upstream.close()
