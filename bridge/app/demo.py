"""`make demo`: the whole product on one machine, narrated.

Starts the embedded Redis, the platform sandbox, the Slack emulator and the bridge, then plays a
scripted scenario with a short reply window and prints, with timestamps, what each side saw: the
platform (what it pushed, what it received), Slack (messages, thread replies, private notes,
reactions) and the bridge. It ends with a summary and exits 0; ``--serve`` keeps everything running.
"""

from __future__ import annotations

import asyncio
import html
import json
import logging
import os
import re
import time
from collections.abc import Callable
from contextvars import ContextVar
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Protocol
from zoneinfo import ZoneInfo

import aiohttp
import yaml

from bridge.app.service import Bridge, StartupError, connect_redis
from bridge.archive.store import Archive, archive_url
from bridge.config import ConfigError, ConfigHolder, LoadedConfig, load_config
from bridge.engine import keys
from bridge.engine.metrics import METRICS
from bridge.sandbox.platform import PlatformSandbox
from bridge.sandbox.slack import SlackEmulator
from bridge.sandbox.telegram import BOT_ID, TelegramEmulator, TgMessage
from connectors.platform.signing import sign

DEMO_REDIS_DIR = Path("var/demo-redis")  # a clean slate every run: the demo's story starts from nothing
DEMO_ARCHIVE = Path("var/demo-archive.sqlite3")
"""The demo's own archive, as fresh as its Redis: not the embedded one ``bridge serve`` keeps (the
demo's chats are not the store's), and not last run's (its statistics would count both)."""
DEMO_WINDOW = {"seconds": 10, "reminders_before": [6, 3], "escalate_before": 3}
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 512


class Transcript:
    def __init__(self) -> None:
        self.started = time.monotonic()
        self.before_scene: Callable[[], None] | None = None
        """Prints what the previous scene left in flight, so each result is under its own heading."""

    def say(self, who: str, text: str) -> None:
        if who == "scene" and self.before_scene is not None:
            self.before_scene()
        print(f"[{time.monotonic() - self.started:7.3f}s] {who:<9} {text}", flush=True)


class Watcher:
    """Prints what lands in Slack and on the platform as it happens."""

    def __init__(
        self, out: Transcript, slack: SlackEmulator, sandbox: PlatformSandbox, telegram: TelegramEmulator
    ) -> None:
        self.out, self.slack, self.sandbox, self.telegram = out, slack, sandbox, telegram
        self.seen_telegram = self.seen_answers = 0
        self.seen_messages = self.seen_ephemerals = self.seen_records = self.seen_pushes = 0
        self.seen_edits: dict[str, int] = {}
        self.seen_reactions: dict[str, int] = {}
        self.topic_names: dict[tuple[int, int], str] = {}

    def poll(self) -> None:
        for d in self.sandbox.deliveries[self.seen_pushes :]:
            if d.statuses:
                tags = ", ".join(r["tag"] for r in d.records)
                self.out.say("platform", f"pushed {tags} to {d.endpoint} (signed) → {d.statuses}")
                self.seen_pushes += 1
        for m in self.slack.messages[self.seen_messages :]:
            where = f"#{m.channel} thread {m.thread_ts}" if m.thread_ts else f"#{m.channel}"
            who = "bridge" if m.posted_at else f"user {m.user}"
            self.out.say("slack", f"{where} ← {who}: {_flat(m.text)}")
        self.seen_messages = len(self.slack.messages)
        for m in self.slack.messages:
            if m.edits > self.seen_edits.get(m.ts, 0):
                self.out.say("slack", f"#{m.channel} root {m.ts} updated: {_flat(m.text)}")
                self.seen_edits[m.ts] = m.edits
            if len(m.reactions) > self.seen_reactions.get(m.ts, 0):
                self.out.say("slack", f"#{m.channel} {m.ts} got :{m.reactions[-1]}:")
                self.seen_reactions[m.ts] = len(m.reactions)
        for tg in self.telegram.messages[self.seen_telegram :]:
            if tg.thread_id == tg.message_id:
                # The name it was opened with: by now the bridge may have renamed it (its status).
                self.out.say("telegram", f"chat {tg.chat_id}: topic {tg.message_id} opened, “{tg.topic_created}”")
                continue
            who = "bridge" if tg.from_id == BOT_ID else f"user {tg.from_id}"
            reply = f" (reply to {tg.reply_to})" if tg.reply_to and tg.reply_to != tg.thread_id else ""
            reply += f" in topic {tg.thread_id}" if tg.thread_id else ""
            if tg.photo or tg.document or tg.video:
                reply += f" [file {tg.file_name or 'photo'}]"
            self.out.say("telegram", f"chat {tg.chat_id} ← {who}{reply}: {_flat(_as_seen(tg.text))}{_keyboard(tg)}")
        self.seen_telegram = len(self.telegram.messages)
        for (chat, topic), name in self.telegram.topics.items():
            if self.topic_names.setdefault((chat, topic), name) != name:
                self.out.say("telegram", f"chat {chat}: topic {topic} renamed “{name}”")
                self.topic_names[(chat, topic)] = name
        for tg in self.telegram.messages:
            key = f"tg:{tg.chat_id}:{tg.message_id}"
            if tg.edits > self.seen_edits.get(key, 0):
                # An edit shows its keyboard too: one without buttons left (a step that is past) says so.
                keyboard = _keyboard(tg) or " [no buttons]"
                self.out.say("telegram", f"chat {tg.chat_id} message {tg.message_id} edited: "
                                         f"{_flat(_as_seen(tg.text))}{keyboard}")  # fmt: skip
                self.seen_edits[key] = tg.edits
            if len(tg.reactions) > self.seen_reactions.get(key, 0):
                self.out.say("telegram", f"chat {tg.chat_id} message {tg.message_id} got {tg.reactions[-1]}")
                self.seen_reactions[key] = len(tg.reactions)
        for answer in self.telegram.callback_answers[self.seen_answers :]:
            if answer.get("text"):  # a tap answered with no text shows nothing
                self.out.say("telegram", f"(the tapper sees) {_flat(str(answer['text']))}")
        self.seen_answers = len(self.telegram.callback_answers)
        for e in self.slack.ephemerals[self.seen_ephemerals :]:
            self.out.say("slack", f"(only {e['user']} sees) {_flat(e['text'])}")
        self.seen_ephemerals = len(self.slack.ephemerals)
        for r in self.sandbox.records[self.seen_records :]:
            body = r.body.get("content") or {k: v for k, v in r.body.items() if k != "filename"}
            self.out.say(
                "platform", f"received {r.method} {r.path} → {r.status} {json.dumps(body, ensure_ascii=False)}"
            )
        self.seen_records = len(self.sandbox.records)

    async def run(self) -> None:
        while True:
            self.poll()
            await asyncio.sleep(0.02)


def _sent_by_kind() -> dict[str, int]:
    """Outbound calls sent, by job kind (from the metrics), most first: they add up to the total."""
    counts = {
        sample.labels["kind"]: int(sample.value)
        for metric in METRICS.outbox.collect()
        for sample in metric.samples
        if sample.name.endswith("_total") and sample.labels.get("outcome") == "sent" and sample.value
    }
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def _as_seen(telegram_html: str) -> str:
    """A Telegram message as a person sees it: formatting applied, entities decoded."""
    return html.unescape(re.sub(r"<[^>]+>", "", telegram_html))


def _keyboard(tg: TgMessage) -> str:
    """A Telegram message's buttons as the demo prints them (" [A | B]"), or nothing."""
    labels = [b["text"] for row in (tg.reply_markup or {}).get("inline_keyboard", []) for b in row]
    return f" [{' | '.join(labels)}]" if labels else ""


def _flat(text: str) -> str:
    text = re.sub(r"<!date\^\d+\^[^|>]*\|([^>]+)>", r"\1", text)
    return text.replace("\n", " ⏎ ")


def run_demo(config_path: Path, *, keep_serving: bool = False) -> int:
    logging.getLogger().setLevel(logging.WARNING)
    try:
        load_config(config_path)
    except ConfigError as exc:
        print(exc)
        return 1
    try:
        return asyncio.run(_demo(config_path, keep_serving))
    except StartupError as error:
        print(f"bridge demo: {error}")
        return 1


def fresh_archive(env: dict[str, str]) -> Archive:
    """ARCHIVE_URL when set, as for Redis; else the demo's own file, emptied first (WAL and lock too)."""
    if "ARCHIVE_URL" not in env:
        for left in DEMO_ARCHIVE.parent.glob(f"{DEMO_ARCHIVE.name}*"):
            left.unlink()
    return Archive(archive_url(env, DEMO_ARCHIVE))


def _demo_config(config_path: Path) -> Path:
    """The example, with the first store's reply window shortened so the demo does not take minutes."""
    tree = yaml.safe_load(config_path.read_text(encoding="utf-8"))
    tree["stores"][0]["reply_window"] = DEMO_WINDOW
    tree["stores"][0]["sandbox"] = True
    path = Path("var") / "demo.yaml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(yaml.safe_dump(tree, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return path


async def _demo(config_path: Path, keep_serving: bool) -> int:
    out = Transcript()
    path = _demo_config(config_path)
    env = dict(os.environ)
    base_config = load_config(path, environ=env).config
    slack_settings = base_config.settings_of("slack")
    assert slack_settings is not None, "the demo needs the slack: section of the example"
    slack = SlackEmulator(slack_settings.signing_secret, slack_settings.bot_token)
    await slack.start()
    tg_settings = base_config.settings_of("telegram")
    assert tg_settings is not None, "the demo needs the telegram: section of the example"
    telegram = TelegramEmulator(tg_settings.bot_token, tg_settings.webhook_secret)
    await telegram.start()
    sandbox = PlatformSandbox(base_config, "http://127.0.0.1:1", push_retry_seconds=0.2)
    sandbox_url = await sandbox.start()
    env |= {"PLATFORM_API_URL": sandbox_url, "SLACK_API_URL": slack.api_url, "TELEGRAM_API_URL": telegram.api_url,
            "TELEGRAM_FILE_URL": telegram.file_url}  # fmt: skip
    holder = ConfigHolder(path, environ=env)
    out.say("config", LoadedConfig(holder.current, str(config_path), holder.warnings).headline())
    redis, embedded = connect_redis(data_dir=DEMO_REDIS_DIR, fresh=True)
    out.say(
        "redis",
        f"embedded redis-server at {embedded.url}, AOF under {DEMO_REDIS_DIR}/" if embedded else "using REDIS_URL",
    )
    bridge = Bridge(holder, redis, embedded_redis=embedded, archive=fresh_archive(env))
    try:
        await bridge.start()
    except BaseException:
        await bridge.stop()  # the embedded Redis with it
        raise
    base = f"http://{holder.current.server.host}:{bridge.port}"
    sandbox.bridge_url = slack.bridge_url = telegram.bridge_url = base
    for connector in bridge.connectors.values():
        await connector.ready()
    out.say("bridge", f"serving at {base}; platform sandbox {sandbox_url}; Slack emulator {slack.base_url}")
    watcher = Watcher(out, slack, sandbox, telegram)
    out.before_scene = watcher.poll
    watching = asyncio.create_task(watcher.run())
    try:
        await play(out, watcher, bridge, sandbox, slack, telegram, base)
        if keep_serving:
            out.say("bridge", f"still serving: {base}/healthz · platform sandbox {sandbox_url} · Slack emulator "
                              f"{slack.base_url} · Telegram emulator {telegram.api_url} — Ctrl-C")  # fmt: skip
            await asyncio.Event().wait()
    finally:
        watching.cancel()
        await asyncio.gather(watching, return_exceptions=True)
        await bridge.stop()
        await sandbox.stop()
        await slack.stop()
        await telegram.stop()
        out.say("bridge", "stopped gracefully; embedded Redis stopped")
    return 0


async def play(
    out: Transcript,
    watcher: Watcher,
    bridge: Bridge,
    sandbox: PlatformSandbox,
    slack: SlackEmulator,
    telegram: TelegramEmulator,
    base: str,
) -> None:
    """The scenes, against a running bridge and the emulators (real time in ``bridge demo``; the
    tests play them on an injected clock: ``PACE``)."""
    holder, redis = bridge.holder, bridge.redis
    store = holder.current.stores[0]
    channel = store.destinations.platform_chats.split(":", 1)[1]
    users = {a.id: a.identity("slack") or "" for a in store.agents}
    async with aiohttp.ClientSession() as http:
        for probe in ("/healthz", "/readyz"):
            async with http.get(base + probe) as resp:
                out.say("http", f"GET {probe} → {resp.status} {json.dumps(await resp.json(), ensure_ascii=False)}")
        out.say("demo", f"store {store.id}: reply window shortened to {DEMO_WINDOW['seconds']} s for the demo "
                        "(the platform's is 2–3 min), reminders at 6 s and 3 s left")  # fmt: skip

        out.say("scene", "1. platform CS opens a chat with an order card")
        card = {"type": "order_card", "order_id": "6901234567890", "product_name": "保温杯 Thermos cup 500ml",
                "amount_cents": 12900, "status": "已发货 shipped",
                "detail_url": "https://fxg.example/order/6901234567890"}  # fmt: skip
        first = await sandbox.open_chat(store.id, card)
        root = await _until(lambda: _root_of(slack, channel, "6901234567890"))

        out.say("scene", "2. a stranger tries to answer; then the assignee answers with text, emoji and an image")
        await slack.user_message("U0STRANGER", channel, "我来回答", thread_ts=root)
        await _pause(0.3)
        assignee = await redis.hget(keys.chat(keys.store_tag(store.id), first), "assignee")
        user = users.get(str(assignee), "")
        await slack.user_message(user, channel, "您好，已经发货了 :truck: :+1::skin-tone-2:", thread_ts=root)
        photo = slack.add_file("waybill.png", PNG, "image/png")
        await slack.user_message(user, channel, "快递单见图", thread_ts=root, files=[photo])
        await _until(lambda: len([m for m in sandbox.conversations[first].messages if m["from"] == "merchant"]) >= 3)
        await _pause(1.5)

        out.say(
            "scene",
            "3. a second chat gets no answer: reminders, then the bridge closes it; a late reply is refused",
        )
        second = await sandbox.open_chat(store.id, {"type": "text", "text": "请问可以改地址吗？"})
        root2 = await _until(lambda: _root_of(slack, channel, "改地址"))
        await _until(lambda: _status(redis, store.id, second), within=20, async_probe=True)
        # The close notice is in the thread before anyone answers late: the transcript shows the close first.
        await _until(lambda: next((m for m in slack.thread(channel, root2) if m.text.startswith("⛔")), None))
        late_user = users.get(str(await redis.hget(keys.chat(keys.store_tag(store.id), second), "assignee")), "")
        await slack.user_message(late_user, channel, "可以的", thread_ts=root2)
        await _pause(1.0)

        await _task_scenes(out, holder, sandbox, slack, telegram, users)
        await _telegram_scenes(out, holder, sandbox, slack, telegram)

        out.say("scene", "8. plumbing: a redelivered push changes nothing; a forged one is refused")
        delivery = sandbox.deliveries[0]
        again = await sandbox.push_envelope("store", store.id, delivery.records)
        out.say("platform", f"redelivered push {delivery.records[0]['msg_id']} → {again.statuses} (stored once)")
        body = json.dumps(delivery.records).encode()
        headers = {"app-id": store.platform.app_key, "event-sign": sign(store.platform.app_key, body, "guess")}
        async with http.post(f"{base}/webhooks/platform/{store.id}", data=body, headers=headers) as resp:
            out.say("attacker", f"push signed with a guessed secret → {resp.status} {(await resp.json())['msg']}")

        answered = len(slack.responses)
        await slack.slash_command(users.get(store.main_account, ""), channel, "/feige", "stats")
        stats = await _until(lambda: slack.responses[answered]["text"] if len(slack.responses) > answered else None)
        out.say("slack", f"/feige stats → {_flat(stats)}")
    watcher.poll()
    sent = _sent_by_kind()
    out.say(
        "summary",
        f"events in: {len(sandbox.deliveries)} platform pushes; {bridge.event_log.records_stored} events stored "
        f"(the pushes' records and what people did in Slack and Telegram); "
        f"calls out: {sum(sent.values())} sent = "
        + " + ".join(f"{n} {kind}" for kind, n in sent.items())
        + f"; {bridge.outbox.stats.retried} retried, {slack.rate_limited} Slack 429s, "
        f"{telegram.rate_limited} Telegram 429s; timers fired: {bridge.worker.stats.fired}",
    )


async def _task_scenes(
    out: Transcript,
    holder: ConfigHolder,
    sandbox: PlatformSandbox,
    slack: SlackEmulator,
    telegram: TelegramEmulator,
    users: dict[str, str],
) -> None:
    """Scenes 4 and 5: a task order with the merchant in Slack and the creator in Telegram."""
    store, creator = holder.current.stores[0], holder.current.creators[0]
    tz = ZoneInfo(store.timezone)
    now = datetime.now(tz)
    evening = now.replace(hour=22, minute=40, second=0, microsecond=0)
    if evening > now:
        evening -= timedelta(days=1)
    raised = f"{evening:%Y-%m-%d %H:%M} {store.timezone}"
    out.say("scene", f"4. a creator raises a task order late in the evening ({raised}): card in Slack, ping in "
                     "Telegram; 24 h later falls in the night, so the deadline moves to 09:00")  # fmt: skip
    tid = await sandbox.create_task_order(store.id, creator.id, created_at=evening.isoformat())
    task_channel = store.destinations.task_orders.split(":", 1)[1]
    card_ts = await _until(lambda: _root_of(slack, task_channel, tid))
    creator_chat = int(creator.destination.split(":", 1)[1])
    confirm = await _until(lambda: next((m for m in telegram.messages if tid in m.text), None))
    main = users.get(store.main_account, "")

    out.say("scene", "5. comments both ways up to the limit (the 11th refused); evidence with an oversize file "
                     "refused; resolved → the creator is pinged with Contact buyer")  # fmt: skip
    await telegram.user_message(creator_chat, creator_chat, "好的，买家在等", reply_to=confirm.message_id)
    for i in range(1, 12):
        await slack.user_message(
            main, task_channel, f"进展 {i}：已联系快递" if i < 11 else "第 11 条", thread_ts=card_ts
        )
    await _until(lambda: any("（10/10）" in e["text"] for e in slack.ephemerals) or None)
    good = slack.add_file("parcel.png", PNG, "image/png")
    huge = slack.add_file("whole-shelf.png", PNG, "image/png") | {"size": 6 * 1024 * 1024}
    solution = "已为买家补发，顺丰单号 SF123456789"
    for files in ([good, huge], [good]):
        opened = len(slack.views)
        assert await slack.block_action(main, task_channel, card_ts, "task_resolve", tid) == 200
        view = await _until(lambda: slack.views[-1] if len(slack.views) > opened else None)  # noqa: B023 (awaited here)
        names = ", ".join(f["name"] for f in files)
        told = len(slack.ephemerals)
        _, answer = await slack.submit_view(main, view, _modal_values(solution, files))
        errors = json.loads(answer).get("errors") if answer.strip() else None
        out.say(
            "slack",
            f"modal submitted ({names}) → "
            + (f"refused: {_flat('; '.join(errors.values()))}" if errors else "accepted"),
        )
        if huge in files:  # the files' contents are checked after the ack; the refusal comes in the thread
            await _until(lambda: next((e for e in slack.ephemerals[told:] if tid in e["text"]), None))  # noqa: B023
    await _until(lambda: next((m for m in telegram.messages if "SF123456789" in m.text), None), within=30)
    await _pause(1.2)


async def _telegram_scenes(
    out: Transcript, holder: ConfigHolder, sandbox: PlatformSandbox, slack: SlackEmulator, telegram: TelegramEmulator
) -> None:
    """Scenes 6 and 7: a merchant team in a Telegram forum group; a creator's team in Slack."""
    tg_store = next((s for s in holder.current.stores if s.destinations.platform_chats.startswith("telegram:")), None)
    slack_creator = next((c for c in holder.current.creators if c.destination.startswith("slack:")), None)
    if tg_store is None:
        return
    group = int(tg_store.destinations.platform_chats.split(":", 1)[1])
    telegram.forums.add(group)  # topics on: one topic per chat and per task order
    owner = int(next(a.identity("telegram") for a in tg_store.agents if a.id == tg_store.main_account) or 0)
    out.say("scene", f"6. the same chat flow with a Telegram merchant group (store {tg_store.id}, en, a forum)")
    tg_chat = await sandbox.open_chat(tg_store.id, {"type": "text", "text": "Can the buyer change the size?"})
    header = await _until(lambda: next((m for m in telegram.messages if m.chat_id == group and m.text), None))
    await telegram.user_message(5555, group, "I can answer that", thread_id=header.thread_id)
    await telegram.user_message(owner, group, "Yes, exchange within 7 days 👍", thread_id=header.thread_id)
    await _until(lambda: [m for m in sandbox.conversations[tg_chat].messages if m["from"] == "merchant"] or None)
    await _pause(1.2)
    if slack_creator is None or tg_store.destinations.task_orders != f"telegram:{group}":
        return

    out.say("scene", f"7. the other way round: task order of store {tg_store.id} resolved in Telegram through a guided "
                     f"conversation; the creator {slack_creator.id} works in Slack")  # fmt: skip
    tid = await sandbox.create_task_order(tg_store.id, slack_creator.id)
    card = await _until(lambda: next((m for m in telegram.messages if tid in m.text and m.reply_markup), None))
    channel = slack_creator.destination.split(":", 1)[1]
    confirmation = await _until(lambda: _root_of(slack, channel, tid))
    await slack.user_message(slack_creator.identity("slack") or "", channel, "Buyer asks for a tracking number",
                             thread_ts=confirmation)  # fmt: skip
    await telegram.tap(owner, group, card.message_id, f"rs:{tid}")
    step = await _until(lambda: _prompt(telegram, group, "Step 1/3"))
    await telegram.user_message(owner, group, "Reshipped by SF Express, waybill SF9876543210",
                                reply_to=step.message_id, thread_id=card.thread_id)  # fmt: skip
    step = await _until(lambda: _prompt(telegram, group, "Step 2/3"))
    await telegram.user_message(owner, group, "", reply_to=step.message_id, thread_id=card.thread_id, photo=PNG)
    await _pause(0.3)
    await telegram.tap(owner, group, step.message_id, f"pd:{tid}")
    step = await _until(lambda: _prompt(telegram, group, "Step 3/3"))
    await telegram.tap(owner, group, step.message_id, f"py:{tid}")
    await _until(lambda: next((m for m in slack.messages if "SF9876543210" in m.text), None), within=20)
    await _until(lambda: next((a for a in telegram.callback_answers if "Sent to the platform" in str(a.get("text"))),
                              None), within=20)  # fmt: skip
    await _pause(1.2)


def _prompt(telegram: TelegramEmulator, chat: int, marker: str) -> Any:
    return next((m for m in reversed(telegram.messages) if m.chat_id == chat and marker in m.text), None)


def _modal_values(solution: str, files: list[dict[str, Any]]) -> dict[str, Any]:
    return {"solution": {"solution": {"type": "plain_text_input", "value": solution}},
            "confirm": {"confirm": {"type": "checkboxes", "selected_options": []}},
            "evidence": {"evidence": {"type": "file_input", "files": files}}}  # fmt: skip


def _root_of(slack: SlackEmulator, channel: str, marker: str) -> str | None:
    return next((m.ts for m in slack.messages if m.channel == channel and not m.thread_ts and marker in m.text), None)


async def _status(redis: Any, store_id: str, cid: str) -> bool | None:
    return True if await redis.hget(keys.chat(keys.store_tag(store_id), cid), "status") == "closed" else None


class Pace(Protocol):
    """How the scenes wait: real time in ``bridge demo``; a test's injected clock elsewhere."""

    async def until(self, probe: Callable[[], Any], within: float, async_probe: bool) -> Any: ...

    async def pause(self, seconds: float) -> None: ...


class RealTime:
    async def until(self, probe: Callable[[], Any], within: float, async_probe: bool) -> Any:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            found = await probe() if async_probe else probe()
            if found is not None:
                return found
            await asyncio.sleep(0.02)
        raise TimeoutError("the demo waited too long")

    async def pause(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


PACE: ContextVar[Pace | None] = ContextVar("demo_pace", default=None)
"""Set by a caller that plays the scenes on another clock; unset, they wait in real time."""
REAL_TIME = RealTime()


async def _until(probe: Callable[[], Any], within: float = 10.0, async_probe: bool = False) -> Any:
    return await (PACE.get() or REAL_TIME).until(probe, within, async_probe)


async def _pause(seconds: float) -> None:
    await (PACE.get() or REAL_TIME).pause(seconds)
