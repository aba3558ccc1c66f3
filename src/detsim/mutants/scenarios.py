"""The mutant scenarios: every default store scenario with one planted bug, by name.

`SCENARIOS` holds `mutant.<bug>.<scenario>` for every mutant and every store scenario the
default campaign runs (expect_pass=True), each expected to fail. The module is a scenario
provider (`detsim.campaign.catalogue`, `DETSIM_SCENARIO_MODULES`): `detsim mutants` names it
in its workers' environment, and the same variable lets `detsim sim --seed` and `detsim replay`
rebuild a mutant's run. The bug is in the scenario's name, so a mutant run, its artifact and
its replay can never pass for a clean run.

Rules: the bug is planted when the run is built (before any node exists) and reverted when its
main coroutine ends, so a worker that runs a clean scenario next runs it clean; the base
scenario's options come from its own name and the seed, so `mutant.<bug>.<scenario>` at seed S
faces exactly the faults and workload of `<scenario>` at seed S.
"""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any, Final

from detsim.campaign.scenario import Params, Scenario, Verdict
from detsim.mutants._patch import Mutant, plant, revert
from detsim.mutants.catalogue import MUTANTS
from detsim.scenarios import nemesis
from detsim.scenarios.catalogue import SCENARIOS as STORE_SCENARIOS
from detsim.scenarios.catalogue import STORE_SCENARIOS as STORE_ROWS
from detsim.sim.world import Simulation

MODULE: Final = __name__
PREFIX: Final = "mutant"


def scenario_name(bug: str, scenario: str) -> str:
    return f"{PREFIX}.{bug}.{scenario}"


def default_store_scenarios() -> list[str]:
    """The default campaign's store scenarios (expected to pass), in hunt order: those with a
    targeted nemesis family (`nemesis.TARGETED`, faults timed by the nodes' Raft state) first,
    then the others, each group in catalogue order. A hunt takes seed 0 of every scenario
    before seed 1 of any (sweep.search_order), so this order only decides which scenarios of
    a pass run first: the rare states the targeted ones reach on most seeds are tried before
    the random schedules. It is the same for every bug, and never depends on what found one."""
    store = [s for s in STORE_ROWS if s.expect_pass]
    targeted = [s.name for s in store if any(f in nemesis.TARGETED for f in s.families)]
    return targeted + [s.name for s in store if s.name not in targeted]


def _with_mutant(mutant: Mutant, base: Scenario) -> Scenario:
    def build(sim: Simulation, params: Params) -> Coroutine[Any, Any, Verdict]:
        plant(mutant)
        try:
            inner = base.build(sim, params)
        except BaseException:
            revert()
            raise

        async def run() -> Verdict:
            try:
                return await inner
            finally:
                revert()

        return run()

    return Scenario(
        name=scenario_name(mutant.name, base.name),
        description=f"[planted bug {mutant.name}] {base.description}",
        build=build,
        expect_pass=False,
        simulation=base.simulation,
    )


SCENARIOS: Final[tuple[Scenario, ...]] = tuple(
    _with_mutant(mutant, base) for mutant in MUTANTS for base in STORE_SCENARIOS if base.expect_pass
)
