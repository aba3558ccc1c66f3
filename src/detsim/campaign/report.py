"""What a campaign shows: a progress bar on stderr, a summary table and the failures on stdout.

Rules: the progress bar never writes to stdout (stdout stays the report, fit for a log or a
pipe) and is harmless when stderr is not a terminal (rich then draws nothing live); the table
has one row per scenario; each failure gets its first line, its artifact and the exact command
that reproduces it, at most `MAX_FAILURES_LISTED` of them.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from detsim.campaign.campaign import CampaignReport
from detsim.campaign.runner import RunResult

MAX_FAILURES_LISTED = 20
MAX_SUMMARY_CHARS = 300
TABLE_WIDTH = 110


def stdout_console() -> Console:
    return Console(width=TABLE_WIDTH, highlight=False, soft_wrap=True)


@contextmanager
def progress_bar(total: int) -> Iterator[Any]:
    """Yields `advance(result)`; draws `done/total`, failures and time left on stderr."""
    progress = Progress(
        TextColumn("[bold]campaign"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[failures]} failed"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=False,
    )
    failures = 0
    with progress:
        task_id = progress.add_task("campaign", total=total, failures=0)

        def advance(result: RunResult) -> None:
            nonlocal failures
            failures += not result.passed
            progress.update(task_id, advance=1, failures=failures)

        yield advance


def reproduce_line(result: RunResult) -> str:
    words = ["detsim", "sim", "--scenario", result.scenario, "--seed", str(result.seed)]
    for key, value in sorted(result.params.items()):
        words += ["--param", f"{key}={_param_text(value)}"]
    return shlex.join(words)


def _param_text(value: Any) -> str:
    import json

    return value if isinstance(value, str) else json.dumps(value)


def summary_table(report: CampaignReport) -> Table:
    table = Table(
        title=f"detsim campaign: {len(report.results)} runs on {report.jobs} jobs, "
        f"{report.elapsed_s:.1f} s wall",
        title_justify="left",
    )
    for header in ("scenario", "seeds", "failures", "ops checked", "virtual s", "run wall s"):
        table.add_column(header, justify="left" if header == "scenario" else "right")
    table.add_column("virtual/wall", justify="right")
    for s in report.summaries:
        name = s.scenario if s.expect_pass else f"{s.scenario} (planted bug)"
        failed = f"[red]{s.failures}[/red]" if s.failures else "0"
        table.add_row(
            name,
            str(s.seeds),
            failed,
            f"{s.operations:,}",
            f"{s.virtual_s:,.1f}",
            f"{s.wall_s:,.2f}",
            f"{s.speed:,.0f}x",
        )
    return table


def print_report(report: CampaignReport, console: Console) -> None:
    console.print(summary_table(report))
    failures = report.failures
    for result in failures[:MAX_FAILURES_LISTED]:
        console.print(
            f"[red]FAILED[/red] {result.scenario} seed {result.seed}: "
            f"{result.summary[:MAX_SUMMARY_CHARS]}",
            markup=True,
        )
        if result.artifact_path:
            console.print(f"  artifact:  {result.artifact_path}", markup=False)
        console.print(f"  reproduce: {reproduce_line(result)}", markup=False)
    if len(failures) > MAX_FAILURES_LISTED:
        console.print(f"... and {len(failures) - MAX_FAILURES_LISTED} more failures", markup=False)
    if failures:
        console.print(f"{len(failures)} of {len(report.results)} runs failed", markup=False)
    else:
        console.print(f"all {len(report.results)} runs passed", markup=False)


def print_single_run(result: RunResult, console: Console) -> None:
    """One seed, VOPR style: the options drawn from it, then the outcome."""
    console.print(f"scenario {result.scenario}, seed {result.seed}", markup=False)
    for key, value in result.options.items():
        console.print(f"  {key} = {value}", markup=False)
    console.print(f"  operations checked = {result.operations}", markup=False)
    console.print(f"  virtual seconds = {result.virtual_s:.3f}", markup=False)
    console.print(f"  trace hash = {result.trace_hash}", markup=False)
    if result.failure is not None:
        console.print("failure:", markup=False)
        console.print("  " + result.failure.replace("\n", "\n  "), markup=False)
