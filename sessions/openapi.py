"""The OpenAPI 3.1 description of the API, built from the code it describes.

`python -m sessions openapi > openapi.json` writes the copy kept in the repository; a test
checks that the copy and this code agree.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model
from pydantic.json_schema import models_json_schema

from . import __version__
from .api import METHODS
from .errors import (
    BY_CODE,
    BadRequest,
    RequestTimeout,
    SessionsError,
    StorageUnavailable,
    StorageWriteFailed,
    Unauthorized,
)
from .limits import MAX_DEPTH, MAX_KEYS
from .models import SessionObject
from .params import EXAMPLE_ID, IDEMPOTENCY_KEY, SESSION_ID, USER_ID_FORMAT_DOC, WITH_DOC
from .routing import SESSION, SESSIONS, Result, Route

__all__ = ["build_spec"]

_EXAMPLE_SESSION = {
    "ip": "192.168.1.1",
    "extra": {"device": "Nexus 5", "os": "Android"},
    "user_id": 1,
    "create": 1464909151,
    "activity": 1465564426,
    "token": "61494096-9af7-49ba-9fb4-e89c0811e6d3",
}


# A session answered by its id (`/session`, `/session/del`, listings without tokens).
_EXAMPLE_BY_ID = {**{k: v for k, v in _EXAMPLE_SESSION.items() if k != "token"}, "id": EXAMPLE_ID}


# The envelopes, as models only for their JSON schemas (the service writes plain dicts).
class _Answer(BaseModel):
    model_config = ConfigDict(extra="forbid")
    status: Literal["success"]


class SessionAnswer(_Answer):
    data: SessionObject


class SessionsAnswer(_Answer):
    data: list[SessionObject]


# What a client does with each code (errors.py): `x-family`, what the caller does about it,
# and `x-retry`, whether to repeat the call (`if_safe`: when the operation's `x-retry-safe`).
_CODES = sorted(BY_CODE)


class Error(BaseModel):
    model_config = ConfigDict(extra="forbid")
    status: Literal["error"]
    code: Annotated[
        str,
        Field(
            json_schema_extra={
                "enum": _CODES,
                "x-family": {code: BY_CODE[code].family for code in _CODES},
                "x-retry": {code: BY_CODE[code].retry for code in _CODES},
            }
        ),
    ]
    message: str


_ANSWERS: dict[Result, type[BaseModel]] = {SESSION: SessionAnswer, SESSIONS: SessionsAnswer}


def _answer(result: Result) -> type[BaseModel]:
    """The success envelope of a method's result; a model's is `<Model>Answer`."""
    if result not in _ANSWERS:
        assert not isinstance(result, str), result
        _ANSWERS[result] = create_model(f"{result.__name__}Answer", __base__=_Answer, data=(result, ...))
    return _ANSWERS[result]


def _example(result: Result) -> Any:
    if isinstance(result, str):
        return [_EXAMPLE_SESSION] if result == SESSIONS else _EXAMPLE_SESSION
    example = getattr(result, "EXAMPLE", None)
    if example is not None:
        return example
    return {name: 3 for name in result.model_fields}


_REF = "#/components/schemas/{model}"

# Errors any method may answer (and, with API keys, Unauthorized).
_COMMON_ERRORS: list[type[SessionsError]] = [
    BadRequest,
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


def _operation(route: Route, method: str, *, keys: bool) -> dict[str, Any]:
    example = _EXAMPLE_BY_ID if SESSION_ID in route.params else _example(route.result)
    examples: dict[str, Any] = {"example": {"status": "success", "data": example}}
    if route.result == SESSIONS:
        examples = {
            "examples": {
                "tokens": {
                    "summary": "SESSIONS_LISTINGS=tokens, the default",
                    "value": {"status": "success", "data": [_EXAMPLE_SESSION]},
                },
                "ids": {
                    "summary": "SESSIONS_LISTINGS=ids, or SESSIONS_TOKEN_STORAGE=hash",
                    "value": {"status": "success", "data": [_EXAMPLE_BY_ID]},
                },
            }
        }
    success: dict[str, Any] = {"description": "Success"}
    if route.result == SESSIONS:
        success["headers"] = {
            "Link": {
                "description": 'When more sessions follow: `<URL>; rel="next"` (RFC 8288), the URL of '
                "the next page, relative to this page's URL (`user?id=1&after=...`), so that it keeps a "
                "gateway's path prefix.",
                "schema": {"type": "string"},
            }
        }
    operation: dict[str, Any] = {
        "operationId": f"{route.path.strip('/')}_{method}",
        "summary": route.summary,
        "x-retry-safe": route.retry_safe,
        **({"x-retry-safe-with": IDEMPOTENCY_KEY.name} if IDEMPOTENCY_KEY in route.params else {}),
        "parameters": [
            *(entry for param in route.params for entry in param.documented()),
            *([dict(USER_ID_FORMAT_DOC), dict(WITH_DOC)] if route.result in (SESSION, SESSIONS) else []),
        ],
        "responses": {
            "200": {
                **success,
                "content": {
                    "application/json": {
                        "schema": {"$ref": _REF.format(model=_answer(route.result).__name__)},
                        **examples,
                    }
                },
            },
            **_error_response([*route.all_errors(), *_COMMON_ERRORS, *([Unauthorized] if keys else [])]),
        },
    }
    if route.extra and method == "get":
        operation["description"] = (
            "Extra data goes in the body of a POST. A GET with a body works too (the original "
            "design's PHP example sends one), but browsers and most HTTP clients cannot send it."
        )
    if route.extra and method == "post":
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


# With API keys configured (SESSIONS_API_KEYS), every operation needs the bearer scheme (and
# Swagger UI shows its padlock and an Authorize button); without, the document has no scheme,
# so that the page shows neither on a service that takes no key.
_BEARER = {
    "bearerAuth": {
        "type": "http",
        "scheme": "bearer",
        "description": "One of SESSIONS_API_KEYS, as `Authorization: Bearer KEY`.",
    }
}


def build_spec(*, keys: bool = False) -> dict[str, Any]:
    """The API's OpenAPI document; `keys`: whether the service requires API keys (the
    document in the repository, openapi.json, is a service's without)."""
    models: list[type[BaseModel]] = [*dict.fromkeys(_answer(m.result) for m in METHODS), Error]
    _, generated = models_json_schema([(model, "serialization") for model in models], ref_template=_REF)
    schemas: dict[str, Any] = generated["$defs"]
    schemas["SessionObject"]["example"] = _EXAMPLE_SESSION
    paths = {
        m.path: {method: _operation(m, method, keys=keys) for method in ("get", "post")} for m in METHODS
    }
    spec: dict[str, Any] = {
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
                **schemas,
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
            },
        },
    }
    if keys:
        spec["security"] = [{"bearerAuth": []}]
        spec["components"]["securitySchemes"] = _BEARER
    return spec
