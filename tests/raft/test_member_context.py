"""An ADD_LEARNER change's context: the new member's Raft address and, optionally, where it
serves clients (the store forwards writes there when it leads)."""

from __future__ import annotations

import pytest

from detsim.raft.driver import decode_member_context, encode_address, encode_member_context


@pytest.mark.parametrize(
    ("raft", "client"),
    [
        (("10.0.0.4", 7000), None),
        (("10.0.0.4", 7000), ("10.0.0.4", 6379)),
        (("::1", 7000), ("::1", 6379)),
    ],
)
def test_round_trip(raft: tuple[str, int], client: tuple[str, int] | None) -> None:
    assert decode_member_context(encode_member_context(raft, client)) == (raft, client)


def test_an_old_context_is_the_raft_address_alone() -> None:
    # Logs written before client addresses were carried hold only the Raft address.
    assert decode_member_context(encode_address(("h", 1))) == (("h", 1), None)


@pytest.mark.parametrize("data", [b"h:1 ", b"h:1 nowhere", b"nowhere", b"h:1 h:2 h:3", b""])
def test_garbage_is_a_value_error(data: bytes) -> None:
    with pytest.raises(ValueError):
        decode_member_context(data)
