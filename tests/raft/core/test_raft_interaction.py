"""Scripted interaction tests with golden output, after etcd-io/raft's testdata/*.txt.

Each file in testdata/ is a sequence of blocks:

    # comments (kept on rewrite)
    command arg ... key=value
    ----
    expected output (no blank lines; "ok" when the command prints nothing)

The output was reviewed by hand when the golden file was written: it must be RIGHT, not only
stable. Regenerate after a deliberate change with DETSIM_REWRITE_GOLDEN=1 and review the diff.

Commands (node ids are "1", "2", ...):
  add-nodes N [learners=4,5] [pre-vote=false] [check-quorum=false] [election=10]
            [heartbeat=1] [inflight=N] [max-entries=N] [chunk=N] [chunks-in-flight=N]
  add-node ID [same options]        an empty node that joins (no initial configuration)
  campaign ID | tick ID [N] | tick-heartbeat ID | tick-election ID
  propose ID DATA | propose-many ID COUNT PREFIX | read-index ID REQ
  add-learner ID NODE | promote ID NODE | remove ID NODE | transfer-leadership ID TARGET
  process-ready ID... | deliver-msgs ID... | drop-msgs [from=ID] [to=ID]
  stabilize [ID...] | stabilize-quiet [ID...]
  partition A,B C,D | heal | crash ID | restart ID | compact ID
  status ID | log ID | progress ID | raft-state | sm ID
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from raft_harness import Cluster, fmt_entries, fmt_meta, fmt_state, make_config, view_of

from detsim.check.raft import RaftInvariants
from detsim.raft.core import ConfChange, ConfChangeOp, ConfState

TESTDATA = Path(__file__).parent / "testdata"
REWRITE = os.environ.get("DETSIM_REWRITE_GOLDEN") == "1"

CONFIG_KEYS = {
    "pre-vote": ("pre_vote", lambda v: v == "true"),
    "check-quorum": ("check_quorum", lambda v: v == "true"),
    "election": ("election_ticks", int),
    "heartbeat": ("heartbeat_ticks", int),
    "inflight": ("max_inflight_appends", int),
    "max-entries": ("max_entries_per_append", int),
    "chunk": ("snapshot_chunk_bytes", int),
    "chunks-in-flight": ("max_snapshot_chunks_in_flight", int),
}


def parse_blocks(text: str) -> list[tuple[list[str], str, list[str]]]:
    """[(comment/blank lines before, command, expected output lines)]."""
    lines = text.splitlines()
    blocks, pre, k = [], [], 0
    while k < len(lines):
        line = lines[k]
        if not line.strip() or line.startswith("#"):
            pre.append(line)
            k += 1
            continue
        command = line
        assert lines[k + 1] == "----", f"line {k + 2}: expected ---- after {command!r}"
        k += 2
        out = []
        while k < len(lines) and lines[k].strip():
            out.append(lines[k])
            k += 1
        blocks.append((pre, command, out))
        pre = []
    return blocks


class Interpreter:
    def __init__(self) -> None:
        self.checker = RaftInvariants()
        self.cluster = Cluster(seed=0, checker=self.checker, verbose=True)
        self.options: dict[str, Any] = {}

    def run(self, command: str) -> list[str]:
        words = command.split()
        args = [w for w in words[1:] if "=" not in w]
        kwargs = dict(w.split("=", 1) for w in words[1:] if "=" in w)
        self.cluster.out = []
        getattr(self, "cmd_" + words[0].replace("-", "_"))(args, kwargs)
        return self.cluster.out or ["ok"]

    def _config(self, node_id: str, kwargs: dict[str, str]) -> Any:
        overrides = {}
        for key, value in kwargs.items():
            if key in CONFIG_KEYS:
                name, conv = CONFIG_KEYS[key]
                overrides[name] = conv(value)
        return make_config(node_id, **overrides)

    # --- setup -----------------------------------------------------------------------------

    def cmd_add_nodes(self, args: list[str], kwargs: dict[str, str]) -> None:
        count = int(args[0])
        learners = kwargs.get("learners", "")
        learner_ids = tuple(x for x in learners.split(",") if x)
        voters = [str(i) for i in range(1, count + 1) if str(i) not in learner_ids]
        conf = ConfState.of(voters, tuple(sorted(learner_ids)))
        for i in range(1, count + 1):
            self.cluster.add_node(str(i), self._config(str(i), kwargs), conf)

    def cmd_add_node(self, args: list[str], kwargs: dict[str, str]) -> None:
        self.cluster.add_node(args[0], self._config(args[0], kwargs), None)

    # --- local requests --------------------------------------------------------------------

    def cmd_campaign(self, args: list[str], kwargs: dict[str, str]) -> None:
        self.cluster.call(args[0], lambda r: r.campaign())

    def cmd_tick(self, args: list[str], kwargs: dict[str, str]) -> None:
        self.cluster.tick(args[0], int(args[1]) if len(args) > 1 else 1)

    def cmd_tick_heartbeat(self, args: list[str], kwargs: dict[str, str]) -> None:
        node = self.cluster.nodes[args[0]]
        self.cluster.tick(args[0], node.config.heartbeat_ticks)

    def cmd_tick_election(self, args: list[str], kwargs: dict[str, str]) -> None:
        """Tick until the node's role changes (at most 2 election timeouts)."""
        node = self.cluster.nodes[args[0]]
        role = node.core.role_name
        for _ in range(2 * node.config.election_ticks):
            self.cluster.tick(args[0])
            if node.core.role_name != role:
                return

    def cmd_propose(self, args: list[str], kwargs: dict[str, str]) -> None:
        data = args[1].encode()
        index = self.cluster.call(args[0], lambda r: r.propose(data))
        if isinstance(index, int):
            self.cluster.log(f"index {index}")

    def cmd_propose_many(self, args: list[str], kwargs: dict[str, str]) -> None:
        node_id, count, prefix = args[0], int(args[1]), args[2]
        for k in range(count):
            data = f"{prefix}{k}".encode()
            self.cluster.call(node_id, lambda r, d=data: r.propose(d))

    def _conf_change(self, op: ConfChangeOp, args: list[str]) -> None:
        change = ConfChange(op, args[1], b"")
        index = self.cluster.call(args[0], lambda r: r.propose_conf_change(change))
        if isinstance(index, int):
            self.cluster.log(f"index {index}")

    def cmd_add_learner(self, args: list[str], kwargs: dict[str, str]) -> None:
        self._conf_change(ConfChangeOp.ADD_LEARNER, args)

    def cmd_promote(self, args: list[str], kwargs: dict[str, str]) -> None:
        self._conf_change(ConfChangeOp.PROMOTE, args)

    def cmd_remove(self, args: list[str], kwargs: dict[str, str]) -> None:
        self._conf_change(ConfChangeOp.REMOVE, args)

    def cmd_transfer_leadership(self, args: list[str], kwargs: dict[str, str]) -> None:
        self.cluster.call(args[0], lambda r: r.transfer_leadership(args[1]))

    def cmd_read_index(self, args: list[str], kwargs: dict[str, str]) -> None:
        self.cluster.call(args[0], lambda r: r.read_index(args[1].encode()))

    def cmd_compact(self, args: list[str], kwargs: dict[str, str]) -> None:
        self.cluster.compact(args[0])

    # --- the driver and the network --------------------------------------------------------

    def cmd_process_ready(self, args: list[str], kwargs: dict[str, str]) -> None:
        for node_id in args:
            self.cluster.process_ready(node_id)

    def cmd_deliver_msgs(self, args: list[str], kwargs: dict[str, str]) -> None:
        for node_id in args:
            self.cluster.deliver(node_id)

    def cmd_drop_msgs(self, args: list[str], kwargs: dict[str, str]) -> None:
        frm, to = kwargs.get("from"), kwargs.get("to")
        n = self.cluster.drop(
            lambda m: (frm is None or m.frm == frm) and (to is None or m.to == to)
        )
        self.cluster.log(f"dropped {n} messages")

    def cmd_stabilize(self, args: list[str], kwargs: dict[str, str]) -> None:
        self.cluster.stabilize(args or None)

    def cmd_stabilize_quiet(self, args: list[str], kwargs: dict[str, str]) -> None:
        self.cluster.verbose = False
        try:
            self.cluster.stabilize(args or None)
        finally:
            self.cluster.verbose = True

    def cmd_partition(self, args: list[str], kwargs: dict[str, str]) -> None:
        self.cluster.partition([a.split(",") for a in args])

    def cmd_heal(self, args: list[str], kwargs: dict[str, str]) -> None:
        self.cluster.heal()

    def cmd_crash(self, args: list[str], kwargs: dict[str, str]) -> None:
        self.cluster.crash(args[0])

    def cmd_restart(self, args: list[str], kwargs: dict[str, str]) -> None:
        self.cluster.restart(args[0])

    # --- observation -----------------------------------------------------------------------

    def cmd_status(self, args: list[str], kwargs: dict[str, str]) -> None:
        self.cluster.log(json.dumps(self.cluster.nodes[args[0]].core.status(), sort_keys=True))

    def cmd_log(self, args: list[str], kwargs: dict[str, str]) -> None:
        r = self.cluster.nodes[args[0]].core
        snap = r.snapshot_meta
        if snap.index:
            self.cluster.log(f"snapshot {fmt_meta(snap)}")
        entries = r.entries(snap.index + 1, r.last_index + 1)
        self.cluster.log(fmt_entries(entries, long=True) if entries else "(empty log)")

    def cmd_progress(self, args: list[str], kwargs: dict[str, str]) -> None:
        progress = self.cluster.nodes[args[0]].core.progress()
        for node_id in sorted(progress):
            self.cluster.log(f"{node_id}: {progress[node_id].describe()}")

    def cmd_raft_state(self, args: list[str], kwargs: dict[str, str]) -> None:
        for node_id in self.cluster.ids():
            node = self.cluster.nodes[node_id]
            text = fmt_state(node.core) if node.raft is not None else "down"
            self.cluster.log(f"{node_id}: {text}")

    def cmd_sm(self, args: list[str], kwargs: dict[str, str]) -> None:
        s = self.cluster.nodes[args[0]].storage
        items = b" ".join(s.sm).decode()
        self.cluster.log(f"applied={s.applied} sm=[{items}]")


def golden_files() -> list[Path]:
    return sorted(TESTDATA.glob("*.txt"))


@pytest.mark.parametrize("path", golden_files(), ids=lambda p: p.stem)
def test_interaction(path: Path) -> None:
    interp = Interpreter()
    blocks = parse_blocks(path.read_text())
    rewritten: list[str] = []
    mismatches = []
    for pre, command, expected in blocks:
        got = interp.run(command)
        rewritten += [*pre, command, "----", *got]
        if got != expected and not mismatches:
            mismatches.append((command, expected, got))
    interp.checker.check_logs(
        view_of(n) for n in interp.cluster.nodes.values() if n.raft is not None
    )
    if REWRITE:
        path.write_text("\n".join(rewritten) + "\n")
        return
    if mismatches:
        command, expected, got = mismatches[0]
        pytest.fail(
            f"{path.name}: {command!r}\n--- expected\n"
            + "\n".join(expected)
            + "\n--- got\n"
            + "\n".join(got)
        )
