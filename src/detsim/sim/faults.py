"""`detsim.buggify`: FoundationDB-style fault sites in the code under test.

`if detsim.buggify(): ...` marks a place where a rare path may be forced. Outside a simulation
(or with `Simulation(buggify=False)`) it is always False. Inside, each site (the caller's file
and line) is switched on or off once per run with probability 1/2, at its first evaluation; a
site that is on fires with probability `p` each time. Both draws come from the simulation's
buggify stream and are traced, so a run that fires a site replays it.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from detsim.sim import runtime

if TYPE_CHECKING:
    from detsim.sim.world import Simulation

SITE_ENABLE_PROBABILITY = 0.5


def buggify(p: float = 0.25) -> bool:
    """True when this fault site should misbehave now (only ever inside a simulation)."""
    sim = runtime.active()
    if sim is None:
        return False
    frame = sys._getframe(1)
    return site_fires(sim, p, frame.f_code.co_filename, frame.f_lineno)


def site_fires(sim: Simulation, p: float, filename: str, line: int) -> bool:
    """The draw of `buggify(p)` at the site `filename:line` of `sim` (also reached by
    production code through `detsim.seam.buggify`, which passes its caller's site)."""
    if not sim.buggify_enabled:
        return False
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"buggify(p) needs a probability in [0, 1], got {p!r}")
    site = (filename, line)
    enabled = sim.buggify_sites.get(site)
    if enabled is None:
        enabled = sim.buggify_rng.random() < SITE_ENABLE_PROBABILITY
        sim.buggify_sites[site] = enabled
        sim.record("buggify_site", line=line, enabled=enabled)
    if not enabled:
        return False
    fired = sim.buggify_rng.random() < p
    sim.trace.mix(int(fired), line)
    return fired
