"""One exception per error code of the API, grouped by what a caller does about it.

- `NotFoundError`: the session is not there (signed out, expired, never was): sign the user in.
- `InvalidInput`: the request was wrong; retrying it as it is will not help.
- `Unavailable`: the service cannot answer now (storage down, overloaded, unreachable, a bug);
  `retry_after` holds the seconds it asked for, when it did. Never "no session".

The families and the retry rule of each code are the service's OpenAPI document's (`x-family`
and `x-retry` of the Error schema's code); the suite checks that every code there has its class
here, in that family, with that rule. A code this client does not know (from a later release)
is raised as `InvalidInput` with a 4xx status and `Unavailable` with any other, keeping its
code, and is never retried.
"""

from __future__ import annotations

from typing import ClassVar, Literal

__all__ = [
    "BY_CODE",
    "FAMILIES",
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
    "InvalidWait",
    "MethodNotAllowed",
    "NotFound",
    "NotFoundError",
    "Overloaded",
    "PayloadTooLarge",
    "RequestTimeout",
    "Retry",
    "ServiceUnavailable",
    "SessionsError",
    "StorageFull",
    "StorageUnavailable",
    "StorageWriteFailed",
    "TokenNotFound",
    "Unauthorized",
    "Unavailable",
    "error_for",
]

# Whether a call is repeated after the error: always (nothing was done), if the operation is
# safe to repeat (`RETRY_SAFE`), or never.
Retry = Literal["always", "if_safe", "never"]


class SessionsError(Exception):
    """An error answer of the service (or none at all): its code, message, HTTP status (None
    when nothing was sent or nothing came back) and the Retry-After seconds it asked for."""

    code: str = ""
    retry: ClassVar[Retry] = "never"

    def __init__(
        self,
        message: str = "",
        *,
        status: int | None = None,
        retry_after: float | None = None,
        code: str | None = None,
    ):
        if code is not None:
            self.code = code  # one this client has no class for
        super().__init__(message or self.code)
        self.message = message
        self.status = status
        self.retry_after = retry_after


class NotFoundError(SessionsError):
    """The session is not there: ask the user to sign in."""


class InvalidInput(SessionsError):
    """The request itself was wrong."""


class Unavailable(SessionsError):
    """The service cannot answer now; retry later (after `retry_after` seconds if given)."""


class TokenNotFound(NotFoundError):
    code = "token_not_found"


class NotFound(InvalidInput):
    """No such path: a wrong base URL, or a method of a later release than the service's."""

    code = "not_found"


class BadRequest(InvalidInput):
    """Refused by the service, or by this client before sending: a token or key that an HTTP
    header cannot hold (control characters such as CR and LF, or non-ASCII)."""

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


class InvalidWait(InvalidInput):
    code = "invalid_wait"


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


class InternalError(Unavailable):
    """A bug in the service; not retried, as a second does not mend it."""

    code = "internal_error"


class StorageUnavailable(Unavailable):
    code = "storage_unavailable"
    retry = "if_safe"


class StorageFull(Unavailable):
    code = "storage_full"
    retry = "if_safe"


class StorageWriteFailed(Unavailable):
    code = "storage_write_failed"
    retry = "if_safe"


class Overloaded(Unavailable):
    code = "overloaded"
    retry = "always"


class ServiceUnavailable(Unavailable):
    """No answer: the service could not be reached, did not answer in time, or is not one."""

    code = "service_unavailable"
    retry = "if_safe"


def _codes(base: type[SessionsError]) -> dict[str, type[SessionsError]]:
    found = {base.code: base} if base.__dict__.get("code") else {}
    for sub in base.__subclasses__():
        found.update(_codes(sub))
    return found


BY_CODE: dict[str, type[SessionsError]] = _codes(SessionsError)
# The API document's names of the families (`x-family`).
FAMILIES: dict[str, type[SessionsError]] = {
    "not_found": NotFoundError,
    "invalid_input": InvalidInput,
    "unavailable": Unavailable,
}


def error_for(code: object, message: str, *, status: int, retry_after: float | None) -> SessionsError:
    """The exception of an error answer: its code's class, or for a code this client does not
    know, its family by the HTTP status (never "not found", never retried)."""
    if isinstance(code, str) and code in BY_CODE:
        return BY_CODE[code](message, status=status, retry_after=retry_after)
    family = InvalidInput if 400 <= status < 500 else Unavailable
    return family(message, status=status, retry_after=retry_after, code=str(code))
