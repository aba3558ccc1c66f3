"""The RESP server in the simulator: a 3-node cluster, each node's init is `serve(config)`,
redis-py's asyncio client on client hosts, unchanged (no retries).

What each test shows: every command of DESIGN answers as Redis would; a follower forwards a
write and serves a linearizable read; NOLEADER when nothing could be proposed, TIMEOUT when the
outcome is unknown; AUTH; RESP3 after HELLO 3; pipelining; bad input on the client port is
answered and closed while the node keeps serving others. Every run ends with `finish()`:
converged, Raft invariants and logs checked, equal RAFT.DIGEST, no internal error.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable

import pytest
import redis.asyncio
import redis.exceptions
from kv_cluster import CLIENT_PORT, KVCluster

import detsim
from detsim import DiskConfig
from detsim.check.recorder import no_retry
from detsim.kv import NodeConfig, serve

SEEDS = 2
FSYNC = DiskConfig(fsync_latency=0.002)


@pytest.mark.detsim(seeds=SEEDS, disk=FSYNC)
async def test_every_command_on_the_leader_and_a_follower(sim: detsim.Simulation) -> None:
    c = KVCluster(sim)
    lead = await c.wait_leader()
    follower = c.followers(lead)[0]

    async def session(nid: str) -> dict[str, object]:
        r = c.redis(nid)
        out: dict[str, object] = {}
        try:
            out["ping"] = await r.ping()
            out["echo"] = await r.echo("hi")
            out["select"] = await r.execute_command("SELECT", 0)
            out["set"] = await r.set(f"{nid}:k", "v1")
            out["get"] = await r.get(f"{nid}:k")
            out["set_nx"] = await r.set(f"{nid}:k", "v2", nx=True)
            out["set_xx_get"] = await r.set(f"{nid}:k", "v3", xx=True, get=True)
            out["append"] = await r.append(f"{nid}:k", "+")
            out["incr"] = await r.execute_command("INCR", f"{nid}:n")
            out["incrby"] = await r.incrby(f"{nid}:n", 41)
            out["cas_ok"] = await r.execute_command("CAS", f"{nid}:k", "v3+", "w")
            out["cas_no"] = await r.execute_command("CAS", f"{nid}:k", "nope", "x")
            out["mset"] = await r.mset({f"{nid}:a": "1", f"{nid}:b": "2"})
            out["mget"] = await r.mget(f"{nid}:a", f"{nid}:b", f"{nid}:zz")
            out["exists"] = await r.exists(f"{nid}:a", f"{nid}:zz", f"{nid}:b")
            out["del"] = await r.delete(f"{nid}:a", f"{nid}:zz")
            out["getname"] = await r.client_getname()
            out["client_id"] = isinstance(await r.client_id(), int)
            out["info"] = (await r.info("raft"))["raft_role"]
            out["raftstats"] = await r.info("raftstats")
            out["status"] = json.loads(await r.execute_command("RAFT.STATUS"))
            try:
                await r.incr(f"{nid}:k")
            except redis.exceptions.ResponseError as exc:
                out["incr_err"] = str(exc)
            return out
        finally:
            await r.aclose()

    on_leader = await c.on_client(session(lead))
    on_follower = await c.on_client(session(follower))
    for nid, out in ((lead, on_leader), (follower, on_follower)):
        assert out["ping"] is True and out["echo"] == b"hi" and out["select"] is True
        assert out["set"] is True and out["get"] == b"v1"
        assert out["set_nx"] is None  # NX on an existing key: null
        assert out["set_xx_get"] == b"v1"  # GET: the old value
        assert out["append"] == 3  # "v3+"
        assert (out["incr"], out["incrby"]) == (1, 42)
        assert (out["cas_ok"], out["cas_no"]) == (1, 0)
        assert out["mset"] is True
        assert out["mget"] == [b"1", b"2", None]
        stats = out["raftstats"]
        assert isinstance(stats, dict)
        # This node's own counters: it ran Readies and exchanged messages with its peers.
        assert stats["raft_driver_readies"] > 0 and stats["raft_driver_syncs"] > 0
        assert stats["raft_transport_messages_sent"] > 0
        assert stats["raft_transport_malformed_frame"] == 0
        assert (out["exists"], out["del"]) == (2, 1)
        assert out["getname"] is None and out["client_id"] is True
        assert out["incr_err"] == "value is not an integer or out of range"
        status = out["status"]
        assert isinstance(status, dict)
        assert set(status) == {
            "id", "role", "term", "leader", "commit_index", "applied_index",
            "last_log_index", "snapshot_index", "voters", "learners",
        }  # fmt: skip
        assert status["id"] == nid and status["leader"] == lead
        assert status["voters"] == c.voters and status["learners"] == []
    assert on_leader["info"] == "leader" and on_follower["info"] == "follower"
    assert c.servers[follower].stats.forwarded >= 9  # the follower's writes went to the leader
    assert c.servers[lead].stats.forwarded == 0
    assert await c.command(lead, "DBSIZE") == 6  # n:k n:n n:b for each of the two
    await c.finish()


@pytest.mark.detsim(seeds=SEEDS, disk=FSYNC)
async def test_a_follower_read_sees_the_write_just_acknowledged(sim: detsim.Simulation) -> None:
    c = KVCluster(sim, clients=2)
    lead = await c.wait_leader()
    f1, f2 = c.followers(lead)

    async def writes_then_reads() -> list[tuple[bytes | None, bytes | None]]:
        w, r = c.redis(f1), c.redis(f2)
        seen = []
        try:
            for i in range(20):
                await w.set("x", f"v{i}")  # acknowledged (forwarded to the leader)
                # Another follower, right after: ReadIndex makes it wait for the write.
                seen.append((await r.get("x"), await w.get("x")))
        finally:
            await w.aclose()
            await r.aclose()
        return seen

    seen = await c.on_client(writes_then_reads())
    assert seen == [(f"v{i}".encode(), f"v{i}".encode()) for i in range(20)]
    await c.finish()


@pytest.mark.detsim(seeds=SEEDS, disk=FSYNC)
async def test_pipeline_replies_in_order(sim: detsim.Simulation) -> None:
    c = KVCluster(sim)
    lead = await c.wait_leader()

    async def pipelined(nid: str) -> list[object]:
        r = c.redis(nid)
        try:
            pipe = r.pipeline(transaction=False)
            for i in range(50):
                pipe.incr("counter")
                pipe.get("counter")
                pipe.append("log", f"{i},")
            pipe.execute_command("NOSUCH", "x")
            pipe.ping()
            return list(await pipe.execute(raise_on_error=False))
        finally:
            await r.aclose()

    replies = await c.on_client(pipelined(c.followers(lead)[0]))
    expected_log = ""
    for i in range(50):
        expected_log += f"{i},"
        incr, get, append = replies[3 * i : 3 * i + 3]
        assert (incr, get, append) == (i + 1, str(i + 1).encode(), len(expected_log))
    unknown, pong = replies[-2:]
    assert isinstance(unknown, redis.exceptions.ResponseError)
    assert str(unknown) == "unknown command 'NOSUCH', with args beginning with: 'x' "
    assert pong is True
    assert await c.command(lead, "GET", "log") == expected_log.encode()
    await c.finish()


@pytest.mark.detsim(seeds=SEEDS, disk=FSYNC)
async def test_pipelined_writes_share_fsyncs(sim: detsim.Simulation) -> None:
    """Writes of one read burst are proposed together: far fewer Raft syncs than writes."""
    c = KVCluster(sim)
    lead = await c.wait_leader()
    writes = 200

    async def pipelined() -> list[object]:
        r = c.redis(lead)
        try:
            await r.ping()  # connected before the count starts
            pipe = r.pipeline(transaction=False)
            for i in range(writes):
                pipe.set(f"k{i % 10}", i)
            return list(await pipe.execute())
        finally:
            await r.aclose()

    syncs_before = c.rafts[lead].stats.syncs
    assert await c.on_client(pipelined()) == [True] * writes
    syncs = c.rafts[lead].stats.syncs - syncs_before
    print(f"{writes} pipelined writes: {syncs} leader syncs")
    assert syncs < writes // 4, syncs  # one per write without batching
    await c.finish()


@pytest.mark.detsim(seeds=SEEDS, disk=FSYNC)
async def test_a_pipelined_run_of_writes_is_one_entry_with_a_reply_each(
    sim: detsim.Simulation,
) -> None:
    """A connection's run of writes is proposed as one Raft entry (on the leader, and on a
    follower, which forwards the run in one burst); each write still gets its own reply,
    errors included, in order."""
    c = KVCluster(sim)
    lead = await c.wait_leader()
    follower = c.followers(lead)[0]
    run = 100

    async def pipelined(nid: str, prefix: str) -> list[object]:
        r = c.redis(nid)
        try:
            await r.ping()  # connected before the count starts
            pipe = r.pipeline(transaction=False)
            pipe.set(f"{prefix}text", "abc")
            for i in range(run):
                pipe.incr(f"{prefix}n")
                if i == run // 2:
                    pipe.incr(f"{prefix}text")  # not an integer: its own error only
            pipe.get(f"{prefix}n")  # a read ends the run of writes
            pipe.append(f"{prefix}text", "d")
            return list(await pipe.execute(raise_on_error=False))
        finally:
            await r.aclose()

    for nid in (lead, follower):
        prefix = f"{nid}:"
        applied_before = c.rafts[lead].stats.entries_applied
        replies = await c.on_client(pipelined(nid, prefix))
        entries = c.rafts[lead].stats.entries_applied - applied_before
        print(f"{run + 3} pipelined writes on {nid}: {entries} entries")
        assert entries <= 4, entries  # one per write without batching
        error = replies[2 + run // 2]
        assert isinstance(error, redis.exceptions.ResponseError), error
        assert str(error) == "value is not an integer or out of range"
        counts = [r for r in replies[1:-2] if not isinstance(r, Exception)]
        assert [replies[0], *counts, *replies[-2:]] == [True, *range(1, run + 1), b"100", 4]
    await c.finish()


@pytest.mark.detsim(seeds=SEEDS, disk=FSYNC)
async def test_a_run_of_writes_cut_off_gets_timeout_each(sim: detsim.Simulation) -> None:
    """A batch has one outcome: a leader cut off from its followers appends the run but
    cannot commit it, so every write of the run is answered TIMEOUT (outcome unknown)."""
    c = KVCluster(sim, request_timeout_s=3.0)
    lead = await c.wait_leader()
    f1, f2 = c.followers(lead)
    sim.net.partition([lead, "c1"], [f1, f2])

    async def pipelined() -> list[object]:
        r = c.redis(lead)
        try:
            pipe = r.pipeline(transaction=False)
            for i in range(10):
                pipe.set(f"k{i}", i)
            return list(await pipe.execute(raise_on_error=False))
        finally:
            await r.aclose()

    replies = await c.on_client(pipelined())
    assert len(replies) == 10
    for reply in replies:
        assert isinstance(reply, redis.exceptions.ResponseError), reply
        assert str(reply).startswith("TIMEOUT"), reply
    sim.net.heal()
    await c.wait_leader()
    await c.finish()


@pytest.mark.detsim(seeds=SEEDS, disk=FSYNC)
async def test_resp3_after_hello_3(sim: detsim.Simulation) -> None:
    c = KVCluster(sim)
    lead = await c.wait_leader()

    async def resp3() -> tuple[object, ...]:
        r = c.redis(lead, protocol=3)
        try:
            await r.set("k", "v")
            return (await r.get("k"), await r.get("missing"), await r.mget("k", "missing"))
        finally:
            await r.aclose()

    assert await c.on_client(resp3()) == (b"v", None, [b"v", None])

    async def raw() -> bytes:
        reader, writer = await asyncio.open_connection(c.ips[lead], CLIENT_PORT)
        writer.write(b"HELLO 3\r\nGET missing\r\nHELLO 2\r\nGET missing\r\n")
        await writer.drain()
        data = b""
        while not data.endswith(b"$-1\r\n"):
            chunk = await reader.read(4096)
            assert chunk, data
            data += chunk
        writer.close()
        return data

    data = await c.on_client(raw())
    assert data.startswith(b"%7\r\n$6\r\nserver\r\n$6\r\ndetsim\r\n")  # HELLO 3: a map
    assert b"_\r\n*14\r\n" in data  # RESP3 null, then HELLO 2's reply as a flat array
    assert data.endswith(b"$-1\r\n")
    await c.finish()


@pytest.mark.detsim(seeds=SEEDS, disk=FSYNC)
async def test_auth_required(sim: detsim.Simulation) -> None:
    c = KVCluster(sim, requirepass="s3cret")
    lead = await c.wait_leader()
    follower = c.followers(lead)[0]

    refused = await c.command(lead, "GET", "k", password=None, protocol=2)
    assert isinstance(refused, redis.exceptions.AuthenticationError)  # redis-py's NOAUTH
    assert str(refused) == "Authentication required."

    async def hello3_without_password() -> str:
        r = c.redis(lead, password=None, protocol=3)
        try:
            await r.ping()
        except redis.exceptions.AuthenticationError as exc:
            return str(exc)
        finally:
            await r.aclose()
        return "accepted"

    assert (await c.on_client(hello3_without_password())).startswith(
        "HELLO must be called with the client already authenticated"
    )

    async def wrong() -> str:
        r = c.redis(lead, password="wrong")
        try:
            await r.ping()
        except redis.exceptions.AuthenticationError as exc:
            return str(exc)
        finally:
            await r.aclose()
        return "accepted"

    assert await c.on_client(wrong()) == "invalid username-password pair or user is disabled."
    # With the password: a write through the follower (its proxy authenticates too).
    assert await c.command(follower, "SET", "k", "v") is True
    assert await c.command(lead, "GET", "k") == b"v"
    # RESP3 with HELLO 3 AUTH (redis-py does this for protocol=3).
    assert await c.command(follower, "GET", "k", protocol=3) == b"v"
    await c.finish()


@pytest.mark.detsim(seeds=SEEDS, disk=FSYNC)
async def test_noleader_and_timeout_under_partitions(sim: detsim.Simulation) -> None:
    c = KVCluster(sim, request_timeout_s=3.0)
    lead = await c.wait_leader()
    f1, f2 = c.followers(lead)
    assert await c.command(lead, "SET", "k", "v0") is True

    # The leader cut off from its followers still believes it leads for a while (until
    # CheckQuorum): a write is appended but cannot commit: outcome unknown -> TIMEOUT.
    sim.net.partition([lead, "c1"], [f1, f2])
    reply = await c.command(lead, "SET", "k", "lost?")
    assert isinstance(reply, redis.exceptions.ResponseError), reply
    assert str(reply).startswith("TIMEOUT"), reply
    # Once the old leader stepped down (CheckQuorum) and knows no leader: NOLEADER at once.
    await c.until(lambda: c.rafts[lead].core.role_name != "leader", 10.0, "step down")
    await c.until(lambda: c.rafts[lead].core.leader is None, 10.0, "no leader known")
    reply = await c.command(lead, "SET", "k", "v1")
    assert isinstance(reply, redis.exceptions.ResponseError) and str(reply).startswith(
        "NOLEADER"
    ), reply
    reply = await c.command(lead, "GET", "k")
    assert isinstance(reply, redis.exceptions.ResponseError) and str(reply).startswith(
        "NOLEADER"
    ), reply
    sim.net.heal()
    await c.wait_leader()
    await c.finish()


@pytest.mark.detsim(seeds=1, disk=FSYNC)
async def test_connection_and_info_commands(sim: detsim.Simulation) -> None:
    c = KVCluster(sim)
    lead = await c.wait_leader()

    async def session() -> dict[str, object]:
        r = c.redis(lead, protocol=2)
        try:
            await r.set("a", "1")
            return {
                "setname": await r.client_setname("app-1"),
                "getname": await r.client_getname(),
                "info": await r.client_info(),
                "list": await r.client_list(),
                "help": await r.execute_command("CLIENT", "HELP"),
                "hello": await r.execute_command("HELLO", "2", "SETNAME", "app-2"),
                "renamed": await r.client_getname(),
                "server_info": await r.info(),
                "dbsize": await r.dbsize(),
            }
        finally:
            await r.aclose()

    out = await c.on_client(session())
    assert out["setname"] is True and out["getname"] == "app-1"
    info = out["info"]
    assert isinstance(info, dict) and info["name"] == "app-1" and info["resp"] == "2"
    assert isinstance(out["list"], list) and out["list"][0]["name"] == "app-1"
    help_lines = out["help"]
    assert isinstance(help_lines, list) and help_lines[0].startswith(b"CLIENT <subcommand>")
    hello = out["hello"]
    assert isinstance(hello, list)  # RESP2: HELLO's map as a flat array
    assert dict(zip(hello[::2], hello[1::2], strict=True))[b"proto"] == 2
    assert out["renamed"] == "app-2"
    server_info = out["server_info"]
    assert isinstance(server_info, dict)
    assert server_info["redis_version"] == "7.2.0" and server_info["raft_role"] == "leader"
    assert server_info["db0"]["keys"] == 1 and server_info["connected_clients"] >= 1
    assert out["dbsize"] == 1
    await c.finish()


@pytest.mark.detsim(seeds=1, disk=FSYNC)
async def test_serve_is_the_init_as_is(sim: detsim.Simulation) -> None:
    """`serve(config)` itself as each host's init (no test hooks), no secret: it warns."""
    ips = {f"n{k}": f"10.0.3.{k}" for k in (1, 2, 3)}

    def init_for(nid: str) -> Callable[[], Awaitable[None]]:
        config = NodeConfig(
            node_id=nid,
            raft_addr=("0.0.0.0", 7000),
            client_addr=("0.0.0.0", CLIENT_PORT),
            peers={p: (ip, 7000) for p, ip in ips.items() if p != nid},
            data_dir="/data",
            peer_client_addrs={p: (ip, CLIENT_PORT) for p, ip in ips.items() if p != nid},
        )
        return lambda: serve(config)

    with pytest.warns(RuntimeWarning, match="no cluster secret"):
        for nid, ip in ips.items():
            sim.add_node(nid, ip=ip, init=init_for(nid))
        client = sim.add_node("client", ip="10.0.9.1")

        async def use() -> tuple[object, ...]:
            replies = []
            for ip in ips.values():  # a write and a read through every node
                r = redis.asyncio.Redis(host=ip, port=CLIENT_PORT, retry=no_retry())
                try:
                    while True:
                        try:
                            await r.incr("n")
                            break
                        except redis.exceptions.ResponseError as exc:
                            assert str(exc).startswith("NOLEADER"), exc  # no leader yet
                            await asyncio.sleep(0.5)
                    replies.append(await r.get("n"))
                finally:
                    await r.aclose()
            return tuple(replies)

        assert await client.spawn(use()) == (b"1", b"2", b"3")


@pytest.mark.detsim(seeds=SEEDS, disk=FSYNC)
async def test_forwarded_write_cut_off_is_timeout_then_retry_works(sim: detsim.Simulation) -> None:
    c = KVCluster(sim, request_timeout_s=3.0)
    lead = await c.wait_leader()
    f1, f2 = c.followers(lead)
    assert await c.command(f1, "SET", "k", "v0") is True  # f1's proxy to the leader is open
    # The leader cut off from both followers (the client still reaches everyone): f1 still
    # believes in it and forwards; the request is sent and never answered: outcome unknown.
    sim.net.partition([lead], [f1, f2])
    reply = await c.command(f1, "SET", "k", "v1")
    assert isinstance(reply, redis.exceptions.ResponseError), reply
    assert str(reply).startswith("TIMEOUT"), reply
    # f1 and f2 elect a new leader; a retry through f1 is forwarded there and succeeds.
    new = await c.wait_leader([f1, f2])
    assert new != lead
    assert await c.command(f1, "SET", "k", "v2") is True
    assert await c.command(f2, "GET", "k") == b"v2"
    await c.finish()
