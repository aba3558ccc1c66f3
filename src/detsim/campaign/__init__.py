"""Campaigns: scenarios x seeds on local processes or Dask; artifacts; replay; HTML timeline.

Where things are: `scenario` (the contract: Scenario, Verdict), `catalogue` (the registry of
named scenarios, exported here as `registry`), `runner` (one run in a worker -> RunResult and
artifact), `pool` (local spawned workers with a fixed PYTHONHASHSEED), `dask_backend`,
`campaign` (many runs -> per-scenario summaries), `report` (progress bar and tables),
`replay` (artifact -> rerun -> same trace hash?), `timeline` (artifact -> HTML).
The CLI commands are detsim.cli.sim, detsim.cli.replay and detsim.cli.scenarios.
"""

from __future__ import annotations

from detsim.campaign.catalogue import registry
from detsim.campaign.scenario import Scenario, Verdict

__all__ = ["Scenario", "Verdict", "registry"]
