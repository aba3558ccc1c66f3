"""Third-party asyncio libraries run unmodified inside a simulation."""

from __future__ import annotations

import asyncio

import aiohttp
from aiohttp import web

from detsim import Simulation


async def web_server():
    async def hello(request: web.Request) -> web.Response:
        await asyncio.sleep(0.25)
        return web.json_response({"name": request.query["name"], "peer": request.remote})

    app = web.Application()
    app.router.add_get("/hello", hello)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "0.0.0.0", 8080).start()
    await asyncio.Event().wait()


async def web_client(names):
    out = []
    async with aiohttp.ClientSession() as session:
        for name in names:
            async with session.get("http://web:8080/hello", params={"name": name}) as resp:
                out.append((resp.status, await resp.json()))
    return out


def test_aiohttp_server_and_client_unmodified():
    sim = Simulation(seed=1)
    sim.add_node("web", ip="10.0.0.1", init=web_server)
    client = sim.add_node("client", ip="10.0.0.2")

    async def main():
        return await client.spawn(web_client(["a", "b"]))

    replies = sim.run(main())
    assert replies == [
        (200, {"name": "a", "peer": "10.0.0.2"}),
        (200, {"name": "b", "peer": "10.0.0.2"}),
    ]
    assert 0.5 < sim.now < 1.0  # two handlers of 250 virtual ms each, plus latencies


def test_aiohttp_client_times_out_across_a_partition():
    sim = Simulation(seed=2)
    sim.add_node("web", ip="10.0.0.1", init=web_server)
    client = sim.add_node("client", ip="10.0.0.2")

    async def fetch():
        timeout = aiohttp.ClientTimeout(total=5)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            try:
                async with session.get("http://web:8080/hello?name=x") as resp:
                    return resp.status
            except TimeoutError:
                return "timeout"

    async def main():
        sim.net.partition(["web"], ["client"])
        return await client.spawn(fetch()), sim.now

    assert sim.run(main()) == ("timeout", 5.0)


async def resp_server():
    """A tiny RESP2 key-value server (PING, CLIENT, GET, SET) on plain asyncio streams."""
    store: dict[bytes, bytes] = {}

    async def read_command(reader):
        header = await reader.readline()
        if not header:
            return None
        assert header[:1] == b"*", header
        args = []
        for _ in range(int(header[1:])):
            size = int((await reader.readline())[1:])
            args.append((await reader.readexactly(size + 2))[:-2])
        return args

    async def handle(reader, writer):
        while (args := await read_command(reader)) is not None:
            name = args[0].upper()
            if name == b"PING":
                writer.write(b"+PONG\r\n")
            elif name == b"CLIENT":  # redis-py announces itself (CLIENT SETINFO) on connect
                writer.write(b"+OK\r\n")
            elif name == b"SET":
                store[args[1]] = args[2]
                writer.write(b"+OK\r\n")
            elif name == b"GET":
                value = store.get(args[1])
                writer.write(
                    b"$-1\r\n" if value is None else b"$%d\r\n%s\r\n" % (len(value), value)
                )
            else:
                writer.write(b"-ERR unknown command " + name + b"\r\n")
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "0.0.0.0", 6379)
    await server.serve_forever()


def test_redis_py_client_unmodified():
    import redis.asyncio as redis
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeoutError

    sim = Simulation(seed=3)
    sim.add_node("db", ip="10.0.0.1", init=resp_server)
    app = sim.add_node("app", ip="10.0.0.2")

    async def client():
        r = redis.Redis(host="db", port=6379, protocol=2, socket_timeout=2.0, retry=None)
        try:
            pong = await r.ping()
            await r.set("k", "v1")
            value = await r.get("k")
            sim.net.partition(["db"], ["app"])
            try:
                await r.get("k")
                outcome = "answered across a partition"
            except (RedisTimeoutError, RedisConnectionError, TimeoutError) as exc:
                outcome = type(exc).__name__
            return pong, value, outcome, asyncio.get_running_loop().time()
        finally:
            await r.aclose()

    async def main():
        return await app.spawn(client())

    pong, value, outcome, t = sim.run(main())
    assert (pong, value) == (True, b"v1")
    assert outcome == "TimeoutError"  # redis.exceptions.TimeoutError, after socket_timeout
    assert 2.0 <= t < 2.2  # socket_timeout, on the virtual clock
