"""arq deferred jobs — run by bench/timers.py in bench/.venv-arq, with arq's default worker settings
or a tuned poll delay (arq polls for due jobs every ``poll_delay`` seconds, 0.5 by default).

Usage: arq_timers.py REDIS_URL N SPREAD_S LEAD_S CAP_S OUT.json [POLL_DELAY_S] → writes {"lateness_ms": [...], ...}
"""

import asyncio
import contextlib
import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from arq import create_pool
from arq.connections import RedisSettings
from arq.worker import Worker

lateness: list[float] = []
all_fired = asyncio.Event()
expected = 0


async def fire(ctx):  # type: ignore[no-untyped-def]
    lateness.append(time.time() * 1000 - ctx["score"])
    if len(lateness) >= expected:
        all_fired.set()


async def main() -> str:
    url, n, spread, lead, cap = (
        sys.argv[1],
        int(sys.argv[2]),
        float(sys.argv[3]),
        float(sys.argv[4]),
        float(sys.argv[5]),
    )
    global expected
    expected = n
    settings = RedisSettings.from_dsn(url)
    pool = await create_pool(settings)
    await pool.flushdb()
    tuning = {"poll_delay": float(sys.argv[7])} if len(sys.argv) > 7 else {}
    # The worker runs while the jobs are enqueued, as in production (not only once all are in).
    worker = Worker(functions=[fire], redis_settings=settings, handle_signals=False, **tuning)
    task = asyncio.create_task(worker.async_run())
    t0 = time.time() + lead
    for i in range(n):
        due = t0 + spread * i / n
        await pool.enqueue_job("fire", _defer_until=datetime.fromtimestamp(due, tz=UTC))
    enqueued_at = time.time()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(all_fired.wait(), timeout=max(0.0, t0 + spread + cap - time.time()))
    last = time.time()
    await asyncio.sleep(0.5)  # let arq finish its bookkeeping of the last jobs
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    with contextlib.suppress(asyncio.CancelledError):
        await worker.close()
    await pool.aclose()
    return json.dumps(
        {
            "lateness_ms": lateness,
            "scheduled": n,
            "first_due": t0,
            "last_fire": last,
            "enqueue_done_before_first_due": enqueued_at < t0,
        }
    )


Path(sys.argv[6]).write_text(asyncio.run(main()))
