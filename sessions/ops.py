"""Operational endpoints: /health, /ready, /metrics, /openapi.json and the /docs page.

They are served beside the API, or with SESSIONS_OPS_PORT by an application of their own on
that port, which then serves nothing else (and the API's port serves none of them).
"""

from __future__ import annotations

import mimetypes
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.registry import Collector
from swagger_ui.core import ApplicationDocument

from .envelope import rendered, success
from .errors import MethodNotAllowed, NotFound, SessionsError, StorageUnavailable
from .keys import STORAGE
from .metrics import METRICS, Metrics
from .openapi import build_spec

__all__ = ["OPS_PATHS", "PROBES", "setup_ops_routes"]

PROBES = ("/health", "/ready")
# Every path served here, in the order setup_ops_routes gives them their handlers.
OPS_PATHS = (
    "/health",
    "/ready",
    "/metrics",
    "/openapi.json",
    "/docs/swagger.json",
    "/docs",
    "/docs/",
    "/docs/static/{name}",
)
_ALLOW = ("GET", "HEAD")


class _Exposition(Collector):
    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Any]:
        return self._metrics.collect()


def setup_ops_routes(app: web.Application, *, api: web.Application) -> None:
    """Add the operational endpoints to `app`; `api` is the application whose storage they report."""
    spec = build_spec()
    spec_body = orjson.dumps(spec)
    # swagger-ui-py bundles Swagger UI's files, so the page needs nothing from the internet.
    document = ApplicationDocument(app, config=spec, url_prefix="/docs", title="sessions API")
    page = document.doc_html
    # Only the files the page names are served, read once here (about 1.5 MB): no path
    # from a request ever reaches the file system, and serving cannot fail half-way.
    static_dir = Path(document.static_dir)
    assets = {
        name: ((static_dir / name).read_bytes(), mimetypes.guess_type(name)[0] or "application/octet-stream")
        for name in re.findall(r'/docs/static/([\w.-]+)"', page)
    }

    async def health(request: web.Request) -> web.Response:
        return success({"alive": True})

    async def ready(request: web.Request) -> web.Response:
        info = await api[STORAGE].info()
        if info["ro"]:
            raise StorageUnavailable("Tarantool is read-only: new sessions cannot be written.")
        # A full store stays ready: reads and deletes still work there, and failing every
        # instance's probe at once would take the whole service out of its load balancer.
        return success(
            {
                "ready": True,
                "sessions": info["sessions"],
                "schema_version": info["schema_version"],
                "storage_full": bool(info.get("storage_full", False)),
            }
        )

    async def metrics(request: web.Request) -> web.Response:
        try:
            METRICS.storage = await api[STORAGE].info()
        except SessionsError:
            METRICS.storage = None
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Exposition(METRICS))
        return web.Response(body=generate_latest(registry), content_type="text/plain", charset="utf-8")

    async def openapi(request: web.Request) -> web.Response:
        return web.Response(body=spec_body, content_type="application/json")

    async def docs(request: web.Request) -> web.Response:
        return web.Response(text=page, content_type="text/html")

    async def static(request: web.Request) -> web.Response:
        asset = assets.get(request.match_info["name"])
        if asset is None:
            raise NotFound("No such file.")
        body, content_type = asset
        return web.Response(body=body, content_type=content_type)

    async def method_not_allowed(request: web.Request) -> web.Response:
        raise MethodNotAllowed(allow=_ALLOW)

    handlers = dict(
        zip(
            OPS_PATHS,
            (health, ready, metrics, openapi, openapi, docs, docs, static),
            strict=True,
        )
    )
    for path, handler in handlers.items():
        resource = app.router.add_resource(path)
        # HEAD as well: load balancers probe with it.
        for method in _ALLOW:
            resource.add_route(method, rendered(handler, "ops"))
        resource.add_route("*", rendered(method_not_allowed, "ops"))
