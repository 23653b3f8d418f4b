"""What people look up about task orders (B4, B10): the processing log, lists by status (a
store's, a creator's across stores) and the export. Reads only; the flow writes."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import orjson
from redis.asyncio import Redis

from bridge.archive.store import Archive
from bridge.config import BridgeConfig, Creator, Store
from bridge.engine import keys
from bridge.i18n import bare_name, named, t

STATUSES = ("pending", "resolved", "unresolvable", "timed_out")


class TaskRecords:
    """Live task orders are read in Redis (the log of one being worked on); lists and exports read
    the archive, which has every task order within moments of each change, finished ones for good."""

    def __init__(self, redis: Redis, config: Callable[[], BridgeConfig], archive: Archive) -> None:
        self.redis = redis
        self._config = config
        self.archive = archive

    @property
    def config(self) -> BridgeConfig:
        cfg: BridgeConfig = self._config()
        return cfg

    async def log_entries(self, tag: str, tid: str) -> list[dict[str, Any]]:
        return [orjson.loads(raw) for raw in await self.redis.lrange(keys.task_log(tag, tid), 0, -1)]

    async def log_text(self, store: Store, tid: str, locale: str) -> str:
        tz = ZoneInfo(store.timezone)
        lines = [t(locale, "task.log.title", task_id=tid)]
        entries = await self.log_entries(keys.store_tag(store.id), tid)
        if not entries:  # finished long ago: its state left Redis, the archive has it
            archived = await self.archive.tasks(store.id, task_id=tid)
            entries = [e | {"at": e["at"].timestamp()} for row in archived for e in row["log"]]
        for e in entries:
            at = datetime.fromtimestamp(e["at"], tz).strftime("%m-%d %H:%M:%S")
            side = t(locale, f"task.side.{e['side']}")
            who = t(locale, "task.log.operator", name=e["operator"], side=side)
            operator = side if e["operator"] in ("bridge", "platform") else who
            lines.append(t(locale, "task.log.line", at=at, type=t(locale, f"task.log.type.{e['type']}"),
                           operator=operator))  # fmt: skip
        return "\n".join(lines)

    async def list_text(self, store: Store, status: str, locale: str, page: int = 1, per_page: int = 20) -> str:
        """Task orders of one status (one of ``LIST_STATUSES``), newest first, ``per_page`` a page."""
        wanted = None if status == "all" else status
        total = await self.archive.count_tasks(store.id, wanted)
        page = min(max(1, page), _pages(total, per_page))
        rows = await self.archive.tasks(store.id, wanted, limit=per_page, offset=(page - 1) * per_page, details=False)
        return _listing(locale, ZoneInfo(store.timezone), status, rows, total, page, per_page)

    async def creator_list_text(self, creator: Creator, status: str, page: int = 1, per_page: int = 20) -> str:
        """A creator's task orders (across stores) of one status (one of ``LIST_STATUSES``), newest first."""
        wanted = None if status == "all" else status
        total = await self.archive.count_tasks(None, wanted, creator_id=creator.id)
        page = min(max(1, page), _pages(total, per_page))
        rows = await self.archive.tasks(None, wanted, creator_id=creator.id, limit=per_page,
                                        offset=(page - 1) * per_page, details=False)  # fmt: skip
        return _listing(creator.locale, ZoneInfo(creator.timezone), status, rows, total, page, per_page)


def _pages(total: int, per_page: int) -> int:
    return max(1, -(-total // per_page))


def _listing(
    locale: str, tz: ZoneInfo, status: str, rows: list[dict[str, Any]], total: int, page: int, per_page: int
) -> str:
    """One page of a task-order list (B10): a title with the count and pages, then a line each."""
    label = status_name(locale, status) if status != "all" else t(locale, "task.status.all")
    lines = [t(locale, "task.list.title", status=label, count=total, page=page, pages=_pages(total, per_page))]
    for task in rows:
        due = task["deadline_at"].astimezone(tz).strftime("%m-%d %H:%M")
        state = status_name(locale, task["status"])
        lines.append(t(locale, "task.list.line", task_id=task["task_id"], issue_type=task["issue_type"],
                       status=state, order_id=task["order_id"], deadline=due))  # fmt: skip
    if not rows:
        lines.append(t(locale, "task.list.none"))
    return "\n".join(lines)


def outcome(task: dict[str, str]) -> dict[str, Any]:
    """What became of a task order, from its state: status, result, solution, who processed it, and
    the comments of each side (the export and the archive keep the same fields)."""
    status = task["status"]
    return {
        "status": status,
        "result": status if status in ("resolved", "unresolvable") else "",
        "solution": task.get("solution", ""),
        "processed_by": task.get("operator", ""),
        "processed_by_id": task.get("operator_id", ""),
        "comments_merchant": int(task.get("comments:merchant", 0)),
        "comments_creator": int(task.get("comments:creator", 0)),
    }


def status_name(locale: str, status: str) -> str:
    """``task.status.*`` without its deadline part: ⏳ 待处理, ✅ 已解决, …"""
    return t(locale, f"task.status.{status}", deadline="").split(" · ")[0]


LIST_STATUSES = (*STATUSES, "all")


def list_status_name(locale: str, status: str) -> str:
    """A status a list can show (``all`` too), as people read it."""
    return t(locale, "task.status.all") if status == "all" else status_name(locale, status)


def list_status_words(locale: str) -> str:
    """The statuses a list can be asked for, as they are written after ``/tasks``."""
    return "|".join(bare_name(list_status_name(locale, status)) for status in LIST_STATUSES)


def status_from_words(words: str) -> str | None:
    """The list status someone asked for: its id (``timed_out``) or its name in either language
    (已解决, Cannot be resolved), whatever the case, spacing or emoji; None when it is none of them."""
    return named(words, LIST_STATUSES, list_status_name)
