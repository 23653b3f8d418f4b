"""Per-target send spacing shared by every replica (Slack ≈ 1 message/s per channel, Telegram 1/s per
chat): one Redis script reserves the next slot, and a sender that must wait raises RetryLater so the
outbox reschedules it instead of sleeping. Hand-written because it must live in the bridge's own
Redis, under its own keys, across processes; it is a dozen lines."""

from __future__ import annotations

from redis.asyncio import Redis

from bridge import keys
from bridge.clock import Clock

# KEYS: the target's key. ARGV: now (ms), spacing (ms). Returns 0 when the slot is taken now, else
# how many ms to wait.
_RESERVE = """
local free = tonumber(redis.call('GET', KEYS[1]) or '0')
local now = tonumber(ARGV[1])
if now < free then return free - now end
redis.call('SET', KEYS[1], now + tonumber(ARGV[2]), 'PX', 60000)
return 0
"""


class SendSpacing:
    def __init__(self, redis: Redis, clock: Clock) -> None:
        self.clock = clock
        self._reserve = redis.register_script(_RESERVE)

    async def wait_seconds(self, service: str, target: str, spacing_seconds: float) -> float:
        """0 when a message may go to ``target`` now (the slot is then taken), else how long to wait."""
        now_ms = int(self.clock.now() * 1000)
        wait = int(
            await self._reserve(keys=[keys.rate_limit(service, target)], args=[now_ms, int(spacing_seconds * 1000)])
        )
        return wait / 1000
