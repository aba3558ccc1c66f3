"""The checker's timeout is real time, even when the checker is first imported inside a run.

Issue 7 item 6: `detsim.check.checker` used to bind `time.perf_counter` at import; imported for
the first time inside a simulation, it bound the simulator's replacement (the virtual clock,
which stands still while a check computes), and its timeout never fired.
"""

from __future__ import annotations

import sys
import textwrap
import types

from helpers_check import run_script_json

from detsim.check import _realclock

# In a fresh interpreter (so the import really is the first one): inside a running simulation,
# import the checker, then check a history whose full search takes seconds (16 concurrent
# timed-out appends, then a read of a value never written: every ordered subset of the appends
# is tried), with a timeout far shorter than that.
FIRST_IMPORT_INSIDE_A_RUN = textwrap.dedent(
    """
    import json, sys
    sys.path.insert(0, sys.argv[1])
    import detsim

    async def main():
        assert "detsim.check.checker" not in sys.modules
        from detsim.check import check_history
        from helpers_check import concurrent_info_writes

        h = concurrent_info_writes(16, "append")
        result = check_history(h.events, timeout=0.01, explain=False)
        return {"verdict": result.linearizable, "undecided": list(result.undecided_keys),
                "seconds": result.seconds}

    print(json.dumps(detsim.Simulation(seed=1).run(main())))
    """
)


def test_timeout_fires_when_the_checker_is_first_imported_inside_a_simulation() -> None:
    result = run_script_json(FIRST_IMPORT_INSIDE_A_RUN)
    # On the virtual clock the deadline never passes: the search ran to its verdict (False).
    assert result["verdict"] is None and result["undecided"] == ["x"]
    assert result["seconds"] > 0.0  # real time passed; the virtual clock stood still


def test_the_real_clock_is_the_c_function_of_a_private_time_module(monkeypatch) -> None:
    monkeypatch.setattr("time.perf_counter_ns", lambda: 0)  # as a simulator does during a run
    module = _realclock._private_time_module()
    assert module is not sys.modules["time"]
    assert isinstance(module.perf_counter_ns, types.BuiltinFunctionType)
    assert module.perf_counter_ns() > 0 and _realclock.real_seconds() > 0.0
