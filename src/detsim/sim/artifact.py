"""Artifacts: one JSON file per run, enough to understand and replay it.

Format (DESIGN.md, "Trace, artifacts, determinism"):
`{"name", "seed", "status": "passed"|"failed", "duration_ms", "virtual_seconds", "trace_hash",
"config", "failure", "events": [{"t", "node", "kind", ...}], "events_dropped", "replay"}`.
`replay` says how to rebuild the run: `{"kind": "scenario"|"pytest", ...}`; `detsim replay`
reads it. Writing is atomic (temp file, then rename), so a killed campaign leaves no half file.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from detsim.sim.world import Simulation

MAX_ARTIFACT_EVENTS = 200_000
MAX_FAILURE_CHARS = 20_000


def build(
    sim: Simulation,
    name: str,
    status: str,
    failure: str | None,
    replay: dict[str, Any] | None = None,
) -> dict[str, Any]:
    events = sim.events[-MAX_ARTIFACT_EVENTS:]
    return {
        "name": name,
        "seed": sim.seed,
        "status": status,
        "duration_ms": round(sim.wall_seconds * 1000),
        "virtual_seconds": round(sim.now, 6),
        "trace_hash": sim.trace_hash,
        "config": sim.config(),
        "failure": None if failure is None else failure[:MAX_FAILURE_CHARS],
        "events": events,
        "events_dropped": sim.trace.dropped + max(0, len(sim.trace.events) - len(events)),
        "replay": replay or {},
    }


def write(artifact: dict[str, Any], directory: str | os.PathLike[str]) -> Path:
    """Write `artifact` as `<dir>/<name>-seed<seed>.json` atomically; return the path."""
    out_dir = Path(directory)
    out_dir.mkdir(parents=True, exist_ok=True)
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in artifact["name"])[:120]
    path = out_dir / f"{safe}-seed{artifact['seed']}.json"
    fd, tmp = tempfile.mkstemp(dir=out_dir, prefix=".artifact-", suffix=".json")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(artifact, f, default=repr)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read an artifact, with a clear error for anything that is not one."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: not a readable artifact: {exc}") from exc
    missing = [k for k in ("name", "seed", "trace_hash", "replay") if k not in (data or {})]
    if not isinstance(data, dict) or missing:
        raise ValueError(f"{path}: not a detsim artifact (missing {', '.join(missing)})")
    return data
