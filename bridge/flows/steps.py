"""A schedule of steps walked by one timer: a reply window's reminders and close, a task order's
reminders and deadline (the steps themselves come from ``rules``)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence

from bridge.engine.timers import Timer, TimerStore
from rules.reply_window import WindowStep, due_steps, next_step_at


def done_steps(state: Mapping[str, str], prefix: str) -> set[str]:
    """The names of the steps marked done (``<prefix><step>`` fields) in a state hash."""
    return {f.removeprefix(prefix) for f in state if f.startswith(prefix)}


async def take_steps(
    timers: TimerStore,
    timer: Timer,
    state_key: str,
    state: Mapping[str, str],
    prefix: str,
    steps: Sequence[WindowStep],
    take: Callable[[WindowStep], Awaitable[bool]],
) -> None:
    """One timer walking a schedule of steps (a reply window's reminders and close, a task order's
    reminders and deadline): each step due now and not yet marked done (``<prefix><step>`` on
    ``state_key``, whose fields ``state`` holds) is handed to ``take``, which returns False to end
    the schedule (the close), and marked done only once taken: a worker that dies in between leaves
    the step to the next run, and ``take`` is idempotent, so it happens once in effect. Then the
    timer is moved to the next step."""
    done = done_steps(state, prefix)
    now = timers.clock.now()
    for step in due_steps(steps, now, done):
        go_on = await take(step)
        await timers.redis.hsetnx(state_key, prefix + step.name, str(now))
        done.add(step.name)
        if not go_on:
            return
    following = next_step_at(steps, done)
    if following is not None:
        await timers.schedule(timer.key, max(following, now))
