"""The Raft transport on real loopback sockets: the code the simulator tests is the code that runs
on TCP (two transports in one asyncio.run, ports chosen by the OS)."""

from __future__ import annotations

import asyncio

from detsim.raft.core.messages import AppendRequest, Entry, Heartbeat, Message
from detsim.raft.transport import Transport

SECRET = b"loopback secret"


async def wait_for_messages(inbox: list[Message], count: int, timeout_s: float = 10.0) -> None:
    async with asyncio.timeout(timeout_s):
        while len(inbox) < count:
            await asyncio.sleep(0.005)


def test_two_transports_exchange_messages_over_real_tcp() -> None:
    async def main() -> None:
        inbox: dict[str, list[Message]] = {"n1": [], "n2": []}
        a = Transport("n1", ("127.0.0.1", 0), {}, SECRET, inbox["n1"].append)
        b = Transport("n2", ("127.0.0.1", 0), {}, SECRET, inbox["n2"].append)
        await a.start()
        await b.start()
        a.add_peer("n2", b.listen_address)
        b.add_peer("n1", a.listen_address)
        entries = tuple(Entry(1, i, data=bytes([i]) * 1000) for i in range(1, 51))
        a.send(AppendRequest("n1", "n2", 1, 0, 0, entries, 0))
        b.send(Heartbeat("n2", "n1", 1))
        await wait_for_messages(inbox["n2"], 1)
        await wait_for_messages(inbox["n1"], 1)
        assert inbox["n2"] == [AppendRequest("n1", "n2", 1, 0, 0, entries, 0)]
        assert inbox["n1"] == [Heartbeat("n2", "n1", 1)]
        assert a.connected("n2") and b.connected("n1")
        assert a.stats.auth_failed == 0 and b.stats.auth_failed == 0
        # One connection for the pair, dialed by the smaller id.
        assert a.stats.connections_dialed == 1 and b.stats.connections_accepted == 1
        await a.close()
        await b.close()
        others = asyncio.all_tasks() - {asyncio.current_task()}
        assert not others, others  # close() leaves no task behind

    asyncio.run(main())


def test_wrong_secret_on_real_tcp_never_delivers() -> None:
    async def main() -> None:
        inbox: list[Message] = []
        a = Transport("n1", ("127.0.0.1", 0), {}, SECRET, inbox.append)
        b = Transport("n2", ("127.0.0.1", 0), {}, b"other", inbox.append)
        await a.start()
        await b.start()
        a.add_peer("n2", b.listen_address)
        b.add_peer("n1", a.listen_address)
        a.send(Heartbeat("n1", "n2", 1))
        async with asyncio.timeout(10.0):
            while not (a.stats.auth_failed and b.stats.auth_failed):
                a.send(Heartbeat("n1", "n2", 1))
                b.send(Heartbeat("n2", "n1", 1))
                await asyncio.sleep(0.05)
        assert inbox == []
        await a.close()
        await b.close()

    asyncio.run(main())
