"""The Wing & Gong / Lowe linearizability search on one key (as in porcupine's checkSingle).

This module owns the search and its data layout; `checker.py` owns splitting, scheduling and
counterexamples.

Layout. A key's ops become entries sorted by history index: a call entry per op and a return
entry per op that completed (an open/info op has no return: its window ends at +infinity). The
entries form a doubly linked list in two int lists (`nxt`, `prv`; position 0 is the head,
position m+1 the tail). Linearizing an op lifts its call and return out of the list (dancing
links); backtracking puts them back in reverse order.

Search. Walk from the head over call entries, trying each op in the current state; a legal op
whose (linearized-set, state) pair is new is linearized, and the walk restarts at the head.
Reaching a return entry means the op it closes cannot be placed: backtrack. Reaching the tail
means every op that completed is linearized (open ops may never take effect): success.
The linearized set is a Python int bitset; the cache is a set of (bitset, state) pairs, each
one a configuration known to lead nowhere (or on the current path).

Pruning (sound, see `pure`): if an observation that changes nothing (a get, a cas-mismatch)
is legal at a configuration and linearizing it first leads nowhere, the configuration leads
nowhere: any successful continuation could be reordered to place that read first (every op
that must precede it is already linearized, or its return entry would come first in the
list, and a read leaves the state as it found it). So its siblings are not tried.

Symmetry (sound): two open ops with the same signature (models.Step.sig) have the same effect
and windows [invoke, +inf) nested in each other, so in any linearization they can be swapped
to put the earlier-invoked one first. The search therefore only linearizes an open op after
its earlier twin (`need`): without this, k identical timed-out writes multiply the
configurations by up to 2^k.

Overwrites (sound): an open op X directly followed by a blind op W (models.Step.blind: a put,
a delete whose reply says nothing) can be dropped from any linearization: W leaves the same
state whatever X did, X need not take effect at all, and W could be placed where X was (X has
no return entry, so nothing W waits for is lifted by X). So the search never linearizes a
blind op right after an open one. Which op came last is part of the configuration then: its
cache key carries the bit `p.after_open` when the last op linearized was open (such a
configuration has fewer continuations, so it must not share a key with its unflagged twin).
Read pruning stays sound: a read moved to the front of a continuation, then the continuation
cleaned of the open ops it left right before a blind one, is still a continuation. Without
this rule, k concurrent timed-out puts of distinct values are tried in all 2^k subsets before
each read. The enumeration mode (`found`) keeps every order: it must see every configuration.

Growing keys (sound): on a key whose every op appends or reads (Step.appends, READ), the
state only grows, so a read still to come must see a value that extends the current state.
After an append the search checks the first read's return entry in the list (not linearized
yet, so it must come later) and drops the configuration if its value does not extend the new
state. Without this, k concurrent timed-out appends are tried in every order
before a read that saw another order rules them out (2 keys x 8, read in the reverse order:
245,677 configurations; now 16).

Bounds: the search yields control every `slice_steps` steps (so keys can be interleaved and a
shared timeout and memory budget enforced) and gives up (result None) once its estimated
memory, `held_bytes`, passes `max_bytes`: the cache's hash table (sys.getsizeof of the set),
counted 1.5 times because a resize holds the old table (half the new one) while it copies;
per cached configuration its tuple and its bitset int (`p.config_bytes`: TUPLE_BYTES and an
int of as many bits as the key has ops; the state is the history's own object); plus the
size of each state the search built itself (an append's text: Step.builds), which the cache keeps
alive: a str of n characters takes at most n + STR_HEADER_BYTES bytes when every value of the
key is ASCII, at most 4 times that otherwise (`char_bytes`; sys.getsizeof would be exact, but
cost 17% of the search's time on porcupine's kv histories). Checked once a slice, and a
slice ends early once it built SLICE_BUILT_BYTES of states: a search passes `max_bytes` by at
most slice_steps configurations, SLICE_BUILT_BYTES and one state.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field
from typing import Final

from detsim.check.history import Operation
from detsim.check.models import ILLEGAL, READ, WRITE, State, Step

RETURN: Final = -1  # code of a return entry
NO_READ: Final = object()  # `seen` of an entry that is not the return entry of a read
TWIN: Final = 3  # an open op with an earlier open twin (same signature): see "Symmetry"
SLICE_STEPS: Final = 20_000
#: A cached configuration's tuple (sys.getsizeof of a 2-tuple, 56, rounded up to the
#: allocator's 16 bytes); its bitset int is counted by `config_bytes`.
TUPLE_BYTES: Final = 64
#: The estimated memory (held_bytes) a check's searches may hold at once, all keys of a history
#: together (checker.py): about 1,500,000 configurations of 50 ops' keys. The hardest history
#: of porcupine's corpus that the checker decides needs 176k configurations (kv/c50-ok.txt).
MAX_SEARCH_BYTES: Final = 256 << 20
#: A slice ends early once it built this many bytes of states (long appended values).
SLICE_BUILT_BYTES: Final = 4 << 20
#: A str's size beyond its characters, rounded up (sys.getsizeof("") is 49 for ASCII text).
STR_HEADER_BYTES: Final = 56

Cache = set[tuple[int, object]]
Search = Generator[None, None, bool | None]


@dataclass(slots=True)
class Problem:
    """One key's ops laid out for the search. Op i has bit 1 << i."""

    ops: list[Operation]
    code: list[int] = field(default_factory=list)
    arg: list[object] = field(default_factory=list)
    fn: list[object] = field(default_factory=list)
    pure: list[bool] = field(default_factory=list)
    bit: list[int] = field(default_factory=list)
    ret: list[int] = field(default_factory=list)  # call entry -> its return entry, or -1
    opi: list[int] = field(default_factory=list)  # entry -> op number
    need: list[int] = field(default_factory=list)  # TWIN entry -> bit of its earlier twin
    blind: list[bool] = field(default_factory=list)  # call entry of a blind op (see header)
    mark: list[int] = field(default_factory=list)  # call entry of an open op -> after_open
    after_open: int = 0  # key bit: the last op linearized was open (above every op's bit)
    grows: bool = False  # every op appends or reads: the state only grows (see header)
    builds: list[bool] = field(default_factory=list)  # call entry -> Step.builds
    char_bytes: int = 1  # bytes a character of a built state may take: 1 (ASCII values) or 4
    config_bytes: int = 0  # a cached configuration's tuple and int (see held_bytes)
    seen: list[object] = field(default_factory=list)  # a read's return entry -> value read
    nxt: list[int] = field(default_factory=list)
    prv: list[int] = field(default_factory=list)
    call_pos: list[int] = field(default_factory=list)  # op number -> call entry
    finite: int = 0  # ops with a return entry


def build(ops: Sequence[Operation], steps: Sequence[Step]) -> Problem:
    """Lay out ops (with their compiled steps); an op with complete_index None is open."""
    marks: list[tuple[int, int, int]] = []  # (history index, 0 call / 1 return, op number)
    for i, op in enumerate(ops):
        marks.append((op.invoke_index, 0, i))
        if op.complete_index is not None:
            marks.append((op.complete_index, 1, i))
    marks.sort()
    m = len(marks)
    p = Problem(list(ops))
    p.code = [RETURN] * (m + 2)
    p.arg = [None] * (m + 2)
    p.fn = [None] * (m + 2)
    p.pure = [False] * (m + 2)
    p.bit = [0] * (m + 2)
    p.ret = [-1] * (m + 2)
    p.opi = [-1] * (m + 2)
    p.need = [0] * (m + 2)
    p.blind = [False] * (m + 2)
    p.builds = [False] * (m + 2)
    p.mark = [0] * (m + 2)
    p.after_open = 1 << len(ops)
    p.config_bytes = config_bytes(len(ops))
    p.seen = [NO_READ] * (m + 2)
    p.grows = all(s.appends or s.code == READ or s.pure for s in steps)
    p.char_bytes = 1 if all(_ascii(op.value) and _ascii(op.output) for op in ops) else 4
    p.call_pos = [0] * len(ops)
    twin_of = _twins(ops, steps)
    for pos, (_, is_ret, i) in enumerate(marks, start=1):
        p.opi[pos] = i
        p.bit[pos] = 1 << i
        if is_ret:
            p.ret[p.call_pos[i]] = pos
            if steps[i].code == READ:
                p.seen[pos] = steps[i].arg
            continue
        p.call_pos[i] = pos
        s = steps[i]
        p.code[pos], p.arg[pos], p.fn[pos], p.pure[pos] = s.code, s.arg, s.fn, s.pure
        p.blind[pos], p.builds[pos] = s.blind, s.builds
        if ops[i].complete_index is None:
            p.mark[pos] = p.after_open
        if twin_of[i] >= 0:
            p.code[pos], p.need[pos] = TWIN, 1 << twin_of[i]
            p.fn[pos] = s.fn if s.fn is not None else _constant(s.arg)
    p.nxt = [*range(1, m + 2), m + 1]
    p.prv = [0, *range(0, m + 1)]
    p.finite = sum(1 for op in ops if op.complete_index is not None)
    return p


def _ascii(value: object) -> bool:
    """Whether a history value's text is ASCII (models normalise the rest to ASCII JSON)."""
    if isinstance(value, str):
        return value.isascii()
    if isinstance(value, list | tuple):
        return all(_ascii(item) for item in value)
    return True


def _twins(ops: Sequence[Operation], steps: Sequence[Step]) -> list[int]:
    """For each open op, the op number of its latest earlier-invoked open twin, else -1."""
    twin_of = [-1] * len(ops)
    last: dict[object, int] = {}
    for i in sorted(range(len(ops)), key=lambda i: ops[i].invoke_index):
        sig = steps[i].sig
        if ops[i].complete_index is not None or sig is None:
            continue
        twin_of[i] = last.get(sig, -1)
        last[sig] = i
    return twin_of


def _constant(value: State) -> Callable[[State], object]:
    def step(state: State) -> object:
        return value

    return step


def lift(p: Problem, e: int) -> None:
    nxt, prv = p.nxt, p.prv
    a, b = prv[e], nxt[e]
    nxt[a] = b
    prv[b] = a
    r = p.ret[e]
    if r >= 0:
        a, b = prv[r], nxt[r]
        nxt[a] = b
        prv[b] = a


def unlift(p: Problem, e: int) -> None:
    nxt, prv = p.nxt, p.prv
    r = p.ret[e]
    if r >= 0:
        nxt[prv[r]] = r
        prv[nxt[r]] = r
    nxt[prv[e]] = e
    prv[nxt[e]] = e


def config_bytes(n_ops: int) -> int:
    """A cached configuration's tuple and bitset int (n_ops bits and the after_open bit: 30
    bits a 4-byte digit after a 28-byte header), each rounded up to 16 bytes."""
    int_bytes = 28 + 4 * ((n_ops + 1 + 29) // 30)
    return TUPLE_BYTES + (int_bytes + 15) // 16 * 16


def held_bytes(p: Problem, cache: Cache, built: list[int], found: Cache | None = None) -> int:
    """A search's estimated memory (see "Bounds"): its cache's (and `found`'s) tables and
    configurations, and the bytes of the states it built (`built[0]`)."""
    table_bytes = sys.getsizeof(cache)
    configs = len(cache)
    if found is not None:
        table_bytes += sys.getsizeof(found)
        configs += len(found)
    return table_bytes * 3 // 2 + configs * p.config_bytes + built[0]


def search(
    p: Problem,
    state: State,
    cache: Cache,
    *,
    lin: int = 0,
    found: Cache | None = None,
    slice_steps: int = SLICE_STEPS,
    max_bytes: int = MAX_SEARCH_BYTES,
    built: list[int] | None = None,
) -> Search:
    """Generator: yields every `slice_steps` steps; returns True / False / None (gave up).

    `lin` marks ops already linearized (their entries must already be lifted by the caller).
    With `found`, reaching the tail records (lin, state) into it and keeps searching, so the
    search enumerates every reachable final configuration and returns False at the end.
    `built[0]` (a fresh counter when None) adds up the bytes of the states the search builds
    (updated at every yield and return), for the caller's `held_bytes`; the search gives up
    past `max_bytes` of its own.
    """
    code, arg, fn, pure, bit, nxt, need = p.code, p.arg, p.fn, p.pure, p.bit, p.nxt, p.need
    blind, grows, builds = p.blind, p.grows, p.builds
    built = [0] if built is None else built
    char_bytes = p.char_bytes
    slice_units = SLICE_BUILT_BYTES // char_bytes  # a slice ends early past these
    units = 0  # built this slice: characters + STR_HEADER_BYTES a state, times char_bytes
    # Enumeration must reach every configuration: no overwrite rule there (see header).
    mark = p.mark if found is None else [0] * len(p.mark)
    tail = len(nxt) - 1
    calls: list[tuple[int, State]] = []
    entry = nxt[0]
    after_open = 0  # mark of the last op linearized: 0, or p.after_open if it was open
    steps = 0
    # The loop body is deliberately flat: it is the hot path of every check.
    while True:
        steps += 1
        if steps >= slice_steps:
            steps = 0
            built[0] += units * char_bytes
            units = 0
            if held_bytes(p, cache, built, found) > max_bytes:
                _unwind(p, calls)
                return None
            yield
        if entry == tail:
            if found is None:
                built[0] += units * char_bytes
                _unwind(p, calls)
                return True
            found.add((lin, state))
            c = RETURN  # enumerate: treat as a dead end and backtrack
        else:
            c = code[entry]
        if c >= 0:
            if c == READ:  # (never blind: checked first, as the commonest)
                new: object = state if state == arg[entry] else ILLEGAL
            elif after_open and blind[entry]:
                new = ILLEGAL  # an overwrite right after an open op (see header)
            elif c == WRITE:
                new = arg[entry]
            elif c == TWIN and lin & need[entry] == 0:
                new = ILLEGAL
            else:
                new = fn[entry](state)  # type: ignore[operator]
            if (
                grows
                and new is not ILLEGAL
                and not pure[entry]
                and not _next_read_fits(p, entry, new)
            ):
                new = ILLEGAL  # the next read cannot see the grown state (see "Growing keys")
            if new is not ILLEGAL:
                nl = lin | bit[entry]
                key = (nl | mark[entry], new)
                if key not in cache:
                    cache.add(key)
                    if builds[entry]:  # (a built state is a str: Step.builds)
                        units += len(new) + STR_HEADER_BYTES  # type: ignore[arg-type]
                        if units > slice_units:
                            steps = slice_steps  # end the slice at the next step (see Bounds)
                    calls.append((entry, state))
                    state = new  # type: ignore[assignment]
                    lin = nl
                    after_open = mark[entry]
                    lift(p, entry)
                    entry = nxt[0]
                    continue
                if not pure[entry]:
                    entry = nxt[entry]
                    continue
                # A legal read whose result is a known dead end: this configuration is one too.
            else:
                entry = nxt[entry]
                continue
        # Dead end: backtrack, past every read (see "Pruning" in the header).
        while True:
            if not calls:
                built[0] += units * char_bytes
                return False
            entry, state = calls.pop()
            lin ^= bit[entry]
            unlift(p, entry)
            if not pure[entry]:
                break
        after_open = mark[calls[-1][0]] if calls else 0
        entry = nxt[entry]


def _next_read_fits(p: Problem, entry: int, new: object) -> bool:
    """On a growing key: whether the first read still to come in the list (its return entry
    first) can see a value that extends `new`, the state once `entry` is linearized."""
    seen, nxt, own = p.seen, p.nxt, p.ret[entry]
    tail = len(nxt) - 1
    e = nxt[0]
    while e != tail and (seen[e] is NO_READ or e == own):
        e = nxt[e]
    value = seen[e]  # NO_READ at the tail
    if value is NO_READ or new is None:
        return True
    return isinstance(value, str) and isinstance(new, str) and value.startswith(new)


def _unwind(p: Problem, calls: list[tuple[int, State]]) -> None:
    """Put every lifted entry back, so the problem can be searched again."""
    while calls:
        entry, _ = calls.pop()
        unlift(p, entry)


def run(gen: Search, budget: list[int] | None = None, slice_steps: int = 0) -> bool | None:
    """Drive a search generator to its end; None if `budget` (steps, charged `slice_steps` a
    slice, shared by the caller across searches) runs out first."""
    while True:
        try:
            next(gen)
        except StopIteration as stop:
            result: bool | None = stop.value
            return result
        if budget is not None:
            budget[0] -= slice_steps
            if budget[0] <= 0:
                gen.close()
                return None


def check_ops(
    ops: Sequence[Operation],
    steps: Sequence[Step],
    initial: State,
    max_bytes: int = MAX_SEARCH_BYTES,
) -> bool | None:
    """Linearizability of one key's ops from `initial`, without interleaving."""
    return run(search(build(ops, steps), initial, set(), max_bytes=max_bytes))
