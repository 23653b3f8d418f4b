"""What a log line is about — the store or creator, the chat or task order, the stored event, the
outbox job, the timer — carried in a context variable while one unit of work runs, so that with
``--log-format json`` one chat can be followed through every process by its fields."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from contextvars import ContextVar

_FIELDS: ContextVar[dict[str, str]] = ContextVar("log_fields", default={})  # noqa: B039 (never mutated)

FIELD_NAMES = ("store", "creator", "chat", "task_order", "event_id", "job_id", "timer")


def about(tag: str, thread: str) -> dict[str, str]:
    """The fields a Redis tag (``{store:1001}``) and a thread (``chat:conv-9:slack``) name."""
    fields: dict[str, str] = {}
    kind, _, rest = tag.strip("{}").partition(":")
    if kind in ("store", "creator") and rest:
        fields[kind] = rest
    what, _, rest = thread.partition(":")
    object_id = rest.split(":", 1)[0]
    if what == "chat" and object_id:
        fields["chat"] = object_id
    elif what == "task" and object_id:
        fields["task_order"] = object_id
    return fields


@contextlib.contextmanager
def bound(**fields: str) -> Iterator[None]:
    """Adds ``fields`` to every log record made inside the block (and in tasks it starts)."""
    token = _FIELDS.set(_FIELDS.get() | {k: v for k, v in fields.items() if v})
    try:
        yield
    finally:
        _FIELDS.reset(token)


class ContextFilter(logging.Filter):
    """Puts the bound fields on each record (as attributes), for the JSON formatter to write."""

    def filter(self, record: logging.LogRecord) -> bool:
        for name, value in _FIELDS.get().items():
            setattr(record, name, value)
        return True
