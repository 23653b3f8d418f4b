"""Per-target send spacing shared by every replica (Slack ≈ 1 message/s per channel, Telegram 1/s per
chat): one Redis script reserves the next slot, and a sender that must wait raises RetryLater so the
outbox reschedules it instead of sleeping. Hand-written because it must live in the bridge's own
Redis, under its own keys, across processes; it is a dozen lines."""

from __future__ import annotations

from redis.asyncio import Redis

from bridge import keys
from bridge.clock import Clock
from bridge.outbox import Expired

# Each message reserves its own slot, so messages queued for one target do not all wake at the
# same free moment and fight over it (a thundering herd); the slot is kept for the job until used.
# KEYS: the target's next-free time, this job's slot.  ARGV: now (ms), spacing (ms), not after (ms
# or ''). Returns 0 when the job may send now, else how many ms until its slot; -1 when that slot
# would come after "not after", and then nothing is reserved, so no slot goes to waste.
_RESERVE = """
local now, spacing = tonumber(ARGV[1]), tonumber(ARGV[2])
local mine = redis.call('GET', KEYS[2])
if mine then
  local wait = tonumber(mine) - now
  if wait <= 0 then redis.call('DEL', KEYS[2]) return 0 end
  return wait
end
local slot = math.max(now, tonumber(redis.call('GET', KEYS[1]) or '0'))
if ARGV[3] ~= '' and slot > tonumber(ARGV[3]) then return -1 end
redis.call('SET', KEYS[1], slot + spacing, 'PX', slot - now + 60000)
if slot <= now then return 0 end
redis.call('SET', KEYS[2], slot, 'PX', slot - now + 60000)
return slot - now
"""


class SendSpacing:
    def __init__(self, redis: Redis, clock: Clock) -> None:
        self.clock = clock
        self._reserve = redis.register_script(_RESERVE)

    async def wait_seconds(
        self, service: str, target: str, spacing_seconds: float, job_id: str, not_after: float | None = None
    ) -> float:
        """0 when ``job_id`` may send to ``target`` now, else how long until its reserved slot.
        Raises ``Expired`` (reserving nothing) when that slot would come after ``not_after``."""
        now_ms = int(self.clock.now() * 1000)
        limit = "" if not_after is None else int(not_after * 1000)
        wait = int(
            await self._reserve(
                keys=[keys.rate_limit(service, target), keys.rate_limit_slot(service, target, job_id)],
                args=[now_ms, int(spacing_seconds * 1000), limit],
            )
        )
        if wait < 0:
            raise Expired(f"{service} {target}: the next free slot comes after the job's moment")
        return wait / 1000
