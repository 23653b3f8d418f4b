"""A3 — routing by saturation: a new chat goes to the designated agent with the fewest open platform
chats, online or not; ties go to the agent listed first. (Article: a=1, b=2, c=3 open → a.)"""

from __future__ import annotations

from collections.abc import Mapping, Sequence


def route_by_saturation(candidates: Sequence[str], open_chats: Mapping[str, int]) -> str | None:
    """The agent to assign, or None when there is no candidate. ``candidates`` are in config order."""
    best: str | None = None
    for agent in candidates:
        if best is None or open_chats.get(agent, 0) < open_chats.get(best, 0):
            best = agent
    return best
