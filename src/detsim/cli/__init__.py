"""The `detsim` command line (see ../shared/DESIGN.md, CLI)."""

from __future__ import annotations

import click


@click.group()
@click.version_option(package_name="detsim")
def main() -> None:
    """Deterministic simulation testing for asyncio."""
