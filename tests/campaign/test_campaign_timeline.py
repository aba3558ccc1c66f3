"""The HTML timeline: lanes per node, faults highlighted, everything escaped, bounded."""

from __future__ import annotations

from typing import Any

from detsim.campaign import timeline


def artifact(events: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "name": "t",
        "seed": 1,
        "status": "failed",
        "virtual_seconds": 10.0,
        "trace_hash": "h",
        "failure": "lost <b>1</b>",
        "events": events,
    }


def test_one_lane_per_node_and_faults_marked_across_lanes() -> None:
    page = timeline.render(
        artifact(
            [
                {"t": 0.0, "node": "n1", "kind": "start"},
                {"t": 1.0, "node": "n2", "kind": "connect", "dst": "10.0.0.1:7000"},
                {"t": 2.0, "node": "n1", "kind": "kill"},
                {"t": 3.0, "node": "supervisor", "kind": "violation", "what": "final"},
            ]
        )
    )
    for lane in ("n1", "n2", "supervisor"):
        assert f">{lane}</text>" in page
    assert page.count('class="fault"') == 1  # the kill, drawn across every lane
    assert "<td>kill</td>" in page  # and listed in the fault table


def test_text_from_the_run_is_escaped() -> None:
    page = timeline.render(artifact([{"t": 0.5, "node": "<script>x</script>", "kind": "note"}]))
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert "lost &lt;b&gt;1&lt;/b&gt;" in page


def test_marks_are_bounded_but_faults_always_drawn() -> None:
    noise = [{"t": i / 1000, "node": "n1", "kind": "recv"} for i in range(timeline.MAX_MARKS + 50)]
    page = timeline.render(artifact([*noise, {"t": 9.0, "node": "n2", "kind": "crash"}]))
    assert "51 network events not drawn" in page
    assert "<td>crash</td>" in page and 'class="fault"' in page
