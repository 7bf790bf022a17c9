"""The wire contract between the service and its Lua procedures, as this side declares it.

The Lua side declares the same in tarantool/sessions/ (each operation in operations/, the
call context in dispatch.lua, the error types and the error item in errors.lua, the kinds of
key in kinds.lua, info's fields in monitor.lua) and says it through the `describe`
procedure. Storage compares the two when it connects to an instance and refuses an instance
that differs, naming each difference, so a service and a Tarantool of different releases
never talk past each other. Everything this service sends or reads by name is named here.

Every operation takes named arguments (a map) and a context map (Context), and replies with
a map of named fields. Batchable operations are coalesced into one `batch` call (one
transaction, one WAL write), whose items each reply alone, a failed one as
{error = {type, code, message}} (ERROR_ITEM); the others go through `call`, bulk ones over a
connection of their own.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from typing import Any

from .errors import (
    IdempotencyConflict,
    Overloaded,
    PayloadTooLarge,
    SessionsError,
    StorageUnavailable,
    StorageWriteFailed,
    TokenNotFound,
)

__all__ = [
    "BATCH",
    "BUCKETS",
    "CALL",
    "CONTEXT",
    "COUNT",
    "DELETE",
    "DELETE_ALL",
    "DELETE_ID",
    "DESCRIBE",
    "ERRORS",
    "ERROR_ITEM",
    "EVENTS",
    "EVENTS_WAIT",
    "EVENT_FIELDS",
    "FIELDS",
    "GET",
    "IDEM",
    "INFO",
    "INFO_FIELDS",
    "KINDS",
    "KIND_IP",
    "KIND_USER",
    "LIST",
    "NEW",
    "OPERATIONS",
    "PEEK",
    "PEER",
    "PROCEDURES",
    "ROTATE",
    "RULES",
    "TOKEN_STORAGE",
    "WEBHOOK_LEASE",
    "Buckets",
    "Context",
    "Info",
    "Operation",
    "Rules",
    "differences",
    "error_item",
    "failure_of",
    "idem",
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
# `bucket`, sent in the sharded mode, is the session's (the token's, read before a hashed
# store's key replaces it): a router sends the call by it; an instance ignores it.
GET = Operation("get", ("token", "ip", "patch", "bucket"), ("session", "untouched"), batch=True)
DELETE = Operation("delete", ("token", "bucket"), ("session",), batch=True)
ROTATE = Operation("rotate", ("token", "new_token", "bucket"), ("session",), batch=True)
LIST = Operation(
    "list", ("kind", "key", "limit", "page_bytes", "after"), ("sessions", "more", "last"), bulk=True
)
DELETE_ALL = Operation(
    "delete_all", ("kind", "key", "except_token", "except_id", "checked"), ("deleted", "more"), bulk=True
)
COUNT = Operation("count", ("kind", "key"), ("count",), bulk=True)
# The event feed: a page, and a wait for the next event (one per process: feed.py).
# `stable` (sharded mode): the seq up to which a storage has written every event it will.
EVENTS = Operation("events", ("after", "limit"), ("events", "missed", "head", "stable"), bulk=True)
EVENTS_WAIT = Operation("events_wait", ("after",), ("head",))
# The webhook delivery worker's lease and progress (webhooks.py).
# `start` (a router's): where delivery starts when the lease is first taken.
WEBHOOK_LEASE = Operation("webhook_lease", ("holder", "ttl", "delivered", "start"), ("held", "delivered"))
# A session by its id, as stored (its activity not recorded); and ended by its id.
PEEK = Operation("peek", ("id",), ("session",), batch=True)
DELETE_ID = Operation("delete_id", ("id",), ("session",), batch=True)
# What kind of key the store keeps (`hash`, `plain`, `empty`, `converting`), an empty one
# marked as hashed first when `mode` is `hash` (tarantool/sessions/hashing.lua).
TOKEN_STORAGE = Operation("token_storage", ("mode",), ("stored",))
# Every operation this service calls, through the storage or a route (routing.Route.forward).
OPERATIONS = (
    NEW,
    GET,
    DELETE,
    ROTATE,
    LIST,
    DELETE_ALL,
    COUNT,
    PEEK,
    DELETE_ID,
    EVENTS,
    EVENTS_WAIT,
    WEBHOOK_LEASE,
    TOKEN_STORAGE,
)

# The procedures the service's Tarantool user may execute (access.lua grants exactly these),
# by the names it calls them; describe() lists them without the namespace.
_NAMESPACE = "sessions."
BATCH = _NAMESPACE + "batch"
CALL = _NAMESPACE + "call"
DESCRIBE = _NAMESPACE + "describe"
INFO = _NAMESPACE + "info"
PEER = _NAMESPACE + "peer"
PROCEDURES = (BATCH, CALL, DESCRIBE, INFO, PEER)

# The kinds of key sessions are listed, counted and ended by (`kind` of list, delete_all).
KIND_USER = "user"
KIND_IP = "ip"
KINDS = (KIND_USER, KIND_IP)


@dataclass(frozen=True, slots=True)
class Rules:
    """The liveness rules (tarantool/sessions/liveness.lua), sent with every call: the idle
    TTL in seconds, the most seconds a session lives (0: no limit), the most live sessions
    of one user (0: no limit)."""

    ttl: int
    lifetime: int
    cap: int

    def wire(self) -> dict[str, int]:
        """As the Lua reads them."""
        return {name: getattr(self, name) for name in RULES}


RULES = tuple(field.name for field in fields(Rules))


@dataclass(frozen=True, slots=True)
class Context:
    """What every call carries beside its own arguments: the rules, the moment after which
    its work is not started (on the instance's clock), the extra data limit, whether the
    call may write nothing (`get`s served as stored), the event feed's retention when it is
    on (None: off), and how the service keeps tokens (`plain`, `hash`), which the Lua checks
    against the store's mark on every call."""

    rules: Mapping[str, int]  # Rules.wire()
    deadline: float
    extra_max: int
    untouched: bool | None = None
    events: Mapping[str, int] | None = None  # {"keep": seconds, "most": events}
    token_storage: str = "plain"  # SESSIONS_TOKEN_STORAGE

    def wire(self) -> dict[str, Any]:
        """As the Lua reads it, a None left out."""
        return {name: value for name in CONTEXT if (value := getattr(self, name)) is not None}


CONTEXT = tuple(field.name for field in fields(Context))

# A session row's first fields, in order: what the procedures answer for a session (the
# six of SessionObject, then the stored deadline, own TTL, place in listings and id).
FIELDS = ("token", "user_id", "ip", "create", "activity", "extra", "expires", "ttl", "seq", "id")

# An event's fields, in order (events.lua, fields.lua's EVENTS_FORMAT): what `events` answers.
EVENT_FIELDS = ("seq", "time", "kind", "reason", "session", "user_id", "ip")

# The fields of `new`'s `idem` argument.
IDEM = ("key", "fingerprint", "window")


def idem(key: str, fingerprint: str, window: int) -> dict[str, Any]:
    """`new`'s `idem` argument: an idempotency key, the digest of the parameters it came
    with, and how many seconds it is remembered."""
    return dict(zip(IDEM, (key, fingerprint, window), strict=True))


@dataclass(frozen=True, slots=True)
class Buckets:
    """The sharded mode's buckets and where a token carries its session's (sessions/buckets.py,
    tarantool/sessions/buckets.lua): vshard's bucket count, and the bits of the token's 128
    (counted in the UUID's integer, least significant 0) that hold the bucket id minus one.

    4096 buckets: vshard moves whole buckets, so their count is the finest grain of balance
    and the most replica sets a cluster can ever have, and it can never change once tokens
    name buckets. With 4096, one bucket is 0.05 % of a replica set's share with 2 sets and
    1 % with 40, more sets than this service is likely to need; it is close to vshard's
    default of 3000, and a power of two: every value of 12 bits names a bucket, so no token
    needs refusing for an impossible one. 12 bits leave 110 of the UUID v4's 122 random bits
    (tests/test_buckets.py counts them).

    Bits 64 to 75 are the three hex digits after the version nibble, the third group of the
    text being `4` and the bucket id minus one (`xxxxxxxx-xxxx-4BBB-yxxx-xxxxxxxxxxxx`), so an
    operator reads a token's bucket off it; the version and variant bits are untouched."""

    count: int = 4096
    shift: int = 64
    bits: int = 12

    def wire(self) -> dict[str, int]:
        """As the Lua describes them."""
        return {"count": self.count, "shift": self.shift, "bits": self.bits}


BUCKETS = Buckets()


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
    # The store keeps tokens another way than this service (converted while it ran): every
    # call refused until it is restarted with the setting the message names.
    "TokenStorageMismatch": StorageUnavailable,
}
# A failed item of a batch's reply is {error = {...}} with these fields, in this order: the
# error's type (a custom one's name), its code and its message.
ERROR_ITEM = ("type", "code", "message")


def error_item(kind: str | None, code: int, message: str) -> dict[str, Any]:
    """A failed item, as the Lua answers one."""
    return {"error": dict(zip(ERROR_ITEM, (kind, code, message), strict=True))}


def failure_of(reply: Mapping[str, Any]) -> tuple[str | None, int, str] | None:
    """The type, code and message of a failed item; None for an item that did not fail."""
    failed = reply.get("error")
    if not isinstance(failed, Mapping):
        return None
    kind, code, message = (failed.get(name) for name in ERROR_ITEM)
    return (None if kind is None else str(kind)), int(code or 0), str(message or "")


@dataclass(frozen=True, slots=True)
class Info:
    """What `sessions.info` answers: an instance's figures, read without a full scan."""

    now: float  # its real clock, against which deadlines are set
    bulk_active: int  # bulk calls in one of its slots
    bulk_waiting: int  # and waiting for one
    ro: bool
    role: str | None  # primary, replica or fenced; None under elections
    vclock: Mapping[Any, int]  # instance id -> lsn
    schema_version: int
    schema_latest: int
    sessions: int  # stored, lapsed ones not purged yet included
    next_expiry: int | None  # the earliest stored expiry
    purged: int  # since start
    memory_used: int  # bytes
    tarantool_version: str
    last_checkpoint: float | None
    storage_full: bool  # memory ran out at the last write
    touch_skipped: int  # gets served without recording their activity, since start
    replication_stopped: int  # upstreams stopped on an error
    writes_confirmable: bool  # false: synchronous replication with too few replicas following
    election: Mapping[str, Any] | None  # with elections: its state, the term, the leader's id
    term: int  # the promotion its writes belong to
    sets_lost: int  # a router's replica sets without a writable master (0 on an instance)

    @classmethod
    def of(cls, answer: Mapping[str, Any]) -> Info:
        """The figures an answer of `sessions.info` holds (ValueError when it lacks any)."""
        missing = [name for name in INFO_FIELDS if name not in answer]
        if missing:
            raise ValueError(f"sessions.info answered without {missing}: a Lua of another release")
        return cls(**{name: answer[name] for name in INFO_FIELDS})


INFO_FIELDS = tuple(field.name for field in fields(Info))


def _differ(what: str, ours: Iterable[str], theirs: Any, *, ordered: bool = False) -> list[str]:
    theirs = list(theirs or ())
    ours = list(ours)
    if ordered and ours != theirs:
        return [f"{what}: this service has {ours}, the Lua {theirs}"]
    if not ordered and set(ours) != set(theirs):
        return [f"{what}: this service has {sorted(ours)}, the Lua {sorted(theirs)}"]
    return []


def differences(described: Mapping[str, Any], operations: Iterable[Operation] = OPERATIONS) -> list[str]:
    """How the Lua's contract (what `describe` answered) differs from this side's, with
    `operations` the ones this service calls; empty when they agree."""
    procedures = [name.removeprefix(_NAMESPACE) for name in PROCEDURES]
    found = _differ("procedures", procedures, described.get("procedures"))
    found += _differ("call context", CONTEXT, described.get("context"))
    found += _differ("liveness rules", RULES, described.get("rules"))
    found += _differ("error types", ERRORS, described.get("errors"))
    found += _differ("error item", ERROR_ITEM, described.get("error_item"), ordered=True)
    found += _differ("kinds of key", KINDS, described.get("kinds"))
    found += _differ("info fields", INFO_FIELDS, described.get("info"))
    found += _differ("idem fields", IDEM, described.get("idem"))
    found += _differ("event fields", EVENT_FIELDS, described.get("events"), ordered=True)
    theirs_buckets = described.get("buckets")
    if theirs_buckets != BUCKETS.wire():
        found.append(f"token buckets: this service has {BUCKETS.wire()}, the Lua {theirs_buckets}")
    fields_ = list(described.get("fields") or ())
    found += _differ("session fields", FIELDS, fields_[: len(FIELDS)], ordered=True)
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
