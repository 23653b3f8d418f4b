"""``bridge check --online`` for Slack: the token works, and the bot is in every channel the
configuration names."""

from __future__ import annotations

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bridge.config import BridgeConfig, Problem
from connectors.slack.settings import SlackSettings


async def probe(settings: SlackSettings, config: BridgeConfig) -> list[Problem]:
    client = AsyncWebClient(token=settings.bot_token, base_url=settings.api_base_url, timeout=10)
    try:
        me = await client.auth_test()
    except SlackApiError as exc:
        return [Problem("slack.bot_token", f"Slack refused the token: {exc.response.get('error')}")]
    except Exception as exc:  # any way of not reaching Slack is the operator's to see
        return [Problem("slack.api_base_url", f"Slack is not reachable: {exc}")]
    problems = []
    for path, channel in dict.fromkeys(config.targets("slack")):
        try:
            info = (await client.conversations_info(channel=channel))["channel"]
        except SlackApiError as exc:
            problems.append(Problem(path, f"channel {channel}: {exc.response.get('error')} (is the id right?)"))
            continue
        if not info.get("is_member", True):
            problems.append(Problem(path, f"the bot ({me.get('user')}) is not in #{info.get('name', channel)}: "
                                          f"/invite @{me.get('user')} there"))  # fmt: skip
    if settings.socket_mode and settings.app_token:
        try:
            await client.apps_connections_open(app_token=settings.app_token)
        except SlackApiError as exc:
            problems.append(Problem("slack.app_token", f"Socket Mode refused: {exc.response.get('error')}"))
    return problems
