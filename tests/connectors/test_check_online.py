"""`bridge check --online`: each destination asks its service whether the configuration works —
tokens, channels and chats, and the bot's rights in Telegram groups — against the emulators."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator

import pytest

from bridge.app.cli import probe_destinations
from bridge.config import load_config
from bridge.sandbox.slack import SlackEmulator
from bridge.sandbox.telegram import TelegramEmulator
from tests.conftest import EXAMPLE_CONFIG

GROUP = -1001002000001


@pytest.fixture
async def services() -> AsyncIterator[tuple[SlackEmulator, TelegramEmulator, dict[str, str]]]:
    slack = SlackEmulator("demo-slack-signing-secret", "xoxb-demo-bot-token")
    telegram = TelegramEmulator("123456789:demo-telegram-token", "demo-telegram-webhook-secret")
    await slack.start()
    await telegram.start()
    env = {"SLACK_API_URL": slack.api_url, "TELEGRAM_API_URL": telegram.api_url, "TELEGRAM_FILE_URL": telegram.file_url}
    yield slack, telegram, env
    await slack.stop()
    await telegram.stop()


async def test_a_working_configuration_has_no_problems(
    services: tuple[SlackEmulator, TelegramEmulator, dict[str, str]],
) -> None:
    slack, telegram, env = services
    telegram.forums.add(GROUP)
    assert await probe_destinations(load_config(EXAMPLE_CONFIG, environ=env)) == []
    assert [c.args["channel"] for c in slack.called("conversations.info")] == [
        "C0CHATS1001",
        "C0TASKS1001",
        "C0CREATOR7002",
    ]


async def test_every_unusable_target_is_named_with_its_path(
    services: tuple[SlackEmulator, TelegramEmulator, dict[str, str]],
) -> None:
    slack, telegram, env = services
    slack.missing_channels.add("C0TASKS1001")
    slack.outside.add("C0CREATOR7002")
    telegram.forums.add(GROUP)
    telegram.plain_member.add(GROUP)
    telegram.missing_chats.add(7001)
    found = [str(p) for p in await probe_destinations(load_config(EXAMPLE_CONFIG, environ=env))]
    assert found == [
        "error: store 1001 (stores[0]): destinations.task_orders: channel C0TASKS1001: channel_not_found (is the id "
        "right?)",
        "error: creator c-7002 (creators[1]): destination: the bot (feige-bridge) is not in #c0creator7002: /invite "
        "@feige-bridge there",
        f"error: store 1002 (stores[1]): destinations.platform_chats: group {GROUP} has topics: make the bot an admin "
        "with Manage topics, so each chat and task order gets its own topic",
        f"error: store 1002 (stores[1]): destinations.task_orders: group {GROUP} has topics: make the bot an admin "
        "with Manage topics, so each chat and task order gets its own topic",
        "error: creator c-7001 (creators[0]): destination: chat 7001: Chat not found (has that person opened the "
        "bot and tapped Start? Its answer shows the id)",
    ]


MOVED = (
    "chat {group} is now the supergroup -1001002999999 (Telegram gives a group a new id when topics are turned on, "
    "or it gets a public link or many members): write telegram:-1001002999999 here; until then the bridge follows "
    "the group to its new id"
)
NO_ADMIN = (
    "the bot is not an admin of group {group}: with privacy mode on it sees only commands and replies to its own "
    "messages: an answer written as a reply to a colleague's message in a chat's chain would not reach it"
)


@pytest.mark.parametrize(("change", "said"), [("upgraded", MOVED), ("not_admin", NO_ADMIN)])
async def test_a_group_that_works_but_not_as_configured_is_a_warning(
    services: tuple[SlackEmulator, TelegramEmulator, dict[str, str]], change: str, said: str
) -> None:
    """A group made a supergroup (the bridge follows it), or where the bot is no admin (it misses
    replies to people): each is named, with what to do."""
    _, telegram, env = services
    if change == "upgraded":
        await telegram.upgrade_group(GROUP, -1001002999999, 1002001, tell_the_bot=False)
    else:
        telegram.plain_member.add(GROUP)
    found = [str(p) for p in await probe_destinations(load_config(EXAMPLE_CONFIG, environ=env))]
    assert found == [
        f"warning: store 1002 (stores[1]): destinations.{where}: {said.format(group=GROUP)}"
        for where in ("platform_chats", "task_orders")
    ]


async def test_a_wrong_token_is_one_problem_per_service(
    services: tuple[SlackEmulator, TelegramEmulator, dict[str, str]],
) -> None:
    _, _, env = services
    env = env | {"SLACK_BOT_TOKEN": "xoxb-wrong", "TELEGRAM_BOT_TOKEN": "1:wrong"}
    found = [str(p) for p in await probe_destinations(load_config(EXAMPLE_CONFIG, environ=env))]
    assert found[0] == "error: slack.bot_token: Slack refused the token: invalid_auth"
    assert found[1].startswith("error: telegram.bot_token: Telegram refused the token") and len(found) == 2


async def test_the_command_exits_1_on_an_error(
    services: tuple[SlackEmulator, TelegramEmulator, dict[str, str]],
) -> None:
    slack, _, env = services
    slack.missing_channels.add("C0CHATS1001")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bridge", "check", "--config", str(EXAMPLE_CONFIG), "--online",
        env=dict(os.environ, **env), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out = (await proc.communicate())[0].decode()
    assert proc.returncode == 1, out
    assert (
        "online: error: store 1001 (stores[0]): destinations.platform_chats: channel C0CHATS1001: channel_not_found"
        in out
    )
    assert "online check — 1 error(s), 0 warning(s)" in out
