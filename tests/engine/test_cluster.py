"""Redis Cluster (PRODUCT C5): the flows on a real three-node cluster — every script within one
hash tag, events read per endpoint, wake-ups through cluster-wide pub/sub."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator

import pytest
import redis as sync_redis
from redis.asyncio import Redis

from bridge.app.redis_server import EmbeddedRedis, cluster_url, embedded_cluster
from bridge.app.service import OPENED_AT_START, PUBSUB_CONNECTIONS, open_connections, open_redis
from bridge.engine.clock import ManualClock
from bridge.engine.endpoint import Endpoint
from bridge.engine.events import IN_FLIGHT_SECONDS, DeadEvents, EventConsumer, StoredEvent
from bridge.engine.ingest import EventLog, IncomingRecord
from tests.conftest import Stack, start_stack
from tests.engine.test_ratelimit import (
    a_target_and_its_sender_are_reserved_together,
    marks_an_attempt_only_when_the_job_goes,
)

CHATS, TASKS, TAG = "C0CHATS1001", "C0TASKS1001", "{store:1001}"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[EmbeddedRedis]]:
    with embedded_cluster(tmp_path_factory.mktemp("cluster")) as nodes:
        yield nodes


@pytest.fixture
async def cluster_stack(cluster: list[EmbeddedRedis]) -> AsyncIterator[Stack]:
    stack = await start_stack(cluster_url(cluster), clock=ManualClock(), run_workers=False)
    await stack.redis.flushall()
    yield stack
    await stack.stop()


async def test_a_chat_and_a_task_order_on_a_cluster(cluster_stack: Stack) -> None:
    stack = cluster_stack
    cid = await stack.sandbox.open_chat("1001", {"type": "text", "text": "集群上能用吗？"})
    await stack.settle()
    root = stack.slack.channel(CHATS)[-1]
    assert "集群上能用吗？" in str(root.blocks)
    assignee = str(await stack.redis.hget(f"{{store:1001}}:chat:{cid}", "assignee"))
    user = {"main-1001": "U0MAIN1001", "agent-a": "U0AGENTA", "agent-b": "U0AGENTB"}[assignee]
    await stack.slack.user_message(user, CHATS, "能", thread_ts=root.ts)
    await stack.settle()
    sent = [m["content"] for m in stack.sandbox.conversations[cid].messages if m["from"] == "merchant"]
    assert sent == [{"type": "text", "text": "能"}]
    second = await stack.sandbox.open_chat("1001", {"type": "text", "text": "没人回"})
    await stack.settle()
    await stack.advance(120 + IN_FLIGHT_SECONDS)
    assert await stack.redis.hget(f"{{store:1001}}:chat:{second}", "status") == "closed", "the window timer fired"
    tid = await stack.sandbox.create_task_order("1001", "c-7001")
    await stack.settle()
    card = stack.slack.channel(TASKS)[-1]
    await stack.telegram.user_message(7001, 7001, "买家在等", reply_to=stack.telegram.by_bot(7001)[0].message_id)
    await stack.settle()
    assert stack.slack.thread(TASKS, card.ts)[-1].text.endswith("买家在等")
    assert [c["side"] for c in stack.sandbox.task_orders[tid].comments] == ["creator"]


async def test_a_guided_resolve_in_telegram_on_a_cluster(cluster_stack: Stack) -> None:
    stack, group, owner = cluster_stack, -1001002000001, 1002001
    tid = await stack.sandbox.create_task_order("1002", "c-7001")
    await stack.settle()
    card = next(m for m in stack.telegram.by_bot(group) if tid in m.text and m.reply_markup)
    await stack.telegram.tap(owner, group, card.message_id, f"rs:{tid}")
    await stack.settle()
    step1 = stack.telegram.by_bot(group)[-1]
    await stack.telegram.user_message(owner, group, "Reshipped by SF Express, SF1234567890", reply_to=step1.message_id)
    await stack.settle()
    step2 = stack.telegram.by_bot(group)[-1]
    await stack.telegram.tap(owner, group, step2.message_id, f"pd:{tid}")
    await stack.settle()
    await stack.telegram.tap(owner, group, stack.telegram.by_bot(group)[-1].message_id, f"py:{tid}")
    await stack.settle()
    solution = stack.sandbox.task_orders[tid].solution
    assert solution is not None and solution["solution"] == "Reshipped by SF Express, SF1234567890"


async def test_timers_fire_on_time_with_live_workers_on_a_cluster(cluster: list[EmbeddedRedis]) -> None:
    stack = await start_stack(cluster_url(cluster), run_workers=True)
    fired: list[float] = []

    async def record(timer: object) -> None:
        fired.append(time.time())

    stack.bridge.timer_handlers["probe"] = record
    try:
        due = time.time() + 0.5
        await stack.bridge.timers.schedule("probe:{store:1001}:one", due)
        deadline = time.monotonic() + 10
        while not fired:
            assert time.monotonic() < deadline, "the timer never fired"
            await asyncio.sleep(0.02)
        assert fired[0] >= due
        subscribers = 0
        for node in cluster:  # the worker listens for wake-ups on one node; a PUBLISH reaches all
            with sync_redis.Redis(port=node.port, decode_responses=True) as r:
                subscribers += r.pubsub_numsub("timers:wake")[0][1]
        assert subscribers == 1
        cid = await stack.sandbox.open_chat("1001", {"type": "text", "text": "实时"})
        while cid not in stack.sandbox.conversations or not stack.slack.channel(CHATS):
            assert time.monotonic() < deadline, "the live consumer never handled the push"
            await asyncio.sleep(0.02)
    finally:
        await stack.stop()


async def test_a_burst_larger_than_the_connection_pool_waits_for_connections_instead_of_failing(
    cluster: list[EmbeddedRedis],
) -> None:
    """redis-py's cluster client raises MaxConnectionsError when a node's connections are all in
    use; at 400 stores the consumer's read of every stream failed each round and nothing was handled.
    The bridge's client waits for a free connection, as its single-server pool does."""
    client = open_redis(cluster_url(cluster), max_connections=PUBSUB_CONNECTIONS + 4)
    try:
        streams = [f"{{store:{i}}}:burst" for i in range(200)]
        await asyncio.gather(*(client.xadd(s, {"n": "1"}) for s in streams))
        lengths = await asyncio.gather(*(client.xlen(s) for s in streams))
        async with client.pipeline() as pipe:
            for s in streams[:50]:
                pipe.xlen(s)
            piped = await pipe.execute()
        assert lengths == [1] * 200 and piped == [1] * 50
        for node in cluster:  # never more connections to a node than the client may open
            with sync_redis.Redis(port=node.port, decode_responses=True) as r:
                assert len(r.client_list()) <= PUBSUB_CONNECTIONS + 4 + 1
    finally:
        await client.aclose()
        for node in cluster:
            with sync_redis.Redis(port=node.port) as r:
                r.flushall()


async def test_a_consumer_on_a_cluster_finishes_its_backlog_before_reading_again(
    cluster: list[EmbeddedRedis],
) -> None:
    """On a cluster a read is a command per stream, so a consumer does not read between rounds
    (on one Redis it does, and a store that wrote meanwhile is in the next round): store D's chat,
    written while the first round runs, is read once the 45 read before it are begun."""
    client = open_redis(cluster_url(cluster))
    stores = [Endpoint("store", f"{1001 + i}") for i in range(4)]
    log = EventLog(client)
    handled: list[str] = []

    async def handle(event: StoredEvent) -> None:
        handled.append(event.msg_id)
        if event.msg_id == "1001-0":
            await log.store(stores[3], [IncomingRecord("im_platform_message", "d", "chat:d", "{}")])

    try:
        for store in stores[:3]:
            records = [IncomingRecord("im_platform_message", f"{store.id}-{i}", f"chat:{i}", "{}") for i in range(15)]
            await log.store(store, records)
        consumer = EventConsumer(client, lambda: stores, {"im_platform_message": handle})
        await consumer.drain()
        assert len(handled) == 46 and handled[-1] == "d"
        assert sorted(handled[:45]) == sorted(f"{s.id}-{i}" for s in stores[:3] for i in range(15))
    finally:
        await client.flushall()
        await client.aclose()


@pytest.fixture
async def cluster_client(cluster: list[EmbeddedRedis]) -> AsyncIterator[Redis]:
    """The bridge's own client of the cluster, every node emptied."""
    redis = open_redis(cluster_url(cluster))
    await redis.flushall()
    yield redis
    await redis.aclose()


async def test_a_job_marks_its_attempt_only_when_it_goes_on_a_cluster(cluster_client: Redis) -> None:
    """The mark lives in a slot of its own there, so it is a call of its own: the same outcome."""
    await marks_an_attempt_only_when_the_job_goes(cluster_client)


async def test_a_target_and_its_sender_are_reserved_together_on_a_cluster(cluster_client: Redis) -> None:
    """A chat's keys and the bot's share one hash tag, so the one script reserves both there too."""
    await a_target_and_its_sender_are_reserved_together(cluster_client)


async def test_a_cluster_client_opens_its_connections_to_every_primary_at_start(cluster: list[EmbeddedRedis]) -> None:
    redis = open_redis(cluster_url(cluster))  # a fresh client: none of its connections made yet
    nodes = [sync_redis.Redis(port=node.port) for node in cluster]
    try:
        before = [len(node.client_list()) for node in nodes]
        await open_connections(redis)
        opened = [len(node.client_list()) - b for node, b in zip(nodes, before, strict=True)]
        # One node also has the connection that asked the cluster for its slots.
        assert sorted(opened)[:2] == [OPENED_AT_START] * 2 and max(opened) <= OPENED_AT_START + 1, opened
    finally:
        await redis.aclose()
        for node in nodes:
            node.close()


async def test_dead_letters_and_dead_events_are_replayed_on_a_cluster(cluster_stack: Stack) -> None:
    """Both replays are one script each, within the endpoint's hash tag (a cluster refuses a script
    whose keys lie in different slots)."""
    stack = cluster_stack
    stack.slack.missing_channels.add(CHATS)
    cid = await stack.sandbox.open_chat("1001", {"type": "text", "text": "频道被归档了"})
    await stack.settle()
    assert [d["id"] for d in await stack.bridge.outbox.dead_letters(TAG)] == [f"slack:root:{cid}"]
    stack.slack.missing_channels.clear()
    assert await stack.bridge.outbox.retry_dead_letter(TAG, None) == 1
    await stack.settle()
    assert "频道被归档了" in str(stack.slack.channel(CHATS)[-1].blocks)

    handlers = stack.bridge.event_handlers
    fixed = handlers["im_platform_message"]

    async def broken(event: StoredEvent) -> None:
        raise ValueError("a bug in the handler")

    handlers["im_platform_message"] = broken
    await stack.sandbox.open_chat("1001", {"type": "text", "text": "处理失败了"})
    await stack.settle(horizon=40)
    dead = DeadEvents(stack.redis)
    assert len(await dead.entries.read(TAG)) == 1
    handlers["im_platform_message"] = fixed
    assert await dead.retry(TAG, None) == 1
    await stack.settle()
    assert "处理失败了" in str(stack.slack.channel(CHATS)[-1].blocks)
    assert await dead.entries.read(TAG) == [] and await stack.bridge.outbox.dead_letters(TAG) == []
