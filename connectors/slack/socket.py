"""Socket Mode intake (teams without a public URL): bolt's handler, with one change.

bolt authorizes a request (Slack's ``auth.test``, once per process) before the bridge's middleware
can store it, and when that call fails it answers 200, so the stock handler acknowledges the
envelope and the event is gone. Here such an event is left unacknowledged, and Slack delivers it
again, as the HTTP route answers 503."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from slack_bolt.adapter.socket_mode.aiohttp import AsyncSocketModeHandler
from slack_bolt.adapter.socket_mode.async_internals import send_async_response
from slack_bolt.adapter.socket_mode.internals import build_headers
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_sdk.socket_mode.aiohttp import SocketModeClient
from slack_sdk.socket_mode.request import SocketModeRequest

log = logging.getLogger(__name__)


class StoringSocketModeHandler(AsyncSocketModeHandler):
    def __init__(self, *args: Any, not_taken: Callable[[AsyncBoltRequest, int], bool], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.not_taken = not_taken

    async def handle(self, client: SocketModeClient, req: SocketModeRequest) -> None:  # type: ignore[override]
        started = time.time()
        request = AsyncBoltRequest(mode="socket_mode", body=req.payload, headers=build_headers(req))
        response = await self.app.async_dispatch(request)
        if self.not_taken(request, response.status):
            log.warning("Slack envelope %s not acknowledged: Slack did not answer auth.test", req.envelope_id)
            return  # no ack: Slack sends the envelope again
        await send_async_response(client, req, response, started)
