"""Flow 2 with the merchant in a Telegram group (store 1002): the card and its keyboard, comments as
replies, and Resolve as a guided conversation (result → solution → evidence → confirm)."""

from __future__ import annotations

import html
import re
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from bridge.config import load_config
from bridge.engine import keys
from bridge.sandbox.telegram import TgMessage
from tests.conftest import EXAMPLE_CONFIG, Stack

GROUP = -1001002000001
OWNER, STRANGER = 1002001, 5555
CREATOR_CHAT = 7001
TAG = "{store:1002}"
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 200
MP4 = b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 300


async def raise_task(stack: Stack) -> tuple[str, TgMessage]:
    tid = await stack.sandbox.create_task_order("1002", "c-7001")
    await stack.settle()
    card = next(m for m in stack.telegram.by_bot(GROUP) if tid in m.text and m.reply_markup)
    return tid, card


def buttons(message: TgMessage) -> list[dict[str, Any]]:
    assert message.reply_markup is not None
    return [b for row in message.reply_markup["inline_keyboard"] for b in row]


def last_bot(stack: Stack) -> TgMessage:
    return stack.telegram.by_bot(GROUP)[-1]


async def tap(stack: Stack, user: int, message: TgMessage, data: str) -> None:
    assert await stack.telegram.tap(user, GROUP, message.message_id, data) == 200
    await stack.settle()


async def say(stack: Stack, text: str, reply_to: TgMessage, **files: object) -> TgMessage:
    sent, status = await stack.telegram.user_message(OWNER, GROUP, text, reply_to=reply_to.message_id, **files)  # type: ignore[arg-type]
    assert status == 200
    await stack.settle()
    return sent


async def test_a_card_longer_than_telegram_takes_is_cut_in_its_longest_parts_keeping_its_buttons(stack: Stack) -> None:
    story, suggestion = "The cup arrived cracked. " * 200, "Resend <a new cup> & refund the postage. " * 150
    tid = await stack.sandbox.create_task_order("1002", "c-7001", consumer_description=story,
                                                creator_suggestion=suggestion)  # fmt: skip
    await stack.settle()
    assert await stack.bridge.outbox.dead_letters(TAG) == []
    card = next(m for m in stack.telegram.by_bot(GROUP) if tid in m.text and m.reply_markup)
    shown = html.unescape(re.sub(r"<[^>]*>", "", card.text))
    assert len(shown) <= 4096 and len(buttons(card)) == 6
    assert shown.count("more characters are over the message length") == 2, "both long parts cut, each saying so"
    assert "Resend <a new cup> & refund" in shown and "The cup arrived cracked." in shown


async def test_card_has_the_six_buttons_and_leads_with_the_issue_type(stack: Stack) -> None:
    tid, card = await raise_task(stack)
    assert card.text.startswith("<b>[物流问题 Logistics] Merchant–creator task order")
    labels = [b["text"] for b in buttons(card)]
    assert labels == ["Contact buyer", "Share link", "Log", "Comment", "Resolve", "Cannot resolve"]
    assert buttons(card)[0]["url"].startswith("https://im.example/buyer/")
    assert buttons(card)[1]["copy_text"]["text"] == stack.sandbox.task_orders[tid].data["share_url"]
    assert [b.get("callback_data") for b in buttons(card)[2:]] == [f"log:{tid}", f"cm:{tid}", f"rs:{tid}", f"ur:{tid}"]


async def test_a_share_link_too_long_to_copy_is_a_link_to_open(stack: Stack) -> None:
    long_link = "https://fxg.example/task/share?token=" + "x" * 300
    tid = await stack.sandbox.create_task_order("1002", "c-7001", share_url=long_link)
    await stack.settle()
    card = next(m for m in stack.telegram.by_bot(GROUP) if tid in m.text and m.reply_markup)
    assert buttons(card)[1] == {"text": "Share link", "url": long_link}, "Telegram copies 256 characters at most"


async def test_a_reply_to_the_card_is_the_merchants_comment(stack: Stack) -> None:
    tid, card = await raise_task(stack)
    await say(stack, "Reshipping today", card)
    [sent] = stack.sandbox.task_orders[tid].comments
    assert sent["side"] == "merchant" and sent["author_id"] == "main-1002" and sent["text"] == "Reshipping today"
    assert "Reshipping today" in stack.telegram.by_bot(CREATOR_CHAT)[-1].text


async def test_log_and_comment_buttons_answer_under_the_card(stack: Stack) -> None:
    tid, card = await raise_task(stack)
    await tap(stack, OWNER, card, f"log:{tid}")
    assert last_bot(stack).text.startswith(f"📋 Task order {tid} log") and last_bot(stack).reply_to == card.message_id
    await tap(stack, OWNER, card, f"cm:{tid}")
    assert last_bot(stack).text.startswith("Reply in this task order's thread")
    assert len(stack.telegram.callback_answers) == 2


async def test_guided_resolve_with_evidence_processes_once_on_confirm(stack: Stack) -> None:
    tid, card = await raise_task(stack)
    await tap(stack, OWNER, card, f"rs:{tid}")
    step1 = last_bot(stack)
    assert "Step 1/3" in step1.text and "tg://user?id=1002001" in step1.text
    asked = {step1.message_id: step1.text}  # as first posted (the emulator's messages change with edits)
    await say(stack, "ok", step1)  # a placeholder: asked again, with Keep it
    weak = last_bot(stack)
    asked[weak.message_id] = weak.text
    assert "placeholder" in weak.text and [b["text"] for b in buttons(weak)] == ["Keep it", "Cancel"]
    await say(stack, "Reshipped by SF Express, waybill SF1234567890", weak)
    step2 = last_bot(stack)
    asked[step2.message_id] = step2.text
    assert "Step 2/3" in step2.text and [b["text"] for b in buttons(step2)] == ["Done", "Cancel"]
    photo = await say(stack, "", step2, photo=PNG)
    assert stack.telegram.message(GROUP, photo.message_id).reactions == ["👍"]
    await say(stack, "", step2, document=("notes.txt", "text/plain", b"just text"))
    assert last_bot(stack).text.startswith("File notes.txt: type not allowed")
    await say(stack, "", step2, video=("unboxing.mp4", MP4))
    assert stack.sandbox.task_orders[tid].solution is None, "nothing is sent before the confirmation"
    await tap(stack, OWNER, step2, f"pd:{tid}")
    step3 = last_bot(stack)
    assert "Step 3/3" in step3.text and "Reshipped by SF Express" in step3.text
    assert f"photo-{photo.message_id}.jpg, unboxing.mp4" in step3.text
    # Each step's question keeps its text and loses its buttons once the step is past: left on it,
    # they would only be answered that it is.
    for past in (step1, weak, step2):
        assert stack.telegram.message(GROUP, past.message_id).reply_markup is None
        assert stack.telegram.message(GROUP, past.message_id).text == asked[past.message_id]
        assert stack.telegram.message(GROUP, past.message_id).edits == 1
    confirm_buttons = buttons(stack.telegram.message(GROUP, step3.message_id))
    assert [b["text"] for b in confirm_buttons] == ["Confirm and send", "Cancel"]
    await tap(stack, OWNER, step3, f"py:{tid}")
    assert stack.telegram.message(GROUP, step3.message_id).reply_markup is None
    # Told at once on the tap: a message in the group would come behind the card's change.
    assert (
        stack.telegram.callback_answers[-1]["text"]
        == "Sent to the platform; the card shows the result once it accepts."
    )
    assert last_bot(stack).message_id == step3.message_id, "no message after the card changed, reading as stale"
    await tap(stack, OWNER, step3, f"py:{tid}")  # a second tap sends nothing more
    assert stack.telegram.callback_answers[-1]["text"].startswith("This processing has ended (sent or cancelled)")
    processed = stack.sandbox.task_orders[tid].solution
    assert processed is not None and processed["result"] == "resolved" and len(processed["evidence"]) == 2
    assert len(stack.sandbox.received("POST", f"/task-orders/{tid}/process")) == 1
    assert await stack.redis.hget(keys.task(TAG, tid), "status") == "resolved"
    edited = stack.telegram.message(GROUP, card.message_id)
    assert "Resolved" in edited.text and [b["text"] for b in buttons(edited)] == ["Contact buyer", "Share link", "Log"]
    ping = stack.telegram.by_bot(CREATOR_CHAT)[-1]
    assert "Reshipped by SF Express" in ping.text and buttons(ping)[0]["url"].startswith("https://im.example/buyer/")


async def test_a_file_server_that_goes_quiet_is_given_up_on_and_the_photo_taken_later(stack: Stack) -> None:
    """A sent file's type is read from its first bytes while the update is handled, its thread
    locked: a file server that goes quiet is given up on within the sniff limit, and the update is
    tried again, not lost."""
    tid, card = await raise_task(stack)
    await tap(stack, OWNER, card, f"rs:{tid}")
    await say(stack, "Reshipped by SF Express, waybill SF1234567890", last_bot(stack))
    step2 = last_bot(stack)
    stack.bridge.connectors["telegram"].sniff_timeout = aiohttp.ClientTimeout(total=0.2)  # type: ignore[attr-defined]
    stack.telegram.file_stall_seconds = 1.0
    photo, status = await stack.telegram.user_message(OWNER, GROUP, "", reply_to=step2.message_id, photo=PNG)
    assert status == 200
    await stack.bridge.drain()
    assert stack.telegram.message(GROUP, photo.message_id).reactions == []
    assert stack.bridge.consumer.next_retry_at() is not None, "kept for a retry"
    stack.telegram.file_stall_seconds = 0.0
    await stack.settle()
    assert stack.telegram.message(GROUP, photo.message_id).reactions == ["👍"]


async def test_an_empty_solution_is_refused_and_cancel_sends_nothing(stack: Stack) -> None:
    tid, card = await raise_task(stack)
    await tap(stack, OWNER, card, f"ur:{tid}")
    step1 = last_bot(stack)
    await say(stack, "", step1, photo=PNG)
    assert last_bot(stack).text.startswith("Write the solution")
    await tap(stack, OWNER, step1, f"pc:{tid}")
    assert last_bot(stack).text.startswith("Cancelled")
    assert stack.telegram.message(GROUP, step1.message_id).reply_markup is None, "Cancel is gone with what it ended"
    assert await stack.redis.hget(keys.task_resolve(TAG, tid, str(OWNER)), "step") == "ended"
    await tap(stack, OWNER, step1, f"pc:{tid}")
    assert stack.telegram.callback_answers[-1]["text"].startswith("This processing has ended"), "not 'not yours'"
    await say(stack, "now this is a comment again", card)
    assert stack.sandbox.task_orders[tid].solution is None
    assert [c["text"] for c in stack.sandbox.task_orders[tid].comments] == ["now this is a comment again"]


async def test_tapping_resolve_again_starts_over_and_retires_the_earlier_question(stack: Stack) -> None:
    tid, card = await raise_task(stack)
    await tap(stack, OWNER, card, f"rs:{tid}")
    first = last_bot(stack)
    await tap(stack, OWNER, card, f"ur:{tid}")  # changed their mind: Cannot resolve
    again = last_bot(stack)
    assert again.message_id != first.message_id and "Step 1/3" in again.text
    assert stack.telegram.message(GROUP, first.message_id).reply_markup is None
    assert [b["text"] for b in buttons(again)] == ["Cancel"]
    await say(stack, "The buyer's address is outside every courier's area", again)
    assert "Step 2/3" in last_bot(stack).text
    assert await stack.redis.hget(keys.task_resolve(TAG, tid, str(OWNER)), "result") == "unresolvable"


async def test_an_oversize_image_and_a_seventh_file_are_refused(stack: Stack) -> None:
    tid, card = await raise_task(stack)
    await tap(stack, OWNER, card, f"rs:{tid}")
    await say(stack, "Refunded the buyer in full and apologised", last_bot(stack))
    step2 = last_bot(stack)
    await say(stack, "", step2, document=("big.png", "image/png", PNG + b"\x00" * (5 * 1024 * 1024)))
    assert last_bot(stack).text == "File big.png: larger than 5 MB"
    for _ in range(6):
        await say(stack, "", step2, photo=PNG)
    await say(stack, "", step2, photo=PNG)
    assert last_bot(stack).text.startswith("At most 6 evidence files")
    state = await stack.redis.hget(keys.task_resolve(TAG, tid, str(OWNER)), "files")
    assert state is not None and str(state).count("photo-") == 6


async def test_only_the_stores_agents_can_resolve(stack: Stack) -> None:
    tid, card = await raise_task(stack)
    await tap(stack, STRANGER, card, f"rs:{tid}")
    assert stack.telegram.callback_answers[-1]["text"] == "Only the store's agents can process task orders."
    assert not await stack.redis.exists(keys.task_resolve(TAG, tid, str(STRANGER)))


async def test_a_step_tapped_by_another_agent_or_after_the_conversation_expired_says_how_to_start(
    stack: Stack, tmp_path: Path
) -> None:
    raw = yaml.safe_load(EXAMPLE_CONFIG.read_text())
    [store] = [s for s in raw["stores"] if s["id"] == "1002"]
    store["agents"].append({"id": "agent-2", "name": "Second", "accounts": {"telegram": "1002002"}})
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(raw, allow_unicode=True))
    stack.bridge.holder.current = load_config(tmp_path / "config.yaml", stack.bridge.holder.environ).config
    tid, card = await raise_task(stack)
    await tap(stack, OWNER, card, f"rs:{tid}")
    step1 = last_bot(stack)
    await tap(stack, 1002002, step1, f"pc:{tid}")
    expected = ("You have no processing of this task order in progress (one left for 60 minutes expires). "
                "To process it, use the task order card's buttons.")  # fmt: skip
    assert stack.telegram.callback_answers[-1]["text"] == expected
    assert await stack.redis.hget(keys.task_resolve(TAG, tid, str(OWNER)), "step") == "solution", "not cancelled"
    await stack.redis.delete(keys.task_resolve(TAG, tid, str(OWNER)))  # what its expiry does
    await tap(stack, OWNER, step1, f"pc:{tid}")
    assert stack.telegram.callback_answers[-1]["text"] == expected


async def test_a_conversation_left_an_hour_without_a_step_ends_saying_so_and_sends_nothing(stack: Stack) -> None:
    tid, card = await raise_task(stack)
    await tap(stack, OWNER, card, f"rs:{tid}")
    await stack.advance(1800)
    await say(stack, "Reshipped by SF Express, waybill SF1234567890", last_bot(stack))  # a step: the hour starts again
    step2 = last_bot(stack)
    asked = step2.text  # the emulator's message itself: an edit changes it
    assert "Step 2/3" in asked
    await stack.advance(3599)
    assert [b["text"] for b in buttons(stack.telegram.message(GROUP, step2.message_id))] == ["Done", "Cancel"]
    await stack.advance(2)
    ended = stack.telegram.message(GROUP, step2.message_id)
    assert ended.reply_markup is None and ended.text == asked + (
        "\n\n⌛ This processing expired (60 minutes without a step); nothing was sent. "
        "To process it, use the task order card's buttons."
    )
    assert not await stack.redis.exists(keys.task_resolve(TAG, tid, str(OWNER)))
    await tap(stack, OWNER, step2, f"pd:{tid}")  # a client that still shows the old buttons
    assert stack.telegram.callback_answers[-1]["text"].startswith("You have no processing of this task order")
    assert stack.sandbox.task_orders[tid].solution is None
    assert await stack.redis.hget(keys.task(TAG, tid), "status") == "pending"


async def test_tasks_command_lists_the_groups_task_orders(stack: Stack) -> None:
    tid, _ = await raise_task(stack)
    await stack.telegram.user_message(OWNER, GROUP, "/tasks")
    await stack.settle()
    assert last_bot(stack).text.startswith("Task orders (⏳ Pending): 1") and tid in last_bot(stack).text


async def test_stats_command_in_the_group_counts_from_the_archive(stack: Stack) -> None:
    tid, card = await raise_task(stack)
    await tap(stack, OWNER, card, f"rs:{tid}")
    await say(stack, "Reshipped by SF Express, waybill SF1234567890", last_bot(stack))
    await tap(stack, OWNER, last_bot(stack), f"pd:{tid}")
    await tap(stack, OWNER, last_bot(stack), f"py:{tid}")
    await stack.settle()
    await stack.telegram.user_message(OWNER, GROUP, "/stats 7d")
    await stack.settle()
    text = last_bot(stack).text
    assert text.startswith("📊 ") and "· last 7 days" in text.splitlines()[0], text
    assert (
        "Store: chats 0, first reply p50 — / p90 —, answered in the window —, lost to timeout 0; task orders "
        "processed in time 1/1" in text
    ), "a count before a word it agrees with (not '1 chats')"


async def test_a_file_telegram_will_not_let_a_bot_download_is_refused_by_name(stack: Stack) -> None:
    tid, card = await raise_task(stack)
    await tap(stack, OWNER, card, f"rs:{tid}")
    await say(stack, "Refunded the buyer in full and apologised", last_bot(stack))
    step2 = last_bot(stack)
    await say(stack, "", step2, video=("unboxing-4k.mp4", MP4 + b"\x00" * (21 * 1024 * 1024)))
    assert last_bot(stack).text == "File unboxing-4k.mp4: larger than 20 MB, which Telegram does not let bots download"
    assert stack.telegram.called("getFile") == [], "refused by its size, without asking Telegram"


async def test_files_shared_under_the_card_count_as_evidence_and_are_checked_at_done(stack: Stack) -> None:
    tid, card = await raise_task(stack)
    await say(stack, "", card, document=("notes.txt", "text/plain", b"just text"))  # shared before resolving
    await tap(stack, OWNER, card, f"rs:{tid}")
    await say(stack, "Reshipped by SF Express, waybill SF1234567890", last_bot(stack))
    step2 = last_bot(stack)
    await tap(stack, OWNER, step2, f"pd:{tid}")
    assert last_bot(stack).text.startswith("File notes.txt: type not allowed"), "checked when Done is tapped"
    state = await stack.redis.hget(keys.task_resolve(TAG, tid, str(OWNER)), "step")
    assert state == "evidence", "still collecting evidence"
    assert stack.sandbox.task_orders[tid].comments == [], "a file without text is not a comment"


async def test_a_resolve_conversation_survives_a_restart_of_the_bridge(stack: Stack, redis_url: str) -> None:
    from bridge.app.service import Bridge, open_redis
    from bridge.archive.store import Archive
    from bridge.config import ConfigHolder

    tid, card = await raise_task(stack)
    await tap(stack, OWNER, card, f"rs:{tid}")
    step1 = last_bot(stack)
    await stack.bridge.stop()  # the process that started the conversation is gone
    holder = ConfigHolder(stack.bridge.holder.path, environ=stack.bridge.holder.environ)
    archive = Archive(stack.bridge.archive.url)
    stack.bridge = Bridge(holder, open_redis(redis_url), clock=stack.clock, archive=archive)  # type: ignore[arg-type]
    await stack.bridge.start(host="127.0.0.1", port=0, run_workers=False)
    stack.sandbox.bridge_url = stack.telegram.bridge_url = f"http://127.0.0.1:{stack.bridge.port}"
    for connector in stack.bridge.connectors.values():
        await connector.ready()
    await say(stack, "Reshipped by SF Express, waybill SF1234567890", step1)
    step2 = last_bot(stack)
    assert "Step 2/3" in step2.text, "another process took the conversation up where it was"
    await tap(stack, OWNER, step2, f"pd:{tid}")
    await tap(stack, OWNER, last_bot(stack), f"py:{tid}")
    processed = stack.sandbox.task_orders[tid].solution
    assert processed is not None and processed["solution"] == "Reshipped by SF Express, waybill SF1234567890"


async def test_an_internal_note_in_a_task_thread_is_not_a_comment(stack: Stack) -> None:
    tid, card = await raise_task(stack)
    note, _ = await stack.telegram.user_message(OWNER, GROUP, "#note ask the warehouse first", reply_to=card.message_id,
                                                thread_id=card.thread_id)  # fmt: skip
    await stack.settle()
    assert stack.sandbox.task_orders[tid].comments == []
    assert stack.telegram.message(GROUP, note.message_id).reactions == ["✍"]


async def test_a_creator_is_told_what_did_not_become_a_comment(stack: Stack) -> None:
    """Only text in a task order's thread is a comment. A creator who writes anywhere else, or sends
    a photo or a sticker, is told so in their language, not left thinking the merchant has it."""
    tid, _ = await raise_task(stack)
    confirmation = stack.telegram.by_bot(CREATOR_CHAT)[-1]
    await stack.telegram.user_message(CREATOR_CHAT, CREATOR_CHAT, "请问处理得怎么样了")
    await stack.settle()
    assert stack.telegram.by_bot(CREATOR_CHAT)[-1].text.startswith("留言未发送：这条消息不在任何任务单的消息串里")
    await stack.telegram.user_message(CREATOR_CHAT, CREATOR_CHAT, "", reply_to=confirmation.message_id, photo=PNG)
    await stack.settle()
    assert stack.telegram.by_bot(CREATOR_CHAT)[-1].text == "留言未发送：任务单留言只能是文字。"
    await stack.telegram.user_message(CREATOR_CHAT, CREATOR_CHAT, "", reply_to=confirmation.message_id, sticker="👍")
    await stack.settle()
    assert stack.telegram.by_bot(CREATOR_CHAT)[-1].text == "留言未发送：任务单留言只能是文字。"
    assert stack.sandbox.task_orders[tid].comments == []
    await stack.telegram.user_message(CREATOR_CHAT, CREATOR_CHAT, "买家的照片", reply_to=confirmation.message_id,
                                      photo=PNG)  # fmt: skip
    await stack.settle()
    assert [c["text"] for c in stack.sandbox.task_orders[tid].comments] == ["买家的照片"]
    told = stack.telegram.by_bot(CREATOR_CHAT)[-1]
    assert told.text.startswith("只有文字作为留言发送，附带的图片和文件不会发送")
    assert told.reply_to is not None, "told in reply to their message"


async def test_start_and_help_say_what_the_bot_does_here_and_an_unknown_chat_its_id(stack: Stack) -> None:
    await stack.telegram.user_message(CREATOR_CHAT, CREATOR_CHAT, "/stats")  # the menu offers it to everyone
    await stack.settle()
    assert stack.telegram.by_bot(CREATOR_CHAT)[-1].text.startswith("响应统计是店铺的"), "not 'not connected'"
    await stack.telegram.user_message(CREATOR_CHAT, CREATOR_CHAT, "/start")
    await stack.telegram.user_message(OWNER, GROUP, "/help@feige_bridge_bot")
    await stack.telegram.user_message(424242, 424242, "/start")
    await stack.settle()
    creator = stack.telegram.by_bot(CREATOR_CHAT)[-1].text
    assert creator.startswith("飞鸽桥 · 达人 小美 Xiaomei") and "回复任务单的消息即给商家留言" in creator
    assert "/tasks [状态] [页码]" in creator and "/stats" not in creator, "a creator has no store statistics"
    group = last_bot(stack).text
    assert group.startswith("Feige bridge · Demo Telegram Store")
    assert "within 120 s" in group and "A message starting with // is an internal note" in group
    assert "/stats [today|7d|30d]: response statistics" in group and "/help: this help" in group
    unknown = stack.telegram.by_bot(424242)[-1].text
    assert "把 telegram:424242 交给桥的管理员" in unknown and "Give telegram:424242 to the bridge's operator" in unknown
    assert "你的 telegram 账号 ID：424242" in unknown and "Your telegram account id: 424242" in unknown
    assert group.endswith("You are the store's agent Owner Wang (account 1002001). You may answer platform CS chats.")
    before = len(stack.telegram.by_bot(GROUP))
    await stack.telegram.user_message(OWNER, GROUP, "/help@other_bot")  # another bot's, in the same group
    await stack.telegram.user_message(OWNER, GROUP, "/")
    await stack.settle()
    assert len(stack.telegram.by_bot(GROUP)) == before, "neither is a command of ours"
    assert stack.bridge.consumer.next_retry_at() is None, "nothing failed to be tried again"


async def test_a_member_joining_the_group_is_not_told_anything(stack: Stack) -> None:
    """Telegram's service messages (someone joined, a message pinned) are nobody's words: not a
    reply, not a comment, and nothing to refuse."""
    await raise_task(stack)
    before = len(stack.telegram.by_bot(GROUP))
    assert await stack.telegram.member_joins(1002009, GROUP) == 200
    await stack.settle()
    assert len(stack.telegram.by_bot(GROUP)) == before


async def test_a_creators_reply_to_their_own_comment_is_a_comment_too(stack: Stack) -> None:
    tid, _ = await raise_task(stack)
    confirmation = stack.telegram.by_bot(CREATOR_CHAT)[-1]
    first, _ = await stack.telegram.user_message(
        CREATOR_CHAT, CREATOR_CHAT, "买家在等", reply_to=confirmation.message_id
    )
    await stack.settle()
    await stack.telegram.user_message(CREATOR_CHAT, CREATOR_CHAT, "他要顺丰单号", reply_to=first.message_id)
    await stack.settle()
    assert [c["text"] for c in stack.sandbox.task_orders[tid].comments] == ["买家在等", "他要顺丰单号"]
