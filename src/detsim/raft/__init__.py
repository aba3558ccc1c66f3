"""detsim.raft: the Raft consensus layer of the replicated store.

`detsim.raft.core` is the pure, sans-I/O protocol (no asyncio, time, random, sockets or files);
the driver (`RaftNode`, driver.py), transport and storage modules beside it run it on asyncio,
TCP and `detsim.fs`. Rule (DESIGN "Layers"): nothing in detsim.raft imports detsim.sim.

The driver's API, what the store (`detsim.kv`) builds on:

    node = RaftNode(RaftNodeConfig(node_id, raft_addr, peers, data_dir, secret=...), state_machine)
    async with node:                      # or: await node.run() until cancelled
        result = await node.propose(data) # NotLeader / ProposalDropped: not proposed (retry)
                                          # OutcomeUnknown, NodeStopped: may or may not apply
        await node.read_index()           # then read the state machine: linearizable
        node.status()                     # DESIGN's RAFT.STATUS fields
        await node.add_learner(id, (host, port)); await node.promote(id); await node.remove(id)
        await node.transfer_leadership(id); await node.snapshot_now()

`StateMachine` (statemachine.py) is what the application implements; `MemoryKV` is a small one.
"""

from detsim.raft.core.errors import (
    ConfChangeRejected,
    NotLeader,
    ProposalDropped,
    RaftError,
    ReadIndexDropped,
    TransferRejected,
)
from detsim.raft.driver import (
    DriverStats,
    NodeStopped,
    OutcomeUnknown,
    RaftNode,
    RaftNodeConfig,
    RaftObserver,
)
from detsim.raft.statemachine import MemoryKV, SnapshotData, StateMachine, encode_command

__all__ = [
    "ConfChangeRejected",
    "DriverStats",
    "MemoryKV",
    "NodeStopped",
    "NotLeader",
    "OutcomeUnknown",
    "ProposalDropped",
    "RaftError",
    "RaftNode",
    "RaftNodeConfig",
    "RaftObserver",
    "ReadIndexDropped",
    "SnapshotData",
    "StateMachine",
    "TransferRejected",
    "encode_command",
]
