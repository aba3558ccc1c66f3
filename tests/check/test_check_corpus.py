"""Every verdict on porcupine's corpus (102 etcd logs + 6 kv histories) matches EXPECTED.tsv."""

from __future__ import annotations

from pathlib import Path

import pytest

from detsim.check import HistoryError, check_history, load

HISTORIES = Path(__file__).resolve().parents[2].parent / "shared" / "histories"
CORPUS = HISTORIES / "porcupine"


def _expected() -> list[tuple[str, str]]:
    if not (CORPUS / "EXPECTED.tsv").exists():
        pytest.skip(f"../shared/histories absent: no third-party corpus at {CORPUS}")
    rows = (CORPUS / "EXPECTED.tsv").read_text().splitlines()[1:]
    return [(r.split("\t")[0], r.split("\t")[1]) for r in rows if r.strip()]


def test_every_verdict_matches_expected() -> None:
    rows = _expected()
    checked = wrong = 0
    mismatches = []
    for name, verdict in rows:
        if verdict not in ("true", "false"):
            continue
        loaded = load(CORPUS / name)
        result = check_history(loaded.ops, model=loaded.model)
        checked += 1
        if result.linearizable is not (verdict == "true"):
            wrong += 1
            mismatches.append((name, verdict, result.linearizable))
        if result.linearizable is False:
            assert result.failing_op is not None and result.failing_op in result.window
    assert checked == 108
    assert mismatches == [], mismatches


def test_empty_log_is_unreadable() -> None:
    rows = dict(_expected())
    assert rows["jepsen/etcd_095.log"] == "n/a"
    with pytest.raises(HistoryError, match="no operations"):
        load(CORPUS / "jepsen/etcd_095.log")


def test_formats_are_detected() -> None:
    _expected()
    etcd = load(CORPUS / "jepsen/etcd_000.log")
    assert (etcd.format, etcd.model) == ("etcd", "register")
    kv = load(CORPUS / "kv/c01-ok.txt")
    assert (kv.format, kv.model) == ("edn", "kv-empty")
    assert {op.key for op in kv.ops} <= {str(i) for i in range(10)}
