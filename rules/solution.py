"""B8 — processing is manual, and empty, placeholder or irrelevant answers are what the platform
penalises: an empty solution is refused, a placeholder or suspiciously short one is warned about and
must be confirmed."""

from __future__ import annotations

import re
from typing import Literal

MIN_SOLUTION_CHARS = 8
PLACEHOLDERS = frozenset(
    {"ok", "okay", "1", "11", "111", "done", "fixed", "yes", "no", "test", "已处理", "处理了", "已解决", "解决了",
     "好", "好的", "收到", "嗯", "是", "无", "没有", "已完成", "完成", ".", "。", "-", "/"}
)  # fmt: skip


def solution_problem(text: str) -> Literal["empty", "placeholder", "short"] | None:
    cleaned = re.sub(r"[\s!！.。,，~～]+$", "", text.strip())
    if not cleaned:
        return "empty"
    if cleaned.lower() in PLACEHOLDERS:
        return "placeholder"
    if len(cleaned) < MIN_SOLUTION_CHARS:
        return "short"
    return None


def solution_refusal(text: str, confirmed: bool) -> Literal["empty", "unconfirmed"] | None:
    """Whether a solution may go, however it was written (a modal, a guided conversation): an empty
    one never; a placeholder or short one only once the person confirmed it is meant."""
    problem = solution_problem(text)
    if problem == "empty":
        return "empty"
    return "unconfirmed" if problem is not None and not confirmed else None
