"""The planted-bug catalogue: every mutant plants and reverts cleanly, really changes what the
code it patches does (one targeted check each), and `detsim mutants` prints its table and its
JSON lines. The full sweep (every bug against the default campaign) is `slow`."""

from __future__ import annotations

import asyncio
import json
import random
import types
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from click.testing import CliRunner

from detsim.campaign import pool, replay
from detsim.campaign.catalogue import ENV_MODULES
from detsim.campaign.runner import Task
from detsim.campaign.scenario import Scenario, Verdict
from detsim.cli import main
from detsim.kv.commands import Set, encode_write
from detsim.kv.server import KVServer
from detsim.kv.statemachine import KVStateMachine, SnapshotError
from detsim.mutants import MUTANTS, get, plant, planted, revert
from detsim.mutants import scenarios as mutant_scenarios
from detsim.mutants.catalogue import CONF_CHANGE_AT_COMMIT
from detsim.raft.core import ConfState
from detsim.raft.core.config import RaftConfig
from detsim.raft.core.errors import ConfChangeRejected
from detsim.raft.core.log import RaftLog
from detsim.raft.core.messages import (
    AppendRequest,
    AppendResponse,
    ConfChange,
    ConfChangeOp,
    Entry,
    EntryKind,
    HardState,
    Heartbeat,
    VoteResponse,
)
from detsim.raft.core.raft import Raft, Role
from detsim.raft.core.ready import Ready
from detsim.raft.driver import RaftNode
from detsim.raft.storage import Storage
from detsim.raft.storage._log import SegmentedLog


@pytest.fixture(autouse=True)
def _nothing_planted() -> Iterator[None]:
    revert()
    yield
    revert()


def test_the_catalogue_has_at_least_14_distinct_bugs() -> None:
    names = [m.name for m in MUTANTS]
    assert len(names) >= 14
    assert len(set(names)) == len(names)
    assert all(m.description and "\n" not in m.description for m in MUTANTS)


@pytest.mark.parametrize("mutant", MUTANTS, ids=lambda m: m.name)
def test_each_mutant_plants_and_reverts_exactly(mutant: Any) -> None:
    originals = [(p.owner, p.attr, p.owner.__dict__[p.attr]) for p in mutant.patches]
    plant(mutant)
    assert planted() == mutant.name
    for owner, attr, original in originals:
        assert owner.__dict__[attr] is not original
    revert()
    assert planted() is None
    for owner, attr, original in originals:
        assert owner.__dict__[attr] is original


def test_planting_one_mutant_reverts_the_previous_one() -> None:
    first, second = MUTANTS[0], MUTANTS[1]
    original = first.patches[0].owner.__dict__[first.patches[0].attr]
    plant(first)
    plant(second)
    assert planted() == second.name
    assert first.patches[0].owner.__dict__[first.patches[0].attr] is original


# --- one targeted check per mutant: the clean code and the planted bug differ ----------------


def differs(bug: str, probe: Callable[[], object]) -> tuple[object, object]:
    """`probe()` clean, then with `bug` planted."""
    clean = probe()
    plant(get(bug))
    try:
        return clean, probe()
    finally:
        revert()


def follower(node_id: str = "a") -> Raft:
    config = RaftConfig(node_id, pre_vote=False, check_quorum=False)
    return Raft(config, random.Random(0), initial_conf=ConfState.of(["a", "b", "c"]))


def leader() -> Raft:
    """`a`, leader of term 2 (bootstrap entries 1..3 of term 1, its empty entry at 4)."""
    r = follower()
    r.campaign()
    r.step(VoteResponse("b", "a", r.term, granted=True))
    assert r.role is Role.LEADER and r.term == 2 and r.log.last_index() == 4
    r.advance(r.ready())  # the driver made the empty entry durable: the leader counts itself
    return r


def log_of(terms: list[int], committed: int = 0) -> RaftLog:
    entries = [Entry(t, i + 1, EntryKind.NORMAL, b"") for i, t in enumerate(terms)]
    return RaftLog(None, entries, committed, 0)


def test_vote_for_stale_log() -> None:
    # Candidate: a longer log ending in term 1; ours ends in term 2.
    assert differs("vote_for_stale_log", lambda: log_of([1, 2]).is_up_to_date(5, 1)) == (
        False,
        True,
    )


def test_conflict_not_truncated() -> None:
    conflicting = [Entry(3, 2, EntryKind.NORMAL, b"")]
    assert differs("conflict_not_truncated", lambda: log_of([1, 2]).find_conflict(conflicting)) == (
        2,
        0,
    )


def test_prev_index_off_by_one() -> None:
    # We hold 1..2; the leader's prev_index 3 (term 2) is past our log: must be refused.
    result = differs("prev_index_off_by_one", lambda: log_of([1, 2]).maybe_append(3, 2, 0, ()))
    assert result == (None, (3, 0))


def test_apply_before_commit() -> None:
    clean, bugged = differs("apply_before_commit", lambda: log_of([1, 1]).committed_to_apply(1000))
    assert clean == [] and [e.index for e in bugged] == [1, 2]  # type: ignore[attr-defined]


def test_commit_previous_term() -> None:
    def probe() -> int:
        old = leader()
        old.propose(b"x")  # index 5, term 2, never committed
        restarted = Raft(
            RaftConfig("a", pre_vote=False, check_quorum=False),
            random.Random(0),
            hard_state=HardState(term=2, vote="a", commit=3),
            entries=old.entries(1, 6),
        )
        restarted.campaign()
        restarted.step(VoteResponse("c", "a", 3, granted=True))  # leader of term 3, entry 6
        restarted.step(AppendResponse("b", "a", 3, index=5))  # b holds 5 (term 2), not 6
        return restarted.commit

    assert differs("commit_previous_term", probe) == (3, 5)


def test_leader_keeps_role() -> None:
    def probe() -> tuple[Role, int]:
        r = leader()
        r.step(AppendResponse("b", "a", 5, index=0, reject=True))  # a higher term
        return r.role, r.term

    assert differs("leader_keeps_role", probe) == ((Role.FOLLOWER, 5), (Role.LEADER, 5))


def test_stale_term_append() -> None:
    def probe() -> int:
        r = follower()
        r.step(Heartbeat("b", "a", 3, 3, b""))  # term 3, leader b
        stale = (Entry(2, 4, EntryKind.NORMAL, b"x"),)
        r.step(AppendRequest("c", "a", 2, 3, 1, stale, 3))  # c, leader of term 2
        return r.log.last_index()

    assert differs("stale_term_append", probe) == (3, 4)


def test_election_timer_not_reset() -> None:
    def probe() -> int:
        r = follower()
        r._election_elapsed = 5
        r.step(Heartbeat("b", "a", 1, 3, b""))
        return r._election_elapsed

    assert differs("election_timer_not_reset", probe) == (0, 5)


def test_conf_change_before_noop() -> None:
    def probe() -> object:
        r = leader()  # its term's empty entry (index 4) is not committed yet
        try:
            return r.propose_conf_change(ConfChange(ConfChangeOp.REMOVE, "c"))
        except ConfChangeRejected:
            return "rejected"

    assert differs("conf_change_before_noop", probe) == ("rejected", 5)


def test_the_mutant_still_refuses_a_second_change_while_one_in_its_log_is_uncommitted() -> None:
    plant(get("conf_change_before_noop"))
    r = leader()
    r.propose_conf_change(ConfChange(ConfChangeOp.REMOVE, "c"))
    with pytest.raises(ConfChangeRejected):
        r.propose_conf_change(ConfChange(ConfChangeOp.ADD_LEARNER, "d"))


def test_conf_change_at_commit_is_kept_out_of_the_catalogue_as_equivalent() -> None:
    assert CONF_CHANGE_AT_COMMIT.name not in {m.name for m in MUTANTS}

    def probe() -> bool:
        r = leader()
        r.step(AppendResponse("b", "a", 2, index=4))  # the term's empty entry commits
        r.propose_conf_change(ConfChange(ConfChangeOp.ADD_LEARNER, "d"))
        return "d" in r.conf.learners

    clean = probe()
    plant(CONF_CHANGE_AT_COMMIT)
    try:
        assert (clean, probe()) == (True, False)  # it does change when a change takes effect
    finally:
        revert()


# --- driver, storage and store mutants: their one step, on stand-ins for the object -----------


class Calls(list[str]):
    def record(self, name: str) -> Callable[..., Any]:
        async def call(*args: object) -> None:
            self.append(name)

        return call


def test_hard_state_not_synced() -> None:
    def probe() -> list[str]:
        calls = Calls()
        storage = types.SimpleNamespace(
            sync=calls.record("sync"),
            hard_state=None,
            write_hard_state=lambda: calls.append("write"),
        )
        node = types.SimpleNamespace(
            _storage=storage,
            stats=types.SimpleNamespace(syncs=0, syncs_skipped=0),
            _persisted=HardState(term=3, vote=None),
        )
        node._term_or_vote_moves = lambda rd: RaftNode._term_or_vote_moves(node, rd)
        rd = Ready(hard_state=HardState(term=4, vote="b"))  # a new term and a vote
        asyncio.run(RaftNode.__dict__["_persist"](node, rd))
        assert storage.hard_state == rd.hard_state
        return calls

    assert differs("hard_state_not_synced", probe) == (["sync"], [])


def test_append_fsync_skipped() -> None:
    def probe() -> list[str]:
        calls = Calls()
        segment = types.SimpleNamespace(
            file=types.SimpleNamespace(sync_async=calls.record("fsync"))
        )
        log = types.SimpleNamespace(_pending=None, _dirty=[segment], _segments=[segment])
        asyncio.run(SegmentedLog.__dict__["sync"](log))
        return calls

    assert differs("append_fsync_skipped", probe) == (["fsync"], [])


def test_snapshot_keeps_log() -> None:
    def probe() -> list[str]:
        calls = Calls()
        storage = types.SimpleNamespace(
            _snapshots=types.SimpleNamespace(install_staged=calls.record("install")),
            _log=types.SimpleNamespace(discard_all=lambda index: calls.append("discard")),
        )
        asyncio.run(Storage.__dict__["install_snapshot"](storage, types.SimpleNamespace(index=7)))
        return calls

    assert differs("snapshot_keeps_log", probe) == (["install", "discard"], ["install"])


def test_read_without_read_index() -> None:
    def probe() -> list[str]:
        calls = Calls()
        raft = types.SimpleNamespace(running=True, read_index=calls.record("read_index"))
        server = types.SimpleNamespace(
            raft=raft, config=types.SimpleNamespace(request_timeout_s=1.0)
        )
        assert asyncio.run(KVServer.__dict__["_read_barrier"](server)) is None
        return calls

    assert differs("read_without_read_index", probe) == (["read_index"], [])


def test_apply_twice_after_restart() -> None:
    def probe() -> str:
        machine = KVStateMachine()
        entry = Entry(1, 1, EntryKind.NORMAL, encode_write(Set(b"k", b"v")))
        machine.apply_batch([entry])
        try:
            KVStateMachine().restore_image(machine.snapshot_image(), expected_index=1)
        except SnapshotError:
            return "refused"
        return "restored"

    assert differs("apply_twice_after_restart", probe) == ("restored", "refused")


# --- mutant scenarios and the CLI ----------------------------------------------------------


def test_a_mutant_scenario_plants_its_bug_for_its_run_only() -> None:
    seen: list[str | None] = []

    async def main_coroutine() -> Verdict:
        seen.append(planted())
        return Verdict(ok=True, operations=0)

    base = Scenario("base", "a probe", lambda sim, params: main_coroutine())
    bugged = mutant_scenarios._with_mutant(get("apply_before_commit"), base)
    assert bugged.name == "mutant.apply_before_commit.base" and not bugged.expect_pass
    verdict = asyncio.run(bugged.build(None, {}))  # type: ignore[arg-type]
    assert verdict.ok and seen == ["apply_before_commit"] and planted() is None


def test_every_default_store_scenario_has_a_mutant_variant() -> None:
    names = {s.name for s in mutant_scenarios.SCENARIOS}
    base = mutant_scenarios.default_store_scenarios()
    assert base
    assert len(names) == len(base) * len(MUTANTS)
    assert mutant_scenarios.scenario_name(MUTANTS[0].name, base[0]) in names


def test_the_hunt_tries_the_targeted_scenarios_first_and_every_default_one_once() -> None:
    from detsim.scenarios import nemesis
    from detsim.scenarios.catalogue import STORE_SCENARIOS

    order = mutant_scenarios.default_store_scenarios()
    default = [s for s in STORE_SCENARIOS if s.expect_pass]
    assert sorted(order) == sorted(s.name for s in default)  # the whole campaign, once each
    targeted = {s.name for s in default if set(s.families) & set(nemesis.TARGETED)}
    assert {"figure8_5n", "leader_swap", "mute_leader_kill_new_5n"} <= targeted
    assert set(order[: len(targeted)]) == targeted
    rest = [s.name for s in default if s.name not in targeted]
    assert order[len(targeted) :] == rest  # the others keep the catalogue's order


def run_cli(*args: str) -> Any:
    return CliRunner().invoke(main, ["mutants", *args], catch_exceptions=False)


def test_cli_json_one_line_per_bug(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    out = run_cli(
        "--json", "--bug", "apply_before_commit", "--scenario", "calm", "--jobs", "1",
        "--artifacts", str(tmp_path),
    )  # fmt: skip
    assert out.exit_code == 0, out.output
    lines = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    assert [line["bug"] for line in lines] == ["apply_before_commit"]
    assert lines[0]["detected"] is True and lines[0]["seeds"] >= 1 and lines[0]["wall_s"] > 0
    assert sorted(lines[0]) == ["bug", "detected", "seeds", "wall_s"]
    artifacts = sorted(tmp_path.glob("mutant.apply_before_commit.calm-seed*.json"))
    assert artifacts, "the detecting run's artifact names the bug"
    # Its replay plants the bug again: the same failing run, the same trace hash.
    # (Run in a worker directly: this process's registry may have been loaded without it.)
    monkeypatch.setenv(ENV_MODULES, mutant_scenarios.MODULE)
    data = replay.load(artifacts[0])
    spec = data["replay"]
    again = pool.run_in_worker(Task(spec["scenario"], spec["seed"], spec["params"]))
    assert again.trace_hash == data["trace_hash"] and not again.passed


def test_cli_table_and_a_missed_bug_exit_1(tmp_path: Any) -> None:
    # One seed of the calm scenario cannot lose a non-durable vote: a miss, exit status 1.
    out = run_cli(
        "--bug", "hard_state_not_synced", "--scenario", "calm", "--max-seeds", "1",
        "--jobs", "1", "--artifacts", str(tmp_path),
    )  # fmt: skip
    assert out.exit_code == 1, out.output
    lines = out.stdout.splitlines()
    assert lines[0].split() == ["bug", "detected", "seeds", "wall", "s", "cpu", "s", "found", "by"]
    assert lines[2].split()[:3] == ["hard_state_not_synced", "NO", "1"]
    assert "0 of 1 bugs detected" in out.stdout


def test_cli_unknown_bug_is_a_usage_error() -> None:
    out = run_cli("--bug", "no_such_bug")
    assert out.exit_code == 2 and "known:" in out.output


@pytest.mark.slow
def test_every_planted_bug_is_found_by_the_default_campaign(tmp_path: Any) -> None:
    out = run_cli("--json", "--artifacts", str(tmp_path))
    lines = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    assert len(lines) == len(MUTANTS)
    missed = [line["bug"] for line in lines if not line["detected"]]
    assert not missed, f"the campaign missed: {missed}"
