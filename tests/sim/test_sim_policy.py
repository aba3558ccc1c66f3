"""EventLoopPolicy: existing asyncio test suites run on virtual time unchanged."""

from __future__ import annotations

import asyncio
import io
import time
import unittest

import echo_app
import pytest

import detsim
from detsim.sim.clock import EPOCH_S


@pytest.fixture
def sim_policy():
    old = asyncio.get_event_loop_policy()
    asyncio.set_event_loop_policy(detsim.EventLoopPolicy(seed=3))
    yield
    asyncio.set_event_loop_policy(old)


async def an_hour_of_work():
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    await asyncio.sleep(3600)
    return loop.time() - t0, time.time(), detsim.in_simulation()


def test_asyncio_run_is_a_simulation(sim_policy):
    elapsed, wall, inside = asyncio.run(an_hour_of_work())
    assert (elapsed, inside) == (3600.0, True)
    assert wall == EPOCH_S + 3600.0
    assert asyncio.run(an_hour_of_work()) == (elapsed, wall, inside)  # each run reproduces
    assert not detsim.in_simulation()


def test_servers_and_clients_on_the_one_node(sim_policy):
    async def main():
        server = asyncio.create_task(echo_app.serve("127.0.0.1", 8000))
        await asyncio.sleep(0)
        replies = await echo_app.call("127.0.0.1", 8000, ["a", "b"])
        server.cancel()
        return replies

    assert asyncio.run(main()) == ["A", "B"]


def test_a_hung_test_raises_deadlock_instead_of_hanging(sim_policy):
    async def hangs():
        await asyncio.Event().wait()

    with pytest.raises(detsim.Deadlock):
        asyncio.run(hangs())


class VirtualTimeCase(unittest.IsolatedAsyncioTestCase):
    __test__ = False  # run below under the policy, not collected by pytest on a real loop

    async def test_long_sleep(self):
        t0 = asyncio.get_running_loop().time()
        await asyncio.wait_for(asyncio.sleep(600), timeout=700)
        self.assertEqual(asyncio.get_running_loop().time() - t0, 600.0)
        self.assertTrue(detsim.in_simulation())


def test_unittest_isolated_asyncio_testcase_runs_unchanged(sim_policy):
    suite = unittest.defaultTestLoader.loadTestsFromTestCase(VirtualTimeCase)
    result = unittest.TextTestRunner(verbosity=0, stream=io.StringIO()).run(suite)
    assert result.wasSuccessful(), result.failures + result.errors
    assert result.testsRun == 1


def test_pytest_asyncio_suite_runs_unchanged(pytester):
    pytester.makeconftest(
        """
import asyncio, pytest, detsim

@pytest.fixture(scope="session")
def event_loop_policy():
    return detsim.EventLoopPolicy(seed=1, time_limit=7 * 86_400)
"""
    )
    pytester.makepyfile(
        """
import asyncio, pytest, detsim

@pytest.mark.asyncio
async def test_sleeps_a_day():
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    await asyncio.sleep(86_400)
    assert loop.time() - t0 == 86_400
    assert detsim.in_simulation()
"""
    )
    result = pytester.runpytest("-p", "asyncio", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)


async def create_and_close_a_loop():
    """What libraries do inside a running loop: make a loop of their own, then close it."""
    before = time.time()
    loop = asyncio.new_event_loop()
    loop.close()
    await asyncio.sleep(1)
    return loop.is_closed(), time.time() - before, detsim.in_simulation()


def test_a_loop_created_and_closed_inside_a_policy_run(sim_policy):
    assert asyncio.run(create_and_close_a_loop()) == (True, 1.0, True)


def test_a_loop_created_and_closed_inside_a_simulation():
    assert detsim.Simulation(seed=1).run(create_and_close_a_loop()) == (True, 1.0, True)


def test_closing_a_policy_loop_with_a_pending_task_inside_a_simulation_keeps_the_outer_one():
    async def main():
        loop = detsim.EventLoopPolicy(seed=9).new_event_loop()
        loop.create_task(asyncio.sleep(5))  # pending: its teardown enters the inner world
        loop.close()
        await asyncio.sleep(2)  # the outer simulation is back in place
        return loop.is_closed(), asyncio.get_running_loop().time(), detsim.in_simulation()

    assert detsim.Simulation(seed=1).run(main()) == (True, 2.0, True)
    assert not detsim.in_simulation()


async def sleep_virtual(seconds: float) -> float:
    await asyncio.sleep(seconds)
    return asyncio.get_running_loop().time()


def test_the_policy_time_limit_is_a_virtual_day_by_default(monkeypatch):
    monkeypatch.delenv("DETSIM_TEST_TIME_LIMIT", raising=False)
    policy = detsim.EventLoopPolicy()
    loop = policy.new_event_loop()
    assert loop.run_until_complete(sleep_virtual(23 * 3600.0)) == 23 * 3600.0
    loop.close()
    loop = policy.new_event_loop()
    with pytest.raises(detsim.SimulationTimeLimit, match="86400s"):
        loop.run_until_complete(sleep_virtual(25 * 3600.0))
    loop.close()


def test_detsim_test_time_limit_overrides_the_policy_limit(monkeypatch):
    monkeypatch.setenv("DETSIM_TEST_TIME_LIMIT", "10")
    loop = detsim.EventLoopPolicy(time_limit=7 * 86_400.0).new_event_loop()
    with pytest.raises(detsim.SimulationTimeLimit, match="10s"):
        loop.run_until_complete(sleep_virtual(11.0))
    loop.close()
    monkeypatch.setenv("DETSIM_TEST_TIME_LIMIT", "a day")
    with pytest.raises(detsim.SimulationError, match="not a number"):
        detsim.EventLoopPolicy()
