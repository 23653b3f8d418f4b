from __future__ import annotations

import asyncio
import inspect
import os
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml
from redis.asyncio import Redis
from slack_bolt.middleware.authorization.async_single_team_authorization import AsyncSingleTeamAuthorization

# python-telegram-bot 22: durations as timedelta now, as they will be by default (no deprecation).
os.environ.setdefault("PTB_TIMEDELTA", "1")

from bridge.app.redis_server import EmbeddedRedis
from bridge.app.service import Bridge, open_redis
from bridge.archive.store import Archive
from bridge.config import ConfigHolder
from bridge.engine import keys
from bridge.engine.clock import ManualClock
from bridge.sandbox.platform import PlatformSandbox
from bridge.sandbox.postgres_server import EmbeddedPostgres
from bridge.sandbox.slack import SlackEmulator
from bridge.sandbox.telegram import TelegramEmulator


async def until(condition: Callable[[], bool | Awaitable[bool]], what: str, within: float = 5.0) -> None:
    """Waits, in real time (other tasks are at work), until ``condition`` (plain or awaitable)
    holds; fails naming ``what`` when it has not within ``within`` seconds."""
    deadline = time.monotonic() + within
    while True:
        met = condition()
        if await met if inspect.isawaitable(met) else met:
            return
        if time.monotonic() >= deadline:
            raise AssertionError(f"not within {within} s: {what}")
        await asyncio.sleep(0.01)


async def stored_fields(redis: Redis, stream: str) -> list[dict[str, str]]:
    """The fields of every entry of an event stream, oldest first."""
    return [{str(k): str(v) for k, v in (fields or {}).items()} for _, fields in await redis.xrange(stream) or []]


async def hash_number(redis: Redis, key: str, field: str) -> float:
    """A number the bridge keeps in a Redis hash (a deadline, the start of a window)."""
    value = await redis.hget(key, field)
    assert value is not None, f"{key} has no {field}"
    return float(value)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    """One real redis-server for the session, on a free port; each test gets it flushed."""
    with EmbeddedRedis(tmp_path_factory.mktemp("redis"), appendonly=False) as server:
        yield server


@pytest.fixture
async def redis(redis_server: EmbeddedRedis) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_server.url, decode_responses=True)
    await client.flushall()
    yield client
    await client.aclose()


@pytest.fixture
def redis_url(redis_server: EmbeddedRedis) -> str:
    return redis_server.url


@pytest.fixture(autouse=True)
def _archive_in_the_tests_folder(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A bridge made without an archive of its own uses ARCHIVE_URL: never the checkout's var/."""
    monkeypatch.setenv("ARCHIVE_URL", f"sqlite:///{tmp_path / 'default-archive.sqlite3'}")


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[EmbeddedPostgres]:
    """One real PostgreSQL server for the session (Debian's postgresql), on a free port."""
    with EmbeddedPostgres() as server:
        yield server


@pytest.fixture(params=["sqlite", "postgresql"])
def archive_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty archive on each back end: a SQLite file in the test's folder, or a new database on
    the session's PostgreSQL server."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'archive.sqlite3'}"
    server: EmbeddedPostgres = request.getfixturevalue("postgres_server")
    return server.new_database()


@pytest.fixture
def repo_root() -> Path:
    return Path(__file__).resolve().parent.parent


EXAMPLE_CONFIG = Path(__file__).resolve().parent.parent / "config" / "example.yaml"


class Stack:
    """The bridge, the platform sandbox and the Slack and Telegram emulators, wired together over
    loopback HTTP."""

    def __init__(
        self,
        bridge: Bridge,
        sandbox: PlatformSandbox,
        slack: SlackEmulator,
        telegram: TelegramEmulator,
        clock: ManualClock | None,
    ) -> None:
        self.bridge = bridge
        self.sandbox = sandbox
        self.slack = slack
        self.telegram = telegram
        self.clock = clock
        self.url = f"http://127.0.0.1:{bridge.port}"

    @property
    def redis(self) -> Redis:
        return self.bridge.redis

    async def stop(self) -> None:
        await self.bridge.stop()
        await self.sandbox.stop()
        await self.slack.stop()
        await self.telegram.stop()

    def merchant_texts(self, cid: str) -> list[str]:
        """What the store answered in chat ``cid``, as the platform received it."""
        return [m["content"]["text"] for m in self.sandbox.conversations[cid].messages if m["from"] == "merchant"]

    async def chat_a_second_before_its_deadline(self, store: str = "1001") -> tuple[str, str, float]:
        """A chat opened in ``store``'s Slack channel (the platform's own window 180 s, the longest
        it gives) and the clock moved to one second before the bridge's deadline: the chat, its
        thread's ts and the deadline."""
        assert self.clock is not None
        cid = await self.sandbox.open_chat(store)
        self.sandbox.conversations[cid].window_seconds = 180
        await self.settle()
        configured = self.bridge.holder.current.store(store)
        assert configured is not None
        root = self.slack.channel(configured.destinations.platform_chats.removeprefix("slack:"))[-1]
        deadline = await hash_number(self.redis, keys.chat(keys.store_tag(store), cid), "deadline")
        await self.advance_to(deadline - 1)
        return cid, root.ts, deadline

    async def settle(self, horizon: float = 5.0) -> None:
        """Runs the bridge until nothing is left to do within ``horizon`` seconds of (manual) time:
        handles stored events, fires due timers, and moves the clock to the next short wait (a
        rate-limit spacing, a retry) — never across a reply-window step further away."""
        assert self.clock is not None
        for _ in range(500):
            await self.bridge.drain()
            due = await self.next_due()
            if due is None or due > self.clock.now() + horizon:
                return
            if due > self.clock.now():
                self.clock.set(due)
        raise AssertionError("the bridge never settled")

    async def slash_command(self, user: str, channel: str, command: str, text: str = "") -> str:
        """Runs a Slack slash command as a person would: it is acknowledged at once with nothing to
        show, and its answer arrives later through the command's response_url."""
        before = len(self.slack.responses)
        status, ack = await self.slack.slash_command(user, channel, command, text)
        assert (status, ack) == (200, ""), (status, ack)
        await self.settle()
        [answer] = self.slack.responses[before:]
        assert answer["user"] == user and answer["response_type"] == "ephemeral", answer
        return str(answer["text"])

    async def next_due(self) -> float | None:
        """The next moment the bridge has something to do: a timer, or a parked event's retry."""
        heads = [await self.redis.zrange(due, 0, 0, withscores=True) for due in keys.timers_due_sets(0)]
        moments = [float(found[0][1]) / 1000 for found in heads if found]
        retry = self.bridge.consumer.next_retry_at()
        if retry is not None:
            moments.append(retry)
        return min(moments, default=None)

    async def advance(self, seconds: float) -> None:
        """Moves time forward, stopping at every timer on the way, as a live bridge would."""
        assert self.clock is not None
        await self.advance_to(self.clock.now() + seconds)

    async def advance_to(self, target: float) -> None:
        assert self.clock is not None
        while True:
            await self.bridge.drain()
            due = await self.next_due()
            if due is None or due > target:
                break
            self.clock.set(max(due, self.clock.now()))
        self.clock.set(target)
        await self.settle(horizon=0)


async def start_stack(
    redis_url: str,
    config_path: Path = EXAMPLE_CONFIG,
    clock: ManualClock | None = None,
    run_workers: bool = True,
    archive_url: str | None = None,
) -> Stack:
    sandbox_holder = ConfigHolder(config_path, environ={})
    sandbox = PlatformSandbox(sandbox_holder.current, "http://127.0.0.1:1", clock=clock, push_retry_seconds=0.01)
    sandbox_url = await sandbox.start()
    slack_settings = sandbox_holder.current.settings_of("slack")
    assert slack_settings is not None
    app_token = slack_settings.app_token if slack_settings.socket_mode else None
    slack = SlackEmulator(slack_settings.signing_secret, slack_settings.bot_token, clock=clock, app_token=app_token)
    await slack.start()
    tg_settings = sandbox_holder.current.settings_of("telegram")
    assert tg_settings is not None
    telegram = TelegramEmulator(tg_settings.bot_token, tg_settings.webhook_secret, clock=clock)
    await telegram.start()
    environ = {
        "PLATFORM_API_URL": sandbox_url,
        "SLACK_API_URL": slack.api_url,
        "TELEGRAM_API_URL": telegram.api_url,
        "TELEGRAM_FILE_URL": telegram.file_url,
        "BRIDGE_HELD_DIR": tempfile.mkdtemp(prefix="feige-held-"),  # a stack's own: never another's Redis
    }
    holder = ConfigHolder(config_path, environ=environ)
    kwargs = {"clock": clock} if clock is not None else {}
    archive = Archive(archive_url or f"sqlite:///{tempfile.mkdtemp(prefix='feige-archive-')}/archive.sqlite3")
    bridge = Bridge(holder, open_redis(redis_url), archive=archive, **kwargs)  # type: ignore[arg-type]
    await bridge.start(host="127.0.0.1", port=0, run_workers=run_workers)
    sandbox.bridge_url = slack.bridge_url = telegram.bridge_url = f"http://127.0.0.1:{bridge.port}"
    for connector in bridge.connectors.values():
        await connector.ready()
    return Stack(bridge, sandbox, slack, telegram, clock)


@asynccontextmanager
async def stack_changed(
    redis_url: str, tmp_path: Path, change: Callable[[dict[str, Any]], object]
) -> AsyncIterator[Stack]:
    """A stack as the ``stack`` fixture's, on the example config as ``change`` leaves it (a store in
    English, another escalation …). Its test takes the ``redis`` fixture too, for an empty Redis."""
    tree = yaml.safe_load(EXAMPLE_CONFIG.read_text())
    change(tree)
    path = tmp_path / "changed.yaml"
    path.write_text(yaml.safe_dump(tree, allow_unicode=True))
    s = await start_stack(redis_url, path, clock=ManualClock(), run_workers=False)
    try:
        yield s
    finally:
        await s.stop()


@pytest.fixture
async def stack(redis: Redis, redis_url: str) -> AsyncIterator[Stack]:
    """Bridge + sandbox with a manual clock; background workers off, tests drive them (burst mode)."""
    s = await start_stack(redis_url, clock=ManualClock(), run_workers=False)
    yield s
    await s.stop()


def forget_slack_authorization(stack: Stack) -> None:
    """As in a process that has not yet asked Slack who it is (bolt asks once, at the first event)."""
    app = stack.bridge.connectors["slack"].app  # type: ignore[attr-defined]
    for middleware in app._async_middleware_list:
        if isinstance(middleware, AsyncSingleTeamAuthorization):
            middleware.auth_test_result = None
