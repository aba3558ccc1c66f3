"""One PySyncObj node for benchmarks/bench_store.py (run by the benchmark's own virtualenv's
Python, where pysyncobj 0.3.17 is installed; never imported by the project).

    python pysyncobj_node.py SELF_PORT PARTNER_PORT... --seconds S --single-s S1
        --callers N --max-seconds M --batch on|off

Each of the 3 processes runs a SyncObj (PySyncObj's defaults: in-memory log, no journal file,
so no fsync) with a replicated dict. Once a leader is known, the leader's process generates the
load inside itself (PySyncObj's best case, as the store issue asks) and prints one JSON line:
- "single": one caller, `set(key, value, sync=True)` in a loop for `--single-s` seconds;
- "saturation": `--callers` callers, each with one `set` in flight at a time (callbacks; the
  next set is issued from the previous one's callback), for `--seconds` seconds after a 1 s
  warm-up.
Each: ops/s (acknowledged in the window / window) and p50/p99 latency in ms (call -> result).
Followers print nothing and wait. Every process exits by itself after `--max-seconds` or when
its stdin closes (the parent died or is done).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import threading
import time
from typing import Any, Final

from pysyncobj import SyncObj, SyncObjConf  # type: ignore[import-not-found]
from pysyncobj.batteries import ReplDict  # type: ignore[import-not-found]

HOST: Final = "127.0.0.1"
KEYS: Final = 100_000
VALUE: Final = b"x" * 10  # redis-benchmark -d 10
WARMUP_S: Final = 1.0
LEADER_TIMEOUT_S: Final = 30.0
MAX_LATENCIES: Final = 2_000_000  # samples kept per workload (a bound on memory)
MAX_CALLERS: Final = 10_000


def _percentile(sorted_values: list[float], fraction: float) -> float:
    if not sorted_values:
        return float("nan")
    rank = max(0, min(len(sorted_values) - 1, round(fraction * len(sorted_values)) - 1))
    return sorted_values[rank]


def _summary(latencies_s: list[float], window_s: float) -> dict[str, float]:
    ordered = sorted(latencies_s)
    return {
        "ops_per_s": len(ordered) / window_s,
        "p50_ms": _percentile(ordered, 0.50) * 1e3,
        "p99_ms": _percentile(ordered, 0.99) * 1e3,
        "ops": len(ordered),
    }


def single_caller(store: Any, seconds: float) -> dict[str, float]:
    """One caller, one synchronous set at a time."""
    rng = random.Random(1)
    latencies: list[float] = []
    end = time.perf_counter() + seconds
    start = time.perf_counter()
    while time.perf_counter() < end and len(latencies) < MAX_LATENCIES:
        began = time.perf_counter()
        store.set(f"key:{rng.randrange(KEYS)}", VALUE, sync=True)
        latencies.append(time.perf_counter() - began)
    return _summary(latencies, time.perf_counter() - start)


def many_callers(store: Any, callers: int, seconds: float) -> dict[str, float]:
    """`callers` chains of sets, each issuing its next set from the previous one's callback."""
    assert 0 < callers <= MAX_CALLERS
    rng = random.Random(2)
    lock = threading.Lock()
    latencies: list[float] = []
    errors = [0]
    window = {"start": float("inf"), "end": float("inf")}
    stop = threading.Event()

    def issue() -> None:
        began = time.perf_counter()

        def done(result: Any, error: Any) -> None:
            now = time.perf_counter()
            with lock:
                if error:
                    errors[0] += 1
                elif window["start"] <= now <= window["end"] and len(latencies) < MAX_LATENCIES:
                    latencies.append(now - began)
            if not stop.is_set():
                issue()

        store.set(f"key:{rng.randrange(KEYS)}", VALUE, callback=done)

    for _ in range(callers):
        issue()
    time.sleep(WARMUP_S)
    window["start"] = time.perf_counter()
    window["end"] = window["start"] + seconds
    time.sleep(seconds)
    stop.set()
    time.sleep(0.5)  # let the last callbacks land (they no longer count)
    with lock:
        result = _summary(list(latencies), seconds)
    result["errors"] = errors[0]
    return result


def _watch_stdin() -> None:
    """The parent holds our stdin: its end (EOF) means stop."""
    try:
        sys.stdin.buffer.read()
    finally:
        os._exit(0)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("self_port", type=int)
    parser.add_argument("partner_ports", type=int, nargs="+")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--single-s", type=float, default=5.0)
    parser.add_argument("--callers", type=int, default=800)
    parser.add_argument("--max-seconds", type=float, default=120.0)
    parser.add_argument("--batch", choices=("on", "off"), default="off")
    args = parser.parse_args()
    threading.Thread(target=_watch_stdin, daemon=True).start()
    threading.Timer(args.max_seconds, lambda: os._exit(3)).start()

    store = ReplDict()
    partners = [f"{HOST}:{port}" for port in args.partner_ports]
    # batch off: every command is sent at once (a pipe wakes the tick thread), PySyncObj's
    # own benchmarks' setting and its best latency; batch on (its default): appends go out
    # every appendEntriesPeriod (0.1 s), its best throughput with many callers.
    conf = SyncObjConf(appendEntriesUseBatch=args.batch == "on")
    node = SyncObj(f"{HOST}:{args.self_port}", partners, conf=conf, consumers=[store])
    deadline = time.monotonic() + LEADER_TIMEOUT_S
    while node._getLeader() is None:
        if time.monotonic() > deadline:
            print(json.dumps({"error": "no leader"}), flush=True)
            os._exit(1)
        time.sleep(0.05)
    if not node._isLeader():
        while True:  # a follower: serve until stdin closes or --max-seconds
            time.sleep(1.0)
    result = {
        "single": single_caller(store, args.single_s),
        "saturation": many_callers(store, args.callers, args.seconds),
    }
    print(json.dumps(result), flush=True)
    os._exit(0)


if __name__ == "__main__":
    main()
