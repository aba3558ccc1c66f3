"""Seeds: every random stream of a run is derived from the run's one seed and a purpose.

Rule: a purpose names one stream ("schedule", "entropy", "net", "disk:n1", ...), so adding a
draw to one stream never shifts another; derivation is a keyed hash, stable across processes,
Python versions and hash seeds.
"""

from __future__ import annotations

import hashlib


def derive_seed(seed: int, purpose: str) -> int:
    """An independent 64-bit seed for `purpose`."""
    digest = hashlib.blake2b(f"{seed}:{purpose}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")
