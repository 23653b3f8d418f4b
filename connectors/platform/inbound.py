"""`POST /webhooks/platform/{store_id}` and `/webhooks/creator/{creator_id}`: verify, store, acknowledge.

Checks run in the order that tells the sender the most without trusting it: unknown endpoint (404),
oversize body (413), wrong app-id or signature (401), malformed records (400), then the durable
write (503 if Redis cannot take it). Success is answered only after every record is stored.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from aiohttp import web

from bridge.config import BridgeConfig, PlatformCredentials
from bridge.engine.backpressure import RETRY_AFTER_SECONDS
from bridge.engine.endpoint import Endpoint
from bridge.engine.ingest import EventLog, StorageUnavailable
from bridge.engine.metrics import METRICS
from connectors.platform.envelope import EnvelopeError, parse_push
from connectors.platform.signing import signature_matches

log = logging.getLogger(__name__)

MAX_PUSH_BYTES = 1024 * 1024

SUCCESS = b'{"code":0,"msg":"success"}'

_ANSWERED_OK = METRICS.pushes.labels("200")  # bound once: every stored push counts it


def _counted(response: web.Response) -> web.Response:
    (_ANSWERED_OK if response.status == 200 else METRICS.pushes.labels(str(response.status))).inc()
    return response


def _error(status: int, msg: str) -> web.Response:
    """The platform's answer shape, for every refusal."""
    return web.json_response({"code": status, "msg": msg}, status=status)


async def _read_limited(request: web.Request) -> bytes | None:
    if request.content_length is not None and request.content_length > MAX_PUSH_BYTES:
        return None
    try:
        return await request.read()  # the app's client_max_size stops a larger chunked body
    except web.HTTPRequestEntityTooLarge:
        return None


class PlatformWebhooks:
    def __init__(self, config: Callable[[], BridgeConfig], events: EventLog) -> None:
        self.config = config
        self.events = events

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/webhooks/platform/{id}", self.store_push)
        app.router.add_post("/webhooks/creator/{id}", self.creator_push)

    async def store_push(self, request: web.Request) -> web.Response:
        store = self.config().store(request.match_info["id"])
        if store is None:
            return _counted(_error(404, f"unknown store {request.match_info['id']!r}"))
        return _counted(await self._receive(request, Endpoint("store", store.id), store.platform))

    async def creator_push(self, request: web.Request) -> web.Response:
        creator = self.config().creator(request.match_info["id"])
        if creator is None:
            return _counted(_error(404, f"unknown creator {request.match_info['id']!r}"))
        return _counted(await self._receive(request, Endpoint("creator", creator.id), creator.platform))

    async def _receive(self, request: web.Request, endpoint: Endpoint, creds: PlatformCredentials) -> web.Response:
        body = await _read_limited(request)
        if body is None:
            return _error(413, f"push body is larger than {MAX_PUSH_BYTES} bytes")
        if "app-id" not in request.headers:
            return _error(401, "the app-id header is missing")
        if request.headers["app-id"] != creds.app_key:
            return _error(401, f"app-id does not match {endpoint}")
        signature = request.headers.get("event-sign", "")
        if not signature:
            return _error(401, "the event-sign header is missing")
        if not signature_matches(creds.app_key, body, creds.app_secrets, signature):
            return _error(401, "event-sign does not match the body signed with this endpoint's secret")
        try:
            records = parse_push(body, endpoint)
        except EnvelopeError as exc:
            return _error(400, str(exc))
        try:
            stored = await self.events.store(endpoint, records)
        except StorageUnavailable as exc:
            log.warning("%s: push not stored, asking the platform to redeliver: %s", endpoint, exc)
            response = _error(503, "storage unavailable, please redeliver")
            response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
            return response
        if stored < len(records):
            # The platform sent them again (our answer was late or lost): normal, so counted, and
            # logged only at debug level, not a line per push in a storm of them.
            METRICS.push_redeliveries.labels(endpoint.tag.strip("{}")).inc(len(records) - stored)
            log.debug("%s: %d of %d records were redeliveries", endpoint, len(records) - stored, len(records))
        return web.Response(body=SUCCESS, content_type="application/json")
