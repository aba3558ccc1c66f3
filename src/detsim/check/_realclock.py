"""The checker's real clock: wall time that a running simulation cannot replace.

The checker's `timeout` is real seconds, also when `check_history` runs inside a simulation.
During a run the simulator replaces the attributes of the `time` module (`time.perf_counter`
and its kin read the virtual clock, which stands still while a check computes), so binding
`time.perf_counter` at import is wrong whenever this module is first imported inside a run.

Rule: the clock is read from a private instance of the built-in `time` module, made here from
its import spec. Nobody else holds that module object, so nothing can patch its attributes, and
it does not depend on when this module is first imported. (detsim.check never imports
detsim.sim, so asking the simulator for its saved real clock is not an option.)
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import types
from collections.abc import Callable


def _private_time_module() -> types.ModuleType:
    """A fresh instance of the C `time` module, not the one in `sys.modules`."""
    spec = importlib.machinery.BuiltinImporter.find_spec("time")
    assert spec is not None and spec.loader is not None, "the time module is built in"
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_perf_counter_ns: Callable[[], int] = _private_time_module().perf_counter_ns
# The C function itself, never a Python replacement installed by a simulator.
assert isinstance(_perf_counter_ns, types.BuiltinFunctionType)


def real_seconds() -> float:
    """Seconds on the real monotonic performance counter (an arbitrary origin)."""
    return _perf_counter_ns() / 1e9
