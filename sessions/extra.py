"""Extra data: turning a request body into the top-level merge patch for a session."""

from __future__ import annotations

import json
import math
import re
from typing import Any
from urllib.parse import parse_qsl

from .errors import InvalidExtra
from .limits import MAX_DEPTH, MAX_KEYS

__all__ = ["decode_extra"]

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


_NOT_A_FORM = (
    "A form body must be key=value pairs joined by &; to send JSON, say Content-Type: application/json."
)
# `app[name]=x`, `tags[]=a`: a key, then any number of [part] (an object key, or [] to append).
_BRACKETS = re.compile(r"\[([^\[\]]*)\]")


def _decode_form(body: bytes) -> dict[str, Any]:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidExtra("Extra data is not valid UTF-8.") from None
    # JSON (or anything else) sent with curl's or PHP's default form type would otherwise be
    # stored as one key with an empty value.
    if text.lstrip()[:1] in ("{", "[") or any("=" not in part for part in text.split("&") if part):
        raise InvalidExtra(_NOT_A_FORM)
    try:
        pairs = parse_qsl(
            text, keep_blank_values=True, encoding="utf-8", errors="strict", max_num_fields=MAX_KEYS
        )
    except UnicodeDecodeError:
        raise InvalidExtra("Extra data is not valid UTF-8.") from None
    except ValueError:
        raise InvalidExtra(f"Extra data may have at most {MAX_KEYS} keys.") from None
    patch: dict[str, Any] = {}
    for key, value in pairs:
        _place(patch, key, value)
    return patch


def _place(patch: dict[str, Any], key: str, value: str) -> None:
    """Put `value` where a form key says, nested the way PHP and Rails read `a[b][]`."""
    head, parts = key, []
    opening = key.find("[")
    if opening > 0 and key.endswith("]") and not _BRACKETS.sub("", key[opening:]):
        head, parts = key[:opening], _BRACKETS.findall(key[opening:])
    if len(parts) >= MAX_DEPTH:
        raise InvalidExtra(f"Extra data is nested deeper than {MAX_DEPTH} levels.")
    path: list[str | None] = [head, *(part or None for part in parts)]  # None: `[]`, append
    container: Any = patch
    for index, segment in enumerate(path):
        last = index == len(path) - 1
        made: Any = value if last else ([] if path[index + 1] is None else {})
        if isinstance(container, list) != (segment is None):
            raise InvalidExtra(f"Extra data mixes a list and an object at {key!r}.")
        if isinstance(container, list):
            container.append(made)
        elif last and segment in container:
            raise InvalidExtra(f"Extra data has the key {key!r} more than once.")
        elif last:
            container[segment] = value
        else:
            made = container.setdefault(segment, made)
            if not isinstance(made, (dict, list)) or isinstance(made, list) != (path[index + 1] is None):
                raise InvalidExtra(f"Extra data has {key!r} both as a value and as a group.")
        container = made


class _NumberOutOfRange(ValueError):
    pass


def _integer(text: str) -> int:
    # Storage keeps 64-bit integers; a larger one would silently turn into a rounded float.
    number = int(text)
    if not -(2**63) <= number < 2**64:
        raise _NumberOutOfRange(text)
    return number


def _real(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):
        raise _NumberOutOfRange(text)
    # A number with no fractional part is an integer to JSON Schema, however it is spelled
    # (1e20, 4.5e107): the same range as for integers keeps the API description exact.
    if number.is_integer() and not -(2**63) <= number < 2**64:
        raise _NumberOutOfRange(text)
    return number


def _constant(text: str) -> Any:
    raise _NumberOutOfRange(text)  # NaN and Infinity are not JSON


def _decode_json(body: bytes) -> dict[str, Any]:
    # The standard library parser, unlike orjson, lets numbers be checked for range, so
    # that what is stored is exactly what was sent. Bodies are small and off the hot path.
    try:
        patch = json.loads(
            body.decode("utf-8"), parse_int=_integer, parse_float=_real, parse_constant=_constant
        )
    except _NumberOutOfRange as error:
        raise InvalidExtra(f"Extra data has a number out of range: {str(error)[:40]}.") from None
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise InvalidExtra("Extra data is not valid JSON.") from None
    if not isinstance(patch, dict):
        raise InvalidExtra("Extra data must be a JSON object.")
    _check_structure(patch)
    return patch


def _check_structure(value: dict[str, Any]) -> None:
    """Refuse nesting past MAX_DEPTH and strings that are not valid Unicode (lone surrogates)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                raise InvalidExtra("Extra data has a string that is not valid Unicode.") from None
            continue
        if not isinstance(item, (dict, list)):
            continue
        if depth > MAX_DEPTH:
            raise InvalidExtra(f"Extra data is nested deeper than {MAX_DEPTH} levels.")
        if isinstance(item, dict):
            stack.extend((key, depth) for key in item)
            stack.extend((child, depth + 1) for child in item.values())
        else:
            stack.extend((child, depth + 1) for child in item)
