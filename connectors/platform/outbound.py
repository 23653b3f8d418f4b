"""Outbox senders for the platform API: one per job kind, each a thin call of PlatformClient.

Payloads name the endpoint (``store:<id>`` or ``creator:<id>``) whose credentials to use; the job id
is the idempotency key.
"""

from __future__ import annotations

from collections.abc import Callable

import aiohttp

from bridge.config import BridgeConfig, PlatformCredentials
from bridge.outbox import FinalFailure, OutboxJob, Sender
from connectors.platform.client import PlatformClient

SEND_MESSAGE = "platform.send_message"
ADD_COMMENT = "platform.add_comment"
PROCESS_TASK_ORDER = "platform.process_task_order"


class PlatformSenders:
    def __init__(self, config: Callable[[], BridgeConfig], session: Callable[[], aiohttp.ClientSession]) -> None:
        self.config = config
        self.session = session

    def client(self, endpoint: str) -> PlatformClient:
        kind, _, endpoint_id = endpoint.partition(":")
        config = self.config()
        owner = config.store(endpoint_id) if kind == "store" else config.creator(endpoint_id)
        if owner is None:
            raise FinalFailure(f"{kind} {endpoint_id} is no longer configured")
        creds: PlatformCredentials = owner.platform
        return PlatformClient(creds.api_url, creds.api_token, self.session())

    def senders(self) -> dict[str, Sender]:
        return {
            SEND_MESSAGE: self.send_message,
            ADD_COMMENT: self.add_comment,
            PROCESS_TASK_ORDER: self.process_task_order,
        }

    async def send_message(self, job: OutboxJob) -> None:
        p = job.payload
        await self.client(p["endpoint"]).send_message(p["conversation_id"], p["agent_id"], p["content"], job.id)

    async def add_comment(self, job: OutboxJob) -> None:
        p = job.payload
        await self.client(p["endpoint"]).add_comment(p["task_id"], p["side"], p["author_id"], p["text"], job.id)

    async def process_task_order(self, job: OutboxJob) -> None:
        p = job.payload
        await self.client(p["endpoint"]).process_task_order(
            p["task_id"], p["result"], p["solution"], p.get("evidence", []), p["operator_id"], job.id
        )
