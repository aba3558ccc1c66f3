"""A node's process killed with SIGKILL in the middle of a write load, then restarted (real
processes on 127.0.0.1): no acknowledged write is lost, the nodes converge to one RAFT.DIGEST,
and the recorded history is linearizable.

The load: CLIENTS redis-py asyncio clients, spread over the nodes, each through a
`detsim.check.Recorder` (no retries), appending unique tokens to a few keys and reading them.
A client whose op fails moves to the next node.
An append that was acknowledged must show in the key's final value on every node; the checker
judges the whole history, final reads included. The leader is killed in even rounds (its
in-flight writes become unknown, a new election), a follower in odd ones.

DETSIM_SIGKILL_ROUNDS=20 runs the test 20 times (each round a new cluster); default 1.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import time
from pathlib import Path

import pytest
import redis.asyncio
from kv_processes import LEADER_TIMEOUT_S, running_cluster, wait_converged

from detsim.check import check_history
from detsim.check.recorder import HistoryLog, Recorder, no_retry
from detsim.kv.cluster import LocalCluster

ROUNDS = int(os.environ.get("DETSIM_SIGKILL_ROUNDS", "1"))
NODES = ["n1", "n2", "n3"]
CLIENTS = 6
KEYS = [f"k{i}" for i in range(8)]  # split by key, the checker is fast
APPEND_RATIO = 0.7
LOAD_BEFORE_KILL_S = 1.0
DOWN_S = 1.5
LOAD_AFTER_RESTART_S = 1.5
BACKOFF_AFTER_ERROR_S = 0.2
CLIENT_TIMEOUT_S = 10.0  # above the server's request timeout (5 s): its -TIMEOUT comes first
CHECK_TIMEOUT_S = 120.0
NODE_OF_PROCESS: dict[int, str] = {}  # history process id -> the node it talked to (diagnosis)


@pytest.mark.parametrize("round_", range(ROUNDS))
def test_sigkill_mid_load_loses_no_acknowledged_write(tmp_path: Path, round_: int) -> None:
    with running_cluster(tmp_path, len(NODES)) as cluster:
        leader = cluster.wait_for_leader(LEADER_TIMEOUT_S)
        victim = leader if round_ % 2 == 0 else next(n for n in NODES if n != leader)
        log = HistoryLog()
        NODE_OF_PROCESS.clear()
        asyncio.run(load_with_a_kill(cluster, log, victim, random.Random(round_)))
        cluster.wait_for_leader(LEADER_TIMEOUT_S)
        wait_converged(cluster, NODES)
        finals = asyncio.run(final_reads(cluster, log))
    tokens = acknowledged_appends(log)
    assert tokens, "the load acknowledged no append at all"
    for node_id, values in finals.items():
        for key, acked in tokens.items():
            lost = [t for t in acked if f"[{t}]" not in values[key]]
            assert not lost, f"{node_id} lost acknowledged appends to {key}: {lost}"
    result = check_history(log.events, timeout=CHECK_TIMEOUT_S)
    if result.linearizable is not True:
        path = tmp_path / "history.jsonl"
        log.write(path)
        (tmp_path / "nodes.json").write_text(json.dumps(NODE_OF_PROCESS, sort_keys=True))
        pytest.fail(
            f"history not linearizable ({result.linearizable}), {victim} killed: {result}; "
            f"see {path}, the node of each process in nodes.json, node logs in {tmp_path}/logs"
        )


async def load_with_a_kill(
    cluster: LocalCluster, log: HistoryLog, victim: str, rng: random.Random
) -> None:
    stop = asyncio.Event()
    workers = [
        asyncio.create_task(worker(cluster, log, i, stop, random.Random(rng.random())))
        for i in range(CLIENTS)
    ]
    try:
        await asyncio.sleep(LOAD_BEFORE_KILL_S)
        cluster.nodes[victim].kill()  # SIGKILL: no flush, no goodbye
        await asyncio.sleep(DOWN_S)
        cluster.start([victim])
        await asyncio.sleep(LOAD_AFTER_RESTART_S)
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(*workers), CLIENT_TIMEOUT_S * 3)


def connect(cluster: LocalCluster, node_id: str) -> redis.asyncio.Redis:
    host, port = cluster.nodes[node_id].spec.client_addr
    return redis.asyncio.Redis(
        host=host,
        port=port,
        retry=no_retry(),
        socket_timeout=CLIENT_TIMEOUT_S,
        socket_connect_timeout=CLIENT_TIMEOUT_S,
    )


async def worker(
    cluster: LocalCluster, log: HistoryLog, index: int, stop: asyncio.Event, rng: random.Random
) -> None:
    """One client slot. After an error it moves to the next node (as a client of a dead node
    would), with a new Recorder: a new process id in the history."""
    node = index % len(NODES)
    conn = connect(cluster, NODES[node])
    rec = Recorder(conn, log)
    sequence = 0
    try:
        while not stop.is_set():
            key = rng.choice(KEYS)
            if rng.random() < APPEND_RATIO:
                sequence += 1
                event = await rec.append(key, f"[{index}.{sequence}]")
            else:
                event = await rec.get(key)
            NODE_OF_PROCESS[event.process] = NODES[node]
            if event.type != "ok":
                await conn.aclose()
                await asyncio.sleep(BACKOFF_AFTER_ERROR_S)
                node = (node + 1) % len(NODES)
                conn = connect(cluster, NODES[node])
                rec = Recorder(conn, log)
    finally:
        await conn.aclose()


async def final_reads(cluster: LocalCluster, log: HistoryLog) -> dict[str, dict[str, str]]:
    """Each key read on each node, recorded in the history too."""
    finals: dict[str, dict[str, str]] = {}
    for node_id in NODES:
        conn = connect(cluster, node_id)
        rec = Recorder(conn, log)
        try:
            finals[node_id] = {}
            for key in KEYS:
                event = await read_until_ok(rec, key)
                finals[node_id][key] = str(event.value or "")
        finally:
            await conn.aclose()
    return finals


async def read_until_ok(rec: Recorder, key: str) -> object:
    deadline = time.monotonic() + LEADER_TIMEOUT_S
    while True:
        event = await rec.get(key)
        if event.type == "ok" or time.monotonic() > deadline:
            assert event.type == "ok", event
            return event
        await asyncio.sleep(BACKOFF_AFTER_ERROR_S)


def acknowledged_appends(log: HistoryLog) -> dict[str, list[str]]:
    invoked: dict[int, tuple[str, str]] = {}  # process -> (key, token) of its open append
    acked: dict[str, list[str]] = {key: [] for key in KEYS}
    for event in log.events:
        if event.f != "append":
            continue
        if event.type == "invoke":
            assert event.key is not None
            invoked[event.process] = (event.key, str(event.value).strip("[]"))
        elif event.type == "ok":
            key, token = invoked.pop(event.process)
            acked[key].append(token)
    return acked


def test_history_helpers_see_acknowledged_appends() -> None:
    log = HistoryLog()
    log.record("invoke", 0, "append", "k0", "[0.1]", None)
    log.record("ok", 0, "append", "k0", 5, None)
    log.record("invoke", 1, "append", "k1", "[1.1]", None)
    log.record("info", 1, "append", "k1", None, "lost")
    acked = acknowledged_appends(log)
    assert acked["k0"] == ["0.1"] and acked["k1"] == []
