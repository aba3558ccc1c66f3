import random, sys

sys.path.insert(0, "tests/raft/core")
from raft_harness import make_config
from detsim.raft.core import *
from detsim.raft.core.raft import Raft


class Reader:
    def read_chunk(self, meta, offset, size):
        return b"x" * size


def node(nid="2"):
    r = Raft(
        make_config(nid),
        random.Random(1),
        initial_conf=ConfState.of(["1", "2", "3"]),
        snapshot_reader=Reader(),
    )
    rd = r.ready()
    r.advance(rd)
    return r


# Exp 2: truncation while a Ready is out, then compact
r = node()
ents = tuple(Entry(2, i, EntryKind.NORMAL, b"a%d" % i) for i in range(4, 9))
r.step(AppendRequest("1", "2", 2, 3, 1, ents, 6))
rd1 = r.ready()
print(
    "R1 entries",
    [e.index for e in rd1.entries],
    "committed",
    [e.index for e in rd1.committed_entries],
)
r.step(AppendRequest("3", "2", 3, 6, 2, (Entry(3, 7, EntryKind.NORMAL, b"b7"),), 6))
r.advance(rd1)
print("unstable_from", r.log.unstable_from, "applied", r.applied)
meta = SnapshotMeta(6, 2, r.conf_at(6), 10)
try:
    r.compact(meta)
    print("compacted ok")
    rd = r.ready()
    print("next entries", [(e.index, e.term) for e in rd.entries])
except AssertionError as e:
    print("AssertionError", e, "conf_base", r._conf_base)

# Exp 3: term-0 append to a fresh (joining) node
j = Raft(make_config("9"), random.Random(1), snapshot_reader=Reader())
try:
    j.step(AppendRequest("x", "9", 0, 0, 0, (Entry(0, 1, EntryKind.NORMAL, b"evil"),), 1))
    print("term0 accepted: commit", j.commit, "last", j.last_index, "term", j.term)
except RemoteProtocolError as e:
    print("rejected", e)
# term-0 entries inside a real-term append
j = Raft(make_config("9"), random.Random(1), snapshot_reader=Reader())
try:
    j.step(AppendRequest("1", "9", 3, 0, 0, (Entry(0, 1, EntryKind.NORMAL, b"evil"),), 0))
    print("term0 entry accepted: last", j.last_index, j.log.entry(1))
except RemoteProtocolError as e:
    print("rejected", e)
