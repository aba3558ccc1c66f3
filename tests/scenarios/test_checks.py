"""The scenario checks have teeth: each flags the damage it exists for."""

from __future__ import annotations

import pytest

from detsim import Simulation
from detsim.check.history import Event
from detsim.scenarios import checks
from detsim.scenarios.workload import Appends


def _appends() -> Appends:
    appends = Appends()
    for token in ("0.1;", "0.2;", "1.1;"):
        appends.attempted[token] = "a0"
    appends.acked["0.1;"] = "a0"
    appends.acked["1.1;"] = "a0"
    return appends


def test_durability_passes_when_every_acked_append_is_there_once() -> None:
    final = {"n1": {"a0": "0.1;1.1;"}, "n2": {"a0": "0.1;0.2;1.1;"}}
    assert checks.durability(_appends(), final, ["a0"]) == []


def test_durability_flags_a_lost_acknowledged_append() -> None:
    lines = checks.durability(_appends(), {"n1": {"a0": "0.1;"}}, ["a0"])
    assert len(lines) == 1 and "missing at n1" in lines[0] and "1.1;" in lines[0]


def test_durability_flags_an_append_applied_twice_and_an_invented_one() -> None:
    lines = checks.durability(_appends(), {"n2": {"a0": "0.1;1.1;1.1;9.9;"}}, ["a0"])
    assert any("applied twice" in line and "1.1;" in line for line in lines)
    assert any("never-attempted" in line and "9.9;" in line for line in lines)


def test_durability_flags_a_member_that_did_not_answer() -> None:
    lines = checks.durability(_appends(), {"n3": {}}, ["a0"])
    assert lines == ["durability: no final read of 'a0' at n3 with faults off"]


def test_convergence_flags_different_digests_and_silent_members() -> None:
    same = {"n1": (10, "abc"), "n2": (10, "abc")}
    assert checks.convergence(same, ["n1", "n2"]) == []
    differ = {"n1": (10, "abc"), "n2": (10, "abd")}
    assert "members differ" in checks.convergence(differ, ["n1", "n2"])[0]
    assert "no RAFT.DIGEST from ['n3']" in checks.convergence(same, ["n1", "n2", "n3"])[0]


def _ev(index: int, process: int, etype: str, f: str, value: object) -> Event:
    return Event(index, index, process, etype, f, "r0", value, None)


def test_linearizability_flags_a_stale_read() -> None:
    history = [
        _ev(0, 0, "invoke", "put", "1"),
        _ev(1, 0, "ok", "put", None),
        _ev(2, 1, "invoke", "get", None),
        _ev(3, 1, "ok", "get", None),  # the acknowledged put is gone
    ]
    lines, result = checks.linearizability(history)
    assert result.linearizable is False and lines[0].startswith("not linearizable: key 'r0'")
    good = [*history[:3], _ev(3, 1, "ok", "get", "1")]
    assert checks.linearizability(good)[0] == []


def _log_history(read_value: str, append_b_done_first: bool = True) -> list[Event]:
    """Two appends ('0.1;' acked with length 4, '1.1;' acked with length 8), then a read."""

    def ev(index: int, process: int, etype: str, f: str, value: object) -> Event:
        return Event(index, index, process, etype, f, "a0", value, None)

    return [
        ev(0, 0, "invoke", "append", "0.1;"),
        ev(1, 0, "ok", "append", 4),
        ev(2, 1, "invoke", "append", "1.1;"),
        ev(3, 1, "ok", "append", 8),
        ev(4, 2, "invoke", "get", None),
        ev(5, 2, "ok", "get", read_value),
    ]


def test_append_logs_accepts_an_exact_log() -> None:
    assert checks.append_logs(_log_history("0.1;1.1;"), ["a0"]) == []


def test_append_logs_flags_a_read_missing_an_acknowledged_append() -> None:
    lines = checks.append_logs(_log_history("0.1;"), ["a0"])
    assert any("misses" in line and "1.1;" in line for line in lines)


def test_append_logs_flags_appends_out_of_real_time_order() -> None:
    lines = checks.append_logs(_log_history("1.1;0.1;"), ["a0"])
    assert any("precedes" in line for line in lines)
    assert any("not its place" in line for line in lines)


def test_append_logs_flags_an_invented_token_and_a_non_prefix_read() -> None:
    history = _log_history("0.1;1.1;9.9;")
    history += [
        Event(6, 6, 3, "invoke", "get", "a0", None, None),
        Event(7, 7, 3, "ok", "get", "a0", "0.1;2.2;", None),
    ]
    lines = checks.append_logs(history, ["a0"])
    assert any("9.9;" in line and "not invoked" in line for line in lines)
    assert any("not a prefix" in line for line in lines)


def test_append_logs_leaves_unobserved_appends_to_the_durability_check() -> None:
    # The read saw only the first append; the second was acknowledged after the read began
    # and nobody read it afterwards (a run that ended before its final reads).
    history = _log_history("0.1;")
    reordered = [history[0], history[1], history[4], history[2], history[3], history[5]]
    events = [
        Event(k, k, e.process, e.type, e.f, e.key, e.value, e.error)
        for k, e in enumerate(reordered)
    ]
    assert checks.append_logs(events, ["a0"]) == []


def test_term_changes_is_quiet_while_every_term_stays() -> None:
    before = {"n1": 4, "n2": 4, "n3": 4}
    assert checks.term_changes(before, dict(before)) == []
    # A node down at the end (or first seen later) is not compared: no move to report.
    assert checks.term_changes(before, {"n1": 4, "n2": 4}) == []
    assert checks.term_changes({"n1": 4}, {"n1": 4, "n4": 9}) == []


def test_term_changes_flags_every_node_whose_term_moved() -> None:
    lines = checks.term_changes({"n1": 4, "n2": 4, "n3": 4}, {"n1": 5, "n2": 4, "n3": 5})
    assert len(lines) == 2
    assert lines[0].startswith("liveness: n1's term moved 4 -> 5 with faults off")
    assert lines[1].startswith("liveness: n3's term moved 4 -> 5")


def test_the_term_watch_catches_followers_that_time_out_under_a_live_leader(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The planted bug (heartbeats stop resetting the election timer) leaves the store serving
    # and converging: only the liveness phase's term watch sees the needless elections. They
    # are rare (PreVote and the followers' leases refuse most), so this test watches longer
    # than the campaign does and searches a few seeds instead of pinning one seed's schedule
    # (a store run's schedule differs between Python versions).
    from detsim.mutants.scenarios import SCENARIOS as MUTANT_SCENARIOS
    from detsim.sim.world import Simulation

    monkeypatch.setattr(checks, "TERM_WATCH_TIMEOUTS", 15)
    name = "mutant.election_timer_not_reset.calm"
    scenario = next(s for s in MUTANT_SCENARIOS if s.name == name)
    params = {"safety_s": 5.0}
    failures = []
    for seed in range(4):
        sim = Simulation(seed=seed, **scenario.simulation(seed, params))
        verdict = sim.run(scenario.build(sim, params))
        failures.append(verdict.failure)
        if not verdict.ok and verdict.failure is not None and "term moved" in verdict.failure:
            assert "with faults off" in verdict.failure
            return
    raise AssertionError(f"no seed of {name} tripped the term watch: {failures}")


def _stops(*stops: tuple[str, BaseException]) -> object:
    from types import SimpleNamespace

    from detsim.scenarios.cluster import NodeStop

    return SimpleNamespace(
        stops=[NodeStop(nid, 0, 1.0, error) for nid, error in stops], every_server=[]
    )


def test_node_stops_allows_a_disk_victims_disk_errors_only() -> None:
    from detsim.fs.records import CorruptRecordError

    full = OSError(28, "No space left on device")
    allowed = _stops(("n1", full), ("n1", CorruptRecordError("/data/x", 10, "bad crc")))
    assert checks.node_stops(allowed, {"n1"}) == []  # type: ignore[arg-type]
    # The same error on a node whose disk was fine, or a bug on the victim, is reported.
    assert len(checks.node_stops(_stops(("n2", full)), {"n1"})) == 1  # type: ignore[arg-type]
    bug = _stops(("n1", ValueError("append at 100: outside (85, 87] of the log")))
    assert "ValueError" in checks.node_stops(bug, {"n1"})[0]  # type: ignore[arg-type]
    invariant = _stops(("n1", AssertionError("Leader Completeness violated")))
    assert len(checks.node_stops(invariant, {"n1"})) == 1  # type: ignore[arg-type]


@pytest.mark.detsim(seeds=2)
async def test_a_node_whose_disk_fills_stops_like_a_process_and_boots_again(
    sim: Simulation,
) -> None:
    # ENOSPC out of the Raft storage ends the node's process (recorded, the host down), not
    # the whole run; a boot on a healthy disk brings it back into the cluster.
    from detsim import DiskConfig
    from detsim.scenarios.cluster import StoreCluster

    cluster = StoreCluster(sim, 3)
    assert await cluster.until(lambda: cluster.agreed_leader() is not None, 30.0)
    victim = next(n for n in cluster.ids if n != cluster.agreed_leader())
    sim.set_disk(victim, DiskConfig(capacity=sim.node(victim).disk.used_bytes))
    for i in range(20):  # writes the victim must append: its log cannot grow
        await cluster.command(cluster.agreed_leader() or "n1", "SET", f"k{i}", "v")
    assert await cluster.until(lambda: not sim.node(victim).alive, 30.0)
    assert [type(s.error) for s in cluster.stops] == [OSError]
    assert checks.node_stops(cluster, {victim}) == []
    sim.set_disk(victim, DiskConfig())
    sim.restart(victim)
    assert await cluster.until(lambda: cluster.agreed_leader() is not None, 30.0)
    leader = cluster.agreed_leader()
    assert leader is not None and await cluster.command(leader, "SET", "after", "v") is True
    commit = cluster.rafts[leader].core.commit
    assert await cluster.until(
        lambda: cluster.running(victim) and cluster.rafts[victim].core.applied >= commit, 30.0
    )
