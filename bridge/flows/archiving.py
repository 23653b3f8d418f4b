"""Copies chats and task orders into the archive as they change, and removes their Redis state once
they are finished, archived and past ``keys.FINISHED_KEEP_SECONDS``: Redis holds live work only.

A change schedules the object's ``archive`` timer for the next whole second at least
ARCHIVE_DELAY_SECONDS away, keeping an earlier time already set, so a burst of changes makes one
copy, and the copies of every change within a second fall due together: they are claimed in one
call, read in one, written in one transaction and acknowledged in one call. The timer engine gives
the copy its durability: a process that dies while copying leaves the timer to another, and a copy
is an upsert by ids, so running it twice writes nothing twice. An archive that is down delays
copies (retried, counted in /metrics) and never holds up live work, which does not wait for them."""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import orjson
from redis.asyncio import Redis
from redis.backoff import ExponentialBackoff
from sqlalchemy.exc import SQLAlchemyError

from bridge.archive.store import Archive, Snapshot
from bridge.engine import keys
from bridge.engine.clock import Clock
from bridge.engine.metrics import METRICS
from bridge.engine.timers import Schedule, Timer, TimerStore

log = logging.getLogger(__name__)

ARCHIVE_DELAY_SECONDS = 0.5
"""The least time between a change and its copy, so that the writes of one step land together."""

ARCHIVE_TICK_SECONDS = 1.0
"""Copies fall due on whole multiples of this (0.5–1.5 s after their change: lists and statistics
lag live work by about a second), so that those of one second are made together."""

ARCHIVE_RETRY_SECONDS = 30.0
"""How soon a copy the archive refused is first tried again; each further failure doubles the wait,
up to ARCHIVE_RETRY_MAX_SECONDS. It is tried until it lands."""

ARCHIVE_RETRY_MAX_SECONDS = 300.0
_ARCHIVE_BACKOFF = ExponentialBackoff(cap=ARCHIVE_RETRY_MAX_SECONDS, base=ARCHIVE_RETRY_SECONDS)

COPIES_IN_FLIGHT = 16
"""Copies one process makes at once: the limit of the timers' ``archive`` lane. Copies beyond it
wait due in Redis, untouched, until one ends; copies held up by a busy archive (another process's
write lock, a slow PostgreSQL) never take the timer worker's slots from the reply sends, reminders
and window closes."""

FORGET_AFTER_ARCHIVE_SECONDS = 60.0
"""How soon a finished object whose last change is not archived yet is looked at again."""

Read = tuple[Literal["hgetall", "lrange"], str]
"""One read of an object's state: a hash (HGETALL) or a whole list (LRANGE 0 -1), by its key."""


@dataclass(frozen=True)
class Snapshots:
    """How one kind of object becomes archive rows: what to read of it, ``(tag, id) → reads``, and
    the rows made of what they found, ``(tag, id, found) → rows`` (None when its state is gone)."""

    reads: Callable[[str, str], list[Read]]
    rows: Callable[[str, str, list[Any]], Snapshot | None]

    async def of(self, redis: Redis, tag: str, object_id: str) -> Snapshot | None:
        """One object's rows, read now."""
        return self.rows(tag, object_id, found(await read_all(redis, self.reads(tag, object_id))))


async def read_all(redis: Redis, reads: Sequence[Read]) -> list[Any]:
    """What each read found, in one round trip; a read that failed (a key of another type) gives
    its error in its place, so that it fails only the object it belongs to."""
    async with redis.pipeline(transaction=False) as pipe:
        for command, key in reads:
            if command == "hgetall":
                pipe.hgetall(key)
            else:
                pipe.lrange(key, 0, -1)
        return list(await pipe.execute(raise_on_error=False))


def found(results: list[Any]) -> list[Any]:
    """An object's results from ``read_all``, or the error of the first of its reads that failed."""
    for result in results:
        if isinstance(result, Exception):
            raise result
    return results


Forgetter = Callable[[str, str], Awaitable[None]]
"""(tag, id) → removes the object's state from Redis."""


async def archive_soon(timers: TimerStore, now: float, tag: str, thread: str) -> None:
    """``thread`` (``chat:<id>``, ``task:<id>``) changed: copy it into the archive shortly."""
    key, due_at, keep_earlier = archive_schedule(now, tag, thread)
    await timers.schedule(key, due_at, keep_earlier=keep_earlier)


def archive_schedule(now: float, tag: str, thread: str) -> Schedule:
    """``archive_soon`` as a schedule, for a step that sets it together with other timers."""
    due_at = math.ceil((now + ARCHIVE_DELAY_SECONDS) / ARCHIVE_TICK_SECONDS) * ARCHIVE_TICK_SECONDS
    return keys.archive_timer(tag, thread), due_at, True


async def record(redis: Redis, key: str, field: str, entry: Mapping[str, Any]) -> None:
    """Keeps one item of an object (a message, a comment) for the archive, once by its id: a step run
    again keeps what its first run kept."""
    await redis.hsetnx(key, field, orjson.dumps(entry).decode())


def decode_recorded(kept: Mapping[Any, Any]) -> dict[str, Any]:
    """The items ``record`` kept, as read from their hash."""
    return {str(field): orjson.loads(raw) for field, raw in kept.items()}


class Archiving:
    def __init__(
        self,
        timers: TimerStore,
        clock: Clock,
        archive: Archive,
        snapshots: dict[str, Snapshots],
        forgetters: dict[str, Forgetter],
    ) -> None:
        self.timers = timers
        self.clock = clock
        self.archive = archive
        self.snapshots = snapshots
        self.forgetters = forgetters
        self._reads: list[tuple[list[Read], asyncio.Future[list[Any]]]] = []
        self._reader: asyncio.Task[None] | None = None

    async def on_archive_timer(self, timer: Timer) -> None:
        _, tag, thread = keys.split_timer_key(timer.key)
        kind, _, object_id = thread.partition(":")
        how = self.snapshots[kind]
        snapshot = how.rows(tag, object_id, found(await self._read(how.reads(tag, object_id))))
        if snapshot is None:
            return  # removed meanwhile: what it was is archived already
        try:
            await self.archive.put([snapshot])
        except (SQLAlchemyError, OSError) as error:
            # Not the timer's own retry: that gives up after a few attempts, and this must not. The
            # payload counts failures in a row (a new change, rescheduling it, starts again at one).
            failures = int(timer.payload or 0) + 1
            # redis-py's doubling stops at the cap; computed in full, 2 ** 1,024 is past a float, and
            # after some three and a half days of refusals the copy failed for good.
            wait = _ARCHIVE_BACKOFF.compute(failures - 1)
            METRICS.archive_failures.labels(kind).inc()
            log.warning("archive: copy of %s failed (%s); again in %.0f s", thread, type(error).__name__, wait)
            await self.timers.schedule(timer.key, self.clock.now() + wait, str(failures), keep_earlier=True)
            return
        METRICS.archived.labels(kind).inc()

    async def _read(self, reads: list[Read]) -> list[Any]:
        """What ``reads`` found, read in one round trip with those of every copy begun meanwhile: the
        copies of one whole second are claimed, and so read, together."""
        results: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        self._reads.append((reads, results))
        if self._reader is None or self._reader.done():
            self._reader = asyncio.create_task(self._read_waiting())
        return await results

    async def _read_waiting(self) -> None:
        await asyncio.sleep(0)  # the copies started in this turn of the loop join the first read
        while self._reads:
            batch, self._reads = self._reads, []
            try:
                results = await read_all(self.timers.redis, [read for reads, _ in batch for read in reads])
            except Exception as error:  # Redis unavailable: each copy fails with it, and its timer runs again
                for _, waiting in batch:
                    if not waiting.done():  # a copy cancelled meanwhile (shutdown) is not waiting
                        waiting.set_exception(error)
                continue
            at = 0
            for reads, waiting in batch:
                if not waiting.done():
                    waiting.set_result(results[at : at + len(reads)])
                at += len(reads)

    async def forget(self, tag: str, thread: str) -> bool:
        """Removes a finished object's Redis state, unless a change of it is still to be archived
        (then False: the caller looks again later)."""
        kind, _, object_id = thread.partition(":")
        if kind not in self.forgetters or keys.store_of(tag) is None:
            return True  # a creator's side of a task order: its state lives under the store
        if await self.timers.is_pending(keys.archive_timer(tag, thread)):
            return False  # a copy is due or being made: removing the state now could lose it
        await self.forgetters[kind](tag, object_id)
        return True
