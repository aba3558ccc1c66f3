"""The RESP server of a node: client connections on asyncio streams, commands run against Raft.

This module owns the client port: connections, sessions (protocol, authentication, name),
pipelining, and the mapping of Raft's outcomes to replies. What a request means is
`detsim.kv.commands`; its bytes are `detsim.kv.resp`; what a write does is the state machine.
It uses only `asyncio.start_server` streams, so the same code serves real sockets and runs in
the simulator (which patches asyncio's networking); it never imports detsim.sim.

A connection's task reads a burst of bytes, parses every complete request in it (at most
MAX_PIPELINE_REQUESTS at a time: the bound on a connection's pending replies), runs them, writes
all their replies in request order, and only then reads again (a client that does not read its
replies stops being read: backpressure, not buffering). Requests run in order, grouped:
- a run of consecutive writes is proposed as ONE Raft entry (a batch, `encode_writes`; cut
  in several only past MAX_BATCH_WRITES or the entry's size bound), awaited under one deadline,
  and each write gets its own reply from the batch's result; the driver puts whatever other
  connections proposed meanwhile in the same Ready (one fsync for all: group commit). A batch
  has one outcome: applied (each write's own reply, errors included), or not proposed
  (NOLEADER for each), or unknown (TIMEOUT for each);
- a run of consecutive reads shares one ReadIndex, then is served from the local state machine;
- connection and admin commands run one at a time, after everything before them finished.
So a read never overtakes an earlier write of the same connection, and replies stay in order.

Any node serves any command. Reads: ReadIndex (a follower's core asks the leader for its commit
index), then served here once applied >= it: linearizable. Writes on a node that is not the
leader are forwarded to the leader's client port (`detsim.kv.forward`, which argues the choice);
the client gets the leader's reply unchanged. A write is acknowledged after it is committed and
applied (the driver resolves a proposal when the state machine applied it).

Replies for what did not succeed (DESIGN):
- `-NOLEADER ...`: nothing was proposed (no leader known, node starting, queue full, leader
  unreachable before sending): safe to retry;
- `-TIMEOUT ...`: the outcome is unknown (no answer within `request_timeout_s`, leadership lost
  after proposing, connection to the leader lost after sending, node stopping);
- `-ERR ...`: a bad command or argument, with Redis's wording (from `detsim.kv.commands`);
- `-NOAUTH Authentication required.` before AUTH when a password is set (Redis's wording).

Bad input never crashes the node: a protocol error (garbage, a declared length over the
bounds) is answered with Redis's `ERR Protocol error: ...` and the connection is closed; so is a
half-sent request at EOF, or one left incomplete for PARTIAL_REQUEST_TIMEOUT_S; a client
that does not read its replies for REPLY_DRAIN_TIMEOUT_S is disconnected. Past
MAX_CLIENT_CONNECTIONS a new connection gets `-ERR max number of clients reached` and is
closed. An unexpected exception while serving a connection closes that connection only,
counted in `stats.internal_errors` and logged (tests assert it stays 0).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hmac
import json
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Final, TypeGuard

from detsim.kv.commands import (
    COMMANDS,
    Append,
    Auth,
    Cas,
    Client,
    ClientOp,
    Command,
    CommandError,
    CommandKind,
    DbSize,
    Del,
    Echo,
    Exists,
    Get,
    Hello,
    IncrBy,
    Info,
    MGet,
    MSet,
    Ping,
    Quit,
    RaftAdmin,
    RaftOp,
    ReadCommand,
    Select,
    Set,
    WriteCommand,
    batch_chunks,
    encode_writes,
    parse_command,
    write_size_bound,
)
from detsim.kv.forward import FORWARDED_CLIENT_PREFIX, LeaderForwarder, no_leader, timed_out
from detsim.kv.resp import (
    OK,
    PONG,
    ErrorReply,
    ProtocolFailure,
    Reply,
    RequestParser,
    SimpleString,
    encode_reply,
)
from detsim.kv.statemachine import BatchReplies, KVStateMachine
from detsim.raft.core.errors import (
    ConfChangeRejected,
    NotLeader,
    ProposalDropped,
    RaftError,
    ReadIndexDropped,
    TransferRejected,
)
from detsim.raft.driver import NodeStopped, OutcomeUnknown, RaftNode

Address = tuple[str, int]

MAX_CLIENT_CONNECTIONS: Final = 10_000
#: Requests run (and replies held) at a time per connection; the rest waits in the parser.
MAX_PIPELINE_REQUESTS: Final = 1024
READ_CHUNK_BYTES: Final = 64 * 1024
#: A request started and not finished for this long is answered with an error and closed.
PARTIAL_REQUEST_TIMEOUT_S: Final = 30.0
#: A client that does not read its replies for this long is disconnected (it holds a slot and
#: its replies' memory; Redis's client-output-buffer-limit plays this part).
REPLY_DRAIN_TIMEOUT_S: Final = 60.0
#: How long the last words to a closing connection (a refusal, an error) may take to write.
CLOSE_FLUSH_TIMEOUT_S: Final = 1.0

ERR_NOAUTH: Final = ErrorReply("NOAUTH Authentication required.")
ERR_WRONGPASS: Final = ErrorReply("WRONGPASS invalid username-password pair or user is disabled.")
ERR_NOAUTH_HELLO: Final = ErrorReply(
    "NOAUTH HELLO must be called with the client already authenticated, otherwise the "
    "HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and "
    "select the RESP protocol version at the same time"
)
ERR_MAX_CLIENTS: Final = b"-ERR max number of clients reached\r\n"
ERR_INCOMPLETE: Final = ErrorReply("ERR Protocol error: the connection ended inside a request")
ERR_STALLED: Final = ErrorReply(
    f"ERR Protocol error: a request left incomplete for {PARTIAL_REQUEST_TIMEOUT_S:g} s"
)
#: Commands a client may send before AUTH (Redis: AUTH, HELLO, QUIT are no-auth).
_NO_AUTH_COMMANDS: Final = frozenset({b"auth", b"hello", b"quit"})

_log = logging.getLogger(__name__)


@dataclasses.dataclass(slots=True)
class ServerStats:
    connections_accepted: int = 0
    connections_refused: int = 0  # past MAX_CLIENT_CONNECTIONS
    protocol_errors: int = 0  # answered and closed
    requests: int = 0
    forwarded: int = 0
    slow_clients_closed: int = 0  # replies not drained in REPLY_DRAIN_TIMEOUT_S
    internal_errors: int = 0  # a bug: a connection closed by an unexpected exception


@dataclasses.dataclass(slots=True)
class Session:
    """One client connection's state."""

    client_id: int
    address: str
    authenticated: bool
    protocol: int = 2
    name: bytes | None = None
    lib_name: bytes | None = None
    lib_ver: bytes | None = None
    closing: bool = False

    @property
    def forwarded(self) -> bool:
        """A follower's proxy connection: never forward its requests again (one hop)."""
        return self.name is not None and self.name.startswith(FORWARDED_CLIENT_PREFIX)


@dataclasses.dataclass(frozen=True, slots=True)
class ServerConfig:
    node_id: str
    client_addr: Address
    requirepass: bytes | None = None
    request_timeout_s: float = 5.0
    peer_client_addrs: Mapping[str, Address] = dataclasses.field(default_factory=dict)
    max_connections: int = MAX_CLIENT_CONNECTIONS


# A parsed request: the command, or the error reply its parsing produced.
_Parsed = Command | ErrorReply


class KVServer:
    """The RESP server of one node (see the module header)."""

    def __init__(self, config: ServerConfig, raft: RaftNode, state_machine: KVStateMachine) -> None:
        assert 0 < config.max_connections <= MAX_CLIENT_CONNECTIONS
        assert config.request_timeout_s > 0
        self.config = config
        self.raft = raft
        self.state_machine = state_machine
        self.stats = ServerStats()
        self.forwarder = LeaderForwarder(
            config.node_id, requirepass=config.requirepass, timeout_s=config.request_timeout_s
        )
        self._server: asyncio.Server | None = None
        self._connections: dict[int, asyncio.Task[None]] = {}  # client id -> its task
        self._closing = False  # close() is cancelling the connections
        self._next_client_id = 1

    # --- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        host, port = self.config.client_addr
        self._server = await asyncio.start_server(self._on_connect, host, port)

    @property
    def listen_address(self) -> Address:
        assert self._server is not None and self._server.sockets
        host, port = self._server.sockets[0].getsockname()[:2]
        return (str(host), int(port))

    @property
    def connections(self) -> int:
        return len(self._connections)

    async def close(self) -> None:
        """Stop listening, close every connection, wait for their tasks."""
        if self._server is not None:
            self._server.close()
        tasks = list(self._connections.values())
        self._closing = True
        for task in tasks:
            task.cancel()
        # gather, not `suppress(CancelledError)`: a cancellation of *this* task still stops it.
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.forwarder.close()

    # --- connections -----------------------------------------------------------------------

    async def _on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self._connections) >= self.config.max_connections:
            self.stats.connections_refused += 1
            await _refuse(writer)
            return
        task = asyncio.current_task()
        assert task is not None
        client_id = self._next_client_id
        self._next_client_id += 1
        self._connections[client_id] = task
        self.stats.connections_accepted += 1
        peer = writer.get_extra_info("peername")
        address = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        session = Session(client_id, address, self.config.requirepass is None)
        try:
            await self._serve(session, reader, writer)
        except (ConnectionError, OSError, asyncio.IncompleteReadError):
            pass  # the client went away
        except asyncio.CancelledError:
            if not self._closing:
                raise
            # Closed by `close()`: end the task normally. On 3.11 asyncio's stream callback
            # calls task.exception() on a cancelled connection task and logs the
            # CancelledError as an error, once per open connection at every shutdown.
            task.uncancel()
        except Exception:
            self.stats.internal_errors += 1
            _log.exception("%s: connection %d closed by an error", self.config.node_id, client_id)
        finally:
            del self._connections[client_id]
            writer.close()

    async def _serve(
        self, session: Session, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        parser = RequestParser()
        while not session.closing:
            batch = _take_requests(parser)
            if not batch:
                try:
                    data = await self._read(parser, reader)
                except _Incomplete as exc:
                    self.stats.protocol_errors += 1
                    writer.write(encode_reply(exc.reply, session.protocol))
                    break
                if data is None:
                    break
                parser.feed(data)
                continue
            replies = await self._run(session, batch)
            writer.write(b"".join(replies))
            try:
                async with asyncio.timeout(REPLY_DRAIN_TIMEOUT_S):
                    await writer.drain()
            except TimeoutError:
                self.stats.slow_clients_closed += 1
                break
        await _flush_and_close(writer)

    async def _read(self, parser: RequestParser, reader: asyncio.StreamReader) -> bytes | None:
        """The next bytes; None at EOF between requests; _Incomplete at EOF inside a request
        or when a started request gets no byte for PARTIAL_REQUEST_TIMEOUT_S."""
        if parser.buffered_bytes() == 0:
            # Between requests a client may stay idle forever: no deadline (and no Timeout
            # object per read: this is once per burst of every connection).
            return await reader.read(READ_CHUNK_BYTES) or None
        try:
            async with asyncio.timeout(PARTIAL_REQUEST_TIMEOUT_S):
                data = await reader.read(READ_CHUNK_BYTES)
        except TimeoutError:
            raise _Incomplete(ERR_STALLED) from None
        if data:
            return data
        raise _Incomplete(ERR_INCOMPLETE)

    # --- running a batch -------------------------------------------------------------------

    async def _run(
        self, session: Session, batch: list[list[bytes] | ProtocolFailure]
    ) -> list[bytes]:
        """Run a batch in order (grouped as the module header says); the encoded replies."""
        replies: list[bytes] = []
        parsed = [self._parse(item) for item in batch]
        i = 0
        while i < len(batch) and not session.closing:
            item = batch[i]
            if isinstance(item, ProtocolFailure):
                self.stats.protocol_errors += 1
                replies.append(encode_reply(item.reply, session.protocol))
                session.closing = True
                break
            refusal = self._refusal(session, item, parsed[i])
            if refusal is not None:
                replies.append(encode_reply(refusal, session.protocol))
                i += 1
                continue
            command = parsed[i]
            assert not isinstance(command, ErrorReply)
            end = self._run_end(session, batch, parsed, i, command.kind)
            self.stats.requests += end - i
            results = await self._run_group(session, batch[i:end], parsed[i:end])
            replies.extend(encode_reply(r, session.protocol) for r in results)
            i = end
        return replies

    def _parse(self, item: list[bytes] | ProtocolFailure) -> _Parsed:
        if isinstance(item, ProtocolFailure):
            return item.reply
        try:
            return parse_command(item)
        except CommandError as exc:
            return exc.reply

    def _refusal(self, session: Session, args: list[bytes], parsed: _Parsed) -> ErrorReply | None:
        """The error to answer instead of running the request, if any."""
        if not session.authenticated:
            name = args[0].lower()
            spec = COMMANDS.get(name)
            known = spec is not None and _arity_ok(spec.arity, len(args))
            if known and name not in _NO_AUTH_COMMANDS:
                return ERR_NOAUTH  # Redis checks the name and arity first, then auth
            if isinstance(parsed, Hello) and parsed.auth is None:
                return ERR_NOAUTH_HELLO
        return parsed if isinstance(parsed, ErrorReply) else None

    def _run_end(
        self,
        session: Session,
        batch: Sequence[list[bytes] | ProtocolFailure],
        parsed: Sequence[_Parsed],
        start: int,
        kind: CommandKind,
    ) -> int:
        """The end of the group that starts at `start`: consecutive reads or writes (one
        connection or admin command alone)."""
        if kind not in (CommandKind.READ, CommandKind.WRITE):
            return start + 1
        end = start + 1
        while end < len(batch):
            item, command = batch[end], parsed[end]
            if isinstance(item, ProtocolFailure) or isinstance(command, ErrorReply):
                break
            if command.kind is not kind or self._refusal(session, item, command) is not None:
                break
            end += 1
        return end

    async def _run_group(
        self,
        session: Session,
        batch: Sequence[list[bytes] | ProtocolFailure],
        parsed: Sequence[_Parsed],
    ) -> list[Reply]:
        first = parsed[0]
        assert not isinstance(first, ErrorReply)
        if first.kind is CommandKind.WRITE:
            requests = [args for args in batch if isinstance(args, list)]
            writes = [command for command in parsed if _is_write(command)]
            assert len(requests) == len(writes) == len(parsed)
            return await self._writes(session, requests, writes)
        if first.kind is CommandKind.READ:
            reads = [c for c in parsed if _is_read(c)]
            assert len(reads) == len(parsed)
            return await self._reads(reads)
        args = batch[0]
        assert isinstance(args, list)
        if first.kind is CommandKind.CONNECTION:
            return [self._connection_command(session, first)]
        return [await self._admin(session, args, first)]

    # --- writes ----------------------------------------------------------------------------

    async def _writes(
        self, session: Session, requests: Sequence[list[bytes]], writes: Sequence[WriteCommand]
    ) -> list[Reply]:
        """A run of writes proposed as few entries as fit (nearly always one); their replies
        in request order."""
        chunks = batch_chunks([write_size_bound(args) for args in requests])
        if len(chunks) == 1:
            return await self._write_entry(session, requests, writes)
        # Tasks start in creation order: the entries reach the driver in request order.
        results = await asyncio.gather(
            *(
                self._write_entry(session, requests[c.start : c.stop], writes[c.start : c.stop])
                for c in chunks
            )
        )
        return [reply for replies in results for reply in replies]

    async def _write_entry(
        self, session: Session, requests: Sequence[list[bytes]], writes: Sequence[WriteCommand]
    ) -> list[Reply]:
        """Writes proposed as one entry; one reply per write."""
        payload = encode_writes(writes)
        count = len(writes)

        async def propose() -> list[Reply]:
            return _entry_replies(await self.raft.propose(payload), count)

        return await self._on_leader(session, requests, propose)

    async def _on_leader(
        self,
        session: Session,
        requests: Sequence[list[bytes]],
        call: Callable[[], Awaitable[list[Reply]]],
    ) -> list[Reply]:
        """Run leader-only requests here as one call under one deadline, or forward them all
        to the leader; one reply per request (a failure of the call is every request's)."""
        count = len(requests)
        if not self.raft.running:
            return [no_leader("the node is not running yet")] * count
        error: ErrorReply
        try:
            async with asyncio.timeout(self.config.request_timeout_s):
                replies = await call()
                assert len(replies) == count, (len(replies), count)
                return replies
        except NotLeader as exc:
            return await self._forward(session, requests, exc.leader_hint)
        except (ConfChangeRejected, TransferRejected) as exc:
            error = ErrorReply(f"ERR {exc}")
        except (ProposalDropped, ReadIndexDropped) as exc:
            error = no_leader(str(exc))
        except (OutcomeUnknown, NodeStopped) as exc:
            error = timed_out(str(exc))
        except TimeoutError:
            error = timed_out(f"no answer in {self.config.request_timeout_s} s")
        return [error] * count

    async def _leader_call(
        self, session: Session, args: list[bytes], call: Callable[[], Awaitable[Reply]]
    ) -> Reply:
        """One leader-only request (admin): `_on_leader` of one."""

        async def one() -> list[Reply]:
            return [await call()]

        return (await self._on_leader(session, [args], one))[0]

    async def _forward(
        self, session: Session, requests: Sequence[list[bytes]], leader: str | None
    ) -> list[Reply]:
        count = len(requests)
        if leader is None:
            return [no_leader("no leader known")] * count
        if session.forwarded:
            return [no_leader(f"not the leader (forwarded here; leader hint: {leader})")] * count
        # Configured addresses first; a member added at run time brought its own in its change.
        address = self.config.peer_client_addrs.get(leader) or self.raft.client_addresses.get(
            leader
        )
        if address is None:
            return [no_leader(f"the leader {leader}'s client address is not known here")] * count
        self.stats.forwarded += count
        return await self.forwarder.forward_many(leader, address, requests)

    # --- reads -----------------------------------------------------------------------------

    async def _reads(self, commands: Sequence[ReadCommand]) -> list[Reply]:
        refusal = await self._read_barrier()
        if refusal is not None:
            return [refusal] * len(commands)
        return [self.state_machine.read(c) for c in commands]

    async def _read_barrier(self) -> ErrorReply | None:
        """Wait until a linearizable read may be served here (ReadIndex)."""
        if not self.raft.running:
            return no_leader("the node is not running yet")
        try:
            async with asyncio.timeout(self.config.request_timeout_s):
                await self.raft.read_index()
        except (NotLeader, ReadIndexDropped, ProposalDropped, NodeStopped) as exc:
            return no_leader(str(exc))
        except TimeoutError:
            return timed_out(f"read index not reached in {self.config.request_timeout_s} s")
        return None

    # --- connection commands ---------------------------------------------------------------

    def _connection_command(self, session: Session, command: Command) -> Reply:
        match command:
            case Ping(message):
                return PONG if message is None else message
            case Echo(message):
                return message
            case Auth(password, username):
                return self._auth(session, username, password)
            case Hello():
                return self._hello(session, command)
            case Select():
                return OK
            case Quit():
                session.closing = True
                return OK
            case Client():
                return self._client(session, command)
        raise AssertionError(f"not a connection command: {command!r}")

    def _auth(self, session: Session, username: bytes | None, password: bytes) -> Reply:
        required = self.config.requirepass
        if required is None:
            return ErrorReply(
                "ERR AUTH <password> called without any password configured for the default "
                "user. Are you sure your configuration is correct?"
            )
        user_ok = username is None or username == b"default"
        if user_ok and hmac.compare_digest(password, required):
            session.authenticated = True
            return OK
        return ERR_WRONGPASS  # as Redis: a session already authenticated stays so

    def _hello(self, session: Session, command: Hello) -> Reply:
        if command.auth is not None:
            refused = self._auth(session, command.auth[0], command.auth[1])
            if isinstance(refused, ErrorReply):
                return refused
        if command.protocol is not None:
            session.protocol = command.protocol
        if command.client_name is not None:
            session.name = command.client_name
        status = self.raft.status() if self.raft.running else {"role": "follower"}
        return {
            b"server": b"detsim",
            b"version": b"7.2.0",
            b"proto": session.protocol,
            b"id": session.client_id,
            b"mode": b"standalone",
            b"role": b"master" if status["role"] == "leader" else b"replica",
            b"modules": [],
        }

    def _client(self, session: Session, command: Client) -> Reply:
        match command.op:
            case ClientOp.ID:
                return session.client_id
            case ClientOp.GETNAME:
                return session.name
            case ClientOp.SETNAME:
                session.name = command.argument or None  # an empty name removes it (Redis)
                return OK
            case ClientOp.SETINFO:
                if command.attribute == "lib-name":
                    session.lib_name = command.argument
                else:
                    session.lib_ver = command.argument
                return OK
            case ClientOp.INFO:
                return self._client_line(session)
            case ClientOp.LIST:
                return self._client_line(session)  # this connection's own line only
            case ClientOp.HELP:
                return [SimpleString(line) for line in _CLIENT_HELP]
        raise AssertionError(command)

    def _client_line(self, session: Session) -> bytes:
        name = (session.name or b"").decode("utf-8", "replace")
        lib = (session.lib_name or b"").decode("utf-8", "replace")
        ver = (session.lib_ver or b"").decode("utf-8", "replace")
        line = (
            f"id={session.client_id} addr={session.address} name={name} db=0 "
            f"resp={session.protocol} lib-name={lib} lib-ver={ver}\n"
        )
        return line.encode()

    # --- admin commands --------------------------------------------------------------------

    async def _admin(self, session: Session, args: list[bytes], command: Command) -> Reply:
        if isinstance(command, Info):
            return self._info(command.sections)
        assert isinstance(command, RaftAdmin), command
        raft = self.raft
        op, target = command.op, command.node_id
        if op is RaftOp.DIGEST:
            return self.state_machine.digest_json()
        if not raft.running:
            return no_leader("the node is not running yet")
        match op:
            case RaftOp.STATUS:
                return json.dumps(raft.status(), sort_keys=True).encode()
            case RaftOp.SNAPSHOT:
                return await self._snapshot()
            case RaftOp.ADDLEARNER:
                assert target is not None and command.address is not None
                address, client_address = command.address, command.client_address
                return await self._membership(
                    session, args, lambda: raft.add_learner(target, address, client_address)
                )
            case RaftOp.PROMOTE:
                assert target is not None
                return await self._membership(session, args, lambda: raft.promote(target))
            case RaftOp.REMOVE:
                assert target is not None
                return await self._membership(session, args, lambda: raft.remove(target))
            case RaftOp.TRANSFER:
                assert target is not None
                return await self._membership(
                    session, args, lambda: raft.transfer_leadership(target)
                )
        raise AssertionError(command)

    async def _membership(
        self, session: Session, args: list[bytes], call: Callable[[], Awaitable[Any]]
    ) -> Reply:
        async def done() -> Reply:
            await call()
            return OK

        return await self._leader_call(session, args, done)

    async def _snapshot(self) -> Reply:
        try:
            async with asyncio.timeout(self.config.request_timeout_s):
                return await self.raft.snapshot_now()
        except NodeStopped as exc:
            return timed_out(str(exc))
        except TimeoutError:
            return timed_out(f"no snapshot in {self.config.request_timeout_s} s")
        except RaftError as exc:
            return ErrorReply(f"ERR {exc}")

    def _info(self, sections: Sequence[str]) -> bytes:
        wanted = set(sections) or {"default"}
        every = bool(wanted & {"all", "everything", "default"})
        out: list[str] = []
        for name, fields in self._info_sections():
            if every or name.lower() in wanted:
                out.append(f"# {name}")
                out.extend(f"{key}:{value}" for key, value in fields)
                out.append("")
        return "\r\n".join(out).encode()

    def _info_sections(self) -> list[tuple[str, list[tuple[str, object]]]]:
        sm = self.state_machine
        port = self.config.client_addr[1]
        server: list[tuple[str, object]] = [
            ("redis_version", "7.2.0"),
            ("detsim_node_id", self.config.node_id),
            ("redis_mode", "standalone"),
            ("tcp_port", port),
        ]
        clients: list[tuple[str, object]] = [
            ("connected_clients", len(self._connections)),
            ("maxclients", self.config.max_connections),
        ]
        stats: list[tuple[str, object]] = [
            (f"total_{k}", v) for k, v in dataclasses.asdict(self.stats).items()
        ]
        keyspace: list[tuple[str, object]] = []
        if sm.key_count():
            keyspace.append(("db0", f"keys={sm.key_count()},expires=0,avg_ttl=0"))
        raft: list[tuple[str, object]] = [("raft_running", int(self.raft.running))]
        if self.raft.running:
            for key, value in self.raft.status().items():
                text = ",".join(value) if isinstance(value, list) else value
                raft.append((f"raft_{key}", "" if text is None else text))
        raft.append(("raft_used_bytes", sm.used_bytes()))
        return [
            ("Server", server),
            ("Clients", clients),
            ("Stats", stats),
            ("Raft", raft),
            ("RaftStats", self._raft_stats()),
            ("Keyspace", keyspace),
        ]

    def _raft_stats(self) -> list[tuple[str, object]]:
        """The Raft driver's and transport's counters (`INFO raftstats`): how many Readies,
        fsyncs, messages per request, and every drop by its reason."""
        if not self.raft.running:
            return []
        driver = dataclasses.asdict(self.raft.stats)
        transport = dataclasses.asdict(self.raft.transport.stats)
        return [(f"raft_driver_{k}", v) for k, v in driver.items()] + [
            (f"raft_transport_{k}", v) for k, v in transport.items()
        ]


# --- helpers -----------------------------------------------------------------------------------


class _Incomplete(Exception):
    """A half-sent request at EOF or after PARTIAL_REQUEST_TIMEOUT_S (answered, then closed)."""

    def __init__(self, reply: ErrorReply) -> None:
        super().__init__(reply.message)
        self.reply = reply


_CLIENT_HELP: Final = (
    "CLIENT <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "ID",
    "    Return the ID of the current connection.",
    "GETNAME",
    "    Return the name of the current connection.",
    "SETNAME <name>",
    "    Assign the name <name> to the current connection.",
    "SETINFO <LIB-NAME|LIB-VER> <value>",
    "    Set client meta attr. Options are:",
    "INFO",
    "    Return information about the current client connection.",
    "LIST",
    "    Return information about client connections (this connection only).",
    "HELP",
    "    Print this help.",
)


def _arity_ok(arity: int, argc: int) -> bool:
    return argc == arity if arity > 0 else argc >= -arity


def _entry_replies(result: object, count: int) -> list[Reply]:
    """The replies of `count` writes from their entry's result (`KVStateMachine.apply`)."""
    if isinstance(result, BatchReplies):
        assert len(result.replies) == count, (len(result.replies), count)
        return list(result.replies)
    # One write's reply; or a corrupt entry's one error, for every write of its batch.
    assert count == 1 or isinstance(result, ErrorReply), (count, result)
    return [result] * count  # type: ignore[list-item]  # a Reply: the state machine's result


def _is_write(command: _Parsed) -> TypeGuard[WriteCommand]:
    return isinstance(command, Set | Del | IncrBy | Append | MSet | Cas)


def _is_read(command: _Parsed) -> TypeGuard[ReadCommand]:
    return isinstance(command, Get | Exists | MGet | DbSize)


def _take_requests(parser: RequestParser) -> list[list[bytes] | ProtocolFailure]:
    """Up to MAX_PIPELINE_REQUESTS parsed requests (a failure ends the list)."""
    batch: list[list[bytes] | ProtocolFailure] = []
    while len(batch) < MAX_PIPELINE_REQUESTS:
        request = parser.get()
        if request is None:
            break
        batch.append(request)
        if isinstance(request, ProtocolFailure):
            break
    return batch


async def _flush_and_close(writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError, OSError, TimeoutError):
        async with asyncio.timeout(CLOSE_FLUSH_TIMEOUT_S):
            await writer.drain()
    writer.close()


async def _refuse(writer: asyncio.StreamWriter) -> None:
    writer.write(ERR_MAX_CLIENTS)
    await _flush_and_close(writer)
