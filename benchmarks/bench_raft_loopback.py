"""Raft on real loopback: 3 OS processes, real TCP transport, real disks with fsync on.

    .venv/bin/python benchmarks/bench_raft_loopback.py [--runs 3] [--seconds 5]
        [--concurrency 1,64,256] [--json]
    diagnostics: [--profile FILE.pstats] [--py-spy PATH-TO-py-spy] [--no-fsync]
        [--lever inline-fsync] [--lever step-during-fsync]

Each run starts a fresh 3-node cluster: three child processes (this same file with `--child`),
each a `detsim.raft.RaftNode` with a `MemoryKV`, the real transport (with a cluster secret) on
127.0.0.1 and the real storage in its own temp data dir. The parent finds the leader (status of
every node) and asks it to generate the load *inside its own process* (as the store issue
compares with PySyncObj): `concurrency` tasks, each proposing a 64-byte `set` over 1,000 keys,
one proposal at a time (concurrency 1 is latency-bound; 64 and 256 exercise batching: every
proposal that arrives while a Ready is handled joins the next one, one fsync for them all).
Measured per workload, after a warm-up: committed entries per second (proposals acknowledged
in the window / window), p50/p99 commit latency (propose() called -> its future resolved,
i.e. applied on the leader), entries per real fsync, and where each node's wall time goes:
CPU (all threads), inside Ready handling, waiting for storage.sync() (the fsync, off the loop
in a worker thread), stepping the core (burst). Medians over the runs are printed.

Diagnostics (run them as separate invocations: they slow the leader down):
- `--profile FILE`: cProfile of the leader during the highest-concurrency workload of the
  last run (the text summary is printed).
- `--py-spy BIN`: py-spy samples the leader's process (--idle, every thread) during each
  workload of the last run; the main thread's samples are summarized by category.
- `--no-fsync`: os.fsync is a no-op in the children (what fsync costs).
- `--lever NAME`: a patch of the children that measures what a change to the driver or the
  storage would buy, before anyone makes it (see LEVERS). The former `send-before-persist` and
  `commit-without-fsync` levers are now the driver's behaviour (BENCHMARKS.md, "Raft on real
  loopback"); `no-send-before-persist` and `fsync-commit` undo one half each (attribution).
None of them is a headline figure.

Bounds: every child exits by itself after `--max-seconds` (and when its stdin closes, i.e. the
parent died); every request to a child times out (`REPLY_TIMEOUT_S`); the parent kills its
children and removes every temp dir in `finally`, even on error or Ctrl-C. Loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import io
import json
import os
import platform
import pstats
import shutil
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from typing import Any, Final

NODE_IDS: Final = ("n1", "n2", "n3")
HOST: Final = "127.0.0.1"
SECRET: Final = b"bench-raft-loopback"
KEYS: Final = 1000
VALUE_BYTES: Final = 64
REPLY_TIMEOUT_S: Final = 120.0  # one request to a child (a load is at most warm-up + seconds)
START_TIMEOUT_S: Final = 30.0  # a child reports ready / a leader is elected
STOP_TIMEOUT_S: Final = 10.0  # a child exits after its stdin closes, else it is killed
MAX_LATENCIES: Final = 2_000_000  # latency samples kept by one load (a bound on memory)
MAX_IN_FLIGHT: Final = 4096  # the largest concurrency accepted
FSYNC_PROBE_COUNT: Final = 200
MAX_REPLY_BYTES: Final = 1024 * 1024  # one JSON line from a child (a cProfile text included)


# =============================================================================================
# Child: one Raft node, commands as JSON lines on stdin, answers on stdout


_FSYNCS: Final = [0]  # os.fsync calls in this process (every thread)


def _percentile(sorted_values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile of an already sorted list."""
    if not sorted_values:
        return float("nan")
    rank = max(0, min(len(sorted_values) - 1, round(fraction * len(sorted_values)) - 1))
    return sorted_values[rank]


async def _load(node: Any, timers: Timers, request: dict[str, Any]) -> dict[str, Any]:
    """`concurrency` proposers for warm-up + seconds; counts what completes after the warm-up."""
    from detsim.raft import RaftError, encode_command

    concurrency = int(request["concurrency"])
    assert 1 <= concurrency <= MAX_IN_FLIGHT, concurrency
    warmup_s, seconds = float(request["warmup_s"]), float(request["seconds"])
    value = b"v" * VALUE_BYTES
    commands = [encode_command("set", b"key-%06d" % k, value) for k in range(KEYS)]
    latencies_s: list[float] = []
    errors: dict[str, int] = {}
    clock = time.perf_counter
    start = clock()
    window_start, window_end = start + warmup_s, start + warmup_s + seconds
    stats_before: dict[str, int] = {}
    times_before: dict[str, float] = {}
    profiler = cProfile.Profile() if request.get("profile") else None

    async def proposer(worker: int) -> None:
        k = worker
        while (t0 := clock()) < window_end:
            try:
                await node.propose(commands[k % KEYS])
            except RaftError as exc:
                errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
                await asyncio.sleep(0.01)  # no leader, or leadership moved: back off a little
                continue
            if t0 >= window_start and len(latencies_s) < MAX_LATENCIES:
                latencies_s.append(clock() - t0)
            k += concurrency

    async def mark_window() -> None:
        nonlocal stats_before, times_before
        await asyncio.sleep(max(0.0, window_start - clock()))
        stats_before = _driver_stats(node)
        times_before = timers.snapshot()
        if profiler is not None:
            profiler.enable()

    marker = asyncio.ensure_future(mark_window())
    await asyncio.gather(*(proposer(w) for w in range(concurrency)))
    end = clock()
    if profiler is not None:
        profiler.disable()
    await marker
    shares = time_shares(times_before, timers.snapshot())
    stats_after = _driver_stats(node)
    delta = {k: stats_after[k] - stats_before.get(k, 0) for k in stats_after}
    # Proposals started in the window; the last ones finish a little after it (<= one latency).
    elapsed_s = end - window_start
    latencies_s.sort()
    result: dict[str, Any] = {
        "concurrency": concurrency,
        "completed": len(latencies_s),
        "elapsed_s": elapsed_s,
        "entries_per_s": len(latencies_s) / elapsed_s,
        "p50_ms": _percentile(latencies_s, 0.50) * 1e3,
        "p99_ms": _percentile(latencies_s, 0.99) * 1e3,
        "mean_ms": statistics.fmean(latencies_s) * 1e3 if latencies_s else float("nan"),
        "errors": errors,
        "leader_cpu_per_wall_s": shares["cpu_s"],
        "leader_shares": shares,
        "driver": delta,
        "entries_per_sync": delta["entries_applied"] / max(1, delta["syncs"]),
        "entries_per_fsync": len(latencies_s) / max(1.0, shares["fsyncs"] * elapsed_s),
    }
    if profiler is not None:
        path = str(request["profile"])
        profiler.dump_stats(path)
        out = io.StringIO()
        pstats.Stats(path, stream=out).sort_stats("tottime").print_stats(30)
        result["profile_text"] = out.getvalue()
    return result


class Timers:
    """Cumulative wall seconds inside the driver's phases, by wrapping (benchmark-only) the
    node's private `_handle_ready` and `_burst` and its storage's `sync`: where a node's time
    goes. Ready = persist (sync: the fsync wait included) + send + apply + advance."""

    def __init__(self, node: Any) -> None:
        self.ready_s = self.sync_s = self.burst_s = 0.0
        clock = time.perf_counter
        storage, handle_ready, burst = node._storage, node._handle_ready, node._burst
        sync = storage.sync

        async def timed_sync() -> None:
            t0 = clock()
            try:
                await sync()
            finally:
                self.sync_s += clock() - t0

        async def timed_ready(rd: Any) -> None:
            t0 = clock()
            try:
                await handle_ready(rd)
            finally:
                self.ready_s += clock() - t0

        def timed_burst() -> None:
            t0 = clock()
            try:
                burst()
            finally:
                self.burst_s += clock() - t0

        storage.sync, node._handle_ready, node._burst = timed_sync, timed_ready, timed_burst

    def snapshot(self) -> dict[str, float]:
        return {
            "wall_s": time.perf_counter(),
            "cpu_s": time.process_time(),
            "ready_s": self.ready_s,
            "sync_s": self.sync_s,
            "burst_s": self.burst_s,
            "fsyncs": float(_FSYNCS[0]),
            "runq_s": _main_thread_runqueue_s(),
        }


def _main_thread_runqueue_s() -> float:
    """Seconds the main thread spent runnable but waiting for a CPU (Linux schedstat; 0.0
    where it is missing): on a busy machine, the part of "idle" that is not idle."""
    try:
        with open(f"/proc/self/task/{os.getpid()}/schedstat") as f:
            return int(f.read().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return 0.0


def time_shares(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """Per wall second between two `Timers.snapshot()`s: CPU, Ready, fsync wait, burst."""
    wall = after["wall_s"] - before["wall_s"]
    keys = ("cpu_s", "ready_s", "sync_s", "burst_s", "fsyncs", "runq_s")
    return {k: (after[k] - before[k]) / wall for k in keys}


def _driver_stats(node: Any) -> dict[str, int]:
    s = node.stats
    return {
        "readies": s.readies,
        "syncs": s.syncs,
        "messages_stepped": s.messages_stepped,
        "entries_applied": s.entries_applied,
        "snapshots_taken": s.snapshots_taken,
        "inbox_dropped": s.inbox_dropped,
    }


async def _child_main(args: argparse.Namespace) -> None:
    from detsim.raft import MemoryKV, RaftNode, RaftNodeConfig

    real_fsync = os.fsync

    def counted_fsync(fd: Any) -> None:
        _FSYNCS[0] += 1  # under the GIL; approximate is fine for a rate
        if not args.no_fsync:  # --no-fsync: diagnostic only, what fsync costs
            real_fsync(fd)

    os.fsync = counted_fsync  # every os.fsync of detsim.fs (looked up at call time)
    for lever in args.lever:
        LEVERS[lever]()
    ports = [int(p) for p in args.ports.split(",")]
    addresses = {nid: (HOST, port) for nid, port in zip(NODE_IDS, ports, strict=True)}
    me = args.child
    peers = {nid: addr for nid, addr in addresses.items() if nid != me}
    config = RaftNodeConfig(me, addresses[me], peers, args.data_dir, secret=SECRET)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)

    def reply(value: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(value) + "\n")
        sys.stdout.flush()

    async with RaftNode(config, MemoryKV()) as node:
        timers = Timers(node)
        reply({"event": "ready", "pid": os.getpid()})
        while line := await reader.readline():  # EOF: the parent is gone or done
            request = json.loads(line)
            cmd = request["cmd"]
            if cmd == "status":
                reply({**node.status(), "driver": _driver_stats(node)})
            elif cmd == "load":
                reply(await _load(node, timers, request))
            elif cmd == "timers":
                reply(timers.snapshot())
            elif cmd == "quit":
                break
            else:
                reply({"error": f"unknown command {cmd!r}"})


def _lever_inline_fsync() -> None:
    """fsync on the event loop's thread (blocking it) instead of a worker thread: what the
    `asyncio.to_thread` hand-off costs per sync (wake a thread, GIL, self-pipe back)."""
    from detsim.fs._real import RealFile

    async def fsync_inline(self: RealFile) -> None:
        self.fsync()

    RealFile.fsync_async = fsync_inline  # type: ignore[method-assign]


def _lever_step_during_fsync() -> None:
    """A leader keeps stepping the core (acks, proposals, ticks) while its Ready's persist
    step waits for the fsync, as the Ready contract allows between ready() and advance(); what
    it produces joins the next Ready (etcd's asynchronous storage writes, in spirit). Leader
    only: a follower's log may not change under its own persist step."""
    from detsim.raft.core.raft import Role
    from detsim.raft.driver import RaftNode

    persist = RaftNode._persist

    async def persist_stepping(self: RaftNode, rd: Any) -> None:
        if self.core.role is not Role.LEADER:
            await persist(self, rd)
            return
        task = asyncio.ensure_future(persist(self, rd))
        while not task.done():
            woken = asyncio.ensure_future(self._wake.wait())
            await asyncio.wait([task, woken], return_when=asyncio.FIRST_COMPLETED)
            woken.cancel()
            if self._wake.is_set() and self.core.role is Role.LEADER:
                self._wake.clear()
                self._burst()  # the loop's own burst after this Ready catches the rest
        await task

    RaftNode._persist = persist_stepping  # type: ignore[method-assign]


def _lever_no_send_before_persist() -> None:
    """Undo one half of 721859c, to attribute its gain: every message of a Ready waits for
    its persist (the leader's appends too), as before."""
    from detsim.raft.core.raft import Raft

    def order_messages(self: Raft, hard: Any) -> tuple[tuple[Any, ...], int]:
        return tuple(self._messages), 0

    Raft._order_messages = order_messages  # type: ignore[method-assign]


def _lever_fsync_commit() -> None:
    """Undo the other half of 721859c: a hard state that only moves the commit index is
    fsynced again, as before."""
    from detsim.raft.driver import RaftNode

    def must_sync(self: RaftNode, rd: Any) -> bool:
        return rd.hard_state is not None

    RaftNode._term_or_vote_moves = must_sync  # type: ignore[method-assign]


#: Diagnostic patches of the children (`--lever NAME`): what a change would buy (or what a
#: part of a change bought), measured before anyone makes it. Never the headline figures.
LEVERS: Final = {
    "inline-fsync": _lever_inline_fsync,
    "step-during-fsync": _lever_step_during_fsync,
    "no-send-before-persist": _lever_no_send_before_persist,
    "fsync-commit": _lever_fsync_commit,
}


def child(args: argparse.Namespace) -> None:
    async def bounded() -> None:
        # The child stops by itself: a parent that hangs or dies never leaves it running.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(_child_main(args), args.max_seconds)

    asyncio.run(bounded())


# =============================================================================================
# Parent: start the cluster, find the leader, run the loads, clean up


class Child:
    def __init__(self, node_id: str, proc: asyncio.subprocess.Process, log_path: str) -> None:
        self.node_id = node_id
        self.proc = proc
        self.log_path = log_path
        self.pid = proc.pid

    async def request(self, value: dict[str, Any], timeout_s: float = REPLY_TIMEOUT_S) -> Any:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write((json.dumps(value) + "\n").encode())
        await self.proc.stdin.drain()
        return await self.read(timeout_s)

    async def read(self, timeout_s: float) -> Any:
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), timeout_s)
        if not line:
            raise RuntimeError(f"{self.node_id} exited: {self.log_tail()}")
        return json.loads(line)

    def log_tail(self) -> str:
        with contextlib.suppress(OSError), open(self.log_path, errors="replace") as f:
            return f.read()[-2000:]
        return "(no log)"

    async def stop(self) -> None:
        """Close stdin (the child exits its loop and shuts the node down), else kill it."""
        if self.proc.returncode is not None:
            return
        if self.proc.stdin is not None:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
        try:
            await asyncio.wait_for(self.proc.wait(), STOP_TIMEOUT_S)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()


def free_ports(count: int) -> list[int]:
    socks = [socket.socket() for _ in range(count)]
    try:
        for s in socks:
            s.bind((HOST, 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


async def start_cluster(root: str, args: argparse.Namespace, max_s: float) -> list[Child]:
    ports = ",".join(str(p) for p in free_ports(len(NODE_IDS)))
    children: list[Child] = []
    for nid in NODE_IDS:
        data_dir = os.path.join(root, nid)
        log_path = os.path.join(root, f"{nid}.log")
        argv = [__file__, "--child", nid, "--ports", ports, "--data-dir", data_dir]
        argv += ["--max-seconds", str(max_s)] + (["--no-fsync"] if args.no_fsync else [])
        for lever in args.lever:
            argv += ["--lever", lever]
        with open(log_path, "wb") as log:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                *argv,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=log,
                limit=MAX_REPLY_BYTES,
            )
        children.append(Child(nid, proc, log_path))
    for c in children:
        ready = await c.read(START_TIMEOUT_S)
        assert ready.get("event") == "ready", ready
    return children


async def find_leader(children: list[Child]) -> Child:
    """The node every node agrees leads (polled until START_TIMEOUT_S)."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        statuses = [await c.request({"cmd": "status"}) for c in children]
        leaders = {s["leader"] for s in statuses}
        roles = {s["id"]: s["role"] for s in statuses}
        if len(leaders) == 1 and (lead := leaders.pop()) and roles.get(lead) == "leader":
            return next(c for c in children if c.node_id == lead)
        await asyncio.sleep(0.2)
    raise RuntimeError(f"no leader within {START_TIMEOUT_S} s")


async def one_run(args: argparse.Namespace, run: int, profiling: bool) -> list[dict[str, Any]]:
    """A fresh cluster, every workload once; the profilers asked for run only if `profiling`."""
    root = tempfile.mkdtemp(prefix="bench-raft-")
    per_load_s = args.warmup + args.seconds
    max_s = START_TIMEOUT_S * 2 + len(args.concurrency) * (per_load_s + REPLY_TIMEOUT_S)
    children: list[Child] = []
    try:
        children = await start_cluster(root, args, max_s)
        leader = await find_leader(children)
        results = []
        for c in args.concurrency:
            last = c == max(args.concurrency)
            request = {"cmd": "load", "concurrency": c, "warmup_s": args.warmup}
            cprofile = args.profile if profiling and last else None
            request |= {"seconds": args.seconds, "profile": cprofile}
            spy = f"{args.py_spy_out}.c{c}" if args.py_spy and profiling else None
            result = await run_load(children, leader, request, args, spy)
            result["leader"] = leader.node_id
            result["run"] = run
            results.append(result)
            if not args.json:
                print(_row(result), flush=True)
        return results
    except BaseException:
        for c in children:
            print(f"--- {c.node_id} log tail ---\n{c.log_tail()}", file=sys.stderr)
        raise
    finally:
        await asyncio.gather(*(c.stop() for c in children), return_exceptions=True)
        shutil.rmtree(root, ignore_errors=True)


async def run_load(
    children: list[Child],
    leader: Child,
    request: dict[str, Any],
    args: argparse.Namespace,
    py_spy_out: str | None,
) -> dict[str, Any]:
    """One load on the leader; the followers' time shares over (about) the same window; and
    optionally py-spy sampling the leader's process (every thread, idle ones too)."""
    followers = [c for c in children if c is not leader]
    load = asyncio.ensure_future(leader.request(request))
    await asyncio.sleep(args.warmup)
    before = [await f.request({"cmd": "timers"}) for f in followers]
    spy = None
    if py_spy_out is not None:
        spy = await asyncio.create_subprocess_exec(
            *[args.py_spy, "record", "--pid", str(leader.pid), "--duration"],
            *[str(max(1, int(args.seconds) - 1)), "--rate", "250", "--idle", "--threads"],
            *["--format", "raw", "--output", py_spy_out],
            stdout=asyncio.subprocess.DEVNULL,
            stderr=open(py_spy_out + ".log", "wb"),  # noqa: SIM115 (the child owns it)
        )
    try:
        result: dict[str, Any] = await load
        after = [await f.request({"cmd": "timers"}) for f in followers]
    finally:
        if spy is not None:
            try:
                await asyncio.wait_for(spy.wait(), STOP_TIMEOUT_S)
            except TimeoutError:
                spy.kill()
                await spy.wait()
    shares = [time_shares(b, a) for b, a in zip(before, after, strict=True)]
    result["follower_shares"] = {k: statistics.fmean(s[k] for s in shares) for k in shares[0]}
    if py_spy_out is not None:
        result["py_spy"] = py_spy_out
    return result


#: py-spy summary: a sample of the leader's main thread is charged to the first rule that
#: matches, tried on its innermost frame, then outwards (a frame is "function (file:line)").
PY_SPY_RULES: Final = (
    ("idle: waiting in epoll", ("EpollSelector.select",)),
    ("socket send() syscall", ("_SelectorSocketTransport.write (",)),
    ("fsync hand-off to a thread", ("ThreadPoolExecutor.submit", "_write_to_self")),
    ("msgpack / codec", ("msgpack/", "raft/codec.py")),
    ("Raft core", ("raft/core/",)),
    ("storage (records, files)", ("raft/storage/", "detsim/fs/")),
    ("transport (framing, queues)", ("raft/transport.py",)),
    ("state machine (MemoryKV)", ("raft/statemachine.py",)),
    ("driver", ("raft/driver.py",)),
    ("load generator (proposers)", ("bench_raft_loopback.py",)),
    ("asyncio machinery", ("asyncio/", "selectors.py", "threading.py", "concurrent/")),
)


def py_spy_summary(path: str) -> dict[str, float]:
    """Share of the leader's main-thread samples per PY_SPY_RULES category (idle included:
    py-spy ran with --idle, so shares are of wall time)."""
    counts: dict[str, int] = {}
    total = 0
    with open(path) as f:
        for line in f:
            stack, _, n = line.rstrip("\n").rpartition(" ")
            frames = stack.split(";")
            if "MainThread" not in frames[0]:
                continue
            total += int(n)
            category = next(
                (
                    name
                    for frame in reversed(frames[1:])
                    for name, needles in PY_SPY_RULES
                    if any(needle in frame for needle in needles)
                ),
                "other",
            )
            counts[category] = counts.get(category, 0) + int(n)
    return {k: v / max(1, total) for k, v in sorted(counts.items(), key=lambda kv: -kv[1])}


def _row(r: dict[str, Any]) -> str:
    errors = f" errors={r['errors']}" if r["errors"] else ""
    lead, fol = r["leader_shares"], r["follower_shares"]
    return (
        f"run {r['run']} c={r['concurrency']:>4}: {r['entries_per_s']:8.0f} entries/s  "
        f"p50 {r['p50_ms']:7.2f} ms  p99 {r['p99_ms']:7.2f} ms  "
        f"entries/fsync {r['entries_per_fsync']:5.1f}  leader: CPU {lead['cpu_s']:.2f} "
        f"Ready {lead['ready_s']:.2f} fsync {lead['sync_s']:.2f} burst {lead['burst_s']:.2f}  "
        f"runq {lead['runq_s']:.2f}  followers: CPU {fol['cpu_s']:.2f} "
        f"fsync {fol['sync_s']:.2f} runq {fol['runq_s']:.2f}{errors}"
    )


def fsync_probe_ms() -> float:
    """Median latency of append 100 bytes + fsync on the temp dir's disk (context)."""
    root = tempfile.mkdtemp(prefix="bench-fsync-")
    try:
        fd = os.open(os.path.join(root, "probe"), os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        try:
            samples = []
            for _ in range(FSYNC_PROBE_COUNT):
                t0 = time.perf_counter()
                os.write(fd, b"x" * 100)
                os.fsync(fd)
                samples.append(time.perf_counter() - t0)
        finally:
            os.close(fd)
        return statistics.median(samples) * 1e3
    finally:
        shutil.rmtree(root, ignore_errors=True)


def machine() -> str:
    model = "?"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        model = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), "?")
    load = os.getloadavg()[0]
    return (
        f"Python {platform.python_version()}, {os.cpu_count()} CPUs ({model}), "
        f"load average {load:.1f}, temp dir {tempfile.gettempdir()}"
    )


async def parent(args: argparse.Namespace) -> None:
    if not args.json:
        print(machine())
        print(f"fsync probe (100-byte append + fsync): median {fsync_probe_ms():.2f} ms")
    results: list[dict[str, Any]] = []
    for run in range(1, args.runs + 1):
        results += await one_run(args, run, profiling=run == args.runs)
    summary = summarize(results, args.concurrency)
    if args.json:
        print(json.dumps({"machine": machine(), "runs": results, "medians": summary}))
        return
    diagnostic = ["fsync OFF"] * args.no_fsync + [f"lever {lever}" for lever in args.lever]
    note = f" (diagnostic: {', '.join(diagnostic)})" if diagnostic else ""
    print(f"medians of {args.runs} runs{note}:")
    print("| in flight | " + " | ".join(h for h, _, _ in SUMMARY_COLUMNS) + " |")
    print("|---" * (len(SUMMARY_COLUMNS) + 1) + "|")
    for row in summary:
        cells = [fmt.format(row[h]) for h, _, fmt in SUMMARY_COLUMNS]
        print(f"| {row['in flight']} | " + " | ".join(cells) + " |")
    print("(leader/follower columns: seconds per wall second; Ready includes its fsync wait)")
    for r in results:
        if "py_spy" in r and os.path.exists(r["py_spy"]):
            shares = py_spy_summary(r["py_spy"])
            print(f"\npy-spy, leader main thread, c={r['concurrency']} ({r['py_spy']}):")
            for name, share in shares.items():
                print(f"  {share:6.1%}  {name}")
    profiled = [r for r in results if "profile_text" in r]
    if profiled:
        print(
            f"\ncProfile of the leader (c={profiled[0]['concurrency']}), saved to {args.profile}:"
        )
        print(profiled[0]["profile_text"])


SUMMARY_COLUMNS: Final = (
    # (header, the keys that lead to it in one result, format)
    ("entries/s", ("entries_per_s",), "{:.0f}"),
    ("p50 ms", ("p50_ms",), "{:.2f}"),
    ("p99 ms", ("p99_ms",), "{:.2f}"),
    ("entries/fsync", ("entries_per_fsync",), "{:.1f}"),
    ("leader fsyncs/s", ("leader_shares", "fsyncs"), "{:.0f}"),
    ("leader CPU", ("leader_shares", "cpu_s"), "{:.2f}"),
    ("leader in Ready", ("leader_shares", "ready_s"), "{:.2f}"),
    ("leader fsync wait", ("leader_shares", "sync_s"), "{:.2f}"),
    ("leader burst", ("leader_shares", "burst_s"), "{:.2f}"),
    ("leader waits for a CPU", ("leader_shares", "runq_s"), "{:.2f}"),
    ("follower CPU", ("follower_shares", "cpu_s"), "{:.2f}"),
    ("follower fsync wait", ("follower_shares", "sync_s"), "{:.2f}"),
    ("follower waits for a CPU", ("follower_shares", "runq_s"), "{:.2f}"),
    ("follower fsyncs/s", ("follower_shares", "fsyncs"), "{:.0f}"),
)


def _pick(result: dict[str, Any], keys: tuple[str, ...]) -> float:
    value: Any = result
    for key in keys:
        value = value[key]
    return float(value)


def summarize(results: list[dict[str, Any]], concurrency: list[int]) -> list[dict[str, Any]]:
    """Per concurrency: the median of each column over the runs."""
    out = []
    for c in concurrency:
        rows = [r for r in results if r["concurrency"] == c]
        medians = {
            h: statistics.median(_pick(r, keys) for r in rows) for h, keys, _ in SUMMARY_COLUMNS
        }
        out.append({"in flight": c, **medians})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0, help="measured, per workload")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds, per workload")
    parser.add_argument("--concurrency", default="1,64,256", help="in-flight proposals")
    parser.add_argument("--profile", help="save a cProfile of the leader here (.pstats)")
    parser.add_argument("--no-fsync", action="store_true", help="diagnostic: os.fsync no-op")
    parser.add_argument("--py-spy", help="path of a py-spy binary: sample the profiled leader")
    parser.add_argument("--py-spy-out", default="/tmp/bench_raft_pyspy.txt", help="raw output")
    parser.add_argument(
        "--lever", action="append", default=[], choices=sorted(LEVERS), help="diagnostic patch"
    )
    parser.add_argument("--json", action="store_true")
    # Child mode (internal).
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--ports", help=argparse.SUPPRESS)
    parser.add_argument("--data-dir", help=argparse.SUPPRESS)
    parser.add_argument("--max-seconds", type=float, default=600.0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    args.concurrency = [int(c) for c in str(args.concurrency).split(",")]
    if not all(1 <= c <= MAX_IN_FLIGHT for c in args.concurrency):
        parser.error(f"concurrency must be in 1..{MAX_IN_FLIGHT}")
    if args.runs < 1 or args.seconds <= 0 or args.warmup < 0:
        parser.error("need runs >= 1, seconds > 0, warmup >= 0")
    asyncio.run(parent(args))


if __name__ == "__main__":
    main()
