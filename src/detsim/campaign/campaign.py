"""A campaign: scenarios x seeds on a backend (local processes or Dask), summarised.

Owned here: turning (scenarios, seeds, params) into tasks, collecting results, and the
per-scenario summary (seeds, failures, histories and operations checked and the properties
checked, virtual seconds, the runs' wall seconds summed) and the campaign's own elapsed wall
time. Two speeds, never to be confused: `ScenarioSummary.run_speed` divides by the runs' summed
wall time (a worker's speed), `CampaignReport.speed` by the campaign's elapsed wall time (what
`--jobs` buys).
Presentation (progress bar, table) is `report`; the CLI is `detsim.cli.sim`.

Rules: seeds are explicit ints (reproducible by name); a scenario's params are checked in the
parent before any worker starts (bad params: ValueError, not a hundred failing runs); results
are sorted by (scenario order, seed) whatever order workers finish in.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from typing import Any

from detsim.campaign import pool
from detsim.campaign.catalogue import registry
from detsim.campaign.runner import RunResult, Task, write_artifact

MAX_SEEDS = 10_000_000


@dataclasses.dataclass(frozen=True, slots=True)
class ScenarioSummary:
    scenario: str
    expect_pass: bool
    seeds: int
    failures: int
    operations: int
    virtual_s: float
    wall_s: float  # summed over runs (CPU-ish time), not the campaign's elapsed time
    histories: int = 0
    checks: tuple[str, ...] = ()  # every property any run checked, in first-seen order

    @property
    def run_speed(self) -> float:
        """Virtual seconds per wall second of one worker (the runs' wall time, summed)."""
        return self.virtual_s / self.wall_s if self.wall_s > 0 else 0.0


@dataclasses.dataclass(frozen=True, slots=True)
class CampaignReport:
    results: list[RunResult]
    summaries: list[ScenarioSummary]
    elapsed_s: float
    jobs: int

    @property
    def failures(self) -> list[RunResult]:
        return [r for r in self.results if not r.passed]

    @property
    def virtual_s(self) -> float:
        return sum(s.virtual_s for s in self.summaries)

    @property
    def speed(self) -> float:
        """Virtual seconds per wall second of the whole campaign (elapsed, all workers)."""
        return self.virtual_s / self.elapsed_s if self.elapsed_s > 0 else 0.0


def check_params(names: Sequence[str], params: dict[str, Any]) -> None:
    """Raise ValueError if a scenario rejects `params` (it validates them in `simulation`)."""
    for name in names:
        registry[name].simulation(0, params)


def make_tasks(
    names: Sequence[str],
    seeds: Sequence[int],
    params: dict[str, Any],
    artifacts_dir: str | None,
    return_artifact: bool = False,
) -> list[Task]:
    if len(seeds) > MAX_SEEDS:
        raise ValueError(f"at most {MAX_SEEDS} seeds per campaign, got {len(seeds)}")
    return [Task(n, s, dict(params), artifacts_dir, return_artifact) for n in names for s in seeds]


def run_campaign(
    names: Sequence[str],
    seeds: Sequence[int],
    *,
    jobs: int,
    params: dict[str, Any] | None = None,
    artifacts_dir: str | None = None,
    dask_address: str | None = None,
    on_result: Callable[[RunResult], None] | None = None,
) -> CampaignReport:
    """Run every (scenario, seed); call `on_result` as each finishes; return the report."""
    params = dict(params or {})
    check_params(names, params)
    started = time.perf_counter()
    results: list[RunResult] = []

    def collect(result: RunResult) -> None:
        results.append(result)
        if on_result is not None:
            on_result(result)

    if dask_address is None:
        pool.run_local(make_tasks(names, seeds, params, artifacts_dir), jobs, collect)
    else:
        from detsim.campaign import dask_backend

        remote = make_tasks(names, seeds, params, None, return_artifact=True)
        dask_backend.run_dask(remote, dask_address, jobs, _writing(collect, artifacts_dir))
    order = {name: i for i, name in enumerate(names)}
    results.sort(key=lambda r: (order[r.scenario], r.seed))
    return CampaignReport(results, summarise(names, results), time.perf_counter() - started, jobs)


def _writing(
    collect: Callable[[RunResult], None], artifacts_dir: str | None
) -> Callable[[RunResult], None]:
    """Remote workers send artifacts back: write them here, keep only the path."""

    def write_then_collect(result: RunResult) -> None:
        if result.artifact is not None and artifacts_dir is not None:
            path = str(write_artifact(result.artifact, artifacts_dir))
            result = dataclasses.replace(result, artifact_path=path)
        collect(dataclasses.replace(result, artifact=None))

    return write_then_collect


def summarise(names: Sequence[str], results: Sequence[RunResult]) -> list[ScenarioSummary]:
    summaries = []
    for name in names:
        mine = [r for r in results if r.scenario == name]
        summaries.append(
            ScenarioSummary(
                scenario=name,
                expect_pass=registry[name].expect_pass,
                seeds=len(mine),
                failures=sum(not r.passed for r in mine),
                operations=sum(r.operations for r in mine),
                virtual_s=sum(r.virtual_s for r in mine),
                wall_s=sum(r.wall_s for r in mine),
                histories=sum(r.histories for r in mine),
                checks=tuple(dict.fromkeys(c for r in mine for c in r.checks)),
            )
        )
    return summaries
