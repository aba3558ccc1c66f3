"""The simulator's errors.

`SimulationError` is the base: misuse of the simulator (an unknown node, a blocking call inside a
simulation, a real socket) raises it directly, with a message that says what to do instead.
The subclasses are outcomes of a run that a caller may want to tell apart.
"""

from __future__ import annotations


class SimulationError(RuntimeError):
    """Misuse of the simulator, or a run that cannot go on."""


class NondeterminismError(SimulationError):
    """The same seed gave two different runs; the message names the first divergent event."""


class SimulationTimeLimit(SimulationError):
    """The virtual clock passed `Simulation(time_limit=...)` before `main` returned."""


class Deadlock(SimulationError):
    """`main` waits and nothing can ever happen again; the message names the blocked tasks."""


class NodeDown(SimulationError):
    """A task spawned on a node was lost because the node was killed or crashed."""
