"""The archive (B10, A9), on both back ends (a SQLite file, a real PostgreSQL server): chats and task
orders are copied in moments after each change, by a durable step (once, however often it runs);
lists, exports and statistics read it; finished work leaves Redis after its grace period; and an
archive that is down delays copies without holding up live work."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import json
import os
import sys
from collections.abc import AsyncIterator
from datetime import datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from redis.asyncio import Redis

from bridge.app import cli
from bridge.archive.store import Archive
from bridge.engine import keys
from bridge.engine.clock import ManualClock
from bridge.engine.metrics import METRICS
from bridge.engine.timers import Timer
from bridge.flows.archiving import (
    ARCHIVE_RETRY_MAX_SECONDS,
    ARCHIVE_RETRY_SECONDS,
)
from tests.conftest import EXAMPLE_CONFIG, Stack, start_stack

TAG = "{store:1001}"
SHANGHAI = ZoneInfo("Asia/Shanghai")
CHATS, TASKS = "C0CHATS1001", "C0TASKS1001"
MAIN = "U0MAIN1001"


@pytest.fixture
async def archived(redis: Redis, redis_url: str, archive_url: str) -> AsyncIterator[Stack]:
    stack = await start_stack(redis_url, clock=ManualClock(), run_workers=False, archive_url=archive_url)
    yield stack
    await stack.stop()


async def reopened(url: str) -> Archive:
    """What a later process (a list, an export, another replica) reads."""
    return Archive(url)


@contextlib.asynccontextmanager
async def archive_down(stack: Stack) -> AsyncIterator[None]:
    """The archive refuses every connection (nothing listens on port 9) until the block ends."""
    good, down = stack.bridge.archiving.archive, Archive("postgresql://postgres@127.0.0.1:9/none")
    stack.bridge.archiving.archive = down
    try:
        yield
    finally:
        stack.bridge.archiving.archive = good
        await down.close()


async def state_keys(redis: Redis, object_id: str) -> list[str]:
    return sorted(k for k in map(str, await redis.keys("*")) if object_id in k and not k.startswith("timers:"))


async def test_a_task_order_is_archived_as_it_changes_with_comments_evidence_and_log(archived: Stack) -> None:
    stack = archived
    tid = await stack.sandbox.create_task_order("1001", "c-7001")
    await stack.settle()
    [live] = await stack.bridge.archive.tasks("1001")
    moved = live["deadline_at"].astimezone(SHANGHAI).time() == time(9)  # created in the evening: out of the night
    basis = "moved_out_of_night" if moved else "hours"
    assert (live["task_id"], live["status"], live["deadline_basis"]) == (tid, "pending", basis), "live, archived"
    card = stack.slack.channel(TASKS)[-1]
    await stack.slack.user_message(MAIN, TASKS, "已联系快递", thread_ts=card.ts)
    await stack.settle()
    await stack.sandbox.comment_on_platform(tid, "creator", "c-7001", "达人 Xiao", "买家说还没收到")
    await stack.settle()
    await stack.sandbox.process_on_platform(tid, "resolved", "已补发，顺丰 SF123456789")
    await stack.settle()
    timer = Timer(keys.archive_timer(TAG, f"task:{tid}"), None, None, 0)
    await stack.bridge.archiving.on_archive_timer(timer)  # a retry after a crash: nothing twice
    archive = await reopened(stack.bridge.archive.url)
    try:
        [row] = await archive.tasks(store_id="1001")
    finally:
        await archive.close()
    assert (row["status"], row["result"], row["solution"]) == ("resolved", "resolved", "已补发，顺丰 SF123456789")
    assert (row["processed_by"], row["processed_by_id"], row["comments_merchant"]) == ("店长 Li", "main-1001", 1)
    assert [(e["type"], e["operator_id"]) for e in row["log"]] == [
        ("created", "c-7001"),
        ("comment_merchant", "main-1001"),
        ("comment_creator", "c-7001"),
        ("resolved", "main-1001"),
    ]
    assert sorted((c["side"], c["author_id"], c["text"]) for c in row["comments"]) == [
        ("creator", "c-7001", "买家说还没收到"),
        ("merchant", "main-1001", "已联系快递"),
    ], "both sides' comments, the platform's included"
    assert row["data"]["issue_type"] == "物流问题 Logistics" and row["finished_at"] is not None


async def test_evidence_names_kinds_and_sizes_are_archived(archived: Stack) -> None:
    stack = archived
    tid = await stack.sandbox.create_task_order("1001", "c-7001")
    await stack.settle()
    card = stack.slack.channel(TASKS)[-1]
    png = b"\x89PNG\r\n\x1a\n" + b"\x00" * 200
    await stack.slack.user_message(MAIN, TASKS, "", thread_ts=card.ts,
                                   files=[stack.slack.add_file("waybill.png", png, "image/png")])  # fmt: skip
    await stack.settle()
    assert await stack.slack.block_action(MAIN, TASKS, card.ts, "task_resolve", tid) == 200
    state: dict[str, dict[str, Any]] = {
        "solution": {"solution": {"type": "plain_text_input", "value": "已补发，顺丰 SF123456789"}},
        "confirm": {"confirm": {"type": "checkboxes", "selected_options": []}},
        "evidence": {"evidence": {"type": "file_input", "files": []}},
    }
    await stack.slack.submit_view(MAIN, stack.slack.views[-1], state)
    await stack.settle()
    [row] = await stack.bridge.archive.tasks("1001")
    assert [(f["name"], f["kind"], f["size"]) for f in row["evidence"]] == [("waybill.png", "image", 208)]
    assert row["status"] == "resolved"


async def test_a_chat_is_archived_with_its_figures_and_messages_both_ways(archived: Stack) -> None:
    stack = archived
    assert stack.clock is not None
    opened = stack.clock.now()
    cid = await stack.sandbox.open_chat("1001", {"type": "text", "text": "您好，订单 6901234567890 的物流"})
    await stack.settle()
    root = stack.slack.channel(CHATS)[-1]
    await stack.advance_to(opened + 42)
    await stack.slack.user_message(MAIN, CHATS, "在的，马上查", thread_ts=root.ts)
    await stack.settle()
    [live] = await stack.bridge.archive.chats("1001")
    assert (live["status"], live["first_reply_by"], live["first_reply_seconds"]) == ("open", "main-1001", 42.0)
    await stack.sandbox.close_chat(cid)
    await stack.settle()
    [row] = await stack.bridge.archive.chats("1001", status="closed")
    assert (row["assignee"], row["replies"], row["close_reason"], row["in_window"]) == (
        "main-1001",
        1,
        "platform_closed",
        True,
    )
    assert [(m["direction"], m["author_id"], m["text"]) for m in row["messages"]] == [
        ("platform", row["messages"][0]["author_id"], "您好，订单 6901234567890 的物流"),
        ("merchant", "main-1001", "在的，马上查"),
    ]


async def test_finished_work_leaves_redis_after_its_grace_and_is_still_listed(archived: Stack) -> None:
    stack = archived
    tid = await stack.sandbox.create_task_order("1001", "c-7001")
    await stack.settle()
    await stack.sandbox.process_on_platform(tid, "resolved", "已补发，顺丰 SF123456789")
    await stack.settle()
    assert await state_keys(stack.redis, tid), "kept in Redis while recent"
    await stack.advance(keys.FINISHED_KEEP_SECONDS + 60)
    left = [k for k in await state_keys(stack.redis, tid) if await stack.redis.ttl(k) == -1]
    assert left == [], "nothing of it stays in Redis for good (refs expire by themselves)"
    answer = await stack.slash_command(MAIN, TASKS, "/tasks", "resolved")
    assert tid in answer and "1" in answer.splitlines()[0], "listed from the archive"
    assert await stack.slack.block_action(MAIN, TASKS, stack.slack.channel(TASKS)[-1].ts, "task_log", tid) == 200
    await stack.settle()
    assert "已解决" in stack.slack.ephemerals[-1]["text"] or "resolved" in stack.slack.ephemerals[-1]["text"]


async def test_an_archive_that_is_down_delays_copies_and_holds_up_nothing(archived: Stack) -> None:
    stack = archived
    failures = METRICS.archive_failures.labels("chat")._value.get()
    async with archive_down(stack):
        cid = await stack.sandbox.open_chat("1001")
        await stack.settle()
        root = stack.slack.channel(CHATS)[-1]
        await stack.slack.user_message(MAIN, CHATS, "在的", thread_ts=root.ts)
        await stack.settle()
        sent = [m for m in stack.sandbox.conversations[cid].messages if m["from"] == "merchant"]
        assert [m["content"]["text"] for m in sent] == ["在的"], "the reply reached the platform regardless"
        assert METRICS.archive_failures.labels("chat")._value.get() > failures, "counted in /metrics"
        assert await stack.bridge.timers.due_at(keys.archive_timer(TAG, f"chat:{cid}")) is not None, "still due"
    await stack.advance(ARCHIVE_RETRY_SECONDS + 1)  # the archive is back
    [row] = await stack.bridge.archive.chats("1001")
    assert row["conversation_id"] == cid and row["replies"] == 1, "archived once it could be"


async def test_an_archive_down_for_days_is_still_tried_every_five_minutes(archived: Stack) -> None:
    stack = archived
    async with archive_down(stack):
        cid = await stack.sandbox.open_chat("1001")
        await stack.settle()
        copy = keys.archive_timer(TAG, f"chat:{cid}")
        # The copy's count of failures in a row, as 1,030 of them leave it: some three and a half
        # days of a refusing archive at the longest wait (the doubling once overflowed there).
        assert stack.clock is not None
        await stack.bridge.timers.schedule(copy, stack.clock.now(), "1030")
        await stack.settle(horizon=0)
        due = await stack.bridge.timers.due_at(copy)
        assert due is not None and due - stack.clock.now() == pytest.approx(ARCHIVE_RETRY_MAX_SECONDS)
    await stack.advance(ARCHIVE_RETRY_MAX_SECONDS + 1)  # the archive is back
    [row] = await stack.bridge.archive.chats("1001")
    assert row["conversation_id"] == cid, "archived once it could be"


async def test_finished_work_stays_in_redis_until_it_is_archived_however_long_the_archive_is_down(
    archived: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    stack = archived
    monkeypatch.setattr(keys, "FINISHED_KEEP_SECONDS", 1800)  # a short grace: the same rules, fewer retries
    async with archive_down(stack):
        cid = await stack.sandbox.open_chat("1001")
        await stack.settle()
        await stack.sandbox.close_chat(cid)
        await stack.settle()
        await stack.advance(keys.FINISHED_KEEP_SECONDS + 120)
        assert await stack.redis.exists(keys.chat(TAG, cid), keys.chat_messages(TAG, cid)) == 2, "not archived: kept"
    await stack.advance(ARCHIVE_RETRY_MAX_SECONDS + 1)
    [row] = await stack.bridge.archive.chats("1001")
    assert (row["conversation_id"], row["status"], len(row["messages"])) == (cid, "closed", 1)
    await stack.advance(120)
    assert await stack.redis.exists(keys.chat(TAG, cid), keys.chat_messages(TAG, cid)) == 0, "archived, then gone"


async def test_an_older_copy_never_replaces_a_newer_one(archived: Stack) -> None:
    stack = archived
    cid = await stack.sandbox.open_chat("1001")
    await stack.settle()
    old = await stack.bridge.chats.snapshots.of(stack.redis, TAG, cid)
    await stack.sandbox.close_chat(cid)
    await stack.settle()
    assert old is not None
    await stack.bridge.archive.put([old])  # a slow process finishing its copy late
    [row] = await stack.bridge.archive.chats("1001")
    assert row["status"] == "closed"


async def test_stats_over_periods_and_exports_of_chats_read_the_archive(archived: Stack, tmp_path: Path) -> None:
    stack = archived
    assert stack.clock is not None
    for wait in (10, 20, 30, 40, 100):
        opened = stack.clock.now()
        cid = await stack.sandbox.open_chat("1001")
        await stack.settle()
        await stack.advance_to(opened + wait)
        await stack.slack.user_message(MAIN, CHATS, "在的", thread_ts=stack.slack.channel(CHATS)[-1].ts)
        await stack.settle()
        await stack.sandbox.close_chat(cid)
        await stack.settle()
    answer = await stack.slash_command(MAIN, CHATS, "/feige", "stats 7d")
    assert "近 7 天" in answer.splitlines()[0]
    assert "全店：会话 5，首次回复 p50 30.0 秒 / p90 76.0 秒，窗口内回复 100%，超时丢失 0" in answer, answer
    env = dict(os.environ, ARCHIVE_URL=stack.bridge.archive.url)
    today = datetime.fromtimestamp(stack.clock.now(), SHANGHAI).date().isoformat()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bridge", "stats", "--config", str(EXAMPLE_CONFIG), "--store", "1001",
        "--since", today, "--until", today, "--format", "json", env=env, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out = (await proc.communicate())[0].decode()
    assert proc.returncode == 0, out
    report = json.loads(out)
    assert report["store"]["chats"] == 5 and report["agents"]["main-1001"]["first_reply_p50"] == 30.0
    assert sum(day["chats"] for day in report["days"].values()) == 5
    # The same days as text, as the period's answer reads in Slack (before, any days came as JSON).
    day_before = (datetime.fromisoformat(today) - timedelta(days=1)).date().isoformat()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bridge", "stats", "--config", str(EXAMPLE_CONFIG), "--store", "1001",
        "--since", day_before, "--until", today, env=env, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    text = (await proc.communicate())[0].decode().splitlines()
    assert proc.returncode == 0 and text[0].endswith(f"平台客服响应统计 · {day_before} 至 {today}"), text
    assert "全店：会话 5，首次回复 p50 30.0 秒 / p90 76.0 秒，窗口内回复 100%，超时丢失 0" in text[1], text
    assert text[-1].startswith(f"{today[5:]}：会话 5，"), "a line a day with data"
    sheet = tmp_path / "chats.csv"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bridge", "export", "chats", "--config", str(EXAMPLE_CONFIG), "--format", "csv",
        "--status", "closed", "--out", str(sheet), env=env,
    )  # fmt: skip
    assert await proc.wait() == 0
    rows = list(csv.DictReader(sheet.read_text(encoding="utf-8").splitlines()))
    assert len(rows) == 5 and {"conversation_id", "first_reply_seconds", "close_reason", "messages"} <= set(rows[0])
    assert sorted(float(r["first_reply_seconds"]) for r in rows) == [10.0, 20.0, 30.0, 40.0, 100.0]


async def test_the_copies_of_changes_within_a_second_fall_due_together_on_a_whole_second(archived: Stack) -> None:
    """Copies fall due on the first whole second at least ARCHIVE_DELAY_SECONDS after their change, in
    the archive's own lane of the timers: two chats opened 0.3 s apart are copied together, and a
    third opened later in the same second waits for the next one."""
    stack = archived
    assert stack.clock is not None
    opened = []
    for moment in (1_700_000_100.1, 1_700_000_100.4, 1_700_000_100.6):
        stack.clock.set(moment)
        opened.append(await stack.sandbox.open_chat("1001"))
        await stack.bridge.drain()
    timers = [keys.archive_timer(TAG, f"chat:{cid}") for cid in opened]
    assert [await stack.bridge.timers.due_at(key) for key in timers] == [1_700_000_101.0] * 2 + [1_700_000_102.0]
    assert all([await stack.redis.zscore(keys.timers_due(0, "archive"), key) for key in timers]), "in their lane"
    assert not any([await stack.redis.zscore(keys.timers_due(0), key) for key in timers]), "not in the main one"
    stack.clock.set(1_700_000_100.99)
    await stack.bridge.drain()
    assert await stack.bridge.archive.chats("1001") == [], "none before their second"
    stack.clock.set(1_700_000_101.0)
    await stack.bridge.drain()
    assert sorted(row["conversation_id"] for row in await stack.bridge.archive.chats("1001")) == sorted(opened[:2])
    stack.clock.set(1_700_000_102.0)
    await stack.bridge.drain()
    assert sorted(row["conversation_id"] for row in await stack.bridge.archive.chats("1001")) == sorted(opened)


async def test_the_copies_that_fall_due_together_are_read_in_one_round_trip(archived: Stack) -> None:
    """Six chats changed in one second: at their whole second their six copies are claimed, read,
    written and acknowledged with a handful of round trips to Redis, not a read each."""
    stack = archived
    assert stack.clock is not None
    stack.clock.set(1_700_000_200.1)
    opened = [await stack.sandbox.open_chat("1001") for _ in range(6)]
    await stack.bridge.drain()
    stack.clock.set(1_700_000_201.0)
    before = int((await stack.redis.info("stats"))["total_reads_processed"])
    await stack.bridge.worker.drain()
    used = int((await stack.redis.info("stats"))["total_reads_processed"]) - before - 1  # less the INFO
    assert sorted(row["conversation_id"] for row in await stack.bridge.archive.chats("1001")) == sorted(opened)
    assert used <= 4, f"a claim, one read of the six, an acknowledgement and the next claim: {used}"


async def test_a_copy_whose_state_cannot_be_read_fails_alone_and_its_second_is_copied(archived: Stack) -> None:
    """Three chats copied in the same second, one of them with a damaged key (not a hash): its copy
    fails and is retried by its timer, and the other two land."""
    stack = archived
    assert stack.clock is not None
    stack.clock.set(1_700_000_300.1)
    opened = [await stack.sandbox.open_chat("1001") for _ in range(3)]
    await stack.bridge.drain()
    damaged = keys.chat_messages(TAG, opened[1])
    await stack.redis.delete(damaged)
    await stack.redis.set(damaged, "not a hash")
    stack.clock.set(1_700_000_301.0)
    await stack.bridge.worker.drain()
    assert sorted(row["conversation_id"] for row in await stack.bridge.archive.chats("1001")) == sorted(
        [opened[0], opened[2]]
    )
    assert await stack.bridge.timers.is_pending(keys.archive_timer(TAG, f"chat:{opened[1]}")), "retried later"


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["stats", "--since", "2026-12-05", "--until", "2026-12-01"],
         "stats: --since 2026-12-05 is after --until 2026-12-01; no day is in between"),
        (["export", "chats", "--since", "2026-12-05", "--until", "2026-12-01"],
         "export: --since 2026-12-05 is after --until 2026-12-01; no day is in between"),
        (["stats", "--period", "7d", "--since", "2026-12-01"],
         "stats: name a --period or days with --since/--until, not both"),
    ],
)  # fmt: skip
def test_days_that_cannot_be_meant_are_refused_before_the_archive_is_read(
    argv: list[str], said: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before, the days the wrong way round gave an empty report or export, and a period beside days
    was left out without a word."""
    with pytest.raises(SystemExit) as exited:
        cli.main([*argv, "--config", str(EXAMPLE_CONFIG)])
    assert exited.value.code == 2 and said in capsys.readouterr().err
