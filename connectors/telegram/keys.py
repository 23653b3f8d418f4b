"""The Redis keys the Telegram connector keeps for itself (the core's are in ``bridge.engine.keys``)."""

from __future__ import annotations


def moved_to(chat: int) -> str:
    """STRING: the id a group has had since Telegram made it a supergroup (turning topics on, a
    public link or many members do it). Kept for good: messages for the old id go to the new one."""
    return "{telegram}:moved-to:" + str(chat)


def moved_from(chat: int) -> str:
    """STRING: the id a supergroup had as a group: what people do in it is taken as done there, as
    long as the configuration names the old id."""
    return "{telegram}:moved-from:" + str(chat)
