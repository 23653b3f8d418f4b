"""Core views → Telegram messages (HTML text + inline keyboard)."""

from __future__ import annotations

import copy
import html
import re
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from telegram import CopyTextButton, InlineKeyboardButton, InlineKeyboardMarkup

from bridge.i18n import DEFAULT_LOCALE, t

COPY_TEXT_MAX = 256
"""The longest text a copy button may hold; a longer link is a link button."""


def _people(view: dict[str, Any]) -> str:
    people = view.get("people", [])
    return " ".join(
        f'<a href="tg://user?id={p["telegram"]}">{html.escape(p["name"])}</a>'
        if p.get("telegram")
        else html.escape(p["name"])
        for p in people
    )


def _fill(text: str, view: dict[str, Any]) -> str:
    out = html.escape(text, quote=False).replace("{mention}", _people(view))
    if view.get("deadline"):
        # As in Slack: a task order's deadline is a day away (its date and time), a reply window's
        # minutes (the time to the second: "by 01:34" would read as up to a minute more than there is).
        tz = ZoneInfo(str(view.get("timezone") or "Asia/Shanghai"))
        shown = "%Y-%m-%d %H:%M" if view.get("deadline_date") else "%H:%M:%S"
        out = out.replace("{deadline}", datetime.fromtimestamp(float(view["deadline"]), tz).strftime(shown))
    return out


def _keyboard(buttons: list[dict[str, str]]) -> InlineKeyboardMarkup | None:
    row = []
    for b in buttons:
        if b.get("copy") and len(b["url"]) <= COPY_TEXT_MAX:
            # B3's "copy share link": Telegram copies it to the clipboard, to paste in any IM.
            row.append(InlineKeyboardButton(b["label"], copy_text=CopyTextButton(b["url"])))
        elif b.get("url"):
            row.append(InlineKeyboardButton(b["label"], url=b["url"]))
        elif b.get("short"):
            # Over Telegram's 64 bytes, the sender puts a key to it in its place (TelegramConnector._fit).
            row.append(InlineKeyboardButton(b["label"], callback_data=f"{b['short']}:{b.get('value', '')}"))
    return InlineKeyboardMarkup([row[i : i + 3] for i in range(0, len(row), 3)]) if row else None


def _platform_message(view: dict[str, Any]) -> tuple[str, InlineKeyboardMarkup | None]:
    content, sender = view["content"], html.escape(view.get("sender", ""))
    if content["type"] == "text":
        return f"<b>{sender}</b>: {html.escape(content['text'])}", None
    if content["type"] == "image":
        label = html.escape(str(view.get("image_label") or "🖼"))
        return f'<b>{sender}</b>: <a href="{html.escape(content["url"])}">🖼 {label}</a>', None
    amount = f"¥{content['amount_cents'] / 100:,.2f}"
    text = (f"<b>{sender}</b>: 🧾 <b>{html.escape(content['order_id'])}</b>\n{html.escape(content['product_name'])}"
            f" · {amount} · {html.escape(content['status'])}")  # fmt: skip
    label = str(view.get("detail_label") or "🔗")
    return text, InlineKeyboardMarkup([[InlineKeyboardButton(label, url=content["detail_url"])]])


TOPIC_ICONS = {"waiting": "⏳", "answered": "💬", "closed": "⛔", "pending": "⏳", "resolved": "✅",
               "unresolvable": "⚠️", "timed_out": "⌛"}  # fmt: skip


def topic_name(view: dict[str, Any]) -> str:
    """A forum topic's name: the thread's status at a glance, then what it is about (≤ 128)."""
    icon = TOPIC_ICONS.get(str(view.get("status", "")), "")
    return f"{icon} {view.get('topic') or view.get('title') or ''}".strip()[:128]


TEXT_CHARS = 4096
"""Telegram refuses a message of more characters than this once its HTML is read ("message is too
long"): a post, and the root's every edit, must fit."""
_TAG = re.compile(r"<[^>]*>")


def shown_length(text: str) -> int:
    """The characters Telegram counts in an HTML message: its tags read, its entities undone."""
    return len(html.unescape(_TAG.sub("", text)))


def render(view: dict[str, Any]) -> tuple[str, InlineKeyboardMarkup | None]:
    """A view as Telegram HTML and its keyboard. A message refused for its length would not be shown
    at all, so one over Telegram's length has its longest parts (what the platform or a person wrote)
    cut to fit, each with a note of how much is not shown and where to read it all."""
    text, markup = _render(view)
    over = shown_length(text) - TEXT_CHARS
    return (text, markup) if over <= 0 else _render(_cut_to_fit(view, over))


def _cut_to_fit(view: dict[str, Any], over: int) -> dict[str, Any]:
    """``view`` with its longest written parts cut to one length, as long as the whole can be, with
    the note after each: ``over`` characters fewer in all, notes included."""
    view = copy.deepcopy(view)
    places: list[tuple[Any, Any]] = []  # (container, key) of each text the platform or a person wrote
    if isinstance(view.get("text"), str):
        places.append((view, "text"))
    for message in (view, view.get("first_message") or {}):
        content = message.get("content")
        if isinstance(content, dict) and isinstance(content.get("text"), str):
            places.append((content, "text"))
    if "fields" in view:
        view["fields"] = [list(field) for field in view["fields"]]
        places += [(field, 1) for field in view["fields"] if isinstance(field[1], str)]
    lengths = [len(where[key]) for where, key in places]
    locale = str(view.get("locale") or DEFAULT_LOCALE)
    added = 1 + len(t(locale, "message.cut", count=max(lengths, default=0)))  # "…" and the note, at most
    budget = sum(lengths) - over

    def length_with(cap: int) -> int:  # a part longer than cap plus its note is cut to cap, then the note
        return sum(min(n, cap + added) for n in lengths)

    low, high = 0, max(lengths, default=0)  # the longest cap that fits (length_with only grows with it)
    while low < high:
        middle = (low + high + 1) // 2
        low, high = (middle, high) if length_with(middle) <= budget else (low, middle - 1)
    for (where, key), n in zip(places, lengths, strict=True):
        if n > low + added:
            where[key] = where[key][:low] + "…" + t(locale, "message.cut", count=n - low)
    return view


def _render(view: dict[str, Any]) -> tuple[str, InlineKeyboardMarkup | None]:
    kind = view["type"]
    if kind == "platform_message":
        return _platform_message(view)
    if kind == "chat_root":
        lines = [f"<b>{html.escape(view['title'])}</b>", html.escape(view["platform_agent"])]
        lines += [_fill(view[k], view) for k in ("assignee", "status_line") if view.get(k)]
        rows: list[list[InlineKeyboardButton]] = []
        if view.get("first_message"):
            first, card = _platform_message(view["first_message"] | {"detail_label": view.get("detail_label")})
            lines += ["", first]
            rows += [list(row) for row in card.inline_keyboard] if card else []
        header = _keyboard(view.get("buttons", []))
        rows += [list(row) for row in header.inline_keyboard] if header else []
        return "\n".join(lines), InlineKeyboardMarkup(rows) if rows else None
    if kind == "card":
        lines = [f"<b>{html.escape(view['title'])}</b>"]
        lines += [f"<b>{html.escape(k)}</b>: {_fill(str(v), view)}" for k, v in view.get("fields", [])]
        if view.get("status_line"):
            lines.append(_fill(view["status_line"], view))
        return "\n".join(lines), _keyboard(view.get("buttons", []))
    if kind == "notice":
        return _fill(view["text"], view), _keyboard(view.get("buttons", []))
    raise ValueError(f"Telegram cannot show a {kind!r} view yet")
