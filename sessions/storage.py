"""The Tarantool adapter: calls the stored procedures and maps tuples and errors.

This is the only module that knows asynctnt and the tuple layout.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

import asynctnt
import orjson
from asynctnt.exceptions import ErrorCode, TarantoolDatabaseError, TarantoolError

from .config import TarantoolAddress
from .errors import (
    IdempotencyConflict,
    Overloaded,
    PayloadTooLarge,
    SessionsError,
    StorageFull,
    StorageUnavailable,
    StorageWriteFailed,
    TokenNotFound,
)
from .logs import RateLimitedLog
from .models import Cursor, Session

__all__ = ["Storage", "StorageError"]

log = logging.getLogger(__name__)

# Tuple layout of the `sessions` space (tarantool/sessions/fields.lua), zero-based.
TOKEN, USER_ID, IP, CREATE, ACTIVITY, EXTRA = range(6)

# Errors the procedures raise on purpose, by their custom type.
_CUSTOM_ERRORS: dict[str, type[SessionsError]] = {
    "PayloadTooLarge": PayloadTooLarge,
    "TokenNotFound": TokenNotFound,
    "Overloaded": Overloaded,
    "IdempotencyConflict": IdempotencyConflict,
}
# Tarantool's own error codes by what they mean to a caller. A write that could not reach
# the disk (a full or failing disk, a rolled-back transaction) changed nothing and can be
# retried; the instance itself goes on serving reads, and writes again once it can.
_WRITE_FAILED_CODES = {
    ErrorCode.ER_WAL_IO,
    ErrorCode.ER_CASCADE_ROLLBACK,
    ErrorCode.ER_TXN_ROLLBACK,
    ErrorCode.ER_SYNC_ROLLBACK,
    ErrorCode.ER_SYNC_QUORUM_TIMEOUT,
}
_UNAVAILABLE_CODES = {
    ErrorCode.ER_READONLY,
    ErrorCode.ER_LOADING,
    ErrorCode.ER_NONMASTER,
    ErrorCode.ER_BOOTSTRAP_READONLY,
    ErrorCode.ER_NO_CONNECTION,
    ErrorCode.ER_TIMEOUT,
    ErrorCode.ER_TRANSACTION_TIMEOUT,
}
# Errors of the procedures' own code (a bad argument, a Lua error): bugs, not bad input.
_BUG_TYPES = {"LuaError", "InvalidArgument"}
_BUG_CODES = {ErrorCode.ER_PROC_LUA}

# A failing disk or a bug fails every request alike: one line a minute says so.
_storage_log = RateLimitedLog(log, interval=60.0)
# A full store touches every `get`: one line every ten seconds is enough to say so.
_touch_log = RateLimitedLog(log, interval=10.0)
# A refused switch is looked at again every half second.
_behind_log = RateLimitedLog(log, interval=10.0)


class StorageError(RuntimeError):
    """Tarantool reported something the service does not expect: a bug, not bad input."""


class _DuplicateToken(Exception):
    pass


def _error(error_type: str | None, code: int, message: str) -> Exception:
    """The exception for an error Tarantool reported, whatever it is."""
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
    if code in _WRITE_FAILED_CODES:
        _storage_log.warning("write-failed", "tarantool could not write: %s (%s)", message, code)
        return StorageWriteFailed()
    if error_type in _BUG_TYPES or code in _BUG_CODES:
        return StorageError(f"tarantool error {error_type} ({code}): {message}")
    _storage_log.error(
        "unknown", "tarantool answered an unexpected error %s (%s): %s", error_type, code, message
    )
    return StorageUnavailable()


def _error_type(error: TarantoolDatabaseError) -> str | None:
    """The type Tarantool gave an error (a custom one first), if its answer says."""
    # Older instances and some errors (a failed WAL write, say) come without a stack, or
    # with frames that have no fields.
    payload = error.error
    trace = getattr(payload, "trace", None) if payload is not None else None
    if not trace:
        return None
    frame = trace[0]
    fields = getattr(frame, "fields", None)
    custom = fields.get("custom_type") if isinstance(fields, dict) else None
    return str(custom or getattr(frame, "error_type", None) or "") or None


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


def _fingerprint(user_id: int, ip: str, ttl: int | None, patch: dict[str, Any] | None) -> str:
    """What a `new` asked for, as a short digest an idempotency key is bound to."""
    canonical = orjson.dumps([user_id, ip, ttl, patch], option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(canonical).hexdigest()[:32]


def _lacking(vclock: dict[int, int], seen: dict[int, int]) -> int:
    """How many rows of `seen` (an instance's vclock, id -> lsn) `vclock` does not have."""
    return sum(lsn - vclock.get(id_, 0) for id_, lsn in seen.items() if lsn > vclock.get(id_, 0))


def _note(seen: dict[int, int], vclock: dict[int, int]) -> None:
    """Remember the newest of each component."""
    for id_, lsn in vclock.items():
        seen[id_] = max(lsn, seen.get(id_, 0))


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
        for (_, future), item in zip(pending, results, strict=True):
            if future.done():
                continue
            # The item shapes of `batch` (procedures.lua): [], [result], [result, flag],
            # or [nil, type, code, message].
            if len(item) == 4:
                future.set_exception(_error(item[1], item[2], item[3]))
            else:
                future.set_result(item)


class Storage:
    """Session operations on Tarantool, over connections that reconnect by themselves.

    Given several instances (a primary and its replicas), calls go to the one that is
    writable; a watcher looks every half second, and at once after a failed call, so that
    the service follows a failover within about a second.

    Each instance gets two connections: one for the check path (the coalesced batches and
    `info`) and one for bulk work (listings and bulk deletes), so that a large answer on its
    way never holds up a `get`'s behind it in the same socket. Every call carries its
    deadline, on the instance's clock, and Tarantool does not start work past it.
    """

    def __init__(
        self,
        addresses: list[TarantoolAddress],
        *,
        user: str,
        password: str,
        idle_ttl: int,
        max_lifetime: int | None = None,
        max_per_user: int | None = None,
        extra_max_bytes: int,
        timeout: float,
        page_max_bytes: int = 2**20,
        idempotency_window: int = 3600,
    ) -> None:
        # The rules every call carries (tarantool/sessions/liveness.lua): 0 is "no limit".
        self._rules = [idle_ttl, max_lifetime or 0, max_per_user or 0]
        self._extra_max = extra_max_bytes
        self._timeout = timeout
        self._page_bytes = page_max_bytes
        self._window = idempotency_window
        # Tarantool's clock minus this process' (time.time()), measured on every look at an
        # instance, so that deadlines mean the same moment on both sides.
        self._offset = 0.0

        def connection(host: str, port: int | str) -> asynctnt.Connection:
            return asynctnt.Connection(
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

        # What the instance in use had at the last look (its vclock, id -> lsn): the service
        # never switches to one that lacks any of it.
        self._seen: dict[int, int] = {}
        self._conns = [connection(host, port) for host, port in addresses]
        self._bulk_conns = [connection(host, port) for host, port in addresses]
        self._conn = self._conns[0]
        self._bulk = self._bulk_conns[0]
        self._recheck = asyncio.Event()
        self._watcher: asyncio.Task[None] | None = None
        self._connecting: list[asyncio.Future[Any]] = []
        self._new = _Coalescer("new", self._batch)
        self._get = _Coalescer("get", self._batch)
        self._delete = _Coalescer("delete", self._batch)
        self._rotate = _Coalescer("rotate", self._batch)

    async def connect(self) -> None:
        """Connect to every instance; with several, wait until one of them is writable."""
        if len(self._conns) == 1:
            await self._conn.connect()
            await self._bulk.connect()
            self._offset = (await self._measure(self._conn))[1]
            return
        # Each keeps retrying in the background until its instance is there.
        self._connecting = [
            asyncio.ensure_future(conn.connect()) for conn in [*self._conns, *self._bulk_conns]
        ]
        # Polling: which instance is writable is Tarantool's state, with nothing to wait on.
        while not await self._elect():  # noqa: ASYNC110
            await asyncio.sleep(0.1)
        self._watcher = asyncio.create_task(self._watch())

    async def close(self) -> None:
        for task in [*self._connecting, *([self._watcher] if self._watcher else [])]:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for conn in [*self._conns, *self._bulk_conns]:
            await conn.disconnect()

    async def _elect(self) -> bool:
        """Point calls at a writable instance, preferring the current one; whether found."""
        candidates = [self._conn, *(c for c in self._conns if c is not self._conn)]
        for conn in candidates:
            if not conn.is_fully_connected:
                continue
            try:
                info, offset = await self._measure(conn)
            except (TarantoolError, TimeoutError, OSError):
                continue
            vclock = {int(id_): int(lsn) for id_, lsn in (info.get("vclock") or {}).items()}
            if conn is self._conn:
                _note(self._seen, vclock)
            if info["ro"]:
                continue
            if conn is not self._conn:
                missing = _lacking(vclock, self._seen)
                if missing:
                    _behind_log.error(
                        str(conn.fingerprint),
                        "not switching to the writable Tarantool at %s: it lacks %d rows the one in use "
                        "had (replication lag, or an old primary). Bring the other back, or restart this "
                        "service to accept the loss",
                        conn.fingerprint,
                        missing,
                    )
                    continue
                log.warning("switching to the writable Tarantool at %s", conn.fingerprint)
                _note(self._seen, vclock)
            self._conn = conn
            self._offset = offset
            self._bulk = self._bulk_conns[self._conns.index(conn)]
            return True
        return False

    async def _measure(self, conn: asynctnt.Connection) -> tuple[dict[str, Any], float]:
        """An instance's `info`, and its clock's offset from this process' clock."""
        sent = time.time()
        info: dict[str, Any] = (await conn.call("sessions.info", [], timeout=self._timeout))[0]
        received = time.time()
        # An instance on older Lua does not say its time: the clocks are taken as one.
        return info, info.get("now", received) - (sent + received) / 2

    def _deadline(self) -> float:
        """When a call made now stops being waited for, on the instance's clock."""
        return time.time() + self._offset + self._timeout

    async def _watch(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._recheck.wait(), 0.5)
            self._recheck.clear()
            await self._elect()

    async def new(
        self,
        user_id: int,
        ip: str,
        patch: dict[str, Any] | None,
        *,
        ttl: int | None = None,
        idempotency_key: str | None = None,
    ) -> Session:
        """Open a session; `ttl` is its own idle TTL (the service's when None). With an
        idempotency key used before within the window, with the same parameters, the
        session that first call opened."""
        idem = None
        if idempotency_key is not None:
            idem = {
                "key": idempotency_key,
                "fingerprint": _fingerprint(user_id, ip, ttl, patch),
                "window": self._window,
            }
        while True:
            try:
                item = await self._new.call(
                    [_new_token(), user_id, ip, patch, self._extra_max, self._rules, ttl, idem]
                )
            except _DuplicateToken:
                # 122 random bits make a clash next to impossible; draw again if it happens.
                continue
            return _session(item[0])

    async def get(self, token: str, ip: str | None, patch: dict[str, Any] | None) -> Session | None:
        item = await self._get.call([token, ip, patch, self._rules, self._extra_max])
        if not item:
            return None
        if len(item) > 1:  # served as stored: memory is full
            _touch_log.warning(
                "untouched",
                "sessions are served without recording their activity: Tarantool's memory is full, "
                "or the replicas synchronous replication waits for do not confirm writes",
            )
        return _session(item[0])

    async def delete(self, token: str) -> Session | None:
        item = await self._delete.call([token, self._rules])
        return _session(item[0]) if item else None

    async def rotate(self, token: str) -> Session | None:
        """The session under a new token, the old one ended; None if there is no such session."""
        while True:
            try:
                item = await self._rotate.call([token, _new_token(), self._rules])
            except _DuplicateToken:
                continue
            return _session(item[0]) if item else None

    async def page(
        self, kind: str, key: int | str, limit: int, after: Cursor | None
    ) -> tuple[list[Session], Cursor | None]:
        """One page of the live sessions of a user (`kind` "user") or an address ("ip"),
        newest opened first, and where the next page starts (None: nothing follows).
        Called on its own, never in a batch."""
        opts: dict[str, Any] = {"limit": limit, "page_bytes": self._page_bytes, "deadline": self._deadline()}
        if after is not None:
            opts["after"] = after
        rows, more, last = await self._call("sessions.list", [kind, key, self._rules, opts], bulk=True)
        return [_session(row) for row in rows], (int(last) if more and last is not None else None)

    async def delete_all(self, kind: str, key: int | str, *, except_token: str | None = None) -> int:
        """End every live session of a user (`kind` "user") or an address ("ip"), but
        `except_token`; how many. Each call to Tarantool ends a bounded number, in short
        transactions, so other requests go on meanwhile."""
        ended, first = 0, True
        while True:
            # Only the first call checks the kept session (a later failure would come after
            # sessions were already ended); the later ones only leave it alone.
            opts = {"except_token": except_token, "checked": not first, "deadline": self._deadline()}
            count, more = await self._call("sessions.delete_all", [kind, key, self._rules, opts], bulk=True)
            ended += int(count)
            first = False
            if not more:
                return ended

    async def info(self) -> dict[str, Any]:
        result: dict[str, Any] = await self._call("sessions.info", [])
        return result

    async def _batch(self, operation: str, calls: list[list[Any]]) -> Any:
        return await self._call("sessions.batch", [operation, calls, self._deadline()])

    async def _call(self, name: str, args: list[Any], *, bulk: bool = False) -> Any:
        """The first value a procedure returns, with Tarantool's errors mapped."""
        conn = self._bulk if bulk else self._conn
        if not conn.is_fully_connected:
            self._recheck.set()
            raise StorageUnavailable()
        try:
            response = await conn.call(name, args, timeout=self._timeout)
        except TarantoolDatabaseError as error:
            mapped = _error(_error_type(error), error.code, error.message)
            if isinstance(mapped, StorageUnavailable):
                self._recheck.set()
            raise mapped from None
        except (TarantoolError, TimeoutError, OSError):
            self._recheck.set()
            raise StorageUnavailable() from None
        return response[0] if response else None
