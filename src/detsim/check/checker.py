"""`check_history`: split by key, interleave the per-key searches, explain a violation.

This module owns the public checker API (DESIGN.md "Histories and checkers").

Split. Every op touches one key and keys are independent objects, so a history is linearizable
iff each key's sub-history is (P-compositionality, Herlihy & Wing). A history whose ops have no
key (key null) is one object.

Schedule. Keys are searched smallest first, each for a slice of steps, round-robin, with one
shared deadline: a hard key cannot starve the verdict on the others, and the first key found
not linearizable stops everything. When the deadline passes with keys undecided the verdict is
None (unknown) -- unless some key was already found not linearizable.

Memory bound. The searches' caches of configurations are the checker's memory (estimated by
search.held_bytes: the caches' tables, ~110-200 bytes a configuration, the states the search
built). All keys' searches together hold at most `max_search_bytes` (default
search.MAX_SEARCH_BYTES, 256 MiB) plus one slice of one key's search: past it the verdict is
None with `unknown_reason` "search budget", `configs` and `search_bytes` saying how much was
held -- never a crash, never a guess. The process may hold more than the estimate while
several keys' caches grow at once (the allocator does not reuse every freed table: measured
+25% with two keys). A decided key's cache is freed at once. A counterexample's
searches come after the verdict, while the verdict's cache is still held: each prefix search
is bounded by `max_search_bytes` too (so at most twice the budget at once), the window's by
MAX_SEARCH_BYTES and WINDOW_BUDGET_STEPS.

Counterexample (only for a key found not linearizable; bounded by WINDOW_BUDGET_STEPS):
1. the failing prefix: the shortest prefix of the key's history, cut just after a completion,
   that is not linearizable (ops still open at the cut may take effect or not). The op whose
   completion ends it is `failing_op`; everything before that completion is linearizable.
2. the window: the latest cut point S such that the ops from S to the failing completion
   cannot be linearized from *any* configuration the earlier ops can leave (a state, plus
   which ops straddling S already took effect). `window` lists the ops straddling S and those
   invoked after S; `window_states` the states the key can be in at S. That is a proof that
   stands alone: a reader checks the window from those states, not the whole history.
If the budget runs out, the window is the whole failing prefix from the initial state.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

from detsim.check._realclock import real_seconds
from detsim.check.history import Event, HistoryError, Operation, event_from_json, pair_events
from detsim.check.models import Model, State, Step, get_model
from detsim.check.search import (
    MAX_SEARCH_BYTES,
    SLICE_STEPS,
    Cache,
    Problem,
    Search,
    build,
    check_ops,
    held_bytes,
    lift,
    run,
    search,
    unlift,
)

# The search budget is real time, also when a check runs inside a simulation (where the `time`
# module reads the virtual clock, which stands still during a check): see _realclock.
_wall_clock = real_seconds
EXPLAIN_SLICE_STEPS = 1000  # steps between budget checks while building a counterexample

WINDOW_BUDGET_STEPS = 2_000_000  # cap on the counterexample work (config enumeration)
MAX_START_CONFIGS = 5_000

#: Why a verdict is None: the timeout passed, or the searches reached `max_search_bytes`.
UnknownReason = Literal["timeout", "search budget"]
TIMEOUT: Final = "timeout"
SEARCH_BUDGET: Final = "search budget"


@dataclass(frozen=True, slots=True)
class CheckResult:
    """The verdict on a history; `key`, `window`... are set when it is not linearizable."""

    linearizable: bool | None
    model: str
    ops: int  # operations checked (after pairing)
    keys: int
    seconds: float
    key: str | None = None
    failing_op: Operation | None = None
    window: tuple[Operation, ...] = ()
    window_states: tuple[State, ...] = ()
    window_start_index: int | None = None
    key_ops: tuple[Operation, ...] = ()  # all ops on the offending key
    undecided_keys: tuple[str | None, ...] = ()
    unknown_reason: UnknownReason | None = None  # set iff linearizable is None
    search_bytes: int = 0  # the most memory the verdict's searches held at once (estimated)
    configs: int = 0  # the configurations they had cached then
    max_search_bytes: int = MAX_SEARCH_BYTES  # the bound on `search_bytes` this check ran with

    def __bool__(self) -> bool:
        return self.linearizable is True

    def explain(self) -> str:
        """A few lines a person can read."""
        if self.linearizable is True:
            return f"linearizable: {self.ops} ops on {self.keys} key(s) ({self.model} model)"
        if self.linearizable is None:
            keys = ", ".join(repr(k) for k in self.undecided_keys[:5])
            undecided = f"{len(self.undecided_keys)} key(s) undecided: {keys}"
            if self.unknown_reason == SEARCH_BUDGET:
                return (
                    f"unknown: search budget exhausted ({_mib(self.search_bytes)} in "
                    f"{self.configs:,} configurations, limit {_mib(self.max_search_bytes)}) "
                    f"with {undecided}"
                )
            return f"unknown: time ran out with {undecided}"
        lines = [f"not linearizable: key {self.key!r} ({self.model} model)"]
        if self.failing_op is not None:
            lines.append(f"  cannot linearize: {_line(self.failing_op)}")
        states = ", ".join("nil" if s is None else repr(s) for s in self.window_states)
        lines.append(
            f"  window: {len(self.window)} op(s) from index {self.window_start_index}, "
            f"starting from state(s) {{{states}}}"
        )
        lines.extend(f"    {_line(op)}" for op in self.window)
        return "\n".join(lines)


def _mib(size_bytes: int) -> str:
    return f"{size_bytes / (1 << 20):,.1f} MiB"


def _line(op: Operation) -> str:
    end = "inf" if op.complete_index is None else str(op.complete_index)
    return f"[{op.invoke_index}..{end}] process {op.process}: {op.describe()}"


# ---------------------------------------------------------------------------------------------
# Public entry point


def check_history(
    events: Iterable[Event] | Iterable[Mapping[str, Any]] | Iterable[Operation],
    model: str = "kv",
    timeout: float | None = None,
    *,
    explain: bool = True,
    max_search_bytes: int | None = None,
) -> CheckResult:
    """Check a history against a model: its events (`Event` objects, or the dicts `json.loads`
    gives for history lines, mixed freely), or already paired operations.

    Anything else raises `HistoryError` naming the item. `explain=False` skips the
    counterexample (failing op, window) of a violation. `timeout` is in real seconds.
    `max_search_bytes` bounds the search's memory (estimated, all keys together; None:
    MAX_SEARCH_BYTES): past it the verdict is None, `unknown_reason` "search budget".
    """
    if max_search_bytes is None:
        max_search_bytes = MAX_SEARCH_BYTES
    if max_search_bytes < 1:
        raise ValueError(f"max_search_bytes must be at least 1, got {max_search_bytes}")
    started = _wall_clock()
    spec = get_model(model)
    ops = _operations(list(events))
    by_key = _split(ops, spec)
    deadline = None if timeout is None else started + timeout
    verdict = _schedule(by_key, spec, deadline, max_search_bytes)
    base: dict[str, Any] = {
        "model": spec.name,
        "ops": len(ops),
        "keys": len(by_key),
        "search_bytes": verdict.peak_bytes,
        "configs": verdict.peak_configs,
        "max_search_bytes": max_search_bytes,
    }
    if verdict.linearizable is False and not explain:
        return CheckResult(False, seconds=_wall_clock() - started, key=verdict.bad_key, **base)
    if verdict.linearizable is False:
        key_ops = tuple(op for op, _ in by_key[verdict.bad_key])
        details = explain_key(
            list(key_ops), spec, explored=verdict.explored, max_search_bytes=max_search_bytes
        )
        return CheckResult(
            False,
            seconds=_wall_clock() - started,
            key=verdict.bad_key,
            key_ops=key_ops,
            **details,  # type: ignore[arg-type]
            **base,
        )
    return CheckResult(
        verdict.linearizable,
        seconds=_wall_clock() - started,
        undecided_keys=tuple(verdict.undecided),
        unknown_reason=verdict.reason,
        **base,
    )


def _operations(items: list[object]) -> list[Operation]:
    """The history as operations: events and event dicts are validated and paired (positions
    in errors are 1-based item numbers); a list of operations is taken as it is."""
    ops = [item for item in items if isinstance(item, Operation)]
    if len(ops) == len(items):
        return ops
    events: list[Event] = []
    for number, item in enumerate(items, start=1):
        if isinstance(item, Event):
            events.append(item)
        elif isinstance(item, Mapping):
            events.append(event_from_json(dict(item), number))
        else:
            raise HistoryError(
                "check_history takes history events (Event objects or dicts such as "
                f"json.loads of a history line) or Operations, got {type(item).__name__}: "
                f"{item!r:.80}",
                number,
            )
    return pair_events(events)


def _split(ops: Sequence[Operation], spec: Model) -> dict[str | None, list[tuple[Operation, Step]]]:
    by_key: dict[str | None, list[tuple[Operation, Step]]] = {}
    compile_op = spec.compile
    for op in ops:
        step = compile_op(op)
        if step is None:
            continue
        bucket = by_key.get(op.key)
        if bucket is None:
            bucket = by_key[op.key] = []
        bucket.append((op, step))
    return by_key


@dataclass(slots=True)
class _Verdict:
    """What the scheduled searches decided (see check_history)."""

    linearizable: bool | None
    peak_bytes: int  # the most memory all keys' searches held at once (search.held_bytes)
    peak_configs: int  # the configurations cached then
    bad_key: str | None = None
    explored: Cache = dataclasses.field(default_factory=set)  # the bad key's configurations
    undecided: list[str | None] = dataclasses.field(default_factory=list)
    reason: UnknownReason | None = None


@dataclass(slots=True)
class _KeySearch:
    key: str | None
    gen: Search
    cache: Cache
    built: list[int]  # bytes of the states the search built (search.search's `built`)
    problem: Problem


def _schedule(
    by_key: dict[str | None, list[tuple[Operation, Step]]],
    spec: Model,
    deadline: float | None,
    max_search_bytes: int,
) -> _Verdict:
    """Round-robin over keys, smallest first, within the deadline and `max_search_bytes`."""
    active: list[_KeySearch] = []
    meter = _Meter()  # what the undecided keys' searches hold
    for key in sorted(by_key, key=lambda k: len(by_key[k])):
        entries = by_key[key]
        problem = build([op for op, _ in entries], [s for _, s in entries])
        cache: Cache = set()
        built = [0]
        gen = search(problem, spec.initial, cache, max_bytes=max_search_bytes, built=built)
        active.append(_KeySearch(key, gen, cache, built, problem))
        meter.held_bytes += held_bytes(problem, cache, built)  # an empty set's table
    while active:
        still: list[_KeySearch] = []
        for position, task in enumerate(active):
            before = (held_bytes(task.problem, task.cache, task.built), len(task.cache))
            try:
                next(task.gen)
            except StopIteration as stop:
                meter.grow(task, before)
                meter.free(task)  # this key is decided: its cache goes with its search
                if stop.value is True:
                    continue
                if stop.value is False:
                    return _Verdict(
                        False, meter.peak_bytes, meter.peak_configs, task.key, task.cache
                    )
                # None: this one key passed the budget (the total check below normally stops
                # everything first).
                undecided = [t.key for t in [task, *still, *active[position + 1 :]]]
                return meter.unknown(SEARCH_BUDGET, undecided)
            meter.grow(task, before)
            still.append(task)
            reason: UnknownReason | None = None
            if meter.held_bytes > max_search_bytes:
                reason = SEARCH_BUDGET
            elif deadline is not None and _wall_clock() > deadline:
                reason = TIMEOUT
            if reason is not None:
                return meter.unknown(reason, [t.key for t in [*still, *active[position + 1 :]]])
        active = still
    assert meter.held_bytes == 0 and meter.held_configs == 0, meter
    return _Verdict(True, meter.peak_bytes, meter.peak_configs)


@dataclass(slots=True)
class _Meter:
    """The memory the undecided keys' searches hold (search.held_bytes), and its peak."""

    held_bytes: int = 0
    held_configs: int = 0
    peak_bytes: int = 0
    peak_configs: int = 0

    def grow(self, task: _KeySearch, before: tuple[int, int]) -> None:
        """Count what `task` cached during its last slice (`before`: its bytes, configs)."""
        self.held_bytes += held_bytes(task.problem, task.cache, task.built) - before[0]
        self.held_configs += len(task.cache) - before[1]
        if self.held_bytes > self.peak_bytes:
            self.peak_bytes, self.peak_configs = self.held_bytes, self.held_configs

    def free(self, task: _KeySearch) -> None:
        self.held_bytes -= held_bytes(task.problem, task.cache, task.built)
        self.held_configs -= len(task.cache)

    def unknown(self, reason: UnknownReason, undecided: list[str | None]) -> _Verdict:
        return _Verdict(
            None, self.peak_bytes, self.peak_configs, undecided=undecided, reason=reason
        )


# ---------------------------------------------------------------------------------------------
# Counterexample: failing prefix, then the latest window start that still proves it


def _open(op: Operation) -> Operation:
    """The op as seen at a cut before its completion: it may or may not have taken effect."""
    return dataclasses.replace(op, status="info", output=None, complete_index=None)


def _prefix(ops: Sequence[Operation], cut: int) -> list[Operation]:
    """Ops invoked at or before history index `cut`; those completing after it become open."""
    out = []
    for op in ops:
        if op.invoke_index > cut:
            continue
        done = op.complete_index is not None and op.complete_index <= cut
        out.append(op if done else _open(op))
    return out


def _compiled(ops: Sequence[Operation], spec: Model) -> tuple[list[Operation], list[Step]]:
    kept, steps = [], []
    for op in ops:
        step = spec.compile(op)
        if step is not None:
            kept.append(op)
            steps.append(step)
    return kept, steps


def _prefix_ok(ops: Sequence[Operation], cut: int, spec: Model, max_bytes: int) -> bool:
    """False iff the prefix is certainly not linearizable (a search that gives up is True)."""
    kept, steps = _compiled(_prefix(ops, cut), spec)
    return check_ops(kept, steps, spec.initial, max_bytes) is not False


def explain_key(
    ops: list[Operation],
    spec: Model,
    *,
    explored: Cache | None = None,
    max_search_bytes: int = MAX_SEARCH_BYTES,
) -> dict[str, object]:
    """failing_op, window, window_states, window_start_index for a key not linearizable.

    `explored`: the configurations the verdict's search of exactly these ops (in this order)
    explored, when it found them not linearizable; they locate the failing prefix, saving most
    of its binary search. The result is the same with or without them. Each prefix search
    holds at most `max_search_bytes`; one that gives up counts as passing, so the failing
    prefix found may then be a longer one than the shortest (still a failing one).
    """
    cuts = sorted(op.complete_index for op in ops if op.complete_index is not None)
    lo, hi = 0, len(cuts) - 1  # invariant: prefix at cuts[hi] fails; those before cuts[lo] pass
    if explored is not None and lo < hi:
        lo = min(_witnessed_cuts(ops, explored), hi)
        if lo < hi and _prefix_ok(ops, cuts[lo], spec, max_search_bytes):
            lo += 1  # a prefix the search could not witness (see _witnessed_cuts): bisect on
        elif lo < hi:
            hi = lo
    while lo < hi:
        mid = (lo + hi) // 2
        if _prefix_ok(ops, cuts[mid], spec, max_search_bytes):
            lo = mid + 1
        else:
            hi = mid
    cut = cuts[hi] if cuts else max(op.invoke_index for op in ops)
    failing = next((op for op in ops if op.complete_index == cut), None)
    prefix = _prefix(ops, cut)
    start, window, states = _latest_window(prefix, spec)
    return {
        "failing_op": failing,
        "window": tuple(window),
        "window_states": tuple(states),
        "window_start_index": start,
    }


def _witnessed_cuts(ops: Sequence[Operation], explored: Cache) -> int:
    """The most leading completions (in history order) that one explored configuration has all
    linearized: for each cut up to the last of them, that configuration witnesses that the
    prefix is linearizable.

    Why it is a witness: the search only linearizes a call that comes before the first return
    entry still in the list, so the configuration's other ops were invoked before the next
    completion; those invoked after the cut come after every completed op in its order, and
    dropping them and what follows them (open ops only) leaves a linearization of the prefix.
    The count may fall short (a cas the whole history saw fail is open in a prefix and may take
    effect there, which the search never tried), never over: `explain_key` checks the next
    prefix itself and bisects on if it passes.
    """
    completion_order = sorted(
        (op.complete_index, i) for i, op in enumerate(ops) if op.complete_index is not None
    )
    leading_masks = list(itertools.accumulate(1 << i for _, i in completion_order))
    best = 0
    for lin, _ in explored:
        while best < len(leading_masks) and lin & leading_masks[best] == leading_masks[best]:
            best += 1
    return best


def _latest_window(
    prefix: list[Operation], spec: Model
) -> tuple[int, list[Operation], list[State]]:
    """The latest window start that proves the prefix not linearizable.

    Proofs are monotone: one from start S holds from any earlier start too (every configuration
    at S is reached from one at the earlier start), so a start that gives none rules out every
    later one. The search gallops back from the last start (gaps 1, 2, 4, ...) to the first
    proof, then bisects between it and the earliest refusal. The last start comes first
    because it is usually the answer (for all 79 violations of porcupine's etcd logs), and each
    probe costs a search of everything before its start: one probe instead of log2(starts).
    """
    starts = sorted({op.invoke_index for op in prefix})
    best = (starts[0], list(prefix), [spec.initial])  # the whole prefix: always a proof
    budget = [WINDOW_BUDGET_STEPS]
    lo, hi = 1, len(starts) - 1  # the undecided starts (by index)
    gap = 1
    while lo <= hi:
        probe = max(hi - gap + 1, lo)
        proof = _window_at(prefix, starts[probe], spec, budget)
        if proof is not None:
            best = (starts[probe], *proof)
            lo = probe + 1
            break
        hi = probe - 1
        gap *= 2
    while lo <= hi:
        mid = (lo + hi) // 2
        proof = _window_at(prefix, starts[mid], spec, budget)
        if proof is not None:
            best = (starts[mid], *proof)
            lo = mid + 1
        else:
            hi = mid - 1
    return best


def _window_at(
    prefix: list[Operation], start: int, spec: Model, budget: list[int]
) -> tuple[list[Operation], list[State]] | None:
    """(window ops, start states) if every configuration at `start` fails; else None."""
    before = [op for op in prefix if op.invoke_index < start]
    straddle = [op for op in before if op.complete_index is None or op.complete_index >= start]
    configs = _configs(before, straddle, spec, budget)
    if configs is None:
        return None
    window = straddle + [op for op in prefix if op.invoke_index >= start]
    kept, steps = _compiled(window, spec)
    problem = build(kept, steps)
    index = {id(op): i for i, op in enumerate(kept)}
    cache: Cache = set()
    for done, state in configs:
        positions = [problem.call_pos[index[id(op)]] for op in done if id(op) in index]
        if not _fails_from(problem, positions, state, cache, budget):
            return None
    window.sort(key=lambda op: op.invoke_index)
    return window, sorted({s for _, s in configs}, key=repr)


def _fails_from(
    problem: Problem, positions: list[int], state: State, cache: Cache, budget: list[int]
) -> bool:
    """True iff the window cannot be linearized with `positions` already taken effect."""
    lin = 0
    for pos in positions:
        lift(problem, pos)
        lin |= problem.bit[pos]
    result = run(
        search(problem, state, cache, lin=lin, slice_steps=EXPLAIN_SLICE_STEPS),
        budget,
        EXPLAIN_SLICE_STEPS,
    )
    for pos in reversed(positions):
        unlift(problem, pos)
    return result is False


def _configs(
    before: list[Operation], straddle: list[Operation], spec: Model, budget: list[int]
) -> list[tuple[list[Operation], State]] | None:
    """Every (straddling ops taken effect, state) the ops invoked before the cut can leave."""
    straddling = {id(op) for op in straddle}
    origin: list[Operation] = []  # kept[i] may be a modified copy of origin[i]
    kept: list[Operation] = []
    steps: list[Step] = []
    for op in before:
        step = spec.compile(op)
        if step is None:
            continue
        origin.append(op)
        if id(op) in straddling:
            # Optional before the cut: no return entry, and no read pruning (its placement
            # before or after the cut matters to the window).
            op = dataclasses.replace(op, complete_index=None)
            step = dataclasses.replace(step, pure=False)
        kept.append(op)
        steps.append(step)
    problem = build(kept, steps)
    found: Cache = set()
    result = run(
        search(problem, spec.initial, set(), found=found, slice_steps=EXPLAIN_SLICE_STEPS),
        budget,
        EXPLAIN_SLICE_STEPS,
    )
    if result is None or len(found) > MAX_START_CONFIGS:
        return None
    out: list[tuple[list[Operation], State]] = []
    for lin, state in found:
        done = [op for i, op in enumerate(origin) if lin >> i & 1 and id(op) in straddling]
        out.append((done, state))  # type: ignore[arg-type]
    return out


__all__ = [
    "MAX_SEARCH_BYTES",
    "SEARCH_BUDGET",
    "SLICE_STEPS",
    "TIMEOUT",
    "CheckResult",
    "UnknownReason",
    "check_history",
    "explain_key",
    "run",
]
