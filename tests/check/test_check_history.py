"""History reading/writing, pairing rules, the EDN subset and the etcd-log reader."""

from __future__ import annotations

import io
import json

import pytest

from detsim.check import (
    Event,
    HistoryError,
    check_history,
    edn,
    pair_events,
    read_history,
    write_history,
)
from detsim.check.formats import parse_lines


def test_round_trip() -> None:
    events = [
        Event(0, 10, 1, "invoke", "cas", "x", ["a", "b"]),
        Event(1, 20, 1, "fail", "cas", "x", None, "cas-mismatch"),
        Event(2, 30, 2, "invoke", "get", "y"),
        Event(3, 40, 2, "ok", "get", "y", "ü"),
    ]
    buf = io.StringIO()
    assert write_history(events, buf) == 4
    assert read_history(io.StringIO(buf.getvalue())) == events
    first = json.loads(buf.getvalue().splitlines()[0])
    assert set(first) == {"index", "time", "process", "type", "f", "key", "value", "error"}


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"index": 0, "process": 1, "type": "invoke", "f": "get", "key": "x"', "invalid JSON"),
        ('{"index": 0, "process": 1, "type": "begin", "f": "get"}', "'type' must be one of"),
        ('{"index": 0, "process": 1, "type": "invoke", "f": "scan"}', "'f' must be one of"),
        ('{"index": "0", "process": 1, "type": "invoke", "f": "get"}', "'index' must be an int"),
        ('{"process": 1, "type": "invoke", "f": "get"}', "missing field(s) index"),
        ('{"index": 0, "process": 1, "type": "invoke", "f": "cas", "value": 3}', "[expected, new]"),
    ],
)
def test_bad_line_names_its_line(line: str, message: str) -> None:
    good = '{"index": 5, "process": 9, "type": "invoke", "f": "get", "key": "z"}'
    with pytest.raises(HistoryError) as err:
        read_history(io.StringIO(f"{good}\n{line}\n"))
    assert err.value.line == 2
    assert message in str(err.value)


# A stale read: put(x, 1) completes, then a get of x returns nil.
STALE_READ = [
    Event(0, 0, 1, "invoke", "put", "x", "1"),
    Event(1, 0, 1, "ok", "put", "x"),
    Event(2, 0, 2, "invoke", "get", "x"),
    Event(3, 0, 2, "ok", "get", "x", None),
]


def test_check_history_takes_the_dicts_of_json_lines() -> None:
    buf = io.StringIO()
    write_history(STALE_READ, buf)
    dicts = [json.loads(line) for line in buf.getvalue().splitlines()]
    from_dicts = check_history(dicts)
    assert from_dicts.linearizable is False and from_dicts.key == "x"
    assert from_dicts.failing_op == check_history(STALE_READ).failing_op
    mixed = [STALE_READ[0], dicts[1], STALE_READ[2], dicts[3]]
    assert check_history(mixed).linearizable is False
    assert check_history(dicts[:2]).linearizable is True


def test_check_history_rejects_anything_else_by_position() -> None:
    with pytest.raises(HistoryError, match=r"takes history events .* got str") as err:
        check_history([STALE_READ[0], '{"index": 1}'])
    assert err.value.line == 2
    ops = pair_events(STALE_READ)
    with pytest.raises(HistoryError, match="got Operation"):
        check_history([STALE_READ[0], ops[1]])  # type: ignore[list-item]
    bad_dict = STALE_READ[1].to_json() | {"type": "done"}
    with pytest.raises(HistoryError, match="'type' must be one of") as err:
        check_history([STALE_READ[0].to_json(), bad_dict])
    assert err.value.line == 2
    assert check_history(ops).linearizable is False  # paired operations still pass through


def test_pairing_rules() -> None:
    inv = Event(0, 0, 1, "invoke", "get", "x")
    with pytest.raises(HistoryError, match="without an outstanding invoke"):
        pair_events([Event(0, 0, 1, "ok", "get", "x")])
    with pytest.raises(HistoryError, match="invokes again"):
        pair_events([inv, Event(1, 0, 1, "invoke", "get", "x")])
    with pytest.raises(HistoryError, match="does not match"):
        pair_events([inv, Event(1, 0, 1, "ok", "get", "y")])
    with pytest.raises(HistoryError, match="not above"):
        pair_events([inv, Event(0, 0, 1, "ok", "get", "x")])
    (op,) = pair_events([inv])  # never completed: open, like info
    assert op.status == "info" and op.complete_index is None


def test_edn_subset() -> None:
    value = edn.loads('{:process 0, :type :invoke, :f :cas, :value [1 -2 "a\\"b" nil true 1.5]}')
    assert value == {
        edn.Keyword("process"): 0,
        edn.Keyword("type"): edn.Keyword("invoke"),
        edn.Keyword("f"): edn.Keyword("cas"),
        edn.Keyword("value"): [1, -2, 'a"b', None, True, 1.5],
    }
    for bad in ("{:a}", '{:a "x}', "#{1 2}", "{:a 1} 2", "[" * 40 + "]" * 40):
        with pytest.raises(edn.EdnError):
            edn.loads(bad)


def test_edn_history_and_errors() -> None:
    lines = [
        "{:process 0, :type :invoke, :f :write, :value 3}\n",
        "{:process :nemesis, :type :info, :f :start, :value nil}\n",
        "{:process 0, :type :ok, :f :write, :value 3}\n",
        "{:process 1, :type :invoke, :f :read, :value nil}\n",
        "{:process 1, :type :ok, :f :read, :value 3}\n",
    ]
    loaded = parse_lines(lines, "h.edn")
    assert (loaded.format, loaded.model) == ("edn", "register")
    assert [op.describe() for op in loaded.ops] == ["put(3)", "get() -> 3"]
    with pytest.raises(HistoryError, match=r"h.edn:line 2: .*:f"):
        parse_lines([lines[0], "{:process 0, :type :ok, :f :scan}\n"], "h.edn")


def test_etcd_log_lines() -> None:
    lines = [
        "some header that is not an op\n",
        "INFO  jepsen.util - 3\t:invoke\t:cas\t[1 4]\n",
        "INFO  jepsen.util - 3\t:fail\t:cas\t[1 4]\n",
        "INFO  jepsen.util - 4\t:invoke\t:write\t2\n",
        "INFO  jepsen.util - 4\t:info\t:write\t2\n",
    ]
    with pytest.raises(HistoryError, match="unknown format"):
        parse_lines(lines, "e.log")
    loaded = parse_lines(lines[1:], "e.log")
    cas, write = loaded.ops
    assert (cas.status, cas.error, cas.value) == ("fail", "cas-mismatch", [1, 4])
    assert (write.status, write.complete_index) == ("info", None)
    with pytest.raises(HistoryError, match=r"e.log:line 1: unreadable value"):
        parse_lines(["INFO  jepsen.util - 3\t:invoke\t:cas\t[1 x]\n"], "e.log")
