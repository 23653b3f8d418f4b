"""arq deferred jobs, default worker settings — run by bench/timers.py in bench/.venv-arq.

Usage: arq_timers.py REDIS_URL N SPREAD_S LEAD_S CAP_S  → prints JSON {"lateness_ms": [...], ...}
"""

import asyncio
import json
import sys
import time
from datetime import datetime, timezone

from arq import create_pool
from arq.connections import RedisSettings
from arq.worker import Worker

lateness: list[float] = []


async def fire(ctx):  # type: ignore[no-untyped-def]
    lateness.append(time.time() * 1000 - ctx["score"])


async def main() -> None:
    url, n, spread, lead, cap = (
        sys.argv[1],
        int(sys.argv[2]),
        float(sys.argv[3]),
        float(sys.argv[4]),
        float(sys.argv[5]),
    )
    settings = RedisSettings.from_dsn(url)
    pool = await create_pool(settings)
    await pool.flushdb()
    t0 = time.time() + lead
    for i in range(n):
        due = t0 + spread * i / n
        await pool.enqueue_job("fire", _defer_until=datetime.fromtimestamp(due, tz=timezone.utc))
    enqueued_at = time.time()
    worker = Worker(functions=[fire], redis_settings=settings, handle_signals=False)  # defaults otherwise
    task = asyncio.create_task(worker.async_run())
    deadline = t0 + spread + cap
    while len(lateness) < n and time.time() < deadline:
        await asyncio.sleep(0.2)
    last = time.time()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await worker.close()
    await pool.aclose()
    print(
        json.dumps(
            {
                "lateness_ms": lateness,
                "scheduled": n,
                "first_due": t0,
                "last_fire": last,
                "enqueue_done_before_first_due": enqueued_at < t0,
            }
        )
    )


asyncio.run(main())
