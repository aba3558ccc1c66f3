"""A cluster of store nodes and client hosts inside one Simulation, as the scenarios see it.

Owned here: `StoreCluster` (builds N voters n1..nN, spare nodes that start with join=True, and
client hosts c1..cM; keeps each node's current `RaftNode` and `KVServer`), and the Raft
invariant feed: every node's `NodeConfig.observer` is an `InvariantsObserver`
(detsim.check.raft_observer) feeding the cluster's one `RaftInvariants`.

Rules:
- A host's init is `serve(config)` through `build` + `run_node` (what a process does): a fresh
  in-memory state machine, the Raft storage on the host's simulated disk (DATA_DIR). `boots`
  counts incarnations; the invariant checker tells boots apart by it.
- A violation found by the invariant checker is kept in `violations` (the node it was found on
  also stops: the assert propagates through the driver). A node that stops by itself with any
  other exception is kept in `stops`; whether that is allowed (a disk fault on it) is the
  checks' decision, not this module's.
- Nothing here injects faults (nemesis.py) or judges a run (checks.py).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Final, TypeVar

import redis.asyncio
import redis.exceptions

from detsim.check.raft import RaftInvariants
from detsim.check.raft_observer import InvariantsObserver, node_view
from detsim.check.recorder import no_retry
from detsim.kv.node import NodeConfig, build, run_node
from detsim.kv.server import KVServer
from detsim.raft.driver import RaftNode
from detsim.sim.node import Node
from detsim.sim.world import Simulation

T = TypeVar("T")

RAFT_PORT: Final = 7000
CLIENT_PORT: Final = 6379
DATA_DIR: Final = "/data/kv"
SECRET: Final = b"detsim scenarios secret"
MAX_NODES: Final = 9  # voters + spares (the simulator allows 100 hosts; 9 keeps runs cheap)
MAX_CLIENT_HOSTS: Final = 16
POLL_S: Final = 0.05  # how often `until` re-tests its condition (virtual seconds)
ADMIN_TIMEOUT_S: Final = 8.0  # a client's socket timeout for one admin command
#: What a spare (join=True) node is configured with as `peers`: "all" the cluster's hosts, or
#: only the "initial" voters. With "initial", a spare added after a member that is not an
#: initial voter became leader never hears from it: the spare's transport refuses a hello
#: from a node not in its peer table, and it cannot learn that node from a log it never gets
#: (found by membership_5n seed 0; reported to the store's owner).
SPARE_PEERS: Final = ("all", "initial")


#: What the checks read of a running node (the feed's own view; checks.py imports it from here).
view = node_view


def node_ip(index: int) -> str:
    return f"10.0.2.{index + 1}"


def client_ip(index: int) -> str:
    return f"10.0.9.{index + 1}"


class NodeStop:
    """A node that stopped by itself: which, when, which boot, and why."""

    __slots__ = ("boot", "error", "node_id", "t")

    def __init__(self, node_id: str, boot: int, t: float, error: BaseException) -> None:
        self.node_id, self.boot, self.t, self.error = node_id, boot, t, error

    def __str__(self) -> str:
        return (
            f"{self.node_id} (boot {self.boot}) stopped at t={self.t:.3f}s: "
            f"{type(self.error).__name__}: {self.error}"
        )


class StoreCluster:
    """`voters` store nodes (n1..), `spares` join=True nodes after them, `clients` client hosts."""

    def __init__(
        self,
        sim: Simulation,
        voters: int,
        *,
        spares: int = 0,
        clients: int = 1,
        snapshot_threshold_entries: int = 10_000,
        request_timeout_s: float = 5.0,
        spare_peers: str = "all",
    ) -> None:
        if not 1 <= voters + spares <= MAX_NODES:
            raise ValueError(f"1..{MAX_NODES} store nodes, got {voters} + {spares} spares")
        if not 1 <= clients <= MAX_CLIENT_HOSTS:
            raise ValueError(f"1..{MAX_CLIENT_HOSTS} client hosts, got {clients}")
        self.sim = sim
        self.initial_voters = [f"n{k + 1}" for k in range(voters)]
        self.spares = [f"n{k + 1}" for k in range(voters, voters + spares)]
        self.ids = self.initial_voters + self.spares
        self.ips = {nid: node_ip(k) for k, nid in enumerate(self.ids)}
        self.snapshot_threshold_entries = snapshot_threshold_entries
        self.request_timeout_s = request_timeout_s
        if spare_peers not in SPARE_PEERS:
            raise ValueError(f"spare_peers is one of {SPARE_PEERS}, got {spare_peers!r}")
        self.spare_peers = spare_peers
        self.invariants = RaftInvariants()
        self.rafts: dict[str, RaftNode] = {}
        self.servers: dict[str, KVServer] = {}
        self.every_server: list[tuple[str, int, KVServer]] = []  # every incarnation's server
        self.boots: dict[str, int] = {}
        self.violations: list[str] = []
        self.stops: list[NodeStop] = []
        self.nodes = {
            nid: sim.add_node(nid, ip=self.ips[nid], init=self._init(nid)) for nid in self.ids
        }
        self.clients = [sim.add_node(f"c{k + 1}", ip=client_ip(k)) for k in range(clients)]

    # --- nodes ---------------------------------------------------------------------------------

    def config(self, nid: str, boot: int) -> NodeConfig:
        return NodeConfig(
            node_id=nid,
            raft_addr=("0.0.0.0", RAFT_PORT),
            client_addr=("0.0.0.0", CLIENT_PORT),
            peers={p: (self.ips[p], RAFT_PORT) for p in self._peers(nid) if p != nid},
            data_dir=DATA_DIR,
            join=nid in self.spares,
            secret=SECRET,
            # Not the spares': theirs reach the others in their ADDLEARNER (nemesis._add_learner).
            peer_client_addrs={
                p: (self.ips[p], CLIENT_PORT) for p in self.ids if p != nid and p not in self.spares
            },
            request_timeout_s=self.request_timeout_s,
            snapshot_threshold_entries=self.snapshot_threshold_entries,
            observer=InvariantsObserver(
                self.invariants, nid, boot, on_violation=self._keep_violation
            ),
        )

    def _keep_violation(self, nid: str, violation: AssertionError) -> None:
        self.violations.append(f"{nid}: {violation}")

    def _peers(self, nid: str) -> list[str]:
        """The initial voters for them; for a spare, every host (the operator lists the
        cluster's hosts) or, with spare_peers="initial", the initial voters only."""
        if nid in self.spares and self.spare_peers == "all":
            return self.ids
        return self.initial_voters

    def _init(self, nid: str) -> Callable[[], Awaitable[None]]:
        async def init() -> None:
            boot = self.boots[nid] = self.boots.get(nid, -1) + 1
            raft, server = build(self.config(nid, boot))
            self.rafts[nid], self.servers[nid] = raft, server
            self.every_server.append((nid, boot, server))
            try:
                await run_node(raft, server)
            except asyncio.CancelledError:
                raise
            except AssertionError as exc:  # an invariant or an assert: a bug, the run fails now
                self.stops.append(NodeStop(nid, boot, self.sim.now, exc))
                raise
            except Exception as exc:
                # The process exits on an error (a full disk, corruption it refuses to carry
                # on from): the host is down until the nemesis or the liveness phase boots it
                # again. checks.node_stops judges it at the end: allowed only for a disk
                # victim's disk errors.
                self.stops.append(NodeStop(nid, boot, self.sim.now, exc))
                self.sim.kill(nid)

        return init

    def running(self, nid: str) -> bool:
        raft = self.rafts.get(nid)
        return self.nodes[nid].alive and raft is not None and raft.running

    def alive(self) -> list[str]:
        return [nid for nid in self.ids if self.running(nid)]

    def leader(self) -> str | None:
        """The running leader of the highest term (None: no running node leads)."""
        leaders = [n for n in self.alive() if self.rafts[n].core.role_name == "leader"]
        return max(leaders, key=lambda n: self.rafts[n].core.term) if leaders else None

    def members(self) -> tuple[list[str], list[str]]:
        """(voters, learners) as the current leader sees them; the initial voters if none."""
        lead = self.leader()
        if lead is None:
            return list(self.initial_voters), []
        status = self.rafts[lead].status()
        return sorted(status["voters"]), sorted(status["learners"])

    def agreed_leader(self) -> str | None:
        """A leader that every running voter follows in its term (None: not yet)."""
        lead = self.leader()
        if lead is None:
            return None
        term = self.rafts[lead].core.term
        voters, _ = self.members()
        for nid in voters:
            if not self.running(nid):
                return None
            core = self.rafts[nid].core
            if core.leader != lead or core.term != term:
                return None
        return lead

    def converged(self) -> bool:
        """Every member up and applied up to the agreed leader's last index."""
        lead = self.agreed_leader()
        if lead is None:
            return False
        voters, learners = self.members()
        target = self.rafts[lead].core.last_index
        return all(
            self.running(n) and self.rafts[n].core.applied >= target for n in voters + learners
        )

    def describe(self) -> str:
        """One line on every node: running, role, term, leader, applied/last (for failures)."""
        parts = []
        for nid in self.ids:
            if not self.running(nid):
                parts.append(f"{nid}: down")
                continue
            core = self.rafts[nid].core
            parts.append(
                f"{nid}: {core.role_name} t{core.term} leader={core.leader} "
                f"applied={core.applied}/{core.last_index}"
            )
        voters, learners = self.members()
        return "; ".join(parts) + f" (voters {voters}, learners {learners})"

    async def until(
        self, cond: Callable[[], bool], timeout_s: float, *, poll_s: float = POLL_S
    ) -> bool:
        """Poll `cond` every `poll_s` on the virtual clock; False when `timeout_s` passed
        first. (A nemesis timing a fault to a window of tens of ms polls faster.)"""
        deadline = self.sim.now + timeout_s
        while not cond():
            if self.sim.now >= deadline:
                return False
            await asyncio.sleep(poll_s)
        return True

    # --- clients -------------------------------------------------------------------------------

    def redis(self, nid: str, **kwargs: Any) -> redis.asyncio.Redis:
        """A redis-py asyncio client of node `nid` that never retries (build it on a client)."""
        options: dict[str, Any] = {
            "host": self.ips[nid],
            "port": CLIENT_PORT,
            "retry": no_retry(),
            "socket_timeout": ADMIN_TIMEOUT_S,
            "socket_connect_timeout": 2.0,
        }
        options.update(kwargs)
        return redis.asyncio.Redis(**options)

    async def on_client(self, coro: Coroutine[Any, Any, T], k: int = 0) -> T:
        return await self.clients[k].spawn(coro)

    async def command(self, nid: str, *args: Any, k: int = 0) -> Any:
        """One command through a fresh client of `nid`, run on client host `k`: the reply, or
        the exception it raised (an error reply, a timeout, a reset), never raised."""

        async def run() -> Any:
            client = self.redis(nid)
            try:
                return await client.execute_command(*args)  # type: ignore[no-untyped-call]
            except (redis.exceptions.RedisError, OSError) as exc:
                return exc
            finally:
                await client.aclose()

        return await self.on_client(run(), k)

    async def digests(self) -> dict[str, tuple[int, str]]:
        """RAFT.DIGEST of every running member, through its client port."""
        voters, learners = self.members()
        out: dict[str, tuple[int, str]] = {}
        for nid in voters + learners:
            reply = await self.command(nid, "RAFT.DIGEST")
            if isinstance(reply, bytes):
                parsed = json.loads(reply)
                out[nid] = (int(parsed["applied_index"]), str(parsed["digest"]))
        return out

    def node(self, nid: str) -> Node:
        return self.nodes[nid]
