"""The Redis keys the Telegram connector keeps for itself (the core's are in ``bridge.engine.keys``)."""

from __future__ import annotations


def button_data(key: str) -> str:
    """STRING: what a button stands for when it is longer than the 64 bytes Telegram keeps behind
    one (a reassign to an agent whose account id is long): the button carries ``key``. Kept as long
    as the messages the button is on are looked up."""
    return "{telegram}:button:" + key


def moved_from(chat: int) -> str:
    """STRING: the id a supergroup had as a group before Telegram made it one (turning topics on, a
    public link or many members do it). Kept for good: what people do in it is taken as done there,
    as long as the configuration names the old id. (Sends need no record: Telegram's refusal of the
    old id names the new one.)"""
    return "{telegram}:moved-from:" + str(chat)
