"""`detsim scenarios`: the scenario catalogue, one line each (name, then its description).

Planted-bug scenarios (left out of the default campaign) are marked. The lead registers
`command` in the CLI group.
"""

from __future__ import annotations

import click

from detsim.campaign.catalogue import registry


@click.command("scenarios")
def command() -> None:
    """List the scenarios that `detsim sim --scenario NAME` runs."""
    width = max((len(name) for name in registry), default=0)
    for name, scenario in registry.items():
        mark = "" if scenario.expect_pass else "[planted bug] "
        click.echo(f"{name:<{width}}  {mark}{scenario.description}")
