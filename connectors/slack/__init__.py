"""Slack as a destination: slack-bolt receives, slack_sdk sends (``app.py``)."""

from __future__ import annotations

from typing import Any

from bridge.config import BridgeConfig, Problem
from bridge.core import Core
from bridge.destinations import Connector, DestinationPlugin
from connectors.slack.settings import SlackSettings


def connect(settings: Any, core: Core) -> Connector:
    from connectors.slack.app import SlackConnector

    return SlackConnector(settings, core)


async def probe(settings: Any, config: BridgeConfig) -> list[Problem]:
    from connectors.slack.probe import probe as slack_probe

    return await slack_probe(settings, config)


DESTINATION = DestinationPlugin(
    "slack",
    SlackSettings,
    connect,
    "<channel id>",
    target_pattern=r"[CGD][A-Z0-9]{2,}",
    target_hint="a channel's id such as C0123ABCD, not its #name (`/feige help` in the channel shows it)",
    account_pattern=r"[UW][A-Z0-9]{2,}",
    account_hint="a member ID such as U0123ABCD, not a @name (in Slack: the person's profile → ⋮ → Copy member ID; "
    "`/feige help` shows one's own)",
    probe=probe,
)
