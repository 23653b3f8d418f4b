"""Event processing: shared by consumers, in order per thread, once in effect, nothing lost on a kill."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from bridge.engine import keys
from bridge.engine.clock import ManualClock
from bridge.engine.endpoint import Endpoint
from bridge.engine.events import ROUND_EVENTS, EventConsumer, StoredEvent
from bridge.engine.ingest import EventLog, IncomingRecord
from tests.conftest import until

STORE = Endpoint("store", "1001")


def record(msg_id: str, thread: str) -> IncomingRecord:
    return IncomingRecord("im_platform_message", msg_id, thread, json.dumps({"n": msg_id}))


def consumer(redis: Redis, handler, **kw) -> EventConsumer:  # type: ignore[no-untyped-def]
    return EventConsumer(redis, lambda: [STORE], {"im_platform_message": handler}, **kw)


def failing_for_good(bad: str, calls: list[str]) -> Callable[[StoredEvent], Awaitable[None]]:
    """A handler that notes every event it is given in ``calls`` and fails (a bug) on ``bad``."""

    async def handle(event: StoredEvent) -> None:
        calls.append(event.msg_id)
        if event.msg_id == bad:
            raise RuntimeError("boom")

    return handle


async def test_events_of_one_thread_run_in_order_across_two_consumers(redis: Redis) -> None:
    log = EventLog(redis)
    await log.store(STORE, [record(f"{t}-{i}", f"chat:{t}") for i in range(20) for t in ("a", "b", "c")])
    seen: dict[str, list[int]] = {}

    async def handle(event: StoredEvent) -> None:
        await asyncio.sleep(0.001 * (hash(event.msg_id) % 3))
        seen.setdefault(event.thread, []).append(int(event.msg_id.split("-")[1]))

    first, second = consumer(redis, handle, batch=7), consumer(redis, handle, batch=5)
    await asyncio.gather(first.drain(), second.drain())
    assert seen == {f"chat:{t}": list(range(20)) for t in "abc"}
    assert first.stats.handled + second.stats.handled == 60
    assert first.stats.handled and second.stats.handled, "both consumers took a share"
    assert await redis.xlen(keys.events(STORE.tag)) == 0


async def test_a_handled_event_is_never_handled_again(redis: Redis) -> None:
    await EventLog(redis).store(STORE, [record("x", "chat:1")])
    calls: list[str] = []

    async def handle(event: StoredEvent) -> None:
        calls.append(event.msg_id)

    c = consumer(redis, handle)
    assert await c.drain() == 1
    # The same entry delivered again (a crash between effect and acknowledgement) is only acked.
    event = StoredEvent(STORE, "0-1", "x", "im_platform_message", "chat:1", 1, "{}", 0)
    c._take([event])
    await c._run_round()
    assert calls == ["x"] and c.stats.duplicates == 1


async def test_failing_handler_retries_then_dead_letters_and_unblocks_its_thread(redis: Redis) -> None:
    await EventLog(redis).store(STORE, [record("bad", "chat:1"), record("next", "chat:1")])
    calls: list[str] = []
    handle = failing_for_good("bad", calls)

    clock = ManualClock()
    c = consumer(redis, handle, retry_base_seconds=0.5, max_attempts=3, clock=clock)
    await c.drain()
    assert calls == ["bad"], "the retry waits for its backoff, by the injected clock"
    assert c.next_retry_at() == clock.now() + 0.5
    clock.advance(0.49)
    await c.drain()
    assert calls == ["bad"]
    clock.advance(0.01)
    await c.drain()
    assert calls == ["bad", "bad"] and c.next_retry_at() == clock.now() + 1.0, "backoff doubles"
    clock.advance(1.0)
    await c.drain()
    assert calls == ["bad", "bad", "bad", "next"]
    [dead] = await redis.lrange(keys.events_dead(STORE.tag), 0, -1)
    assert json.loads(dead)["msg_id"] == "bad" and "boom" in json.loads(dead)["error"]


@pytest.mark.parametrize("lost_answer", [False, True], ids=["refused", "answer lost"])
async def test_an_event_whose_dead_list_push_fails_is_retried_then_dead_lettered_once(
    redis: Redis, monkeypatch: pytest.MonkeyPatch, lost_answer: bool
) -> None:
    """A handler fails for good, and Redis fails the push to the dead list (before it, or after it
    with its answer lost): the event is handled once more after the backoff and is on the dead list
    once then; the other chat of its round is handled."""
    await EventLog(redis).store(STORE, [record("bad", "chat:1"), record("good", "chat:2")])
    calls: list[str] = []
    handle = failing_for_good("bad", calls)
    clock = ManualClock()
    c = consumer(redis, handle, retry_base_seconds=0.5, max_attempts=1, clock=clock)
    push, pushes = c.dead.entries.put, 0

    async def push_or_fail(*args: Any) -> Any:
        nonlocal pushes
        pushes += 1
        if pushes == 1:
            if lost_answer:
                await push(*args)
            raise RedisConnectionError("Connection reset by peer")
        return await push(*args)

    monkeypatch.setattr(c.dead.entries, "put", push_or_fail)
    await c.drain()
    assert sorted(calls) == ["bad", "good"] and await redis.llen(keys.events_dead(STORE.tag)) == int(lost_answer)
    assert c.next_retry_at() == clock.now() + 0.5
    clock.advance(0.5)
    await c.drain()
    assert sorted(calls) == ["bad", "bad", "good"] and c.next_retry_at() is None
    [dead] = await redis.lrange(keys.events_dead(STORE.tag), 0, -1)
    assert json.loads(dead)["msg_id"] == "bad" and json.loads(dead)["thread"] == "chat:1"
    assert c.stats.dead == 1 and await redis.xlen(keys.events(STORE.tag)) == 0


async def test_a_handler_failing_on_redis_is_retried_for_as_long_as_it_takes_never_dead_lettered(
    redis: Redis,
) -> None:
    await EventLog(redis).store(STORE, [record("e", "chat:1"), record("after", "chat:1")])
    calls: list[str] = []

    async def handle(event: StoredEvent) -> None:
        calls.append(event.msg_id)
        if event.msg_id == "e" and len(calls) <= 20:
            raise RedisConnectionError("Connection refused")

    clock = ManualClock()
    c = consumer(redis, handle, retry_base_seconds=0.5, max_attempts=3, clock=clock)
    await c.drain()
    delays = []
    while (due := c.next_retry_at()) is not None:
        delays.append(round(due - clock.now(), 3))
        clock.set(due)
        await c.drain()
    assert calls == ["e"] * 21 + ["after"], "handled in order once Redis answered, after 20 failures"
    assert await redis.llen(keys.events_dead(STORE.tag)) == 0
    assert max(delays) == c.max_retry_seconds and delays[:3] == [0.5, 1.0, 2.0]


CONSUMER_SCRIPT = """
import asyncio, sys
from redis.asyncio import Redis
from bridge.engine.endpoint import Endpoint
from bridge.engine.events import EventConsumer

async def main():
    r = Redis.from_url(sys.argv[1], decode_responses=True)
    async def hang(event):
        await r.rpush("started", event.msg_id)
        await asyncio.sleep(3600)
    c = EventConsumer(
        r, lambda: [Endpoint("store", "1001")], {"im_platform_message": hang}, name="doomed", lock_seconds=0.3
    )
    await c.run()

asyncio.run(main())
"""


async def test_killed_consumer_mid_event_is_finished_by_another_process(
    redis: Redis, redis_url: str, tmp_path: Path
) -> None:
    await EventLog(redis).store(STORE, [record("e1", "chat:1"), record("e2", "chat:1"), record("e3", "chat:2")])
    script = tmp_path / "consumer.py"
    script.write_text(CONSUMER_SCRIPT)
    proc = await asyncio.create_subprocess_exec(sys.executable, str(script), redis_url, cwd=Path(__file__).parents[2])
    try:
        assert await redis.blpop(["started"], timeout=15) is not None
    finally:
        proc.send_signal(signal.SIGKILL)
        await proc.wait()

    async def effect(event: StoredEvent) -> None:
        await redis.hincrby("effects", event.msg_id, 1)

    survivor = consumer(redis, effect, claim_idle_seconds=0.2, lock_seconds=0.3)
    await asyncio.sleep(0.4)  # the dead consumer's claim and thread lock age past their limits
    await survivor.drain()
    assert await redis.hgetall("effects") == {"e1": "1", "e2": "1", "e3": "1"}
    assert survivor.stats.claimed >= 1
    assert await redis.xlen(keys.events(STORE.tag)) == 0
    pending = await redis.xpending(keys.events(STORE.tag), keys.EVENTS_GROUP)
    assert pending["pending"] == 0


async def test_a_served_consumer_completes_what_it_handled_before_it_waits_for_more(redis: Redis) -> None:
    """Completions go out with the consumer's next read, ahead of its wait for new events: a handled
    event is recorded, acknowledged and deleted at once, not after that wait (5 s here)."""
    handled: list[str] = []

    async def handle(event: StoredEvent) -> None:
        handled.append(event.msg_id)

    c = consumer(redis, handle, block_seconds=5.0)
    serving = asyncio.create_task(c.run())
    await EventLog(redis).store(STORE, [record("x", "chat:1")])

    async def completed() -> bool:
        return bool(handled) and not await redis.xlen(keys.events(STORE.tag))

    await until(completed, "handled and deleted", within=1.0)
    assert handled == ["x"]
    assert await redis.xlen(keys.events(STORE.tag)) == 0, "completed within a second, while the read waits"
    assert await redis.hget(keys.thread_done(STORE.tag), "chat:1") == "1"
    assert not await redis.hgetall(keys.thread_locks(STORE.tag)), "the thread's lock is released"
    c.stop()
    await EventLog(redis).store(STORE, [record("y", "chat:2")])  # ends the wait: the loop sees the stop
    await asyncio.wait_for(serving, 10)
    assert await redis.xlen(keys.events(STORE.tag)) == 0, "what the last step handled is completed on the way out"


async def test_events_handled_by_a_consumer_that_died_before_completing_them_are_handled_again(
    redis: Redis,
) -> None:
    """Between handling a round and completing it (with the next read) a process may die: its events
    are claimed by another, handled again (handlers are idempotent), and the thread goes on in order."""
    calls: list[str] = []

    async def handle(event: StoredEvent) -> None:
        calls.append(event.msg_id)

    clock = ManualClock()
    await EventLog(redis).store(STORE, [record("first", "chat:1")])
    dying = consumer(redis, handle, clock=clock)
    assert await dying._step(block=False) == 1  # handled; its completion would go with the next read
    await EventLog(redis).store(STORE, [record("second", "chat:1")])
    survivor = consumer(redis, handle, clock=clock, claim_idle_seconds=0.05)
    await asyncio.sleep(0.1)  # the dead consumer's delivery ages past the claim time (Redis's clock)
    clock.advance(dying.lock_seconds)  # and its thread lock lapses (the injected clock)
    await survivor.drain()
    assert calls == ["first", "first", "second"]
    assert await redis.xlen(keys.events(STORE.tag)) == 0
    assert await redis.hget(keys.thread_done(STORE.tag), "chat:1") == "2"


async def test_a_burst_is_begun_in_arrival_order_at_most_a_round_at_a_time(redis: Redis) -> None:
    """45 events of 45 threads: at most ROUND_EVENTS handlers run at once, the first to arrive
    first, so a burst's first chats finish (and post) while the later ones wait their turn. Events
    without a handler are not counted: they cost no work."""
    log = EventLog(redis)
    for i in range(45):
        await log.store(
            STORE, [record(f"e{i}", f"chat:{i}"), IncomingRecord("no_handler", f"x{i}", f"other:{i}", "{}")]
        )
    running, most, order = 0, 0, []

    async def handle(event: StoredEvent) -> None:
        nonlocal running, most
        running += 1
        most = max(most, running)
        await asyncio.sleep(0.001)
        order.append(int(event.msg_id[1:]))
        running -= 1

    c = consumer(redis, handle)
    await c.drain()
    assert most == ROUND_EVENTS == 20
    assert sorted(order[:20]) == list(range(20)) and sorted(order[20:40]) == list(range(20, 40))
    assert c.stats.handled == 45 and c.stats.ignored == 45


async def test_a_stores_burst_does_not_hold_up_another_stores_first_chat(redis: Redis) -> None:
    """Store A's 30 chats came first, then store B's 5: the first round takes every store's oldest
    before any store's second, so all of B's are in it. A chat of store C stored while the first
    round runs is read before the next round and begun in it, not after A's whole backlog."""
    a, b, c = STORE, Endpoint("store", "1002"), Endpoint("store", "1003")
    log = EventLog(redis)
    await log.store(a, [record(f"a{i}", f"chat:a{i}") for i in range(30)])
    await log.store(b, [record(f"b{i}", f"chat:b{i}") for i in range(5)])
    rounds: list[list[str]] = [[]]

    async def handle(event: StoredEvent) -> None:
        rounds[-1].append(event.msg_id)
        if event.msg_id == "a0":  # while the first round runs, C's customer writes
            await log.store(c, [record("c0", "chat:c0")])

    consumer_ = EventConsumer(redis, lambda: [a, b, c], {"im_platform_message": handle})
    while await consumer_._step(block=False):
        rounds.append([])
    first, second = rounds[0], rounds[1]
    assert len(first) == ROUND_EVENTS and {f"b{i}" for i in range(5)} <= set(first)
    assert sorted(first) == sorted([f"a{i}" for i in range(15)] + [f"b{i}" for i in range(5)])
    assert sorted(second) == sorted(["c0"] + [f"a{i}" for i in range(15, 30)])
    assert rounds[2:] == [[]]
    assert consumer_.stats.handled == 36
    for store in (a, b, c):
        assert await redis.xlen(keys.events(store.tag)) == 0


class CountedReads:
    """Counts a consumer's reads, and fails read number ``fail_on`` as Redis dropping the connection."""

    def __init__(self, consumer_: EventConsumer, fail_on: int | None = None) -> None:
        self.count, self.fail_on, self._read = 0, fail_on, consumer_._read
        consumer_._read = self  # type: ignore[method-assign, assignment]

    async def __call__(self, *args: Any) -> list[StoredEvent]:
        self.count += 1
        if self.count == self.fail_on:
            raise RedisConnectionError("Connection reset by peer")
        return await self._read(*args)


async def _burst(redis: Redis, stores_first: int, second_read_fails: bool = False, batch: int = 500) -> list[list[str]]:
    """Store A's two chats (and with ``stores_first`` 2, store B's one) are there when a quiet
    consumer looks; store C's chat is stored just after the consumer read. Returns what each step's
    round handled."""
    a, b, c = STORE, Endpoint("store", "1002"), Endpoint("store", "1003")
    log = EventLog(redis)
    rounds: list[list[str]] = [[]]

    async def handle(event: StoredEvent) -> None:
        rounds[-1].append(event.msg_id)

    consumer_ = EventConsumer(
        redis, lambda: [a, b, c], {"im_platform_message": handle}, burst_gather_seconds=0.5, batch=batch
    )
    await consumer_._step(block=False)  # the groups made, nothing there
    reads = CountedReads(consumer_, fail_on=2 if second_read_fails else None)

    async def first_read_done() -> bool:
        return reads.count == 1 and (await redis.xpending(keys.events(a.tag), keys.EVENTS_GROUP))["pending"] > 0

    await log.store(a, [record("a0", "chat:a0"), record("a1", "chat:a1")])
    if stores_first == 2:
        await log.store(b, [record("b0", "chat:b0")])
    step = asyncio.create_task(consumer_._step(block=True))
    await until(first_read_done, "the consumer's first read")
    await log.store(c, [record("c0", "chat:c0")])
    await step
    while True:
        rounds.append([])
        if not await consumer_._step(block=False):
            break
    assert consumer_.stats.handled == sum(map(len, rounds)) and consumer_.stats.duplicates == 0
    for store in (a, b, c):
        assert await redis.xlen(keys.events(store.tag)) == 0
    return [sorted(r) for r in rounds[:-1]]


async def test_a_burst_across_stores_is_gathered_before_its_first_round(redis: Redis) -> None:
    """The first read after a quiet spell takes two stores' chats: the consumer reads again before
    its round, so store C's chat, stored just after the first read, is in the first round."""
    assert await _burst(redis, stores_first=2) == [["a0", "a1", "b0", "c0"]]


async def test_one_stores_events_are_not_held_up(redis: Redis) -> None:
    """A read that takes one store's events begins them at once: a chat of another store stored
    just after it waits for the next read."""
    assert await _burst(redis, stores_first=1) == [["a0", "a1"], ["c0"]]


async def test_a_first_read_that_fills_a_round_begins_it_at_once(redis: Redis) -> None:
    """The first read after a quiet spell already takes chats of ROUND_EVENTS stores: the round
    begins without the gathering wait and second read, and holds each store's first chat; a chat of
    another store stored after the read follows, each chat handled once."""
    stores = [Endpoint("store", f"{2001 + i}") for i in range(ROUND_EVENTS + 1)]
    log = EventLog(redis)
    handled: list[list[str]] = [[]]

    async def handle(event: StoredEvent) -> None:
        handled[-1].append(event.msg_id)

    consumer_ = EventConsumer(redis, lambda: stores, {"im_platform_message": handle}, burst_gather_seconds=60.0)
    await consumer_._step(block=False)  # the groups made, nothing there
    reads = CountedReads(consumer_)
    for i, store in enumerate(stores[:-1]):
        await log.store(store, [record(f"s{i}-0", f"chat:s{i}-0"), record(f"s{i}-1", f"chat:s{i}-1")])
    async with asyncio.timeout(5):  # a gathering wait of 60 s would fail here
        await consumer_._step(block=True)
    assert reads.count == 1
    await log.store(stores[-1], [record("late", "chat:late")])
    while handled[-1]:
        handled.append([])
        await consumer_._step(block=False)
    assert sorted(handled[0]) == sorted(f"s{i}-0" for i in range(ROUND_EVENTS))
    seconds = [f"s{i}-1" for i in range(ROUND_EVENTS)]
    assert sorted(m for later in handled[1:] for m in later) == sorted(["late", *seconds])
    assert consumer_.stats.duplicates == 0


async def test_a_failed_second_read_of_a_burst_leaves_its_events_to_the_next(redis: Redis) -> None:
    """Redis fails the burst's second read: the first read's chats are handled in the round, the
    one it missed in the next step, each once."""
    assert await _burst(redis, stores_first=2, second_read_fails=True) == [["a0", "a1", "b0"], ["c0"]]


async def test_a_round_whose_begin_fails_for_one_store_finishes_the_others_before_it_fails(
    redis: Redis,
) -> None:
    """Redis fails store B's begin in a round that also holds store A's chat: the step fails only
    once A's handler has finished, and A's outcome counts, so A's chat is not begun again. B's chat
    is handled in the next step; each once."""
    a, b = STORE, Endpoint("store", "1002")
    log = EventLog(redis)
    await log.store(a, [record("a0", "chat:a0")])
    await log.store(b, [record("b0", "chat:b0")])
    handled: list[str] = []

    async def handle(event: StoredEvent) -> None:
        for _ in range(3):  # a handler's round trips: others run meanwhile
            await asyncio.sleep(0)
        handled.append(event.msg_id)

    consumer_ = EventConsumer(redis, lambda: [a, b], {"im_platform_message": handle})
    begin, failing_store = consumer_._begin, keys.thread_done(b.tag)
    failures = 1

    async def begin_or_fail(**call: Any) -> Any:
        nonlocal failures
        if call["keys"][0] == failing_store and failures:
            failures -= 1
            raise RedisConnectionError("Connection reset by peer")
        return await begin(**call)

    consumer_._begin = begin_or_fail  # type: ignore[assignment]
    with pytest.raises(RedisConnectionError):
        await consumer_._step(block=False)
    assert handled == ["a0"], "store A's handler finished before the step failed"
    while await consumer_._step(block=False):
        pass
    assert handled == ["a0", "b0"]
    assert consumer_.stats.handled == 2 and consumer_.stats.duplicates == 0
    for store in (a, b):
        assert await redis.xlen(keys.events(store.tag)) == 0


async def test_a_flood_is_not_read_twice_before_its_round(redis: Redis) -> None:
    """The first read took a batch's worth (a flood): no second read before the round, so what
    this process cannot begin soon stays in Redis for the others."""
    assert await _burst(redis, stores_first=2, batch=2) == [["a0", "a1", "b0"], ["c0"]]


async def test_a_consumer_with_a_long_backlog_leaves_new_events_to_the_others(redis: Redis) -> None:
    """Three stores' 15 chats each, read 10 a stream at a time: a consumer whose backlog holds a
    batch's worth reads no more until it is shorter, so what it cannot handle now stays in Redis
    for the other processes instead of waiting in its memory."""
    stores = [Endpoint("store", f"{1001 + i}") for i in range(3)]
    log = EventLog(redis)
    for store in stores:
        await log.store(store, [record(f"{store.id}-{i}", f"chat:{store.id}-{i}") for i in range(15)])
    handled: dict[str, list[str]] = {"busy": [], "other": []}

    def handler(name: str):  # type: ignore[no-untyped-def]
        async def handle(event: StoredEvent) -> None:
            handled[name].append(event.msg_id)

        return handle

    busy = EventConsumer(redis, lambda: stores, {"im_platform_message": handler("busy")}, batch=10)
    assert await busy._step(block=False) == ROUND_EVENTS  # read 30 (10 a stream), began 20
    assert await busy._step(block=False) == 10  # 10 left, a batch's worth: no read before this round
    other = EventConsumer(redis, lambda: stores, {"im_platform_message": handler("other")}, batch=10)
    await other.drain()
    await busy.drain()
    assert len(handled["busy"]) == 30 and len(handled["other"]) == 15
    assert sorted(handled["busy"] + handled["other"]) == sorted(f"{s.id}-{i}" for s in stores for i in range(15))


async def test_completions_survive_a_redis_that_forgot_its_scripts(redis: Redis) -> None:
    """A Redis restarted between a round and its completion has no scripts: the completion,
    pipelined with the next read, is sent again through a call that loads the script."""
    calls: list[str] = []

    async def handle(event: StoredEvent) -> None:
        calls.append(event.msg_id)

    await EventLog(redis).store(STORE, [record("a", "chat:1"), record("b", "chat:2")])
    c = consumer(redis, handle)
    assert await c._step(block=False) == 2  # handled; completed with the next read
    await redis.script_flush()
    await c.drain()
    assert sorted(calls) == ["a", "b"]
    assert await redis.xlen(keys.events(STORE.tag)) == 0
    assert await redis.hgetall(keys.thread_done(STORE.tag)) == {"chat:1": "1", "chat:2": "1"}


async def test_abandoned_events_are_claimed_from_the_streams_that_have_any_in_one_call(redis: Redis) -> None:
    """A bridge of 300 stores, two of them with events a dead consumer took: the survivor claims
    both in one call that asks only those two streams, and handles each once; more than a batch
    left in one stream is claimed in further passes."""
    stores = [Endpoint("store", str(2000 + i)) for i in range(300)]
    busy = [stores[7], stores[250]]
    log = EventLog(redis)
    for endpoint in busy:
        await log.store(endpoint, [record(f"{endpoint.id}-{i}", f"chat:{endpoint.id}-{i}") for i in range(5)])
    handled: list[str] = []

    async def handle(event: StoredEvent) -> None:
        handled.append(event.msg_id)

    def on(batch: int, **kw: Any) -> EventConsumer:
        return EventConsumer(redis, lambda: stores, {"im_platform_message": handle}, batch=batch, **kw)

    dying = on(500)
    await dying._ensure_groups({keys.events(e.tag): e for e in stores})
    await dying._read_each({keys.events(e.tag): e for e in busy}, None)  # read, then the process died
    survivor = on(2, claim_idle_seconds=0.05)
    await asyncio.sleep(0.1)  # the dead consumer's deliveries age past the claim time (Redis's clock)
    await redis.config_resetstat()
    claimed = await survivor._claim_abandoned({keys.events(e.tag): e for e in stores})
    stats = await redis.info("commandstats")
    assert sorted(e.msg_id for e in claimed) == sorted(f"{e.id}-{i}" for e in busy for i in range(5))
    assert stats["cmdstat_xautoclaim"]["calls"] == 2 * 3, "two streams, three passes of two (5 entries)"
    assert stats["cmdstat_evalsha"]["calls"] <= 3 + 1, "a call per pass (the first loads the script)"
    assert stats["cmdstat_xlen"]["calls"] == 300 + 2 * 2, "every stream looked at once, then the two with more"
    survivor._take(claimed)
    while survivor._backlog:
        await survivor._run_round()
        await survivor._complete_unfinished()
    assert sorted(handled) == sorted(e.msg_id for e in claimed) and len(handled) == 10


async def test_a_read_asks_only_the_streams_intake_wrote_to(redis: Redis) -> None:
    """A bridge of 300 stores, two of them with new events: intake lists those two streams as
    ready, and the consumer's read asks only them (one XREADGROUP each, not one naming all 300),
    takes each off the list once read to its end, and everything is handled once."""
    stores = [Endpoint("store", str(2000 + i)) for i in range(300)]
    busy = [stores[7], stores[250]]
    log = EventLog(redis)
    for endpoint in busy:
        await log.store(endpoint, [record(f"{endpoint.id}-{i}", f"chat:{endpoint.id}-{i}") for i in range(3)])
    assert await redis.smembers(keys.EVENTS_READY) == {keys.events(e.tag) for e in busy}
    assert await redis.lrange(keys.EVENTS_READY_WAKE, 0, -1) == [keys.events(e.tag) for e in busy], "a wake per write"
    handled: list[str] = []

    async def handle(event: StoredEvent) -> None:
        handled.append(event.msg_id)

    c = EventConsumer(redis, lambda: stores, {"im_platform_message": handle})
    await c._ensure_groups({keys.events(e.tag): e for e in stores})
    await redis.config_resetstat()
    assert await c._step(block=False) == 6
    stats = await redis.info("commandstats")
    assert stats["cmdstat_xreadgroup"]["calls"] == 2, "the two ready streams, each asked once"
    assert not await redis.smembers(keys.EVENTS_READY), "both read to their end: off the list"
    assert not await redis.llen(keys.EVENTS_READY_WAKE), "their wake-ups dropped: no consumer woken for nothing"
    await c.drain()
    assert sorted(handled) == sorted(f"{e.id}-{i}" for e in busy for i in range(3))
    assert [await redis.xlen(keys.events(e.tag)) for e in busy] == [0, 0]


async def test_events_stored_without_being_listed_as_ready_are_read_all_the_same(redis: Redis) -> None:
    """Events stored by a bridge from before the ready list (an upgrade), or whose listing was lost,
    are listed again by the consumer's look for abandoned events and handled."""
    await EventLog(redis).store(STORE, [record("stored-before", "chat:1")])
    await redis.delete(keys.EVENTS_READY, keys.EVENTS_READY_WAKE)
    handled: list[str] = []

    async def handle(event: StoredEvent) -> None:
        handled.append(event.msg_id)

    assert await consumer(redis, handle).drain() == 1
    assert handled == ["stored-before"]
    assert await redis.xlen(keys.events(STORE.tag)) == 0


async def test_an_event_of_a_store_a_process_does_not_serve_is_left_to_one_that_does(redis: Redis) -> None:
    """A process whose configuration is older than intake's (it lacks a new store) may read that
    store's events off the ready list: it leaves them alone, and a process that serves the store
    takes them over and handles each once."""
    added = Endpoint("store", "1002")
    await EventLog(redis).store(added, [record("first-of-a-new-store", "chat:9")])
    by_older: list[str] = []
    by_newer: list[str] = []

    async def older_handles(event: StoredEvent) -> None:
        by_older.append(event.msg_id)

    async def newer_handles(event: StoredEvent) -> None:
        by_newer.append(event.msg_id)

    newer = EventConsumer(redis, lambda: [STORE, added], {"im_platform_message": newer_handles},
                          claim_idle_seconds=0.05)  # fmt: skip
    await newer._ensure_groups({keys.events(e.tag): e for e in (STORE, added)})
    older = consumer(redis, older_handles)
    assert await older.drain() == 0
    assert by_older == [] and not await redis.smembers(keys.EVENTS_READY), "read off the list, left alone"
    await asyncio.sleep(0.1)  # what the older process took ages past the claim time (Redis's clock)
    await newer.drain()
    assert by_newer == ["first-of-a-new-store"]
    assert await redis.xlen(keys.events(added.tag)) == 0


async def test_a_waiting_consumer_whose_read_script_redis_forgot_still_takes_the_event(redis: Redis) -> None:
    """The read goes as EVALSHA behind the wait for intake's next write, in one round trip: when
    Redis has forgotten the script (a restart) by the time that write wakes it, the script is
    loaded and the read made again, and the event that woke it is handled, once."""
    handled: list[str] = []

    async def handle(event: StoredEvent) -> None:
        handled.append(event.msg_id)

    c = consumer(redis, handle, block_seconds=5.0)
    serving = asyncio.create_task(c.run())
    await EventLog(redis).store(STORE, [record("before", "chat:1")])
    await until(lambda: bool(handled), "the first event handled", within=2.0)
    await asyncio.sleep(0.05)  # waiting again, its read script queued behind the wait
    await redis.script_flush()
    await EventLog(redis).store(STORE, [record("after", "chat:2")])
    await until(lambda: len(handled) == 2, "the event that woke it handled", within=2.0)
    c.stop()
    await EventLog(redis).store(STORE, [record("stop", "chat:3")])  # ends the wait: the loop sees the stop
    await asyncio.wait_for(serving, 10)
    assert handled[:2] == ["before", "after"] and handled.count("after") == 1
    assert await redis.hget(keys.thread_done(STORE.tag), "chat:2") == "1"
