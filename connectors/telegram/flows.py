"""What people do in Telegram, handed to the core: messages to the inbound router
(``bridge.flows.router``); the card's buttons — Log, Comment, Resolve, Cannot resolve — and the
steps of the guided resolve conversation (``bridge.flows.resolve``: Telegram has no modals);
``/tasks [status] [page]`` to the router's listing (B10)."""

from __future__ import annotations

from bridge.core import Core
from bridge.engine import keys
from bridge.engine.outbox import OutboxJob
from bridge.flows.resolve import RESULTS, STEP_BUTTONS
from bridge.flows.router import CHAT_ACTIONS, Inbound
from connectors.telegram.app import ANSWER, DOWNLOAD_LIMIT, SERVICE, TelegramConnector, TelegramInbound
from connectors.telegram.setup import COMMANDS


def wire_telegram(connector: TelegramConnector, core: Core) -> None:
    router, resolve = core.router, core.resolve

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
        message = Inbound(inbound.actor(), inbound.text, inbound.media, threaded_under, inbound.parent_written_at,
                          inbound.parent_not_ours, in_reply_chain=inbound.thread is None)  # fmt: skip
        if inbound.edited:  # the platform keeps what it was sent; Telegram does not say what that was
            return await router.changed(message, original=None)
        return await router.message(message)

    async def on_button(inbound: TelegramInbound) -> None:
        kind, _, tid = (inbound.callback or "").partition(":")
        actor, at, toast = inbound.actor(), inbound.callback_id or str(inbound.message), None
        store = router.place(SERVICE, str(inbound.chat)).task_store
        if kind in CHAT_ACTIONS:
            await router.chat_action(actor, CHAT_ACTIONS[kind], tid, at)
        elif kind == "log":
            await router.show_log(actor, tid, f"log:{inbound.chat}:{inbound.callback_id}")
        elif kind == "cm":
            await router.explain_comments(actor, f"hint:{inbound.callback_id}")
        elif kind in RESULTS and store is not None:
            toast = router.processing_refusal(actor) or await resolve.start(store, tid, kind, actor, at)
        elif kind in STEP_BUTTONS and store is not None:
            toast = await resolve.on_button(store, tid, kind, actor, at)
        await answer(inbound, toast)

    async def list_tasks(inbound: TelegramInbound, args: list[str]) -> str:
        text, _ = await router.list_tasks(SERVICE, str(inbound.chat), args)
        return text

    async def stats(inbound: TelegramInbound, args: list[str]) -> str:
        text, _ = await router.stats(SERVICE, str(inbound.chat), args)
        return text

    async def help_text(inbound: TelegramInbound, args: list[str]) -> str:
        text, _ = router.help_text(inbound.actor(), {name: f"/{name}" for name in COMMANDS})
        return text

    connector.handlers.append(on_update)
    connector.commands["tasks"] = list_tasks
    connector.commands["stats"] = stats
    connector.commands["help"] = help_text
    connector.commands["start"] = help_text  # what Telegram sends when someone first opens the bot
    resolve.heads[SERVICE] = connector.file_head
    resolve.download_limits[SERVICE] = DOWNLOAD_LIMIT
    router.task_message_hooks[SERVICE] = resolve.on_message
