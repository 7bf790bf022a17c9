"""Service settings, read from `SESSIONS_*` environment variables and validated at start."""

from __future__ import annotations

import base64
import binascii
import difflib
import ipaddress
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from . import weak_secrets
from .limits import (
    ANSWER_PAGES,
    BODY_COUNT,
    DAY,
    DEFAULT_TTL,
    EVENTS_MAX,
    EVENTS_RETENTION,
    LIST_MAX,
    MAX_TTL,
)

__all__ = [
    "Settings",
    "TarantoolAddress",
    "describe_error",
    "unknown_variables",
    "webhook_key",
]

_PROJECT_DIR = Path(__file__).resolve().parent.parent

TarantoolAddress = tuple[str, int | str]

# Secrets nobody should run with: short ones, what .env.sample ships and common ones;
# tarantool/init.lua refuses its passwords by the same rule (weak_secrets.py).
_WEAK = f"weak: it needs {weak_secrets.RULE}; generate your own (e.g. openssl rand -hex 24)"


class Settings(BaseSettings):
    """Everything the service can be told; the defaults give a working local service."""

    model_config = SettingsConfigDict(
        env_prefix="SESSIONS_",
        env_ignore_empty=True,
        extra="ignore",
        frozen=True,
        use_attribute_docstrings=True,
    )
    # Each field's docstring is its line in docs/configuration.md (generated: make docs).

    host: str = "127.0.0.1"
    """Address to listen on."""
    port: Annotated[int, Field(ge=1, le=65535)] = 8080
    """Port to listen on."""
    workers: Annotated[int, Field(ge=1, le=64)] = 1
    """Processes serving the port together (SO_REUSEPORT), sharing one Tarantool."""

    tarantool: str | None = None
    """`host:port`, `[ipv6]:port` or `unix/:/path` of a running Tarantool, or several,
    comma-separated (a primary and its replicas: the writable one is used); unset starts an
    embedded one."""
    tarantool_mode: Literal["instance", "sharded"] = "instance"
    """`instance`: `SESSIONS_TARANTOOL` lists instances of one replica set (or is unset: embedded);
    `sharded`: it lists routers of a vshard cluster (`tarantool/router.lua`), each serving the
    same, and every session goes to the replica set of its user's bucket. Sharded needs
    `SESSIONS_TARANTOOL` (docs/internals.md)."""
    tarantool_user: Annotated[str, Field(min_length=1)] = "sessions"
    """Tarantool user of the service."""
    tarantool_password: SecretStr | None = None
    """Its password: required with `SESSIONS_TARANTOOL`, at least 16 characters, spaces not counted,
    and neither a sample value (`change-me...`) nor a common password (Tarantool's `init.lua` refuses
    the same); the embedded instance gets a random one per start."""
    tarantool_timeout: Annotated[float, Field(gt=0, le=60)] = 1.0
    """Seconds a storage call may take before the answer is `storage_unavailable`."""

    data_dir: Path = Path("var")
    """Embedded Tarantool: snapshots, WAL, log, sockets."""
    tarantool_bin: str = "tarantool"
    """Embedded Tarantool: the binary."""
    tarantool_scripts: Path = _PROJECT_DIR / "tarantool"
    """Embedded Tarantool: the directory of its Lua (this checkout's `tarantool/`)."""
    # 2 GiB: about 13 million sessions without extra data, 8 million with 200 bytes each.
    tarantool_memory: Annotated[int, Field(ge=64 * 2**20)] = 2 * 2**30
    """Embedded Tarantool: bytes for data and indexes (2 GiB holds about 13 million sessions
    without extra data); when full, `new` answers `storage_full`."""
    wal_mode: Literal["write", "fsync", "none"] = "write"
    """Embedded Tarantool: `write`, `fsync` (survives power loss, slower) or `none`."""
    startup_timeout: Annotated[float, Field(gt=0)] = 60.0
    """Seconds to wait for Tarantool at start."""
    shutdown_timeout: Annotated[float, Field(gt=0)] = 10.0
    """Seconds to finish requests and stop Tarantool on exit."""
    restart_backoff: Annotated[float, Field(gt=0, le=60)] = 0.25
    """Embedded Tarantool: seconds before restarting it when it dies, doubling with each restart
    within a minute up to 32 times this; after 5 the service exits with code 1."""

    idle_ttl: Annotated[int, Field(ge=1, le=MAX_TTL)] = DEFAULT_TTL
    """Seconds of inactivity after which a session is gone (180 days)."""
    max_lifetime: Annotated[int, Field(ge=1, le=MAX_TTL)] | None = None
    """Seconds after `create` when a session ends however busy it is (unset: never)."""
    max_per_user: Annotated[int, Field(ge=1, le=1_000_000)] | None = None
    """Live sessions a user may have; a `new` beyond it ends the least recently active."""
    # Tarantool stores a session in one tuple of at most 1 MiB (memtx_max_tuple_size).
    extra_max_bytes: Annotated[int, Field(ge=64, le=2**20 - 4096)] = 64 * 2**10
    """Largest extra data, per request and stored (at most 1 MiB - 4 KiB)."""

    list_max: Annotated[int, Field(ge=1, le=LIST_MAX)] = LIST_MAX
    """Most sessions in one `/user` or `/ip` page without `limit`; the rest come page by page
    through the `Link` header."""
    listings: Literal["tokens", "ids"] = "tokens"
    """What `/user` and `/ip` answer for each session: `tokens`, the original design's
    SessionObject with its token (whoever reads a listing can then act as each of those
    sessions), or `ids`, its id and no `token` field (recommended for new deployments; always
    so with `SESSIONS_TOKEN_STORAGE=hash`)."""
    token_storage: Literal["plain", "hash"] = "plain"
    """How the store keeps tokens: `plain`, or `hash`, only a SHA-256 of each, so that its
    data files and backups hold no token (for new stores; a store of plain tokens is refused
    in this mode until `sessions convert-tokens` converts it, one way)."""

    # Bulk work (listings and bulk deletes) is admitted apart from the check path (get, new,
    # del, rotate), so that it can never starve it. The listings in flight take about
    # bulk_concurrency x page_max_bytes x 4 of a process' memory (msgpack, Python objects and
    # JSON at once). 1 MiB keeps a page's decoding and encoding, during which a process does
    # nothing else, to about 5 ms (bench/README.md).
    bulk_concurrency: Annotated[int, Field(ge=1, le=64)] = 2
    """Listings and bulk deletes one process works on at once."""
    bulk_queue: Annotated[int, Field(ge=0, le=10_000)] = 32
    """Listings and bulk deletes one process keeps waiting for a turn; more are answered
    `overloaded` at once."""
    queue_timeout: Annotated[float, Field(gt=0, le=60)] = 1.0
    """Seconds a listing or bulk delete may wait for its turn before it is answered `overloaded`."""
    page_max_bytes: Annotated[int, Field(ge=64 * 2**10, le=16 * 2**20)] = 2**20
    """Most bytes of one page of `/user` or `/ip` as sent (its JSON), but always at least one
    session."""
    # What a client can make a process hold is budgeted, so that more is shed as `overloaded`
    # rather than buffered: answers of listings until their last byte is written, request
    # bodies until their request is done, and connections.
    answer_memory: Annotated[int, Field(ge=64 * 2**10, le=2**40)] | None = None
    """Bytes of `/user` and `/ip` answers one process holds at once, each from before its page is
    read until its last byte is written (unset: 32 pages of `SESSIONS_PAGE_MAX_BYTES`); a listing
    that finds none free within `SESSIONS_QUEUE_TIMEOUT` is answered `overloaded`."""
    body_memory: Annotated[int, Field(ge=64, le=2**40)] | None = None
    """Bytes of request bodies (extra data) one process reads at once, each counted at its
    `Content-Length` before a byte of it is read (unset: 64 times `SESSIONS_EXTRA_MAX_BYTES`);
    beyond it a request is answered `overloaded` without reading its body."""
    send_timeout: Annotated[float, Field(gt=0, le=600)] = 10.0
    """Seconds a listing's answer waits for the client to take its next 64 KiB before the
    connection is closed (a reader that slow holds the process' memory)."""
    max_connections: Annotated[int, Field(ge=1, le=10_000_000)] | None = None
    """Open connections one process keeps; beyond it the longest idle one is closed for a new
    one, or the new one at once if none is idle (unset: the file descriptor limit, raised at
    start to its hard limit, less room for Tarantool and files, and at most 10,000)."""
    max_in_flight: Annotated[int, Field(ge=1, le=1_000_000)] = 4096
    """`get`, `new`, `del` and `rotate` requests one process works on at once; more are answered
    `overloaded`."""
    idempotency_window: Annotated[int, Field(ge=600, le=7 * DAY)] = 3600
    """Seconds a `new`'s `Idempotency-Key` is remembered."""

    events: bool = False
    """The event feed (`/events`): every change to a session written with it, for consumers and
    webhooks; off, nothing is written and `/events` answers `not_found`."""
    events_retention: Annotated[int, Field(ge=60, le=MAX_TTL)] = EVENTS_RETENTION
    """Seconds an event is kept (1 day); older ones are removed, but never the newest."""
    events_max: Annotated[int, Field(ge=1, le=100_000_000)] = EVENTS_MAX
    """Events kept at most (1,000,000, about 100 MB of Tarantool's memory); the oldest go first."""
    webhook_url: SecretStr | None = None
    """`http(s)://` URL events are POSTed to, one per request, in feed order (needs
    `SESSIONS_EVENTS=on` and `SESSIONS_WEBHOOK_SECRET`); unset: no webhooks. Never logged."""
    webhook_secret: SecretStr | None = None
    """The signing secret, `whsec_` and the base64 of 24 to 64 random bytes (Standard Webhooks);
    generate one: `echo whsec_$(openssl rand -base64 32)`. Never logged."""
    webhook_timeout: Annotated[float, Field(gt=0, le=60)] = 5.0
    """Seconds a delivery may take before it counts as failed and is retried."""
    webhook_backoff: Annotated[float, Field(gt=0, le=60)] = 1.0
    """Seconds before the first retry of a failed delivery, doubling with each retry of it."""
    webhook_backoff_max: Annotated[float, Field(gt=0, le=3600)] = 60.0
    """The longest wait between retries of one delivery."""

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    """`DEBUG`, `INFO`, `WARNING` or `ERROR`."""
    log_format: Literal["text", "json"] = "text"
    """`text`, or `json` for one JSON object per line; both write ISO 8601 times with the zone."""
    access_log: bool = False
    """Log every request (token values masked)."""

    ops_enabled: bool = True
    """Serve `/health`, `/ready`, `/metrics`, `/version`, `/openapi.json` and `/docs`."""
    ops_port: Annotated[int, Field(ge=1, le=65535)] | None = None
    """Serve those on this port only (not `SESSIONS_PORT`)."""

    api_keys: Annotated[tuple[SecretStr, ...], NoDecode] = ()
    """Comma-separated keys; when set, every request needs `Authorization: Bearer <key>` (several
    allow rotation); each at least 16 characters, spaces not counted, and neither a sample value
    (`change-me...`) nor a common password; a value with no key in it is refused, not taken as
    "no keys"."""
    allow_open: bool = False
    """Serve beyond loopback without API keys, on purpose (anyone who reaches the port could then
    read and end every session); without it such a start is refused."""
    open_probes: bool = True
    """Leave `/health` and `/ready` open even when API keys are set."""

    revision: str | None = None
    """The source revision `/version` and `sessions_build_info` report (the images set it; a
    checkout asks git)."""

    metrics_dir: Path | None = None
    """Set by the supervisor for its workers: where each writes its counts so that `/metrics` in
    any worker reports them all. Not for operators."""

    keepalive_timeout: Annotated[float, Field(gt=0)] = 30.0
    """Seconds before an idle connection, or one still sending its request head, is closed."""
    body_timeout: Annotated[float, Field(gt=0)] = 10.0
    """Seconds a request body may take to arrive before the answer is 408."""

    @field_validator("api_keys", mode="before")
    @classmethod
    def _split_keys(cls, value: object) -> object:
        if isinstance(value, str):
            keys = tuple(key.strip() for key in value.split(",") if key.strip())
            # "," or " " is a mistake, not a wish to turn authentication off: that is unset.
            if not keys:
                raise ValueError("no key in it; leave it unset to serve without API keys")
            if any(weak_secrets.is_weak(key) for key in keys):
                raise ValueError(f"a key is {_WEAK}")
            return keys
        return value

    @field_validator("tarantool_password")
    @classmethod
    def _not_a_sample(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and weak_secrets.is_weak(value.get_secret_value()):
            raise ValueError(_WEAK)
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("tarantool")
    @classmethod
    def _valid_address(cls, value: str | None) -> str | None:
        if value is not None:
            parse_addresses(value)
        return value

    @field_validator("log_format", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _ops_port_of_its_own(self) -> Settings:
        if self.ops_port is not None and self.ops_port == self.port:
            raise ValueError(
                "SESSIONS_OPS_PORT must differ from SESSIONS_PORT (leave it unset to serve both on one)"
            )
        return self

    @model_validator(mode="after")
    def _budgets_hold_one(self) -> Settings:
        # A budget smaller than the largest share could never admit it.
        if self.answer_memory is not None and self.answer_memory < self.page_max_bytes:
            raise ValueError("SESSIONS_ANSWER_MEMORY must be at least SESSIONS_PAGE_MAX_BYTES")
        if self.body_memory is not None and self.body_memory < self.extra_max_bytes:
            raise ValueError("SESSIONS_BODY_MEMORY must be at least SESSIONS_EXTRA_MAX_BYTES")
        return self

    @property
    def listings_without_tokens(self) -> bool:
        """Whether `/user` and `/ip` answer ids instead of tokens (a hashed store has none)."""
        return self.listings == "ids" or self.token_storage == "hash"

    @property
    def answer_budget(self) -> int:
        """Bytes of listing answers one process holds at once."""
        return self.answer_memory or ANSWER_PAGES * self.page_max_bytes

    @property
    def body_budget(self) -> int:
        """Bytes of request bodies one process reads at once."""
        return self.body_memory or BODY_COUNT * self.extra_max_bytes

    @field_validator("webhook_url")
    @classmethod
    def _webhook_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            url = value.get_secret_value()
            scheme, sep, rest = url.partition("://")
            # The message never repeats the URL: it may hold credentials.
            spaced = any(char.isspace() for char in url)
            if scheme.lower() not in ("http", "https") or not sep or not rest or spaced:
                raise ValueError("must be an http:// or https:// URL")
        return value

    @field_validator("webhook_secret")
    @classmethod
    def _webhook_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and webhook_key(value) is None:
            raise ValueError(
                "must be whsec_ and the base64 of 24 to 64 bytes (echo whsec_$(openssl rand -base64 32))"
            )
        return value

    @model_validator(mode="after")
    def _webhooks_need_the_feed(self) -> Settings:
        if self.webhook_url is not None and (self.webhook_secret is None or not self.events):
            raise ValueError("SESSIONS_WEBHOOK_URL needs SESSIONS_EVENTS=on and SESSIONS_WEBHOOK_SECRET")
        if self.webhook_backoff_max < self.webhook_backoff:
            raise ValueError("SESSIONS_WEBHOOK_BACKOFF_MAX must be at least SESSIONS_WEBHOOK_BACKOFF")
        return self

    @model_validator(mode="after")
    def _sharded_needs_routers(self) -> Settings:
        if self.tarantool_mode != "sharded":
            return self
        if self.tarantool is None:
            raise ValueError("SESSIONS_TARANTOOL_MODE=sharded needs SESSIONS_TARANTOOL (the routers)")
        return self

    @model_validator(mode="after")
    def _remote_needs_password(self) -> Settings:
        if self.tarantool is not None and self.tarantool_password is None:
            raise ValueError("SESSIONS_TARANTOOL_PASSWORD is required with SESSIONS_TARANTOOL")
        return self

    def refusal_to_serve(self) -> str | None:
        """Why these settings must not serve, if they must not: beyond loopback without API
        keys, unless SESSIONS_ALLOW_OPEN says so. (The admin commands may run on them.)"""
        if not self.api_keys and not self.loopback_only and not self.allow_open:
            return (
                f"SESSIONS_HOST={self.host} listens beyond loopback without SESSIONS_API_KEYS: anyone "
                "who reaches the port could read and end every session. Set SESSIONS_API_KEYS, or "
                "SESSIONS_ALLOW_OPEN=true to serve open on purpose"
            )
        return None

    @property
    def loopback_only(self) -> bool:
        """Whether the service listens only where other machines cannot reach it."""
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False

    def url(self, port: int) -> str:
        """The service's address on `port`, an IPv6 host in brackets."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{port}"

    @property
    def embedded(self) -> bool:
        return self.tarantool is None

    def service_password(self) -> str:
        """The Tarantool password: the configured one, else a fresh one for an embedded
        instance, which only this service and its own processes ever need."""
        if self.tarantool_password is not None:
            return self.tarantool_password.get_secret_value()
        return secrets.token_urlsafe(32)

    @property
    def tarantool_addresses(self) -> list[TarantoolAddress]:
        if self.tarantool is None:
            raise ValueError("no remote Tarantool address is configured")
        return parse_addresses(self.tarantool)


def webhook_key(secret: SecretStr) -> bytes | None:
    """The HMAC key a `whsec_` secret holds (the base64 after the prefix), or None."""
    text = secret.get_secret_value()
    if not text.startswith("whsec_"):
        return None
    try:
        key = base64.b64decode(text.removeprefix("whsec_"), validate=True)
    except (ValueError, binascii.Error):
        return None
    return key if 24 <= len(key) <= 64 else None


def parse_addresses(value: str) -> list[TarantoolAddress]:
    addresses = [parse_address(item.strip()) for item in value.split(",") if item.strip()]
    if not addresses:
        raise ValueError("expected at least one address")
    return addresses


def parse_address(value: str) -> TarantoolAddress:
    """Split a Tarantool address into what asynctnt takes as host and port."""
    if value.startswith("unix/:"):
        path = value[len("unix/:") :]
        if not path:
            raise ValueError("unix socket address needs a path: unix/:/path/to.sock")
        return "unix/", path
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"expected host:port or unix/:/path, got {value!r}")
    return host.removeprefix("[").removesuffix("]"), int(port)


def describe_error(error: ValidationError) -> str:
    """One line naming each bad variable and what is wrong with it."""
    parts = []
    for item in error.errors():
        field = ".".join(str(part) for part in item["loc"])
        message = str(item["msg"]).removeprefix("Value error, ")
        # An error of the whole configuration names its variables itself.
        parts.append(f"SESSIONS_{field.upper()}: {message}" if field else message)
    return "invalid configuration: " + "; ".join(parts)


# Read by the Tarantool side (tarantool/init.lua), not by the service.
_TARANTOOL_VARIABLES = frozenset(
    {
        "SESSIONS_REPLICATION_PASSWORD",
        "SESSIONS_ROLE",
        "SESSIONS_PRIMARY",
        "SESSIONS_PEERS",
        "SESSIONS_SYNC_REPLICAS",
        "SESSIONS_SYNC_TIMEOUT",
        "SESSIONS_FAILOVER",
        "SESSIONS_ELECTION_TIMEOUT",
        *(
            f"SESSIONS_TT_{name}"
            for name in ("LISTEN", "WORK_DIR", "MEMTX_MEMORY", "WAL_MODE", "LOG", "LOG_LEVEL", "PID_FILE")
        ),
        "SESSIONS_TT_CONSOLE_SOCKET",
    }
)


def unknown_variables(environ: Mapping[str, str]) -> list[str]:
    """SESSIONS_* variables no setting reads, each with the likeliest one meant.

    A misspelled variable would otherwise be ignored in silence, and the one meant left
    at its default: SESSIONS_API_KEY for SESSIONS_API_KEYS serves without authentication.
    """
    known = {f"SESSIONS_{name.upper()}" for name in Settings.model_fields} | _TARANTOOL_VARIABLES
    problems = []
    for name in sorted(environ):
        if name.upper().startswith("SESSIONS_") and name.upper() not in known:
            close = difflib.get_close_matches(name.upper(), known, n=1)
            problems.append(f"{name} (did you mean {close[0]}?)" if close else name)
    return problems
