"""Local worker processes for campaigns and replays, with a fixed PYTHONHASHSEED.

Rules:
- Workers are started with the `spawn` method (a fresh interpreter: no state inherited from
  the parent, the same start on every platform) and PYTHONHASHSEED=HASH_SEED in their
  environment; each worker checks both at start (`check_worker`), so a seed replays in any
  process exactly as the campaign ran it. The parent's own PYTHONHASHSEED is restored after.
- At most `MAX_IN_FLIGHT_PER_JOB * jobs` tasks are submitted at a time: a campaign of a
  million seeds does not hold a million futures.
- Results come back in completion order through `on_result`; a worker that dies (a crash of
  the interpreter, not a failing run) raises BrokenProcessPool in the parent.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import logging
import multiprocessing
import os
import sys
from collections.abc import Callable, Iterable, Iterator

from detsim.campaign.runner import RunResult, Task, run_one

HASH_SEED = "0"
MAX_IN_FLIGHT_PER_JOB = 4
MAX_JOBS = 256

#: Loggers of the code under test that warn of the faults a nemesis injects on purpose (a reset
#: connection, a repaired torn tail of a log segment): thousands of lines a campaign, each fault
#: already in its run's trace. Workers show their errors only.
QUIET_LOGGERS = ("detsim.raft", "detsim.kv", "detsim.fs")

OnResult = Callable[[RunResult], None]


def check_worker() -> None:
    """The worker initializer: refuse to run with a hash seed other than the campaign's; quiet
    the warnings of the code under test (QUIET_LOGGERS)."""
    seen = os.environ.get("PYTHONHASHSEED")
    if seen != HASH_SEED or sys.flags.hash_randomization:
        raise RuntimeError(
            f"campaign worker started with PYTHONHASHSEED={seen!r} "
            f"(hash_randomization={sys.flags.hash_randomization}); expected {HASH_SEED}"
        )
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)


@contextlib.contextmanager
def fixed_hash_seed() -> Iterator[None]:
    """PYTHONHASHSEED=HASH_SEED in os.environ while processes are being started."""
    previous = os.environ.get("PYTHONHASHSEED")
    os.environ["PYTHONHASHSEED"] = HASH_SEED
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("PYTHONHASHSEED", None)
        else:
            os.environ["PYTHONHASHSEED"] = previous


def default_jobs() -> int:
    return os.cpu_count() or 1


def run_local(tasks: Iterable[Task], jobs: int, on_result: OnResult) -> None:
    """Run every task on `jobs` spawned worker processes."""
    if not 1 <= jobs <= MAX_JOBS:
        raise ValueError(f"jobs must be in 1..{MAX_JOBS}, got {jobs}")
    window = MAX_IN_FLIGHT_PER_JOB * jobs
    pending = iter(tasks)
    # Workers start lazily, at submit time: the hash seed stays fixed for the pool's life.
    with (
        fixed_hash_seed(),
        cf.ProcessPoolExecutor(
            max_workers=jobs,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=check_worker,
        ) as pool,
    ):
        in_flight: set[cf.Future[RunResult]] = set()
        try:
            while True:
                in_flight |= {
                    pool.submit(run_one, t) for t in _take(pending, window - len(in_flight))
                }
                if not in_flight:
                    return
                done, in_flight = cf.wait(in_flight, return_when=cf.FIRST_COMPLETED)
                for future in done:
                    on_result(future.result())
        except BaseException:
            for future in in_flight:
                future.cancel()
            raise


def run_in_worker(task: Task) -> RunResult:
    """One task in one fresh worker (what `detsim replay` and `detsim sim --seed` use)."""
    results: list[RunResult] = []
    run_local([task], 1, results.append)
    return results[0]


def _take(it: Iterator[Task], n: int) -> list[Task]:
    out: list[Task] = []
    if n <= 0:
        return out
    for task in it:
        out.append(task)
        if len(out) >= n:
            break
    return out
