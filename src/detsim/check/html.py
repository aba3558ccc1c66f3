"""A self-contained HTML page for a counterexample: one lane per process, one bar per op.

Owns the rendering only (no external assets, no scripts needed): the offending key's ops
around the violation, x = order of history indices (real time, stretched so that every bar
holds its label), bars labelled with the op;
the ops of the minimal window highlighted, the op that cannot be linearized outlined, the end
of the longest linearizable prefix marked by a line, open (info) ops drawn to the right edge.
Bound: at most MAX_OPS ops are drawn (the window always, then the closest ops before it).
"""

from __future__ import annotations

import html
from typing import Final

from detsim.check.checker import CheckResult
from detsim.check.history import Operation

MAX_OPS: Final = 400
LANE_PX: Final = 28
STEP_PX: Final = 18  # at least this between two history indices
CHAR_PX: Final = 6.6  # width of one character of an 11px label, for the layout
LEFT_PX: Final = 90

_CSS: Final = """
body{font:13px/1.4 system-ui,sans-serif;margin:16px;color:#222}
h1{font-size:18px} pre{background:#f6f6f6;padding:8px;overflow:auto}
.op rect{fill:#cfe3ff;stroke:#6a8fc7} .op.open rect{fill:#eee;stroke:#aaa;stroke-dasharray:4 2}
.op.win rect{fill:#ffd9a8;stroke:#d98a1c} .op.bad rect{fill:#ff9b9b;stroke:#c00;stroke-width:2}
.op text{font-size:11px;pointer-events:none} .lane{font-size:12px;fill:#555}
.prefix{stroke:#2a2;stroke-width:2} .winzone{fill:#fff3e0}
.legend span{padding:2px 6px;margin-right:8px}
"""


def render_html(result: CheckResult, title: str = "history") -> str:
    """The page for a non-linearizable result (a short page otherwise)."""
    head = f"<!doctype html><html><head><meta charset='utf-8'><title>{_e(title)}</title>"
    head += f"<style>{_CSS}</style></head><body>"
    if result.linearizable is not False:
        return head + f"<h1>{_e(title)}</h1><pre>{_e(result.explain())}</pre></body></html>"
    ops = _shown(result)
    body = [
        f"<h1>{_e(title)}: not linearizable {_e(_where(result))}</h1>",
        "<p class='legend'><span style='background:#ffd9a8'>minimal window</span>"
        "<span style='background:#ff9b9b'>cannot be linearized</span>"
        "<span style='background:#eee'>open (info: may take effect or not)</span>"
        "<span style='border-left:3px solid #2a2'>"
        "end of the longest linearizable prefix</span></p>",
        _svg(result, ops),
        f"<pre>{_e(result.explain())}</pre>",
    ]
    return head + "".join(body) + "</body></html>"


def _where(result: CheckResult) -> str:
    return "(a single register)" if result.key is None else f"on key {result.key!r}"


def _e(text: str) -> str:
    return html.escape(text, quote=True)


def _shown(result: CheckResult) -> list[Operation]:
    cut = result.failing_op.complete_index if result.failing_op else None
    window = {id(op) for op in result.window}
    before = [
        op
        for op in result.key_ops
        if id(op) not in window and (cut is None or op.invoke_index <= cut)
    ]
    room = max(0, MAX_OPS - len(window))
    return sorted(
        [*result.window, *before[-room:]] if room else list(result.window),
        key=lambda op: op.invoke_index,
    )


def _label_px(op: Operation) -> int:
    return int(CHAR_PX * len(op.describe())) + 8


def _layout(ops: list[Operation]) -> dict[int, int]:
    """x of every history index: in index order, at least STEP_PX apart, and each op's
    completion far enough right of its invocation for its label to fit inside its bar."""
    marks = sorted({i for op in ops for i in (op.invoke_index, op.complete_index) if i is not None})
    widest_ending_at: dict[int, list[Operation]] = {}
    for op in ops:
        if op.complete_index is not None:
            widest_ending_at.setdefault(op.complete_index, []).append(op)
    x_of: dict[int, int] = {}
    x = LEFT_PX - STEP_PX
    for index in marks:
        x += STEP_PX
        for op in widest_ending_at.get(index, ()):
            x = max(x, x_of[op.invoke_index] + _label_px(op))
        x_of[index] = x
    return x_of


def _svg(result: CheckResult, ops: list[Operation]) -> str:
    x_of = _layout(ops)
    widest_open = max((_label_px(op) for op in ops if op.complete_index is None), default=0)
    right = max(x_of.values(), default=LEFT_PX) + max(8 * STEP_PX, widest_open)
    lanes = {p: n for n, p in enumerate(sorted({op.process for op in ops}))}
    height = (len(lanes) + 1) * LANE_PX
    parts = [f"<svg xmlns='http://www.w3.org/2000/svg' width='{right + 160}' height='{height}'>"]
    parts.extend(_zones(result, x_of, right, height))
    for process, lane in lanes.items():
        parts.append(f"<text class='lane' x='4' y='{lane * LANE_PX + 18}'>process {process}</text>")
    window = {id(op) for op in result.window}
    for op in ops:
        parts.append(_bar(op, x_of, right, lanes[op.process], id(op) in window, result))
    parts.append("</svg>")
    return "".join(parts)


def _zones(result: CheckResult, x_of: dict[int, int], right: int, height: int) -> list[str]:
    out = []
    start = result.window_start_index
    if start is not None and start in x_of:
        out.append(
            f"<rect class='winzone' x='{x_of[start] - 4}' y='0' "
            f"width='{right - x_of[start] + 4}' height='{height}'/>"
        )
    cut = result.failing_op.complete_index if result.failing_op else None
    if cut is not None and cut in x_of:
        x = x_of[cut] - STEP_PX // 2
        out.append(f"<line class='prefix' x1='{x}' y1='0' x2='{x}' y2='{height}'/>")
    return out


def _bar(
    op: Operation, x_of: dict[int, int], right: int, lane: int, in_window: bool, r: CheckResult
) -> str:
    x0 = x_of[op.invoke_index]
    x1 = right if op.complete_index is None else x_of[op.complete_index]
    classes = ["op"]
    if op.complete_index is None:
        classes.append("open")
    if in_window:
        classes.append("win")
    if r.failing_op is not None and op == r.failing_op:
        classes.append("bad")
    y = lane * LANE_PX + 4
    label = _e(op.describe())
    end = "inf" if op.complete_index is None else op.complete_index
    tip = f"index {op.invoke_index}..{end}"
    return (
        f"<g class='{' '.join(classes)}'><title>{label} ({tip})</title>"
        f"<rect x='{x0}' y='{y}' width='{max(6, x1 - x0)}' height='{LANE_PX - 8}' rx='3'/>"
        f"<text x='{x0 + 3}' y='{y + 14}'>{label}</text></g>"
    )
