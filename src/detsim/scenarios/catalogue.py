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
            "8-16 clients pipelining 2-8 ops a batch",
            (8, 16),
            4,
            2,
            pipeline=4,
            think_s=(0.0, 0.05),
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
    )
}

#: (nemesis, workload, nodes) beyond "every nemesis x mixed x 3 nodes".
COMBINATIONS: Final[tuple[tuple[str, str, int], ...]] = ()


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
    return StoreScenario(
        name=_name(nemesis, workload, nodes),
        description=f"{nodes} nodes: {row.description}; {shape.description}",
        shape=shape,
        families=row.families,
        nodes=nodes,
        spares=row.spares,
        snapshot_threshold=row.snapshot_threshold,
    )


def _scenario(store: StoreScenario) -> Scenario:
    return Scenario(
        name=store.name,
        description=store.description,
        build=store.build,
        simulation=store.simulation,
    )


def _generate() -> tuple[StoreScenario, ...]:
    rows = [(n, "mixed", 3) for n in NEMESES] + list(COMBINATIONS)
    names = [_name(*row) for row in rows]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"scenario rows repeat: {duplicates}")
    return tuple(_store_scenario(*row) for row in rows)


STORE_SCENARIOS: Final = _generate()
SCENARIOS: Final = tuple(_scenario(s) for s in STORE_SCENARIOS)
__all__ = ["COMBINATIONS", "NEMESES", "SCENARIOS", "STORE_SCENARIOS", "WORKLOADS"]
