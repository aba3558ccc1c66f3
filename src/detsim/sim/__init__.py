"""The simulator: loop, clock, entropy, nodes, network, disks, faults, trace.

Where things are: `world` (Simulation, the public API), `loop` (scheduling on virtual time),
`node` (hosts and boots), `clock`, `entropy` (what is patched during a run), `net/` (links and
faults in `network`, `tcp`, `udp`, `sockets`), `disk` (the disk fault model), `faults`
(buggify), `trace`, `determinism`, `policy` (EventLoopPolicy), `artifact`.
"""
