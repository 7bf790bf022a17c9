"""The API's parameters, each declared once: its name, how its value is read and checked,
the error a bad value answers, and its description in the OpenAPI document.

The route table (api.py) lists a method's parameters; the router reads them in that order
and hands the values to the handler, and openapi.py documents them from the same objects.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from multidict import MultiMapping

from .config import Settings
from .errors import (
    BadRequest,
    InvalidCursor,
    InvalidIp,
    InvalidLimit,
    InvalidTtl,
    InvalidUserId,
    InvalidWait,
    SessionsError,
    TokenNotFound,
)
from .limits import DEFAULT_TTL, EVENTS_PAGE, EVENTS_WAIT_MAX, LIST_MAX, MAX_USER_ID, shown
from .models import (
    canonical_ip,
    parse_cursor,
    parse_limit,
    parse_seq,
    parse_session_id,
    parse_token,
    parse_ttl,
    parse_user_id,
    parse_wait,
)

__all__ = [
    "AFTER",
    "EVENTS_AFTER",
    "EVENTS_LIMIT",
    "EXCEPT",
    "EXCEPT_ID",
    "ID",
    "IDEMPOTENCY_KEY",
    "IP",
    "LIMIT",
    "OPTIONAL_IP",
    "SESSION_ID",
    "TOKEN",
    "TOKEN_HEADER",
    "TTL",
    "USER_ID",
    "USER_ID_FORMAT",
    "USER_ID_FORMAT_DOC",
    "WAIT",
    "WITH",
    "WITH_DOC",
    "Param",
]

# Where `get`, `del` and `rotate` also take the token.
TOKEN_HEADER = "X-Session-Token"
# How answers write `user_id`: `number` (the default, the seed's contract) or `string`, for
# clients whose numbers lose precision above 2^53 (JavaScript's).
USER_ID_FORMAT = "X-User-Id-Format"
USER_ID_FORMAT_DOC: Mapping[str, Any] = {
    "name": USER_ID_FORMAT,
    "in": "header",
    "required": False,
    "description": "`string` writes every `user_id` of the answer as a string of decimal digits. "
    "JavaScript's numbers are exact only up to 2^53 (Number.MAX_SAFE_INTEGER): a JavaScript client "
    "whose user ids may be larger must send this (or parse the answer with a BigInt-aware JSON "
    "parser), or it acts on the wrong user. `number` (the default) writes it as a JSON integer.",
    "schema": {"type": "string", "enum": ["number", "string"]},
}
EXAMPLE_TOKEN = "61494096-9af7-49ba-9fb4-e89c0811e6d3"
EXAMPLE_ID = "019ae3b2-5c1e-7b4a-9d2f-3a6c8e1f0b24"
# What an answer adds to each SessionObject on request: `with=id`, the session's id. Taken
# by every method that answers sessions (the router reads it; routing.py).
WITH = "with"
WITH_DOC: Mapping[str, Any] = {
    "name": WITH,
    "in": "query",
    "required": False,
    "description": "`id` adds each session's id (`id`, a UUIDv7: not secret, unique, kept for the session's "
    "life) to the SessionObjects of the answer; without it they have the six fields of the original design.",
    "schema": {"type": "string", "enum": ["id"]},
}


@dataclass(frozen=True, slots=True)
class Param:
    """One query parameter: how to read it and which error a bad value raises."""

    name: str
    parse: Callable[[str], Any]
    error: type[SessionsError]
    description: str
    schema: Mapping[str, Any]
    required: bool = True
    example: Any = None
    extra_docs: tuple[Mapping[str, Any], ...] = field(default=())  # more entries in the document
    message: str | None = None  # a bad value's message, when not the error's own

    def read(self, request: web.BaseRequest, settings: Settings) -> Any:
        return self.read_query(request.query)

    def read_query(self, query: MultiMapping[str]) -> Any:
        values = query.getall(self.name, ())
        if len(values) == 1:
            value = self.parse(values[0])
            if value is not None:
                return value
        elif not values:
            if not self.required:
                return None
            # A missing token is just another unknown token: no hint.
            if self.error is not TokenNotFound:
                raise self.error(f"Parameter {self.name} is required.")
        # A repeated parameter is ambiguous, so it is refused like a bad one.
        raise self.error(self.message)

    def documented(self) -> list[dict[str, Any]]:
        """Its entries in an OpenAPI operation's `parameters`."""
        entry: dict[str, Any] = {
            "name": self.name,
            "in": "query",
            "required": self.required,
            "description": self.description,
            "schema": dict(self.schema),
        }
        if self.example is not None:
            entry["example"] = self.example
        return [entry, *map(dict, self.extra_docs)]


@dataclass(frozen=True, slots=True)
class _TokenParam(Param):
    """The session token, from the query or the X-Session-Token header (which keeps it out
    of URLs and the logs that hold them). Given both ways, the two must agree."""

    def read(self, request: web.BaseRequest, settings: Settings) -> Any:
        headers = request.headers.getall(TOKEN_HEADER, ())
        if not headers:
            return self.read_query(request.query)
        if len(headers) > 1:
            raise BadRequest(f"{TOKEN_HEADER} is given more than once.")
        token = parse_token(headers[0])
        if token is None:
            raise TokenNotFound()
        query = request.query
        if self.name in query and self.read_query(query).lower() != token.lower():
            raise BadRequest(f"The token in the query and in {TOKEN_HEADER} differ.")
        return token

    def documented(self) -> list[dict[str, Any]]:
        # Required one way or the other: neither way on its own.
        entries = Param.documented(self)
        entries[0]["required"] = False
        return entries


@dataclass(frozen=True, slots=True)
class _IdParam(Param):
    """A session id: unlike a token it is no secret, so a malformed one is told apart from
    an unknown one (bad_request, with what is wrong)."""

    def read(self, request: web.BaseRequest, settings: Settings) -> Any:
        values = request.query.getall(self.name, ())
        if not values and not self.required:
            return None
        value = self.parse(values[0]) if len(values) == 1 else None
        if value is None:
            raise self.error(f"{self.name} must be one session id: a UUID in the 8-4-4-4-12 form.")
        return value


@dataclass(frozen=True, slots=True)
class _KeepIdParam(_IdParam):
    """`/user/del`'s `except_id`, read before the token to keep: given with one (`except` or
    X-Session-Token, even empty or malformed), the request is refused as keeping two."""

    def read(self, request: web.BaseRequest, settings: Settings) -> Any:
        value = _IdParam.read(self, request, settings)
        if value is not None and ("except" in request.query or TOKEN_HEADER in request.headers):
            raise BadRequest(
                f"Keep one session: except (or its {TOKEN_HEADER} header) or {self.name}, not both."
            )
        return value


@dataclass(frozen=True, slots=True)
class _HeaderParam(Param):
    """A request header, optional; given twice or badly, `error` with its own message."""

    def read(self, request: web.BaseRequest, settings: Settings) -> Any:
        values = request.headers.getall(self.name, ())
        if not values:
            return None
        value = self.parse(values[0]) if len(values) == 1 else None
        if value is None:
            raise self.error(self.description)
        return value

    def documented(self) -> list[dict[str, Any]]:
        entries = Param.documented(self)
        entries[0]["in"] = "header"
        return entries


def parse_idempotency_key(value: str) -> str | None:
    """1 to 64 visible ASCII characters (no spaces, no controls), or None."""
    if 1 <= len(value) <= 64 and all("!" <= char <= "~" for char in value):
        return value
    return None


@dataclass(frozen=True, slots=True)
class _TtlParam(Param):
    """A session's own idle TTL: at most the service's SESSIONS_IDLE_TTL."""

    def read(self, request: web.BaseRequest, settings: Settings) -> Any:
        values = request.query.getall(self.name, ())
        if not values:
            return None
        longest = settings.idle_ttl
        ttl = parse_ttl(values[0], longest) if len(values) == 1 else None
        if ttl is None:
            raise InvalidTtl(f"ttl must be a whole number of seconds from 1 to {longest}.")
        return ttl


_USER_ID_SCHEMA = {"type": "integer", "format": "int64", "minimum": 1, "maximum": MAX_USER_ID}
_USER_ID_TEXT = f"User id: a positive integer up to {shown(MAX_USER_ID)} in plain decimal digits."
_IP_SCHEMA = {"anyOf": [{"type": "string", "format": "ipv4"}, {"type": "string", "format": "ipv6"}]}
_IP_TEXT = "An IPv4 or IPv6 address; compared in canonical form."
_TOKEN_SCHEMA = {"type": "string", "format": "uuid"}

USER_ID = Param("user_id", parse_user_id, InvalidUserId, _USER_ID_TEXT, _USER_ID_SCHEMA, example=1)
# Swagger UI pre-fills examples into "Try it out": none where it would end sessions (`/user/del`,
# `/ip/del`) or change one (`get`'s ip, `new`'s own TTL), nor in a token's query field, which
# would then differ from a token given in X-Session-Token (its example is in its description).
ID = Param("id", parse_user_id, InvalidUserId, _USER_ID_TEXT, _USER_ID_SCHEMA)
IP = Param("ip", canonical_ip, InvalidIp, _IP_TEXT, _IP_SCHEMA)
OPTIONAL_IP = Param(
    "ip",
    canonical_ip,
    InvalidIp,
    "An IPv4 or IPv6 address the session is now seen from; compared in canonical form.",
    _IP_SCHEMA,
    required=False,
)
TOKEN = _TokenParam(
    "token",
    parse_token,
    TokenNotFound,
    f"The session token, such as `{EXAMPLE_TOKEN}` (or send it in the {TOKEN_HEADER} header "
    "instead, leaving this empty).",
    _TOKEN_SCHEMA,
    extra_docs=(
        {
            "name": TOKEN_HEADER,
            "in": "header",
            "required": False,
            "description": "The session token, kept out of the URL; with `token` too, the two must agree.",
            "schema": _TOKEN_SCHEMA,
        },
    ),
)
TTL = _TtlParam(
    "ttl",
    lambda value: parse_ttl(value, DEFAULT_TTL),  # read() bounds it by the settings instead
    InvalidTtl,
    "This session's own idle TTL in seconds, from 1 to the service's SESSIONS_IDLE_TTL (its default).",
    {"type": "integer", "minimum": 1, "maximum": DEFAULT_TTL},
    required=False,
)
LIMIT = Param(
    "limit",
    parse_limit,
    InvalidLimit,
    f"The most sessions in this page, 1 to {LIST_MAX}; without it, the service's SESSIONS_LIST_MAX "
    f"({LIST_MAX} by default).",
    {"type": "integer", "minimum": 1, "maximum": LIST_MAX},
    required=False,
    example=100,
)
AFTER = Param(
    "after",
    parse_cursor,
    InvalidCursor,
    'Where the page starts: the cursor in the previous page\'s `Link: <...>; rel="next"` URL. Opaque; '
    "follow that URL rather than building one.",
    {"type": "string", "minLength": 11, "maxLength": 11, "pattern": "^[A-Za-z0-9_-]{11}$"},
    required=False,
)
EVENTS_AFTER = Param(
    "after",
    parse_seq,
    InvalidCursor,
    "Events after this seq: the previous page's `next` (0, the default: from the oldest kept).",
    {"type": "integer", "format": "int64", "minimum": 0, "maximum": MAX_USER_ID},
    required=False,
    message=f"after must be an event's seq, a whole number from 0 to {shown(MAX_USER_ID)}: the previous "
    "page's next.",
)
EVENTS_LIMIT = Param(
    "limit",
    parse_limit,
    InvalidLimit,
    f"The most events in this page, 1 to {LIST_MAX} ({EVENTS_PAGE} without it).",
    {"type": "integer", "minimum": 1, "maximum": LIST_MAX},
    required=False,
)
WAIT = Param(
    "wait",
    parse_wait,
    InvalidWait,
    f"With no event after `after` yet, wait up to this many seconds (0 to {EVENTS_WAIT_MAX}) for one "
    "before answering (a long poll); 0, the default, answers at once.",
    {"type": "integer", "minimum": 0, "maximum": EVENTS_WAIT_MAX},
    required=False,
)
# The one session `/user/del` leaves: a bad one ends nothing, like a wrong one.
# The caller's own session, when it sends its token in X-Session-Token as it does for every
# other method, is the one kept: "sign out other devices" never signs out the caller.
EXCEPT = _TokenParam(
    "except",
    parse_token,
    TokenNotFound,
    f"A token of this user's to keep (the caller's own session, say); it must be live. A token in the "
    f"{TOKEN_HEADER} header names the session to keep too; given both ways, the two must agree.",
    _TOKEN_SCHEMA,
    required=False,
    extra_docs=(
        {
            "name": TOKEN_HEADER,
            "in": "header",
            "required": False,
            "description": "The session to keep, like `except`; with `except` too, the two must agree.",
            "schema": _TOKEN_SCHEMA,
        },
    ),
)
_ID_SCHEMA = {"type": "string", "format": "uuid"}
# A session by its id (`/session`, `/session/del`).
SESSION_ID = _IdParam(
    "id",
    parse_session_id,
    BadRequest,
    f"The session's id, such as `{EXAMPLE_ID}` (from an answer given `with=id`).",
    _ID_SCHEMA,
)
# The one session `/user/del` leaves, by its id ("sign out everywhere but this device" from a
# devices page that holds ids, not tokens); it must be live. Not with a token to keep too.
EXCEPT_ID = _KeepIdParam(
    "except_id",
    parse_session_id,
    BadRequest,
    "The id of a session of this user's to keep; it must be live. Not together with `except` or "
    f"{TOKEN_HEADER}.",
    _ID_SCHEMA,
    required=False,
)
# Makes a retried `new` safe: the same key with the same parameters answers the same session.
IDEMPOTENCY_KEY = _HeaderParam(
    "Idempotency-Key",
    parse_idempotency_key,
    BadRequest,
    "Idempotency-Key must be 1 to 64 visible ASCII characters. A `new` repeated with the same key "
    "and the same parameters within SESSIONS_IDEMPOTENCY_WINDOW answers the session the first one "
    "opened; with other parameters, 409 idempotency_conflict.",
    {"type": "string", "minLength": 1, "maxLength": 64, "pattern": "^[!-~]+$"},
    required=False,
)
