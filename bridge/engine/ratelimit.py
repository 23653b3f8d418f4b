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
# A service that also spaces every message of the sender (Telegram's bot) is a further target of
# the same reservation, taken in order: the sender's slot is reserved only once the target lets the
# job go (a job resting for its chat must not hold the bot's slots from every other chat), and a send
# is recorded on them only when all let it go (a chat is not charged for a message the bot's
# spacing held back).
# KEYS: per target, its next-free time, this job's slot and its last send; then optionally the
# job's attempt mark.  ARGV: now (ms), not after (ms or ''), the mark's life (s), then each
# target's spacing (ms). Returns {wait, mark}: wait is 0 when the job may send now (recorded as
# every target's last send), else how many ms until it may; -1 when a slot would come after "not
# after", and then nothing is reserved, so no slot goes to waste. A job let go now sets its
# attempt mark, and mark is what was there before ('' when nothing: its first attempt).
_RESERVE = """
local now, targets = tonumber(ARGV[1]), #ARGV - 3
local function reserve()
  local plan, wait = {}, 0
  for i = 1, targets do
    local k = 3 * i - 3
    local earliest = tonumber(redis.call('GET', KEYS[k + 3]) or '0') + tonumber(ARGV[3 + i])
    local mine = tonumber(redis.call('GET', KEYS[k + 2]) or '')
    local fresh = not mine
    if fresh then
      mine = math.max(now, tonumber(redis.call('GET', KEYS[k + 1]) or '0'), earliest)
      if ARGV[2] ~= '' and mine > tonumber(ARGV[2]) then return -1 end
    end
    plan[i] = {mine, fresh, math.max(mine, earliest)}
    if plan[i][3] > now then wait = plan[i][3] - now break end
  end
  for i, target in ipairs(plan) do
    local k, spacing = 3 * i - 3, tonumber(ARGV[3 + i])
    if target[2] then redis.call('SET', KEYS[k + 1], target[1] + spacing, 'PX', target[1] - now + 60000) end
    if wait > 0 then
      redis.call('SET', KEYS[k + 2], target[3], 'PX', wait + 60000)
    else
      redis.call('DEL', KEYS[k + 2])
      redis.call('SET', KEYS[k + 3], now, 'PX', spacing + 60000)
    end
  end
  return wait
end
local wait, before = reserve(), ''
if wait == 0 and KEYS[3 * targets + 1] then
  before = redis.call('SET', KEYS[3 * targets + 1], '1', 'EX', ARGV[3], 'GET') or ''
end
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


SENDER = "sender"
"""The target that stands for the sender as a whole."""


class SendSpacing:
    """The spacing of one service's messages. With ``sender_spacing``, the service also spaces
    every message of the sender as a whole (a bot's overall rate): each reservation then takes the
    target's slot and the sender's together, in one script. The service's keys then share one
    cluster slot, which costs no spread: every send of the service touches the sender's keys."""

    def __init__(self, redis: Redis, clock: Clock, service: str, *, sender_spacing: float | None = None) -> None:
        self.clock = clock
        self.service = service
        self._redis = redis
        self._cluster = is_cluster(redis)
        self._sender_spacing = sender_spacing
        self._reserve = redis.register_script(_RESERVE)
        self._hold = redis.register_script(_HOLD)
        self._sent = redis.register_script(_SENT)

    def _key(self, target: str) -> str:
        return keys.rate_limit(self.service, target, sender_wide=self._sender_spacing is not None)

    def _keys(self, target: str, job_id: str) -> list[str]:
        key = self._key(target)
        return [key, keys.rate_limit_slot(key, job_id), keys.rate_limit_last(key)]

    async def wait_seconds(
        self, target: str, spacing_seconds: float, job_id: str, not_after: float | None = None
    ) -> float:
        """0 when ``job_id`` may send to ``target`` now (taken as sent now), else how long until it
        may. Raises ``Expired`` (reserving nothing) when its slot would come after ``not_after``."""
        wait, _ = await self.reserve(target, spacing_seconds, job_id, not_after)
        return wait

    async def reserve(
        self,
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
        limit: str | int = "" if not_after is None else int(not_after * 1000)
        target_keys, spacings = self._keys(target, job_id), [int(spacing_seconds * 1000)]
        if self._sender_spacing is not None:
            target_keys += self._keys(SENDER, job_id)
            spacings.append(int(self._sender_spacing * 1000))
        # On a cluster the mark lives in a slot of its own: it is set by a call of its own.
        marked_here = [attempt] if attempt is not None and not self._cluster else []
        wait, before = await self._reserve(
            keys=[*target_keys, *marked_here], args=[now_ms, limit, attempt_seconds, *spacings]
        )
        if int(wait) < 0:
            raise Expired(f"{self.service} {target}: the next free slot comes after the job's moment")
        if attempt is not None and not marked_here and int(wait) == 0:
            before = await self._redis.set(attempt, "1", ex=attempt_seconds, get=True)
        return int(wait) / 1000, bool(before)

    async def sent(self, target: str, spacing_seconds: float) -> None:
        """The service took a message for ``target`` now: the next one is spaced from this moment
        (later than the reservation, by however long the request took to leave and arrive)."""
        now_ms = round(self.clock.now() * 1000)
        await self._sent(
            keys=[keys.rate_limit_last(self._key(target))], args=[now_ms, int(spacing_seconds * 1000) + 60000]
        )

    async def hold(self, target: str, spacing_seconds: float, job_id: str, after: float) -> None:
        """The service answered 429 with Retry-After ``after``: the target rests that long and this job
        sends first when it may again."""
        now_ms = round(self.clock.now() * 1000)  # not truncated: 1.1 s is 1100 ms, not 1099
        await self._hold(keys=self._keys(target, job_id),
                         args=[now_ms, int(after * 1000), int(spacing_seconds * 1000)])  # fmt: skip
