"""Nemeses: fault schedules for the store, one function per fault family.

FAULT MODEL. A nemesis runs during the safety phase only, draws every choice from its own
seeded stream (`Faults.rng`), and leaves behind nothing that `Faults.quiesce` cannot undo.
Each family below is `async def family(faults) -> None`: it acts every `faults.interval()`
seconds until `faults.until_s`, and it undoes its own fault before the next one (except where
overlapping faults are the point). Families may run concurrently (a combined nemesis); they
share one `Faults`, which tracks what is down, paused, skewed or on a faulty disk.

What a nemesis may do, and the store's stated assumptions it respects:
- network: partitions (any split), one-way clogs, clogs of single links, latency changes. TCP
  segments are held across a cut, never lost (the simulator's TCP; NetConfig.loss touches UDP
  only), so "packet loss" for the store is short, frequent clogs of single links (held
  segments, retransmission delays) and resets when a hold passes NetConfig.stream_timeout;
- processes: kill (process crash), crash (power loss: unsynced data lost or torn), pause (a
  GC pause: stop-the-world), restart;
- clocks: offset and drift (|drift| <= 0.5), on any node;
- disks (one node at a time, `faults.disk_victims` records it): a full disk, slow fsync,
  bit flips on read. A node may stop on a disk fault (fail-stop is the store's answer to a
  storage error it cannot mask); the checks allow that on these nodes only, and the liveness
  phase restarts it on a healthy disk. Power loss of every node at once is allowed (the
  store persists before it acknowledges): acknowledged writes must survive it;
- membership: RAFT.ADDLEARNER / PROMOTE / REMOVE / TRANSFER through a client; a removed node
  is stopped for good (`faults.retired`) and forgotten by the invariant checker.

Targeted families (leader_swap, mute_leader_kill_new, power_loss_leader_late, figure8,
conf_change_race) read the nodes' Raft state (roles, terms, log lengths, the configuration in
a log: what an operator's status page shows) to time a fault; none reads a commit decision it
is meant to test.

`quiesce` turns everything off for the liveness phase: heal, latency back to the base profile
(per-link overrides made through `Faults.slow_links` too), resume, restart every down node
that is still a member, clocks and disks back to normal.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
from collections.abc import Awaitable, Callable
from typing import Final

import detsim.sim.trace as trace
from detsim.scenarios.cluster import CLIENT_PORT, RAFT_PORT, StoreCluster
from detsim.sim.config import DiskConfig

MAX_ACTIONS: Final = 10_000  # nemesis actions per run (a loop bound; runs need far fewer)
#: Longer than the election timeout (10-20 ticks of 0.1 s): a paused leader is deposed.
GC_PAUSE_S: Final = (2.5, 6.0)
LATENCY_SPIKE_S: Final = ((0.05, 0.2), (0.2, 0.8), (0.5, 1.5))
#: How long a leader swap waits for the others to elect and commit (election timeout 1-2 s,
#: pre-votes lost to a split vote): past it, heal and try again at the next interval.
SWAP_WAIT_S: Final = 10.0
CLOG_BLIP_S: Final = (0.05, 0.6)  # a "lost packet": a link held this long
MAX_CLOCK_OFFSET_S: Final = 30.0
MAX_DRIFT: Final = 0.4
SLOW_FSYNC_S: Final = (0.02, 0.4)
READ_CORRUPTION_P: Final = (0.001, 0.02)
DISK_FULL_MARGIN_BYTES: Final = (0, 256 * 1024)  # capacity = bytes in use + this
TORN_TAIL_WEIGHTS: Final = (0.2, 0.3, 1.0)  # keep / lose / tear: mostly torn at a crash
#: mute_leader_kill_new: the one-way latency among the others while the old leader is mute
#: (its window), and how often the nemesis looks (well inside the window).
MUTE_SLOW_LINK_S: Final = (0.03, 0.08)
FAST_POLL_S: Final = 0.005
#: Figure 8: how long the leader stays mute to all but one follower before it is killed. Under
#: the shortest election timeout (1 s), so the others have not campaigned yet.
FIGURE8_SOLO_S: Final = (0.1, 0.7)
#: Figure 8: the one-way latency (fixed, no jitter) of the links slowed while a new leader's
#: first appends travel: a window much wider than the nemesis's poll (cluster.POLL_S), in which
#: it can kill that leader before they arrive.
FIGURE8_SLOW_LINK_S: Final = (0.15, 0.3)
#: Figure 8: after a new leader is seen, before it is killed: its empty entry reaches its own
#: log (a write; a kill keeps the page cache) but not the others (FIGURE8_SLOW_LINK_S away).
FIGURE8_SETTLE_S: Final = 0.02
#: conf_change_race: the configuration size where two single-server changes from one
#: configuration can have disjoint majorities (an even one: 4 voters, one added, one removed).
CONF_RACE_VOTERS: Final = 4


@dataclasses.dataclass(frozen=True, slots=True)
class Pace:
    """How often and how long: drawn from the seed (scenario options)."""

    interval_s: tuple[float, float]  # between two actions of one family
    hold_s: tuple[float, float]  # how long one fault lasts


class Faults:
    """What every family shares: the world, the pace, the stream, and what to undo."""

    def __init__(
        self,
        cluster: StoreCluster,
        rng: random.Random,
        pace: Pace,
        until_s: float,
        base_latency_s: tuple[float, float],
    ) -> None:
        self.cluster, self.sim = cluster, cluster.sim
        self.rng, self.pace, self.until_s = rng, pace, until_s
        self.base_latency_s = base_latency_s
        self.down: set[str] = set()  # killed or crashed, restart due
        self.paused: set[str] = set()
        self.skewed: set[str] = set()
        self.disk_victims: set[str] = set()  # nodes whose disk was faulty (stops allowed)
        self.retired: set[str] = set()  # removed from the cluster and stopped for good
        self.slowed: list[tuple[str, str]] = []  # per-link latency overrides, undone by restore
        self.actions = 0

    # --- helpers -------------------------------------------------------------------------------

    def active(self) -> bool:
        return self.sim.now < self.until_s and self.actions < MAX_ACTIONS

    async def wait(self, span_s: tuple[float, float]) -> None:
        """Sleep a drawn span, cut short at the end of the phase."""
        delay = self.rng.uniform(*span_s)
        await asyncio.sleep(max(0.0, min(delay, self.until_s - self.sim.now)))

    def act(self, what: str, **fields: object) -> None:
        self.actions += 1
        trace.event("nemesis", what=what, **fields)

    def members(self) -> list[str]:
        voters, learners = self.cluster.members()
        return [n for n in voters + learners if n not in self.retired]

    def leader_or_any(self) -> str:
        lead = self.cluster.leader()
        return lead if lead is not None else self.rng.choice(self.members())

    def up(self) -> list[str]:
        return [n for n in self.members() if n not in self.down and n not in self.paused]

    def stop(self, nid: str, power_loss: bool) -> None:
        (self.sim.crash if power_loss else self.sim.kill)(nid)
        self.down.add(nid)
        self.act("crash" if power_loss else "kill", node=nid)

    def start(self, nid: str) -> None:
        self.down.discard(nid)
        if nid not in self.retired:
            self.sim.restart(nid)
            self.act("restart", node=nid)

    def slow_links(self, links: list[tuple[str, str]], latency_s: float) -> None:
        """A fixed one-way latency on each (src, dst) link, until `restore_links`."""
        for src, dst in links:
            self.sim.net.set_latency(latency_s, latency_s, src=src, dst=dst)
            if (src, dst) not in self.slowed:
                self.slowed.append((src, dst))
        self.act("latency", latency_s=[latency_s, latency_s], links=[list(x) for x in links])

    def restore_links(self) -> None:
        """Every link slowed by `slow_links` back to the base latency."""
        if not self.slowed:
            return
        for src, dst in self.slowed:
            self.sim.net.set_latency(*self.base_latency_s, src=src, dst=dst)
        self.act("latency", latency_s=list(self.base_latency_s), links=len(self.slowed))
        self.slowed = []

    def end_round(self, *, heal: bool) -> None:
        """What a targeted round (figure8, crash_mid_election, conf_change_race) leaves behind,
        undone, whether it finished or gave up: cuts healed (if it made any), slowed links
        restored, the nodes it took down booted again."""
        if heal:
            self.sim.net.heal()
        self.restore_links()
        for nid in sorted(self.down):
            self.start(nid)

    async def periodically(self, action: Callable[[], Awaitable[None]]) -> None:
        """Run `action` every drawn interval until the phase ends."""
        while self.active():
            await self.wait(self.pace.interval_s)
            if self.active():
                await action()

    async def targeted_rounds(
        self, round_: Callable[[Faults], Awaitable[None]], *, heal: bool
    ) -> None:
        """`periodically` a targeted round, each followed by `end_round(heal=heal)` whether it
        finished or gave up."""

        async def once() -> None:
            try:
                await round_(self)
            finally:
                self.end_round(heal=heal)

        await self.periodically(once)

    def quiesce(self) -> None:
        """Faults off: the liveness phase begins (see the module header)."""
        net = self.sim.net
        net.heal()
        net.set_latency(*self.base_latency_s)
        self.restore_links()
        for nid in sorted(self.paused):
            self.sim.resume(nid)
        for nid in sorted(self.skewed):
            self.sim.set_clock(nid, 0.0, 0.0)
        for nid in sorted(self.disk_victims):
            self.sim.set_disk(nid, DiskConfig())
        for nid in self.cluster.ids:
            if nid not in self.retired and not self.sim.node(nid).alive:
                self.sim.restart(nid)
        self.paused.clear()
        self.skewed.clear()
        self.down.clear()
        trace.event("nemesis", what="quiesce")


def _split(nodes: list[str], first_size: int) -> tuple[list[str], list[str]]:
    return nodes[:first_size], nodes[first_size:]


# --- network -------------------------------------------------------------------------------------


async def partition_leader(f: Faults) -> None:
    """The leader alone on one side; everyone else on the other."""

    async def once() -> None:
        lead = f.leader_or_any()
        others = [n for n in f.cluster.ids if n != lead]
        f.sim.net.partition([lead], others)
        f.act("partition", groups=[[lead], others])
        await f.wait(f.pace.hold_s)
        f.sim.net.heal()
        f.act("heal")

    await f.periodically(once)


async def partition_minority(f: Faults) -> None:
    """A random minority (not always with the leader) cut from the majority."""

    async def once() -> None:
        nodes = list(f.cluster.ids)
        f.rng.shuffle(nodes)
        minority, majority = _split(nodes, f.rng.randint(1, max(1, (len(f.members()) - 1) // 2)))
        f.sim.net.partition(minority, majority)
        f.act("partition", groups=[minority, majority])
        await f.wait(f.pace.hold_s)
        f.sim.net.heal()
        f.act("heal")

    await f.periodically(once)


async def partition_majority(f: Faults) -> None:
    """The leader kept with a minority: the majority, on the other side, must elect anew."""

    async def once() -> None:
        lead = f.leader_or_any()
        others = [n for n in f.cluster.ids if n != lead]
        f.rng.shuffle(others)
        with_leader = (len(f.members()) - 1) // 2 - 1
        side = [lead, *others[: max(0, with_leader)]]
        rest = [n for n in f.cluster.ids if n not in side]
        f.sim.net.partition(side, rest)
        f.act("partition", groups=[side, rest])
        await f.wait(f.pace.hold_s)
        f.sim.net.heal()
        f.act("heal")

    await f.periodically(once)


async def bridge(f: Faults) -> None:
    """Two halves that cannot talk, and one node (the bridge) that sees both (Jepsen's bridge)."""

    async def once() -> None:
        nodes = list(f.cluster.ids)
        f.rng.shuffle(nodes)
        middle, rest = nodes[0], nodes[1:]
        left, right = _split(rest, len(rest) // 2)
        for a in left:
            for b in right:
                f.sim.net.clog(a, b)
                f.sim.net.clog(b, a)
        f.act("bridge", bridge=middle, left=left, right=right)
        await f.wait(f.pace.hold_s)
        f.sim.net.heal()
        f.act("heal")

    await f.periodically(once)


async def leader_swap(f: Faults) -> None:
    """Leaders swapped in one step: the leader cut off with the client hosts (it keeps appending
    their writes in its old term) until the others elect a leader that commits in its own term;
    then, at one instant, that new leader is cut off and the old one healed. The old leader's
    log is now as long as the others' or longer, but with an older last term: a voter that
    compares logs by length only (§5.4.1 forgotten) elects it, and it overwrites a commit."""

    async def once() -> None:
        old = f.cluster.leader()
        if old is None:
            return
        clients = [c.name for c in f.cluster.clients]
        others = [n for n in f.cluster.ids if n != old]
        f.sim.net.partition([old, *clients], others)
        f.act("partition", groups=[[old, *clients], others])
        if await f.cluster.until(lambda: _committed_in_term(f, others) is not None, SWAP_WAIT_S):
            new = _committed_in_term(f, others)
            assert new is not None and new != old
            rest = [n for n in f.cluster.ids if n != new]
            f.sim.net.heal()
            f.sim.net.partition([new], [*rest, *clients])
            f.act("swap", isolated=new, healed=old)
            await f.wait(f.pace.hold_s)
        f.sim.net.heal()
        f.act("heal")

    await f.periodically(once)


def _committed_in_term(f: Faults, nodes: list[str]) -> str | None:
    """A running leader among `nodes` that committed an entry of its own term, or None."""
    for nid in nodes:
        if not f.cluster.running(nid):
            continue
        core = f.cluster.rafts[nid].core
        committed = core.log.committed
        if core.role_name == "leader" and core.log.term(committed) == core.term:
            return nid
    return None


async def mute_leader_kill_new(f: Faults) -> None:
    """The leader mute (its sends to the others held, clients still served) until the others
    elect a leader that commits; then, at one instant, the clog healed (the old leader's held
    appends of an older term arrive) and the new leader killed, before its next append could
    repair what a follower did with them (a follower must refuse an append of an older term).
    The links among the others are slowed meanwhile (MUTE_SLOW_LINK_S) and the nemesis polls
    every FAST_POLL_S: the new leader's first commit reaches its followers that long after it
    happened, so the held appends land while a follower still holds the committed entry as
    uncommitted (an append below a follower's known commit is ignored whatever its term). The
    election must end within the transport's idle timeout (5 s), or the held appends' connection
    is closed: hence a slowdown far shorter than Figure 8's."""

    async def once() -> None:
        old = f.cluster.leader()
        if old is None:
            return
        others = [n for n in f.cluster.ids if n != old]
        for other in others:
            f.sim.net.clog(old, other)
        f.act("clog", shape="leader_out", links=[[old, o] for o in others])
        slow_s = round(f.rng.uniform(*MUTE_SLOW_LINK_S), 3)
        f.slow_links([(x, y) for x in others for y in others if x != y], slow_s)
        if await f.cluster.until(
            lambda: _committed_in_term(f, others) is not None, SWAP_WAIT_S, poll_s=FAST_POLL_S
        ):
            new = _committed_in_term(f, others)
            assert new is not None and new != old
            f.sim.net.heal()
            f.act("heal")
            f.stop(new, power_loss=False)  # a kill: its appends in flight are lost with it
            f.restore_links()
            await f.wait(f.pace.hold_s)
            f.start(new)
        else:
            f.sim.net.heal()
            f.act("heal")
            f.restore_links()

    await f.periodically(once)


async def one_way_clog(f: Faults) -> None:
    """Traffic one way only: the leader hears its followers but they do not hear it (or the
    reverse), or one random link in one direction."""

    async def once() -> None:
        lead = f.leader_or_any()
        others = [n for n in f.cluster.ids if n != lead]
        shape = f.rng.choice(("leader_out", "leader_in", "link"))
        links = (
            [(lead, o) for o in others]
            if shape == "leader_out"
            else [(o, lead) for o in others]
            if shape == "leader_in"
            else [tuple(f.rng.sample(f.cluster.ids, 2))]
        )
        for src, dst in links:
            f.sim.net.clog(src, dst)
        f.act("clog", shape=shape, links=[list(link) for link in links])
        await f.wait(f.pace.hold_s)
        f.sim.net.heal()
        f.act("heal")

    await f.periodically(once)


async def flapping(f: Faults) -> None:
    """Partitions that change every fraction of a second: a new random split, or healed."""
    while f.active():
        await f.wait((0.1, 1.0))
        if not f.active():
            break
        nodes = list(f.cluster.ids)
        f.rng.shuffle(nodes)
        if f.rng.random() < 0.3:
            f.sim.net.heal()
            f.act("heal")
        else:
            a, b = _split(nodes, f.rng.randint(1, len(nodes) - 1))
            f.sim.net.heal()
            f.sim.net.partition(a, b)
            f.act("partition", groups=[a, b])


async def lossy_links(f: Faults) -> None:
    """Packet loss as TCP sees it: many short clogs of single links (held, then delivered)."""
    while f.active():
        await f.wait((0.02, 0.3))
        if not f.active():
            break
        src, dst = f.rng.sample(f.cluster.ids, 2)
        f.sim.net.clog(src, dst)
        f.act("clog", links=[[src, dst]])
        asyncio.get_running_loop().call_later(
            f.rng.uniform(*CLOG_BLIP_S), f.sim.net.unclog, src, dst
        )


async def latency_spikes(f: Faults) -> None:
    """Latency jumps (everywhere, or on the leader's links) and falls back."""

    async def once() -> None:
        spike = f.rng.choice(LATENCY_SPIKE_S)
        if f.rng.random() < 0.5:
            f.sim.net.set_latency(*spike)
            f.act("latency", latency_s=list(spike))
        else:
            lead = f.leader_or_any()
            for other in f.cluster.ids:
                if other != lead:
                    f.sim.net.set_latency(*spike, src=lead, dst=other)
            f.act("latency", latency_s=list(spike), node=lead)
        await f.wait(f.pace.hold_s)
        f.sim.net.set_latency(*f.base_latency_s)
        for a in f.cluster.ids:  # per-link settings override the global one: reset them too
            for b in f.cluster.ids:
                if a != b:
                    f.sim.net.set_latency(*f.base_latency_s, src=a, dst=b)
        f.act("latency", latency_s=list(f.base_latency_s))

    await f.periodically(once)


# --- processes -----------------------------------------------------------------------------------


async def _stop_leader(f: Faults, power_loss: bool) -> None:
    async def once() -> None:
        lead = f.leader_or_any()
        if lead in f.down or not f.sim.node(lead).alive:
            return
        f.stop(lead, power_loss)
        await f.wait(f.pace.hold_s)
        f.start(lead)

    await f.periodically(once)


async def kill_leader(f: Faults) -> None:
    """The leader's process crashes (page cache kept), again and again; restarted after a hold."""
    await _stop_leader(f, power_loss=False)


async def crash_leader(f: Faults) -> None:
    """The leader loses power (unsynced data lost or torn), again and again."""
    await _stop_leader(f, power_loss=True)


async def power_loss_all(f: Faults) -> None:
    """Every node loses power at once; all boot again after a hold."""

    async def once() -> None:
        nodes = [n for n in f.members() if f.sim.node(n).alive]
        for nid in nodes:
            f.stop(nid, power_loss=True)
        await f.wait(f.pace.hold_s)
        for nid in nodes:
            f.start(nid)

    await f.periodically(once)


async def power_loss_leader_late(f: Faults) -> None:
    """Every node loses power at once; the followers boot first and the old leader only once
    they elected one of them that committed (or SWAP_WAIT_S passed). An entry a follower
    acknowledged but had not made durable is gone, and the old leader, the one node that
    still holds it, is not there to bring it back: an acknowledged write would be lost."""

    async def once() -> None:
        old = f.cluster.leader()
        nodes = [n for n in f.members() if f.sim.node(n).alive]
        if old is None or old not in nodes:
            return
        for nid in nodes:
            f.stop(nid, power_loss=True)
        await f.wait(f.pace.hold_s)
        followers = [n for n in nodes if n != old]
        for nid in followers:
            f.start(nid)
        await f.cluster.until(lambda: _committed_in_term(f, followers) is not None, SWAP_WAIT_S)
        f.start(old)

    await f.periodically(once)


async def figure8(f: Faults) -> None:
    """Raft's Figure 8 (§5.4.2) played out, round after round (5+ voters; MIT 6.824's Figure8
    test, with kills timed by what the nodes show). A round, every choice from the seed:
    (a) the leader A mute to all but one follower B for a drawn time: the clients' writes it
        appends reach B only; then A is killed;
    (b) B cut off, the rest elect a leader M over slow links; M is killed as soon as it leads,
        so its empty entry (a newer term than A's entries) is in its own log only;
    (c) A restarts, the links from A and B to the rest slowed; A or B (W) is elected and
        starts bringing the rest up to date, one append at a time when the scenario's
        max_entries_per_append is small: a follower first gets only A's old entries; after a
        drawn wait, W and the other of A and B are killed;
    (d) M restarts and is elected by the rest (its last term is newer than A's), then A and B
        come back. M overwrites A's entries: right, unless W committed one of them by counting
        its replicas (an entry of an earlier term: the Figure 8 rule forgotten).
    A round gives up (heals, restarts the nodes it killed) when a step does not happen in
    SWAP_WAIT_S; the majority is never down for longer than a step."""

    await f.targeted_rounds(_figure8_round, heal=True)


async def _figure8_round(f: Faults) -> None:
    a = f.cluster.agreed_leader()
    voters, _ = f.cluster.members()
    if a is None or len(voters) < 5 or not f.active():
        return
    others = [n for n in voters if n != a]
    f.rng.shuffle(others)
    b, rest = others[0], others[1:]
    # (a) A's next entries reach B only.
    for other in rest:
        f.sim.net.clog(a, other)
    f.act("figure8", step="leader_with_one", leader=a, follower=b)
    await f.wait(FIGURE8_SOLO_S)
    f.stop(a, power_loss=False)  # a kill: A's appends still in flight are lost with it
    f.sim.net.heal()
    # (b) the rest elect M without B; M dies before its first append arrives anywhere.
    f.sim.net.partition([b], rest)
    f.slow_links([(x, y) for x in rest for y in rest if x != y], _slow_link_s(f))
    m = await _new_leader(f, rest)
    if m is None:
        return
    await asyncio.sleep(FIGURE8_SETTLE_S)
    f.stop(m, power_loss=False)
    f.sim.net.heal()
    f.restore_links()
    # (c) A or B elected; killed while it brings the rest up to date.
    lagging = [n for n in rest if n != m]
    slow_s = _slow_link_s(f)
    f.slow_links([(x, y) for x in (a, b) for y in lagging], slow_s)
    f.start(a)
    marks = {n: f.cluster.rafts[n].core.last_index for n in lagging}
    w = await _new_leader(f, [a, b])
    if w is None:
        return

    def catching_up() -> bool:
        return any(
            f.cluster.running(n) and f.cluster.rafts[n].core.last_index > marks[n] for n in lagging
        )

    if not await f.cluster.until(catching_up, SWAP_WAIT_S):
        return
    # Short or long: mostly before W's next append reaches the follower, now and then after.
    await asyncio.sleep(f.rng.uniform(0.05, slow_s))
    f.act("figure8", step="leader_killed_mid_catch_up", leader=w)
    for nid in (a, b):
        if f.sim.node(nid).alive:
            f.stop(nid, power_loss=False)
    f.restore_links()
    # (d) M back: the rest elect it; A and B return once it committed (the `finally`).
    f.start(m)
    await f.cluster.until(lambda: _committed_in_term(f, [m, *lagging]) is not None, SWAP_WAIT_S)


def _slow_link_s(f: Faults) -> float:
    return round(f.rng.uniform(*FIGURE8_SLOW_LINK_S), 3)


async def _new_leader(f: Faults, among: list[str]) -> str | None:
    """The first running leader among `among` (polled), or None after SWAP_WAIT_S."""

    def leader() -> str | None:
        for nid in among:
            if f.cluster.running(nid) and f.cluster.rafts[nid].core.role_name == "leader":
                return nid
        return None

    if not await f.cluster.until(lambda: leader() is not None, SWAP_WAIT_S):
        return None
    return leader()


async def crash_mid_election(f: Faults) -> None:
    """Power loss in the middle of an election: the leader dies (killed or powered off), the
    links among the others are slowed (FIGURE8_SLOW_LINK_S) so the election takes round trips
    the nemesis can see, and a node whose term just rose (a candidate that voted for itself,
    or a voter that granted its vote) loses power before the election ends; it boots again
    after a hold. A term or vote acknowledged before it was durable comes back older."""

    await f.targeted_rounds(_crash_mid_election_round, heal=False)


async def _crash_mid_election_round(f: Faults) -> None:
    lead = f.cluster.agreed_leader()
    if lead is None:
        return
    others = [n for n in f.members() if n != lead]
    f.slow_links([(x, y) for x in others for y in others if x != y], _slow_link_s(f))
    term = f.cluster.rafts[lead].core.term
    f.stop(lead, power_loss=f.rng.random() < 0.5)

    def term_rose() -> list[str]:
        return [n for n in others if f.cluster.running(n) and f.cluster.rafts[n].core.term > term]

    if not await f.cluster.until(lambda: bool(term_rose()), SWAP_WAIT_S):
        return
    f.stop(f.rng.choice(term_rose()), power_loss=True)
    f.restore_links()
    await f.wait(f.pace.hold_s)


async def rolling_restart(f: Faults) -> None:
    """Restart the members one by one (kill, boot), waiting for each to rejoin a leader."""
    while f.active():
        for nid in f.members():
            if not f.active():
                return
            if nid in f.down or nid in f.paused:
                continue
            f.stop(nid, power_loss=f.rng.random() < 0.5)
            await f.wait((0.1, 1.0))
            f.start(nid)
            await f.cluster.until(lambda: f.cluster.agreed_leader() is not None, 10.0)
            await f.wait(f.pace.interval_s)


async def gc_pause_leader(f: Faults) -> None:
    """The leader stops the world for longer than the election timeout, then resumes (a deposed
    leader that wakes up believing it still leads)."""

    async def once() -> None:
        lead = f.leader_or_any()
        if lead in f.down or lead in f.paused or not f.sim.node(lead).alive:
            return
        f.sim.pause(lead)
        f.paused.add(lead)
        f.act("pause", node=lead)
        await f.wait(GC_PAUSE_S)
        if lead in f.paused:
            f.sim.resume(lead)
            f.paused.discard(lead)
            f.act("resume", node=lead)

    await f.periodically(once)


async def clock_skew(f: Faults) -> None:
    """Clocks jump (offset) and run fast or slow (drift) on random nodes, the leader included."""

    async def once() -> None:
        nid = f.leader_or_any() if f.rng.random() < 0.5 else f.rng.choice(f.cluster.ids)
        offset = f.rng.uniform(-MAX_CLOCK_OFFSET_S, MAX_CLOCK_OFFSET_S)
        drift = f.rng.uniform(-MAX_DRIFT, MAX_DRIFT)
        f.sim.set_clock(nid, offset, drift)
        f.skewed.add(nid)
        f.act("clock", node=nid, offset_s=round(offset, 3), drift=round(drift, 3))

    await f.periodically(once)


# --- disks (one node) ---------------------------------------------------------------------------


def _disk_victim(f: Faults) -> str:
    """The node whose disk turns bad: the first drawn one stays the victim for the run."""
    if not f.disk_victims:
        f.disk_victims.add(f.leader_or_any() if f.rng.random() < 0.5 else f.rng.choice(f.members()))
    return min(f.disk_victims)


async def _disk_fault(f: Faults, config: Callable[[str], DiskConfig], restart_p: float) -> None:
    """Turn `config` on for a hold, off for an interval; sometimes restart the node (a restart
    reads the whole log: where read faults bite). A node that stopped on the fault is booted
    again on a healthy disk after the hold."""
    nid = _disk_victim(f)
    while f.active():
        bad = config(nid)
        f.sim.set_disk(nid, bad)
        f.act("disk", node=nid, **bad.as_dict())
        if f.rng.random() < restart_p and f.sim.node(nid).alive and nid not in f.paused:
            f.stop(nid, power_loss=f.rng.random() < 0.5)
            f.start(nid)
        await f.wait(f.pace.hold_s)
        f.sim.set_disk(nid, DiskConfig())
        f.act("disk", node=nid, healthy=True)
        if not f.sim.node(nid).alive or not f.cluster.running(nid):
            f.start(nid)
        await f.wait(f.pace.interval_s)


async def disk_full(f: Faults) -> None:
    """One node's disk fills up: writes past its capacity raise ENOSPC."""

    def config(nid: str) -> DiskConfig:
        used = f.sim.node(nid).disk.used_bytes
        return DiskConfig(capacity=used + f.rng.randint(*DISK_FULL_MARGIN_BYTES))

    await _disk_fault(f, config, restart_p=0.3)


async def slow_fsync(f: Faults) -> None:
    """One node's fsyncs take tenths of a second (a dying disk, a noisy neighbour)."""
    await _disk_fault(f, lambda _: DiskConfig(fsync_latency=f.rng.uniform(*SLOW_FSYNC_S)), 0.0)


async def read_corruption(f: Faults) -> None:
    """One node's reads return flipped bits now and then; it restarts often (reading its log)."""
    await _disk_fault(
        f, lambda _: DiskConfig(read_corruption=f.rng.uniform(*READ_CORRUPTION_P)), 0.8
    )


async def torn_tail(f: Faults) -> None:
    """One node loses power again and again with most unsynced tails torn mid-record."""
    nid = _disk_victim(f)
    f.sim.set_disk(nid, DiskConfig(crash_weights=TORN_TAIL_WEIGHTS))
    f.act("disk", node=nid, crash_weights=list(TORN_TAIL_WEIGHTS))

    async def once() -> None:
        if nid in f.down or nid in f.paused or not f.sim.node(nid).alive:
            return
        f.stop(nid, power_loss=True)
        await f.wait((0.1, 1.0))
        f.start(nid)

    await f.periodically(once)


# --- snapshots and membership ---------------------------------------------------------------


async def isolate_follower(f: Faults) -> None:
    """A follower cut off long enough to fall behind a compaction (scenarios with a small
    snapshot threshold): on heal it catches up by snapshot install, under new partitions.
    Before the heal, an operator's RAFT.SNAPSHOT at the leader compacts its log at once: the
    writes made meanwhile are then behind the snapshot, even when fewer than the threshold."""

    async def once() -> None:
        lead = f.leader_or_any()
        followers = [n for n in f.members() if n != lead]
        if not followers:
            return
        victim = f.rng.choice(followers)
        f.sim.net.partition([victim], [n for n in f.cluster.ids if n != victim])
        f.act("partition", groups=[[victim]])
        await f.wait((f.pace.hold_s[1], 2 * f.pace.hold_s[1]))
        if f.active():
            await _admin(f, "RAFT.SNAPSHOT")
        f.sim.net.heal()
        f.act("heal")

    await f.periodically(once)


async def _admin(f: Faults, *args: str) -> bool:
    """One admin command at the leader (or anyone): True when it answered OK."""
    target = f.leader_or_any()
    reply = await f.cluster.command(target, *args)
    ok = reply in (b"OK", "OK", True)
    f.act("admin", command=" ".join(args), at=target, ok=ok, reply=str(reply)[:80])
    return ok


async def _add_learner(f: Faults, nid: str) -> bool:
    """RAFT.ADDLEARNER with the spare's Raft and client addresses: the others know where a
    member added at run time serves clients only from its change (scenarios' NodeConfigs list
    the initial voters' client addresses alone), so writes reach it when it leads."""
    ip = f.cluster.ips[nid]
    return await _admin(f, "RAFT.ADDLEARNER", nid, f"{ip}:{RAFT_PORT}", f"{ip}:{CLIENT_PORT}")


def _retire(f: Faults, nid: str) -> None:
    """A removed member stops for good and leaves the invariant checker's bookkeeping."""
    f.retired.add(nid)
    f.down.discard(nid)
    if nid in f.paused:
        f.paused.discard(nid)
        f.sim.resume(nid)
    if f.sim.node(nid).alive:
        f.sim.kill(nid)
    f.cluster.invariants.forget_node(nid)
    f.act("retire", node=nid)


async def membership_churn(f: Faults) -> None:
    """Add a spare as learner, promote it, remove a voter (sometimes the leader): the voter
    count stays at its initial size, the removed node is retired. Other families' faults go on
    at the same time in combined nemeses."""
    spares = [n for n in f.cluster.spares]

    async def once() -> None:
        voters, learners = f.cluster.members()
        if learners:
            await _admin(f, "RAFT.PROMOTE", learners[0])
        elif len(voters) > len(f.cluster.initial_voters) and f.cluster.agreed_leader():
            candidates = [v for v in voters if v not in f.down]
            victim = f.leader_or_any() if f.rng.random() < 0.3 else f.rng.choice(candidates)
            if await _admin(f, "RAFT.REMOVE", victim):
                _retire(f, victim)
            else:  # a REMOVE that timed out may still commit: a removed node is retired
                await _retire_if_removed(f, victim)
        elif spares:
            nid = spares.pop(0)
            await _add_learner(f, nid)

    await f.periodically(once)


async def remove_leader(f: Faults) -> None:
    """The leader is removed from the cluster (it hands over and leaves); a spare replaces it."""
    spares = [n for n in f.cluster.spares]

    async def once() -> None:
        voters, learners = f.cluster.members()
        if learners:
            await _admin(f, "RAFT.PROMOTE", learners[0])
        elif len(voters) >= len(f.cluster.initial_voters) and f.cluster.agreed_leader() and spares:
            lead = f.leader_or_any()
            if await _admin(f, "RAFT.REMOVE", lead):
                _retire(f, lead)
                nid = spares.pop(0)
                await _add_learner(f, nid)
            else:  # a REMOVE that timed out may still commit: a removed node is retired
                await _retire_if_removed(f, lead)
        elif len(voters) < len(f.cluster.initial_voters) and spares:
            await _add_learner(f, spares.pop(0))  # (after a REMOVE that did not answer OK)

    await f.periodically(once)


async def conf_change_race(f: Faults) -> None:
    """Two leaders of different terms each append a different single-server change to the same
    4-voter configuration C0 (Ongaro's single-server membership bug, raft-dev 2015). A round,
    every choice from the seed:
    (a) the leader A is cut off from every node (its clients still reach it) and asked to
        remove a follower Z: the change is appended in A's log only (it cannot commit there);
    (b) the rest (3 of C0's 4 voters: all of them are needed) elect a leader B over slow links;
        as soon as B leads, a follower C other than Z is killed before B's first append
        reaches it (C voted for B and holds nothing of B's term), and B is asked to remove A.
        B's empty entry cannot commit (C0's majority is 3 and only B and D are up), so the
        correct core refuses the change until it has; a core that lets a new leader change
        the configuration before its term's first commit appends it, and commits it in
        C0 - A with D alone;
    (c) B and D are cut off, C restarts: A and C elect A in C0 - Z (C's log is no newer than
        A's), and A commits its own term. With the correct core that is right: B committed
        nothing, A's removal of Z commits, Z is retired, and later rounds add and promote a
        spare back to 4 voters. With the mutant, B and D committed B's change at the index
        where A now commits another entry: the checks see two committed histories.
    A round gives up (heals, restarts the node it killed) when a step does not happen in
    SWAP_WAIT_S; after every round, Z is retired once a leader shows it removed."""
    spares = [n for n in f.cluster.spares]

    async def once() -> None:
        voters, learners = f.cluster.members()
        a = f.cluster.agreed_leader()
        if learners:
            await _admin(f, "RAFT.PROMOTE", learners[0])
        elif len(voters) < CONF_RACE_VOTERS and spares and a is not None:
            nid = spares.pop(0)
            await _add_learner(f, nid)
        elif len(voters) == CONF_RACE_VOTERS and a is not None:
            others = [n for n in voters if n != a]
            f.rng.shuffle(others)
            try:
                await _conf_change_race_round(f, a, others)
            finally:
                f.end_round(heal=True)
            await _retire_if_removed(f, others[0])

    await f.periodically(once)


async def _conf_change_race_round(f: Faults, a: str, others: list[str]) -> None:
    """One round of `conf_change_race`: A the leader, Z = others[0] the member it removes."""
    z = others[0]
    # (a) A's change reaches A's log only. The command waits for a commit that never comes
    # (A steps down, CheckQuorum): it runs on while the round goes on.
    f.sim.net.partition([a], [n for n in f.cluster.ids if n != a])
    f.act("conf_change_race", step="leader_alone_removes", leader=a, removes=z)
    stuck = asyncio.ensure_future(f.cluster.command(a, "RAFT.REMOVE", z))
    try:
        core_a = f.cluster.rafts[a].core
        if not await f.cluster.until(
            lambda: z not in core_a.conf.voters, SWAP_WAIT_S, poll_s=FAST_POLL_S
        ):
            return
        # (b) the others elect B; C dies before B's first append reaches it; B removes A.
        f.slow_links([(x, y) for x in others for y in others if x != y], _slow_link_s(f))
        b = await _new_leader(f, others)
        if b is None:
            return
        c = f.rng.choice([n for n in others if n not in (b, z)])
        f.stop(c, power_loss=False)
        reply = await f.cluster.command(b, "RAFT.REMOVE", a)
        f.act("conf_change_race", step="new_leader_removes", leader=b, reply=str(reply)[:80])
        # (c) B and D cut off (a new cut: partitions add up), C back: A and C elect A.
        f.sim.net.heal()
        f.restore_links()
        f.sim.net.partition(
            [n for n in others if n != c], [n for n in f.cluster.ids if n not in others or n == c]
        )
        f.start(c)
        committed = await f.cluster.until(
            lambda: _committed_in_term(f, [a]) is not None, SWAP_WAIT_S
        )
        f.act("conf_change_race", step="old_leader_back", leader=a, committed=committed)
    finally:
        await stuck


async def _retire_if_removed(f: Faults, nid: str) -> None:
    """Once a leader agreed by all has committed an entry of its term (so every change in its
    log is committed): retire `nid` if that removed it. A removed node is told nothing more,
    and a stopped one must not count against the checks."""

    def settled() -> bool:
        lead = f.cluster.agreed_leader()
        return lead is not None and _committed_in_term(f, [lead]) is not None

    if await f.cluster.until(settled, SWAP_WAIT_S) and nid not in f.cluster.members()[0]:
        _retire(f, nid)


async def transfer_leadership(f: Faults) -> None:
    """RAFT.TRANSFER to a random other voter, over and over, while clients write."""

    async def once() -> None:
        voters, _ = f.cluster.members()
        lead = f.leader_or_any()
        targets = [v for v in voters if v != lead and v not in f.retired]
        if targets:
            await _admin(f, "RAFT.TRANSFER", f.rng.choice(targets))

    await f.periodically(once)


async def calm(f: Faults) -> None:
    """No faults: the baseline (the workload and the checks alone)."""
    await f.wait((f.until_s - f.sim.now, f.until_s - f.sim.now))


Family = Callable[[Faults], Awaitable[None]]

#: The families that time their faults by the nodes' Raft state to reach a state random faults
#: seldom reach (a vote not yet durable, a stale leader's campaign, stale appends at a new
#: leader's death, a follower's unsynced acknowledgement, Figure 8). `detsim mutants` tries
#: their scenarios first.
TARGETED: Final[tuple[Family, ...]] = (
    crash_mid_election,
    leader_swap,
    mute_leader_kill_new,
    power_loss_leader_late,
    figure8,
    conf_change_race,
)
