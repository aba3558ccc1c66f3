"""One node of the replicated store: `NodeConfig` and `await serve(config)` (DESIGN "The
replicated store").

`serve` runs a `RaftNode` (detsim.raft.driver) whose state machine is the SQLite
`KVStateMachine`, and the RESP server (`KVServer`) on the client port, until cancelled. It is
plain asyncio: the same call is a real process's main and a simulated node's init.

Start and stop:
- the RESP server listens first; until the Raft node has loaded its storage and started, every
  request that needs Raft is answered `-NOLEADER the node is not running yet` (safe to retry);
- the initial cluster is the node and its `peers`, all voters, bootstrapped when `data_dir` is
  empty; with `join=True` the node starts empty as a learner waiting for `RAFT.ADDLEARNER`;
- cancellation stops the Raft node (pending requests fail: clients get `-TIMEOUT`, the outcome
  of an in-flight write being unknown), then closes the client port and its connections. If
  the Raft node stops by itself (a storage fault), `serve` closes the port and raises it.
- `secret=None` accepts any Raft peer; it is logged as a warning (and warned) at start.

Every tuning field has a default that suits a LAN cluster; the simulator tests use the same.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import warnings
from collections.abc import Mapping
from typing import Any

from detsim.kv.limits import RAFT_SETTINGS
from detsim.kv.server import MAX_CLIENT_CONNECTIONS, KVServer, ServerConfig
from detsim.kv.statemachine import KVStateMachine
from detsim.raft.driver import RaftNode, RaftNodeConfig, RaftObserver

Address = tuple[str, int]

_log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True, slots=True)
class NodeConfig:
    """One node's settings (DESIGN). `peers`: the other initial members, id -> Raft address.
    `peer_client_addrs`: id -> client address of the other nodes, where writes received by a
    follower are forwarded (a leader missing from it cannot be forwarded to: `-NOLEADER`)."""

    node_id: str
    raft_addr: Address
    client_addr: Address
    peers: Mapping[str, Address]
    data_dir: str
    join: bool = False
    secret: bytes | None = None
    requirepass: bytes | str | None = None
    # --- tuning -------------------------------------------------------------------------
    peer_client_addrs: Mapping[str, Address] = dataclasses.field(default_factory=dict)
    #: A request without an outcome after this long is answered `-TIMEOUT` (or -NOLEADER for
    #: a read: a read that times out changed nothing).
    request_timeout_s: float = 5.0
    max_client_connections: int = MAX_CLIENT_CONNECTIONS
    #: One Raft tick (the core's election timeout is 10-20 ticks).
    tick_interval_s: float = 0.1
    snapshot_threshold_entries: int = 10_000
    #: Overrides of the Raft core's RaftConfig fields.
    raft: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    #: The state machine's logical size bound (detsim.kv.limits.MAX_DATA_BYTES by default).
    max_data_bytes: int | None = None
    #: Hooks for tests and checkers (detsim.raft.RaftObserver); not part of the node's identity.
    observer: RaftObserver | None = dataclasses.field(default=None, compare=False, repr=False)

    def raft_config(self) -> RaftNodeConfig:
        return RaftNodeConfig(
            node_id=self.node_id,
            raft_addr=self.raft_addr,
            peers=dict(self.peers),
            data_dir=self.data_dir,
            secret=self.secret,
            join=self.join,
            tick_interval_s=self.tick_interval_s,
            snapshot_threshold_entries=self.snapshot_threshold_entries,
            raft={**RAFT_SETTINGS, **self.raft},
        )

    def server_config(self) -> ServerConfig:
        password = self.requirepass
        if isinstance(password, str):
            password = password.encode()
        return ServerConfig(
            node_id=self.node_id,
            client_addr=self.client_addr,
            requirepass=password,
            request_timeout_s=self.request_timeout_s,
            peer_client_addrs=dict(self.peer_client_addrs),
            max_connections=self.max_client_connections,
        )


def build(config: NodeConfig) -> tuple[RaftNode, KVServer]:
    """The node's parts, not started (for tests that want to look inside)."""
    if config.max_data_bytes is None:
        state_machine = KVStateMachine()
    else:
        state_machine = KVStateMachine(max_data_bytes=config.max_data_bytes)
    raft = RaftNode(config.raft_config(), state_machine, observer=config.observer)
    return raft, KVServer(config.server_config(), raft, state_machine)


async def serve(config: NodeConfig) -> None:
    """Run the node until cancelled (see the module header)."""
    await run_node(*build(config))


async def run_node(raft: RaftNode, server: KVServer) -> None:
    """Run parts made by `build` until cancelled."""
    if raft.config.secret is None:
        message = (
            f"node {raft.id}: no cluster secret: any host that reaches the Raft port "
            f"{raft.config.raft_addr} can join the cluster's traffic"
        )
        _log.warning(message)
        warnings.warn(message, RuntimeWarning, stacklevel=3)
    await server.start()
    try:
        await raft.run()
    finally:
        if _in_running_loop():
            await server.close()
        # else: the coroutine is being closed outside its loop (a simulation's teardown of a
        # node that was still running): nothing can be awaited, and its sockets die with it.
        server.state_machine.close()


def _in_running_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True
