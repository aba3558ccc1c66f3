"""The store's named failure scenarios (`SCENARIOS`, registered in detsim.campaign.catalogue).

A scenario = a workload shape x a nemesis x a cluster size. The three tables below are the
catalogue's source; `SCENARIOS` is generated from them by `_generate` (every nemesis on the
default workload and 3 nodes, then the rows of COMBINATIONS), so each registered scenario has
a clear name (`<nemesis>[_<workload>][_<n>n]`) and a one-line description built from the rows'
descriptions. Every one runs the same phases and checks (run.py, checks.py).
"""

from __future__ import annotations

import dataclasses
from typing import Final

from detsim.campaign.scenario import Scenario
from detsim.scenarios import nemesis as nm
from detsim.scenarios.run import StoreScenario
from detsim.scenarios.workload import WorkloadShape

WORKLOADS: Final = {
    w.name: w
    for w in (
        WorkloadShape(
            "mixed", "3-5 clients, mixed ops on 3 registers and 2 append logs", (3, 5), 3, 2
        ),
        WorkloadShape(
            "pipelined",
            "8-12 clients pipelining 4 ops a batch on 8 registers and 2 logs",
            (8, 12),
            8,
            2,
            pipeline=4,
            think_s=(0.1, 0.4),
            register_appends=False,
        ),
        WorkloadShape("hot", "6-10 clients contending for one register and one log", (6, 10), 1, 1),
        WorkloadShape(
            "big",
            "2-3 clients writing values from 1 KiB up to the 10 MiB write limit",
            (2, 3),
            2,
            1,
            value_bytes=(1024, 64 * 1024),
            big_values=True,
            think_s=(0.1, 0.4),
        ),
    )
}


@dataclasses.dataclass(frozen=True, slots=True)
class NemesisRow:
    name: str
    description: str
    families: tuple[nm.Family, ...]
    spares: int = 0
    snapshot_threshold: tuple[int, int] | None = None
    min_nodes: int = 3
    #: False: left out of the default campaign, with the reason in `known_issue` (shown first in
    #: the description). Never for a flaky scenario: only for a diagnosed bug outside this
    #: package that makes runs hang or fail, until it is fixed.
    expect_pass: bool = True
    known_issue: str = ""
    #: Choices for the Raft core's max_entries_per_append, drawn from the seed (empty: the
    #: core's default). Small: a lagging follower is brought up to date over many appends.
    max_entries_per_append: tuple[int, ...] = ()


NEMESES: Final = {
    row.name: row
    for row in (
        NemesisRow("calm", "no faults (baseline)", (nm.calm,)),
        NemesisRow(
            "partition_leader",
            "the leader partitioned away, again and again",
            (nm.partition_leader,),
        ),
        NemesisRow(
            "partition_minority",
            "a random minority partitioned from the majority",
            (nm.partition_minority,),
        ),
        NemesisRow(
            "partition_majority",
            "the leader left with a minority; the majority must elect",
            (nm.partition_majority,),
        ),
        NemesisRow("bridge", "two halves that cannot talk, one node sees both", (nm.bridge,)),
        NemesisRow(
            "leader_swap",
            "the leader cut off with the clients until a new one commits, then the two swapped",
            (nm.leader_swap,),
        ),
        NemesisRow(
            "mute_leader_kill_new",
            "the leader mute until a new one commits, then its held appends let through and "
            "the new leader killed",
            (nm.mute_leader_kill_new,),
        ),
        NemesisRow(
            "one_way_clog",
            "one-way clogs: the leader deaf or mute to its followers, or one link one way",
            (nm.one_way_clog,),
        ),
        NemesisRow("flapping", "partitions that change every fraction of a second", (nm.flapping,)),
        NemesisRow(
            "lossy_links",
            "packet loss as TCP sees it: frequent short clogs of random links",
            (nm.lossy_links,),
        ),
        NemesisRow(
            "latency_spikes",
            "latency jumps to 50 ms-1.5 s everywhere or on the leader's links",
            (nm.latency_spikes,),
        ),
        NemesisRow(
            "kill_leader",
            "the leader's process killed repeatedly, restarted after a hold",
            (nm.kill_leader,),
        ),
        NemesisRow(
            "crash_leader",
            "the leader loses power repeatedly (unsynced data lost or torn)",
            (nm.crash_leader,),
        ),
        NemesisRow(
            "power_loss_all", "every node loses power at once, repeatedly", (nm.power_loss_all,)
        ),
        NemesisRow(
            "power_loss_leader_late",
            "every node loses power at once; the old leader boots only after the others elected",
            (nm.power_loss_leader_late,),
        ),
        NemesisRow(
            "crash_mid_election",
            "the leader dies, then a node whose term just rose (a candidate, a voter) loses "
            "power before the election ends",
            (nm.crash_mid_election,),
        ),
        NemesisRow(
            "figure8",
            "Raft's Figure 8 round after round: the leader's entries reach one follower, it "
            "dies; the others elect a leader that dies at once; the old leader returns, leads, "
            "and dies while it brings a follower up to date one append at a time; the second "
            "leader returns and leads",
            (nm.figure8,),
            min_nodes=5,
            max_entries_per_append=(1, 1, 2),
        ),
        NemesisRow(
            "conf_change_race",
            "two leaders of different terms each remove a different member of the same 4 "
            "voters: the old leader's change reaches its own log only, the new leader is asked "
            "for its change before its term's first entry can commit, then the old leader "
            "returns and leads (Ongaro's single-server membership bug)",
            (nm.conf_change_race,),
            spares=2,
            min_nodes=nm.CONF_RACE_VOTERS,
        ),
        NemesisRow(
            "rolling_restart",
            "every member restarted in turn (kill or power loss), waiting for a leader",
            (nm.rolling_restart,),
        ),
        NemesisRow(
            "gc_pause_leader",
            "the leader paused (GC) longer than the election timeout, then resumed",
            (nm.gc_pause_leader,),
        ),
        NemesisRow(
            "clock_skew",
            "clocks jump by up to 30 s and drift up to 40% fast or slow",
            (nm.clock_skew,),
        ),
        NemesisRow(
            "disk_full",
            "one node's disk fills up (ENOSPC), now and then restarted",
            (nm.disk_full,),
        ),
        NemesisRow("slow_fsync", "one node's fsync takes 20-400 ms", (nm.slow_fsync,)),
        NemesisRow(
            "read_corruption",
            "one node's reads flip bits; it restarts often, reading its log",
            (nm.read_corruption,),
        ),
        NemesisRow(
            "torn_tail",
            "one node loses power again and again, unsynced log tails mostly torn",
            (nm.torn_tail,),
        ),
        NemesisRow(
            "snapshot_partition",
            "small snapshot threshold; a follower cut off past a compaction catches up by "
            "snapshot install",
            (nm.isolate_follower,),
            snapshot_threshold=(20, 80),
        ),
        NemesisRow(
            "membership",
            "spares added as learners, promoted, voters removed (the leader too)",
            (nm.membership_churn,),
            spares=2,
        ),
        NemesisRow(
            "membership_partitions",
            "membership changes while random minorities are partitioned",
            (nm.membership_churn, nm.partition_minority),
            spares=2,
        ),
        NemesisRow(
            "membership_kills",
            "membership changes while the leader is killed now and then",
            (nm.membership_churn, nm.kill_leader),
            spares=2,
        ),
        NemesisRow(
            "remove_leader",
            "the leader removed from the cluster, a spare added and promoted in its place",
            (nm.remove_leader,),
            spares=2,
        ),
        NemesisRow(
            "transfer_leadership",
            "leadership transferred to a random voter over and over under load",
            (nm.transfer_leadership,),
        ),
        NemesisRow(
            "transfer_partitions",
            "leadership transfers while minorities are partitioned",
            (nm.transfer_leadership, nm.partition_minority),
        ),
        NemesisRow(
            "kill_lossy",
            "leader kills while links drop packets",
            (nm.kill_leader, nm.lossy_links),
        ),
        NemesisRow(
            "crash_clock_skew",
            "leader power losses while clocks jump and drift",
            (nm.crash_leader, nm.clock_skew),
        ),
        NemesisRow(
            "pause_partitions",
            "GC pauses of the leader while minorities are partitioned",
            (nm.gc_pause_leader, nm.partition_minority),
        ),
        NemesisRow(
            "snapshot_crashes",
            "snapshot installs to a cut-off follower while the leader loses power",
            (nm.isolate_follower, nm.crash_leader),
            snapshot_threshold=(20, 80),
        ),
        NemesisRow(
            "slow_disk_latency",
            "one node's slow fsync while latency spikes",
            (nm.slow_fsync, nm.latency_spikes),
        ),
        NemesisRow(
            "chaos",
            "everything at once: flapping, lossy links, leader kills, GC pauses",
            (nm.flapping, nm.lossy_links, nm.kill_leader, nm.gc_pause_leader),
        ),
    )
}

#: (nemesis, workload, nodes) beyond "every nemesis x mixed x 3 nodes".
COMBINATIONS: Final[tuple[tuple[str, str, int], ...]] = (
    # 5- and 7-node clusters: the network and process families, where quorum sizes matter.
    *(
        (nemesis, "mixed", 5)
        for nemesis in (
            "partition_leader",
            "partition_minority",
            "partition_majority",
            "bridge",
            "one_way_clog",
            "flapping",
            "kill_leader",
            "crash_leader",
            "power_loss_all",
            "rolling_restart",
            "gc_pause_leader",
            "membership",
            "chaos",
            # A follower that took the old leader's held appends can win only with others
            # that did too: a majority besides the killed new leader takes 5 nodes.
            "mute_leader_kill_new",
            # Figure 8 needs a leader elected without the old leader and its one follower.
            "figure8",
        )
    ),
    *(
        (nemesis, "mixed", 7)
        for nemesis in (
            "partition_minority",
            "partition_majority",
            "bridge",
            "crash_leader",
            "chaos",
        )
    ),
    # Many clients pipelining, and contention on one key, under the main fault families.
    *(
        (nemesis, "pipelined", 3)
        for nemesis in (
            "calm",
            "partition_leader",
            "kill_leader",
            "power_loss_all",
            "transfer_leadership",
        )
    ),
    *((nemesis, "hot", 3) for nemesis in ("partition_minority", "crash_leader", "flapping")),
    ("chaos", "pipelined", 5),
    # Two single-server changes from one configuration can have disjoint majorities only
    # when it has an even number of voters.
    ("conf_change_race", "mixed", nm.CONF_RACE_VOTERS),
    # Big values near the size limit (few ops: each is megabytes through Raft and SQLite).
    *((nemesis, "big", 3) for nemesis in ("calm", "crash_leader", "snapshot_partition")),
)


def _name(nemesis: str, workload: str, nodes: int) -> str:
    return (
        nemesis
        + ("" if workload == "mixed" else f"_{workload}")
        + ("" if nodes == 3 else f"_{nodes}n")
    )


def _store_scenario(nemesis: str, workload: str, nodes: int) -> StoreScenario:
    row, shape = NEMESES[nemesis], WORKLOADS[workload]
    if nodes < row.min_nodes:
        raise ValueError(f"{nemesis} needs {row.min_nodes}+ nodes, got {nodes}")
    issue = f"{row.known_issue}: " if row.known_issue else ""
    return StoreScenario(
        name=_name(nemesis, workload, nodes),
        description=f"{issue}{nodes} nodes: {row.description}; {shape.description}",
        expect_pass=row.expect_pass,
        shape=shape,
        families=row.families,
        nodes=nodes,
        spares=row.spares,
        snapshot_threshold=row.snapshot_threshold,
        max_entries_per_append=row.max_entries_per_append,
    )


def _scenario(store: StoreScenario) -> Scenario:
    return Scenario(
        name=store.name,
        description=store.description,
        build=store.build,
        expect_pass=store.expect_pass,
        simulation=store.simulation,
    )


def _generate() -> tuple[StoreScenario, ...]:
    rows = [(n, "mixed", 3) for n, row in NEMESES.items() if row.min_nodes <= 3]
    rows += list(COMBINATIONS)
    names = [_name(*row) for row in rows]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"scenario rows repeat: {duplicates}")
    return tuple(_store_scenario(*row) for row in rows)


STORE_SCENARIOS: Final = _generate()
SCENARIOS: Final = tuple(_scenario(s) for s in STORE_SCENARIOS)
__all__ = ["COMBINATIONS", "NEMESES", "SCENARIOS", "STORE_SCENARIOS", "WORKLOADS"]
