"""Redis Sentinel (PRODUCT C5): the bridge finds the primary through Sentinel and, after a
failover, goes on with the promoted replica — no restart, nothing stored before it lost."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis as sync_redis

from bridge.app.redis_server import EmbeddedRedis, free_port
from bridge.engine.clock import ManualClock
from tests.conftest import start_stack

CHATS = "C0CHATS1001"


class Cluster:
    def __init__(self, primary: EmbeddedRedis, replica: EmbeddedRedis, sentinel_port: int) -> None:
        self.primary, self.replica, self.sentinel_port = primary, replica, sentinel_port

    @property
    def url(self) -> str:
        return f"redis+sentinel://127.0.0.1:{self.sentinel_port}/feige"

    def primary_port(self) -> int:
        with sync_redis.Redis(port=self.sentinel_port, decode_responses=True) as s:
            return int(s.sentinel_get_master_addr_by_name("feige")[1])


def _wait(probe, seconds: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if probe():
                return
        except sync_redis.RedisError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"waited {seconds} s for {what}")


@pytest.fixture
def sentinel(tmp_path: Path) -> Iterator[Cluster]:
    primary = EmbeddedRedis(tmp_path / "primary", appendonly=False).start()
    replica = EmbeddedRedis(
        tmp_path / "replica", appendonly=False, extra_args=["--replicaof", "127.0.0.1", str(primary.port)]
    ).start()
    port = free_port()
    conf = tmp_path / "sentinel.conf"
    conf.write_text(
        f"port {port}\nbind 127.0.0.1\ndir {tmp_path}\n"
        f"sentinel monitor feige 127.0.0.1 {primary.port} 1\n"
        "sentinel down-after-milliseconds feige 500\nsentinel failover-timeout feige 3000\n"
    )
    binary = shutil.which("redis-server")
    assert binary is not None
    process = subprocess.Popen([binary, str(conf), "--sentinel"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    cluster = Cluster(primary, replica, port)
    try:
        with sync_redis.Redis(port=replica.port, decode_responses=True) as r:
            _wait(lambda: r.info("replication")["master_link_status"] == "up", 10, "the replica to sync")
        with sync_redis.Redis(port=port, decode_responses=True) as s:
            _wait(lambda: len(s.sentinel_slaves("feige")) == 1, 15, "Sentinel to see the replica")
        yield cluster
    finally:
        process.terminate()
        process.wait(10)
        replica.stop()
        primary.stop()


async def test_the_bridge_follows_a_failover(sentinel: Cluster) -> None:
    stack = await start_stack(sentinel.url, clock=ManualClock(), run_workers=False)
    try:
        first = await stack.sandbox.open_chat("1001", {"type": "text", "text": "故障切换前"})
        await stack.settle()
        assert "故障切换前" in str(stack.slack.channel(CHATS)[-1].blocks)
        with sync_redis.Redis(port=sentinel.primary.port) as p:
            p.wait(1, 2000)  # the replica has everything so far (replication is asynchronous)
        sentinel.primary.kill()
        await asyncio.to_thread(_wait, lambda: sentinel.primary_port() == sentinel.replica.port, 30, "the failover")
        second = await stack.sandbox.open_chat("1001", {"type": "text", "text": "故障切换后"})
        for _ in range(50):  # the platform redelivers a push answered 503 while connections were renewed
            await stack.settle()
            if second in stack.sandbox.conversations and any(
                "故障切换后" in str(m.blocks) for m in stack.slack.channel(CHATS)
            ):
                break
            await asyncio.sleep(0.1)
        assert "故障切换后" in str(stack.slack.channel(CHATS)[-1].blocks), "handled on the promoted replica"
        assert await stack.redis.hget(f"{{store:1001}}:chat:{first}", "status") == "open", "state from before kept"
        assert (await stack.redis.info("server"))["tcp_port"] == sentinel.replica.port, "talking to the new primary"
    finally:
        await stack.stop()
