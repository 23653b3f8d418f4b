"""Deliveries already handled (Slack event ids, Telegram update ids): a service's redelivery of one
is acknowledged and not handled again. An id is remembered only after its handling, so a crash in
between lets the redelivery through; handlers are idempotent for that case."""

from __future__ import annotations

from redis.asyncio import Redis

from bridge.clock import Clock


class SeenIds:
    def __init__(self, redis: Redis, key: str, clock: Clock, keep_seconds: int = 86_400) -> None:
        self.redis = redis
        self.key = key
        self.clock = clock
        self.keep_ms = keep_seconds * 1000

    async def seen(self, delivery_id: str) -> bool:
        return await self.redis.zscore(self.key, delivery_id) is not None

    async def remember(self, delivery_id: str) -> None:
        now_ms = int(self.clock.now() * 1000)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.zadd(self.key, {delivery_id: now_ms})
            pipe.zremrangebyscore(self.key, "-inf", now_ms - self.keep_ms)
            await pipe.execute()
