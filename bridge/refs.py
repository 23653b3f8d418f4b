"""Where the bridge's messages landed in a destination, and back: a chat's root message (to update it
and to thread under it), and from a thread in a destination to its chat (to route a reply)."""

from __future__ import annotations

from redis.asyncio import Redis

from bridge import keys


async def save_root(redis: Redis, tag: str, chat_key: str, service: str, channel: str, message: str) -> None:
    ref = f"{service}:{channel}:{message}"
    await redis.hset(keys.message_refs(tag), mapping={f"{chat_key}:root": ref, f"ref:{ref}": chat_key})


async def root_of(redis: Redis, tag: str, chat_key: str) -> tuple[str, str] | None:
    """(channel, message id) of a chat's root message in its destination, once posted."""
    ref = await redis.hget(keys.message_refs(tag), f"{chat_key}:root")
    if ref is None:
        return None
    _, channel, message = str(ref).split(":", 2)
    return channel, message


async def chat_of(redis: Redis, tag: str, service: str, channel: str, message: str) -> str | None:
    """The chat whose root message this is (a thread's parent), or None."""
    found = await redis.hget(keys.message_refs(tag), f"ref:{service}:{channel}:{message}")
    return None if found is None else str(found)
