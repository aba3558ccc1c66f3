import copy, sys

sys.path.insert(0, "tests/raft/core")
from hypothesis import given, settings, strategies as st, HealthCheck
from raft_harness import Cluster, make_config
from detsim.raft.core import *
from detsim.raft.core.raft import Raft


def cluster(n=3, learners=(), **cfg):
    c = Cluster(seed=0)
    ids = [str(i) for i in range(1, n + 1)]
    conf = ConfState.of([i for i in ids if i not in learners], tuple(learners))
    for i in ids:
        c.add_node(i, make_config(i, **cfg), conf)
    c.stabilize()
    c.call("1", lambda r: r.campaign())
    c.stabilize()
    return c


def states():
    out = {}
    c = cluster(3, snapshot_chunk_bytes=8, max_snapshot_chunks_in_flight=2)
    for k in range(3):
        c.call("1", lambda r, k=k: r.propose(b"v%d" % k))
    c.stabilize()
    out["steady"] = c
    c = copy.deepcopy(c)
    c.partition([["1", "2"], ["3"]])
    for k in range(6):
        c.call("1", lambda r, k=k: r.propose(b"w%d" % k))
    c.stabilize(["1", "2"])
    c.compact("1")
    c.compact("2")
    c.heal()
    for _ in range(50):
        c.tick("1")
        for n in "123":
            c.process_ready(n)
        for n in "123":
            c.deliver(n)
        if (
            c.nodes["1"].core.progress()["3"].stream is not None
            and c.nodes["3"].core._incoming is not None
        ):
            break
    assert c.nodes["1"].core.progress()["3"].stream is not None
    out["streaming"] = c  # 1 leader with 3 in SNAPSHOT, 3 has incoming chunks queued
    c = copy.deepcopy(out["steady"])
    c.tick("2", 30)  # 2 campaigns (prevote)
    out["precand"] = c
    c = copy.deepcopy(out["steady"])
    c.add_node("9", make_config("9"), None)
    out["joining"] = c
    c = cluster(4, learners=("4",))
    c.call("1", lambda r: r.propose(b"z"))
    c.stabilize()
    out["learner"] = c
    return out


STATES = states()
STATS = {}
IDS = ["1", "2", "3", "4", "9"]


def fp(r):
    prog = tuple((k, p.describe(), p.recent_active) for k, p in sorted(r.progress().items()))
    return (
        r.status(),
        r.hard_state(),
        r.role,
        tuple(r.entries(r.snapshot_meta.index + 1, r.last_index + 1)),
        r.snapshot_meta,
        prog,
        r.has_ready(),
        r.dropped_messages,
    )


def gen_entries(draw, prev_index, max_term):
    n = draw(st.integers(0, 4))
    out = []
    t = draw(st.sampled_from([max_term, max_term, max_term - 1, 0, 1]))
    idx = prev_index + 1 + draw(st.sampled_from([0, 0, 0, 0, 1, -1]))
    for k in range(n):
        t = draw(st.sampled_from([t, t, t + 1, max(t - 1, 0)]))
        kind = draw(st.sampled_from([EntryKind.NORMAL, EntryKind.NORMAL, EntryKind.CONF_CHANGE]))
        if kind is EntryKind.CONF_CHANGE:
            data = draw(
                st.one_of(
                    st.builds(
                        lambda op, nid: ConfChange(op, nid).encode(),
                        st.sampled_from(list(ConfChangeOp)),
                        st.sampled_from(IDS),
                    ),
                    st.binary(max_size=4),
                )
            )
        else:
            data = draw(st.binary(max_size=3))
        out.append(Entry(t, idx + k, kind, data))
    return tuple(out)


CONFS = [
    ConfState.of(["1", "2", "3"]),
    ConfState.of(["1"]),
    ConfState.of([]),
    ConfState.of(["1", "2"], ("3",)),
    ConfState.of(["9"]),
]


@st.composite
def message(draw, r):
    T, L = r.term, r.last_index
    frm = draw(st.sampled_from(IDS))
    to = r.id if draw(st.integers(0, 20)) else draw(st.sampled_from(IDS))
    term = draw(st.sampled_from([T, T, T, T + 1, 0, -1, max(T - 1, 0), T + 2]))
    interesting = sorted(
        {
            -1,
            0,
            1,
            r.commit,
            r.commit + 1,
            L,
            L + 1,
            L + 2,
            r.snapshot_meta.index,
            max(r.commit - 1, 0),
        }
    )
    idx = lambda: draw(st.one_of(st.sampled_from(interesting), st.integers(-1, L + 3)))
    kind = draw(st.integers(0, 10))
    if kind == 0:
        return VoteRequest(
            frm,
            to,
            term,
            idx(),
            draw(st.integers(-1, T + 2)),
            draw(st.booleans()),
            draw(st.booleans()),
        )
    if kind == 1:
        return VoteResponse(frm, to, term, draw(st.booleans()), draw(st.booleans()))
    if kind == 2:
        prev = idx()
        return AppendRequest(
            frm,
            to,
            term,
            prev,
            draw(
                st.one_of(st.sampled_from([r.log.term(prev) or 0, 0, term]), st.integers(-1, T + 2))
            ),
            gen_entries(draw, prev, max(term, 0)),
            idx(),
        )
    if kind == 3:
        return AppendResponse(
            frm, to, term, idx(), draw(st.booleans()), idx(), draw(st.integers(-1, T + 2))
        )
    if kind == 4:
        return Heartbeat(
            frm, to, term, idx(), draw(st.sampled_from([b"", (1).to_bytes(8, "big"), b"zz"]))
        )
    if kind == 5:
        return HeartbeatResponse(
            frm,
            to,
            term,
            draw(st.sampled_from([b"", (1).to_bytes(8, "big"), (2).to_bytes(8, "big")])),
        )
    if kind == 6:
        size = draw(st.integers(-1, 30))
        meta = SnapshotMeta(idx(), draw(st.integers(-1, T + 2)), draw(st.sampled_from(CONFS)), size)
        off = draw(st.integers(-1, max(size, 0) + 1))
        data = draw(st.binary(max_size=10))
        return SnapshotChunk(frm, to, term, meta, off, data, draw(st.booleans()))
    if kind == 7:
        return SnapshotChunkResponse(frm, to, term, idx(), draw(st.integers(-1, 40)))
    if kind == 8:
        return TimeoutNow(frm, to, term)
    if kind == 9:
        return ReadIndexRequest(frm, to, term, draw(st.binary(max_size=2)))
    return ReadIndexResponse(frm, to, term, draw(st.binary(max_size=2)), idx(), draw(st.booleans()))


@settings(
    max_examples=int(sys.argv[1]) if len(sys.argv) > 1 else 2000,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
@given(st.data())
def fuzz(data):
    name = data.draw(st.sampled_from(sorted(STATES)))
    c = copy.deepcopy(STATES[name])
    nid = data.draw(st.sampled_from(c.ids()))
    r = c.nodes[nid].core
    for _ in range(data.draw(st.integers(1, 4))):
        m = data.draw(message(r))
        before = fp(r)
        term0 = r.term
        try:
            r.step(m)
        except RemoteProtocolError:
            assert fp(r) == before, f"state changed before RemoteProtocolError: {m}"
            continue
        assert r.term >= term0
        assert r.applied <= r.commit <= r.last_index
        for e in r.entries(r.snapshot_meta.index + 1, r.last_index + 1):
            assert e.term <= r.term, (e, r.term, m)
        STATS[(name, type(m).__name__, r.id == "9" and r.last_index > 0)] = (
            STATS.get((name, type(m).__name__, r.id == "9" and r.last_index > 0), 0) + 1
        )
        if r.has_ready():
            rd = r.ready()
            r.advance(rd)


fuzz()
print("fuzz ok")
print(sorted(STATS.items()))
for k, c in STATES.items():
    print(
        k,
        [
            (
                n,
                c.nodes[n].core.role_name,
                c.nodes[n].core.term,
                c.nodes[n].core.last_index,
                c.nodes[n].core.commit,
            )
            for n in c.ids()
        ],
    )
    for n in c.ids():
        pr = c.nodes[n].core.progress()
        if pr:
            print("  ", {k: p.describe() for k, p in pr.items()})
    print("   incoming3", STATES[k].nodes["3"].core._incoming)
