"""Configuration of the simulated network and disks.

Plain frozen dataclasses: a campaign prints them, an artifact stores them (`as_dict`), and
`DETSIM_TEST_CONFIG` (TOML) builds them. Every field has a unit in its name or its docstring.
"""

from __future__ import annotations

import dataclasses
from typing import Any

Range = tuple[float, float]


def _check_probability(name: str, p: float) -> None:
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"{name} must be a probability in [0, 1], got {p!r}")


def _check_range(name: str, r: Range) -> None:
    lo, hi = r
    if not 0.0 <= lo <= hi:
        raise ValueError(f"{name} must be (lo, hi) seconds with 0 <= lo <= hi, got {r!r}")


@dataclasses.dataclass(frozen=True, slots=True)
class NetConfig:
    """The simulated network. Latencies are one-way, in virtual seconds, drawn per segment."""

    latency: Range = (0.001, 0.010)
    loss: float = 0.0  # UDP only: TCP is reliable (segments are held, never lost)
    duplicate: float = 0.0  # UDP only
    connect_timeout: float = 10.0  # a connect to a silent host fails with TimeoutError after this
    stream_timeout: float = 30.0  # a segment held longer than this resets the connection
    high_water_bytes: int = 64 * 1024  # unacknowledged bytes above which a writer pauses
    low_water_bytes: int = 16 * 1024  # ... and below which it resumes
    max_datagram_bytes: int = 65_507

    def __post_init__(self) -> None:
        _check_range("latency", self.latency)
        _check_probability("loss", self.loss)
        _check_probability("duplicate", self.duplicate)
        if self.connect_timeout <= 0 or self.stream_timeout <= 0:
            raise ValueError("connect_timeout and stream_timeout must be positive seconds")
        if not 0 <= self.low_water_bytes <= self.high_water_bytes:
            raise ValueError("need 0 <= low_water_bytes <= high_water_bytes")

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True, slots=True)
class DiskConfig:
    """The simulated disk of each node; the fault model is written down in `detsim.sim.disk`."""

    read_corruption: float = 0.0  # probability that a read returns one flipped bit
    write_error: float = 0.0  # probability that a write raises OSError(EIO)
    capacity: int | None = None  # bytes; past it writes raise OSError(ENOSPC); None: unbounded
    fsync_latency: float = 0.0  # virtual seconds that `await f.fsync_async()` takes
    # At a crash, the relative weights of keep / lose / tear for each file's unsynced data and
    # each directory's un-fsynced name changes (tear: a prefix of them survives).
    crash_weights: tuple[float, float, float] = (1.0, 1.0, 1.0)

    def __post_init__(self) -> None:
        weights = tuple(self.crash_weights)
        if len(weights) != 3 or min(weights) < 0 or sum(weights) <= 0:
            raise ValueError(
                "crash_weights must be three weights >= 0 (keep, lose, tear) with a positive "
                f"sum, got {self.crash_weights!r}"
            )
        object.__setattr__(self, "crash_weights", weights)  # a TOML list becomes a tuple
        _check_probability("read_corruption", self.read_corruption)
        _check_probability("write_error", self.write_error)
        if self.capacity is not None and self.capacity < 0:
            raise ValueError("capacity must be a byte count >= 0, or None")
        if self.fsync_latency < 0:
            raise ValueError("fsync_latency must be >= 0 seconds")

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
