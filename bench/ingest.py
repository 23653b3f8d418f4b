"""`make bench-ingest`: signed platform pushes into the bridge, beside a bare aiohttp handler.

Both servers run as their own process on loopback; the bridge as deployed (`bridge serve`, Redis with
AOF, event consumer on). wrk replays pre-signed single-record pushes, each with a unique msg_id, for
20 s at full speed with 64 connections; then an open-loop Python client sends 1,000 pushes/s for 10 s
and measures latency. Writes bench/results/ingest.json.

What is measured is intake: verify, parse, validate, store, acknowledge. The CPU per stored push is
compared with bare aiohttp's for a `--role web` process (intake only, as deployed in front of
workers), the two run in turns three times, every other turn in reverse (the middle turn's ratio
is the result). Those pushes are chat messages, checked against their model as every real one is; a
web process takes nothing off the stream, so no flow runs. The `--role all` row adds the consumer
taking each event off the stream in the same process: its records carry a tag no flow handles
(stored and acknowledged, as the platform contract says of unknown tags), so the flows' own work —
opening chats, posting to Slack — is not in this figure; `make bench-chats` measures that end to end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import redis as redis_lib
import yaml
from machine import (
    at_end,
    checkout_beside,
    machine,
    process_cpu,
    redis_cpu,
    wait_up,
)  # bench/machine.py, beside this file

from bridge.app.redis_server import EmbeddedRedis, free_port
from connectors.platform.signing import sign

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results" / "ingest.json"
KEY, SECRET = "demo-app-key-1001", "demo-app-secret-1001"
BENCH_TAG = "im_bench_message"  # same shape as im_platform_message; no flow handles it


FLOW_TAG = "im_platform_message"  # opens chats: the flows run, and their Slack posts fail and retry
INTAKE_TAG = FLOW_TAG
"""What the goal's comparison sends: a chat message, checked against its model at intake as every
real one is (a tag no flow handles is only checked to be a JSON object, about 3 µs a push less). A
`--role web` process takes no event off the stream, so no flow runs."""


def push_line(i: int, tag: str = BENCH_TAG) -> tuple[str, str, str, str]:
    data = {
        "shop_id": "1001",
        "conversation_id": f"conv-{i % 5000}",
        "message_id": f"pm-{i}",
        "sent_at": "2026-11-23T10:00:00+08:00",
        "sender": {"agent_id": "cs-001", "name": "platform cs"},
        "content": {"type": "text", "text": "您好，请问这个订单什么时候发货？买家很着急，麻烦尽快回复，谢谢！"},
        "awaiting_reply": True,
    }
    body = json.dumps(
        [{"tag": tag, "msg_id": f"7301{i:012d}", "data": json.dumps(data, ensure_ascii=False)}],
        ensure_ascii=False,
    )
    return "/webhooks/platform/1001", KEY, sign(KEY, body.encode(), SECRET), body


LINES_PER_SECOND = 30_000
"""Requests written per second of a run: more than any server here takes (bare aiohttp up to about
24,000/s, and each of wrk's threads keeps to its own share of the file), so wrk never goes round its
file again: a repeated push is only deduplicated by the bridge (and logged), which is not the work
being measured. A bridge run that did go round is marked INVALID."""


def write_requests(path: Path, count: int, offset: int, tag: str = BENCH_TAG) -> None:
    with path.open("w", encoding="utf-8") as out:
        for i in range(offset, offset + count):
            out.write("\t".join(push_line(i, tag)) + "\n")


CPU_SETTLE_SECONDS = 2.0
"""After wrk stops, the server may still be consuming what it stored: its CPU is counted this long."""


def cpu_now(pid: int, redis_url: str | None) -> dict[str, float]:
    """CPU seconds so far of the server process (/proc) and, when given, of redis-server (INFO cpu)."""
    used = {"server": process_cpu(pid)}
    if redis_url:
        with redis_lib.Redis.from_url(redis_url, decode_responses=True) as redis:
            info = redis.info("cpu")
        used["redis"] = redis_cpu(info)
    return used


def run_wrk(
    port: int,
    requests_file: Path,
    seconds: int,
    threads: int = 2,
    connections: int = 64,
    *,
    pid: int | None = None,
    redis_url: str | None = None,
    deduplicates: bool = True,
) -> dict[str, Any]:
    """wrk at full speed; with ``pid``, also the CPU each request cost that process (and Redis),
    less what it spends idle (measured just before)."""
    idle: dict[str, float] = {}
    if pid is not None:
        first = cpu_now(pid, redis_url)
        time.sleep(CPU_SETTLE_SECONDS)
        idle = {k: (v - first[k]) / CPU_SETTLE_SECONDS for k, v in cpu_now(pid, redis_url).items()}
        before = cpu_now(pid, redis_url)
        started = time.monotonic()
    out = subprocess.run(
        ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{seconds}s", "--latency",
         "-s", str(HERE / "ingest.lua"), f"http://127.0.0.1:{port}", "--", str(requests_file), str(threads)],
        capture_output=True, text=True, timeout=seconds + 120,
    )  # fmt: skip
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("{")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no result: {out.stdout[-500:]} {out.stderr[-500:]}")
    raw = json.loads(line)
    row = {
        "per_s": round(raw["requests"] / (raw["duration_us"] / 1e6), 1),
        "p50_ms": round(raw["p50_us"] / 1000, 2),
        "p99_ms": round(raw["p99_us"] / 1000, 2),
        "requests": raw["requests"],
        "non_2xx": raw["non_2xx"],
        "socket_errors": raw["errors"],
    }
    if raw["wrapped"] and deduplicates:
        row["valid"] = False
        row["invalid_reason"] = "wrk ran out of fresh requests and sent some again (only deduplicated)"
    elif raw["wrapped"]:
        row["requests_sent_again"] = True  # the same work for a server that does not deduplicate
    if pid is not None:
        time.sleep(CPU_SETTLE_SECONDS)
        elapsed = time.monotonic() - started
        used = {k: v - before[k] - idle[k] * elapsed for k, v in cpu_now(pid, redis_url).items()}
        row["cpu_us_per_request"] = {k: round(v * 1e6 / raw["requests"], 1) for k, v in used.items()}
    return row


async def fixed_rate(port: int, rate: int, seconds: float, offset: int, tag: str = BENCH_TAG) -> dict[str, Any]:
    """Open loop: a request is due every 1/rate s whether or not earlier ones have answered, and its
    latency counts from that due moment, so a client or server that falls behind shows as latency,
    not as a slower rate. When the client itself starts requests late (it cannot keep the rate),
    the row measures the client, not the bridge, and is marked invalid."""
    lines = [push_line(offset + i, tag) for i in range(int(rate * seconds))]
    latencies: list[float] = []
    client_late: list[float] = []
    statuses: dict[int, int] = {}
    connector = aiohttp.TCPConnector(limit=256)
    async with aiohttp.ClientSession(connector=connector) as http:

        async def one(due: float, path: str, app: str, sig: str, body: str) -> None:
            client_late.append((time.perf_counter() - due) * 1000)
            headers = {"app-id": app, "event-sign": sig, "Content-Type": "application/json"}
            async with http.post(f"http://127.0.0.1:{port}{path}", data=body.encode(), headers=headers) as resp:
                await resp.read()
                statuses[resp.status] = statuses.get(resp.status, 0) + 1
            latencies.append((time.perf_counter() - due) * 1000)

        tasks = []
        start = time.perf_counter() + 0.05
        for i, line in enumerate(lines):
            due = start + i / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(due, *line)))
        await asyncio.gather(*tasks)
    latencies.sort()
    client_late.sort()
    client_p99 = client_late[int(len(client_late) * 0.99)]
    valid = client_p99 <= CLIENT_LATE_LIMIT_MS
    return {
        "rate_per_s": rate,
        "latency_from": "scheduled send time",
        "p50_ms": round(statistics.median(latencies), 2),
        "p99_ms": round(latencies[int(len(latencies) * 0.99)], 2),
        "max_ms": round(latencies[-1], 2),
        "statuses": statuses,
        "client_start_late_p99_ms": round(client_p99, 2),
        "valid": valid,
        **({} if valid else {"invalid_reason": f"the client started requests {client_p99:.0f} ms late (p99)"}),
    }


CLIENT_LATE_LIMIT_MS = 20.0
"""A client that starts requests later than this (p99) is not sending the rate it claims."""


def start_bridge(tmp: Path, redis_url: str, port: int, role: str = "all", root: Path = ROOT) -> subprocess.Popen[bytes]:
    # Slack is pointed at a closed port: every post fails at once and is retried, as in an outage.
    env = dict(os.environ, REDIS_URL=redis_url, BRIDGE_PORT=str(port), SLACK_API_URL="http://127.0.0.1:9/api/",
               ARCHIVE_URL=f"sqlite:///{tmp / 'archive.sqlite3'}")  # fmt: skip
    log = open(tmp / f"bridge-{role}-{port}.log", "wb")  # noqa: SIM115
    return subprocess.Popen(
        [sys.executable, "-m", "bridge", "serve", "--config", str(root / "config" / "example.yaml"),
         "--role", role, "--demo"],
        cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip


def set_appendfsync(url: str, mode: str) -> None:
    """``always`` (the bridge's default: nothing acknowledged is lost if the machine dies) or
    ``everysec`` (up to a second of acknowledged writes at risk)."""
    subprocess.run(["redis-cli", "-u", url, "CONFIG", "SET", "appendfsync", mode], check=True, capture_output=True)


def flows_under_load(tmp: Path, seconds: float) -> dict[str, Any]:
    """Pushes that open chats (the flows run; every Slack post fails and is retried) at 1,000/s,
    open loop: one process doing everything, then one web and one worker process, same run."""
    out: dict[str, Any] = {"tag": f"{FLOW_TAG} (opens chats; Slack unreachable, posts retried)", "rate_per_s": 1000}
    for mode, roles in (("one process (--role all)", ["all"]), ("web + worker processes", ["web", "worker"])):
        with EmbeddedRedis(tmp / f"redis-{roles[0]}", appendonly=True) as redis:
            ports = [free_port() for _ in roles]
            procs = [start_bridge(tmp, redis.url, port, role) for port, role in zip(ports, roles, strict=True)]
            try:
                for port, proc in zip(ports, procs, strict=True):
                    wait_up(port, proc)
                time.sleep(1.0)
                print(f"{mode}: {FLOW_TAG} at 1,000 pushes/s, open loop…", flush=True)
                out[mode] = asyncio.run(fixed_rate(ports[0], 1000, seconds, 30_000_000, FLOW_TAG))
                print("  ", out[mode], flush=True)
            finally:
                for proc in procs:
                    stop(proc)
    return out


INTAKE_TURNS = 3


def intake_in_turns(tmp: Path, seconds: int, turns: int, sides: dict[str, Path]) -> list[dict[str, Any]]:
    """The goal's comparison: a `--role web` process (intake only) of each side (the code under its
    root, each on its own Redis) and bare aiohttp, each at full speed in turns (the sides' order
    alternating, then bare), all running throughout, so a change in what else the machine does
    falls on each. Each turn sends pushes no bridge has seen (a repeated push is only deduplicated).
    Per turn: each side's row, bare's, and each side's CPU per push over bare's (INVALID for a row
    that did not measure fresh pushes only)."""
    rows = []
    with contextlib.ExitStack() as running:
        servers = {name: running.enter_context(EmbeddedRedis(tmp / f"redis-intake-{name}", appendonly=True))
                   for name in sides}  # fmt: skip
        ports = {name: free_port() for name in [*sides, "bare_aiohttp"]}
        procs = {name: start_bridge(tmp, servers[name].url, ports[name], "web", root) for name, root in sides.items()}
        procs["bare_aiohttp"] = start_bare(ports["bare_aiohttp"])
        try:
            for name, port in ports.items():
                wait_up(port, procs[name])
            time.sleep(1.0)
            for turn in range(turns):
                fresh = tmp / f"requests-turn-{turn}.tsv"
                write_requests(fresh, LINES_PER_SECOND * seconds, 100_000_000 * (turn + 1), INTAKE_TAG)
                # Every other turn runs in reverse, bare first: the machine's speed drifts within
                # minutes, and a server always run last would carry that drift as its own.
                order = [*sides, "bare_aiohttp"][:: 1 if turn % 2 == 0 else -1]
                print(f"turn {turn + 1}: {', '.join(order)} (the bridge as --role web), full speed…", flush=True)
                row: dict[str, Any] = {}
                for name in order:
                    row[name] = run_wrk(ports[name], fresh, seconds, pid=procs[name].pid, deduplicates=name in sides,
                                        redis_url=servers[name].url if name in sides else None)  # fmt: skip
                bare = row["bare_aiohttp"]
                row["cpu_per_push_vs_bare"] = {
                    name: round(row[name]["cpu_us_per_request"]["server"] / bare["cpu_us_per_request"]["server"], 2)
                    if row[name].get("valid", True) else "INVALID"
                    for name in sides
                }  # fmt: skip
                print("  ", row, flush=True)
                rows.append(row)
                fresh.unlink()
        finally:
            for proc in procs.values():
                stop(proc)
    return rows


def middle_turn(rows: list[dict[str, Any]], side: str) -> dict[str, Any]:
    """Of the turns whose ``side`` row is valid, the one with the middle ratio."""
    valid = sorted((row for row in rows if row["cpu_per_push_vs_bare"][side] != "INVALID"),
                   key=lambda row: row["cpu_per_push_vs_bare"][side])  # fmt: skip
    if not valid:
        raise RuntimeError("no turn measured fresh pushes only: raise LINES_PER_SECOND")
    return valid[len(valid) // 2]


def start_bare(port: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, str(HERE / "bare_server.py"), str(port)], cwd=ROOT)


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--quick", action="store_true", help="3 s runs: a smoke test, results not written")
    parser.add_argument("--only-flows", action="store_true", help="only the flow-load comparison (roles split)")
    parser.add_argument(
        "--against", metavar="COMMIT", help="intake of this checkout beside COMMIT's and bare, in turns"
    )
    args = parser.parse_args()
    seconds = 3 if args.quick else args.seconds
    if shutil.which("wrk") is None:
        sys.exit("wrk is needed: apt-get install wrk (make bench-ingest does this)")
    if args.against:
        against(args.against, seconds, 1 if args.quick else INTAKE_TURNS, write=not args.quick)
        return
    results: dict[str, Any] = {"machine": machine(), "seconds": seconds, "connections": 64,
                               "tag": f"{BENCH_TAG} (stored and acknowledged; no flow runs)",
                               "intake_turns_tag": f"{INTAKE_TAG} (validated at intake; a web process runs no flow)",
                               "redis": "AOF, appendfsync always unless named"}  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(os.environ.get("BENCH_TMP", tmp_name))
        if args.only_flows:
            print(yaml.safe_dump(flows_under_load(tmp, min(10, seconds)), sort_keys=False, allow_unicode=True))
            return
        results["intake_turns"] = intake_in_turns(tmp, seconds, 1 if args.quick else INTAKE_TURNS, {"bridge": ROOT})
        requests_file = tmp / "requests.tsv"
        write_requests(requests_file, LINES_PER_SECOND * seconds, 0)

        with EmbeddedRedis(tmp / "redis", appendonly=True) as redis:
            bridge_port, bare_port = free_port(), free_port()
            bridge = start_bridge(tmp, redis.url, bridge_port)
            bare = start_bare(bare_port)
            try:
                wait_up(bridge_port, bridge)
                wait_up(bare_port, bare)
                time.sleep(1.0)
                print("bare aiohttp, full speed…", flush=True)
                results["bare_aiohttp"] = run_wrk(bare_port, requests_file, seconds, pid=bare.pid, deduplicates=False)
                print("  ", results["bare_aiohttp"], flush=True)
                print("bridge --role all (intake and consumer), full speed…", flush=True)
                results["bridge"] = run_wrk(bridge_port, requests_file, seconds, pid=bridge.pid, redis_url=redis.url)
                print("  ", results["bridge"], flush=True)
                print("1,000 pushes/s, open loop…", flush=True)
                results["at_1000_per_s"] = {
                    "bridge": asyncio.run(fixed_rate(bridge_port, 1000, min(10, seconds), 10_000_000)),
                    "bare_aiohttp": asyncio.run(fixed_rate(bare_port, 1000, min(10, seconds), 20_000_000)),
                }
                print("bridge, Redis appendfsync everysec (a second of acknowledged pushes at risk)…", flush=True)
                set_appendfsync(redis.url, "everysec")
                fresh = tmp / "requests-everysec.tsv"  # new msg_ids: a repeated push is only deduplicated
                write_requests(fresh, LINES_PER_SECOND * seconds, 50_000_000)
                results["bridge_appendfsync_everysec"] = run_wrk(
                    bridge_port, fresh, seconds, pid=bridge.pid, redis_url=redis.url
                )
                results["at_1000_per_s"]["bridge_appendfsync_everysec"] = asyncio.run(
                    fixed_rate(bridge_port, 1000, min(10, seconds), 60_000_000)
                )
                print("  ", results["bridge_appendfsync_everysec"], flush=True)
                print("  ", results["at_1000_per_s"], flush=True)
            finally:
                stop(bridge)
                stop(bare)
        results["flows_at_1000_per_s"] = flows_under_load(tmp, min(10, seconds))
    bare_cpu = results["bare_aiohttp"]["cpu_us_per_request"]["server"]
    results["ratio"] = round(results["bridge"]["per_s"] / results["bare_aiohttp"]["per_s"], 3)
    # The goal's figure: a stored push, in the process that takes the webhooks, beside bare in turns.
    middle = middle_turn(results["intake_turns"], "bridge")
    results["ratio_intake_only"] = round(middle["bridge"]["per_s"] / middle["bare_aiohttp"]["per_s"], 3)
    results["bridge_intake_only"] = middle["bridge"]
    results["cpu_per_push_vs_bare"] = middle["cpu_per_push_vs_bare"]["bridge"]
    results["cpu_per_push_vs_bare_each_turn"] = [
        row["cpu_per_push_vs_bare"]["bridge"] for row in results["intake_turns"]
    ]
    results["cpu_per_push_vs_bare_with_consumer"] = round(
        results["bridge"]["cpu_us_per_request"]["server"] / bare_cpu, 2
    )
    results["targets"] = {"ratio": 0.5, "p99_ms_at_1000_per_s": 20, "cpu_per_push_vs_bare": 1.2}
    results["machine"] |= at_end(results["machine"])
    shown = {
        k: results[k]
        for k in (
            "bridge_intake_only",
            "bridge",
            "bare_aiohttp",
            "ratio",
            "ratio_intake_only",
            "cpu_per_push_vs_bare",
            "cpu_per_push_vs_bare_each_turn",
            "cpu_per_push_vs_bare_with_consumer",
            "at_1000_per_s",
        )
    }
    shown["at_1000_per_s"] = {name: row if row.get("valid", True) else f"INVALID: {row['invalid_reason']}"
                              for name, row in shown["at_1000_per_s"].items()}  # fmt: skip
    print(yaml.safe_dump(shown, sort_keys=False))
    if not args.quick:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(results, indent=2) + "\n")
        print(f"wrote {RESULTS}")


def against(commit: str, seconds: int, turns: int, write: bool) -> None:
    """Intake (`--role web`) of this checkout and of ``commit`` (a git worktree of it) beside bare
    aiohttp, in turns in the same run; writes bench/results/ingest-vs-<commit>.json."""
    results: dict[str, Any] = {"machine": machine(), "seconds": seconds, "connections": 64, "tag": INTAKE_TAG}
    with tempfile.TemporaryDirectory() as tmp_name, checkout_beside(commit, Path(tmp_name)) as (base, commits):
        results["commits"] = commits
        results["turns"] = intake_in_turns(Path(tmp_name), seconds, turns, {"head": ROOT, "base": base})
    results["cpu_per_push_vs_bare"] = {side: [row["cpu_per_push_vs_bare"][side] for row in results["turns"]]
                                       for side in ("head", "base")}  # fmt: skip
    results["machine"] |= at_end(results["machine"])
    print(yaml.safe_dump(results["cpu_per_push_vs_bare"], sort_keys=False))
    if write:
        path = RESULTS.with_name(f"ingest-vs-{commit}.json")
        path.write_text(json.dumps(results, indent=2) + "\n")
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
