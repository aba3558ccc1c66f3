"""Our error replies, side by side with a real redis-server's (Debian's `redis-server` package;
skipped where it is not installed).

The tables of test_kv_commands and test_kv_resp hold Redis's wording as read in its source; here
the same requests go to redis-server over a unix socket, and each error must match byte for
byte, except where this store differs on purpose (its own commands, one database, no CLIENT
KILL, CLIENT SETINFO newer than the packaged Redis 7.0, shorter bounds).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_kv_commands import INVALID, argv
from test_kv_resp import GARBAGE, pack

from detsim.kv.commands import CommandError, parse_command
from detsim.kv.resp import RequestParser, encode_reply

REDIS_SERVER = shutil.which("redis-server")
pytestmark = pytest.mark.skipif(REDIS_SERVER is None, reason="redis-server is not installed")

#: Where this store differs from Redis on purpose.
OURS_ONLY = {
    "CAS k v",
    "RAFT.PROMOTE",
    "RAFT.ADDLEARNER n4",
    "RAFT.ADDLEARNER n4 nowhere",
    "RAFT.ADDLEARNER n4 host:99999",
    "RAFT.ADDLEARNER n4 h:1 h:2 h:3",
    "RAFT.ADDLEARNER n4 h:1 nowhere",
    "SELECT 1",  # one database
    "client kill x",  # not implemented here: an unknown subcommand
    "CLIENT SETINFO color red",  # Redis >= 7.2; Debian 12 packages 7.0
}
#: Our header-line bound is 64 bytes, Redis's 64 KiB: Redis is still waiting for these.
OUR_BOUNDS = {"too big mbulk count string", "too big bulk count string"}

STARTUP_TIMEOUT_S = 10.0
REPLY_TIMEOUT_S = 5.0


@pytest.fixture(scope="module")
def redis_socket(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A redis-server on a unix socket only (no TCP port to collide with), stopped after."""
    directory = tmp_path_factory.mktemp("redis")
    path = directory / "redis.sock"
    assert REDIS_SERVER is not None
    process = subprocess.Popen(
        [
            REDIS_SERVER,
            "--port",
            "0",
            "--unixsocket",
            str(path),
            "--save",
            "",
            "--dir",
            str(directory),
        ],
        stdout=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while not path.exists():
            assert process.poll() is None, "redis-server exited"
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.05)
        yield path
    finally:
        process.terminate()
        process.wait(timeout=STARTUP_TIMEOUT_S)


def first_reply_line(path: Path, data: bytes) -> bytes:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(REPLY_TIMEOUT_S)
        sock.connect(str(path))
        sock.sendall(data)
        reply = b""
        while not reply.endswith(b"\r\n"):
            chunk = sock.recv(65536)
            assert chunk, f"redis-server closed without a reply to {data!r}"
            reply += chunk
        return reply


def our_error(args: list[bytes]) -> bytes:
    with pytest.raises(CommandError) as caught:
        parse_command(args)
    return encode_reply(caught.value.reply)


SHARED = [(line, message) for line, message in INVALID if line not in OURS_ONLY]


@pytest.mark.parametrize(("line", "message"), SHARED, ids=[line for line, _ in SHARED])
def test_command_errors_match_redis_server(redis_socket: Path, line: str, message: str) -> None:
    args = [b"CLIENT", b"SETNAME", b"a", b"b"] if "\t" in line else argv(line)
    assert first_reply_line(redis_socket, pack(*args)) == our_error(args)


def test_the_unknown_command_listing_matches_redis_server(redis_socket: Path) -> None:
    args = [b"nope", b"a" * 100, b"b" * 100, b"c"]
    assert first_reply_line(redis_socket, pack(*args)) == our_error(args)


PROTOCOL = [
    (data, message) for data, message in GARBAGE if message.split(": ")[1] not in OUR_BOUNDS
]


@pytest.mark.parametrize(("data", "message"), PROTOCOL, ids=[m for _, m in PROTOCOL])
def test_protocol_errors_match_redis_server(redis_socket: Path, data: bytes, message: str) -> None:
    parser = RequestParser()
    parser.feed(data)
    failure = parser.get()
    assert failure is not None and not isinstance(failure, list)
    assert first_reply_line(redis_socket, data) == encode_reply(failure.reply)
