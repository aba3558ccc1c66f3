"""The store as real OS processes: a 3-node cluster of `detsim serve` on 127.0.0.1 with a
client password, driven by redis-py (sync and asyncio), redis-cli, raw sockets, and admin
commands that add, promote and remove a 4th process and move the leadership.

One cluster serves the whole module (starting one costs seconds); each test leaves it with
3 voters and a leader, whatever order the tests run in."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import redis.asyncio
from kv_processes import (
    LEADER_TIMEOUT_S,
    PASSWORD,
    admin,
    client,
    command,
    joiner_spec,
    run_cli,
    running_cluster,
    status,
    wait_converged,
    wait_until,
)

from detsim.kv.cluster import LocalCluster

NODES = ["n1", "n2", "n3"]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with running_cluster(tmp_path_factory.mktemp("procs"), 3, requirepass=PASSWORD) as c:
        yield c


def test_redis_py_sync_any_node_serves_any_command(cluster: LocalCluster) -> None:
    n1, n2, n3 = (client(cluster, n) for n in NODES)
    try:
        assert n1.set("sync:a", "1") is True
        assert n2.get("sync:a") == b"1"  # a linearizable read on another node
        assert n3.incr("sync:a") == 2
        assert n2.append("sync:a", "x") == 2
        assert n1.mset({"sync:b": "B", "sync:c": "C"}) is True
        assert n3.mget("sync:a", "sync:b", "sync:c", "sync:none") == [b"2x", b"B", b"C", None]
        assert n2.set("sync:b", "B2", nx=True) is None
        assert n1.execute_command("CAS", "sync:b", "B", "B3") == 1
        assert n3.execute_command("CAS", "sync:b", "B", "B4") == 0
        assert n2.exists("sync:a", "sync:b", "sync:none") == 2
        assert n1.delete("sync:a", "sync:c") == 2
        with n2.pipeline(transaction=False) as pipe:
            for _ in range(50):
                pipe.incr("sync:counter")
            replies = pipe.execute()
        assert replies == list(range(1, 51))
        assert n3.get("sync:counter") == b"50"
        assert n1.get("sync:b") == b"B3"
    finally:
        for conn in (n1, n2, n3):
            conn.close()


def test_redis_py_asyncio_concurrent_clients_on_every_node(cluster: LocalCluster) -> None:
    asyncio.run(concurrent_increments(cluster))


async def concurrent_increments(cluster: LocalCluster) -> None:
    per_client, clients_per_node = 20, 3
    conns = [
        redis.asyncio.Redis(
            host="127.0.0.1",
            port=cluster.nodes[node_id].spec.client_addr[1],
            password=PASSWORD,
            socket_timeout=15,
        )
        for node_id in NODES
        for _ in range(clients_per_node)
    ]

    async def work(conn: redis.asyncio.Redis, index: int) -> list[int]:
        seen = []
        for i in range(per_client):
            seen.append(await conn.incr("async:counter"))
            await conn.set(f"async:{index}:{i}", i)
        return seen

    try:
        results = await asyncio.gather(*(work(c, i) for i, c in enumerate(conns)))
        total = per_client * len(conns)
        # Every INCR was applied exactly once: the replies are 1..total, each once.
        assert sorted(v for seen in results for v in seen) == list(range(1, total + 1))
        for conn in conns[::clients_per_node]:
            assert await conn.get("async:counter") == str(total).encode()
            assert await conn.get(f"async:{len(conns) - 1}:{per_client - 1}") == b"19"
        hello = await conns[0].execute_command("HELLO", "3", "AUTH", "default", PASSWORD)
        assert hello[b"proto"] == 3
    finally:
        for conn in conns:
            await conn.aclose()


def test_redis_cli_commands(cluster: LocalCluster) -> None:
    assert run_cli(cluster, "n1", "PING") == "PONG"
    assert run_cli(cluster, "n2", "SET", "cli:k", "hello world") == "OK"
    assert run_cli(cluster, "n3", "GET", "cli:k") == "hello world"
    assert run_cli(cluster, "n1", "INCRBY", "cli:n", "5") == "5"
    assert run_cli(cluster, "n3", "DBSIZE").isdigit()
    node_status = json.loads(run_cli(cluster, "n2", "RAFT.STATUS"))
    assert node_status["id"] == "n2" and sorted(node_status["voters"]) == NODES
    assert int(run_cli(cluster, "n1", "RAFT.SNAPSHOT")) > 0
    digest = json.loads(run_cli(cluster, "n3", "RAFT.DIGEST"))
    assert set(digest) == {"applied_index", "digest"}
    assert run_cli(cluster, "n1", "NOSUCHCOMMAND").startswith("ERR unknown command")


def test_redis_cli_transfers_leadership(cluster: LocalCluster) -> None:
    leader = cluster.wait_for_leader(LEADER_TIMEOUT_S)
    target = next(n for n in NODES if n != leader)
    via = next(n for n in NODES if n not in (leader, target))  # admin from a follower
    assert run_cli(cluster, via, "RAFT.TRANSFER", target) == "OK"
    assert cluster.wait_for_leader(LEADER_TIMEOUT_S) == target
    assert command(cluster, leader, "SET", "after-transfer", "1") is True


def test_a_client_without_auth_is_refused(cluster: LocalCluster) -> None:
    port = cluster.nodes["n2"].spec.client_addr[1]
    with socket.create_connection(("127.0.0.1", port), timeout=15) as sock:
        sock.sendall(b"GET k\r\nSET k v\r\nAUTH wrong\r\nPING\r\n")
        replies = read_lines(sock, 4)
    assert replies[0] == b"-NOAUTH Authentication required."
    assert replies[1] == b"-NOAUTH Authentication required."
    assert replies[2].startswith(b"-WRONGPASS")
    assert replies[3] == b"-NOAUTH Authentication required."
    with pytest.raises(redis.AuthenticationError):
        client(cluster, "n1", password=None).get("k")
    with client(cluster, "n1") as authed:
        assert authed.ping() is True


@pytest.mark.parametrize(
    ("payload", "half_close"),
    [
        pytest.param(b"*2\r\n$3\r\nGET\r\n$1\r\nk", True, id="truncated-frame"),
        pytest.param(b"*1\r\n$99999999999\r\n", False, id="huge-bulk-length"),
        pytest.param(b"*2147483647\r\n", False, id="huge-array-length"),
        pytest.param(b"*x\r\n\x00\xff garbage \r\n", False, id="garbage"),
        pytest.param(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", True, id="tls-hello"),
    ],
)
def test_bad_input_gets_an_error_and_the_connection_closed(
    cluster: LocalCluster, payload: bytes, half_close: bool
) -> None:
    port = cluster.nodes["n1"].spec.client_addr[1]
    with socket.create_connection(("127.0.0.1", port), timeout=15) as sock:
        sock.sendall(f"AUTH {PASSWORD}\r\n".encode() + payload)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        received = read_to_eof(sock)
    assert received.startswith(b"+OK\r\n-ERR Protocol error"), received
    # The node still serves: this client, and the process is alive.
    with client(cluster, "n1") as conn:
        assert conn.set("after-bad-input", "1") is True
        assert conn.get("after-bad-input") == b"1"
    assert cluster.nodes["n1"].running


def test_unknown_commands_and_wrong_arity_keep_the_connection(cluster: LocalCluster) -> None:
    port = cluster.nodes["n3"].spec.client_addr[1]
    with socket.create_connection(("127.0.0.1", port), timeout=15) as sock:
        sock.sendall(f"AUTH {PASSWORD}\r\nFLUSHALL\r\nGET\r\nSET a\r\nPING\r\n".encode())
        replies = read_lines(sock, 5)
    assert replies[0] == b"+OK"
    assert replies[1].startswith(b"-ERR unknown command 'FLUSHALL'")
    assert replies[2] == b"-ERR wrong number of arguments for 'get' command"
    assert replies[3] == b"-ERR wrong number of arguments for 'set' command"
    assert replies[4] == b"+PONG"


def test_admin_adds_a_learner_process_promotes_and_removes_it(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    command(cluster, "n1", "SET", "before-n4", "v")
    spec = joiner_spec(cluster.specs[0].data_dir.parent, "n4")
    joiner = cluster.add_joiner(spec)
    joiner.start()
    try:
        learner_then_voter(
            cluster,
            spec.node_id,
            f"127.0.0.1:{spec.raft_addr[1]}",
            f"127.0.0.1:{spec.client_addr[1]}",
        )
    finally:
        cluster.stop([spec.node_id])
        del cluster.nodes[spec.node_id]
    assert cluster.wait_for_leader(LEADER_TIMEOUT_S) in NODES


def learner_then_voter(
    cluster: LocalCluster, new: str, raft_address: str, client_address: str
) -> None:
    assert admin(cluster, "n2", "RAFT.ADDLEARNER", new, raft_address, client_address) == "OK"
    wait_until(lambda: new in status(cluster, "n1")["learners"], 30, f"{new} a learner")
    # The learner catches up and serves linearizable reads itself.
    wait_until(lambda: command(cluster, new, "GET", "before-n4") == b"v", 30, f"{new} reads")
    assert status(cluster, new)["role"] == "learner"
    assert admin(cluster, "n3", "RAFT.PROMOTE", new) == "OK"
    wait_until(lambda: new in status(cluster, new)["voters"], 30, f"{new} a voter")
    assert command(cluster, "n1", "SET", "with-n4", "w") is True
    wait_converged(cluster, [*NODES, new])
    # The new node leads: n1, started before it existed, forwards to the client address it
    # learned from the ADDLEARNER (the removal of the leader, too).
    assert admin(cluster, "n3", "RAFT.TRANSFER", new) == "OK"
    wait_until(lambda: status(cluster, "n1")["leader"] == new, 30, f"{new} leads")
    assert command(cluster, "n1", "SET", "n4-leads", "x") is True
    assert admin(cluster, "n1", "RAFT.REMOVE", new) == "OK"
    for node_id in NODES:
        wait_until(
            lambda n=node_id: sorted(status(cluster, n)["voters"]) == NODES, 30, "n4 removed"
        )
    assert status(cluster, "n2")["learners"] == []


def read_lines(sock: socket.socket, count: int) -> list[bytes]:
    buffer = b""
    while buffer.count(b"\r\n") < count:
        chunk = sock.recv(65536)
        if not chunk:
            break
        buffer += chunk
    return buffer.split(b"\r\n")[:count]


def read_to_eof(sock: socket.socket) -> bytes:
    """Everything until the server closes the connection (the socket timeout bounds it)."""
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data
