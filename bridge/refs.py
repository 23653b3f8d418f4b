"""Where the bridge's messages landed in a destination, and back: a chat's root message (to update it
and to thread under it), and from a thread in a destination to its chat (to route a reply)."""

from __future__ import annotations

import asyncio

from redis.asyncio import Redis

from bridge import keys


async def save_root(redis: Redis, tag: str, chat_key: str, service: str, channel: str, message: str) -> None:
    ref = f"{service}:{channel}:{message}"
    await redis.hset(keys.message_refs(tag), mapping={f"{chat_key}:root": ref, f"ref:{ref}": chat_key})


async def save_member(redis: Redis, tag: str, chat_key: str, service: str, channel: str, message: str) -> None:
    """A later message of the thread (where a destination has no threads, a reply to it counts)."""
    await redis.hset(keys.message_refs(tag), f"ref:{service}:{channel}:{message}", chat_key)


async def save_topic(redis: Redis, tag: str, chat_key: str, service: str, channel: str, topic: str) -> None:
    """A destination's own sub-thread opened for this chat (a Telegram forum topic): every message
    written in it belongs to the chat."""
    ref = f"{service}:{channel}:topic:{topic}"
    await redis.hset(keys.message_refs(tag), mapping={f"{chat_key}:topic": topic, f"ref:{ref}": chat_key})


async def topic_of(redis: Redis, tag: str, chat_key: str) -> str | None:
    found = await redis.hget(keys.message_refs(tag), f"{chat_key}:topic")
    return None if found is None else str(found)


async def root_of(redis: Redis, tag: str, chat_key: str) -> tuple[str, str] | None:
    """(channel, message id) of a chat's root message in its destination, once posted."""
    ref = await redis.hget(keys.message_refs(tag), f"{chat_key}:root")
    if ref is None:
        return None
    _, channel, message = str(ref).split(":", 2)
    return channel, message


PARENT_WAIT_SECONDS = 1.5
"""How long a reply waits for the mapping of the message it answers (within Slack's 3 s ack)."""


async def parent_of(redis: Redis, tag: str, service: str, channel: str, message: str) -> str | None:
    """Like ``chat_of``, for a reply that may arrive while the message it answers is still being
    recorded (someone answered within milliseconds of the post): waits briefly rather than refuse it.
    Real time: the post in flight does not wait for test clocks."""
    for _ in range(int(PARENT_WAIT_SECONDS / 0.05)):
        found = await chat_of(redis, tag, service, channel, message)
        if found is not None:
            return found
        await asyncio.sleep(0.05)
    return None


async def chat_of(redis: Redis, tag: str, service: str, channel: str, message: str) -> str | None:
    """The chat whose root message this is (a thread's parent), or None."""
    found = await redis.hget(keys.message_refs(tag), f"ref:{service}:{channel}:{message}")
    return None if found is None else str(found)
