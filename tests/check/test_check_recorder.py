"""The recorder against a tiny RESP server (127.0.0.1, ephemeral port), with redis-py.

The server keeps a dict and answers GET/SET/APPEND/DEL/INCR/CAS; some keys misbehave on
purpose: "noleader" replies -NOLEADER, "slowpoke" replies -TIMEOUT, "reset" closes the
connection without replying, "hang" never replies (the client's socket timeout fires).
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import redis.asyncio

from detsim.check import HistoryLog, Recorder, check_history, no_retry

MAX_COMMANDS = 200  # the server's bound: it stops answering past it


async def _read_command(reader: asyncio.StreamReader) -> list[bytes]:
    header = await reader.readline()
    if not header:
        raise EOFError
    assert header[:1] == b"*", header
    args = []
    for _ in range(int(header[1:])):
        size = int((await reader.readline())[1:])
        args.append((await reader.readexactly(size + 2))[:-2])
    return args


def _bulk(value: bytes | None) -> bytes:
    return b"$-1\r\n" if value is None else b"$%d\r\n%s\r\n" % (len(value), value)


def _answer(store: dict[bytes, bytes], args: list[bytes]) -> bytes | None:
    name, rest = args[0].upper(), args[1:]
    key = rest[0] if rest else b""
    if key == b"noleader":
        return b"-NOLEADER no leader\r\n"
    if key == b"slowpoke":
        return b"-TIMEOUT outcome unknown\r\n"
    if key in (b"reset", b"hang"):
        return None
    if name == b"GET":
        return _bulk(store.get(key))
    if name == b"SET":
        store[key] = rest[1]
        return b"+OK\r\n"
    if name == b"APPEND":
        store[key] = store.get(key, b"") + rest[1]
        return b":%d\r\n" % len(store[key])
    if name == b"DEL":
        return b":%d\r\n" % (store.pop(key, None) is not None)
    if name == b"INCR":
        if key in store and not store[key].lstrip(b"-").isdigit():
            return b"-ERR value is not an integer or out of range\r\n"
        store[key] = b"%d" % (int(store.get(key, b"0")) + 1)
        return b":%s\r\n" % store[key]
    if name == b"CAS":
        if store.get(key) != rest[1]:
            return b":0\r\n"
        store[key] = rest[2]
        return b":1\r\n"
    if name in (b"CLIENT", b"HELLO", b"PING", b"SELECT"):
        return b"+OK\r\n"  # redis-py's handshake (CLIENT SETINFO ...)
    return b"-ERR unknown command\r\n"


async def _serve(store: dict[bytes, bytes]) -> asyncio.Server:
    served = 0

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal served
        try:
            while served < MAX_COMMANDS:
                args = await _read_command(reader)
                served += 1
                reply = _answer(store, args)
                if reply is None:
                    if args[1:2] == [b"reset"]:
                        break
                    continue  # "hang": never answer
                writer.write(reply)
                await writer.drain()
        except (EOFError, ConnectionError):
            pass
        finally:
            writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", 0)


async def _scenario() -> HistoryLog:
    store: dict[bytes, bytes] = {}
    server = await _serve(store)
    port = server.sockets[0].getsockname()[1]
    client = redis.asyncio.Redis(port=port, socket_timeout=0.5, retry=no_retry())
    log = HistoryLog()
    rec = Recorder(client, log)
    try:
        await rec.put("x", "1")
        await rec.get("x")
        await rec.append("x", "23")
        await rec.cas("x", "123", "9")
        await rec.cas("x", "123", "7")  # mismatch
        await rec.incr("n")
        await rec.delete("x")
        await rec.get("x")
        await rec.get("noleader")
        await rec.put("slowpoke", "v")  # -TIMEOUT: info, new process
        await rec.put("reset", "v")  # connection lost: info, new process
        await rec.get("hang")  # socket timeout: info, new process
        await rec.incr("n")
    finally:
        await client.aclose()
        server.close()
        await server.wait_closed()
    return log


def test_outcomes_are_classified() -> None:
    log = asyncio.run(asyncio.wait_for(_scenario(), timeout=20))
    done = [
        (e.process, e.type, e.f, e.key, e.value, e.error) for e in log.events if e.type != "invoke"
    ]
    assert done[:9] == [
        (0, "ok", "put", "x", None, None),
        (0, "ok", "get", "x", "1", None),
        (0, "ok", "append", "x", 3, None),
        (0, "ok", "cas", "x", None, None),
        (0, "fail", "cas", "x", None, "cas-mismatch"),
        (0, "ok", "incr", "n", 1, None),
        (0, "ok", "delete", "x", 1, None),
        (0, "ok", "get", "x", None, None),
        (0, "fail", "get", "noleader", None, "NOLEADER no leader"),
    ]
    assert [(p, t) for p, t, *_ in done[9:]] == [(0, "info"), (1, "info"), (2, "info"), (3, "ok")]
    assert "TIMEOUT" in done[9][5]
    assert done[12][4] == 2
    invokes = [e for e in log.events if e.type == "invoke"]
    assert invokes[3].value == ["123", "9"]
    assert [e.index for e in log.events] == list(range(len(log.events)))
    times = [e.time for e in log.events]
    assert times == sorted(times)
    assert check_history(log.events).linearizable is True


def test_rejects_a_retrying_client() -> None:
    with pytest.raises(ValueError, match="never retries"):
        Recorder(redis.asyncio.Redis(), HistoryLog())


def test_one_op_at_a_time() -> None:
    async def main() -> Any:
        store: dict[bytes, bytes] = {}
        server = await _serve(store)
        port = server.sockets[0].getsockname()[1]
        client = redis.asyncio.Redis(port=port, socket_timeout=0.5, retry=no_retry())
        rec = Recorder(client, HistoryLog())
        try:
            first = asyncio.ensure_future(rec.get("hang"))
            await asyncio.sleep(0.05)
            with pytest.raises(RuntimeError, match="one op at a time"):
                await rec.get("x")
            return await first
        finally:
            await client.aclose()
            server.close()

    event = asyncio.run(asyncio.wait_for(main(), timeout=20))
    assert event.type == "info"


def test_the_log_reads_the_clock_at_each_call_so_it_is_virtual_in_a_simulation():
    import asyncio

    import detsim
    from detsim.check.recorder import HistoryLog

    log = HistoryLog()
    sim = detsim.Simulation(seed=1)

    async def main():
        await asyncio.sleep(2.5)
        log.record("invoke", log.new_process(), "get", "x", None, None)

    sim.run(main())
    assert log.events[0].time == 2_500_000_000
