"""What a message or a button in a destination means, whatever the destination.

A connector translates what a person did into an ``Inbound`` (who, where, what it is threaded
under, text, files) or an action on a task order, and hands it here. The router finds what the
place is (a store's chat destination, a store's task-order destination, a creator's), which
thread the message belongs to (a platform chat's, a task order's), who the person is (an agent, a
creator, a stranger), and calls the flow: an answer to a chat, a comment on a task order, a file
offered as evidence. Refusals are told privately to the person, in their language.
"""

from __future__ import annotations

import zlib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from redis.asyncio import Redis

from bridge.config import DEFAULT_NOTE_MARKERS, NOWHERE, BridgeConfig, Creator, Store
from bridge.engine import keys, refs
from bridge.engine.events import NotYetRecorded, delivered_at
from bridge.engine.outbox import Outbox
from bridge.flows.chats import ChatFlow
from bridge.flows.statistics import PERIODS, stats_text
from bridge.flows.task_records import list_status_words, status_from_words
from bridge.flows.tasks import TaskFlow
from bridge.flows.views import Actor, ReplyMedia, react, tell
from bridge.i18n import LOCALES, named, t
from rules.comments import COMMENTS_PER_SIDE, comment_content_refusal
from rules.permissions import Refusal, answer_refusal


@dataclass(frozen=True)
class Inbound:
    """A message a person wrote in a destination, translated."""

    actor: Actor
    """Who, in which channel, their message's id, and where an answer to them goes."""
    text: str
    media: Sequence[ReplyMedia] = ()
    threaded_under: Sequence[str] = ()
    """The destination's references of the message(s) this one is threaded under, best first (a
    Slack thread's ts; a Telegram forum topic ``topic:<id>`` or the message it replies to)."""
    parent_written_at: float | None = None
    """When the message this one is threaded under was written, where the destination says (a Slack
    thread's ts is that moment; Telegram sends the date of the message replied to)."""
    parent_not_ours: bool = False
    """The destination says someone other than the bridge's bot (a person, another bot) wrote the
    message this one is threaded under (Slack's ``parent_user_id``, Telegram's
    ``reply_to_message.from``): it cannot be one of the bridge's own whose record is still to come."""
    in_reply_chain: bool = False
    """The destination threads by replies (a Telegram group without topics): a reply to this message
    belongs to its thread, as a reply to any message of the bridge's there does."""


@dataclass(frozen=True)
class Place:
    """What a destination channel is for: a store's task orders, a store's chats, a creator's."""

    task_store: Store | None
    chat_store: Store | None
    creator: Creator | None

    @property
    def store(self) -> Store | None:
        return self.task_store or self.chat_store

    def whose(self) -> str:
        """Whose place it is, for the operator's log ("store 1002's platform chats, …"; "" for none)."""
        named = [f"store {s.id}'s {what}" for s, what in ((self.chat_store, "platform chats"),
                                                          (self.task_store, "task orders")) if s]  # fmt: skip
        return ", ".join(named + ([f"creator {self.creator.id}"] if self.creator else []))


CLAIM, REASSIGN, ASSIGN_TO, ELSEWHERE = "chat_claim", "chat_reassign", "chat_assign_to", "chat_elsewhere"
"""The chat header's buttons (the views name them; destinations pass them back)."""
CHAT_ACTIONS = {"cl": CLAIM, "ra": REASSIGN, "at": ASSIGN_TO, "ew": ELSEWHERE}
"""The same by the short codes of destinations with small button data."""
NOTE_EMOJI = "memo"
"""How a note is marked where the destination has reactions (Slack's name; others map it)."""

TaskMessageHook = Callable[[Store, str, Inbound], Awaitable[bool]]
"""Offered a message in a task order's thread before it is taken as a comment (a guided resolve
conversation in progress takes its answers); True when it took it."""


class InboundRouter:
    def __init__(
        self, config: Callable[[], BridgeConfig], redis: Redis, outbox: Outbox, chats: ChatFlow, tasks: TaskFlow
    ) -> None:
        self.config = config
        self.redis = redis
        self.outbox = outbox
        self.chats = chats
        self.tasks = tasks
        self.task_message_hooks: dict[str, TaskMessageHook] = {}
        """By service: a destination without modals guides people through processing in the thread."""
        self.renamed: dict[str, str] = {}
        """Places the destination gave a new id (a Telegram group made a supergroup), by the new id
        (``telegram:-100…``): the id the configuration names, until the operator writes the new one."""

    def place(self, service: str, channel: str) -> Place:
        place = f"{service}:{channel}"
        found = self.config().at(place)
        if found == NOWHERE and place in self.renamed:
            found = self.config().at(self.renamed[place])
        return Place(*found)

    def rename(self, service: str, old: str, new: str) -> None:
        """The destination's place ``old`` is called ``new`` from now on: what people do at ``new``
        is taken as done where the configuration says ``old``."""
        self.renamed[f"{service}:{new}"] = f"{service}:{old}"

    # -- messages ------------------------------------------------------------------------------------

    async def message(self, inbound: Inbound) -> bool:
        """Routes one message; False when the place is none of the bridge's (nothing done)."""
        actor = inbound.actor
        place = self.place(actor.service, actor.channel)
        owners = self._owners(place)
        if not owners:
            return False
        age = self._age()
        parent, owner = await self._thread(actor, inbound.threaded_under, owners, wait=age < refs.PARENT_WAIT_SECONDS)
        if parent is None and self._may_be_unrecorded(inbound, age):
            raise NotYetRecorded(f"thread {inbound.threaded_under[0]} not known yet",
                                 after=refs.unrecorded_parent_retry_seconds(age))  # fmt: skip
        if parent is not None and owner is not None and inbound.in_reply_chain and actor.message:
            # People answer each other in the chain too: a reply to this message is in the thread.
            await refs.save_member(self.redis, _tag_of(owner), parent, actor.service, actor.channel, actor.message)
        if parent is not None and await self._is_note(owner, inbound):
            return True
        if parent is not None and parent.startswith("task:"):
            tid = parent.removeprefix("task:")
            if isinstance(owner, Creator):
                await self._creator_comment(owner, tid, inbound)
            elif owner is place.task_store and place.task_store is not None:
                await self._merchant_message(place.task_store, tid, inbound)
            return True
        if place.chat_store is None:
            problem = comment_content_refusal(in_task_thread=False, has_text=bool(inbound.text.strip()),
                                              has_files=bool(inbound.media), files_kept_as_evidence=False)  # fmt: skip
            await self._refuse_comment(place.creator or place.task_store, inbound, problem)
            return True
        cid = parent.removeprefix("chat:") if parent and parent.startswith("chat:") else None
        await self.chats.reply(place.chat_store, cid, actor, inbound.text, inbound.media)
        return True

    async def changed(self, inbound: Inbound, original: str | None, deleted: bool = False) -> bool:
        """Someone edited (``inbound`` is the new text) or deleted a message the bridge already sent
        to the platform: the platform cannot change a sent message, so the change goes nowhere, and
        the author is told so privately, with what the platform has (``original``, when known)."""
        actor = inbound.actor
        place = self.place(actor.service, actor.channel)
        owners = self._owners(place)
        parent, owner = await self._thread(actor, inbound.threaded_under, owners, wait=False)
        if parent is None or owner is None:
            return False
        # The flow marks what it sent by the message's id, and keeps its text under ``sent:<id>``.
        if parent.startswith("chat:") and place.chat_store is not None:
            store, sent_id = place.chat_store, str(actor.message)
            state, marker = keys.chat(keys.store_tag(store.id), parent.removeprefix("chat:")), f"reply:{sent_id}"
        elif parent.startswith("task:"):
            tid = parent.removeprefix("task:")
            found = owner if isinstance(owner, Store) else await self.tasks.store_of_task(owner, tid)
            if found is None:
                return False
            store, sent_id = found, f"{actor.service}:{actor.channel}:{actor.message}"
            state, marker = keys.task(keys.store_tag(store.id), tid), f"comment:{sent_id}"
        else:
            return False
        marked, kept = await self.redis.hmget(state, [marker, f"sent:{sent_id}"])
        if marked is None:
            return False  # never sent (refused, or not a reply): nothing to tell
        if original is None and kept is not None:  # the destination does not say (Telegram: the new text only)
            original = str(kept)
        locale = owner.locale if isinstance(owner, Creator) else store.locale
        key = "change.deleted" if deleted else "change.edited"
        sent = t(locale, "change.sent_was", original=original) if original else ""
        await tell(
            self.outbox,
            keys.store_tag(store.id),
            actor,
            t(locale, key, sent=sent),
            f"changed:{actor.channel}:{actor.message}:{zlib.crc32(inbound.text.encode())}:{int(deleted)}",
        )
        return True

    def _owners(self, place: Place) -> list[tuple[str, Store | Creator]]:
        owners: list[tuple[str, Store | Creator]] = []
        if place.task_store is not None:
            owners.append((keys.store_tag(place.task_store.id), place.task_store))
        if place.creator is not None:
            owners.append((keys.creator_tag(place.creator.id), place.creator))
        if place.chat_store is not None and place.chat_store is not place.task_store:
            owners.append((keys.store_tag(place.chat_store.id), place.chat_store))
        return owners

    async def _is_note(self, owner: Store | Creator | None, inbound: Inbound) -> bool:
        """An internal note (the text starts with one of the store's note markers): it stays in the
        team's thread, is never forwarded, and is marked as a note (📝)."""
        markers = owner.note_markers if isinstance(owner, Store) else DEFAULT_NOTE_MARKERS
        if not inbound.text.lstrip().startswith(tuple(m for m in markers if m)):
            return False
        await react(self.outbox, keys.NO_ENDPOINT_TAG, inbound.actor, NOTE_EMOJI, "note")
        return True

    def _may_be_unrecorded(self, inbound: Inbound, age: float) -> bool:
        """Whether the unknown thread of a message received ``age`` seconds ago may still be one of
        the bridge's own, whose first message the service took and the bridge has yet to record
        (its send waits for the service's answer, or its process died and another takes it over)."""
        if not inbound.threaded_under or inbound.parent_not_ours:
            return False
        since = age
        if inbound.parent_written_at is not None:
            # Never less than the age: a service whose clock runs ahead cannot keep it waiting longer.
            since = max(age, self.chats.clock.now() - inbound.parent_written_at)
        return since < refs.unrecorded_parent_seconds(self.config().timers.lease_seconds)

    def _age(self) -> float:
        """How long ago the bridge received the message being handled (0 outside a stored event)."""
        return self.chats.clock.now() - delivered_at(self.chats.clock)

    async def _thread(
        self, actor: Actor, threaded_under: Sequence[str], owners: list[tuple[str, Store | Creator]], wait: bool = True
    ) -> tuple[str | None, Store | Creator | None]:
        """The thread (``chat:<id>``, ``task:<id>``) a message was written in, and whose it is. A
        reply may arrive while the message it answers is still being recorded: the last lookup
        waits for that briefly (once, not once per owner)."""
        lookups = [(tag, owner, ref) for tag, owner in owners for ref in threaded_under]
        for i, (tag, owner, ref) in enumerate(lookups):
            find = refs.parent_of if wait and i == len(lookups) - 1 else refs.chat_of
            found = await find(self.redis, tag, actor.service, actor.channel, ref)
            if found is not None:
                return found, owner
        return None, None

    async def _merchant_message(self, store: Store, tid: str, inbound: Inbound) -> None:
        hook = self.task_message_hooks.get(inbound.actor.service)
        if hook is not None and await hook(store, tid, inbound):
            return
        for media in inbound.media:  # offered as evidence when the task order is processed (B7)
            await self.tasks.add_thread_file(store, tid, {"service": media.service, "url": media.url,
                                                          "name": media.name, "mimetype": media.mimetype,
                                                          "size": media.size})  # fmt: skip
        agent = store.agent(inbound.actor.service, inbound.actor.user)
        author_id, author = (agent.id, agent.name) if agent else (inbound.actor.user, inbound.actor.user)
        await self._comment(store, tid, store, author_id, author, inbound)

    async def _creator_comment(self, creator: Creator, tid: str, inbound: Inbound) -> None:
        store = await self.tasks.store_of_task(creator, tid)
        if store is not None:
            await self._comment(store, tid, creator, creator.id, creator.name, inbound)

    async def _comment(
        self, store: Store, tid: str, side_of: Store | Creator, author_id: str, author: str, inbound: Inbound
    ) -> None:
        """A message in task order ``tid``'s thread, written on the side of ``side_of`` (the store: the
        merchant's; a creator: theirs)."""
        side = "merchant" if isinstance(side_of, Store) else "creator"
        has_text = bool(inbound.text.strip())
        # A merchant's file is evidence while the task order can still be processed (B7).
        kept = side == "merchant" and bool(inbound.media) and await self.tasks.status_of(store, tid) == "pending"
        problem = comment_content_refusal(in_task_thread=True, has_text=has_text, has_files=bool(inbound.media),
                                          files_kept_as_evidence=kept)  # fmt: skip
        if problem is not None:
            await self._refuse_comment(side_of, inbound, problem)
        if not has_text:
            return
        actor = inbound.actor
        refusal = await self.tasks.comment(store, tid, side, actor, author_id, author, inbound.text)
        if refusal is not None:
            await tell(self.outbox, keys.store_tag(store.id), actor, refusal, f"refuse:{actor.channel}:{actor.message}")

    async def _refuse_comment(self, owner: Store | Creator | None, inbound: Inbound, problem: str | None) -> None:
        """Tells the author, privately, what of their message did not become a comment and why."""
        if owner is None or problem is None:
            return
        actor = inbound.actor
        text = t(owner.locale, f"task.refuse.{problem}")
        await tell(self.outbox, _tag_of(owner), actor, text, f"{problem}:{actor.channel}:{actor.message}")

    # -- task-order buttons and commands -------------------------------------------------------------

    async def show_log(self, actor: Actor, tid: str, job_id: str) -> bool:
        """Log: the task order's processing log (B4), to the person who asked, in the place's language."""
        place = self.place(actor.service, actor.channel)
        store = place.task_store or (await self.tasks.store_of_task(place.creator, tid) if place.creator else None)
        if store is None:
            return False
        text = await self.tasks.records.log_text(store, tid, place.creator.locale if place.creator else store.locale)
        await tell(self.outbox, keys.store_tag(store.id), actor, text, job_id)
        return True

    async def explain_comments(self, actor: Actor, job_id: str) -> bool:
        """Comment: how to comment (a reply in the task order's thread)."""
        store = self.place(actor.service, actor.channel).task_store
        if store is None:
            return False
        text = t(store.locale, "task.comment_hint", limit=COMMENTS_PER_SIDE)
        await tell(self.outbox, keys.store_tag(store.id), actor, text, job_id)
        return True

    async def chat_action(self, actor: Actor, action: str, value: str, action_id: str) -> bool:
        """A button on a chat: Claim, Reassign…, or one agent of the reassign list (``<chat>:<agent>``)."""
        store = self.place(actor.service, actor.channel).chat_store
        if store is None:
            return False
        if action == CLAIM:
            await self.chats.assign(store, value, None, actor, action_id)
        elif action == REASSIGN:
            await self.chats.offer_reassign(store, value, actor, action_id)
        elif action == ELSEWHERE:
            await self.chats.handled_elsewhere(store, value, actor, action_id)
        elif action == ASSIGN_TO:
            # A platform account id may hold colons itself ("店铺名:客服01"): the agent is the store's
            # whose id ends the value, the longest such.
            ending = [a.id for a in store.agents if value.endswith(":" + a.id)]
            agent_id = max(ending, key=len, default=value.rpartition(":")[2])
            await self.chats.assign(store, value[: -len(agent_id) - 1], agent_id, actor, action_id)
        else:
            return False
        return True

    def processing_refusal(self, actor: Actor) -> str | None:
        """Why this person may not process the place's task orders (only the store's agents may:
        the platform records who processed it, by their platform account), or None."""
        store = self.place(actor.service, actor.channel).task_store
        if store is None or store.agent(actor.service, actor.user) is not None:
            return None
        return t(store.locale, "task.guide.not_agent")

    async def list_tasks(self, service: str, channel: str, args: Sequence[str]) -> tuple[str, str]:
        """``/tasks [status] [page]`` (B10): the place's task orders (a store's, or a creator's), and
        the tag the answer belongs to. Status defaults to pending, page to 1."""
        words = " ".join(a for a in args if not a.isdigit())
        status = status_from_words(words) if words else "pending"
        page = next((int(a) for a in args if a.isdigit()), 1)
        place = self.place(service, channel)
        owner = place.store or place.creator
        if owner is None:
            return self._unknown_place(service, channel), keys.NO_ENDPOINT_TAG
        tag = _tag_of(owner)
        if status is None:  # never a list of something else, read as the one asked for
            return t(owner.locale, "task.list.unknown_status", words=words,
                     statuses=list_status_words(owner.locale)), tag  # fmt: skip
        if isinstance(owner, Creator):
            return await self.tasks.records.creator_list_text(owner, status, page), tag
        return await self.tasks.records.list_text(owner, status, owner.locale, page), tag

    def help_text(self, actor: Actor, commands: Mapping[str, str], asked: str = "") -> tuple[str, str]:
        """What the bridge does in this place and how to use it, for someone who asks (a bot's
        /start or /help), and who the bridge takes them for there: the agent, and whether they may
        answer platform chats, or an account the configuration does not name. ``commands`` are how
        the destination writes the task list, the statistics and the help (``tasks``, ``stats``,
        ``help``). A place the configuration does not name is told its own id, which is what the
        operator needs to connect it. ``asked``: a command the bridge does not have, said first.
        Returned with the tag the answer belongs to."""
        service, channel, user = actor.service, actor.channel, actor.user
        place = self.place(service, channel)
        owner = place.store or place.creator
        if owner is None:
            unknown = self._unknown_place(service, channel)
            mine = "\n".join(t(loc, "help.you.account", service=service, user=user) for loc in LOCALES)
            return f"{unknown}\n{mine}", keys.NO_ENDPOINT_TAG
        loc = owner.locale
        lines = [t(loc, "help.title", name=owner.name)]
        if asked:
            lines.insert(0, t(loc, "help.no_such_command", words=asked))
        if place.chat_store is not None:
            store = place.chat_store
            lines.append(t(loc, "help.chats", window=store.reply_window.seconds, marker=store.note_markers[0]
                           if store.note_markers else ""))  # fmt: skip
        if place.task_store is not None:
            lines.append(t(loc, "help.tasks", limit=COMMENTS_PER_SIDE))
        if place.creator is not None:
            lines.append(t(loc, "help.creator", limit=COMMENTS_PER_SIDE))
        lines.append(t(loc, "help.command.tasks", command=commands["tasks"], statuses=list_status_words(loc)))
        if place.store is not None:
            lines.append(t(loc, "help.command.stats", command=commands["stats"], periods="|".join(PERIODS)))
        lines.append(t(loc, "help.command.help", command=commands["help"]))
        if place.store is not None:
            lines.append(self._who(place.store, place.chat_store, actor))
        return "\n".join(lines), _tag_of(owner)

    @staticmethod
    def _who(store: Store, chat_store: Store | None, actor: Actor) -> str:
        """Who the bridge takes the asker for in a store's place, and what keeps them from answering
        platform chats there (A2), in the words of the refusal they would get."""
        loc, agent = store.locale, store.agent(actor.service, actor.user)
        if agent is None:
            return t(loc, "help.you.stranger", service=actor.service, user=actor.user)
        you = t(loc, "help.you.agent", name=agent.name, user=actor.user)
        if chat_store is None:
            return you
        refusal = answer_refusal(in_chat_thread=True, designated=agent in chat_store.designated,
                                 im_permission=agent.im_permission, chat_open=True, has_content=True)  # fmt: skip
        can = {None: "help.you.answers", Refusal.NOT_AGENT: "help.you.not_designated",
               Refusal.NO_IM_PERMISSION: "help.you.no_im"}.get(refusal, "help.you.answers")  # fmt: skip
        return f"{you}{t(loc, can)}"

    @staticmethod
    def _unknown_place(service: str, channel: str) -> str:
        """What a place no configuration names is told: its id, for the operator. No one's language
        is known there, so it is said in each."""
        return "\n".join(t(loc, "help.unknown", destination=f"{service}:{channel}") for loc in LOCALES)

    async def stats(self, service: str, channel: str, args: Sequence[str] = ()) -> tuple[str, str]:
        """``stats [today|7d|30d]``: response figures of the store whose chats or task orders this
        place holds (A9), from the archive, and the answer's tag. The period defaults to today."""
        place = self.place(service, channel)
        store = place.chat_store or place.task_store
        if store is None and place.creator is not None:  # the menu offers it everywhere
            return t(place.creator.locale, "stats.for_stores"), _tag_of(place.creator)
        if store is None:
            return self._unknown_place(service, channel), keys.NO_ENDPOINT_TAG
        words = " ".join(args)
        period = named(words, PERIODS, lambda loc, p: t(loc, f"stats.period.{p}")) if words else "today"
        if period is None:  # never the figures of another period, read as the ones asked for
            periods = "|".join(PERIODS)
            return t(store.locale, "stats.unknown_period", words=words, periods=periods), keys.store_tag(store.id)
        now = datetime.fromtimestamp(self.chats.clock.now(), UTC)
        return await stats_text(self.tasks.records.archive, store, period, now), keys.store_tag(store.id)


def _tag_of(owner: Store | Creator) -> str:
    return keys.store_tag(owner.id) if isinstance(owner, Store) else keys.creator_tag(owner.id)
