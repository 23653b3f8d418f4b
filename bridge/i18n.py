"""The message catalogue (PRODUCT C7): every text a person reads, by key, in zh-CN and en."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from functools import cache
from importlib import resources
from typing import Any

import yaml

DEFAULT_LOCALE = "zh-CN"
LOCALES = ("zh-CN", "en")


@cache
def catalogue() -> dict[str, dict[str, str]]:
    """Read once per process; the bridge reads it at start (``Bridge.start``), so no chat waits for it.
    libyaml's loader where PyYAML was built with it: 3 ms against 25 ms for the pure-Python one."""
    text = resources.files("bridge").joinpath("messages.yaml").read_text(encoding="utf-8")
    loaded: dict[str, dict[str, str]] = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    return loaded


def t(locale: str, key: str, **values: Any) -> str:
    """The text for ``key`` in ``locale`` (zh-CN when the locale has none), with values filled in."""
    entry = catalogue()[key]
    return entry.get(locale, entry[DEFAULT_LOCALE]).format(**values)


def bare_name(name: str) -> str:
    """A name as it is typed: without its leading emoji and its gloss in the other language in
    parentheses (⌛ Timed out (超时完结) → Timed out)."""
    return re.sub(r"^\W+", "", re.sub(r"\s*\(.*\)$", "", name))


def named(words: str, choices: Iterable[str], name: Callable[[str, str], str]) -> str | None:
    """The choice someone typed (``words``): its id or its ``name(locale, choice)`` in any locale,
    whatever the case, spacing or emoji; None when it is none of them."""

    def typed(text: str) -> str:
        return "".join(ch for ch in bare_name(text) if ch.isalnum()).casefold()

    asked = typed(words)
    for choice in choices:
        if asked == typed(choice) or any(asked == typed(name(loc, choice)) for loc in LOCALES):
            return choice
    return None
