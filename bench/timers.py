"""`make bench-timers`: fire lateness and throughput of the bridge's timer engine beside arq and BullMQ.

Every system gets the same fresh redis-server (no persistence, loopback) and the same load: N timers
due evenly over a spread, scheduled while its workers already run (as in production), all before the
first is due: a row whose scheduling ran past that moment measured something else and is marked
INVALID (and the run exits 1). Lateness = handler start − due time. Ours runs with the product's
default concurrency; arq with its defaults and with a tuned poll delay (0.05 s), as the anchors did.
Then Redis memory per pending timer at 1,000,000 pending, in the layout the bridge really writes.

Writes bench/results/timers.json and prints a table. Options: --quick (smaller loads, for a smoke run),
--skip-peers (only ours).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from machine import at_end, machine  # bench/machine.py, beside this file
from redis.asyncio import Redis

from bridge.app.redis_server import EmbeddedRedis
from bridge.config import TimerSettings
from bridge.engine.timers import Timer, TimerStore, TimerWorker

HERE = Path(__file__).resolve().parent

RESULTS = HERE / "results" / "timers.json"


def summarize(
    lateness_ms: list[float],
    scheduled: int,
    first_due: float,
    last_fire: float,
    spread: float,
    gave_up_at: float | None = None,
) -> dict[str, Any]:
    """Percentiles over every scheduled timer. Timers that had not fired when the run gave up count
    with their lateness at that moment, a lower bound, and the result says so."""
    fired = len(lateness_ms)
    ordered = list(lateness_ms)
    if fired < scheduled and gave_up_at is not None:
        # Which ones are missing is not known; the latest-due ones are the kindest assumption.
        for i in range(fired, scheduled):
            due = first_due + spread * i / scheduled
            ordered.append((gave_up_at - due) * 1000)
    ordered.sort()
    if not ordered:
        return {"fired": 0, "scheduled": scheduled}
    span = max(last_fire - first_due, 1e-9)
    result: dict[str, Any] = {
        "p50_ms": round(statistics.median(ordered), 2),
        "p99_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))], 2),
        "max_ms": round(ordered[-1], 2),
        "per_s": round(fired / span, 1),
        "fired": fired,
        "scheduled": scheduled,
        "early": sum(1 for x in lateness_ms if x < -0.5),
    }
    if fired < scheduled:
        result["lower_bound"] = True
    return result


async def run_ours(url: str, n: int, spread: float, lead: float, cap: float) -> dict[str, Any]:
    redis = Redis.from_url(url, decode_responses=True)
    await redis.flushdb()
    store = TimerStore(redis)
    lateness: list[float] = []
    done = asyncio.Event()
    last_fire = 0.0

    async def fire(timer: Timer) -> None:
        nonlocal last_fire
        last_fire = time.time()
        lateness.append((last_fire - (timer.due_at or last_fire)) * 1000)
        if len(lateness) >= n:
            done.set()

    worker = TimerWorker(store, {"bench": fire}, concurrency=TimerSettings().concurrency, batch=500)
    task = asyncio.create_task(worker.run())  # running while the timers are scheduled
    t0 = time.time() + lead
    batch = 2000
    for start in range(0, n, batch):
        async with redis.pipeline(transaction=False) as pipe:
            sched = TimerStore(pipe)
            for i in range(start, min(n, start + batch)):
                await sched.schedule(f"bench:{{store:{i % 50}}}:{i}", t0 + spread * i / n)
            await pipe.execute()
    ready_before_due = time.time() < t0
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(done.wait(), timeout=max(0.0, t0 + spread + cap - time.time()))
    await worker.stop()
    await task
    await redis.aclose()
    result = summarize(lateness, n, t0, last_fire or time.time(), spread, gave_up_at=time.time())
    result["scheduled_before_first_due"] = ready_before_due
    return result


def run_peer(
    cmd: list[str], url: str, n: int, spread: float, lead: float, cap: float, extra: list[str]
) -> dict[str, Any]:
    out = Path(tempfile.mkstemp(suffix=".json")[1])
    try:
        proc = subprocess.run(
            [*cmd, url, str(n), str(spread), str(lead), str(cap), str(out), *extra],
            capture_output=True,
            text=True,
            timeout=lead + spread + cap + 120,
            cwd=HERE,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return {"error": str(exc)}
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1:] or "failed"}
    data = json.loads(out.read_text())
    out.unlink()
    result = summarize(
        data["lateness_ms"], data["scheduled"], data["first_due"], data["last_fire"], spread, data["last_fire"]
    )
    result["scheduled_before_first_due"] = data["enqueue_done_before_first_due"]
    if result["fired"] < n:
        result["note"] = (
            f"only {result['fired']} of {n} fired within {cap:.0f} s after the last was due; "
            "percentiles count the rest at their lateness when the run gave up (a lower bound)"
        )
    return result


async def bytes_per_pending_timer(url: str, count: int) -> float:
    redis = Redis.from_url(url, decode_responses=True)
    await redis.flushdb()
    info = await redis.info("memory")
    before = int(info["used_memory"])
    store_due = time.time() + 86_400
    batch = 10_000
    for start in range(0, count, batch):
        async with redis.pipeline(transaction=False) as pipe:
            sched = TimerStore(pipe)
            for i in range(start, min(count, start + batch)):
                await sched.schedule(f"window:{{store:{1000 + i % 500}}}:conv-{i:09d}", store_due + i)
            await pipe.execute()
    after = int((await redis.info("memory"))["used_memory"])
    pending = await TimerStore(redis).pending()
    await redis.flushdb()
    await redis.aclose()
    assert pending == count, f"{pending} pending, expected {count}"
    return round((after - before) / count, 1)


def table(results: dict[str, Any]) -> str:
    rows = ["| load | system | p50 ms | p99 ms | max ms | per s | fired |", "|---|---|---|---|---|---|---|"]
    for load, systems in results["loads"].items():
        for name, r in systems.items():
            if "error" in r:
                rows.append(f"| {load} | {name} | error: {r['error']} | | | | |")
                continue
            if not r.get("scheduled_before_first_due", False):
                rows.append(f"| {load} | {name} | INVALID: scheduling ran past the first due time | | | | |")
                continue
            rows.append(
                f"| {load} | {name} | {r.get('p50_ms', '-')} | {r.get('p99_ms', '-')} | {r.get('max_ms', '-')} "
                f"| {r.get('per_s', '-')} | {r['fired']}/{r['scheduled']} |"
            )
    rows.append(f"\nRedis memory per pending timer (1,000,000 pending): {results['bytes_per_pending_timer']} B")
    return "\n".join(rows)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="small loads: a smoke run, not a measurement")
    parser.add_argument("--skip-peers", action="store_true")
    args = parser.parse_args()

    loads = [(20_000, 10.0), (100_000, 20.0)] if not args.quick else [(2_000, 2.0)]
    pending_count = 1_000_000 if not args.quick else 50_000
    arq_python = HERE / ".venv-arq" / "bin" / "python"
    peers = {
        # (command, extra arguments, jobs its enqueue API takes a second beside a running worker)
        "arq": ([str(arq_python), str(HERE / "arq_timers.py")], [], 1_000),
        "arq (poll_delay 0.05)": ([str(arq_python), str(HERE / "arq_timers.py")], ["0.05"], 1_000),
        "bullmq": (["node", str(HERE / "bullmq_timers.mjs")], [], 4_000),
    }
    results: dict[str, Any] = {"machine": machine() | {"python": sys.version.split()[0]}, "loads": {}}
    with tempfile.TemporaryDirectory() as tmp, EmbeddedRedis(Path(tmp), appendonly=False) as server:
        for n, spread in loads:
            label = f"{n} over {spread:.0f}s ({n / spread:.0f}/s)"
            lead = 2.0 + n / 20_000
            cap = 120.0
            print(f"== {label}", flush=True)
            systems: dict[str, Any] = {"ours": await run_ours(server.url, n, spread, lead, cap)}
            print("   ours", systems["ours"], flush=True)
            if not args.skip_peers:
                for name, (cmd, extra, enqueue_rate) in peers.items():
                    peer_lead = lead + n / enqueue_rate  # their enqueue APIs take one round trip a job
                    systems[name] = run_peer(cmd, server.url, n, spread, peer_lead, cap, extra)
                    print(f"   {name}", systems[name], flush=True)
            results["loads"][label] = systems
        results["bytes_per_pending_timer"] = await bytes_per_pending_timer(server.url, pending_count)
        results["pending_timers_measured"] = pending_count

    results["machine"] |= at_end(results["machine"])
    first = next(iter(results["loads"].values()))
    for name in ("ours", "arq", "arq (poll_delay 0.05)", "bullmq"):
        if name in first:
            results[name] = {k: first[name].get(k) for k in ("p50_ms", "p99_ms", "max_ms", "per_s")}
    results["targets"] = {"ours_p99_ms_at_2000_per_s": 10, "bytes_per_pending_timer": 200}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    if not args.quick:
        RESULTS.write_text(json.dumps(results, indent=2) + "\n")
        print(f"wrote {RESULTS}")
    print(table(results))
    invalid = [f"{load}: {name}" for load, systems in results["loads"].items() for name, r in systems.items()
               if "error" not in r and not r.get("scheduled_before_first_due", False)]  # fmt: skip
    if invalid:
        print(f"INVALID rows (scheduling ran past the first due time): {', '.join(invalid)}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    asyncio.run(main())
