"""The API's methods: their handlers and the route table that declares each one once.

A handler gets the service and its parameters' values, already read and checked by the
router (routing.py) in the order the table lists them, and the extra data last where the
method takes it; it calls storage and shapes the answer.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar
from urllib.parse import urlencode

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from .contract import COUNT, EVENT_FIELDS, EVENTS, KIND_IP, KIND_USER
from .envelope import WITH_ID, answer, success, success_within
from .errors import BadRequest, IdempotencyConflict, NotFound, Overloaded, StorageFull, TokenNotFound
from .limits import EVENTS_PAGE
from .models import Cursor, Deleted, Session, make_cursor
from .params import (
    AFTER,
    EVENTS_AFTER,
    EVENTS_LIMIT,
    EXCEPT,
    EXCEPT_ID,
    ID,
    IDEMPOTENCY_KEY,
    IP,
    LIMIT,
    OPTIONAL_IP,
    SESSION_ID,
    TOKEN,
    TTL,
    USER_ID,
    WAIT,
    WITH,
    Param,
)
from .routing import BULK, CHECK, SESSIONS, Route
from .service import Service

__all__ = ["METHODS"]

Extra = dict[str, Any] | None


class Count(BaseModel):
    """How many live sessions there are."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    count: Annotated[int, Field(ge=0)]


class Event(BaseModel):
    """A change to a session: `kind` `opened`, `rotated`, `moved` (to another ip) or `ended`,
    with `reason` for an end: `del`, `session/del`, `user/del`, `ip/del`, `cap`, `lifetime` or
    `idle`; `session` is the session's id."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    seq: Annotated[int, Field(ge=1)]
    time: int
    kind: str
    reason: str | None
    session: str
    user_id: int
    ip: str


class EventsPage(BaseModel):
    """A page of the event feed, oldest first: `next` is the `after` of the next call (the
    last event's seq, or this call's `after` when it has none); `missed` says that events
    after `after` were removed by the retention before this call read them."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    events: list[Event]
    next: Annotated[int, Field(ge=0)]
    missed: bool

    EXAMPLE: ClassVar[dict[str, Any]] = {
        "events": [
            {
                "seq": 8,
                "time": 1764112345,
                "kind": "ended",
                "reason": "del",
                "session": "019ac0d5-7c1e-7b4a-9d2f-3a6c8e1f0b24",
                "user_id": 1,
                "ip": "192.0.2.10",
            }
        ],
        "next": 8,
        "missed": False,
    }


async def new(
    service: Service, user_id: int, ip: str, ttl: int | None, key: str | None, patch: Extra
) -> web.Response:
    return success(await service.storage.new(user_id, ip, patch, ttl=ttl, idempotency_key=key))


async def get(service: Service, token: str, ip: str | None, patch: Extra) -> web.Response:
    session = await service.storage.get(token, ip, patch)
    if session is None:
        raise TokenNotFound()
    return success(session)


async def delete(service: Service, token: str) -> web.Response:
    session = await service.storage.delete(token)
    if session is None:
        raise TokenNotFound()
    return success(session)


async def rotate(service: Service, token: str) -> web.Response:
    session = await service.storage.rotate(token)
    if session is None:
        raise TokenNotFound()
    return success(session)


def _by_id(session: Session | None) -> web.Response:
    """A session found by its id, answered with its id and without its token: whoever holds
    an id (a devices page, a listing without tokens) never gets a token from it."""
    if session is None:
        raise TokenNotFound("No live session has this id.")
    del session["token"]
    return success(session, ids=True)


async def peek(service: Service, session_id: str) -> web.Response:
    return _by_id(await service.storage.peek(session_id))


async def delete_by_id(service: Service, session_id: str) -> web.Response:
    return _by_id(await service.storage.delete_id(session_id))


async def delete_by_user(
    service: Service, user_id: int, keep_id: str | None, keep: str | None
) -> web.Response:
    # EXCEPT_ID, read first, refuses a request that names a token to keep too.
    deleted = await service.storage.delete_all(KIND_USER, user_id, except_token=keep, except_id=keep_id)
    return success({"deleted": deleted})


async def delete_by_ip(service: Service, ip: str) -> web.Response:
    return success({"deleted": await service.storage.delete_all(KIND_IP, ip)})


async def _listing(
    service: Service, kind: str, param: Param, key: int | str, limit: int | None, after: Cursor | None
) -> web.Response:
    """One page of a listing, its JSON within the page budget (SESSIONS_PAGE_MAX_BYTES); a
    Link header (RFC 8288) names the next one, if any: a relative reference (`user?id=..`),
    which resolves against this page's URL to the same path, at the root as behind a
    gateway's prefix (`/sessions/user?..`), where an absolute path would leave the prefix."""
    settings = service.settings
    sessions, cursors, more = await service.storage.page(kind, key, limit or settings.list_max, after)
    ids = settings.listings_without_tokens
    if ids:
        # Listings without tokens: each session by its id, its token never leaves the store.
        for session in sessions:
            del session["token"]
    body, count = success_within(sessions, settings.page_max_bytes, ids=ids)
    if count == 0 or (count == len(sessions) and not more):
        return answer(body)
    query: dict[str, str | int] = {param.name: key}
    if limit is not None:
        query["limit"] = limit
    query["after"] = make_cursor(cursors[count - 1])
    if WITH_ID.get():
        # Asked for ids: so are the pages after it, whose URL a client follows as it is.
        query[WITH] = "id"
    return answer(body, {"Link": f'<{kind}?{urlencode(query)}>; rel="next"'})


async def by_user(service: Service, user_id: int, limit: int | None, after: Cursor | None) -> web.Response:
    return await _listing(service, KIND_USER, ID, user_id, limit, after)


async def by_ip(service: Service, ip: str, limit: int | None, after: Cursor | None) -> web.Response:
    return await _listing(service, KIND_IP, IP, ip, limit, after)


async def _events_page(service: Service, after: int, limit: int) -> Any:
    # A page is admitted through the feed's gate; the wait between two through none.
    gate = service.pages
    await gate.enter(service.settings.queue_timeout)
    try:
        return await service.storage.call(EVENTS, {"after": after, "limit": limit})
    finally:
        gate.leave()


async def events(service: Service, after: int | None, limit: int | None, wait: int | None) -> web.Response:
    if not service.settings.events:
        raise NotFound("The event feed is off: SESSIONS_EVENTS=on turns it on.")
    after = after or 0
    limit = limit or EVENTS_PAGE
    reply = await _events_page(service, after, limit)
    if not reply["events"] and wait:
        # Woken by the process' one wait on Tarantool (feed.py), holding no turn meanwhile.
        cut = await service.feed.wait(after, wait, poll=True)
        reply = await _events_page(service, after, limit)
    else:
        cut = False
    page = [dict(zip(EVENT_FIELDS, row, strict=False)) for row in reply["events"]]
    following = page[-1]["seq"] if page else after
    response = success({"events": page, "next": following, "missed": bool(reply["missed"])})
    if cut:
        # Ended early to make room for another client (feed.cut_one): its slot is freed.
        response.force_close()
    return response


METHODS: tuple[Route, ...] = (
    Route(
        "/new",
        new,
        "new",
        (USER_ID, IP, TTL, IDEMPOTENCY_KEY),
        extra=True,
        summary="Open a session",
        errors=(StorageFull, IdempotencyConflict),
        work=CHECK,
    ),
    Route(
        "/get",
        get,
        "get",
        (TOKEN, OPTIONAL_IP),
        extra=True,
        summary="Check a session and mark it active; with ip, move it to that address",
        errors=(StorageFull,),
        work=CHECK,
        retry_safe=True,  # the same activity, address and merge again
    ),
    Route("/del", delete, "del", (TOKEN,), summary="End a session", errors=(BadRequest,), work=CHECK),
    Route(
        "/user",
        by_user,
        "user",
        (ID, LIMIT, AFTER),
        summary="Live sessions of a user, newest opened first, a page at a time",
        result=SESSIONS,
        work=BULK,
        retry_safe=True,
    ),
    Route(
        "/ip",
        by_ip,
        "ip",
        (IP, LIMIT, AFTER),
        summary="Live sessions last seen from an address, newest opened first, a page at a time",
        result=SESSIONS,
        work=BULK,
        retry_safe=True,
    ),
    Route(
        "/user/del",
        delete_by_user,
        "user_del",
        (ID, EXCEPT_ID, EXCEPT),
        summary="End every live session of a user, but the one `except`, X-Session-Token or `except_id` "
        "names (sign out everywhere else)",
        result=Deleted,
        errors=(BadRequest,),
        work=BULK,
    ),
    Route(
        "/ip/del",
        delete_by_ip,
        "ip_del",
        (IP,),
        summary="End every live session seen from an address",
        result=Deleted,
        work=BULK,
    ),
    Route(
        "/rotate",
        rotate,
        "rotate",
        (TOKEN,),
        summary="The same session under a new token (after a privilege change); the old token ends at once",
        errors=(BadRequest,),
        work=CHECK,
    ),
    Route.forward(
        "/user/count",
        COUNT,
        "user_count",
        (ID,),
        fixed={"kind": KIND_USER},
        summary="How many live sessions a user has",
        result=Count,
        work=BULK,
        retry_safe=True,
    ),
    Route.forward(
        "/ip/count",
        COUNT,
        "ip_count",
        (IP,),
        fixed={"kind": KIND_IP},
        summary="How many live sessions an address has (for abuse checks)",
        result=Count,
        work=BULK,
        retry_safe=True,
    ),
    # Not gated as a whole: its pages go through the bulk gate, its long poll through none.
    Route(
        "/events",
        events,
        "events",
        (EVENTS_AFTER, EVENTS_LIMIT, WAIT),
        summary="The changes to sessions after a seq, oldest first (with SESSIONS_EVENTS=on); wait "
        "long-polls",
        result=EventsPage,
        errors=(NotFound, Overloaded),
        retry_safe=True,
    ),
    Route(
        "/session",
        peek,
        "session",
        (SESSION_ID,),
        summary="A live session by its id, as stored: its activity is not recorded",
        errors=(TokenNotFound,),
        work=CHECK,
        retry_safe=True,
    ),
    Route(
        "/session/del",
        delete_by_id,
        "session_del",
        (SESSION_ID,),
        summary="End a session by its id",
        errors=(TokenNotFound,),
        work=CHECK,
    ),
)
