"""Backpressure, not failure: while Redis is slow or down a webhook answers 503 with Retry-After,
so the sender (the platform, Slack, Telegram) delivers again later; never a 500, and never an
acknowledgement of something that was not stored."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from aiohttp import web
from redis.exceptions import RedisError

log = logging.getLogger(__name__)

RETRY_AFTER_SECONDS = 5
"""What a 503 asks the sender to wait; Redis failover (Sentinel) takes about this long."""

UNAVAILABLE = (RedisError, ConnectionError, TimeoutError)
"""What a webhook may meet while Redis is slow or down (a pool with no free connection included)."""


def unavailable(reason: str) -> web.Response:
    return web.json_response(
        {"error": f"temporarily unavailable, deliver again later: {reason}"},
        status=503,
        headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
    )


async def answer_503_while_redis_is_unavailable(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Runs a destination's webhook handler. The platform's own intake, health and metrics handle
    Redis failing themselves, so this wraps only the routes that need it rather than every request
    as a middleware (which cost each platform push a few microseconds)."""
    try:
        return await handler(request)
    except UNAVAILABLE as exc:
        log.warning("%s %s: Redis unavailable, answered 503: %s", request.method, request.path, exc)
        return unavailable("storage unavailable")
