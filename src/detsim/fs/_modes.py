"""Open modes of `detsim.fs`, shared by both backends (the real one here, the simulated one in
`detsim.sim.disk`, which imports this module: the simulator may import detsim.fs, never the
reverse).

Rules: binary modes only, in any character order ("rb", "br+", ...); each parses to one
canonical spelling ("rb", "wb", "ab", "xb", "r+b", "w+b", "a+b", "x+b") and what it permits.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True, slots=True)
class OpenMode:
    """A binary open mode, parsed: what `open(path, mode)` may do."""

    canonical: str  # one of "rb", "wb", "ab", "xb", "r+b", "w+b", "a+b", "x+b"
    readable: bool
    writable: bool
    append: bool  # every write goes to the end of the file
    create: bool  # create the file when it does not exist
    truncate: bool  # empty the file at open
    exclusive: bool  # fail with FileExistsError when the file exists


def parse_mode(mode: str) -> OpenMode:
    """Parse a binary mode in any order ("rb", "br+", ...). Text modes raise ValueError."""
    if not isinstance(mode, str):
        raise TypeError(f"mode must be a str, got {type(mode).__name__}")
    chars = set(mode)
    if len(chars) != len(mode) or not chars <= set("rwaxb+t"):
        raise ValueError(f"invalid mode: {mode!r}")
    if "t" in chars or "b" not in chars:
        raise ValueError(
            f"detsim.fs opens files in binary mode only ('rb', 'wb', ...), got {mode!r}"
        )
    kinds = chars & set("rwax")
    if len(kinds) != 1:
        raise ValueError(f"mode must have exactly one of r, w, a, x: {mode!r}")
    kind = kinds.pop()
    plus = "+" in chars
    return OpenMode(
        canonical=kind + ("+b" if plus else "b"),
        readable=kind == "r" or plus,
        writable=kind != "r" or plus,
        append=kind == "a",
        create=kind != "r",
        truncate=kind == "w",
        exclusive=kind == "x",
    )
