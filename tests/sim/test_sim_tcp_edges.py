"""TCP edge cases: restarts while held, half-close, data into a closed socket, handshakes cut."""

from __future__ import annotations

import asyncio

import echo_app
import pytest

from detsim import NetConfig, Simulation, SimulationError
from detsim.sim.net import tcp


def test_a_peer_that_reboots_while_segments_are_held_answers_with_a_reset():
    sim = Simulation(seed=1, net=NetConfig(stream_timeout=300.0))
    sim.add_node("n1", ip="10.0.0.1", init=lambda: echo_app.serve("0.0.0.0", 7000))
    c1 = sim.add_node("c1", ip="10.0.0.2")

    async def client():
        reader, writer = await asyncio.open_connection("n1", 7000)
        writer.write(b"one\n")
        await reader.readline()
        await asyncio.sleep(1)  # n1 crashes meanwhile
        writer.write(b"two\n")  # held: the host is off
        try:
            await reader.readline()
        except ConnectionResetError:
            return asyncio.get_running_loop().time()
        return None

    async def main():
        task = c1.spawn(client())
        await asyncio.sleep(0.5)
        sim.crash("n1")
        await asyncio.sleep(10)
        assert not task.done()  # silence while the host is off
        sim.restart("n1")  # the new process knows nothing of the old connection: RST
        return await task

    t = sim.run(main())
    assert t is not None and 10.5 < t < 10.6


def test_half_close_lets_the_server_answer_after_eof():
    sim = Simulation(seed=2)

    async def server():
        async def handle(reader, writer):
            data = await reader.read()  # to EOF
            writer.write(data[::-1])
            await writer.drain()
            writer.close()

        srv = await asyncio.start_server(handle, "0.0.0.0", 7000)
        await srv.serve_forever()

    sim.add_node("n1", ip="10.0.0.1", init=server)
    c1 = sim.add_node("c1", ip="10.0.0.2")

    async def client():
        reader, writer = await asyncio.open_connection("n1", 7000)
        writer.write(b"abc")
        writer.write(b"def")
        writer.write_eof()
        reply = await reader.read()
        writer.close()
        return reply

    async def main():
        return await c1.spawn(client())

    assert sim.run(main()) == b"fedcba"


def test_data_sent_into_a_closed_socket_resets_the_sender():
    sim = Simulation(seed=3)

    async def server():
        async def handle(reader, writer):
            writer.close()  # hang up at once

        srv = await asyncio.start_server(handle, "0.0.0.0", 7000)
        await srv.serve_forever()

    sim.add_node("n1", ip="10.0.0.1", init=server)
    c1 = sim.add_node("c1", ip="10.0.0.2")

    async def client():
        reader, writer = await asyncio.open_connection("n1", 7000)
        assert await reader.read() == b""  # the server's FIN
        writer.write(b"late\n")  # into the closed socket: RST back
        await asyncio.sleep(1)
        with pytest.raises(ConnectionResetError):
            writer.write(b"again\n")
            await writer.drain()
        return "reset"

    async def main():
        return await c1.spawn(client())

    assert sim.run(main()) == "reset"
    assert "rst" in [e["kind"] for e in sim.events]


def test_killing_the_client_during_the_handshake_resets_the_server_side():
    sim = Simulation(seed=4, net=NetConfig(latency=(0.05, 0.05)))
    accepted = []

    async def server():
        async def handle(reader, writer):
            accepted.append(True)
            try:
                await reader.read()
            except ConnectionResetError:
                accepted.append("reset")

        srv = await asyncio.start_server(handle, "0.0.0.0", 7000)
        await srv.serve_forever()

    sim.add_node("n1", ip="10.0.0.1", init=server)
    c1 = sim.add_node("c1", ip="10.0.0.2")

    async def main():
        c1.spawn(asyncio.open_connection("n1", 7000))
        await asyncio.sleep(0.07)  # the SYN has arrived, the SYN-ACK is on its way back
        sim.kill("c1")
        await asyncio.sleep(1)
        return list(accepted)

    assert sim.run(main()) == [True, "reset"]


def test_a_killed_server_resets_its_clients_and_its_port_is_free_after_restart():
    sim = Simulation(seed=5)
    sim.add_node("n1", ip="10.0.0.1", init=lambda: echo_app.serve("0.0.0.0", 7000))
    c1 = sim.add_node("c1", ip="10.0.0.2")

    async def main():
        first = await c1.spawn(echo_app.call("n1", 7000, ["a"]))
        for _ in range(3):  # the same port is bound again at every boot
            sim.restart("n1")
            await asyncio.sleep(0.1)
        second = await c1.spawn(echo_app.call("n1", 7000, ["b"]))
        return first, second

    assert sim.run(main()) == (["A"], ["B"])


def test_a_server_keeps_only_its_open_clients_after_3000_connections():
    sim = Simulation(seed=6)
    servers = []

    async def server():
        srv = await asyncio.start_server(echo_app.handle, "0.0.0.0", 7000)
        servers.append(srv)
        await srv.serve_forever()

    sim.add_node("n1", ip="10.0.0.1", init=server)
    c1 = sim.add_node("c1", ip="10.0.0.2")

    async def main():
        for i in range(3_000):
            assert await c1.spawn(echo_app.call("n1", 7000, [f"c{i}"])) == [f"C{i}"]
        await asyncio.sleep(1)  # the last server-side close
        held = len(servers[0]._clients)  # the table that grew by one per connection
        _, writer = await c1.spawn(asyncio.open_connection("n1", 7000))
        await asyncio.sleep(1)
        open_now = len(servers[0]._clients)
        writer.close()
        return held, open_now

    assert sim.run(main()) == (0, 1)


def test_acknowledgements_in_flight_are_bounded_with_a_clear_error(monkeypatch):
    # Acknowledgements come back 100 s late while a writer ignores drain() and its segments
    # arrive one at a time: each delivery leaves one acknowledgement on its way back.
    bound = 1_000
    monkeypatch.setattr(tcp, "MAX_SEGMENTS_IN_FLIGHT", bound, raising=False)
    sim = Simulation(seed=7, net=NetConfig(latency=(0.0005, 0.0005)))
    pipes = []

    async def sink():
        async def handle(reader, writer):
            while await reader.read(65536):
                pass

        srv = await asyncio.start_server(handle, "0.0.0.0", 7000)
        await srv.serve_forever()

    sim.add_node("n1", ip="10.0.0.1", init=sink)
    c1 = sim.add_node("c1", ip="10.0.0.2")

    async def writer():
        _, w = await asyncio.open_connection("n1", 7000)
        pipes.append(w.transport._ep.out)
        sim.net.set_latency(100.0, 100.0, src="n1")
        with pytest.raises(SimulationError, match=r"unacknowledged.*ignoring drain"):
            for _ in range(2 * bound):
                w.write(b"x")
                await asyncio.sleep(0.001)
        return len(pipes[0].acks)

    async def main():
        return await c1.spawn(writer())

    assert bound * 0.9 < sim.run(main()) <= bound


def test_the_in_flight_bound_is_above_what_a_drain_respecting_writer_can_reach():
    # A writer that respects drain() has at most high_water_bytes + one write unacknowledged,
    # at least one byte per segment: the bound must not fail it under the default marks.
    assert NetConfig().high_water_bytes + 1 < tcp.MAX_SEGMENTS_IN_FLIGHT


@pytest.mark.parametrize("kill_after_s", [0.001, 0.01])
def test_a_reset_after_the_syn_ack_before_the_client_runs_fails_its_connect(kill_after_s):
    """The SYN-ACK completes the connect while the client's host is paused; the server is then
    killed and its RST resets the client's end before the connecting task runs: the connect
    fails with ConnectionResetError and frees the endpoint (the simulator asserted instead)."""

    async def idle(reader, writer):
        await asyncio.sleep(100)

    async def server():
        srv = await asyncio.start_server(idle, "0.0.0.0", 7000)
        await srv.serve_forever()

    sim = Simulation(seed=1, net=NetConfig(latency=(0.01, 0.01)))
    sim.add_node("n1", ip="10.0.0.1", init=server)
    c1 = sim.add_node("c1", ip="10.0.0.2")

    async def main():
        task = c1.spawn(asyncio.open_connection("n1", 7000))
        await asyncio.sleep(0.015)  # the SYN has arrived; the SYN-ACK arrives at 0.02
        sim.pause(c1)
        await asyncio.sleep(kill_after_s)
        sim.kill("n1")
        await asyncio.sleep(0.1)
        sim.resume(c1)
        with pytest.raises(ConnectionResetError):
            await task
        return len(c1.boot.endpoints)

    assert sim.run(main()) == 0


def _refused_while_paused_then_killed() -> None:
    sim = Simulation(seed=1, net=NetConfig(latency=(0.01, 0.01)))
    sim.add_node("n1", ip="10.0.0.1")  # no listener: the SYN is refused
    c1 = sim.add_node("c1", ip="10.0.0.2")

    async def main():
        c1.spawn(asyncio.open_connection("n1", 7000))
        await asyncio.sleep(0.005)
        sim.pause(c1)
        await asyncio.sleep(0.1)  # the refusal arrives at 0.02, while c1 is paused
        sim.kill(c1)
        await asyncio.sleep(0.1)

    sim.run(main())


def test_a_refused_connect_of_a_host_paused_then_killed_logs_nothing(caplog):
    """The refusal reaches a paused client, whose host is then killed: the connecting task never
    runs again, so nothing retrieves the simulator's own connect waiter. That is no program's
    unretrieved exception: asyncio must not log "Future exception was never retrieved"."""
    import gc

    with caplog.at_level("ERROR", logger="asyncio"):
        _refused_while_paused_then_killed()
        gc.collect()
    assert "never retrieved" not in caplog.text
