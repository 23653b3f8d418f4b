"""Where Redis Cluster asks for different calls: the rest of the bridge is the same on one server,
behind Sentinel, or on a cluster (every multi-key command and script stays inside one hash tag)."""

from __future__ import annotations

from typing import Any

from redis.asyncio.cluster import RedisCluster


def is_cluster(redis: Any) -> bool:
    return isinstance(redis, RedisCluster)
