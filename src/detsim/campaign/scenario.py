"""The scenario contract: what a campaign runs for each seed, and what it gets back.

A `Scenario` is a name, a one-line description, whether the default campaign expects it to
pass, and `build(sim, params)`: it adds nodes to a fresh `Simulation` and returns the main
coroutine, which runs a workload under faults and returns a `Verdict`: pass or fail, how many
operations and histories its checkers looked at, and which properties they checked (`checks`,
short phrases such as "linearizability", shown by the campaign under its table).

Everything random in a scenario is drawn from `sim.seed` (or from the simulation's own seeded
streams), so a seed plus `params` rebuilds the run exactly; `simulation(seed, params)` gives
the Simulation's keyword arguments (network, disks, time limit). Workers find a scenario by its
name in the registry, so scenario objects are never pickled.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Coroutine, Mapping
from typing import Any

from detsim.sim.world import Simulation

Params = Mapping[str, Any]


@dataclasses.dataclass(frozen=True, slots=True)
class Verdict:
    """What a scenario's main coroutine returns: pass or fail, and how much was checked."""

    ok: bool
    operations: int  # client operations the checker looked at
    failure: str | None = None  # why it failed: the first line is the summary
    options: dict[str, Any] = dataclasses.field(default_factory=dict)  # drawn from the seed
    checks: tuple[str, ...] = ()  # the properties checked, e.g. ("linearizability",)
    histories: int = 1  # histories the checkers read (a store's run: one per key, say)

    def __post_init__(self) -> None:
        if not self.ok and not self.failure:
            raise ValueError("a failed Verdict must say why (failure=...)")
        if self.histories < 0 or self.operations < 0:
            raise ValueError("a Verdict counts operations and histories from 0")


BuildFn = Callable[[Simulation, Params], Coroutine[Any, Any, Verdict]]
SimulationKwargs = Callable[[int, Params], dict[str, Any]]


def no_simulation_kwargs(seed: int, params: Params) -> dict[str, Any]:
    return {}


@dataclasses.dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    description: str  # one line, shown by `detsim scenarios`
    build: BuildFn
    expect_pass: bool = True  # False: a planted bug, left out of the default campaign
    simulation: SimulationKwargs = no_simulation_kwargs

    def __post_init__(self) -> None:
        if not self.name or any(c.isspace() for c in self.name):
            raise ValueError(f"a scenario name is one word, got {self.name!r}")
        if "\n" in self.description:
            raise ValueError(f"scenario {self.name}: the description is one line")
