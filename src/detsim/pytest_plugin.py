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

A failing seed stops the test; its message ends with
`reproduce with: DETSIM_TEST_SEED=<n> pytest <nodeid>` and the artifact's path.
"""

from __future__ import annotations

import inspect
import os
import subprocess
import sys
import tomllib
import traceback
from pathlib import Path
from typing import Any

import pytest

from detsim.sim import artifact
from detsim.sim.config import DiskConfig, NetConfig
from detsim.sim.errors import NondeterminismError
from detsim.sim.world import Simulation

MAX_SEEDS = 100_000
MAX_JOBS = 64


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "detsim(seeds=1, net=None, disk=None, time_limit=None, buggify=True): "
        "run an async test as the main coroutine of a Simulation, once per seed",
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


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    marker = pyfuncitem.get_closest_marker("detsim")
    if marker is None:
        return None
    fn = pyfuncitem.obj
    if not inspect.iscoroutinefunction(fn):
        raise pytest.UsageError(f"{pyfuncitem.nodeid}: @pytest.mark.detsim needs an async def")
    seeds = _seeds(marker)
    jobs = _env_int("DETSIM_TEST_JOBS", 1, 1, MAX_JOBS) or 1
    if jobs > 1 and len(seeds) > 1 and not os.environ.get("DETSIM_TEST_CHILD"):
        _run_in_subprocesses(pyfuncitem, seeds, jobs)
        return True
    kwargs = _sim_kwargs(marker)
    determinism = os.environ.get("DETSIM_TEST_CHECK_DETERMINISM", "") not in ("", "0")
    for seed in seeds:
        first = _run_seed(pyfuncitem, seed, kwargs)
        if determinism:
            second = _run_seed(pyfuncitem, seed, kwargs)
            if first != second:
                raise NondeterminismError(
                    f"seed {seed}: two runs gave trace hashes {first} and {second}\n"
                    f"reproduce with: DETSIM_TEST_SEED={seed} DETSIM_TEST_CHECK_DETERMINISM=1 "
                    f"pytest {pyfuncitem.nodeid}"
                )
    return True


def _run_seed(item: pytest.Function, seed: int, kwargs: dict[str, Any]) -> str:
    sim = Simulation(seed=seed, **kwargs)
    names = item._fixtureinfo.argnames
    funcargs = {name: (sim if name == "sim" else item.funcargs[name]) for name in names}
    try:
        sim.run(item.obj(**funcargs))
    except Exception as exc:
        _report_hash(sim)
        path = _write_artifact(item, sim, exc)
        raise AssertionError(
            f"{type(exc).__name__}: {exc}\n"
            f"reproduce with: DETSIM_TEST_SEED={seed} pytest {item.nodeid}\n"
            f"artifact: {path}"
        ) from exc
    _report_hash(sim)
    return sim.trace_hash


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


def _run_in_subprocesses(item: pytest.Function, seeds: range, jobs: int) -> None:
    chunk = -(-len(seeds) // jobs)
    procs = []
    for start in range(seeds.start, seeds.stop, chunk):
        num = min(chunk, seeds.stop - start)
        env = {
            **os.environ,
            "DETSIM_TEST_SEED": str(start),
            "DETSIM_TEST_NUM": str(num),
            "DETSIM_TEST_CHILD": "1",
            "DETSIM_TEST_JOBS": "1",
        }
        cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", item.nodeid]
        procs.append(
            (
                start,
                num,
                subprocess.Popen(
                    cmd,
                    cwd=item.config.rootpath,
                    env=env,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    text=True,
                ),
            )
        )
    failures = []
    for start, num, proc in procs:
        out, _ = proc.communicate()
        if proc.returncode != 0:
            failures.append(f"seeds {start}..{start + num - 1}:\n{out[-4000:]}")
    if failures:
        raise AssertionError("\n".join(failures))
