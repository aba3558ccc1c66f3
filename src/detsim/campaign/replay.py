"""Replay: rebuild the run an artifact records and compare trace hashes.

An artifact's `replay` field says how to rebuild it. Supported here:
`{"kind": "scenario", "scenario": NAME, "seed": S, "params": {...}}` (what campaigns write).
The rerun happens in a fresh worker with the campaign's PYTHONHASHSEED (pool.run_in_worker),
so it is the same run whatever the calling process's hash seed.

Errors: `ReplayError` for anything that makes the artifact unreplayable (unreadable file, not
an artifact, an unknown kind, an unknown scenario): the CLI turns it into exit status 2.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from detsim.campaign import pool
from detsim.campaign.catalogue import UnknownScenario, registry
from detsim.campaign.runner import RunResult, Task
from detsim.sim import artifact


class ReplayError(Exception):
    """The artifact cannot be replayed; the message says why."""


@dataclasses.dataclass(frozen=True, slots=True)
class Replay:
    artifact: dict[str, Any]
    result: RunResult

    @property
    def expected_hash(self) -> str:
        return str(self.artifact["trace_hash"])

    @property
    def same(self) -> bool:
        return self.result.trace_hash == self.expected_hash


def load(path: str | os.PathLike[str]) -> dict[str, Any]:
    try:
        return artifact.read(path)
    except ValueError as exc:
        raise ReplayError(str(exc)) from None


def task_for(data: dict[str, Any], where: str) -> Task:
    spec = data["replay"]
    if not isinstance(spec, dict) or spec.get("kind") != "scenario":
        kind = spec.get("kind") if isinstance(spec, dict) else spec
        hint = f" ({spec['command']})" if isinstance(spec, dict) and "command" in spec else ""
        raise ReplayError(f"{where}: replay kind {kind!r} is not a campaign scenario{hint}")
    name, seed, params = spec.get("scenario"), spec.get("seed"), spec.get("params", {})
    if not isinstance(name, str) or not isinstance(seed, int) or not isinstance(params, dict):
        raise ReplayError(f"{where}: replay needs scenario (str), seed (int), params (object)")
    try:
        registry[name]
    except UnknownScenario as exc:
        raise ReplayError(f"{where}: {exc}") from None
    return Task(name, seed, params)


def replay(path: str | os.PathLike[str]) -> Replay:
    data = load(path)
    task = task_for(data, str(path))
    return Replay(data, pool.run_in_worker(task))
