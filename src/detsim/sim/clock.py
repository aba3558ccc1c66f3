"""Virtual time (defined in the kernel, `detsim.sim.kernel.clock`; named here too)."""

from __future__ import annotations

from detsim.sim.kernel.clock import EPOCH_S, MAX_ABS_DRIFT, NodeClock

__all__ = ["EPOCH_S", "MAX_ABS_DRIFT", "NodeClock"]
