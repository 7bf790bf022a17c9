"""The two response shapes of the API, serialised with orjson."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from .errors import SessionsError

__all__ = ["failure", "success"]

_JSON = "application/json"


def success(data: Any) -> web.Response:
    return web.Response(body=orjson.dumps({"status": "success", "data": data}), content_type=_JSON)


def failure(error: SessionsError) -> web.Response:
    body = {"status": "error", "code": error.code, "message": error.message}
    return web.Response(status=error.status, body=orjson.dumps(body), content_type=_JSON)
