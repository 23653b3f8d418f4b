"""Wake-ups over Redis pub/sub: a schedule earlier than what sleeping workers know of, or a new
stored event, wakes the workers of every process at once instead of at their next poll."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from redis.asyncio import Redis
from redis.exceptions import RedisError

log = logging.getLogger(__name__)


async def listen_for_wakeups(
    redis: Redis, channel: str, on_message: Callable[[str | None], None], stopping: Callable[[], bool]
) -> None:
    """Calls ``on_message`` with each payload published on ``channel`` until ``stopping()``, and with
    None each time the subscription is (re)made, here or by redis-py on a new connection: something
    published meanwhile was missed.
    Wake-ups only shorten waits, so whatever breaks the subscription, it is made again."""
    # Polls with a short timeout rather than relying on task cancellation, which redis-py's
    # pub/sub reader can swallow while a read is in progress.
    made_again = _MadeAgain(on_message)
    while not stopping():
        pubsub = redis.pubsub(ignore_subscribe_messages=True)
        connection = None
        try:
            await pubsub.subscribe(channel)
            on_message(None)
            connection = pubsub.connection
            if connection is not None:
                connection.register_connect_callback(made_again.tell)
            while not stopping():
                message = await pubsub.get_message(timeout=0.25)
                if message is not None:
                    on_message(str(message["data"]))
        except Exception as exc:
            log.warning("wake-up channel %s lost, resubscribing: %r", channel, exc)
            await asyncio.sleep(1.0)
        finally:
            if connection is not None:  # it goes back to the pool, for other commands
                connection.deregister_connect_callback(made_again.tell)
            with contextlib.suppress(RedisError, OSError):
                # untyped in redis-py 8.1, typed from 8.2: both are supported (pyproject)
                await pubsub.aclose()  # type: ignore[no-untyped-call, unused-ignore]


class _MadeAgain:
    """redis-py makes a lost pub/sub connection again by itself, subscribing it again, and raises
    nothing: what was published meanwhile is lost without a word. Called after its own callback
    (the subscribing), this tells the listener as a subscription made again (redis-py keeps a
    connect callback as a weak reference to a method: the listener holds this object)."""

    def __init__(self, on_message: Callable[[str | None], None]) -> None:
        self.on_message = on_message

    def tell(self, connection: object) -> None:
        self.on_message(None)
