"""Logging setup and the access log; no log line ever carries a session token."""

from __future__ import annotations

import logging
import re
import time
from contextvars import ContextVar
from urllib.parse import urlencode

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from pythonjsonlogger.json import JsonFormatter

__all__ = [
    "REQUEST_ID",
    "AccessLogger",
    "RateLimitedLog",
    "RedactingFormatter",
    "RedactingJsonFormatter",
    "redact",
    "redacted_target",
    "setup_logging",
]

# The id of the request being handled, for every log line written meanwhile.
REQUEST_ID: ContextVar[str] = ContextVar("request_id", default="-")

# Query parameters whose values are credentials.
SECRET_PARAMS = frozenset({"token", "except"})

_SECRET_VALUE = re.compile(r"\b(token|except)(=|%3[dD])[^&\s'\"\\]*", re.IGNORECASE)
# Tokens are UUIDs, and a token may turn up anywhere a request is quoted (an exception
# message repeating a bad request line, say), so anything shaped like one is masked.
_UUID = re.compile(r"[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}")


def redact(text: str) -> str:
    return _UUID.sub("<redacted>", _SECRET_VALUE.sub(r"\1\2<redacted>", text))


class _RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        # The access log names its request itself: it is written after the handler is done.
        if not hasattr(record, "request_id"):
            record.request_id = REQUEST_ID.get()
        return True


class RedactingFormatter(logging.Formatter):
    """Masks tokens in the whole formatted record, tracebacks included."""

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


class RedactingJsonFormatter(JsonFormatter):
    """One JSON object per line, with tokens masked like the text format."""

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


class RateLimitedLog:
    """At most one line per kind per `interval` seconds, saying how many were left out.

    For what a client or a failing dependency can make happen on every request, so that
    the log's volume stays bounded whatever they send.
    """

    def __init__(self, logger: logging.Logger, *, interval: float) -> None:
        self._logger = logger
        self._interval = interval
        self._last: dict[str, float] = {}
        self._skipped: dict[str, int] = {}

    def log(self, level: int, kind: str, message: str, *args: object) -> None:
        now = time.monotonic()
        last = self._last.get(kind)
        if last is not None and now - last < self._interval:
            self._skipped[kind] = self._skipped.get(kind, 0) + 1
            return
        self._last[kind] = now
        skipped = self._skipped.pop(kind, 0)
        if skipped:
            message += f" ({skipped} more like it since the last such line)"
        self._logger.log(level, message, *args)

    def warning(self, kind: str, message: str, *args: object) -> None:
        self.log(logging.WARNING, kind, message, *args)

    def error(self, kind: str, message: str, *args: object) -> None:
        self.log(logging.ERROR, kind, message, *args)


def setup_logging(level: str, log_format: str = "text") -> None:
    handler = logging.StreamHandler()
    handler.addFilter(_RequestIdFilter())
    if log_format == "json":
        handler.setFormatter(
            RedactingJsonFormatter(
                "{asctime}{levelname}{name}{message}{request_id}",
                style="{",
                rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
            )
        )
    else:
        handler.setFormatter(
            RedactingFormatter("%(asctime)s %(levelname)s %(name)s [%(request_id)s]: %(message)s")
        )
    logging.basicConfig(level=level, handlers=[handler], force=True)


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
            extra={"request_id": response.headers.get("X-Request-Id", "-")},
        )
