"""The true ceiling of the stack: aiohttp's low-level server (`web.Server`, no Application,
no router) on uvloop, answering every request with the constant SessionObject envelope."""

from __future__ import annotations

import asyncio
import os
import signal
import sys

import orjson
import uvloop
from aiohttp import web
from baseline import SESSION  # the same answer as the Application baseline

BODY = orjson.dumps({"status": "success", "data": SESSION})


async def handle(request: web.BaseRequest) -> web.Response:
    return web.Response(body=BODY, content_type="application/json")


async def serve(server: web.Server, port: int) -> None:
    """`server` on 127.0.0.1:`port` until SIGINT or SIGTERM."""
    runner = web.ServerRunner(server)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    await runner.cleanup()


async def serve_constant(port: int) -> None:
    # A web.Server is made inside the running loop, which it binds to.
    await serve(web.Server(handle, access_log=None), port)


def main() -> None:
    port = int(sys.argv[1] if len(sys.argv) > 1 else os.environ["SESSIONS_PORT"])
    uvloop.run(serve_constant(port))


if __name__ == "__main__":
    main()
