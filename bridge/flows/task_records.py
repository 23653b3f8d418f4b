"""What people look up about task orders (B4, B10): the processing log, lists by status (a
store's, a creator's across stores) and the export. Reads only; the flow writes."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import orjson
from redis.asyncio import Redis

from bridge.config import BridgeConfig, Creator, Store
from bridge.engine import keys
from bridge.flows.domain import TaskOrderCreated
from bridge.flows.views import read_hash
from bridge.i18n import t

STATUSES = ("pending", "resolved", "unresolvable", "timed_out")


class TaskRecords:
    def __init__(self, redis: Redis, config: Callable[[], BridgeConfig]) -> None:
        self.redis = redis
        self._config = config

    @property
    def config(self) -> BridgeConfig:
        cfg: BridgeConfig = self._config()
        return cfg

    async def _task(self, tag: str, tid: str) -> dict[str, str]:
        return await read_hash(self.redis, keys.task(tag, tid))

    async def log_entries(self, tag: str, tid: str) -> list[dict[str, Any]]:
        return [orjson.loads(raw) for raw in await self.redis.lrange(keys.task_log(tag, tid), 0, -1)]

    async def log_text(self, store: Store, tid: str, locale: str) -> str:
        tz = ZoneInfo(store.timezone)
        lines = [t(locale, "task.log.title", task_id=tid)]
        for e in await self.log_entries(keys.store_tag(store.id), tid):
            at = datetime.fromtimestamp(e["at"], tz).strftime("%m-%d %H:%M:%S")
            side = t(locale, f"task.side.{e['side']}")
            who = t(locale, "task.log.operator", name=e["operator"], side=side)
            operator = side if e["operator"] in ("bridge", "platform") else who
            lines.append(t(locale, "task.log.line", at=at, type=t(locale, f"task.log.type.{e['type']}"),
                           operator=operator))  # fmt: skip
        return "\n".join(lines)

    async def list_text(self, store: Store, status: str, locale: str, page: int = 1, per_page: int = 20) -> str:
        """Task orders of one status, newest first, ``per_page`` a page."""
        status = status if status in STATUSES else "all"
        tag = keys.store_tag(store.id)
        start = (max(1, page) - 1) * per_page
        ids = await self.redis.zrevrange(keys.tasks_by_status(tag, status), start, start + per_page - 1)
        total = await self.redis.zcard(keys.tasks_by_status(tag, status))
        rows = [(str(tid), await self._task(tag, str(tid))) for tid in ids]
        return _listing(locale, ZoneInfo(store.timezone), status, rows, total, page, per_page)

    async def creator_list_text(self, creator: Creator, status: str, page: int = 1, per_page: int = 20) -> str:
        """A creator's task orders (across stores) of one status, newest first."""
        status = status if status in STATUSES else "all"
        locale = creator.locale
        tz = ZoneInfo(creator.timezone)
        if not await self.redis.exists(keys.creator_tasks(creator.id)):
            await self._index_creator(creator.id)
        rows = []
        for member in await self.redis.zrevrange(keys.creator_tasks(creator.id), 0, -1):
            store_id, _, tid = str(member).partition(":")
            task = await self._task(keys.store_tag(store_id), tid)
            if task and (status == "all" or task.get("status") == status):
                rows.append((tid, task))
        start = (max(1, page) - 1) * per_page
        return _listing(locale, tz, status, rows[start : start + per_page], len(rows), page, per_page)

    async def _index_creator(self, creator_id: str) -> None:
        """Builds a creator's index from the stores' task orders: for task orders stored before the
        index existed (it is kept from creation on)."""
        for store in self.config.stores:
            tag = keys.store_tag(store.id)
            entries: list[Any] = await self.redis.zrange(keys.tasks_by_status(tag, "all"), 0, -1, withscores=True)
            for tid, created in entries:
                if await self.redis.hget(keys.task(tag, str(tid)), "creator") == creator_id:
                    await self.redis.zadd(keys.creator_tasks(creator_id), {f"{store.id}:{tid!s}": float(created)})

    async def export(self, store: Store, status: str) -> list[dict[str, Any]]:
        """Every task order of one status (or all), with what a person looks up later: the order as
        the platform sent it, status, deadline, result, solution, who processed it and when, comment
        counts and the whole processing log."""
        tag, tz = keys.store_tag(store.id), ZoneInfo(store.timezone)
        rows = []
        for tid in await self.redis.zrange(keys.tasks_by_status(tag, status if status in STATUSES else "all"), 0, -1):
            task = await self._task(tag, str(tid))
            finished = task.get("finished_at")
            rows.append(
                orjson.loads(task["data"])
                | outcome(task)
                | {
                    "deadline_at": datetime.fromtimestamp(float(task["deadline"]), tz).isoformat(),
                    "finished_at": datetime.fromtimestamp(float(finished), tz).isoformat() if finished else "",
                    "log": [
                        e | {"at": datetime.fromtimestamp(e["at"], tz).isoformat()}
                        for e in await self.log_entries(tag, str(tid))
                    ],
                }
            )
        return rows


def _listing(
    locale: str, tz: ZoneInfo, status: str, rows: list[tuple[str, dict[str, str]]], total: int, page: int, per_page: int
) -> str:
    """One page of a task-order list (B10): a title with the count and pages, then a line each."""
    pages = max(1, -(-total // per_page))
    label = status_name(locale, status) if status != "all" else t(locale, "task.status.all")
    lines = [t(locale, "task.list.title", status=label, count=total, page=min(max(1, page), pages), pages=pages)]
    for tid, task in rows:
        order = TaskOrderCreated.model_validate_json(task["data"])
        due = datetime.fromtimestamp(float(task["deadline"]), tz).strftime("%m-%d %H:%M")
        state = status_name(locale, task["status"])
        lines.append(t(locale, "task.list.line", task_id=tid, issue_type=order.issue_type, status=state,
                       order_id=order.order_id, deadline=due))  # fmt: skip
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
