"""Simulated UDP: loss, duplication and reordering from the seed; cuts drop datagrams."""

from __future__ import annotations

import asyncio

from detsim import NetConfig, Simulation

COUNT = 400


class Collector(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.got: list[int] = []

    def datagram_received(self, data: bytes, addr) -> None:
        self.got.append(int(data))


async def receive_into(collector: Collector) -> None:
    loop = asyncio.get_running_loop()
    await loop.create_datagram_endpoint(lambda: collector, local_addr=("0.0.0.0", 9000))
    await asyncio.Event().wait()


def blast(net: NetConfig, seed: int = 1, cut: bool = False) -> list[int]:
    sim = Simulation(seed=seed, net=net)
    collector = Collector()

    sim.add_node("rx", ip="10.0.0.1", init=lambda: receive_into(collector))
    tx = sim.add_node("tx", ip="10.0.0.2")

    async def sender():
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            asyncio.DatagramProtocol, remote_addr=("rx", 9000)
        )
        for i in range(COUNT):
            transport.sendto(str(i).encode())
            await asyncio.sleep(0.0005)

    async def main():
        if cut:
            sim.net.partition(["rx"], ["tx"])
        await tx.spawn(sender())
        await asyncio.sleep(1)

    sim.run(main())
    return collector.got


def test_no_faults_delivers_everything():
    got = blast(NetConfig(latency=(0.001, 0.001)))
    assert got == list(range(COUNT))


def test_loss_drops_about_the_configured_fraction():
    got = blast(NetConfig(loss=0.3))
    assert len(set(got)) == len(got)
    assert 0.6 * COUNT < len(got) < 0.8 * COUNT


def test_duplication_and_jitter_reorder():
    got = blast(NetConfig(duplicate=0.2, latency=(0.001, 0.020)))
    assert len(got) > COUNT  # duplicates arrived
    assert set(got) == set(range(COUNT))
    assert got != sorted(got)  # jitter reordered them


def test_a_partition_drops_datagrams():
    assert blast(NetConfig(), cut=True) == []


def test_per_link_loss_at_run_time():
    sim = Simulation(seed=2)
    collector = Collector()

    sim.add_node("rx", ip="10.0.0.1", init=lambda: receive_into(collector))
    tx = sim.add_node("tx", ip="10.0.0.2")

    async def sender():
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(asyncio.DatagramProtocol)
        for i in range(100):
            transport.sendto(str(i).encode(), ("10.0.0.1", 9000))

    async def main():
        sim.net.set_loss(1.0, src="tx", dst="rx")
        await tx.spawn(sender())
        await asyncio.sleep(1)
        lost_all = len(collector.got) == 0
        sim.net.set_loss(0.0, src="tx", dst="rx")
        await tx.spawn(sender())
        await asyncio.sleep(1)
        return lost_all, len(collector.got)

    assert sim.run(main()) == (True, 100)
