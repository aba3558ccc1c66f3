"""The follower's forwarder (`detsim.kv.forward`) against fake leaders on loopback: replies come
back exactly; nothing sent -> NOLEADER; sent without an answer -> TIMEOUT."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import Awaitable, Callable

import pytest

from detsim.kv.forward import FORWARDED_CLIENT_PREFIX, MAX_FORWARD_PENDING, LeaderForwarder
from detsim.kv.resp import ErrorReply, SimpleString

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def fake_leader(handler: Handler) -> tuple[asyncio.Server, tuple[str, int]]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    host, port = server.sockets[0].getsockname()[:2]
    return server, (host, port)


async def read_request(reader: asyncio.StreamReader) -> list[bytes]:
    count = int((await reader.readline())[1:])
    args = []
    for _ in range(count):
        size = int((await reader.readline())[1:])
        args.append((await reader.readexactly(size + 2))[:-2])
    return args


def test_replies_come_back_exactly() -> None:
    seen: list[list[bytes]] = []
    answers = [b"+OK\r\n", b"-ERR no\r\n", b":42\r\n", b"$-1\r\n", b"$3\r\na\r\n\r\n", b"_\r\n"]

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(await read_request(reader))  # CLIENT SETNAME
        writer.write(b"+OK\r\n")
        for answer in answers:
            seen.append(await read_request(reader))
            writer.write(answer)
        await writer.drain()

    async def main() -> list[object]:
        server, address = await fake_leader(handler)
        fwd = LeaderForwarder("n2", requirepass=None, timeout_s=5.0)
        try:
            calls = [fwd.forward("n1", address, [b"SET", b"k", b"%d" % i]) for i in range(6)]
            return list(await asyncio.gather(*calls))
        finally:
            await fwd.close()
            server.close()

    replies = asyncio.run(main())
    assert replies == [SimpleString("OK"), ErrorReply("ERR no"), 42, None, b"a\r\n", None]
    assert seen[0] == [b"CLIENT", b"SETNAME", FORWARDED_CLIENT_PREFIX + b"n2"]
    assert seen[1:] == [[b"SET", b"k", b"%d" % i] for i in range(6)]  # in order


def test_unreachable_leader_is_noleader() -> None:
    async def main() -> object:
        server, address = await fake_leader(lambda r, w: asyncio.sleep(0))
        server.close()
        await server.wait_closed()
        fwd = LeaderForwarder("n2", requirepass=None, timeout_s=2.0)
        try:
            return await fwd.forward("n1", address, [b"SET", b"k", b"v"])
        finally:
            await fwd.close()

    reply = asyncio.run(main())
    assert isinstance(reply, ErrorReply) and reply.message.startswith("NOLEADER"), reply


def test_sent_without_answer_is_timeout(caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> tuple[object, object]:
        got = asyncio.Event()

        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await read_request(reader)
            await read_request(reader)
            got.set()
            await asyncio.sleep(3600)  # never answers

        server, address = await fake_leader(handler)
        fwd = LeaderForwarder("n2", requirepass=b"pw", timeout_s=0.3)
        try:
            silent = await fwd.forward("n1", address, [b"SET", b"k", b"v"])
            # A waiter that goes away (its client disconnected), then the connection fails:
            # the orphaned future's error must not be left unretrieved.
            task = asyncio.ensure_future(fwd.forward("n1", address, [b"SET", b"k", b"w"]))
            await asyncio.sleep(0.05)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            server.close()
            for upstream in list(fwd._upstreams.values()):
                await upstream.close()
            fwd._upstreams.clear()
            lost = await fwd.forward("n1", address, [b"SET", b"k", b"x"])
            return silent, lost
        finally:
            await fwd.close()

    with caplog.at_level(logging.ERROR):
        silent, lost = asyncio.run(main())
        gc.collect()
    assert isinstance(silent, ErrorReply) and silent.message.startswith("TIMEOUT"), silent
    assert isinstance(lost, ErrorReply) and lost.message.startswith("NOLEADER"), lost
    assert "never retrieved" not in caplog.text


def test_a_run_is_sent_in_one_write_and_each_request_gets_its_reply() -> None:
    """forward_many: the whole run reaches the leader in one burst (so it proposes it as one
    entry); replies are matched in order; the ones that do not come by the deadline are
    TIMEOUT, each on its own."""
    bursts: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)  # CLIENT SETNAME
        writer.write(b"+OK\r\n")
        bursts.append(await reader.read(1 << 16))
        writer.write(b"+OK\r\n:2\r\n")  # two of the three replies, then silence
        await writer.drain()
        await asyncio.sleep(3600)

    async def main() -> list[object]:
        server, address = await fake_leader(handler)
        fwd = LeaderForwarder("n2", requirepass=None, timeout_s=0.5)
        try:
            run = [[b"SET", b"a", b"1"], [b"INCR", b"n"], [b"DEL", b"a"]]
            return list(await fwd.forward_many("n1", address, run))
        finally:
            await fwd.close()
            server.close()

    replies = asyncio.run(main())
    assert bursts == [
        b"*3\r\n$3\r\nSET\r\n$1\r\na\r\n$1\r\n1\r\n*2\r\n$4\r\nINCR\r\n$1\r\nn\r\n"
        b"*2\r\n$3\r\nDEL\r\n$1\r\na\r\n"
    ]
    assert replies[:2] == [SimpleString("OK"), 2]
    assert isinstance(replies[2], ErrorReply) and replies[2].message.startswith("TIMEOUT")


def test_a_run_past_the_pending_bound_is_not_sent_at_all() -> None:
    received: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"+OK\r\n")
        while data := await reader.read(1 << 16):
            received.append(data)

    async def main() -> list[object]:
        server, address = await fake_leader(handler)
        fwd = LeaderForwarder("n2", requirepass=None, timeout_s=0.5)
        try:
            run = [[b"SET", b"k", b"v"]] * (MAX_FORWARD_PENDING + 1)
            replies = list(await fwd.forward_many("n1", address, run))
            await asyncio.sleep(0.1)
            return replies
        finally:
            await fwd.close()
            server.close()

    replies = asyncio.run(main())
    assert len(replies) == MAX_FORWARD_PENDING + 1
    for reply in replies:
        assert isinstance(reply, ErrorReply) and reply.message.startswith("NOLEADER"), reply
    assert received == []  # nothing of the run was sent: safe to retry
