"""The `detsim` command line (see ../shared/DESIGN.md, CLI).

Each command lives in its own module of this package and exposes `command`; this module only
assembles the group.

Rule: a command's module is imported when that command runs (or when help lists it), never
before. `detsim serve` is a production process and must not load the simulator (DESIGN
"Layers"); `detsim check` must not pay for redis-py or the store.
"""

from __future__ import annotations

import importlib

import click

#: Command name -> its module (each exposes `command`), in the order `detsim --help` lists them.
COMMANDS: dict[str, str] = {
    "check": "detsim.cli.check",
    "sim": "detsim.cli.sim",
    "replay": "detsim.cli.replay",
    "scenarios": "detsim.cli.scenarios",
    "serve": "detsim.cli.serve",
    "up": "detsim.cli.up",
    "mutants": "detsim.cli.mutants",
}


class _LazyGroup(click.Group):
    """A group whose commands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        module_name = COMMANDS.get(cmd_name)
        if module_name is None:
            return None
        command = importlib.import_module(module_name).command
        assert isinstance(command, click.Command), module_name
        return command

    @property
    def all_commands(self) -> dict[str, click.Command]:
        """Every command, imported (for documentation checks)."""
        ctx = click.Context(self)
        found = {name: self.get_command(ctx, name) for name in self.list_commands(ctx)}
        return {name: command for name, command in found.items() if command is not None}


@click.group(cls=_LazyGroup)
@click.version_option(package_name="detsim")
def main() -> None:
    """Deterministic simulation testing for asyncio."""
