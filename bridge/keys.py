"""Every Redis key the bridge uses, with its type and lifetime.

Cluster layout: all keys of one store share the hash tag ``{store:<id>}`` (one creator:
``{creator:<id>}``) so a Lua script touching several of them runs on one node. The timer index is
the one structure shared by all stores; it is split into ``shards`` hash-tagged ``{timers:<n>}`` so
it can spread over a cluster, and a timer lives in the shard its key hashes to.

A timer is identified by a short *timer key*, ``<kind>:<tag>:<id>`` (for example
``window:{store:1001}:conv-9``). The kind selects the handler; the rest names the domain object whose
state lives in the store's own keys. Keeping the timer this small is what holds a pending timer near
150 bytes of Redis memory (bench/timers.py measures it).
"""

from __future__ import annotations

import zlib

WAKE_CHANNEL = "timers:wake"
"""Pub/sub channel. Payload: the due time (ms) of a timer scheduled earlier than its shard's head,
so every sleeping worker wakes early. Nothing is stored."""


def store_tag(store_id: str) -> str:
    return "{store:" + store_id + "}"


def creator_tag(creator_id: str) -> str:
    return "{creator:" + creator_id + "}"


def timer_shard(timer_key: str, shards: int) -> int:
    return zlib.crc32(timer_key.encode()) % shards


def timers_due(shard: int) -> str:
    """ZSET member=timer key, score=due time (epoch ms). A member stays until claimed or cancelled."""
    return f"timers:{{{shard}}}:due"


def timers_leased(shard: int) -> str:
    """ZSET member=timer key, score=lease expiry (epoch ms). A member stays while a worker runs its
    handler; an expired score means the worker died and the timer is claimed again."""
    return f"timers:{{{shard}}}:leased"


def timers_payload(shard: int) -> str:
    """HASH field=timer key, value=optional payload. A field lives exactly as long as its timer."""
    return f"timers:{{{shard}}}:payload"


def timers_attempts(shard: int) -> str:
    """HASH field=timer key, value=failed handler runs so far. Removed on success or when dead."""
    return f"timers:{{{shard}}}:attempts"


def timers_dead(shard: int) -> str:
    """ZSET member=timer key, score=when it was given up (epoch ms), after its handler failed
    ``max_attempts`` times. Kept until an operator looks; never fired again by itself."""
    return f"timers:{{{shard}}}:dead"


def demo_timer(store_id: str, name: str) -> str:
    """Timer key of the demo's heartbeat timers (kind ``demo``)."""
    return f"demo:{store_tag(store_id)}:{name}"
