"""`detsim mutants`: the planted-bug catalogue against the default campaign (DESIGN.md,
"Campaigns").

Contract: for each bug (`--bug NAME`, repeatable; none: the whole catalogue) run the default
campaign's store scenarios (`--scenario NAME`, repeatable, narrows them) with the bug planted,
seeds round-robin over the scenarios, until the first failing run (detected) or `--budget-s`
wall seconds (missed); `--jobs J` worker processes. Prints a table (bug, detected, seeds until
detection, wall s, the detecting scenario and seed) with the line that replays each detection;
with `--json`, one line per bug: {"bug", "detected", "seeds", "wall_s"} and nothing else on
stdout. Progress on stderr. Exit status: 0 every bug detected, 1 a bug missed, 2 bad usage.
"""

from __future__ import annotations

import json

import click

from detsim.campaign import pool
from detsim.cli._options import artifacts_option, jobs_option
from detsim.mutants import sweep
from detsim.mutants._patch import Mutant
from detsim.mutants.catalogue import BY_NAME, MUTANTS
from detsim.mutants.scenarios import MODULE, default_store_scenarios
from detsim.mutants.sweep import HuntResult

EXIT_OK, EXIT_MISSED, EXIT_USAGE = 0, 1, 2


@click.command("mutants")
@click.option("--json", "as_json", is_flag=True, help="One JSON line per bug on stdout.")
@click.option("--bug", "bugs", multiple=True, metavar="NAME", help="A bug (repeatable).")
@click.option(
    "--scenario",
    "scenarios",
    multiple=True,
    metavar="NAME",
    help="A store scenario to hunt with (repeatable). Default: the default campaign's.",
)
@jobs_option
@click.option(
    "--budget-s",
    type=click.FloatRange(min=0, min_open=True),
    default=sweep.DEFAULT_BUDGET_S,
    show_default=True,
    help="Wall seconds per bug before it counts as missed.",
)
@click.option(
    "--max-seeds",
    type=click.IntRange(min=1),
    default=sweep.DEFAULT_MAX_SEEDS,
    show_default=True,
    help="Seeds per scenario at most.",
)
@artifacts_option("detecting")
def command(
    as_json: bool,
    bugs: tuple[str, ...],
    scenarios: tuple[str, ...],
    jobs: int | None,
    budget_s: float,
    max_seeds: int,
    artifacts_dir: str,
) -> None:
    """Plant each known Raft/store bug and check that the default campaign finds it."""
    ctx = click.get_current_context()
    mutants = _select_bugs(bugs)
    names = _select_scenarios(scenarios)
    jobs = jobs or pool.default_jobs()
    results: list[HuntResult] = []
    for mutant in mutants:
        click.echo(f"hunting {mutant.name}: {mutant.description} ...", err=True)
        result = sweep.hunt(
            mutant,
            names,
            jobs=jobs,
            budget_s=budget_s,
            max_seeds=max_seeds,
            artifacts_dir=artifacts_dir,
        )
        results.append(result)
        if as_json:
            click.echo(json.dumps(result.as_json()))
    if not as_json:
        _print_table(results)
    ctx.exit(EXIT_OK if all(r.detected for r in results) else EXIT_MISSED)


def _print_table(results: list[HuntResult]) -> None:
    header = f"{'bug':<28} {'detected':<8} {'seeds':>5} {'wall s':>7} {'cpu s':>7}  found by"
    click.echo(header)
    click.echo("-" * len(header))
    for r in results:
        by = f"{r.scenario} seed {r.seed}" if r.detected else "-"
        mark = "yes" if r.detected else "NO"
        click.echo(f"{r.bug:<28} {mark:<8} {r.seeds:>5} {r.wall_s:>7.1f} {r.cpu_s:>7.1f}  {by}")
    detected = [r for r in results if r.detected]
    click.echo(f"{len(detected)} of {len(results)} bugs detected")
    for r in detected:
        click.echo(f"{r.bug}: {r.failure}")
        click.echo(
            f"  replay: DETSIM_SCENARIO_MODULES={MODULE} detsim sim "
            f"--scenario mutant.{r.bug}.{r.scenario} --seed {r.seed}"
        )
        if r.artifact_path is not None:
            click.echo(f"  or: DETSIM_SCENARIO_MODULES={MODULE} detsim replay {r.artifact_path}")


def _select_bugs(bugs: tuple[str, ...]) -> list[Mutant]:
    unknown = [b for b in bugs if b not in BY_NAME]
    if unknown:
        _usage_error(f"unknown bug {unknown[0]!r}; known: {', '.join(BY_NAME)}")
    return [BY_NAME[b] for b in dict.fromkeys(bugs)] if bugs else list(MUTANTS)


def _select_scenarios(scenarios: tuple[str, ...]) -> list[str]:
    known = default_store_scenarios()
    unknown = [s for s in scenarios if s not in known]
    if unknown:
        _usage_error(f"not a default store scenario: {unknown[0]!r}; known: {', '.join(known)}")
    names = list(dict.fromkeys(scenarios)) if scenarios else known
    if not names:
        _usage_error("no store scenario to hunt with")
    return names


def _usage_error(message: str) -> None:
    click.echo(f"error: {message}", err=True)
    click.get_current_context().exit(EXIT_USAGE)
