"""Backpressure, not failure: while Redis is down every webhook answers 503 with Retry-After — the
platform's pushes, Slack's events and Telegram's updates — and what was refused is taken when it
comes again after Redis is back: never a 500, never accepted and lost."""

from __future__ import annotations

import json
from pathlib import Path

from bridge.app.redis_server import EmbeddedRedis
from bridge.engine.clock import ManualClock
from connectors.platform.signing import sign
from tests.conftest import start_stack

CHATS, TASKS, CREATOR_CHAT = "C0CHATS1001", "C0TASKS1001", 7001


async def test_every_webhook_answers_503_with_retry_after_while_redis_is_down(tmp_path: Path) -> None:
    server = EmbeddedRedis(tmp_path / "r", appendonly=True).start()
    s = await start_stack(server.url, clock=ManualClock(), run_workers=False)
    try:
        cid = await s.sandbox.open_chat("1001")
        tid = await s.sandbox.create_task_order("1001", "c-7001")
        await s.settle()
        root = s.slack.channel(CHATS)[-1]
        confirmation = s.telegram.by_bot(CREATOR_CHAT)[-1]

        server.kill()
        envelope = s.sandbox.envelope([("im_platform_message", {
            "shop_id": "1001", "conversation_id": cid, "message_id": "pm-late", "sent_at": "2023-11-14T22:13:21Z",
            "sender": {"agent_id": "cs-001", "name": "小飞"}, "content": {"type": "text", "text": "还在吗"},
            "awaiting_reply": True})])  # fmt: skip
        body = json.dumps(envelope, ensure_ascii=False).encode()
        creds = s.bridge.holder.current.store("1001").platform  # type: ignore[union-attr]
        headers = {"app-id": creds.app_key, "event-sign": sign(creds.app_key, body, creds.app_secrets[0]),
                   "Content-Type": "application/json"}  # fmt: skip
        async with s.bridge.http().post(f"{s.url}/webhooks/platform/1001", data=body, headers=headers) as resp:
            assert resp.status == 503 and resp.headers["Retry-After"] == "5"
        _, slack_status = await s.slack.user_message("U0AGENTA", CHATS, "在的", thread_ts=root.ts)
        _, telegram_status = await s.telegram.user_message(
            CREATOR_CHAT, CREATOR_CHAT, "请尽快", reply_to=confirmation.message_id
        )
        assert (slack_status, telegram_status) == (503, 503), "not taken, so the service delivers it again"

        server = EmbeddedRedis(tmp_path / "r", appendonly=True, port=server.port).start()
        async with s.bridge.http().post(f"{s.url}/webhooks/platform/1001", data=body, headers=headers) as resp:
            assert resp.status == 200
        assert (await s.slack.user_message("U0AGENTA", CHATS, "在的", thread_ts=root.ts))[1] == 200
        tg = await s.telegram.user_message(CREATOR_CHAT, CREATOR_CHAT, "请尽快", reply_to=confirmation.message_id)
        assert tg[1] == 200
        await s.settle()
        assert [m["content"]["text"] for m in s.sandbox.conversations[cid].messages if m["from"] == "merchant"] == [
            "在的"
        ]
        assert [c["text"] for c in s.sandbox.task_orders[tid].comments] == ["请尽快"]
        assert sum("还在吗" in m.text for m in s.slack.thread(CHATS, root.ts)) == 1, "the pushed message, once"
    finally:
        await s.stop()
        server.stop()
