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
- "convergence (equal RAFT.DIGEST)": every member answers RAFT.DIGEST with one
  (applied_index, digest);
- "durability of acknowledged writes": the final value of every append-only key, read at every
  member, holds every acknowledged append's token exactly once, and only attempted tokens (a
  lost acknowledged write, a write applied twice, or an invented one fails);
- "linearizability per key": `check_history` on the whole recorded history, final reads
  included (so an acknowledged write missing from the end state is also a violation there).

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
from detsim.scenarios.cluster import StoreCluster, view
from detsim.scenarios.workload import Appends

#: Real seconds the linearizability search may take (a run that exhausts it is reported as
#: undecided: a failure to look at, never a pass).
LINEARIZABILITY_TIMEOUT_S: Final = 120.0
MAX_LINES: Final = 10  # failure lines kept per check
TOKEN_END: Final = ";"

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


def node_stops(cluster: StoreCluster, disk_victims: set[str]) -> list[str]:
    lines = []
    for stop in cluster.stops:
        if isinstance(stop.error, AssertionError) or stop.node_id not in disk_victims:
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


def linearizability(events: Sequence[Event]) -> tuple[list[str], CheckResult]:
    result = check_history(events, model="kv", timeout=LINEARIZABILITY_TIMEOUT_S)
    if result.linearizable is True:
        return [], result
    if result.linearizable is None:
        return [f"linearizability undecided: {result.explain()}"], result
    return result.explain().splitlines()[: 4 * MAX_LINES], result
