"""Serving an aiohttp app on a port (0: any free one) and learning which port it got."""

from __future__ import annotations

from typing import Any

import aiohttp
from aiohttp import web


async def listen(app: web.Application, host: str, port: int, **runner_options: Any) -> tuple[web.AppRunner, int]:
    runner = web.AppRunner(app, handle_signals=False, **runner_options)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    sockets = getattr(site._server, "sockets", None) or []
    return runner, sockets[0].getsockname()[1] if sockets else port


class LocalServer:
    """A local stand-in of an outside service (the platform sandbox, the emulators): an aiohttp app
    served on loopback, with one client session for what it sends to the bridge."""

    def __init__(self, app: web.Application) -> None:
        self.app = app
        self.port: int | None = None
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        self._runner, self.port = await listen(self.app, host, port)
        return f"http://{host}:{self.port}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    def http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession()
        return self._session
