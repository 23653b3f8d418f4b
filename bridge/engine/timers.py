"""Durable timers in Redis: reply windows, reminders and deadlines (PRODUCT C4).

A timer is a short key in a sorted set scored by its due time. Workers claim due timers atomically
(Lua) by moving them to a *leased* set scored by the lease expiry, run the handler, then acknowledge.
A worker that dies leaves its leases to expire, and the next claim takes them again: at-least-once,
so handlers are idempotent. Workers do not poll on a fixed period: each sleeps until the earliest due
time it knows of, and a schedule earlier than a shard's head publishes a wake-up on ``WAKE_CHANNEL``
so sleeping workers in every process re-read the head (ANCHORS: *when the worker looks* is what sets
lateness, not Redis).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import math
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from bridge.engine import keys
from bridge.engine.clock import Clock, SystemClock
from bridge.engine.cluster import is_cluster
from bridge.engine.logcontext import about, bound
from bridge.engine.scripts import ScriptCall, in_one_call
from bridge.engine.wakeups import listen_for_wakeups

log = logging.getLogger(__name__)

_SCHEDULE = """
local head = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if ARGV[6] == '1' then
  redis.call('ZADD', KEYS[1], 'LT', ARGV[2], ARGV[1])
else
  redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
end
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[4], ARGV[1])
if ARGV[3] == '1' then
  redis.call('HSET', KEYS[3], ARGV[1], ARGV[4])
else
  redis.call('HDEL', KEYS[3], ARGV[1])
end
if head[2] == nil or tonumber(ARGV[2]) < tonumber(head[2]) then
  redis.call('PUBLISH', ARGV[5], ARGV[2])
end
return 1
"""

_CANCEL = """
local n = redis.call('ZREM', KEYS[1], ARGV[1]) + redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[3], ARGV[1])
redis.call('HDEL', KEYS[4], ARGV[1])
return n
"""


def take_lua(first_key: int, first_arg: int) -> str:
    """Lua that leases a timer to the caller at once, as a schedule for now and the caller's claim
    would, in one step: pending or running, it is replaced (a run holding the old lease no longer
    acknowledges it). KEYS from ``first_key``: the shard's due, leased, payload and attempts; ARGV
    from ``first_arg``: the timer, the lease (ms). Other scripts take a timer with it too."""
    due, leased, payload, attempts = (f"KEYS[{first_key + i}]" for i in range(4))
    timer, lease = f"ARGV[{first_arg}]", f"ARGV[{first_arg + 1}]"
    return (
        f"redis.call('ZREM', {due}, {timer})\n"
        f"redis.call('ZADD', {leased}, {lease}, {timer})\n"
        f"redis.call('HDEL', {payload}, {timer})\n"
        f"redis.call('HDEL', {attempts}, {timer})\n"
    )


_TAKE = take_lua(1, 1) + "return 1\n"

# KEYS: the shard's main due, leased, payload, then its lanes' due sets. ARGV: now, lease until, room
# of the main lane (expired leases of any kind count in it), then each lane's room.
# Returns {member, due_ms ('' when re-claimed from a dead worker), payload ('' when none)}* and,
# last, the earliest score among pending timers of lanes with room left and live leases ('' when
# none): a lane that is full is not looked at again until one of its runs ends.
_CLAIM = """
local now, lease_until = tonumber(ARGV[1]), ARGV[2]
local out, nxt = {}, nil
local has_payload = redis.call('EXISTS', KEYS[3]) == 1
local function take(member, due)
  out[#out + 1] = member
  out[#out + 1] = due
  local p = has_payload and redis.call('HGET', KEYS[3], member)
  out[#out + 1] = p or ''
end
local function earliest(key)
  local s = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')[2]
  if s and (nxt == nil or tonumber(s) < nxt) then nxt = tonumber(s) end
end
local function claim(due_key, room)
  if room > 0 then
    local due = redis.call('ZRANGEBYSCORE', due_key, '-inf', now, 'WITHSCORES', 'LIMIT', 0, room)
    for i = 1, #due, 2 do
      redis.call('ZREM', due_key, due[i])
      redis.call('ZADD', KEYS[2], lease_until, due[i])
      take(due[i], due[i + 1])
    end
    room = room - #due / 2
  end
  return room
end
local main = tonumber(ARGV[3])
local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, main)
for _, m in ipairs(expired) do
  redis.call('ZADD', KEYS[2], lease_until, m)
  take(m, '')
end
claim(KEYS[1], main - #expired)
earliest(KEYS[1])
for i = 4, #KEYS do
  if claim(KEYS[i], tonumber(ARGV[i])) > 0 then earliest(KEYS[i]) end
end
earliest(KEYS[2])
out[#out + 1] = nxt and string.format('%d', nxt) or ''
return out
"""


def settle_lua(due: str, leased: str, payload: str, attempts: str, timer: str, lease: str) -> str:
    """Lua that acknowledges a finished run of ``timer`` holding ``lease`` (its token in the leased
    set), setting ``settled`` to true when it did. A lease that no longer matches belongs to someone
    else (rescheduled, cancelled, or taken over after expiry) and is left alone; so is the payload of
    a timer scheduled again, which ``due`` (a Lua expression) finds pending. Each argument is a Lua
    expression; the worker's acknowledgement and a handler's own last call (the outbox's) share it."""
    return (
        f"local s = redis.call('ZSCORE', {leased}, {timer})\n"
        f"if s and tonumber(s) == tonumber({lease}) then\n"
        f"  redis.call('ZREM', {leased}, {timer})\n"
        f"  redis.call('HDEL', {attempts}, {timer})\n"
        f"  if not ({due}) then redis.call('HDEL', {payload}, {timer}) end\n"
        f"  settled = true\n"
        f"end\n"
    )


# KEYS: the shard's main due, leased, payload, attempts, then its lanes' due sets. ARGV: (member,
# lease_ms)*.
_ACK = (
    """
local function pending(member)
  for k = 1, #KEYS do
    if (k == 1 or k > 4) and redis.call('ZSCORE', KEYS[k], member) then return true end
  end
  return false
end
local done = 0
for i = 1, #ARGV, 2 do
  local settled = false
"""
    + settle_lua("pending(ARGV[i])", "KEYS[2]", "KEYS[3]", "KEYS[4]", "ARGV[i]", "ARGV[i + 1]")
    + """  if settled then done = done + 1 end
end
return done
"""
)

# Extends the leases of handlers still running (a worker that dies stops renewing, and its timers are
# claimed again once the short lease runs out). KEYS: leased. ARGV: new lease (ms), (member, lease)*.
# Returns 1 or 0 per pair: renewed, or no longer this run's (rescheduled, cancelled, taken over).
_RENEW = """
local out = {}
for i = 2, #ARGV, 2 do
  local s = redis.call('ZSCORE', KEYS[1], ARGV[i])
  if s and tonumber(s) == tonumber(ARGV[i + 1]) then
    redis.call('ZADD', KEYS[1], ARGV[1], ARGV[i])
    out[#out + 1] = 1
  else
    out[#out + 1] = 0
  end
end
return out
"""

# Puts a leased timer back: after a failed handler (counts the attempt, gives up to the dead set past
# max_attempts) or at shutdown (no attempt counted). Returns the due time set, or -1 when dead.
_RELEASE = """
local s = redis.call('ZSCORE', KEYS[2], ARGV[1])
if not s or tonumber(s) ~= tonumber(ARGV[2]) then return -2 end
redis.call('ZREM', KEYS[2], ARGV[1])
if ARGV[4] == '1' then
  local n = redis.call('HINCRBY', KEYS[4], ARGV[1], 1)
  if n >= tonumber(ARGV[5]) then
    redis.call('HDEL', KEYS[4], ARGV[1])
    redis.call('HDEL', KEYS[3], ARGV[1])
    redis.call('ZADD', KEYS[5], ARGV[7], ARGV[1])
    return -1
  end
end
redis.call('ZADD', KEYS[1], 'NX', ARGV[3], ARGV[1])
redis.call('PUBLISH', ARGV[6], ARGV[3])
return tonumber(ARGV[3])
"""


ACK_LINGER_SECONDS = 0.005
"""How long a finished run's acknowledgement waits for others to share its call."""


@dataclass
class Lease:
    """A run's hold on its timer."""

    token: int
    """The run's score in the leased set (ms): renewed while its handler runs, so it changes."""
    held: bool = True
    """False once the run is acknowledged or handed back, by the worker or by the handler's own
    last call (``settle_lua``): nothing renews or acknowledges it then."""


@dataclass(frozen=True)
class Timer:
    key: str
    due_at: float | None
    """When it was due; None when it is a redelivery after a worker died holding it."""
    payload: str | None
    lease_ms: int
    """The lease the run started with (``lease`` holds the current one)."""
    handed: str | None = None
    """What the step that started this run here handed to it (``start_now``), in memory only: None
    for a timer claimed from Redis, a redelivery included."""
    lease: Lease = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "lease", Lease(self.lease_ms))

    @property
    def kind(self) -> str:
        return self.key.split(":", 1)[0]


Handler = Callable[[Timer], Awaitable[None]]


def _about_timer(timer_key: str) -> dict[str, str]:
    """The store or creator (and the chat or task order, where the key names one) of a timer."""
    try:
        kind, tag, rest = keys.split_timer_key(timer_key)
    except ValueError:
        return {}
    thread = {"window": f"chat:{rest}", "deadline": f"task:{rest}"}.get(kind, rest)
    return about(tag, thread)


Schedule = tuple[str, float, bool]
"""A timer to set, for ``TimerStore.change``: (key, due at, keep an earlier time already set)."""


@dataclass(frozen=True)
class TimerChange:
    """The timers one step of a flow sets and stops together, for ``TimerStore.change``; with
    ``read_after``, that hash is read once they are made."""

    schedules: Sequence[Schedule] = ()
    cancels: Sequence[str] = ()
    read_after: str | None = None


def _schedule_args(key: str, due_at: float, payload: str | None, keep_earlier: bool) -> list[str | int]:
    """ARGV of _SCHEDULE."""
    return [key, _ms(due_at), "0" if payload is None else "1", payload or "", keys.WAKE_CHANNEL,
            "1" if keep_earlier else "0"]  # fmt: skip


def _ms(seconds: float) -> int:
    # Rounded, not floored: a moment computed as 2.2 s may be 2.19999… in floating point, and a
    # timer set for it must not come a millisecond early, find nothing due, and set itself again.
    return round(seconds * 1000)


class TimerStore:
    """Scheduling side: any process may schedule and cancel."""

    def __init__(self, redis: Redis, *, shards: int = 1, clock: Clock | None = None) -> None:
        if shards < 1:
            raise ValueError("shards must be at least 1")
        self.redis = redis
        self.shards = shards
        self.clock: Clock = clock or SystemClock()
        self._schedule = redis.register_script(_SCHEDULE)
        self._cancel = redis.register_script(_CANCEL)
        self.take_script = redis.register_script(_TAKE)
        self.claim_script = redis.register_script(_CLAIM)
        self.ack_script = redis.register_script(_ACK)
        self.release_script = redis.register_script(_RELEASE)
        self.renew_script = redis.register_script(_RENEW)
        self.cluster = is_cluster(redis)
        self.local: TimerWorker | None = None
        """The worker serving in this process, if any: ``start_now`` runs a timer there at once."""

    def shard_keys(self, shard: int) -> list[str]:
        return [
            keys.timers_due(shard),
            keys.timers_leased(shard),
            keys.timers_payload(shard),
            keys.timers_attempts(shard),
            keys.timers_dead(shard),
        ]

    def lane_keys(self, shard: int) -> list[str]:
        """The due sets of the shard's lanes (``keys.TIMER_LANES``), in that order."""
        return keys.timers_due_sets(shard)[1:]

    def keys_for(self, timer_key: str) -> list[str]:
        """``shard_keys`` of the timer's shard, with the due set of its own lane first."""
        shard = keys.timer_shard(timer_key, self.shards)
        return [keys.timers_due(shard, keys.timer_lane(timer_key)), *self.shard_keys(shard)[1:]]

    async def schedule(
        self, key: str, due_at: float, payload: str | None = None, *, keep_earlier: bool = False
    ) -> None:
        """Schedule ``key`` at ``due_at`` (epoch s). Idempotent; scheduling a key again replaces it,
        or with ``keep_earlier`` leaves it at an earlier time already set (coalescing: many changes,
        one run). A key whose handler is running is scheduled again either way."""
        await self._schedule(keys=self.keys_for(key)[:4], args=_schedule_args(key, due_at, payload, keep_earlier))

    async def change(
        self, schedules: Sequence[Schedule], cancels: Sequence[str] = (), *, read_after: str | None = None
    ) -> dict[str, str]:
        """Several schedules (as ``schedule``, without payloads) and cancels in one round trip (on
        a cluster, a call each, all at once): the timers one step of a flow sets and stops together.
        With ``read_after``, that hash is read once they are made, in the same round trip, and
        returned (empty otherwise): a step that must see what another process wrote after its
        cancel reads it without a call of its own."""
        _, read = await self.make(TimerChange(schedules, cancels, read_after))
        return read

    async def make(self, change: TimerChange, before: Sequence[ScriptCall] = ()) -> tuple[list[Any], dict[str, str]]:
        """``change``, after the scripts ``before`` (another part's calls of the same step; their
        answers are returned first) in the same round trip on a single Redis, and the hash read
        after it (empty without ``read_after``). On a cluster, ``before`` runs first, one call
        after another."""
        if self.cluster:  # redis-py refuses scripts in a cluster's pipeline: a call each
            answers, _ = await in_one_call(self.redis, before)
            calls = self.calls(change)
            await asyncio.gather(*(script(keys=k, args=a) for script, k, a in calls))
            read: Any = None if change.read_after is None else await self.redis.hgetall(change.read_after)
        elif before or change.schedules or change.cancels or change.read_after is not None:
            answers, read = await in_one_call(self.redis, [*before, *self.calls(change)], read_after=change.read_after)
            answers = answers[: len(before)]
        else:
            answers, read = [], None
        return answers, {str(k): str(v) for k, v in (read or {}).items()}

    def calls(self, change: TimerChange) -> list[ScriptCall]:
        """The script calls that make ``change`` (its read aside)."""
        calls = [(self._schedule, k, _schedule_args(k, due, None, keep)) for k, due, keep in change.schedules]
        calls += [(self._cancel, k, [k]) for k in change.cancels]
        return [(script, self.keys_for(key)[:4], args) for script, key, args in calls]

    async def start_now(self, key: str, handed: str | None = None) -> None:
        """Runs ``key`` now: in this process at once when its worker serves and has room, leased to
        it directly (no wake-up sent to every process, no claim), otherwise scheduled for now like
        any timer. A process that dies holding it leaves the lease to run out, and another worker
        takes it then, as it takes any timer a dead worker held. ``handed`` reaches the handler
        (``Timer.handed``) only when the run is here and now."""
        worker = self.local
        if worker is None or not await worker.run_now(key, handed):
            await self.schedule(key, self.clock.now())

    def local_with_room(self) -> TimerWorker | None:
        """This process's serving worker, when a timer taken now would run there at once."""
        worker = self.local
        return worker if worker is not None and worker.has_room() else None

    async def cancel(self, key: str) -> bool:
        """Cancel ``key`` whether pending or running; True when there was something to cancel."""
        return bool(await self._cancel(keys=self.keys_for(key)[:4], args=[key]))

    async def due_at(self, key: str) -> float | None:
        score = await self.redis.zscore(self.keys_for(key)[0], key)
        return None if score is None else score / 1000

    async def is_pending(self, key: str) -> bool:
        """Whether ``key`` is still to run or running now (due, or leased by a worker)."""
        due, leased = self.keys_for(key)[:2]
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.zscore(due, key)
            pipe.zscore(leased, key)
            found = await pipe.execute()
        return any(score is not None for score in found)

    async def pending(self) -> int:
        due = [key for shard in range(self.shards) for key in keys.timers_due_sets(shard)]
        return sum(await asyncio.gather(*(self.redis.zcard(key) for key in due)))

    async def leased(self) -> int:
        counts = await asyncio.gather(*(self.redis.zcard(keys.timers_leased(s)) for s in range(self.shards)))
        return sum(counts)

    async def dead(self) -> list[str]:
        found: list[str] = []
        for s in range(self.shards):
            found.extend(str(m) for m in await self.redis.zrange(keys.timers_dead(s), 0, -1))
        return found


@dataclass
class WorkerStats:
    fired: int = 0
    failed: int = 0
    redelivered: int = 0
    claims: int = 0
    """Claim calls made (one round trip per shard each)."""


class TimerWorker:
    """Claims due timers and runs their handlers, selected by the timer key's kind.

    ``run()`` serves until ``stop()``; ``drain()`` is the burst mode for tests and tools: it fires
    everything due at the clock's current time, waits for the handlers and returns how many ran.

    ``concurrency`` bounds the handlers of the main lane running at once; each lane of
    ``keys.TIMER_LANES`` has its own bound in ``lanes`` (``concurrency`` when not given), so the runs
    of a lane held up by something slow never take the main lane's slots.
    """

    def __init__(
        self,
        store: TimerStore,
        handlers: Mapping[str, Handler],
        *,
        lease_seconds: float = 5.0,
        batch: int = 500,
        concurrency: int = 200,
        retry_base_seconds: float = 5.0,
        max_attempts: int = 8,
        max_idle_seconds: float = 5.0,
        lanes: Mapping[str, int] | None = None,
    ) -> None:
        self.store = store
        self.handlers = handlers  # shared: flows may register kinds after the worker exists
        self.lease_seconds = lease_seconds
        self.batch = batch
        self.concurrency = concurrency
        self.retry_base_seconds = retry_base_seconds
        self.max_attempts = max_attempts
        self.max_idle_seconds = max_idle_seconds
        self.lanes = {lane: (lanes or {}).get(lane, concurrency) for lane in keys.TIMER_LANES}
        self.stats = WorkerStats()
        self._running: dict[asyncio.Task[None], Timer] = {}
        self._running_in: Counter[str] = Counter()
        """Handlers running now, by lane (the main lane is "")."""
        self._slot_free = asyncio.Event()
        self._wake = asyncio.Event()
        self._stopping = False
        self._next_ms: float = math.inf
        self._claim_asked = False
        """Set by what a nap cannot tell from a due time: a lane's room freed, a missed wake-up."""
        self._pending_acks: list[Timer] = []
        self._lease_lock = asyncio.Lock()  # a renewal and an ack never pass each other's token
        self._acks_ready = asyncio.Event()
        self._serving: asyncio.Event | None = None
        self._context = contextvars.copy_context()

    @property
    def clock(self) -> Clock:
        return self.store.clock

    # -- serving -----------------------------------------------------------------------------

    async def run(self) -> None:
        self._serving = serving = asyncio.Event()
        self._context = contextvars.copy_context()
        self.store.local = self
        listener = asyncio.create_task(
            listen_for_wakeups(self.store.redis, keys.WAKE_CHANNEL, self._on_wake, lambda: self._stopping),
            name="timers-wake",
        )
        acker = asyncio.create_task(self._ack_loop(), name="timers-ack")
        renewer = asyncio.create_task(self._renew_loop(), name="timers-renew")
        try:
            while not self._stopping:
                # Cleared before the claim, and any wake-up published during the claim counts
                # (next_ms = inf), so a timer scheduled meanwhile is never slept past.
                self._wake.clear()
                self._claim_asked = False
                self._next_ms = math.inf
                try:
                    more, next_ms = await self._claim_and_start()
                except (RedisError, OSError) as exc:
                    log.warning("timer claim failed, retrying in 1 s: %s", exc)
                    await self._nap(1.0)
                    continue
                if self._running_in[""] >= self.concurrency:
                    self._slot_free.clear()
                    await self._slot_free.wait()
                    continue
                if more:
                    continue
                self._next_ms = min(self._next_ms, next_ms)  # a wake-up during the claim told of it
                await self._nap_until_due()
        finally:
            self._stopping = True
            if self.store.local is self:
                self.store.local = None
            self._acks_ready.set()
            await asyncio.gather(listener, acker, renewer, return_exceptions=True)
            serving.set()

    async def stop(self, grace_seconds: float = 10.0) -> None:
        """Stop claiming; let running handlers finish within the grace time; hand the rest back."""
        self._stopping = True
        self._wake.set()
        self._slot_free.set()
        if self._serving is not None:
            await self._serving.wait()  # a claim in flight finishes and starts its handlers first
        if self._running:
            await asyncio.wait(list(self._running), timeout=grace_seconds)
        unfinished = dict(self._running)
        for task in unfinished:
            task.cancel()
        if unfinished:
            await asyncio.wait(list(unfinished), timeout=1.0)
        await self._flush_acks()
        for timer in unfinished.values():
            with contextlib.suppress(RedisError, OSError):
                await self._release(timer, due_at=self.clock.now(), failed=False)

    async def drain(self) -> int:
        """Burst mode: fire everything due now, wait for it, acknowledge. Returns handlers run."""
        before = ran = self.stats.fired + self.stats.failed
        while True:
            await self._claim_and_start()
            if self._running:
                await asyncio.wait(list(self._running))
            await self._flush_acks()
            if self.stats.fired + self.stats.failed == ran:
                break  # handlers may schedule more that is due now: loop until a round finds none
            ran = self.stats.fired + self.stats.failed
        return ran - before

    # -- internals ---------------------------------------------------------------------------

    async def _nap(self, seconds: float) -> bool:
        """Sleeps ``seconds`` or until woken; True when woken."""
        try:
            await asyncio.wait_for(self._wake.wait(), timeout=seconds)
        except TimeoutError:
            return False
        return True

    async def _nap_until_due(self) -> None:
        """Sleeps until the earliest due time known, at most ``max_idle_seconds``. A wake-up telling
        of a timer due later only brings the end of the nap forward: nothing is due yet, so there is
        nothing to claim (every process's worker claimed at each such schedule, and again at its time)."""
        idle_until = self.clock.now() + self.max_idle_seconds
        while not self._stopping and not self._claim_asked:
            delay = min(idle_until, self._next_ms / 1000) - self.clock.now()
            if delay <= 0:
                return
            self._wake.clear()
            if not await self._nap(delay):
                return

    async def _claim_and_start(self) -> tuple[bool, float]:
        """Claims up to the free room of each lane. Returns whether a shard filled a lane's room
        (more may be due) and the earliest due time or lease expiry left (ms, inf when none)."""
        now = self.clock.now()
        lease_ms = _ms(now + self.lease_seconds)
        room = {lane: min(self.batch, limit - self._running_in[lane])
                for lane, limit in [("", self.concurrency), *self.lanes.items()]}  # fmt: skip
        more, next_ms = False, math.inf
        for shard in range(self.store.shards):
            if room[""] <= 0:
                more = True
                break
            self.stats.claims += 1
            reply: list[str] = await self.store.claim_script(
                keys=[*self.store.shard_keys(shard)[:3], *self.store.lane_keys(shard)],
                args=[_ms(now), lease_ms, *(max(0, n) for n in room.values())],
            )
            *items, head = reply
            if head:
                next_ms = min(next_ms, float(head))
            taken: Counter[str] = Counter()
            for i in range(0, len(items), 3):
                member, due, payload = items[i], items[i + 1], items[i + 2]
                self._start(Timer(member, int(due) / 1000 if due else None, payload or None, lease_ms))
                taken[keys.timer_lane(member)] += 1
            more = more or any(0 < room[lane] <= taken[lane] for lane in room)
            for lane in room:
                room[lane] -= taken[lane]
        return more, next_ms

    def _start(self, timer: Timer) -> None:
        self._running_in[keys.timer_lane(timer.key)] += 1
        # The worker's own context, not the caller's: a timer started by run_now from inside an
        # event's handler must not carry that event's context (its log fields, its delivery time).
        task = asyncio.create_task(self._fire(timer), name=f"timer:{timer.key}", context=self._context.copy())
        self._running[task] = timer
        task.add_done_callback(self._on_done)

    def has_room(self) -> bool:
        """Serving, not stopping, with a free slot: a timer taken now would run here at once."""
        return self._serving is not None and not self._stopping and self._running_in[""] < self.concurrency

    def lease_from_now(self) -> int:
        """The lease (ms) a timer taken now holds."""
        return _ms(self.clock.now() + self.lease_seconds)

    async def run_now(self, key: str, handed: str | None = None) -> bool:
        """Takes ``key`` (pending or not) and runs it here at once; False, having done nothing,
        when this worker is not serving or has no room."""
        if not self.has_room():
            return False
        lease_ms = self.lease_from_now()
        await self.store.take_script(keys=self.store.keys_for(key)[:4], args=[key, lease_ms])
        self.run_taken(key, lease_ms, handed)
        return True

    def run_taken(self, key: str, lease_ms: int, handed: str | None = None) -> None:
        """Runs ``key`` here at once, which a script (``take_lua``) leased to this worker under
        ``lease_ms`` together with other work."""
        self._start(Timer(key, self.clock.now(), None, lease_ms, handed))

    def _on_done(self, task: asyncio.Task[None]) -> None:
        timer = self._running.pop(task, None)
        if timer is not None:
            lane = keys.timer_lane(timer.key)
            self._running_in[lane] -= 1
            if lane and self._running_in[lane] + 1 >= self.lanes[lane]:
                # The lane was full, so the last claim did not look at its waiting timers: claimed now.
                # (Below its limit, the claim took what was due and its next time is known.)
                self._claim_asked = True
                self._wake.set()
        self._slot_free.set()

    async def _fire(self, timer: Timer) -> None:
        if timer.due_at is None:
            self.stats.redelivered += 1
        handler = self.handlers.get(timer.kind)
        try:
            if handler is None:
                raise LookupError(f"no handler for timer kind {timer.kind!r}")
            with bound(timer=timer.key, **_about_timer(timer.key)):
                await handler(timer)
        except asyncio.CancelledError:
            raise
        except Exception:
            self.stats.failed += 1
            log.exception("timer %s: handler failed", timer.key)
            await self._retry_later(timer)
            return
        self.stats.fired += 1
        if timer.lease.held:  # else the handler's own last call acknowledged it
            self._pending_acks.append(timer)
            self._acks_ready.set()

    async def _retry_later(self, timer: Timer) -> None:
        attempt_delay = self.retry_base_seconds
        with contextlib.suppress(RedisError, OSError):
            raw = await self.store.redis.hget(
                keys.timers_attempts(keys.timer_shard(timer.key, self.store.shards)), timer.key
            )
            attempt_delay *= 2 ** int(raw or 0)
            result = await self._release(timer, due_at=self.clock.now() + attempt_delay, failed=True)
            if result == -1:
                log.error("timer %s: gave up after %d attempts", timer.key, self.max_attempts)

    async def _release(self, timer: Timer, *, due_at: float, failed: bool) -> int:
        async with self._lease_lock:
            lease, timer.lease.held = timer.lease.token, False
        result: int = await self.store.release_script(
            keys=self.store.keys_for(timer.key),
            args=[
                timer.key,
                lease,
                _ms(due_at),
                "1" if failed else "0",
                self.max_attempts,
                keys.WAKE_CHANNEL,
                _ms(self.clock.now()),
            ],
        )
        return result

    async def _ack_loop(self) -> None:
        # Ends on the stopping flag, not by cancellation: redis-py can swallow a cancel that lands
        # inside a command, which would leave a cancelled task waiting forever.
        while not (self._stopping and not self._pending_acks):
            await self._acks_ready.wait()
            if not self._stopping:
                # Runs that end together (a reply's send, its header's update, its ✅) share one
                # call; the lease a late ack leaves is only a token, and nothing waits on it.
                await asyncio.sleep(ACK_LINGER_SECONDS)
            try:
                await self._flush_acks()
            except (RedisError, OSError) as exc:
                # Unacknowledged timers are fired again after their lease: at-least-once.
                log.warning("timer ack failed: %s", exc)
                await asyncio.sleep(0.5)

    async def _flush_acks(self) -> None:
        async with self._lease_lock:
            self._acks_ready.clear()
            acks, self._pending_acks = self._pending_acks, []
            by_shard: dict[int, list[Any]] = {}
            for timer in acks:
                args = by_shard.setdefault(keys.timer_shard(timer.key, self.store.shards), [])
                args += [timer.key, timer.lease.token]
                timer.lease.held = False
            for shard, args in by_shard.items():
                await self.store.ack_script(keys=[*self.store.shard_keys(shard)[:4], *self.store.lane_keys(shard)],
                                            args=args)  # fmt: skip

    async def _renew_loop(self) -> None:
        # Short leases, kept alive while a handler runs: a worker that dies holds its timers (an
        # outbox thread, a reply window) for at most ``lease_seconds``, not for the longest handler.
        while not self._stopping:
            await self._nap_renewal(self.lease_seconds / 3)
            try:
                await self.renew()
            except (RedisError, OSError) as exc:
                log.warning("timer lease renewal failed: %s", exc)

    async def _nap_renewal(self, seconds: float) -> None:
        for _ in range(max(1, int(seconds / 0.25))):  # ends within a quarter second of stop()
            if self._stopping:
                return
            await asyncio.sleep(min(0.25, seconds))

    async def renew(self) -> int:
        """Extends the leases of every handler still running; returns how many were renewed."""
        async with self._lease_lock:
            running = [t for task, t in self._running.items() if not task.done() and t.lease.held]
            if not running:
                return 0
            lease_ms = _ms(self.clock.now() + self.lease_seconds)
            by_shard: dict[int, list[Timer]] = {}
            for timer in running:
                by_shard.setdefault(keys.timer_shard(timer.key, self.store.shards), []).append(timer)
            renewed = 0
            for shard, timers in by_shard.items():
                args: list[Any] = [lease_ms]
                for timer in timers:
                    args += [timer.key, timer.lease.token]
                kept = await self.store.renew_script(keys=[keys.timers_leased(shard)], args=args)
                for timer, ok in zip(timers, kept, strict=True):
                    if int(ok):
                        timer.lease.token = lease_ms
                        renewed += 1
            return renewed

    def _on_wake(self, due_ms: str | None) -> None:
        if due_ms is None:  # subscribed again: what was published meanwhile is unknown
            self._claim_asked = True
            self._wake.set()
        elif float(due_ms) < self._next_ms:
            self._next_ms = float(due_ms)
            self._wake.set()
