"""Optional API keys: with SESSIONS_API_KEYS set, every request needs `Authorization: Bearer <key>`."""

from __future__ import annotations

import hmac
from collections.abc import Iterable

from aiohttp import web

from .errors import Unauthorized

__all__ = ["ApiKeys"]


class ApiKeys:
    """The accepted keys: several, so that they can be rotated."""

    def __init__(self, keys: Iterable[str]) -> None:
        self._keys = [key.encode() for key in keys]

    @classmethod
    def configured(cls, keys: Iterable[str]) -> ApiKeys | None:
        """The check for these keys, or None (every request let in) if there are none."""
        keys = list(keys)
        return cls(keys) if keys else None

    def check(self, request: web.BaseRequest) -> None:
        # Given twice, no key is taken: a proxy that adds its own would otherwise decide
        # which of the two counts by their order.
        values = request.headers.getall("Authorization", ())
        if len(values) != 1:
            raise Unauthorized()
        scheme, _, given = values[0].partition(" ")
        # Header values arrive as UTF-8 with undecodable bytes kept as surrogates; they
        # go back to bytes the same way, so any header compares instead of raising.
        candidate = given.strip().encode("utf-8", "surrogateescape")
        # Compare with every key, without stopping at a match, so that the time taken
        # says nothing about which key, or how much of one, was right.
        matched = False
        for key in self._keys:
            matched |= hmac.compare_digest(candidate, key)
        if not matched or scheme.lower() != "bearer":
            raise Unauthorized()
