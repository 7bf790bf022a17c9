"""The one front door of every request: a route table looked up by path in a dictionary,
on aiohttp's low-level server (no Application, no router, no middleware).

For each request the router checks the API key, gives it a request id (echoed in
X-Request-Id and on every log line), reads the route's declared parameters and its extra
data, calls the handler with the service and those values, answers every failure as the
error envelope (logging only surprises) and counts the request in the metrics under the
route's name. What each of these costs per request is in bench/README.md.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import itertools
import logging
import os
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from pydantic import BaseModel

from .aiohttp_internals import (
    PROTOCOL_ERRORS,
    SEND_PIECE,
    abandon_body,
    client_left,
    from_protocol,
    send_bounded,
    send_continue,
)
from .auth import ApiKeys
from .contract import Operation
from .envelope import USER_ID_AS_TEXT, WITH_ID, failure, success
from .errors import (
    BadRequest,
    ExpectationFailed,
    InternalError,
    InvalidExtra,
    MethodNotAllowed,
    NotFound,
    Overloaded,
    PayloadTooLarge,
    RequestTimeout,
    SessionsError,
)
from .extra import decode_extra
from .logs import REQUEST_ID
from .metrics import METRICS
from .overload import BULK, CHECK, Gate
from .params import USER_ID_FORMAT, WITH, Param
from .service import Service

__all__ = ["BULK", "CHECK", "SESSION", "SESSIONS", "Result", "Route", "Router", "Service"]

log = logging.getLogger("sessions.routing")

Handler = Callable[..., Awaitable[web.StreamResponse]]

# What a method answers in `data`: a SessionObject, a list of them, or (a pydantic model
# class) an object of that model's fields.
SESSION, SESSIONS = "session", "sessions"
Result = str | type[BaseModel]


@dataclass(frozen=True, slots=True)
class Route:
    """One path, declared once: the router, the metrics label and the API description
    (openapi.py) all read it."""

    path: str
    handler: Handler  # called as handler(service, *values of params[, extra data])
    name: str  # its label in the metrics
    params: tuple[Param, ...] = ()
    extra: bool = False  # a body is extra data, given to the handler after the parameters
    methods: tuple[str, ...] = ("GET", "POST")
    probe: bool = False  # open without an API key when SESSIONS_OPEN_PROBES is on
    public: bool = False  # open without an API key always (the API's documentation)
    # In the API description, when it has a summary: the API's methods have one, the
    # operational routes (probes, metrics, the docs page) none.
    summary: str = ""
    result: Result = SESSION
    errors: tuple[type[SessionsError], ...] = ()  # beside its parameters' and any method's
    work: str | None = None  # CHECK or BULK for the API's methods; None: not gated (ops)
    # Whether a client may repeat a call whose answer it did not get without doing its work
    # twice (the API description's `x-retry-safe`); `new` is, with an Idempotency-Key.
    retry_safe: bool = False
    # The Lua operation the handler calls when it only forwards its parameters (forward()),
    # one of contract.OPERATIONS, which the service checks the Lua it talks to has.
    operation: Operation | None = None

    @classmethod
    def forward(
        cls,
        path: str,
        operation: Operation,
        name: str,
        params: tuple[Param, ...],
        *,
        fixed: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> Route:
        """A route whose handler calls the operation and answers its reply as `data`: `fixed`
        gives some of its arguments the same value on every call (the kind of a kind-keyed
        operation, say), and the parameters' values, in order, are the others, in the order of
        the operation's arguments (a None one left out)."""
        fixed = dict(fixed or {})
        unknown = sorted(set(fixed) - set(operation.args))
        if unknown:
            raise ValueError(f"{path}: {operation.name} takes no argument {unknown}")
        given = tuple(arg for arg in operation.args if arg not in fixed)
        if len(params) != len(given):
            raise ValueError(f"{path}: {len(params)} parameters for {operation.name}'s {list(given)}")

        async def handler(service: Service, *values: Any) -> web.Response:
            args = dict(fixed)
            args.update((arg, value) for arg, value in zip(given, values, strict=True) if value is not None)
            return success(await service.storage.call(operation, args))

        return cls(path, handler, name, params, operation=operation, **kwargs)

    def all_errors(self) -> tuple[type[SessionsError], ...]:
        """Every error this route answers but those any route may: its parameters' first."""
        found = [param.error for param in self.params]
        if self.extra:
            found += [InvalidExtra, PayloadTooLarge]
        if self.work is not None:
            found.append(Overloaded)
        return tuple(dict.fromkeys([*found, *self.errors]))


# A caller's own request id is kept if it cannot smuggle anything into a log line.
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
# Made ids: a random prefix per process and a counter, unique without a syscall per request.
_ID_PREFIX = os.urandom(4).hex()
_id_counter = itertools.count()


def _request_id(request: web.BaseRequest) -> str:
    given = request.headers.get("X-Request-Id")
    if given is not None and _REQUEST_ID.fullmatch(given):
        return given
    return f"{_ID_PREFIX}{next(_id_counter) & 0xFFFFFFFF:08x}"


async def _not_found(service: Service) -> web.Response:
    raise NotFound()  # never called: no method is allowed, so the router answers first


async def _read_extra(
    request: web.BaseRequest, service: Service, expect: str | None
) -> tuple[dict[str, Any] | None, int]:
    """The extra data a body carries, and the share of the bodies budget taken for it (to
    give back once the request is done)."""
    if not request.body_exists:
        return None, 0
    limit = service.settings.extra_max_bytes
    too_large = f"Extra data may be at most {limit} bytes."
    length = request.content_length
    if (length or 0) > limit:
        # Said up front: refused before a byte of it is waited for.
        raise PayloadTooLarge(too_large)
    # Counted before it is read: a chunked body, whose length is not said, at the most it
    # may take. Beyond the budget, nothing of it is read (the connection is closed).
    share = limit if length is None else length
    await service.bodies.take(share, 0)
    try:
        if expect is not None:
            # The client waits for this before it sends the body; only a request that got
            # this far (its key and parameters checked) is told to go on.
            await send_continue(request)
        try:
            # Over client_max_size (the extra data limit) this raises 413 before buffering
            # more; a body that never comes (or a Content-Length that lies) runs into the
            # timeout.
            async with asyncio.timeout(service.settings.body_timeout):
                body = await request.read()
        except TimeoutError:
            raise RequestTimeout() from None
        except web.HTTPRequestEntityTooLarge:
            # A chunked body, or one whose Content-Length lied, that grew over the limit.
            raise PayloadTooLarge(too_large) from None
        return decode_extra(request.content_type, body), share
    except BaseException:
        service.bodies.give(share)
        raise


# The body encodings aiohttp decodes (zstd where its library is installed; else it answers
# that the body does not decode), and identity.
_ENCODINGS = frozenset({"gzip", "deflate", "br", "zstd", "identity"})


async def _discard_body(request: web.BaseRequest, service: Service) -> None:
    """Read the body of a method that takes none, and drop it, a piece at a time: a body
    that does not decode (Content-Encoding) or breaks HTTP is the request's error, answered
    before the method does anything, rather than one aiohttp meets after the answer. Past the
    extra data limit it is left unread (the connection is then closed)."""
    limit = service.settings.extra_max_bytes
    read = 0
    try:
        async with asyncio.timeout(service.settings.body_timeout):
            while read <= limit and (piece := await request.content.readany()):
                read += len(piece)
    except TimeoutError:
        raise RequestTimeout() from None


def _answer_body(response: web.StreamResponse) -> bytes | None:
    """The body of an answer made whole in memory (None: one that is not)."""
    if isinstance(response, web.Response) and isinstance(response.body, bytes):
        return response.body
    return None


class _Prepared:
    """A route with what the router needs per request made ahead."""

    __slots__ = (
        "extra",
        "gate",
        "handler",
        "methods",
        "open",
        "page",
        "params",
        "refusal",
        "route",
        "sessions",
        "stats",
    )

    def __init__(self, route: Route, *, open_probes: bool, gates: dict[str | None, Gate | None]) -> None:
        self.route = route
        self.gate = gates[route.work]
        self.handler = route.handler
        self.params = route.params
        self.extra = route.extra
        # A page of sessions: its answer holds a share of the answers budget until written.
        self.page = route.result == SESSIONS
        # It answers sessions: it takes `with=id`.
        self.sessions = route.result in (SESSION, SESSIONS)
        self.methods = frozenset(route.methods)
        self.stats = METRICS.method(route.name)
        self.open = route.public or (route.probe and open_probes)
        # What a method the route does not take is answered with; a route that takes none
        # (the fallback) is not there at all.
        self.refusal: Callable[[], SessionsError] = (
            functools.partial(MethodNotAllowed, allow=route.methods) if route.methods else NotFound
        )


class Router:
    """The low-level server's handler for a set of routes; anything else is `not_found`."""

    def __init__(self, routes: Iterable[Route], service: Service, auth: ApiKeys | None) -> None:
        open_probes = service.settings.open_probes
        gates: dict[str | None, Gate | None] = {CHECK: service.critical, BULK: service.bulk, None: None}
        self._routes = {
            route.path: _Prepared(route, open_probes=open_probes, gates=gates) for route in routes
        }
        self._fallback = _Prepared(Route("", _not_found, "other", methods=()), open_probes=False, gates=gates)
        self._service = service
        self._auth = auth

    @property
    def routes(self) -> list[Route]:
        return [bound.route for bound in self._routes.values()]

    async def __call__(self, request: web.BaseRequest) -> web.StreamResponse:
        started = time.perf_counter()
        # Looked up by the path as sent: an encoded slash or dot (`/user%2Fdel`) never
        # reaches another route, so a proxy rule on paths means what it says.
        route = self._routes.get(request.rel_url.raw_path, self._fallback)
        request_id = _request_id(request)
        context = REQUEST_ID.set(request_id)
        id_formats = request.headers.getall(USER_ID_FORMAT, ())
        id_format = id_formats[0] if len(id_formats) == 1 else ("" if id_formats else None)
        as_text = USER_ID_AS_TEXT.set(id_format == "string") if id_format is not None else None
        expect = request.headers.get("Expect")
        code = "success"
        service = self._service
        settings = service.settings
        body_share = answer_share = 0
        with_id: contextvars.Token[bool] | None = None
        try:
            if self._auth is not None and not route.open:
                self._auth.check(request)
            if request.method not in route.methods:
                raise route.refusal()
            if expect is not None and expect.lower() != "100-continue":
                raise ExpectationFailed()
            if id_format is not None and id_format not in ("string", "number"):
                raise BadRequest(f"{USER_ID_FORMAT} must be string or number, given once.")
            encodings = request.headers.getall("Content-Encoding", [])
            if encodings and (len(encodings) != 1 or encodings[0].strip().lower() not in _ENCODINGS):
                # aiohttp decodes these and passes any other as it came: a body the client
                # encoded some other way would be taken as plain.
                raise BadRequest(
                    "Content-Encoding must be one of gzip, deflate, br, zstd or identity, given once."
                )
            if WITH in request.query and route.route.summary:
                if not route.sessions:
                    raise BadRequest(f"{WITH} applies only to methods that answer sessions.")
                if request.query.getall(WITH) != ["id"]:
                    raise BadRequest(
                        f"{WITH} must be id, given once (the session's id added to each session)."
                    )
                with_id = WITH_ID.set(True)
            values = [param.read(request, settings) for param in route.params]
            if route.extra:
                extra, body_share = await _read_extra(request, service, expect)
                values.append(extra)
            elif request.body_exists and expect is None:
                await _discard_body(request, service)
            if route.page:
                # Taken before the page is read, held until its last byte is written.
                await service.answers.take(settings.page_max_bytes, settings.queue_timeout)
                answer_share = settings.page_max_bytes
            gate = route.gate
            if gate is None:
                response = await route.handler(service, *values)
            else:
                await gate.enter(settings.queue_timeout)
                try:
                    # A caller who left while this waited for its turn gets no work done.
                    if client_left(request):
                        raise ConnectionResetError("the client left before its turn came")
                    response = await route.handler(service, *values)
                finally:
                    gate.leave()
            body = _answer_body(response) if answer_share else None
            if body is not None:
                size = len(body)
                # The page's share is what it takes as sent; the rest goes back at once.
                service.answers.give(answer_share - min(size, answer_share))
                answer_share = min(size, answer_share)
                if size > SEND_PIECE:
                    # Written here, so that its share is held until its last byte is out;
                    # a smaller one aiohttp hands to the transport whole.
                    response.headers["X-Request-Id"] = request_id
                    response = await send_bounded(request, response, body, patience=settings.send_timeout)
        except SessionsError as error:
            response, code = failure(error), error.code
            if isinstance(error, RequestTimeout):
                # The rest of the body may still come; the connection cannot be reused.
                response.force_close()
            elif isinstance(error, Overloaded | PayloadTooLarge) and route.extra and body_share == 0:
                # Its body was never read: closing is cheaper than reading it to the end.
                response.force_close()
                abandon_body(request)
        except PROTOCOL_ERRORS as error:
            converted = from_protocol(error)
            response, code = failure(converted), converted.code
            response.force_close()
            # The body cannot be read further.
            abandon_body(request)
        except ConnectionError:
            # The client left in the middle of its request: nobody to read the answer, which
            # aiohttp drops quietly, and nothing to log.
            response, code = failure(BadRequest("The client closed the connection.")), "client_gone"
            response.force_close()
        except Exception:
            # The path only: the query may hold a token.
            log.exception("unexpected error in %s %s", request.method, request.path)
            response, code = failure(InternalError()), InternalError.code
        finally:
            REQUEST_ID.reset(context)
            if as_text is not None:
                USER_ID_AS_TEXT.reset(as_text)
            if with_id is not None:
                WITH_ID.reset(with_id)
            if body_share:
                service.bodies.give(body_share)
            if answer_share:
                service.answers.give(answer_share)
        if (expect is not None and code != "success") or not request.content.at_eof():
            # Refused, perhaps before its body was asked for: the client may never send it,
            # so the connection is closed at once rather than left waiting for it. A body
            # left unread (refused before it was read, or over the limit) is never drained:
            # what it holds would fail after the answer, where nothing can say so.
            response.force_close()
            abandon_body(request)
        response.headers["X-Request-Id"] = request_id
        route.stats.record(code, time.perf_counter() - started)
        return response
