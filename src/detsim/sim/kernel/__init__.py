"""The simulator's kernel: virtual time, scheduling, boots, the trace, seeds, patches, errors.

What a newcomer finds here, and nothing else:
- `loop`: SimLoop, the asyncio loop on virtual time (rounds, timers, seeded interleaving);
- `boot`: a host's run from start to kill (contexts, pause, death), `BOOT`;
- `clock`: each host's skewed view of virtual time; `seeds`: one seed, many streams;
- `trace`: the events and the decision hash; `entropy`: the patches of time, randomness,
  threads and sockets during a run; `blocking`: the blocking waits of threading, queue and
  concurrent.futures that raise instead of hanging; `runtime`: which loop runs in this thread;
- `errors`: misuse (`SimulationError`) and run outcomes (`RunOutcome` and subclasses);
- `interfaces`: the protocol a world plugs in through (`World`, `IO`, `Host`).

Rule (tests/test_layers.py): the kernel imports nothing of the world — not the Simulation,
nodes, network, disks, buggify, policy — not even under `TYPE_CHECKING`. The world (the rest of
`detsim.sim`) imports the kernel and plugs into it with `SimLoop.plug`.
"""
