"""The simulator's errors: misuse of it, and the outcomes of a run.

Two families, told apart by class so that one never stands in for the other:
- misuse (a caller's bug: an unknown node, a blocking call inside a simulation, a real socket)
  raises `SimulationError` itself, at the call, with a message that says what to do instead;
- outcomes (`RunOutcome` and its subclasses) end a run without `main`'s result: the time limit,
  a deadlock, an init that failed, a fault of the simulator's own machinery, a bound hit.
  `Simulation.run` reports every outcome of a run: when `main` failed too, or several outcomes
  happened in the same round, it raises `RunFailures` (an ExceptionGroup) holding each of them.
`NodeDown` (a spawned task lost with its node) and `NondeterminismError` (check_determinism's
verdict) are neither: they are answers that a caller may catch and act on.
"""

from __future__ import annotations


class SimulationError(RuntimeError):
    """Base of every simulator error; raised as is for misuse of the simulator."""


class NodeDown(SimulationError):
    """A task spawned on a node was lost because the node was killed or crashed."""


class NondeterminismError(SimulationError):
    """The same seed gave two different runs; the message names the first divergent event."""


class RunOutcome(SimulationError):
    """A run ended without `main`'s result, for a reason of the run rather than of a call."""


class SimulationTimeLimit(RunOutcome):
    """The virtual clock passed `Simulation(time_limit=...)` before `main` returned."""


class Deadlock(RunOutcome):
    """`main` waits and nothing can ever happen again; the message names the blocked tasks."""


class InitFailed(RunOutcome):
    """A node's init raised: the node could not start (the cause is `__cause__`)."""


class SimulatorFault(RunOutcome):
    """The simulator's own machinery (network, timers) raised: the run means nothing past it."""


class BoundExceeded(RunOutcome):
    """A stated bound of the simulator was hit (ready callbacks, timers, dead tasks, ...)."""


class RunFailures(ExceptionGroup[Exception], RunOutcome):
    """Several failures of one run (`main`'s error and an init failure, say): all reported."""
