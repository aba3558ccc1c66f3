"""detsim.raft: the Raft consensus layer of the replicated store.

`detsim.raft.core` is the pure, sans-I/O protocol (no asyncio, time, random, sockets or files);
the driver, transport and storage modules beside it run it on asyncio, TCP and `detsim.fs`.
Rule (DESIGN "Layers"): nothing in detsim.raft imports detsim.sim.
"""
