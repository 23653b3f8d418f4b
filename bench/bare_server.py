"""The ceiling of the stack for bench/ingest.py: aiohttp that reads the body and answers 200, on the
same event loop as ``bridge serve`` (uvloop)."""

import sys

import uvloop
from aiohttp import web


async def handle(request: web.Request) -> web.Response:
    await request.read()
    return web.json_response({"code": 0, "msg": "success"})


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "alive"})  # what bench/machine.py's wait_up asks, as of a bridge


app = web.Application()
app.router.add_post("/webhooks/platform/{id}", handle)
app.router.add_get("/healthz", healthz)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None, loop=uvloop.new_event_loop())
