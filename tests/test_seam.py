"""`detsim.seam`: trace events and buggify for production code, without the simulator.

What would break: raft/kv events missing from traces (the timeline loses leaders and client
operations), a seam draw that differs from `detsim.buggify` (sites not reproducible), or a
seam left filled after a run (production code in the same thread would talk to a dead run).
"""

from __future__ import annotations

import threading

import pytest

import detsim
from detsim import seam
from detsim.fs import _seam as fs_seam


def test_outside_a_simulation_events_are_dropped_and_buggify_is_false() -> None:
    assert seam.current() is None
    seam.event("raft.state", role="leader")  # nothing, no error
    assert not any(seam.buggify(1.0) for _ in range(100))


def _seam_run(seed: int, draws: int) -> tuple[list[bool], list[dict[str, object]]]:
    sim = detsim.Simulation(seed=seed)
    node = sim.add_node("n1", ip="10.0.0.1")

    async def on_node() -> list[bool]:
        seam.event("raft.state", role="leader", term=3)
        return [seam.buggify(0.5) for _ in range(draws)]

    async def main() -> list[bool]:
        return await node.spawn(on_node())

    fired = sim.run(main())
    assert seam.current() is None  # emptied when the run ends
    return fired, [e for e in sim.events if e["kind"] in ("raft.state", "buggify_site")]


def test_inside_a_run_events_carry_the_node_and_buggify_is_the_seeded_draw() -> None:
    outcomes = {}
    for seed in range(1, 9):
        fired, events = _seam_run(seed, draws=64)
        state = [e for e in events if e["kind"] == "raft.state"]
        assert state == [
            {"t": state[0]["t"], "node": "n1", "kind": "raft.state", "role": "leader", "term": 3}
        ]
        sites = [e for e in events if e["kind"] == "buggify_site"]
        assert len(sites) == 1  # one call site, decided once per run
        if sites[0]["enabled"]:
            assert 0 < sum(fired) < 64  # p=0.5 over 64 draws
        else:
            assert not any(fired)
        assert _seam_run(seed, draws=64)[0] == fired  # same seed, same draws
        outcomes[seed] = bool(sites[0]["enabled"])
    assert set(outcomes.values()) == {True, False}  # the site is on in some seeds, off in others


def test_buggify_with_the_simulator_switched_off_is_false() -> None:
    sim = detsim.Simulation(seed=3, buggify=False)

    async def main() -> bool:
        return any(seam.buggify(1.0) for _ in range(50))

    assert sim.run(main()) is False


class _FakeSimulator:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, object]]] = []

    def event(self, kind: str, fields: dict[str, object]) -> None:
        self.events.append((kind, fields))

    def buggify(self, p: float, filename: str, line: int) -> bool:
        return filename == __file__ and line > 0


def test_the_slot_is_per_thread_and_passes_the_callers_site() -> None:
    fake = _FakeSimulator()
    seen: list[object] = []
    seam.install(fake)
    try:
        thread = threading.Thread(target=lambda: seen.append(seam.current()))
        thread.start()
        thread.join()
        seam.event("kv.request", command="GET")
        assert seam.buggify() is True  # the fake fires only for this file's sites
    finally:
        seam.remove(fake)
    assert seen == [None]  # another thread sees no simulation
    assert fake.events == [("kv.request", {"command": "GET"})]
    with pytest.raises(AssertionError, match="not installed"):
        seam.remove(fake)


def test_each_seam_has_its_own_slot_and_names_itself_in_its_asserts() -> None:
    # detsim.fs's seam and this one share their slot code (ThreadSlot), not their slot: the
    # simulator fills both, and a bug in one names the seam it is in.
    fake = _FakeSimulator()
    fs_seam.install(fake)
    try:
        assert fs_seam.current() is fake and seam.current() is None
        with pytest.raises(AssertionError, match=r"^detsim\.fs seam: a simulation is already"):
            fs_seam.install(fake)
        fs_seam.event("records.torn_tail", path="/log")
        seam.event("raft.state", role="leader")  # this seam is empty: dropped
    finally:
        fs_seam.remove(fake)
    assert fs_seam.current() is None
    assert fake.events == [("records.torn_tail", {"path": "/log"})]
    with pytest.raises(AssertionError, match=r"^detsim\.seam: removing a simulation not installed"):
        seam.remove(fake)


def test_a_bad_probability_is_refused_inside_a_run() -> None:
    async def main() -> bool:
        return seam.buggify(1.5)

    with pytest.raises(ValueError, match=r"probability in \[0, 1\]"):
        detsim.Simulation(seed=1).run(main())
    assert seam.current() is None
