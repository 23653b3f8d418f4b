"""Socket Mode (teams without a public URL): the bridge opens Slack's WebSocket with the app-level
token, and the same bolt app answers replies, slash commands and button clicks arriving over it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import yaml

from bridge.engine import keys
from bridge.engine.clock import ManualClock
from bridge.engine.endpoint import Endpoint
from tests.conftest import EXAMPLE_CONFIG, Stack, forget_slack_authorization, start_stack

CHATS, TASKS, MAIN = "C0CHATS1001", "C0TASKS1001", "U0MAIN1001"


@pytest.fixture
async def socket_stack(tmp_path: Path, redis: object, redis_url: str) -> AsyncIterator[Stack]:
    tree = yaml.safe_load(EXAMPLE_CONFIG.read_text(encoding="utf-8"))
    tree["slack"] |= {"socket_mode": True, "app_token": "xapp-demo-app-token"}
    path = tmp_path / "socket.yaml"
    path.write_text(yaml.safe_dump(tree, allow_unicode=True), encoding="utf-8")
    stack = await start_stack(redis_url, config_path=path, clock=ManualClock(), run_workers=False)
    yield stack
    await stack.stop()


async def test_events_commands_and_clicks_arrive_over_the_socket(socket_stack: Stack) -> None:
    stack = socket_stack
    await stack.slack.socket_connected.wait()
    [opened] = stack.slack.called("apps.connections.open")
    assert opened.status == 200
    cid = await stack.sandbox.open_chat("1001", {"type": "text", "text": "在吗？"})
    await stack.settle()
    root = stack.slack.channel(CHATS)[-1]
    assignee = await stack.redis.hget(f"{{store:1001}}:chat:{cid}", "assignee")
    user = {"main-1001": MAIN, "agent-a": "U0AGENTA", "agent-b": "U0AGENTB"}[str(assignee)]
    _, status = await stack.slack.user_message(user, CHATS, "在的，请讲", thread_ts=root.ts)
    assert status == 200, "acknowledged over the socket"
    await stack.settle()
    sent = [m["content"] for m in stack.sandbox.conversations[cid].messages if m["from"] == "merchant"]
    assert sent == [{"type": "text", "text": "在的，请讲"}]
    answer = await stack.slash_command(MAIN, CHATS, "/feige", "stats")
    assert answer.startswith("📊 示例旗舰店 Demo Flagship Store")
    tid = await stack.sandbox.create_task_order("1001", "c-7001")
    await stack.settle()
    card = stack.slack.channel(TASKS)[-1]
    assert await stack.slack.block_action(MAIN, TASKS, card.ts, "task_log", tid) == 200
    await stack.settle()
    assert stack.slack.ephemerals[-1]["text"].startswith(f"📋 任务单 {tid} 处理记录")
    kinds = [e["type"] for e in stack.slack.socket_envelopes]
    assert kinds == ["events_api", "slash_commands", "interactive"], "all of it over the socket, none over HTTP"


async def test_an_event_that_cannot_be_authorized_is_left_unacknowledged_and_taken_when_sent_again(
    socket_stack: Stack,
) -> None:
    """bolt authorizes before the bridge can store an event; when Slack's auth.test fails, the stock
    handler would acknowledge the envelope anyway and the reply would be gone. It is not acknowledged,
    so Slack sends it again, and the redelivery is taken once Slack answers."""
    stack = socket_stack
    assert stack.clock is not None
    await stack.slack.socket_connected.wait()
    cid = await stack.sandbox.open_chat("1001", {"type": "text", "text": "在吗？"})
    await stack.settle()
    root = stack.slack.channel(CHATS)[-1]
    forget_slack_authorization(stack)  # a process that has not asked Slack who it is yet…
    stack.slack.down_until = stack.clock.now() + 20  # …while Slack is down
    stack.slack.ack_timeout_seconds = 0.3  # Slack's 3 s, shortened: this ack never comes
    _, status = await stack.slack.user_message(MAIN, CHATS, "马上发", thread_ts=root.ts)
    assert status == 504, "not acknowledged"
    assert await stack.redis.xlen(keys.events(Endpoint("destination", "slack").tag)) == 0, "nothing stored"
    stack.clock.advance(21)
    stack.slack.ack_timeout_seconds = 3.0
    envelopes = len(stack.slack.socket_envelopes)
    _, status = await stack.slack.user_message(
        MAIN, CHATS, "马上发", thread_ts=root.ts, retry_of=stack.slack.last_event_id
    )
    assert status == 200 and len(stack.slack.socket_envelopes) == envelopes + 1
    await stack.settle()
    sent = [m["content"] for m in stack.sandbox.conversations[cid].messages if m["from"] == "merchant"]
    assert sent == [{"type": "text", "text": "马上发"}]
