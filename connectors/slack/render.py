"""Core views → Slack messages (text fallback + Block Kit)."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from bridge.config import Store
from bridge.i18n import t


def mention(store: Store | None, agent_ids: list[str]) -> str:
    by_id = {a.id: a for a in store.agents} if store else {}
    out = []
    for agent_id in agent_ids:
        agent = by_id.get(agent_id)
        slack_user = agent.identity("slack") if agent is not None else None
        if slack_user:
            out.append(f"<@{slack_user}>")
        else:
            out.append(agent.name if agent else agent_id)
    return " ".join(out)


def deadline(store: Store | None, ts: float, with_date: bool = False) -> str:
    """Shown in each reader's own time zone by Slack; the fallback is the store's. A reply window is
    minutes away (the time, to the second); a task order's deadline is a day away (date and time)."""
    at = datetime.fromtimestamp(ts, ZoneInfo(store.timezone if store else "Asia/Shanghai"))
    if with_date:
        return f"<!date^{int(ts)}^{{date_num}} {{time}}|{at:%Y-%m-%d %H:%M}>"
    return f"<!date^{int(ts)}^{{time_secs}}|{at:%H:%M:%S}>"


SECTION_CHARS = 3000
FIELD_CHARS = 2000
HEADER_CHARS = 150
BUTTON_CHARS = 75
MAX_SECTIONS = 40
MAX_BLOCKS = 50
TEXT_CHARS = 40_000
"""Block Kit refuses a whole message (``invalid_blocks``) when a section's text passes 3,000
characters, a field's 2,000, a header's 150 or a button's 75, or when it has more than 50 blocks (and cuts the
notification text at 40,000). A long text is spread over several sections (40 of them, 120,000
characters, leave room for the rest of the message), so a long question from the platform arrives
whole rather than not at all."""


def escaped(text: str) -> str:
    """Slack reads ``<``, ``>`` and ``&`` in a text as markup (a link, a mention, @channel). What
    people and the platform wrote is escaped as Slack asks, so it shows as written and pings nobody."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _sections(text: str) -> list[dict[str, Any]]:
    """``text`` as section blocks of at most SECTION_CHARS each, cut at a line break, else a space, in
    the second half of a section where there is one, and never inside an escape. (What ``_fill`` puts
    in, a mention or a date, sits in the short texts of the catalogue, far from a cut.)"""
    parts: list[str] = []
    while len(text) > SECTION_CHARS and len(parts) < MAX_SECTIONS:
        half = SECTION_CHARS // 2  # a break in the second half, or the sections get needlessly short
        cut = text.rfind("\n", half, SECTION_CHARS)
        cut = cut if cut > 0 else text.rfind(" ", half, SECTION_CHARS)
        cut = cut if cut > 0 else text.rfind("&", SECTION_CHARS - 4, SECTION_CHARS)  # an escape left whole
        cut = cut if cut > 0 else SECTION_CHARS
        parts.append(text[:cut])
        text = text[cut:].removeprefix("\n")
    if len(parts) == MAX_SECTIONS:
        parts[-1] = parts[-1][: SECTION_CHARS - 1] + "…"
    else:
        parts.append(text)
    return [{"type": "section", "text": {"type": "mrkdwn", "text": part or " "}} for part in parts]


def _fill(store: Store | None, text: str, view: dict[str, Any]) -> str:
    text = escaped(text).replace("{mention}", mention(store, list(view.get("mentions", []))))
    if view.get("deadline"):
        text = text.replace("{deadline}", deadline(store, float(view["deadline"]), bool(view.get("deadline_date"))))
    return text


def render(store: Store | None, view: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
    """A view as Slack's notification text and blocks, within Block Kit's limits."""
    text, blocks = _render(store, view)
    while len(blocks) > MAX_BLOCKS:  # the last of the text goes; the buttons stay
        blocks.pop(max(i for i, b in enumerate(blocks) if b["type"] != "actions"))
    return (text if len(text) <= TEXT_CHARS else text[: TEXT_CHARS - 1] + "…"), blocks


def _render(store: Store | None, view: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
    kind = view["type"]
    if kind == "chat_root":
        lines = [escaped(view["platform_agent"]), _fill(store, view["assignee"], view),
                 _fill(store, view["status_line"], view)]  # fmt: skip
        body = "\n".join(line for line in lines if line)
        blocks = [_header(view["title"]), *_sections(body)]
        # The notification text (and what a screen reader says) carries the header too: who has it.
        parts = [escaped(view["title"]), _fill(store, view.get("assignee") or "", view),
                 _fill(store, view["status_line"], view)]  # fmt: skip
        text = " · ".join(part for part in parts if part)
        if view.get("buttons"):
            blocks.append(_actions(view["buttons"]))
        if view.get("first_message"):
            first_text, first_blocks = _platform_message(store, view["first_message"])
            blocks += [{"type": "divider"}, *first_blocks]
            text = f"{text}\n{first_text}"
        return text, blocks
    if kind == "notice":
        text = _fill(store, view["text"], view)
        notice = _sections(text)
        if view.get("buttons"):
            notice.append(_actions(view["buttons"]))
        return text, notice
    if kind == "platform_message":
        return _platform_message(store, view)
    if kind == "card":
        return _card(store, view)
    raise ValueError(f"unknown view {kind!r}")


def _platform_message(store: Store | None, view: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
    content, sender = view["content"], escaped(view.get("sender", ""))
    prefix = f"*{sender}*: " if sender else ""
    if content["type"] == "text":
        text = escaped(content["text"])
        return f"{sender}: {text}", _sections(prefix + text)
    if content["type"] == "image":
        alt = t(_locale(store, view), "chat.image")
        return f"{sender}: {alt}", [
            {"type": "context", "elements": [{"type": "mrkdwn", "text": prefix + alt}]},
            {"type": "image", "image_url": content["url"], "alt_text": alt},
        ]
    loc = _locale(store, view)
    amount = f"¥{content['amount_cents'] / 100:,.2f}"
    fields = [
        (t(loc, "order.id"), content["order_id"]),
        (t(loc, "order.product"), content["product_name"]),
        (t(loc, "order.amount"), amount),
        (t(loc, "order.status"), content["status"]),
    ]
    return f"{sender}: {t(loc, 'order.title')} {escaped(content['order_id'])}", [
        {"type": "section", "text": {"type": "mrkdwn", "text": f"{prefix}{t(loc, 'order.title')}"}},
        *_field_blocks([f"*{k}*\n{escaped(str(v))}" for k, v in fields]),
        {
            "type": "actions",
            "elements": [
                {
                    "type": "button",
                    "text": {"type": "plain_text", "text": t(loc, "order.view")},
                    "url": content["detail_url"],
                    "action_id": "order_detail",
                }
            ],
        },
    ]


def images_as_links(blocks: list[dict[str, Any]]) -> list[dict[str, Any]] | None:
    """``blocks`` with each image block a link to its picture instead (None when there is none)."""
    if not any(b["type"] == "image" for b in blocks):
        return None

    def link(image: dict[str, Any]) -> dict[str, Any]:
        text = f"<{escaped(image['image_url'])}|🖼 {escaped(image['alt_text'])}>"
        return {"type": "section", "text": {"type": "mrkdwn", "text": text}}

    return [link(b) if b["type"] == "image" else b for b in blocks]


def _locale(store: Store | None, view: dict[str, Any]) -> str:
    return str(view.get("locale") or (store.locale if store else "zh-CN"))


def _actions(buttons: list[dict[str, str]]) -> dict[str, Any]:
    elements: list[dict[str, Any]] = []
    for b in buttons:
        element: dict[str, Any] = {"type": "button", "text": {"type": "plain_text", "text": b["label"][:BUTTON_CHARS]}}
        if b.get("url"):
            element |= {"url": b["url"], "action_id": f"link_{len(elements)}"}
        else:
            element |= {"action_id": b["action"], "value": b.get("value", "")}
        elements.append(element)
    return {"type": "actions", "elements": elements}


def _card(store: Store | None, view: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
    """A task order card; the notification text starts with its title, which starts with the issue type."""
    fields = [f"*{escaped(k)}*\n{_fill(store, str(v), view)}" for k, v in view.get("fields", [])]
    blocks: list[dict[str, Any]] = [_header(view["title"]), *_field_blocks(fields)]
    status = _fill(store, view.get("status_line", ""), view)
    if status:
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": status[:SECTION_CHARS]}]})
    if view.get("buttons"):
        blocks.append(_actions(view["buttons"]))
    return f"{escaped(view['title'])} · {status}".strip(" ·"), blocks


def _header(title: str) -> dict[str, Any]:
    return {"type": "header", "text": {"type": "plain_text", "text": title[:HEADER_CHARS], "emoji": True}}


def _field_blocks(fields: list[str]) -> list[dict[str, Any]]:
    """Fields side by side, ten a section (Slack's most); a field too long for a field (a consumer's
    whole story) gets sections of its own after them, in full."""
    short = [{"type": "mrkdwn", "text": f} for f in fields if len(f) <= FIELD_CHARS]
    blocks = [{"type": "section", "fields": short[i : i + 10]} for i in range(0, len(short), 10)]
    for f in fields:
        if len(f) > FIELD_CHARS:
            blocks += _sections(f)
    return blocks
