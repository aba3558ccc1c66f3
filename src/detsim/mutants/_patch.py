"""Planting a bug: replace attributes of production classes for a while, then put them back.

Owned here: `Patch` (one attribute of one class: `make(original) -> replacement`), `Mutant` (a
named bug: one or more patches applied together) and the process-wide record of what is
planted now.

Rules:
- Production code (detsim.raft, detsim.kv) has no bug flags: a mutant only swaps attributes of
  its classes from the outside, as a test's monkeypatch does, and `revert` restores the very
  objects it replaced (read from the class `__dict__`, so a plain function stays a function).
- At most one mutant is planted in a process at a time (`plant` reverts any other first): a run
  is either clean or carries exactly the bug its scenario name says.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any


@dataclasses.dataclass(frozen=True, slots=True)
class Patch:
    """Replace `owner.attr` by `make(original)`."""

    owner: type
    attr: str
    make: Callable[[Any], Any]


@dataclasses.dataclass(frozen=True, slots=True)
class Mutant:
    """A planted bug: a name (one word), what mistake it models, and its patches."""

    name: str
    description: str  # one line: the mistake, as a reviewer would describe it
    patches: tuple[Patch, ...]

    def __post_init__(self) -> None:
        if not self.name.isidentifier():
            raise ValueError(f"a mutant name is an identifier, got {self.name!r}")
        if not self.patches:
            raise ValueError(f"mutant {self.name}: no patches")


# What is planted now: (owner, attr, original) in the order applied, and the mutant's name.
_planted: list[tuple[type, str, Any]] = []
_planted_name: list[str] = []


def planted() -> str | None:
    """The name of the mutant planted in this process, if any."""
    return _planted_name[0] if _planted_name else None


def plant(mutant: Mutant) -> None:
    """Apply `mutant`'s patches (reverting whatever was planted before)."""
    revert()
    for patch in mutant.patches:
        if patch.attr not in patch.owner.__dict__:
            revert()
            raise AttributeError(f"{patch.owner.__qualname__} defines no {patch.attr!r}")
        original = patch.owner.__dict__[patch.attr]
        _planted.append((patch.owner, patch.attr, original))
        setattr(patch.owner, patch.attr, patch.make(original))
    _planted_name.append(mutant.name)


def revert() -> None:
    """Put back every attribute replaced by `plant`, newest first."""
    while _planted:
        owner, attr, original = _planted.pop()
        setattr(owner, attr, original)
    _planted_name.clear()
