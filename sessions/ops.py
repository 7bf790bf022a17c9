"""Operational endpoints: /health, /ready, /metrics, /openapi.json and the /docs page.

Requests are counted into plain dictionaries on the hot path (a few hundred nanoseconds) and
turned into Prometheus metrics with prometheus-client only when /metrics is scraped. Labels
are bounded: the method is one of the API's five (or `other`), the code one of the envelope's.
"""

from __future__ import annotations

import bisect
from collections import Counter
from collections.abc import Iterator
from typing import Any

import orjson
from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector
from swagger_ui.core import ApplicationDocument

from .envelope import rendered, success
from .errors import NotFound, SessionsError, StorageUnavailable
from .keys import METRICS, SETTINGS, STORAGE
from .openapi import build_spec

__all__ = ["Metrics", "setup_ops_routes"]

BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
PROBES = ("/health", "/ready")


class Metrics:
    """Request counts and latencies of this process, and the last view of Tarantool."""

    def __init__(self) -> None:
        self.requests: Counter[tuple[str, str]] = Counter()
        self._buckets: dict[str, list[int]] = {}
        self._sums: Counter[str] = Counter()
        self.storage: dict[str, Any] | None = None

    def record(self, method: str, code: str, seconds: float) -> None:
        self.requests[method, code] += 1
        buckets = self._buckets.get(method)
        if buckets is None:
            buckets = self._buckets[method] = [0] * (len(BUCKETS) + 1)
        buckets[bisect.bisect_left(BUCKETS, seconds)] += 1
        self._sums[method] += seconds

    def collect(self) -> Iterator[Any]:
        requests = CounterMetricFamily(
            "sessions_requests",
            "Requests answered, by API method and envelope code",
            labels=["method", "code"],
        )
        for (method, code), count in sorted(self.requests.items()):
            requests.add_metric([method, code], count)
        yield requests
        latency = HistogramMetricFamily(
            "sessions_request_duration_seconds", "Time to answer a request, by API method", labels=["method"]
        )
        for method, counts in sorted(self._buckets.items()):
            cumulative, running = [], 0
            for bound, count in zip([*map(str, BUCKETS), "+Inf"], counts, strict=True):
                running += count
                cumulative.append((bound, running))
            latency.add_metric([method], cumulative, sum_value=self._sums[method])
        yield latency
        up = GaugeMetricFamily("sessions_tarantool_up", "1 if Tarantool answered the last scrape")
        up.add_metric([], 0 if self.storage is None else 1)
        yield up
        if self.storage is not None:
            yield GaugeMetricFamily(
                "sessions_stored",
                "Sessions in Tarantool (idle ones included until the purge removes them)",
                value=self.storage["sessions"],
            )
            purged = CounterMetricFamily(
                "sessions_purged", "Idle sessions purged since the Tarantool instance started"
            )
            purged.add_metric([], self.storage["purged"])
            yield purged
            yield GaugeMetricFamily(
                "sessions_tarantool_memory_used_bytes",
                "Memory used for sessions and indexes in Tarantool",
                value=self.storage["memory_used"],
            )
            yield GaugeMetricFamily(
                "sessions_tarantool_read_only", "1 if Tarantool is read-only", value=int(self.storage["ro"])
            )


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
    state = request.app[METRICS]
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
