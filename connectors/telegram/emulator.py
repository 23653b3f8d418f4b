"""A local Telegram Bot API: the methods the bridge uses, in the Bot API's wire format, and people
who write, reply, tap buttons and run commands — sent to the bridge's webhook with the secret
header, as Telegram does. Enforces 1 message/s per chat, 20/min per group and 30/s per bot
(429 with parameters.retry_after) and records every call. Used by the demo and the tests, with
python-telegram-bot on the bridge side.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

from bridge.clock import Clock, SystemClock
from bridge.listen import LocalServer

BOT_ID = 7_000_000_001
BOT: dict[str, object] = {"id": BOT_ID, "is_bot": True, "first_name": "Feige Bridge", "username": "feige_bridge_bot"}


@dataclass
class TgMessage:
    chat_id: int
    message_id: int
    from_id: int
    text: str
    reply_to: int | None = None
    reply_markup: dict[str, Any] | None = None
    thread_id: int | None = None
    photo: str | None = None
    document: str | None = None
    edits: int = 0
    reactions: list[str] = field(default_factory=list)
    sent_at: float = 0.0


@dataclass
class TgCall:
    method: str
    args: dict[str, Any]
    ok: bool
    at: float


class TelegramEmulator(LocalServer):
    def __init__(self, token: str, secret: str, *, clock: Clock | None = None, bridge_url: str = "") -> None:
        self.token = token
        self.secret = secret
        self.clock: Clock = clock or SystemClock()
        self.bridge_url = bridge_url.rstrip("/")
        self.messages: list[TgMessage] = []
        self.calls: list[TgCall] = []
        self.callback_answers: list[dict[str, Any]] = []
        self.files: dict[str, bytes] = {}
        self.webhook: dict[str, Any] = {}
        self.rate_limited = 0
        self.listeners: list[Callable[[TgMessage], None]] = []
        self._sent: list[tuple[float, int]] = []  # (time, chat) of every message the bot sent
        self._ids = itertools.count(1)
        self._updates = itertools.count(int(time.time() * 1000))  # update ids only grow, as Telegram's
        super().__init__(web.Application(client_max_size=60 * 1024 * 1024))
        self.app.router.add_post("/bot{token}/{method}", self._api)
        self.app.router.add_get("/file/bot{token}/{path:.+}", self._download)

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/bot"

    @property
    def file_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/file/bot"

    # -- what landed ---------------------------------------------------------------------------------

    def chat(self, chat_id: int) -> list[TgMessage]:
        return [m for m in self.messages if m.chat_id == chat_id]

    def by_bot(self, chat_id: int) -> list[TgMessage]:
        return [m for m in self.chat(chat_id) if m.from_id == BOT_ID]

    def message(self, chat_id: int, message_id: int) -> TgMessage:
        return next(m for m in self.messages if m.chat_id == chat_id and m.message_id == message_id)

    def called(self, method: str) -> list[TgCall]:
        return [c for c in self.calls if c.method == method]

    # -- the Bot API ---------------------------------------------------------------------------------

    async def _api(self, request: web.Request) -> web.Response:
        if request.match_info["token"] != self.token:
            return web.json_response({"ok": False, "error_code": 401, "description": "Unauthorized"}, status=401)
        args: dict[str, Any] = {}
        if request.content_type == "application/json":
            args = await request.json()
        elif request.content_type.startswith("multipart/"):
            reader = await request.multipart()
            while (part := await reader.next()) is not None:
                if isinstance(part, aiohttp.BodyPartReader) and part.name:
                    if part.filename:
                        file_id = f"file{next(self._ids)}"
                        self.files[file_id] = await part.read()
                        args[part.name] = file_id
                    else:
                        args[part.name] = await part.text()
        else:
            args = dict(await request.post())
        for key in ("reply_markup", "reply_parameters", "reaction"):
            if isinstance(args.get(key), str):
                args[key] = json.loads(args[key])
        method = request.match_info["method"]
        handler = getattr(self, "_m_" + method, None)
        if handler is None:
            status, body = 404, {"ok": False, "error_code": 404, "description": "Not Found: method not found"}
        else:
            status, body = handler(args)
        self.calls.append(TgCall(method, args, bool(body.get("ok")), self.clock.now()))
        return web.json_response(body, status=status)

    @staticmethod
    def _error(code: int, description: str, **params: Any) -> tuple[int, dict[str, Any]]:
        body: dict[str, Any] = {"ok": False, "error_code": code, "description": description}
        if params:
            body["parameters"] = params
        return code, body

    def _limit(self, chat_id: int) -> tuple[int, dict[str, Any]] | None:
        now = self.clock.now()
        self._sent = [(t, c) for t, c in self._sent if now - t < 60]
        waits = []
        same_chat = [t for t, c in self._sent if c == chat_id]
        if same_chat and now - same_chat[-1] < 1.0:
            waits.append(1.0 - (now - same_chat[-1]))
        if chat_id < 0 and len(same_chat) >= 20:
            waits.append(60 - (now - same_chat[-20]))
        last_second = [t for t, _ in self._sent if now - t < 1.0]
        if len(last_second) >= 30:
            waits.append(1.0 - (now - last_second[-30]))
        if waits:
            self.rate_limited += 1
            retry = max(1, int(max(waits) + 0.999))
            return self._error(429, f"Too Many Requests: retry after {retry}", retry_after=retry)
        self._sent.append((now, chat_id))
        return None

    def _wire(self, m: TgMessage) -> dict[str, Any]:
        chat_type = "supergroup" if m.chat_id < 0 else "private"
        wire: dict[str, Any] = {
            "message_id": m.message_id,
            "date": int(m.sent_at or self.clock.now()),
            "chat": {"id": m.chat_id, "type": chat_type, **({"is_forum": True} if m.thread_id else {})},
            "from": BOT
            if m.from_id == BOT_ID
            else {"id": m.from_id, "is_bot": False, "first_name": f"user{m.from_id}"},
        }
        if m.text:
            wire["text"] = m.text
        if m.reply_markup:
            wire["reply_markup"] = m.reply_markup
        if m.thread_id:
            wire["message_thread_id"], wire["is_topic_message"] = m.thread_id, True
        if m.reply_to:
            parent = next((p for p in self.messages if p.chat_id == m.chat_id and p.message_id == m.reply_to), None)
            if parent is not None:
                wire["reply_to_message"] = self._wire(
                    TgMessage(parent.chat_id, parent.message_id, parent.from_id, parent.text)
                )
        if m.photo:
            wire["photo"] = [{"file_id": m.photo, "file_unique_id": "u" + m.photo, "width": 100, "height": 100,
                              "file_size": len(self.files.get(m.photo, b""))}]  # fmt: skip
        if m.document:
            wire["document"] = {"file_id": m.document, "file_unique_id": "u" + m.document,
                                "file_size": len(self.files.get(m.document, b""))}  # fmt: skip
        return wire

    def _new_message(self, args: dict[str, Any], **content: Any) -> tuple[int, dict[str, Any]]:
        chat_id = int(args["chat_id"])
        limited = self._limit(chat_id)
        if limited is not None:
            return limited
        reply = args.get("reply_parameters", {}).get("message_id") or args.get("reply_to_message_id")
        m = TgMessage(chat_id, next(self._ids), BOT_ID, str(content.pop("text", "")),
                      reply_to=int(reply) if reply else None, reply_markup=args.get("reply_markup"),
                      thread_id=int(args["message_thread_id"]) if args.get("message_thread_id") else None,
                      sent_at=self.clock.now(), **content)  # fmt: skip
        self.messages.append(m)
        for listener in self.listeners:
            listener(m)
        return 200, {"ok": True, "result": self._wire(m)}

    def _m_getMe(self, args: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        return 200, {"ok": True, "result": BOT}

    def _m_setWebhook(self, args: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        self.webhook = args
        return 200, {"ok": True, "result": True, "description": "Webhook was set"}

    def _m_sendMessage(self, args: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if not str(args.get("text", "")).strip():
            return self._error(400, "Bad Request: message text is empty")
        return self._new_message(args, text=args["text"])

    def _m_sendPhoto(self, args: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        return self._new_message(args, text=args.get("caption", ""), photo=str(args.get("photo")))

    def _m_sendDocument(self, args: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        return self._new_message(args, text=args.get("caption", ""), document=str(args.get("document")))

    def _edit(self, args: dict[str, Any]) -> TgMessage | None:
        try:
            return self.message(int(args["chat_id"]), int(args["message_id"]))
        except (StopIteration, KeyError, ValueError):
            return None

    def _m_editMessageText(self, args: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        m = self._edit(args)
        if m is None:
            return self._error(400, "Bad Request: message to edit not found")
        if m.text == args.get("text") and m.reply_markup == args.get("reply_markup"):
            return self._error(400, "Bad Request: message is not modified")
        m.text, m.edits = str(args.get("text", m.text)), m.edits + 1
        m.reply_markup = args.get("reply_markup", m.reply_markup)
        return 200, {"ok": True, "result": self._wire(m)}

    def _m_editMessageReplyMarkup(self, args: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        m = self._edit(args)
        if m is None:
            return self._error(400, "Bad Request: message to edit not found")
        m.reply_markup, m.edits = args.get("reply_markup"), m.edits + 1
        return 200, {"ok": True, "result": self._wire(m)}

    def _m_answerCallbackQuery(self, args: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        self.callback_answers.append(args)
        return 200, {"ok": True, "result": True}

    def _m_setMessageReaction(self, args: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        m = self._edit(args)
        if m is None:
            return self._error(400, "Bad Request: message to react not found")
        m.reactions = [r.get("emoji", "") for r in args.get("reaction", [])]
        return 200, {"ok": True, "result": True}

    def _m_getFile(self, args: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        file_id = str(args.get("file_id"))
        if file_id not in self.files:
            return self._error(400, "Bad Request: invalid file_id")
        result = {"file_id": file_id, "file_unique_id": "u" + file_id, "file_size": len(self.files[file_id]),
                  "file_path": f"docs/{file_id}"}  # fmt: skip
        return 200, {"ok": True, "result": result}

    async def _download(self, request: web.Request) -> web.Response:
        if request.match_info["token"] != self.token:
            return web.Response(status=401)
        data = self.files.get(request.match_info["path"].rsplit("/", 1)[-1])
        return web.Response(status=404) if data is None else web.Response(body=data)

    # -- people --------------------------------------------------------------------------------------

    def add_file(self, data: bytes) -> str:
        file_id = f"file{next(self._ids)}"
        self.files[file_id] = data
        return file_id

    async def user_message(
        self, user: int, chat_id: int, text: str, *, reply_to: int | None = None, photo: bytes | None = None,
        thread_id: int | None = None,
    ) -> tuple[TgMessage, int]:  # fmt: skip
        """A person writes (a reply when ``reply_to``); returns the message and the bridge's status."""
        m = TgMessage(
            chat_id, next(self._ids), user, text, reply_to=reply_to, thread_id=thread_id, sent_at=self.clock.now()
        )
        if photo is not None:
            m.photo = self.add_file(photo)
        self.messages.append(m)
        wire = self._wire(m)
        if photo is not None:
            wire["caption"] = wire.pop("text", "")
        if text.startswith("/"):
            command = text.split()[0]
            wire["entities"] = [{"type": "bot_command", "offset": 0, "length": len(command)}]
        return m, await self._send({"update_id": next(self._updates), "message": wire})

    async def tap(self, user: int, chat_id: int, message_id: int, data: str) -> int:
        """A person taps an inline button; returns the bridge's status."""
        parent = self.message(chat_id, message_id)
        query = {"id": f"cq{next(self._ids)}", "from": {"id": user, "is_bot": False, "first_name": f"user{user}"},
                 "chat_instance": str(chat_id), "data": data, "message": self._wire(parent)}  # fmt: skip
        return await self._send({"update_id": next(self._updates), "callback_query": query})

    async def send_update(self, update: dict[str, Any], secret: str | None = None) -> int:
        return await self._send(update, secret)

    async def _send(self, update: dict[str, Any], secret: str | None = None) -> int:
        headers = {"X-Telegram-Bot-Api-Secret-Token": self.secret if secret is None else secret}
        async with self.http().post(f"{self.bridge_url}/telegram/webhook", json=update, headers=headers) as resp:
            return resp.status
