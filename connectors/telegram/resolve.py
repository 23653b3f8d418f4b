"""Resolve / Cannot resolve in a Telegram group: what Slack does in a modal, as a short guided
conversation under the task order's card — result (the button tapped) → solution → evidence →
confirm. The checks are the core's (B7 evidence, B8 solution), the same as the modal's; nothing is
sent until the last step is confirmed, and then through ``TaskFlow.process`` like Slack's submit.

The conversation's state is a Redis hash per task order and person (``keys.task_resolve``): any
replica continues it, a restart loses nothing, and it expires an hour after the last step.
"""

from __future__ import annotations

import zlib
from typing import Any

import orjson

from bridge.config import Agent, Destination, Store
from bridge.engine import keys
from bridge.flows.tasks import TaskFlow, evidence_count_problem, evidence_problems, status_name
from bridge.flows.views import ReplyMedia, post_view
from bridge.i18n import t
from connectors.telegram.app import DOWNLOAD_LIMIT, TelegramConnector, TelegramInbound
from rules.evidence import evidence_limits
from rules.solution import solution_refusal

CONVERSATION_SECONDS = 3600
RESULTS = {"rs": "resolved", "ur": "unresolvable"}
STEP_BUTTONS = ("pk", "pd", "py", "pc")  # keep the short solution, evidence done, send, cancel


class ResolveConversation:
    def __init__(self, connector: TelegramConnector, tasks: TaskFlow) -> None:
        self.connector = connector
        self.tasks = tasks
        self.redis = connector.redis

    # -- entry points ------------------------------------------------------------------------------

    async def start(self, store: Store, tid: str, short: str, inbound: TelegramInbound) -> str | None:
        """Resolve / Cannot resolve tapped: step 1, the solution. Returns a refusal for the tap's toast."""
        loc, agent = store.locale, _agent(store, inbound.user)
        if agent is None:
            return t(loc, "task.guide.not_agent")
        status = await self.tasks.status_of(store, tid)
        if status != "pending":
            return t(loc, "task.process.not_pending", status=status_name(loc, status))
        key = keys.task_resolve(keys.store_tag(store.id), tid, str(inbound.user))
        started = inbound.callback_id or str(inbound.message)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(key)
            pipe.hset(key, mapping={"result": RESULTS[short], "step": "solution", "files": "[]", "started": started})
            pipe.expire(key, CONVERSATION_SECONDS)
            await pipe.execute()
        action = t(loc, f"task.button.{'resolve' if short == 'rs' else 'unresolvable'}")
        text = t(loc, "task.guide.solution", mention="{mention}", action=action, task_id=tid)
        await self._prompt(store, tid, agent, inbound, "solution", text, ["pc"])
        return None

    async def on_message(self, store: Store, tid: str, inbound: TelegramInbound) -> bool:
        """A message under the card from someone in the middle of resolving it: the step's answer.
        False when they are not, so the message is an ordinary comment."""
        key = keys.task_resolve(keys.store_tag(store.id), tid, str(inbound.user))
        state = await self._state(key)
        agent = _agent(store, inbound.user)
        if not state or agent is None:
            return False
        loc, step = store.locale, state["step"]
        if step in ("solution", "weak"):
            refusal = solution_refusal(inbound.text, confirmed=False)
            if refusal == "empty":
                await self._reply(inbound, t(loc, "task.process.empty"))
                return True
            await self._save(key, solution=inbound.text)
            if refusal == "unconfirmed":
                await self._save(key, step="weak")
                await self._prompt(store, tid, agent, inbound, "weak", t(loc, "task.guide.weak"), ["pk", "pc"])
            else:
                await self._ask_evidence(store, tid, agent, inbound, key)
        elif step == "evidence":
            if not inbound.media:
                await self._reply(inbound, t(loc, "task.guide.evidence_hint"))
                return True
            await self._take_files(store, tid, inbound, key, state)
        else:
            await self._reply(inbound, t(loc, "task.guide.confirm_hint"))
        return True

    async def on_button(self, store: Store, tid: str, short: str, inbound: TelegramInbound) -> str | None:
        """Keep it / Done / Confirm and send / Cancel. Returns a refusal for the tap's toast."""
        loc = store.locale
        key = keys.task_resolve(keys.store_tag(store.id), tid, str(inbound.user))
        state = await self._state(key)
        agent = _agent(store, inbound.user)
        if not state or agent is None:
            return t(loc, "task.guide.not_yours")
        step = state["step"]
        if short == "pc":
            await self.redis.delete(key)
            await self._reply(inbound, t(loc, "task.guide.cancelled"))
        elif short == "pk" and step == "weak":
            await self._ask_evidence(store, tid, agent, inbound, key)
        elif short == "pd" and step == "evidence":
            await self._confirm(store, tid, agent, inbound, key, state)
        elif short == "py" and step == "confirm":
            return await self._send(store, tid, agent, inbound, key, state)
        return None

    # -- steps ---------------------------------------------------------------------------------------

    async def _ask_evidence(self, store: Store, tid: str, agent: Agent, inbound: TelegramInbound, key: str) -> None:
        await self._save(key, step="evidence")
        limits = evidence_limits() | {"limit_mb": DOWNLOAD_LIMIT // (1024 * 1024)}
        text = t(store.locale, "task.guide.evidence", mention="{mention}", **limits)
        await self._prompt(store, tid, agent, inbound, "evidence", text, ["pd", "pc"])

    async def _take_files(
        self, store: Store, tid: str, inbound: TelegramInbound, key: str, state: dict[str, str]
    ) -> None:
        """Each file is judged as it arrives (type by its first bytes, size), as the modal would."""
        loc = store.locale
        files: list[dict[str, Any]] = orjson.loads(state.get("files") or "[]")
        shared = len(await self.tasks.thread_files(store, tid))
        for media in inbound.media:
            if too_many := evidence_count_problem(loc, len(files) + shared + 1):
                await self._reply(inbound, too_many)
                break
            problem = await self._file_problem(loc, media)
            if problem:
                await self._reply(inbound, problem)
                continue
            files.append(_as_evidence(media))
            await self._save(key, files=orjson.dumps(files).decode())
            await self.connector.react(inbound)

    async def _confirm(
        self, store: Store, tid: str, agent: Agent, inbound: TelegramInbound, key: str, state: dict[str, str]
    ) -> None:
        loc = store.locale
        files = await self._evidence(store, tid, state)
        problems = evidence_count_problem(loc, len(files))
        if not problems:
            checked = [(ReplyMedia("telegram", str(f["url"]), str(f["name"]), str(f.get("mimetype", "")),
                                   int(f.get("size", 0)))) for f in files]  # fmt: skip
            problems = "\n".join(p for p in [await self._file_problem(loc, m) for m in checked] if p)
        if problems:
            await self._reply(inbound, problems)
            return
        await self._save(key, step="confirm")
        names = ", ".join(str(f["name"]) for f in files) or t(loc, "task.guide.no_files")
        text = t(loc, "task.guide.confirm", mention="{mention}", result=status_name(loc, state["result"]),
                 solution=state.get("solution", ""), files=names)  # fmt: skip
        await self._prompt(store, tid, agent, inbound, "confirm", text, ["py", "pc"])

    async def _send(
        self, store: Store, tid: str, agent: Agent, inbound: TelegramInbound, key: str, state: dict[str, str]
    ) -> str | None:
        loc = store.locale
        status = await self.tasks.status_of(store, tid)
        if status != "pending":
            await self.redis.delete(key)
            return t(loc, "task.process.not_pending", status=status_name(loc, status))
        files = await self._evidence(store, tid, state)
        # The action id is the conversation's: a second tap on Confirm queues the same job, once.
        await self.tasks.process(store, tid, state["result"], state.get("solution", ""), files, (agent.id, agent.name),
                                 inbound.actor(), f"tg-{inbound.user}-{state['started']}")  # fmt: skip
        await self.redis.delete(key)
        await self._reply(inbound, t(loc, "task.guide.sent"))
        return None

    # -- helpers -------------------------------------------------------------------------------------

    async def _evidence(self, store: Store, tid: str, state: dict[str, str]) -> list[dict[str, Any]]:
        """Files shared under the card before, and those sent in this conversation (as in Slack)."""
        added: list[dict[str, Any]] = orjson.loads(state.get("files") or "[]")
        return await self.tasks.thread_files(store, tid) + added

    async def _file_problem(self, loc: str, media: ReplyMedia) -> str:
        head = await self.connector.file_head(media.url, media.size)
        if head is None:
            reason = t(loc, "task.process.reason.download", limit_mb=DOWNLOAD_LIMIT // (1024 * 1024))
            return t(loc, "task.process.bad_file", name=media.name, reason=reason)
        return evidence_problems(loc, [(media.name, head, media.size)])

    async def _state(self, key: str) -> dict[str, str]:
        return {str(k): str(v) for k, v in (await self.redis.hgetall(key)).items()}

    async def _save(self, key: str, **fields: str) -> None:
        mapping: dict[Any, Any] = dict(fields)  # redis-py types its keys invariantly
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(key, mapping=mapping)
            pipe.expire(key, CONVERSATION_SECONDS)
            await pipe.execute()

    async def _prompt(
        self, store: Store, tid: str, agent: Agent, inbound: TelegramInbound, step: str, text: str, buttons: list[str]
    ) -> None:
        """A step's question, posted under the card (so a reply to it is a reply in the task order's
        thread), mentioning the person, with the step's buttons."""
        loc = store.locale
        labels = {"pk": "task.button.keep", "pd": "task.button.done", "py": "task.button.send",
                  "pc": "task.button.cancel"}  # fmt: skip
        keyboard = [{"label": t(loc, labels[b]), "short": b, "value": tid} for b in buttons]
        view = {"type": "notice", "text": text, "mentions": [agent.id], "buttons": keyboard}
        at = inbound.callback_id or str(inbound.message)
        await post_view(self.connector.outbox, keys.store_tag(store.id), f"task:{tid}", store.id,
                        Destination.parse(store.destinations.task_orders), f"task:{tid}:guide:{step}:{at}", "post",
                        view)  # fmt: skip

    async def _reply(self, inbound: TelegramInbound, text: str) -> None:
        at = inbound.callback_id or str(inbound.message)
        await self.connector.queue_reply(inbound, text, f"guide:{inbound.chat}:{at}:{zlib.crc32(text.encode())}")


def _agent(store: Store, user: int) -> Agent | None:
    return next((a for a in store.agents if a.telegram_user == user), None)


def _as_evidence(media: ReplyMedia) -> dict[str, Any]:
    return {"service": media.service, "url": media.url, "name": media.name, "mimetype": media.mimetype,
            "size": media.size}  # fmt: skip
