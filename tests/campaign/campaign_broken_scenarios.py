"""Scenarios that fail by raising (loaded through DETSIM_SCENARIO_MODULES by the tests)."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

from detsim.campaign.scenario import Params, Scenario, Verdict
from detsim.sim.world import Simulation


async def _assert_main() -> Verdict:
    await asyncio.sleep(1.5)
    raise AssertionError("the checker's own invariant broke")


async def _deadlock_main() -> Verdict:
    await asyncio.get_running_loop().create_future()  # nothing will ever set it
    return Verdict(True, 0)


def build_assert(sim: Simulation, params: Params) -> Coroutine[Any, Any, Verdict]:
    return _assert_main()


def build_deadlock(sim: Simulation, params: Params) -> Coroutine[Any, Any, Verdict]:
    return _deadlock_main()


SCENARIOS = (
    Scenario("broken_assert", "raises AssertionError after 1.5 virtual seconds", build_assert),
    Scenario("broken_deadlock", "waits for nothing, forever", build_deadlock),
)
