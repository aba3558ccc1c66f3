"""Randomized cluster runs of the Raft core (VOPR style: options drawn from the seed and
printed, a safety phase with faults, then a liveness phase with faults off).

Safety phase: random message delivery order (reorder), loss and duplication, partitions,
crashes (losing everything not processed through a Ready) and restarts from storage only,
Readies held while the core keeps being stepped (an asyncio driver awaiting fsync),
proposals, membership changes, leadership transfers, compaction and ReadIndex reads.
`detsim.check.raft.RaftInvariants` checks after every processed Ready: election safety, log
matching, leader completeness, state-machine safety, acknowledged entries survive, and the
per-node invariants; reads are checked against the writes acknowledged before them.
Liveness phase: heal, restart every member, no loss: a leader emerges, every acknowledged
entry and a final proposal are applied by every member within a bound, and members at the
same applied index hold the same state machine.

Reproduce one seed: DETSIM_RAFT_SEED=<n> pytest tests/raft/core/test_raft_random.py
"""

from __future__ import annotations

import contextlib
import os
import random
from dataclasses import dataclass, field

import pytest
from raft_harness import Cluster, entry_digest, make_config, view_of

from detsim.check.raft import RaftInvariants
from detsim.raft.core import (
    ConfChange,
    ConfChangeOp,
    ConfState,
    Entry,
    EntryKind,
    RaftError,
)

FAST_SEEDS = 200
SLOW_SEEDS = 2000
SAFETY_STEPS = 1500
#: Liveness rounds (each: process every Ready, deliver everything, tick every node once).
LIVENESS_ROUNDS = 600


@dataclass
class Options:
    voters: int
    spares: int
    pre_vote: bool
    check_quorum: bool
    loss: float
    duplicate: float
    inflight: int
    max_entries: int
    chunk: int
    compaction: bool
    election_ticks: int

    @classmethod
    def draw(cls, rng: random.Random) -> Options:
        return cls(
            voters=rng.choice([1, 3, 3, 5]),
            spares=rng.choice([0, 1, 2]),
            pre_vote=rng.random() < 0.7,
            check_quorum=rng.random() < 0.7,
            loss=rng.choice([0.0, 0.05, 0.2]),
            duplicate=rng.choice([0.0, 0.05]),
            inflight=rng.choice([1, 2, 8]),
            max_entries=rng.choice([1, 3, 64]),
            chunk=rng.choice([3, 16, 1024]),
            compaction=rng.random() < 0.6,
            election_ticks=rng.choice([3, 10, 10]),
        )


@dataclass
class World:
    rng: random.Random
    cluster: Cluster
    checker: RaftInvariants
    options: Options
    proposals: dict[tuple[int, int], bytes] = field(default_factory=dict)  # (term, index)
    acked: dict[int, tuple[int, bytes]] = field(default_factory=dict)  # index -> (term, data)
    decommissioned: set[str] = field(default_factory=set)
    to_shut_down: list[str] = field(default_factory=list)
    ever_added: set[str] = field(default_factory=set)
    reads: dict[bytes, int] = field(default_factory=dict)  # request id -> floor index
    reads_answered: int = 0
    counter: int = 0

    def leaders(self) -> list[str]:
        return [i for i in self.cluster.alive() if self.cluster.nodes[i].core.role_name == "leader"]


def build(seed: int) -> World:
    rng = random.Random(seed)
    options = Options.draw(rng)
    checker = RaftInvariants()
    cluster = Cluster(seed=seed, checker=checker)
    voters = [str(i) for i in range(1, options.voters + 1)]
    conf = ConfState.of(voters)
    for k in range(1, options.voters + options.spares + 1):
        node_id = str(k)
        config = make_config(
            node_id,
            pre_vote=options.pre_vote,
            check_quorum=options.check_quorum,
            max_inflight_appends=options.inflight,
            max_entries_per_append=options.max_entries,
            snapshot_chunk_bytes=options.chunk,
            max_snapshot_chunks_in_flight=2,
            election_ticks=options.election_ticks,
        )
        cluster.add_node(node_id, config, conf if node_id in voters else None)
    world = World(rng, cluster, checker, options, ever_added=set(voters))
    cluster.on_apply = lambda node_id, entry: on_apply(world, node_id, entry)
    cluster.on_read = lambda node_id, rid, index: on_read(world, node_id, rid, index)
    return world


def on_apply(world: World, node_id: str, entry: Entry) -> None:
    proposed = world.proposals.get((entry.term, entry.index))
    if proposed is not None and proposed == entry.data:
        # The proposer (any node that applies it: same entry) acknowledges the client.
        world.checker.acknowledged(node_id, entry.index, entry.term, entry_digest(entry))
        world.acked[entry.index] = (entry.term, entry.data)
    if entry.kind is EntryKind.CONF_CHANGE:
        change = ConfChange.decode(entry.data)
        if change.op is ConfChangeOp.REMOVE and change.node_id not in world.decommissioned:
            # The operator shuts a removed node down once its removal is committed (after
            # the current step: the node may be the one applying).
            world.decommissioned.add(change.node_id)
            world.to_shut_down.append(change.node_id)


def shut_down_removed(world: World) -> None:
    for node_id in world.to_shut_down:
        if world.cluster.nodes[node_id].raft is not None:
            world.cluster.crash(node_id)
        world.checker.forget_node(node_id)
    world.to_shut_down.clear()


def on_read(world: World, node_id: str, request_id: bytes, index: int) -> None:
    # A duplicated message may answer a read twice: both answers must be fresh.
    floor = world.reads.get(request_id)
    assert floor is not None, f"unknown read {request_id!r}"
    assert index >= floor, (
        f"read {request_id!r} at {node_id} got index {index}, but index {floor} was "
        f"acknowledged before the read was issued (stale read)"
    )
    world.reads_answered += 1


# --- actions -------------------------------------------------------------------------------------


def act_deliver(world: World) -> None:
    cluster, rng, o = world.cluster, world.rng, world.options
    if not cluster.queue:
        return
    m = cluster.queue.pop(rng.randrange(len(cluster.queue)))
    if rng.random() < o.loss:
        return
    if rng.random() < o.duplicate:
        cluster.queue.append(m)
    if cluster.nodes[m.to].raft is not None and cluster._connected(m.frm, m.to):
        cluster.step(m.to, m)


def act_ready(world: World) -> None:
    alive = world.cluster.alive()
    if alive:
        world.cluster.process_ready(world.rng.choice(alive))


def act_take_ready(world: World) -> None:
    """Hold a Ready (an async driver awaiting fsync): the core keeps being stepped."""
    alive = world.cluster.alive()
    if alive:
        world.cluster.take_ready(world.rng.choice(alive))


def act_finish_ready(world: World) -> None:
    held = [i for i in world.cluster.alive() if world.cluster.nodes[i].held is not None]
    if held:
        world.cluster.finish_ready(world.rng.choice(held))


def act_tick(world: World) -> None:
    alive = world.cluster.alive()
    if alive:
        world.cluster.tick(world.rng.choice(alive))


def act_propose(world: World) -> None:
    for leader in world.leaders():
        world.counter += 1
        data = f"v{world.counter}".encode()
        r = world.cluster.nodes[leader].core
        try:
            index = r.propose(data)
        except RaftError:
            continue
        world.proposals[(r.term, index)] = data


def act_conf_change(world: World) -> None:
    leaders = world.leaders()
    if not leaders:
        return
    r = world.cluster.nodes[world.rng.choice(leaders)].core
    conf, rng = r.conf, world.rng
    choices: list[ConfChange] = []
    for node_id in world.cluster.ids():
        if node_id not in world.ever_added:
            choices.append(ConfChange(ConfChangeOp.ADD_LEARNER, node_id, b"addr"))
    choices += [ConfChange(ConfChangeOp.PROMOTE, n) for n in conf.learners]
    if len(conf.voters) > 2:
        choices += [ConfChange(ConfChangeOp.REMOVE, n) for n in conf.members()]
    if not choices:
        return
    change = rng.choice(choices)
    try:
        r.propose_conf_change(change)
    except RaftError:
        return
    world.ever_added.add(change.node_id)


def act_transfer(world: World) -> None:
    for leader in world.leaders():
        r = world.cluster.nodes[leader].core
        targets = [v for v in r.conf.voters if v != leader]
        if targets:
            with contextlib.suppress(RaftError):
                r.transfer_leadership(world.rng.choice(targets))


def act_compact(world: World) -> None:
    if not world.options.compaction:
        return
    alive = world.cluster.alive()
    if alive:
        world.cluster.compact(world.rng.choice(alive))


def act_crash(world: World) -> None:
    alive = world.cluster.alive()
    if len(alive) > 1:
        world.cluster.crash(world.rng.choice(alive))


def act_restart(world: World) -> None:
    cluster = world.cluster
    down = [i for i in cluster.ids() if cluster.nodes[i].raft is None]
    down = [i for i in down if i not in world.decommissioned]
    if down:
        cluster.restart(world.rng.choice(down))


def act_partition(world: World) -> None:
    ids = world.cluster.ids()
    world.rng.shuffle(ids)
    cut = world.rng.randrange(1, len(ids)) if len(ids) > 1 else 1
    world.cluster.partition([ids[:cut], ids[cut:]])


def act_heal(world: World) -> None:
    world.cluster.heal()


def act_read(world: World) -> None:
    alive = world.cluster.alive()
    if not alive:
        return
    node_id = world.rng.choice(alive)
    world.counter += 1
    rid = f"r{world.counter}".encode()
    floor = max(world.acked, default=0)
    try:
        world.cluster.nodes[node_id].core.read_index(rid)
    except RaftError:
        return
    world.reads[rid] = floor


ACTIONS = [
    (act_deliver, 40),
    (act_ready, 20),
    (act_take_ready, 4),
    (act_finish_ready, 4),
    (act_tick, 12),
    (act_propose, 6),
    (act_read, 3),
    (act_conf_change, 1),
    (act_transfer, 1),
    (act_compact, 1),
    (act_crash, 1),
    (act_restart, 2),
    (act_partition, 1),
    (act_heal, 2),
]


# --- phases --------------------------------------------------------------------------------------


def safety_phase(world: World, steps: int) -> None:
    funcs = [a for a, _ in ACTIONS]
    weights = [w for _, w in ACTIONS]
    for _ in range(steps):
        world.rng.choices(funcs, weights)[0](world)
        shut_down_removed(world)


def members(world: World) -> list[str]:
    """The membership the most advanced live node holds (highest commit)."""
    cluster = world.cluster
    best = max(cluster.alive(), key=lambda i: cluster.nodes[i].core.commit)
    return [n for n in cluster.nodes[best].core.conf.members() if n not in world.decommissioned]


def liveness_round(world: World) -> None:
    cluster = world.cluster
    # A node may be decommissioned (crashed for good) by an apply during the round.
    for node_id in cluster.alive():
        if cluster.nodes[node_id].held is not None:
            cluster.finish_ready(node_id)
        if cluster.nodes[node_id].raft is not None:
            cluster.process_ready(node_id)
            shut_down_removed(world)
    for node_id in cluster.alive():
        cluster.deliver(node_id)
    for node_id in cluster.alive():
        if cluster.nodes[node_id].raft is not None:
            cluster.tick(node_id)


def liveness_phase(world: World) -> None:
    cluster = world.cluster
    cluster.heal()
    for node_id in cluster.ids():
        if cluster.nodes[node_id].raft is None and node_id not in world.decommissioned:
            cluster.restart(node_id)
    final: tuple[int, int] | None = None
    for _ in range(LIVENESS_ROUNDS):
        liveness_round(world)
        leaders = world.leaders()
        lost = final is not None and final[1] not in world.acked
        if leaders and (final is None or lost):
            # (Re)propose under each new leader: an earlier leader's entry may have been lost.
            r = cluster.nodes[leaders[0]].core
            if final is None or final[0] != r.term:
                try:
                    index = r.propose(b"final")
                except RaftError:
                    continue
                final = (r.term, index)
                world.proposals[final] = b"final"
        if final is not None and final[1] in world.acked and converged(world):
            break
    else:
        states = {i: view_of(cluster.nodes[i]) for i in cluster.alive()}
        raise AssertionError(f"no convergence within {LIVENESS_ROUNDS} rounds: {states}")
    top = max(world.acked)
    for node_id in members(world):
        assert cluster.nodes[node_id].storage.applied >= top, node_id


def converged(world: World) -> bool:
    cluster = world.cluster
    ids = members(world)
    applied = {cluster.nodes[i].storage.applied for i in ids}
    if len(applied) != 1 or applied.pop() < max(world.acked):
        return False
    sms = {tuple(cluster.nodes[i].storage.sm) for i in ids}
    assert len(sms) == 1, "members at the same applied index hold different state machines"
    return True


def run_seed(seed: int, steps: int = SAFETY_STEPS) -> World:
    world = build(seed)
    try:
        safety_phase(world, steps)
        liveness_phase(world)
        world.checker.check_logs(view_of(world.cluster.nodes[i]) for i in world.cluster.alive())
    except BaseException as e:
        e.add_note(f"options: {world.options}")
        e.add_note(f"reproduce with: DETSIM_RAFT_SEED={seed} pytest {__file__}")
        raise
    return world


def seeds(count: int) -> list[int]:
    if "DETSIM_RAFT_SEED" in os.environ:
        return [int(os.environ["DETSIM_RAFT_SEED"])]
    return list(range(count))


@pytest.mark.parametrize("seed", seeds(FAST_SEEDS))
def test_random_cluster(seed: int) -> None:
    world = run_seed(seed)
    # The run did something: entries were acknowledged (liveness) and the checker looked.
    assert world.acked and world.checker.observes > 0


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(FAST_SEEDS, FAST_SEEDS + SLOW_SEEDS))
def test_random_cluster_slow(seed: int) -> None:
    run_seed(seed, steps=4 * SAFETY_STEPS)


def test_runs_are_deterministic() -> None:
    """The same seed gives the same history (message for message)."""

    def fingerprint(seed: int) -> tuple[object, ...]:
        world = run_seed(seed, steps=400)
        return tuple(
            (i, tuple(world.cluster.nodes[i].storage.sm), world.cluster.nodes[i].storage.hard)
            for i in world.cluster.ids()
        )

    assert fingerprint(7) == fingerprint(7)
