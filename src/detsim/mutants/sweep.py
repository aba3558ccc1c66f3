"""The hunt for one planted bug: the default campaign against it, stopped at first detection.

Owned here: the search order and the stopping rules. Runs are (scenario, seed) pairs taken
round-robin, seed 0 of every scenario before seed 1 of any (a bug one fault family finds is
reached within one pass, whatever its place in the catalogue), on `jobs` spawned worker
processes started the campaign's way (`detsim.campaign.pool`: fixed hash seed, checked by
`pool.check_worker`; `runner.run_one` in each). The campaign's own pool waits for every run it
started; a hunt cannot (one slow run would hold it far past its budget), so it runs its own
`multiprocessing` pool, which it terminates when it stops.

Stopping rules: the first failing run ends the hunt (detected); otherwise the hunt ends at
`budget_s` wall seconds, or when every scenario ran `max_seeds` seeds (not detected); runs in
flight at the end are abandoned. A hunt reports the runs finished (`seeds`: runs, the
detecting one included) and the wall seconds from its start (workers' start-up included) to
its detection (or to its end when the bug was missed). `cpu_s`, the workers' CPU time, says
what the hunt cost on a machine shared with other work, where wall time says little.

The workers find the mutant scenarios through DETSIM_SCENARIO_MODULES, set while the pool
runs and restored after.
"""

from __future__ import annotations

import contextlib
import dataclasses
import multiprocessing
import multiprocessing.pool
import os
import queue
import resource
import time
from collections.abc import Iterator, Sequence
from typing import Final

from detsim.campaign import pool
from detsim.campaign.catalogue import ENV_MODULES
from detsim.campaign.runner import RunResult, Task, run_one
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
    if not 1 <= jobs <= pool.MAX_JOBS:
        raise ValueError(f"jobs must be in 1..{pool.MAX_JOBS}, got {jobs}")
    order = (
        Task(mutant_scenarios.scenario_name(mutant.name, name), seed, {}, artifacts_dir)
        for name, seed in search_order(scenarios, max_seeds)
    )
    started = time.perf_counter()
    cpu_before_s = _children_cpu_s()
    with mutant_provider(), pool.fixed_hash_seed():
        finished, detected_s = _run_until_failure(order, jobs, started + budget_s, started)
    cpu_s = _children_cpu_s() - cpu_before_s
    first_failure = finished[-1] if finished and not finished[-1].passed else None
    if first_failure is None:
        return HuntResult(mutant.name, False, len(finished), time.perf_counter() - started, cpu_s)
    return HuntResult(
        bug=mutant.name,
        detected=True,
        seeds=len(finished),
        wall_s=detected_s,
        cpu_s=cpu_s,
        scenario=first_failure.scenario.split(".", 2)[2],
        seed=first_failure.seed,
        failure=first_failure.summary[:MAX_FAILURE_CHARS],
        artifact_path=first_failure.artifact_path,
    )


def _run_until_failure(
    tasks: Iterator[Task], jobs: int, deadline: float, started: float
) -> tuple[list[RunResult], float]:
    """Keep `jobs` runs going on spawned workers until one fails, the tasks run out or the
    deadline passes; then terminate the workers (a run in flight is abandoned, not awaited:
    one long run must not hold a hunt past its budget). The results in completion order (a
    failure is the last), and the wall seconds at the failure (0.0 if none)."""
    done: queue.SimpleQueue[RunResult | BaseException] = queue.SimpleQueue()
    workers = multiprocessing.get_context("spawn").Pool(jobs, initializer=pool.check_worker)
    finished: list[RunResult] = []
    try:
        in_flight = sum(_submit(workers, tasks, done) for _ in range(jobs))
        while in_flight:
            try:
                item = done.get(timeout=max(deadline - time.perf_counter(), 0.0))
            except queue.Empty:
                break  # out of budget
            if isinstance(item, BaseException):
                raise item  # bad input, not a failing run (run_one never raises for those)
            finished.append(item)
            if not item.passed:
                return finished, time.perf_counter() - started
            in_flight += _submit(workers, tasks, done) - 1
        return finished, 0.0
    finally:
        workers.terminate()
        workers.join()


def _submit(
    workers: multiprocessing.pool.Pool,
    tasks: Iterator[Task],
    done: queue.SimpleQueue[RunResult | BaseException],
) -> int:
    """Start the next task, if any: 1 if one was started."""
    task = next(tasks, None)
    if task is None:
        return 0
    workers.apply_async(run_one, (task,), callback=done.put, error_callback=done.put)
    return 1


def _children_cpu_s() -> float:
    """CPU seconds of this process's ended children (the pool's workers, once it closed)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime
