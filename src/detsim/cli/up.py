"""`detsim up --nodes N [--base-port P] [--data DIR] [--timeout S]`: a local cluster of the
replicated store, N `detsim serve` processes on loopback, until Ctrl-C or SIGTERM.

Owns the launcher's user interface; the layout, the secret and the processes are
`detsim.kv.cluster`'s (its header: ports, files, why no node outlives the launcher).

- A new DIR gets a generated cluster secret (DIR/cluster.secret, 0600) and its layout; a
  restart with the same DIR reuses both, and each node finds its data (a different --nodes or
  --base-port for an existing DIR is refused: the nodes' stored membership would not match).
- Ready means every node names the same leader; then it prints each node's ports and log and a
  `redis-cli -p PORT` line. No leader within --timeout: the nodes are stopped, exit 1.
- A node that exits while the cluster runs is reported (with its log's tail); the others keep
  running. Ctrl-C / SIGTERM stop every node (SIGTERM, then SIGKILL after
  detsim.kv.cluster.STOP_TIMEOUT_S): exit 0 if every node stopped cleanly, else 1.
"""

from __future__ import annotations

import signal
import socket
import sys
import time
from pathlib import Path
from types import FrameType
from typing import Final

import click

from detsim.kv.cluster import (
    DEFAULT_BASE_PORT,
    DEFAULT_NODES,
    HOST,
    MAX_NODES,
    POLL_INTERVAL_S,
    ClusterError,
    LocalCluster,
    load_layout,
    plan,
    ports_from_base,
    save_layout,
    secret_file,
)

DEFAULT_DATA_DIR: Final = "detsim-data"
DEFAULT_LEADER_TIMEOUT_S: Final = 60.0


class _Stop(Exception):
    """SIGTERM arrived (SIGINT arrives as KeyboardInterrupt)."""


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise _Stop


def _busy_ports(ports: list[int]) -> list[int]:
    """Ports on HOST that something already listens on or holds (checked by binding)."""
    busy = []
    for port in ports:
        with socket.socket() as sock:
            # As asyncio's servers do: a port left in TIME_WAIT by the last run is free.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((HOST, port))
            except OSError:
                busy.append(port)
    return busy


@click.command("up")
@click.option(
    "--nodes",
    type=click.IntRange(1, MAX_NODES),
    metavar="N",
    help=f"Number of nodes, 1..{MAX_NODES} [{DEFAULT_NODES}, or DIR's].",
)
@click.option(
    "--base-port",
    type=int,
    metavar="P",
    help=f"Client ports P.., Raft ports P+{MAX_NODES}.. [{DEFAULT_BASE_PORT}, or DIR's].",
)
@click.option(
    "--data",
    default=DEFAULT_DATA_DIR,
    show_default=True,
    metavar="DIR",
    help="Cluster directory: data, secret, logs (kept for the next start).",
)
@click.option(
    "--timeout",
    type=float,
    default=DEFAULT_LEADER_TIMEOUT_S,
    show_default=True,
    metavar="S",
    help="Seconds to wait for a leader.",
)
def command(nodes: int | None, base_port: int | None, data: str, timeout: float) -> None:
    """Run a local cluster of N store nodes on loopback until Ctrl-C."""
    directory = Path(data).absolute()
    try:
        count, base = load_layout(directory, nodes, base_port)
        client_ports, raft_ports = ports_from_base(count, base)
        specs = plan(directory, client_ports, raft_ports)
    except ClusterError as exc:
        raise click.UsageError(str(exc)) from None
    busy = _busy_ports([*client_ports, *raft_ports])
    if busy:
        raise click.ClickException(
            f"ports in use on {HOST}: {', '.join(map(str, busy))} (another cluster or a "
            "redis-server?); choose another --base-port"
        )
    try:
        save_layout(directory, count, base)
        secret_path, created = secret_file(directory)
    except OSError as exc:
        raise click.ClickException(f"cannot use {directory}: {exc}") from None
    click.echo(
        f"detsim up: {count} nodes, data in {directory} "
        f"({'new cluster secret' if created else 'existing data and secret'})"
    )
    sys.exit(_run(LocalCluster(specs, secret_path), timeout))


def _run(cluster: LocalCluster, timeout_s: float) -> int:
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    reported: set[str] = set()
    try:
        cluster.start()
        leader = cluster.wait_for_leader(timeout_s)
        _print_ready(cluster, leader)
        while True:
            _report_exits(cluster, reported)
            time.sleep(POLL_INTERVAL_S)
    except (KeyboardInterrupt, _Stop):
        click.echo("detsim up: stopping every node ...")
        failed = False
    except ClusterError as exc:
        click.echo(f"detsim up: {exc}", err=True)
        failed = True
    finally:
        # A second Ctrl-C must not cut the stop short (the nodes would still stop when this
        # process ends: their stdin closes, but without this summary).
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        codes = cluster.stop()
        signal.signal(signal.SIGTERM, previous)
    # A node killed by the SIGTERM of `stop` stopped as asked: it was already shutting down
    # (a terminal's Ctrl-C reached it first) and asyncio had put SIGTERM's default action back
    # as its loop closed. Its data is safe: the Raft state is fsynced before it is used.
    stopped_as_asked = (0, -signal.SIGTERM)
    unclean = {n: c for n, c in codes.items() if c not in stopped_as_asked and n not in reported}
    for node_id, code in sorted(unclean.items()):
        click.echo(f"detsim up: node {node_id} exited with status {code}", err=True)
    click.echo("detsim up: stopped")
    return 1 if failed or unclean else 0


def _print_ready(cluster: LocalCluster, leader: str) -> None:
    click.echo(f"detsim up: leader elected: {leader}")
    for node in cluster.nodes.values():
        spec = node.spec
        click.echo(
            f"  {spec.node_id:>4}  client {spec.client_addr[0]}:{spec.client_addr[1]}"
            f"  raft {spec.raft_addr[0]}:{spec.raft_addr[1]}  log {spec.log_path}"
        )
    first = next(iter(cluster.nodes.values())).spec
    click.echo(f"ready: redis-cli -p {first.client_addr[1]}")
    click.echo("Ctrl-C stops the cluster.")


def _report_exits(cluster: LocalCluster, reported: set[str]) -> None:
    for node_id, code in sorted(cluster.exited().items()):
        if node_id not in reported:
            reported.add(node_id)
            tail = cluster.nodes[node_id].log_tail(5)
            click.echo(f"detsim up: node {node_id} exited with status {code}:\n{tail}", err=True)
