"""Real OS processes for the store's tests: `detsim serve` nodes on 127.0.0.1, through
`detsim.kv.cluster.LocalCluster` (the launcher `detsim up` uses).

- Ports: asked of the kernel (bind to port 0, all at once, then released); a port could be
  taken between the release and the node's bind, in which case the cluster fails to start
  with the node's log in the error, never a hang.
- Every process is stopped in a `finally` (SIGTERM, then SIGKILL past
  detsim.kv.cluster.STOP_TIMEOUT_S); every wait has a bound.
- redis-cli: `redis_cli()` finds it, running scripts/install-system-deps.sh once if it is
  missing; without it, the test skips and the reason is also warned, so it shows in the summary.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import subprocess
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from detsim.kv.cluster import LocalCluster, NodeSpec, plan, secret_file

ROOT = Path(__file__).resolve().parents[2]
LEADER_TIMEOUT_S = 60.0  # generous: the test machine is shared and loaded
CONVERGE_TIMEOUT_S = 60.0
INSTALL_TIMEOUT_S = 600.0
PASSWORD = "process-test-password"

_install_tried = False


def free_ports(count: int) -> list[int]:
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def new_specs(directory: Path, count: int) -> list[NodeSpec]:
    ports = free_ports(2 * count)
    return plan(directory, ports[:count], ports[count:])


def joiner_spec(directory: Path, node_id: str) -> NodeSpec:
    client_port, raft_port = free_ports(2)
    return NodeSpec(
        node_id=node_id,
        client_addr=("127.0.0.1", client_port),
        raft_addr=("127.0.0.1", raft_port),
        data_dir=directory / node_id,
        log_path=directory / "logs" / f"{node_id}.log",
    )


@contextlib.contextmanager
def running_cluster(
    directory: Path, count: int = 3, requirepass: str | None = None
) -> Iterator[LocalCluster]:
    """`count` nodes started, a leader elected; every process stopped on exit."""
    secret_path, _ = secret_file(directory)
    cluster = LocalCluster(new_specs(directory, count), secret_path, requirepass=requirepass)
    try:
        cluster.start()
        cluster.wait_for_leader(LEADER_TIMEOUT_S)
        yield cluster
    finally:
        cluster.stop()


def client(cluster: LocalCluster, node_id: str, **kwargs: Any) -> redis.Redis:
    host, port = cluster.nodes[node_id].spec.client_addr
    kwargs.setdefault("password", cluster.requirepass)
    kwargs.setdefault("socket_timeout", 15)
    return redis.Redis(host=host, port=port, **kwargs)


def command(cluster: LocalCluster, node_id: str, *args: Any) -> Any:
    with client(cluster, node_id) as conn:
        return conn.execute_command(*args)


def status(cluster: LocalCluster, node_id: str) -> dict[str, Any]:
    return dict(json.loads(command(cluster, node_id, "RAFT.STATUS")))


def wait_until(predicate: Any, timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        with contextlib.suppress(redis.RedisError, OSError):
            value = predicate()
            if value:
                return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout_s} s: {what}")
        time.sleep(0.1)


def digests(cluster: LocalCluster, node_ids: list[str]) -> dict[str, dict[str, Any]]:
    return {n: json.loads(command(cluster, n, "RAFT.DIGEST")) for n in node_ids}


def wait_converged(cluster: LocalCluster, node_ids: list[str]) -> dict[str, Any]:
    """Until every node reports the same applied index and digest -> that digest."""

    def same() -> dict[str, Any] | None:
        seen = digests(cluster, node_ids)
        values = {json.dumps(d, sort_keys=True) for d in seen.values()}
        return next(iter(seen.values())) if len(values) == 1 else None

    return dict(wait_until(same, CONVERGE_TIMEOUT_S, f"equal RAFT.DIGEST on {node_ids}"))


def redis_cli() -> str:
    """The redis-cli executable; installs redis-tools once if missing; skips if impossible."""
    global _install_tried
    found = shutil.which("redis-cli")
    if found is None and not _install_tried:
        _install_tried = True
        subprocess.run(
            ["bash", str(ROOT / "scripts" / "install-system-deps.sh")],
            timeout=INSTALL_TIMEOUT_S,
            check=False,
        )
        found = shutil.which("redis-cli")
    if found is None:
        reason = (
            "redis-cli is not installed and scripts/install-system-deps.sh could not install it"
        )
        warnings.warn(reason, stacklevel=2)
        pytest.skip(reason)
    return found


def run_cli(cluster: LocalCluster, node_id: str, *args: str) -> str:
    """redis-cli against a node -> its output (stripped)."""
    port = cluster.nodes[node_id].spec.client_addr[1]
    argv = [redis_cli(), "-h", "127.0.0.1", "-p", str(port)]
    if cluster.requirepass is not None:
        argv += ["--no-auth-warning", "-a", cluster.requirepass]
    done = subprocess.run([*argv, *args], capture_output=True, text=True, timeout=30, check=True)
    return done.stdout.strip()


def admin(cluster: LocalCluster, node_id: str, *args: str) -> str:
    """An admin command as an operator types it: through redis-cli when it is installed (else
    redis-py, so the admin tests still run) -> the reply as text."""
    if shutil.which("redis-cli") is not None:
        return run_cli(cluster, node_id, *args)
    reply = command(cluster, node_id, *args)
    return reply.decode() if isinstance(reply, bytes) else str(reply)
