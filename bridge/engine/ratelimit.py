"""Per-target send spacing shared by every replica (Slack ≈ 1 message/s per channel, Telegram 1/s per
chat): one Redis script reserves the next slot and checks the spacing since the last actual send,
and a sender that must wait raises RetryLater so the outbox reschedules it instead of sleeping. A 429
holds the target for its Retry-After, with the refused job first in line. Hand-written because it
must live in the bridge's own Redis, under its own keys, across processes; it is a few lines."""

from __future__ import annotations

from redis.asyncio import Redis

from bridge.engine import keys
from bridge.engine.clock import Clock
from bridge.engine.cluster import is_cluster
from bridge.engine.outbox import Expired

# Each message reserves its own slot, so messages queued for one target do not all wake at the
# same free moment and fight over it (a thundering herd); the slot is kept for the job until used.
# And the spacing is kept between actual sends, not only between slots: a timer that fires late must
# not send closer to the next message than the service allows.
# KEYS: the target's next-free time, this job's slot, the target's last send, and optionally the
# job's attempt mark.  ARGV: now (ms), spacing (ms), not after (ms or ''), the mark's life (s).
# Returns {wait, mark}: wait is 0 when the job may send now (recorded as the last send), else how
# many ms until it may; -1 when its slot would come after "not after", and then nothing is reserved,
# so no slot goes to waste. A job let go now sets its attempt mark, and mark is what was there
# before ('' when nothing: its first attempt).
_RESERVE = """
local function reserve()
  local now, spacing = tonumber(ARGV[1]), tonumber(ARGV[2])
  local earliest = tonumber(redis.call('GET', KEYS[3]) or '0') + spacing
  local mine = tonumber(redis.call('GET', KEYS[2]) or '')
  if not mine then
    local slot = math.max(now, tonumber(redis.call('GET', KEYS[1]) or '0'), earliest)
    if ARGV[3] ~= '' and slot > tonumber(ARGV[3]) then return -1 end
    redis.call('SET', KEYS[1], slot + spacing, 'PX', slot - now + 60000)
    mine = slot
  end
  local go = math.max(mine, earliest)
  if go > now then
    redis.call('SET', KEYS[2], go, 'PX', go - now + 60000)
    return go - now
  end
  redis.call('DEL', KEYS[2])
  redis.call('SET', KEYS[3], now, 'PX', spacing + 60000)
  return 0
end
local wait, before = reserve(), ''
if wait == 0 and KEYS[4] then before = redis.call('SET', KEYS[4], '1', 'EX', ARGV[4], 'GET') or '' end
return {wait, before}
"""

# The service said "too many" (429 + Retry-After): nobody sends to the target before it allows, and
# this job goes first then — it keeps its place instead of queueing behind every later reservation.
# KEYS: next-free, this job's slot, last send. ARGV: now (ms), retry after (ms), spacing (ms).
_HOLD = """
local now, after, spacing = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local at = now + after
redis.call('SET', KEYS[3], at - spacing, 'PX', after + 60000)
redis.call('SET', KEYS[2], at, 'PX', after + 60000)
if tonumber(redis.call('GET', KEYS[1]) or '0') < at + spacing then
  redis.call('SET', KEYS[1], at + spacing, 'PX', after + spacing + 60000)
end
return at
"""


# KEYS: the target's last send.  ARGV: now (ms), ttl (ms). Moves it later, never earlier (a slow
# request finishing after a later one must not pull the spacing back).
_SENT = """
if tonumber(redis.call('GET', KEYS[1]) or '0') < tonumber(ARGV[1]) then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
end
return 1
"""


class SendSpacing:
    def __init__(self, redis: Redis, clock: Clock) -> None:
        self.clock = clock
        self._redis = redis
        self._cluster = is_cluster(redis)
        self._reserve = redis.register_script(_RESERVE)
        self._hold = redis.register_script(_HOLD)
        self._sent = redis.register_script(_SENT)

    @staticmethod
    def _keys(service: str, target: str, job_id: str) -> list[str]:
        return [
            keys.rate_limit(service, target),
            keys.rate_limit_slot(service, target, job_id),
            keys.rate_limit_last(service, target),
        ]

    async def wait_seconds(
        self, service: str, target: str, spacing_seconds: float, job_id: str, not_after: float | None = None
    ) -> float:
        """0 when ``job_id`` may send to ``target`` now (taken as sent now), else how long until it
        may. Raises ``Expired`` (reserving nothing) when its slot would come after ``not_after``."""
        wait, _ = await self.reserve(service, target, spacing_seconds, job_id, not_after)
        return wait

    async def reserve(
        self,
        service: str,
        target: str,
        spacing_seconds: float,
        job_id: str,
        not_after: float | None = None,
        *,
        attempt: str | None = None,
        attempt_seconds: int = 3600,
    ) -> tuple[float, bool]:
        """As ``wait_seconds``; with ``attempt`` (a key), a job let go now also marks its attempt
        there for ``attempt_seconds``, in the same call on a single Redis, and the second value
        says whether an earlier attempt had marked it (a sender with no idempotency key then looks
        for what that attempt left). A job told to wait marks nothing: it has not tried."""
        now_ms = round(self.clock.now() * 1000)  # not truncated: 1.1 s is 1100 ms, not 1099
        limit = "" if not_after is None else int(not_after * 1000)
        # On a cluster the mark lives in a slot of its own: it is set by a call of its own.
        marked_here = [attempt] if attempt is not None and not self._cluster else []
        wait, before = await self._reserve(
            keys=[*self._keys(service, target, job_id), *marked_here],
            args=[now_ms, int(spacing_seconds * 1000), limit, attempt_seconds],
        )
        if int(wait) < 0:
            raise Expired(f"{service} {target}: the next free slot comes after the job's moment")
        if attempt is not None and not marked_here and int(wait) == 0:
            before = await self._redis.set(attempt, "1", ex=attempt_seconds, get=True)
        return int(wait) / 1000, bool(before)

    async def sent(self, service: str, target: str, spacing_seconds: float) -> None:
        """The service took a message for ``target`` now: the next one is spaced from this moment
        (later than the reservation, by however long the request took to leave and arrive)."""
        now_ms = round(self.clock.now() * 1000)
        await self._sent(
            keys=[keys.rate_limit_last(service, target)], args=[now_ms, int(spacing_seconds * 1000) + 60000]
        )

    async def hold(self, service: str, target: str, spacing_seconds: float, job_id: str, after: float) -> None:
        """The service answered 429 with Retry-After ``after``: the target rests that long and this job
        sends first when it may again."""
        now_ms = round(self.clock.now() * 1000)  # not truncated: 1.1 s is 1100 ms, not 1099
        await self._hold(keys=self._keys(service, target, job_id),
                         args=[now_ms, int(after * 1000), int(spacing_seconds * 1000)])  # fmt: skip
