"""Operational endpoints: /health, /ready, /metrics, /openapi.json and the /docs page."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson
from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.registry import Collector
from swagger_ui.core import ApplicationDocument

from .envelope import rendered, success
from .errors import NotFound, SessionsError, StorageUnavailable
from .keys import SETTINGS, STORAGE
from .metrics import METRICS, Metrics
from .openapi import build_spec

__all__ = ["setup_ops_routes"]

PROBES = ("/health", "/ready")


class _Exposition(Collector):
    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Any]:
        return self._metrics.collect()


def _on_ops_port(request: web.Request) -> None:
    """With SESSIONS_OPS_PORT set, operational paths answer there and only there."""
    ops_port = request.app[SETTINGS].ops_port
    if ops_port is not None and request.transport is not None:
        sockname = request.transport.get_extra_info("sockname")
        if not sockname or sockname[1] != ops_port:
            raise NotFound()


async def health(request: web.Request) -> web.Response:
    _on_ops_port(request)
    return success({"alive": True})


async def ready(request: web.Request) -> web.Response:
    _on_ops_port(request)
    info = await request.app[STORAGE].info()
    if info["ro"]:
        raise StorageUnavailable("Tarantool is read-only: new sessions cannot be written.")
    return success({"ready": True, "sessions": info["sessions"], "schema_version": info["schema_version"]})


async def metrics(request: web.Request) -> web.Response:
    _on_ops_port(request)
    state = METRICS
    try:
        state.storage = await request.app[STORAGE].info()
    except SessionsError:
        state.storage = None
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Exposition(state))
    return web.Response(body=generate_latest(registry), content_type="text/plain", charset="utf-8")


def setup_ops_routes(app: web.Application) -> None:
    spec = build_spec()
    spec_body = orjson.dumps(spec)
    # swagger-ui-py bundles Swagger UI's files, so the page needs nothing from the internet.
    document = ApplicationDocument(app, config=spec, url_prefix="/docs", title="sessions API")
    page = document.doc_html

    async def openapi(request: web.Request) -> web.Response:
        _on_ops_port(request)
        return web.Response(body=spec_body, content_type="application/json")

    async def docs(request: web.Request) -> web.Response:
        _on_ops_port(request)
        return web.Response(text=page, content_type="text/html")

    for path, handler in (
        ("/health", health),
        ("/ready", ready),
        ("/metrics", metrics),
        ("/openapi.json", openapi),
        ("/docs/swagger.json", openapi),
        ("/docs", docs),
        ("/docs/", docs),
    ):
        app.router.add_route("GET", path, rendered(handler, "ops"))
    app.router.add_static("/docs/static", document.static_dir)
