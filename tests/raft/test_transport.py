"""The Raft transport inside the simulator: exchange, one connection per pair, reconnects after
kill, crash and partitions, authentication, and bad input on the Raft port (each closes only
that connection, is counted, and the node keeps exchanging with its good peers)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

import detsim
from detsim import Simulation
from detsim.raft import codec, transport
from detsim.raft.core.messages import AppendRequest, Entry, Heartbeat, Message
from detsim.raft.transport import (
    INCARNATION_BYTES,
    MAX_FRAME_BYTES,
    MAX_PEER_CONNECTIONS,
    FrameTooLargeError,
    Transport,
    dial_handshake,
    frame,
    read_frame,
)

SECRET = b"cluster secret"
PORT = 7000
SEEDS = [1, 2, 3]


@dataclasses.dataclass
class World:
    sim: Simulation
    ids: list[str]
    transports: dict[str, Transport] = dataclasses.field(default_factory=dict)
    inbox: dict[str, list[Message]] = dataclasses.field(default_factory=dict)
    nodes: dict[str, Any] = dataclasses.field(default_factory=dict)

    async def on(self, node: str, fn: Callable[[], Any]) -> Any:
        """Run `fn` on the node (a transport is only touched from its own node)."""

        async def call() -> Any:
            return fn()

        return await self.nodes[node].spawn(call())

    async def send(self, frm: str, to: str, term: int) -> None:
        await self.on(frm, lambda: self.transports[frm].send(Heartbeat(frm, to, term)))

    def terms(self, node: str, frm: str) -> list[int]:
        return [m.term for m in self.inbox[node] if m.frm == frm]

    async def until(self, cond: Callable[[], bool], timeout_s: float = 30.0) -> None:
        """Wait (virtual time) until `cond()` holds; fail after `timeout_s`."""
        deadline = self.sim.now + timeout_s
        while not cond():
            assert self.sim.now < deadline, f"condition not met in {timeout_s} s"
            await asyncio.sleep(0.01)

    def stats(self, node: str) -> transport.TransportStats:
        return self.transports[node].stats


def build(
    sim: Simulation,
    ids: list[str],
    secrets: dict[str, bytes | None] | None = None,
    extra_peers: dict[str, list[str]] | None = None,
) -> World:
    world = World(sim, ids)
    for i, name in enumerate(ids):
        world.inbox[name] = []

        async def init(name: str = name) -> None:
            peers = {p: (p, PORT) for p in ids if p != name}
            peers.update({p: (p, PORT) for p in (extra_peers or {}).get(name, [])})
            secret = SECRET if secrets is None else secrets[name]
            t = Transport(name, ("0.0.0.0", PORT), peers, secret, world.inbox[name].append)
            world.transports[name] = t
            await t.start()

        world.nodes[name] = sim.add_node(name, ip=f"10.0.0.{i + 1}", init=init)
    return world


def exchanged(world: World, a: str, b: str, term: int) -> bool:
    return term in world.terms(b, a) and term in world.terms(a, b)


async def exchange(world: World, a: str, b: str, term: int, timeout_s: float = 30.0) -> None:
    """Both directions deliver a message with `term`, resent every second (the first ones may
    go out on a connection that turns out dead: Raft's own retries do the same)."""
    deadline = world.sim.now + timeout_s
    while not exchanged(world, a, b, term):
        assert world.sim.now < deadline, f"{a} and {b} did not exchange in {timeout_s} s"
        await world.send(a, b, term)
        await world.send(b, a, term)
        with contextlib.suppress(AssertionError):
            await world.until(lambda: exchanged(world, a, b, term), timeout_s=1.0)


@pytest.mark.parametrize("seed", SEEDS)
def test_three_nodes_exchange_over_one_connection_per_pair(seed: int) -> None:
    sim = Simulation(seed=seed)
    world = build(sim, ["n1", "n2", "n3"])

    async def main() -> None:
        await asyncio.sleep(0.1)
        for frm in world.ids:
            for to in world.ids:
                if frm != to:
                    for term in (1, 2, 3):
                        await world.send(frm, to, term)
        await world.until(lambda: all(len(world.inbox[n]) == 6 for n in world.ids), timeout_s=10.0)
        await asyncio.sleep(3.0)  # past the fallback dial delay: no second connection appears
        for n in world.ids:
            peers = [p for p in world.ids if p != n]
            assert world.terms(n, peers[0]) == [1, 2, 3]  # in order, no loss, no duplicates
            assert world.terms(n, peers[1]) == [1, 2, 3]
            t = world.transports[n]
            assert all(t.connected(p) for p in peers)
            assert len(t._conns) == 2, t._conns  # one connection per peer pair
            assert t.stats.messages_received == 6 and t.stats.messages_sent == 6
            bad = {k: v for k, v in t.stats.as_dict().items() if k.startswith(("dropped", "bad"))}
            assert not any(bad.values()), bad

    sim.run(main())


@pytest.mark.parametrize("seed", SEEDS)
def test_a_send_while_the_pump_waits_is_written_at_once_and_order_is_kept(seed: int) -> None:
    """An idle connection takes a frame inside `send` (no loop turn of the pump first: one turn
    per hop of every write, measured in BENCHMARKS.md); frames sent while earlier ones still
    wait queue behind them, so a burst arrives whole and in order."""
    sim = Simulation(seed=seed)
    world = build(sim, ["n1", "n2"])

    def send_now(terms: range) -> tuple[int, int]:
        t = world.transports["n1"]
        before = t.stats.messages_sent
        for term in terms:
            t.send(Heartbeat("n1", "n2", term))
        return t.stats.messages_sent - before, t.queued("n2")

    async def main() -> None:
        await exchange(world, "n1", "n2", 1)
        await asyncio.sleep(0.5)  # the pump is parked, nothing in flight
        assert await world.on("n1", lambda: send_now(range(10, 11))) == (1, 0)
        written, queued = await world.on("n1", lambda: send_now(range(11, 61)))
        assert written + queued == 50  # the first frame may still be in the socket: queued
        await world.until(lambda: world.terms("n2", "n1")[-1:] == [60])
        assert world.terms("n2", "n1") == [1, *range(10, 61)]  # none lost, none reordered

    sim.run(main())


@pytest.mark.parametrize("seed", SEEDS)
def test_simultaneous_dials_settle_on_the_smaller_ids_connection(seed: int) -> None:
    # Both sides dial at once (the fallback delay is zero): every pair still ends with one
    # connection, the same at both ends, and messages flow over it.
    sim = Simulation(seed=seed)
    world = build(sim, ["n1", "n2"])

    async def main() -> None:
        await exchange(world, "n1", "n2", 1)
        await asyncio.sleep(3.0)
        a, b = world.transports["n1"], world.transports["n2"]
        assert len(a._conns) == 1 and len(b._conns) == 1
        assert a._peers["n2"].conn is not None and b._peers["n1"].conn is not None
        assert a._peers["n2"].conn.shake is not None
        assert a._peers["n2"].conn.shake.dialer_id == "n1"
        await exchange(world, "n1", "n2", 2)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(transport, "FALLBACK_DIAL_DELAY_S", 0.0)
        sim.run(main())


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("how", ["kill", "crash"])
def test_reconnect_after_a_peer_restarts(seed: int, how: str) -> None:
    sim = Simulation(seed=seed)
    world = build(sim, ["n1", "n2", "n3"])

    async def main() -> None:
        await exchange(world, "n1", "n2", 1)
        await exchange(world, "n2", "n3", 1)
        getattr(sim, how)("n2")
        await asyncio.sleep(1.0)
        sim.restart("n2")
        # After a crash n1 and n3 still hold half-open connections to n2's old process: the
        # restarted n2's new incarnation (or the keepalive) must replace them.
        await exchange(world, "n1", "n2", 2)
        await exchange(world, "n2", "n3", 2)
        await exchange(world, "n1", "n3", 2)

    sim.run(main())


@pytest.mark.parametrize("seed", SEEDS)
def test_reconnect_after_a_partition_heals(seed: int) -> None:
    sim = Simulation(seed=seed)
    world = build(sim, ["n1", "n2", "n3"])

    async def main() -> None:
        await exchange(world, "n1", "n2", 1)
        sim.net.partition(["n1"], ["n2", "n3"])
        await asyncio.sleep(60.0)  # past the idle and stream timeouts: connections are reset
        await world.send("n1", "n2", 2)
        await world.send("n2", "n1", 2)
        await asyncio.sleep(1.0)
        assert 2 not in world.terms("n2", "n1") and 2 not in world.terms("n1", "n2")
        await exchange(world, "n2", "n3", 2)  # the majority side still talks
        sim.net.heal()
        await exchange(world, "n1", "n2", 3)
        await exchange(world, "n1", "n3", 3)
        assert world.stats("n1").idle_timeout + world.stats("n1").connections_lost > 0

    sim.run(main())


@pytest.mark.parametrize("seed", SEEDS)
def test_a_node_with_the_wrong_secret_is_refused_by_both_sides(seed: int) -> None:
    sim = Simulation(seed=seed)
    world = build(sim, ["n1", "n2", "n3"], secrets={"n1": SECRET, "n2": SECRET, "n3": b"wrong"})

    async def main() -> None:
        await exchange(world, "n1", "n2", 1)
        for term in range(2, 12):
            await world.send("n1", "n3", term)
            await world.send("n3", "n1", term)
            await world.send("n2", "n3", term)
            await asyncio.sleep(0.5)
        assert world.inbox["n3"] == []
        assert world.terms("n1", "n3") == [] and world.terms("n2", "n3") == []
        # Whichever side dials, the side holding the right secret sees the wrong MAC.
        assert world.stats("n1").auth_failed > 0 and world.stats("n2").auth_failed > 0
        assert world.stats("n3").auth_failed > 0
        await exchange(world, "n1", "n2", 12)

    sim.run(main())


def test_no_secret_works_and_warns_at_start(caplog: pytest.LogCaptureFixture) -> None:
    sim = Simulation(seed=5)
    world = build(sim, ["n1", "n2"], secrets={"n1": None, "n2": None})

    async def main() -> None:
        await exchange(world, "n1", "n2", 1)

    with caplog.at_level(logging.WARNING, logger="detsim.raft.transport"):
        sim.run(main())
    warnings = [r.getMessage() for r in caplog.records if "no cluster secret" in r.getMessage()]
    assert len(warnings) == 2  # one per node, at start


def test_a_secret_and_no_secret_do_not_connect() -> None:
    sim = Simulation(seed=6)
    world = build(sim, ["n1", "n2"], secrets={"n1": SECRET, "n2": None})

    async def main() -> None:
        for term in range(1, 6):
            await world.send("n1", "n2", term)
            await world.send("n2", "n1", term)
            await asyncio.sleep(1.0)
        assert world.inbox["n1"] == [] and world.inbox["n2"] == []
        assert world.stats("n1").auth_failed > 0

    sim.run(main())


# -- bad input on the Raft port -------------------------------------------------------------


Conn = tuple[asyncio.StreamReader, asyncio.StreamWriter]


async def raw_connect() -> Conn:
    return await asyncio.open_connection("n1", PORT)


async def read_until_closed(reader: asyncio.StreamReader) -> None:
    """Wait until n1 closes the connection (whatever it sent before; a reset counts)."""
    try:
        while await asyncio.wait_for(reader.read(1 << 16), 30.0):
            pass
    except ConnectionError:
        pass


async def authenticated(peer_id: str = "n3") -> Conn:
    """A connection to n1 that passed the handshake as `peer_id` (holding the secret)."""
    reader, writer = await raw_connect()
    await dial_handshake(reader, writer, peer_id, "n1", SECRET, b"\x07" * INCARNATION_BYTES)
    return reader, writer


async def garbage() -> Conn:
    reader, writer = await raw_connect()
    writer.write(b"GET / HTTP/1.1\r\nHost: n1\r\n\r\n")  # read as a 1.2 GB frame length
    return reader, writer


async def garbage_frame() -> Conn:
    reader, writer = await raw_connect()
    writer.write(frame(b"\xc1\xc1\xc1"))  # 0xc1 is never valid msgpack
    return reader, writer


async def truncated_handshake() -> Conn:
    reader, writer = await raw_connect()
    writer.write(frame(codec.packb(["hello", 1, "n3", "n1"]))[:-3])
    writer.write_eof()
    return reader, writer


async def huge_length() -> Conn:
    reader, writer = await authenticated()
    writer.write(b"\x7f\xff\xff\xff")
    return reader, writer


async def truncated_frame() -> Conn:
    reader, writer = await authenticated()
    writer.write(frame(codec.pack_message(Heartbeat("n3", "n1", 1)))[:-2])
    writer.write_eof()
    return reader, writer


async def answer_challenge(mac: Callable[[list[Any]], bytes]) -> Conn:
    """A dialer claiming to be n3 that answers n1's challenge with `mac(transcript)`."""
    reader, writer = await raw_connect()
    incarnation, nonce = b"\x02" * INCARNATION_BYTES, b"\x03" * 32
    writer.write(frame(codec.packb(["hello", 1, "n3", "n1", incarnation, nonce])))
    challenge = codec.unpackb(await read_frame(reader, 4096))
    assert isinstance(challenge, list)
    _, version, _, n1_incarnation, n1_nonce, _ = challenge
    transcript = [version, "n3", "n1", incarnation, n1_incarnation, nonce, n1_nonce]
    writer.write(frame(codec.packb(["auth", mac(transcript)])))
    return reader, writer


async def wrong_secret_hmac() -> Conn:
    return await answer_challenge(lambda t: transport._mac(b"wrong", transport._ROLE_DIALER, t))


async def forged_hmac() -> Conn:
    return await answer_challenge(lambda t: b"\x00" * 32)


async def reflected_hmac() -> Conn:
    # n1's own MAC from the challenge, sent back: the role label makes it worthless.
    return await answer_challenge(lambda t: transport._mac(SECRET, transport._ROLE_ACCEPTOR, t))


async def unknown_message_type() -> Conn:
    reader, writer = await authenticated()
    writer.write(frame(codec.packb([99, "n3", "n1", 1])))
    return reader, writer


async def malformed_message() -> Conn:
    reader, writer = await authenticated()
    writer.write(frame(codec.packb([4, "n3", "n1", -1, 0, b""])))  # a Heartbeat, term -1
    return reader, writer


async def not_msgpack_after_auth() -> Conn:
    reader, writer = await authenticated()
    writer.write(frame(b"\x93\x01"))  # an array of 3 with one item
    return reader, writer


async def unknown_peer() -> Conn:
    # A hello for another node than n1 (a stranger holding the secret would be a member).
    reader, writer = await raw_connect()
    with pytest.raises(transport._ConnError, match="rejected us"):
        await dial_handshake(reader, writer, "n3", "n7", SECRET, b"\x01" * 8)
    return reader, writer


async def unknown_peer_without_the_secret() -> Conn:
    # An id not in n1's table that cannot prove the secret (it skips checking n1's MAC).
    reader, writer = await raw_connect()
    with pytest.raises(transport._ConnError, match="rejected us"):
        await dial_handshake(reader, writer, "mallory", "n1", None, b"\x01" * 8)
    return reader, writer


BAD_INPUTS: list[tuple[Callable[[], Coroutine[Any, Any, Conn]], str]] = [
    (garbage, "frame_too_large"),
    (garbage_frame, "bad_handshake"),
    (truncated_handshake, "truncated_frame"),
    (huge_length, "frame_too_large"),
    (truncated_frame, "truncated_frame"),
    (wrong_secret_hmac, "auth_failed"),
    (forged_hmac, "auth_failed"),
    (reflected_hmac, "auth_failed"),
    (unknown_message_type, "unknown_message_type"),
    (malformed_message, "malformed_frame"),
    (not_msgpack_after_auth, "malformed_frame"),
    (unknown_peer, "unknown_peer"),
    (unknown_peer_without_the_secret, "auth_failed"),
]


@pytest.mark.parametrize("seed", SEEDS[:2])
@pytest.mark.parametrize(("attack", "counter"), BAD_INPUTS, ids=[a.__name__ for a, _ in BAD_INPUTS])
def test_bad_input_closes_that_connection_counts_it_and_the_node_serves_its_peers(
    seed: int, attack: Callable[[], Coroutine[Any, Any, Conn]], counter: str
) -> None:
    sim = Simulation(seed=seed)
    # n3 is a peer of n1 (so an attacker holding the secret can pass as n3), but nothing runs
    # the transport on n3: the attacks come from n3's host.
    world = build(sim, ["n1", "n2"], extra_peers={"n1": ["n3"]})
    evil = sim.add_node("n3", ip="10.0.0.3")

    async def attack_and_watch() -> None:
        reader, _ = await attack()
        await read_until_closed(reader)  # n1 closes it (no timeout is involved: see below)

    async def main() -> None:
        await exchange(world, "n1", "n2", 1)
        before = world.stats("n1").as_dict()
        started = sim.now
        await evil.spawn(attack_and_watch())
        assert sim.now - started < transport.HANDSHAKE_TIMEOUT_S  # closed for the input itself
        after = world.stats("n1").as_dict()
        changed = {k: after[k] - before[k] for k in after if after[k] != before[k]}
        assert changed.pop(counter, None) == 1, changed
        # Besides: n1's own traffic to n2, its dials of n3's host (where nothing listens), and
        # the handshake that the attacks holding the secret passed.
        expected = {"messages_sent", "messages_received", "dial_failures", "connections_accepted"}
        assert set(changed) <= expected, changed
        assert not world.transports["n1"].connected("n3")
        await exchange(world, "n1", "n2", 2)  # the good peer is served as before
        assert world.stats("n2").as_dict()[counter] == 0

    sim.run(main())


def test_a_wrong_sender_is_dropped_and_the_connection_kept() -> None:
    sim = Simulation(seed=3)
    world = build(sim, ["n1", "n2"], extra_peers={"n1": ["n3"]})
    evil = sim.add_node("n3", ip="10.0.0.3")

    async def impersonate() -> None:
        reader, writer = await authenticated("n3")
        writer.write(frame(codec.pack_message(Heartbeat("n2", "n1", 7))))  # claims to be n2
        writer.write(frame(codec.pack_message(Heartbeat("n3", "n9", 8))))  # not for n1
        writer.write(frame(codec.pack_message(Heartbeat("n3", "n1", 9))))  # honest
        await asyncio.sleep(1.0)
        assert not reader.at_eof()  # the connection is kept

    async def main() -> None:
        await exchange(world, "n1", "n2", 1)
        await evil.spawn(impersonate())
        assert world.terms("n1", "n2") == [1]
        assert world.terms("n1", "n3") == [9]
        assert world.stats("n1").dropped_wrong_sender == 1
        assert world.stats("n1").dropped_wrong_recipient == 1

    sim.run(main())


def test_at_most_max_peer_connections_and_stalled_handshakes_time_out() -> None:
    sim = Simulation(seed=4)
    world = build(sim, ["n1", "n2"])
    evil = sim.add_node("n3", ip="10.0.0.3")
    writers: list[asyncio.StreamWriter] = []

    async def flood(count: int) -> None:
        for _ in range(count):
            _, writer = await raw_connect()  # then say nothing
            writers.append(writer)

    async def main() -> None:
        await exchange(world, "n1", "n2", 1)
        assert len(world.transports["n1"]._conns) == 1
        await evil.spawn(flood(MAX_PEER_CONNECTIONS + 20))
        await asyncio.sleep(1.0)
        stats = world.stats("n1")
        assert stats.connections_over_limit == 21  # the 100th connection is the 99th of evil
        assert len(world.transports["n1"]._conns) == MAX_PEER_CONNECTIONS
        await exchange(world, "n1", "n2", 2)  # the established peer is still served
        await asyncio.sleep(transport.HANDSHAKE_TIMEOUT_S)
        assert stats.handshake_timeout == MAX_PEER_CONNECTIONS - 1
        assert len(world.transports["n1"]._conns) == 1

    sim.run(main())


def test_a_full_send_queue_drops_the_oldest_and_counts_them() -> None:
    sim = Simulation(seed=8)
    world = build(sim, ["n1", "n2"])

    async def main() -> None:
        await exchange(world, "n1", "n2", 1)
        sim.kill("n2")
        await asyncio.sleep(1.0)
        for term in range(100, 130):
            await world.send("n1", "n2", term)
        assert world.stats("n1").dropped_queue_full == 30 - 10
        assert world.transports["n1"].queued("n2") == 10
        sim.restart("n2")
        await world.until(lambda: len(world.inbox["n2"]) >= 11)
        assert world.terms("n2", "n1") == [1, *range(120, 130)]  # the newest ten

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(transport, "MAX_SEND_QUEUE_MESSAGES", 10)
        sim.run(main())


def add_node_knowing(
    world: World, name: str, ip: str, peers: list[str], secret: bytes | None
) -> None:
    """A node whose table names `peers` only (e.g. one configured before later members)."""
    world.inbox[name] = []

    async def init() -> None:
        table = {p: (p, PORT) for p in peers}
        t = Transport(name, ("0.0.0.0", PORT), table, secret, world.inbox[name].append)
        world.transports[name] = t
        await t.start()

    world.nodes[name] = world.sim.add_node(name, ip=ip, init=init)


def test_membership_changes_add_and_remove_peers_at_run_time() -> None:
    # No secret: an id not in the table is refused (anyone could claim it).
    sim = Simulation(seed=9)
    world = build(sim, ["n1", "n2"], secrets={"n1": None, "n2": None})
    # n3 starts knowing n1 only; n1 learns of n3 later (a learner added by a conf change).
    add_node_knowing(world, "n3", "10.0.0.3", ["n1"], None)

    async def main() -> None:
        await exchange(world, "n1", "n2", 1)
        await world.send("n3", "n1", 1)
        await asyncio.sleep(2.0)
        assert world.terms("n1", "n3") == []  # n1 refuses an id not in its table
        assert world.stats("n1").unknown_peer > 0
        assert world.transports["n1"].inbound_peers == []
        await world.on("n1", lambda: world.transports["n1"].add_peer("n3", ("n3", PORT)))
        await exchange(world, "n1", "n3", 2)
        await world.on("n1", lambda: world.transports["n1"].remove_peer("n3"))
        await world.send("n1", "n3", 3)
        assert world.stats("n1").dropped_unknown_peer == 1
        await world.until(lambda: not world.transports["n3"].connected("n1"))
        await exchange(world, "n1", "n2", 3)
        await world.on("n1", lambda: world.transports["n1"].set_peers({"n1": ("x", 1)}))
        assert world.transports["n1"].peers == {}
        await asyncio.sleep(1.0)
        assert not world.transports["n1"]._conns

    sim.run(main())


def test_close_cancels_every_task_and_closes_every_connection() -> None:
    sim = Simulation(seed=10)
    world = build(sim, ["n1", "n2", "n3"])

    async def main() -> None:
        await exchange(world, "n1", "n2", 1)
        await exchange(world, "n1", "n3", 1)
        t = world.transports["n1"]
        assert t._tasks
        await world.nodes["n1"].spawn(t.close())
        assert not t._tasks and not t._conns
        await world.nodes["n1"].spawn(t.close())  # twice is fine
        await world.until(lambda: not world.transports["n2"].connected("n1"))
        await world.until(lambda: not world.transports["n3"].connected("n1"))
        await exchange(world, "n2", "n3", 2)

    sim.run(main())


def test_same_seed_same_run() -> None:
    def scenario(sim: Simulation) -> Coroutine[Any, Any, None]:
        world = build(sim, ["n1", "n2", "n3"])

        async def main() -> None:
            await exchange(world, "n1", "n2", 1)
            sim.crash("n2")
            await asyncio.sleep(0.5)
            sim.restart("n2")
            await exchange(world, "n2", "n3", 2)

        return main()

    detsim.check_determinism(scenario, seed=11)


def test_a_message_over_the_frame_bound_is_a_bug_of_the_sender() -> None:
    t = Transport("n1", ("127.0.0.1", 0), {"n2": ("127.0.0.1", 1)}, SECRET, lambda m: None)
    huge = AppendRequest("n1", "n2", 1, 0, 0, (Entry(1, 1, data=bytes(MAX_FRAME_BYTES)),), 0)
    with pytest.raises(FrameTooLargeError, match="AppendRequest to n2"):
        t.send(huge)
    assert t.queued("n2") == 0


def test_a_deliver_callback_that_raises_closes_only_that_connection() -> None:
    sim = Simulation(seed=12)
    world = build(sim, ["n1", "n2", "n3"])

    async def main() -> None:
        await exchange(world, "n1", "n2", 1)
        await exchange(world, "n1", "n3", 1)
        inbox = world.inbox["n1"]

        def fragile(msg: Message) -> None:
            if msg.term == 666:
                raise RuntimeError("driver bug")
            inbox.append(msg)

        world.transports["n1"]._deliver = fragile
        await world.send("n2", "n1", 666)
        await world.until(lambda: world.stats("n1").deliver_errors == 1)
        await exchange(world, "n1", "n3", 2)  # other peers are untouched
        await exchange(world, "n1", "n2", 3)  # and n2 reconnects

    sim.run(main())


@pytest.mark.parametrize("seed", SEEDS)
def test_an_authenticated_stranger_that_dials_in_is_a_peer_over_that_connection(
    seed: int,
) -> None:
    # A joiner configured with the initial members only, and a member added after it (say, the
    # leader) that dials it: with the secret proved, the joiner answers over that connection.
    sim = Simulation(seed=seed)
    world = build(sim, ["n1"])
    add_node_knowing(world, "n0", "10.0.0.3", ["n1"], SECRET)  # the joiner (n0 < n9: we test
    add_node_knowing(world, "n9", "10.0.0.4", ["n0"], SECRET)  # the larger id dialing)

    async def main() -> None:
        await exchange(world, "n9", "n0", 1)
        joiner = world.transports["n0"]
        assert joiner.inbound_peers == ["n9"] and joiner.connected("n9")
        assert joiner.peers == {"n1": ("n1", PORT)}  # the configured table is unchanged
        assert joiner.stats.inbound_peers_added == 1 and joiner.stats.unknown_peer == 0
        # One connection per pair: the joiner's replies went back over the inbound one.
        assert len([c for c in joiner._conns if c.shake and c.shake.peer_id == "n9"]) == 1
        assert world.stats("n9").connections_dialed == 1
        # A membership change at the driver that does not name n9 leaves its connection alone.
        await world.on("n0", lambda: joiner.set_peers({"n1": ("n1", PORT)}))
        await exchange(world, "n9", "n0", 2)
        assert joiner.inbound_peers == ["n9"] and world.stats("n9").connections_dialed == 1
        # One that names it makes it an ordinary peer; its connection is kept.
        await world.on("n0", lambda: joiner.set_peers({"n1": ("n1", PORT), "n9": ("n9", PORT)}))
        assert joiner.inbound_peers == [] and joiner.connected("n9")
        await exchange(world, "n9", "n0", 3)
        assert world.stats("n9").connections_dialed == 1
        # (exchange() resends until both directions arrive: a term may arrive twice)
        assert set(world.terms("n0", "n9")) == set(world.terms("n9", "n0")) == {1, 2, 3}

    sim.run(main())


def test_an_inbound_only_peer_is_forgotten_with_its_connection() -> None:
    sim = Simulation(seed=11)
    world = build(sim, ["n1"])
    add_node_knowing(world, "n0", "10.0.0.3", ["n1"], SECRET)
    add_node_knowing(world, "n9", "10.0.0.4", ["n0"], SECRET)

    async def main() -> None:
        await exchange(world, "n9", "n0", 1)
        joiner = world.transports["n0"]
        # n9 forgets n0 (removed from its table): the connection closes and, since n0 cannot
        # dial n9, n0 drops the peer and its queue (no leak); sends to it are counted drops.
        await world.on("n9", lambda: world.transports["n9"].set_peers({}))
        await world.until(lambda: joiner.inbound_peers == [])
        assert "n9" not in joiner._peers and not joiner.connected("n9")
        dropped_before = joiner.stats.dropped_unknown_peer  # (sends before n9 dialed in)
        await world.send("n0", "n9", 2)
        assert joiner.stats.dropped_unknown_peer == dropped_before + 1
        assert all(c.shake is None or c.shake.peer_id != "n9" for c in joiner._conns)

    sim.run(main())


@pytest.mark.parametrize("seed", SEEDS)
def test_a_stranger_without_the_secret_is_refused(seed: int) -> None:
    sim = Simulation(seed=seed)
    world = build(sim, ["n1"])
    add_node_knowing(world, "n0", "10.0.0.3", ["n1"], SECRET)
    add_node_knowing(world, "n9", "10.0.0.4", ["n0"], None)  # proves nothing

    async def main() -> None:
        for term in range(1, 8):
            await world.send("n9", "n0", term)
            await asyncio.sleep(0.5)
        joiner = world.transports["n0"]
        assert world.terms("n0", "n9") == [] and joiner.inbound_peers == []
        assert joiner.stats.auth_failed > 0 and joiner.stats.inbound_peers_added == 0
        assert world.stats("n9").messages_sent == 0
        await exchange(world, "n0", "n1", 8)  # n0 still serves its configured peers

    sim.run(main())


def test_inbound_only_peers_count_in_max_peers_and_configured_ones_come_first(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(transport, "MAX_PEERS", 2)
    sim = Simulation(seed=12)
    world = build(sim, ["n1"])
    add_node_knowing(world, "n0", "10.0.0.3", ["n1"], SECRET)  # one configured peer
    add_node_knowing(world, "n8", "10.0.0.4", ["n0"], SECRET)
    add_node_knowing(world, "n9", "10.0.0.5", ["n0"], SECRET)

    async def main() -> None:
        # n8 and n9 both dial n0 (after the fallback delay); whichever comes first gets in.
        await world.until(lambda: "n0" in world.transports)
        joiner = world.transports["n0"]
        await world.until(lambda: len(joiner.inbound_peers) == 1)
        winner = joiner.inbound_peers[0]
        loser = "n9" if winner == "n8" else "n8"
        await exchange(world, winner, "n0", 1)
        for term in range(2, 6):  # the table is full: the other is refused, each time it dials
            await world.send(loser, "n0", term)
            await asyncio.sleep(0.5)
        assert world.terms("n0", loser) == [] and joiner.inbound_peers == [winner]
        assert joiner.stats.inbound_peers_refused > 0
        assert world.stats(loser).rejected_by_peer > 0
        # A configured peer added to the full table evicts the inbound-only one.
        await world.on("n0", lambda: joiner.add_peer("n7", ("n7", PORT)))
        assert joiner.inbound_peers == [] and set(joiner.peers) == {"n1", "n7"}
        assert len(joiner._peers) == 2

    sim.run(main())
