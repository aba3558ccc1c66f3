"""The largest write the store's parser admits goes through Raft and SQLite whole.

The parser's bound (limits.MAX_WRITE_PAYLOAD_BYTES) and the Raft core's entry bound
(max_entry_bytes) are separate checks: when the core's was the smaller, a SET between the two
was parsed, then refused by the core and answered -NOLEADER ("safe to retry") forever. The
store now runs the core with limits.RAFT_SETTINGS; this test writes, through a follower
(forwarded), a value over the core's default bound, one just under the parser's bound, and one
over it.
"""

from __future__ import annotations

import pytest
import redis.exceptions
from kv_cluster import KVCluster

import detsim
from detsim.kv.limits import MAX_WRITE_PAYLOAD_BYTES
from detsim.raft.core.config import RaftConfig

CORE_DEFAULT_ENTRY_BYTES = RaftConfig(node_id="n").max_entry_bytes


@pytest.mark.detsim(seeds=1)
async def test_values_up_to_the_parsers_bound_are_replicated(sim: detsim.Simulation) -> None:
    c = KVCluster(sim)
    lead = await c.wait_leader()
    follower = c.followers(lead)[0]
    # The parser reserves a little room for the encoding of the command around the value.
    sizes = [CORE_DEFAULT_ENTRY_BYTES + 1024, MAX_WRITE_PAYLOAD_BYTES - 1024]
    assert sizes[0] < sizes[1]
    for size in sizes:
        value = bytes([size % 251]) * size
        assert await c.command(follower, "SET", "big", value) is True, size
        assert await c.command(lead, "GET", "big") == value
    refused = await c.command(follower, "SET", "big", b"v" * (MAX_WRITE_PAYLOAD_BYTES + 1))
    assert isinstance(refused, redis.exceptions.ResponseError) and "over the" in str(refused)
    await c.finish()
