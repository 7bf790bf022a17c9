"""The ceiling of the stack: bare aiohttp on uvloop answering every request with a constant
SessionObject envelope serialised by orjson, with no middleware, validation or storage."""

from __future__ import annotations

import os
import sys

import orjson
import uvloop
from aiohttp import web

SESSION = {
    "ip": "192.168.1.1",
    "extra": None,
    "user_id": 1,
    "create": 1464909151,
    "activity": 1464909151,
    "token": "61494096-9af7-49ba-9fb4-e89c0811e6d3",
}


async def handle(request: web.Request) -> web.Response:
    return web.Response(
        body=orjson.dumps({"status": "success", "data": SESSION}), content_type="application/json"
    )


def main() -> None:
    port = int(sys.argv[1] if len(sys.argv) > 1 else os.environ["SESSIONS_PORT"])
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    web.run_app(
        app,
        host="127.0.0.1",
        port=port,
        access_log=None,
        print=None,
        loop=uvloop.new_event_loop(),
    )


if __name__ == "__main__":
    main()
