"""No secret in any log line, whatever logs it, through a full scenario on both destinations."""

from __future__ import annotations

import logging

import pytest

from bridge.config import ConfigHolder
from bridge.engine.redact import MASK, REDACTOR, secrets_in
from tests.conftest import EXAMPLE_CONFIG, Stack

TASKS, CHATS = "C0TASKS1001", "C0CHATS1001"


async def test_a_full_scenario_logs_no_token_and_no_secret(stack: Stack, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    secrets = secrets_in(ConfigHolder(EXAMPLE_CONFIG, environ={}).current)
    assert {"xoxb-demo-bot-token", "123456789:demo-telegram-token", "demo-app-secret-1001"} <= secrets
    # A chat answered in Slack, a task order with the creator in Telegram, failures that get logged.
    stack.sandbox.fail_next("POST", "/im/conversations", 503)
    cid = await stack.sandbox.open_chat("1001")
    await stack.sandbox.create_task_order("1001", "c-7001")
    stack.telegram.missing_chats.add(7001)
    await stack.settle()
    root = stack.slack.channel(CHATS)[-1]
    await stack.slack.user_message("U0AGENTA", CHATS, "好的", thread_ts=root.ts)
    await stack.advance(10)
    stack.telegram.missing_chats.clear()
    await stack.sandbox.close_chat(cid)
    await stack.advance(70)
    logger = logging.getLogger("bridge.test")
    logger.warning("a careless line: token %s, secret %s", "xoxb-demo-bot-token", "demo-app-secret-1001")
    try:
        raise RuntimeError("refused: https://api.telegram.org/bot123456789:demo-telegram-token/getMe")
    except RuntimeError:
        logger.exception("with a traceback")

    lines = [record.getMessage() + (record.exc_text or "") for record in caplog.records]
    assert any("HTTP Request" in line for line in lines), "the client libraries' request lines were captured"
    assert sum(MASK in line for line in lines) >= 3, "the careless lines and the Bot API URLs were masked"
    for secret in secrets:
        leaked = [line for line in lines if secret in line]
        assert leaked == [], f"{secret!r} logged: {leaked[:2]}"
    assert "123456789:demo-telegram-token" not in caplog.text and "xoxb-demo-bot-token" not in caplog.text


def test_shapes_of_credentials_are_masked_even_when_not_configured() -> None:
    assert REDACTOR.redact("GET https://api.telegram.org/bot987654321:AAH-abcdefghijklmnopqrstuvwxyz/getMe") == (
        f"GET https://api.telegram.org/bot{MASK}/getMe"
    )
    assert REDACTOR.redact("token=xoxb-1234-5678-abcdef") == f"token={MASK}"
    assert REDACTOR.redact("redis://:hunter22@10.0.0.1:6379/0") == f"redis://:{MASK}@10.0.0.1:6379/0"
    assert REDACTOR.redact("redis://user:hunter22@host/0") == f"redis://{MASK}@host/0"
    assert REDACTOR.redact("store 1001: reply window 120 s") == "store 1001: reply window 120 s"
