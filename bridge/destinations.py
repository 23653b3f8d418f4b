"""The destination interface: what a chat tool (Slack, Telegram, later Lark/Feishu, DingTalk …)
implements to carry both flows. The core never names one.

A destination is one package under ``connectors/`` whose ``__init__`` exposes ``DESTINATION``, a
``DestinationPlugin``: the service name (the prefix of ``<service>:<target>`` destinations and the
name of its top-level configuration section), the pydantic model of that section, and how to
connect it to the core. The packages are found when the configuration is first read; adding a
destination adds a package and changes nothing in ``bridge/`` or ``rules/``.

What the core gives a connector is ``Core``. What a connector gives back is ``Connector``:
outbox senders for ``<service>.post``, ``.update_root``, ``.ephemeral``, ``.react`` (the views the
flows put in the outbox), an HTTP route for the service's events, and a file fetcher for media
people attach.
"""

from __future__ import annotations

import importlib
import pkgutil
import zlib
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any, Protocol

from bridge.engine.endpoint import Endpoint
from bridge.engine.ingest import EventLog, IncomingRecord

if TYPE_CHECKING:
    import aiohttp
    from aiohttp import web
    from pydantic import BaseModel
    from redis.asyncio import Redis

    from bridge.config import BridgeConfig, Problem
    from bridge.engine.clock import Clock
    from bridge.engine.events import EventHandler
    from bridge.engine.outbox import Outbox, Sender
    from bridge.flows.chats import ChatFlow
    from bridge.flows.tasks import TaskFlow


Route = tuple[str, str, "Callable[[web.Request], Awaitable[web.StreamResponse]]"]
"""(HTTP method, path, handler)."""


class Connector(Protocol):
    def routes(self) -> list[Route]:
        """The service's inbound route(s) (``/slack/events``, ``/telegram/webhook``): verify the
        service's signature, deduplicate deliveries, turn what people did into flow calls. The
        bridge forwards each path to the connector in force, so a new one can take over."""

    def senders(self) -> dict[str, Sender]:
        """Outbox senders, one per job kind ``<service>.<action>``; raise ``RetryLater`` or
        ``FinalFailure``."""

    def delivery_handlers(self) -> dict[str, EventHandler]:
        """Handlers of the deliveries it stored with ``Core.inbox`` (by kind, ``<service>.<what>``),
        run by the event consumer with its ordering and retries."""

    async def fetch_file(self, ref: str) -> bytes:
        """Downloads a file a person attached (the platform sender uploads it to ``/media``)."""

    async def start(self, serve_webhooks: bool) -> None:
        """Connects, in the background if the service may be unreachable: the bridge must start.
        Also called for a connector built anew because its settings changed (credentials rotated)."""

    async def ready(self) -> None:
        """Returns once the service answered (tests and the demo wait on it)."""

    async def stop(self) -> None: ...


@dataclass(frozen=True)
class Inbox:
    """Durable intake for what a destination delivers (Slack events, Telegram updates), as for the
    platform's pushes: deduplicated by the service's delivery id and stored in one atomic step
    before the service is answered, then handled by the event consumer (in order per ``thread``,
    retried). A Redis that cannot take it raises ``StorageUnavailable``: answer 503."""

    event_log: EventLog

    async def accept(self, service: str, delivery_id: str, thread: str, kind: str, raw: str) -> bool:
        """Stores one delivery; False when it was stored before (a redelivery)."""
        record = IncomingRecord(kind, delivery_id, thread, raw)
        return bool(await self.event_log.store(Endpoint("destination", service), [record]))


DELIVERED_AT: ContextVar[float | None] = ContextVar("delivered_at", default=None)
"""While a stored delivery is handled: when the bridge received it. What a person did is judged by
that moment, not by when the consumer got to it (a reply written in time stays in time, however
long a backlog or a dead process kept it waiting)."""


def inbox_thread(*parts: str | int | None, buckets: int = 64) -> str:
    """An ordering key for a destination's deliveries: the first part (a channel, a chat) plus one of
    ``buckets`` spreads of the rest (the conversation thread in it). Deliveries of one conversation
    thread keep their order; different threads of a channel run side by side; and the ordering
    state stays bounded by channels × buckets, however many threads people open."""
    first, *rest = (str(p) for p in parts if p is not None)
    return f"{first}:{zlib.crc32(':'.join(rest).encode()) % buckets}" if rest else first


@dataclass(frozen=True)
class Core:
    """What the core offers a destination connector."""

    config: Callable[[], BridgeConfig]
    redis: Redis
    clock: Clock
    outbox: Outbox
    http: Callable[[], aiohttp.ClientSession]
    chats: ChatFlow
    tasks: TaskFlow
    inbox: Inbox


@dataclass(frozen=True)
class DestinationPlugin:
    service: str
    """``slack`` in ``slack:C0CHATS``; also the name of the configuration section."""
    settings: type[BaseModel]
    connect: Callable[[Any, Core], Connector]
    """Builds the connector from its validated settings section."""
    target: str
    """How a target is written, for error messages: ``<channel id>``."""
    probe: Callable[[Any, BridgeConfig], Awaitable[list[Problem]]] | None = None
    """``bridge check --online``: asks the service whether the credentials work and every target
    of the configuration is reachable and usable (the bot is in the channel, may open topics …)."""


def targets(config: BridgeConfig, service: str) -> list[tuple[str, str]]:
    """Every (path in the file, target) of the configuration on ``service``, for probes."""
    found = []
    for i, store in enumerate(config.stores):
        for name in ("platform_chats", "task_orders"):
            service_of, _, target = getattr(store.destinations, name).partition(":")
            if service_of == service:
                found.append((f"stores[{i}].destinations.{name}", target))
    for i, creator in enumerate(config.creators):
        service_of, _, target = creator.destination.partition(":")
        if service_of == service:
            found.append((f"creators[{i}].destination", target))
    return found


@cache
def plugins() -> dict[str, DestinationPlugin]:
    """Every destination package under ``connectors/``, by service name."""
    import connectors

    found: dict[str, DestinationPlugin] = {}
    for module in pkgutil.iter_modules(connectors.__path__):
        if not module.ispkg:
            continue
        plugin = getattr(importlib.import_module(f"connectors.{module.name}"), "DESTINATION", None)
        if isinstance(plugin, DestinationPlugin):
            found[plugin.service] = plugin
    return found
