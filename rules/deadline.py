"""B6 — a task order's deadline.

24 hours after creation. A moment after 21:00 moves to 09:00 the next morning, a moment before
09:00 to 09:00 that morning, in the store's time zone; exactly 21:00:00 stays (our reading of the
article's "顺延至次日09:00后"). The other reading, a per-store option (``carry_over``): the part of the
24 hours that falls after 21:00 is carried over and resumes at 09:00. Quiet hours are configurable.
When the platform sends its own deadline, that one wins.
"""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

NightRule = Literal["move_to_morning", "carry_over"]
DEADLINE_HOURS = 24
QUIET_START, QUIET_END = time(21, 0), time(9, 0)
DIGEST_AT = time(8, 30)
"""Each store's morning digest of the task orders due that day (the night rule piles them up at 09:00)."""
REMINDERS_BEFORE = (7200, 1800)
"""Reminders this many seconds before a task order's deadline (2 h and 30 min)."""


def in_quiet_hours(moment: datetime, start: time, end: time) -> bool:
    """True strictly after ``start`` and strictly before ``end`` (local times; may span midnight)."""
    t = moment.timetz().replace(tzinfo=None)
    if start > end:  # spans midnight, e.g. 21:00–09:00
        return t > start or t < end
    return start < t < end


def _quiet_end_after(moment: datetime, start: time, end: time, tz: ZoneInfo) -> datetime:
    """The end of the quiet period ``moment`` is in."""
    day = moment.date()
    t = moment.timetz().replace(tzinfo=None)
    if start > end and t > start:
        day += timedelta(days=1)
    return datetime.combine(day, end, tzinfo=tz)


def _quiet_start_before(moment: datetime, start: time, end: time, tz: ZoneInfo) -> datetime:
    """The start of the quiet period ``moment`` is in."""
    day = moment.date()
    t = moment.timetz().replace(tzinfo=None)
    if start > end and t < end:
        day -= timedelta(days=1)
    return datetime.combine(day, start, tzinfo=tz)


def task_deadline(
    created_at: datetime,
    tz: ZoneInfo,
    *,
    hours: int = DEADLINE_HOURS,
    quiet_start: time = QUIET_START,
    quiet_end: time = QUIET_END,
    night_rule: NightRule = "move_to_morning",
    platform_deadline: datetime | None = None,
) -> datetime:
    if platform_deadline is not None:
        return platform_deadline
    # Spans of time are reckoned in UTC: Python subtracts and adds datetimes of one zone by their wall
    # clocks, which is an hour off across a daylight-saving change in the night.
    due = (created_at.astimezone(UTC) + timedelta(hours=hours)).astimezone(tz)
    if not in_quiet_hours(due, quiet_start, quiet_end):
        return due
    morning = _quiet_end_after(due, quiet_start, quiet_end, tz)
    if night_rule == "move_to_morning":
        return morning
    carried = due.astimezone(UTC) - _quiet_start_before(due, quiet_start, quiet_end, tz).astimezone(UTC)
    return (morning.astimezone(UTC) + carried).astimezone(tz)


DeadlineBasis = Literal["platform", "hours", "moved_out_of_night"]


def deadline_basis(created_at: float, deadline: float, hours: int, *, platform_set: bool) -> DeadlineBasis:
    """How a task order's deadline was set (B6), kept with it in the archive: by the platform, as
    ``hours`` after creation, or moved because that fell in the night."""
    if platform_set:
        return "platform"
    return "hours" if abs(deadline - created_at - hours * 3600) < 1 else "moved_out_of_night"


def next_digest_at(now: datetime, tz: ZoneInfo, at: time = DIGEST_AT) -> datetime:
    """The next morning digest after ``now``: today at ``at`` (the store's time) if that is still to
    come, else tomorrow's."""
    local = now.astimezone(tz)
    today = datetime.combine(local.date(), at, tzinfo=tz)
    return today if today > local else datetime.combine(local.date() + timedelta(days=1), at, tzinfo=tz)


def due_today(deadline: datetime, today_start: datetime) -> bool:
    """A task order's deadline falls on the day that starts at ``today_start`` (local midnight)."""
    return today_start <= deadline < today_start + timedelta(days=1)
