"""Logs operators use: ``--log-format json`` writes one object per line, with what each line is
about, so one chat can be followed through intake, the consumer, timers and the outbox."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from bridge.app.cli import log_handler
from tests.conftest import Stack


@pytest.fixture
def json_lines() -> Iterator[io.StringIO]:
    """What ``bridge --log-format json -v`` writes, captured."""
    out, root = io.StringIO(), logging.getLogger()
    handler, level = log_handler("json", out), root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    yield out
    root.removeHandler(handler)
    root.setLevel(level)


async def test_one_chat_is_followed_through_every_step_by_its_fields(stack: Stack, json_lines: io.StringIO) -> None:
    cid = await stack.sandbox.open_chat("1001")
    await stack.settle()
    root = stack.slack.channel("C0CHATS1001")[-1]
    await stack.slack.user_message("U0MAIN1001", "C0CHATS1001", "在的", thread_ts=root.ts)
    await stack.settle()
    lines = [json.loads(line) for line in json_lines.getvalue().splitlines()]
    assert lines and all({"time", "level", "logger", "message"} <= set(line) for line in lines)
    about_it = [line for line in lines if line.get("chat") == cid]
    assert {line.get("store") for line in about_it} == {"1001"}
    assert any("event_id" in line for line in about_it), "lines written while its events were handled"
    assert any("job_id" in line for line in about_it), "lines written while its outbound calls were sent"
    secrets = ("demo-slack-signing-secret", "xoxb-demo-bot-token", "demo-telegram-token", "demo-app-secret-1001")
    assert not any(secret in json_lines.getvalue() for secret in secrets)
