"""Where the bridge's messages landed in a destination, and back: a thread's root message (to update
it and to thread under it), and from a message in a destination to its thread (to route a reply).
Every entry is its own key and expires after ``keys.REF_KEEP_SECONDS``, so nothing grows forever."""

from __future__ import annotations

import asyncio

from redis.asyncio import Redis

from bridge.engine import keys
from bridge.engine.outbox import CALL_TIMEOUT_SECONDS


def root_records(tag: str, chat_key: str, service: str, channel: str, message: str) -> dict[str, str]:
    """What a thread's root message, once posted, is recorded as (a sender returns it to the outbox,
    which sets it, kept ``keys.REF_KEEP_SECONDS``, with the job's removal from its queue)."""
    ref = f"{service}:{channel}:{message}"
    return {keys.thread_root(tag, chat_key): ref, keys.message_ref(tag, ref): chat_key}


def member_records(tag: str, chat_key: str, service: str, channel: str, message: str) -> dict[str, str]:
    """As ``root_records``, for a later message of the thread (where a destination has no threads,
    a reply to it counts)."""
    return {keys.message_ref(tag, f"{service}:{channel}:{message}"): chat_key}


def posted_records(tag: str, job_id: str, service: str, channel: str, message: str) -> dict[str, str]:
    """Where the post of job ``job_id`` landed, for a post that asks to be remembered (``remember``
    in its payload) so that a later job changes it (``jobs.UPDATE_POST``)."""
    return {keys.posted_message(tag, job_id): f"{service}:{channel}:{message}"}


async def posted_at(redis: Redis, tag: str, job_id: str) -> tuple[str, str] | None:
    """(channel, message id) where the post of job ``job_id`` landed; None when it never landed
    (it failed for good) or was long forgotten."""
    ref = await redis.get(keys.posted_message(tag, job_id))
    return None if ref is None else _channel_and_message(str(ref))


def _channel_and_message(ref: str) -> tuple[str, str]:
    _, channel, message = ref.split(":", 2)
    return channel, message


async def save_member(redis: Redis, tag: str, chat_key: str, service: str, channel: str, message: str) -> None:
    """A person's message in a thread of a destination that threads by replies (a Telegram reply
    chain): a reply to it belongs to the thread too, as a reply to any of the bridge's messages."""
    [(key, value)] = member_records(tag, chat_key, service, channel, message).items()
    await redis.set(key, value, ex=keys.REF_KEEP_SECONDS)


async def save_topic(redis: Redis, tag: str, chat_key: str, service: str, channel: str, topic: str) -> None:
    """A destination's own sub-thread opened for this chat (a Telegram forum topic): every message
    written in it belongs to the chat."""
    async with redis.pipeline(transaction=False) as pipe:
        pipe.set(keys.thread_topic(tag, chat_key), topic, ex=keys.REF_KEEP_SECONDS)
        pipe.set(keys.message_ref(tag, f"{service}:{channel}:topic:{topic}"), chat_key, ex=keys.REF_KEEP_SECONDS)
        await pipe.execute()


async def forget_topic(redis: Redis, tag: str, chat_key: str) -> None:
    """The destination's sub-thread of this chat is gone (a person deleted the topic, or turned the
    group's topics off): its later messages go where a thread without one goes."""
    await redis.delete(keys.thread_topic(tag, chat_key))


async def topic_of(redis: Redis, tag: str, chat_key: str) -> str | None:
    found = await redis.get(keys.thread_topic(tag, chat_key))
    return None if found is None else str(found)


async def root_of(redis: Redis, tag: str, chat_key: str) -> tuple[str, str] | None:
    """(channel, message id) of a chat's root message in its destination, once posted."""
    ref = await redis.get(keys.thread_root(tag, chat_key))
    return None if ref is None else _channel_and_message(str(ref))


PARENT_WAIT_SECONDS = 1.5
"""How long a reply waits for the mapping of the message it answers (within Slack's 3 s ack)."""

SEND_SECONDS = CALL_TIMEOUT_SECONDS + 5.0
"""The longest one send of a message can take to be recorded: its client gives up on the service's
answer after ``CALL_TIMEOUT_SECONDS``, and the send given up is tried again about a second later,
finding the message the service took."""


def unrecorded_parent_seconds(lease_seconds: float) -> float:
    """How long after a thread's first message was written (or, where the destination does not say,
    after the bridge received a message in it) a message in that unknown thread is tried again
    before it counts as written outside the bridge's threads. The first message may be the
    bridge's own, taken by the service and not recorded yet: its send is still waiting for the
    service's answer, or its process died and the one that takes the send over (once the timer
    lease of ``lease_seconds`` lapses) records it."""
    return lease_seconds + SEND_SECONDS


UNRECORDED_PARENT_RETRY_SECONDS = (1.0, 5.0)
"""The shortest and the longest wait between two tries of a message in an unknown thread."""


def unrecorded_parent_retry_seconds(waited: float) -> float:
    """When a message in an unknown thread is tried again, having waited ``waited`` seconds: soon
    at first (the record usually comes within seconds), then further apart."""
    shortest, longest = UNRECORDED_PARENT_RETRY_SECONDS
    return min(longest, max(shortest, waited))


async def parent_of(redis: Redis, tag: str, service: str, channel: str, message: str) -> str | None:
    """Like ``chat_of``, for a reply that may arrive while the message it answers is still being
    recorded (someone answered within milliseconds of the post): waits briefly rather than refuse it.
    The looks come quickly at first (the record usually follows within milliseconds: a fixed 50 ms
    pause put 50 ms on such replies) and further apart after. Real time: the post in flight does
    not wait for test clocks."""
    waited, pause = 0.0, 0.005
    while True:
        found = await chat_of(redis, tag, service, channel, message)
        if found is not None or waited >= PARENT_WAIT_SECONDS:
            return found
        await asyncio.sleep(pause)
        waited, pause = waited + pause, min(pause * 2, 0.2)


async def chat_of(redis: Redis, tag: str, service: str, channel: str, message: str) -> str | None:
    """The thread this destination message belongs to (``chat:<id>``, ``task:<id>``), or None."""
    found = await redis.get(keys.message_ref(tag, f"{service}:{channel}:{message}"))
    return None if found is None else str(found)
