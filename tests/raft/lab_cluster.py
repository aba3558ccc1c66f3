"""A Raft cluster in the simulator for the lab tests: RaftNode drivers over the real transport
and storage, one simulated host each, with the invariant checker fed after every Ready.

- Each host's init builds a fresh `RaftNode` with a fresh `MemoryKV` (what a process restart
  does) on the host's simulated disk at DATA_DIR; `boots[id]` counts its incarnations.
- `RaftInvariants` is fed by the shared feed (`InvariantsObserver`,
  detsim.check.raft_observer), extended with the lab's `on_persisted` hooks and `acked`. A
  violation, or any exception that stops a node, is kept in `errors` and raised by every helper
  that waits (`until`) and by `finish()`, so a test fails at once with the first one.
- Helpers run requests on a node's own host (`call`), so a killed host raises NodeDown
  instead of hanging.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import detsim
from detsim.check.raft import RaftInvariants
from detsim.check.raft_observer import InvariantsObserver, node_view
from detsim.raft import MemoryKV, RaftNode, RaftNodeConfig
from detsim.raft.core.messages import Entry
from detsim.raft.core.ready import Ready

T = TypeVar("T")

PORT = 7000
DATA_DIR = "/data/raft"
SECRET = b"lab secret"
#: Election timeout 1-2 s with the default 0.1 s tick.
TICK_S = 0.1


def ip_of(index: int) -> str:
    return f"10.0.1.{index + 1}"


class _Observer(InvariantsObserver):
    """The invariant feed, plus the lab's own hooks: `on_persisted`, and `acked` in order."""

    def __init__(self, cluster: LabCluster, node_id: str, boot: int) -> None:
        super().__init__(cluster.checker, node_id, boot)
        self.cluster = cluster

    def persisted(self, node: RaftNode, ready: Ready) -> None:
        super().persisted(node, ready)
        for hook in self.cluster.on_persisted:
            hook(self.node_id, node, ready)

    def acknowledged(self, node: RaftNode, entry: Entry, result: Any) -> None:
        self.cluster.acked.append((entry.index, entry.term, entry.data))
        super().acknowledged(node, entry, result)


class LabCluster:
    """`n` voters n1..nN (plus `learners` started with join=True), ready to run in `sim`."""

    def __init__(
        self,
        sim: detsim.Simulation,
        n: int = 3,
        *,
        spares: int = 0,
        snapshot_threshold: int = 10_000,
        raft: dict[str, Any] | None = None,
    ) -> None:
        self.sim = sim
        self.voters = [f"n{k + 1}" for k in range(n)]
        self.spares = [f"n{k + 1}" for k in range(n, n + spares)]
        self.ids = self.voters + self.spares
        self.addresses = {nid: (ip_of(k), PORT) for k, nid in enumerate(self.ids)}
        self.snapshot_threshold = snapshot_threshold
        self.raft_overrides = raft or {}
        self.checker = RaftInvariants()
        self.nodes: dict[str, detsim.Node] = {}
        self.rafts: dict[str, RaftNode] = {}
        self.sms: dict[str, MemoryKV] = {}
        self.boots: dict[str, int] = {}
        self.errors: list[BaseException] = []
        self.acked: list[tuple[int, int, bytes]] = []
        #: Called (node id, node, ready) after each persisted Ready, on the node's loop.
        self.on_persisted: list[Callable[[str, RaftNode, Ready], None]] = []
        for k, nid in enumerate(self.ids):
            self.nodes[nid] = sim.add_node(nid, ip=ip_of(k), init=self._init_for(nid))

    # --- nodes ---------------------------------------------------------------------------------

    def config(self, nid: str) -> RaftNodeConfig:
        join = nid in self.spares
        peers = {p: a for p, a in self.addresses.items() if p != nid and p in self.voters}
        return RaftNodeConfig(
            node_id=nid,
            raft_addr=("0.0.0.0", PORT),
            peers=peers,
            data_dir=DATA_DIR,
            secret=SECRET,
            join=join,
            tick_interval_s=TICK_S,
            snapshot_threshold_entries=self.snapshot_threshold,
            raft=self.raft_overrides,
        )

    def _init_for(self, nid: str) -> Callable[[], Awaitable[None]]:
        async def init() -> None:
            boot = self.boots[nid] = self.boots.get(nid, -1) + 1
            sm = self.sms[nid] = MemoryKV()
            node = RaftNode(self.config(nid), sm, observer=_Observer(self, nid, boot))
            self.rafts[nid] = node
            try:
                await node.run()
            except asyncio.CancelledError:
                raise
            except BaseException as exc:
                self.errors.append(exc)
                raise

        return init

    def alive(self) -> list[str]:
        return [n for n in self.ids if self.nodes[n].alive and self._running(n)]

    def _running(self, nid: str) -> bool:
        node = self.rafts.get(nid)
        return node is not None and node.running

    def raft(self, nid: str) -> RaftNode:
        return self.rafts[nid]

    # --- waiting -------------------------------------------------------------------------------

    def raise_errors(self) -> None:
        if self.errors:
            raise self.errors[0]

    async def until(
        self, cond: Callable[[], bool], timeout_s: float = 30.0, what: str = "condition"
    ) -> None:
        """Poll `cond` every 50 ms of virtual time; fail after `timeout_s`."""
        deadline = self.sim.now + timeout_s
        while True:
            self.raise_errors()
            if cond():
                return
            assert self.sim.now < deadline, f"{what} not reached in {timeout_s} s"
            await asyncio.sleep(0.05)

    def leaders(self, among: Sequence[str] | None = None) -> list[str]:
        ids = self.alive() if among is None else [n for n in among if n in self.alive()]
        return [n for n in ids if self.rafts[n].core.role_name == "leader"]

    def leader(self, among: Sequence[str] | None = None) -> str | None:
        """The leader of the highest term among `among` (alive), if any."""
        leaders = self.leaders(among)
        if not leaders:
            return None
        return max(leaders, key=lambda n: self.rafts[n].core.term)

    async def wait_leader(self, among: Sequence[str] | None = None, timeout_s: float = 30.0) -> str:
        """A leader among `among` that the others of `among` follow (one per term is
        the checker's business; this waits until the group agrees on it)."""

        def agreed() -> bool:
            group = self.alive() if among is None else list(among)
            lead = self.leader(group)
            if lead is None:
                return False
            term = self.rafts[lead].core.term
            return all(
                self.rafts[n].core.leader == lead and self.rafts[n].core.term == term
                for n in group
                if n in self.alive()
            )

        await self.until(agreed, timeout_s, f"a leader agreed among {among or 'all'}")
        lead = self.leader(among)
        assert lead is not None
        return lead

    # --- requests ------------------------------------------------------------------------------

    async def call(self, nid: str, fn: Callable[[RaftNode], Awaitable[T]]) -> T:
        """Run `fn(raft node)` on the node's own host."""
        node = self.rafts[nid]
        return await self.nodes[nid].spawn(fn(node))

    async def propose(self, nid: str, data: bytes) -> Any:
        return await self.call(nid, lambda r: r.propose(data))

    async def propose_until_ok(
        self, data: bytes, timeout_s: float = 60.0, among: Sequence[str] | None = None
    ) -> Any:
        """Propose at whichever node leads, retrying on any error, until it is applied."""
        deadline = self.sim.now + timeout_s
        while True:
            self.raise_errors()
            assert self.sim.now < deadline, f"proposal {data!r} not applied in {timeout_s} s"
            lead = self.leader(among)
            if lead is None:
                await asyncio.sleep(0.1)
                continue
            try:
                return await asyncio.wait_for(self.propose(lead, data), 5.0)
            except Exception:
                await asyncio.sleep(0.1)

    def applied(self, nid: str) -> int:
        return self.rafts[nid].core.applied

    def commit(self, nid: str) -> int:
        return self.rafts[nid].core.commit

    def applied_data(self, nid: str) -> dict[bytes, bytes]:
        return self.sms[nid].data

    # --- faults --------------------------------------------------------------------------------

    def kill(self, nid: str) -> None:
        self.sim.kill(nid)

    def crash(self, nid: str) -> None:
        self.sim.crash(nid)

    def restart(self, nid: str) -> None:
        self.sim.restart(nid)

    def isolate(self, nid: str) -> None:
        """Cut `nid` off from every other node (after healing: partitions add up)."""
        self.sim.net.heal()
        others = [n for n in self.ids if n != nid]
        self.sim.net.partition([nid], others)

    # --- the end -------------------------------------------------------------------------------

    async def converge(self, timeout_s: float = 60.0, among: Sequence[str] | None = None) -> None:
        """Heal, then wait until every live node (of `among`) applied the same last index."""
        self.sim.net.heal()
        ids = list(among or self.ids)

        def same() -> bool:
            live = [n for n in ids if n in self.alive()]
            if not live:
                return False
            lead = self.leader(live)
            if lead is None:
                return False
            target = self.rafts[lead].core.last_index
            return all(self.applied(n) == target for n in live)

        await self.until(same, timeout_s, "convergence")

    def finish(self) -> None:
        """Raise the first error, run the full log check, and compare the state machines."""
        self.raise_errors()
        live = self.alive()
        views = [node_view(self.rafts[n], self.boots[n]) for n in live]
        self.checker.check_logs(views)
        by_applied: dict[int, str] = {}
        for n in live:
            digest = self.sms[n].digest()
            index = self.sms[n].applied_index()
            assert by_applied.setdefault(index, digest) == digest, (
                f"{n} at applied index {index} has another state"
            )
