"""What the core offers a destination connector: configuration, Redis, the clock, the outbox, an
HTTP session, the two flows and the durable inbox."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import aiohttp
from redis.asyncio import Redis

from bridge.config import BridgeConfig
from bridge.destinations import Inbox
from bridge.engine.clock import Clock
from bridge.engine.outbox import Outbox
from bridge.flows.chats import ChatFlow
from bridge.flows.resolve import ResolveConversation
from bridge.flows.router import InboundRouter
from bridge.flows.tasks import TaskFlow


@dataclass(frozen=True)
class Core:
    config: Callable[[], BridgeConfig]
    redis: Redis
    clock: Clock
    outbox: Outbox
    http: Callable[[], aiohttp.ClientSession]
    chats: ChatFlow
    tasks: TaskFlow
    inbox: Inbox
    router: InboundRouter
    resolve: ResolveConversation
