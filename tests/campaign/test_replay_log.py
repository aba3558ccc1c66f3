"""`detsim replay`'s event log and verdict lines, on a real failing run and on synthetic logs.

What would break: a log that silently drops events (the header must count what was left out),
plumbing events drowning the faults and violations, an unbounded log, or a replay that no
longer says whether the trace hash is the same.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from detsim.campaign import replay, runner
from detsim.cli import replay as replay_cli

UNSAFE_SEED = 3  # counter_unsafe fails at this seed (a lost acknowledged increment)


def events(n: int) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for i in range(n):
        kind = "recv" if i % 2 else "raft.state"
        out.append({"t": i / 10, "node": f"n{i % 3 + 1}", "kind": kind, "term": i})
    return out


def test_the_log_shows_the_last_events_and_counts_what_it_left_out() -> None:
    lines = replay.event_log(events(100), limit=10)
    assert lines[0] == (
        "event log: the last 10 of 100 events; 50 network/disk events hidden (--all-events "
        "shows them); 40 earlier events omitted (--events N shows more)"
    )
    assert len(lines) == 11
    assert lines[-1].split()[:3] == ["9.800000", "n3", "raft.state"]
    assert "term=98" in lines[-1]
    everything = replay.event_log(events(100), limit=1000, all_kinds=True)
    assert everything[0] == "event log: the last 100 of 100 events" and len(everything) == 101


def test_a_long_field_is_cut_and_a_bad_limit_refused() -> None:
    line = replay.event_line({"t": 1.0, "node": "n1", "kind": "op", "value": "x" * 1000})
    assert len(line) == replay.MAX_LOG_LINE_CHARS and line.endswith("...")
    with pytest.raises(ValueError, match="event log shows"):
        replay.event_log([], limit=replay.MAX_LOG_EVENTS + 1)


@pytest.fixture(scope="module")
def unsafe_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("artifacts")
    result = runner.run_one(
        runner.Task("counter_unsafe", UNSAFE_SEED, {}, artifacts_dir=str(directory))
    )
    assert not result.passed and result.artifact_path is not None
    return Path(result.artifact_path)


def test_replay_prints_the_log_then_the_same_trace_hash(unsafe_artifact: Path) -> None:
    data = json.loads(unsafe_artifact.read_text())
    out = CliRunner().invoke(replay_cli.command, [str(unsafe_artifact), "--events", "5"])
    assert out.exit_code == 0, out.output
    lines = out.output.splitlines()
    head = next(i for i, line in enumerate(lines) if line.startswith("event log: the last 5 of"))
    assert lines[head].endswith("[replayed run]") and "network/disk events hidden" in lines[head]
    logged = lines[head + 1 : head + 6]
    assert logged[-1].split()[1:3] == ["supervisor", "violation"]  # the final check's event
    assert lines[head + 6] == f"same trace hash {data['trace_hash']}: the run reproduces"
    assert "status: failed" in out.output


def test_replay_without_a_log(unsafe_artifact: Path) -> None:
    out = CliRunner().invoke(replay_cli.command, [str(unsafe_artifact), "--events", "0"])
    assert out.exit_code == 0 and "event log" not in out.output
