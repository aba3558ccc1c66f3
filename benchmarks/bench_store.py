"""The replicated store vs PySyncObj vs redis-server, side by side in one run (store issue,
"Speed").

    .venv/bin/python benchmarks/bench_store.py [--rounds 3] [--single-n 2000]
        [--saturation-n 100000] [--pso-seconds 5] [--only store,pysyncobj,redis] [--json FILE]
    diagnostics (not headline figures): --py-spy FILE (py-spy, installed into the venv when
        missing, samples the store's leader during the last round's saturation SET load and a
        summary by component is printed); --saturation-clients N (not 50 x 16)

Systems, each started fresh for every measurement and stopped after it:
- store: `detsim up --nodes 3` (3 `detsim serve` processes on 127.0.0.1, fsync on, the
  defaults of `detsim serve`) in a temp dir; redis-benchmark `-t set,get -d 10 -r 100000`
  against the leader's client port: one client without pipelining (`-c 1`, latency-bound),
  and 50 clients with `-P 16` (saturation). Also per test: CPU per request of the leader and
  of the 3 nodes (/proc/PID/stat, every thread), and per wall second how long the leader's
  event-loop thread ran and how long it waited for a CPU (/proc/PID/schedstat): figures that
  say where the time goes on a loaded machine.
- redis: one `redis-server` (Debian's) with `appendonly yes`, `appendfsync always`, no RDB
  saves, in a temp dir: the non-replicated durable reference, the same two redis-benchmark
  loads.
- pysyncobj: PySyncObj 0.3.17, 3 processes (benchmarks/pysyncobj_node.py), installed only in
  the benchmark's own virtualenv (`--venv`, default .bench-venv/ at the repo root, gitignored;
  created with pip when missing). Load generated inside the leader's process (its best case):
  one caller with synchronous sets, then `--pso-callers` (default 800 = 50 x 16, the
  saturation load's requests in flight) callers with one set each in flight. PySyncObj's
  `appendEntriesUseBatch` off (sends every command at once: its own benchmarks' setting, its
  best latency) and on (its default: appends every 0.1 s, its best throughput), as two rows.
  PySyncObj keeps its log in memory: no fsync.

The systems run interleaved (round r runs each once, the order rotated per round) so that all
see the same machine load; the 1-minute load average is sampled during each. Medians over the
rounds are printed (ops/s, p50 and p99 ms). redis-benchmark's latency is per request (with
`-P 16` a request waits for its whole pipeline of 16); PySyncObj's is one call's.

Bounds: every process started here is in its own process group, killed in `finally` (SIGTERM,
then SIGKILL after STOP_TIMEOUT_S), even on error or Ctrl-C; every temp dir is removed; each
child process has a timeout; PySyncObj's nodes also exit by themselves (stdin EOF or
--max-seconds). Loopback only.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import functools
import io
import json
import os
import platform
import queue
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Final

REPO: Final = Path(__file__).resolve().parent.parent
HOST: Final = "127.0.0.1"
PYSYNCOBJ_VERSION: Final = "0.3.17"
PSO_NODE: Final = Path(__file__).resolve().parent / "pysyncobj_node.py"
DEFAULT_VENV: Final = REPO / ".bench-venv"
KEYSPACE: Final = 100_000  # redis-benchmark -r: random keys among this many
VALUE_BYTES: Final = 10  # -d 10
SAT_CLIENTS: Final = 50
SAT_PIPELINE: Final = 16
START_TIMEOUT_S: Final = 60.0  # a cluster elects a leader / a server answers PING
STOP_TIMEOUT_S: Final = 20.0  # SIGTERM, then SIGKILL
BENCH_TIMEOUT_S: Final = 600.0  # one redis-benchmark invocation
PIP_TIMEOUT_S: Final = 600.0
MAX_OUTPUT_LINES: Final = 10_000  # lines kept from a child's stdout (a bound on memory)
LOAD_SAMPLE_S: Final = 1.0
PORT_TRIES: Final = 200

# The `detsim` command line, run through this interpreter (the project's venv).
_DETSIM_MAIN: Final = "import sys; from detsim.cli import main; sys.exit(main(prog_name='detsim'))"


# --- processes --------------------------------------------------------------------------------


class Child:
    """A child process in its own process group; its stdout lines go to a bounded queue."""

    def __init__(self, argv: Sequence[str], stdin: bool = False, **kwargs: Any) -> None:
        self.argv = list(argv)
        self.lines: queue.Queue[str] = queue.Queue(MAX_OUTPUT_LINES)
        self.popen = subprocess.Popen(
            self.argv,
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            text=True,
            **kwargs,
        )
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            with contextlib.suppress(queue.Full):  # past the bound, lines are dropped
                self.lines.put_nowait(line.rstrip("\n"))

    def next_line(self, deadline: float) -> str | None:
        """The next stdout line, or None at the deadline or when the child has exited."""
        while time.monotonic() < deadline:
            try:
                return self.lines.get(timeout=0.2)
            except queue.Empty:
                if self.popen.poll() is not None and self.lines.empty():
                    return None
        return None

    def stop(self) -> None:
        """SIGTERM to the whole group, SIGKILL after STOP_TIMEOUT_S."""
        if self.popen.stdin is not None:
            with contextlib.suppress(OSError):
                self.popen.stdin.close()
        for signum in (signal.SIGTERM, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.popen.pid, signum)
            try:
                self.popen.wait(STOP_TIMEOUT_S)
                break
            except subprocess.TimeoutExpired:
                continue
        # The group may outlive its leader (detsim up's nodes): make sure nothing is left.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, signal.SIGKILL)


@contextlib.contextmanager
def temp_dir(prefix: str) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def free_ports(count: int, stride: int = 1) -> int:
    """A base port P with P + i * stride free on HOST for i < count (checked by binding)."""
    rng = random.Random()
    for _ in range(PORT_TRIES):
        base = rng.randrange(20_000, 40_000)
        if _all_free([base + i * stride for i in range(count)]):
            return base
    raise RuntimeError("no free ports found")


def _all_free(ports: Sequence[int]) -> bool:
    for port in ports:
        with socket.socket() as sock:
            try:
                sock.bind((HOST, port))
            except OSError:
                return False
    return True


class LoadSampler:
    """Samples the 1-minute load average every LOAD_SAMPLE_S while active."""

    def __init__(self) -> None:
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> LoadSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append(os.getloadavg()[0])
            self._stop.wait(LOAD_SAMPLE_S)


# --- redis-benchmark ----------------------------------------------------------------------------


def redis_benchmark(port: int, test: str, clients: int, pipeline: int, requests: int) -> Any:
    """One test's figures: {"ops_per_s", "p50_ms", "p99_ms"}."""
    argv = ["redis-benchmark", "-h", HOST, "-p", str(port), "-t", test]
    argv += ["-d", str(VALUE_BYTES), "-r", str(KEYSPACE), "-n", str(requests)]
    argv += ["-c", str(clients), "-P", str(pipeline), "--csv"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=BENCH_TIMEOUT_S)
    if done.returncode != 0:
        raise RuntimeError(f"redis-benchmark failed: {done.stderr.strip()[-500:]}")
    rows = list(csv.DictReader(io.StringIO(done.stdout)))
    if len(rows) != 1 or rows[0]["test"] != test.upper():
        raise RuntimeError(f"redis-benchmark output not understood: {done.stdout[-500:]}")
    return {
        "ops_per_s": float(rows[0]["rps"]),
        "p50_ms": float(rows[0]["p50_latency_ms"]),
        "p99_ms": float(rows[0]["p99_latency_ms"]),
    }


TESTS: Final = ("set", "get")  # SET runs first: GET reads its keys


def two_loads(port: int, args: argparse.Namespace, meter: Any = None) -> dict[str, Any]:
    """Both loads, both tests; `meter(load, test, run)` wraps each test (CPU accounting)."""
    out: dict[str, Any] = {}
    loads = (("single", 1, 1), ("saturation", args.saturation_clients, SAT_PIPELINE))
    for load, clients, pipeline in loads:
        requests = args.single_n if load == "single" else args.saturation_n
        out[load] = {}
        for test in TESTS:
            run = functools.partial(redis_benchmark, port, test, clients, pipeline, requests)
            figures = run() if meter is None else meter(load, test, run)
            figures["requests"] = requests
            out[load][test.upper()] = figures
    return out


def main_thread_sched_s(pid: int) -> tuple[float, float]:
    """(running, runnable but waiting for a CPU) seconds of a process's main thread."""
    fields = Path(f"/proc/{pid}/schedstat").read_text().split()
    return int(fields[0]) / 1e9, int(fields[1]) / 1e9


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (every thread)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# --- the store --------------------------------------------------------------------------------


def run_store(args: argparse.Namespace, profile: bool) -> dict[str, Any]:
    with temp_dir("bench-store-") as directory:
        base = _store_base_port()
        argv = [sys.executable, "-c", _DETSIM_MAIN, "up", "--nodes", "3"]
        argv += ["--base-port", str(base), "--data", str(directory / "cluster")]
        up = Child(argv, cwd=directory)
        try:
            leader_id, ports = _wait_ready(up)
            pids = {node: _node_pid(up.popen.pid, node) for node in ports}

            def meter(load: str, test: str, run: Any) -> Any:
                spy = None
                if profile and load == "saturation" and test == "set":
                    spy = _start_py_spy(args, pids[leader_id])
                before = {node: cpu_s(pid) for node, pid in pids.items()}
                sched_before = main_thread_sched_s(pids[leader_id])
                began = time.monotonic()
                try:
                    figures = run()
                finally:
                    if spy is not None:
                        _stop_py_spy(spy)
                wall_s = time.monotonic() - began
                spent = {node: cpu_s(pid) - before[node] for node, pid in pids.items()}
                sched = main_thread_sched_s(pids[leader_id])
                # Per wall second: how long the leader's loop thread ran, and how long it was
                # ready to run but waited for one of the machine's CPUs.
                figures["leader_loop_run_s_per_s"] = (sched[0] - sched_before[0]) / wall_s
                figures["leader_loop_cpu_wait_s_per_s"] = (sched[1] - sched_before[1]) / wall_s
                requests = args.single_n if load == "single" else args.saturation_n
                # CPU per request: what the load costs, whatever the machine's load.
                figures["leader_cpu_ms_per_req"] = spent[leader_id] * 1e3 / requests
                figures["cluster_cpu_ms_per_req"] = sum(spent.values()) * 1e3 / requests
                return figures

            result = two_loads(ports[leader_id], args, meter)
            result["leader"] = leader_id
            return result
        finally:
            up.stop()


def _store_base_port() -> int:
    """Client ports P..P+2 and Raft ports P+100..P+102 (detsim.kv.cluster's layout) free."""
    for _ in range(PORT_TRIES):
        base = free_ports(3)
        if _all_free([base + 100 + i for i in range(3)]):
            return base
    raise RuntimeError("no free ports found")


def _wait_ready(up: Child) -> tuple[str, dict[str, int]]:
    """Reads `detsim up`'s output to its ready line: the leader's id and every client port."""
    deadline = time.monotonic() + START_TIMEOUT_S
    leader = ""
    ports: dict[str, int] = {}
    seen: list[str] = []
    while (line := up.next_line(deadline)) is not None:
        seen.append(line)
        if "leader elected:" in line:
            leader = line.rsplit(":", 1)[1].strip()
        words = line.split()
        if len(words) >= 3 and words[1] == "client":
            ports[words[0]] = int(words[2].rsplit(":", 1)[1])
        if line.startswith("ready:"):
            if leader not in ports:
                break
            return leader, ports
    raise RuntimeError("detsim up did not get ready:\n" + "\n".join(seen[-20:]))


def _node_pid(up_pid: int, node_id: str) -> int:
    """The pid of `detsim serve --id node_id` among the launcher's children."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError):
            stat = Path(f"/proc/{entry}/stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
            if (
                ppid == up_pid
                and b"--id" in argv
                and argv[argv.index(b"--id") + 1] == node_id.encode()
            ):
                return int(entry)
    raise RuntimeError(f"no process for node {node_id}")


def _start_py_spy(args: argparse.Namespace, pid: int) -> Child:
    binary = Path(args.venv) / "bin" / "py-spy"
    if not binary.exists():
        _pip(Path(args.venv), "py-spy")
    argv = [str(binary), "record", "--pid", str(pid), "--idle", "--nonblocking", "--rate", "200"]
    argv += ["--format", "raw", "--output", args.py_spy, "--duration", "600"]
    spy = Child(argv)
    time.sleep(1.0)  # py-spy attaches
    return spy


def _stop_py_spy(spy: Child) -> None:
    """py-spy writes its output when interrupted (SIGINT), not when terminated."""
    with contextlib.suppress(ProcessLookupError):
        spy.popen.send_signal(signal.SIGINT)
    with contextlib.suppress(subprocess.TimeoutExpired):
        spy.popen.wait(STOP_TIMEOUT_S)
    spy.stop()


# --- redis-server -------------------------------------------------------------------------------


def run_redis(args: argparse.Namespace) -> dict[str, Any]:
    with temp_dir("bench-redis-") as directory:
        port = free_ports(1)
        argv = ["redis-server", "--port", str(port), "--bind", HOST, "--dir", str(directory)]
        argv += ["--appendonly", "yes", "--appendfsync", "always", "--save", ""]
        argv += ["--daemonize", "no", "--logfile", ""]
        server = Child(argv)
        try:
            _wait_ping(port)
            return two_loads(port, args)
        finally:
            server.stop()


def _wait_ping(port: int) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        done = subprocess.run(
            ["redis-cli", "-h", HOST, "-p", str(port), "PING"],
            capture_output=True,
            text=True,
            timeout=START_TIMEOUT_S,
        )
        if done.stdout.strip() == "PONG":
            return
        time.sleep(0.2)
    raise RuntimeError(f"redis-server on port {port} did not answer PING")


# --- PySyncObj ----------------------------------------------------------------------------------


def _pip(venv: Path, *packages: str) -> None:
    subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", *packages],
        check=True,
        timeout=PIP_TIMEOUT_S,
    )


def ensure_venv(venv: Path) -> Path:
    """The benchmark's own virtualenv with PySyncObj PYSYNCOBJ_VERSION; its python."""
    python = venv / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    probe = subprocess.run(
        [str(python), "-c", "import importlib.metadata as m; print(m.version('pysyncobj'))"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if probe.stdout.strip() != PYSYNCOBJ_VERSION:
        _pip(venv, f"pysyncobj=={PYSYNCOBJ_VERSION}")
    return python


def run_pysyncobj(args: argparse.Namespace, python: Path, batch: str) -> dict[str, Any]:
    base = free_ports(3)
    ports = [base + i for i in range(3)]
    budget_s = 30 + args.pso_seconds * 2 + 10
    nodes: list[Child] = []
    try:
        for port in ports:
            argv = [str(python), str(PSO_NODE), str(port), *(str(p) for p in ports if p != port)]
            argv += ["--seconds", str(args.pso_seconds), "--single-s", str(args.pso_seconds)]
            argv += ["--callers", str(args.pso_callers), "--batch", batch]
            argv += ["--max-seconds", str(budget_s)]
            nodes.append(Child(argv, stdin=True))
        deadline = time.monotonic() + budget_s
        while time.monotonic() < deadline:
            for node in nodes:
                with contextlib.suppress(queue.Empty):
                    line = node.lines.get_nowait()
                    if line.startswith("{"):
                        result: dict[str, Any] = json.loads(line)
                        if "error" in result:
                            raise RuntimeError(f"pysyncobj: {result['error']}")
                        return {
                            "single": {"SET": result["single"]},
                            "saturation": {"SET": result["saturation"]},
                        }
            time.sleep(0.1)
        raise RuntimeError("pysyncobj: no result in time")
    finally:
        for node in nodes:
            node.stop()


# --- report -------------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    disk = subprocess.run(
        ["findmnt", "-n", "-o", "SOURCE,FSTYPE", "-T", tempfile.gettempdir()],
        capture_output=True,
        text=True,
    ).stdout.strip()
    redis_version = subprocess.run(
        ["redis-server", "--version"], capture_output=True, text=True
    ).stdout.split()[2]
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "temp_dir_disk": disk,
        "python": platform.python_version(),
        "redis": redis_version,
    }


METRICS: Final = (
    "ops_per_s",
    "p50_ms",
    "p99_ms",
    "leader_cpu_ms_per_req",
    "cluster_cpu_ms_per_req",
    "leader_loop_run_s_per_s",
    "leader_loop_cpu_wait_s_per_s",
)


def medians(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """{system: {load: {test: {metric: median}}}} over the rounds that ran that system."""
    out: dict[str, Any] = {}
    systems = sorted({s for r in rounds for s in r["results"]})
    for system in systems:
        runs = [r["results"][system] for r in rounds if system in r["results"]]
        out[system] = {}
        for load in ("single", "saturation"):
            out[system][load] = {}
            for test in runs[0][load]:
                out[system][load][test] = {
                    metric: statistics.median(run[load][test][metric] for run in runs)
                    for metric in METRICS
                    if all(metric in run[load][test] for run in runs)
                }
        loads = [r["load"][system] for r in rounds if system in r["load"]]
        out[system]["load_avg"] = (min(x[0] for x in loads), max(x[1] for x in loads))
    return out


def print_table(summary: dict[str, Any], rounds: int) -> None:
    print(f"\nmedians of {rounds} rounds: ops/s, p50 ms, p99 ms (load average min-max)")
    print(
        f"{'system':<22} {'load':<11} {'test':<4} {'ops/s':>9} {'p50':>8} {'p99':>8} "
        "CPU ms/request: leader, 3 nodes"
    )
    for system, loads in summary.items():
        for load in ("single", "saturation"):
            for test, m in loads[load].items():
                cpu = ""
                if "leader_cpu_ms_per_req" in m:
                    cpu = (
                        f" {m['leader_cpu_ms_per_req']:.3f}, {m['cluster_cpu_ms_per_req']:.3f};"
                        f" loop runs {m['leader_loop_run_s_per_s']:.2f} s/s, waits for a CPU"
                        f" {m['leader_loop_cpu_wait_s_per_s']:.2f} s/s"
                    )
                print(
                    f"{system:<22} {load:<11} {test:<4} {m['ops_per_s']:9.0f} "
                    f"{m['p50_ms']:8.2f} {m['p99_ms']:8.2f}{cpu}"
                )
        low, high = loads["load_avg"]
        print(f"{system:<22} load average {low:.1f}-{high:.1f}")


#: py-spy summary: a sample of the leader's main thread is charged to the first rule that
#: matches, tried on its innermost frame, then outwards.
PY_SPY_RULES: Final = (
    ("idle: waiting in epoll", ("EpollSelector.select",)),
    ("socket send() syscall", ("_SelectorSocketTransport.write (",)),
    ("fsync hand-off to a thread", ("ThreadPoolExecutor.submit", "_write_to_self")),
    ("SQLite (state machine apply)", ("sqlite3", "kv/statemachine.py")),
    # Our own request parser and reply encoder (resp.py's header says why not hiredis).
    ("RESP parse/encode", ("kv/resp.py", "hiredis")),
    # Parsing requests into commands, and their entry payloads: encoding on the leader,
    # decoding in every replica's apply.
    ("commands: parse, entry encode/decode", ("kv/commands.py",)),
    ("msgpack / codec", ("msgpack/", "raft/codec.py")),
    ("Raft core", ("raft/core/",)),
    ("storage (records, files)", ("raft/storage/", "detsim/fs/")),
    ("transport (framing, queues)", ("raft/transport.py",)),
    ("kv server (connections, grouping)", ("kv/server.py", "kv/forward.py")),
    ("driver", ("raft/driver.py",)),
    ("asyncio streams/machinery", ("asyncio/", "selectors.py", "threading.py", "concurrent/")),
)


def py_spy_summary(path: str) -> dict[str, dict[str, float]]:
    """Share of samples per PY_SPY_RULES category, per thread kind (main / other threads)."""
    counts: dict[str, dict[str, int]] = {"main thread": {}, "other threads": {}}
    totals = {"main thread": 0, "other threads": 0}
    with open(path) as f:
        for line in f:
            stack, _, n = line.rstrip("\n").rpartition(" ")
            frames = stack.split(";")
            # Without thread names in the raw format, the main thread's stacks start at the
            # `detsim serve` entry point (`python -c ...` is "<module> (<string>:1)").
            main_thread = "MainThread" in frames[0] or frames[0].startswith("<module>")
            kind = "main thread" if main_thread else "other threads"
            totals[kind] += int(n)
            category = next(
                (
                    name
                    for frame in reversed(frames[1:])
                    for name, needles in PY_SPY_RULES
                    if any(needle in frame for needle in needles)
                ),
                frames[-1][:60] if kind == "other threads" else "other",
            )
            counts[kind][category] = counts[kind].get(category, 0) + int(n)
    return {
        kind: {k: v / max(1, totals[kind]) for k, v in sorted(c.items(), key=lambda kv: -kv[1])}
        for kind, c in counts.items()
    }


# --- main ---------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--single-n", type=int, default=2000, help="requests, 1 client")
    parser.add_argument("--saturation-n", type=int, default=100_000, help="requests, 50 x P16")
    parser.add_argument(
        "--saturation-clients", type=int, default=SAT_CLIENTS, help="diagnostic: not 50"
    )
    parser.add_argument("--pso-seconds", type=float, default=5.0)
    parser.add_argument("--pso-callers", type=int, default=SAT_CLIENTS * SAT_PIPELINE)
    parser.add_argument("--only", default="store,pysyncobj,redis")
    parser.add_argument("--venv", default=str(DEFAULT_VENV), help="the benchmark's own venv")
    parser.add_argument("--json", help="write every round's figures here")
    parser.add_argument("--py-spy", help="raw py-spy output file: profile the store's leader")
    args = parser.parse_args()
    if shutil.which("redis-benchmark") is None or shutil.which("redis-server") is None:
        sys.exit("redis-benchmark / redis-server missing: run scripts/install-system-deps.sh")
    only = args.only.split(",")
    python = ensure_venv(Path(args.venv)) if "pysyncobj" in only else None
    runners: list[tuple[str, Any]] = []
    if "store" in only:
        runners.append(("store (3 nodes, fsync)", "store"))
    if "pysyncobj" in only:
        runners.append(("pysyncobj batch off", "off"))
        runners.append(("pysyncobj batch on", "on"))
    if "redis" in only:
        runners.append(("redis-server fsync", "redis"))
    info = machine()
    print(json.dumps(info))
    rounds: list[dict[str, Any]] = []
    for index in range(args.rounds):
        shift = index % len(runners)
        order = runners[shift:] + runners[:shift]
        record: dict[str, Any] = {"round": index, "results": {}, "load": {}}
        for name, what in order:
            with LoadSampler() as load:
                if what == "store":
                    profile = args.py_spy is not None and index == args.rounds - 1
                    result = run_store(args, profile)
                elif what == "redis":
                    result = run_redis(args)
                else:
                    assert python is not None
                    result = run_pysyncobj(args, python, what)
            record["results"][name] = result
            record["load"][name] = (min(load.samples), max(load.samples))
            print(f"round {index} {name}: {json.dumps(result)} load {record['load'][name]}")
            sys.stdout.flush()
        rounds.append(record)
    summary = medians(rounds)
    print_table(summary, len(rounds))
    if args.py_spy and os.path.exists(args.py_spy):
        for kind, shares in py_spy_summary(args.py_spy).items():
            print(f"\npy-spy, store leader, {kind} (saturation, last round):")
            for category, share in list(shares.items())[:14]:
                print(f"  {share:6.1%}  {category}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": info, "rounds": rounds, "medians": summary}, f, indent=1)


if __name__ == "__main__":
    main()
