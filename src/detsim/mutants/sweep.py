"""The hunt for one planted bug: the default campaign against it, stopped at first detection.

Owned here: the search order and the stopping rules. Runs are (scenario, seed) pairs taken
round-robin, seed 0 of every scenario before seed 1 of any (a bug one fault family finds is
reached within one pass, whatever its place in the catalogue), on the campaign's local worker
pool (`detsim.campaign.pool`: spawned workers, fixed hash seed) with `jobs` workers.

Stopping rules: the first failing run ends the hunt (detected); otherwise no run is started
(and those queued but not started are cancelled) after `budget_s` wall seconds or past
`max_seeds` seeds of each scenario (not detected). A hunt reports the runs finished when it
ended (`seeds`: runs, counting the detecting one) and the wall seconds from its start to its
detection (or to its end when the bug was missed); runs still in flight at a detection finish
before the pool closes and are not counted. `cpu_s`, the workers' CPU time (all of it), says
what the hunt costs on a machine shared with other work, where wall time says little.

The workers find the mutant scenarios through DETSIM_SCENARIO_MODULES, set while the pool
runs and restored after.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import resource
import time
from collections.abc import Iterator, Sequence
from typing import Final

from detsim.campaign import pool
from detsim.campaign.catalogue import ENV_MODULES
from detsim.campaign.runner import RunResult, Task
from detsim.mutants import scenarios as mutant_scenarios
from detsim.mutants._patch import Mutant

DEFAULT_BUDGET_S: Final = 60.0
DEFAULT_MAX_SEEDS: Final = 1_000  # per scenario; the wall budget usually ends a hunt first
MAX_FAILURE_CHARS: Final = 300  # the detecting failure's summary line, as reported


@dataclasses.dataclass(frozen=True, slots=True)
class HuntResult:
    bug: str
    detected: bool
    seeds: int  # runs finished when the hunt ended (the detecting run included)
    wall_s: float  # from the hunt's start to its detection (or its end, if missed)
    cpu_s: float  # the workers' CPU seconds, runs in flight at the end included
    scenario: str | None = None  # the detecting run's base scenario
    seed: int | None = None
    failure: str | None = None  # the detecting run's summary line
    artifact_path: str | None = None

    def as_json(self) -> dict[str, object]:
        """The line `detsim mutants --json` prints (DESIGN "Campaigns")."""
        return {
            "bug": self.bug,
            "detected": self.detected,
            "seeds": self.seeds,
            "wall_s": round(self.wall_s, 1),
        }


class _Stop(Exception):
    """Raised out of the pool's callback to end the hunt: detected, or out of budget. The
    pool then cancels the runs not started yet (those running finish first)."""


def search_order(scenarios: Sequence[str], max_seeds: int) -> Iterator[tuple[str, int]]:
    """(scenario, seed), round-robin: every scenario's seed 0, then every seed 1, ..."""
    for seed in range(max_seeds):
        for name in scenarios:
            yield name, seed


@contextlib.contextmanager
def mutant_provider() -> Iterator[None]:
    """This package's scenarios in DETSIM_SCENARIO_MODULES while workers are started."""
    previous = os.environ.get(ENV_MODULES)
    modules = [m for m in (previous or "").split(",") if m.strip()]
    if mutant_scenarios.MODULE not in modules:
        modules.append(mutant_scenarios.MODULE)
    os.environ[ENV_MODULES] = ",".join(modules)
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(ENV_MODULES, None)
        else:
            os.environ[ENV_MODULES] = previous


def hunt(
    mutant: Mutant,
    scenarios: Sequence[str],
    *,
    jobs: int,
    budget_s: float = DEFAULT_BUDGET_S,
    max_seeds: int = DEFAULT_MAX_SEEDS,
    artifacts_dir: str | None = None,
) -> HuntResult:
    """Run `scenarios` x seeds with `mutant` planted until a run fails or the budget ends."""
    if not scenarios:
        raise ValueError("no scenario to hunt with")
    started = time.perf_counter()
    finished: list[RunResult] = []
    detected_s: list[float] = []  # wall seconds at the first failing result

    def tasks() -> Iterator[Task]:
        for name, seed in search_order(scenarios, max_seeds):
            if time.perf_counter() - started >= budget_s:
                return
            bugged = mutant_scenarios.scenario_name(mutant.name, name)
            yield Task(bugged, seed, {}, artifacts_dir)

    def collect(result: RunResult) -> None:
        finished.append(result)
        if not result.passed:
            detected_s.append(time.perf_counter() - started)
            raise _Stop
        if time.perf_counter() - started >= budget_s:
            raise _Stop

    cpu_before_s = _children_cpu_s()
    with mutant_provider(), contextlib.suppress(_Stop):
        pool.run_local(tasks(), jobs, collect)
    wall_s = time.perf_counter() - started
    cpu_s = _children_cpu_s() - cpu_before_s
    first_failure = next((r for r in finished if not r.passed), None)
    if first_failure is None:
        return HuntResult(mutant.name, False, len(finished), wall_s, cpu_s)
    return HuntResult(
        bug=mutant.name,
        detected=True,
        seeds=len(finished),
        wall_s=detected_s[0],
        cpu_s=cpu_s,
        scenario=first_failure.scenario.split(".", 2)[2],
        seed=first_failure.seed,
        failure=first_failure.summary[:MAX_FAILURE_CHARS],
        artifact_path=first_failure.artifact_path,
    )


def _children_cpu_s() -> float:
    """CPU seconds of this process's ended children (the pool's workers, once it closed)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime
