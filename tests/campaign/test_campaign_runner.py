"""Campaigns on local worker processes: the safe scenario passes, the planted bug is found."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from detsim.campaign import pool, registry
from detsim.campaign.campaign import run_campaign
from detsim.campaign.runner import Task, run_one
from detsim.campaign.scenario import Verdict

SAFE_SEEDS = 20
UNSAFE_SEEDS = 20  # the planted bug must be found within this many seeds


def test_registry_lists_the_counter_scenarios_and_the_default_campaign_skips_planted_bugs() -> None:
    assert {"counter", "counter_unsafe"} <= set(registry)
    assert "counter" in registry.default_names()
    assert "counter_unsafe" not in registry.default_names()
    assert registry.select(["all"])[:2] == list(registry)[:2]
    with pytest.raises(KeyError, match=r"known scenarios: .*counter"):
        registry.select(["nope"])


def test_safe_counter_passes_every_seed(tmp_path: Path) -> None:
    report = run_campaign(["counter"], range(SAFE_SEEDS), jobs=2, artifacts_dir=str(tmp_path))
    assert [r.seed for r in report.results] == list(range(SAFE_SEEDS))
    assert report.failures == [], report.failures[0].failure
    (summary,) = report.summaries
    assert summary.seeds == SAFE_SEEDS and summary.failures == 0
    assert summary.operations > 10 * SAFE_SEEDS and summary.virtual_s > 0
    assert all(r.hash_seed == pool.HASH_SEED for r in report.results)
    assert list(tmp_path.iterdir()) == []  # artifacts only for failing runs


def test_unsafe_counter_fails_on_some_seed_with_an_artifact(tmp_path: Path) -> None:
    report = run_campaign(
        ["counter_unsafe"], range(UNSAFE_SEEDS), jobs=2, artifacts_dir=str(tmp_path)
    )
    assert report.failures, f"the planted bug went unnoticed in {UNSAFE_SEEDS} seeds"
    first = report.failures[0]
    assert "acknowledged" in (first.failure or "")
    assert first.artifact_path is not None
    data = json.loads(Path(first.artifact_path).read_text())
    assert data["replay"] == {
        "kind": "scenario",
        "scenario": "counter_unsafe",
        "seed": first.seed,
        "params": {},
    }
    assert data["trace_hash"] == first.trace_hash
    assert data["status"] == "failed" and data["events"]
    assert data["options"]["safe"] is False


def test_same_seed_same_trace_hash_in_two_worker_processes() -> None:
    results = []
    for _ in range(2):  # each call starts a fresh spawned worker
        results.append(pool.run_in_worker(Task("counter", 5)))
    in_process = run_one(Task("counter", 5))  # this process's hash seed is random
    assert results[0].trace_hash == results[1].trace_hash == in_process.trace_hash
    assert results[0].operations == in_process.operations > 0


def test_two_jobs_give_the_hashes_one_job_gives() -> None:
    seeds = [1, 2, 1, 2]
    two = run_campaign(["counter"], seeds, jobs=2).results
    one = run_campaign(["counter"], seeds, jobs=1).results
    assert [r.trace_hash for r in two] == [r.trace_hash for r in one]
    assert two[0].trace_hash == two[1].trace_hash  # both runs of seed 1, sorted together


def test_worker_refuses_a_random_hash_seed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTHONHASHSEED", "random")
    with pytest.raises(RuntimeError, match="PYTHONHASHSEED"):
        pool.check_worker()


def test_worker_shows_only_errors_of_the_code_under_test() -> None:
    """A campaign worker quiets the store's warnings (its nemesis causes them on purpose)."""
    code = (
        "import logging\n"
        "from detsim.campaign import pool\n"
        "pool.check_worker()\n"
        "for name in ('detsim.raft.transport', 'detsim.kv.server', 'detsim.fs.records'):\n"
        "    log = logging.getLogger(name)\n"
        "    assert not log.isEnabledFor(logging.WARNING), name + ': warnings shown'\n"
        "    assert log.isEnabledFor(logging.ERROR), name + ': errors hidden'\n"
    )
    env = {**os.environ, "PYTHONHASHSEED": pool.HASH_SEED}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_a_failed_verdict_must_say_why() -> None:
    with pytest.raises(ValueError, match="must say why"):
        Verdict(ok=False, operations=0)


def test_an_exception_out_of_a_run_is_a_failure_with_an_artifact(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # Workers inherit the environment, so they load the extra scenario module too.
    monkeypatch.setenv("DETSIM_SCENARIO_MODULES", "campaign_broken_scenarios")
    monkeypatch.setattr(registry, "_scenarios", None)  # reload in this process as well
    report = run_campaign(
        ["broken_assert", "broken_deadlock"], [7], jobs=2, artifacts_dir=str(tmp_path)
    )
    by_name = {r.scenario: r for r in report.results}
    asserted, deadlocked = by_name["broken_assert"], by_name["broken_deadlock"]
    assert asserted.summary == "AssertionError: the checker's own invariant broke"
    assert "Traceback" in (asserted.failure or "") and asserted.virtual_s == 1.5
    assert deadlocked.summary.startswith("Deadlock: seed 7")
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["broken_assert-seed7.json", "broken_deadlock-seed7.json"]
