"""What people do in Telegram, turned into flow calls.

- A creator's chat: replies under a task order are comments (B5); Log shows the processing log (B4).
- A store's group: a message in a thread (a forum topic, or a reply to any message of a reply chain)
  belongs to that thread — a platform chat's is an answer (A1–A9); a task order's is a comment, or
  the next step of a resolve conversation; files shared there are offered as evidence (B7). The
  card's buttons: Log, Comment, Resolve, Cannot resolve (``resolve.py``).
- ``/tasks [status] [page]`` lists task orders (B10), the store's or the creator's.
"""

from __future__ import annotations

from collections.abc import Callable

from bridge.config import BridgeConfig, Creator, Store
from bridge.engine import keys, refs
from bridge.engine.outbox import OutboxJob
from bridge.flows.chats import ChatFlow
from bridge.flows.tasks import TaskFlow
from bridge.i18n import t
from connectors.telegram.app import ANSWER, TelegramConnector, TelegramInbound
from connectors.telegram.resolve import RESULTS, STEP_BUTTONS, ResolveConversation
from rules.comments import COMMENTS_PER_SIDE


def wire_telegram(
    connector: TelegramConnector, tasks: TaskFlow, chats: ChatFlow, config: Callable[[], BridgeConfig]
) -> None:
    resolve = ResolveConversation(connector, tasks)

    def creator_for(chat: int) -> Creator | None:
        return next((c for c in config().creators if c.destination == f"telegram:{chat}"), None)

    def stores_in(chat: int) -> tuple[Store | None, Store | None]:
        """The store whose task orders, and the one whose platform chats, this group holds."""
        here = f"telegram:{chat}"
        stores = config().stores
        return (next((s for s in stores if s.destinations.task_orders == here), None),
                next((s for s in stores if s.destinations.platform_chats == here), None))  # fmt: skip

    async def thread_of(tag: str, inbound: TelegramInbound, wait: bool) -> str | None:
        """The thread (``chat:<id>``, ``task:<id>``) a message was written in: its forum topic, or
        the message of a chain it replies to."""
        if inbound.thread is not None:
            ref = f"topic:{inbound.thread}"
        elif inbound.reply_to is not None:
            ref = str(inbound.reply_to)
        else:
            return None
        lookup = refs.parent_of if wait else refs.chat_of
        return await lookup(connector.redis, tag, "telegram", str(inbound.chat), ref)

    async def answer(inbound: TelegramInbound, text: str | None = None) -> None:
        job = OutboxJob(f"telegram:answer:{inbound.callback_id}", ANSWER,
                        {"id": inbound.callback_id, "text": text})  # fmt: skip
        await connector.outbox.enqueue(keys.NO_ENDPOINT_TAG, f"chat:{inbound.chat}", job)

    # -- a creator's chat ------------------------------------------------------------------------

    async def on_creator(inbound: TelegramInbound) -> bool:
        creator = creator_for(inbound.chat)
        if creator is None:
            return False
        if inbound.callback is not None:
            await answer(inbound)
            kind, _, tid = inbound.callback.partition(":")
            store = await tasks.store_of_task(tid) if kind == "log" else None
            if store is not None:
                text = await tasks.log_text(store, tid, creator.locale)
                await connector.queue_reply(inbound, text, f"log:{inbound.chat}:{inbound.callback_id}")
            return True
        parent = await thread_of(keys.creator_tag(creator.id), inbound, wait=True)
        if parent is None or not parent.startswith("task:") or not inbound.text.strip():
            return False
        tid = parent.removeprefix("task:")
        store = await tasks.store_of_task(tid)
        if store is None:
            return False
        refusal = await tasks.comment(store, tid, "creator", inbound.actor(), creator.id, creator.name, inbound.text)
        if refusal is not None:
            await connector.queue_reply(inbound, refusal, f"refuse:{inbound.chat}:{inbound.message}")
        return True

    # -- a store's group -------------------------------------------------------------------------

    async def on_store_group(inbound: TelegramInbound) -> bool:
        task_store, chat_store = stores_in(inbound.chat)
        if task_store is None and chat_store is None:
            return False
        if inbound.callback is not None:
            if task_store is None:
                return False
            await on_card_button(task_store, inbound)
            return True
        if inbound.text.startswith("/"):
            return False
        parent, owner = None, None
        candidates = [s for s in (task_store, chat_store) if s is not None]
        candidates = [s for i, s in enumerate(candidates) if s not in candidates[:i]]
        for i, store in enumerate(candidates):  # waits for a just-posted message's mapping only once
            parent = await thread_of(keys.store_tag(store.id), inbound, wait=i == len(candidates) - 1)
            if parent is not None:
                owner = store
                break
        if parent is not None and parent.startswith("task:") and owner is task_store and task_store is not None:
            await on_task_message(task_store, parent.removeprefix("task:"), inbound)
            return True
        if chat_store is None:
            return False
        cid = parent.removeprefix("chat:") if parent and parent.startswith("chat:") else None
        await chats.reply(chat_store, cid, inbound.actor(), inbound.text, inbound.media)
        return True

    async def on_task_message(store: Store, tid: str, inbound: TelegramInbound) -> None:
        if await resolve.on_message(store, tid, inbound):
            return
        for media in inbound.media:  # offered as evidence when the task order is processed (B7)
            await tasks.add_thread_file(store, tid, {"service": "telegram", "url": media.url, "name": media.name,
                                                     "mimetype": media.mimetype, "size": media.size})  # fmt: skip
        if not inbound.text.strip():
            return
        agent = next((a for a in store.agents if a.telegram_user == inbound.user), None)
        author_id, author = (agent.id, agent.name) if agent else (str(inbound.user), str(inbound.user))
        refusal = await tasks.comment(store, tid, "merchant", inbound.actor(), author_id, author, inbound.text)
        if refusal is not None:
            await connector.queue_reply(inbound, refusal, f"refuse:{inbound.chat}:{inbound.message}")

    async def on_card_button(store: Store, inbound: TelegramInbound) -> None:
        kind, _, tid = (inbound.callback or "").partition(":")
        toast = None
        if kind == "log":
            text = await tasks.log_text(store, tid, store.locale)
            await connector.queue_reply(inbound, text, f"log:{inbound.chat}:{inbound.callback_id}")
        elif kind == "cm":
            await connector.queue_reply(
                inbound, t(store.locale, "task.comment_hint", limit=COMMENTS_PER_SIDE), f"hint:{inbound.callback_id}"
            )
        elif kind in RESULTS:
            toast = await resolve.start(store, tid, kind, inbound)
        elif kind in STEP_BUTTONS:
            toast = await resolve.on_button(store, tid, kind, inbound)
        await answer(inbound, toast)

    async def list_tasks(inbound: TelegramInbound, args: list[str]) -> str:
        status = next((a for a in args if not a.isdigit()), "pending")
        page = next((int(a) for a in args if a.isdigit()), 1)
        creator = creator_for(inbound.chat)
        if creator is not None:
            return await tasks.creator_list_text(creator, status, page)
        task_store, chat_store = stores_in(inbound.chat)
        store = task_store or chat_store
        if store is None:
            return t("zh-CN", "stats.unknown_channel")
        return await tasks.list_text(store, status, store.locale, page)

    connector.handlers.append(on_creator)
    connector.handlers.append(on_store_group)
    connector.commands["tasks"] = list_tasks
