"""`detsim replay ARTIFACT.json [--html OUT.html]`: rerun a recorded run, compare trace hashes.

Contract: exit 0 when the rerun has the artifact's trace hash (the failure is printed again),
1 when it does not (nondeterminism: both hashes are printed), 2 when the artifact cannot be
replayed (unreadable, not an artifact, unknown scenario or replay kind). Before the verdict
the run's event log is printed (the replay's own events when it failed again, else the
recorded ones, said so): the last `--events N` events, network and disk plumbing hidden
unless `--all-events`, with a header saying how many were left out
(detsim.campaign.replay.event_log). `--html OUT` writes the timeline
(detsim.campaign.timeline), whatever the verdict. The rerun happens in a fresh worker process
with the campaign's PYTHONHASHSEED. The lead registers `command`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import click

from detsim.campaign import pool, timeline
from detsim.campaign import replay as replay_mod

EXIT_SAME, EXIT_DIVERGED, EXIT_UNREADABLE = 0, 1, 2


@click.command("replay")
@click.argument("artifact_path", metavar="ARTIFACT.json", type=click.Path(dir_okay=False))
@click.option(
    "--html",
    "html_out",
    type=click.Path(dir_okay=False, writable=True),
    default=None,
    help="Write the run's timeline here: one self-contained HTML page (lanes per node, "
    "messages, faults, leaders and terms, client operations, the violation).",
)
@click.option(
    "--events",
    "log_events",
    type=click.IntRange(0, replay_mod.MAX_LOG_EVENTS),
    default=replay_mod.DEFAULT_LOG_EVENTS,
    show_default=True,
    help="Print the last N events of the run's event log (0: none).",
)
@click.option(
    "--all-events",
    is_flag=True,
    help="Include network and disk events (deliveries, connections, fsyncs) in the log.",
)
def command(artifact_path: str, html_out: str | None, log_events: int, all_events: bool) -> None:
    """Rerun the run recorded in ARTIFACT.json and check it is the same run."""
    ctx = click.get_current_context()
    try:
        data = replay_mod.load(artifact_path)
        spec = data["replay"]
        if isinstance(spec, dict) and spec.get("kind") == "pytest":
            replay_mod.pytest_spec(data, artifact_path)
            _write_timeline(data, html_out)
            _print_log(data, "recorded", log_events, all_events)
            ctx.exit(_replay_pytest(data, artifact_path))
        task = replay_mod.task_for(data, artifact_path)
    except replay_mod.ReplayError as exc:
        click.echo(f"error: {exc}", err=True)
        ctx.exit(EXIT_UNREADABLE)
    _write_timeline(data, html_out)
    click.echo(f"replaying {task.scenario} seed {task.seed} ...")
    result = pool.run_in_worker(dataclasses.replace(task, return_artifact=True))
    if result.artifact is not None:
        _print_log(result.artifact, "replayed", log_events, all_events)
    else:
        _print_log(data, "recorded (the replay passed: it kept no events)", log_events, all_events)
    expected = str(data["trace_hash"])
    if result.trace_hash != expected:
        click.echo(
            f"NONDETERMINISM: the artifact's trace hash is {expected}, the replay's is "
            f"{result.trace_hash} (check with detsim.check_determinism for the first "
            "divergent event)"
        )
        ctx.exit(EXIT_DIVERGED)
    click.echo(f"same trace hash {expected}: the run reproduces")
    click.echo(f"status: {'passed' if result.passed else 'failed'}")
    if result.failure:
        click.echo(result.failure)
    ctx.exit(EXIT_SAME)


def _write_timeline(data: dict[str, Any], html_out: str | None) -> None:
    if html_out:
        Path(html_out).write_text(timeline.render(data), encoding="utf-8")
        click.echo(f"timeline written to {html_out}")


def _print_log(data: dict[str, Any], whose: str, limit: int, all_kinds: bool) -> None:
    if limit == 0:
        return
    events = data.get("events")
    lines = replay_mod.event_log(events if isinstance(events, list) else [], limit, all_kinds)
    click.echo(f"{lines[0]} [{whose} run]")
    for line in lines[1:]:
        click.echo(line)


def _replay_pytest(data: dict[str, Any], where: str) -> int:
    spec = data["replay"]
    click.echo(f"replaying {spec['nodeid']} seed {spec['seed']} under pytest ...")
    result = replay_mod.replay_pytest(data, where)
    expected = str(data["trace_hash"])
    if result.trace_hash is None:
        click.echo(f"error: the test did not run seed {spec['seed']}:\n{result.output}", err=True)
        return EXIT_UNREADABLE
    if result.trace_hash != expected:
        click.echo(
            f"NONDETERMINISM: the artifact's trace hash is {expected}, the replay's is "
            f"{result.trace_hash}"
        )
        return EXIT_DIVERGED
    click.echo(f"same trace hash {expected}: the run reproduces")
    click.echo(f"status: {'passed' if result.passed else 'failed'}")
    click.echo(result.output)
    return EXIT_SAME
