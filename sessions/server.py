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
from collections.abc import Awaitable, Callable
from typing import Any

import uvloop
from aiohttp import web
from aiohttp.http_exceptions import LineTooLong
from aiohttp.web_protocol import RequestHandler

from .config import Settings
from .envelope import failure, from_http
from .errors import BadRequest, InternalError, SessionsError
from .keys import OPS_APP, SHUTDOWN
from .logs import AccessLogger, RateLimitedLog

__all__ = ["run"]

log = logging.getLogger("sessions")


def _protocol_error(status: int, exc: BaseException | None) -> SessionsError:
    if isinstance(exc, LineTooLong):
        return BadRequest("The request line or a header is too long (the limit is 8190 bytes).")
    if 400 <= status < 500:
        return BadRequest()
    return InternalError()


# Anyone can send bytes that are not HTTP, as often as they like: one short line per such
# request at most, and no more than one a second, never with what they sent in it (a
# header may hold a credential).
_rejected_log = RateLimitedLog(log, interval=1.0)


class _EnvelopeRequestHandler(RequestHandler):
    __slots__ = ()

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        error = _protocol_error(status, exc)
        kind = type(exc).__name__ if exc is not None else "no exception"
        if error.status >= 500:
            _rejected_log.error("internal", "answered %d to a request that failed: %s", error.status, kind)
        else:
            _rejected_log.warning(
                "protocol", "answered %d to a request that is not valid HTTP: %s", error.status, kind
            )
        # Some data already went out: the connection is broken, nothing more can be said.
        if request.writer.output_size > 0:
            raise ConnectionError("a response was already started")
        response = failure(error)
        response.force_close()
        return response


class _EnvelopeServer(web.Server):
    def __call__(self) -> RequestHandler:
        return _EnvelopeRequestHandler(self, loop=self._loop, **self._kwargs)


def _enveloped(handler: Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]) -> Any:
    """`handler` with the HTTP errors aiohttp raises before any route's handler runs (no
    route for the target, an unknown Expect) answered as envelopes too."""

    async def handle(request: web.BaseRequest) -> web.StreamResponse:
        try:
            return await handler(request)
        except web.HTTPException as error:
            return failure(from_http(error, request))

    return handle


class _Runner(web.AppRunner):
    __slots__ = ()

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        server.__class__ = _EnvelopeServer
        server.request_handler = _enveloped(server.request_handler)
        return server


async def _serve(app: web.Application, settings: Settings, *, reuse_port: bool) -> int:
    access_log: dict[str, Any] = {"access_log": None}
    if settings.access_log:
        access_log = {"access_log": logging.getLogger("sessions.access"), "access_log_class": AccessLogger}
    runners: list[web.AppRunner] = []
    try:
        sites = [(app, settings.port)]
        ops = app[OPS_APP]
        if ops is not None and settings.ops_port is not None:
            sites.append((ops, settings.ops_port))
        for served, port in sites:
            runner = _Runner(
                served,
                keepalive_timeout=settings.keepalive_timeout,
                shutdown_timeout=settings.shutdown_timeout,
                **access_log,
            )
            await runner.setup()
            runners.append(runner)
            site = web.TCPSite(
                runner,
                settings.host,
                port,
                reuse_port=reuse_port or None,
                shutdown_timeout=settings.shutdown_timeout,
            )
            await site.start()
        if len(sites) > 1:
            log.info("operational endpoints on %s", settings.url(settings.ops_port or 0))
        log.info("serving on %s (pid %d)", settings.url(settings.port), os.getpid())
        shutdown = app[SHUTDOWN]
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, shutdown.request, 0)
        await shutdown.requested.wait()
        log.info("stopping")
    finally:
        # Each stops listening first, then waits for requests in flight, then cleans up;
        # the API's own last, since it closes the storage the others report on.
        for each in reversed(runners):
            await each.cleanup()
    return app[SHUTDOWN].exit_code


def run(app: web.Application, settings: Settings, *, reuse_port: bool = False) -> int:
    """Serve `app` until SIGINT/SIGTERM or the app's own shutdown request; the exit code."""
    return uvloop.run(_serve(app, settings, reuse_port=reuse_port))
