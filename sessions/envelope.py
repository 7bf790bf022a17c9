"""The two response shapes of the API, and the error a body that breaks HTTP answers."""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any

import orjson
from aiohttp import web

from .errors import SessionsError

__all__ = ["HEADERS", "USER_ID_AS_TEXT", "WITH_ID", "answer", "failure", "success", "success_within"]

_JSON = "application/json"


# Answers carry tokens and sessions: no cache on the way may keep them. The server names
# itself without versions, which would only help an attacker pick an exploit.
HEADERS = {"Cache-Control": "no-store", "Server": "sessions"}
# The content type as a header rather than Response's argument, which it would parse again
# for every answer (0.3 us of the 2.5 us a success envelope costs, bench/costs.py).
_SUCCESS_HEADERS = {**HEADERS, "Content-Type": _JSON}


# Whether the request being answered asked for user ids as text (X-User-Id-Format: string),
# for clients such as JavaScript whose numbers lose precision above 2^53; set by the router.
USER_ID_AS_TEXT: ContextVar[bool] = ContextVar("user_id_as_text", default=False)


# Whether the request being answered asked for session ids (`with=id`); set by the router.
# Sessions come from storage with their `id`, which an answer leaves out unless asked: the
# seed's six-field SessionObject stays the default.
WITH_ID: ContextVar[bool] = ContextVar("with_id", default=False)


def _without_ids(data: Any) -> None:
    """Session ids taken out of the sessions `data` holds (fresh dicts, changed in place)."""
    if isinstance(data, dict):
        data.pop("id", None)
    elif isinstance(data, list):
        for item in data:
            if isinstance(item, dict):
                item.pop("id", None)


def _ids_as_text(data: Any) -> Any:
    if isinstance(data, list):
        return [_ids_as_text(item) for item in data]
    if isinstance(data, dict):
        if "user_id" in data:
            return {**data, "user_id": str(data["user_id"])}
        # A page of events: {"events": [...], ...}.
        return {key: _ids_as_text(value) if isinstance(value, list) else value for key, value in data.items()}
    return data


def success(data: Any, headers: dict[str, str] | None = None, *, ids: bool = False) -> web.Response:
    """The success envelope of `data`; sessions in it keep their ids when the request asked
    for them (`with=id`) or `ids` says so."""
    if not ids and not WITH_ID.get():
        _without_ids(data)
    if USER_ID_AS_TEXT.get():
        data = _ids_as_text(data)
    return answer(orjson.dumps({"status": "success", "data": data}), headers)


def answer(body: bytes, headers: dict[str, str] | None = None) -> web.Response:
    """A success envelope already encoded (success_within)."""
    return web.Response(body=body, headers={**_SUCCESS_HEADERS, **headers} if headers else _SUCCESS_HEADERS)


_LIST_HEAD, _LIST_TAIL = b'{"status":"success","data":[', b"]}"


def success_within(items: list[Any], budget: int, *, ids: bool = False) -> tuple[bytes, int]:
    """The success envelope of the longest leading part of `items` whose JSON takes at most
    `budget` bytes, but at least one item; and how many items it holds. What is sent is
    counted, not what is stored: text with control characters grows sixfold in JSON. With
    `ids`, the sessions keep their ids whether the request asked for them or not."""
    if not ids and not WITH_ID.get():
        _without_ids(items)
    if USER_ID_AS_TEXT.get():
        items = _ids_as_text(items)
    body = orjson.dumps({"status": "success", "data": items})
    if len(body) <= budget or len(items) <= 1:
        return body, len(items)
    parts: list[bytes] = []
    size = len(_LIST_HEAD) + len(_LIST_TAIL) - 1  # the first item has no comma before it
    for item in items:
        encoded = orjson.dumps(item)
        size += len(encoded) + 1
        if parts and size > budget:
            break
        parts.append(encoded)
    return _LIST_HEAD + b",".join(parts) + _LIST_TAIL, len(parts)


def failure(error: SessionsError) -> web.Response:
    body = {"status": "error", "code": error.code, "message": error.message}
    return web.Response(
        status=error.status,
        body=orjson.dumps(body),
        content_type=_JSON,
        headers={**HEADERS, **error.response_headers()},
    )
