"""Example applications: plain asyncio programs that detsim tests without changing them.

`counter` is a replicated counter (the app: asyncio only, no detsim import, runs with
`asyncio.run` on loopback); `counter_scenario` drives it inside a Simulation under faults and
checks it. They live in the package (not only under `examples/`) so that campaign workers and
`detsim replay` import them by name from any working directory; `examples/replicated_counter.py`
is the runnable script.
"""
