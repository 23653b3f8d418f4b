"""The durable outbox against the platform sandbox: ordered, retried, never doubled, survives restarts."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from bridge.config import Destination
from bridge.engine import keys
from bridge.engine.clock import ManualClock
from bridge.engine.outbox import (
    JOBS_PER_RUN,
    TAKEN_OVER_GRACE_SECONDS,
    FinalFailure,
    Outbox,
    OutboxJob,
    record_what_went_out,
)
from bridge.engine.timers import Timer, TimerChange
from bridge.flows.jobs import SEND_MESSAGE
from bridge.flows.views import post_view
from tests.conftest import Stack, until

TAG = "{store:1001}"


def reply(job_id: str, cid: str, text: str, agent: str = "agent-a") -> OutboxJob:
    payload = {
        "endpoint": "store:1001",
        "conversation_id": cid,
        "agent_id": agent,
        "content": {"type": "text", "text": text},
    }
    return OutboxJob(job_id, SEND_MESSAGE, payload, report_to={"user": "U0AGENTA"})


def texts(stack: Stack, cid: str) -> list[str]:
    return [m["content"]["text"] for m in stack.sandbox.conversations[cid].messages if m["from"] == "merchant"]


async def test_job_is_sent_once_with_its_id_as_idempotency_key(stack: Stack) -> None:
    cid = await stack.sandbox.open_chat("1001")
    assert await stack.bridge.outbox.enqueue(TAG, f"chat:{cid}", reply("reply:1", cid, "马上发货"))
    assert not await stack.bridge.outbox.enqueue(TAG, f"chat:{cid}", reply("reply:1", cid, "马上发货")), (
        "enqueued twice"
    )
    await stack.bridge.worker.drain()
    [call] = stack.sandbox.received("POST", "/im/conversations")
    assert call.idempotency_key == "reply:1" and call.status == 200
    assert call.body == {"agent_id": "agent-a", "content": {"type": "text", "text": "马上发货"}}
    assert texts(stack, cid) == ["马上发货"]
    assert await stack.bridge.outbox.pending(TAG, f"chat:{cid}") == []


async def test_one_run_sends_the_queued_jobs_in_order_then_hands_the_rest_to_a_new_run(stack: Stack) -> None:
    """A thread's sender goes on to its next jobs without a timer round trip each, up to
    JOBS_PER_RUN; what is left is due at once in a new run (other threads get their turn)."""
    assert stack.clock is not None
    cid = await stack.sandbox.open_chat("1001")
    count = JOBS_PER_RUN + 3
    for i in range(count):
        await stack.bridge.outbox.enqueue(TAG, f"chat:{cid}", reply(f"r{i}", cid, f"第{i}条"))
    timer = keys.outbox_timer(TAG, f"chat:{cid}")
    await stack.bridge.timers.cancel(timer)  # the run below is the thread's only one
    await stack.bridge.outbox.handle_timer(Timer(timer, stack.clock.now(), None, 0))
    assert texts(stack, cid) == [f"第{i}条" for i in range(JOBS_PER_RUN)], "one run, in order"
    due = await stack.bridge.timers.due_at(timer)
    assert due is not None and due <= stack.clock.now(), "the rest is due at once"
    await stack.bridge.worker.drain()
    assert texts(stack, cid) == [f"第{i}条" for i in range(count)]
    assert await stack.bridge.outbox.pending(TAG, f"chat:{cid}") == []


async def test_server_errors_are_retried_with_backoff_in_order(stack: Stack) -> None:
    clock = stack.clock
    assert isinstance(clock, ManualClock)
    cid = await stack.sandbox.open_chat("1001")
    stack.sandbox.fail_next("POST", "/im/conversations", 503, times=2)
    for i in range(5):
        await stack.bridge.outbox.enqueue(TAG, f"chat:{cid}", reply(f"r{i}", cid, f"第{i}条"))
    for _ in range(12):
        await stack.bridge.worker.drain()
        clock.advance(2.5)
    assert texts(stack, cid) == [f"第{i}条" for i in range(5)], "sent in order, once each"
    statuses = [r.status for r in stack.sandbox.received("POST", "/im/conversations")]
    assert statuses == [503, 503, 200, 200, 200, 200, 200]
    assert stack.bridge.outbox.stats.retried == 2


async def test_retry_after_is_honoured(stack: Stack) -> None:
    clock = stack.clock
    assert isinstance(clock, ManualClock)
    cid = await stack.sandbox.open_chat("1001")
    stack.sandbox.fail_next("POST", "/im/conversations", 429, retry_after=30)
    await stack.bridge.outbox.enqueue(TAG, f"chat:{cid}", reply("r", cid, "稍等"))
    await stack.bridge.worker.drain()
    due = await stack.bridge.timers.due_at(keys.outbox_timer(TAG, f"chat:{cid}"))
    assert due is not None and due >= clock.now() + 30
    clock.advance(29)
    await stack.bridge.worker.drain()
    assert texts(stack, cid) == []
    clock.advance(1.1)
    await stack.bridge.worker.drain()
    assert texts(stack, cid) == ["稍等"]


async def test_final_failure_is_reported_and_the_thread_moves_on(stack: Stack) -> None:
    reports: list[tuple[str, str, int | None]] = []

    async def report(job: OutboxJob, failure: FinalFailure, tag: str) -> None:
        reports.append((job.id, failure.reason, failure.status))

    stack.bridge.outbox.failure_reporters[SEND_MESSAGE] = report
    cid = await stack.sandbox.open_chat("1001")
    stack.sandbox.conversations[cid].closed_reason = "reply_timeout"
    await stack.bridge.outbox.enqueue(TAG, f"chat:{cid}", reply("late", cid, "晚了"))
    other = await stack.sandbox.open_chat("1001")
    await stack.bridge.outbox.enqueue(TAG, f"chat:{other}", reply("ok", other, "好的", agent="main-1001"))
    await stack.bridge.worker.drain()
    assert reports == [("late", "conversation closed (reply_timeout)", 409)]
    [failed] = await stack.bridge.outbox.dead_letters(TAG)
    assert failed["job"]["id"] == "late" and failed["status"] == 409
    assert texts(stack, other) == ["好的"]


async def test_agent_without_im_permission_is_a_final_403(stack: Stack) -> None:
    cid = await stack.sandbox.open_chat("1001")
    await stack.bridge.outbox.enqueue(TAG, f"chat:{cid}", reply("x", cid, "hi", agent="nobody"))
    await stack.bridge.worker.drain()
    [failed] = await stack.bridge.outbox.dead_letters(TAG)
    assert failed["status"] == 403 and "lacks IM permission" in failed["reason"]


async def test_a_retry_after_a_crash_is_not_a_second_message(stack: Stack) -> None:
    """The platform answered but the process died before recording it: the retry replays."""
    cid = await stack.sandbox.open_chat("1001")
    job = reply("reply:dup", cid, "只发一次")
    client = stack.bridge.outbox.senders[SEND_MESSAGE]
    await client(job)  # sent, then "crash" before the outbox saw the answer
    await stack.bridge.outbox.enqueue(TAG, f"chat:{cid}", job)
    await stack.bridge.worker.drain()
    assert texts(stack, cid) == ["只发一次"]
    assert [r.replayed for r in stack.sandbox.received("POST", "/im/conversations")] == [False, True]


async def test_queued_jobs_survive_a_restart(stack: Stack) -> None:
    cid = await stack.sandbox.open_chat("1001")
    await stack.bridge.outbox.enqueue(TAG, f"chat:{cid}", reply("a", cid, "一"))
    await stack.bridge.outbox.enqueue(TAG, f"chat:{cid}", reply("b", cid, "二"))
    # A new process (new Outbox, new worker) on the same Redis finds and sends them.
    fresh = Outbox(stack.redis, stack.bridge.timers, clock=stack.bridge.clock)
    fresh.register(stack.bridge.outbox.senders)
    stack.bridge.timer_handlers["outbox"] = fresh.handle_timer
    await stack.bridge.worker.drain()
    assert texts(stack, cid) == ["一", "二"] and fresh.stats.sent == 2


async def test_a_step_run_again_restarts_the_queue_its_first_run_left_without_a_sender(stack: Stack) -> None:
    cid = await stack.sandbox.open_chat("1001")
    thread = f"chat:{cid}"
    await stack.bridge.outbox.enqueue(TAG, thread, reply("a", cid, "一"))
    await stack.bridge.timers.cancel(keys.outbox_timer(TAG, thread))  # the run died between push and start
    assert not await stack.bridge.outbox.enqueue(TAG, thread, reply("a", cid, "一")), "queued before"
    await stack.bridge.worker.drain()
    assert texts(stack, cid) == ["一"]


async def test_a_job_queued_behind_one_not_started_yet_leaves_the_start_to_that_ones_step(stack: Stack) -> None:
    """A job pushed in the moment between another step's push (into the empty queue) and that
    step's start of the sender does not start one of its own: two starts could make two senders
    of one thread, each sending its head."""
    cid = await stack.sandbox.open_chat("1001")
    thread = f"chat:{cid}"
    timer = keys.outbox_timer(TAG, thread)
    await stack.bridge.outbox.enqueue(TAG, thread, reply("a", cid, "一"))
    await stack.bridge.timers.cancel(timer)  # "a" is pushed; its step has not started the sender yet
    assert await stack.bridge.outbox.enqueue(TAG, thread, reply("b", cid, "二"))
    assert not await stack.bridge.timers.is_pending(timer), "a second start of the thread's sender"
    await stack.bridge.timers.start_now(timer)  # the first step goes on
    await stack.bridge.worker.drain()
    assert texts(stack, cid) == ["一", "二"]


def payloads(stack: Stack) -> list[dict[str, Any]]:
    return [r.body for r in stack.sandbox.received("POST")]


async def test_a_job_held_back_past_its_expiry_is_dropped_not_sent_late(stack: Stack) -> None:
    clock = stack.clock
    assert isinstance(clock, ManualClock)
    cid = await stack.sandbox.open_chat("1001")
    stack.sandbox.fail_next("POST", "/im/conversations", 503, times=3)
    reminder = OutboxJob("late", SEND_MESSAGE, reply("late", cid, "过期了").payload, expires_at=clock.now() + 5)
    await stack.bridge.outbox.enqueue(TAG, f"chat:{cid}", reminder)
    await stack.bridge.outbox.enqueue(TAG, f"chat:{cid}", reply("next", cid, "下一条"))
    for _ in range(12):
        await stack.bridge.worker.drain()
        clock.advance(2.5)
    assert texts(stack, cid) == ["下一条"], "the expired job was dropped; the next one went"
    assert stack.bridge.outbox.stats.expired == 1 and stack.bridge.outbox.stats.failed == 0


async def test_a_post_queued_before_its_threads_root_lets_the_root_go_first(stack: Stack) -> None:
    """Two events handled in the other order (a comment shown before the confirmation that opens the
    creator's thread) must not leave the thread waiting for ever: the root goes first."""
    dest = Destination.parse("slack:C0CREATOR7002")
    note = {"type": "notice", "text": "💬 comment"}
    await post_view(stack.bridge.outbox, TAG, "task:T1", "1001", dest, "task:T1:c:1", "post", note)
    await post_view(stack.bridge.outbox, TAG, "task:T1", "1001", dest, "task:T1:confirm", "post",
                    {"type": "notice", "text": "📋 confirmation"}, root=True)  # fmt: skip
    await stack.settle()
    [root] = stack.slack.channel("C0CREATOR7002")
    assert root.text == "📋 confirmation" and [m.text for m in stack.slack.thread("C0CREATOR7002", root.ts)][-1] == (
        "💬 comment"
    )
    assert await stack.redis.llen(keys.outbox_queue(TAG, "task:T1:slack")) == 0


@pytest.mark.parametrize("service", ["slack", "telegram"])
async def test_a_remembered_post_is_changed_in_place_and_one_deleted_meanwhile_is_let_be(
    stack: Stack, service: str
) -> None:
    """A step's question (a post that asks to be remembered) later shows a new view in place, its
    buttons gone; a question its reader deleted meanwhile is nothing to change and no dead letter."""
    dest = Destination.parse("slack:C0TASKS1001" if service == "slack" else "telegram:-1001002000001")
    tag, store = ("{store:1001}", "1001") if service == "slack" else ("{store:1002}", "1002")
    buttons = [{"label": "Cancel", "short": "pc", "value": "T1", "action": "task_cancel"}]
    question = {"type": "notice", "text": "Step 1: the solution?", "buttons": buttons}
    await post_view(stack.bridge.outbox, tag, "task:T1", store, dest, "task:T1:card", "post",
                    {"type": "notice", "text": "card"}, root=True)  # fmt: skip
    for n in (1, 2):
        await post_view(stack.bridge.outbox, tag, "task:T1", store, dest, f"task:T1:q{n}", "post",
                        question | {"text": f"Step {n}: the solution?"}, remember=True)  # fmt: skip
    await stack.settle()

    def shown(n: int) -> tuple[str, bool] | None:
        if service == "slack":
            found = [m for m in stack.slack.messages if m.text == f"Step {n}: the solution?"]
            return (found[0].text, any(b["type"] == "actions" for b in found[0].blocks)) if found else None
        tg = [m for m in stack.telegram.messages if m.text == f"Step {n}: the solution?"]
        return (tg[0].text, tg[0].reply_markup is not None) if tg else None

    assert shown(1) == ("Step 1: the solution?", True) and shown(2) == ("Step 2: the solution?", True)
    if service == "slack":
        stack.slack.messages.remove(next(m for m in stack.slack.messages if m.text == "Step 2: the solution?"))
    else:
        stack.telegram.messages.remove(next(m for m in stack.telegram.messages if m.text == "Step 2: the solution?"))
    for n in (1, 2):
        retired = question | {"text": f"Step {n}: the solution?", "buttons": []}
        await post_view(stack.bridge.outbox, tag, "task:T1", store, dest, f"task:T1:q{n}:retired", "update_post",
                        retired, changes=f"task:T1:q{n}")  # fmt: skip
    await stack.settle()
    assert shown(1) == ("Step 1: the solution?", False) and shown(2) is None
    assert await stack.bridge.outbox.dead_letters(tag) == []
    assert await stack.redis.llen(keys.outbox_queue(tag, f"task:T1:{service}")) == 0


async def _serving(stack: Stack) -> asyncio.Task[None]:
    """The stack's timer worker serving (as in a running bridge), so a started sender runs here."""
    task = asyncio.create_task(stack.bridge.worker.run())
    for _ in range(200):
        if stack.bridge.timers.local is stack.bridge.worker:
            return task
        await asyncio.sleep(0.01)
    raise AssertionError("the worker did not start serving")


async def test_a_job_into_an_empty_queue_is_sent_at_once_by_this_process(stack: Stack) -> None:
    """On one Redis the push and the lease of the thread's sender are one call; the sender runs here
    with the job in hand, and leaves neither a timer nor a lease behind."""
    cid = await stack.sandbox.open_chat("1001")
    thread = f"chat:{cid}"
    serving = await _serving(stack)
    await stack.redis.config_resetstat()
    assert await stack.bridge.outbox.enqueue(TAG, thread, reply("now", cid, "马上"))
    for _ in range(300):
        if texts(stack, cid) and not await stack.bridge.timers.leased():
            break
        await asyncio.sleep(0.01)
    await stack.bridge.worker.stop()
    await serving
    assert texts(stack, cid) == ["马上"]
    assert await stack.bridge.outbox.pending(TAG, thread) == []
    assert await stack.bridge.timers.leased() == 0 and not await stack.bridge.timers.is_pending(
        keys.outbox_timer(TAG, thread)
    )
    assert "cmdstat_publish" not in await stack.redis.info("commandstats"), "no other process was woken for it"


async def test_a_process_that_dies_after_pushing_and_taking_the_sender_leaves_it_to_another(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Killed between the call that pushed the job and leased the sender, and the sender's start:
    the lease runs out and another worker sends the job, once (a moment later: the run it took over
    might have been alive)."""
    clock = stack.clock
    assert isinstance(clock, ManualClock)
    cid = await stack.sandbox.open_chat("1001")
    thread = f"chat:{cid}"
    serving = await _serving(stack)
    monkeypatch.setattr(stack.bridge.worker, "run_taken", lambda *args, **kwargs: None)  # dead before the start
    assert await stack.bridge.outbox.enqueue(TAG, thread, reply("orphan", cid, "还在"))
    serving.cancel()
    await asyncio.gather(serving, return_exceptions=True)
    monkeypatch.undo()
    assert await stack.bridge.timers.leased() == 1 and texts(stack, cid) == []
    assert await stack.bridge.worker.drain() == 0, "the lease still holds"
    clock.advance(stack.bridge.worker.lease_seconds)
    await stack.bridge.worker.drain()
    assert texts(stack, cid) == []
    clock.advance(TAKEN_OVER_GRACE_SECONDS)
    await stack.bridge.worker.drain()
    assert texts(stack, cid) == ["还在"]
    await stack.bridge.worker.drain()
    assert texts(stack, cid) == ["还在"] and await stack.bridge.outbox.pending(TAG, thread) == []


async def test_a_sender_that_empties_its_queue_acknowledges_its_run_in_the_same_call(stack: Stack) -> None:
    """On one Redis the pop that leaves the queue empty also ends the sender's run, so the worker has
    nothing left to acknowledge; a run whose lease was renewed meanwhile (the token it sends is no
    longer the one in Redis) is left alone, for the worker's own acknowledgement."""
    assert stack.clock is not None
    cid = await stack.sandbox.open_chat("1001")
    thread = f"chat:{cid}"
    store = stack.bridge.timers
    timer = keys.outbox_timer(TAG, thread)

    async def taken(lease: int) -> Timer:
        assert stack.clock is not None
        await store.cancel(timer)
        await store.take_script(keys=store.keys_for(timer)[:4], args=[timer, lease])
        return Timer(timer, stack.clock.now(), None, lease)

    await stack.bridge.outbox.enqueue(TAG, thread, reply("one", cid, "好的"))
    run = await taken(round(stack.clock.now() * 1000) + 5000)
    await stack.bridge.outbox.handle_timer(run)
    assert texts(stack, cid) == ["好的"]
    assert not run.lease.held and not await store.is_pending(timer), "acknowledged with the pop"

    await stack.bridge.outbox.enqueue(TAG, thread, reply("two", cid, "再见"))
    run = await taken(round(stack.clock.now() * 1000) + 5000)
    renewed = run.lease_ms + 1000
    assert await store.renew_script(keys=[keys.timers_leased(0)], args=[renewed, timer, run.lease_ms]) == [1]
    await stack.bridge.outbox.handle_timer(run)
    assert texts(stack, cid) == ["好的", "再见"]
    assert run.lease.held, "not acknowledged with a token that no longer holds"
    assert await stack.redis.zscore(keys.timers_leased(0), timer) == renewed


async def test_what_follows_a_sent_job_is_queued_with_its_pop_in_one_round_trip(stack: Stack) -> None:
    """A job's follow-ups (a ✅ after a reply) are queued in the pipeline that pops the job, ahead of
    the pop; a Redis that forgot its scripts (a restart) still takes both."""
    assert stack.clock is not None
    cid = await stack.sandbox.open_chat("1001")
    store = stack.bridge.timers
    first, second = f"chat:{cid}", f"chat:{cid}:after"
    runs = ("first", "counted", "after a restart")  # the first run loads the scripts into Redis
    for run in runs:
        follow = {"tag": TAG, "thread": second, "job": vars(reply(f"after-{run}", cid, f"随后-{run}"))}
        await stack.bridge.outbox.enqueue(TAG, first, replace(reply(f"sent-{run}", cid, run), then=[follow]))
        timer = keys.outbox_timer(TAG, first)
        await store.cancel(timer)
        lease = round(stack.clock.now() * 1000) + 5000
        await store.take_script(keys=store.keys_for(timer)[:4], args=[timer, lease])
        if run == "after a restart":
            await stack.redis.script_flush()
        await stack.redis.config_resetstat()
        await stack.bridge.outbox.handle_timer(Timer(timer, stack.clock.now(), None, lease))
        if run == "counted":
            # The head's read, the pipeline, the follow-up's sender scheduled (no worker serves
            # here), and INFO itself.
            assert int((await stack.redis.info("stats"))["total_reads_processed"]) == 4
        assert [j.id for j in await stack.bridge.outbox.pending(TAG, second)] == [f"after-{run}"]
        assert await stack.bridge.outbox.pending(TAG, first) == [] and not await store.is_pending(timer)
        await stack.bridge.worker.drain()
    assert texts(stack, cid) == [text for run in runs for text in (run, f"随后-{run}")]


async def test_a_post_and_the_timers_its_step_sets_after_it_go_in_one_round_trip(stack: Stack) -> None:
    """A step queues its post, then sets its timers (a reminder behind the post it refers to) and
    reads its state after them: one pipeline, in that order; a Redis that forgot its scripts (a
    restart) still takes all of it."""
    assert stack.clock is not None
    cid = await stack.sandbox.open_chat("1001")
    await stack.settle()
    thread, reminder, chat = f"chat:{cid}:platform", keys.window_timer(TAG, cid), keys.chat(TAG, cid)
    runs = ("first", "counted", "after a restart")  # the first run loads the scripts into Redis
    for run in runs:
        await stack.redis.hset(chat, "seen", "before")
        if run == "after a restart":
            await stack.redis.script_flush()
        await stack.redis.config_resetstat()
        due = stack.clock.now() + 30
        read = await stack.bridge.outbox.enqueue_then(
            TAG, thread, reply(f"post-{run}", cid, run), TimerChange([(reminder, due, False)], read_after=chat)
        )
        if run == "counted":
            # The pipeline, the sender's start (no worker serves here), and INFO itself.
            assert int((await stack.redis.info("stats"))["total_reads_processed"]) == 3
        assert read["seen"] == "before" and read["status"] == "open", "the chat, read after the scripts"
        assert await stack.bridge.timers.due_at(reminder) == due
        assert [j.id for j in await stack.bridge.outbox.pending(TAG, thread)] == [f"post-{run}"]
        await stack.bridge.worker.drain()
    assert texts(stack, cid) == list(runs)


GROUP_1002 = -1001002000001  # store 1002's task orders are in a Telegram group


async def telegram_task_cards(stack: Stack) -> list[Any]:
    """Raises a task order of store 1002 and runs the bridge to the end. Returns the cards posted in
    its Telegram group, having checked that no message went out twice and every job is done with."""
    tid = await stack.sandbox.create_task_order("1002", "c-7001")
    await stack.settle()
    texts = [m.text for chat in (GROUP_1002, 7001) for m in stack.telegram.by_bot(chat)]
    assert len(texts) == len(set(texts)), texts
    assert await stack.redis.keys(f"{{store:1002}}:outbox:task:{tid}*") == [], "every job done with"
    return [m for m in stack.telegram.by_bot(GROUP_1002) if tid in m.text and m.reply_markup]


@pytest.mark.parametrize("lost", ["before Redis ran it", "its answer"])
async def test_a_telegram_post_whose_removal_meets_a_redis_error_is_not_posted_again(
    stack: Stack, monkeypatch: pytest.MonkeyPatch, lost: str
) -> None:
    """Telegram took the message, then Redis failed as the job came off its queue (a restart, a
    failover). Telegram keeps nothing to look up, so sending it again would post it twice: the run
    that sent it takes it off the queue once Redis answers."""
    pop, failed = stack.bridge.outbox._pop, list[str]()

    async def failing_once(timer: Timer, tag: str, thread: str, job: OutboxJob, *args: Any) -> Any:
        if job.kind.startswith("telegram.") and not failed:
            failed.append(job.id)
            if lost == "its answer":
                await pop(timer, tag, thread, job, *args)
            raise RedisConnectionError("injected: Redis went away")
        return await pop(timer, tag, thread, job, *args)

    monkeypatch.setattr(stack.bridge.outbox, "_pop", failing_once)
    cards = await telegram_task_cards(stack)
    assert failed and len(cards) == 1, (failed, [m.text for m in stack.telegram.by_bot(GROUP_1002)])


async def test_a_telegram_post_recorded_only_after_a_long_redis_failover_is_not_posted_again(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Redis is gone for longer than any fixed number of tries would wait (a Sentinel failover takes
    30 s and more with its defaults) right after Telegram took a message: the run that sent it keeps
    trying to take it off its queue, often, until Redis answers, and the message is posted once."""
    pop, failures, waited = stack.bridge.outbox._pop, 0, list[float]()

    async def failing_over(timer: Timer, tag: str, thread: str, job: OutboxJob, *args: Any) -> Any:
        nonlocal failures
        if job.kind.startswith("telegram.") and sum(waited) < 45.0:
            failures += 1
            raise RedisConnectionError("injected: Redis is failing over")
        return await pop(timer, tag, thread, job, *args)

    async def no_real_wait(seconds: float) -> None:  # the retries' waits, by an injected clock
        waited.append(seconds)

    monkeypatch.setattr("redis.asyncio.retry.sleep", no_real_wait)
    monkeypatch.setattr(stack.bridge.outbox, "_pop", failing_over)
    cards = await telegram_task_cards(stack)
    assert len(cards) == 1 and sum(waited) >= 45.0 and max(waited) <= 0.25, (len(cards), sum(waited), max(waited))
    assert failures > 100, "tried often, so the run that sent it is the first to find Redis back"


async def test_a_sender_cut_off_from_redis_after_a_send_and_taken_over_sends_nothing_twice(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A message went out, then Redis went away for longer than the run's lease: once Redis is back,
    another run takes the thread over while the first one is about to take the message off its
    queue. The taker waits a moment rather than sending it again (Telegram could not tell), the
    first run takes it off, and the thread's next message goes once, in a run of its own."""
    outbox, worker, thread, clock = stack.bridge.outbox, stack.bridge.worker, "chat:cut-off", stack.clock
    assert isinstance(clock, ManualClock)
    sent: list[str] = []
    redis_gone, answered = False, asyncio.Event()

    async def note(job: OutboxJob) -> None:
        nonlocal redis_gone
        sent.append(job.id)
        redis_gone = job.id == "first"  # right after the service took the first message
        if job.id == "second":
            await answered.wait()  # a slow answer: a second sender of the thread would start meanwhile

    pop = outbox._pop

    async def pop_unless_gone(*args: Any) -> Any:
        if redis_gone:
            raise RedisConnectionError("injected: Redis is gone")
        return await pop(*args)

    async def retry_wait(seconds: float) -> None:  # the record's waits, without real time
        await asyncio.sleep(0)

    outbox.register({"test.note": note})
    monkeypatch.setattr(outbox, "_pop", pop_unless_gone)
    monkeypatch.setattr("redis.asyncio.retry.sleep", retry_wait)
    for job_id in ("first", "second"):
        await outbox.enqueue(TAG, thread, OutboxJob(job_id, "test.note", {}))
    await worker._claim_and_start()  # the first run: sends "first", then cannot take it off
    await until(lambda: sent == ["first"] and redis_gone, "the first run sent its message")
    clock.advance(worker.lease_seconds + 1)  # its lease lapsed while Redis was gone
    await worker._claim_and_start()  # Redis is back: another run takes the thread over first
    for _ in range(50):
        await asyncio.sleep(0)
    assert sent == ["first"], "the taker waits for the run that may still be recording"
    redis_gone = False  # the first run's next try reaches Redis

    async def only_second_left() -> bool:
        return [job.id for job in await outbox.pending(TAG, thread)] == ["second"]

    await until(only_second_left, "the first run took its message off once Redis was back")
    clock.advance(TAKEN_OVER_GRACE_SECONDS)
    await worker._claim_and_start()
    for _ in range(50):
        await asyncio.sleep(0)
    answered.set()
    await stack.settle()
    assert sent == ["first", "second"] and await outbox.pending(TAG, thread) == []


async def test_recording_a_send_waits_out_an_unreachable_redis_but_not_an_error_redis_answers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    waited: list[float] = []

    async def no_real_wait(seconds: float) -> None:  # the retries' waits, by an injected clock
        waited.append(seconds)

    monkeypatch.setattr("redis.asyncio.retry.sleep", no_real_wait)
    tries = 0

    async def unreachable_for_a_while() -> str:
        nonlocal tries
        tries += 1
        if tries <= 4000:  # 1,000 s: past the ~1,000 failures where redis-py 8.1's own backoff overflowed
            raise RedisConnectionError("Connection refused")
        return "recorded"

    assert await record_what_went_out(unreachable_for_a_while, "a test record") == "recorded"
    assert tries == 4001 and sum(waited) >= 990 and max(waited) == 0.25, "every quarter second, however long"

    tries, waited[:] = 0, []

    async def out_of_memory() -> str:
        nonlocal tries
        tries += 1
        raise ResponseError("OOM command not allowed when used memory > 'maxmemory'.")

    with pytest.raises(ResponseError, match="OOM"):
        await record_what_went_out(out_of_memory, "a test record")
    assert tries == 21 and 10 <= sum(waited) <= 20, "an answer from Redis: about 16 s, then the run fails"
