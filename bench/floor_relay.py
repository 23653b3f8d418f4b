"""The floor for bench/chats.py: the I/O of one chat with nothing else.

It takes the same world's traffic as ``bridge serve`` and makes the same calls per chat: a platform
push in (its signature checked), ``chat.postMessage`` out, the agent's Slack event in (its signature
checked), then the reply to the platform, ``chat.update`` and ``reactions.add`` out. Plain aiohttp on
uvloop, as the bridge serves; no SDK, no durability, no rules, no timers, nothing stored: a chat
lives in a dict and is lost in a crash.

With ``--redis-url`` and ``--round-trips N`` it also makes N sequential Redis round trips per chat
through the bridge's own client (``open_redis``), half while taking the push and half while taking
the reply: what the round trips alone cost, without the scripts and the work around them.

With ``--sdks`` it talks to Slack as the bridge must, through Slack's own SDKs: the event is
verified and dispatched once by a slack-bolt ``AsyncApp`` to a ``message`` listener, and the three
calls go through slack_sdk's ``AsyncWebClient`` on the shared session. The platform has no SDK;
its side stays plain aiohttp.

    python bench/floor_relay.py CONFIG PORT [--redis-url URL --round-trips N] [--sdks]

The world's URLs come from SLACK_API_URL and PLATFORM_API_URL, as the bridge's do."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from pathlib import Path
from typing import Any

import aiohttp
import uvloop
import yaml
from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
from slack_bolt.async_app import AsyncApp
from slack_sdk.signature import SignatureVerifier
from slack_sdk.web.async_client import AsyncWebClient

from bridge.app.service import open_redis  # the bridge's client, for the round trips
from connectors.platform.signing import signature_matches

SUCCESS = {"code": 0, "msg": "success"}


class Relay:
    def __init__(self, config: dict[str, Any], round_trips: int, redis_url: str | None, sdks: bool = False) -> None:
        self.sdks = sdks
        self.client = AsyncWebClient(token=config["slack"]["bot_token"], base_url=os.environ["SLACK_API_URL"])
        self.app = AsyncApp(signing_secret=config["slack"]["signing_secret"], client=self.client)
        self.app.event("message")(self._on_message)
        self.stores = {str(s["id"]): s for s in config["stores"]}
        self.slack_signature = SignatureVerifier(config["slack"]["signing_secret"])
        self.slack_headers = {"Authorization": f"Bearer {config['slack']['bot_token']}"}
        self.slack_url = os.environ["SLACK_API_URL"].rstrip("/")
        self.platform_url = os.environ["PLATFORM_API_URL"].rstrip("/")
        self.redis = open_redis(redis_url) if redis_url else None
        self.at_push, self.at_reply = round_trips // 2, round_trips - round_trips // 2
        self.chats: dict[str, tuple[str, str, str]] = {}  # root ts → store id, conversation id, channel
        self.session: aiohttp.ClientSession | None = None
        self.background: set[asyncio.Task[None]] = set()

    async def _round_trips(self, n: int) -> None:
        for i in range(n):
            assert self.redis is not None
            await self.redis.set(f"floor:{i}", "1")

    def _later(self, work: Any) -> None:
        task = asyncio.create_task(work)
        self.background.add(task)
        task.add_done_callback(self.background.discard)

    async def _slack(self, method: str, args: dict[str, Any]) -> dict[str, Any]:
        assert self.session is not None
        if self.sdks:
            # The typed method, as the bridge calls it: chat.postMessage → chat_postMessage.
            answer: dict[str, Any] = (await getattr(self.client, method.replace(".", "_"))(**args)).data
            return answer
        async with self.session.post(f"{self.slack_url}/{method}", json=args, headers=self.slack_headers) as resp:
            answered: dict[str, Any] = await resp.json()
            return answered

    async def push(self, request: web.Request) -> web.Response:
        store = self.stores.get(request.match_info["id"])
        body = await request.read()
        if store is None or not signature_matches(store["platform"]["app_key"], body, store["platform"]["app_secrets"],
                                                  request.headers.get("event-sign", "")):  # fmt: skip
            return web.json_response({"code": 401, "msg": "bad signature"}, status=401)
        records = [json.loads(record["data"]) | {"tag": record["tag"]} for record in json.loads(body)]
        await self._round_trips(self.at_push)
        for record in records:
            if record["tag"] == "im_platform_message":
                self._later(self._post(store, record))
        return web.json_response(SUCCESS)

    async def _post(self, store: dict[str, Any], record: dict[str, Any]) -> None:
        channel = store["destinations"]["platform_chats"].split(":", 1)[1]
        posted = await self._slack("chat.postMessage", {"channel": channel, "text": record["content"]["text"]})
        self.chats[posted["ts"]] = (str(store["id"]), record["conversation_id"], channel)

    async def slack_event(self, request: web.Request) -> web.Response:
        if self.sdks:
            return await to_aiohttp_response(await self.app.async_dispatch(await to_bolt_request(request)))
        body = await request.read()
        stamp, signature = request.headers.get("X-Slack-Request-Timestamp"), request.headers.get("X-Slack-Signature")
        if not self.slack_signature.is_valid(body, stamp, signature):
            return web.Response(status=401)
        await self._on_message(json.loads(body).get("event") or {})
        return web.Response(status=200)

    async def _on_message(self, event: dict[str, Any]) -> None:
        chat = self.chats.get(event.get("thread_ts", ""))
        if chat is not None and event.get("user"):
            await self._round_trips(self.at_reply)
            self._later(self._reply(chat, event))

    async def _reply(self, chat: tuple[str, str, str], event: dict[str, Any]) -> None:
        assert self.session is not None
        store_id, conversation, channel = chat
        store = self.stores[store_id]
        headers = {"Authorization": f"Bearer {store['platform']['api_token']}", "Idempotency-Key": event["ts"]}
        body = {"agent_id": store["main_account"], "content": {"type": "text", "text": event["text"]}}
        url = f"{self.platform_url}/im/conversations/{conversation}/messages"
        async with self.session.post(url, json=body, headers=headers) as resp:
            await resp.read()
        header = f"answered at {time.time()}"
        await self._slack("chat.update", {"channel": channel, "ts": event["thread_ts"], "text": header})
        await self._slack("reactions.add", {"channel": channel, "timestamp": event["ts"], "name": "white_check_mark"})

    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "alive"})  # what bench/machine.py's wait_up asks, as of a bridge


async def serve(relay: Relay, port: int) -> None:
    relay.session = relay.client.session = aiohttp.ClientSession()
    app = web.Application()
    app.router.add_post("/webhooks/platform/{id}", relay.push)
    app.router.add_post("/slack/events", relay.slack_event)
    app.router.add_get("/healthz", relay.healthz)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    await asyncio.Event().wait()  # until terminated


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("config", type=Path)
    parser.add_argument("port", type=int)
    parser.add_argument("--redis-url")
    parser.add_argument("--round-trips", type=int, default=0)
    parser.add_argument("--sdks", action="store_true", help="Slack through slack-bolt and slack_sdk, as the bridge")
    args = parser.parse_args()
    config = yaml.safe_load(args.config.read_text(encoding="utf-8"))
    uvloop.run(serve(Relay(config, args.round_trips, args.redis_url, args.sdks), args.port))


if __name__ == "__main__":
    main()
