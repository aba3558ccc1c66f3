"""`Simulation`: one world — nodes, network, disks and faults — derived from one seed.

Owned here: the public simulator API of DESIGN.md (add_node, kill, crash, restart, pause,
resume, set_clock, run, trace_hash, events) and the lifecycle of nodes. Scheduling lives in the
kernel's loop (`kernel/loop.py`), links in `net`, disks in `disk`. The Simulation is the world
that plugs into the kernel (`kernel.interfaces.World`): its network is the loop's I/O, and a
thread entering its run gets the world's seams (`runtime.enter`).

Rules: a Simulation runs once (build a new one to run again: the same seed gives the same run);
every fault is a trace event; misuse raises SimulationError saying what to do instead; `run`
reports every failure of a run (main's error, an init that failed, a simulator fault), never
one in place of another: several at once are a `RunFailures` group.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Coroutine
from typing import Any, TypeVar

from detsim.sim import runtime
from detsim.sim.config import DiskConfig, NetConfig
from detsim.sim.kernel import entropy
from detsim.sim.kernel.errors import (
    InitFailed,
    RunFailures,
    SimulationError,
    SimulatorFault,
)
from detsim.sim.kernel.loop import MAX_LIVE_BOOTS, SimLoop
from detsim.sim.kernel.trace import DEFAULT_MAX_EVENTS, Trace, event_dict, stable_text
from detsim.sim.net import Network
from detsim.sim.node import MAX_NODES, InitFn, Node

T = TypeVar("T")
MAX_NODE_NAME_CHARS = 64
DEFAULT_TIME_LIMIT_S = 3600.0
# Every node's boot, the supervisor's and the kernel's live in the loop at once.
assert MAX_NODES + 2 <= MAX_LIVE_BOOTS


class Simulation:
    """A deterministic world. See ../shared/DESIGN.md, "Simulator API"."""

    def __init__(
        self,
        seed: int = 0,
        net: NetConfig | None = None,
        disk: DiskConfig | None = None,
        time_limit: float = DEFAULT_TIME_LIMIT_S,
        buggify: bool = True,
        max_events: int = DEFAULT_MAX_EVENTS,
    ) -> None:
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise SimulationError(f"seed must be an int, got {type(seed).__name__}")
        if not time_limit > 0:
            raise SimulationError(f"time_limit must be positive virtual seconds, got {time_limit}")
        self.seed = seed
        self.time_limit = float(time_limit)
        self.disk_config = disk or DiskConfig()
        self.buggify_enabled = buggify
        self.trace = Trace(max_events)
        self.loop = SimLoop(seed, self.time_limit, self.trace)
        self.net = Network(self, self.loop, net or NetConfig())
        self.loop.plug(self)
        self.nodes: dict[str, Node] = {}
        self.nodes_by_index: list[Node] = []
        self.buggify_rng = self.loop.derived_random("buggify")
        self.buggify_sites: dict[tuple[str, int], bool] = {}
        self.wall_seconds = 0.0
        self._ran = False
        self._init_failure: tuple[Node, BaseException] | None = None
        self._init_failure_at = 0.0

    def __repr__(self) -> str:
        return f"<Simulation seed={self.seed} t={self.now:.6f}s nodes={len(self.nodes)}>"

    # --- observation -----------------------------------------------------------------------

    @property
    def now(self) -> float:
        """Virtual seconds since the start of the run."""
        return self.loop.now

    @property
    def trace_hash(self) -> str:
        """Digest of every event and decision so far: equal for equal runs."""
        return self.trace.hexdigest()

    @property
    def events(self) -> list[dict[str, Any]]:
        """The recorded events, as artifact JSON objects (at most `max_events`)."""
        return [event_dict(ev) for ev in self.trace.events]

    def record(self, kind: str, **fields: Any) -> None:
        self.loop.record(kind, **fields)

    def config(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "time_limit": self.time_limit,
            "buggify": self.buggify_enabled,
            "net": self.net.config.as_dict(),
            "disk": self.disk_config.as_dict(),
            "nodes": [{"name": n.name, "ip": n.ip} for n in self.nodes_by_index],
        }

    # --- the world, as the kernel sees it (kernel.interfaces.World) -------------------------

    @property
    def io(self) -> Network:
        return self.net

    def entered(self) -> None:
        runtime.enter(self)

    def left(self) -> None:
        runtime.leave(self)

    # --- nodes -----------------------------------------------------------------------------

    def add_node(self, name: str, ip: str | None = None, init: InitFn | None = None) -> Node:
        """Add a host; `init` (an async function) runs at start and at every restart."""
        self._check_new_node(name, ip, init)
        index = len(self.nodes_by_index)
        if ip is None:
            ip = self._free_ip()
        node = Node(self, index, name, ip, init)
        self.net.register(node)
        self.nodes[name] = node
        self.nodes_by_index.append(node)
        self._start(node, "start")
        return node

    def _check_new_node(self, name: object, ip: object, init: object) -> None:
        if not isinstance(name, str) or not name or len(name) > MAX_NODE_NAME_CHARS:
            raise SimulationError(
                f"a node name must be a non-empty str of at most {MAX_NODE_NAME_CHARS} "
                f"characters, got {name!r}"
            )
        if name in self.nodes:
            raise SimulationError(f"node {name!r} already exists: names are unique")
        if len(self.nodes) >= MAX_NODES:
            raise SimulationError(f"at most {MAX_NODES} nodes in a simulation")
        if ip is not None:
            try:
                ipaddress.IPv4Address(ip)
            except (ipaddress.AddressValueError, ValueError):
                raise SimulationError(f"ip must be an IPv4 address string, got {ip!r}") from None
        if init is not None and not callable(init):
            raise SimulationError(f"init must be an async function, got {init!r}")

    def _free_ip(self) -> str:
        for i in range(1, 255):
            candidate = f"10.0.0.{i}"
            if self.net.node_at_ip(candidate) is None:
                return candidate
        raise SimulationError("no free address in 10.0.0.0/24: pass ip= explicitly")

    def node(self, ref: Node | str) -> Node:
        """A node from its Node object or its name."""
        if isinstance(ref, Node):
            if self.nodes.get(ref.name) is not ref:
                raise SimulationError(f"{ref!r} belongs to another simulation")
            return ref
        if not isinstance(ref, str):
            raise SimulationError(f"a node is named by a str or a Node, got {ref!r}")
        node = self.nodes.get(ref)
        if node is None:
            known = ", ".join(self.nodes) or "none yet"
            raise SimulationError(f"unknown node {ref!r} (nodes: {known}); add it with add_node")
        return node

    def _start(self, node: Node, kind: str) -> None:
        node.boots += 1
        node.crashed = False
        boot = self.loop.new_boot(node.name, node, node.clock)
        node.boot = boot
        self.loop.record_for(node.name, kind, boot=node.boots)
        if node.init is None:
            return
        ctx = boot.context.copy()
        coro = ctx.run(node.init)
        if not asyncio.iscoroutine(coro):
            raise SimulationError(f"init of {node.name} must be an async function (got {coro!r})")
        task = self.loop.create_task(coro, name=f"{node.name}:init", context=ctx)
        boot.main_task = task
        task.add_done_callback(lambda t: self._init_done(node, t))

    def _init_done(self, node: Node, task: asyncio.Task[Any]) -> None:
        if task.cancelled() or task.exception() is None:
            return
        exc = task.exception()
        assert exc is not None
        self.loop.record_for(node.name, "init_failed", exception=stable_text(repr(exc)))
        if self._init_failure is None:
            self._init_failure = (node, exc)
            self._init_failure_at = self.loop.now
            self.loop.stop()

    def kill(self, node: Node | str) -> None:
        """Process crash: sockets reset (peers see it after one-way latency); page cache kept."""
        n = self.node(node)
        self.loop.record_for(n.name, "kill")
        if n.boot is not None and n.boot.alive:
            self.net.on_node_down(n, power_loss=False)
            self.loop.bury(n.boot, "was killed")
        if n._disk is not None:
            n._disk.on_kill()

    def crash(self, node: Node | str) -> None:
        """Power loss: peers see silence; data not fsynced is lost or torn."""
        n = self.node(node)
        self.loop.record_for(n.name, "crash")
        if n.boot is not None and n.boot.alive:
            self.net.on_node_down(n, power_loss=True)
            self.loop.bury(n.boot, "crashed")
        n.crashed = True
        if n._disk is not None:
            n._disk.on_crash()

    def restart(self, node: Node | str) -> None:
        """Boot again and run init (a live node is killed first)."""
        n = self.node(node)
        if n.alive:
            self.kill(n)
        self._start(n, "restart")
        self.net.on_node_up(n)

    def pause(self, node: Node | str) -> None:
        """Stop the world on a node (SIGSTOP, GC pause): nothing of it runs until resume."""
        n = self.node(node)
        if n.boot is None or not n.boot.alive:
            raise SimulationError(f"cannot pause {n.name}: it is down")
        self.loop.record_for(n.name, "pause")
        self.loop.pause_boot(n.boot)

    def resume(self, node: Node | str) -> None:
        n = self.node(node)
        self.loop.record_for(n.name, "resume")
        if n.boot is not None and n.boot.alive and n.boot.paused:
            self.loop.resume_boot(n.boot)

    def set_clock(self, node: Node | str, offset: float = 0.0, drift: float = 0.0) -> None:
        """Skew a node's clock: `offset` seconds on its wall clock, `drift` on its rate."""
        n = self.node(node)
        self.loop.set_node_clock(n.clock, float(offset), float(drift))
        self.loop.record_for(n.name, "set_clock", offset=offset, drift=drift)

    def set_disk(self, node: Node | str, config: DiskConfig) -> None:
        """Switch a node's disk faults at run time."""
        n = self.node(node)
        n.disk.set_config(config)
        self.loop.record_for(n.name, "set_disk", **config.as_dict())

    # --- running ---------------------------------------------------------------------------

    def run(self, main: Coroutine[Any, Any, T]) -> T:
        """Drive the world on the virtual clock until `main` returns; return its result."""
        if not asyncio.iscoroutine(main):
            raise TypeError(f"run() takes a coroutine, got {main!r}")
        if self._ran:
            main.close()
            raise SimulationError("a Simulation runs once: build a new one (same seed, same run)")
        self._ran = True
        started = entropy.real_monotonic()
        loop = self.loop
        task = loop.create_task(main, name="main", context=loop.supervisor_boot.context.copy())
        error: BaseException | None = None
        try:
            result = loop.run_until_complete(task)
        except BaseException as exc:
            error = exc
        finally:
            self.wall_seconds = entropy.real_monotonic() - started
            loop.teardown()
            loop.close()
        failures = self._failures()
        if failures and not task.done() and type(error) is RuntimeError:
            error = None  # "stopped before Future completed": a failure below stopped the loop
        if error is not None and (not failures or not isinstance(error, Exception)):
            self._annotate(error)  # main's own error, a bound, or KeyboardInterrupt: as it is
            raise error
        if error is not None:
            failures.insert(0, error)  # main's error first: it is what the caller awaited
        if len(failures) == 1:
            raise failures[0]
        if failures:
            raise RunFailures(
                f"seed {self.seed}: {len(failures)} failures in one run, by t={self.now:.6f}s",
                failures,
            )
        return result

    def _failures(self) -> list[Exception]:
        """The failures that stop a run besides main's own: the simulator's, a node's init."""
        found: list[Exception] = []
        fatal = self.loop.fatal
        if fatal is not None:
            fault = SimulatorFault(
                f"seed {self.seed}: simulator failure at t={self.now:.6f}s: {fatal!r}"
            )
            fault.__cause__ = fatal
            found.append(fault)
        if self._init_failure is not None:
            node, cause = self._init_failure
            failed = InitFailed(
                f"seed {self.seed}: init of node {node.name} raised {cause!r} at "
                f"t={self._init_failure_at:.6f}s"
            )
            failed.__cause__ = cause
            found.append(failed)
        return found

    def _annotate(self, exc: BaseException) -> None:
        if f"seed {self.seed}" not in str(exc):
            exc.add_note(f"detsim: seed {self.seed}, virtual time {self.now:.6f}s")
