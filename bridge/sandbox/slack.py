"""A local Slack: the Web API methods the bridge uses, in Slack's wire format, and a workspace whose
users write messages, run slash commands and click buttons — sent to the bridge signed as Slack
signs them. Enforces one message per second per channel (HTTP 429 + Retry-After) and Block Kit's
limits (``invalid_blocks``, as are images it is told it cannot download), and records every call.
Used by the demo and the tests, with the real slack_sdk client on the bridge side.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import json
import secrets
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

from bridge.engine.clock import Clock, SystemClock
from bridge.engine.listen import LocalServer

BOT_USER, BOT_ID, TEAM = "UBRIDGEBOT", "BBRIDGEBOT", "T0FEIGE"


MAX_BLOCKS = 50
"""Block Kit's limits, as Slack enforces them: a message of more blocks, or a text over its limit, is
refused whole with ``invalid_blocks`` and an error naming where."""
TEXT_LIMITS = {"header": 150, "section": 3000, "field": 2000, "context": 3000, "button": 75}


def block_kit_errors(blocks: list[dict[str, Any]]) -> list[str]:
    """What Slack would object to in ``blocks`` (the limits the bridge's messages could reach)."""
    errors = []
    if len(blocks) > MAX_BLOCKS:
        errors.append(f"must provide no more than {MAX_BLOCKS} items [json-pointer:/blocks]")

    def check(text: Any, kind: str, pointer: str) -> None:
        if isinstance(text, dict) and len(str(text.get("text", ""))) > TEXT_LIMITS[kind]:
            errors.append(f"must be less than {TEXT_LIMITS[kind] + 1} characters [json-pointer:{pointer}/text]")

    for i, block in enumerate(blocks):
        at = f"/blocks/{i}"
        if block.get("type") in ("header", "section"):
            check(block.get("text"), str(block["type"]), f"{at}/text")
        fields = block.get("fields") or []
        if len(fields) > 10:
            errors.append(f"must provide no more than 10 items [json-pointer:{at}/fields]")
        for j, f in enumerate(fields):
            check(f, "field", f"{at}/fields/{j}")
        for j, element in enumerate(block.get("elements") or []):
            kind = "button" if element.get("type") == "button" else "context"
            check(element.get("text") if kind == "button" else element, kind, f"{at}/elements/{j}")
    return errors


def _invalid_blocks(errors: list[str]) -> dict[str, Any]:
    return {"ok": False, "error": "invalid_blocks", "errors": errors,
            "response_metadata": {"messages": [f"[ERROR] {e}" for e in errors]}}  # fmt: skip


@dataclass
class Message:
    channel: str
    ts: str
    user: str
    text: str
    blocks: list[dict[str, Any]] = field(default_factory=list)
    thread_ts: str | None = None
    edits: int = 0
    reactions: list[str] = field(default_factory=list)
    files: list[dict[str, Any]] = field(default_factory=list)
    posted_at: float = 0.0
    metadata: dict[str, Any] | None = None


@dataclass
class Call:
    method: str
    args: dict[str, Any]
    status: int
    at: float


class SlackEmulator(LocalServer):
    def __init__(
        self,
        signing_secret: str,
        bot_token: str,
        *,
        clock: Clock | None = None,
        bridge_url: str = "",
        app_token: str | None = None,
    ) -> None:
        self.signing_secret = signing_secret
        self.bot_token = bot_token
        self.app_token = app_token
        """With an app-level token, Socket Mode: the bridge opens a WebSocket (apps.connections.open)
        and the workspace's events, commands and clicks travel over it instead of HTTP."""
        self._socket: web.WebSocketResponse | None = None
        self._acks: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self.socket_connected = asyncio.Event()
        self.file_stall_seconds = 0.0
        """Real seconds a file download waits before its answer (a stalled file server)."""
        self.last_event_id = ""
        """The event id of the last message a person wrote, for a test that redelivers it."""
        self.ack_timeout_seconds = 3.0
        """How long Slack waits for an envelope's ack over the socket (3 s, as over HTTP)."""
        self.socket_envelopes: list[dict[str, Any]] = []
        self.clock: Clock = clock or SystemClock()
        self.bridge_url = bridge_url.rstrip("/")
        self.messages: list[Message] = []
        self.ephemerals: list[dict[str, Any]] = []
        self.calls: list[Call] = []
        self.files: dict[str, dict[str, Any]] = {}
        self.rate_limited = 0
        self.listeners: list[Callable[[Message], None]] = []
        """Called with each message the bridge posts (benchmarks wait on these instead of polling)."""
        self._buckets: dict[str, tuple[float, float]] = {}  # channel → (tokens, at)
        self._ids = itertools.count(1)
        self._run = secrets.token_hex(3).upper()  # event ids never repeat across runs, as Slack's do not
        super().__init__(web.Application(client_max_size=50 * 1024 * 1024))
        self.app.router.add_post("/api/{method}", self._api)
        self.app.router.add_get("/api/{method}", self._api)
        self.app.router.add_get("/files/{file_id}/{name}", self._download)
        self.app.router.add_post("/upload/{file_id}", self._upload)
        self.app.router.add_get("/socket", self._socket_mode)
        self.app.router.add_post("/respond/{trigger}", self._respond)
        self.responses: list[dict[str, Any]] = []
        """What the bridge answered through slash commands' response_url: user, channel, text."""
        self._response_urls: dict[str, dict[str, Any]] = {}  # trigger id → the command's user, channel, time
        self._methods = {
            "auth.test": self._auth_test,
            "chat.postMessage": self._post_message,
            "chat.update": self._update,
            "chat.postEphemeral": self._post_ephemeral,
            "reactions.add": self._reactions_add,
            "users.info": self._users_info,
            "conversations.info": self._conversations_info,
            "files.getUploadURLExternal": self._get_upload_url,
            "files.completeUploadExternal": self._complete_upload,
            "views.open": self._views_open,
            "conversations.history": self._history,
            "conversations.replies": self._replies,
        }
        self.views: list[dict[str, Any]] = []
        self._delivered: dict[str, Message] = {}
        """The message each event id this emulator sent carried (a redelivery carries it again)."""
        self.down_until = 0.0
        """Until this moment (the emulator's clock) every Web API call answers 503: an outage."""
        self.missing_channels: set[str] = set()  # channels that do not exist in the workspace
        self.outside: set[str] = set()  # channels the bot was not invited to (every other one it is in)
        self.unfetchable: set[str] = set()  # image URLs Slack cannot download (private, not an image)

    # -- lifecycle ---------------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_url(self) -> str:
        return f"{self.base_url}/api/"

    # -- what landed -------------------------------------------------------------------------------

    def channel(self, channel: str) -> list[Message]:
        """Top-level messages of a channel, in order."""
        return [m for m in self.messages if m.channel == channel and m.thread_ts is None]

    def thread(self, channel: str, ts: str) -> list[Message]:
        return [m for m in self.messages if m.channel == channel and m.thread_ts == ts]

    def message(self, channel: str, ts: str) -> Message:
        found = self._find(channel, ts)
        if found is None:
            raise LookupError(f"no message {ts} in {channel}")
        return found

    def _find(self, channel: str, ts: str) -> Message | None:
        # From the newest: what is updated, reacted to or answered is recent, and a long benchmark
        # keeps tens of thousands of messages (a scan from the oldest grew the emulator's cost per call).
        return next((m for m in reversed(self.messages) if m.channel == channel and m.ts == ts), None)

    def called(self, method: str) -> list[Call]:
        return [c for c in self.calls if c.method == method]

    # -- the Web API -------------------------------------------------------------------------------

    async def _api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        # slack_sdk sends some arguments as JSON, some as a form, some in the query string.
        args: dict[str, Any] = dict(request.query)
        if request.method == "POST" and request.content_type == "application/json":
            args |= await request.json()
        elif request.method == "POST":
            args |= dict(await request.post())
        token = request.headers.get("Authorization", "").removeprefix("Bearer ") or str(args.get("token", ""))
        handler = self._methods.get(method)
        headers: dict[str, str]
        if self.clock.now() < self.down_until:
            status, body, headers = 503, {"ok": False, "error": "service_unavailable"}, {}
        elif method == "apps.connections.open":  # the one method that takes the app-level token
            if not self.app_token or token != self.app_token:
                status, body, headers = 200, {"ok": False, "error": "invalid_auth"}, {}
            else:
                status, body, headers = 200, {"ok": True, "url": f"ws://127.0.0.1:{self.port}/socket"}, {}
        elif token != self.bot_token:
            status, body, headers = 200, {"ok": False, "error": "invalid_auth"}, {}
        elif handler is None:
            status, body, headers = 200, {"ok": False, "error": "unknown_method"}, {}
        else:
            status, body, headers = handler(args)
        self.calls.append(Call(method, args, status, self.clock.now()))
        return web.json_response(body, status=status, headers=headers)

    def _ts(self) -> str:
        return f"{int(self.clock.now())}.{next(self._ids):06d}"

    def _auth_test(self, args: dict[str, Any]) -> tuple[int, dict[str, Any], dict[str, str]]:
        return 200, {"ok": True, "url": "https://feige-demo.slack.com/", "team": "Feige demo", "user": "feige-bridge",
                     "team_id": TEAM, "user_id": BOT_USER, "bot_id": BOT_ID}, {}  # fmt: skip

    BURST = 2.0
    """Slack allows about one message a second per channel, "short bursts tolerated": a bucket of
    two, refilled at one a second."""

    def exhaust(self, channel: str) -> None:
        """As if another app had just used the channel's allowance."""
        self._buckets[channel] = (0.0, self.clock.now())

    def _image_errors(self, blocks: list[dict[str, Any]]) -> list[str]:
        """Slack downloads an image block's picture when the message is posted, and refuses the whole
        message when it cannot."""
        fails = [i for i, b in enumerate(blocks) if b.get("type") == "image" and b.get("image_url") in self.unfetchable]
        return [f"downloading image failed [json-pointer:/blocks/{i}/image_url]" for i in fails]

    def _post_message(self, args: dict[str, Any]) -> tuple[int, dict[str, Any], dict[str, str]]:
        channel = str(args.get("channel", ""))
        if channel in self.missing_channels:
            return 200, {"ok": False, "error": "channel_not_found"}, {}
        if channel in self.outside:
            return 200, {"ok": False, "error": "not_in_channel"}, {}
        now = self.clock.now()
        tokens, at = self._buckets.get(channel, (self.BURST, now))
        tokens = min(self.BURST, tokens + (now - at))
        if tokens < 1.0:
            self.rate_limited += 1
            self._buckets[channel] = (tokens, now)
            wait = max(1, int(1.0 - tokens + 0.999))
            return 429, {"ok": False, "error": "ratelimited"}, {"Retry-After": str(wait)}
        if not args.get("text") and not args.get("blocks"):
            return 200, {"ok": False, "error": "no_text"}, {}
        blocks = args.get("blocks") or []
        if isinstance(blocks, str):
            blocks = json.loads(blocks)
        if errors := block_kit_errors(blocks) + self._image_errors(blocks):
            return 200, _invalid_blocks(errors), {}
        self._buckets[channel] = (tokens - 1.0, now)
        thread = args.get("thread_ts")
        metadata = args.get("metadata")
        metadata = json.loads(metadata) if isinstance(metadata, str) else metadata
        msg = Message(channel, self._ts(), BOT_USER, str(args.get("text", "")), blocks, str(thread) if thread else None,
                      posted_at=now, metadata=metadata)  # fmt: skip
        self.messages.append(msg)
        for listener in self.listeners:
            listener(msg)
        return 200, {"ok": True, "channel": channel, "ts": msg.ts, "message": self._wire(msg)}, {}

    def _update(self, args: dict[str, Any]) -> tuple[int, dict[str, Any], dict[str, str]]:
        msg = self._find(str(args.get("channel")), str(args.get("ts")))
        if msg is None:
            return 200, {"ok": False, "error": "message_not_found"}, {}
        blocks = args.get("blocks") or msg.blocks
        blocks = json.loads(blocks) if isinstance(blocks, str) else blocks
        if errors := block_kit_errors(blocks) + self._image_errors(blocks):
            return 200, _invalid_blocks(errors), {}
        msg.text, msg.blocks = str(args.get("text", msg.text)), blocks
        msg.edits += 1
        return 200, {"ok": True, "channel": msg.channel, "ts": msg.ts, "text": msg.text}, {}

    def _post_ephemeral(self, args: dict[str, Any]) -> tuple[int, dict[str, Any], dict[str, str]]:
        self.ephemerals.append({k: args.get(k) for k in ("channel", "user", "text", "thread_ts")})
        return 200, {"ok": True, "message_ts": self._ts()}, {}

    def _reactions_add(self, args: dict[str, Any]) -> tuple[int, dict[str, Any], dict[str, str]]:
        msg = self._find(str(args.get("channel")), str(args.get("timestamp")))
        if msg is None:
            return 200, {"ok": False, "error": "message_not_found"}, {}
        name = str(args.get("name"))
        if name in msg.reactions:
            return 200, {"ok": False, "error": "already_reacted"}, {}
        msg.reactions.append(name)
        return 200, {"ok": True}, {}

    def _users_info(self, args: dict[str, Any]) -> tuple[int, dict[str, Any], dict[str, str]]:
        user = str(args.get("user"))
        return (
            200,
            {"ok": True, "user": {"id": user, "name": user.lower(), "real_name": user, "tz": "Asia/Shanghai"}},
            {},
        )

    def _conversations_info(self, args: dict[str, Any]) -> tuple[int, dict[str, Any], dict[str, str]]:
        channel = str(args.get("channel"))
        if channel in self.missing_channels:
            return 200, {"ok": False, "error": "channel_not_found"}, {}
        info = {"id": channel, "name": channel.lower(), "is_channel": True, "is_member": channel not in self.outside}
        return 200, {"ok": True, "channel": info}, {}

    def _listing(self, messages: list[Message], args: dict[str, Any]) -> tuple[int, dict[str, Any], dict[str, str]]:
        with_metadata = str(args.get("include_all_metadata", "")).lower() in ("1", "true")
        wire = [self._wire(m) | ({"metadata": m.metadata} if with_metadata and m.metadata else {}) for m in messages]
        return 200, {"ok": True, "messages": wire[: int(args.get("limit") or 100)], "has_more": False}, {}

    def _history(self, args: dict[str, Any]) -> tuple[int, dict[str, Any], dict[str, str]]:
        """A channel's top-level messages, newest first."""
        return self._listing(list(reversed(self.channel(str(args.get("channel", ""))))), args)

    def _replies(self, args: dict[str, Any]) -> tuple[int, dict[str, Any], dict[str, str]]:
        """A thread: its parent, then its replies, oldest first."""
        channel, ts = str(args.get("channel", "")), str(args.get("ts", ""))
        parent = [m for m in self.messages if m.channel == channel and m.ts == ts]
        if not parent:
            return 200, {"ok": False, "error": "thread_not_found"}, {}
        return self._listing(parent + self.thread(channel, ts), args)

    def _views_open(self, args: dict[str, Any]) -> tuple[int, dict[str, Any], dict[str, str]]:
        view = args.get("view")
        view = json.loads(view) if isinstance(view, str) else view
        if not args.get("trigger_id") or not isinstance(view, dict):
            return 200, {"ok": False, "error": "invalid_arguments"}, {}
        opened = view | {"id": f"V{next(self._ids):08d}"}
        self.views.append(opened)
        return 200, {"ok": True, "view": opened}, {}

    def _get_upload_url(self, args: dict[str, Any]) -> tuple[int, dict[str, Any], dict[str, str]]:
        file_id = f"F{next(self._ids):08d}"
        self.files[file_id] = {"id": file_id, "name": str(args.get("filename", "file")), "data": b"", "uploaded": False}
        return 200, {"ok": True, "upload_url": f"{self.base_url}/upload/{file_id}", "file_id": file_id}, {}

    async def _upload(self, request: web.Request) -> web.Response:
        entry = self.files.get(request.match_info["file_id"])
        if entry is None:
            return web.Response(status=404)
        entry["data"], entry["uploaded"] = await request.read(), True
        return web.Response(text=f"OK - {len(entry['data'])}")

    def _complete_upload(self, args: dict[str, Any]) -> tuple[int, dict[str, Any], dict[str, str]]:
        files = args.get("files")
        listed = json.loads(files) if isinstance(files, str) else files or []
        done = []
        for item in listed:
            entry = self.files.get(item.get("id"))
            if entry is None or not entry["uploaded"]:
                return 200, {"ok": False, "error": "file_not_found"}, {}
            done.append({"id": entry["id"], "title": item.get("title", entry["name"])})
        channel = args.get("channel_id")
        if channel:
            msg = Message(str(channel), self._ts(), BOT_USER, str(args.get("initial_comment", "")), files=done,
                          thread_ts=str(args["thread_ts"]) if args.get("thread_ts") else None)  # fmt: skip
            self.messages.append(msg)
        return 200, {"ok": True, "files": done}, {}

    async def _download(self, request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != f"Bearer {self.bot_token}":
            return web.Response(status=403, text="url_private needs the bot token")
        if self.clock.now() < self.down_until:
            return web.Response(status=503)
        entry = self.files.get(request.match_info["file_id"])
        if entry is None:
            return web.Response(status=404)
        if self.file_stall_seconds:
            await asyncio.sleep(self.file_stall_seconds)  # a file server that accepted and went quiet
        return web.Response(body=entry["data"], content_type="application/octet-stream")

    @staticmethod
    def _wire(msg: Message) -> dict[str, Any]:
        wire: dict[str, Any] = {"type": "message", "user": msg.user, "bot_id": BOT_ID, "text": msg.text, "ts": msg.ts}
        if msg.thread_ts:
            wire["thread_ts"] = msg.thread_ts
        return wire

    # -- people in the workspace --------------------------------------------------------------------

    def add_file(self, name: str, data: bytes, mimetype: str) -> dict[str, Any]:
        """A file a user shares; returns the file object as Slack puts it in a message event."""
        file_id = f"F{next(self._ids):08d}"
        self.files[file_id] = {"id": file_id, "name": name, "data": data, "uploaded": True}
        return {"id": file_id, "name": name, "mimetype": mimetype, "size": len(data),
                "url_private": f"{self.base_url}/files/{file_id}/{name}"}  # fmt: skip

    async def user_message(
        self,
        user: str,
        channel: str,
        text: str,
        *,
        thread_ts: str | None = None,
        files: list[dict[str, Any]] | None = None,
        retry_of: str | None = None,
        retry_num: int = 1,
    ) -> tuple[str, int]:
        """A person writes in a channel (or a thread). Returns the message ts and the bridge's status.
        ``retry_of`` redelivers an earlier event id, as Slack does when an ack was late or failed
        (``retry_num``: Slack's 1, 2 or 3, its last): the same message, with the same ts, when this
        emulator sent that event."""
        msg = self._delivered.get(retry_of or "") or Message(
            channel, self._ts(), user, text, thread_ts=thread_ts, files=files or []
        )
        if retry_of is None:
            self.messages.append(msg)
        event: dict[str, Any] = {"type": "message", "channel": channel, "user": user, "text": text, "ts": msg.ts,
                                 "channel_type": "channel", "event_ts": msg.ts}  # fmt: skip
        if thread_ts:
            event["thread_ts"] = thread_ts
            parent = self._find(channel, thread_ts)
            if parent is not None:  # Slack names who wrote a reply's thread root
                event["parent_user_id"] = parent.user
        if files:
            event["files"], event["subtype"] = files, "file_share"
        event_id = self.last_event_id = retry_of or f"Ev{self._run}{next(self._ids):08d}"
        self._delivered.setdefault(event_id, msg)
        body = {"token": "legacy", "team_id": TEAM, "api_app_id": "A0FEIGE", "event": event, "type": "event_callback",
                "event_id": event_id, "event_time": int(time.time())}  # fmt: skip
        headers = {"X-Slack-Retry-Num": str(retry_num), "X-Slack-Retry-Reason": "http_timeout"} if retry_of else {}
        status = await self._send(json.dumps(body), "application/json", headers)
        return msg.ts, status

    async def bot_membership(self, channel: str, joined: bool, by: str) -> int:
        """Someone invites the bot to a channel (``joined``) or removes it: Slack's
        member_joined_channel or member_left_channel event, with the bot as the member; returns the
        bridge's status."""
        event: dict[str, Any] = {"type": "member_joined_channel" if joined else "member_left_channel",
                                 "user": BOT_USER, "channel": channel, "channel_type": "C", "team": TEAM,
                                 "event_ts": self._ts()}  # fmt: skip
        if joined:
            event["inviter"] = by
        body = {"token": "legacy", "team_id": TEAM, "api_app_id": "A0FEIGE", "event": event, "type": "event_callback",
                "event_id": f"Ev{self._run}{next(self._ids):08d}", "event_time": int(time.time())}  # fmt: skip
        return await self._send(json.dumps(body), "application/json")

    async def change_message(self, user: str, channel: str, ts: str, new_text: str | None) -> int:
        """A person edits (``new_text``) or deletes (None) their message: Slack's message_changed or
        message_deleted event, with the previous message in it."""
        msg = self.message(channel, ts)
        before = {"type": "message", "user": user, "text": msg.text, "ts": ts}
        if msg.thread_ts:
            before["thread_ts"] = msg.thread_ts
        event: dict[str, Any] = {"type": "message", "channel": channel, "previous_message": before,
                                 "event_ts": self._ts(), "ts": self._ts(), "hidden": True}  # fmt: skip
        if new_text is None:
            event |= {"subtype": "message_deleted", "deleted_ts": ts}
            self.messages.remove(msg)
        else:
            msg.text = new_text
            event |= {"subtype": "message_changed",
                      "message": before | {"text": new_text, "edited": {"user": user, "ts": self._ts()}}}  # fmt: skip
        body = {"token": "legacy", "team_id": TEAM, "api_app_id": "A0FEIGE", "event": event, "type": "event_callback",
                "event_id": f"Ev{self._run}{next(self._ids):08d}", "event_time": int(time.time())}  # fmt: skip
        return await self._send(json.dumps(body), "application/json")

    async def slash_command(self, user: str, channel: str, command: str, text: str = "") -> tuple[int, str]:
        """A person runs a slash command; returns the bridge's status and the body of its ack (an
        answer sent later through ``response_url`` lands in ``responses``)."""
        trigger = f"tr{self._run}{next(self._ids)}"
        self._response_urls[trigger] = {"user": user, "channel": channel, "at": self.clock.now(), "uses": 0}
        form = {"token": "legacy", "team_id": TEAM, "channel_id": channel, "user_id": user, "command": command,
                "text": text, "response_url": f"{self.base_url}/respond/{trigger}", "trigger_id": trigger}  # fmt: skip
        return await self._send_for_body(urllib.parse.urlencode(form), "application/x-www-form-urlencoded")

    async def _respond(self, request: web.Request) -> web.Response:
        """A ``response_url``: JSON, taken up to 5 times within 30 minutes of the command."""
        command = self._response_urls.get(request.match_info["trigger"])
        if command is None or self.clock.now() - command["at"] > 30 * 60:
            return web.Response(status=404, text="expired_url")
        if command["uses"] >= 5:
            return web.Response(status=404, text="used_url")
        if self.clock.now() < self.down_until:
            return web.Response(status=503)
        body = await request.json()
        command["uses"] += 1
        self.responses.append({"user": command["user"], "channel": command["channel"], "text": body.get("text", ""),
                               "response_type": body.get("response_type", "ephemeral")})  # fmt: skip
        return web.Response(text="ok")

    async def block_action(self, user: str, channel: str, message_ts: str, action_id: str, value: str = "") -> int:
        """A person clicks a button on a message (interactivity payload, as Slack posts it)."""
        payload = {"type": "block_actions", "team": {"id": TEAM}, "user": {"id": user}, "api_app_id": "A0FEIGE",
                   "container": {"type": "message", "message_ts": message_ts, "channel_id": channel},
                   "channel": {"id": channel}, "message": {"ts": message_ts},
                   "trigger_id": f"tr{next(self._ids)}", "response_url": f"{self.base_url}/respond",
                   "actions": [{"action_id": action_id, "block_id": "b", "type": "button", "value": value,
                                "action_ts": str(time.time())}]}  # fmt: skip
        body = urllib.parse.urlencode({"payload": json.dumps(payload)})
        return await self._send(body, "application/x-www-form-urlencoded")

    async def submit_view(self, user: str, view: dict[str, Any], values: dict[str, dict[str, Any]]) -> tuple[int, str]:
        """A person submits a modal; ``values`` is the view state (block id → action id → value)."""
        payload = {"type": "view_submission", "team": {"id": TEAM}, "user": {"id": user}, "api_app_id": "A0FEIGE",
                   "trigger_id": f"tr{next(self._ids)}",
                   "view": view | {"state": {"values": values}, "team_id": TEAM}}  # fmt: skip
        return await self._send_for_body(urllib.parse.urlencode({"payload": json.dumps(payload)}),
                                         "application/x-www-form-urlencoded")  # fmt: skip

    def sign(self, body: str, timestamp: int | None = None) -> dict[str, str]:
        ts = str(timestamp if timestamp is not None else int(time.time()))  # Slack signs with real time
        digest = hmac.new(self.signing_secret.encode(), f"v0:{ts}:{body}".encode(), hashlib.sha256).hexdigest()
        return {"X-Slack-Request-Timestamp": ts, "X-Slack-Signature": f"v0={digest}"}

    async def _send(self, body: str, content_type: str, extra: dict[str, str] | None = None) -> int:
        status, _ = await self._send_for_body(body, content_type, extra)
        return status

    async def _socket_mode(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        self._socket = ws
        await ws.send_json({"type": "hello", "num_connections": 1, "connection_info": {"app_id": "A0FEIGE"}})
        self.socket_connected.set()
        async for frame in ws:
            if frame.type == aiohttp.WSMsgType.TEXT:
                ack = json.loads(frame.data)
                waiting = self._acks.pop(str(ack.get("envelope_id")), None)
                if waiting is not None and not waiting.done():
                    waiting.set_result(ack)
        if self._socket is ws:
            self._socket = None
            self.socket_connected.clear()
        return ws

    async def _over_socket(self, body: str, content_type: str, extra: dict[str, str]) -> tuple[int, str]:
        """Socket Mode: the request as an envelope (a retry's number and reason in it, as the HTTP
        headers carry them); the app's ack (with its payload) is the answer."""
        assert self._socket is not None
        if content_type == "application/json":
            kind, payload = "events_api", json.loads(body)
        else:
            form = dict(urllib.parse.parse_qsl(body))
            kind, payload = (
                ("interactive", json.loads(form["payload"])) if "payload" in form else ("slash_commands", form)
            )
        envelope_id = f"env-{self._run}-{next(self._ids)}"
        self._acks[envelope_id] = asyncio.get_running_loop().create_future()
        envelope = {"envelope_id": envelope_id, "type": kind, "payload": payload,
                    "retry_attempt": int(extra.get("X-Slack-Retry-Num", 0)),
                    "retry_reason": extra.get("X-Slack-Retry-Reason", ""),
                    "accepts_response_payload": kind != "events_api"}  # fmt: skip
        self.socket_envelopes.append(envelope)
        await self._socket.send_json(envelope)
        try:
            ack = await asyncio.wait_for(self._acks[envelope_id], timeout=self.ack_timeout_seconds)
        except TimeoutError:
            self._acks.pop(envelope_id, None)
            return 504, ""
        answer = ack.get("payload") or {}
        if set(answer) == {"text"}:  # a plain-text ack, which over HTTP is a text/plain body
            return 200, str(answer["text"])
        return 200, json.dumps(answer) if answer else ""

    async def _send_for_body(
        self, body: str, content_type: str, extra: dict[str, str] | None = None
    ) -> tuple[int, str]:
        if self._socket is not None:
            return await self._over_socket(body, content_type, extra or {})
        headers = {"Content-Type": content_type, **self.sign(body), **(extra or {})}
        async with self.http().post(f"{self.bridge_url}/slack/events", data=body.encode(), headers=headers) as resp:
            return resp.status, await resp.text()
