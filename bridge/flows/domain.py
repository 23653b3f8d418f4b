"""The things the bridge talks about — chats, messages, task orders — as the flows see them.

Field names follow the platform's event catalogue (PLATFORM-API.md) so the platform connector maps
its pushes onto these models one to one; Slack and Telegram never appear here.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Discriminator, Field, Tag

from rules.task_order import EXPLANATION_MAX_CHARS


class _Event(BaseModel):
    # Forward compatible: fields the platform adds later are kept, not refused.
    model_config = ConfigDict(extra="allow", frozen=True, coerce_numbers_to_str=True)


class Person(_Event):
    id: str
    name: str = ""


class PlatformAgent(_Event):
    agent_id: str
    name: str = ""


class TextContent(_Event):
    type: Literal["text"]
    text: str


class ImageContent(_Event):
    type: Literal["image"]
    url: str
    width: int | None = None
    height: int | None = None


class OrderCardContent(_Event):
    type: Literal["order_card"]
    order_id: str
    product_name: str
    amount_cents: int
    status: str
    detail_url: str


class OtherContent(_Event):
    """A kind of message this contract does not name yet (a video, a sticker …): taken and kept as
    sent, and shown as a pointer to Feige. Refusing the push would hold back the chat's every other
    message while platform CS's own window runs."""

    type: str


SHOWN_CONTENT = ("text", "image", "order_card")


def _content_kind(content: Any) -> str:
    kind = content.get("type") if isinstance(content, dict) else getattr(content, "type", None)
    return str(kind) if kind in SHOWN_CONTENT else "other"


Content = Annotated[
    Annotated[TextContent, Tag("text")]
    | Annotated[ImageContent, Tag("image")]
    | Annotated[OrderCardContent, Tag("order_card")]
    | Annotated[OtherContent, Tag("other")],
    Discriminator(_content_kind),
]


class ChatMessage(_Event):
    """im_platform_message: platform customer service writes in a chat with the store (A1)."""

    shop_id: str
    conversation_id: str
    message_id: str
    sent_at: AwareDatetime
    sender: PlatformAgent
    content: Content
    awaiting_reply: bool = True


CLOSE_REASONS = ("platform_closed", "reply_timeout", "service_ticket_created")


class ChatClosed(_Event):
    """im_platform_closed (A6)."""

    shop_id: str
    conversation_id: str
    closed_at: AwareDatetime
    reason: str = Field(min_length=1, max_length=64)
    """One of CLOSE_REASONS; a reason the platform adds later closes the chat all the same."""
    service_ticket_id: str | None = None


class Product(_Event):
    id: str
    name: str


class TaskOrderCreated(_Event):
    """task_order_created (B1)."""

    shop_id: str
    task_id: str
    created_at: AwareDatetime
    issue_type: str
    creator: Person
    order_id: str
    product: Product
    creator_suggestion: str
    consumer_description: str
    explanation_message: str | None = Field(default=None, max_length=EXPLANATION_MAX_CHARS)
    share_url: str
    buyer_chat_url: str
    deadline_at: AwareDatetime | None = None


class CommentAuthor(_Event):
    side: Literal["creator", "merchant"]
    id: str
    name: str = ""


class TaskOrderComment(_Event):
    """task_order_comment (B5)."""

    shop_id: str
    task_id: str
    comment_id: str
    author: CommentAuthor
    text: str
    created_at: AwareDatetime


class Evidence(_Event):
    url: str
    kind: str
    """``image`` or ``video``; another kind the platform adds later is taken too: refusing the push
    would leave the task order pending here, and time it out, though it was processed there."""
    size: int


class TaskOrderProcessed(_Event):
    """task_order_processed: processed on the platform directly (B8)."""

    shop_id: str
    task_id: str
    result: Literal["resolved", "unresolvable"]
    solution: str
    evidence: list[Evidence] = Field(default_factory=list)
    operator: Person
    processed_at: AwareDatetime


class TaskOrderTimedOut(_Event):
    """task_order_timeout (B6)."""

    shop_id: str
    task_id: str
    timed_out_at: datetime


PlatformEvent = ChatMessage | ChatClosed | TaskOrderCreated | TaskOrderComment | TaskOrderProcessed | TaskOrderTimedOut
