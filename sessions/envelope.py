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
from aiohttp.http_exceptions import ContentEncodingError, HttpProcessingError
from aiohttp.web_protocol import RequestPayloadError

from .errors import (
    BadRequest,
    ExpectationFailed,
    InternalError,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    RequestTimeout,
    SessionsError,
)
from .keys import AUTH, SETTINGS
from .logs import REQUEST_ID
from .metrics import METRICS

__all__ = ["failure", "from_http", "rendered", "success"]

log = logging.getLogger(__name__)

_JSON = "application/json"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# A caller's own request id is kept if it cannot smuggle anything into a log line.
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


# Answers carry tokens and sessions: no cache on the way may keep them. The server names
# itself without versions, which would only help an attacker pick an exploit.
_HEADERS = {"Cache-Control": "no-store", "Server": "sessions"}


def success(data: Any, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        body=orjson.dumps({"status": "success", "data": data}),
        content_type=_JSON,
        headers={**_HEADERS, **headers} if headers else _HEADERS,
    )


def failure(error: SessionsError) -> web.Response:
    body = {"status": "error", "code": error.code, "message": error.message}
    return web.Response(
        status=error.status,
        body=orjson.dumps(body),
        content_type=_JSON,
        headers={**_HEADERS, **error.response_headers()},
    )


def from_http(error: web.HTTPException, request: web.BaseRequest) -> SessionsError:
    """The service's error for one aiohttp raised: while reading a body, or before any
    handler ran (a target no route can take, such as `OPTIONS *`; an unknown Expect)."""
    if error.status == 413 and isinstance(request, web.Request):
        return PayloadTooLarge(f"Extra data may be at most {request.app[SETTINGS].extra_max_bytes} bytes.")
    known = _BY_STATUS.get(error.status)
    if known is not None:
        return known()
    if 400 <= error.status < 500:
        return BadRequest()
    return InternalError()


_BY_STATUS: dict[int, type[SessionsError]] = {
    error.status: error for error in (NotFound, MethodNotAllowed, ExpectationFailed, PayloadTooLarge)
}


def _from_protocol(error: Exception) -> SessionsError:
    # A body that breaks HTTP's rules (a bad chunk, a length it does not keep, an encoding
    # that does not decode) is the client's doing; aiohttp raises it from the read, as its
    # own error or wrapped in a RequestPayloadError.
    if isinstance(error.__cause__ or error, ContentEncodingError):
        return BadRequest("The request body could not be decoded (Content-Encoding).")
    return BadRequest("The request body is not valid HTTP.")


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
            converted = from_http(error, request)
            response, code = failure(converted), converted.code
        except (HttpProcessingError, RequestPayloadError) as error:
            converted = _from_protocol(error)
            response, code = failure(converted), converted.code
            response.force_close()
            # The body cannot be read further: marked as ended, aiohttp does not try to
            # drain it after the answer (which would raise, and log, the same error again).
            request.content.feed_eof()
        except ConnectionError:
            # The client is gone: nobody to answer, nothing to log (aiohttp drops it).
            stats.record("client_gone", time.perf_counter() - started)
            raise
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
