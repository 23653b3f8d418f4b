"""No secret in any log line: every configured token and signing secret is masked in every record,
whoever logs it (a client library logging a request URL that carries a bot token, an exception that
quotes a header). Installed as the logging record factory, so it holds for every handler, and fed
with the secrets of the configuration in force (again on every reload)."""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel

MASK = "‹redacted›"

SECRET_FIELD = re.compile(r"secret|token|password", re.IGNORECASE)
"""Configuration fields whose values are secrets, whatever section (or destination plug-in) they are in."""

# Shapes of credentials worth masking even when they are not (or no longer) configured: a Telegram
# bot token in a Bot API URL, Slack tokens, a password in a Redis URL.
KNOWN_SHAPES = (
    r"\d{5,}:[A-Za-z0-9_-]{20,}",
    r"xox[abposr]-[A-Za-z0-9-]{8,}",
    r"xapp-[A-Za-z0-9-]{8,}",
    r"(?<=://:)[^@/\s]+(?=@)",
    r"(?<=://)[^:@/\s]+:[^@/\s]+(?=@)",
)

MIN_SECRET_LENGTH = 6
"""Shorter values are not masked: masking every "1" or "abc" in every line would hide what a log says."""


def secrets_in(value: Any, secret: bool = False) -> set[str]:
    """Every secret value in a configuration model: strings under a field named like a secret."""
    found: set[str] = set()
    if isinstance(value, BaseModel):
        for name in type(value).model_fields:
            found |= secrets_in(getattr(value, name), bool(SECRET_FIELD.search(name)))
    elif isinstance(value, dict):
        for key, item in value.items():
            found |= secrets_in(item, secret or bool(SECRET_FIELD.search(str(key))))
    elif isinstance(value, list | tuple | set | frozenset):
        for item in value:
            found |= secrets_in(item, secret)
    elif isinstance(value, str) and secret and len(value) >= MIN_SECRET_LENGTH:
        found.add(value)
    return found


class Redactor:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._secrets: set[str] = set()
        self._pattern = re.compile("|".join(KNOWN_SHAPES))
        self._installed = False

    def add(self, secrets: Iterable[str]) -> None:
        """Masks these too, from now on. A rotated secret stays masked: the old one may still be in use."""
        with self._lock:
            self._secrets |= {s for s in secrets if len(s) >= MIN_SECRET_LENGTH}
            literal = [re.escape(s) for s in sorted(self._secrets, key=len, reverse=True)]
            self._pattern = re.compile("|".join([*literal, *KNOWN_SHAPES]))

    def redact(self, text: str) -> str:
        return self._pattern.sub(MASK, text)

    def install(self) -> None:
        """Masks every log record from now on, at its creation (once per process)."""
        if self._installed:
            return
        self._installed = True
        make_record = logging.getLogRecordFactory()

        def masked_record(*args: Any, **kwargs: Any) -> logging.LogRecord:
            record = make_record(*args, **kwargs)
            try:
                record.msg, record.args = self.redact(record.getMessage()), None
            except Exception:  # a malformed call: leave it for logging to report, as it would
                return record
            if record.exc_info and record.exc_info[0] is not None:
                record.exc_text = self.redact(logging.Formatter().formatException(record.exc_info))
            if record.stack_info:
                record.stack_info = self.redact(record.stack_info)
            return record

        logging.setLogRecordFactory(masked_record)


REDACTOR = Redactor()
