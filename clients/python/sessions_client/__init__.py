"""An asyncio client for the sessions service, for backends written in Python.

    async with SessionsClient("http://127.0.0.1:8080") as sessions:
        session = await sessions.new(user_id=1, ip="192.0.2.1", extra={"device": "Nexus 5"})
        try:
            session = await sessions.get(session.token)
        except TokenNotFound:
            ...  # signed out or expired

Every error code of the API is raised as its own exception (`sessions_client.errors`, all of
them importable from here too), under three families a caller acts on: `NotFoundError`,
`InvalidInput` and `Unavailable`. Network trouble and timeouts are `ServiceUnavailable`, an
`Unavailable`, so that "no such session" and "cannot tell now" never look alike. Its only
dependency is aiohttp.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import aiohttp
import yarl

from . import errors
from .errors import *  # noqa: F403 (the errors are the package's too: __all__ below)
from .errors import BadRequest, InvalidExtra, ServiceUnavailable, Unavailable, error_for

__version__ = "0.1.0"
__all__ = ["RETRY_SAFE", "RETRY_SAFE_WITH", "SessionObject", "SessionsClient", "errors", *errors.__all__]

# Whether each method may be repeated after an unavailable answer without doing its work twice
# (the API document's `x-retry-safe`), and the header that makes it so (`x-retry-safe-with`).
RETRY_SAFE: dict[str, bool] = {
    "/new": False,
    "/get": True,
    "/del": False,
    "/user": True,
    "/ip": True,
    "/user/del": False,
    "/ip/del": False,
    "/rotate": False,
    "/user/count": True,
}
RETRY_SAFE_WITH: dict[str, str] = {"/new": "Idempotency-Key"}

# What an HTTP header may carry here: printable ASCII. CR and LF would end the header (and
# start another), other control characters and non-ASCII have no safe encoding.
_HEADER_VALUE = re.compile(r"[\x20-\x7e]*")


def _header(name: str, value: str) -> str:
    if not isinstance(value, str) or not _HEADER_VALUE.fullmatch(value):
        raise BadRequest(
            f"{name} cannot go in an HTTP header: only printable ASCII can (no CR, LF or other "
            "control characters, no non-ASCII); nothing was sent."
        )
    return value


@dataclass(frozen=True, slots=True)
class SessionObject:
    """A session as the service answers it; `create` and `activity` are Unix seconds."""

    ip: str
    extra: dict[str, Any] | None
    user_id: int
    create: int
    activity: int
    token: str


class SessionsClient:
    """One pooled HTTP connection set to a sessions service; use it as an async context manager.

    Tokens travel in the X-Session-Token header, never in URLs that proxies and logs keep;
    extra data is sent as JSON, so values keep their types and None removes a key.

    After an `Unavailable` answer the client waits the Retry-After the service sent and tries
    again, up to `retries` times, as the API document says: after `overloaded` (nothing was
    done) for every call; after the other 503s and no answer at all for the calls that are safe
    to repeat (`get`, the listings and counts, `new` with an idempotency key); never after the
    rest. `on_retry(attempt, error, seconds)` is called before each wait.

    `timeout` bounds each attempt, so a call safe to repeat may take `retries + 1` of them and
    the waits between: 6.3 s by default against a service that accepts and never answers.
    `deadline` (seconds, none by default) bounds each call as a whole, waits included: an
    attempt gets what is left of it, and a retry that would start after it is not made.
    """

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        timeout: float = 2.0,
        deadline: float | None = None,
        max_connections: int = 100,
        retries: int = 2,
        on_retry: Callable[[int, Unavailable, float], Awaitable[None] | None] | None = None,
    ) -> None:
        self._retries = retries
        self._on_retry = on_retry
        self._base_url = base_url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {_header('The API key', api_key)}"} if api_key else {}
        self._timeout = timeout
        self._deadline = deadline
        self._max_connections = max_connections
        self._http: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> SessionsClient:
        self._http = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=self._max_connections),
            headers=self._headers,
        )
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None

    async def new(
        self,
        user_id: int,
        ip: str,
        *,
        extra: dict[str, Any] | None = None,
        ttl: int | None = None,
        idempotency_key: str | None = None,
    ) -> SessionObject:
        """Open a session; `ttl` gives it an idle TTL of its own, shorter than the service's.
        With `idempotency_key`, a repeat of the same call answers the session the first opened
        (send one per sign-in attempt, and retry with it after an `Unavailable`)."""
        params = {"user_id": str(user_id), "ip": ip}
        if ttl is not None:
            params["ttl"] = str(ttl)
        headers = {} if idempotency_key is None else {"Idempotency-Key": _header("The key", idempotency_key)}
        return _session(await self._call("/new", params, extra, headers=headers))

    async def get(
        self, token: str, *, ip: str | None = None, extra: dict[str, Any] | None = None
    ) -> SessionObject:
        """The live session of the token, its activity now; with `ip`, moved to that address."""
        params = {} if ip is None else {"ip": ip}
        return _session(await self._call("/get", params, extra, token=token))

    async def delete(self, token: str) -> SessionObject:
        """End the session; the session as it was."""
        return _session(await self._call("/del", {}, token=token))

    async def rotate(self, token: str) -> SessionObject:
        """The same session under a new token; `token` stops working at once."""
        return _session(await self._call("/rotate", {}, token=token))

    async def delete_user(self, user_id: int, *, keep: str | None = None) -> int:
        """End every live session of the user but `keep` (a token of theirs); how many."""
        return int((await self._call("/user/del", {"id": str(user_id)}, token=keep))["deleted"])

    async def delete_ip(self, ip: str) -> int:
        """End every live session seen from the address; how many."""
        return int((await self._call("/ip/del", {"ip": ip}))["deleted"])

    async def count_user(self, user_id: int) -> int:
        """How many live sessions the user has."""
        return int((await self._call("/user/count", {"id": str(user_id)}))["count"])

    async def by_user(self, user_id: int) -> list[SessionObject]:
        """Every live session of the user, newest opened first (all pages)."""
        return [session async for session in self.iter_user(user_id)]

    async def by_ip(self, ip: str) -> list[SessionObject]:
        """Every live session last seen from the address, newest opened first (all pages)."""
        return [session async for session in self.iter_ip(ip)]

    def iter_user(self, user_id: int, *, page_size: int | None = None) -> AsyncIterator[SessionObject]:
        """The user's live sessions one at a time, a page fetched when the last one is used up."""
        return self._pages("/user", {"id": str(user_id)}, page_size)

    def iter_ip(self, ip: str, *, page_size: int | None = None) -> AsyncIterator[SessionObject]:
        """The live sessions last seen from the address, a page at a time."""
        return self._pages("/ip", {"ip": ip}, page_size)

    async def _pages(
        self, path: str, params: dict[str, str], page_size: int | None
    ) -> AsyncIterator[SessionObject]:
        if page_size is not None:
            params["limit"] = str(page_size)
        url: str | yarl.URL = self._base_url + path
        query: dict[str, str] | None = params
        while True:
            data, next_url = await self._send(url, query, safe=RETRY_SAFE[path])
            for item in data:
                yield _session(item)
            if next_url is None:
                return
            url, query = next_url, None  # the next page's URL carries its whole query

    async def _call(
        self,
        path: str,
        params: dict[str, str],
        extra: dict[str, Any] | None = None,
        *,
        token: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> Any:
        url = self._base_url + path
        safe = RETRY_SAFE[path] or RETRY_SAFE_WITH.get(path) in (headers or {})
        data, _ = await self._send(url, params, extra, token=token, headers=headers, safe=safe)
        return data

    async def _send(
        self,
        url: str | yarl.URL,
        params: dict[str, str] | None,
        extra: dict[str, Any] | None = None,
        *,
        token: str | None = None,
        headers: dict[str, str] | None = None,
        safe: bool = False,
    ) -> tuple[Any, yarl.URL | None]:
        """The data of one call's answer and the URL of the page after it, if any; retried
        after an unavailable answer as the error's rule says, `safe`: whether the call may be
        repeated (see the class)."""
        sent = dict(headers or {})
        body = None
        if extra is not None:
            try:
                body = json.dumps(extra, allow_nan=False).encode()
            except (TypeError, ValueError) as error:  # what the service would refuse too
                raise InvalidExtra(f"Extra data cannot be sent as JSON: {error}.") from None
            sent["Content-Type"] = "application/json"
        if token is not None:
            sent["X-Session-Token"] = _header("The token", token)
        clock = asyncio.get_running_loop().time
        ends = None if self._deadline is None else clock() + self._deadline
        attempt = 0
        while True:
            timeout = self._timeout if ends is None else min(self._timeout, ends - clock())
            try:
                if timeout <= 0:
                    raise ServiceUnavailable(f"no answer within the call's deadline of {self._deadline} s")
                return await self._once(url, params, body, sent, timeout)
            except Unavailable as error:
                again = error.retry == "always" or (error.retry == "if_safe" and safe)
                if attempt >= self._retries or not again:
                    raise
                attempt += 1
                wait = error.retry_after if error.retry_after is not None else 0.1 * 2 ** (attempt - 1)
                if ends is not None and clock() + wait >= ends:
                    raise  # the retry would start after the deadline
                if self._on_retry is not None:
                    waited = self._on_retry(attempt, error, wait)
                    if waited is not None:
                        await waited
                await asyncio.sleep(wait)

    async def _once(
        self,
        url: str | yarl.URL,
        params: dict[str, str] | None,
        body: bytes | None,
        sent: dict[str, str],
        within: float,
    ) -> tuple[Any, yarl.URL | None]:
        """One attempt: the answer's data and next page, or its error raised."""
        if self._http is None:
            raise RuntimeError("use SessionsClient as `async with SessionsClient(...) as client`")
        try:
            async with self._http.post(
                url, params=params, data=body, headers=sent, timeout=aiohttp.ClientTimeout(total=within)
            ) as response:
                raw = await response.read()
                next_link = response.links.get("next")
                retry_after = response.headers.get("Retry-After")
        except TimeoutError as error:
            raise ServiceUnavailable(f"no answer within {within:.3g} s") from error
        except aiohttp.ClientError as error:
            raise ServiceUnavailable(f"{type(error).__name__}: {error}") from error
        try:
            envelope = json.loads(raw)
            status = envelope["status"]
        except (ValueError, TypeError, KeyError):
            raise ServiceUnavailable(
                f"not a sessions service answer (HTTP {response.status})", status=response.status
            ) from None
        if status == "success":
            next_url = next_link.get("url") if next_link else None
            return envelope["data"], next_url if isinstance(next_url, yarl.URL) else None
        raise error_for(
            envelope.get("code"),
            str(envelope.get("message", "")),
            status=response.status,
            retry_after=_seconds(retry_after),
        )


def _session(data: dict[str, Any]) -> SessionObject:
    return SessionObject(**data)


def _seconds(value: str | None) -> float | None:
    try:
        return None if value is None else float(value)
    except ValueError:
        return None
