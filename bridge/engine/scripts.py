"""Several Lua scripts in one round trip, as one step of the bridge makes them together."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import NoScriptError

from bridge.engine.cluster import is_cluster

ScriptCall = tuple[Any, list[Any], list[Any]]
"""A registered script (``Redis.register_script``), its KEYS and its ARGV."""


async def in_one_call(
    redis: Redis, calls: Sequence[ScriptCall], *, read_after: str | None = None
) -> tuple[list[Any], Any]:
    """Runs ``calls`` in order in one pipeline on a single Redis and returns their answers; with
    ``read_after``, that hash is read after them in the same round trip (second value; None
    without). A script Redis forgot (a restart) is loaded and run again, and the hash then read
    again, after it. Scripts go as EVALSHA, not as script objects: a pipeline with script objects
    first asks Redis whether it has them, a round trip of its own. On a cluster, whose pipelines
    refuse scripts, and for a lone script, they run one after another, each a call of its own."""
    if is_cluster(redis) or (len(calls) == 1 and read_after is None):
        answers = [await script(keys=keys, args=args) for script, keys, args in calls]
        return answers, None if read_after is None else await redis.hgetall(read_after)
    async with redis.pipeline(transaction=False) as pipe:
        for script, keys, args in calls:
            pipe.evalsha(script.sha, len(keys), *keys, *args)
        if read_after is not None:
            pipe.hgetall(read_after)
        results = await pipe.execute(raise_on_error=False)
    read = results.pop() if read_after is not None else None
    forgotten = False
    for i, ((script, keys, args), result) in enumerate(zip(calls, results, strict=True)):
        if isinstance(result, NoScriptError):
            results[i] = await script(keys=keys, args=args)
            forgotten = True
        elif isinstance(result, Exception):
            raise result
    if isinstance(read, Exception):
        raise read
    if forgotten and read_after is not None:  # read before those scripts had run: read again
        read = await redis.hgetall(read_after)
    return list(results), read
