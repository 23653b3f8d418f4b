"""Where the bridge's messages landed (``bridge/engine/refs.py``), against a real Redis."""

from __future__ import annotations

import asyncio

from redis.asyncio import Redis

from bridge.engine import refs

TAG = "{store:1001}"


async def test_a_reply_that_arrives_before_its_parent_is_recorded_is_routed_once_it_is(redis: Redis) -> None:
    """Someone answered within milliseconds of the post: the reply reaches the bridge before the
    post's answer did. The look-up waits for the record instead of refusing the reply."""

    async def record_the_post_a_little_later() -> None:
        await asyncio.sleep(0.03)
        for key, value in refs.root_records(TAG, "chat:c1", "slack", "C1", "1700000000.000100").items():
            await redis.set(key, value)

    recording = asyncio.create_task(record_the_post_a_little_later())
    assert await refs.chat_of(redis, TAG, "slack", "C1", "1700000000.000100") is None
    assert await refs.parent_of(redis, TAG, "slack", "C1", "1700000000.000100") == "chat:c1"
    await recording
    assert await refs.root_of(redis, TAG, "chat:c1") == ("C1", "1700000000.000100")
