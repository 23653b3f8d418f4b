"""`make bench-archive`: the archive on both back ends, with 100,000 finished chats and 10,000
finished task orders spread over 30 days.

For each back end (a SQLite file; a PostgreSQL server started here on a free port):
- **seed**: the chats' and task orders' Redis state written as the flows write it (a chat hash with
  its first reply and close, its messages both ways; a task order hash with its log and comments),
  each with its ``archive`` timer due, and its ``forget`` timer at finish + the grace period;
- **archive**: the bridge's own timer worker runs the archive timers (snapshot from Redis, upsert
  with group commit), as a live bridge does; reported as objects/s and rows/s, with this process's
  CPU seconds;
- **floor**, the comparison, in the same run: the same rows inserted into an empty database of the
  same back end with one plain multi-row INSERT per table in one transaction, no Redis, no upsert;
- **stats**: the 30-day statistics of the store (the query and the percentiles), as ``/feige stats
  30d`` computes them;
- **export**: ``bridge export chats|tasks --format csv`` of everything, as a subprocess (process
  start included, reported apart);
- **Redis memory**: bytes per live chat and per live task order (MEMORY USAGE of their keys), and
  ``used_memory`` before seeding, with everything live, and after the grace period has passed and
  the forget timers ran.

Writes bench/results/archive.json with the commit and the machine's load.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson
from machine import at_end, machine  # bench/machine.py, beside this file
from redis.asyncio import Redis
from sqlalchemy import insert

from bridge.app.redis_server import EmbeddedRedis
from bridge.app.service import Bridge, open_redis
from bridge.archive.schema import metadata
from bridge.archive.store import Archive, migrate
from bridge.config import ConfigHolder
from bridge.engine import keys
from bridge.engine.clock import ManualClock
from bridge.flows.archiving import archive_soon
from bridge.flows.statistics import report
from bridge.sandbox.postgres_server import EmbeddedPostgres

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results" / "archive.json"
CONFIG = ROOT / "config" / "example.yaml"
STORE = "1001"
TAG = keys.store_tag(STORE)
AGENTS = ("main-1001", "agent-a", "agent-b")
DAY = 24 * 3600
NOW = 1_780_000_000.0  # the bench's injected "now"; every object finished within the 30 days before it


def chat_state(i: int, rng: random.Random) -> tuple[str, dict[Any, Any], dict[Any, Any], float]:
    cid = f"bench-chat-{i}"
    opened = NOW - rng.uniform(0, 30 * DAY) - 3600
    timed_out = rng.random() < 0.05
    agent = AGENTS[i % len(AGENTS)]
    state: dict[str, Any] = {
        "status": "closed",
        "assignee": agent,
        "started_at": opened,
        "destination": "slack:C0CHATS1001",
        "platform_agent": "平台客服 小王",
        "first_message_id": f"m-{i}",
        "window_start": "",
        "deadline": "",
        "first_reply_at": "",
        "loads": "",
        "closed_at": opened + 600,
        "finished_at": opened + 600,
        "close_reason": "reply_timeout" if timed_out else "platform_closed",
        "ticket": "",
    }
    first = {
        "at": opened,
        "direction": "platform",
        "author": "平台客服 小王",
        "author_id": "cs-1",
        "kind": "text",
        "text": f"您好，订单 69{i:011d} 的物流一直没有更新",
        "order_id": "",
    }
    messages = {f"m-{i}": orjson.dumps(first).decode()}
    if not timed_out:
        replied = opened + rng.lognormvariate(3.3, 0.6)
        state |= {
            "first_reply_at": replied,
            "first_reply_by": agent,
            "last_reply_at": replied,
            f"reply:{i}": replied,
            f"sent:{i}": "在的，马上为您查询",
        }
        reply = {
            "at": replied,
            "direction": "merchant",
            "author": agent,
            "author_id": agent,
            "kind": "text",
            "text": "在的，马上为您查询",
        }
        messages[f"reply:{i}"] = orjson.dumps(reply).decode()
    return cid, state, messages, opened + 600


def task_state(i: int, rng: random.Random) -> tuple[str, dict[Any, Any], list[str], dict[Any, Any], float]:
    tid = f"bench-task-{i}"
    created = NOW - rng.uniform(1 * DAY, 30 * DAY) - DAY
    deadline = created + DAY
    finished = created + rng.uniform(600, 1.2 * DAY)
    order = {
        "shop_id": STORE,
        "task_id": tid,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(created)),
        "issue_type": "物流问题 Logistics",
        "creator": {"id": "c-7001", "name": "达人 Xiao"},
        "order_id": f"69{i:011d}",
        "product": {"id": "p-1", "name": "保温杯 500ml"},
        "creator_suggestion": "请尽快补发",
        "consumer_description": "买家说一周了还没收到",
        "share_url": "https://example.invalid/s",
        "buyer_chat_url": "https://example.invalid/c",
    }
    status = "resolved" if finished <= deadline else "timed_out"
    state = {
        "status": status,
        "deadline": deadline,
        "created_at": int(created * 1000),
        "data": json.dumps(order),
        "creator": "c-7001",
        "finished_at": finished,
        "solution": "已补发，顺丰 SF123456789",
        "operator": "店长 Li",
        "operator_id": "main-1001",
        "comments:merchant": 1,
        "comments:creator": 1,
    }
    log = [
        orjson.dumps({"id": e, "at": at, "type": kind, "side": side, "operator": who, "operator_id": who_id}).decode()
        for e, at, kind, side, who, who_id in (
            ("created", created, "created", "creator", "达人 Xiao", "c-7001"),
            ("comment:a", created + 60, "comment_creator", "creator", "达人 Xiao", "c-7001"),
            ("comment:b", created + 300, "comment_merchant", "merchant", "店长 Li", "main-1001"),
            (f"finish:{status}", finished, status, "merchant", "店长 Li", "main-1001"),
        )
    ]
    comments = {
        "a": orjson.dumps(
            {
                "at": created + 60,
                "side": "creator",
                "author": "达人 Xiao",
                "author_id": "c-7001",
                "text": "买家着急，请尽快处理",
            }
        ).decode(),
        "b": orjson.dumps(
            {
                "at": created + 300,
                "side": "merchant",
                "author": "店长 Li",
                "author_id": "main-1001",
                "text": "已联系快递",
            }
        ).decode(),
    }
    return tid, state, log, comments, finished


async def seed(bridge: Bridge, chats: int, tasks: int) -> None:
    rng = random.Random(7)
    redis = bridge.redis
    for start in range(0, chats, 1000):
        pipe = redis.pipeline(transaction=False)
        finished_at = []
        for i in range(start, min(chats, start + 1000)):
            cid, state, messages, closed = chat_state(i, rng)
            pipe.hset(keys.chat(TAG, cid), mapping=state)
            pipe.hset(keys.chat_messages(TAG, cid), mapping=messages)
            finished_at.append((f"chat:{cid}", closed))
        await pipe.execute()
        await _timers(bridge, finished_at)
    for start in range(0, tasks, 1000):
        pipe = redis.pipeline(transaction=False)
        finished_at = []
        for i in range(start, min(tasks, start + 1000)):
            tid, state, log, comments, finished = task_state(i, rng)
            pipe.hset(keys.task(TAG, tid), mapping=state)
            pipe.rpush(keys.task_log(TAG, tid), *log)
            pipe.hset(keys.task_comments(TAG, tid), mapping=comments)
            pipe.zadd(keys.tasks_by_status(TAG, "all"), {tid: state["created_at"]})
            pipe.zadd(keys.tasks_by_status(TAG, state["status"]), {tid: state["created_at"]})
            finished_at.append((f"task:{tid}", finished))
        await pipe.execute()
        await _timers(bridge, finished_at)


async def _timers(bridge: Bridge, threads: list[tuple[str, float]]) -> None:
    """What the flows schedule for a finished object: its copy soon, its forgetting after the grace.
    The grace counts from now, as if each had just finished (their opening times, spread over 30 days,
    are what the statistics read): the archive pass measures copies, not forgetting."""
    await asyncio.gather(*(archive_soon(bridge.timers, NOW, TAG, thread) for thread, _ in threads))
    forget_at = NOW + keys.FINISHED_KEEP_SECONDS
    await asyncio.gather(*(bridge.timers.schedule(keys.forget_timer(TAG, thread), forget_at) for thread, _ in threads))


async def memory(redis: Redis) -> tuple[int, int]:
    """used_memory, and its dataset part (without Redis's own tables, buffers and script cache)."""
    info = await redis.info("memory")
    return int(info["used_memory"]), int(info["used_memory_dataset"])


async def bytes_per_object(redis: Redis, kind: str, count: int) -> float:
    sizes = []
    for i in range(min(200, count)):
        if kind == "chat":
            names = [keys.chat(TAG, f"bench-chat-{i}"), keys.chat_messages(TAG, f"bench-chat-{i}")]
        else:
            tid = f"bench-task-{i}"
            names = [keys.task(TAG, tid), keys.task_log(TAG, tid), keys.task_comments(TAG, tid)]
        sizes.append(sum([await redis.memory_usage(k) or 0 for k in names]))
    return round(sum(sizes) / len(sizes), 1)


async def floor_insert(url: str, snapshots: Sequence[Mapping[str, Sequence[Mapping[str, Any]]]]) -> float:
    """The same rows, one multi-row INSERT per table and chunk, one transaction, into empty tables."""
    await asyncio.to_thread(migrate, url)
    archive = Archive(url)
    by_table: dict[str, list[Mapping[str, Any]]] = {}
    for snapshot in snapshots:
        for name, rows in snapshot.items():
            by_table.setdefault(name, []).extend(rows)
    started = time.perf_counter()
    async with archive.engine.begin() as conn:
        for name, rows in by_table.items():
            for i in range(0, len(rows), 500):
                await conn.execute(insert(metadata.tables[name]), rows[i : i + 500])
    elapsed = time.perf_counter() - started
    await archive.close()
    return elapsed


def export_seconds(url: str, what: str, out: Path) -> float:
    env = dict(os.environ, ARCHIVE_URL=url)
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "bridge", "export", what, "--config", str(CONFIG), "--format", "csv", "--out", str(out)],
        env=env,
        check=True,
        capture_output=True,
    )
    return round(time.perf_counter() - started, 2)


async def one_back_end(
    name: str, url: str, floor_url: str, redis: EmbeddedRedis, chats: int, tasks: int, work: Path
) -> dict[str, Any]:
    client = open_redis(redis.url)
    await client.flushall()
    baseline, baseline_data = await memory(client)
    clock = ManualClock(NOW)
    archive = Archive(url)
    bridge = Bridge(ConfigHolder(CONFIG, environ={}), client, clock=clock, archive=archive)
    await asyncio.to_thread(migrate, url)
    bridge.worker.concurrency = bridge.holder.current.timers.concurrency
    started = time.perf_counter()
    await seed(bridge, chats, tasks)
    seeded = round(time.perf_counter() - started, 1)
    live, live_data = await memory(client)
    per_chat, per_task = await bytes_per_object(client, "chat", chats), await bytes_per_object(client, "task", tasks)
    clock.set(NOW + 2)  # every archive timer is due
    cpu, started = time.process_time(), time.perf_counter()
    copies = 0
    while ran := await bridge.worker.drain():  # COPIES_IN_FLIGHT at once; the others wait due, in their lane
        copies += ran
    archive_seconds, archive_cpu = time.perf_counter() - started, time.process_time() - cpu
    found_chats = len(await archive.chats(STORE, details=False))
    found_tasks = await archive.count_tasks(STORE)
    read = [(bridge.chats.snapshots, f"bench-chat-{i}") for i in range(chats)]
    read += [(bridge.tasks.snapshots, f"bench-task-{i}") for i in range(tasks)]
    snapshots = [s for s in [await kind.of(client, TAG, object_id) for kind, object_id in read] if s]
    rows = sum(len(r) for s in snapshots for r in s.values())
    floor = await floor_insert(floor_url, snapshots)
    store = bridge.holder.current.store(STORE)
    assert store is not None
    from datetime import UTC, datetime

    started = time.perf_counter()
    figures = await report(
        archive, store, datetime.fromtimestamp(NOW - 30 * DAY, UTC), datetime.fromtimestamp(NOW, UTC)
    )
    stats_seconds = time.perf_counter() - started
    chats_csv = export_seconds(url, "chats", work / f"{name}-chats.csv")
    tasks_csv = export_seconds(url, "tasks", work / f"{name}-tasks.csv")
    clock.set(NOW + keys.FINISHED_KEEP_SECONDS + 1)  # the grace period has passed for every object
    forgotten = await bridge.worker.drain()
    after, after_data = await memory(client)
    left = [k for k in await client.keys(f"{TAG}:*") if "bench-" in k]
    keys_left = await client.dbsize()
    await archive.close()
    await client.aclose()
    valid = found_chats == chats and found_tasks == tasks and copies >= chats + tasks
    return {
        "back_end": name,
        "valid": valid,
        "invalid_reason": "" if valid else f"archived {found_chats}/{chats} chats, {found_tasks}/{tasks} task orders",
        "seed_seconds": seeded,
        "archive": {
            "objects": chats + tasks,
            "rows": rows,
            "seconds": round(archive_seconds, 2),
            "objects_per_second": round((chats + tasks) / archive_seconds),
            "rows_per_second": round(rows / archive_seconds),
            "process_cpu_seconds": round(archive_cpu, 2),
            "cpu_ms_per_object": round(archive_cpu * 1000 / (chats + tasks), 3),
        },
        "floor_plain_insert": {"rows": rows, "seconds": round(floor, 2), "rows_per_second": round(rows / floor)},
        "stats_30_days": {
            "seconds": round(stats_seconds, 3),
            "chats": figures.store.chats,
            "first_reply_p50": figures.store.first_reply_p50,
            "first_reply_p90": figures.store.first_reply_p90,
        },
        "export_csv_seconds": {"chats": chats_csv, "tasks": tasks_csv, "includes_process_start": True},
        "redis": {
            "used_memory_before_seed": baseline,
            "used_memory_live": live,
            "used_memory_after_grace": after,
            "bytes_per_live_chat": per_chat,
            "bytes_per_live_task_order": per_task,
            "added_after_grace": after - baseline,
            "used_memory_dataset": {"before_seed": baseline_data, "live": live_data, "after_grace": after_data},
            "object_keys_left_after_grace": len(left),
            "keys_in_redis_after_grace": keys_left,
            "forget_timers_run": forgotten,
        },
    }


async def main_async(chats: int, tasks: int) -> dict[str, Any]:
    results: dict[str, Any] = {"machine": machine(), "chats": chats, "task_orders": tasks, "runs": []}
    with tempfile.TemporaryDirectory(prefix="bench-archive-") as tmp:
        work = Path(tmp)
        with EmbeddedRedis(work / "redis", appendonly=False) as redis, EmbeddedPostgres() as postgres:
            runs = [
                ("sqlite", f"sqlite:///{work / 'archive.sqlite3'}", f"sqlite:///{work / 'floor.sqlite3'}"),
                ("postgresql", postgres.new_database(), postgres.new_database()),
            ]
            for name, url, floor_url in runs:
                print(f"{name}: seeding {chats} chats and {tasks} task orders…", file=sys.stderr)
                results["runs"].append(await one_back_end(name, url, floor_url, redis, chats, tasks, work))
    results["machine"] |= at_end(results["machine"])
    return results


def table(results: dict[str, Any]) -> str:
    lines = [
        f"commit {results['machine']['commit'][:10]}, load {results['machine']['load_average_at_start']} → "
        f"{results['machine']['load_average_at_end']}; {results['chats']} chats, {results['task_orders']} task orders"
    ]
    for run in results["runs"]:
        if not run["valid"]:
            lines.append(f"{run['back_end']:<11} INVALID: {run['invalid_reason']}")
            continue
        a, f, r = run["archive"], run["floor_plain_insert"], run["redis"]
        lines.append(
            f"{run['back_end']:<11} archive {a['objects_per_second']:>6} objects/s {a['rows_per_second']:>7} rows/s "
            f"({a['cpu_ms_per_object']} ms CPU each) | floor {f['rows_per_second']:>7} rows/s | "
            f"30-day stats {run['stats_30_days']['seconds']} s | CSV chats {run['export_csv_seconds']['chats']} s, "
            f"tasks {run['export_csv_seconds']['tasks']} s"
        )
        lines.append(
            f"{'':<11} Redis: {r['bytes_per_live_chat']} B/live chat, {r['bytes_per_live_task_order']} B/live "
            f"task order; used_memory {r['used_memory_before_seed']} → {r['used_memory_live']} live → "
            f"{r['used_memory_after_grace']} after grace ({r['object_keys_left_after_grace']} keys left)"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--chats", type=int, default=100_000)
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--quick", action="store_true", help="5,000 chats and 500 task orders (a smoke run)")
    args = parser.parse_args()
    chats, tasks = (5_000, 500) if args.quick else (args.chats, args.tasks)
    results = asyncio.run(main_async(chats, tasks))
    print(table(results))
    if not args.quick:
        RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    return 0 if all(run["valid"] for run in results["runs"]) else 1


if __name__ == "__main__":
    sys.exit(main())
