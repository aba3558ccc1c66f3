"""A cluster of store nodes in the simulator for the kv tests: each host's init is
`serve(config)` (through `build` + `run_node`, to keep a handle on the parts), redis-py's
asyncio client runs on client hosts, unchanged.

- Each host's init builds a fresh node (fresh in-memory SQLite, the Raft storage on the host's
  simulated disk at DATA_DIR): what a process restart does. `boots[id]` counts incarnations.
- `RaftInvariants` is fed through the driver's observer hook (`NodeConfig.observer`) by the
  feed the scenarios use too (`InvariantsObserver`, detsim.check.raft_observer). A violation,
  or any exception that stops a node, is kept in `errors`; `until` and `finish` raise the first.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

import redis.asyncio

import detsim
from detsim.check.raft import RaftInvariants
from detsim.check.raft_observer import InvariantsObserver, node_view
from detsim.check.recorder import no_retry
from detsim.kv.node import NodeConfig, build, run_node
from detsim.kv.server import KVServer
from detsim.raft import RaftNode

T = TypeVar("T")

RAFT_PORT = 7000
CLIENT_PORT = 6379
DATA_DIR = "/data/kv"
SECRET = b"kv test secret"


def node_ip(index: int) -> str:
    return f"10.0.2.{index + 1}"


class KVCluster:
    """`n` store nodes n1..nN (voters) plus `spares` started with join=True, and `clients`
    client hosts c1..cM."""

    def __init__(
        self,
        sim: detsim.Simulation,
        n: int = 3,
        *,
        spares: int = 0,
        clients: int = 1,
        requirepass: str | None = None,
        request_timeout_s: float = 5.0,
        snapshot_threshold: int = 10_000,
        max_client_connections: int = 10_000,
    ) -> None:
        self.sim = sim
        self.voters = [f"n{k + 1}" for k in range(n)]
        self.spares = [f"n{k + 1}" for k in range(n, n + spares)]
        self.ids = self.voters + self.spares
        self.ips = {nid: node_ip(k) for k, nid in enumerate(self.ids)}
        self.requirepass = requirepass
        self.request_timeout_s = request_timeout_s
        self.snapshot_threshold = snapshot_threshold
        self.max_client_connections = max_client_connections
        self.checker = RaftInvariants()
        self.rafts: dict[str, RaftNode] = {}
        self.servers: dict[str, KVServer] = {}
        self.boots: dict[str, int] = {}
        self.errors: list[BaseException] = []
        self.nodes = {
            nid: sim.add_node(nid, ip=self.ips[nid], init=self._init_for(nid)) for nid in self.ids
        }
        self.clients = [sim.add_node(f"c{k + 1}", ip=f"10.0.9.{k + 1}") for k in range(clients)]

    def config(self, nid: str, boot: int) -> NodeConfig:
        return NodeConfig(
            node_id=nid,
            raft_addr=("0.0.0.0", RAFT_PORT),
            client_addr=("0.0.0.0", CLIENT_PORT),
            peers={p: (self.ips[p], RAFT_PORT) for p in self.voters if p != nid},
            data_dir=DATA_DIR,
            join=nid in self.spares,
            secret=SECRET,
            requirepass=self.requirepass,
            # The voters' only: a spare's client address reaches the others in its ADDLEARNER.
            peer_client_addrs={p: (self.ips[p], CLIENT_PORT) for p in self.voters if p != nid},
            request_timeout_s=self.request_timeout_s,
            snapshot_threshold_entries=self.snapshot_threshold,
            max_client_connections=self.max_client_connections,
            observer=InvariantsObserver(
                self.checker, nid, boot, on_violation=lambda _nid, exc: self.errors.append(exc)
            ),
        )

    def _init_for(self, nid: str) -> Callable[[], Awaitable[None]]:
        async def init() -> None:
            boot = self.boots[nid] = self.boots.get(nid, -1) + 1
            raft, server = build(self.config(nid, boot))
            self.rafts[nid], self.servers[nid] = raft, server
            try:
                await run_node(raft, server)
            except asyncio.CancelledError:
                raise
            except BaseException as exc:
                self.errors.append(exc)
                raise

        return init

    # --- clients -------------------------------------------------------------------------------

    def redis(self, nid: str, **kwargs: Any) -> redis.asyncio.Redis:
        """A redis-py asyncio client of node `nid` (no retries; build it on a client host)."""
        options: dict[str, Any] = {
            "host": self.ips[nid],
            "port": CLIENT_PORT,
            "retry": no_retry(),
            "socket_timeout": 10.0,
            "socket_connect_timeout": 2.0,
        }
        if self.requirepass is not None:
            options["password"] = self.requirepass
        options.update(kwargs)
        return redis.asyncio.Redis(**options)

    async def on_client(self, coro: Coroutine[Any, Any, T], k: int = 0) -> T:
        """Run `coro` on client host `k`."""
        return await self.clients[k].spawn(coro)

    async def command(self, nid: str, *args: Any, k: int = 0, **kwargs: Any) -> Any:
        """One command through a fresh client of `nid`; a reply error is returned, not raised."""

        async def run() -> Any:
            client = self.redis(nid, **kwargs)
            try:
                return await client.execute_command(*args)
            except (redis.exceptions.ResponseError, redis.exceptions.AuthenticationError) as exc:
                return exc
            finally:
                await client.aclose()

        return await self.on_client(run(), k)

    # --- state ---------------------------------------------------------------------------------

    def running(self, nid: str) -> bool:
        raft = self.rafts.get(nid)
        return self.nodes[nid].alive and raft is not None and raft.running

    def alive(self) -> list[str]:
        return [n for n in self.ids if self.running(n)]

    def raise_errors(self) -> None:
        if self.errors:
            raise self.errors[0]

    async def until(
        self, cond: Callable[[], bool], timeout_s: float = 30.0, what: str = "condition"
    ) -> None:
        deadline = self.sim.now + timeout_s
        while True:
            self.raise_errors()
            if cond():
                return
            assert self.sim.now < deadline, f"{what} not reached in {timeout_s} s"
            await asyncio.sleep(0.05)

    def leader(self, among: list[str] | None = None) -> str | None:
        ids = [n for n in (among or self.ids) if self.running(n)]
        leaders = [n for n in ids if self.rafts[n].core.role_name == "leader"]
        return max(leaders, key=lambda n: self.rafts[n].core.term) if leaders else None

    async def wait_leader(self, among: list[str] | None = None, timeout_s: float = 30.0) -> str:
        def agreed() -> bool:
            group = [n for n in (among or self.ids) if self.running(n)]
            lead = self.leader(group)
            if lead is None:
                return False
            term = self.rafts[lead].core.term
            return all(
                self.rafts[n].core.leader == lead and self.rafts[n].core.term == term
                for n in group
                if n in self.voters
            )

        await self.until(agreed, timeout_s, f"a leader agreed among {among or 'all'}")
        lead = self.leader(among)
        assert lead is not None
        return lead

    def followers(self, lead: str) -> list[str]:
        return [n for n in self.voters if n != lead and self.running(n)]

    async def converge(self, timeout_s: float = 60.0) -> None:
        """Heal, then wait until every live node applied the leader's last index."""
        self.sim.net.heal()

        def same() -> bool:
            live = self.alive()
            lead = self.leader(live)
            if lead is None:
                return False
            target = self.rafts[lead].core.last_index
            return all(self.rafts[n].core.applied == target for n in live)

        await self.until(same, timeout_s, "convergence")

    async def digests(self) -> dict[str, dict[str, Any]]:
        """RAFT.DIGEST of every live node, through the client port."""
        out = {}
        for nid in self.alive():
            reply = await self.command(nid, "RAFT.DIGEST")
            out[nid] = json.loads(reply)
        return out

    async def finish(self) -> None:
        """Converge, check the logs, compare RAFT.DIGEST; no server had an internal error."""
        await self.converge()
        self.raise_errors()
        views = [node_view(self.rafts[n], self.boots[n]) for n in self.alive()]
        self.checker.check_logs(views)
        digests = await self.digests()
        assert len({(d["applied_index"], d["digest"]) for d in digests.values()}) == 1, digests
        for nid, server in self.servers.items():
            assert server.stats.internal_errors == 0, (nid, server.stats)
