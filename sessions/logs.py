"""Logging setup; no log line ever carries a session token. (The access log, which needs
aiohttp, is server.py's: this module and the storage that uses it know nothing of HTTP.)"""

from __future__ import annotations

import datetime
import logging
import re
import time
from contextvars import ContextVar
from typing import Any
from urllib.parse import urlencode

from pythonjsonlogger.json import JsonFormatter

__all__ = [
    "REQUEST_ID",
    "RateLimitedLog",
    "RedactingFormatter",
    "RedactingJsonFormatter",
    "escape_controls",
    "masked_query",
    "redact",
    "setup_logging",
]

# The id of the request being handled, for every log line written meanwhile.
REQUEST_ID: ContextVar[str] = ContextVar("request_id", default="-")

# Query parameters whose values are, or may be, credentials: the tokens (`token`, `except`),
# the paging cursor, and anything whose name suggests a secret (an API key sent in the query
# by mistake, say), wherever the word is in the name: `user[password]`, `password[]`,
# `auth[token]` and `api key` are such names as much as `password` is.
_SECRET_WORD = r"(?:token|except|after|key|pass|secret|auth|cred)"
_SECRET_PARAM = re.compile(_SECRET_WORD, re.IGNORECASE)
# In text, a name as a query or form writes it: word characters, dots, dashes, brackets
# (arrays and nested fields) and spaces as `+`, each also percent-encoded (`%5B`, `%5D`,
# `%20`); a literal space ends it.
_NAME_PART = r"(?:[\w.\-\[\]+]|%[0-9a-fA-F]{2})"
_SECRET_VALUE = re.compile(
    rf"(?<![\w.\-\[\]+%])({_NAME_PART}*{_SECRET_WORD}{_NAME_PART}*?)(=|%3[dD])[^&\s'\"\\]*",
    re.IGNORECASE,
)
# Control characters (C0, DEL, C1) and Unicode's line separators: written as escapes, so that
# nothing a client sends can end a log line early or forge another one.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
# Tokens are UUIDs, and a token may turn up anywhere a request is quoted (an exception
# message repeating a bad request line, say), so anything shaped like one is masked.
_UUID = re.compile(r"[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}")


def redact(text: str) -> str:
    return _UUID.sub("<redacted>", _SECRET_VALUE.sub(r"\1\2<redacted>", text))


def escape_controls(text: str) -> str:
    return _CONTROL.sub(lambda match: f"\\x{ord(match.group()):02x}", text)


def _redact_value(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {key: _redact_value(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_redact_value(item) for item in value]
    return value


class _RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        # The access log names its request itself: it is written after the handler is done.
        if not hasattr(record, "request_id"):
            record.request_id = REQUEST_ID.get()
        return True


def _iso_time(record: logging.LogRecord) -> str:
    """The record's time in ISO 8601 with milliseconds and the zone's offset."""
    moment = datetime.datetime.fromtimestamp(record.created).astimezone()
    return moment.isoformat(timespec="milliseconds")


class RedactingFormatter(logging.Formatter):
    """Masks tokens in the whole formatted record, tracebacks included, and escapes control
    characters in the message, so that one record is one line."""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return _iso_time(record)

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = escape_controls(record.message)
        return super().formatMessage(record)

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


class RedactingJsonFormatter(JsonFormatter):
    """One JSON object per line, with tokens masked like the text format: in each value
    before it is encoded, so that masking never cuts an escape and every line parses."""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return _iso_time(record)

    def process_log_record(self, log_data: dict[str, Any]) -> dict[str, Any]:
        return {key: _redact_value(value) for key, value in super().process_log_record(log_data).items()}


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


def masked_query(pairs: list[tuple[str, str]]) -> str:
    """A query string with the values of parameters that may hold a secret masked."""
    return urlencode([(key, "***" if _SECRET_PARAM.search(key) else value) for key, value in pairs])
