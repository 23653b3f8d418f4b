"""Flow 1 in a Telegram group (store 1002): a reply chain under a header message per chat."""

from __future__ import annotations

import asyncio
import html
import logging
import re
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import yaml

from bridge.config import load_config
from bridge.engine import keys
from bridge.engine.events import IN_FLIGHT_SECONDS
from bridge.engine.outbox import OutboxJob
from tests.conftest import EXAMPLE_CONFIG, Stack, hash_number

GROUP = -1001002000001
OWNER, STRANGER = 1002001, 5555
OTHER_BOT = 7777  # another bot in the group (a stand-up bot)
TAG = "{store:1002}"

ORDER_CARD = {"type": "order_card", "order_id": "6909", "product_name": "Mug", "amount_cents": 5900, "status": "paid",
              "detail_url": "https://fxg.example/order/6909"}  # fmt: skip


async def open_chat(stack: Stack) -> tuple[str, int]:
    cid = await stack.sandbox.open_chat("1002", ORDER_CARD)
    await stack.settle()
    root = stack.telegram.by_bot(GROUP)[-1]
    return cid, root.message_id


def merchant_texts(stack: Stack, cid: str) -> list[object]:
    return [m["content"].get("text") for m in stack.sandbox.conversations[cid].messages if m["from"] == "merchant"]


async def test_header_with_assignee_mention_and_order_card_button(stack: Stack) -> None:
    cid, root_id = await open_chat(stack)
    root = stack.telegram.message(GROUP, root_id)
    assert "platform customer service chat" in root.text and "Waiting for a reply" in root.text
    store = stack.bridge.holder.current.store("1002")
    assert store is not None
    deadline = datetime.fromtimestamp(await hash_number(stack.redis, keys.chat(TAG, cid), "deadline"),
                                      ZoneInfo(store.timezone))  # fmt: skip
    assert f"answer by {deadline:%H:%M:%S} (120 s window)" in root.text, "a window's close, to the second"
    assert '<a href="tg://user?id=1002001">Owner Wang</a>' in root.text, "the assignee is mentioned"
    assert "6909" in root.text
    [card, header] = root.reply_markup["inline_keyboard"]  # type: ignore[index]
    assert card == [{"text": "View details", "url": "https://fxg.example/order/6909"}]
    assert [(b["text"], b["callback_data"].split(":")[0]) for b in header] == [
        ("Claim", "cl"),
        ("Reassign…", "ra"),
        ("Handled elsewhere", "ew"),
    ]


async def test_a_question_longer_than_telegram_takes_is_shown_cut_with_a_note_rather_than_lost(stack: Stack) -> None:
    question = "The buyer says <b>nothing</b> & " + "the parcel has not moved for a week. " * 150  # 5,582 characters
    cid = await stack.sandbox.open_chat("1002", {"type": "text", "text": question})
    await stack.settle()
    await stack.sandbox.chat_message(cid, {"type": "text", "text": question})
    await stack.settle()
    assert await stack.bridge.outbox.dead_letters(TAG) == []
    root, message = stack.telegram.by_bot(GROUP)[-2:]
    for posted in (root, message):
        shown = html.unescape(re.sub(r"<[^>]*>", "", posted.text))
        assert len(shown) <= 4096, "Telegram's length, counted as Telegram counts it"
        [count] = re.findall(r"… \((\d+) more characters are over the message length and not shown; read the whole "
                             r"text in Feige\)", shown)  # fmt: skip
        assert question[: len(question) - int(count)] + "…" in shown, "what is shown is the start, as written"
        assert "says <b>nothing</b> &" in shown, "the platform's text is shown as written, not read as HTML"
    await stack.telegram.user_message(OWNER, GROUP, "Resent today", reply_to=message.message_id)
    await stack.settle()
    assert merchant_texts(stack, cid) == ["Resent today"]
    assert "Answered" in stack.telegram.message(GROUP, root.message_id).text, "the header's edit fits too"


async def test_a_reply_to_the_chain_answers_and_gets_a_reaction(stack: Stack) -> None:
    cid, root_id = await open_chat(stack)
    await stack.sandbox.chat_message(cid, {"type": "text", "text": "still there?"})
    await stack.settle()
    follow_up = stack.telegram.by_bot(GROUP)[-1]
    assert follow_up.reply_to == root_id
    message, status = await stack.telegram.user_message(OWNER, GROUP, "Shipped today 🚚", reply_to=follow_up.message_id)
    assert status == 200
    await stack.settle()
    assert merchant_texts(stack, cid) == ["Shipped today 🚚"]
    assert stack.telegram.message(GROUP, message.message_id).reactions == ["👍"]
    assert "Answered" in stack.telegram.message(GROUP, root_id).text


async def test_a_link_under_words_of_its_own_reaches_platform_cs_with_its_address(stack: Stack) -> None:
    """Telegram sends a link someone put under their own words (a text_link) beside the text, which
    alone would lose the address; one under its own address is not written twice."""
    cid, root_id = await open_chat(stack)
    text = "已发货 🚚 查询物流, 或 https://sf-express.com"  # "查询物流" links the tracking page

    def at(words: str) -> int:  # Telegram's offset: in UTF-16 code units, of which 🚚 is two
        return len(text[: text.index(words)].encode("utf-16-le")) // 2

    links = [{"type": "text_link", "offset": at("查询物流"), "length": 4, "url": "https://sf-express.com/t/SF1"},
             {"type": "text_link", "offset": at("https"), "length": 22, "url": "https://sf-express.com"}]  # fmt: skip
    await stack.telegram.user_message(OWNER, GROUP, text, reply_to=root_id, entities=links)
    await stack.settle()
    assert merchant_texts(stack, cid) == [
        "已发货 🚚 查询物流 (https://sf-express.com/t/SF1), 或 https://sf-express.com"
    ]


async def test_an_answer_deleted_before_its_mark_lands_leaves_no_dead_letter(stack: Stack) -> None:
    cid, root_id = await open_chat(stack)
    answer, _ = await stack.telegram.user_message(OWNER, GROUP, "Shipped today", reply_to=root_id)
    stack.telegram.messages.remove(answer)  # its author deleted it at once
    await stack.settle()
    assert merchant_texts(stack, cid) == ["Shipped today"]
    assert [c.ok for c in stack.telegram.called("setMessageReaction")] == [False], "tried, and found nothing"
    assert await stack.bridge.outbox.dead_letters(TAG) == []


async def test_refusals_reply_to_the_refused_message(stack: Stack) -> None:
    cid, root_id = await open_chat(stack)
    stranger, _ = await stack.telegram.user_message(STRANGER, GROUP, "I can answer", reply_to=root_id)
    outside, _ = await stack.telegram.user_message(OWNER, GROUP, "Hello platform")  # not in any chat's chain
    await stack.settle()
    replies = {m.reply_to: m.text for m in stack.telegram.by_bot(GROUP) if m.reply_to is not None}
    assert replies[stranger.message_id].startswith("Not sent: only the store's designated agents")
    assert replies[outside.message_id].startswith("Not forwarded: merchants cannot start a chat")
    assert merchant_texts(stack, cid) == []
    assert await stack.redis.hget(keys.chat(TAG, cid), "status") == "open"


async def test_a_reply_to_a_person_or_another_bot_is_refused_at_once_and_holds_nothing_back(stack: Stack) -> None:
    """A reply to a message that was not the bridge's bot's cannot be in a chat whose first message
    is still being recorded (those start with the bot's): it is refused at once, and an answer
    written after it in the group, in line behind it, is not held back."""
    cid, root_id = await open_chat(stack)
    chatter, _ = await stack.telegram.user_message(STRANGER, GROUP, "lunch?")
    aside, _ = await stack.telegram.user_message(OWNER, GROUP, "12:30", reply_to=chatter.message_id)
    poll = stack.telegram.bot_message(OTHER_BOT, GROUP, "Daily stand-up: what did you ship?")
    to_bot, _ = await stack.telegram.user_message(OWNER, GROUP, "the mugs", reply_to=poll.message_id)
    await stack.telegram.user_message(OWNER, GROUP, "Shipped today", reply_to=root_id)
    await stack.bridge.drain()  # the clock stands still: nothing waits for a retry
    assert merchant_texts(stack, cid) == ["Shipped today"]
    await stack.settle()
    replies = {m.reply_to: m.text for m in stack.telegram.by_bot(GROUP) if m.reply_to is not None}
    assert replies[aside.message_id].startswith("Not forwarded: merchants cannot start a chat")
    assert replies[to_bot.message_id].startswith("Not forwarded: merchants cannot start a chat")


async def test_a_photo_reply_is_downloaded_from_telegram_and_uploaded(stack: Stack) -> None:
    cid, root_id = await open_chat(stack)
    png = b"\x89PNG\r\n\x1a\n" + b"\x00" * 100
    await stack.telegram.user_message(OWNER, GROUP, "waybill", reply_to=root_id, photo=png)
    await stack.settle()
    sent = [m["content"] for m in stack.sandbox.conversations[cid].messages if m["from"] == "merchant"]
    assert sent[0] == {"type": "text", "text": "waybill"} and sent[1]["type"] == "image"
    assert stack.sandbox.media[sent[1]["media_id"]]["size"] == len(png)


async def test_a_forum_group_gets_one_topic_per_chat(stack: Stack) -> None:
    stack.telegram.forums.add(GROUP)
    first, root_id = await open_chat(stack)
    second, _ = await open_chat(stack)
    topics = [c.args for c in stack.telegram.called("createForumTopic")]
    assert [t["name"] for t in topics] == ["⏳ Platform CS · 🧾 6909 Mug"] * 2, "status, then what it is about"
    topic = stack.telegram.message(GROUP, root_id).thread_id
    assert topic is not None and (GROUP, topic) in stack.telegram.topics
    await stack.sandbox.chat_message(first, {"type": "text", "text": "still there?"})
    await stack.settle()
    follow_up = stack.telegram.by_bot(GROUP)[-1]
    assert follow_up.thread_id == topic and follow_up.reply_to is None, "in the topic, not a reply chain"
    stranger, _ = await stack.telegram.user_message(STRANGER, GROUP, "I can answer", thread_id=topic)
    answer, _ = await stack.telegram.user_message(OWNER, GROUP, "On its way 📦", thread_id=topic)
    await stack.settle()
    refusal = next(m for m in stack.telegram.by_bot(GROUP) if m.reply_to == stranger.message_id)
    assert refusal.thread_id == topic and refusal.text.startswith("Not sent: only the store's designated agents")
    assert merchant_texts(stack, first) == ["On its way 📦"] and merchant_texts(stack, second) == []
    assert stack.telegram.message(GROUP, answer.message_id).reactions == ["👍"]
    assert "Answered" in stack.telegram.message(GROUP, root_id).text
    assert stack.telegram.topics[(GROUP, topic)] == "💬 Platform CS · 🧾 6909 Mug", "the topic shows it was answered"


async def test_a_task_order_in_a_forum_gets_its_own_topic(stack: Stack) -> None:
    stack.telegram.forums.add(GROUP)
    tid = await stack.sandbox.create_task_order("1002", "c-7001")
    await stack.settle()
    [created] = stack.telegram.called("createForumTopic")
    assert created.args["name"].startswith("⏳ [物流问题 Logistics]") and tid in created.args["name"]
    card = next(m for m in stack.telegram.by_bot(GROUP) if m.reply_markup and tid in m.text)
    await stack.telegram.user_message(OWNER, GROUP, "Reshipping today", thread_id=card.thread_id)
    await stack.settle()
    assert [c["text"] for c in stack.sandbox.task_orders[tid].comments] == ["Reshipping today"]


async def test_reminders_mention_the_assignee_then_the_window_closes_the_chat(stack: Stack) -> None:
    cid, root_id = await open_chat(stack)
    await stack.advance(60)
    reminder = stack.telegram.by_bot(GROUP)[-1]
    assert reminder.reply_to == root_id and reminder.text.startswith(
        '<a href="tg://user?id=1002001">Owner Wang</a> ⏰ 60 s left to reply'
    )
    await stack.advance(30)
    assert "⏰ 30 s left" in stack.telegram.by_bot(GROUP)[-1].text
    await stack.advance(30 + IN_FLIGHT_SECONDS)
    assert await stack.redis.hget(keys.chat(TAG, cid), "status") == "closed"
    header = stack.telegram.message(GROUP, root_id)
    assert "⛔ Closed: no reply in time; a service ticket (服务单) will follow" in header.text, "closed, and why"
    late, _ = await stack.telegram.user_message(OWNER, GROUP, "Sorry, here now", reply_to=root_id)
    await stack.settle()
    refusal = next(m for m in stack.telegram.by_bot(GROUP) if m.reply_to == late.message_id)
    assert refusal.text.startswith("Not sent: this chat is closed")
    assert merchant_texts(stack, cid) == []


async def test_a_forum_where_the_bot_may_not_open_topics_falls_back_to_reply_chains(stack: Stack) -> None:
    stack.telegram.forums.add(GROUP)
    stack.telegram.plain_member.add(GROUP)  # an admin without Manage topics, or not an admin
    cid, root_id = await open_chat(stack)
    assert stack.telegram.message(GROUP, root_id).thread_id is None, "the chat shows in the General topic"
    await stack.telegram.user_message(OWNER, GROUP, "On it", reply_to=root_id)
    await stack.settle()
    assert merchant_texts(stack, cid) == ["On it"]


async def test_a_reminder_whose_slot_in_a_busy_group_comes_too_late_takes_no_slot(stack: Stack) -> None:
    assert stack.clock is not None
    cid, _ = await open_chat(stack)  # the group's next free slot is now about 3 s away (20/min)
    late = OutboxJob("telegram:late-reminder", "telegram.post", {
        "tag": TAG, "thread_key": f"chat:{cid}", "store": "1002", "channel": str(GROUP), "root": False,
        "view": {"type": "notice", "text": "too late"}}, expires_at=stack.clock.now() + 1)  # fmt: skip
    await stack.bridge.outbox.enqueue(TAG, f"chat:{cid}:telegram", late)
    await stack.sandbox.chat_message(cid, {"type": "text", "text": "next one"})
    await stack.settle()
    texts = [m.text for m in stack.telegram.by_bot(GROUP)]
    assert not any("too late" in t for t in texts), "dropped: its slot would have come after its moment"
    assert stack.bridge.outbox.stats.expired == 1
    assert any("next one" in t for t in texts)
    spacing = [m.sent_at for m in stack.telegram.by_bot(GROUP) if m.text]
    assert spacing[1] - spacing[0] < 3.2, "the next message took the slot the reminder did not"


async def test_an_image_from_the_platform_arrives_as_a_photo(stack: Stack) -> None:
    cid, root_id = await open_chat(stack)
    image = {"type": "image", "url": "https://cdn.example/img/parcel.jpg", "width": 800, "height": 600}
    await stack.sandbox.chat_message(cid, image)
    await stack.settle()
    shown = stack.telegram.by_bot(GROUP)[-1]
    assert shown.photo == "https://cdn.example/img/parcel.jpg" and shown.reply_to == root_id, "a photo in the chain"
    assert shown.text.startswith("<b>") and "小飞" in shown.text, "captioned with who sent it"


async def test_an_image_telegram_cannot_fetch_arrives_as_its_link_rather_than_not_at_all(stack: Stack) -> None:
    cid, root_id = await open_chat(stack)
    url = "https://cdn.example/private/parcel.jpg?sign=abc&expires=1"
    stack.telegram.unfetchable.add(url)
    await stack.sandbox.chat_message(cid, {"type": "image", "url": url, "width": 800, "height": 600})
    await stack.settle()
    assert await stack.bridge.outbox.dead_letters(TAG) == []
    shown = stack.telegram.by_bot(GROUP)[-1]
    assert shown.photo is None and shown.reply_to == root_id
    link = '<a href="https://cdn.example/private/parcel.jpg?sign=abc&amp;expires=1">🖼 Image from platform CS</a>'
    assert shown.text == f"<b>小飞</b>: {link}"
    assert [c.method for c in stack.telegram.calls][-2:] == ["sendPhoto", "sendMessage"], "the link, once"


async def test_a_sticker_is_not_forwarded_and_its_sender_is_told_what_the_platform_takes(stack: Stack) -> None:
    cid, root_id = await open_chat(stack)
    sticker, _ = await stack.telegram.user_message(OWNER, GROUP, "", reply_to=root_id, sticker="👍")
    await stack.settle()
    assert merchant_texts(stack, cid) == []
    [told] = [m for m in stack.telegram.by_bot(GROUP) if m.reply_to == sticker.message_id]
    assert told.text == (
        "Not sent: nothing in it the platform takes. Platform CS receives text, emoji and images; stickers, voice "
        "messages and the like cannot be forwarded."
    )


async def test_an_edited_reply_is_explained_to_its_author(stack: Stack) -> None:
    cid, root_id = await open_chat(stack)
    message, _ = await stack.telegram.user_message(OWNER, GROUP, "Ships Monday", reply_to=root_id)
    await stack.settle()
    assert await stack.telegram.edit_user_message(GROUP, message.message_id, "Ships Tuesday") == 200
    await stack.settle()
    told = stack.telegram.by_bot(GROUP)[-1]
    assert told.reply_to == message.message_id
    assert told.text == (
        "The platform cannot change a message once it is sent: your edit was not sent. The platform has: Ships Monday"
    ), "Telegram sends only the new text: the bridge kept what it forwarded"
    assert merchant_texts(stack, cid) == ["Ships Monday"]


async def test_the_owner_reassigns_a_chat_from_its_header(stack: Stack) -> None:
    """Reassign… lists the store's other designated agents; store 1002 has only its owner, so the
    owner claiming a chat already theirs changes nothing, and a stranger may not claim it."""
    cid, root_id = await open_chat(stack)
    assert await stack.telegram.tap(STRANGER, GROUP, root_id, f"cl:{cid}") == 200
    await stack.settle()
    assert stack.telegram.by_bot(GROUP)[-1].text.startswith("Not sent: only the store's designated agents")
    assert await stack.redis.hget(keys.chat(TAG, cid), "assignee") == "main-1002"
    assert await stack.telegram.tap(OWNER, GROUP, root_id, f"cl:{cid}") == 200
    await stack.settle()
    assert await stack.redis.hget(keys.agent_load(TAG), "main-1002") == "1", "counted once"
    assert not any("handed this chat" in m.text for m in stack.telegram.by_bot(GROUP)), "nothing moved, nothing said"


async def test_the_owner_reassigns_to_an_agent_whose_account_id_is_long_and_has_a_colon(
    stack: Stack, tmp_path: Path
) -> None:
    """A Feige sub-account id reads "店铺名:子账号" and may be long, while Telegram keeps at most
    64 bytes behind a button: the reassign list still offers that agent, and a tap hands them the chat."""
    raw = yaml.safe_load(EXAMPLE_CONFIG.read_text())
    [store] = [s for s in raw["stores"] if s["id"] == "1002"]
    colleague = "示例旗舰店官方直营店:售后客服小王"  # 49 bytes
    store["agents"].append({"id": colleague, "name": "Xiao Wang", "accounts": {"telegram": "1002002"},
                            "im_permission": True})  # fmt: skip
    store["designated_agents"] = ["main-1002", colleague]
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(raw, allow_unicode=True))
    stack.bridge.holder.current = load_config(tmp_path / "config.yaml", stack.bridge.holder.environ).config
    cid, root_id = await open_chat(stack)
    assert await stack.telegram.tap(OWNER, GROUP, root_id, f"ra:{cid}") == 200
    await stack.settle()
    menu = stack.telegram.by_bot(GROUP)[-1]
    [[button]] = menu.reply_markup["inline_keyboard"]  # type: ignore[index]
    assert button["text"] == "Xiao Wang" and len(f"at:{cid}:{colleague}".encode()) > 64
    assert await stack.telegram.tap(OWNER, GROUP, menu.message_id, button["callback_data"]) == 200
    await stack.settle()
    assert await stack.redis.hget(keys.chat(TAG, cid), "assignee") == colleague
    assert 'href="tg://user?id=1002002">Xiao Wang</a>' in stack.telegram.message(GROUP, root_id).text
    assert stack.telegram.message(GROUP, menu.message_id).reply_markup is None, "the menu's buttons go with the pick"
    assert await stack.bridge.outbox.dead_letters(TAG) == []


async def test_redis_failing_just_after_telegram_took_a_message_does_not_send_it_again(
    stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    """Recording when Telegram took the message (for the spacing) goes beside the outbox's record of
    the send: a Redis error there must not make the outbox retry, and post, the message a second
    time; the operator is told the mark was lost."""
    spacing = stack.bridge.connectors["telegram"].spacing  # type: ignore[attr-defined]
    record, failed = spacing.sent, list[int]()

    async def failing_once(*args: object) -> None:
        if not failed:
            failed.append(1)
            raise ConnectionError("Redis went away")
        await record(*args)

    spacing.sent = failing_once
    cid = await stack.sandbox.open_chat("1002", ORDER_CARD)
    await stack.settle()
    assert failed, "the failure was injected"
    headers = [m for m in stack.telegram.by_bot(GROUP) if "6909" in m.text]
    assert len(headers) == 1, "the chat's header posted once"
    assert cid in stack.sandbox.conversations
    warned = [r.getMessage() for r in caplog.records if "was not stored" in r.getMessage()]
    assert warned == [f"Telegram chat {GROUP}: when its last message was taken was not stored (Redis went away); "
                      "its next message may be answered 429 and sent after the pause"]  # fmt: skip


async def test_the_outbox_records_a_telegram_send_without_waiting_for_the_spacing_mark(stack: Stack) -> None:
    """Until the outbox records a send Telegram took, a process killed would leave the message to be
    sent again, so nothing waits in that gap: with the spacing's mark held up in Redis, the header
    is posted once and every outbox queue of the store is done with."""
    spacing = stack.bridge.connectors["telegram"].spacing  # type: ignore[attr-defined]
    record, release, held = spacing.sent, asyncio.Event(), list[tuple[object, ...]]()

    async def held_up(*args: object) -> None:
        held.append(args)
        await release.wait()
        await record(*args)

    spacing.sent = held_up
    try:
        await stack.sandbox.open_chat("1002", ORDER_CARD)
        async with asyncio.timeout(10):  # a send that waited for the mark would never be recorded
            await stack.settle()
        assert held and not release.is_set(), "the mark was begun and is still held up"
        assert await stack.redis.keys(keys.outbox_queue(TAG, "*")) == [], "the send was recorded"
        assert len([m for m in stack.telegram.by_bot(GROUP) if "6909" in m.text]) == 1
    finally:
        release.set()


async def test_in_a_reply_chain_an_answer_to_a_colleagues_reply_is_in_the_chat(stack: Stack) -> None:
    """Without topics a chat is the chain of replies under its header. People reply to each other's
    messages there too (a follow-up to their own answer, a colleague adding to it): those are in
    the chat, not messages outside any chat."""
    cid, root = await open_chat(stack)
    first, _ = await stack.telegram.user_message(OWNER, GROUP, "Yes, we can exchange it", reply_to=root)
    await stack.settle()
    await stack.telegram.user_message(OWNER, GROUP, "within 7 days", reply_to=first.message_id)
    await stack.settle()
    assert merchant_texts(stack, cid) == ["Yes, we can exchange it", "within 7 days"]
    assert [m.text for m in stack.telegram.by_bot(GROUP) if m.text.startswith("Not forwarded")] == []


@pytest.mark.parametrize("how", ["deleted", "topics_off"])
async def test_a_chat_whose_topic_is_gone_goes_on_in_the_group(stack: Stack, how: str) -> None:
    """A person deletes a chat's forum topic, or turns the group's topics off, while the chat is
    open: Telegram then refuses the topic ("message thread not found"). Platform CS's next message
    still reaches the team, in the group's main view (a reply to the header where that is still
    there), an answer to it reaches platform CS, and a new chat opens as the group now allows."""
    stack.telegram.forums.add(GROUP)
    cid, root_id = await open_chat(stack)
    topic = stack.telegram.message(GROUP, root_id).thread_id
    assert topic is not None
    if how == "deleted":
        stack.telegram.delete_topic(GROUP, topic)
    else:
        stack.telegram.turn_topics_off(GROUP)
    await stack.sandbox.chat_message(cid, {"type": "text", "text": "还在吗？"})
    await stack.settle()
    follow_up = stack.telegram.by_bot(GROUP)[-1]
    assert "还在吗？" in follow_up.text and follow_up.thread_id is None
    assert follow_up.reply_to == (None if how == "deleted" else root_id)
    await stack.telegram.user_message(OWNER, GROUP, "在的，今天发货", reply_to=follow_up.message_id)
    await stack.settle()
    assert merchant_texts(stack, cid) == ["在的，今天发货"]
    await stack.sandbox.open_chat("1002", {"type": "text", "text": "能改地址吗？"})
    await stack.settle()
    header = stack.telegram.by_bot(GROUP)[-1]
    assert "能改地址吗？" in header.text
    assert (header.thread_id is not None) == (how == "deleted"), "a new topic where the group still has topics"
    assert await stack.bridge.outbox.dead_letters(TAG) == []
    if how == "deleted":  # the header went with the topic: posted again, where the chat now is, and kept up
        [again] = [m for m in stack.telegram.by_bot(GROUP) if "Platform CS: 小飞" in m.text and "还在吗" not in m.text
                   and m.message_id > follow_up.message_id and m.thread_id is None]  # fmt: skip
        assert "Answered" in again.text and again.reply_markup


async def test_the_operator_reads_in_the_log_what_happened_to_the_bot_in_a_chat(
    stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    """Removed from a group, made a plain member there, blocked by a creator, or added to a group
    the configuration does not name: the log says so at once, with the place and whose it is."""
    caplog.set_level(logging.INFO, "connectors.telegram.app")
    assert await stack.telegram.bot_membership(GROUP, "left", OWNER) == 200
    assert await stack.telegram.bot_membership(GROUP, "member", OWNER) == 200
    assert await stack.telegram.bot_membership(7001, "kicked", 7001, was="member") == 200
    assert await stack.telegram.bot_membership(GROUP, "restricted", OWNER, was="member") == 200
    assert await stack.telegram.bot_membership(-1009999000001, "member", OWNER, was="left") == 200
    await stack.settle()
    said = [(r.levelname, r.getMessage()) for r in caplog.records if r.getMessage().startswith("Telegram: the bot")]
    assert sorted(said) == sorted([
        ("ERROR", f"Telegram: the bot was removed from telegram:{GROUP} (store 1002's platform chats, store 1002's "
                  "task orders) or blocked there: nothing reaches it until it is back; what fails meanwhile is kept "
                  "in the dead letters to replay"),
        ("WARNING", f"Telegram: the bot is no longer an admin of telegram:{GROUP} (store 1002's platform chats, store "
                    "1002's task orders): with privacy mode on it sees only commands and replies to its own messages"),
        ("WARNING", f"Telegram: the bot is restricted in telegram:{GROUP} (store 1002's platform chats, store 1002's "
                    "task orders): what it may not send there is kept in the dead letters to replay once the "
                    "restriction is lifted"),
        ("ERROR", "Telegram: the bot was removed from telegram:7001 (creator c-7001) or blocked there: nothing reaches "
                  "it until it is back; what fails meanwhile is kept in the dead letters to replay"),
        ("INFO", "Telegram: the bot was added to -1009999000001 (group -1009999000001), which the configuration does "
                 "not name; for a store or creator there, write telegram:-1009999000001 in its destinations"),
    ])  # fmt: skip


SUPERGROUP = -1001002999999  # the group's id once Telegram made it a supergroup


@pytest.mark.parametrize("told", [True, False], ids=["told", "learnt_from_a_refusal"])
async def test_a_group_made_a_supergroup_is_followed_to_its_new_id(stack: Stack, told: bool, caplog) -> None:  # type: ignore[no-untyped-def]
    """Telegram gives a group a new id when it becomes a supergroup (turning topics on does it).
    The configuration still names the old id: a chat begun before goes on in the new group, where
    its answer reaches platform CS and its header is posted again, and a new chat opens there,
    whether the bot was told of the move or only learns it when Telegram refuses the old id. The log
    tells the operator the new id."""
    cid, _ = await open_chat(stack)
    told_the_bridge = await stack.telegram.upgrade_group(GROUP, SUPERGROUP, OWNER, tell_the_bot=told)
    assert told_the_bridge == ([200, 200] if told else [])
    await stack.sandbox.chat_message(cid, {"type": "text", "text": "still there?"})
    await stack.settle()
    [follow_up] = stack.telegram.by_bot(SUPERGROUP)
    assert "still there?" in follow_up.text and follow_up.reply_to is None, "no reply to the old group's header"
    answer, _ = await stack.telegram.user_message(OWNER, SUPERGROUP, "Shipped today", reply_to=follow_up.message_id)
    await stack.settle()
    assert merchant_texts(stack, cid) == ["Shipped today"]
    assert stack.telegram.message(SUPERGROUP, answer.message_id).reactions == ["👍"]
    # The old group's header takes no edits: the header is posted again here, and is the chat's root now.
    again = stack.telegram.by_bot(SUPERGROUP)[-1]
    assert "Answered" in again.text and again.reply_markup and again.message_id > answer.message_id
    await stack.telegram.user_message(OWNER, SUPERGROUP, "Tracking: SF1", reply_to=again.message_id)
    await stack.settle()
    assert merchant_texts(stack, cid) == ["Shipped today", "Tracking: SF1"]
    second = await stack.sandbox.open_chat("1002", {"type": "text", "text": "a new question"})
    await stack.settle()
    header = stack.telegram.by_bot(SUPERGROUP)[-1]
    assert "a new question" in header.text and "Waiting for a reply" in header.text
    await stack.telegram.user_message(OWNER, SUPERGROUP, "Yes", reply_to=header.message_id)
    await stack.settle()
    assert merchant_texts(stack, second) == ["Yes"]
    assert "Answered" in stack.telegram.message(SUPERGROUP, header.message_id).text
    stack.bridge.router.renamed.clear()  # a process started since, which saw none of it, reads the move in Redis
    stack.bridge.connectors["telegram"]._moved.clear()  # type: ignore[attr-defined]
    await stack.telegram.user_message(OWNER, SUPERGROUP, "Blue, too", reply_to=header.message_id)
    await stack.settle()
    assert merchant_texts(stack, second) == ["Yes", "Blue, too"]
    assert await stack.bridge.outbox.dead_letters(TAG) == []
    assert f"Write telegram:{SUPERGROUP} in place of telegram:{GROUP}" in caplog.text
    assert [c for c in stack.telegram.calls if not c.ok and int(c.args.get("chat_id", 0)) != GROUP] == []
