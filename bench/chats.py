"""`make bench-chats`: 200 concurrent platform chats across 20 Slack channels, end to end.

A `bridge serve` process sits between the platform sandbox and the Slack emulator (both in this
process, Slack's 1 message/s per channel enforced with 429s). Each chat: platform CS writes (a
signed push) → the bridge opens a Slack thread and mirrors the message → an agent answers in the
thread → the reply reaches the platform. Measured per chat:
- platform→Slack: push sent → the platform's message visible in its Slack thread;
- Slack→platform: the agent's message sent to the bridge → the reply received by the platform;
- and how many 429s the emulator answered.

Two loads: **paced** — chats opened so no channel is asked for more than one message a second (the
rate limit is not the bottleneck; this is the latency the target is about), and **burst** — all 200
at once (the channel limit is the bottleneck: every post waits its turn; shows that nothing is lost
and no 429 is provoked). Writes bench/results/chats.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml
from machine import machine  # type: ignore[import-not-found]  # bench/machine.py, beside this file
from redis.asyncio import Redis

from bridge.app.redis_server import EmbeddedRedis, free_port
from bridge.config import load_config
from bridge.sandbox.platform import PlatformSandbox
from bridge.sandbox.slack import SlackEmulator

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results" / "chats.json"
CHANNELS = 20
SIGNING, TOKEN = "bench-signing-secret", "xoxb-bench"


def slack_store(i: int, first_id: int, label: str, chats: str, agent: str) -> dict[str, Any]:
    """The i-th benchmark store: a sandbox store whose chats go to Slack channel ``<chats><i>`` and
    whose one agent is Slack user ``<agent><i>``."""
    sid = f"{first_id + i}"
    return {
        "id": sid, "name": f"{label} store {sid}", "sandbox": True,
        "platform": {"app_key": f"{label}-key-{sid}", "app_secrets": [f"{label}-secret-{sid}"],
                     "api_url": "${PLATFORM_API_URL}", "api_token": f"{label}-token-{sid}"},
        "destinations": {"platform_chats": f"slack:{chats}{i:03d}", "task_orders": f"slack:CT{i:03d}"},
        "main_account": f"m{sid}",
        "agents": [{"id": f"m{sid}", "name": f"Agent {sid}", "slack_user": f"{agent}{i:03d}", "im_permission": True}],
    }  # fmt: skip


def bench_config(path: Path, port: int) -> None:
    stores = [slack_store(i, 2001, "bench", "CB", "UB") for i in range(CHANNELS)]
    config = {
        "server": {"host": "127.0.0.1", "port": port},
        "slack": {"bot_token": TOKEN, "signing_secret": SIGNING, "api_base_url": "${SLACK_API_URL}"},
        "stores": stores,
    }
    path.write_text(yaml.safe_dump(config, allow_unicode=True))


def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    ordered = sorted(values)
    return {
        "p50_ms": round(statistics.median(ordered) * 1000, 1),
        "p99_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000, 1),
        "max_ms": round(ordered[-1] * 1000, 1),
        "n": len(ordered),
    }


SETTLE_SECONDS = 2.0
IDLE_SECONDS = 5.0


class CpuMeter:
    """CPU seconds used so far by the bridge process (from /proc) and by redis-server (INFO cpu)."""

    def __init__(self, bridge_pid: int, redis_url: str) -> None:
        self.bridge_pid = bridge_pid
        self.redis = Redis.from_url(redis_url, decode_responses=True)

    async def read(self) -> dict[str, float]:
        info = await self.redis.info("cpu")
        redis = float(info["used_cpu_user"]) + float(info["used_cpu_sys"])
        return {"bridge": process_cpu(self.bridge_pid), "redis": redis, "bench_process": time.process_time()}

    async def commands(self) -> dict[str, int]:
        """Commands Redis has run so far, by name (those a Lua script runs included)."""
        stats = await self.redis.info("commandstats")
        return {name.removeprefix("cmdstat_"): int(row["calls"]) for name, row in stats.items()}


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) a process has used, from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def run_load(
    sandbox: PlatformSandbox,
    slack: SlackEmulator,
    chats_per_channel: int,
    spacing: float,
    label: str,
    cpu: CpuMeter,
) -> dict[str, Any]:
    to_slack: list[float] = []
    to_platform: list[float] = []
    missing: list[str] = []
    landed: dict[str, asyncio.Future[tuple[float, str]]] = {}
    replied: dict[str, asyncio.Future[float]] = {}
    loop = asyncio.get_running_loop()

    def on_slack(message: Any) -> None:
        start = message.text.rfind("[")
        waiting = landed.get(message.text[start : message.text.find("]", start) + 1]) if start >= 0 else None
        if waiting is not None and not waiting.done():
            waiting.set_result((message.posted_at, message.thread_ts or message.ts))

    def on_platform(record: Any) -> None:
        cid = record.path.split("/")[3] if record.path.startswith("/im/conversations/") else ""
        waiting = replied.get(cid)
        if waiting is not None and record.status == 200 and not waiting.done():
            waiting.set_result(record.at)

    slack.listeners.append(on_slack)
    sandbox.listeners.append(on_platform)

    async def one_chat(channel_index: int, n: int) -> None:
        store_id, channel = f"{2001 + channel_index}", f"CB{channel_index:03d}"
        await asyncio.sleep(n * spacing + channel_index * (spacing / CHANNELS))
        marker = f"[{label}-{channel_index}-{n}]"
        landed[marker] = loop.create_future()
        pushed = time.time()
        cid = await sandbox.open_chat(store_id, {"type": "text", "text": f"您好 {marker}"})
        replied[cid] = loop.create_future()
        try:
            posted_at, root_ts = await asyncio.wait_for(landed[marker], 120)
        except TimeoutError:
            missing.append(marker)
            return
        to_slack.append(posted_at - pushed)
        sent = time.time()
        await slack.user_message(f"UB{channel_index:03d}", channel, f"回复 {marker}", thread_ts=root_ts)
        try:
            to_platform.append(await asyncio.wait_for(replied[cid], 60) - sent)
        except TimeoutError:
            missing.append(marker + " reply")

    started = time.time()
    cpu_before = await cpu.read()
    commands_before = await cpu.commands()
    await asyncio.gather(*(one_chat(c, n) for c in range(CHANNELS) for n in range(chats_per_channel)))
    await asyncio.sleep(SETTLE_SECONDS)  # the follow-ups (✅ reactions, header updates) are part of a chat
    used = {k: v - cpu_before[k] for k, v in (await cpu.read()).items()}
    commands = {k: v - commands_before.get(k, 0) for k, v in (await cpu.commands()).items()}
    slack.listeners.remove(on_slack)
    sandbox.listeners.remove(on_platform)
    chats = CHANNELS * chats_per_channel
    return {
        "chats": chats,
        "seconds": round(time.time() - started, 1),
        "cpu_ms_per_chat": {name: round(seconds * 1000 / chats, 2) for name, seconds in used.items()},
        "cpu_seconds": {name: round(seconds, 3) for name, seconds in used.items()},
        "redis_commands_per_chat": round(sum(commands.values()) / (CHANNELS * chats_per_channel), 1),
        "redis_commands_by_name_per_chat": {
            name: round(calls / (CHANNELS * chats_per_channel), 1)
            for name, calls in sorted(commands.items(), key=lambda item: -item[1])
            if calls
        },
        "cpu_note": "process CPU over the phase (and SETTLE_SECONDS after), per chat round trip: the bridge "
        "process and redis-server; the load generator and the emulators share this bench process",
        "platform_to_slack": percentiles(to_slack),
        "slack_to_platform": percentiles(to_platform),
        "missing": missing,
    }


async def main_async(quick: bool) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        port = free_port()
        config_path = tmp / "bench.yaml"
        bench_config(config_path, port)
        slack = SlackEmulator(SIGNING, TOKEN, bridge_url=f"http://127.0.0.1:{port}")
        await slack.start()
        env = dict(os.environ, PLATFORM_API_URL="http://127.0.0.1:1", SLACK_API_URL=slack.api_url)
        sandbox = PlatformSandbox(load_config(config_path, environ=env).config, f"http://127.0.0.1:{port}")
        sandbox_url = await sandbox.start()
        env["PLATFORM_API_URL"] = sandbox_url
        with EmbeddedRedis(tmp / "redis", appendonly=True) as redis:
            env["REDIS_URL"] = redis.url
            env["ARCHIVE_URL"] = f"sqlite:///{tmp / 'archive.sqlite3'}"
            bridge = start_bridge(config_path, env, tmp / "bridge.log")
            try:
                await wait_up(port)
                per_channel = 2 if quick else 10
                cpu = CpuMeter(bridge.pid, redis.url)
                idle_before = await cpu.read()
                await asyncio.sleep(IDLE_SECONDS)  # what the bridge costs doing nothing: timers, watchers
                idle = {k: (v - idle_before[k]) / IDLE_SECONDS for k, v in (await cpu.read()).items()}
                results: dict[str, Any] = {
                    "machine": machine(),
                    "idle_cpu_ms_per_s": {k: round(v * 1000, 2) for k, v in idle.items()},
                    "paced": await run_load(sandbox, slack, per_channel, 3.5, "paced", cpu),
                }
                paced_429 = slack.rate_limited
                results["burst"] = await run_load(sandbox, slack, per_channel, 0.0, "burst", cpu)
                results["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
                for phase in ("paced", "burst"):  # less what the bridge spends idle over the same time
                    row = results[phase]
                    row["cpu_ms_per_chat_less_idle"] = {
                        name: round((row["cpu_seconds"][name] - idle[name] * (row["seconds"] + SETTLE_SECONDS))
                                    * 1000 / row["chats"], 2) for name in ("bridge", "redis")}  # fmt: skip
                results["paced"]["slack_429s"] = paced_429
                results["burst"]["slack_429s"] = slack.rate_limited - paced_429
            finally:
                bridge.terminate()
                bridge.wait(20)
                await sandbox.stop()
                await slack.stop()
    results["targets"] = {"p99_ms_when_not_rate_limited": 100, "slack_429s": 0}
    return results


def start_bridge(config_path: Path, env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    log = log_path.open("wb")
    return subprocess.Popen(
        [sys.executable, "-m", "bridge", "serve", "--config", str(config_path), "--demo"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip


async def wait_up(port: int) -> None:
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        except OSError:
            await asyncio.sleep(0.1)
    raise RuntimeError("bridge did not start")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="2 chats per channel; results not written")
    args = parser.parse_args()
    results = asyncio.run(main_async(args.quick))
    print(json.dumps(results, indent=2, ensure_ascii=False))
    if not args.quick:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")
        print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
