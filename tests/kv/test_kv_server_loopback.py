"""The RESP server on a real event loop and loopback sockets, without Raft running (every
request that needs Raft gets -NOLEADER): bounds that need real kernel buffers."""

from __future__ import annotations

import asyncio
import contextlib
import socket

import pytest

from detsim.kv import server as server_module
from detsim.kv.server import KVServer, ServerConfig
from detsim.kv.statemachine import KVStateMachine
from detsim.raft import RaftNode, RaftNodeConfig


def make_server(tmp_path: str) -> KVServer:
    raft = RaftNode(RaftNodeConfig("n1", ("127.0.0.1", 0), {}, tmp_path), KVStateMachine())
    return KVServer(ServerConfig("n1", ("127.0.0.1", 0)), raft, KVStateMachine())


def test_not_running_yet_is_noleader(tmp_path: str) -> None:
    asyncio.run(not_running_yet(str(tmp_path)))


async def not_running_yet(tmp_path: str) -> None:
    server = make_server(tmp_path)
    await server.start()
    try:
        reader, writer = await asyncio.open_connection(*server.listen_address)
        writer.write(b"PING\r\nSET k v\r\nGET k\r\n")
        lines = [await reader.readline() for _ in range(3)]
        writer.close()
    finally:
        await server.close()
    assert lines[0] == b"+PONG\r\n"
    assert lines[1].startswith(b"-NOLEADER the node is not running yet")
    assert lines[2].startswith(b"-NOLEADER the node is not running yet")


def test_a_client_that_never_reads_is_disconnected(
    tmp_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(server_module, "REPLY_DRAIN_TIMEOUT_S", 0.5)
    asyncio.run(never_reads(str(tmp_path)))


async def never_reads(tmp_path: str) -> None:
    server = make_server(tmp_path)
    await server.start()
    sock = socket.create_connection(server.listen_address)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    _reader, writer = await asyncio.open_connection(sock=sock)
    try:
        # Pipelined ECHOs of 64 KiB whose replies we never read: the server's writes back up.
        value = b"x" * 65536
        writer.write((b"*2\r\n$4\r\nECHO\r\n$65536\r\n" + value + b"\r\n") * 400)
        with contextlib.suppress(ConnectionError):
            async with asyncio.timeout(30):
                while server.stats.slow_clients_closed == 0:
                    await asyncio.sleep(0.05)
        assert server.stats.slow_clients_closed == 1
        async with asyncio.timeout(30):
            while server.connections:
                await asyncio.sleep(0.05)
    finally:
        writer.transport.abort()
        await server.close()
    assert server.stats.internal_errors == 0


def test_close_with_open_connections_logs_no_error(
    tmp_path: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Closing the server ends each connection's task normally: on 3.11 asyncio logged every
    cancelled connection task as "Exception in callback ... CancelledError" (once per client,
    at every node shutdown; in a simulation the message also went into the trace)."""
    caplog.set_level("ERROR")
    asyncio.run(close_with_clients(str(tmp_path)))
    assert [r.getMessage() for r in caplog.records if r.levelname == "ERROR"] == []


async def close_with_clients(tmp_path: str) -> None:
    server = make_server(tmp_path)
    await server.start()
    clients = [await asyncio.open_connection(*server.listen_address) for _ in range(3)]
    for reader, writer in clients:
        writer.write(b"PING\r\n")
        assert await reader.readline() == b"+PONG\r\n"
    await server.close()
    for _reader, writer in clients:
        writer.close()
    await asyncio.sleep(0.01)  # the stream protocol's done-callbacks run
