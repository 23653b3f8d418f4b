"""`make bench-chats`: platform chats end to end through `bridge serve`, measured from outside.

The bridge runs as its own process(es) between the platform sandbox and the Slack emulator, each of
those in a process of its own with its side of the load (bench/world.py; Slack's 1 message/s per
channel enforced with 429s); this process only coordinates. Each chat: platform CS writes (a
signed push) → the bridge opens a Slack thread with the message → an agent answers in the thread →
the reply reaches the platform. Measured per chat:
- platform→Slack: push sent → the platform's message visible in its Slack thread;
- Slack→platform: the agent's message sent to the bridge → the reply received by the platform;
- CPU per chat round trip of the bridge process(es) and the world's (/proc) and of redis-server
  (INFO cpu), less what each spends idle over the same time (measured first), and Redis commands
  per chat;
- how many 429s the emulator answered;
- after each part, each bridge process's resident memory and what Redis holds (a leak shows as
  growth from run to run on one stack).

Six parts:
- **paced** — three runs of 2,000 chats each (40 channels, a new chat in each channel every 3.5 s, so
  the rate limit is never the bottleneck): the latency the target is about, with the spread between
  runs;
- **burst** — three times, 200 chats into 20 channels at once, pushed in turn across the channels
  (every channel's first chat, then every one's second…): the first post of each channel (from its
  push), the share of the allowed rate each channel got (its posts' ideal span at 1/s over their
  actual span from the push), and 429s, with the spread of the three. Before each burst (here and
  in the scaling part) the platform's process opens its connections to the bridge, as a platform
  pushing all day holds them open;
- **floor** — after each paced run, the same paced chats through bench/floor_relay.py instead of the
  bridge: the same calls to the world in plain aiohttp, then with as many Redis round trips per
  chat as the bridge just made; then both again with Slack through its SDKs (slack-bolt in,
  slack_sdk out), as the bridge must talk to it. Each paced run is compared with its own turn's
  floor, the machine's speed moving within minutes;
- **sustained** — 2,000 chats at 100 a second (200 channels, a new chat in each every 2 s; the
  rate limit still never the bottleneck): CPU per chat and latency of a busy process, where work
  done close together shares wake-ups;
- **scaling** — 400 chats into 400 channels at once (one each: the rate limit is not the
  bottleneck) with 1, 2 and 4 processes (`all`; `web` + `worker`; `web` + 3 `worker`) on one
  Redis, then 1 and 4 processes on a three-node Redis Cluster: chats completed per second,
  latency, and CPU per chat of each process and of Redis (a cluster's nodes added up); two turns,
  the second in reverse order;
- **stores** — 200 paced chats in 20 stores, with 40 and with 1,000 stores configured: what each
  configured store costs (idle CPU per second, CPU per chat); two turns, the second in reverse order.

Rows compared with each other run in turns, every other turn in reverse order (A B, B A), so that
the machine's drift does not fall on one of them.

Writes bench/results/chats.json; ``--quick`` runs a small version and writes nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml
from machine import at_end, checkout_beside, machine, process_cpu, redis_cpu, resident_mb  # bench/machine.py
from machine import wait_up as machine_wait_up
from redis.asyncio import Redis
from world import PlatformSide, SlackSide, WorldProcess  # bench/world.py

from bridge.app.redis_server import EmbeddedRedis, cluster_url, embedded_cluster, free_port

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results" / "chats.json"
SIGNING, TOKEN = "bench-signing-secret", "xoxb-bench"

PACED: dict[str, Any] = {"channels": 40, "per_channel": 50, "spacing": 3.5, "runs": 3}
BURST: dict[str, Any] = {"channels": 20, "per_channel": 10, "runs": 3}
WEB_AND_3_WORKERS = ["web", "worker", "worker", "worker"]
SCALING: dict[str, Any] = {"channels": 400, "per_channel": 1,
           "runs": {"1_processes": (["all"], False), "2_processes": (["web", "worker"], False),
                    "4_processes": (WEB_AND_3_WORKERS, False), "1_processes_cluster": (["all"], True),
                    "4_processes_cluster": (WEB_AND_3_WORKERS, True)}}  # fmt: skip
SUSTAINED: dict[str, Any] = {"channels": 200, "per_channel": 10, "spacing": 2.0}
STORES: dict[str, Any] = {"configured": [40, 1000], "channels": 20, "per_channel": 10, "spacing": 3.5}
FLOOR: dict[str, Any] = {"channels": 40, "per_channel": 10, "spacing": 3.5}
QUICK: dict[str, dict[str, Any]] = {"paced": {"channels": 20, "per_channel": 2, "spacing": 3.5, "runs": 1},
         "burst": {"channels": 20, "per_channel": 2, "runs": 1}, "scaling": {"channels": 40, "per_channel": 1},
         "sustained": {"channels": 50, "per_channel": 2, "spacing": 2.0},
         "stores": {"configured": [20, 200], "channels": 10, "per_channel": 2, "spacing": 3.5},
         "floor": {"channels": 20, "per_channel": 2, "spacing": 3.5}}  # fmt: skip
Row = TypeVar("Row")
SCALING_TURNS = 2
STORES_TURNS = 2
SLACK_SPACING_SECONDS = 1.0  # what the emulator (and Slack) allow per channel


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


def bench_config(path: Path, port: int, channels: int) -> None:
    stores = [slack_store(i, 2001, "bench", "CB", "UB") for i in range(channels)]
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
PUSH_LEAD_SECONDS = 0.5
IDLE_SECONDS = 5.0


class CpuMeter:
    """CPU seconds used so far by each bridge process and each world process (from /proc) and by
    redis-server (INFO cpu; a cluster's nodes added up)."""

    def __init__(self, bridges: dict[str, int], worlds: dict[str, int], redis_ports: list[int]) -> None:
        self.bridges = bridges
        self.worlds = worlds
        self.redis = [Redis(port=port, decode_responses=True) for port in redis_ports]

    async def read(self) -> dict[str, float]:
        infos = [await node.info("cpu") for node in self.redis]
        used = {name: process_cpu(pid) for name, pid in (self.bridges | self.worlds).items()}
        used["redis"] = sum(redis_cpu(info) for info in infos)
        used["bench_process"] = time.process_time()
        return used

    async def memory(self) -> dict[str, float]:
        """Resident memory (MB) of each bridge process, and what Redis holds (``used_memory``, every
        node added up): read after each part, so a leak shows as growth from one run to the next."""
        used = {name: resident_mb(pid) for name, pid in self.bridges.items()}
        infos = [await node.info("memory") for node in self.redis]
        return used | {"redis": round(sum(int(info["used_memory"]) for info in infos) / 2**20, 1)}

    async def round_trips(self) -> int:
        """Requests Redis has read so far (``total_reads_processed``: a pipeline or a script call
        read at once counts once), every node added up: the round trips made to it."""
        infos = [await node.info("stats") for node in self.redis]
        return sum(int(info["total_reads_processed"]) for info in infos)

    async def commands(self) -> dict[str, int]:
        """Commands Redis has run so far, by name (those a Lua script runs included)."""
        calls: Counter[str] = Counter()
        for node in self.redis:
            calls.update({name.removeprefix("cmdstat_"): int(row["calls"])
                          for name, row in (await node.info("commandstats")).items()})  # fmt: skip
        return dict(calls)


@dataclass
class World:
    """The two world processes (bench/world.py): Slack's, which answers, and the platform's, which pushes."""

    slack: WorldProcess
    platform: WorldProcess


async def run_load(
    world: World,
    channels: int,
    per_channel: int,
    spacing: float,
    label: str,
    cpu: CpuMeter,
    idle: dict[str, float],
) -> dict[str, Any]:
    """Opens ``per_channel`` chats in each of ``channels`` channels, a new one in each channel every
    ``spacing`` seconds (0: all at once), and answers each as soon as its thread shows up. Before a
    burst the platform's process opens its connections to the bridge (see PlatformSide.open_connections),
    outside the CPU counted."""
    chats = channels * per_channel
    connections = await world.platform.call("open_connections", count=chats) if spacing == 0 else 0
    cpu_before = await cpu.read()
    commands_before = await cpu.commands()
    round_trips_before = await cpu.round_trips()
    await world.slack.call("arm", label=label, chats=chats)
    # The first push's moment: time for the platform's process to take the command (its collector
    # runs first, up to ~0.1 s on a heap grown by earlier runs) and prepare the pushes due first.
    started = time.time() + PUSH_LEAD_SECONDS
    pushed, answered = await asyncio.gather(
        world.platform.call("push", label=label, channels=channels, per_channel=per_channel, spacing=spacing,
                            started=started),
        world.slack.call("collect"),
    )  # fmt: skip
    done = time.time()
    await asyncio.sleep(SETTLE_SECONDS)  # the follow-ups (✅ reactions, header updates) are part of a chat
    used = {k: v - cpu_before[k] for k, v in (await cpu.read()).items()}
    commands = {k: v - commands_before.get(k, 0) for k, v in (await cpu.commands()).items()}
    round_trips = await cpu.round_trips() - round_trips_before
    to_slack, to_platform, missing = [], [], []
    pushed_at: dict[tuple[int, int], float] = {}
    written_late: dict[tuple[int, int], float] = {}
    landed_at: dict[tuple[int, int], float] = {}
    acknowledged = []
    for marker, (channel_index, n, due, late, acked_at, reply_at) in pushed["chats"].items():
        pushed_at[channel_index, n] = due
        written_late[channel_index, n] = late
        acknowledged.append(acked_at - due)
        if marker not in answered["landed"]:
            missing.append(marker)
            continue
        posted_at, reply_sent = answered["landed"][marker]
        landed_at[channel_index, n] = posted_at
        to_slack.append(posted_at - due)
        if reply_at is None:
            missing.append(marker + " reply")
        else:
            to_platform.append(reply_at - reply_sent)
    seconds = time.time() - started
    less_idle = {name: round((used[name] - idle[name] * seconds) * 1000 / chats, 2) for name in idle}
    return {
        "chats": chats,
        "seconds": round(seconds, 1),
        "chats_per_second": round(chats / (done - started), 1),
        "cpu_ms_per_chat_less_idle": less_idle | {"bridge_total": round(sum(less_idle[n] for n in cpu.bridges), 2)},
        "cpu_ms_per_chat": {name: round(value * 1000 / chats, 2) for name, value in used.items()},
        "redis_commands_per_chat": round(sum(commands.values()) / chats, 1),
        "redis_round_trips_per_chat": round(round_trips / chats, 1),
        "redis_commands_by_name_per_chat": {
            name: round(calls / chats, 1)
            for name, calls in sorted(commands.items(), key=lambda item: -item[1])
            if calls
        },
        **latency_rows(percentiles(to_slack), percentiles(to_platform), pushed, answered, spacing > 0),
        "push_acknowledged": percentiles(acknowledged),
        **({"connections_opened_before": connections} if spacing == 0 else {}),
        "slack_429s": answered["slack_429s"],
        "missing": sorted(missing),
        "memory_mb_after": await cpu.memory(),
        **(channel_rates(pushed_at, written_late, landed_at, channels) if spacing == 0 else {}),
    }


WORLD_LAG_LIMIT_MS = 5.0
"""When a world process pushed late or its event loop stalled by more than this (p99), what it timed
is partly its own delay: the paced latency rows are INVALID."""


def latency_rows(
    to_slack: dict[str, float],
    to_platform: dict[str, float],
    pushed: dict[str, Any],
    answered: dict[str, Any],
    paced: bool,
) -> dict[str, Any]:
    """Both latency rows, with how late the platform's process pushed and how long each world
    process's loop stalled; paced rows whose world lagged past WORLD_LAG_LIMIT_MS (p99) are marked
    INVALID, not printed as results."""
    world = {"push_late": percentiles(pushed["push_late"]), "platform_loop_lag": percentiles(pushed["loop_lag"]),
             "slack_loop_lag": percentiles(answered["loop_lag"])}  # fmt: skip
    worst = max(row.get("p99_ms", 0.0) for row in world.values())
    rows: dict[str, Any] = {"platform_to_slack": to_slack, "slack_to_platform": to_platform, "world": world}
    if paced and worst > WORLD_LAG_LIMIT_MS:
        rows["latency_valid"] = False
        rows["invalid_reason"] = f"a world process lagged {worst:.1f} ms (p99)"
    else:
        rows["latency_valid"] = True
    return rows


def channel_rates(
    pushed_at: dict[tuple[int, int], float],
    written_late: dict[tuple[int, int], float],
    landed_at: dict[tuple[int, int], float],
    channels: int,
) -> dict[str, Any]:
    """For a burst: how soon each channel's first post landed after its push, and the share of the
    allowed rate each channel got — k posts need (k - 1) s at 1/s; their actual span counts from
    the channel's first push, so a late start counts against it. The first posts are timed from
    the pushes' moment; when the platform's process wrote a channel's first push more than
    WORLD_LAG_LIMIT_MS after it, the figure is partly the world's delay and marked INVALID."""
    first_post: list[float] = []
    first_written: list[float] = []
    shares: list[float] = []
    for c in range(channels):
        posts = sorted(t for (channel, _), t in landed_at.items() if channel == c)
        pushes = {key: t for key, t in pushed_at.items() if key[0] == c}
        if len(posts) < 2 or not pushes:
            continue
        moment = min(pushes.values())
        first_post.append(posts[0] - moment)
        first_written.append(min(t + written_late[key] for key, t in pushes.items()) - moment)
        ideal = (len(posts) - 1) * SLACK_SPACING_SECONDS
        shares.append(ideal / max(ideal, posts[-1] - moment))
    late = percentiles(first_written)
    valid = bool(late) and late["max_ms"] <= WORLD_LAG_LIMIT_MS
    return {
        "first_post_of_each_channel": percentiles(first_post),
        "first_push_of_each_channel_written_late": late,
        "first_post_valid": valid,
        **(
            {}
            if valid
            else {"first_post_invalid_reason": f"a channel's first push was written {late.get('max_ms')} ms late"}
        ),
        "share_of_allowed_rate": {
            "min": round(min(shares, default=0), 3),
            "median": round(statistics.median(shares) if shares else 0, 3),
        },
    }


@contextlib.asynccontextmanager
async def running_stack(
    tmp: Path,
    channels: int,
    roles: list[str],
    cluster: bool = False,
    root: Path = ROOT,
    floor_round_trips: int | None = None,
    floor_sdks: bool = False,
) -> AsyncIterator[tuple[World, CpuMeter, dict[str, float]]]:
    """Redis (AOF on; with ``cluster``, a three-node Redis Cluster), the two world processes and the
    bridge as ``roles`` processes (the first takes the webhooks); yields the world, a CPU meter and
    the idle CPU per second of every process measured. With ``floor_round_trips``, bench/floor_relay.py
    takes the bridge's place, making that many Redis round trips per chat (with ``floor_sdks``,
    through Slack's SDKs)."""  # fmt: skip
    port = free_port()
    name = f"{channels}-{len(roles)}{'-cluster' if cluster else ''}-{time.monotonic_ns()}"
    config_path = tmp / f"bench-{name}.yaml"
    bench_config(config_path, port, channels)
    bridge_url = f"http://127.0.0.1:{port}"
    slack = WorldProcess("slack_world", SlackSide, SIGNING, TOKEN, bridge_url)
    platform: WorldProcess | None = None
    data = tmp / f"stack-{name}"
    data.mkdir()
    bridges: list[subprocess.Popen[bytes]] = []
    try:
        env = dict(os.environ, PLATFORM_API_URL="http://127.0.0.1:1", SLACK_API_URL=await slack.started())
        platform = WorldProcess("platform_world", PlatformSide, config_path, env, bridge_url)
        env["PLATFORM_API_URL"] = await platform.started()
        with contextlib.ExitStack() as servers:
            if cluster:
                nodes = servers.enter_context(embedded_cluster(data / "redis", appendonly=True))
                env["REDIS_URL"] = cluster_url(nodes)
            else:
                nodes = [servers.enter_context(EmbeddedRedis(data / "redis", appendonly=True))]
                env["REDIS_URL"] = nodes[0].url
            env["ARCHIVE_URL"] = f"sqlite:///{data / 'archive.sqlite3'}"
            ports = [port] + [free_port() for _ in roles[1:]]
            for i, (role, bridge_port) in enumerate(zip(roles, ports, strict=True)):
                log_path = data / f"bridge-{i}.log"
                if floor_round_trips is None:
                    bridges.append(start_bridge(config_path, env, log_path, role, bridge_port, root))
                else:
                    bridges.append(start_floor(config_path, env, log_path, bridge_port, floor_round_trips, floor_sdks))
            for bridge, bridge_port in zip(bridges, ports, strict=True):
                await wait_up(bridge_port, bridge)
            await asyncio.sleep(1.0)  # the workers' start-up (migrations, groups) is not idle time
            cpu = CpuMeter({f"{role}_{i}": b.pid for i, (role, b) in enumerate(zip(roles, bridges, strict=True))},
                           {w.name: w.pid for w in (slack, platform)}, [node.port for node in nodes])  # fmt: skip
            before = await cpu.read()
            await asyncio.sleep(IDLE_SECONDS)  # what each process costs doing nothing: timers, watchers
            idle = {k: (v - before[k]) / IDLE_SECONDS for k, v in (await cpu.read()).items() if k != "bench_process"}
            yield World(slack, platform), cpu, idle
            for i, bridge in enumerate(bridges):
                if bridge.poll() is not None:  # what it measured included a dead process: not a result
                    log_tail = (data / f"bridge-{i}.log").read_text(errors="replace")[-2000:]
                    raise RuntimeError(f"bridge {i} ({roles[i]}) exited with code {bridge.returncode}:\n{log_tail}")
    finally:
        for bridge in bridges:
            bridge.terminate()
        for bridge in bridges:
            bridge.wait(30)
        for world_process in (slack, platform):
            if world_process is not None:
                world_process.stop()


def spread(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run-to-run spread of the paced runs: each figure's lowest and highest; latencies only
    from the runs whose world kept up (``latency_valid``)."""
    valid = [r for r in runs if r["latency_valid"]]
    out: dict[str, Any] = {"latency_from_valid_runs": f"{len(valid)} of {len(runs)}"}
    for leg in ("platform_to_slack", "slack_to_platform"):
        for figure in ("p50_ms", "p99_ms", "max_ms"):
            values = [r[leg][figure] for r in valid if r[leg]]
            out[f"{leg}.{figure}"] = [min(values), max(values)] if values else "INVALID: no run's world kept up"
    for name in ("bridge_total", "redis"):
        values = [r["cpu_ms_per_chat_less_idle"][name] for r in runs]
        out[f"cpu_ms_per_chat.{name}"] = [min(values), max(values)]
    return out


def turn_order(names: list[Row], turn: int) -> list[Row]:
    """Rows compared in turns run in reverse order every other turn (A B C, C B A, A B C): the
    machine's speed moves within minutes, and a row always run first or last would carry that drift
    as if it were its own."""
    return names if turn % 2 == 0 else names[::-1]


def in_turns(names: list[Row], turns: int) -> list[tuple[int, Row]]:
    return [(turn, name) for turn in range(turns) for name in turn_order(names, turn)]


async def main_async(quick: bool) -> dict[str, Any]:
    paced = QUICK["paced"] if quick else PACED
    burst = QUICK["burst"] if quick else BURST
    scaling = SCALING | (QUICK["scaling"] if quick else {})
    results: dict[str, Any] = {"machine": machine(), "paced": {"runs": []}, "floor": {"turns": []}}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        async with running_stack(tmp, max(paced["channels"], burst["channels"]), ["all"]) as (world, cpu, idle):
            results["idle_cpu_ms_per_s"] = {k: round(v * 1000, 2) for k, v in idle.items()}
            for run in range(paced["runs"]):
                row = await run_load(world, paced["channels"], paced["per_channel"], paced["spacing"],
                                     f"paced{run}", cpu, idle)  # fmt: skip
                results["paced"]["runs"].append(row)
                print(json.dumps({k: row[k] for k in ("platform_to_slack", "world", "latency_valid")}), file=sys.stderr)
                # The floor right after each paced run, so each run has its own to compare with
                # (this stack stays up, idle, beside it: a few ms of CPU a second).
                floor_turn = await floor(tmp, QUICK["floor"] if quick else FLOOR, row, run)
                results["floor"]["turns"].append(floor_turn)
            results["paced"]["spread"] = spread(results["paced"]["runs"])
            results["floor"]["spread"] = floor_spread(results["floor"]["turns"])
            bursts = [await run_load(world, burst["channels"], burst["per_channel"], 0.0, f"burst{run}", cpu, idle)
                      for run in range(burst["runs"])]  # fmt: skip
            results["burst"] = {"runs": bursts, "spread": burst_spread(bursts)}
        sustained = QUICK["sustained"] if quick else SUSTAINED
        async with running_stack(tmp, sustained["channels"], ["all"]) as (world, cpu, idle):
            results["sustained"] = await run_load(world, sustained["channels"], sustained["per_channel"],
                                                  sustained["spacing"], "sustained", cpu, idle)  # fmt: skip
        print(
            f"sustained: {results['sustained']['cpu_ms_per_chat_less_idle']['bridge_total']} ms/chat", file=sys.stderr
        )
        results["scaling"] = {"turns": [{} for _ in range(SCALING_TURNS)]}
        for turn, name in in_turns(list(scaling["runs"]), SCALING_TURNS):
            roles, cluster = scaling["runs"][name]
            async with running_stack(tmp, scaling["channels"], roles, cluster) as (world, cpu, idle):
                row = await run_load(world, scaling["channels"], scaling["per_channel"], 0.0, "scale", cpu, idle)
                row["roles"] = roles
                row["redis"] = "three-node Redis Cluster" if cluster else "one Redis"
                results["scaling"]["turns"][turn][name] = row
                print(f"{name}: {row['chats_per_second']} chats/s", file=sys.stderr)
        results["scaling"]["spread"] = scaling_spread(results["scaling"]["turns"])
        results["stores"] = await many_stores(tmp, QUICK["stores"] if quick else STORES)
    results["machine"] |= at_end(results["machine"])
    results["targets"] = {"cpu_ms_per_chat_bridge": 5, "p99_ms_paced_both_ways": 20, "slack_429s": 0,
                          "burst_first_post_ms": 100, "burst_share_of_allowed_rate": 0.95}  # fmt: skip
    return results


def low_high(values: list[float]) -> list[float]:
    return [min(values), max(values)]


def scaling_spread(turns: list[dict[str, dict[str, Any]]]) -> dict[str, Any]:
    """Each scaling row's figures over its turns: lowest and highest."""
    return {
        name: {
            "chats_per_second": low_high([turn[name]["chats_per_second"] for turn in turns]),
            "cpu_ms_per_chat.bridge_total": low_high(
                [turn[name]["cpu_ms_per_chat_less_idle"]["bridge_total"] for turn in turns]
            ),
            "cpu_ms_per_chat.redis": low_high([turn[name]["cpu_ms_per_chat_less_idle"]["redis"] for turn in turns]),
            "platform_to_slack.p99_ms": low_high([turn[name]["platform_to_slack"]["p99_ms"] for turn in turns]),
            "slack_429s": sum(turn[name]["slack_429s"] for turn in turns),
            "missing": sum(len(turn[name]["missing"]) for turn in turns),
        }
        for name in turns[0]
    }


def burst_spread(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run-to-run spread of the bursts: each figure's lowest and highest. One burst's slowest
    first post is one sample of a wide spread (64–142 ms in probes of one machine), so the goal is
    judged on every run's."""
    valid = [r for r in runs if r["first_post_valid"]]
    out: dict[str, Any] = {"first_post_from_valid_runs": f"{len(valid)} of {len(runs)}"}
    for figure in ("p50_ms", "max_ms"):
        values = [r["first_post_of_each_channel"][figure] for r in valid]
        out[f"first_post_of_each_channel.{figure}"] = (
            [min(values), max(values)] if values else "INVALID: no run's world pushed on time"
        )
    shares = [r["share_of_allowed_rate"]["min"] for r in runs]
    late = [r["world"]["push_late"]["p50_ms"] for r in runs]
    cpu = [r["cpu_ms_per_chat_less_idle"]["bridge_total"] for r in runs]
    return out | {
        "share_of_allowed_rate.min": [min(shares), max(shares)],
        "push_late.p50_ms": [min(late), max(late)],
        "cpu_ms_per_chat.bridge_total": [min(cpu), max(cpu)],
        "slack_429s": sum(r["slack_429s"] for r in runs),
        "missing": sum(len(r["missing"]) for r in runs),
    }


PART_ROW_KEYS = ("chats", "cpu_ms_per_chat_less_idle", "redis_commands_per_chat", "redis_round_trips_per_chat",
                 "platform_to_slack", "slack_to_platform", "latency_valid", "missing")  # fmt: skip


def part_row(row: dict[str, Any]) -> dict[str, Any]:
    """What a part that compares runs (floor, stores) keeps of each: a row without the by-name detail."""
    return {key: row[key] for key in PART_ROW_KEYS}


FLOOR_ROWS: dict[str, tuple[bool, bool]] = {
    "http_only": (False, False), "http_and_redis_round_trips": (True, False),
    "slack_sdks_only": (False, True), "slack_sdks_and_redis_round_trips": (True, True),
}  # fmt: skip
"""Each floor row: whether it makes the bridge's Redis round trips, whether it talks to Slack through its SDKs."""
GOAL_FLOOR = "slack_sdks_and_redis_round_trips"


async def floor(tmp: Path, part: dict[str, Any], paced_row: dict[str, Any], turn: int) -> dict[str, Any]:
    """One turn of the floor, run right after a paced run (``paced_row``): the same paced chats through
    bench/floor_relay.py instead of the bridge, the same calls to the world per chat and nothing else,
    first with no Redis, then with as many Redis round trips per chat as the bridge just made, through
    the bridge's own client; then both with Slack through slack-bolt and slack_sdk (one dispatch of
    each event), as the bridge must use them; every other turn in reverse order. What the bridge costs
    above the last row is its second dispatch of each Slack event, its rules, timers, scripts and
    durability work."""
    bridge_round_trips = round(paced_row["redis_round_trips_per_chat"])
    rows: dict[str, Any] = {}
    for name in turn_order(list(FLOOR_ROWS), turn):
        with_round_trips, sdks = FLOOR_ROWS[name]
        round_trips = bridge_round_trips if with_round_trips else 0
        async with running_stack(tmp, part["channels"], ["all"], floor_round_trips=round_trips,
                                 floor_sdks=sdks) as (world, cpu, idle):  # fmt: skip
            row = await run_load(world, part["channels"], part["per_channel"], part["spacing"], f"fl{round_trips}",
                                 cpu, idle)  # fmt: skip
        rows[name] = part_row(row) | {"round_trips_made_per_chat": round_trips, "slack_sdks": sdks}
        print(f"floor {name}: {row['cpu_ms_per_chat_less_idle']['bridge_total']} ms/chat", file=sys.stderr)
    bridge = paced_row["cpu_ms_per_chat_less_idle"]["bridge_total"]
    goal_floor = rows[GOAL_FLOOR]["cpu_ms_per_chat_less_idle"]["bridge_total"]
    return {
        "order": list(rows),
        "rows": rows,
        "paced_bridge_cpu_ms_per_chat": bridge,
        "bridge_over_floor": round(bridge / goal_floor, 2),
        "bridge_above_floor_ms": round(bridge - goal_floor, 2),
    }


def floor_spread(turns: list[dict[str, Any]]) -> dict[str, Any]:
    """The floor's rows and the bridge's paced run against the floor with the SDKs and the round
    trips, over the turns: lowest and highest."""
    out: dict[str, Any] = {
        f"{name}.cpu_ms_per_chat": low_high(
            [t["rows"][name]["cpu_ms_per_chat_less_idle"]["bridge_total"] for t in turns]
        )
        for name in FLOOR_ROWS
    }
    return out | {key: low_high([t[key] for t in turns]) for key in ("bridge_over_floor", "bridge_above_floor_ms")}


async def many_stores(tmp: Path, part: dict[str, Any]) -> dict[str, Any]:
    """What the number of stores in the configuration costs: the same paced chats in the same few
    stores, with few and with many stores configured (the consumer reads every store's stream, and
    claims from each): CPU per chat and idle CPU per second of the bridge and of Redis."""
    turns: list[dict[str, Any]] = [{} for _ in range(STORES_TURNS)]
    for turn, configured in in_turns(part["configured"], STORES_TURNS):
        async with running_stack(tmp, configured, ["all"]) as (world, cpu, idle):
            row = await run_load(world, part["channels"], part["per_channel"], part["spacing"], f"st{configured}",
                                 cpu, idle)  # fmt: skip
        turns[turn][f"{configured}_stores"] = part_row(row) | {
            "idle_cpu_ms_per_s": {k: round(v * 1000, 2) for k, v in idle.items()}
        }
        print(f"{configured} stores: {row['cpu_ms_per_chat_less_idle']['bridge_total']} ms/chat", file=sys.stderr)
    spread = {
        name: {
            "cpu_ms_per_chat.bridge_total": low_high(
                [t[name]["cpu_ms_per_chat_less_idle"]["bridge_total"] for t in turns]
            ),
            "cpu_ms_per_chat.redis": low_high([t[name]["cpu_ms_per_chat_less_idle"]["redis"] for t in turns]),
            "redis_commands_per_chat": low_high([t[name]["redis_commands_per_chat"] for t in turns]),
            "idle_cpu_ms_per_s.all_0": low_high([t[name]["idle_cpu_ms_per_s"]["all_0"] for t in turns]),
            "idle_cpu_ms_per_s.redis": low_high([t[name]["idle_cpu_ms_per_s"]["redis"] for t in turns]),
        }
        for name in turns[0]
    }
    return {"turns": turns, "spread": spread}


def start_bridge(
    config_path: Path, env: dict[str, str], log_path: Path, role: str, port: int, root: Path = ROOT
) -> subprocess.Popen[bytes]:
    """``bridge serve`` from the code under ``root`` (``python -m`` imports from its working
    directory first, so another commit's checkout runs its own code)."""
    log = log_path.open("wb")
    return subprocess.Popen(
        [sys.executable, "-m", "bridge", "serve", "--config", str(config_path), "--demo", "--role", role,
         "--port", str(port)],
        cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip


def start_floor(
    config_path: Path, env: dict[str, str], log_path: Path, port: int, round_trips: int, sdks: bool
) -> subprocess.Popen[bytes]:
    """bench/floor_relay.py in the bridge's place: the same calls per chat, and nothing else."""
    log = log_path.open("wb")
    return subprocess.Popen(
        [sys.executable, str(HERE / "floor_relay.py"), str(config_path), str(port), "--redis-url", env["REDIS_URL"],
         "--round-trips", str(round_trips), *(["--sdks"] if sdks else [])],
        env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip


async def wait_up(port: int, process: subprocess.Popen[bytes] | None = None) -> None:
    """bench/machine.py's ``wait_up``, off the event loop the world and the meters run on."""
    await asyncio.to_thread(machine_wait_up, port, process)


AGAINST: dict[str, dict[str, Any]] = {
    "paced": {"channels": 20, "per_channel": 25, "spacing": 3.5},
    "burst": {"channels": 200, "per_channel": 1},
}
AGAINST_TURNS = 2


async def against_async(tmp: Path, base: Path, commits: dict[str, str], quick: bool) -> dict[str, Any]:
    """This checkout beside another commit's (``base``, a git worktree), in turns — A B, then B A —
    on the same machine in the same run: paced chats (latency, CPU and Redis commands per chat) and
    a burst into one channel each (CPU per chat when busy), and the burst of several chats a channel
    (how soon each channel's first post lands, and the share of the allowed rate)."""
    paced = QUICK["paced"] if quick else AGAINST["paced"]
    burst = QUICK["scaling"] if quick else AGAINST["burst"]
    channel_burst = QUICK["burst"] if quick else BURST
    results: dict[str, Any] = {"machine": machine(), "commits": commits, "rounds": []}
    channels = max(paced["channels"], burst["channels"])
    for turn in range(1 if quick else AGAINST_TURNS):
        sides = turn_order([("base", base), ("head", ROOT)], turn)
        for side, root in sides:
            async with running_stack(tmp, channels, ["all"], root=root) as (world, cpu, idle):
                row: dict[str, Any] = {"side": side, "turn": turn,
                       "paced": await run_load(world, paced["channels"], paced["per_channel"],
                                               paced["spacing"], f"ab{turn}{side}", cpu, idle),
                       "burst": await run_load(world, burst["channels"], burst["per_channel"], 0.0,
                                               f"abb{turn}{side}", cpu, idle),
                       "channel_burst": await run_load(world, channel_burst["channels"], channel_burst["per_channel"],
                                                       0.0, f"abc{turn}{side}", cpu, idle)}  # fmt: skip
            results["rounds"].append(row)
            print(
                f"{side}: paced {row['paced']['cpu_ms_per_chat_less_idle']['bridge_total']} ms/chat, "
                f"burst {row['burst']['cpu_ms_per_chat_less_idle']['bridge_total']} ms/chat",
                file=sys.stderr,
            )
    results["summary"] = {
        side: {
            "paced_cpu_ms_per_chat": [r["paced"]["cpu_ms_per_chat_less_idle"]["bridge_total"] for r in rows],
            # Idle is not simply added to a run's work: what a process does idle (a read of every
            # store's stream timing out) is partly what it does per chat when busy, so both are shown.
            "paced_cpu_ms_per_chat_with_idle": [r["paced"]["cpu_ms_per_chat"]["all_0"] for r in rows],
            "paced_redis_cpu_ms_per_chat": [r["paced"]["cpu_ms_per_chat_less_idle"]["redis"] for r in rows],
            "burst_cpu_ms_per_chat": [r["burst"]["cpu_ms_per_chat_less_idle"]["bridge_total"] for r in rows],
            "redis_commands_per_chat": [r["paced"]["redis_commands_per_chat"] for r in rows],
            "channel_burst_first_post_p50_max_ms": [
                (first["p50_ms"], first["max_ms"]) if r["channel_burst"]["first_post_valid"] else "INVALID"
                for r in rows
                for first in [r["channel_burst"]["first_post_of_each_channel"]]
            ],
            "channel_burst_share_min": [r["channel_burst"]["share_of_allowed_rate"]["min"] for r in rows],
            "channel_burst_slack_429s": [r["channel_burst"]["slack_429s"] for r in rows],
            "platform_to_slack_p50_p99_ms": [
                (r["paced"]["platform_to_slack"]["p50_ms"], r["paced"]["platform_to_slack"]["p99_ms"]) for r in rows
            ],
            "slack_to_platform_p50_p99_ms": [
                (r["paced"]["slack_to_platform"]["p50_ms"], r["paced"]["slack_to_platform"]["p99_ms"]) for r in rows
            ],
        }
        for side in ("base", "head")
        for rows in [[r for r in results["rounds"] if r["side"] == side]]
    }
    results["machine"] |= at_end(results["machine"])
    return results


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="a small version of every part; results not written")
    parser.add_argument("--against", metavar="COMMIT", help="compare this checkout with COMMIT, in turns")
    args = parser.parse_args()
    if args.against:
        with (
            tempfile.TemporaryDirectory() as tmp_name,
            checkout_beside(args.against, Path(tmp_name)) as (base, commits),
        ):
            compared = asyncio.run(against_async(Path(tmp_name), base, commits, args.quick))
        print(json.dumps(compared["summary"], indent=2))
        if not args.quick:
            path = RESULTS.with_name(f"chats-vs-{args.against}.json")
            path.write_text(json.dumps(compared, indent=2, ensure_ascii=False) + "\n")
            print(f"wrote {path}")
        return
    results = asyncio.run(main_async(args.quick))
    print(json.dumps(results, indent=2, ensure_ascii=False))
    if not args.quick:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")
        print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
