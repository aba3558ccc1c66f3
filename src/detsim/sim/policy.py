"""`detsim.EventLoopPolicy`: every new event loop is a fresh one-node simulation.

With this policy installed, an existing asyncio test suite (unittest's
`IsolatedAsyncioTestCase`, pytest-asyncio, plain `asyncio.run`) runs on virtual time without
changes: sleeps take no wall time, time and entropy are seeded, and a test that waits forever
raises `Deadlock` instead of hanging. Each loop is the same seed's world, so each `asyncio.run`
reproduces. The code runs on a node named "localhost" (IP 10.0.0.1) that can open
connections and serve on its own addresses.

Time limit: one virtual day a loop (`POLICY_TIME_LIMIT_S`), so that a suite's long sleeps pass;
the environment variable `DETSIM_TEST_TIME_LIMIT` (virtual seconds) overrides it, as it does
for the pytest plugin, whatever the policy was built with.
"""

from __future__ import annotations

import asyncio
import os

from detsim.sim.config import NetConfig
from detsim.sim.errors import SimulationError
from detsim.sim.kernel.loop import SimLoop
from detsim.sim.world import Simulation

POLICY_NODE_NAME = "localhost"
POLICY_NODE_IP = "10.0.0.1"
POLICY_TIME_LIMIT_S = 86_400.0  # one virtual day
TIME_LIMIT_ENV = "DETSIM_TEST_TIME_LIMIT"


class EventLoopPolicy(asyncio.DefaultEventLoopPolicy):
    def __init__(
        self, seed: int = 0, net: NetConfig | None = None, time_limit: float = POLICY_TIME_LIMIT_S
    ) -> None:
        super().__init__()
        self.seed = seed
        self._net = net
        self._time_limit = _time_limit_from_env(time_limit)

    def new_event_loop(self) -> SimLoop:
        sim = Simulation(seed=self.seed, net=self._net, time_limit=self._time_limit)
        node = sim.add_node(POLICY_NODE_NAME, ip=POLICY_NODE_IP)
        assert node.boot is not None
        sim.loop.default_boot = node.boot
        sim.loop.close_with_teardown = True
        return sim.loop


def _time_limit_from_env(time_limit_s: float) -> float:
    """`DETSIM_TEST_TIME_LIMIT` if set, else `time_limit_s`."""
    raw = os.environ.get(TIME_LIMIT_ENV)
    if not raw:
        return time_limit_s
    try:
        return float(raw)
    except ValueError:
        raise SimulationError(
            f"{TIME_LIMIT_ENV}={raw!r} is not a number of virtual seconds"
        ) from None
