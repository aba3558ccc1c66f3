"""The history recorder: a redis-py asyncio client whose every call becomes history events.

Owns the classification of outcomes (DESIGN.md "Histories and checkers"):

    reply                                   completion   then
    a normal reply                          ok           value: get -> text or null,
                                                         append -> new length, delete -> count,
                                                         incr -> new int, put/cas -> null
    CAS ... returning 0                     fail         error "cas-mismatch" (an observation)
    -NOLEADER ...                           fail         (not applied; the slot keeps its id)
    -ERR ... and any other error reply      fail         (refused: bad command or argument)
    -TIMEOUT ..., timeout, connection       info         the process id is retired: the slot's
      reset/lost, cancellation, anything                 next op gets a fresh id (an info op may
      unexpected                                         still take effect later)

Ops map to commands: get->GET, put->SET, append->APPEND, cas->CAS key expected new (custom;
replies 1/0), delete->DEL, incr->INCR. `time` is `time.monotonic_ns()` (virtual inside a
simulation). Unexpected exceptions are recorded as info and re-raised.

Rules: one `Recorder` is one client slot and runs one op at a time (a second concurrent call
is a caller bug: RuntimeError). The redis client must not retry (redis-py retries by default,
and a retried APPEND applies twice, which no history can explain): build it with
`retry=Retry(NoBackoff(), 0)` (see `no_retry()`), else ValueError.
Bound: a `HistoryLog` holds at most `max_events` events (RuntimeError past it).
Inside a simulation each event is also a trace event `op` (type, process, f, key, value and
error cut to MAX_TRACED_VALUE_CHARS), through detsim.seam, for the replay's timeline.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Final, TextIO

import redis.asyncio
import redis.exceptions
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from detsim import seam
from detsim.check.history import CAS_MISMATCH, Event, Value, write_history

MAX_LOG_EVENTS: Final = 10_000_000
MAX_TRACED_VALUE_CHARS: Final = 40  # of an op's value or error in its trace event
#: The exceptions after which a call's outcome is unknown (recorded as info). The one list: any
#: other client that classifies outcomes (the scenarios' pipelined workload) imports it.
UNKNOWN_OUTCOME: Final = (
    redis.exceptions.TimeoutError,
    redis.exceptions.ConnectionError,
    ConnectionError,
    TimeoutError,
    OSError,
    EOFError,
)


def no_retry() -> Retry:
    """The retry policy the recorder needs: none."""
    return Retry(NoBackoff(), 0)


def _monotonic_ns() -> int:
    return time.monotonic_ns()


class HistoryLog:
    """Events in real-time order, with dense indices and fresh process ids."""

    def __init__(
        self, clock: Callable[[], int] | None = None, max_events: int = MAX_LOG_EVENTS
    ) -> None:
        self.events: list[Event] = []
        # Looked up at each call, not bound here: inside a simulation `time.monotonic_ns` is
        # the virtual clock only while the simulation runs.
        self._clock = clock if clock is not None else _monotonic_ns
        self._max_events = max_events
        self._next_process = 0

    def new_process(self) -> int:
        process = self._next_process
        self._next_process += 1
        return process

    def record(
        self, etype: str, process: int, f: str, key: str | None, value: Value, error: str | None
    ) -> Event:
        if len(self.events) >= self._max_events:
            raise RuntimeError(f"history log full ({self._max_events} events)")
        event = Event(len(self.events), self._clock(), process, etype, f, key, value, error)
        self.events.append(event)
        # For timelines (nothing outside a simulation); values cut short: they may be big.
        seam.event(
            "op",
            type=etype,
            process=process,
            f=f,
            key=key,
            value=repr(value)[:MAX_TRACED_VALUE_CHARS],
            error=None if error is None else error[:MAX_TRACED_VALUE_CHARS],
        )
        return event

    def write(self, dest: str | Path | TextIO) -> int:
        return write_history(self.events, dest)


def _text(reply: object) -> Value:
    if isinstance(reply, bytes):
        return reply.decode("utf-8", errors="backslashreplace")
    return reply


class Recorder:
    """One client slot: `await rec.get("x")` runs GET and returns the completion event."""

    def __init__(self, client: redis.asyncio.Redis, log: HistoryLog) -> None:
        retry = client.get_retry()
        if retry is not None and retry.get_retries() > 0:
            raise ValueError(
                "the recorder needs a redis client that never retries "
                "(redis.asyncio.Redis(..., retry=detsim.check.recorder.no_retry()))"
            )
        self.client = client
        self.log = log
        self.process = log.new_process()
        self._busy = False

    async def get(self, key: str) -> Event:
        return await self._call("get", key, None, lambda: self.client.get(key), _text)

    async def put(self, key: str, value: str | int) -> Event:
        return await self._call("put", key, value, lambda: self.client.set(key, value), _none)

    async def append(self, key: str, value: str) -> Event:
        return await self._call("append", key, value, lambda: self.client.append(key, value), _int)

    async def delete(self, key: str) -> Event:
        return await self._call("delete", key, None, lambda: self.client.delete(key), _int)

    async def incr(self, key: str) -> Event:
        # Not client.incr: redis-py sends INCRBY for it.
        return await self._call("incr", key, None, lambda: self._command("INCR", key), _int)

    async def cas(self, key: str, expected: str | int, new: str | int) -> Event:
        def send() -> Awaitable[object]:
            return self._command("CAS", key, expected, new)

        return await self._call("cas", key, [expected, new], send, _none, cas=True)

    def _command(self, *args: str | int) -> Awaitable[object]:
        command = self.client.execute_command  # redis-py leaves it untyped
        return command(*args)  # type: ignore[no-untyped-call]

    async def _call(
        self,
        f: str,
        key: str,
        value: Value,
        send: Callable[[], Awaitable[object]],
        output: Callable[[object], Value],
        cas: bool = False,
    ) -> Event:
        if self._busy:
            raise RuntimeError("a Recorder runs one op at a time; use one Recorder per client")
        self._busy = True
        process = self.process
        self.log.record("invoke", process, f, key, value, None)
        try:
            reply = await send()
        except redis.exceptions.ResponseError as exc:
            return self._error_reply(process, f, key, str(exc))
        except UNKNOWN_OUTCOME as exc:
            return self._unknown(process, f, key, f"{type(exc).__name__}: {exc}")
        except BaseException as exc:  # cancelled or a bug: the op may have been sent
            self._unknown(process, f, key, f"{type(exc).__name__}: {exc}")
            raise
        finally:
            self._busy = False
        if cas and reply in (0, b"0", "0"):
            return self.log.record("fail", process, f, key, None, CAS_MISMATCH)
        return self.log.record("ok", process, f, key, output(reply), None)

    def _error_reply(self, process: int, f: str, key: str, message: str) -> Event:
        if message.startswith("TIMEOUT"):
            return self._unknown(process, f, key, message)
        return self.log.record("fail", process, f, key, None, message)

    def _unknown(self, process: int, f: str, key: str, message: str) -> Event:
        event = self.log.record("info", process, f, key, None, message)
        self.process = self.log.new_process()
        return event


def _none(reply: object) -> Value:
    return None


def _int(reply: object) -> Value:
    return reply if isinstance(reply, int) else _text(reply)


__all__ = ["HistoryLog", "Recorder", "no_retry"]
