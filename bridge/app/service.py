"""One running bridge process: HTTP server, Redis, timer worker, configuration reload.

The platform connector, the flows, and every configured destination (``bridge/destinations.py``)
plug in through routes, event and timer handlers and outbox senders; this module only wires the
lifecycle: start in order, stop in reverse, nothing lost on SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import gc
import logging
import os
import shutil
import socket
import urllib.parse
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Any, TypeVar, cast

import aiohttp
import hiredis
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.cluster import ClusterNode, ClusterPipeline, RedisCluster
from redis.asyncio.connection import AbstractConnection
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool, SentinelManagedConnection
from redis.backoff import ExponentialBackoff
from redis.driver_info import DriverInfo
from redis.exceptions import RedisError
from sqlalchemy.exc import SQLAlchemyError

from bridge.app.redis_server import EmbeddedRedis
from bridge.archive.store import Archive, archive_url, migrate, shown_url
from bridge.config import BridgeConfig, ConfigHolder
from bridge.core import Core
from bridge.destinations import STALL_SECONDS, Connector, Inbox, plugins
from bridge.engine import keys
from bridge.engine.backpressure import answer_503_while_redis_is_unavailable
from bridge.engine.clock import Clock, SystemClock
from bridge.engine.cluster import is_cluster
from bridge.engine.endpoint import Endpoint
from bridge.engine.events import FORGET_RETRY_SECONDS, EventConsumer, EventHandler, StoredEvent
from bridge.engine.held import Holding, unwritable
from bridge.engine.ingest import EventLog
from bridge.engine.listen import listen
from bridge.engine.metrics import METRICS
from bridge.engine.outbox import Outbox
from bridge.engine.redact import REDACTOR, secrets_in
from bridge.engine.timers import Handler, Timer, TimerStore, TimerWorker
from bridge.flows.archiving import COPIES_IN_FLIGHT, FORGET_AFTER_ARCHIVE_SECONDS, Archiving
from bridge.flows.chats import ChatFlow
from bridge.flows.resolve import ResolveConversation
from bridge.flows.router import InboundRouter
from bridge.flows.tasks import TaskFlow
from bridge.i18n import catalogue
from connectors.platform.inbound import MAX_PUSH_BYTES, PlatformWebhooks
from connectors.platform.outbound import PlatformSenders

log = logging.getLogger(__name__)

EMBEDDED_REDIS_DIR = Path("var/redis")
STARTUP_CHECK_SECONDS = 10.0
METRICS_REDIS_SECONDS = 1.0


class StartupError(RuntimeError):
    """The bridge cannot start, said in one line an operator can act on (no traceback)."""


def _redis_address(redis: Redis) -> str:
    pool = getattr(redis, "connection_pool", None)
    options = getattr(pool, "connection_kwargs", {}) if pool is not None else {}
    if "host" in options:
        return f"{options['host']}:{options.get('port', 6379)}"
    return "REDIS_URL"


@dataclass
class Bridge:
    holder: ConfigHolder
    redis: Redis
    clock: Clock = field(default_factory=SystemClock)
    timer_handlers: dict[str, Handler] = field(default_factory=dict)
    event_handlers: dict[str, EventHandler] = field(default_factory=dict)
    embedded_redis: EmbeddedRedis | None = None
    archive: Archive = field(default_factory=lambda: Archive(archive_url()))
    """Where chats and task orders are kept for good (``bridge.archive``); Redis holds live work."""

    def __post_init__(self) -> None:
        REDACTOR.add(secrets_in(self.holder.current))
        REDACTOR.install()
        settings = self.holder.current.timers
        self.timers = TimerStore(self.redis, shards=settings.shards, clock=self.clock)
        self.worker = TimerWorker(
            self.timers,
            self.timer_handlers,
            lease_seconds=settings.lease_seconds,
            concurrency=settings.concurrency,
            lanes={"archive": COPIES_IN_FLIGHT},
        )
        # Intake has connections of its own: flow work that fills the main pool (a retry storm while
        # Slack is down) must never make a push wait for a connection, or fail with 503.
        self.intake_redis = _sibling_client(self.redis, INTAKE_CONNECTIONS)
        self.event_log = EventLog(self.intake_redis, self.clock)
        self.holding = Holding(Path(self.holder.current.server.held_dir), self.event_log)
        self.consumer = EventConsumer(self.redis, self.endpoints, self.event_handlers, clock=self.clock)
        retries = self.holder.current.outbox
        self.outbox = Outbox(
            self.redis,
            self.timers,
            clock=self.clock,
            base_delay=retries.retry_base_seconds,
            max_delay=retries.retry_max_seconds,
            finished_grace=retries.finished_grace_seconds,
        )
        self.timer_handlers.setdefault("outbox", self.outbox.handle_timer)
        self.timer_handlers.setdefault("forget", self._forget_thread)
        self._http: aiohttp.ClientSession | None = None
        self._endpoints: list[Endpoint] = []
        self._endpoints_config: BridgeConfig | None = None
        self._endpoints_services: tuple[str, ...] = ()
        platform = PlatformSenders(lambda: self.holder.current, self.http)
        self.outbox.register(platform.senders())

        self.chats = ChatFlow(self.redis, lambda: self.holder.current, self.timers, self.outbox, self.clock)
        self.event_handlers.setdefault("im_platform_message", self.chats.on_platform_message)
        self.event_handlers.setdefault("im_platform_closed", self.chats.on_platform_closed)
        self.timer_handlers.setdefault("window", self.chats.on_window_timer)
        self.outbox.register({}, self.chats.failure_reporters())
        self.tasks = TaskFlow(self.redis, lambda: self.holder.current, self.timers, self.outbox, self.clock,
                              self.archive)  # fmt: skip
        self.event_handlers.setdefault("task_order_created", self.tasks.on_created)
        self.event_handlers.setdefault("task_order_comment", self.tasks.on_comment)
        self.event_handlers.setdefault("task_order_processed", self.tasks.on_processed)
        self.event_handlers.setdefault("task_order_timeout", self.tasks.on_timeout)
        self.timer_handlers.setdefault("deadline", self.tasks.on_deadline_timer)
        self.timer_handlers.setdefault("digest", self.tasks.on_digest_timer)
        self.outbox.register(self.tasks.senders(), self.tasks.failure_reporters())
        self.archiving = Archiving(self.timers, self.clock, self.archive,
                                   {"chat": self.chats.snapshots, "task": self.tasks.snapshots},
                                   {"chat": self.chats.forget_state, "task": self.tasks.forget_state})  # fmt: skip
        self.timer_handlers.setdefault("archive", self.archiving.on_archive_timer)
        # Every configured destination (bridge/destinations.py): its senders, file fetcher and route.
        config = lambda: self.holder.current  # noqa: E731 (read at each use: a reload takes effect)
        self.router = InboundRouter(config, self.redis, self.outbox, self.chats, self.tasks)
        self.resolve = ResolveConversation(self.redis, self.outbox, self.tasks)
        self.timer_handlers.setdefault("resolve", self.resolve.on_expiry_timer)
        self._core = Core(config, self.redis, self.clock, self.outbox, self.http, self.chats, self.tasks,
                          Inbox(self.event_log, self.holding), self.router, self.resolve)  # fmt: skip
        self._platform = platform
        self._serve_webhooks = True
        self._reconnecting: asyncio.Task[bool] | None = None
        self.connectors: dict[str, Connector] = {}
        self._connected_with: dict[str, Any] = {}
        for service in plugins():
            settings = self.holder.current.settings_of(service)
            if settings is not None:
                self._connect(service, settings)

        self.app = web.Application(client_max_size=MAX_PUSH_BYTES)
        self.app.router.add_get("/healthz", self.healthz)
        self.app.router.add_get("/readyz", self.readyz)
        self.app.router.add_get("/metrics", self.metrics)
        PlatformWebhooks(lambda: self.holder.current, self.event_log).add_routes(self.app)
        for service, connector in self.connectors.items():
            for method, path, _ in connector.routes():
                self.app.router.add_route(method, path, self._forward(service, path))
        self._runner: web.AppRunner | None = None
        self._background: list[asyncio.Task[None]] = []
        self._watchers: list[asyncio.Task[None]] = []
        self.port: int | None = None

    async def _forget_thread(self, timer: Timer) -> None:
        _, tag, thread = keys.split_timer_key(timer.key)
        if not await self.consumer.forget(tag, thread):  # an event of it is still being handled
            await self.timers.schedule(timer.key, self.clock.now() + FORGET_RETRY_SECONDS)
        elif not await self.archiving.forget(tag, thread):  # its last change is not archived yet
            await self.timers.schedule(timer.key, self.clock.now() + FORGET_AFTER_ARCHIVE_SECONDS)

    def _connect(self, service: str, settings: Any) -> Connector:
        connector = plugins()[service].connect(settings, self._core)
        self.outbox.register(connector.senders())
        for kind in connector.delivery_handlers():
            self.event_handlers[kind] = self._forward_event(service, kind)
        self._platform.fetchers[service] = connector.fetch_file
        self.connectors[service], self._connected_with[service] = connector, settings
        return connector

    def _forward_event(self, service: str, kind: str) -> EventHandler:
        """A destination's stored deliveries, handled by whichever connector of it is in force."""

        async def forward(event: StoredEvent) -> None:
            connector = self.connectors.get(service)
            handler = connector.delivery_handlers().get(kind) if connector else None
            if handler is None:
                log.warning("%s delivery %s kept: %s is no longer configured", service, event.msg_id, service)
                raise ConnectionError(f"{service} is not configured in this process")  # retried, not lost
            await handler(event)

        return forward

    def _forward(self, service: str, path: str) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        """A destination's route, served by whichever connector of that service is in force."""

        async def forward(request: web.Request) -> web.StreamResponse:
            connector = self.connectors.get(service)
            handler = next((h for _, p, h in connector.routes() if p == path), None) if connector else None
            if handler is None:
                return web.json_response({"error": f"{service} is no longer configured"}, status=404)
            return await answer_503_while_redis_is_unavailable(request, handler)

        return forward

    async def _reconnect_changed(self) -> None:
        """After a reload: a destination whose settings changed (a rotated token or secret) gets a
        new connector, started before the old one stops; no restart needed."""
        for service in plugins():
            settings, before = self.holder.current.settings_of(service), self._connected_with.get(service)
            if settings == before:
                continue
            if before is None:
                log.warning("%s: section added; restart the bridge to take %s webhooks", service, service)
                continue
            old = self.connectors.pop(service)
            self._connected_with.pop(service)
            if settings is not None:
                await self._connect(service, settings).start(self._serve_webhooks)
                log.info("%s: settings changed; reconnected", service)
            else:
                log.warning("%s: section removed; its webhooks now answer 404", service)
            await old.stop()

    def endpoints(self) -> list[Endpoint]:
        """Every endpoint, as one list while the configuration and the connected services stay the
        same (the consumer asks at each step; an operator's file may list thousands of stores)."""
        config, services = self.holder.current, tuple(self.connectors)
        if self._endpoints_config is not config or self._endpoints_services != services:
            self._endpoints = (
                [Endpoint("store", s.id) for s in config.stores]
                + [Endpoint("creator", c.id) for c in config.creators]
                + [Endpoint("destination", service) for service in services]
            )
            self._endpoints_config, self._endpoints_services = config, services
        return self._endpoints

    def http(self) -> aiohttp.ClientSession:
        """The one outbound HTTP session (connection pooling); created on first use."""
        if self._http is None or self._http.closed:
            # aiohttp's default would let a stalled transfer hold its job for five minutes.
            stall = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=STALL_SECONDS)
            self._http = aiohttp.ClientSession(timeout=stall)
        return self._http

    # -- HTTP ----------------------------------------------------------------------------------

    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "alive"})

    def _health_only(self) -> web.Application:
        """A worker's HTTP: health and metrics, no webhooks (the load balancer sends those to web)."""
        app = web.Application()
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/readyz", self.readyz)
        app.router.add_get("/metrics", self.metrics)
        return app

    async def metrics(self, request: web.Request) -> web.Response:
        await self._observe_backlog()
        METRICS.held_on_disk.set(self.holding.held)
        body = generate_latest(METRICS.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _observe_backlog(self) -> None:
        """The gauges read from Redis at scrape time: is it up, how much stored work waits, how late
        the most overdue timer is (an outbox send waiting is a timer). One round trip, bounded."""
        now_ms, endpoints = self.clock.now() * 1000, self.endpoints()
        try:
            async with asyncio.timeout(METRICS_REDIS_SECONDS):
                async with self.redis.pipeline(transaction=False) as pipe:
                    for endpoint in endpoints:
                        pipe.xlen(keys.events(endpoint.tag))
                        pipe.xrange(keys.events(endpoint.tag), count=1)
                    for shard in range(self.timers.shards):
                        for due in keys.timers_due_sets(shard):
                            pipe.zrange(due, 0, 0, withscores=True)
                    found = await pipe.execute()
        except (RedisError, OSError, TimeoutError):
            METRICS.redis_up.set(0)
            return
        METRICS.redis_up.set(1)
        streams, heads = found[: 2 * len(endpoints)], found[2 * len(endpoints) :]
        METRICS.events_backlog.set(sum(streams[0::2]))
        firsts = [int(str(entries[0][0]).split("-")[0]) for entries in streams[1::2] if entries]
        METRICS.events_oldest_seconds.set(max(0.0, (now_ms - min(firsts)) / 1000) if firsts else 0.0)
        dues = [head[0][1] for head in heads if head]
        METRICS.timers_overdue_seconds.set(max(0.0, (now_ms - min(dues)) / 1000) if dues else 0.0)

    async def readyz(self, request: web.Request) -> web.Response:
        body: dict[str, object] = {
            "config_generation": self.holder.generation,
            "stores": len(self.holder.current.stores),
            "creators": len(self.holder.current.creators),
        }
        if self.holder.last_error is not None:
            body["config_reload_refused"] = [str(p) for p in self.holder.last_error.problems]
        if self.holding.held:  # Slack events taken at their last try while Redis was down, not moved in yet
            body["deliveries_held_on_disk"] = self.holding.held
        try:
            await asyncio.wait_for(self.redis.ping(), timeout=1.0)
        except (RedisError, OSError, TimeoutError) as exc:
            body |= {"status": "not ready", "reason": f"Redis does not answer: {exc or 'timeout'}"}
            return web.json_response(body, status=503)
        waiting = {service: reason for service, c in self.connectors.items() if (reason := c.unreachable())}
        if waiting:  # intake works and posts wait in the outbox: ready, but say what is missing
            body["destinations_unreachable"] = waiting
        return web.json_response({"status": "ready", **body})

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(
        self, host: str | None = None, port: int | None = None, run_workers: bool = True, serve_webhooks: bool = True
    ) -> None:
        """Serves HTTP; with ``run_workers`` (the default) also runs the timer worker and the event
        consumer (tests turn them off and drive them in burst mode with an injected clock). Without
        ``serve_webhooks`` only health and metrics are served (a worker process)."""
        settings = self.holder.current.server
        if not serve_webhooks:
            self.app = self._health_only()
        try:
            await asyncio.wait_for(self.redis.ping(), timeout=STARTUP_CHECK_SECONDS)
            # Intake's client serves the webhooks only: a worker process leaves its pool closed.
            for client in (self.redis, self.intake_redis) if serve_webhooks else (self.redis,):
                await asyncio.wait_for(open_connections(client), timeout=STARTUP_CHECK_SECONDS)
        except (RedisError, OSError, TimeoutError) as error:
            reason = str(error) or type(error).__name__
            raise StartupError(f"Redis at {_redis_address(self.redis)} does not answer: {reason} "
                               "(is it running? REDIS_URL names it)") from None  # fmt: skip
        try:  # the schema at its newest before anything is archived
            await asyncio.to_thread(migrate, self.archive.url)
        except (SQLAlchemyError, OSError) as error:
            reason = str(getattr(error, "orig", None) or error).splitlines()[0]
            raise StartupError(f"the archive at {shown_url(self.archive.url)} cannot be used: {reason}") from None
        catalogue()  # read now: otherwise the first chat after a start waits for it
        access_log = logging.getLogger("aiohttp.access") if settings.access_log else None
        bind_host, bind_port = host or settings.host, settings.port if port is None else port
        try:
            self._runner, self.port = await listen(
                self.app,
                bind_host,
                bind_port,
                shutdown_timeout=settings.shutdown_grace_seconds,
                access_log=access_log,
            )
        except OSError as error:
            reason = "the address is in use" if error.errno == errno.EADDRINUSE else (error.strerror or str(error))
            raise StartupError(
                f"cannot listen on {bind_host}:{bind_port}: {reason} (another process has it? "
                "choose another with server.port or --port)"
            ) from None
        if is_cluster(self.redis):  # learn the slots first: pub/sub picks its node from them
            await self.redis.initialize()
        if run_workers:
            self._background = [
                asyncio.create_task(self.worker.run(), name="timer-worker"),
                asyncio.create_task(self.consumer.run(), name="event-consumer"),
            ]
        self._watchers = [asyncio.create_task(self._watch_config(), name="config-watch")]
        if serve_webhooks:  # the processes that may hold deliveries move them, and take over orphaned ones
            self._watchers.append(asyncio.create_task(self.holding.run(), name="held-deliveries"))
            if (why := unwritable(self.holding.directory)) is not None:
                log.warning("server.held_dir: %s; a Slack event that comes for the last time while Redis is down "
                            "cannot be held and is lost (give it a writable volume)", why)  # fmt: skip
        await self.tasks.schedule_digests()
        self._serve_webhooks = serve_webhooks
        for connector in self.connectors.values():
            await connector.start(serve_webhooks)
        log.info("bridge listening on http://%s:%s", host or settings.host, self.port)

    async def drain(self) -> int:
        """Burst mode: handle every stored event and fire every due timer, until nothing is left."""
        total = 0
        while True:
            done = await self.consumer.drain(claim=False) + await self.worker.drain()
            total += done
            if not done:
                return total

    async def stop(self) -> None:
        """Stop taking requests, finish in-flight ones, then stop the timer worker, releasing its
        leases so another replica takes them over at once."""
        grace = self.holder.current.server.shutdown_grace_seconds
        if self._runner is not None:
            await self._runner.cleanup()  # closes the listener, waits for in-flight requests
        self.consumer.stop()
        await self.worker.stop(grace_seconds=grace)
        workers, watchers = self._background, self._watchers
        for task in watchers:
            task.cancel()
        if workers:
            await asyncio.wait(workers, timeout=grace + 2)  # both end by themselves once told to stop
        await asyncio.gather(*watchers, return_exceptions=True)
        for connector in self.connectors.values():
            await connector.stop()
        await self.holding.close()
        await self.archive.close()
        if self._http is not None:
            await self._http.close()
        await close_redis(self.intake_redis)
        await close_redis(self.redis)
        if self.embedded_redis is not None:
            self.embedded_redis.stop()
        log.info("bridge stopped")

    def reload_config(self) -> None:
        """SIGHUP (a signal handler cannot await): ``reload`` at once, in the background."""
        self._reconnecting = asyncio.get_running_loop().create_task(self.reload())

    async def reload(self) -> bool:
        """Reloads the file; on success, destinations whose settings changed are reconnected."""
        reloaded = self.holder.reload()
        if reloaded:
            REDACTOR.add(secrets_in(self.holder.current))
            await self.tasks.schedule_digests()
            await self._reconnect_changed()
        return reloaded

    async def _watch_config(self) -> None:
        while True:
            await asyncio.sleep(self.holder.current.server.config_poll_seconds)
            if self.holder.changed_on_disk():
                await self.reload()


def open_redis(url: str, max_connections: int = 64) -> Redis:
    """A client whose pool waits for a free connection instead of failing under a burst.

    ``redis+sentinel://host:26379,host2:26379/<master name>[?db=0&password=…]`` asks Redis Sentinel
    for the current primary instead, and again after a failover."""
    if url.startswith("redis+sentinel://"):
        return _sentinel_client(url, max_connections)
    if url.startswith("redis+cluster://"):
        return _cluster_client(url, max_connections)
    pool = ShortcutPool.from_url(
        url, max_connections=max_connections, timeout=5, decode_responses=True, retry=reconnecting(),
        driver_info=DRIVER, **(dead_peer_detection() if not url.startswith("unix:") else LOCAL_SOCKET),
    )  # fmt: skip
    pool.connection_class = packing_in_c(pool.connection_class)  # the URL's scheme chose TCP, TLS or Unix
    return Redis.from_pool(pool)  # owns the pool: aclose() closes its connections


class _PackedInC:
    """Commands packed by hiredis's C packer, byte for byte what redis-py's Python one makes.

    redis-py's asyncio connections pack every argument in Python: about 6 µs a command here, and 1.2
    ms for the consumer's read of a thousand stores' streams (it names each), against 1 µs and 0.12
    ms in C. Whatever hiredis does not take (a bool, None, a memoryview) goes to redis-py's packer,
    which refuses it with its own readable error, as does a command name with a space in it
    ("CLIENT SETNAME"), which only redis-py splits into words."""

    def pack_command(self, *args: Any) -> list[bytes]:
        name = args[0]
        if isinstance(name, str) and " " not in name:
            try:
                return [hiredis.pack_command(args)]
            except TypeError:
                pass
        packed: list[bytes] = super().pack_command(*args)  # type: ignore[misc]
        return packed


_PACKED_IN_C: dict[type[AbstractConnection], type[AbstractConnection]] = {}
_Connection = TypeVar("_Connection", bound=AbstractConnection)


def packing_in_c(connection_class: type[_Connection]) -> type[_Connection]:
    """``connection_class`` (TCP, TLS, Unix socket, Sentinel-managed), packing its commands in C."""
    if issubclass(connection_class, _PackedInC):
        return connection_class
    packed = _PACKED_IN_C.setdefault(
        connection_class, type(f"PackedInC{connection_class.__name__}", (_PackedInC, connection_class), {})
    )
    return cast(type[_Connection], packed)


class ShortcutPool(BlockingConnectionPool):
    """redis-py's BlockingConnectionPool, with a shortcut when a connection is free and no task waits.

    For every command redis-py 8's pool takes an ``asyncio.Condition``, starts a timeout and records
    wait-time metrics, then on release takes the condition again and dispatches an event: about 30
    µs of client CPU per command on this project's machine, a third of what one command costs
    (measured in a loop: 87 → 57 µs), and a chat makes about fifty. While a connection is free and
    no task waits for one, it is handed out and taken back directly. The library's own path runs
    whenever anything is unusual: a task waiting (it keeps its turn: nothing takes a connection
    past it), no free connection, a closed connection or one holding unread bytes (dropped and
    connected again), one marked for reconnection, or a maintenance notice being handled. The
    release event it skips serves features the bridge does not use (re-authentication with
    streaming credentials, maintenance notices)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._waiting = 0

    async def get_connection(self, command_name: Any = None, *keys: Any, **options: Any) -> Any:
        if self._available_connections and not self._waiting and not self._in_maintenance:
            connection = self._available_connections.pop()
            try:
                reusable = connection.is_connected and not await connection.can_read()
            except (RedisError, OSError):  # redis-py 8.2 raises for a connection the server closed
                reusable = False
            if reusable:
                self._in_use_connections.add(connection)
                return connection
            # Bytes nobody read are a stale answer, or a maintenance notice (RESP3) that only asks for
            # a reconnection: the library stopped checking while its notices are on (its default),
            # and dropping the connection is right for both, as it is for one the server closed.
            await connection.disconnect()
            self._available_connections.append(connection)
        self._waiting += 1
        try:
            return await super().get_connection()  # type: ignore[no-untyped-call]
        finally:
            self._waiting -= 1

    async def release(self, connection: Any) -> None:
        if self._waiting or self._in_maintenance or connection.should_reconnect():
            await super().release(connection)
            return
        self._in_use_connections.remove(connection)
        self._available_connections.append(connection)


DRIVER = DriverInfo().add_upstream_driver("feige-bridge", package_version("feige-bridge"))
"""What each connection tells Redis it is (CLIENT SETINFO: ``redis-py(feige-bridge_v0.1.0)`` in CLIENT
LIST, from Redis 7.2), worked out once. Left to redis-py, every new connection reads the package metadata again:
about 1 ms each, and a burst opens dozens of connections while the first posts wait."""

DEAD_PEER_SECONDS = 10
"""How long a connection to Redis may go silent (no answer to keepalive probes, or data sent and
never acknowledged) before the kernel breaks it, and the command on it fails and is retried."""


LOCAL_SOCKET: dict[str, Any] = {"socket_timeout": None, "socket_connect_timeout": 5}
"""A Unix socket's peer is on this host: when Redis dies the socket is closed at once, so there is
nothing for keepalive probes to find (and no TCP option applies)."""


def dead_peer_detection() -> dict[str, Any]:
    """Connection options: no timer per command, the kernel watching each connection instead.

    redis-py 8 gives every command a 5 s socket timeout, which costs an ``asyncio.wait_for`` task
    per command sent: about a sixth of the client's CPU per command (measured: 154 → 128 µs).
    Without it a command waits as long as Redis takes, and a peer that vanished without a reset (a
    partition, a dead host) is found by TCP: keepalive probes on an idle connection, and
    TCP_USER_TIMEOUT on one with unacknowledged data, each within DEAD_PEER_SECONDS. Connecting
    stays bounded at 5 s; intake bounds its own write (``EventLog.timeout_seconds``)."""
    probes = 5
    options = {
        getattr(socket, "TCP_KEEPIDLE", None): DEAD_PEER_SECONDS - probes,
        getattr(socket, "TCP_KEEPINTVL", None): 1,
        getattr(socket, "TCP_KEEPCNT", None): probes,
        getattr(socket, "TCP_USER_TIMEOUT", None): DEAD_PEER_SECONDS * 1000,
    }
    return {
        "socket_timeout": None,
        "socket_connect_timeout": 5,
        "socket_keepalive": True,
        "socket_keepalive_options": {name: value for name, value in options.items() if name is not None},
    }


def reconnecting() -> Retry:
    """A command whose connection broke (Redis restarted, failed over, or closed an idle connection)
    is sent again on a new one, a few times within a second: a restart is not a failed step. The
    bridge's steps are resumable, so a command whose answer was lost may run twice safely."""
    return Retry(ExponentialBackoff(cap=0.5, base=0.05), retries=3)


def _addresses(netloc: str, default_port: int) -> list[tuple[str, int]]:
    """``host:port,host2`` → [(host, port), (host2, default_port)]."""
    return [(host, int(port or default_port)) for host, _, port in (a.partition(":") for a in netloc.split(","))]


OPENED_AT_START = 48
"""Connections each Redis client opens as the process starts (at most its pool's size): the first
burst after a start otherwise waits while they are made, each a TCP connect and three round trips
(HELLO, the maintenance-notice handshake, CLIENT SETINFO). A burst of 200 chats into one process
needed 37; more are opened when needed."""


async def open_connections(redis: Redis) -> None:
    """Opens ``OPENED_AT_START`` connections of ``redis``'s pool (a cluster client: to each primary),
    or as many as the pool holds."""
    if isinstance(redis, WaitingCluster):
        await redis.initialize()
        for node in redis.get_primaries():
            connections = [node.acquire_connection() for _ in range(min(OPENED_AT_START, redis.commands_at_once))]
            try:
                await asyncio.gather(*(connection.connect() for connection in connections))
            finally:
                for connection in connections:
                    node.release(connection)
        return
    # Each PING holds its connection until its answer, so as many at once need as many connections.
    count = min(OPENED_AT_START, redis.connection_pool.max_connections)
    await asyncio.gather(*(redis.ping() for _ in range(count)))


PUBSUB_CONNECTIONS = 8
"""Connections a cluster node keeps free of commands: the wake-up listeners' subscriptions."""


class WaitingCluster(RedisCluster):
    """A Redis Cluster client that waits for a free connection when every one is in use, as the
    single-server client's BlockingConnectionPool does. redis-py's cluster client raises
    MaxConnectionsError at once instead, so a burst (the consumer reading hundreds of stores'
    streams at once, the timer worker's handlers) failed its Redis calls: at 400 stores on three
    nodes the consumer never got past its first read. Commands and pipelines in flight are bounded
    below ``max_connections``, so no node is asked for more connections than it has."""

    def __init__(self, *, max_connections: int, **kwargs: Any) -> None:
        super().__init__(max_connections=max_connections, **kwargs)
        self.commands_at_once = max(1, max_connections - PUBSUB_CONNECTIONS)
        self.in_flight = asyncio.Semaphore(self.commands_at_once)
        # The cluster client takes no connection class of its own: the nodes it knows and those it
        # learns of later make their connections from these.
        packed = packing_in_c(self.nodes_manager.connection_kwargs["connection_class"])
        self.nodes_manager.connection_kwargs["connection_class"] = packed
        for node in self.nodes_manager.startup_nodes.values():
            node.connection_class = packed

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        async with self.in_flight:
            return await super().execute_command(*args, **kwargs)

    def pipeline(self, transaction: Any | None = None, shard_hint: Any | None = None) -> ClusterPipeline:
        return _WaitingPipeline(self, transaction)  # type: ignore[abstract]  # as redis-py's own pipeline()


class _WaitingPipeline(ClusterPipeline):
    async def execute(self, raise_on_error: bool = True, allow_redirections: bool = True) -> list[Any]:
        client = cast(WaitingCluster, self.cluster_client)
        async with client.in_flight:
            return await super().execute(raise_on_error, allow_redirections)


def _cluster_client(url: str, max_connections: int) -> Redis:
    """``redis+cluster://host:port[,host:port]``: a Redis Cluster client. Every multi-key command
    and script of the bridge stays inside one hash tag, so it runs on one node."""
    parsed = urllib.parse.urlsplit(url)
    nodes = [ClusterNode(host, port) for host, port in _addresses(parsed.netloc, 6379)]
    query = dict(urllib.parse.parse_qsl(parsed.query))
    client = WaitingCluster(startup_nodes=nodes, decode_responses=True, max_connections=max_connections,
                            password=query.get("password"), driver_info=DRIVER, **dead_peer_detection())  # fmt: skip
    return cast(Redis, client)  # the same commands; where the bridge must differ it asks cluster.is_cluster()


def _sentinel_client(url: str, max_connections: int) -> Redis:
    parsed = urllib.parse.urlsplit(url)
    sentinels = _addresses(parsed.netloc, 26379)
    query = dict(urllib.parse.parse_qsl(parsed.query))
    options: dict[str, Any] = {"decode_responses": True, "max_connections": max_connections,
                               "retry": reconnecting(), "connection_class": packing_in_c(SentinelManagedConnection),
                               "driver_info": DRIVER, **dead_peer_detection()}  # fmt: skip
    if "db" in query:
        options["db"] = int(query["db"])
    if "password" in query:
        options["password"] = query["password"]
    sentinel_auth = {"password": query["sentinel_password"]} if "sentinel_password" in query else {}
    sentinel = Sentinel(sentinels, socket_timeout=2, sentinel_kwargs=sentinel_auth)
    client: Redis = sentinel.master_for(parsed.path.strip("/") or "mymaster", **options)
    return client  # owns its pool, which asks the sentinels for the primary on every new connection


async def close_redis(client: Redis) -> None:
    """Closes a client and, for a Sentinel-managed one, its connections to the sentinels."""
    pool = None if isinstance(client, RedisCluster) else client.connection_pool
    await client.aclose()
    if isinstance(pool, SentinelConnectionPool):
        for sentinel in pool.sentinel_manager.sentinels:
            await sentinel.aclose()


INTAKE_CONNECTIONS = 16


def _sibling_client(redis: Redis, max_connections: int) -> Redis:
    """Another client of the same server (or Sentinel-managed primary, or cluster) with a pool of its own."""
    if isinstance(redis, RedisCluster):
        nodes = [ClusterNode(n.host, n.port) for n in redis.nodes_manager.startup_nodes.values()]
        auth = {k: redis.nodes_manager.connection_kwargs.get(k) for k in ("username", "password")}
        return cast(
            Redis,
            WaitingCluster(startup_nodes=nodes, decode_responses=True, max_connections=max_connections,
                           **auth, **dead_peer_detection()),
        )  # fmt: skip
    pool = redis.connection_pool
    if isinstance(pool, SentinelConnectionPool):
        kwargs = {k: v for k, v in pool.connection_kwargs.items() if k not in ("connection_pool", "host", "port")}
        client: Redis = pool.sentinel_manager.master_for(
            pool.service_name, max_connections=max_connections, connection_class=pool.connection_class, **kwargs
        )
        return client
    sibling = ShortcutPool(
        connection_class=pool.connection_class, max_connections=max_connections, timeout=5, **pool.connection_kwargs
    )
    return Redis.from_pool(sibling)


def connect_redis(
    environ: Mapping[str, str] | None = None, data_dir: Path = EMBEDDED_REDIS_DIR, fresh: bool = False
) -> tuple[Redis, EmbeddedRedis | None]:
    """REDIS_URL when set (a real deployment); otherwise a private redis-server with its data in
    ``data_dir`` (emptied first when ``fresh``)."""
    env = os.environ if environ is None else environ
    url = env.get("REDIS_URL")
    if url:
        return open_redis(url), None
    if fresh and data_dir.exists():
        shutil.rmtree(data_dir)
    embedded = EmbeddedRedis(data_dir).start()
    log.info(
        "no REDIS_URL set: started an embedded redis-server at %s (data in %s)",
        embedded.url,
        EMBEDDED_REDIS_DIR,
    )
    return open_redis(embedded.url), embedded


async def serve_until_signalled(
    bridge: Bridge, host: str | None = None, port: int | None = None, role: str = "all"
) -> None:
    """Runs until SIGTERM/SIGINT. ``role`` splits a deployment: ``web`` processes take the webhooks
    (intake stays fast whatever the flows are doing), ``worker`` processes handle stored events,
    timers and the outbox; ``all`` does both."""
    import signal

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.add_signal_handler(signal.SIGHUP, bridge.reload_config)
    try:
        await bridge.start(host, port, run_workers=role != "web", serve_webhooks=role != "worker")
    except BaseException:
        await bridge.stop()  # the embedded Redis and every connection go with it
        raise
    # What the process built to start (its modules, configuration and clients: most of its objects)
    # lives as long as it does. Frozen, it is left out of every later collection, so a full one
    # scans only what came after: it stopped the process for about 50 ms, once in a while in the
    # middle of a burst, while the first posts waited.
    gc.collect()
    gc.freeze()
    try:
        await stop.wait()
        log.info("signal received: shutting down gracefully")
    finally:
        await bridge.stop()
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(sig)
