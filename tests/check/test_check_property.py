"""The fast checker agrees with the brute force on small random histories.

Histories come from a simulated store with random linearization points (so most are
linearizable), overlapping calls, two keys, fail (not applied), info (applied or not) and
cas-mismatch outcomes; then, sometimes, one observed value is corrupted.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from helpers_check import H, apply, brute_force
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from detsim.check import check_history, pair_events
from detsim.check.checker import _prefix
from detsim.check.history import Operation

VALUES = ["1", "2", "12"]


def _random_op(rng: random.Random) -> tuple[str, str, Any]:
    f = rng.choice(["get", "get", "put", "append", "cas", "delete", "incr"])
    key = rng.choice(["a", "b"])
    value: Any = None
    if f in ("put", "append"):
        value = rng.choice(VALUES)
    elif f == "cas":
        value = [rng.choice([*VALUES, "0"]), rng.choice(VALUES)]
    return f, key, value


def _overwrite_op(rng: random.Random) -> tuple[str, str, Any]:
    """Mostly puts and deletes (blind writes), which the search's overwrite rule is about."""
    f = rng.choice(["get", "put", "put", "put", "delete", "cas", "append"])
    value: Any = None
    if f in ("put", "append"):
        value = rng.choice(VALUES)
    elif f == "cas":
        value = [rng.choice([*VALUES, "0"]), rng.choice(VALUES)]
    return f, "a", value


def _growing_op(rng: random.Random) -> tuple[str, str, Any]:
    """Appends and reads only: a key whose state only grows (search.py "Growing keys")."""
    f = rng.choice(["get", "get", "append", "append", "append"])
    return f, "a", rng.choice(VALUES) if f == "append" else None


def generate(
    rng: random.Random,
    n_ops: int,
    pick: Callable[[random.Random], tuple[str, str, Any]] = _random_op,
    info_p: float = 0.1,
) -> H:
    """A history of n_ops; `pick` draws an op, `info_p` is the chance of each info outcome."""
    h, store = H(), {}
    pending: dict[int, tuple[str, str, Any, str]] = {}  # process -> op, phase
    started, process = 0, 0
    while started < n_ops or pending:
        choices = [p for p in pending]
        if started < n_ops and len(pending) < 4:
            choices.append(-1)
        p = rng.choice(choices)
        if p == -1:
            process += 1
            f, key, value = pick(rng)
            h.inv(process, f, key, value)
            pending[process] = (f, key, value, "invoked")
            started += 1
        elif pending[p][3] == "invoked":
            _step_invoked(rng, h, store, pending, p, info_p)
        else:
            _complete(rng, h, pending, p, info_p)
    return h


def _step_invoked(
    rng: random.Random, h: H, store: dict[str, Any], pending: dict, p: int, info_p: float
) -> None:
    f, key, value, _ = pending[p]
    roll = rng.random()
    if roll < 0.1:
        del pending[p]
        h.fail(p, "NOLEADER")
        return
    if roll < 0.1 + info_p:
        del pending[p]
        h.info(p)  # never applied
        return
    op = Operation(p, f, key, value, None, "info", None, 0, None)
    before = store.get(key)
    apply(store, op)
    if f == "cas" and before != str(value[0]):
        pending[p] = (f, key, value, "mismatch")
    else:
        out = {"get": before, "incr": store.get(key)}.get(f)
        if f == "append":
            out = len(store[key].encode())
        pending[p] = (f, key, value, "applied", out)  # type: ignore[assignment]


def _complete(rng: random.Random, h: H, pending: dict, p: int, info_p: float) -> None:
    entry = pending.pop(p)
    if entry[3] == "mismatch":
        h.fail(p, "cas-mismatch")
    elif rng.random() < info_p:
        h.info(p)  # applied, but the client never heard
    else:
        out = entry[4] if entry[0] in ("get", "incr", "append") else None
        if entry[0] == "incr" and out is not None:
            out = int(out)
        h.ok(p, out)


def _corrupt(rng: random.Random, h: H) -> None:
    reads = [i for i, e in enumerate(h.events) if e.type == "ok" and e.f == "get"]
    if reads:
        i = rng.choice(reads)
        e = h.events[i]
        h.events[i] = type(e)(
            e.index, e.time, e.process, e.type, e.f, e.key, rng.choice([None, *VALUES]), e.error
        )


SETTINGS = settings(
    max_examples=250,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


@SETTINGS
@given(seed=st.integers(0, 2**32 - 1), n_ops=st.integers(1, 7), corrupt=st.booleans())
def test_agrees_with_brute_force(seed: int, n_ops: int, corrupt: bool) -> None:
    _agrees_with_brute_force(random.Random(seed), n_ops, corrupt, _random_op)


@SETTINGS
@given(seed=st.integers(0, 2**32 - 1), n_ops=st.integers(2, 7), corrupt=st.booleans())
def test_overwrites_after_open_ops_agree_with_brute_force(
    seed: int, n_ops: int, corrupt: bool
) -> None:
    # One key, mostly puts and deletes, a third of the outcomes unknown: the search never
    # linearizes a put/delete right after an open op (search.py "Overwrites"); the verdict
    # must not change.
    _agrees_with_brute_force(random.Random(seed), n_ops, corrupt, _overwrite_op, info_p=0.35)


@SETTINGS
@given(seed=st.integers(0, 2**32 - 1), n_ops=st.integers(2, 7), corrupt=st.booleans())
def test_growing_keys_agree_with_brute_force(seed: int, n_ops: int, corrupt: bool) -> None:
    # One key, appends and reads only, a third of the outcomes unknown: the search drops an
    # append the next read cannot see (search.py "Growing keys"); the verdict must not change.
    _agrees_with_brute_force(random.Random(seed), n_ops, corrupt, _growing_op, info_p=0.35)


def _agrees_with_brute_force(
    rng: random.Random,
    n_ops: int,
    corrupt: bool,
    pick: Callable[[random.Random], tuple[str, str, Any]],
    **generate_options: Any,
) -> None:
    """A generated history (corrupted or not): the checker's verdict is brute force's, and a
    non-linearizable verdict comes with a minimal counterexample."""
    h = generate(rng, n_ops, pick, **generate_options)
    if corrupt:
        _corrupt(rng, h)
    ops = pair_events(h.events)
    expected = brute_force(ops)
    result = check_history(h.events)
    assert result.linearizable is expected, (h.events, result.explain())
    if not expected:
        _check_counterexample(ops, result)


def _check_counterexample(ops: list[Operation], result: Any) -> None:
    """The failing prefix is minimal: cut just before the failing completion it passes.

    Prefixes keep what the whole history knows: an op that failed is known not applied.
    """
    failing = result.failing_op
    assert failing is not None and failing.key == result.key and failing in result.window
    key_ops = [
        op
        for op in ops
        if op.key == result.key and (op.status != "fail" or op.error == "cas-mismatch")
    ]
    assert not brute_force(_prefix(key_ops, failing.complete_index))
    assert brute_force(_prefix(key_ops, failing.complete_index - 1))


def test_generator_produces_both_verdicts() -> None:
    verdicts = set()
    for seed in range(60):
        rng = random.Random(seed)
        h = generate(rng, 6)
        if seed % 2:
            _corrupt(rng, h)
        verdicts.add(brute_force(pair_events(h.events)))
    assert verdicts == {True, False}
