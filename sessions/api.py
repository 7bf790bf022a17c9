"""HTTP handlers of the five methods: read the query, read extra data, call storage.

Every handler is wrapped by `envelope.rendered`, the one place errors become responses; the
app has no middleware, which would cost more per request than the handlers themselves.
"""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from .envelope import rendered, success
from .errors import MethodNotAllowed, NotFound, RequestTimeout, TokenNotFound
from .extra import decode_extra
from .keys import SETTINGS, STORAGE
from .models import AFTER, ID, IP, LIMIT, OPTIONAL_IP, TOKEN, USER_ID, make_cursor

__all__ = ["setup_routes"]


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


async def new(request: web.Request) -> web.Response:
    user_id = USER_ID.read(request.query)
    ip = IP.read(request.query)
    patch = await _read_extra(request)
    return success(await request.app[STORAGE].new(user_id, ip, patch))


async def get(request: web.Request) -> web.Response:
    token = TOKEN.read(request.query)
    ip = OPTIONAL_IP.read(request.query)
    patch = await _read_extra(request)
    session = await request.app[STORAGE].get(token, ip, patch)
    if session is None:
        raise TokenNotFound()
    return success(session)


async def delete(request: web.Request) -> web.Response:
    session = await request.app[STORAGE].delete(TOKEN.read(request.query))
    if session is None:
        raise TokenNotFound()
    return success(session)


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


METHODS = {"/new": new, "/get": get, "/del": delete, "/user": by_user, "/ip": by_ip}


def setup_routes(app: web.Application) -> None:
    for path, handler in METHODS.items():
        name = path.strip("/")
        resource = app.router.add_resource(path)
        # Not add_get: its implicit HEAD route must not open or touch a session.
        resource.add_route("GET", rendered(handler, name))
        resource.add_route("POST", rendered(handler, name))
        resource.add_route("*", rendered(method_not_allowed, name))


def setup_fallback_route(app: web.Application) -> None:
    """Everything no other route takes is `not_found`; added last, after every other route."""
    app.router.add_route("*", "/{path:.*}", rendered(not_found))
