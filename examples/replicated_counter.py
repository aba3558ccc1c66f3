"""A replicated counter, run two ways: on real loopback sockets, and in a detsim simulation.

    python examples/replicated_counter.py              # 3 replicas + a client on 127.0.0.1
    python examples/replicated_counter.py --unsafe     # the planted bug: a clean run passes
    python examples/replicated_counter.py --sim 3 --unsafe   # one simulated seed under faults

The app (detsim.examples.counter) is plain asyncio and imports nothing of detsim; the
simulated run (detsim.examples.counter_scenario) adds the nodes, the clients, the nemesis and
the checker. Both live in the package so campaign workers import them from anywhere; this
script is the thin entry point. Campaigns: `detsim sim --scenario counter --seeds 100`.
"""

from __future__ import annotations

import argparse

from detsim.campaign.runner import Task, run_one
from detsim.examples import counter


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--unsafe", action="store_true", help="ack before replicating (the bug)")
    parser.add_argument("--increments", type=int, default=20, help="loopback demo: increments")
    parser.add_argument("--sim", type=int, metavar="SEED", help="run one simulated seed instead")
    args = parser.parse_args()
    if args.sim is None:
        return counter.main([str(args.increments)] + (["--unsafe"] if args.unsafe else []))
    name = "counter_unsafe" if args.unsafe else "counter"
    result = run_one(Task(name, args.sim))
    for key, value in result.options.items():
        print(f"{key} = {value}")
    print(f"{result.operations} operations checked, {result.virtual_s:.1f} virtual s")
    print(result.failure or "passed")
    return 0 if result.passed else 1


if __name__ == "__main__":
    raise SystemExit(main())
