"""Slack and Telegram intake is durable like the platform's: a delivery is deduplicated and stored
in one step before the service is answered, and handled afterwards by the event consumer, with its
order and retries — so a crash or a Redis error during the handling loses nothing and doubles
nothing."""

from __future__ import annotations

import json
from typing import Any

from bridge.engine import keys
from bridge.engine.endpoint import Endpoint
from bridge.engine.events import StoredEvent
from tests.conftest import Stack, forget_slack_authorization, stored_fields

CHATS, TAG, CREATOR_CHAT = "C0CHATS1001", "{store:1001}", 7001
SLACK, TELEGRAM = Endpoint("destination", "slack"), Endpoint("destination", "telegram")


async def stored(stack: Stack, endpoint: Endpoint) -> list[dict[str, str]]:
    return await stored_fields(stack.redis, keys.events(endpoint.tag))


async def test_a_slack_reply_is_stored_before_the_ack_and_handled_after_it(stack: Stack) -> None:
    cid = await stack.sandbox.open_chat("1001")
    await stack.settle()
    root = stack.slack.channel(CHATS)[-1]
    ts, status = await stack.slack.user_message("U0AGENTA", CHATS, "马上发", thread_ts=root.ts)
    assert status == 200 and stack.merchant_texts(cid) == [], "answered before any handling"
    [delivery] = await stored(stack, SLACK)
    assert delivery["tag"] == "slack.event" and json.loads(delivery["data"])["event"]["ts"] == ts
    redelivered = stack.slack.last_event_id
    await stack.slack.user_message("U0AGENTA", CHATS, "马上发", thread_ts=root.ts, retry_of=redelivered)
    assert len(await stored(stack, SLACK)) == 1, "Slack's retry of the same event id is not stored again"
    await stack.settle()
    assert stack.merchant_texts(cid) == ["马上发"]
    assert await stored(stack, SLACK) == [], "handled deliveries leave the stream"


async def test_a_slack_event_that_cannot_be_authorized_while_slack_is_down_is_not_lost(stack: Stack) -> None:
    """bolt authorizes a request (Slack's auth.test, once per process) before the bridge can store
    it. A process started during a Slack outage answers 503 instead of taking the event and
    dropping it. A stored message is handled without asking Slack anything: its answer reaches the
    platform while Slack is still down, and its ✅ follows once Slack answers."""
    assert stack.clock is not None
    cid = await stack.sandbox.open_chat("1001")
    await stack.settle()
    root = stack.slack.channel(CHATS)[-1]
    stack.slack.down_until = stack.clock.now() + 20
    ts, status = await stack.slack.user_message("U0AGENTA", CHATS, "马上发", thread_ts=root.ts)
    assert status == 503 and await stored(stack, SLACK) == [], "not taken: Slack delivers again"
    stack.clock.advance(21)
    redelivered = stack.slack.last_event_id
    _, status = await stack.slack.user_message("U0AGENTA", CHATS, "马上发", thread_ts=root.ts, retry_of=redelivered)
    assert status == 200 and len(await stored(stack, SLACK)) == 1
    forget_slack_authorization(stack)  # handled by a worker process that has not asked Slack yet…
    stack.slack.down_until = stack.clock.now() + 20  # …while Slack is down again
    await stack.bridge.drain()
    assert stack.merchant_texts(cid) == ["马上发"] and await stored(stack, SLACK) == []
    assert stack.slack.message(CHATS, ts).reactions == [], "the ✅ waits for Slack"
    # Past the outage and the outbox's longest wait between two tries (a jittered backoff of up to
    # 60 s may have begun just before Slack came back).
    await stack.advance(20 + stack.bridge.outbox.max_delay + 1)
    assert stack.slack.message(CHATS, ts).reactions == ["white_check_mark"]
    assert stack.merchant_texts(cid) == ["马上发"], "sent once"


async def test_a_stored_slack_command_waits_for_slack_to_authorize_it(stack: Stack) -> None:
    """A stored command or click runs through bolt's listeners, which need the process to know who
    it is in Slack: a worker that cannot ask keeps the delivery and runs it once Slack answers."""
    assert stack.clock is not None
    assert await stack.slack.slash_command("U0MAIN1001", "C0TASKS1001", "/tasks") == (200, "")
    assert len(await stored(stack, SLACK)) == 1
    forget_slack_authorization(stack)
    stack.slack.down_until = stack.clock.now() + 20
    await stack.bridge.drain()
    assert stack.slack.responses == [] and stack.bridge.consumer.next_retry_at() is not None, "kept"
    await stack.advance(40)  # the consumer's backoff: 0.5 s doubling, never given up
    [answer] = stack.slack.responses
    assert answer["text"].startswith("任务单（⏳ 待处理）：0 条"), answer


async def test_a_stored_slack_event_whose_handling_fails_is_retried_not_lost(stack: Stack) -> None:
    cid = await stack.sandbox.open_chat("1001")
    await stack.settle()
    root = stack.slack.channel(CHATS)[-1]
    reply, failures = stack.bridge.chats.reply, list[int]()

    async def crashing_once(*args: Any, **kwargs: Any) -> Any:
        if not failures:
            failures.append(1)
            raise ConnectionError("Redis went away mid-step")
        return await reply(*args, **kwargs)

    stack.bridge.chats.reply = crashing_once  # type: ignore[method-assign]
    await stack.slack.user_message("U0AGENTA", CHATS, "稍等", thread_ts=root.ts)
    await stack.bridge.drain()
    assert stack.merchant_texts(cid) == [] and stack.bridge.consumer.next_retry_at() is not None
    await stack.settle()
    assert failures == [1] and stack.merchant_texts(cid) == ["稍等"]


async def test_a_telegram_update_is_stored_once_and_waits_while_telegram_is_not_reached(stack: Stack) -> None:
    chat = {"id": CREATOR_CHAT, "type": "private"}
    person = {"id": CREATOR_CHAT, "is_bot": False, "first_name": "c"}
    message = {"message_id": 9, "date": 0, "chat": chat, "from": person, "text": "/tasks"}
    update = {"update_id": 515151, "message": message}
    connector = stack.bridge.connectors["telegram"]
    starting, connector._starting = connector._starting, None  # type: ignore[attr-defined]
    assert await stack.telegram.send_update(update) == 200
    assert await stack.telegram.send_update(update) == 200
    [delivery] = await stored(stack, TELEGRAM)
    assert delivery["msg_id"] == "515151" and delivery["thread"] == str(CREATOR_CHAT)
    await stack.bridge.drain()
    assert stack.telegram.by_bot(CREATOR_CHAT) == [], "not handled before Telegram answered getMe"
    connector._starting = starting  # type: ignore[attr-defined]
    await stack.settle()
    [answer] = stack.telegram.by_bot(CREATOR_CHAT)
    assert "任务单" in answer.text, "handled once, after the wait"
    assert await stack.redis.llen(keys.events_dead(TELEGRAM.tag)) == 0


async def test_a_delivery_of_a_destination_no_longer_configured_is_kept(stack: Stack) -> None:
    handler = stack.bridge.event_handlers["slack.event"]
    event = StoredEvent(SLACK, "0-1", "Ev1", "slack.event", "C1", 1, "{}", 0.0)
    slack = stack.bridge.connectors.pop("slack")
    try:
        try:
            await handler(event)
        except ConnectionError as exc:
            assert "slack is not configured" in str(exc)
        else:
            raise AssertionError("the delivery was taken by nobody")
    finally:
        stack.bridge.connectors["slack"] = slack


async def test_a_reply_received_in_time_counts_as_in_time_however_late_it_is_handled(stack: Stack) -> None:
    """The consumer may get to a stored reply seconds later (a backlog, a process that died holding
    it): the reply is judged by when the bridge received it, and the close waits for it."""
    assert stack.clock is not None
    cid, root, deadline = await stack.chat_a_second_before_its_deadline()
    await stack.slack.user_message("U0AGENTA", CHATS, "来了", thread_ts=root)  # stored, not handled
    stack.clock.set(deadline + 3)  # handled only now, after the deadline
    await stack.settle()
    assert stack.merchant_texts(cid) == ["来了"]
    assert await stack.redis.hget(keys.chat(TAG, cid), "status") == "open", "answered in time, not closed"


async def test_slash_commands_and_clicks_are_stored_before_the_ack_and_answered_once(stack: Stack) -> None:
    """A command or a click is acknowledged with nothing to show once it is stored; its answer comes
    from the consumer (a command's through its response_url), once, even when the first try fails."""
    tasks_channel = "C0TASKS1001"
    listing, failures = stack.bridge.tasks.records.list_text, list[int]()

    async def crashing_once(*args: Any, **kwargs: Any) -> Any:
        if not failures:
            failures.append(1)
            raise ConnectionError("Redis went away mid-step")
        return await listing(*args, **kwargs)

    stack.bridge.tasks.records.list_text = crashing_once  # type: ignore[method-assign]
    assert await stack.slack.slash_command("U0MAIN1001", tasks_channel, "/tasks") == (200, "")
    [delivery] = await stored(stack, SLACK)
    assert delivery["msg_id"].startswith("command:") and json.loads(delivery["data"])["command"] == "/tasks"
    await stack.bridge.drain()
    assert stack.slack.responses == [] and failures == [1]
    await stack.settle()
    [answer] = stack.slack.responses
    assert answer["text"] == "任务单（⏳ 待处理）：0 条 · 第 1/1 页（/tasks 状态 页码）\n没有任务单。", answer

    tid = await stack.sandbox.create_task_order("1001", "c-7001")
    await stack.settle()
    card = stack.slack.channel(tasks_channel)[-1]
    assert await stack.slack.block_action("U0MAIN1001", tasks_channel, card.ts, "task_log", tid) == 200
    [click] = await stored(stack, SLACK)
    assert click["msg_id"].startswith("action:") and stack.slack.ephemerals == []
    await stack.settle()
    [log] = stack.slack.ephemerals
    assert log["text"].startswith(f"📋 任务单 {tid} 处理记录") and log["user"] == "U0MAIN1001"
