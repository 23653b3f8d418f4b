"""What an operator does once for the Telegram bot, and long polling for a bridge without a public
URL: the webhook (URL, secret token, the update types handled), the command menu in both locales,
and a poller that takes updates with getUpdates and hands each to the bridge's own webhook — stored
and handled exactly as a pushed one — before asking Telegram for the next."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import aiohttp
from telegram import Bot, BotCommand

from bridge.i18n import DEFAULT_LOCALE, LOCALES, t

log = logging.getLogger(__name__)

WEBHOOK_PATH = "/telegram/webhook"
SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
ALLOWED_UPDATES = ["message", "edited_message", "callback_query", "my_chat_member"]
"""The update types the connector handles (connectors/telegram/app.py); Telegram sends no other."""

COMMANDS = ("tasks", "stats", "help")
POLL_TIMEOUT_SECONDS = 30
"""How long one getUpdates waits on Telegram's side for an update (long polling)."""


async def set_webhook(bot: Bot, public_url: str, secret: str) -> str:
    url = public_url.rstrip("/") + WEBHOOK_PATH
    await bot.set_webhook(url=url, secret_token=secret, allowed_updates=ALLOWED_UPDATES)
    return url


async def set_commands(bot: Bot) -> list[str]:
    """The command menu: the default list in the default locale, and one per other locale."""
    done = []
    for locale in LOCALES:
        commands = [BotCommand(name, t(locale, f"telegram.command.{name}")) for name in COMMANDS]
        language = None if locale == DEFAULT_LOCALE else locale.split("-")[0]
        await bot.set_my_commands(commands, language_code=language)
        done.append(language or "default")
    return done


async def poll(
    bot: Bot,
    webhook_url: str,
    secret: str,
    stop: asyncio.Event,
    *,
    idle_pause: float = 1.0,
    retry_pause: float = 2.0,
    poll_timeout: int = POLL_TIMEOUT_SECONDS,
) -> int:
    """Long polling until ``stop``: an update is confirmed to Telegram (the next offset) only after
    the bridge answered 200, that is, stored it; while the bridge answers otherwise it is offered
    again, so nothing is lost. Returns how many updates were handed over."""
    await bot.delete_webhook(drop_pending_updates=False)  # Telegram refuses getUpdates beside a webhook
    offset: int | None = None
    handed = 0
    async with aiohttp.ClientSession() as http:
        while not stop.is_set():
            kwargs: dict[str, Any] = {"timeout": poll_timeout, "allowed_updates": ALLOWED_UPDATES}
            if offset is not None:
                kwargs["offset"] = offset
            updates = await bot.do_api_request("getUpdates", api_kwargs=kwargs, read_timeout=poll_timeout + 10)
            for update in updates:
                while not await _hand_over(http, webhook_url, secret, update):
                    if stop.is_set():
                        return handed
                    await asyncio.sleep(retry_pause)
                offset = int(update["update_id"]) + 1
                handed += 1
            if not updates:
                await asyncio.sleep(idle_pause)
    return handed


async def _hand_over(http: aiohttp.ClientSession, url: str, secret: str, update: dict[str, Any]) -> bool:
    try:
        async with http.post(url, json=update, headers={SECRET_HEADER: secret}) as resp:
            if resp.status == 200:
                return True
            log.warning("telegram poll: the bridge answered %s for update %s; offered again", resp.status,
                        update.get("update_id"))  # fmt: skip
    except aiohttp.ClientError as error:
        log.warning("telegram poll: the bridge is not reachable (%s); update offered again", error)
    return False
