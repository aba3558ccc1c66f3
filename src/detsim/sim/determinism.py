"""`check_determinism`: run one seed twice and prove both runs are the same run.

In-process, the two runs share everything but the simulation; with `processes=True` each runs
in a fresh interpreter with a different PYTHONHASHSEED, which also catches iteration over sets
of strings and other hash-order dependence. On divergence, NondeterminismError names the first
event that differs (time, node, kind, fields) — or, when the events agree but the decisions
folded between them do not (a timer deadline, an entropy draw, a scheduling order), the first
event whose decision state differs, which brackets the culprit.

Rules for the children (`processes=True`): a child loads `build`'s file under `CHILD_MODULE_NAME`
when it was the parent's `__main__`, so the script's `if __name__ == "__main__":` block (which is
where users call `check_determinism`) does not run again in the child; and a child never spawns
children (`CHILD_ENV` marks it; a nested `processes=True` raises), so depth is bounded at one.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import os
import pickle
import subprocess
import sys
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from detsim.sim.errors import NondeterminismError, SimulationError
from detsim.sim.world import Simulation

Build = Callable[[Simulation], Coroutine[Any, Any, Any]]
CHILD_TIMEOUT_S = 600.0
HASH_SEEDS = ("1", "2")
CHILD_ENV = "DETSIM_DETERMINISM_CHILD"  # set in a child: it may not spawn children of its own
CHILD_MODULE_NAME = "__detsim_build__"  # the parent's __main__ module, as the child loads it


@dataclass(frozen=True, slots=True)
class RunRecord:
    trace_hash: str
    events: list[list[Any]]  # [t, node, kind, fields, decision], JSON-normalised
    outcome: str  # "ok: <repr>" or "<ExceptionType>: <message>"


def run_once(build: Build, seed: int, sim_kwargs: dict[str, Any]) -> RunRecord:
    sim = Simulation(seed=seed, **sim_kwargs)
    try:
        result = sim.run(build(sim))
        outcome = f"ok: {result!r}"
    except Exception as exc:
        outcome = f"{type(exc).__name__}: {exc}"
    events = json.loads(json.dumps([list(ev) for ev in sim.trace.events], default=repr))
    return RunRecord(sim.trace_hash, events, outcome)


def check_determinism(build: Build, seed: int, processes: bool = False, **sim_kwargs: Any) -> str:
    """Run `build(sim)` twice with `seed`; return the trace hash, or raise NondeterminismError.

    With `processes=True`, `build` must be importable by name (a module-level function).
    """
    if processes:
        _refuse_nested_children()
        first, second = (_run_in_child(build, seed, sim_kwargs, hs) for hs in HASH_SEEDS)
        where = f"two processes (PYTHONHASHSEED={HASH_SEEDS[0]} and {HASH_SEEDS[1]})"
    else:
        first, second = run_once(build, seed, sim_kwargs), run_once(build, seed, sim_kwargs)
        where = "two runs in this process"
    if first.trace_hash != second.trace_hash or first.outcome != second.outcome:
        raise NondeterminismError(f"seed {seed}: {where} diverged: {describe(first, second)}")
    return first.trace_hash


def describe(a: RunRecord, b: RunRecord) -> str:
    for i, (ea, eb) in enumerate(zip(a.events, b.events, strict=False)):
        if ea[:4] != eb[:4]:
            return (
                f"first divergent event #{i} at t={ea[0]}s: first run {_fmt(ea)}; "
                f"second run {_fmt(eb)}"
            )
        if ea[4] != eb[4]:
            return (
                f"event #{i} ({_fmt(ea)}) is the same, but the decisions before it differ "
                f"(timer deadlines, entropy draws or scheduling since event #{i - 1}): "
                "something read real time or real entropy, or depends on hash order"
            )
    if len(a.events) != len(b.events):
        i = min(len(a.events), len(b.events))
        longer = a.events if len(a.events) > len(b.events) else b.events
        return f"one run stops after {i} events; the other goes on with {_fmt(longer[i])}"
    if a.outcome != b.outcome:
        return f"same events, different outcomes: {a.outcome!r} vs {b.outcome!r}"
    return "same events; the decisions after the last event differ"


def _fmt(ev: list[Any]) -> str:
    t, node, kind, fields = ev[:4]
    return f"[t={t} {node} {kind} {fields}]"


def _refuse_nested_children() -> None:
    if os.environ.get(CHILD_ENV):
        raise SimulationError(
            "check_determinism(processes=True) called inside a determinism child process: a "
            'child never spawns children. Call it under `if __name__ == "__main__":` or from '
            "a test, not at the top level of the module that defines `build`"
        )


def _run_in_child(build: Build, seed: int, sim_kwargs: dict[str, Any], hash_seed: str) -> RunRecord:
    module = sys.modules.get(build.__module__)
    path = getattr(module, "__file__", None)
    if "<locals>" in build.__qualname__ or path is None:
        raise SimulationError(
            "check_determinism(processes=True) needs `build` defined at module level in a "
            f"file, got {build.__qualname__} in {build.__module__}"
        )
    module_name = CHILD_MODULE_NAME if build.__module__ == "__main__" else build.__module__
    spec = {
        "module": module_name,
        "path": path,
        "qualname": build.__qualname__,
        "seed": seed,
        "kwargs": base64.b64encode(pickle.dumps(sim_kwargs)).decode(),
        "sys_path": sys.path,
    }
    env = {**os.environ, "PYTHONHASHSEED": hash_seed, CHILD_ENV: "1"}
    proc = subprocess.run(
        [sys.executable, "-c", "from detsim.sim.determinism import _child_main; _child_main()"],
        input=json.dumps(spec),
        capture_output=True,
        text=True,
        env=env,
        timeout=CHILD_TIMEOUT_S,
    )
    if proc.returncode != 0:
        raise SimulationError(
            f"determinism child failed ({proc.returncode}): {proc.stderr[-2000:]}"
        )
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    return RunRecord(out["trace_hash"], out["events"], out["outcome"])


def _child_main() -> None:
    spec = json.loads(sys.stdin.read())
    sys.path[:0] = [p for p in spec["sys_path"] if p not in sys.path]
    mod_spec = importlib.util.spec_from_file_location(spec["module"], spec["path"])
    assert mod_spec is not None and mod_spec.loader is not None
    module = importlib.util.module_from_spec(mod_spec)
    sys.modules[spec["module"]] = module
    mod_spec.loader.exec_module(module)
    build: Any = module
    for part in spec["qualname"].split("."):
        build = getattr(build, part)
    kwargs = pickle.loads(base64.b64decode(spec["kwargs"]))
    record = run_once(build, spec["seed"], kwargs)
    print(
        json.dumps(
            {"trace_hash": record.trace_hash, "events": record.events, "outcome": record.outcome}
        )
    )
