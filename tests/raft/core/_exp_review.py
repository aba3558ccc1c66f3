import sys

sys.path.insert(0, "tests/raft/core")
from raft_harness import Cluster, make_config
from detsim.check.raft import RaftInvariants
from detsim.raft.core import *
from detsim.raft.core.raft import Raft


def cluster(n=3, **cfg):
    c = Cluster(seed=0, checker=RaftInvariants())
    ids = [str(i) for i in range(1, n + 1)]
    conf = ConfState.of(ids)
    for i in ids:
        c.add_node(i, make_config(i, **cfg), conf)
    c.stabilize()
    c.call("1", lambda r: r.campaign())
    c.stabilize()
    assert c.nodes["1"].core.role_name == "leader"
    return c


# Experiment 1: snapshot chunk amplification after a lost chunk
c = cluster(3, snapshot_chunk_bytes=4, max_snapshot_chunks_in_flight=4)
c.partition([["1", "2"], ["3"]])
for k in range(20):
    c.call("1", lambda r, k=k: r.propose(f"value-{k:03d}".encode()))
c.stabilize(["1", "2"])
c.compact("1")
print("snap size", c.nodes["1"].core.snapshot_meta)
c.heal()
# tick leader heartbeat -> probe to 3
c.tick("1")
c.stabilize(["1", "2"])


def run():
    lost = False
    total_chunks = 0
    for rnd in range(40):
        moved = False
        for nid in ["1", "2", "3"]:
            if c.process_ready(nid):
                moved = True
        # drop the very first chunk at offset 0 once
        if not lost:
            n = c.drop(lambda m: isinstance(m, SnapshotChunk) and m.offset == 0)
            if n:
                lost = True
        total_chunks_round = sum(1 for m in c.queue if isinstance(m, SnapshotChunk))
        total_chunks += total_chunks_round
        print("round", rnd, "chunks queued", total_chunks_round, "queue", len(c.queue))
        for nid in ["1", "2", "3"]:
            if c.deliver(nid):
                moved = True
        if not moved:
            break
    return total_chunks


print("total", run())
print(c.nodes["3"].core.status())
