"""A peer's bad message never corrupts or crashes a node; bounds hold; regressions.

- Property (hypothesis): any message, well-formed or not, stepped into a node in one of several
  states either raises RemoteProtocolError with the node's state untouched, or is handled
  with the core's invariants intact (never an AssertionError).
- Regressions, each found by a review experiment and failing before its fix.
"""

from __future__ import annotations

import copy
import random
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from raft_harness import Cluster, make_config

from detsim.raft.core import (
    MAX_MESSAGE_BYTES,
    AppendRequest,
    AppendResponse,
    ConfChange,
    ConfChangeOp,
    ConfChangeRejected,
    ConfState,
    Entry,
    EntryKind,
    Heartbeat,
    HeartbeatResponse,
    Message,
    ProposalDropped,
    ReadIndexDropped,
    ReadIndexRequest,
    ReadIndexResponse,
    RemoteProtocolError,
    SnapshotChunk,
    SnapshotChunkResponse,
    SnapshotMeta,
    TimeoutNow,
    VoteRequest,
    VoteResponse,
)
from detsim.raft.core.config import RaftConfig
from detsim.raft.core.messages import MAX_REQUEST_ID_BYTES
from detsim.raft.core.raft import Raft


def cluster(n: int = 3, **cfg: Any) -> Cluster:
    c = Cluster(seed=0)
    conf = ConfState.of([str(i) for i in range(1, n + 1)])
    for i in range(1, n + 1):
        c.add_node(str(i), make_config(str(i), **cfg), conf)
    c.stabilize()
    c.nodes["1"].core.campaign()
    c.stabilize()
    return c


def fingerprint(r: Raft) -> tuple[Any, ...]:
    progress = {k: p.describe() for k, p in r.progress().items()}
    return (
        r.term,
        r.vote,
        r.role,
        r.leader,
        r.commit,
        r.applied,
        r.last_index,
        r.snapshot_meta,
        r.conf,
        tuple(r.entries(r.snapshot_meta.index + 1, r.last_index + 1)),
        progress,
        r.has_ready(),
    )


def _states() -> dict[str, Cluster]:
    steady = cluster(3, snapshot_chunk_bytes=8)
    for k in range(3):
        steady.nodes["1"].core.propose(f"v{k}".encode())
    steady.stabilize()
    streaming = copy.deepcopy(steady)
    streaming.partition([["1", "2"], ["3"]])
    for k in range(6):
        streaming.nodes["1"].core.propose(f"w{k}".encode())
    streaming.stabilize(["1", "2"])
    streaming.compact("1")
    streaming.heal()
    streaming.tick("1")
    streaming.stabilize(["1", "2"])
    for _ in range(2):  # let some chunks reach node 3, not all
        streaming.process_ready("1")
        streaming.deliver("3")
        streaming.process_ready("3")
        streaming.deliver("1")
    joining = copy.deepcopy(steady)
    joining.add_node("9", make_config("9"), None)
    return {"steady": steady, "streaming": streaming, "joining": joining}


STATES = _states()
IDS = ["1", "2", "3", "9", "x", ""]
CONFS = [ConfState.of(["1", "2", "3"]), ConfState.of(["1"]), ConfState.of(["1", "2"], ("3",))]


@st.composite
def entries(draw: st.DrawFn, start: int, term: int) -> tuple[Entry, ...]:
    out = []
    for k in range(draw(st.integers(0, 3))):
        t = draw(st.sampled_from([term, term + 1, max(term - 1, 0), 0]))
        idx = start + k + draw(st.sampled_from([0, 0, 0, 1, -1]))
        if draw(st.booleans()):
            change = ConfChange(
                draw(st.sampled_from(list(ConfChangeOp))), draw(st.sampled_from(IDS[:4]))
            )
            data = draw(st.sampled_from([change.encode(), b"", b"\x07\x01z"]))
            out.append(Entry(t, idx, EntryKind.CONF_CHANGE, data))
        else:
            out.append(Entry(t, idx, EntryKind.NORMAL, draw(st.binary(max_size=3))))
    return tuple(out)


@st.composite
def messages(draw: st.DrawFn, r: Raft) -> Message:
    frm = draw(st.sampled_from(IDS))
    to = draw(st.sampled_from([r.id, r.id, r.id, "x"]))
    term = draw(st.sampled_from([0, r.term - 1, r.term, r.term, r.term + 1]))
    last = r.last_index

    def index() -> int:
        return draw(st.sampled_from([-1, 0, 1, r.commit, last - 1, last, last + 1, last + 5]))

    kind = draw(st.integers(0, 10))
    if kind == 0:
        return VoteRequest(
            frm,
            to,
            term,
            index(),
            draw(st.integers(-1, term + 1)),
            draw(st.booleans()),
            draw(st.booleans()),
        )
    if kind == 1:
        return VoteResponse(frm, to, term, draw(st.booleans()), draw(st.booleans()))
    if kind == 2:
        prev = index()
        return AppendRequest(
            frm,
            to,
            term,
            prev,
            draw(st.integers(-1, term + 1)),
            draw(entries(prev + 1, term)),
            index(),
        )
    if kind == 3:
        return AppendResponse(
            frm, to, term, index(), draw(st.booleans()), index(), draw(st.integers(-1, term + 1))
        )
    if kind == 4:
        ctx = draw(st.sampled_from([b"", (1).to_bytes(8, "big"), b"zz"]))
        return Heartbeat(frm, to, term, index(), ctx)
    if kind == 5:
        return HeartbeatResponse(
            frm, to, term, draw(st.sampled_from([b"", (1).to_bytes(8, "big")]))
        )
    if kind == 6:
        size = draw(st.integers(0, 30))
        meta = SnapshotMeta(
            index(), draw(st.integers(-1, term + 1)), draw(st.sampled_from(CONFS)), size
        )
        offset = draw(st.integers(-1, size + 1))
        data = draw(st.binary(max_size=10))
        return SnapshotChunk(frm, to, term, meta, offset, data, draw(st.booleans()))
    if kind == 7:
        return SnapshotChunkResponse(frm, to, term, index(), draw(st.integers(-1, 64)))
    if kind == 8:
        return TimeoutNow(frm, to, term)
    if kind == 9:
        return ReadIndexRequest(frm, to, term, draw(st.binary(max_size=2)))
    return ReadIndexResponse(
        frm, to, term, draw(st.binary(max_size=2)), index(), draw(st.booleans())
    )


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.data())
def test_bad_messages_never_corrupt_nor_crash(data: st.DataObject) -> None:
    name = data.draw(st.sampled_from(sorted(STATES)))
    c = copy.deepcopy(STATES[name])
    r = c.nodes[data.draw(st.sampled_from(c.ids()))].core
    for _ in range(data.draw(st.integers(1, 4))):
        m = data.draw(messages(r))
        before, term = fingerprint(r), r.term
        try:
            r.step(m)
        except RemoteProtocolError:
            assert fingerprint(r) == before, f"state changed before RemoteProtocolError: {m}"
            continue
        assert r.term >= term
        assert r.applied <= r.commit <= r.last_index
        for e in r.entries(r.snapshot_meta.index + 1, r.last_index + 1):
            assert 1 <= e.term <= r.term, (e, r.term, m)
        if r.has_ready():
            r.advance(r.ready())


# --- regressions ---------------------------------------------------------------------------------


def test_term_zero_requests_and_entries_are_refused() -> None:
    """A fresh node (term 0) accepted an append at term 0, and any node an entry of term 0;
    both are impossible from a correct leader (regression)."""
    joiner = Raft(make_config("9"), random.Random(1))
    with pytest.raises(RemoteProtocolError):
        joiner.step(AppendRequest("x", "9", 0, 0, 0, (Entry(0, 1, data=b"evil"),), 1))
    with pytest.raises(RemoteProtocolError):
        joiner.step(AppendRequest("1", "9", 3, 0, 0, (Entry(0, 1, data=b"evil"),), 0))
    assert (joiner.term, joiner.last_index, joiner.commit) == (0, 0, 0)


def test_truncation_while_a_ready_is_out_keeps_the_durable_prefix() -> None:
    """A Ready with entries 4..8 is out; a newer leader truncates at 7 before advance. The
    prefix 4..6 was written: it must count as durable, else compacting at 6 (applied) failed
    an assert (regression)."""

    class Reader:
        def read_chunk(self, meta: SnapshotMeta, offset: int, size_bytes: int) -> bytes:
            return b"x" * size_bytes

    r = Raft(
        make_config("2"),
        random.Random(1),
        initial_conf=ConfState.of(["1", "2", "3"]),
        snapshot_reader=Reader(),
    )
    r.advance(r.ready())
    batch = tuple(Entry(2, i, data=b"a%d" % i) for i in range(4, 9))
    r.step(AppendRequest("1", "2", 2, 3, 1, batch, 6))
    rd = r.ready()
    assert [e.index for e in rd.entries] == [4, 5, 6, 7, 8]
    r.step(AppendRequest("3", "2", 3, 6, 2, (Entry(3, 7, data=b"b7"),), 6))
    r.advance(rd)
    assert r.applied == 6 and r.log.unstable_from == 7
    r.compact(SnapshotMeta(6, 2, r.conf_at(6), 10))
    assert [(e.index, e.term) for e in r.ready().entries] == [(7, 3)]


def _lagging_follower() -> tuple[Cluster, SnapshotMeta]:
    """Node 3 missed 20 entries that node 1 compacted away: it needs a 4-byte-chunk snapshot."""
    c = cluster(3, snapshot_chunk_bytes=4, max_snapshot_chunks_in_flight=4)
    c.partition([["1", "2"], ["3"]])
    for k in range(20):
        c.nodes["1"].core.propose(f"value-{k:03d}".encode())
    c.stabilize(["1", "2"])
    meta = c.compact("1")
    assert meta is not None
    c.heal()
    c.tick("1")
    c.stabilize(["1", "2"])
    return c, meta


def _stream(c: Cluster, fault: Any) -> int:
    """Run the stream to its end with `fault(cluster)` applied each round; chunks sent."""
    sent = 0
    for _ in range(200):
        moved = c.process_ready("1") | c.process_ready("2") | c.process_ready("3")
        fault(c)
        sent += sum(1 for m in c.queue if isinstance(m, SnapshotChunk))
        for node_id in ("1", "2", "3"):
            moved |= c.deliver(node_id) > 0
        if not moved:
            break
    return sent


def test_a_lost_snapshot_chunk_costs_one_resend_not_a_storm() -> None:
    """Losing the first chunk made every later chunk draw an answer that resent the whole
    window: the chunks in flight grew exponentially, to the outbox bound (regression). Now
    each offset is resent once, so the total stays near the number of chunks."""
    c, meta = _lagging_follower()
    lost: list[int] = []

    def lose_first_chunk(cl: Cluster) -> None:
        if not lost:
            n = cl.drop(lambda m: isinstance(m, SnapshotChunk) and m.offset == 0)
            lost.extend([n] if n else [])

    sent = _stream(c, lose_first_chunk)
    assert lost == [1]
    assert c.nodes["3"].core.snapshot_meta == meta
    assert c.nodes["3"].storage.sm == c.nodes["1"].storage.sm
    assert sent <= -(-meta.size_bytes // 4) + 2 * 4, sent


def test_a_duplicated_chunk_answer_is_not_taken_for_a_restart() -> None:
    """A duplicated answer arriving after later ones (next < acked) was taken for a follower
    restart: each rewind's resent chunks drew stale answers that rewound again, sending the
    rest of the stream twice (regression; found by review). Only an answer of 0 means a
    restart; other old answers are ignored."""
    c, meta = _lagging_follower()
    duplicated: list[Message] = []

    def duplicate_first_answer(cl: Cluster) -> None:
        answers = [m for m in cl.queue if isinstance(m, SnapshotChunkResponse)]
        if answers and not duplicated:
            duplicated.append(answers[0])
            cl.queue.append(answers[0])

    sent = _stream(c, duplicate_first_answer)
    assert duplicated
    assert c.nodes["3"].core.snapshot_meta == meta
    assert sent <= -(-meta.size_bytes // 4) + 2 * 4, sent


def test_an_adjacent_duplicated_chunk_answer_costs_nothing() -> None:
    """A duplicate delivered right behind the original answer (next == acked) was taken for
    a lost chunk: each resend drew duplicate answers that rewound again, sending the rest of
    the stream twice (regression; found by review). Lost chunks are now reported as such
    (`gap`), and plain answers only acknowledge."""
    c, meta = _lagging_follower()
    duplicated: list[Message] = []

    def duplicate_first_answer_in_place(cl: Cluster) -> None:
        for k, m in enumerate(cl.queue):
            if isinstance(m, SnapshotChunkResponse) and not duplicated:
                duplicated.append(m)
                cl.queue.insert(k + 1, m)
                return

    sent = _stream(c, duplicate_first_answer_in_place)
    assert duplicated
    assert c.nodes["3"].core.snapshot_meta == meta
    assert sent == -(-meta.size_bytes // 4), sent  # not one chunk more


def test_a_follower_restarted_mid_stream_gets_the_snapshot_from_offset_zero() -> None:
    """A follower that restarts mid-stream lost its place (in memory only): it answers 0 and
    the leader starts over, so the snapshot still arrives whole."""
    c, meta = _lagging_follower()
    restarted: list[bool] = []

    def restart_follower(cl: Cluster) -> None:
        s = cl.nodes["3"].storage
        if not restarted and s.staging_meta is not None and len(s.staging) >= 8:
            restarted.append(True)
            cl.crash("3")
            cl.restart("3")

    _stream(c, restart_follower)
    for _ in range(30):  # a restarted node needs heartbeats (ticks) to hear from the leader
        c.tick("1")
        c.stabilize()
    assert restarted
    assert c.nodes["3"].core.snapshot_meta == meta
    assert c.nodes["3"].storage.sm == c.nodes["1"].storage.sm


def test_config_refuses_chunks_past_the_frame_bound() -> None:
    with pytest.raises(ValueError, match="frame bound"):
        RaftConfig("1", snapshot_chunk_bytes=MAX_MESSAGE_BYTES).validate()
    with pytest.raises(ValueError, match="election_ticks"):
        RaftConfig("1", election_ticks=1, heartbeat_ticks=1).validate()


def test_a_learner_far_behind_is_not_promoted() -> None:
    """Thesis §4.2.1: a new server catches up as a non-voting member before it counts in
    majorities; promoting one far behind would stall commits until it caught up."""
    c = cluster(3, promote_max_lag_entries=5)
    leader = c.nodes["1"].core
    c.add_node("4", make_config("4"), None)
    leader.propose_conf_change(ConfChange(ConfChangeOp.ADD_LEARNER, "4"))
    c.stabilize(["1", "2", "3"])  # node 4 hears nothing: it stays at index 0
    for k in range(10):
        leader.propose(b"v%d" % k)
    c.stabilize(["1", "2", "3"])
    with pytest.raises(ConfChangeRejected, match="behind"):
        leader.propose_conf_change(ConfChange(ConfChangeOp.PROMOTE, "4"))
    c.stabilize()  # now it catches up
    assert leader.propose_conf_change(ConfChange(ConfChangeOp.PROMOTE, "4")) > 0


def test_restart_with_a_commit_past_the_durable_log() -> None:
    """A crash between writing a Ready's hard state and its entries leaves commit > last
    index on disk. The commit index is volatile (Figure 2): the node restarts with it clamped
    to its log instead of failing an assert, and catches up from the leader."""
    c = cluster(3)
    node = c.nodes["2"]
    node.storage.hard = replace(node.storage.hard, commit=node.storage.hard.commit + 5)
    c.crash("2")
    c.restart("2")
    r = c.nodes["2"].core
    assert r.commit == r.last_index
    c.nodes["1"].core.propose(b"after")
    c.tick("1")
    c.stabilize()
    c.spread_commit("1")
    assert c.nodes["2"].storage.sm == [b"after"]


def test_a_bootstrap_cut_between_hard_state_and_entries_bootstraps_again() -> None:
    """A crash after the bootstrap's hard state (term 1) was written but before its entries
    left a node with no configuration: not a voter, it could never campaign. Bootstrapping
    again writes the same log (regression)."""
    conf = ConfState.of(["1", "2", "3"])
    fresh = Raft(make_config("1"), random.Random(1), initial_conf=conf)
    rd = fresh.ready()
    assert rd.hard_state is not None and rd.entries
    again = Raft(make_config("1"), random.Random(1), hard_state=rd.hard_state, initial_conf=conf)
    assert again.conf == conf
    assert again.ready().entries == rd.entries


def test_a_proposal_no_append_could_carry_is_refused() -> None:
    """An entry bigger than one append (hence one transport frame) could never be sent and
    would wedge every entry behind it: refused at propose (regression; found by review)."""
    c = cluster(3)
    leader = c.nodes["1"].core
    limit = leader.config.max_entry_bytes
    with pytest.raises(ProposalDropped, match="max_entry_bytes"):
        leader.propose(b"x" * (limit + 1))
    index = leader.propose(b"x" * limit)
    c.stabilize()
    c.spread_commit("1")
    assert c.nodes["3"].storage.applied >= index


def test_transfer_back_to_the_leader_cancels_the_pending_transfer() -> None:
    """etcd TestLeaderTransferBack: transfer_leadership(self) aborts a pending transfer, so
    proposals are accepted again at once (regression; found by review)."""
    c = cluster(3)
    leader = c.nodes["1"].core
    c.crash("3")
    leader.transfer_leadership("3")
    with pytest.raises(ProposalDropped, match="transfer"):
        leader.propose(b"refused")
    leader.transfer_leadership("1")
    assert leader.propose(b"accepted") > 0


def test_bounds_refuse_past_their_limit() -> None:
    """Every queue has a named bound and a clear refusal past it: uncommitted proposals,
    pending reads, the outbox (messages beyond it are dropped and counted: Raft tolerates
    loss, a stalled driver must not grow the core without limit)."""
    c = cluster(3, max_uncommitted_entries=3, max_pending_reads=2, max_outbox_messages=4)
    c.partition([["1"], ["2", "3"]])
    leader = c.nodes["1"].core
    for k in range(3):
        leader.propose(b"p%d" % k)
    with pytest.raises(ProposalDropped, match="uncommitted"):
        leader.propose(b"one too many")
    leader.read_index(b"r1")
    leader.read_index(b"r2")
    with pytest.raises(ReadIndexDropped, match="pending"):
        leader.read_index(b"r3")
    for _ in range(20):
        leader.tick()
    assert len(leader.ready().messages) == 4
    assert leader.dropped_messages > 0


def test_read_request_ids_are_bounded() -> None:
    """A request id travels in heartbeats and forwarded reads: a caller's overlong id is
    refused, and so is a peer's overlong context (a frame could not hold an unbounded one)."""
    c = cluster(3)
    with pytest.raises(ReadIndexDropped, match="longer"):
        c.nodes["1"].core.read_index(b"r" * (MAX_REQUEST_ID_BYTES + 1))
    follower = c.nodes["2"].core
    with pytest.raises(RemoteProtocolError, match="context"):
        follower.step(Heartbeat("1", "2", follower.term, 0, b"c" * (MAX_REQUEST_ID_BYTES + 1)))
