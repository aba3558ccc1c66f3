"""Replay: rebuild the run an artifact records and compare trace hashes.

An artifact's `replay` field says how to rebuild it. Supported here:
`{"kind": "scenario", "scenario": NAME, "seed": S, "params": {...}}` (what campaigns write), and
`{"kind": "pytest", "nodeid": ID, "seed": S, "rootdir": DIR}` (what the pytest plugin writes:
the one test is rerun at that seed in a pytest subprocess, which reports its trace hash).
The rerun happens in a fresh worker with the campaign's PYTHONHASHSEED (pool.run_in_worker),
so it is the same run whatever the calling process's hash seed.

The event log (`event_log`): the run's events one per line, `t node kind field=value ...`,
the last `limit` of them (MAX_LOG_EVENTS at most); network and disk plumbing (NOISE_KINDS:
deliveries, connections, fsyncs) is left out unless asked for, and the first line says how
many events were left out and why, so a person knows the log is partial.

Errors: `ReplayError` for anything that makes the artifact unreplayable (unreadable file, not
an artifact, an unknown kind, an unknown scenario): the CLI turns it into exit status 2.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Final

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
    if isinstance(spec, dict) and spec.get("kind") == "pytest":
        raise ReplayError(f"{where}: a pytest artifact: use replay_pytest")
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


PYTEST_REPLAY_TIMEOUT_S = 3600.0
MAX_PYTEST_OUTPUT_LINES = 80  # the end of the rerun's output, in whole lines


@dataclasses.dataclass(frozen=True, slots=True)
class PytestReplay:
    trace_hash: str | None  # None: the test did not reach the seed's run
    passed: bool
    output: str


def pytest_spec(data: dict[str, Any], where: str) -> tuple[str, int, str]:
    spec = data["replay"]
    nodeid, seed, rootdir = spec.get("nodeid"), spec.get("seed"), spec.get("rootdir", ".")
    if not isinstance(nodeid, str) or not isinstance(seed, int) or not isinstance(rootdir, str):
        raise ReplayError(f"{where}: a pytest replay needs nodeid (str), seed (int), rootdir")
    if not os.path.isdir(rootdir):
        raise ReplayError(f"{where}: the test's rootdir {rootdir} is not here")
    return nodeid, seed, rootdir


def replay_pytest(data: dict[str, Any], where: str) -> PytestReplay:
    """Rerun the pytest test of a plugin artifact at its seed; collect its trace hash."""
    nodeid, seed, rootdir = pytest_spec(data, where)
    with tempfile.TemporaryDirectory(prefix="detsim-replay-") as tmp:
        hashes = Path(tmp) / "hashes"
        env = {
            **os.environ,
            "DETSIM_TEST_SEED": str(seed),
            "DETSIM_TEST_NUM": "1",
            "DETSIM_TEST_JOBS": "1",
            "DETSIM_TRACE_HASH_OUT": str(hashes),
            "DETSIM_ARTIFACTS": tmp,
        }
        env.pop("DETSIM_TEST_CHECK_DETERMINISM", None)
        cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", nodeid]
        proc = subprocess.run(
            cmd,
            cwd=rootdir,
            env=env,
            capture_output=True,
            text=True,
            timeout=PYTEST_REPLAY_TIMEOUT_S,
        )
        lines = hashes.read_text().split() if hashes.exists() else []
    trace_hash = lines[1] if len(lines) >= 2 and lines[0] == str(seed) else None
    output = (proc.stdout + proc.stderr).splitlines()[-MAX_PYTEST_OUTPUT_LINES:]
    return PytestReplay(trace_hash, proc.returncode == 0, "\n".join(output))


def replay(path: str | os.PathLike[str]) -> Replay:
    data = load(path)
    task = task_for(data, str(path))
    return Replay(data, pool.run_in_worker(task))


DEFAULT_LOG_EVENTS: Final = 200
MAX_LOG_EVENTS: Final = 1_000_000
MAX_LOG_LINE_CHARS: Final = 200
NOISE_KINDS: Final = frozenset(
    {
        "recv",
        "hold",
        "connect",
        "accept",
        "established",
        "closed",
        "listen",
        "refuse",
        "reset",
        "rst",
        "connect_timeout",
        "udp_send",
        "udp_recv",
        "udp_drop",
        "disk.fsync",
        "disk.fsync_dir",
        "disk.writeback",
    }
)


def event_line(event: dict[str, Any]) -> str:
    """`   12.345678  n1          raft.state  role="leader" term=3 ...`, cut to a bound."""
    fields = " ".join(
        f"{k}={json.dumps(v, default=repr)}"
        for k, v in event.items()
        if k not in ("t", "node", "kind")
    )
    try:
        t = f"{float(event.get('t', 0.0)):12.6f}"
    except (TypeError, ValueError):
        t = f"{event.get('t')!s:>12}"
    line = f"{t}  {event.get('node')!s:<11} {event.get('kind')!s:<22} {fields}".rstrip()
    return line if len(line) <= MAX_LOG_LINE_CHARS else line[: MAX_LOG_LINE_CHARS - 3] + "..."


def event_log(
    events: list[dict[str, Any]], limit: int = DEFAULT_LOG_EVENTS, all_kinds: bool = False
) -> list[str]:
    """The log's lines: a header saying what was left out, then the last `limit` events."""
    if not 0 <= limit <= MAX_LOG_EVENTS:
        raise ValueError(f"the event log shows 0..{MAX_LOG_EVENTS} events, not {limit}")
    kept = [e for e in events if isinstance(e, dict)]
    if not all_kinds:
        kept = [e for e in kept if e.get("kind") not in NOISE_KINDS]
    hidden = len(events) - len(kept)
    shown = kept[len(kept) - limit :] if limit else []
    earlier = len(kept) - len(shown)
    head = f"event log: the last {len(shown)} of {len(events)} events"
    if hidden:
        head += f"; {hidden} network/disk events hidden (--all-events shows them)"
    if earlier:
        head += f"; {earlier} earlier events omitted (--events N shows more)"
    return [head, *(event_line(e) for e in shown)]
