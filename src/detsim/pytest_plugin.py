"""The pytest plugin (entry point `pytest11`): simulation tests, one Simulation per seed.

    @pytest.mark.detsim(seeds=5)
    async def test_x(sim):          # the body is `main` of each seed's Simulation
        n1 = sim.add_node("n1", ip="10.0.0.1", init=server)
        ...

Marker arguments: `seeds` (how many, default 1), `net` (NetConfig), `disk` (DiskConfig),
`time_limit` (virtual seconds), `buggify` (bool). Environment, after MadSim's:

- `DETSIM_TEST_SEED`: the first seed (default 0); alone, it runs just that seed.
- `DETSIM_TEST_NUM`: how many seeds, from the first (default: the marker's `seeds`).
- `DETSIM_TEST_JOBS`: run the seeds in that many pytest subprocesses.
- `DETSIM_TEST_TIME_LIMIT`: virtual seconds per run.
- `DETSIM_TEST_CHECK_DETERMINISM=1`: run every seed twice and compare trace hashes.
- `DETSIM_TEST_CONFIG`: a TOML file with `[net]` and `[disk]` tables (NetConfig, DiskConfig).
- `DETSIM_ARTIFACTS`: where failing runs' artifacts go (default `<rootdir>/artifacts`).
- `DETSIM_TRACE_HASH_OUT`: a file to which each seed's `<seed> <trace hash>` is appended
  (how `detsim replay` checks a pytest artifact).

Rules of what a failing test shows:
- Every seed runs, failing or not; each failing seed gets one line with its reproduce command
  `reproduce with: DETSIM_TEST_SEED=<n> pytest <nodeid>` (and an artifact, for the first
  `MAX_FAILURES_LISTED`), in the failure's text and again in a "detsim: failing seeds" section
  at the end of the run, which pytest never truncates (its one-line summary is cut to the
  terminal's width).
- The traceback is the first failing seed's own exception, raised again with the list of
  failing seeds as a note: the summary reads `AssertionError: <the test's message>`, and the
  plugin's frames are hidden (`__tracebackhide__`).
- With `DETSIM_TEST_JOBS`, each child pytest appends its failing seeds to a JSON-lines file
  (`DETSIM_TEST_FAILURES_OUT`) that the parent reports the same way.
- The plugin needs no pytest-asyncio. Under pytest-asyncio's `auto` mode, which wraps every
  async test in a sync function, the plugin unwraps it and runs the coroutine function itself.
  pytest-asyncio (>= 0.24) warns at start-up in every project that leaves
  `asyncio_default_fixture_loop_scope` unset; that warning concerns pytest-asyncio's own async
  fixtures, and in a project that has not configured pytest-asyncio it is noise around a detsim
  test, so the plugin ignores exactly that warning, and only when the option is unset and the
  project sets no warning filters of its own (`-W`, `filterwarnings`).
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import os
import shlex
import subprocess
import sys
import tempfile
import tomllib
import traceback
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from detsim.sim import artifact
from detsim.sim.config import DiskConfig, NetConfig
from detsim.sim.errors import NondeterminismError
from detsim.sim.world import Simulation

MAX_SEEDS = 100_000
MAX_JOBS = 64
MAX_FAILURES_LISTED = 50  # failing seeds listed (and artifacts written) per test
MAX_ERROR_CHARS = 160  # a failing seed's error on its line, cut at a word boundary
MAX_CHILD_OUTPUT_LINES = 60  # a crashed child pytest's output shown, in whole lines
FAILURES_OUT_ENV = "DETSIM_TEST_FAILURES_OUT"
ASYNCIO_LOOP_SCOPE_INI = "asyncio_default_fixture_loop_scope"
ASYNCIO_LOOP_SCOPE_WARNING = (
    r'The configuration option "asyncio_default_fixture_loop_scope" is unset'
)

FAILED_SEEDS_KEY = pytest.StashKey[list["FailedSeeds"]]()


@dataclasses.dataclass(frozen=True, slots=True)
class SeedFailure:
    """One failing seed, as listed: its error's first line, how to rerun it, its artifact."""

    seed: int
    error: str
    reproduce: str
    artifact: str | None

    def line(self) -> str:
        return f"seed {self.seed}: {self.error} -- reproduce with: {self.reproduce}"


@dataclasses.dataclass(frozen=True, slots=True)
class FailedSeeds:
    """The failing seeds of one test, out of `seeds_run`."""

    nodeid: str
    seeds_run: int
    failures: list[SeedFailure]

    def lines(self) -> list[str]:
        head = f"detsim: {len(self.failures)} of {_plural(self.seeds_run, 'seed')} failed"
        shown = self.failures[:MAX_FAILURES_LISTED]
        out = [head, *(f.line() for f in shown)]
        out += [f"artifact of seed {f.seed}: {f.artifact}" for f in shown if f.artifact]
        if len(self.failures) > len(shown):
            rest = self.failures[len(shown) :]
            out.append(
                f"... and {len(rest)} more failing seeds, from {rest[0].seed} to {rest[-1].seed}"
            )
        return out


@pytest.hookimpl(tryfirst=True)  # before pytest-asyncio's pytest_configure warns
def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "detsim(seeds=1, net=None, disk=None, time_limit=None, buggify=True): "
        "run an async test as the main coroutine of a Simulation, once per seed",
    )
    config.stash[FAILED_SEEDS_KEY] = []
    _quiet_asyncio_loop_scope_warning(config)


def _quiet_asyncio_loop_scope_warning(config: pytest.Config) -> None:
    """Ignore pytest-asyncio's unset-loop-scope warning in an unconfigured project (header)."""
    try:
        scope = config.getini(ASYNCIO_LOOP_SCOPE_INI)
    except ValueError:  # pytest-asyncio is not installed: nothing to quiet
        return
    user_filters = config.getini("filterwarnings") or config.getoption("pythonwarnings", None)
    if scope or user_filters:
        return
    # pytest configures plugins inside a warnings context of its own: this filter lives there.
    warnings.filterwarnings(
        "ignore", message=ASYNCIO_LOOP_SCOPE_WARNING, category=pytest.PytestDeprecationWarning
    )


@pytest.fixture
def sim(request: pytest.FixtureRequest) -> None:
    """The Simulation of the current seed: filled in per seed by `pytest_pyfunc_call`."""
    if request.node.get_closest_marker("detsim") is None:
        raise pytest.UsageError("the `sim` fixture needs @pytest.mark.detsim on an async test")


def _env_int(name: str, default: int | None, lo: int, hi: int) -> int | None:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise pytest.UsageError(f"{name}={raw!r} is not an integer") from None
    if not lo <= value <= hi:
        raise pytest.UsageError(f"{name}={value} is out of range [{lo}, {hi}]")
    return value


def _sim_kwargs(marker: pytest.Mark) -> dict[str, Any]:
    kwargs: dict[str, Any] = {}
    path = os.environ.get("DETSIM_TEST_CONFIG")
    if path:
        try:
            table = tomllib.loads(Path(path).read_text())
            kwargs["net"] = NetConfig(**{k: _tuple(v) for k, v in table.get("net", {}).items()})
            kwargs["disk"] = DiskConfig(**table.get("disk", {}))
        except (OSError, tomllib.TOMLDecodeError, TypeError, ValueError) as exc:
            raise pytest.UsageError(f"DETSIM_TEST_CONFIG={path}: {exc}") from exc
    for key in ("net", "disk", "time_limit", "buggify"):
        if key in marker.kwargs:
            kwargs[key] = marker.kwargs[key]
    limit = os.environ.get("DETSIM_TEST_TIME_LIMIT")
    if limit:
        try:
            kwargs["time_limit"] = float(limit)
        except ValueError:
            raise pytest.UsageError(f"DETSIM_TEST_TIME_LIMIT={limit!r} is not a number") from None
    return kwargs


def _tuple(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


def _seeds(marker: pytest.Mark) -> range:
    first = _env_int("DETSIM_TEST_SEED", None, 0, 2**63)
    num = _env_int("DETSIM_TEST_NUM", None, 1, MAX_SEEDS)
    if num is None:
        num = 1 if first is not None else int(marker.kwargs.get("seeds", 1))
    if not 1 <= num <= MAX_SEEDS:
        raise pytest.UsageError(f"detsim(seeds={num}) must be in [1, {MAX_SEEDS}]")
    start = first or 0
    return range(start, start + num)


def _test_function(item: pytest.Function) -> Callable[..., Any]:
    """The test's coroutine function, under pytest-asyncio's sync wrapper if it put one."""
    fn = item.obj
    if not inspect.iscoroutinefunction(fn):
        fn = inspect.unwrap(fn, stop=inspect.iscoroutinefunction)
    if not inspect.iscoroutinefunction(fn):
        raise pytest.UsageError(f"{item.nodeid}: @pytest.mark.detsim needs an async def")
    return fn  # type: ignore[no-any-return]


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    __tracebackhide__ = True
    marker = pyfuncitem.get_closest_marker("detsim")
    if marker is None:
        return None
    fn = _test_function(pyfuncitem)
    seeds = _seeds(marker)
    jobs = _env_int("DETSIM_TEST_JOBS", 1, 1, MAX_JOBS) or 1
    if jobs > 1 and len(seeds) > 1 and not os.environ.get("DETSIM_TEST_CHILD"):
        _run_in_subprocesses(pyfuncitem, seeds, jobs)
        return True
    failures, first_error = _run_seeds(pyfuncitem, fn, seeds, _sim_kwargs(marker))
    if first_error is not None:
        report = FailedSeeds(pyfuncitem.nodeid, len(seeds), failures)
        pyfuncitem.config.stash[FAILED_SEEDS_KEY].append(report)
        first_error.add_note("\n".join(report.lines()))
        raise first_error  # the first failing seed's own exception and traceback
    return True


def _run_seeds(
    item: pytest.Function, fn: Callable[..., Any], seeds: range, kwargs: dict[str, Any]
) -> tuple[list[SeedFailure], Exception | None]:
    """Run every seed; return the failing ones and the first one's exception."""
    __tracebackhide__ = True
    determinism = os.environ.get("DETSIM_TEST_CHECK_DETERMINISM", "") not in ("", "0")
    failures: list[SeedFailure] = []
    first_error: Exception | None = None
    for seed in seeds:
        write = len(failures) < MAX_FAILURES_LISTED
        run = _run_seed(item, fn, seed, kwargs, write)
        if run.error is None and determinism:
            again = _run_seed(item, fn, seed, kwargs, write)
            run = again if again.error is not None else run
            if run.error is None and again.trace_hash != run.trace_hash:
                message = f"seed {seed}: two runs gave trace hashes {run.trace_hash} and "
                run = SeedRun(NondeterminismError(message + again.trace_hash), "", None)
        if run.error is None:
            continue
        failures.append(_seed_failure(item, seed, run, determinism))
        first_error = first_error or run.error
        _append_child_failure(failures[-1], run.error)
    return failures, first_error


@dataclasses.dataclass(frozen=True, slots=True)
class SeedRun:
    error: Exception | None
    trace_hash: str
    artifact: str | None  # the failing run's artifact path, if one was written


def _run_seed(
    item: pytest.Function,
    fn: Callable[..., Any],
    seed: int,
    kwargs: dict[str, Any],
    write_artifact: bool,
) -> SeedRun:
    """One seed's run; a failing seed gets an artifact when `write_artifact`."""
    __tracebackhide__ = True
    sim = Simulation(seed=seed, **kwargs)
    names = item._fixtureinfo.argnames
    funcargs = {name: (sim if name == "sim" else item.funcargs[name]) for name in names}
    try:
        sim.run(fn(**funcargs))
    except Exception as exc:  # the seed's failure: reported after every seed has run
        _report_hash(sim)
        path = _write_artifact(item, sim, exc) if write_artifact else None
        return SeedRun(exc, sim.trace_hash, path)
    _report_hash(sim)
    return SeedRun(None, sim.trace_hash, None)


def _seed_failure(item: pytest.Function, seed: int, run: SeedRun, determinism: bool) -> SeedFailure:
    assert run.error is not None
    env = f"DETSIM_TEST_SEED={seed}"
    if isinstance(run.error, NondeterminismError) and determinism:
        env += " DETSIM_TEST_CHECK_DETERMINISM=1"
    return SeedFailure(
        seed=seed,
        error=_first_line(run.error),
        reproduce=f"{env} pytest {shlex.quote(item.nodeid)}",
        artifact=run.artifact,
    )


def _first_line(error: BaseException) -> str:
    """`Type: first line of the message`, cut at a word boundary past MAX_ERROR_CHARS."""
    lines = str(error).strip().splitlines()
    text = f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__
    if len(text) <= MAX_ERROR_CHARS:
        return text
    return text[:MAX_ERROR_CHARS].rsplit(" ", 1)[0] + " ..."


def _plural(count: int, word: str) -> str:
    return f"{count:,} {word}" + ("" if count == 1 else "s")


def _report_hash(sim: Simulation) -> None:
    """For `detsim replay`: append this seed's trace hash to $DETSIM_TRACE_HASH_OUT."""
    out = os.environ.get("DETSIM_TRACE_HASH_OUT")
    if out:
        with open(out, "a") as f:
            f.write(f"{sim.seed} {sim.trace_hash}\n")


def _write_artifact(item: pytest.Function, sim: Simulation, exc: BaseException) -> str:
    failure = "".join(traceback.format_exception(exc))
    replay = {
        "kind": "pytest",
        "nodeid": item.nodeid,
        "seed": sim.seed,
        "rootdir": str(item.config.rootpath),
    }
    art = artifact.build(sim, item.name, "failed", failure, replay)
    directory = os.environ.get("DETSIM_ARTIFACTS") or item.config.rootpath / "artifacts"
    try:
        return str(artifact.write(art, directory))
    except OSError as err:
        return f"(not written: {err})"


# --- DETSIM_TEST_JOBS: seeds split across child pytest processes ----------------------------


def _append_child_failure(failure: SeedFailure, error: Exception) -> None:
    """In a child pytest: tell the parent about this failing seed (one JSON line)."""
    out = os.environ.get(FAILURES_OUT_ENV)
    if not out:
        return
    record = {
        **dataclasses.asdict(failure),
        "traceback": _format_without_plugin(error),
    }
    with open(out, "a") as f:
        f.write(json.dumps(record) + "\n")


def _format_without_plugin(error: BaseException) -> str:
    """The traceback as Python prints it, less this module's frames (as pytest hides them)."""
    frames = [f for f in traceback.extract_tb(error.__traceback__) if f.filename != __file__]
    lines = ["Traceback (most recent call last):\n", *traceback.format_list(frames)]
    return "".join(lines + traceback.format_exception_only(error))


def _run_in_subprocesses(item: pytest.Function, seeds: range, jobs: int) -> None:
    chunk = -(-len(seeds) // jobs)
    with tempfile.TemporaryDirectory(prefix="detsim-jobs-") as tmp:
        out = Path(tmp) / "failures.jsonl"
        procs = [
            (start, _start_child(item, start, min(chunk, seeds.stop - start), out))
            for start in range(seeds.start, seeds.stop, chunk)
        ]
        outputs = [(start, proc.communicate()[0], proc.returncode) for start, proc in procs]
        records = (
            [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []
        )
    records.sort(key=lambda r: int(r["seed"]))
    # A child that failed without reporting a seed (a crash, a fixture error) shows its output.
    crashed: list[str] = []
    for start, output, code in outputs:
        stop = min(start + chunk, seeds.stop)
        if code != 0 and not any(start <= int(r["seed"]) < stop for r in records):
            crashed.append(f"seeds {start}..{stop - 1}: pytest exited with status {code}:")
            crashed += output.splitlines()[-MAX_CHILD_OUTPUT_LINES:]
    if records or crashed:
        _fail_from_children(item, len(seeds), records, crashed)


def _start_child(item: pytest.Function, start: int, num: int, out: Path) -> subprocess.Popen[str]:
    env = {
        **os.environ,
        "DETSIM_TEST_SEED": str(start),
        "DETSIM_TEST_NUM": str(num),
        "DETSIM_TEST_CHILD": "1",
        "DETSIM_TEST_JOBS": "1",
        FAILURES_OUT_ENV: str(out),
    }
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", item.nodeid]
    return subprocess.Popen(
        cmd,
        cwd=item.config.rootpath,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _fail_from_children(
    item: pytest.Function, seeds_run: int, records: Sequence[dict[str, Any]], crashed: list[str]
) -> None:
    fields = [f.name for f in dataclasses.fields(SeedFailure)]
    failures = [SeedFailure(**{k: r[k] for k in fields}) for r in records]
    report = FailedSeeds(item.nodeid, seeds_run, failures)
    lines = report.lines() if failures else []
    if failures:
        item.config.stash[FAILED_SEEDS_KEY].append(report)
    if records:
        lines += [f"seed {failures[0].seed}'s traceback:", records[0]["traceback"].rstrip()]
    pytest.fail("\n".join([*lines, *crashed]), pytrace=False)


# --- the end of the run: every failing seed, in lines pytest does not truncate -------------


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, config: pytest.Config
) -> None:
    reports = config.stash.get(FAILED_SEEDS_KEY, [])
    if not reports:
        return
    terminalreporter.section("detsim: failing seeds")
    for report in reports:
        terminalreporter.write_line(
            f"{report.nodeid}: {len(report.failures)} of {_plural(report.seeds_run, 'seed')} failed"
        )
        for failure in report.failures[:MAX_FAILURES_LISTED]:
            terminalreporter.write_line(f"  {failure.line()}")
        if len(report.failures) > MAX_FAILURES_LISTED:
            terminalreporter.write_line(f"  {report.lines()[-1]}")  # "... and N more"
