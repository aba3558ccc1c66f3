"""An artifact's run as one self-contained HTML page: a timeline a person can read.

What the page shows (left to right is virtual time, one lane per node, top to bottom):
- server lanes (nodes of the simulation's config, in its order) with their Raft role as a
  band (leader gold, candidate orange: from the driver's `raft.state` events) and the term at
  each change ("t3"); down time (kill or crash until the next start) hatched grey; pauses
  hatched violet; a node cut off by a partition (not in the partition's largest group) shaded
  red, a clogged node or link shaded orange; kills and crashes as red crosses, (re)starts as
  green triangles, other per-node faults (clock, disk, latency) as small diamonds;
- message deliveries (`recv` events, which name the sender) as arrows from the sender's lane
  to the receiver's; the send time is not traced, so an arrow is drawn at its delivery time;
- client lanes (nodes that ran client operations: the history recorder's `op` events) with
  each operation as a bar from invoke to completion: ok green, fail pink (definitely not
  applied), info orange (outcome unknown), in sub-rows when they overlap (pipelining);
- the "cluster" lane: phases, nemesis decisions, network-wide faults, drawn also as a dashed
  line across every lane;
- the violation: `violation` events as a red line across every lane, the failure text at the
  top, the lanes of nodes it names and the operations on keys it names outlined in red, and
  the end of the run (where the checks ran) marked when the run failed.

Rules: no external resources and no scripts (the page works offline and from an e-mail);
every mark has a tooltip (`<title>`) with the event's fields; all text from the run is escaped
(the run comes from code under test). The DOM is bounded: at most MAX_ARROWS message arrows,
MAX_OPS operation bars, MAX_STATE_MARKS role changes, MAX_FAULT_MARKS fault marks and
MAX_TABLE_ROWS table rows; past a bound the page draws an even sample and says how many were
left out. Faults and violations are drawn before anything else is sampled.
"""

from __future__ import annotations

import dataclasses
import html
import json
import math
import re
from collections.abc import Iterable, Sequence
from typing import Any, Final

MAX_ARROWS: Final = 1_200
MAX_OPS: Final = 3_000
MAX_STATE_MARKS: Final = 3_000
MAX_FAULT_MARKS: Final = 2_000
MAX_TABLE_ROWS: Final = 2_000
MAX_TOOLTIP_CHARS: Final = 400
MAX_OP_ROWS: Final = 4  # sub-rows of operation bars per client lane
MAX_FAILURE_KEYS: Final = 50  # keys named by the failure whose operations are outlined
MIN_FAILURE_KEY_CHARS: Final = 2  # a one-letter key would match words of the failure text

LABEL_WIDTH_PX: Final = 92
PLOT_WIDTH_PX: Final = 1230
RIGHT_PAD_PX: Final = 24
AXIS_HEIGHT_PX: Final = 26
SERVER_LANE_PX: Final = 40
CLIENT_ROW_PX: Final = 7
CLUSTER_LANE_PX: Final = 30
ARROW_BUCKET_PX: Final = 6.0
VIOLATION_LABEL_GAP_PX: Final = 90.0
ARROW_SLANT_PX: Final = 4.0  # arrows are drawn at delivery time: a small slant shows direction

CLUSTER_LANE: Final = "cluster"  # the supervisor's events (the simulator names it so)
SUPERVISOR: Final = "supervisor"

COLOURS: Final = {
    "leader": "#f2c12e",
    "candidate": "#f59b42",
    "down": "#8c8c8c",
    "pause": "#9467bd",
    "cut": "#d62728",
    "clog": "#ff7f0e",
    "msg": "#2f6db5",
    "ok": "#2ca02c",
    "fail": "#e377c2",
    "info": "#ff7f0e",
    "violation": "#d62728",
    "start": "#2ca02c",
    "fault": "#d62728",
    "note": "#555555",
}

NODE_FAULTS: Final = frozenset({"kill", "crash", "pause", "resume", "set_clock", "set_disk"})
NETWORK_FAULTS: Final = frozenset(
    {"partition", "heal", "clog", "unclog", "clog_node", "unclog_node", "set_latency", "set_loss"}
)
STARTS: Final = frozenset({"start", "restart"})
FAULT_KINDS: Final = NODE_FAULTS | NETWORK_FAULTS | {"init_failed", "stream_timeout"}


# --- reading the artifact --------------------------------------------------------------------


def _t(event: dict[str, Any]) -> float:
    try:
        return float(event.get("t", 0.0))
    except (TypeError, ValueError):
        return 0.0


def _node(event: dict[str, Any]) -> str:
    node = str(event.get("node", "?"))
    return CLUSTER_LANE if node == SUPERVISOR else node


def _tip(event: dict[str, Any]) -> str:
    return html.escape(json.dumps(event, default=repr)[:MAX_TOOLTIP_CHARS])


def _sample(items: Sequence[Any], limit: int) -> list[Any]:
    """At most `limit` items, evenly spread (first and last kept), in their order."""
    if len(items) <= limit:
        return list(items)
    if limit <= 1:
        return list(items[:limit])
    step = (len(items) - 1) / (limit - 1)
    return [items[round(i * step)] for i in range(limit)]


@dataclasses.dataclass(slots=True)
class Lane:
    name: str
    kind: str  # "server" | "client" | "cluster"
    y: float = 0.0
    height: float = SERVER_LANE_PX
    named_by_failure: bool = False


@dataclasses.dataclass(slots=True)
class Op:
    node: str
    process: int
    f: str
    key: str
    start_s: float
    end_s: float | None  # None: never completed
    outcome: str  # "ok" | "fail" | "info" | "open"
    invoke: dict[str, Any]
    done: dict[str, Any] | None
    row: int = 0


@dataclasses.dataclass(slots=True)
class Band:
    lane: str
    start_s: float
    end_s: float
    what: str  # key of COLOURS / css class
    tip: str


@dataclasses.dataclass(slots=True)
class Model:
    """Everything the page draws, computed from the events once."""

    events: list[dict[str, Any]]
    end_s: float
    lanes: list[Lane]
    bands: list[Band]
    ops: list[Op]
    failure_keys: set[str]
    notes: list[str] = dataclasses.field(default_factory=list)


def _lane_names(artifact: dict[str, Any], events: Sequence[dict[str, Any]]) -> list[str]:
    config = artifact.get("config") if isinstance(artifact.get("config"), dict) else {}
    configured = [
        str(n.get("name"))
        for n in (config or {}).get("nodes", [])
        if isinstance(n, dict) and n.get("name") is not None
    ]
    seen = dict.fromkeys(configured)
    for e in events:
        seen.setdefault(_node(e), None)
    seen.pop(CLUSTER_LANE, None)
    return list(seen)


def _lanes(artifact: dict[str, Any], events: Sequence[dict[str, Any]], failure: str) -> list[Lane]:
    names = _lane_names(artifact, events)
    raft_nodes = {_node(e) for e in events if str(e.get("kind", "")).startswith("raft.")}
    op_nodes = {_node(e) for e in events if e.get("kind") == "op"} - raft_nodes
    servers = [Lane(n, "server") for n in names if n not in op_nodes]
    clients = [
        Lane(n, "client", height=CLIENT_ROW_PX * MAX_OP_ROWS + 8) for n in names if n in op_nodes
    ]
    lanes = [*servers, *clients, Lane(CLUSTER_LANE, "cluster", height=CLUSTER_LANE_PX)]
    y = float(AXIS_HEIGHT_PX)
    for lane in lanes:
        lane.y = y
        y += lane.height
        lane.named_by_failure = (
            bool(failure)
            and re.search(rf"(?<![\w.-]){re.escape(lane.name)}(?![\w-])", failure) is not None
            and lane.kind != "cluster"
        )
    return lanes


def _ops(events: Sequence[dict[str, Any]]) -> list[Op]:
    """Invoke -> completion pairs by process id (a process runs one op at a time)."""
    open_ops: dict[int, Op] = {}
    ops: list[Op] = []
    for e in events:
        if e.get("kind") != "op":
            continue
        process = e.get("process")
        if not isinstance(process, int):
            continue
        if e.get("type") == "invoke":
            op = Op(
                _node(e), process, str(e.get("f")), str(e.get("key")), _t(e), None, "open", e, None
            )
            open_ops[process] = op
            ops.append(op)
            continue
        op_done = open_ops.pop(process, None)
        if op_done is not None:
            op_done.end_s = _t(e)
            op_done.outcome = str(e.get("type"))
            op_done.done = e
    return ops


def _assign_rows(ops: Sequence[Op], end_s: float) -> None:
    """Greedy sub-rows per client lane, so overlapping (pipelined) ops stay visible."""
    free_at: dict[str, list[float]] = {}
    for op in ops:
        rows = free_at.setdefault(op.node, [-math.inf] * MAX_OP_ROWS)
        row = next((i for i, t in enumerate(rows) if t <= op.start_s), MAX_OP_ROWS - 1)
        op.row = row
        rows[row] = end_s if op.end_s is None else op.end_s


def _failure_keys(failure: str, ops: Sequence[Op]) -> set[str]:
    if not failure:
        return set()
    keys = {op.key for op in ops if len(op.key) >= MIN_FAILURE_KEY_CHARS and op.key != "None"}
    named = {
        k
        for k in sorted(keys)
        if re.search(rf"(?<![\w]){re.escape(k)}(?![\w])", failure) is not None
    }
    return set(sorted(named)[:MAX_FAILURE_KEYS])


def _bands(events: Sequence[dict[str, Any]], end_s: float, lanes: Iterable[str]) -> list[Band]:
    """Down, pause, partition and clog intervals, per lane."""
    known = set(lanes)
    bands: list[Band] = []
    down: dict[str, tuple[float, str]] = {}
    paused: dict[str, float] = {}
    cut: list[tuple[float, list[str], str]] = []  # partitions in force until a heal
    clogs: dict[tuple[str, str], float] = {}
    for e in events:
        kind, t, node = str(e.get("kind")), _t(e), _node(e)
        if kind in ("kill", "crash"):
            down.setdefault(node, (t, kind))
        elif kind in STARTS and node in down:
            since, why = down.pop(node)
            bands.append(Band(node, since, t, "down", f"{node} down ({why}) {since:.3f}-{t:.3f}s"))
        elif kind == "pause":
            paused.setdefault(node, t)
        elif kind == "resume" and node in paused:
            since = paused.pop(node)
            bands.append(Band(node, since, t, "pause", f"{node} paused {since:.3f}-{t:.3f}s"))
        elif kind == "partition":
            groups = [[str(n) for n in g] for g in e.get("groups", []) if isinstance(g, list)]
            if groups:
                biggest = max(range(len(groups)), key=lambda i: (len(groups[i]), -i))
                cut_off = [n for i, g in enumerate(groups) if i != biggest for n in g]
                cut.append((t, cut_off, json.dumps(groups)))
        elif kind in ("clog", "clog_node"):
            key = (str(e.get("src", e.get("target"))), str(e.get("dst", "*")))
            clogs.setdefault(key, t)
        elif kind in ("unclog", "unclog_node"):
            key = (str(e.get("src", e.get("target"))), str(e.get("dst", "*")))
            if key in clogs:
                bands.append(_clog_band(key, clogs.pop(key), t))
        if kind == "heal":
            for since, nodes, desc in cut:
                bands += [
                    Band(n, since, t, "cut", f"partition {desc} {since:.3f}-{t:.3f}s")
                    for n in nodes
                ]
            cut.clear()
            bands += [_clog_band(key, since, t) for key, since in clogs.items()]
            clogs.clear()
    for node, (since, why) in down.items():
        bands.append(Band(node, since, end_s, "down", f"{node} down ({why}) from {since:.3f}s"))
    for node, since in paused.items():
        bands.append(Band(node, since, end_s, "pause", f"{node} paused from {since:.3f}s"))
    for since, nodes, desc in cut:
        bands += [
            Band(n, since, end_s, "cut", f"partition {desc} from {since:.3f}s") for n in nodes
        ]
    bands += [_clog_band(key, since, end_s) for key, since in clogs.items()]
    return [b for b in bands if b.lane in known]


def _clog_band(key: tuple[str, str], start_s: float, end_s: float) -> Band:
    src, dst = key
    what = f"{src} clogged (all links)" if dst == "*" else f"link {src} -> {dst} clogged"
    return Band(src, start_s, end_s, "clog", f"{what} {start_s:.3f}-{end_s:.3f}s")


def build_model(artifact: dict[str, Any]) -> Model:
    events = sorted(
        (e for e in artifact.get("events", []) if isinstance(e, dict)), key=_t
    )  # stable: same-time events keep their trace order
    failure = str(artifact.get("failure") or "")
    end_s = max([_num(artifact.get("virtual_seconds"))] + [_t(e) for e in events[-1:]]) or 1.0
    lanes = _lanes(artifact, events, failure)
    ops = _ops(events)
    _assign_rows(ops, end_s)
    model = Model(
        events=events,
        end_s=end_s,
        lanes=lanes,
        bands=_bands(events, end_s, [lane.name for lane in lanes]),
        ops=ops,
        failure_keys=_failure_keys(failure, ops),
    )
    dropped = artifact.get("events_dropped") or 0
    if dropped:
        model.notes.append(
            f"The artifact kept the last {len(events)} events; {dropped} earlier ones are not "
            "in it (the trace hash covers all of them)."
        )
    return model


def _num(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return 0.0


# --- drawing ---------------------------------------------------------------------------------


class Canvas:
    """SVG parts and the coordinate system of one model."""

    def __init__(self, model: Model) -> None:
        self.model = model
        self.row = {lane.name: lane for lane in model.lanes}
        self.parts: list[str] = []
        self.height = model.lanes[-1].y + model.lanes[-1].height + AXIS_HEIGHT_PX
        self.width = LABEL_WIDTH_PX + PLOT_WIDTH_PX + RIGHT_PAD_PX

    def x(self, t: float) -> float:
        return LABEL_WIDTH_PX + PLOT_WIDTH_PX * min(max(t / self.model.end_s, 0.0), 1.0)

    def mid(self, lane: Lane) -> float:
        return lane.y + lane.height / 2

    def add(self, part: str) -> None:
        self.parts.append(part)


def render(artifact: dict[str, Any]) -> str:
    """The page for one artifact (see the module header)."""
    model = build_model(artifact)
    canvas = Canvas(model)
    _draw_lanes(canvas)
    _draw_phases(canvas)
    _draw_states(canvas)
    _draw_bands(canvas)
    _draw_separators(canvas)
    _draw_arrows(canvas)
    _draw_ops(canvas)
    _draw_faults(canvas)
    _draw_violations(canvas, artifact)
    _draw_axis(canvas)
    svg = (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{canvas.width:.0f}" '
        f'height="{canvas.height:.0f}" role="img">{_DEFS}' + "\n".join(canvas.parts) + "</svg>"
    )
    status = str(artifact.get("status", "?"))
    failure = artifact.get("failure")
    title = f"{artifact.get('name', '?')} seed {artifact.get('seed', '?')}"
    meta = (
        f"{_num(artifact.get('virtual_seconds')):.3f} virtual s, {len(model.events)} events, "
        f"trace hash {artifact.get('trace_hash')}"
    )
    failure_html = f'<pre class="failure">{html.escape(str(failure))}</pre>' if failure else ""
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in model.notes)
    return _PAGE.format(
        title=html.escape(title),
        status=html.escape(status),
        status_class="failed" if status == "failed" else "passed",
        meta=html.escape(meta),
        failure=failure_html,
        legend=_LEGEND,
        notes=f"<ul class='notes'>{notes}</ul>" if notes else "",
        svg=svg,
        table=_table(model),
    )


def _draw_lanes(c: Canvas) -> None:
    for i, lane in enumerate(c.model.lanes):
        shade = "lane-even" if i % 2 == 0 else "lane-odd"
        c.add(
            f'<rect x="{LABEL_WIDTH_PX}" y="{lane.y:.1f}" width="{PLOT_WIDTH_PX}" '
            f'height="{lane.height:.1f}" class="{shade}"/>'
        )
        label_class = "label failing" if lane.named_by_failure else f"label {lane.kind}"
        c.add(
            f'<text x="{LABEL_WIDTH_PX - 8}" y="{c.mid(lane) + 4:.1f}" text-anchor="end" '
            f'class="{label_class}">{html.escape(lane.name)}</text>'
        )
        if lane.named_by_failure:
            c.add(f'<text x="8" y="{c.mid(lane) + 4:.1f}" class="label failing">\u26a0</text>')
        if lane.named_by_failure:
            c.add(
                f'<rect x="2" y="{lane.y + 2:.1f}" width="{LABEL_WIDTH_PX - 4}" '
                f'height="{lane.height - 4:.1f}" class="failing-box"/>'
            )


def _draw_separators(c: Canvas) -> None:
    """A line under each lane, over the bands (which may fill a lane) and under the marks."""
    for lane in c.model.lanes:
        c.add(
            f'<line x1="{LABEL_WIDTH_PX}" y1="{lane.y + lane.height:.1f}" '
            f'x2="{LABEL_WIDTH_PX + PLOT_WIDTH_PX}" y2="{lane.y + lane.height:.1f}" '
            'class="lane-sep"/>'
        )


def _draw_bands(c: Canvas) -> None:
    bands = _sample(c.model.bands, MAX_FAULT_MARKS)
    if len(bands) < len(c.model.bands):
        c.model.notes.append(f"{len(c.model.bands) - len(bands)} fault bands not drawn.")
    for band in bands:
        lane = c.row[band.lane]
        x0, x1 = c.x(band.start_s), c.x(band.end_s)
        if band.what == "clog":
            y, h = lane.y + lane.height - 7, 5.0
        else:
            y, h = lane.y + 2, lane.height - 4
        c.add(
            f'<rect x="{x0:.1f}" y="{y:.1f}" width="{max(x1 - x0, 1.5):.1f}" height="{h:.1f}" '
            f'class="band-{band.what}"><title>{html.escape(band.tip)}</title></rect>'
        )


def _draw_phases(c: Canvas) -> None:
    lane = c.row[CLUSTER_LANE]
    phases = [e for e in c.model.events if e.get("kind") == "phase"]
    for i, e in enumerate(phases[:MAX_FAULT_MARKS]):
        x0 = c.x(_t(e))
        x1 = c.x(_t(phases[i + 1])) if i + 1 < len(phases) else c.x(c.model.end_s)
        name = str(e.get("name", "phase"))
        c.add(
            f'<rect x="{x0:.1f}" y="{lane.y + 3:.1f}" width="{max(x1 - x0, 1):.1f}" '
            f'height="{lane.height - 6:.1f}" class="phase phase-{i % 2}">'
            f"<title>{_tip(e)}</title></rect>"
            f'<text x="{x0 + 4:.1f}" y="{lane.y + lane.height - 6:.1f}" class="phase-label">'
            f"{html.escape(name)} phase</text>"
        )


def _draw_states(c: Canvas) -> None:
    """Role bands (leader, candidate) and term labels, from `raft.state` events."""
    states = [e for e in c.model.events if e.get("kind") == "raft.state" and _node(e) in c.row]
    shown = _sample(states, MAX_STATE_MARKS)
    if len(shown) < len(states):
        c.model.notes.append(f"{len(states) - len(shown)} of {len(states)} role changes not drawn.")
    ends = _state_ends(shown, c.model)
    last_label_x: dict[str, float] = {}
    last_term: dict[str, Any] = {}
    for e, end_s in zip(shown, ends, strict=True):
        lane = c.row[_node(e)]
        role, term = str(e.get("role")), e.get("term")
        x0, x1 = c.x(_t(e)), c.x(end_s)
        if role in ("leader", "candidate", "precandidate"):
            what = "leader" if role == "leader" else "candidate"
            c.add(
                f'<rect x="{x0:.1f}" y="{lane.y + 12:.1f}" width="{max(x1 - x0, 2):.1f}" '
                f'height="{lane.height - 16:.1f}" class="role-{what}"><title>{_tip(e)}</title>'
                "</rect>"
            )
            if role == "leader" and x1 - x0 > 60:
                c.add(
                    f'<text x="{x0 + 4:.1f}" y="{c.mid(lane) + 6:.1f}" class="role-label">'
                    f"leader t{html.escape(str(term))}</text>"
                )
        if term != last_term.get(lane.name) and x0 - last_label_x.get(lane.name, -1e9) > 22:
            last_label_x[lane.name] = x0
            c.add(
                f'<text x="{x0 + 1:.1f}" y="{lane.y + 10:.1f}" class="term">'
                f"t{html.escape(str(term))}</text>"
            )
        last_term[lane.name] = term


def _state_ends(states: Sequence[dict[str, Any]], model: Model) -> list[float]:
    """Each state lasts until the node's next state, or until it goes down, or the end."""
    ends = [model.end_s] * len(states)
    downs: dict[str, list[float]] = {}
    for b in model.bands:
        if b.what == "down":
            downs.setdefault(b.lane, []).append(b.start_s)
    last: dict[str, int] = {}
    for i, e in enumerate(states):
        node = _node(e)
        if node in last:
            ends[last[node]] = _t(e)
        last[node] = i
    for i, e in enumerate(states):
        later_downs = [d for d in downs.get(_node(e), []) if _t(e) <= d < ends[i]]
        if later_downs:
            ends[i] = min(later_downs)
    return ends


def _draw_arrows(c: Canvas) -> None:
    """Server-to-server deliveries: at most one per link per ARROW_BUCKET_PX of time, then an
    even sample of MAX_ARROWS (client traffic is drawn as operation bars instead)."""
    recvs = [
        e
        for e in c.model.events
        if e.get("kind") == "recv"
        and _node(e) in c.row
        and c.row[_node(e)].kind == "server"
        and str(e.get("src")) in c.row
        and c.row[str(e.get("src"))].kind == "server"
        and str(e.get("src")) != _node(e)
    ]
    buckets: dict[tuple[str, str, int], dict[str, Any]] = {}
    for e in recvs:
        buckets.setdefault((str(e["src"]), _node(e), int(c.x(_t(e)) / ARROW_BUCKET_PX)), e)
    shown = _sample(list(buckets.values()), MAX_ARROWS)
    if recvs:
        c.model.notes.append(
            f"Messages between servers: {len(shown)} of {len(recvs)} deliveries drawn (at most "
            f"one per link per {ARROW_BUCKET_PX:g} px, at most {MAX_ARROWS}), at delivery time "
            "(send times are not traced); client traffic is drawn as operation bars."
        )
    for e in shown:
        src, dst = c.row[str(e["src"])], c.row[_node(e)]
        x = c.x(_t(e))
        down = c.mid(dst) > c.mid(src)
        y0 = c.mid(src) + (6 if down else -6)
        y1 = c.mid(dst) - (6 if down else -6)
        c.add(
            f'<line x1="{x - ARROW_SLANT_PX:.1f}" y1="{y0:.1f}" x2="{x:.1f}" y2="{y1:.1f}" '
            f'class="msg" marker-end="url(#head)"><title>{_tip(e)}</title></line>'
        )


def _draw_ops(c: Canvas) -> None:
    ops = [op for op in c.model.ops if op.node in c.row and c.row[op.node].kind == "client"]
    highlighted = [op for op in ops if op.key in c.model.failure_keys]
    rest = [op for op in ops if op.key not in c.model.failure_keys]
    budget = max(0, MAX_OPS - len(highlighted))
    shown = _sample(highlighted, MAX_OPS) + _sample(rest, budget)
    if len(shown) < len(ops):
        c.model.notes.append(f"Client operations: {len(shown)} of {len(ops)} drawn.")
    for op in shown:
        lane = c.row[op.node]
        x0 = c.x(op.start_s)
        x1 = c.x(c.model.end_s if op.end_s is None else op.end_s)
        y = lane.y + 4 + op.row * CLIENT_ROW_PX
        outline = " op-suspect" if op.key in c.model.failure_keys else ""
        tip = html.escape(
            f"{op.f} {op.key} by process {op.process}: {op.outcome} "
            f"({op.start_s:.3f}-{'?' if op.end_s is None else f'{op.end_s:.3f}'}s) "
            + json.dumps(op.done or op.invoke, default=repr)[:MAX_TOOLTIP_CHARS]
        )
        c.add(
            f'<rect x="{x0:.1f}" y="{y:.1f}" width="{max(x1 - x0, 1.5):.1f}" '
            f'height="{CLIENT_ROW_PX - 2}" class="op-{op.outcome}{outline}"><title>{tip}</title>'
            "</rect>"
        )


def _draw_faults(c: Canvas) -> None:
    marks = [
        e
        for e in c.model.events
        if str(e.get("kind")) in FAULT_KINDS | STARTS | {"nemesis", "raft.snapshot_installed"}
    ]
    shown = _sample(marks, MAX_FAULT_MARKS)
    if len(shown) < len(marks):
        c.model.notes.append(f"{len(marks) - len(shown)} fault marks not drawn.")
    top = c.model.lanes[0].y
    bottom = c.model.lanes[-1].y + c.model.lanes[-1].height
    for e in shown:
        kind, lane = str(e.get("kind")), c.row.get(_node(e))
        if lane is None:
            continue
        x, y = c.x(_t(e)), c.mid(lane)
        tip = _tip(e)
        if kind in ("partition", "heal"):
            c.add(
                f'<line x1="{x:.1f}" y1="{top:.1f}" x2="{x:.1f}" y2="{bottom:.1f}" '
                f'class="global-{"heal" if kind == "heal" else "fault"}"/>'
            )
        if kind in ("kill", "crash"):
            c.add(
                f'<path d="M{x - 5:.1f},{y - 5:.1f} l10,10 m0,-10 l-10,10" class="x-{kind}">'
                f"<title>{tip}</title></path>"
            )
        elif kind in STARTS:
            if _t(e) > 0:
                c.add(
                    f'<path d="M{x:.1f},{y - 6:.1f} l6,11 h-12 z" class="start">'
                    f"<title>{tip}</title></path>"
                )
        elif kind == "raft.snapshot_installed":
            c.add(
                f'<rect x="{x - 4:.1f}" y="{y - 4:.1f}" width="8" height="8" class="snap">'
                f"<title>{tip}</title></rect>"
            )
        elif kind == "nemesis":
            c.add(
                f'<rect x="{x - 1:.1f}" y="{lane.y + 3:.1f}" width="2" height="9" '
                f'class="nemesis"><title>{tip}</title></rect>'
            )
        else:
            size = 4.5
            css = "fault-mark"
            c.add(
                f'<path d="M{x:.1f},{y - size:.1f} l{size},{size} l-{size},{size} l-{size},-{size} '
                f'z" class="{css}"><title>{tip}</title></path>'
            )


def _draw_violations(c: Canvas, artifact: dict[str, Any]) -> None:
    top = c.model.lanes[0].y
    bottom = c.model.lanes[-1].y + c.model.lanes[-1].height
    marks = [e for e in c.model.events if e.get("kind") == "violation"][:MAX_FAULT_MARKS]
    if artifact.get("status") == "failed":
        marks.append({"t": c.model.end_s, "kind": "checks failed", "failure": "see the top"})
    last_label_x = -1e9
    for e in marks:
        x = c.x(_t(e))
        checks = e.get("kind") != "violation"
        c.add(
            f'<line x1="{x:.1f}" y1="{top - 4:.1f}" x2="{x:.1f}" y2="{bottom:.1f}" '
            f'class="violation"><title>{_tip(e)}</title></line>'
        )
        if x - last_label_x < VIOLATION_LABEL_GAP_PX and not checks:
            continue  # labels would overlap: the line and its tooltip say it
        last_label_x = x
        label = "CHECKS FAILED" if checks else "VIOLATION"
        anchor = "end" if x > LABEL_WIDTH_PX + PLOT_WIDTH_PX - 120 else "start"
        dx = -4 if anchor == "end" else 4
        y = top + 12 if checks else bottom - 6
        c.add(
            f'<text x="{x + dx:.1f}" y="{y:.1f}" text-anchor="{anchor}" '
            f'class="violation-label">{label}</text>'
        )


def _nice_step(span: float, target_ticks: int) -> float:
    raw = span / max(target_ticks, 1)
    power = 10 ** math.floor(math.log10(raw)) if raw > 0 else 1.0
    for m in (1, 2, 5, 10):
        if raw <= m * power:
            return m * power
    return 10 * power


def _draw_axis(c: Canvas) -> None:
    end_s = c.model.end_s
    step = _nice_step(end_s, 12)
    bottom = c.model.lanes[-1].y + c.model.lanes[-1].height
    digits = max(0, -math.floor(math.log10(step))) if step < 1 else 0
    ticks = int(end_s / step + 1e-9)
    for i in range(ticks + 1):
        t = i * step
        x = c.x(t)
        label = f"{t:.{digits}f}s"
        c.add(
            f'<line x1="{x:.1f}" y1="{AXIS_HEIGHT_PX - 4}" x2="{x:.1f}" y2="{bottom:.1f}" '
            'class="grid"/>'
            f'<text x="{x:.1f}" y="{AXIS_HEIGHT_PX - 8}" text-anchor="middle" class="tick">'
            f"{label}</text>"
            f'<text x="{x:.1f}" y="{bottom + 16:.1f}" text-anchor="middle" class="tick">'
            f"{label}</text>"
        )
    c.add(f'<text x="4" y="{AXIS_HEIGHT_PX - 8}" class="tick">virtual s</text>')


def _table(model: Model) -> str:
    """Faults, role changes, snapshots, nemesis, phases and violations, in time order."""
    wanted = FAULT_KINDS | STARTS | {"nemesis", "phase", "violation", "options"}
    rows = []
    for e in model.events:
        kind = str(e.get("kind"))
        if (kind not in wanted and not kind.startswith("raft.")) or kind == "raft.commit":
            continue
        fields = {k: v for k, v in e.items() if k not in ("t", "node", "kind")}
        css = ' class="bad"' if kind == "violation" else ""
        rows.append(
            f"<tr{css}><td>{_t(e):.6f}</td><td>{html.escape(str(e.get('node')))}</td>"
            f"<td>{html.escape(kind)}</td>"
            f"<td>{html.escape(json.dumps(fields, default=repr)[:MAX_TOOLTIP_CHARS])}</td></tr>"
        )
    shown = _sample(rows, MAX_TABLE_ROWS)
    more = (
        f'<tr><td colspan="4">{len(rows) - len(shown)} rows left out (an even sample is '
        "shown)</td></tr>"
        if len(shown) < len(rows)
        else ""
    )
    return "\n".join(shown) + more or '<tr><td colspan="4">no such events</td></tr>'


_DEFS = """<defs>
<marker id="head" viewBox="0 0 6 6" refX="5" refY="3" markerWidth="4" markerHeight="4"
 orient="auto"><path d="M0,0 L6,3 L0,6 z" fill="#2f6db5" fill-opacity=".6"/></marker>
<pattern id="hatch-down" width="6" height="6" patternUnits="userSpaceOnUse"
 patternTransform="rotate(45)"><rect width="6" height="6" fill="#d9d9d9"/>
<line x1="0" y1="0" x2="0" y2="6" stroke="#8c8c8c" stroke-width="3"/></pattern>
<pattern id="hatch-pause" width="6" height="6" patternUnits="userSpaceOnUse"
 patternTransform="rotate(-45)"><rect width="6" height="6" fill="#ece3f5"/>
<line x1="0" y1="0" x2="0" y2="6" stroke="#9467bd" stroke-width="2"/></pattern>
</defs>"""


def _swatch(css: str, label: str, shape: str = "rect") -> str:
    shapes = {
        "rect": f'<rect x="1" y="3" width="22" height="10" class="{css}"/>',
        "line": f'<line x1="1" y1="12" x2="21" y2="4" class="{css}"/>',
        "x": f'<path d="M7,3 l10,10 m0,-10 l-10,10" class="{css}"/>',
        "tri": f'<path d="M12,2 l6,11 h-12 z" class="{css}"/>',
        "diamond": f'<path d="M12,3 l5,5 l-5,5 l-5,-5 z" class="{css}"/>',
        "vline": f'<line x1="12" y1="0" x2="12" y2="16" class="{css}"/>',
    }
    return (
        f'<span class="key"><svg width="24" height="16">{shapes[shape]}</svg>'
        f"{html.escape(label)}</span>"
    )


_LEGEND = "".join(
    [
        _swatch("role-leader", "leader"),
        _swatch("role-candidate", "candidate"),
        _swatch("band-down", "down (kill/crash)"),
        _swatch("band-pause", "paused"),
        _swatch("band-cut", "cut off by a partition"),
        _swatch("band-clog", "clogged"),
        _swatch("x-kill", "kill / crash", "x"),
        _swatch("start", "restart", "tri"),
        _swatch("fault-mark", "other fault", "diamond"),
        _swatch("msg", "message (server to server)", "line"),
        _swatch("op-ok", "op ok"),
        _swatch("op-fail", "op fail"),
        _swatch("op-info", "op unknown (info)"),
        _swatch("violation", "violation", "vline"),
    ]
)

_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>detsim timeline: {title}</title>
<style>
body {{ font-family: system-ui, -apple-system, "DejaVu Sans", sans-serif; margin: 12px 16px;
  color: #222; background: #fff; }}
h1 {{ font-size: 20px; margin: 0 0 4px 0; }}
.badge {{ font-size: 13px; padding: 2px 8px; border-radius: 10px; color: #fff;
  vertical-align: middle; margin-left: 8px; }}
.badge.failed {{ background: #d62728; }} .badge.passed {{ background: #2ca02c; }}
.meta {{ color: #555; font-size: 13px; margin: 2px 0 6px 0; }}
pre.failure {{ background: #fdecea; border-left: 4px solid #d62728; padding: 6px 10px;
  margin: 4px 0 8px 0; white-space: pre-wrap; max-height: 84px; overflow: auto;
  font-size: 12px; }}
.legend {{ font-size: 12px; line-height: 20px; margin-bottom: 4px; }}
.key {{ display: inline-block; margin-right: 12px; white-space: nowrap; }}
.key svg {{ vertical-align: middle; margin-right: 3px; }}
.notes {{ font-size: 12px; color: #555; margin: 2px 0 4px 0; padding-left: 18px; }}
.plot {{ overflow-x: auto; border: 1px solid #ccc; }}
.lane-even {{ fill: #f7f9fc; }} .lane-odd {{ fill: #ffffff; }}
.lane-sep {{ stroke: #d5dbe3; stroke-width: 1; shape-rendering: crispEdges; }}
.label {{ font: bold 13px monospace; fill: #1f3b5c; }}
.label.client {{ font-weight: normal; fill: #555; }} .label.cluster {{ fill: #555; }}
.label.failing {{ fill: #d62728; }}
.failing-box {{ fill: none; stroke: #d62728; stroke-width: 2; }}
.grid {{ stroke: #e6e6e6; stroke-width: 1; }}
.tick {{ font: 11px monospace; fill: #555; }}
.term {{ font: 9px monospace; fill: #7a5c00; }}
.role-leader {{ fill: #f2c12e; stroke: #b8860b; stroke-width: 1; }}
.role-candidate {{ fill: #fff3c4; stroke: #b8860b; stroke-dasharray: 3 2; }}
.role-label {{ font: bold 10px monospace; fill: #5a4300; }}
.band-down {{ fill: url(#hatch-down); }}
.band-pause {{ fill: url(#hatch-pause); }}
.band-cut {{ fill: #d62728; fill-opacity: .10; stroke: #d62728; stroke-width: 1.5; }}
.band-clog {{ fill: #ff7f0e; fill-opacity: .75; }}
.msg {{ stroke: #2f6db5; stroke-opacity: .3; stroke-width: 1; }}
.op-ok {{ fill: #2ca02c; }} .op-fail {{ fill: #e377c2; }} .op-info {{ fill: #ff7f0e; }}
.op-open {{ fill: #bbbbbb; }}
.op-suspect {{ stroke: #d62728; stroke-width: 1.5; }}
.x-kill, .x-crash {{ stroke: #d62728; stroke-width: 2.5; fill: none; }}
.x-crash {{ stroke: #8b0000; }}
.start {{ fill: #2ca02c; stroke: #fff; stroke-width: 1; }}
.snap {{ fill: #17becf; stroke: #0b6e78; }}
.fault-mark {{ fill: #d62728; stroke: #fff; stroke-width: .8; }}
.nemesis {{ fill: #666; }}
.global-fault {{ stroke: #d62728; stroke-opacity: .45; stroke-dasharray: 4 3; }}
.global-heal {{ stroke: #2ca02c; stroke-opacity: .6; stroke-dasharray: 4 3; }}
.phase-0 {{ fill: #fbe3e3; }} .phase-1 {{ fill: #e3f3e3; }}
.phase-label {{ font: 11px sans-serif; fill: #444; }}
.violation {{ stroke: #d62728; stroke-width: 3; }}
.violation-label {{ font: bold 12px sans-serif; fill: #d62728; }}
table {{ border-collapse: collapse; font: 12px monospace; margin-top: 6px; }}
td {{ border-bottom: 1px solid #eee; padding: 2px 8px; vertical-align: top; }}
tr.bad td {{ background: #fdecea; color: #a00; }}
h2 {{ font-size: 16px; margin: 14px 0 4px 0; }}
</style></head><body>
<h1>{title}<span class="badge {status_class}">{status}</span></h1>
<div class="meta">{meta}</div>
{failure}
<div class="legend">{legend}</div>
{notes}
<div class="plot">{svg}</div>
<h2>Faults, roles, phases and violations</h2>
<table><tr><td>t (s)</td><td>node</td><td>kind</td><td>fields</td></tr>
{table}
</table>
</body></html>
"""
