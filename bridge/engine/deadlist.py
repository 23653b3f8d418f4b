"""What the bridge gave up on, kept for an operator to list, replay or drop (PRODUCT D5).

Two kinds use it: outbound calls the outbox could not deliver while they mattered (dead letters),
and stored events whose handler failed every attempt (dead events). Each is a list per endpoint,
oldest first, with a hash of the ids on it."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

# KEYS: the list, the ids on it. ARGV: id, entry. Returns the list's length, 0 when the id was on it.
_APPEND_ONCE = """
if redis.call('HSETNX', KEYS[2], ARGV[1], 1) == 0 then return 0 end
return redis.call('RPUSH', KEYS[1], ARGV[2])
"""


@dataclass
class DeadList:
    """Entries (JSON objects) on a list, each once by its id: the step that gives up on something
    may die before it is done with it, run again and give up again, and a doubled entry would be
    replayed twice. Taking an entry off (a replay, a drop) takes its id out too, so the same thing
    may be given up on again."""

    redis: Redis
    entries_key: Callable[[str], str]
    """The endpoint's list (by its tag)."""
    ids_key: Callable[[str], str]
    """The ids on it (HASH id → 1)."""
    id_field: str
    """The entry's field that holds its id."""

    def __post_init__(self) -> None:
        self._append_once = self.redis.register_script(_APPEND_ONCE)

    async def put(self, tag: str, entry: dict[str, Any]) -> bool:
        """Adds ``entry``; False when it was on the list already."""
        raw = json.dumps(entry, ensure_ascii=False)
        keys = [self.entries_key(tag), self.ids_key(tag)]
        return bool(int(await self._append_once(keys=keys, args=[entry[self.id_field], raw])))

    async def read(self, tag: str) -> list[dict[str, Any]]:
        """The endpoint's entries, oldest first."""
        return [entry for _, entry in await self.matching(tag, None)]

    async def matching(self, tag: str, entry_id: str | None) -> list[tuple[str, dict[str, Any]]]:
        """(as stored, decoded) of the entries with ``entry_id`` (all with None), oldest first."""
        found = [(str(raw), json.loads(raw)) for raw in await self.redis.lrange(self.entries_key(tag), 0, -1)]
        return [(raw, entry) for raw, entry in found if entry_id is None or entry[self.id_field] == entry_id]

    async def drop(self, tag: str, entry_id: str | None) -> int:
        """Forgets the entries with ``entry_id`` (all with None); returns how many."""
        if entry_id is None:
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.llen(self.entries_key(tag))
                pipe.delete(self.entries_key(tag), self.ids_key(tag))
                count, _ = await pipe.execute()
            return int(count)
        dropped = 0
        for raw, _ in await self.matching(tag, entry_id):
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.lrem(self.entries_key(tag), 1, raw)
                pipe.hdel(self.ids_key(tag), entry_id)
                removed, _ = await pipe.execute()
            dropped += int(removed)
        return dropped
