"""`make demo`: start everything locally and narrate what each part does.

Today it shows the ground the flows stand on: the platform sandbox pushing signed events that the
bridge stores once and acknowledges, a reply going out through the durable outbox (retried past a
platform error, never doubled), and reminder timers firing from Redis on time. The Slack and
Telegram emulators and the flows themselves join this script as they are built.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp

from bridge import keys
from bridge.cli import headline
from bridge.config import ConfigError, ConfigHolder, LoadedConfig, load_config
from bridge.outbox import OutboxJob
from bridge.service import Bridge, connect_redis
from bridge.timers import Timer
from connectors.platform.outbound import SEND_MESSAGE
from connectors.platform.sandbox import PlatformSandbox
from connectors.platform.signing import sign


class Transcript:
    def __init__(self) -> None:
        self.started = time.monotonic()

    def say(self, who: str, text: str) -> None:
        print(f"[{time.monotonic() - self.started:7.3f}s] {who:<9} {text}", flush=True)


def run_demo(config_path: Path, *, keep_serving: bool = False) -> int:
    logging.getLogger().setLevel(logging.WARNING)
    try:
        load_config(config_path)
    except ConfigError as exc:
        print(exc)
        return 1
    return asyncio.run(_demo(config_path, keep_serving))


async def _demo(config_path: Path, keep_serving: bool) -> int:
    out = Transcript()
    sandbox = PlatformSandbox(load_config(config_path).config, "http://127.0.0.1:1", push_retry_seconds=0.2)
    sandbox_url = await sandbox.start()
    holder = ConfigHolder(config_path, environ={**os.environ, "PLATFORM_API_URL": sandbox_url})
    out.say("config", headline(LoadedConfig(holder.current, str(holder.path), holder.warnings)))
    redis, embedded = connect_redis()
    out.say(
        "redis", f"embedded redis-server at {embedded.url}, AOF under var/redis/" if embedded else "using REDIS_URL"
    )

    fired: list[tuple[Timer, float]] = []
    all_fired = asyncio.Event()

    async def on_demo_timer(timer: Timer) -> None:
        late_ms = (time.time() - (timer.due_at or time.time())) * 1000
        fired.append((timer, late_ms))
        out.say("timer", f"{timer.key} fired {late_ms:.1f} ms after its due time ({timer.payload})")
        if len(fired) >= 3:
            all_fired.set()

    bridge = Bridge(holder, redis, embedded_redis=embedded, timer_handlers={"demo": on_demo_timer})
    await bridge.start()
    base = f"http://{holder.current.server.host}:{bridge.port}"
    sandbox.bridge_url = base
    out.say("bridge", f"serving at {base}; platform sandbox at {sandbox_url}")
    try:
        async with aiohttp.ClientSession() as http:
            for path in ("/healthz", "/readyz"):
                async with http.get(base + path) as resp:
                    out.say("http", f"GET {path} → {resp.status} {json.dumps(await resp.json(), ensure_ascii=False)}")
            store = holder.current.stores[0]
            await _platform_push(out, http, bridge, sandbox, base, store.id)
        await _outbox(out, bridge, sandbox, store.id)
        await _timers(out, bridge, store.id)
        await asyncio.wait_for(all_fired.wait(), timeout=10)
        worst = max(late for _, late in fired)
        out.say(
            "summary",
            f"events in: {len(sandbox.deliveries)} pushes, {bridge.event_log.records_stored} new event(s) stored "
            f"in {bridge.event_log.round_trips} Redis round trips, "
            f"{bridge.consumer.stats.handled + bridge.consumer.stats.ignored} handled; "
            f"calls out: {bridge.outbox.stats.sent} sent, {bridge.outbox.stats.retried} retried; "
            f"timers: {len(fired)} fired, worst lateness {worst:.1f} ms",
        )
        out.say("next", "Slack and Telegram emulators and the two flows join this demo with the next issues")
        if keep_serving:
            out.say("bridge", f"still serving: {base}/healthz, {base}/readyz; sandbox {sandbox_url} — Ctrl-C to stop")
            await asyncio.Event().wait()
    finally:
        await bridge.stop()
        await sandbox.stop()
        out.say("bridge", "stopped gracefully; embedded Redis stopped")
    return 0


async def _platform_push(
    out: Transcript, http: aiohttp.ClientSession, bridge: Bridge, sandbox: PlatformSandbox, base: str, store_id: str
) -> None:
    card = {
        "type": "order_card",
        "order_id": "6901234567890",
        "product_name": "保温杯 Thermos cup 500ml",
        "amount_cents": 12900,
        "status": "已发货 shipped",
        "detail_url": "https://fxg.example/order/6901234567890",
    }
    cid = await sandbox.open_chat(store_id, card)
    delivery = sandbox.deliveries[-1]
    out.say("platform", f"CS opened chat {cid} with an order card → signed push, bridge answered {delivery.statuses}")
    await _until(lambda: bridge.consumer.stats.handled + bridge.consumer.stats.ignored >= 1)
    out.say("bridge", f"stored it in {keys.events('{store:' + store_id + '}')}, then handled it (flow: next issue)")

    again = await sandbox.push_envelope("store", store_id, delivery.records)
    seen = await bridge.redis.zscore(keys.seen("{store:" + store_id + "}"), delivery.records[0]["msg_id"])
    stored = seen is not None
    out.say("platform", f"redelivered the same push → {again.statuses}; msg_id remembered for 7 days: {bool(stored)}")

    body = json.dumps(delivery.records).encode()
    app_key = bridge.holder.current.stores[0].platform.app_key
    headers = {"app-id": app_key, "event-sign": sign(app_key, body, "a-guessed-secret")}
    async with http.post(f"{base}/webhooks/platform/{store_id}", data=body, headers=headers) as resp:
        out.say("attacker", f"push signed with a guessed secret → {resp.status} {(await resp.json())['msg']}")


async def _outbox(out: Transcript, bridge: Bridge, sandbox: PlatformSandbox, store_id: str) -> None:
    cid = next(iter(sandbox.conversations))
    sandbox.fail_next("POST", "/im/conversations", 503)
    job = OutboxJob(
        "demo-reply-1",
        SEND_MESSAGE,
        {
            "endpoint": f"store:{store_id}",
            "conversation_id": cid,
            "agent_id": "agent-a",
            "content": {"type": "text", "text": "您好，已经发货了，单号 SF1234567890 😊"},
        },
    )
    bridge.outbox.base_delay = 0.3
    await bridge.outbox.enqueue("{store:" + store_id + "}", f"chat:{cid}", job)
    out.say("outbox", "queued a reply for the platform (job id = its Idempotency-Key)")
    await _until(lambda: bridge.outbox.stats.sent >= 1)
    calls = sandbox.received("POST", "/im/conversations")
    out.say("platform", f"received it: statuses {[c.status for c in calls]} — a 503, retried with backoff, one message")


async def _timers(out: Transcript, bridge: Bridge, store_id: str) -> None:
    now = time.time()
    plan = [("reminder-60s-left", 1.0), ("reminder-30s-left", 1.5), ("window-closes", 2.0), ("cancelled", 1.2)]
    for name, after in plan:
        await bridge.timers.schedule(keys.demo_timer(store_id, name), now + after, payload=f"+{after}s")
    out.say("timers", f"scheduled {len(plan)} timers in Redis: " + ", ".join(f"{n} +{a}s" for n, a in plan))
    await bridge.timers.cancel(keys.demo_timer(store_id, "cancelled"))
    out.say("timers", "cancelled 'cancelled' (as a reply cancels its chat's reminders)")


async def _until(condition: Callable[[], bool], within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("the demo waited too long")
        await asyncio.sleep(0.02)
