"""README.md's command line table matches the CLI: every option of every command is in its row.

Docs match code by test, not by care: a new option, or a default that changes in one place
only, fails here.
"""

from __future__ import annotations

import re
from pathlib import Path

import click

from detsim.cli import main
from detsim.cli import sim as sim_cli

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def _row(command: str) -> str:
    rows = [line for line in README.splitlines() if line.startswith(f"| `detsim {command}")]
    assert len(rows) == 1, f"README's command table should have one row for `detsim {command}`"
    return rows[0]


def test_every_command_and_option_is_in_the_readme_table() -> None:
    for name, command in main.all_commands.items():
        row = _row(name)
        for param in command.params:
            if not isinstance(param, click.Option) or param.name == "help":
                continue
            longest = max(param.opts, key=len)
            assert f"[{longest}" in row, f"README's `detsim {name}` row lacks {longest}"
            if isinstance(param.type, click.Choice):
                choices = "\\|".join(str(c) for c in param.type.choices)
                assert f"[{longest} {choices}]" in row, f"{longest}'s choices in README"


def test_one_default_number_of_seeds() -> None:
    default = sim_cli.DEFAULT_SEEDS
    assert f"over {default} seeds (the command's default" in README
    assert f"(default {default})" in README
    # `make campaign` passes --seeds only when SEEDS is set: the CLI's default is the one.
    recipe = re.search(r"^campaign:.*\n\t(.*)$", (ROOT / "Makefile").read_text(), re.M)
    assert recipe is not None and "${SEEDS:+--seeds $$SEEDS}" in recipe.group(1)
