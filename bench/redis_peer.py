"""The peer a team would build instead: an aiohttp app on Redis (redis-py asyncio with
hiredis), a hash per session with EXPIRE, a set of tokens per user and per ip, and a Lua
script for the touch on `get`. Same paths, parameters and envelope as the service, for the
loads `make bench` runs (`new`, `get`, `user`, `ip`); no extra data, paging or API keys."""

from __future__ import annotations

import os
import sys
import time
import uuid

import orjson
import redis.asyncio as redis
import uvloop
from aiohttp import web

from sessions.models import canonical_ip, parse_token, parse_user_id

TTL = 180 * 86400
# The touch on `get`: read the session, write its activity and push its expiry, atomically.
TOUCH = """
local fields = redis.call('HGETALL', KEYS[1])
if #fields == 0 then return nil end
redis.call('HSET', KEYS[1], 'activity', ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[2])
return fields
"""
CLIENT = web.AppKey("redis", redis.Redis)


def _ok(data: object) -> web.Response:
    return web.Response(
        body=orjson.dumps({"status": "success", "data": data}), content_type="application/json"
    )


def _error(status: int, code: str) -> web.Response:
    body = {"status": "error", "code": code, "message": code}
    return web.Response(status=status, body=orjson.dumps(body), content_type="application/json")


def _session(token: str, fields: dict[bytes, bytes]) -> dict[str, object]:
    return {
        "ip": fields[b"ip"].decode(),
        "extra": None,
        "user_id": int(fields[b"user_id"]),
        "create": int(fields[b"create"]),
        "activity": int(fields[b"activity"]),
        "token": token,
    }


async def new(request: web.Request) -> web.Response:
    user_id = parse_user_id(request.query.get("user_id", ""))
    ip = canonical_ip(request.query.get("ip", ""))
    if user_id is None or ip is None:
        return _error(400, "invalid_user_id" if user_id is None else "invalid_ip")
    token, now = str(uuid.uuid4()), int(time.time())
    fields = {"ip": ip, "user_id": user_id, "create": now, "activity": now}
    async with request.app[CLIENT].pipeline(transaction=True) as pipe:
        pipe.hset(f"s:{token}", mapping=fields)
        pipe.expire(f"s:{token}", TTL)
        pipe.sadd(f"u:{user_id}", token)
        pipe.sadd(f"i:{ip}", token)
        await pipe.execute()
    return _ok({"ip": ip, "extra": None, "user_id": user_id, "create": now, "activity": now, "token": token})


async def get(request: web.Request) -> web.Response:
    token = parse_token(request.query.get("token", ""))
    if token is None:
        return _error(404, "token_not_found")
    found = await request.app[TOUCH_KEY](keys=[f"s:{token}"], args=[int(time.time()), TTL])
    if not found:
        return _error(404, "token_not_found")
    fields = dict(zip(found[::2], found[1::2], strict=True))
    fields[b"activity"] = str(int(time.time())).encode()
    return _ok(_session(token, fields))


async def _members(request: web.Request, key: str) -> web.Response:
    client = request.app[CLIENT]
    tokens = [t.decode() for t in await client.smembers(key)]
    async with client.pipeline(transaction=False) as pipe:
        for token in tokens:
            pipe.hgetall(f"s:{token}")
        rows = await pipe.execute()
    sessions = [_session(t, f) for t, f in zip(tokens, rows, strict=True) if f]
    sessions.sort(key=lambda s: s["activity"], reverse=True)  # type: ignore[arg-type, return-value]
    return _ok(sessions)


async def by_user(request: web.Request) -> web.Response:
    user_id = parse_user_id(request.query.get("id", ""))
    return _error(400, "invalid_user_id") if user_id is None else await _members(request, f"u:{user_id}")


async def by_ip(request: web.Request) -> web.Response:
    ip = canonical_ip(request.query.get("ip", ""))
    return _error(400, "invalid_ip") if ip is None else await _members(request, f"i:{ip}")


TOUCH_KEY = web.AppKey("touch", object)


def main() -> None:
    port = int(sys.argv[1] if len(sys.argv) > 1 else os.environ["SESSIONS_PORT"])
    client = redis.Redis(host="127.0.0.1", port=int(os.environ["REDIS_PORT"]))
    app = web.Application()
    app[CLIENT] = client
    app[TOUCH_KEY] = client.register_script(TOUCH)
    for path, handler in (("/new", new), ("/get", get), ("/user", by_user), ("/ip", by_ip)):
        app.router.add_route("*", path, handler)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None, loop=uvloop.new_event_loop())


if __name__ == "__main__":
    main()
