"""Where the bridge's messages landed in a destination, and back: a thread's root message (to update
it and to thread under it), and from a message in a destination to its thread (to route a reply).
Every entry is its own key and expires after ``keys.REF_KEEP_SECONDS``, so nothing grows forever."""

from __future__ import annotations

import asyncio

from redis.asyncio import Redis

from bridge.engine import keys


def root_records(tag: str, chat_key: str, service: str, channel: str, message: str) -> dict[str, str]:
    """What a thread's root message, once posted, is recorded as (a sender returns it to the outbox,
    which sets it, kept ``keys.REF_KEEP_SECONDS``, with the job's removal from its queue)."""
    ref = f"{service}:{channel}:{message}"
    return {keys.thread_root(tag, chat_key): ref, keys.message_ref(tag, ref): chat_key}


def member_records(tag: str, chat_key: str, service: str, channel: str, message: str) -> dict[str, str]:
    """As ``root_records``, for a later message of the thread (where a destination has no threads,
    a reply to it counts)."""
    return {keys.message_ref(tag, f"{service}:{channel}:{message}"): chat_key}


async def save_topic(redis: Redis, tag: str, chat_key: str, service: str, channel: str, topic: str) -> None:
    """A destination's own sub-thread opened for this chat (a Telegram forum topic): every message
    written in it belongs to the chat."""
    async with redis.pipeline(transaction=False) as pipe:
        pipe.set(keys.thread_topic(tag, chat_key), topic, ex=keys.REF_KEEP_SECONDS)
        pipe.set(keys.message_ref(tag, f"{service}:{channel}:topic:{topic}"), chat_key, ex=keys.REF_KEEP_SECONDS)
        await pipe.execute()


async def topic_of(redis: Redis, tag: str, chat_key: str) -> str | None:
    found = await redis.get(keys.thread_topic(tag, chat_key))
    return None if found is None else str(found)


async def root_of(redis: Redis, tag: str, chat_key: str) -> tuple[str, str] | None:
    """(channel, message id) of a chat's root message in its destination, once posted."""
    ref = await redis.get(keys.thread_root(tag, chat_key))
    if ref is None:
        return None
    _, channel, message = str(ref).split(":", 2)
    return channel, message


PARENT_WAIT_SECONDS = 1.5
"""How long a reply waits for the mapping of the message it answers (within Slack's 3 s ack)."""

UNRECORDED_PARENT_SECONDS = 15.0
"""How long after the bridge received a message in an unknown thread it is tried again before it
counts as written outside the bridge's threads: a process that died between the service taking
the thread's first message and recording it leaves the record to the process that takes the send
over (its lease lapses after 5 s) and finds the message in the service."""
UNRECORDED_PARENT_RETRY_SECONDS = 1.0


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
