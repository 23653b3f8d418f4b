"""Slack, the real way: slack-bolt receives (signature, url_verification, self-events are bolt's own),
slack_sdk's AsyncWebClient sends, through the outbox. This module only translates: Slack events
into ChatFlow calls, core views into Slack messages.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any

import aiohttp
import orjson
from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
from slack_bolt.async_app import AsyncApp, AsyncBoltContext
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_bolt.response import BoltResponse
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.webhook.async_client import AsyncWebhookClient

from bridge.config import Store
from bridge.core import Core
from bridge.destinations import SNIFF_TIMEOUT_SECONDS, Route, inbox_thread
from bridge.engine import refs
from bridge.engine.backpressure import RETRY_AFTER_SECONDS, UNAVAILABLE
from bridge.engine.events import DELIVERED_AT, EventHandler, StoredEvent, delivered_at
from bridge.engine.outbox import (
    CALL_TIMEOUT_SECONDS,
    FinalFailure,
    OutboxJob,
    Recorded,
    RetryLater,
    Sender,
    WaitingForRoot,
)
from bridge.engine.ratelimit import SendSpacing
from bridge.flows import jobs
from bridge.flows.router import ASSIGN_TO, CLAIM, ELSEWHERE, REASSIGN, Inbound
from bridge.flows.task_records import status_name
from bridge.flows.tasks import evidence_count_problem, evidence_problems
from bridge.flows.views import Actor, ReplyMedia, tell_privately
from bridge.i18n import t
from connectors.slack import keys as slack_keys
from connectors.slack.render import escaped, images_as_links, render
from connectors.slack.settings import SlackSettings
from connectors.slack.text import slack_to_platform_text
from rules.evidence import IMAGE_FORMATS, MAX_EVIDENCE_FILES, SNIFF_BYTES, VIDEO_FORMATS, evidence_limits
from rules.solution import solution_refusal

log = logging.getLogger(__name__)

# Slack: one message per second per channel, with short bursts tolerated. Posts leave exactly that
# far apart (counted from each actual send); the tolerance absorbs two of them arriving a little
# closer than they left, so no margin is added — a tenth of a second more cost a tenth of the rate.
CHANNEL_SPACING_SECONDS = 1.0
POST_METADATA = "feige_bridge_post"  # message metadata naming the outbox job that posted it
POST_ATTEMPT_SECONDS = 3600
_MESSAGE_SUBTYPES = {None, "file_share", "thread_broadcast"}  # what people write; the rest (joins, topics …) is not
SERVICE = "slack"
EVENT_KIND = "slack.event"  # a stored delivery (an event, a command, a click, a modal submission)
SLASH_COMMANDS = {"tasks": "/tasks", "stats": "/feige stats", "help": "/feige help"}
"""How the app's slash commands are written (they are registered in the Slack app's settings)."""
RESPOND = "slack.respond"  # a slash command's answer, through its response_url
RESPONSE_URL_SECONDS = 30 * 60 - 60
"""A slash command's ``response_url`` takes answers for 30 minutes; a minute is kept in hand."""
DURABLE_ACTIONS = {"task_log", "task_comment", CLAIM, REASSIGN, ASSIGN_TO, ELSEWHERE}
"""Clicks whose work is done after the ack (the others open a modal, which must happen at once)."""
LAST_RETRY = 3
"""Slack retries an event three times (at once, after a minute, after five) and then drops it."""
REPLAYED = "feige_stored"  # context flag: this request is a stored event, handled by the consumer
FAILURE = "feige_failure"  # context key: what a stored event's listener raised


class SlackConnector:
    def __init__(self, settings: SlackSettings, core: Core) -> None:
        self.settings = settings
        self.config = core.config
        self.redis = core.redis
        self.chats = core.chats
        self.tasks = core.tasks
        self.clock = core.clock
        self.http = core.http
        self.spacing = SendSpacing(self.redis, self.clock, SERVICE)
        self.sniff_timeout = aiohttp.ClientTimeout(total=SNIFF_TIMEOUT_SECONDS)
        self.client = AsyncWebClient(
            token=settings.bot_token, base_url=settings.api_base_url, timeout=CALL_TIMEOUT_SECONDS
        )
        self.app = AsyncApp(
            signing_secret=settings.signing_secret,
            client=self.client,
            # Ack only after the reply is durably queued: nothing a person wrote is lost in a crash.
            process_before_response=True,
            logger=logging.getLogger("slack_bolt"),
        )
        self.app.command("/feige")(self._on_command)
        self.app.command("/tasks")(self._on_tasks_command)
        self.app.action("task_log")(self._on_task_log)
        self.app.action("task_comment")(self._on_task_comment_hint)
        self.app.action(re.compile(f"^({CLAIM}|{REASSIGN}|{ASSIGN_TO}|{ELSEWHERE})$"))(self._on_chat_action)
        self.app.action("task_resolve")(self._open_process)
        self.app.action("task_unresolvable")(self._open_process)
        self.app.view("task_process")(self._on_process_submit)
        self.app.event("member_joined_channel")(self._on_membership)
        self.app.event("member_left_channel")(self._on_membership)
        self.app.action(re.compile(".*"))(self._ack_action)
        self.app.error(self._on_error)
        self.app.use(self._store_events_first)
        self.inbox = core.inbox
        self.outbox = core.outbox
        self.router = core.router
        self._close_socket_mode: Callable[[], Awaitable[None]] | None = None
        self._bot_user: str | None = None
        """The bot's own user id, as Slack's auth.test told it (this connector's at start, or bolt's)."""
        self._learning: asyncio.Task[None] | None = None

    def routes(self) -> list[Route]:
        return [("POST", "/slack/events", self._handle)]

    async def _store_events_first(
        self,
        req: AsyncBoltRequest,
        body: dict[str, Any],
        context: AsyncBoltContext,
        next: Callable[[], Awaitable[BoltResponse]],
    ) -> BoltResponse:
        """What people do is stored, deduplicated, before Slack is answered — over HTTP and Socket
        Mode alike — and handled afterwards by the event consumer, with its order and retries:
        messages, slash commands (answered later through their ``response_url``) and clicks.
        Opening a modal needs the click's ``trigger_id`` within 3 s and changes nothing, so it
        is answered at once; a modal's submission is checked from what is at hand first (its
        errors must be in the response), then stored by its listener."""
        self._bot_user = context.bot_user_id or self._bot_user
        delivery = None if context.get(REPLAYED) else _durable_delivery(body)
        if delivery is None:
            return await next()
        # Slack drops an event after its last retry; commands and clicks are never retried (the
        # person sees the failure and tries again), so only an event's last try can be held.
        last_try = body.get("type") == "event_callback" and _retry_number(req) >= LAST_RETRY
        await self.inbox.accept("slack", *delivery, EVENT_KIND, orjson.dumps(body).decode(), last_try=last_try)
        return BoltResponse(status=200, body="")

    def delivery_handlers(self) -> dict[str, EventHandler]:
        return {EVENT_KIND: self._handle_stored_event}

    async def _handle_stored_event(self, stored: StoredEvent) -> None:
        """A stored event, through the same bolt app (its listeners, matching and self-event rules);
        what failed is raised, so the consumer retries it. A message, the event every answer in a
        chat is, goes straight to its handler: bolt took it at intake (its signature, its
        self-event rule), and a second dispatch cost about 4 % of a paced chat's CPU."""
        body = orjson.loads(stored.raw)
        token = DELIVERED_AT.set(stored.received_at or None)
        try:
            event = body.get("event") if body.get("type") == "event_callback" else None
            if isinstance(event, dict) and event.get("type") == "message":
                await self._on_message(event)
                return
            request = AsyncBoltRequest(body=body, mode="socket_mode", context={REPLAYED: True})
            response = await self.app.async_dispatch(request)
            self._bot_user = request.context.bot_user_id or self._bot_user
        finally:
            DELIVERED_AT.reset(token)
        failure = request.context.get(FAILURE)
        if failure is not None:
            raise failure
        if request.context.authorize_result is None:
            # bolt could not authorize (its auth.test failed: Slack unreachable since this process
            # started) and answered without running a listener: handled later, however long it takes.
            raise ConnectionError(f"Slack event {stored.msg_id}: Slack did not answer auth.test")
        if response.status >= 500:
            raise RuntimeError(f"Slack event {stored.msg_id}: {response.status} {response.body}")

    async def _on_error(self, error: Exception, context: AsyncBoltContext) -> BoltResponse | None:
        """A listener that met Redis slow or down answers 503 + Retry-After: Slack delivers the request
        again where it does (events), and nothing was taken half-way (the flows are resumable)."""
        if context.get(REPLAYED):
            context[FAILURE] = error  # raised by the consumer's handler, which retries the event
            return None
        if isinstance(error, UNAVAILABLE):
            log.warning("Slack request not taken, Redis unavailable: %s", error)
            return BoltResponse(status=503, body="storage unavailable, deliver again later",
                                headers={"Retry-After": str(RETRY_AFTER_SECONDS)})  # fmt: skip
        log.error("Slack listener failed: %r", error, exc_info=error)
        return None

    async def start(self, serve_webhooks: bool) -> None:
        """With ``socket_mode: true`` (teams without a public URL), events arrive over Slack's
        WebSocket instead of /slack/events, through the same bolt app — in processes that take
        events (not in ``--role worker``)."""
        # The bridge's one HTTP session: without it slack_sdk opens and closes a session (a new
        # TCP connection) for every call, which was a third of a post's CPU.
        self.client.session = self.http()
        self._learning = asyncio.create_task(self._learn_own_user())
        if not serve_webhooks or not self.settings.socket_mode or not self.settings.app_token:
            return
        from connectors.slack.socket import StoringSocketModeHandler

        handler = StoringSocketModeHandler(
            self.app, self.settings.app_token, web_client=self.client, not_taken=_not_taken
        )
        await handler.connect_async()  # type: ignore[no-untyped-call]
        self._close_socket_mode = handler.close_async

    async def _learn_own_user(self) -> None:
        """Asks Slack who the bot is (auth.test), again until it answers, without holding anything
        up: it tells a thread a person started from one of the bot's whose record may still be to
        come, in every process, including one that only consumes and so never has bolt ask."""
        delay = 1.0
        while self._bot_user is None:
            try:
                self._bot_user = str((await self.client.auth_test())["user_id"])
            except (SlackClientError, aiohttp.ClientError, TimeoutError) as exc:
                log.warning("Slack did not say who the bot is (auth.test: %s); asking again in %.0f s", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 60)

    async def ready(self) -> None:
        """Slack needs no handshake before the first call; the bot's user id is known once it is."""
        if self._learning is not None:
            await asyncio.shield(self._learning)

    def unreachable(self) -> str | None:
        return None  # no handshake: a call that fails is retried by the outbox

    async def stop(self) -> None:
        if self._learning is not None and not self._learning.done():
            self._learning.cancel()
            await asyncio.gather(self._learning, return_exceptions=True)
        if self._close_socket_mode is not None:
            await self._close_socket_mode()
            self._close_socket_mode = None

    async def _handle(self, request: web.Request) -> web.Response:
        bolt_request = await to_bolt_request(request)
        response = await self.app.async_dispatch(bolt_request)
        if _not_taken(bolt_request, response.status):
            log.warning("Slack request not taken: Slack did not answer auth.test")
            return web.Response(status=503, text="Slack unreachable, deliver again later",
                                headers={"Retry-After": str(RETRY_AFTER_SECONDS)})  # fmt: skip
        return await to_aiohttp_response(response)

    # -- inbound -------------------------------------------------------------------------------------

    async def _on_message(self, event: dict[str, Any]) -> None:
        if event.get("subtype") in ("message_changed", "message_deleted"):
            await self._on_change(event)
            return
        if event.get("subtype") not in _MESSAGE_SUBTYPES or event.get("bot_id") or not event.get("user"):
            return
        thread = event.get("thread_ts")
        in_thread = thread is not None and thread != event["ts"]
        media = [
            ReplyMedia("slack", f["url_private"], f.get("name", "file"), f.get("mimetype", ""), int(f.get("size", 0)))
            for f in event.get("files", [])
            if f.get("url_private")
        ]
        actor = Actor("slack", event["user"], event["channel"], thread if in_thread else None, event["ts"])
        text = self._platform_text(str(event.get("text", "")))
        if not in_thread:
            await self.router.message(Inbound(actor, text, media))
            return
        # A thread's ts is the moment its first message was written, and Slack names who wrote it.
        started_by = event.get("parent_user_id")
        # Until this process knows who the bot is, a thread's reply waits as long as the bot's could.
        not_ours = started_by is not None and self._bot_user is not None and started_by != self._bot_user
        await self.router.message(Inbound(actor, text, media, (str(thread),), parent_written_at=float(str(thread)),
                                          parent_not_ours=not_ours))  # fmt: skip

    async def _on_membership(self, event: dict[str, Any], context: AsyncBoltContext) -> None:
        """The bot invited to a channel or removed from it: the operator learns it from the log at
        once, with whose place it is, rather than from dead letters later (others joining or
        leaving change nothing)."""
        if event.get("user") != (context.bot_user_id or self._bot_user):
            return
        channel = str(event.get("channel", ""))
        owners = self.router.place(SERVICE, channel).whose()
        joined = event.get("type") == "member_joined_channel"
        if not owners:
            if joined:
                log.info("Slack: the bot was added to %s, which the configuration does not name; for a store or "
                         "creator there, write slack:%s in its destinations", channel, channel)  # fmt: skip
        elif joined:
            log.info("Slack: the bot is in slack:%s (%s)", channel, owners)
        else:
            log.error("Slack: the bot was removed from slack:%s (%s): nothing reaches it until it is invited "
                      "back (/invite); what fails meanwhile is kept in the dead letters to replay",
                      channel, owners)  # fmt: skip

    def _platform_text(self, raw: str) -> str:
        """What platform CS reads of a Slack text. Slack writes a mention as the user id alone, which
        would read "@U0…": an agent's is their name."""
        if "<@" not in raw:
            return slack_to_platform_text(raw)
        stores = self.config().stores
        return slack_to_platform_text(raw, {u: a.name for s in stores for a in s.agents if (u := a.identity(SERVICE))})

    async def _on_change(self, event: dict[str, Any]) -> None:
        """An edited or deleted message: if the bridge had sent it, its author learns the platform
        keeps the original (the bot's own updates of its posts are not people's edits)."""
        deleted = event["subtype"] == "message_deleted"
        now, before = event.get("message") or {}, event.get("previous_message") or {}
        person = before if deleted else now
        if person.get("bot_id") or not person.get("user") or (not deleted and now.get("text") == before.get("text")):
            return
        thread = person.get("thread_ts")
        in_thread = thread is not None and thread != person.get("ts")
        actor = Actor(SERVICE, person["user"], event["channel"], thread if in_thread else None, person.get("ts"))
        new = "" if deleted else self._platform_text(str(now.get("text", "")))
        original = self._platform_text(str(before["text"])) if before.get("text") else None
        await self.router.changed(Inbound(actor, new, (), (str(thread),) if in_thread else ()), original, deleted)

    async def _on_task_log(self, ack: Callable[..., Awaitable[None]], body: dict[str, Any]) -> None:
        await ack()
        actor = Actor("slack", body.get("user", {}).get("id", ""), body.get("channel", {}).get("id", ""), None,
                      body.get("container", {}).get("message_ts"))  # fmt: skip
        tid = body["actions"][0].get("value", "")
        await self.router.show_log(actor, tid, f"log:{tid}:{body.get('trigger_id', '')}")

    async def _open_process(self, ack: Callable[..., Awaitable[None]], body: dict[str, Any]) -> None:
        """Resolve / Cannot resolve: a modal asks for the solution and the evidence (B7, B8)."""
        await ack()
        channel = body.get("channel", {}).get("id", "")
        store = self.router.place(SERVICE, channel).task_store
        if store is None:
            return
        actor = Actor(SERVICE, body.get("user", {}).get("id", ""), channel, None, None)
        refusal = self.router.processing_refusal(actor)
        if refusal is not None:
            await tell_privately(self.outbox, store, actor, refusal, f"not-agent:{body.get('trigger_id', '')}")
            return
        action = body["actions"][0]
        tid, result = action.get("value", ""), "resolved" if action["action_id"] == "task_resolve" else "unresolvable"
        draft = await self.tasks.draft(store, tid, actor.user)
        loc = store.locale
        title = t(loc, f"task.button.{'resolve' if result == 'resolved' else 'unresolvable'}")
        view = {
            "type": "modal",
            "callback_id": "task_process",
            "private_metadata": json.dumps({"store": store.id, "task": tid, "result": result, "channel": channel,
                                            "message": body.get("container", {}).get("message_ts")}),
            "title": {"type": "plain_text", "text": t(loc, "task.process.title")[:24]},
            "submit": {"type": "plain_text", "text": t(loc, "task.process.submit")},
            "blocks": [
                {"type": "section", "text": {"type": "mrkdwn", "text": f"*{title}* · {escaped(tid)}"}},
                {"type": "input", "block_id": "solution",
                 "label": {"type": "plain_text", "text": t(loc, "task.process.solution")},
                 "element": {"type": "plain_text_input", "action_id": "solution", "multiline": True}
                             | ({"initial_value": draft} if draft else {})},
                {"type": "input", "block_id": "confirm", "optional": True, "label": {"type": "plain_text", "text": " "},
                 "element": {"type": "checkboxes", "action_id": "confirm", "options": [
                     {"text": {"type": "plain_text", "text": t(loc, "task.process.confirm")}, "value": "yes"}]}},
                {"type": "input", "block_id": "evidence", "optional": True,
                 "label": {"type": "plain_text", "text": t(loc, "task.process.evidence", **evidence_limits())[:2000]},
                 "element": {"type": "file_input", "action_id": "evidence", "max_files": MAX_EVIDENCE_FILES,
                             "filetypes": [*IMAGE_FORMATS, *VIDEO_FORMATS]}},
            ],
        }  # fmt: skip
        try:
            await _call(self.client.views_open(trigger_id=body["trigger_id"], view=view))
        except (RetryLater, FinalFailure) as exc:
            log.warning("could not open the processing modal for %s: %s", tid, exc)

    async def _on_process_submit(
        self, ack: Callable[..., Awaitable[None]], body: dict[str, Any], context: AsyncBoltContext
    ) -> None:
        """A submitted modal is checked at once from what is at hand (the task order's status, the
        solution, the number of files), since its errors must be in the response; once it passes it
        is stored and handled like any event. The files' contents are checked then, and a refusal
        is told in the task order's thread."""
        if context.get(REPLAYED):
            await ack()
            await self._process_submitted(body)
            return
        view = body["view"]
        meta = json.loads(view.get("private_metadata") or "{}")
        store = self.config().store(str(meta.get("store", "")))
        if store is None:
            await ack()
            return
        loc, tid, values = store.locale, str(meta["task"]), _view_values(view)
        errors: dict[str, str] = {}
        status = await self.tasks.status_of(store, tid)
        refusal = solution_refusal(values.solution, values.confirmed)
        if status != "pending":
            errors["solution"] = t(loc, "task.process.not_pending", status=status_name(loc, status))
        elif refusal == "empty":
            errors["solution"] = t(loc, "task.process.empty")
        elif refusal == "unconfirmed":
            errors["solution"] = t(loc, "task.process.weak")
        count_problem = evidence_count_problem(loc, len(values.files) + len(await self.tasks.thread_files(store, tid)))
        if count_problem:
            errors["evidence"] = count_problem
        if errors:
            await ack(response_action="errors", errors=errors)
            return
        thread = inbox_thread(str(meta.get("channel") or "-"), meta.get("message"))
        await self.inbox.accept("slack", f"view:{view.get('id', '')}", thread, EVENT_KIND, orjson.dumps(body).decode())
        await ack()

    async def _process_submitted(self, body: dict[str, Any]) -> None:
        view = body["view"]
        meta = json.loads(view.get("private_metadata") or "{}")
        store = self.config().store(str(meta.get("store", "")))
        if store is None:
            return
        loc, tid, values = store.locale, str(meta["task"]), _view_values(view)
        user = body.get("user", {}).get("id", "")
        agent = store.agent(SERVICE, user)
        actor = Actor(SERVICE, user, str(meta.get("channel", "")), meta.get("message"), None)
        if agent is None:  # the modal opens only for agents; one removed from the file meanwhile is told so
            await self.chats.tell_privately(store, actor, t(loc, "task.guide.not_agent"), f"not-agent:{view.get('id')}")
            return
        files = values.files + await self.tasks.thread_files(store, tid)
        refused = await self._evidence_errors(loc, files)
        if refused:
            await self.tasks.keep_draft(store, tid, user, values.solution)  # the form, opened again, has it
            text = t(loc, "task.process.refused", task_id=tid, problems=refused)
            await self.chats.tell_privately(store, actor, text, f"evidence-refused:{view.get('id')}")
            return
        operator = (agent.id, agent.name)
        await self.tasks.process(
            store, tid, str(meta["result"]), values.solution, files, operator, actor, view.get("id", "view")
        )

    async def _evidence_errors(self, loc: str, files: list[dict[str, Any]]) -> str:
        return evidence_problems(loc, [(f["name"], await self._head(f["url"]), int(f.get("size", 0))) for f in files])

    async def _head(self, url: str) -> bytes:
        """The first bytes of a shared file: enough to tell its type. Slack unreachable is raised
        (the consumer tries again later), never taken for a file of the wrong type."""
        headers = {"Authorization": f"Bearer {self.settings.bot_token}", "Range": f"bytes=0-{SNIFF_BYTES - 1}"}
        try:
            async with self.http().get(url, headers=headers, timeout=self.sniff_timeout) as resp:
                if resp.status >= 500 or resp.status == 429:
                    raise ConnectionError(f"Slack file download: HTTP {resp.status}")
                return await resp.content.read(SNIFF_BYTES) if resp.status in (200, 206) else b""
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise ConnectionError(f"Slack file download: {exc}") from None

    async def _on_chat_action(self, ack: Callable[..., Awaitable[None]], body: dict[str, Any]) -> None:
        await ack()
        action = body["actions"][0]
        actor = _clicker(body)
        await self.router.chat_action(actor, action["action_id"], action.get("value", ""), body.get("trigger_id", ""))

    async def _on_task_comment_hint(self, ack: Callable[..., Awaitable[None]], body: dict[str, Any]) -> None:
        await ack()
        actor = _clicker(body)
        await self.router.explain_comments(actor, f"hint:{body.get('trigger_id')}")

    async def _on_tasks_command(self, ack: Callable[..., Awaitable[None]], command: dict[str, Any]) -> None:
        await ack()
        args = (command.get("text") or "").split()
        text, tag = await self.router.list_tasks(SERVICE, command.get("channel_id", ""), args)
        await self._answer(command, tag, text)

    async def _on_command(self, ack: Callable[..., Awaitable[None]], command: dict[str, Any]) -> None:
        """``/feige stats [period]``; ``/feige help``, or nothing, answers with what the bridge does
        in the channel and its commands; anything else too, saying first it is no command."""
        await ack()
        subcommand, *args = (command.get("text") or "").split() or [""]  # "/feige stats 7d"
        channel = command.get("channel_id", "")
        if subcommand.casefold() == "stats":
            text, tag = await self.router.stats(SERVICE, channel, args)
        else:
            asker = Actor(SERVICE, command.get("user_id", ""), channel)
            asked = "" if subcommand.casefold() in ("", "help") else f"/feige {subcommand}"
            text, tag = self.router.help_text(asker, SLASH_COMMANDS, asked)
        await self._answer(command, tag, text)

    async def _answer(self, command: dict[str, Any], tag: str, text: str) -> None:
        """A slash command's answer, only for the person who ran it, through its ``response_url``
        (the command was stored and acknowledged before it was handled)."""
        received = delivered_at(self.clock)
        job = OutboxJob(f"slack:respond:{command.get('trigger_id', '')}", RESPOND,
                        {"url": command.get("response_url", ""), "text": text},
                        expires_at=received + RESPONSE_URL_SECONDS)  # fmt: skip
        await self.outbox.enqueue(tag, f"private:slack:{command.get('user_id', '')}", job)

    async def _ack_action(self, ack: Callable[..., Awaitable[None]]) -> None:
        await ack()  # URL buttons (View details) still send an action that must be acknowledged

    # -- outbound (outbox senders) -------------------------------------------------------------------

    def senders(self) -> dict[str, Sender]:
        return {
            jobs.destination(SERVICE, jobs.POST): self._post,
            jobs.destination(SERVICE, jobs.UPDATE_ROOT): self._update_root,
            jobs.destination(SERVICE, jobs.EPHEMERAL): self._ephemeral,
            jobs.destination(SERVICE, jobs.REACT): self._react,
            jobs.destination(SERVICE, jobs.UPDATE_POST): self._update_post,
            RESPOND: self._respond,
        }

    async def fetch_file(self, url: str) -> bytes:
        """Downloads a file shared in Slack (url_private needs the bot token)."""
        headers = {"Authorization": f"Bearer {self.settings.bot_token}"}
        try:
            async with self.http().get(url, headers=headers) as resp:
                if resp.status >= 500 or resp.status == 429:
                    raise RetryLater(f"Slack file download: HTTP {resp.status}")
                if resp.status != 200:
                    raise FinalFailure(f"Slack file download refused: HTTP {resp.status}", status=resp.status)
                return await resp.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise RetryLater(f"Slack file download: {exc}") from None

    def _store(self, job: OutboxJob) -> Store | None:
        store_id = job.payload.get("store")
        return self.config().store(str(store_id)) if store_id else None

    async def _space(self, channel: str, job_id: str, not_after: float | None = None) -> bool:
        """Waits for the channel's spacing (RetryLater); once the post may go, its attempt is marked.
        Returns whether an earlier attempt of the job had marked it."""
        wait, tried = await self.spacing.reserve(channel, CHANNEL_SPACING_SECONDS, job_id, not_after,
                                                 attempt=slack_keys.post_attempt(job_id),
                                                 attempt_seconds=POST_ATTEMPT_SECONDS)  # fmt: skip
        if wait > 0:
            raise RetryLater(f"channel {channel} spacing", after=wait, pacing=True)
        return tried

    async def _post(self, job: OutboxJob) -> Recorded | None:
        p = job.payload
        tag, chat_key = str(p["tag"]), str(p["thread_key"])
        thread_ts: str | None = None
        if not p.get("root"):
            root = await refs.root_of(self.redis, tag, chat_key)
            if root is None:
                raise WaitingForRoot
            thread_ts = root[1]
        # The attempt is marked, and the post rendered, only once the spacing lets it go: the
        # spacing refuses most posts of a burst at first, and a refused post must not look like an
        # attempt. The mark learns of an earlier attempt in the same call.
        tried = await self._space(p["channel"], job.id, job.expires_at)
        text, blocks = render(self._store(job), p["view"])
        landed = await self._landed_before(p["channel"], thread_ts, job.id) if tried else None
        if landed is None:
            metadata = {"event_type": POST_METADATA, "event_payload": {"job": job.id}}
            try:
                resp = await _with_blocks(blocks, lambda shown: self.client.chat_postMessage(
                    channel=p["channel"], text=text, blocks=shown, thread_ts=thread_ts, metadata=metadata))  # fmt: skip
            except RetryLater as exc:
                if exc.after is not None:  # 429: the channel rests, and this post goes first after it
                    await self.spacing.hold(p["channel"], CHANNEL_SPACING_SECONDS, job.id, exc.after)
                    await self.redis.delete(slack_keys.post_attempt(job.id))  # refused: nothing landed
                raise
            landed = str(resp["ts"])
        if p.get("root"):
            return refs.root_records(tag, chat_key, SERVICE, str(p["channel"]), landed)
        return refs.posted_records(tag, job.id, SERVICE, str(p["channel"]), landed) if p.get("remember") else None

    async def _landed_before(self, channel: str, thread_ts: str | None, job_id: str) -> str | None:
        """This job was attempted before (a process may have died after Slack took the post and
        before it was recorded): the ts of the message it left, found by the job id in its
        metadata, so it is not posted twice."""
        if thread_ts is None:
            found = await _call(
                self.client.conversations_history(channel=channel, limit=100, include_all_metadata=True)
            )
        else:
            found = await _call(self.client.conversations_replies(channel=channel, ts=thread_ts, limit=200,
                                                                  include_all_metadata=True))  # fmt: skip
        for message in found.get("messages", []):
            meta = message.get("metadata") or {}
            if meta.get("event_type") == POST_METADATA and meta.get("event_payload", {}).get("job") == job_id:
                return str(message["ts"])
        return None

    async def _update_root(self, job: OutboxJob) -> Recorded | None:
        p = job.payload
        root = await refs.root_of(self.redis, str(p["tag"]), str(p["thread_key"]))
        if root is None:
            raise WaitingForRoot
        if not await self._edit(job, *root):
            # Someone deleted the header (a workspace admin tidying up): it is posted again, with its
            # buttons, as the thread's root from now on, by the post's own once-only path.
            log.warning("Slack %s: the header of %s is gone; posting it again", root[0], p["thread_key"])
            return await self._post(replace(job, payload=p | {"root": True, "channel": root[0]}))
        return None

    async def _update_post(self, job: OutboxJob) -> None:
        p = job.payload
        posted = await refs.posted_at(self.redis, str(p["tag"]), str(p["posted"]))
        if posted is not None:  # else never posted (it failed for good)
            await self._edit(job, *posted)  # deleted meanwhile: nothing left to change

    async def _edit(self, job: OutboxJob, channel: str, ts: str) -> bool:
        """Shows the job's view in the message at ``channel``/``ts``; False when it was deleted."""
        text, blocks = render(self._store(job), job.payload["view"])
        try:
            await _with_blocks(blocks, lambda shown: self.client.chat_update(channel=channel, ts=ts, text=text,
                                                                             blocks=shown))  # fmt: skip
        except FinalFailure as exc:
            if exc.code != "message_not_found":
                raise
            return False
        return True

    async def _ephemeral(self, job: OutboxJob) -> None:
        actor = job.payload["actor"]
        extra = {"thread_ts": actor["thread"]} if actor.get("thread") else {}
        await _call(
            self.client.chat_postEphemeral(
                channel=actor["channel"], user=actor["user"], text=escaped(job.payload["text"]), **extra
            )
        )

    async def _respond(self, job: OutboxJob) -> None:
        try:
            resp = await AsyncWebhookClient(job.payload["url"], session=self.http()).send(
                text=escaped(job.payload["text"]), response_type="ephemeral"
            )
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise RetryLater(f"Slack response_url unreachable: {exc}") from None
        if resp.status_code == 429:
            after = resp.headers.get("Retry-After") or resp.headers.get("retry-after")
            raise RetryLater("Slack rate limit (response_url)", after=float(after) if after else 1.0)
        if resp.status_code >= 500:
            raise RetryLater(f"Slack {resp.status_code} (response_url)")
        if resp.status_code != 200:
            raise FinalFailure(f"Slack refused the command's answer: {resp.body or resp.status_code}",
                               status=resp.status_code, code=resp.body)  # fmt: skip

    async def _react(self, job: OutboxJob) -> None:
        p = job.payload
        try:
            await _call(self.client.reactions_add(channel=p["channel"], timestamp=p["message"], name=p["emoji"]))
        except FinalFailure as exc:
            if exc.code == "message_not_found":
                # Its author deleted it meanwhile: a mark on nothing matters to no one (no dead letter).
                log.info("Slack %s %s: the message to mark is gone", p["channel"], p["message"])
            elif exc.code != "already_reacted":
                raise


def _clicker(body: dict[str, Any]) -> Actor:
    """Who clicked a button, answered in the thread of the message the button is on."""
    return Actor(SERVICE, body.get("user", {}).get("id", ""), body.get("channel", {}).get("id", ""),
                 body.get("container", {}).get("message_ts"), None)  # fmt: skip


def _not_taken(request: AsyncBoltRequest, status: int) -> bool:
    """A delivery bolt answered without storing it: authorization runs before the event is stored,
    and failed (auth.test: Slack unreachable since this process started). Slack must deliver it again."""
    return status == 200 and request.context.authorize_result is None and _durable_delivery(request.body) is not None


def _retry_number(req: AsyncBoltRequest) -> int:
    """Which retry of an event this is (0: the first delivery): Slack's ``X-Slack-Retry-Num``, which
    bolt also sets from a Socket Mode envelope's ``retry_attempt``."""
    value = (req.headers.get("x-slack-retry-num") or ["0"])[0]
    return int(value) if value.isdigit() else 0


def _durable_delivery(body: dict[str, Any]) -> tuple[str, str] | None:
    """(delivery id, ordering thread) of a request stored before the ack, or None for one answered
    in its response. Commands and clicks carry no delivery id: their ``trigger_id`` is unique."""
    if body.get("type") == "event_callback":
        event = body.get("event") or {}
        thread = inbox_thread(event.get("channel") or "-", event.get("thread_ts") or event.get("ts"))
        return str(body.get("event_id") or ""), thread
    if "command" in body:
        return f"command:{body.get('trigger_id', '')}", inbox_thread(body.get("channel_id") or "-")
    actions = body.get("actions") or [{}]
    if body.get("type") == "block_actions" and actions[0].get("action_id") in DURABLE_ACTIONS:
        thread = inbox_thread((body.get("channel") or {}).get("id") or "-",
                              (body.get("container") or {}).get("message_ts"))  # fmt: skip
        return f"action:{body.get('trigger_id', '')}", thread
    return None


@dataclass(frozen=True)
class _Submitted:
    solution: str
    confirmed: bool
    files: list[dict[str, Any]]


def _view_values(view: dict[str, Any]) -> _Submitted:
    """What the processing modal's fields hold."""
    values = view.get("state", {}).get("values", {})
    return _Submitted(
        slack_to_platform_text(str(values.get("solution", {}).get("solution", {}).get("value") or "")),
        bool(values.get("confirm", {}).get("confirm", {}).get("selected_options")),
        [_media(f) for f in values.get("evidence", {}).get("evidence", {}).get("files", []) or []],
    )


def _media(f: dict[str, Any]) -> dict[str, Any]:
    return {"service": "slack", "url": f.get("url_private", ""), "name": f.get("name", "file"),
            "mimetype": f.get("mimetype", ""), "size": int(f.get("size", 0))}  # fmt: skip


async def _with_blocks(blocks: list[dict[str, Any]], send: Callable[[list[dict[str, Any]]], Awaitable[Any]]) -> Any:
    """Sends a message's blocks. Slack downloads an image block's picture itself and refuses the
    whole message when it cannot (``invalid_blocks``: an address it cannot reach, not an image); the
    message then goes with the image as its link rather than not at all. (Refused, nothing was posted.)"""
    try:
        return await _call(send(blocks))
    except FinalFailure as exc:
        linked = images_as_links(blocks)
        if exc.code != "invalid_blocks" or linked is None:
            raise
        log.warning("Slack refused a message with an image (%s); sending the image as its link", exc)
        return await _call(send(linked))


async def _call(request: Awaitable[Any]) -> Any:
    """Runs one Web API call, sorting Slack's failures into retry-later and final."""
    try:
        return await request
    except SlackApiError as exc:
        status = exc.response.status_code
        error = str(exc.response.get("error", "")) if isinstance(exc.response.data, dict) else ""
        if status == 429 or error == "ratelimited":
            after = exc.response.headers.get("Retry-After") or exc.response.headers.get("retry-after")
            raise RetryLater(f"Slack rate limit ({error})", after=float(after) if after else 1.0) from None
        if status >= 500:
            raise RetryLater(f"Slack {status}: {error}") from None
        raise FinalFailure(f"Slack refused: {error or status}", status=status, code=error) from None
    except (TimeoutError, aiohttp.ClientError) as exc:
        raise RetryLater(f"Slack unreachable: {exc}") from None
