"""Steps between the ceiling and the real `get`, each on the service's own server classes.

`python bench/steps.py router PORT` serves `/get` through the service's router (API key
check off, request id, metrics, the token and ip parameters read and checked, extra data,
the success envelope) over a handler that answers a constant session at once;
`python bench/steps.py wait PORT` does the same but the handler first waits for a future
resolved on the next loop turn, as `get` waits for its coalesced call to Tarantool. The
rows they give in `make bench` split `get`'s distance from the ceiling into the router's
part, the waiting's part and the storage's part (the rest).
"""

from __future__ import annotations

import asyncio
import gc
import os
import sys
from typing import Any

import uvloop
from aiohttp import web
from baseline import SESSION
from ceiling import serve

from sessions.aiohttp_internals import EnvelopeServer
from sessions.config import Settings
from sessions.envelope import success
from sessions.params import OPTIONAL_IP, TOKEN
from sessions.routing import Route, Router
from sessions.service import Service


async def at_once(service: Service, token: str, ip: str | None, patch: Any) -> web.Response:
    return success(SESSION)


async def after_a_turn(service: Service, token: str, ip: str | None, patch: Any) -> web.Response:
    loop = asyncio.get_running_loop()
    future = loop.create_future()
    loop.call_soon(future.set_result, SESSION)
    return success(await future)


async def serve_step(mode: str, port: int) -> None:
    settings = Settings(tarantool="127.0.0.1:3301", tarantool_password="bench-unused-8d1f0c2e")
    # No storage: neither handler touches it.
    service = Service(settings, storage=None)  # type: ignore[arg-type]
    handler = {"router": at_once, "wait": after_a_turn}[mode]
    router = Router([Route("/get", handler, "get", (TOKEN, OPTIONAL_IP), extra=True)], service, None)
    # As the service does once it has started (server.py).
    gc.collect()
    gc.freeze()
    await serve(EnvelopeServer(router, client_max_size=settings.extra_max_bytes, access_log=None), port)


def main() -> None:
    mode = sys.argv[1]
    port = int(sys.argv[2] if len(sys.argv) > 2 else os.environ["SESSIONS_PORT"])
    uvloop.run(serve_step(mode, port))


if __name__ == "__main__":
    main()
