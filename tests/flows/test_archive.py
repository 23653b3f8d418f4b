"""B10: a finished task order, with its whole processing log, is kept in the archive (SQLite here,
the embedded default) by a durable step of the flow: once, however often the step runs."""

from __future__ import annotations

from pathlib import Path

from redis.asyncio import Redis

from bridge.archive.store import Archive
from bridge.engine.clock import ManualClock
from bridge.engine.outbox import OutboxJob
from bridge.flows import jobs
from tests.conftest import start_stack


async def test_a_finished_task_order_is_archived_once_with_its_log(
    redis: Redis, redis_url: str, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'archive.sqlite3'}"
    stack = await start_stack(redis_url, clock=ManualClock(), run_workers=False, archive_url=url)
    try:
        tid = await stack.sandbox.create_task_order("1001", "c-7001")
        await stack.settle()
        await stack.slack.user_message("U0MAIN1001", "C0TASKS1001", "已联系快递",
                                       thread_ts=stack.slack.channel("C0TASKS1001")[-1].ts)  # fmt: skip
        await stack.settle()
        archive = stack.bridge.archive
        assert archive is not None and await archive.tasks() == [], "a live task order is not archived"
        data = {"shop_id": "1001", "task_id": tid, "result": "resolved", "solution": "已补发，顺丰 SF123456789",
                "evidence": [], "operator": {"id": "main-1001", "name": "店长 Li"},
                "processed_at": "2026-11-23T10:00:00+08:00"}  # fmt: skip
        await stack.sandbox.push("store", "1001", [("task_order_processed", data)])
        await stack.settle()
        again = OutboxJob(f"archive:{tid}", jobs.ARCHIVE_TASK, {"store": "1001", "task_id": tid})
        await stack.bridge.tasks.on_archive_job(again)  # a retry after a crash: nothing twice
    finally:
        await stack.stop()
    reopened = Archive(url)  # what a later process (a list, an export) reads
    try:
        [row] = await reopened.tasks(store_id="1001")
    finally:
        await reopened.close()
    assert (row["task_id"], row["status"], row["result"], row["solution"]) == (
        tid,
        "resolved",
        "resolved",
        "已补发，顺丰 SF123456789",
    )
    assert (row["processed_by"], row["processed_by_id"], row["comments_merchant"]) == ("店长 Li", "main-1001", 1)
    assert [(e["type"], e["operator_id"]) for e in row["log"]] == [
        ("created", "c-7001"),
        ("comment_merchant", "main-1001"),
        ("resolved", "main-1001"),
    ]
    assert row["data"]["issue_type"] == "物流问题 Logistics" and row["finished_at"] is not None
