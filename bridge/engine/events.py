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
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import orjson
from redis.asyncio import Redis
from redis.exceptions import NoScriptError, RedisError, ResponseError

from bridge.engine import keys
from bridge.engine.clock import Clock, SystemClock
from bridge.engine.cluster import is_cluster
from bridge.engine.deadlist import DeadList
from bridge.engine.endpoint import Endpoint
from bridge.engine.ingest import list_ready_lua
from bridge.engine.logcontext import about, bound
from bridge.engine.metrics import METRICS
from bridge.engine.wakeups import listen_for_wakeups

log = logging.getLogger(__name__)

# One call for a round of events of one endpoint, one event per thread. The round travels as one
# JSON argument so the client's encoding cost does not grow with the number of arguments.
# KEYS: done hash, locks hash.  ARGV: now (ms), lock ttl (ms), JSON [[thread, seq, owner], ...].
# Returns per event: 'done' (already handled), 'wait' (its predecessor is not handled yet, or
# another consumer holds the thread) or 'ready' (locked for us).
_BEGIN = """
local now, out = tonumber(ARGV[1]), {}
for _, e in ipairs(cjson.decode(ARGV[3])) do
  local done = tonumber(redis.call('HGET', KEYS[1], e[1]) or '0')
  if done >= e[2] then out[#out + 1] = 'done'
  elseif done ~= e[2] - 1 then out[#out + 1] = 'wait'
  else
    local held = redis.call('HGET', KEYS[2], e[1])
    if held and tonumber(string.match(held, '|(%d+)$')) > now then out[#out + 1] = 'wait'
    else
      redis.call('HSET', KEYS[2], e[1], e[3] .. '|' .. (now + tonumber(ARGV[2])))
      out[#out + 1] = 'ready'
    end
  end
end
return out
"""

# KEYS: done hash, locks hash, stream.  ARGV: group, JSON [[thread, seq, entry id, owner], ...].
_COMPLETE = """
local events = cjson.decode(ARGV[2])
for _, e in ipairs(events) do
  local done = tonumber(redis.call('HGET', KEYS[1], e[1]) or '0')
  if e[2] > done then redis.call('HSET', KEYS[1], e[1], e[2]) end
  local held = redis.call('HGET', KEYS[2], e[1])
  if held and string.sub(held, 1, #e[4] + 1) == e[4] .. '|' then redis.call('HDEL', KEYS[2], e[1]) end
  redis.call('XACK', KEYS[3], ARGV[1], e[3])
  redis.call('XDEL', KEYS[3], e[3])
end
return #events
"""

# KEYS: seq hash, done hash.  ARGV: thread. Forgets a thread only when every stored event of it was
# handled; a later event of the same thread then simply starts again at 1.
_FORGET = """
if redis.call('HGET', KEYS[1], ARGV[1]) ~= redis.call('HGET', KEYS[2], ARGV[1]) then return 0 end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
return 1
"""

FORGET_RETRY_SECONDS = 24 * 3600

# KEYS: the ready set (keys.EVENTS_READY), then every endpoint's stream.  ARGV: group, consumer, min
# idle (ms), count, then each stream's start. XAUTOCLAIM only where the stream has entries: a handled
# event is deleted, so the stream of a store with nothing in flight is empty, and a bridge serving a
# thousand stores does not ask each of them every time it looks. A stream with entries is listed as
# ready too, so what no read took (stored before the ready set existed, or listed by a write whose
# stream a read then left with more than a batch while its consumer stopped) is read within seconds.
# Returns {stream's position (from 1), next start, entries}* for the streams that gave entries or
# have more to look through.
_CLAIM_ABANDONED = """
local out = {}
for i = 2, #KEYS do
  local stream = KEYS[i]
  if redis.call('XLEN', stream) > 0 then
    redis.call('SADD', KEYS[1], stream)
    local r = redis.call('XAUTOCLAIM', stream, ARGV[1], ARGV[2], ARGV[3], ARGV[3 + i], 'COUNT', ARGV[4])
    if #r[2] > 0 or r[1] ~= '0-0' then
      out[#out + 1] = i - 1
      out[#out + 1] = r[1]
      out[#out + 1] = r[2]
    end
  end
end
return out
"""

# One server: reads every stream listed as ready (keys.EVENTS_READY), and takes a stream off the
# list when the read took its last unread entry, in the same script, so a write after it lists it
# again and no entry is left unread and unlisted. A stream that no longer exists leaves the list; one
# without the group (a Redis that came back without it) stays, and is named in the answer. With
# nothing left listed, the wake-ups still queued are for what this read took: they are dropped, so
# they do not wake the other consumers for nothing.
# KEYS: the ready set, its wake list.  ARGV: group, consumer, count per stream.
# Returns {{stream, entries}*, {stream without the group}*}.
_READ_READY = """
local read, groupless = {}, {}
for _, stream in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local ok, reply = pcall(redis.call, 'XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', ARGV[3],
                          'STREAMS', stream, '>')
  if not ok then
    if redis.call('EXISTS', stream) == 0 then redis.call('SREM', KEYS[1], stream)
    else groupless[#groupless + 1] = stream end
  else
    local entries = reply and reply[1][2] or {}
    if #entries < tonumber(ARGV[3]) then redis.call('SREM', KEYS[1], stream) end
    if #entries > 0 then read[#read + 1] = {stream, entries} end
  end
end
if redis.call('SCARD', KEYS[1]) == 0 then redis.call('DEL', KEYS[2]) end
return {read, groupless}
"""

# KEYS: locks hash.  ARGV: thread, owner.
_UNLOCK = """
local held = redis.call('HGET', KEYS[1], ARGV[1])
if held and string.sub(held, 1, #ARGV[2] + 1) == ARGV[2] .. '|' then return redis.call('HDEL', KEYS[1], ARGV[1]) end
return 0
"""


# An operator's replay of a dead event: taken off the dead list and stored again as the newest event
# of its thread, at once, so a replay stopped anywhere and run again stores it once. It keeps when
# the bridge received it (what a person did is judged by that moment). On one server the stream is
# listed as ready and a waiting consumer woken, as intake does.
# KEYS: the dead list, its ids, the stream, the thread-seq hash[, the ready set, its wake list].
# ARGV: the entry as stored, msg id, tag, thread, data, received at (ms), wake-ups kept.
# Returns 1, or 0 when the entry is no longer on the list (replayed or dropped meanwhile).
_REVIVE = (
    """
if redis.call('LREM', KEYS[1], 1, ARGV[1]) == 0 then return 0 end
redis.call('HDEL', KEYS[2], ARGV[2])
local seq = redis.call('HINCRBY', KEYS[4], ARGV[4], 1)
redis.call('XADD', KEYS[3], '*', 'msg_id', ARGV[2], 'tag', ARGV[3], 'thread', ARGV[4], 'seq', seq,
           'data', ARGV[5], 'received_at', ARGV[6])
if #KEYS > 4 then
"""
    + list_ready_lua("KEYS[3]", "KEYS[5]", "KEYS[6]", "ARGV[7]")
    + "end\nreturn 1\n"
)


class DeadEvents:
    """Events whose handler failed every attempt (a bug, data it cannot take), kept per endpoint for
    an operator to list, replay once the cause is fixed, or drop (``bridge dead-events``)."""

    def __init__(self, redis: Redis, clock: Clock | None = None) -> None:
        self.redis = redis
        self.clock: Clock = clock or SystemClock()
        self.entries = DeadList(redis, keys.events_dead, keys.events_dead_ids, "msg_id")
        self._revive = redis.register_script(_REVIVE)
        self._one_redis = not is_cluster(redis)

    async def bury(self, event: StoredEvent, error: Exception, now: float) -> bool:
        """Puts ``event`` on its endpoint's dead list; False when it is there already (a process
        that gave up on it died before acknowledging it, and the event failed again)."""
        return await self.entries.put(event.endpoint.tag, {
            "msg_id": event.msg_id, "tag": event.tag, "thread": event.thread, "data": event.raw,
            "received_at": event.received_at, "at": now, "error": repr(error),
        })  # fmt: skip

    async def retry(self, tag: str, msg_id: str | None) -> int:
        """Stores dead events (one msg_id, or all with None) again, each as the newest event of its
        thread, in the order they died; returns how many."""
        ready = [keys.EVENTS_READY, keys.EVENTS_READY_WAKE] if self._one_redis else []
        revived = 0
        for raw, dead in await self.entries.matching(tag, msg_id):
            # An entry kept before its thread and arrival were (older releases) runs on a thread of
            # its own, as received now.
            thread, received_at = dead.get("thread") or dead["msg_id"], dead.get("received_at") or self.clock.now()
            revived += int(await self._revive(
                keys=[keys.events_dead(tag), keys.events_dead_ids(tag), keys.events(tag), keys.thread_seq(tag), *ready],
                args=[raw, dead["msg_id"], dead["tag"], thread, dead["data"], round(received_at * 1000),
                      keys.READY_WAKE_KEPT],
            ))  # fmt: skip
        if revived and not self._one_redis:
            await self.redis.publish(keys.EVENTS_WAKE_CHANNEL, "1")
        return revived


DELIVERED_AT: ContextVar[float | None] = ContextVar("delivered_at", default=None)
"""While a stored delivery is handled: when the bridge received it. What a person did is judged by
that moment, not by when the consumer got to it (a reply written in time stays in time, however
long a backlog or a dead process kept it waiting)."""


def delivered_at(clock: Clock) -> float:
    """When the bridge received the event being handled (``DELIVERED_AT``); now outside one."""
    return DELIVERED_AT.get() or clock.now()


class NotYetRecorded(Exception):
    """Raised by a handler whose event refers to something another step has yet to record (a reply
    under a message whose record a dead process left undone): the event is tried again after
    ``after`` seconds. Not a failure: it counts towards no attempt and is never dead-lettered."""

    def __init__(self, reason: str, after: float) -> None:
        super().__init__(reason)
        self.after = after


CLAIM_IDLE_SECONDS = 3.0
LOCK_SECONDS = 5.0
IN_FLIGHT_SECONDS = CLAIM_IDLE_SECONDS + LOCK_SECONDS
"""The longest a stored event can wait to be handled when the process that took it dies: until it
is claimed by another, and its thread's lock lapses."""


@dataclass(frozen=True, eq=False)  # identity: two deliveries of one entry are two objects
class StoredEvent:
    endpoint: Endpoint
    entry_id: str
    msg_id: str
    tag: str
    thread: str
    seq: int
    raw: str
    """The event's data as stored (JSON); ``data`` decodes it."""
    received_at: float

    @property
    def data(self) -> dict[str, Any]:
        try:
            decoded = json.loads(self.raw)
        except json.JSONDecodeError:
            return {}
        return decoded if isinstance(decoded, dict) else {}


EventHandler = Callable[[StoredEvent], Awaitable[None]]


@dataclass
class ConsumerStats:
    handled: int = 0
    ignored: int = 0
    duplicates: int = 0
    failed_attempts: int = 0
    dead: int = 0
    claimed: int = 0


ROUND_EVENTS = 20
"""Events with a handler begun together at most. In a burst the first to arrive are finished
first, and their posts go out while the later ones are handled, instead of every event of the
burst finishing late together (all of them sharing the CPU at once). Each round takes every
endpoint's oldest waiting event before any endpoint's second, so a store's burst does not hold up
another store's first chat; between rounds the consumer reads again, so a store whose events came
in after the read is in the next round, not behind the whole backlog."""


BURST_GATHER_SECONDS = 0.005
"""When the first read after a quiet spell takes events of more than one endpoint, a burst across
stores is arriving, and the read saw only its first few stores (it runs the moment the first write
wakes the consumer). The consumer waits this long and reads again before beginning a round, so the
round takes every store's first chat, the one a person waits to see, before any store's second,
instead of the first few stores' first and second chats while the others wait a whole round
(30–60 ms in a burst on this project's machine). A store's later chats lose nothing by it: its
destination's rate limit spaces their posts a second apart anyway. A lone event, or a steady
stream of them, is never held up."""


def _fields(flat: list[Any] | None) -> dict[str, str]:
    """A stream entry's fields as a script returns them (``[name, value, …]``; nothing for an entry
    deleted meanwhile) as a mapping."""
    return dict(zip(flat[0::2], flat[1::2], strict=True)) if flat else {}


def _arrival(event: StoredEvent) -> tuple[float, int, int]:
    """Arrival order across streams: when stored, then the entry id (``<ms>-<n>``) within a stream."""
    ms, _, n = event.entry_id.partition("-")
    return (event.received_at, int(ms) if ms.isdigit() else 0, int(n) if n.isdigit() else 0)


WAIT_SECONDS = 0.05
"""How soon an event whose predecessor another consumer is handling looks again."""


@dataclass
class _Parked:
    event: StoredEvent
    retry_at: float
    attempts: int = 0
    waiting: bool = False
    """Waiting for its predecessor (held by another consumer), not retrying a failure."""


def consumer_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


@dataclass
class EventConsumer:
    redis: Redis
    endpoints: Callable[[], list[Endpoint]]
    handlers: Mapping[str, EventHandler]
    clock: Clock = field(default_factory=SystemClock)
    name: str = field(default_factory=consumer_name)
    batch: int = 500
    block_seconds: float = 1.0
    claim_idle_seconds: float = CLAIM_IDLE_SECONDS
    """A dead process's events are taken over this long after it took them (a live one that is
    slower keeps its thread's lock, so nothing runs twice at once)."""
    lock_seconds: float = LOCK_SECONDS
    """How long a thread stays locked by a consumer that went silent; longer than any handler runs
    (handlers only talk to Redis and queue work; what reaches outside runs in the outbox)."""
    retry_base_seconds: float = 0.5
    max_retry_seconds: float = 30.0
    max_attempts: int = 8
    """Failures of a handler (a bug, bad data) before its event is dead-lettered; Redis being
    unavailable does not count."""
    burst_gather_seconds: float | None = BURST_GATHER_SECONDS
    """How long a burst's first read waits to read again before its round; None: it does not."""
    stats: ConsumerStats = field(default_factory=ConsumerStats)

    def __post_init__(self) -> None:
        self._begin = self.redis.register_script(_BEGIN)
        self._complete = self.redis.register_script(_COMPLETE)
        self._unlock = self.redis.register_script(_UNLOCK)
        self._forget = self.redis.register_script(_FORGET)
        self._claim = self.redis.register_script(_CLAIM_ABANDONED)
        self._read_ready = self.redis.register_script(_READ_READY)
        self.dead = DeadEvents(self.redis, self.clock)
        self.cluster = is_cluster(self.redis)
        self._woken = asyncio.Event()
        self._listener: asyncio.Task[None] | None = None
        self._groups: set[str] = set()
        self._grouped: Mapping[str, Endpoint] | None = None
        """The streams last found to have their groups (the same mapping while nothing changed)."""
        self._group_lost = False
        self._parked: list[_Parked] = []
        self._backlog: dict[tuple[str, str], list[StoredEvent]] = {}
        """Events read and not yet begun, per (endpoint, thread), oldest first: a round at a time."""
        self._attempts: dict[tuple[str, str], int] = {}
        """Failed attempts so far of backlogged events back from being parked, by (endpoint, entry id)."""
        self._unfinished: dict[str, list[tuple[str, int, str, str]]] = {}
        """Per endpoint: events handled (or found handled) and not yet completed in Redis."""
        self._stopping = False
        self._last_claim = 0.0
        self._listed: list[Endpoint] | None = None
        self._streams: dict[str, Endpoint] = {}

    # -- serving -------------------------------------------------------------------------------

    async def run(self) -> None:
        while not self._stopping:
            try:
                await self._step(block=True)
            except (RedisError, OSError) as exc:
                log.warning("event consumer: Redis error, retrying in 1 s: %r", exc)  # some carry no message
                await asyncio.sleep(1.0)
        with contextlib.suppress(RedisError, OSError):  # else they are handled again, as after a crash
            while self._backlog:  # what was read is finished, not left to a claim seconds later
                await self._complete_unfinished()
                await self._run_round()
            await self._complete_unfinished()
        if self._listener is not None:
            await self._listener  # ends within a quarter second of stop()

    async def forget(self, tag: str, thread: str) -> bool:
        """Drops a finished thread's ordering state; False while one of its events is unhandled."""
        return bool(await self._forget(keys=[keys.thread_seq(tag), keys.thread_done(tag)], args=[thread]))

    def stop(self) -> None:
        """Stops after the current step; unfinished events stay pending for another process."""
        self._stopping = True
        self._woken.set()

    async def drain(self, claim: bool = True) -> int:
        """Burst mode: handle everything available now (and, with ``claim``, what dead consumers
        left idle past claim_idle_seconds), and every parked retry due by the injected clock.
        Returns events handled. Retries not yet due stay parked: ``next_retry_at`` says when, so a
        test moves its clock there instead of sleeping through a backoff."""
        before = self.stats.handled + self.stats.ignored
        for _ in range(1000):
            if await self._step(block=False, force_claim=claim):
                continue
            waiting = [p for p in self._parked if p.waiting]
            if not waiting:
                break
            # Another consumer is handling a predecessor: that is real work in real time, not a
            # backoff, so look again shortly whatever the injected clock says.
            await asyncio.sleep(0.005)
            for p in waiting:
                p.retry_at = self.clock.now()
        await self._complete_unfinished()
        return self.stats.handled + self.stats.ignored - before

    def next_retry_at(self) -> float | None:
        """When the earliest parked event (a failed handler's retry, or one waiting for its
        predecessor) is due again, by the injected clock; None when nothing is parked."""
        return min((p.retry_at for p in self._parked), default=None)

    # -- one step ------------------------------------------------------------------------------

    async def _step(self, *, block: bool, force_claim: bool = False) -> int:
        try:
            return await self._step_once(block=block, force_claim=force_claim)
        except ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            # The stream or its group is gone (a Redis that came back without its data, a failover
            # to a replica that had not got them): make them again rather than fail forever.
            log.warning("event consumer: %s; creating the consumer groups again", exc)
            self._groups.clear()
            self._grouped = None
            return await self._step_once(block=block, force_claim=force_claim)

    async def _step_once(self, *, block: bool, force_claim: bool = False) -> int:
        listed = self.endpoints()
        if listed is not self._listed:  # the same list while nothing changed: its streams are known
            self._streams = {keys.events(e.tag): e for e in listed}
            self._listed = listed
        endpoints = self._streams
        await self._ensure_groups(endpoints)
        events: list[StoredEvent] = []
        now = self.clock.now()
        due = [p for p in self._parked if p.retry_at <= now]
        self._parked = [p for p in self._parked if p.retry_at > now]
        events += [p.event for p in due]
        self._attempts.update({(p.event.endpoint.tag, p.event.entry_id): p.attempts for p in due})
        if force_claim or now - self._last_claim >= self.claim_idle_seconds / 2:
            self._last_claim = now
            await self._complete_unfinished()  # what this process finished is not anybody's to claim
            events += await self._claim_abandoned(endpoints)
        if endpoints and self._reads_now():
            block_ms: int | None = None
            if block and not events and not self._backlog:
                wait = self.block_seconds
                if self._parked:
                    wait = min(wait, max(0.001, min(p.retry_at for p in self._parked) - now))
                block_ms = max(1, int(wait * 1000))
            read = await self._read(endpoints, block_ms)
            if block_ms is not None and self._burst_begins(read):  # a wait is only taken with nothing in hand
                self._take(read)  # before the wait: the flood check below counts them
                read = []
                await asyncio.sleep(self.burst_gather_seconds or 0)
                if self._reads_now():  # under a flood, what the first read took is enough
                    with contextlib.suppress(RedisError, OSError):  # what it did not take, the next read does
                        read = await self._read(endpoints, None)
            events += read
        self._take(events)
        await self._complete_unfinished()  # a thread's next event begins only after its last
        return await self._run_round()

    async def _read(self, endpoints: Mapping[str, Endpoint], block_ms: int | None) -> list[StoredEvent]:
        """New events of ``endpoints`` (with ``block_ms``, waiting up to that long for the first),
        the last rounds' completions sent first."""
        if self.cluster:
            await self._complete_unfinished()
            reply: Any = await self._read_each(endpoints, block_ms)
        else:
            reply = await self._complete_and_read(endpoints, block_ms)
            if self._group_lost:  # made again, and read again
                self._group_lost = False
                await self._ensure_groups(endpoints)
                reply += await self._complete_and_read(endpoints, None)
        # A stream of an endpoint this process does not serve (its configuration is older than the
        # writer's) is skipped: what the read took of it is claimed by a process that serves it.
        return [self._decode(endpoints[stream], entry_id, fields)
                for stream, entries in reply or [] if stream in endpoints for entry_id, fields in entries]  # fmt: skip

    def _burst_begins(self, read: list[StoredEvent]) -> bool:
        """Whether the first read after a quiet spell took events of more than one endpoint: a
        burst across stores is arriving (see BURST_GATHER_SECONDS). Not when the read already holds
        events with a handler of ROUND_EVENTS endpoints: the round takes one of each, every store
        arriving later would be behind them anyway, and the wait would only delay their posts."""
        if self.burst_gather_seconds is None or not read:
            return False
        first = read[0].endpoint.tag
        if all(event.endpoint.tag == first for event in read):
            return False
        return len({event.endpoint.tag for event in read if event.tag in self.handlers}) < ROUND_EVENTS

    async def _complete_and_read(self, streams: Mapping[str, Endpoint] | None, block_ms: int | None) -> Any:
        """The last rounds' completions and the next read (None: none), in one round trip: the
        completions run first, so the wait for new events never holds a finished thread's lock.
        The read takes the streams listed as ready; with ``block_ms`` it first waits up to that
        long for intake's next write (the read runs the moment it comes, in the same round trip)."""
        ready = [keys.EVENTS_READY, keys.EVENTS_READY_WAKE]
        read_args: list[str | int] = [keys.EVENTS_GROUP, self.name, self.batch]
        if not self._unfinished and block_ms is None:
            if streams is None:
                return None
            return self._ready_reply(streams, await self._read_ready(keys=ready, args=read_args))
        async with self.redis.pipeline(transaction=False) as pipe:
            for tag, rows in self._unfinished.items():
                pipe.evalsha(self._complete.sha, 3, *self._completion(tag, rows))
            reading = 0
            if streams is not None:
                if block_ms is not None:
                    # One wake-up: a burst's next write wakes the next waiting consumer.
                    pipe.blmpop(block_ms / 1000, 1, keys.EVENTS_READY_WAKE, direction="LEFT", count=1)
                    reading += 1
                pipe.evalsha(self._read_ready.sha, 2, *ready, *read_args)
                reading += 1
            results = await pipe.execute(raise_on_error=False)
        completed, read = results[: len(results) - reading], results[len(results) - reading :]
        if any(isinstance(result, NoScriptError) for result in completed):
            await self._complete_each()  # Redis forgot the script (a restart): loaded, run again
        else:
            for result in completed:
                if isinstance(result, Exception):
                    raise result
            self._unfinished.clear()
        if streams is None:
            return None
        for result in read[:-1]:  # the wait
            if isinstance(result, Exception):
                raise result
        reply = read[-1]
        if isinstance(reply, NoScriptError):  # loaded, and read again: what the wait took was only a signal
            reply = await self._read_ready(keys=ready, args=read_args)
        elif isinstance(reply, Exception):
            raise reply
        return self._ready_reply(streams, reply)

    def _ready_reply(self, streams: Mapping[str, Endpoint], reply: Any) -> list[tuple[str, list[Any]]]:
        """_READ_READY's answer as XREADGROUP's: (stream, [(entry id, fields)]) per stream. A stream
        of this process whose group is gone gets it again with the next step."""
        read, groupless = reply
        for stream in groupless:
            if stream in streams and stream in self._groups:
                log.warning("event consumer: %s has lost its consumer group; creating it again", stream)
                self._groups.discard(stream)
                self._grouped = None
                self._group_lost = True
        return [(str(stream), [(entry_id, _fields(flat)) for entry_id, flat in entries]) for stream, entries in read]

    def _completion(self, tag: str, rows: list[tuple[str, int, str, str]]) -> list[str]:
        """KEYS and ARGV of _COMPLETE for ``rows`` (thread, seq, entry id, owner) of one endpoint."""
        return [keys.thread_done(tag), keys.thread_locks(tag), keys.events(tag), keys.EVENTS_GROUP,
                orjson.dumps(rows).decode()]  # fmt: skip

    async def _complete_unfinished(self) -> None:
        """Records as handled, unlocks, acknowledges and deletes what the last rounds finished: one
        pipeline on a single Redis; on a cluster, each endpoint's call at once."""
        if self.cluster:
            await self._complete_each()
        else:
            await self._complete_and_read(None, None)

    async def _complete_each(self) -> None:
        calls = [self._completion(tag, rows) for tag, rows in self._unfinished.items()]
        await asyncio.gather(*(self._complete(keys=call[:3], args=call[3:]) for call in calls))
        self._unfinished.clear()

    async def _read_each(self, streams: Mapping[str, Endpoint], block_ms: int | None) -> list[Any]:
        """Redis Cluster: every endpoint's stream lives in its own slot, so each is read on its
        own, all in one pipeline; with nothing there, the wait is for intake's wake-up or ``block_ms``."""
        async with self.redis.pipeline(transaction=False) as pipe:  # a round trip per node, not per store
            for stream in streams:
                pipe.xreadgroup(keys.EVENTS_GROUP, self.name, {stream: ">"}, count=self.batch)
            replies = await pipe.execute()
        found = [entry for reply in replies for entry in reply or []]
        if not found and block_ms:
            self._woken.clear()
            if self._listener is None:
                self._listener = asyncio.create_task(
                    listen_for_wakeups(self.redis, keys.EVENTS_WAKE_CHANNEL, self._on_wake, lambda: self._stopping)
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._woken.wait(), block_ms / 1000)
        return found

    def _on_wake(self, _: str | None) -> None:
        self._woken.set()

    async def _ensure_groups(self, streams: Mapping[str, Endpoint]) -> None:
        if streams is self._grouped:  # every step asks; a look at each of 1,000 streams took 50 µs
            return
        for stream in streams:
            if stream in self._groups:
                continue
            try:
                await self.redis.xgroup_create(stream, keys.EVENTS_GROUP, id="0", mkstream=True)
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise
            self._groups.add(stream)
        self._grouped = streams

    async def _claim_abandoned(self, streams: Mapping[str, Endpoint]) -> list[StoredEvent]:
        """Takes over what dead consumers left idle past ``claim_idle_seconds``: every stream in one
        call (on a cluster, a pipeline: a round trip per node, however many stores), again for the
        streams that had more than a batch."""
        claimed: list[StoredEvent] = []
        min_idle = int(self.claim_idle_seconds * 1000)
        starts = dict.fromkeys(streams, "0-0")
        while starts:
            replies = await self._claim_from(starts, min_idle)
            # Its own parked and backlogged events are idle in its list of pending entries too.
            # Entry ids repeat across streams (one batch writes several in the same millisecond).
            mine = {(p.event.endpoint.tag, p.event.entry_id) for p in self._parked}
            mine.update((e.endpoint.tag, e.entry_id) for queue in self._backlog.values() for e in queue)
            more: dict[str, str] = {}
            for stream, (start, entries) in replies.items():
                for entry_id, fields in entries:
                    if fields and (streams[stream].tag, entry_id) not in mine:
                        claimed.append(self._decode(streams[stream], entry_id, fields))
                if start != "0-0":
                    more[stream] = start
            starts = more
        if claimed:
            self.stats.claimed += len(claimed)
            log.info("event consumer %s: claimed %d events left by another process", self.name, len(claimed))
        return claimed

    async def _claim_from(self, starts: Mapping[str, str], min_idle: int) -> dict[str, tuple[str, list[Any]]]:
        """One XAUTOCLAIM pass from each stream's start: per stream that answered, the next start and
        the entries taken, each (id, fields as a mapping; empty when the entry is gone)."""
        if self.cluster:  # a script cannot reach streams in other slots: a command per stream
            async with self.redis.pipeline(transaction=False) as pipe:
                for stream, start in starts.items():
                    pipe.xautoclaim(stream, keys.EVENTS_GROUP, self.name, min_idle, start_id=start, count=self.batch)
                replies = await pipe.execute()
            return {stream: (reply[0], reply[1]) for stream, reply in zip(starts, replies, strict=True)}
        names = list(starts)
        args: list[str | int] = [keys.EVENTS_GROUP, self.name, min_idle, self.batch, *starts.values()]
        found = await self._claim(keys=[keys.EVENTS_READY, *names], args=args)
        return {
            names[int(found[i]) - 1]: (str(found[i + 1]), [(entry, _fields(flat)) for entry, flat in found[i + 2]])
            for i in range(0, len(found), 3)
        }

    @staticmethod
    def _decode(endpoint: Endpoint, entry_id: str, fields: Mapping[str, str]) -> StoredEvent:
        return StoredEvent(
            endpoint=endpoint,
            entry_id=entry_id,
            msg_id=fields.get("msg_id", ""),
            tag=fields.get("tag", ""),
            thread=fields.get("thread", ""),
            seq=int(fields.get("seq", "0")),
            raw=fields.get("data", "{}"),
            received_at=int(fields.get("received_at", "0")) / 1000,
        )

    def _reads_now(self) -> bool:
        """Whether this step reads new events before its round. With a backlog, only while it is
        shorter than a batch: a consumer that read on under a flood would take every new event into
        its own memory, out of the other processes' reach until they claimed it. And not on a
        cluster, where a read is a command per stream (400 stores: 400 commands a round, which made
        a burst there three times slower); there the backlog is finished first."""
        if not self._backlog:
            return True
        return not self.cluster and sum(map(len, self._backlog.values())) < self.batch

    def _take(self, events: list[StoredEvent]) -> None:
        """Adds ``events`` to the backlog, each behind those of its thread already there."""
        touched = set()
        for event in events:
            touched.add(key := (event.endpoint.tag, event.thread))
            self._backlog.setdefault(key, []).append(event)
        for key in touched:  # a parked event back for its retry may be older than those read since
            self._backlog[key].sort(key=lambda e: e.seq)

    async def _run_round(self) -> int:
        """Begins the next event of up to ROUND_EVENTS threads of the backlog, each endpoint's oldest
        before any endpoint's second, asks Redis about them in one call per endpoint, runs the ready
        ones concurrently; they are completed with the next call. A thread whose event must wait (or
        failed) parks the rest of its events behind it. Returns how many events it began."""
        heads = self._round_heads([queue[0] for queue in self._backlog.values()])
        by_endpoint: dict[str, list[StoredEvent]] = defaultdict(list)
        for event in heads:
            by_endpoint[event.endpoint.tag].append(event)
        # Every endpoint's round runs to its end before a failure of one is raised: a round left
        # running would finish its handlers unseen, and their events would be begun again.
        outcomes = await asyncio.gather(
            *(self._round(tag, round_events, self._attempts) for tag, round_events in by_endpoint.items()),
            return_exceptions=True,
        )
        now = self.clock.now()
        failure: BaseException | None = None
        for outcome in outcomes:
            if isinstance(outcome, BaseException):  # its events stay in the backlog, begun again
                failure = failure or outcome
                continue
            for event, retry in outcome.items():
                queue = self._backlog[(event.endpoint.tag, event.thread)]
                if retry is None:
                    self._attempts.pop((event.endpoint.tag, queue.pop(0).entry_id), None)
                    continue
                delay, tries = retry
                for e in queue:
                    earlier = self._attempts.pop((e.endpoint.tag, e.entry_id), 0)
                    self._parked.append(
                        _Parked(e, now + delay, tries if e is event else earlier, delay == WAIT_SECONDS)
                    )
                queue.clear()
        self._backlog = {k: q for k, q in self._backlog.items() if q}
        if failure is not None:
            raise failure
        return len(heads)

    def _round_heads(self, heads: list[StoredEvent]) -> list[StoredEvent]:
        """Up to ROUND_EVENTS of ``heads`` that have a handler: every endpoint's first (in arrival
        order) before any endpoint's second, and so on. An event without a handler costs no work,
        so a backlog of them is not cut into rounds for nothing."""
        ranks: dict[str, int] = defaultdict(int)
        ranked: list[tuple[int, tuple[float, int, int], StoredEvent]] = []
        for event in sorted(heads, key=_arrival):
            ranked.append((ranks[event.endpoint.tag], _arrival(event), event))
            ranks[event.endpoint.tag] += 1
        taken: list[StoredEvent] = []
        handled = 0
        for _, _, event in sorted(ranked, key=lambda row: row[:2]):
            if handled == ROUND_EVENTS:
                break
            taken.append(event)
            handled += event.tag in self.handlers
        return taken

    async def _round(
        self, tag: str, events: list[StoredEvent], attempts: Mapping[tuple[str, str], int]
    ) -> dict[StoredEvent, tuple[float, int] | None]:
        """One event per thread of one endpoint. Returns, per event, None when finished with, or
        (retry in seconds, attempts so far)."""
        owners = {e: f"{self.name}:{e.entry_id}" for e in events}
        round_ = orjson.dumps([(e.thread, e.seq, owners[e]) for e in events]).decode()
        states = await self._begin(
            keys=[keys.thread_done(tag), keys.thread_locks(tag)],
            args=[int(self.clock.now() * 1000), int(self.lock_seconds * 1000), round_],
        )
        result: dict[StoredEvent, tuple[float, int] | None] = {}
        finished: list[StoredEvent] = []
        ready: list[StoredEvent] = []
        for event, state in zip(events, states, strict=True):
            if state == "done":
                self.stats.duplicates += 1
                finished.append(event)
                result[event] = None
            elif state == "wait":
                result[event] = (WAIT_SECONDS, attempts.get((tag, event.entry_id), 0))
            else:
                ready.append(event)
        for event, retry in zip(
            ready,
            await asyncio.gather(*(self._run_handler(e, attempts.get((tag, e.entry_id), 0)) for e in ready)),
            strict=True,
        ):
            result[event] = retry
            if retry is None:
                finished.append(event)
            else:
                with contextlib.suppress(RedisError, OSError):
                    await self._unlock(keys=[keys.thread_locks(tag)], args=[event.thread, owners[event]])
        # Completed with the next call this consumer makes (its next read, claim or round).
        self._unfinished.setdefault(tag, []).extend((e.thread, e.seq, e.entry_id, owners[e]) for e in finished)
        return result

    async def _run_handler(self, event: StoredEvent, attempts: int) -> tuple[float, int] | None:
        handler = self.handlers.get(event.tag)
        if handler is None:
            log.debug(
                "%s: stored event %s with tag %r has no handler; acknowledged", event.endpoint, event.msg_id, event.tag
            )
            self.stats.ignored += 1
            return None
        try:
            with bound(**about(event.endpoint.tag, event.thread), event_id=event.msg_id):
                await handler(event)
                log.debug("%s: event %s (%s) handled", event.endpoint, event.msg_id, event.tag)
        except NotYetRecorded as exc:
            log.debug("%s: event %s waits: %s", event.endpoint, event.msg_id, exc)
            return (exc.after, attempts)
        except Exception as exc:
            attempts += 1
            self.stats.failed_attempts += 1
            if isinstance(exc, RedisError | OSError):
                # Redis (or a service the handler needs) down, or a connection lost: the event is
                # fine and will be handled once it is back, however long that takes; it is never
                # dead-lettered for it.
                log.warning("%s: event %s: unavailable (attempt %d), retrying: %r",
                            event.endpoint, event.msg_id, attempts, exc)  # fmt: skip
                return (min(self.max_retry_seconds, self.retry_base_seconds * 2 ** min(attempts - 1, 10)), attempts)
            if attempts < self.max_attempts:
                log.warning(
                    "%s: event %s failed (attempt %d), retrying: %r", event.endpoint, event.msg_id, attempts, exc
                )
                return (self.retry_base_seconds * 2 ** (attempts - 1), attempts)
            try:
                # Once on the list, however often this runs: an earlier run may have put it there
                # and lost the answer, or died before acknowledging the event.
                await self.dead.bury(event, exc, self.clock.now())
            except (RedisError, OSError) as unreachable:
                # Not on the dead list yet: handled once more later, and its next failure puts it there.
                log.warning("%s: event %s failed %d times, and the dead list is unreachable; retrying: %r",
                            event.endpoint, event.msg_id, attempts, unreachable)  # fmt: skip
                return (self.retry_base_seconds, attempts - 1)
            log.error("%s: event %s failed %d times; moved to the dead list",
                      event.endpoint, event.msg_id, attempts, exc_info=exc)  # fmt: skip
            self.stats.dead += 1
            METRICS.dead_events.labels(event.endpoint.tag.strip("{}"), event.tag).inc()
            return None
        self.stats.handled += 1
        return None
