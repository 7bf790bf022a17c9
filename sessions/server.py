"""The HTTP server: aiohttp's low-level server (aiohttp_internals.py) around the router, listening, and a
graceful stop: a signal or the service itself (`Shutdown`) stops the server in order: stop
listening, let requests in flight finish within the grace period, then close storage and
the embedded Tarantool.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import logging
import os
import resource
import signal
from pathlib import Path
from typing import Any

import uvloop
from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from .aiohttp_internals import EnvelopeServer, HookedRunner
from .api import METHODS
from .auth import ApiKeys
from .config import Settings
from .limits import FD_RESERVE, MAX_CONNECTIONS
from .logs import RateLimitedLog, masked_query
from .metrics import METRICS
from .ops import ops_routes
from .routing import Router
from .service import Service, Shutdown, running

__all__ = ["EnvelopeServer", "ServiceRunner", "run"]

log = logging.getLogger("sessions")


def redacted_target(request: web.BaseRequest) -> str:
    """Path and query of a request with secret parameter values masked."""
    path = request.rel_url.raw_path
    if not request.query:
        return path
    return f"{path}?{masked_query(list(request.query.items()))}"


class AccessLogger(AbstractAccessLogger):
    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        self.logger.info(
            '%s "%s %s" %d %.1fms',
            request.remote,
            request.method,
            redacted_target(request),
            response.status,
            time * 1000,
            extra={"request_id": response.headers.get("X-Request-Id", "-")},
        )


class ServiceRunner(HookedRunner):
    """The service on aiohttp's low-level server. Setting up starts the storage (and the
    embedded Tarantool); cleaning up stops listening, lets requests in flight finish within
    the grace period, then closes them. With SESSIONS_OPS_PORT set, the operational
    endpoints are left to `ops_runner()`; otherwise they are served here too."""

    __slots__ = ("_settings", "_stack", "service", "shutdown_request")

    def __init__(self, settings: Settings, *, shutdown: Shutdown | None = None, **kwargs: Any) -> None:
        super().__init__(shutdown_timeout=settings.shutdown_timeout, **kwargs)
        self._settings = settings
        self._stack = contextlib.AsyncExitStack()
        self.shutdown_request = shutdown or Shutdown()
        self.service: Service | None = None

    async def make_server(self, **kwargs: Any) -> web.Server:
        settings = self._settings
        # Built before Tarantool starts: nothing is left running if they cannot be.
        routes = list(METHODS)
        if settings.ops_enabled and settings.ops_port is None:
            routes += ops_routes(settings)
        auth = ApiKeys.configured(_keys(settings))
        try:
            service = await self._stack.enter_async_context(running(settings, self.shutdown_request))
            router = Router(routes, service, auth)
        except BaseException:
            await self._stack.aclose()
            raise
        self.service = service
        return EnvelopeServer(
            router,
            client_max_size=settings.extra_max_bytes,
            max_connections=connection_cap(settings),
            make_room=service.feed.cut_one,
            **kwargs,
        )

    async def cleanup_server(self) -> None:
        self.service = None
        await self._stack.aclose()

    def ops_runner(self, **kwargs: Any) -> web.ServerRunner | None:
        """A runner of the operational endpoints alone, for SESSIONS_OPS_PORT, once set up."""
        settings = self._settings
        if self.service is None or not settings.ops_enabled or settings.ops_port is None:
            return None
        router = Router(ops_routes(settings), self.service, ApiKeys.configured(_keys(settings)))
        server = EnvelopeServer(router, client_max_size=1024, **kwargs)
        return web.ServerRunner(server, shutdown_timeout=settings.shutdown_timeout)


def raise_fd_limit() -> tuple[int, int]:
    """Raise this process' soft limit of file descriptors to its hard limit (each connection
    takes one); the soft limit before and after."""
    before, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard
    if target == resource.RLIM_INFINITY:
        # The kernel's own ceiling; "unlimited" is not a value it takes for descriptors.
        target = int(Path("/proc/sys/fs/nr_open").read_text())
    if target > before:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            return before, before
        return before, target
    return before, before


def connection_cap(settings: Settings) -> int:
    """The open connections one process keeps: the setting, else what its descriptors allow."""
    if settings.max_connections is not None:
        cap = settings.max_connections
    else:
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        cap = max(1, min(soft - FD_RESERVE, MAX_CONNECTIONS))
    METRICS.connections_max = cap
    return cap


def _keys(settings: Settings) -> list[str]:
    return [key.get_secret_value() for key in settings.api_keys]


# The event loop (libuv) retries an accept that found no file descriptor in silence, so the
# clients it leaves waiting would go unseen: a look once a second says so instead.
_FD_LOOK = 1.0
_fd_log = RateLimitedLog(log, interval=10.0)


def _fds_left() -> int:
    limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return limit - len(os.listdir("/proc/self/fd"))


async def _watch_fds() -> None:
    # The look itself needs one descriptor (the listing of /proc/self/fd): failing to get
    # it is the same finding.
    while True:
        await asyncio.sleep(_FD_LOOK)
        try:
            exhausted = _fds_left() <= 1
        except OSError:
            exhausted = True
        if exhausted:
            METRICS.fds_exhausted += 1
            _fd_log.error(
                "fds",
                "out of file descriptors (limit %d): new connections wait or are refused",
                resource.getrlimit(resource.RLIMIT_NOFILE)[0],
            )


async def _share_metrics(settings: Settings) -> None:
    """As a worker, write this process' counts for the others' /metrics once a second."""
    if settings.metrics_dir is None:
        return
    METRICS.shared = settings.metrics_dir
    try:
        while True:
            METRICS.share()
            await asyncio.sleep(1.0)
    finally:
        # What it answered until it stopped still counts.
        METRICS.share()


# glibc's allocator, which CPython's large objects (and uvloop's buffers) come from, keeps
# what a burst freed unless told otherwise: it raises its mmap threshold to the largest block
# freed so far (so later pages and bodies come from heaps it rarely gives back), and it
# returns free pages inside a heap only when asked. So the threshold is fixed where it
# starts (a block above it is mapped and unmapped on its own), and a process whose RSS has
# grown asks for its free pages back every few seconds (a few milliseconds on a 400 MB heap).
_M_MMAP_THRESHOLD = -3
_MMAP_THRESHOLD = 128 * 1024
_TRIM_EVERY = 5.0
_TRIM_GROWTH = 16 * 2**20
_PAGE = os.sysconf("SC_PAGE_SIZE")


def _libc() -> Any:
    """glibc's functions, or None under another C library (nothing to tune there)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        return libc if hasattr(libc, "malloc_trim") and hasattr(libc, "mallopt") else None
    except OSError:
        return None


def _rss() -> int:
    with open("/proc/self/statm", "rb") as statm:
        return int(statm.read().split()[1]) * _PAGE


async def _give_memory_back(libc: Any) -> None:
    """Every few seconds, return the allocator's free pages to the system once the process
    holds noticeably more than it did when it started serving."""
    start = _rss()
    while True:
        await asyncio.sleep(_TRIM_EVERY)
        if _rss() > start + _TRIM_GROWTH:
            libc.malloc_trim(0)


def _freeze_gc() -> None:
    # Everything alive once the service has started lives until exit. Moving it out of
    # the collector's reach keeps full collections from walking it every few seconds,
    # which measured as the largest source of p99 latency (bench/README.md).
    gc.collect()
    gc.freeze()


async def _serve(settings: Settings, *, reuse_port: bool) -> int:
    before, after = raise_fd_limit()
    log.info(
        "file descriptors: soft limit %d%s, hard limit %d; at most %d connections",
        after,
        f" (raised from {before})" if after != before else "",
        resource.getrlimit(resource.RLIMIT_NOFILE)[1],
        connection_cap(settings),
    )
    kwargs: dict[str, Any] = {"access_log": None, "keepalive_timeout": settings.keepalive_timeout}
    if settings.access_log:
        kwargs |= {"access_log": logging.getLogger("sessions.access"), "access_log_class": AccessLogger}
    shutdown = Shutdown()
    runners: list[web.BaseRunner] = []
    try:
        api = ServiceRunner(settings, shutdown=shutdown, **kwargs)
        await api.setup()
        runners.append(api)
        sites: list[tuple[web.BaseRunner, int]] = [(api, settings.port)]
        ops = api.ops_runner(**kwargs)
        if ops is not None and settings.ops_port is not None:
            await ops.setup()
            runners.append(ops)
            sites.append((ops, settings.ops_port))
        for runner, port in sites:
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
        _freeze_gc()
        fd_watch = asyncio.create_task(_watch_fds())
        libc = _libc()
        trimming = asyncio.create_task(_give_memory_back(libc)) if libc is not None else None
        sharing = asyncio.create_task(_share_metrics(settings))
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, shutdown.request, 0)
        await shutdown.requested.wait()
        fd_watch.cancel()
        sharing.cancel()
        if trimming is not None:
            trimming.cancel()
        log.info("stopping")
    finally:
        # Each stops listening first, then waits for requests in flight, then cleans up;
        # the API's own last, since it closes the storage the others report on.
        for each in reversed(runners):
            await each.cleanup()
    return shutdown.exit_code


def run(settings: Settings, *, reuse_port: bool = False) -> int:
    """Serve until SIGINT/SIGTERM or the service's own shutdown request; the exit code."""
    libc = _libc()
    if libc is not None:
        libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)
    return uvloop.run(_serve(settings, reuse_port=reuse_port))
