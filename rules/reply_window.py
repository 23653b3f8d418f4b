"""A4, A5 — the reply window and its reminders.

The window starts at a platform message awaiting an answer (unless one is already running) and stops
at the merchant's reply; the next platform message starts it again. Reminders fall at fixed offsets
before the close (default 60 s and 30 s left); an escalation to the other designated agents may be
added. At the close the chat is lost (A6).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Literal

WINDOW_SECONDS = 120
"""A4: the platform gives the merchant 2–3 minutes; the bridge closes at the earliest, 2."""
WINDOW_RANGE = (60, 180)
"""A4: the windows a store may configure: within the platform's 2–3 minutes, or shorter to be safe."""
SANDBOX_MIN_SECONDS = 1
"""A4: a sandbox store (demos, trials, acceptance runs) may use any window from this up."""


def window_allowed(seconds: int, sandbox: bool) -> tuple[int, int] | None:
    """None when a store may use a window of ``seconds``, else the range it must be in."""
    low, high = (SANDBOX_MIN_SECONDS if sandbox else WINDOW_RANGE[0]), WINDOW_RANGE[1]
    return None if low <= seconds <= high else (low, high)


REMINDERS_BEFORE = (60, 30)
"""A5: reminders this many seconds before the close."""


def window_start(running_since: float | None, message_at: float, awaiting_reply: bool) -> float | None:
    """When the window that is running after this platform message started (None: no window)."""
    if running_since is not None:
        return running_since
    return message_at if awaiting_reply else None


@dataclass(frozen=True)
class WindowStep:
    kind: Literal["remind", "escalate", "close"]
    at: float
    seconds_left: int
    name: str
    """Stable name of the step (``remind-60``, ``escalate-30``, ``close``), to do each only once."""


def window_steps(
    started_at: float, seconds: float, reminders_before: Sequence[int], escalate_before: int | None = None
) -> list[WindowStep]:
    """Every step of one window, in time order."""
    deadline = started_at + seconds
    steps = [WindowStep("remind", deadline - b, b, f"remind-{b}") for b in reminders_before if 0 < b < seconds]
    if escalate_before is not None and 0 < escalate_before < seconds:
        steps.append(WindowStep("escalate", deadline - escalate_before, escalate_before, f"escalate-{escalate_before}"))
    steps.append(WindowStep("close", deadline, 0, "close"))
    return sorted(steps, key=lambda s: (s.at, s.kind == "close"))


def due_steps(steps: Sequence[WindowStep], now: float, done: Collection[str]) -> list[WindowStep]:
    """The steps to take now. Once the close is due only the close is taken: a reminder after the
    window has run out helps nobody."""
    due = [s for s in steps if s.at <= now and s.name not in done]
    closing = [s for s in due if s.kind == "close"]
    return closing or due


def next_step_at(steps: Sequence[WindowStep], done: Collection[str]) -> float | None:
    return min((s.at for s in steps if s.name not in done), default=None)
