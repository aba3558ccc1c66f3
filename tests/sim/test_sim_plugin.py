"""The pytest plugin: seeds, environment variables, reproduce line, artifacts."""

from __future__ import annotations

import json
import re

TESTS = """
import asyncio, random, pytest

@pytest.mark.detsim(seeds=4)
async def test_passes(sim):
    n = sim.add_node("n1", ip="10.0.0.1")
    assert await n.spawn(asyncio.sleep(1, result=1)) == 1

@pytest.mark.detsim(seeds=30)
async def test_fails_on_some_seed(sim):
    await asyncio.sleep(1)
    assert random.random() < 0.8, "unlucky"
"""


def test_seeds_run_and_a_failure_prints_the_reproduce_line(pytester, monkeypatch, tmp_path):
    monkeypatch.setenv("DETSIM_ARTIFACTS", str(tmp_path))
    pytester.makepyfile(test_mod=TESTS)
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.re_match_lines([r".*reproduce with: DETSIM_TEST_SEED=\d+ pytest .*test_fails.*"])
    seed = int(re.search(r"DETSIM_TEST_SEED=(\d+) ", result.stdout.str()).group(1))
    art = json.loads((tmp_path / f"test_fails_on_some_seed-seed{seed}.json").read_text())
    assert art["status"] == "failed" and art["seed"] == seed and "unlucky" in art["failure"]
    assert art["replay"]["kind"] == "pytest"

    monkeypatch.setenv("DETSIM_TEST_SEED", str(seed))
    again = pytester.runpytest("-p", "no:cacheprovider", "-k", "test_fails")
    again.assert_outcomes(failed=1)  # the printed seed reproduces the failure
    assert f"DETSIM_TEST_SEED={seed} " in again.stdout.str()


def test_env_num_and_determinism_check(pytester, monkeypatch):
    pytester.makepyfile(
        test_mod="""
import asyncio, pytest, time
SEEN = []
_real = time.perf_counter

@pytest.mark.detsim(seeds=1)
async def test_counts(sim):
    SEEN.append(sim.seed)
    await asyncio.sleep(0)
    if len(SEEN) == 10:  # DETSIM_TEST_CHECK_DETERMINISM runs every seed twice
        assert SEEN == [10, 10, 11, 11, 12, 12, 13, 13, 14, 14]

@pytest.mark.detsim
async def test_cheats(sim):
    await asyncio.sleep((_real() * 1e6) % 1)
"""
    )
    monkeypatch.setenv("DETSIM_TEST_SEED", "10")
    monkeypatch.setenv("DETSIM_TEST_NUM", "5")
    monkeypatch.setenv("DETSIM_TEST_CHECK_DETERMINISM", "1")
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, failed=1)
    assert "NondeterminismError" in result.stdout.str()


def test_config_file_and_bad_environment(pytester, monkeypatch):
    cfg = pytester.path / "net.toml"
    cfg.write_text("[net]\nlatency = [0.5, 0.5]\n")
    pytester.makepyfile(
        test_mod="""
import asyncio, pytest

@pytest.mark.detsim
async def test_latency(sim):
    assert sim.net.config.latency == (0.5, 0.5)
"""
    )
    monkeypatch.setenv("DETSIM_TEST_CONFIG", str(cfg))
    pytester.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=1)
    monkeypatch.setenv("DETSIM_TEST_NUM", "many")
    result = pytester.runpytest("-p", "no:cacheprovider")
    assert "DETSIM_TEST_NUM='many' is not an integer" in result.stdout.str() + result.stderr.str()


def test_jobs_split_seeds_across_processes(pytester, monkeypatch):
    pytester.makepyfile(
        test_mod="""
import asyncio, os, pytest

@pytest.mark.detsim(seeds=6)
async def test_marks(sim):
    await asyncio.sleep(0)
    assert os.environ.get("DETSIM_TEST_CHILD") == "1"
    assert sim.seed != 4, "seed four fails"
"""
    )
    monkeypatch.setenv("DETSIM_TEST_JOBS", "2")
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    assert "seeds 3..5" in result.stdout.str() and "seed four fails" in result.stdout.str()


def test_detsim_replay_reruns_a_pytest_artifact(pytester, monkeypatch, tmp_path):
    from click.testing import CliRunner

    from detsim.cli import main

    monkeypatch.setenv("DETSIM_ARTIFACTS", str(tmp_path))
    pytester.makepyfile(test_mod=TESTS)
    pytester.runpytest("-p", "no:cacheprovider", "-k", "test_fails").assert_outcomes(failed=1)
    (artifact_path,) = tmp_path.glob("test_fails_on_some_seed-seed*.json")
    result = CliRunner().invoke(main, ["replay", str(artifact_path)])
    assert result.exit_code == 0, result.output
    assert "same trace hash" in result.output and "status: failed" in result.output

    data = json.loads(artifact_path.read_text())
    data["trace_hash"] = "0" * 32
    artifact_path.write_text(json.dumps(data))
    assert CliRunner().invoke(main, ["replay", str(artifact_path)]).exit_code == 1
