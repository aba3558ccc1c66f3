"""An artifact's events as one self-contained HTML page: one lane per node, faults highlighted.

Rules: no scripts, no external resources (the page works offline and from an e-mail); every
mark has a tooltip with the event's fields; faults (kill, crash, restart, pause, partition,
clog, latency...) are red and also drawn as a line across every lane; user events (options,
phases, violations) are purple. At most `MAX_MARKS` marks: faults and user events are always
drawn, other events up to the limit (the page says how many were left out). All text is
escaped: event fields come from the run, and the run comes from code under test.
"""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from typing import Any

MAX_MARKS = 20_000
LANE_HEIGHT_PX = 26
LABEL_WIDTH_PX = 110
PLOT_WIDTH_PX = 1400
MAX_TOOLTIP_CHARS = 400

FAULT_KINDS = frozenset(
    {
        "kill",
        "crash",
        "restart",
        "pause",
        "resume",
        "partition",
        "heal",
        "clog",
        "unclog",
        "clog_node",
        "unclog_node",
        "set_latency",
        "set_loss",
        "set_clock",
        "set_disk",
        "init_failed",
        "stream_timeout",
    }
)
NETWORK_KINDS = frozenset(
    {
        "connect",
        "accept",
        "established",
        "closed",
        "reset",
        "rst",
        "refuse",
        "hold",
        "recv",
        "listen",
        "connect_timeout",
        "udp_send",
        "udp_recv",
        "udp_drop",
    }
)
COLOURS = {"fault": "#d62728", "net": "#7f9fbf", "user": "#9467bd", "other": "#8c8c8c"}


def category(kind: str) -> str:
    if kind in FAULT_KINDS:
        return "fault"
    if kind in NETWORK_KINDS:
        return "net"
    if kind in ("start",) or kind.startswith(("fsync", "disk", "write", "read")):
        return "other"
    return "user"


def render(artifact: dict[str, Any]) -> str:
    """The page for one artifact (see the module header)."""
    events = [e for e in artifact.get("events", []) if isinstance(e, dict)]
    shown, left_out = _select(events)
    lanes = _lanes(events)
    end_s = max([float(artifact.get("virtual_seconds") or 0.0)] + [_t(e) for e in events]) or 1.0
    svg = _svg(shown, lanes, end_s)
    title = f"{artifact.get('name', '?')} seed {artifact.get('seed', '?')}"
    failure = artifact.get("failure") or "passed"
    note = f"<p>{left_out} network events not drawn (limit {MAX_MARKS}).</p>" if left_out else ""
    legend = " ".join(
        f'<span style="color:{c}">&#9632; {name}</span>' for name, c in COLOURS.items()
    )
    return _PAGE.format(
        title=html.escape(title),
        meta=html.escape(
            f"status {artifact.get('status')}, {artifact.get('virtual_seconds')} virtual s, "
            f"trace hash {artifact.get('trace_hash')}, {len(events)} events"
        ),
        failure=html.escape(str(failure)),
        note=note,
        legend=legend,
        svg=svg,
        faults=_fault_table(events),
    )


def _t(event: dict[str, Any]) -> float:
    try:
        return float(event.get("t", 0.0))
    except (TypeError, ValueError):
        return 0.0


def _select(events: Sequence[dict[str, Any]]) -> tuple[list[dict[str, Any]], int]:
    important = [e for e in events if category(str(e.get("kind"))) in ("fault", "user")]
    budget = max(0, MAX_MARKS - len(important))
    rest = [e for e in events if category(str(e.get("kind"))) not in ("fault", "user")]
    shown = sorted(important[:MAX_MARKS] + rest[:budget], key=_t)
    return shown, len(events) - len(shown)


def _lanes(events: Sequence[dict[str, Any]]) -> list[str]:
    return list(dict.fromkeys(str(e.get("node", "?")) for e in events)) or ["(no events)"]


def _svg(events: Sequence[dict[str, Any]], lanes: list[str], end_s: float) -> str:
    height = LANE_HEIGHT_PX * (len(lanes) + 1)
    width = LABEL_WIDTH_PX + PLOT_WIDTH_PX + 10
    row = {name: i for i, name in enumerate(lanes)}
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}">']
    for name, i in row.items():
        y = LANE_HEIGHT_PX * i
        parts.append(
            f'<text x="4" y="{y + 17}" class="lane">{html.escape(name)}</text>'
            f'<line x1="{LABEL_WIDTH_PX}" y1="{y + 13}" x2="{width}" y2="{y + 13}" '
            'class="axis"/>'
        )
    for event in events:
        parts.append(_mark(event, row, end_s, height))
    parts.append(_time_axis(end_s, height))
    parts.append("</svg>")
    return "\n".join(parts)


def _x(t: float, end_s: float) -> float:
    return LABEL_WIDTH_PX + PLOT_WIDTH_PX * min(max(t / end_s, 0.0), 1.0)


def _mark(event: dict[str, Any], row: dict[str, int], end_s: float, height: int) -> str:
    kind = str(event.get("kind"))
    cat = category(kind)
    x = _x(_t(event), end_s)
    y = LANE_HEIGHT_PX * row.get(str(event.get("node", "?")), 0)
    tip = html.escape(json.dumps(event, default=repr)[:MAX_TOOLTIP_CHARS])
    colour = COLOURS[cat]
    if cat == "fault":
        across = (
            f'<line x1="{x:.1f}" y1="0" x2="{x:.1f}" y2="{height - LANE_HEIGHT_PX}" class="fault"/>'
        )
        return (
            f'<g>{across}<rect x="{x - 3:.1f}" y="{y + 5}" width="6" height="16" '
            f'fill="{colour}"><title>{tip}</title></rect></g>'
        )
    size = 10 if cat == "user" else 6
    return (
        f'<rect x="{x - size / 4:.1f}" y="{y + 13 - size / 2}" width="{size / 2}" '
        f'height="{size}" fill="{colour}"><title>{tip}</title></rect>'
    )


def _time_axis(end_s: float, height: int) -> str:
    y = height - LANE_HEIGHT_PX + 16
    ticks = []
    for i in range(11):
        t = end_s * i / 10
        ticks.append(f'<text x="{_x(t, end_s):.1f}" y="{y}" class="tick">{t:.2f}s</text>')
    return "\n".join(ticks)


def _fault_table(events: Sequence[dict[str, Any]]) -> str:
    rows = []
    for e in events:
        if category(str(e.get("kind"))) != "fault":
            continue
        fields = {k: v for k, v in e.items() if k not in ("t", "node", "kind")}
        rows.append(
            f"<tr><td>{_t(e):.6f}</td><td>{html.escape(str(e.get('node')))}</td>"
            f"<td>{html.escape(str(e.get('kind')))}</td>"
            f"<td>{html.escape(json.dumps(fields, default=repr)[:MAX_TOOLTIP_CHARS])}</td></tr>"
        )
        if len(rows) >= MAX_MARKS:
            break
    return "\n".join(rows) or '<tr><td colspan="4">no faults</td></tr>'


_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>detsim timeline: {title}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 1em; }}
pre {{ background: #f6f6f6; padding: .5em; white-space: pre-wrap; }}
.lane {{ font: 12px monospace; }} .tick {{ font: 10px monospace; fill: #555; }}
.axis {{ stroke: #ddd; }} .fault {{ stroke: #d62728; stroke-opacity: .25; }}
.plot {{ overflow-x: auto; border: 1px solid #ddd; }}
table {{ border-collapse: collapse; font: 12px monospace; }}
td {{ border-bottom: 1px solid #eee; padding: 2px 8px; }}
</style></head><body>
<h1>{title}</h1>
<p>{meta}</p>
<pre>{failure}</pre>
<p>{legend}</p>
{note}
<div class="plot">{svg}</div>
<h2>Faults</h2>
<table><tr><td>t (s)</td><td>node</td><td>kind</td><td>fields</td></tr>
{faults}
</table>
</body></html>
"""
