"""An async client for the sessions service, for backends written in Python.

    async with SessionsClient("http://127.0.0.1:8080") as sessions:
        session = await sessions.new(user_id=1, ip="192.0.2.1", extra={"device": "Nexus 5"})
        try:
            session = await sessions.get(session.token)
        except TokenNotFound:
            ...  # signed out or expired

Every error code of the API is raised as its own exception, the same classes the service
uses (`sessions.errors`); network trouble and timeouts are raised as StorageUnavailable's
sibling `ServiceUnavailable`, so callers can tell "no such session" from "cannot tell now".
"""

from __future__ import annotations

from types import TracebackType
from typing import Any

import aiohttp
import orjson
import yarl

from .errors import BY_CODE, InvalidExtra, SessionsError
from .models import SessionObject

__all__ = ["ServiceUnavailable", "SessionsClient"]


class ServiceUnavailable(SessionsError):
    """The service could not be reached or did not answer in time."""

    status = 503
    code = "service_unavailable"
    default_message = "The sessions service could not be reached."


class SessionsClient:
    """One pooled HTTP connection set to a sessions service; use it as an async context manager."""

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        timeout: float = 2.0,
        max_connections: int = 100,
    ) -> None:
        self._base_url = base_url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._max_connections = max_connections
        self._http: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> SessionsClient:
        self._http = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=self._max_connections),
            timeout=self._timeout,
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
        self, user_id: int, ip: str, *, extra: dict[str, Any] | None = None, ttl: int | None = None
    ) -> SessionObject:
        """Open a session; `ttl` gives it an idle TTL of its own, shorter than the service's."""
        params = {"user_id": str(user_id), "ip": ip}
        if ttl is not None:
            params["ttl"] = str(ttl)
        return SessionObject(**await self._call("/new", params, extra))

    # Tokens go in the X-Session-Token header, never in URLs that proxies and logs keep.
    async def get(
        self, token: str, *, ip: str | None = None, extra: dict[str, Any] | None = None
    ) -> SessionObject:
        params = {} if ip is None else {"ip": ip}
        return SessionObject(**await self._call("/get", params, extra, token=token))

    async def delete(self, token: str) -> SessionObject:
        return SessionObject(**await self._call("/del", {}, token=token))

    async def rotate(self, token: str) -> SessionObject:
        """The same session under a new token; `token` stops working at once."""
        return SessionObject(**await self._call("/rotate", {}, token=token))

    async def delete_user(self, user_id: int, *, keep: str | None = None) -> int:
        """End every live session of the user but `keep` (a token of theirs); how many."""
        params = {"id": str(user_id)}
        if keep is not None:
            params["except"] = keep
        return int((await self._call("/user/del", params))["deleted"])

    async def delete_ip(self, ip: str) -> int:
        """End every live session seen from the address; how many."""
        return int((await self._call("/ip/del", {"ip": ip}))["deleted"])

    async def by_user(self, user_id: int) -> list[SessionObject]:
        """Every live session of the user, newest opened first (all pages)."""
        return await self._all_pages("/user", {"id": str(user_id)})

    async def by_ip(self, ip: str) -> list[SessionObject]:
        """Every live session last seen from the address, newest opened first (all pages)."""
        return await self._all_pages("/ip", {"ip": ip})

    async def _all_pages(self, path: str, params: dict[str, str]) -> list[SessionObject]:
        sessions: list[SessionObject] = []
        url: str | yarl.URL = self._base_url + path
        query: dict[str, str] | None = params
        while True:
            data, next_url = await self._send(url, query)
            sessions.extend(SessionObject(**s) for s in data)
            if next_url is None:
                return sessions
            url, query = next_url, None  # the next URL carries its whole query

    async def _call(
        self,
        path: str,
        params: dict[str, str],
        extra: dict[str, Any] | None = None,
        *,
        token: str | None = None,
    ) -> Any:
        data, _ = await self._send(self._base_url + path, params, extra, token=token)
        return data

    async def _send(
        self,
        url: str | yarl.URL,
        params: dict[str, str] | None,
        extra: dict[str, Any] | None = None,
        *,
        token: str | None = None,
    ) -> tuple[Any, yarl.URL | None]:
        """The data of one call's answer and the URL of the page after it, if any."""
        if self._http is None:
            raise RuntimeError("use SessionsClient as `async with SessionsClient(...) as client`")
        try:
            body = None if extra is None else orjson.dumps(extra)
        except TypeError as error:  # what the service would refuse too, e.g. a 70-bit integer
            raise InvalidExtra(f"Extra data cannot be sent as JSON: {error}.") from None
        headers = {"Content-Type": "application/json"} if body is not None else {}
        if token is not None:
            headers["X-Session-Token"] = token
        try:
            async with self._http.post(url, params=params, data=body, headers=headers) as response:
                raw = await response.read()
                next_link = response.links.get("next")
        except (aiohttp.ClientError, TimeoutError) as error:
            raise ServiceUnavailable(f"{type(error).__name__}: {error}") from error
        try:
            envelope = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise ServiceUnavailable(f"not a sessions service answer (HTTP {response.status})") from None
        if envelope.get("status") == "success":
            next_url = next_link.get("url") if next_link else None
            return envelope["data"], next_url if isinstance(next_url, yarl.URL) else None
        error_type = BY_CODE.get(envelope.get("code"), SessionsError)
        raise error_type(envelope.get("message"))
