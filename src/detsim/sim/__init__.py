"""The simulator: a kernel, and the world that plugs into it.

`kernel/` — virtual time, scheduling, boots, the trace, seeds, the patches of time and entropy,
and the errors. It imports nothing of the world (tests/test_layers.py) and asks the world for
I/O only through `kernel/interfaces.py`.

The world, here — `world` (Simulation, the public API), `node` (hosts), `net/` (links and
faults in `network`, `tcp`, `udp`, `sockets`), `disk` (the disk fault model), `faults`
(buggify), `policy` (EventLoopPolicy), `runtime` (which simulation and node the caller is in),
`config`, `determinism`, `artifact`. `errors`, `clock`, `trace` and `loop` name the kernel's
classes here too, so that `detsim.sim.errors.SimulationError` and the like keep working.
"""
