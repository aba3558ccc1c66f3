"""What the campaign commands (`detsim sim`, `detsim mutants`) share: the `--jobs` option and
the default artifacts directory, defined once so that the commands cannot drift apart.

Rule: imports only click and detsim.campaign.pool, which both commands load anyway.
"""

from __future__ import annotations

from typing import Final

import click

from detsim.campaign import pool

DEFAULT_ARTIFACTS_DIR: Final = "artifacts"

#: `--jobs/-j J`: worker processes, 1..pool.MAX_JOBS; None (not given): the command's default,
#: `pool.default_jobs()` (the CPU count).
jobs_option = click.option(
    "--jobs",
    "-j",
    type=click.IntRange(1, pool.MAX_JOBS),
    default=None,
    help="Worker processes.  [default: the CPU count]",
)
