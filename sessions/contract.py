"""The wire contract between the service and its Lua procedures, as this side declares it.

The Lua side declares the same in tarantool/sessions/procedures.lua (OPERATIONS, CONTEXT,
ERRORS) and says it through the `describe` procedure. Storage compares the two when it
connects to an instance and refuses an instance that differs, naming each difference, so a
service and a Tarantool of different releases never talk past each other.

Every operation takes named arguments (a map) and a context map (CONTEXT), and replies with
a map of named fields. Batchable operations are coalesced into one `batch` call (one
transaction, one WAL write), whose items each reply alone, an error item as
{error = {type, code, message}}; the others go through `call`, bulk ones over a connection
of their own.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .errors import (
    IdempotencyConflict,
    Overloaded,
    PayloadTooLarge,
    SessionsError,
    StorageWriteFailed,
    TokenNotFound,
)

__all__ = [
    "CONTEXT",
    "DELETE",
    "DELETE_ALL",
    "ERRORS",
    "FIELDS",
    "GET",
    "LIST",
    "NEW",
    "OPERATIONS",
    "PROCEDURES",
    "ROTATE",
    "RULES",
    "Operation",
    "differences",
]


@dataclass(frozen=True, slots=True)
class Operation:
    """One operation of the procedures: its name, its arguments and its reply's fields."""

    name: str
    args: tuple[str, ...]
    reply: tuple[str, ...]
    batch: bool = False  # coalesced with concurrent calls into one `batch`
    bulk: bool = False  # walks many sessions: the bulk connection, one of Tarantool's bulk slots


NEW = Operation("new", ("token", "user_id", "ip", "patch", "ttl", "idem"), ("session",), batch=True)
GET = Operation("get", ("token", "ip", "patch"), ("session", "untouched"), batch=True)
DELETE = Operation("delete", ("token",), ("session",), batch=True)
ROTATE = Operation("rotate", ("token", "new_token"), ("session",), batch=True)
LIST = Operation(
    "list", ("kind", "key", "limit", "page_bytes", "after"), ("sessions", "more", "last"), bulk=True
)
DELETE_ALL = Operation(
    "delete_all", ("kind", "key", "except_token", "checked"), ("deleted", "more"), bulk=True
)
# The operations the storage calls itself; a route may declare more (routing.Route.operation).
OPERATIONS = (NEW, GET, DELETE, ROTATE, LIST, DELETE_ALL)

# The procedures the service's Tarantool user may execute (access.lua grants exactly these).
PROCEDURES = ("batch", "call", "describe", "info", "peer")
# What every call carries beside its own arguments.
CONTEXT = ("rules", "deadline", "extra_max", "untouched")
# The liveness rules (tarantool/sessions/liveness.lua): idle TTL, lifetime, cap per user.
RULES = ("ttl", "lifetime", "cap")
# A session row's first fields, in order: what the procedures answer for a session (the
# six of SessionObject, then the stored deadline, own TTL and place in listings).
FIELDS = ("token", "user_id", "ip", "create", "activity", "extra", "expires", "ttl", "seq")
# The error types the procedures raise on purpose, and what each is to a caller; None: the
# service sent something it should not have (a bug, answered as internal_error).
ERRORS: Mapping[str, type[SessionsError] | None] = {
    "InvalidArgument": None,
    "PayloadTooLarge": PayloadTooLarge,
    "TokenNotFound": TokenNotFound,
    "Overloaded": Overloaded,
    "IdempotencyConflict": IdempotencyConflict,
    # Synchronous replication with too few replicas following: refused before any write.
    "ReplicasUnavailable": StorageWriteFailed,
}


def _differ(what: str, ours: Iterable[str], theirs: Any, *, ordered: bool = False) -> list[str]:
    theirs = list(theirs or ())
    ours = list(ours)
    if ordered and ours != theirs:
        return [f"{what}: this service has {ours}, the Lua {theirs}"]
    if not ordered and set(ours) != set(theirs):
        return [f"{what}: this service has {sorted(ours)}, the Lua {sorted(theirs)}"]
    return []


def differences(described: Mapping[str, Any], operations: Iterable[Operation]) -> list[str]:
    """How the Lua's contract (what `describe` answered) differs from this side's, with
    `operations` the ones this service calls; empty when they agree."""
    found = _differ("procedures", PROCEDURES, described.get("procedures"))
    found += _differ("call context", CONTEXT, described.get("context"))
    found += _differ("liveness rules", RULES, described.get("rules"))
    found += _differ("error types", ERRORS, described.get("errors"))
    fields = list(described.get("fields") or ())
    found += _differ("session fields", FIELDS, fields[: len(FIELDS)], ordered=True)
    theirs = described.get("operations")
    if not isinstance(theirs, Mapping):
        theirs = {}
    for operation in operations:
        spec = theirs.get(operation.name)
        if not isinstance(spec, Mapping):
            found.append(f"operation {operation.name}: the Lua has no such operation")
            continue
        where = f"operation {operation.name}"
        found += _differ(f"{where} arguments", operation.args, spec.get("args"))
        found += _differ(f"{where} reply", operation.reply, spec.get("reply"))
        for flag in ("batch", "bulk"):
            if bool(spec.get(flag)) != getattr(operation, flag):
                found.append(
                    f"{where}: {flag} is {getattr(operation, flag)} here, {bool(spec.get(flag))} in the Lua"
                )
    return found
