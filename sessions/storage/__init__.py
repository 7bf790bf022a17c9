"""The Tarantool adapter: connections that follow the writable instance, and one call path
for every operation of the wire contract (contract.py), coalesced or bulk as each declares.

This package is the only part of the service that knows asynctnt; it never imports aiohttp.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import time
from typing import Any

import asynctnt
import orjson
from asynctnt.exceptions import ErrorCode, TarantoolDatabaseError, TarantoolError

from ..buckets import bucket_of_token, bucket_of_user, with_bucket
from ..config import Settings, TarantoolAddress
from ..contract import (
    BATCH,
    CALL,
    DELETE,
    DELETE_ALL,
    DELETE_ID,
    DESCRIBE,
    FIELDS,
    GET,
    INFO,
    LIST,
    NEW,
    OPERATIONS,
    PEEK,
    ROTATE,
    TOKEN_STORAGE,
    Context,
    Info,
    Operation,
    Rules,
    differences,
    error_item,
    failure_of,
    idem,
)
from ..errors import IdempotencyConflict, StorageUnavailable
from ..logs import RateLimitedLog
from ..models import Cursor, Session
from .coalesce import Coalescer, Reply
from .faults import DuplicateToken, StorageError, error_type, mapped

__all__ = ["ContractMismatch", "Storage", "StorageError", "StoreMismatch", "new_token", "token_key"]

log = logging.getLogger(__name__)

# Where each field of a session is in the rows the procedures answer (contract.FIELDS).
_TOKEN, _USER_ID, _IP, _CREATE, _ACTIVITY, _EXTRA, _SEQ, _ID = (
    FIELDS.index(name) for name in ("token", "user_id", "ip", "create", "activity", "extra", "seq", "id")
)

# A full store touches every `get`: one line every ten seconds is enough to say so.
_touch_log = RateLimitedLog(log, interval=10.0)
# A refused switch is looked at again every half second.
_behind_log = RateLimitedLog(log, interval=10.0)
# Without a writable instance: the first look says so at once, later ones every ten seconds.
_LOST_INTERVAL = 10.0
# Looks (each waits the storage timeout) an open connection may answer nothing before it is
# made again: three seconds at the default timeout, short of a failover's few seconds.
_SILENT_LOOKS = 3


class _ReconnectLog(logging.Filter):
    """asynctnt warns at each failed attempt to reconnect (5 a second per connection, two
    connections per instance): the first of each instance's goes through, then one a minute
    saying how many were left out."""

    INTERVAL = 60.0

    def __init__(self) -> None:
        super().__init__()
        self._last: dict[str, float] = {}
        self._skipped: dict[str, int] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if not (
            isinstance(record.msg, str) and record.msg.startswith("Connect to %s failed") and record.args
        ):
            return True
        where = str(record.args[0] if isinstance(record.args, tuple) else record.args)
        now = time.monotonic()
        last = self._last.get(where)
        if last is not None and now - last < self.INTERVAL:
            self._skipped[where] = self._skipped.get(where, 0) + 1
            return False
        self._last[where] = now
        skipped = self._skipped.pop(where, 0)
        if skipped:
            record.msg += f" ({skipped} more attempts failed since the last such line)"
        return True


logging.getLogger("asynctnt").addFilter(_ReconnectLog())


class ContractMismatch(RuntimeError):
    """The Lua of an instance speaks another contract than this service (another release)."""


class StoreMismatch(ContractMismatch):
    """The store keeps tokens another way than SESSIONS_TOKEN_STORAGE says (plain or hashed)."""


# The command that converts a store of plain tokens to hashed ones (cli.py, admin.py).
CONVERT_COMMAND = "sessions convert-tokens"


def _text(raw: bytes) -> str:
    """16 bytes in the 8-4-4-4-12 form."""
    hexed = raw.hex()
    return f"{hexed[:8]}-{hexed[8:12]}-{hexed[12:16]}-{hexed[16:20]}-{hexed[20:]}"


def _hashed(raw: bytes) -> bytes:
    # The first 16 bytes of SHA-256, with the RFC variant bits set so that Tarantool takes them
    # as a uuid, the key field's type: as tarantool/sessions/hashing.lua's key_of.
    hashed = bytearray(hashlib.sha256(raw).digest()[:16])
    hashed[8] = (hashed[8] & 0x3F) | 0x80
    return bytes(hashed)


def token_key(token: str) -> str:
    """The key a hashed store keeps the session of `token` (checked 8-4-4-4-12 text) under."""
    return _text(_hashed(bytes.fromhex(token.replace("-", ""))))


def _session(row: list[Any]) -> Session:
    # The procedures answer the token and the id already as text; the keys in
    # SessionObject's order, the id last (an answer shows it only when asked: envelope.py).
    return {
        "ip": row[_IP],
        "extra": row[_EXTRA],
        "user_id": row[_USER_ID],
        "create": row[_CREATE],
        "activity": row[_ACTIVITY],
        "token": row[_TOKEN],
        "id": row[_ID],
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


def new_token(bucket: int | None = None) -> bytes:
    """A version 4 UUID as 16 bytes: 122 bits from the OS CSPRNG (os.urandom); with a
    `bucket` (the sharded mode), 12 of them say that bucket instead (buckets.py), 110 left."""
    raw = bytearray(os.urandom(16))
    raw[6] = (raw[6] & 0x0F) | 0x40  # version 4
    raw[8] = (raw[8] & 0x3F) | 0x80  # RFC 4122 variant
    return bytes(raw) if bucket is None else with_bucket(bytes(raw), bucket)


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
        settings: Settings,
        *,
        password: str,
    ) -> None:
        # What every call carries (contract.Context); 0 is "no limit".
        self._rules = Rules(
            ttl=settings.idle_ttl, lifetime=settings.max_lifetime or 0, cap=settings.max_per_user or 0
        ).wire()
        self._extra_max = settings.extra_max_bytes
        self._timeout = timeout = settings.tarantool_timeout
        self._page_bytes = settings.page_max_bytes
        self._window = settings.idempotency_window
        # The event feed's retention, sent with every call while the feed is on.
        self._events = (
            {"keep": settings.events_retention, "most": settings.events_max} if settings.events else None
        )
        self._agreed: set[int] = set()
        # SESSIONS_TOKEN_STORAGE=hash: Tarantool gets each token's key (token_key), never the
        # token, and answers carry the token the caller sent or this service made.
        self._mode = settings.token_storage
        # SESSIONS_TARANTOOL_MODE=sharded: the addresses are routers, which send each session
        # to the replica set of the bucket its token carries (buckets.py).
        self._sharded = settings.tarantool_mode == "sharded"
        self._hashed = settings.token_storage == "hash"
        # Tarantool's clock minus this process' (time.time()), measured on every look at an
        # instance, so that deadlines mean the same moment on both sides.
        self._offset = 0.0

        def connection(host: str, port: int | str) -> asynctnt.Connection:
            return asynctnt.Connection(
                host=host,
                port=port,
                username=settings.tarantool_user,
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
        # The promotion term of the instance in use, whether a writable instance was found at
        # the last look, and an event set (and replaced) after each look.
        self._term = 0
        self._writable = True
        # Since when no instance has been writable (monotonic), None while one is.
        self._lost_since: float | None = None
        self._lost_said = 0.0
        self._looked = asyncio.Event()
        self._watcher: asyncio.Task[None] | None = None
        self._connecting: list[asyncio.Future[Any]] = []
        # Looks in a row at which an instance's open connection answered nothing, by index.
        self._silent: dict[int, int] = {}
        self._coalescers = {op.name: Coalescer(op.name, self._batch) for op in OPERATIONS if op.batch}

    async def connect(self) -> None:
        """Connect to every instance; with several, wait until one of them is writable."""
        if len(self._conns) == 1:
            await self._conn.connect()
            await self._bulk.connect()
            try:
                await self._agree(self._conn)
                self._offset = (await self._measure(self._conn))[1]
            except TarantoolDatabaseError as error:
                # One line for the operator (the command's exit), not a traceback.
                raise RuntimeError(f"the Tarantool at {self._conn.fingerprint}: {error.message}") from None
            return
        # Each keeps retrying in the background until its instance is there.
        self._connecting = [
            asyncio.ensure_future(conn.connect()) for conn in [*self._conns, *self._bulk_conns]
        ]
        # Polling: which instance is writable is Tarantool's state, with nothing to wait on.
        while not await self._elect(strict=True):  # noqa: ASYNC110
            await asyncio.sleep(0.1)
        self._watcher = asyncio.create_task(self._watch())

    async def close(self) -> None:
        for task in [*self._connecting, *([self._watcher] if self._watcher else [])]:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for conn in [*self._conns, *self._bulk_conns]:
            await conn.disconnect()

    async def _agree(self, conn: asynctnt.Connection) -> None:
        """Check once per instance that its Lua speaks this service's contract."""
        if id(conn) in self._agreed:
            return
        try:
            described = (await conn.call(DESCRIBE, [], timeout=self._timeout))[0]
        except TarantoolDatabaseError as error:
            # Not defined, or not granted: the Lua predates the contract (or is not ours).
            raise ContractMismatch(
                f"the Tarantool at {conn.fingerprint} has no {DESCRIBE} ({error.message}): it runs "
                "procedures of an older release; upgrade its Lua (tarantool/) to this release's"
            ) from None
        found = differences(described if isinstance(described, dict) else {})
        if found:
            raise ContractMismatch(
                f"the Tarantool at {conn.fingerprint} runs procedures of another release: " + "; ".join(found)
            )
        offset = (await self._measure(conn))[1]
        context = Context(
            self._rules, time.time() + offset + self._timeout, self._extra_max, token_storage=self._mode
        ).wire()
        answer = await conn.call(
            CALL, [TOKEN_STORAGE.name, {"mode": self._mode}, context], timeout=self._timeout
        )
        refusal = _store_refusal(self._mode, str(answer[0]["stored"]), conn.fingerprint)
        if refusal is not None:
            raise StoreMismatch(refusal)
        self._agreed.add(id(conn))

    async def _elect(self, *, strict: bool = False) -> bool:
        """Point calls at a writable instance; whether found. Of several writable ones, the
        one of the latest promotion (its `term`: an election's, or a promote's) wins, then
        the one in use. A switch to an instance that lacks rows the one in use had is made
        only when that instance was promoted later (the rows are the price of the failover:
        logged, by how many and from which vclock); otherwise it is an old primary with
        stale data, and refused. An instance whose Lua speaks another contract is never
        used: `strict` (at start) raises ContractMismatch, later it is logged and passed over."""
        candidates = [self._conn, *(c for c in self._conns if c is not self._conn)]
        writable: list[tuple[asynctnt.Connection, dict[int, int], int, float]] = []
        current_term = self._term
        for conn in candidates:
            if not conn.is_fully_connected:
                continue
            try:
                await self._agree(conn)
                info, offset = await self._measure(conn)
            except ContractMismatch as error:
                if strict:
                    raise
                _behind_log.error(str(conn.fingerprint), "%s", error)
                continue
            except TimeoutError:
                await self._silence(conn)
                continue
            except (TarantoolError, OSError):
                continue
            self._silent.pop(self._conns.index(conn), None)
            vclock = {int(id_): int(lsn) for id_, lsn in info.vclock.items()}
            term = info.term
            if conn is self._conn:
                _note(self._seen, vclock)
                if not info.ro:
                    # The promotion it writes under; once read-only (a leader that stepped
                    # down, a primary fenced) its later terms are others' promotions.
                    current_term = max(current_term, term)
            if not info.ro:
                writable.append((conn, vclock, term, offset))
        # The latest promotion first; the one in use first among equals (a stable sort).
        writable.sort(key=lambda found: -found[2])
        for conn, vclock, term, offset in writable:
            if conn is not self._conn:
                missing = _lacking(vclock, self._seen)
                if missing and term <= current_term:
                    _behind_log.error(
                        str(conn.fingerprint),
                        "not switching to the writable Tarantool at %s: it lacks %d rows the one in use "
                        "had and was not promoted after it (an old primary, or replication lag). Bring "
                        "the other back, or promote this one",
                        conn.fingerprint,
                        missing,
                    )
                    continue
                if missing:
                    log.error(
                        "switching to the writable Tarantool at %s, promoted after the one in use (term "
                        "%d): it lacks %d rows the one in use had (its vclock %s, the one in use had %s); "
                        "sessions written only there are lost",
                        conn.fingerprint,
                        term,
                        missing,
                        vclock,
                        dict(self._seen),
                    )
                else:
                    log.warning("switching to the writable Tarantool at %s (term %d)", conn.fingerprint, term)
                self._seen = dict(vclock)
            self._conn = conn
            self._offset = offset
            self._term = max(current_term, term)
            self._bulk = self._bulk_conns[self._conns.index(conn)]
            if self._lost_since is not None:
                log.warning(
                    "writable Tarantool at %s after %.1f s without one", conn.fingerprint, self._since_lost()
                )
                self._lost_since = None
            self._writable = True
            self._looked.set()
            self._looked = asyncio.Event()
            return True
        answering = sum(conn.is_fully_connected for conn in self._conns)
        if self._lost_since is None:
            self._lost_since = self._lost_said = time.monotonic()
            log.error(
                "no writable Tarantool among the %d listed (%d answer): writes answer 503 until one is "
                "back or promoted",
                len(self._conns),
                answering,
            )
        elif time.monotonic() - self._lost_said >= _LOST_INTERVAL:
            self._lost_said = time.monotonic()
            log.error(
                "still no writable Tarantool, for %.0f s (%d of %d answer)",
                self._since_lost(),
                answering,
                len(self._conns),
            )
        self._writable = False
        self._looked.set()
        self._looked = asyncio.Event()
        return False

    async def _silence(self, conn: asynctnt.Connection) -> None:
        """An instance that answered no look over its open connection. A connection whose
        peer left the network without a word (a container disconnected, a cable pulled)
        stays open for asynctnt, its pings failing in silence, and would never reconnect
        to the peer once it is back (at a new address, in Docker): after _SILENT_LOOKS
        such looks in a row, both of the instance's connections are dropped and made again."""
        index = self._conns.index(conn)
        self._silent[index] = self._silent.get(index, 0) + 1
        if self._silent[index] < _SILENT_LOOKS:
            return
        del self._silent[index]
        log.warning(
            "the Tarantool at %s answered nothing for %d looks over an open connection: reconnecting",
            conn.fingerprint,
            _SILENT_LOOKS,
        )
        self._connecting = [task for task in self._connecting if not task.done()]
        for dropped in (conn, self._bulk_conns[index]):
            # Closing waits for what is buffered to leave, which it may never do.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(dropped.disconnect(), self._timeout)
            self._connecting.append(asyncio.ensure_future(dropped.connect()))

    def _since_lost(self) -> float:
        return time.monotonic() - (self._lost_since or time.monotonic())

    async def _measure(self, conn: asynctnt.Connection) -> tuple[Info, float]:
        """An instance's `info`, and its clock's offset from this process' clock."""
        sent = time.time()
        info = Info.of((await conn.call(INFO, [], timeout=self._timeout))[0])
        received = time.time()
        return info, info.now - (sent + received) / 2

    def _deadline(self) -> float:
        """When a call made now stops being waited for, on the instance's clock."""
        return time.time() + self._offset + self._timeout

    async def _watch(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._recheck.wait(), 0.5)
            self._recheck.clear()
            await self._elect()

    def _context(self, *, untouched: bool | None = None) -> dict[str, Any]:
        return Context(
            self._rules, self._deadline(), self._extra_max, untouched, self._events, self._mode
        ).wire()

    async def call(self, operation: Operation, args: dict[str, Any]) -> Reply:
        """One call of an operation, by its declaration: coalesced with the calls of the same
        operation made at once when it is batchable, over the bulk connection when it is
        bulk work. Its reply, or its error raised as the service's."""
        if operation.batch:
            return await self._coalescers[operation.name].call(args)
        reply: Reply = await self._call(CALL, [operation.name, args, self._context()], bulk=operation.bulk)
        return reply

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
        args: dict[str, Any] = {"user_id": user_id, "ip": ip}
        if patch is not None:
            args["patch"] = patch
        if ttl is not None:
            args["ttl"] = ttl
        if idempotency_key is not None:
            args["idem"] = idem(idempotency_key, _fingerprint(user_id, ip, ttl, patch), self._window)
        while True:
            token = new_token(bucket_of_user(user_id) if self._sharded else None)
            key = _hashed(token) if self._hashed else token
            try:
                reply = await self.call(NEW, {**args, "token": key})
            except DuplicateToken:
                # 122 random bits make a clash next to impossible; draw again if it happens.
                continue
            session = _session(reply["session"])
            if self._hashed:
                if session["token"] != _text(key):
                    # The session an earlier call with this key opened: its token is nowhere.
                    raise IdempotencyConflict(
                        "This Idempotency-Key opened a session already, and this store keeps only hashes "
                        "of tokens (SESSIONS_TOKEN_STORAGE=hash), so its token cannot be answered again; "
                        "use a new key."
                    )
                session["token"] = _text(token)
            return session

    def _key(self, token: str) -> str:
        """What Tarantool knows a session by: its token, or in a hashed store its key."""
        return token_key(token) if self._hashed else token

    def _token_args(self, token: str) -> dict[str, Any]:
        """The arguments naming the session of `token`: its key, and in the sharded mode its
        bucket, read from the token itself (a hashed store's key has lost it)."""
        args: dict[str, Any] = {"token": self._key(token)}
        if self._sharded:
            args["bucket"] = bucket_of_token(token)
        return args

    def _told(self, session: Session, token: str) -> Session:
        """A session answered to the caller that sent `token`: its own token (a hashed store
        answers the key)."""
        if self._hashed:
            session["token"] = token.lower()
        return session

    async def get(self, token: str, ip: str | None, patch: dict[str, Any] | None) -> Session | None:
        args: dict[str, Any] = self._token_args(token)
        if ip is not None:
            args["ip"] = ip
        if patch is not None:
            args["patch"] = patch
        reply = await self.call(GET, args)
        if "session" not in reply:
            return None
        if reply.get("untouched"):
            _touch_log.warning(
                "untouched",
                "sessions are served without recording their activity: Tarantool's memory is full, "
                "or the replicas synchronous replication waits for do not confirm writes",
            )
        return self._told(_session(reply["session"]), token)

    async def delete(self, token: str) -> Session | None:
        reply = await self.call(DELETE, self._token_args(token))
        return self._told(_session(reply["session"]), token) if "session" in reply else None

    async def rotate(self, token: str) -> Session | None:
        """The session under a new token, the old one ended; None if there is no such session."""
        # A rotated session stays where it is: its new token carries the old one's bucket.
        bucket = bucket_of_token(token) if self._sharded else None
        while True:
            fresh = new_token(bucket)
            args = {**self._token_args(token), "new_token": _hashed(fresh) if self._hashed else fresh}
            try:
                reply = await self.call(ROTATE, args)
            except DuplicateToken:
                continue
            if "session" not in reply:
                return None
            return self._told(_session(reply["session"]), _text(fresh))

    async def peek(self, session_id: str) -> Session | None:
        """The live session `session_id` names, as stored (its activity not recorded)."""
        reply = await self.call(PEEK, {"id": session_id})
        return _session(reply["session"]) if "session" in reply else None

    async def delete_id(self, session_id: str) -> Session | None:
        """End the session `session_id` names; the session as it was, or None."""
        reply = await self.call(DELETE_ID, {"id": session_id})
        return _session(reply["session"]) if "session" in reply else None

    async def page(
        self, kind: str, key: int | str, limit: int, after: Cursor | None
    ) -> tuple[list[Session], list[Cursor], bool]:
        """One page of the live sessions of a user (`kind` "user") or an address ("ip"),
        newest opened first: the sessions, the cursor after each (a cut page goes on from
        there), and whether more follow the last."""
        args: dict[str, Any] = {"kind": kind, "key": key, "limit": limit, "page_bytes": self._page_bytes}
        if after is not None:
            args["after"] = after
        reply = await self.call(LIST, args)
        rows = reply["sessions"]
        return [_session(row) for row in rows], [int(row[_SEQ]) for row in rows], bool(reply["more"])

    async def delete_all(
        self, kind: str, key: int | str, *, except_token: str | None = None, except_id: str | None = None
    ) -> int:
        """End every live session of a user (`kind` "user") or an address ("ip"), but the one
        `except_token` or `except_id` names; how many. Each call to Tarantool ends a bounded
        number, in short transactions, so other requests go on meanwhile."""
        args: dict[str, Any] = {"kind": kind, "key": key}
        if except_token is not None:
            args["except_token"] = self._key(except_token)
        if except_id is not None:
            args["except_id"] = except_id
        ended = 0
        while True:
            reply = await self.call(DELETE_ALL, args)
            ended += int(reply["deleted"])
            if not reply["more"]:
                return ended
            # Only the first call checks the kept session (a later failure would come after
            # sessions were already ended); the later ones only leave it alone.
            args["checked"] = True

    async def info(self) -> Info:
        return Info.of(await self._call(INFO, []))

    async def _batch(self, operation: str, items: list[Reply]) -> list[Reply]:
        try:
            replies: list[Reply] = await self._call(BATCH, [operation, items, self._context()])
        except StorageUnavailable:
            if operation != GET.name:
                raise
            # No instance takes writes (an election under way, a primary lost): a signed-in
            # user stays signed in, served as stored by any instance that answers.
            return await self._untouched(items)
        refused = [i for i, reply in enumerate(replies) if _refused_as_read_only(reply)]
        if refused:
            # It stopped taking writes (it is no longer the leader): look for the one that does.
            self._recheck.set()
            if operation == GET.name:
                again = await self._untouched([items[i] for i in refused])
                for i, reply in zip(refused, again, strict=True):
                    replies[i] = reply
        return replies

    async def _untouched(self, items: list[Reply]) -> list[Reply]:
        """`get`s answered by any instance, their activity not recorded; one that merges extra
        data is a write, and fails as unavailable."""
        # Another instance first: the one in use has just failed.
        others = [c for c in self._conns if c is not self._conn]
        conn = next((c for c in [*others, self._conn] if c.is_fully_connected), None)
        if conn is None:
            raise StorageUnavailable()
        reads = [item for item in items if "patch" not in item]
        replies: list[Reply] = []
        if reads:
            replies = await self._call(BATCH, [GET.name, reads, self._context(untouched=True)], conn=conn)
        answers = iter(replies)
        refused = error_item(None, ErrorCode.ER_READONLY, "no instance is writable")
        return [refused if "patch" in item else next(answers) for item in items]

    async def _call(
        self, name: str, args: list[Any], *, bulk: bool = False, conn: asynctnt.Connection | None = None
    ) -> Any:
        """The first value a procedure returns, with Tarantool's errors mapped. With several
        instances, a call that was not carried out because its instance cannot write (or is
        gone) is made again on the next writable one, if one is found before the call's
        deadline (a leader change)."""
        deadline = asyncio.get_running_loop().time() + self._timeout
        while True:
            chosen = conn or (self._bulk if bulk else self._conn)
            try:
                return await self._call_once(chosen, name, args)
            except _NotDone as not_done:
                remaining = deadline - asyncio.get_running_loop().time()
                # Once a look found no writable instance, calls fail at once until one is.
                if conn is not None or self._watcher is None or remaining <= 0 or not self._writable:
                    raise not_done.failure from None
                looked = self._looked
                self._recheck.set()
                try:
                    await asyncio.wait_for(looked.wait(), remaining)
                except TimeoutError:
                    raise not_done.failure from None
                if not self._writable:
                    raise not_done.failure from None

    async def _call_once(self, conn: asynctnt.Connection, name: str, args: list[Any]) -> Any:
        if not conn.is_fully_connected:
            self._recheck.set()
            raise _NotDone(StorageUnavailable())
        try:
            response = await conn.call(name, args, timeout=self._timeout)
        except TarantoolDatabaseError as error:
            failure = mapped(error_type(error), error.code, error.message)
            if isinstance(failure, StorageUnavailable):
                self._recheck.set()
                if error.code == ErrorCode.ER_READONLY:
                    # Refused before anything was done.
                    raise _NotDone(failure) from None
            raise failure from None
        except (TarantoolError, TimeoutError, OSError):
            self._recheck.set()
            raise StorageUnavailable() from None
        return response[0] if response else None


def _store_refusal(mode: str, stored: str, where: str) -> str | None:
    """Why a service keeping tokens `mode` (plain, hash) cannot use a store that keeps them
    `stored` (hashing.lua's answer); None when it can."""
    if stored == "converting":
        return (
            f"a conversion of the tokens of the store at {where} to hashes was cut short: run "
            f"`{CONVERT_COMMAND}` again to finish it, then start with SESSIONS_TOKEN_STORAGE=hash"
        )
    if mode == "hash" and stored == "plain":
        return (
            f"the store at {where} keeps tokens in plain and SESSIONS_TOKEN_STORAGE=hash keeps only their "
            f"hashes: stop the service and run `{CONVERT_COMMAND}` to convert it (one way), or start with "
            "SESSIONS_TOKEN_STORAGE=plain"
        )
    if mode == "plain" and stored == "hash":
        return (
            f"the store at {where} keeps only hashes of tokens, which cannot be turned back into tokens: "
            "start with SESSIONS_TOKEN_STORAGE=hash"
        )
    return None


def _refused_as_read_only(reply: Reply) -> bool:
    failed = failure_of(reply)
    return failed is not None and failed[1] == ErrorCode.ER_READONLY


class _NotDone(Exception):
    """A call that was certainly not carried out, and may be made again elsewhere."""

    def __init__(self, failure: Exception) -> None:
        super().__init__(str(failure))
        self.failure = failure
