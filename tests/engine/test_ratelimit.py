"""Send spacing shared by every process: a target never gets two messages closer than it allows."""

from __future__ import annotations

import pytest
from redis.asyncio import Redis

from bridge.engine import keys
from bridge.engine.clock import ManualClock
from bridge.engine.outbox import Expired
from bridge.engine.ratelimit import SendSpacing


async def test_the_next_message_is_spaced_from_when_the_service_took_the_last_one(redis: Redis) -> None:
    """A request the process held back (busy, slow network) arrives late; spaced only from when it
    left, the next one could arrive less than the allowed second after it — a 429 on Telegram."""
    clock = ManualClock()
    spacing = SendSpacing(redis, clock, "telegram")
    assert await spacing.wait_seconds("42", 1.1, "first") == 0
    clock.advance(0.5)  # the first request took half a second to be taken
    await spacing.sent("42", 1.1)
    clock.advance(0.6)  # 1.1 s after the first left
    assert await spacing.wait_seconds("42", 1.1, "second") == 0.5, "1.1 s after it was taken"
    clock.advance(0.5)
    assert await spacing.wait_seconds("42", 1.1, "second") == 0


async def test_a_slow_request_finishing_late_never_pulls_the_spacing_back(redis: Redis) -> None:
    clock = ManualClock()
    spacing = SendSpacing(redis, clock, "telegram")
    assert await spacing.wait_seconds("7", 1.1, "a") == 0
    clock.advance(1.1)
    assert await spacing.wait_seconds("7", 1.1, "b") == 0
    clock.advance(0.1)
    await spacing.sent("7", 1.1)  # b was taken
    clock.set(clock.now() - 0.05)  # a's answer, recorded by a process whose moment is earlier
    await spacing.sent("7", 1.1)
    clock.advance(1.1)  # 1.1 s after a's answer, 1.05 s after b was taken
    assert await spacing.wait_seconds("7", 1.1, "c") == 0.05, "spaced from b, the later one"


async def marks_an_attempt_only_when_the_job_goes(redis: Redis) -> None:
    """A job let go marks its attempt, and learns of an earlier one; a job told to wait marks nothing
    (most posts of a burst are told to wait at first, and they have not tried)."""
    clock = ManualClock()
    spacing = SendSpacing(redis, clock, "slack")
    mark = "{slack}:post-attempt:post-1"
    assert await spacing.reserve("C1", 1.0, "post-0", attempt="{slack}:post-attempt:post-0") == (0, False)
    assert await spacing.reserve("C1", 1.0, "post-1", attempt=mark, attempt_seconds=60) == (1.0, False)
    assert await redis.exists(mark) == 0, "told to wait: no attempt"
    clock.advance(1.0)
    assert await spacing.reserve("C1", 1.0, "post-1", attempt=mark, attempt_seconds=60) == (0, False)
    assert 0 < await redis.ttl(mark) <= 60
    clock.advance(1.0)  # its process died after the post; the job runs again
    assert await spacing.reserve("C1", 1.0, "post-1", attempt=mark, attempt_seconds=60) == (0, True)


async def test_a_job_marks_its_attempt_only_when_it_goes(redis: Redis) -> None:
    await marks_an_attempt_only_when_the_job_goes(redis)


async def a_target_and_its_sender_are_reserved_together(redis: Redis) -> None:
    """Telegram spaces each chat and the bot as a whole. A message the bot's spacing holds back
    was not sent: its chat is not charged for it, so it goes as soon as the bot lets it, not a
    whole chat spacing later. And a chat still resting holds no slot of the bot's."""
    clock = ManualClock()
    spacing = SendSpacing(redis, clock, "telegram", sender_spacing=0.2)
    assert await spacing.wait_seconds("7", 1.1, "to-7") == 0
    assert await spacing.wait_seconds("8", 1.1, "to-8") == 0.2, "the bot sent 7's message just now"
    clock.advance(0.2)
    assert await spacing.wait_seconds("8", 1.1, "to-8") == 0, "chat 8 had sent nothing: it goes now"
    assert await spacing.wait_seconds("7", 1.1, "again-7") == 0.9, "chat 7 rests for its own spacing"
    clock.advance(0.1)
    assert await spacing.wait_seconds("9", 1.1, "to-9") == 0.1, "the bot's next slot, 0.2 s after 8's"
    clock.advance(0.8)
    assert await spacing.wait_seconds("7", 1.1, "again-7") == 0, "7's own slot; the bot's is taken only now"
    with pytest.raises(Expired):
        await spacing.wait_seconds("10", 1.1, "late", not_after=clock.now() + 0.1)
    chat_10 = keys.rate_limit("telegram", "10", sender_wide=True)
    assert await redis.exists(chat_10, keys.rate_limit_slot(chat_10, "late")) == 0, "reserved nothing"


async def test_a_target_and_its_sender_are_reserved_together(redis: Redis) -> None:
    await a_target_and_its_sender_are_reserved_together(redis)
