"""The two response shapes of the API, and the one place errors are turned into responses."""

from __future__ import annotations

import functools
import itertools
import logging
import os
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web

from .errors import BadRequest, InternalError, PayloadTooLarge, RequestTimeout, SessionsError
from .keys import AUTH, SETTINGS
from .logs import REQUEST_ID
from .metrics import METRICS

__all__ = ["failure", "rendered", "success"]

log = logging.getLogger(__name__)

_JSON = "application/json"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# A caller's own request id is kept if it cannot smuggle anything into a log line.
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


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


# Made ids: a random prefix per process and a counter, unique without a syscall per request.
_ID_PREFIX = os.urandom(4).hex()
_id_counter = itertools.count()


def _request_id(request: web.Request) -> str:
    given = request.headers.get("X-Request-Id")
    if given is not None and _REQUEST_ID.fullmatch(given):
        return given
    return f"{_ID_PREFIX}{next(_id_counter) & 0xFFFFFFFF:08x}"


def rendered(handler: Handler, name: str = "other") -> Handler:
    """`handler` behind the service's one front door: the API key check, a request id (echoed
    in X-Request-Id and on every log line), every failure answered as the error envelope (only
    surprises are logged), and the request counted in the metrics under `name`."""

    stats = METRICS.method(name)

    @functools.wraps(handler)
    async def wrapper(request: web.Request) -> web.StreamResponse:
        started = time.perf_counter()
        request_id = _request_id(request)
        context = REQUEST_ID.set(request_id)
        code = "success"
        try:
            auth = request.app[AUTH]
            if auth is not None:
                auth.check(request)
            response = await handler(request)
        except SessionsError as error:
            response, code = failure(error), error.code
            if isinstance(error, RequestTimeout):
                # The rest of the body may still come; the connection cannot be reused.
                response.force_close()
        except web.HTTPException as error:
            converted = _from_http(error, request)
            response, code = failure(converted), converted.code
        except Exception:
            # The path only: the query may hold a token.
            log.exception("unexpected error in %s %s", request.method, request.path)
            response, code = failure(InternalError()), InternalError.code
        finally:
            REQUEST_ID.reset(context)
        response.headers["X-Request-Id"] = request_id
        stats.record(code, time.perf_counter() - started)
        return response

    return wrapper
