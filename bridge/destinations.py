"""The destination interface: what a chat tool (Slack, Telegram, later Lark/Feishu, DingTalk …)
implements to carry both flows. The core never names one.

A destination is one package under ``connectors/`` that exposes a ``DestinationPlugin`` under the
entry-point group ``feige_bridge.destinations`` (``pyproject.toml``): the service name (the prefix
of ``<service>:<target>`` destinations and the name of its top-level configuration section), the
pydantic model of that section, and how to connect it to the core. The plugins are found when the
configuration is first read; adding a destination adds a package and an entry point, and changes
nothing in ``bridge/`` or ``rules/``.

What the core gives a connector is ``bridge.core.Core``. What a connector gives back is ``Connector``:
outbox senders for ``<service>.post``, ``.update_root``, ``.ephemeral``, ``.react`` (the views the
flows put in the outbox), an HTTP route for the service's events, and a file fetcher for media
people attach.
"""

from __future__ import annotations

import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import cache
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any, Protocol

from bridge.engine.endpoint import Endpoint
from bridge.engine.held import Holding
from bridge.engine.ingest import EventLog, IncomingRecord, StorageUnavailable

if TYPE_CHECKING:
    from aiohttp import web
    from pydantic import BaseModel

    from bridge.engine.events import EventHandler
    from bridge.engine.outbox import Sender


Route = tuple[str, str, "Callable[[web.Request], Awaitable[web.StreamResponse]]"]
"""(HTTP method, path, handler)."""

SNIFF_TIMEOUT_SECONDS = 3.0
"""The longest a connector waits for the first bytes of a shared file (to tell its type). That read
happens while an event is handled, and the handler holds its thread's lock (``LOCK_SECONDS``): a
file server that stalls is taken as unreachable, and the event is tried again later."""

STALL_SECONDS = 30.0
"""An outbound call of the shared HTTP session (a whole file fetched to be sent on) fails when no
data arrives for this long; a slow transfer that keeps moving goes on. The services' SDKs set
their own, shorter limits on their API calls."""


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

    def unreachable(self) -> str | None:
        """Why the service has not answered yet (shown by /readyz), or None."""

    async def stop(self) -> None: ...


@dataclass(frozen=True)
class Inbox:
    """Durable intake for what a destination delivers (Slack events, Telegram updates), as for the
    platform's pushes: deduplicated by the service's delivery id and stored in one atomic step
    before the service is answered, then handled by the event consumer (in order per ``thread``,
    retried). A Redis that cannot take it raises ``StorageUnavailable``: answer 503."""

    event_log: EventLog
    holding: Holding | None = None

    async def accept(
        self, service: str, delivery_id: str, thread: str, kind: str, raw: str, *, last_try: bool = False
    ) -> bool:
        """Stores one delivery; False when it was stored before (a redelivery). On the service's
        ``last_try`` (it will not deliver again) a Redis that cannot take it is outlasted on local
        disk (``bridge.engine.held``), so the delivery is not dropped."""
        record = IncomingRecord(kind, delivery_id, thread, raw)
        endpoint = Endpoint("destination", service)
        try:
            return bool(await self.event_log.store(endpoint, [record]))
        except StorageUnavailable:
            if not last_try or self.holding is None:
                raise
        await self.holding.hold(endpoint, [record])
        return True


def inbox_thread(*parts: str | int | None, buckets: int = 64) -> str:
    """An ordering key for a destination's deliveries: the first part (a channel, a chat) plus one of
    ``buckets`` spreads of the rest (the conversation thread in it). Deliveries of one conversation
    thread keep their order; different threads of a channel run side by side; and the ordering
    state stays bounded by channels × buckets, however many threads people open."""
    first, *rest = (str(p) for p in parts if p is not None)
    return f"{first}:{zlib.crc32(':'.join(rest).encode()) % buckets}" if rest else first


@dataclass(frozen=True)
class DestinationPlugin:
    service: str
    """``slack`` in ``slack:C0CHATS``; also the name of the configuration section."""
    settings: type[BaseModel]
    connect: Callable[[Any, Any], Connector]
    """Builds the connector from its validated settings section and the ``bridge.core.Core``."""
    target: str
    """How a target is written, for error messages: ``<channel id>``."""
    target_pattern: str = ".+"
    """What a target must match: the id the service's events carry, since each message and click
    is placed by it (a name would never match one)."""
    target_hint: str = ""
    """What a target is and where to find it, for the error of one that does not match."""
    account_pattern: str = ".+"
    """What a person's id in the service must match (an agent's or creator's ``accounts`` entry):
    the id its events carry, as for a target."""
    account_hint: str = ""
    """What a person's id is and where to find it, for the error of one that does not match."""
    probe: Callable[[Any, Any], Awaitable[list[Any]]] | None = None
    """``bridge check --online``: given its settings and the ``BridgeConfig``, asks the service
    whether the credentials work and every target of the configuration is reachable and usable (the
    bot is in the channel, may open topics …); answers ``bridge.config.Problem``s."""


PLUGIN_GROUP = "feige_bridge.destinations"


@cache
def plugins() -> dict[str, DestinationPlugin]:
    """Every installed destination, by service name."""
    found: dict[str, DestinationPlugin] = {}
    for entry in entry_points(group=PLUGIN_GROUP):
        plugin = entry.load()
        if isinstance(plugin, DestinationPlugin):
            found[plugin.service] = plugin
    return found
