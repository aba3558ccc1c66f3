"""A replicated counter over TCP: plain asyncio, no detsim import, runs anywhere.

Owned here: the replica (`Replica`), its line protocol, and a tiny client (`call`).

The model. The counter's state is the set of increment ids it has applied; its value is the
size of the set, so a retried INCR with the same id counts once. Any of the N replicas (3 in
the examples) coordinates a request:
- `INCR <id>`: add id locally, send `STORE <id>` to every peer, and answer `OK` once a majority
  (the coordinator plus `majority - 1` peers) holds it; `ERR ...` if that does not happen within
  `QUORUM_TIMEOUT_S` (outcome unknown: the id may still be applied later).
- `GET` / `MEMBERS`: a quorum read (own set plus `majority - 1` peers' `STATE`), merged into the
  coordinator's own set (read repair), answered as `VALUE <n>` / `MEMBERS <id> ...`.
- peers: `STORE <id>` -> `STORED`; `STATE` -> `STATE <id> ...`, or `RECOVERING`.

State is in memory only. A replica that restarts (`bootstrap=False`) is *recovering*: it serves
no client and answers no `STATE` until it has merged the `STATE` of every peer. Safety argument
(the one the checker tests): an acknowledged id is held by a majority of recovered replicas; a
kill removes at most one holder, and the restarted replica reads every peer, so it gets the id
back before it counts again. It assumes at most one replica is down or recovering at a time
(f = 1 of 3), which is the fault model of the scenario's nemesis.

The planted bug (`safe=False`): INCR answers `OK` as soon as the id is applied locally and
replicates in the background. A clean run never shows it; a partition that delays the
replication followed by a kill of the coordinator loses an acknowledged increment.

Rules: every wait has a timeout, every loop and collection a named bound; nothing a client or
a peer sends can crash a replica (a bad line gets `ERR`, an oversized one closes the link).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Sequence

Address = tuple[str, int]

MAX_LINE_BYTES = 4 * 1024 * 1024  # a STATE reply carries the whole set
MAX_OPS = 100_000  # increment ids a replica holds; INCR past it answers ERR full
MAX_BACKGROUND_TASKS = 1_024  # replications still running after the reply was sent
MAX_RECOVERY_ATTEMPTS = 100_000  # rounds of asking peers for STATE before giving up
OP_ID = re.compile(r"[A-Za-z0-9_.:-]{1,64}")

CONNECT_TIMEOUT_S = 2.0
PEER_TIMEOUT_S = 2.0  # one STORE or STATE exchange with a peer, once connected
QUORUM_TIMEOUT_S = 3.0  # INCR waits this long for a majority before answering ERR
RECOVERY_RETRY_S = 0.5
CLIENT_TIMEOUT_S = 8.0  # > connect + quorum + a round trip on the slowest link
CLOSE_TIMEOUT_S = 1.0


class PeerLink:
    """One connection to one peer, one request at a time; dropped on any error or timeout."""

    def __init__(self, address: Address) -> None:
        self.address = address
        self._lock = asyncio.Lock()
        self._conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def request(self, line: str, timeout_s: float = PEER_TIMEOUT_S) -> str | None:
        """The peer's reply line, or None when it could not be had in time.

        The deadline is `timeout_s` plus CONNECT_TIMEOUT_S for a (re)connect: on a slow link, a
        deadline without room for the handshake drops every new connection before its reply.
        """
        try:
            return await asyncio.wait_for(self._locked(line), CONNECT_TIMEOUT_S + timeout_s)
        except (TimeoutError, OSError, EOFError, ValueError):
            return None

    async def _locked(self, line: str) -> str:
        async with self._lock:
            try:
                if self._conn is None:
                    self._conn = await asyncio.open_connection(*self.address, limit=MAX_LINE_BYTES)
                return await self._exchange(self._conn, line)
            except BaseException:
                self.close()  # a reply may still be in flight: never reuse this stream
                raise

    async def _exchange(
        self, conn: tuple[asyncio.StreamReader, asyncio.StreamWriter], line: str
    ) -> str:
        reader, writer = conn
        writer.write(line.encode() + b"\n")
        await writer.drain()
        reply = await reader.readline()
        if not reply.endswith(b"\n"):
            raise EOFError(f"peer {self.address} closed the connection")
        return reply.decode().rstrip("\n")

    def close(self) -> None:
        if self._conn is not None:
            self._conn[1].close()
            self._conn = None


class Replica:
    """One replica of the counter. See the module header for the protocol and its rules."""

    def __init__(
        self, name: str, peers: Sequence[Address] = (), *, safe: bool = True, bootstrap: bool = True
    ) -> None:
        self.name = name
        self.safe = safe
        self.ops: dict[str, None] = {}  # an insertion-ordered set: replies never depend on hash
        self.recovered = bootstrap  # a bootstrapping replica starts as the initial, empty state
        self.links: list[PeerLink] = []
        self._server: asyncio.Server | None = None
        self._background: set[asyncio.Task[object]] = set()
        self._handlers: set[asyncio.Task[object]] = set()  # one per open client/peer stream
        self.set_peers(peers)

    def __repr__(self) -> str:
        state = "recovered" if self.recovered else "recovering"
        return f"<Replica {self.name} {state} value={self.value}>"

    @property
    def value(self) -> int:
        return len(self.ops)

    @property
    def majority(self) -> int:
        return (len(self.links) + 1) // 2 + 1

    def set_peers(self, peers: Sequence[Address]) -> None:
        for link in self.links:
            link.close()
        self.links = [PeerLink(address) for address in peers]

    # --- lifecycle -------------------------------------------------------------------------

    async def start(self, host: str, port: int) -> int:
        """Listen on (host, port), begin recovery if needed; return the bound port."""
        self._server = await asyncio.start_server(self._serve, host, port, limit=MAX_LINE_BYTES)
        if not self.recovered:
            self._spawn(self._recover())
        bound: int = self._server.sockets[0].getsockname()[1]
        return bound

    async def serve_forever(self) -> None:
        assert self._server is not None, "start() first"
        await self._server.serve_forever()

    async def close(self) -> None:
        """Stop listening and wait (bounded) for open streams to end once our links close."""
        if self._server is not None:
            self._server.close()
        for task in list(self._background):
            task.cancel()
        for link in self.links:
            link.close()
        if self._handlers:  # peers' links to us end when they close theirs
            await asyncio.wait(list(self._handlers), timeout=CLOSE_TIMEOUT_S)

    def _spawn(self, work: Awaitable[object]) -> None:
        if len(self._background) >= MAX_BACKGROUND_TASKS:
            return  # shed load: replication of this id is left to later reads' repair
        task: asyncio.Task[object] = asyncio.ensure_future(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # --- serving ---------------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        me = asyncio.current_task()
        if me is not None:
            self._handlers.add(me)
            me.add_done_callback(self._handlers.discard)
        try:
            while line := await reader.readline():
                reply = await self.handle(line.decode(errors="replace").strip())
                writer.write(reply.encode() + b"\n")
                await writer.drain()
        except (OSError, ValueError):  # reset by the peer, or a line over MAX_LINE_BYTES
            pass
        finally:
            writer.close()

    async def handle(self, line: str) -> str:
        """One request line -> one reply line."""
        verb, _, arg = line.partition(" ")
        if verb == "STORE" and OP_ID.fullmatch(arg):
            return self._store(arg)
        if verb == "STATE" and not arg:
            return "STATE " + " ".join(self.ops) if self.recovered else "RECOVERING"
        if not self.recovered:
            return "ERR recovering"
        if verb == "INCR" and OP_ID.fullmatch(arg):
            return await self._incr(arg)
        if verb in ("GET", "MEMBERS") and not arg:
            merged = await self._quorum_read()
            if merged is None:
                return "ERR no quorum"
            return f"VALUE {len(merged)}" if verb == "GET" else "MEMBERS " + " ".join(merged)
        return f"ERR bad request {line[:80]!r}"

    def _store(self, op: str) -> str:
        if op not in self.ops and len(self.ops) >= MAX_OPS:
            return "ERR full"
        self.ops[op] = None
        return "STORED"

    async def _incr(self, op: str) -> str:
        if self._store(op) != "STORED":
            return "ERR full"
        if not self.safe:
            # The planted bug: acknowledged before any peer holds it.
            self._spawn(self._replicate(op, len(self.links)))
            return "OK"
        if await self._replicate(op, self.majority - 1):
            return "OK"
        return "ERR no quorum"

    async def _replicate(self, op: str, needed: int) -> bool:
        """Send STORE to every peer; True once `needed` of them hold `op`."""
        stores = [asyncio.ensure_future(link.request(f"STORE {op}")) for link in self.links]
        stored = 0
        try:
            for next_reply in asyncio.as_completed(stores, timeout=QUORUM_TIMEOUT_S):
                if await next_reply == "STORED":
                    stored += 1
                    if stored >= needed:
                        return True
        except TimeoutError:
            pass
        finally:
            for store in stores:  # the others go on: more copies, better
                if not store.done():
                    self._spawn(store)
        return stored >= needed

    async def _quorum_read(self) -> dict[str, None] | None:
        """Own ids plus those of `majority - 1` recovered peers, merged into our own set."""
        merged = dict(self.ops)
        replies = await asyncio.gather(*(link.request("STATE") for link in self.links))
        states = [r for r in replies if r is not None and r.startswith("STATE")]
        if len(states) < self.majority - 1:
            return None
        for state in states:
            self._merge(state, merged)
        for op in merged:  # read repair: what we return, we now hold
            self._store(op)
        return merged

    @staticmethod
    def _merge(state_line: str, into: dict[str, None]) -> None:
        for op in state_line.split()[1:]:
            if OP_ID.fullmatch(op) and len(into) < MAX_OPS:
                into[op] = None

    async def _recover(self) -> None:
        """Merge the STATE of every peer, then serve (see the safety argument above)."""
        pending = list(self.links)
        for _ in range(MAX_RECOVERY_ATTEMPTS):
            replies = await asyncio.gather(*(link.request("STATE") for link in pending))
            answered = [r is not None and r.startswith("STATE") for r in replies]
            for reply, ok in zip(replies, answered, strict=True):
                if ok and reply is not None:
                    self._merge(reply, self.ops)
            pending = [link for link, ok in zip(pending, answered, strict=True) if not ok]
            if not pending:
                self.recovered = True
                return
            await asyncio.sleep(RECOVERY_RETRY_S)
        raise RuntimeError(f"{self.name}: no STATE from {pending} in {MAX_RECOVERY_ATTEMPTS} tries")


async def call(address: Address, line: str, timeout_s: float = CLIENT_TIMEOUT_S) -> str:
    """Send one request on a fresh connection; its reply line. Raises OSError or TimeoutError."""

    async def exchange() -> str:
        reader, writer = await asyncio.open_connection(*address, limit=MAX_LINE_BYTES)
        try:
            writer.write(line.encode() + b"\n")
            await writer.drain()
            reply = await reader.readline()
        finally:
            writer.close()
        if not reply.endswith(b"\n"):
            raise ConnectionResetError(f"{address} closed the connection without a reply")
        return reply.decode().rstrip("\n")

    return await asyncio.wait_for(exchange(), timeout_s)


# --- the real-world demo: 3 replicas and a client on loopback, under plain asyncio.run ----------

DEMO_REPLICAS = 3


async def demo(increments: int = 20, safe: bool = True, host: str = "127.0.0.1") -> dict[str, int]:
    """Start the replicas on free ports, increment through them in turn, read from each."""
    replicas = [Replica(f"r{i + 1}", safe=safe) for i in range(DEMO_REPLICAS)]
    ports = [await r.start(host, 0) for r in replicas]
    for i, replica in enumerate(replicas):
        replica.set_peers([(host, p) for j, p in enumerate(ports) if j != i])
    try:
        for i in range(increments):
            reply = await call((host, ports[i % len(ports)]), f"INCR demo-{i}")
            assert reply == "OK", f"INCR demo-{i}: {reply}"
        values: dict[str, int] = {}
        for replica, port in zip(replicas, ports, strict=True):
            reply = await call((host, port), "GET")
            values[replica.name] = int(reply.removeprefix("VALUE "))
        return values
    finally:  # concurrently: every replica closes its links before any waits for its streams
        await asyncio.gather(*(replica.close() for replica in replicas))


def main(argv: Sequence[str] = ()) -> int:
    """`python -m detsim.examples.counter [--unsafe] [N]`: the demo on loopback."""
    args = list(argv)
    safe = "--unsafe" not in args
    numbers = [a for a in args if a.isdigit()]
    increments = int(numbers[0]) if numbers else 20
    values = asyncio.run(demo(increments, safe=safe))
    for name, value in values.items():
        print(f"{name}: GET -> {value}")
    ok = all(v == increments for v in values.values())
    print(f"{increments} increments acknowledged; every replica reads {increments}: {ok}")
    return 0 if ok else 1


if __name__ == "__main__":
    import sys

    raise SystemExit(main(sys.argv[1:]))
