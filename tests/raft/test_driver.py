"""The Raft driver on its own: lifecycle and shutdown, bounds, bad input, restarts with a
durable and an in-memory state machine, snapshots, reads; on real sockets and disks (asyncio,
loopback, tmp_path) and in a one-host simulation."""

from __future__ import annotations

import asyncio
import dataclasses
import socket
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

import detsim
from detsim.raft import (
    MemoryKV,
    NodeStopped,
    RaftNode,
    RaftNodeConfig,
    ReadIndexDropped,
    encode_command,
)
from detsim.raft import driver as driver_module
from detsim.raft.core.messages import Entry, Heartbeat, VoteRequest
from detsim.raft.storage import Storage

FAST = {"election_ticks": 10}


def config(data_dir: str, node_id: str = "n1", **kw: Any) -> RaftNodeConfig:
    kw.setdefault("tick_interval_s", 0.01)  # real time: a 0.1-0.2 s election timeout
    return RaftNodeConfig(
        node_id=node_id,
        raft_addr=kw.pop("raft_addr", ("127.0.0.1", 0)),
        peers=kw.pop("peers", {}),
        data_dir=data_dir,
        secret=b"s",
        **kw,
    )


async def wait_for(cond: Any, timeout_s: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not cond():
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


async def lead(node: RaftNode) -> None:
    await wait_for(lambda: node.running and node.core.role_name == "leader")


class DurableKV(MemoryKV):
    """A MemoryKV whose state and applied index survive a restart (as SQLite's would), kept
    in a dict the test owns; it records every index it is asked to apply."""

    def __init__(self, disk: dict[str, Any]) -> None:
        super().__init__()
        self.disk = disk
        self.data = dict(disk.get("data", {}))
        self._applied = disk.get("applied", 0)
        self.seen: list[int] = disk.setdefault("seen", [])

    async def apply(self, entries: Sequence[Entry]) -> list[Any]:
        results = await super().apply(entries)
        self.seen.extend(e.index for e in entries)
        self.disk["data"], self.disk["applied"] = dict(self.data), self._applied
        return results


# --- real asyncio, real sockets and files -----------------------------------------------------


def test_a_single_node_on_real_sockets_and_disk(tmp_path: Path) -> None:
    async def main() -> None:
        node = RaftNode(config(str(tmp_path)), MemoryKV())
        async with node:
            await lead(node)
            assert await node.propose(encode_command("set", b"a", b"1")) is None
            assert await node.propose(encode_command("set", b"a", b"2")) == b"1"
            assert await node.propose(encode_command("get", b"a")) == b"2"
            await node.read_index()
            status = node.status()
            assert status["role"] == "leader" and status["voters"] == ["n1"]
            assert status["applied_index"] == status["commit_index"] == status["last_log_index"]
        # Clean shutdown: no task of ours is left behind.
        others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        assert others == []

    asyncio.run(main())


def free_ports(count: int) -> list[int]:
    socks = [socket.socket() for _ in range(count)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def test_three_nodes_on_loopback_replicate(tmp_path: Path) -> None:
    ports = free_ports(3)
    ids = ["n1", "n2", "n3"]
    addrs = {nid: ("127.0.0.1", port) for nid, port in zip(ids, ports, strict=True)}

    async def main() -> None:
        nodes = [
            RaftNode(
                config(
                    str(tmp_path / nid),
                    nid,
                    raft_addr=addrs[nid],
                    peers={p: a for p, a in addrs.items() if p != nid},
                ),
                MemoryKV(),
            )
            for nid in ids
        ]
        for node in nodes:
            await node.__aenter__()
        try:
            await wait_for(lambda: any(n.core.role_name == "leader" for n in nodes))
            leader = next(n for n in nodes if n.core.role_name == "leader")
            for k in range(10):
                await leader.propose(encode_command("set", b"k", b"%d" % k))
            last = leader.core.last_index
            await wait_for(lambda: all(n.core.applied == last for n in nodes))
            sms = [n.state_machine for n in nodes]
            assert all(isinstance(sm, MemoryKV) and sm.data == {b"k": b"9"} for sm in sms)
        finally:
            for node in nodes:
                await node.stop()

    asyncio.run(main())


def test_cancel_fails_every_pending_future_and_closes_everything(tmp_path: Path) -> None:
    async def main() -> None:
        node = RaftNode(config(str(tmp_path)), MemoryKV())
        task = asyncio.create_task(node.run())
        await lead(node)
        # Three proposals queued (none taken by the loop yet), then the node stops.
        waiting = [asyncio.create_task(node.propose(b"x")) for _ in range(3)]
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        for w in waiting:
            with pytest.raises(NodeStopped):
                await w
        with pytest.raises(NodeStopped):
            await node.propose(b"y")
        assert node.transport.peers == {} and node.transport._closed
        assert [t for t in asyncio.all_tasks() if t is not asyncio.current_task()] == []

    asyncio.run(main())


async def boot_durable_kv(tmp_path: Path, disk: dict[str, Any], count: int) -> int:
    """Run one node on `tmp_path` with a DurableKV on `disk`, write `count` keys, stop; the
    applied index it reached."""
    node = RaftNode(config(str(tmp_path)), DurableKV(disk))
    async with node:
        await lead(node)
        for k in range(count):
            await node.propose(encode_command("set", b"k%d" % k, b"v"))
        return node.core.applied


def test_a_durable_state_machine_is_never_given_an_entry_twice(tmp_path: Path) -> None:
    disk: dict[str, Any] = {}

    async def main() -> None:
        first = await boot_durable_kv(tmp_path, disk, 5)
        second = await boot_durable_kv(tmp_path, disk, 5)
        assert second > first
        seen = disk["seen"]
        assert seen == list(range(1, second + 1)), seen  # each index once, in order
        assert len(disk["data"]) == 5

    asyncio.run(main())


def test_a_durable_state_machine_ahead_of_a_lagging_durable_commit_index(tmp_path: Path) -> None:
    """A Ready that only moves the commit index is written without an fsync (ready.py), so a
    power loss may leave the durable commit index below what a durable state machine applied.
    The node starts (those entries were committed and are in its durable log), applies nothing
    twice; a state machine past the durable *log* still stops it."""
    disk: dict[str, Any] = {}

    async def lose_the_commit_index() -> None:
        storage = Storage(str(tmp_path))
        restored = storage.load()
        assert restored.hard_state.commit == disk["applied"]
        storage.hard_state = dataclasses.replace(restored.hard_state, commit=1)
        await storage.sync()  # what a power loss before the commit's fsync leaves
        storage.close()

    async def main() -> None:
        first = await boot_durable_kv(tmp_path, disk, 5)
        await lose_the_commit_index()
        second = await boot_durable_kv(tmp_path, disk, 5)
        assert second > first
        assert disk["seen"] == list(range(1, second + 1))  # each index once, in order
        disk["applied"] = second + 100
        with pytest.raises(RuntimeError, match="past the durable log"):
            await boot_durable_kv(tmp_path, disk, 0)

    asyncio.run(main())


def test_an_in_memory_state_machine_is_rebuilt_from_snapshot_and_log(tmp_path: Path) -> None:
    async def main() -> None:
        node = RaftNode(config(str(tmp_path), snapshot_threshold_entries=4), MemoryKV())
        async with node:
            await lead(node)
            for k in range(10):
                await node.propose(encode_command("set", b"k%d" % k, b"v%d" % k))
            await wait_for(lambda: node.stats.snapshots_taken >= 1)
            index = await node.snapshot_now()
            assert index == node.core.applied == node.core.snapshot_meta.index
            await node.propose(encode_command("set", b"after", b"snap"))
            before = node.state_machine
        again = RaftNode(config(str(tmp_path)), MemoryKV())
        async with again:
            await lead(again)
            await again.read_index()
            assert isinstance(before, MemoryKV) and isinstance(again.state_machine, MemoryKV)
            assert again.state_machine.data == before.data
            assert again.core.snapshot_meta.index == index

    asyncio.run(main())


# --- one simulated host: bounds and bad input -------------------------------------------------


def in_sim(body: Any, seed: int = 1) -> Any:
    sim = detsim.Simulation(seed=seed)
    host = sim.add_node("h", ip="10.0.0.1")

    async def main() -> Any:
        return await host.spawn(body())

    return sim.run(main())


def test_messages_a_peer_should_never_send_are_dropped_and_counted() -> None:
    async def body() -> None:
        node = RaftNode(config("/d", tick_interval_s=0.1), MemoryKV())
        async with node:
            await lead(node)
            term = node.core.term
            node._deliver(Heartbeat("n1", "n1", term))  # from itself
            node._deliver(VoteRequest("ghost", "other", term, 0, 0))  # not for us
            await node.propose(b"still fine")
            assert node.stats.protocol_errors == 2
            assert node.core.term == term and node.core.role_name == "leader"

    in_sim(body)


def test_the_inbox_is_bounded() -> None:
    async def body() -> None:
        node = RaftNode(config("/d", tick_interval_s=0.1), MemoryKV())
        async with node:
            await lead(node)
            term = node.core.term
            # No await in between: the loop cannot drain, the bound drops the excess.
            for _ in range(driver_module.MAX_INBOX_MESSAGES + 5):
                node._deliver(Heartbeat("n2", "n1", term - 1))
            assert node.stats.inbox_dropped == 5
            await node.propose(b"x")
            assert node.stats.messages_stepped == driver_module.MAX_INBOX_MESSAGES

    in_sim(body)


def test_a_read_with_no_leader_fails_safe_to_retry() -> None:
    async def body() -> None:
        # Two members, the other never up: no leader, ever.
        node = RaftNode(
            config("/d", tick_interval_s=0.1, peers={"n2": ("10.0.0.2", 7000)}), MemoryKV()
        )
        async with node:
            await asyncio.sleep(3.0)
            assert node.core.leader is None
            with pytest.raises(ReadIndexDropped):
                await node.read_index()

    in_sim(body)


@pytest.mark.parametrize(
    "bad",
    [
        {"snapshot_threshold_entries": 0},
        {"tick_interval_s": 0.0},
        {"read_timeout_ticks": 0},
        {"raft": {"election_ticks": 1}},  # the core's own rule: heartbeat < election
    ],
)
def test_a_bad_config_is_refused_at_construction(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        RaftNode(config("/d", **bad), MemoryKV())
