"""The simulation loop (defined in the kernel, `detsim.sim.kernel.loop`; named here too).

Kept so that imports of `detsim.sim.loop.SimLoop` from outside the simulator keep working.
"""

from __future__ import annotations

from detsim.sim.kernel.loop import SimLoop

__all__ = ["SimLoop"]
