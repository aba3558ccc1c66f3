"""Sequential specifications the linearizability checker tests histories against.

This module owns the meaning of each operation. A model compiles one `Operation` into a `Step`
for the search, or drops it (it constrains nothing). States are immutable and hashable (a str,
an int or None), so the search can cache (linearized-set, state) pairs.

Models (per key: the checker splits a history by key, each key is one independent object):

`kv` -- the detsim store, one key. State: None (absent) or a string. Values are compared as the
store keeps them, as text: an int in the history stands for its decimal text (INCR replies 3,
GET replies "3"), any other non-string value stands for its JSON text.
    get    ok v          legal iff state == v (v = null: absent); state unchanged
    put    v             state := v
    append v             state := v if absent else state + v; an ok value that is an int is the
                         reply of APPEND (the new length in UTF-8 bytes) and must match
    cas    [e, n]  ok    legal iff state == e; state := n
    cas    [e, n]  fail with error "cas-mismatch": an observation, legal iff state != e
    delete         ok    state := absent; an ok value that is an int (DEL's reply) must be 1 iff
                         the key existed
    incr           ok v  legal iff state is absent (counts as 0) or a canonical decimal 64-bit
                         integer; state := state + 1, and v (if not null) must be the new integer
Outcomes:
    ok                   must take effect between invoke and completion
    fail                 certainly not applied: dropped (except the cas-mismatch observation)
    info / no completion may take effect at any point after invoke, or never; an info get or an
                         info cas-mismatch observes nothing and is dropped; an info cas applies
                         iff the state equals e at its point; an info incr of a non-integer
                         has no effect (the store would have refused it)

`kv-empty` -- `kv` where every key starts as "" and delete resets it to "": porcupine's kv model,
for the Knossos/porcupine kv histories in which a missing key reads as "".

`register` -- Jepsen/Knossos cas-register: get (read), put (write), cas only; values compared
exactly as written (no text normalisation); initial state nil. Same outcome rules as `kv`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from detsim.check.history import CAS_MISMATCH, HistoryError, Operation, Value

State = str | int | None
StepFn = Callable[[State], object]  # returns the new state, or ILLEGAL

ILLEGAL: Final = object()  # a step's "not legal in this state"

# Step codes: the search inlines the two commonest (read, write) and calls `fn` for the rest.
READ: Final = 0
WRITE: Final = 1
CALL: Final = 2

INT64_MIN: Final = -(1 << 63)
INT64_MAX: Final = (1 << 63) - 1


@dataclass(frozen=True, slots=True)
class Step:
    """One compiled op. `pure`: never changes the state (a read/observation).

    `sig` (hashable, or None): ops with equal signatures have the same effect in every state,
    which lets the search treat open ops with equal signatures as interchangeable.
    `blind`: legal in every state, and the state after it does not depend on the state before
    (a put; a delete whose reply says nothing): it erases whatever an op just before it did.
    `appends`: the state after it is the state before with text added at the end (an append);
    on a key whose every op appends or reads, the state only grows.
    `builds`: the state after it is a new object (an append's or an incr's text), not one of
    the history's values: the search counts its size against its memory budget.
    """

    code: int
    arg: State
    fn: StepFn | None
    pure: bool
    sig: object = None
    blind: bool = False
    appends: bool = False
    builds: bool = False


@dataclass(frozen=True, slots=True)
class Model:
    name: str
    initial: State
    compile: Callable[[Operation], Step | None]


# ---------------------------------------------------------------------------------------------
# Value normalisation


def kv_text(value: Value) -> State:
    """The store's view of a history value: None, or text."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _exact(value: Value) -> State:
    if value is None or isinstance(value, str | int):
        return value
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _cas_args(op: Operation, norm: Callable[[Value], State]) -> tuple[State, State]:
    value = op.value
    if not (isinstance(value, list | tuple) and len(value) == 2):
        raise HistoryError(f"cas at index {op.invoke_index} needs [expected, new], got {value!r}")
    return norm(value[0]), norm(value[1])


# ---------------------------------------------------------------------------------------------
# Step builders (closures keep the search loop free of per-op branching)


def _cas_apply(expected: State, new: State) -> StepFn:
    def step(state: State) -> object:
        return new if state == expected else ILLEGAL

    return step


def _cas_mismatch(expected: State) -> StepFn:
    def step(state: State) -> object:
        return ILLEGAL if state == expected else state

    return step


def _cas_maybe(expected: State, new: State) -> StepFn:
    def step(state: State) -> object:
        return new if state == expected else state

    return step


def _append(suffix: str, reply_len: int | None) -> StepFn:
    def step(state: State) -> object:
        new = suffix if state is None else f"{state}{suffix}"
        if reply_len is not None and len(new.encode("utf-8")) != reply_len:
            return ILLEGAL
        return new

    return step


def _delete(reply: int | None, absent: State) -> StepFn:
    def step(state: State) -> object:
        if reply is not None and (state != absent) != (reply == 1):
            return ILLEGAL
        return absent

    return step


def _as_int64(state: State) -> int | None:
    """The integer INCR sees in `state`, or None when the store would refuse it."""
    if state is None:
        return 0
    if isinstance(state, int):
        return state
    try:
        number = int(state)
    except ValueError:
        return None
    if str(number) != state or not INT64_MIN <= number <= INT64_MAX:
        return None
    return number


def _incr(expected_reply: State, certain: bool) -> StepFn:
    def step(state: State) -> object:
        number = _as_int64(state)
        if number is None or number >= INT64_MAX:
            return ILLEGAL if certain else state
        new = str(number + 1)
        if expected_reply is not None and new != expected_reply:
            return ILLEGAL
        return new

    return step


# ---------------------------------------------------------------------------------------------
# Compilers


def _compile_kv(op: Operation, norm: Callable[[Value], State], absent: State) -> Step | None:
    status, f = op.status, op.f
    if status == "fail":
        if f == "cas" and op.error == CAS_MISMATCH:
            expected, _ = _cas_args(op, norm)
            return Step(CALL, None, _cas_mismatch(expected), True)
        return None
    ok = status == "ok"
    if f == "get":
        return Step(READ, norm(op.output), None, True) if ok else None
    if f == "put":
        value = norm(op.value)
        return Step(WRITE, value, None, False, ("put", value), blind=True)
    if f == "cas":
        expected, new = _cas_args(op, norm)
        fn = (_cas_apply if ok else _cas_maybe)(expected, new)
        return Step(CALL, None, fn, False, None if ok else ("cas?", expected, new))
    if f == "append":
        text = norm(op.value)
        suffix = "" if text is None else str(text)
        reply = op.output if ok and type(op.output) is int else None
        sig = None if reply is not None else ("append", suffix)
        return Step(CALL, None, _append(suffix, reply), False, sig, appends=True, builds=True)
    if f == "delete":
        reply = op.output if ok and type(op.output) is int else None
        sig_del: object = ("delete",) if reply is None else None
        return Step(CALL, None, _delete(reply, absent), False, sig_del, blind=reply is None)
    if f == "incr":
        return Step(
            CALL,
            None,
            _incr(norm(op.output) if ok else None, ok),
            False,
            None if ok else ("incr?",),
            builds=True,
        )
    raise HistoryError(f"unknown operation {f!r} at index {op.invoke_index}")


def compile_kv(op: Operation) -> Step | None:
    return _compile_kv(op, kv_text, None)


def compile_kv_empty(op: Operation) -> Step | None:
    return _compile_kv(op, kv_text, "")


def compile_register(op: Operation) -> Step | None:
    if op.f not in ("get", "put", "cas"):
        raise HistoryError(
            f"the register model has get/put/cas only; {op.f!r} at index {op.invoke_index}"
        )
    return _compile_kv(op, _exact, None)


MODELS: Final[dict[str, Model]] = {
    "kv": Model("kv", None, compile_kv),
    "kv-empty": Model("kv-empty", "", compile_kv_empty),
    "register": Model("register", None, compile_register),
}


def get_model(name: str) -> Model:
    try:
        return MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; known: {', '.join(MODELS)}") from None
