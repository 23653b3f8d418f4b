"""The Redis keys the Telegram connector keeps for itself (the core's are in ``bridge.engine.keys``)."""

from __future__ import annotations


def button_data(key: str) -> str:
    """STRING: what a button stands for when it is longer than the 64 bytes Telegram keeps behind
    one (a reassign to an agent whose account id is long): the button carries ``key``. Kept as long
    as the messages the button is on are looked up."""
    return "{telegram}:button:" + key


def moved_to(chat: int) -> str:
    """STRING: the id a group has had since Telegram made it a supergroup (turning topics on, a
    public link or many members do it). Kept for good: messages for the old id go to the new one."""
    return "{telegram}:moved-to:" + str(chat)


def moved_from(chat: int) -> str:
    """STRING: the id a supergroup had as a group: what people do in it is taken as done there, as
    long as the configuration names the old id."""
    return "{telegram}:moved-from:" + str(chat)
