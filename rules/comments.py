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


def comment_content_refusal(
    *, in_task_thread: bool, has_text: bool, has_files: bool, files_kept_as_evidence: bool
) -> Literal["outside", "not_text", "files_not_sent", "files_kept"] | None:
    """What of a message in a task orders' place does not become a comment, or None when all of it
    does. A comment is text written in a task order's thread (the platform takes nothing else). A
    file the merchant shares there is kept as evidence for processing (B7), and not shown to the
    creator; anything else that is not text goes nowhere. Its author is told either way, rather than
    left thinking the other side has it."""
    if not in_task_thread:
        return "outside"
    if has_files:
        if files_kept_as_evidence:
            return "files_kept"
        return "files_not_sent" if has_text else "not_text"
    return None if has_text else "not_text"
