"""`detsim check FILE... [--json] [--html OUT]`: linearizability verdicts on history files.

Owns the command's contract (DESIGN.md "Histories and checkers"): one verdict per file, format
detected per file (detsim.check.formats); exit status 0 when every file is linearizable, 1 when
one is not, 2 when one is unknown (time ran out, or the search's memory bound was reached:
check_history's max_search_bytes) or unreadable -- the worst over all files (2 > 1 > 0). Unreadable
files get a message with the file, line number and what was wrong. `--json` prints one line
per file: {"file", "linearizable", "ops", "seconds"} (+ "error" for an unreadable file, +
"reason" for an unknown verdict: "timeout" or "search budget"). `--html OUT` writes the
counterexample of the first non-linearizable file. The lead registers `command` in the CLI
group.

Cost rule: a counterexample (failing op and window) costs several more searches than the
verdict, so it is computed only where it is shown: for every violation in the human-readable
output, and with `--json` only for the file whose page `--html` writes. `--json` alone decides
verdicts, as porcupine does.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import click

from detsim.check import MODELS, HistoryError, check_history, load
from detsim.check.checker import CheckResult
from detsim.check.html import render_html

EXIT_OK, EXIT_VIOLATION, EXIT_UNKNOWN = 0, 1, 2


@click.command("check")
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="One JSON line per file.")
@click.option(
    "--html",
    "html_out",
    type=click.Path(dir_okay=False, writable=True),
    help="Write the first counterexample as a self-contained HTML page.",
)
@click.option(
    "--model",
    type=click.Choice(["auto", *MODELS]),
    default="auto",
    show_default=True,
    help="auto: kv for JSON lines, kv-empty for keyed EDN, register otherwise.",
)
@click.option("--timeout", type=float, default=None, help="Seconds per file (unknown past it).")
def command(
    files: tuple[str, ...], as_json: bool, html_out: str | None, model: str, timeout: float | None
) -> None:
    """Check history FILEs for linearizability (JSON lines, Jepsen EDN, Jepsen etcd logs)."""
    worst = EXIT_OK
    html_written = False
    for path in files:
        explain = not as_json or (html_out is not None and not html_written)
        code, result = _check_one(path, as_json, model, timeout, explain)
        worst = max(worst, code)
        if html_out and result is not None and result.linearizable is False and not html_written:
            Path(html_out).write_text(render_html(result, title=path), encoding="utf-8")
            html_written = True
            if not as_json:
                click.echo(f"{path}: counterexample written to {html_out}")
    click.get_current_context().exit(worst)


def _check_one(
    path: str, as_json: bool, model: str, timeout: float | None, explain: bool
) -> tuple[int, CheckResult | None]:
    started = time.perf_counter()
    try:
        loaded = load(path)
        result = check_history(
            loaded.ops,
            model=loaded.model if model == "auto" else model,
            timeout=timeout,
            explain=explain,
        )
    except HistoryError as exc:
        _report_error(path, str(exc), as_json, time.perf_counter() - started)
        return EXIT_UNKNOWN, None
    seconds = time.perf_counter() - started
    if as_json:
        line: dict[str, object] = {
            "file": path,
            "linearizable": result.linearizable,
            "ops": result.ops,
            "seconds": round(seconds, 6),
        }
        if result.linearizable is None:
            line["reason"] = result.unknown_reason
        click.echo(json.dumps(line))
    else:
        verdict = result.explain().replace("\n", "\n  ")
        click.echo(f"{path}: {verdict} [{len(loaded.ops)} ops, {seconds:.3f} s]")
    if result.linearizable is None:
        return EXIT_UNKNOWN, result
    return (EXIT_OK if result.linearizable else EXIT_VIOLATION), result


def _report_error(path: str, message: str, as_json: bool, seconds: float) -> None:
    text = message if message.startswith(path) else f"{path}: {message}"
    if as_json:
        line = {"file": path, "linearizable": None, "ops": 0, "seconds": round(seconds, 6)}
        click.echo(json.dumps({**line, "error": text}))
    else:
        click.echo(f"error: {text}", err=True)
