"""The OpenAPI 3.1 description of the API, built from the code it describes.

`python -m sessions openapi > openapi.json` writes the copy kept in the repository; a test
checks that the copy and this code agree.
"""

from __future__ import annotations

from typing import Any

from . import __version__
from .api import COUNT, METHODS, SESSIONS, Method
from .errors import (
    BY_CODE,
    BadRequest,
    RequestTimeout,
    SessionsError,
    StorageUnavailable,
    StorageWriteFailed,
    Unauthorized,
)
from .extra import MAX_DEPTH, MAX_KEYS
from .models import LIST_MAX, SessionObject

__all__ = ["build_spec"]

_EXAMPLE_SESSION = {
    "ip": "192.168.1.1",
    "extra": {"device": "Nexus 5", "os": "Android"},
    "user_id": 1,
    "create": 1464909151,
    "activity": 1465564426,
    "token": "61494096-9af7-49ba-9fb4-e89c0811e6d3",
}

_USER_ID = {"type": "integer", "format": "int64", "minimum": 1, "maximum": 2**63 - 1}
_IP = {"anyOf": [{"type": "string", "format": "ipv4"}, {"type": "string", "format": "ipv6"}]}
_PARAMS: dict[str, dict[str, Any]] = {
    "user_id": {
        "description": "User id: a positive integer up to 2^63-1 in plain decimal digits.",
        "schema": _USER_ID,
        "example": 1,
    },
    "id": {
        "description": "User id: a positive integer up to 2^63-1 in plain decimal digits.",
        "schema": _USER_ID,
        "example": 1,
    },
    "ip": {
        "description": "An IPv4 or IPv6 address; compared in canonical form.",
        "schema": _IP,
        "example": "192.168.1.1",
    },
    "limit": {
        "description": f"The most sessions in this page, 1 to {LIST_MAX}; without it, the "
        "service's SESSIONS_LIST_MAX (1000 by default).",
        "schema": {"type": "integer", "minimum": 1, "maximum": LIST_MAX},
        "example": 100,
    },
    "after": {
        "description": "Where the page starts: the cursor in the previous page's `Link: <...>; "
        'rel="next"` URL. Opaque; follow that URL rather than building one.',
        "schema": {"type": "string", "maxLength": 80},
    },
    "token": {
        "description": "The session token (or send it in the X-Session-Token header instead).",
        "schema": {"type": "string", "format": "uuid"},
        "example": _EXAMPLE_SESSION["token"],
    },
    "X-Session-Token": {
        "in": "header",
        "description": "The session token, kept out of the URL; with `token` too, the two must agree.",
        "schema": {"type": "string", "format": "uuid"},
    },
    "ttl": {
        "description": "This session's own idle TTL in seconds, from 1 to the service's SESSIONS_IDLE_TTL "
        "(its default).",
        "schema": {"type": "integer", "minimum": 1, "maximum": 180 * 86400},
        "example": 3600,
    },
    "except": {
        "description": "A token of this user's to keep (the caller's own session, say); it must be live.",
        "schema": {"type": "string", "format": "uuid"},
    },
}


# Errors any method may answer.
_COMMON_ERRORS: list[type[SessionsError]] = [
    BadRequest,
    Unauthorized,
    RequestTimeout,
    StorageUnavailable,
    StorageWriteFailed,
]


def _error_response(errors: list[type[SessionsError]]) -> dict[str, dict[str, Any]]:
    by_status: dict[int, list[type[SessionsError]]] = {}
    for error in errors:
        by_status.setdefault(error.status, []).append(error)
    responses = {}
    for status, group in sorted(by_status.items()):
        responses[str(status)] = {
            "description": "; ".join(f"`{e.code}`: {e.default_message}" for e in group),
            "content": {
                "application/json": {
                    "schema": {"$ref": "#/components/schemas/Error"},
                    "examples": {
                        e.code: {"value": {"status": "error", "code": e.code, "message": e.default_message}}
                        for e in group
                    },
                }
            },
        }
    return responses


def _operation(declared: Method, method: str) -> dict[str, Any]:
    summary, params, extra, result, errors = (
        declared.summary,
        declared.params,
        declared.extra,
        declared.result,
        declared.errors,
    )
    path = declared.path
    listing = result == SESSIONS
    data: dict[str, Any] = {"$ref": "#/components/schemas/SessionObject"}
    example: Any = _EXAMPLE_SESSION
    if listing:
        data, example = {"type": "array", "items": data}, [_EXAMPLE_SESSION]
    elif result == COUNT:
        data = {
            "type": "object",
            "required": ["deleted"],
            "additionalProperties": False,
            "properties": {"deleted": {"type": "integer", "minimum": 0}},
        }
        example = {"deleted": 3}
    success: dict[str, Any] = {"description": "Success"}
    if listing:
        success["headers"] = {
            "Link": {
                "description": 'When more sessions follow: `<URL>; rel="next"` (RFC 8288), the URL of '
                "the next page.",
                "schema": {"type": "string"},
            }
        }
    operation: dict[str, Any] = {
        "operationId": f"{path.strip('/')}_{method}",
        "summary": summary,
        "parameters": [
            {"name": name, "in": "query", "required": required, **_PARAMS[name]} for name, required in params
        ],
        "responses": {
            "200": {
                **success,
                "content": {
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "required": ["status", "data"],
                            "additionalProperties": False,
                            "properties": {"status": {"const": "success"}, "data": data},
                        },
                        "example": {"status": "success", "data": example},
                    }
                },
            },
            **_error_response([*errors, *_COMMON_ERRORS]),
        },
    }
    if extra:
        operation["requestBody"] = {
            "required": False,
            "description": "Extra data merged into the session's `extra` like JSON Merge Patch at the top "
            "level: new keys added, existing keys replaced, keys set to null removed.",
            "content": {
                "application/json": {
                    "schema": {"$ref": "#/components/schemas/ExtraPatch"},
                    "example": {"os": None, "app_version": 42},
                },
                "application/x-www-form-urlencoded": {
                    "schema": {"type": "object", "additionalProperties": {"type": "string"}},
                    "example": {"device": "Nexus 5", "os": "Android"},
                },
            },
        }
    return operation


def build_spec() -> dict[str, Any]:
    session_schema = SessionObject.model_json_schema()
    session_schema["example"] = _EXAMPLE_SESSION
    paths = {m.path: {"get": _operation(m, "get"), "post": _operation(m, "post")} for m in METHODS}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "sessions",
            "version": __version__,
            "description": "Login sessions of web and mobile users. Every method answers GET and POST "
            "alike; parameters come from the query string, a body on `new` and `get` is extra data.",
        },
        "paths": paths,
        "components": {
            "schemas": {
                "SessionObject": session_schema,
                "ExtraPatch": {
                    "type": "object",
                    "maxProperties": MAX_KEYS,
                    "additionalProperties": {"$ref": "#/components/schemas/ExtraValue"},
                    "description": f"Nested at most {MAX_DEPTH} levels; integers must fit in 64 bits.",
                },
                "ExtraValue": {
                    "anyOf": [
                        {"type": ["null", "boolean", "string"]},
                        # Any number with no fractional part, 1e3 as much as 1000, is an
                        # integer here and in the service alike (extra.py).
                        {"type": "integer", "minimum": -(2**63), "maximum": 2**64 - 1},
                        {"type": "number", "not": {"type": "integer"}},
                        {"type": "array", "items": {"$ref": "#/components/schemas/ExtraValue"}},
                        {
                            "type": "object",
                            "additionalProperties": {"$ref": "#/components/schemas/ExtraValue"},
                        },
                    ]
                },
                "Error": {
                    "type": "object",
                    "required": ["status", "code", "message"],
                    "additionalProperties": False,
                    "properties": {
                        "status": {"const": "error"},
                        "code": {"enum": sorted(BY_CODE)},
                        "message": {"type": "string"},
                    },
                },
            }
        },
    }
