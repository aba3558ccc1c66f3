"""Virtual time: the simulation's global clock and each node's skewed view of it.

Rules:
- The global clock (`now`, virtual seconds from 0.0) only moves forward, and only when nothing
  is ready to run: it jumps to the next timer. Wall time never enters the simulation.
- A node's monotonic clock runs at rate `1 + drift` and never jumps, even when the drift
  changes (it is re-anchored); its wall clock is `EPOCH_S + offset_s + monotonic`, so an offset
  change is an NTP-style step of the wall clock alone. Timers run on the monotonic clock.
"""

from __future__ import annotations

from detsim.sim.kernel.errors import SimulationError

# Wall-clock time at virtual 0.0: 2024-01-01T00:00:00Z. Fixed so that runs reproduce.
EPOCH_S = 1_704_067_200.0
MAX_ABS_DRIFT = 0.5  # a clock more than 50% fast or slow is not a clock


class NodeClock:
    """One host's clock: maps global virtual time to the host's monotonic and wall time."""

    __slots__ = ("_anchor_global_s", "_anchor_local_s", "drift", "offset_s")

    def __init__(self) -> None:
        self._anchor_global_s = 0.0
        self._anchor_local_s = 0.0
        self.drift = 0.0
        self.offset_s = 0.0

    def monotonic(self, now_s: float) -> float:
        return self._anchor_local_s + (now_s - self._anchor_global_s) * (1.0 + self.drift)

    def wall(self, now_s: float) -> float:
        return EPOCH_S + self.offset_s + self.monotonic(now_s)

    def to_global(self, local_s: float) -> float:
        """The global time at which this clock reads `local_s` (for timers)."""
        if self.drift == 0.0 and self._anchor_local_s == self._anchor_global_s:
            return local_s
        return self._anchor_global_s + (local_s - self._anchor_local_s) / (1.0 + self.drift)

    def set(self, now_s: float, offset_s: float, drift: float) -> None:
        if not -MAX_ABS_DRIFT <= drift <= MAX_ABS_DRIFT:
            raise SimulationError(
                f"drift {drift!r} out of range: use a rate error in "
                f"[-{MAX_ABS_DRIFT}, {MAX_ABS_DRIFT}] (0.01 is a clock 1% fast)"
            )
        self._anchor_local_s = self.monotonic(now_s)
        self._anchor_global_s = now_s
        self.drift = drift
        self.offset_s = offset_s
