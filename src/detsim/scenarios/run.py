"""One store scenario run: options from the seed, a safety phase, a liveness phase, the checks.

Owned here: `StoreScenario` (a workload shape x a nemesis x a cluster size: what catalogue.py
generates from its tables), `Options` (everything the seed decides, printed and recorded), and
the phases (tigerbeetle's VOPR shape, DESIGN "Examples to follow" 5):

1. Options from `random.Random("<name>:<seed>:options")`; `params` may pin any (tests shorten
   runs); recorded as the trace event `options` and in the Verdict.
2. Safety phase (`safety_s` virtual seconds): the client slots run the workload while the
   nemesis's families inject faults, each from its own seeded stream.
3. Liveness phase, faults off (`Faults.quiesce`): within stated bounds the cluster must agree on
   a leader (ELECTION_BOUND_S), serve every slot an ok (SERVE_BOUND_S) and converge
   (CONVERGE_BOUND_S), then keep every node's term for `checks.TERM_WATCH_TIMEOUTS` election
   timeouts (the watch's length from the nodes' RaftConfig and tick interval); then
   RAFT.DIGEST at every member and a recorded final read of every key at every member.
4. The checks (checks.py), in the order of `checks.CHECKS`. The verdict counts the history's
   completed operations and its keys (one history per key: the registers for `check_history`,
   the append-only keys for the exact log check).

The reproduce line is the campaign's (`detsim sim --scenario NAME --seed N`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
from collections.abc import Coroutine
from typing import Any, Final

import detsim.sim.trace as trace
from detsim.campaign.scenario import Params, Verdict
from detsim.check.recorder import HistoryLog
from detsim.kv.node import NodeConfig
from detsim.scenarios import checks
from detsim.scenarios.cluster import StoreCluster
from detsim.scenarios.nemesis import Family, Faults, Pace
from detsim.scenarios.workload import Appends, Slot, WorkloadShape, final_reads
from detsim.sim.config import DiskConfig, NetConfig
from detsim.sim.world import Simulation

#: Faults off -> every running voter follows one leader. Restarts, election timeouts (1-2 s),
#: pre-votes lost to a split vote and a leader waking from a GC pause all fit well inside.
ELECTION_BOUND_S: Final = 30.0
#: Faults off and a leader -> every slot got an ok (a slot's first attempts may still time
#: out against the connection it held: CLIENT_TIMEOUT_S each).
SERVE_BOUND_S: Final = 40.0
#: ... -> every member applied the leader's last index (a snapshot install included).
CONVERGE_BOUND_S: Final = 30.0
FINAL_READ_BOUND_S: Final = 30.0
#: Safety phase + the liveness bounds + the term watch (6 s at the default 1-2 s election
#: timeout) + the slots' last in-flight requests, with room.
TIME_LIMIT_MARGIN_S: Final = 60.0
SAFETY_S: Final = (6.0, 10.0, 14.0)
LATENCY_PROFILES_S: Final = ((0.0005, 0.002), (0.001, 0.010), (0.005, 0.030))
FSYNC_LATENCY_S: Final = (0.0, 0.001, 0.004)
MAX_FAILURE_LINES: Final = 20


@dataclasses.dataclass(frozen=True, slots=True)
class Options:
    """Everything a seed decides about a run (besides the in-run streams)."""

    nodes: int
    spares: int
    slots: int
    client_hosts: int
    safety_s: float
    latency_s: tuple[float, float]
    fsync_latency_s: float
    interval_s: tuple[float, float]
    hold_s: tuple[float, float]
    snapshot_threshold_entries: int
    spare_peers: str = "all"  # cluster.SPARE_PEERS
    #: The Raft core's max_entries_per_append on every node (None: the core's default).
    max_entries_per_append: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True, slots=True)
class StoreScenario:
    """A workload shape x a nemesis (its families run concurrently) x a cluster size."""

    name: str
    description: str
    shape: WorkloadShape
    families: tuple[Family, ...]
    nodes: int
    spares: int = 0
    expect_pass: bool = True
    snapshot_threshold: tuple[int, int] | None = None  # drawn from this range; None: default
    pace: tuple[tuple[float, float], tuple[float, float]] = ((0.5, 3.0), (1.0, 5.0))
    #: Choices for Options.max_entries_per_append (empty: the core's default, nothing drawn).
    max_entries_per_append: tuple[int, ...] = ()

    def draw_options(self, seed: int, params: Params) -> Options:
        rng = random.Random(f"{self.name}:{seed}:options")
        slots = rng.randint(*self.shape.slots)
        (ilo, ihi), (hlo, hhi) = self.pace
        interval_lo = round(rng.uniform(ilo, (ilo + ihi) / 2), 3)
        hold_lo = round(rng.uniform(hlo, (hlo + hhi) / 2), 3)
        drawn = Options(
            nodes=self.nodes,
            spares=self.spares,
            slots=slots,
            client_hosts=min(slots, 4),
            safety_s=rng.choice(SAFETY_S),
            latency_s=rng.choice(LATENCY_PROFILES_S),
            fsync_latency_s=rng.choice(FSYNC_LATENCY_S),
            interval_s=(interval_lo, round(rng.uniform(interval_lo, ihi), 3)),
            hold_s=(hold_lo, round(rng.uniform(hold_lo, hhi), 3)),
            snapshot_threshold_entries=(
                rng.randint(*self.snapshot_threshold) if self.snapshot_threshold else 10_000
            ),
        )
        if self.max_entries_per_append:  # drawn last: the other scenarios' draws are unchanged
            drawn = dataclasses.replace(
                drawn, max_entries_per_append=rng.choice(self.max_entries_per_append)
            )
        overrides: dict[str, Any] = {
            k: tuple(v) if isinstance(v, list) else v for k, v in params.items()
        }
        unknown = set(overrides) - set(drawn.as_dict())
        if unknown:
            raise ValueError(
                f"unknown params {sorted(unknown)} for {self.name}; known: {drawn.as_dict()}"
            )
        return dataclasses.replace(drawn, **overrides)

    def simulation(self, seed: int, params: Params) -> dict[str, Any]:
        options = self.draw_options(seed, params)
        worst = ELECTION_BOUND_S + SERVE_BOUND_S + CONVERGE_BOUND_S + 2 * FINAL_READ_BOUND_S
        return {
            "net": NetConfig(latency=options.latency_s),
            "disk": DiskConfig(fsync_latency=options.fsync_latency_s),
            "time_limit": options.safety_s + worst + TIME_LIMIT_MARGIN_S,
        }

    def build(self, sim: Simulation, params: Params) -> Coroutine[Any, Any, Verdict]:
        options = self.draw_options(sim.seed, params)
        raft: dict[str, Any] = {}
        if options.max_entries_per_append is not None:
            raft["max_entries_per_append"] = options.max_entries_per_append
        cluster = _TunedCluster(
            sim,
            options.nodes,
            raft=raft,
            spares=options.spares,
            clients=options.client_hosts,
            snapshot_threshold_entries=options.snapshot_threshold_entries,
            spare_peers=options.spare_peers,
        )
        return _Run(self, options, cluster).main()


class _TunedCluster(StoreCluster):
    """A StoreCluster whose nodes' Raft cores get `raft` (RaftConfig field overrides, from the
    scenario's options) on top of the store's own settings."""

    def __init__(self, sim: Simulation, voters: int, *, raft: dict[str, Any], **kw: Any) -> None:
        self.raft_overrides = dict(raft)
        super().__init__(sim, voters, **kw)

    def config(self, nid: str, boot: int) -> NodeConfig:
        base = super().config(nid, boot)
        if not self.raft_overrides:
            return base
        return dataclasses.replace(base, raft={**base.raft, **self.raft_overrides})


class _Run:
    """The state of one run, shared by its phases."""

    def __init__(self, scenario: StoreScenario, options: Options, cluster: StoreCluster) -> None:
        self.scenario, self.options, self.cluster = scenario, options, cluster
        self.sim = cluster.sim
        self.log = HistoryLog()
        self.appends = Appends()
        seed = self.sim.seed
        self.slots = [
            Slot(
                cluster,
                scenario.shape,
                self.log,
                self.appends,
                k,
                random.Random(f"{scenario.name}:{seed}:slot{k}"),
            )
            for k in range(options.slots)
        ]
        self.failures: list[str] = []

    async def main(self) -> Verdict:
        trace.event("options", scenario=self.scenario.name, **self.options.as_dict())
        if not await self.cluster.until(
            lambda: self.cluster.agreed_leader() is not None, ELECTION_BOUND_S
        ):
            self.failures.append(f"liveness: no leader {ELECTION_BOUND_S}s after the first boot")
            return self._verdict(None, 0)
        faults = await self._safety()
        await self._liveness(faults)
        return await self._check(faults)

    async def _safety(self) -> Faults:
        trace.event("phase", name="safety")
        opts, sim = self.options, self.sim
        until_s = sim.now + opts.safety_s
        rng = random.Random(f"{self.scenario.name}:{sim.seed}:nemesis")
        faults = Faults(
            self.cluster, rng, Pace(opts.interval_s, opts.hold_s), until_s, opts.latency_s
        )
        stop = asyncio.Event()
        tasks = [self._on_host(slot, slot.run_until(stop)) for slot in self.slots]
        await asyncio.gather(*(family(faults) for family in self.scenario.families))
        await asyncio.sleep(max(0.0, until_s - sim.now))
        trace.event("phase", name="liveness")
        faults.quiesce()
        stop.set()
        await asyncio.gather(*tasks)
        return faults

    def _on_host(self, slot: Slot, coro: Coroutine[Any, Any, Any]) -> Any:
        return self.cluster.clients[slot.host].spawn(coro)

    async def _liveness(self, faults: Faults) -> None:
        cluster = self.cluster
        if not await cluster.until(lambda: cluster.agreed_leader() is not None, ELECTION_BOUND_S):
            self.failures.append(
                f"liveness: no agreed leader {ELECTION_BOUND_S}s after faults stopped "
                f"({cluster.describe()})"
            )
            return
        served = await asyncio.gather(
            *(self._on_host(s, s.until_ok(SERVE_BOUND_S)) for s in self.slots)
        )
        for slot, ok in zip(self.slots, served, strict=True):
            if not ok:
                self.failures.append(
                    f"liveness: slot {slot.index} got no ok within {SERVE_BOUND_S}s of faults off"
                )
        for slot in self.slots:
            await self._on_host(slot, slot.close())
        if not await cluster.until(cluster.converged, CONVERGE_BOUND_S):
            self.failures.append(
                f"liveness: members did not converge within {CONVERGE_BOUND_S}s of faults off: "
                + cluster.describe()
            )
            return
        await self._watch_terms()

    async def _watch_terms(self) -> None:
        """Faults off and converged: no running node's term may move for TERM_WATCH_TIMEOUTS
        of the longest election timeout (stops at the first move, to report the cluster then)."""
        cluster = self.cluster

        def terms() -> dict[str, int]:
            return {nid: cluster.rafts[nid].core.term for nid in cluster.alive()}

        before = terms()
        watch_s = checks.TERM_WATCH_TIMEOUTS * max(
            2
            * cluster.rafts[nid].core.config.election_ticks
            * cluster.rafts[nid].config.tick_interval_s
            for nid in before
        )
        trace.event("term_watch", watch_s=watch_s, terms=before)
        moved = await cluster.until(lambda: bool(checks.term_changes(before, terms())), watch_s)
        if moved:
            lines = checks.term_changes(before, terms())
            self.failures += [f"{line}: {cluster.describe()}" for line in lines]

    async def _check(self, faults: Faults) -> Verdict:
        cluster, shape = self.cluster, self.scenario.shape
        log_keys = [k for k in shape.key_names() if k.startswith("a")]
        failures = checks.raft_invariants(cluster, faults.retired)
        failures += checks.node_stops(cluster, faults.disk_victims)
        failures += self.failures
        if not self.failures:
            voters, learners = cluster.members()
            failures += checks.convergence(await cluster.digests(), voters + learners)
            final = await final_reads(cluster, self.log, shape.key_names(), FINAL_READ_BOUND_S)
            failures += checks.durability(self.appends, final, log_keys)
        failures += checks.append_logs(self.log.events, log_keys)
        lines, result = checks.linearizability(self.log.events, skip_keys=log_keys)
        failures += lines
        return self._verdict(failures, result.keys + len(log_keys), faults)

    def _verdict(
        self, failures: list[str] | None, keys: int, faults: Faults | None = None
    ) -> Verdict:
        failures = self.failures if failures is None else failures
        options: dict[str, Any] = {**self.options.as_dict(), "scenario": self.scenario.name}
        if faults is not None:
            options["nemesis_actions"] = faults.actions
            options["disk_victims"] = sorted(faults.disk_victims)
            options["retired"] = sorted(faults.retired)
        operations = sum(1 for e in self.log.events if e.type != "invoke")
        if failures:
            summary = f"{len(failures)} problem(s); first: {failures[0]}"
            detail = "\n".join(failures[:MAX_FAILURE_LINES])
            return Verdict(False, operations, f"{summary}\n{detail}", options, checks.CHECKS, keys)
        return Verdict(True, operations, None, options, checks.CHECKS, keys)
