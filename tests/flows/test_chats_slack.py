"""Flow 1 in Slack, end to end: platform sandbox → bridge → Slack emulator, and back (A1–A9)."""

from __future__ import annotations

import asyncio
import html
import itertools
import json
import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
import pytest
from redis.asyncio import Redis

from bridge.app.service import Bridge, open_redis
from bridge.archive.store import Archive
from bridge.config import ConfigHolder, Destination
from bridge.engine import keys, refs
from bridge.engine.clock import ManualClock
from bridge.engine.events import IN_FLIGHT_SECONDS
from bridge.engine.outbox import OutboxJob
from bridge.engine.timers import Timer
from bridge.flows.chats import ChatFlow
from bridge.flows.domain import ChatMessage, PlatformAgent, TextContent
from bridge.sandbox.slack import Message
from connectors.slack.app import CHANNEL_SPACING_SECONDS
from tests.conftest import Stack, hash_number, stack_changed

CHATS = "C0CHATS1001"
TAG = "{store:1001}"
MAIN, AGENT_A, AGENT_B, STRANGER = "U0MAIN1001", "U0AGENTA", "U0AGENTB", "U0STRANGER"
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 200
SH = ZoneInfo("Asia/Shanghai")

ORDER_CARD = {
    "type": "order_card",
    "order_id": "6901234567890",
    "product_name": "保温杯 500ml",
    "amount_cents": 12900,
    "status": "已发货",
    "detail_url": "https://fxg.example/order/6901234567890",
}


async def open_chat(stack: Stack, content: dict | None = None) -> tuple[str, Message]:  # type: ignore[type-arg]
    cid = await stack.sandbox.open_chat("1001", content)
    await stack.settle()
    root = stack.slack.channel(CHATS)[-1]
    return cid, root


def texts(stack: Stack, root: Message) -> list[str]:
    return [m.text for m in stack.slack.thread(CHATS, root.ts)]


def blocks_text(message: Message) -> str:
    return str(message.blocks)


def platform_texts(stack: Stack, cid: str) -> list[object]:
    return [
        m["content"].get("text", m["content"])
        for m in stack.sandbox.conversations[cid].messages
        if m["from"] == "merchant"
    ]


# -- A1: one thread per chat -------------------------------------------------------------------


async def test_a_chat_becomes_one_thread_with_header_and_native_order_card(stack: Stack) -> None:
    cid, root = await open_chat(stack, ORDER_CARD)
    assert "平台客服会话" in root.text and "待回复" in root.text
    assert "<@U0MAIN1001>" in blocks_text(root), "the assignee is mentioned on the thread's root"
    assert "<!date^" in blocks_text(root), "the deadline is shown in each reader's time zone"
    assert "6901234567890" in root.text, "the root carries the first message"
    button = root.blocks[-1]["elements"][0]
    assert button["url"] == ORDER_CARD["detail_url"] and button["text"]["text"] == "查看详情"
    assert "¥129.00" in blocks_text(root)
    assert stack.slack.thread(CHATS, root.ts) == []

    await stack.sandbox.chat_message(cid, {"type": "image", "url": "https://img.example/a.png"})
    await stack.sandbox.chat_message(cid, {"type": "text", "text": "买家很着急"})
    await stack.settle()
    thread = stack.slack.thread(CHATS, root.ts)
    assert thread[0].blocks[-1] == {
        "type": "image",
        "image_url": "https://img.example/a.png",
        "alt_text": "平台客服发送的图片",
    }
    assert thread[1].text.endswith("买家很着急")
    assert len(stack.slack.channel(CHATS)) == 1, "later messages go into the same thread"


# -- A3: routing by saturation ----------------------------------------------------------------


async def test_new_chat_goes_to_the_least_loaded_designated_agent(stack: Stack) -> None:
    await stack.redis.hset(keys.agent_load(TAG), mapping={"main-1001": 1, "agent-a": 2, "agent-b": 3})
    _, root = await open_chat(stack)
    assert "负责人：<@U0MAIN1001>（分配时各客服进行中会话：店长 Li 1, 客服 A 2, 客服 B 3）" in blocks_text(root)
    assert await stack.redis.hgetall(keys.agent_load(TAG)) == {"main-1001": "2", "agent-a": "2", "agent-b": "3"}
    _, root = await open_chat(stack)
    assert "<@U0MAIN1001>" in blocks_text(root), "a tie goes to the agent listed first"


async def test_a_new_chat_is_decided_in_one_call_while_the_loads_this_process_knows_still_hold(stack: Stack) -> None:
    receive, calls = stack.bridge.chats._receive, []

    async def counted(**kwargs: object) -> object:
        calls.append(kwargs)
        return await receive(**kwargs)  # type: ignore[arg-type]

    stack.bridge.chats._receive = counted  # type: ignore[assignment]
    _, first = await open_chat(stack)
    assert len(calls) == 2, "the store's first chat here: the loads are read, then the chat is created"
    _, second = await open_chat(stack)
    assert len(calls) == 3, "the next one: decided with the loads known, which still held"
    await stack.redis.hset(keys.agent_load(TAG), mapping={"main-1001": 0, "agent-a": 9, "agent-b": 9})
    _, third = await open_chat(stack)
    assert len(calls) == 5, "changed elsewhere: the script refused the known loads and said the new ones"
    assert [
        next(m for m in ("<@U0MAIN1001>", "<@U0AGENTA>", "<@U0AGENTB>") if m in blocks_text(root))
        for root in (first, second, third)
    ] == ["<@U0MAIN1001>", "<@U0AGENTA>", "<@U0MAIN1001>"]
    assert "店长 Li 0, 客服 A 9, 客服 B 9" in blocks_text(third), "the root shows the loads it was decided with"


async def test_closing_a_chat_frees_its_agent(stack: Stack) -> None:
    first, _ = await open_chat(stack)
    _, second = await open_chat(stack)
    assert "<@U0AGENTA>" in blocks_text(second)
    await stack.sandbox.close_chat(first)
    await stack.settle()
    _, third = await open_chat(stack)
    assert "<@U0MAIN1001>" in blocks_text(third)
    assert await stack.redis.hgetall(keys.agent_load(TAG)) == {"main-1001": "1", "agent-a": "1"}


async def test_two_processes_assigning_at_once_never_use_stale_counts(stack: Stack) -> None:
    other = ChatFlow(
        stack.redis, lambda: stack.bridge.holder.current, stack.bridge.timers, stack.bridge.outbox, stack.bridge.clock
    )
    store = stack.bridge.holder.current.store("1001")
    assert store is not None
    dest = Destination.parse(store.destinations.platform_chats)
    flows = [stack.bridge.chats, other]
    first = {"type": "platform_message", "content": {"type": "text", "text": "hi"}, "sender": "cs"}

    def message(i: int) -> ChatMessage:
        return ChatMessage(
            shop_id="1001",
            conversation_id=f"c{i}",
            message_id=f"m{i}",
            sender=PlatformAgent(agent_id="cs"),
            sent_at=datetime.fromtimestamp(stack.bridge.clock.now(), UTC),
            content=TextContent(type="text", text="hi"),
        )

    results = await asyncio.gather(
        *(flows[i % 2]._receive_message(store, TAG, f"c{i}", dest, first, message(i)) for i in range(12))
    )
    assert all(created for created, _, _ in results)
    assert [chat["assignee"] for _, _, chat in results] == [
        await stack.redis.hget(keys.chat(TAG, f"c{i}"), "assignee") for i in range(12)
    ]
    assert await stack.redis.hgetall(keys.agent_load(TAG)) == {"main-1001": "4", "agent-a": "4", "agent-b": "4"}


# -- A2, A4, A8: answering ---------------------------------------------------------------------


async def test_designated_agent_answers_in_time_with_emoji_and_gets_a_check_mark(stack: Stack) -> None:
    cid, root = await open_chat(stack)
    await stack.advance(30)
    ts, status = await stack.slack.user_message(
        AGENT_A, CHATS, "已发货 :truck: :+1::skin-tone-3: &lt;顺丰&gt;", thread_ts=root.ts
    )
    assert status == 200
    await stack.settle()
    assert platform_texts(stack, cid) == ["已发货 🚚 👍🏼 <顺丰>"]
    [call] = stack.sandbox.received("POST", "/im/conversations")
    assert call.body["agent_id"] == "agent-a" and call.idempotency_key == f"reply:{CHATS}:{ts}:0"
    assert stack.slack.message(CHATS, ts).reactions == ["white_check_mark"]
    assert "已回复" in stack.slack.message(CHATS, root.ts).text, "the header shows the chat answered"
    assert await stack.bridge.timers.due_at(keys.window_timer(TAG, cid)) is None, "the window stopped"


async def test_an_answer_deleted_before_its_mark_lands_leaves_no_dead_letter(stack: Stack) -> None:
    """Its author deletes an answer at once: it reached platform CS (the author is told so), and the
    ✅ that has nothing left to mark is no dead letter for the operator to look into."""
    cid, root = await open_chat(stack)
    ts, _ = await stack.slack.user_message(MAIN, CHATS, "已发货", thread_ts=root.ts)
    stack.slack.messages.remove(stack.slack.message(CHATS, ts))
    await stack.settle()
    assert platform_texts(stack, cid) == ["已发货"]
    assert [c.args["timestamp"] for c in stack.slack.called("reactions.add")] == [ts], "tried, and found nothing"
    assert await stack.bridge.outbox.dead_letters(TAG) == []


async def test_the_operator_reads_in_the_log_where_the_bot_was_invited_or_removed(
    stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    """Removed from a configured channel, or invited to one the configuration does not name: the log
    says so at once, with whose place it is or the id to write; a person leaving changes nothing."""
    caplog.set_level(logging.INFO, "connectors.slack.app")
    assert await stack.slack.bot_membership(CHATS, joined=False, by=MAIN) == 200
    assert await stack.slack.bot_membership("C0NEWCHANNEL", joined=True, by=MAIN) == 200
    await stack.settle()
    said = sorted((r.levelname, r.getMessage()) for r in caplog.records if r.getMessage().startswith("Slack: the bot"))
    assert said == [
        ("ERROR", f"Slack: the bot was removed from slack:{CHATS} (store 1001's platform chats): nothing reaches it "
                  "until it is invited back (/invite); what fails meanwhile is kept in the dead letters to replay"),
        ("INFO", "Slack: the bot was added to C0NEWCHANNEL, which the configuration does not name; for a store or "
                 "creator there, write slack:C0NEWCHANNEL in its destinations"),
    ]  # fmt: skip


async def test_a_header_someone_deleted_is_posted_again_with_its_buttons(stack: Stack) -> None:
    """A workspace admin deletes a chat's header: its next change posts it again, with Claim,
    Reassign and Handled elsewhere, as the thread's root, and platform CS's next message goes under it."""
    cid, root = await open_chat(stack)
    stack.slack.messages.remove(root)
    await stack.slack.user_message(MAIN, CHATS, "您好", thread_ts=root.ts)
    await stack.settle()
    assert platform_texts(stack, cid) == ["您好"], "the answer under the old header still counts"
    again = stack.slack.channel(CHATS)[-1]
    assert again.ts != root.ts and "已回复" in again.text
    assert {e["action_id"] for b in again.blocks if b["type"] == "actions" for e in b["elements"]} >= {
        "chat_claim", "chat_reassign", "chat_elsewhere"}  # fmt: skip
    await stack.sandbox.chat_message(cid, {"type": "text", "text": "还有一个问题"})
    await stack.settle()
    assert "还有一个问题" in stack.slack.thread(CHATS, again.ts)[-1].text
    assert await stack.bridge.outbox.dead_letters(TAG) == []


async def test_several_replies_in_a_row_edit_the_header_once_and_a_new_window_again(stack: Stack) -> None:
    cid, root = await open_chat(stack)
    for text in ("您好", "已发货", "单号稍后发您"):
        await stack.slack.user_message(AGENT_A, CHATS, text, thread_ts=root.ts)
        await stack.settle()
    assert platform_texts(stack, cid) == ["您好", "已发货", "单号稍后发您"]
    header = stack.slack.message(CHATS, root.ts)
    assert "已回复" in header.text and header.edits == 1, "only the reply that stopped the window changed it"
    assert [m.reactions for m in stack.slack.thread(CHATS, root.ts)] == [["white_check_mark"]] * 3

    await stack.sandbox.chat_message(cid, {"type": "text", "text": "还有别的颜色吗？"})  # the window runs again
    await stack.settle()
    assert "待回复" in stack.slack.message(CHATS, root.ts).text
    await stack.slack.user_message(AGENT_A, CHATS, "有的", thread_ts=root.ts)
    await stack.settle()
    header = stack.slack.message(CHATS, root.ts)
    assert "已回复" in header.text and header.edits == 3, "waiting, then answered again"


async def test_image_reply_is_downloaded_from_slack_and_uploaded_to_the_platform(stack: Stack) -> None:
    cid, root = await open_chat(stack)
    file = stack.slack.add_file("proof.png", PNG, "image/png")
    await stack.slack.user_message(MAIN, CHATS, "见截图", thread_ts=root.ts, files=[file])
    await stack.settle()
    sent = [m["content"] for m in stack.sandbox.conversations[cid].messages if m["from"] == "merchant"]
    assert sent[0] == {"type": "text", "text": "见截图"}
    assert sent[1]["type"] == "image"
    media = stack.sandbox.media[sent[1]["media_id"]]
    assert (media["kind"], media["format"], media["size"]) == ("image", "png", len(PNG))


async def test_a_file_that_is_not_an_image_is_refused_to_its_author_in_their_language(stack: Stack) -> None:
    cid, root = await open_chat(stack)
    pdf = stack.slack.add_file("发票.pdf", b"%PDF-1.7\n" + b"\x00" * 100, "application/pdf")
    await stack.slack.user_message(MAIN, CHATS, "发票见附件", thread_ts=root.ts, files=[pdf])
    await stack.settle()
    assert platform_texts(stack, cid) == ["发票见附件"], "the text went; the file could not"
    assert stack.slack.ephemerals[-1]["text"] == (
        "你的回复未能送达平台：文件 发票.pdf 不是平台客服能接收的图片（按文件内容判断，只收 JPG/PNG 图片，不超过 5 MB）"
    )


async def test_a_colleague_mentioned_in_a_reply_reaches_the_platform_by_name(stack: Stack) -> None:
    cid, root = await open_chat(stack)
    await stack.slack.user_message(MAIN, CHATS, "<@U0AGENTB> 会跟进物流，<@U0SOMEONE> 也知道", thread_ts=root.ts)
    await stack.settle()
    assert platform_texts(stack, cid) == ["@客服 B 会跟进物流，@U0SOMEONE 也知道"], (
        "an agent by name; anyone else as Slack wrote"
    )


async def test_someone_not_designated_is_refused_privately(stack: Stack) -> None:
    cid, root = await open_chat(stack)
    await stack.slack.user_message(STRANGER, CHATS, "我来回复", thread_ts=root.ts)
    await stack.settle()
    assert platform_texts(stack, cid) == []
    [note] = stack.slack.ephemerals
    assert note["user"] == STRANGER and note["text"].startswith("消息未发送：只有本店铺的指定客服")


async def test_agent_without_im_permission_is_told_how_to_fix_it(redis: Redis, redis_url: str, tmp_path: Path) -> None:
    async with stack_changed(
        redis_url, tmp_path, lambda tree: tree["stores"][0]["agents"][2].update(im_permission=False)
    ) as s:
        cid = await s.sandbox.open_chat("1001")
        await s.settle()
        root = s.slack.channel(CHATS)[-1]
        await s.slack.user_message(AGENT_B, CHATS, "收到", thread_ts=root.ts)
        await s.settle()
        [note] = s.slack.ephemerals
        assert "没有飞鸽 IM 权限" in note["text"] and "商家后台 → 店铺 → 子账号管理 → 账号管理" in note["text"]
        assert [m for m in s.sandbox.conversations[cid].messages if m["from"] == "merchant"] == []
        help_b = await s.slash_command(AGENT_B, CHATS, "/feige", "help")
        assert help_b.endswith("你是本店客服 客服 B（账号 U0AGENTB）。你的账号没有飞鸽 IM 权限，不能回复平台客服会话。"
                               "主账号开通：商家后台 → 店铺 → 子账号管理 → 账号管理 → 开启 IM，保存。")  # fmt: skip


async def test_feige_help_tells_each_person_who_the_bridge_takes_them_for(stack: Stack) -> None:
    """Answering depends on being a designated agent with IM permission (A2): /feige help says where
    someone stands, and gives a stranger the account id the operator needs."""
    main = await stack.slash_command(MAIN, CHATS, "/feige", "help")
    assert main.endswith("你是本店客服 店长 Li（账号 U0MAIN1001）。你可以回复平台客服会话。")
    stranger = await stack.slash_command(STRANGER, CHATS, "/feige", "help")
    assert stranger.endswith(f"你的 slack 账号 {STRANGER} 不是本店配置的客服：回复平台客服会话和处理任务单，"
                             "需要店铺管理员把它写进 agents 的 accounts.slack。")  # fmt: skip
    # A word that is no command is said to be none, then the help (it was the help alone, as if asked).
    typo = (await stack.slash_command(MAIN, CHATS, "/feige", "stat 7d")).splitlines()
    assert typo[0] == "没有“/feige stat”这个命令。可用的命令如下：" and typo[1:] == main.splitlines()


async def test_an_agent_the_platform_says_lacks_im_permission_is_told_how_to_get_it(stack: Stack) -> None:
    """The store's config says agent B may answer; the platform, which knows better, answers 403."""
    agents = stack.sandbox.config.stores[0].agents
    agents[2] = agents[2].model_copy(update={"im_permission": False})  # the platform's view only
    cid, root = await open_chat(stack)
    await stack.slack.user_message(AGENT_B, CHATS, "收到", thread_ts=root.ts)
    await stack.settle()
    assert platform_texts(stack, cid) == []
    assert stack.slack.ephemerals[-1]["text"] == (
        "消息未发送：你的账号 agent-b 没有飞鸽 IM 权限。"
        "请主账号在 商家后台 → 店铺 → 子账号管理 → 账号管理 中开启 IM 权限并保存。"
    )


# -- A5, A6: reminders and the close ------------------------------------------------------------


async def deadline_of(stack: Stack, cid: str) -> float:
    return await hash_number(stack.redis, keys.chat(TAG, cid), "deadline")


async def test_reminders_then_the_bridge_closes_the_chat_and_refuses_late_replies(stack: Stack) -> None:
    cid, root = await open_chat(stack)
    deadline = await deadline_of(stack, cid)
    assert deadline == await hash_number(stack.redis, keys.chat(TAG, cid), "window_start") + 120
    await stack.advance_to(deadline - 60.1)
    assert texts(stack, root) == [], "no reminder before 60 s are left"
    await stack.advance_to(deadline - 60)
    close = f"<!date^{int(deadline)}^{{time_secs}}|{datetime.fromtimestamp(deadline, SH):%H:%M:%S}>"
    assert texts(stack, root)[-1].startswith(f"<@U0MAIN1001> ⏰ 还剩 60 秒回复（{close} 前），超时会话将关闭")
    await stack.advance_to(deadline - 30)
    assert texts(stack, root)[-1].startswith(f"<@U0MAIN1001> <@U0AGENTA> <@U0AGENTB> ⏰ 还剩 30 秒回复（{close} 前）")
    # The close waits a few seconds past the deadline for replies received in time, still in flight.
    await stack.advance_to(deadline + IN_FLIGHT_SECONDS - 0.1)
    assert (await stack.redis.hget(keys.chat(TAG, cid), "status")) == "open"
    await stack.advance_to(deadline + IN_FLIGHT_SECONDS)
    assert (await stack.redis.hget(keys.chat(TAG, cid), "status")) == "closed"
    header = stack.slack.message(CHATS, root.ts)
    assert "已关闭" in header.text and "服务单" in header.text
    assert "会话已关闭" in texts(stack, root)[-1]
    await stack.slack.user_message(MAIN, CHATS, "来晚了", thread_ts=root.ts)
    await stack.settle()
    assert platform_texts(stack, cid) == []
    assert stack.slack.ephemerals[-1]["text"].startswith("消息未发送：该会话已关闭")
    await stack.settle()
    [archived] = await stack.bridge.archive.chats("1001")
    assert (archived["close_reason"], archived["in_window"], archived["late_replies"]) == ("reply_timeout", False, 1)


async def test_a_kind_of_message_or_close_the_contract_does_not_name_yet_is_taken(stack: Stack) -> None:
    """A kind of message the platform adds later (a video) is taken, not refused: a refused push
    would hold back the chat while platform CS waits. The team reads that it came and where to see
    it, its window runs and is answered here, and the archive keeps what was sent. A close for a
    reason added later closes the chat all the same, in its own word."""
    cid, root = await open_chat(stack)
    await stack.slack.user_message(MAIN, CHATS, "您好", thread_ts=root.ts)
    await stack.settle()
    video = {"type": "video", "url": "https://fxg.example/v/1.mp4", "duration_s": 12}
    assert (await stack.sandbox.chat_message(cid, video)).statuses == [200]
    await stack.settle()
    assert texts(stack, root)[-1] == "小飞: 【video】此类消息无法在这里显示，请在飞鸽查看；回复照常写在这里"
    assert await stack.bridge.timers.due_at(keys.window_timer(TAG, cid)) is not None, "a new window runs"
    await stack.slack.user_message(MAIN, CHATS, "视频收到，马上处理", thread_ts=root.ts)
    await stack.settle()
    assert platform_texts(stack, cid) == ["您好", "视频收到，马上处理"]
    assert (await stack.sandbox.close_chat(cid, "consumer_left")).statuses == [200]
    await stack.settle()
    assert "⛔ 已关闭：平台已结束会话（consumer_left）" in stack.slack.message(CHATS, root.ts).text
    assert await stack.redis.hget(keys.chat(TAG, cid), "status") == "closed"
    [archived] = await stack.bridge.archive.chats("1001")
    assert archived["close_reason"] == "consumer_left"
    assert [(m["kind"], json.loads(m["text"])) for m in archived["messages"] if m["kind"] == "video"] == [
        ("video", video)
    ]


async def test_an_escalation_due_with_a_reminder_goes_in_it_on_time(stack: Stack) -> None:
    cid, root = await open_chat(stack)
    await stack.advance_to(await deadline_of(stack, cid) - 30)  # the example escalates at 30 s, as it reminds
    [_, reminder] = texts(stack, root)  # the 60 s reminder came first
    assert reminder.startswith("<@U0MAIN1001> <@U0AGENTA> <@U0AGENTB> ⏰ 还剩 30 秒回复（<!date^"), "one post, on time"
    assert reminder.endswith(
        "前），超时会话将关闭并生成服务单（service ticket）。🆘 负责人 店长 Li 尚未回复，请其他客服协助"
    ), "naming the assignee"
    await stack.advance_to(await deadline_of(stack, cid) - 20)
    assert len(texts(stack, root)) == 2, "and no second post for the escalation"


async def test_an_escalation_due_alone_mentions_the_other_designated_agents(
    redis: Redis, redis_url: str, tmp_path: Path
) -> None:
    async with stack_changed(
        redis_url, tmp_path, lambda tree: tree["stores"][0]["reply_window"].update(escalate_before=45)
    ) as s:
        cid, root = await open_chat(s)
        deadline = await deadline_of(s, cid)
        await s.advance_to(deadline - 30)
        close = f"<!date^{int(deadline)}^{{time_secs}}|{datetime.fromtimestamp(deadline, SH):%H:%M:%S}>"
        assert texts(s, root) == [
            f"<@U0MAIN1001> ⏰ 还剩 60 秒回复（{close} 前），超时会话将关闭并生成服务单（service ticket）",
            f"<@U0AGENTA> <@U0AGENTB> 🆘 请协助回复：还剩 45 秒（{close} 前）",
            f"<@U0MAIN1001> ⏰ 还剩 30 秒回复（{close} 前），超时会话将关闭并生成服务单（service ticket）",
        ]


async def test_platform_close_closes_it_once(stack: Stack) -> None:
    cid, root = await open_chat(stack)
    await stack.sandbox.close_chat(cid)
    await stack.sandbox.close_chat(cid)
    await stack.settle()
    assert [t for t in texts(stack, root) if "会话已关闭" in t] == [
        "⛔ 会话已关闭：平台客服已结束会话。之后的回复不会发送。"
    ]
    assert await stack.bridge.timers.due_at(keys.window_timer(TAG, cid)) is None


async def test_what_platform_cs_writes_after_the_bridge_closed_the_chat_is_still_shown(stack: Stack) -> None:
    """The platform's window (2–3 minutes) outlasts the bridge's (2): a message platform CS writes
    after the bridge's close is mirrored and archived, and an answer to it is refused as in any
    closed chat."""
    cid, root = await open_chat(stack)
    await stack.advance_to(await deadline_of(stack, cid) + IN_FLIGHT_SECONDS)
    assert texts(stack, root)[-1].startswith("⛔ 会话已关闭")
    await stack.sandbox.chat_message(cid, {"type": "text", "text": "商家还在吗？买家在等"})
    await stack.advance(2)  # the archive copies a change a moment after it
    assert texts(stack, root)[-1] == "小飞: 商家还在吗？买家在等"
    assert await stack.redis.hget(keys.chat(TAG, cid), "status") == "closed", "no window starts again"
    [archived] = await stack.bridge.archive.chats("1001")
    assert "商家还在吗？买家在等" in str(archived["messages"][-1])
    await stack.slack.user_message(MAIN, CHATS, "在的", thread_ts=root.ts)
    await stack.settle()
    assert platform_texts(stack, cid) == [] and stack.slack.ephemerals[-1]["text"].startswith(
        "消息未发送：该会话已关闭"
    )


async def test_platform_409_closes_the_chat_locally_and_tells_the_author(stack: Stack) -> None:
    cid, root = await open_chat(stack)
    stack.sandbox.conversations[cid].closed_reason = "platform_closed"  # closed on the platform's side only
    await stack.slack.user_message(AGENT_A, CHATS, "在的", thread_ts=root.ts)
    await stack.settle()
    assert (await stack.redis.hget(keys.chat(TAG, cid), "status")) == "closed"
    told = stack.slack.ephemerals[-1]["text"]
    assert told == "消息未发送：该会话已关闭（平台客服已结束会话）。", "as a reply to a closed chat reads"


async def test_a_reply_the_platform_refuses_for_the_bridges_credentials_tells_the_author_to_ask_the_operator(
    stack: Stack,
) -> None:
    cid, root = await open_chat(stack)
    stack.sandbox.fail_next("POST", f"/im/conversations/{cid}/messages", 401)
    await stack.slack.user_message(AGENT_A, CHATS, "在的", thread_ts=root.ts)
    await stack.settle()
    told = stack.slack.ephemerals[-1]["text"]
    assert told == "你的回复未能送达平台：平台不接受桥为此使用的接口凭证（api_token），请告诉桥的管理员"


# -- A7: one way only --------------------------------------------------------------------------


async def test_a_message_outside_a_chat_thread_is_not_forwarded(stack: Stack) -> None:
    cid, _ = await open_chat(stack)
    await stack.slack.user_message(MAIN, CHATS, "我想联系平台客服")
    await stack.settle()
    assert platform_texts(stack, cid) == []
    assert stack.slack.ephemerals[-1]["text"].startswith("消息未转发：商家不能主动联系平台客服")


async def test_an_answer_in_the_thread_of_a_chat_no_longer_kept_is_not_forwarded(stack: Stack) -> None:
    """The thread outlives the chat's state (forgotten after its retention): an answer there is
    outside any chat, and writes nothing."""
    cid, root = await open_chat(stack)
    await stack.bridge.chats.forget_state(TAG, cid)
    await stack.slack.user_message(MAIN, CHATS, "还在吗", thread_ts=root.ts)
    await stack.settle()
    assert platform_texts(stack, cid) == []
    assert stack.slack.ephemerals[-1]["text"].startswith("消息未转发：商家不能主动联系平台客服")
    assert await stack.redis.exists(keys.chat(TAG, cid), keys.chat_messages(TAG, cid)) == 0, "nothing written"


async def test_an_answer_in_an_unknown_thread_of_the_bot_is_tried_again_until_no_send_can_still_record_it(
    stack: Stack,
) -> None:
    """A thread the bot started that the bridge does not know may be a chat whose root's record is
    still to come, for as long as a send can take (the lease, then the send): an answer there is
    tried again until then, and refused after. In a thread started before that, or by a person
    (Slack names who), it is refused at once."""
    grace = refs.unrecorded_parent_seconds(stack.bridge.holder.current.timers.lease_seconds)
    cid, root = await open_chat(stack)
    await stack.redis.delete(keys.message_ref(TAG, f"slack:{CHATS}:{root.ts}"))  # as if never recorded
    await stack.slack.user_message(MAIN, CHATS, "在的", thread_ts=root.ts)
    await stack.advance(grace - 1)
    assert stack.slack.ephemerals == [], "an answer in a fresh thread of the bot's is tried again"
    await stack.advance(1 + refs.UNRECORDED_PARENT_RETRY_SECONDS[1])  # its first try after that
    assert [e["text"][:6] for e in stack.slack.ephemerals] == ["消息未转发："]
    assert platform_texts(stack, cid) == []

    await stack.slack.user_message(MAIN, CHATS, "还在吗", thread_ts=root.ts)  # the thread is older now
    await stack.bridge.drain()
    assert len(stack.slack.ephemerals) == 2, "refused at once"

    lunch, _ = await stack.slack.user_message(MAIN, CHATS, "午饭吃什么")
    await stack.bridge.drain()
    await stack.slack.user_message(AGENT_A, CHATS, "面", thread_ts=lunch)  # a person's fresh thread
    await stack.bridge.drain()
    assert [e["thread_ts"] for e in stack.slack.ephemerals[2:]] == [None, lunch], "both refused at once"


async def test_a_process_that_only_consumes_knows_the_bots_threads_from_a_persons(stack: Stack, redis_url: str) -> None:
    """bolt learns who the bot is when it authorizes a request, which a worker process never does:
    the connector asks Slack itself at start, so a worker refuses an answer in a person's fresh
    thread at once as well, instead of holding it as possibly one of the bot's."""
    holder = ConfigHolder(stack.bridge.holder.path, environ=stack.bridge.holder.environ)
    worker = Bridge(holder, open_redis(redis_url), clock=stack.clock, archive=Archive(stack.bridge.archive.url))  # type: ignore[arg-type]
    await worker.start(host="127.0.0.1", port=0, run_workers=False, serve_webhooks=False)
    try:
        for connector in worker.connectors.values():
            await connector.ready()
        lunch, _ = await stack.slack.user_message(MAIN, CHATS, "午饭吃什么")  # taken by the web process
        await stack.slack.user_message(AGENT_A, CHATS, "面", thread_ts=lunch)
        await worker.drain()  # the clock stands still: nothing waits for a retry
        refused = sorted(str(e["thread_ts"]) for e in stack.slack.ephemerals)  # two queues: either may land first
        assert refused == [lunch, "None"], "both refused at once"
    finally:
        await worker.stop()


# -- What the platform wrote arrives as written -------------------------------------------------


def sections_shown(message: Message) -> str:
    """The text of a message's sections as Slack shows it: its escapes undone."""
    return html.unescape("".join(b["text"]["text"] for b in message.blocks if b["type"] == "section" and "text" in b))


async def test_a_long_question_with_slack_markup_in_it_arrives_whole_and_pings_nobody(stack: Stack) -> None:
    question = "满<100元 & 包邮吗？<!channel> <@U0AGENTB> " + "买家说物流一直没有更新，希望尽快处理。" * 400
    cid, root = await open_chat(stack, {"type": "text", "text": question})
    follow_up = "另外 <https://evil.example|点这里> 是什么？" + "\n补充说明" * 700
    await stack.sandbox.chat_message(cid, {"type": "text", "text": follow_up})
    await stack.settle()
    assert await stack.bridge.outbox.dead_letters(TAG) == []
    [message] = stack.slack.thread(CHATS, root.ts)
    for posted in (root, message):
        sections = [b["text"]["text"] for b in posted.blocks if b["type"] == "section" and "text" in b]
        assert len(sections) >= 2 and max(map(len, sections)) <= 3000, "Block Kit takes 3,000 characters a section"
    assert sections_shown(root).endswith("*小飞*: " + question), "the root's first message, every character"
    # Cut where a line ends, the line break becomes the break between two sections.
    assert sections_shown(message).replace("\n", "") == ("*小飞*: " + follow_up).replace("\n", "")
    wire = str(root.blocks) + root.text + str(message.blocks) + message.text
    for markup in ("<!channel>", "<@U0AGENTB>", "<https://evil"):
        assert markup not in wire, "escaped, as Slack asks: shown as written, and pinging nobody"
    assert "满&lt;100元 &amp; 包邮吗？&lt;!channel&gt;" in str(root.blocks)


async def test_an_image_slack_cannot_download_arrives_as_its_link_rather_than_not_at_all(stack: Stack) -> None:
    private = "https://cdn.example/private/parcel.jpg?sign=abc&expires=1"
    stack.slack.unfetchable.add(private)
    cid, root = await open_chat(stack, {"type": "image", "url": private})  # in the root, which is edited later too
    await stack.sandbox.chat_message(cid, {"type": "image", "url": private})
    await stack.settle()
    assert await stack.bridge.outbox.dead_letters(TAG) == []
    [message] = stack.slack.thread(CHATS, root.ts)
    link = "<https://cdn.example/private/parcel.jpg?sign=abc&amp;expires=1|🖼 平台客服发送的图片>"
    for posted in (root, message):
        assert posted.blocks[-1] == {"type": "section", "text": {"type": "mrkdwn", "text": link}}
    await stack.slack.user_message(MAIN, CHATS, "收到", thread_ts=root.ts)
    await stack.settle()
    assert "已回复" in stack.slack.message(CHATS, root.ts).text and stack.slack.message(CHATS, root.ts).edits == 1


# -- Slack's own behaviour -------------------------------------------------------------------


async def test_slack_retries_are_handled_once(stack: Stack) -> None:
    cid, root = await open_chat(stack)
    ts, _ = await stack.slack.user_message(MAIN, CHATS, "好的", thread_ts=root.ts)
    first_event = f"Ev{stack.slack._run}{int(ts.split('.')[1]) + 1:08d}"
    await stack.slack.user_message(MAIN, CHATS, "好的", thread_ts=root.ts, retry_of=first_event)
    await stack.settle()
    assert platform_texts(stack, cid) == ["好的"]
    [archived] = await stack.bridge.archive.chats("1001")
    assert archived["replies"] == 1 and len(archived["messages"]) == 2, "one reply, counted and kept once"


async def test_badly_signed_slack_request_is_refused(stack: Stack) -> None:
    body = '{"type": "event_callback", "event": {"type": "message"}}'
    headers = stack.slack.sign(body) | {"X-Slack-Signature": "v0=" + "0" * 64, "Content-Type": "application/json"}
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{stack.url}/slack/events", data=body, headers=headers) as resp,
    ):
        assert resp.status == 401


async def test_posts_to_one_channel_are_spaced_and_never_hit_slacks_rate_limit(stack: Stack) -> None:
    for _ in range(3):
        await stack.sandbox.open_chat("1001", ORDER_CARD)
    await stack.settle()
    for cid in list(stack.sandbox.conversations):
        await stack.sandbox.chat_message(cid, {"type": "text", "text": "还在吗"})
    await stack.settle()
    posts = [c for c in stack.slack.called("chat.postMessage") if c.args.get("channel") == CHATS]
    assert len(posts) == 6 and stack.slack.rate_limited == 0
    times = [c.at for c in posts]
    assert all(b - a >= CHANNEL_SPACING_SECONDS - 1e-6 for a, b in itertools.pairwise(times)), "one a second"


async def test_late_timers_never_squeeze_two_posts_closer_than_the_spacing(stack: Stack) -> None:
    """Slots are kept between actual sends: a post whose timer fired late pushes the next one back."""
    assert isinstance(stack.clock, ManualClock)
    for _ in range(3):
        await stack.sandbox.open_chat("1001")
    start = stack.clock.now()
    for _ in range(20):  # every timer fires 0.7 s after it was due, as on a loaded machine
        await stack.bridge.drain()
        due = await stack.next_due()
        if due is None or due > start + 30:  # the posts, not the reminders a minute on
            break
        stack.clock.set(max(due, stack.clock.now()) + 0.7)
    times = [c.at for c in stack.slack.called("chat.postMessage") if c.status == 200]
    assert len(times) == 3 and all(b - a >= CHANNEL_SPACING_SECONDS - 1e-6 for a, b in itertools.pairwise(times))
    assert stack.slack.rate_limited == 0


async def test_a_429_rests_the_channel_and_the_refused_post_goes_first_after_it(stack: Stack) -> None:
    stack.slack.exhaust(CHATS)  # another app just used the channel's allowance
    first = await stack.sandbox.open_chat("1001", {"type": "text", "text": "第一位"})
    await stack.bridge.drain()  # the first root is refused with 429 and Retry-After
    assert stack.slack.rate_limited == 1
    await stack.sandbox.open_chat("1001", {"type": "text", "text": "第二位"})
    await stack.settle()
    posts = [c for c in stack.slack.called("chat.postMessage")]
    assert [c.status for c in posts] == [429, 200, 200], "one 429, and none after it"
    assert posts[1].at - posts[0].at >= 1.0, "not before the Retry-After"
    roots = stack.slack.channel(CHATS)
    assert "第一位" in roots[0].text and "第二位" in roots[1].text, "the refused post kept its place"
    assert first in roots[0].metadata["event_payload"]["job"]  # type: ignore[index]


# -- A9: response figures -------------------------------------------------------------------------


async def test_stats_on_demand_and_metrics(stack: Stack) -> None:
    cid, root = await open_chat(stack)
    await stack.advance_to(await deadline_of(stack, cid) - 78)
    await stack.slack.user_message(MAIN, CHATS, "在的", thread_ts=root.ts)
    await stack.settle()
    await open_chat(stack)
    await stack.advance(120 + IN_FLIGHT_SECONDS)
    answer = await stack.slash_command(MAIN, CHATS, "/feige", "stats")
    assert answer.startswith("📊 示例旗舰店 Demo Flagship Store 平台客服响应统计 · 今天"), answer
    assert "全店：会话 2，首次回复 p50 42.0 秒 / p90 42.0 秒，窗口内回复 50%，超时丢失 1" in answer
    assert "• 店长 Li：会话 1，首次回复 p50 42.0 秒 / p90 42.0 秒，窗口内回复 100%，超时丢失 0" in answer
    assert "• 客服 A：会话 1，首次回复 p50 — / p90 —，窗口内回复 0%，超时丢失 1" in answer
    async with aiohttp.ClientSession() as http, http.get(f"{stack.url}/metrics") as resp:
        metrics = await resp.text()
    assert 'feige_first_reply_seconds_count{agent="main-1001",store="1001"}' in metrics
    assert 'feige_chats_lost_to_timeout_total{agent="agent-a",store="1001"}' in metrics
    assert 'feige_outbox_jobs_total{kind="platform.send_message",outcome="sent"}' in metrics


async def test_a_period_is_asked_for_by_its_name_too_and_a_wrong_one_is_said_to_be(stack: Stack) -> None:
    """``近 7 天`` is the period the answer's title names; ``week`` is no period, and gets the
    choices, never today's figures under a title that says today."""
    answer = await stack.slash_command(MAIN, CHATS, "/feige", "Stats 近 7 天")
    assert answer.startswith("📊 示例旗舰店 Demo Flagship Store 平台客服响应统计 · 近 7 天"), answer
    wrong = await stack.slash_command(MAIN, CHATS, "/feige", "stats week")
    assert wrong == "没有“week”这个时段。可选：today|7d|30d（今天、近 7 天、近 30 天）。"


async def test_an_english_store_reads_english(redis: Redis, redis_url: str, tmp_path: Path) -> None:
    async with stack_changed(redis_url, tmp_path, lambda tree: tree["stores"][0].update(locale="en")) as s:
        cid = await s.sandbox.open_chat("1001", ORDER_CARD)
        await s.settle()
        root = s.slack.channel(CHATS)[-1]
        assert root.text.startswith("Feige · platform customer service chat (平台客服会话)")
        assert "Assigned to <@U0MAIN1001> (open chats when assigned: 店长 Li 0, 客服 A 0, 客服 B 0)" in str(root.blocks)
        assert root.blocks[-1]["elements"][0]["text"]["text"] == "View details"
        await s.advance_to(await hash_number(s.redis, keys.chat(TAG, cid), "deadline") + IN_FLIGHT_SECONDS)
        assert "Closed: no reply in time; a service ticket (服务单) will follow" in s.slack.message(CHATS, root.ts).text


async def test_a_429_from_slack_is_retried_after_its_retry_after(stack: Stack) -> None:
    assert stack.clock is not None
    stack.slack.exhaust(CHATS)  # another app just used up the channel's allowance
    _, root = await open_chat(stack)
    assert stack.slack.rate_limited == 1
    assert root.text.startswith("飞鸽 · 平台客服会话"), "the root landed after the wait"
    statuses = [c.status for c in stack.slack.called("chat.postMessage")]
    assert statuses[:2] == [429, 200]


async def test_a_reply_racing_the_roots_bookkeeping_is_not_refused(stack: Stack) -> None:
    cid, root = await open_chat(stack)
    ref = keys.message_ref(TAG, f"slack:{CHATS}:{root.ts}")
    thread = await stack.redis.get(ref)
    assert thread is not None
    await stack.redis.delete(ref)  # as if the root's post had not been recorded yet
    reply = asyncio.create_task(stack.slack.user_message(MAIN, CHATS, "秒回", thread_ts=root.ts))
    await asyncio.sleep(0.3)
    await stack.redis.set(ref, thread)
    await reply
    await stack.settle()
    assert platform_texts(stack, cid) == ["秒回"] and stack.slack.ephemerals == []
    assert 0 < await stack.redis.ttl(keys.thread_root(TAG, f"chat:{cid}")) <= keys.REF_KEEP_SECONDS, "it expires"


async def test_a_closed_chats_ordering_state_is_forgotten_after_its_retention(stack: Stack) -> None:
    assert stack.clock is not None
    cid, _ = await open_chat(stack)
    thread = f"chat:{cid}"
    assert await stack.redis.hget(keys.thread_done(TAG), thread) == "1"
    await stack.sandbox.close_chat(cid)
    await stack.settle()
    await stack.advance(keys.FINISHED_KEEP_SECONDS - 60)
    assert await stack.redis.hget(keys.thread_seq(TAG), thread) == "2", "kept while the chat is"
    assert await stack.redis.exists(keys.chat(TAG, cid), keys.chat_messages(TAG, cid)) == 2
    await stack.advance(120)
    assert await stack.redis.hget(keys.thread_seq(TAG), thread) is None
    assert await stack.redis.hget(keys.thread_done(TAG), thread) is None
    assert await stack.redis.exists(keys.chat(TAG, cid), keys.chat_messages(TAG, cid)) == 0, "archived, then gone"
    [archived] = await stack.bridge.archive.chats("1001")
    assert (archived["conversation_id"], archived["status"], len(archived["messages"])) == (cid, "closed", 1)
    await stack.sandbox.chat_message(cid, {"type": "text", "text": "a late event of the same chat"})
    await stack.settle()
    assert await stack.redis.hget(keys.thread_done(TAG), thread) == "1", "it starts again and is handled"


async def test_a_post_whose_process_died_before_recording_it_is_not_posted_twice(stack: Stack) -> None:
    assert stack.clock is not None
    cid, root = await open_chat(stack)
    assert root.metadata is not None and root.metadata["event_type"] == "feige_bridge_post", "posts name their job"
    job_id = root.metadata["event_payload"]["job"]
    # As if the process had died after Slack took the post, before recording it and taking the job
    # off its queue: the mapping is gone, the job is first again, and its thread's sender runs.
    await stack.redis.delete(keys.thread_root(TAG, f"chat:{cid}"))
    job = OutboxJob.loads(json.dumps({"id": job_id, "kind": "slack.post", "payload": {
        "tag": TAG, "thread_key": f"chat:{cid}", "store": "1001", "channel": CHATS, "root": True,
        "view": {"type": "notice", "text": "again"}}}))  # fmt: skip
    thread = f"chat:{cid}:slack"
    await stack.redis.lpush(keys.outbox_queue(TAG, thread), job.dumps())
    await stack.bridge.outbox.handle_timer(Timer(keys.outbox_timer(TAG, thread), stack.clock.now(), None, 0))
    assert len(stack.slack.channel(CHATS)) == 1, "not posted a second time"
    assert await stack.bridge.redis.get(keys.thread_root(TAG, f"chat:{cid}")) == f"slack:{CHATS}:{root.ts}"
    assert await stack.bridge.outbox.pending(TAG, thread) == []


async def test_an_edit_or_a_deletion_of_a_sent_reply_is_explained_to_its_author(stack: Stack) -> None:
    """The platform cannot change a sent message: the author is told, with what the platform has."""
    cid, root = await open_chat(stack)
    assignee = {"main-1001": MAIN, "agent-a": AGENT_A, "agent-b": AGENT_B}[
        str(await stack.redis.hget(keys.chat(TAG, cid), "assignee"))
    ]
    ts, _ = await stack.slack.user_message(assignee, CHATS, "明天发货", thread_ts=root.ts)
    await stack.settle()
    assert await stack.slack.change_message(assignee, CHATS, ts, "今天发货") == 200
    await stack.settle()
    told = stack.slack.ephemerals[-1]
    assert told["user"] == assignee and told["thread_ts"] == root.ts
    assert told["text"] == "平台不支持修改已发送的消息，你的修改没有发出。平台收到的是：明天发货"
    assert await stack.slack.change_message(assignee, CHATS, ts, None) == 200
    await stack.settle()
    assert stack.slack.ephemerals[-1]["text"].startswith("平台不支持撤回已发送的消息，对方仍能看到它。")
    sent = [m["content"]["text"] for m in stack.sandbox.conversations[cid].messages if m["from"] == "merchant"]
    assert sent == ["明天发货"], "nothing more reached the platform"
    # A message the bridge never sent (here: in the channel, not in a chat's thread) is nobody's concern.
    told_before = len(stack.slack.ephemerals)
    loose, _ = await stack.slack.user_message(assignee, CHATS, "大家好")
    await stack.settle()
    await stack.slack.change_message(assignee, CHATS, loose, "大家早")
    await stack.settle()
    assert len(stack.slack.ephemerals) == told_before + 1, "only the refusal of the loose message itself"


async def test_an_internal_note_stays_in_the_thread(stack: Stack) -> None:
    """A message that starts with a note marker is never forwarded; the thread marks it as a note."""
    cid, root = await open_chat(stack)
    ts, _ = await stack.slack.user_message(MAIN, CHATS, "// 这位买家上周也问过，先查物流", thread_ts=root.ts)
    await stack.settle()
    assert stack.sandbox.conversations[cid].messages[-1]["from"] == "platform", "nothing reached the platform"
    assert stack.slack.message(CHATS, ts).reactions == ["memo"]
    assert await stack.redis.hget(keys.chat(TAG, cid), "status") == "open" and not stack.slack.ephemerals


async def test_claim_and_reassign_move_the_chat_and_its_load(stack: Stack) -> None:
    """Any designated agent claims a chat; only the main account hands it to someone else. The load
    table follows and the platform is not told."""
    cid, root = await open_chat(stack)
    before = str(await stack.redis.hget(keys.chat(TAG, cid), "assignee"))
    users = {"main-1001": MAIN, "agent-a": AGENT_A, "agent-b": AGENT_B}
    claimer = next(a for a in ("agent-a", "agent-b") if a != before)
    buttons = [e["action_id"] for b in root.blocks if b["type"] == "actions" for e in b["elements"]]
    assert buttons == ["chat_claim", "chat_reassign", "chat_elsewhere"], "the header's quick actions"
    calls_before = len(stack.sandbox.received("POST"))

    assert await stack.slack.block_action(STRANGER, CHATS, root.ts, "chat_claim", cid) == 200
    await stack.settle()
    assert stack.slack.ephemerals[-1]["user"] == STRANGER and "指定客服" in stack.slack.ephemerals[-1]["text"]
    assert await stack.slack.block_action(users[claimer], CHATS, root.ts, "chat_claim", cid) == 200
    await stack.settle()
    assert await stack.redis.hget(keys.chat(TAG, cid), "assignee") == claimer
    loads = await stack.redis.hgetall(keys.agent_load(TAG))
    assert (loads[claimer], loads.get(before, "0")) == ("1", "0"), "the load table follows"
    notice = stack.slack.thread(CHATS, root.ts)[-1]
    assert notice.text.startswith("👤 ") and f"<@{users[claimer]}>" in notice.text
    assert f"<@{users[claimer]}>" in stack.slack.message(CHATS, root.ts).text or any(
        f"<@{users[claimer]}>" in str(b) for b in stack.slack.message(CHATS, root.ts).blocks
    ), "the header names the new assignee"

    assert await stack.slack.block_action(users[claimer], CHATS, root.ts, "chat_reassign", cid) == 200
    await stack.settle()
    assert stack.slack.ephemerals[-1]["text"].startswith("未转交：只有主账号"), "only the main account reassigns"
    assert await stack.slack.block_action(MAIN, CHATS, root.ts, "chat_reassign", cid) == 200
    await stack.settle()
    picker = stack.slack.thread(CHATS, root.ts)[-1]
    choices = [e["value"] for b in picker.blocks if b["type"] == "actions" for e in b["elements"]]
    assert f"{cid}:{claimer}" not in choices and f"{cid}:main-1001" in choices
    asked = picker.text  # the emulator's message itself: an edit changes it
    assert await stack.slack.block_action(MAIN, CHATS, picker.ts, "chat_assign_to", f"{cid}:main-1001") == 200
    await stack.settle()
    assert await stack.redis.hget(keys.chat(TAG, cid), "assignee") == "main-1001"
    assert len(stack.sandbox.received("POST")) == calls_before, "the platform is not told"
    picked = stack.slack.message(CHATS, picker.ts)
    assert picked.text == asked and not [b for b in picked.blocks if b["type"] == "actions"], "the menu's buttons go"
    # A menu offered and left: the chat's close takes its buttons too.
    assert await stack.slack.block_action(MAIN, CHATS, root.ts, "chat_reassign", cid) == 200
    await stack.settle()
    left = stack.slack.thread(CHATS, root.ts)[-1]
    assert left.ts != picker.ts and [b for b in left.blocks if b["type"] == "actions"]
    await stack.sandbox.close_chat(cid)
    await stack.settle()
    assert not [b for b in stack.slack.message(CHATS, left.ts).blocks if b["type"] == "actions"]


async def test_an_agent_with_a_long_name_still_gets_a_reassign_picker(
    redis: Redis, redis_url: str, tmp_path: Path
) -> None:
    long_name = "客服 B（华东仓售后专席，负责退换货、补发与物流异常）" * 4

    def long_named(tree: dict[str, Any]) -> None:
        tree["stores"][0]["agents"][2]["name"] = long_name

    async with stack_changed(redis_url, tmp_path, long_named) as s:
        cid, root = await open_chat(s)
        assert await s.slack.block_action(MAIN, CHATS, root.ts, "chat_reassign", cid) == 200
        await s.settle()
        picker = s.slack.thread(CHATS, root.ts)[-1]
        labels = [e["text"]["text"] for b in picker.blocks if b["type"] == "actions" for e in b["elements"]]
        assert long_name[:75] in labels, "Slack takes 75 characters a button: the name is cut, the picker posted"
        assert await s.bridge.outbox.dead_letters(TAG) == []


async def test_handled_elsewhere_stops_the_reminders_and_the_close(stack: Stack) -> None:
    cid, root = await open_chat(stack)
    assignee = {"main-1001": MAIN, "agent-a": AGENT_A, "agent-b": AGENT_B}[
        str(await stack.redis.hget(keys.chat(TAG, cid), "assignee"))
    ]
    assert await stack.slack.block_action(STRANGER, CHATS, root.ts, "chat_elsewhere", cid) == 200
    await stack.settle()
    assert stack.slack.ephemerals[-1]["user"] == STRANGER, "only designated agents may say so"
    assert await stack.slack.block_action(assignee, CHATS, root.ts, "chat_elsewhere", cid) == 200
    await stack.settle()
    notice = stack.slack.thread(CHATS, root.ts)[-1].text
    assert notice.startswith("✋ ") and "不再提醒" in notice
    posts = len(stack.slack.thread(CHATS, root.ts))
    await stack.advance(120 + IN_FLIGHT_SECONDS + 30)
    assert len(stack.slack.thread(CHATS, root.ts)) == posts, "no reminder, no close notice"
    assert await stack.redis.hget(keys.chat(TAG, cid), "status") == "open"
    assert "已在别处处理" in stack.slack.message(CHATS, root.ts).text


async def test_the_header_names_the_assignee_and_the_loads_it_was_chosen_from(stack: Stack) -> None:
    """What a notification (and the demo's transcript) shows of the header, as Telegram's does."""
    _, root = await open_chat(stack)
    assert "负责人：<@" in root.text and "（分配时各客服进行中会话：店长 Li 0, 客服 A 0, 客服 B 0）" in root.text


async def test_a_reply_under_a_root_a_dead_process_did_not_record_reaches_the_platform(stack: Stack) -> None:
    """Slack took the chat's root, and the process that sent it died before recording where it
    landed: the record waits for the process that takes the send over (once the lease lapses, 5
    s), longer than a reply waits for it at first. An agent's answer in that thread is tried again
    until the root is known, instead of counting as written outside any chat."""
    senders = stack.bridge.outbox.senders
    post, taken, recording = senders["slack.post"], asyncio.Event(), asyncio.Event()

    async def held_after_slack_took_it(job: OutboxJob) -> object:
        landed = await post(job)
        taken.set()
        await recording.wait()  # the record comes only from the run that takes the send over
        return landed

    senders["slack.post"] = held_after_slack_took_it  # type: ignore[assignment]
    cid = await stack.sandbox.open_chat("1001")
    await stack.bridge.consumer.drain(claim=False)
    sending = asyncio.create_task(stack.bridge.worker.drain())
    async with asyncio.timeout(5):
        await taken.wait()
    root = stack.slack.channel(CHATS)[-1]
    await stack.slack.user_message(AGENT_A, CHATS, "在的", thread_ts=root.ts)
    await stack.bridge.consumer.drain(claim=False)  # waits its 1.5 s for the root, in vain
    assert stack.clock is not None
    for _ in range(6):  # 30 s: as long as a live process's send may wait for Slack's answer
        stack.clock.advance(5)
        await stack.bridge.consumer.drain(claim=False)
    assert platform_texts(stack, cid) == [], "nothing sent while its chat is unknown"
    recording.set()
    await sending
    await stack.settle()
    assert platform_texts(stack, cid) == ["在的"]
    assert stack.slack.ephemerals == [], "never refused"
    assert len([m for m in stack.slack.channel(CHATS) if m.ts == root.ts]) == 1, "the root posted once"
