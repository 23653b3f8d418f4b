"""The platform sandbox and the platform client: the outbound contract, as the bridge meets it."""

from __future__ import annotations

import aiohttp
import pytest
from aiohttp import web

from bridge.config import ConfigHolder
from bridge.engine.clock import ManualClock
from bridge.engine.listen import listen
from bridge.engine.outbox import FinalFailure, RetryLater
from bridge.sandbox.platform import PlatformSandbox
from connectors.platform.client import PlatformClient
from tests.conftest import EXAMPLE_CONFIG, Stack, stored_fields

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64
MP4 = b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 64


async def client_for(
    stack: Stack, session: aiohttp.ClientSession, token: str = "demo-api-token-1001"
) -> PlatformClient:
    return PlatformClient(f"http://127.0.0.1:{stack.sandbox.port}", token, session)


async def test_conversation_closes_after_the_reply_window(stack: Stack) -> None:
    clock = stack.clock
    assert isinstance(clock, ManualClock)
    cid = await stack.sandbox.open_chat("1001")
    async with aiohttp.ClientSession() as http:
        platform = await client_for(stack, http)
        clock.advance(119)
        assert await platform.send_message(cid, "agent-a", {"type": "text", "text": "在的"}, "k1")
        await stack.sandbox.chat_message(cid, {"type": "text", "text": "还有问题"})
        clock.advance(120)
        with pytest.raises(FinalFailure) as info:
            await platform.send_message(cid, "agent-a", {"type": "text", "text": "晚了"}, "k2")
        assert info.value.status == 409 and info.value.reason == "conversation closed (reply_timeout)"
    assert await stack.sandbox.expire_windows() == []  # already closed by the late reply's check
    closes = [d for d in stack.sandbox.deliveries if "im_platform_closed" in str(d.records)]
    assert closes == []


async def test_expired_windows_are_closed_and_pushed_with_a_service_ticket(stack: Stack) -> None:
    clock = stack.clock
    assert isinstance(clock, ManualClock)
    cid = await stack.sandbox.open_chat("1001")
    clock.advance(121)
    assert await stack.sandbox.expire_windows() == [cid]
    delivery = stack.sandbox.deliveries[-1]
    assert delivery.delivered and delivery.statuses == [200]
    assert '"reason": "reply_timeout"' in delivery.records[0]["data"]
    assert '"service_ticket_id": "st-' in delivery.records[0]["data"]


async def test_comment_limit_is_ten_per_side_and_final(stack: Stack) -> None:
    tid = await stack.sandbox.create_task_order("1001", "c-7001")
    async with aiohttp.ClientSession() as http:
        merchant = await client_for(stack, http)
        creator = await client_for(stack, http, "demo-api-token-c7001")
        for i in range(10):
            await merchant.add_comment(tid, "merchant", "agent-a", f"m{i}", f"m{i}")
        with pytest.raises(FinalFailure) as info:
            await merchant.add_comment(tid, "merchant", "agent-a", "m10", "m10")
        assert info.value.status == 422 and info.value.reason == "comment limit reached (10/10)"
        assert await creator.add_comment(tid, "creator", "c-7001", "c0", "c0"), "the other side has its own 10"
        with pytest.raises(FinalFailure):
            await merchant.add_comment(tid, "merchant", "agent-a", "m10", "m10")  # replayed, still refused
        task = await merchant.get_task_order(tid)
    assert task["status"] == "pending" and len(task["comments"]) == 11
    assert [entry["type"] for entry in task["log"]][:2] == ["created", "comment_merchant"]


async def test_process_once_then_409_and_no_more_comments(stack: Stack) -> None:
    tid = await stack.sandbox.create_task_order("1001", "c-7001")
    async with aiohttp.ClientSession() as http:
        platform = await client_for(stack, http)
        media = await platform.upload_media(PNG, "proof.png", "image/png", "up-1")
        await platform.process_task_order(tid, "resolved", "已补发，单号 SF123", [media["media_id"]], "agent-a", "p1")
        await platform.process_task_order(tid, "resolved", "已补发，单号 SF123", [media["media_id"]], "agent-a", "p1")
        with pytest.raises(FinalFailure) as info:
            await platform.process_task_order(tid, "unresolvable", "again", [], "agent-a", "p2")
        assert info.value.status == 409
        with pytest.raises(FinalFailure) as info:
            await platform.add_comment(tid, "merchant", "agent-a", "after", "c-after")
        assert info.value.status == 409
        task = await platform.get_task_order(tid)
    assert task["status"] == "resolved"


@pytest.mark.parametrize(
    ("content", "name", "status"),
    [
        (b"GIF89a" + b"\x00" * 64, "cat.jpg", 415),
        (b"plain text pretending" * 4, "photo.png", 415),
        (PNG + b"\x00" * (5 * 1024 * 1024), "huge.png", 413),
    ],
)
async def test_media_is_judged_by_its_bytes_and_size(stack: Stack, content: bytes, name: str, status: int) -> None:
    async with aiohttp.ClientSession() as http:
        platform = await client_for(stack, http)
        with pytest.raises(FinalFailure) as info:
            await platform.upload_media(content, name, "image/jpeg", f"u-{name}")
    assert info.value.status == status


async def test_media_accepts_images_and_videos(stack: Stack) -> None:
    async with aiohttp.ClientSession() as http:
        platform = await client_for(stack, http)
        image = await platform.upload_media(PNG, "a.png", "image/png", "u1")
        video = await platform.upload_media(MP4, "clip.mp4", "video/mp4", "u2")
    assert image["kind"] == "image" and video["kind"] == "video" and video["size"] == len(MP4)


async def test_unknown_token_is_refused(stack: Stack) -> None:
    async with aiohttp.ClientSession() as http:
        platform = await client_for(stack, http, "stolen")
        with pytest.raises(FinalFailure) as info:
            await platform.get_task_order("T1")
    assert info.value.status == 401


async def test_rate_limit_and_server_errors_are_retryable(stack: Stack) -> None:
    cid = await stack.sandbox.open_chat("1001")
    stack.sandbox.fail_next("POST", "/im/", 429, retry_after=7)
    stack.sandbox.fail_next("POST", "/im/", 500)
    async with aiohttp.ClientSession() as http:
        platform = await client_for(stack, http)
        with pytest.raises(RetryLater) as info:
            await platform.send_message(cid, "agent-a", {"type": "text", "text": "x"}, "same")
        assert info.value.after == 7
        with pytest.raises(RetryLater):
            await platform.send_message(cid, "agent-a", {"type": "text", "text": "x"}, "same")
        assert await platform.send_message(cid, "agent-a", {"type": "text", "text": "x"}, "same")


async def test_pusher_redelivers_until_the_bridge_answers_success() -> None:
    answers = [503, 500, 200]
    seen: list[bytes] = []

    async def flaky(request: web.Request) -> web.Response:
        seen.append(await request.read())
        status = answers.pop(0)
        return web.json_response({"code": 0 if status == 200 else status, "msg": "x"}, status=status)

    app = web.Application()
    app.router.add_post("/webhooks/platform/1001", flaky)
    runner, port = await listen(app, "127.0.0.1", 0)
    sandbox = PlatformSandbox(
        ConfigHolder(EXAMPLE_CONFIG, environ={}).current, f"http://127.0.0.1:{port}", push_retry_seconds=0.01
    )
    try:
        delivery = await sandbox.push("store", "1001", [("im_platform_closed", {"shop_id": "1001"})])
    finally:
        await sandbox.stop()
        await runner.cleanup()
    assert delivery.delivered and delivery.statuses == [503, 500, 200]
    assert len(set(seen)) == 1, "a redelivery is the same push, same msg_id"


async def test_control_endpoints_drive_the_sandbox_over_http(stack: Stack) -> None:
    base = f"http://127.0.0.1:{stack.sandbox.port}"
    async with aiohttp.ClientSession() as http:
        async with http.post(base + "/_sandbox/chats", json={"store_id": "1001", "text": "在吗"}) as resp:
            opened = await resp.json()
        assert opened["delivery"]["delivered"] is True
        cid = opened["conversation_id"]
        async with http.post(f"{base}/_sandbox/chats/{cid}/close") as resp:
            assert (await resp.json())["delivery"]["delivered"] is True
        async with http.post(base + "/_sandbox/task-orders", json={"store_id": "1001", "creator_id": "c-7001"}) as resp:
            assert (await resp.json())["task_id"].startswith("T")
        async with http.post(base + "/_sandbox/chats", json={"store_id": "404"}) as resp:
            assert resp.status == 404
        async with http.get(base + "/_sandbox/records") as resp:
            records = await resp.json()
    endpoints = [d["endpoint"] for d in records["deliveries"]]
    assert endpoints == ["store:1001", "store:1001", "store:1001", "creator:c-7001"]
    tags = [e["tag"] for e in await stored_fields(stack.redis, "{store:1001}:events")]
    assert tags == ["im_platform_message", "im_platform_closed", "task_order_created"]
