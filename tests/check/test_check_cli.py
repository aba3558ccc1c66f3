"""`detsim check`: exit codes, --json lines, bad-input messages, the HTML counterexample."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from helpers_check import H, concurrent_info_writes

from detsim.check import checker, write_history
from detsim.cli.check import command


def _write(tmp_path: Path, name: str, h: H) -> str:
    path = tmp_path / name
    write_history(h.events, path)
    return str(path)


def _good(tmp_path: Path) -> str:
    return _write(tmp_path, "good.jsonl", H().call(1, "put", "x", "1").call(2, "get", "x", out="1"))


def _bad(tmp_path: Path) -> str:
    h = H().call(1, "put", "x", "1").call(1, "put", "x", "2").call(2, "get", "x", out="1")
    return _write(tmp_path, "bad.jsonl", h)


def _run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(command, list(args))
    # A crash would also exit 1, like a violation: only the command's own exits count.
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.stdout, result.stderr


def test_exit_codes(tmp_path: Path) -> None:
    good, bad = _good(tmp_path), _bad(tmp_path)
    broken = tmp_path / "broken.jsonl"
    broken.write_text(Path(good).read_text() + "{not json\n")
    assert command.name == "check"
    assert _run(good)[0] == 0
    code, out, _ = _run(bad)
    assert code == 1 and "not linearizable: key 'x'" in out
    code, _, err = _run(str(broken))
    assert code == 2 and f"{broken}:line 5: invalid JSON" in err
    assert _run(good, bad)[0] == 1
    assert _run(good, bad, str(broken))[0] == 2


def test_json_lines(tmp_path: Path) -> None:
    good, bad = _good(tmp_path), _bad(tmp_path)
    missing = str(tmp_path / "missing.jsonl")
    code, out, _ = _run("--json", good, bad, missing)
    assert code == 2
    lines = [json.loads(line) for line in out.splitlines()]
    assert [(d["file"], d["linearizable"], d["ops"]) for d in lines] == [
        (good, True, 2),
        (bad, False, 3),
        (missing, None, 0),
    ]
    assert all(isinstance(d["seconds"], float) for d in lines)
    assert "cannot read" in lines[2]["error"]


def test_unknown_format_and_empty_file(tmp_path: Path) -> None:
    odd = tmp_path / "odd.txt"
    odd.write_text("\nhello\n")
    empty = tmp_path / "empty.log"
    empty.write_text("")
    code, _, err = _run(str(odd), str(empty))
    assert code == 2
    assert f"{odd}:line 2: unknown format" in err
    assert f"{empty}: no operations" in err


def test_timeout_is_unknown(tmp_path: Path) -> None:
    path = _write(tmp_path, "hard.jsonl", concurrent_info_writes(24, "append"))
    code, out, _ = _run("--json", "--timeout", "0", path)
    assert code == 2 and json.loads(out)["linearizable"] is None
    assert json.loads(out)["reason"] == "timeout"


def test_search_budget_is_unknown_and_said_so(tmp_path: Path, monkeypatch: Any) -> None:
    # The command runs with the checker's default bound; lowered here so the test is quick.
    monkeypatch.setattr(checker, "MAX_SEARCH_BYTES", 1 << 20)
    hard = _write(tmp_path, "hard.jsonl", concurrent_info_writes(12, "append", ("x", "y")))
    code, out, _ = _run(hard, _bad(tmp_path))
    assert code == 2  # unknown beats a violation in another file
    assert f"{hard}: unknown: search budget exhausted (" in out
    assert "configurations, limit 1.0 MiB) with 2 key(s) undecided: 'x', 'y'" in out
    code, out, _ = _run("--json", hard)
    line = json.loads(out)
    assert code == 2 and line["linearizable"] is None and line["reason"] == "search budget"


def test_html_counterexample(tmp_path: Path) -> None:
    page = tmp_path / "out.html"
    code, out, _ = _run("--html", str(page), _good(tmp_path), _bad(tmp_path))
    assert code == 1 and str(page) in out
    text = page.read_text()
    assert text.startswith("<!doctype html>") and "<svg" in text
    assert "process 1" in text and "process 2" in text  # one lane per process
    assert "class='op win bad'" in text  # the failing op, in the window
    assert "class='prefix'" in text  # the end of the longest linearizable prefix
    assert "get(x) -&gt; &quot;1&quot;" in text
    assert "http" not in text.replace("http://www.w3.org/2000/svg", "")  # no external assets


def test_counterexamples_are_computed_only_where_shown(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Issue 7 item 15: --json printed verdicts but paid for every violation's counterexample.
    explained: list[str | None] = []
    real_explain_key = checker.explain_key

    def counting_explain_key(ops: Any, spec: Any, **options: Any) -> dict[str, object]:
        explained.append(ops[0].key)
        return real_explain_key(ops, spec, **options)

    monkeypatch.setattr(checker, "explain_key", counting_explain_key)
    good, bad = _good(tmp_path), _bad(tmp_path)
    h = H().call(1, "put", "y", "1").call(2, "get", "y", out="2")
    other_bad = _write(tmp_path, "other-bad.jsonl", h)
    code, out, _ = _run("--json", good, bad, other_bad)
    assert code == 1 and [json.loads(line)["linearizable"] for line in out.splitlines()] == [
        True,
        False,
        False,
    ]
    assert explained == []  # verdicts only
    page = tmp_path / "out.html"
    assert _run("--json", "--html", str(page), good, bad, other_bad)[0] == 1
    assert explained == ["x"]  # only the file whose page is written
    assert "class='op win bad'" in page.read_text()
    explained.clear()
    code, out, _ = _run(bad, other_bad)
    assert explained == ["x", "y"] and out.count("window:") == 2  # the text shows each one


def test_edn_and_register_inputs(tmp_path: Path) -> None:
    edn = tmp_path / "h.edn"
    edn.write_text(
        "{:process 0, :type :invoke, :f :write, :value 1}\n"
        "{:process 0, :type :ok, :f :write, :value 1}\n"
        "{:process 1, :type :invoke, :f :read, :value nil}\n"
        "{:process 1, :type :ok, :f :read, :value 2}\n"
    )
    code, out, _ = _run(str(edn))
    assert code == 1 and "register model" in out
    assert _run("--model", "kv", str(edn))[0] == 1


def test_the_command_does_not_load_the_recorder() -> None:
    # redis-py is the recorder's: loading it cost every `detsim check` run ~0.1 s of startup.
    code = (
        "import sys, detsim.check, detsim.cli.check\n"
        "assert 'redis' not in sys.modules, 'redis loaded'\n"
        "from detsim.check import Recorder\n"
        "assert Recorder.__module__ == 'detsim.check.recorder'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
