"""HTTP handlers of the five methods: validate the query, read extra data, call storage."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from .envelope import success
from .errors import TokenNotFound
from .extra import decode_extra
from .keys import STORAGE
from .models import DelParams, GetParams, IpParams, NewParams, UserParams, parse_params

__all__ = ["setup_routes"]


async def _read_extra(request: web.Request) -> dict[str, Any] | None:
    if not request.body_exists:
        return None
    # Over client_max_size (the extra data limit) this raises 413 before buffering more.
    body = await request.read()
    return decode_extra(request.content_type, body)


async def new(request: web.Request) -> web.Response:
    params = parse_params(NewParams, request.query)
    patch = await _read_extra(request)
    return success(await request.app[STORAGE].new(params.user_id, params.ip, patch))


async def get(request: web.Request) -> web.Response:
    params = parse_params(GetParams, request.query)
    patch = await _read_extra(request)
    session = await request.app[STORAGE].get(params.token, params.ip, patch)
    if session is None:
        raise TokenNotFound()
    return success(session)


async def delete(request: web.Request) -> web.Response:
    params = parse_params(DelParams, request.query)
    session = await request.app[STORAGE].delete(params.token)
    if session is None:
        raise TokenNotFound()
    return success(session)


async def by_user(request: web.Request) -> web.Response:
    params = parse_params(UserParams, request.query)
    return success(await request.app[STORAGE].by_user(params.id))


async def by_ip(request: web.Request) -> web.Response:
    params = parse_params(IpParams, request.query)
    return success(await request.app[STORAGE].by_ip(params.ip))


def setup_routes(app: web.Application) -> None:
    for path, handler in (("/new", new), ("/get", get), ("/del", delete), ("/user", by_user), ("/ip", by_ip)):
        # add_route rather than add_get: a HEAD must not open or touch a session.
        app.router.add_route("GET", path, handler)
        app.router.add_route("POST", path, handler)
