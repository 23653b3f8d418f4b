"""A local Telegram Bot API: the methods the bridge uses, in the Bot API's wire format, and people
who write, reply, tap buttons and run commands — sent to the bridge's webhook with the secret
header, as Telegram does. Enforces 1 message/s per chat, 20/min per group and 30/s per bot
(429 with parameters.retry_after) and the lengths of texts and captions (and refuses the photo URLs
it is told it cannot fetch), and records every call. Used by the demo and the tests, with
python-telegram-bot on the bridge side.
"""

from __future__ import annotations

import asyncio
import html
import itertools
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

from bridge.engine.clock import Clock, SystemClock
from bridge.engine.listen import LocalServer

BOT_ID = 7_000_000_001
DOWNLOAD_LIMIT = 20 * 1024 * 1024  # getFile: bots may download files up to 20 MB
BOT: dict[str, object] = {"id": BOT_ID, "is_bot": True, "first_name": "Feige Bridge", "username": "feige_bridge_bot"}
TEXT_LIMIT, CAPTION_LIMIT, BUTTON_DATA_BYTES = 4096, 1024, 64
"""Characters of a message's text and of a caption, counted as Telegram does: after its entities
are parsed (the HTML tags read, the escapes undone); bytes of data behind an inline button."""


def _button_data_too_long(args: dict[str, Any]) -> bool:
    """Telegram keeps 1–64 bytes of data behind an inline button and refuses the message otherwise."""
    rows = (args.get("reply_markup") or {}).get("inline_keyboard", [])
    return any(
        "callback_data" in b and not 1 <= len(str(b["callback_data"]).encode()) <= BUTTON_DATA_BYTES
        for row in rows
        for b in row
    )


def _too_long(args: dict[str, Any], key: str, limit: int) -> bool:
    text = str(args.get(key) or "")
    if args.get("parse_mode") == "HTML":
        text = html.unescape(re.sub(r"<[^>]*>", "", text))
    return len(text) > limit


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
    video: str | None = None
    sticker: str | None = None
    """A sticker's emoji: the message is the sticker, with no text."""
    file_name: str | None = None
    mime_type: str | None = None
    edits: int = 0
    reactions: list[str] = field(default_factory=list)
    sent_at: float = 0.0
    topic_created: str | None = None
    """A topic's opening service message: the name it was opened with (``forum_topic_created``)."""
    entities: list[dict[str, Any]] = field(default_factory=list)
    """Its formatting, as Telegram sends it (a ``text_link``: words with an address behind them)."""


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
        self.file_stall_seconds = 0.0
        """Real seconds a file download waits before its answer (a stalled file server)."""
        self.webhook: dict[str, Any] = {}
        self.polled: list[dict[str, Any]] | None = None
        """Updates waiting for getUpdates once the webhook was deleted (None: pushed to the webhook)."""
        self.commands: dict[str, list[dict[str, str]]] = {}  # language code ('' default) → the command menu
        self.forums: set[int] = set()  # groups with topics enabled
        self.missing_chats: set[int] = set()  # chats the bot is not in (or that do not exist)
        self.unfetchable: set[str] = set()  # photo URLs Telegram cannot get (private, too big, not an image)
        self.plain_member: set[int] = set()  # groups where the bot is not an admin (elsewhere it is, with all rights)
        self.topics: dict[tuple[int, int], str] = {}  # (chat, message_thread_id) → topic name
        self.gone_topics: set[tuple[int, int]] = set()  # deleted, or their group's topics turned off
        self.other_bots: set[int] = set()  # user ids of the other bots in the chats (see bot_message)
        self.upgraded: dict[int, int] = {}  # a group's id → its id as a supergroup (see upgrade_group)
        self.rate_limited = 0
        self.down_until = 0.0
        """Until this moment (the emulator's clock) every Bot API call answers 502: an outage."""
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
        found = self._find(chat_id, message_id)
        if found is None:
            raise LookupError(f"no message {message_id} in {chat_id}")
        return found

    def _find(self, chat_id: int, message_id: int) -> TgMessage | None:
        # From the newest: what is edited, reacted to or replied to is recent, as in the Slack emulator.
        return next((m for m in reversed(self.messages) if m.chat_id == chat_id and m.message_id == message_id), None)

    def called(self, method: str) -> list[TgCall]:
        return [c for c in self.calls if c.method == method]

    # -- the Bot API ---------------------------------------------------------------------------------

    async def _api(self, request: web.Request) -> web.Response:
        if request.match_info["token"] != self.token:
            return web.json_response({"ok": False, "error_code": 401, "description": "Unauthorized"}, status=401)
        if self.clock.now() < self.down_until:
            return web.json_response({"ok": False, "error_code": 502, "description": "Bad Gateway"}, status=502)
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
        elif str(args.get("chat_id", "")).lstrip("-").isdigit() and int(args["chat_id"]) in self.upgraded:
            # A group made a supergroup takes no calls: Telegram names its new id.
            status, body = self._error(400, "Bad Request: group chat was upgraded to a supergroup chat",
                                       migrate_to_chat_id=self.upgraded[int(args["chat_id"])])  # fmt: skip
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
        chat_type = "group" if m.chat_id in self.upgraded else "supergroup" if m.chat_id < 0 else "private"
        wire: dict[str, Any] = {
            "message_id": m.message_id,
            "date": int(m.sent_at or self.clock.now()),
            "chat": {"id": m.chat_id, "type": chat_type, **({"is_forum": True} if m.chat_id in self.forums else {})},
            "from": BOT
            if m.from_id == BOT_ID
            else {"id": m.from_id, "is_bot": m.from_id in self.other_bots, "first_name": f"user{m.from_id}"},
        }
        if m.text:
            wire["text"] = m.text
        if m.entities:
            wire["entities"] = m.entities
        if m.reply_markup:
            wire["reply_markup"] = m.reply_markup
        if m.thread_id:
            wire["message_thread_id"], wire["is_topic_message"] = m.thread_id, True
        if m.reply_to:
            parent = self._find(m.chat_id, m.reply_to)
            if parent is not None:
                wire["reply_to_message"] = self._wire(
                    TgMessage(
                        parent.chat_id,
                        parent.message_id,
                        parent.from_id,
                        parent.text,
                        sent_at=parent.sent_at,
                        topic_created=parent.topic_created,
                    )
                )
        if m.sticker:
            wire.pop("text", None)
            wire["sticker"] = {"file_id": f"sticker{m.message_id}", "file_unique_id": f"us{m.message_id}",
                               "type": "regular", "width": 512, "height": 512, "is_animated": False,
                               "is_video": False, "emoji": m.sticker}  # fmt: skip
        if m.photo:
            wire["photo"] = [{"file_id": m.photo, "file_unique_id": "u" + m.photo, "width": 100, "height": 100,
                              "file_size": len(self.files.get(m.photo, b""))}]  # fmt: skip
        for kind in ("document", "video"):
            file_id = getattr(m, kind)
            if file_id:
                wire[kind] = {"file_id": file_id, "file_unique_id": "u" + file_id,
                              "file_size": len(self.files.get(file_id, b"")), "file_name": m.file_name,
                              "mime_type": m.mime_type}  # fmt: skip
                if kind == "video":
                    wire[kind] |= {"width": 640, "height": 360, "duration": 5}
        return wire

    def _new_message(self, args: dict[str, Any], **content: Any) -> tuple[int, dict[str, Any]]:
        chat_id = int(args["chat_id"])
        if chat_id in self.missing_chats:
            return self._error(400, "Bad Request: chat not found")
        if _button_data_too_long(args):
            return self._error(400, "Bad Request: BUTTON_DATA_INVALID")
        if (chat_id, int(args.get("message_thread_id") or 0)) in self.gone_topics:
            return self._error(400, "Bad Request: message thread not found")
        limited = self._limit(chat_id)
        if limited is not None:
            return limited
        replying = args.get("reply_parameters") or {}
        reply = replying.get("message_id") or args.get("reply_to_message_id")
        if reply and self._find(chat_id, int(reply)) is None:
            # A message replied to that is gone (deleted, its topic deleted): sent as a message of its
            # own where the bot allows that, refused otherwise, as Telegram does.
            if not (replying.get("allow_sending_without_reply") or args.get("allow_sending_without_reply")):
                return self._error(400, "Bad Request: message to be replied not found")
            reply = None
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

    def _m_getChatMember(self, args: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        chat_id = int(args["chat_id"])
        if chat_id in self.missing_chats:
            return self._error(400, "Bad Request: chat not found")
        user = (
            BOT if int(args["user_id"]) == BOT_ID else {"id": int(args["user_id"]), "is_bot": False, "first_name": "u"}
        )
        if chat_id in self.plain_member or int(args["user_id"]) != BOT_ID:
            return 200, {"ok": True, "result": {"status": "member", "user": user}}
        rights = ("can_manage_chat", "can_delete_messages", "can_invite_users", "can_pin_messages", "can_manage_topics")
        withheld = ("can_be_edited", "is_anonymous", "can_manage_video_chats", "can_restrict_members",
                    "can_promote_members", "can_change_info", "can_post_stories", "can_edit_stories",
                    "can_delete_stories")  # fmt: skip
        member = (
            {"status": "administrator", "user": user} | dict.fromkeys(rights, True) | dict.fromkeys(withheld, False)
        )
        return 200, {"ok": True, "result": member}

    def _m_getChat(self, args: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        chat_id = int(args["chat_id"])
        if chat_id in self.missing_chats:
            return self._error(400, "Bad Request: chat not found")
        gifts = dict.fromkeys(
            ("unlimited_gifts", "limited_gifts", "unique_gifts", "premium_subscription", "gifts_from_channels"), False
        )
        chat: dict[str, Any] = {"id": chat_id, "type": "supergroup" if chat_id < 0 else "private"}
        chat |= {"title": f"group {chat_id}"} if chat_id < 0 else {"first_name": f"user{chat_id}"}
        chat |= {"accent_color_id": 0, "max_reaction_count": 11, "accepted_gift_types": gifts}
        if chat_id in self.forums:
            chat["is_forum"] = True
        return 200, {"ok": True, "result": chat}

    def _m_createForumTopic(self, args: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        chat_id, name = int(args["chat_id"]), str(args.get("name", ""))
        if chat_id not in self.forums:
            return self._error(400, "Bad Request: the chat is not a forum")
        if chat_id in self.plain_member:
            return self._error(400, "Bad Request: not enough rights to create a topic")
        if not 1 <= len(name) <= 128:
            return self._error(400, "Bad Request: TOPIC_TITLE_EMPTY" if not name else "Bad Request: name too long")
        # A topic's id is the id of the service message that opened it, as in Telegram.
        opened = TgMessage(chat_id, next(self._ids), BOT_ID, "", sent_at=self.clock.now(), topic_created=name)
        opened.thread_id = opened.message_id
        self.messages.append(opened)
        self.topics[(chat_id, opened.message_id)] = name
        topic = {"message_thread_id": opened.message_id, "name": name, "icon_color": 7322096}
        return 200, {"ok": True, "result": topic}

    def _m_editForumTopic(self, args: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        key = (int(args["chat_id"]), int(args["message_thread_id"]))
        if key not in self.topics:
            return self._error(400, "Bad Request: TOPIC_ID_INVALID")
        if self.topics[key] == args.get("name"):
            return self._error(400, "Bad Request: TOPIC_NOT_MODIFIED")
        self.topics[key] = str(args.get("name") or self.topics[key])
        return 200, {"ok": True, "result": True}

    def _m_setWebhook(self, args: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        self.webhook = args
        self.polled = None
        return 200, {"ok": True, "result": True, "description": "Webhook was set"}

    def _m_deleteWebhook(self, args: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """From now on updates wait for getUpdates instead of being pushed (long polling)."""
        self.webhook = {}
        self.polled = self.polled if self.polled is not None else []
        return 200, {"ok": True, "result": True, "description": "Webhook was deleted"}

    def _m_getUpdates(self, args: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if self.polled is None:
            return self._error(409, "Conflict: can't use getUpdates method while webhook is active")
        offset = int(args.get("offset") or 0)
        self.polled = [u for u in self.polled if u["update_id"] >= offset]  # an offset confirms the ones before
        return 200, {"ok": True, "result": list(self.polled)}

    def _m_setMyCommands(self, args: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        commands = json.loads(args["commands"]) if isinstance(args.get("commands"), str) else args.get("commands")
        self.commands[str(args.get("language_code") or "")] = commands or []
        return 200, {"ok": True, "result": True}

    def _m_sendMessage(self, args: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if not str(args.get("text", "")).strip():
            return self._error(400, "Bad Request: message text is empty")
        if _too_long(args, "text", TEXT_LIMIT):
            return self._error(400, "Bad Request: message is too long")
        return self._new_message(args, text=args["text"])

    def _m_sendPhoto(self, args: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if _too_long(args, "caption", CAPTION_LIMIT):
            return self._error(400, "Bad Request: message caption is too long")
        if str(args.get("photo")) in self.unfetchable:
            return self._error(400, "Bad Request: failed to get HTTP URL content")
        return self._new_message(args, text=args.get("caption", ""), photo=str(args.get("photo")))

    def _m_sendDocument(self, args: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if _too_long(args, "caption", CAPTION_LIMIT):
            return self._error(400, "Bad Request: message caption is too long")
        return self._new_message(args, text=args.get("caption", ""), document=str(args.get("document")))

    def _edit(self, args: dict[str, Any]) -> TgMessage | None:
        try:
            return self._find(int(args["chat_id"]), int(args["message_id"]))
        except (KeyError, ValueError):
            return None

    def _m_editMessageText(self, args: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        m = self._edit(args)
        if m is None:
            return self._error(400, "Bad Request: message to edit not found")
        if _too_long(args, "text", TEXT_LIMIT):
            return self._error(400, "Bad Request: MESSAGE_TOO_LONG")
        if _button_data_too_long(args):
            return self._error(400, "Bad Request: BUTTON_DATA_INVALID")
        if m.text == args.get("text") and m.reply_markup == args.get("reply_markup"):
            return self._error(400, "Bad Request: message is not modified")
        m.text, m.edits = str(args.get("text", m.text)), m.edits + 1
        m.reply_markup = args.get("reply_markup")  # as Telegram does: an edit without a keyboard removes it
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
        if len(self.files[file_id]) > DOWNLOAD_LIMIT:
            return self._error(400, "Bad Request: file is too big")
        result = {"file_id": file_id, "file_unique_id": "u" + file_id, "file_size": len(self.files[file_id]),
                  "file_path": f"docs/{file_id}"}  # fmt: skip
        return 200, {"ok": True, "result": result}

    async def _download(self, request: web.Request) -> web.Response:
        if request.match_info["token"] != self.token:
            return web.Response(status=401)
        data = self.files.get(request.match_info["path"].rsplit("/", 1)[-1])
        if data is None:
            return web.Response(status=404)
        if self.file_stall_seconds:
            await asyncio.sleep(self.file_stall_seconds)  # a file server that accepted and went quiet
        if request.http_range.start is not None or request.http_range.stop is not None:
            part = data[request.http_range]
            content_range = f"bytes 0-{len(part) - 1}/{len(data)}"
            return web.Response(status=206, body=part, headers={"Content-Range": content_range})
        return web.Response(body=data)

    # -- people --------------------------------------------------------------------------------------

    def add_file(self, data: bytes) -> str:
        file_id = f"file{next(self._ids)}"
        self.files[file_id] = data
        return file_id

    async def user_message(
        self, user: int, chat_id: int, text: str, *, reply_to: int | None = None, photo: bytes | None = None,
        thread_id: int | None = None, document: tuple[str, str, bytes] | None = None,
        video: tuple[str, bytes] | None = None, sticker: str | None = None,
        entities: list[dict[str, Any]] | None = None,
    ) -> tuple[TgMessage, int]:  # fmt: skip
        """A person writes (a reply when ``reply_to``, in a forum topic when ``thread_id``), with a photo,
        a document (name, MIME type, bytes) or a video (name, bytes), formatted by ``entities``
        (offsets in UTF-16 code units, as Telegram counts); returns the message and the bridge's status."""
        m = TgMessage(chat_id, next(self._ids), user, text, reply_to=reply_to, thread_id=thread_id,
                      sent_at=self.clock.now(), entities=entities or [])  # fmt: skip
        if photo is not None:
            m.photo = self.add_file(photo)
        if document is not None:
            m.file_name, m.mime_type, m.document = document[0], document[1], self.add_file(document[2])
        if video is not None:
            m.file_name, m.mime_type, m.video = video[0], "video/mp4", self.add_file(video[1])
        m.sticker = sticker
        if thread_id is not None and reply_to is None:
            m.reply_to = thread_id  # in a topic, Telegram makes a plain message a reply to the topic's opening
        self.messages.append(m)
        wire = self._wire(m)
        if photo is not None or document is not None or video is not None:
            wire["caption"] = wire.pop("text", "")
            if "entities" in wire:
                wire["caption_entities"] = wire.pop("entities")
        if text.startswith("/"):
            command = text.split()[0]
            wire["entities"] = [{"type": "bot_command", "offset": 0, "length": len(command)}]
        return m, await self._send({"update_id": next(self._updates), "message": wire})

    async def member_joins(self, user: int, chat_id: int) -> int:
        """Someone joins a group: Telegram sends a service message from them, with no text, that
        lists the new members; returns the bridge's status."""
        m = TgMessage(chat_id, next(self._ids), user, "", sent_at=self.clock.now())
        self.messages.append(m)
        wire = self._wire(m) | {"new_chat_members": [{"id": user, "is_bot": False, "first_name": f"user{user}"}]}
        return await self._send({"update_id": next(self._updates), "message": wire})

    async def upgrade_group(self, chat_id: int, new_id: int, by: int, *, forum: bool = False,
                            tell_the_bot: bool = True) -> list[int]:  # fmt: skip
        """Someone makes a group a supergroup (turning topics on, with ``forum``, does it): it has the
        id ``new_id`` from now on, and every call naming the old id is refused with
        ``migrate_to_chat_id``. Telegram tells the bot in both groups, unless ``tell_the_bot`` is
        False (those updates lost: the bot learns it from a refusal); returns the bridge's statuses."""
        self.upgraded[chat_id] = new_id
        statuses = []
        if forum:
            self.forums.add(new_id)
        for where, said in ((chat_id, {"migrate_to_chat_id": new_id}), (new_id, {"migrate_from_chat_id": chat_id})):
            m = TgMessage(where, next(self._ids), by, "", sent_at=self.clock.now())
            self.messages.append(m)
            if tell_the_bot:
                statuses.append(await self._send({"update_id": next(self._updates), "message": self._wire(m) | said}))
        return statuses

    async def bot_membership(self, chat_id: int, status: str, by: int, *, was: str = "administrator") -> int:
        """Someone changes the bot's place in a chat (``member``, ``administrator``, ``left``,
        ``kicked``; in a private chat ``kicked`` is the person blocking the bot): Telegram sends a
        ``my_chat_member`` update; returns the bridge's status."""
        chat: dict[str, Any] = {"id": chat_id, "type": "supergroup" if chat_id < 0 else "private"}
        chat |= {"title": f"group {chat_id}"} if chat_id < 0 else {"first_name": f"user{chat_id}"}
        rights = {"can_be_edited": False, "is_anonymous": False, "can_manage_chat": True, "can_delete_messages": True,
                  "can_manage_video_chats": False, "can_restrict_members": False, "can_promote_members": False,
                  "can_change_info": False, "can_invite_users": True, "can_post_stories": False,
                  "can_edit_stories": False, "can_delete_stories": False, "can_pin_messages": True,
                  "can_manage_topics": True}  # fmt: skip

        def member(status: str) -> dict[str, Any]:
            if status == "restricted":  # a member who may send nothing
                return {"status": status, "user": BOT, "is_member": True, "until_date": 0} | dict.fromkeys(
                    ("can_change_info", "can_invite_users", "can_pin_messages", "can_send_messages", "can_send_polls",
                     "can_send_other_messages", "can_add_web_page_previews", "can_manage_topics", "can_send_audios",
                     "can_send_documents", "can_send_photos", "can_send_videos", "can_send_video_notes",
                     "can_send_voice_notes", "can_edit_tag", "can_react_to_messages"), False)  # fmt: skip
            extra: dict[str, Any] = rights if status == "administrator" else {}
            if status == "kicked":
                extra = {"until_date": 0}
            return {"status": status, "user": BOT} | extra

        update = {"chat": chat, "from": {"id": by, "is_bot": False, "first_name": f"user{by}"},
                  "date": int(self.clock.now()), "old_chat_member": member(was),
                  "new_chat_member": member(status)}  # fmt: skip
        return await self._send({"update_id": next(self._updates), "my_chat_member": update})

    def delete_topic(self, chat_id: int, thread_id: int) -> None:
        """An admin deletes a forum topic, and every message in it with it."""
        self.topics.pop((chat_id, thread_id), None)
        self.gone_topics.add((chat_id, thread_id))
        self.messages = [m for m in self.messages if not (m.chat_id == chat_id and m.thread_id == thread_id)]

    def turn_topics_off(self, chat_id: int) -> None:
        """An admin turns a group's topics off: its messages stay, in one list, and no topic takes
        a message any more."""
        self.forums.discard(chat_id)
        gone = {key for key in self.topics if key[0] == chat_id}
        self.gone_topics |= gone
        for key in gone:
            del self.topics[key]
        for m in self.messages:
            if m.chat_id == chat_id:
                m.thread_id = None

    def bot_message(self, bot: int, chat_id: int, text: str) -> TgMessage:
        """Another bot in the chat writes. Telegram delivers no bot's messages to other bots, so the
        bridge sees it only when a person replies to it."""
        self.other_bots.add(bot)
        m = TgMessage(chat_id, next(self._ids), bot, text, sent_at=self.clock.now())
        self.messages.append(m)
        return m

    async def edit_user_message(self, chat_id: int, message_id: int, new_text: str) -> int:
        """A person edits their message: an ``edited_message`` update with the new text."""
        m = self.message(chat_id, message_id)
        m.text, m.edits = new_text, m.edits + 1
        wire = self._wire(m) | {"edit_date": int(self.clock.now())}
        return await self._send({"update_id": next(self._updates), "edited_message": wire})

    async def tap(self, user: int, chat_id: int, message_id: int, data: str) -> int:
        """A person taps an inline button; returns the bridge's status."""
        parent = self.message(chat_id, message_id)
        query = {"id": f"cq{next(self._ids)}", "from": {"id": user, "is_bot": False, "first_name": f"user{user}"},
                 "chat_instance": str(chat_id), "data": data, "message": self._wire(parent)}  # fmt: skip
        return await self._send({"update_id": next(self._updates), "callback_query": query})

    async def send_update(self, update: dict[str, Any], secret: str | None = None) -> int:
        return await self._send(update, secret)

    async def _send(self, update: dict[str, Any], secret: str | None = None) -> int:
        if self.polled is not None:  # long polling: the update waits to be fetched
            self.polled.append(update)
            return 200
        headers = {"X-Telegram-Bot-Api-Secret-Token": self.secret if secret is None else secret}
        async with self.http().post(f"{self.bridge_url}/telegram/webhook", json=update, headers=headers) as resp:
            return resp.status
