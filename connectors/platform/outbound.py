"""Outbox senders for the platform API: one per job kind, each a thin call of PlatformClient.

Payloads name the endpoint (``store:<id>`` or ``creator:<id>``) whose credentials to use; the job id
is the idempotency key.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import aiohttp

from bridge.config import BridgeConfig, PlatformCredentials
from bridge.engine.outbox import FinalFailure, OutboxJob, Sender
from bridge.flows import jobs
from connectors.platform.client import PlatformClient
from rules.evidence import MAX_IMAGE_BYTES, SNIFF_BYTES, evidence_limits, media_refusal, sniff_media

MediaFetcher = Callable[[str], Awaitable[bytes]]
"""Downloads a file a person attached in a destination (with that service's credentials)."""


class PlatformSenders:
    def __init__(self, config: Callable[[], BridgeConfig], session: Callable[[], aiohttp.ClientSession]) -> None:
        self.config = config
        self.session = session
        self.fetchers: dict[str, MediaFetcher] = {}

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
            jobs.SEND_MESSAGE: self.send_message,
            jobs.SEND_IMAGE: self.send_image,
            jobs.PROCESS_TASK_ORDER: self.process_with_evidence,
            jobs.ADD_COMMENT: self.add_comment,
        }

    async def send_message(self, job: OutboxJob) -> None:
        p = job.payload
        await self.client(p["endpoint"]).send_message(p["conversation_id"], p["agent_id"], p["content"], job.id)

    async def send_image(self, job: OutboxJob) -> None:
        """Downloads the image from where it was posted, uploads it to the platform, sends it (A8).
        The upload carries its own idempotency key, so a retry reuses the same media id."""
        p = job.payload
        media = p["media"]
        limits = evidence_limits()
        refused = FinalFailure(f"{media['name']}: only {limits['images']} images up to {limits['image_mb']} MB can be "
                               "sent", code=jobs.IMAGE_REFUSED)  # fmt: skip
        if int(media.get("size", 0)) > MAX_IMAGE_BYTES:
            raise refused
        fetch = self.fetchers.get(media.get("service", "slack"))
        if fetch is None:
            raise FinalFailure(f"cannot download files from {media.get('service')}")
        data = await fetch(media["url"])
        kind = sniff_media(data[:SNIFF_BYTES])
        if media_refusal(data[:SNIFF_BYTES], len(data)) is not None or kind is None or kind.kind != "image":
            raise refused
        client = self.client(p["endpoint"])
        uploaded = await client.upload_media(
            data, media["name"], media.get("mimetype", "image/jpeg"), f"{job.id}:media"
        )
        await client.send_message(
            p["conversation_id"], p["agent_id"], {"type": "image", "media_id": uploaded["media_id"]}, job.id
        )

    async def process_with_evidence(self, job: OutboxJob) -> None:
        """B7: each evidence file is fetched from where it was shared, checked by its bytes, uploaded
        (its own idempotency key, so a retry reuses the media id), then the task order processed."""
        p = job.payload
        client = self.client(p["endpoint"])
        media_ids = []
        for i, item in enumerate(p.get("evidence", [])):
            fetch = self.fetchers.get(item.get("service", "slack"))
            if fetch is None:
                raise FinalFailure(f"cannot download files from {item.get('service')}")
            data = await fetch(item["url"])
            refusal = media_refusal(data[:SNIFF_BYTES], len(data))
            if refusal is not None:
                raise FinalFailure(f"{item['name']}: evidence refused ({refusal.reason})")
            uploaded = await client.upload_media(data, item["name"], item.get("mimetype", ""), f"{job.id}:media:{i}")
            media_ids.append(uploaded["media_id"])
        await client.process_task_order(p["task_id"], p["result"], p["solution"], media_ids, p["operator_id"], job.id)

    async def add_comment(self, job: OutboxJob) -> None:
        p = job.payload
        await self.client(p["endpoint"]).add_comment(p["task_id"], p["side"], p["author_id"], p["text"], job.id)
