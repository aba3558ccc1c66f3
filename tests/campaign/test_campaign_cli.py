"""`detsim sim`, `detsim replay`, `detsim scenarios`: exit codes, tables, artifacts, replays."""

from __future__ import annotations

import json
from pathlib import Path

import click
import pytest
from click.testing import CliRunner, Result

from detsim.campaign import dask_backend
from detsim.cli import replay, scenarios, sim

UNSAFE_SEEDS = 20


def invoke(command: click.Command, *args: str) -> Result:
    return CliRunner().invoke(command, list(args), catch_exceptions=False)


@pytest.fixture(scope="module")
def unsafe_campaign(tmp_path_factory: pytest.TempPathFactory) -> tuple[Result, Path]:
    artifacts = tmp_path_factory.mktemp("artifacts")
    result = invoke(
        sim.command,
        "--scenario",
        "counter_unsafe",
        "--seeds",
        str(UNSAFE_SEEDS),
        "--jobs",
        "2",
        "--artifacts",
        str(artifacts),
    )
    return result, artifacts


def test_scenarios_lists_one_line_each() -> None:
    result = invoke(scenarios.command)
    assert result.exit_code == 0
    lines = result.output.splitlines()
    assert [line.split()[0] for line in lines][:2] == ["counter", "counter_unsafe"]
    assert "[planted bug]" in lines[1] and "[planted bug]" not in lines[0]


def test_a_campaign_passes_and_prints_the_table(tmp_path: Path) -> None:
    # The counter alone: the store's scenarios have campaigns of their own (tests/scenarios).
    result = invoke(
        sim.command,
        "--scenario",
        "counter",
        "--seeds",
        "4",
        "--jobs",
        "2",
        "--artifacts",
        str(tmp_path),
    )
    assert result.exit_code == 0, result.output
    assert "counter " in result.stdout and "counter_unsafe" not in result.stdout
    for header in ("seeds", "failures", "histories", "ops checked", "run wall s (sum)"):
        assert header in result.stdout
    assert "detsim campaign: 4 runs on 2 jobs in " in result.stdout
    assert "counter checked: 4 histories, " in result.stdout
    assert "no acknowledged increment lost" in result.stdout  # as the scenario reports it
    assert "all 4 runs passed" in result.stdout


def test_planted_bug_campaign_exits_1_with_reproduce_lines(
    unsafe_campaign: tuple[Result, Path],
) -> None:
    result, artifacts = unsafe_campaign
    assert result.exit_code == 1, result.output
    assert "FAILED counter_unsafe seed" in result.stdout
    assert "reproduce: detsim sim --scenario counter_unsafe --seed " in result.stdout
    assert sorted(p.name for p in artifacts.iterdir())  # one artifact per failing seed
    failed = result.stdout.count("FAILED counter_unsafe")
    assert len(list(artifacts.glob("counter_unsafe-seed*.json"))) == failed


def test_single_seed_prints_options_and_failure(
    unsafe_campaign: tuple[Result, Path], tmp_path: Path
) -> None:
    _, artifacts = unsafe_campaign
    seed = json.loads(next(artifacts.glob("*.json")).read_text())["seed"]
    result = invoke(
        sim.command,
        "--scenario",
        "counter_unsafe",
        "--seed",
        str(seed),
        "--artifacts",
        str(tmp_path),
    )
    assert result.exit_code == 1
    assert f"scenario counter_unsafe, seed {seed}" in result.stdout
    assert "safety_s = " in result.stdout and "failure:" in result.stdout


def test_replay_reproduces_the_trace_hash_and_writes_a_timeline(
    unsafe_campaign: tuple[Result, Path], tmp_path: Path
) -> None:
    _, artifacts = unsafe_campaign
    path = next(artifacts.glob("*.json"))
    data = json.loads(path.read_text())
    page = tmp_path / "timeline.html"
    result = invoke(replay.command, str(path), "--html", str(page))
    assert result.exit_code == 0, result.output
    assert f"same trace hash {data['trace_hash']}" in result.output
    assert data["failure"].splitlines()[0] in result.output
    html = page.read_text()
    assert "<svg" in html and ">n1</text>" in html and "<script" not in html.lower()
    assert any(kind in html for kind in ("&quot;kind&quot;: &quot;kill", "crash", "partition"))


def test_replay_of_a_tampered_hash_reports_nondeterminism(
    unsafe_campaign: tuple[Result, Path], tmp_path: Path
) -> None:
    _, artifacts = unsafe_campaign
    data = json.loads(next(artifacts.glob("*.json")).read_text())
    data["trace_hash"] = "0" * 32
    tampered = tmp_path / "tampered.json"
    tampered.write_text(json.dumps(data))
    result = invoke(replay.command, str(tampered))
    assert result.exit_code == 1
    assert "NONDETERMINISM" in result.output


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "not a readable artifact"),
        ('{"hello": 1}', "not a detsim artifact"),
        (
            '{"name": "x", "seed": 1, "trace_hash": "h", "replay": {"kind": "scenario", '
            '"scenario": "nope", "seed": 1}}',
            "unknown scenario 'nope'",
        ),
        (
            '{"name": "x", "seed": 1, "trace_hash": "h", "replay": {"kind": "pytest"}}',
            "a pytest replay needs nodeid",
        ),
    ],
)
def test_replay_of_a_bad_file_exits_2(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(content)
    result = invoke(replay.command, str(path))
    assert result.exit_code == 2
    assert message in result.stderr


def test_replay_of_a_missing_file_exits_2(tmp_path: Path) -> None:
    result = invoke(replay.command, str(tmp_path / "absent.json"))
    assert result.exit_code == 2 and "not a readable artifact" in result.stderr


def test_unknown_scenario_exits_2_listing_the_known_ones() -> None:
    result = invoke(sim.command, "--scenario", "nope", "--seeds", "1")
    assert result.exit_code == 2
    assert "unknown scenario 'nope'" in result.stderr and "counter_unsafe" in result.stderr


def test_bad_param_exits_2() -> None:
    result = invoke(sim.command, "--scenario", "counter", "--param", "bogus=1", "--seeds", "1")
    assert result.exit_code == 2 and "unknown counter params" in result.stderr
    result = invoke(sim.command, "--param", "no-equals-sign")
    assert result.exit_code == 2 and "KEY=VALUE" in result.stderr


def test_params_reach_the_run_and_the_reproduce_line(tmp_path: Path) -> None:
    result = invoke(
        sim.command,
        "--scenario",
        "counter_unsafe",
        "--seed",
        "0",
        "--param",
        "safety_s=5",
        "--artifacts",
        str(tmp_path),
    )
    assert "safety_s = 5" in result.stdout
    assert result.exit_code == 1  # seed 0 finds the planted bug within 5 s too
    assert "reproduce: detsim sim --scenario counter_unsafe --seed 0 --param safety_s=5" in (
        result.stdout
    )


def test_dask_without_dask_exits_2_saying_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(dask_backend, "available", lambda: False)
    result = invoke(sim.command, "--dask", "local", "--seeds", "1")
    assert result.exit_code == 2 and "install detsim[dask]" in result.stderr


@pytest.mark.skipif(not dask_backend.available(), reason="dask is not installed")
def test_dask_local_cluster_runs_the_campaign(tmp_path: Path) -> None:
    result = invoke(
        sim.command,
        "--scenario",
        "counter",
        "--dask",
        "local",
        "--seeds",
        "2",
        "--jobs",
        "1",
        "--artifacts",
        str(tmp_path),
    )
    assert result.exit_code == 0, result.output
    assert "all 2 runs passed" in result.stdout


@pytest.mark.slow
def test_the_counter_passes_a_thousand_seeds(tmp_path: Path) -> None:
    result = invoke(
        sim.command, "--scenario", "counter", "--seeds", "1000", "--artifacts", str(tmp_path)
    )
    assert result.exit_code == 0, result.output
    assert "all 1000 runs passed" in result.stdout
