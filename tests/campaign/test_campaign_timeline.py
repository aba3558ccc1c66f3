"""The HTML timeline: what each kind of event becomes on the page, escaping, bounds.

What would break: a lane missing or out of order, a leader or a fault not drawn where it
happened, operations not paired, the violation not highlighted, text from the run injected as
markup, or a big run producing an unbounded page. The browser check (what a person sees) is
tests/campaign/test_timeline_browser.py.
"""

from __future__ import annotations

import re
from typing import Any

from detsim.campaign import runner, timeline
from detsim.campaign.catalogue import registry
from detsim.sim import artifact as artifact_mod
from detsim.sim.world import Simulation


def artifact(
    events: list[dict[str, Any]], failure: str | None = "lost <b>1</b>", nodes: int = 3
) -> dict[str, Any]:
    return {
        "name": "t",
        "seed": 1,
        "status": "failed" if failure else "passed",
        "virtual_seconds": 10.0,
        "trace_hash": "h",
        "config": {"nodes": [{"name": f"n{i}", "ip": f"10.0.0.{i}"} for i in range(1, nodes + 1)]},
        "failure": failure,
        "events": events,
    }


def plot(page: str) -> str:
    """The timeline's SVG alone (the legend above it draws one of each mark too)."""
    start = page.index('<div class="plot">')
    return page[start : page.index("</svg>", start)]


def lane_order(page: str) -> list[str]:
    return re.findall(r'text-anchor="end" class="label [a-z]+">([^<]+)</text>', page)


def test_one_lane_per_node_in_config_order_then_clients_then_the_cluster() -> None:
    page = timeline.render(
        artifact(
            [
                {
                    "t": 0.0,
                    "node": "c1",
                    "kind": "op",
                    "type": "invoke",
                    "process": 0,
                    "f": "get",
                    "key": "x",
                    "value": "None",
                    "error": None,
                },
                {"t": 0.5, "node": "n3", "kind": "start", "boot": 1},
                {"t": 1.0, "node": "supervisor", "kind": "phase", "name": "safety"},
            ],
            failure=None,
        )
    )
    assert lane_order(page) == ["n1", "n2", "n3", "c1", "cluster"]
    assert "safety phase" in page


def test_leaders_and_terms_from_raft_state_events() -> None:
    events = [
        {"t": 1.0, "node": "n2", "kind": "raft.state", "role": "candidate", "term": 2},
        {"t": 1.1, "node": "n2", "kind": "raft.state", "role": "leader", "term": 2, "leader": "n2"},
        {"t": 6.0, "node": "n2", "kind": "kill"},
        {"t": 7.0, "node": "n2", "kind": "restart", "boot": 2},
    ]
    page = plot(timeline.render(artifact(events, failure=None)))
    (leader,) = re.findall(
        r'<rect x="([\d.]+)" y="[\d.]+" width="([\d.]+)"[^>]*class="role-leader"', page
    )
    x0, width = float(leader[0]), float(leader[1])
    # the leader band runs from 1.1 s until the kill at 6 s (PLOT_WIDTH_PX per 10 s)
    scale = timeline.PLOT_WIDTH_PX / 10.0
    assert abs(x0 - (timeline.LABEL_WIDTH_PX + 1.1 * scale)) < 0.2
    assert abs(width - 4.9 * scale) < 0.2
    assert page.count('class="role-candidate"') == 1
    assert "leader t2" in page and ">t2</text>" in page
    assert page.count('class="band-down"') == 1  # kill until restart
    assert page.count('class="x-kill"') == 1 and page.count('class="start"') == 1


def test_partitions_shade_the_cut_off_nodes_and_clogs_their_source() -> None:
    events = [
        {"t": 1.0, "node": "supervisor", "kind": "partition", "groups": [["n1"], ["n2", "n3"]]},
        {"t": 2.0, "node": "supervisor", "kind": "clog", "src": "n3", "dst": "n2"},
        {"t": 3.0, "node": "supervisor", "kind": "heal"},
        {"t": 4.0, "node": "n2", "kind": "pause"},
        {"t": 5.0, "node": "n2", "kind": "resume"},
    ]
    page = plot(timeline.render(artifact(events, failure=None)))
    cut = re.findall(r'class="band-cut"><title>([^<]*)</title>', page)
    assert len(cut) == 1 and "1.000-3.000s" in cut[0]  # only n1, the minority, until the heal
    clog = re.findall(r'class="band-clog"><title>([^<]*)</title>', page)
    assert clog == ["link n3 -&gt; n2 clogged 2.000-3.000s"]
    assert page.count('class="band-pause"') == 1
    assert page.count('class="global-fault"') == 1 and page.count('class="global-heal"') == 1


def test_client_operations_are_bars_from_invoke_to_completion() -> None:
    def op(t: float, kind: str, process: int, key: str) -> dict[str, Any]:
        return {
            "t": t,
            "node": "c1",
            "kind": "op",
            "type": kind,
            "process": process,
            "f": "put",
            "key": key,
            "value": "'1'",
            "error": None,
        }

    events = [
        op(1.0, "invoke", 0, "ka"),
        op(1.5, "invoke", 1, "kb"),  # pipelined: overlaps process 0
        op(2.0, "ok", 0, "ka"),
        op(2.5, "info", 1, "kb"),
        op(3.0, "invoke", 2, "k9"),
        op(3.5, "fail", 2, "k9"),
    ]
    page = plot(timeline.render(artifact(events, failure="key k9 lost a write on n2")))
    assert page.count('class="op-ok"') == 1
    assert page.count('class="op-info"') == 1
    assert page.count('class="op-fail op-suspect"') == 1  # the key the failure names
    rows = re.findall(r'y="([\d.]+)" width="[\d.]+" height="5" class="op-(?:ok|info)"', page)
    assert len(set(rows)) == 2  # overlapping ops on separate sub-rows
    assert (
        'class="label failing">n2</text>' in page and "\u26a0" in page
    )  # the node the failure names


def test_violations_and_a_failed_run_are_marked_across_the_lanes() -> None:
    events = [{"t": 4.0, "node": "supervisor", "kind": "violation", "what": "read"}]
    full = timeline.render(artifact(events))
    page = plot(full)
    assert page.count('class="violation"') == 2  # the event, and the end where checks ran
    assert ">VIOLATION</text>" in page and ">CHECKS FAILED</text>" in page
    assert '<pre class="failure">' in full
    assert ">VIOLATION<" not in timeline.render(artifact([], failure=None))


def test_text_from_the_run_is_escaped() -> None:
    page = timeline.render(artifact([{"t": 0.5, "node": "<script>x</script>", "kind": "note"}]))
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert "lost &lt;b&gt;1&lt;/b&gt;" in page


def test_a_big_run_gives_a_bounded_page_that_says_what_it_left_out() -> None:
    nodes = [f"n{i}" for i in range(1, 11)]
    events: list[dict[str, Any]] = []
    for i in range(60_000):
        src, dst = nodes[i % 10], nodes[(i * 7 + 3) % 10]
        if src != dst:
            events.append(
                {
                    "t": i / 6000,
                    "node": dst,
                    "kind": "recv",
                    "src": src,
                    "conn": i % 90,
                    "size": 60,
                    "crc": i,
                }
            )
    for i in range(8000):
        events.append(
            {
                "t": i / 800,
                "node": f"c{i % 4}",
                "kind": "op",
                "process": i,
                "type": "invoke",
                "f": "get",
                "key": "x",
                "value": "None",
                "error": None,
            }
        )
        events.append(
            {
                "t": i / 800 + 0.001,
                "node": f"c{i % 4}",
                "kind": "op",
                "process": i,
                "type": "ok",
                "f": "get",
                "key": "x",
                "value": "'1'",
                "error": None,
            }
        )
    for i in range(5000):
        events.append(
            {
                "t": i / 500,
                "node": nodes[i % 10],
                "kind": "raft.state",
                "role": "leader" if i % 10 == 0 else "follower",
                "term": i,
            }
        )
    events.sort(key=lambda e: e["t"])
    full = timeline.render(artifact(events, nodes=10))
    page = plot(full)
    assert page.count('class="msg"') <= timeline.MAX_ARROWS
    assert page.count('class="op-ok') == timeline.MAX_OPS
    assert page.count('class="role-leader"') <= timeline.MAX_STATE_MARKS
    assert "deliveries drawn" in full and "Client operations: 3000 of 8000 drawn" in full
    assert "role changes not drawn" in full
    assert len(full) < 5_000_000  # bytes: opens quickly in any browser


def test_a_store_run_traces_leaders_and_client_operations() -> None:
    # The events come from production code through detsim.seam: the Raft driver's role
    # changes and the history recorder's operations; recv events name their sender.
    name, seed = "partition_leader", 1
    scenario = registry[name]
    sim = Simulation(seed=seed, **scenario.simulation(seed, {}))
    verdict = sim.run(scenario.build(sim, {}))
    data = artifact_mod.build(sim, name, "passed", None, runner.replay_spec(name, seed, {}))
    kinds = {e["kind"] for e in data["events"]}
    assert {"raft.state", "op", "recv", "partition"} <= kinds
    leaders = [e for e in data["events"] if e["kind"] == "raft.state" and e["role"] == "leader"]
    assert leaders and all(e["leader"] == e["node"] for e in leaders)
    ops = [e for e in data["events"] if e["kind"] == "op"]
    assert len([e for e in ops if e["type"] == "invoke"]) >= verdict.operations // 2
    assert all(
        e["src"] in ("n1", "n2", "n3", "c1", "c2", "c3", "c4", "c5")
        for e in data["events"]
        if e["kind"] == "recv"
    )
    page = plot(timeline.render(data))
    assert 'class="role-leader"' in page and 'class="op-ok"' in page and 'class="msg"' in page
    assert lane_order(page)[:3] == ["n1", "n2", "n3"]


def test_an_empty_or_malformed_artifact_still_renders() -> None:
    # a pytest artifact may have no config; a hand-edited one may have anything
    assert ">cluster</text>" in timeline.render({})
    odd = {
        "events": [{"t": "x", "node": None, "kind": None}, "junk"],
        "virtual_seconds": None,
        "config": "bad",
    }
    assert ">None</text>" in timeline.render(odd)
