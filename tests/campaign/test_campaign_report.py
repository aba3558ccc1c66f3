"""What `detsim sim` prints: the table's title, columns, caption and checked lines, as text.

The results are built by hand so that every number on the page is known; the rendering code is
the campaign's own (`detsim.campaign.report`).
"""

from __future__ import annotations

import io

from rich.console import Console

from detsim.campaign.campaign import CampaignReport, summarise
from detsim.campaign.report import print_report, progress_bar
from detsim.campaign.runner import RunResult

CHECKS = ("no acknowledged increment lost", "liveness with faults off")


def result(seed: int, *, virtual_s: float, wall_s: float, passed: bool = True) -> RunResult:
    return RunResult(
        scenario="counter",
        seed=seed,
        passed=passed,
        failure=None if passed else "1 violation(s); first: lost c1-1",
        operations=100,
        virtual_s=virtual_s,
        wall_s=wall_s,
        trace_hash="0" * 32,
        options={},
        params={},
        hash_seed="0",
        checks=CHECKS,
        histories=1,
    )


def render(results: list[RunResult], elapsed_s: float, jobs: int) -> str:
    report = CampaignReport(results, summarise(["counter"], results), elapsed_s, jobs)
    out = io.StringIO()
    print_report(report, Console(file=out, width=120, highlight=False, soft_wrap=True))
    return out.getvalue()


def test_title_gives_the_campaigns_wall_time_and_speed_and_the_columns_say_sum() -> None:
    # 3 runs of 40 virtual s each, 4 s of run wall time each (12 s summed), done in 6 s on 2
    # workers: 120 virtual s per 6 s of campaign is 20 per wall second; one worker does 10.
    text = render([result(s, virtual_s=40.0, wall_s=4.0) for s in range(3)], 6.0, 2)
    title = text.splitlines()[0]
    assert title == (
        "detsim campaign: 3 runs on 2 jobs in 6.0 s wall; 120.0 virtual s, 20 virtual s per wall s"
    )
    assert "run wall s (sum)" in text and "virtual/run wall" in text
    row = next(line for line in text.splitlines() if line.startswith("│ counter"))
    assert [cell.strip() for cell in row.strip("│").split("│")] == [
        "counter",
        "3",
        "0",
        "3",
        "300",
        "120.0",
        "12.00",
        "10x",
    ]
    assert "run wall s (sum): the runs' own wall seconds, added up over all workers." in text
    assert "virtual/run wall: virtual seconds per wall second of one worker." in text
    assert (
        "counter checked: 3 histories, 300 operations; no acknowledged increment lost, "
        "liveness with faults off"
    ) in text
    assert text.rstrip().endswith("all 3 runs passed")


def test_one_run_on_one_job_is_singular() -> None:
    text = render([result(7, virtual_s=5.0, wall_s=1.0, passed=False)], 2.0, 1)
    assert text.startswith("detsim campaign: 1 run on 1 job in 2.0 s wall;")
    assert "counter checked: 1 history, 100 operations;" in text
    assert text.rstrip().endswith("1 of 1 run failed")
    assert "reproduce: detsim sim --scenario counter --seed 7" in text


def test_progress_bar_labels_its_two_times() -> None:
    out = io.StringIO()
    with progress_bar(2, Console(file=out, width=120)) as advance:
        advance(result(0, virtual_s=1.0, wall_s=1.0))
        advance(result(1, virtual_s=1.0, wall_s=1.0, passed=False))
    text = out.getvalue()
    assert "2/2 runs done, 1 failed, elapsed 0:00:0" in text
    assert ", left " in text


def test_a_failing_runs_traceback_is_cut_between_lines_never_inside_one() -> None:
    from detsim.campaign.runner import _tail

    text = "".join(f"line {i} " + "x" * 50 + "\n" for i in range(1000))
    kept = _tail(text, 8_000)
    assert len(kept) <= 8_000 and text.endswith(kept)
    assert kept.startswith("line ") and kept.endswith("\n")  # whole lines only
