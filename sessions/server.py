"""The HTTP server around the app: listening, protocol errors as envelopes, graceful stop.

aiohttp's `run_app` answers requests it cannot parse (a request line over 8 KiB, broken
headers, TLS on the plain port) with a plain-text page before any app code runs; here they
get the API's JSON envelope like everything else, and a signal or the app itself
(`SHUTDOWN`) stops the server in order: stop listening, let requests in flight finish within
the grace period, then close storage and the embedded Tarantool.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from typing import Any

import uvloop
from aiohttp import web
from aiohttp.http_exceptions import LineTooLong
from aiohttp.web_protocol import RequestHandler

from .config import Settings
from .envelope import failure
from .errors import BadRequest, InternalError, SessionsError
from .keys import SHUTDOWN
from .logs import AccessLogger

__all__ = ["run"]

log = logging.getLogger("sessions")


def _protocol_error(status: int, exc: BaseException | None) -> SessionsError:
    if isinstance(exc, LineTooLong):
        return BadRequest("The request line or a header is too long (the limit is 8190 bytes).")
    if 400 <= status < 500:
        return BadRequest()
    return InternalError()


class _EnvelopeRequestHandler(RequestHandler):
    __slots__ = ()

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        # The base class logs the error and refuses if a response was already started.
        super().handle_error(request, status, exc, message)
        response = failure(_protocol_error(status, exc))
        response.force_close()
        return response


class _EnvelopeServer(web.Server):
    def __call__(self) -> RequestHandler:
        return _EnvelopeRequestHandler(self, loop=self._loop, **self._kwargs)


class _Runner(web.AppRunner):
    __slots__ = ()

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        server.__class__ = _EnvelopeServer
        return server


async def _serve(app: web.Application, settings: Settings, *, reuse_port: bool) -> int:
    access_log: dict[str, Any] = {"access_log": None}
    if settings.access_log:
        access_log = {"access_log": logging.getLogger("sessions.access"), "access_log_class": AccessLogger}
    runner = _Runner(
        app,
        keepalive_timeout=settings.keepalive_timeout,
        shutdown_timeout=settings.shutdown_timeout,
        **access_log,
    )
    await runner.setup()
    try:
        site = web.TCPSite(
            runner,
            settings.host,
            settings.port,
            reuse_port=reuse_port or None,
            shutdown_timeout=settings.shutdown_timeout,
        )
        await site.start()
        if settings.ops_enabled and settings.ops_port is not None:
            ops_site = web.TCPSite(runner, settings.host, settings.ops_port, reuse_port=reuse_port or None)
            await ops_site.start()
            log.info("operational endpoints on http://%s:%d", settings.host, settings.ops_port)
        log.info("serving on http://%s:%d (pid %d)", settings.host, settings.port, os.getpid())
        shutdown = app[SHUTDOWN]
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, shutdown.request, 0)
        await shutdown.requested.wait()
        log.info("stopping")
    finally:
        # Stops listening first, then waits for requests in flight, then cleans up.
        await runner.cleanup()
    return app[SHUTDOWN].exit_code


def run(app: web.Application, settings: Settings, *, reuse_port: bool = False) -> int:
    """Serve `app` until SIGINT/SIGTERM or the app's own shutdown request; the exit code."""
    return uvloop.run(_serve(app, settings, reuse_port=reuse_port))
