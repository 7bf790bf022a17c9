"""Application factory: routes and the lifetime of the storage (and embedded Tarantool)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

from aiohttp import web

from . import api
from .auth import ApiKeys
from .config import Settings
from .embedded import EmbeddedTarantool
from .keys import AUTH, SETTINGS, SHUTDOWN, STORAGE, Shutdown
from .ops import setup_ops_routes
from .storage import Storage

__all__ = ["create_app"]

log = logging.getLogger(__name__)


async def _storage(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    embedded = None
    password = settings.service_password()
    watchdog = None
    if settings.embedded:
        embedded = EmbeddedTarantool.from_settings(settings, password=password)
        await embedded.start()
        addresses = [embedded.address]
        watchdog = asyncio.create_task(embedded.watch(lambda: app[SHUTDOWN].request(1)))
    else:
        addresses = settings.tarantool_addresses
    storage = Storage(
        addresses,
        user=settings.tarantool_user,
        password=password,
        idle_ttl=settings.idle_ttl,
        extra_max_bytes=settings.extra_max_bytes,
        timeout=settings.tarantool_timeout,
    )
    try:
        try:
            await asyncio.wait_for(storage.connect(), settings.startup_timeout)
        except TimeoutError:
            raise RuntimeError(
                f"Tarantool at {settings.tarantool} did not answer in {settings.startup_timeout:.0f}s"
            ) from None
        app[STORAGE] = storage
        yield
    finally:
        await storage.close()
        if embedded is not None:
            await embedded.stop()
        if watchdog is not None:
            await watchdog


def create_app(settings: Settings) -> web.Application:
    app = web.Application(client_max_size=settings.extra_max_bytes)
    app[SETTINGS] = settings
    app[SHUTDOWN] = Shutdown()
    probes = ("/health", "/ready") if settings.open_probes else ()
    keys = [key.get_secret_value() for key in settings.api_keys]
    app[AUTH] = ApiKeys(keys, open_paths=probes) if keys else None
    app.cleanup_ctx.append(_storage)
    api.setup_routes(app)
    if settings.ops_enabled:
        setup_ops_routes(app)
    api.setup_fallback_route(app)
    return app
