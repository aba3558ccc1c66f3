"""Virtual time: the simulation's global clock and each node's skewed view of it.

Rules:
- The global clock (`now`, virtual seconds from 0.0) only moves forward, and only when nothing
  is ready to run: it jumps to the next timer. Wall time never enters the simulation.
- A node's monotonic clock runs at rate `1 + drift` and never jumps, even when the drift
  changes (it is re-anchored); its wall clock is `EPOCH_S + offset_s + monotonic`, so an offset
  change is an NTP-style step of the wall clock alone. Timers run on the monotonic clock.
- `monotonic` never runs backwards (it is monotone in global time, across re-anchoring too),
  and `to_global(d)` is the FIRST global instant whose local time is >= d, exactly, in floats:
  the division in the inverse map rounds, and a timer converted one ulp early fired before its
  local deadline without the global clock moving, so a sleep-until-deadline loop re-armed at
  the same instant forever (clock_skew scenarios). The conversion is nudged ulp by ulp to the
  exact boundary (at most MAX_ULP_NUDGES steps; a few suffice since the rate is 0.5..1.5).
"""

from __future__ import annotations

import math

from detsim.sim.kernel.errors import SimulationError

# Wall-clock time at virtual 0.0: 2024-01-01T00:00:00Z. Fixed so that runs reproduce.
EPOCH_S = 1_704_067_200.0
MAX_ABS_DRIFT = 0.5  # a clock more than 50% fast or slow is not a clock
# The inverse map's rounding error is a few ulps (one division, two roundings each way); far
# more means the mapping is broken, not imprecise.
MAX_ULP_NUDGES = 64


class NodeClock:
    """One host's clock: maps global virtual time to the host's monotonic and wall time."""

    __slots__ = ("_anchor_global_s", "_anchor_local_s", "drift", "offset_s")

    def __init__(self) -> None:
        self._anchor_global_s = 0.0
        self._anchor_local_s = 0.0
        self.drift = 0.0
        self.offset_s = 0.0

    def _is_identity(self) -> bool:
        return self.drift == 0.0 and self._anchor_local_s == self._anchor_global_s

    def monotonic(self, now_s: float) -> float:
        # The identity case returns now_s itself: a + (now - a) is not always now in floats,
        # and to_global's identity shortcut must be this function's exact inverse.
        if self._is_identity():
            return now_s
        return self._anchor_local_s + (now_s - self._anchor_global_s) * (1.0 + self.drift)

    def wall(self, now_s: float) -> float:
        return EPOCH_S + self.offset_s + self.monotonic(now_s)

    def to_global(self, local_s: float) -> float:
        """The first global time at which this clock reads `local_s` or later (for timers)."""
        if self._is_identity() or not math.isfinite(local_s):
            return local_s
        anchor_global_s, anchor_local_s = self._anchor_global_s, self._anchor_local_s
        rate = 1.0 + self.drift
        global_s = anchor_global_s + (local_s - anchor_local_s) / rate
        # monotonic()'s arithmetic, inlined (this runs for every timer of a skewed host).
        nudges = 0
        while anchor_local_s + (global_s - anchor_global_s) * rate < local_s:
            global_s = math.nextafter(global_s, math.inf)  # rounded early: would fire early
            nudges += 1
            assert nudges <= MAX_ULP_NUDGES, f"to_global({local_s!r}) is {nudges} ulps off"
        while True:
            earlier_s = math.nextafter(global_s, -math.inf)
            if anchor_local_s + (earlier_s - anchor_global_s) * rate < local_s:
                break
            global_s = earlier_s  # rounded late: the timer would fire after its deadline
            nudges += 1
            assert nudges <= MAX_ULP_NUDGES, f"to_global({local_s!r}) is {nudges} ulps off"
        return global_s

    def set(self, now_s: float, offset_s: float, drift: float) -> None:
        if not -MAX_ABS_DRIFT <= drift <= MAX_ABS_DRIFT:
            raise SimulationError(
                f"drift {drift!r} out of range: use a rate error in "
                f"[-{MAX_ABS_DRIFT}, {MAX_ABS_DRIFT}] (0.01 is a clock 1% fast)"
            )
        local_now_s = self.monotonic(now_s)
        self._anchor_local_s = local_now_s
        self._anchor_global_s = now_s
        self.drift = drift
        self.offset_s = offset_s
        assert self.monotonic(now_s) == local_now_s, "re-anchoring made the clock jump"
