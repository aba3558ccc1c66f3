"""detsim.check: histories, their recorder, and the linearizability checker.

Public names (DESIGN.md "Histories and checkers"): `check_history` and its `CheckResult`; the
history format (`Event`, `Operation`, `read_history`, `write_history`, `pair_events`,
`HistoryError`); the redis-py `Recorder` and its `HistoryLog`; `load` for the foreign formats;
`render_html` for counterexamples. This layer imports only the standard library, redis-py and
its own modules (never detsim.sim), so it runs inside a simulation and outside one alike. One
module also imports the Raft driver: `raft_observer`, the feed from detsim.raft's observer hooks
to the Raft invariant checker; this package does not load it.

The recorder's names are imported on first use (PEP 562 module `__getattr__`): they load
redis-py, which `detsim check` and code that only checks histories never need.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from detsim.check.checker import CheckResult, check_history
from detsim.check.formats import LoadedHistory, load
from detsim.check.history import (
    Event,
    HistoryError,
    Operation,
    pair_events,
    read_history,
    write_history,
)
from detsim.check.html import render_html
from detsim.check.models import MODELS

if TYPE_CHECKING:
    from detsim.check.recorder import HistoryLog, Recorder, no_retry

_RECORDER_NAMES = ("HistoryLog", "Recorder", "no_retry")

if not TYPE_CHECKING:  # hidden from type checkers, so a misspelt name is still an error there

    def __getattr__(name: str) -> Any:
        if name not in _RECORDER_NAMES:
            raise AttributeError(f"module 'detsim.check' has no attribute {name!r}")
        value = getattr(importlib.import_module("detsim.check.recorder"), name)
        globals()[name] = value
        return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_RECORDER_NAMES})


__all__ = [
    "MODELS",
    "CheckResult",
    "Event",
    "HistoryError",
    "HistoryLog",
    "LoadedHistory",
    "Operation",
    "Recorder",
    "check_history",
    "load",
    "no_retry",
    "pair_events",
    "read_history",
    "render_html",
    "write_history",
]
