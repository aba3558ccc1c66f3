"""`detsim.EventLoopPolicy`: every new event loop is a fresh one-node simulation.

With this policy installed, an existing asyncio test suite (unittest's
`IsolatedAsyncioTestCase`, pytest-asyncio, plain `asyncio.run`) runs on virtual time without
changes: sleeps take no wall time, time and entropy are seeded, and a test that waits forever
raises `Deadlock` instead of hanging. Each loop is the same seed's world, so each `asyncio.run`
reproduces. The code runs on a node named "localhost" (IP 10.0.0.1) that can open
connections and serve on its own addresses.
"""

from __future__ import annotations

import asyncio

from detsim.sim.config import NetConfig
from detsim.sim.loop import SimLoop
from detsim.sim.world import DEFAULT_TIME_LIMIT_S, Simulation

POLICY_NODE_NAME = "localhost"
POLICY_NODE_IP = "10.0.0.1"


class EventLoopPolicy(asyncio.DefaultEventLoopPolicy):
    def __init__(
        self, seed: int = 0, net: NetConfig | None = None, time_limit: float = DEFAULT_TIME_LIMIT_S
    ) -> None:
        super().__init__()
        self.seed = seed
        self._net = net
        self._time_limit = time_limit

    def new_event_loop(self) -> SimLoop:
        sim = Simulation(seed=self.seed, net=self._net, time_limit=self._time_limit)
        node = sim.add_node(POLICY_NODE_NAME, ip=POLICY_NODE_IP)
        assert node.boot is not None
        sim.loop.default_boot = node.boot
        sim.loop.close_with_teardown = True
        return sim.loop
