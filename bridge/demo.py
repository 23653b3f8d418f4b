"""`make demo`: start everything locally and narrate what each part does.

The platform sandbox and the Slack / Telegram emulators join this script as they are built; until
then it shows the service itself: configuration, embedded Redis, health endpoints and the timer
engine firing reminders on time.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from pathlib import Path

import aiohttp

from bridge import keys
from bridge.cli import headline
from bridge.config import ConfigError, ConfigHolder, LoadedConfig
from bridge.service import Bridge, connect_redis
from bridge.timers import Timer


class Transcript:
    def __init__(self) -> None:
        self.started = time.monotonic()

    def say(self, who: str, text: str) -> None:
        print(f"[{time.monotonic() - self.started:7.3f}s] {who:<8} {text}", flush=True)


def run_demo(config_path: Path, *, keep_serving: bool = False) -> int:
    logging.getLogger().setLevel(logging.WARNING)
    try:
        holder = ConfigHolder(config_path)
    except ConfigError as exc:
        print(exc)
        return 1
    return asyncio.run(_demo(holder, keep_serving))


async def _demo(holder: ConfigHolder, keep_serving: bool) -> int:
    out = Transcript()
    out.say("config", headline(LoadedConfig(holder.current, str(holder.path), holder.warnings)))
    redis, embedded = connect_redis()
    out.say(
        "redis",
        f"embedded redis-server at {embedded.url}, AOF under var/redis/" if embedded else "using REDIS_URL",
    )

    fired: list[tuple[Timer, float]] = []
    all_fired = asyncio.Event()
    expected = 3

    async def on_demo_timer(timer: Timer) -> None:
        late_ms = (time.time() - (timer.due_at or time.time())) * 1000
        fired.append((timer, late_ms))
        out.say("timer", f"{timer.key} fired, {late_ms:.1f} ms after its due time (payload: {timer.payload})")
        if len(fired) >= expected:
            all_fired.set()

    bridge = Bridge(holder, redis, embedded_redis=embedded, timer_handlers={"demo": on_demo_timer})
    await bridge.start()
    base = f"http://{holder.current.server.host}:{bridge.port}"
    out.say("bridge", f"serving at {base}")
    try:
        async with aiohttp.ClientSession() as http:
            for path in ("/healthz", "/readyz"):
                async with http.get(base + path) as resp:
                    out.say(
                        "http",
                        f"GET {path} → {resp.status} {json.dumps(await resp.json(), ensure_ascii=False)}",
                    )

        store = holder.current.stores[0].id if holder.current.stores else "demo"
        now = time.time()
        plan = [
            ("reminder-60s-left", 1.0),
            ("reminder-30s-left", 1.5),
            ("window-closes", 2.0),
            ("cancelled", 1.2),
        ]
        for name, after in plan:
            await bridge.timers.schedule(keys.demo_timer(store, name), now + after, payload=f"+{after}s")
        out.say(
            "timers",
            f"scheduled {len(plan)} timers in Redis for store {store}: " + ", ".join(f"{n} at +{a}s" for n, a in plan),
        )
        await bridge.timers.cancel(keys.demo_timer(store, "cancelled"))
        out.say("timers", "cancelled 'cancelled' (as a reply cancels its chat's reminders)")
        await asyncio.wait_for(all_fired.wait(), timeout=10)
        worst = max(late for _, late in fired)
        out.say(
            "summary",
            f"{len(fired)} timers fired once each, worst lateness {worst:.1f} ms; "
            f"{await bridge.timers.pending()} pending, {await bridge.timers.leased()} leased",
        )
        out.say("next", "platform sandbox and Slack/Telegram emulators join this demo with the next issues")
        if keep_serving:
            out.say("bridge", f"still serving: {base}/healthz and {base}/readyz — Ctrl-C to stop")
            await asyncio.Event().wait()
    finally:
        await bridge.stop()
        out.say("bridge", "stopped gracefully; embedded Redis stopped")
    return 0
