"""Handling stored events: shared by every bridge process, in order per thread, once in effect.

Each endpoint's stream is read through one consumer group, so processes share the work. Ordering
within a thread (one chat, one task order) comes from the sequence number given at intake: an event
runs only when its thread's last handled number is its own minus one, under a short per-thread lock.
So a later event never overtakes an earlier one held by a slower or dead process; it waits, and the
dead process's events are claimed by another after ``claim_idle_seconds`` (XAUTOCLAIM). An event
already handled (a redelivery after a crash between effect and acknowledgement) is only acknowledged;
handlers make their effects idempotent for the crash inside the handler itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError

from bridge import keys
from bridge.clock import Clock, SystemClock
from bridge.domain import Endpoint

log = logging.getLogger(__name__)

# KEYS: done hash, lock.  ARGV: thread, seq, lock ttl (ms), owner.
_BEGIN = """
local done = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
local seq = tonumber(ARGV[2])
if done >= seq then return 'done' end
if done ~= seq - 1 then return 'wait' end
if not redis.call('SET', KEYS[2], ARGV[4], 'NX', 'PX', ARGV[3]) then return 'wait' end
return 'ready'
"""

# KEYS: done hash, lock, stream.  ARGV: thread, seq, group, entry id, owner.
_COMPLETE = """
local done = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
if tonumber(ARGV[2]) > done then redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) end
if redis.call('GET', KEYS[2]) == ARGV[5] then redis.call('DEL', KEYS[2]) end
redis.call('XACK', KEYS[3], ARGV[3], ARGV[4])
redis.call('XDEL', KEYS[3], ARGV[4])
return 1
"""

# KEYS: lock.  ARGV: owner.
_UNLOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


@dataclass(frozen=True)
class StoredEvent:
    endpoint: Endpoint
    entry_id: str
    msg_id: str
    tag: str
    thread: str
    seq: int
    data: dict[str, Any]
    received_at: float


EventHandler = Callable[[StoredEvent], Awaitable[None]]


@dataclass
class ConsumerStats:
    handled: int = 0
    ignored: int = 0
    duplicates: int = 0
    failed_attempts: int = 0
    dead: int = 0
    claimed: int = 0


@dataclass
class _Parked:
    event: StoredEvent
    retry_at: float
    attempts: int = 0


def consumer_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


@dataclass
class EventConsumer:
    redis: Redis
    endpoints: Callable[[], list[Endpoint]]
    handlers: Mapping[str, EventHandler]
    clock: Clock = field(default_factory=SystemClock)
    name: str = field(default_factory=consumer_name)
    batch: int = 100
    block_seconds: float = 1.0
    claim_idle_seconds: float = 30.0
    lock_seconds: float = 30.0
    """How long a thread stays locked by a consumer that went silent; longer than any handler runs."""
    retry_base_seconds: float = 0.5
    max_attempts: int = 8
    stats: ConsumerStats = field(default_factory=ConsumerStats)

    def __post_init__(self) -> None:
        self._begin = self.redis.register_script(_BEGIN)
        self._complete = self.redis.register_script(_COMPLETE)
        self._unlock = self.redis.register_script(_UNLOCK)
        self._groups: set[str] = set()
        self._parked: list[_Parked] = []
        self._stopping = False
        self._last_claim = 0.0

    # -- serving -------------------------------------------------------------------------------

    async def run(self) -> None:
        while not self._stopping:
            try:
                await self._step(block=True)
            except (RedisError, OSError) as exc:
                log.warning("event consumer: Redis error, retrying in 1 s: %s", exc)
                await asyncio.sleep(1.0)

    def stop(self) -> None:
        """Stops after the current step; unfinished events stay pending for another process."""
        self._stopping = True

    async def drain(self, claim: bool = True) -> int:
        """Burst mode: handle everything available now (and, with ``claim``, what dead consumers
        left idle past claim_idle_seconds), waiting out parked events. Returns events handled."""
        before = self.stats.handled + self.stats.ignored
        for _ in range(1000):
            got = await self._step(block=False, force_claim=claim)
            if not got and not self._parked:
                break
            if not got:
                await asyncio.sleep(max(0.0, min(p.retry_at for p in self._parked) - self.clock.now()))
        return self.stats.handled + self.stats.ignored - before

    # -- one step ------------------------------------------------------------------------------

    async def _step(self, *, block: bool, force_claim: bool = False) -> int:
        endpoints = {keys.events(e.tag): e for e in self.endpoints()}
        await self._ensure_groups(endpoints)
        events: list[StoredEvent] = []
        now = self.clock.now()
        due = [p for p in self._parked if p.retry_at <= now]
        self._parked = [p for p in self._parked if p.retry_at > now]
        events += [p.event for p in due]
        attempts = {p.event.entry_id: p.attempts for p in due}
        if force_claim or now - self._last_claim >= self.claim_idle_seconds / 2:
            self._last_claim = now
            events += await self._claim_abandoned(endpoints)
        if endpoints:
            block_ms: int | None = None
            if block and not events:
                wait = self.block_seconds
                if self._parked:
                    wait = min(wait, max(0.001, min(p.retry_at for p in self._parked) - now))
                block_ms = max(1, int(wait * 1000))
            reply: Any = await self.redis.xreadgroup(
                keys.EVENTS_GROUP, self.name, dict.fromkeys(endpoints, ">"), count=self.batch, block=block_ms
            )
            for stream, entries in reply or []:
                events += [self._decode(endpoints[stream], entry_id, fields) for entry_id, fields in entries]
        if events:
            await self._handle_batch(events, attempts)
        return len(events)

    async def _ensure_groups(self, streams: Mapping[str, Endpoint]) -> None:
        for stream in streams:
            if stream in self._groups:
                continue
            try:
                await self.redis.xgroup_create(stream, keys.EVENTS_GROUP, id="0", mkstream=True)
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise
            self._groups.add(stream)

    async def _claim_abandoned(self, streams: Mapping[str, Endpoint]) -> list[StoredEvent]:
        claimed: list[StoredEvent] = []
        min_idle = int(self.claim_idle_seconds * 1000)
        for stream, endpoint in streams.items():
            start = "0-0"
            while True:
                reply = await self.redis.xautoclaim(
                    stream, keys.EVENTS_GROUP, self.name, min_idle, start_id=start, count=self.batch
                )
                start, entries = reply[0], reply[1]
                mine = {p.event.entry_id for p in self._parked}
                for entry_id, fields in entries:
                    if fields and entry_id not in mine:
                        claimed.append(self._decode(endpoint, entry_id, fields))
                if start == "0-0":
                    break
        if claimed:
            self.stats.claimed += len(claimed)
            log.info("event consumer %s: claimed %d events left by another process", self.name, len(claimed))
        return claimed

    @staticmethod
    def _decode(endpoint: Endpoint, entry_id: str, fields: Mapping[str, str]) -> StoredEvent:
        try:
            data = json.loads(fields.get("data", "{}"))
        except json.JSONDecodeError:
            data = {}
        return StoredEvent(
            endpoint=endpoint,
            entry_id=entry_id,
            msg_id=fields.get("msg_id", ""),
            tag=fields.get("tag", ""),
            thread=fields.get("thread", ""),
            seq=int(fields.get("seq", "0")),
            data=data if isinstance(data, dict) else {},
            received_at=int(fields.get("received_at", "0")) / 1000,
        )

    async def _handle_batch(self, events: list[StoredEvent], attempts: Mapping[str, int]) -> None:
        threads: dict[tuple[str, str], list[StoredEvent]] = defaultdict(list)
        for event in events:
            threads[(event.endpoint.tag, event.thread)].append(event)
        await asyncio.gather(
            *(self._handle_thread(sorted(evs, key=lambda e: e.seq), attempts) for evs in threads.values())
        )

    async def _handle_thread(self, events: list[StoredEvent], attempts: Mapping[str, int]) -> None:
        for index, event in enumerate(events):
            outcome = await self._handle_one(event, attempts.get(event.entry_id, 0))
            if outcome is not None:
                # This one must wait (or retry); the later ones of its thread wait behind it.
                now = self.clock.now()
                self._parked.append(_Parked(event, now + outcome[0], outcome[1]))
                self._parked += [_Parked(e, now + outcome[0], attempts.get(e.entry_id, 0)) for e in events[index + 1 :]]
                return

    async def _handle_one(self, event: StoredEvent, attempts: int) -> tuple[float, int] | None:
        """None when the event is finished with; else (retry in seconds, attempts so far)."""
        tag = event.endpoint.tag
        done_key, lock_key = keys.thread_done(tag), keys.thread_lock(tag, event.thread)
        owner = f"{self.name}:{event.entry_id}"
        state = await self._begin(
            keys=[done_key, lock_key], args=[event.thread, event.seq, int(self.lock_seconds * 1000), owner]
        )
        if state == "done":
            self.stats.duplicates += 1
            await self._finish(event, owner)
            return None
        if state == "wait":
            return (0.05, attempts)
        handler = self.handlers.get(event.tag)
        if handler is None:
            log.info(
                "%s: stored event %s with tag %r has no handler; acknowledged", event.endpoint, event.msg_id, event.tag
            )
            self.stats.ignored += 1
            await self._finish(event, owner)
            return None
        try:
            await handler(event)
        except Exception as exc:
            attempts += 1
            self.stats.failed_attempts += 1
            if attempts >= self.max_attempts:
                log.exception(
                    "%s: event %s failed %d times; moved to the dead list", event.endpoint, event.msg_id, attempts
                )
                await self.redis.rpush(
                    keys.events_dead(tag),
                    json.dumps({"msg_id": event.msg_id, "tag": event.tag, "data": event.data, "error": repr(exc)}),
                )
                self.stats.dead += 1
                await self._finish(event, owner)
                return None
            log.warning("%s: event %s failed (attempt %d), retrying: %r", event.endpoint, event.msg_id, attempts, exc)
            with contextlib.suppress(RedisError, OSError):
                await self._unlock(keys=[lock_key], args=[owner])
            return (self.retry_base_seconds * 2 ** (attempts - 1), attempts)
        self.stats.handled += 1
        await self._finish(event, owner)
        return None

    async def _finish(self, event: StoredEvent, owner: str) -> None:
        tag = event.endpoint.tag
        await self._complete(
            keys=[keys.thread_done(tag), keys.thread_lock(tag, event.thread), keys.events(tag)],
            args=[event.thread, event.seq, keys.EVENTS_GROUP, event.entry_id, owner],
        )
