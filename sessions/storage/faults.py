"""Tarantool's errors, as the service's: what each one means to a caller."""

from __future__ import annotations

import logging

from asynctnt.exceptions import ErrorCode, TarantoolDatabaseError

from ..contract import ERRORS
from ..errors import (
    PayloadTooLarge,
    SessionsError,
    StorageFull,
    StorageUnavailable,
    StorageWriteFailed,
)
from ..logs import RateLimitedLog

__all__ = ["DuplicateToken", "StorageError", "error_type", "fresh", "mapped"]

log = logging.getLogger("sessions.storage")

# A write that could not reach the disk (a full or failing disk, a rolled-back transaction)
# changed nothing and can be retried; the instance itself goes on serving reads, and writes
# again once it can.
_WRITE_FAILED_CODES = {
    ErrorCode.ER_WAL_IO,
    ErrorCode.ER_CASCADE_ROLLBACK,
    ErrorCode.ER_TXN_ROLLBACK,
    ErrorCode.ER_SYNC_ROLLBACK,
    ErrorCode.ER_SYNC_QUORUM_TIMEOUT,
}
# A synchronous write the quorum did not confirm in time: undone, nothing changed.
_SYNC_CODES = {ErrorCode.ER_SYNC_ROLLBACK, ErrorCode.ER_SYNC_QUORUM_TIMEOUT}
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
_BUG_TYPES = {"LuaError"}
_BUG_CODES = {ErrorCode.ER_PROC_LUA}

# The store keeps tokens another way than this service (tarantool/sessions/hashing.lua).
_MISMATCH = "TokenStorageMismatch"

# A failing disk or a bug fails every request alike: one line a minute says so.
_storage_log = RateLimitedLog(log, interval=60.0)


class StorageError(RuntimeError):
    """Tarantool reported something the service does not expect: a bug, not bad input."""


class DuplicateToken(Exception):
    """A new token clashed with a stored one (next to impossible): draw another."""


def mapped(kind: str | None, code: int, message: str) -> Exception:
    """The exception for an error Tarantool reported, whatever it is."""
    if kind == _MISMATCH:
        # Every call fails alike until the service is restarted: one line a minute says why.
        _storage_log.error("token-storage", "tarantool refused the call: %s", message)
    if kind is not None and kind in ERRORS:
        error = ERRORS[kind]
        return (
            StorageError(f"the procedures refused an argument: {message}")
            if error is None
            else error(message)
        )
    if code == ErrorCode.ER_TUPLE_FOUND:
        return DuplicateToken()
    # memtx reports exhaustion as an OutOfMemory error, with no code inside a batch.
    if kind == "OutOfMemory" or code == ErrorCode.ER_MEMORY_ISSUE:
        return StorageFull()
    if code == ErrorCode.ER_MEMTX_MAX_TUPLE_SIZE:
        return PayloadTooLarge()
    if code in _UNAVAILABLE_CODES:
        return StorageUnavailable()
    if code in _SYNC_CODES:
        return StorageWriteFailed(
            "Too few replicas confirmed the write in time (synchronous replication); nothing was "
            "changed, try again."
        )
    if code in _WRITE_FAILED_CODES:
        _storage_log.warning("write-failed", "tarantool could not write: %s (%s)", message, code)
        return StorageWriteFailed()
    if kind in _BUG_TYPES or code in _BUG_CODES:
        return StorageError(f"tarantool error {kind} ({code}): {message}")
    _storage_log.error("unknown", "tarantool answered an unexpected error %s (%s): %s", kind, code, message)
    return StorageUnavailable()


def error_type(error: TarantoolDatabaseError) -> str | None:
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


def fresh(error: Exception) -> Exception:
    """A copy of an exception for one more caller: one failed batch fails many requests, and
    each gets its own exception object so that tracebacks do not pile up on a shared one."""
    if isinstance(error, SessionsError):
        return type(error)(error.message)
    return StorageError(str(error))
