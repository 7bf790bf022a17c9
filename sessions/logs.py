"""Logging setup and the access log, which never writes a token."""

from __future__ import annotations

import logging
from urllib.parse import urlencode

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

__all__ = ["AccessLogger", "redacted_target", "setup_logging"]

# Query parameters whose values are credentials.
SECRET_PARAMS = frozenset({"token", "except"})


def setup_logging(level: str) -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def redacted_target(request: web.BaseRequest) -> str:
    """Path and query of a request with secret parameter values masked."""
    query = request.query
    if not SECRET_PARAMS.intersection(query):
        return request.path_qs
    masked = [(key, "***" if key in SECRET_PARAMS else value) for key, value in query.items()]
    return f"{request.path}?{urlencode(masked)}"


class AccessLogger(AbstractAccessLogger):
    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        self.logger.info(
            '%s "%s %s" %d %.1fms',
            request.remote,
            request.method,
            redacted_target(request),
            response.status,
            time * 1000,
        )
