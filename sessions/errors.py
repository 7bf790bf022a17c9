"""The service's errors: each carries the envelope code, a message and the HTTP status, and
what a client does about it (its family, and whether it may repeat the call), which the API
document gives the clients (`x-family`, `x-retry`)."""

from __future__ import annotations

from typing import ClassVar, Literal

from .limits import EVENTS_WAIT_MAX, LIST_MAX, MAX_USER_ID

__all__ = [
    "BY_CODE",
    "BadRequest",
    "ExpectationFailed",
    "Family",
    "IdempotencyConflict",
    "InternalError",
    "InvalidCursor",
    "InvalidExtra",
    "InvalidIp",
    "InvalidLimit",
    "InvalidTtl",
    "InvalidUserId",
    "InvalidWait",
    "MethodNotAllowed",
    "NotFound",
    "Overloaded",
    "PayloadTooLarge",
    "RequestTimeout",
    "Retry",
    "SessionsError",
    "StorageFull",
    "StorageUnavailable",
    "StorageWriteFailed",
    "TokenNotFound",
    "Unauthorized",
]


# What the caller does: sign the user in (the session is not there), fix the request, or
# take it that the service cannot answer now (which is never "no session").
Family = Literal["not_found", "invalid_input", "unavailable"]
# Whether a client repeats the call after this answer: always (nothing was done), if the
# operation is safe to repeat (its `x-retry-safe`), or never.
Retry = Literal["always", "if_safe", "never"]


class SessionsError(Exception):
    """Base of every error the API reports; rendered as the error envelope."""

    status: ClassVar[int] = 500
    code: ClassVar[str] = "internal_error"
    default_message: ClassVar[str] = "Internal error."
    headers: ClassVar[dict[str, str]] = {}
    # A bug: the service cannot answer this now, and repeating it will not pass in a second.
    family: ClassVar[Family] = "unavailable"
    retry: ClassVar[Retry] = "never"

    def __init__(self, message: str | None = None) -> None:
        self.message = message or self.default_message
        super().__init__(self.message)

    def response_headers(self) -> dict[str, str]:
        """HTTP headers that go with this error's answer."""
        return self.headers


class BadRequest(SessionsError):
    """The request is not valid HTTP (a request line or header over 8190 bytes, a broken chunked body, a
    `Content-Encoding` other than one gzip, deflate, br, zstd or identity, or one that does not decode, a
    malformed `Idempotency-Key`), or it gives two different
    tokens (query and `X-Session-Token`), a session id (`/session`'s `id`, `except_id`) that is not a UUID in
    the 8-4-4-4-12 form, a `with` other than `id` or on a method that answers no session (the counts and bulk
    deletes), or both `except_id` and a token to keep (even an empty or malformed one).
    """

    status = 400
    code = "bad_request"
    family = "invalid_input"
    default_message = "The request is not valid HTTP."


class Unauthorized(SessionsError):
    """API keys are configured and the request has no valid `Authorization: Bearer KEY` (given once)."""

    status = 401
    code = "unauthorized"
    family = "invalid_input"
    default_message = "A valid API key is required: Authorization: Bearer KEY."
    headers: ClassVar[dict[str, str]] = {"WWW-Authenticate": "Bearer"}


class RequestTimeout(SessionsError):
    """The request body did not arrive within `SESSIONS_BODY_TIMEOUT`."""

    status = 408
    code = "request_timeout"
    family = "invalid_input"
    default_message = "The request was not received in time."


class InvalidUserId(SessionsError):
    """`user_id`/`id` missing, repeated, or not a plain decimal integer from 1 to {MAX_USER_ID}."""

    status = 400
    code = "invalid_user_id"
    family = "invalid_input"
    default_message = f"User id must be a positive integer up to {MAX_USER_ID}."


class InvalidIp(SessionsError):
    """`ip` missing (where required), empty, repeated, or not an IPv4/IPv6 address."""

    status = 400
    code = "invalid_ip"
    family = "invalid_input"
    default_message = "IP must be an IPv4 or IPv6 address."


class InvalidExtra(SessionsError):
    """A body that is not a JSON object or `key=value` form pairs (JSON sent with a form type included: the
    message says to send `Content-Type: application/json`).
    """

    status = 400
    code = "invalid_extra"
    family = "invalid_input"
    default_message = "Extra data must be a JSON object or a form-encoded body."


class InvalidTtl(SessionsError):
    """`ttl` is not a plain decimal integer from 1 to `SESSIONS_IDLE_TTL`, or repeated."""

    status = 400
    code = "invalid_ttl"
    family = "invalid_input"
    default_message = "ttl must be a whole number of seconds from 1 to the service's idle TTL."


class InvalidLimit(SessionsError):
    """`limit` is not a plain decimal integer from 1 to {LIST_MAX}, the most a page holds."""

    status = 400
    code = "invalid_limit"
    family = "invalid_input"
    default_message = f"Limit must be an integer from 1 to {LIST_MAX}."


class InvalidCursor(SessionsError):
    """`after` is not a cursor this service handed out (on `/events`: not a whole number from 0 to
    {MAX_USER_ID})."""

    status = 400
    code = "invalid_cursor"
    family = "invalid_input"
    default_message = "The cursor is not one this service gave: follow the Link header's next URL."


class InvalidWait(SessionsError):
    """`wait` is not a plain decimal integer from 0 to {EVENTS_WAIT_MAX} (seconds), or repeated."""

    status = 400
    code = "invalid_wait"
    family = "invalid_input"
    default_message = f"wait must be a whole number of seconds from 0 to {EVENTS_WAIT_MAX}."


class TokenNotFound(SessionsError):
    """The token is missing, malformed, unknown or expired (deliberately one answer)."""

    status = 404
    code = "token_not_found"
    family = "not_found"
    default_message = "No live session has this token."


class NotFound(SessionsError):
    """No such path, or `/events` with the event feed off (`SESSIONS_EVENTS`)."""

    status = 404
    code = "not_found"
    family = "invalid_input"
    default_message = "No such method."


class MethodNotAllowed(SessionsError):
    """A method the path does not answer (the API: GET and POST; HEAD would open sessions); the `Allow`
    header says which.
    """

    status = 405
    code = "method_not_allowed"
    family = "invalid_input"
    default_message = "Use GET or POST."

    def __init__(self, message: str | None = None, *, allow: tuple[str, ...] = ("GET", "POST")) -> None:
        super().__init__(message or f"Use {' or '.join(allow)}.")
        self.allow = allow

    def response_headers(self) -> dict[str, str]:
        return {"Allow": ", ".join(self.allow)}


class ExpectationFailed(SessionsError):
    """An `Expect` header other than `100-continue`."""

    status = 417
    code = "expectation_failed"
    family = "invalid_input"
    default_message = "The only Expect this service knows is 100-continue."


class PayloadTooLarge(SessionsError):
    """Extra data, or the merge it asks for, over `SESSIONS_EXTRA_MAX_BYTES`."""

    status = 413
    code = "payload_too_large"
    family = "invalid_input"
    default_message = "Extra data is too large."


# Every 503 tells the client when to try again: these are passing states of the storage.
_RETRY_SOON: dict[str, str] = {"Retry-After": "1"}


class StorageUnavailable(SessionsError):
    """Tarantool did not answer within `SESSIONS_TARANTOOL_TIMEOUT`; retry (a write may have been applied
    if Tarantool was slow rather than gone). Also every call while the store keeps tokens another way than
    `SESSIONS_TOKEN_STORAGE` says (converted under a running service): the message names the setting to
    restart the service with.
    """

    status = 503
    code = "storage_unavailable"
    retry = "if_safe"
    default_message = "Session storage is unavailable, try again."
    headers = _RETRY_SOON


class StorageFull(SessionsError):
    """Tarantool's memory is full: no new sessions or extra data; `get`, `del` and the lists keep working."""

    status = 503
    code = "storage_full"
    retry = "if_safe"
    default_message = "Session storage is out of memory; no new sessions or extra data can be stored."
    headers = _RETRY_SOON


class StorageWriteFailed(SessionsError):
    """Tarantool could not write its log (disk full or failing, or no synchronous replica confirmed in
    time); nothing changed, retry.
    """

    status = 503
    code = "storage_write_failed"
    retry = "if_safe"
    default_message = "Session storage could not write to disk; nothing was changed, try again."
    headers = _RETRY_SOON


class Overloaded(SessionsError):
    """Shed before any of its work was done: its class of work had no free turn and its queue was full, its
    wait passed `SESSIONS_QUEUE_TIMEOUT`, or the process' memory budget for answers or request bodies
    was spent; retry after `Retry-After`.
    """

    status = 503
    code = "overloaded"
    retry = "always"
    default_message = "The service is too busy to start this request; nothing was done. Retry later."
    headers = _RETRY_SOON


class IdempotencyConflict(SessionsError):
    """`new`'s `Idempotency-Key` was used for the same user within `SESSIONS_IDEMPOTENCY_WINDOW` with
    other parameters, or the session it opened has ended since; use a new key.
    """

    status = 409
    code = "idempotency_conflict"
    family = "invalid_input"
    default_message = "This Idempotency-Key was used with other parameters; use a new key."


class InternalError(SessionsError):
    """A bug: the details go to the log, never to the client."""


# Every error the API can answer, by its envelope code: for clients and the API description.
BY_CODE: dict[str, type[SessionsError]] = {
    error.code: error
    for error in (
        BadRequest,
        Unauthorized,
        RequestTimeout,
        InvalidUserId,
        InvalidWait,
        InvalidIp,
        InvalidExtra,
        InvalidLimit,
        InvalidCursor,
        InvalidTtl,
        TokenNotFound,
        NotFound,
        MethodNotAllowed,
        ExpectationFailed,
        PayloadTooLarge,
        StorageUnavailable,
        StorageFull,
        StorageWriteFailed,
        Overloaded,
        IdempotencyConflict,
        InternalError,
    )
}
