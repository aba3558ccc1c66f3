"""The Raft core alone: microseconds per `step` (and per Ready cycle), no I/O at all.

    .venv/bin/python benchmarks/bench_raft_core.py [--runs 5] [--count 5000]

A 3-node cluster of `detsim.raft.core.Raft` in memory (n1 elected leader by delivering
messages by hand), then, per kind, `count` realistic messages stepped into one core:

- append (follower): AppendRequest with one 64-byte entry, each following the previous one;
- append ack (leader): AppendResponse from n2 acknowledging one more entry (commit advances);
- propose (leader): `propose(64 bytes)` (appends; `ready()` builds the AppendRequests);
- vote (follower): a VoteRequest of a new term, granted (term and vote change);
- pre-vote (follower): a PreVote request, granted (no state change);
- heartbeat (follower): a Heartbeat of the current term; heartbeat ack (leader): its answer.

Per kind two figures: `step` alone, and the whole cycle a driver runs per input
(step + `ready()` + `advance()`). Medians over the runs of the mean per message.
Timings live here (BENCHMARKS.md), never in tests.
"""

from __future__ import annotations

import argparse
import platform
import random
import statistics
import time
from collections.abc import Callable, Iterator
from typing import Final

from detsim.raft.core import (
    AppendRequest,
    AppendResponse,
    ConfState,
    Entry,
    EntryKind,
    Heartbeat,
    HeartbeatResponse,
    Message,
    VoteRequest,
)
from detsim.raft.core.config import RaftConfig
from detsim.raft.core.raft import Raft, Role

IDS: Final = ("n1", "n2", "n3")
DATA: Final = b"v" * 64
MAX_DELIVERY_ROUNDS: Final = 1000  # `settle` gives up past this (a livelock is a bug)
ACK_EVERY: Final = 32  # propose: the followers acknowledge every this many proposals


def cluster() -> dict[str, Raft]:
    conf = ConfState.of(list(IDS))
    return {
        nid: Raft(RaftConfig(node_id=nid), random.Random(k), initial_conf=conf)
        for k, nid in enumerate(IDS)
    }


def settle(nodes: dict[str, Raft]) -> None:
    """Hand every node's Ready out (as durable at once) and deliver messages until quiet."""
    for _ in range(MAX_DELIVERY_ROUNDS):
        queue: list[Message] = []
        for core in nodes.values():
            if core.has_ready():
                rd = core.ready()
                queue.extend(rd.messages)
                core.advance(rd)
        if not queue:
            return
        for m in queue:
            nodes[m.to].step(m)
    raise RuntimeError(f"not settled after {MAX_DELIVERY_ROUNDS} rounds")


def elected() -> dict[str, Raft]:
    nodes = cluster()
    settle(nodes)
    nodes["n1"].campaign()
    settle(nodes)
    assert nodes["n1"].role is Role.LEADER
    return nodes


def drain(core: Raft) -> None:
    if core.has_ready():
        core.advance(core.ready())


def timed(core: Raft, messages: list[Message]) -> tuple[float, float]:
    """(µs per step, µs per step + ready + advance), stepping `messages` in order."""
    clock = time.perf_counter
    step_s = cycle_s = 0.0
    for m in messages:
        t0 = clock()
        core.step(m)
        t1 = clock()
        if core.has_ready():
            core.advance(core.ready())
        t2 = clock()
        step_s += t1 - t0
        cycle_s += t2 - t0
    return step_s / len(messages) * 1e6, cycle_s / len(messages) * 1e6


def bench_append(count: int) -> tuple[float, float]:
    nodes = elected()
    follower = nodes["n2"]
    term, last = follower.term, follower.last_index
    messages: list[Message] = [
        AppendRequest(
            "n1",
            "n2",
            term,
            last + k,
            term,
            (Entry(term, last + k + 1, EntryKind.NORMAL, DATA),),
            last + k,
        )
        for k in range(count)
    ]
    result = timed(follower, messages)
    assert follower.last_index == last + count
    return result


def bench_append_ack(count: int) -> tuple[float, float]:
    nodes = elected()
    leader = nodes["n1"]
    first = leader.last_index + 1
    for _ in range(count):
        leader.propose(DATA)
    drain(leader)
    messages: list[Message] = [
        AppendResponse("n2", "n1", leader.term, first + k) for k in range(count)
    ]
    result = timed(leader, messages)
    assert leader.commit == first + count - 1
    return result


def bench_propose(count: int) -> tuple[float, float]:
    nodes = elected()
    leader = nodes["n1"]
    clock = time.perf_counter
    step_s = cycle_s = 0.0
    for k in range(count):
        t0 = clock()
        index = leader.propose(DATA)
        t1 = clock()
        drain(leader)
        t2 = clock()
        step_s += t1 - t0
        cycle_s += t2 - t0
        if k % ACK_EVERY == ACK_EVERY - 1:  # keep the pipelines open (not timed)
            for nid in ("n2", "n3"):
                leader.step(AppendResponse(nid, "n1", leader.term, index))
            drain(leader)
    return step_s / count * 1e6, cycle_s / count * 1e6


def bench_vote(count: int) -> tuple[float, float]:
    follower = cluster()["n2"]
    drain(follower)
    big = 1 << 40
    messages: list[Message] = [
        VoteRequest("n3", "n2", follower.term + 1 + k, big, follower.term) for k in range(count)
    ]
    result = timed(follower, messages)
    assert follower.vote == "n3"
    return result


def bench_prevote(count: int) -> tuple[float, float]:
    follower = cluster()["n2"]
    drain(follower)
    big = 1 << 40
    m = VoteRequest("n3", "n2", follower.term + 1, big, follower.term, pre=True)
    result = timed(follower, [m] * count)
    assert follower.vote is None  # a pre-vote changes nothing
    return result


def bench_heartbeat(count: int) -> tuple[float, float]:
    nodes = elected()
    follower = nodes["n2"]
    m = Heartbeat("n1", "n2", follower.term, follower.commit)
    return timed(follower, [m] * count)


def bench_heartbeat_ack(count: int) -> tuple[float, float]:
    nodes = elected()
    leader = nodes["n1"]
    m = HeartbeatResponse("n2", "n1", leader.term)
    return timed(leader, [m] * count)


KINDS: Final[dict[str, Callable[[int], tuple[float, float]]]] = {
    "append (follower)": bench_append,
    "append ack (leader, commits)": bench_append_ack,
    "propose (leader)": bench_propose,
    "vote, new term (follower)": bench_vote,
    "pre-vote (follower)": bench_prevote,
    "heartbeat (follower)": bench_heartbeat,
    "heartbeat ack (leader)": bench_heartbeat_ack,
}


def rows(runs: int, count: int) -> Iterator[tuple[str, float, float]]:
    for name, bench in KINDS.items():
        samples = [bench(count) for _ in range(runs)]
        yield (
            name,
            statistics.median(s[0] for s in samples),
            statistics.median(s[1] for s in samples),
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--count", type=int, default=5000, help="messages per kind and run")
    args = parser.parse_args()
    if args.runs < 1 or not 1 <= args.count <= 9000:  # under max_uncommitted_entries
        parser.error("need runs >= 1 and 1 <= count <= 9000")
    print(f"Python {platform.python_version()}, median of {args.runs} runs x {args.count}")
    print("| message | µs per step | µs per step + ready + advance |")
    print("|---|---|---|")
    for name, step_us, cycle_us in rows(args.runs, args.count):
        print(f"| {name} | {step_us:.1f} | {cycle_us:.1f} |")


if __name__ == "__main__":
    main()
