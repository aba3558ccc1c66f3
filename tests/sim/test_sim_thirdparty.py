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
