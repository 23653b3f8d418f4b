"""Flow 1 — platform customer service chats (PRODUCT A1–A9), platform-neutral.

Platform events arrive from the event consumer, replies from a destination connector, window steps
from the timer engine. This module decides with ``rules/`` and acts only by putting jobs in the
outbox: destination jobs (``<service>.post``, ``.update_root``, ``.ephemeral``, ``.react``) carry a
*view*, a plain dict the destination renders (Block Kit, Telegram HTML); platform jobs carry the
reply. Every job id is derived from what caused it, so handling an event twice sends nothing twice.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

import orjson
from redis.asyncio import Redis

from bridge.archive.store import Snapshot, moment
from bridge.config import BridgeConfig, Destination, Store
from bridge.engine import keys
from bridge.engine.clock import Clock
from bridge.engine.events import IN_FLIGHT_SECONDS, StoredEvent, delivered_at
from bridge.engine.metrics import METRICS
from bridge.engine.outbox import FailureReporter, FinalFailure, Outbox, OutboxJob
from bridge.engine.timers import Schedule, Timer, TimerChange, TimerStore
from bridge.flows import jobs
from bridge.flows.archiving import Read, Snapshots, archive_schedule, archive_soon, decode_recorded
from bridge.flows.domain import CLOSE_REASONS, ChatClosed, ChatMessage, Content, OtherContent
from bridge.flows.steps import take_steps
from bridge.flows.views import (
    Actor,
    ReplyMedia,
    post_view,
    read_hash,
    refusal_reason,
    remembered,
    retire,
    tell_privately,
)
from bridge.i18n import t
from rules.evidence import evidence_limits
from rules.permissions import Refusal, answer_refusal, assignment_refusal, handled_elsewhere_refusal
from rules.reply_window import WindowStep, next_step_at, window_start, window_steps
from rules.routing import route_by_saturation

log = logging.getLogger(__name__)

MENU_FIELD = "reassign_menu"
"""In a chat's hash: the Reassign… menu posted last in its thread (``views.remembered``), to retire
its buttons once a pick is made, another menu is offered or the chat closes."""


# Every script below is one step of the flow that is safe to run again: a handler that dies after
# it (or whose reply from Redis is lost) runs it a second time on retry and gets an answer that lets
# it finish the rest of its work, which is idempotent (outbox job ids), without counting anything twice.

# One platform message, in one step: creates the chat if it is new (assigned, with this first
# message), keeps the message for the archive (after a close too), and while the chat is open starts
# the reply window rules.window_start gave for a chat with none running. KEYS: chat, loads, messages. ARGV: assignee,
# now, destination, platform agent, message (view JSON), its id, the load table shown, its archive
# record (JSON), the window's start and deadline ('' for none), then (agent, expected load) pairs.
# A new chat is created only if those loads are still current; otherwise (and on a first call,
# which expects -1) the answer is {-1, load…} in the pairs' order: decide, and call again.
# A window starts unless one is running, or this message's window already ran (and was answered),
# or a reply came after the message was sent: a redelivered message never restarts the window of an
# answered chat. Returns {created (0/1), window (1: the running window is this message's, started
# now or by an earlier run of it), the chat's hash, flat}, so the caller needs no second read.
_RECEIVE = """
local created = 0
if redis.call('EXISTS', KEYS[1]) == 0 then
  local current, stale = {}, false
  for i = 11, #ARGV, 2 do
    local load = tonumber(redis.call('HGET', KEYS[2], ARGV[i]) or '0')
    current[#current + 1] = load
    if load ~= tonumber(ARGV[i + 1]) then stale = true end
  end
  if stale then return {-1, unpack(current)} end
  redis.call('HSET', KEYS[1], 'status', 'open', 'assignee', ARGV[1], 'started_at', ARGV[2],
             'destination', ARGV[3], 'platform_agent', ARGV[4], 'first_message', ARGV[5],
             'first_message_id', ARGV[6], 'loads', ARGV[7], 'window_start', '', 'first_reply_at', '')
  if ARGV[1] ~= '' then redis.call('HINCRBY', KEYS[2], ARGV[1], 1) end
  created = 1
end
local window = 0
redis.call('HSETNX', KEYS[3], ARGV[6], ARGV[8])
if redis.call('HGET', KEYS[1], 'status') == 'open' then
  local mine = redis.call('HGET', KEYS[1], 'window_msg') == ARGV[6]
  if redis.call('HGET', KEYS[1], 'window_start') ~= '' then
    if mine then window = 1 end
  elseif ARGV[9] ~= '' and not mine then
    local answered = tonumber(redis.call('HGET', KEYS[1], 'last_reply_at') or '')
    if not (answered and tonumber(ARGV[9]) <= answered) then
      redis.call('HSET', KEYS[1], 'window_start', ARGV[9], 'deadline', ARGV[10], 'window_msg', ARGV[6])
      window = 1
    end
  end
end
return {created, window, unpack(redis.call('HGETALL', KEYS[1]))}
"""

# KEYS: chat, loads. ARGV: new assignee, action id. Moves an open chat to another agent and its A3
# count with it, once per action. Returns {1, previous} when moved, {2} when this action moved it
# before (a retry: finish the follow-ups), {0} when it is theirs already, {-1} when not open.
_ASSIGN = """
if redis.call('HEXISTS', KEYS[1], 'assign:' .. ARGV[2]) == 1 then return {2} end
if redis.call('HGET', KEYS[1], 'status') ~= 'open' then return {-1} end
local before = redis.call('HGET', KEYS[1], 'assignee') or ''
if before == ARGV[1] then return {0} end
redis.call('HSET', KEYS[1], 'assignee', ARGV[1], 'assign:' .. ARGV[2], 1)
if before ~= '' and redis.call('HINCRBY', KEYS[2], before, -1) < 0 then redis.call('HSET', KEYS[2], before, 0) end
redis.call('HINCRBY', KEYS[2], ARGV[1], 1)
return {1, before}
"""

# KEYS: chat. ARGV: agent, now, action id. Marks an open chat handled elsewhere: its running window
# stops (no reminder, no local close). Returns 1 when marked, 2 when this action marked it before
# (a retry), -1 when the chat is not open.
_ELSEWHERE = """
if redis.call('HEXISTS', KEYS[1], 'elsewhere:' .. ARGV[3]) == 1 then return 2 end
if redis.call('HGET', KEYS[1], 'status') ~= 'open' then return -1 end
redis.call('HSET', KEYS[1], 'window_start', '', 'deadline', '', 'elsewhere_by', ARGV[1], 'elsewhere_at', ARGV[2],
           'elsewhere:' .. ARGV[3], 1)
return 1
"""

# KEYS: chat, loads. ARGV: reason, now, ticket. Returns 1 if this call closed it,
# 0 if it was closed before (the caller still finishes the close's follow-ups, which are idempotent).
_CLOSE = """
if redis.call('HGET', KEYS[1], 'status') ~= 'open' then return 0 end
redis.call('HSET', KEYS[1], 'status', 'closed', 'close_reason', ARGV[1], 'closed_at', ARGV[2], 'ticket', ARGV[3],
           'finished_at', ARGV[2])
local assignee = redis.call('HGET', KEYS[1], 'assignee')
if assignee and assignee ~= '' then
  if redis.call('HINCRBY', KEYS[2], assignee, -1) < 0 then redis.call('HSET', KEYS[2], assignee, 0) end
end
return 1
"""

# Accepts a reply: stops the window, marks it (the archive counts the marks, A9) and keeps it for the
# archive, once per reply however often it is handled. KEYS: chat, messages. ARGV: now, agent, reply
# id, its text (kept: what the platform has, should the author edit it), its archive record (JSON).
# Returns 'repeat' (accepted before: only finish its follow-ups), 'missing' (no such chat), 'closed',
# 'expired', 'first', 'again' (it stopped a window) or 'more' (no window was running: the chat's
# header does not change).
_ACCEPT = """
local marker = 'reply:' .. ARGV[3]
if redis.call('HEXISTS', KEYS[1], marker) == 1 then return {'repeat'} end
if redis.call('EXISTS', KEYS[1]) == 0 then return {'missing'} end
if redis.call('HGET', KEYS[1], 'status') ~= 'open' then return {'closed'} end
local now = tonumber(ARGV[1])
local running = redis.call('HGET', KEYS[1], 'window_start') ~= ''
if running and now >= tonumber(redis.call('HGET', KEYS[1], 'deadline')) then
  return {'expired'}
end
redis.call('HSET', KEYS[1], 'window_start', '', 'deadline', '', 'last_reply_at', ARGV[1], marker, ARGV[1],
           'sent:' .. ARGV[3], ARGV[4])
redis.call('HSETNX', KEYS[2], marker, ARGV[5])
if redis.call('HGET', KEYS[1], 'first_reply_at') == '' then
  redis.call('HSET', KEYS[1], 'first_reply_at', ARGV[1], 'first_reply_by', ARGV[2])
  local elapsed = math.max(0, now - tonumber(redis.call('HGET', KEYS[1], 'started_at')))
  return {'first', tostring(elapsed)}
end
if running then return {'again'} end
return {'more'}
"""

# Marks a reply refused as too late (the archive counts the marks, A9), once per reply, on a chat that
# still exists. KEYS: chat. ARGV: reply id.
_LATE = """
if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('HSETNX', KEYS[1], 'late:' .. ARGV[1], 1) end
return 1
"""


@dataclass(frozen=True)
class ReplyOutcome:
    accepted: bool
    refusal: Refusal | None = None


def _ts(iso: datetime) -> float:
    return iso.timestamp()


class ChatFlow:
    def __init__(self, redis: Redis, config: Any, timers: TimerStore, outbox: Outbox, clock: Clock) -> None:
        self.redis = redis
        self._config = config  # a callable returning the BridgeConfig in force
        self.timers = timers
        self.outbox = outbox
        self.clock = clock
        self._receive = redis.register_script(_RECEIVE)
        self._known_loads: dict[str, tuple[tuple[str, ...], list[int]]] = {}
        """By store tag: its candidates and their open chats as this process last learnt them. A new
        chat is decided with these and created in one call when they still hold (the script checks
        them), in two when another process or a close changed them meanwhile."""
        self._close = redis.register_script(_CLOSE)
        self._accept = redis.register_script(_ACCEPT)
        self._assign = redis.register_script(_ASSIGN)
        self._elsewhere = redis.register_script(_ELSEWHERE)
        self._late = redis.register_script(_LATE)
        self.snapshots = Snapshots(self._snapshot_reads, self._snapshot_rows)
        """What the archive reads of a chat, and the rows it makes of it."""

    @property
    def config(self) -> BridgeConfig:
        cfg: BridgeConfig = self._config()
        return cfg

    # -- platform events ---------------------------------------------------------------------------

    async def on_platform_message(self, event: StoredEvent) -> None:
        """Resumable: run again after a crash at any point, it finishes what the first run left and
        repeats nothing (the chat is created once, the window started once, posts queued once)."""
        msg = ChatMessage.model_validate_json(event.raw)
        store = self.config.store(event.endpoint.id)
        if store is None:
            return
        tag, cid = event.endpoint.tag, msg.conversation_id
        dest = Destination.parse(store.destinations.platform_chats)
        view = {"type": "platform_message", "content": _shown(msg.content, store.locale), "sender": msg.sender.name}
        created, window, chat = await self._receive_message(store, tag, cid, dest, view, msg)
        if created:
            METRICS.chats_opened.labels(store.id).inc()
        if chat.get("status") != "open":
            # Platform CS wrote to a chat the bridge has closed: its own window (2–3 minutes) outlasts
            # the bridge's, or the message came late. Mirrored all the same, so the team reads all it
            # said (an answer is refused, as in any closed chat), and kept with the chat's messages.
            archived = TimerChange([archive_schedule(self.clock.now(), tag, f"chat:{cid}")])
            await self._to_destination(store, dest, cid, f"pm:{msg.message_id}", "post", view, then=archived)
            return
        # The timers go with the last post, after it in the same round trip: a reminder is queued
        # behind the posts it refers to, never before the root. The archive's copy with it, last:
        # nothing waits on it, while the post does (a run that dies before them runs again whole).
        first = [] if window is None else self._first_window_step(store, tag, cid, window)
        timers = TimerChange([*first, archive_schedule(self.clock.now(), tag, f"chat:{cid}")])
        if chat.get("first_message_id") == msg.message_id:
            # The root carries the header, the assignee's mention and the first message: one post,
            # so a new chat shows up at once even where the channel allows one message a second.
            # It shows the deadline at once: ``chat`` was read after the window started.
            root_view = self._root_view(store, cid, chat)
            await self._to_destination(store, dest, cid, f"root:{cid}", "post", root_view, root=True, then=timers)
        elif window is None:
            await self._to_destination(store, dest, cid, f"pm:{msg.message_id}", "post", view, then=timers)
        else:
            await self._to_destination(store, dest, cid, f"pm:{msg.message_id}", "post", view)
            await self._update_root(store, tag, cid, f"window:{window}", then=timers)

    async def on_platform_closed(self, event: StoredEvent) -> None:
        closed = ChatClosed.model_validate_json(event.raw)
        store = self.config.store(event.endpoint.id)
        if store is not None:
            await self.close(store, closed.conversation_id, closed.reason, closed.service_ticket_id or "")

    # -- the window --------------------------------------------------------------------------------

    def _first_window_step(self, store: Store, tag: str, cid: str, started: float) -> list[Schedule]:
        """The window timer set for the first step of a window started at ``started`` (none when
        the window has no step left)."""
        first = next_step_at(self._steps(store, started), set())
        return [] if first is None else [(keys.window_timer(tag, cid), first, False)]

    def _steps(self, store: Store, started: float) -> list[Any]:
        w = store.reply_window
        steps = window_steps(started, w.seconds, w.reminders_before, w.escalate_before)
        # The close waits a few seconds past the deadline for replies received in time and not yet
        # handled (a backlog, a process that died holding one); the deadline itself does not move.
        return [replace(s, at=s.at + IN_FLIGHT_SECONDS) if s.kind == "close" else s for s in steps]

    async def on_window_timer(self, timer: Timer) -> None:
        _, tag, cid = keys.split_timer_key(timer.key)
        store = self.config.store(keys.store_of(tag) or "")
        if store is None:
            return
        chat = await self._chat(tag, cid)
        if chat.get("status") == "closed":
            # Closed, yet its timer fired: the close that cancels it died before its follow-ups.
            await self.close(store, cid, chat.get("close_reason", "reply_timeout"), chat.get("ticket", ""))
            return
        if chat.get("status") != "open" or not chat.get("window_start"):
            return
        started = float(chat["window_start"])
        close = float(chat["deadline"])  # a reminder that cannot arrive before it is not sent
        dest = Destination.parse(chat.get("destination") or store.destinations.platform_chats)

        steps = self._steps(store, started)
        assignee = chat.get("assignee") or ""
        others = [a.id for a in store.designated if a.id != assignee and a.im_permission]
        # An escalation due with a reminder goes in the reminder: one post, on time (the channel's
        # spacing would put a second one a second later, its "seconds left" a second wrong).
        joined = {s.at for s in steps if s.kind == "remind"} & {s.at for s in steps if s.kind == "escalate"}

        def countdown(key: str, step: WindowStep, **values: str) -> str:
            # The close's time beside the seconds left: a post the channel's queue held back still
            # says when the window closes.
            return t(store.locale, key, mention="{mention}", deadline="{deadline}",
                     seconds=step.seconds_left, **values)  # fmt: skip

        async def take(step: WindowStep) -> bool:
            job_id = f"{step.name}:{cid}:{started}"
            if step.kind == "close":
                await self.close(store, cid, "reply_timeout", "")
                return False
            if step.kind == "remind" and assignee:
                if others and step.at in joined:
                    text = countdown("chat.reminder_and_escalation", step, assignee=store.agent_name(assignee))
                    await self._notice(store, dest, cid, job_id, text, [assignee, *others], close)
                else:
                    await self._notice(store, dest, cid, job_id, countdown("chat.reminder", step), [assignee], close)
            if step.kind == "escalate" and others and not (assignee and step.at in joined):
                await self._notice(store, dest, cid, job_id, countdown("chat.escalation", step), others, close)
            return True

        await take_steps(self.timers, timer, keys.chat(tag, cid), chat, f"step:{started}:", steps, take)

    async def close(self, store: Store, cid: str, reason: str, ticket: str) -> bool:
        """Closes a chat (A6): idempotent, and resumable — a call on a chat already closed finishes
        the close's follow-ups a crashed call may have left (each queued once). True only for the
        call that closed it."""
        tag = keys.store_tag(store.id)
        closed = int(
            await self._close(
                keys=[keys.chat(tag, cid), keys.agent_load(tag)],
                args=[reason, self.clock.now(), ticket],
            )
        )
        chat = await self._chat(tag, cid)
        if chat.get("status") != "closed":
            return False
        if closed:
            METRICS.chats_closed.labels(store.id, chat.get("close_reason", reason)).inc()
            if chat.get("close_reason") == "reply_timeout" and chat.get("assignee"):
                METRICS.chats_lost.labels(store.id, chat["assignee"]).inc()
        await self._changed(tag, cid)
        forget_at = float(chat.get("closed_at") or self.clock.now()) + keys.FINISHED_KEEP_SECONDS
        await self.timers.schedule(keys.forget_timer(tag, f"chat:{cid}"), forget_at)
        dest = Destination.parse(chat.get("destination") or store.destinations.platform_chats)
        await self._retire_menu(store, dest, cid, chat)
        await self._update_root(store, tag, cid, "closed")
        text = t(store.locale, "chat.closed_notice", reason=self._reason_text(store, chat))
        await self._notice(store, dest, cid, f"closed:{cid}", text)
        # Last: when the window's own timer is closing it, that timer is what retries this call.
        await self.timers.cancel(keys.window_timer(tag, cid))
        return bool(closed)

    # -- replies from a destination ------------------------------------------------------------------

    async def reply(
        self, store: Store, cid: str | None, actor: Actor, text: str, media: Sequence[ReplyMedia] = ()
    ) -> ReplyOutcome:
        """A message written in the store's chat destination, by ``actor``; ``cid`` is the chat
        whose thread it was written in (None: not in a chat's thread)."""
        tag = keys.store_tag(store.id)
        agent = store.agent(actor.service, actor.user)
        designated = agent is not None and agent.id in {a.id for a in store.designated}
        im_permission, has_content = bool(agent and agent.im_permission), bool(text.strip() or media)
        state = ""
        if agent is not None and cid is not None and answer_refusal(
            in_chat_thread=True, designated=designated, im_permission=im_permission, chat_open=True,
            has_content=has_content,
        ) is None:  # fmt: skip
            # All that does not depend on the chat allows it: the script checks the chat itself, so
            # an answer reads nothing first; the chat is read only to explain a refusal.
            written = delivered_at(self.clock)  # judged by when the bridge received it
            sent = {"at": written, "direction": "merchant", "author": agent.name, "author_id": agent.id,
                    "kind": "image" if media and not text.strip() else "text",
                    "text": text + "".join(f" [{m.name}]" for m in media)}  # fmt: skip
            state, *rest = await self._accept(
                keys=[keys.chat(tag, cid), keys.chat_messages(tag, cid)],
                args=[written, agent.id, str(actor.message), text, orjson.dumps(sent).decode()],
            )
            if state in ("first", "again", "more", "repeat"):
                if state != "repeat":  # counted in Redis by the script; these are this process's metrics
                    METRICS.replies.labels(store.id, agent.id, "yes").inc()
                    if state == "first":
                        METRICS.first_reply.labels(store.id, agent.id).observe(float(rest[0]))
                chat = await self._send_reply(store, tag, cid, agent.id, actor, text, media)
                if chat.get("window_start"):  # the next window had started: it gets its timer back
                    await self.timers.change(self._first_window_step(store, tag, cid, float(chat["window_start"])))
                if state != "more" or chat.get("window_start"):
                    # A further reply while no window runs leaves the header as it was: not edited
                    # again (an edit per message of a merchant who writes several in a row).
                    await self._update_root(store, tag, cid, f"answered:{actor.message}", chat)
                return ReplyOutcome(True)
            if state == "expired":
                await self.close(store, cid, "reply_timeout", "")
        chat = await self._chat(tag, cid) if cid else {}
        refusal = answer_refusal(
            in_chat_thread=bool(chat) and state != "missing",
            designated=designated,
            im_permission=im_permission,
            chat_open=chat.get("status") == "open" and state not in ("closed", "expired"),
            has_content=has_content,
        )
        if refusal is not None:
            if refusal is Refusal.CLOSED and agent is not None and cid is not None:
                await self._late(keys=[keys.chat(tag, cid)], args=[str(actor.message)])
                await self._changed(tag, cid)
            await self._refuse(store, actor, refusal, chat, agent.id if agent else actor.user)
        return ReplyOutcome(False, refusal)

    async def _send_reply(
        self, store: Store, tag: str, cid: str, agent_id: str, actor: Actor, text: str, media: Sequence[ReplyMedia]
    ) -> dict[str, str]:
        """Queues the reply's parts; with the last, in the same round trip, the answered window's
        timer is cancelled and the chat's archive copy set (after the send, as for a platform
        message: the send goes first), and the chat is read after the cancel, and returned. A
        platform message may have started the next window meanwhile (this reply handled again after
        a crash): read after the cancel, that window gets its timer back, whichever order the two
        processes ran in."""
        dest = Destination.parse(store.destinations.platform_chats)
        react = {
            "tag": tag,
            "thread": f"chat:{cid}:{dest.service}",
            "job": vars(
                OutboxJob(
                    f"react:{actor.channel}:{actor.message}",
                    jobs.destination(dest.service, jobs.REACT),
                    {
                        "store": store.id,
                        "channel": actor.channel,
                        "message": actor.message,
                        "emoji": "white_check_mark",
                    },
                )
            ),
        }
        report = actor.as_dict() | {"store": store.id, "chat": cid, "locale": store.locale}
        parts: list[tuple[str, dict[str, Any]]] = []
        if text.strip():
            parts.append((jobs.SEND_MESSAGE, {"content": {"type": "text", "text": text}}))
        for i, item in enumerate(media):
            parts.append((jobs.SEND_IMAGE, {"media": vars(item), "index": i}))
        queued: list[OutboxJob] = []
        for i, (kind, extra) in enumerate(parts):
            payload = {"endpoint": f"store:{store.id}", "conversation_id": cid, "agent_id": agent_id} | extra
            # A reply matters while its chat is open; after that it is dead-lettered and its author told.
            queued.append(OutboxJob(
                f"reply:{actor.channel}:{actor.message}:{i}",
                kind,
                payload,
                report_to=report,
                then=[react] if i == len(parts) - 1 else None,
                relevant_key=keys.chat(tag, cid),
                relevant_grace=0.0,
            ))  # fmt: skip
        *first, last = queued  # a reply has content: at least one part
        for job in first:
            await self.outbox.enqueue(tag, f"chat:{cid}:platform", job)
        answered = TimerChange([archive_schedule(self.clock.now(), tag, f"chat:{cid}")],
                               cancels=[keys.window_timer(tag, cid)], read_after=keys.chat(tag, cid))  # fmt: skip
        return await self.outbox.enqueue_then(tag, f"chat:{cid}:platform", last, answered)

    def failure_reporters(self) -> dict[str, FailureReporter]:
        return {jobs.SEND_MESSAGE: self.on_reply_failed, jobs.SEND_IMAGE: self.on_reply_failed}

    async def on_reply_failed(self, job: OutboxJob, failure: FinalFailure, tag: str) -> None:
        """The platform refused a reply for good: tell its author; a 409 means the chat is closed
        on the platform's side, so it is closed here too."""
        report = job.report_to or {}
        store = self.config.store(str(report.get("store", "")))
        if store is None:
            return
        if failure.status == 409 and "chat" in report:
            await self.close(store, str(report["chat"]), "platform_closed", "")
        locale = str(report.get("locale") or store.locale)
        if failure.status == 403:
            # The platform says the agent lacks IM permission (A2), which the store's config did not
            # know: they are told how to get it, as when the config says so.
            text = t(locale, Refusal.NO_IM_PERMISSION.value, agent=str(job.payload.get("agent_id", "")))
        elif failure.status == 409:  # as a reply to a chat the bridge closed reads
            text = t(locale, Refusal.CLOSED.value, reason=t(locale, "chat.reason.platform_closed"))
        else:
            reason = refusal_reason(locale, failure)
            if failure.code == jobs.IMAGE_REFUSED:
                reason = t(locale, "reply.reason.image", name=job.payload["media"]["name"], **evidence_limits())
            text = t(locale, "reply.failed", reason=reason)
        await self.tell_privately(store, Actor.reported(report), text, f"failed:{job.id}")

    # -- the archive ---------------------------------------------------------------------------------

    async def _changed(self, tag: str, cid: str) -> None:
        await archive_soon(self.timers, self.clock.now(), tag, f"chat:{cid}")

    @staticmethod
    def _snapshot_reads(tag: str, cid: str) -> list[Read]:
        return [("hgetall", keys.chat(tag, cid)), ("hgetall", keys.chat_messages(tag, cid))]

    def _snapshot_rows(self, tag: str, cid: str, found: list[Any]) -> Snapshot | None:
        """The chat as archive rows, A9's figures worked out; None when its state is gone."""
        chat, kept = found
        if not chat.get("started_at"):
            return None
        store_id = keys.store_of(tag) or ""
        messages = decode_recorded(kept)
        row = chat_row(store_id, cid, chat, messages.values(), snapshot_at=self.clock.now())
        rows = [{"store_id": store_id, "conversation_id": cid, "message_id": message_id,
                 "at": moment(m["at"]), "direction": m["direction"], "author": m["author"],
                 "author_id": m["author_id"], "kind": m["kind"], "text": m["text"]}
                for message_id, m in messages.items()]  # fmt: skip
        return {"chats": [row], "chat_messages": rows}

    async def forget_state(self, tag: str, cid: str) -> None:
        """A closed, archived chat leaves Redis (its thread's refs expire by themselves)."""
        await self.redis.delete(keys.chat(tag, cid), keys.chat_messages(tag, cid))

    # -- helpers -------------------------------------------------------------------------------------

    async def _receive_message(
        self, store: Store, tag: str, cid: str, dest: Destination, view: dict[str, Any], msg: ChatMessage
    ) -> tuple[bool, float | None, dict[str, str]]:
        """Creates and assigns the chat with this first message (A3) unless it exists, keeps the
        message, and starts its reply window (A4). Returns whether this call created the chat, the
        start of the window this message started (now or in an earlier run of it; None when none),
        and the chat as it is now."""
        candidates = tuple(a.id for a in store.designated if a.im_permission)
        known = self._known_loads.get(tag)
        sent_at = _ts(msg.sent_at)
        started = window_start(None, sent_at, msg.awaiting_reply)  # with none running; the script checks
        deadline: str | float = "" if started is None else started + store.reply_window.seconds
        archived = orjson.dumps(_platform_message(msg)).decode()
        # Unknown until Redis says (the first call then expects -1, which no count is).
        loads: list[int] | None = known[1] if known is not None and known[0] == candidates else None
        for _ in range(20):
            counts = dict(zip(candidates, [-1] * len(candidates) if loads is None else loads, strict=True))
            chosen = "" if loads is None else route_by_saturation(candidates, counts) or ""
            table = ", ".join(f"{a.name} {counts.get(a.id, 0)}" for a in store.designated if a.im_permission)
            args: list[str | int | float] = [chosen, self.clock.now(), str(dest), msg.sender.name,
                                             orjson.dumps(view).decode(), msg.message_id, table, archived,
                                             "" if started is None else started, deadline]  # fmt: skip
            for agent, count in counts.items():
                args += [agent, count]
            code, *rest = await self._receive(
                keys=[keys.chat(tag, cid), keys.agent_load(tag), keys.chat_messages(tag, cid)], args=args
            )
            if int(code) < 0:
                loads = [int(n) for n in rest]  # a new chat: decide with these, and ask again
                self._known_loads[tag] = (candidates, loads)
                continue
            if int(code) == 1 and loads is not None:  # created with these: the chosen one has one more
                now_open = [n + (agent == chosen) for agent, n in zip(candidates, loads, strict=True)]
                self._known_loads[tag] = (candidates, now_open)
            window, *fields = rest
            chat = {str(k): str(v) for k, v in zip(fields[::2], fields[1::2], strict=True)}
            return int(code) == 1, float(chat["window_start"]) if int(window) else None, chat
        raise RuntimeError(f"store {store.id}: could not assign chat {cid}: loads kept changing")

    async def _chat(self, tag: str, cid: str) -> dict[str, str]:
        return await self._hash(keys.chat(tag, cid))

    async def _hash(self, key: str) -> dict[str, str]:
        return await read_hash(self.redis, key)

    def _reason_text(self, store: Store, chat: dict[str, str]) -> str:
        reason = chat.get("close_reason", "platform_closed")
        key = f"chat.reason.{reason}" if reason in CLOSE_REASONS else "chat.reason.other"
        return t(store.locale, key, ticket=chat.get("ticket", ""), reason=reason)

    def _root_view(self, store: Store, cid: str, chat: dict[str, str]) -> dict[str, Any]:
        status = chat.get("status", "open")
        if status == "closed":
            line = t(store.locale, "chat.status.closed", reason=self._reason_text(store, chat))
        elif chat.get("window_start"):
            seconds = store.reply_window.seconds
            line = t(store.locale, "chat.status.waiting", deadline="{deadline}", seconds=seconds)
        elif chat.get("elsewhere_by"):
            who = store.agent_name(chat["elsewhere_by"])
            line = t(store.locale, "chat.status.elsewhere", by=who)
        elif chat.get("first_reply_at"):
            line = t(store.locale, "chat.status.answered")
        else:
            line = ""
        return {
            "type": "chat_root",
            "title": t(store.locale, "chat.header"),
            "platform_agent": t(store.locale, "chat.header.platform_agent", name=chat.get("platform_agent", "")),
            "assignee": t(store.locale, "chat.header.assignee", mention="{mention}", loads=chat.get("loads", ""))
            if chat.get("assignee")
            else "",
            "first_message": orjson.loads(chat["first_message"]) if chat.get("first_message") else None,
            "status_line": line,
            "status": status if status == "closed" else ("waiting" if chat.get("window_start") else "answered"),
            "topic": t(store.locale, "chat.topic", summary=_summary(chat.get("first_message"))),
            "deadline": float(chat["deadline"]) if chat.get("deadline") else None,
            "mentions": [chat["assignee"]] if chat.get("assignee") else [],
            "buttons": [
                {"label": t(store.locale, "chat.button.claim"), "action": "chat_claim", "value": cid, "short": "cl"},
                {"label": t(store.locale, "chat.button.reassign"), "action": "chat_reassign", "value": cid,
                 "short": "ra"},
                {"label": t(store.locale, "chat.button.elsewhere"), "action": "chat_elsewhere", "value": cid,
                 "short": "ew"},
            ] if status == "open" else [],
        }  # fmt: skip

    async def _update_root(
        self,
        store: Store,
        tag: str,
        cid: str,
        cause: str,
        chat: dict[str, str] | None = None,
        then: TimerChange | None = None,
    ) -> None:
        """Queues the header as the chat is now (``chat``: just read by the caller); ``then``: the
        timers changed after it, in the same round trip."""
        chat = chat if chat is not None else await self._chat(tag, cid)
        dest = Destination.parse(chat.get("destination") or store.destinations.platform_chats)
        view = self._root_view(store, cid, chat)
        await self._to_destination(store, dest, cid, f"root:{cid}:{cause}", "update_root", view, then=then)

    async def _notice(
        self,
        store: Store,
        dest: Destination,
        cid: str,
        job_id: str,
        text: str,
        mentions: Sequence[str] = (),
        window_close: float | None = None,
    ) -> None:
        """A notice in the chat's thread; one about a window (``window_close``) is not sent after the
        close, and shows its time where the text says ``{deadline}``."""
        view = {"type": "notice", "text": text, "mentions": list(mentions), "expires_at": window_close,
                "deadline": window_close}  # fmt: skip
        await self._to_destination(store, dest, cid, job_id, "post", view)

    async def _to_destination(
        self,
        store: Store,
        dest: Destination,
        cid: str,
        job_id: str,
        action: str,
        view: dict[str, Any],
        root: bool = False,
        then: TimerChange | None = None,
        remember: bool = False,
        changes: str | None = None,
    ) -> dict[str, str]:
        tag = keys.store_tag(store.id)
        return await post_view(self.outbox, tag, f"chat:{cid}", store.id, dest, job_id, action, view, root,
                               keys.chat(tag, cid), then, remember=remember, changes=changes)  # fmt: skip

    async def _retire_menu(
        self, store: Store, dest: Destination, cid: str, chat: dict[str, str], keep: str | None = None
    ) -> None:
        """The Reassign… menu posted last in the chat's thread keeps its text and loses its buttons:
        a pick was made, another menu offered, or the chat closed. ``keep``: the job of a menu being
        offered, which an offer handled again finds stored and must leave as it is."""
        if chat.get(MENU_FIELD) and orjson.loads(chat[MENU_FIELD])["job"] != keep:
            tag = keys.store_tag(store.id)
            await retire(self.outbox, tag, f"chat:{cid}", store.id, dest, chat[MENU_FIELD],
                         relevant_key=keys.chat(tag, cid))  # fmt: skip

    async def _refuse(
        self, store: Store, actor: Actor, refusal: Refusal, chat: dict[str, str], agent_label: str
    ) -> None:
        text = t(store.locale, refusal.value, agent=agent_label, reason=self._reason_text(store, chat) if chat else "")
        await self.tell_privately(store, actor, text, f"refuse:{actor.channel}:{actor.message}")

    async def tell_privately(self, store: Store, actor: Actor, text: str, job_id: str) -> None:
        await tell_privately(self.outbox, store, actor, text, job_id)

    # -- claim and reassign (A3) ---------------------------------------------------------------------

    async def assign(self, store: Store, cid: str, target_id: str | None, actor: Actor, action_id: str) -> None:
        """Claim (``target_id`` None: the person who acted) or reassign an open chat; the header, the
        thread and the load table follow. A refusal is told privately."""
        tag = keys.store_tag(store.id)
        by = store.agent(actor.service, actor.user)
        designated = {a.id for a in store.designated if a.im_permission}
        target = target_id or (by.id if by else "")
        chat = await self._chat(tag, cid)
        refusal = assignment_refusal(
            chat_open=chat.get("status") == "open",
            by_designated=by is not None and by.id in designated,
            by_main_account=by is not None and by.id == store.main_account,
            to_self=target_id is None or (by is not None and target == by.id),
            target_designated=target in designated,
        )
        if refusal is not None:
            text = t(store.locale, refusal.value, agent=target, reason=self._reason_text(store, chat) if chat else "")
            await self.tell_privately(store, actor, text, f"assign-refused:{action_id}")
            return
        assert by is not None
        moved, *_ = await self._assign(keys=[keys.chat(tag, cid), keys.agent_load(tag)], args=[target, action_id])
        if int(moved) not in (1, 2):
            return  # theirs already (or closed meanwhile): nothing changes
        await self._changed(tag, cid)
        # What follows runs again on a retry and is idempotent by its job ids.
        dest = Destination.parse(chat.get("destination") or store.destinations.platform_chats)
        await self._retire_menu(store, dest, cid, chat)
        text = t(store.locale, "chat.assigned", by=by.name, mention="{mention}")
        await self._notice(store, dest, cid, f"assigned:{action_id}", text, [target])
        await self._update_root(store, tag, cid, f"assigned:{action_id}")

    async def handled_elsewhere(self, store: Store, cid: str, actor: Actor, action_id: str) -> None:
        """Handled elsewhere: the running window's reminders and close stop (a later platform message
        starts a new one, as after a reply); the header and the thread say who said so."""
        tag = keys.store_tag(store.id)
        by = store.agent(actor.service, actor.user)
        chat = await self._chat(tag, cid)
        refusal = handled_elsewhere_refusal(
            chat_open=chat.get("status") == "open",
            by_designated=by is not None and by.id in {a.id for a in store.designated},
        )
        if refusal is not None or by is None:
            text = t(store.locale, (refusal or Refusal.NOT_AGENT).value, agent=actor.user,
                     reason=self._reason_text(store, chat) if chat else "")  # fmt: skip
            await self.tell_privately(store, actor, text, f"elsewhere-refused:{action_id}")
            return
        marked = int(await self._elsewhere(keys=[keys.chat(tag, cid)], args=[by.id, self.clock.now(), action_id]))
        if marked < 0:
            return
        await self._changed(tag, cid)
        # Follow-ups, again on a retry (idempotent); the timer is cancelled last.
        dest = Destination.parse(chat.get("destination") or store.destinations.platform_chats)
        await self._notice(store, dest, cid, f"elsewhere:{action_id}", t(store.locale, "chat.elsewhere", by=by.name))
        await self._update_root(store, tag, cid, f"elsewhere:{action_id}")
        await self.timers.cancel(keys.window_timer(tag, cid))

    async def offer_reassign(self, store: Store, cid: str, actor: Actor, action_id: str) -> None:
        """Reassign…: the designated agents as buttons in the chat's thread, for the main account."""
        by = store.agent(actor.service, actor.user)
        tag = keys.store_tag(store.id)
        chat = await self._chat(tag, cid)
        if by is None or by.id != store.main_account or chat.get("status") != "open":
            refusal = Refusal.CLOSED if chat.get("status") != "open" else Refusal.NOT_MAIN
            text = t(store.locale, refusal.value, reason=self._reason_text(store, chat) if chat else "")
            await self.tell_privately(store, actor, text, f"assign-refused:{action_id}")
            return
        buttons = [{"label": a.name, "action": "chat_assign_to", "value": f"{cid}:{a.id}", "short": "at"}
                   for a in store.designated if a.im_permission and a.id != chat.get("assignee")]  # fmt: skip
        dest = Destination.parse(chat.get("destination") or store.destinations.platform_chats)
        view = {"type": "notice", "text": t(store.locale, "chat.reassign.pick", mention="{mention}"),
                "mentions": [by.id], "buttons": buttons}  # fmt: skip
        job_id = f"reassign:{action_id}"
        await self._retire_menu(store, dest, cid, chat, keep=job_id)  # one menu at a time: the newest
        await self._to_destination(store, dest, cid, job_id, jobs.POST, view, remember=True)
        await self.redis.hset(keys.chat(tag, cid), MENU_FIELD, remembered(job_id, view))


def _shown(content: Content, locale: str) -> dict[str, Any]:
    """A platform message as the team sees it: as sent, or, of a kind the bridge cannot show, a
    pointer to Feige (the window runs all the same: the answer is written here)."""
    if isinstance(content, OtherContent):
        return {"type": "text", "text": t(locale, "chat.unsupported", kind=content.type)}
    return content.model_dump()


def _platform_message(msg: ChatMessage) -> dict[str, Any]:
    content = msg.content
    if isinstance(content, OtherContent):  # kept whole: the archive holds what was sent
        text, order_id = orjson.dumps(content.model_dump()).decode(), ""
    elif content.type == "text":
        text, order_id = content.text, ""
    elif content.type == "image":
        text, order_id = content.url, ""
    else:
        text, order_id = f"{content.order_id} {content.product_name}", content.order_id
    return {"at": _ts(msg.sent_at), "direction": "platform", "author": msg.sender.name,
            "author_id": msg.sender.agent_id, "kind": content.type, "text": text, "order_id": order_id}  # fmt: skip


def chat_row(
    store_id: str, cid: str, chat: dict[str, str], messages: Iterable[dict[str, Any]], snapshot_at: float
) -> dict[str, Any]:
    """One chat's archive row: when it opened, was first answered (and how fast), how it closed, and
    whether every window of it was answered in time (A9)."""
    messages = list(messages)
    started = float(chat["started_at"])
    first = float(chat["first_reply_at"]) if chat.get("first_reply_at") else None
    timed_out = chat.get("close_reason") == "reply_timeout"
    return {
        "store_id": store_id,
        "conversation_id": cid,
        "status": chat.get("status", "open"),
        "order_id": next((m["order_id"] for m in messages if m.get("order_id")), ""),
        "platform_agent": chat.get("platform_agent", ""),
        "assignee": chat.get("assignee", ""),
        "opened_at": moment(started),
        "first_reply_at": moment(first),
        "first_reply_by": chat.get("first_reply_by", ""),
        "first_reply_seconds": max(0.0, first - started) if first is not None else None,
        "replies": sum(1 for f in chat if f.startswith("reply:")),
        "late_replies": sum(1 for f in chat if f.startswith("late:")),
        "closed_at": moment(chat.get("closed_at")),
        "close_reason": chat.get("close_reason", ""),
        "ticket": chat.get("ticket", ""),
        "in_window": first is not None and not timed_out,
        "handled_elsewhere_by": chat.get("elsewhere_by", ""),
        "snapshot_at": int(snapshot_at * 1000),
    }


def _summary(first_message: str | None) -> str:
    """A few words that tell one chat from another in a list of threads (a forum's topics)."""
    if not first_message:
        return ""
    content = orjson.loads(first_message)["content"]
    if content["type"] == "order_card":
        return f"🧾 {content['order_id']} {content['product_name']}"[:60]
    if content["type"] == "image":
        return "🖼"
    text = " ".join(str(content.get("text", "")).split())
    return text if len(text) <= 40 else text[:39] + "…"
