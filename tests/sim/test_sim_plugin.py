"""The pytest plugin: seeds, environment variables, reproduce lines, artifacts, what a user sees."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

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
    out = result.stdout.str()
    assert "seed 4: AssertionError: seed four fails -- reproduce with: DETSIM_TEST_SEED=4 " in out
    assert "FAILED test_mod.py::test_marks - Failed: detsim: 1 of 6 seeds failed" in out
    assert 'in test_marks\n    assert sim.seed != 4, "seed four fails"' in out  # its traceback


def test_detsim_replay_reruns_a_pytest_artifact(pytester, monkeypatch, tmp_path):
    from click.testing import CliRunner

    from detsim.cli import main

    monkeypatch.setenv("DETSIM_ARTIFACTS", str(tmp_path))
    pytester.makepyfile(test_mod=TESTS)
    pytester.runpytest("-p", "no:cacheprovider", "-k", "test_fails").assert_outcomes(failed=1)
    artifact_path = sorted(tmp_path.glob("test_fails_on_some_seed-seed*.json"))[0]
    result = CliRunner().invoke(main, ["replay", str(artifact_path)])
    assert result.exit_code == 0, result.output
    assert "same trace hash" in result.output and "status: failed" in result.output

    data = json.loads(artifact_path.read_text())
    data["trace_hash"] = "0" * 32
    artifact_path.write_text(json.dumps(data))
    assert CliRunner().invoke(main, ["replay", str(artifact_path)]).exit_code == 1


EVERY_THIRD = """
import asyncio, pytest

@pytest.mark.detsim(seeds=9)
async def test_every_third(sim):
    await asyncio.sleep(1)
    assert sim.seed % 3 != 1, "unlucky seed"
"""
FAILING_SEEDS = (1, 4, 7)


def _reproduce(seed: int) -> str:
    return f"reproduce with: DETSIM_TEST_SEED={seed} pytest test_mod.py::test_every_third"


def test_every_failing_seed_is_reported_with_its_reproduce_line(pytester, monkeypatch, tmp_path):
    monkeypatch.setenv("DETSIM_ARTIFACTS", str(tmp_path))
    monkeypatch.setenv("COLUMNS", "60")  # a narrow terminal: pytest cuts its summary line here
    pytester.makepyfile(test_mod=EVERY_THIRD)
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    out = result.stdout.str()
    assert "detsim: 3 of 9 seeds failed" in out
    # pytest prints the whole message in its short summary too when CI is set, so count the
    # lines per section: once in the failure, once in our end section, whole lines both.
    failure, _, end = out.partition("detsim: failing seeds")
    end = end.partition("short test summary info")[0]
    for seed in FAILING_SEEDS:
        line = f"seed {seed}: AssertionError: unlucky seed -- {_reproduce(seed)}"
        assert failure.count(line) == 1, out
        assert end.count(line) == 1, out
        assert (tmp_path / f"test_every_third-seed{seed}.json").exists()
    assert "detsim: failing seeds" in out
    assert "seed 0:" not in out and "seed 2:" not in out  # only the failing ones
    # The summary is the test's own exception, once; the traceback is the seed's, not ours.
    assert "FAILED test_mod.py::test_every_third - AssertionError: un" in out
    assert "AssertionError: AssertionError" not in out
    assert "pytest_plugin.py" not in out and "def pytest_pyfunc_call" not in out
    assert "The above exception was the direct cause" not in out


def _plain_pytest(directory, *args: str) -> subprocess.CompletedProcess[str]:
    """pytest in a directory with no configuration at all, as in a user's fresh project."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DETSIM_", "PYTEST_"))}
    cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args]
    return subprocess.run(
        cmd, cwd=directory, env=env, capture_output=True, text=True, timeout=300, check=False
    )


def test_a_plain_directory_runs_clean(tmp_path):
    pytest.importorskip("pytest_asyncio")  # its start-up warning is what this test is about
    (tmp_path / "test_plain.py").write_text(EVERY_THIRD.replace("seeds=9", "seeds=3"))
    result = _plain_pytest(tmp_path)
    assert result.returncode == 1, result.stdout
    assert "Warning" not in result.stdout + result.stderr, result.stdout + result.stderr
    assert _reproduce(1).replace("test_mod", "test_plain") in result.stdout
    # A user's own warning filters are left alone: turned into errors, the warning shows.
    strict = _plain_pytest(tmp_path, "-W", "error::DeprecationWarning")
    assert "asyncio_default_fixture_loop_scope" in strict.stdout + strict.stderr


def test_runs_without_pytest_asyncio_and_under_its_auto_mode(tmp_path):
    pytest.importorskip("pytest_asyncio")
    (tmp_path / "test_ok.py").write_text(
        "import asyncio, pytest\n\n"
        "@pytest.mark.detsim(seeds=2)\n"
        "async def test_long_sleep(sim):\n"
        "    await asyncio.sleep(100)\n"
        "    assert sim.now >= 100\n"
    )
    for args in (["-p", "no:asyncio"], ["-o", "asyncio_mode=auto"]):
        result = _plain_pytest(tmp_path, *args)
        assert result.returncode == 0, result.stdout
        assert "1 passed" in result.stdout


def test_replay_of_a_pytest_artifact_prints_whole_lines(pytester, monkeypatch, tmp_path):
    from click.testing import CliRunner

    from detsim.cli import main

    monkeypatch.setenv("DETSIM_ARTIFACTS", str(tmp_path))
    long_message = " ".join(f"word{i}" for i in range(1500))  # far more than a screen
    pytester.makepyfile(
        test_mod=f"""
import pytest

@pytest.mark.detsim
async def test_long(sim):
    raise ValueError("{long_message}")
"""
    )
    pytester.runpytest("-p", "no:cacheprovider").assert_outcomes(failed=1)
    (artifact_path,) = tmp_path.glob("test_long-seed0.json")
    result = CliRunner().invoke(main, ["replay", str(artifact_path)])
    assert result.exit_code == 0, result.output
    printed = result.output.split("status: failed\n", 1)[1]
    assert printed.startswith(("=", "_", "F", "E", " ")), printed[:80]  # a line's start
    assert f"ValueError: {long_message}" in printed  # the long line, whole


def test_failing_seeds_past_the_bound_are_counted_not_listed(pytester, monkeypatch, tmp_path):
    from detsim.pytest_plugin import MAX_FAILURES_LISTED

    seeds = MAX_FAILURES_LISTED + 5
    monkeypatch.setenv("DETSIM_ARTIFACTS", str(tmp_path))
    pytester.makepyfile(
        test_mod=f"""
import pytest

@pytest.mark.detsim(seeds={seeds})
async def test_always(sim):
    assert False, "always"
"""
    )
    result = pytester.runpytest("-p", "no:cacheprovider")
    out = result.stdout.str()
    assert f"detsim: {seeds} of {seeds} seeds failed" in out
    last = MAX_FAILURES_LISTED - 1
    assert f"seed {last}: AssertionError: always" in out
    assert f"seed {last + 1}: " not in out
    assert f"... and 5 more failing seeds, from {last + 1} to {seeds - 1}" in out
    assert len(list(tmp_path.glob("test_always-seed*.json"))) == MAX_FAILURES_LISTED
