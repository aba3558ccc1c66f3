"""detsim.kv: the replicated key-value store that speaks the Redis protocol.

Modules: `limits` (every bound), `resp` (RESP2/3 replies and the request parser), `commands`
(the command table, parsing, Raft entry payloads), `statemachine` (SQLite, applied by the Raft
driver). Rule (DESIGN "Layers"): nothing in detsim.kv imports detsim.sim, directly or through
another module; this package's `__init__` imports nothing, so it loads in any process.
"""
