"""Durable intake of inbound events (PRODUCT C2): deduplicated, all-or-nothing per push, group-committed.

A push is stored by one Lua call: each record's ``msg_id`` is marked seen (7 days) and, if it was
not seen before, the record is appended to the endpoint's stream with the next sequence number of
its thread. The webhook answers success only after that call returns.

Concurrent pushes share round trips: whatever arrives while a write is in flight goes out together
in the next pipeline (a group commit), so the ingest rate is not one round trip per push.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from redis.asyncio import Redis
from redis.exceptions import NoScriptError, RedisError

from bridge import keys
from bridge.clock import Clock, SystemClock
from bridge.domain import Endpoint

log = logging.getLogger(__name__)

# KEYS: stream, thread-seq hash, then one seen-key per record.
# ARGV: seen TTL, received_at (ms), then (msg_id, tag, thread, data) per record.
_STORE_PUSH = """
local stored = 0
for i = 3, #KEYS do
  local j = (i - 3) * 4 + 3
  if redis.call('SET', KEYS[i], '1', 'NX', 'EX', ARGV[1]) then
    local seq = redis.call('HINCRBY', KEYS[2], ARGV[j + 2], 1)
    redis.call('XADD', KEYS[1], '*', 'msg_id', ARGV[j], 'tag', ARGV[j + 1], 'thread', ARGV[j + 2],
               'seq', seq, 'data', ARGV[j + 3], 'received_at', ARGV[2])
    stored = stored + 1
  end
end
return stored
"""


class StorageUnavailable(RuntimeError):
    pass


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
    keys: list[str]
    args: list[str | int]
    done: asyncio.Future[int] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


class EventLog:
    """Stores pushes. ``store`` returns how many records were new (the rest were redeliveries)."""

    def __init__(self, redis: Redis, clock: Clock | None = None, timeout_seconds: float = 2.0) -> None:
        self.redis = redis
        self.clock: Clock = clock or SystemClock()
        self.timeout_seconds = timeout_seconds
        self._script = redis.register_script(_STORE_PUSH)
        self._queue: list[_Pending] = []
        self._flusher: asyncio.Task[None] | None = None
        self.round_trips = 0
        self.pushes_written = 0

    async def store(self, endpoint: Endpoint, records: Sequence[IncomingRecord]) -> int:
        if not records:
            return 0
        tag = endpoint.tag
        pending = _Pending(
            keys=[keys.events(tag), keys.thread_seq(tag), *(keys.seen(tag, r.msg_id) for r in records)],
            args=[keys.SEEN_TTL_SECONDS, int(self.clock.now() * 1000)],
        )
        for r in records:
            pending.args += [r.msg_id, r.tag, r.thread, r.data]
        self._queue.append(pending)
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush_all())
        try:
            return await asyncio.wait_for(asyncio.shield(pending.done), timeout=self.timeout_seconds)
        except TimeoutError:
            raise StorageUnavailable("Redis did not answer in time") from None

    async def _flush_all(self) -> None:
        await asyncio.sleep(0)  # let the pushes parsed in this loop iteration join the batch
        while self._queue:
            batch, self._queue = self._queue, []
            try:
                results = await self._write(batch)
            except (RedisError, OSError) as exc:
                for p in batch:
                    if not p.done.done():
                        p.done.set_exception(StorageUnavailable(str(exc) or type(exc).__name__))
                continue
            for p, result in zip(batch, results, strict=True):
                if p.done.done():
                    continue
                if isinstance(result, Exception):
                    p.done.set_exception(StorageUnavailable(str(result)))
                else:
                    p.done.set_result(int(str(result)))

    async def _write(self, batch: list[_Pending]) -> list[object]:
        for attempt in range(2):
            async with self.redis.pipeline(transaction=False) as pipe:
                for p in batch:
                    pipe.evalsha(self._script.sha, len(p.keys), *p.keys, *p.args)
                results: list[object] = await pipe.execute(raise_on_error=False)
            self.round_trips += 1
            if attempt == 0 and any(isinstance(r, NoScriptError) for r in results):
                # Redis restarted (or failed over) and forgot the script; nothing of it ran.
                await self.redis.script_load(_STORE_PUSH)
                continue
            self.pushes_written += len(batch)
            return results
        return results
