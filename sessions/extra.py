"""Extra data: turning a request body into the top-level merge patch for a session."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl

import orjson

from .errors import InvalidExtra

__all__ = ["MAX_DEPTH", "MAX_KEYS", "decode_extra"]

MAX_DEPTH = 32  # nesting of objects and arrays in a JSON body
MAX_KEYS = 1024  # top-level keys in one body

FORM = "application/x-www-form-urlencoded"
JSON = "application/json"


def decode_extra(content_type: str, body: bytes) -> dict[str, Any] | None:
    """The patch a body carries, or None when it changes nothing."""
    if not body:
        return None
    if content_type == FORM:
        patch = _decode_form(body)
    elif content_type == JSON or content_type.endswith("+json"):
        patch = _decode_json(body)
    else:
        raise InvalidExtra(f"Extra data must be sent as {FORM} or {JSON}.")
    if len(patch) > MAX_KEYS:
        raise InvalidExtra(f"Extra data may have at most {MAX_KEYS} keys.")
    return patch or None


def _decode_form(body: bytes) -> dict[str, Any]:
    try:
        pairs = parse_qsl(
            body.decode("utf-8"),
            keep_blank_values=True,
            encoding="utf-8",
            errors="strict",
            max_num_fields=MAX_KEYS,
        )
    except UnicodeDecodeError:
        raise InvalidExtra("Extra data is not valid UTF-8.") from None
    except ValueError:
        raise InvalidExtra(f"Extra data may have at most {MAX_KEYS} keys.") from None
    patch: dict[str, Any] = {}
    for key, value in pairs:
        if key in patch:
            raise InvalidExtra(f"Extra data has the key {key!r} more than once.")
        patch[key] = value
    return patch


def _decode_json(body: bytes) -> dict[str, Any]:
    try:
        patch = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise InvalidExtra("Extra data is not valid JSON.") from None
    if not isinstance(patch, dict):
        raise InvalidExtra("Extra data must be a JSON object.")
    if _too_deep(patch):
        raise InvalidExtra(f"Extra data is nested deeper than {MAX_DEPTH} levels.")
    return patch


def _too_deep(value: Any) -> bool:
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_DEPTH:
            return True
        children = item.values() if isinstance(item, dict) else item
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return False
