"""The session object and the rules for the values of the API's parameters.

Parameters are checked by plain functions rather than a pydantic model per request: on the
`get` hot path a model costs more than the whole check (see bench/README.md).
"""

from __future__ import annotations

import base64
import ipaddress
import re
from functools import lru_cache
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from .limits import EVENTS_WAIT_MAX, LIST_MAX, MAX_USER_ID

__all__ = [
    "Cursor",
    "Deleted",
    "Session",
    "SessionObject",
    "canonical_ip",
    "make_cursor",
    "parse_cursor",
    "parse_limit",
    "parse_seq",
    "parse_session_id",
    "parse_token",
    "parse_ttl",
    "parse_user_id",
    "parse_wait",
]

_TOKEN = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


def _user_id_schema(schema: dict[str, Any]) -> None:
    """user_id in the API document: an integer, or with X-User-Id-Format: string its digits."""
    schema.pop("type", None)
    schema["anyOf"] = [
        {"type": "integer", "format": "int64", "minimum": 1, "maximum": MAX_USER_ID},
        {"type": "string", "pattern": "^[1-9][0-9]{0,18}$"},
    ]
    schema["description"] = (
        "A positive 64-bit integer; a string of its decimal digits when the request says "
        "X-User-Id-Format: string (JavaScript's numbers are exact only up to 2^53)."
    )


def _absent_or_uuid(description: str) -> Any:
    """A field an answer may leave out, a UUID when there: no `null` in its schema."""

    def schema(entry: dict[str, Any]) -> None:
        for key in ("anyOf", "default", "type"):
            entry.pop(key, None)
        entry.update(type="string", format="uuid", description=description)

    return Field(json_schema_extra=schema)


# A session as the service builds it on the hot path: the fields of SessionObject in a
# plain dict, since building a model per answer measured as a cost (bench/README.md).
Session = dict[str, Any]


class SessionObject(BaseModel):
    """SessionObject as a model, for clients and the API description."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    ip: str
    extra: dict[str, Any] | None
    # A JSON integer; a string of its decimal digits when the request said
    # X-User-Id-Format: string (for JavaScript, whose numbers are exact only up to 2^53).
    user_id: Annotated[int, Field(json_schema_extra=_user_id_schema)]
    create: int
    activity: int
    # Absent where the answer is by id (`/session`, `/session/del`), and from listings without
    # tokens (SESSIONS_LISTINGS=ids): an id never leads to a token.
    token: Annotated[
        str | None,
        _absent_or_uuid(
            "The session's token, its secret; absent from the answers of `/session` and `/session/del`, "
            "which are by id, and from `/user` and `/ip` with SESSIONS_LISTINGS=ids."
        ),
    ] = None
    # With `with=id`, and always where the answer is by id: the session's id (a UUIDv7), not
    # secret, kept for its whole life.
    id: Annotated[
        str | None,
        _absent_or_uuid(
            "The session's id: with `with=id`, and always from `/session` and `/session/del`, and from "
            "`/user` and `/ip` with SESSIONS_LISTINGS=ids."
        ),
    ] = None


def parse_user_id(value: str) -> int | None:
    """A positive 63-bit integer in plain decimal digits, or None."""
    # str.isdigit alone would let through other scripts' digits, and int() underscores;
    # more than 19 significant digits cannot fit, and int() refuses over 4300 at all.
    significant = value.lstrip("0")
    if value.isascii() and value.isdigit() and len(significant) <= 19:
        number = int(significant or "0")
        if 0 < number <= MAX_USER_ID:
            return number
    return None


def canonical_ip(value: str) -> str | None:
    """The canonical text of an IPv4 or IPv6 address, or None if it is not one."""
    # The longest address text is 45 characters; longer junk never reaches the cache.
    return _canonical_ip(value) if len(value) <= 45 else None


@lru_cache(maxsize=4096)
def _canonical_ip(value: str) -> str | None:
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address):
        # A zone is local to the host that saw it, so it says nothing about the client.
        if address.scope_id is not None:
            return None
        # A dual-stack listener reports IPv4 clients as ::ffff:a.b.c.d; one client,
        # one address.
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
    return str(address)


def parse_token(value: str) -> str | None:
    """A token in the 8-4-4-4-12 hex form (any case), or None."""
    if len(value) == 36 and _TOKEN.fullmatch(value):
        return value
    return None


def parse_session_id(value: str) -> str | None:
    """A session id in the 8-4-4-4-12 hex form (any case), in lower case, or None."""
    if len(value) == 36 and _TOKEN.fullmatch(value):
        return value.lower()
    return None


# The most sessions one listing answers; more come by the Link header's next URL.

# Where a listing resumes: the place in the listing order (its `seq` in Tarantool, a number
# given when a session is opened, never changed and never reused) of the last session a page
# held. It says nothing of the session but that place: no token, nor any part or hash of one.
Cursor = int
_CURSOR_BYTES = 8


def parse_ttl(value: str, longest: int) -> int | None:
    """A session's own idle TTL: whole seconds from 1 to `longest`, or None."""
    if value.isascii() and value.isdigit() and len(value) <= 12 and 1 <= int(value) <= longest:
        return int(value)
    return None


def parse_limit(value: str) -> int | None:
    """A page size from 1 to LIST_MAX in plain decimal digits, or None."""
    if value.isascii() and value.isdigit() and len(value) <= 4 and 1 <= int(value) <= LIST_MAX:
        return int(value)
    return None


def parse_seq(value: str) -> int | None:
    """An event's seq (`/events`' `after`), 0 to 2^63-1 in plain decimal digits, or None."""
    if value.isascii() and value.isdigit() and len(value) <= 19 and int(value) <= MAX_USER_ID:
        return int(value)
    return None


def parse_wait(value: str) -> int | None:
    """Seconds a long poll may wait, 0 to EVENTS_WAIT_MAX in plain decimal digits, or None."""
    if value.isascii() and value.isdigit() and len(value) <= 3 and int(value) <= EVENTS_WAIT_MAX:
        return int(value)
    return None


def make_cursor(position: Cursor) -> str:
    """The opaque cursor of the page that follows `position`."""
    return base64.urlsafe_b64encode(position.to_bytes(_CURSOR_BYTES, "big")).rstrip(b"=").decode()


def parse_cursor(value: str) -> Cursor | None:
    """The position a cursor from `make_cursor` stands for, or None for anything else."""
    if not value.isascii() or len(value) != 11:
        return None
    try:
        raw = base64.urlsafe_b64decode(value + "=")
    except ValueError:
        return None
    # Only the one spelling make_cursor gives (base64 has others for the same bytes).
    if len(raw) != _CURSOR_BYTES or make_cursor(int.from_bytes(raw, "big")) != value:
        return None
    return int.from_bytes(raw, "big")


class Deleted(BaseModel):
    """What a bulk delete answers: how many live sessions it ended."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    deleted: Annotated[int, Field(ge=0)]
