"""The demo's scenes, played on an injected clock: the same script as `make demo` (which keeps
playing them in real time, about a minute), here in seconds — every wait of a scene moves the
clock to the bridge's next timer instead of sleeping through it."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from bridge.app import demo
from bridge.engine.clock import ManualClock
from tests.conftest import EXAMPLE_CONFIG, Stack, start_stack


class InjectedTime:
    """A scene's wait: the bridge handles what is stored and fires what is due, and the clock jumps
    to the next thing due, never past the wait's own limit."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        assert stack.clock is not None
        self.clock: ManualClock = stack.clock

    async def until(self, probe: Callable[[], Any], within: float, async_probe: bool) -> Any:
        limit, started = self.clock.now() + within, time.monotonic()
        while time.monotonic() - started < 30:  # real seconds: what is in flight over HTTP lands
            found = await probe() if async_probe else probe()
            if found is not None:
                return found
            if await self.stack.bridge.drain():
                continue
            due = await self.stack.next_due()
            if due is not None and due <= limit:
                self.clock.set(max(due, self.clock.now()))
            else:
                await asyncio.sleep(0.01)
        raise TimeoutError(f"the scene waited for more than {within} s of its time")

    async def pause(self, seconds: float) -> None:
        await self.stack.advance(seconds)


async def test_the_demo_plays_its_scenes_on_an_injected_clock(
    redis: Redis, redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)  # the demo writes its configuration under var/
    stack = await start_stack(redis_url, config_path=demo._demo_config(EXAMPLE_CONFIG), clock=ManualClock(),
                              run_workers=False)  # fmt: skip
    out = demo.Transcript()
    watcher = demo.Watcher(out, stack.slack, stack.sandbox, stack.telegram)
    out.before_scene = watcher.poll
    watching = asyncio.create_task(watcher.run())
    token = demo.PACE.set(InjectedTime(stack))
    started = time.monotonic()
    try:
        await demo.play(out, watcher, stack.bridge, stack.sandbox, stack.slack, stack.telegram, stack.url)
    finally:
        demo.PACE.reset(token)
        watching.cancel()
        await asyncio.gather(watching, return_exceptions=True)
        await stack.stop()
    text = capsys.readouterr().out
    assert time.monotonic() - started < 40, "played on the injected clock, not in real time"
    for scene in range(1, 9):
        assert f"scene     {scene}. " in text, f"scene {scene} played"
    assert text.index("⛔ 会话已关闭：超时未回复") < text.index("消息未发送：该会话已关闭"), (
        "the close before the late reply"
    )
    assert "GET /healthz → 200" in text and "GET /readyz → 200" in text
    assert "pushed im_platform_message to store:1001 (signed) → [200]" in text
    assert "(only U0STRANGER sees) 消息未发送：只有本店铺的指定客服" in text
    assert '"text": "您好，已经发货了 🚚 👍🏻"' in text, "the reply reached the platform as Unicode"
    assert '"type": "image", "media_id"' in text and "got :white_check_mark:" in text
    assert "⏰ 还剩 6 秒回复" in text and "⏰ 还剩 3 秒回复" in text
    assert "⛔ 会话已关闭：超时未回复" in text and "消息未发送：该会话已关闭" in text
    assert "guessed secret → 401" in text
    assert "/feige stats → 📊" in text and " 0 Slack 429s" in text
    assert "#C0TASKS1001 ← bridge: 【物流问题 Logistics】商达协同任务单" in text
    assert "telegram  chat 7001 ← bridge: 【物流问题 Logistics】" in text
    assert re.search(r"message \d+ edited: .*Step 1/3: .* \[no buttons\]\n", text), "a step's question, once past"
    scene_4, scene_5 = text.index("scene     4."), text.index("scene     5.")
    assert scene_4 < text.index("#C0TASKS1001 ← bridge: 【物流问题 Logistics】") < scene_5, "results under their scene"
    summary = next(line for line in text.splitlines() if "summary" in line)
    total, parts = re.search(r"calls out: (\d+) sent = ([^;]+);", summary).groups()  # type: ignore[union-attr]
    assert int(total) == sum(int(p.split()[0]) for p in parts.split(" + ")), "the summary's numbers add up"
    assert "<b>" not in text and "&#x27;" not in text, "Telegram messages as people see them"
    assert re.search(r"#C0TASKS1001 ← bridge: 【物流问题 Logistics】.* · 截止 \d{4}-\d\d-\d\d 09:00", text), (
        "raised late in the evening: the deadline moved to 09:00"
    )
    assert (
        "💬 达人留言（达人 小美 Xiaomei）：好的，买家在等" in text
        and "💬 商家留言（店长 Li）：进展 10：已联系快递" in text
    )
    assert "(only U0MAIN1001 sees) 留言未发送：本方留言已达上限（10/10）" in text
    assert (
        "modal submitted (parcel.png, whole-shelf.png) → accepted" in text
        and "未提交处理，凭证不符合要求： ⏎ 文件 whole-shelf.png：超过 5 MB" in text
        and "modal submitted (parcel.png) → accepted" in text
    )
    assert "⚠️ 处理结果不会自动发给消费者" in text
    assert re.search(r"chat -1001002000001: topic \d+ opened, “⏳ Platform CS · Can the buyer change the size\?”", text)
    assert re.search(r"chat -1001002000001 ← bridge in topic \d+: Feige · platform customer service chat", text)
    assert '"text": "Yes, exchange within 7 days 👍"' in text, "the Telegram group's answer reached the platform"
    assert "Not sent: only the store's designated agents" in text
    assert "#C0CREATOR7002 ← bridge: [物流问题 Logistics]" in text, "a creator in Slack gets the confirmation"
    assert "Step 1/3" in text and "Step 2/3" in text and "Step 3/3" in text
    assert '"solution": "Reshipped by SF Express, waybill SF9876543210", "evidence": ["media' in text
    assert re.search(r"#C0CREATOR7002 thread [\d.]+ ← bridge: The merchant processed task order", text)


def test_the_demo_keeps_its_own_archive_new_each_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Its chats are not the store's: `bridge serve`'s embedded archive is left alone, and a second run
    does not count the first's in its statistics."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "var").mkdir()
    served, last_run = tmp_path / "var/archive.sqlite3", tmp_path / "var/demo-archive.sqlite3"
    for path in (served, last_run, tmp_path / "var/demo-archive.sqlite3-wal"):
        path.write_bytes(b"kept rows")
    archive = demo.fresh_archive({})
    assert archive.url == "sqlite:///var/demo-archive.sqlite3"
    assert sorted(p.name for p in (tmp_path / "var").iterdir()) == ["archive.sqlite3"], "last run's file and WAL went"
    assert served.read_bytes() == b"kept rows"
    given = demo.fresh_archive({"ARCHIVE_URL": "postgresql://demo@127.0.0.1/demo"})
    assert given.url == "postgresql://demo@127.0.0.1/demo", "a given archive is used, as a given Redis is"
