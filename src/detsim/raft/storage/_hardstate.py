"""The Raft hard state (term, vote, commit) on disk: `hardstate.rec`, a record file of updates.

Rules:
- An update is one appended record; the last valid record wins. A record is durable after
  `sync()`. A torn last record is an update that was never synced (nothing relied on it): the
  record file truncates it and the previous state stands. Damage before the last record is
  corruption (`CorruptRecordError`, with path and offset).
- Past `MAX_HARD_STATE_RECORDS` records the file is rewritten with only the latest state:
  written to `hardstate.rec.tmp`, fsynced, renamed over the old file, directory fsynced (a crash
  at any point leaves the old file or the new one, and both end with the latest state).
"""

from __future__ import annotations

import logging
import os
from typing import Final

from detsim import fs
from detsim.fs.records import RecordFile
from detsim.raft import codec
from detsim.raft.core.messages import HardState
from detsim.raft.storage._common import CorruptStorageError

HARD_STATE_FILE: Final = "hardstate.rec"
MAX_HARD_STATE_RECORDS: Final = 65_536  # ~2 MiB of updates before the file is rewritten

_log = logging.getLogger(__name__)


class HardStateFile:
    """The hard state of one data directory. Call `load` once before anything else."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self.path = os.path.join(directory, HARD_STATE_FILE)
        self._file: RecordFile | None = None
        self._durable = HardState()  # the last state written (synced or not)
        self._dirty = False

    def load(self) -> HardState:
        tmp = self.path + ".tmp"
        if fs.exists(tmp):  # a rewrite cut by a crash before its rename: the old file stands
            fs.remove(tmp)
            fs.fsync_dir(self.directory)
        self._file = RecordFile.open(self.path)
        if self._file.recovered:
            last = self._file.recovered[-1]
            self._durable = _decode(self.path, last.offset, last.payload)
        self._file.recovered.clear()
        return self._durable

    @property
    def state(self) -> HardState:
        return self._durable

    def write(self, state: HardState) -> None:
        """Record a new state (not durable until `sync`); the same state again is a no-op."""
        assert self._file is not None, "load() first"
        if state == self._durable:
            return
        if len(self._file) >= MAX_HARD_STATE_RECORDS:
            self._rewrite(state)
        else:
            self._file.append(codec.packb(codec.encode_hard_state(state)))
            self._dirty = True
        self._durable = state

    def _rewrite(self, state: HardState) -> None:
        assert self._file is not None
        tmp = self.path + ".tmp"
        with RecordFile.open(tmp) as fresh:
            fresh.append(codec.packb(codec.encode_hard_state(state)))
            fresh.sync()
        self._file.close()
        fs.rename(tmp, self.path)
        fs.fsync_dir(self.directory)
        self._file = RecordFile.open(self.path)
        self._file.recovered.clear()
        self._dirty = False
        _log.info("%s: rewritten with the latest hard state", self.path)

    async def sync(self) -> None:
        if self._dirty and self._file is not None:
            self._dirty = False
            await self._file.sync_async()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


def _decode(path: str, offset: int, payload: bytes) -> HardState:
    try:
        return codec.decode_hard_state(codec.unpackb(payload))
    except codec.CodecError as exc:
        raise CorruptStorageError(path, offset, f"undecodable hard state: {exc}") from None
