"""Classic anomalies, each not linearizable on the right key, and their fixed variants."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from helpers_check import H, brute_events, concurrent_info_writes

from detsim.check import check_history


def _noise(h: H) -> H:
    """Unrelated, linearizable traffic on key 'y' around the anomaly on 'x'."""
    return h.call(9, "put", "y", "a").call(9, "get", "y", out="a")


def stale_read(fixed: bool) -> H:
    h = _noise(H()).call(1, "put", "x", "1").call(2, "put", "x", "2")
    return h.call(3, "get", "x", out="2" if fixed else "1")


def lost_write(fixed: bool) -> H:
    h = _noise(H()).call(1, "incr", "x", out=1).call(2, "incr", "x", out=2)
    return h.call(3, "get", "x", out="2" if fixed else "1")


def uncommitted_read(fixed: bool) -> H:
    h = _noise(H()).call(1, "put", "x", "0")
    h.inv(2, "put", "x", "1").fail(2, "NOLEADER no leader")
    return h.call(3, "get", "x", out="0" if fixed else "1")


def cas_applied_twice(fixed: bool) -> H:
    h = _noise(H()).call(1, "put", "x", "0").call(1, "cas", "x", ["0", "1"])
    h.inv(2, "cas", "x", ["0", "1"])
    h = h.fail(2, "cas-mismatch") if fixed else h.ok(2)
    return h.call(3, "get", "x", out="1")


def visible_then_gone(fixed: bool) -> H:
    h = _noise(H()).call(1, "put", "x", "1").call(2, "get", "x", out="1")
    return h.call(3, "get", "x", out="1" if fixed else None)


ANOMALIES: dict[str, Callable[[bool], H]] = {
    "stale read": stale_read,
    "lost write": lost_write,
    "read of a failed write": uncommitted_read,
    "cas applied twice": cas_applied_twice,
    "write visible then gone": visible_then_gone,
}


@pytest.mark.parametrize("name", ANOMALIES)
def test_anomaly_is_caught_on_its_key(name: str) -> None:
    events = ANOMALIES[name](False).events
    result = check_history(events)
    assert result.linearizable is False
    assert result.key == "x"
    assert result.failing_op is not None and result.failing_op.key == "x"
    assert result.failing_op in result.window
    assert all(op.key == "x" for op in result.window)
    assert not brute_events(events)


@pytest.mark.parametrize("name", ANOMALIES)
def test_fixed_variant_is_linearizable(name: str) -> None:
    events = ANOMALIES[name](True).events
    result = check_history(events)
    assert result.linearizable is True, result.explain()
    assert brute_events(events)


def test_window_is_the_smallest_proof() -> None:
    # Many good ops, then a stale read: the window starts at the last write, not at the start.
    h = H()
    for i in range(30):
        h.call(1, "put", "x", str(i)).call(2, "get", "x", out=str(i))
    h.call(3, "get", "x", out="28")
    result = check_history(h.events)
    assert result.linearizable is False
    assert [op.describe() for op in result.window] == ['get(x) -> "28"']
    assert result.window_states == ("29",)


def test_info_write_may_take_effect_late_but_not_unhappen() -> None:
    late = H().inv(1, "put", "x", "1").info(1).call(2, "get", "x", out=None)
    late.call(3, "get", "x", out="1")
    assert check_history(late.events).linearizable is True
    gone = H().inv(1, "put", "x", "1").info(1).call(2, "get", "x", out="1")
    gone.call(3, "get", "x", out=None)
    assert check_history(gone.events).linearizable is False


def test_cas_mismatch_is_an_observation() -> None:
    bad = H().call(1, "put", "x", "1").inv(2, "cas", "x", ["1", "2"]).fail(2, "cas-mismatch")
    assert check_history(bad.events).linearizable is False
    ok = H().call(1, "put", "x", "1").inv(3, "put", "x", "3")
    ok.inv(2, "cas", "x", ["1", "2"]).fail(2, "cas-mismatch").ok(3)
    assert check_history(ok.events).linearizable is True


def test_ints_and_their_text_are_the_same_value() -> None:
    h = H().call(1, "incr", "n", out=1).call(1, "get", "n", out="1").call(1, "put", "n", 5)
    h.call(1, "incr", "n", out=6).call(1, "append", "s", "ab", out=2).call(1, "delete", "s", out=1)
    assert check_history(h.events).linearizable is True
    bad = H().call(1, "append", "s", "ab", out=3)  # APPEND's reply is the new length
    assert check_history(bad.events).linearizable is False


def test_register_model_and_kv_empty_model() -> None:
    h = H().call(1, "put", None, 1).call(1, "cas", None, [1, 2]).call(1, "get", None, out=2)
    assert check_history(h.events, model="register").linearizable is True
    assert check_history(H().call(1, "get", "k", out="").events, model="kv-empty").linearizable
    assert check_history(H().call(1, "get", "k", out="").events).linearizable is False
    with pytest.raises(ValueError, match="unknown model"):
        check_history(h.events, model="nope")


def test_timeout_gives_unknown() -> None:
    # 24 concurrent timed-out appends of distinct values, then a read of a value never
    # written: deciding it means trying every ordered subset of the appends.
    h = concurrent_info_writes(24, "append")
    result = check_history(h.events, timeout=0.0)
    assert result.linearizable is None
    assert result.undecided_keys == ("x",)
    assert result.unknown_reason == "timeout"
    assert result.explain().startswith("unknown: time ran out with 1 key(s) undecided: 'x'")
