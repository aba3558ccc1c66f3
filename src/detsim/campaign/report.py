"""What a campaign shows: a progress bar on stderr, a summary table and the failures on stdout.

Rules: the progress bar never writes to stdout (stdout stays the report, fit for a log or a
pipe) and is harmless when stderr is not a terminal (rich then draws nothing live); its two
times are labelled (elapsed, left). The table has one row per scenario; its title gives the
campaign's own wall time and speed (virtual seconds per elapsed wall second, all workers
together), while the per-row wall column is the runs' wall time summed over workers, and says
so, as does its speed column. Under the table, each scenario says what it checked (histories,
operations, the properties its verdicts name). Each failure gets its first line (cut at a word,
never mid-word), its artifact and the exact command that reproduces it, at most
`MAX_FAILURES_LISTED` of them. Counts take their plural only when they are not 1.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from detsim.campaign.campaign import CampaignReport, ScenarioSummary
from detsim.campaign.runner import RunResult

MAX_FAILURES_LISTED = 20
MAX_SUMMARY_CHARS = 300
TABLE_WIDTH = 120


def stdout_console() -> Console:
    return Console(width=TABLE_WIDTH, highlight=False, soft_wrap=True)


class Labelled(ProgressColumn):
    """Another column's text between a label and a suffix ("elapsed 0:01:02,")."""

    def __init__(self, label: str, column: ProgressColumn, suffix: str = "") -> None:
        super().__init__()
        self.label = label
        self.column = column
        self.suffix = suffix

    def render(self, task: Task) -> Text:
        inner = self.column.render(task)
        return Text.assemble(self.label, inner if isinstance(inner, Text) else "", self.suffix)


@contextmanager
def progress_bar(total: int, console: Console | None = None) -> Iterator[Any]:
    """Yields `advance(result)`; draws `done/total`, failures and time left on stderr."""
    progress = Progress(
        TextColumn("[bold]campaign"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("runs done, {task.fields[failures]} failed,"),
        Labelled("elapsed ", TimeElapsedColumn(), ","),
        Labelled("left ", TimeRemainingColumn()),
        console=console or Console(stderr=True),
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


RUN_WALL_HEADER = "run wall s (sum)"
RUN_SPEED_HEADER = "virtual/run wall"
TABLE_CAPTION = (
    f"{RUN_WALL_HEADER}: the runs' own wall seconds, added up over all workers.\n"
    f"{RUN_SPEED_HEADER}: virtual seconds per wall second of one worker."
)


def plural(count: int, word: str, words: str | None = None) -> str:
    """`1 run`, `2 runs`, `1,000 runs` (`words`: an irregular plural)."""
    return f"{count:,} {word if count == 1 else (words or word + 's')}"


def clip(text: str, max_chars: int) -> str:
    """`text` cut to `max_chars` at a word boundary, with `...` when cut."""
    if len(text) <= max_chars:
        return text
    return text[:max_chars].rsplit(" ", 1)[0] + " ..."


def table_title(report: CampaignReport) -> str:
    return (
        f"detsim campaign: {plural(len(report.results), 'run')} on "
        f"{plural(report.jobs, 'job')} in {report.elapsed_s:,.1f} s wall; "
        f"{report.virtual_s:,.1f} virtual s, {report.speed:,.0f} virtual s per wall s"
    )


def summary_table(report: CampaignReport) -> Table:
    table = Table(
        title=table_title(report),
        title_justify="left",
        caption=TABLE_CAPTION,
        caption_justify="left",
    )
    headers = ("seeds", "failures", "histories", "ops checked", "virtual s", RUN_WALL_HEADER)
    table.add_column("scenario", justify="left")
    for header in (*headers, RUN_SPEED_HEADER):
        table.add_column(header, justify="right")
    for s in report.summaries:
        name = s.scenario if s.expect_pass else f"{s.scenario} (planted bug)"
        failed = f"[red]{s.failures}[/red]" if s.failures else "0"
        table.add_row(
            name,
            f"{s.seeds:,}",
            failed,
            f"{s.histories:,}",
            f"{s.operations:,}",
            f"{s.virtual_s:,.1f}",
            f"{s.wall_s:,.2f}",
            f"{s.run_speed:,.0f}x",
        )
    return table


def checked_line(summary: ScenarioSummary) -> str:
    """What a scenario's runs checked, as their verdicts report it."""
    histories = plural(summary.histories, "history", "histories")
    counts = f"{histories}, {plural(summary.operations, 'operation')}"
    properties = ", ".join(summary.checks) if summary.checks else "no property named"
    return f"{summary.scenario} checked: {counts}; {properties}"


def print_report(report: CampaignReport, console: Console) -> None:
    console.print(summary_table(report))
    for summary in report.summaries:
        console.print(checked_line(summary), markup=False)
    failures = report.failures
    for result in failures[:MAX_FAILURES_LISTED]:
        console.print(
            f"[red]FAILED[/red] {result.scenario} seed {result.seed}: "
            f"{escape(clip(result.summary, MAX_SUMMARY_CHARS))}",
            markup=True,
        )
        if result.artifact_path:
            console.print(f"  artifact:  {result.artifact_path}", markup=False)
        console.print(f"  reproduce: {reproduce_line(result)}", markup=False)
    if len(failures) > MAX_FAILURES_LISTED:
        more = len(failures) - MAX_FAILURES_LISTED
        console.print(f"... and {plural(more, 'more failure')}", markup=False)
    runs = len(report.results)
    if failures:
        verb = "run failed" if runs == 1 else "runs failed"
        console.print(f"{len(failures):,} of {runs:,} {verb}", markup=False)
    else:
        console.print("the run passed" if runs == 1 else f"all {runs:,} runs passed", markup=False)


def print_single_run(result: RunResult, console: Console) -> None:
    """One seed, VOPR style: the options drawn from it, then the outcome."""
    console.print(f"scenario {result.scenario}, seed {result.seed}", markup=False)
    for key, value in result.options.items():
        console.print(f"  {key} = {value}", markup=False)
    console.print(f"  operations checked = {result.operations}", markup=False)
    console.print(f"  histories checked = {result.histories}", markup=False)
    checks = ", ".join(result.checks) or "none (the run ended before its verdict)"
    console.print(f"  properties checked = {checks}", markup=False)
    console.print(f"  virtual seconds = {result.virtual_s:.3f}", markup=False)
    console.print(f"  trace hash = {result.trace_hash}", markup=False)
    if result.failure is not None:
        console.print("failure:", markup=False)
        console.print("  " + result.failure.replace("\n", "\n  "), markup=False)
