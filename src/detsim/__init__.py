"""detsim: deterministic simulation testing for asyncio.

The public names of the simulator (see ../shared/DESIGN.md, "Simulator API").

Rule: importing this package loads nothing of the simulator. `import detsim.fs` (or
`detsim.raft`, `detsim.kv`, `detsim.check`) runs this file first, and production code must not
load `detsim.sim` (DESIGN "Layers"), so the simulator's names are imported on first use
(PEP 562 module `__getattr__`); the `TYPE_CHECKING` block shows them to type checkers and IDEs.
"""

from __future__ import annotations

import importlib
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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
    from detsim.sim.world import Simulation

# Public name -> (module, attribute in it; None for the module itself).
_LAZY: dict[str, tuple[str, str | None]] = {
    "Deadlock": ("detsim.sim.errors", "Deadlock"),
    "DiskConfig": ("detsim.sim.config", "DiskConfig"),
    "EventLoopPolicy": ("detsim.sim.policy", "EventLoopPolicy"),
    "NetConfig": ("detsim.sim.config", "NetConfig"),
    "Node": ("detsim.sim.node", "Node"),
    "NodeDown": ("detsim.sim.errors", "NodeDown"),
    "NondeterminismError": ("detsim.sim.errors", "NondeterminismError"),
    "Simulation": ("detsim.sim.world", "Simulation"),
    "SimulationError": ("detsim.sim.errors", "SimulationError"),
    "SimulationTimeLimit": ("detsim.sim.errors", "SimulationTimeLimit"),
    "buggify": ("detsim.sim.faults", "buggify"),
    "check_determinism": ("detsim.sim.determinism", "check_determinism"),
    "trace": ("detsim.sim.trace", None),
}


if not TYPE_CHECKING:  # hidden from type checkers, so a misspelt name is still an error there

    def __getattr__(name: str) -> Any:
        """Import a simulator name on first use, then keep it in this module's namespace."""
        target = _LAZY.get(name)
        if target is None:
            raise AttributeError(f"module 'detsim' has no attribute {name!r}")
        module_name, attribute = target
        module = importlib.import_module(module_name)
        value = module if attribute is None else getattr(module, attribute)
        globals()[name] = value  # later lookups are plain attribute reads
        return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


def in_simulation() -> bool:
    """True when called inside a running simulation."""
    # A process that never loaded the simulator runs no simulation: answering must not load it.
    runtime = sys.modules.get("detsim.sim.runtime")
    return runtime is not None and runtime.active() is not None


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
