"""What people take away from the archive (B10, A9): every task order or chat of a store, with
every field kept, times in the store's zone. ``bridge export`` writes them as JSON lines, CSV or Excel."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from bridge.archive.store import Archive
from bridge.config import Store
from bridge.flows.task_records import STATUSES, outcome

_OUTCOME_FIELDS = tuple(outcome({"status": ""}))


async def task_export(
    archive: Archive, store: Store, status: str, since: datetime | None = None, until: datetime | None = None
) -> list[dict[str, Any]]:
    """Every task order of one status (or all) created in [since, until), oldest first: the order as
    the platform sent it, status, deadline and how it was set, result, solution, who processed it and
    when, the comments of both sides, the evidence and the whole processing log."""
    tz = ZoneInfo(store.timezone)
    wanted = status if status in STATUSES else None
    rows = []
    for task in reversed(await archive.tasks(store.id, wanted, since=since, until=until)):
        rows.append(
            task["data"]
            | {k: task[k] for k in _OUTCOME_FIELDS}
            | {
                "created_at": _local(task["created_at"], tz),  # the platform's own offset: this store's zone
                "deadline_at": _local(task["deadline_at"], tz),
                "deadline_basis": task["deadline_basis"],
                "finished_at": _local(task["finished_at"], tz),
                "comments": [_without_ids(c) | {"at": _local(c["at"], tz)} for c in task["comments"]],
                "evidence": [{k: f[k] for k in ("name", "kind", "size")} for f in task["evidence"]],
                "log": [{"id": e["entry_id"], "at": _local(e["at"], tz), "type": e["type"], "side": e["side"],
                         "operator": e["operator"], "operator_id": e["operator_id"]} for e in task["log"]],
            }
        )  # fmt: skip
    return rows


async def chat_export(
    archive: Archive, store: Store, status: str | None, since: datetime | None = None, until: datetime | None = None
) -> list[dict[str, Any]]:
    """Every chat (open or closed) opened in [since, until), oldest first, with its messages both ways."""
    tz = ZoneInfo(store.timezone)
    rows = []
    for chat in await archive.chats(store.id, since=since, until=until, status=status):
        row = _without_ids(chat, ("store_id", "snapshot_at"))
        for moment in ("opened_at", "first_reply_at", "closed_at"):
            row[moment] = _local(chat[moment], tz)
        row["messages"] = [_without_ids(m, ("store_id", "conversation_id")) | {"at": _local(m["at"], tz)}
                           for m in chat["messages"]]  # fmt: skip
        rows.append(row)
    return rows


def _local(at: datetime | None, tz: ZoneInfo) -> str:
    return at.astimezone(tz).isoformat() if at is not None else ""


def _without_ids(row: dict[str, Any], ids: tuple[str, ...] = ("store_id", "task_id")) -> dict[str, Any]:
    return {k: v for k, v in row.items() if k not in ids}
