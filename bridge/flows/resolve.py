"""Resolve / Cannot resolve as a guided conversation in the task order's thread, for destinations
without modals (Telegram; any tool added later gets it as it is): result (the button tapped) →
solution → evidence → confirm. The checks are the same as a modal's (B7 evidence, B8 solution);
nothing is sent until the last step is confirmed, and then through ``TaskFlow.process``.

The conversation's state is a Redis hash per task order and person (``keys.task_resolve``): any
replica continues it, and a restart loses nothing. Steps are posted under the card mentioning the
person, with their buttons (``short`` codes, which fit destinations whose button data is small); a
question loses its buttons once its step is past. A conversation left an hour without a step ends
(its timer, ``keys.resolve_timer``): its question says so and loses its buttons, and nothing is sent.

Each message or tap is handled again after a crash or a Redis error, so a step queues what it
posts first (its job ids name the message or tap: queued again, nothing is posted twice) and then
saves the conversation's next state together with ``done:<message or tap>`` in one transaction.
Handled again after that save, the step finds its mark and does nothing more: a message is never
taken for the answer to the step it led to (a solution for missing evidence), a tap never finds
its own next step and does nothing, and a file is never taken twice. A conversation that ended
keeps the mark of the tap that ended it, with that tap's answer, for an hour (step ``ended``).
"""

from __future__ import annotations

import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson
from redis.asyncio import Redis

from bridge.config import Agent, Destination, Store
from bridge.engine import keys
from bridge.engine.outbox import Outbox
from bridge.engine.timers import Timer
from bridge.flows import jobs
from bridge.flows.router import Inbound
from bridge.flows.task_records import status_name
from bridge.flows.tasks import TaskFlow, evidence_count_problem, evidence_problems
from bridge.flows.views import Actor, ReplyMedia, post_view, react, read_hash, remembered, retire, tell
from bridge.i18n import t
from rules.evidence import evidence_limits
from rules.solution import solution_refusal

CONVERSATION_SECONDS = 3600
"""A conversation left this long without a step ends, nothing sent."""
STATE_KEPT_SECONDS = CONVERSATION_SECONDS + 24 * 3600
"""Its state outlives that end, so the timer that ends it finds its question to retire however late
the workers are; a step after the end is not taken (``_state``)."""
ENDED = "ended"
"""The step of a conversation that was sent or cancelled: kept only for its ``done:`` marks."""
RESULTS = {"rs": "resolved", "ur": "unresolvable"}
"""The card's buttons that start a conversation, by short code."""
KEEP, DONE, SEND, CANCEL = "pk", "pd", "py", "pc"
STEP_BUTTONS = (KEEP, DONE, SEND, CANCEL)
_LABELS = {KEEP: "task.button.keep", DONE: "task.button.done", SEND: "task.button.send", CANCEL: "task.button.cancel"}


class TooLargeToFetch(Exception):
    """The service does not let the bot download a file this large."""

    def __init__(self, limit_bytes: int) -> None:
        super().__init__(f"over {limit_bytes} bytes")
        self.limit_bytes = limit_bytes


HeadFetcher = Callable[[str, int], Awaitable[bytes]]
"""(file reference, size) → the file's first bytes (``rules.evidence.SNIFF_BYTES``); raises
``TooLargeToFetch``, or an error to try again later (the event is retried, the file not refused)."""


class ResolveConversation:
    def __init__(self, redis: Redis, outbox: Outbox, tasks: TaskFlow) -> None:
        self.redis = redis
        self.outbox = outbox
        self.tasks = tasks
        self.clock = tasks.clock
        self.timers = tasks.timers
        self.heads: dict[str, HeadFetcher] = {}
        """By service: how to read the first bytes of a file a person sent there."""
        self.download_limits: dict[str, int] = {}
        """By service: the largest file its bot may download, when it has such a limit (bytes)."""

    # -- entry points ------------------------------------------------------------------------------

    async def start(self, store: Store, tid: str, short: str, actor: Actor, at: str) -> str | None:
        """Resolve / Cannot resolve tapped: step 1, the solution. Returns a refusal for the tap's
        answer. ``at`` names the tap (a step is posted once however often it is retried)."""
        loc, agent = store.locale, store.agent(actor.service, actor.user)
        if agent is None:
            return t(loc, "task.guide.not_agent")
        status = await self.tasks.status_of(store, tid)
        if status != "pending":
            return t(loc, "task.process.not_pending", status=status_name(loc, status))
        conv = _Keys.of(keys.store_tag(store.id), tid, actor.user)
        state = await read_hash(self.redis, conv.state)  # one left past its hour too: its question is retired here
        if state.get("started") != at:  # else this tap began it before, and is handled again
            await self._retire(store, tid, state)  # a conversation begun earlier starts over
            await self._expire_later(conv)
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.delete(conv.state)
                started: dict[Any, Any] = {"result": RESULTS[short], "step": "solution", "files": "[]", "started": at,
                                           "last_at": str(self.clock.now())}  # fmt: skip
                pipe.hset(conv.state, mapping=started)
                pipe.expire(conv.state, STATE_KEPT_SECONDS)
                await pipe.execute()
        action = t(loc, f"task.button.{'resolve' if short == 'rs' else 'unresolvable'}")
        text = t(loc, "task.guide.solution", mention="{mention}", action=action, task_id=tid)
        prompt = await self._prompt(store, tid, agent, at, "solution", text, [CANCEL], {})
        await self._save(conv, "", prompt=prompt)
        return None

    async def on_message(self, store: Store, tid: str, inbound: Inbound) -> bool:
        """A message under the card from someone in the middle of resolving it: the step's answer.
        False when they are not, so the message is an ordinary comment."""
        actor = inbound.actor
        conv = _Keys.of(keys.store_tag(store.id), tid, actor.user)
        state = await self._state(conv)
        agent = store.agent(actor.service, actor.user)
        loc, at = store.locale, actor.message or ""
        if _done(state, at):
            return True  # handled before, to its end
        if not state or state["step"] == ENDED or agent is None:
            return False
        step = state["step"]
        if step in ("solution", "weak"):
            refusal = solution_refusal(inbound.text, confirmed=False)
            if refusal == "empty":
                await self._reply(store, actor, at, t(loc, "task.process.empty"))
                return True
            if refusal == "unconfirmed":
                prompt = await self._prompt(store, tid, agent, at, "weak", t(loc, "task.guide.weak"), [KEEP, CANCEL],
                                            state)  # fmt: skip
                await self._save(conv, at, solution=inbound.text, step="weak", prompt=prompt)
            else:
                await self._ask_evidence(store, tid, agent, actor, at, conv, state, solution=inbound.text)
        elif step == "evidence":
            if not inbound.media:
                await self._reply(store, actor, at, t(loc, "task.guide.evidence_hint"))
                return True
            await self._take_files(store, tid, inbound, conv, state)
        else:
            await self._reply(store, actor, at, t(loc, "task.guide.confirm_hint"))
        return True

    async def on_button(self, store: Store, tid: str, short: str, actor: Actor, at: str) -> str | None:
        """Keep it / Done / Confirm and send / Cancel. Returns a refusal for the tap's answer."""
        loc = store.locale
        conv = _Keys.of(keys.store_tag(store.id), tid, actor.user)
        state = await self._state(conv)
        agent = store.agent(actor.service, actor.user)
        if _done(state, at):
            return state[f"done:{at}"] or None  # handled before, to its end: the same answer
        if state and state["step"] == ENDED and agent is not None:
            return t(loc, "task.guide.ended")  # a step's button tapped again after sending or cancelling
        if not state or agent is None:
            # Someone else's question, or their own left until the conversation expired: the same answer.
            return t(loc, "task.guide.not_yours", minutes=CONVERSATION_SECONDS // 60)
        step = state["step"]
        if short == CANCEL:
            await self._reply(store, actor, at, t(loc, "task.guide.cancelled"))
            await self._end(store, tid, conv, at, state)
        elif short == KEEP and step == "weak":
            await self._ask_evidence(store, tid, agent, actor, at, conv, state)
        elif short == DONE and step == "evidence":
            await self._confirm(store, tid, agent, actor, at, conv, state)
        elif short == SEND and step in ("confirm", "sending"):
            return await self._send(store, tid, agent, actor, at, conv, state)
        return None

    # -- steps ---------------------------------------------------------------------------------------

    async def _ask_evidence(
        self,
        store: Store,
        tid: str,
        agent: Agent,
        actor: Actor,
        at: str,
        conv: _Keys,
        state: dict[str, str],
        **fields: str,
    ) -> None:
        text = t(store.locale, "task.guide.evidence", mention="{mention}", **evidence_limits())
        limit = self.download_limits.get(actor.service)
        if limit is not None:
            text += t(store.locale, "task.guide.download_limit", limit_mb=limit // (1024 * 1024))
        prompt = await self._prompt(store, tid, agent, at, "evidence", text, [DONE, CANCEL], state)
        await self._save(conv, at, step="evidence", prompt=prompt, **fields)

    async def _take_files(self, store: Store, tid: str, inbound: Inbound, conv: _Keys, state: dict[str, str]) -> None:
        """Each file is judged as it arrives (type by its first bytes, size), as the modal would."""
        loc, actor, at = store.locale, inbound.actor, inbound.actor.message or ""
        files: list[dict[str, Any]] = orjson.loads(state.get("files") or "[]")
        shared = len(await self.tasks.thread_files(store, tid))
        for media in inbound.media:
            if too_many := evidence_count_problem(loc, len(files) + shared + 1):
                await self._reply(store, actor, at, too_many)
                break
            problem = await self._file_problem(loc, media)
            if problem:
                await self._reply(store, actor, at, problem)
                continue
            files.append(_as_evidence(media))
            await self._react(store, actor)
        await self._save(conv, at, files=orjson.dumps(files).decode())

    async def _confirm(
        self, store: Store, tid: str, agent: Agent, actor: Actor, at: str, conv: _Keys, state: dict[str, str]
    ) -> None:
        loc = store.locale
        files = await self._evidence(store, tid, state)
        problems = evidence_count_problem(loc, len(files))
        if not problems:
            checked = [ReplyMedia(str(f.get("service", actor.service)), str(f["url"]), str(f["name"]),
                                  str(f.get("mimetype", "")), int(f.get("size", 0))) for f in files]  # fmt: skip
            problems = "\n".join(p for p in [await self._file_problem(loc, m) for m in checked] if p)
        if problems:
            await self._reply(store, actor, at, problems)
            return
        names = ", ".join(str(f["name"]) for f in files) or t(loc, "task.guide.no_files")
        text = t(loc, "task.guide.confirm", mention="{mention}", result=status_name(loc, state["result"]),
                 solution=state.get("solution", ""), files=names)  # fmt: skip
        prompt = await self._prompt(store, tid, agent, at, "confirm", text, [SEND, CANCEL], state)
        await self._save(conv, at, step="confirm", prompt=prompt)

    async def _send(
        self, store: Store, tid: str, agent: Agent, actor: Actor, at: str, conv: _Keys, state: dict[str, str]
    ) -> str | None:
        loc = store.locale
        if state["step"] == "confirm":
            status = await self.tasks.status_of(store, tid)
            if status != "pending":
                refusal = t(loc, "task.process.not_pending", status=status_name(loc, status))
                await self._end(store, tid, conv, at, state, refusal)
                return refusal
            # Sending from here on: handled again, the tap goes on to its end even once the platform
            # has the decision and the task order is no longer pending.
            await self._save(conv, "", step="sending")
        files = await self._evidence(store, tid, state)
        # The action id is the conversation's: a second tap on Confirm queues the same job, once.
        await self.tasks.process(store, tid, state["result"], state.get("solution", ""), files, (agent.id, agent.name),
                                 actor, f"{actor.service}-{actor.user}-{state['started']}")  # fmt: skip
        # Said as the tap's own answer, at once: a message would wait for the group's next slot and
        # land after the card already shows the result, reading as stale.
        sent = t(loc, "task.guide.sent")
        await self._end(store, tid, conv, at, state, sent)
        return sent

    # -- helpers -------------------------------------------------------------------------------------

    async def _evidence(self, store: Store, tid: str, state: dict[str, str]) -> list[dict[str, Any]]:
        """Files shared under the card before, and those sent in this conversation (as with a modal)."""
        added: list[dict[str, Any]] = orjson.loads(state.get("files") or "[]")
        return await self.tasks.thread_files(store, tid) + added

    async def _file_problem(self, loc: str, media: ReplyMedia) -> str:
        head = self.heads.get(media.service)
        if head is None:
            return t(loc, "task.process.bad_file", name=media.name, reason=t(loc, "task.process.reason.type",
                                                                              **evidence_limits()))  # fmt: skip
        try:
            first = await head(media.url, media.size)
        except TooLargeToFetch as exc:
            reason = t(loc, "task.process.reason.download", limit_mb=exc.limit_bytes // (1024 * 1024))
            return t(loc, "task.process.bad_file", name=media.name, reason=reason)
        return evidence_problems(loc, [(media.name, first, media.size)])

    async def _state(self, conv: _Keys) -> dict[str, str]:
        """The conversation as stored; nothing once it was left too long, even before its timer ends it."""
        state = await read_hash(self.redis, conv.state)
        if state.get("last_at") and float(state["last_at"]) + CONVERSATION_SECONDS <= self.clock.now():
            return {}
        return state

    async def _save(self, conv: _Keys, at: str, **fields: str) -> None:
        """The conversation's next state, and the mark that the message or tap ``at`` led to it."""
        await self._expire_later(conv)  # first: the state saved has its end set, whatever fails after
        mapping: dict[Any, Any] = {**fields, "last_at": str(self.clock.now()), **({f"done:{at}": ""} if at else {})}
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(conv.state, mapping=mapping)  # redis-py types a mapping's keys invariantly: hence Any above
            pipe.expire(conv.state, STATE_KEPT_SECONDS)
            await pipe.execute()

    async def _expire_later(self, conv: _Keys) -> None:
        """The conversation's end, an hour from now (a step moves it on)."""
        await self.timers.schedule(conv.timer, self.clock.now() + CONVERSATION_SECONDS)

    async def on_expiry_timer(self, timer: Timer) -> None:
        """A conversation left an hour without a step ends: its question says so and loses its
        buttons, and its state goes (nothing was sent). Handled again after a failure, it queues the
        same change and removes what is left."""
        _, tag, rest = keys.split_timer_key(timer.key)
        tid, user = rest.rsplit(":", 1)
        store = self.tasks.config.store(keys.store_of(tag) or "")
        conv = _Keys.of(tag, tid, user)
        state = await read_hash(self.redis, conv.state)
        if store is None or not state or state.get("step") == ENDED:
            return
        left = float(state.get("last_at") or 0) + CONVERSATION_SECONDS - self.clock.now()
        if left > 0:  # a step came after this timer was set, and its own setting was lost to a failure
            await self.timers.schedule(timer.key, self.clock.now() + left)
            return
        await self._retire(store, tid, state, t(store.locale, "task.guide.expired", minutes=CONVERSATION_SECONDS // 60))
        await self.redis.delete(conv.state)

    async def _end(self, store: Store, tid: str, conv: _Keys, at: str, state: dict[str, str], answer: str = "") -> None:
        """Sent or cancelled: its last question's buttons go, and only the tap that ended it is kept,
        with the answer it got."""
        await self._retire(store, tid, state)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(conv.state)
            pipe.hset(conv.state, mapping={"step": ENDED, f"done:{at}": answer})
            pipe.expire(conv.state, CONVERSATION_SECONDS)
            await pipe.execute()

    async def _prompt(
        self,
        store: Store,
        tid: str,
        agent: Agent,
        at: str,
        step: str,
        text: str,
        buttons: list[str],
        state: dict[str, str],
    ) -> str:
        """A step's question, posted under the card (so a reply to it is a reply in the task order's
        thread), mentioning the person, with the step's buttons; the question before it (``state``'s)
        loses its own. Returns what the conversation keeps of it (``prompt``) to retire it in turn."""
        await self._retire(store, tid, state)
        loc = store.locale
        keyboard = [{"label": t(loc, _LABELS[b]), "short": b, "value": tid} for b in buttons]
        view = {"type": "notice", "text": text, "mentions": [agent.id], "buttons": keyboard}
        job_id = f"task:{tid}:guide:{step}:{at}"
        await post_view(self.outbox, keys.store_tag(store.id), f"task:{tid}", store.id,
                        Destination.parse(store.destinations.task_orders), job_id, jobs.POST, view,
                        remember=True)  # fmt: skip
        return remembered(job_id, view)

    async def _retire(self, store: Store, tid: str, state: dict[str, str], why: str = "") -> None:
        """The conversation's latest question keeps its text and loses its buttons: its step is past.
        ``why``: a line added under it."""
        if state.get("prompt"):
            await retire(self.outbox, keys.store_tag(store.id), f"task:{tid}", store.id,
                         Destination.parse(store.destinations.task_orders), state["prompt"], why)  # fmt: skip

    async def _reply(self, store: Store, actor: Actor, at: str, text: str) -> None:
        job_id = f"guide:{actor.channel}:{at}:{zlib.crc32(text.encode())}"
        await tell(self.outbox, keys.store_tag(store.id), actor, text, job_id)

    async def _react(self, store: Store, actor: Actor) -> None:
        """A mark on the file's message: it was taken."""
        await react(self.outbox, keys.store_tag(store.id), actor, "white_check_mark", "evidence")


def _as_evidence(media: ReplyMedia) -> dict[str, Any]:
    return {"service": media.service, "url": media.url, "name": media.name, "mimetype": media.mimetype,
            "size": media.size}  # fmt: skip


@dataclass(frozen=True)
class _Keys:
    """One person's conversation on one task order: where its state is, and the timer that ends it."""

    state: str
    timer: str

    @staticmethod
    def of(tag: str, tid: str, user: str) -> _Keys:
        return _Keys(keys.task_resolve(tag, tid, user), keys.resolve_timer(tag, tid, user))


def _done(state: dict[str, str], at: str) -> bool:
    """Whether the message or tap ``at`` was handled to its end (its state saved after its posts)."""
    return bool(at) and f"done:{at}" in state
