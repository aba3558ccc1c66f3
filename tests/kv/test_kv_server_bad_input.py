"""Bad input on the client port, in the simulator: garbage, truncated frames, huge declared
lengths, unknown commands, wrong arity, too many connections. Each is answered with an error
(Redis's wording); protocol errors close that connection; the node keeps serving the others
and nothing it acknowledged is lost (`finish()`: converged, logs checked, equal digests).
"""

from __future__ import annotations

import asyncio

import pytest
from kv_cluster import CLIENT_PORT, KVCluster

import detsim
from detsim import DiskConfig
from detsim.kv.server import PARTIAL_REQUEST_TIMEOUT_S

SEEDS = 2
FSYNC = DiskConfig(fsync_latency=0.002)


async def exchange(ip: str, data: bytes, *, eof: bool = False) -> tuple[bytes, bool]:
    """Send `data` (then EOF if asked); everything the server answers until it closes or
    stays silent for 10 s; whether it closed."""
    reader, writer = await asyncio.open_connection(ip, CLIENT_PORT)
    writer.write(data)
    if eof:
        writer.write_eof()
    await writer.drain()
    out = b""
    closed = False
    while True:
        try:
            chunk = await asyncio.wait_for(reader.read(65536), 10.0)
        except TimeoutError:
            break
        if not chunk:
            closed = True
            break
        out += chunk
    writer.close()
    return out, closed


PROTOCOL_ERRORS = [
    (b"*abc\r\n", b"-ERR Protocol error: invalid multibulk length\r\n"),
    (b"*1\r\n+PING\r\n", b"-ERR Protocol error: expected '$', got '+'\r\n"),
    (b"*2\r\n$3\r\nGET\r\n$-7\r\n", b"-ERR Protocol error: invalid bulk length\r\n"),
    (
        b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$16777217\r\n",  # a value of 16 MiB + 1: refused
        b"-ERR Protocol error: invalid bulk length\r\n",
    ),
    (b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$99999999999999999999999\r\n", None),
    (b"*99999999\r\n", None),
    (b'SET k "unbalanced\r\n', b"-ERR Protocol error: unbalanced quotes in request\r\n"),
    (b"x" * 70_000, b"-ERR Protocol error: too big inline request\r\n"),
]


@pytest.mark.detsim(seeds=SEEDS, disk=FSYNC)
async def test_protocol_errors_are_answered_and_closed(sim: detsim.Simulation) -> None:
    c = KVCluster(sim)
    lead = await c.wait_leader()
    follower = c.followers(lead)[0]
    assert await c.command(lead, "SET", "keep", "me") is True
    for nid in (lead, follower):
        for data, expected in PROTOCOL_ERRORS:
            # A valid request first: answered before the garbage after it is refused.
            out, closed = await c.on_client(exchange(c.ips[nid], b"PING\r\n" + data))
            assert closed, data
            assert out.startswith(b"+PONG\r\n-ERR Protocol error: "), (data, out)
            if expected is not None:
                assert out == b"+PONG\r\n" + expected, (data, out)
    # The node kept serving, and lost nothing.
    assert await c.command(follower, "GET", "keep") == b"me"
    assert c.servers[lead].stats.protocol_errors >= len(PROTOCOL_ERRORS)
    await c.finish()


@pytest.mark.detsim(seeds=SEEDS, disk=FSYNC)
async def test_truncated_requests(sim: detsim.Simulation) -> None:
    c = KVCluster(sim)
    lead = await c.wait_leader()
    half = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nab"
    # EOF inside a request: answered, closed, nothing applied.
    out, closed = await c.on_client(exchange(c.ips[lead], half, eof=True))
    assert closed and out == b"-ERR Protocol error: the connection ended inside a request\r\n"

    # A request left half-sent: answered after PARTIAL_REQUEST_TIMEOUT_S, then closed.
    async def stalled() -> tuple[bytes, float]:
        start = sim.now
        reader, writer = await asyncio.open_connection(c.ips[lead], CLIENT_PORT)
        writer.write(half)
        out = await reader.read()
        writer.close()
        return out, sim.now - start

    out, waited_s = await c.on_client(stalled())
    assert out.startswith(b"-ERR Protocol error: a request left incomplete")
    assert PARTIAL_REQUEST_TIMEOUT_S <= waited_s < PARTIAL_REQUEST_TIMEOUT_S + 1
    assert await c.command(lead, "EXISTS", "k") == 0
    await c.finish()


@pytest.mark.detsim(seeds=SEEDS, disk=FSYNC)
async def test_command_errors_keep_the_connection(sim: detsim.Simulation) -> None:
    c = KVCluster(sim)
    lead = await c.wait_leader()
    requests = (
        b"NOSUCH a b\r\n"
        b"*1\r\n$3\r\nGET\r\n"
        b"SET k\r\n"
        b"SET k v EX 10\r\n"
        b"SET k v NX XX\r\n"
        b"SELECT 1\r\n"
        b"INCRBY k notanumber\r\n"
        b"RAFT.ADDLEARNER n9 nohostport\r\n"
        b"RAFT.PROMOTE nobody\r\n"
        b"SET k v\r\n"
        b"GET k\r\n"
        b"PING hey\r\n"
        b"QUIT\r\n"
        b"GET k\r\n"  # after QUIT: never answered
    )
    out, closed = await c.on_client(exchange(c.ips[lead], requests))
    assert closed  # by QUIT, after every reply
    assert out.split(b"\r\n") == [
        b"-ERR unknown command 'NOSUCH', with args beginning with: 'a' 'b' ",
        b"-ERR wrong number of arguments for 'get' command",
        b"-ERR wrong number of arguments for 'set' command",
        b"-ERR SET option 'EX' is not supported: no expiry",
        b"-ERR syntax error",
        b"-ERR DB index is out of range",
        b"-ERR value is not an integer or out of range",
        b"-ERR invalid address 'nohostport': expected host:port",
        out.split(b"\r\n")[8],  # checked below: the core's wording
        b"+OK",
        b"$1",
        b"v",
        b"$3",
        b"hey",
        b"+OK",
        b"",
    ]
    assert out.split(b"\r\n")[8].startswith(b"-ERR "), out
    await c.finish()


@pytest.mark.detsim(seeds=SEEDS, disk=FSYNC)
async def test_nothing_but_auth_before_auth(sim: detsim.Simulation) -> None:
    c = KVCluster(sim, requirepass="pw")
    lead = await c.wait_leader()
    requests = (
        b"PING\r\n"
        b"SET k v\r\n"
        b"NOSUCH\r\n"  # unknown command and arity are checked before auth, as Redis does
        b"GET\r\n"
        b"HELLO\r\n"
        b"AUTH nope\r\n"
        b"AUTH someone pw\r\n"
        b"AUTH pw\r\n"
        b"SET k v\r\n"
        b"AUTH nope\r\n"  # a failed AUTH does not log an authenticated session out
        b"GET k\r\n"
        b"QUIT\r\n"
    )
    out, closed = await c.on_client(exchange(c.ips[lead], requests))
    assert closed
    hello = (
        b"-NOAUTH HELLO must be called with the client already authenticated, otherwise the "
        b"HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and "
        b"select the RESP protocol version at the same time"
    )
    wrongpass = b"-WRONGPASS invalid username-password pair or user is disabled."
    assert out.split(b"\r\n") == [
        b"-NOAUTH Authentication required.",
        b"-NOAUTH Authentication required.",
        b"-ERR unknown command 'NOSUCH', with args beginning with: ",
        b"-ERR wrong number of arguments for 'get' command",
        hello,
        wrongpass,
        wrongpass,
        b"+OK",
        b"+OK",
        wrongpass,
        b"$1",
        b"v",
        b"+OK",
        b"",
    ]
    await c.finish()


@pytest.mark.detsim(seeds=SEEDS, disk=FSYNC)
async def test_connections_past_the_limit_are_refused(sim: detsim.Simulation) -> None:
    c = KVCluster(sim, max_client_connections=3)
    lead = await c.wait_leader()

    async def crowd() -> tuple[list[bytes], bytes]:
        conns = [await asyncio.open_connection(c.ips[lead], CLIENT_PORT) for _ in range(3)]
        for _, w in conns:
            w.write(b"PING\r\n")
        pongs = [await r.readline() for r, _ in conns]
        reader, writer = await asyncio.open_connection(c.ips[lead], CLIENT_PORT)
        refused = await reader.read()  # the error, then EOF
        writer.close()
        for _, w in conns:
            w.close()
        return pongs, refused

    pongs, refused = await c.on_client(crowd())
    assert pongs == [b"+PONG\r\n"] * 3
    assert refused == b"-ERR max number of clients reached\r\n"
    assert c.servers[lead].stats.connections_refused == 1
    # Closed connections free their slots.
    await c.until(lambda: c.servers[lead].connections == 0, 5.0, "connections closed")
    assert await c.command(lead, "PING") is True
    await c.finish()
