"""Durable intake of inbound events (PRODUCT C2): deduplicated, all-or-nothing per push, group-committed.

A push is stored by one Lua call: each record's ``msg_id`` is marked seen (7 days) and, if it was
not seen before, the record is appended to the endpoint's stream with the next sequence number of
its thread; on one server the same call lists the stream as ready for the consumers' next read
(``keys.EVENTS_READY``) and wakes one that waits. The webhook answers success only after that call
returns.

Concurrent pushes share round trips: whatever arrives while a write is in flight goes out together
in the next pipeline (a group commit), so the ingest rate is not one round trip per push.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import orjson
from redis.asyncio import Redis
from redis.exceptions import NoScriptError, RedisError

from bridge.engine import keys
from bridge.engine.clock import Clock, SystemClock
from bridge.engine.cluster import is_cluster
from bridge.engine.endpoint import Endpoint

log = logging.getLogger(__name__)


def list_ready_lua(stream: str, ready: str, wake: str, kept: str) -> str:
    """Lua, one server only: lists ``stream`` as ready for the consumers' next read and wakes one
    that waits (keys.EVENTS_READY, keys.EVENTS_READY_WAKE, the newest ``kept`` wake-ups kept)."""
    return f"""redis.call('SADD', {ready}, {stream})
if redis.call('RPUSH', {wake}, {stream}) > tonumber({kept}) then redis.call('LTRIM', {wake}, -{kept}, -1) end
"""


# One call stores a whole batch of pushes to one endpoint (each push still all or nothing: a
# script runs atomically). KEYS: stream, thread-seq hash, seen zset, and on one server the ready set
# and its wake list (keys.EVENTS_READY). ARGV: now (ms), oldest msg_id time to remember (ms), the
# batch as JSON: [[[msg_id, tag, thread, data(, received_at ms)], ...], ...], a list of records per
# push, received now unless a record says when (one held through an outage, engine/held.py) (one argument
# keeps the client's encoding cost flat), and the wake list's length kept. Returns, per push, how
# many of its records were new.
_STORE_PUSHES = (
    """
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', '(' .. ARGV[2])
local out, any = {}, false
for _, push in ipairs(cjson.decode(ARGV[3])) do
  local stored = 0
  for _, r in ipairs(push) do
    if redis.call('ZADD', KEYS[3], 'NX', ARGV[1], r[1]) == 1 then
      local seq = redis.call('HINCRBY', KEYS[2], r[3], 1)
      redis.call('XADD', KEYS[1], '*', 'msg_id', r[1], 'tag', r[2], 'thread', r[3], 'seq', seq,
                 'data', r[4], 'received_at', r[5] or ARGV[1])
      stored = stored + 1
      any = true
    end
  end
  out[#out + 1] = stored
end
if any and #KEYS > 3 then
"""
    + list_ready_lua("KEYS[1]", "KEYS[4]", "KEYS[5]", "ARGV[4]")
    + """end
return out
"""
)


class StorageUnavailable(ConnectionError):
    """Redis did not take the write (down, slow, or no free connection): answer 503, nothing stored."""


@dataclass(frozen=True)
class IncomingRecord:
    tag: str
    msg_id: str
    thread: str
    """Events of one thread (a chat, a task order) are handled in the order they arrived."""
    data: str
    """JSON, stored exactly as received."""


@dataclass
class _Pending:
    endpoint: Endpoint
    records: Sequence[IncomingRecord]
    received_ms: int | None
    """When the bridge acknowledged it, if not now: a delivery held on disk while Redis was down."""
    done: asyncio.Future[int] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


class EventLog:
    """Stores pushes. ``store`` returns how many records were new (the rest were redeliveries)."""

    def __init__(self, redis: Redis, clock: Clock | None = None, timeout_seconds: float = 2.0) -> None:
        self.redis = redis
        self.clock: Clock = clock or SystemClock()
        self.timeout_seconds = timeout_seconds
        self._script = redis.register_script(_STORE_PUSHES)
        self.cluster = is_cluster(redis)
        self._queue: list[_Pending] = []
        self._flusher: asyncio.Task[None] | None = None
        self.round_trips = 0
        self.pushes_written = 0
        self.records_stored = 0

    async def store(self, endpoint: Endpoint, records: Sequence[IncomingRecord], received_ms: int | None = None) -> int:
        """``received_ms``: when it was acknowledged, when that was before now (held through an
        outage, engine/held.py); its handling goes by it (a reply inside its window)."""
        if not records:
            return 0
        pending = _Pending(endpoint, records, received_ms)
        self._queue.append(pending)
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush_all())
        return await pending.done  # the flusher bounds the wait: one timer per batch, not per push

    async def _flush_all(self) -> None:
        await asyncio.sleep(0)  # let the pushes parsed in this loop iteration join the batch
        while self._queue:
            batch, self._queue = self._queue, []
            by_endpoint: dict[Endpoint, list[_Pending]] = {}
            for p in batch:
                by_endpoint.setdefault(p.endpoint, []).append(p)
            groups = list(by_endpoint.values())
            try:
                async with asyncio.timeout(self.timeout_seconds):
                    results = await self._write(groups)
            except (RedisError, OSError, TimeoutError) as exc:
                reason = "Redis did not answer in time" if isinstance(exc, TimeoutError) else str(exc)
                for p in batch:
                    if not p.done.done():
                        p.done.set_exception(StorageUnavailable(reason or type(exc).__name__))
                continue
            for group, result in zip(groups, results, strict=True):
                for i, p in enumerate(group):
                    if p.done.done():
                        continue
                    if isinstance(result, Exception):
                        p.done.set_exception(StorageUnavailable(str(result) or type(result).__name__))
                    else:
                        stored = int(result[i])  # type: ignore[index]
                        self.records_stored += stored
                        p.done.set_result(stored)

    def _command(self, group: list[_Pending]) -> list[str | int]:
        tag = group[0].endpoint.tag
        now_ms = int(self.clock.now() * 1000)
        batch = orjson.dumps([[(r.msg_id, r.tag, r.thread, r.data) for r in p.records] if p.received_ms is None
                              else [(r.msg_id, r.tag, r.thread, r.data, p.received_ms) for r in p.records]
                              for p in group]).decode()  # fmt: skip
        ready = [] if self.cluster else [keys.EVENTS_READY, keys.EVENTS_READY_WAKE]  # another slot there
        return [
            self._script.sha, 3 + len(ready), keys.events(tag), keys.thread_seq(tag), keys.seen(tag), *ready,
            now_ms, now_ms - keys.SEEN_SECONDS * 1000, batch, keys.READY_WAKE_KEPT,
        ]  # fmt: skip

    async def _write(self, groups: list[list[_Pending]]) -> list[object]:
        """One round trip for the whole batch: a pipeline with one script call per endpoint."""
        for attempt in range(2):
            if self.cluster:  # scripts cannot be pipelined there; one call per endpoint, at once
                calls = [self.redis.evalsha(*self._command(group)) for group in groups]  # type: ignore[arg-type]
                results: list[object] = list(await asyncio.gather(*calls, return_exceptions=True))
            else:
                async with self.redis.pipeline(transaction=False) as pipe:
                    for group in groups:
                        pipe.evalsha(*self._command(group))  # type: ignore[arg-type]
                    results = await pipe.execute(raise_on_error=False)
            self.round_trips += 1
            if attempt == 0 and any(isinstance(r, NoScriptError) for r in results):
                # Redis restarted (or failed over) and forgot the script; nothing of it ran.
                await self.redis.script_load(_STORE_PUSHES)
                continue
            self.pushes_written += sum(len(g) for g in groups)
            if self.cluster:
                await self.redis.publish(keys.EVENTS_WAKE_CHANNEL, "1")
            return results
        return results
