"""Campaigns on Dask: `detsim sim --dask ADDRESS|local` (needs `pip install detsim[dask]`).

Rules:
- `available()` says whether `dask.distributed` imports; the CLI checks it first and exits 2
  with "install detsim[dask]" when it does not. Nothing here imports dask at module level.
- `local` starts a LocalCluster of `jobs` single-threaded worker processes, started with
  PYTHONHASHSEED fixed as local campaigns are; an ADDRESS connects to a running scheduler,
  whose workers should be started with PYTHONHASHSEED=0 too (each result records the worker's
  value; the CLI warns about others).
- Workers run `runner.run_one` and send failing runs' artifacts back; the parent writes them.
- At most `MAX_IN_FLIGHT_PER_JOB * jobs` tasks are submitted at a time.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Sequence
from typing import Any

from detsim.campaign.pool import HASH_SEED, MAX_IN_FLIGHT_PER_JOB, fixed_hash_seed
from detsim.campaign.runner import RunResult, Task, run_one

LOCAL = "local"


def available() -> bool:
    try:
        return importlib.util.find_spec("distributed") is not None
    except (ImportError, ValueError):
        return False


def run_dask(
    tasks: Sequence[Task], address: str, jobs: int, on_result: Callable[[RunResult], None]
) -> None:
    import distributed

    with fixed_hash_seed():
        cluster: Any = None
        if address == LOCAL:
            cluster = distributed.LocalCluster(
                n_workers=jobs,
                threads_per_worker=1,
                processes=True,
                env={"PYTHONHASHSEED": HASH_SEED},
            )
        try:
            with distributed.Client(cluster if cluster is not None else address) as client:
                _drain(client, tasks, jobs, on_result)
        finally:
            if cluster is not None:
                cluster.close()


def _drain(
    client: Any, tasks: Sequence[Task], jobs: int, on_result: Callable[[RunResult], None]
) -> None:
    import distributed

    window = MAX_IN_FLIGHT_PER_JOB * max(jobs, 1)
    queue = list(reversed(tasks))
    first = [
        client.submit(run_one, queue.pop(), pure=False) for _ in range(min(window, len(queue)))
    ]
    running = distributed.as_completed(first)
    for future in running:
        on_result(future.result())
        if queue:
            running.add(client.submit(run_one, queue.pop(), pure=False))
