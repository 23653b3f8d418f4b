"""Core views → Telegram messages (HTML text + inline keyboard)."""

from __future__ import annotations

import html
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from telegram import InlineKeyboardButton, InlineKeyboardMarkup


def _people(view: dict[str, Any]) -> str:
    people = view.get("people", [])
    return " ".join(
        f'<a href="tg://user?id={p["telegram"]}">{html.escape(p["name"])}</a>'
        if p.get("telegram")
        else html.escape(p["name"])
        for p in people
    )


def _fill(text: str, view: dict[str, Any]) -> str:
    out = html.escape(text).replace("{mention}", _people(view))
    if view.get("deadline"):
        tz = ZoneInfo(str(view.get("timezone") or "Asia/Shanghai"))
        out = out.replace("{deadline}", datetime.fromtimestamp(float(view["deadline"]), tz).strftime("%Y-%m-%d %H:%M"))
    return out


def _keyboard(buttons: list[dict[str, str]]) -> InlineKeyboardMarkup | None:
    row = []
    for b in buttons:
        if b.get("url"):
            row.append(InlineKeyboardButton(b["label"], url=b["url"]))
        elif b.get("telegram_data"):
            row.append(InlineKeyboardButton(b["label"], callback_data=b["telegram_data"]))  # ≤ 64 bytes
    return InlineKeyboardMarkup([row[i : i + 3] for i in range(0, len(row), 3)]) if row else None


def render(view: dict[str, Any]) -> tuple[str, InlineKeyboardMarkup | None]:
    kind = view["type"]
    if kind == "card":
        lines = [f"<b>{html.escape(view['title'])}</b>"]
        lines += [f"<b>{html.escape(k)}</b>: {_fill(str(v), view)}" for k, v in view.get("fields", [])]
        if view.get("status_line"):
            lines.append(_fill(view["status_line"], view))
        return "\n".join(lines), _keyboard(view.get("buttons", []))
    if kind == "notice":
        return _fill(view["text"], view), _keyboard(view.get("buttons", []))
    raise ValueError(f"Telegram cannot show a {kind!r} view yet")
