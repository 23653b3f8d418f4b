"""Serving an aiohttp app on a port (0: any free one) and learning which port it got."""

from __future__ import annotations

from typing import Any

from aiohttp import web


async def listen(app: web.Application, host: str, port: int, **runner_options: Any) -> tuple[web.AppRunner, int]:
    runner = web.AppRunner(app, handle_signals=False, **runner_options)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    sockets = getattr(site._server, "sockets", None) or []
    return runner, sockets[0].getsockname()[1] if sockets else port
