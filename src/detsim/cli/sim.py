"""`detsim sim`: run a campaign of scenarios x seeds (DESIGN.md, "Campaigns").

Contract: `--scenario NAME` (repeatable, or `all`; none: the default campaign, every scenario
expected to pass), `--seeds N` (seeds 0..N-1, default `DEFAULT_SEEDS`) or `--seed S` (that
seed alone, with its options and failure printed VOPR-style), `--jobs J` worker processes
(default: the CPU count), `--artifacts DIR` (an artifact JSON per failing seed), `--param
KEY=VALUE` (scenario params, JSON values), `--dask ADDRESS|local`. Progress on stderr; the
table and the failures, each with its reproduce line, on stdout. Exit status: 0 every run
passed, 1 a run failed, 2 bad usage (unknown scenario: the known ones are listed; bad params;
dask not installed).
The lead registers `command` in the CLI group.
"""

from __future__ import annotations

import json

import click

from detsim.campaign import dask_backend, pool
from detsim.campaign.campaign import CampaignReport, check_params, run_campaign
from detsim.campaign.catalogue import UnknownScenario, registry
from detsim.campaign.report import print_report, print_single_run, progress_bar, stdout_console
from detsim.campaign.runner import RunResult
from detsim.cli._options import artifacts_option, jobs_option

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
# The one default number of seeds (`make campaign` passes none unless SEEDS is set): the
# default campaign is 66 store scenarios and the counter, so 10 seeds are 670 runs, about three
# to four minutes on 2 cores (BENCHMARKS.md, "The default campaign").
DEFAULT_SEEDS = 10


@click.command("sim")
@click.option(
    "--scenario",
    "scenarios",
    multiple=True,
    metavar="NAME",
    help="A scenario (repeatable), or 'all'. Default: every scenario expected to pass.",
)
@click.option(
    "--seeds",
    type=click.IntRange(min=1),
    default=DEFAULT_SEEDS,
    show_default=True,
    help="Run seeds 0..N-1 of each scenario.",
)
@click.option(
    "--seed",
    type=click.IntRange(min=0),
    default=None,
    help="Run this one seed (overrides --seeds) and print its options and outcome.",
)
@jobs_option
@artifacts_option("failing")
@click.option(
    "--param",
    "param_items",
    multiple=True,
    metavar="KEY=VALUE",
    help="A scenario parameter (VALUE is JSON, or a plain string); repeatable.",
)
@click.option(
    "--dask",
    "dask_address",
    metavar="ADDRESS|local",
    default=None,
    help="Run on a Dask cluster (scheduler address) or a local one.",
)
def command(
    scenarios: tuple[str, ...],
    seeds: int,
    seed: int | None,
    jobs: int | None,
    artifacts_dir: str,
    param_items: tuple[str, ...],
    dask_address: str | None,
) -> None:
    """Run scenarios x seeds under faults; report failures with the line that reproduces them."""
    ctx = click.get_current_context()
    names = _select(scenarios)
    params = _parse_params(param_items)
    if dask_address is not None and not dask_backend.available():
        _usage_error("--dask needs dask.distributed: install detsim[dask]")
    try:
        check_params(names, params)
    except ValueError as exc:
        _usage_error(f"bad --param: {exc}")
    seed_list = [seed] if seed is not None else list(range(seeds))
    jobs = min(jobs or pool.default_jobs(), len(names) * len(seed_list))
    report = _run(names, seed_list, jobs, params, artifacts_dir, dask_address)
    console = stdout_console()
    if seed is not None:
        for result in report.results:
            print_single_run(result, console)
    print_report(report, console)
    _warn_hash_seeds(report.results)
    ctx.exit(EXIT_FAILED if report.failures else EXIT_OK)


def _run(
    names: list[str],
    seeds: list[int],
    jobs: int,
    params: dict[str, object],
    artifacts_dir: str,
    dask_address: str | None,
) -> CampaignReport:
    with progress_bar(len(names) * len(seeds)) as advance:
        return run_campaign(
            names,
            seeds,
            jobs=jobs,
            params=params,
            artifacts_dir=artifacts_dir,
            dask_address=dask_address,
            on_result=advance,
        )


def _select(scenarios: tuple[str, ...]) -> list[str]:
    try:
        names = registry.select(scenarios)
    except UnknownScenario as exc:
        _usage_error(str(exc))
    if not names:
        _usage_error("no scenario to run (the catalogue has none expected to pass)")
    return names


def _parse_params(items: tuple[str, ...]) -> dict[str, object]:
    params: dict[str, object] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key:
            _usage_error(f"--param takes KEY=VALUE, got {item!r}")
        try:
            params[key] = json.loads(text)
        except json.JSONDecodeError:
            params[key] = text
    return params


def _warn_hash_seeds(results: list[RunResult]) -> None:
    odd = sorted({r.hash_seed or "unset" for r in results if r.hash_seed != pool.HASH_SEED})
    if odd:
        click.echo(
            f"warning: some workers ran with PYTHONHASHSEED={', '.join(odd)}, not "
            f"{pool.HASH_SEED}: their seeds may not replay elsewhere",
            err=True,
        )


def _usage_error(message: str) -> None:
    click.echo(f"error: {message}", err=True)
    click.get_current_context().exit(EXIT_USAGE)
