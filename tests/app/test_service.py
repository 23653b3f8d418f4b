"""The service: health endpoints, embedded Redis, graceful shutdown, reload without restart."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from importlib.metadata import version
from pathlib import Path
from typing import Any
from unittest import mock

import aiohttp
import hiredis
import pytest
import yaml
from aiohttp import web
from redis.asyncio import Redis
from redis.asyncio.connection import Connection
from redis.exceptions import DataError

from bridge.app.redis_server import EmbeddedRedis, free_port
from bridge.app.service import DEAD_PEER_SECONDS, INTAKE_CONNECTIONS, OPENED_AT_START, Bridge, open_redis
from bridge.config import ConfigHolder
from tests.conftest import Stack

EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "example.yaml"


@pytest.fixture
async def bridge(redis_url: str) -> AsyncIterator[Bridge]:
    b = Bridge(ConfigHolder(EXAMPLE, environ={}), Redis.from_url(redis_url, decode_responses=True))
    await b.start(host="127.0.0.1", port=0)
    yield b
    await b.stop()


async def get(url: str) -> tuple[int, dict[str, object]]:
    async with aiohttp.ClientSession() as http, http.get(url) as resp:
        return resp.status, await resp.json()


async def test_healthz_and_readyz(bridge: Bridge) -> None:
    base = f"http://127.0.0.1:{bridge.port}"
    assert await get(base + "/healthz") == (200, {"status": "alive"})
    status, body = await get(base + "/readyz")
    assert status == 200
    body.pop("destinations_unreachable", None)  # no Telegram emulator runs here; named by its own test
    assert body == {"status": "ready", "config_generation": 1, "stores": 2, "creators": 2}


async def metrics_text(base: str) -> str:
    async with aiohttp.ClientSession() as http, http.get(base + "/metrics") as resp:
        return await resp.text()


async def test_metrics_show_redis_the_backlog_of_events_and_the_most_overdue_timer(stack: Stack) -> None:
    assert stack.clock is not None
    await stack.sandbox.open_chat("1001")  # stored and acknowledged; not handled yet (no drain)
    await stack.bridge.timers.schedule("demo:{store:1001}:late", stack.clock.now() - 42)
    text = await metrics_text(stack.url)
    assert "feige_redis_up 1.0" in text and "feige_events_backlog 1.0" in text
    assert "feige_timers_overdue_seconds 42.0" in text
    await stack.settle()
    assert "feige_events_backlog 0.0" in await metrics_text(stack.url)


async def test_a_started_process_has_its_redis_connections_open_before_the_first_burst(
    redis: Redis, redis_url: str
) -> None:
    """Made during a burst, each connection held up the first posts (a TCP connect and three round
    trips), so a process's first burst was slower than its later ones."""
    before = len(await redis.client_list())
    b = Bridge(ConfigHolder(EXAMPLE, environ={}), open_redis(redis_url))
    await b.start(host="127.0.0.1", port=0, run_workers=False)
    try:
        opened = len(await redis.client_list()) - before
        assert opened == OPENED_AT_START + INTAKE_CONNECTIONS, "the pool's and the intake's, all open"
        assert len(b.redis.connection_pool._available_connections) == OPENED_AT_START, "idle, ready to hand out"
    finally:
        await b.stop()
    worker = Bridge(ConfigHolder(EXAMPLE, environ={}), open_redis(redis_url))
    before = len(await redis.client_list())
    await worker.start(host="127.0.0.1", port=0, run_workers=False, serve_webhooks=False)
    try:
        assert len(await redis.client_list()) - before == OPENED_AT_START, "a worker takes no webhooks: no intake pool"
    finally:
        await worker.stop()


async def test_readyz_names_a_destination_not_reachable_yet_without_its_token(redis_url: str) -> None:
    closed = f"http://127.0.0.1:{free_port()}/bot"
    holder = ConfigHolder(EXAMPLE, environ={"TELEGRAM_API_URL": closed})
    b = Bridge(holder, Redis.from_url(redis_url, decode_responses=True))
    await b.start(host="127.0.0.1", port=0)
    try:
        for _ in range(100):
            status, body = await get(f"http://127.0.0.1:{b.port}/readyz")
            if "destinations_unreachable" in body:
                break
            await asyncio.sleep(0.05)
        assert status == 200 and body["status"] == "ready", "pushes are still stored: ready"
        reason = body["destinations_unreachable"]["telegram"]  # type: ignore[index]
        assert reason.startswith(f"not reachable yet at {closed} (") and "demo-telegram-token" not in reason
    finally:
        await b.stop()


async def test_readyz_is_503_with_the_reason_when_redis_is_gone(tmp_path: Path) -> None:
    server = EmbeddedRedis(tmp_path / "r", appendonly=False).start()
    b = Bridge(ConfigHolder(EXAMPLE, environ={}), Redis.from_url(server.url, decode_responses=True))
    await b.start(host="127.0.0.1", port=0)
    try:
        assert (await get(f"http://127.0.0.1:{b.port}/readyz"))[0] == 200
        server.kill()
        status, body = await get(f"http://127.0.0.1:{b.port}/readyz")
        assert status == 503
        assert body["status"] == "not ready"
        assert str(body["reason"]).startswith("Redis does not answer")
        assert (await get(f"http://127.0.0.1:{b.port}/healthz"))[0] == 200, "alive even when not ready"
        assert "feige_redis_up 0.0" in await metrics_text(f"http://127.0.0.1:{b.port}"), "what an alert fires on"
    finally:
        await b.stop()
        server.stop()


async def test_stop_finishes_in_flight_requests_and_refuses_new_ones(redis_url: str) -> None:
    b = Bridge(ConfigHolder(EXAMPLE, environ={}), Redis.from_url(redis_url, decode_responses=True))

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(0.5)
        return web.Response(text="finished")

    b.app.router.add_get("/slow", slow)
    await b.start(host="127.0.0.1", port=0)
    url = f"http://127.0.0.1:{b.port}"
    async with aiohttp.ClientSession() as http:
        in_flight = asyncio.create_task(http.get(url + "/slow"))
        await asyncio.sleep(0.1)
        await b.stop()
        resp = await in_flight
        assert resp.status == 200 and await resp.text() == "finished"
        with pytest.raises(aiohttp.ClientConnectionError):
            await http.get(url + "/healthz")


async def wait_until_up(url: str, within: float = 30) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            await get(url)
            return
        except aiohttp.ClientError:
            await asyncio.sleep(0.1)
    raise AssertionError(f"{url} never answered")


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server")
async def test_serve_with_embedded_redis_reload_and_sigterm(tmp_path: Path) -> None:
    config = tmp_path / "bridge.yaml"
    config.write_text(EXAMPLE.read_text())
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    env |= {"BRIDGE_PORT": str(port), "PYTHONUNBUFFERED": "1"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bridge", "serve", "--config", str(config), "--demo",
        cwd=tmp_path, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        await wait_until_up(base + "/healthz")
        assert (await get(base + "/readyz"))[0] == 200
        assert (tmp_path / "var" / "redis" / "appendonlydir").is_dir(), "embedded Redis keeps an AOF"

        # A bad change is refused and the old configuration stays in force (SIGHUP).
        tree = yaml.safe_load(EXAMPLE.read_text())
        tree["stores"][0]["reply_window"]["seconds"] = 999
        config.write_text(yaml.safe_dump(tree, allow_unicode=True))
        proc.send_signal(signal.SIGHUP)
        await asyncio.sleep(0.5)
        status, body = await get(base + "/readyz")
        assert status == 200 and body["config_generation"] == 1
        refused = body["config_reload_refused"]
        assert isinstance(refused, list) and any("reply_window.seconds" in p for p in refused)

        # A good change is picked up from the file without a signal.
        tree["stores"][0]["reply_window"]["seconds"] = 90
        config.write_text(yaml.safe_dump(tree, allow_unicode=True))
        deadline = time.monotonic() + 10
        while (await get(base + "/readyz"))[1]["config_generation"] != 2:
            assert time.monotonic() < deadline, "file change not picked up"
            await asyncio.sleep(0.2)
        assert "config_reload_refused" not in (await get(base + "/readyz"))[1]

        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), timeout=20) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    output = (await proc.stdout.read()).decode() if proc.stdout else ""
    assert "configuration NOT reloaded" in output
    assert "bridge stopped" in output
    redis_log = (tmp_path / "var" / "redis" / "redis.log").read_text()
    assert "ready to exit, bye bye" in redis_log.lower(), "embedded Redis was not shut down cleanly"


async def test_web_and_worker_roles_split_the_work(stack: Stack) -> None:
    worker = Bridge(
        ConfigHolder(stack.bridge.holder.path, environ=stack.bridge.holder.environ),
        open_redis(stack_redis_url(stack)),
        clock=stack.bridge.clock,
    )
    await worker.start(host="127.0.0.1", port=0, run_workers=True, serve_webhooks=False)
    try:
        await stack.sandbox.open_chat("1001")  # taken by the web process, which runs no workers
        deadline = time.monotonic() + 10
        while not stack.slack.channel("C0CHATS1001"):
            assert time.monotonic() < deadline, "the worker never handled the stored event"
            await asyncio.sleep(0.05)
        assert worker.consumer.stats.handled == 1 and stack.bridge.consumer.stats.handled == 0
        async with aiohttp.ClientSession() as http:
            async with http.post(f"http://127.0.0.1:{worker.port}/slack/events", data=b"{}") as resp:
                assert resp.status == 404, "a worker serves no webhooks"
            async with http.get(f"http://127.0.0.1:{worker.port}/readyz") as resp:
                assert resp.status == 200
    finally:
        await worker.stop()


def stack_redis_url(stack: Stack) -> str:
    kwargs = stack.bridge.redis.connection_pool.connection_kwargs
    return f"redis://{kwargs['host']}:{kwargs['port']}/{kwargs.get('db', 0)}"


async def test_a_rotated_slack_token_takes_effect_without_a_restart(
    redis: Redis, redis_url: str, tmp_path: Path
) -> None:
    from bridge.engine.clock import ManualClock
    from tests.conftest import start_stack

    path = tmp_path / "config.yaml"
    shutil.copy(EXAMPLE, path)
    stack = await start_stack(redis_url, config_path=path, clock=ManualClock(), run_workers=False)
    try:
        before = stack.bridge.connectors["slack"]
        path.write_text(EXAMPLE.read_text().replace("xoxb-demo-bot-token", "xoxb-rotated-token"))
        stack.slack.bot_token = "xoxb-rotated-token"  # Slack now accepts only the new token
        assert await stack.bridge.reload()
        assert stack.bridge.connectors["slack"] is not before, "a new connector took over"
        assert stack.bridge.connectors["telegram"] is not None
        cid = await stack.sandbox.open_chat("1001", {"type": "text", "text": "换了令牌还能收到吗？"})
        await stack.settle()
        [root] = stack.slack.channel("C0CHATS1001")
        assert "换了令牌还能收到吗？" in str(root.blocks), "posted with the rotated token"
        assignee = str(await stack.redis.hget(f"{{store:1001}}:chat:{cid}", "assignee"))
        user = {"main-1001": "U0MAIN1001", "agent-a": "U0AGENTA", "agent-b": "U0AGENTB"}[assignee]
        reply_ts, status = await stack.slack.user_message(user, "C0CHATS1001", "能", thread_ts=root.ts)
        await stack.settle()
        assert status == 200, "the route is served by the new connector"
        merchant = [m["content"] for m in stack.sandbox.conversations[cid].messages if m["from"] == "merchant"]
        assert merchant == [{"type": "text", "text": "能"}]
        reply = stack.slack.message("C0CHATS1001", reply_ts)
        assert reply.reactions == ["white_check_mark"], "confirmed with the new token too"
    finally:
        await stack.stop()


def _serve(tmp_path: Path, port: int) -> subprocess.Popen[str]:
    """``bridge serve`` as an operator starts it: no REDIS_URL (the embedded Redis), its own folder."""
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    env["ARCHIVE_URL"] = f"sqlite:///{tmp_path / 'archive.sqlite3'}"
    command = [sys.executable, "-m", "bridge", "serve", "--config", str(EXAMPLE), "--port", str(port), "--demo"]
    return subprocess.Popen(command, cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True)


def _processes_in(folder: Path) -> list[int]:
    """Processes working in ``folder``: redis-server changes into its --dir (and rewrites its command
    line, so that cannot be searched)."""
    found = []
    for entry in Path("/proc").iterdir():
        with contextlib.suppress(OSError):
            if entry.name.isdigit() and (entry / "cwd").resolve() == folder.resolve():
                found.append(int(entry.name))
    return found


def _gone(pids: list[int], within: float = 10.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if not any(Path(f"/proc/{pid}").exists() and "Z" not in _state(pid) for pid in pids):
            return True
        time.sleep(0.05)
    return False


def _state(pid: int) -> str:
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][:1]
    return ""


def test_a_taken_port_is_one_clear_line_and_leaves_no_redis_behind(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = _serve(tmp_path, port)
        _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert f"bridge: cannot listen on 127.0.0.1:{port}: the address is in use" in stderr
    assert "Traceback" not in stderr
    assert _gone(_processes_in(tmp_path / "var" / "redis")), "the embedded redis-server was stopped"


def test_an_unreachable_redis_is_one_clear_line(tmp_path: Path) -> None:
    env = dict(os.environ, REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")
    env["ARCHIVE_URL"] = f"sqlite:///{tmp_path / 'archive.sqlite3'}"
    command = [sys.executable, "-m", "bridge", "serve", "--config", str(EXAMPLE), "--port", str(free_port()), "--demo"]
    proc = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "bridge: Redis at 127.0.0.1:" in proc.stderr and "does not answer" in proc.stderr


def test_the_embedded_redis_ends_with_its_bridge_even_after_sigkill(tmp_path: Path) -> None:
    port = free_port()
    proc = _serve(tmp_path, port)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
                break
            time.sleep(0.05)
        redis_servers = _processes_in(tmp_path / "var" / "redis")
        assert redis_servers, "an embedded redis-server runs beside the bridge"
    finally:
        proc.kill()  # SIGKILL: no shutdown code of the bridge runs
        proc.communicate()
    assert _gone(redis_servers), "the kernel ended the redis-server with its parent"


def test_serve_refuses_the_examples_demo_values_without_demo(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "TELEGRAM_", "STORE_", "CREATOR_"))}
    env["SLACK_BOT_TOKEN"] = ""  # set but empty: an error, never a fallback to the demo token
    command = [sys.executable, "-m", "bridge", "serve", "--config", str(EXAMPLE), "--port", str(free_port())]
    proc = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "slack.bot_token: environment variable SLACK_BOT_TOKEN is set but empty" in proc.stderr
    env.pop("SLACK_BOT_TOKEN")
    proc = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert "slack.signing_secret: SLACK_SIGNING_SECRET is not set, so the example's demo value is used" in proc.stderr
    assert "bridge: refusing to serve on demo values: set CREATOR_7001_API_TOKEN," in proc.stderr
    assert not (tmp_path / "var").exists(), "refused before anything started"


async def test_redis_connections_are_watched_by_the_kernel_not_by_a_timer_per_command(redis_url: str) -> None:
    """No per-command socket timeout (its wait_for task per command cost a sixth of the client's
    CPU); a silent Redis is found by TCP keepalive and TCP_USER_TIMEOUT on the real socket."""
    client = open_redis(redis_url)
    try:
        assert await client.ping()
        connection = await client.connection_pool.get_connection()  # type: ignore[no-untyped-call]
        try:
            sock = connection._writer.get_extra_info("socket")
            assert connection.socket_timeout is None
            assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == DEAD_PEER_SECONDS - 5
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT) == 5
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT) == DEAD_PEER_SECONDS * 1000
        finally:
            await client.connection_pool.release(connection)
    finally:
        await client.aclose()


async def test_redis_on_this_host_can_be_reached_by_its_unix_socket(tmp_path: Path) -> None:
    """REDIS_URL=unix://…: the TCP-only options (keepalive probes, TCP_USER_TIMEOUT) are not applied
    to a Unix socket, which once made every command fail."""
    sock = tmp_path / "redis.sock"
    with EmbeddedRedis(tmp_path / "redis", extra_args=["--unixsocket", str(sock), "--unixsocketperm", "700"]):
        client = open_redis(f"unix://{sock}?db=0")
        try:
            await client.set("reached", "by its socket")
            assert await client.get("reached") == "by its socket"
            connection = await client.connection_pool.get_connection()  # type: ignore[no-untyped-call]
            try:
                assert connection._writer.get_extra_info("socket").family == socket.AF_UNIX
            finally:
                await client.connection_pool.release(connection)
        finally:
            await client.aclose()


async def test_commands_packed_in_c_are_the_same_bytes_and_bad_arguments_are_still_refused_readably(
    redis_url: str,
) -> None:
    """The connections pack commands with hiredis (C) instead of redis-py's Python packer: the same
    bytes for every kind of argument the bridge sends, the same values back, and what hiredis
    does not take (a bool, None) refused with redis-py's own error naming it."""
    client = open_redis(redis_url)
    try:
        connection = await client.connection_pool.get_connection()  # type: ignore[no-untyped-call]
        await client.connection_pool.release(connection)
        python_packer = Connection()
        streams = [f"{{store:{i}}}:events" for i in range(500)]
        cases: list[tuple[str | int | float | bytes, ...]] = [
            ("SET", "飞鸽:key", 1796252483.7543526),
            ("EVALSHA", "ab" * 20, 2, "k1", "k2", -5, 10**20, b"\xff"),
            ("XREADGROUP", "GROUP", "g", "c", "STREAMS", *streams, *[">"] * len(streams)),
        ]
        for args in cases:
            assert b"".join(connection.pack_command(*args)) == b"".join(python_packer.pack_command(*args))
        with mock.patch.object(hiredis, "pack_command", wraps=hiredis.pack_command) as packer:
            assert await client.set("text", "在的 ✅") and await client.get("text") == "在的 ✅"
        assert packer.call_count == 2, "both commands were packed in C"
        assert await client.set("when", 1796252483.7543526) and await client.get("when") == "1796252483.7543526"
        assert await client.client_setname("packed") and await client.client_getname() == "packed"  # "CLIENT SETNAME"
        for bad in (True, None):
            with pytest.raises(DataError, match=f"Invalid input of type: '{type(bad).__name__}'"):
                await client.set("bad", bad)  # type: ignore[arg-type]
    finally:
        await client.aclose()


async def test_each_connection_names_the_bridge_to_redis_without_reading_package_metadata_again(
    redis_url: str,
) -> None:
    """Each connection tells Redis what it is (CLIENT SETINFO, in CLIENT LIST from Redis 7.2):
    redis-py, used by feige-bridge, and which version of each. The description is worked out once,
    not from the installed packages' metadata for every new connection (a burst opens dozens)."""
    client = open_redis(redis_url)
    try:
        with mock.patch("redis.utils.metadata.version", side_effect=AssertionError("metadata read")) as lookup:
            await asyncio.gather(*(client.blpop([f"named:{i}"], timeout=0.1) for i in range(5)))  # five connections
        assert lookup.call_count == 0
        pool = client.connection_pool
        connections = [*pool._available_connections, *pool._in_use_connections]
        assert len(connections) == 5
        for connection in connections:
            assert connection.driver_info is not None
            assert connection.driver_info.formatted_name == f"redis-py(feige-bridge_v{version('feige-bridge')})"
            assert connection.driver_info.lib_version == version("redis")
    finally:
        await client.aclose()


async def test_the_pool_shortcut_keeps_the_bound_and_gives_each_command_its_own_answer(redis_url: str) -> None:
    """The pool's shortcut (a free connection handed out directly) still bounds the connections:
    twelve blocking reads through three connections queue for them, and every answer is the
    caller's own, under concurrency too."""
    client, pusher = open_redis(redis_url, max_connections=3), Redis.from_url(redis_url, decode_responses=True)
    try:
        reads = [asyncio.ensure_future(client.blpop([f"shortcut:{i}"], timeout=10)) for i in range(12)]
        await asyncio.sleep(0.05)  # the first three hold every connection; the rest wait for one
        before = int((await pusher.info("clients"))["connected_clients"])
        for i in range(12):
            await pusher.rpush(f"shortcut:{i}", f"item {i}")
        assert await asyncio.gather(*reads) == [(f"shortcut:{i}", f"item {i}") for i in range(12)]
        assert before == 1 + 3, "the pusher and three pooled connections, never more"
        pool = client.connection_pool
        assert len(pool._available_connections) + len(pool._in_use_connections) <= 3

        async def set_and_get(i: int) -> Any:
            await client.set(f"shortcut:v{i}", f"value {i}")
            return await client.get(f"shortcut:v{i}")

        assert await asyncio.gather(*(set_and_get(i) for i in range(200))) == [f"value {i}" for i in range(200)]
    finally:
        await client.aclose()
        await pusher.aclose()


async def test_the_pool_shortcut_never_hands_out_a_connection_with_an_unread_answer(redis_url: str) -> None:
    """A connection given back with an answer still unread (or closed) is not taken by the shortcut:
    the library's path reconnects it, so the next command does not read the stale answer."""
    client = open_redis(redis_url, max_connections=1)
    try:
        await client.set("shortcut:k", "its value")
        connection = await client.connection_pool.get_connection()  # type: ignore[no-untyped-call]
        await connection.send_command("PING")
        await asyncio.sleep(0.05)  # the PONG arrives in the connection's buffer, unread
        await client.connection_pool.release(connection)
        assert await client.get("shortcut:k") == "its value"
        connection = await client.connection_pool.get_connection()  # type: ignore[no-untyped-call]
        await connection.disconnect()
        await client.connection_pool.release(connection)
        assert await client.get("shortcut:k") == "its value"
    finally:
        await client.aclose()
