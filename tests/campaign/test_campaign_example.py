"""The example app under plain asyncio on real loopback, and its scenario's options."""

from __future__ import annotations

import ast
import asyncio
from pathlib import Path

import pytest

from detsim.campaign.runner import Task, run_one
from detsim.examples import counter, counter_scenario

DEMO_TIMEOUT_S = 20.0


def run(coro):  # a bound on every real-network test: a hang fails instead of blocking
    return asyncio.run(asyncio.wait_for(coro, DEMO_TIMEOUT_S))


@pytest.mark.parametrize("safe", [True, False])
def test_demo_on_real_loopback_every_replica_reads_every_increment(safe: bool) -> None:
    values = run(counter.demo(increments=12, safe=safe))
    assert values == {"r1": 12, "r2": 12, "r3": 12}


def test_main_prints_and_exits_zero(capsys: pytest.CaptureFixture[str]) -> None:
    assert counter.main(["5"]) == 0
    assert "every replica reads 5: True" in capsys.readouterr().out


def test_the_app_imports_nothing_of_detsim() -> None:
    tree = ast.parse(Path(counter.__file__).read_text())
    imported = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    imported += [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    assert imported and not [m for m in imported if m.startswith("detsim")]


def test_bad_requests_get_errors_and_a_recovering_replica_serves_no_client() -> None:
    async def scenario() -> list[str]:
        fresh = counter.Replica("r1", bootstrap=True)
        recovering = counter.Replica("r2", bootstrap=False)
        return [
            await fresh.handle("FLY me to the moon"),
            await fresh.handle("INCR not an id!"),
            await fresh.handle("INCR a-1"),  # no peers: a majority of one
            await fresh.handle("GET"),
            await recovering.handle("INCR a-1"),
            await recovering.handle("STATE"),
            await recovering.handle("STORE a-1"),  # peers may still store into it
        ]

    replies = run(scenario())
    assert replies[0].startswith("ERR bad request")
    assert replies[1].startswith("ERR bad request")
    assert replies[2:4] == ["OK", "VALUE 1"]
    assert replies[4:] == ["ERR recovering", "RECOVERING", "STORED"]


def test_options_come_from_the_seed_and_params_pin_them() -> None:
    a = counter_scenario.draw_options(11, {})
    assert a == counter_scenario.draw_options(11, {})
    assert a != counter_scenario.draw_options(12, {}) or a != counter_scenario.draw_options(13, {})
    pinned = counter_scenario.draw_options(11, {"safety_s": 3.0, "faults": ["kill"]})
    assert (pinned.safety_s, pinned.faults) == (3.0, ("kill",))
    with pytest.raises(ValueError, match="unknown counter params"):
        counter_scenario.draw_options(11, {"no_such_option": 1})


def test_the_planted_bug_needs_faults_a_clean_run_passes() -> None:
    for seed in (0, 3, 4):
        assert not run_one(Task("counter_unsafe", seed)).passed  # under the drawn faults
        clean = run_one(Task("counter_unsafe", seed, {"faults": []}))
        assert clean.passed, clean.failure
        assert clean.operations > 0
