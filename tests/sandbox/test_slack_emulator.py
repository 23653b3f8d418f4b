"""The Slack emulator speaks Slack's wire format: checked with the real slack_sdk client."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bridge.engine.clock import ManualClock
from bridge.sandbox.slack import SlackEmulator
from tests.conftest import Stack


@pytest.fixture
async def emulator() -> AsyncIterator[SlackEmulator]:
    emu = SlackEmulator("secret", "xoxb-test", clock=ManualClock())
    await emu.start()
    yield emu
    await emu.stop()


async def test_file_upload_v2_round_trip(emulator: SlackEmulator) -> None:
    client = AsyncWebClient(token="xoxb-test", base_url=emulator.api_url)
    resp = await client.files_upload_v2(channel="C1", content=b"hello", filename="a.txt", title="A")
    assert resp["ok"] and emulator.channel("C1")[0].files[0]["title"] == "A"
    file_id = resp["files"][0]["id"]
    assert emulator.files[file_id]["data"] == b"hello"


async def test_info_methods_and_bad_token(emulator: SlackEmulator) -> None:
    client = AsyncWebClient(token="xoxb-test", base_url=emulator.api_url)
    assert (await client.users_info(user="U1"))["user"]["id"] == "U1"
    assert (await client.conversations_info(channel="C1"))["channel"]["id"] == "C1"
    assert (await client.auth_test())["bot_id"] == "BBRIDGEBOT"
    with pytest.raises(SlackApiError) as info:
        await AsyncWebClient(token="xoxb-wrong", base_url=emulator.api_url).auth_test()
    assert info.value.response["error"] == "invalid_auth"


async def test_one_message_a_second_per_channel_with_short_bursts(emulator: SlackEmulator) -> None:
    client = AsyncWebClient(token="xoxb-test", base_url=emulator.api_url)
    await client.chat_postMessage(channel="C1", text="1")
    await client.chat_postMessage(channel="C1", text="2")
    with pytest.raises(SlackApiError) as info:
        await client.chat_postMessage(channel="C1", text="3")
    assert info.value.response.status_code == 429 and info.value.response.headers["Retry-After"] == "1"
    await client.chat_postMessage(channel="C2", text="other channel")
    assert isinstance(emulator.clock, ManualClock)
    emulator.clock.advance(1)
    await client.chat_postMessage(channel="C1", text="3")
    assert [m.text for m in emulator.channel("C1")] == ["1", "2", "3"] and emulator.rate_limited == 1


async def test_url_private_needs_the_bot_token(emulator: SlackEmulator) -> None:
    import aiohttp

    file = emulator.add_file("a.png", b"\x89PNG", "image/png")
    async with aiohttp.ClientSession() as http:
        async with http.get(file["url_private"]) as resp:
            assert resp.status == 403
        async with http.get(file["url_private"], headers={"Authorization": "Bearer xoxb-test"}) as resp:
            assert await resp.read() == b"\x89PNG"


async def test_button_clicks_are_acknowledged_by_the_bridge(stack: Stack) -> None:
    cid = await stack.sandbox.open_chat("1001")
    await stack.settle()
    root = stack.slack.channel("C0CHATS1001")[-1]
    assert cid and await stack.slack.block_action("U0MAIN1001", "C0CHATS1001", root.ts, "order_detail") == 200


async def test_blocks_over_block_kits_limits_are_refused_whole(emulator: SlackEmulator) -> None:
    client = AsyncWebClient(token="xoxb-test", base_url=emulator.api_url)
    too_long = [{"type": "section", "text": {"type": "mrkdwn", "text": "字" * 3001}}]
    with pytest.raises(SlackApiError) as info:
        await client.chat_postMessage(channel="C1", text="t", blocks=too_long)
    assert info.value.response["error"] == "invalid_blocks"
    assert info.value.response["errors"] == ["must be less than 3001 characters [json-pointer:/blocks/0/text/text]"]
    refused: list[list[dict[str, Any]]] = [
        [{"type": "section", "fields": [{"type": "mrkdwn", "text": "x" * 2001}]}],
        [{"type": "header", "text": {"type": "plain_text", "text": "h" * 151}}],
        [{"type": "divider"}] * 51,
    ]
    for blocks in refused:
        with pytest.raises(SlackApiError) as info:
            await client.chat_postMessage(channel="C1", text="t", blocks=blocks)
        assert info.value.response["error"] == "invalid_blocks"
    posted = await client.chat_postMessage(channel="C1", text="t", blocks=[{"type": "divider"}] * 50)
    with pytest.raises(SlackApiError) as info:
        await client.chat_update(channel="C1", ts=posted["ts"], text="t", blocks=too_long)
    assert info.value.response["error"] == "invalid_blocks"
    assert [len(m.blocks) for m in emulator.channel("C1")] == [50], "nothing refused was kept or changed"
