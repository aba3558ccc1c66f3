"""Print the trace hashes of a few chaos seeds, one line: compared across Python versions by
scripts/test-pythons.sh (a seed is the same run on 3.11, 3.12 and 3.13)."""

from __future__ import annotations

import json

import test_sim_chaos

if __name__ == "__main__":
    print(json.dumps([test_sim_chaos.run_seed(seed).trace_hash for seed in range(3)]))
