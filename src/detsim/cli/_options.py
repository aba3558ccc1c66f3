"""What the campaign commands (`detsim sim`, `detsim mutants`) share: the `--jobs` and
`--artifacts` options, defined once so that the commands cannot drift apart.

Rule: imports only click and detsim.campaign.pool, which both commands load anyway.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final, TypeVar

import click

from detsim.campaign import pool

FC = TypeVar("FC", bound=Callable[..., Any])

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


def artifacts_option(which_runs: str) -> Callable[[FC], FC]:
    """`--artifacts DIR` (the command's parameter `artifacts_dir`): where an artifact JSON of
    each of `which_runs` runs is written ("failing", "detecting")."""
    return click.option(
        "--artifacts",
        "artifacts_dir",
        type=click.Path(file_okay=False),
        default=DEFAULT_ARTIFACTS_DIR,
        show_default=True,
        help=f"Directory for the artifact JSON of each {which_runs} run.",
    )
