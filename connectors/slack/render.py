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


def _fill(store: Store | None, text: str, view: dict[str, Any]) -> str:
    text = text.replace("{mention}", mention(store, list(view.get("mentions", []))))
    if view.get("deadline"):
        text = text.replace("{deadline}", deadline(store, float(view["deadline"]), bool(view.get("deadline_date"))))
    return text


def render(store: Store | None, view: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
    kind = view["type"]
    if kind == "chat_root":
        lines = [view["platform_agent"], _fill(store, view["assignee"], view), _fill(store, view["status_line"], view)]
        body = "\n".join(line for line in lines if line)
        blocks = [
            {"type": "header", "text": {"type": "plain_text", "text": view["title"], "emoji": True}},
            {"type": "section", "text": {"type": "mrkdwn", "text": body or " "}},
        ]
        # The notification text (and what a screen reader says) carries the header too: who has it.
        parts = [view["title"], _fill(store, view.get("assignee") or "", view), _fill(store, view["status_line"], view)]
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
        notice: list[dict[str, Any]] = [{"type": "section", "text": {"type": "mrkdwn", "text": text}}]
        if view.get("buttons"):
            notice.append(_actions(view["buttons"]))
        return text, notice
    if kind == "platform_message":
        return _platform_message(store, view)
    if kind == "card":
        return _card(store, view)
    raise ValueError(f"unknown view {kind!r}")


def _platform_message(store: Store | None, view: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
    content, sender = view["content"], view.get("sender", "")
    prefix = f"*{sender}*: " if sender else ""
    if content["type"] == "text":
        return f"{sender}: {content['text']}", [
            {"type": "section", "text": {"type": "mrkdwn", "text": prefix + content["text"]}}
        ]
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
    return f"{sender}: {t(loc, 'order.title')} {content['order_id']}", [
        {"type": "section", "text": {"type": "mrkdwn", "text": f"{prefix}{t(loc, 'order.title')}"}},
        {"type": "section", "fields": [{"type": "mrkdwn", "text": f"*{k}*\n{v}"} for k, v in fields]},
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


def _locale(store: Store | None, view: dict[str, Any]) -> str:
    return str(view.get("locale") or (store.locale if store else "zh-CN"))


def _actions(buttons: list[dict[str, str]]) -> dict[str, Any]:
    elements: list[dict[str, Any]] = []
    for b in buttons:
        element: dict[str, Any] = {"type": "button", "text": {"type": "plain_text", "text": b["label"]}}
        if b.get("url"):
            element |= {"url": b["url"], "action_id": f"link_{len(elements)}"}
        else:
            element |= {"action_id": b["action"], "value": b.get("value", "")}
        elements.append(element)
    return {"type": "actions", "elements": elements}


def _card(store: Store | None, view: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
    """A task order card; the notification text starts with its title, which starts with the issue type."""
    fields = [{"type": "mrkdwn", "text": f"*{k}*\n{_fill(store, str(v), view)}"} for k, v in view.get("fields", [])]
    blocks: list[dict[str, Any]] = [{"type": "header", "text": {"type": "plain_text", "text": view["title"][:150]}}]
    for i in range(0, len(fields), 10):  # Slack takes at most 10 fields a section
        blocks.append({"type": "section", "fields": fields[i : i + 10]})
    status = _fill(store, view.get("status_line", ""), view)
    if status:
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": status}]})
    if view.get("buttons"):
        blocks.append(_actions(view["buttons"]))
    return f"{view['title']} · {status}".strip(" ·"), blocks
