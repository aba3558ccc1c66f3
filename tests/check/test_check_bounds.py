"""The checker's memory bound (issue 9 note: 157 timed-out ops on 3 keys grew to 6 GB).

check_history's searches hold at most `max_search_bytes` (estimated: search.held_bytes), all
keys together, plus one slice: past it the verdict is None with `unknown_reason` "search
budget", never a crash and never a silent pass. The histories here are the pathological shape:
many concurrent writes that time out, then reads. Appends after a put have no shortcut (every
ordered subset of them is a distinct state); puts and deletes (the overwrite rule) and
append-only keys (the growing-key rule) do, and must still be reported not linearizable.
"""

from __future__ import annotations

import sys
import textwrap

import pytest
from helpers_check import concurrent_info_writes, run_script_json

from detsim.check import check_history, pair_events
from detsim.check.checker import _compiled
from detsim.check.models import get_model
from detsim.check.search import (
    MAX_SEARCH_BYTES,
    SLICE_BUILT_BYTES,
    SLICE_STEPS,
    STR_HEADER_BYTES,
    build,
    config_bytes,
)

MIB = 1 << 20


def _largest_state(n: int, pad: int) -> int:
    """The size of the longest state n appends of concurrent_info_writes can build."""
    return len("".join(f"{i}{'.' * pad};" for i in range(n))) + STR_HEADER_BYTES


def _slack(n: int, pad: int, budget: int) -> int:
    """How far one slice of one key's search (n appends after a put, and a read) may pass the
    budget (search.py "Bounds"): its configurations, states, and a resize of its cache's table
    (counted 1.5 times, at most twice the size it had, below the budget)."""
    configs = SLICE_STEPS * config_bytes(n + 2)
    return configs + SLICE_BUILT_BYTES + _largest_state(n, pad) + 3 * budget // 2


def test_the_budget_stops_a_search_that_would_not_end() -> None:
    h = concurrent_info_writes(40, "append", keys=("a", "b", "c"))
    result = check_history(h.events, max_search_bytes=4 * MIB)
    assert result.linearizable is None and not result
    assert result.unknown_reason == "search budget"
    assert set(result.undecided_keys) == {"a", "b", "c"}  # interleaved: all three undecided
    assert 4 * MIB < result.search_bytes <= 4 * MIB + _slack(40, 0, 4 * MIB)
    assert result.configs * config_bytes(42) < result.search_bytes  # + tables, appended states
    assert result.explain().startswith(
        f"unknown: search budget exhausted ({result.search_bytes / MIB:,.1f} MiB in "
        f"{result.configs:,} configurations, limit 4.0 MiB) with 3 key(s) undecided: "
    )


def test_states_the_search_builds_count_against_the_budget() -> None:
    # The same history with values 1,000 characters longer: the appended states, not the
    # configurations, fill the budget, and the slice ends early (SLICE_BUILT_BYTES).
    short = check_history(concurrent_info_writes(30, "append").events, max_search_bytes=8 * MIB)
    long = concurrent_info_writes(30, "append", pad=1_000)
    result = check_history(long.events, max_search_bytes=8 * MIB)
    assert result.unknown_reason == short.unknown_reason == "search budget"
    assert 8 * MIB < result.search_bytes <= 8 * MIB + _slack(30, 1_000, 8 * MIB)
    assert result.configs * 20 < short.configs


def test_text_that_is_not_ascii_counts_four_bytes_a_character() -> None:
    spec = get_model("kv")
    for text, char_bytes in (("abc", 1), ("d\u00e9j\u00e0", 4), ("\U0001f600", 4)):
        ops = pair_events(concurrent_info_writes(2, "append").inv(9, "append", "x", text).events)
        assert build(*_compiled(ops, spec)).char_bytes == char_bytes
        assert sys.getsizeof(text * 100) <= (len(text * 100) + STR_HEADER_BYTES) * char_bytes


def test_keys_decided_within_the_budget_are_not_named_undecided() -> None:
    # The keys are searched interleaved, so the budget covers the easy keys' searches together;
    # they end (linearizable) and free their caches, the hard key alone runs out.
    easy = concurrent_info_writes(
        7, "append", ("e1", "e2", "e3"), observed=True, reverse=True, never=False
    )
    alone = check_history(easy.events, explain=False)
    assert alone.linearizable is True
    budget = 4 * alone.search_bytes  # room for the hard key's growth while they run
    both = concurrent_info_writes(40, "append", ("hard",), h=easy)
    result = check_history(both.events, max_search_bytes=budget)
    assert result.linearizable is None and result.undecided_keys == ("hard",)


def test_max_search_bytes_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_search_bytes must be at least 1"):
        check_history(concurrent_info_writes(1).events, max_search_bytes=0)


@pytest.mark.parametrize("f", ["put", "delete"])
def test_timed_out_overwrites_are_decided_without_trying_every_subset(f: str) -> None:
    # 3 keys x 52 timed-out puts (the 157 ops): before the overwrite rule, the search
    # tried every subset of each key's puts; now a handful of configurations per put.
    h = concurrent_info_writes(52, f, keys=("k0", "k1", "k2"))
    result = check_history(h.events, explain=False)
    assert result.linearizable is False
    assert result.configs < 5_000


def test_observed_timed_out_puts_still_checked() -> None:
    # Every put read once, in order: linearizable without the final read of "never", not with.
    fine = concurrent_info_writes(60, "put", ("k0", "k1"), observed=True, never=False)
    assert check_history(fine.events).linearizable is True
    h = concurrent_info_writes(60, "put", ("k0", "k1"), observed=True)
    bad = check_history(h.events)
    assert bad.linearizable is False and bad.key == "k0"
    assert bad.failing_op is not None and bad.failing_op.output == "never"
    assert bad.configs < 100_000


def test_timed_out_appends_on_an_append_only_key_are_decided_fast() -> None:
    # Append-only keys (the workloads' a<i> keys): a read still to come must extend the state.
    h = concurrent_info_writes(52, "append", ("k0", "k1", "k2"), mixed=False)
    result = check_history(h.events, explain=False)
    assert result.linearizable is False and result.configs < 5_000
    # Read in the reverse of the order the search tries them: 9 appends took 2,000,000+
    # configurations (the default budget) before; 40 now take a few thousand.
    fine = concurrent_info_writes(
        40, "append", ("k0", "k1"), observed=True, reverse=True, never=False, mixed=False
    )
    result = check_history(fine.events)
    assert result.linearizable is True and result.configs < 5_000
    bad = concurrent_info_writes(40, "append", ("k0",), observed=True, reverse=True, mixed=False)
    result = check_history(bad.events)
    assert result.linearizable is False and result.failing_op is not None
    assert result.failing_op.output == "never"


# In a fresh interpreter: the peak resident memory a bounded check adds, with a budget of
# 48 MiB (estimated), appends of 100-character values building states. The margin is generous,
# so that the test does not depend on the allocator, but far below what the unbounded search
# reached (gigabytes).
PEAK_RSS = textwrap.dedent(
    """
    import json, resource, sys
    sys.path.insert(0, sys.argv[1])
    from detsim.check import check_history, pair_events
    from helpers_check import concurrent_info_writes

    h = concurrent_info_writes(40, "append", keys=("k0", "k1", "k2"), pad=100)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result = check_history(h.events, max_search_bytes=48 << 20)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"verdict": result.linearizable, "reason": result.unknown_reason,
                      "search_bytes": result.search_bytes, "grew_kib": after - before}))
    """
)


def test_peak_memory_of_a_bounded_check_stays_bounded() -> None:
    result = run_script_json(PEAK_RSS)
    assert result["verdict"] is None and result["reason"] == "search budget"
    assert result["search_bytes"] <= 48 * MIB + _slack(40, 100, 48 * MIB)
    assert result["grew_kib"] < 150 * 1024, result  # linux ru_maxrss is in KiB


def test_the_default_budget_is_a_few_hundred_megabytes() -> None:
    assert 128 * MIB <= MAX_SEARCH_BYTES <= 512 * MIB
