"""detsim.kv: the replicated key-value store that speaks the Redis protocol.

Modules: `limits` (every bound), `resp` (RESP2/3 replies and the request parser), `commands`
(the command table, parsing, Raft entry payloads), `statemachine` (SQLite, applied by the Raft
driver), `server` (the RESP server), `forward` (followers forward writes to the leader), `node`
(`NodeConfig`, `serve`). Rule (DESIGN "Layers"): nothing in detsim.kv imports detsim.sim,
directly or through another module; this package's `__init__` imports nothing at import time
(`NodeConfig` and `serve` load `node` on first use), so it loads in any process.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from detsim.kv.node import NodeConfig, serve

__all__ = ["NodeConfig", "serve"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from detsim.kv import node

        return getattr(node, name)
    raise AttributeError(f"module 'detsim.kv' has no attribute {name!r}")
