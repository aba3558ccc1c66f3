"""The floor under the store's one-client write on this machine: the same I/O chain with
nothing else (store issue, "Speed"; BENCHMARKS.md "The store, one client").

    .venv/bin/python benchmarks/bench_floor.py [--requests 3000] [--rounds 3] [--no-fsync]

A "leader" and 2 "followers", each its own OS process on 127.0.0.1 running asyncio, and
redis-benchmark (`-t set -d 10 -c 1`, no pipelining) as the client, exactly as
`bench_store.py` drives the store. Per SET the leader reads the request (only `SET` is
answered), appends ~40 bytes to its log file, sends them to both followers over TCP (4-byte
length frames), fsyncs its own file, and replies `+OK` once its fsync and one follower's
acknowledgement are both done; a follower appends, fsyncs, acknowledges. That is the chain
a durable Raft write cannot skip (client hop, replication hop and its answer, a follower's
fsync, the leader's fsync in parallel, the reply) and none of the rest: no Raft, no
SQLite, no RESP parsing beyond finding the request's end, no checks. fsyncs run on the
loop's thread, as the store's small ones do. `--no-fsync` drops every fsync (PySyncObj never
calls one). Each round starts the 3 processes fresh in a temp dir and kills them after.
Prints redis-benchmark's ops/s and p50/p99 per round and their medians.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import io
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Final

HOST: Final = "127.0.0.1"
LENGTH_BYTES: Final = 4
MAX_FRAME_BYTES: Final = 1 << 20
START_TIMEOUT_S: Final = 10.0
BENCH_TIMEOUT_S: Final = 300.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


async def _follower(port: int, path: str, fsync: bool) -> None:
    log = open(path, "ab", buffering=0)  # noqa: SIM115 - the process's lifetime

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                header = await reader.readexactly(LENGTH_BYTES)
            except asyncio.IncompleteReadError:
                return  # the leader went away
            size = int.from_bytes(header, "big")
            assert size <= MAX_FRAME_BYTES
            log.write(await reader.readexactly(size))
            if fsync:
                os.fsync(log.fileno())
            writer.write(b"A")

    server = await asyncio.start_server(serve, HOST, port)
    await server.serve_forever()


async def _leader(port: int, follower_ports: list[int], path: str, fsync: bool) -> None:
    log = open(path, "ab", buffering=0)  # noqa: SIM115 - the process's lifetime
    links = [await asyncio.open_connection(HOST, p) for p in follower_ports]
    for _, w in links:
        w.transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sent = 0
    acked = [0 for _ in links]
    waiters: dict[int, asyncio.Future[None]] = {}  # entry number -> its first acknowledgement

    async def read_acks(i: int, reader: asyncio.StreamReader) -> None:
        while True:
            data = await reader.read(4096)
            if not data:
                return
            acked[i] += len(data)
            for n in [n for n in waiters if n <= acked[i]]:
                waiters.pop(n).set_result(None)

    readers = [asyncio.ensure_future(read_acks(i, r)) for i, (r, _) in enumerate(links)]
    one_at_a_time = asyncio.Lock()  # redis-benchmark opens a connection of its own too

    async def replicate(entry: bytes) -> None:
        nonlocal sent
        sent += 1
        first_ack = waiters[sent] = asyncio.get_running_loop().create_future()
        frame = len(entry).to_bytes(LENGTH_BYTES, "big") + entry
        for _, w in links:
            w.write(frame)
        log.write(entry)
        if fsync:
            os.fsync(log.fileno())
        await first_ack  # one follower's durable copy + ours: 2 of 3

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        buffer = b""
        while True:
            data = await reader.read(65536)
            if not data:
                return
            buffer += data
            # redis-benchmark's SET: "*3\r\n$3\r\nSET\r\n$N\r\nkey\r\n$10\r\nvalue\r\n",
            # 7 CRLF-terminated lines per request.
            while buffer.count(b"\r\n") >= 7:
                end = 0
                for _ in range(7):
                    end = buffer.index(b"\r\n", end) + 2
                entry, buffer = buffer[:end], buffer[end:]
                async with one_at_a_time:
                    await replicate(entry)
                writer.write(b"+OK\r\n")

    server = await asyncio.start_server(serve, HOST, port)
    try:
        await server.serve_forever()
    finally:
        for task in readers:
            task.cancel()


def _child(role: str, argv: list[str]) -> None:
    fsync = argv[-1] == "fsync"
    if role == "follower":
        asyncio.run(_follower(int(argv[0]), argv[1], fsync))
    else:
        ports = [int(p) for p in argv[1].split(",")]
        asyncio.run(_leader(int(argv[0]), ports, argv[2], fsync))


def _wait_port(port: int) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex((HOST, port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"port {port} did not open in {START_TIMEOUT_S} s")


def _redis_benchmark_argv(port: int, requests: int) -> list[str]:
    load = ["-t", "set", "-d", "10", "-r", "100000", "-c", "1", "-n", str(requests), "--csv"]
    return ["redis-benchmark", "-h", HOST, "-p", str(port), *load]


def _round(requests: int, fsync: bool) -> dict[str, float]:
    mode = "fsync" if fsync else "nofsync"
    procs: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory() as tmp:
        try:
            f_ports = [_free_port(), _free_port()]
            for i, p in enumerate(f_ports):
                argv = [__file__, "--child", "follower", str(p), f"{tmp}/f{i}", mode]
                procs.append(subprocess.Popen([sys.executable, *argv], start_new_session=True))
                _wait_port(p)
            port = _free_port()
            ports = ",".join(map(str, f_ports))
            argv = [__file__, "--child", "leader", str(port), ports, f"{tmp}/l", mode]
            procs.append(subprocess.Popen([sys.executable, *argv], start_new_session=True))
            _wait_port(port)
            out = subprocess.run(
                _redis_benchmark_argv(port, requests),
                capture_output=True,
                timeout=BENCH_TIMEOUT_S,
                check=True,
            ).stdout.decode()
        finally:
            for proc in procs:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    rows = list(csv.DictReader(io.StringIO(out)))
    (row,) = [r for r in rows if r["test"] == "SET"]
    return {
        "ops_per_s": float(row["rps"]),
        "p50_ms": float(row["p50_latency_ms"]),
        "p99_ms": float(row["p99_latency_ms"]),
    }


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        _child(sys.argv[2], sys.argv[3:])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-fsync", action="store_true")
    args = parser.parse_args()
    results = []
    for r in range(args.rounds):
        result = _round(args.requests, not args.no_fsync)
        print(f"round {r}: {result}", flush=True)
        results.append(result)
    medians = {k: statistics.median(x[k] for x in results) for k in results[0]}
    label = "no fsync" if args.no_fsync else "fsync"
    print(f"floor ({label}), medians of {args.rounds}: {medians}")


if __name__ == "__main__":
    main()
