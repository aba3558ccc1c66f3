"""TcpStack on its own: the stack driven directly (connect, attach, send, write_eof, close,
abort), with each end's `TcpState` and what each end's protocol observed asserted.

Latency is fixed (`LAT_S` each way) so every arrival time is exact in virtual time.
"""

from __future__ import annotations

import asyncio
import errno
from typing import Any

import pytest

from detsim import NetConfig, Simulation
from detsim.sim.net import tcp
from detsim.sim.net.tcp import TcpEvent, TcpStack, TcpState

LAT_S = 0.01
PORT = 7000
SERVER_IP = "10.0.0.1"


class Recorder(asyncio.Protocol):
    """A protocol that writes down every callback it gets, in order."""

    def __init__(self, keep_open_on_eof: bool = True) -> None:
        self.keep_open_on_eof = keep_open_on_eof
        self.transport: Any = None
        self.events: list[Any] = []

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.events.append("made")

    def data_received(self, data: bytes) -> None:
        self.events.append(("data", data))

    def eof_received(self) -> bool:
        self.events.append("eof")
        return self.keep_open_on_eof

    def connection_lost(self, exc: Exception | None) -> None:
        self.events.append(("lost", None if exc is None else type(exc).__name__))

    @property
    def ep(self) -> tcp.Endpoint:
        return self.transport._ep

    def received(self) -> bytes:
        return b"".join(e[1] for e in self.events if isinstance(e, tuple) and e[0] == "data")

    def lost(self) -> list[Any]:
        return [e[1] for e in self.events if isinstance(e, tuple) and e[0] == "lost"]


class World:
    """Two nodes, a server (n1) whose accepted protocols are Recorders, a client node (c1)."""

    def __init__(self, seed: int = 1, keep_open_on_eof: bool = True, **net: Any) -> None:
        self.sim = Simulation(seed=seed, net=NetConfig(latency=(LAT_S, LAT_S), **net))
        self.n1 = self.sim.add_node("n1", ip=SERVER_IP)
        self.c1 = self.sim.add_node("c1", ip="10.0.0.2")
        self.accepted: list[Recorder] = []
        self.keep_open_on_eof = keep_open_on_eof
        self.server: Any = None

    @property
    def stack(self) -> TcpStack:
        return self.sim.net.tcp

    def _new_server_protocol(self) -> Recorder:
        proto = Recorder(self.keep_open_on_eof)
        self.accepted.append(proto)
        return proto

    async def listen(self) -> None:
        self.server = await self.n1.spawn(
            self.stack.create_server(self._new_server_protocol, "0.0.0.0", PORT)
        )

    async def dial(self, ip: str = SERVER_IP, port: int = PORT) -> Recorder:
        """Connect from c1 and attach a Recorder, as `create_connection` does."""

        async def connect_and_attach() -> Recorder:
            ep = await self.stack.connect(ip, port)
            proto = Recorder(self.keep_open_on_eof)
            self.stack.attach(ep, proto)
            return proto

        return await self.c1.spawn(connect_and_attach())

    async def connected(self) -> tuple[Recorder, Recorder]:
        await self.listen()
        client = await self.dial()
        await asyncio.sleep(LAT_S / 10)  # the server's accept callback has run
        return client, self.accepted[-1]

    def client_endpoints(self) -> list[tcp.Endpoint]:
        boot = self.c1.boot
        assert boot is not None
        return [ep for ep in boot.endpoints.values() if isinstance(ep, tcp.Endpoint)]


def test_the_handshake_takes_one_round_trip_and_each_end_has_its_own_state():
    w = World()

    async def main():
        await w.listen()
        dialing = asyncio.ensure_future(w.dial())
        await asyncio.sleep(LAT_S / 2)  # the SYN is on its way
        (client_ep,) = w.client_endpoints()
        syn_in_flight = (client_ep.state, len(w.accepted))
        await asyncio.sleep(LAT_S)  # the SYN arrived: the server end exists; SYN-ACK on its way
        syn_ack_in_flight = (client_ep.state, w.accepted[0].ep.state)
        client = await dialing
        return syn_in_flight, syn_ack_in_flight, client.ep is client_ep, client_ep.state, w.sim.now

    syn, syn_ack, same_ep, final, t = w.sim.run(main())
    assert syn == (TcpState.CONNECTING, 0)
    assert syn_ack == (TcpState.CONNECTING, TcpState.ESTABLISHED)
    assert same_ep and final is TcpState.ESTABLISHED
    assert t == pytest.approx(2 * LAT_S)


def test_writes_arrive_in_order_one_latency_later():
    w = World()

    async def main():
        client, server = await w.connected()
        for chunk in (b"one ", b"two ", b"three"):
            client.transport.write(chunk)
        await asyncio.sleep(LAT_S / 2)
        early = server.received()
        await asyncio.sleep(LAT_S)
        return early, server.received()

    early, late = w.sim.run(main())
    assert early == b""  # nothing before one latency
    assert late == b"one two three"


def test_half_close_each_way_then_close():
    w = World()

    async def main():
        client, server = await w.connected()
        states = []
        client.transport.write(b"question")
        w.stack.write_eof(client.ep)
        states.append((client.ep.state, server.ep.state))
        with pytest.raises(RuntimeError, match="write_eof"):
            client.transport.write(b"more")
        await asyncio.sleep(2 * LAT_S)  # data then FIN arrived
        states.append((client.ep.state, server.ep.state))
        server.transport.write(b"answer")  # a half-closed peer still writes
        server.transport.write_eof()
        await asyncio.sleep(2 * LAT_S)
        states.append((client.ep.state, server.ep.state))
        client.transport.close()
        server.transport.close()
        client.transport.write(b"after close")  # ignored, as asyncio does
        await asyncio.sleep(2 * LAT_S)
        states.append((client.ep.state, server.ep.state))
        return states, client.events, server.events

    states, client_events, server_events = w.sim.run(main())
    S = TcpState
    assert states == [
        (S.HALF_CLOSED_LOCAL, S.ESTABLISHED),
        (S.HALF_CLOSED_LOCAL, S.HALF_CLOSED_REMOTE),
        (S.HALF_CLOSED_BOTH, S.HALF_CLOSED_BOTH),
        (S.CLOSED, S.CLOSED),
    ]
    assert server_events == ["made", ("data", b"question"), "eof", ("lost", None)]
    assert client_events == ["made", ("data", b"answer"), "eof", ("lost", None)]


def test_eof_received_returning_false_closes_that_end():
    w = World(keep_open_on_eof=False)

    async def main():
        client, server = await w.connected()
        client.transport.write_eof()
        await asyncio.sleep(LAT_S * 1.5)  # the server got the FIN and closed: its FIN is coming
        mid = (client.ep.state, server.ep.state)
        await asyncio.sleep(LAT_S)
        return mid, (client.ep.state, server.ep.state), client.events, server.events

    mid, end, client_events, server_events = w.sim.run(main())
    assert mid == (TcpState.HALF_CLOSED_LOCAL, TcpState.CLOSED)
    # The client's eof_received also says close: both ends closed gracefully.
    assert end == (TcpState.CLOSED, TcpState.CLOSED)
    assert server_events == ["made", "eof", ("lost", None)]
    assert client_events == ["made", "eof", ("lost", None)]


def test_abort_resets_the_peer_after_one_latency_and_drops_unsent_data():
    w = World()

    async def main():
        client, server = await w.connected()
        client.transport.write(b"never delivered")
        client.transport.abort()
        aborted = (client.ep.state, server.ep.state)
        await asyncio.sleep(LAT_S * 1.5)
        return aborted, server.ep.state, client.events, server.events

    aborted, server_state, client_events, server_events = w.sim.run(main())
    assert aborted == (TcpState.ABORTED, TcpState.ESTABLISHED)
    assert server_state is TcpState.RESET
    assert client_events == ["made", ("lost", None)]
    assert server_events == ["made", ("lost", "ConnectionResetError")]


def test_no_listener_is_refused_after_one_round_trip_and_frees_the_fd():
    w = World()

    async def main():
        dialing = asyncio.ensure_future(w.dial(port=PORT + 1))
        await asyncio.sleep(LAT_S / 2)
        (ep,) = w.client_endpoints()
        with pytest.raises(ConnectionRefusedError) as info:
            await dialing
        return ep.state, info.value.errno, w.sim.now, w.client_endpoints()

    state, err, t, left = w.sim.run(main())
    assert state is TcpState.FAILED and err == errno.ECONNREFUSED
    assert t == pytest.approx(2 * LAT_S)
    assert left == []


def test_an_unreachable_host_times_out_at_connect_timeout():
    w = World(connect_timeout=3.0)

    async def main():
        await w.listen()
        w.sim.net.partition(["n1"], ["c1"])
        dialing = asyncio.ensure_future(w.dial())
        await asyncio.sleep(LAT_S / 2)
        (ep,) = w.client_endpoints()
        with pytest.raises(TimeoutError):
            await dialing
        return ep.state, w.sim.now, len(w.accepted)

    state, t, accepted = w.sim.run(main())
    assert state is TcpState.FAILED and accepted == 0
    assert t == pytest.approx(3.0)


def test_a_cut_holds_segments_and_heal_delivers_them():
    w = World(stream_timeout=60.0)

    async def main():
        client, server = await w.connected()
        w.sim.net.partition(["n1"], ["c1"])
        client.transport.write(b"held")
        await asyncio.sleep(10)
        pipe = client.ep.out
        during = (server.received(), pipe.held_since is not None, client.ep.state)
        w.sim.net.heal()
        healed_at = w.sim.now
        await asyncio.sleep(LAT_S * 1.5)
        return during, server.received(), healed_at, server.ep.state

    during, after, healed_at, state = w.sim.run(main())
    assert during == (b"", True, TcpState.ESTABLISHED)
    assert after == b"held" and state is TcpState.ESTABLISHED
    assert [e["kind"] for e in w.sim.events].count("hold") == 1
    (recv,) = [e for e in w.sim.events if e["kind"] == "recv"]
    assert recv["t"] == pytest.approx(healed_at + LAT_S)  # retransmitted: one fresh latency


def test_held_past_stream_timeout_resets_both_ends_and_frees_both_tables():
    w = World(stream_timeout=20.0)

    async def main():
        client, server = await w.connected()
        w.sim.net.partition(["n1"], ["c1"])
        client.transport.write(b"held too long")
        cut_at = w.sim.now
        await asyncio.sleep(25)
        return client, server, cut_at

    client, server, cut_at = w.sim.run(main())
    assert (client.ep.state, server.ep.state) == (TcpState.RESET, TcpState.RESET)
    assert client.lost() == server.lost() == ["ConnectionResetError"]
    assert w.client_endpoints() == [] and w.server.open_clients() == 0
    (timeout,) = [e for e in w.sim.events if e["kind"] == "stream_timeout"]
    assert timeout["t"] == pytest.approx(cut_at + LAT_S + 20.0)  # held at arrival, then 20 s


def test_kill_resets_the_peer_a_crash_leaves_it_established():
    def after(fault: str) -> tuple[TcpState, TcpState, list[Any], list[Any]]:
        w = World()

        async def main():
            client, server = await w.connected()
            getattr(w.sim, fault)("n1")
            await asyncio.sleep(LAT_S * 1.5)
            return client.ep.state, server.ep.state, client.events, server.events

        return w.sim.run(main())

    client_state, server_state, client_events, server_events = after("kill")
    assert (client_state, server_state) == (TcpState.RESET, TcpState.GONE)
    assert client_events == ["made", ("lost", "ConnectionResetError")]
    assert server_events == ["made"]  # a dead process gets no callbacks
    client_state, server_state, client_events, _ = after("crash")
    assert (client_state, server_state) == (TcpState.ESTABLISHED, TcpState.GONE)
    assert client_events == ["made"]  # a powered-off host sends nothing


def test_data_into_a_closed_socket_resets_the_sender():
    w = World()

    async def main():
        client, server = await w.connected()
        server.transport.close()
        await asyncio.sleep(LAT_S * 1.5)
        fin_seen = client.ep.state
        client.transport.write(b"late")  # to a closed socket: RST back
        await asyncio.sleep(2 * LAT_S + LAT_S / 2)
        return fin_seen, client.ep.state, client.events

    fin_seen, state, events = w.sim.run(main())
    assert fin_seen is TcpState.HALF_CLOSED_REMOTE
    assert state is TcpState.RESET
    assert events == ["made", "eof", ("lost", "ConnectionResetError")]


def test_a_connect_abandoned_after_the_syn_arrived_resets_the_server_end():
    w = World()

    async def main():
        await w.listen()
        dialing = w.c1.spawn(w.stack.connect(SERVER_IP, PORT))
        await asyncio.sleep(LAT_S * 1.5)  # the server end exists; the SYN-ACK is coming
        (ep,) = w.client_endpoints()
        dialing.cancel()
        await asyncio.sleep(LAT_S / 10)
        abandoned = ep.state
        await asyncio.sleep(2 * LAT_S)
        return abandoned, w.accepted[0].ep.state, w.accepted[0].events

    abandoned, server_state, server_events = w.sim.run(main())
    assert abandoned is TcpState.FAILED
    assert server_state is TcpState.RESET
    assert server_events == ["made", ("lost", "ConnectionResetError")]


def test_a_server_forgets_each_client_as_it_closes():
    w = World()

    async def main():
        await w.listen()
        counts = []
        for _ in range(5):
            client = await w.dial()
            await asyncio.sleep(LAT_S / 10)
            counts.append(w.server.open_clients())
            client.transport.close()  # the server's Recorder keeps its end half-open
        await asyncio.sleep(2 * LAT_S)
        counts.append(w.server.open_clients())
        for server in w.accepted:
            server.transport.close()
        counts.append(w.server.open_clients())
        return counts

    assert w.sim.run(main()) == [1, 2, 3, 4, 5, 5, 0]


# --- the table itself --------------------------------------------------------------------------


def test_terminal_states_have_no_way_out_and_every_state_is_reachable():
    sources = {state for state, _ in tcp.TRANSITIONS}
    assert not sources & tcp.TERMINAL_STATES
    assert set(tcp.TRANSITIONS.values()) | {TcpState.CONNECTING} == set(TcpState)
    # Only an attached (open) endpoint can be closed or aborted by its owner.
    closable = {s for (s, e) in tcp.TRANSITIONS if e in (TcpEvent.CLOSE, TcpEvent.ABORT)}
    assert closable == tcp.OPEN_STATES


class _Boot:
    """What `transition` needs of a boot: its fd table."""

    def __init__(self) -> None:
        self.endpoints: dict[int, Any] = {}


def _endpoint(state: TcpState) -> tcp.Endpoint:
    born = state if state in (TcpState.CONNECTING, TcpState.ESTABLISHED) else TcpState.CONNECTING
    addrs = (("10.0.0.2", 40000), (SERVER_IP, PORT))
    ep = tcp.Endpoint(1, _Boot(), None, *addrs, None, born)  # type: ignore[arg-type]
    ep.state = state
    return ep


@pytest.mark.parametrize(
    ("state", "event"),
    [
        (TcpState.HALF_CLOSED_REMOTE, TcpEvent.FIN_ARRIVED),  # a second FIN
        (TcpState.HALF_CLOSED_LOCAL, TcpEvent.WRITE_EOF),  # a second write_eof
        (TcpState.CONNECTING, TcpEvent.CLOSE),  # a close before the handshake
        (TcpState.CONNECTING, TcpEvent.FIN_ARRIVED),  # data before the handshake
        (TcpState.CLOSED, TcpEvent.RST_ARRIVED),  # callers drop events at terminal ends
        (TcpState.HALF_CLOSED_BOTH, TcpEvent.SYN_ACK),
    ],
)
def test_an_impossible_transition_is_an_assertion_failure(state, event):
    ep = _endpoint(state)
    with pytest.raises(AssertionError, match=f"impossible TCP transition: {state.name}"):
        tcp.transition(ep, event)
    assert ep.state is state


def test_a_legal_transition_moves_and_a_terminal_one_leaves_the_fd_table():
    ep = _endpoint(TcpState.ESTABLISHED)
    ep.boot.endpoints[ep.serial] = ep
    assert tcp.transition(ep, TcpEvent.WRITE_EOF) is TcpState.HALF_CLOSED_LOCAL
    assert ep.boot.endpoints == {ep.serial: ep}
    assert tcp.transition(ep, TcpEvent.RST_ARRIVED) is TcpState.RESET
    assert ep.boot.endpoints == {} and ep.closed


def test_a_reset_during_the_handshake_fails_the_connect_at_once():
    # The SYN reached n1 (its end exists); n1 is killed before the SYN-ACK is back, and its
    # RST overtakes the SYN-ACK: a real client in SYN-SENT is refused on the spot.
    w = World(connect_timeout=10.0)

    async def main():
        await w.listen()
        dialing = asyncio.ensure_future(w.dial())
        await asyncio.sleep(LAT_S * 1.5)  # SYN-ACK due at 2 * LAT_S
        (ep,) = w.client_endpoints()
        w.sim.net.set_latency(LAT_S / 10, LAT_S / 10, src="n1")
        w.sim.kill("n1")
        with pytest.raises(ConnectionRefusedError):
            await dialing
        return ep.state, w.sim.now

    state, t = w.sim.run(main())
    assert state is TcpState.RESET
    assert t == pytest.approx(LAT_S * 1.6)
