"""The platform's push envelope: a JSON array of {tag, msg_id, data}, data itself JSON-encoded.

Parsing is all or nothing: the first bad record makes the whole push a 400 naming its index and
reason, and nothing of it is stored (PLATFORM-API §1).
"""

from __future__ import annotations

from typing import Any

import orjson
from pydantic import BaseModel, ValidationError

from bridge.engine.endpoint import Endpoint
from bridge.engine.ingest import IncomingRecord
from bridge.flows.domain import (
    ChatClosed,
    ChatMessage,
    TaskOrderComment,
    TaskOrderCreated,
    TaskOrderProcessed,
    TaskOrderTimedOut,
)

PING_TAG = "0"

EVENT_MODELS: dict[str, type[BaseModel]] = {
    "im_platform_message": ChatMessage,
    "im_platform_closed": ChatClosed,
    "task_order_created": TaskOrderCreated,
    "task_order_comment": TaskOrderComment,
    "task_order_processed": TaskOrderProcessed,
    "task_order_timeout": TaskOrderTimedOut,
}


class EnvelopeError(ValueError):
    def __init__(self, reason: str, index: int | None = None) -> None:
        self.index = index
        self.reason = reason
        super().__init__(reason if index is None else f"record {index}: {reason}")


def thread_of(tag: str, msg_id: str, data: dict[str, Any]) -> str:
    conversation, task = data.get("conversation_id"), data.get("task_id")
    if tag.startswith("im_") and isinstance(conversation, str | int):
        return f"chat:{conversation}"
    if tag.startswith("task_order_") and isinstance(task, str | int):
        return f"task:{task}"
    return "msg:" + msg_id


def _describe(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"])
    return f"data.{where}: {first['msg']}" if where else f"data: {first['msg']}"


def parse_push(body: bytes, endpoint: Endpoint) -> list[IncomingRecord]:
    """The records to store (pings left out). Raises EnvelopeError for anything malformed."""
    try:
        decoded = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise EnvelopeError(f"body is not JSON ({exc})") from None
    if not isinstance(decoded, list):
        raise EnvelopeError("body must be a JSON array of records")
    records: list[IncomingRecord] = []
    for index, item in enumerate(decoded):
        if not isinstance(item, dict):
            raise EnvelopeError("record is not an object", index)
        tag = item.get("tag")
        if not isinstance(tag, str) or not tag:
            raise EnvelopeError("missing tag", index)
        if tag == PING_TAG:
            continue
        msg_id = item.get("msg_id")
        if isinstance(msg_id, int) and not isinstance(msg_id, bool):
            msg_id = str(msg_id)
        if not isinstance(msg_id, str) or not msg_id or len(msg_id) > 256:
            raise EnvelopeError("missing msg_id", index)
        raw = item.get("data")
        if not isinstance(raw, str):
            raise EnvelopeError("missing data (a JSON-encoded string)", index)
        data = _decode_data(tag, raw, index)
        _check_owner(data, endpoint, index)
        records.append(IncomingRecord(tag, msg_id, thread_of(tag, msg_id, data), raw))
    return records


def _decode_data(tag: str, raw: str, index: int) -> dict[str, Any]:
    model = EVENT_MODELS.get(tag)
    if model is not None:
        # Known tags are parsed and validated in one step by pydantic-core.
        try:
            fields = vars(model.model_validate_json(raw))  # plain attribute dict: no __getattr__ misses
            return {f: fields[f] for f in _ROUTING_FIELDS if f in fields}
        except ValidationError as exc:
            if exc.errors()[0]["type"] in {"json_invalid", "json_type"}:
                raise EnvelopeError(f"data is not decodable JSON ({exc.errors()[0]['msg']})", index) from None
            if exc.errors()[0]["type"] == "model_type":
                raise EnvelopeError("data must encode a JSON object", index) from None
            raise EnvelopeError(_describe(exc), index) from None
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise EnvelopeError(f"data is not decodable JSON ({exc})", index) from None
    if not isinstance(data, dict):
        raise EnvelopeError("data must encode a JSON object", index)
    return data


_ROUTING_FIELDS = {"shop_id", "creator", "conversation_id", "task_id"}
"""What intake needs of an event's data: who owns it and which thread it belongs to."""


def _check_owner(data: dict[str, Any], endpoint: Endpoint, index: int) -> None:
    """One store's (or creator's) key can never inject events into another's."""
    shop_id = data.get("shop_id")
    if endpoint.kind == "store":
        if shop_id is not None and str(shop_id) != endpoint.id:
            raise EnvelopeError(f"shop_id {shop_id!r} is not this store's ({endpoint.id})", index)
        return
    creator = data.get("creator")
    creator_id = creator.get("id") if isinstance(creator, dict) else getattr(creator, "id", None)
    if creator_id is not None and str(creator_id) != endpoint.id:
        raise EnvelopeError(f"creator.id {creator_id!r} is not this creator's ({endpoint.id})", index)
