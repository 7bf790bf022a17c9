"""Application factory: routes and the lifetime of the storage (and embedded Tarantool)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from aiohttp import web

from . import api
from .auth import ApiKeys
from .config import Settings
from .embedded import embedded_tarantool
from .keys import AUTH, OPS_APP, SETTINGS, SHUTDOWN, STORAGE, Shutdown
from .ops import PROBES, setup_ops_routes
from .storage import Storage

__all__ = ["create_app"]

log = logging.getLogger(__name__)


async def _storage(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    password = settings.service_password()
    async with contextlib.AsyncExitStack() as stack:
        if settings.embedded:
            embedded = await stack.enter_async_context(
                embedded_tarantool(settings, password=password, on_fatal=lambda: app[SHUTDOWN].request(1))
            )
            addresses = [embedded.address]
        else:
            addresses = settings.tarantool_addresses
        storage = Storage(
            addresses,
            user=settings.tarantool_user,
            password=password,
            idle_ttl=settings.idle_ttl,
            max_lifetime=settings.max_lifetime,
            max_per_user=settings.max_per_user,
            extra_max_bytes=settings.extra_max_bytes,
            timeout=settings.tarantool_timeout,
        )
        # Closed before the embedded Tarantool stops (exit stacks unwind in reverse).
        stack.push_async_callback(storage.close)
        try:
            await asyncio.wait_for(storage.connect(), settings.startup_timeout)
        except TimeoutError:
            raise RuntimeError(
                f"Tarantool at {settings.tarantool} did not answer in {settings.startup_timeout:.0f}s"
            ) from None
        app[STORAGE] = storage
        yield


def _base_app(settings: Settings, *, client_max_size: int) -> web.Application:
    app = web.Application(client_max_size=client_max_size)
    app[SETTINGS] = settings
    probes = PROBES if settings.open_probes else ()
    keys = [key.get_secret_value() for key in settings.api_keys]
    app[AUTH] = ApiKeys(keys, open_paths=probes) if keys else None
    return app


def create_app(settings: Settings) -> web.Application:
    """The API's application; with SESSIONS_OPS_PORT set, the operational endpoints' own
    application is at `app[OPS_APP]`, to be served on that port (server.py)."""
    app = _base_app(settings, client_max_size=settings.extra_max_bytes)
    app[SHUTDOWN] = Shutdown()
    app.cleanup_ctx.append(_storage)
    api.setup_routes(app)
    app[OPS_APP] = None
    if settings.ops_enabled:
        if settings.ops_port is None:
            setup_ops_routes(app, api=app)
        else:
            ops = _base_app(settings, client_max_size=1024)
            setup_ops_routes(ops, api=app)
            api.setup_fallback_route(ops)
            app[OPS_APP] = ops
    api.setup_fallback_route(app)
    return app
