"""The store's failure scenarios (DESIGN "Campaigns"): workloads, nemeses, checks, catalogue.

Where things are:
- `workload.py`  redis-py client slots recorded through detsim.check.Recorder; workload shapes
- `nemesis.py`   fault schedules, one function per fault family, and their fault model
- `checks.py`    Raft invariants, node stops, liveness, convergence, durability, linearizability
- `cluster.py`   N store nodes + client hosts in a Simulation; the invariant checker's feed
- `run.py`       one run: options from the seed, safety phase, liveness phase, verdict
- `catalogue.py` the tables (workloads x nemeses x sizes) and `SCENARIOS`

Known issues found by these scenarios are pinned in tests/scenarios/test_known_issues.py.
Nothing is imported here, so `import detsim.scenarios` stays cheap.
"""
