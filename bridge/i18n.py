"""The message catalogue (PRODUCT C7): every text a person reads, by key, in zh-CN and en."""

from __future__ import annotations

from functools import cache
from importlib import resources
from typing import Any

import yaml

DEFAULT_LOCALE = "zh-CN"
LOCALES = ("zh-CN", "en")


@cache
def catalogue() -> dict[str, dict[str, str]]:
    text = resources.files("bridge").joinpath("messages.yaml").read_text(encoding="utf-8")
    loaded: dict[str, dict[str, str]] = yaml.safe_load(text)
    return loaded


def t(locale: str, key: str, **values: Any) -> str:
    """The text for ``key`` in ``locale`` (zh-CN when the locale has none), with values filled in."""
    entry = catalogue()[key]
    return entry.get(locale, entry[DEFAULT_LOCALE]).format(**values)
