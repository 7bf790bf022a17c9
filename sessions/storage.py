"""The Tarantool adapter: calls the stored procedures and maps tuples and errors.

This is the only module that knows asynctnt and the tuple layout.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Awaitable, Callable
from typing import Any

import asynctnt
from asynctnt.exceptions import ErrorCode, TarantoolDatabaseError, TarantoolError

from .config import TarantoolAddress
from .errors import PayloadTooLarge, SessionsError, StorageFull, StorageUnavailable
from .models import Session

__all__ = ["Storage", "StorageError"]

log = logging.getLogger(__name__)

# Tuple layout of the `sessions` space (tarantool/sessions/fields.lua), zero-based.
TOKEN, USER_ID, IP, CREATE, ACTIVITY, EXTRA = range(6)

# Errors the procedures raise on purpose, by their custom type.
_CUSTOM_ERRORS: dict[str, type[SessionsError]] = {"PayloadTooLarge": PayloadTooLarge}
_UNAVAILABLE_CODES = {ErrorCode.ER_READONLY, ErrorCode.ER_LOADING, ErrorCode.ER_NONMASTER}


class StorageError(RuntimeError):
    """Tarantool reported something the service does not expect: a bug, not bad input."""


class _DuplicateToken(Exception):
    pass


def _error(error_type: str | None, code: int, message: str) -> Exception:
    """The exception for an error Tarantool reported."""
    if error_type in _CUSTOM_ERRORS:
        return _CUSTOM_ERRORS[error_type](message)
    if code == ErrorCode.ER_TUPLE_FOUND:
        return _DuplicateToken()
    # memtx reports exhaustion as an OutOfMemory error, with no code inside a batch.
    if error_type == "OutOfMemory" or code == ErrorCode.ER_MEMORY_ISSUE:
        return StorageFull()
    if code == ErrorCode.ER_MEMTX_MAX_TUPLE_SIZE:
        return PayloadTooLarge()
    if code in _UNAVAILABLE_CODES:
        return StorageUnavailable()
    return StorageError(f"tarantool error {error_type} ({code}): {message}")


def _fresh(error: Exception) -> Exception:
    # One failed batch fails many requests; each gets its own exception object so that
    # tracebacks do not pile up on a shared one.
    if isinstance(error, SessionsError):
        return type(error)(error.message)
    return StorageError(str(error))


def _session(row: list[Any]) -> Session:
    # The procedures return the token already as text.
    return {
        "ip": row[IP],
        "extra": row[EXTRA],
        "user_id": row[USER_ID],
        "create": row[CREATE],
        "activity": row[ACTIVITY],
        "token": row[TOKEN],
    }


def _new_token() -> bytes:
    """A version 4 UUID as 16 bytes: 122 bits from the OS CSPRNG (os.urandom)."""
    raw = bytearray(os.urandom(16))
    raw[6] = (raw[6] & 0x0F) | 0x40  # version 4
    raw[8] = (raw[8] & 0x3F) | 0x80  # RFC 4122 variant
    return bytes(raw)


# Batches are cut at this size so that several are in flight at once: Tarantool works on
# one while the service writes out the answers of another, instead of each waiting on the
# other in lock step. 16 measured best of 4/8/16/32/unbounded (bench/README.md).
_MAX_BATCH = 16


class _Coalescer:
    """Sends the calls of one operation made in one event loop iteration as one batch.

    Under load a single round trip and a single WAL write then serve many requests, which
    measured as the largest saving on the `get` path (bench/README.md).
    """

    def __init__(self, operation: str, send: Callable[[str, list[list[Any]]], Awaitable[Any]]) -> None:
        self._operation = operation
        self._send = send
        self._pending: list[tuple[list[Any], asyncio.Future[Any]]] = []
        self._running: set[asyncio.Task[None]] = set()

    def call(self, args: list[Any]) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        if not self._pending:
            # Runs after every handler that is ready in this iteration has added its call.
            loop.call_soon(self._flush)
        future = loop.create_future()
        self._pending.append((args, future))
        if len(self._pending) >= _MAX_BATCH:
            self._flush()
        return future

    def _flush(self) -> None:
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        task = asyncio.ensure_future(self._run(pending))
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def _run(self, pending: list[tuple[list[Any], asyncio.Future[Any]]]) -> None:
        try:
            results = await self._send(self._operation, [args for args, _ in pending])
        except BaseException as error:
            failure = _fresh(error) if isinstance(error, Exception) else StorageUnavailable()
            for _, future in pending:
                if not future.done():
                    future.set_exception(_fresh(failure))
            if not isinstance(error, Exception):
                raise
            return
        for (_, future), result in zip(pending, results, strict=True):
            if future.done():
                continue
            if len(result) > 1:  # [nil, type, code, message]
                future.set_exception(_error(result[1], result[2], result[3]))
            else:
                future.set_result(result[0] if result else None)


class Storage:
    """Session operations on Tarantool, over connections that reconnect by themselves.

    Given several instances (a primary and its replicas), calls go to the one that is
    writable; a watcher looks every half second, and at once after a failed call, so that
    the service follows a failover within about a second.
    """

    def __init__(
        self,
        addresses: list[TarantoolAddress],
        *,
        user: str,
        password: str,
        idle_ttl: int,
        extra_max_bytes: int,
        timeout: float,
    ) -> None:
        self._idle_ttl = idle_ttl
        self._extra_max = extra_max_bytes
        self._timeout = timeout
        self._conns = [
            asynctnt.Connection(
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
            for host, port in addresses
        ]
        self._conn = self._conns[0]
        self._recheck = asyncio.Event()
        self._watcher: asyncio.Task[None] | None = None
        self._connecting: list[asyncio.Future[Any]] = []
        self._new = _Coalescer("new", self._batch)
        self._get = _Coalescer("get", self._batch)
        self._delete = _Coalescer("delete", self._batch)
        self._by_user = _Coalescer("by_user", self._batch)
        self._by_ip = _Coalescer("by_ip", self._batch)

    async def connect(self) -> None:
        """Connect to every instance; with several, wait until one of them is writable."""
        if len(self._conns) == 1:
            await self._conn.connect()
            return
        # Each keeps retrying in the background until its instance is there.
        self._connecting = [asyncio.ensure_future(conn.connect()) for conn in self._conns]
        # Polling: which instance is writable is Tarantool's state, with nothing to wait on.
        while not await self._elect():  # noqa: ASYNC110
            await asyncio.sleep(0.1)
        self._watcher = asyncio.create_task(self._watch())

    async def close(self) -> None:
        for task in [*self._connecting, *([self._watcher] if self._watcher else [])]:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for conn in self._conns:
            await conn.disconnect()

    async def _elect(self) -> bool:
        """Point calls at a writable instance, preferring the current one; whether found."""
        candidates = [self._conn, *(c for c in self._conns if c is not self._conn)]
        for conn in candidates:
            if not conn.is_fully_connected:
                continue
            try:
                info = (await conn.call("sessions.info", [], timeout=self._timeout))[0]
            except (TarantoolError, TimeoutError, OSError):
                continue
            if not info["ro"]:
                if conn is not self._conn:
                    log.warning("switching to the writable Tarantool at %s", conn.fingerprint)
                self._conn = conn
                return True
        return False

    async def _watch(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._recheck.wait(), 0.5)
            self._recheck.clear()
            await self._elect()

    async def new(self, user_id: int, ip: str, patch: dict[str, Any] | None) -> Session:
        while True:
            try:
                row = await self._new.call([_new_token(), user_id, ip, patch, self._extra_max])
            except _DuplicateToken:
                # 122 random bits make a clash next to impossible; draw again if it happens.
                continue
            return _session(row)

    async def get(self, token: str, ip: str | None, patch: dict[str, Any] | None) -> Session | None:
        row = await self._get.call([token, ip, patch, self._idle_ttl, self._extra_max])
        return None if row is None else _session(row)

    async def delete(self, token: str) -> Session | None:
        row = await self._delete.call([token, self._idle_ttl])
        return None if row is None else _session(row)

    async def by_user(self, user_id: int) -> list[Session]:
        rows = await self._by_user.call([user_id, self._idle_ttl])
        return [_session(row) for row in rows]

    async def by_ip(self, ip: str) -> list[Session]:
        rows = await self._by_ip.call([ip, self._idle_ttl])
        return [_session(row) for row in rows]

    async def info(self) -> dict[str, Any]:
        result: dict[str, Any] = await self._call("sessions.info", [])
        return result

    async def _batch(self, operation: str, calls: list[list[Any]]) -> Any:
        return await self._call("sessions.batch", [operation, calls])

    async def _call(self, name: str, args: list[Any]) -> Any:
        """The first value a procedure returns, with Tarantool's errors mapped."""
        if not self._conn.is_fully_connected:
            self._recheck.set()
            raise StorageUnavailable()
        try:
            response = await self._conn.call(name, args, timeout=self._timeout)
        except TarantoolDatabaseError as error:
            custom = None
            if error.error is not None and error.error.trace:
                custom = error.error.trace[0].fields.get("custom_type")
            mapped = _error(custom, error.code, error.message)
            if isinstance(mapped, StorageUnavailable):
                self._recheck.set()
            raise mapped from None
        except (TarantoolError, TimeoutError, OSError):
            self._recheck.set()
            raise StorageUnavailable() from None
        return response[0] if response else None
