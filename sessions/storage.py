"""The Tarantool adapter: calls the stored procedures and maps tuples and errors.

This is the only module that knows asynctnt and the tuple layout.
"""

from __future__ import annotations

import uuid
from typing import Any

import asynctnt
from asynctnt.exceptions import (
    ErrorCode,
    TarantoolDatabaseError,
    TarantoolError,
    TarantoolNetworkError,
)

from .config import TarantoolAddress
from .errors import PayloadTooLarge, SessionsError, StorageFull, StorageUnavailable
from .models import Session

__all__ = ["Storage"]

# Tuple layout of the `sessions` space (tarantool/sessions/fields.lua), zero-based.
TOKEN, USER_ID, IP, CREATE, ACTIVITY, EXTRA = range(6)

# Errors the procedures raise on purpose, by their custom type.
_CUSTOM_ERRORS: dict[str, type[SessionsError]] = {"PayloadTooLarge": PayloadTooLarge}
_UNAVAILABLE_CODES = {ErrorCode.ER_READONLY, ErrorCode.ER_LOADING, ErrorCode.ER_NONMASTER}


def _session(row: list[Any]) -> Session:
    return {
        "ip": row[IP],
        "extra": row[EXTRA],
        "user_id": row[USER_ID],
        "create": row[CREATE],
        "activity": row[ACTIVITY],
        "token": str(row[TOKEN]),
    }


class Storage:
    """Session operations on one Tarantool connection that reconnects by itself."""

    def __init__(
        self,
        address: TarantoolAddress,
        *,
        user: str,
        password: str,
        idle_ttl: int,
        extra_max_bytes: int,
        timeout: float,
    ) -> None:
        host, port = address
        self._idle_ttl = idle_ttl
        self._extra_max = extra_max_bytes
        self._timeout = timeout
        self._conn = asynctnt.Connection(
            host=host,
            port=port,
            username=user,
            password=password,
            # Only procedures are called, so the schema is never needed.
            fetch_schema=False,
            auto_refetch_schema=False,
            connect_timeout=timeout,
            reconnect_timeout=0.2,
            ping_timeout=1.0,
        )

    async def connect(self) -> None:
        await self._conn.connect()

    async def close(self) -> None:
        await self._conn.disconnect()

    async def new(self, user_id: int, ip: str, patch: dict[str, Any] | None) -> Session:
        while True:
            try:
                row = await self._call("sessions.new", [uuid.uuid4(), user_id, ip, patch, self._extra_max])
            except TarantoolDatabaseError as error:
                # 122 random bits make a clash next to impossible; draw again if it happens.
                if error.code == ErrorCode.ER_TUPLE_FOUND:
                    continue
                raise self._mapped(error) from None
            return _session(row)

    async def get(self, token: uuid.UUID, ip: str | None, patch: dict[str, Any] | None) -> Session | None:
        row = await self._checked_call("sessions.get", [token, ip, patch, self._idle_ttl, self._extra_max])
        return None if row is None else _session(row)

    async def delete(self, token: uuid.UUID) -> Session | None:
        row = await self._checked_call("sessions.delete", [token, self._idle_ttl])
        return None if row is None else _session(row)

    async def by_user(self, user_id: int) -> list[Session]:
        rows = await self._checked_call("sessions.by_user", [user_id, self._idle_ttl])
        return [_session(row) for row in rows]

    async def by_ip(self, ip: str) -> list[Session]:
        rows = await self._checked_call("sessions.by_ip", [ip, self._idle_ttl])
        return [_session(row) for row in rows]

    async def info(self) -> dict[str, Any]:
        result: dict[str, Any] = await self._checked_call("sessions.info", [])
        return result

    async def _checked_call(self, name: str, args: list[Any]) -> Any:
        try:
            return await self._call(name, args)
        except TarantoolDatabaseError as error:
            raise self._mapped(error) from None

    async def _call(self, name: str, args: list[Any]) -> Any:
        """The first value a procedure returns; network trouble becomes StorageUnavailable."""
        if not self._conn.is_fully_connected:
            raise StorageUnavailable()
        try:
            response = await self._conn.call(name, args, timeout=self._timeout)
        except TarantoolDatabaseError:
            raise
        except (TimeoutError, TarantoolNetworkError, TarantoolError, OSError):
            raise StorageUnavailable() from None
        return response[0] if response else None

    @staticmethod
    def _mapped(error: TarantoolDatabaseError) -> Exception:
        """The API error for a storage error; anything unexpected stays as it is."""
        if error.error is not None and error.error.trace:
            custom = error.error.trace[0].fields.get("custom_type")
            if custom in _CUSTOM_ERRORS:
                return _CUSTOM_ERRORS[custom](error.message)
        if error.code == ErrorCode.ER_MEMORY_ISSUE:
            return StorageFull()
        if error.code in _UNAVAILABLE_CODES:
            return StorageUnavailable()
        return error
