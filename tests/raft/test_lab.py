"""The classic Raft lab scenarios (MIT 6.824 2A-2D style) in the simulator, through the
driver (`RaftNode`), the real transport and the real storage on simulated disks.

Every test runs over several seeds; every Ready of every node feeds `RaftInvariants` (see
lab_cluster.py), and `finish()` runs the full log check and compares the state machines. A
scenario asserts what it is about (a leader, a commit, no commit, a snapshot installed...);
the checker asserts that nothing unsafe happened on the way. Bigger sweeps are marked `slow`.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from typing import Any

import pytest
from lab_cluster import LabCluster

import detsim
from detsim import DiskConfig, NetConfig
from detsim.raft import NotLeader, OutcomeUnknown, RaftError, RaftNode, encode_command
from detsim.raft.core.ready import Ready

SEEDS = 3
FSYNC = DiskConfig(fsync_latency=0.002)


def cmd(k: int, tag: str = "v") -> bytes:
    return encode_command("set", f"k{k % 7}".encode(), f"{tag}{k}".encode())


def total_sent(c: LabCluster) -> int:
    return sum(c.rafts[n].transport.stats.messages_sent for n in c.alive())


async def settle(c: LabCluster, seconds: float) -> None:
    """Let time pass, failing at once on a node error or violation."""
    end = c.sim.now + seconds
    while c.sim.now < end:
        c.raise_errors()
        await asyncio.sleep(min(0.25, end - c.sim.now))
    c.raise_errors()


# --- 2A: elections ----------------------------------------------------------------------------


@pytest.mark.detsim(seeds=SEEDS, disk=FSYNC)
async def test_initial_election(sim: detsim.Simulation) -> None:
    c = LabCluster(sim, 3)
    lead = await c.wait_leader(timeout_s=10.0)
    term = c.raft(lead).core.term
    await settle(c, 5.0)  # no failure: no new election
    assert c.leader() == lead and c.raft(lead).core.term == term
    assert all(c.raft(n).core.term == term for n in c.ids)
    status = c.raft(lead).status()
    assert status["role"] == "leader" and status["voters"] == ["n1", "n2", "n3"]
    c.finish()


@pytest.mark.detsim(seeds=SEEDS, disk=FSYNC)
async def test_reelection_after_the_leader_is_cut_off(sim: detsim.Simulation) -> None:
    c = LabCluster(sim, 3)
    old = await c.wait_leader()
    c.isolate(old)
    rest = [n for n in c.ids if n != old]
    new = await c.wait_leader(rest)
    assert new != old
    # The old leader hears from no majority: CheckQuorum makes it step down.
    await c.until(lambda: c.raft(old).core.role_name != "leader", 5.0, "old leader steps down")
    sim.net.heal()
    lead = await c.wait_leader()
    assert c.raft(lead).core.term >= c.raft(new).core.term
    await c.propose_until_ok(cmd(1))
    await c.converge()
    c.finish()


@pytest.mark.detsim(seeds=SEEDS, disk=FSYNC)
async def test_no_leader_without_a_majority(sim: detsim.Simulation) -> None:
    c = LabCluster(sim, 3)
    await c.wait_leader()
    sim.net.partition(["n1"], ["n2"], ["n3"])
    await settle(c, 3.0)  # past CheckQuorum's election timeout
    for _ in range(10):
        assert c.leaders() == []
        await settle(c, 1.0)
    sim.net.heal()
    await c.wait_leader()
    await c.propose_until_ok(cmd(1))
    await c.converge()
    c.finish()


# --- 2B: agreement ----------------------------------------------------------------------------


@pytest.mark.detsim(seeds=SEEDS, disk=FSYNC)
async def test_agreement_despite_one_follower_down(sim: detsim.Simulation) -> None:
    c = LabCluster(sim, 3)
    lead = await c.wait_leader()
    down = next(n for n in c.ids if n != lead)
    c.kill(down)
    for k in range(5):
        await c.propose(lead, cmd(k))
    up = [n for n in c.ids if n != down]
    target = c.raft(lead).core.last_index
    await c.until(lambda: all(c.applied(n) == target for n in up), 10.0, "the two agree")
    c.restart(down)
    await c.converge()
    assert c.sms[down].data == c.sms[lead].data
    c.finish()


@pytest.mark.detsim(seeds=SEEDS, disk=FSYNC)
async def test_no_commit_without_a_majority(sim: detsim.Simulation) -> None:
    c = LabCluster(sim, 5)
    lead = await c.wait_leader()
    await c.propose(lead, cmd(0))
    follower = next(n for n in c.ids if n != lead)
    minority = [lead, follower]
    majority = [n for n in c.ids if n not in minority]
    sim.net.partition(minority, majority)
    commit = c.commit(lead)
    pending = c.nodes[lead].spawn(c.raft(lead).propose(cmd(1, "lost")))
    await settle(c, 1.0)
    # Appended on two of five: never committed there.
    assert c.raft(lead).core.last_index > commit
    assert c.commit(lead) == commit and c.commit(follower) == commit
    with pytest.raises(OutcomeUnknown):
        await pending  # CheckQuorum deposes the leader: its uncommitted proposal is in doubt
    # (In doubt indeed: healed before the majority elects, the old leader's longer log could
    # win the next election and commit it. Once the majority has a leader, it cannot.)
    await c.wait_leader(majority)
    sim.net.heal()
    await c.propose_until_ok(cmd(2))
    await c.converge()
    assert all(b"lost1" not in c.sms[n].data.values() for n in c.ids)
    c.finish()


@pytest.mark.detsim(seeds=SEEDS, disk=FSYNC)
async def test_concurrent_proposals(sim: detsim.Simulation) -> None:
    c = LabCluster(sim, 3)
    lead = await c.wait_leader()
    node = c.raft(lead)

    async def many() -> list[Any]:
        return await asyncio.gather(
            *(node.propose(encode_command("append", b"log", b"%d," % k)) for k in range(30))
        )

    lengths = await c.nodes[lead].spawn(many())
    # Each append saw a distinct length: every proposal applied exactly once, in some order.
    assert sorted(lengths) == sorted(set(lengths)) and len(lengths) == 30
    await c.converge()
    items = c.sms[lead].data[b"log"].decode().rstrip(",").split(",")
    assert sorted(int(x) for x in items) == list(range(30))
    # Group commit: thirty proposals did not take thirty syncs each on the leader.
    assert node.stats.syncs < node.stats.entries_applied + 30
    c.finish()


@pytest.mark.detsim(seeds=SEEDS, disk=FSYNC)
async def test_not_leader_carries_the_hint(sim: detsim.Simulation) -> None:
    c = LabCluster(sim, 3)
    lead = await c.wait_leader()
    follower = next(n for n in c.ids if n != lead)
    with pytest.raises(NotLeader) as info:
        await c.propose(follower, cmd(0))
    assert info.value.leader_hint == lead
    c.finish()


@pytest.mark.detsim(seeds=SEEDS, disk=FSYNC)
async def test_a_partitioned_old_leader_rejoins(sim: detsim.Simulation) -> None:
    c = LabCluster(sim, 3)
    old = await c.wait_leader()
    await c.propose(old, cmd(0))
    c.isolate(old)
    stale = [c.nodes[old].spawn(c.raft(old).propose(cmd(k, "stale"))) for k in range(3)]
    rest = [n for n in c.ids if n != old]
    await c.wait_leader(rest)
    for k in range(3):
        await c.propose_until_ok(cmd(k, "new"), among=rest)
    sim.net.heal()
    await c.converge()
    for task in stale:
        with pytest.raises(RaftError):
            await task
    assert all(not v.startswith(b"stale") for n in c.ids for v in c.sms[n].data.values())
    c.finish()


@pytest.mark.detsim(seeds=SEEDS, disk=FSYNC)
async def test_backup_over_divergent_uncommitted_entries(sim: detsim.Simulation) -> None:
    # 6.824's TestBackup2B: leaders cut off with 50+ uncommitted entries, others move on.
    c = LabCluster(sim, 5)
    lead = await c.wait_leader()
    await c.propose(lead, cmd(0))
    other = next(n for n in c.ids if n != lead)
    sim.net.partition([lead, other], [n for n in c.ids if n not in (lead, other)])
    stale = [c.nodes[lead].spawn(c.raft(lead).propose(cmd(k, "a"))) for k in range(60)]
    majority = [n for n in c.ids if n not in (lead, other)]
    lead2 = await c.wait_leader(majority)
    for k in range(55):
        await c.propose(lead2, cmd(k, "b"))
    # Cut the new leader off with one follower too, and give it 50 more uncommitted entries.
    third = next(n for n in majority if n != lead2)
    others = [n for n in majority if n not in (lead2, third)]
    sim.net.heal()  # partitions add up: heal the first before making the second
    sim.net.partition([lead2, third], [lead, other, *others])
    stale += [c.nodes[lead2].spawn(c.raft(lead2).propose(cmd(k, "c"))) for k in range(50)]
    lead3 = await c.wait_leader([lead, other, *others])
    for k in range(55):
        await c.propose_until_ok(cmd(k, "d"), among=[lead, other, *others])
    assert lead3 in (lead, other, *others)
    sim.net.heal()
    await c.propose_until_ok(cmd(99, "e"))
    await c.converge()
    for task in stale:
        with pytest.raises(RaftError):
            await task
    c.finish()


@pytest.mark.detsim(seeds=SEEDS)
async def test_message_counts_are_bounded(sim: detsim.Simulation) -> None:
    c = LabCluster(sim, 3)
    lead = await c.wait_leader()
    await settle(c, 1.0)
    # An idle second: one heartbeat a tick to each follower, each answered: 2 * 2 * 10.
    before = total_sent(c)
    await settle(c, 1.0)
    idle = total_sent(c) - before
    assert 30 <= idle <= 44, idle
    # Ten entries, one after the other: an append and its answer per follower and entry,
    # a commit notice riding on later appends or heartbeats, and the heartbeats meanwhile.
    before, start = total_sent(c), sim.now
    for k in range(10):
        await c.propose(lead, cmd(k))
    elapsed_ticks = (sim.now - start) / 0.1
    spent = total_sent(c) - before
    assert spent <= 10 * 2 * 2 * 2 + 4 * (elapsed_ticks + 1) + 8, (spent, elapsed_ticks)
    c.finish()


# --- 2C: persistence --------------------------------------------------------------------------


async def restart_all(c: LabCluster, *, power_loss: bool) -> None:
    for n in c.ids:
        if power_loss:
            c.crash(n)
        else:
            c.kill(n)
    await asyncio.sleep(0.5)
    for n in c.ids:
        c.restart(n)


@pytest.mark.detsim(seeds=SEEDS, disk=FSYNC)
@pytest.mark.parametrize("power_loss", [False, True])
async def test_persistence_after_restarting_every_node(
    sim: detsim.Simulation, power_loss: bool
) -> None:
    c = LabCluster(sim, 3)
    lead = await c.wait_leader()
    for k in range(5):
        await c.propose(lead, cmd(k))
    acked = c.raft(lead).core.commit
    await restart_all(c, power_loss=power_loss)
    lead = await c.wait_leader()
    # Every acknowledged entry survived (the checker proves it entry by entry).
    assert c.raft(lead).core.commit >= acked
    await c.propose_until_ok(cmd(5))
    await restart_all(c, power_loss=power_loss)
    await c.propose_until_ok(cmd(6))
    await c.converge()
    assert c.sms["n1"].data[b"k6"] == b"v6" and c.sms["n1"].data[b"k5"] == b"v5"
    assert all(c.boots[n] == 2 for n in c.ids)
    c.finish()


@pytest.mark.detsim(seeds=SEEDS, disk=FSYNC)
@pytest.mark.parametrize("who", ["leader", "follower"])
async def test_persistence_after_restarting_one_node(sim: detsim.Simulation, who: str) -> None:
    c = LabCluster(sim, 3)
    for round_ in range(3):
        lead = await c.wait_leader()
        await c.propose_until_ok(cmd(round_))
        victim = lead if who == "leader" else next(n for n in c.ids if n != lead)
        if round_ % 2:
            c.crash(victim)  # power loss: unsynced writes are lost or torn
        else:
            c.kill(victim)
        await c.propose_until_ok(cmd(round_, "during"))
        c.restart(victim)
    await c.converge()
    c.finish()


@pytest.mark.detsim(seeds=SEEDS, disk=FSYNC)
async def test_figure8_with_crashes(sim: detsim.Simulation) -> None:
    # 6.824's TestFigure8: leaders crash (power loss) right after proposing, so entries of old
    # terms sit uncommitted on some nodes while newer leaders come and go.
    c = LabCluster(sim, 5)
    rng = random.Random(sim.seed)
    down: list[str] = []
    await c.wait_leader()
    for k in range(25):
        lead = c.leader()
        if lead is not None:
            c.nodes[lead].spawn(_swallow(c.raft(lead).propose(cmd(k, "f8"))))
        await asyncio.sleep(rng.choice([rng.uniform(0.0, 0.2), rng.uniform(0.5, 2.0)]))
        lead = c.leader()
        if lead is not None and rng.random() < 0.7:
            c.crash(lead)
            down.append(lead)
        if len(c.ids) - len(down) < 3:
            c.restart(down.pop(rng.randrange(len(down))))
        c.raise_errors()
    for n in down:
        c.restart(n)
    await c.propose_until_ok(cmd(100, "end"))
    await c.converge()
    c.finish()


async def _swallow(aw: Any) -> None:
    with contextlib.suppress(RaftError):
        await aw


async def client_loop(c: LabCluster, stop: asyncio.Event, tag: str) -> int:
    """Propose at whoever leads until `stop`; the number of acknowledged proposals."""
    ok = 0
    k = 0
    while not stop.is_set():
        lead = c.leader()
        if lead is None:
            await asyncio.sleep(0.1)
            continue
        k += 1
        try:
            await asyncio.wait_for(c.propose(lead, cmd(k, tag)), 3.0)
            ok += 1
        except (RaftError, detsim.NodeDown, TimeoutError):
            await asyncio.sleep(0.05)
    return ok


@pytest.mark.detsim(seeds=SEEDS, disk=FSYNC, net=NetConfig(stream_timeout=2.0))
async def test_unreliable_network(sim: detsim.Simulation) -> None:
    # Clogs that outlast the stream timeout reset connections (what they held is lost),
    # latency spikes, and partitions, while a client keeps proposing.
    c = LabCluster(sim, 5)
    rng = random.Random(sim.seed)
    await c.wait_leader()
    stop = asyncio.Event()
    client = asyncio.ensure_future(client_loop(c, stop, "u"))
    for _ in range(20):
        a, b = rng.sample(c.ids, 2)
        action = rng.random()
        if action < 0.4:
            sim.net.clog(a, b)
        elif action < 0.6:
            sim.net.set_latency(0.05, rng.uniform(0.1, 0.5), src=a, dst=b)
        elif action < 0.75:
            sim.net.heal()
            sim.net.partition([a, b], [n for n in c.ids if n not in (a, b)])
        else:
            sim.net.heal()
            sim.net.set_latency(0.001, 0.010)
        await asyncio.sleep(rng.uniform(0.2, 2.5))
        c.raise_errors()
    sim.net.heal()
    sim.net.set_latency(0.001, 0.010)
    await asyncio.sleep(3.0)
    stop.set()
    acked = await client
    assert acked > 0
    await c.propose_until_ok(cmd(0, "end"))
    await c.converge()
    c.finish()


@pytest.mark.detsim(seeds=SEEDS, disk=FSYNC)
async def test_churn(sim: detsim.Simulation) -> None:
    c = LabCluster(sim, 5, snapshot_threshold=40)
    rng = random.Random(sim.seed)
    await c.wait_leader()
    stop = asyncio.Event()
    client = asyncio.ensure_future(client_loop(c, stop, "c"))
    down: list[str] = []
    for _ in range(20):
        up = [n for n in c.ids if n not in down]
        if down and (len(up) < 3 or rng.random() < 0.5):
            c.restart(down.pop(rng.randrange(len(down))))
        else:
            victim = rng.choice(up)
            (c.crash if rng.random() < 0.5 else c.kill)(victim)
            down.append(victim)
        await asyncio.sleep(rng.uniform(0.1, 2.0))
        c.raise_errors()
    for n in down:
        c.restart(n)
    await asyncio.sleep(2.0)
    stop.set()
    await client
    await c.propose_until_ok(cmd(0, "end"))
    await c.converge()
    c.finish()


# --- 2D: snapshots ----------------------------------------------------------------------------


@pytest.mark.detsim(seeds=SEEDS, disk=FSYNC, net=NetConfig(stream_timeout=3.0))
@pytest.mark.parametrize("how", ["lagging", "crashed"])
async def test_snapshot_install_to_a_follower(sim: detsim.Simulation, how: str) -> None:
    c = LabCluster(sim, 3, snapshot_threshold=20)
    lead = await c.wait_leader()
    behind = next(n for n in c.ids if n != lead)
    if how == "lagging":
        c.isolate(behind)
    else:
        c.crash(behind)
    for k in range(100):
        await c.propose_until_ok(cmd(k), among=[n for n in c.ids if n != behind])
    # Past the stream timeout: the held appends are reset with their connection, so the
    # laggard cannot catch up from them.
    await settle(c, 4.0)
    lead = c.leader([n for n in c.ids if n != behind])
    assert lead is not None
    # The leader compacted past what the laggard holds: only a snapshot can catch it up.
    assert c.raft(lead).core.snapshot_meta.index > 80
    if how == "lagging":
        sim.net.heal()
    else:
        c.restart(behind)
    await c.converge()
    assert c.raft(behind).stats.snapshots_installed >= 1
    assert c.sms[behind].data == c.sms[lead].data
    c.finish()


# --- membership and leadership transfer -------------------------------------------------------


@pytest.mark.detsim(seeds=SEEDS, disk=FSYNC)
async def test_membership_changes(sim: detsim.Simulation) -> None:
    c = LabCluster(sim, 3, spares=1, snapshot_threshold=20)
    lead = await c.wait_leader(c.voters)
    for k in range(40):
        await c.propose_until_ok(cmd(k), among=c.voters)
    # A learner catches up by snapshot (the leader compacted the entries it lacks).
    lead = await c.wait_leader(c.voters)
    await c.call(lead, lambda r: r.add_learner("n4", c.addresses["n4"]))
    await c.until(lambda: c.applied("n4") == c.applied(lead), 20.0, "the learner catches up")
    assert c.raft("n4").stats.snapshots_installed >= 1
    assert c.raft("n4").status()["role"] == "learner"
    # It is promoted; then a voter is removed.
    await c.call(lead, lambda r: r.promote("n4"))
    assert c.raft(lead).status()["voters"] == ["n1", "n2", "n3", "n4"]
    removed = next(n for n in c.voters if n != lead)
    await c.call(lead, lambda r: r.remove(removed))
    c.checker.forget_node(removed)
    members = [n for n in c.ids if n != removed]
    await c.propose_until_ok(cmd(50), among=members)
    # The leader removes itself: it leads until that commits, then the others elect.
    lead = await c.wait_leader(members)
    await _swallow(c.call(lead, lambda r: r.remove(lead)))
    c.checker.forget_node(lead)
    rest = [n for n in members if n != lead]
    await c.until(
        lambda: c.raft(rest[0]).status()["voters"] == sorted(rest), 20.0, "the leader's removal"
    )
    new = await c.wait_leader(rest)
    assert new != lead
    await c.propose_until_ok(cmd(60), among=rest)
    await c.converge(among=rest)
    assert c.raft(rest[0]).status()["voters"] == sorted(rest)
    c.finish()


@pytest.mark.detsim(seeds=SEEDS, disk=FSYNC)
async def test_leadership_transfer(sim: detsim.Simulation) -> None:
    c = LabCluster(sim, 3)
    lead = await c.wait_leader()
    await c.propose(lead, cmd(0))
    target = next(n for n in c.ids if n != lead)
    await c.call(lead, lambda r: r.transfer_leadership(target))
    assert await c.wait_leader() == target
    await c.propose(target, cmd(1))
    await c.converge()
    c.finish()


# --- reads ------------------------------------------------------------------------------------


@pytest.mark.detsim(seeds=SEEDS, disk=FSYNC)
async def test_read_index_on_a_follower_sees_an_acknowledged_write(
    sim: detsim.Simulation,
) -> None:
    c = LabCluster(sim, 3)
    lead = await c.wait_leader()
    follower = next(n for n in c.ids if n != lead)
    for k in range(5):
        await c.propose(lead, encode_command("set", b"x", b"%d" % k))
        await c.call(follower, lambda r: r.read_index())
        assert c.sms[follower].data[b"x"] == b"%d" % k
    c.finish()


# --- determinism ------------------------------------------------------------------------------


def _build_churn(sim: detsim.Simulation) -> Any:
    async def main() -> int:
        c = LabCluster(sim, 3, snapshot_threshold=10)
        lead = await c.wait_leader()
        for k in range(15):
            await c.propose_until_ok(cmd(k))
        c.crash(lead)
        await c.propose_until_ok(cmd(20))
        c.restart(lead)
        await c.converge()
        c.finish()
        return c.raft("n1").core.applied

    return main()


def test_the_same_seed_gives_the_same_trace() -> None:
    detsim.check_determinism(_build_churn, 5)


@pytest.mark.detsim(seeds=SEEDS, disk=FSYNC, net=NetConfig(stream_timeout=3.0))
async def test_a_snapshot_of_our_own_waits_for_an_incoming_one(sim: detsim.Simulation) -> None:
    # Tiny chunks make the install take many round trips; meanwhile the laggard is asked for
    # a snapshot of its own. Its storage stages both in one place: taking ours mid-stream
    # would destroy the staged chunks (the driver defers ours until the install is done).
    c = LabCluster(sim, 3, snapshot_threshold=30, raft={"snapshot_chunk_bytes": 16})
    lead = await c.wait_leader()
    behind = next(n for n in c.ids if n != lead)
    for k in range(10):
        await c.propose(lead, cmd(k))
    await c.until(lambda: c.applied(behind) == c.applied(lead), 5.0, "the follower applies")
    c.isolate(behind)
    for k in range(80):
        await c.propose_until_ok(cmd(k, "w"), among=[n for n in c.ids if n != behind])
    await settle(c, 4.0)
    asked: list[asyncio.Future[int]] = []

    def ask_mid_stream(nid: str, node: RaftNode, ready: Ready) -> None:
        if nid == behind and ready.snapshot_chunks and ready.snapshot is None and not asked:
            asked.append(asyncio.ensure_future(node.snapshot_now()))  # on the node's loop

    c.on_persisted.append(ask_mid_stream)
    sim.net.heal()
    await c.until(lambda: bool(asked) and asked[0].done(), 20.0, "our own snapshot")
    index = asked[0].result()
    assert c.raft(behind).stats.snapshots_installed >= 1
    assert index >= c.raft(behind).core.snapshot_meta.index > 30
    await c.converge()
    c.finish()


# --- bigger sweeps (make test-slow) -----------------------------------------------------------


@pytest.mark.slow
@pytest.mark.detsim(seeds=100, disk=FSYNC)
async def test_figure8_with_crashes_many_seeds(sim: detsim.Simulation) -> None:
    await test_figure8_with_crashes(sim)


@pytest.mark.slow
@pytest.mark.detsim(seeds=100, disk=FSYNC)
async def test_churn_many_seeds(sim: detsim.Simulation) -> None:
    await test_churn(sim)


@pytest.mark.slow
@pytest.mark.detsim(seeds=100, disk=FSYNC, net=NetConfig(stream_timeout=2.0))
async def test_unreliable_network_many_seeds(sim: detsim.Simulation) -> None:
    await test_unreliable_network(sim)


@pytest.mark.slow
@pytest.mark.detsim(seeds=100, disk=FSYNC)
async def test_membership_changes_many_seeds(sim: detsim.Simulation) -> None:
    await test_membership_changes(sim)


def test_the_same_seed_gives_the_same_trace_across_processes() -> None:
    # Two fresh interpreters with different PYTHONHASHSEED: nothing in the driver, transport
    # or storage may depend on hash order or real entropy.
    detsim.check_determinism(_build_churn, 7, processes=True)
