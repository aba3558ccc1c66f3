"""The `detsim` command line (see ../shared/DESIGN.md, CLI).

Each command lives in its own module of this package and exposes `command`; this module only
assembles the group.
"""

from __future__ import annotations

import click

from detsim.cli import check, mutants, replay, scenarios, serve, sim, up


@click.group()
@click.version_option(package_name="detsim")
def main() -> None:
    """Deterministic simulation testing for asyncio."""


for _module in (check, sim, replay, scenarios, serve, up, mutants):
    main.add_command(_module.command)
