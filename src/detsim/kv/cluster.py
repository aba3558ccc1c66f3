"""A local cluster of `detsim serve` OS processes on one host (`detsim up`, and the tests that
run real processes).

Owns: the layout of a local cluster (node ids n1..nN, ports, one data directory each under the
cluster's directory), the cluster secret file, starting, stopping and killing the processes,
and waiting for a leader.

Layout of the cluster directory (kept between starts: a restart finds its data):

    DIR/cluster.secret     the cluster secret, 0600, generated once and reused
    DIR/cluster.json       {"nodes": N, "base_port": P}: a restart must use the same layout
    DIR/n1/ ...            each node's data directory
    DIR/logs/n1.log        each node's stderr

Ports from a base port P: node i (1-based) serves clients on P+i-1 and Raft on
P+RAFT_PORT_OFFSET+i-1; RAFT_PORT_OFFSET = MAX_NODES, so the two ranges never overlap.

No orphans: each node runs with `--stop-on-stdin-eof` and its stdin is a pipe whose write end
only this process holds: when this process ends in any way (SIGKILL included) the kernel closes
it and every node stops itself. Nodes also stay in this process's process group, so a terminal's
Ctrl-C reaches them all at once. `stop` sends SIGTERM and waits STOP_TIMEOUT_S, then SIGKILLs.

Nothing here imports detsim.sim: it is the production launcher.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import IO, Any, Final

MAX_NODES: Final = 100  # like a simulation
RAFT_PORT_OFFSET: Final = MAX_NODES
SECRET_FILE: Final = "cluster.secret"
LAYOUT_FILE: Final = "cluster.json"
LOG_DIR: Final = "logs"
SECRET_BYTES: Final = 32
STOP_TIMEOUT_S: Final = 10.0
POLL_INTERVAL_S: Final = 0.1
STATUS_TIMEOUT_S: Final = 1.0
HOST: Final = "127.0.0.1"
DEFAULT_NODES: Final = 3
DEFAULT_BASE_PORT: Final = 7379  # not 6379: a local redis-server may hold it

# The child's main: the `detsim` command line with `serve` (run through this interpreter, so
# the cluster runs the same detsim as its launcher, installed or not on PATH).
_SERVE_MAIN: Final = "import sys; from detsim.cli import main; sys.exit(main(prog_name='detsim'))"

Address = tuple[str, int]


class ClusterError(Exception):
    """The cluster could not be laid out, started, or did not elect a leader in time."""


@dataclasses.dataclass(frozen=True, slots=True)
class NodeSpec:
    node_id: str
    client_addr: Address
    raft_addr: Address
    data_dir: Path
    log_path: Path


def plan(
    directory: Path, client_ports: Sequence[int], raft_ports: Sequence[int], host: str = HOST
) -> list[NodeSpec]:
    """Nodes n1..nN with the given ports (N = len(client_ports))."""
    count = len(client_ports)
    if not 1 <= count <= MAX_NODES:
        raise ClusterError(f"a cluster has 1..{MAX_NODES} nodes, not {count}")
    assert len(raft_ports) == count
    ports = [*client_ports, *raft_ports]
    if len(set(ports)) != len(ports):
        raise ClusterError("every client and Raft port must be different")
    return [
        NodeSpec(
            node_id=f"n{i + 1}",
            client_addr=(host, client_ports[i]),
            raft_addr=(host, raft_ports[i]),
            data_dir=directory / f"n{i + 1}",
            log_path=directory / LOG_DIR / f"n{i + 1}.log",
        )
        for i in range(count)
    ]


def ports_from_base(count: int, base_port: int) -> tuple[list[int], list[int]]:
    """(client ports, Raft ports) of the layout in the module header."""
    if not 1 <= count <= MAX_NODES:
        raise ClusterError(f"--nodes must be 1..{MAX_NODES}, not {count}")
    last_port = base_port + RAFT_PORT_OFFSET + count - 1
    if base_port < 1024 or last_port > 65535:
        raise ClusterError(
            f"--base-port {base_port}: ports {base_port}..{last_port} must be within 1024..65535"
        )
    clients = [base_port + i for i in range(count)]
    return clients, [port + RAFT_PORT_OFFSET for port in clients]


def load_layout(directory: Path, nodes: int | None, base_port: int | None) -> tuple[int, int]:
    """The (nodes, base port) of the cluster in `directory`: the stored layout, which given
    values must match, or for a new directory the given ones (or the defaults)."""
    path = directory / LAYOUT_FILE
    if not path.exists():
        return nodes or DEFAULT_NODES, base_port or DEFAULT_BASE_PORT
    try:
        stored = json.loads(path.read_text())
        stored_nodes, stored_base = int(stored["nodes"]), int(stored["base_port"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ClusterError(
            f"{path} is unreadable ({exc}); remove {directory} to start afresh"
        ) from None
    wanted = (
        stored_nodes if nodes is None else nodes,
        stored_base if base_port is None else base_port,
    )
    if wanted != (stored_nodes, stored_base):
        raise ClusterError(
            f"{directory} holds a cluster of {stored_nodes} nodes on base port {stored_base}: "
            "start it with the same --nodes and --base-port, or use another --data"
        )
    return stored_nodes, stored_base


def save_layout(directory: Path, nodes: int, base_port: int) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    text = json.dumps({"nodes": nodes, "base_port": base_port}) + "\n"
    (directory / LAYOUT_FILE).write_text(text)


def secret_file(directory: Path) -> tuple[Path, bool]:
    """The cluster secret's file in `directory`, created (0600, random) if missing.
    -> (path, True if it was created now)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / SECRET_FILE
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        if path.stat().st_mode & 0o077:
            os.chmod(path, 0o600)
        return path, False
    with os.fdopen(fd, "w") as file:
        file.write(secrets.token_hex(SECRET_BYTES) + "\n")
        file.flush()
        os.fsync(file.fileno())
    return path, True


def serve_args(
    spec: NodeSpec,
    cluster: Sequence[NodeSpec],
    secret_path: Path | None,
    *,
    join: bool = False,
    extra: Sequence[str] = (),
) -> list[str]:
    """`detsim serve` arguments for `spec` in `cluster`: its peers are every other spec (a
    joining node accepts their Raft connections while it waits to be added)."""

    def address(addr: Address) -> str:
        return f"{addr[0]}:{addr[1]}"

    args = ["serve", "--id", spec.node_id, "--raft", address(spec.raft_addr)]
    args += ["--client", address(spec.client_addr), "--data", str(spec.data_dir)]
    for other in cluster:
        if other.node_id == spec.node_id:
            continue
        args += ["--peer", f"{other.node_id}={address(other.raft_addr)}"]
        args += ["--peer-client", f"{other.node_id}={address(other.client_addr)}"]
    if secret_path is not None:
        args += ["--secret-file", str(secret_path)]
    if join:
        args.append("--join")
    return [*args, "--stop-on-stdin-eof", *extra]


class NodeProcess:
    """One `detsim serve` process (see the module header for its stdin pipe)."""

    def __init__(self, spec: NodeSpec, args: Sequence[str], env: dict[str, str] | None) -> None:
        self.spec = spec
        self.args = list(args)
        self.env = env
        self.popen: subprocess.Popen[bytes] | None = None

    @property
    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    @property
    def returncode(self) -> int | None:
        return None if self.popen is None else self.popen.poll()

    def start(self) -> None:
        assert not self.running, self.spec.node_id
        self.spec.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.spec.log_path, "ab") as log:
            self.popen = subprocess.Popen(
                [sys.executable, "-c", _SERVE_MAIN, *self.args],
                stdin=subprocess.PIPE,
                stdout=log,
                stderr=log,
                env=self.env,
            )

    def signal(self, signum: int) -> None:
        if self.running:
            assert self.popen is not None
            self.popen.send_signal(signum)

    def wait(self, timeout_s: float) -> int | None:
        """The exit status, or None if still running after `timeout_s`."""
        if self.popen is None:
            return None
        try:
            code = self.popen.wait(timeout_s)
        except subprocess.TimeoutExpired:
            return None
        _close(self.popen.stdin)
        return code

    def kill(self) -> int:
        """SIGKILL (a crash: nothing is flushed) and reap."""
        assert self.popen is not None
        self.popen.kill()
        code = self.popen.wait()
        _close(self.popen.stdin)
        return code

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.spec.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


def _close(stream: IO[bytes] | None) -> None:
    if stream is not None:
        with contextlib.suppress(OSError):
            stream.close()


class LocalCluster:
    """The processes of a local cluster. `start()` starts every node not running; `stop()`
    stops them all (SIGTERM, then SIGKILL past STOP_TIMEOUT_S); use it as a context manager
    so nothing outlives the caller's block."""

    def __init__(
        self,
        specs: Sequence[NodeSpec],
        secret_path: Path | None,
        *,
        requirepass: str | None = None,
        extra_args: Sequence[str] = (),
    ) -> None:
        self.specs = list(specs)
        self.secret_path = secret_path
        self.requirepass = requirepass
        self.extra_args = list(extra_args)
        env = dict(os.environ)
        env.pop("DETSIM_CLUSTER_SECRET", None)
        if requirepass is not None:
            env["DETSIM_REQUIREPASS"] = requirepass
        self.env = env
        self.nodes = {
            spec.node_id: NodeProcess(
                spec, serve_args(spec, specs, secret_path, extra=extra_args), env
            )
            for spec in specs
        }

    def __enter__(self) -> LocalCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def add_joiner(self, spec: NodeSpec) -> NodeProcess:
        """A process for a node that starts empty (`--join`), to be added by RAFT.ADDLEARNER;
        not started yet."""
        assert spec.node_id not in self.nodes
        everyone = [*self.specs, spec]
        args = serve_args(spec, everyone, self.secret_path, join=True, extra=self.extra_args)
        node = self.nodes[spec.node_id] = NodeProcess(spec, args, self.env)
        return node

    def start(self, node_ids: Iterable[str] | None = None) -> None:
        for node_id in node_ids if node_ids is not None else list(self.nodes):
            if not self.nodes[node_id].running:
                self.nodes[node_id].start()

    def stop(
        self, node_ids: Iterable[str] | None = None, timeout_s: float = STOP_TIMEOUT_S
    ) -> dict[str, int]:
        """SIGTERM each, wait up to `timeout_s` for all, SIGKILL the rest -> exit statuses."""
        chosen = [self.nodes[n] for n in (node_ids if node_ids is not None else list(self.nodes))]
        for node in chosen:
            node.signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        codes: dict[str, int] = {}
        for node in chosen:
            if node.popen is None:
                continue
            code = node.wait(max(0.0, deadline - time.monotonic()))
            codes[node.spec.node_id] = node.kill() if code is None else code
        return codes

    def exited(self) -> dict[str, int]:
        """Nodes started and no longer running -> their exit status."""
        return {
            node_id: code
            for node_id, node in self.nodes.items()
            if (code := node.returncode) is not None
        }

    def status(self, node_id: str) -> dict[str, Any] | None:
        """RAFT.STATUS of a node, or None if it does not answer."""
        import redis  # redis-py: loaded only by the callers that poll

        spec = self.nodes[node_id].spec
        client = redis.Redis(
            *spec.client_addr,
            password=self.requirepass,
            socket_timeout=STATUS_TIMEOUT_S,
            socket_connect_timeout=STATUS_TIMEOUT_S,
        )
        try:
            reply = client.execute_command("RAFT.STATUS")  # type: ignore[no-untyped-call]
        except (redis.RedisError, OSError):
            return None
        finally:
            client.close()
        status: dict[str, Any] = json.loads(reply)
        return status

    def wait_for_leader(self, timeout_s: float, node_ids: Iterable[str] | None = None) -> str:
        """Until every running node (of `node_ids`) names the same leader -> its id.
        ClusterError on timeout, or if a node exits meanwhile."""
        chosen = list(node_ids if node_ids is not None else self.nodes)
        deadline = time.monotonic() + timeout_s
        while True:
            dead = {n: c for n, c in self.exited().items() if n in chosen}
            if dead:
                node_id, code = sorted(dead.items())[0]
                tail = self.nodes[node_id].log_tail()
                raise ClusterError(f"node {node_id} exited with status {code}:\n{tail}")
            leaders = {(s or {}).get("leader") for s in map(self.status, chosen)}
            if len(leaders) == 1 and None not in leaders:
                return str(leaders.pop())
            if time.monotonic() > deadline:
                raise ClusterError(f"no leader within {timeout_s} s (nodes see {leaders})")
            time.sleep(POLL_INTERVAL_S)
