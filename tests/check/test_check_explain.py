"""The counterexample's shortcuts give exactly the answers of the plain searches they replace.

Issue 7 item 15 made explaining a violation cheaper in two ways (see checker.py):
- the failing prefix is located from the configurations the verdict's search explored, then
  checked, instead of bisecting over every cut (`explain_key` with and without `explored=`);
- the window gallops back from the last start instead of bisecting over all starts; the
  reference here tries every start from the last back to the first proof.
"""

from __future__ import annotations

import random

import pytest
from helpers_check import H
from test_check_property import _corrupt, generate

from detsim.check import check_history
from detsim.check.checker import (
    WINDOW_BUDGET_STEPS,
    CheckResult,
    _prefix,
    _window_at,
    _witnessed_cuts,
    explain_key,
)
from detsim.check.history import Event
from detsim.check.models import get_model
from detsim.check.search import Cache, build, run, search

KV = get_model("kv")


def violations(count: int) -> list[list[Event]]:
    """Small random histories (from the property test's generator) that are not linearizable."""
    found: list[list[Event]] = []
    for seed in range(10_000):
        rng = random.Random(seed)
        h = generate(rng, rng.randint(3, 9))
        _corrupt(rng, h)
        if check_history(h.events).linearizable is False:
            found.append(h.events)
            if len(found) == count:
                return found
    raise AssertionError(f"only {len(found)} violations generated")


def latest_window_start_by_scan(result: CheckResult) -> int:
    assert result.failing_op is not None and result.failing_op.complete_index is not None
    prefix = _prefix(result.key_ops, result.failing_op.complete_index)
    starts = sorted({op.invoke_index for op in prefix})
    for start in reversed(starts[1:]):
        if _window_at(prefix, start, KV, [WINDOW_BUDGET_STEPS]) is not None:
            return start
    return starts[0]


def explanation(result: CheckResult) -> tuple[object, ...]:
    return (result.failing_op, result.window, result.window_states, result.window_start_index)


@pytest.mark.parametrize("events", violations(150))
def test_shortcuts_agree_with_the_plain_searches(events: list[Event]) -> None:
    result = check_history(events)
    plain = explain_key(list(result.key_ops), KV)  # bisection over every cut
    assert explanation(result) == tuple(plain.values())
    assert result.window_start_index == latest_window_start_by_scan(result)


def test_a_prefix_the_verdict_search_cannot_witness_is_still_found() -> None:
    # The incr completes last with 5, which no order allows, so the verdict's search never
    # linearizes it, nor the get that needs it. But in the prefix cut after the get, the incr
    # is still open and may take effect (1 -> 2): that prefix is linearizable, and the first
    # failing one ends at the incr's completion.
    h = H().call(1, "put", "x", "1").inv(2, "incr", "x").call(3, "get", "x", out="2").ok(2, 5)
    result = check_history(h.events)
    assert result.linearizable is False and result.failing_op is not None
    assert result.failing_op.f == "incr"
    ops = list(result.key_ops)
    steps = [KV.compile(op) for op in ops]
    explored: Cache = set()
    problem = build(ops, [step for step in steps if step is not None])
    assert len(problem.ops) == len(ops) and run(search(problem, KV.initial, explored)) is False
    assert _witnessed_cuts(ops, explored) == 1  # only the put's cut; the get's is not witnessed
    assert explanation(result) == tuple(explain_key(ops, KV).values())
