"""Slack mrkdwn → the plain Unicode text the platform shows (A8)."""

from __future__ import annotations

import html
import re
from collections.abc import Mapping

import emoji

# Slack writes a skin tone as a separate shortcode after the emoji (":+1::skin-tone-3:").
_SKIN_TONES = {
    "skin-tone-2": "\U0001f3fb",
    "skin-tone-3": "\U0001f3fc",
    "skin-tone-4": "\U0001f3fd",
    "skin-tone-5": "\U0001f3fe",
    "skin-tone-6": "\U0001f3ff",
}
_SKIN = re.compile(r":(skin-tone-[2-6]):")
_LINK = re.compile(r"<((?:https?|mailto):[^|>]+)(?:\|([^>]+))?>")
_MENTION = re.compile(r"<[@#!]([^|>]+)(?:\|([^>]+))?>")


def slack_to_platform_text(text: str, names: Mapping[str, str] | None = None) -> str:
    """Shortcodes (and skin tones) become Unicode emoji, links show their label and address,
    mentions their label (a person's ``names``, by Slack user id, where Slack gives none), and
    Slack's HTML escapes are undone."""
    text = _LINK.sub(lambda m: f"{m.group(2)} ({m.group(1)})" if m.group(2) else m.group(1), text)
    named = names or {}
    text = _MENTION.sub(lambda m: "@" + (m.group(2) or named.get(m.group(1)) or m.group(1)), text)
    text = _SKIN.sub(lambda m: _SKIN_TONES[m.group(1)], text)
    text = emoji.emojize(text, language="alias")
    return html.unescape(text)
