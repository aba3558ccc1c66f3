"""detsim: deterministic simulation testing for asyncio.

The public names of the simulator (see ../shared/DESIGN.md, "Simulator API").
"""

from __future__ import annotations

from detsim.sim import trace
from detsim.sim.config import DiskConfig, NetConfig
from detsim.sim.determinism import check_determinism
from detsim.sim.errors import (
    Deadlock,
    NodeDown,
    NondeterminismError,
    SimulationError,
    SimulationTimeLimit,
)
from detsim.sim.faults import buggify
from detsim.sim.node import Node
from detsim.sim.policy import EventLoopPolicy
from detsim.sim.runtime import active as _active
from detsim.sim.world import Simulation


def in_simulation() -> bool:
    """True when called inside a running simulation."""
    return _active() is not None


__all__ = [
    "Deadlock",
    "DiskConfig",
    "EventLoopPolicy",
    "NetConfig",
    "Node",
    "NodeDown",
    "NondeterminismError",
    "Simulation",
    "SimulationError",
    "SimulationTimeLimit",
    "buggify",
    "check_determinism",
    "in_simulation",
    "trace",
]
