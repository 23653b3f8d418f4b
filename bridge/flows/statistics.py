"""Response statistics over any period (A9), read from the archive: time to first reply (p50, p90)
for the store and for each agent, the share of chats answered inside every window, chats lost to
the window's timeout, and task orders processed before their deadline; per day on request."""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from bridge.archive.store import Archive
from bridge.config import Store
from bridge.i18n import t

PERIODS = {"today": 1, "7d": 7, "30d": 30}
"""The periods people ask for by name: today, and the last 7 or 30 days (today included)."""


def period_bounds(period: str, now: datetime, tz: ZoneInfo) -> tuple[datetime, datetime]:
    """[since, until) of a named period in the store's time zone; until is the end of today."""
    today = now.astimezone(tz).date()
    return days_bounds(today - timedelta(days=PERIODS[period] - 1), today, tz)


def days_bounds(first: date, last: date, tz: ZoneInfo) -> tuple[datetime, datetime]:
    """[since, until) of the days ``first`` to ``last``, both included, in the time zone ``tz``."""
    return day_start(first, tz), day_start(last + timedelta(days=1), tz)


def day_start(day: date, tz: ZoneInfo) -> datetime:
    """Midnight that begins ``day`` in the time zone ``tz``."""
    return datetime.combine(day, time(), tzinfo=tz)


@dataclass(frozen=True)
class Figures:
    chats: int
    first_reply_p50: float | None
    first_reply_p90: float | None
    in_window: float | None
    """Share of chats answered inside every window of them (None: no chat)."""
    lost: int
    """Chats closed by the window's timeout."""

    def as_dict(self) -> dict[str, Any]:
        return vars(self).copy()


def figures(chats: Iterable[dict[str, Any]]) -> Figures:
    rows = list(chats)
    waits = sorted(r["first_reply_seconds"] for r in rows if r["first_reply_seconds"] is not None)
    if len(waits) >= 2:
        deciles = statistics.quantiles(waits, n=10, method="inclusive")
        p50, p90 = statistics.median(waits), deciles[8]
    else:
        p50 = p90 = waits[0] if waits else None
    counted = [r for r in rows if r["status"] == "closed" or r["first_reply_seconds"] is not None]
    share = sum(1 for r in counted if r["in_window"]) / len(counted) if counted else None
    lost = sum(1 for r in rows if r["close_reason"] == "reply_timeout")
    return Figures(len(rows), p50, p90, share, lost)


@dataclass(frozen=True)
class Report:
    store: Figures
    agents: dict[str, Figures]
    days: dict[date, Figures]
    tasks_finished: int
    tasks_in_time: int

    def as_dict(self) -> dict[str, Any]:
        return {"store": self.store.as_dict(), "agents": {a: f.as_dict() for a, f in self.agents.items()},
                "days": {d.isoformat(): f.as_dict() for d, f in self.days.items()},
                "tasks_finished": self.tasks_finished, "tasks_processed_in_time": self.tasks_in_time}  # fmt: skip


async def report(archive: Archive, store: Store, since: datetime, until: datetime) -> Report:
    """The store's figures for chats opened, and task orders finished, in [since, until)."""
    tz = ZoneInfo(store.timezone)
    chats = await archive.chat_figures(store.id, since, until)
    by_agent: dict[str, list[dict[str, Any]]] = {}
    by_day: dict[date, list[dict[str, Any]]] = {}
    for row in chats:
        by_agent.setdefault(row["first_reply_by"] or row["assignee"], []).append(row)
        by_day.setdefault(row["opened_at"].astimezone(tz).date(), []).append(row)
    tasks = await archive.task_figures(store.id, since, until)
    processed = [r for r in tasks if r["status"] in ("resolved", "unresolvable")]
    in_time = sum(1 for r in processed if r["finished_at"] <= r["deadline_at"])
    return Report(
        figures(chats),
        {agent: figures(rows) for agent, rows in sorted(by_agent.items()) if agent},
        {day: figures(rows) for day, rows in sorted(by_day.items())},
        len(tasks),
        in_time,
    )


async def stats_text(archive: Archive, store: Store, period: str, now: datetime) -> str:
    """``/feige stats [today|7d|30d]``, ``/stats``: the store's line, a line per agent, and a line per
    day for the longer periods."""
    period = period if period in PERIODS else "today"
    since, until = period_bounds(period, now, ZoneInfo(store.timezone))
    found = await report(archive, store, since, until)
    return _text(store, t(store.locale, f"stats.period.{period}"), found, by_day=period != "today")


async def days_text(archive: Archive, store: Store, first: date, last: date) -> str:
    """``bridge stats --since D --until D``: as ``stats_text``, over those days (both included)."""
    found = await report(archive, store, *days_bounds(first, last, ZoneInfo(store.timezone)))
    named = t(store.locale, "stats.period.days", first=first.isoformat(), last=last.isoformat())
    return _text(store, first.isoformat() if first == last else named, found, by_day=first != last)


def _text(store: Store, period_name: str, found: Report, *, by_day: bool) -> str:
    loc = store.locale
    names = {a.id: a.name for a in store.agents}
    lines = [t(loc, "stats.title", store=store.name, period=period_name)]
    if not found.store.chats and not found.tasks_finished:
        return "\n".join([*lines, t(loc, "stats.none")])
    lines.append(t(loc, "stats.store", **_shown(loc, found.store), tasks_in_time=found.tasks_in_time,
                   tasks_finished=found.tasks_finished))  # fmt: skip
    for agent, agent_figures in found.agents.items():
        lines.append(t(loc, "stats.agent", agent=names.get(agent, agent), **_shown(loc, agent_figures)))
    if by_day:
        for day, day_figures in found.days.items():
            lines.append(t(loc, "stats.day", day=day.strftime("%m-%d"), **_shown(loc, day_figures)))
    return "\n".join(lines)


def _shown(locale: str, f: Figures) -> dict[str, Any]:
    def seconds(value: float | None) -> str:
        return t(locale, "stats.seconds", n=f"{value:.1f}") if value is not None else "—"

    share = f"{f.in_window:.0%}" if f.in_window is not None else "—"
    return {"chats": f.chats, "p50": seconds(f.first_reply_p50), "p90": seconds(f.first_reply_p90),
            "in_window": share, "lost": f.lost}  # fmt: skip
