"""Telegram, the real way: updates arrive on the bridge's own aiohttp route and are fed to a
python-telegram-bot ``Application`` (no second web server); everything sent goes through PTB's
``Bot`` with the configured base URL, from the outbox. This module only translates.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import html
import json
import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any

import aiohttp
from aiohttp import web

os.environ.setdefault("PTB_TIMEDELTA", "1")  # durations as timedelta, as PTB 23 will have them

from telegram import Bot, ChatMember, InlineKeyboardButton, InlineKeyboardMarkup, Message, MessageEntity, Update
from telegram.error import BadRequest, ChatMigrated, NetworkError, RetryAfter, TelegramError, TimedOut
from telegram.ext import (
    Application,
    CallbackQueryHandler,
    ChatMemberHandler,
    CommandHandler,
    ContextTypes,
    MessageHandler,
    filters,
)

from bridge.config import NOWHERE
from bridge.core import Core
from bridge.destinations import SNIFF_TIMEOUT_SECONDS, Route, inbox_thread
from bridge.engine import keys, refs
from bridge.engine.events import DELIVERED_AT, EventHandler, StoredEvent
from bridge.engine.outbox import (
    FinalFailure,
    OutboxJob,
    Recorded,
    RetryLater,
    Sender,
    WaitingForRoot,
    record_what_went_out,
)
from bridge.engine.ratelimit import SendSpacing
from bridge.flows import jobs
from bridge.flows.resolve import TooLargeToFetch
from bridge.flows.views import Actor, ReplyMedia
from bridge.i18n import t
from connectors.telegram import keys as telegram_keys
from connectors.telegram.render import render, topic_name
from connectors.telegram.settings import TelegramSettings
from rules.evidence import SNIFF_BYTES

log = logging.getLogger(__name__)

# Telegram: 1 message/s per chat, 20/min per group, 30/s per bot; a tenth to spare on each, since
# sends spaced exactly can reach Telegram closer together than they left.
CHAT_SPACING, GROUP_SPACING, BOT_SPACING = 1.1, 3.1, 1.1 / 30
DOWNLOAD_LIMIT = 20 * 1024 * 1024  # getFile: bots may download files up to 20 MB
SERVICE = "telegram"
REACTIONS = {"white_check_mark": "👍", "memo": "✍"}
"""The core's marks (Slack's emoji names) as reactions Telegram allows."""
UPDATE_KIND = "telegram.update"  # a stored webhook update
BUTTON_BYTES = 64  # Telegram keeps at most this much data behind an inline button
LONG_BUTTON = "~"  # what starts the key a longer button carries instead (see _fit)
REPLY = "telegram.reply"  # a message answering someone's message (what others see as ephemeral)
ANSWER = "telegram.answer"  # answerCallbackQuery: the toast after a button tap


class _TopicGone(Exception):
    """Telegram no longer has the forum topic a message was meant for ("message thread not found"):
    a person deleted it, or turned the group's topics off. Nothing was sent."""


@dataclass(frozen=True)
class TelegramInbound:
    """What a person did in Telegram, as the flows need it."""

    user: int
    chat: int
    message: int
    text: str
    reply_to: int | None = None
    thread: int | None = None
    parent_written_at: float | None = None
    """When the message this one replies to (in a topic: the topic's opening) was written."""
    parent_not_ours: bool = False
    """That message was not this bot's (a person's, another bot's)."""
    media: tuple[ReplyMedia, ...] = ()
    callback: str | None = None
    callback_id: str | None = None
    edited: bool = False
    """An edit of a message written before (Telegram sends the new text only)."""

    def actor(self) -> Actor:
        """Where to answer this person: their chat, their forum topic, their message."""
        return Actor("telegram", str(self.user), str(self.chat), str(self.thread) if self.thread else None,
                     str(self.message))  # fmt: skip


InboundHandler = Callable[[TelegramInbound], Awaitable[bool]]
"""Returns True when it took the update; handlers are tried in order."""


class TelegramConnector:
    def __init__(self, settings: TelegramSettings, core: Core) -> None:
        self.settings = settings
        self.http = core.http
        self.outbox = core.outbox
        self.config = core.config
        self.redis = core.redis
        self.clock = core.clock
        self.spacing = SendSpacing(self.redis, self.clock, SERVICE, sender_spacing=BOT_SPACING)
        self.sniff_timeout = aiohttp.ClientTimeout(total=SNIFF_TIMEOUT_SECONDS)
        self.inbox = core.inbox
        self.router = core.router
        self.bot = Bot(settings.bot_token, base_url=settings.api_base_url, base_file_url=settings.file_base_url)
        self.application = Application.builder().bot(self.bot).updater(None).build()
        self.application.add_handler(CommandHandler("tasks", self._on_update))
        self.application.add_handler(CallbackQueryHandler(self._on_update))
        self.application.add_handler(MessageHandler(filters.ALL, self._on_update))
        self.application.add_handler(ChatMemberHandler(self._on_own_membership, ChatMemberHandler.MY_CHAT_MEMBER))
        self.application.add_error_handler(self._on_error)
        self._failures: dict[int, Exception] = {}
        self._unreachable: str | None = None
        self.handlers: list[InboundHandler] = []
        self._starting: asyncio.Task[None] | None = None
        self._forums: dict[int, bool] = {}
        self._moved: dict[int, int] = {}  # a group's old id → its id as a supergroup (see _follow)
        self._marking: set[asyncio.Task[None]] = set()
        self.commands: dict[str, Callable[[TelegramInbound, list[str]], Awaitable[str]]] = {}

    def routes(self) -> list[Route]:
        return [("POST", "/telegram/webhook", self._webhook)]

    async def start(self, serve_webhooks: bool) -> None:
        """Initialises PTB (it asks Telegram getMe) in the background, retrying: the bridge must come
        up even while Telegram is unreachable. Until then updates are answered 503 and redelivered."""
        self._starting = asyncio.create_task(self._initialize())

    def unreachable(self) -> str | None:
        return self._unreachable

    async def ready(self) -> None:
        """Waits until Telegram answered getMe (tests, the demo)."""
        if self._starting is not None:
            await asyncio.shield(self._starting)

    async def _initialize(self) -> None:
        delay = 1.0
        while True:
            try:
                await self.application.initialize()
                self._unreachable = None
                return
            except TelegramError as exc:
                self._unreachable = f"not reachable yet at {self.settings.api_base_url} ({exc})"
                log.warning("Telegram %s; retrying in %.0f s", self._unreachable, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 60)

    async def stop(self) -> None:
        if self._starting is not None and not self._starting.done():
            self._starting.cancel()
            await asyncio.gather(self._starting, return_exceptions=True)
        await asyncio.gather(*self._marking, return_exceptions=True)
        if self.application._initialized:
            await self.application.shutdown()

    # -- inbound -------------------------------------------------------------------------------------

    async def _webhook(self, request: web.Request) -> web.Response:
        """Verifies the secret, stores the update (deduplicated by its id) and answers: the update is
        handled afterwards by the event consumer, in order per chat, retried; Telegram never waits
        on a download or on Telegram itself being reachable."""
        given = request.headers.get("X-Telegram-Bot-Api-Secret-Token")
        if given is None:
            description = "the X-Telegram-Bot-Api-Secret-Token header is missing (set the webhook with a secret_token)"
            return web.json_response({"ok": False, "description": description}, status=401)
        if not hmac.compare_digest(given.encode(), self.settings.webhook_secret.encode()):
            return web.json_response({"ok": False, "description": "secret token does not match"}, status=401)
        try:
            raw = await request.read()
            data = json.loads(raw)
            update_id = int(data["update_id"])
        except (json.JSONDecodeError, KeyError, TypeError, ValueError, UnicodeDecodeError):
            return web.json_response({"ok": False, "description": "not a Telegram update"}, status=400)
        await self.inbox.accept("telegram", str(update_id), inbox_thread(_chat_of(data)), UPDATE_KIND, raw.decode())
        return web.json_response({"ok": True})

    def delivery_handlers(self) -> dict[str, EventHandler]:
        return {UPDATE_KIND: self._handle_stored_update}

    async def _handle_stored_update(self, stored: StoredEvent) -> None:
        """A stored update through PTB's handlers; what failed is raised, so the consumer retries it."""
        if self._starting is None or not self._starting.done():
            raise ConnectionError("Telegram not reached yet (getMe); the update waits")  # retried, not lost
        update = Update.de_json(json.loads(stored.raw), self.bot)
        token = DELIVERED_AT.set(stored.received_at or None)
        try:
            await self.application.process_update(update)
        finally:
            DELIVERED_AT.reset(token)
        failure = self._failures.pop(update.update_id, None)
        if failure is not None:
            raise failure

    async def _on_error(self, update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
        """PTB hands a handler's exception here instead of raising it: kept for the webhook's answer."""
        if isinstance(update, Update) and context.error is not None:
            self._failures[update.update_id] = context.error

    async def _on_update(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        m = update.effective_message
        if m is not None and (m.migrate_to_chat_id or m.migrate_from_chat_id):
            # Telegram made a group a supergroup, which has a new id: sent in the old group and the new.
            if m.migrate_to_chat_id:
                await self._follow(m.chat.id, m.migrate_to_chat_id)
            elif m.migrate_from_chat_id:
                await self._follow(m.migrate_from_chat_id, m.chat.id)
            return
        inbound = self._translate(update, self.bot.id)  # updates are handled once getMe answered
        if inbound is None:
            return
        if inbound.chat < 0 and inbound.chat not in self._moved.values():
            await self._moved_here(inbound.chat)
        if inbound.callback is not None and inbound.callback.startswith(LONG_BUTTON):
            kept = await self.redis.get(telegram_keys.button_data(inbound.callback))
            inbound = replace(inbound, callback=None if kept is None else str(kept))
        if update.edited_message is not None:
            inbound = replace(inbound, edited=True)
        if inbound.text.startswith("/") and inbound.callback is None:
            name, *args = inbound.text[1:].split() or [""]
            name, _, addressee = name.partition("@")
            if addressee and addressee.casefold() != (self.bot.username or "").casefold():
                return  # a command for another bot in the group (/help@other_bot): none of ours
            command = self.commands.get(name)
            if command is not None:
                answer = await command(inbound, args)
                await self.queue_reply(inbound, answer, f"cmd:{inbound.chat}:{inbound.message}")
                return
        for handler in self.handlers:
            if await handler(inbound):
                return

    async def _on_own_membership(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """The bot added to a chat, removed, made an admin or not, or blocked by a person: the
        operator learns it from the log at once, with what it means for the place the configuration
        names there, rather than from dead letters later."""
        changed = update.my_chat_member
        if changed is None:
            return
        chat, status = changed.chat.id, changed.new_chat_member.status
        owners = self.router.place(SERVICE, str(chat)).whose()
        if not owners:
            if status in (ChatMember.MEMBER, ChatMember.ADMINISTRATOR):
                log.info("Telegram: the bot was added to %s (%s), which the configuration does not name; for a "
                         "store or creator there, write telegram:%s in its destinations", chat,
                         changed.chat.effective_name or "a chat", chat)  # fmt: skip
            return
        if status in (ChatMember.LEFT, ChatMember.BANNED):
            log.error("Telegram: the bot was removed from telegram:%s (%s) or blocked there: nothing reaches "
                      "it until it is back; what fails meanwhile is kept in the dead letters to replay",
                      chat, owners)  # fmt: skip
        elif status == ChatMember.MEMBER and chat < 0:
            log.warning("Telegram: the bot is no longer an admin of telegram:%s (%s): with privacy mode on it sees "
                        "only commands and replies to its own messages", chat, owners)  # fmt: skip
        elif status == ChatMember.RESTRICTED:
            log.warning("Telegram: the bot is restricted in telegram:%s (%s): what it may not send there is kept "
                        "in the dead letters to replay once the restriction is lifted", chat, owners)  # fmt: skip
        else:
            log.info("Telegram: the bot is %s in telegram:%s (%s)", status, chat, owners)

    @staticmethod
    def _translate(update: Update, own_id: int) -> TelegramInbound | None:
        if update.callback_query is not None:
            q = update.callback_query
            message = q.message
            chat = message.chat.id if message is not None else q.from_user.id
            topic = message.message_thread_id if isinstance(message, Message) and message.is_topic_message else None
            return TelegramInbound(q.from_user.id, chat, message.message_id if message else 0, "", thread=topic,
                                   callback=q.data, callback_id=q.id)  # fmt: skip
        m = update.effective_message
        if m is None or m.from_user is None or m.from_user.is_bot:
            return None
        if not (m.text or m.caption or m.effective_attachment):
            return None  # a service message (someone joined, a message pinned): nobody wrote it
        media = []
        if m.photo:
            biggest = m.photo[-1]
            media.append(ReplyMedia("telegram", biggest.file_id, f"photo-{m.message_id}.jpg", "image/jpeg",
                                    biggest.file_size or 0))  # fmt: skip
        for sent in (m.video, m.document, m.animation):
            if sent is not None:
                name = sent.file_name or f"file-{m.message_id}"
                media.append(ReplyMedia("telegram", sent.file_id, name, sent.mime_type or "", sent.file_size or 0))
        in_topic = bool(m.is_topic_message and m.message_thread_id)
        parent = m.reply_to_message
        reply_to = parent.message_id if parent else None
        return TelegramInbound(
            user=m.from_user.id,
            chat=m.chat.id,
            message=m.message_id,
            text=_with_link_addresses(m),
            # In a topic a plain message "replies" to the topic's opening; that is not a reply.
            reply_to=None if in_topic and reply_to == m.message_thread_id else reply_to,
            thread=m.message_thread_id if in_topic else None,
            # In a topic a message replied to is no older than the topic. One someone else wrote is
            # taken as not in a topic of the bot's still being recorded: that record is written as
            # soon as Telegram answers the topic's creation, and people replying to each other
            # before then is far rarer than a group of people's own topics, which a wait would hold.
            parent_written_at=parent.date.timestamp() if parent else None,
            parent_not_ours=bool(parent and parent.from_user and parent.from_user.id != own_id),
            media=tuple(media),
        )

    async def queue_reply(self, inbound: TelegramInbound, text: str, job_id: str) -> None:
        """Answers a person in the chat they wrote in, as a reply to their message."""
        payload = {"chat": inbound.chat, "reply_to": inbound.message or None, "text": text, "thread": inbound.thread}
        job = OutboxJob(f"telegram:{job_id}", REPLY, payload)
        await self.outbox.enqueue(keys.NO_ENDPOINT_TAG, f"chat:{inbound.chat}", job)

    # -- outbound (outbox senders) -------------------------------------------------------------------

    def senders(self) -> dict[str, Sender]:
        return {
            jobs.destination(SERVICE, jobs.POST): self._post,
            jobs.destination(SERVICE, jobs.UPDATE_ROOT): self._update_root,
            jobs.destination(SERVICE, jobs.EPHEMERAL): self._ephemeral,
            jobs.destination(SERVICE, jobs.REACT): self._react,
            jobs.destination(SERVICE, jobs.UPDATE_POST): self._update_post,
            REPLY: self._reply,
            ANSWER: self._answer,
        }

    async def file_head(self, file_id: str, size: int) -> bytes:
        """The first bytes of a file someone sent (enough to tell its type). Telegram does not let a
        bot download more than 20 MB: ``TooLargeToFetch``. Telegram unreachable is raised (the
        update is retried), never taken for a file of the wrong type."""
        if size > DOWNLOAD_LIMIT:
            raise TooLargeToFetch(DOWNLOAD_LIMIT)
        try:
            tg_file = await self.bot.get_file(file_id)
        except BadRequest as exc:
            if "too big" in str(exc).lower():
                raise TooLargeToFetch(DOWNLOAD_LIMIT) from None
            return b""  # no such file: nothing of an allowed type
        except TelegramError as exc:
            raise ConnectionError(f"Telegram getFile: {exc}") from None
        if not tg_file.file_path:
            return b""
        try:
            sniff = {"Range": f"bytes=0-{SNIFF_BYTES - 1}"}
            async with self.http().get(tg_file.file_path, headers=sniff, timeout=self.sniff_timeout) as resp:
                if resp.status >= 500 or resp.status == 429:
                    raise ConnectionError(f"Telegram file download: HTTP {resp.status}")
                return await resp.content.read(SNIFF_BYTES) if resp.status in (200, 206) else b""
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise ConnectionError(f"Telegram file download: {exc}") from None

    async def fetch_file(self, file_id: str) -> bytes:
        try:
            tg_file = await self.bot.get_file(file_id)
            return bytes(await tg_file.download_as_bytearray())
        except TelegramError as exc:
            raise _sorted(exc) from None

    async def _follow(self, old: int, new: int) -> None:
        """Telegram made the group ``old`` a supergroup, now ``new`` (turning topics on does it, as do
        a public link and many members). Messages for ``old`` go to ``new`` from now on, and what
        people do in ``new`` is taken as done in ``old``, so nothing waits for the operator to write
        the new id into the configuration; the log asks them to. Kept in Redis for every process."""
        if self._moved.get(old) == new:
            return
        await self.redis.set(telegram_keys.moved_from(new), old)
        self._moved[old] = new
        self.router.rename(SERVICE, str(old), str(new))
        log.warning("Telegram group %s is now the supergroup %s; the bridge follows it there. Write "
                    "telegram:%s in place of telegram:%s in the configuration", old, new, new, old)  # fmt: skip

    async def _moved_here(self, chat: int) -> None:
        """Whether a group the configuration does not name is one it names by its old id (another
        process saw the move, or this one before a restart)."""
        if self.config().at(f"{SERVICE}:{chat}") != NOWHERE:
            return
        old = await self.redis.get(telegram_keys.moved_from(chat))
        if old is not None:
            await self._follow(int(old), chat)

    def _where(self, chat: int, reply_to: int | None, thread: int | None) -> tuple[int, int | None, int | None]:
        """Where a message for ``chat`` goes: a group made a supergroup is at its new id, where a
        message of the old group can be neither replied to nor have a topic."""
        moved = self._moved.get(chat)
        return (chat, reply_to, thread) if moved is None else (moved, None, None)

    async def _failure(self, exc: TelegramError, chat: int) -> Exception:
        """What a refusal means for the outbox. A group made a supergroup is followed to its new
        id, and the job runs again at once, there: nothing was sent."""
        if isinstance(exc, ChatMigrated):
            await self._follow(chat, exc.new_chat_id)
            return RetryLater(f"Telegram group {chat} is now {exc.new_chat_id}", after=0)
        return _sorted(exc)

    async def _fit(self, markup: InlineKeyboardMarkup | None) -> InlineKeyboardMarkup | None:
        """Buttons whose data is over Telegram's 64 bytes (a reassign to an agent whose account id is
        long, "店铺名:客服…" in three bytes a character) carry a key to it instead, kept in Redis
        before the message goes; the same data gets the same key, so a retry writes the same."""
        if markup is None:
            return None
        kept: dict[str, str] = {}
        rows = []
        for row in markup.inline_keyboard:
            fitted = []
            for button in row:
                data = button.callback_data
                if isinstance(data, str) and len(data.encode()) > BUTTON_BYTES:
                    key = LONG_BUTTON + hashlib.blake2b(data.encode(), digest_size=16).hexdigest()
                    kept[key] = data
                    button = InlineKeyboardButton(button.text, callback_data=key)
                fitted.append(button)
            rows.append(fitted)
        if not kept:
            return markup
        async with self.redis.pipeline(transaction=False) as pipe:
            for key, data in kept.items():
                pipe.set(telegram_keys.button_data(key), data, ex=keys.REF_KEEP_SECONDS)
            await pipe.execute()
        return InlineKeyboardMarkup(rows)

    async def _space(self, chat: int, job_id: str, not_after: float | None = None) -> None:
        # The chat's spacing and the bot's overall rate, reserved together (BOT_SPACING).
        wait = await self.spacing.wait_seconds(str(chat), _spacing(chat), job_id, not_after)
        if wait > 0:
            raise RetryLater(f"chat {chat} spacing", after=wait, pacing=True)

    async def _send(
        self,
        chat: int,
        text: str,
        markup: Any,
        job_id: str,
        reply_to: int | None,
        thread: int | None,
        not_after: float | None = None,
        photo: str | None = None,
    ) -> Any:
        """Sends a message, or with ``photo`` (a URL) a photo with ``text`` as its caption."""
        await self._space(chat, job_id, not_after)
        try:
            sent = None
            if photo is not None:
                try:
                    sent = await self.bot.send_photo(
                        chat, photo, caption=text, parse_mode="HTML", reply_markup=markup, message_thread_id=thread,
                        reply_to_message_id=reply_to, allow_sending_without_reply=True,
                    )  # fmt: skip
                except BadRequest as exc:
                    # Telegram fetches the photo from its URL itself, and cannot always (an address it
                    # cannot reach, a size or type it does not take). Refused, nothing was sent: the
                    # caption, which links the image, goes as the message instead, in the same slot.
                    log.warning("Telegram chat %s: the photo was refused (%s); sending its link instead", chat, exc)
            if sent is None:
                sent = await self.bot.send_message(
                    chat, text, parse_mode="HTML", reply_markup=markup, message_thread_id=thread,
                    reply_to_message_id=reply_to, allow_sending_without_reply=True,
                )  # fmt: skip
            self._mark_sent(chat)
            return sent
        except TelegramError as exc:
            if thread is not None and isinstance(exc, BadRequest) and "thread not found" in str(exc).lower():
                raise _TopicGone(str(exc)) from None
            failure = await self._failure(exc, chat)
            if isinstance(failure, RetryLater) and failure.after:
                # 429: the chat rests, and this message goes first after it
                await self.spacing.hold(str(chat), _spacing(chat), job_id, failure.after)
            raise failure from None

    def _mark_sent(self, chat: int) -> None:
        """Telegram counts a chat's messages as they arrive and tolerates no burst: the next one is
        spaced from when this one was taken, not from when it left (a busy process can hold a request
        back long enough for the next to arrive less than a second after it). The mark goes to Redis
        beside the outbox's record of the send rather than before it: until that record, a process
        killed would leave the message to be sent again (Telegram keeps no history to look it up in),
        so nothing waits in between. A mark that fails must not make the outbox send it again: the
        message is out, and the worst a lost mark does is let the chat's next message come early,
        where Telegram's 429 holds the chat and the outbox sends it after the pause."""

        async def mark() -> None:
            try:
                await self.spacing.sent(str(chat), _spacing(chat))
            except Exception as exc:  # any failure here: the send stands either way
                log.warning("Telegram chat %s: when its last message was taken was not stored (%s); "
                            "its next message may be answered 429 and sent after the pause", chat, exc)  # fmt: skip

        task = asyncio.create_task(mark())
        self._marking.add(task)
        task.add_done_callback(self._marking.discard)

    def _view(self, p: dict[str, Any]) -> dict[str, Any]:
        """The view, with the people it mentions resolved to their Telegram ids (tg://user links)."""
        view = dict(p["view"])
        store = self.config().store(str(p.get("store") or ""))
        if store is not None:
            by_id = {a.id: a for a in store.agents}
            people = [by_id.get(a) for a in view.get("mentions", [])]
            view["people"] = [{"name": a.name, "telegram": a.identity(SERVICE)} for a in people if a is not None]
            view.setdefault("timezone", store.timezone)
            view.setdefault("locale", store.locale)
            view["detail_label"] = t(store.locale, "order.view")
            view["image_label"] = t(store.locale, "chat.image")
        return view

    async def _is_forum(self, chat: int) -> bool:
        """Whether a group has topics; asked once per process (turning topics on or off is rare)."""
        if chat >= 0:
            return False
        if chat not in self._forums:
            try:
                self._forums[chat] = bool((await self.bot.get_chat(chat)).is_forum)
            except TelegramError as exc:
                raise await self._failure(exc, chat) from None
        return self._forums[chat]

    async def _topic(self, p: dict[str, Any], chat: int) -> int | None:
        """The forum topic a thread lives in: opened with its root post where the group is a forum."""
        tag, key = str(p["tag"]), str(p["thread_key"])
        topic = await refs.topic_of(self.redis, tag, key)
        if topic is not None:
            return int(topic)
        if not p.get("root") or not await self._is_forum(chat):
            return None
        try:
            created = await self.bot.create_forum_topic(chat, topic_name(p["view"]) or key)
        except BadRequest as exc:
            # Not allowed to manage topics (`bridge check --online` says so): the chat still shows,
            # as a reply chain in the General topic, rather than not at all.
            log.warning("Telegram chat %s: cannot open a topic (%s); using reply chains there", chat, exc)
            self._forums[chat] = False
            return None
        except TelegramError as exc:
            raise await self._failure(exc, chat) from None
        topic = str(created.message_thread_id)
        # As a sent message is recorded: a run that fails here would open a second topic, since
        # Telegram keeps nothing a bot can look up.
        await record_what_went_out(
            lambda: refs.save_topic(self.redis, tag, key, SERVICE, str(chat), topic),
            f"Telegram chat {chat}: topic {topic} opened; recording it",
        )
        return created.message_thread_id

    async def _post(self, job: OutboxJob) -> Recorded:
        p = job.payload
        tag, key = str(p["tag"]), str(p["thread_key"])
        chat = self._where(int(p["channel"]), None, None)[0]
        view = self._view(p)
        text, markup = render(view)
        markup = await self._fit(markup)
        topic = await self._topic(p, chat)
        reply_to = None
        if not p.get("root") and topic is None:  # without a topic, the thread is a reply chain
            root = await refs.root_of(self.redis, tag, key)
            if root is None:
                raise WaitingForRoot
            # A thread begun before its group became a supergroup goes on in the new one unchained.
            reply_to = int(root[1]) if int(root[0]) == chat else None
        # An image from the platform is shown as a photo, as in Slack (Telegram fetches it by its URL).
        content = view.get("content") or {}
        photo = str(content["url"]) if view["type"] == "platform_message" and content.get("type") == "image" else None
        try:
            sent = await self._send(chat, text, markup, job.id, reply_to, topic, job.expires_at, photo)
        except _TopicGone as exc:
            # The thread goes on without its topic, in the group's main view: as a reply chain under
            # its first message where that is still there, a message of its own where it went with
            # the topic. Run again at once; a root opens a new topic if the group still has topics.
            log.warning("Telegram chat %s: the topic of %s is gone (%s); the thread goes on without it", chat, key, exc)
            await refs.forget_topic(self.redis, tag, key)
            self._forums.pop(chat, None)
            raise RetryLater(f"Telegram chat {chat}: the thread's topic is gone", after=0) from None
        if p.get("root"):
            return refs.root_records(tag, key, SERVICE, str(chat), str(sent.message_id))
        # A reply to any message of the chain belongs to the same thread.
        recorded = refs.member_records(tag, key, SERVICE, str(chat), str(sent.message_id))
        if p.get("remember"):
            recorded |= refs.posted_records(tag, job.id, SERVICE, str(chat), str(sent.message_id))
        return recorded

    async def _update_root(self, job: OutboxJob) -> Recorded | None:
        p = job.payload
        tag, key = str(p["tag"]), str(p["thread_key"])
        root = await refs.root_of(self.redis, tag, key)
        if root is None:
            raise WaitingForRoot
        text, markup = render(self._view(p))
        markup = await self._fit(markup)
        # The old group, since made a supergroup, is read-only history.
        if int(root[0]) in self._moved or not await self._edit(int(root[0]), int(root[1]), text, markup):
            return await self._header_again(job, int(root[0]), text, markup)
        topic = await refs.topic_of(self.redis, tag, key)
        if topic is not None:  # the topic's name shows the status in the group's list of topics
            try:
                await self.bot.edit_forum_topic(int(root[0]), int(topic), name=topic_name(p["view"]))
            except BadRequest as exc:  # the header is what matters; a name left as it was is not worth a retry
                if "not_modified" not in str(exc).lower():
                    log.warning("Telegram chat %s: topic %s not renamed: %s", root[0], topic, exc)
        return None

    async def _update_post(self, job: OutboxJob) -> None:
        p = job.payload
        posted = await refs.posted_at(self.redis, str(p["tag"]), str(p["posted"]))
        if posted is None or int(posted[0]) in self._moved:
            return  # never posted (it failed for good), or in a group since made read-only history
        text, markup = render(self._view(p))
        try:
            # Gone meanwhile (deleted, or its group made a supergroup): buttons on nothing matter to no one.
            await self._edit(int(posted[0]), int(posted[1]), text, await self._fit(markup))
        except TelegramError as exc:
            raise _sorted(exc) from None

    async def _edit(self, chat: int, message: int, text: str, markup: InlineKeyboardMarkup | None) -> bool:
        """Shows ``text`` and ``markup`` in a message the bot posted; False when it can no longer be
        edited: deleted, gone with its topic, or left in a group since made a supergroup (which is
        followed). An edit that changes nothing is done."""
        try:
            await self.bot.edit_message_text(text, chat_id=chat, message_id=message, parse_mode="HTML",
                                             reply_markup=markup)  # fmt: skip
        except ChatMigrated as exc:
            await self._follow(chat, exc.new_chat_id)
            return False
        except BadRequest as exc:
            if "to edit not found" in str(exc).lower():
                return False
            if "not modified" not in str(exc).lower():
                raise _sorted(exc) from None
        return True

    async def _header_again(
        self, job: OutboxJob, chat: int, text: str, markup: InlineKeyboardMarkup | None
    ) -> Recorded:
        """A thread's header that can no longer be edited (deleted, gone with its topic, or left in a
        group since made a supergroup) is posted again where the thread now is, with its buttons,
        and recorded as the thread's root: later changes edit the new one."""
        tag, key = str(job.payload["tag"]), str(job.payload["thread_key"])
        chat = self._where(chat, None, None)[0]
        log.warning("Telegram chat %s: the header of %s can no longer be edited; posting it again", chat, key)
        topic = await refs.topic_of(self.redis, tag, key)
        try:
            sent = await self._send(chat, text, markup, job.id, None, int(topic) if topic else None)
        except _TopicGone:
            await refs.forget_topic(self.redis, tag, key)
            sent = await self._send(chat, text, markup, job.id, None, None)
        return refs.root_records(tag, key, SERVICE, str(chat), str(sent.message_id))

    async def _reply(self, job: OutboxJob) -> None:
        p = job.payload
        chat, reply_to, thread = self._where(int(p["chat"]), p.get("reply_to"), p.get("thread"))
        await self._answer_person(chat, html.escape(str(p["text"]), quote=False), job.id, reply_to, thread)

    async def _ephemeral(self, job: OutboxJob) -> None:
        """Telegram has no private message inside a group: the refusal replies to the refused message."""
        actor = job.payload["actor"]
        chat, reply_to, topic = self._where(
            int(actor["channel"]),
            int(actor["message"]) if actor.get("message") else None,
            int(actor["thread"]) if actor.get("thread") else None,
        )
        await self._answer_person(chat, html.escape(str(job.payload["text"]), quote=False), job.id, reply_to, topic)

    async def _answer_person(self, chat: int, text: str, job_id: str, reply_to: int | None, topic: int | None) -> None:
        """A reply to someone's message, in their topic; the topic gone, still a reply to them."""
        try:
            await self._send(chat, text, None, job_id, reply_to, topic)
        except _TopicGone:
            await self._send(chat, text, None, job_id, reply_to, None)

    async def _react(self, job: OutboxJob) -> None:
        p = job.payload
        if int(p["channel"]) in self._moved:
            return  # a message in a group since made a supergroup: that group is read-only history
        try:
            emoji = REACTIONS.get(str(p.get("emoji")), "👍")
            await self.bot.set_message_reaction(int(p["channel"]), int(p["message"]), emoji)
        except ChatMigrated as exc:
            await self._follow(int(p["channel"]), exc.new_chat_id)
        except BadRequest as exc:
            if "not found" not in str(exc).lower():
                raise _sorted(exc) from None
            # Its author deleted it meanwhile: a mark on nothing matters to no one (no dead letter).
            log.info("Telegram chat %s: the message %s to mark is gone", p["channel"], p["message"])
        except TelegramError as exc:
            raise _sorted(exc) from None

    async def _answer(self, job: OutboxJob) -> None:
        with contextlib.suppress(BadRequest):  # answerable only for a short while; a late answer is moot
            await self.bot.answer_callback_query(str(job.payload["id"]), text=job.payload.get("text"))


def _with_link_addresses(m: Message) -> str:
    """A message's text as platform CS should read it: a link under words of its own (Telegram's
    text_link, which a plain text drops) keeps its address after them, as in Slack."""
    text = m.text or m.caption or ""
    entities = m.entities if m.text else m.caption_entities
    links = sorted((e for e in entities if e.type == MessageEntity.TEXT_LINK and e.url), key=lambda e: e.offset)
    if not links:
        return text
    wide, parts, done = text.encode("utf-16-le"), [], 0  # Telegram counts offsets in UTF-16 code units
    for link in links:
        end = 2 * (link.offset + link.length)
        words = wide[2 * link.offset : end].decode("utf-16-le")
        parts.append(wide[done:end].decode("utf-16-le"))
        if words.strip() != link.url:
            parts.append(f" ({link.url})")
        done = end
    return "".join(parts) + wide[done:].decode("utf-16-le")


def _spacing(chat: int) -> float:
    """Seconds between two messages to one chat: groups (negative ids) allow 20 a minute."""
    return GROUP_SPACING if chat < 0 else CHAT_SPACING


def _chat_of(update: dict[str, Any]) -> str:
    """The chat an update happened in (its ordering key), from the raw update."""
    for field in ("message", "edited_message", "channel_post", "edited_channel_post", "my_chat_member"):
        if isinstance(update.get(field), dict):
            return str(update[field].get("chat", {}).get("id", "-"))
    query = update.get("callback_query")
    if isinstance(query, dict):
        return str((query.get("message") or {}).get("chat", {}).get("id") or query.get("from", {}).get("id", "-"))
    return "-"


def _sorted(exc: TelegramError) -> Exception:
    if isinstance(exc, RetryAfter):
        after = exc.retry_after
        seconds = after.total_seconds() if hasattr(after, "total_seconds") else float(after)
        return RetryLater(f"Telegram rate limit: {exc}", after=seconds)
    if isinstance(exc, TimedOut | NetworkError) and not isinstance(exc, BadRequest):
        return RetryLater(f"Telegram unreachable: {exc}")
    return FinalFailure(f"Telegram refused: {exc}", code=type(exc).__name__)
