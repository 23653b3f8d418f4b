"""The timer engine against a real redis-server (PRODUCT C4)."""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from redis.asyncio import Redis

from bridge.app.service import open_redis
from bridge.engine import keys
from bridge.engine.clock import ManualClock, SystemClock
from bridge.engine.timers import Timer, TimerStore, TimerWorker
from tests.conftest import until

T0 = 1_700_000_000.0


def recorder(fired: list[Timer]):  # type: ignore[no-untyped-def]
    async def handle(timer: Timer) -> None:
        fired.append(timer)

    return handle


def hanging(started: asyncio.Event) -> Callable[[Timer], Awaitable[None]]:
    """A handler that never finishes, as in a process killed while running it."""

    async def handle(timer: Timer) -> None:
        started.set()
        await asyncio.Event().wait()

    return handle


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(T0)


@pytest.fixture
def store(redis: Redis, clock: ManualClock) -> TimerStore:
    return TimerStore(redis, clock=clock)


async def test_fires_at_due_time_not_before(store: TimerStore, clock: ManualClock) -> None:
    fired: list[Timer] = []
    worker = TimerWorker(store, {"window": recorder(fired)})
    await store.schedule("window:{store:1001}:conv-9", T0 + 120, payload="p1")

    clock.advance(119.999)
    assert await worker.drain() == 0
    clock.advance(0.001)
    assert await worker.drain() == 1

    assert [(t.key, t.due_at, t.payload) for t in fired] == [("window:{store:1001}:conv-9", T0 + 120, "p1")]
    assert await store.pending() == 0 and await store.leased() == 0
    assert await store.redis.hlen(keys.timers_payload(0)) == 0, "payload outlives its timer"


async def test_fires_once_only(store: TimerStore, clock: ManualClock) -> None:
    fired: list[Timer] = []
    worker = TimerWorker(store, {"window": recorder(fired)})
    await store.schedule("window:{store:1}:a", T0 + 1)
    clock.advance(5)
    assert await worker.drain() == 1
    clock.advance(3600)
    assert await worker.drain() == 0
    assert len(fired) == 1


async def test_schedule_is_idempotent_and_reschedule_replaces(store: TimerStore, clock: ManualClock) -> None:
    fired: list[Timer] = []
    worker = TimerWorker(store, {"remind": recorder(fired)})
    key = "remind:{store:1}:conv-1"
    await store.schedule(key, T0 + 60)
    await store.schedule(key, T0 + 60)
    assert await store.pending() == 1

    await store.schedule(key, T0 + 30)  # earlier
    clock.advance(30)
    assert await worker.drain() == 1
    assert fired[-1].due_at == T0 + 30

    await store.schedule(key, T0 + 100)
    await store.schedule(key, T0 + 200, payload="later")  # later replaces
    clock.set(T0 + 150)
    assert await worker.drain() == 0
    clock.set(T0 + 200)
    assert await worker.drain() == 1
    assert fired[-1].payload == "later"
    assert len(fired) == 2


async def test_cancel(store: TimerStore, clock: ManualClock) -> None:
    fired: list[Timer] = []
    worker = TimerWorker(store, {"deadline": recorder(fired)})
    await store.schedule("deadline:{store:1}:t1", T0 + 10, payload="x")
    await store.schedule("deadline:{store:1}:t2", T0 + 10)
    assert await store.cancel("deadline:{store:1}:t1") is True
    assert await store.cancel("deadline:{store:1}:t1") is False
    clock.advance(10)
    assert await worker.drain() == 1
    assert [t.key for t in fired] == ["deadline:{store:1}:t2"]
    assert await store.redis.hlen(keys.timers_payload(0)) == 0


async def test_dead_worker_lease_expires_and_another_takes_over(store: TimerStore, clock: ManualClock) -> None:
    started = asyncio.Event()
    dying = TimerWorker(store, {"window": hanging(started)}, lease_seconds=30)
    await store.schedule("window:{store:1}:c", T0 + 1)
    clock.advance(1)
    drain = asyncio.create_task(dying.drain())
    await started.wait()
    drain.cancel()  # the process is gone: no ack, no release
    await asyncio.gather(drain, return_exceptions=True)
    for task in list(dying._running):
        task.cancel()

    fired: list[Timer] = []
    survivor = TimerWorker(store, {"window": recorder(fired)})
    clock.advance(29)
    assert await survivor.drain() == 0, "taken over before the lease expired"
    clock.advance(1)
    assert await survivor.drain() == 1
    assert fired[0].key == "window:{store:1}:c" and fired[0].due_at is None
    assert survivor.stats.redelivered == 1
    assert await store.leased() == 0


async def test_failing_handler_is_retried_with_backoff_then_dead(store: TimerStore, clock: ManualClock) -> None:
    calls: list[float] = []

    async def flaky(timer: Timer) -> None:
        calls.append(clock.now())
        raise RuntimeError("platform down")

    worker = TimerWorker(store, {"deadline": flaky}, retry_base_seconds=5, max_attempts=3)
    await store.schedule("deadline:{store:1}:t", T0)
    for _ in range(60):
        await worker.drain()
        clock.advance(1)
    assert len(calls) == 3
    assert calls[1] - calls[0] == pytest.approx(5, abs=1)
    assert calls[2] - calls[1] == pytest.approx(10, abs=1)
    assert await store.dead() == ["deadline:{store:1}:t"]
    assert await store.pending() == 0 and await store.leased() == 0


async def test_rescheduled_while_running_keeps_new_schedule(store: TimerStore, clock: ManualClock) -> None:
    fired: list[float | None] = []

    async def reschedules_itself(timer: Timer) -> None:
        fired.append(timer.due_at)
        if len(fired) == 1:
            await store.schedule(timer.key, clock.now() + 60)

    worker = TimerWorker(store, {"remind": reschedules_itself})
    await store.schedule("remind:{store:1}:x", T0)
    assert await worker.drain() == 1
    assert await store.due_at("remind:{store:1}:x") == T0 + 60, "ack removed the new schedule"
    clock.advance(60)
    assert await worker.drain() == 1
    assert fired == [T0, T0 + 60]


async def test_ten_thousand_timers_all_fire(store: TimerStore, clock: ManualClock) -> None:
    fired: list[Timer] = []
    worker = TimerWorker(store, {"t": recorder(fired)}, batch=500, concurrency=1000)
    async with store.redis.pipeline(transaction=False) as pipe:
        for i in range(10_000):
            pipe.zadd(keys.timers_due(0), {f"t:{{store:1}}:{i}": int((T0 + i % 100) * 1000)})
        await pipe.execute()
    clock.advance(100)
    assert await worker.drain() == 10_000
    assert len({t.key for t in fired}) == 10_000
    assert await store.pending() == 0 and await store.leased() == 0


async def test_sharded_layout_fires_everything(redis: Redis, clock: ManualClock) -> None:
    store = TimerStore(redis, shards=4, clock=clock)
    fired: list[Timer] = []
    worker = TimerWorker(store, {"t": recorder(fired)})
    for i in range(200):
        await store.schedule(f"t:{{store:{i % 7}}}:{i}", T0 + i)
    assert {str(k).split(":")[1] for k in await redis.keys("timers:*:due")} == {"{0}", "{1}", "{2}", "{3}"}
    clock.advance(200)
    assert await worker.drain() == 200
    assert sorted(int(t.key.rsplit(":", 1)[1]) for t in fired) == list(range(200))


async def test_three_workers_fire_each_timer_once(redis_url: str) -> None:
    """Three workers, each with its own connection as separate processes would have, real time."""
    clients = [Redis.from_url(redis_url, decode_responses=True) for _ in range(3)]
    await clients[0].flushall()
    counts: Counter[str] = Counter()
    done = asyncio.Event()
    total = 300

    async def count(timer: Timer) -> None:
        counts[timer.key] += 1
        await clients[0].hincrby("fired", timer.key, 1)
        if sum(counts.values()) >= total:
            done.set()

    stores = [TimerStore(c, clock=SystemClock()) for c in clients]
    workers = [TimerWorker(s, {"w": count}) for s in stores]
    tasks = [asyncio.create_task(w.run()) for w in workers]
    await asyncio.sleep(0.1)
    now = time.time()
    for i in range(total):
        await stores[i % 3].schedule(f"w:{{store:1}}:{i}", now + 0.3 + i / total)
    await asyncio.wait_for(done.wait(), timeout=15)
    await asyncio.sleep(0.2)  # room for a wrongful second firing to show up
    for w in workers:
        await w.stop()
    await asyncio.gather(*tasks)

    assert len(counts) == total and set(counts.values()) == {1}
    stored = await clients[0].hgetall("fired")
    assert len(stored) == total and set(stored.values()) == {"1"}
    assert sum(w.stats.fired for w in workers) == total
    assert sum(1 for w in workers if w.stats.fired) >= 2, "the work was not shared"
    for c in clients:
        await c.aclose()


async def test_sleeping_worker_is_woken_by_an_earlier_timer_from_another_process(redis_url: str) -> None:
    client = Redis.from_url(redis_url, decode_responses=True)
    await client.flushall()
    fired = asyncio.Event()

    async def handle(timer: Timer) -> None:
        fired.set()

    worker = TimerWorker(TimerStore(client), {"w": handle}, max_idle_seconds=30)
    task = asyncio.create_task(worker.run())
    await asyncio.sleep(0.2)  # the worker is asleep with nothing scheduled
    other = Redis.from_url(redis_url, decode_responses=True)
    await TimerStore(other).schedule("w:{store:1}:soon", time.time() + 0.05)
    await asyncio.wait_for(fired.wait(), timeout=3)
    await worker.stop()
    await task
    await other.aclose()
    await client.aclose()


async def _subscribed_and_settled(redis: Redis, workers: int) -> None:
    """Every worker listens for wake-ups and has made the claim that its subscribing asks for."""

    async def listening() -> bool:
        return dict(await redis.pubsub_numsub(keys.WAKE_CHANNEL)).get(keys.WAKE_CHANNEL, 0) == workers

    await until(listening, "every worker subscribed", within=3.0)
    await asyncio.sleep(0.2)  # the claim the subscription asks for (a millisecond's work) is made


async def test_a_timer_due_later_wakes_every_process_but_each_claims_only_at_its_time(redis_url: str) -> None:
    """A schedule earlier than what the sleeping workers know of wakes the worker of every process.
    Nothing is due yet, so the wake-up only brings each nap's end forward: each worker claims once,
    at the timer's time, not also when woken (one round trip per process saved on every such
    schedule: a quiet store's chat opening, its archive copy)."""
    clients = [Redis.from_url(redis_url, decode_responses=True) for _ in range(3)]
    await clients[0].flushall()
    fired: list[Timer] = []
    workers = [TimerWorker(TimerStore(c), {"w": recorder(fired)}, max_idle_seconds=30) for c in clients[:2]]
    tasks = [asyncio.create_task(w.run()) for w in workers]
    await _subscribed_and_settled(clients[2], 2)
    claims_before = sum(w.stats.claims for w in workers)

    await TimerStore(clients[2]).schedule("w:{store:1}:later", time.time() + 1.0)
    await until(lambda: len(fired) == 1 and sum(w.stats.claims for w in workers) >= claims_before + 2,
                "the timer ran and both workers claimed", within=5.0)  # fmt: skip
    assert sum(w.stats.claims for w in workers) - claims_before == 2, "one claim a process, at the due time"
    assert [t.key for t in fired] == ["w:{store:1}:later"]
    for w in workers:
        await w.stop()
    await asyncio.gather(*tasks)
    for c in clients:
        await c.aclose()


async def test_a_wake_up_published_while_the_subscription_is_made_again_is_not_slept_past(redis_url: str) -> None:
    """redis-py makes a lost pub/sub connection again by itself and raises nothing: a timer
    scheduled before it has subscribed again has its wake-up published to nobody. The listener is
    told the subscription was made again, and the worker claims then, not at its next idle claim
    (30 s here; 5 s by default)."""
    client = open_redis(redis_url)  # the bridge's client, which makes a lost connection again at once
    other = Redis.from_url(redis_url, decode_responses=True)
    await client.flushall()
    fired: list[Timer] = []
    worker = TimerWorker(TimerStore(client), {"w": recorder(fired)}, max_idle_seconds=30)
    task = asyncio.create_task(worker.run())
    await _subscribed_and_settled(other, 1)

    assert await other.client_kill_filter(_type="pubsub") == 1
    # At once, while the listener's connection is made again (a connect and three round trips).
    await TimerStore(other).schedule("w:{store:1}:meanwhile", time.time())
    await until(lambda: len(fired) == 1, "the timer ran", within=5.0)
    assert [t.key for t in fired] == ["w:{store:1}:meanwhile"]
    await worker.stop()
    await task
    await client.aclose()
    await other.aclose()


async def test_a_lane_run_that_ends_below_the_lanes_limit_makes_no_claim(store: TimerStore) -> None:
    """The claim that started a lane's runs with room to spare took everything due in it and knows
    its next time: their ends call for no claim. Only a run ending in a full lane does (the claims
    made while it was full did not look at it; the lane test above shows its backlog then runs)."""
    copies: list[Timer] = []
    worker = TimerWorker(store, {"archive": recorder(copies)}, lanes={"archive": 4}, max_idle_seconds=30)
    running = asyncio.create_task(worker.run())
    await _subscribed_and_settled(store.redis, 1)
    claims_before = worker.stats.claims

    await store.change([(keys.archive_timer("{store:1}", f"chat:c{i}"), T0, False) for i in range(3)])
    await until(lambda: len(copies) == 3, "the three copies ran")
    await until(lambda: _none_leased(store), "the three acknowledged")
    await asyncio.sleep(0.05)  # a claim the runs' ends asked for would be made by now
    assert worker.stats.claims - claims_before == 1, "the one claim the schedule's wake-up made"
    await worker.stop()
    await running


WORKER_SCRIPT = """
import asyncio, sys
from redis.asyncio import Redis
from bridge.engine.timers import TimerStore, TimerWorker

async def main():
    r = Redis.from_url(sys.argv[1], decode_responses=True)
    async def hang(timer):
        await r.rpush("started", timer.key)
        await asyncio.sleep(3600)
    await TimerWorker(TimerStore(r), {"w": hang}, lease_seconds=1.0).run()

asyncio.run(main())
"""


async def test_killed_worker_process_loses_nothing(redis_url: str, tmp_path: Path) -> None:
    client = Redis.from_url(redis_url, decode_responses=True)
    await client.flushall()
    script = tmp_path / "worker.py"
    script.write_text(WORKER_SCRIPT)
    proc = await asyncio.create_subprocess_exec(sys.executable, str(script), redis_url, cwd=Path(__file__).parents[2])
    try:
        await TimerStore(client).schedule("w:{store:1}:job", time.time())
        started = await client.blpop(["started"], timeout=10)
        assert started == ("started", "w:{store:1}:job")
    finally:
        proc.send_signal(signal.SIGKILL)
        await proc.wait()

    fired: list[Timer] = []
    done = asyncio.Event()

    async def finish(timer: Timer) -> None:
        fired.append(timer)
        done.set()

    survivor = TimerWorker(TimerStore(client), {"w": finish})
    task = asyncio.create_task(survivor.run())
    await asyncio.wait_for(done.wait(), timeout=5)
    await survivor.stop()
    await task
    assert [t.key for t in fired] == ["w:{store:1}:job"]
    assert await TimerStore(client).leased() == 0 and await TimerStore(client).pending() == 0
    await client.aclose()


async def test_stop_releases_leases_of_unfinished_handlers(store: TimerStore, clock: ManualClock) -> None:
    release = asyncio.Event()

    async def slow(timer: Timer) -> None:
        await release.wait()

    worker = TimerWorker(store, {"w": slow})
    await store.schedule("w:{store:1}:a", T0)
    task = asyncio.create_task(worker.run())
    for _ in range(100):
        if await store.leased():
            break
        await asyncio.sleep(0.01)
    await worker.stop(grace_seconds=0.1)
    await task
    assert await store.leased() == 0
    assert await store.due_at("w:{store:1}:a") == T0, "released back for another worker at once"


async def test_a_running_handler_keeps_its_short_lease_and_a_dead_workers_is_taken_over_after_it(
    store: TimerStore, clock: ManualClock
) -> None:
    """Leases are short (a dead worker's timers — an outbox thread, a reply window — wait seconds,
    not minutes) and renewed while a handler runs (a long one is never run twice at once)."""
    release, runs = asyncio.Event(), Counter[str]()

    async def slow(timer: Timer) -> None:
        runs[timer.key] += 1
        await release.wait()

    first = TimerWorker(store, {"outbox": slow}, lease_seconds=5)
    second = TimerWorker(store, {"outbox": slow}, lease_seconds=5)
    await store.schedule("outbox:{store:1}:chat:a", T0)
    await first._claim_and_start()
    await asyncio.sleep(0)
    assert runs == {"outbox:{store:1}:chat:a": 1}
    for _ in range(4):  # 16 s of handling, renewed every 4 s
        clock.advance(4)
        assert await first.renew() == 1
        await second._claim_and_start()
        await asyncio.sleep(0)
        assert runs["outbox:{store:1}:chat:a"] == 1, "not taken while its handler runs and renews"
    # The first worker dies: nothing renews its lease any more.
    clock.advance(4.9)
    await second._claim_and_start()
    await asyncio.sleep(0)
    assert runs["outbox:{store:1}:chat:a"] == 1
    clock.advance(0.2)
    await second._claim_and_start()
    await asyncio.sleep(0)
    assert runs["outbox:{store:1}:chat:a"] == 2, "taken over once the lease ran out"
    assert await first.renew() == 0, "the dead worker's lease is no longer its own"
    release.set()
    await asyncio.gather(*first._running, *second._running)
    await second._flush_acks()
    await first._flush_acks()
    assert await store.leased() == 0 and await store.pending() == 0, "acknowledged by the run that holds it"


async def test_a_timer_started_now_runs_here_without_waking_every_process(redis_url: str) -> None:
    """start_now leases the timer to this process's serving worker and runs it at once: no wake-up
    is published (every process would claim on it), and the other process's worker never runs it.
    Where no worker serves, it is scheduled for now, and any worker runs it."""
    client, other = Redis.from_url(redis_url, decode_responses=True), Redis.from_url(redis_url, decode_responses=True)
    await client.flushall()
    here: list[Timer] = []
    there: list[Timer] = []
    worker = TimerWorker(TimerStore(client), {"w": recorder(here)}, max_idle_seconds=30)
    elsewhere = TimerWorker(TimerStore(other), {"w": recorder(there)}, max_idle_seconds=30)
    tasks = [asyncio.create_task(worker.run()), asyncio.create_task(elsewhere.run())]
    await until(
        lambda: worker.store.local is worker and elsewhere.store.local is elsewhere, "both workers serving", within=3.0
    )
    await client.config_resetstat()

    await worker.store.start_now("w:{store:1}:now", handed="in hand")
    await until(lambda: len(here) == 1, "the timer ran here", within=3.0)
    assert here[0].handed == "in hand", "what the step handed reaches the run it started"
    await until(lambda: _none_leased(worker.store), "nothing leased", within=3.0)
    assert "cmdstat_publish" not in await client.info("commandstats")

    await TimerStore(client).start_now("w:{store:1}:no-worker-here", handed="lost")  # no serving worker here
    await until(lambda: len(here) + len(there) == 2, "both timers ran", within=3.0)
    for w in (worker, elsewhere):
        await w.stop()
    await asyncio.gather(*tasks)
    assert "cmdstat_publish" in await client.info("commandstats"), "scheduled for now: the workers are woken"
    assert [t.key for t in here if t.key.endswith("now")] == ["w:{store:1}:now"]
    assert "w:{store:1}:now" not in [t.key for t in there]
    assert sorted(t.key for t in here + there) == ["w:{store:1}:no-worker-here", "w:{store:1}:now"]
    assert [t.handed for t in here + there if t.key.endswith("here")] == [None], "claimed: nothing in hand"
    assert worker.store.local is None, "a stopped worker takes nothing"
    await client.aclose()
    await other.aclose()


async def _none_leased(store: TimerStore) -> bool:
    return await store.leased() == 0 and await store.pending() == 0


async def test_a_timer_started_now_by_a_process_that_dies_runs_elsewhere_after_its_lease(
    store: TimerStore, clock: ManualClock
) -> None:
    started = asyncio.Event()
    dying = TimerWorker(store, {"w": hanging(started)}, lease_seconds=5, max_idle_seconds=30)
    serving = asyncio.create_task(dying.run())
    await until(lambda: store.local is dying, "the dying worker serving", within=3.0)
    await store.start_now("w:{store:1}:taken", handed="in hand")
    await started.wait()
    serving.cancel()  # the process is gone: no ack, no release
    for task in list(dying._running):
        task.cancel()
    await asyncio.gather(serving, *dying._running, return_exceptions=True)

    fired: list[Timer] = []
    survivor = TimerWorker(store, {"w": recorder(fired)})
    clock.advance(4.9)
    assert await survivor.drain() == 0, "taken over while its lease held"
    clock.advance(0.1)
    assert await survivor.drain() == 1
    assert [t.key for t in fired] == ["w:{store:1}:taken"] and survivor.stats.redelivered == 1
    assert fired[0].handed is None, "a redelivery reads what it needs from Redis"
    assert await store.leased() == 0 and await store.pending() == 0


async def test_a_step_sets_and_stops_several_timers_in_one_call(store: TimerStore, clock: ManualClock) -> None:
    """``change``: a reply stops its window, sets its archive copy and reads its chat together;
    scheduling with keep_earlier leaves an earlier time alone; and a Redis that forgot its scripts
    (a restart) still takes every change, and the read comes after them."""
    fired: list[Timer] = []
    worker = TimerWorker(store, {"window": recorder(fired), "archive": recorder(fired)})
    await store.schedule("window:{store:1}:c1", T0 + 60)
    await store.schedule("archive:{store:1}:chat:c2", T0 + 0.5)
    await store.cancel("window:{store:1}:none")  # both scripts are known to Redis now
    await store.redis.hset("{store:1}:chat:c1", mapping={"status": "open", "window_start": ""})
    await store.redis.config_resetstat()
    chat = await store.change(
        [("archive:{store:1}:chat:c1", T0 + 1, True), ("archive:{store:1}:chat:c2", T0 + 1, True)],
        cancels=["window:{store:1}:c1"],
        read_after="{store:1}:chat:c1",
    )
    assert int((await store.redis.info("stats"))["total_reads_processed"]) <= 2, "one call (and INFO itself)"
    assert chat == {"status": "open", "window_start": ""}
    assert await store.due_at("window:{store:1}:c1") is None
    assert await store.due_at("archive:{store:1}:chat:c2") == T0 + 0.5, "an earlier copy is kept"
    await store.redis.script_flush()
    read = store.change([("window:{store:1}:c3", T0 + 2, False)], cancels=["archive:{store:1}:chat:c2"],
                        read_after="{store:1}:chat:c3")  # fmt: skip
    assert await read == {}
    clock.advance(2)
    assert await worker.drain() == 2
    assert sorted(t.key for t in fired) == ["archive:{store:1}:chat:c1", "window:{store:1}:c3"]


async def test_a_lane_runs_at_most_its_limit_while_its_backlog_waits_untouched_and_other_kinds_go_on(
    store: TimerStore, clock: ManualClock
) -> None:
    """Forty archive copies due, the lane's limit 4, its handler held up (a busy archive): four run,
    the other 36 stay due at their own time, neither claimed nor put back; a reply window due
    meanwhile runs at once; when the held runs end, the rest run, each once."""
    release, started, windows = asyncio.Event(), Counter[str](), list[Timer]()

    async def copy(timer: Timer) -> None:
        started[timer.key] += 1
        await release.wait()

    worker = TimerWorker(store, {"archive": copy, "window": recorder(windows)}, lanes={"archive": 4}, concurrency=10)
    copies = [keys.archive_timer("{store:1}", f"chat:c{i}") for i in range(40)]
    await store.change([(key, T0 - i, False) for i, key in enumerate(copies)])
    await store.redis.config_resetstat()
    running = asyncio.create_task(worker.run())
    await until(lambda: sum(started.values()) == 4, "four copies started")
    lane = await store.redis.zrange(keys.timers_due(0, "archive"), 0, -1, withscores=True)
    assert {str(row[0]): row[1] for row in lane} == {key: (T0 - i) * 1000 for i, key in enumerate(copies[:36])}
    assert set(started) == set(copies[36:]), "the earliest due first"
    await store.schedule("window:{store:1}:w1", T0)
    await until(lambda: len(windows) == 1, "the window ran")
    stats = await store.redis.info("commandstats")
    assert stats["cmdstat_evalsha"]["calls"] < 20, "no claiming and putting back in a loop"
    assert sum(started.values()) == 4
    release.set()
    await until(lambda: sum(started.values()) == 40, "every copy ran")
    await worker.stop()
    await running
    assert set(started.values()) == {1} and await store.pending() == 0 and await store.leased() == 0


async def test_a_lane_timer_left_in_the_main_set_by_an_earlier_version_still_runs_and_keeps_a_new_payload(
    store: TimerStore, clock: ManualClock
) -> None:
    """Before lanes every timer was due in the main set: one found there runs as any other. And a lane
    timer its handler scheduled again (a failed copy, with its count of failures) keeps its payload
    when the finished run is acknowledged."""
    fired: list[Timer] = []

    async def fail_once(timer: Timer) -> None:
        fired.append(timer)
        if timer.payload is None:
            await store.schedule(timer.key, T0 + 30, "1")

    worker = TimerWorker(store, {"archive": fail_once}, lanes={"archive": 2})
    await store.redis.zadd(keys.timers_due(0), {"archive:{store:1}:chat:old": int(T0 * 1000)})
    await store.schedule("archive:{store:1}:chat:new", T0)
    assert await worker.drain() == 2
    assert sorted(t.key for t in fired) == ["archive:{store:1}:chat:new", "archive:{store:1}:chat:old"]
    assert await store.due_at("archive:{store:1}:chat:new") == T0 + 30
    assert await store.redis.hget(keys.timers_payload(0), "archive:{store:1}:chat:new") == "1"
    clock.advance(30)
    assert await worker.drain() == 2 and [t.payload for t in fired[2:]] == ["1", "1"]
