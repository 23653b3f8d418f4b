"""What people do in Telegram, turned into flow calls: creators' replies under a task order are
comments (B5), the Log button shows the processing log (B4), /tasks lists task orders (B10)."""

from __future__ import annotations

from collections.abc import Callable

from bridge import keys, refs
from bridge.chats import Actor, ChatFlow, ReplyMedia
from bridge.config import BridgeConfig, Creator
from bridge.outbox import OutboxJob
from bridge.tasks import TaskFlow
from connectors.telegram.app import TelegramConnector, TelegramInbound


def wire_telegram(
    connector: TelegramConnector, tasks: TaskFlow, chats: ChatFlow, config: Callable[[], BridgeConfig]
) -> None:
    def creator_for(chat: int) -> Creator | None:
        return next((c for c in config().creators if c.destination == f"telegram:{chat}"), None)

    async def task_of(creator: Creator, inbound: TelegramInbound, message: int | None) -> str | None:
        if message is None:
            return None
        parent = await refs.chat_of(
            connector.redis, keys.creator_tag(creator.id), "telegram", str(inbound.chat), str(message)
        )
        return parent.removeprefix("task:") if parent and parent.startswith("task:") else None

    async def on_creator(inbound: TelegramInbound) -> bool:
        creator = creator_for(inbound.chat)
        if creator is None:
            return False
        if inbound.callback is not None:
            await answer_callback(inbound, creator)
            return True
        tid = await task_of(creator, inbound, inbound.reply_to)
        if tid is None or not inbound.text.strip():
            return False
        store = await tasks.store_of_task(tid)
        if store is None:
            return False
        actor = Actor("telegram", str(inbound.user), str(inbound.chat), None, str(inbound.message))
        refusal = await tasks.comment(store, tid, "creator", actor, creator.id, creator.name, inbound.text)
        if refusal is not None:
            await connector.queue_reply(inbound, refusal, f"refuse:{inbound.chat}:{inbound.message}")
        return True

    async def answer_callback(inbound: TelegramInbound, creator: Creator) -> None:
        kind, _, tid = (inbound.callback or "").partition(":")
        answer = OutboxJob(f"telegram:answer:{inbound.callback_id}", "telegram.answer", {"id": inbound.callback_id})
        await connector.outbox.enqueue("{telegram}", f"chat:{inbound.chat}", answer)
        if kind == "log":
            store = await tasks.store_of_task(tid)
            if store is not None:
                text = await tasks.log_text(store, tid, creator.locale)
                await connector.queue_reply(inbound, text, f"log:{inbound.chat}:{inbound.callback_id}")

    async def list_tasks(inbound: TelegramInbound, args: list[str]) -> str:
        creator = creator_for(inbound.chat)
        store = next(iter(config().stores), None)
        status = next((a for a in args if not a.isdigit()), "pending")
        page = next((int(a) for a in args if a.isdigit()), 1)
        locale = creator.locale if creator else "zh-CN"
        if store is None:
            return ""
        return await tasks.list_text(store, status, locale, page)

    async def on_merchant_chat(inbound: TelegramInbound) -> bool:
        """A message in a store's Telegram group for platform chats: a reply (to any message of a
        chat's chain) answers that chat; anything else is refused as one-way contact (A7)."""
        store = next((s for s in config().stores if s.destinations.platform_chats == f"telegram:{inbound.chat}"), None)
        if store is None or inbound.callback is not None or inbound.text.startswith("/"):
            return False
        parent = None
        if inbound.reply_to is not None:
            parent = await refs.parent_of(connector.redis, keys.store_tag(store.id), "telegram", str(inbound.chat),
                                          str(inbound.reply_to))  # fmt: skip
        cid = parent.removeprefix("chat:") if parent and parent.startswith("chat:") else None
        media = [ReplyMedia("telegram", inbound.photo, "photo.jpg", "image/jpeg", 0)] if inbound.photo else []
        actor = Actor("telegram", str(inbound.user), str(inbound.chat), None, str(inbound.message))
        await chats.reply(store, cid, actor, inbound.text, media)
        return True

    connector.handlers.append(on_creator)
    connector.handlers.append(on_merchant_chat)
    connector.commands["tasks"] = list_tasks
