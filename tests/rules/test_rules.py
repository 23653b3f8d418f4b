"""The pure rules, table-driven and property-based."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rules.permissions import Refusal, answer_refusal
from rules.reply_window import due_steps, next_step_at, window_allowed, window_start, window_steps
from rules.routing import route_by_saturation


@pytest.mark.parametrize(
    ("candidates", "loads", "expected"),
    [
        (["a", "b", "c"], {"a": 1, "b": 2, "c": 3}, "a"),  # the article's example
        (["a", "b", "c"], {"a": 3, "b": 2, "c": 1}, "c"),
        (["a", "b", "c"], {"a": 2, "b": 1, "c": 1}, "b"),  # tie → first listed
        (["a", "b"], {}, "a"),  # nobody has chats: first listed
        (["b", "a"], {"a": 0, "b": 0}, "b"),
        ([], {"a": 0}, None),
    ],
)
def test_route_by_saturation(candidates: list[str], loads: dict[str, int], expected: str | None) -> None:
    assert route_by_saturation(candidates, loads) == expected


@given(
    st.lists(st.sampled_from("abcdef"), min_size=1, unique=True),
    st.dictionaries(st.sampled_from("abcdef"), st.integers(0, 50)),
)
def test_routing_picks_a_least_loaded_candidate_first_in_order(candidates: list[str], loads: dict[str, int]) -> None:
    chosen = route_by_saturation(candidates, loads)
    assert chosen is not None
    least = min(loads.get(c, 0) for c in candidates)
    assert loads.get(chosen, 0) == least
    assert chosen == next(c for c in candidates if loads.get(c, 0) == least)


def test_window_starts_at_first_unanswered_message_only() -> None:
    assert window_start(None, 100.0, True) == 100.0
    assert window_start(100.0, 150.0, True) == 100.0, "a further message does not extend the window"
    assert window_start(None, 100.0, False) is None


def test_window_steps_default() -> None:
    steps = window_steps(1000.0, 120, [60, 30])
    assert [(s.name, s.at, s.seconds_left) for s in steps] == [
        ("remind-60", 1060.0, 60),
        ("remind-30", 1090.0, 30),
        ("close", 1120.0, 0),
    ]
    assert [s.name for s in window_steps(0, 120, [60, 30], escalate_before=30)] == [
        "remind-60",
        "remind-30",
        "escalate-30",
        "close",
    ]


def test_due_steps_and_next() -> None:
    steps = window_steps(0, 120, [60, 30])
    assert due_steps(steps, 59.9, set()) == []
    assert [s.name for s in due_steps(steps, 60, set())] == ["remind-60"]
    assert [s.name for s in due_steps(steps, 95, {"remind-60"})] == ["remind-30"]
    assert [s.name for s in due_steps(steps, 500, set())] == ["close"], "no reminders after the close"
    assert next_step_at(steps, {"remind-60"}) == 90
    assert next_step_at(steps, {"remind-60", "remind-30", "close"}) is None


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"in_chat_thread": False}, Refusal.ONE_WAY),
        ({"designated": False}, Refusal.NOT_AGENT),
        ({"designated": False, "chat_open": False}, Refusal.NOT_AGENT),
        ({"im_permission": False}, Refusal.NO_IM_PERMISSION),
        ({"chat_open": False}, Refusal.CLOSED),
        ({"has_content": False}, Refusal.EMPTY),
        ({}, None),
    ],
)
def test_answer_refusal(kwargs: dict[str, bool], expected: Refusal | None) -> None:
    facts = {"in_chat_thread": True, "designated": True, "im_permission": True, "chat_open": True, "has_content": True}
    assert answer_refusal(**(facts | kwargs)) == expected


@pytest.mark.parametrize(
    ("seconds", "sandbox", "expected"),
    [(60, False, None), (180, False, None), (59, False, (60, 180)), (181, False, (60, 180)), (1, True, None),
     (0, True, (1, 180)), (181, True, (1, 180))],
)  # fmt: skip
def test_which_windows_a_store_may_configure(seconds: int, sandbox: bool, expected: tuple[int, int] | None) -> None:
    assert window_allowed(seconds, sandbox) == expected
