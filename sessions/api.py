"""HTTP handlers of the API's methods: read the query, read extra data, call storage.

Every handler is wrapped by `envelope.rendered`, the one place errors become responses; the
app has no middleware, which would cost more per request than the handlers themselves.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from .envelope import rendered, success
from .errors import (
    BadRequest,
    InvalidCursor,
    InvalidExtra,
    InvalidIp,
    InvalidLimit,
    InvalidTtl,
    InvalidUserId,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    RequestTimeout,
    SessionsError,
    StorageFull,
    TokenNotFound,
)
from .extra import decode_extra
from .keys import SETTINGS, STORAGE
from .models import (
    AFTER,
    EXCEPT,
    ID,
    IP,
    LIMIT,
    OPTIONAL_IP,
    TOKEN,
    USER_ID,
    make_cursor,
    parse_token,
    parse_ttl,
)

__all__ = ["COUNT", "METHODS", "SESSION", "SESSIONS", "TOKEN_HEADER", "Method", "setup_routes"]

# Where `get`, `del` and `rotate` also take the token.
TOKEN_HEADER = "X-Session-Token"


async def _read_extra(request: web.Request) -> dict[str, Any] | None:
    if not request.body_exists:
        return None
    try:
        # Over client_max_size (the extra data limit) this raises 413 before buffering more;
        # a body that never comes (or a Content-Length that lies) runs into the timeout.
        async with asyncio.timeout(request.app[SETTINGS].body_timeout):
            body = await request.read()
    except TimeoutError:
        raise RequestTimeout() from None
    return decode_extra(request.content_type, body)


def _token(request: web.Request) -> str:
    """The session token, from the query or the X-Session-Token header (which keeps it out
    of URLs and the logs that hold them). Given both ways, the two must agree."""
    headers = request.headers.getall(TOKEN_HEADER, ())
    if not headers:
        return str(TOKEN.read(request.query))
    if len(headers) > 1:
        raise BadRequest(f"{TOKEN_HEADER} is given more than once.")
    token = parse_token(headers[0])
    if token is None:
        raise TokenNotFound()
    if "token" in request.query and TOKEN.read(request.query).lower() != token.lower():
        raise BadRequest(f"The token in the query and in {TOKEN_HEADER} differ.")
    return token


def _own_ttl(request: web.Request) -> int | None:
    values = request.query.getall("ttl", ())
    if not values:
        return None
    longest = request.app[SETTINGS].idle_ttl
    ttl = parse_ttl(values[0], longest) if len(values) == 1 else None
    if ttl is None:
        raise InvalidTtl(f"ttl must be a whole number of seconds from 1 to {longest}.")
    return ttl


async def new(request: web.Request) -> web.Response:
    user_id = USER_ID.read(request.query)
    ip = IP.read(request.query)
    ttl = _own_ttl(request)
    patch = await _read_extra(request)
    return success(await request.app[STORAGE].new(user_id, ip, patch, ttl=ttl))


async def get(request: web.Request) -> web.Response:
    token = _token(request)
    ip = OPTIONAL_IP.read(request.query)
    patch = await _read_extra(request)
    session = await request.app[STORAGE].get(token, ip, patch)
    if session is None:
        raise TokenNotFound()
    return success(session)


async def delete(request: web.Request) -> web.Response:
    session = await request.app[STORAGE].delete(_token(request))
    if session is None:
        raise TokenNotFound()
    return success(session)


async def rotate(request: web.Request) -> web.Response:
    session = await request.app[STORAGE].rotate(_token(request))
    if session is None:
        raise TokenNotFound()
    return success(session)


async def delete_by_user(request: web.Request) -> web.Response:
    user_id = ID.read(request.query)
    keep = EXCEPT.read(request.query)
    return success({"deleted": await request.app[STORAGE].delete_all("user", user_id, except_token=keep)})


async def delete_by_ip(request: web.Request) -> web.Response:
    return success({"deleted": await request.app[STORAGE].delete_all("ip", IP.read(request.query))})


async def _listing(request: web.Request, kind: str, name: str, key: int | str) -> web.Response:
    """One page of a listing; a Link header (RFC 8288) names the next one, if any."""
    query = request.query
    limit = LIMIT.read(query)
    sessions, more = await request.app[STORAGE].page(
        kind, key, limit or request.app[SETTINGS].list_max, AFTER.read(query)
    )
    if not (more and sessions):
        return success(sessions)
    params: dict[str, str | int] = {name: key}
    if limit is not None:
        params["limit"] = limit
    params["after"] = make_cursor(sessions[-1])
    return success(sessions, {"Link": f'<{request.path}?{urlencode(params)}>; rel="next"'})


async def by_user(request: web.Request) -> web.Response:
    return await _listing(request, "user", "id", ID.read(request.query))


async def by_ip(request: web.Request) -> web.Response:
    return await _listing(request, "ip", "ip", IP.read(request.query))


async def method_not_allowed(request: web.Request) -> web.Response:
    raise MethodNotAllowed()


async def not_found(request: web.Request) -> web.Response:
    raise NotFound()


# What a method answers in `data`: a SessionObject, a list of them, or {"deleted": N}.
SESSION, SESSIONS, COUNT = "session", "list", "count"


@dataclass(frozen=True, slots=True)
class Method:
    """One API method, declared once: routing, the metrics label and the API description
    (openapi.py) all read this table."""

    path: str
    handler: Callable[[web.Request], Awaitable[web.Response]]
    name: str  # its label in the metrics
    summary: str
    params: tuple[tuple[str, bool], ...]  # documented parameters (openapi._PARAMS), required or not
    result: str
    errors: tuple[type[SessionsError], ...]  # beside those any method may answer
    extra: bool = False  # a body is extra data


_TOKEN_PARAMS = (("token", False), ("X-Session-Token", False))
_PAGE_PARAMS = (("limit", False), ("after", False))

METHODS: tuple[Method, ...] = (
    Method(
        "/new",
        new,
        "new",
        "Open a session",
        (("user_id", True), ("ip", True), ("ttl", False)),
        SESSION,
        (InvalidUserId, InvalidIp, InvalidTtl, InvalidExtra, PayloadTooLarge, StorageFull),
        extra=True,
    ),
    Method(
        "/get",
        get,
        "get",
        "Check a session and mark it active; with ip, move it to that address",
        (*_TOKEN_PARAMS, ("ip", False)),
        SESSION,
        (TokenNotFound, InvalidIp, InvalidExtra, PayloadTooLarge, StorageFull),
        extra=True,
    ),
    Method("/del", delete, "del", "End a session", _TOKEN_PARAMS, SESSION, (TokenNotFound, BadRequest)),
    Method(
        "/user",
        by_user,
        "user",
        "Live sessions of a user, newest activity first, a page at a time",
        (("id", True), *_PAGE_PARAMS),
        SESSIONS,
        (InvalidUserId, InvalidLimit, InvalidCursor),
    ),
    Method(
        "/ip",
        by_ip,
        "ip",
        "Live sessions seen from an address, newest activity first, a page at a time",
        (("ip", True), *_PAGE_PARAMS),
        SESSIONS,
        (InvalidIp, InvalidLimit, InvalidCursor),
    ),
    Method(
        "/user/del",
        delete_by_user,
        "user_del",
        "End every live session of a user, but one if `except` names it (sign out everywhere else)",
        (("id", True), ("except", False)),
        COUNT,
        (InvalidUserId, TokenNotFound),
    ),
    Method(
        "/ip/del",
        delete_by_ip,
        "ip_del",
        "End every live session seen from an address",
        (("ip", True),),
        COUNT,
        (InvalidIp,),
    ),
    Method(
        "/rotate",
        rotate,
        "rotate",
        "The same session under a new token (after a privilege change); the old token ends at once",
        _TOKEN_PARAMS,
        SESSION,
        (TokenNotFound, BadRequest),
    ),
)


def setup_routes(app: web.Application) -> None:
    for method in METHODS:
        handler, name = method.handler, method.name
        resource = app.router.add_resource(method.path)
        # Not add_get: its implicit HEAD route must not open or touch a session.
        resource.add_route("GET", rendered(handler, name))
        resource.add_route("POST", rendered(handler, name))
        resource.add_route("*", rendered(method_not_allowed, name))


def setup_fallback_route(app: web.Application) -> None:
    """Everything no other route takes is `not_found`; added last, after every other route."""
    app.router.add_route("*", "/{path:.*}", rendered(not_found))
