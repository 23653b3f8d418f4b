"""A2 and A7 — who may answer a platform chat, and where.

Only designated agents answer (by default the main account alone); an agent without IM permission
never can, and is told how to get it. Contact is one way: a message outside a chat's thread, or in a
closed chat's thread, is not forwarded.
"""

from __future__ import annotations

from enum import Enum


class Refusal(Enum):
    ONE_WAY = "refuse.one_way"
    NOT_AGENT = "refuse.not_agent"
    NO_IM_PERMISSION = "refuse.no_im_permission"
    CLOSED = "refuse.closed"
    EMPTY = "refuse.empty"
    NOT_MAIN = "refuse.not_main"
    NOT_DESIGNATED_TARGET = "refuse.not_designated_target"


def answer_refusal(
    *, in_chat_thread: bool, designated: bool, im_permission: bool, chat_open: bool, has_content: bool
) -> Refusal | None:
    """Why a message may not go to the platform as an answer, or None when it may. Who the author is
    is checked before anything about the chat is told."""
    if not in_chat_thread:
        return Refusal.ONE_WAY
    if not designated:
        return Refusal.NOT_AGENT
    if not im_permission:
        return Refusal.NO_IM_PERMISSION
    if not chat_open:
        return Refusal.CLOSED
    if not has_content:
        return Refusal.EMPTY
    return None


def assignment_refusal(
    *, chat_open: bool, by_designated: bool, by_main_account: bool, to_self: bool, target_designated: bool
) -> Refusal | None:
    """Claim and reassign (A3): any designated agent may take an open chat for themselves; only the
    main account may hand it to another designated agent. The platform is not told: who answers for
    the store is the store's business."""
    if not chat_open:
        return Refusal.CLOSED
    if to_self:
        return None if by_designated else Refusal.NOT_AGENT
    if not by_main_account:
        return Refusal.NOT_MAIN
    return None if target_designated else Refusal.NOT_DESIGNATED_TARGET


def handled_elsewhere_refusal(*, chat_open: bool, by_designated: bool) -> Refusal | None:
    """ "Handled elsewhere" (answered in the platform's own workbench, by phone …) stops the reply
    window's reminders and close; only a designated agent may say so, of an open chat."""
    if not chat_open:
        return Refusal.CLOSED
    return None if by_designated else Refusal.NOT_AGENT
