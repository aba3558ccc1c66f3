"""Benchmark of the linearizability checker (detsim.check).

Runs, in one process: porcupine's whole corpus (102 Jepsen etcd logs and 6 kv histories from
../shared/histories/porcupine), each file checked RUNS times, reporting the median per file and
in total; then a generated history of 100,000 ops over 1,000 keys from a realistic workload
(50 clients, random linearization points, 1% NOLEADER fails, 1% timeouts), parse and check.
Parsing is not timed for the corpus (porcupine's benchmarks parse before the timer too).
With --search: the search alone on every key of the corpus (kv/c50-bad.txt left out: one of
its keys needs millions of configurations, and its verdict comes from another key), run to
its end, not stopped at the first violation: the configurations cached (the search's work,
independent of the machine's load) and the minimum over RUNS of the CPU time (process time).
Run it with PYTHONPATH=/tmp/old/src for an older tree (before/after).
With --timeouts N: N generated histories (300 ops on 2 keys, 30 clients, unique put/append
values as the store workloads write them, 30% of the completions lost: info), each checked
with a timeout of --limit-s seconds: how many are decided, the time, the peak RSS.
With --pathological: the histories that made the search grow without bound (issue 9 note:
157 timed-out ops on 3 keys, 6 GB), each checked (verdict only) in a fresh interpreter that
reports its verdict, the configurations held, the time and its peak RSS, or gives up after
--limit-s seconds and reports how far it grew; --src DIR runs them on another tree's src
(e.g. `git archive 1b47d39 src | tar -x -C /tmp/old`, then --src /tmp/old/src: before).
With --command: the `detsim check` command on each corpus set instead, as a user runs it, in
both modes: `--json` (verdicts only) and the human-readable output (every violation explained);
median over RUNS of the whole command's CPU time (user + system: what it costs, little moved by
other load on the machine), its wall time, and the seconds it reports for its files (parse +
check, wall, summed).

    .venv/bin/python benchmarks/bench_check.py [--runs 5] [--per-file] [--command]
    .venv/bin/python benchmarks/bench_check.py --pathological [--src DIR] [--limit-s 60]
    .venv/bin/python benchmarks/bench_check.py --search [--runs 7]
    .venv/bin/python benchmarks/bench_check.py --timeouts 60 [--limit-s 10]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import random
import re
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

from detsim.check import Event, check_history, load, read_history, write_history

CORPUS = Path(__file__).resolve().parents[1].parent / "shared" / "histories" / "porcupine"
PORCUPINE_ETCD_S = 0.5
PORCUPINE_KV_S = 4.0


def corpus_files() -> list[tuple[str, bool]]:
    rows = (CORPUS / "EXPECTED.tsv").read_text().splitlines()[1:]
    out = []
    for row in rows:
        name, verdict = row.split("\t")[:2]
        if verdict in ("true", "false"):
            out.append((name, verdict == "true"))
    return out


def bench_corpus(runs: int, explain: bool, per_file: bool) -> dict[str, float]:
    medians: dict[str, float] = {}
    for name, expected in corpus_files():
        loaded = load(CORPUS / name)
        times = []
        for _ in range(runs):
            started = time.perf_counter()
            result = check_history(loaded.ops, model=loaded.model, explain=explain)
            times.append(time.perf_counter() - started)
            assert result.linearizable is expected, name
        medians[name] = statistics.median(times)
        if per_file:
            print(f"  {name:24s} {medians[name] * 1000:8.2f} ms  ({len(loaded.ops)} ops)")
    return medians


def realistic_history(
    n_ops: int,
    n_keys: int,
    clients: int,
    seed: int,
    info_p: float = 0.01,
    tokens: bool = False,
) -> list[Event]:
    """Clients with overlapping calls on a kv store; each op takes effect at a random point.

    `info_p`: the share of completions lost (info); `tokens`: put and append values unique
    (`<op number>;`, as the store workloads' are) instead of drawn from 100."""
    rng = random.Random(seed)
    store: dict[str, str] = {}
    events: list[Event] = []
    pending: dict[int, list[object]] = {}  # process -> [f, key, value, phase, output]
    next_process, started = clients, 0
    idle = list(range(clients))

    def emit(p: int, etype: str, f: str, key: str, value: object, error: str | None) -> None:
        events.append(Event(len(events), len(events), p, etype, f, key, value, error))

    while started < n_ops or pending:
        if idle and started < n_ops and rng.random() < 0.5:
            p = idle.pop(rng.randrange(len(idle)))
            f = rng.choices(["get", "put", "append", "cas", "incr"], [50, 20, 15, 10, 5])[0]
            key = f"k{rng.randrange(n_keys)}"
            value: object = None
            if f in ("put", "append"):
                drawn = rng.randrange(100)
                value = f"{started};" if tokens else str(drawn)
            elif f == "cas":
                value = [
                    store.get(key, "0") if rng.random() < 0.7 else "x",
                    str(rng.randrange(100)),
                ]
            emit(p, "invoke", f, key, value, None)
            pending[p] = [f, key, value, "invoked", None]
            started += 1
            continue
        if not pending:
            continue
        p = rng.choice(list(pending))
        f, key, value, phase, out = pending[p]
        if phase == "invoked":
            roll = rng.random()
            if roll < 0.01:
                emit(p, "fail", f, key, None, "NOLEADER")  # type: ignore[arg-type]
                del pending[p]
                idle.append(p)
                continue
            pending[p][3:] = _apply(store, f, key, value)  # type: ignore[arg-type]
            continue
        del pending[p]
        if rng.random() < info_p:
            emit(p, "info", f, key, None, "timeout")  # type: ignore[arg-type]
            idle.append(next_process)  # a fresh process takes the slot
            next_process += 1
        elif phase == "refused":
            emit(p, "fail", f, key, None, "ERR value is not an integer")  # type: ignore[arg-type]
            idle.append(p)
        elif phase == "mismatch":
            emit(p, "fail", f, key, None, "cas-mismatch")  # type: ignore[arg-type]
            idle.append(p)
        else:
            emit(p, "ok", f, key, out, None)  # type: ignore[arg-type]
            idle.append(p)
    return events


def _apply(store: dict[str, str], f: str, key: str, value: object) -> list[object]:
    cur = store.get(key)
    if f == "get":
        return ["applied", cur]
    if f == "put":
        store[key] = str(value)
    elif f == "append":
        store[key] = str(value) if cur is None else cur + str(value)
        return ["applied", len(store[key].encode())]
    elif f == "incr":
        if cur is not None and not (cur.isdigit() and str(int(cur)) == cur):
            return ["refused", None]  # the store replies -ERR: not applied
        store[key] = str(int(cur or "0") + 1)
        return ["applied", int(store[key])]
    elif f == "cas":
        expected, new = value  # type: ignore[misc]
        if cur != expected:
            return ["mismatch", None]
        store[key] = new
    return ["applied", None]


def bench_generated(runs: int) -> tuple[float, float, int]:
    events = realistic_history(100_000, 1_000, clients=50, seed=1)
    buf = io.StringIO()
    write_history(events, buf)
    text = buf.getvalue()
    parse, check = [], []
    for _ in range(runs):
        started = time.perf_counter()
        parsed = read_history(io.StringIO(text))
        parse.append(time.perf_counter() - started)
        started = time.perf_counter()
        result = check_history(parsed)
        check.append(time.perf_counter() - started)
        assert result.linearizable is True, result.explain()
    return statistics.median(parse), statistics.median(check), result.ops


def detsim_command() -> list[str]:
    script = Path(sys.executable).with_name("detsim")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from detsim.cli import main; main()"]


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def command_seconds(args: list[str], as_json: bool) -> tuple[float, float, float]:
    """(CPU seconds and wall seconds of the whole command, seconds it reports for its files)."""
    cpu_before = _children_cpu_s()
    started = time.perf_counter()
    done = subprocess.run(
        [*detsim_command(), "check", *(["--json"] if as_json else []), *args],
        capture_output=True,
        text=True,
        cwd=CORPUS,
        check=False,
    )
    wall = time.perf_counter() - started
    cpu = _children_cpu_s() - cpu_before
    assert done.returncode in (0, 1), done.stderr
    if as_json:
        reported = sum(json.loads(line)["seconds"] for line in done.stdout.splitlines())
    else:
        reported = sum(float(s) for s in re.findall(r"ops, ([0-9.]+) s\]", done.stdout))
    return cpu, wall, reported


def bench_command(runs: int) -> None:
    names = [name for name, _ in corpus_files()]
    sets = {
        "etcd 102 logs": ([n for n in names if n.startswith("jepsen/")], PORCUPINE_ETCD_S),
        "kv 6 histories": ([n for n in names if n.startswith("kv/")], PORCUPINE_KV_S),
    }
    for label, (files, porcupine_s) in sets.items():
        for as_json, mode in ((True, "check --json (verdicts)"), (False, "check (explained)")):
            samples = [command_seconds(files, as_json) for _ in range(runs)]
            columns = zip(*samples, strict=True)
            cpu, wall, reported = (statistics.median(column) for column in columns)
            print(
                f"command, {label}, {mode}: cpu {cpu:.3f} s, wall {wall:.3f} s, "
                f"files {reported:.3f} s (porcupine {porcupine_s} s)"
            )


# Each case: (label, f, keys, writes a key, observed, mixed), histories built as in
# tests/check/helpers_check.concurrent_info_writes: per key (mixed: a put of "" first, so the
# key is not append-only), n concurrent writes that all time out, (observed) a read of each
# value in reverse order, then a read of a value never written (not linearizable).
PATHOLOGICAL = (
    ("3 keys x 52 timed-out puts, bad read (the issue's 157 ops)", "put", 3, 52, False, True),
    ("3 keys x 52 timed-out appends (append-only keys), bad read", "append", 3, 52, False, False),
    ("2 keys x 9 timed-out appends read in reverse order, bad read", "append", 2, 9, True, False),
    ("3 keys x 40 timed-out appends after a put, bad read", "append", 3, 40, False, True),
)

PATHOLOGICAL_CHILD = """
import json, os, resource, sys, threading, time
from detsim.check import Event, check_history

f, keys, n, observed, mixed, limit_s = json.loads(sys.argv[1])
events = []
def add(p, etype, key, value, out=None, fn=None):
    v = out if etype == "ok" else value
    events.append(Event(len(events), len(events), p, etype, fn or f, key, v, None))
p = 0
for k in range(keys):
    key = f"k{k}"
    if mixed:
        add(p, "invoke", key, "", fn="put"); add(p, "ok", key, None, fn="put"); p += 1
    first = p
    for i in range(n):
        add(p, "invoke", key, f"{i};"); p += 1
    for q in range(first, p):
        add(q, "info", key, None)
    seen = ""
    for i in reversed(range(n)) if observed else ():
        seen = seen + f"{i};" if f == "append" else f"{i};"
        add(p, "invoke", key, None, fn="get"); add(p, "ok", key, None, seen, fn="get"); p += 1
    add(p, "invoke", key, None, fn="get"); add(p, "ok", key, None, "never", fn="get"); p += 1

def rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

def give_up():
    print(json.dumps({"verdict": "gave up", "seconds": limit_s, "peak_rss_mb": rss_mb()}))
    sys.stdout.flush()
    os._exit(0)

timer = threading.Timer(limit_s, give_up)
timer.daemon = True
timer.start()
started = time.perf_counter()
result = check_history(events, explain=False)
seconds = time.perf_counter() - started
print(json.dumps({"verdict": result.linearizable, "reason": getattr(result, "unknown_reason", None),
                  "configs": getattr(result, "configs", None),
                  "search_mib": getattr(result, "search_bytes", 0) / (1 << 20),
                  "seconds": seconds, "peak_rss_mb": rss_mb()}))
"""


def bench_pathological(runs: int, src: str | None, limit_s: float) -> None:
    env = dict(os.environ)
    if src is not None:
        env["PYTHONPATH"] = src
    for label, f, keys, n, observed, mixed in PATHOLOGICAL:
        samples = []
        for _ in range(runs):
            spec = json.dumps([f, keys, n, observed, mixed, limit_s])
            done = subprocess.run(
                [sys.executable, "-c", PATHOLOGICAL_CHILD, spec],
                capture_output=True,
                text=True,
                env=env,
                check=True,
            )
            samples.append(json.loads(done.stdout))
        seconds = statistics.median(s["seconds"] for s in samples)
        rss = statistics.median(s["peak_rss_mb"] for s in samples)
        first = samples[0]
        print(
            f"{label}: verdict {first['verdict']} ({first.get('reason')}), configs "
            f"{first.get('configs')} (~{first.get('search_mib', 0):.0f} MiB), {seconds:.2f} s, "
            f"peak RSS {rss:.0f} MB"
        )


def bench_timeouts(seeds: int, timeout_s: float) -> None:
    """Histories with many lost completions: decided, unknown, time, peak RSS."""
    verdicts: dict[bool | None, int] = {True: 0, False: 0, None: 0}
    reasons: list[str] = []
    seconds = []
    for seed in range(seeds):
        events = realistic_history(300, 2, clients=30, seed=seed, info_p=0.3, tokens=True)
        started = time.perf_counter()
        result = check_history(events, timeout=timeout_s, explain=False)
        seconds.append(time.perf_counter() - started)
        verdicts[result.linearizable] += 1
        if result.linearizable is None:
            reasons.append(str(getattr(result, "unknown_reason", "timeout")))
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"timeouts: {seeds} histories of 300 ops, 2 keys, 30% lost: {verdicts[True]} "
        f"linearizable, {verdicts[False]} not, {verdicts[None]} unknown {reasons}; "
        f"{sum(seconds):.1f} s "
        f"in all, median {statistics.median(seconds):.3f} s, slowest {max(seconds):.1f} s; "
        f"peak RSS {rss_mb:.0f} MB"
    )


def bench_search(runs: int) -> None:
    from detsim.check import checker, search
    from detsim.check.models import State, get_model

    problems: dict[str, list[tuple[search.Problem, State]]] = {"jepsen": [], "kv": []}
    for name, _ in corpus_files():
        if name == "kv/c50-bad.txt":
            continue
        loaded = load(CORPUS / name)
        spec = get_model(loaded.model)
        for entries in checker._split(loaded.ops, spec).values():
            problem = search.build([op for op, _ in entries], [s for _, s in entries])
            problems[name.split("/")[0]].append((problem, spec.initial))
    for kind, items in problems.items():
        configs, cpu = 0, float("inf")
        for _ in range(runs):
            started = time.process_time()
            configs = 0
            for problem, initial in items:
                cache: set[tuple[int, object]] = set()
                search.run(search.search(problem, initial, cache))
                configs += len(cache)
            cpu = min(cpu, time.process_time() - started)
        print(f"search, {kind} ({len(items)} keys): {configs} configurations, cpu {cpu:.3f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--per-file", action="store_true")
    parser.add_argument("--command", action="store_true", help="time the detsim check command")
    parser.add_argument("--pathological", action="store_true", help="the unbounded histories")
    parser.add_argument("--search", action="store_true", help="the corpus keys' searches")
    parser.add_argument("--timeouts", type=int, metavar="N", help="N histories, 30%% lost")
    parser.add_argument("--src", help="with --pathological: the src directory to import from")
    parser.add_argument("--limit-s", type=float, default=60.0, help="with --pathological")
    args = parser.parse_args()
    print(f"python {platform.python_version()} on {platform.machine()}, {args.runs} runs each")
    if args.pathological:
        bench_pathological(args.runs, args.src, args.limit_s)
        return
    if args.search:
        bench_search(args.runs)
        return
    if args.timeouts:
        bench_timeouts(args.timeouts, args.limit_s)
        return
    if args.command:
        bench_command(args.runs)
        return
    for explain in (False, True):
        label = "verdict + counterexample" if explain else "verdict only"
        medians = bench_corpus(args.runs, explain, args.per_file and not explain)
        etcd = sum(t for n, t in medians.items() if n.startswith("jepsen/"))
        kv = sum(t for n, t in medians.items() if n.startswith("kv/"))
        slowest = max(medians, key=lambda n: medians[n])
        print(
            f"corpus, {label}: etcd 102 logs {etcd:.3f} s (porcupine {PORCUPINE_ETCD_S} s, "
            f"x{etcd / PORCUPINE_ETCD_S:.2f}); kv 6 histories {kv:.3f} s "
            f"(porcupine {PORCUPINE_KV_S} s, x{kv / PORCUPINE_KV_S:.2f}); "
            f"slowest {slowest} {medians[slowest] * 1000:.1f} ms"
        )
    parse_s, check_s, ops = bench_generated(args.runs)
    print(f"generated: {ops} ops on 1000 keys: read {parse_s:.3f} s, check {check_s:.3f} s")


if __name__ == "__main__":
    main()
