"""B5 — comments: until the task order is processed or times out, each side may add at most 10."""

from __future__ import annotations

from typing import Literal

COMMENTS_PER_SIDE = 10


def comment_refusal(status: str, side_count: int, limit: int = COMMENTS_PER_SIDE) -> Literal["closed", "limit"] | None:
    """Why one more comment from a side may not be added, or None when it may. (The event flow
    counts in one atomic script, which it hands ``limit``.)"""
    if status != "pending":
        return "closed"
    if side_count >= limit:
        return "limit"
    return None
