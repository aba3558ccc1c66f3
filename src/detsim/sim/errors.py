"""The simulator's errors (defined in the kernel, `detsim.sim.kernel.errors`; named here too).

Misuse of the simulator raises `SimulationError` itself; the outcomes of a run are
`RunOutcome`s: `SimulationTimeLimit`, `Deadlock`, `InitFailed`, `SimulatorFault`,
`BoundExceeded`, and `RunFailures` when a run has several. See the kernel module for the rules.
"""

from __future__ import annotations

from detsim.sim.kernel.errors import (
    BoundExceeded,
    Deadlock,
    InitFailed,
    NodeDown,
    NondeterminismError,
    RunFailures,
    RunOutcome,
    SimulationError,
    SimulationTimeLimit,
    SimulatorFault,
)

__all__ = [
    "BoundExceeded",
    "Deadlock",
    "InitFailed",
    "NodeDown",
    "NondeterminismError",
    "RunFailures",
    "RunOutcome",
    "SimulationError",
    "SimulationTimeLimit",
    "SimulatorFault",
]
