"""Flow 2 end to end: platform sandbox → bridge → Slack (merchant) and Telegram (creator), and back."""

from __future__ import annotations

import html
import json
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
import pytest
from redis.asyncio import Redis

from bridge.engine import keys
from bridge.engine.timers import Timer
from bridge.flows import tasks as tasks_flow
from bridge.flows.exports import task_export
from tests.conftest import Stack, hash_number, stack_changed

TASKS = "C0TASKS1001"
CREATOR_CHAT = 7001
TAG = "{store:1001}"
SH = ZoneInfo("Asia/Shanghai")
MAIN = "U0MAIN1001"


async def raise_task(stack: Stack, **fields: object) -> str:
    tid = await stack.sandbox.create_task_order("1001", "c-7001", **fields)
    await stack.settle()
    return tid


def card(stack: Stack):  # type: ignore[no-untyped-def]
    """The newest task order card (the morning digest also posts in this channel)."""
    return next(m for m in reversed(stack.slack.channel(TASKS)) if m.blocks and m.blocks[0]["type"] == "header")


def confirmation(stack: Stack):  # type: ignore[no-untyped-def]
    return stack.telegram.by_bot(CREATOR_CHAT)[0]


async def test_merchant_card_leads_with_the_issue_type_and_creator_gets_a_confirmation(stack: Stack) -> None:
    tid = await raise_task(stack)
    message = card(stack)
    assert message.text.startswith(f"【物流问题 Logistics】商达协同任务单（task order）{tid}")
    shown = str(message.blocks)
    for part in (
        "达人 小美 Xiaomei",
        "保温杯 Thermos cup 500ml",
        "请商家尽快补发",
        "买家说快递一周没动",
        "已联系商家处理",
    ):
        assert part in shown
    buttons = message.blocks[-1]["elements"]
    assert [b["text"]["text"] for b in buttons] == ["联系买家", "复制分享", "处理记录", "留言", "已解决", "无法解决"]
    assert buttons[0]["url"].startswith("https://im.example/buyer/") and buttons[1]["url"].startswith(
        "https://fxg.example/task/"
    )
    confirm = confirmation(stack)
    assert tid in confirm.text and "截止" in confirm.text
    keyboard = confirm.reply_markup["inline_keyboard"][0]
    share = keyboard[0]["copy_text"]["text"]  # B3's "copy share link": Telegram copies it to the clipboard
    assert share.startswith("https://fxg.example/task/") and keyboard[1]["callback_data"] == f"log:{tid}"


async def test_a_long_story_from_the_consumer_arrives_whole_and_as_written(stack: Stack) -> None:
    story = "买家说 <!here> 收到的杯子有裂痕 & 要求换货。" + "快递员说包裹在中转站压坏了，买家拍了照片。" * 120
    tid = await raise_task(stack, consumer_description=story, creator_suggestion="请补发 <新杯子>")
    assert await stack.bridge.outbox.dead_letters(TAG) == []
    message = card(stack)
    assert tid in message.text
    sections = [b["text"]["text"] for b in message.blocks if b["type"] == "section" and "text" in b]
    assert html.unescape("".join(sections)).endswith(story), "too long for a field: in sections of its own, whole"
    fields = [f["text"] for b in message.blocks for f in b.get("fields", [])]
    assert "请补发 &lt;新杯子&gt;" in "".join(fields) and "<!here>" not in str(message.blocks)


async def test_deadline_before_nine_moves_to_nine_that_morning(stack: Stack) -> None:
    assert stack.clock is not None
    created = datetime.fromtimestamp(stack.clock.now(), SH)
    assert created.hour < 9, "the manual clock starts at 06:13 Shanghai time"
    tid = await raise_task(stack)
    deadline = datetime.fromtimestamp(await hash_number(stack.redis, keys.task(TAG, tid), "deadline"), SH)
    assert (deadline.date() - created.date()).days == 1 and (deadline.hour, deadline.minute) == (9, 0)
    assert deadline.strftime("%Y-%m-%d %H:%M") in confirmation(stack).text


async def test_the_platforms_own_deadline_wins(stack: Stack) -> None:
    theirs = "2031-01-01T12:00:00+08:00"
    tid = await raise_task(stack, deadline_at=theirs)
    assert await hash_number(stack.redis, keys.task(TAG, tid), "deadline") == datetime.fromisoformat(theirs).timestamp()


async def test_comments_go_both_ways_and_the_eleventh_is_refused(stack: Stack) -> None:
    tid = await raise_task(stack)
    root = card(stack).ts
    first, _ = await stack.slack.user_message(MAIN, TASKS, "已安排补发", thread_ts=root)
    await stack.settle()
    assert stack.slack.message(TASKS, first).reactions == ["white_check_mark"], "its author sees the platform has it"
    [sent] = stack.sandbox.task_orders[tid].comments
    assert (sent["side"], sent["text"]) == ("merchant", "已安排补发")
    shown = stack.telegram.by_bot(CREATOR_CHAT)[-1]
    assert shown.text == "💬 商家留言（店长 Li）：已安排补发" and shown.reply_to == confirmation(stack).message_id

    thanks, _ = await stack.telegram.user_message(
        CREATOR_CHAT, CREATOR_CHAT, "谢谢，买家在等", reply_to=confirmation(stack).message_id
    )
    await stack.settle()
    assert stack.sandbox.task_orders[tid].comments[-1]["side"] == "creator"
    assert stack.telegram.message(CREATOR_CHAT, thanks.message_id).reactions == ["👍"]
    assert stack.slack.thread(TASKS, root)[-1].text == "💬 达人留言（达人 小美 Xiaomei）：谢谢，买家在等"

    for i in range(9):
        await stack.slack.user_message(MAIN, TASKS, f"进展 {i}", thread_ts=root)
    eleventh, _ = await stack.slack.user_message(MAIN, TASKS, "第十一条", thread_ts=root)
    await stack.settle()
    assert stack.slack.message(TASKS, eleventh).reactions == [], "a refused comment is not marked as sent"
    merchant = [c for c in stack.sandbox.task_orders[tid].comments if c["side"] == "merchant"]
    assert len(merchant) == 10
    assert "留言未发送：本方留言已达上限（10/10）" in stack.slack.ephemerals[-1]["text"]
    assert await stack.redis.hget(keys.task(TAG, tid), "comments:merchant") == "10"


async def test_log_records_every_operation_and_shows_on_both_sides(stack: Stack) -> None:
    tid = await raise_task(stack)
    await stack.slack.user_message(MAIN, TASKS, "已安排补发", thread_ts=card(stack).ts)
    await stack.settle()
    assert await stack.slack.block_action(MAIN, TASKS, card(stack).ts, "task_log", tid) == 200
    await stack.settle()
    log = stack.slack.ephemerals[-1]["text"]
    assert log.startswith(f"📋 任务单 {tid} 处理记录") and "创建 — 达人 小美 Xiaomei（达人）" in log
    assert "商家留言 — 店长 Li（商家）" in log
    assert await stack.telegram.tap(CREATOR_CHAT, CREATOR_CHAT, confirmation(stack).message_id, f"log:{tid}") == 200
    await stack.settle()
    assert stack.telegram.by_bot(CREATOR_CHAT)[-1].text.startswith(f"📋 任务单 {tid} 处理记录")
    assert stack.telegram.callback_answers, "the button tap is answered"


async def test_reminders_then_timeout_tell_both_sides_and_stop_comments(stack: Stack) -> None:
    tid = await raise_task(stack)
    deadline = await hash_number(stack.redis, keys.task(TAG, tid), "deadline")
    await stack.advance_to(deadline - 7200)
    reminder = stack.slack.thread(TASKS, card(stack).ts)[-1].text
    assert reminder.startswith("<@U0MAIN1001> ⏰") and "还剩 2 小时" in reminder, "it reaches someone: the main account"
    await stack.advance_to(deadline - 1800)
    # The bot sends a message per 1/30 s: of the reminders falling due together, one goes 37 ms later.
    await stack.settle(horizon=0.1)
    told = stack.telegram.by_bot(CREATOR_CHAT)[-1].text
    assert "商家还有 30 分钟" in told and "尚未处理" in told, "the creator reads whose time it is"
    await stack.advance_to(deadline)
    assert await stack.redis.hget(keys.task(TAG, tid), "status") == "timed_out"
    assert "超时完结" in stack.slack.thread(TASKS, card(stack).ts)[-1].text
    assert "超时完结" in stack.telegram.by_bot(CREATOR_CHAT)[-1].text
    assert "超时完结" in card(stack).text, "the card shows the end"
    await stack.slack.user_message(MAIN, TASKS, "晚了", thread_ts=card(stack).ts)
    await stack.settle()
    assert "不能再留言" in stack.slack.ephemerals[-1]["text"]


async def test_processed_on_the_platform_pings_the_creator_with_contact_buyer(stack: Stack) -> None:
    tid = await raise_task(stack)
    # With a kind of evidence the contract does not name yet: refused, the task order would time out here.
    files = [{"url": "https://fxg.example/e/1.pdf", "kind": "document", "size": 20480}]
    pushed = await stack.sandbox.process_on_platform(tid, "resolved", "已补发，顺丰 SF123456789", evidence=files)
    await stack.sandbox.process_on_platform(tid, "resolved", "已补发，顺丰 SF123456789")  # and once more
    await stack.settle()
    assert pushed.statuses == [200]
    assert await stack.redis.hget(keys.task(TAG, tid), "status") == "resolved"
    result = stack.telegram.by_bot(CREATOR_CHAT)[-1]
    assert "已补发，顺丰 SF123456789" in result.text and "不会自动发给消费者" in result.text
    assert result.reply_markup["inline_keyboard"][0][0]["text"] == "联系买家"  # type: ignore[index]
    assert len([m for m in stack.telegram.by_bot(CREATOR_CHAT) if "方案" in m.text]) == 1, "told once"
    assert "✅ 已解决" in card(stack).text


async def test_tasks_listed_by_status_in_slack_and_telegram(stack: Stack) -> None:
    first = await raise_task(stack)
    second = await raise_task(stack)
    answer = await stack.slash_command(MAIN, TASKS, "/tasks", "pending")
    assert "：2 条 · 第 1/1 页" in answer and answer.index(second) < answer.index(first), "newest first"
    listing = await stack.bridge.tasks.records.list_text(
        stack.bridge.holder.current.stores[0], "pending", "en", page=2, per_page=1
    )
    assert listing.startswith("Task orders (⏳ Pending): 2 · page 2/2") and first in listing and second not in listing
    await stack.telegram.user_message(CREATOR_CHAT, CREATOR_CHAT, "/tasks pending")
    await stack.settle()
    assert first in stack.telegram.by_bot(CREATOR_CHAT)[-1].text


async def test_a_status_is_asked_for_by_its_name_as_the_list_shows_it_and_a_wrong_one_is_said_to_be(
    stack: Stack,
) -> None:
    """People type the status as the list and the cards write it (已解决), not only its id."""
    tid = await raise_task(stack)
    await stack.sandbox.process_on_platform(tid, "unresolvable", "买家已申请退款，不再补发")
    await stack.settle()
    for words in ("无法解决", "unresolvable", "Cannot be resolved", "⚠️ 无法解决"):
        answer = await stack.slash_command(MAIN, TASKS, "/tasks", words)
        assert answer.startswith("任务单（⚠️ 无法解决）：1 条") and tid in answer, words
    assert (await stack.slash_command(MAIN, TASKS, "/tasks", "已解决")).startswith("任务单（✅ 已解决）：0 条")
    wrong = await stack.slash_command(MAIN, TASKS, "/tasks", "done 2")
    assert wrong == "没有“done”这个状态。可选：待处理|已解决|无法解决|超时完结|全部（例如 /tasks 已解决 2）。"
    await stack.telegram.user_message(CREATOR_CHAT, CREATOR_CHAT, "/tasks 全部")
    await stack.settle()
    assert stack.telegram.by_bot(CREATOR_CHAT)[-1].text.startswith("任务单（全部）：1 条")


async def test_telegram_webhook_checks_its_secret_and_handles_an_update_once(stack: Stack) -> None:
    update = {"update_id": 424242, "message": {"message_id": 1, "date": 0, "chat": {"id": 7001, "type": "private"},
              "from": {"id": 7001, "is_bot": False, "first_name": "c"}, "text": "/tasks"}}  # fmt: skip
    assert await stack.telegram.send_update(update, secret="wrong") == 401
    assert await stack.telegram.send_update(update) == 200
    assert await stack.telegram.send_update(update) == 200
    await stack.settle()
    assert len(stack.telegram.by_bot(CREATOR_CHAT)) == 1, "the redelivered update was handled once"
    async with aiohttp.ClientSession() as http:
        headers = {"X-Telegram-Bot-Api-Secret-Token": "demo-telegram-webhook-secret"}
        async with http.post(f"{stack.url}/telegram/webhook", data=b"nope", headers=headers) as resp:
            assert resp.status == 400


async def test_an_excel_export_keeps_what_people_wrote_as_text(stack: Stack, tmp_path: Path) -> None:
    """A consumer's text that starts with "=" is not a formula Excel runs, and a pasted control
    character does not make the export fail. In CSV it is text too, and Excel reads the Chinese."""
    import asyncio
    import csv
    import io
    import os
    import sys

    from openpyxl import load_workbook

    from tests.conftest import EXAMPLE_CONFIG

    story = '=HYPERLINK("https://evil.example","点我查看")\x0b买家说杯子裂了'
    await raise_task(stack, consumer_description=story)
    await stack.settle()

    async def export(fmt: str) -> Path:
        out = tmp_path / f"tasks.{fmt}"
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bridge", "export", "tasks", "--config", str(EXAMPLE_CONFIG), "--format", fmt,
            "--out", str(out), env=dict(os.environ, ARCHIVE_URL=stack.bridge.archive.url),
        )  # fmt: skip
        assert await proc.wait() == 0
        return out

    rows = list(load_workbook(await export("xlsx")).active.iter_rows())  # type: ignore[union-attr]
    told = rows[1][[c.value for c in rows[0]].index("consumer_description")]
    assert (told.value, told.data_type) == ('=HYPERLINK("https://evil.example","点我查看") 买家说杯子裂了', "s")
    written = (await export("csv")).read_bytes()
    assert written.startswith(b"\xef\xbb\xbf"), "Excel reads UTF-8 as such only after its byte-order mark"
    row = next(csv.DictReader(io.StringIO(written.decode("utf-8-sig"), newline="")))
    assert row["consumer_description"] == "'" + story, "a spreadsheet takes it as text, not a formula"
    assert row["issue_type"] == "物流问题 Logistics", "what starts like no formula is kept as written"


async def test_export_writes_every_task_order(stack: Stack, redis_url: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    import asyncio
    import csv
    import json
    import os
    import sys

    from tests.conftest import EXAMPLE_CONFIG

    first = await raise_task(stack)
    second = await raise_task(stack)
    await stack.settle()  # archived a moment after each change
    env = dict(os.environ, ARCHIVE_URL=stack.bridge.archive.url)
    out = tmp_path / "tasks.csv"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bridge", "export", "tasks", "--config", str(EXAMPLE_CONFIG),
        "--status", "pending", "--format", "jsonl", env=env, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    lines = (await proc.communicate())[0].decode().splitlines()
    assert proc.returncode == 0 and len(lines) == 2
    row = json.loads(lines[0])
    assert row["task_id"] == first and row["status"] == "pending" and row["store"] == "1001"
    assert row["created_at"].endswith("+08:00"), "in the store's zone, whatever offset the platform wrote"
    assert row["creator"] == {"id": "c-7001", "name": "达人 小美 Xiaomei"}, "JSON keeps the object"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bridge", "export", "tasks", "--config", str(EXAMPLE_CONFIG),
        "--format", "csv", "--out", str(out), env=env,
    )  # fmt: skip
    assert await proc.wait() == 0
    rows = list(csv.DictReader(out.read_text(encoding="utf-8").splitlines()))
    assert len(rows) == 2 and rows[0]["issue_type"] == "物流问题 Logistics"
    assert (rows[0]["creator_id"], rows[0]["creator_name"]) == ("c-7001", "达人 小美 Xiaomei"), "a column a field"
    assert rows[0]["product_name"] and "creator" not in rows[0]
    created = datetime.fromtimestamp(stack.clock.now(), SH).date()  # type: ignore[union-attr]
    sheet = tmp_path / "tasks.xlsx"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bridge", "export", "tasks", "--config", str(EXAMPLE_CONFIG), "--format", "xlsx",
        "--store", "1001", "--since", created.isoformat(), "--until", created.isoformat(), "--out", str(sheet), env=env,
    )  # fmt: skip
    assert await proc.wait() == 0
    from openpyxl import load_workbook

    table = list(load_workbook(sheet).active.iter_rows(values_only=True))  # type: ignore[union-attr]
    header = list(table[0])
    assert len(table) == 3 and {"task_id", "result", "solution", "processed_by_id", "log"} <= set(header)
    assert {row[header.index("task_id")] for row in table[1:]} == {first, second}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bridge", "export", "tasks", "--config", str(EXAMPLE_CONFIG),
        "--since", (created + timedelta(days=1)).isoformat(), env=env, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert (await proc.communicate())[0] == b"", "none created since tomorrow"


async def test_comments_made_on_the_platform_count_are_logged_and_are_shown_both_ways(stack: Stack) -> None:
    """B5: ten merchant comments made in the platform's own UI leave no room for one from Slack."""
    tid = await raise_task(stack)
    for i in range(10):
        await stack.sandbox.comment_on_platform(tid, "merchant", "main-1001", "店长 Li", f"平台留言 {i}")
    await stack.settle()
    assert await stack.redis.hget(keys.task(TAG, tid), "comments:merchant") == "10"
    in_slack = [m.text for m in stack.slack.thread(TASKS, card(stack).ts) if "平台留言" in m.text]
    in_telegram = [m.text for m in stack.telegram.by_bot(CREATOR_CHAT) if "平台留言" in m.text]
    assert len(in_slack) == 10 and len(in_telegram) == 10, "both sides see every comment"
    assert in_telegram[0] == "💬 商家留言（店长 Li）：平台留言 0"
    await stack.slack.user_message(MAIN, TASKS, "第十一条", thread_ts=card(stack).ts)
    await stack.settle()
    assert "留言未发送：本方留言已达上限（10/10）" in stack.slack.ephemerals[-1]["text"]
    assert [c["text"] for c in stack.sandbox.task_orders[tid].comments].count("第十一条") == 0
    logged = [e for e in await stack.bridge.tasks.records.log_entries(TAG, tid) if e["type"] == "comment_merchant"]
    assert len(logged) == 10 and (logged[0]["operator"], logged[0]["operator_id"]) == ("店长 Li", "main-1001")


async def test_a_comment_is_shown_only_once_the_platform_has_it(stack: Stack) -> None:
    tid = await raise_task(stack)
    before = len(stack.telegram.by_bot(CREATOR_CHAT))
    stack.sandbox.fail_next("POST", f"/task-orders/{tid}/comments", 422)
    refused, _ = await stack.slack.user_message(MAIN, TASKS, "这条平台不收", thread_ts=card(stack).ts)
    await stack.settle()
    assert stack.slack.message(TASKS, refused).reactions == []
    assert len(stack.telegram.by_bot(CREATOR_CHAT)) == before, "the creator never saw a comment the platform refused"
    assert await stack.redis.hget(keys.task(TAG, tid), "comments:merchant") == "0", "its slot is free again"
    assert [e["type"] for e in await stack.bridge.tasks.records.log_entries(TAG, tid)] == ["created"]
    await stack.slack.user_message(MAIN, TASKS, "这条可以", thread_ts=card(stack).ts)
    await stack.settle()
    assert stack.telegram.by_bot(CREATOR_CHAT)[-1].text == "💬 商家留言（店长 Li）：这条可以"
    assert await stack.redis.hget(keys.task(TAG, tid), "comments:merchant") == "1"


async def test_a_comment_the_platform_counts_over_the_limit_is_refused_in_the_limits_words(stack: Stack) -> None:
    """Ten merchant comments made on the platform itself, their pushes not yet here: the platform
    refuses the bridge's next one (422), and its author reads the same refusal as for an 11th."""
    tid = await raise_task(stack)
    made_there = [
        {"comment_id": f"p{i}", "side": "merchant", "author_id": "main-1001", "text": f"{i}"} for i in range(10)
    ]
    stack.sandbox.task_orders[tid].comments.extend(made_there)
    await stack.slack.user_message(MAIN, TASKS, "已安排补发", thread_ts=card(stack).ts)
    await stack.settle()
    assert stack.sandbox.task_orders[tid].comments == made_there
    assert stack.slack.ephemerals[-1]["text"] == "留言未发送：本方留言已达上限（10/10），每方最多 10 条。"
    assert await stack.redis.hget(keys.task(TAG, tid), "comments:merchant") == "0", "its place is given back"


async def test_a_comment_too_long_for_telegram_reaches_the_creator_cut_with_a_note_in_their_language(
    redis: Redis, redis_url: str, tmp_path: Path
) -> None:
    def english_creator(tree: dict[str, Any]) -> None:
        next(c for c in tree["creators"] if c["id"] == "c-7001")["locale"] = "en"

    async with stack_changed(redis_url, tmp_path, english_creator) as s:
        tid = await raise_task(s)
        comment = "已安排补发，顺丰单号稍后发。" * 400  # 5,600 characters
        await s.slack.user_message(MAIN, TASKS, comment, thread_ts=card(s).ts)
        await s.settle()
        assert s.sandbox.task_orders[tid].comments[-1]["text"] == comment, "the platform has it whole"
        shown = html.unescape(s.telegram.by_bot(CREATOR_CHAT)[-1].text)
        assert shown.startswith("💬 Comment from the merchant (店长 Li): 已安排补发") and len(shown) <= 4096
        assert shown.endswith(
            "more characters are over the message length and not shown; read the whole text in Feige)"
        )


async def test_the_comment_limit_comes_from_the_rule(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    """rules/ is the single source: the limit the flow enforces and tells is the rule's constant."""
    monkeypatch.setattr(tasks_flow, "COMMENTS_PER_SIDE", 2)
    tid = await raise_task(stack)
    root = card(stack).ts
    for i in range(3):
        await stack.slack.user_message(MAIN, TASKS, f"进展 {i}", thread_ts=root)
    await stack.settle()
    assert [c["text"] for c in stack.sandbox.task_orders[tid].comments] == ["进展 0", "进展 1"]
    assert "留言未发送：本方留言已达上限（2/2），每方最多 2 条。" in stack.slack.ephemerals[-1]["text"]
    assert "回复本消息即可留言（最多 2 条）" in confirmation(stack).text, "the creator is told the same limit"


PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 300
TEXT_FILE = b"not really a picture at all"


def errors_of(answer: tuple[int, str]) -> dict[str, str]:
    status, body = answer
    assert status == 200
    errors: dict[str, str] = json.loads(body).get("errors", {}) if body.strip() else {}
    return errors


async def open_modal(stack: Stack, tid: str, action: str = "task_resolve", user: str = MAIN) -> dict:  # type: ignore[type-arg]
    assert await stack.slack.block_action(user, TASKS, card(stack).ts, action, tid) == 200
    return stack.slack.views[-1]


def values(solution: str, *, confirm: bool = False, files: list | None = None) -> dict:  # type: ignore[type-arg]
    state: dict = {"solution": {"solution": {"type": "plain_text_input", "value": solution}}}  # type: ignore[type-arg]
    state["confirm"] = {"confirm": {"type": "checkboxes", "selected_options": [{"value": "yes"}] if confirm else []}}
    state["evidence"] = {"evidence": {"type": "file_input", "files": files or []}}
    return state


async def test_resolve_with_evidence_from_the_modal_and_the_thread(stack: Stack) -> None:
    tid = await raise_task(stack)
    thread_photo = stack.slack.add_file("waybill.png", PNG, "image/png")
    await stack.slack.user_message(MAIN, TASKS, "", thread_ts=card(stack).ts, files=[thread_photo])
    await stack.settle()  # the stored event is handled (a running bridge does it within milliseconds)
    kept = stack.slack.ephemerals[-1]
    assert kept["user"] == MAIN and kept["text"].startswith("附件已留作本任务单的处理凭证（处理时一并提交），不会发给")
    assert "waybill" not in "".join(m.text for m in stack.telegram.by_bot(CREATOR_CHAT)), "the creator does not see it"
    view = await open_modal(stack, tid)
    assert view["callback_id"] == "task_process" and [b["block_id"] for b in view["blocks"][1:]] == [
        "solution",
        "confirm",
        "evidence",
    ]
    modal_photo = stack.slack.add_file("parcel.png", PNG, "image/png")
    assert (
        errors_of(
            await stack.slack.submit_view(MAIN, view, values("已为买家补发，顺丰单号 SF123456789", files=[modal_photo]))
        )
        == {}
    )
    await stack.settle()
    [process] = stack.sandbox.received("POST", f"/task-orders/{tid}/process")
    assert process.status == 200 and process.body["result"] == "resolved" and len(process.body["evidence"]) == 2
    assert len(stack.sandbox.received("POST", "/media")) == 2
    assert await stack.redis.hget(keys.task(TAG, tid), "status") == "resolved"
    assert "SF123456789" in stack.telegram.by_bot(CREATOR_CHAT)[-1].text, "the creator is pinged (B9)"
    log = [e["type"] for e in await stack.bridge.tasks.records.log_entries(TAG, tid)]
    assert log == ["created", "evidence_added", "resolved"]
    [row] = await task_export(stack.bridge.archive, stack.bridge.holder.current.stores[0], "resolved")
    assert (row["result"], row["solution"], row["processed_by"], row["processed_by_id"]) == (
        "resolved",
        "已为买家补发，顺丰单号 SF123456789",
        "店长 Li",
        "main-1001",
    ), "the export keeps what a person looks up later"
    assert [(e["type"], e["operator_id"]) for e in row["log"]] == [
        ("created", "c-7001"),
        ("evidence_added", "main-1001"),
        ("resolved", "main-1001"),
    ] and row["finished_at"].endswith("+08:00")


async def test_a_file_server_that_goes_quiet_is_given_up_on_and_the_evidence_taken_later(stack: Stack) -> None:
    """The evidence's type is read from each file's first bytes while the submission is handled, its
    thread locked. A file server that accepts the request and goes quiet is given up on within the
    sniff limit (not aiohttp's five minutes, long past the lock); the submission is tried again."""
    tid = await raise_task(stack)
    view = await open_modal(stack, tid)
    stack.bridge.connectors["slack"].sniff_timeout = aiohttp.ClientTimeout(total=0.2)  # type: ignore[attr-defined]
    stack.slack.file_stall_seconds = 1.0
    photo = stack.slack.add_file("parcel.png", PNG, "image/png")
    submitted = await stack.slack.submit_view(MAIN, view, values("已为买家补发，顺丰单号 SF123456789", files=[photo]))
    assert errors_of(submitted) == {}
    await stack.bridge.drain()
    assert stack.sandbox.received("POST", f"/task-orders/{tid}/process") == []
    assert stack.bridge.consumer.next_retry_at() is not None, "kept for a retry"
    stack.slack.file_stall_seconds = 0.0
    await stack.settle()
    [process] = stack.sandbox.received("POST", f"/task-orders/{tid}/process")
    assert process.status == 200 and len(process.body["evidence"]) == 1


async def test_placeholder_or_empty_solutions_are_refused_or_must_be_confirmed(stack: Stack) -> None:
    tid = await raise_task(stack)
    view = await open_modal(stack, tid, "task_unresolvable")
    assert errors_of(await stack.slack.submit_view(MAIN, view, values("  ")))["solution"].startswith("请填写处理方案")
    weak = errors_of(await stack.slack.submit_view(MAIN, view, values("已处理")))
    assert "占位" in weak["solution"], "a placeholder is warned about"
    assert errors_of(await stack.slack.submit_view(MAIN, view, values("已处理", confirm=True))) == {}, (
        "confirmed: it goes"
    )
    await stack.settle()
    assert await stack.redis.hget(keys.task(TAG, tid), "status") == "unresolvable"


async def test_bad_evidence_is_refused_by_name_before_anything_is_sent(stack: Stack) -> None:
    """The number of files is checked in the modal; their contents after the ack (Slack allows no
    download before it), and a refusal is told privately in the task order's thread."""
    tid = await raise_task(stack)
    view = await open_modal(stack, tid)
    good = "已为买家补发，顺丰单号 SF123456789"
    seven = [stack.slack.add_file(f"p{i}.png", PNG, "image/png") for i in range(7)]
    assert (
        errors_of(await stack.slack.submit_view(MAIN, view, values(good, files=seven)))["evidence"]
        == "凭证最多 6 个，现有 7 个。"
    )
    fake = stack.slack.add_file("photo.jpg", TEXT_FILE, "image/jpeg")
    huge = stack.slack.add_file("huge.png", PNG, "image/png") | {"size": 6 * 1024 * 1024}
    heic = stack.slack.add_file("IMG_0001.mp4", b"\x00\x00\x00\x18ftypheic" + b"\x00" * 64, "video/mp4")
    assert errors_of(await stack.slack.submit_view(MAIN, view, values(good, files=[fake, huge, heic]))) == {}
    await stack.settle()
    refusal = stack.slack.ephemerals[-1]
    assert refusal["user"] == MAIN and refusal["thread_ts"] == card(stack).ts
    assert refusal["text"].splitlines()[1:4] == [
        "文件 photo.jpg：类型不支持（按文件内容判断，只收 JPG/PNG 图片和 MP4/FLV/MOV/AVI/MKV/WEBM 视频）",
        "文件 huge.png：超过 5 MB",
        "文件 IMG_0001.mp4：类型不支持（按文件内容判断，只收 JPG/PNG 图片和 MP4/FLV/MOV/AVI/MKV/WEBM 视频）",
    ] and refusal["text"].startswith(f"任务单 {tid} 未提交处理"), "an HEIC photo named .mp4 is no video (B7)"
    assert (
        stack.sandbox.received("POST", "/media") == []
        and stack.sandbox.received("POST", f"/task-orders/{tid}/process") == []
    )
    assert await stack.redis.hget(keys.task(TAG, tid), "status") == "pending"
    assert refusal["text"].endswith("请重新点按钮处理，已写的方案会自动填好。")
    again = await open_modal(stack, tid)
    solution = next(b for b in again["blocks"] if b.get("block_id") == "solution")
    assert solution["element"]["initial_value"] == good, "what they wrote is not lost"
    assert "initial_value" not in next(b for b in (await open_modal(stack, tid, user="U0AGENTA"))["blocks"]
                                       if b.get("block_id") == "solution"), "only for its author"  # fmt: skip


async def test_a_submission_is_handled_once_after_the_ack_even_when_slack_files_are_down(stack: Stack) -> None:
    """A submitted modal is stored before the ack; a file download that fails is retried by the
    consumer (never taken for a bad file), and the same submission sent twice processes once."""
    assert stack.clock is not None
    tid = await raise_task(stack)
    view = await open_modal(stack, tid)
    photo = stack.slack.add_file("parcel.png", PNG, "image/png")
    submitted = values("已为买家补发，顺丰单号 SF123456789", files=[photo])
    stack.slack.down_until = stack.clock.now() + 30
    assert errors_of(await stack.slack.submit_view(MAIN, view, submitted)) == {}
    assert errors_of(await stack.slack.submit_view(MAIN, view, submitted)) == {}, "a resubmission is acked"
    await stack.bridge.drain()
    assert stack.sandbox.received("POST", f"/task-orders/{tid}/process") == [], "the files could not be read yet"
    await stack.advance(60)
    await stack.settle()
    [process] = stack.sandbox.received("POST", f"/task-orders/{tid}/process")
    assert process.status == 200 and len(process.body["evidence"]) == 1
    assert await stack.redis.hget(keys.task(TAG, tid), "status") == "resolved"
    assert not any("未提交处理" in e["text"] for e in stack.slack.ephemerals)


async def test_a_comment_the_platform_refuses_is_reported_to_its_author(stack: Stack) -> None:
    tid = await raise_task(stack)
    stack.sandbox.fail_next("POST", f"/task-orders/{tid}/comments", 400)
    await stack.slack.user_message(MAIN, TASKS, "补充说明", thread_ts=card(stack).ts)
    await stack.settle()
    told = stack.slack.ephemerals[-1]["text"]
    assert told == f"你在任务单 {tid} 的留言未能送达平台：injected fault", "told as a comment"


async def test_a_comment_on_a_task_order_finished_on_the_platform_is_told_so_in_the_authors_words(
    stack: Stack,
) -> None:
    """The platform processed the task order, and its push has not arrived: it refuses the comment
    with 409, which its author reads in their language, not as the platform's own message."""
    tid = await raise_task(stack)
    stack.sandbox.task_orders[tid].status = "resolved"
    await stack.slack.user_message(MAIN, TASKS, "补充说明", thread_ts=card(stack).ts)
    await stack.settle()
    assert stack.sandbox.task_orders[tid].comments == []
    told = stack.slack.ephemerals[-1]["text"]
    assert told == f"你在任务单 {tid} 的留言未能送达平台：任务单在平台上已处理或已超时完结"


async def test_the_comment_button_explains_how_to_comment(stack: Stack) -> None:
    tid = await raise_task(stack)
    assert await stack.slack.block_action(MAIN, TASKS, card(stack).ts, "task_comment", tid) == 200
    await stack.settle()
    assert stack.slack.ephemerals[-1]["text"].startswith("在本任务单的消息串里回复即可留言")


async def test_only_the_stores_agents_can_open_the_processing_modal(stack: Stack) -> None:
    tid = await raise_task(stack)
    assert await stack.slack.block_action("U0STRANGER", TASKS, card(stack).ts, "task_resolve", tid) == 200
    await stack.settle()
    assert stack.slack.views == [], "no modal"
    assert stack.slack.ephemerals[-1] == {**stack.slack.ephemerals[-1], "user": "U0STRANGER",
                                          "text": "只有本店配置的客服可以处理任务单。"}  # fmt: skip


async def test_the_morning_digest_lists_the_task_orders_due_today(stack: Stack) -> None:
    assert stack.clock is not None
    tid = await raise_task(stack)  # at 06:13: due 24 h later, moved out of the night to 09:00
    today = datetime.fromtimestamp(stack.clock.now(), SH).replace(hour=8, minute=30, second=0)
    await stack.advance_to(today.timestamp() + 1)
    digests = [m for m in stack.slack.channel(TASKS) if m.text.startswith("🌅")]
    assert [m.text for m in digests] == [f"🌅 今日（{today:%Y-%m-%d}）没有到期的任务单。"]
    tomorrow = today + timedelta(days=1)
    await stack.advance_to(tomorrow.timestamp() + 1)
    digest = [m for m in stack.slack.channel(TASKS) if m.text.startswith("🌅")][-1]
    assert digest.text.splitlines() == [
        f"🌅 今日到期的任务单（{tomorrow:%Y-%m-%d}）：1 条",
        f"• {tid} 【物流问题 Logistics】截止 09:00",
    ]
    [button] = [e for b in digest.blocks if b["type"] == "actions" for e in b["elements"]]
    assert (button["action_id"], button["value"]) == ("task_resolve", tid)
    assert await stack.slack.block_action(MAIN, TASKS, digest.ts, "task_resolve", tid) == 200
    assert stack.slack.views[-1]["callback_id"] == "task_process", "one tap opens the processing modal"
    await stack.bridge.tasks.on_digest_timer(Timer(keys.digest_timer(TAG), tomorrow.timestamp(), None, 5000))
    await stack.settle()
    assert len([m for m in stack.slack.channel(TASKS) if m.text.startswith("🌅")]) == 2, "once a day"


async def test_a_creators_comment_finds_its_store_by_the_task_orders_index_or_by_looking(stack: Stack) -> None:
    """The store of a creator's task order is kept when it reaches the creator (one lookup for each of
    their comments, however many stores the bridge serves); one that reached them before the bridge
    kept it is still found, by looking in each store."""
    tid = await raise_task(stack)
    index = keys.task_store(keys.creator_tag("c-7001"), tid)
    assert await stack.redis.get(index) == "1001"
    assert 0 < await stack.redis.ttl(index) <= keys.REF_KEEP_SECONDS
    root = card(stack).ts
    for text in ("谢谢，买家在等", "补发单号收到了"):
        await stack.telegram.user_message(CREATOR_CHAT, CREATOR_CHAT, text, reply_to=confirmation(stack).message_id)
        await stack.settle()
        assert stack.sandbox.task_orders[tid].comments[-1]["text"] == text
        assert stack.slack.thread(TASKS, root)[-1].text == f"💬 达人留言（达人 小美 Xiaomei）：{text}"
        await stack.redis.delete(index)  # as if it had reached the creator before this version
