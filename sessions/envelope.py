"""The two response shapes of the API, and the one place errors are turned into responses."""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web

from .errors import BadRequest, InternalError, PayloadTooLarge, RequestTimeout, SessionsError
from .keys import AUTH, SETTINGS

__all__ = ["failure", "rendered", "success"]

log = logging.getLogger(__name__)

_JSON = "application/json"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def success(data: Any) -> web.Response:
    return web.Response(body=orjson.dumps({"status": "success", "data": data}), content_type=_JSON)


def failure(error: SessionsError) -> web.Response:
    body = {"status": "error", "code": error.code, "message": error.message}
    return web.Response(
        status=error.status, body=orjson.dumps(body), content_type=_JSON, headers=error.headers
    )


def _from_http(error: web.HTTPException, request: web.Request) -> SessionsError:
    # aiohttp raises these while reading a body.
    if error.status == 413:
        return PayloadTooLarge(f"Extra data may be at most {request.app[SETTINGS].extra_max_bytes} bytes.")
    if 400 <= error.status < 500:
        return BadRequest()
    return InternalError()


def rendered(handler: Handler) -> Handler:
    """`handler` with every failure answered as the error envelope; only surprises are logged."""

    @functools.wraps(handler)
    async def wrapper(request: web.Request) -> web.StreamResponse:
        try:
            auth = request.app[AUTH]
            if auth is not None:
                auth.check(request)
            return await handler(request)
        except SessionsError as error:
            response = failure(error)
            if isinstance(error, RequestTimeout):
                # The rest of the body may still come; the connection cannot be reused.
                response.force_close()
            return response
        except web.HTTPException as error:
            return failure(_from_http(error, request))
        except Exception:
            # The path only: the query may hold a token.
            log.exception("unexpected error in %s %s", request.method, request.path)
            return failure(InternalError())

    return wrapper
