"""RAFT.* admin commands through redis-py in the simulator: a joining node added as a learner,
promoted, leadership transferred, a node removed, a snapshot taken, and the digests equal.
Membership commands sent to a follower are forwarded to the leader like writes."""

from __future__ import annotations

import json

import pytest
from kv_cluster import CLIENT_PORT, RAFT_PORT, KVCluster

import detsim
from detsim import DiskConfig

FSYNC = DiskConfig(fsync_latency=0.002)


async def status(c: KVCluster, nid: str) -> dict[str, object]:
    reply = await c.command(nid, "RAFT.STATUS")
    assert isinstance(reply, bytes), reply
    parsed = json.loads(reply)
    assert isinstance(parsed, dict)
    return parsed


@pytest.mark.detsim(seeds=2, disk=FSYNC)
async def test_membership_transfer_and_snapshot(sim: detsim.Simulation) -> None:
    c = KVCluster(sim, spares=1, snapshot_threshold=50)
    lead = await c.wait_leader()
    follower = c.followers(lead)[0]
    for i in range(20):
        assert await c.command(follower, "SET", f"k{i}", f"v{i}") is True
    joining = await status(c, "n4")
    assert joining["voters"] == [] and joining["leader"] is None  # empty, waiting

    # Through a follower: forwarded to the leader.
    n4_raft, n4_client = f"{c.ips['n4']}:{RAFT_PORT}", f"{c.ips['n4']}:{CLIENT_PORT}"
    assert await c.command(follower, "RAFT.ADDLEARNER", "n4", n4_raft, n4_client) == b"OK"
    await c.until(lambda: c.rafts["n4"].core.applied >= c.rafts[lead].core.commit, 20.0, "catch up")
    s4 = await status(c, "n4")
    assert s4["role"] == "learner" and s4["learners"] == ["n4"]
    assert await c.command("n4", "GET", "k7") == b"v7"  # a learner serves linearizable reads
    assert await c.command("n4", "SET", "from-learner", "1") is True  # and forwards writes

    reply = await c.command(lead, "RAFT.PROMOTE", "n4")
    assert reply == b"OK", str(reply)
    assert (await status(c, lead))["voters"] == ["n1", "n2", "n3", "n4"]

    assert await c.command(follower, "RAFT.TRANSFER", "n4") == b"OK"
    await c.until(lambda: c.leader() == "n4", 10.0, "n4 leads")
    assert (await status(c, lead))["leader"] == "n4"

    # Forwarded to n4, whose client address the old leader learned from the ADDLEARNER.
    assert await c.command(lead, "RAFT.REMOVE", lead) == b"OK"  # the old leader removes itself
    await c.until(lambda: lead not in c.rafts["n4"].core.conf.voters, 10.0, "removed")
    snap = await c.command("n4", "RAFT.SNAPSHOT")
    assert isinstance(snap, int) and snap >= 24
    assert (await status(c, "n4"))["snapshot_index"] == snap
    sim.kill(lead)  # removed: stop it, then compare the rest

    # A follower restarted from a snapshot that covers the ADDLEARNER still knows where n4
    # serves clients (the snapshot carries the address books): its writes reach n4.
    other = next(n for n in c.voters if n != lead and n != follower)
    assert isinstance(await c.command(other, "RAFT.SNAPSHOT"), int)
    boot = c.boots[other]
    sim.restart(other)
    await c.until(  # the new boot's RaftNode (c.rafts holds the killed one until init runs)
        lambda: (
            c.boots[other] > boot and c.rafts[other].running and c.rafts[other].core.leader == "n4"
        ),
        20.0,
        "back",
    )
    assert c.rafts[other].core.log.snapshot.index >= snap
    reply = await c.command(other, "SET", "after-restart", "1")
    assert reply is True, str(reply)
    await c.finish()
