"""A plain asyncio echo server and client: no detsim import, runs anywhere."""

from __future__ import annotations

import asyncio


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while line := await reader.readline():
            writer.write(line.upper())
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


async def serve(host: str, port: int, started: asyncio.Event | None = None) -> None:
    server = await asyncio.start_server(handle, host, port)
    if started is not None:
        started.set()
    async with server:
        await server.serve_forever()


async def call(host: str, port: int, lines: list[str]) -> list[str]:
    reader, writer = await asyncio.open_connection(host, port)
    replies = []
    for line in lines:
        writer.write(line.encode() + b"\n")
        await writer.drain()
        replies.append((await reader.readline()).decode().rstrip("\n"))
    writer.close()
    await writer.wait_closed()
    return replies
