"""Slack as a destination: slack-bolt receives, slack_sdk sends (``app.py``)."""

from __future__ import annotations

from typing import Any

from bridge.destinations import Connector, Core, DestinationPlugin
from connectors.slack.settings import SlackSettings


def connect(settings: Any, core: Core) -> Connector:
    from connectors.slack.app import SlackConnector

    return SlackConnector(settings, core)


DESTINATION = DestinationPlugin("slack", SlackSettings, connect, "<channel id>")
