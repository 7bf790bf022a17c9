"""One exception per error code of the API, grouped by what a caller does about it.

- `NotFoundError`: the session is not there (signed out, expired, never was): sign the user in.
- `InvalidInput`: the request was wrong; retrying it as it is will not help.
- `Unavailable`: the service cannot answer now (storage down, overloaded, unreachable);
  `retry_after` holds the seconds it asked for, when it did.

The codes are those of the service's OpenAPI document; the suite checks that every code there
has its class here.
"""

from __future__ import annotations

from typing import ClassVar

__all__ = [
    "BY_CODE",
    "BadRequest",
    "ExpectationFailed",
    "IdempotencyConflict",
    "InternalError",
    "InvalidCursor",
    "InvalidExtra",
    "InvalidInput",
    "InvalidIp",
    "InvalidLimit",
    "InvalidTtl",
    "InvalidUserId",
    "MethodNotAllowed",
    "NotFound",
    "NotFoundError",
    "Overloaded",
    "PayloadTooLarge",
    "RequestTimeout",
    "ServiceUnavailable",
    "SessionsError",
    "StorageFull",
    "StorageUnavailable",
    "StorageWriteFailed",
    "TokenNotFound",
    "Unauthorized",
    "Unavailable",
]


class SessionsError(Exception):
    """An error answer of the service (or none at all): its code, message and HTTP status."""

    code: ClassVar[str] = "internal_error"

    def __init__(self, message: str = "", *, status: int | None = None, retry_after: float | None = None):
        super().__init__(message or self.code)
        self.message = message
        self.status = status
        self.retry_after = retry_after


class NotFoundError(SessionsError):
    """The thing asked for is not there."""


class InvalidInput(SessionsError):
    """The request itself was wrong."""


class Unavailable(SessionsError):
    """The service cannot answer now; retry later (after `retry_after` seconds if given)."""


class InternalError(SessionsError):
    code = "internal_error"


class TokenNotFound(NotFoundError):
    code = "token_not_found"


class NotFound(NotFoundError):
    code = "not_found"


class BadRequest(InvalidInput):
    code = "bad_request"


class InvalidUserId(InvalidInput):
    code = "invalid_user_id"


class InvalidIp(InvalidInput):
    code = "invalid_ip"


class InvalidExtra(InvalidInput):
    code = "invalid_extra"


class InvalidTtl(InvalidInput):
    code = "invalid_ttl"


class InvalidLimit(InvalidInput):
    code = "invalid_limit"


class InvalidCursor(InvalidInput):
    code = "invalid_cursor"


class Unauthorized(InvalidInput):
    code = "unauthorized"


class MethodNotAllowed(InvalidInput):
    code = "method_not_allowed"


class ExpectationFailed(InvalidInput):
    code = "expectation_failed"


class PayloadTooLarge(InvalidInput):
    code = "payload_too_large"


class RequestTimeout(InvalidInput):
    code = "request_timeout"


class IdempotencyConflict(InvalidInput):
    code = "idempotency_conflict"


class StorageUnavailable(Unavailable):
    code = "storage_unavailable"


class StorageFull(Unavailable):
    code = "storage_full"


class StorageWriteFailed(Unavailable):
    code = "storage_write_failed"


class Overloaded(Unavailable):
    code = "overloaded"


class ServiceUnavailable(Unavailable):
    """No answer: the service could not be reached, did not answer in time, or is not one."""

    code = "service_unavailable"


def _codes(base: type[SessionsError]) -> dict[str, type[SessionsError]]:
    found = {base.code: base} if base.__dict__.get("code") else {}
    for sub in base.__subclasses__():
        found.update(_codes(sub))
    return found


BY_CODE: dict[str, type[SessionsError]] = _codes(SessionsError)
