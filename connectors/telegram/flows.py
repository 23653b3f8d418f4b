"""What people do in Telegram, handed to the core's inbound router (``bridge.flows.router``).

- Messages: a message in a thread (a forum topic, or a reply to any message of a reply chain) is
  routed by the core: an answer to a platform chat, a comment on a task order, a file offered as
  evidence, or the next step of a resolve conversation (``resolve.py``).
- The card's buttons: Log, Comment, Resolve, Cannot resolve, and the resolve conversation's steps.
- ``/tasks [status] [page]`` lists task orders (B10), the store's or the creator's.
"""

from __future__ import annotations

from bridge.config import Store
from bridge.engine import keys
from bridge.engine.outbox import OutboxJob
from bridge.flows.router import Inbound, InboundRouter
from bridge.flows.tasks import TaskFlow
from connectors.telegram.app import ANSWER, TelegramConnector, TelegramInbound
from connectors.telegram.resolve import RESULTS, STEP_BUTTONS, ResolveConversation

SERVICE = "telegram"


def wire_telegram(connector: TelegramConnector, tasks: TaskFlow, router: InboundRouter) -> None:
    resolve = ResolveConversation(connector, tasks)

    async def answer(inbound: TelegramInbound, text: str | None = None) -> None:
        job = OutboxJob(f"telegram:answer:{inbound.callback_id}", ANSWER,
                        {"id": inbound.callback_id, "text": text})  # fmt: skip
        await connector.outbox.enqueue(keys.NO_ENDPOINT_TAG, f"chat:{inbound.chat}", job)

    async def on_update(inbound: TelegramInbound) -> bool:
        if inbound.callback is not None:
            await on_button(inbound)
            return True
        if inbound.text.startswith("/"):
            return False  # a command of another bot, or one we do not have
        threaded_under = (
            (f"topic:{inbound.thread}",) if inbound.thread is not None
            else (str(inbound.reply_to),) if inbound.reply_to is not None else ()
        )  # fmt: skip
        return await router.message(Inbound(inbound.actor(), inbound.text, inbound.media, threaded_under))

    async def on_button(inbound: TelegramInbound) -> None:
        kind, _, tid = (inbound.callback or "").partition(":")
        actor, toast = inbound.actor(), None
        store = router.place(SERVICE, str(inbound.chat)).task_store
        if kind == "log":
            await router.show_log(actor, tid, f"log:{inbound.chat}:{inbound.callback_id}")
        elif kind == "cm":
            await router.explain_comments(actor, f"hint:{inbound.callback_id}")
        elif kind in RESULTS and store is not None:
            toast = router.processing_refusal(actor) or await resolve.start(store, tid, kind, inbound)
        elif kind in STEP_BUTTONS and store is not None:
            toast = await resolve.on_button(store, tid, kind, inbound)
        await answer(inbound, toast)

    async def on_task_message(store: Store, tid: str, inbound: Inbound) -> bool:
        """A message under a card from someone in the middle of resolving it is the step's answer."""
        return await resolve.on_message(store, tid, TelegramInbound.of(inbound))

    async def list_tasks(inbound: TelegramInbound, args: list[str]) -> str:
        text, _ = await router.list_tasks(SERVICE, str(inbound.chat), args)
        return text

    connector.handlers.append(on_update)
    connector.commands["tasks"] = list_tasks
    router.task_message_hooks[SERVICE] = on_task_message
