"""What an operator does once for the Telegram bot, against the emulator: the webhook with its
secret and update types, the command menu in both locales, and long polling for a bridge without a
public URL (updates fetched, handed to the bridge's webhook, stored and answered as pushed ones)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys

from tests.conftest import EXAMPLE_CONFIG, Stack

CREATOR_CHAT = 7001


def telegram_env(stack: Stack) -> dict[str, str]:
    return dict(os.environ, TELEGRAM_API_URL=stack.telegram.api_url, TELEGRAM_FILE_URL=stack.telegram.file_url,
                BRIDGE_PUBLIC_URL="https://bridge.example.com")  # fmt: skip


async def run_cli(stack: Stack, *args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bridge", "telegram", *args, "--config", str(EXAMPLE_CONFIG),
        env=telegram_env(stack), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out = (await proc.communicate())[0].decode()
    return proc.returncode or 0, out


async def test_set_webhook_registers_the_url_secret_and_update_types(stack: Stack) -> None:
    code, out = await run_cli(stack, "set-webhook")
    assert code == 0 and "webhook set: https://bridge.example.com/telegram/webhook" in out, out
    webhook = stack.telegram.webhook
    assert webhook["url"] == "https://bridge.example.com/telegram/webhook"
    assert webhook["secret_token"] == "demo-telegram-webhook-secret"
    wanted = ["message", "edited_message", "callback_query", "my_chat_member"]
    assert webhook["allowed_updates"] in (wanted, json.dumps(wanted))


async def test_set_commands_sets_the_menu_in_both_locales(stack: Stack) -> None:
    code, out = await run_cli(stack, "set-commands")
    assert code == 0, out
    assert stack.telegram.commands[""] == [
        {"command": "tasks", "description": "任务单列表：/tasks [状态] [页码]"},
        {"command": "stats", "description": "响应统计：/stats [today|7d|30d]"},
        {"command": "help", "description": "使用说明：/help"},
    ]
    assert [c["description"] for c in stack.telegram.commands["en"]] == [
        "Task orders: /tasks [status] [page]",
        "Response stats: /stats [today|7d|30d]",
        "How to use the bot: /help",
    ]


async def test_long_polling_hands_updates_to_the_bridge_and_they_are_answered(stack: Stack) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bridge", "telegram", "poll", "--config", str(EXAMPLE_CONFIG), "--bridge-url", stack.url,
        env=telegram_env(stack), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    try:
        for _ in range(400):  # the poller starts by deleting the webhook: from then on updates wait for it
            if stack.telegram.polled is not None:
                break
            await asyncio.sleep(0.05)
        assert stack.telegram.polled is not None, "the poller deleted the webhook"
        await stack.telegram.user_message(CREATOR_CHAT, CREATOR_CHAT, "/tasks")
        for _ in range(400):
            await stack.settle()
            if stack.telegram.by_bot(CREATOR_CHAT):
                break
            await asyncio.sleep(0.05)
        assert stack.telegram.by_bot(CREATOR_CHAT)[-1].text.startswith("任务单"), "stored, handled and answered"
    finally:
        proc.send_signal(signal.SIGTERM)
        out = (await proc.communicate())[0].decode()
    assert proc.returncode == 0 and "stopped after handing 1 update(s)" in out, out
