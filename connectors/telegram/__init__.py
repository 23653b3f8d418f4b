"""Telegram as a destination: python-telegram-bot receives and sends (``app.py``); ``flows.py``
hands what people do to the core (its router, and the guided resolve conversation)."""

from __future__ import annotations

from typing import Any

from bridge.config import BridgeConfig, Problem
from bridge.core import Core
from bridge.destinations import Connector, DestinationPlugin
from connectors.telegram.settings import TelegramSettings


def connect(settings: Any, core: Core) -> Connector:
    from connectors.telegram.app import TelegramConnector
    from connectors.telegram.flows import wire_telegram

    connector = TelegramConnector(settings, core)
    wire_telegram(connector, core)
    return connector


async def probe(settings: Any, config: BridgeConfig) -> list[Problem]:
    from connectors.telegram.probe import probe as telegram_probe

    return await telegram_probe(settings, config)


DESTINATION = DestinationPlugin(
    "telegram",
    TelegramSettings,
    connect,
    "<chat id>",
    target_pattern=r"-?[0-9]+",
    target_hint="a chat's numeric id such as 123456789, or -1001234567890 for a group, not a @username "
    "(/start or /help in the chat shows it)",
    account_pattern=r"[0-9]+",
    account_hint="a numeric user id such as 123456789, not a @username (/help to the bot shows one's own)",
    probe=probe,
)
