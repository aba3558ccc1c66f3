"""Simulated TCP: the same code as on real sockets; faults exactly as DESIGN.md says."""

from __future__ import annotations

import asyncio
import socket

import echo_app
import pytest

import detsim
from detsim import NetConfig, Simulation

LINES = ["alpha", "beta", "gamma"]
EXPECTED = ["ALPHA", "BETA", "GAMMA"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_same_echo_code_under_asyncio_run_and_simulation():
    port = free_port()

    async def real():
        started = asyncio.Event()
        server = asyncio.create_task(echo_app.serve("127.0.0.1", port, started))
        await started.wait()
        try:
            return await echo_app.call("127.0.0.1", port, LINES)
        finally:
            server.cancel()

    assert asyncio.run(real()) == EXPECTED

    sim = Simulation(seed=4)
    sim.add_node("n1", ip="10.0.0.1", init=lambda: echo_app.serve("0.0.0.0", 7000))
    c1 = sim.add_node("c1", ip="10.0.0.9")

    async def main():
        return await c1.spawn(echo_app.call("n1", 7000, LINES))

    assert sim.run(main()) == EXPECTED
    assert 0.0 < sim.now < 1.0  # a few latencies of NetConfig's default 1-10 ms
    kinds = [e["kind"] for e in sim.events]
    assert {"listen", "connect", "accept", "established", "recv"} <= set(kinds)


def test_latency_is_drawn_per_link_within_bounds():
    sim = Simulation(seed=1, net=NetConfig(latency=(0.05, 0.05)))
    sim.add_node("n1", ip="10.0.0.1", init=lambda: echo_app.serve("0.0.0.0", 7000))
    c1 = sim.add_node("c1", ip="10.0.0.2")

    async def main():
        await c1.spawn(echo_app.call("n1", 7000, ["x"]))
        return sim.now

    # SYN, SYN-ACK, request, reply: four one-way trips of exactly 50 ms, plus loopback-free work.
    assert sim.run(main()) == pytest.approx(0.2)


def test_partition_holds_segments_and_delivers_after_heal():
    sim = Simulation(seed=2)
    sim.add_node("n1", ip="10.0.0.1", init=lambda: echo_app.serve("0.0.0.0", 7000))
    c1 = sim.add_node("c1", ip="10.0.0.2")

    async def client():
        reader, writer = await asyncio.open_connection("n1", 7000)
        writer.write(b"before\n")
        first = await reader.readline()
        await asyncio.sleep(0.5)
        writer.write(b"during\n")  # sent while cut: held, not lost
        second = await reader.readline()
        return first, second, asyncio.get_running_loop().time()

    async def main():
        task = c1.spawn(client())
        await asyncio.sleep(0.1)
        sim.net.partition(["n1"], ["c1"])
        await asyncio.sleep(5)
        assert not task.done()
        sim.net.heal()
        return await task

    first, second, t = sim.run(main())
    assert (first, second) == (b"BEFORE\n", b"DURING\n")
    assert t > 5.1
    assert "hold" in [e["kind"] for e in sim.events]


def test_held_longer_than_stream_timeout_resets_both_ends():
    sim = Simulation(seed=3, net=NetConfig(stream_timeout=20.0))
    sim.add_node("n1", ip="10.0.0.1", init=lambda: echo_app.serve("0.0.0.0", 7000))
    c1 = sim.add_node("c1", ip="10.0.0.2")

    async def client():
        reader, writer = await asyncio.open_connection("n1", 7000)
        sim.net.partition(["n1"], ["c1"])
        writer.write(b"lost\n")
        try:
            await reader.readline()
        except ConnectionResetError:
            return asyncio.get_running_loop().time()
        return None

    async def main():
        return await c1.spawn(client())

    t = sim.run(main())
    assert t is not None and 20.0 <= t <= 20.1
    assert "stream_timeout" in [e["kind"] for e in sim.events]


def _peer_view(fault: str, seed: int = 5) -> tuple[str, float]:
    """What a client connected to n1 sees after n1 suffers `fault`, within 60 s."""
    sim = Simulation(seed=seed, net=NetConfig(stream_timeout=600.0))
    sim.add_node("n1", ip="10.0.0.1", init=lambda: echo_app.serve("0.0.0.0", 7000))
    c1 = sim.add_node("c1", ip="10.0.0.2")

    async def client():
        reader, writer = await asyncio.open_connection("n1", 7000)
        writer.write(b"hi\n")
        await reader.readline()
        try:  # the fault happens while we wait
            async with asyncio.timeout(60):
                line = await reader.readline()
            return ("eof" if line == b"" else "data"), asyncio.get_running_loop().time()
        except ConnectionResetError:
            return "reset", asyncio.get_running_loop().time()
        except TimeoutError:
            return "silence", asyncio.get_running_loop().time()

    async def main():
        task = c1.spawn(client())
        await asyncio.sleep(0.5)
        getattr(sim, fault)("n1")
        return await task

    return sim.run(main())


def test_kill_crash_pause_as_seen_by_a_peer():
    seen, t = _peer_view("kill")
    assert seen == "reset" and t < 0.6  # a reset after one-way latency
    assert _peer_view("crash")[0] == "silence"
    assert _peer_view("pause")[0] == "silence"


def test_connect_to_killed_refused_crashed_times_out_paused_accepts_late():
    sim = Simulation(seed=6, net=NetConfig(connect_timeout=5.0))
    sim.add_node("n1", ip="10.0.0.1", init=lambda: echo_app.serve("0.0.0.0", 7000))
    c1 = sim.add_node("c1", ip="10.0.0.2")

    async def attempt():
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        try:
            await asyncio.open_connection("n1", 7000)
            return "connected", loop.time() - t0
        except ConnectionRefusedError:
            return "refused", loop.time() - t0
        except TimeoutError:
            return "timeout", loop.time() - t0

    async def main():
        await asyncio.sleep(0.1)
        sim.kill("n1")
        refused = await c1.spawn(attempt())
        sim.crash("n1")
        timed_out = await c1.spawn(attempt())
        sim.restart("n1")
        await asyncio.sleep(0.1)
        sim.pause("n1")
        late = c1.spawn(echo_app.call("n1", 7000, ["p"]))
        await asyncio.sleep(3)
        assert not late.done()  # the kernel accepted; the process is stopped
        sim.resume("n1")
        return refused, timed_out, await late

    refused, timed_out, late = sim.run(main())
    assert refused[0] == "refused" and refused[1] < 0.03  # one round trip
    assert timed_out == ("timeout", 5.0)
    assert late == ["P"]


def test_no_listener_is_refused_after_one_round_trip():
    sim = Simulation(seed=1, net=NetConfig(latency=(0.02, 0.02)))
    sim.add_node("n1", ip="10.0.0.1")
    c1 = sim.add_node("c1", ip="10.0.0.2")

    async def main():
        with pytest.raises(ConnectionRefusedError):
            await c1.spawn(asyncio.open_connection("n1", 1234))
        return sim.now

    assert sim.run(main()) == pytest.approx(0.04)


def test_partition_during_connect_retries_until_heal():
    sim = Simulation(seed=2, net=NetConfig(connect_timeout=30.0))
    sim.add_node("n1", ip="10.0.0.1", init=lambda: echo_app.serve("0.0.0.0", 7000))
    c1 = sim.add_node("c1", ip="10.0.0.2")

    async def main():
        sim.net.partition(["n1"], ["c1"])
        task = c1.spawn(echo_app.call("n1", 7000, ["x"]))
        await asyncio.sleep(10)
        sim.net.heal()
        return await task, sim.now

    replies, t = sim.run(main())
    assert replies == ["X"] and 10.0 < t < 12.0


def test_clog_is_one_way_and_loopback_ignores_faults():
    sim = Simulation(seed=3, net=NetConfig(connect_timeout=3.0))
    n1 = sim.add_node("n1", ip="10.0.0.1", init=lambda: echo_app.serve("0.0.0.0", 7000))
    c1 = sim.add_node("c1", ip="10.0.0.2")

    async def main():
        sim.net.clog("c1", "n1")
        with pytest.raises(TimeoutError):
            await c1.spawn(asyncio.open_connection("n1", 7000))
        sim.net.unclog("c1", "n1")
        sim.net.clog_node("n1")
        local = await n1.spawn(echo_app.call("localhost", 7000, ["self"]))
        local_ip = await n1.spawn(echo_app.call("10.0.0.1", 7000, ["own ip"]))
        sim.net.unclog_node("n1")
        remote = await c1.spawn(echo_app.call("n1", 7000, ["back"]))
        return local, local_ip, remote

    assert sim.run(main()) == (["SELF"], ["OWN IP"], ["BACK"])


def test_drain_blocks_at_the_high_water_mark_until_the_reader_reads():
    sim = Simulation(seed=1, net=NetConfig(high_water_bytes=64 * 1024, low_water_bytes=16 * 1024))
    release = asyncio.Event()
    received = []

    async def slow_server():
        async def handle(reader, writer):
            await release.wait()
            while chunk := await reader.read(65536):
                received.append(len(chunk))

        server = await asyncio.start_server(handle, "0.0.0.0", 7000)
        await server.serve_forever()

    sim.add_node("n1", ip="10.0.0.1", init=slow_server)
    c1 = sim.add_node("c1", ip="10.0.0.2")

    async def writer_task():
        _, writer = await asyncio.open_connection("n1", 7000)
        for _ in range(64):
            writer.write(b"x" * 16384)
            await writer.drain()
        writer.close()
        return asyncio.get_running_loop().time()

    async def main():
        task = c1.spawn(writer_task())
        await asyncio.sleep(30)
        blocked = not task.done()
        release.set()
        finished = await task
        await asyncio.sleep(1)
        return blocked, finished

    blocked, finished = sim.run(main())
    assert blocked  # 1 MiB cannot be written while nobody reads
    assert finished > 30
    assert sum(received) == 64 * 16384


def test_connection_and_node_limits():
    sim = Simulation(seed=1)

    async def idle_server():
        server = await asyncio.start_server(lambda r, w: None, "0.0.0.0", 7000)
        await server.serve_forever()

    sim.add_node("n1", ip="10.0.0.1", init=idle_server)
    c1 = sim.add_node("c1", ip="10.0.0.2")

    async def open_many():
        conns = []
        with pytest.raises(OSError) as info:
            for _ in range(2000):
                conns.append(await asyncio.open_connection("n1", 7000))
        return len(conns), info.value.errno

    async def main():
        return await c1.spawn(open_many())

    count, err = sim.run(main())
    assert count == 1024
    import errno

    assert err == errno.EMFILE

    big = Simulation()
    for i in range(100):
        big.add_node(f"n{i}", ip=f"10.1.0.{i + 1}")
    with pytest.raises(detsim.SimulationError, match="at most 100 nodes"):
        big.add_node("one-too-many")


def test_names_resolve_and_unknown_names_fail():
    sim = Simulation(seed=1)
    n1 = sim.add_node("n1", ip="10.0.0.1")

    async def lookups():
        loop = asyncio.get_running_loop()
        by_name = await loop.getaddrinfo("n1", 80, type=socket.SOCK_STREAM)
        blocking = socket.gethostbyname("n1")
        with pytest.raises(socket.gaierror):
            await loop.getaddrinfo("no-such-host.example", 80)
        return by_name[0][4], blocking

    async def main():
        return await n1.spawn(lookups())

    assert sim.run(main()) == (("10.0.0.1", 80), "10.0.0.1")


def test_nothing_reaches_a_real_socket():
    sim = Simulation(seed=1)
    n1 = sim.add_node("n1", ip="10.0.0.1")

    async def sneaky():
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        assert type(s).__module__ == "detsim.sim.net.sockets"
        with pytest.raises(detsim.SimulationError, match="blocking"):
            s.connect(("93.184.216.34", 80))
        with pytest.raises(detsim.SimulationError, match="blocking"):
            socket.create_connection(("10.0.0.1", 80))
        with pytest.raises(detsim.SimulationError):
            await asyncio.get_running_loop().create_connection(
                asyncio.Protocol, "10.0.0.1", 80, ssl=True
            )
        return "ok"

    async def main():
        with pytest.raises(detsim.SimulationError, match="supervisor"):
            await asyncio.open_connection("n1", 80)
        return await n1.spawn(sneaky())

    assert sim.run(main()) == "ok"
    assert socket.socket.__module__ == "socket"  # restored after the run


def test_address_in_use_and_bind_errors():
    sim = Simulation(seed=1)
    n1 = sim.add_node("n1", ip="10.0.0.1")

    async def binds():
        await asyncio.start_server(lambda r, w: None, "0.0.0.0", 7000)
        with pytest.raises(OSError, match="in use"):
            await asyncio.start_server(lambda r, w: None, "10.0.0.1", 7000)
        with pytest.raises(OSError, match="assign"):
            await asyncio.start_server(lambda r, w: None, "10.0.0.77", 7001)
        server = await asyncio.start_server(lambda r, w: None, "0.0.0.0", 0)
        return server.sockets[0].getsockname()

    async def main():
        return await n1.spawn(binds())

    ip, port = sim.run(main())
    assert ip == "10.0.0.1" and port >= 32768
