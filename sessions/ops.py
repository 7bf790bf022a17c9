"""Operational endpoints: /health, /ready, /metrics, /openapi.json and the /docs page.

They are served beside the API, or with SESSIONS_OPS_PORT by a server of their own on that
port, which then serves nothing else (and the API's port serves none of them).
"""

from __future__ import annotations

import contextlib
import mimetypes
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.registry import Collector
from swagger_ui.core import ApplicationDocument

from . import __version__
from .config import Settings
from .envelope import HEADERS, success
from .errors import SessionsError, StorageUnavailable
from .metrics import FAMILIES, METRICS, Metrics
from .openapi import build_spec
from .routing import Handler, Route
from .service import Service

__all__ = ["ops_routes"]

_ALLOW = ("GET", "HEAD")


class _Exposition(Collector):
    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Any]:
        return self._metrics.collect()


def _plain(body: bytes, content_type: str) -> web.Response:
    return web.Response(body=body, headers={**HEADERS, "Content-Type": content_type})


def _revision(settings: Settings) -> str:
    """The source revision: the setting (the images set it), else the checkout's, else unknown."""
    if settings.revision:
        return settings.revision
    root = Path(__file__).resolve().parent.parent
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        done = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short=12", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
        )
        if done.returncode == 0 and done.stdout.strip():
            return done.stdout.strip()
    return "unknown"


class _BuildInfo(Collector):
    def __init__(self, built: dict[str, str]) -> None:
        self._built = built

    def collect(self) -> Iterator[Any]:
        info = FAMILIES["sessions_build_info"].make()
        info.add_metric([self._built["version"], self._built["revision"]], 1)
        yield info


def ops_routes(settings: Settings) -> tuple[Route, ...]:
    """The operational endpoints, each answering GET and HEAD (load balancers probe with it)."""
    spec = build_spec(keys=bool(settings.api_keys))
    spec_body = orjson.dumps(spec)
    # swagger-ui-py bundles Swagger UI's files, so the page needs nothing from the internet.
    document = ApplicationDocument(None, config=spec, url_prefix="/docs", title="sessions API")
    page = document.doc_html.encode()
    # Only the files the page names are served, each under its own path, read once here
    # (about 1.5 MB): no path from a request ever reaches the file system, and serving
    # cannot fail half-way.
    static_dir = Path(document.static_dir)
    assets = {
        f"/docs/static/{name}": (
            (static_dir / name).read_bytes(),
            mimetypes.guess_type(name)[0] or "application/octet-stream",
        )
        for name in re.findall(r'/docs/static/([\w.-]+)"', document.doc_html)
    }

    built = {"version": __version__, "revision": _revision(settings)}
    build_info = _BuildInfo(built)

    async def health(service: Service) -> web.Response:
        return success({"alive": True})

    async def ready(service: Service) -> web.Response:
        info = await service.storage.info()
        if info.ro:
            raise StorageUnavailable("Tarantool is read-only: new sessions cannot be written.")
        if not info.writes_confirmable:
            raise StorageUnavailable(
                "Too few replicas answer to confirm a write (synchronous replication): new sessions "
                "cannot be written; gets serve sessions as stored."
            )
        # A full store stays ready: reads and deletes still work there, and failing every
        # instance's probe at once would take the whole service out of its load balancer.
        # So does a sharded cluster with a replica set lost (`sets_lost`, said here): every
        # service instance reaches the same sets, so a failing probe would take all of them
        # out and make one set's outage everybody's; the other sets' users are served.
        return success(
            {
                "ready": True,
                "sessions": info.sessions,
                "schema_version": info.schema_version,
                "storage_full": info.storage_full,
                "sets_lost": info.sets_lost,
            }
        )

    async def metrics(service: Service) -> web.Response:
        try:
            METRICS.storage = await service.storage.info()
        except SessionsError:
            METRICS.storage = None
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Exposition(METRICS))
        # process_open_fds, process_max_fds, process_resident_memory_bytes, CPU and start time.
        ProcessCollector(registry=registry)
        registry.register(build_info)
        return _plain(generate_latest(registry), CONTENT_TYPE_LATEST)

    async def version(service: Service) -> web.Response:
        return success(built)

    def constant(body: bytes, content_type: str) -> Handler:
        async def handler(service: Service) -> web.Response:
            return _plain(body, content_type)

        return handler

    openapi = constant(spec_body, "application/json")
    docs = constant(page, "text/html; charset=utf-8")

    def route(path: str, handler: Handler, *, probe: bool = False, public: bool = False) -> Route:
        return Route(path, handler, "ops", methods=_ALLOW, probe=probe, public=public)

    return (
        route("/health", health, probe=True),
        route("/version", version),
        route("/ready", ready, probe=True),
        route("/metrics", metrics),
        # The documentation is open with keys too, so that a browser loads the page and its
        # Authorize button takes the key for "Try it out"; it holds nothing secret.
        route("/openapi.json", openapi, public=True),
        route("/docs/swagger.json", openapi, public=True),
        route("/docs", docs, public=True),
        route("/docs/", docs, public=True),
        *(route(path, constant(*asset), public=True) for path, asset in assets.items()),
    )
