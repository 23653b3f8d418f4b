"""The Telegram emulator speaks the Bot API's wire format: checked with python-telegram-bot's Bot."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from telegram import Bot, InlineKeyboardButton, InlineKeyboardMarkup, ReactionTypeEmoji, ReplyParameters
from telegram.error import BadRequest, RetryAfter

from bridge.engine.clock import ManualClock
from bridge.sandbox.telegram import BOT, TelegramEmulator

TOKEN = "123456:test-token"


@pytest.fixture
async def emulator() -> AsyncIterator[TelegramEmulator]:
    emu = TelegramEmulator(TOKEN, "secret", clock=ManualClock())
    await emu.start()
    yield emu
    await emu.stop()


@pytest.fixture
async def bot(emulator: TelegramEmulator) -> AsyncIterator[Bot]:
    async with Bot(TOKEN, base_url=emulator.api_url, base_file_url=emulator.file_url) as b:
        yield b


async def test_get_me_send_edit_and_keyboard(bot: Bot, emulator: TelegramEmulator) -> None:
    assert bot.username == BOT["username"]
    keyboard = InlineKeyboardMarkup([[InlineKeyboardButton("Log", callback_data="log:T1")]])
    sent = await bot.send_message(7001, "<b>任务单</b> T1", parse_mode="HTML", reply_markup=keyboard)
    assert sent.chat.id == 7001 and sent.text == "<b>任务单</b> T1"
    assert emulator.by_bot(7001)[0].reply_markup == {"inline_keyboard": [[{"text": "Log", "callback_data": "log:T1"}]]}
    assert isinstance(emulator.clock, ManualClock)
    emulator.clock.advance(1)
    reply = await bot.send_message(7001, "comment", reply_parameters=ReplyParameters(sent.message_id))
    assert emulator.message(7001, reply.message_id).reply_to == sent.message_id
    edited = await bot.edit_message_text("任务单 T1 ✅", chat_id=7001, message_id=sent.message_id)
    assert isinstance(edited, object) and emulator.message(7001, sent.message_id).edits == 1
    await bot.set_message_reaction(7001, reply.message_id, [ReactionTypeEmoji("👍")])
    assert emulator.message(7001, reply.message_id).reactions == ["👍"]
    with pytest.raises(BadRequest):
        await bot.send_message(7001, " ")


async def test_rate_limits_answer_429_with_retry_after(bot: Bot, emulator: TelegramEmulator) -> None:
    await bot.send_message(7001, "a")
    with pytest.raises(RetryAfter) as info:
        await bot.send_message(7001, "b")
    assert info.value.retry_after == timedelta(seconds=1)
    await bot.send_message(7002, "another chat is fine")
    assert emulator.rate_limited == 1


async def test_group_limit_is_twenty_a_minute(bot: Bot, emulator: TelegramEmulator) -> None:
    assert isinstance(emulator.clock, ManualClock)
    for _ in range(20):
        await bot.send_message(-100123, "x")
        emulator.clock.advance(1.1)
    with pytest.raises(RetryAfter):
        await bot.send_message(-100123, "21st within a minute")


async def test_files_upload_and_download(bot: Bot, emulator: TelegramEmulator) -> None:
    sent = await bot.send_photo(7001, photo=b"\x89PNG\r\n\x1a\n" + b"\x00" * 20, caption="proof")
    file_id = sent.photo[-1].file_id
    tg_file = await bot.get_file(file_id)
    assert bytes(await tg_file.download_as_bytearray()).startswith(b"\x89PNG")


async def test_texts_over_telegrams_lengths_are_refused_counted_after_the_html_is_read(
    bot: Bot, emulator: TelegramEmulator
) -> None:
    at_the_limit = "<b>" + "&lt;" * 4096 + "</b>"  # 4,096 characters once read, whatever the markup adds
    sent = await bot.send_message(7001, at_the_limit, parse_mode="HTML")
    with pytest.raises(BadRequest, match="Message is too long"):
        await bot.send_message(7002, "字" * 4097)
    with pytest.raises(BadRequest, match="Message_too_long"):
        await bot.edit_message_text("字" * 4097, chat_id=7001, message_id=sent.message_id)
    with pytest.raises(BadRequest, match="Message caption is too long"):
        await bot.send_photo(7003, "https://img.example/a.png", caption="字" * 1025)
    assert [m.text for m in emulator.messages] == [at_the_limit], "nothing refused was sent or changed"
