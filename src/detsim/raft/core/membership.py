"""Membership: which configuration is in force at each point of the log.

Owns `ConfHistory`: the configuration the snapshot records (the base) and, for each
CONF_CHANGE entry held in the log after it, the configuration after that entry. Also the
bootstrap log of a new cluster and the validity rules of one change.

Rules (the argument for them is in raft.py's header):
- one server at a time: each CONF_CHANGE entry adds a learner, promotes one, or removes one
  member; a change takes effect when its entry is appended, so the configuration in force is
  the latest one in the log, committed or not;
- truncating the log truncates the history (the configuration reverts); compacting it folds
  the history into the new base;
- changes are tracked in log order, asserted.
"""

from __future__ import annotations

from collections.abc import Sequence

from detsim.raft.core.errors import ConfChangeRejected
from detsim.raft.core.messages import (
    ConfChange,
    ConfChangeOp,
    ConfState,
    Entry,
    EntryKind,
    SnapshotMeta,
)

#: Bootstrap entries are at term 1: a fresh cluster starts at term 1 with them committed.
BOOTSTRAP_TERM = 1


def bootstrap_entries(conf: ConfState) -> list[Entry]:
    """The identical log prefix every node of a new cluster starts with (etcd's bootstrap):
    one CONF_CHANGE entry per member, so a node that joins later rebuilds the membership by
    replaying the log from index 1."""
    changes = [ConfChange(ConfChangeOp.PROMOTE, v) for v in conf.voters]
    changes += [ConfChange(ConfChangeOp.ADD_LEARNER, n) for n in conf.learners]
    return [
        Entry(BOOTSTRAP_TERM, k + 1, EntryKind.CONF_CHANGE, c.encode())
        for k, c in enumerate(changes)
    ]


def check_conf_change(conf: ConfState, change: ConfChange) -> None:
    """Raise ConfChangeRejected if `change` makes no sense against `conf`."""
    node = change.node_id
    if change.op is ConfChangeOp.ADD_LEARNER and node in conf.members():
        raise ConfChangeRejected(f"{node} is already a member")
    if change.op is ConfChangeOp.PROMOTE and node not in conf.learners:
        raise ConfChangeRejected(f"{node} is not a learner")
    if change.op is ConfChangeOp.REMOVE:
        if node not in conf.members():
            raise ConfChangeRejected(f"{node} is not a member")
        if conf.voters == (node,):
            raise ConfChangeRejected(f"{node} is the last voter")


class ConfHistory:
    """The base configuration at `base_index` and one (index, conf after) per change since."""

    __slots__ = ("_changes", "base_conf", "base_index")

    def __init__(self, base_index: int, base_conf: ConfState) -> None:
        self.base_index = base_index
        self.base_conf = base_conf
        self._changes: list[tuple[int, ConfState]] = []

    @property
    def conf(self) -> ConfState:
        """The configuration in force: the latest change, else the base."""
        return self._changes[-1][1] if self._changes else self.base_conf

    def last_change_index(self) -> int:
        """Index of the entry that made the configuration in force (the base's index if
        none since)."""
        return self._changes[-1][0] if self._changes else self.base_index

    def conf_at(self, index: int) -> ConfState:
        """The configuration in force after the entry at `index` (>= the base index)."""
        assert index >= self.base_index, (index, self.base_index)
        for change_index, conf in reversed(self._changes):
            if change_index <= index:
                return conf
        return self.base_conf

    def track(self, entries: Sequence[Entry]) -> list[ConfState]:
        """Apply the CONF_CHANGE entries just appended; the new configurations, in order."""
        added: list[ConfState] = []
        for entry in entries:
            if entry.kind is not EntryKind.CONF_CHANGE:
                continue
            assert entry.index > self.last_change_index(), "conf changes out of log order"
            conf = self.conf.apply(ConfChange.decode(entry.data))
            self._changes.append((entry.index, conf))
            added.append(conf)
        return added

    def truncate_from(self, index: int) -> None:
        """The log lost its entries from `index` on: their changes are undone."""
        self._changes = [(i, c) for i, c in self._changes if i < index]

    def reset(self, meta: SnapshotMeta) -> None:
        """A snapshot replaced the whole log."""
        self.base_index, self.base_conf = meta.index, meta.conf
        self._changes = []

    def compact(self, meta: SnapshotMeta) -> None:
        """The log prefix up to meta.index was dropped (meta.conf == conf_at(meta.index))."""
        assert meta.conf == self.conf_at(meta.index), (meta.conf, self.conf_at(meta.index))
        self._changes = [(i, c) for i, c in self._changes if i > meta.index]
        self.base_index, self.base_conf = meta.index, meta.conf
