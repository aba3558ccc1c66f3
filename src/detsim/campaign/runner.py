"""One run: a scenario, a seed and params -> a `RunResult` (and an artifact when it fails).

This is what every worker executes (local process or Dask). Rules:
- the scenario is looked up by name in the registry, in the worker: nothing but names,
  seeds and params crosses a process boundary on the way in;
- a failure is a `Verdict` with ok=False or any Exception out of the simulation (deadlock,
  time limit, an assertion in a checker); both give status "failed" and an artifact whose
  `replay` field rebuilds the run: `{"kind": "scenario", "scenario", "seed", "params"}`;
- `hash_seed` records the worker's PYTHONHASHSEED, so a campaign can say when a worker was not
  started the way replay will be.
"""

from __future__ import annotations

import dataclasses
import os
import traceback
from pathlib import Path
from typing import Any

from detsim.campaign.catalogue import registry
from detsim.campaign.scenario import Verdict
from detsim.sim import artifact
from detsim.sim.world import Simulation

MAX_TRACEBACK_CHARS = 8_000


@dataclasses.dataclass(frozen=True, slots=True)
class Task:
    scenario: str
    seed: int
    params: dict[str, Any] = dataclasses.field(default_factory=dict)
    artifacts_dir: str | None = None  # write the artifact of a failing run here
    return_artifact: bool = False  # also send it back (remote workers: the parent writes it)


@dataclasses.dataclass(frozen=True, slots=True)
class RunResult:
    scenario: str
    seed: int
    passed: bool
    failure: str | None
    operations: int
    virtual_s: float
    wall_s: float
    trace_hash: str
    options: dict[str, Any]
    params: dict[str, Any]
    hash_seed: str | None
    artifact_path: str | None = None
    artifact: dict[str, Any] | None = None
    checks: tuple[str, ...] = ()  # the verdict's properties checked (none: no verdict)
    histories: int = 0  # histories checked (0: the run ended before its verdict)

    @property
    def summary(self) -> str:
        """The failure's first line ("passed" for a pass)."""
        return "passed" if self.failure is None else self.failure.splitlines()[0]


def replay_spec(scenario: str, seed: int, params: dict[str, Any]) -> dict[str, Any]:
    return {"kind": "scenario", "scenario": scenario, "seed": seed, "params": params}


def run_one(task: Task) -> RunResult:
    """Run `task` in this process; never raises for a failing run (only for bad input)."""
    scenario = registry[task.scenario]
    sim = Simulation(seed=task.seed, **scenario.simulation(task.seed, task.params))
    verdict: Verdict | None = None
    try:
        verdict = sim.run(scenario.build(sim, task.params))
        failure = None if verdict.ok else verdict.failure
    except Exception as exc:  # any error of the run is its failure
        failure = _describe(exc)
    options = {} if verdict is None else dict(verdict.options)
    # Read once: each read of `sim.trace_hash` currently folds more into the digest (a
    # simulator bug, see the campaign report), so the artifact reuses this value.
    trace_hash = sim.trace_hash
    result = RunResult(
        scenario=task.scenario,
        seed=task.seed,
        passed=failure is None,
        failure=failure,
        operations=0 if verdict is None else verdict.operations,
        virtual_s=sim.now,
        wall_s=sim.wall_seconds,
        trace_hash=trace_hash,
        options=options,
        params=dict(task.params),
        hash_seed=os.environ.get("PYTHONHASHSEED"),
        checks=() if verdict is None else tuple(verdict.checks),
        histories=0 if verdict is None else verdict.histories,
    )
    if result.passed or not (task.artifacts_dir or task.return_artifact):
        return result
    data = build_artifact(sim, result)
    path = None if task.artifacts_dir is None else str(write_artifact(data, task.artifacts_dir))
    return dataclasses.replace(
        result, artifact_path=path, artifact=data if task.return_artifact else None
    )


def build_artifact(sim: Simulation, result: RunResult) -> dict[str, Any]:
    data = artifact.build(
        sim,
        result.scenario,
        "passed" if result.passed else "failed",
        result.failure,
        replay_spec(result.scenario, result.seed, result.params),
    )
    data["trace_hash"] = result.trace_hash
    data["options"] = result.options
    data["operations"] = result.operations
    return data


def write_artifact(data: dict[str, Any], directory: str) -> Path:
    return artifact.write(data, directory)


def _describe(exc: Exception) -> str:
    """`Type: message` first (the summary line), then the traceback for whoever debugs it."""
    head = f"{type(exc).__name__}: {exc}".replace("\n", " ")
    return f"{head}\n{_tail(''.join(traceback.format_exception(exc)), MAX_TRACEBACK_CHARS)}"


def _tail(text: str, max_chars: int) -> str:
    """The last whole lines of `text` that fit in `max_chars` (a line is never cut)."""
    kept: list[str] = []
    size = 0
    for line in reversed(text.splitlines(keepends=True)):
        size += len(line)
        if size > max_chars and kept:
            break
        kept.append(line)
    return "".join(reversed(kept))
