"""Checks: what every store scenario verifies, each a function returning failure lines.

Owned here (the names a Verdict lists in `checks`, in this order):
- "raft invariants": `RaftInvariants` fed after every persisted Ready through the driver's
  observer hook (cluster.py), then the full log check (`check_logs`) over every running node
  at the end. Any violation fails the run;
- "no node stopped unexpectedly": a node that stops by itself fails the run, unless its disk
  was faulty (fail-stop on a storage error is allowed there), and an assertion stopping a node
  fails it everywhere; no server counted an internal error;
- "liveness with faults off": after the nemesis quiesced, an agreed leader, an ok for every
  client slot and convergence, each within its stated bound (run.py: ELECTION_BOUND_S, ...);
  then a stable term (`term_changes`): with PreVote and CheckQuorum on and no faults, a healthy
  cluster never starts an election, so no running node's term may move for
  TERM_WATCH_TIMEOUTS election timeouts (a leader whose heartbeats stop resetting followers'
  timers would be replaced every timeout while the store still serves);
- "convergence (equal RAFT.DIGEST)": every member answers RAFT.DIGEST with one
  (applied_index, digest);
- "durability of acknowledged writes": the final value of every append-only key, read at every
  member, holds every acknowledged append's token exactly once, and only attempted tokens (a
  lost acknowledged write, a write applied twice, or an invented one fails);
- "linearizability per key": `check_history` on the registers' history, final reads
  included (so an acknowledged write missing from the end state is also a violation there);
  the append-only keys are checked by `append_logs` instead (below), which is exact for them
  and polynomial, where the generic search is exponential in the number of appends with an
  unknown outcome (a power loss of every node with 40 pipelined appends in flight).

Append-only keys (`append_logs`). Every append carries a token unique in the run, so a read's
value names the appends it saw, in order. A history of such a key is linearizable iff there is
one order of appends that every read sees a prefix of, consistent with real time: (1) every
read value is a prefix of the longest one, L; (2) an acknowledged append that returned length
n sits at L[:n] (its token ends there); (3) an acknowledged append that completed before a read
began is in that read; (4) a read that completed before another began saw no more than it;
(5) a token in a read was invoked before the read completed; (6) two acknowledged appends in
real-time order are in that order in L.

Rules: a check never raises for a failing run: it returns lines that say what broke, where,
when; the first line of the first failing check is the run's summary.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Final

from detsim.check import check_history
from detsim.check.checker import CheckResult
from detsim.check.history import Event, Value
from detsim.check.raft import RaftInvariantViolation
from detsim.fs.records import CorruptRecordError
from detsim.scenarios.cluster import StoreCluster, view
from detsim.scenarios.workload import Appends

#: Real seconds the linearizability search may take (a run that exhausts it is reported as
#: undecided: a failure to look at, never a pass).
LINEARIZABILITY_TIMEOUT_S: Final = 120.0
MAX_LINES: Final = 10  # failure lines kept per check
TOKEN_END: Final = ";"
#: Election timeouts (each the longest one: 2 * election_ticks ticks) the term must stay
#: put once the cluster converged with faults off: three chances for a follower to time out.
TERM_WATCH_TIMEOUTS: Final = 3

CHECKS: Final = (
    "raft invariants",
    "no node stopped unexpectedly",
    "liveness with faults off",
    "convergence (equal RAFT.DIGEST)",
    "durability of acknowledged writes",
    "linearizability per key",
)


def raft_invariants(cluster: StoreCluster, retired: set[str]) -> list[str]:
    """Violations seen along the way, then the full log check over the running members."""
    lines = [f"raft invariant: {v}" for v in cluster.violations]
    views = [view(cluster.rafts[n], cluster.boots[n]) for n in cluster.alive() if n not in retired]
    try:
        cluster.invariants.check_logs(views)
    except RaftInvariantViolation as exc:
        lines.append(f"raft invariant (final log check): {exc}")
    return lines[:MAX_LINES]


def term_changes(before: Mapping[str, int], after: Mapping[str, int]) -> list[str]:
    """Lines for every node whose term moved between two samples (a node in only one sample,
    down or just restarted, is not compared)."""
    return [
        f"liveness: {nid}'s term moved {before[nid]} -> {after[nid]} with faults off and an "
        "agreed leader (an election in a healthy cluster)"
        for nid in sorted(before)
        if nid in after and after[nid] != before[nid]
    ][:MAX_LINES]


#: What a node may stop on when its disk is faulty (full, corrupt reads, torn tails): the disk's
#: own errors and the storage's refusal to carry on from damage. Anything else is a bug.
DISK_ERRORS: Final = (OSError, CorruptRecordError)


def node_stops(cluster: StoreCluster, disk_victims: set[str]) -> list[str]:
    lines = []
    for stop in cluster.stops:
        allowed = stop.node_id in disk_victims and isinstance(stop.error, DISK_ERRORS)
        if not allowed:
            lines.append(f"node stopped: {stop}")
    for nid, boot, server in cluster.every_server:
        if server.stats.internal_errors:
            lines.append(f"{nid} (boot {boot}): {server.stats.internal_errors} internal error(s)")
    return lines[:MAX_LINES]


def convergence(digests: Mapping[str, tuple[int, str]], members: Sequence[str]) -> list[str]:
    missing = [n for n in members if n not in digests]
    if missing:
        return [f"convergence: no RAFT.DIGEST from {missing} with faults off"]
    if len(set(digests.values())) > 1:
        shown = ", ".join(
            f"{n}: applied {i} digest {d[:12]}" for n, (i, d) in sorted(digests.items())
        )
        return [f"convergence: members differ after the liveness phase: {shown}"]
    return []


def durability(
    appends: Appends, final: Mapping[str, Mapping[str, Value]], log_keys: Sequence[str]
) -> list[str]:
    """Every acknowledged append in the final value, once; nothing unattempted (see header)."""
    lines: list[str] = []
    for nid, values in sorted(final.items()):
        for key in log_keys:
            if key not in values:
                lines.append(f"durability: no final read of {key!r} at {nid} with faults off")
                continue
            lines.extend(_one_log(appends, nid, key, values[key]))
    return lines[:MAX_LINES]


def _one_log(appends: Appends, nid: str, key: str, value: Value) -> list[str]:
    text = value if isinstance(value, str) else ""
    tokens = [t + TOKEN_END for t in text.split(TOKEN_END) if t]
    present = set(tokens)
    lines = []
    lost = [t for t, k in appends.acked.items() if k == key and t not in present]
    if lost:
        lines.append(
            f"durability: {len(lost)} acknowledged append(s) to {key!r} missing at {nid}: "
            f"{lost[:5]}"
        )
    twice = sorted({t for t in tokens if tokens.count(t) > 1})
    if twice:
        lines.append(f"durability: append(s) applied twice in {key!r} at {nid}: {twice[:5]}")
    invented = [t for t in present if appends.attempted.get(t) != key]
    if invented:
        lines.append(f"durability: {key!r} at {nid} holds never-attempted {sorted(invented)[:5]}")
    return lines


def linearizability(
    events: Sequence[Event], skip_keys: Sequence[str] = ()
) -> tuple[list[str], CheckResult]:
    skipped = set(skip_keys)
    kept = [e for e in events if e.key not in skipped]
    result = check_history(kept, model="kv", timeout=LINEARIZABILITY_TIMEOUT_S)
    if result.linearizable is True:
        return [], result
    if result.linearizable is None:
        return [f"linearizability undecided: {result.explain()}"], result
    return result.explain().splitlines()[: 4 * MAX_LINES], result


def append_logs(events: Sequence[Event], log_keys: Sequence[str]) -> list[str]:
    """The exact check of the append-only keys (see the module header)."""
    lines: list[str] = []
    for key in log_keys:
        ops = _paired([e for e in events if e.key == key])
        lines.extend(_check_log(key, ops))
    return lines[:MAX_LINES]


class _Op:
    """One operation on a log key: invoke and completion indexes, what it carried or saw."""

    __slots__ = ("done", "f", "invoke", "token", "value")

    def __init__(self, invoke: Event, done: Event | None) -> None:
        self.f = invoke.f
        self.invoke = invoke.index
        self.done = done.index if done is not None and done.type == "ok" else None
        self.token = invoke.value if invoke.f == "append" else None
        self.value = done.value if done is not None and done.type == "ok" else None

    def describe(self) -> str:
        end = "?" if self.done is None else self.done
        what = f"append {self.token!r}" if self.f == "append" else f"get -> {self.value!r}"
        return f"[{self.invoke}..{end}] {what}"


def _paired(events: Sequence[Event]) -> list[_Op]:
    open_by_process: dict[int, Event] = {}
    ops: list[_Op] = []
    for event in events:
        if event.type == "invoke":
            open_by_process[event.process] = event
        elif event.process in open_by_process:
            ops.append(_Op(open_by_process.pop(event.process), event))
    ops.extend(_Op(invoke, None) for invoke in open_by_process.values())
    return ops


def _tokens(value: Value) -> list[str]:
    text = value if isinstance(value, str) else ""
    return [t + TOKEN_END for t in text.split(TOKEN_END) if t]


def _check_log(key: str, ops: list[_Op]) -> list[str]:
    reads = [op for op in ops if op.f == "get" and op.done is not None]
    appends = [op for op in ops if op.f == "append"]
    acked = [op for op in appends if op.done is not None]
    texts = [op.value if isinstance(op.value, str) else "" for op in reads]
    longest = max(texts, key=len, default="")
    bad = [
        f"{key}: read {r.describe()} is not a prefix of {longest[:60]!r}..."
        for r, text in zip(reads, texts, strict=True)
        if not longest.startswith(text)
    ]
    for op in acked:  # unobserved (past the longest read) is no violation: durability's job
        if not isinstance(op.value, int):
            bad.append(f"{key}: {op.describe()} returned {op.value!r}, not a length")
        elif op.value <= len(longest) and not longest[: op.value].endswith(str(op.token)):
            bad.append(f"{key}: {op.describe()} returned length {op.value!r}, not its place")
    invoked_at = {str(op.token): op.invoke for op in appends}
    for read, text in zip(reads, texts, strict=True):
        bad.extend(_read_in_time(key, read, text, acked, invoked_at))
        bad.extend(
            f"{key}: {read.describe()} saw less than {other.describe()} (ended before it began)"
            for other, other_text in zip(reads, texts, strict=True)
            if _before(other, read) and len(other_text) > len(text)
        )
    place = {token: k for k, token in enumerate(_tokens(longest))}
    bad.extend(
        f"{key}: {b.describe()} precedes {a.describe()} in the log (which ended before it began)"
        for a in acked
        for b in acked
        if _before(a, b) and str(a.token) in place and str(b.token) in place
        if place[str(a.token)] > place[str(b.token)]
    )
    return bad[:MAX_LINES]


def _before(a: _Op, b: _Op) -> bool:
    """`a` completed before `b` was invoked (real-time order)."""
    return a.done is not None and a.done < b.invoke


def _read_in_time(
    key: str, read: _Op, text: str, acked: list[_Op], invoked_at: dict[str, int]
) -> list[str]:
    """Rules 3 and 5: acknowledged-before appends are in the read; its tokens were invoked."""
    seen = set(_tokens(text))
    assert read.done is not None
    bad = [
        f"{key}: {read.describe()} misses {op.describe()}, acknowledged before it began"
        for op in acked
        if _before(op, read) and op.token not in seen
    ]
    bad.extend(
        f"{key}: {read.describe()} holds {token!r}, not invoked before it ended"
        for token in sorted(seen)
        if invoked_at.get(token, read.done + 1) > read.done
    )
    return bad
