"""detsim.check: histories, their recorder, and the linearizability checker.

Public names (DESIGN.md "Histories and checkers"): `check_history` and its `CheckResult`; the
history format (`Event`, `Operation`, `read_history`, `write_history`, `pair_events`,
`HistoryError`); the redis-py `Recorder` and its `HistoryLog`; `load` for the foreign formats;
`render_html` for counterexamples. This layer imports only the standard library, redis-py and
its own modules (never detsim.sim), so it runs inside a simulation and outside one alike.
"""

from __future__ import annotations

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
from detsim.check.recorder import HistoryLog, Recorder, no_retry

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
